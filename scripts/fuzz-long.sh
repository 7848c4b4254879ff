#!/usr/bin/env bash
# The long fuzzing runs of docs/RELIABILITY.md: each cargo-fuzz target (or the ones named) for
# RUNS executions (default 1000000) from its seed corpus, then one table row per target: date,
# machine, executions, time, crashes and coverage. Needs nightly Rust and cargo-fuzz
# (`cargo install cargo-fuzz`); a crash leaves its input in fuzz/artifacts/<target>/.
#
#   RUNS=1000000 scripts/fuzz-long.sh [TARGET ...]
set -uo pipefail
cd "$(dirname "$0")/.."
runs=${RUNS:-1000000}
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(onnx_load rows kserve_request config)
cpu=$(grep -m1 '^model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')
rows=()
status=0
for t in "${targets[@]}"; do
  mkdir -p "fuzz/work/$t"
  log=$(mktemp)
  start=$(date +%s)
  cargo +nightly fuzz run --target-dir "${KILN_FUZZ_TARGET:-$HOME/.cache/kiln-fuzz-target}" "$t" \
    "fuzz/work/$t" "fuzz/corpus/$t" -- -runs="$runs" -max_len=65536 -timeout=10 \
    -rss_limit_mb=2048 -print_final_stats=1 >"$log" 2>&1
  rc=$?
  secs=$(( $(date +%s) - start ))
  execs=$(grep -m1 'stat::number_of_executed_units' "$log" | awk '{print $2}')
  cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1 | awk '{print $2}')
  if [ $rc -eq 0 ]; then found="none"; else found="crash, hang or OOM (exit $rc): see fuzz/artifacts/$t"; status=1; tail -n 30 "$log" >&2; fi
  rows+=("| $(date +%F) | $cpu, $(nproc) cores | \`$t\` | ${execs:-?} | ${secs} s | $found | ${cov:-?} |")
  rm -f "$log"
done
echo "| date | machine | target | executions | time | crashes, hangs, OOMs | coverage (edges) |"
echo "|---|---|---|---:|---:|---|---:|"
printf '%s\n' "${rows[@]}"
exit $status
