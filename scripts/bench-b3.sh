#!/usr/bin/env bash
# Benchmark B3 (group simulation): 1,000 members, 10,000 messages, 20 % loss, RUNS times;
# prints each run's wall time and peak RSS, their medians, and the (identical) outcome.
# Usage: scripts/bench-b3.sh [RUNS] (default 3). Each run takes a few minutes on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-3}
cargo build --release -q -p sds-cli
dir=$(mktemp -d)
for i in $(seq "$runs"); do
  /usr/bin/time -f "%e %M" -o "$dir/time.$i" ./target/release/sds sim --participants 1000 \
    --send-interval 10 --duration 120 --messages 10000 --tail 600 --loss 0.2 --quiet --json \
    >"$dir/report.$i.json"
done
python3 - "$dir" "$runs" <<'PY'
import json, statistics, sys
d, runs = sys.argv[1], int(sys.argv[2])
times, rss, reports = [], [], []
for i in range(1, runs + 1):
    t, m = open(f"{d}/time.{i}").read().split()
    times.append(float(t)); rss.append(int(m) * 1024)
    reports.append(json.load(open(f"{d}/report.{i}.json")))
print("wall times (s):", ", ".join(f"{t:.0f}" for t in times))
print(f"median wall time {statistics.median(times):.0f} s, median peak RSS {statistics.median(rss) / 1e9:.1f} GB")
r = reports[0]
print("identical reports:", all(x == r for x in reports))
print(f"messages {r['messagesSent']}, deliveries {r['deliveries']} of {r['expectedDeliveries']}, "
      f"completeness {r['completeness']:.7f}")
for name, key, met in [("ack within 1·S", r["acknowledgement"]["latency"], r["acknowledgement"]["latency"]["fractionWithinRequirement"]),
                       ("detected within 3·S", r["missingDetection"]["latency"], r["missingDetection"]["fractionDetectedWithinRequirement"]),
                       ("consistent within 6·S", r["eventualConsistency"]["latency"], r["eventualConsistency"]["fractionConsistentWithinRequirement"])]:
    print(f"{name}: median {key['medianSendIntervals']}·S, p90 {key['p90SendIntervals']}·S, p99 {key['p99SendIntervals']}·S, met by {100 * met:.2f} %")
PY
