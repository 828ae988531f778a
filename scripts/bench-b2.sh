#!/usr/bin/env bash
# Benchmark B2 (durable pipeline): N=20,000 in order and random, through the manager with no-op
# persistence and with the SQLite store, RUNS times each; prints medians and the ratio.
# Usage: scripts/bench-b2.sh [RUNS] [DIR] (default 3, a temporary directory).
# Each run starts after a sync, so none pays for the previous one's writes.
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-3}
dir=${2:-$(mktemp -d)}
cargo build --release -q -p sds-cli
sds=${CARGO_TARGET_DIR:-target}/release/sds
out=$(mktemp)
# No-op runs first: a durable run leaves gigabytes of dirty pages behind, and a run right after
# it pays for their writeback and for reclaiming page cache.
for store in noop "sqlite:$dir/b2.db"; do
  for order in in-order random; do
    for _ in $(seq "$runs"); do
      sync
      "$sds" bench pipeline --n 20000 --order "$order" --store "$store" >>"$out"
    done
  done
done
python3 - "$out" "$runs" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
med = {}
for r in rows:
    kind = "sqlite" if r["store"].startswith("sqlite") else r["store"]
    med.setdefault((r["order"], kind), []).append(r)
print(f"| case | store | wraps/s (median of {sys.argv[2]}) | unwraps/s | peak RSS |")
print("|---|---|---|---|---|")
for (order, kind), rs in sorted(med.items()):
    w = statistics.median(r["wrapPerSec"] for r in rs)
    u = statistics.median(r["unwrapPerSec"] for r in rs)
    m = statistics.median(r["peakRssBytes"] for r in rs)
    med[(order, kind)] = (w, u)
    print(f"| N=20,000 {order} | {kind} | {w:,.0f} | {u:,.0f} | {m/1e6:,.0f} MB |")
print()
for order in ["in-order", "random"]:
    (wn, un), (ws, us) = med[(order, "noop")], med[(order, "sqlite")]
    print(f"{order}: durable/no-op ratio wrap {ws/wn:.3f}, unwrap {us/un:.3f}")
PY
rm -f "$out"
