//! The loop of a driver domain over a kernel interface (TAP, AF_PACKET, AF_XDP):
//! the translation module between the exchange rings and a queue the host kernel's
//! own driver serves. What is common to every kind lives here: the exchange side
//! ([`Exchange`]: the two rings, the doorbells, the control words), the status
//! the domain reports, the heartbeat, injected faults, the periodic look at the
//! device, and the sleep in epoll on the switch's doorbell and the device's
//! descriptor when there is nothing to do. Each kind is a [`KernelQueue`]: one
//! batch each way, and how it learns that its device went away.
//!
//! A frame from the kernel is taken only when a `from_nic` slot is free: while
//! the switch is behind, frames wait on the kernel's side (which drops and counts
//! beyond its own limit), not here.

use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use exchange::{Consumer, DdState, DdStatus, ExchangeRegion, Producer, RingId};
use twin_poll::{Idle, Policy, PollMode, Sources, Waiter};

use crate::worker::{code, WorkerError, MAX_SLEEP};

/// How often a busy domain looks for news of its device ([`KernelQueue::check`]).
pub const CHECK_EVERY: Duration = Duration::from_millis(100);

/// The switch's side of a domain: the exchange rings and doorbells.
pub(crate) struct Exchange {
    xr: Arc<ExchangeRegion>,
    /// Frames from the switch.
    pub to_nic: Consumer,
    /// Frames to the switch.
    pub from_nic: Producer,
    doorbell_in: OwnedFd,
    doorbell_out: OwnedFd,
}

impl Exchange {
    /// After `n` frames were taken from `to_nic`: rings the switch if it asked.
    pub fn took(&mut self, n: usize) {
        if n > 0 && self.to_nic.needs_notify() {
            ring(&self.doorbell_out);
        }
    }

    /// After `n` frames were committed to `from_nic`: publishes them and rings
    /// the switch if it asked.
    pub fn committed(&mut self, n: usize) {
        if n > 0 {
            self.from_nic.publish();
            if self.from_nic.needs_notify() {
                ring(&self.doorbell_out);
            }
        }
    }

    /// Writes a drop counter into control word `i` (read by the switch for its
    /// report, never trusted for anything else).
    pub fn report(&self, i: usize, value: u64) {
        let _ = self.xr.set_control(i, value);
    }
}

/// Frames from the kernel not given to the switch, by reason.
#[derive(Debug, Default)]
pub(crate) struct RxDrops {
    /// Larger than an exchange slot.
    pub too_big: u64,
    /// `from_nic` full (not expected: a domain takes no more frames from the
    /// kernel than there are free slots).
    pub ring_full: u64,
}

/// Copies a frame from the kernel into the next `from_nic` slot and commits it;
/// `Ok(false)` when it was dropped (counted in `drops`).
pub(crate) fn push_frame(
    from_nic: &mut Producer,
    frame: &[u8],
    drops: &mut RxDrops,
) -> Result<bool, exchange::ExchangeError> {
    match from_nic.reserve()? {
        Some(slot) if frame.len() <= slot.capacity() as usize => {
            slot.frame().write_prefix(frame);
            slot.commit(frame.len())?;
            Ok(true)
        }
        Some(_) => {
            drops.too_big += 1;
            Ok(false)
        }
        None => {
            drops.ring_full += 1;
            Ok(false)
        }
    }
}

fn ring(fd: &OwnedFd) {
    let _ = rustix::io::write(fd, &1u64.to_ne_bytes());
}

fn drain(fd: &OwnedFd) {
    let mut b = [0u8; 8];
    let _ = rustix::io::read(fd, &mut b);
}

/// One kind of kernel queue a domain drives.
pub(crate) trait KernelQueue {
    /// What it is, for the log line (`"TAP device"`).
    const WHAT: &'static str;
    /// Moves one batch each way and reports its counters; returns the frames
    /// handled (moved or dropped).
    fn move_frames(&mut self, x: &mut Exchange) -> Result<usize, WorkerError>;
    /// Looks for news of the device (at least every [`CHECK_EVERY`], and after
    /// each sleep): `Err(WorkerError::NicGone)` when it is gone.
    fn check(&mut self, x: &Exchange) -> Result<(), WorkerError>;
    /// The descriptor the kernel makes readable when it has frames (or news).
    fn fd(&self) -> BorrowedFd<'_>;
}

/// Runs a domain over the queue `open` makes, until `stop` is set or the device
/// goes away; reports Running, then Failed with the cause's code.
pub(crate) fn serve<Q: KernelQueue>(
    open: impl FnOnce() -> Result<Q, WorkerError>,
    xr: Arc<ExchangeRegion>,
    doorbells: (OwnedFd, OwnedFd),
    busy_poll: bool,
    stop: &AtomicBool,
) -> Result<(), WorkerError> {
    let result = open().and_then(|queue| {
        let mut d = Domain {
            x: Exchange {
                to_nic: Consumer::new(xr.clone(), RingId::ToNic),
                from_nic: Producer::new(xr.clone(), RingId::FromNic),
                xr: xr.clone(),
                doorbell_in: doorbells.0,
                doorbell_out: doorbells.1,
            },
            queue,
        };
        xr.set_status(DdStatus {
            state: DdState::Running,
            code: 0,
        });
        tracing::info!("driver domain running ({})", Q::WHAT);
        d.run(stop, busy_poll)
    });
    let failed = match &result {
        Ok(()) => None,
        Err(WorkerError::NicGone) => Some(code::NIC_GONE),
        Err(WorkerError::Tap(_) | WorkerError::Packet(_) | WorkerError::Xdp(_)) => {
            Some(code::DEVICE_IO)
        }
        Err(_) => Some(code::EXCHANGE),
    };
    if let Some(code) = failed {
        xr.set_status(DdStatus {
            state: DdState::Failed,
            code,
        });
    }
    result
}

struct Domain<Q> {
    x: Exchange,
    queue: Q,
}

impl<Q: KernelQueue> Domain<Q> {
    fn run(&mut self, stop: &AtomicBool, busy_poll: bool) -> Result<(), WorkerError> {
        let mode = if busy_poll {
            PollMode::Busy
        } else {
            PollMode::Event
        };
        let mut waiter = Waiter::new(mode, Policy::new(MAX_SLEEP).without_spin_hint());
        let mut checked = Instant::now();
        while !stop.load(Ordering::Relaxed) {
            self.x.xr.beat();
            if let Some(f) = crate::fault::requested(&self.x.xr) {
                crate::fault::commit(&self.x.xr, &mut self.x.from_nic, self.queue.fd(), f);
            }
            if checked.elapsed() >= CHECK_EVERY {
                self.queue.check(&self.x)?;
                checked = Instant::now();
            }
            if self.queue.move_frames(&mut self.x)? > 0 {
                waiter.work();
                continue;
            }
            if matches!(waiter.idle(self)?, Idle::Woken | Idle::TimedOut) {
                drain(&self.x.doorbell_in);
                // Woken by news on the device's descriptor, perhaps (an error the
                // kernel noted, which epoll reports until it is read).
                self.queue.check(&self.x)?;
                checked = Instant::now();
            }
        }
        Ok(())
    }
}

/// What an idle domain waits on: the switch's doorbell and the device's
/// descriptor; notifications asked on `to_nic`.
impl<Q: KernelQueue> Sources for Domain<Q> {
    fn wake_fds(&self, add: &mut dyn FnMut(RawFd)) {
        add(self.x.doorbell_in.as_raw_fd());
        add(self.queue.fd().as_raw_fd());
    }

    fn set_notify(&mut self, on: bool) -> bool {
        on && self.x.to_nic.arm_notify()
    }
}
