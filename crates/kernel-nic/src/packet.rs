//! An AF_PACKET socket with a TPACKET_V3 receive ring (the next uplink kind,
//! issue 15; not wired to an uplink yet): the switch opens and binds it
//! ([`PacketSocket::open`]), a driver domain maps the ring and reads the blocks
//! the kernel hands over ([`RxRing`]), through [`crate::packet_ring`]'s checks.
//!
//! The socket does not see frames its interface sends (`PACKET_IGNORE_OUTGOING`),
//! so what the switch sends out of the uplink never comes back in. Limits: receive
//! only (the transmit ring is to come), one socket (no fanout).

use std::fs::File;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::Ordering;

use rustix::net::{AddressFamily, Protocol, SocketFlags, SocketType};
use vm_memory::{Bytes, MmapRegion, VolatileMemory};

use crate::ifname::IfName;
use crate::packet_ring::{self, BlockMem, Walk};
use crate::sys;

/// The receive ring's shape: `blocks` blocks of `block_size` bytes (a multiple
/// of the page size; frames are packed into blocks).
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
    /// Bytes of the whole ring.
    pub fn len(&self) -> usize {
        self.block_size as usize * self.blocks as usize
    }

    /// Whether the ring has no room (never, for a valid geometry).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
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
    /// The ring could not be mapped.
    #[error("cannot map the receive ring")]
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
        let req = sys::TpacketReq3 {
            block_size: geometry.block_size,
            block_nr: geometry.blocks,
            // TPACKET_V3 packs frames into blocks; the frame fields only size the
            // ring for the kernel's checks.
            frame_size: geometry.block_size,
            frame_nr: geometry.blocks,
            retire_blk_tov: geometry.retire_ms,
            ..Default::default()
        };
        sys::packet_rx_ring(fd.as_fd(), ifindex, &req).map_err(|source| PacketError::Sys {
            name: name.clone(),
            what: "receive ring",
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

/// A domain's mapping of a receive ring: reads the blocks in turn.
#[derive(Debug)]
pub struct RxRing {
    map: MmapRegion<()>,
    geometry: RingGeometry,
    next: u32,
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

impl RxRing {
    /// Maps the ring of `fd` (a socket from [`PacketSocket::open`] with `geometry`).
    pub fn map(fd: OwnedFd, geometry: RingGeometry) -> Result<RxRing, PacketError> {
        let file = vm_memory::FileOffset::new(File::from(fd), 0);
        let map = MmapRegion::build(
            Some(file),
            geometry.len(),
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
        )
        .map_err(PacketError::Map)?;
        Ok(RxRing {
            map,
            geometry,
            next: 0,
        })
    }

    /// Reads the next block if the kernel handed it over: each frame is copied
    /// into `buf` and passed to `f`; then the block goes back to the kernel.
    /// `None` when the next block is still the kernel's.
    pub fn poll_block(&mut self, buf: &mut [u8], f: impl FnMut(&[u8])) -> Option<Walk> {
        let block = MappedBlock {
            map: &self.map,
            base: self.next as usize * self.geometry.block_size as usize,
            len: self.geometry.block_size as usize,
        };
        let walk = packet_ring::walk_block(&block, buf, f)?;
        // Back to the kernel (TP_STATUS_KERNEL), after every read of the block.
        let status_at = block.base + 8;
        let _ = self
            .map
            .get_slice(status_at, 4)
            .and_then(|s| s.store(0u32, 0, Ordering::Release));
        self.next = (self.next + 1) % self.geometry.blocks;
        Some(walk)
    }
}

impl AsFd for PacketSocket {
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.fd.as_fd()
    }
}
