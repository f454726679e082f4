//! Source mode end to end, in process: a source NIC sends to a receive-only
//! traffic generator (`GenConfig::rate_pps = Some(0)`: it sends nothing and
//! counts what arrives). The generator's receive digest must be the digest of the
//! NIC's frames with sequence numbers 0, 1, 2, ... in that order: every frame
//! arrived, at the right size, with the right bytes, in order, with no gap. A rate
//! limit is checked within a loose bound (no timing assertion that can flake).

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use soft_nic::source::SOURCE_MAC;
use soft_nic::{Mode, NicConfig, NicReport, SourceConfig, SourceFrame};
use traffic_gen::{FrameDigest, GenConfig, GenReport, PollMode};
use twin_wire::MacAddr;

struct Case {
    tag: &'static str,
    size: usize,
    rate: Option<u64>,
    nic_busy: bool,
    gen_mode: PollMode,
    secs: f64,
}

/// The digest of the first `count` source frames (sequence numbers 0..count).
fn digest_of(size: usize, dst: MacAddr, count: u64) -> String {
    let mut f = SourceFrame::new(size, SOURCE_MAC, dst).expect("frame");
    let mut d = FrameDigest::new();
    for seq in 0..count {
        d.frame(f.with_seq(seq));
    }
    d.hex()
}

fn run(c: &Case) -> (GenReport, NicReport) {
    let sock: PathBuf = std::env::temp_dir().join(format!(
        "twin-nic-source-{}-{}.sock",
        c.tag,
        std::process::id()
    ));
    let dst = MacAddr::local(1);
    let mut ncfg = NicConfig::new(&sock, Mode::Source);
    ncfg.busy_poll = c.nic_busy;
    ncfg.source = SourceConfig {
        frame_len: c.size,
        rate_pps: c.rate,
        dst_mac: dst,
    };
    let stop = Arc::new(AtomicBool::new(false));
    let s2 = Arc::clone(&stop);
    let nic = std::thread::spawn(move || soft_nic::run(&ncfg, &s2).expect("NIC failed"));

    let mut cfg = GenConfig::new(&sock);
    cfg.rate_pps = Some(0);
    cfg.digest = true;
    cfg.duration = Duration::from_secs_f64(c.secs);
    cfg.mode = c.gen_mode;
    let g = traffic_gen::run(&cfg, &AtomicBool::new(false));
    stop.store(true, Ordering::Relaxed);
    let n = nic.join().expect("NIC thread");
    let _ = std::fs::remove_file(&sock);
    let g = g.expect("generator");
    eprintln!(
        "{}: gen rx {} ({} B, {:.3} Mpps over {:.2} s); NIC tx {} not_sent {} ring_full {} drops {}",
        c.tag,
        g.rx_packets,
        g.rx_bytes,
        g.rx_mpps,
        g.duration_s,
        n.tx_packets,
        n.source_not_sent,
        n.source_ring_full,
        n.tx_drops.total()
    );

    // Frames arrive, at the right size, all of them foreign to the generator.
    assert!(g.rx_packets > 0, "{g:?}");
    assert_eq!(g.tx_packets, 0, "receive only: {g:?}");
    assert_eq!(g.rx_bytes, g.rx_packets * c.size as u64, "{g:?}");
    assert_eq!(g.rx_foreign, g.rx_packets, "{g:?}");
    assert_eq!((g.rx_own, g.rx_out_of_order), (0, 0), "{g:?}");
    // Sequence numbers 0, 1, 2, ...: the exact frames, in order, without a gap.
    assert_eq!(
        g.rx_digest.as_deref(),
        Some(digest_of(c.size, dst, g.rx_packets).as_str()),
        "the received frames are not source frames 0..{} in order",
        g.rx_packets
    );
    // The NIC gave the driver at least what it received (the rest was still in the
    // ring when the generator left), counted its bytes, and dropped nothing.
    assert_eq!(n.mode, Some(Mode::Source));
    assert!(n.tx_packets >= g.rx_packets, "{n:?}");
    assert_eq!(n.tx_bytes, n.tx_packets * c.size as u64, "{n:?}");
    assert_eq!(n.tx_drops.total(), 0, "{n:?}");
    assert_eq!(n.rx_packets, 0, "the generator sent nothing: {n:?}");
    if c.rate.is_none() {
        assert_eq!(n.source_not_sent, 0, "unlimited runs never count: {n:?}");
    }
    (g, n)
}

#[test]
fn source_frames_reach_a_receive_only_generator_in_order() {
    for (tag, size, nic_busy, gen_mode) in [
        ("busy64", 64, true, PollMode::BusyPoll),
        ("busy1500", 1500, true, PollMode::BusyPoll),
        ("event60", 60, false, PollMode::EventDriven),
        ("event1514", 1514, false, PollMode::BusyPoll),
    ] {
        run(&Case {
            tag,
            size,
            rate: None,
            nic_busy,
            gen_mode,
            secs: 0.3,
        });
    }
}

#[test]
fn source_rate_limit_is_honoured() {
    // 10 kpps for 0.5 s: about 5000 frames. Loose bounds: something arrives, and
    // fewer than twice the expected count (the bucket allows two batches of burst).
    for (tag, nic_busy, gen_mode) in [
        ("rate-busy", true, PollMode::BusyPoll),
        ("rate-event", false, PollMode::EventDriven),
    ] {
        let (g, n) = run(&Case {
            tag,
            size: 128,
            rate: Some(10_000),
            nic_busy,
            gen_mode,
            secs: 0.5,
        });
        assert!(g.rx_packets > 0 && g.rx_packets < 10_000, "{g:?}");
        // The NIC ran a little longer than the generator (connect, disconnect).
        assert!(n.tx_packets < 10_000, "{n:?}");
    }
}
