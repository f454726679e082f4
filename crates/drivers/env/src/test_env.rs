//! A Vec-backed [`DriverEnv`](crate::DriverEnv) for unit tests.
//!
//! Single-threaded (interior mutability through `RefCell`), so a test can play both
//! the driver and a fake device on one thread, through the same trait. Kicks are
//! counted per queue. Read-only ranges make writes there fault with
//! [`FaultKind::Permission`](crate::FaultKind::Permission).
//!
//! [`MapEnv`] is what a twin sees of a [`VecEnv`]: every access checked against an
//! access map and recorded per range, upcalls posted, an optional watchdog budget.
//!
//! Not for production: no concurrency, and fences are no-ops beyond `std::sync::atomic::fence`.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::ops::Range;

use crate::access::AccessRange;
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
    fn load_acquire_u32(&self, addr: u64) -> Result<u32, MemFault> {
        self.read_u32(addr)
    }
    fn store_release_u32(&self, addr: u64, val: u32) -> Result<(), MemFault> {
        self.write_u32(addr, val)
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

/// What a twin sees: the region through the layout's access map (every access
/// checked and recorded per range), upcalls posted, a watchdog that refuses every
/// access once a budget is spent. The fake device keeps using the raw `VecEnv`.
#[derive(Debug)]
pub struct MapEnv<'a> {
    mem: &'a VecEnv,
    map: Vec<AccessRange>,
    /// Per range: (reads, writes).
    touched: RefCell<BTreeMap<&'static str, (u64, u64)>>,
    posted: RefCell<Vec<UpcallMsg>>,
    fault: Cell<Option<InjectedFault>>,
    budget: Cell<Option<u64>>,
}

impl<'a> MapEnv<'a> {
    /// `mem` as a twin granted `map` sees it.
    pub fn new(mem: &'a VecEnv, map: &[AccessRange]) -> Self {
        Self {
            mem,
            map: map.to_vec(),
            touched: RefCell::default(),
            posted: RefCell::default(),
            fault: Cell::new(None),
            budget: Cell::new(None),
        }
    }

    /// The upcalls posted so far (drained).
    pub fn take_posted(&self) -> Vec<UpcallMsg> {
        std::mem::take(&mut *self.posted.borrow_mut())
    }

    /// (reads, writes) in the range named `name` so far.
    pub fn touched(&self, name: &str) -> (u64, u64) {
        self.touched.borrow().get(name).copied().unwrap_or((0, 0))
    }

    /// Forgets the accesses recorded so far.
    pub fn clear_touched(&self) {
        self.touched.borrow_mut().clear();
    }

    /// Asks the driver to commit `fault` at its next fast-path call.
    pub fn inject(&self, fault: InjectedFault) {
        self.fault.set(Some(fault));
    }

    /// Refuses every access after `budget` more (`None`: no limit), as a
    /// watchdog would.
    pub fn set_budget(&self, budget: Option<u64>) {
        self.budget.set(budget);
    }

    fn check(&self, addr: u64, len: u64, write: bool) -> Result<(), MemFault> {
        if let Some(left) = self.budget.get() {
            if left == 0 {
                return Err(MemFault::new(addr, len, FaultKind::Watchdog));
            }
            self.budget.set(Some(left - 1));
        }
        check_range(addr, len, 1, self.mem.region_len())?;
        let end = addr + len;
        let mut covered = 0;
        for r in &self.map {
            let (lo, hi) = (r.start.max(addr), r.end().min(end));
            if lo >= hi {
                continue;
            }
            let ok = if write {
                r.access.can_write()
            } else {
                r.access.can_read()
            };
            if !ok {
                return Err(MemFault::new(addr, len, FaultKind::Permission));
            }
            covered += hi - lo;
            let mut t = self.touched.borrow_mut();
            let e = t.entry(r.name).or_default();
            if write {
                e.1 += 1;
            } else {
                e.0 += 1;
            }
        }
        if covered != len {
            // Padding between ranges.
            return Err(MemFault::new(addr, len, FaultKind::Permission));
        }
        Ok(())
    }
}

impl DriverMem for MapEnv<'_> {
    fn region_len(&self) -> u64 {
        self.mem.region_len()
    }
    fn read_u16(&self, addr: u64) -> Result<u16, MemFault> {
        self.check(addr, 2, false)?;
        self.mem.read_u16(addr)
    }
    fn read_u32(&self, addr: u64) -> Result<u32, MemFault> {
        self.check(addr, 4, false)?;
        self.mem.read_u32(addr)
    }
    fn read_u64(&self, addr: u64) -> Result<u64, MemFault> {
        self.check(addr, 8, false)?;
        self.mem.read_u64(addr)
    }
    fn write_u16(&self, addr: u64, val: u16) -> Result<(), MemFault> {
        self.check(addr, 2, true)?;
        self.mem.write_u16(addr, val)
    }
    fn write_u32(&self, addr: u64, val: u32) -> Result<(), MemFault> {
        self.check(addr, 4, true)?;
        self.mem.write_u32(addr, val)
    }
    fn write_u64(&self, addr: u64, val: u64) -> Result<(), MemFault> {
        self.check(addr, 8, true)?;
        self.mem.write_u64(addr, val)
    }
    fn load_acquire_u16(&self, addr: u64) -> Result<u16, MemFault> {
        self.check(addr, 2, false)?;
        self.mem.load_acquire_u16(addr)
    }
    fn store_release_u16(&self, addr: u64, val: u16) -> Result<(), MemFault> {
        self.check(addr, 2, true)?;
        self.mem.store_release_u16(addr, val)
    }
    fn load_acquire_u32(&self, addr: u64) -> Result<u32, MemFault> {
        self.check(addr, 4, false)?;
        self.mem.load_acquire_u32(addr)
    }
    fn store_release_u32(&self, addr: u64, val: u32) -> Result<(), MemFault> {
        self.check(addr, 4, true)?;
        self.mem.store_release_u32(addr, val)
    }
    fn fence(&self) {
        self.mem.fence();
    }
    fn read_bytes(&self, addr: u64, buf: &mut [u8]) -> Result<(), MemFault> {
        self.check(addr, buf.len() as u64, false)?;
        self.mem.read_bytes(addr, buf)
    }
    fn write_bytes(&self, addr: u64, buf: &[u8]) -> Result<(), MemFault> {
        self.check(addr, buf.len() as u64, true)?;
        self.mem.write_bytes(addr, buf)
    }
}

impl Doorbell for MapEnv<'_> {
    fn kick(&self, queue: u16) {
        self.mem.kick(queue);
    }
}

impl Upcalls for MapEnv<'_> {
    fn upcall(&self, msg: UpcallMsg) -> UpcallRoute {
        self.posted.borrow_mut().push(msg);
        UpcallRoute::Posted
    }
}

impl FaultInjection for MapEnv<'_> {
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
