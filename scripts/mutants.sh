#!/usr/bin/env bash
# Measures how strong the tests are: cargo-mutants (pinned below) changes the code of
# the crates that judge hostile input and forward frames, one small change (a
# "mutant") at a time, and runs that crate's tests against each. A mutant the tests
# catch is killed; one they miss survives. docs/testing.md records the scores, the
# survivors and why each is equivalent.
#
#   scripts/mutants.sh [SET...]
#
# SETs (default: all): svm exchange virtqueue wire vhost-device switch.
# Each set runs with -j 1 (the machine has two cores) and writes
# target/mutants/SET/mutants.out/{caught,missed,timeout,unviable}.txt; a summary
# line per set is printed at the end. This is a documented run, not part of CI:
# it takes hours. Installs cargo-mutants if it is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=lib/programs.sh
. scripts/lib/programs.sh
require_programs grep wc mkdir

CARGO_MUTANTS_VERSION=27.1.0
ALL_SETS=(svm exchange virtqueue wire vhost-device switch)

# The files of each set (what is mutated), the package whose tests judge them, and
# what is left out (with why, in docs/testing.md).
args_of() {
  case "$1" in
    svm) echo "--package svm" ;;
    exchange) echo "--package exchange -f crates/exchange/src/ring.rs -f crates/exchange/src/layout.rs -f crates/exchange/src/region.rs --cargo-test-arg=--lib --cargo-test-arg=--tests" ;;
    virtqueue) echo "--package driver-virtqueue" ;;
    wire) echo "--package twin-wire" ;;
    vhost-device) echo "--package vhost-device -f crates/vhost-device/src/datapath.rs -f crates/vhost-device/src/control.rs -f crates/vhost-device/src/shared.rs -f crates/vhost-device/src/ring_access.rs -f crates/vhost-device/src/budget.rs -f crates/vhost-device/src/stats.rs -E check_invariants|connect_for_fuzzing|disconnect_for_fuzzing -E with~(VuResult::(new|from_iter|from)\\(|MutexGuard::)" ;;
    switch) echo "--package switch -f crates/switch/src/fdb.rs -f crates/switch/src/counters.rs -f crates/switch/src/datapath.rs -f crates/switch/src/port/uplink/supervision.rs -E DataPath::(run|sleep|build_waits) -E supervision.rs.*(Uplink::|spawn_connector|connect_once)" ;;
    *) return 1 ;;
  esac
}

sets=("$@")
[ ${#sets[@]} -gt 0 ] || sets=("${ALL_SETS[@]}")
for s in "${sets[@]}"; do
  args_of "$s" >/dev/null || { echo "mutants.sh: unknown set $s (one of: ${ALL_SETS[*]})" >&2; exit 2; }
done

if ! cargo mutants --version 2>/dev/null | grep -q "cargo-mutants $CARGO_MUTANTS_VERSION\$"; then
  echo "mutants.sh: installing cargo-mutants $CARGO_MUTANTS_VERSION"
  cargo install --locked "cargo-mutants@$CARGO_MUTANTS_VERSION"
fi

summary=()
for s in "${sets[@]}"; do
  out=target/mutants/$s
  mkdir -p "$out"
  # Each argument is one word; "~" in a regex stands for a space.
  read -r -a args <<<"$(args_of "$s")"
  args=("${args[@]//\~/ }")
  cargo mutants -j 1 --timeout 120 --copy-target=true "${args[@]}" -o "$out" || true
  count() {
    local f=$out/mutants.out/$1.txt
    if [ -f "$f" ]; then grep -c . "$f" || true; else echo 0; fi
  }
  caught=$(count caught) missed=$(count missed) timeout=$(count timeout) unviable=$(count unviable)
  killed=$((caught + timeout))
  score=$(( (killed + missed) > 0 ? killed * 1000 / (killed + missed) : 0 ))
  summary+=("$(printf '%-13s caught %5d  timeout %4d  missed %4d  unviable %4d  score %d.%d %%' \
    "$s" "$caught" "$timeout" "$missed" "$unviable" $((score / 10)) $((score % 10)))")
done
printf '%s\n' "${summary[@]}"
