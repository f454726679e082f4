#!/usr/bin/env bash
# End-to-end tests with real Linux guests: QEMU (TCG) virtual machines attached to
# `twin switch` client ports over vhost-user, with the built-in reflecting NIC behind
# an uplink.
#
# usage: scripts/guest-e2e.sh [inline|domain|twin ...]     (default: all three)
#
# For each mode it starts, in a scratch directory, `twin nic --mode reflect`, `twin
# switch` with two client ports (a, b) and one uplink (u0) in that mode, and two
# guests. The guests run scripts/guest/checks.sh (passed through fw_cfg, configured
# by `twin.*` words of the kernel command line) and report on their serial consoles;
# this script acts on their phases and checks the switch from outside:
#
#   guests   link up, ping both ways, iperf3 TCP both ways (a <-> b through the
#            switch), frames reflected by the NIC behind the uplink
#   fault    the uplink's driver domain is killed (`twin ctl fault u0 kill`) during
#            traffic: it restarts, the guests keep their links and ports, and the
#            reflected traffic resumes
#   reboot   b reboots (device reset on the same connection) and answers again
#   reconnect b's QEMU powers off and a new one takes the same port
#   restart  the switch is restarted; QEMU reconnects (reconnect=1) and traffic
#            flows again
#
# It exits 0 only when every expected check passed, and prints a summary. A missing
# peer (QEMU, the kernel, busybox...) is a failure, never a skip.
#
# Environment:
#   TWIN_BIN            the twin binary (default: built with cargo, target/release/twin)
#   TWIN_GUEST_DIR      guest cache: kernel package, vmlinuz, initrd (default target/guest)
#   TWIN_GUEST_NIC      reflect (default: `twin nic --mode reflect`) or dpdk
#                       (DPDK testpmd net_vhost in macswap mode; busy-polls a core)
#   TWIN_GUEST_TIMEOUT  seconds allowed per mode (default 480)
#   TWIN_GUEST_LOGS     copy every log of the run into this directory
#   TWIN_GUEST_TIME     seconds per iperf3 run (default 5)
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
guest_dir=${TWIN_GUEST_DIR:-$repo/target/guest}
nic_kind=${TWIN_GUEST_NIC:-reflect}
mode_timeout=${TWIN_GUEST_TIMEOUT:-480}

die() { echo "guest-e2e: FAIL: $*" >&2; exit 1; }

# ---------------------------------------------------------------- arguments
if [ $# -eq 0 ]; then set -- inline domain twin; fi
for m in "$@"; do
  case "$m" in
    inline | domain | twin) ;;
    -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown mode '$m' (usage: $0 [inline|domain|twin ...])" ;;
  esac
done
case "$nic_kind" in reflect | dpdk) ;; *) die "TWIN_GUEST_NIC must be reflect or dpdk, not '$nic_kind'" ;; esac

# ---------------------------------------------------------------- peers
# shellcheck source=lib/programs.sh
. "$repo/scripts/lib/programs.sh"
# shellcheck source=lib/checks.sh
. "$repo/scripts/lib/checks.sh"
require_programs qemu-system-x86_64 jq busybox cpio depmod iperf3 mktemp seq date grep sed awk wc tr
[ "$nic_kind" = dpdk ] && require_programs dpdk-testpmd

if [ -z "${TWIN_BIN:-}" ]; then
  command -v cargo >/dev/null || die "no TWIN_BIN and no cargo to build twin"
  (cd "$repo" && cargo build --release -q -p twin-cli) || die "cargo build of twin failed"
  TWIN_BIN=${CARGO_TARGET_DIR:-$repo/target}/release/twin
fi
[ -x "$TWIN_BIN" ] || die "twin binary $TWIN_BIN is missing"
export TWIN_BIN

"$repo/scripts/guest/build.sh" || die "cannot build the guest (kernel + initramfs)"
if [ ! -f "$guest_dir/vmlinuz" ] || [ ! -f "$guest_dir/initrd.gz" ]; then die "no guest in $guest_dir"; fi

# Several modes: one run of this script per mode, one after the other.
if [ $# -gt 1 ]; then
  rc=0
  for m in "$@"; do "$0" "$m" || rc=1; done
  exit $rc
fi
mode=$1

# ---------------------------------------------------------------- one mode
scratch=$(mktemp -d "${TMPDIR:-/tmp}/twin-guest-$mode.XXXXXX")
pids=()          # every process this script started
t_start=$SECONDS

log() { printf '[%4ds] %s\n' $((SECONDS - t_start)) "$*" >&2; }

cleanup() {
  local rc=$? pid i
  trap - EXIT INT TERM
  # Newest first: the guests, then the switch, then the NIC.
  for ((i = ${#pids[@]} - 1; i >= 0; i--)); do kill -TERM "${pids[i]}" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do
    for i in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  if [ "$nic_kind" = dpdk ]; then
    # What testpmd leaves behind when it is not stopped by SIGINT.
    rm -f /dev/hugepages/"twg$$"* 2>/dev/null || true
    rm -rf "/var/run/dpdk/twg$$" 2>/dev/null || true
  fi
  if [ -n "${TWIN_GUEST_LOGS:-}" ]; then
    mkdir -p "$TWIN_GUEST_LOGS/$mode"
    cp "$scratch"/*.log "$scratch"/*.json "$TWIN_GUEST_LOGS/$mode/" 2>/dev/null || true
  fi
  rm -rf "$scratch"
  exit "$rc"
}
trap cleanup EXIT
trap 'log "interrupted"; exit 130' INT TERM

# hcheck NAME PASS|FAIL DETAIL: a check made from the host.
hcheck() {
  echo "TWIN-CHECK $1 $2 ${*:3}" >>"$scratch/host.log"
  log "host check $1 $2 ${*:3}"
}

deadline=$((SECONDS + mode_timeout))
left() { local l=$((deadline - SECONDS)); [ $l -gt 0 ] && echo $l || echo 0; }
alive() { kill -0 "$1" 2>/dev/null; }

# wait_line FILE PATTERN SECONDS PID: until FILE has a line matching PATTERN (grep
# -E); fails when PID exits first or time runs out.
wait_line() {
  local file=$1 pat=$2 end=$((SECONDS + $3)) pid=$4
  while :; do
    grep -qE "$pat" "$file" 2>/dev/null && return 0
    alive "$pid" || { grep -qE "$pat" "$file" 2>/dev/null && return 0; log "gave up waiting for '$pat' in $(basename "$file"): its process exited"; return 1; }
    [ $SECONDS -lt $end ] || { log "gave up waiting for '$pat' in $(basename "$file") after $3 s"; return 1; }
    sleep 0.2
  done
}

# wait_exit PID SECONDS: until PID (our child) exits; its status goes to exit_rc.
exit_rc=""
wait_exit() {
  local end=$((SECONDS + $2))
  while alive "$1"; do
    [ $SECONDS -lt $end ] || return 1
    sleep 0.2
  done
  wait "$1" 2>/dev/null && exit_rc=0 || exit_rc=$?
  return 0
}

# twin ctl prints the switch's JSON response ({"ok":true,"result":...} or
# {"ok":false,"error":{...}}); status prints the report (the result) or nothing.
ctl() { "$TWIN_BIN" ctl --control "$scratch/ctl.sock" "$@" 2>>"$scratch/ctl.log"; }
status() { ctl status | jq -c 'select(.ok) | .result' 2>/dev/null || true; }

# -------------------------------------------- the NIC behind the uplink
nic_sock=$scratch/nic.sock
start_nic() {
  if [ "$nic_kind" = reflect ]; then
    "$TWIN_BIN" nic --socket "$nic_sock" --mode reflect --poll event \
      >"$scratch/nic.json" 2>"$scratch/nic.log" </dev/null &
  else
    # DPDK's vhost PMD as the NIC, reflecting with the MACs swapped. It busy-polls
    # lcore 1; the main lcore 0 stays mostly idle.
    grep -q hugetlbfs /proc/mounts || die "hugetlbfs is not mounted: run scripts/setup-host.sh"
    # testpmd exits at the end of its input: hold it open with a FIFO.
    mkfifo "$scratch/nic.in"
    exec 7<>"$scratch/nic.in"
    dpdk-testpmd -l 0,1 --main-lcore 0 --no-pci --single-file-segments \
      --file-prefix "twg$$" -m 512 --vdev "net_vhost0,iface=$nic_sock,queues=1" -- \
      --forward-mode=macswap --port-topology=loop --auto-start --disable-link-check --nb-cores=1 \
      --total-num-mbufs=16384 >"$scratch/nic.log" 2>&1 <&7 &
  fi
  nic_pid=$!
  pids+=("$nic_pid")
}

# -------------------------------------------- the switch
switch_n=0
start_switch() {
  switch_n=$((switch_n + 1))
  rm -f "$scratch/ctl.sock"
  TWIN_LOG=info NO_COLOR=1 "$TWIN_BIN" switch \
    --client "a=$scratch/a.sock,mac=52:54:00:00:00:0a" \
    --client "b=$scratch/b.sock,mac=52:54:00:00:00:0b" \
    --uplink "u0=$nic_sock,mode=$mode" \
    --control "$scratch/ctl.sock" --fault-injection --poll event \
    >"$scratch/switch$switch_n.json" 2>"$scratch/switch$switch_n.log" </dev/null &
  switch_pid=$!
  pids+=("$switch_pid")
}

# wait_uplink SECONDS: until the uplink is connected, its fast path in $mode.
wait_uplink() {
  local end=$((SECONDS + $1)) s
  while [ $SECONDS -lt $end ]; do
    s=$(status)
    if [ -n "$s" ] && [ "$(jq -r '.uplinks.u0.detail.connected' <<<"$s")" = true ] \
      && [ "$(jq -r '.uplinks.u0.detail.driver.fast_path // empty' <<<"$s")" = "$mode" ]; then
      echo "$s"
      return 0
    fi
    sleep 0.1
  done
  return 1
}

# -------------------------------------------- guests
guest_args=""
if [ "$nic_kind" = dpdk ]; then
  # testpmd busy-polls one of the two cores: with two TCG guests on the other, a
  # new driver domain can take seconds to start: a longer fault window.
  guest_args="twin.fault=24"
fi
# start_guest NAME PORT MAC ROLE IP PEER: boots a TCG guest on client port PORT; its
# QEMU's pid goes to NAME_pid.
a_pid="" b_pid="" b2_pid=""
start_guest() {
  local name=$1 port=$2 mac=$3 role=$4 ip=$5 peer=$6
  : >"$scratch/$name.console.log"
  # vhost-user needs the guest's RAM in a shareable memfd. vectors=0: QEMU 7.2 with
  # TCG and vhost-user crashes once the guest enables MSI-X (KVM-only irqfd path),
  # so the device uses INTx. reconnect=1: QEMU reconnects when the switch restarts.
  qemu-system-x86_64 -accel tcg -cpu max -smp 1 -m 256 \
    -nodefaults -no-user-config -display none -monitor none \
    -serial "file:$scratch/$name.console.log" \
    -kernel "$guest_dir/vmlinuz" -initrd "$guest_dir/initrd.gz" \
    -append "console=ttyS0 panic=-1 quiet ipv6.disable=1 twin.role=$role twin.ip=$ip/24 twin.peer=$peer twin.time=${TWIN_GUEST_TIME:-5} $guest_args" \
    -fw_cfg "name=opt/twin/checks,file=$repo/scripts/guest/checks.sh" \
    -object memory-backend-memfd,id=mem,size=256M,share=on -machine memory-backend=mem \
    -chardev "socket,id=chr0,path=$scratch/$port.sock,reconnect=1" \
    -netdev vhost-user,id=net0,chardev=chr0 \
    -device "virtio-net-pci,netdev=net0,mac=$mac,vectors=0" \
    >"$scratch/$name.qemu.log" 2>&1 </dev/null &
  pids+=("$!")
  printf -v "${name}_pid" '%s' "$!"
}

# features_check NAME: the virtio-net features the guest's driver negotiated (the
# sysfs string has one character per bit, bit 0 first).
features_check() {
  local name=$1 f names="" bit lacking="" unexpected=""
  f=$(tr -d '\r' <"$scratch/$name.console.log" | sed -n 's/^TWIN-INFO features=\([01]*\).*/\1/p' | head -1)
  if [ -z "$f" ]; then hcheck "features-$name" FAIL "the guest printed no features"; return; fi
  declare -A bitname=([0]=CSUM [1]=GUEST_CSUM [2]=CTRL_GUEST_OFFLOADS [3]=MTU [5]=MAC
    [6]=GSO [7]=GUEST_TSO4 [8]=GUEST_TSO6 [9]=GUEST_ECN [10]=GUEST_UFO [11]=HOST_TSO4
    [12]=HOST_TSO6 [13]=HOST_ECN [14]=HOST_UFO [15]=MRG_RXBUF [16]=STATUS [17]=CTRL_VQ
    [18]=CTRL_RX [19]=CTRL_VLAN [20]=CTRL_RX_EXTRA [21]=GUEST_ANNOUNCE [22]=MQ
    [23]=CTRL_MAC_ADDR [24]=NOTIFY_ON_EMPTY [27]=ANY_LAYOUT [28]=INDIRECT_DESC
    [29]=EVENT_IDX [32]=VERSION_1 [33]=ACCESS_PLATFORM [34]=RING_PACKED [35]=IN_ORDER
    [36]=ORDER_PLATFORM [37]=SR_IOV [38]=NOTIFICATION_DATA [40]=RING_RESET)
  for ((bit = 0; bit < ${#f}; bit++)); do
    [ "${f:bit:1}" = 1 ] && names+="${bitname[$bit]:-bit$bit} "
  done
  # The switch offers VERSION_1, MRG_RXBUF and EVENT_IDX (MAC and STATUS are QEMU's
  # own), and no offloads, multiqueue, indirect descriptors or packed rings.
  for bit in 32 15 29 5 16; do [ "${f:bit:1}" = 1 ] || lacking+="${bitname[$bit]} "; done
  for bit in 0 1 6 7 8 10 11 12 14 22 28 34; do [ "${f:bit:1}" = 1 ] && unexpected+="${bitname[$bit]} "; done
  if [ -z "$lacking$unexpected" ]; then
    hcheck "features-$name" PASS "$names"
  else
    hcheck "features-$name" FAIL "missing: ${lacking:-none}; unexpected: ${unexpected:-none}; all: $names"
  fi
}

# ---------------------------------------------------------------- the run
log "mode $mode: twin=$TWIN_BIN nic=$nic_kind guest=$(cat "$guest_dir/kernel-version" 2>/dev/null) scratch=$scratch"
start_nic
start_switch
switch_up=0
if s=$(wait_uplink 30); then
  switch_up=1
  hcheck switch-up PASS "uplink u0 connected, fast path $(jq -r .uplinks.u0.detail.driver.fast_path <<<"$s"), driver domain pid $(jq -r .uplinks.u0.detail.driver.pid <<<"$s")"
else
  hcheck switch-up FAIL "uplink u0 not connected in mode $mode within 30 s: $(status | head -c 600)"
fi
A=$scratch/a.console.log

run_scenario() {
  local s0 s1 n0 pid0 pid1 out t0 ms a0 b0 cause rep rc

  # -- a driver-domain crash during traffic
  wait_line "$A" '^TWIN-PHASE fault-window' "$(left)" "$a_pid" || return 1
  log "guest a: fault window open"
  features_check a
  features_check b
  sleep 3
  s0=$(status)
  pid0=$(jq -r '.uplinks.u0.detail.driver.pid' <<<"$s0")
  n0=$(jq '.uplinks.u0.detail.outages | length' <<<"$s0")
  out=$(ctl fault u0 kill || true)
  t0=$(date +%s%N)
  if [ -z "$pid0" ] || [ "$pid0" = null ]; then
    hcheck fault-injected FAIL "no driver domain to kill: $(head -c 300 <<<"$s0")"
  elif [ "$(jq -r .ok <<<"$out" 2>/dev/null)" != true ]; then
    hcheck fault-injected FAIL "the switch did not kill driver domain pid $pid0 (ctl: ${out:-no answer})"
  else
    hcheck fault-injected PASS "killed driver domain pid $pid0 (ctl: $out)"
  fi
  s1=""
  while [ $(($(date +%s%N) - t0)) -lt 20000000000 ]; do
    s1=$(status)
    # One jq per poll: the poll's period bounds the window the loss check allows.
    pid1=$(jq -r --argjson n0 "$n0" --arg pid0 "$pid0" --arg mode "$mode" '
      .uplinks.u0.detail as $u
      | if ($u.outages | length) > $n0 and $u.connected == true
          and $u.driver.pid != null and ($u.driver.pid | tostring) != $pid0
          and $u.driver.fast_path == $mode
        then $u.driver.pid else "" end' <<<"$s1" 2>/dev/null || true)
    [ -n "$pid1" ] && break
    s1=""
    sleep 0.02
  done
  ms=$((($(date +%s%N) - t0) / 1000000))
  outage_ms=""
  if [ -n "$s1" ]; then
    cause=$(jq -c '.uplinks.u0.detail.outages[-1]' <<<"$s1")
    outage_ms=$(jq -r '.uplinks.u0.detail.outages[-1].duration_ms' <<<"$s1")
    hcheck fault-recovered PASS "new driver domain pid $pid1, fast path $mode again, seen after $ms ms; outage $cause"
  else
    hcheck fault-recovered FAIL "not recovered within 20 s: $(status | jq -c .uplinks.u0.detail 2>/dev/null | head -c 800)"
  fi
  s1=$(status)
  a0=$(jq -c '[.clients.a.connects, .clients.a.disconnects, .clients.b.connects, .clients.b.disconnects]' <<<"$s1")
  if [ "$a0" = "[1,0,1,0]" ]; then
    hcheck fault-ports-kept PASS "clients a and b: 1 connect, 0 disconnects each"
  else
    hcheck fault-ports-kept FAIL "[a connects, a disconnects, b connects, b disconnects] = $a0"
  fi

  # -- what the outage cost: a pinged the address behind the uplink every 50 ms
  # through the window; an echo is lost when it meets the outage, or was in
  # flight at either of its ends (one each way). The frames lost begin at the kill,
  # before the switch notices (the outage's own duration starts then), and end when
  # the link is back, which this script saw $ms ms after the kill (an upper bound:
  # it polls): ceil(ms / 50 ms) + 2.
  wait_line "$A" '^TWIN-INFO fault-loss ' "$(left)" "$a_pid" || return 1
  local loss sent got lost max
  loss=$(tr -d '\r' <"$A" | grep -m1 '^TWIN-INFO fault-loss ')
  sent=$(sed -n 's/.* sent=\([0-9]*\).*/\1/p' <<<"$loss")
  got=$(sed -n 's/.* got=\([0-9]*\).*/\1/p' <<<"$loss")
  if [ -n "$sent" ] && [ -n "$got" ] && [ -n "$outage_ms" ] && [ "$outage_ms" != null ]; then
    lost=$((sent - got))
    max=$(((ms + 49) / 50 + 2))
    if [ "$lost" -ge 0 ] && [ "$lost" -le "$max" ]; then
      hcheck fault-loss PASS "$lost of $sent echoes lost; back $ms ms after the kill (outage $outage_ms ms from detection) allows $max"
    else
      hcheck fault-loss FAIL "$lost of $sent echoes lost; back $ms ms after the kill (outage $outage_ms ms from detection) allows $max"
    fi
  else
    hcheck fault-loss FAIL "no numbers: guest '${loss:-nothing}', outage ${outage_ms:-unknown} ms"
  fi

  # -- b reboots, then powers off; a new QEMU takes its port
  wait_line "$A" '^TWIN-PHASE reconnect' "$(left)" "$a_pid" || return 1
  log "guest a: b told to power off"
  if ! wait_exit "$b_pid" 60; then
    hcheck b-poweroff FAIL "b's QEMU did not exit within 60 s of being told to power off"
    return 1
  fi
  b0=$(tr -d '\r' <"$scratch/b.console.log" | grep -c '^TWIN-BOOT' || true)
  if [ "$b0" = 2 ]; then
    hcheck b-rebooted PASS "b booted twice in one QEMU (a reboot on the same connection)"
  else
    hcheck b-rebooted FAIL "b booted $b0 times in its first QEMU"
  fi
  log "starting a new QEMU for b"
  start_guest b2 b 52:54:00:00:00:0b b 10.0.0.2 10.0.0.1

  # -- the switch restarts; QEMU reconnects
  wait_line "$A" '^TWIN-PHASE switch-restart' "$(left)" "$a_pid" || return 1
  s1=$(status)
  a0=$(jq -c '[.clients.a.connects, .clients.a.disconnects, .clients.b.connects, .clients.b.disconnects]' <<<"$s1")
  # The port counts a start of the rings as a connect (b's first boot, its reboot,
  # the new QEMU) and a closed socket as a disconnect (b's first QEMU only).
  if jq -e '.[0] == 1 and .[1] == 0 and .[2] >= 2 and .[3] == 1' <<<"$a0" >/dev/null; then
    hcheck reconnect-port PASS "b's port: $(jq '.[2]' <<<"$a0") connects, 1 disconnect; a: 1 connect, 0 disconnects"
  else
    hcheck reconnect-port FAIL "[a connects, a disconnects, b connects, b disconnects] = $a0"
  fi
  log "restarting the switch"
  kill -INT "$switch_pid"
  if wait_exit "$switch_pid" 20; then
    rc=$exit_rc
  else
    kill -KILL "$switch_pid" 2>/dev/null || true
    rc="none (still running 20 s after SIGINT)"
  fi
  rep=$(grep '^{' "$scratch/switch1.json" | tail -1 || true)
  # The report adds up with what happened: both guests sent and received, the
  # NIC reflected, the uplink went down once (the fault), and every drop has a
  # reason this scenario explains (the outage, a port restarting, a busy guest,
  # reflected broadcasts); none for malformed, spoofed or misdirected frames. A
  # frame for b while its driver resets the device (the reboot, the new QEMU) is
  # destination_down when the switch already saw the port go down, and not_ready
  # when it meets the stopped rings first: which one is a race.
  local verdict
  verdict=$(jq -r '
    def pos(p): p > 0;
    [ (if pos(.clients.a.rx_packets) and pos(.clients.a.tx_packets)
          and pos(.clients.b.rx_packets) and pos(.clients.b.tx_packets) then empty
       else "a client port moved nothing" end),
      (if pos(.uplinks.u0.rx_packets) and .uplinks.u0.rx_packets <= .uplinks.u0.tx_packets
       then empty else "uplink: rx \(.uplinks.u0.rx_packets) of tx \(.uplinks.u0.tx_packets)" end),
      (if .uplinks.u0.disconnects == 1 then empty
       else "uplink disconnects \(.uplinks.u0.disconnects), not 1" end),
      ((.clients | to_entries[] | {port: .key, drops: .value.drops}),
       (.uplinks | to_entries[] | {port: .key, drops: .value.drops, uplink: true})
        | .port as $p | .uplink as $u | .drops | to_entries[]
        | select(.value > 0)
        | select(.key | IN("uplink_down", "no_destination", "destination_down",
            "not_ready", "no_buffers", "uplink_ring_full", "domain_nic_tx_ring_full",
            "domain_from_nic_ring_full") | not)
        # The NIC reflects the guests broadcasts (ARP) with the addresses
        # swapped: they come back with a broadcast source, on the uplink only.
        | select(($u and .key == "group_source") | not)
        | "\($p): \(.key) \(.value)")
    ] | join("; ")' <<<"$rep" 2>&1 || echo "unreadable report")
  if [ "$rc" = 0 ] && [ -z "$verdict" ]; then
    hcheck switch-report PASS "exit 0; $(jq -c '{a_rx: .clients.a.rx_packets, a_tx: .clients.a.tx_packets, b_rx: .clients.b.rx_packets, b_tx: .clients.b.tx_packets, u0_rx: .uplinks.u0.rx_packets, u0_tx: .uplinks.u0.tx_packets}' <<<"$rep")"
  elif [ "$rc" = 0 ]; then
    hcheck switch-report FAIL "$verdict; drops $(jq -c .drops <<<"$rep")"
  else
    hcheck switch-report FAIL "exit status $rc, report: $(head -c 300 <<<"$rep")"
  fi
  start_switch
  if s1=$(wait_uplink 30); then
    hcheck restart-uplink PASS "new switch: uplink u0 connected, fast path $mode"
  else
    hcheck restart-uplink FAIL "new switch: uplink u0 not up in mode $mode within 30 s"
  fi

  # -- the end
  wait_line "$A" '^TWIN-PHASE finished' "$(left)" "$a_pid" || return 1
  s1=$(status)
  a0=$(jq -c '[.clients.a.connects, .clients.b.connects]' <<<"$s1")
  if [ "$a0" = "[1,1]" ]; then
    hcheck restart-ports PASS "a and b reconnected to the new switch; $(jq -c '{a_rx: .clients.a.rx_packets, b_rx: .clients.b.rx_packets}' <<<"$s1")"
  else
    hcheck restart-ports FAIL "[a connects, b connects] = $a0"
  fi
  return 0
}

if [ $switch_up = 1 ]; then
  start_guest b b 52:54:00:00:00:0b b 10.0.0.2 10.0.0.1
  start_guest a a 52:54:00:00:00:0a a 10.0.0.1 10.0.0.2
  scenario_rc=0
  run_scenario || scenario_rc=1
  [ $scenario_rc = 0 ] || hcheck scenario FAIL "the scenario stopped early (see the guest consoles)"
  if wait_exit "$a_pid" 60; then log "guest a powered off"; else log "guest a still running after 60 s; stopping it"; fi
  if wait_exit "${b2_pid:-$b_pid}" 60; then log "guest b powered off"; else log "guest b still running after 60 s; stopping it"; fi
fi

# ---------------------------------------------------------------- results
# All TWIN-CHECK lines, as "GUEST:NAME RESULT DETAIL"; a guest's second boot in the
# same QEMU is GUEST#2.
results=$scratch/results
: >"$results"
for name in a b b2 host; do
  f=$scratch/$name.console.log
  [ "$name" = host ] && f=$scratch/host.log
  [ -f "$f" ] || continue
  tr -d '\r' <"$f" | awk -v g="$name" '
    /^TWIN-BOOT/ { boot++ }
    /^TWIN-CHECK / { k = g; if (boot > 1) k = g "#" boot; $1 = ""; sub(/^ /, ""); print k ":" $0 }
  ' >>"$results"
done

expected=(
  host:switch-up
  a:link a:peer-up a:ping a:iperf-a-b a:iperf-b-a a:reflect
  b:link b:peer-up b:ping
  host:features-a host:features-b
  host:fault-injected host:fault-recovered host:fault-ports-kept host:fault-loss
  a:fault-link a:fault-peer a:fault-reflect
  b#2:link b#2:peer-up b#2:ping a:reboot-ping host:b-rebooted
  b2:link b2:peer-up b2:ping a:reconnect-ping host:reconnect-port
  host:switch-report host:restart-uplink a:restart-link a:restart-ping host:restart-ports
)

summary=$scratch/summary.log
{
  echo "guest-e2e $mode summary (NIC: $nic_kind):"
  summarize_checks "$results" "${expected[@]}"
  echo "guest-e2e $mode: $check_pass checks passed, $check_fail failed, $((SECONDS - t_start)) s"
} >"$summary"
fail=$check_fail

if [ $fail -gt 0 ]; then
  for name in a b b2; do
    [ -s "$scratch/$name.console.log" ] || continue
    echo "--- last lines of guest $name's console:"
    tr -d '\r' <"$scratch/$name.console.log" | tail -15 | sed 's/^/    /'
    [ -s "$scratch/$name.qemu.log" ] && { echo "--- QEMU $name:"; tail -5 "$scratch/$name.qemu.log" | sed 's/^/    /'; }
  done
  for f in "$scratch"/switch*.log; do
    echo "--- last lines of $(basename "$f"):"
    grep -E 'WARN|ERROR' "$f" | tail -10 | sed 's/^/    /' || true
  done
fi
cat "$summary"
[ $fail -eq 0 ]
