//! Uplinks over kernel sockets with shared rings: AF_PACKET (`--uplink
//! u0=packet:IFNAME`, TPACKET_V3 rings) and AF_XDP (`--uplink u0=xdp:IFNAME`, a
//! UMEM and four rings on queue 0, fed by the redirect program in generic mode,
//! and in native mode in the veth driver).
//! The switch runs in a network namespace the test creates, with a veth pair
//! there; the uplink's driver domain drives one end (`pk0`) through a socket the
//! switch opened, and the kernel's IPv4 stack on the other end (`pk1`) is the
//! network the uplink reaches, through the veth driver as through a NIC's. A
//! generated client sends to `pk1`, and `pk1` pings the client; every counter
//! agrees hop by hop with the kernel's own interface statistics, exactly. The
//! domain is killed during traffic and the next one gets a socket of its own.
//! The uplink follows its interface: deleted (the domain ends) and created again
//! (the next domain binds to it); for AF_PACKET also link down (frames the
//! kernel kept taken back and counted as `kernel_link_down`) and up. A
//! compromised domain's ioctl on its socket gets it killed by its sandbox.
//!
//! Needs root, `ip` (iproute2) and `ping` (iputils-ping); scripts/setup-host.sh
//! installs both.

mod common;

use std::time::Duration;

use common::*;
use serde_json::Value;

const C1: &str = "02:00:00:00:00:01";
const C1_IP: &str = "10.79.0.2";

/// A quiet namespace (no IPv6: the kernel sends nothing of its own) with a veth
/// pair `up`/`peer`: `up` is the uplink's, up and without an address; `peer` has
/// the network's address and knows the client's (no ARP: it is a generator).
fn veth_pair(ns: &Netns, up: &str, peer: &str) {
    ip(&[
        "-n", &ns.0, "link", "add", up, "type", "veth", "peer", "name", peer,
    ]);
    ip(&["-n", &ns.0, "link", "set", up, "up"]);
    ip(&["-n", &ns.0, "addr", "add", "10.79.0.1/24", "dev", peer]);
    ip(&["-n", &ns.0, "link", "set", peer, "up"]);
    ip(&[
        "-n", &ns.0, "neigh", "add", C1_IP, "lladdr", C1, "dev", peer,
    ]);
}

/// The switch, in `ns`, with client c1 and uplink u0 of `kind` (`packet`,
/// `xdp`) on `dev`, in domain mode.
fn ring_switch(s: &Scratch, ns: &Netns, kind: &str, dev: &str) -> (Proc, String, String) {
    ns.switch(s, &format!("{kind}:{dev},mode=domain"), C1)
}

/// `ping` in `ns` to the client: `count` echo requests, 10 ms apart.
fn ping_client(ns: &Netns, count: u32) {
    ns.ping(C1_IP, count);
}

const KERNEL_DROPS: [&str; 5] = [
    "kernel_too_short",
    "kernel_too_long",
    "kernel_bad_header",
    "kernel_link_down",
    "kernel_refused",
];

/// Drops that the uplink's domains counted (their rings and the socket's).
fn domain_drops(sw_r: &Value) -> u64 {
    [
        "domain_nic_tx_ring_full",
        "domain_from_nic_ring_full",
        "domain_from_nic_too_big",
    ]
    .iter()
    .chain(KERNEL_DROPS.iter())
    .map(|k| n(sw_r, &format!("/uplinks/u0/drops/{k}")))
    .sum()
}

/// Every process under the switch (the domain's reaper and worker) holds only
/// its socket (and copies for its ring mappings), the driver's state memfd, an
/// AF_XDP socket's UMEM, the exchange region, eventfds and an epoll set above stdio, and
/// one end of the sandbox's pipe; one of them holds the socket.
fn assert_domain_holds_only_its_descriptors(switch: u32, most_sockets: usize) {
    let procs = descendants(switch);
    assert_eq!(procs.len(), 2, "the domain's reaper and worker: {procs:?}");
    let mut sockets = 0;
    for pid in procs {
        let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
            continue;
        };
        for e in dir.flatten() {
            let fd: u32 = e.file_name().to_string_lossy().parse().unwrap_or(0);
            if fd <= 2 {
                continue;
            }
            let target = std::fs::read_link(e.path())
                .map(|t| t.to_string_lossy().into_owned())
                .unwrap_or_default();
            sockets += usize::from(target.starts_with("socket:["));
            assert!(
                [
                    "pipe:[",
                    "socket:[",
                    "anon_inode:[eventfd]",
                    "anon_inode:[eventpoll]",
                    "/memfd:twin-xchg-u0 ",
                    "/memfd:twin-umem ",
                    "/memfd:twin-xdp-state ",
                    "/memfd:twin-packet-state ",
                ]
                .iter()
                .any(|a| target.starts_with(a)),
                "driver domain process {pid} holds fd {fd} -> {target}"
            );
        }
    }
    // The worker's socket and its mappings' copies, and the reaper's copy from
    // before the fork.
    assert!(
        (1..=most_sockets).contains(&sockets),
        "{sockets} sockets in the domain's processes"
    );
}

#[test]
fn a_packet_uplink_reaches_the_wire_and_survives_its_domain_being_killed() {
    // The worker's socket and its ring mapping's copy, the reaper's copy.
    reaches_the_wire_and_survives_its_domain_being_killed("packet", "", 3);
}

#[test]
fn an_xdp_uplink_reaches_the_wire_and_survives_its_domain_being_killed() {
    // The worker's socket and one copy per ring mapping, the reaper's copy.
    reaches_the_wire_and_survives_its_domain_being_killed("xdp", "", 6);
}

/// The same with the program in the veth driver itself (`xdp-mode=native`).
#[test]
fn an_xdp_uplink_in_native_mode_reaches_the_wire_and_survives_its_domain_being_killed() {
    reaches_the_wire_and_survives_its_domain_being_killed("xdp", ",xdp-mode=native", 6);
}

/// A `kind` uplink with `options` on `pk0` (see the module docs).
fn reaches_the_wire_and_survives_its_domain_being_killed(
    kind: &str,
    options: &str,
    most_sockets: usize,
) {
    let _m = serial();
    let tag = format!("{kind}{}", options.len());
    let s = Scratch::new(&tag);
    let ns = Netns::new(&tag);
    quiet(&ns);
    veth_pair(&ns, "pk0", "pk1");
    let (mut sw, c1_s, ctl) = ns.switch(&s, &format!("{kind}:pk0{options},mode=domain"), C1);
    let pid0 = wait_domain(&ctl, 0);
    let peer_mac = ns.mac("pk1");

    // The client sends to the peer for 4 s; the peer pings the client before and
    // after the domain is killed.
    let mut g = gen_event(&c1_s, C1, &peer_mac, "4", "5000");
    wait_status(&ctl, Duration::from_secs(10), "c1 sending", |st| {
        n(st, "/uplinks/u0/tx_packets") > 1000
    });
    ping_client(&ns, 50);
    ctl_ok(&ctl, &["fault", "u0", "kill"]);
    let pid1 = wait_domain(&ctl, pid0);
    assert_ne!(pid1, pid0);
    ping_client(&ns, 50);
    assert_domain_holds_only_its_descriptors(sw.pid(), most_sockets);
    let g = g.report(Duration::from_secs(30));
    // Everything queued has crossed before the kernel's counters are read.
    std::thread::sleep(Duration::from_millis(300));
    let (up_tx, up_rx) = (ns.stat("pk0", "tx_packets"), ns.stat("pk0", "rx_packets"));
    let (peer_rx, peer_tx) = (ns.stat("pk1", "rx_packets"), ns.stat("pk1", "tx_packets"));
    let st = ctl_status(&ctl);
    let sw_r = sw.stop_report();
    eprintln!("gen {g}\nswitch {sw_r}\npk0 tx {up_tx} rx {up_rx}, pk1 rx {peer_rx} tx {peer_tx}");

    assert_eq!(n(&sw_r, "/uplinks/u0/disconnects"), 1);
    assert_eq!(n(&sw_r, "/uplinks/u0/connects"), 2);
    assert_eq!(outages(&st).len(), 1, "{st}");
    // The wire: what one end sent, the other received.
    assert_eq!(up_tx, peer_rx, "pk0 -> pk1");
    assert_eq!(peer_tx, up_rx, "pk1 -> pk0");
    // Client -> switch -> domain -> pk0: every frame c1 sent went to the uplink or
    // is counted; every frame the uplink took left pk0 or is counted by a domain,
    // or was lost in the killed domain (its outage's `frames_in_flight_lost`, an
    // upper bound over by at most one batch of frames already handed to the
    // kernel).
    let sent = n(&g, "/tx_packets");
    assert!(sent > 10_000, "the generator sent {sent}");
    assert_eq!(n(&sw_r, "/clients/c1/rx_packets"), sent);
    let c1_d = &sw_r["clients"]["c1"]["drops"];
    assert_eq!(
        n(&sw_r, "/uplinks/u0/tx_packets")
            + n(c1_d, "/uplink_down")
            + n(c1_d, "/no_destination")
            + n(&sw_r, "/uplinks/u0/drops/uplink_ring_full"),
        sent,
        "c1's frames: to the uplink or counted"
    );
    let lost_in_kill: u64 = outages(&st)
        .iter()
        .map(|o| n(o, "/frames_in_flight_lost"))
        .sum();
    let to_wire = n(&sw_r, "/uplinks/u0/tx_packets");
    let accounted = up_tx + domain_drops(&sw_r);
    assert!(
        accounted <= to_wire
            && to_wire <= accounted + lost_in_kill
            && accounted + lost_in_kill <= to_wire + 64,
        "pk0 sent every frame the uplink took, or one is counted: pk0 {up_tx} + \
         domain drops {} + lost in the kill {lost_in_kill}, uplink {to_wire}",
        domain_drops(&sw_r)
    );
    // pk1 -> pk0 -> domain -> switch -> c1: only the echo requests (no IPv6, the
    // client's address known), none while no socket was bound (the pings are
    // before the kill and after the new domain runs).
    assert_eq!(
        peer_tx, 100,
        "pk1 sent the 100 echo requests and nothing else"
    );
    assert_eq!(
        n(&sw_r, "/uplinks/u0/rx_packets") + domain_drops(&sw_r),
        up_rx,
        "every frame pk0 received reached the switch, or a domain counted it"
    );
    assert_eq!(n(&sw_r, "/clients/c1/tx_packets"), up_rx);
    assert_eq!(n(&g, "/rx_packets"), up_rx, "c1 got every echo request");
    let u0_d = &sw_r["uplinks"]["u0"]["drops"];
    for k in KERNEL_DROPS {
        assert_eq!(n(u0_d, &format!("/{k}")), 0, "{k}");
    }
}

#[test]
fn a_packet_uplink_follows_its_link_and_a_deleted_interface() {
    let _m = serial();
    let s = Scratch::new("packetlink");
    let ns = Netns::new("packetlink");
    quiet(&ns);
    veth_pair(&ns, "pl0", "pl1");
    let (mut sw, c1_s, ctl) = ring_switch(&s, &ns, "packet", "pl0");
    let pid0 = wait_domain(&ctl, 0);
    let link = |st: &Value| st.pointer("/uplinks/u0/detail/link/up").cloned();
    wait_status(&ctl, Duration::from_secs(5), "link up", |st| {
        link(st) == Some(Value::Bool(true))
    });
    let mut g = gen_event(&c1_s, C1, &ns.mac("pl1"), "10", "2000");
    wait_status(&ctl, Duration::from_secs(10), "frames on the wire", |st| {
        n(st, "/uplinks/u0/tx_packets") > 500
    });

    // Down: the status says so, nothing goes out, and the domain takes back and
    // counts what the kernel kept.
    ip(&["-n", &ns.0, "link", "set", "pl0", "down"]);
    let down = wait_status(&ctl, Duration::from_secs(5), "link down", |st| {
        link(st) == Some(Value::Bool(false))
    });
    let wire_down = ns.stat("pl0", "tx_packets");
    let refused = wait_status(&ctl, Duration::from_secs(5), "frames refused", |st| {
        n(st, "/uplinks/u0/drops/kernel_link_down")
            > n(&down, "/uplinks/u0/drops/kernel_link_down") + 500
    });
    assert_eq!(
        ns.stat("pl0", "tx_packets"),
        wire_down,
        "frames left a down interface"
    );
    // Up: frames go out again through the same domain (the peer's own counter is
    // the condition; that nothing taken back goes out late is
    // crates/kernel-nic/tests/packet.rs's exact check).
    assert_eq!(
        n(&refused, "/uplinks/u0/detail/link_downs"),
        1,
        "the fall is counted once"
    );
    let peer_rx_before = ns.stat("pl1", "rx_packets");
    ip(&["-n", &ns.0, "link", "set", "pl0", "up"]);
    ns.wait_stat_above(
        "pl1",
        "rx_packets",
        peer_rx_before + 500,
        "frames out again",
    );
    assert_eq!(wait_domain(&ctl, 0), pid0, "the same domain throughout");

    // Deleted: the domain sees it and ends; the switch opens a socket for the
    // next domain once the interface exists again.
    delete_and_recreate(&ns, &ctl, pid0);
    let _ = g.stop();
    let (status, _) = sw.stop();
    assert!(status.success());
}

/// Deletes `pl0` under the uplink (whose domain is `pid0`): the domain ends with
/// the outage's reason "NIC hung up"; the pair is created again after the
/// switch has had time to fail to start a domain on the missing interface, and
/// the next domain carries the peer's pings to c1, with no further restart.
fn delete_and_recreate(ns: &Netns, ctl: &str, pid0: u64) {
    ip(&["-n", &ns.0, "link", "del", "pl0"]);
    let gone = wait_status(ctl, Duration::from_secs(10), "the domain ended", |st| {
        outages(st).len() == 1
    });
    let o = outages(&gone);
    assert!(
        str_at(&o[0], "/reason").contains("NIC hung up"),
        "outage reason: {}",
        o[0]
    );
    // Missing for a while: launches fail (and are retried) meanwhile.
    std::thread::sleep(Duration::from_millis(500));
    veth_pair(ns, "pl0", "pl1");
    let pid1 = wait_domain(ctl, pid0);
    let before = n(&ctl_status(ctl), "/clients/c1/tx_packets");
    ping_client(ns, 30);
    let after = wait_status(ctl, Duration::from_secs(5), "the pings reach c1", |st| {
        n(st, "/clients/c1/tx_packets") >= before + 30
    });
    assert_eq!(wait_domain(ctl, pid0), pid1, "no further restart");
    assert_eq!(n(&after, "/uplinks/u0/disconnects"), 1);
}

#[test]
fn an_xdp_uplink_follows_a_deleted_interface() {
    let _m = serial();
    let s = Scratch::new("xdplink");
    let ns = Netns::new("xdplink");
    quiet(&ns);
    veth_pair(&ns, "pl0", "pl1");
    let (mut sw, c1_s, ctl) = ring_switch(&s, &ns, "xdp", "pl0");
    let pid0 = wait_domain(&ctl, 0);
    let mut g = gen_event(&c1_s, C1, &ns.mac("pl1"), "6", "2000");
    wait_status(&ctl, Duration::from_secs(10), "frames on the wire", |st| {
        n(st, "/uplinks/u0/tx_packets") > 500
    });
    assert!(ns.stat("pl1", "rx_packets") > 500);
    // Deleted: the socket is unbound, the domain sees it and ends; once the
    // interface exists again, the next domain gets the program and a socket.
    delete_and_recreate(&ns, &ctl, pid0);
    let _ = g.stop();
    let (status, _) = sw.stop();
    assert!(status.success());
}

/// A compromised domain holds its socket: it can send frames through the rings
/// (its job), but an ioctl on it (which could reconfigure the interface) is
/// outside its sandbox's allow-list: the domain is killed (SIGSYS) and
/// restarted, and traffic goes on through the next one.
#[test]
fn a_compromised_packet_domain_cannot_reconfigure_its_interface() {
    compromised_domain_cannot_reconfigure_its_interface("packet");
}

#[test]
fn a_compromised_xdp_domain_cannot_reconfigure_its_interface() {
    compromised_domain_cannot_reconfigure_its_interface("xdp");
}

fn compromised_domain_cannot_reconfigure_its_interface(kind: &str) {
    let _m = serial();
    let s = Scratch::new(&format!("{kind}ioctl"));
    let ns = Netns::new(&format!("{kind}ioctl"));
    quiet(&ns);
    veth_pair(&ns, "pi0", "pi1");
    let (mut sw, c1_s, ctl) = ring_switch(&s, &ns, kind, "pi0");
    let pid0 = wait_domain(&ctl, 0);
    ctl_ok(&ctl, &["fault", "u0", "ioctl"]);
    let pid1 = wait_domain(&ctl, pid0);
    let st = ctl_status(&ctl);
    let o = outages(&st);
    assert_eq!(o.len(), 1, "{st}");
    assert!(
        str_at(&o[0], "/reason").contains("SIGSYS"),
        "killed by its sandbox: {}",
        o[0]
    );
    let mut g = gen_event(&c1_s, C1, &ns.mac("pi1"), "2", "1000");
    let _ = g.report(Duration::from_secs(20));
    assert!(
        ns.stat("pi1", "rx_packets") >= 1000,
        "traffic after the kill"
    );
    assert_eq!(wait_domain(&ctl, pid0), pid1);
    let (status, _) = sw.stop();
    assert!(status.success());
}

/// A missing interface is a clear error at start (exit status 1, the reason), for
/// either kind; and neither kind runs in a mode the switch cannot serve (a usage
/// error: exit status 2).
#[test]
fn a_missing_interface_or_an_unserved_mode_is_an_error_at_start() {
    let _m = serial();
    let s = Scratch::new("ringstart");
    let ns = Netns::new("ringstart");
    quiet(&ns);
    veth_pair(&ns, "ps0", "ps1");
    for (spec, status, want) in [
        ("packet:nosuch0", 1, "no interface nosuch0"),
        ("xdp:nosuch0", 1, "no interface nosuch0"),
        ("tap:ps0,mode=twin", 2, "domain mode only"),
    ] {
        let mut cmd = ns.command(env!("CARGO_BIN_EXE_twin"));
        cmd.args([
            "switch",
            "--client",
            &format!("c1={}", s.path("c1.sock")),
            "--uplink",
            &format!("u0={spec}"),
        ]);
        let out = cmd.output().expect("run twin switch");
        assert_eq!(out.status.code(), Some(status), "{spec}: {out:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(want), "{spec}: {err}");
    }
}

/// Waits until u0's fast path runs in `want` ("inline", "domain", "twin").
fn wait_fast_path(ctl: &str, want: &str) -> Value {
    wait_status(
        ctl,
        Duration::from_secs(15),
        &format!("fast path {want}"),
        |st| fast_path(st) == Some(want),
    )
}

/// The driver's own counters of the kernel's errors, for `kind`.
fn kernel_error_counters(kind: &str) -> [&'static str; 2] {
    match kind {
        "xdp" => ["/kernel_errors", "/bad_state"],
        _ => ["/rx_bad_blocks", "/bad_state"],
    }
}

/// An AF_XDP uplink's fast path runs in the switch: as the twin (the AF_XDP
/// driver derived, over the switch's own mapping of the driver's space, every
/// access checked by the SVM) and inline, and moves between them and the
/// domain while the client sends and the peer pings. No domain is killed, so
/// every frame is accounted exactly against the kernel's counters.
#[test]
fn an_xdp_uplinks_fast_path_runs_in_the_switch_as_twin_and_inline() {
    fast_path_runs_in_the_switch_as_twin_and_inline("xdp", "px");
}

/// The same for an AF_PACKET uplink: the AF_PACKET driver's twin over the
/// socket's TPACKET_V3 rings mapped in the switch.
#[test]
fn a_packet_uplinks_fast_path_runs_in_the_switch_as_twin_and_inline() {
    fast_path_runs_in_the_switch_as_twin_and_inline("packet", "pt");
}

fn fast_path_runs_in_the_switch_as_twin_and_inline(kind: &str, dev: &str) {
    let _m = serial();
    let s = Scratch::new(&format!("{kind}twin"));
    let ns = Netns::new(&format!("{kind}twin"));
    quiet(&ns);
    let (up, peer) = (format!("{dev}0"), format!("{dev}1"));
    veth_pair(&ns, &up, &peer);
    let (mut sw, c1_s, ctl) = ns.switch(&s, &format!("{kind}:{up},mode=twin"), C1);
    let st = wait_fast_path(&ctl, "twin");
    let pid = n(&st, "/uplinks/u0/detail/driver/pid");
    let peer_mac = ns.mac(&peer);
    let mut g = gen_event(&c1_s, C1, &peer_mac, "5", "5000");
    wait_status(&ctl, Duration::from_secs(10), "c1 sending", |st| {
        n(st, "/uplinks/u0/tx_packets") > 1000
    });
    let mut pings = 0;
    for mode in ["twin", "inline", "domain", "twin"] {
        let done = ctl_ok(&ctl, &["mode", "u0", mode]);
        assert_eq!(str_at(&done, "/mode"), mode, "{done}");
        wait_fast_path(&ctl, mode);
        ping_client(&ns, 25);
        pings += 25;
    }
    let st = ctl_status(&ctl);
    let svm = &st["uplinks"]["u0"]["detail"]["driver"]["svm"];
    assert!(n(svm, "/checks") > 10_000, "the twin's accesses: {svm}");
    assert_eq!(n(svm, "/faults"), 0, "{svm}");
    let g = g.report(Duration::from_secs(30));
    std::thread::sleep(Duration::from_millis(300));
    let (up_tx, up_rx) = (ns.stat(&up, "tx_packets"), ns.stat(&up, "rx_packets"));
    let peer_tx = ns.stat(&peer, "tx_packets");
    let sw_r = sw.stop_report();
    eprintln!("gen {g}\nswitch {sw_r}\n{up} tx {up_tx} rx {up_rx}, {peer} tx {peer_tx}");
    // One domain throughout: the fast path moved, the domain stayed.
    assert_eq!(n(&sw_r, "/uplinks/u0/connects"), 1);
    assert_eq!(n(&sw_r, "/uplinks/u0/detail/driver/pid"), pid);
    assert_eq!(n(&sw_r, "/uplinks/u0/detail/twin_fault_count"), 0);
    // Into twin at start, then inline, domain, twin (asking for twin while in
    // twin changes nothing).
    assert_eq!(n(&sw_r, "/uplinks/u0/detail/mode_changes"), 4);
    let sent = n(&g, "/tx_packets");
    assert!(sent > 10_000, "the generator sent {sent}");
    let c1_d = &sw_r["clients"]["c1"]["drops"];
    assert_eq!(
        n(&sw_r, "/uplinks/u0/tx_packets")
            + n(c1_d, "/no_destination")
            + n(&sw_r, "/uplinks/u0/drops/uplink_ring_full"),
        sent,
        "c1's frames: to the uplink or counted"
    );
    // Exactly: every frame the uplink took left px0 or a domain counted it; every
    // frame px0 received reached the client or was counted.
    assert_eq!(
        up_tx + domain_drops(&sw_r),
        n(&sw_r, "/uplinks/u0/tx_packets"),
        "px0 sent every frame the uplink took"
    );
    assert_eq!(
        peer_tx, pings,
        "px1 sent the echo requests and nothing else"
    );
    assert_eq!(up_rx, peer_tx);
    assert_eq!(n(&sw_r, "/uplinks/u0/rx_packets"), up_rx);
    assert_eq!(n(&g, "/rx_packets"), up_rx, "c1 got every echo request");
    assert_eq!(domain_drops(&sw_r), 0, "{}", sw_r["uplinks"]["u0"]["drops"]);
    let stats = &sw_r["uplinks"]["u0"]["detail"]["driver"]["switch_instance_stats"];
    let [a, b] = kernel_error_counters(kind);
    assert_eq!(n(stats, a) + n(stats, b), 0, "{stats}");
    assert!(
        n(stats, "/tx_packets") > 0,
        "the switch's instance sent: {stats}"
    );
}

/// Each misbehaviour a twin's driver can commit on request, in an AF_XDP
/// uplink's twin: contained (the twin disabled, the fault reported, a fresh
/// domain with a fresh socket), the switch and the client untouched, and the
/// twin re-armed; the peer still reaches the client at the end.
#[test]
fn every_injected_fault_of_an_xdp_twin_is_contained() {
    every_injected_fault_of_a_ring_twin_is_contained("xdp", "pf");
}

/// The same in an AF_PACKET uplink's twin.
#[test]
fn every_injected_fault_of_a_packet_twin_is_contained() {
    every_injected_fault_of_a_ring_twin_is_contained("packet", "pg");
}

fn every_injected_fault_of_a_ring_twin_is_contained(kind: &str, dev: &str) {
    let _m = serial();
    let s = Scratch::new(&format!("{kind}twinfault"));
    let ns = Netns::new(&format!("{kind}twinfault"));
    quiet(&ns);
    let (up, peer) = (format!("{dev}0"), format!("{dev}1"));
    veth_pair(&ns, &up, &peer);
    let (mut sw, c1_s, ctl) = ns.switch(&s, &format!("{kind}:{up},mode=twin"), C1);
    let mut st = wait_fast_path(&ctl, "twin");
    let peer_mac = ns.mac(&peer);
    let mut g = gen_event(&c1_s, C1, &peer_mac, "60", "2000");
    let kinds: [(&str, &[&str]); 4] = [
        ("twin-forbidden-read", &["read", "private"]),
        ("twin-wild-write", &["write", "unmapped"]),
        ("twin-panic", &["panicked"]),
        ("twin-stuck", &["stuck"]),
    ];
    for (faults, (kind, words)) in (1u64..).zip(kinds) {
        let pid = n(&st, "/uplinks/u0/detail/driver/pid");
        let done = ctl_ok(&ctl, &["fault", "u0", kind]);
        assert_eq!(str_at(&done, "/fault"), kind);
        st = wait_status(&ctl, Duration::from_secs(10), kind, |st| {
            n(st, "/uplinks/u0/detail/twin_fault_count") == faults
                && fast_path(st) == Some("domain")
                && n(st, "/uplinks/u0/detail/driver/pid") != pid
        });
        let reported = array(&st, "/uplinks/u0/detail/twin_faults");
        let text = str_at(reported.last().expect("a twin fault"), "/fault").to_lowercase();
        for w in words {
            assert!(text.contains(w), "{kind}: reported {text:?}, not {w:?}");
        }
        assert!(sw.running(), "{kind}: the switch died");
        assert!(g.running(), "{kind}: the generator ended");
        ctl_ok(&ctl, &["mode", "u0", "twin"]);
        st = wait_fast_path(&ctl, "twin");
    }
    let before = n(&ctl_status(&ctl), "/clients/c1/tx_packets");
    ping_client(&ns, 20);
    let after = wait_status(&ctl, Duration::from_secs(5), "the echoes", |st| {
        n(st, "/clients/c1/tx_packets") >= before + 20
    });
    assert_eq!(fast_path(&after), Some("twin"));
    let sw_r = sw.stop_report();
    assert_eq!(n(&sw_r, "/uplinks/u0/detail/twin_fault_count"), 4);
    assert_eq!(n(&sw_r, "/clients/c1/connects"), 1);
}

/// A compromised AF_XDP domain attacks the twin through the memory they share:
/// while the switch runs the fast path, the domain overwrites every chunk-table
/// word (who holds each UMEM chunk, the free stack) with nonsense. The twin
/// believes none of it: a chunk the table names wrongly is never used (counted
/// as `bad_state`, reported to the domain, which asks to be restarted), the
/// switch keeps running, the client stays connected, and the next domain (a
/// fresh socket, a fresh space) carries the traffic again.
#[test]
fn a_compromised_xdp_domain_scribbling_the_shared_state_cannot_harm_the_switch() {
    compromised_domain_scribbling_the_shared_state("xdp", "pz");
}

/// The same for an AF_PACKET domain, which writes into every transmit slot's
/// status a value the kernel never writes: the twin uses no such slot (counted
/// as `bad_state`, reported; the domain asks to be restarted).
#[test]
fn a_compromised_packet_domain_scribbling_the_shared_state_cannot_harm_the_switch() {
    compromised_domain_scribbling_the_shared_state("packet", "py");
}

fn compromised_domain_scribbling_the_shared_state(kind: &str, dev: &str) {
    let _m = serial();
    let s = Scratch::new(&format!("{kind}scribble"));
    let ns = Netns::new(&format!("{kind}scribble"));
    quiet(&ns);
    let (up, peer) = (format!("{dev}0"), format!("{dev}1"));
    veth_pair(&ns, &up, &peer);
    let (mut sw, c1_s, ctl) = ns.switch(&s, &format!("{kind}:{up},mode=twin"), C1);
    let st = wait_fast_path(&ctl, "twin");
    let pid = n(&st, "/uplinks/u0/detail/driver/pid");
    let peer_mac = ns.mac(&peer);
    let mut g = gen_event(&c1_s, C1, &peer_mac, "8", "5000");
    wait_status(&ctl, Duration::from_secs(10), "c1 sending", |st| {
        n(st, "/uplinks/u0/tx_packets") > 1000
    });
    ctl_ok(&ctl, &["fault", "u0", "scribble-state"]);
    let st = wait_status(&ctl, Duration::from_secs(10), "a restart", |st| {
        outages(st).len() == 1 && fast_path(st) == Some("twin")
    });
    let reason = str_at(&outages(&st)[0], "/reason").to_string();
    assert!(reason.contains("reset"), "outage: {reason}");
    assert_ne!(n(&st, "/uplinks/u0/detail/driver/pid"), pid);
    assert_eq!(
        n(&st, "/uplinks/u0/detail/twin_fault_count"),
        0,
        "not a twin fault"
    );
    assert!(sw.running() && g.running());
    // The new domain's space carries the traffic: the peer reaches the client.
    let before = n(&st, "/clients/c1/tx_packets");
    ping_client(&ns, 20);
    wait_status(&ctl, Duration::from_secs(5), "the echoes", |st| {
        n(st, "/clients/c1/tx_packets") >= before + 20
    });
    let g = g.report(Duration::from_secs(30));
    let sw_r = sw.stop_report();
    assert_eq!(n(&sw_r, "/clients/c1/connects"), 1);
    assert!(n(&g, "/tx_packets") > 10_000);
}

/// A ring kind's domain that never answers the request to hand its fast path
/// over (injected fault `refuse-handover`) is replaced after the handover
/// timeout: the request stays pending while frames keep crossing the domain,
/// then the domain is restarted (outage "did not hand the fast path over") and
/// the new domain hands over as asked; the switch and the client go on.
#[test]
fn a_packet_domain_that_keeps_its_fast_path_is_replaced_after_the_timeout() {
    domain_that_keeps_its_fast_path_is_replaced("packet", "ph");
}

/// The same for an AF_XDP domain.
#[test]
fn an_xdp_domain_that_keeps_its_fast_path_is_replaced_after_the_timeout() {
    domain_that_keeps_its_fast_path_is_replaced("xdp", "pw");
}

fn domain_that_keeps_its_fast_path_is_replaced(kind: &str, dev: &str) {
    let _m = serial();
    let s = Scratch::new(&format!("{kind}refuse"));
    let ns = Netns::new(&format!("{kind}refuse"));
    quiet(&ns);
    let (up, peer) = (format!("{dev}0"), format!("{dev}1"));
    veth_pair(&ns, &up, &peer);
    let (mut sw, c1_s, ctl) = ns.switch(&s, &format!("{kind}:{up},mode=domain"), C1);
    let pid = wait_domain(&ctl, 0);
    let mut g = gen_event(&c1_s, C1, &ns.mac(&peer), "20", "2000");
    ctl_ok(&ctl, &["fault", "u0", "refuse-handover"]);
    // The domain takes the fault within a loop round; the request comes after.
    std::thread::sleep(Duration::from_millis(200));
    let asked = std::time::Instant::now();
    ctl_ok(&ctl, &["mode", "u0", "twin"]);
    let pending = wait_status(&ctl, Duration::from_secs(5), "handing over", |st| {
        fast_path(st) == Some("handing-over")
    });
    // Frames keep crossing the domain while the request is pending (50 frames
    // take 25 ms at this rate).
    let before = n(&pending, "/uplinks/u0/tx_packets");
    let moving = wait_status(&ctl, Duration::from_secs(5), "frames while pending", |st| {
        n(st, "/uplinks/u0/tx_packets") > before + 50
    });
    assert_eq!(fast_path(&moving), Some("handing-over"), "{moving}");
    assert!(asked.elapsed() < HANDOVER_TIMEOUT, "too slow to tell");
    let st = wait_status(&ctl, Duration::from_secs(10), "a new domain", |st| {
        outages(st).len() == 1 && fast_path(st) == Some("twin")
    });
    assert!(
        asked.elapsed() >= HANDOVER_TIMEOUT,
        "replaced after {:?}",
        asked.elapsed()
    );
    let why = str_at(&outages(&st)[0], "/reason").to_string();
    assert!(
        why.contains("did not hand the fast path over"),
        "outage reason {why:?}"
    );
    assert_ne!(n(&st, "/uplinks/u0/detail/driver/pid"), pid);
    assert!(sw.running() && g.running());
    // The twin carries the traffic: the peer reaches the client.
    let c1_before = n(&st, "/clients/c1/tx_packets");
    ping_client(&ns, 20);
    wait_status(&ctl, Duration::from_secs(5), "the echoes", |st| {
        n(st, "/clients/c1/tx_packets") >= c1_before + 20
    });
    let _ = g.report(Duration::from_secs(30));
    let sw_r = sw.stop_report();
    assert_eq!(n(&sw_r, "/clients/c1/connects"), 1);
    assert_eq!(n(&sw_r, "/uplinks/u0/detail/twin_fault_count"), 0);
}

/// `switch::port::uplink::HANDOVER_TIMEOUT`.
const HANDOVER_TIMEOUT: Duration = Duration::from_secs(1);

/// `count` UDP datagrams from the peer's stack to the client, each from a socket
/// of its own (bash's `/dev/udp`): each a flow of its own, by source port.
fn udp_flows(ns: &Netns, count: u32) {
    let script = format!("for i in $(seq {count}); do echo x > /dev/udp/{C1_IP}/7; done");
    let out = ns
        .command("bash")
        .args(["-c", &script])
        .output()
        .expect("run bash");
    assert!(out.status.success(), "{out:?}");
}

/// Queue `q`'s part of u0's report.
fn queue(st: &Value, q: usize) -> &Value {
    &st["uplinks"]["u0"]["detail"]["queues"][q]
}

#[test]
fn a_packet_uplink_with_two_queues_shares_the_wire_in_domain_mode() {
    queues_share_the_wire_and_fail_alone("packet", "domain");
}

#[test]
fn a_packet_uplink_with_two_queues_shares_the_wire_in_twin_mode() {
    queues_share_the_wire_and_fail_alone("packet", "twin");
}

#[test]
fn an_xdp_uplink_with_two_queues_shares_the_wire_in_domain_mode() {
    queues_share_the_wire_and_fail_alone("xdp", "domain");
}

#[test]
fn an_xdp_uplink_with_two_queues_shares_the_wire_in_twin_mode() {
    queues_share_the_wire_and_fail_alone("xdp", "twin");
}

/// A `kind` uplink with two queues (`queues=2`) on `pq0` in `mode`: a domain
/// (and a fast path) per queue. For `packet:` the queues' sockets are one
/// fanout group; for `xdp:` each socket is on one of the veth's two receive
/// queues, behind one program. The peer sends datagrams of many flows to the
/// client: each reaches one queue (the uplink counts exactly what pq0 received:
/// two sockets outside a group would each get every frame, twice the count),
/// and both queues get some. Queue 1's domain is killed while the client sends:
/// queue 0 keeps its domain, queue 1 gets a new one with a socket that joins
/// the same group (or map), and again every frame crosses once.
fn queues_share_the_wire_and_fail_alone(kind: &str, mode: &str) {
    let _m = serial();
    let tag = format!("q{kind}{mode}");
    let s = Scratch::new(&tag);
    let ns = Netns::new(&tag);
    quiet(&ns);
    // Two queues each way: the peer's transmit queue (by its flow hash) is
    // pq0's receive queue.
    ip(&[
        "-n",
        &ns.0,
        "link",
        "add",
        "pq0",
        "numtxqueues",
        "2",
        "numrxqueues",
        "2",
        "type",
        "veth",
        "peer",
        "name",
        "pq1",
        "numtxqueues",
        "2",
        "numrxqueues",
        "2",
    ]);
    ip(&["-n", &ns.0, "link", "set", "pq0", "up"]);
    ip(&["-n", &ns.0, "addr", "add", "10.79.0.1/24", "dev", "pq1"]);
    ip(&["-n", &ns.0, "link", "set", "pq1", "up"]);
    ip(&[
        "-n", &ns.0, "neigh", "add", C1_IP, "lladdr", C1, "dev", "pq1",
    ]);
    // In generic mode the veth hands every frame to the program as queue 0's;
    // in its driver (native mode) each frame as the receive queue it is on.
    let native = if kind == "xdp" {
        ",xdp-mode=native"
    } else {
        ""
    };
    let (mut sw, c1_s, ctl) =
        ns.switch(&s, &format!("{kind}:pq0,queues=2,mode={mode}{native}"), C1);
    let ready = |st: &Value| {
        (0..2).all(|q| {
            queue(st, q)["connected"] == Value::Bool(true)
                && maybe_str(queue(st, q), "/driver/fast_path") == Some(mode)
        })
    };
    let st0 = wait_status(&ctl, Duration::from_secs(20), "both queues up", ready);
    let group = st0.pointer("/uplinks/u0/detail/fanout_group").cloned();
    assert_eq!(group.is_some(), kind == "packet", "a fanout group: {st0}");
    let pid = |st: &Value, q: usize| n(queue(st, q), "/driver/pid");
    let (q0, q1) = (pid(&st0, 0), pid(&st0, 1));
    assert_ne!(q0, q1, "a domain each");
    let received = |st: &Value, q: usize| n(queue(st, q), "/rx_packets");

    let mut g = gen_event(&c1_s, C1, &ns.mac("pq1"), "5", "3000");
    wait_status(&ctl, Duration::from_secs(10), "c1 sending", |st| {
        n(st, "/uplinks/u0/tx_packets") > 1000
    });
    udp_flows(&ns, 200);
    let st1 = wait_status(&ctl, Duration::from_secs(5), "the flows reach c1", |st| {
        n(st, "/clients/c1/tx_packets") >= 200
    });
    assert!(
        received(&st1, 0) > 0 && received(&st1, 1) > 0,
        "both queues receive: {} and {}",
        received(&st1, 0),
        received(&st1, 1)
    );

    ctl_ok(&ctl, &["fault", "u0:1", "kill"]);
    let st2 = wait_status(&ctl, Duration::from_secs(20), "queue 1 back", |st| {
        ready(st) && pid(st, 1) != q1
    });
    assert_eq!(pid(&st2, 0), q0, "queue 0 kept its domain");
    assert_eq!(
        st2.pointer("/uplinks/u0/detail/fanout_group").cloned(),
        group,
        "the new socket joined the same group"
    );
    let base = [received(&st2, 0), received(&st2, 1)];
    udp_flows(&ns, 200);
    let st3 = wait_status(&ctl, Duration::from_secs(5), "the flows reach c1", |st| {
        n(st, "/clients/c1/tx_packets") >= 400
    });
    assert!(
        received(&st3, 0) > base[0] && received(&st3, 1) > base[1],
        "both queues receive again: {st3}"
    );
    let g = g.report(Duration::from_secs(30));
    std::thread::sleep(Duration::from_millis(300));
    let (up_tx, up_rx) = (ns.stat("pq0", "tx_packets"), ns.stat("pq0", "rx_packets"));
    let (peer_rx, peer_tx) = (ns.stat("pq1", "rx_packets"), ns.stat("pq1", "tx_packets"));
    let st = ctl_status(&ctl);
    let sw_r = sw.stop_report();
    eprintln!("gen {g}\nswitch {sw_r}\npq0 tx {up_tx} rx {up_rx}, pq1 rx {peer_rx} tx {peer_tx}");

    assert_eq!(
        n(&sw_r, "/uplinks/u0/connects"),
        3,
        "two queues, one restart"
    );
    assert_eq!(n(&sw_r, "/uplinks/u0/disconnects"), 1);
    assert_eq!(
        array(queue(&st, 0), "/outages").len(),
        0,
        "queue 0: no outage"
    );
    assert_eq!(array(queue(&st, 1), "/outages").len(), 1, "queue 1: one");
    // The wire, and pq1 -> pq0 -> queues -> c1: each datagram once.
    assert_eq!(up_tx, peer_rx, "pq0 -> pq1");
    assert_eq!(peer_tx, up_rx, "pq1 -> pq0");
    assert_eq!(peer_tx, 400, "pq1 sent the 400 datagrams and nothing else");
    assert_eq!(
        n(&sw_r, "/uplinks/u0/rx_packets") + domain_drops(&sw_r),
        up_rx,
        "every frame pq0 received reached the switch once, or a domain counted it"
    );
    assert_eq!(n(&g, "/rx_packets"), n(&sw_r, "/clients/c1/tx_packets"));
    // c1 -> switch -> a queue -> pq0: to the uplink or counted; out of pq0 or
    // counted by a domain, or lost in the killed one.
    let sent = n(&g, "/tx_packets");
    assert_eq!(n(&sw_r, "/clients/c1/rx_packets"), sent);
    let c1_d = &sw_r["clients"]["c1"]["drops"];
    assert_eq!(
        n(&sw_r, "/uplinks/u0/tx_packets")
            + n(c1_d, "/uplink_down")
            + n(c1_d, "/no_destination")
            + n(&sw_r, "/uplinks/u0/drops/uplink_ring_full"),
        sent,
        "c1's frames: to the uplink or counted"
    );
    let lost_in_kill: u64 = array(queue(&st, 1), "/outages")
        .iter()
        .map(|o| n(o, "/frames_in_flight_lost"))
        .sum();
    let to_wire = n(&sw_r, "/uplinks/u0/tx_packets");
    let accounted = up_tx + domain_drops(&sw_r);
    assert!(
        accounted <= to_wire && to_wire <= accounted + lost_in_kill,
        "pq0 sent every frame the uplink took, or one is counted: pq0 {up_tx} + \
         domain drops {} + lost in the kill {lost_in_kill}, uplink {to_wire}",
        domain_drops(&sw_r)
    );
}
