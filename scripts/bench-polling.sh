#!/usr/bin/env bash
# Measures the poll modes (issue 16): what each costs when idle and what each
# delivers under load, with every process in the same mode and none pinned, as a
# newcomer runs the README's commands on a 2-core machine.
#
# Per mode (busy, event, adaptive) and run, in a scratch directory:
#   * `twin nic --mode reflect`, `twin switch` with clients c1 (MAC pinned) and c2
#     and uplink u0 to the NIC in the default mode (twin), and an idle
#     `twin gen --rate 0` on c2: four processes (five with the driver domain);
#   * idle: the CPU share of one core (utime + stime from /proc, every thread)
#     each of switch, driver domain, NIC and idle generator used over DURATION;
#   * full rate: `twin gen` on c1 sends 64 B frames as fast as it can for
#     DURATION to an address behind the uplink; the NIC reflects them back to c1:
#     Mpps sent, and the share of the frames sent that came back (the rest are
#     counted by the switch and the NIC under their drop reasons);
#   * fixed rate: the same at RATE frames a second (the README's 100 000): the
#     share that came back. This is the three-busy-processes-on-two-cores case
#     of issue 16 (48 % to 92 % delivered under the old busy default).
# Prints one line per run and the medians of each mode.
#
# usage: scripts/bench-polling.sh [RUNS [DURATION [RATE]]]   (defaults: 5, 3, 100000)
#        MODES="busy adaptive" scripts/bench-polling.sh ...   (default: busy event adaptive)
#
# Not part of the test suite: a benchmark (`bench_polling.rs` runs it once,
# briefly, and asserts no number). Needs `jq`.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=lib/programs.sh
. "$repo/scripts/lib/programs.sh"
require_programs jq mktemp awk sed cat sleep sort seq date getconf grep
runs=${1:-5}
duration=${2:-3}
rate=${3:-100000}
modes=${MODES:-busy event adaptive}
twin=${TWIN_BIN:-$repo/target/release/twin}
[ -x "$twin" ] || (cd "$repo" && cargo build --release -q -p twin-cli)

scratch=$(mktemp -d "${TMPDIR:-/tmp}/twin-bench-polling.XXXXXX")
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill -INT "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$scratch"
}
trap cleanup EXIT

# cpu PID: utime + stime of PID in ticks (0 once it is gone).
cpu() { awk '{ sub(/.*\) /, ""); print $12 + $13 }' "/proc/$1/stat" 2>/dev/null || echo 0; }
hz=$(getconf CLK_TCK)
# The switch's report (the control reply's result), or nothing.
status() { "$twin" ctl --control "$scratch/ctl.sock" status 2>/dev/null | jq -c 'select(.ok) | .result' 2>/dev/null || true; }
# wait_for CMD...: until CMD succeeds, at most 20 s.
wait_for() {
  for _ in $(seq 200); do "$@" && return 0; sleep 0.1; done
  echo "bench-polling: timed out waiting for: $*" >&2
  exit 1
}
twin_up() { [ "$(status | jq -r '.uplinks.u0.detail.driver.fast_path // empty')" = twin ]; }
c2_up() { [ "$(status | jq -r '.clients.c2.connects')" = 1 ]; }

# gen_run ARGS...: one generator run on c1 to the NIC's side; prints its report.
gen_run() {
  "$twin" gen --socket "$scratch/c1.sock" --size 64 --duration "$duration" \
    --src-mac 02:00:00:00:00:01 --dst-mac 02:00:00:00:00:fe --poll "$mode" "$@" 2>/dev/null
}

results=$scratch/results
for mode in $modes; do
  for run in $(seq "$runs"); do
    rm -f "$scratch"/*.sock
    "$twin" nic --socket "$scratch/nic.sock" --mode reflect --poll "$mode" \
      >"$scratch/nic.json" 2>/dev/null &
    nic=$!
    "$twin" switch --client "c1=$scratch/c1.sock,mac=02:00:00:00:00:01" \
      --client "c2=$scratch/c2.sock" --uplink "u0=$scratch/nic.sock" \
      --control "$scratch/ctl.sock" --poll "$mode" >"$scratch/switch.json" 2>/dev/null &
    sw=$!
    pids=("$nic" "$sw")
    wait_for twin_up
    "$twin" gen --socket "$scratch/c2.sock" --size 64 --rate 0 --duration 3600 \
      --src-mac 02:00:00:00:00:02 --poll "$mode" >/dev/null 2>&1 &
    idle_gen=$!
    pids+=("$idle_gen")
    wait_for c2_up
    dd=$(status | jq -r '.uplinks.u0.detail.driver.pid')
    sleep 0.5
    # Idle.
    a=("$(cpu "$sw")" "$(cpu "$dd")" "$(cpu "$nic")" "$(cpu "$idle_gen")")
    t0=$(date +%s.%N)
    sleep "$duration"
    b=("$(cpu "$sw")" "$(cpu "$dd")" "$(cpu "$nic")" "$(cpu "$idle_gen")")
    t1=$(date +%s.%N)
    share() { awk -v a="$1" -v b="$2" -v t0="$t0" -v t1="$t1" -v hz="$hz" \
      'BEGIN { printf "%.1f", 100 * (b - a) / hz / (t1 - t0) }'; }
    idle_sw=$(share "${a[0]}" "${b[0]}"); idle_dd=$(share "${a[1]}" "${b[1]}")
    idle_nic=$(share "${a[2]}" "${b[2]}"); idle_gen_cpu=$(share "${a[3]}" "${b[3]}")
    # Full rate, then the fixed rate.
    full=$(gen_run)
    fixed=$(gen_run --rate "$rate")
    kill -INT "$idle_gen" "$sw" "$nic" 2>/dev/null || true
    wait "$idle_gen" "$sw" "$nic" 2>/dev/null || true
    pids=()
    back() { jq -r 'if .tx_packets > 0 then 100 * .rx_packets / .tx_packets else 0 end | . * 10 | round / 10' <<<"$1"; }
    full_mpps=$(jq -r '.mpps * 1000 | round / 1000' <<<"$full")
    line="idle CPU % switch $idle_sw domain $idle_dd nic $idle_nic gen $idle_gen_cpu;"
    line+=" full rate $full_mpps Mpps, back $(back "$full") %; $rate pps back $(back "$fixed") %"
    printf '%-8s run %d: %s\n' "$mode" "$run" "$line"
    echo "$mode $idle_sw $idle_dd $idle_nic $idle_gen_cpu $full_mpps $(back "$full") $(back "$fixed")" >>"$results"
  done
done

# The median of each column per mode.
echo
for mode in $modes; do
  med() {
    grep "^$mode " "$results" | awk -v c="$1" '{ print $c }' | sort -g \
      | awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
  }
  printf '%-8s median of %d: idle CPU %% switch %s domain %s nic %s gen %s; full rate %s Mpps, back %s %%; %s pps back %s %%\n' \
    "$mode" "$runs" "$(med 2)" "$(med 3)" "$(med 4)" "$(med 5)" "$(med 6)" "$(med 7)" "$rate" "$(med 8)"
done
