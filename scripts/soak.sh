#!/usr/bin/env bash
# The server soak of docs/RELIABILITY.md: `kiln serve` on loopback under 100 clients for
# SECONDS (default 600), then one table row: date, machine, duration, requests, failures, p95,
# RSS at a tenth of the run -> end, and growth. Bounded in time, loopback only.
#
#   scripts/soak.sh [SECONDS] [KILN_BINARY]
#
# Needs a release binary (cargo build --release); trains the demo model into runs/soak first.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-600}
kiln=${2:-${CARGO_TARGET_DIR:-target}/release/kiln}
[ -x "$kiln" ] || { echo "no kiln binary at $kiln; run: cargo build --release" >&2; exit 2; }
"$kiln" pipeline --demo --out runs/soak --force -q >/dev/null
log=$(mktemp)
"$kiln" serve runs/soak/model.onnx --port 0 2>"$log" >/dev/null &
pid=$!
trap 'kill -TERM $pid 2>/dev/null || true; rm -f "$log"' EXIT
url=""
for _ in $(seq 200); do
  url=$(grep -o 'http://127.0.0.1:[0-9]*' "$log" | head -1 || true)
  [ -n "$url" ] && curl -sf "$url/v2/health/ready" >/dev/null && break
  sleep 0.1
done
[ -n "$url" ] || { echo "kiln serve did not start:" >&2; cat "$log" >&2; exit 1; }
"$kiln" bench --server "$url" --clients 100 --requests 1000000000 --max-seconds "$seconds" --json |
  python3 -c '
import datetime, json, os, sys
r = json.load(sys.stdin)["report"]
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "unknown CPU")
samples = r["rss_samples"]
end_t = samples[-1][0] if samples else 0
base = next((b for t, b in samples if t >= end_t / 10), 0)
last = samples[-1][1] if samples else 0
growth = r["rss_growth_percent"]
print("| date | machine | duration | requests | failed | p95 | RSS after a tenth of the run -> end | growth |")
print("|---|---|---:|---:|---:|---:|---:|---:|")
print("| %s | %s, %d cores | %.0f s | %d | %d | %.2f ms | %.1f -> %.1f MiB | %s |" % (
    datetime.date.today(), cpu, os.cpu_count(), r["seconds"], r["requests"], r["failures"],
    r["latency"]["p95_us"] / 1000, base / 2**20, last / 2**20,
    "n/a" if growth is None else "%+.2f %%" % growth))
'
