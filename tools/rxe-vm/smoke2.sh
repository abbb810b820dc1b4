#!/usr/bin/env bash
# plasmon: smoke test of the two-VM Soft-RoCE layout (tools/rxe-vm/run.sh --vms 2).
#
#   tools/rxe-vm/smoke2.sh [run.sh options]    exit 0 only if every check passes
#
# Both VMs run the script below. In each: rxe0 ACTIVE on eth0 and listed by
# ibv_devices. Then, across the QEMU socket link between the two kernels:
# an rdma_cm RDMA READ/WRITE exchange (rping server in vm1, client in vm2) and
# a small rdma_cm RDMA READ bandwidth run (ib_read_bw -R, server in vm1). The
# client side retries until the server is up (vm2 may boot before vm1 is
# listening). Each VM's rxe0 hw_counters must show packets sent and received,
# i.e. the traffic really crossed the link between the VMs.
set -uo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)

read -r -d '' CHECK <<'EOF'
set -u
n=$PLASMON_RXE_VM_NODE
bad=0
ok()   { echo "smoke2: PASS $*"; }
fail() { echo "smoke2: FAIL $*"; bad=1; }
cnt()  { cat /sys/class/infiniband/rxe0/ports/1/hw_counters/$1 2>/dev/null || echo 0; }
retry() {  # SECONDS CMD...: run CMD until it succeeds or SECONDS have passed
  local end=$((SECONDS + $1)) rc; shift
  while :; do
    "$@"; rc=$?
    [ $rc = 0 ] && return 0
    [ $SECONDS -lt $end ] || return $rc
    echo "smoke2: '$*' exited $rc; retrying"; sleep 1
  done
}
server=10.78.0.1

echo "smoke2: node $n, address $PLASMON_RXE_VM_ADDR, peers $PLASMON_RXE_VM_PEERS"
links=$(rdma link show); echo "$links"
echo "$links" | grep -Eq "link rxe0/1 state ACTIVE .*netdev eth0" && ok "rxe0 ACTIVE on eth0" || fail "rxe0 not ACTIVE on eth0"
devs=$(ibv_devices); echo "$devs"
echo "$devs" | grep -Eq "^\s+rxe0\s" && ok "ibv_devices lists rxe0" || fail "ibv_devices lacks rxe0"

s0=$(cnt sent_pkts); r0=$(cnt rcvd_pkts)
t0=$SECONDS
if [ "$n" = 1 ]; then
  timeout 240 rping -s -a $server -C 3 -v; rc=$?
  [ $rc = 0 ] && ok "rping server on $server (3 RDMA READ/WRITE rounds from vm2)" || fail "rping server exited $rc"
  timeout 240 ib_read_bw -R -s 4096 -n 200 -F; rc=$?
  [ $rc = 0 ] && ok "ib_read_bw -R server on $server (200 x 4 KiB RDMA READ by vm2)" || fail "ib_read_bw server exited $rc"
else
  retry 120 timeout 60 rping -c -a $server -C 3 -v > /tmp/rping.log 2>&1; rc=$?
  cat /tmp/rping.log
  [ $rc = 0 ] && [ "$(grep -c 'ping data' /tmp/rping.log)" = 3 ] &&
    ok "rping client to $server (3 RDMA READ/WRITE rounds)" || fail "rping client exited $rc"
  retry 120 timeout 90 ib_read_bw -R -s 4096 -n 200 -F $server; rc=$?
  [ $rc = 0 ] && ok "ib_read_bw -R client to $server (200 x 4 KiB RDMA READ)" || fail "ib_read_bw client exited $rc"
fi
echo "smoke2: rping + ib_read_bw took $((SECONDS - t0)) s"

ds=$(( $(cnt sent_pkts) - s0 )); dr=$(( $(cnt rcvd_pkts) - r0 ))
echo "smoke2: rxe0 of vm$n during the tests: sent $ds packets, received $dr"
[ $ds -gt 0 ] && [ $dr -gt 0 ] && ok "rxe0 of vm$n sent and received packets" || fail "rxe0 of vm$n carried no traffic"
[ $bad = 0 ] && echo "smoke2: vm$n ALL PASSED" || echo "smoke2: vm$n FAILED"
exit $bad
EOF

start=$(date +%s)
"$HERE/run.sh" --vms 2 "$@" -- bash -c "$CHECK"
rc=$?
echo "smoke2: run.sh --vms 2 exited $rc after $(( $(date +%s) - start )) s"
if [ $rc = 0 ]; then echo "smoke2: PASS"; else echo "smoke2: FAIL"; fi
exit $rc
