#!/usr/bin/env bash
# The kill-and-resume sweep of docs/RELIABILITY.md: every `killed` test of tests/e2e/crash.rs
# with TRIALS real SIGKILLs per case (default 100; CI runs 20), then one table row: date,
# machine, trials, result and wall time.
#
#   scripts/kill-trials.sh [TRIALS]
set -euo pipefail
cd "$(dirname "$0")/.."
trials=${1:-100}
cpu=$(grep -m1 '^model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')
start=$(date +%s)
if KILN_KILL_TRIALS=$trials cargo nextest run --test e2e -E 'test(/killed/)' --no-fail-fast >&2; then
  result="all passed"
else
  result="FAILED (see the output above)"
fi
echo "| date | machine | command | trials per case | result |"
echo "|---|---|---|---:|---|"
echo "| $(date +%F) | $cpu, $(nproc) cores | \`scripts/kill-trials.sh $trials\` | $trials | $result ($(( $(date +%s) - start )) s) |"
[ "$result" = "all passed" ]
