#!/usr/bin/env bash
# Measures a TAP uplink (issue 15): `twin gen` on a client port sends as fast as it
# can, for DURATION seconds, through `twin switch` and the uplink's driver domain
# into a TAP device in a network namespace this script creates; the kernel's own
# counter of the device says what arrived. Per run: Mpps and Gbit/s into the
# kernel, and the CPU time of the switch and of the domain (utime + stime from
# /proc, every thread) per million frames that arrived.
#
# usage: scripts/bench-tap.sh [RUNS [DURATION [SIZE...]]]   (defaults: 3, 3, 64 1500)
#
# Placement: the switch on CPU 0, the generator on CPU 1 (busy-polling both), the
# domain where the scheduler puts it (event-driven, as the switch's `--poll busy`
# makes it busy-poll too). Prints one line per run and the median of each size.
# Needs root and `ip` (iproute2). Not part of the test suite: a benchmark.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=lib/programs.sh
. "$repo/scripts/lib/programs.sh"
require_programs ip mktemp seq awk sed cat
runs=${1:-3}
duration=${2:-3}
shift $(($# > 2 ? 2 : $#))
sizes=("$@")
[ ${#sizes[@]} -gt 0 ] || sizes=(64 1500)
twin=${TWIN_BIN:-$repo/target/release/twin}
[ -x "$twin" ] || (cd "$repo" && cargo build --release -q -p twin-cli)

scratch=$(mktemp -d "${TMPDIR:-/tmp}/twin-bench-tap.XXXXXX")
ns=twbt-$$
dev=twbt$$
dev=${dev:0:15}
sw_pid=""
cleanup() {
  [ -n "$sw_pid" ] && kill -INT "$sw_pid" 2>/dev/null && wait "$sw_pid" 2>/dev/null || true
  ip netns del "$ns" 2>/dev/null || true
  rm -rf "$scratch"
}
trap cleanup EXIT

# cpu PID...: utime + stime of the processes (all threads), in seconds.
cpu() {
  local t=0 p
  for p in "$@"; do
    [ -r "/proc/$p/stat" ] || continue
    t=$((t + $(sed 's/.*) //' "/proc/$p/stat" | awk '{ print $12 + $13 }')))
  done
  awk -v t="$t" 'BEGIN { printf "%.3f", t / 100 }'
}
kstat() { ip netns exec "$ns" cat "/sys/class/net/$dev/statistics/$1"; }

ip netns add "$ns"
ip netns exec "$ns" "$twin" switch --client "c1=$scratch/c1.sock,mac=02:00:00:00:00:01" \
  --uplink "u0=tap:$dev" --control "$scratch/ctl.sock" --cpu 0 \
  >/dev/null 2>"$scratch/switch.log" &
sw_pid=$!
for _ in $(seq 100); do
  "$twin" ctl --control "$scratch/ctl.sock" status 2>/dev/null | grep -q '"connected":true' && break
  sleep 0.1
done
ip -n "$ns" link set "$dev" up
mac=$(ip netns exec "$ns" cat "/sys/class/net/$dev/address")
# The domain: the switch's child (the reaper) and its child (the worker).
children() { cat /proc/"$1"/task/*/children 2>/dev/null || true; }
dd_pids=$(children "$sw_pid")
dd_pids="$dd_pids $(for p in $dd_pids; do children "$p"; done)"

echo "per run: Mpps into the kernel, Gbit/s, CPU-s per Mpkt of the switch and of the domain"
for size in "${sizes[@]}"; do
  : >"$scratch/res.$size"
  for r in $(seq "$runs"); do
    k0=$(kstat rx_packets)
    s0=$(cpu "$sw_pid"); d0=$(cpu $dd_pids)
    "$twin" gen --socket "$scratch/c1.sock" --size "$size" --duration "$duration" \
      --src-mac 02:00:00:00:00:01 --dst-mac "$mac" --cpu 1 >/dev/null 2>&1
    k1=$(kstat rx_packets)
    s1=$(cpu "$sw_pid"); d1=$(cpu $dd_pids)
    n=$((k1 - k0))
    line=$(awk -v n="$n" -v d="$duration" -v size="$size" -v s="$(awk -v a="$s0" -v b="$s1" 'BEGIN{print b-a}')" \
      -v dd="$(awk -v a="$d0" -v b="$d1" 'BEGIN{print b-a}')" 'BEGIN {
        m = n / 1e6; printf "%.3f %.2f %.3f %.3f", m / d, m * size * 8 / 1000 / d, s / m, dd / m }')
    echo "$size run $r: $line" >&2
    echo "$line" >>"$scratch/res.$size"
  done
  # The median run by Mpps (an insertion sort in awk).
  awk -v s="$size" '{ v[NR] = $1; l[NR] = $0 } END {
    for (i = 2; i <= NR; i++) for (j = i; j > 1 && v[j-1] > v[j]; j--) {
      t = v[j]; v[j] = v[j-1]; v[j-1] = t; t = l[j]; l[j] = l[j-1]; l[j-1] = t }
    split(l[int((NR + 1) / 2)], m, " ");
    printf "%5d B  median of %d: %s Mpps, %s Gbit/s; CPU-s/Mpkt switch %s, domain %s\n", s, NR, m[1], m[2], m[3], m[4] }' "$scratch/res.$size"
done
