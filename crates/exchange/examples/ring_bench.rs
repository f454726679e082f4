//! Microbenchmark: per-frame cost of 64-byte frames through the exchange rings on
//! one core (one thread plays both sides, so this is the ring's own CPU cost with
//! warm caches, not cross-core latency).
//!
//! * `one ring`: switch reserves, copies 64 bytes in, commits; publishes once per
//!   batch; the DD polls the batch and copies each frame out.
//! * `round trip`: to_nic as above, the DD copies each frame slot-to-slot into
//!   from_nic, the switch polls and copies it out: two ring passes, three copies.
//! * `two threads` (with `--threads`): busy-polling switch and DD on two threads,
//!   round trip; depends on the machine's load.
//!
//! Run: `cargo run --release -p exchange --example ring_bench [-- --threads]`

use std::sync::Arc;
use std::time::Instant;

use exchange::{Consumer, ExchangeRegion, Geometry, Producer, RingId};

const BATCH: usize = 32;
const FRAMES: u64 = 4_000_000;
/// Runs per scenario; the best is reported (the machine is shared).
const RUNS: usize = 7;

fn region() -> Arc<ExchangeRegion> {
    Arc::new(ExchangeRegion::create("xchg-bench", Geometry::default()).expect("region"))
}

fn send_batch(tx: &mut Producer, seq: &mut u64, n: usize) -> usize {
    let mut frame = [0u8; 64];
    let mut done = 0;
    while done < n {
        let Some(slot) = tx.reserve().expect("reserve") else {
            break;
        };
        frame[14..22].copy_from_slice(&seq.to_le_bytes());
        slot.frame().write_prefix(&frame);
        slot.commit(64).expect("commit");
        *seq += 1;
        done += 1;
    }
    tx.publish();
    let _ = tx.needs_notify();
    done
}

/// ns per frame of one run.
fn report(frames: u64, t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1e9 / frames as f64
}

fn best_of(name: &str, run: fn() -> f64) {
    let mut v: Vec<f64> = (0..RUNS).map(|_| run()).collect();
    v.sort_by(f64::total_cmp);
    println!(
        "{name:>12}: best {:.1} ns/frame ({:.2} Mframes/s), median {:.1} ns/frame, {RUNS} runs of {FRAMES} 64-byte frames",
        v[0],
        1e3 / v[0],
        v[RUNS / 2]
    );
}

fn one_ring() -> f64 {
    let r = region();
    let mut tx = Producer::new(r.clone(), RingId::ToNic);
    let mut rx = Consumer::new(r, RingId::ToNic);
    let (mut seq, mut got, mut sum) = (0u64, 0u64, 0u64);
    let mut buf = [0u8; 64];
    let t = Instant::now();
    while got < FRAMES {
        send_batch(&mut tx, &mut seq, BATCH);
        got += rx
            .poll(BATCH, |f| {
                f.read_prefix(&mut buf);
                sum = sum.wrapping_add(u64::from(buf[14]));
            })
            .expect("poll") as u64;
        let _ = rx.needs_notify();
    }
    std::hint::black_box(sum);
    report(got, t)
}

fn round_trip() -> f64 {
    let r = region();
    let mut sw_tx = Producer::new(r.clone(), RingId::ToNic);
    let mut dd_rx = Consumer::new(r.clone(), RingId::ToNic);
    let mut dd_tx = Producer::new(r.clone(), RingId::FromNic);
    let mut sw_rx = Consumer::new(r, RingId::FromNic);
    let (mut seq, mut got, mut sum) = (0u64, 0u64, 0u64);
    let mut buf = [0u8; 64];
    let t = Instant::now();
    while got < FRAMES {
        send_batch(&mut sw_tx, &mut seq, BATCH);
        dd_rx
            .poll(BATCH, |f| {
                if let Ok(Some(slot)) = dd_tx.reserve() {
                    f.copy_to(&slot.frame());
                    let _ = slot.commit(f.len());
                }
            })
            .expect("dd poll");
        let _ = dd_rx.needs_notify();
        dd_tx.publish();
        let _ = dd_tx.needs_notify();
        got += sw_rx
            .poll(BATCH, |f| {
                f.read_prefix(&mut buf);
                sum = sum.wrapping_add(u64::from(buf[14]));
            })
            .expect("switch poll") as u64;
        let _ = sw_rx.needs_notify();
    }
    std::hint::black_box(sum);
    report(got, t)
}

fn two_threads() -> f64 {
    let r = region();
    let mut sw_tx = Producer::new(r.clone(), RingId::ToNic);
    let mut sw_rx = Consumer::new(r.clone(), RingId::FromNic);
    let mut dd_rx = Consumer::new(r.clone(), RingId::ToNic);
    let mut dd_tx = Producer::new(r, RingId::FromNic);
    let frames = FRAMES;
    let dd = std::thread::spawn(move || {
        let mut echoed = 0u64;
        while echoed < frames {
            let room = dd_tx.available().expect("available");
            echoed += dd_rx
                .poll(room.min(BATCH), |f| {
                    if let Ok(Some(slot)) = dd_tx.reserve() {
                        f.copy_to(&slot.frame());
                        let _ = slot.commit(f.len());
                    }
                })
                .expect("dd poll") as u64;
            dd_tx.publish();
        }
    });
    let (mut seq, mut got) = (0u64, 0u64);
    let mut buf = [0u8; 64];
    let t = Instant::now();
    while got < frames {
        if seq < frames {
            let n = BATCH.min((frames - seq) as usize);
            send_batch(&mut sw_tx, &mut seq, n);
        }
        got += sw_rx
            .poll(BATCH, |f| {
                f.read_prefix(&mut buf);
            })
            .expect("switch poll") as u64;
    }
    let ns = report(got, t);
    dd.join().expect("dd thread");
    ns
}

fn main() {
    best_of("one ring", one_ring);
    best_of("round trip", round_trip);
    if std::env::args().any(|a| a == "--threads") {
        best_of("two threads", two_threads);
    }
}
