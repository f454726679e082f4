//! A hostile client, end to end: the real `twin switch` with one client port and an
//! inline uplink to `twin nic` (sink). The test process connects to the client
//! socket as a raw vhost-user frontend (`driver_host::raw_frontend`) and posts, in
//! its TX queue (queue 1), every kind of bad descriptor chain, then good frames.
//!
//! The switch must keep running, count each bad chain under its drop reason
//! (`/clients/c1/drops/<reason>`, names from `vhost_device::DropReason::as_str`),
//! and still forward the good frames to the NIC. An avail index that runs far ahead
//! may reset the port, but the switch keeps running and a reconnecting client works.

mod common;

use std::time::{Duration, Instant};

use common::*;
use driver_host::raw_frontend::RawFrontend;
use serde_json::Value;

const C1: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];
const C1_S: &str = "02:00:00:00:00:01";
const OUTSIDE: [u8; 6] = [0x02, 0, 0, 0, 0, 0xfe];
const QSZ: u16 = 64;
const HDR: usize = 12;
const DESC_F_NEXT: u16 = 1;
const DESC_F_WRITE: u16 = 2;
const TX: u16 = 1;

/// A 12-byte zero virtio-net header + a `len`-byte Ethernet frame from C1 to OUTSIDE.
fn frame(len: usize) -> Vec<u8> {
    let mut f = vec![0u8; HDR + len];
    f[HDR..HDR + 6].copy_from_slice(&OUTSIDE);
    f[HDR + 6..HDR + 12].copy_from_slice(&C1);
    if len >= 14 {
        f[HDR + 12] = 0x88;
        f[HDR + 13] = 0xb5;
    }
    f
}

fn connect(sock: &str) -> RawFrontend {
    let start = Instant::now();
    loop {
        match RawFrontend::connect(std::path::Path::new(sock), QSZ, 1 << 20) {
            Ok(f) => return f,
            Err(e) => {
                assert!(
                    start.elapsed() < Duration::from_secs(10),
                    "cannot connect to the client port: {e} ({:?})",
                    std::error::Error::source(&e)
                );
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
}

/// Publishes what was pushed on TX and waits until the switch has returned it all.
fn publish_and_wait(f: &mut RawFrontend, sw: &mut Proc, what: &str) {
    f.publish(TX).expect("publish");
    let want = f.avail_idx(TX);
    let start = Instant::now();
    while f.used_idx(TX).expect("used idx") != want {
        assert!(sw.running(), "the switch died after: {what}");
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "the switch did not return the chain(s) of: {what} (used {}, avail {want})",
            f.used_idx(TX).unwrap_or(0)
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(sw.running(), "the switch died after: {what}");
}

/// Posts `n` good 60-byte frames, one descriptor each, from `base`.
fn good_frames(f: &mut RawFrontend, sw: &mut Proc, n: u16) {
    let base = f.buffers();
    let fr = frame(60);
    for i in 0..n {
        let a = base + 0x8000 + 2048 * u64::from(i);
        f.write(a, &fr).expect("write frame");
        f.set_desc(TX, i, a, fr.len() as u32, 0, 0).expect("desc");
        f.push_avail(TX, i).expect("avail");
    }
    publish_and_wait(f, sw, "good frames");
}

fn drop_count(r: &Value, reason: &str) -> u64 {
    r.pointer(&format!("/clients/c1/drops/{reason}"))
        .and_then(Value::as_u64)
        .unwrap_or(0)
}

#[test]
fn hostile_chains_are_dropped_and_counted_and_good_frames_still_flow() {
    let _m = serial();
    let s = Scratch::new("hostile");
    let (nic_s, c1_s) = (s.path("nic.sock"), s.path("c1.sock"));
    let mut nic = Proc::twin(
        "nic",
        &[
            "nic", "--socket", &nic_s, "--mode", "sink", "--poll", "event",
        ],
    );
    wait_for_path(&nic_s, Duration::from_secs(10));
    let c1 = format!("c1={c1_s},mac={C1_S}");
    let up = format!("u0={nic_s},mode=inline");
    let mut sw = Proc::twin(
        "switch",
        &[
            "switch", "--client", &c1, "--uplink", &up, "--poll", "event",
        ],
    );
    wait_for_path(&c1_s, Duration::from_secs(10));
    // Let the uplink connect before frames are sent.
    std::thread::sleep(Duration::from_millis(500));

    let mut f = connect(&c1_s);
    let buf = f.buffers();
    let good = frame(60);
    f.write(buf, &good).expect("write");
    let good_len = good.len() as u32;

    // 1. A buffer outside the client's memory.
    f.set_desc(TX, 0, f.mem_len() + 4096, good_len, 0, 0)
        .unwrap();
    f.push_avail(TX, 0).unwrap();
    publish_and_wait(&mut f, &mut sw, "address outside memory");
    // ... and one straddling its end.
    f.set_desc(TX, 0, f.mem_len() - 10, good_len, 0, 0).unwrap();
    f.push_avail(TX, 0).unwrap();
    publish_and_wait(&mut f, &mut sw, "buffer straddling the end of memory");

    // 2. A chain that loops: 1 -> 2 -> 1 (zero-length descriptors, so only the
    //    loop limit can stop it).
    f.set_desc(TX, 1, buf, 0, DESC_F_NEXT, 2).unwrap();
    f.set_desc(TX, 2, buf, 0, DESC_F_NEXT, 1).unwrap();
    f.push_avail(TX, 1).unwrap();
    publish_and_wait(&mut f, &mut sw, "looping chain");

    // 3. More than MAX_SEGMENTS segments: 17 descriptors of 8 bytes (and a
    //    self-loop with data, which hits the same limit).
    assert_eq!(twin_wire::MAX_SEGMENTS, 16);
    for i in 0..17u16 {
        let last = i == 16;
        f.set_desc(
            TX,
            3 + i,
            buf + 8 * u64::from(i),
            8,
            if last { 0 } else { DESC_F_NEXT },
            4 + i,
        )
        .unwrap();
    }
    f.push_avail(TX, 3).unwrap();
    publish_and_wait(&mut f, &mut sw, "17-segment chain");
    f.set_desc(TX, 20, buf, 8, DESC_F_NEXT, 20).unwrap();
    f.push_avail(TX, 20).unwrap();
    publish_and_wait(&mut f, &mut sw, "self loop with data");

    // 3b. No loop, but padding: 40 descriptors, the first 39 empty, the last holding
    //     a good frame. Empty descriptors add no segment, so only a bound on
    //     descriptors (32, `vhost_device::datapath::MAX_CHAIN_DESCRIPTORS`) stops
    //     a ring-sized chain of them from costing thousands of reads per frame.
    for i in 0..40u16 {
        let last = i == 39;
        let (len, flags) = if last {
            (good_len, 0)
        } else {
            (0, DESC_F_NEXT)
        };
        f.set_desc(TX, 21 + i, buf, len, flags, 22 + i).unwrap();
    }
    f.push_avail(TX, 21).unwrap();
    publish_and_wait(&mut f, &mut sw, "40-descriptor chain of empty descriptors");

    // 4. Shorter than header + Ethernet header (12 + 13 bytes).
    f.set_desc(TX, 0, buf, (HDR + 13) as u32, 0, 0).unwrap();
    f.push_avail(TX, 0).unwrap();
    publish_and_wait(&mut f, &mut sw, "too short");

    // 5. Longer than 12 + 1518 bytes.
    let long = frame(1519);
    f.write(buf + 4096, &long).unwrap();
    f.set_desc(TX, 0, buf + 4096, long.len() as u32, 0, 0)
        .unwrap();
    f.push_avail(TX, 0).unwrap();
    publish_and_wait(&mut f, &mut sw, "too long");

    // 6. A write-only descriptor in TX.
    f.set_desc(TX, 0, buf, good_len, DESC_F_WRITE, 0).unwrap();
    f.push_avail(TX, 0).unwrap();
    publish_and_wait(&mut f, &mut sw, "write-only descriptor in TX");

    // 7. A head index >= queue size in the avail ring, and a `next` >= queue size.
    f.push_avail(TX, QSZ).unwrap();
    publish_and_wait(&mut f, &mut sw, "avail entry >= queue size");
    f.set_desc(TX, 0, buf, good_len, DESC_F_NEXT, QSZ + 5)
        .unwrap();
    f.push_avail(TX, 0).unwrap();
    publish_and_wait(&mut f, &mut sw, "next >= queue size");

    // Good frames after all that.
    good_frames(&mut f, &mut sw, 10);
    assert!(
        f.is_connected(),
        "the switch dropped the client after bad chains"
    );

    // 8. An avail index far ahead of the ring: the port may be reset.
    let jump = f.avail_idx(TX).wrapping_add(QSZ + 7);
    f.set_avail_idx(TX, jump).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    assert!(sw.running(), "the switch died after an avail index jump");
    drop(f);

    // A reconnecting client works.
    std::thread::sleep(Duration::from_millis(300));
    let mut f2 = connect(&c1_s);
    std::thread::sleep(Duration::from_millis(200));
    good_frames(&mut f2, &mut sw, 5);
    drop(f2);
    std::thread::sleep(Duration::from_millis(300));

    assert!(sw.running(), "the switch is not running at the end");
    let sw_r = sw.stop_report();
    let nic_r = nic.stop_report();
    eprintln!("switch {sw_r}\nnic {nic_r}");

    for (reason, want) in [
        ("out_of_memory", 2),
        ("chain_loop", 2),
        ("too_many_segments", 2),
        ("too_short", 1),
        ("too_long", 1),
        ("wrong_direction", 1),
        ("bad_index", 2),
        ("ring_broken", 1),
    ] {
        assert_eq!(
            drop_count(&sw_r, reason),
            want,
            "/clients/c1/drops/{reason} in {sw_r}"
        );
    }
    assert_eq!(
        n(&sw_r, "/clients/c1/rx_packets"),
        15,
        "good frames from c1"
    );
    assert_eq!(n(&nic_r, "/rx_packets"), 15, "good frames at the NIC");
    assert_eq!(n(&sw_r, "/uplinks/u0/tx_packets"), 15);
}
