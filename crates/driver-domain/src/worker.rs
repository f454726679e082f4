//! The driver domain's side: the translation module between the exchange rings and
//! the virtio-net driver.
//!
//! [`serve`] takes the bootstrap socket (the process's standard input), receives its
//! descriptors, attaches the driver to the NIC in the region the switch created,
//! marks itself Running and loops:
//!
//! * while it owns the fast path: `to_nic` ring -> driver transmit buffers (one
//!   copy), and driver receive -> `from_nic` ring (one copy), each published once per
//!   batch;
//! * always: ownership requests (`crate::handover`: hand the fast path to the
//!   switch, or take it back), upcalls from the switch's instance (slow-path
//!   routines, run through the driver's generated dispatcher), and the heartbeat,
//!   which advances every loop and at least every [`MAX_SLEEP`] while idle. A DD
//!   that does not own the fast path sleeps in epoll whatever the poll mode.
//!
//! A NIC that hangs up, a driver that asks for a device reset, or an exchange error
//! ends the process with a Failed status: the switch restarts it with a fresh NIC
//! connection. The DD trusts the switch only as far as the exchange crate's checks
//! go.

use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use driver_host::link::{NicLink, QueueFds};
use driver_host::{DriverConfig, HostedDriver};
use exchange::{Consumer, DdState, DdStatus, ExchangeRegion, Producer, RingId};
use twin_poll::{Idle, Policy, PollMode, Sources, Waiter};

use crate::bootstrap::{self, BootstrapError};
use crate::handover::{self, Owner, Request};

/// Frames moved per direction per loop.
pub(crate) const BATCH: usize = 64;
/// The longest an idle DD sleeps before beating again.
pub const MAX_SLEEP: Duration = Duration::from_millis(20);
/// Control fields of the exchange header the DD writes its drop counters into (read
/// by the switch for its report; informational, never trusted for anything else).
/// Word 2 carries fault requests (`crate::fault::CONTROL_FAULT`).
pub mod control {
    /// Frames from the NIC dropped because the `from_nic` ring was full.
    pub const FROM_NIC_RING_FULL: usize = 0;
    /// Frames from the switch dropped because the driver's transmit ring was full.
    pub const NIC_TX_RING_FULL: usize = 1;
    /// Frames from the NIC dropped because they are larger than a `from_nic` slot
    /// (a driver receive buffer holds 4 bytes more than a slot).
    pub const FROM_NIC_TOO_BIG: usize = 7;
    /// The driver's checks of the NIC's used rings that fired, in the driver's
    /// region (whoever runs the fast path), one word each from here, in the order
    /// of [`DEVICE_ERROR_NAMES`], then the TX timeouts of this DD.
    pub const DEVICE_ERRORS: usize = 8;
    /// Names of the words from [`DEVICE_ERRORS`] on.
    pub const DEVICE_ERROR_NAMES: [&str; 9] = [
        "rx_bad_used_id",
        "rx_not_in_flight",
        "rx_len_too_large",
        "rx_used_idx_jump",
        "tx_bad_used_id",
        "tx_not_in_flight",
        "tx_len_too_large",
        "tx_used_idx_jump",
        "tx_timeout",
    ];
    /// A kernel interface's domain (TAP, AF_PACKET): the frames the kernel side
    /// refused or handed over malformed, one word each from here, in the order
    /// of `kernel_nic::KernelDrop::ALL`.
    pub const KERNEL_DROPS: usize = 17;
}

/// A NIC that keeps the driver's TX buffers: when, for this long, every check saw
/// sends refused for a full TX ring and not one completion, the DD ends itself
/// (status [`code::TX_TIMEOUT`]) and is restarted with a fresh NIC connection, as
/// a kernel's netdev watchdog resets a NIC whose TX queue stopped.
pub const TX_TIMEOUT: Duration = Duration::from_secs(2);
/// How often the DD looks at the TX queue's progress (and reports the driver's
/// device-error counters).
const TX_CHECK_EVERY: Duration = Duration::from_millis(50);
/// Status codes a DD reports with [`DdState::Failed`].
pub mod code {
    /// The NIC hung up.
    pub const NIC_GONE: u32 = 1;
    /// The switch's side of the exchange region broke its rules.
    pub const EXCHANGE: u32 = 2;
    /// The sandbox could not be entered.
    pub const SANDBOX: u32 = 3;
    /// The driver asked for a device reset (restart the domain).
    pub const NIC_RESET: u32 = 4;
    /// The NIC's TX queue made no progress for [`super::TX_TIMEOUT`] (restart the
    /// domain).
    pub const TX_TIMEOUT: u32 = 5;
    /// Reading or writing the TAP device failed (other than its deletion, which
    /// is [`NIC_GONE`]).
    pub const DEVICE_IO: u32 = 6;

    /// What a code means, for reports.
    pub fn name(code: u32) -> &'static str {
        match code {
            NIC_GONE => "the NIC hung up",
            EXCHANGE => "exchange ring failed",
            SANDBOX => "sandbox set-up failed",
            NIC_RESET => {
                "the driver asked for a device reset (a queue broke, or the state it shares is corrupt)"
            }
            TX_TIMEOUT => "TX timeout: the NIC returned no TX buffer while the ring was full",
            DEVICE_IO => "TAP device I/O failed",
            _ => "unknown",
        }
    }
}

/// Errors of a driver domain.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    /// The descriptors did not arrive.
    #[error(transparent)]
    Bootstrap(#[from] BootstrapError),
    /// The exchange region could not be attached.
    #[error("cannot attach the exchange region")]
    Exchange(#[source] exchange::RegionError),
    /// The exchange rings broke.
    #[error("exchange ring failed")]
    Ring(#[source] exchange::ExchangeError),
    /// The driver could not attach to the NIC.
    #[error("cannot attach the driver to the NIC")]
    Driver(#[source] driver_host::Error),
    /// Waiting for work (epoll) failed.
    #[error("waiting for work failed")]
    Wait(#[from] twin_poll::WaitError),
    /// The NIC went away (a TAP device: deleted).
    #[error("the NIC hung up")]
    NicGone,
    /// The TAP device failed.
    #[error("TAP device I/O failed")]
    Tap(#[source] kernel_nic::TapIoError),
    /// The AF_PACKET socket's rings could not be mapped.
    #[error("AF_PACKET socket")]
    Packet(#[source] kernel_nic::packet::PacketError),
    /// The AF_XDP socket's UMEM or rings could not be mapped.
    #[error("AF_XDP socket")]
    Xdp(#[source] kernel_nic::xdp::XdpError),
    /// The AF_XDP driver refused its own space (a bug or a broken mapping).
    #[error("the AF_XDP driver failed")]
    XdpDriver(#[source] af_xdp_driver::XdpDriverError),
    /// The AF_PACKET driver refused its own space (a bug or a broken mapping).
    #[error("the AF_PACKET driver failed")]
    PacketDriver(#[source] af_packet_driver::PacketDriverError),
    /// The driver asked for a device reset (a queue broke); restarting the domain
    /// reconnects the NIC.
    #[error("the driver asked for a device reset")]
    ResetRequested,
    /// The NIC's TX queue stopped: buffers kept, sends refused (see [`TX_TIMEOUT`]).
    #[error("TX timeout: the NIC returned no TX buffer for {0:?} while the ring was full")]
    TxTimeout(Duration),
}

fn ring(fd: &OwnedFd) {
    let _ = rustix::io::write(fd, &1u64.to_ne_bytes());
}

fn drain(fd: &OwnedFd) {
    let mut b = [0u8; 8];
    let _ = rustix::io::read(fd, &mut b);
}

/// Runs a driver domain on the bootstrap socket `boot` until `stop` is set or the NIC
/// goes away. `before_loop` runs after the descriptors arrived and before any
/// untrusted data is touched, told the kind of device: the place to enter the
/// sandbox (whose allow-list depends on the kind).
pub fn serve<E: std::error::Error + 'static>(
    boot: UnixStream,
    stop: &AtomicBool,
    before_loop: impl FnOnce(bootstrap::DeviceKind) -> Result<(), E>,
) -> Result<(), WorkerError> {
    let fds = bootstrap::receive(&boot)?;
    // One message is all it carries: the domain keeps no socket to the switch.
    drop(boot);
    let xr = Arc::new(
        ExchangeRegion::attach(std::fs::File::from(fds.exchange)).map_err(WorkerError::Exchange)?,
    );
    xr.set_status(DdStatus {
        state: DdState::Starting,
        code: 0,
    });
    if let Err(e) = before_loop(fds.device.kind()) {
        // Recorded as an error value: the log line carries its causes too.
        twin_log::error_local!(
            error = &e as &dyn std::error::Error,
            "driver domain set-up failed"
        );
        xr.set_status(DdStatus {
            state: DdState::Failed,
            code: code::SANDBOX,
        });
        return Ok(());
    }
    let (nic, region, queues) = match fds.device {
        bootstrap::Device::Vhost {
            nic,
            region,
            queues,
        } => (nic, region, queues),
        bootstrap::Device::Tap(tap) => {
            let q = kernel_nic::TapQueue::from_fd(tap);
            let slot = xr.geometry().slot_size as usize;
            let open = || Ok(crate::tap_domain::TapDomain::new(q, slot));
            let doorbells = (fds.doorbell_in, fds.doorbell_out);
            return crate::kernel_domain::serve(open, xr, doorbells, fds.poll, stop);
        }
        bootstrap::Device::Packet {
            socket,
            state,
            layout,
        } => {
            let open = || crate::ring_domain::open_packet(socket, state, layout);
            let doorbells = (fds.doorbell_in, fds.doorbell_out);
            return crate::kernel_domain::serve(open, xr, doorbells, fds.poll, stop);
        }
        bootstrap::Device::Xdp {
            socket,
            umem,
            state,
            layout,
        } => {
            let open = || crate::ring_domain::open_xdp(socket, umem, state, *layout);
            let doorbells = (fds.doorbell_in, fds.doorbell_out);
            return crate::kernel_domain::serve(open, xr, doorbells, fds.poll, stop);
        }
    };
    let device = Path::new("nic");
    let link =
        NicLink::over(nic, device).map_err(|e| WorkerError::Driver(driver_host::Error::Link(e)))?;
    let cfg = DriverConfig {
        rx_notify: fds.poll == PollMode::Event,
        ..DriverConfig::default()
    };
    let [(rx_kick, rx_call), (tx_kick, tx_call)] = queues;
    let queue = |kick, call| QueueFds {
        kick: sandbox::fdpass::into_eventfd(kick),
        call: sandbox::fdpass::into_eventfd(call),
    };
    let queues = [queue(rx_kick, rx_call), queue(tx_kick, tx_call)];
    let drv = HostedDriver::attach(
        link,
        Some(std::fs::File::from(region)),
        Some(queues),
        &cfg,
        device,
    )
    .map_err(WorkerError::Driver)?;
    let mut domain = Domain {
        to_nic: Consumer::new(xr.clone(), RingId::ToNic),
        from_nic: Producer::new(xr.clone(), RingId::FromNic),
        upcalls: Consumer::new(xr.clone(), RingId::Upcalls),
        xr: xr.clone(),
        drv,
        doorbell_in: fds.doorbell_in,
        doorbell_out: fds.doorbell_out,
        poll: fds.poll,
        owns_fast_path: true,
        handled_request: 0,
        refuse_handover: false,
        counts: Counts::default(),
        tx_watch: TxWatch::new(Instant::now()),
    };
    xr.set_status(DdStatus {
        state: DdState::Running,
        code: 0,
    });
    twin_log::info_local!("driver domain running");
    let result = domain.run(stop);
    let code = match &result {
        Ok(()) => None,
        Err(WorkerError::NicGone) => Some(code::NIC_GONE),
        Err(WorkerError::ResetRequested) => Some(code::NIC_RESET),
        Err(WorkerError::TxTimeout(_)) => Some(code::TX_TIMEOUT),
        Err(_) => Some(code::EXCHANGE),
    };
    if let Some(code) = code {
        xr.set_status(DdStatus {
            state: DdState::Failed,
            code,
        });
    }
    result
}

/// What the DD counts and reports in control words.
#[derive(Debug, Default)]
struct Counts {
    from_nic_ring_full: u64,
    from_nic_too_big: u64,
    nic_tx_ring_full: u64,
    upcalls_run: u64,
    upcalls_refused: u64,
    tx_timeouts: u64,
}

/// The TX watchdog's view of the driver's counters (see [`TX_TIMEOUT`]).
#[derive(Debug)]
struct TxWatch {
    checked_at: Instant,
    completed: u64,
    ring_full: u64,
    /// The last check that saw a completion, or no refused send.
    progress_at: Instant,
}

impl TxWatch {
    fn new(now: Instant) -> Self {
        Self {
            checked_at: now,
            completed: 0,
            ring_full: 0,
            progress_at: now,
        }
    }

    /// One check; true when the queue has been stuck for [`TX_TIMEOUT`].
    fn stuck(&mut self, now: Instant, completed: u64, ring_full: u64) -> bool {
        if completed != self.completed || ring_full == self.ring_full {
            self.progress_at = now;
        }
        self.completed = completed;
        self.ring_full = ring_full;
        self.checked_at = now;
        now.duration_since(self.progress_at) > TX_TIMEOUT
    }
}

/// A running driver domain.
struct Domain {
    xr: Arc<ExchangeRegion>,
    drv: HostedDriver,
    to_nic: Consumer,
    from_nic: Producer,
    upcalls: Consumer,
    doorbell_in: OwnedFd,
    doorbell_out: OwnedFd,
    poll: PollMode,
    /// Whether this instance runs the fast path (see `crate::handover`).
    owns_fast_path: bool,
    /// Sequence number of the last ownership request carried out.
    handled_request: u64,
    /// Injected fault `refuse-handover`: ownership requests are ignored.
    refuse_handover: bool,
    counts: Counts,
    tx_watch: TxWatch,
}

impl Domain {
    fn run(&mut self, stop: &AtomicBool) -> Result<(), WorkerError> {
        // Owning the fast path: as the switch's mode says (busy: spin, then yield,
        // never sleep; event: a few empty rounds, then sleep; adaptive: poll a
        // while, then sleep). Not owning it: sleep at every empty round.
        let mut waiter = Waiter::new(self.poll, Policy::new(MAX_SLEEP).without_spin_hint());
        // The fast path's owner when the wake-up fds were handed out (the NIC's
        // call fd is waited on only while this DD owns the fast path).
        let mut registered_owner = self.owns_fast_path;
        let mut iter = 0u64;
        while !stop.load(Ordering::Relaxed) {
            self.xr.beat();
            if let Some(f) = crate::fault::requested(&self.xr) {
                self.refuse_handover |= f == crate::Fault::RefuseHandover;
                crate::fault::commit(&self.xr, &mut self.from_nic, self.drv.region_fd(), f);
            }
            iter += 1;
            if (!self.owns_fast_path || iter.is_multiple_of(1024)) && !self.drv.is_connected() {
                return Err(WorkerError::NicGone);
            }
            if !self.refuse_handover {
                self.follow_ownership_request()?;
            }
            let slow = self.run_upcalls()?;
            if self.drv.reset_requested() {
                self.report_device_errors();
                return Err(WorkerError::ResetRequested);
            }
            self.check_tx()?;
            let moved = if self.owns_fast_path {
                self.move_frames()?
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
                drain(&self.doorbell_in);
            }
        }
        Ok(())
    }

    /// One batch each way between the exchange rings and the driver.
    fn move_frames(&mut self) -> Result<usize, WorkerError> {
        let drv = &mut self.drv;
        let c = &mut self.counts;
        // Switch -> NIC.
        let sent = self
            .to_nic
            .poll(BATCH, |frame| {
                match drv.tx_reserve() {
                    Some(slot) if slot.capacity() >= frame.len() => {
                        let n = frame.copy_to(&slot.frame());
                        slot.commit(n);
                    }
                    // Too big cannot happen (slots are smaller than DMA buffers).
                    Some(_) => {}
                    None => c.nic_tx_ring_full += 1,
                }
            })
            .map_err(WorkerError::Ring)?;
        if sent > 0 {
            drv.tx_flush();
            if self.to_nic.needs_notify() {
                ring(&self.doorbell_out);
            }
        }
        // NIC -> switch.
        let mut ring_err = None;
        let from_nic = &mut self.from_nic;
        let got = drv.rx_burst(BATCH, |frame| match from_nic.reserve() {
            // Copied, it would be cut short: dropped (the slot goes back unused).
            Ok(Some(slot)) if (slot.capacity() as usize) < frame.len() => c.from_nic_too_big += 1,
            Ok(Some(slot)) => {
                let n = frame.copy_to(&slot.frame());
                if let Err(e) = slot.commit(n) {
                    ring_err.get_or_insert(e);
                }
            }
            // The switch is not keeping up: the frame is dropped here, and counted.
            Ok(None) => c.from_nic_ring_full += 1,
            Err(e) => {
                ring_err.get_or_insert(e);
            }
        });
        if let Some(e) = ring_err {
            return Err(WorkerError::Ring(e));
        }
        if got > 0 {
            self.from_nic.publish();
            if self.from_nic.needs_notify() {
                ring(&self.doorbell_out);
            }
        }
        if sent + got > 0 {
            self.report_counts();
        }
        Ok(sent + got)
    }

    /// Every [`TX_CHECK_EVERY`]: reports the driver's device-error counters and
    /// ends the DD when the NIC's TX queue is stuck (see [`TX_TIMEOUT`]). The
    /// counters are in the region whoever runs the fast path (a switch-side
    /// instance writes them back at every batch boundary).
    fn check_tx(&mut self) -> Result<(), WorkerError> {
        let now = Instant::now();
        if now.duration_since(self.tx_watch.checked_at) < TX_CHECK_EVERY {
            return Ok(());
        }
        let s = self.drv.stats();
        let stuck = self.tx_watch.stuck(now, s.tx_completed, s.tx_ring_full);
        if stuck {
            self.counts.tx_timeouts += 1;
            twin_log::warn_limited!(
                completed = s.tx_completed,
                ring_full = s.tx_ring_full,
                "TX timeout: the NIC keeps the TX buffers; ending for a NIC reset"
            );
        }
        self.report_device_errors();
        if stuck {
            return Err(WorkerError::TxTimeout(TX_TIMEOUT));
        }
        Ok(())
    }

    /// Writes the driver's device-error counters into the control words
    /// [`control::DEVICE_ERRORS`] on (for the switch's report).
    fn report_device_errors(&self) {
        let s = self.drv.stats();
        let (r, t) = (s.rx_checks, s.tx_checks);
        let values = [
            r.bad_used_id,
            r.not_in_flight,
            r.len_too_large,
            r.used_idx_jump,
            t.bad_used_id,
            t.not_in_flight,
            t.len_too_large,
            t.used_idx_jump,
            self.counts.tx_timeouts,
        ];
        for (i, v) in values.into_iter().enumerate() {
            let _ = self.xr.set_control(control::DEVICE_ERRORS + i, v);
        }
    }

    fn report_counts(&self) {
        let c = &self.counts;
        for (word, v) in [
            (control::FROM_NIC_RING_FULL, c.from_nic_ring_full),
            (control::NIC_TX_RING_FULL, c.nic_tx_ring_full),
            (control::FROM_NIC_TOO_BIG, c.from_nic_too_big),
            (handover::CONTROL_UPCALLS_RUN, c.upcalls_run),
            (handover::CONTROL_UPCALLS_REFUSED, c.upcalls_refused),
        ] {
            let _ = self.xr.set_control(word, v);
        }
    }

    /// Carries out a new ownership request (see `crate::handover`).
    fn follow_ownership_request(&mut self) -> Result<(), WorkerError> {
        let word = self
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
                // Every loop ends at a batch boundary; write back once more and stop.
                // The NIC's call fd leaves the wake-up set (`run` rebuilds it).
                self.drv.release();
                self.owns_fast_path = false;
                twin_log::info_limited!(seq = req.seq, "fast path handed to the switch");
            }
            (Owner::Domain, false) => {
                self.drv.reacquire().map_err(WorkerError::Driver)?;
                self.to_nic =
                    Consumer::resume(self.xr.clone(), RingId::ToNic).map_err(WorkerError::Ring)?;
                self.drv.set_rx_notify(false);
                self.owns_fast_path = true;
                twin_log::info_limited!(seq = req.seq, "fast path taken back from the switch");
            }
            // Already so (a repeated request after a switch-side retry).
            _ => {}
        }
        self.handled_request = req.seq;
        let _ = self.xr.set_control(handover::CONTROL_OWNER_ACK, word);
        ring(&self.doorbell_out);
        Ok(())
    }

    /// Runs the slow-path routines the switch's instance asked for. Returns how many.
    fn run_upcalls(&mut self) -> Result<usize, WorkerError> {
        let drv = &mut self.drv;
        let c = &mut self.counts;
        let n = self
            .upcalls
            .poll(BATCH, |frame| {
                let Some(msg) = handover::decode_upcall(frame) else {
                    c.upcalls_refused += 1;
                    return;
                };
                match drv.dispatch_upcall(&msg) {
                    Ok(routine) => {
                        c.upcalls_run += 1;
                        twin_log::debug_limited!(routine, "upcall");
                    }
                    Err(e) => {
                        c.upcalls_refused += 1;
                        if c.upcalls_refused.is_power_of_two() {
                            twin_log::warn_limited!(error = %e, refused = c.upcalls_refused, "upcall refused");
                        }
                    }
                }
            })
            .map_err(WorkerError::Ring)?;
        if n > 0 {
            self.report_counts();
        }
        Ok(n)
    }
}

/// What an idle DD waits on (at most [`MAX_SLEEP`]): the switch's doorbell, and
/// while it owns the fast path the NIC's RX call; notifications on the upcall
/// ring, and while it owns the fast path on `to_nic` and the driver's RX queue.
impl Sources for Domain {
    fn wake_fds(&self, add: &mut dyn FnMut(std::os::fd::RawFd)) {
        add(self.doorbell_in.as_raw_fd());
        if self.owns_fast_path {
            add(self.drv.rx_call_fd());
        }
    }

    fn set_notify(&mut self, on: bool) -> bool {
        if on {
            let mut raced = self.upcalls.arm_notify();
            if self.owns_fast_path {
                raced |= self.to_nic.arm_notify() | self.drv.set_rx_notify(true);
            }
            raced
        } else {
            if self.owns_fast_path {
                self.drv.set_rx_notify(false);
            }
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tx_watch_fires_only_when_sends_are_refused_without_completions() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let mut w = TxWatch::new(t0);
        // Refused sends, no completion, for longer than the timeout: stuck.
        let limit = TX_TIMEOUT.as_millis() as u64;
        let mut full = 0;
        for ms in (50..=limit).step_by(50) {
            full += 10;
            assert!(!w.stuck(at(ms), 5, full), "{ms} ms");
        }
        assert!(w.stuck(at(limit + 100), 5, full + 10));
        // A completion, or a check without refused sends, is progress.
        let mut w = TxWatch::new(t0);
        assert!(!w.stuck(at(limit), 5, 10));
        assert!(
            !w.stuck(at(2 * limit), 5, 10),
            "no send refused: idle, not stuck"
        );
        assert!(!w.stuck(at(3 * limit), 6, 20), "a completion");
    }
}
