//! An AF_PACKET TPACKET_V3 receive ring against the real kernel: frames written
//! into a TAP device this test creates arrive on the device as received frames;
//! a packet socket bound to it, its ring mapped as a driver domain maps it, reads
//! every one, in order and intact, and none of the frames the kernel itself sends
//! out of the device (outgoing frames are not seen). Needs root and `ip`.

use std::process::Command;
use std::time::{Duration, Instant};

use kernel_nic::packet::{PacketSocket, RingGeometry, RxRing};
use kernel_nic::{IfName, Send, Tap, TapQueue};

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

#[test]
fn a_receive_ring_reads_every_frame_in_order() {
    let name: IfName = format!("twp{}", std::process::id() % 100_000)
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
        blocks: 8,
        retire_ms: 1,
    };
    let sock = PacketSocket::open(&name, geo).expect("open the packet socket");
    let mut ring = RxRing::map(sock.into_fd(), geo).expect("map its ring");
    let mut q = TapQueue::from_fd(tap.into_fd());
    let n = 500u32;
    for seq in 0..n {
        assert_eq!(q.send(&frame(seq)).unwrap(), Send::Sent);
    }
    let mut got: Vec<Vec<u8>> = Vec::new();
    let mut buf = vec![0u8; 2048];
    let end = Instant::now() + Duration::from_secs(3);
    while (got.len() as u32) < n && Instant::now() < end {
        match ring.poll_block(&mut buf, |f| got.push(f.to_vec())) {
            Some(w) => assert_eq!(w.malformed, None, "{w:?}"),
            None => std::thread::sleep(Duration::from_millis(1)),
        }
    }
    assert_eq!(got.len() as u32, n, "frames read");
    for (seq, f) in got.iter().enumerate() {
        assert_eq!(f, &frame(seq as u32), "frame {seq}");
    }
}
