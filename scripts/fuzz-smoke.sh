#!/usr/bin/env bash
# Runs every fuzz target in fuzz/fuzz_targets briefly (bounded runs) and fails on a crash.
# cargo-fuzz needs nightly flags; on stable they are unlocked with RUSTC_BOOTSTRAP=1.
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${FUZZ_RUNS:-20000}
if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "fuzz-smoke: installing cargo-fuzz" >&2
  cargo install cargo-fuzz --locked --quiet
fi
export RUSTC_BOOTSTRAP=1
passed=0
failed=0
for target in fuzz/fuzz_targets/*.rs; do
  name=$(basename "$target" .rs)
  if cargo fuzz run --fuzz-dir fuzz "$name" -- -runs="$RUNS" -max_len=4096 >"/tmp/fuzz-$name.log" 2>&1; then
    echo "fuzz $name: ok ($RUNS runs)"
    passed=$((passed + 1))
  else
    echo "fuzz $name: FAILED (see /tmp/fuzz-$name.log)"
    tail -30 "/tmp/fuzz-$name.log"
    failed=$((failed + 1))
  fi
done
echo "fuzz: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
