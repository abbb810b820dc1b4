# Sourced by the shell tests (tests/*/*_test.sh): `. tests/script_lib.sh NAME`.
# Gives $tmp, a fresh directory removed at exit with the store start_store
# started, and fail.
set -euo pipefail
tmp=$(mktemp -d "${TMPDIR:-/tmp}/plasmon-$1.XXXXXX")
store_pid=""
cleanup() {
  if [ -n "$store_pid" ]; then kill "$store_pid" 2>/dev/null || true; wait "$store_pid" 2>/dev/null || true; fi
  rm -rf "$tmp"
}
trap cleanup EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }

# start_store BINARY SOCKET [FLAGS...]: in the background, until it serves.
start_store() {
  local bin="$1" sock="$2"
  shift 2
  "$bin" -s "$sock" --log-level warn "$@" &
  store_pid=$!
  for _ in $(seq 200); do [ -S "$sock" ] && return 0; sleep 0.05; done
  fail "$bin did not start with: $*"
}
