#!/usr/bin/env bash
# Sets up, builds and runs the whole plasmon test suite, in this order:
#   1. a release build (RelWithDebInfo), all tests;
#   2. the RDMA tests of the release build on Soft-RoCE, in QEMU VMs
#      (tests/verbs_in_vm.sh; its harness installs QEMU and fetches Debian's
#      kernel on first use, and fails loudly where a VM cannot run);
#   3. an ASan+UBSan build, all tests, then its RDMA tests in a VM;
#   4. a TSan build, all tests (the client is used from several threads), then
#      its verbs transport tests in a VM;
#   5. every libFuzzer target for 20 s, under ASan+UBSan (tools/fuzz.sh, clang).
# See docs/TESTING.md. Exits non-zero if anything fails.
set -euo pipefail
cd "$(dirname "$0")/.."
JOBS="${JOBS:-$(nproc)}"

run_suite() {
  local dir="$1"
  shift
  echo "==> building $dir $*"
  tools/setup.sh "$dir" "$@"
  echo "==> testing $dir"
  (cd "$dir" && ctest --output-on-failure -j "$JOBS" --timeout 600)
}

run_suite build
echo "==> RDMA tests (Soft-RoCE in QEMU)"
tests/verbs_in_vm.sh build
ASAN_OPTIONS="detect_leaks=1:abort_on_error=1" UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1" \
  run_suite build-asan -DPLASMON_SANITIZE=address,undefined
echo "==> the RDMA tests under ASan+UBSan (Soft-RoCE in QEMU)"
tools/rxe-vm/run.sh --mem 6144 --timeout 3000 \
  --env ASAN_OPTIONS="detect_leaks=1:abort_on_error=1" \
  --env UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1" \
  -- build-asan/tests/plasmon_verbs_tests
TSAN_OPTIONS="halt_on_error=1 second_deadlock_stack=1" \
  run_suite build-tsan -DPLASMON_SANITIZE=thread
echo "==> the verbs transport under TSan (Soft-RoCE in QEMU)"
tools/rxe-vm/run.sh --mem 4096 --timeout 1800 \
  --env TSAN_OPTIONS="halt_on_error=1 second_deadlock_stack=1" \
  -- build-tsan/tests/plasmon_verbs_tests --gtest_filter='VerbsWire*:VerbsTransport*'
echo "==> fuzzing (libFuzzer, ASan+UBSan)"
tools/fuzz.sh 20
echo "==> all test suites passed"
