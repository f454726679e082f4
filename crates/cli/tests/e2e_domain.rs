//! Uplinks in `domain` mode: the NIC's driver runs in its own driver-domain process,
//! started and supervised by the switch. Frames flow end to end with counters that
//! add up, with the built-in NIC and with DPDK's net_vhost, and the domain survives
//! being killed again and again while clients stay connected.

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

const C1: &str = "02:00:00:00:00:01";
const OUTSIDE: &str = "02:00:00:00:00:fe";

fn gen(sock: &str, secs: &str, rate: &str) -> Proc {
    gen_event(sock, C1, OUTSIDE, secs, rate)
}

fn domain_switch(s: &Scratch, nic_sock: &str) -> (Proc, String) {
    let (sw, c1_s, ctl) = domain_switch_ctl(s, nic_sock);
    // Traffic starts once the uplink is up: a frame flooded before has nowhere to
    // go (`no_destination`) and would not reach the NIC the test counts at.
    wait_domain(&ctl, 0);
    (sw, c1_s)
}

/// [`domain_switch`] with a control socket; returns its path too.
fn domain_switch_ctl(s: &Scratch, nic_sock: &str) -> (Proc, String, String) {
    let (c1_s, ctl_s) = (s.path("c1.sock"), s.path("ctl.sock"));
    let c1 = format!("c1={c1_s},mac={C1}");
    let up = format!("u0={nic_sock},mode=domain");
    let sw = Proc::twin(
        "switch",
        &[
            "switch",
            "--client",
            &c1,
            "--uplink",
            &up,
            "--poll",
            "event",
            "--control",
            &ctl_s,
        ],
    );
    wait_for_path(&c1_s, Duration::from_secs(10));
    wait_for_path(&ctl_s, Duration::from_secs(10));
    (sw, c1_s, ctl_s)
}

/// The switch's one driver domain, once it runs.
fn domain_pid(sw: &Proc, not: Option<u32>, timeout: Duration) -> u32 {
    let start = Instant::now();
    loop {
        if let Some(p) = sw.children().into_iter().find(|p| Some(*p) != not) {
            return p;
        }
        assert!(
            start.elapsed() < timeout,
            "no driver domain within {timeout:?}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn frames_cross_a_driver_domain_to_the_builtin_nic_and_back() {
    let _m = serial();
    let s = Scratch::new("domain");
    let nic_s = s.path("nic.sock");
    let mut nic = Proc::twin(
        "nic",
        &[
            "nic", "--socket", &nic_s, "--mode", "reflect", "--poll", "event",
        ],
    );
    let (mut sw, c1_s) = domain_switch(&s, &nic_s);
    let dd = domain_pid(&sw, None, Duration::from_secs(10));
    assert_ne!(dd, sw.pid());
    let g = gen(&c1_s, "2", "100000").report(Duration::from_secs(30));
    let sw_r = sw.stop_report();
    let nic_r = nic.stop_report();
    eprintln!("gen {g}\nswitch {sw_r}\nnic {nic_r}");

    let sent = n(&g, "/tx_packets");
    assert!(sent > 10_000);
    assert_eq!(n(&sw_r, "/uplinks/u0/detail/driver/pid"), u64::from(dd));
    assert_eq!(
        n(&sw_r, "/uplinks/u0/tx_packets") + n(&sw_r, "/uplinks/u0/drops/uplink_ring_full"),
        sent
    );
    // Everything the switch queued to the domain reached the NIC, or the domain
    // counted it (its driver's ring to the NIC was full: a NIC that fell behind on a
    // busy machine), and back.
    assert_eq!(
        n(&nic_r, "/rx_packets") + n(&sw_r, "/uplinks/u0/drops/domain_nic_tx_ring_full"),
        n(&sw_r, "/uplinks/u0/tx_packets")
    );
    assert_eq!(
        n(&sw_r, "/uplinks/u0/rx_packets")
            + n(&sw_r, "/uplinks/u0/drops/domain_from_nic_ring_full"),
        n(&nic_r, "/tx_packets")
    );
    let counted = drops(&sw_r, "/drops") + drops(&nic_r, "/rx_drops") + drops(&nic_r, "/tx_drops");
    assert_eq!(n(&g, "/rx_packets") + counted, sent);
    assert!(n(&g, "/rx_packets") > sent * 9 / 10);
}

#[test]
fn frames_cross_a_driver_domain_to_dpdk_net_vhost_macswap() {
    let _m = serial();
    let s = Scratch::new("domaindpdk");
    let nic_s = s.path("nic.sock");
    let vdev = format!("net_vhost0,iface={nic_s},queues=1");
    let mut tp = testpmd(
        "dnic",
        0,
        &vdev,
        &["--forward-mode=macswap", "--port-topology=loop"],
    );
    wait_for_path(&nic_s, Duration::from_secs(20));
    let (mut sw, c1_s) = domain_switch(&s, &nic_s);
    tp.wait_testpmd_forwarding(Duration::from_secs(20));
    let g = gen(&c1_s, "2", "100000").report(Duration::from_secs(30));
    let sw_r = sw.stop_report();
    let (status, out) = tp.stop();
    assert!(status.success(), "testpmd failed: {out}");
    let tps = parse_testpmd(&out, 0);
    eprintln!("gen {g}\nswitch {sw_r}\ntestpmd {tps:?}");
    let sent = n(&g, "/tx_packets");
    let to_nic = n(&sw_r, "/uplinks/u0/tx_packets");
    assert!(sent > 10_000);
    assert_eq!(
        to_nic + n(&sw_r, "/uplinks/u0/drops/uplink_ring_full"),
        sent
    );
    // Full rings (a peer too slow for a moment) are the only drops.
    let full = n(&sw_r, "/uplinks/u0/drops/uplink_ring_full")
        + n(&sw_r, "/uplinks/u0/drops/domain_nic_tx_ring_full")
        + n(&sw_r, "/uplinks/u0/drops/domain_from_nic_ring_full")
        + n(&sw_r, "/clients/c1/drops/no_buffers");
    assert_eq!(drops(&sw_r, "/drops"), full, "drops: {}", sw_r["drops"]);
    // Every frame the switch queued reached testpmd, or the domain counted it (its
    // driver's ring to the NIC was full), or was in flight when the switch stopped.
    assert_testpmd_received(
        tps.rx_packets + n(&sw_r, "/uplinks/u0/drops/domain_nic_tx_ring_full"),
        to_nic,
        "domain",
    );
    // testpmd sent each back, or counted it (our receive ring was full).
    assert_eq!(tps.tx_packets + tps.tx_dropped, tps.rx_packets);
    // Every frame testpmd sent reached the switch, or the domain counted it.
    assert_eq!(
        n(&sw_r, "/uplinks/u0/rx_packets")
            + n(&sw_r, "/uplinks/u0/drops/domain_from_nic_ring_full"),
        tps.tx_packets
    );
    assert_eq!(n(&g, "/rx_own_swapped"), n(&g, "/rx_packets"));
    // Round trip: back, or counted (switch, testpmd), or in flight to testpmd at
    // the stop (exactly what it did not receive, bounded above).
    let in_flight = to_nic - tps.rx_packets - n(&sw_r, "/uplinks/u0/drops/domain_nic_tx_ring_full");
    assert_eq!(
        n(&g, "/rx_packets") + drops(&sw_r, "/drops") + tps.tx_dropped + in_flight,
        sent
    );
    assert_eq!(n(&g, "/rx_out_of_order"), 0);
}

/// The switch's drops of `switch_drops_but_ring_full()` over port c1 and uplink u0
/// (fails on a missing counter).
fn switch_drops(st: &Value) -> u64 {
    let mut sum = 0;
    for port in ["/clients/c1", "/uplinks/u0"] {
        for r in switch_drops_but_ring_full() {
            sum += n(st, &format!("{port}/drops/{r}"));
        }
    }
    sum
}

/// Waits until uplink u0 is connected with a driver domain other than `not`;
/// returns that status.
fn wait_new_domain(ctl: &str, not: u64, what: &str) -> Value {
    wait_status(ctl, Duration::from_secs(20), what, |s| {
        s.pointer("/uplinks/u0/detail/connected") == Some(&Value::Bool(true))
            && driver_pid(s).is_some_and(|p| p != not)
    })
}

#[test]
fn a_driver_domain_killed_twenty_times_is_restarted_every_time() {
    let _m = serial();
    let s = Scratch::new("domainkill");
    let nic_s = s.path("nic.sock");
    let mut nic = nic_reflect(&nic_s, false);
    let (mut sw, c1_s, ctl) = domain_switch_ctl(&s, &nic_s);
    let first = wait_new_domain(&ctl, 0, "the first driver domain");
    // 10 000 frames a second until stopped, each reflected back to c1 by the NIC.
    let mut g = gen_event_with(&c1_s, C1, OUTSIDE, "300", "10000", &["--id", "7"]);
    let mut pid = driver_pid(&first).expect("a domain");
    let mut st = wait_flow(&ctl, &first, pid, "traffic through the first domain");
    const KILLS: u64 = 20;
    for i in 0..KILLS {
        let tag = format!("kill {}", i + 1);
        let before = st;
        // Frames flowed through this domain (wait_flow): now kill it.
        kill9(pid);
        let after = wait_new_domain(&ctl, pid, &format!("{tag}: a new domain"));
        assert!(sw.running(), "{tag}: the switch died");
        assert!(g.running(), "{tag}: the client was disconnected");
        assert_eq!(
            n(&after, "/uplinks/u0/disconnects"),
            i + 1,
            "{tag}: {after}"
        );
        assert_eq!(n(&after, "/uplinks/u0/connects"), i + 2, "{tag}: {after}");
        assert_eq!(n(&after, "/clients/c1/connects"), 1, "{tag}: {after}");
        assert_eq!(n(&after, "/clients/c1/disconnects"), 0, "{tag}: {after}");
        let o = outages(&after);
        assert_eq!(o.len() as u64, i + 1, "{tag}: one outage per kill: {after}");
        let last = o.last().expect("an outage");
        let why = str_at(last, "/reason");
        assert!(why.contains("SIGKILL"), "{tag}: outage reason {why:?}");
        // Per phase (from frames flowing through the old domain to the new one
        // connected): every frame the switch dropped is one of the outage's.
        let dropped = switch_drops(&after) - switch_drops(&before);
        assert_eq!(
            n(last, "/frames_dropped"),
            dropped,
            "{tag}: the outage's drops are the switch's: {last}"
        );
        // ...and every frame taken from c1 went to the uplink, was refused by its
        // full ring, or was dropped.
        let d = |p: &str| n(&after, p) - n(&before, p);
        assert_eq!(
            d("/clients/c1/rx_packets"),
            d("/uplinks/u0/tx_packets")
                + d("/uplinks/u0/drops/uplink_ring_full")
                + d("/uplinks/u0/drops/too_big_for_uplink")
                + switch_drops_but_ring_full()
                    .iter()
                    .map(|r| d(&format!("/clients/c1/drops/{r}")))
                    .sum::<u64>(),
            "{tag}: c1's frames: {before}\n{after}"
        );
        // What the dead domain had not taken is at most the exchange ring.
        assert!(n(last, "/frames_in_flight_lost") <= 512, "{tag}: {last}");
        pid = driver_pid(&after).expect("a domain");
        // Repaired: frames flow through the new domain, both ways.
        st = wait_flow(
            &ctl,
            &after,
            pid,
            &format!("{tag}: traffic through the new domain"),
        );
    }
    let g = g.stop_report();
    wait_status(&ctl, Duration::from_secs(10), "c1 gone", |s| {
        n(s, "/clients/c1/disconnects") == 1
    });
    let sw_r = sw.stop_report();
    let nic_r = nic.stop_report();
    eprintln!("gen {g}\nswitch {sw_r}\nnic {nic_r}");
    assert_eq!(n(&sw_r, "/uplinks/u0/disconnects"), KILLS);
    assert_eq!(n(&sw_r, "/uplinks/u0/connects"), KILLS + 1);
    assert_eq!(
        n(&nic_r, "/connects"),
        KILLS + 1,
        "one NIC connection per domain"
    );
    assert_eq!(
        n(&sw_r, "/clients/c1/connects"),
        1,
        "the client stayed connected"
    );
    // The switch took every frame c1 sent (it drains a client before adopting its
    // disconnect); everything c1 received back was its own, swapped, in order.
    assert_eq!(n(&g, "/tx_packets"), n(&sw_r, "/clients/c1/rx_packets"));
    assert_eq!(n(&g, "/rx_own_swapped"), n(&g, "/rx_packets"), "{g}");
    assert_eq!(n(&g, "/rx_out_of_order"), 0, "{g}");
    assert!(n(&g, "/rx_packets") <= n(&sw_r, "/clients/c1/tx_packets"));
}
