//! [`SvmEnv`]: the environment a twin runs in. Memory is the driver domain's
//! region through the SVM (every access translated and checked against the
//! driver's access map); doorbells are the NIC's kick eventfds; upcalls go to the
//! driver domain's `upcalls` ring; and an access budget serves as the watchdog.
//!
//! **Watchdog.** Each fast-path entry resets a budget of [`ACCESS_BUDGET`] accesses.
//! No legitimate call comes near it (the longest walks a 512-entry ring a few
//! times); when it runs out, the environment notes the time and refills it, and
//! once a call has been running for [`STUCK_LIMIT`] every further access fails with
//! [`FaultKind::Watchdog`]. A loop in the driver that touches no driver memory is
//! not caught this way (Rust code cannot be pre-empted safely); the driver's loops
//! all walk its rings.
//!
//! The first fault is kept ([`SvmEnv::fault`]): whatever the driver does with the
//! error afterwards, the runtime sees exactly what was refused.

use std::cell::Cell;
use std::time::{Duration, Instant};

use driver_env::{
    Doorbell, DriverMem, FaultInjection, FaultKind, InjectedFault, MemFault, UpcallMsg,
    UpcallRoute, Upcalls,
};
use driver_host::env::{Bell, UpcallSink};
use driver_host::FrameMemory;
use std::sync::atomic::Ordering;
use svm::{Op, Svm, SvmFault};
use vm_memory::VolatileSlice;
use vmm_sys_util::eventfd::EventFd;

/// Accesses one fast-path call may make before the watchdog looks at the clock.
pub const ACCESS_BUDGET: u32 = 1 << 16;
/// How long one fast-path call may run.
pub const STUCK_LIMIT: Duration = Duration::from_millis(50);

/// What stopped a twin's access.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EnvFault {
    /// The SVM refused an access.
    Svm(SvmFault),
    /// The watchdog expired.
    Watchdog {
        /// How long the call had been running.
        ran_for: Duration,
    },
}

/// The twin's environment.
#[derive(Debug)]
pub struct SvmEnv {
    svm: Svm,
    kick: Vec<Bell>,
    upcalls: Box<dyn UpcallSink>,
    budget: Cell<u32>,
    over_budget_since: Cell<Option<Instant>>,
    fault: Cell<Option<EnvFault>>,
    injected: Cell<Option<InjectedFault>>,
}

impl SvmEnv {
    /// An environment over `svm`, kicking queue `i` through `kick[i]` and posting
    /// upcalls to `upcalls`.
    pub fn new(svm: Svm, kick: Vec<EventFd>, upcalls: Box<dyn UpcallSink>) -> Self {
        Self::with_bells(svm, kick.into_iter().map(Bell::EventFd).collect(), upcalls)
    }

    /// An environment over `svm`, ringing queue `i`'s doorbell `bells[i]` and
    /// posting upcalls to `upcalls`.
    pub fn with_bells(svm: Svm, bells: Vec<Bell>, upcalls: Box<dyn UpcallSink>) -> Self {
        Self {
            svm,
            kick: bells,
            upcalls,
            budget: Cell::new(ACCESS_BUDGET),
            over_budget_since: Cell::new(None),
            fault: Cell::new(None),
            injected: Cell::new(None),
        }
    }

    /// Starts a fast-path call: refills the watchdog's budget.
    #[inline]
    pub fn enter(&self) {
        self.budget.set(ACCESS_BUDGET);
        self.over_budget_since.set(None);
    }

    /// The first fault, if any.
    pub fn fault(&self) -> Option<EnvFault> {
        self.fault.get()
    }

    /// The SVM.
    pub fn svm(&self) -> &Svm {
        &self.svm
    }

    /// Asks the driver to commit `fault` in its next fast-path call.
    pub fn inject(&self, fault: InjectedFault) {
        self.injected.set(Some(fault));
    }

    #[cold]
    fn record(&self, f: EnvFault) {
        if self.fault.get().is_none() {
            self.fault.set(Some(f));
        }
    }

    /// One access: charges the budget. Cheap unless the budget ran out.
    #[inline(always)]
    fn charge(&self, addr: u64, len: u64) -> Result<(), MemFault> {
        let b = self.budget.get();
        if b > 0 {
            self.budget.set(b - 1);
            return Ok(());
        }
        self.check_clock(addr, len)
    }

    #[cold]
    fn check_clock(&self, addr: u64, len: u64) -> Result<(), MemFault> {
        let now = Instant::now();
        let since = self.over_budget_since.get().unwrap_or(now);
        self.over_budget_since.set(Some(since));
        // The budget was spent before `since`: the call began no later than that.
        let ran_for = now.duration_since(since);
        if ran_for >= STUCK_LIMIT {
            self.record(EnvFault::Watchdog { ran_for });
            return Err(MemFault::new(addr, len, FaultKind::Watchdog));
        }
        self.budget.set(ACCESS_BUDGET);
        Ok(())
    }

    #[inline(always)]
    fn svm_result<T>(&self, r: Result<T, SvmFault>) -> Result<T, MemFault> {
        r.map_err(|f| {
            self.record(EnvFault::Svm(f));
            MemFault::from(f)
        })
    }
}

macro_rules! typed {
    ($read:ident, $write:ident, $load:ident, $store:ident, $t:ty) => {
        #[inline(always)]
        fn $read(&self, addr: u64) -> Result<$t, MemFault> {
            self.charge(addr, std::mem::size_of::<$t>() as u64)?;
            self.svm_result(self.svm.$load(addr, Ordering::Relaxed))
        }
        #[inline(always)]
        fn $write(&self, addr: u64, val: $t) -> Result<(), MemFault> {
            self.charge(addr, std::mem::size_of::<$t>() as u64)?;
            self.svm_result(self.svm.$store(addr, val, Ordering::Relaxed))
        }
    };
}

impl DriverMem for SvmEnv {
    fn region_len(&self) -> u64 {
        self.svm.len()
    }
    typed!(read_u16, write_u16, load_u16, store_u16, u16);
    typed!(read_u32, write_u32, load_u32, store_u32, u32);
    typed!(read_u64, write_u64, load_u64, store_u64, u64);
    #[inline(always)]
    fn load_acquire_u16(&self, addr: u64) -> Result<u16, MemFault> {
        self.charge(addr, 2)?;
        self.svm_result(self.svm.load_u16(addr, Ordering::Acquire))
    }
    #[inline(always)]
    fn store_release_u16(&self, addr: u64, val: u16) -> Result<(), MemFault> {
        self.charge(addr, 2)?;
        self.svm_result(self.svm.store_u16(addr, val, Ordering::Release))
    }
    #[inline(always)]
    fn load_acquire_u32(&self, addr: u64) -> Result<u32, MemFault> {
        self.charge(addr, 4)?;
        self.svm_result(self.svm.load_u32(addr, Ordering::Acquire))
    }
    #[inline(always)]
    fn store_release_u32(&self, addr: u64, val: u32) -> Result<(), MemFault> {
        self.charge(addr, 4)?;
        self.svm_result(self.svm.store_u32(addr, val, Ordering::Release))
    }
    fn fence(&self) {
        std::sync::atomic::fence(Ordering::SeqCst);
    }
    fn read_bytes(&self, addr: u64, buf: &mut [u8]) -> Result<(), MemFault> {
        self.charge(addr, buf.len() as u64)?;
        self.svm_result(self.svm.read_bytes(addr, buf))
    }
    fn write_bytes(&self, addr: u64, buf: &[u8]) -> Result<(), MemFault> {
        self.charge(addr, buf.len() as u64)?;
        self.svm_result(self.svm.write_bytes(addr, buf))
    }
    fn zero_bytes(&self, addr: u64, len: u64) -> Result<(), MemFault> {
        self.charge(addr, len)?;
        self.svm_result(self.svm.fill(addr, len, 0))
    }
}

impl FrameMemory for SvmEnv {
    #[inline(always)]
    fn frame_slice(
        &self,
        addr: u64,
        len: usize,
        write: bool,
    ) -> Result<VolatileSlice<'_>, MemFault> {
        self.charge(addr, len as u64)?;
        let op = if write { Op::Write } else { Op::Read };
        self.svm_result(self.svm.slice(addr, len, op))
    }
}

impl Doorbell for SvmEnv {
    fn kick(&self, queue: u16) {
        if let Some(bell) = self.kick.get(usize::from(queue)) {
            bell.ring(queue);
        }
    }
}

impl Upcalls for SvmEnv {
    fn upcall(&self, msg: UpcallMsg) -> UpcallRoute {
        self.upcalls.post(msg)
    }
}

impl FaultInjection for SvmEnv {
    fn take_injected_fault(&self) -> Option<InjectedFault> {
        self.injected.take()
    }
}
