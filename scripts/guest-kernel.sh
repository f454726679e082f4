#!/usr/bin/env bash
# End-to-end test of a kernel uplink with a real Linux guest: a QEMU (TCG)
# virtual machine on a `twin switch` client port reaches a host's kernel through
# the uplink, whose driver domain moves the frames.
#
# usage: scripts/guest-kernel.sh [KIND [MODE]]
#   KIND: tap (default), packet, xdp
#   MODE: domain (default); twin or inline where the kind has a twin (packet, xdp)
#
# In a network namespace it creates, it starts `twin switch` (client port a,
# uplink u0 in MODE) on
#
#   tap     `tap:DEV`: a TAP device, the host's address 10.0.0.254/24 on it
#   packet  `packet:DEV`: one end of a veth pair, the host's address on the other
#   xdp     `xdp:DEV` (queue 0, generic mode): the same veth pair
#
# runs an iperf3 server there, and boots one guest (10.0.0.1) with
# scripts/guest/checks.sh in role `tap`:
#
#   guest   link up, the host answers pings, iperf3 TCP to and from the host
#   fault   the host kills the uplink's driver domain (`twin ctl fault u0 kill`)
#           during a ping series: it restarts (with the same device, or a new
#           socket), the guest keeps its port, and the loss is bounded by how
#           long the domain was away (in twin mode the fast path runs in the
#           switch, but a new socket needs the new domain all the same)
#   host    the switch's report adds up with the kernel's own counters of DEV
#
# It exits 0 only when every expected check passed, and prints a summary. A missing
# peer (QEMU, the kernel, ip, iperf3...) is a failure, never a skip. Needs root.
#
# Environment: TWIN_BIN (default: built with cargo), TWIN_GUEST_DIR (guest cache,
# default target/guest), TWIN_GUEST_TIMEOUT (seconds, default 300), TWIN_GUEST_TIME
# (seconds per iperf3 run, default 5).
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
guest_dir=${TWIN_GUEST_DIR:-$repo/target/guest}
timeout_s=${TWIN_GUEST_TIMEOUT:-300}

kind=${1:-tap}
mode=${2:-domain}
case "$kind" in tap | packet | xdp) ;; *) echo "guest-kernel: unknown kind $kind (tap, packet, xdp)" >&2; exit 2 ;; esac
case "$kind/$mode" in */domain | xdp/twin | xdp/inline | packet/twin | packet/inline) ;; *) echo "guest-kernel: kind $kind has no mode $mode" >&2; exit 2 ;; esac
die() { echo "guest-kernel ($kind, $mode): FAIL: $*" >&2; exit 1; }

# shellcheck source=lib/programs.sh
. "$repo/scripts/lib/programs.sh"
# shellcheck source=lib/checks.sh
. "$repo/scripts/lib/checks.sh"
require_programs qemu-system-x86_64 ip iperf3 jq mktemp seq date grep sed awk wc tr ethtool sh
if [ -z "${TWIN_BIN:-}" ]; then
  (cd "$repo" && cargo build --release -q -p twin-cli) || die "cargo build of twin failed"
  TWIN_BIN=${CARGO_TARGET_DIR:-$repo/target}/release/twin
fi
[ -x "$TWIN_BIN" ] || die "twin binary $TWIN_BIN is missing"
"$repo/scripts/guest/build.sh" || die "cannot build the guest (kernel + initramfs)"

scratch=$(mktemp -d "${TMPDIR:-/tmp}/twin-guest-$kind-$mode.XXXXXX")
ns=twg-$$
dev=twg$$
dev=${dev:0:15}
pids=()
t_start=$SECONDS
log() { printf '[%4ds] %s\n' $((SECONDS - t_start)) "$*" >&2; }

cleanup() {
  local rc=$? pid i
  trap - EXIT INT TERM
  for ((i = ${#pids[@]} - 1; i >= 0; i--)); do kill -TERM "${pids[i]}" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do
    for i in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  ip netns del "$ns" 2>/dev/null || true
  rm -rf "$scratch"
  exit "$rc"
}
trap cleanup EXIT
trap 'log "interrupted"; exit 130' INT TERM

hcheck() { echo "TWIN-CHECK $1 $2 ${*:3}" >>"$scratch/host.log"; log "host check $1 $2 ${*:3}"; }
ctl() { "$TWIN_BIN" ctl --control "$scratch/ctl.sock" "$@" 2>>"$scratch/ctl.log"; }
status() { ctl status | jq -c 'select(.ok) | .result' 2>/dev/null || true; }
kstat() { ip netns exec "$ns" cat "/sys/class/net/$dev/statistics/$1"; }
# The kernel's view of the uplink's frames: what it received from the uplink
# (a TAP's rx: the domain writes into it; the veth end's tx: the socket sends
# out of it) and what it handed to the uplink.
to_kernel() { if [ "$kind" = tap ]; then kstat rx_packets; else kstat tx_packets; fi; }
from_kernel() { if [ "$kind" = tap ]; then kstat tx_packets; else kstat rx_packets; fi; }
# wait_line FILE PATTERN SECONDS: until FILE has a line matching PATTERN.
wait_line() {
  local end=$((SECONDS + $3))
  until grep -qE "$2" "$1" 2>/dev/null; do
    kill -0 "$guest_pid" 2>/dev/null || { grep -qE "$2" "$1" 2>/dev/null && return 0; log "the guest exited before '$2'"; return 1; }
    [ $SECONDS -lt $end ] || { log "no '$2' within $3 s"; return 1; }
    sleep 0.2
  done
}
# uplink_up [NOT_PID]: prints the domain's pid once u0 is connected with another
# domain than NOT_PID (within 20 s).
uplink_up() {
  local end=$((SECONDS + 20)) p
  while [ $SECONDS -lt $end ]; do
    p=$(status | jq -r 'if .uplinks.u0.detail.connected then .uplinks.u0.detail.driver.pid else empty end' 2>/dev/null || true)
    if [ -n "$p" ] && [ "$p" != "${1:-}" ]; then echo "$p"; return 0; fi
    sleep 0.05
  done
  return 1
}

log "twin=$TWIN_BIN guest=$(cat "$guest_dir/kernel-version" 2>/dev/null) scratch=$scratch ns=$ns dev=$dev"
ip netns add "$ns"
# No IPv6: the kernel then sends nothing of its own out of the uplink's
# interface, and its counters hold only the guest's traffic.
ip netns exec "$ns" sh -c 'echo 1 > /proc/sys/net/ipv6/conf/all/disable_ipv6;
  echo 1 > /proc/sys/net/ipv6/conf/default/disable_ipv6'
host_dev=$dev
if [ "$kind" != tap ]; then
  # The host's side of the wire: the other end of a veth pair. A veth hands
  # its local stack's segments over with the checksum still to be filled in
  # (checksum offload); a socket on the other end sees them so, and the guest
  # would drop them. Off, as every AF_PACKET or AF_XDP user of a veth does
  # (OVS's AF_XDP guide says the same); a real NIC's wire carries whole frames.
  host_dev=${dev:0:13}h
  ip -n "$ns" link add "$dev" type veth peer name "$host_dev"
  ip netns exec "$ns" ethtool -K "$host_dev" tx off >/dev/null
  ip -n "$ns" link set "$dev" up
fi
TWIN_LOG=info NO_COLOR=1 ip netns exec "$ns" "$TWIN_BIN" switch \
  --client "a=$scratch/a.sock,mac=52:54:00:00:00:0a" \
  --uplink "u0=$kind:$dev,mode=$mode" --control "$scratch/ctl.sock" --fault-injection --poll event \
  >"$scratch/switch.json" 2>"$scratch/switch.log" </dev/null &
switch_pid=$!
pids+=("$switch_pid")
if pid0=$(uplink_up); then
  hcheck switch-up PASS "uplink u0 = $kind:$dev in $mode mode, driver domain pid $pid0"
else
  hcheck switch-up FAIL "uplink u0 not up within 20 s: $(tail -3 "$scratch/switch.log" | tr '\n' ' ')"
fi
ip -n "$ns" addr add 10.0.0.254/24 dev "$host_dev"
ip -n "$ns" link set "$host_dev" up
ip -n "$ns" link set lo up
# The host's iperf3 server, for both runs (`ip netns exec` execs it: same pid).
ip netns exec "$ns" iperf3 -s >/dev/null 2>&1 </dev/null &
pids+=("$!")

: >"$scratch/a.console.log"
qemu-system-x86_64 -accel tcg -cpu max -smp 1 -m 256 \
  -nodefaults -no-user-config -display none -monitor none \
  -serial "file:$scratch/a.console.log" \
  -kernel "$guest_dir/vmlinuz" -initrd "$guest_dir/initrd.gz" \
  -append "console=ttyS0 panic=-1 quiet ipv6.disable=1 twin.role=tap twin.ip=10.0.0.1/24 twin.peer=10.0.0.254 twin.time=${TWIN_GUEST_TIME:-5} twin.fault=8" \
  -fw_cfg "name=opt/twin/checks,file=$repo/scripts/guest/checks.sh" \
  -object memory-backend-memfd,id=mem,size=256M,share=on -machine memory-backend=mem \
  -chardev "socket,id=chr0,path=$scratch/a.sock,reconnect=1" \
  -netdev vhost-user,id=net0,chardev=chr0 \
  -device "virtio-net-pci,netdev=net0,mac=52:54:00:00:00:0a,vectors=0" \
  >"$scratch/a.qemu.log" 2>&1 </dev/null &
guest_pid=$!
pids+=("$guest_pid")
A=$scratch/a.console.log

scenario() {
  wait_line "$A" '^TWIN-PHASE fault-window' "$timeout_s" || return 1
  sleep 2
  local out t0 ms pid1
  out=$(ctl fault u0 kill || true)
  t0=$(date +%s%N)
  if [ "$(jq -r .ok <<<"$out" 2>/dev/null)" = true ]; then
    hcheck fault-injected PASS "killed driver domain pid $pid0"
  else
    hcheck fault-injected FAIL "ctl: ${out:-no answer}"
  fi
  if pid1=$(uplink_up "$pid0"); then
    ms=$((($(date +%s%N) - t0) / 1000000))
    hcheck fault-recovered PASS "new driver domain pid $pid1 after $ms ms; outage $(status | jq -c '.uplinks.u0.detail.outages[-1]')"
  else
    hcheck fault-recovered FAIL "no new driver domain within 20 s"
    ms=20000
  fi
  wait_line "$A" '^TWIN-INFO fault-loss ' "$timeout_s" || return 1
  local line sent got max
  line=$(tr -d '\r' <"$A" | grep -m1 '^TWIN-INFO fault-loss ')
  sent=$(sed -n 's/.* sent=\([0-9]*\).*/\1/p' <<<"$line")
  got=$(sed -n 's/.* got=\([0-9]*\).*/\1/p' <<<"$line")
  # Echoes every 100 ms; lost are those that met the outage (back $ms ms after
  # the kill, an upper bound: this script polls) and one in flight at each end.
  max=$(((ms + 99) / 100 + 2))
  if [ -n "$sent" ] && [ -n "$got" ] && [ $((sent - got)) -le "$max" ] && [ "$got" -gt 0 ]; then
    hcheck fault-loss PASS "$((sent - got)) of $sent echoes lost; back $ms ms after the kill allows $max"
  else
    hcheck fault-loss FAIL "guest '${line:-nothing}', back after $ms ms allows $max"
  fi
  wait_line "$A" '^TWIN-PHASE finished' "$timeout_s" || return 1
  # The host's side: the kernel's counters of the device against the switch's.
  sleep 0.5
  local k_rx k_tx s lost v
  k_rx=$(to_kernel); k_tx=$(from_kernel)
  s=$(status)
  lost=$(jq '[.uplinks.u0.detail.outages[].frames_in_flight_lost] | add // 0' <<<"$s")
  v=$(jq -r --argjson krx "$k_rx" --argjson ktx "$k_tx" --argjson lost "$lost" '
    .uplinks.u0 as $u
    | ([$u.drops | to_entries[] | select(.key | startswith("domain_") or startswith("kernel_")) | .value] | add) as $dd
    # To the kernel: the kill loses at most what was in flight (an upper bound:
    # the dying domain may have written part of it). From the kernel: a frame
    # the killed domain had read but not yet published is lost uncounted, at
    # most one batch (64) per outage; for a socket kind, so is a frame that
    # arrived while no socket was bound (only answers to echoes sent before
    # the kill: fewer than a batch).
    | ($u.detail.outages | length) as $outages
    | if ($krx + $dd) <= $u.tx_packets and $u.tx_packets <= ($krx + $dd + $lost)
         and ($u.rx_packets + $dd) <= $ktx and $ktx <= ($u.rx_packets + $dd + 64 * $outages)
      then "ok: kernel rx \($krx) tx \($ktx), uplink tx \($u.tx_packets) rx \($u.rx_packets), domain drops \($dd), lost in the kill \($lost)"
      else "kernel rx \($krx) tx \($ktx), uplink tx \($u.tx_packets) rx \($u.rx_packets), domain drops \($dd) \([$u.drops | to_entries[] | select(.value > 0)] | from_entries), lost in the kill \($lost)" end' <<<"$s")
  case "$v" in
    ok:*) hcheck counters PASS "${v#ok: }" ;;
    *) hcheck counters FAIL "$v" ;;
  esac
  return 0
}

if [ -n "${pid0:-}" ]; then
  scenario || hcheck scenario FAIL "the scenario stopped early (see the guest console)"
  for i in $(seq 300); do kill -0 "$guest_pid" 2>/dev/null || break; sleep 0.2; done
fi

expected=(host:switch-up a:link a:peer-up a:ping a:iperf-to-host a:iperf-from-host
  host:fault-injected host:fault-recovered host:fault-loss a:fault-after host:counters)
results=$scratch/results
{
  tr -d '\r' <"$A" | sed -n 's/^TWIN-CHECK /a:/p'
  sed -n 's/^TWIN-CHECK /host:/p' "$scratch/host.log" 2>/dev/null
} >"$results"
{
  echo "guest-kernel ($kind, $mode) summary:"
  summarize_checks "$results" "${expected[@]}"
  echo "guest-kernel ($kind, $mode): $check_pass checks passed, $check_fail failed, $((SECONDS - t_start)) s"
} >"$scratch/summary.log"
fail=$check_fail
if [ $fail -gt 0 ]; then
  echo "--- last lines of the guest's console:"
  tr -d '\r' <"$A" | tail -15 | sed 's/^/    /'
  echo "--- switch warnings:"
  grep -E 'WARN|ERROR' "$scratch/switch.log" | tail -10 | sed 's/^/    /' || true
fi
cat "$scratch/summary.log"
[ $fail -eq 0 ]
