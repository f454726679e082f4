//! AF_PACKET TPACKET_V3 rings against the real kernel, through a TAP device this
//! test creates. Receive: frames written into the TAP arrive on the device; a
//! packet socket bound to it, its rings mapped as a driver domain maps them, reads
//! every one, in order and intact, and none of the frames the kernel itself sends
//! out of the device (outgoing frames are not seen). Transmit: frames put into
//! the transmit ring and kicked leave the device, in order and intact, as the
//! TAP's reader sees. While the device is down, queued frames are taken back and
//! counted, the socket's error is read once and cleared; a deleted device is an
//! error. Needs root and `ip`.

use std::process::Command;
use std::time::{Duration, Instant};

use kernel_nic::packet::{Kick, PacketSocket, RingGeometry, Rings, TxSlot};
use kernel_nic::{IfName, Recv, Send, Tap, TapQueue};

fn frame(seq: u32) -> Vec<u8> {
    let mut f = vec![0u8; 64];
    f[..6].copy_from_slice(&[0x02, 0, 0, 0, 0x99, 0x01]);
    f[6..12].copy_from_slice(&[0x02, 0, 0, 0, 0x99, 0x02]);
    f[12..14].copy_from_slice(&[0x88, 0xb5]); // local experimental ethertype
    f[14..18].copy_from_slice(&seq.to_be_bytes());
    for (i, b) in f[18..].iter_mut().enumerate() {
        *b = (seq as u8).wrapping_add(i as u8);
    }
    f
}

/// A TAP device this test creates (`PREFIX` and the pid), up, with an AF_PACKET
/// socket bound to it whose rings have `blocks` blocks of 16 KiB, mapped; and the
/// TAP's own queue. The device goes when the queue is dropped.
fn tap_with_rings(prefix: &str, blocks: u32) -> (Rings, TapQueue) {
    let name: IfName = format!("{prefix}{}", std::process::id() % 100_000)
        .parse()
        .unwrap();
    let tap = Tap::open(&name).expect("open a TAP device (root needed)");
    let ok = Command::new("ip")
        .args(["link", "set", name.as_str(), "up"])
        .status()
        .expect("run ip");
    assert!(ok.success());
    let geo = RingGeometry {
        block_size: 1 << 14,
        blocks,
        retire_ms: 1,
    };
    let sock = PacketSocket::open(&name, geo).expect("open the packet socket");
    let rings = Rings::map(sock.into_fd(), geo).expect("map its rings");
    (rings, TapQueue::from_fd(tap.into_fd()))
}

#[test]
fn a_receive_ring_reads_every_frame_in_order() {
    let (mut ring, mut q) = tap_with_rings("twp", 8);
    let n = 500u32;
    for seq in 0..n {
        assert_eq!(q.send(&frame(seq)).unwrap(), Send::Sent);
    }
    let mut got: Vec<Vec<u8>> = Vec::new();
    let mut buf = vec![0u8; 2048];
    let end = Instant::now() + Duration::from_secs(3);
    while (got.len() as u32) < n && Instant::now() < end {
        // A few frames at a time: a block is read across several calls.
        match ring.poll_block(&mut buf, 7, |f| got.push(f.to_vec())) {
            Some(w) => assert_eq!(w.malformed, None, "{w:?}"),
            None => std::thread::sleep(Duration::from_millis(1)),
        }
    }
    assert_eq!(got.len() as u32, n, "frames read");
    for (seq, f) in got.iter().enumerate() {
        assert_eq!(f, &frame(seq as u32), "frame {seq}");
    }
}

#[test]
fn a_transmit_ring_sends_every_frame_in_order() {
    let (mut rings, mut q) = tap_with_rings("twq", 4);
    let n = 300u32;
    let mut got: Vec<Vec<u8>> = Vec::new();
    let mut buf = vec![0u8; 2048];
    let mut seq = 0;
    let end = Instant::now() + Duration::from_secs(3);
    // Sends in batches of what the ring holds; reads what the device got (the
    // frames the packet socket sent out of it), skipping the kernel's own.
    while (got.len() as u32) < n && Instant::now() < end {
        while seq < n && rings.send(&frame(seq)) == TxSlot::Queued {
            seq += 1;
        }
        assert_eq!(rings.kick().expect("kick"), Kick::Sent);
        loop {
            match q.recv(&mut buf).expect("recv") {
                Recv::Frame(len) if buf[12..14] == [0x88, 0xb5] => got.push(buf[..len].to_vec()),
                Recv::Frame(_) => {}
                Recv::Empty => break,
                Recv::Dropped(d) => panic!("dropped {d:?}"),
            }
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    assert_eq!(rings.tx_refused(), 0);
    assert_eq!(got.len() as u32, n, "frames sent");
    for (i, f) in got.iter().enumerate() {
        assert_eq!(f, &frame(i as u32), "frame {i}");
    }
    assert_eq!(
        rings.send(&vec![0u8; 2048]),
        TxSlot::TooLong,
        "a frame larger than a slot"
    );
}

fn ip_link(name: &str, args: &[&str]) {
    let ok = Command::new("ip")
        .args(["link", "set", name])
        .args(args)
        .status()
        .expect("run ip");
    assert!(ok.success());
}

#[test]
fn a_down_interface_gets_nothing_stale_and_a_deleted_one_is_an_error() {
    let (mut rings, q) = tap_with_rings("twd", 4);
    let name = format!("twd{}", std::process::id() % 100_000);
    ip_link(&name, &["down"]);
    // The kernel notes the event on the socket: read once, then clear.
    let e = rings.take_error().expect_err("the socket has an error");
    assert_eq!(e.raw_os_error(), Some(libc::ENETDOWN), "{e}");
    rings.take_error().expect("read once, then cleared");
    for seq in 0..10 {
        assert_eq!(rings.send(&frame(seq)), TxSlot::Queued);
    }
    assert_eq!(rings.kick().expect("kick"), Kick::LinkDown(10));
    // The slots are free again: a whole ring's worth can be queued.
    let geo_frames = (1u32 << 14) / kernel_nic::packet::TX_FRAME_SIZE * 4;
    for seq in 0..geo_frames {
        assert_eq!(rings.send(&frame(seq)), TxSlot::Queued, "slot {seq}");
    }
    assert_eq!(rings.send(&frame(0)), TxSlot::Full);
    assert_eq!(rings.kick().expect("kick"), Kick::LinkDown(geo_frames));
    // Up again: what is sent now goes out, and nothing taken back.
    ip_link(&name, &["up"]);
    let mut q = q;
    let mut buf = vec![0u8; 2048];
    let mut got = Vec::new();
    let mut seq = 1000;
    let end = Instant::now() + Duration::from_secs(3);
    while got.len() < 20 && Instant::now() < end {
        if seq < 1020 && rings.send(&frame(seq)) == TxSlot::Queued {
            seq += 1;
        }
        rings.kick().expect("kick");
        while let Recv::Frame(len) = q.recv(&mut buf).expect("recv") {
            if buf[12..14] == [0x88, 0xb5] {
                got.push(buf[..len].to_vec());
            }
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    let want: Vec<Vec<u8>> = (1000..1020).map(frame).collect();
    assert_eq!(got, want, "after the link came back");
    // Deleted (the TAP goes with its last descriptor): the probe says so.
    drop(q);
    let end = Instant::now() + Duration::from_secs(3);
    let gone = loop {
        match rings.probe() {
            Err(e) => break e,
            Ok(_) if Instant::now() < end => std::thread::sleep(Duration::from_millis(10)),
            Ok(k) => panic!("the device is still there: {k:?}"),
        }
    };
    assert_eq!(gone.raw_os_error(), Some(libc::ENXIO), "{gone}");
}
