#!/usr/bin/env bash
# Benchmark B4 (network): five members in one process exchange MESSAGES messages over localhost
# TCP through libp2p (`tcp`), over libp2p's in-process memory transport (`memory`), and with no
# network layer at all (`direct`), RUNS times each, the transports alternating from run to run;
# prints every run's JSON line, then medians and ranges as a Markdown table.
# Usage: scripts/bench-b4.sh [RUNS] [MESSAGES] [WINDOW] (default 5, 5000, 64).
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-5}
messages=${2:-5000}
window=${3:-64}
cargo build --release -q -p sds-libp2p --example b4
b4=${CARGO_TARGET_DIR:-target}/release/examples/b4
out=$(mktemp)
for _ in $(seq "$runs"); do
  for transport in tcp memory direct; do
    "$b4" --transport "$transport" --messages "$messages" --window "$window" | tee -a "$out"
  done
done
python3 - "$out" "$runs" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
runs = sys.argv[2]
print(f"| transport | delivered everywhere, msg/s (median of {runs}; range) | p50 latency ms | p99 latency ms |")
print("|---|---|---|---|")
for t in ["tcp", "memory", "direct"]:
    rs = [r for r in rows if r["transport"] == t]
    if not rs:
        continue
    def col(key, fmt):
        xs = [r[key] for r in rs]
        return f"{fmt.format(statistics.median(xs))} ({fmt.format(min(xs))}–{fmt.format(max(xs))})"
    print(f"| {t} | {col('delivered_everywhere_per_s', '{:,.0f}')} | "
          f"{col('latency_ms_p50', '{:.1f}')} | {col('latency_ms_p99', '{:.1f}')} |")
PY
rm -f "$out"
