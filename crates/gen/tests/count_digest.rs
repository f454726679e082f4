//! `count` and `digest` end to end against the built-in NIC, in process: the
//! generator sends exactly the frames asked for, the NIC's digest is the digest of
//! exactly those frames in sequence order, and the generator's is the digest of
//! them reflected (MACs swapped). Without digests, frames carry send timestamps
//! and every frame that came back has its round-trip time measured.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use traffic_gen::{run, FrameDigest, GenConfig, GenFrame, PollMode};
use twin_wire::MacAddr;

fn digest_of(len: usize, src: MacAddr, dst: MacAddr, id: u32, count: u64) -> String {
    let mut f = GenFrame::new(len, src, dst, id).unwrap();
    let mut d = FrameDigest::new();
    for seq in 0..count {
        d.frame(f.with_seq(seq));
    }
    d.hex()
}

fn run_against_nic(tag: &str, count: u64, rate: Option<u64>, len: usize, digest: bool) {
    let sock: PathBuf =
        std::env::temp_dir().join(format!("twin-gen-count-{tag}-{}.sock", std::process::id()));
    let mut ncfg = soft_nic::NicConfig::new(&sock, soft_nic::Mode::Reflect);
    ncfg.busy_poll = false;
    ncfg.digest = digest;
    let stop = Arc::new(AtomicBool::new(false));
    let s2 = Arc::clone(&stop);
    let nic = std::thread::spawn(move || soft_nic::run(&ncfg, &s2).expect("NIC failed"));

    let (src, dst, id) = (MacAddr::local(3), MacAddr([2, 0, 0, 0, 0, 0xfe]), 3);
    let mut cfg = GenConfig::new(&sock);
    cfg.id = id;
    cfg.frame_len = len;
    cfg.src_mac = Some(src);
    cfg.dst_mac = dst;
    cfg.rate_pps = rate;
    cfg.count = Some(count);
    cfg.digest = digest;
    cfg.duration = Duration::from_secs(20);
    cfg.mode = PollMode::EventDriven;
    let g = run(&cfg, &AtomicBool::new(false)).expect("gen");
    stop.store(true, Ordering::Relaxed);
    let n = nic.join().expect("NIC thread");
    let _ = std::fs::remove_file(&sock);
    eprintln!(
        "{tag}: gen tx {} rx {}, NIC rx {} tx {} drops {}",
        g.tx_packets,
        g.rx_packets,
        n.rx_packets,
        n.tx_packets,
        n.tx_drops.total()
    );

    assert_eq!(g.tx_packets, count, "{g:?}");
    assert!(g.duration_s < 15.0, "count did not end the run: {g:?}");
    assert_eq!(n.rx_packets, count, "{n:?}");
    if !digest {
        assert_eq!(
            (g.rx_digest.as_deref(), n.rx_digest.as_deref()),
            (None, None)
        );
        eprintln!(
            "{tag}: RTT samples {} p50 {} us p99 {} us p99.9 {} us max {} us",
            g.rtt_samples, g.rtt_p50_us, g.rtt_p99_us, g.rtt_p999_us, g.rtt_max_us
        );
        assert!(g.rx_packets > 0, "{g:?}");
        assert_eq!(g.rx_own, g.rx_packets, "{g:?}");
        assert_eq!(g.rtt_samples, g.rx_own, "{g:?}");
        assert_eq!(g.rtt_invalid, 0, "{g:?}");
        assert!(g.rtt_p50_us > 0.0, "{g:?}");
        assert!(g.rtt_p50_us <= g.rtt_p99_us, "{g:?}");
        assert!(g.rtt_p99_us <= g.rtt_p999_us, "{g:?}");
        assert!(g.rtt_p999_us <= g.rtt_max_us, "{g:?}");
        return;
    }
    // Digest runs send no timestamps and measure no RTT.
    assert_eq!((g.rtt_samples, g.rtt_invalid), (0, 0), "{g:?}");
    assert_eq!(g.rtt_max_us, 0.0);
    assert_eq!(
        n.rx_digest.as_deref(),
        Some(digest_of(len, src, dst, id, count).as_str())
    );
    // The reflected frames, if every one came back.
    if g.rx_packets == count {
        assert_eq!(
            g.rx_digest.as_deref(),
            Some(digest_of(len, dst, src, id, count).as_str())
        );
    } else {
        assert_eq!(n.tx_packets + n.tx_drops.total(), count, "{n:?}");
        assert_ne!(
            g.rx_digest.as_deref(),
            Some(digest_of(len, dst, src, id, count).as_str())
        );
    }
    assert_eq!(g.rx_out_of_order, 0);
}

#[test]
fn count_ends_the_run_and_both_digests_match_the_frames_sent() {
    run_against_nic("rate", 5_000, Some(100_000), 64, true);
    run_against_nic("big", 3_000, Some(50_000), 1500, true);
    run_against_nic("fast", 20_000, None, 64, true);
    run_against_nic("plain", 1_000, None, 64, false);
    run_against_nic("rtt", 5_000, Some(100_000), 64, false);
}
