//! Uplinks in `domain` mode: the NIC's driver runs in its own driver-domain process,
//! started and supervised by the switch. Frames flow end to end with counters that
//! add up, with the built-in NIC and with DPDK's net_vhost, and the domain survives
//! being killed again and again while clients stay connected.

mod common;

use std::time::{Duration, Instant};

use common::*;

const C1: &str = "02:00:00:00:00:01";
const OUTSIDE: &str = "02:00:00:00:00:fe";

fn gen(sock: &str, secs: &str, rate: &str) -> Proc {
    gen_event(sock, C1, OUTSIDE, secs, rate)
}

fn domain_switch(s: &Scratch, nic_sock: &str) -> (Proc, String) {
    let c1_s = s.path("c1.sock");
    let c1 = format!("c1={c1_s},mac={C1}");
    let up = format!("u0={nic_sock},mode=domain");
    let sw = Proc::twin(
        "switch",
        &[
            "switch", "--client", &c1, "--uplink", &up, "--poll", "event",
        ],
    );
    wait_for_path(&c1_s, Duration::from_secs(10));
    (sw, c1_s)
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

fn kill9(pid: u32) {
    if let Some(p) = rustix::process::Pid::from_raw(pid as i32) {
        let _ = rustix::process::kill_process(p, rustix::process::Signal::KILL);
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
    tp.wait_for_output(
        "virtio is now ready for processing",
        Duration::from_secs(20),
    );
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

#[test]
fn a_driver_domain_killed_twenty_times_is_restarted_every_time() {
    let _m = serial();
    let s = Scratch::new("domainkill");
    let nic_s = s.path("nic.sock");
    let mut nic = Proc::twin(
        "nic",
        &[
            "nic", "--socket", &nic_s, "--mode", "reflect", "--poll", "event",
        ],
    );
    let (mut sw, c1_s) = domain_switch(&s, &nic_s);
    let mut g = gen(&c1_s, "60", "20000");
    let mut dd = domain_pid(&sw, None, Duration::from_secs(10));
    const KILLS: u64 = 20;
    for i in 0..KILLS {
        std::thread::sleep(Duration::from_millis(150));
        kill9(dd);
        let next = domain_pid(&sw, Some(dd), Duration::from_secs(5));
        assert!(sw.running(), "switch died after kill {i}");
        assert!(g.running(), "the client was disconnected after kill {i}");
        dd = next;
    }
    std::thread::sleep(Duration::from_millis(500));
    let sw_r = sw.stop_report();
    let nic_r = nic.stop_report();
    let g = g.stop_report();
    eprintln!("gen {g}\nswitch {sw_r}\nnic {nic_r}");
    assert_eq!(n(&sw_r, "/uplinks/u0/disconnects"), KILLS);
    assert_eq!(n(&sw_r, "/uplinks/u0/connects"), KILLS + 1);
    assert_eq!(
        n(&sw_r, "/clients/c1/connects"),
        1,
        "the client stayed connected"
    );
    assert_eq!(n(&sw_r, "/clients/c1/disconnects"), 0);
    let outages = sw_r
        .pointer("/uplinks/u0/detail/outages")
        .and_then(|o| o.as_array())
        .expect("outage list");
    assert_eq!(outages.len() as u64, KILLS);
    assert!(outages
        .iter()
        .all(|o| o["reason"].as_str().unwrap_or("").contains("SIGKILL")));
    // Traffic flowed through the last domain.
    assert!(n(&g, "/rx_packets") > 0);
    assert!(n(&nic_r, "/rx_packets") > 0);
}
