#!/usr/bin/env bash
# plasmon: smoke test of the Soft-RoCE VM harness (tools/rxe-vm/run.sh).
#
#   tools/rxe-vm/smoke.sh [run.sh options]     exit 0 only if every check passes
#
# Inside the VM: both rxe devices ACTIVE in `rdma link`, both listed by
# ibv_devices, an rdma_cm RDMA READ/WRITE exchange (rping) on each address,
# and a small rdma_cm RDMA READ bandwidth run (ib_read_bw -R); the rxe
# hardware counters must show both devices carried traffic.
#
# With --vms 2 among the options, this runs smoke2.sh (the two-VM layout).
set -uo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
args=("$@")
for ((k = 0; k < ${#args[@]}; k++)); do
  if [ "${args[$k]}" = --vms ] && [ "${args[$((k + 1))]:-}" = 2 ]; then
    exec "$HERE/smoke2.sh" "${args[@]:0:k}" "${args[@]:k+2}"
  fi
done

read -r -d '' CHECK <<'EOF'
set -u
bad=0
ok()   { echo "smoke: PASS $*"; }
fail() { echo "smoke: FAIL $*"; bad=1; }
cnt()  { cat /sys/class/infiniband/$1/ports/1/hw_counters/$2 2>/dev/null || echo 0; }

links=$(rdma link show); echo "$links"
for d in rxe0 rxe1; do
  echo "$links" | grep -Eq "link $d/1 state ACTIVE .*netdev v[ab]" && ok "$d ACTIVE" || fail "$d not ACTIVE"
done
devs=$(ibv_devices); echo "$devs"
for d in rxe0 rxe1; do
  echo "$devs" | grep -Eq "^\s+$d\s" && ok "ibv_devices lists $d" || fail "ibv_devices lacks $d"
done

s0=$(cnt rxe0 sent_pkts); s1=$(cnt rxe1 sent_pkts)
# One rping per address: server and client on the same address, as rdma_cm
# resolves it (binding the client to the other address timed out, see README).
for ip in 10.77.0.1 10.77.0.2; do
  timeout 60 rping -s -a $ip -C 3 -v > /tmp/rping-server.log 2>&1 & spid=$!
  sleep 1
  timeout 60 rping -c -a $ip -C 3 -v; crc=$?
  wait $spid; src=$?
  sed 's/^/rping server: /' /tmp/rping-server.log
  [ $crc = 0 ] && [ $src = 0 ] && [ "$(grep -c 'ping data' /tmp/rping-server.log)" = 3 ] &&
    ok "rping on $ip (3 RDMA READ/WRITE rounds)" || fail "rping on $ip (client $crc, server $src)"
done

timeout 90 ib_read_bw -R -s 4096 -n 200 -F > /tmp/bw-server.log 2>&1 & spid=$!
sleep 1
timeout 90 ib_read_bw -R -s 4096 -n 200 -F 10.77.0.1; crc=$?
wait $spid; src=$?
[ $crc = 0 ] && [ $src = 0 ] && ok "ib_read_bw -R to 10.77.0.1 (200 x 4 KiB RDMA READ)" || {
  sed 's/^/ib_read_bw server: /' /tmp/bw-server.log; fail "ib_read_bw (client $crc, server $src)"; }

d0=$(( $(cnt rxe0 sent_pkts) - s0 )); d1=$(( $(cnt rxe1 sent_pkts) - s1 ))
echo "smoke: packets sent during the tests: rxe0 $d0, rxe1 $d1"
[ $d0 -gt 0 ] && [ $d1 -gt 0 ] && ok "both devices carried traffic" || fail "a device carried no traffic"
[ $bad = 0 ] && echo "smoke: ALL PASSED" || echo "smoke: FAILED"
exit $bad
EOF

start=$(date +%s)
"$HERE/run.sh" "$@" -- bash -c "$CHECK"
rc=$?
echo "smoke: run.sh exited $rc after $(( $(date +%s) - start )) s"
exit $rc
