#!/usr/bin/env bash
# Builds the libFuzzer targets (clang, ASan+UBSan) in build-fuzz and runs each
# for a while on a fresh copy of its seed corpus, tests/fuzz_corpus/<target>/
# (the checked-in seeds never grow):
#   tools/fuzz.sh [SECONDS_PER_TARGET [TARGET...]]     (default 30 s, all targets)
# Prints per target the executions, coverage and what it found. Exits non-zero
# on any crash, leak, timeout, UBSan report or failed FUZZ_CHECK; the input
# and log stay in build-fuzz/fuzz-out/<target>/ (docs/TESTING.md).
# Needs tools/setup.sh's packages; installs its own (clang) the same way.
set -euo pipefail
cd "$(dirname "$0")/.."

SECONDS_PER_TARGET="${1:-30}"
shift || true
TARGETS=("$@")
if [ ${#TARGETS[@]} -eq 0 ]; then
  TARGETS=(protocol_fuzz tcp_wire_fuzz verbs_wire_fuzz directory_fuzz parse_fuzz)
fi

PACKAGES=(clang libclang-rt-14-dev)  # libFuzzer and the sanitizers' runtimes
tools/install-packages.sh fuzz "${PACKAGES[@]}"

BUILD_DIR=build-fuzz
cmake -S . -B "$BUILD_DIR" -G Ninja -DCMAKE_CXX_COMPILER=clang++ -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DPLASMON_FUZZ=ON -DPLASMON_BUILD_TESTS=OFF >/dev/null
ninja -C "$BUILD_DIR" "${TARGETS[@]}"

export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1"
failed=()
for t in "${TARGETS[@]}"; do
  out="$BUILD_DIR/fuzz-out/$t"
  rm -rf "$out"
  mkdir -p "$out/corpus"
  cp tests/fuzz_corpus/"$t"/* "$out/corpus/"
  rc=0
  timeout $((SECONDS_PER_TARGET + 120)) "$BUILD_DIR/$t" "$out/corpus" \
    -max_total_time="$SECONDS_PER_TARGET" -timeout=10 -print_final_stats=1 \
    -artifact_prefix="$out/" >"$out/log" 2>&1 || rc=$?
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$out/log" | tail -n 1)
  cov=$(grep -o 'cov: [0-9]* ft: [0-9]*' "$out/log" | tail -n 1 || true)
  found=$(find "$out" -maxdepth 1 -type f \( -name 'crash-*' -o -name 'leak-*' \
    -o -name 'timeout-*' -o -name 'oom-*' \) | sort)
  if [ "$rc" -eq 0 ] && [ -z "$found" ]; then
    echo "fuzz: $t: ${execs:-?} executions in $SECONDS_PER_TARGET s, ${cov:-no coverage}:" \
      "nothing found"
  else
    failed+=("$t")
    echo "fuzz: $t: FAILED (exit $rc) after ${execs:-?} executions, ${cov:-no coverage line}"
    grep -E 'ERROR|FUZZ_CHECK|runtime error|SUMMARY' "$out/log" | head -n 20 | sed 's/^/  /' || true
    for f in $found; do echo "  input: $f"; done
    echo "  log: $out/log"
  fi
done
if [ ${#failed[@]} -gt 0 ]; then
  echo "fuzz: found something in: ${failed[*]}"
  exit 1
fi
