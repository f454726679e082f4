//! A driver domain for an AF_XDP socket: frames move between the exchange rings
//! and the socket's UMEM and rings on one queue of an interface. The switch
//! attached the redirect program and opened, registered and bound the socket;
//! the domain maps the UMEM and the rings ([`kernel_nic::xdp::XdpRings`], which
//! checks every index and descriptor the kernel writes), copies received frames
//! into `from_nic` slots and gives their chunks back, copies frames from `to_nic`
//! into free transmit chunks, and wakes the kernel with a `send` of nothing (the
//! one system call the kind adds to the sandbox, as AF_PACKET's). The loop around
//! it is [`crate::kernel_domain`]'s.
//!
//! A deleted interface unbinds the socket: the next look at it says so and the
//! domain ends; the switch attaches the program and opens a socket again for the
//! next domain once the interface exists.
//!
//! Limits: frames are copied through a buffer each way (no `unsafe` here); copy
//! mode; one queue; no offloads. Frames queued for transmission while the
//! interface is down go out when it is up again (the kernel owns them on the
//! ring). A descriptor or index the kernel gets wrong counts once as
//! `kernel_bad_header`.

use std::os::fd::BorrowedFd;

use kernel_nic::xdp::{XdpRings, XdpSend, FRAME_SIZE};
use kernel_nic::KernelDrop;

use crate::kernel_domain::{push_frame, Exchange, KernelQueue, RxDrops};
use crate::worker::{control, WorkerError, BATCH};

/// The mapped socket and what the domain counts of it.
pub(crate) struct XdpDomain {
    rings: XdpRings,
    rx_buf: Vec<u8>,
    tx_buf: Vec<u8>,
    /// Frames from the switch with no transmit chunk free.
    kernel_full: u64,
    /// Frames from the kernel not given to the switch.
    rx_drops: RxDrops,
    /// Frames from the switch larger than a chunk.
    too_long: u64,
}

impl XdpDomain {
    /// A domain over `rings` whose exchange slots hold `slot` bytes.
    pub(crate) fn new(rings: XdpRings, slot: usize) -> XdpDomain {
        XdpDomain {
            rings,
            rx_buf: vec![0; FRAME_SIZE as usize],
            tx_buf: vec![0; slot],
            kernel_full: 0,
            rx_drops: RxDrops::default(),
            too_long: 0,
        }
    }

    fn report(&self, x: &Exchange) {
        x.report(control::NIC_TX_RING_FULL, self.kernel_full);
        x.report(control::FROM_NIC_TOO_BIG, self.rx_drops.too_big);
        x.report(control::FROM_NIC_RING_FULL, self.rx_drops.ring_full);
        x.report(
            control::KERNEL_DROPS + KernelDrop::TooLong as usize,
            self.too_long,
        );
        x.report(
            control::KERNEL_DROPS + KernelDrop::BadHeader as usize,
            self.rings.bad_descriptors(),
        );
    }
}

fn gone(e: std::io::Error) -> WorkerError {
    tracing::warn!(error = %e, "the interface is gone");
    WorkerError::NicGone
}

impl KernelQueue for XdpDomain {
    const WHAT: &'static str = "AF_XDP socket";

    fn move_frames(&mut self, x: &mut Exchange) -> Result<usize, WorkerError> {
        let XdpDomain {
            rings,
            rx_buf,
            tx_buf,
            kernel_full,
            rx_drops,
            too_long,
        } = self;
        let sent = x
            .to_nic
            .poll(BATCH, |frame| {
                let n = frame.read_prefix(tx_buf);
                match rings.send(&tx_buf[..n]) {
                    XdpSend::Queued => {}
                    XdpSend::Full => *kernel_full += 1,
                    XdpSend::TooLong => *too_long += 1,
                }
            })
            .map_err(WorkerError::Ring)?;
        // Also without new frames: the kernel transmits a bounded batch per call.
        if sent > 0 || rings.tx_waiting() {
            rings.kick().map_err(gone)?;
        }
        x.took(sent);
        let room = x
            .from_nic
            .available()
            .map_err(WorkerError::Ring)?
            .min(BATCH);
        let bad_before = rings.bad_descriptors();
        let (mut got, mut failed) = (0, None);
        let from_nic = &mut x.from_nic;
        let passed = if room > 0 {
            rings.recv(rx_buf, room, |frame| {
                if failed.is_some() {
                    return;
                }
                match push_frame(from_nic, frame, rx_drops) {
                    Ok(pushed) => got += usize::from(pushed),
                    Err(e) => failed = Some(e),
                }
            })
        } else {
            0
        };
        if let Some(e) = failed {
            return Err(WorkerError::Ring(e));
        }
        x.committed(got);
        let bad = (rings.bad_descriptors() - bad_before) as usize;
        let handled = sent + passed + bad;
        if handled > 0 {
            self.report(x);
        }
        Ok(handled)
    }

    /// Whether the socket is still bound (a deleted interface unbinds it).
    fn check(&mut self, _x: &Exchange) -> Result<(), WorkerError> {
        self.rings.check_bound().map_err(gone)
    }

    fn fd(&self) -> BorrowedFd<'_> {
        self.rings.fd()
    }
}
