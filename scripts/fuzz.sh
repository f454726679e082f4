#!/usr/bin/env bash
# Fuzzes everything an attacker controls (docs/security.md, "Fuzzing"): the fuzz
# targets of fuzz/ (cargo-fuzz, libFuzzer, `--sanitizer none`: stable Rust).
#
#   scripts/fuzz.sh [--smoke|--full] [TARGET...]
#
#   --smoke  (default) each target for FUZZ_SECONDS (60) seconds: CI
#   --full   each target for FUZZ_RUNS (10 000 000) executions
#
# With no TARGET, every target. Each run starts from the committed seeds
# (fuzz/seeds/TARGET, read-only) and the local working corpus (fuzz/corpus/TARGET,
# not committed, grows across runs). A crash (panic or failed check) or a hang
# (an input running longer than FUZZ_TIMEOUT, 10 s) stops that target's run and
# leaves the input in fuzz/artifacts/TARGET/; reproduce it with
#   cd fuzz && cargo fuzz run --sanitizer none -a TARGET artifacts/TARGET/crash-...
# Prints per target: executions, exec/s, crashes and hangs; exits non-zero if any
# target crashed, hung or did not run. Installs cargo-fuzz (pinned below) if it is
# missing. libFuzzer's runtime is C++ and is compiled by g++ (scripts/host-programs).
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=lib/programs.sh
. scripts/lib/programs.sh
require_programs g++ grep sed awk find mktemp date

CARGO_FUZZ_VERSION=0.13.2
ALL_TARGETS=(vhost_user_messages device_rings exchange_rings driver_used_ring svm_access packet_rings)

mode=smoke
targets=()
for a in "$@"; do
  case "$a" in
    --smoke) mode=smoke ;;
    --full) mode=full ;;
    -h | --help)
      sed -n '2,19p' "$0" | sed 's/^# \{0,1\}//'
      exit 0
      ;;
    -*) echo "fuzz.sh: unknown option $a" >&2; exit 2 ;;
    *)
      ok=0
      for t in "${ALL_TARGETS[@]}"; do [ "$t" = "$a" ] && ok=1; done
      [ $ok = 1 ] || { echo "fuzz.sh: unknown target $a (one of: ${ALL_TARGETS[*]})" >&2; exit 2; }
      targets+=("$a")
      ;;
  esac
done
[ ${#targets[@]} -gt 0 ] || targets=("${ALL_TARGETS[@]}")

if ! cargo fuzz --version 2>/dev/null | grep -q "cargo-fuzz $CARGO_FUZZ_VERSION\$"; then
  echo "fuzz.sh: installing cargo-fuzz $CARGO_FUZZ_VERSION"
  cargo install --locked "cargo-fuzz@$CARGO_FUZZ_VERSION"
fi
# libFuzzer (libfuzzer-sys) is built by the cc crate: make it use the declared g++.
export CXX=g++

case "$mode" in
  smoke) limit=(-max_total_time="${FUZZ_SECONDS:-60}") ;;
  full) limit=(-runs="${FUZZ_RUNS:-10000000}") ;;
esac
timeout_s=${FUZZ_TIMEOUT:-10}

cd fuzz
mkdir -p logs
failed=()
printf '%-20s %12s %8s %8s %6s  %s\n' target executions exec/s crashes hangs result
for t in "${targets[@]}"; do
  mkdir -p "corpus/$t" "artifacts/$t"
  # Debug assertions and overflow checks on (-a): an overflow on hostile input is
  # a finding too.
  if ! cargo fuzz build --sanitizer none -a "$t" >"logs/$t.build.log" 2>&1; then
    echo "fuzz.sh: FAIL: cannot build $t (fuzz/logs/$t.build.log)" >&2
    tail -20 "logs/$t.build.log" >&2
    failed+=("$t")
    continue
  fi
  stamp=$(mktemp)
  rc=0
  cargo fuzz run --sanitizer none -a "$t" "corpus/$t" "seeds/$t" -- \
    "${limit[@]}" -timeout="$timeout_s" -rss_limit_mb=2048 -print_final_stats=1 \
    >"logs/$t.log" 2>&1 || rc=$?
  execs=$(awk '/^stat::number_of_executed_units:/ { print $2 }' "logs/$t.log" | tail -1)
  rate=$(awk '/^stat::average_exec_per_sec:/ { print $2 }' "logs/$t.log" | tail -1)
  crashes=$(find "artifacts/$t" -newer "$stamp" -type f \( -name 'crash-*' -o -name 'oom-*' -o -name 'leak-*' \) | wc -l)
  hangs=$(find "artifacts/$t" -newer "$stamp" -type f -name 'timeout-*' | wc -l)
  rm -f "$stamp"
  result=ok
  if [ "$rc" != 0 ] || [ "$crashes" != 0 ] || [ "$hangs" != 0 ] || [ -z "$execs" ]; then
    result="FAIL (exit $rc, fuzz/logs/$t.log)"
    failed+=("$t")
  fi
  printf '%-20s %12s %8s %8s %6s  %s\n' "$t" "${execs:-?}" "${rate:-?}" "$crashes" "$hangs" "$result"
done
if [ ${#failed[@]} -gt 0 ]; then
  echo "fuzz.sh: FAIL: ${failed[*]}" >&2
  exit 1
fi
echo "fuzz.sh: ok ($mode, ${#targets[@]} targets, no crash, no hang)"
