#!/usr/bin/env bash
# Runs the kill -9 test file (tests/crash_test.ts) N times in a row (default
# 20), each with its own CRASH_SEED so the kill moments differ, and stops at
# the first failure. Prints each iteration's seed and time, and the total.
#
#   tests/crash_loop.sh        # 20 iterations
#   tests/crash_loop.sh 50     # 50 iterations
#   CRASH_SEED=123 deno test -A tests/crash_test.ts   # replay one seed
set -euo pipefail

cd "$(dirname "$0")/.."
iterations="${1:-20}"
base_seed="${CRASH_LOOP_SEED:-$(date +%s)}"
start=$(date +%s)

for ((i = 1; i <= iterations; i++)); do
  seed=$((base_seed + i))
  t0=$(date +%s)
  if ! CRASH_SEED="$seed" deno test --allow-all tests/crash_test.ts >"/tmp/weft_crash_loop_$$.log" 2>&1; then
    cat "/tmp/weft_crash_loop_$$.log"
    echo "crash loop: iteration $i of $iterations FAILED (CRASH_SEED=$seed); $((i - 1)) passed before it"
    rm -f "/tmp/weft_crash_loop_$$.log"
    exit 1
  fi
  echo "crash loop: iteration $i/$iterations passed (CRASH_SEED=$seed, $(($(date +%s) - t0)) s)"
done
rm -f "/tmp/weft_crash_loop_$$.log"
echo "crash loop: all $iterations iterations passed in $(($(date +%s) - start)) s"
