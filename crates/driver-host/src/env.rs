//! The direct environment: the driver accesses its region in place.
//!
//! Every access is bounds- and alignment-checked (`driver_env::check_range`) and
//! then performed with vm-memory's volatile / atomic accessors, so a bad address is
//! a [`MemFault`], never undefined behaviour. Doorbells write the NIC's kick
//! eventfds.
//!
//! Limits: no per-range permissions (the driver owns its whole region); that is the
//! SVM environment's job. Values are converted from little-endian, so the driver
//! also works on a big-endian host.

use std::sync::atomic::{fence, Ordering};
use std::sync::Arc;

use driver_env::{check_range, Doorbell, DriverMem, FaultKind, MemFault, Upcalls};
use vm_memory::bytes::AtomicAccess;
use vm_memory::{Bytes, GuestMemoryRegion, MemoryRegionAddress};
use vmm_sys_util::eventfd::EventFd;

use crate::region::Region;

/// The direct environment over a [`Region`].
#[derive(Debug)]
pub struct DirectEnv {
    region: Arc<Region>,
    len: u64,
    kick: Vec<EventFd>,
}

impl DirectEnv {
    /// An environment over `region` whose queue `i` is kicked through `kick[i]`.
    pub fn new(region: Arc<Region>, kick: Vec<EventFd>) -> Self {
        let len = region.mem().len();
        Self { region, len, kick }
    }

    /// The region.
    pub fn region(&self) -> &Arc<Region> {
        &self.region
    }

    fn load<T: AtomicAccess>(&self, addr: u64, order: Ordering) -> Result<T, MemFault> {
        let size = std::mem::size_of::<T>() as u64;
        check_range(addr, size, size, self.len)?;
        self.region
            .mem()
            .load(MemoryRegionAddress(addr), order)
            .map_err(|_| MemFault::new(addr, size, FaultKind::Backend))
    }

    fn store<T: AtomicAccess>(&self, addr: u64, val: T, order: Ordering) -> Result<(), MemFault> {
        let size = std::mem::size_of::<T>() as u64;
        check_range(addr, size, size, self.len)?;
        self.region
            .mem()
            .store(val, MemoryRegionAddress(addr), order)
            .map_err(|_| MemFault::new(addr, size, FaultKind::Backend))
    }
}

impl DriverMem for DirectEnv {
    fn region_len(&self) -> u64 {
        self.len
    }
    fn read_u16(&self, addr: u64) -> Result<u16, MemFault> {
        self.load::<u16>(addr, Ordering::Relaxed).map(u16::from_le)
    }
    fn read_u32(&self, addr: u64) -> Result<u32, MemFault> {
        self.load::<u32>(addr, Ordering::Relaxed).map(u32::from_le)
    }
    fn read_u64(&self, addr: u64) -> Result<u64, MemFault> {
        self.load::<u64>(addr, Ordering::Relaxed).map(u64::from_le)
    }
    fn write_u16(&self, addr: u64, val: u16) -> Result<(), MemFault> {
        self.store(addr, val.to_le(), Ordering::Relaxed)
    }
    fn write_u32(&self, addr: u64, val: u32) -> Result<(), MemFault> {
        self.store(addr, val.to_le(), Ordering::Relaxed)
    }
    fn write_u64(&self, addr: u64, val: u64) -> Result<(), MemFault> {
        self.store(addr, val.to_le(), Ordering::Relaxed)
    }
    fn load_acquire_u16(&self, addr: u64) -> Result<u16, MemFault> {
        self.load::<u16>(addr, Ordering::Acquire).map(u16::from_le)
    }
    fn store_release_u16(&self, addr: u64, val: u16) -> Result<(), MemFault> {
        self.store(addr, val.to_le(), Ordering::Release)
    }
    fn fence(&self) {
        fence(Ordering::SeqCst);
    }
    fn read_bytes(&self, addr: u64, buf: &mut [u8]) -> Result<(), MemFault> {
        let len = buf.len() as u64;
        check_range(addr, len, 1, self.len)?;
        self.region
            .mem()
            .read_slice(buf, MemoryRegionAddress(addr))
            .map_err(|_| MemFault::new(addr, len, FaultKind::Backend))
    }
    fn write_bytes(&self, addr: u64, buf: &[u8]) -> Result<(), MemFault> {
        let len = buf.len() as u64;
        check_range(addr, len, 1, self.len)?;
        self.region
            .mem()
            .write_slice(buf, MemoryRegionAddress(addr))
            .map_err(|_| MemFault::new(addr, len, FaultKind::Backend))
    }
}

impl Doorbell for DirectEnv {
    fn kick(&self, queue: u16) {
        if let Some(fd) = self.kick.get(usize::from(queue)) {
            if let Err(e) = fd.write(1) {
                tracing::debug!(queue, error = %e, "kick eventfd write failed");
            }
        }
    }
}

impl Upcalls for DirectEnv {}

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
