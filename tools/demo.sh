#!/usr/bin/env bash
# The plasmon live demo: sets up, builds, starts a store, puts and gets
# objects with the CLI, and prints the local latency figures beside their
# references (Unix-socket ping-pong, memcpy, Redis over the same kind of socket).
#   tools/demo.sh            # the whole demo
#   QUICK=1 tools/demo.sh    # fewer benchmark iterations
set -euo pipefail
cd "$(dirname "$0")/.."
tools/setup.sh build
BIN=build/tools

WORK="$(mktemp -d /tmp/plasmon-demo-XXXXXX)"
STORE_PID=""
REDIS_SOCK="$WORK/redis.sock"
cleanup() {
  [ -n "$STORE_PID" ] && kill "$STORE_PID" 2>/dev/null && wait "$STORE_PID" 2>/dev/null || true
  if [ -S "$REDIS_SOCK" ]; then redis-cli -s "$REDIS_SOCK" shutdown nosave >/dev/null 2>&1 || true; fi
  rm -rf "$WORK"
}
trap cleanup EXIT

export PLASMON_SOCKET="$WORK/plasmon.sock"
# With two CPUs or more, the store runs on CPU 1 and the benchmark on CPU 0, so
# that every figure (and the ping-pong floor) crosses CPUs the same way.
PIN=()
STORE_CMD=("$BIN/plasmon-store")
if [ "$(nproc)" -ge 2 ] && command -v taskset >/dev/null; then
  PIN=(--pin 0,1)
  STORE_CMD=(taskset -c 1 "$BIN/plasmon-store")
fi
echo "==> starting plasmon-store: 1 GiB arena, prefaulted, socket $PLASMON_SOCKET"
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

echo "==> starting redis-server on $REDIS_SOCK (the reference for a GET over a Unix socket)"
redis-server --port 0 --unixsocket "$REDIS_SOCK" --save '' --appendonly no --daemonize yes \
  --logfile "$WORK/redis.log" >/dev/null
for _ in $(seq 100); do [ -S "$REDIS_SOCK" ] && break; sleep 0.05; done

echo "==> plasmon-bench local (latency in microseconds)"
ARGS=()
if [ -n "${QUICK:-}" ]; then ARGS+=(--iterations 2000); fi
"$BIN/plasmon-bench" local --socket "$PLASMON_SOCKET" --redis-socket "$REDIS_SOCK" "${PIN[@]}" "${ARGS[@]}"
