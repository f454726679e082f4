//! A driver domain for an AF_PACKET socket: the translation module between the
//! exchange rings and the kernel's TPACKET_V3 rings of one interface. The switch
//! opened and bound the socket; this loop maps its rings ([`kernel_nic::packet`]),
//! reads the receive blocks through their checked walk, fills transmit slots and
//! wakes the kernel with one `send` of nothing per batch (the only system call the
//! kind adds to the sandbox, with its length checked to be 0), counts what it
//! drops by reason in the exchange region's control words, and beats the
//! heartbeat. When there is nothing to do it sleeps in epoll on the switch's
//! doorbell and the socket (readable when a block is handed over).
//!
//! The interface's state: while it is down the kernel keeps transmit frames, and
//! the domain takes them back and counts them (`kernel_link_down`); a deleted
//! interface ends the domain (the kernel says so to the probe that follows an
//! error noted on the socket, checked at least every [`CHECK_EVERY`]); the switch
//! then opens a new socket for the next domain once the interface exists again.
//!
//! A receive block is read only as far as `from_nic` has free slots, the rest
//! later: while the switch is behind, frames wait in the kernel's ring (which
//! drops and counts beyond it, `tp_drops`), not here.
//!
//! Limits: frames are copied through a buffer each way (reading the mapped rings
//! straight into shared memory would take `unsafe` code, which this crate does not
//! have); one queue (no fanout); no offloads. A malformed receive block counts
//! once as `kernel_bad_header`, whatever it held.

use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use exchange::{Consumer, DdState, DdStatus, ExchangeRegion, Producer, RingId};
use kernel_nic::packet::{Kick, RingGeometry, Rings, TxSlot};
use kernel_nic::KernelDrop;
use twin_poll::{Idle, Policy, PollMode, Sources, Waiter};

use crate::worker::{code, control, WorkerError, BATCH, MAX_SLEEP};

/// How often a busy domain looks for an error the kernel noted on the socket.
pub const CHECK_EVERY: Duration = Duration::from_millis(100);

/// Runs the domain until `stop` is set or the interface goes away.
pub(crate) fn serve(
    socket: OwnedFd,
    geometry: RingGeometry,
    xr: Arc<ExchangeRegion>,
    doorbell_in: OwnedFd,
    doorbell_out: OwnedFd,
    busy_poll: bool,
    stop: &AtomicBool,
) -> Result<(), WorkerError> {
    let result = Rings::map(socket, geometry)
        .map_err(WorkerError::Packet)
        .and_then(|rings| {
            let slot = xr.geometry().slot_size as usize;
            let mut d = RingDomain {
                to_nic: Consumer::new(xr.clone(), RingId::ToNic),
                from_nic: Producer::new(xr.clone(), RingId::FromNic),
                xr: xr.clone(),
                rings,
                doorbell_in,
                doorbell_out,
                // One byte more than a slot holds: a frame that fills it is too big.
                rx_buf: vec![0; slot + 1],
                tx_buf: vec![0; slot],
                counts: PacketCounts::default(),
            };
            xr.set_status(DdStatus {
                state: DdState::Running,
                code: 0,
            });
            tracing::info!("driver domain running (AF_PACKET socket)");
            d.run(stop, busy_poll)
        });
    let failed = match &result {
        Ok(()) => None,
        Err(WorkerError::NicGone) => Some(code::NIC_GONE),
        Err(WorkerError::Packet(_)) => Some(code::DEVICE_IO),
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
struct PacketCounts {
    /// Frames from the switch with every transmit slot still the kernel's.
    kernel_full: u64,
    /// Frames from the kernel larger than an exchange slot.
    too_big: u64,
    /// Frames from the kernel with `from_nic` full.
    ring_full: u64,
    /// Frames dropped by reason, in the order of [`KernelDrop::ALL`]
    /// (`Refused` is the rings' own count).
    dropped: [u64; KernelDrop::ALL.len()],
}

struct RingDomain {
    xr: Arc<ExchangeRegion>,
    to_nic: Consumer,
    from_nic: Producer,
    rings: Rings,
    doorbell_in: OwnedFd,
    doorbell_out: OwnedFd,
    rx_buf: Vec<u8>,
    tx_buf: Vec<u8>,
    counts: PacketCounts,
}

fn ring(fd: &OwnedFd) {
    let _ = rustix::io::write(fd, &1u64.to_ne_bytes());
}

fn drain(fd: &OwnedFd) {
    let mut b = [0u8; 8];
    let _ = rustix::io::read(fd, &mut b);
}

impl RingDomain {
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
                self.check_interface()?;
                checked = Instant::now();
            }
            if self.move_frames()? > 0 {
                waiter.work();
                continue;
            }
            if matches!(waiter.idle(self)?, Idle::Woken | Idle::TimedOut) {
                drain(&self.doorbell_in);
                // Woken by an error on the socket, perhaps: read it now, or epoll
                // reports it again and again.
                self.check_interface()?;
                checked = Instant::now();
            }
        }
        Ok(())
    }

    /// Reads the error the kernel noted on the socket, if any; after one, asks
    /// whether the interface is still there (the error of a deleted interface and
    /// of one that went down are the same).
    fn check_interface(&mut self) -> Result<(), WorkerError> {
        if self.rings.take_error().is_ok() {
            return Ok(());
        }
        match self.rings.probe() {
            Ok(k) => {
                self.count_kick(k);
                self.report_counts();
                Ok(())
            }
            Err(e) => {
                tracing::warn!(error = %e, "the interface is gone");
                Err(WorkerError::NicGone)
            }
        }
    }

    fn count_kick(&mut self, k: Kick) {
        if let Kick::LinkDown(n) = k {
            self.counts.dropped[KernelDrop::LinkDown as usize] += u64::from(n);
        }
    }

    /// One batch each way; returns the frames handled (moved or dropped).
    fn move_frames(&mut self) -> Result<usize, WorkerError> {
        let RingDomain {
            to_nic,
            from_nic,
            rings,
            rx_buf,
            tx_buf,
            counts,
            ..
        } = self;
        // Switch -> kernel: into the transmit slots, then one wake-up.
        let sent = to_nic
            .poll(BATCH, |frame| {
                let n = frame.read_prefix(tx_buf);
                if n < frame.len() {
                    // Cannot happen: the buffer is a slot's size.
                    counts.dropped[KernelDrop::TooLong as usize] += 1;
                    return;
                }
                match rings.send(&tx_buf[..n]) {
                    TxSlot::Queued => {}
                    TxSlot::Full => counts.kernel_full += 1,
                    TxSlot::TooLong => counts.dropped[KernelDrop::TooLong as usize] += 1,
                }
            })
            .map_err(WorkerError::Ring)?;
        if sent > 0 {
            match rings.kick() {
                Ok(k) => {
                    if let Kick::LinkDown(n) = k {
                        counts.dropped[KernelDrop::LinkDown as usize] += u64::from(n);
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "the interface is gone");
                    return Err(WorkerError::NicGone);
                }
            }
            if to_nic.needs_notify() {
                ring(&self.doorbell_out);
            }
        }
        // Kernel -> switch: as many frames as `from_nic` has room for.
        let room = from_nic.available().map_err(WorkerError::Ring)?.min(BATCH);
        let mut got = 0;
        let mut failed = None;
        let walk = if room > 0 {
            rings.poll_block(rx_buf, room, |frame| {
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
                    // Not expected: no more frames than free slots are visited.
                    Ok(None) => counts.ring_full += 1,
                    Err(e) => failed = Some(e),
                }
            })
        } else {
            None
        };
        if let Some(e) = failed {
            return Err(WorkerError::Ring(e));
        }
        let mut visited = 0;
        if let Some(w) = walk {
            counts.dropped[KernelDrop::TooShort as usize] += u64::from(w.runts);
            counts.dropped[KernelDrop::TooLong as usize] += u64::from(w.truncated);
            if w.malformed.is_some() {
                counts.dropped[KernelDrop::BadHeader as usize] += 1;
            }
            visited =
                (w.frames + w.runts + w.truncated) as usize + usize::from(w.malformed.is_some());
        }
        if got > 0 {
            from_nic.publish();
            if from_nic.needs_notify() {
                ring(&self.doorbell_out);
            }
        }
        let handled = sent + visited;
        if handled > 0 {
            self.report_counts();
        }
        Ok(handled)
    }

    fn report_counts(&mut self) {
        self.counts.dropped[KernelDrop::Refused as usize] = self.rings.tx_refused();
        let c = &self.counts;
        let _ = self
            .xr
            .set_control(control::NIC_TX_RING_FULL, c.kernel_full);
        let _ = self.xr.set_control(control::FROM_NIC_TOO_BIG, c.too_big);
        let _ = self
            .xr
            .set_control(control::FROM_NIC_RING_FULL, c.ring_full);
        for (i, v) in c.dropped.iter().enumerate() {
            let _ = self.xr.set_control(control::KERNEL_DROPS + i, *v);
        }
    }
}

/// What an idle domain waits on: the switch's doorbell and the socket (readable
/// when the kernel hands over a block, or has noted an error); notifications
/// asked on `to_nic`.
impl Sources for RingDomain {
    fn wake_fds(&self, add: &mut dyn FnMut(RawFd)) {
        add(self.doorbell_in.as_raw_fd());
        add(self.rings.fd().as_raw_fd());
    }

    fn set_notify(&mut self, on: bool) -> bool {
        on && self.to_nic.arm_notify()
    }
}
