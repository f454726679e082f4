# The checks that run inside a test guest (busybox sh). QEMU passes this file as the
# fw_cfg file `opt/twin/checks`; /init (scripts/guest/init) runs it once eth0 is up,
# with every `twin.KEY=VALUE` word of the kernel command line as TW_KEY:
#
#   TW_role   a: the driver of the scenario; b: the peer that serves it; tap: a
#             guest whose peer is the host's kernel behind a TAP uplink
#   TW_ip     this guest's address/prefix      TW_peer  the other guest's address
#   TW_nbr    an address behind the uplink     TW_nbrmac  its (made-up) MAC
#   TW_time   seconds per iperf3 run           TW_fault   seconds of the fault window
#   TW_minmbit  least TCP throughput that passes (Mbit/s)
#
# Console protocol (one line each, parsed by scripts/guest-e2e.sh):
#   TWIN-CHECK NAME PASS|FAIL DETAIL   a check's result
#   TWIN-PHASE NAME ...                the host acts on it (fault injection, restarts)
#   TWIN-INFO ...                      for the log
#
# Guest b brings its link up, pings a, and then serves: an iperf3 server, and
# commands on TCP port 7777 (`reboot`, `poweroff`). Guest a runs the scenario:
# ping and iperf3 both ways, frames reflected by the NIC behind the uplink, a driver
# domain killed by the host during traffic, b rebooted, b's QEMU replaced by a new
# one (a new vhost-user connection), and the whole switch restarted (QEMU reconnects,
# `reconnect=1`).

IF=${TW_if:-eth0}
S=/sys/class/net/$IF
PEER=${TW_peer:-10.0.0.2}
NBR=${TW_nbr:-10.0.0.9}
NBRMAC=${TW_nbrmac:-02:00:00:00:00:09}
T=${TW_time:-5}
FT=${TW_fault:-12}
# A quarter of the slowest run seen here (77.8 Mbit/s, TCG guests in a full test
# run with the machine busy): far below what a working switch gives, far above what
# TCP gets when the switch loses or reorders frames.
MINMBIT=${TW_minmbit:-20}

check() { n=$1; r=$2; shift 2; echo "TWIN-CHECK $n $r $*"; }
phase() { echo "TWIN-PHASE $*"; }
info() { echo "TWIN-INFO $*"; }
stat() { cat "$S/statistics/$1"; }
# Frames addressed to our MAC but to another IP address (the reflected echo
# requests, which carry the neighbour's IP as destination): IP InAddrErrors.
inaddr() { awk '/^Ip:/ { n++; if (n == 2) print $6 }' /proc/net/snmp; }

link_check() {
  c=$(cat "$S/carrier" 2>/dev/null)
  drv=$(basename "$(readlink "$S/device/driver" 2>/dev/null)" 2>/dev/null)
  if [ "$c" = 1 ]; then
    check link PASS "mac=$(cat "$S/address") carrier=1 mtu=$(cat "$S/mtu") driver=$drv"
  else
    check link FAIL "carrier=${c:-none} (no link within 10 s of the driver loading)"
  fi
  info "features=$(cat "$S/device/features" 2>/dev/null)"
}

# wait_peer SECONDS: until the peer answers a ping.
wait_peer() {
  end=$(($(date +%s) + $1))
  while [ "$(date +%s)" -lt $end ]; do
    ping -c 1 -W 1 "$PEER" >/dev/null 2>&1 && return 0
    sleep 0.2
  done
  return 1
}

# ping_check NAME COUNT INTERVAL: every echo answered.
ping_check() {
  out=$(ping -c "$2" -i "$3" -W 2 "$PEER" 2>&1)
  tx=$(echo "$out" | awk '/packets transmitted/ { print $1 }')
  rx=$(echo "$out" | awk '/packets transmitted/ { print $4 }')
  avg=$(echo "$out" | awk -F'[/ =]+' '/round-trip/ { print $(NF-2) }')
  if [ -n "$rx" ] && [ "$rx" = "$2" ]; then
    check "$1" PASS "$rx/$2 echoes answered, rtt avg ${avg} ms"
  else
    check "$1" FAIL "${rx:-0}/$2 echoes answered: $(echo "$out" | tail -2 | tr '\n' ' ')"
  fi
}

# iperf_check NAME [-R]: a TCP run of T seconds reaches MINMBIT at the receiver.
iperf_check() {
  n=$1; shift
  out=$(iperf3 -c "$PEER" -t "$T" -f m "$@" 2>&1); rc=$?
  mbit=$(echo "$out" | awk '/receiver/ { for (i = 1; i <= NF; i++) if ($i == "Mbits/sec") print $(i-1) }')
  retr=$(echo "$out" | awk '/sender/ { for (i = 1; i <= NF; i++) if ($i == "Mbits/sec") print $(i+1) }')
  if [ $rc = 0 ] && [ -n "$mbit" ] && awk "BEGIN { exit !($mbit >= $MINMBIT) }"; then
    check "$n" PASS "${mbit} Mbit/s over ${T} s, ${retr:-?} retransmits"
  else
    check "$n" FAIL "rc=$rc receiver=${mbit:-none} Mbit/s: $(echo "$out" | tail -3 | tr '\n' ' ')"
  fi
}

# tell_b WORD: tells b to reboot or power off (retried while b is not listening yet:
# it listens once its own checks are done).
tell_b() {
  end=$(($(date +%s) + 60))
  while :; do
    out=$(echo "$1" | timeout 5 nc "$PEER" 7777 2>&1)
    case "$out" in *refused*|*unreachable*) ;; *) return 0 ;; esac
    [ "$(date +%s)" -lt $end ] || { info "b never took '$1': $out"; return 1; }
    sleep 0.5
  done
}

# b's command server: the first line of each connection to TCP 7777 is carried out
# without waiting for nc to finish.
serve_commands() {
  while :; do
    nc -l -p 7777 2>/dev/null | {
      read -r cmd
      case "$cmd" in
        reboot) info "rebooting"; reboot -f ;;
        poweroff) info "powering off"; poweroff -f ;;
        *) info "unknown command '$cmd'" ;;
      esac
    }
  done
}

# b takes commands only once its own checks are done (a retries until then), and
# then says hello to a (TCP 7779), which a hears when it is waiting for b to come
# back from a reboot or a new QEMU.
role_b() {
  link_check
  iperf3 -s -D
  if wait_peer 120; then check peer-up PASS "$PEER answers"; else check peer-up FAIL "$PEER silent for 120 s"; fi
  ping_check ping 10 0.2
  phase serving
  serve_commands &
  say_hello
  wait
}

# say_hello: tells a that b is up (TCP 7779), retried for a minute: one attempt
# is lost when its connection is (a listener not back yet, a lost SYN), and a
# would then wait for nothing. a keeps the first hello and ignores the rest.
say_hello() {
  msg="hello from boot $(cat /proc/sys/kernel/random/boot_id)"
  i=0
  while [ $i -lt 30 ]; do
    echo "$msg" | timeout 3 nc "$PEER" 7779 >/dev/null 2>&1 && return 0
    i=$((i + 1))
    sleep 2
  done
  info "no hello reached $PEER"
}

# expect_b: listens for b's hello (before b is told to go away); a listener that
# ends without one (a connection that brought nothing, a port not free yet) is
# started again.
expect_b() {
  rm -f /tmp/hello
  (
    while [ ! -s /tmp/hello ]; do
      nc -l -p 7779 >>/tmp/hello 2>/dev/null &
      echo $! >/tmp/hello.nc
      wait $! || sleep 0.5
    done
  ) &
  hello_pid=$!
}

# b_back SECONDS: until b's hello came (it has booted again and done its checks).
b_back() {
  end=$(($(date +%s) + $1))
  while [ ! -s /tmp/hello ] && [ "$(date +%s)" -lt $end ]; do sleep 0.2; done
  kill $hello_pid 2>/dev/null
  # The listener itself, so that the next one gets the port.
  kill "$(cat /tmp/hello.nc 2>/dev/null)" 2>/dev/null
  wait $hello_pid 2>/dev/null
  [ -s /tmp/hello ] && info "b is back: $(head -1 /tmp/hello)"
}

role_a() {
  link_check
  if wait_peer 120; then
    check peer-up PASS "$PEER answers"
  else
    check peer-up FAIL "$PEER silent for 120 s; nothing else to test"
    return
  fi

  # Guest to guest through the switch.
  ping_check ping 20 0.2
  iperf_check iperf-a-b
  sleep 1
  iperf_check iperf-b-a -R

  # Through the uplink: the NIC reflects every frame with the MACs swapped.
  arp -s "$NBR" "$NBRMAC"
  n=100
  e0=$(inaddr); t0=$(stat tx_packets)
  ping -q -c $n -i 0.02 -W 1 "$NBR" >/dev/null 2>&1
  sleep 1
  got=$(($(inaddr) - e0)); sent=$(($(stat tx_packets) - t0))
  if [ "$got" = $n ]; then
    check reflect PASS "$got of $n frames came back through the uplink (tx $sent)"
  else
    check reflect FAIL "$got of $n frames came back through the uplink (tx $sent)"
  fi

  # A driver-domain crash during traffic: the host kills it after this line.
  phase fault-window "secs=$FT"
  cd0=$(cat "$S/carrier_down_count")
  e0=$(inaddr)
  # Both pings outlast the per-second windows below.
  ping -q -c $(((FT + 2) * 20)) -i 0.05 -W 1 "$NBR" >/tmp/fault-nbr 2>&1 &
  nbr_pid=$!
  ping -q -c $(((FT + 2) * 10)) -i 0.1 -W 2 "$PEER" >/tmp/fault-peer 2>&1 &
  peer_pid=$!
  w=0; prev=$e0; dead=0; tail_ok=0; windows=""
  while [ $w -lt "$FT" ]; do
    sleep 1
    now=$(inaddr); d=$((now - prev)); prev=$now
    windows="$windows $d"
    [ $d = 0 ] && dead=$((dead + 1))
    [ $w -ge $((FT - 3)) ] && [ $d -gt 0 ] && tail_ok=$((tail_ok + 1))
    w=$((w + 1))
  done
  wait $nbr_pid
  wait $peer_pid
  info "reflected per second:$windows"
  cd1=$(cat "$S/carrier_down_count")
  if [ "$cd1" = "$cd0" ] && [ "$(cat "$S/carrier")" = 1 ]; then
    check fault-link PASS "carrier stayed up (carrier_down_count $cd0)"
  else
    check fault-link FAIL "carrier_down_count $cd0 -> $cd1, carrier $(cat "$S/carrier")"
  fi
  tx=$(awk '/packets transmitted/ { print $1 }' /tmp/fault-peer)
  rx=$(awk '/packets transmitted/ { print $4 }' /tmp/fault-peer)
  if [ -n "$tx" ] && [ "$tx" = "$rx" ]; then
    check fault-peer PASS "$rx/$tx echoes to $PEER answered during the fault"
  else
    check fault-peer FAIL "${rx:-0}/${tx:-?} echoes to $PEER answered during the fault"
  fi
  sent=$(awk '/packets transmitted/ { print $1 }' /tmp/fault-nbr)
  sleep 0.5
  got=$(($(inaddr) - e0))
  # How many frames the outage may cost is the host's to judge (it knows how long
  # the outage lasted): host check fault-loss, from this line.
  info "fault-loss sent=${sent:-0} got=$got"
  if [ $tail_ok = 3 ] && [ -n "$sent" ]; then
    check fault-reflect PASS "reflection resumed; $got of $sent frames came back, $dead of $FT seconds without any"
  else
    check fault-reflect FAIL "no reflection in the last 3 s; $got of ${sent:-?} came back; per second:$windows"
  fi

  # b reboots (same QEMU, same vhost-user connection: the device is reset).
  phase reboot
  expect_b
  tell_b reboot
  if b_back 180 && wait_peer 30; then
    ping_check reboot-ping 10 0.2
  else
    check reboot-ping FAIL "$PEER did not come back within 180 s"
  fi

  # b powers off; the host starts a new QEMU on the same port (a new connection).
  phase reconnect
  expect_b
  tell_b poweroff
  if b_back 180 && wait_peer 30; then
    ping_check reconnect-ping 10 0.2
  else
    check reconnect-ping FAIL "$PEER did not come back within 180 s"
  fi

  # The host restarts the switch; QEMU reconnects (reconnect=1) and the link returns.
  cd0=$(cat "$S/carrier_down_count")
  phase switch-restart
  end=$(($(date +%s) + 60))
  while [ "$(cat "$S/carrier_down_count")" = "$cd0" ] && [ "$(date +%s)" -lt $end ]; do sleep 0.1; done
  down=$(cat "$S/carrier_down_count")
  while [ "$(cat "$S/carrier")" != 1 ] && [ "$(date +%s)" -lt $end ]; do sleep 0.1; done
  if [ "$down" != "$cd0" ] && [ "$(cat "$S/carrier")" = 1 ]; then
    check restart-link PASS "link went down and came back"
  else
    check restart-link FAIL "carrier_down_count $cd0 -> $down, carrier $(cat "$S/carrier")"
  fi
  if wait_peer 120; then
    ping_check restart-ping 10 0.2
  else
    check restart-ping FAIL "$PEER silent for 120 s after the switch restart"
  fi

  info "stats rx_packets=$(stat rx_packets) tx_packets=$(stat tx_packets) rx_dropped=$(stat rx_dropped) tx_dropped=$(stat tx_dropped)"
  phase finished
  tell_b poweroff
}

# A guest whose peer is the host's own kernel behind a TAP uplink (scripts/
# guest-kernel.sh): PEER is the host's address (on the TAP device, or across a
# veth pair from an AF_PACKET or AF_XDP uplink) in its namespace, which
# runs an iperf3 server. Ping and TCP both ways, then pings through a driver-domain
# kill by the host.
role_tap() {
  link_check
  if wait_peer 120; then
    check peer-up PASS "$PEER (the host's kernel) answers"
  else
    check peer-up FAIL "$PEER silent for 120 s; nothing else to test"
    return
  fi
  ping_check ping 20 0.2
  iperf_check iperf-to-host
  sleep 1
  iperf_check iperf-from-host -R
  phase fault-window "secs=$FT"
  out=$(ping -q -c $((FT * 10)) -i 0.1 -W 1 "$PEER" 2>&1)
  tx=$(echo "$out" | awk '/packets transmitted/ { print $1 }')
  rx=$(echo "$out" | awk '/packets transmitted/ { print $4 }')
  # The host judges the loss (it knows when the domain was back).
  info "fault-loss sent=${tx:-0} got=${rx:-0}"
  ping_check fault-after 10 0.2
  info "stats rx_packets=$(stat rx_packets) tx_packets=$(stat tx_packets) rx_dropped=$(stat rx_dropped) tx_dropped=$(stat tx_dropped)"
  phase finished
}

case "${TW_role:-}" in
  a) role_a ;;
  b) role_b ;;
  tap) role_tap ;;
  *) check role FAIL "unknown twin.role '${TW_role:-}'" ;;
esac
