#!/usr/bin/env bash
# Runs plasmon's RDMA tests on Soft-RoCE inside QEMU VMs (tools/rxe-vm):
#   1. one VM, two rxe devices: the verbs transport's tests and the RDMA
#      cluster tests (Redis and stores on the rxe addresses);
#   2. two VMs with separate kernels joined by a virtual wire: an end-to-end
#      fetch by RDMA from one to the other (tests/verbs_two_vm.sh).
# Never skips: where a VM cannot run, the harness says why and this fails.
#   tests/verbs_in_vm.sh [BUILD_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD="${1:-build}"
BIN="$BUILD/tests/plasmon_verbs_tests"
[ -x "$BIN" ] || { echo "verbs_in_vm: $BIN is not built (tools/setup.sh $BUILD)" >&2; exit 1; }

echo "==> RDMA tests in a Soft-RoCE VM (one kernel, rxe0 and rxe1)"
tools/rxe-vm/run.sh --mem 4096 --timeout 1500 -- "$BIN"
echo "==> RDMA fetch between two Soft-RoCE VMs (two kernels)"
tools/rxe-vm/run.sh --vms 2 --timeout 900 -- tests/verbs_two_vm.sh "$BUILD"
echo "==> RDMA tests passed"
