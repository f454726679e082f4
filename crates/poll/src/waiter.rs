//! The idle half of a polling loop: what a loop does after a round without work.
//!
//! A loop owns a [`Waiter`] and calls [`Waiter::work`] after a round that made
//! progress and [`Waiter::idle`] after a round that did not. The waiter counts the
//! empty rounds since the last progress and, by [`PollMode`]:
//!
//! * `busy`: spins ([`std::hint::spin_loop`]) for [`Policy::spins_before_yield`]
//!   empty rounds, then yields the core ([`std::thread::yield_now`]) after every
//!   further one. It never sleeps and never touches a notification.
//! * `event`: spins for [`Policy::event_rounds`] empty rounds (a peer mid-batch
//!   costs less to wait for than a sleep and a wake-up), then sleeps at every
//!   empty round.
//! * `adaptive`: like `busy` for [`Policy::adaptive_rounds`] empty rounds, then
//!   like `event`. See [`ADAPTIVE_ROUNDS`] for the choice of the threshold.
//!
//! A sleep is: arm (the caller's [`Sources::set_notify`]`(true)` enables
//! notifications on every source and re-checks them, saying whether work raced in),
//! then, when nothing raced in, one `epoll_wait` on the registered fds with a
//! timeout, then disarm ([`Sources::set_notify`]`(false)`, also after a race). The
//! outcome ([`Idle`]) tells the caller which it was.
//!
//! Registration: the fds a source hands to [`Sources::wake_fds`] are registered
//! edge-triggered in one epoll set, built at the first sleep and rebuilt (a fresh
//! set) at the first sleep after [`Waiter::invalidate`]. Edge-triggered means the
//! waiter never reads an fd: every eventfd write is a new edge, whatever the
//! counter holds, so a counter nobody drains still wakes the next sleep (and a
//! peer's fd that may be blocking is never read). A write that lands between the
//! arm and the wait is not lost: the edge is queued in the epoll set's ready list
//! and the wait returns at once; an fd that is already readable when it is
//! registered is reported by the first wait. The cost of never draining is at most
//! one early return after a write that came while the loop was polling.
//!
//! Limits: the loop's own progress is all the waiter knows; it does not look at
//! which fd woke it (callers find their work by polling every source). A sleep is
//! a few system calls (the arm's fences are the caller's); a busy round is a
//! counter, a compare and a `pause` or `sched_yield`. No allocation after the
//! epoll set is built; the set is rebuilt only after [`Waiter::invalidate`]. The
//! timeout is in whole milliseconds (epoll's granularity), rounded up.

use std::os::fd::RawFd;
use std::time::Duration;

use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};

/// Empty rounds a busy or adaptive loop spins before it starts yielding its core.
///
/// With fewer cores than busy pollers (the 2-core machine this runs on), a poller
/// that spins through its whole time slice starves the peer it waits for; after a
/// few empty rounds it yields instead (a cheap system call when no one else wants
/// the core). 16 rounds is a few microseconds: long enough for a peer that is
/// mid-batch on the other core, short enough not to hold a shared core.
pub const SPINS_BEFORE_YIELD: u32 = 16;

/// Empty rounds an event-mode loop spins before it sleeps (after progress; once
/// asleep, every empty round sleeps again).
pub const EVENT_ROUNDS: u32 = 64;

/// Empty rounds an adaptive loop polls (spinning, then yielding) before it sleeps.
///
/// Why 256: an empty round of the switch is a poll of every port, well under a
/// microsecond when spinning and one to two microseconds when it yields a core
/// nobody else wants. 256 rounds are so about 0.25 to 0.5 ms of polling after the
/// last frame, which is:
///
/// * long against the gaps of a flow at full rate (a peer's next batch comes
///   within microseconds, or after a time slice of its own when it shares a core,
///   and the yields give it that core), so a loaded loop stays in busy mode and
///   its peers are never asked to notify;
/// * short against anything a person sees as idle: an idle loop pays this once per
///   burst, and once asleep it stays asleep (each wake-up without work is one
///   round), so its CPU time is the wake-ups of its timeout, far below 1 % of a
///   core;
/// * a few times the cost of a sleep and a wake-up (tens of microseconds), the
///   usual bound for spinning before blocking: a gap that ends while polling is
///   served without a wake-up, one that does not costs at most a few times what
///   the sleep saves.
///
/// When other processes want the core, the yielding rounds last longer in wall
/// time but cost this loop almost nothing: the core goes to them.
pub const ADAPTIVE_ROUNDS: u32 = 256;

/// Most events taken from one `epoll_wait` (the loop polls every source anyway).
const EVENTS: usize = 16;

/// How a loop waits when it has no work.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PollMode {
    /// Spin, then yield; never sleep. Lowest latency, one core.
    #[default]
    Busy,
    /// Sleep in epoll soon after the work stops.
    Event,
    /// Busy while there is work; sleep in epoll after [`Policy::adaptive_rounds`]
    /// empty rounds.
    Adaptive,
}

/// The numbers a [`Waiter`] works with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// Busy and adaptive: empty rounds spent spinning before each further empty
    /// round yields ([`SPINS_BEFORE_YIELD`]).
    pub spins_before_yield: u32,
    /// Event: empty rounds spent spinning before sleeping ([`EVENT_ROUNDS`]; 0:
    /// sleep at the first empty round).
    pub event_rounds: u32,
    /// Adaptive: empty rounds polled before sleeping ([`ADAPTIVE_ROUNDS`]).
    pub adaptive_rounds: u32,
    /// Busy and adaptive: whether a spinning round issues the CPU's spin-wait hint
    /// (`pause`). A hinted round is slower, so a poller reaches its yields later
    /// and keeps a shared core longer: the driver domain spins without it (as it
    /// always did); event-mode spinning never hints (its rounds are counted to a
    /// sleep, not to a yield).
    pub spin_hint: bool,
    /// Longest sleep ([`Waiter::idle`]).
    pub timeout: Duration,
}

impl Policy {
    /// The default rounds with sleeps of at most `timeout`.
    pub const fn new(timeout: Duration) -> Self {
        Self {
            spins_before_yield: SPINS_BEFORE_YIELD,
            event_rounds: EVENT_ROUNDS,
            adaptive_rounds: ADAPTIVE_ROUNDS,
            spin_hint: true,
            timeout,
        }
    }

    /// The same without the spin-wait hint in busy and adaptive spinning.
    pub const fn without_spin_hint(mut self) -> Self {
        self.spin_hint = false;
        self
    }

    /// The same with `rounds` empty rounds before an event-mode sleep.
    pub const fn with_event_rounds(mut self, rounds: u32) -> Self {
        self.event_rounds = rounds;
        self
    }
}

/// What a loop waits on: the caller's view of its sources.
pub trait Sources {
    /// Hands every fd that becomes readable (an eventfd written) when a source has
    /// work or news to `add`. Called when the epoll set is (re)built.
    fn wake_fds(&self, add: &mut dyn FnMut(RawFd));

    /// `true`: enables notifications on every source and re-checks them; returns
    /// true when work is already there (it raced in before the notifications were
    /// on, so no notification will come for it). `false`: disables them again
    /// (the return value is ignored).
    fn set_notify(&mut self, on: bool) -> bool;
}

/// What one idle round did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Idle {
    /// Spun (a `pause`), no system call.
    Spun,
    /// Yielded the core.
    Yielded,
    /// Armed, but work had raced in: did not sleep (notifications are off again).
    Raced,
    /// Slept and was woken by a registered fd.
    Woken,
    /// Slept until the timeout.
    TimedOut,
}

/// Errors of a sleep.
#[derive(Debug, thiserror::Error)]
pub enum WaitError {
    /// The epoll set could not be created.
    #[error("cannot create an epoll set")]
    Create(#[source] std::io::Error),
    /// An fd could not be registered.
    #[error("cannot register fd {fd} in the epoll set")]
    Register {
        /// The fd.
        fd: RawFd,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// `epoll_wait` failed (other than for a signal).
    #[error("epoll_wait failed")]
    Wait(#[source] std::io::Error),
}

/// The idle strategy of one loop (see the module documentation).
#[derive(Debug)]
pub struct Waiter {
    mode: PollMode,
    policy: Policy,
    /// Empty rounds since the last progress (saturating).
    idle: u32,
    /// The registered set; `None` until the first sleep and after `invalidate`.
    epoll: Option<Epoll>,
    events: [EpollEvent; EVENTS],
}

impl Waiter {
    /// A waiter in `mode` with `policy`. Creates nothing yet (the epoll set is
    /// built at the first sleep).
    pub fn new(mode: PollMode, policy: Policy) -> Self {
        Self {
            mode,
            policy,
            idle: 0,
            epoll: None,
            events: [EpollEvent::default(); EVENTS],
        }
    }

    /// The mode.
    pub fn mode(&self) -> PollMode {
        self.mode
    }

    /// Empty rounds since the last progress.
    pub fn idle_rounds(&self) -> u32 {
        self.idle
    }

    /// The round made progress.
    #[inline]
    pub fn work(&mut self) {
        self.idle = 0;
    }

    /// The set of fds changed: the epoll set is rebuilt at the next sleep.
    pub fn invalidate(&mut self) {
        self.epoll = None;
    }

    /// The round made no progress: spin, yield or sleep (at most
    /// [`Policy::timeout`]) as the mode says.
    #[inline]
    pub fn idle<S: Sources + ?Sized>(&mut self, sources: &mut S) -> Result<Idle, WaitError> {
        let timeout = self.policy.timeout;
        self.idle_for(sources, timeout)
    }

    /// Like [`Waiter::idle`], sleeping at most `timeout` (rounded up to whole
    /// milliseconds).
    #[inline]
    pub fn idle_for<S: Sources + ?Sized>(
        &mut self,
        sources: &mut S,
        timeout: Duration,
    ) -> Result<Idle, WaitError> {
        self.idle = self.idle.saturating_add(1);
        let p = &self.policy;
        let sleep = match self.mode {
            PollMode::Busy => false,
            PollMode::Event => self.idle >= p.event_rounds,
            PollMode::Adaptive => self.idle >= p.adaptive_rounds,
        };
        if sleep {
            return self.sleep(sources, timeout);
        }
        if self.mode == PollMode::Event {
            Ok(Idle::Spun)
        } else if self.idle <= p.spins_before_yield {
            if p.spin_hint {
                std::hint::spin_loop();
            }
            Ok(Idle::Spun)
        } else {
            std::thread::yield_now();
            Ok(Idle::Yielded)
        }
    }

    /// Sleeps now, whatever the mode and count: arm, re-check, wait at most
    /// `timeout` (rounded up to whole milliseconds), disarm.
    pub fn sleep<S: Sources + ?Sized>(
        &mut self,
        sources: &mut S,
        timeout: Duration,
    ) -> Result<Idle, WaitError> {
        if self.epoll.is_none() {
            self.epoll = Some(build(&*sources)?);
        }
        if sources.set_notify(true) {
            sources.set_notify(false);
            return Ok(Idle::Raced);
        }
        let ms = i32::try_from(timeout.as_micros().div_ceil(1000)).unwrap_or(i32::MAX);
        let waited = match &self.epoll {
            Some(ep) => ep.wait(ms, &mut self.events),
            None => Ok(0),
        };
        sources.set_notify(false);
        match waited {
            Ok(0) => Ok(Idle::TimedOut),
            Ok(_) => Ok(Idle::Woken),
            // A signal: the caller's loop looks at its stop flag and polls again.
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => Ok(Idle::Woken),
            Err(e) => Err(WaitError::Wait(e)),
        }
    }
}

/// A fresh epoll set with every fd of `sources`, edge-triggered. An fd handed twice
/// is registered once.
fn build<S: Sources + ?Sized>(sources: &S) -> Result<Epoll, WaitError> {
    let ep = Epoll::new().map_err(WaitError::Create)?;
    let mut result = Ok(());
    sources.wake_fds(&mut |fd: RawFd| {
        if result.is_err() {
            return;
        }
        let ev = EpollEvent::new(EventSet::IN | EventSet::EDGE_TRIGGERED, fd as u64);
        match ep.ctl(ControlOperation::Add, fd, ev) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {}
            Err(source) => result = Err(WaitError::Register { fd, source }),
        }
    });
    result.map(|()| ep)
}

#[cfg(test)]
mod tests;
