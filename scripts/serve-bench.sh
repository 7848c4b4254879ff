#!/usr/bin/env bash
# Load-tests `kiln serve` on loopback, bounded in count and time, and prints one JSON report per
# scenario (docs/PERFORMANCE.md, "Serving"). Every scenario also measures the model offline in
# the same run, as the baseline of its ratio.
#
#   scripts/serve-bench.sh [MODEL.onnx] [KILN_BINARY]
#
# Defaults: runs/demo/model.onnx (from `kiln pipeline --demo --out runs/demo`) and the release
# binary in the cargo target directory.
set -euo pipefail
cd "$(dirname "$0")/.."
model=${1:-runs/demo/model.onnx}
kiln=${2:-${CARGO_TARGET_DIR:-target}/release/kiln}
[ -f "$model" ] || { echo "no model at $model; run: $kiln pipeline --demo --out runs/demo" >&2; exit 2; }
[ -x "$kiln" ] || { echo "no kiln binary at $kiln; run: cargo build --release" >&2; exit 2; }

scenario() { # workers engine clients rows binary requests
  local workers=$1 engine=$2 clients=$3 rows=$4 binary=$5 requests=$6 log
  log=$(mktemp)
  "$kiln" serve "$model" --port 0 --workers "$workers" --engine "$engine" 2>"$log" >/dev/null &
  local pid=$!
  local url=""
  for _ in $(seq 100); do
    url=$(grep -o 'http://127.0.0.1:[0-9]*' "$log" | head -1 || true)
    [ -n "$url" ] && curl -sf "$url/v2/health/ready" >/dev/null && break
    sleep 0.1
  done
  local extra=()
  [ "$binary" = 1 ] && extra+=(--binary)
  "$kiln" bench --server "$url" "$model" --engines "$engine" --clients "$clients" --rows-per-request "$rows" \
    --requests "$requests" --max-seconds 30 "${extra[@]}" --json |
    python3 -c "import json,sys; r=json.load(sys.stdin); rep=r['report']; print(json.dumps({
      'engine': '$engine', 'workers': $workers, 'clients': rep['clients'], 'rows_per_request': rep['rows_per_request'],
      'binary': bool($binary), 'requests': rep['requests'], 'failures': rep['failures'],
      'requests_per_s': round(rep['requests_per_s']), 'rows_per_s': round(rep['rows_per_s']),
      'p50_ms': rep['latency']['p50_us']/1000, 'p95_ms': rep['latency']['p95_us']/1000, 'p99_ms': rep['latency']['p99_us']/1000,
      'mean_batch_rows': round(rep['mean_batch_rows'] or 0, 1),
      'offline_rows_per_s': round(r['offline']['rows_per_s']), 'served_to_offline': round(r['served_to_offline_ratio'], 2)}))"
  kill -TERM "$pid"; wait "$pid" || true; rm -f "$log"
}

# The offline batch baseline: `kiln infer` on a file (parse, batches of 64, one worker per core,
# write), in the same run.
csv=$(mktemp --suffix=.csv)
width=$("$kiln" inspect "$model" --json | python3 -c "import json,re,sys; m=json.load(sys.stdin); print(re.search(r'\[N, (\d+)\]', m['inputs'][0]).group(1))")
python3 - "$csv" "$width" <<'PY'
import random, sys
random.seed(0)
path, width = sys.argv[1], int(sys.argv[2])
with open(path, "w") as f:
    f.write(",".join(f"f{i}" for i in range(width)) + "\n")
    for _ in range(300_000):
        f.write(",".join(f"{random.uniform(-4, 4):.6f}" for _ in range(width)) + "\n")
PY
start=$(date +%s.%N)
"$kiln" infer --model "$model" --data "$csv" --output "$csv.out.csv" --force -q >/dev/null 2>&1
end=$(date +%s.%N)
python3 -c "print('{\"offline_kiln_infer_rows_per_s\": %d}' % (300000 / ($end - $start)))"
rm -f "$csv" "$csv.out.csv"

scenario 1 tract 100 1 0 30000
scenario 2 tract 100 1 0 30000
scenario 1 tract 100 1 1 30000
scenario 1 tract 100 64 1 20000
scenario 2 tract 100 64 1 20000
scenario 2 tract 100 64 0 10000
if [ -n "${ORT_DYLIB_PATH:-}" ] || [ -f .ort/lib/libonnxruntime.so ]; then
  scenario 1 ort 100 1 0 30000
  scenario 2 ort 100 64 1 20000
fi
