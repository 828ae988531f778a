#!/usr/bin/env bash
# Benchmark B1 (pipeline): runs `sds bench pipeline` RUNS times per case and prints the medians
# as a Markdown table. Usage: scripts/bench-b1.sh [RUNS] (default 5).
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-5}
cargo build --release -q -p sds-cli
out=$(mktemp)
for n in 2000 20000; do
  for order in in-order random reverse; do
    for _ in $(seq "$runs"); do
      ./target/release/sds bench pipeline --n "$n" --order "$order" >>"$out"
    done
  done
done
python3 - "$out" "$runs" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
runs = sys.argv[2]
print(f"| case | wraps/s (median of {runs}) | unwraps/s (median) | peak RSS (median) | delivered |")
print("|---|---|---|---|---|")
cases = {}
for r in rows:
    cases.setdefault((r["n"], r["order"]), []).append(r)
med = {}
for (n, order), rs in cases.items():
    w = statistics.median(r["wrapPerSec"] for r in rs)
    u = statistics.median(r["unwrapPerSec"] for r in rs)
    m = statistics.median(r["peakRssBytes"] for r in rs)
    d = min(r["delivered"] for r in rs)
    med[(n, order)] = (w, u)
    print(f"| N={n:,} {order} | {w:,.0f} | {u:,.0f} | {m/1e6:,.0f} MB | {d:,} |")
print()
print("| order | wrap cost ratio 20,000 vs 2,000 | unwrap cost ratio 20,000 vs 2,000 |")
print("|---|---|---|")
for order in ["in-order", "random", "reverse"]:
    if (2000, order) in med and (20000, order) in med:
        (w1, u1), (w2, u2) = med[(2000, order)], med[(20000, order)]
        print(f"| {order} | {w1/w2:.2f} | {u1/u2:.2f} |")
PY
rm -f "$out"
