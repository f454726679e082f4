//! A driver domain for an AF_XDP socket: the translation module between the
//! exchange rings and the socket's rings and UMEM on one queue of an interface.
//! The switch attached the redirect program and opened, registered and bound the
//! socket; this loop maps the UMEM and the rings ([`kernel_nic::xdp::XdpRings`],
//! which checks every index and descriptor the kernel writes), copies received
//! frames into `from_nic` slots and gives their chunks back, copies frames from
//! `to_nic` into free transmit chunks, and wakes the kernel with a `send` of
//! nothing (the one system call the kind adds to the sandbox, as AF_PACKET's).
//! It counts what it drops by reason in the exchange region's control words,
//! beats the heartbeat, and sleeps in epoll on the switch's doorbell and the
//! socket when there is nothing to do.
//!
//! A deleted interface unbinds the socket: the next read of it says so (checked
//! at least every [`CHECK_EVERY`]) and the domain ends; the switch attaches the
//! program and opens a socket again for the next domain once the interface exists.
//!
//! Limits: frames are copied through a buffer each way (no `unsafe` here); copy
//! mode; one queue; no offloads. Frames queued for transmission while the
//! interface is down go out when it is up again (the kernel owns them on the
//! ring). A descriptor or index the kernel gets wrong counts once as
//! `kernel_bad_header`.

use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use exchange::{Consumer, DdState, DdStatus, ExchangeRegion, Producer, RingId};
use kernel_nic::xdp::{XdpLayout, XdpRings, XdpSend};
use kernel_nic::KernelDrop;
use twin_poll::{Idle, Policy, PollMode, Sources, Waiter};

use crate::worker::{code, control, WorkerError, BATCH, MAX_SLEEP};

/// How often a busy domain asks whether its socket is still bound.
pub const CHECK_EVERY: Duration = Duration::from_millis(100);

/// Runs the domain until `stop` is set or the interface goes away.
pub(crate) fn serve(
    socket: OwnedFd,
    umem: OwnedFd,
    layout: XdpLayout,
    xr: Arc<ExchangeRegion>,
    doorbells: (OwnedFd, OwnedFd),
    busy_poll: bool,
    stop: &AtomicBool,
) -> Result<(), WorkerError> {
    let result = XdpRings::map(socket, umem, layout)
        .map_err(WorkerError::Xdp)
        .and_then(|rings| {
            let slot = xr.geometry().slot_size as usize;
            let mut d = XdpDomain {
                to_nic: Consumer::new(xr.clone(), RingId::ToNic),
                from_nic: Producer::new(xr.clone(), RingId::FromNic),
                xr: xr.clone(),
                rings,
                doorbell_in: doorbells.0,
                doorbell_out: doorbells.1,
                rx_buf: vec![0; kernel_nic::xdp::FRAME_SIZE as usize],
                tx_buf: vec![0; slot],
                counts: XdpCounts::default(),
            };
            xr.set_status(DdStatus {
                state: DdState::Running,
                code: 0,
            });
            tracing::info!("driver domain running (AF_XDP socket)");
            d.run(stop, busy_poll)
        });
    let failed = match &result {
        Ok(()) => None,
        Err(WorkerError::NicGone) => Some(code::NIC_GONE),
        Err(WorkerError::Xdp(_)) => Some(code::DEVICE_IO),
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

/// What the domain counts (reported in control words).
#[derive(Debug, Default)]
struct XdpCounts {
    /// Frames from the switch with no transmit chunk free.
    kernel_full: u64,
    /// Frames from the kernel larger than an exchange slot.
    too_big: u64,
    /// Frames from the kernel with `from_nic` full (not expected: no more are
    /// taken than there are free slots).
    ring_full: u64,
    /// Frames from the switch larger than a chunk.
    too_long: u64,
}

struct XdpDomain {
    xr: Arc<ExchangeRegion>,
    to_nic: Consumer,
    from_nic: Producer,
    rings: XdpRings,
    doorbell_in: OwnedFd,
    doorbell_out: OwnedFd,
    rx_buf: Vec<u8>,
    tx_buf: Vec<u8>,
    counts: XdpCounts,
}

fn ring(fd: &OwnedFd) {
    let _ = rustix::io::write(fd, &1u64.to_ne_bytes());
}

fn drain(fd: &OwnedFd) {
    let mut b = [0u8; 8];
    let _ = rustix::io::read(fd, &mut b);
}

fn gone(e: std::io::Error) -> WorkerError {
    tracing::warn!(error = %e, "the interface is gone");
    WorkerError::NicGone
}

impl XdpDomain {
    fn run(&mut self, stop: &AtomicBool, busy_poll: bool) -> Result<(), WorkerError> {
        let mode = if busy_poll {
            PollMode::Busy
        } else {
            PollMode::Event
        };
        let mut waiter = Waiter::new(mode, Policy::new(MAX_SLEEP).without_spin_hint());
        let mut checked = Instant::now();
        while !stop.load(Ordering::Relaxed) {
            self.xr.beat();
            if let Some(f) = crate::fault::requested(&self.xr) {
                crate::fault::commit(&self.xr, &mut self.from_nic, self.rings.fd(), f);
            }
            if checked.elapsed() >= CHECK_EVERY {
                self.rings.check_bound().map_err(gone)?;
                checked = Instant::now();
            }
            if self.move_frames()? > 0 {
                waiter.work();
                continue;
            }
            if matches!(waiter.idle(self)?, Idle::Woken | Idle::TimedOut) {
                drain(&self.doorbell_in);
                self.rings.check_bound().map_err(gone)?;
                checked = Instant::now();
            }
        }
        Ok(())
    }

    /// One batch each way; returns the frames handled (moved or dropped).
    fn move_frames(&mut self) -> Result<usize, WorkerError> {
        let XdpDomain {
            to_nic,
            from_nic,
            rings,
            rx_buf,
            tx_buf,
            counts,
            ..
        } = self;
        let sent = to_nic
            .poll(BATCH, |frame| {
                let n = frame.read_prefix(tx_buf);
                match rings.send(&tx_buf[..n]) {
                    XdpSend::Queued => {}
                    XdpSend::Full => counts.kernel_full += 1,
                    XdpSend::TooLong => counts.too_long += 1,
                }
            })
            .map_err(WorkerError::Ring)?;
        if sent > 0 || rings.tx_waiting() {
            rings.kick().map_err(gone)?;
        }
        if sent > 0 && to_nic.needs_notify() {
            ring(&self.doorbell_out);
        }
        let room = from_nic.available().map_err(WorkerError::Ring)?.min(BATCH);
        let bad_before = rings.bad_descriptors();
        let mut got = 0;
        let mut failed = None;
        let passed = if room > 0 {
            rings.recv(rx_buf, room, |frame| {
                if failed.is_some() {
                    return;
                }
                match from_nic.reserve() {
                    Ok(Some(slot)) if frame.len() <= slot.capacity() as usize => {
                        slot.frame().write_prefix(frame);
                        match slot.commit(frame.len()) {
                            Ok(()) => got += 1,
                            Err(e) => failed = Some(e),
                        }
                    }
                    Ok(Some(_)) => counts.too_big += 1,
                    Ok(None) => counts.ring_full += 1,
                    Err(e) => failed = Some(e),
                }
            })
        } else {
            0
        };
        if let Some(e) = failed {
            return Err(WorkerError::Ring(e));
        }
        if got > 0 {
            from_nic.publish();
            if from_nic.needs_notify() {
                ring(&self.doorbell_out);
            }
        }
        let bad = (rings.bad_descriptors() - bad_before) as usize;
        let handled = sent + passed + bad;
        if handled > 0 {
            self.report_counts();
        }
        Ok(handled)
    }

    fn report_counts(&self) {
        let c = &self.counts;
        let set = |i, v| {
            let _ = self.xr.set_control(i, v);
        };
        set(control::NIC_TX_RING_FULL, c.kernel_full);
        set(control::FROM_NIC_TOO_BIG, c.too_big);
        set(control::FROM_NIC_RING_FULL, c.ring_full);
        set(
            control::KERNEL_DROPS + KernelDrop::TooLong as usize,
            c.too_long,
        );
        set(
            control::KERNEL_DROPS + KernelDrop::BadHeader as usize,
            self.rings.bad_descriptors(),
        );
    }
}

/// What an idle domain waits on: the switch's doorbell and the socket (readable
/// when frames were received); notifications asked on `to_nic`.
impl Sources for XdpDomain {
    fn wake_fds(&self, add: &mut dyn FnMut(RawFd)) {
        add(self.doorbell_in.as_raw_fd());
        add(self.rings.fd().as_raw_fd());
    }

    fn set_notify(&mut self, on: bool) -> bool {
        on && self.to_nic.arm_notify()
    }
}
