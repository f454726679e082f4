//! The switch's own drop decisions, end to end: for each reason, a real `twin
//! switch` and real peers, frames of that kind, and the exact count under that
//! reason on the port where the decision is made, with nothing else dropped.
//!
//! * `group_source`, `hairpin`, `destination_down`: raw vhost-user clients
//!   (`driver_host::raw_frontend`) that send hand-made frames, and a raw receiver
//!   that counts what it gets;
//! * `runt`: DPDK testpmd as the NIC (`net_vhost`) forwarding 10-byte packets of
//!   `net_null` to the uplink (a client cannot send one: its device drops
//!   anything shorter than an Ethernet header as `too_short` first);
//! * `too_big_for_uplink`: testpmd as the NIC sends 2036-byte broadcast frames
//!   (`txonly`; as much as a driver receive buffer holds) into an inline uplink;
//!   the switch floods them to a domain-mode uplink, whose exchange slots hold at
//!   most 2032 bytes. (Client frames are at most 1518 bytes, and in inline or
//!   twin mode an uplink takes 2036: only this path reaches the reason.)

mod common;

use std::time::{Duration, Instant};

use common::*;
use driver_host::raw_frontend::RawFrontend;
use serde_json::Value;

const QSZ: u16 = 256;
/// virtio-net header without MRG_RXBUF (the raw frontend negotiates VERSION_1 only).
const HDR: usize = 12;
const DESC_F_WRITE: u16 = 2;
const RX: u16 = 0;
const TX: u16 = 1;
const RX_BUF: u64 = 2048;

const A: [u8; 6] = [0x02, 0, 0, 0, 0, 0x0a];
const A2: [u8; 6] = [0x02, 0, 0, 0, 0, 0xa2];
const B: [u8; 6] = [0x02, 0, 0, 0, 0, 0x0b];
const B_S: &str = "02:00:00:00:00:0b";
const GROUP: [u8; 6] = [0x01, 0x00, 0x5e, 0, 0, 0x01];
const BCAST: [u8; 6] = [0xff; 6];

/// A 60-byte Ethernet frame from `src` to `dst`, with `tag` in its payload.
fn eth(dst: [u8; 6], src: [u8; 6], tag: u8) -> Vec<u8> {
    let mut f = vec![0u8; 60];
    f[..6].copy_from_slice(&dst);
    f[6..12].copy_from_slice(&src);
    f[12] = 0x88;
    f[13] = 0xb5;
    f[14] = tag;
    f
}

/// A raw client that sends frames: TX descriptor `i` at `buffers + i * 2048`.
struct Sender {
    f: RawFrontend,
}

impl Sender {
    /// Sends every frame (one descriptor each) and waits until the switch has
    /// taken them all (its used index caught up).
    fn send(&mut self, frames: &[Vec<u8>], sw: &mut Proc) {
        for chunk in frames.chunks(usize::from(QSZ)) {
            for fr in chunk {
                let slot = self.f.avail_idx(TX) % QSZ;
                let a = self.f.buffers() + RX_BUF * u64::from(slot);
                let mut wire = vec![0u8; HDR];
                wire.extend_from_slice(fr);
                self.f.write(a, &wire).expect("write frame");
                self.f
                    .set_desc(TX, slot, a, wire.len() as u32, 0, 0)
                    .expect("tx desc");
                self.f.push_avail(TX, slot).expect("tx avail");
            }
            self.f.publish(TX).expect("publish");
            let want = self.f.avail_idx(TX);
            let start = Instant::now();
            while self.f.used_idx(TX).expect("used idx") != want {
                assert!(sw.running(), "the switch died");
                assert!(
                    start.elapsed() < Duration::from_secs(10),
                    "the switch did not take the frames"
                );
                std::thread::sleep(Duration::from_millis(2));
            }
        }
    }
}

/// A raw client that receives: every RX buffer posted, frames read back.
struct Receiver {
    f: RawFrontend,
    base: u64,
    next_used: u16,
    got: Vec<Vec<u8>>,
}

impl Receiver {
    fn new(f: RawFrontend) -> Self {
        // RX buffers after the TX area the sender part would use.
        let base = f.buffers() + RX_BUF * u64::from(QSZ);
        let mut r = Receiver {
            f,
            base,
            next_used: 0,
            got: Vec::new(),
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

    /// Reads every frame delivered so far and posts its buffer again.
    fn drain(&mut self) {
        let used = self.f.used_idx(RX).expect("rx used idx");
        let mut any = false;
        while self.next_used != used {
            let (id, len) = self.f.used_elem(RX, self.next_used).expect("used elem");
            self.next_used = self.next_used.wrapping_add(1);
            assert!(id < u32::from(QSZ), "used id {id}");
            assert!(
                (HDR as u32..=RX_BUF as u32).contains(&len),
                "used length {len}"
            );
            let mut buf = vec![0u8; len as usize];
            self.f
                .read(self.base + RX_BUF * u64::from(id), &mut buf)
                .expect("read rx buffer");
            self.got.push(buf[HDR..].to_vec());
            self.f.push_avail(RX, id as u16).expect("rx avail");
            any = true;
        }
        if any {
            self.f.publish(RX).expect("rx publish");
        }
    }

    /// Drains until `n` frames arrived in all.
    fn wait_for(&mut self, n: usize) {
        let start = Instant::now();
        loop {
            self.drain();
            if self.got.len() >= n {
                return;
            }
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "received {} of {n} frames",
                self.got.len()
            );
            std::thread::sleep(Duration::from_millis(2));
        }
    }
}

/// A switch with client ports `a` (no MAC) and `b` (`mac=B`, pinned), and its
/// control socket.
struct TwoClients {
    _s: Scratch,
    sw: Proc,
    ctl: String,
    a: String,
    b: String,
}

fn two_clients(tag: &str) -> TwoClients {
    let s = Scratch::new(tag);
    let (a, b, ctl) = (s.path("a.sock"), s.path("b.sock"), s.path("ctl.sock"));
    let (ac, bc) = (format!("a={a}"), format!("b={b},mac={B_S}"));
    let sw = Proc::twin(
        "switch",
        &[
            "switch",
            "--client",
            &ac,
            "--client",
            &bc,
            "--poll",
            "event",
            "--control",
            &ctl,
        ],
    );
    for p in [&a, &b, &ctl] {
        wait_for_path(p, Duration::from_secs(10));
    }
    TwoClients {
        _s: s,
        sw,
        ctl,
        a,
        b,
    }
}

/// Connects `a` as a sender and `b` as a receiver; returns once both are ready.
fn attach(t: &TwoClients) -> (Sender, Receiver) {
    let rcv = Receiver::new(connect_raw(&t.b, QSZ, 2 << 20));
    let snd = Sender {
        f: connect_raw(&t.a, QSZ, 2 << 20),
    };
    wait_status(&t.ctl, Duration::from_secs(10), "both clients up", |st| {
        n(st, "/clients/a/connects") == 1 && n(st, "/clients/b/connects") == 1
    });
    (snd, rcv)
}

/// Asserts that the only drops anywhere (every port, every reason) are `want`
/// frames under `reason` on `port`.
fn only_drops(r: &Value, port: &str, reason: &str, want: u64) {
    assert_eq!(
        n(r, &format!("{port}/drops/{reason}")),
        want,
        "{port}/drops/{reason} in {r}"
    );
    assert_eq!(
        drops(r, &format!("{port}/drops")),
        want,
        "other drops on {port}: {r}"
    );
    assert_eq!(drops(r, "/drops"), want, "drops on other ports: {r}");
}

#[test]
fn group_source_frames_are_dropped_at_the_ingress_and_counted() {
    let _m = serial();
    let mut t = two_clients("drop-group");
    let (mut snd, mut rcv) = attach(&t);
    const BAD: usize = 50;
    const GOOD: usize = 10;
    let bad: Vec<_> = (0..BAD).map(|i| eth(B, GROUP, i as u8)).collect();
    snd.send(&bad, &mut t.sw);
    let good: Vec<_> = (0..GOOD).map(|i| eth(B, A, i as u8)).collect();
    snd.send(&good, &mut t.sw);
    rcv.wait_for(GOOD);
    let st = wait_status(&t.ctl, Duration::from_secs(10), "all counted", |st| {
        n(st, "/clients/a/rx_packets") == (BAD + GOOD) as u64
    });
    only_drops(&st, "/clients/a", "group_source", BAD as u64);
    let r = t.sw.stop_report();
    rcv.drain();
    only_drops(&r, "/clients/a", "group_source", BAD as u64);
    assert_eq!(n(&r, "/clients/a/rx_packets"), (BAD + GOOD) as u64);
    assert_eq!(n(&r, "/clients/b/tx_packets"), GOOD as u64);
    assert_eq!(
        rcv.got, good,
        "b received exactly the good frames, in order"
    );
}

#[test]
fn hairpin_frames_to_an_address_learned_on_the_ingress_port_are_counted() {
    let _m = serial();
    let mut t = two_clients("drop-hairpin");
    let (mut snd, mut rcv) = attach(&t);
    // A2 is learned on a (the broadcast reaches b).
    let learn = eth(BCAST, A2, 0xff);
    snd.send(std::slice::from_ref(&learn), &mut t.sw);
    rcv.wait_for(1);
    const HAIRPIN: usize = 40;
    const GOOD: usize = 10;
    let hp: Vec<_> = (0..HAIRPIN).map(|i| eth(A2, A, i as u8)).collect();
    snd.send(&hp, &mut t.sw);
    let good: Vec<_> = (0..GOOD).map(|i| eth(B, A, i as u8)).collect();
    snd.send(&good, &mut t.sw);
    rcv.wait_for(1 + GOOD);
    wait_status(&t.ctl, Duration::from_secs(10), "all counted", |st| {
        n(st, "/clients/a/rx_packets") == (1 + HAIRPIN + GOOD) as u64
    });
    let r = t.sw.stop_report();
    rcv.drain();
    only_drops(&r, "/clients/a", "hairpin", HAIRPIN as u64);
    assert_eq!(n(&r, "/clients/a/rx_packets"), (1 + HAIRPIN + GOOD) as u64);
    assert_eq!(n(&r, "/clients/b/tx_packets"), (1 + GOOD) as u64);
    let mut want = vec![learn];
    want.extend(good);
    assert_eq!(
        rcv.got, want,
        "b received the broadcast and the good frames"
    );
}

#[test]
fn frames_to_a_disconnected_client_count_as_destination_down() {
    let _m = serial();
    let mut t = two_clients("drop-down");
    let (mut snd, mut rcv) = attach(&t);
    // b's address is pinned to b (mac=B): it stays in the table when b goes.
    const BEFORE: usize = 10;
    const DOWN: usize = 30;
    const AFTER: usize = 10;
    let before: Vec<_> = (0..BEFORE).map(|i| eth(B, A, i as u8)).collect();
    snd.send(&before, &mut t.sw);
    rcv.wait_for(BEFORE);
    assert_eq!(rcv.got, before);
    drop(rcv);
    wait_status(&t.ctl, Duration::from_secs(10), "b gone", |st| {
        n(st, "/clients/b/disconnects") == 1
    });
    let down: Vec<_> = (0..DOWN).map(|i| eth(B, A, 0x40 + i as u8)).collect();
    snd.send(&down, &mut t.sw);
    let st = wait_status(&t.ctl, Duration::from_secs(10), "down counted", |st| {
        n(st, "/clients/a/rx_packets") == (BEFORE + DOWN) as u64
    });
    only_drops(&st, "/clients/a", "destination_down", DOWN as u64);
    // b back: frames flow again, and only the new ones arrive.
    let mut rcv = Receiver::new(connect_raw(&t.b, QSZ, 2 << 20));
    wait_status(&t.ctl, Duration::from_secs(10), "b back", |st| {
        n(st, "/clients/b/connects") == 2
    });
    let after: Vec<_> = (0..AFTER).map(|i| eth(B, A, 0x80 + i as u8)).collect();
    snd.send(&after, &mut t.sw);
    rcv.wait_for(AFTER);
    let r = t.sw.stop_report();
    rcv.drain();
    only_drops(&r, "/clients/a", "destination_down", DOWN as u64);
    assert_eq!(
        n(&r, "/clients/a/rx_packets"),
        (BEFORE + DOWN + AFTER) as u64
    );
    assert_eq!(n(&r, "/clients/b/tx_packets"), (BEFORE + AFTER) as u64);
    assert_eq!(
        rcv.got, after,
        "b, back, received only the frames sent after"
    );
}

/// Runs testpmd's frames into uplink u0 (in `mode`; u1, domain, has a sink NIC):
/// testpmd starts sending once u0's fast path is where `mode` says (with
/// `inline`, none reach the driver domain that owns it at first) and stops once
/// `enough` holds on the switch's status. Returns the switch's final report.
fn testpmd_frames_into_uplink(
    tag: &str,
    mode: &str,
    vdev: &str,
    args: &str,
    enough: impl Fn(&Value) -> bool,
) -> Value {
    let _m = serial();
    let s = Scratch::new(tag);
    let (tp_s, nic_s, ctl) = (s.path("tp.sock"), s.path("nic.sock"), s.path("ctl.sock"));
    let mut tp = TestpmdNic::start(&tp_s, vdev, args);
    // (Its prompt ends no line; commands wait in the pipe until it reads them.)
    wait_for_path(&tp_s, Duration::from_secs(30));
    let mut nic = Proc::twin(
        "nic",
        &[
            "nic", "--socket", &nic_s, "--mode", "sink", "--poll", "event",
        ],
    );
    wait_for_path(&nic_s, Duration::from_secs(10));
    let (u0, u1) = (
        format!("u0={tp_s},mode={mode}"),
        format!("u1={nic_s},mode=domain"),
    );
    let mut sw = Proc::twin(
        "switch",
        &[
            "switch",
            "--uplink",
            &u0,
            "--uplink",
            &u1,
            "--poll",
            "event",
            "--control",
            &ctl,
        ],
    );
    wait_for_path(&ctl, Duration::from_secs(10));
    wait_status(&ctl, Duration::from_secs(30), "u0 and u1 up", |st| {
        fast_path(st) == Some(mode)
            && maybe_str(st, "/uplinks/u1/detail/driver/fast_path") == Some("domain")
    });
    tp.command("start");
    wait_status(
        &ctl,
        Duration::from_secs(60),
        "enough frames from testpmd",
        enough,
    );
    tp.command("stop");
    tp.wait_for("Forward statistics for port 0", Duration::from_secs(20));
    tp.quit();
    // Every frame the switch counts as received is switched (and, if dropped,
    // counted) in the same loop iteration, so any one report adds up exactly.
    let r = sw.stop_report();
    let nic_r = nic.stop_report();
    eprintln!("switch {r}\nnic {nic_r}");
    assert_eq!(n(&nic_r, "/rx_packets"), 0, "the sink NIC received frames");
    assert_eq!(
        drops(&nic_r, "/rx_drops"),
        0,
        "the sink NIC was sent frames"
    );
    r
}

#[test]
fn runt_frames_from_an_uplink_are_counted() {
    // net_null's 10-byte packets, forwarded as they are.
    let r = testpmd_frames_into_uplink(
        "drop-runt",
        "inline",
        "--vdev net_null0,size=10",
        "--forward-mode=io",
        |st| n(st, "/uplinks/u0/rx_packets") >= 1000,
    );
    let rx = n(&r, "/uplinks/u0/rx_packets");
    assert!(rx >= 1000, "only {rx} frames");
    only_drops(&r, "/uplinks/u0", "runt", rx);
    assert_eq!(n(&r, "/uplinks/u1/tx_packets"), 0);
}

/// testpmd sends 2036-byte broadcast frames.
const TXONLY_2036: &str = "--forward-mode=txonly --txpkts=2036 --eth-peer=0,ff:ff:ff:ff:ff:ff";

#[test]
fn frames_larger_than_the_uplink_buffer_count_as_too_big_for_uplink() {
    // 2036 bytes: a driver receive buffer (2048) less the 12-byte header; the
    // domain uplink's exchange slots hold 2048 - 16 (slot header) = 2032.
    let r = testpmd_frames_into_uplink("drop-toobig", "inline", "", TXONLY_2036, |st| {
        n(st, "/uplinks/u0/rx_packets") >= 1000
    });
    let rx = n(&r, "/uplinks/u0/rx_packets");
    assert!(rx >= 1000, "only {rx} frames");
    assert_eq!(n(&r, "/uplinks/u0/rx_bytes"), rx * 2036, "frame sizes");
    only_drops(&r, "/uplinks/u1", "too_big_for_uplink", rx);
    assert_eq!(n(&r, "/uplinks/u1/tx_packets"), 0);
}

/// The same 2036-byte frames into a domain-mode uplink: its driver domain cannot
/// fit them in a `from_nic` slot (2032 bytes). It must drop and count them
/// (`domain_from_nic_too_big`), not cut them to 2032 bytes and pass them on.
#[test]
fn frames_larger_than_an_exchange_slot_are_dropped_in_the_domain_not_truncated() {
    // Until enough were dropped, or one got through (which fails below at once).
    let r = testpmd_frames_into_uplink("drop-dd-toobig", "domain", "", TXONLY_2036, |st| {
        n(st, "/uplinks/u0/drops/domain_from_nic_too_big") >= 1000
            || n(st, "/uplinks/u0/rx_packets") > 0
    });
    assert_eq!(
        n(&r, "/uplinks/u0/rx_packets"),
        0,
        "frames reached the switch: {r}"
    );
    let dropped = n(&r, "/uplinks/u0/drops/domain_from_nic_too_big");
    assert!(dropped >= 1000, "only {dropped} frames");
    assert_eq!(
        n(&r, "/uplinks/u0/rx_packets"),
        0,
        "frames reached the switch"
    );
    // A NIC faster than the DD may also fill its ring: those are counted too.
    assert_eq!(
        drops(&r, "/drops"),
        dropped + n(&r, "/uplinks/u0/drops/domain_from_nic_ring_full"),
        "other drops: {r}"
    );
    assert_eq!(n(&r, "/uplinks/u1/tx_packets"), 0);
}
