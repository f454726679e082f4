//! The waiter with real eventfds.

use std::os::fd::AsRawFd;
use std::time::Instant;

use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use super::*;

/// Sources over real eventfds; records what the waiter asked.
#[derive(Debug)]
struct Fds {
    fds: Vec<EventFd>,
    /// `set_notify(true)` reports work raced in.
    raced: bool,
    /// `set_notify(true)` writes this fd after its re-check found nothing (a peer
    /// posting in the window between the arm and the wait).
    write_on_arm: Option<usize>,
    armed: bool,
    arms: u32,
    disarms: u32,
}

impl Fds {
    fn new(n: usize) -> Self {
        Self {
            fds: (0..n)
                .map(|_| EventFd::new(EFD_NONBLOCK).unwrap())
                .collect(),
            raced: false,
            write_on_arm: None,
            armed: false,
            arms: 0,
            disarms: 0,
        }
    }
}

impl Sources for Fds {
    fn wake_fds(&self, add: &mut dyn FnMut(RawFd)) {
        for f in &self.fds {
            add(f.as_raw_fd());
        }
    }

    fn set_notify(&mut self, on: bool) -> bool {
        self.armed = on;
        if on {
            self.arms += 1;
            if let Some(i) = self.write_on_arm {
                self.fds[i].write(1).unwrap();
            }
            self.raced
        } else {
            self.disarms += 1;
            false
        }
    }
}

/// Counts how often the epoll set is built (through `wake_fds`).
#[derive(Debug)]
struct Counting<'a> {
    inner: &'a mut Fds,
    builds: std::cell::Cell<u32>,
}

impl Sources for Counting<'_> {
    fn wake_fds(&self, add: &mut dyn FnMut(RawFd)) {
        self.builds.set(self.builds.get() + 1);
        self.inner.wake_fds(add);
    }
    fn set_notify(&mut self, on: bool) -> bool {
        self.inner.set_notify(on)
    }
}

const LONG: Duration = Duration::from_secs(10);

fn waiter(mode: PollMode) -> Waiter {
    Waiter::new(mode, Policy::new(LONG))
}

#[test]
fn a_write_in_the_arm_window_is_not_lost() {
    // The re-check found nothing, then the peer wrote before the wait began: the
    // wait must return at once, not after the (long) timeout.
    for i in 0..2 {
        let mut s = Fds::new(2);
        s.write_on_arm = Some(i);
        let mut w = waiter(PollMode::Event);
        let t = Instant::now();
        assert_eq!(w.sleep(&mut s, LONG).unwrap(), Idle::Woken);
        assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
        assert_eq!((s.arms, s.disarms, s.armed), (1, 1, false));
    }
}

#[test]
fn a_write_before_the_set_is_built_wakes_the_first_sleep() {
    let mut s = Fds::new(1);
    s.fds[0].write(1).unwrap();
    let mut w = waiter(PollMode::Event);
    let t = Instant::now();
    assert_eq!(w.sleep(&mut s, LONG).unwrap(), Idle::Woken);
    assert!(t.elapsed() < Duration::from_secs(2));
}

#[test]
fn undrained_fds_wake_again_on_every_write_and_only_then() {
    // Edge-triggered: the counter is never read, yet each new write is a wake-up;
    // without a new write the wait times out.
    let mut s = Fds::new(1);
    let mut w = waiter(PollMode::Event);
    for _ in 0..3 {
        s.fds[0].write(1).unwrap();
        assert_eq!(w.sleep(&mut s, LONG).unwrap(), Idle::Woken);
        assert_eq!(
            w.sleep(&mut s, Duration::from_millis(5)).unwrap(),
            Idle::TimedOut
        );
    }
}

#[test]
fn a_timeout_returns() {
    let mut s = Fds::new(1);
    let mut w = waiter(PollMode::Event);
    let t = Instant::now();
    assert_eq!(
        w.sleep(&mut s, Duration::from_millis(30)).unwrap(),
        Idle::TimedOut
    );
    let took = t.elapsed();
    assert!(took >= Duration::from_millis(29), "{took:?}");
    assert!(took < Duration::from_secs(2), "{took:?}");
    // Rounded up to whole milliseconds: 1 us sleeps 1 ms, not 0.
    let t = Instant::now();
    assert_eq!(
        w.sleep(&mut s, Duration::from_micros(1)).unwrap(),
        Idle::TimedOut
    );
    assert!(t.elapsed() >= Duration::from_micros(900));
    // No fds at all: still a timed sleep.
    let mut none = Fds::new(0);
    let mut w = waiter(PollMode::Event);
    assert_eq!(
        w.sleep(&mut none, Duration::from_millis(2)).unwrap(),
        Idle::TimedOut
    );
}

#[test]
fn raced_work_skips_the_wait_and_disarms() {
    let mut s = Fds::new(1);
    s.raced = true;
    let mut w = waiter(PollMode::Event);
    let t = Instant::now();
    assert_eq!(w.sleep(&mut s, LONG).unwrap(), Idle::Raced);
    assert!(t.elapsed() < Duration::from_secs(2));
    assert_eq!((s.arms, s.disarms, s.armed), (1, 1, false));
}

#[test]
fn busy_mode_never_sleeps_nor_arms() {
    let mut s = Fds::new(1);
    let mut w = waiter(PollMode::Busy);
    let t = Instant::now();
    let mut seen = Vec::new();
    for _ in 0..100_000 {
        seen.push(w.idle(&mut s).unwrap());
    }
    // 100 000 rounds with a 10 s timeout: any sleep would show.
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    assert_eq!(s.arms + s.disarms, 0);
    let spins = SPINS_BEFORE_YIELD as usize;
    assert!(seen[..spins].iter().all(|o| *o == Idle::Spun));
    assert!(seen[spins..].iter().all(|o| *o == Idle::Yielded));
    // Progress starts the count again.
    w.work();
    assert_eq!(w.idle(&mut s).unwrap(), Idle::Spun);
}

#[test]
fn event_mode_spins_then_sleeps_at_every_empty_round() {
    let mut s = Fds::new(1);
    let mut w = Waiter::new(PollMode::Event, Policy::new(Duration::from_millis(1)));
    for _ in 1..EVENT_ROUNDS {
        assert_eq!(w.idle(&mut s).unwrap(), Idle::Spun);
    }
    assert_eq!(s.arms, 0);
    for n in 1..=3 {
        assert_eq!(w.idle(&mut s).unwrap(), Idle::TimedOut);
        assert_eq!(s.arms, n);
    }
    w.work();
    assert_eq!(w.idle(&mut s).unwrap(), Idle::Spun);
    // Zero rounds: the first empty round sleeps.
    let policy = Policy::new(Duration::from_millis(1)).with_event_rounds(0);
    let mut w = Waiter::new(PollMode::Event, policy);
    assert_eq!(w.idle(&mut s).unwrap(), Idle::TimedOut);
}

#[test]
fn adaptive_mode_spins_yields_then_sleeps() {
    let mut s = Fds::new(1);
    let mut w = Waiter::new(PollMode::Adaptive, Policy::new(Duration::from_millis(1)));
    let mut seen = Vec::new();
    for _ in 1..ADAPTIVE_ROUNDS {
        seen.push(w.idle(&mut s).unwrap());
    }
    assert_eq!(s.arms, 0, "no notification while polling");
    let spins = SPINS_BEFORE_YIELD as usize;
    assert!(seen[..spins].iter().all(|o| *o == Idle::Spun));
    assert!(seen[spins..].iter().all(|o| *o == Idle::Yielded));
    assert_eq!(w.idle(&mut s).unwrap(), Idle::TimedOut);
    assert_eq!(
        w.idle(&mut s).unwrap(),
        Idle::TimedOut,
        "asleep stays asleep"
    );
    // A wake-up with work: busy again.
    s.fds[0].write(1).unwrap();
    assert_eq!(w.idle(&mut s).unwrap(), Idle::Woken);
    w.work();
    assert_eq!(w.idle(&mut s).unwrap(), Idle::Spun);
    assert_eq!(w.idle_rounds(), 1);
}

#[test]
fn the_set_is_built_once_and_rebuilt_after_invalidate() {
    let mut fds = Fds::new(1);
    let mut s = Counting {
        inner: &mut fds,
        builds: Default::default(),
    };
    let mut w = waiter(PollMode::Event);
    for _ in 0..3 {
        w.sleep(&mut s, Duration::from_millis(1)).unwrap();
    }
    assert_eq!(s.builds.get(), 1);
    // The set changes: a new fd replaces the old one.
    let old = std::mem::replace(&mut s.inner.fds[0], EventFd::new(EFD_NONBLOCK).unwrap());
    w.invalidate();
    s.inner.fds[0].write(1).unwrap();
    assert_eq!(w.sleep(&mut s, LONG).unwrap(), Idle::Woken);
    assert_eq!(s.builds.get(), 2);
    // The dropped fd is no longer waited on.
    old.write(1).unwrap();
    assert_eq!(
        w.sleep(&mut s, Duration::from_millis(5)).unwrap(),
        Idle::TimedOut
    );
}

#[test]
fn an_fd_handed_twice_is_registered_once() {
    #[derive(Debug)]
    struct Twice(EventFd);
    impl Sources for Twice {
        fn wake_fds(&self, add: &mut dyn FnMut(RawFd)) {
            add(self.0.as_raw_fd());
            add(self.0.as_raw_fd());
        }
        fn set_notify(&mut self, _on: bool) -> bool {
            false
        }
    }
    let mut s = Twice(EventFd::new(EFD_NONBLOCK).unwrap());
    s.0.write(1).unwrap();
    let mut w = waiter(PollMode::Event);
    assert_eq!(w.sleep(&mut s, LONG).unwrap(), Idle::Woken);
}

#[test]
fn a_bad_fd_is_an_error() {
    #[derive(Debug)]
    struct Bad;
    impl Sources for Bad {
        fn wake_fds(&self, add: &mut dyn FnMut(RawFd)) {
            add(-1);
        }
        fn set_notify(&mut self, _on: bool) -> bool {
            false
        }
    }
    let mut w = waiter(PollMode::Event);
    let err = w.sleep(&mut Bad, LONG).unwrap_err();
    assert!(matches!(err, WaitError::Register { fd: -1, .. }), "{err:?}");
}
