#!/usr/bin/env bash
# Installs a js-waku relay peer (the published @waku/relay 0.0.14 with the libp2p 1.x stack it
# is built for, TCP, noise and yamux) into a scratch folder for the live Waku framing test of
# sds-libp2p. Usage: setup-waku-relay.sh DIR   (idempotent)
set -euo pipefail
dir=${1:?usage: setup-waku-relay.sh DIR}
here=$(cd "$(dirname "$0")" && pwd)
# protons-runtime: @waku/proto 0.0.8 needs 5.5 or newer, which its own range does not ask for.
packages=(@waku/relay@0.0.14 @waku/core@0.0.31 @waku/utils@0.0.19 libp2p@1.9.4
    @libp2p/tcp@9.1.6 @chainsafe/libp2p-noise@15.1.1 @chainsafe/libp2p-yamux@6.0.2
    @libp2p/identify@2.1.5 @chainsafe/libp2p-gossipsub@13.2.0 protons-runtime@5.6.0)
mkdir -p "$dir"
if ! grep -q '"version": "0.0.14"' "$dir/node_modules/@waku/relay/package.json" 2>/dev/null \
    || ! grep -q '"version": "5.6.0"' "$dir/node_modules/protons-runtime/package.json"; then
    (cd "$dir" && npm install --no-audit --no-fund --loglevel=error "${packages[@]}" >&2)
fi
cp "$here"/waku_relay_peer.mjs "$dir/"
