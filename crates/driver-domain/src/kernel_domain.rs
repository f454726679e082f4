//! The loop of a driver domain over a kernel interface (TAP, AF_PACKET, AF_XDP):
//! the translation module between the exchange rings and a queue the host kernel's
//! own driver serves. What is common to every kind lives here: the exchange side
//! ([`Exchange`]: the two rings, the doorbells, the control words), the status
//! the domain reports, the heartbeat, injected faults, the periodic look at the
//! device, and the sleep in epoll on the switch's doorbell and the device's
//! descriptor when there is nothing to do. Each kind is a [`KernelQueue`]: one
//! batch each way, and how it learns that its device went away.
//!
//! A kind whose driver state is shared memory (AF_XDP, AF_PACKET) can hand its fast path
//! to the switch: the loop answers ownership requests (`crate::handover`),
//! stops moving frames while the switch runs the driver, runs the slow-path
//! upcalls the switch's instance posts, and reports the shared counters on its
//! own. A TAP leaves such a request unanswered (the switch never sends one: its
//! uplinks run in domain mode only).
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

use crate::handover::{self, Owner, Request};
use crate::worker::{code, WorkerError, BATCH, MAX_SLEEP};

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

/// Copies a frame from the kernel (in a ring driver's space) into the next
/// `from_nic` slot, once, and commits it; `Ok(false)` when it was dropped
/// (counted in `drops`).
pub(crate) fn push_segments(
    from_nic: &mut Producer,
    frame: &twin_wire::Segments<'_>,
    drops: &mut RxDrops,
) -> Result<bool, exchange::ExchangeError> {
    match from_nic.reserve()? {
        Some(slot) if frame.len() <= slot.capacity() as usize => {
            let copied = frame.copy_to(&slot.frame());
            slot.commit(copied)?;
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
    /// Stops running the fast path at a batch boundary, everything written
    /// back, so that the switch's instance can continue from the state in the
    /// shared space. `false`: this kind's fast path cannot move (its state is
    /// not shared memory); the request is not acknowledged.
    fn release(&mut self) -> Result<bool, WorkerError> {
        Ok(false)
    }
    /// Takes the fast path back: re-reads and validates the shared state.
    fn reacquire(&mut self) -> Result<(), WorkerError> {
        Ok(())
    }
    /// Runs a slow-path routine a switch-side instance posted; its name, or
    /// why it was refused.
    fn dispatch_upcall(&mut self, _msg: &driver_env::UpcallMsg) -> Result<&'static str, String> {
        Err("this kind has no slow-path routines".into())
    }
    /// Whether a slow-path routine asked for the domain to be restarted.
    fn reset_requested(&self) -> bool {
        false
    }
    /// Reports the counters a switch-side instance keeps in the shared state
    /// (called while the switch runs the fast path).
    fn report_shared(&mut self, _x: &Exchange) {}
    /// Injected fault `scribble-state`: overwrites the state a switch-side
    /// instance shares with nonsense (nothing, for a kind without any).
    fn scribble_shared_state(&mut self) {}
}

/// Runs a domain over the queue `open` makes, until `stop` is set or the device
/// goes away; reports Running, then Failed with the cause's code.
pub(crate) fn serve<Q: KernelQueue>(
    open: impl FnOnce() -> Result<Q, WorkerError>,
    xr: Arc<ExchangeRegion>,
    doorbells: (OwnedFd, OwnedFd),
    poll: PollMode,
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
            upcalls: Consumer::new(xr.clone(), RingId::Upcalls),
            owns_fast_path: true,
            handled_request: 0,
            upcalls_run: 0,
            upcalls_refused: 0,
            refuse_handover: false,
        };
        xr.set_status(DdStatus {
            state: DdState::Running,
            code: 0,
        });
        twin_log::info_local!("driver domain running ({})", Q::WHAT);
        d.run(stop, poll)
    });
    let failed = match &result {
        Ok(()) => None,
        Err(WorkerError::NicGone) => Some(code::NIC_GONE),
        Err(WorkerError::ResetRequested) => Some(code::NIC_RESET),
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
    /// Slow-path requests of a switch-side instance.
    upcalls: Consumer,
    /// Whether this domain runs the fast path (see `crate::handover`).
    owns_fast_path: bool,
    /// Sequence number of the last ownership request carried out.
    handled_request: u64,
    upcalls_run: u64,
    upcalls_refused: u64,
    /// Injected fault `refuse-handover`: ownership requests go unanswered.
    refuse_handover: bool,
}

impl<Q: KernelQueue> Domain<Q> {
    fn run(&mut self, stop: &AtomicBool, poll: PollMode) -> Result<(), WorkerError> {
        let mut waiter = Waiter::new(poll, Policy::new(MAX_SLEEP).without_spin_hint());
        let mut checked = Instant::now();
        // The owner when the wake-up fds were handed out (the device's
        // descriptor is waited on only while this domain runs the fast path).
        let mut registered_owner = self.owns_fast_path;
        while !stop.load(Ordering::Relaxed) {
            self.x.xr.beat();
            if let Some(f) = crate::fault::requested(&self.x.xr) {
                crate::fault::commit(&self.x.xr, &mut self.x.from_nic, self.queue.fd(), f);
                if f == crate::Fault::ScribbleState {
                    self.queue.scribble_shared_state();
                }
                self.refuse_handover |= f == crate::Fault::RefuseHandover;
            }
            if checked.elapsed() >= CHECK_EVERY {
                self.queue.check(&self.x)?;
                if !self.owns_fast_path {
                    self.queue.report_shared(&self.x);
                }
                checked = Instant::now();
            }
            if !self.refuse_handover {
                self.follow_ownership_request()?;
            }
            let slow = self.run_upcalls()?;
            if self.queue.reset_requested() {
                return Err(WorkerError::ResetRequested);
            }
            let moved = if self.owns_fast_path {
                self.queue.move_frames(&mut self.x)?
            } else {
                0
            };
            if moved + slow > 0 {
                waiter.work();
                continue;
            }
            if registered_owner != self.owns_fast_path {
                registered_owner = self.owns_fast_path;
                waiter.invalidate();
            }
            let idle = if self.owns_fast_path {
                waiter.idle(self)?
            } else {
                waiter.sleep(self, MAX_SLEEP)?
            };
            if matches!(idle, Idle::Woken | Idle::TimedOut) {
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

impl<Q: KernelQueue> Domain<Q> {
    /// Carries out a new ownership request (see `crate::handover`); a kind
    /// whose fast path cannot move leaves it unacknowledged.
    fn follow_ownership_request(&mut self) -> Result<(), WorkerError> {
        let word = self
            .x
            .xr
            .control(handover::CONTROL_OWNER_REQUEST)
            .unwrap_or(0);
        let Some(req) = Request::from_word(word) else {
            return Ok(());
        };
        if req.seq == self.handled_request {
            return Ok(());
        }
        match (req.owner, self.owns_fast_path) {
            (Owner::Switch, true) => {
                if !self.queue.release()? {
                    self.handled_request = req.seq;
                    twin_log::warn_limited!(
                        seq = req.seq,
                        "the switch asked for a fast path this kind cannot hand over"
                    );
                    return Ok(());
                }
                self.owns_fast_path = false;
                twin_log::info_limited!(seq = req.seq, "fast path handed to the switch");
            }
            (Owner::Domain, false) => {
                self.queue.reacquire()?;
                self.x.to_nic = Consumer::resume(self.x.xr.clone(), RingId::ToNic)
                    .map_err(WorkerError::Ring)?;
                self.owns_fast_path = true;
                twin_log::info_limited!(seq = req.seq, "fast path taken back from the switch");
            }
            // Already so (a repeated request after a switch-side retry).
            _ => {}
        }
        self.handled_request = req.seq;
        self.x.report(handover::CONTROL_OWNER_ACK, word);
        ring(&self.x.doorbell_out);
        Ok(())
    }

    /// Runs the slow-path routines the switch's instance asked for. Returns how
    /// many.
    fn run_upcalls(&mut self) -> Result<usize, WorkerError> {
        let (queue, run, refused) = (
            &mut self.queue,
            &mut self.upcalls_run,
            &mut self.upcalls_refused,
        );
        let n = self
            .upcalls
            .poll(BATCH, |frame| {
                let Some(msg) = handover::decode_upcall(frame) else {
                    *refused += 1;
                    return;
                };
                match queue.dispatch_upcall(&msg) {
                    Ok(routine) => {
                        *run += 1;
                        twin_log::debug_limited!(routine, "upcall");
                    }
                    Err(e) => {
                        *refused += 1;
                        if refused.is_power_of_two() {
                            twin_log::warn_limited!(error = %e, refused = *refused, "upcall refused");
                        }
                    }
                }
            })
            .map_err(WorkerError::Ring)?;
        if n > 0 {
            self.x
                .report(handover::CONTROL_UPCALLS_RUN, self.upcalls_run);
            self.x
                .report(handover::CONTROL_UPCALLS_REFUSED, self.upcalls_refused);
        }
        Ok(n)
    }
}

/// What an idle domain waits on: the switch's doorbell, and while it runs the
/// fast path the device's descriptor; notifications asked on the upcall ring,
/// and while it runs the fast path on `to_nic`.
impl<Q: KernelQueue> Sources for Domain<Q> {
    fn wake_fds(&self, add: &mut dyn FnMut(RawFd)) {
        add(self.x.doorbell_in.as_raw_fd());
        if self.owns_fast_path {
            add(self.queue.fd().as_raw_fd());
        }
    }

    fn set_notify(&mut self, on: bool) -> bool {
        if !on {
            return false;
        }
        let raced = self.upcalls.arm_notify();
        if self.owns_fast_path {
            raced | self.x.to_nic.arm_notify()
        } else {
            raced
        }
    }
}
