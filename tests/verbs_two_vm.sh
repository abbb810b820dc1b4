#!/usr/bin/env bash
# End-to-end fetch by RDMA between two machines with separate kernels: run in
# both VMs of `tools/rxe-vm/run.sh --vms 2` (tests/verbs_in_vm.sh does).
#
#   VM 1 (10.78.0.1): redis-server on its address, a store ("vm1") with
#                     --transport verbs; puts objects of several sizes and
#                     records their sha256 in Redis.
#   VM 2 (10.78.0.2): a store ("vm2") with --transport verbs; fetches every
#                     object, checks its sha256 and that it came by RDMA.
# VM 2 reports the verdict through Redis so that VM 1 exits with it too.
#   tests/verbs_two_vm.sh BUILD_DIR
set -euo pipefail
BUILD="${1:-build}"
NODE="${PLASMON_RXE_VM_NODE:?run me through tools/rxe-vm/run.sh --vms 2}"
ADDR="${PLASMON_RXE_VM_ADDR:?}"
REDIS_HOST=10.78.0.1
STORE="$BUILD/tools/plasmon-store"
CLI="$BUILD/tools/plasmon"
WORK=/tmp/e2e
SOCK="$WORK/store.sock"
SIZES=(1 4096 1048579 33554432)  # 1 B, 4 KiB, 1 MiB + 3, 32 MiB
mkdir -p "$WORK"
rc() { redis-cli -h "$REDIS_HOST" "$@"; }
say() { echo "e2e vm$NODE: $*"; }
fail() { say "FAIL: $*"; [ -f "$WORK/store.log" ] && tail -20 "$WORK/store.log"; exit 1; }
id_of() { printf 'e2e%037x' "$1"; }

# Waits up to $1 seconds for the command after it to succeed.
wait_for() {
  local limit="$1" i
  shift
  for ((i = 0; i < limit * 10; i++)); do
    if "$@" >/dev/null 2>&1; then return 0; fi
    sleep 0.1
  done
  return 1
}

if [ "$NODE" = 1 ]; then
  redis-server --bind "$REDIS_HOST" --port 6379 --protected-mode no --save '' --appendonly no \
    >"$WORK/redis.log" 2>&1 &
  wait_for 30 rc ping || fail "redis-server did not start"
fi
wait_for 120 rc ping || fail "cannot reach Redis at $REDIS_HOST:6379"

echo "a secret both VMs share" >"$WORK/secret"
"$STORE" -s "$SOCK" -m 256M --redis "$REDIS_HOST:6379" --node-id "vm$NODE" \
  --listen "$ADDR:7400" --transport verbs --cluster-secret-file "$WORK/secret" \
  >"$WORK/store.log" 2>&1 &
STORE_PID=$!
trap 'kill $STORE_PID 2>/dev/null || true' EXIT
wait_for 60 "$CLI" -s "$SOCK" stats || fail "the store did not start"
grep -q "RDMA device" "$WORK/store.log" || fail "the store found no RDMA device"
say "store up on $ADDR ($(grep -o 'RDMA device [a-z0-9]*' "$WORK/store.log"))"

if [ "$NODE" = 1 ]; then
  for i in "${!SIZES[@]}"; do
    head -c "${SIZES[$i]}" /dev/urandom >"$WORK/obj$i"
    "$CLI" -s "$SOCK" put "$(id_of "$i")" "$WORK/obj$i" >/dev/null || fail "put of object $i"
    rc set "e2e:sum:$i" "$(sha256sum <"$WORK/obj$i" | cut -d' ' -f1)" >/dev/null
  done
  rc set e2e:ready 1 >/dev/null
  say "put ${#SIZES[@]} objects; waiting for vm2"
  wait_for 600 bash -c "[ -n \"\$(redis-cli -h $REDIS_HOST get e2e:done)\" ]" ||
    fail "vm2 never reported"
  verdict="$(rc get e2e:done)"
  [ "$verdict" = ok ] || fail "vm2 says: $verdict"
  say "PASS (vm2 fetched every object by RDMA)"
  exit 0
fi

wait_for 300 bash -c "[ \"\$(redis-cli -h $REDIS_HOST get e2e:ready)\" = 1 ]" ||
  fail "vm1 never put its objects"
report() { rc set e2e:done "$1" >/dev/null || true; }
for i in "${!SIZES[@]}"; do
  id="$(id_of "$i")"
  if ! out="$("$CLI" -s "$SOCK" fetch -t 120000 "$id" 2>&1)"; then
    report "fetch of object $i failed: $out"
    fail "fetch of object $i ($id): $out"
  fi
  "$CLI" -s "$SOCK" get -o "$WORK/got$i" "$id" || { report "get $i"; fail "get of object $i"; }
  want="$(rc get "e2e:sum:$i")"
  got="$(sha256sum <"$WORK/got$i" | cut -d' ' -f1)"
  if [ "$want" != "$got" ]; then
    report "object $i differs"
    fail "object $i (${SIZES[$i]} bytes) differs: sha256 $got, want $want"
  fi
  say "object $i: ${SIZES[$i]} bytes, sha256 matches"
done
stats="$("$CLI" -s "$SOCK" stats)"
echo "$stats" | grep fetched
by_rdma="$(echo "$stats" | sed -n 's/.*; \([0-9]*\) by RDMA.*/\1/p')"
if [ "$by_rdma" != "${#SIZES[@]}" ]; then
  report "only ${by_rdma:-?} of ${#SIZES[@]} came by RDMA"
  fail "only ${by_rdma:-?} of ${#SIZES[@]} fetches went by RDMA"
fi
report ok
say "PASS (${#SIZES[@]} objects fetched from vm1 by RDMA READ, digests checked)"
