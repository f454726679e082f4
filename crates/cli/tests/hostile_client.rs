//! A hostile client, end to end: the real `twin switch` with one client port and an
//! inline uplink to `twin nic` (sink). The test process connects to the client
//! socket as a raw vhost-user frontend (`driver_host::raw_frontend`) and posts, in
//! its TX queue (queue 1), every kind of bad descriptor chain, then good frames.
//!
//! The switch must keep running, count each bad chain under its drop reason
//! (`/clients/c1/drops/<reason>`, names from `vhost_device::DropReason::as_str`),
//! and still forward the good frames to the NIC. An avail index that runs far ahead
//! resets the port (the connection is closed), the switch keeps running and a
//! reconnecting client works. Indirect descriptors (VIRTIO_RING_F_INDIRECT_DESC is
//! never offered) are dropped as `indirect`, never followed: the table they point
//! at holds a valid frame, which must not reach the NIC.
//!
//! The second test plays a hostile *receiver*: client `c1` offers bad receive
//! chains (read-only, too long, outside its memory, indirect, a bad index, a
//! zero-length buffer) one at a time while a raw sender `c2` sends it frames and
//! frames to a well-behaved receiver `c3`. Each bad chain is counted under its
//! reason on c1 (`detail/to_client_drops`), returned with length 0, the memory it
//! names is left untouched, and c3 gets every frame meant for it.

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
const DESC_F_INDIRECT: u16 = 4;
const RX: u16 = 0;
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
    n(r, &format!("/clients/c1/drops/{reason}"))
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
    let ctl = s.path("ctl.sock");
    let c1 = format!("c1={c1_s},mac={C1_S}");
    let up = format!("u0={nic_s},mode=inline");
    let mut sw = Proc::twin(
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
            &ctl,
        ],
    );
    wait_for_path(&c1_s, Duration::from_secs(10));
    wait_for_path(&ctl, Duration::from_secs(10));
    // The uplink is up before frames are sent (none may count as uplink_down).
    wait_status(&ctl, Duration::from_secs(20), "uplink fast path up", |st| {
        fast_path(st) == Some("inline")
    });

    let mut f = connect_raw(&c1_s, QSZ, 1 << 20);
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

    // 7b. Indirect descriptors: the table at `table` holds one descriptor with a
    //     valid frame; followed, it would reach the NIC. Alone, and as the second
    //     descriptor of a chain.
    let table = buf + 0x2000;
    let frame_at = buf + 0x3000;
    f.write(frame_at, &good).unwrap();
    let mut entry = frame_at.to_le_bytes().to_vec();
    entry.extend_from_slice(&good_len.to_le_bytes());
    entry.extend_from_slice(&[0u8; 4]); // flags 0, next 0
    f.write(table, &entry).unwrap();
    f.set_desc(TX, 0, table, 16, DESC_F_INDIRECT, 0).unwrap();
    f.push_avail(TX, 0).unwrap();
    publish_and_wait(&mut f, &mut sw, "indirect descriptor");
    f.write(buf + 0x4000, &good[..HDR]).unwrap();
    f.set_desc(TX, 1, buf + 0x4000, HDR as u32, DESC_F_NEXT, 2)
        .unwrap();
    f.set_desc(TX, 2, table, 16, DESC_F_INDIRECT, 0).unwrap();
    f.push_avail(TX, 1).unwrap();
    publish_and_wait(&mut f, &mut sw, "indirect descriptor in a chain");

    // Good frames after all that.
    good_frames(&mut f, &mut sw, 10);
    assert!(
        f.is_connected(),
        "the switch dropped the client after bad chains"
    );
    let st = wait_status(
        &ctl,
        Duration::from_secs(10),
        "10 good frames at u0",
        |st| n(st, "/uplinks/u0/tx_packets") == 10,
    );
    assert_eq!(n(&st, "/clients/c1/connects"), 1);

    // 8. An avail index far ahead of the ring: the ring is broken, the port reset
    //    and the client disconnected.
    let jump = f.avail_idx(TX).wrapping_add(QSZ + 7);
    f.set_avail_idx(TX, jump).unwrap();
    wait_status(
        &ctl,
        Duration::from_secs(10),
        "the ring counted broken",
        |st| drop_count(st, "ring_broken") == 1 && n(st, "/clients/c1/disconnects") == 1,
    );
    let start = Instant::now();
    while f.is_connected() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "the switch kept the client that broke its ring"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(sw.running(), "the switch died after an avail index jump");
    drop(f);

    // A reconnecting client works.
    let mut f2 = connect_raw(&c1_s, QSZ, 1 << 20);
    wait_status(&ctl, Duration::from_secs(10), "the client back", |st| {
        n(st, "/clients/c1/connects") == 2
    });
    good_frames(&mut f2, &mut sw, 5);
    wait_status(
        &ctl,
        Duration::from_secs(10),
        "15 good frames at u0",
        |st| n(st, "/uplinks/u0/tx_packets") == 15,
    );
    drop(f2);

    assert!(sw.running(), "the switch is not running at the end");
    let sw_r = sw.stop_report();
    let nic_r = nic.stop_report();
    eprintln!("switch {sw_r}\nnic {nic_r}");

    let expected = [
        ("out_of_memory", 2),
        ("chain_loop", 2),
        ("too_many_segments", 2),
        ("too_short", 1),
        ("too_long", 1),
        ("wrong_direction", 1),
        ("bad_index", 2),
        ("indirect", 2),
        ("ring_broken", 1),
    ];
    for (reason, want) in expected {
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
    // Exactly the drops above, and no other anywhere.
    let total: u64 = expected.iter().map(|(_, w)| w).sum();
    assert_eq!(
        drops(&sw_r, "/clients/c1/drops"),
        total,
        "c1's drops: {sw_r}"
    );
    assert_eq!(drops(&sw_r, "/drops"), total, "drops elsewhere: {sw_r}");
    assert_eq!(drops(&nic_r, "/rx_drops"), 0);
}

const C2: [u8; 6] = [0x02, 0, 0, 0, 0, 0x02];
const C3: [u8; 6] = [0x02, 0, 0, 0, 0, 0x03];
const C3_S: &str = "02:00:00:00:00:03";
/// Byte the hostile receiver fills the memory its bad chains name with.
const SENTINEL: u8 = 0xa5;

/// A 12-byte header + 60-byte frame from C2 to `dst`, `tag` in its payload.
fn frame_to(dst: [u8; 6], tag: u8) -> Vec<u8> {
    let mut f = vec![0u8; HDR + 60];
    f[HDR..HDR + 6].copy_from_slice(&dst);
    f[HDR + 6..HDR + 12].copy_from_slice(&C2);
    f[HDR + 12] = 0x88;
    f[HDR + 13] = 0xb5;
    f[HDR + 14] = tag;
    f
}

/// c2 sends `frames` (one descriptor each, slots reused) and waits until the
/// switch has taken them.
fn send_all(c2: &mut RawFrontend, sw: &mut Proc, frames: &[Vec<u8>]) {
    for fr in frames {
        let slot = c2.avail_idx(TX) % QSZ;
        let a = c2.buffers() + 2048 * u64::from(slot);
        c2.write(a, fr).expect("write frame");
        c2.set_desc(TX, slot, a, fr.len() as u32, 0, 0)
            .expect("desc");
        c2.push_avail(TX, slot).expect("avail");
    }
    publish_and_wait(c2, sw, "c2's frames");
}

/// A well-behaved receiver: all RX buffers posted; returns every frame received.
struct GoodRx {
    f: RawFrontend,
    next_used: u16,
    got: Vec<Vec<u8>>,
}

impl GoodRx {
    fn new(f: RawFrontend) -> Self {
        let mut r = GoodRx {
            f,
            next_used: 0,
            got: Vec::new(),
        };
        for i in 0..QSZ {
            let a = r.f.buffers() + 2048 * u64::from(i);
            r.f.set_desc(RX, i, a, 2048, DESC_F_WRITE, 0).unwrap();
            r.f.push_avail(RX, i).unwrap();
        }
        r.f.publish(RX).unwrap();
        r
    }

    fn wait_for(&mut self, want: usize) {
        let start = Instant::now();
        while self.got.len() < want {
            let used = self.f.used_idx(RX).unwrap();
            while self.next_used != used {
                let (id, len) = self.f.used_elem(RX, self.next_used).unwrap();
                self.next_used = self.next_used.wrapping_add(1);
                let mut b = vec![0u8; len as usize];
                self.f
                    .read(self.f.buffers() + 2048 * u64::from(id), &mut b)
                    .unwrap();
                self.got.push(b);
                self.f.push_avail(RX, id as u16).unwrap();
            }
            self.f.publish(RX).unwrap();
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "c3 received {} of {want} frames",
                self.got.len()
            );
            std::thread::sleep(Duration::from_millis(2));
        }
    }
}

/// Fills `len` bytes at `addr` of `f`'s memory with the sentinel.
fn fill(f: &RawFrontend, addr: u64, len: usize) {
    f.write(addr, &vec![SENTINEL; len]).unwrap();
}

/// Whether `len` bytes at `addr` still hold the sentinel.
fn untouched(f: &RawFrontend, addr: u64, len: usize) -> bool {
    let mut b = vec![0u8; len];
    f.read(addr, &mut b).unwrap();
    b.iter().all(|&x| x == SENTINEL)
}

#[test]
fn hostile_receive_chains_are_dropped_counted_and_never_written() {
    let _m = serial();
    let s = Scratch::new("hostile-rx");
    let (c1_s, c2_s, c3_s, ctl) = (
        s.path("c1.sock"),
        s.path("c2.sock"),
        s.path("c3.sock"),
        s.path("ctl.sock"),
    );
    let (c1, c2, c3) = (
        format!("c1={c1_s},mac={C1_S}"),
        format!("c2={c2_s}"),
        format!("c3={c3_s},mac={C3_S}"),
    );
    let mut sw = Proc::twin(
        "switch",
        &[
            "switch",
            "--client",
            &c1,
            "--client",
            &c2,
            "--client",
            &c3,
            "--poll",
            "event",
            "--control",
            &ctl,
        ],
    );
    for p in [&c1_s, &c2_s, &c3_s, &ctl] {
        wait_for_path(p, Duration::from_secs(10));
    }
    let mut rx1 = connect_raw(&c1_s, QSZ, 1 << 20);
    let mut tx2 = connect_raw(&c2_s, QSZ, 1 << 20);
    let mut rx3 = GoodRx::new(connect_raw(&c3_s, QSZ, 1 << 20));
    wait_status(&ctl, Duration::from_secs(10), "three clients up", |st| {
        ["c1", "c2", "c3"]
            .iter()
            .all(|c| n(st, &format!("/clients/{c}/connects")) == 1)
    });

    // Where c1's bad chains point: 4 KiB of sentinel at `target`.
    let target = rx1.buffers() + 0x10000;
    let mem_len = rx1.mem_len();
    fill(&rx1, target, 4096);
    let table = rx1.buffers() + 0x8000;

    // (name, reason, set up the chain; returns its head)
    type Setup = Box<dyn Fn(&RawFrontend) -> u16>;
    let cases: Vec<(&str, &str, Setup)> = vec![
        (
            "read-only buffer",
            "wrong_direction",
            Box::new(move |f| {
                f.set_desc(RX, 0, target, 2048, 0, 0).unwrap();
                0
            }),
        ),
        (
            "17 writable segments",
            "too_many_segments",
            Box::new(move |f| {
                for i in 0..17u16 {
                    let flags = DESC_F_WRITE | if i < 16 { DESC_F_NEXT } else { 0 };
                    f.set_desc(RX, i, target + 64 * u64::from(i), 64, flags, i + 1)
                        .unwrap();
                }
                0
            }),
        ),
        (
            "40 descriptors",
            "chain_loop",
            Box::new(move |f| {
                for i in 0..40u16 {
                    let (len, flags) = if i < 39 {
                        (0, DESC_F_WRITE | DESC_F_NEXT)
                    } else {
                        (2048, DESC_F_WRITE)
                    };
                    f.set_desc(RX, i, target, len, flags, i + 1).unwrap();
                }
                0
            }),
        ),
        (
            "buffer outside memory",
            "out_of_memory",
            Box::new(move |f| {
                f.set_desc(RX, 0, mem_len + 4096, 2048, DESC_F_WRITE, 0)
                    .unwrap();
                0
            }),
        ),
        (
            "buffer straddling the end of memory",
            "out_of_memory",
            Box::new(move |f| {
                f.set_desc(RX, 0, mem_len - 10, 2048, DESC_F_WRITE, 0)
                    .unwrap();
                0
            }),
        ),
        (
            "indirect descriptor",
            "indirect",
            Box::new(move |f| {
                // The table names the sentinel, writable: followed, it would be
                // written.
                let mut e = target.to_le_bytes().to_vec();
                e.extend_from_slice(&2048u32.to_le_bytes());
                e.extend_from_slice(&DESC_F_WRITE.to_le_bytes());
                e.extend_from_slice(&0u16.to_le_bytes());
                f.write(table, &e).unwrap();
                f.set_desc(RX, 0, table, 16, DESC_F_WRITE | DESC_F_INDIRECT, 0)
                    .unwrap();
                0
            }),
        ),
        (
            "next >= queue size",
            "bad_index",
            Box::new(move |f| {
                f.set_desc(RX, 0, target, 64, DESC_F_WRITE | DESC_F_NEXT, QSZ + 5)
                    .unwrap();
                0
            }),
        ),
        ("avail entry >= queue size", "bad_index", Box::new(|_| QSZ)),
    ];

    let mut sent_c1 = 0u64;
    let mut sent_c3 = 0usize;
    let mut want: std::collections::BTreeMap<&str, u64> = Default::default();
    for (i, (name, reason, setup)) in cases.iter().enumerate() {
        let head = setup(&rx1);
        rx1.push_avail(RX, head).unwrap();
        rx1.publish(RX).unwrap();
        let tag = i as u8;
        send_all(&mut tx2, &mut sw, &[frame_to(C1, tag), frame_to(C3, tag)]);
        sent_c1 += 1;
        sent_c3 += 1;
        *want.entry(reason).or_default() += 1;
        let w = want[reason];
        wait_status(&ctl, Duration::from_secs(10), name, |st| {
            n(st, &format!("/clients/c1/detail/to_client_drops/{reason}")) == w
        });
        // Consumed: returned with length 0.
        let start = Instant::now();
        while rx1.used_idx(RX).unwrap() != i as u16 + 1 {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "{name}: not returned"
            );
            std::thread::sleep(Duration::from_millis(2));
        }
        assert_eq!(
            rx1.used_elem(RX, i as u16).unwrap(),
            (u32::from(head), 0),
            "{name}: used entry"
        );
        assert!(untouched(&rx1, target, 4096), "{name}: the switch wrote");
        rx3.wait_for(sent_c3);
        assert!(sw.running(), "the switch died after: {name}");
    }
    assert!(rx1.is_connected(), "c1 was dropped for bad receive chains");

    // A good buffer: the frame arrives.
    let good_at = rx1.buffers();
    rx1.set_desc(RX, 1, good_at, 2048, DESC_F_WRITE, 0).unwrap();
    rx1.push_avail(RX, 1).unwrap();
    rx1.publish(RX).unwrap();
    let good = frame_to(C1, 0x77);
    send_all(&mut tx2, &mut sw, std::slice::from_ref(&good));
    sent_c1 += 1;
    let start = Instant::now();
    while rx1.used_idx(RX).unwrap() != cases.len() as u16 + 1 {
        assert!(start.elapsed() < Duration::from_secs(10), "no good frame");
        std::thread::sleep(Duration::from_millis(2));
    }
    let (id, len) = rx1.used_elem(RX, cases.len() as u16).unwrap();
    assert_eq!((id, len as usize), (1, good.len()));
    let mut got = vec![0u8; good.len()];
    rx1.read(good_at, &mut got).unwrap();
    assert_eq!(&got[HDR..], &good[HDR..], "the good frame");

    // A zero-length buffer holds no frame: every frame meets it as
    // buffer_too_small, and it is not consumed (it stays at the ring's head).
    rx1.set_desc(RX, 2, target, 0, DESC_F_WRITE, 0).unwrap();
    rx1.push_avail(RX, 2).unwrap();
    rx1.publish(RX).unwrap();
    for k in 0..2u8 {
        send_all(
            &mut tx2,
            &mut sw,
            &[frame_to(C1, 0x80 + k), frame_to(C3, 0x80 + k)],
        );
        sent_c1 += 1;
        sent_c3 += 1;
        let w = u64::from(k) + 1;
        wait_status(&ctl, Duration::from_secs(10), "zero-length buffer", |st| {
            n(st, "/clients/c1/detail/to_client_drops/buffer_too_small") == w
        });
        rx3.wait_for(sent_c3);
    }
    *want.entry("buffer_too_small").or_default() += 2;
    assert_eq!(rx1.used_idx(RX).unwrap(), cases.len() as u16 + 1);
    assert!(untouched(&rx1, target, 4096), "the switch wrote");

    drop(rx1);
    drop(tx2);
    drop(rx3);
    let r = sw.stop_report();
    eprintln!("switch {r}");
    let total: u64 = want.values().sum();
    for (reason, w) in &want {
        assert_eq!(
            n(&r, &format!("/clients/c1/detail/to_client_drops/{reason}")),
            *w,
            "{reason}"
        );
    }
    assert_eq!(drops(&r, "/clients/c1/drops"), total, "c1's drops: {r}");
    assert_eq!(drops(&r, "/drops"), total, "drops elsewhere: {r}");
    assert_eq!(n(&r, "/clients/c2/rx_packets"), sent_c1 + sent_c3 as u64);
    assert_eq!(n(&r, "/clients/c1/tx_packets"), 1);
    assert_eq!(n(&r, "/clients/c3/tx_packets"), sent_c3 as u64);
    assert_eq!(n(&r, "/clients/c3/detail/to_client_drops/no_buffers"), 0);
}
