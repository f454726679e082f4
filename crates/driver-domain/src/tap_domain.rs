//! A driver domain for a TAP device: frames move both ways with `readv` /
//! `writev` on the one descriptor the switch handed over ([`kernel_nic::TapQueue`],
//! which checks every frame the kernel hands over). The loop around it is
//! [`crate::kernel_domain`]'s.
//!
//! Limits: frames from the kernel are read into a buffer and copied into their
//! slot (reading straight into shared memory would take `unsafe` code, which this
//! crate does not have); one queue; no offloads; no twin (a TAP's fast path is
//! system calls, there are no shared rings a switch-side instance could run over).
//! A deleted device is seen by the next read or write.

use std::os::fd::{AsFd, BorrowedFd};

use kernel_nic::{KernelDrop, Recv, Send, TapIoError, TapQueue};

use crate::kernel_domain::{Exchange, KernelQueue};
use crate::worker::{control, WorkerError, BATCH};

/// A TAP queue and what the domain counts of it (reported in control words).
pub(crate) struct TapDomain {
    q: TapQueue,
    /// One byte more than a slot holds: a frame that fills it may have been cut
    /// by the kernel (`TapQueue::recv` drops it).
    rx_buf: Vec<u8>,
    tx_buf: Vec<u8>,
    /// Frames from the switch the kernel could not take now.
    kernel_full: u64,
    /// Frames from the kernel larger than an exchange slot.
    too_big: u64,
    /// Frames refused by reason, in the order of [`KernelDrop::ALL`].
    refused: [u64; KernelDrop::ALL.len()],
}

impl TapDomain {
    /// A domain over `q` whose exchange slots hold `slot` bytes.
    pub(crate) fn new(q: TapQueue, slot: usize) -> TapDomain {
        TapDomain {
            q,
            rx_buf: vec![0; slot + 1],
            tx_buf: vec![0; slot],
            kernel_full: 0,
            too_big: 0,
            refused: [0; KernelDrop::ALL.len()],
        }
    }

    fn report(&self, x: &Exchange) {
        x.report(control::NIC_TX_RING_FULL, self.kernel_full);
        x.report(control::FROM_NIC_TOO_BIG, self.too_big);
        for (i, v) in self.refused.iter().enumerate() {
            x.report(control::KERNEL_DROPS + i, *v);
        }
    }
}

fn io_error(e: TapIoError) -> WorkerError {
    match e {
        TapIoError::Gone => WorkerError::NicGone,
        e => WorkerError::Tap(e),
    }
}

impl KernelQueue for TapDomain {
    const WHAT: &'static str = "TAP device";

    fn move_frames(&mut self, x: &mut Exchange) -> Result<usize, WorkerError> {
        let TapDomain {
            q,
            rx_buf,
            tx_buf,
            kernel_full,
            too_big,
            refused,
        } = self;
        // Switch -> kernel. After a hard error (the device deleted) the rest of the
        // batch is taken and not sent: the domain ends right after, and those
        // frames (at most one batch) are lost with it.
        let mut failed = None;
        let sent = x
            .to_nic
            .poll(BATCH, |frame| {
                if failed.is_some() {
                    return;
                }
                let n = frame.read_prefix(tx_buf);
                if n < frame.len() {
                    // Cannot happen: the buffer is a slot's size.
                    refused[KernelDrop::TooLong as usize] += 1;
                    return;
                }
                match q.send(&tx_buf[..n]) {
                    Ok(Send::Sent) => {}
                    Ok(Send::Full) => *kernel_full += 1,
                    Ok(Send::Dropped(why)) => refused[why as usize] += 1,
                    Err(e) => failed = Some(e),
                }
            })
            .map_err(WorkerError::Ring)?;
        if let Some(e) = failed {
            return Err(io_error(e));
        }
        x.took(sent);
        // Kernel -> switch, a frame only when a slot is free for it.
        let mut got = 0;
        let mut dropped = 0;
        for _ in 0..BATCH {
            let Some(slot) = x.from_nic.reserve().map_err(WorkerError::Ring)? else {
                break;
            };
            match q.recv(rx_buf).map_err(io_error)? {
                Recv::Frame(n) if n > slot.capacity() as usize => {
                    *too_big += 1;
                    dropped += 1;
                }
                Recv::Frame(n) => {
                    slot.frame().write_prefix(&rx_buf[..n]);
                    slot.commit(n).map_err(WorkerError::Ring)?;
                    got += 1;
                }
                Recv::Empty => break,
                Recv::Dropped(why) => {
                    refused[why as usize] += 1;
                    dropped += 1;
                }
            }
        }
        x.committed(got);
        let handled = sent + got + dropped;
        if handled > 0 {
            self.report(x);
        }
        Ok(handled)
    }

    fn check(&mut self, _x: &Exchange) -> Result<(), WorkerError> {
        // A deleted TAP device fails the next read or write (`TapIoError::Gone`).
        Ok(())
    }

    fn fd(&self) -> BorrowedFd<'_> {
        self.q.as_fd()
    }
}
