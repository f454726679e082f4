//! A TAP device: the switch opens it ([`Tap::open`]) and hands the descriptor to
//! a driver domain, which moves frames through it ([`TapQueue`]).
//!
//! The device is opened with `IFF_TAP | IFF_NO_PI | IFF_VNET_HDR`, a 12-byte vnet
//! header (the virtio 1.x layout, as `twin_wire::net_hdr`) and every offload off
//! (`TUNSETOFFLOAD 0`): the kernel hands over whole frames with complete
//! checksums, and the only header fields it may set are `DATA_VALID` (the
//! checksum was verified) and `num_buffers` (left as the reader's buffer had it).
//! Carrying offloads through is the offloads issue's. The descriptor is
//! close-on-exec and non-blocking from the moment it exists.
//!
//! A TAP device that this descriptor created goes away when the last descriptor
//! attached to it is closed; one created beforehand (`ip tuntap add`, persistent)
//! stays. One queue per device (no `IFF_MULTI_QUEUE` yet).

use std::io::{IoSlice, IoSliceMut};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use rustix::fs::{Mode, OFlags};
use rustix::io::Errno;
use twin_wire::ether::ETH_HLEN;

use crate::ifname::IfName;
use crate::kernel_drop::KernelDrop;
use crate::sys;

/// Bytes of the vnet header before every frame on the descriptor.
pub const VNET_HDR_LEN: usize = twin_wire::net_hdr::HDR_LEN_MODERN;

/// The header this side writes before every frame: no offload requested.
const ZERO_HDR: [u8; VNET_HDR_LEN] = [0; VNET_HDR_LEN];

/// `virtio_net_hdr.flags`: the checksum was verified.
const F_DATA_VALID: u8 = 2;
/// `virtio_net_hdr.gso_type`: not a segmentation offload.
const GSO_NONE: u8 = 0;

/// Why [`Tap::open`] failed.
#[derive(Debug, thiserror::Error)]
pub enum TapError {
    /// `/dev/net/tun` could not be opened (no `tun` module, no permission).
    #[error("cannot open /dev/net/tun")]
    OpenTun(#[source] std::io::Error),
    /// The device could not be attached or created: not permitted, already
    /// attached to another descriptor, or the name belongs to another kind of
    /// interface.
    #[error("cannot attach to TAP device {name}")]
    Attach {
        /// The device.
        name: IfName,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The device's vnet header or offloads could not be set.
    #[error("cannot configure TAP device {name} ({what})")]
    Configure {
        /// The device.
        name: IfName,
        /// What was being set.
        what: &'static str,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// An open TAP device.
#[derive(Debug)]
pub struct Tap {
    fd: OwnedFd,
    name: IfName,
}

impl Tap {
    /// Attaches to TAP device `name`, creating it when it does not exist (which
    /// needs `CAP_NET_ADMIN`), with the vnet header and no offloads.
    pub fn open(name: &IfName) -> Result<Tap, TapError> {
        let fd = rustix::fs::open(
            "/dev/net/tun",
            OFlags::RDWR | OFlags::CLOEXEC | OFlags::NONBLOCK,
            Mode::empty(),
        )
        .map_err(|e| TapError::OpenTun(e.into()))?;
        let flags = (libc::IFF_TAP | libc::IFF_NO_PI | libc::IFF_VNET_HDR) as libc::c_short;
        let set = sys::tun_set_iff(fd.as_fd(), name.as_bytes(), flags).map_err(|source| {
            TapError::Attach {
                name: name.clone(),
                source,
            }
        })?;
        // The kernel keeps a name it was given; anything else is a kernel that
        // does not do what this module relies on.
        if set != name.as_bytes() {
            return Err(TapError::Attach {
                name: name.clone(),
                source: std::io::Error::other(format!(
                    "the kernel named the device {:?}",
                    String::from_utf8_lossy(&set)
                )),
            });
        }
        let configure = |what, r: std::io::Result<()>| {
            r.map_err(|source| TapError::Configure {
                name: name.clone(),
                what,
                source,
            })
        };
        configure(
            "vnet header size",
            sys::tun_set_vnet_hdr_sz(fd.as_fd(), VNET_HDR_LEN as libc::c_int),
        )?;
        configure("offloads", sys::tun_set_offload(fd.as_fd(), 0))?;
        Ok(Tap {
            fd,
            name: name.clone(),
        })
    }

    /// The device's name.
    pub fn name(&self) -> &IfName {
        &self.name
    }

    /// The descriptor, to hand to a driver domain.
    pub fn into_fd(self) -> OwnedFd {
        self.fd
    }
}

/// A TAP device an uplink keeps for its lifetime: the switch holds one descriptor
/// (so the device, and how the host configured it, outlives any driver domain)
/// and hands each new domain a copy. A device deleted under it is re-attached by
/// name (created again, unconfigured) when the next domain starts.
#[derive(Debug)]
pub struct TapHandle {
    name: IfName,
    fd: std::sync::Mutex<OwnedFd>,
}

impl TapHandle {
    /// Opens (or creates) the device, as [`Tap::open`].
    pub fn open(name: &IfName) -> Result<TapHandle, TapError> {
        let tap = Tap::open(name)?;
        Ok(TapHandle {
            name: name.clone(),
            fd: std::sync::Mutex::new(tap.into_fd()),
        })
    }

    /// The device's name.
    pub fn name(&self) -> &IfName {
        &self.name
    }

    /// A copy of the descriptor for a new driver domain, and whether the device
    /// had to be attached again first (it was deleted since).
    pub fn domain_fd(&self) -> Result<(OwnedFd, bool), TapError> {
        let mut fd = self.fd.lock().unwrap_or_else(|p| p.into_inner());
        let attached = sys::tun_attached(fd.as_fd()).map_err(|source| TapError::Configure {
            name: self.name.clone(),
            what: "attachment check",
            source,
        })?;
        if !attached {
            *fd = Tap::open(&self.name)?.into_fd();
        }
        let copy = fd.try_clone().map_err(|source| TapError::Configure {
            name: self.name.clone(),
            what: "a copy of the descriptor",
            source,
        })?;
        Ok((copy, !attached))
    }
}

/// What [`TapQueue::recv`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recv {
    /// A frame of this many bytes is at the start of the buffer.
    Frame(usize),
    /// Nothing to read.
    Empty,
    /// A frame was read and refused.
    Dropped(KernelDrop),
}

/// What [`TapQueue::send`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Send {
    /// The kernel took the frame.
    Sent,
    /// The kernel cannot take it now; try again later.
    Full,
    /// The frame was refused.
    Dropped(KernelDrop),
}

/// Why a TAP queue cannot go on.
#[derive(Debug, thiserror::Error)]
pub enum TapIoError {
    /// The device went away (deleted while attached).
    #[error("the TAP device is gone")]
    Gone,
    /// Reading failed.
    #[error("reading from the TAP device failed")]
    Read(#[source] std::io::Error),
    /// Writing failed.
    #[error("writing to the TAP device failed")]
    Write(#[source] std::io::Error),
}

/// The frame I/O on an open TAP descriptor (a driver domain's side): no system
/// calls but `readv` and `writev` on that one descriptor.
#[derive(Debug)]
pub struct TapQueue {
    fd: OwnedFd,
    hdr: [u8; VNET_HDR_LEN],
}

impl TapQueue {
    /// A queue on `fd`, a descriptor opened by [`Tap::open`] (non-blocking, with a
    /// 12-byte vnet header and offloads off).
    pub fn from_fd(fd: OwnedFd) -> TapQueue {
        TapQueue {
            fd,
            hdr: [0; VNET_HDR_LEN],
        }
    }

    /// Reads one frame into `buf` when there is one. The largest frame accepted is
    /// `buf.len() - 1` bytes: one that fills `buf` may have been cut by the kernel
    /// and is dropped as [`KernelDrop::TooLong`].
    pub fn recv(&mut self, buf: &mut [u8]) -> Result<Recv, TapIoError> {
        let n = {
            let mut iov = [IoSliceMut::new(&mut self.hdr), IoSliceMut::new(buf)];
            match rustix::io::readv(&self.fd, &mut iov) {
                Ok(n) => n,
                Err(Errno::AGAIN) => return Ok(Recv::Empty),
                Err(Errno::BADFD) => return Err(TapIoError::Gone),
                Err(e) => return Err(TapIoError::Read(e.into())),
            }
        };
        let Some(len) = n.checked_sub(VNET_HDR_LEN) else {
            return Ok(Recv::Dropped(KernelDrop::TooShort));
        };
        if len < ETH_HLEN {
            return Ok(Recv::Dropped(KernelDrop::TooShort));
        }
        if len >= buf.len() {
            return Ok(Recv::Dropped(KernelDrop::TooLong));
        }
        if !header_acceptable(&self.hdr) {
            return Ok(Recv::Dropped(KernelDrop::BadHeader));
        }
        Ok(Recv::Frame(len))
    }

    /// Writes one frame (an Ethernet frame, at least a header long) behind a vnet
    /// header that requests nothing.
    pub fn send(&mut self, frame: &[u8]) -> Result<Send, TapIoError> {
        if frame.len() < ETH_HLEN {
            return Ok(Send::Dropped(KernelDrop::TooShort));
        }
        let iov = [IoSlice::new(&ZERO_HDR), IoSlice::new(frame)];
        match rustix::io::writev(&self.fd, &iov) {
            Ok(n) if n == VNET_HDR_LEN + frame.len() => Ok(Send::Sent),
            Ok(n) => Err(TapIoError::Write(std::io::Error::other(format!(
                "the kernel took {n} of {} bytes",
                VNET_HDR_LEN + frame.len()
            )))),
            Err(Errno::AGAIN) | Err(Errno::NOBUFS) => Ok(Send::Full),
            // The device is down.
            Err(Errno::IO) => Ok(Send::Dropped(KernelDrop::LinkDown)),
            // Longer than the device takes (its MTU, 64 KiB).
            Err(Errno::INVAL) | Err(Errno::MSGSIZE) => Ok(Send::Dropped(KernelDrop::TooLong)),
            Err(Errno::BADFD) => Err(TapIoError::Gone),
            Err(e) => Err(TapIoError::Write(e.into())),
        }
    }
}

impl AsFd for TapQueue {
    /// The descriptor, readable when a frame is waiting (for epoll).
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// Whether a vnet header from the kernel asks for nothing this side cannot do:
/// with offloads off, no segmentation and no checksum to complete; `DATA_VALID`
/// (the kernel verified the checksum) is harmless. `num_buffers` is not the
/// kernel's (it is left as the buffer had it) and is not read.
fn header_acceptable(hdr: &[u8; VNET_HDR_LEN]) -> bool {
    let (flags, gso_type) = (hdr[0], hdr[1]);
    flags & !F_DATA_VALID == 0 && gso_type == GSO_NONE
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `virtio_net_hdr.flags`: the checksum needs to be completed (an offload).
    const F_NEEDS_CSUM: u8 = 1;

    #[test]
    fn only_headers_without_offloads_are_acceptable() {
        let mut h = [0u8; VNET_HDR_LEN];
        assert!(header_acceptable(&h));
        h[0] = F_DATA_VALID;
        assert!(header_acceptable(&h));
        // num_buffers is not the kernel's: ignored.
        h[10] = 0xff;
        h[11] = 0xff;
        assert!(header_acceptable(&h));
        for (flags, gso) in [
            (F_NEEDS_CSUM, 0),
            (4, 0),
            (0x80, 0),
            (0, 1),
            (0, 4),
            (0, 0x80),
        ] {
            let mut h = [0u8; VNET_HDR_LEN];
            h[0] = flags;
            h[1] = gso;
            assert!(!header_acceptable(&h), "flags {flags:#x} gso {gso:#x}");
        }
    }

    #[test]
    fn drop_names_are_distinct() {
        let mut names: Vec<_> = KernelDrop::ALL.iter().map(|d| d.as_str()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), KernelDrop::ALL.len());
    }
}
