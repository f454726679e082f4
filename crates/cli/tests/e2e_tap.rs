//! A TAP uplink (`--uplink u0=tap:IFNAME`): the switch runs in a network namespace
//! the test creates, opens the TAP device there, and hands it to the uplink's
//! driver domain; the kernel's IPv4 stack in that namespace is the network the
//! uplink reaches. A generated client sends to the device's address and the kernel
//! pings the client; every counter agrees hop by hop with the kernel's own
//! interface statistics, exactly. The domain is killed during traffic and
//! restarted with the same device (the switch holds it), and the kernel's traffic
//! comes through the new domain. The uplink follows its device: link down (writes
//! counted as `kernel_link_down`) and up, deleted and created again. A compromised
//! domain's ioctl on the device gets it killed by its sandbox, the device as the
//! host configured it. Two switches in two namespaces reach each other over a
//! VXLAN overlay (each TAP bridged with a VXLAN device over a veth underlay): the
//! multi-host case, counted exactly at every hop.
//!
//! Needs root, `ip` (iproute2) and `ping` (iputils-ping); scripts/setup-host.sh
//! installs both.

mod common;

use std::process::Command;
use std::time::Duration;

use common::*;
use serde_json::Value;

const C1: &str = "02:00:00:00:00:01";
const C1_IP: &str = "10.78.0.2";

/// The switch, in `ns`, with client c1 and the TAP uplink u0 on device `dev`.
fn tap_switch(s: &Scratch, ns: &Netns, dev: &str) -> (Proc, String, String) {
    ns.switch(s, &format!("tap:{dev}"), C1)
}

/// `ping` in `ns` to the client: `count` echo requests, 10 ms apart.
fn ping_client(ns: &Netns, count: u32) {
    ns.ping(C1_IP, count);
}

/// Drops that the uplink's domain counted (its rings and the TAP device).
fn domain_drops(sw_r: &Value) -> u64 {
    [
        "domain_nic_tx_ring_full",
        "domain_from_nic_ring_full",
        "domain_from_nic_too_big",
        "kernel_too_short",
        "kernel_too_long",
        "kernel_bad_header",
        "kernel_link_down",
    ]
    .iter()
    .map(|k| n(sw_r, &format!("/uplinks/u0/drops/{k}")))
    .sum()
}

/// What a TAP domain's descriptors above stdio may be: the device, the exchange
/// region, the doorbells, its epoll set. No driver region, no socket.
const TAP_DOMAIN_FDS: &[&str] = &[
    "/dev/net/tun",
    "anon_inode:[eventfd]",
    "anon_inode:[eventpoll]",
    "/memfd:twin-xchg-u0 ",
];

/// Every process under the switch (the domain's reaper and worker) holds only
/// descriptors of [`TAP_DOMAIN_FDS`] (at most the two doorbells as eventfds) and
/// one end of the sandbox's pipe between reaper and worker; one of them holds the
/// TAP device.
fn assert_domain_holds_only_its_descriptors(switch: u32) {
    let procs = descendants(switch);
    assert_eq!(procs.len(), 2, "the domain's reaper and worker: {procs:?}");
    let mut tap_held = false;
    for pid in procs {
        let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
            continue;
        };
        let (mut pipes, mut eventfds) = (0, 0);
        for e in dir.flatten() {
            let fd: u32 = e.file_name().to_string_lossy().parse().unwrap_or(0);
            if fd <= 2 {
                continue;
            }
            let target = std::fs::read_link(e.path())
                .map(|t| t.to_string_lossy().into_owned())
                .unwrap_or_default();
            tap_held |= target == "/dev/net/tun";
            pipes += usize::from(target.starts_with("pipe:["));
            eventfds += usize::from(target == "anon_inode:[eventfd]");
            assert!(
                target.starts_with("pipe:[")
                    || TAP_DOMAIN_FDS.iter().any(|a| target.starts_with(a)),
                "driver domain process {pid} holds fd {fd} -> {target}"
            );
        }
        assert!(pipes <= 1, "process {pid} holds {pipes} pipes");
        assert!(eventfds <= 2, "process {pid} holds {eventfds} eventfds");
    }
    assert!(tap_held, "no domain process holds the TAP device");
}

#[test]
fn a_tap_uplink_reaches_the_kernel_and_survives_its_domain_being_killed() {
    let _m = serial();
    let s = Scratch::new("tap");
    let ns = Netns::new("tap");
    let dev = format!("twt{}", std::process::id() % 100_000);
    let (mut sw, c1_s, ctl) = tap_switch(&s, &ns, &dev);
    let pid0 = wait_domain(&ctl, 0);
    // The device the switch created, configured as the host would: an address,
    // up, and the client's address known (no ARP: the client is a generator).
    ip(&["-n", &ns.0, "addr", "add", "10.78.0.1/24", "dev", &dev]);
    ip(&["-n", &ns.0, "link", "set", &dev, "up"]);
    ip(&[
        "-n", &ns.0, "neigh", "add", C1_IP, "lladdr", C1, "dev", &dev,
    ]);
    let dev_mac = ns.mac(&dev);

    // The client sends to the device for 4 s; the kernel pings the client before
    // and after its domain is killed.
    let mut g = gen_event(&c1_s, C1, &dev_mac, "4", "5000");
    wait_status(&ctl, Duration::from_secs(10), "c1 sending", |st| {
        n(st, "/clients/c1/rx_packets") > 1000
    });
    ping_client(&ns, 50);
    ctl_ok(&ctl, &["fault", "u0", "kill"]);
    let pid1 = wait_domain(&ctl, pid0);
    assert_ne!(pid1, pid0);
    ping_client(&ns, 50);
    assert_domain_holds_only_its_descriptors(sw.pid());
    let g = g.report(Duration::from_secs(30));
    // Everything queued has crossed before the kernel's counters are read.
    std::thread::sleep(Duration::from_millis(300));
    let k_rx = ns.stat(&dev, "rx_packets");
    let k_tx = ns.stat(&dev, "tx_packets");
    let k_rx_dropped = ns.stat(&dev, "rx_dropped");
    let st = ctl_status(&ctl);
    let sw_r = sw.stop_report();
    eprintln!("gen {g}\nswitch {sw_r}\nkernel rx {k_rx} tx {k_tx} rx_dropped {k_rx_dropped}");

    // One outage: the kill.
    assert_eq!(n(&sw_r, "/uplinks/u0/disconnects"), 1);
    assert_eq!(n(&sw_r, "/uplinks/u0/connects"), 2);
    assert_eq!(outages(&st).len(), 1, "{st}");
    // Client -> switch -> domain -> kernel: every frame c1 sent went to the uplink
    // or is counted (the outage: `uplink_down`; a full ring); every frame the
    // uplink took reached the kernel or is counted by a domain, or was lost in the
    // killed domain's rings (the outage's `frames_in_flight_lost`).
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
    // The killed domain may have written frames of its last batch to the kernel
    // before it published that it took them: the outage counts those as lost in
    // flight too, so its count is an upper bound, over by at most one batch (64).
    let to_tap = n(&sw_r, "/uplinks/u0/tx_packets");
    let accounted = k_rx + domain_drops(&sw_r);
    assert!(
        accounted <= to_tap
            && to_tap <= accounted + lost_in_kill
            && accounted + lost_in_kill <= to_tap + 64,
        "the kernel received every frame the uplink took, or one is counted: \
         kernel {k_rx} + domain drops {} + lost in the kill {lost_in_kill}, uplink {to_tap}",
        domain_drops(&sw_r)
    );
    // The generator's frames are no protocol the kernel's stack handles: it
    // counts each as received, then as dropped (no handler), and nothing else.
    assert_eq!(k_rx_dropped, k_rx);
    // Kernel -> domain -> switch -> client: the kernel counts a frame as sent when
    // the domain reads it; each went on to c1 or is counted. (A frame read by a
    // domain that is killed before it publishes the slot would be lost uncounted;
    // none is in flight at this kill: the first pings are over.)
    assert!(
        k_tx >= 100,
        "the kernel sent {k_tx} frames (100 echo requests)"
    );
    assert_eq!(
        n(&sw_r, "/uplinks/u0/rx_packets") + domain_drops(&sw_r),
        k_tx,
        "every frame the kernel sent reached the switch, or a domain counted it"
    );
    let u0_d = &sw_r["uplinks"]["u0"]["drops"];
    assert_eq!(
        n(&sw_r, "/clients/c1/tx_packets")
            + n(u0_d, "/destination_down")
            + n(u0_d, "/no_destination"),
        n(&sw_r, "/uplinks/u0/rx_packets"),
        "the kernel's frames: to c1, or counted while c1 was not there (the \
         kernel speaks as soon as the device is up, before the client connects)"
    );
    assert_eq!(n(&g, "/rx_packets"), n(&sw_r, "/clients/c1/tx_packets"));
    // The echo requests of both pings came through, the second after the kill.
    assert!(
        n(&g, "/rx_packets") >= 100,
        "c1 got {} frames from the kernel",
        n(&g, "/rx_packets")
    );
    // Nothing malformed either way.
    for k in [
        "kernel_too_short",
        "kernel_too_long",
        "kernel_bad_header",
        "kernel_link_down",
    ] {
        assert_eq!(n(u0_d, &format!("/{k}")), 0, "{k}");
    }
}

/// Configures the device as the host would (address, up, the client's address).
fn configure(ns: &Netns, dev: &str) {
    ip(&["-n", &ns.0, "addr", "add", "10.78.0.1/24", "dev", dev]);
    ip(&["-n", &ns.0, "link", "set", dev, "up"]);
    ip(&["-n", &ns.0, "neigh", "add", C1_IP, "lladdr", C1, "dev", dev]);
}

#[test]
fn a_tap_uplink_follows_its_link_and_a_deleted_device() {
    let _m = serial();
    let s = Scratch::new("taplink");
    let ns = Netns::new("taplink");
    let dev = format!("twk{}", std::process::id() % 100_000);
    let (mut sw, c1_s, ctl) = tap_switch(&s, &ns, &dev);
    let pid0 = wait_domain(&ctl, 0);
    configure(&ns, &dev);
    let dev_mac = ns.mac(&dev);
    let link = |st: &Value| st.pointer("/uplinks/u0/detail/link/up").cloned();
    wait_status(
        &ctl,
        Duration::from_secs(5),
        "link up in the status",
        |st| link(st) == Some(Value::Bool(true)),
    );
    let mut g = gen_event(&c1_s, C1, &dev_mac, "8", "2000");
    wait_status(
        &ctl,
        Duration::from_secs(10),
        "frames to the kernel",
        |st| n(st, "/uplinks/u0/tx_packets") > 500,
    );

    // Down: the status says so, the kernel takes nothing, and the domain counts
    // what it could not write as `kernel_link_down`.
    ip(&["-n", &ns.0, "link", "set", &dev, "down"]);
    let down = wait_status(
        &ctl,
        Duration::from_secs(5),
        "link down in the status",
        |st| link(st) == Some(Value::Bool(false)),
    );
    let k_rx_down = ns.stat(&dev, "rx_packets");
    let refused = wait_status(&ctl, Duration::from_secs(5), "writes refused", |st| {
        n(st, "/uplinks/u0/drops/kernel_link_down")
            > n(&down, "/uplinks/u0/drops/kernel_link_down") + 500
    });
    assert_eq!(
        ns.stat(&dev, "rx_packets"),
        k_rx_down,
        "the kernel took frames while down"
    );
    // Up again: frames reach the kernel again, through the same domain (the
    // kernel's own counter is the condition: the uplink's grows either way).
    let _ = refused;
    ip(&["-n", &ns.0, "link", "set", &dev, "up"]);
    ns.wait_stat_above(
        &dev,
        "rx_packets",
        k_rx_down + 500,
        "frames reach the kernel again",
    );
    assert_eq!(wait_domain(&ctl, 0), pid0, "the same domain throughout");

    // Deleted: the domain sees the device gone and ends; the next one gets the
    // device created again (unconfigured), which the host configures again.
    ip(&["-n", &ns.0, "link", "del", &dev]);
    let pid1 = wait_domain(&ctl, pid0);
    let st = ctl_status(&ctl);
    let o = outages(&st);
    assert_eq!(o.len(), 1, "{st}");
    assert!(
        str_at(&o[0], "/reason").contains("NIC hung up"),
        "outage reason: {}",
        o[0]
    );
    configure(&ns, &dev);
    let before = n(&ctl_status(&ctl), "/clients/c1/tx_packets");
    ping_client(&ns, 30);
    let after = wait_status(
        &ctl,
        Duration::from_secs(5),
        "the kernel's pings reach c1",
        |st| n(st, "/clients/c1/tx_packets") >= before + 30,
    );
    assert_eq!(wait_domain(&ctl, pid0), pid1, "no further restart");
    assert_eq!(n(&after, "/uplinks/u0/disconnects"), 1);
    let _ = g.stop();
    let (status, _) = sw.stop();
    assert!(status.success());
}

/// A compromised TAP domain holds the device's descriptor: it can send frames
/// through it (its job), but an ioctl on it (which could rename, re-address or
/// detach the device) is outside its sandbox's allow-list: the domain is killed
/// (SIGSYS) and restarted, and the device is as the host configured it.
#[test]
fn a_compromised_tap_domain_cannot_reconfigure_its_device() {
    let _m = serial();
    let s = Scratch::new("tapioctl");
    let ns = Netns::new("tapioctl");
    let dev = format!("twi{}", std::process::id() % 100_000);
    let (mut sw, c1_s, ctl) = tap_switch(&s, &ns, &dev);
    let pid0 = wait_domain(&ctl, 0);
    configure(&ns, &dev);
    let show = || {
        let out = Command::new("ip")
            .args(["-n", &ns.0, "-o", "addr", "show", "dev", &dev])
            .output()
            .expect("run ip");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let before = show();
    assert!(before.contains("10.78.0.1/24"), "{before}");

    ctl_ok(&ctl, &["fault", "u0", "ioctl"]);
    let pid1 = wait_domain(&ctl, pid0);
    let st = ctl_status(&ctl);
    let o = outages(&st);
    assert_eq!(o.len(), 1, "{st}");
    assert!(
        str_at(&o[0], "/reason").contains("SIGSYS"),
        "the sandbox killed it: {}",
        o[0]
    );
    assert_eq!(show(), before, "the device is as the host configured it");
    assert_eq!(
        st.pointer("/uplinks/u0/detail/link/up"),
        Some(&Value::Bool(true))
    );
    // And the new domain carries the kernel's frames to the client.
    let mut g = gen_event(&c1_s, C1, &ns.mac(&dev), "3", "1000");
    wait_status(&ctl, Duration::from_secs(10), "c1 connected", |st| {
        n(st, "/clients/c1/rx_packets") > 100
    });
    let c1_before = n(&ctl_status(&ctl), "/clients/c1/tx_packets");
    ping_client(&ns, 20);
    wait_status(&ctl, Duration::from_secs(5), "the pings reach c1", |st| {
        n(st, "/clients/c1/tx_packets") >= c1_before + 20
    });
    assert_eq!(wait_domain(&ctl, pid0), pid1, "no further restart");
    let _ = g.stop();
    let (status, _) = sw.stop();
    assert!(status.success());
}

#[test]
fn a_tap_uplink_refuses_modes_it_cannot_run() {
    let _m = serial();
    let s = Scratch::new("tapmode");
    let ns = Netns::new("tapmode");
    let dev = format!("twm{}", std::process::id() % 100_000);
    // At start: exit status 2 with the reason.
    let mut cmd = ns.command(env!("CARGO_BIN_EXE_twin"));
    cmd.args([
        "switch",
        "--client",
        &format!("c1={}", s.path("c1.sock")),
        "--uplink",
        &format!("u0=tap:{dev},mode=twin"),
    ]);
    let out = cmd.output().expect("run twin switch");
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("domain mode only"), "{err}");
    // At run time: refused, and the uplink keeps running in domain mode.
    let (mut sw, _c1_s, ctl) = tap_switch(&s, &ns, &dev);
    wait_domain(&ctl, 0);
    let (kind, msg) = ctl_err(&ctl, &["mode", "u0", "twin"]);
    assert_eq!(kind, "rejected", "{msg}");
    assert!(msg.contains("domain mode only"), "{msg}");
    assert_eq!(
        fast_path(&ctl_status(&ctl)),
        Some("domain"),
        "still in domain mode"
    );
    let (status, _) = sw.stop();
    assert!(status.success());
}

#[test]
fn two_switches_reach_each_other_over_a_vxlan_overlay() {
    let _m = serial();
    const A1: &str = "02:00:00:00:0a:01";
    const B1: &str = "02:00:00:00:0b:01";
    let (na, nb) = (Netns::new("ova"), Netns::new("ovb"));
    quiet(&na);
    quiet(&nb);
    // The underlay: a veth pair between the two "hosts".
    let id = std::process::id() % 100_000;
    let (va, vb) = (format!("twa{id}"), format!("twb{id}"));
    ip(&[
        "link", "add", &va, "netns", &na.0, "type", "veth", "peer", "name", &vb, "netns", &nb.0,
    ]);
    ip(&["-n", &na.0, "addr", "add", "192.168.77.1/24", "dev", &va]);
    ip(&["-n", &nb.0, "addr", "add", "192.168.77.2/24", "dev", &vb]);
    // Each host: its switch with a TAP uplink, the TAP bridged with a VXLAN device
    // (VNI 42) to the other host.
    let (sa, sb) = (Scratch::new("ovl-a"), Scratch::new("ovl-b"));
    let (ta, tb) = (format!("twta{id}"), format!("twtb{id}"));
    let (mut swa, a_s, ctl_a) = na.switch(&sa, &format!("tap:{ta}"), A1);
    let (mut swb, b_s, ctl_b) = nb.switch(&sb, &format!("tap:{tb}"), B1);
    wait_domain(&ctl_a, 0);
    wait_domain(&ctl_b, 0);
    for (ns, veth, tap, local, remote) in [
        (&na, &va, &ta, "192.168.77.1", "192.168.77.2"),
        (&nb, &vb, &tb, "192.168.77.2", "192.168.77.1"),
    ] {
        let n = ns.0.as_str();
        ip(&["-n", n, "link", "set", veth, "up"]);
        ip(&[
            "-n", n, "link", "add", "vx42", "type", "vxlan", "id", "42", "local", local, "remote",
            remote, "dstport", "4789", "dev", veth,
        ]);
        ip(&["-n", n, "link", "add", "br0", "type", "bridge"]);
        ip(&["-n", n, "link", "set", "vx42", "master", "br0"]);
        ip(&["-n", n, "link", "set", tap, "master", "br0"]);
        for dev in ["vx42", "br0", tap.as_str()] {
            ip(&["-n", n, "link", "set", dev, "up"]);
        }
    }

    // The bridges speak once as they come up (IGMPv3 reports, two each, within a
    // second): the traffic is counted from a baseline taken after that.
    std::thread::sleep(Duration::from_secs(3));
    let counters = || {
        let k = |ns: &Netns, dev: &str, c: &str| ns.stat(dev, c);
        [
            k(&na, &ta, "rx_packets"),
            k(&na, &ta, "tx_packets"),
            k(&nb, &tb, "rx_packets"),
            k(&nb, &tb, "tx_packets"),
            k(&na, "vx42", "tx_packets") + k(&nb, "vx42", "tx_packets"),
            k(&na, "br0", "tx_packets") + k(&nb, "br0", "tx_packets"),
        ]
    };
    let k0 = counters();
    let (sa0, sb0) = (ctl_status(&ctl_a), ctl_status(&ctl_b));

    // Each client sends to the other for 3 s.
    let mut ga = gen_event_with(&a_s, A1, B1, "3", "2000", &["--id", "1"]);
    let mut gb = gen_event_with(&b_s, B1, A1, "3", "2000", &["--id", "2"]);
    let ga = ga.report(Duration::from_secs(30));
    let gb = gb.report(Duration::from_secs(30));
    std::thread::sleep(Duration::from_millis(300));
    let k1 = counters();
    let [ka_rx, ka_tx, kb_rx, kb_tx, vx_tx, br_tx] = std::array::from_fn(|i| k1[i] - k0[i]);
    let ra = swa.stop_report();
    let rb = swb.stop_report();
    eprintln!("gen a {ga}\ngen b {gb}\nswitch a {ra}\nswitch b {rb}");
    eprintln!(
        "in the window: tap a rx {ka_rx} tx {ka_tx}; tap b rx {kb_rx} tx {kb_tx}; \
         vxlan tx {vx_tx}; bridges' own tx {br_tx}"
    );
    assert_eq!(
        br_tx, 0,
        "the bridges sent frames of their own during the traffic"
    );
    let d = |r: &Value, r0: &Value, p: &str| n(r, p) - n(r0, p);

    // Each way, hop by hop: client -> switch -> its TAP -> bridge -> VXLAN -> the
    // other host's bridge -> its TAP -> switch -> client. The first frames of each
    // way meet destinations nobody has learned yet and are flooded, which here
    // takes them the same way. Nothing is dropped anywhere.
    for (g, r, r0, k_rx, other_k_tx, other_r, other_r0, other_g) in [
        (&ga, &ra, &sa0, ka_rx, kb_tx, &rb, &sb0, &gb),
        (&gb, &rb, &sb0, kb_rx, ka_tx, &ra, &sa0, &ga),
    ] {
        let sent = n(g, "/tx_packets");
        assert!(sent > 5_000, "a generator sent {sent}");
        assert_eq!(d(r, r0, "/clients/c1/rx_packets"), sent);
        assert_eq!(d(r, r0, "/uplinks/u0/tx_packets"), sent, "to the TAP");
        assert_eq!(k_rx, sent, "the kernel took every frame from the TAP");
        assert_eq!(other_k_tx, sent, "and delivered each to the other TAP");
        assert_eq!(d(other_r, other_r0, "/uplinks/u0/rx_packets"), sent);
        assert_eq!(d(other_r, other_r0, "/clients/c1/tx_packets"), sent);
        assert_eq!(
            n(other_g, "/rx_packets"),
            sent,
            "the other client got them all"
        );
        assert_eq!(
            n(other_g, "/rx_foreign"),
            sent,
            "as another generator's frames"
        );
        assert_eq!(
            drops(r, "/clients/c1/drops"),
            drops(r0, "/clients/c1/drops"),
            "{}",
            r["drops"]
        );
    }
    assert_eq!(
        vx_tx,
        n(&ga, "/tx_packets") + n(&gb, "/tx_packets"),
        "every frame crossed the overlay once"
    );
}
