#!/usr/bin/env bash
# Checks the fast path's pin protocol with the SPIN model checker
# (tests/model/fast_path_pins.pml): the model must pass an exhaustive search
# (every state, no assertion violated, no store left waiting forever), and
# each planted bug must be caught with the failure it causes, so that the
# check is known to be able to fail. Usage: tests/model/check.sh [WORKDIR].
# Needs spin and a C compiler; about a minute and 0.6 GB (the exhaustive
# search; on a quiet machine).
set -euo pipefail
model="$(cd "$(dirname "$0")" && pwd)/fast_path_pins.pml"
work="${1:-$(mktemp -d)}"
mkdir -p "$work"
cd "$work"
command -v spin >/dev/null || { echo "spin is not installed (tools/setup.sh installs it)"; exit 1; }

# verify NAME "CFLAGS" "PANFLAGS" [-DBUG]: generates and compiles the
# verifier, runs it; its report in NAME.out. The search is at most some 130
# steps deep: -m10000 leaves room (an incomplete search fails below). The
# runs that must fail stop at their first error, most a few thousand states
# in: built without optimisation (faster to build than to run), with a
# smaller hash table.
verify() {
  local name="$1" cflags="$2" panflags="$3"; shift 3
  mkdir -p "$name"
  (cd "$name" && spin -a "$@" "$model" >spin.out 2>&1 && \
     cc $cflags -w -DSAFETY -DCOLLAPSE -DMEMLIM=3000 -o pan pan.c && \
     ./pan -m10000 $panflags >../"$name".out 2>&1) || true
}

fail=0
complete() { ! grep -q "reached -DMEMLIM bound\|Search not completed\|max search depth too small" "$1"; }
verify correct -O2 ""
if grep -q "errors: 0" correct.out && complete correct.out; then
  echo "ok: the protocol: $(grep -o '[0-9]* states, stored' correct.out), no violation"
else
  echo "FAILED: the protocol's model (a violation, or an incomplete search):"; cat correct.out; fail=1
fi
# Each planted bug, with the failure it must cause (the assertion's text as
# pan prints it; P1 is checked at a client's read and, for an eviction's
# free, as P4 at the store's: where a bug first frees under a pin decides
# which); then probes that must fail, showing that the model reaches what the
# checks are about: a successful get, an eviction that frees, one that
# reverts under a validated pin, and a store waiting for a pin of a revoked
# client (that it waits for pins at all).
P1='assertion violated (mem_gen==o1)'
P3='assertion violated  !(deleted_at_pin)'
P4='assertion violated (((held[0]!=mem_gen)&&(held[1]!=mem_gen))&&(held[2]!=mem_gen))'
P2='invalid end state'
for case in "BUG_NO_REVALIDATE:$P3" "BUG_NO_GENERATION:$P3" "BUG_NO_SCAN:$P1" \
            "BUG_LOOK_BEFORE_UNPIN:$P2" "BUG_KEEP_DEAD_PINS:$P2" \
            "BUG_EVICT_NO_SCAN:$P4" "BUG_REVERT_NEW_GEN:$P4" \
            "BUG_FORGET_REVOKED:$P4" "BUG_NO_REVOKED_LOAD:$P4" "BUG_REVOKED_NO_RESCAN:$P2" \
            "REACH_SUCCESS:assertion violated 0" "REACH_EVICT_FREE:assertion violated 0" \
            "REACH_REVERT_HELD:assertion violated  !((((held[0]==mem_gen)" \
            "REACH_REVOKED_WAIT:assertion violated  !(((revoked"; do
  name="${case%%:*}" want="${case#*:}"
  verify "$name" -O0 -w20 "-D$name"
  if grep -qF "pan:1: $want" "$name.out"; then
    echo "ok: $name is caught: $(grep -m1 -Eo 'pan:1: .*' "$name.out")"
  else
    echo "FAILED: $name should end in '$want':"; cat "$name.out"; fail=1
  fi
done
exit "$fail"
