//! A Vec-backed [`DriverEnv`](crate::DriverEnv) for unit tests.
//!
//! Single-threaded (interior mutability through `RefCell`), so a test can play both
//! the driver and a fake device on one thread, through the same trait. Kicks are
//! counted per queue. Read-only ranges make writes there fault with
//! [`FaultKind::Permission`](crate::FaultKind::Permission).
//!
//! Not for production: no concurrency, and fences are no-ops beyond `std::sync::atomic::fence`.

use std::cell::{Cell, RefCell};
use std::ops::Range;

use crate::{
    check_range, Doorbell, DriverMem, FaultInjection, FaultKind, InjectedFault, MemFault,
    UpcallMsg, UpcallRoute, Upcalls,
};

/// How many queues [`VecEnv`] counts kicks for.
pub const MAX_TEST_QUEUES: usize = 8;

/// A test environment over a `Vec<u8>`.
#[derive(Debug)]
pub struct VecEnv {
    mem: RefCell<Vec<u8>>,
    read_only: RefCell<Vec<Range<u64>>>,
    kicks: [Cell<u64>; MAX_TEST_QUEUES],
    route: Cell<UpcallRoute>,
    posted: RefCell<Vec<UpcallMsg>>,
    fault: Cell<Option<InjectedFault>>,
}

impl VecEnv {
    /// A zeroed region of `len` bytes.
    pub fn new(len: usize) -> Self {
        Self {
            mem: RefCell::new(vec![0; len]),
            read_only: RefCell::new(Vec::new()),
            kicks: Default::default(),
            route: Cell::new(UpcallRoute::Local),
            posted: RefCell::new(Vec::new()),
            fault: Cell::new(None),
        }
    }

    /// Makes upcalls return `route` (default [`UpcallRoute::Local`], as in a driver
    /// domain); with [`UpcallRoute::Posted`] they are recorded, as a twin would post them.
    pub fn set_upcall_route(&self, route: UpcallRoute) {
        self.route.set(route);
    }

    /// The upcalls posted so far (drained).
    pub fn take_posted(&self) -> Vec<UpcallMsg> {
        std::mem::take(&mut self.posted.borrow_mut())
    }

    /// Asks the driver to commit `fault` at its next fast-path call.
    pub fn inject(&self, fault: InjectedFault) {
        self.fault.set(Some(fault));
    }

    /// Makes `range` read-only for subsequent writes.
    pub fn protect(&self, range: Range<u64>) {
        self.read_only.borrow_mut().push(range);
    }

    /// How often queue `queue` was kicked.
    pub fn kicks(&self, queue: u16) -> u64 {
        self.kicks.get(usize::from(queue)).map_or(0, Cell::get)
    }

    fn check_write(&self, addr: u64, len: u64) -> Result<(), MemFault> {
        let end = addr.saturating_add(len);
        if self
            .read_only
            .borrow()
            .iter()
            .any(|r| addr < r.end && r.start < end)
        {
            return Err(MemFault::new(addr, len, FaultKind::Permission));
        }
        Ok(())
    }

    fn read_n<const N: usize>(&self, addr: u64) -> Result<[u8; N], MemFault> {
        let mem = self.mem.borrow();
        let at = check_range(addr, N as u64, N as u64, mem.len() as u64)?;
        let mut out = [0u8; N];
        out.copy_from_slice(&mem[at..at + N]);
        Ok(out)
    }

    fn write_n<const N: usize>(&self, addr: u64, val: [u8; N]) -> Result<(), MemFault> {
        let mut mem = self.mem.borrow_mut();
        let at = check_range(addr, N as u64, N as u64, mem.len() as u64)?;
        self.check_write(addr, N as u64)?;
        mem[at..at + N].copy_from_slice(&val);
        Ok(())
    }
}

impl DriverMem for VecEnv {
    fn region_len(&self) -> u64 {
        self.mem.borrow().len() as u64
    }
    fn read_u16(&self, addr: u64) -> Result<u16, MemFault> {
        self.read_n(addr).map(u16::from_le_bytes)
    }
    fn read_u32(&self, addr: u64) -> Result<u32, MemFault> {
        self.read_n(addr).map(u32::from_le_bytes)
    }
    fn read_u64(&self, addr: u64) -> Result<u64, MemFault> {
        self.read_n(addr).map(u64::from_le_bytes)
    }
    fn write_u16(&self, addr: u64, val: u16) -> Result<(), MemFault> {
        self.write_n(addr, val.to_le_bytes())
    }
    fn write_u32(&self, addr: u64, val: u32) -> Result<(), MemFault> {
        self.write_n(addr, val.to_le_bytes())
    }
    fn write_u64(&self, addr: u64, val: u64) -> Result<(), MemFault> {
        self.write_n(addr, val.to_le_bytes())
    }
    fn load_acquire_u16(&self, addr: u64) -> Result<u16, MemFault> {
        self.read_u16(addr)
    }
    fn store_release_u16(&self, addr: u64, val: u16) -> Result<(), MemFault> {
        self.write_u16(addr, val)
    }
    fn fence(&self) {
        std::sync::atomic::fence(std::sync::atomic::Ordering::SeqCst);
    }
    fn read_bytes(&self, addr: u64, buf: &mut [u8]) -> Result<(), MemFault> {
        let mem = self.mem.borrow();
        let at = check_range(addr, buf.len() as u64, 1, mem.len() as u64)?;
        buf.copy_from_slice(&mem[at..at + buf.len()]);
        Ok(())
    }
    fn write_bytes(&self, addr: u64, buf: &[u8]) -> Result<(), MemFault> {
        let mut mem = self.mem.borrow_mut();
        let at = check_range(addr, buf.len() as u64, 1, mem.len() as u64)?;
        self.check_write(addr, buf.len() as u64)?;
        mem[at..at + buf.len()].copy_from_slice(buf);
        Ok(())
    }
}

impl Doorbell for VecEnv {
    fn kick(&self, queue: u16) {
        if let Some(c) = self.kicks.get(usize::from(queue)) {
            c.set(c.get() + 1);
        }
    }
}

impl Upcalls for VecEnv {
    fn upcall(&self, msg: UpcallMsg) -> UpcallRoute {
        let route = self.route.get();
        if route == UpcallRoute::Posted {
            self.posted.borrow_mut().push(msg);
        }
        route
    }
}

impl FaultInjection for VecEnv {
    fn take_injected_fault(&self) -> Option<InjectedFault> {
        self.fault.take()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn faults_are_reported() {
        let e = VecEnv::new(64);
        e.write_u32(4, 0xdead_beef).unwrap();
        assert_eq!(e.read_u32(4).unwrap(), 0xdead_beef);
        assert_eq!(e.read_u16(4).unwrap(), 0xbeef);
        assert_eq!(e.read_u32(2).unwrap_err().kind, FaultKind::Misaligned);
        assert_eq!(e.read_u64(64).unwrap_err().kind, FaultKind::OutOfBounds);
        e.protect(32..40);
        assert_eq!(e.write_u16(38, 1).unwrap_err().kind, FaultKind::Permission);
        assert_eq!(
            e.write_bytes(30, &[1, 2, 3]).unwrap_err().kind,
            FaultKind::Permission
        );
        e.write_bytes(40, &[9; 24]).unwrap();
        assert_eq!(
            e.write_bytes(41, &[9; 24]).unwrap_err().kind,
            FaultKind::OutOfBounds
        );
        e.kick(1);
        assert_eq!(e.kicks(1), 1);
    }
}
