#!/usr/bin/env bash
# Checks the fast path's pin protocol with the SPIN model checker
# (tests/model/fast_path_pins.pml): the model must pass an exhaustive search
# (every state, no assertion violated, no store left waiting forever), and
# each planted bug must be caught, so that the check is known to be able to
# fail. Usage: tests/model/check.sh [WORKDIR]. Needs spin and a C compiler;
# under a minute and 0.5 GB for the exhaustive search (on a quiet machine).
set -euo pipefail
model="$(cd "$(dirname "$0")" && pwd)/fast_path_pins.pml"
work="${1:-$(mktemp -d)}"
mkdir -p "$work"
cd "$work"
command -v spin >/dev/null || { echo "spin is not installed (tools/setup.sh installs it)"; exit 1; }

# verify NAME [-DBUG]: generates and compiles the verifier, runs it; its
# report in NAME.out.
verify() {
  local name="$1"; shift
  mkdir -p "$name"
  (cd "$name" && spin -a "$@" "$model" >spin.out 2>&1 && \
     cc -O2 -w -DSAFETY -DCOLLAPSE -DMEMLIM=3000 -o pan pan.c && \
     ./pan -m1000000 >../"$name".out 2>&1) || true
}

fail=0
complete() { ! grep -q "reached -DMEMLIM bound\|Search not completed\|max search depth too small" "$1"; }
verify correct
if grep -q "errors: 0" correct.out && complete correct.out; then
  echo "ok: the protocol: $(grep -o '[0-9]* states, stored' correct.out), no violation"
else
  echo "FAILED: the protocol's model (a violation, or an incomplete search):"; cat correct.out; fail=1
fi
# Each planted bug, with the failure it must cause; and two probes that must
# fail, showing that the model reaches a successful get (so P1 and P3 are
# checked on something) and a store waiting for a pin.
for case in "BUG_NO_REVALIDATE:assertion violated" "BUG_NO_GENERATION:assertion violated" \
            "BUG_NO_SCAN:assertion violated" "BUG_LOOK_BEFORE_UNPIN:invalid end state" \
            "BUG_KEEP_DEAD_PINS:invalid end state" "REACH_SUCCESS:assertion violated" \
            "REACH_WAIT:assertion violated"; do
  name="${case%%:*}" want="${case#*:}"
  verify "$name" "-D$name"
  if grep -q "pan:1: $want" "$name.out"; then
    echo "ok: $name is caught: $(grep -m1 -Eo 'pan:1: .*' "$name.out")"
  else
    echo "FAILED: $name should end in '$want':"; cat "$name.out"; fail=1
  fi
done
exit "$fail"
