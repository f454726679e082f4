//! A driver domain for a TAP device: the translation module between the exchange
//! rings and the host kernel's TAP queue. The kernel's own driver does the device
//! work; this loop moves frames both ways with `readv` / `writev` on the one
//! descriptor the switch handed over ([`kernel_nic::TapQueue`], which checks every
//! frame the kernel hands over), counts what it drops by reason in the exchange
//! region's control words, beats the heartbeat, and, when there is nothing to do,
//! sleeps in epoll on the switch's doorbell and the TAP descriptor
//! ([`twin_poll::Waiter`]).
//!
//! A frame from the kernel is read only when a `from_nic` slot is free: while the
//! switch is behind, frames wait in the kernel's queue (which drops and counts
//! beyond its length, `tx_dropped` of the interface), not here.
//!
//! Limits: frames from the kernel are read into a buffer and copied into their
//! slot (reading straight into shared memory would take `unsafe` code, which this
//! crate does not have); one queue; no offloads; no twin (a TAP's fast path is
//! system calls, there are no shared rings a switch-side instance could run over).

use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use exchange::{Consumer, DdState, DdStatus, ExchangeRegion, Producer, RingId};
use kernel_nic::{KernelDrop, Recv, Send, TapIoError, TapQueue};
use twin_poll::{Idle, Policy, PollMode, Sources, Waiter};

use crate::worker::{code, control, WorkerError, BATCH, MAX_SLEEP};

/// Runs the domain until `stop` is set or the device goes away.
pub(crate) fn serve(
    q: TapQueue,
    xr: Arc<ExchangeRegion>,
    doorbell_in: OwnedFd,
    doorbell_out: OwnedFd,
    busy_poll: bool,
    stop: &AtomicBool,
) -> Result<(), WorkerError> {
    // One byte more than a slot holds: a frame that fills the buffer may have been
    // cut by the kernel (TapQueue::recv drops it).
    let slot = xr.geometry().slot_size as usize;
    let mut d = TapDomain {
        to_nic: Consumer::new(xr.clone(), RingId::ToNic),
        from_nic: Producer::new(xr.clone(), RingId::FromNic),
        xr: xr.clone(),
        q,
        doorbell_in,
        doorbell_out,
        rx_buf: vec![0; slot + 1],
        tx_buf: vec![0; slot],
        counts: TapCounts::default(),
    };
    xr.set_status(DdStatus {
        state: DdState::Running,
        code: 0,
    });
    tracing::info!("driver domain running (TAP device)");
    let result = d.run(stop, busy_poll);
    let failed = match &result {
        Ok(()) => None,
        Err(WorkerError::NicGone) => Some(code::NIC_GONE),
        Err(WorkerError::Tap(_)) => Some(code::DEVICE_IO),
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
struct TapCounts {
    /// Frames from the switch the kernel could not take now.
    kernel_full: u64,
    /// Frames from the kernel larger than an exchange slot.
    too_big: u64,
    /// Frames refused by reason, in the order of [`KernelDrop::ALL`].
    refused: [u64; KernelDrop::ALL.len()],
}

struct TapDomain {
    xr: Arc<ExchangeRegion>,
    to_nic: Consumer,
    from_nic: Producer,
    q: TapQueue,
    doorbell_in: OwnedFd,
    doorbell_out: OwnedFd,
    rx_buf: Vec<u8>,
    tx_buf: Vec<u8>,
    counts: TapCounts,
}

fn ring(fd: &OwnedFd) {
    let _ = rustix::io::write(fd, &1u64.to_ne_bytes());
}

fn drain(fd: &OwnedFd) {
    let mut b = [0u8; 8];
    let _ = rustix::io::read(fd, &mut b);
}

fn io_error(e: TapIoError) -> WorkerError {
    match e {
        TapIoError::Gone => WorkerError::NicGone,
        e => WorkerError::Tap(e),
    }
}

impl TapDomain {
    fn run(&mut self, stop: &AtomicBool, busy_poll: bool) -> Result<(), WorkerError> {
        let mode = if busy_poll {
            PollMode::Busy
        } else {
            PollMode::Event
        };
        let mut waiter = Waiter::new(mode, Policy::new(MAX_SLEEP).without_spin_hint());
        while !stop.load(Ordering::Relaxed) {
            self.xr.beat();
            if let Some(f) = crate::fault::requested(&self.xr) {
                crate::fault::commit(&self.xr, &mut self.from_nic, self.q.as_fd(), f);
            }
            if self.move_frames()? > 0 {
                waiter.work();
                continue;
            }
            if matches!(waiter.idle(self)?, Idle::Woken | Idle::TimedOut) {
                drain(&self.doorbell_in);
            }
        }
        Ok(())
    }

    /// One batch each way; returns the frames handled (moved or dropped).
    fn move_frames(&mut self) -> Result<usize, WorkerError> {
        let TapDomain {
            to_nic,
            from_nic,
            q,
            rx_buf,
            tx_buf,
            counts,
            ..
        } = self;
        // Switch -> kernel. After a hard error (the device deleted) the rest of the
        // batch is taken and not sent: the domain ends right after, and those
        // frames (at most one batch) are lost with it.
        let mut failed = None;
        let sent = to_nic
            .poll(BATCH, |frame| {
                if failed.is_some() {
                    return;
                }
                let n = frame.read_prefix(tx_buf);
                if n < frame.len() {
                    // Cannot happen: the buffer is a slot's size.
                    counts.refused[KernelDrop::TooLong as usize] += 1;
                    return;
                }
                match q.send(&tx_buf[..n]) {
                    Ok(Send::Sent) => {}
                    Ok(Send::Full) => counts.kernel_full += 1,
                    Ok(Send::Dropped(why)) => counts.refused[why as usize] += 1,
                    Err(e) => failed = Some(e),
                }
            })
            .map_err(WorkerError::Ring)?;
        if let Some(e) = failed {
            return Err(io_error(e));
        }
        if sent > 0 && to_nic.needs_notify() {
            ring(&self.doorbell_out);
        }
        // Kernel -> switch.
        let mut got = 0;
        let mut refused = 0;
        for _ in 0..BATCH {
            let Some(slot) = from_nic.reserve().map_err(WorkerError::Ring)? else {
                break;
            };
            match q.recv(rx_buf).map_err(io_error)? {
                Recv::Frame(n) if n > slot.capacity() as usize => {
                    counts.too_big += 1;
                    refused += 1;
                }
                Recv::Frame(n) => {
                    slot.frame().write_prefix(&rx_buf[..n]);
                    slot.commit(n).map_err(WorkerError::Ring)?;
                    got += 1;
                }
                Recv::Empty => break,
                Recv::Dropped(why) => {
                    counts.refused[why as usize] += 1;
                    refused += 1;
                }
            }
        }
        if got > 0 {
            from_nic.publish();
            if from_nic.needs_notify() {
                ring(&self.doorbell_out);
            }
        }
        let handled = sent + got + refused;
        if handled > 0 {
            self.report_counts();
        }
        Ok(handled)
    }

    fn report_counts(&self) {
        let c = &self.counts;
        let _ = self
            .xr
            .set_control(control::NIC_TX_RING_FULL, c.kernel_full);
        let _ = self.xr.set_control(control::FROM_NIC_TOO_BIG, c.too_big);
        for (i, v) in c.refused.iter().enumerate() {
            let _ = self.xr.set_control(control::KERNEL_DROPS + i, *v);
        }
    }
}

/// What an idle TAP domain waits on: the switch's doorbell and the TAP descriptor
/// (readable when the kernel has a frame); notifications asked on `to_nic`.
impl Sources for TapDomain {
    fn wake_fds(&self, add: &mut dyn FnMut(RawFd)) {
        add(self.doorbell_in.as_raw_fd());
        add(self.q.as_fd().as_raw_fd());
    }

    fn set_notify(&mut self, on: bool) -> bool {
        on && self.to_nic.arm_notify()
    }
}
