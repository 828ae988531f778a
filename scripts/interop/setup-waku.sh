#!/usr/bin/env bash
# Installs pinned js-waku packages into a scratch folder for the Waku framing tests of
# sds-libp2p. Usage: setup-waku.sh DIR   (idempotent; DIR/node_modules/@waku/* is the result)
set -euo pipefail
dir=${1:?usage: setup-waku.sh DIR}
here=$(cd "$(dirname "$0")" && pwd)
packages=(@waku/core@0.0.40 @waku/proto@0.0.15 @waku/utils@0.0.27 @waku/relay@0.0.14)
mkdir -p "$dir"
if ! grep -q '"version": "0.0.14"' "$dir/node_modules/@waku/relay/package.json" 2>/dev/null; then
    (cd "$dir" && npm install --no-audit --no-fund --loglevel=error "${packages[@]}" >&2)
fi
# The programs import the packages, which resolve from the folder they run in.
cp "$here"/waku_*.mjs "$dir/"
