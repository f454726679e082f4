//! The bootstrap channel between the switch and a driver domain: a unix stream socket
//! that is the DD's standard input (so no descriptor number has to be guessed or
//! trusted), over which the switch sends one message carrying, with SCM_RIGHTS, the
//! descriptors the DD needs, in a fixed order. The framing and SCM_RIGHTS handling
//! are `sandbox::fdpass`'s; this module fixes what the message says.
//!
//! The message body is a small fixed header (magic, descriptor count, poll mode,
//! device kind, and a ring kind's driver configuration); both ends refuse
//! anything else. The descriptors depend on the kind of device the domain drives
//! ([`Device`]): a vhost-user NIC (its connected socket, the driver's region and
//! the two queues' eventfds), a TAP device (its open descriptor), an AF_PACKET
//! socket (bound, its rings set up, and the driver's state memfd) or an AF_XDP
//! socket (bound, its UMEM, the driver's state memfd), then the exchange region
//! and the two doorbells.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::net::UnixStream;

use sandbox::fdpass::{self, FdPassError};
use twin_poll::PollMode;

/// Most descriptors handed to a DD (a vhost-user NIC's), in wire order.
pub const FD_COUNT: usize = 9;
/// Descriptors handed to a DD that drives a TAP device.
const KERNEL_FD_COUNT: usize = 4;
/// Descriptors handed to a DD that drives an AF_PACKET socket: the socket, the
/// driver's state, then the exchange region and the doorbells.
const PACKET_FD_COUNT: usize = 5;
const MAGIC: u32 = 0x5444_4434; // "TDD4"
/// Header byte 9: the device kind.
const KIND_VHOST: u8 = 0;
const KIND_TAP: u8 = 1;
const KIND_PACKET: u8 = 2;
const KIND_XDP: u8 = 3;
/// Descriptors handed to a DD that drives an AF_XDP socket: the socket, its UMEM,
/// then the exchange region and the doorbells.
const XDP_FD_COUNT: usize = 6;
/// An AF_XDP header: the common 24 bytes, then the UMEM's chunk count (in the
/// ring-shape words' place) and the four rings' four offsets.
const XDP_HEADER_LEN: usize = HEADER_LEN + 16 * 8;
/// Header: magic, count, poll mode, kind, two zero bytes, then three words of an
/// AF_PACKET socket's ring shape (zero for other kinds).
const HEADER_LEN: usize = 24;
/// The largest AF_PACKET rings a domain maps (both rings).
const MAX_PACKET_RINGS: u64 = 256 << 20;

/// Errors of the bootstrap channel.
#[derive(Debug, thiserror::Error)]
pub enum BootstrapError {
    /// Sending failed.
    #[error("cannot send the descriptors to the driver domain")]
    Send(#[source] FdPassError),
    /// Receiving failed.
    #[error("cannot receive the descriptors from the switch")]
    Receive(#[source] FdPassError),
    /// The message was not the expected one.
    #[error("bad bootstrap message: {0}")]
    BadMessage(&'static str),
}

/// The device a DD drives, as the switch opened it.
#[derive(Debug)]
pub enum Device {
    /// A vhost-user NIC, driven by the virtio-net driver.
    Vhost {
        /// Connected vhost-user socket of the NIC.
        nic: UnixStream,
        /// The driver's region (sealed memfd).
        region: OwnedFd,
        /// The vring eventfds of the RX and TX queue, (kick, call) each. The
        /// switch keeps copies: whoever runs the fast path kicks the NIC and hears
        /// its calls.
        queues: [(OwnedFd, OwnedFd); 2],
    },
    /// A TAP device (`kernel_nic::Tap`), non-blocking, with the vnet header.
    Tap(OwnedFd),
    /// An AF_PACKET socket bound to its interface, with its rings, the
    /// driver's state, and the driver's layout
    /// (`kernel_nic::packet::PacketHandover`).
    Packet {
        /// The socket.
        socket: OwnedFd,
        /// The driver's state (memfd).
        state: OwnedFd,
        /// The driver's layout.
        layout: kernel_nic::packet::PacketLayout,
    },
    /// An AF_XDP socket bound to its queue, its UMEM, the driver's state, and
    /// the driver's layout (`kernel_nic::xdp::XdpHandover`).
    Xdp {
        /// The socket.
        socket: OwnedFd,
        /// The UMEM (memfd).
        umem: OwnedFd,
        /// The driver's state (memfd).
        state: OwnedFd,
        /// The driver's layout.
        layout: Box<kernel_nic::xdp::XdpLayout>,
    },
}

/// The kinds of device a DD drives (what its sandbox allows depends on it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceKind {
    /// See [`Device::Vhost`].
    Vhost,
    /// See [`Device::Tap`].
    Tap,
    /// See [`Device::Packet`].
    Packet,
    /// See [`Device::Xdp`].
    Xdp,
}

impl Device {
    /// The device's kind.
    pub fn kind(&self) -> DeviceKind {
        match self {
            Device::Vhost { .. } => DeviceKind::Vhost,
            Device::Tap(_) => DeviceKind::Tap,
            Device::Packet { .. } => DeviceKind::Packet,
            Device::Xdp { .. } => DeviceKind::Xdp,
        }
    }
}

/// What a DD receives.
#[derive(Debug)]
pub struct DomainFds {
    /// The device.
    pub device: Device,
    /// The exchange region (sealed memfd).
    pub exchange: OwnedFd,
    /// The switch rings it when the DD has work or space (switch -> DD).
    pub doorbell_in: OwnedFd,
    /// The DD rings it when the switch has work or space (DD -> switch).
    pub doorbell_out: OwnedFd,
    /// How the DD's loop waits for work.
    pub poll: PollMode,
}

/// The device's descriptors as the switch sends them, borrowed.
#[derive(Debug, Clone, Copy)]
pub enum OutgoingDevice<'a> {
    /// See [`Device::Vhost`].
    Vhost {
        /// Connected vhost-user socket of the NIC.
        nic: &'a UnixStream,
        /// The driver's region.
        region: BorrowedFd<'a>,
        /// RX and TX (kick, call) eventfds.
        queues: [(BorrowedFd<'a>, BorrowedFd<'a>); 2],
    },
    /// See [`Device::Tap`].
    Tap(BorrowedFd<'a>),
    /// See [`Device::Packet`].
    Packet {
        /// The socket.
        socket: BorrowedFd<'a>,
        /// The driver's state.
        state: BorrowedFd<'a>,
        /// The driver's layout.
        layout: &'a kernel_nic::packet::PacketLayout,
    },
    /// See [`Device::Xdp`].
    Xdp {
        /// The socket.
        socket: BorrowedFd<'a>,
        /// The UMEM.
        umem: BorrowedFd<'a>,
        /// The driver's state.
        state: BorrowedFd<'a>,
        /// The driver's layout.
        layout: &'a kernel_nic::xdp::XdpLayout,
    },
}

/// What the switch sends: the same descriptors, borrowed.
#[derive(Debug, Clone, Copy)]
pub struct Outgoing<'a> {
    /// The device.
    pub device: OutgoingDevice<'a>,
    /// The exchange region.
    pub exchange: BorrowedFd<'a>,
    /// Switch -> DD doorbell.
    pub doorbell_in: BorrowedFd<'a>,
    /// DD -> switch doorbell.
    pub doorbell_out: BorrowedFd<'a>,
    /// How the DD's loop waits for work.
    pub poll: PollMode,
}

/// The poll mode's byte in the header.
fn poll_byte(poll: PollMode) -> u8 {
    match poll {
        PollMode::Event => 0,
        PollMode::Busy => 1,
        PollMode::Adaptive => 2,
    }
}

fn poll_of(byte: u8) -> Option<PollMode> {
    match byte {
        0 => Some(PollMode::Event),
        1 => Some(PollMode::Busy),
        2 => Some(PollMode::Adaptive),
        _ => None,
    }
}

fn header(poll: PollMode, kind: u8, fds: usize) -> [u8; HEADER_LEN] {
    let mut h = [0u8; HEADER_LEN];
    h[..4].copy_from_slice(&MAGIC.to_le_bytes());
    h[4..8].copy_from_slice(&(fds as u32).to_le_bytes());
    h[8] = poll_byte(poll);
    h[9] = kind;
    h
}

fn packet_header(poll: PollMode, layout: &kernel_nic::packet::PacketLayout) -> [u8; HEADER_LEN] {
    let mut h = header(poll, KIND_PACKET, PACKET_FD_COUNT);
    h[12..16].copy_from_slice(&layout.cfg.block_size.to_le_bytes());
    h[16..20].copy_from_slice(&layout.cfg.blocks.to_le_bytes());
    h
}

fn xdp_header(poll: PollMode, layout: &kernel_nic::xdp::XdpLayout) -> [u8; XDP_HEADER_LEN] {
    let mut h = [0u8; XDP_HEADER_LEN];
    h[..HEADER_LEN].copy_from_slice(&header(poll, KIND_XDP, XDP_FD_COUNT));
    let c = &layout.cfg;
    h[12..16].copy_from_slice(&c.frames.to_le_bytes());
    let rings = [c.fill, c.completion, c.rx, c.tx];
    let words = rings
        .iter()
        .flat_map(|r| [r.producer, r.consumer, r.desc, r.flags]);
    for (i, w) in words.enumerate() {
        h[HEADER_LEN + 8 * i..HEADER_LEN + 8 * i + 8].copy_from_slice(&w.to_le_bytes());
    }
    h
}

/// The driver layout in an AF_XDP header, if the driver accepts it.
fn xdp_layout(h: &[u8]) -> Option<kernel_nic::xdp::XdpLayout> {
    let frames = u32::from_le_bytes(h[12..16].try_into().ok()?);
    if h[16..HEADER_LEN].iter().any(|&b| b != 0) {
        return None;
    }
    let word = |i: usize| {
        let at = HEADER_LEN + 8 * i;
        u64::from_le_bytes(h[at..at + 8].try_into().expect("8 bytes"))
    };
    let ring = |r: usize| af_xdp_driver::RingOffsets {
        producer: word(4 * r),
        consumer: word(4 * r + 1),
        desc: word(4 * r + 2),
        flags: word(4 * r + 3),
    };
    kernel_nic::xdp::XdpLayout::new(kernel_nic::xdp::XdpConfig {
        frames,
        fill: ring(0),
        completion: ring(1),
        rx: ring(2),
        tx: ring(3),
    })
    .ok()
}

/// The driver layout in a packet header, if the driver accepts it and a domain
/// can map it: at most [`MAX_PACKET_RINGS`] bytes of rings.
fn packet_layout(h: &[u8]) -> Option<kernel_nic::packet::PacketLayout> {
    let word = |i: usize| u32::from_le_bytes(h[i..i + 4].try_into().expect("4 bytes"));
    if word(20) != 0 {
        return None;
    }
    let cfg = kernel_nic::packet::PacketConfig {
        block_size: word(12),
        blocks: word(16),
    };
    kernel_nic::packet::PacketLayout::new(cfg)
        .ok()
        .filter(|l| l.ring_len * 2 <= MAX_PACKET_RINGS)
}

/// Sends the descriptors (switch side).
pub fn send(sock: &UnixStream, out: &Outgoing<'_>) -> Result<(), BootstrapError> {
    let common = [out.exchange, out.doorbell_in, out.doorbell_out];
    match out.device {
        OutgoingDevice::Vhost {
            nic,
            region,
            queues: [(rx_kick, rx_call), (tx_kick, tx_call)],
        } => {
            let fds = [
                nic.as_fd(),
                region,
                common[0],
                common[1],
                common[2],
                rx_kick,
                rx_call,
                tx_kick,
                tx_call,
            ];
            let h = header(out.poll, KIND_VHOST, fds.len());
            fdpass::send(sock, &h, &fds)
        }
        OutgoingDevice::Tap(tap) => {
            let fds = [tap, common[0], common[1], common[2]];
            let h = header(out.poll, KIND_TAP, fds.len());
            fdpass::send(sock, &h, &fds)
        }
        OutgoingDevice::Packet {
            socket,
            state,
            layout,
        } => {
            let fds = [socket, state, common[0], common[1], common[2]];
            fdpass::send(sock, &packet_header(out.poll, layout), &fds)
        }
        OutgoingDevice::Xdp {
            socket,
            umem,
            state,
            layout,
        } => {
            let fds = [socket, umem, state, common[0], common[1], common[2]];
            fdpass::send(sock, &xdp_header(out.poll, layout), &fds)
        }
    }
    .map_err(BootstrapError::Send)
}

/// Receives the descriptors (DD side). Blocks until the switch sends them.
pub fn receive(sock: &UnixStream) -> Result<DomainFds, BootstrapError> {
    let msg = fdpass::recv(sock, 256, FD_COUNT).map_err(BootstrapError::Receive)?;
    let h = &msg.data;
    if h.len() < HEADER_LEN || h[..4] != MAGIC.to_le_bytes() || h[10..12] != [0, 0] {
        return Err(BootstrapError::BadMessage("wrong header"));
    }
    let (kind, want, len) = match h[9] {
        KIND_VHOST => (KIND_VHOST, FD_COUNT, HEADER_LEN),
        KIND_TAP => (KIND_TAP, KERNEL_FD_COUNT, HEADER_LEN),
        KIND_PACKET => (KIND_PACKET, PACKET_FD_COUNT, HEADER_LEN),
        KIND_XDP => (KIND_XDP, XDP_FD_COUNT, XDP_HEADER_LEN),
        _ => return Err(BootstrapError::BadMessage("unknown device kind")),
    };
    if h.len() != len {
        return Err(BootstrapError::BadMessage("wrong header"));
    }
    let packet = if kind == KIND_PACKET {
        Some(packet_layout(h).ok_or(BootstrapError::BadMessage("bad ring shape"))?)
    } else if kind != KIND_XDP && h[12..].iter().any(|&b| b != 0) {
        return Err(BootstrapError::BadMessage("wrong header"));
    } else {
        None
    };
    let xdp = if kind == KIND_XDP {
        Some(xdp_layout(h).ok_or(BootstrapError::BadMessage("bad ring layout"))?)
    } else {
        None
    };
    if h[4..8] != (want as u32).to_le_bytes() || msg.fds.len() != want {
        return Err(BootstrapError::BadMessage("wrong number of descriptors"));
    }
    let poll = poll_of(h[8]).ok_or(BootstrapError::BadMessage("unknown poll mode"))?;
    let mut it = msg.fds.into_iter();
    let mut next = || {
        it.next()
            .ok_or(BootstrapError::BadMessage("missing descriptor"))
    };
    let (device, exchange, doorbell_in, doorbell_out) = if kind == KIND_VHOST {
        let nic = UnixStream::from(next()?);
        let region = next()?;
        let (exchange, doorbell_in, doorbell_out) = (next()?, next()?, next()?);
        let queues = [(next()?, next()?), (next()?, next()?)];
        let device = Device::Vhost {
            nic,
            region,
            queues,
        };
        (device, exchange, doorbell_in, doorbell_out)
    } else if let Some(layout) = xdp {
        let (socket, umem, state) = (next()?, next()?, next()?);
        let device = Device::Xdp {
            socket,
            umem,
            state,
            layout: Box::new(layout),
        };
        (device, next()?, next()?, next()?)
    } else if let Some(layout) = packet {
        let (socket, state) = (next()?, next()?);
        let device = Device::Packet {
            socket,
            state,
            layout,
        };
        (device, next()?, next()?, next()?)
    } else {
        (Device::Tap(next()?), next()?, next()?, next()?)
    };
    Ok(DomainFds {
        device,
        exchange,
        doorbell_in,
        doorbell_out,
        poll,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    #[test]
    fn descriptors_cross_in_order() {
        let (a, b) = UnixStream::pair().unwrap();
        let (nic_here, mut nic_there) = UnixStream::pair().unwrap();
        let files: Vec<OwnedFd> = (0..8)
            .map(|i| {
                let fd = rustix::fs::memfd_create(format!("t{i}"), rustix::fs::MemfdFlags::CLOEXEC)
                    .unwrap();
                rustix::fs::ftruncate(&fd, 4096 * (i + 1)).unwrap();
                fd
            })
            .collect();
        let fd = |i: usize| files[i].as_fd();
        let out = Outgoing {
            device: OutgoingDevice::Vhost {
                nic: &nic_here,
                region: fd(0),
                queues: [(fd(4), fd(5)), (fd(6), fd(7))],
            },
            exchange: fd(1),
            doorbell_in: fd(2),
            doorbell_out: fd(3),
            poll: PollMode::Busy,
        };
        send(&a, &out).unwrap();
        let got = receive(&b).unwrap();
        assert_eq!(got.poll, PollMode::Busy);
        let size = |fd: &OwnedFd| rustix::fs::fstat(fd).unwrap().st_size;
        assert_eq!(size(&got.exchange), 8192);
        assert_eq!(size(&got.doorbell_in), 3 * 4096);
        assert_eq!(size(&got.doorbell_out), 4 * 4096);
        let Device::Vhost {
            mut nic,
            region,
            queues,
        } = got.device
        else {
            panic!("not a vhost-user device");
        };
        assert_eq!(size(&region), 4096);
        assert_eq!(size(&queues[0].0), 5 * 4096);
        assert_eq!(size(&queues[1].1), 8 * 4096);
        nic.write_all(b"hi").unwrap();
        let mut buf = [0u8; 2];
        nic_there.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"hi");

        // A TAP device's four descriptors, in their order.
        let out = Outgoing {
            device: OutgoingDevice::Tap(fd(7)),
            exchange: fd(1),
            doorbell_in: fd(2),
            doorbell_out: fd(3),
            poll: PollMode::Adaptive,
        };
        send(&a, &out).unwrap();
        let got = receive(&b).unwrap();
        assert_eq!(got.poll, PollMode::Adaptive);
        let Device::Tap(tap) = &got.device else {
            panic!("not a TAP device");
        };
        assert_eq!(size(tap), 8 * 4096);
        assert_eq!(size(&got.exchange), 8192);
        assert_eq!(size(&got.doorbell_out), 4 * 4096);

        // An AF_PACKET socket's, with its state and layout.
        let layout = kernel_nic::packet::PacketLayout::new(
            kernel_nic::packet::RingGeometry::default().config(),
        )
        .unwrap();
        let out = Outgoing {
            device: OutgoingDevice::Packet {
                socket: fd(6),
                state: fd(5),
                layout: &layout,
            },
            exchange: fd(1),
            doorbell_in: fd(2),
            doorbell_out: fd(3),
            poll: PollMode::Event,
        };
        send(&a, &out).unwrap();
        let got = receive(&b).unwrap();
        let Device::Packet {
            socket,
            state,
            layout: got_layout,
        } = &got.device
        else {
            panic!("not an AF_PACKET socket");
        };
        assert_eq!(
            (size(socket), size(state), *got_layout),
            (7 * 4096, 6 * 4096, layout)
        );
        assert_eq!(size(&got.doorbell_in), 3 * 4096);
    }

    #[test]
    fn an_xdp_sockets_descriptors_and_layout_cross() {
        let (a, b) = UnixStream::pair().unwrap();
        let files: Vec<OwnedFd> = (0..6)
            .map(|i| {
                let fd = rustix::fs::memfd_create(format!("x{i}"), rustix::fs::MemfdFlags::CLOEXEC)
                    .unwrap();
                rustix::fs::ftruncate(&fd, 4096 * (i + 1)).unwrap();
                fd
            })
            .collect();
        let ring = |base: u64| af_xdp_driver::RingOffsets {
            producer: base,
            consumer: base + 8,
            desc: base + 64,
            flags: base + 16,
        };
        let layout = kernel_nic::xdp::XdpLayout::new(kernel_nic::xdp::XdpConfig {
            frames: 1024,
            fill: ring(256),
            completion: ring(384),
            rx: ring(0),
            tx: ring(128),
        })
        .unwrap();
        let out = Outgoing {
            device: OutgoingDevice::Xdp {
                socket: files[0].as_fd(),
                umem: files[1].as_fd(),
                state: files[2].as_fd(),
                layout: &layout,
            },
            exchange: files[3].as_fd(),
            doorbell_in: files[4].as_fd(),
            doorbell_out: files[5].as_fd(),
            poll: PollMode::Event,
        };
        send(&a, &out).unwrap();
        let got = receive(&b).unwrap();
        let size = |fd: &OwnedFd| rustix::fs::fstat(fd).unwrap().st_size;
        let Device::Xdp {
            socket,
            umem,
            state,
            layout: got_layout,
        } = &got.device
        else {
            panic!("not an AF_XDP socket");
        };
        assert_eq!(
            (size(socket), size(umem), size(state)),
            (4096, 2 * 4096, 3 * 4096)
        );
        assert_eq!(**got_layout, layout);
        assert_eq!(size(&got.doorbell_out), 6 * 4096);
        // A layout the driver refuses: descriptors past the first page.
        let mut bad = layout;
        bad.cfg.fill.desc = 1 << 20;
        let mut h = xdp_header(PollMode::Event, &bad);
        fdpass::send(&a, &h, &[files[0].as_fd(); XDP_FD_COUNT]).unwrap();
        assert!(matches!(
            receive(&b),
            Err(BootstrapError::BadMessage("bad ring layout"))
        ));
        // Cut short.
        h = xdp_header(PollMode::Event, &layout);
        fdpass::send(&a, &h[..HEADER_LEN + 8], &[files[0].as_fd(); XDP_FD_COUNT]).unwrap();
        assert!(matches!(
            receive(&b),
            Err(BootstrapError::BadMessage("wrong header"))
        ));
    }

    #[test]
    fn a_ring_shape_a_domain_cannot_map_is_refused() {
        let (a, b) = UnixStream::pair().unwrap();
        let f = rustix::fs::memfd_create("t", rustix::fs::MemfdFlags::CLOEXEC).unwrap();
        let bad: [(u32, u32); 7] = [
            (0, 64),
            (1000, 64),
            (4096 + 1, 64),
            (3 << 12, 64),
            (1 << 16, 0),
            (1 << 22, 1 << 10),
            (!4095, u32::MAX),
        ];
        for (block_size, blocks) in bad {
            let mut h = header(PollMode::Event, KIND_PACKET, PACKET_FD_COUNT);
            h[12..16].copy_from_slice(&block_size.to_le_bytes());
            h[16..20].copy_from_slice(&blocks.to_le_bytes());
            fdpass::send(&a, &h, &[f.as_fd(); PACKET_FD_COUNT]).unwrap();
            assert!(
                matches!(
                    receive(&b),
                    Err(BootstrapError::BadMessage("bad ring shape"))
                ),
                "{block_size} x {blocks}"
            );
        }
        // A TAP header with a ring shape is not a TAP header.
        let mut h = header(PollMode::Event, KIND_TAP, KERNEL_FD_COUNT);
        h[16] = 1;
        fdpass::send(&a, &h, &[f.as_fd(); KERNEL_FD_COUNT]).unwrap();
        assert!(matches!(
            receive(&b),
            Err(BootstrapError::BadMessage("wrong header"))
        ));
    }

    #[test]
    fn every_poll_mode_crosses_and_an_unknown_one_is_refused() {
        let (a, b) = UnixStream::pair().unwrap();
        let f = rustix::fs::memfd_create("t", rustix::fs::MemfdFlags::CLOEXEC).unwrap();
        for poll in [PollMode::Busy, PollMode::Event, PollMode::Adaptive] {
            assert_eq!(poll_of(poll_byte(poll)), Some(poll));
        }
        let mut h = header(PollMode::Event, KIND_TAP, KERNEL_FD_COUNT);
        h[8] = 3;
        fdpass::send(&a, &h, &[f.as_fd(); KERNEL_FD_COUNT]).unwrap();
        assert!(matches!(
            receive(&b),
            Err(BootstrapError::BadMessage("unknown poll mode"))
        ));
    }

    #[test]
    fn a_count_that_does_not_match_the_kind_is_refused() {
        let (a, b) = UnixStream::pair().unwrap();
        let f = rustix::fs::memfd_create("t", rustix::fs::MemfdFlags::CLOEXEC).unwrap();
        // A TAP header with a vhost-user NIC's count, and the other way round.
        fdpass::send(
            &a,
            &header(PollMode::Event, KIND_TAP, FD_COUNT),
            &[f.as_fd(); FD_COUNT],
        )
        .unwrap();
        assert!(matches!(receive(&b), Err(BootstrapError::BadMessage(_))));
        fdpass::send(
            &a,
            &header(PollMode::Event, KIND_VHOST, KERNEL_FD_COUNT),
            &[f.as_fd(); KERNEL_FD_COUNT],
        )
        .unwrap();
        assert!(matches!(receive(&b), Err(BootstrapError::BadMessage(_))));
        fdpass::send(
            &a,
            &header(PollMode::Event, 7, KERNEL_FD_COUNT),
            &[f.as_fd(); KERNEL_FD_COUNT],
        )
        .unwrap();
        assert!(matches!(receive(&b), Err(BootstrapError::BadMessage(_))));
    }

    #[test]
    fn a_message_without_descriptors_is_refused() {
        let (a, b) = UnixStream::pair().unwrap();
        fdpass::send(&a, &header(PollMode::Event, KIND_VHOST, FD_COUNT), &[]).unwrap();
        assert!(matches!(receive(&b), Err(BootstrapError::BadMessage(_))));
    }
}
