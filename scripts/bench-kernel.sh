#!/usr/bin/env bash
# Measures a kernel uplink (issue 15): `twin gen` on a client port sends as fast
# as it can, for DURATION seconds, through a forwarder into a kernel interface in a
# network namespace this script creates; the kernel's own counter says what
# arrived. KIND is what forwards and how it reaches the kernel:
#
#   tap             twin switch, a TAP uplink's driver domain, into the TAP device
#   packet          twin switch, an AF_PACKET uplink's driver domain, out of one end
#                   of a veth pair (counted as received on the other end)
#   xdp             twin switch, an AF_XDP uplink's driver domain (generic mode,
#                   queue 0), out of one end of a veth pair
#   xdp-twin        the same with the AF_XDP driver's twin in the switch (mode
#                   twin: every access checked by the SVM; the domain idles)
#   xdp-inline      the same with the driver inline in the switch (unchecked)
#   packet-twin     the AF_PACKET driver's twin in the switch (mode twin)
#   packet-inline   the AF_PACKET driver inline in the switch
#   testpmd-packet  DPDK testpmd `io` forwarding from `net_vhost` (the generator's
#                   port) to `net_af_packet` on the same veth: the same kernel
#                   interface reached by DPDK's own AF_PACKET driver, no switching
#   testpmd-xdp     the same with DPDK's `net_af_xdp`
#   kernel-bridge   the kernel's own forwarding: `trafgen` (netsniff-ng: an
#                   AF_PACKET transmit ring) sends out of a second veth pair whose
#                   far end is in a Linux bridge with the counted veth's near end;
#                   the bridge forwards (no vhost-user client, no switch, no domain)
#   trafgen-direct  `trafgen` straight out of the counted veth: what the generator
#                   and the veth cost alone, to subtract from kernel-bridge
#
# XDP_MODE=native runs the xdp kinds with the program attached in the veth's
# driver (`xdp-mode=native`) instead of generic mode. QUEUES=N gives the packet
# and xdp kinds' uplink N queues (`queues=N`: a socket, domain and fast path
# each) on a veth of N queues each way; the generator's one flow leaves by one
# of them, so this measures what the queues cost a flow, not what they spread.
#
# Per run: Mpps into the kernel, Gbit/s, and the CPU time (utime + stime from
# /proc, every thread) per million frames that arrived, of the forwarder (the
# switch or testpmd) and of the driver domain (none for testpmd). For the two
# kernel kinds the generator and the kernel's forwarding share CPU 1 and cannot
# be told apart per process: their "forwarder" figure is the busy time of both
# CPUs (/proc/stat) per million frames, generation included.
#
# usage: scripts/bench-kernel.sh KIND [RUNS [DURATION [SIZE...]]]
#        (defaults: 3 runs, 3 s, sizes 64 1500)
#
# Placement: the forwarder's data path on CPU 0, the generator on CPU 1
# (busy-polling both), the domain where the scheduler puts it (event-driven, as
# the switch's `--poll busy` makes it busy-poll too). Prints one line per run and
# the median of each size. Needs root, `ip` (iproute2) and, for the testpmd kinds,
# `dpdk-testpmd`. Not part of the test suite: a benchmark.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=lib/programs.sh
. "$repo/scripts/lib/programs.sh"
require_programs ip mktemp seq awk sed cat sleep mkfifo grep wc
kinds="tap|packet|packet-twin|packet-inline|xdp|xdp-twin|xdp-inline|testpmd-packet|testpmd-xdp|kernel-bridge|trafgen-direct"
kind=${1:?usage: scripts/bench-kernel.sh $kinds [RUNS [DURATION [SIZE...]]]}
shift
case "$kind" in
  tap | packet | packet-twin | packet-inline | xdp | xdp-twin | xdp-inline) ;;
  testpmd-packet | testpmd-xdp) require_programs dpdk-testpmd ;;
  kernel-bridge | trafgen-direct) require_programs trafgen timeout taskset ;;
  *) echo "bench-kernel.sh: unknown kind $kind ($kinds)" >&2; exit 2 ;;
esac
xdp_mode=${XDP_MODE:-generic}
case "$xdp_mode" in generic | native) ;; *) echo "bench-kernel.sh: XDP_MODE is generic or native" >&2; exit 2 ;; esac
queues=${QUEUES:-1}
case "$queues" in [1-9] | 1[0-6]) ;; *) echo "bench-kernel.sh: QUEUES is 1 to 16" >&2; exit 2 ;; esac
runs=${1:-3}
duration=${2:-3}
shift $(($# > 2 ? 2 : $#))
sizes=("$@")
[ ${#sizes[@]} -gt 0 ] || sizes=(64 1500)
twin=${TWIN_BIN:-$repo/target/release/twin}
[ -x "$twin" ] || (cd "$repo" && cargo build --release -q -p twin-cli)

scratch=$(mktemp -d "${TMPDIR:-/tmp}/twin-bench-kernel.XXXXXX")
ns=twbk-$$
dev=twbk$$
dev=${dev:0:13}
peer=${dev}p
fwd_pid=""
cleanup() {
  [ -n "$fwd_pid" ] && kill -INT "$fwd_pid" 2>/dev/null && wait "$fwd_pid" 2>/dev/null || true
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
children() { cat /proc/"$1"/task/*/children 2>/dev/null || true; }
# busy: the busy time of every CPU (all but idle and iowait), in seconds.
busy() {
  awk -v hz="$(getconf CLK_TCK)" '$1 == "cpu" { print ($2 + $3 + $4 + $7 + $8 + $9) / hz; exit }' /proc/stat
}

ip netns add "$ns"
ip netns exec "$ns" sh -c 'echo 1 > /proc/sys/net/ipv6/conf/all/disable_ipv6;
  echo 1 > /proc/sys/net/ipv6/conf/default/disable_ipv6'
if [ "$kind" = tap ]; then
  counted=$dev
elif [ "$kind" = kernel-bridge ]; then
  # trafgen -> gen -> genp (a bridge port) -> bridge -> dev -> peer (counted).
  ip -n "$ns" link add "${dev}g" type veth peer name "${dev}q"
  ip -n "$ns" link add "${dev}b" type bridge
  ip -n "$ns" link add "$dev" type veth peer name "$peer"
  ip -n "$ns" link set "${dev}q" master "${dev}b"
  ip -n "$ns" link set "$dev" master "${dev}b"
  for d in "${dev}g" "${dev}q" "${dev}b" "$dev" "$peer"; do ip -n "$ns" link set "$d" up; done
  counted=$peer
  out=${dev}g
else
  ip -n "$ns" link add "$dev" numtxqueues "$queues" numrxqueues "$queues" type veth \
    peer name "$peer" numtxqueues "$queues" numrxqueues "$queues"
  ip -n "$ns" link set "$dev" up
  ip -n "$ns" link set "$peer" up
  counted=$peer
fi
kstat() { ip netns exec "$ns" cat "/sys/class/net/$counted/statistics/$1"; }

sock=$scratch/c1.sock
case "$kind" in
  tap | packet | packet-twin | packet-inline | xdp | xdp-twin | xdp-inline)
    case "$kind" in
      packet-*) uplink="packet:$dev,mode=${kind#packet-}"; ready="\"fast_path\":\"${kind#packet-}\"" ;;
      xdp-*) uplink="xdp:$dev,xdp-mode=$xdp_mode,mode=${kind#xdp-}"; ready="\"fast_path\":\"${kind#xdp-}\"" ;;
      xdp) uplink="xdp:$dev,xdp-mode=$xdp_mode,mode=domain"; ready='"connected":true' ;;
      packet) uplink="packet:$dev,mode=domain"; ready='"connected":true' ;;
      *) uplink="$kind:$dev"; ready='"connected":true' ;;
    esac
    if [ "$queues" -gt 1 ]; then
      case "$kind" in
        packet* | xdp*) uplink="$uplink,queues=$queues" ;;
        *) echo "bench-kernel.sh: QUEUES is for the packet and xdp kinds" >&2; exit 2 ;;
      esac
    fi
    ip netns exec "$ns" "$twin" switch --client "c1=$sock,mac=02:00:00:00:00:01" \
      --uplink "u0=$uplink" --control "$scratch/ctl.sock" --cpu 0 --poll busy \
      >/dev/null 2>"$scratch/fwd.log" &
    fwd_pid=$!
    # Ready once every queue is (a queue's status says it once).
    for _ in $(seq 100); do
      up=$("$twin" ctl --control "$scratch/ctl.sock" status 2>/dev/null | grep -o "$ready" | wc -l) || up=0
      [ "$up" -ge "$queues" ] && break
      sleep 0.1
    done
    # The domain: the switch's child (the reaper) and its child (the worker).
    dd_pids=$(children "$fwd_pid")
    dd_pids="$dd_pids $(for p in $dd_pids; do children "$p"; done)"
    ;;
  testpmd-packet | testpmd-xdp)
    if [ "$kind" = testpmd-packet ]; then
      pmd="net_af_packet0,iface=$dev"
    else
      pmd="net_af_xdp0,iface=$dev,start_queue=0,queue_count=1"
    fi
    # Non-interactive testpmd forwards until a line arrives on its stdin: a fifo
    # this shell holds open (never a line, never end of file). `ip netns exec`
    # becomes testpmd, so $! is testpmd's PID.
    mkfifo "$scratch/stdin"
    exec 3<>"$scratch/stdin"
    ip netns exec "$ns" dpdk-testpmd -l 0,1 --main-lcore 1 --no-pci \
      --in-memory --single-file-segments -m 512 \
      --vdev "net_vhost0,iface=$sock,queues=1" --vdev "$pmd" \
      -- --forward-mode=io --auto-start --nb-cores=1 --total-num-mbufs=16384 \
      <&3 >"$scratch/fwd.log" 2>&1 &
    fwd_pid=$!
    for _ in $(seq 100); do [ -S "$sock" ] && break; sleep 0.1; done
    dd_pids=""
    ;;
  kernel-bridge | trafgen-direct)
    [ "$kind" = trafgen-direct ] && out=$dev
    dd_pids=""
    # The bridge learns nothing from the counted end (it sends nothing) and floods
    # to its one other port; a frame type no netfilter hook looks at.
    sleep 1
    ;;
esac
[ "$kind" = tap ] && ip -n "$ns" link set "$dev" up
mac=$(ip netns exec "$ns" cat "/sys/class/net/$counted/address")

label=$kind
case "$kind" in xdp | xdp-*) label="$kind ($xdp_mode)" ;; esac
[ "$queues" -gt 1 ] && label="$label, $queues queues"
echo "$label, per run: Mpps into the kernel, Gbit/s, CPU-s per Mpkt of the forwarder and of the domain"
for size in "${sizes[@]}"; do
  : >"$scratch/res.$size"
  for r in $(seq "$runs"); do
    k0=$(kstat rx_packets)
    case "$kind" in
      kernel-bridge | trafgen-direct)
        echo "{ eth(da=$mac, sa=02:00:00:00:00:01, type=0x88b5), fill(0x00, $((size - 14))) }" >"$scratch/trafgen.cfg"
        s0=$(busy); d0=0
        # One process on CPU 1, the transmit ring past the qdisc (trafgen's
        # default), the machine's socket memory settings left alone.
        ip netns exec "$ns" timeout -s INT "$duration" taskset -c 1 trafgen -o "$out" \
          -i "$scratch/trafgen.cfg" -P 1 --no-sock-mem >/dev/null 2>&1 || true
        k1=$(kstat rx_packets)
        s1=$(busy); d1=0
        ;;
      *)
        s0=$(cpu "$fwd_pid"); d0=$(cpu $dd_pids)
        "$twin" gen --socket "$sock" --size "$size" --duration "$duration" \
          --src-mac 02:00:00:00:00:01 --dst-mac "$mac" --cpu 1 --poll busy >/dev/null 2>&1
        k1=$(kstat rx_packets)
        s1=$(cpu "$fwd_pid"); d1=$(cpu $dd_pids)
        ;;
    esac
    n=$((k1 - k0))
    line=$(awk -v n="$n" -v d="$duration" -v size="$size" -v s="$(awk -v a="$s0" -v b="$s1" 'BEGIN{print b-a}')" \
      -v dd="$(awk -v a="$d0" -v b="$d1" 'BEGIN{print b-a}')" 'BEGIN {
        m = n / 1e6; if (m == 0) m = 1e-9
        printf "%.3f %.2f %.3f %.3f", m / d, m * size * 8 / 1000 / d, s / m, dd / m }')
    echo "$size run $r: $line" >&2
    echo "$line" >>"$scratch/res.$size"
  done
  # The median run by Mpps (an insertion sort in awk).
  awk -v s="$size" -v k="$label" '{ v[NR] = $1; l[NR] = $0 } END {
    for (i = 2; i <= NR; i++) for (j = i; j > 1 && v[j-1] > v[j]; j--) {
      t = v[j]; v[j] = v[j-1]; v[j-1] = t; t = l[j]; l[j] = l[j-1]; l[j-1] = t }
    split(l[int((NR + 1) / 2)], m, " ");
    printf "%s %5d B  median of %d: %s Mpps, %s Gbit/s; CPU-s/Mpkt forwarder %s, domain %s\n", k, s, NR, m[1], m[2], m[3], m[4] }' "$scratch/res.$size"
done
