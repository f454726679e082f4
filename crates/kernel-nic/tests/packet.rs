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
//! Two sockets in a fanout group share the received frames by flow, each frame
//! to one of them, and neither sees the kernel's outgoing frames.
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
    map_space, take_error, wake_tx, Fanout, PacketOptions, PacketSocket, RingGeometry,
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

/// A TAP device this test creates (`PREFIX` and the pid), up. The device goes
/// with the last of its descriptors.
fn tap_up(prefix: &str) -> (IfName, Tap) {
    let name: IfName = format!("{prefix}{}", std::process::id() % 100_000)
        .parse()
        .unwrap();
    let tap = Tap::open(&name).expect("open a TAP device (root needed)");
    ip_link(name.as_str(), &["up"]);
    (name, tap)
}

/// An AF_PACKET socket bound to `name` (in `fanout` when given) whose rings
/// have `blocks` blocks of 16 KiB, its space mapped and the driver initialised.
fn rings_on(name: &IfName, blocks: u32, fanout: Option<&Fanout>) -> Driver {
    let geometry = RingGeometry {
        block_size: 1 << 14,
        blocks,
        retire_ms: 1,
    };
    let h = PacketSocket::open(
        name,
        PacketOptions {
            geometry,
            qdisc_bypass: false,
        },
        fanout,
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
    Driver { env, d, bell }
}

/// A TAP device (see [`tap_up`]) with one socket's rings on it (see
/// [`rings_on`]), and the TAP's own queue.
fn tap_with_rings(prefix: &str, blocks: u32) -> (Driver, TapQueue) {
    let (name, tap) = tap_up(prefix);
    let d = rings_on(&name, blocks, None);
    (d, TapQueue::from_fd(tap.into_fd()))
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

/// Frame `seq` of UDP flow `flow`: IPv4 from 10.97.0.1 port `flow` to
/// 10.97.0.2 port 7, the flow and sequence numbers in the payload.
fn flow_frame(flow: u16, seq: u32) -> Vec<u8> {
    let mut f = vec![0u8; 64];
    f[..6].copy_from_slice(&[0x02, 0, 0, 0, 0x99, 0x01]);
    f[6..12].copy_from_slice(&[0x02, 0, 0, 0, 0x99, 0x02]);
    f[12..14].copy_from_slice(&[0x08, 0x00]);
    let ip = &mut f[14..34];
    ip[0] = 0x45; // version 4, 5 words
    ip[2..4].copy_from_slice(&50u16.to_be_bytes());
    ip[8] = 64; // time to live
    ip[9] = 17; // UDP
    ip[12..16].copy_from_slice(&[10, 97, 0, 1]);
    ip[16..20].copy_from_slice(&[10, 97, 0, 2]);
    let udp = &mut f[34..42];
    udp[0..2].copy_from_slice(&(1000 + flow).to_be_bytes());
    udp[2..4].copy_from_slice(&7u16.to_be_bytes());
    udp[4..6].copy_from_slice(&30u16.to_be_bytes());
    f[42..44].copy_from_slice(&flow.to_be_bytes());
    f[44..48].copy_from_slice(&seq.to_be_bytes());
    f
}

/// Reads every socket of `members` until `want` frames came in all, then for
/// 200 ms more; returns what each one read.
fn read_all(members: &mut [&mut Driver], want: usize) -> Vec<Vec<Vec<u8>>> {
    let mut got: Vec<Vec<Vec<u8>>> = vec![Vec::new(); members.len()];
    let end = Instant::now() + Duration::from_secs(3);
    let mut settle: Option<Instant> = None;
    loop {
        let mut any = 0;
        for (m, g) in members.iter_mut().zip(got.iter_mut()) {
            any += m.receive(64, g);
        }
        let total: usize = got.iter().map(Vec::len).sum();
        if total >= want && settle.is_none() {
            settle = Some(Instant::now() + Duration::from_millis(200));
        }
        if settle.is_some_and(|t| Instant::now() > t) || Instant::now() > end {
            return got;
        }
        if any == 0 {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

/// Which member read each flow's frames; fails unless every frame of `flows`
/// x `per_flow` was read exactly once, and each flow's by one member, in order.
fn owners(got: &[Vec<Vec<u8>>], flows: u16, per_flow: u32) -> Vec<usize> {
    let mut owner = vec![None; usize::from(flows)];
    let mut next = vec![0u32; usize::from(flows)];
    for (m, frames) in got.iter().enumerate() {
        for f in frames {
            assert_eq!(f.len(), 64, "a frame of another kind came in: {f:02x?}");
            let flow = u16::from_be_bytes([f[42], f[43]]);
            let seq = u32::from_be_bytes([f[44], f[45], f[46], f[47]]);
            assert_eq!(f, &flow_frame(flow, seq), "intact");
            let i = usize::from(flow);
            assert_eq!(
                *owner[i].get_or_insert(m),
                m,
                "flow {flow} split over members"
            );
            assert_eq!(seq, next[i], "flow {flow}: in order, each frame once");
            next[i] += 1;
        }
    }
    assert!(
        next.iter().all(|n| *n == per_flow),
        "frames read per flow: {next:?}"
    );
    owner
        .into_iter()
        .map(|o| o.expect("every flow read"))
        .collect()
}

/// Two sockets in a fanout group share what the interface receives: each frame
/// reaches exactly one of them (no copy for both, as two sockets outside a
/// group would get), a flow's frames all the same one, in order, and both get
/// some of the 16 flows. Frames the kernel sends out of the interface reach
/// neither: in a group the socket option that hides them does nothing, and the
/// members' filter does it instead. A member closed and replaced (as a
/// restarted domain's socket is) joins the same group; once the interface was
/// deleted and created again, a new socket gets every frame.
#[test]
fn a_fanout_group_gives_each_frame_to_one_member_by_flow() {
    let (name, tap) = tap_up("twf");
    let group = Fanout::new();
    let mut a = rings_on(&name, 8, Some(&group));
    let mut b = rings_on(&name, 8, Some(&group));
    let id = group.id().expect("the first socket created the group");
    let mut q = TapQueue::from_fd(tap.into_fd());
    // The kernel's own traffic out of the interface: UDP to a neighbour it
    // knows, which the TAP's reader (this test) never reads.
    let ip = |args: &[&str]| {
        let ok = Command::new("ip").args(args).status().expect("run ip");
        assert!(ok.success(), "ip {args:?}");
    };
    ip(&["addr", "add", "10.96.0.1/30", "dev", name.as_str()]);
    ip(&[
        "neigh",
        "add",
        "10.96.0.2",
        "lladdr",
        "02:00:00:00:96:02",
        "dev",
        name.as_str(),
    ]);
    let udp = std::net::UdpSocket::bind("10.96.0.1:0").expect("a UDP socket");
    let (flows, per_flow) = (16u16, 20u32);
    for seq in 0..per_flow {
        for flow in 0..flows {
            assert_eq!(q.send(&flow_frame(flow, seq)).unwrap(), Send::Sent);
        }
        udp.send_to(b"outgoing", "10.96.0.2:9").expect("send out");
    }
    let got = read_all(
        &mut [&mut a, &mut b],
        usize::from(flows) * per_flow as usize,
    );
    let owner = owners(&got, flows, per_flow);
    assert!(
        owner.contains(&0) && owner.contains(&1),
        "both members get flows: {owner:?}"
    );
    // A member replaced: the new socket is in the same group.
    drop(b);
    let mut c = rings_on(&name, 8, Some(&group));
    assert_eq!(group.id(), Some(id), "the same group");
    for seq in 0..per_flow {
        for flow in 0..flows {
            assert_eq!(q.send(&flow_frame(flow, seq)).unwrap(), Send::Sent);
        }
    }
    let got = read_all(
        &mut [&mut a, &mut c],
        usize::from(flows) * per_flow as usize,
    );
    let owner = owners(&got, flows, per_flow);
    assert!(
        owner.contains(&0) && owner.contains(&1),
        "both members get flows: {owner:?}"
    );
    // The interface deleted and created again, its old members still open
    // (and no longer receiving): the next socket joins the old group or, when
    // the kernel refuses to mix interfaces in one, starts a new one; either way
    // it alone gets the frames.
    drop(q);
    let (again, tap) = tap_up("twf");
    assert_eq!(again, name);
    let mut q = TapQueue::from_fd(tap.into_fd());
    let mut d = rings_on(&name, 8, Some(&group));
    for seq in 0..per_flow {
        for flow in 0..flows {
            assert_eq!(q.send(&flow_frame(flow, seq)).unwrap(), Send::Sent);
        }
    }
    let got = read_all(
        &mut [&mut a, &mut c, &mut d],
        usize::from(flows) * per_flow as usize,
    );
    let owner = owners(&got, flows, per_flow);
    assert!(
        owner.iter().all(|m| *m == 2),
        "the new member alone: {owner:?}"
    );
}

/// A socket the kernel will not put into its group's id (here: the group's
/// members are on another interface) starts a new group, and the uplink's
/// later sockets join that one.
#[test]
fn a_socket_refused_by_its_group_starts_a_new_one() {
    let (first, _tap_a) = tap_up("twg");
    let (second, _tap_b) = tap_up("twh");
    let group = Fanout::new();
    let _a = rings_on(&first, 4, Some(&group));
    let old = group.id().expect("a group");
    let _b = rings_on(&second, 4, Some(&group));
    let new = group.id().expect("a group");
    assert_ne!(new, old, "a new group for the other interface");
    let _c = rings_on(&second, 4, Some(&group));
    assert_eq!(group.id(), Some(new), "joined, not started again");
}
