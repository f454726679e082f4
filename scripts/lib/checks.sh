# Sourced by the guest scripts (scripts/guest-e2e.sh, scripts/guest-kernel.sh): the
# summary of a run's checks.
#
#   summarize_checks RESULTS EXPECTED...
#
# RESULTS is a file with one line per reported check, "WHO:NAME PASS|FAIL DETAIL".
# Prints a line per check: the EXPECTED ones first, in order (one never reported,
# or reported more than once, fails: a part of the scenario did not run, or ran
# again), then every check reported but not expected (a failure anywhere counts).
# Sets check_pass and check_fail.
summarize_checks() {
  local results=$1 k line r d
  shift
  check_pass=0
  check_fail=0
  for k in "$@"; do
    line=$(grep "^$k " "$results" || true)
    if [ -z "$line" ]; then
      printf '  FAIL  %-20s missing (never reported)\n' "$k"
      check_fail=$((check_fail + 1))
    elif [ "$(wc -l <<<"$line")" -gt 1 ]; then
      printf '  FAIL  %-20s reported %s times: %s\n' "$k" "$(wc -l <<<"$line")" "$(tr '\n' '|' <<<"$line")"
      check_fail=$((check_fail + 1))
    else
      r=$(cut -d' ' -f2 <<<"$line")
      d=$(cut -d' ' -f3- <<<"$line")
      printf '  %-4s  %-20s %s\n' "$r" "$k" "$d"
      if [ "$r" = PASS ]; then check_pass=$((check_pass + 1)); else check_fail=$((check_fail + 1)); fi
    fi
  done
  while read -r k r d; do
    printf '%s\n' "$@" | grep -qx "$k" && continue
    printf '  %-4s  %-20s %s\n' "$r" "$k" "$d"
    if [ "$r" = PASS ]; then check_pass=$((check_pass + 1)); else check_fail=$((check_fail + 1)); fi
  done <"$results"
}
