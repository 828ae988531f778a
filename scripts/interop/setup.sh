#!/usr/bin/env bash
# Installs the pinned @waku/sds release into a scratch folder for the live interop tests.
# Usage: setup.sh DIR   (idempotent; DIR/node_modules/@waku/sds is the result)
set -euo pipefail
dir=${1:?usage: setup.sh DIR}
version=0.0.8
here=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$dir"
if ! grep -q "\"version\": \"$version\"" "$dir/node_modules/@waku/sds/package.json" 2>/dev/null; then
    (cd "$dir" && npm install --no-audit --no-fund --loglevel=error --engine-strict=false \
        "@waku/sds@$version" >&2)
fi
# The programs import "@waku/sds", which resolves from the folder they run in.
cp "$here"/*.mjs "$dir/"
