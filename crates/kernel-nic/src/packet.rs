//! An AF_PACKET socket with TPACKET_V3 receive and transmit rings (the `packet:`
//! uplink kind): the switch opens and binds it
//! ([`PacketSocket::open`]), a driver domain maps the rings ([`Rings::map`]),
//! reads the blocks the kernel hands over through [`crate::packet_ring`]'s checks
//! ([`Rings::poll_block`]), and fills transmit frames ([`Rings::send`]) that one
//! `send` system call per batch hands to the kernel ([`Rings::kick`]).
//!
//! The socket does not see frames its interface sends (`PACKET_IGNORE_OUTGOING`),
//! so what the switch sends out of the uplink never comes back in. Limits: one
//! socket (no fanout); a transmit frame holds at most [`TX_FRAME_SIZE`] less its
//! header.

use std::fs::File;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::Ordering;

use rustix::net::{AddressFamily, Protocol, SocketFlags, SocketType};
use vm_memory::{Bytes, MmapRegion, VolatileMemory};

use crate::ifname::IfName;
use crate::packet_ring::{self, BlockCursor, BlockMem, Walk};
use crate::sys;

/// Bytes of one transmit frame slot (its header and the frame).
pub const TX_FRAME_SIZE: u32 = 2048;
/// Where a transmit frame's data starts in its slot (`TPACKET3_HDRLEN` less the
/// `sockaddr_ll` the kernel does not read on transmit).
const TX_DATA_OFFSET: usize = 48;
/// `tp_status` of a transmit slot: free for user space.
const TP_STATUS_AVAILABLE: u32 = 0;
/// `tp_status`: handed to the kernel to send.
const TP_STATUS_SEND_REQUEST: u32 = 1;
/// `tp_status`: the kernel refused the frame's format.
const TP_STATUS_WRONG_FORMAT: u32 = 4;

/// The rings' shape: each ring has `blocks` blocks of `block_size` bytes (a
/// multiple of the page size; received frames are packed into blocks, transmit
/// frames take [`TX_FRAME_SIZE`] each).
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
    /// Bytes of one ring.
    pub fn ring_len(&self) -> usize {
        self.block_size as usize * self.blocks as usize
    }

    /// Transmit frame slots.
    pub fn tx_frames(&self) -> u32 {
        self.block_size / TX_FRAME_SIZE * self.blocks
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
    /// The socket could not be duplicated for the mapping.
    #[error("cannot copy the socket's descriptor")]
    Copy(#[source] std::io::Error),
    /// The rings could not be mapped.
    #[error("cannot map the rings")]
    Map(#[source] vm_memory::mmap::MmapRegionError),
}

/// An AF_PACKET socket bound to one interface, with a TPACKET_V3 receive ring.
#[derive(Debug)]
pub struct PacketSocket {
    fd: OwnedFd,
    geometry: RingGeometry,
}

impl PacketSocket {
    /// Opens a socket on `name` (needs `CAP_NET_RAW`) with a receive ring of
    /// `geometry`; close-on-exec and non-blocking from the start.
    pub fn open(name: &IfName, geometry: RingGeometry) -> Result<PacketSocket, PacketError> {
        let sys_err = |what| {
            move |e: rustix::io::Errno| PacketError::Sys {
                name: name.clone(),
                what,
                source: e.into(),
            }
        };
        let all = Protocol::from_raw(
            rustix::net::RawProtocol::new((libc::ETH_P_ALL as u16).to_be() as u32)
                .expect("ETH_P_ALL is not 0"),
        );
        let fd = rustix::net::socket_with(
            AddressFamily::PACKET,
            SocketType::RAW,
            SocketFlags::CLOEXEC | SocketFlags::NONBLOCK,
            Some(all),
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
            frame_nr: geometry.tx_frames(),
            ..Default::default()
        };
        sys::packet_rings(fd.as_fd(), ifindex, &rx, &tx).map_err(|source| PacketError::Sys {
            name: name.clone(),
            what: "rings",
            source,
        })?;
        Ok(PacketSocket { fd, geometry })
    }

    /// The ring's shape.
    pub fn geometry(&self) -> RingGeometry {
        self.geometry
    }

    /// The descriptor, to hand to a driver domain.
    pub fn into_fd(self) -> OwnedFd {
        self.fd
    }
}

/// What [`Rings::send`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TxSlot {
    /// The frame is in a slot, handed to the kernel at the next [`Rings::kick`].
    Queued,
    /// Every slot is still the kernel's.
    Full,
    /// The frame is larger than a slot holds.
    TooLong,
}

/// A domain's mapping of the rings (receive, then transmit): reads the receive
/// blocks in turn and fills the transmit slots in turn.
#[derive(Debug)]
pub struct Rings {
    map: MmapRegion<()>,
    fd: OwnedFd,
    geometry: RingGeometry,
    rx_next: u32,
    /// The receive block being read, when it was not read whole.
    rx_cursor: Option<BlockCursor>,
    tx_next: u32,
    /// Frames queued since the last kick.
    tx_pending: u32,
    /// Transmit frames the kernel refused (`TP_STATUS_WRONG_FORMAT`).
    tx_refused: u64,
}

/// One block of a mapped ring, as [`BlockMem`].
struct MappedBlock<'a> {
    map: &'a MmapRegion<()>,
    base: usize,
    len: usize,
}

impl BlockMem for MappedBlock<'_> {
    fn block_len(&self) -> usize {
        self.len
    }
    fn u32_at(&self, off: usize) -> Option<u32> {
        if off.checked_add(4)? > self.len {
            return None;
        }
        self.map
            .get_slice(self.base + off, 4)
            .ok()?
            .load::<u32>(0, Ordering::Acquire)
            .ok()
    }
    fn u16_at(&self, off: usize) -> Option<u16> {
        if off.checked_add(2)? > self.len {
            return None;
        }
        let mut b = [0u8; 2];
        self.map.get_slice(self.base + off, 2).ok()?.copy_to(&mut b);
        Some(u16::from_ne_bytes(b))
    }
    fn copy_out(&self, off: usize, dst: &mut [u8]) -> bool {
        match off.checked_add(dst.len()) {
            Some(end) if end <= self.len => self
                .map
                .get_slice(self.base + off, dst.len())
                .map(|s| s.copy_to(dst) == dst.len())
                .unwrap_or(false),
            _ => false,
        }
    }
}

impl Rings {
    /// Maps the rings of `fd` (a socket from [`PacketSocket::open`] with
    /// `geometry`).
    pub fn map(fd: OwnedFd, geometry: RingGeometry) -> Result<Rings, PacketError> {
        let copy = fd.try_clone().map_err(PacketError::Copy)?;
        let file = vm_memory::FileOffset::new(File::from(copy), 0);
        let map = MmapRegion::build(
            Some(file),
            2 * geometry.ring_len(),
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
        )
        .map_err(PacketError::Map)?;
        Ok(Rings {
            map,
            fd,
            geometry,
            rx_next: 0,
            rx_cursor: None,
            tx_next: 0,
            tx_pending: 0,
            tx_refused: 0,
        })
    }

    /// Reads up to `max` frames of the receive block in turn, if the kernel handed
    /// it over: each frame is copied into `buf` and passed to `f`. The block goes
    /// back to the kernel once every packet of it was visited (in this call or
    /// later ones) or it turned out malformed. `None` when the block is still the
    /// kernel's.
    pub fn poll_block(&mut self, buf: &mut [u8], max: usize, f: impl FnMut(&[u8])) -> Option<Walk> {
        let block = MappedBlock {
            map: &self.map,
            base: self.rx_next as usize * self.geometry.block_size as usize,
            len: self.geometry.block_size as usize,
        };
        let (walk, done) = match &mut self.rx_cursor {
            Some(c) => {
                let w = c.walk(&block, buf, max, f);
                (w, c.is_done())
            }
            None => match packet_ring::open_block(&block)? {
                Ok(mut c) => {
                    let w = c.walk(&block, buf, max, f);
                    let done = c.is_done();
                    self.rx_cursor = (!done).then_some(c);
                    (w, done)
                }
                Err(m) => (
                    Walk {
                        malformed: Some(m),
                        ..Walk::default()
                    },
                    true,
                ),
            },
        };
        if done {
            // Back to the kernel (TP_STATUS_KERNEL), after every read of the block.
            let _ = self
                .map
                .get_slice(block.base + 8, 4)
                .and_then(|s| s.store(0u32, 0, Ordering::Release));
            self.rx_cursor = None;
            self.rx_next = (self.rx_next + 1) % self.geometry.blocks;
        }
        Some(walk)
    }

    /// Puts `frame` into the next transmit slot when it is free.
    pub fn send(&mut self, frame: &[u8]) -> TxSlot {
        if frame.len() > TX_FRAME_SIZE as usize - TX_DATA_OFFSET {
            return TxSlot::TooLong;
        }
        let base = self.geometry.ring_len() + self.tx_next as usize * TX_FRAME_SIZE as usize;
        let Ok(slot) = self.map.get_slice(base, TX_FRAME_SIZE as usize) else {
            return TxSlot::Full;
        };
        let status = slot.load::<u32>(20, Ordering::Acquire).unwrap_or(u32::MAX);
        match status {
            TP_STATUS_AVAILABLE => {}
            TP_STATUS_WRONG_FORMAT => self.tx_refused += 1,
            _ => return TxSlot::Full,
        }
        let Ok(data) = slot.get_slice(TX_DATA_OFFSET, frame.len()) else {
            return TxSlot::Full;
        };
        data.copy_from(frame);
        let _ = slot.store(frame.len() as u32, 16, Ordering::Relaxed);
        let _ = slot.store(TP_STATUS_SEND_REQUEST, 20, Ordering::Release);
        self.tx_next = (self.tx_next + 1) % self.geometry.tx_frames();
        self.tx_pending += 1;
        TxSlot::Queued
    }

    /// Transmit frames the kernel refused (`TP_STATUS_WRONG_FORMAT`), counted as
    /// their slots come round again.
    pub fn tx_refused(&self) -> u64 {
        self.tx_refused
    }

    /// Hands the queued transmit frames to the kernel (one `send`); a no-op when
    /// nothing is queued. While the interface is down the kernel keeps them: they
    /// are taken back and counted ([`Kick::LinkDown`]), as a TAP device drops
    /// what is written to it while down, so that nothing stale goes out when it
    /// comes back up. An error means the interface is gone.
    pub fn kick(&mut self) -> std::io::Result<Kick> {
        if self.tx_pending == 0 {
            return Ok(Kick::Sent);
        }
        self.tx_pending = 0;
        self.send_nothing()
    }

    /// Asks the kernel whether the interface is still there (a `send` of nothing,
    /// which sends what is queued too); an error means it is gone.
    pub fn probe(&mut self) -> std::io::Result<Kick> {
        self.tx_pending = 0;
        self.send_nothing()
    }

    fn send_nothing(&mut self) -> std::io::Result<Kick> {
        match rustix::net::send(&self.fd, &[], rustix::net::SendFlags::DONTWAIT) {
            Ok(_) | Err(rustix::io::Errno::AGAIN) => Ok(Kick::Sent),
            Err(rustix::io::Errno::NETDOWN) => Ok(Kick::LinkDown(self.take_back())),
            Err(e) => Err(e.into()),
        }
    }

    /// Takes back every transmit slot handed to the kernel and not yet taken by
    /// it; returns how many. The kernel reads the ring in order from its own
    /// position and stops at the first slot that is not handed over, so those
    /// slots are the run just behind `tx_next`: walking back over it puts
    /// `tx_next` where the kernel will look next (walking forward over free
    /// slots would leave the two apart, and the kernel would never send again).
    fn take_back(&mut self) -> u32 {
        let frames = self.geometry.tx_frames();
        let mut n = 0;
        while n < frames {
            let prev = (self.tx_next + frames - 1) % frames;
            let base = self.geometry.ring_len() + prev as usize * TX_FRAME_SIZE as usize;
            let Ok(status) = self.map.get_slice(base + 20, 4) else {
                break;
            };
            // Only this thread hands slots to the kernel, and the kernel takes
            // none while the interface is down.
            if status.load::<u32>(0, Ordering::Acquire).ok() != Some(TP_STATUS_SEND_REQUEST)
                || status
                    .store(TP_STATUS_AVAILABLE, 0, Ordering::Release)
                    .is_err()
            {
                break;
            }
            self.tx_next = prev;
            n += 1;
        }
        n
    }

    /// Reads and clears the error the kernel noted on the socket (the interface
    /// went down or away: it then reports the socket readable with an error,
    /// again and again until the error is read). `Ok` when there was none.
    pub fn take_error(&self) -> std::io::Result<()> {
        let mut b = [0u8; 1];
        match rustix::io::read(&self.fd, &mut b) {
            // With a receive ring the kernel queues nothing to read.
            Ok(_) | Err(rustix::io::Errno::AGAIN) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// The socket, to wait on (readable when a receive block is handed over or an
    /// error is noted).
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// What [`Rings::kick`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kick {
    /// The queued frames were handed to the kernel.
    Sent,
    /// The interface is down: this many queued frames were taken back, unsent.
    LinkDown(u32),
}

impl AsFd for PacketSocket {
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.fd.as_fd()
    }
}
