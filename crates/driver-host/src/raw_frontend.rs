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
//!
//! [`RawWire`] goes one level lower, for the control plane: it writes vhost-user
//! messages byte by byte (any request, any body, any descriptors) and reads the
//! device's replies, so tests can send what `vhost`'s frontend refuses to (a
//! zero-sized region, a ring size above 32768, 33 regions). A connected
//! [`RawFrontend`] offers the same on its own connection ([`RawFrontend::wire`]).

use std::io::{IoSlice, Read};
use std::mem::MaybeUninit;
use std::os::fd::BorrowedFd;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

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
    /// The socket failed.
    #[error("vhost-user socket: {0}")]
    Io(#[from] std::io::Error),
    /// The device answered with something that is not a reply to the request.
    #[error("unexpected reply: request {request}, flags {flags:#x}, {len} bytes")]
    BadReply {
        /// Its request code.
        request: u32,
        /// Its flags.
        flags: u32,
        /// Its body length.
        len: u32,
    },
}

/// A connected frontend whose rings the caller writes by hand.
#[derive(Debug)]
pub struct RawFrontend {
    region: Arc<Region>,
    env: DirectEnv,
    link: NicLink,
    wire: RawWire,
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
        let sock = UnixStream::connect(socket).map_err(|source| {
            RawError::Link(LinkError::ConnectSocket {
                path: socket.to_owned(),
                source,
            })
        })?;
        let wire = RawWire::over(sock.try_clone()?)?;
        let mut link = NicLink::over(sock, socket)?;
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
            wire,
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

    /// This connection's socket, for raw messages ([`RawWire`]). REPLY_ACK was
    /// negotiated when the device offers it (a switch client port does).
    pub fn wire(&mut self) -> &mut RawWire {
        &mut self.wire
    }

    /// Stops queue `q` (`GET_VRING_BASE`, as a driver reset does): the device
    /// stops using the ring and answers with the next avail index it would have
    /// read.
    pub fn stop_queue(&mut self, q: u16) -> Result<u32, RawError> {
        self.q(q)?;
        let r = self
            .wire
            .request(GET_VRING_BASE, &vring_state(u32::from(q), 0), &[], false)?;
        match r {
            Reply::Body(b) if b.len() == 8 => Ok(u32::from_le_bytes([b[4], b[5], b[6], b[7]])),
            Reply::Body(b) => Err(RawError::BadReply {
                request: GET_VRING_BASE,
                flags: 0,
                len: b.len() as u32,
            }),
            Reply::Closed => Err(RawError::Io(std::io::ErrorKind::UnexpectedEof.into())),
        }
    }
}

/// `GET_FEATURES`.
pub const GET_FEATURES: u32 = 1;
/// `SET_FEATURES`.
pub const SET_FEATURES: u32 = 2;
/// `SET_OWNER`.
pub const SET_OWNER: u32 = 3;
/// `SET_MEM_TABLE`.
pub const SET_MEM_TABLE: u32 = 5;
/// `SET_VRING_NUM`.
pub const SET_VRING_NUM: u32 = 8;
/// `SET_VRING_ADDR`.
pub const SET_VRING_ADDR: u32 = 9;
/// `SET_VRING_BASE`.
pub const SET_VRING_BASE: u32 = 10;
/// `GET_VRING_BASE`.
pub const GET_VRING_BASE: u32 = 11;
/// `GET_PROTOCOL_FEATURES`.
pub const GET_PROTOCOL_FEATURES: u32 = 15;
/// `SET_PROTOCOL_FEATURES`.
pub const SET_PROTOCOL_FEATURES: u32 = 16;
/// `VHOST_USER_F_PROTOCOL_FEATURES`, a feature bit of `GET_FEATURES`.
pub const F_PROTOCOL_FEATURES: u64 = 1 << 30;
/// The `REPLY_ACK` protocol feature.
pub const PROTOCOL_F_REPLY_ACK: u64 = 1 << 3;

const FLAG_VERSION: u32 = 0x1;
const FLAG_REPLY: u32 = 0x4;
const FLAG_NEED_REPLY: u32 = 0x8;
/// Longest wait for a reply.
const REPLY_TIMEOUT: Duration = Duration::from_secs(10);

/// A `VhostUserVringState` body: queue index and a number.
pub fn vring_state(index: u32, num: u32) -> Vec<u8> {
    let mut b = index.to_le_bytes().to_vec();
    b.extend_from_slice(&num.to_le_bytes());
    b
}

/// A `VhostUserU64` body.
pub fn u64_body(v: u64) -> Vec<u8> {
    v.to_le_bytes().to_vec()
}

/// A `SET_MEM_TABLE` body: `(guest_phys_addr, memory_size, userspace_addr,
/// mmap_offset)` per region, one descriptor each sent alongside.
pub fn mem_table_body(regions: &[(u64, u64, u64, u64)]) -> Vec<u8> {
    let mut b = (regions.len() as u32).to_le_bytes().to_vec();
    b.extend_from_slice(&0u32.to_le_bytes());
    for &(gpa, size, uaddr, off) in regions {
        for v in [gpa, size, uaddr, off] {
            b.extend_from_slice(&v.to_le_bytes());
        }
    }
    b
}

/// A `SET_VRING_ADDR` body (no flags, no log address).
pub fn vring_addr_body(index: u32, desc: u64, used: u64, avail: u64) -> Vec<u8> {
    let mut b = index.to_le_bytes().to_vec();
    b.extend_from_slice(&0u32.to_le_bytes());
    for v in [desc, used, avail, 0u64] {
        b.extend_from_slice(&v.to_le_bytes());
    }
    b
}

/// What the device answered to one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// A reply body (a `REPLY_ACK` status is 8 bytes: 0 accepted, else refused).
    Body(Vec<u8>),
    /// The device closed the connection instead of answering.
    Closed,
}

impl Reply {
    /// The `u64` of an 8-byte reply (a status or a feature mask), `None` otherwise.
    pub fn u64(&self) -> Option<u64> {
        match self {
            Reply::Body(b) if b.len() == 8 => {
                let mut v = [0u8; 8];
                v.copy_from_slice(b);
                Some(u64::from_le_bytes(v))
            }
            _ => None,
        }
    }
}

/// A vhost-user connection written by hand: every message verbatim.
#[derive(Debug)]
pub struct RawWire {
    sock: UnixStream,
}

impl RawWire {
    /// Connects to the device at `socket`.
    pub fn connect(socket: &Path) -> Result<Self, RawError> {
        let sock = UnixStream::connect(socket).map_err(|source| {
            RawError::Link(LinkError::ConnectSocket {
                path: socket.to_owned(),
                source,
            })
        })?;
        Self::over(sock)
    }

    fn over(sock: UnixStream) -> Result<Self, RawError> {
        sock.set_read_timeout(Some(REPLY_TIMEOUT))?;
        Ok(Self { sock })
    }

    /// The usual opening, as a frontend that wants every refusal answered:
    /// `SET_OWNER`, `GET_FEATURES`, `GET_PROTOCOL_FEATURES`,
    /// `SET_PROTOCOL_FEATURES` (REPLY_ACK only). Returns the offered features.
    pub fn open(&mut self) -> Result<u64, RawError> {
        self.send(SET_OWNER, &[], &[], false)?;
        let offered = self
            .request(GET_FEATURES, &[], &[], false)?
            .u64()
            .ok_or(RawError::NoVersion1(0))?;
        let proto = self
            .request(GET_PROTOCOL_FEATURES, &[], &[], false)?
            .u64()
            .unwrap_or(0);
        if proto & PROTOCOL_F_REPLY_ACK != 0 {
            self.send(
                SET_PROTOCOL_FEATURES,
                &u64_body(PROTOCOL_F_REPLY_ACK),
                &[],
                false,
            )?;
        }
        Ok(offered)
    }

    /// Sends one message: `request`, `body`, and `fds` as SCM_RIGHTS; with
    /// `need_reply`, the NEED_REPLY flag.
    pub fn send(
        &mut self,
        request: u32,
        body: &[u8],
        fds: &[BorrowedFd<'_>],
        need_reply: bool,
    ) -> Result<(), RawError> {
        let flags = FLAG_VERSION | if need_reply { FLAG_NEED_REPLY } else { 0 };
        let mut msg = Vec::with_capacity(12 + body.len());
        msg.extend_from_slice(&request.to_le_bytes());
        msg.extend_from_slice(&flags.to_le_bytes());
        msg.extend_from_slice(&(body.len() as u32).to_le_bytes());
        msg.extend_from_slice(body);
        let mut space =
            vec![MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(fds.len()))];
        let mut control = rustix::net::SendAncillaryBuffer::new(&mut space);
        if !fds.is_empty() && !control.push(rustix::net::SendAncillaryMessage::ScmRights(fds)) {
            return Err(RawError::Io(std::io::ErrorKind::InvalidInput.into()));
        }
        let mut sent = 0;
        while sent < msg.len() {
            let iov = [IoSlice::new(&msg[sent..])];
            let n = rustix::net::sendmsg(
                &self.sock,
                &iov,
                &mut control,
                rustix::net::SendFlags::NOSIGNAL,
            )
            .map_err(std::io::Error::from)?;
            if n == 0 {
                return Err(RawError::Io(std::io::ErrorKind::WriteZero.into()));
            }
            sent += n;
            control.clear();
        }
        Ok(())
    }

    /// Reads one reply to `request`: its body, or [`Reply::Closed`] at end of
    /// file (or a reset connection).
    pub fn reply(&mut self, request: u32) -> Result<Reply, RawError> {
        let mut hdr = [0u8; 12];
        match self.sock.read_exact(&mut hdr) {
            Ok(()) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::UnexpectedEof | std::io::ErrorKind::ConnectionReset
                ) =>
            {
                return Ok(Reply::Closed)
            }
            Err(e) => return Err(e.into()),
        }
        let w = |i: usize| u32::from_le_bytes([hdr[i], hdr[i + 1], hdr[i + 2], hdr[i + 3]]);
        let (req, flags, len) = (w(0), w(4), w(8));
        if req != request || flags & FLAG_REPLY == 0 || len > 4096 {
            return Err(RawError::BadReply {
                request: req,
                flags,
                len,
            });
        }
        let mut body = vec![0u8; len as usize];
        self.sock.read_exact(&mut body)?;
        Ok(Reply::Body(body))
    }

    /// Sends a message and reads its reply. `ack` sets NEED_REPLY (for requests
    /// that have no reply of their own).
    pub fn request(
        &mut self,
        request: u32,
        body: &[u8],
        fds: &[BorrowedFd<'_>],
        ack: bool,
    ) -> Result<Reply, RawError> {
        match self.send(request, body, fds, ack) {
            Ok(()) => {}
            // The device may have closed already.
            Err(RawError::Io(e)) if e.kind() == std::io::ErrorKind::BrokenPipe => {
                return Ok(Reply::Closed)
            }
            Err(e) => return Err(e),
        }
        self.reply(request)
    }

    /// Whether the device closed the connection: waits up to `timeout` for end
    /// of file (any unsolicited bytes are a protocol violation and fail).
    pub fn closed_within(&mut self, timeout: Duration) -> Result<bool, RawError> {
        self.sock.set_read_timeout(Some(timeout))?;
        let mut b = [0u8; 1];
        let r = match self.sock.read(&mut b) {
            Ok(0) => Ok(true),
            Ok(_) => Err(RawError::BadReply {
                request: 0,
                flags: 0,
                len: 1,
            }),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => Ok(true),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                Ok(false)
            }
            Err(e) => Err(e.into()),
        };
        self.sock.set_read_timeout(Some(REPLY_TIMEOUT))?;
        r
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
