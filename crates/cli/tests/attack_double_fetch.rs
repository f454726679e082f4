//! A double-fetch attack on anti-spoofing, end to end.
//!
//! The real `twin switch` runs with an attacker client port `atk` pinned to MAC A
//! (`mac=A`), a receiving client port `rcv`, and an uplink `u0` to the built-in NIC
//! (sink, with `--digest`) in `inline`, `domain` or `twin` mode. The test process
//! is both clients, as raw vhost-user frontends (`driver_host::raw_frontend`):
//!
//! * the attacker posts `TOTAL` broadcast frames from A, every TX descriptor
//!   pointing at one and the same 60-byte frame in its memory, while a second
//!   thread flips that frame's source MAC between A and a spoofed B as fast as it
//!   can;
//! * the receiver posts RX buffers, reads the source MAC of every frame the switch
//!   delivers into them, and posts the buffers again.
//!
//! Whatever the switch checked must be what it delivers: the receiver must see only
//! A, and the NIC's order-sensitive digest must be that of `rx_packets` copies of
//! the frame from A. Every frame sent is accounted for: dropped as spoofed at the
//! ingress, or delivered (or counted as dropped) at both the receiver and the
//! uplink. Broadcast covers both paths, client to client and client to uplink.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use driver_host::raw_frontend::RawFrontend;
use serde_json::Value;
use traffic_gen::FrameDigest;

const A: [u8; 6] = [0x02, 0, 0, 0, 0, 0x0a];
const A_S: &str = "02:00:00:00:00:0a";
const B: [u8; 6] = [0x02, 0, 0, 0, 0, 0x0b];
const QSZ: u16 = 256;
/// virtio-net header without MRG_RXBUF (the raw frontend negotiates VERSION_1 only).
const HDR: usize = 12;
const FRAME_LEN: usize = 60;
const DESC_F_WRITE: u16 = 2;
const RX: u16 = 0;
const TX: u16 = 1;
/// Frames the attacker sends per run.
const TOTAL: u64 = 200_000;
/// Receive buffer size.
const RX_BUF: u64 = 2048;

/// The attacker's Ethernet frame from `src` to broadcast.
fn eth(src: [u8; 6]) -> Vec<u8> {
    let mut f = vec![0u8; FRAME_LEN];
    f[..6].copy_from_slice(&[0xff; 6]);
    f[6..12].copy_from_slice(&src);
    f[12] = 0x88;
    f[13] = 0xb5;
    for (i, b) in f[14..].iter_mut().enumerate() {
        *b = i as u8;
    }
    f
}

/// Source MACs of the frames the receiver got.
#[derive(Debug, Default)]
struct Seen {
    from_a: u64,
    from_b: u64,
    /// Neither A nor B (a torn address), or a frame that is not the attacker's.
    other: u64,
}

impl Seen {
    fn total(&self) -> u64 {
        self.from_a + self.from_b + self.other
    }
}

/// The receiving client: RX buffer `i` at `base + i * RX_BUF`, all posted.
struct Receiver {
    f: RawFrontend,
    base: u64,
    next_used: u16,
    seen: Seen,
}

impl Receiver {
    fn new(f: RawFrontend) -> Self {
        let mut r = Receiver {
            base: f.buffers(),
            f,
            next_used: 0,
            seen: Seen::default(),
        };
        for i in 0..QSZ {
            let a = r.base + RX_BUF * u64::from(i);
            r.f.set_desc(RX, i, a, RX_BUF as u32, DESC_F_WRITE, 0)
                .expect("rx desc");
            r.f.push_avail(RX, i).expect("rx avail");
        }
        r.f.publish(RX).expect("rx publish");
        r
    }

    /// Reads every frame delivered so far and posts its buffer again. Returns how
    /// many.
    fn drain(&mut self) -> u64 {
        let used = self.f.used_idx(RX).expect("rx used idx");
        let want_a = eth(A);
        let mut n = 0;
        while self.next_used != used {
            let (id, len) = self.f.used_elem(RX, self.next_used).expect("used elem");
            self.next_used = self.next_used.wrapping_add(1);
            assert!(id < u32::from(QSZ), "used id {id}");
            let mut buf = [0u8; HDR + FRAME_LEN];
            self.f
                .read(self.base + RX_BUF * u64::from(id), &mut buf)
                .expect("read rx buffer");
            let frame = &buf[HDR..];
            if len as usize != HDR + FRAME_LEN || frame[..6] != [0xff; 6] {
                self.seen.other += 1;
            } else if frame[6..12] == A {
                self.seen.from_a += 1;
                assert_eq!(frame, &want_a[..], "a frame from A with other bytes");
            } else if frame[6..12] == B {
                self.seen.from_b += 1;
            } else {
                self.seen.other += 1;
            }
            self.f.push_avail(RX, id as u16).expect("rx avail");
            n += 1;
        }
        if n > 0 {
            self.f.publish(RX).expect("rx publish");
        }
        n
    }
}

/// Sum of the drop counters of `port` whose reason is in `reasons`.
fn drops_of(v: &Value, port: &str, reasons: &[&str]) -> u64 {
    reasons
        .iter()
        .map(|r| n(v, &format!("{port}/drops/{r}")))
        .sum()
}

/// Drops a frame can meet at an uplink (counted on the uplink by the switch).
const UPLINK_DROPS: &[&str] = &["uplink_ring_full", "too_big_for_uplink", "uplink_down"];

/// Every drop counted on the receiving port (the switch's and its device's).
fn rcv_drops(v: &Value) -> u64 {
    drops(v, "/clients/rcv/drops")
}

fn attack(mode: &str) {
    let _m = serial();
    let s = Scratch::new(&format!("dfetch-{mode}"));
    let (nic_s, atk_s, rcv_s, ctl) = (
        s.path("nic.sock"),
        s.path("atk.sock"),
        s.path("rcv.sock"),
        s.path("ctl.sock"),
    );
    let mut nic = Proc::twin(
        "nic",
        &[
            "nic", "--socket", &nic_s, "--mode", "sink", "--poll", "event", "--digest",
        ],
    );
    wait_for_path(&nic_s, Duration::from_secs(10));
    let atk_spec = format!("atk={atk_s},mac={A_S}");
    let rcv_spec = format!("rcv={rcv_s}");
    let up = format!("u0={nic_s},mode={mode}");
    let mut sw = Proc::twin(
        "switch",
        &[
            "switch",
            "--client",
            &atk_spec,
            "--client",
            &rcv_spec,
            "--uplink",
            &up,
            "--poll",
            "event",
            "--control",
            &ctl,
        ],
    );
    wait_for_path(&atk_s, Duration::from_secs(10));
    wait_for_path(&rcv_s, Duration::from_secs(10));
    wait_for_path(&ctl, Duration::from_secs(10));
    wait_status(&ctl, Duration::from_secs(20), "uplink fast path up", |st| {
        fast_path(st) == Some(mode)
    });

    let mut rcv = Receiver::new(connect_raw(&rcv_s, QSZ, 2 << 20));
    let mut atk = connect_raw(&atk_s, QSZ, 2 << 20);
    wait_status(&ctl, Duration::from_secs(10), "both clients up", |st| {
        n(st, "/clients/atk/connects") == 1 && n(st, "/clients/rcv/connects") == 1
    });

    // One frame, every TX descriptor pointing at it.
    let frame_at = atk.buffers();
    let mut wire = vec![0u8; HDR];
    wire.extend_from_slice(&eth(A));
    atk.write(frame_at, &wire).expect("write frame");
    for i in 0..QSZ {
        atk.set_desc(TX, i, frame_at, wire.len() as u32, 0, 0)
            .expect("tx desc");
    }

    // The second thread: flips the source MAC between A and B, ending on A.
    let stop = Arc::new(AtomicBool::new(false));
    let flipper = {
        let region = Arc::clone(atk.region());
        let stop = Arc::clone(&stop);
        std::thread::spawn(move || {
            let mac = region
                .slice(frame_at + (HDR + 6) as u64, 6)
                .expect("source MAC in the attacker's memory");
            let mut flips = 0u64;
            while !stop.load(Ordering::Relaxed) {
                mac.copy_from(&B);
                mac.copy_from(&A);
                flips += 1;
            }
            flips
        })
    };

    let deadline = Instant::now() + Duration::from_secs(120);
    let mut sent = 0u64;
    loop {
        let used = atk.used_idx(TX).expect("tx used idx");
        let in_flight = atk.avail_idx(TX).wrapping_sub(used);
        let room = u64::from(QSZ - in_flight).min(TOTAL - sent);
        for _ in 0..room {
            let slot = atk.avail_idx(TX) % QSZ;
            atk.push_avail(TX, slot).expect("tx avail");
        }
        if room > 0 {
            atk.publish(TX).expect("tx publish");
            sent += room;
        }
        let got = rcv.drain();
        if sent == TOTAL && in_flight == 0 {
            break;
        }
        if room == 0 && got == 0 {
            assert!(
                Instant::now() < deadline,
                "the switch took {} of {TOTAL} frames in time",
                sent - u64::from(in_flight)
            );
            assert!(sw.running(), "the switch died");
            std::thread::yield_now();
        }
    }
    stop.store(true, Ordering::Relaxed);
    let flips = flipper.join().expect("flipper");

    // Everything the switch forwarded has reached the receiver (or was counted as
    // dropped there) and the uplink.
    let mut last = Value::Null;
    let fwd = loop {
        rcv.drain();
        let st = ctl_status(&ctl);
        let spoofed = n(&st, "/clients/atk/drops/spoofed_source");
        let fwd = TOTAL - spoofed.min(TOTAL);
        let at_rcv = n(&st, "/clients/rcv/tx_packets") + rcv_drops(&st);
        let at_up = n(&st, "/uplinks/u0/tx_packets") + drops_of(&st, "/uplinks/u0", UPLINK_DROPS);
        if n(&st, "/clients/atk/rx_packets") == TOTAL
            && at_rcv == fwd
            && at_up == fwd
            && rcv.seen.total() == n(&st, "/clients/rcv/tx_packets")
        {
            break fwd;
        }
        assert!(
            Instant::now() < deadline,
            "not accounted for in time; receiver saw {:?}; last status: {last}",
            rcv.seen
        );
        last = st;
        std::thread::sleep(Duration::from_millis(10));
    };

    let sw_r = sw.stop_report();
    let nic_r = nic.stop_report();
    let spoofed = n(&sw_r, "/clients/atk/drops/spoofed_source");
    let up_tx = n(&sw_r, "/uplinks/u0/tx_packets");
    let nic_rx = n(&nic_r, "/rx_packets");
    let mut want = FrameDigest::new();
    let a_frame = eth(A);
    for _ in 0..nic_rx {
        want.frame(&a_frame);
    }
    let nic_digest = str_at(&nic_r, "/rx_digest").to_string();
    eprintln!(
        "mode {mode}: sent {TOTAL}, flips {flips}, dropped as spoofed {spoofed}, forwarded \
         {fwd}; receiver saw {:?} (tx {}, drops {}); uplink tx {up_tx}; NIC rx {nic_rx}, \
         digest {} (frames all from A: {})",
        rcv.seen,
        n(&sw_r, "/clients/rcv/tx_packets"),
        rcv_drops(&sw_r),
        nic_digest,
        want.hex(),
    );
    eprintln!("switch {sw_r}\nnic {nic_r}");

    assert_eq!(
        rcv.seen.from_b, 0,
        "spoofed frames from B reached the receiver"
    );
    assert_eq!(
        rcv.seen.other, 0,
        "torn or foreign frames reached the receiver"
    );
    assert_eq!(
        nic_digest,
        want.hex(),
        "the NIC received frames other than {nic_rx} copies of the frame from A"
    );
    // The attack ran: the switch saw both addresses.
    assert!(flips > 0, "the flipper never ran");
    assert!(spoofed > 0, "no frame was read with the spoofed address");
    assert!(fwd > 0, "no frame was read with the pinned address");
    // Everything sent is accounted for.
    assert_eq!(n(&sw_r, "/clients/atk/rx_packets"), TOTAL);
    assert_eq!(
        drops(&sw_r, "/clients/atk/drops"),
        spoofed,
        "other drops at atk"
    );
    assert_eq!(
        n(&sw_r, "/clients/rcv/tx_packets") + rcv_drops(&sw_r),
        fwd,
        "receiver"
    );
    assert_eq!(rcv.seen.from_a, n(&sw_r, "/clients/rcv/tx_packets"));
    assert_eq!(
        up_tx + drops_of(&sw_r, "/uplinks/u0", UPLINK_DROPS),
        fwd,
        "uplink"
    );
    // In domain mode the domain may drop a frame when its driver's ring to the NIC
    // is full (a NIC behind on a busy machine); it counts it.
    assert_eq!(
        nic_rx + drops(&nic_r, "/rx_drops") + n(&sw_r, "/uplinks/u0/drops/domain_nic_tx_ring_full"),
        up_tx,
        "the NIC got what the uplink queued"
    );
    assert!(nic_rx > 0, "nothing reached the NIC");
    assert!(rcv.seen.from_a > 0, "nothing reached the receiver");
}

#[test]
fn double_fetch_spoofing_fails_inline() {
    attack("inline");
}

#[test]
fn double_fetch_spoofing_fails_domain() {
    attack("domain");
}

#[test]
fn double_fetch_spoofing_fails_twin() {
    attack("twin");
}
