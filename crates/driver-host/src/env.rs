//! The direct environment: the driver accesses its region in place.
//!
//! The region is mapped once; every access is one bounds-and-alignment check on the
//! offset (done by vm-memory's `get_atomic_ref` / `get_slice` on the mapping, no
//! region lookup) followed by one atomic or volatile operation, so a bad address is
//! a [`MemFault`], never undefined behaviour. Doorbells write the NIC's kick
//! eventfds, or wake the kernel on an AF_XDP socket ([`Bell`]).
//!
//! Limits: no per-range permissions (the driver owns its whole region); that is the
//! SVM environment's job. Values are converted from little-endian, so the driver
//! also works on a big-endian host.

use std::sync::atomic::{fence, AtomicU16, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;

use driver_env::{
    Doorbell, DriverMem, FaultInjection, FaultKind, MemFault, UpcallMsg, UpcallRoute, Upcalls,
};
use vm_memory::volatile_memory::Error as VolatileError;
use vm_memory::{AtomicInteger, VolatileMemory, VolatileSlice};
use vmm_sys_util::eventfd::EventFd;

use crate::region::Region;

/// Where an instance that does not run in its driver domain sends upcalls.
pub trait UpcallSink: Send + std::fmt::Debug {
    /// Posts `msg` to the driver domain ([`UpcallRoute::Posted`]) or counts it as
    /// dropped ([`UpcallRoute::Dropped`]).
    fn post(&self, msg: UpcallMsg) -> UpcallRoute;
}

/// How a queue's doorbell is rung.
#[derive(Debug)]
pub enum Bell {
    /// A vhost-user kick eventfd: a write of 1.
    EventFd(EventFd),
    /// An AF_XDP socket: a `send` of nothing wakes the kernel to transmit.
    XdpSocket(Arc<std::os::fd::OwnedFd>),
    /// An AF_PACKET socket: a `send` of nothing wakes the kernel to transmit,
    /// and tells whether the interface is down.
    PacketSocket(Arc<crate::PacketBell>),
}

impl Bell {
    /// Rings it (best effort: a peer that is gone does not hear it; the host
    /// notices elsewhere).
    pub fn ring(&self, queue: u16) {
        let r = match self {
            Bell::EventFd(fd) => fd.write(1),
            Bell::XdpSocket(fd) => {
                match rustix::net::send(&**fd, &[], rustix::net::SendFlags::DONTWAIT) {
                    Ok(_)
                    | Err(rustix::io::Errno::AGAIN)
                    | Err(rustix::io::Errno::BUSY)
                    | Err(rustix::io::Errno::NOBUFS) => Ok(()),
                    Err(e) => Err(e.into()),
                }
            }
            Bell::PacketSocket(bell) => bell.ring(),
        };
        if let Err(e) = r {
            twin_log::debug_limited!(queue, error = %e, "doorbell failed");
        }
    }
}

/// The direct environment over a [`Region`].
#[derive(Debug)]
pub struct DirectEnv {
    region: Arc<Region>,
    len: u64,
    kick: Vec<Bell>,
    /// `None`: this instance is in its driver domain and runs slow paths itself.
    upcalls: Option<Box<dyn UpcallSink>>,
}

fn fault(addr: u64, len: u64, e: &VolatileError) -> MemFault {
    let kind = match e {
        VolatileError::Misaligned { .. } => FaultKind::Misaligned,
        VolatileError::OutOfBounds { .. }
        | VolatileError::Overflow { .. }
        | VolatileError::TooBig { .. } => FaultKind::OutOfBounds,
        _ => FaultKind::Backend,
    };
    MemFault::new(addr, len, kind)
}

impl DirectEnv {
    /// An environment over `region` whose queue `i` is kicked through `kick[i]`.
    pub fn new(region: Arc<Region>, kick: Vec<EventFd>) -> Self {
        Self::with_bells(region, kick.into_iter().map(Bell::EventFd).collect())
    }

    /// An environment over `region` whose queue `i` is rung through `bells[i]`.
    pub fn with_bells(region: Arc<Region>, bells: Vec<Bell>) -> Self {
        let len = region.len();
        Self {
            region,
            len,
            kick: bells,
            upcalls: None,
        }
    }

    /// An environment for an instance outside its driver domain (inline in the
    /// switch): slow paths are posted to `upcalls` instead of run here.
    pub fn with_upcalls(
        region: Arc<Region>,
        kick: Vec<Bell>,
        upcalls: Box<dyn UpcallSink>,
    ) -> Self {
        Self {
            upcalls: Some(upcalls),
            ..Self::with_bells(region, kick)
        }
    }

    /// The region.
    pub fn region(&self) -> &Arc<Region> {
        &self.region
    }

    /// `len` bytes at `addr` as a volatile slice, if in bounds (one check).
    #[inline]
    pub fn slice(&self, addr: u64, len: usize) -> Option<VolatileSlice<'_>> {
        let off = usize::try_from(addr).ok()?;
        self.region.mapping().get_slice(off, len).ok()
    }

    #[inline]
    fn atomic<T: AtomicInteger>(&self, addr: u64) -> Result<&T, MemFault> {
        let size = std::mem::size_of::<T>() as u64;
        let off =
            usize::try_from(addr).map_err(|_| MemFault::new(addr, size, FaultKind::OutOfBounds))?;
        self.region
            .mapping()
            .get_atomic_ref::<T>(off)
            .map_err(|e| fault(addr, size, &e))
    }
}

impl DriverMem for DirectEnv {
    fn region_len(&self) -> u64 {
        self.len
    }
    #[inline]
    fn read_u16(&self, addr: u64) -> Result<u16, MemFault> {
        Ok(u16::from_le(
            self.atomic::<AtomicU16>(addr)?.load(Ordering::Relaxed),
        ))
    }
    #[inline]
    fn read_u32(&self, addr: u64) -> Result<u32, MemFault> {
        Ok(u32::from_le(
            self.atomic::<AtomicU32>(addr)?.load(Ordering::Relaxed),
        ))
    }
    #[inline]
    fn read_u64(&self, addr: u64) -> Result<u64, MemFault> {
        Ok(u64::from_le(
            self.atomic::<AtomicU64>(addr)?.load(Ordering::Relaxed),
        ))
    }
    #[inline]
    fn write_u16(&self, addr: u64, val: u16) -> Result<(), MemFault> {
        self.atomic::<AtomicU16>(addr)?
            .store(val.to_le(), Ordering::Relaxed);
        Ok(())
    }
    #[inline]
    fn write_u32(&self, addr: u64, val: u32) -> Result<(), MemFault> {
        self.atomic::<AtomicU32>(addr)?
            .store(val.to_le(), Ordering::Relaxed);
        Ok(())
    }
    #[inline]
    fn write_u64(&self, addr: u64, val: u64) -> Result<(), MemFault> {
        self.atomic::<AtomicU64>(addr)?
            .store(val.to_le(), Ordering::Relaxed);
        Ok(())
    }
    #[inline]
    fn load_acquire_u16(&self, addr: u64) -> Result<u16, MemFault> {
        Ok(u16::from_le(
            self.atomic::<AtomicU16>(addr)?.load(Ordering::Acquire),
        ))
    }
    #[inline]
    fn store_release_u16(&self, addr: u64, val: u16) -> Result<(), MemFault> {
        self.atomic::<AtomicU16>(addr)?
            .store(val.to_le(), Ordering::Release);
        Ok(())
    }
    #[inline]
    fn load_acquire_u32(&self, addr: u64) -> Result<u32, MemFault> {
        Ok(u32::from_le(
            self.atomic::<AtomicU32>(addr)?.load(Ordering::Acquire),
        ))
    }
    #[inline]
    fn store_release_u32(&self, addr: u64, val: u32) -> Result<(), MemFault> {
        self.atomic::<AtomicU32>(addr)?
            .store(val.to_le(), Ordering::Release);
        Ok(())
    }
    fn fence(&self) {
        fence(Ordering::SeqCst);
    }
    fn read_bytes(&self, addr: u64, buf: &mut [u8]) -> Result<(), MemFault> {
        let len = buf.len() as u64;
        let s =
            self.slice(addr, buf.len())
                .ok_or(MemFault::new(addr, len, FaultKind::OutOfBounds))?;
        s.copy_to(buf);
        Ok(())
    }
    fn write_bytes(&self, addr: u64, buf: &[u8]) -> Result<(), MemFault> {
        let len = buf.len() as u64;
        let s =
            self.slice(addr, buf.len())
                .ok_or(MemFault::new(addr, len, FaultKind::OutOfBounds))?;
        s.copy_from(buf);
        Ok(())
    }
    fn zero_bytes(&self, addr: u64, len: u64) -> Result<(), MemFault> {
        let n =
            usize::try_from(len).map_err(|_| MemFault::new(addr, len, FaultKind::OutOfBounds))?;
        let s = self
            .slice(addr, n)
            .ok_or(MemFault::new(addr, len, FaultKind::OutOfBounds))?;
        const Z: [u8; 256] = [0; 256];
        let mut done = 0usize;
        while done < n {
            let k = (n - done).min(Z.len());
            // In bounds: done + k <= n == s.len().
            if let Ok(part) = s.subslice(done, k) {
                part.copy_from(&Z[..k]);
            }
            done += k;
        }
        Ok(())
    }
}

impl Doorbell for DirectEnv {
    fn kick(&self, queue: u16) {
        if let Some(bell) = self.kick.get(usize::from(queue)) {
            bell.ring(queue);
        }
    }
}

impl Upcalls for DirectEnv {
    fn upcall(&self, msg: UpcallMsg) -> UpcallRoute {
        match &self.upcalls {
            None => UpcallRoute::Local,
            Some(sink) => sink.post(msg),
        }
    }
}

impl FaultInjection for DirectEnv {}

impl crate::fast_path::FrameMemory for DirectEnv {
    #[inline]
    fn frame_slice(
        &self,
        addr: u64,
        len: usize,
        _write: bool,
    ) -> Result<VolatileSlice<'_>, MemFault> {
        self.slice(addr, len)
            .ok_or(MemFault::new(addr, len as u64, FaultKind::OutOfBounds))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checked_access() {
        let r = Arc::new(Region::create("env-test", 4096).unwrap());
        let kick = EventFd::new(0).unwrap();
        let env = DirectEnv::new(r, vec![kick.try_clone().unwrap()]);
        env.write_u64(8, 0x0102_0304_0506_0708).unwrap();
        assert_eq!(env.read_u32(8).unwrap(), 0x0506_0708);
        assert_eq!(env.read_u16(3).unwrap_err().kind, FaultKind::Misaligned);
        assert_eq!(env.read_u64(4096).unwrap_err().kind, FaultKind::OutOfBounds);
        env.store_release_u16(2, 7).unwrap();
        assert_eq!(env.load_acquire_u16(2).unwrap(), 7);
        env.write_bytes(4090, &[1, 2, 3, 4, 5, 6]).unwrap();
        assert!(env.write_bytes(4091, &[0; 6]).is_err());
        let mut b = [0u8; 2];
        env.read_bytes(4094, &mut b).unwrap();
        assert_eq!(b, [5, 6]);
        env.kick(0);
        env.kick(5);
        assert_eq!(kick.read().unwrap(), 1);
    }
}
