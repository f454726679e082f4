//! A driver domain for an AF_PACKET socket: frames move between the exchange
//! rings and the socket's TPACKET_V3 rings, which the domain maps
//! ([`kernel_nic::packet`]). Receive blocks are read through their checked walk,
//! transmit slots filled, and the kernel woken with one `send` of nothing per
//! batch (the only system call the kind adds to the sandbox, with its length
//! checked to be 0). The loop around it is [`crate::kernel_domain`]'s.
//!
//! The interface's state: while it is down the kernel keeps transmit frames, and
//! the domain takes them back and counts them (`kernel_link_down`); a deleted
//! interface ends the domain (the kernel says so to the probe that follows an
//! error noted on the socket); the switch then opens a new socket for the next
//! domain once the interface exists again.
//!
//! A receive block is read only as far as `from_nic` has free slots, the rest
//! later: while the switch is behind, frames wait in the kernel's ring (which
//! drops and counts beyond it, `tp_drops`).
//!
//! Limits: frames are copied through a buffer each way (reading the mapped rings
//! straight into shared memory would take `unsafe` code, which this crate does not
//! have); one queue (no fanout); no offloads. A malformed receive block counts
//! once as `kernel_bad_header`, whatever it held.

use std::os::fd::BorrowedFd;

use kernel_nic::packet::{Kick, Rings, TxSlot};
use kernel_nic::KernelDrop;

use crate::kernel_domain::{push_frame, Exchange, KernelQueue, RxDrops};
use crate::worker::{control, WorkerError, BATCH};

/// The mapped rings and what the domain counts of them.
pub(crate) struct PacketDomain {
    rings: Rings,
    rx_buf: Vec<u8>,
    tx_buf: Vec<u8>,
    /// Frames from the switch with every transmit slot still the kernel's.
    kernel_full: u64,
    /// Frames from the kernel not given to the switch.
    rx_drops: RxDrops,
    /// Frames dropped by reason, in the order of [`KernelDrop::ALL`]
    /// (`Refused` is the rings' own count).
    dropped: [u64; KernelDrop::ALL.len()],
}

impl PacketDomain {
    /// A domain over `rings` whose exchange slots hold `slot` bytes.
    pub(crate) fn new(rings: Rings, slot: usize) -> PacketDomain {
        PacketDomain {
            rings,
            // One byte more than a slot holds: a frame that fills it is too big.
            rx_buf: vec![0; slot + 1],
            tx_buf: vec![0; slot],
            kernel_full: 0,
            rx_drops: RxDrops::default(),
            dropped: [0; KernelDrop::ALL.len()],
        }
    }

    fn count_kick(&mut self, k: Kick) {
        if let Kick::LinkDown(n) = k {
            self.dropped[KernelDrop::LinkDown as usize] += u64::from(n);
        }
    }

    fn report(&mut self, x: &Exchange) {
        self.dropped[KernelDrop::Refused as usize] = self.rings.tx_refused();
        x.report(control::NIC_TX_RING_FULL, self.kernel_full);
        x.report(control::FROM_NIC_TOO_BIG, self.rx_drops.too_big);
        x.report(control::FROM_NIC_RING_FULL, self.rx_drops.ring_full);
        for (i, v) in self.dropped.iter().enumerate() {
            x.report(control::KERNEL_DROPS + i, *v);
        }
    }
}

fn gone(e: std::io::Error) -> WorkerError {
    tracing::warn!(error = %e, "the interface is gone");
    WorkerError::NicGone
}

impl KernelQueue for PacketDomain {
    const WHAT: &'static str = "AF_PACKET socket";

    fn move_frames(&mut self, x: &mut Exchange) -> Result<usize, WorkerError> {
        // Switch -> kernel: into the transmit slots, then one wake-up.
        let PacketDomain {
            rings,
            tx_buf,
            kernel_full,
            dropped,
            ..
        } = self;
        let sent = x
            .to_nic
            .poll(BATCH, |frame| {
                let n = frame.read_prefix(tx_buf);
                match rings.send(&tx_buf[..n]) {
                    TxSlot::Queued => {}
                    TxSlot::Full => *kernel_full += 1,
                    TxSlot::TooLong => dropped[KernelDrop::TooLong as usize] += 1,
                }
            })
            .map_err(WorkerError::Ring)?;
        if sent > 0 {
            let k = self.rings.kick().map_err(gone)?;
            self.count_kick(k);
        }
        x.took(sent);
        // Kernel -> switch: as many frames as `from_nic` has room for.
        let room = x
            .from_nic
            .available()
            .map_err(WorkerError::Ring)?
            .min(BATCH);
        let (mut got, mut failed) = (0, None);
        let PacketDomain {
            rings,
            rx_buf,
            rx_drops,
            dropped,
            ..
        } = self;
        let from_nic = &mut x.from_nic;
        let walk = if room > 0 {
            rings.poll_block(rx_buf, room, |frame| {
                if failed.is_some() {
                    return;
                }
                match push_frame(from_nic, frame, rx_drops) {
                    Ok(pushed) => got += usize::from(pushed),
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
            dropped[KernelDrop::TooShort as usize] += u64::from(w.runts);
            dropped[KernelDrop::TooLong as usize] += u64::from(w.truncated);
            if w.malformed.is_some() {
                dropped[KernelDrop::BadHeader as usize] += 1;
            }
            visited =
                (w.frames + w.runts + w.truncated) as usize + usize::from(w.malformed.is_some());
        }
        x.committed(got);
        let handled = sent + visited;
        if handled > 0 {
            self.report(x);
        }
        Ok(handled)
    }

    /// Reads the error the kernel noted on the socket, if any; after one, asks
    /// whether the interface is still there (the error of a deleted interface and
    /// of one that went down are the same).
    fn check(&mut self, x: &Exchange) -> Result<(), WorkerError> {
        if self.rings.take_error().is_ok() {
            return Ok(());
        }
        let k = self.rings.probe().map_err(gone)?;
        self.count_kick(k);
        self.report(x);
        Ok(())
    }

    fn fd(&self) -> BorrowedFd<'_> {
        self.rings.fd()
    }
}
