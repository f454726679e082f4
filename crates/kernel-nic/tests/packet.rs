//! AF_PACKET TPACKET_V3 rings against the real kernel, through a TAP device this
//! test creates. Receive: frames written into the TAP arrive on the device; a
//! packet socket bound to it, its rings mapped as a driver domain maps them, reads
//! every one, in order and intact, and none of the frames the kernel itself sends
//! out of the device (outgoing frames are not seen). The rings are driven as a
//! driver domain drives them: the AF_PACKET driver over the direct environment,
//! the socket's `send` as its doorbell. Transmit: frames put into the transmit
//! ring and flushed leave the device, in order and intact, as the TAP's reader
//! sees. While the device is down, queued frames are taken back and counted,
//! the socket's error is read once and cleared; a deleted device is an error.
//! Needs root and `ip`.

use std::fs::File;
use std::os::fd::AsFd;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use af_packet_driver::{AfPacket, TX_FRAME_SIZE};
use driver_host::env::{Bell, DirectEnv};
use driver_host::region::Region;
use driver_host::PacketBell;
use kernel_nic::packet::{
    map_space, take_error, wake_tx, PacketOptions, PacketSocket, RingGeometry,
};
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

/// A socket's driver, as a domain runs it.
struct Driver {
    env: DirectEnv,
    d: AfPacket,
    bell: Arc<PacketBell>,
}

/// What [`Driver::send`] did.
#[derive(Debug, PartialEq, Eq)]
enum Sent {
    Queued,
    Full,
    TooLong,
}

impl Driver {
    /// Puts `frame` into the next transmit slot.
    fn send(&mut self, frame: &[u8]) -> Sent {
        let Some(c) = self.d.tx_reserve(&self.env).unwrap() else {
            return Sent::Full;
        };
        if frame.len() > c.capacity as usize {
            self.d.tx_cancel(&self.env, c).unwrap();
            return Sent::TooLong;
        }
        self.env
            .slice(c.addr, frame.len())
            .unwrap()
            .copy_from(frame);
        assert!(self.d.tx_commit(&self.env, c, frame.len() as u32).unwrap());
        Sent::Queued
    }

    /// Wakes the kernel; takes back what a down interface kept. Returns how
    /// many were taken back.
    fn flush(&mut self) -> u32 {
        self.d.tx_flush(&self.env).unwrap();
        if self.bell.take_link_down() {
            self.d.tx_take_back(&self.env).unwrap()
        } else {
            0
        }
    }

    fn receive(&mut self, max: usize, got: &mut Vec<Vec<u8>>) -> usize {
        let env = &self.env;
        self.d
            .rx_burst(env, max, |f| {
                let mut b = vec![0u8; f.len as usize];
                env.slice(f.addr, b.len()).unwrap().copy_to(&mut b[..]);
                got.push(b);
            })
            .unwrap()
    }
}

/// A TAP device this test creates (`PREFIX` and the pid), up, with an AF_PACKET
/// socket bound to it whose rings have `blocks` blocks of 16 KiB, its space
/// mapped and the driver initialised; and the TAP's own queue. The device goes
/// when the queue is dropped.
fn tap_with_rings(prefix: &str, blocks: u32) -> (Driver, TapQueue) {
    let name: IfName = format!("{prefix}{}", std::process::id() % 100_000)
        .parse()
        .unwrap();
    let tap = Tap::open(&name).expect("open a TAP device (root needed)");
    let ok = Command::new("ip")
        .args(["link", "set", name.as_str(), "up"])
        .status()
        .expect("run ip");
    assert!(ok.success());
    let geometry = RingGeometry {
        block_size: 1 << 14,
        blocks,
        retire_ms: 1,
    };
    let h = PacketSocket::open(
        &name,
        PacketOptions {
            geometry,
            qdisc_bypass: false,
        },
    )
    .expect("open the packet socket");
    let space = map_space(&h.layout, h.state.as_fd(), h.socket.as_fd()).expect("map its space");
    let region = Region::from_mapping(File::from(h.state), space).unwrap();
    let bell = PacketBell::new(Arc::new(h.socket));
    let bells = vec![
        Bell::PacketSocket(bell.clone()),
        Bell::PacketSocket(bell.clone()),
    ];
    let env = DirectEnv::with_bells(Arc::new(region), bells);
    let d = AfPacket::init(&env, h.layout).expect("initialise the driver");
    (Driver { env, d, bell }, TapQueue::from_fd(tap.into_fd()))
}

#[test]
fn a_receive_ring_reads_every_frame_in_order() {
    let (mut r, mut q) = tap_with_rings("twp", 8);
    let n = 500u32;
    for seq in 0..n {
        assert_eq!(q.send(&frame(seq)).unwrap(), Send::Sent);
    }
    let mut got: Vec<Vec<u8>> = Vec::new();
    let end = Instant::now() + Duration::from_secs(3);
    while (got.len() as u32) < n && Instant::now() < end {
        // A few frames at a time: a block is read across several calls.
        if r.receive(7, &mut got) == 0 {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    assert_eq!(r.d.stats(&r.env).unwrap().rx_bad_blocks, 0);
    assert_eq!(got.len() as u32, n, "frames read");
    for (seq, f) in got.iter().enumerate() {
        assert_eq!(f, &frame(seq as u32), "frame {seq}");
    }
}

#[test]
fn a_transmit_ring_sends_every_frame_in_order() {
    let (mut r, mut q) = tap_with_rings("twq", 4);
    let n = 300u32;
    let mut got: Vec<Vec<u8>> = Vec::new();
    let mut buf = vec![0u8; 2048];
    let mut seq = 0;
    let end = Instant::now() + Duration::from_secs(3);
    // Sends in batches of what the ring holds; reads what the device got (the
    // frames the packet socket sent out of it), skipping the kernel's own.
    while (got.len() as u32) < n && Instant::now() < end {
        while seq < n && r.send(&frame(seq)) == Sent::Queued {
            seq += 1;
        }
        assert_eq!(r.flush(), 0, "nothing taken back");
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
    assert_eq!(r.d.stats(&r.env).unwrap().tx_refused, 0);
    assert_eq!(got.len() as u32, n, "frames sent");
    for (i, f) in got.iter().enumerate() {
        assert_eq!(f, &frame(i as u32), "frame {i}");
    }
    assert_eq!(
        r.send(&vec![0u8; 2048]),
        Sent::TooLong,
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
    let (mut r, q) = tap_with_rings("twd", 4);
    let socket = r.bell.socket().clone();
    let name = format!("twd{}", std::process::id() % 100_000);
    ip_link(&name, &["down"]);
    // The kernel notes the event on the socket: read once, then clear.
    let e = take_error(socket.as_fd()).expect_err("the socket has an error");
    assert_eq!(e.raw_os_error(), Some(libc::ENETDOWN), "{e}");
    take_error(socket.as_fd()).expect("read once, then cleared");
    for seq in 0..10 {
        assert_eq!(r.send(&frame(seq)), Sent::Queued);
    }
    assert_eq!(r.flush(), 10, "taken back");
    // The slots are free again: a whole ring's worth can be queued.
    let geo_frames = (1u32 << 14) / TX_FRAME_SIZE * 4;
    for seq in 0..geo_frames {
        assert_eq!(r.send(&frame(seq)), Sent::Queued, "slot {seq}");
    }
    assert_eq!(r.send(&frame(0)), Sent::Full);
    assert_eq!(r.flush(), geo_frames, "taken back");
    assert_eq!(
        r.d.stats(&r.env).unwrap().tx_link_down,
        u64::from(10 + geo_frames)
    );
    // Up again: what is sent now goes out, and nothing taken back.
    ip_link(&name, &["up"]);
    let mut q = q;
    let mut buf = vec![0u8; 2048];
    let mut got = Vec::new();
    let mut seq = 1000;
    let end = Instant::now() + Duration::from_secs(3);
    while got.len() < 20 && Instant::now() < end {
        if seq < 1020 && r.send(&frame(seq)) == Sent::Queued {
            seq += 1;
        }
        r.flush();
        while let Recv::Frame(len) = q.recv(&mut buf).expect("recv") {
            if buf[12..14] == [0x88, 0xb5] {
                got.push(buf[..len].to_vec());
            }
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    let want: Vec<Vec<u8>> = (1000..1020).map(frame).collect();
    assert_eq!(got, want, "after the link came back");
    // Deleted (the TAP goes with its last descriptor): a wake-up says so.
    drop(q);
    let end = Instant::now() + Duration::from_secs(3);
    let gone = loop {
        match wake_tx(socket.as_fd()) {
            Err(e) => break e,
            Ok(_) if Instant::now() < end => std::thread::sleep(Duration::from_millis(10)),
            Ok(k) => panic!("the device is still there: {k:?}"),
        }
    };
    assert_eq!(gone.raw_os_error(), Some(libc::ENXIO), "{gone}");
}
