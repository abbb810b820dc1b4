#!/usr/bin/env bash
# The plasmon live demo: sets up and builds, then
#   1. starts a two-node cluster (tools/plasmon-cluster: each store in its own
#      network namespace, or on loopback where namespaces are not available),
#      puts a 4 KiB and a 64 MiB object on node 1, shows where they are,
#      fetches them on node 2 over TCP and checks the bytes; then, from Python,
#      a numpy array put on node 1 is read on node 2 (get_object, fetch=True);
#   2. starts a single store and puts, gets and lists objects with the CLI;
#   3. prints the local latency figures beside their references (Unix-socket
#      ping-pong, memcpy, Redis over the same kind of socket), and the fetch
#      figures of the cluster of part 1 (plasmon-bench fetch --cluster-dir),
#      and draws both as charts (--plot) into build/demo-plots (PNG and SVG).
#   tools/demo.sh            # the whole demo
#   QUICK=1 tools/demo.sh    # fewer benchmark iterations
set -euo pipefail
cd "$(dirname "$0")/.."
tools/setup.sh build
BIN=build/tools

WORK="$(mktemp -d /tmp/plasmon-demo-XXXXXX)"
CLUSTER_DIR="$WORK/cluster"
STORE_PID=""
REDIS_SOCK="$WORK/redis.sock"
cleanup() {
  local rc=$?
  tools/plasmon-cluster down --dir "$CLUSTER_DIR" >/dev/null 2>&1 || true
  [ -n "$STORE_PID" ] && kill "$STORE_PID" 2>/dev/null && wait "$STORE_PID" 2>/dev/null || true
  if [ -S "$REDIS_SOCK" ]; then redis-cli -s "$REDIS_SOCK" shutdown nosave >/dev/null 2>&1 || true; fi
  if [ "$rc" -eq 0 ]; then
    rm -rf "$WORK"
  else
    echo "demo failed; the logs are in $CLUSTER_DIR and $WORK" >&2
  fi
}
trap cleanup EXIT

# ---- 1. Two nodes -------------------------------------------------------------
echo "==> tools/plasmon-cluster up: two stores (512 MiB each, prefaulted) and a Redis directory"
# A name of its own, so that the demo does not collide with another cluster.
tools/plasmon-cluster up --nodes 2 --dir "$CLUSTER_DIR" --name "pd$(($$ % 1000000))" \
  --memory 512M --prefault
# shellcheck disable=SC1091
. "$CLUSTER_DIR/cluster.env"
N1="$PLASMON_SOCKET_1"
N2="$PLASMON_SOCKET_2"

echo "==> plasmon put on node 1: a 4 KiB and a 64 MiB object"
head -c 4096 /dev/urandom >"$WORK/small"
head -c $((64 << 20)) /dev/urandom >"$WORK/large"
SMALL=$("$BIN/plasmon" -s "$N1" put "$WORK/small")
LARGE=$("$BIN/plasmon" -s "$N1" put "$WORK/large")
echo "4 KiB  -> $SMALL"
echo "64 MiB -> $LARGE"

echo "==> plasmon where (asked of node 2, which has neither yet)"
"$BIN/plasmon" -s "$N2" where "$SMALL"
"$BIN/plasmon" -s "$N2" where "$LARGE"

echo "==> plasmon fetch on node 2 (node 1 serves at $PLASMON_ENDPOINT_1, node 2 pulls over TCP)"
fetch_one() {  # fetches $1 ($2: a label) on node 2; prints the CLI's wall time and the transfer's own
  local err wall line
  if ! err=$("$BIN/plasmon" -s "$N2" fetch "$1" 2>&1 >/dev/null); then
    echo "$err" >&2
    echo "fetch of $1 failed; the stores' logs:" >&2
    tail -n 20 "$CLUSTER_DIR/n1.log" "$CLUSTER_DIR/n2.log" >&2
    return 1
  fi
  wall=$(sed -n 's/^plasmon: fetch took \([0-9.]*\) ms$/\1/p' <<<"$err")
  # "plasmon: ID: pulled 64 MiB over TCP: transfer 33.1 ms at 2.03 GB/s (...)", as the store measured it
  line=$(sed -n 's/^plasmon: [0-9a-f]*: pulled .* over \(.*\)$/\1/p' <<<"$err")
  echo "$2: fetched in $wall ms; the transfer over $line"
}
fetch_one "$SMALL" "4 KiB "
fetch_one "$LARGE" "64 MiB"
"$BIN/plasmon" -s "$N2" where "$LARGE"

echo "==> plasmon get on node 2 | sha256sum, against the files put on node 1"
for obj in "small:$SMALL" "large:$LARGE"; do
  file="$WORK/${obj%%:*}" id="${obj#*:}"
  want=$(sha256sum <"$file" | cut -d' ' -f1)
  got=$("$BIN/plasmon" -s "$N2" get "$id" | sha256sum | cut -d' ' -f1)
  if [ "$got" != "$want" ]; then
    echo "MISMATCH for $id: node 2 has $got, the file is $want" >&2
    exit 1
  fi
  echo "$id  $got  same bytes"
done

# The Python binding (python/): a numpy array put on node 1 comes back on
# node 2 as a read-only view of node 2's store (pulled over TCP on the way).
if [ -d build/python/plasmon ]; then
  echo "==> Python: a numpy array put on node 1 (put_object), read on node 2 (get_object, fetch=True)"
  PYTHONPATH=build/python /usr/bin/python3 - "$N1" "$N2" <<'PY'
import sys
import numpy as np
import plasmon
with plasmon.connect(sys.argv[1]) as n1, plasmon.connect(sys.argv[2]) as n2:
    arr = np.random.default_rng(0).random((1024, 1024))  # 8 MiB of float64
    oid = n1.put_object({"weights": arr, "step": 7})
    obj = n2.get_object(oid, timeout_ms=30000, fetch=True)
    w = obj["weights"]
    assert np.array_equal(w, arr) and obj["step"] == 7, "node 2 has other bytes"
    print(f"{oid}: {w.shape} {w.dtype} on node 2, equal to node 1's; "
          f"a read-only view of node 2's store (writeable={w.flags.writeable}, "
          f"owns its data={w.flags.owndata})")
PY
fi

# ---- 2. One node, as a single store ---------------------------------------------
export PLASMON_SOCKET="$WORK/plasmon.sock"
# With two CPUs or more, the store runs on CPU 1 and the benchmark on CPU 0, so
# that every figure (and the ping-pong floor) crosses CPUs the same way.
PIN=()
STORE_CMD=("$BIN/plasmon-store")
if [ "$(nproc)" -ge 2 ] && command -v taskset >/dev/null; then
  PIN=(--pin 0,1)
  STORE_CMD=(taskset -c 1 "$BIN/plasmon-store")
fi
echo "==> starting a single plasmon-store: 1 GiB arena, prefaulted, socket $PLASMON_SOCKET"
"${STORE_CMD[@]}" --socket "$PLASMON_SOCKET" --memory 1G --prefault --log-level warn &
STORE_PID=$!
for _ in $(seq 200); do [ -S "$PLASMON_SOCKET" ] && break; sleep 0.05; done

echo "==> plasmon put / get / ls / stats"
head -c 5000000 /dev/urandom > "$WORK/input"
ID=$("$BIN/plasmon" put "$WORK/input")
echo "put $WORK/input (5 MB) as $ID"
echo "hello, plasmon" | "$BIN/plasmon" put 68656c6c6f2d706c61736d6f6e2d64656d6f2121 - >/dev/null
"$BIN/plasmon" get "$ID" -o "$WORK/output"
cmp "$WORK/input" "$WORK/output" && echo "get $ID: the 5 MB came back intact"
echo -n "get 68656c6c...: "; "$BIN/plasmon" get 68656c6c6f2d706c61736d6f6e2d64656d6f2121
"$BIN/plasmon" ls
"$BIN/plasmon" stats
"$BIN/plasmon" rm "$ID" 68656c6c6f2d706c61736d6f6e2d64656d6f2121  # the benchmark wants an empty store

# ---- 3. Latency figures -------------------------------------------------------------
echo "==> starting redis-server on $REDIS_SOCK (the reference for a GET over a Unix socket)"
redis-server --port 0 --unixsocket "$REDIS_SOCK" --save '' --appendonly no --daemonize yes \
  --logfile "$WORK/redis.log" >/dev/null
for _ in $(seq 100); do [ -S "$REDIS_SOCK" ] && break; sleep 0.05; done

echo "==> plasmon-bench local (latency in microseconds)"
ARGS=()
if [ -n "${QUICK:-}" ]; then ARGS+=(--iterations 2000); fi
PLOTS="$PWD/build/demo-plots"  # kept after the demo
rm -rf "$PLOTS"
"$BIN/plasmon-bench" local --socket "$PLASMON_SOCKET" --redis-socket "$REDIS_SOCK" "${PIN[@]}" "${ARGS[@]}" \
  --plot "$PLOTS"

# plasmon-bench fetch: a few iterations on the cluster of part 1.
echo "==> plasmon-bench fetch (node 2 pulling from node 1; few iterations)"
ITERATIONS=100
if [ -n "${QUICK:-}" ]; then ITERATIONS=20; fi
"$BIN/plasmon-bench" fetch --cluster-dir "$CLUSTER_DIR" --iterations "$ITERATIONS" --plot "$PLOTS"
echo "==> the charts of both benchmarks (latency CDFs, throughput against size) are in $PLOTS:"
ls "$PLOTS"/*.png | sed 's/^/    /'
echo "==> done; tearing down the cluster and the store"
