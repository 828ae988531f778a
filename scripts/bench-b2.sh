#!/usr/bin/env bash
# Benchmark B2 (durable pipeline): N=20,000 in order and random, through the manager with no-op
# persistence and with the SQLite store, RUNS times each; prints medians (with the range) and
# the durable/no-op ratio.
# Usage: scripts/bench-b2.sh [RUNS] [DIR] (default 3, a temporary directory).
# SPIN="adaptive" (the default) measures the store with each of these `--spin` settings, and
# INLINE="on off" (the default) with operations run on the caller's thread when the connection
# is free (the store's default) and handed to its connection thread (`--no-inline`); the runs
# of every combination alternate, so a change in the machine's load falls on all of them alike.
# ENCRYPTED=1 adds runs of encrypted stores (a random key in DIR; the default spin), alternating
# with the others; sds is then built with the feature `encryption`, which also runs the plain
# stores on SQLCipher (without a key).
# Each run starts after a sync, so none pays for the previous one's writes.
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-3}
dir=${2:-$(mktemp -d)}
spins=${SPIN:-adaptive}
inlines=${INLINE:-on off}
features=()
runs_of=()
for spin in $spins; do
  for inline in $inlines; do
    case $inline in
      on) runs_of+=("--spin $spin") ;;
      off) runs_of+=("--spin $spin --no-inline") ;;
      *) echo "INLINE takes on and off, not $inline" >&2; exit 2 ;;
    esac
  done
done
if [ "${ENCRYPTED:-}" = 1 ]; then
  features=(--features encryption)
  head -c 32 /dev/urandom >"$dir/b2.key"
  runs_of+=("--key-file $dir/b2.key")
fi
cargo build --release -q -p sds-cli "${features[@]}"
sds=${CARGO_TARGET_DIR:-target}/release/sds
out=$(mktemp)
# No-op runs first: a durable run leaves gigabytes of dirty pages behind, and a run right after
# it pays for their writeback and for reclaiming page cache.
for order in in-order random; do
  for _ in $(seq "$runs"); do
    sync
    "$sds" bench pipeline --n 20000 --order "$order" --store noop >>"$out"
  done
done
for order in in-order random; do
  for _ in $(seq "$runs"); do
    for extra in "${runs_of[@]}"; do
      sync
      # shellcheck disable=SC2086 # the options of one run, split into words
      "$sds" bench pipeline --n 20000 --order "$order" --store "sqlite:$dir/b2.db" $extra >>"$out"
    done
  done
done
python3 - "$out" "$runs" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
med = {}
for r in rows:
    if not r["store"].startswith("sqlite"):
        kind = r["store"]
    elif r.get("encrypted"):
        kind = f"sqlite encrypted, spin {r['spin']}"
    else:
        kind = f"sqlite, spin {r['spin']}, {'inline' if r.get('inline', True) else 'handed over'}"
    med.setdefault((r["order"], kind), []).append(r)
def cell(xs):
    return f"{statistics.median(xs):,.0f} ({min(xs):,.0f}–{max(xs):,.0f})"
print(f"| case | store | wraps/s (median of {sys.argv[2]}, range) | unwraps/s | peak RSS |")
print("|---|---|---|---|---|")
for (order, kind), rs in sorted(med.items()):
    w = [r["wrapPerSec"] for r in rs]
    u = [r["unwrapPerSec"] for r in rs]
    m = statistics.median(r["peakRssBytes"] for r in rs)
    med[(order, kind)] = (statistics.median(w), statistics.median(u))
    print(f"| N=20,000 {order} | {kind} | {cell(w)} | {cell(u)} | {m/1e6:,.0f} MB |")
print()
for (order, kind), (ws, us) in sorted(med.items()):
    if kind == "noop":
        continue
    wn, un = med[(order, "noop")]
    print(f"{order}, {kind}: durable/no-op ratio wrap {ws/wn:.3f}, unwrap {us/un:.3f}")
PY
rm -f "$out"
