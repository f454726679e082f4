//! An AF_PACKET socket with TPACKET_V3 receive and transmit rings (the `packet:`
//! uplink kind). The work is split by privilege:
//!
//! * the switch opens and binds the socket and sets up its rings
//!   ([`PacketSocket::open`]), with a sealed memfd for the driver's state, and
//!   hands the domain both descriptors and the driver's layout
//!   ([`PacketHandover`]);
//! * the domain maps them into one space ([`map_space`]) and runs the AF_PACKET
//!   driver (crate `af-packet-driver`, which checks every block the kernel
//!   hands over) over it: no `socket`, no `setsockopt`; a `send` of nothing
//!   wakes the kernel to transmit ([`wake_tx`]). The switch maps the same space
//!   for the driver's twin.
//!
//! The socket does not see frames its interface sends (`PACKET_IGNORE_OUTGOING`),
//! so what the switch sends out of the uplink never comes back in. With
//! `qdisc_bypass` ([`PacketOptions`]) transmitted frames skip the interface's
//! queueing discipline (`PACKET_QDISC_BYPASS`): less work per frame on an
//! interface that has one, at the price of `tc` shaping and of the interface's
//! packet taps (`tcpdump` sees none of them); a veth or a TAP has no queue
//! (`noqueue`), so there it changes nothing (docs/evaluation.md).
//!
//! Several sockets on one interface share its received frames through a
//! [`Fanout`] group: the kernel hands each frame to one of them by its flow hash
//! (`PACKET_FANOUT_HASH`), so a flow's frames keep their order. In a group the
//! socket's own `PACKET_IGNORE_OUTGOING` has no effect (the kernel taps the
//! interface once, for the group), so each member carries a classic BPF filter
//! that drops outgoing frames instead ([`DROP_OUTGOING`]); and a socket joins
//! its group behind a filter that drops everything ([`DROP_ALL`]), so that in
//! the moment between `bind` and the join it takes no frame the group's other
//! members also get. Fragments are not reassembled before hashing (the switch
//! forwards the wire's frames as they are): a fragmented datagram's later
//! pieces may reach another member than its first.
//!
//! Limits: a transmit frame holds at most [`TX_FRAME_SIZE`] less its header; a
//! fanout member can only join while its interface is up (the kernel refuses
//! a socket that is not receiving), so a queue's domain starts once it is.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::{Mutex, PoisonError};

pub use af_packet_driver::{PacketConfig, PacketLayout, TX_FRAME_SIZE};
use rustix::net::{AddressFamily, SocketFlags, SocketType};
use vm_memory::MmapRegion;

use crate::ifname::IfName;
use crate::space::{map_pieces, sealed_memfd, Piece, SpaceError};
use crate::sys;

/// The rings' shape: each ring has `blocks` blocks of `block_size` bytes (a
/// power of two from a page up; received frames are packed into blocks,
/// transmit frames take [`TX_FRAME_SIZE`] each).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RingGeometry {
    /// Bytes per block.
    pub block_size: u32,
    /// Blocks.
    pub blocks: u32,
    /// A block is handed over after this many milliseconds even when not full.
    pub retire_ms: u32,
}

impl Default for RingGeometry {
    /// 64 blocks of 64 KiB (4 MiB), handed over within 1 ms.
    fn default() -> Self {
        RingGeometry {
            block_size: 1 << 16,
            blocks: 64,
            retire_ms: 1,
        }
    }
}

impl RingGeometry {
    /// The driver's configuration of these rings.
    pub fn config(&self) -> PacketConfig {
        PacketConfig {
            block_size: self.block_size,
            blocks: self.blocks,
        }
    }
}

/// How the switch sets up a socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PacketOptions {
    /// The rings' shape.
    pub geometry: RingGeometry,
    /// Transmit past the interface's queueing discipline.
    pub qdisc_bypass: bool,
}

/// Classic BPF: `ret #0`, every frame dropped.
pub const DROP_ALL: [libc::sock_filter; 1] = [bpf_stmt(BPF_RET_K, 0)];

/// Classic BPF: drop the frames the interface sends (`skb->pkt_type ==
/// PACKET_OUTGOING`), take the others whole.
pub const DROP_OUTGOING: [libc::sock_filter; 4] = [
    // A = skb->pkt_type (an ancillary load: `SKF_AD_OFF + SKF_AD_PKTTYPE`).
    bpf_stmt(BPF_LD_W_ABS, (SKF_AD_OFF + SKF_AD_PKTTYPE) as u32),
    // if A == PACKET_OUTGOING goto drop
    libc::sock_filter {
        code: BPF_JMP_JEQ_K,
        jt: 0,
        jf: 1,
        k: libc::PACKET_OUTGOING as u32,
    },
    bpf_stmt(BPF_RET_K, 0),
    bpf_stmt(BPF_RET_K, u32::MAX),
];

const BPF_RET_K: u16 = 0x06; // BPF_RET | BPF_K
const BPF_LD_W_ABS: u16 = 0x20; // BPF_LD | BPF_W | BPF_ABS
const BPF_JMP_JEQ_K: u16 = 0x15; // BPF_JMP | BPF_JEQ | BPF_K
const SKF_AD_OFF: i32 = -0x1000;
const SKF_AD_PKTTYPE: i32 = 4;

const fn bpf_stmt(code: u16, k: u32) -> libc::sock_filter {
    libc::sock_filter {
        code,
        jt: 0,
        jf: 0,
        k,
    }
}

/// `PACKET_FANOUT_HASH`: a frame goes to the member its flow hash picks.
const FANOUT_HASH: u32 = 0;
/// `PACKET_FANOUT_FLAG_UNIQUEID`: the kernel picks an id no group has.
const FANOUT_FLAG_UNIQUEID: u32 = 0x2000;

/// A fanout group: the AF_PACKET sockets of one uplink's queues, among which
/// the kernel spreads the interface's received frames by flow. The first
/// socket creates it with an id the kernel picks; the others (and every
/// socket opened again for a restarted domain) join that id. While one of its
/// sockets lives the group stays; once its interface was deleted, the next
/// socket (bound to the interface of that name now) starts a new group, which
/// the others join as their domains are restarted.
#[derive(Debug, Default)]
pub struct Fanout {
    id: Mutex<Option<u16>>,
}

impl Fanout {
    /// A group no socket has joined yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// The group's id, once a socket created it.
    pub fn id(&self) -> Option<u16> {
        *self.id.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Puts the bound socket `socket` into the group (creating the group when
    /// there is none) and returns the group's id.
    fn join(&self, socket: BorrowedFd<'_>) -> std::io::Result<u16> {
        let mut id = self.id.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(group) = *id {
            match sys::packet_fanout(socket, u32::from(group) | FANOUT_HASH << 16) {
                Ok(()) => return Ok(group),
                // The group's members are bound to an interface that was deleted
                // (they see no frames any more): start a new group.
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {}
                Err(e) => return Err(e),
            }
        }
        sys::packet_fanout(socket, (FANOUT_HASH | FANOUT_FLAG_UNIQUEID) << 16)?;
        let group = (sys::packet_fanout_of(socket)? & 0xffff) as u16;
        *id = Some(group);
        Ok(group)
    }
}

/// Why a packet socket could not be opened or mapped.
#[derive(Debug, thiserror::Error)]
pub enum PacketError {
    /// No such interface.
    #[error("no interface {0}")]
    NoInterface(IfName),
    /// A system call failed.
    #[error("AF_PACKET socket on {name}: {what}")]
    Sys {
        /// The interface.
        name: IfName,
        /// What was being done.
        what: &'static str,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The geometry gives no layout the driver takes.
    #[error("bad ring geometry {0:?}")]
    Geometry(RingGeometry),
    /// The driver's space could not be built.
    #[error("cannot map the driver's space")]
    Space(#[from] SpaceError),
}

/// What the switch hands a domain: the bound socket with its rings, the
/// driver's state memfd, and the driver's layout.
#[derive(Debug)]
pub struct PacketHandover {
    /// The socket, bound to its interface.
    pub socket: OwnedFd,
    /// The driver's state, the first piece of its space (a sealed memfd).
    pub state: OwnedFd,
    /// Where everything lies in the driver's space.
    pub layout: PacketLayout,
}

/// An AF_PACKET socket on one interface: [`PacketSocket::open`].
#[derive(Debug)]
pub struct PacketSocket;

impl PacketSocket {
    /// Opens a socket on `name` (needs `CAP_NET_RAW`) with rings of the
    /// options' geometry, close-on-exec and non-blocking from the start, in
    /// the `fanout` group when given, and the driver's state memfd.
    pub fn open(
        name: &IfName,
        options: PacketOptions,
        fanout: Option<&Fanout>,
    ) -> Result<PacketHandover, PacketError> {
        let geometry = options.geometry;
        let layout =
            PacketLayout::new(geometry.config()).map_err(|_| PacketError::Geometry(geometry))?;
        let sys_err = |what| {
            move |e: rustix::io::Errno| PacketError::Sys {
                name: name.clone(),
                what,
                source: e.into(),
            }
        };
        // Protocol 0: the socket takes no frame at all until it is bound to its
        // interface, below, after its rings exist (with `ETH_P_ALL` here it would
        // take every interface's frames meanwhile).
        let fd = rustix::net::socket_with(
            AddressFamily::PACKET,
            SocketType::RAW,
            SocketFlags::CLOEXEC | SocketFlags::NONBLOCK,
            None,
        )
        .map_err(sys_err("socket"))?;
        let ifindex = match rustix::net::netdevice::name_to_index(&fd, name.as_str()) {
            Ok(i) => i,
            Err(rustix::io::Errno::NODEV) => return Err(PacketError::NoInterface(name.clone())),
            Err(e) => return Err(sys_err("interface index")(e)),
        };
        let rx = sys::TpacketReq3 {
            block_size: geometry.block_size,
            block_nr: geometry.blocks,
            // Received frames are packed into blocks; the frame fields only size
            // the ring for the kernel's checks.
            frame_size: geometry.block_size,
            frame_nr: geometry.blocks,
            retire_blk_tov: geometry.retire_ms,
            ..Default::default()
        };
        let tx = sys::TpacketReq3 {
            block_size: geometry.block_size,
            block_nr: geometry.blocks,
            frame_size: TX_FRAME_SIZE,
            frame_nr: layout.tx_frames,
            ..Default::default()
        };
        let io_err = |what| {
            move |source: std::io::Error| PacketError::Sys {
                name: name.clone(),
                what,
                source,
            }
        };
        sys::packet_rings(fd.as_fd(), &rx, &tx, options.qdisc_bypass).map_err(io_err("rings"))?;
        match fanout {
            None => sys::packet_bind(fd.as_fd(), ifindex).map_err(io_err("bind"))?,
            Some(group) => {
                sys::socket_filter(fd.as_fd(), &DROP_ALL).map_err(io_err("filter"))?;
                sys::packet_bind(fd.as_fd(), ifindex).map_err(io_err("bind"))?;
                group.join(fd.as_fd()).map_err(io_err("fanout"))?;
                sys::socket_filter(fd.as_fd(), &DROP_OUTGOING).map_err(io_err("filter"))?;
            }
        }
        let state = sealed_memfd("twin-packet-state", layout.state_len)
            .map_err(sys_err("the driver's state memfd"))?;
        Ok(PacketHandover {
            socket: fd,
            state,
            layout,
        })
    }
}

/// Maps the driver's space of an AF_PACKET socket: one reservation of
/// `layout.len` bytes, the state memfd first, then the socket's two rings (the
/// kernel maps the transmit ring right after the receive ring).
pub fn map_space(
    layout: &PacketLayout,
    state: BorrowedFd<'_>,
    socket: BorrowedFd<'_>,
) -> Result<MmapRegion<()>, PacketError> {
    let pieces = [
        Piece {
            at: 0,
            len: layout.state_len,
            fd: state,
            file_offset: 0,
            what: "state",
        },
        Piece {
            at: layout.rx,
            len: 2 * layout.ring_len,
            fd: socket,
            file_offset: 0,
            what: "rings",
        },
    ];
    Ok(map_pieces(layout.len, &pieces)?)
}

/// What a wake-up of the kernel found ([`wake_tx`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wake {
    /// The kernel took the frames handed to it (or will at the next wake-up:
    /// its send buffer was full).
    Sent,
    /// The interface is down: the kernel keeps the frames handed to it.
    LinkDown,
}

/// Wakes the kernel to send the frames handed to it on the transmit ring (a
/// `send` of nothing). An error means the interface is gone.
pub fn wake_tx(socket: BorrowedFd<'_>) -> std::io::Result<Wake> {
    match rustix::net::send(socket, &[], rustix::net::SendFlags::DONTWAIT) {
        Ok(_) | Err(rustix::io::Errno::AGAIN) | Err(rustix::io::Errno::NOBUFS) => Ok(Wake::Sent),
        Err(rustix::io::Errno::NETDOWN) => Ok(Wake::LinkDown),
        Err(e) => Err(e.into()),
    }
}

/// Reads and clears the error the kernel noted on the socket (the interface
/// went down or away: it then reports the socket readable with an error, again
/// and again until the error is read). `Ok` when there was none.
pub fn take_error(socket: BorrowedFd<'_>) -> std::io::Result<()> {
    let mut b = [0u8; 1];
    match rustix::io::read(socket, &mut b) {
        // With a receive ring the kernel queues nothing to read.
        Ok(_) | Err(rustix::io::Errno::AGAIN) => Ok(()),
        Err(e) => Err(e.into()),
    }
}
