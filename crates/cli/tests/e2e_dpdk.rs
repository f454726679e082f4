//! End to end with DPDK's testpmd as a real peer: as a client (`net_virtio_user`,
//! txonly) and as the NIC (`net_vhost`, rxonly and macswap). Frame counts on both
//! sides of the switch must match. These tests fail when testpmd is missing.

mod common;

use std::time::Duration;

use common::*;

const C1: &str = "02:00:00:00:00:01";
const OUTSIDE: &str = "02:00:00:00:00:fe";

#[test]
fn dpdk_virtio_user_client_through_switch_to_builtin_nic() {
    let _m = serial();
    require_testpmd();
    let s = Scratch::new("dpdkclient");
    let (nic_s, c1_s, ctl) = (s.path("nic.sock"), s.path("c1.sock"), s.path("ctl.sock"));
    let mut nic = Proc::twin(
        "nic",
        &[
            "nic", "--socket", &nic_s, "--mode", "sink", "--poll", "event", "--cpu", "1",
        ],
    );
    let c1 = format!("c1={c1_s}");
    let up = format!("u0={nic_s},mode=inline");
    let mut sw = Proc::twin(
        "switch",
        &[
            "switch",
            "--client",
            &c1,
            "--uplink",
            &up,
            "--cpu",
            "1",
            "--control",
            &ctl,
        ],
    );
    wait_for_path(&c1_s, Duration::from_secs(10));
    wait_for_path(&ctl, Duration::from_secs(10));
    // The NIC is up before the first frame: no frame may meet a down uplink.
    wait_status(&ctl, Duration::from_secs(20), "the uplink up", |st| {
        n(st, "/uplinks/u0/connects") == 1
    });
    let vdev = format!("net_virtio_user0,path={c1_s},queues=1");
    let mut tp = testpmd("cl", 1, &vdev, &["--forward-mode=txonly", "--txpkts=64"]);
    // testpmd sends as fast as it can until stopped: let 200 000 frames through.
    wait_status(&ctl, Duration::from_secs(30), "200 000 frames in", |st| {
        n(st, "/clients/c1/rx_packets") >= 200_000
    });
    let (status, out) = tp.stop();
    assert!(status.success(), "testpmd failed: {out}");
    let tps = parse_testpmd(&out, 0);
    // Every frame testpmd sent is in the switch before it stops.
    wait_status(&ctl, Duration::from_secs(10), "every frame taken", |st| {
        n(st, "/clients/c1/rx_packets") == tps.tx_packets
    });
    let sw_r = sw.stop_report();
    let nic_r = nic.stop_report();
    eprintln!("testpmd {tps:?}\nswitch {sw_r}\nnic {nic_r}");

    assert_eq!(
        n(&sw_r, "/clients/c1/rx_packets"),
        tps.tx_packets,
        "switch must receive every frame testpmd sent"
    );
    // Every frame was forwarded, or found the NIC's ring full (testpmd sends
    // faster than the built-in NIC sinks on a shared core); no other drop.
    let to_nic = n(&sw_r, "/uplinks/u0/tx_packets");
    let ring_full = n(&sw_r, "/uplinks/u0/drops/uplink_ring_full");
    assert_eq!(to_nic + ring_full, tps.tx_packets);
    assert_eq!(
        drops(&sw_r, "/drops"),
        ring_full,
        "drops: {}",
        sw_r["drops"]
    );
    assert_eq!(n(&sw_r, "/uplinks/u0/disconnects"), 0);
    // The NIC received every frame the switch forwarded (a ring's worth at least:
    // it was full, or nothing was dropped at all).
    assert_eq!(n(&nic_r, "/rx_packets"), to_nic);
    assert_eq!(drops(&nic_r, "/rx_drops"), 0);
    let queue = u64::from(driver_host::DriverConfig::default().queue_size);
    assert!(ring_full == 0 || to_nic >= queue, "{to_nic} forwarded");
}

fn gen_to_dpdk_nic(fwd: &str, reflect: bool) {
    let _m = serial();
    require_testpmd();
    let s = Scratch::new(fwd);
    let (nic_s, c1_s) = (s.path("nic.sock"), s.path("c1.sock"));
    let vdev = format!("net_vhost0,iface={nic_s},queues=1");
    let mode = format!("--forward-mode={fwd}");
    let mut args = vec![mode.as_str()];
    if reflect {
        args.push("--port-topology=loop");
    }
    let mut tp = testpmd("nic", 0, &vdev, &args);
    wait_for_path(&nic_s, Duration::from_secs(20));
    let c1 = format!("c1={c1_s},mac={C1}");
    let up = format!("u0={nic_s},mode=inline");
    let mut sw = Proc::twin(
        "switch",
        &[
            "switch", "--client", &c1, "--uplink", &up, "--poll", "event", "--cpu", "0",
        ],
    );
    wait_for_path(&c1_s, Duration::from_secs(10));
    // Traffic starts once testpmd has our driver attached and its queues running.
    tp.wait_testpmd_forwarding(Duration::from_secs(20));
    let g = Proc::twin(
        "gen",
        &[
            "gen",
            "--socket",
            &c1_s,
            "--size",
            "64",
            "--rate",
            "100000",
            "--duration",
            "2",
            "--src-mac",
            C1,
            "--dst-mac",
            OUTSIDE,
            "--poll",
            "event",
            "--cpu",
            "0",
        ],
    )
    .report(Duration::from_secs(30));
    let sw_r = sw.stop_report();
    let (status, out) = tp.stop();
    assert!(status.success(), "testpmd failed: {out}");
    let tps = parse_testpmd(&out, 0);
    eprintln!("gen {g}\nswitch {sw_r}\ntestpmd {tps:?}\ntestpmd output:\n{out}");

    let sent = n(&g, "/tx_packets");
    assert!(sent > 10_000, "generator sent only {sent}");
    assert_eq!(n(&sw_r, "/clients/c1/rx_packets"), sent);
    // Every frame went to the NIC or was counted (a NIC that falls behind on a busy
    // two-core machine fills the ring: `uplink_ring_full`); nothing else.
    let to_nic = n(&sw_r, "/uplinks/u0/tx_packets");
    let ring_full = n(&sw_r, "/uplinks/u0/drops/uplink_ring_full");
    assert_eq!(to_nic + ring_full, sent, "every frame forwarded or counted");
    let no_buffers = n(&sw_r, "/clients/c1/drops/no_buffers");
    assert_eq!(
        drops(&sw_r, "/drops"),
        ring_full + no_buffers,
        "drops: {}",
        sw_r["drops"]
    );
    assert_testpmd_received(tps.rx_packets, to_nic, "inline");
    if reflect {
        // macswap sends every frame back, or counts it (our receive ring was full).
        assert_eq!(
            tps.tx_packets + tps.tx_dropped,
            tps.rx_packets,
            "macswap sends every frame back"
        );
        assert_eq!(n(&sw_r, "/uplinks/u0/rx_packets"), tps.tx_packets);
        // Swapped frames are addressed to c1, learned there; unswapped ones would be
        // hairpin drops on the uplink.
        assert_eq!(
            n(&sw_r, "/uplinks/u0/drops/hairpin"),
            0,
            "MACs must be swapped"
        );
        // Each returned frame reached c1 or was counted there (no receive buffers).
        assert_eq!(
            n(&sw_r, "/clients/c1/tx_packets")
                + n(&sw_r, "/clients/c1/detail/to_client_drops/no_buffers"),
            tps.tx_packets
        );
        assert_eq!(n(&g, "/rx_packets"), n(&sw_r, "/clients/c1/tx_packets"));
        assert_eq!(n(&g, "/rx_own_swapped"), n(&g, "/rx_packets"));
    } else {
        assert_eq!(n(&g, "/rx_packets"), 0);
    }
}

#[test]
fn generator_through_switch_to_dpdk_nic_rxonly() {
    gen_to_dpdk_nic("rxonly", false);
}

#[test]
fn generator_through_switch_to_dpdk_nic_macswap_and_back() {
    gen_to_dpdk_nic("macswap", true);
}
