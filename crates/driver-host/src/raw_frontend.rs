//! A raw vhost-user frontend for tests: full control over what goes into the rings.
//!
//! [`RawFrontend`] connects to a vhost-user *device* socket (a switch client port,
//! the software NIC) with the same [`NicLink`] the driver uses and shares a fresh
//! [`Region`] as the frontend's whole memory (guest address 0). Unlike the driver,
//! it checks nothing: the caller writes arbitrary descriptors (any address, length,
//! flags, `next`), arbitrary avail-ring entries, and arbitrary avail indices, so
//! tests can play a hostile or buggy client against a device.
//!
//! Layout: queue 0 (RX) from offset 0, queue 1 (TX) after it, both page-aligned
//! ([`QueueLayout::new`]); everything from [`RawFrontend::buffers`] to the end of
//! the region is free for frame buffers.
//!
//! Limits: test tooling, not a driver. Only VERSION_1 is negotiated (no EVENT_IDX,
//! no MRG_RXBUF: the virtio-net header is 12 bytes); interrupts are suppressed with
//! `VRING_AVAIL_F_NO_INTERRUPT`; used entries are only counted, never reclaimed.

use std::path::Path;
use std::sync::Arc;

use driver_env::{Doorbell, DriverMem, MemFault};
use driver_virtqueue::{QueueError, QueueLayout, AVAIL_F_NO_INTERRUPT};
use twin_wire::features::F_VERSION_1;

use crate::env::DirectEnv;
use crate::link::{LinkError, NicLink, QueueSetup};
use crate::region::{Region, RegionError};

/// A memory region as [`RawFrontend::set_mem_table`] sends it.
pub use vhost::VhostUserMemoryRegionInfo;

/// Error of this module.
#[derive(Debug, thiserror::Error)]
pub enum RawError {
    /// The region could not be created.
    #[error("cannot create the frontend's memory")]
    Region(#[from] RegionError),
    /// The vhost-user connection failed.
    #[error("vhost-user link failed")]
    Link(#[from] LinkError),
    /// The queue size is invalid.
    #[error("invalid queue layout")]
    Layout(#[from] QueueError),
    /// A write to the frontend's own memory was outside it.
    #[error("access outside the frontend's memory")]
    Access(#[from] MemFault),
    /// The device does not offer VERSION_1.
    #[error("device offers no VIRTIO_F_VERSION_1 (features {0:#x})")]
    NoVersion1(u64),
    /// A queue number other than 0 or 1.
    #[error("no queue {0}")]
    NoQueue(u16),
}

/// A connected frontend whose rings the caller writes by hand.
#[derive(Debug)]
pub struct RawFrontend {
    region: Arc<Region>,
    env: DirectEnv,
    link: NicLink,
    queues: [QueueLayout; 2],
    next_avail: [u16; 2],
    buffers: u64,
    _calls: Vec<vmm_sys_util::eventfd::EventFd>,
}

impl RawFrontend {
    /// Connects to the device at `socket` with two queues of `queue_size` entries and
    /// `mem_len` bytes of memory (rounded up to 4 KiB, at least the rings plus 64 KiB).
    /// The memory is a memfd sealed against shrinking and growing.
    pub fn connect(socket: &Path, queue_size: u16, mem_len: u64) -> Result<Self, RawError> {
        Self::connect_with(socket, queue_size, mem_len, true)
    }

    /// Like [`RawFrontend::connect`], but the memfd is not sealed: the caller may
    /// shrink it ([`RawFrontend::memfd`]) under the device. Do not touch the
    /// frontend's memory after that (this process would fault too); only
    /// [`RawFrontend::kick`] and [`RawFrontend::is_connected`] are safe then.
    pub fn connect_unsealed(
        socket: &Path,
        queue_size: u16,
        mem_len: u64,
    ) -> Result<Self, RawError> {
        Self::connect_with(socket, queue_size, mem_len, false)
    }

    fn connect_with(
        socket: &Path,
        queue_size: u16,
        mem_len: u64,
        sealed: bool,
    ) -> Result<Self, RawError> {
        let rx = QueueLayout::new(0, queue_size)?;
        let tx = QueueLayout::new(rx.end(), queue_size)?;
        let buffers = tx.end().div_ceil(4096) * 4096;
        let len = mem_len.max(buffers + 65536);
        let region = Arc::new(if sealed {
            Region::create("twin-raw-frontend", len)?
        } else {
            Region::create_unsealed("twin-raw-frontend", len)?
        });
        let mut link = NicLink::connect(socket)?;
        let offered = link.offered_features();
        if offered & F_VERSION_1 == 0 {
            return Err(RawError::NoVersion1(offered));
        }
        let setup = DirectEnv::new(region.clone(), Vec::new());
        for l in [rx, tx] {
            setup.write_u16(l.avail, AVAIL_F_NO_INTERRUPT)?;
        }
        let queues = [
            QueueSetup {
                index: 0,
                layout: rx,
                base: 0,
            },
            QueueSetup {
                index: 1,
                layout: tx,
                base: 0,
            },
        ];
        let fds = link.start(F_VERSION_1, &region, &queues, None)?;
        let (kicks, calls): (Vec<_>, Vec<_>) = fds.into_iter().unzip();
        Ok(Self {
            region: region.clone(),
            env: DirectEnv::new(region, kicks),
            link,
            queues: [rx, tx],
            next_avail: [0; 2],
            buffers,
            _calls: calls,
        })
    }

    fn q(&self, q: u16) -> Result<QueueLayout, RawError> {
        self.queues
            .get(usize::from(q))
            .copied()
            .ok_or(RawError::NoQueue(q))
    }

    /// Queue `q`'s layout in the frontend's memory.
    pub fn layout(&self, q: u16) -> Result<QueueLayout, RawError> {
        self.q(q)
    }

    /// First byte free for buffers.
    pub fn buffers(&self) -> u64 {
        self.buffers
    }

    /// Size of the frontend's memory (addresses at or beyond it are outside).
    pub fn mem_len(&self) -> u64 {
        self.env.region_len()
    }

    /// Writes `bytes` at guest address `addr` of the frontend's memory.
    pub fn write(&self, addr: u64, bytes: &[u8]) -> Result<(), RawError> {
        Ok(self.env.write_bytes(addr, bytes)?)
    }

    /// Reads `buf.len()` bytes at guest address `addr` of the frontend's memory (for
    /// example a frame the device wrote into a receive buffer).
    pub fn read(&self, addr: u64, buf: &mut [u8]) -> Result<(), RawError> {
        Ok(self.env.read_bytes(addr, buf)?)
    }

    /// The frontend's memory, shared with the device: another thread may write it
    /// while the device reads (a hostile client racing the device).
    pub fn region(&self) -> &Arc<Region> {
        self.env.region()
    }

    /// Used element `idx % size` of queue `q` as the device wrote it: `(id, len)`.
    pub fn used_elem(&self, q: u16, idx: u16) -> Result<(u32, u32), RawError> {
        let l = self.q(q)?;
        let e = l.used + 4 + 8 * u64::from(idx & (l.size - 1));
        Ok((self.env.read_u32(e)?, self.env.read_u32(e + 4)?))
    }

    /// Writes descriptor `id` of queue `q` verbatim (`id` must be below the size).
    pub fn set_desc(
        &self,
        q: u16,
        id: u16,
        addr: u64,
        len: u32,
        flags: u16,
        next: u16,
    ) -> Result<(), RawError> {
        let d = self.q(q)?.desc + 16 * u64::from(id);
        self.env.write_u64(d, addr)?;
        self.env.write_u32(d + 8, len)?;
        self.env.write_u16(d + 12, flags)?;
        self.env.write_u16(d + 14, next)?;
        Ok(())
    }

    /// Appends `head` (any value, in range or not) to queue `q`'s avail ring; not
    /// visible before [`RawFrontend::publish`].
    pub fn push_avail(&mut self, q: u16, head: u16) -> Result<(), RawError> {
        let l = self.q(q)?;
        let i = usize::from(q);
        let slot = self.next_avail[i] & (l.size - 1);
        self.env
            .write_u16(l.avail + 4 + 2 * u64::from(slot), head)?;
        self.next_avail[i] = self.next_avail[i].wrapping_add(1);
        Ok(())
    }

    /// Publishes queue `q`'s avail index and kicks the device.
    pub fn publish(&mut self, q: u16) -> Result<(), RawError> {
        self.q(q)?;
        let idx = self.next_avail[usize::from(q)];
        self.set_avail_idx(q, idx)
    }

    /// Writes any avail index (hostile: it may run ahead of the ring) and kicks.
    pub fn set_avail_idx(&mut self, q: u16, idx: u16) -> Result<(), RawError> {
        let l = self.q(q)?;
        self.env.store_release_u16(l.avail + 2, idx)?;
        self.next_avail[usize::from(q)] = idx;
        self.env.kick(q);
        Ok(())
    }

    /// The avail index published so far (or set by [`RawFrontend::set_avail_idx`]).
    pub fn avail_idx(&self, q: u16) -> u16 {
        self.next_avail.get(usize::from(q)).copied().unwrap_or(0)
    }

    /// The device's used index of queue `q`.
    pub fn used_idx(&self, q: u16) -> Result<u16, RawError> {
        Ok(self.env.load_acquire_u16(self.q(q)?.used + 2)?)
    }

    /// The memfd shared with the device as the frontend's memory.
    pub fn memfd(&self) -> &std::fs::File {
        self.region.file()
    }

    /// Kicks queue `q` (writes its kick eventfd; touches no memory).
    pub fn kick(&self, q: u16) {
        self.env.kick(q);
    }

    /// Sends another memory table, verbatim (hostile sizes welcome). Fails when the
    /// device refuses it (it acknowledges every request) or hangs up.
    pub fn set_mem_table(&mut self, regions: &[VhostUserMemoryRegionInfo]) -> Result<(), RawError> {
        Ok(self.link.set_mem_table(regions)?)
    }

    /// Whether the device is still connected.
    pub fn is_connected(&self) -> bool {
        self.link.is_connected()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_socket_is_an_error() {
        let e = RawFrontend::connect(Path::new("/nonexistent/twin-raw.sock"), 64, 0);
        assert!(matches!(e, Err(RawError::Link(_))));
        assert!(QueueLayout::new(0, 63).is_err());
    }
}
