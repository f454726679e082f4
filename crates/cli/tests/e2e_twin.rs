//! Uplinks in `twin` mode, and live moves of the fast path between `inline`,
//! `domain` and `twin`.
//!
//! * The twin moves frames over the driver domain's own region (both processes map
//!   it), with counters that add up, against the built-in NIC and DPDK net_vhost.
//! * The fast path moves while traffic flows, two dozen times, without reordering
//!   or losing a frame uncounted, and without an outage.
//! * Every injected twin fault (forbidden read, wild write, panic, stuck) is
//!   contained: the twin is disabled, the fault reported, the uplink falls back to a
//!   fresh driver domain, and the switch and its clients carry on.
//! * `inline`, `domain` and `twin` deliver the very same frames in the same order
//!   (order-sensitive digests at the NIC and at the generator).

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;
use traffic_gen::{FrameDigest, GenFrame};
use twin_wire::MacAddr;

const C1: &str = "02:00:00:00:00:01";
const C2: &str = "02:00:00:00:00:02";
const OUTSIDE: &str = "02:00:00:00:00:fe";
/// The name of the driver region's memfd (`driver_domain::launch`), as `/proc/PID/maps`
/// shows it.
const REGION: &str = "twin-dd-u0";

/// A switch with one client port per `(name, mac)`, uplink `u0` to `nic` in `mode`,
/// event-driven, with a control socket. Returns it, the client sockets and the
/// control socket.
fn twin_switch(
    s: &Scratch,
    nic: &str,
    mode: &str,
    clients: &[(&str, &str)],
) -> (Proc, Vec<String>, String) {
    let ctl = s.path("ctl.sock");
    let socks: Vec<String> = clients
        .iter()
        .map(|(name, _)| s.path(&format!("{name}.sock")))
        .collect();
    let specs: Vec<String> = clients
        .iter()
        .zip(&socks)
        .map(|((name, mac), sock)| format!("{name}={sock},mac={mac}"))
        .collect();
    let up = format!("u0={nic},mode={mode}");
    let mut args = vec!["switch"];
    for c in &specs {
        args.extend(["--client", c.as_str()]);
    }
    args.extend([
        "--uplink",
        up.as_str(),
        "--poll",
        "event",
        "--control",
        ctl.as_str(),
        "--fault-injection",
    ]);
    let sw = Proc::twin("switch", &args);
    for sock in &socks {
        wait_for_path(sock, Duration::from_secs(10));
    }
    wait_for_path(&ctl, Duration::from_secs(10));
    (sw, socks, ctl)
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

/// Asks the switch to move u0's fast path to `mode`; the answer must be ok.
fn set_mode(ctl: &str, mode: &str) {
    let done = ctl_ok(ctl, &["mode", "u0", mode]);
    assert_eq!(str_at(&done, "/mode"), mode, "{done}");
}

/// Every drop anyone counted: the switch (all ports, devices and driver domains)
/// and the built-in NIC (both directions).
fn counted_drops(sw: &Value, nic: &Value) -> u64 {
    drops(sw, "/drops") + drops(nic, "/rx_drops") + drops(nic, "/tx_drops")
}

/// The drop counters under `pointer` in two kinds: a full ring or no receive
/// buffers (a peer too slow for a moment, which CPU contention alone can cause),
/// and every other reason.
fn split_drops(v: &Value, pointer: &str) -> (u64, u64) {
    let all = v
        .pointer(pointer)
        .and_then(Value::as_object)
        .unwrap_or_else(|| panic!("no {pointer} in {v}"));
    let (mut full, mut other) = (0, 0);
    for (k, c) in all {
        let c = c.as_u64().expect("a count");
        if k.ends_with("ring_full") || k == "no_buffers" {
            full += c;
        } else {
            other += c;
        }
    }
    (full, other)
}

/// [`split_drops`] over the switch (all ports, devices and driver domains) and the
/// built-in NIC (both directions).
fn drops_by_kind(sw: &Value, nic: &Value) -> (u64, u64) {
    [
        split_drops(sw, "/drops"),
        split_drops(nic, "/rx_drops"),
        split_drops(nic, "/tx_drops"),
    ]
    .iter()
    .fold((0, 0), |(f, o), (f2, o2)| (f + f2, o + o2))
}

/// The frames `twin gen --size 64 --id ID --src-mac SRC --dst-mac DST` sends, as
/// the receiver sees them when the addresses are `dst`/`src`: the digest of the
/// first `count`.
fn expected_digest(src: &str, dst: &str, id: u32, count: u64) -> String {
    let src: MacAddr = src.parse().expect("mac");
    let dst: MacAddr = dst.parse().expect("mac");
    let mut f = GenFrame::new(64, src, dst, id).expect("frame");
    let mut d = FrameDigest::new();
    for seq in 0..count {
        d.frame(f.with_seq(seq));
    }
    d.hex()
}

fn switch_instance_stat(sw: &Value, name: &str) -> u64 {
    n(
        sw,
        &format!("/uplinks/u0/detail/driver/switch_instance_stats/{name}"),
    )
}

#[test]
fn twin_mode_moves_frames_with_the_driver_state_in_the_domain_region() {
    let _m = serial();
    let s = Scratch::new("twin");
    let nic_s = s.path("nic.sock");
    let mut nic = nic_reflect(&nic_s, false);
    let (mut sw, socks, ctl) = twin_switch(&s, &nic_s, "twin", &[("c1", C1)]);
    let st = wait_fast_path(&ctl, "twin");

    // The switch's child is the domain's reaper; the driver runs below it. Both the
    // switch (the twin) and the domain's worker map the one driver region.
    let reaper = driver_pid(&st).expect("driver pid") as u32;
    assert!(
        sw.children().contains(&reaper),
        "driver pid {reaper} is not a child of the switch ({:?})",
        sw.children()
    );
    let below = descendants(reaper);
    assert!(!below.is_empty(), "the reaper {reaper} has no worker");
    assert!(
        maps_contain(sw.pid(), REGION),
        "the switch does not map {REGION}"
    );
    assert!(
        below.iter().any(|p| maps_contain(*p, REGION)),
        "no process below the reaper ({below:?}) maps {REGION}"
    );
    assert_eq!(
        n(&st, "/uplinks/u0/detail/driver/svm/faults"),
        0,
        "svm faults before traffic: {st}"
    );
    // The region exists in every mode; what makes this the twin is that the
    // switch reaches it through the SVM: the driver's ranges are mapped, and every
    // access is checked (below).
    assert!(n(&st, "/uplinks/u0/detail/driver/svm/ranges") > 0, "{st}");
    let checks_before = n(&st, "/uplinks/u0/detail/driver/svm/checks");

    let g = gen_event(&socks[0], C1, OUTSIDE, "2", "50000").report(Duration::from_secs(30));
    let live = ctl_status(&ctl);
    assert_eq!(
        fast_path(&live),
        Some("twin"),
        "still twin after the run: {live}"
    );
    let sw_r = sw.stop_report();
    let nic_r = nic.stop_report();
    eprintln!("gen {g}\nswitch {sw_r}\nnic {nic_r}");

    let sent = n(&g, "/tx_packets");
    let got = n(&g, "/rx_packets");
    assert!(sent > 50_000, "sent only {sent}");
    assert_eq!(n(&g, "/rx_out_of_order"), 0);
    assert_eq!(n(&g, "/rx_own_swapped"), got);
    // Every frame came back or was counted where it was dropped.
    assert_eq!(got + counted_drops(&sw_r, &nic_r), sent);
    // Only a peer too slow for a moment may cost frames (a full ring).
    assert_eq!(
        drops_by_kind(&sw_r, &nic_r).1,
        0,
        "drops other than full rings"
    );
    assert!(got > sent * 9 / 10, "only {got} of {sent} came back");
    assert_eq!(n(&sw_r, "/clients/c1/rx_packets"), sent);
    assert_eq!(str_at(&sw_r, "/uplinks/u0/detail/driver/fast_path"), "twin");
    assert_eq!(n(&sw_r, "/uplinks/u0/detail/driver/svm/faults"), 0);
    assert_eq!(n(&sw_r, "/uplinks/u0/detail/twin_fault_count"), 0);
    // The driver's counters live in the region. No frame went anywhere before the
    // twin took over and the run is over, so: everything the twin committed, the
    // NIC took (or counted as a bad chain), and the switch queued exactly that;
    // everything the NIC gave the driver, the twin received, and the switch with it.
    let drv_tx = switch_instance_stat(&sw_r, "tx_packets");
    let drv_rx = switch_instance_stat(&sw_r, "rx_packets");
    assert_eq!(
        drv_tx,
        n(&nic_r, "/rx_packets") + drops(&nic_r, "/rx_drops"),
        "driver tx vs NIC rx"
    );
    assert_eq!(drv_tx, n(&sw_r, "/uplinks/u0/tx_packets"));
    assert_eq!(drv_rx, n(&nic_r, "/tx_packets"), "driver rx vs NIC tx");
    assert_eq!(drv_rx, n(&sw_r, "/uplinks/u0/rx_packets"));
    assert_eq!(switch_instance_stat(&sw_r, "tx_device_errors"), 0);
    assert_eq!(switch_instance_stat(&sw_r, "rx_device_errors"), 0);
    assert_eq!(switch_instance_stat(&sw_r, "driver_errors"), 0);
    assert_eq!(n(&sw_r, "/uplinks/u0/disconnects"), 0);
    // Every frame cost the twin at least two checked accesses (its descriptor and
    // its buffer), in each direction.
    let checks = n(&sw_r, "/uplinks/u0/detail/driver/svm/checks") - checks_before;
    assert!(
        checks >= 2 * (drv_tx + drv_rx),
        "{checks} SVM checks for {drv_tx} + {drv_rx} frames"
    );
}

#[test]
fn twin_mode_moves_frames_to_dpdk_net_vhost_macswap() {
    let _m = serial();
    let s = Scratch::new("twindpdk");
    let nic_s = s.path("nic.sock");
    let vdev = format!("net_vhost0,iface={nic_s},queues=1");
    let mut tp = testpmd(
        "tnic",
        0,
        &vdev,
        &["--forward-mode=macswap", "--port-topology=loop"],
    );
    wait_for_path(&nic_s, Duration::from_secs(20));
    let (mut sw, socks, ctl) = twin_switch(&s, &nic_s, "twin", &[("c1", C1)]);
    tp.wait_testpmd_forwarding(Duration::from_secs(20));
    wait_fast_path(&ctl, "twin");
    let g = gen_event(&socks[0], C1, OUTSIDE, "2", "50000").report(Duration::from_secs(30));
    let sw_r = sw.stop_report();
    let (status, out) = tp.stop();
    assert!(status.success(), "testpmd failed: {out}");
    let tps = parse_testpmd(&out, 0);
    eprintln!("gen {g}\nswitch {sw_r}\ntestpmd {tps:?}");

    let sent = n(&g, "/tx_packets");
    let got = n(&g, "/rx_packets");
    assert!(sent > 50_000, "sent only {sent}");
    assert_eq!(str_at(&sw_r, "/uplinks/u0/detail/driver/fast_path"), "twin");
    assert_eq!(n(&sw_r, "/uplinks/u0/detail/driver/svm/faults"), 0);
    assert_eq!(n(&sw_r, "/clients/c1/rx_packets"), sent);
    let drv_tx = switch_instance_stat(&sw_r, "tx_packets");
    let drv_rx = switch_instance_stat(&sw_r, "rx_packets");
    // What the switch queued, the twin committed; testpmd received it (all but what
    // was still in flight when the switch stopped) and sent each back or counted it.
    assert_eq!(drv_tx, n(&sw_r, "/uplinks/u0/tx_packets"));
    assert_testpmd_received(tps.rx_packets, drv_tx, "twin");
    assert_eq!(tps.tx_packets + tps.tx_dropped, tps.rx_packets);
    // Everything testpmd sent, the twin received and the switch took.
    assert_eq!(drv_rx, tps.tx_packets);
    assert_eq!(n(&sw_r, "/uplinks/u0/rx_packets"), drv_rx);
    // Conservation at the generator: back, or counted by the switch or testpmd, or
    // in flight to testpmd at the stop (exactly what it did not receive).
    let in_flight = drv_tx - tps.rx_packets;
    assert_eq!(
        got + drops(&sw_r, "/drops") + tps.tx_dropped + in_flight,
        sent,
        "sent {sent}, back {got}"
    );
    // Only full rings (a peer too slow for a moment) cost frames.
    assert_eq!(
        split_drops(&sw_r, "/drops").1,
        0,
        "switch drops other than full rings: {sw_r}"
    );
    assert_eq!(n(&g, "/rx_own_swapped"), got);
    assert_eq!(n(&g, "/rx_out_of_order"), 0);
}

#[test]
fn live_mode_switches_keep_order_and_lose_nothing() {
    let _m = serial();
    let s = Scratch::new("twinmodes");
    let nic_s = s.path("nic.sock");
    let mut nic = nic_reflect(&nic_s, false);
    let (mut sw, socks, ctl) = twin_switch(&s, &nic_s, "inline", &[("c1", C1)]);
    let st = wait_fast_path(&ctl, "inline");
    let changes_before = n(&st, "/uplinks/u0/detail/mode_changes");
    // 5000 frames per second: a ring (512 slots) fills only if a peer is starved
    // for 100 ms, so no frame may be dropped at all; at every switch about a
    // millisecond's frames are in flight.
    let mut g = gen_event(&socks[0], C1, OUTSIDE, "9", "5000");
    // From inline, this cycle takes every ordered pair of modes once:
    // i->t, t->d, d->t, t->i, i->d, d->i.
    const CYCLE: [&str; 6] = ["twin", "domain", "twin", "inline", "domain", "inline"];
    const ROUNDS: usize = 4;
    wait_status(&ctl, Duration::from_secs(10), "frames going round", |st| {
        n(st, "/clients/c1/tx_packets") >= 500
    });
    let mut switches = 0u64;
    for round in 0..ROUNDS {
        for mode in CYCLE {
            let t0 = Instant::now();
            set_mode(&ctl, mode);
            // Taken effect (a move to the switch waits for the domain's handover).
            wait_fast_path(&ctl, mode);
            switches += 1;
            assert!(sw.running(), "switch died at round {round}, {mode}");
            assert!(g.running(), "gen ended early (round {round}, {mode})");
            // Traffic runs on each fast path for a while (the point, not a wait).
            if let Some(rest) = Duration::from_millis(250).checked_sub(t0.elapsed()) {
                std::thread::sleep(rest);
            }
        }
    }
    // The client has been connected all along (its generator still runs).
    let live = ctl_status(&ctl);
    assert!(g.running(), "gen ended before the last check");
    assert_eq!(n(&live, "/clients/c1/connects"), 1);
    assert_eq!(n(&live, "/clients/c1/disconnects"), 0);
    let g = g.report(Duration::from_secs(30));
    let sw_r = sw.stop_report();
    let nic_r = nic.stop_report();
    eprintln!("gen {g}\nswitch {sw_r}\nnic {nic_r}");
    eprintln!(
        "mode switches {switches}, mode_changes {}, drops: switch {} nic rx {} nic tx {}",
        n(&sw_r, "/uplinks/u0/detail/mode_changes"),
        sw_r["drops"],
        nic_r["rx_drops"],
        nic_r["tx_drops"]
    );

    let sent = n(&g, "/tx_packets");
    let got = n(&g, "/rx_packets");
    assert!(sent > 40_000, "sent only {sent}");
    assert_eq!(n(&g, "/rx_out_of_order"), 0, "frames reordered");
    assert_eq!(n(&g, "/rx_own_swapped"), got);
    assert_eq!(n(&sw_r, "/clients/c1/rx_packets"), sent);
    // Nothing lost, counted or not.
    assert_eq!(counted_drops(&sw_r, &nic_r), 0, "drops");
    assert_eq!(got, sent, "frames lost");
    assert_eq!(switches, (ROUNDS * CYCLE.len()) as u64);
    // Each switch was seen to take effect, and each moved the fast path once.
    assert_eq!(
        n(&sw_r, "/uplinks/u0/detail/mode_changes") - changes_before,
        switches,
        "mode changes"
    );
    assert_eq!(str_at(&live, "/uplinks/u0/detail/mode"), "inline");
    assert!(array(&sw_r, "/uplinks/u0/detail/outages").is_empty());
    assert_eq!(n(&sw_r, "/uplinks/u0/connects"), 1);
    assert_eq!(n(&sw_r, "/uplinks/u0/disconnects"), 0);
    assert_eq!(n(&sw_r, "/clients/c1/connects"), 1);
    assert_eq!(n(&sw_r, "/uplinks/u0/detail/twin_fault_count"), 0);
}

#[test]
fn every_injected_twin_fault_is_contained() {
    let _m = serial();
    let s = Scratch::new("twinfaults");
    let nic_s = s.path("nic.sock");
    let mut nic = nic_reflect(&nic_s, false);
    let (mut sw, socks, ctl) = twin_switch(&s, &nic_s, "twin", &[("c1", C1), ("c2", C2)]);
    let mut st = wait_fast_path(&ctl, "twin");
    // Distinct generator ids: while OUTSIDE is not learned (after each restart),
    // one client's frames are flooded to the other, which must count them as
    // foreign, not as its own out of order.
    let gen = |sock: &str, src: &str, id: &str| {
        gen_event_with(sock, src, OUTSIDE, "120", "10000", &["--id", id])
    };
    let mut g1 = gen(&socks[0], C1, "1");
    let mut g2 = gen(&socks[1], C2, "2");
    // (fault, what its report must say, in lower case)
    let kinds: [(&str, &[&str]); 4] = [
        ("twin-forbidden-read", &["read", "private"]),
        ("twin-wild-write", &["write", "unmapped"]),
        ("twin-panic", &["panicked"]),
        ("twin-stuck", &["stuck"]),
    ];
    const ROUNDS: u64 = 5;
    let mut faults = 0u64;
    for (kind, words) in kinds {
        for round in 0..ROUNDS {
            let what = format!("{kind} #{round}");
            if fast_path(&st) != Some("twin") {
                st = wait_fast_path(&ctl, "twin");
            }
            let pid = driver_pid(&st).expect("driver pid");
            let done = ctl_ok(&ctl, &["fault", "u0", kind]);
            assert_eq!(str_at(&done, "/fault"), kind, "{what}");
            // Contained: reported, fallen back to a fresh driver domain.
            st = wait_status(&ctl, Duration::from_secs(10), &what, |st| {
                n(st, "/uplinks/u0/detail/twin_fault_count") > faults
                    && fast_path(st) == Some("domain")
                    && driver_pid(st).is_some_and(|p| p != pid)
            });
            faults += 1;
            assert_eq!(
                n(&st, "/uplinks/u0/detail/twin_fault_count"),
                faults,
                "{what}: one fault per injection"
            );
            assert_eq!(str_at(&st, "/uplinks/u0/detail/mode"), "domain", "{what}");
            let reported = array(&st, "/uplinks/u0/detail/twin_faults");
            let last = reported.last().expect("a reported twin fault");
            let text = str_at(last, "/fault").to_lowercase();
            for w in words {
                assert!(text.contains(w), "{what}: reported {text:?}, not {w:?}");
            }
            let outages = outages(&st);
            let reason = str_at(outages.last().expect("an outage"), "/reason");
            assert!(
                reason.starts_with("twin disabled"),
                "{what}: outage {reason:?}"
            );
            assert!(sw.running(), "{what}: the switch died");
            assert!(g1.running() && g2.running(), "{what}: a generator ended");
            // Re-arm.
            set_mode(&ctl, "twin");
        }
    }
    let st = wait_fast_path(&ctl, "twin");
    assert_eq!(n(&st, "/uplinks/u0/detail/twin_fault_count"), faults);
    for c in ["c1", "c2"] {
        assert_eq!(n(&st, &format!("/clients/{c}/connects")), 1, "{c}");
        assert_eq!(n(&st, &format!("/clients/{c}/disconnects")), 0, "{c}");
    }
    let g1 = g1.stop_report();
    let g2 = g2.stop_report();
    assert!(sw.running(), "the switch died");
    eprintln!("fault phase: gen1 {g1}\ngen2 {g2}");
    assert_eq!(faults, 4 * ROUNDS);
    for (c, g) in [("c1", &g1), ("c2", &g2)] {
        assert!(!g["nic_disconnected"].as_bool().expect("nic_disconnected"));
        // Frames were lost with each failed twin, but none came back out of order,
        // and the switch took every frame the client sent.
        assert_eq!(n(g, "/rx_out_of_order"), 0, "{c}: {g}");
        assert!(n(g, "/rx_own_swapped") > 0, "{c}: {g}");
        let live = ctl_status(&ctl);
        assert_eq!(
            n(&live, &format!("/clients/{c}/rx_packets")),
            n(g, "/tx_packets"),
            "{c}: the switch took every frame"
        );
    }

    // Traffic flows through the last twin, to each client in turn: exactly the
    // frames sent come back, in order (the digest covers every frame received, so
    // a foreign or repeated one would show), through the twin's instance.
    const PHASE: u64 = 5_000;
    for (i, (sock, mac)) in [(&socks[0], C1), (&socks[1], C2)].into_iter().enumerate() {
        let id = 10 + i as u32;
        let before = ctl_status(&ctl);
        let g = gen_exact(
            sock,
            mac,
            OUTSIDE,
            &id.to_string(),
            &PHASE.to_string(),
            "10000",
            "20",
            true,
        )
        .report(Duration::from_secs(40));
        let after = ctl_status(&ctl);
        eprintln!("last twin, {mac}: gen {g}");
        assert_eq!(n(&g, "/tx_packets"), PHASE, "{mac}");
        assert_eq!(n(&g, "/rx_packets"), PHASE, "{mac}");
        assert_eq!(n(&g, "/rx_own_swapped"), PHASE, "{mac}");
        assert_eq!(n(&g, "/rx_out_of_order"), 0, "{mac}");
        assert_eq!(
            str_at(&g, "/rx_digest"),
            expected_digest(OUTSIDE, mac, id, PHASE),
            "{mac}: digest"
        );
        assert_eq!(fast_path(&after), Some("twin"), "{mac}");
        assert_eq!(driver_pid(&after), driver_pid(&before), "{mac}");
        assert_eq!(n(&after, "/uplinks/u0/detail/twin_fault_count"), faults);
        for dir in ["tx_packets", "rx_packets"] {
            let moved = switch_instance_stat(&after, dir) - switch_instance_stat(&before, dir);
            assert!(moved >= PHASE, "{mac}: the twin's {dir} moved {moved}");
        }
    }

    let sw_r = sw.stop_report();
    let nic_r = nic.stop_report();
    eprintln!("switch {sw_r}\nnic {nic_r}");
    assert_eq!(n(&sw_r, "/uplinks/u0/detail/twin_fault_count"), faults);
    assert_eq!(n(&sw_r, "/uplinks/u0/disconnects"), faults);
    let outages = outages(&sw_r);
    assert_eq!(outages.len() as u64, faults);
    assert!(
        outages
            .iter()
            .all(|o| str_at(o, "/reason").starts_with("twin disabled")),
        "outages: {outages:?}"
    );
    // What the faults cost is bounded: of the frames the switch handed the uplink,
    // those the NIC never saw were in flight toward it when a fast path was torn
    // down (at most a transmit queue and an exchange ring each time, the switch's
    // stop included); of those the NIC sent, the ones the switch never took were
    // in a receive queue (at most its size each time).
    let handed = n(&sw_r, "/uplinks/u0/tx_packets");
    let nic_saw = n(&nic_r, "/rx_packets") + drops(&nic_r, "/rx_drops");
    let lost_out = handed - nic_saw;
    assert!(
        lost_out <= (faults + 1) * in_flight_to_nic_max("domain"),
        "{lost_out} frames lost toward the NIC over {faults} faults"
    );
    let queue = u64::from(driver_host::DriverConfig::default().queue_size);
    let took = n(&sw_r, "/uplinks/u0/rx_packets")
        + n(&sw_r, "/uplinks/u0/drops/domain_from_nic_ring_full");
    let lost_back = n(&nic_r, "/tx_packets") - took;
    assert!(
        lost_back <= (faults + 1) * queue,
        "{lost_back} frames lost from the NIC over {faults} faults"
    );
}

#[test]
fn the_twin_reattaches_to_a_restarted_driver_domain() {
    let _m = serial();
    let s = Scratch::new("twinrestart");
    let nic_s = s.path("nic.sock");
    let mut nic = nic_reflect(&nic_s, false);
    let (mut sw, socks, ctl) = twin_switch(&s, &nic_s, "twin", &[("c1", C1)]);
    let mut st = wait_fast_path(&ctl, "twin");
    let mut g = gen_event(&socks[0], C1, OUTSIDE, "60", "10000");
    const KILLS: u64 = 5;
    for i in 0..KILLS {
        let pid = driver_pid(&st).expect("driver pid");
        let done = ctl_ok(&ctl, &["fault", "u0", "kill"]);
        assert_eq!(str_at(&done, "/uplink"), "u0", "kill {i}");
        // A new domain, and the twin on its state: no mode change was asked for.
        st = wait_status(&ctl, Duration::from_secs(10), "re-attached twin", |st| {
            fast_path(st) == Some("twin") && driver_pid(st).is_some_and(|p| p != pid)
        });
        let rx0 = n(&st, "/uplinks/u0/rx_packets");
        st = wait_status(&ctl, Duration::from_secs(10), "frames through it", |st| {
            n(st, "/uplinks/u0/rx_packets") > rx0
        });
        assert_eq!(str_at(&st, "/uplinks/u0/detail/mode"), "twin", "kill {i}");
        assert!(g.running(), "the client was disconnected after kill {i}");
    }
    let g = g.stop_report();
    let sw_r = sw.stop_report();
    let _ = nic.stop_report();
    eprintln!("gen {g}\nswitch {sw_r}");
    assert_eq!(n(&sw_r, "/uplinks/u0/disconnects"), KILLS);
    assert_eq!(n(&sw_r, "/uplinks/u0/detail/twin_fault_count"), 0);
    assert_eq!(n(&sw_r, "/clients/c1/connects"), 1);
    assert_eq!(n(&g, "/rx_out_of_order"), 0);
    // The twin counts through the SVM on the last domain's state.
    assert!(switch_instance_stat(&sw_r, "rx_packets") > 0);
}

const COUNT: u64 = 20_000;
const GEN_ID: u32 = 7;

/// One run of exactly `COUNT` frames through uplink mode `mode` to the NIC at
/// `nic_s` (already running); returns the generator's and the switch's reports.
fn one_exact_run(s: &Scratch, nic_s: &str, mode: &str) -> (Value, Value) {
    let (mut sw, socks, ctl) = twin_switch(s, nic_s, mode, &[("c1", C1)]);
    wait_fast_path(&ctl, mode);
    let g = gen_exact(
        &socks[0],
        C1,
        OUTSIDE,
        &GEN_ID.to_string(),
        &COUNT.to_string(),
        "20000",
        "20",
        true,
    )
    .report(Duration::from_secs(40));
    let sw_r = sw.stop_report();
    eprintln!("{mode}: gen {g}\nswitch {sw_r}");
    assert_eq!(n(&sw_r, "/uplinks/u0/disconnects"), 0, "{mode}");
    assert_eq!(str_at(&sw_r, "/uplinks/u0/detail/driver/fast_path"), mode);
    (g, sw_r)
}

#[test]
fn inline_domain_and_twin_deliver_the_same_frames_in_the_same_order() {
    let _m = serial();
    let to_nic = expected_digest(C1, OUTSIDE, GEN_ID, COUNT);
    let back = expected_digest(OUTSIDE, C1, GEN_ID, COUNT);
    let modes = ["inline", "domain", "twin"];

    // The built-in NIC, which digests what it receives.
    let mut seen = Vec::new();
    for mode in modes {
        let s = Scratch::new(&format!("twinsame-{mode}"));
        let nic_s = s.path("nic.sock");
        let mut nic = nic_reflect(&nic_s, true);
        let (g, sw_r) = one_exact_run(&s, &nic_s, mode);
        let nic_r = nic.stop_report();
        eprintln!("{mode}: nic {nic_r}");
        assert_eq!(n(&g, "/tx_packets"), COUNT, "{mode}");
        assert_eq!(n(&nic_r, "/rx_packets"), COUNT, "{mode}");
        assert_eq!(n(&nic_r, "/tx_packets"), COUNT, "{mode}");
        assert_eq!(n(&g, "/rx_packets"), COUNT, "{mode}");
        assert_eq!(counted_drops(&sw_r, &nic_r), 0, "{mode}");
        assert_eq!(n(&g, "/rx_out_of_order"), 0, "{mode}");
        assert_eq!(str_at(&nic_r, "/rx_digest"), to_nic, "{mode}: NIC digest");
        assert_eq!(str_at(&g, "/rx_digest"), back, "{mode}: gen digest");
        seen.push((
            str_at(&nic_r, "/rx_digest").to_string(),
            str_at(&g, "/rx_digest").to_string(),
        ));
    }
    assert!(seen.windows(2).all(|w| w[0] == w[1]), "{seen:?}");

    // DPDK testpmd in macswap mode (no digest of its own).
    let mut seen = Vec::new();
    for mode in modes {
        let s = Scratch::new(&format!("twinsamedpdk-{mode}"));
        let nic_s = s.path("nic.sock");
        let vdev = format!("net_vhost0,iface={nic_s},queues=1");
        let mut tp = testpmd(
            &format!("same{}", &mode[..1]),
            0,
            &vdev,
            &["--forward-mode=macswap", "--port-topology=loop"],
        );
        wait_for_path(&nic_s, Duration::from_secs(20));
        let (g, _sw_r) = one_exact_run(&s, &nic_s, mode);
        let (status, out) = tp.stop();
        assert!(status.success(), "testpmd failed: {out}");
        let tps = parse_testpmd(&out, 0);
        eprintln!("{mode}: testpmd {tps:?}");
        assert_eq!(n(&g, "/tx_packets"), COUNT, "{mode}");
        assert_eq!(n(&g, "/rx_packets"), COUNT, "{mode}");
        assert_eq!(n(&g, "/rx_out_of_order"), 0, "{mode}");
        assert_eq!(tps.rx_packets, COUNT, "{mode}");
        assert_eq!(tps.tx_packets, COUNT, "{mode}");
        assert_eq!(str_at(&g, "/rx_digest"), back, "{mode}: gen digest");
        seen.push(str_at(&g, "/rx_digest").to_string());
    }
    assert!(seen.windows(2).all(|w| w[0] == w[1]), "{seen:?}");
}
