#!/usr/bin/env bash
# Checks the fast path's pin protocol with the SPIN model checker
# (tests/model/fast_path_pins.pml): the model must pass an exhaustive search
# (every state, no assertion violated, no store left waiting forever), and
# each planted bug must be caught, so that the check is known to be able to
# fail. Usage: tests/model/check.sh [WORKDIR]. Needs spin and a C compiler;
# about a minute and 1.5 GB for the exhaustive search.
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
verify correct
if grep -q "errors: 0" correct.out && ! grep -q "reached -DMEMLIM bound\|Search not completed" correct.out; then
  echo "ok: the protocol: $(grep -o '[0-9]* states, stored' correct.out), no violation"
else
  echo "FAILED: the protocol's model:"; cat correct.out; fail=1
fi
for bug in BUG_NO_REVALIDATE BUG_NO_GENERATION BUG_NO_SCAN BUG_LOOK_BEFORE_UNPIN BUG_KEEP_DEAD_PINS; do
  verify "$bug" "-D$bug"
  if grep -Eq "errors: [1-9]" "$bug.out"; then
    echo "ok: $bug is caught: $(grep -m1 -Eo 'pan:1: .*' "$bug.out")"
  else
    echo "FAILED: $bug went unnoticed:"; cat "$bug.out"; fail=1
  fi
done
exit "$fail"
