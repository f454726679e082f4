//! A driver domain for an AF_XDP socket: frames move between the exchange rings
//! and the socket's UMEM and rings on one queue of an interface. The switch
//! attached the redirect program and opened, registered and bound the socket;
//! the domain maps the driver's space (state memfd, the four rings, the UMEM:
//! `kernel_nic::xdp::map_space`) and runs the AF_XDP driver (crate
//! `af-xdp-driver`, which checks every index and descriptor the kernel writes)
//! over the direct environment: received frames are copied from their chunks
//! into `from_nic` slots, frames from `to_nic` into free transmit chunks, and
//! the kernel is woken with a `send` of nothing (the driver's doorbell; the one
//! system call the kind adds to the sandbox, as AF_PACKET's). The loop around
//! it is [`crate::kernel_domain`]'s.
//!
//! The same driver, derived, is the uplink's twin in the switch, over the same
//! space mapped there.
//!
//! A deleted interface unbinds the socket: the next look at it says so and the
//! domain ends; the switch attaches the program and opens a socket again for the
//! next domain once the interface exists.
//!
//! Limits: copy mode; one queue; no offloads. Frames queued for transmission
//! while the interface is down go out when it is up again (the kernel owns them
//! on the ring). Descriptors or indexes the kernel gets wrong count as
//! `kernel_bad_header`.

use std::fs::File;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::Arc;

use driver_host::env::{Bell, DirectEnv};
use driver_host::region::Region;
use driver_host::{TxOutcome, XdpDriverStats, XdpFastPath};
use kernel_nic::xdp::XdpLayout;
use kernel_nic::KernelDrop;

use crate::kernel_domain::{push_segments, Exchange, KernelQueue, RxDrops};
use crate::worker::{control, WorkerError, BATCH};

/// The mapped socket, its driver, and what the domain counts of it.
pub(crate) struct XdpDomain {
    socket: Arc<OwnedFd>,
    fp: XdpFastPath<DirectEnv>,
    /// Frames from the kernel not given to the switch.
    rx_drops: RxDrops,
    /// Frames from the switch larger than a chunk.
    too_long: u64,
}

impl XdpDomain {
    /// Maps the space of `socket` and initialises the driver in it (the receive
    /// half of the UMEM goes on the fill ring).
    pub(crate) fn open(
        socket: OwnedFd,
        umem: OwnedFd,
        state: OwnedFd,
        layout: XdpLayout,
    ) -> Result<XdpDomain, WorkerError> {
        let space =
            kernel_nic::xdp::map_space(&layout, state.as_fd(), socket.as_fd(), umem.as_fd())
                .map_err(WorkerError::Xdp)?;
        let region = Region::from_mapping(File::from(state), space)
            .map_err(|e| WorkerError::Driver(driver_host::Error::Region(e)))?;
        let socket = Arc::new(socket);
        // Queue 0 (the fill ring's wake-up) is never rung in copy mode.
        let bells = vec![
            Bell::XdpSocket(socket.clone()),
            Bell::XdpSocket(socket.clone()),
        ];
        let env = DirectEnv::with_bells(Arc::new(region), bells);
        let fp = XdpFastPath::init(env, layout).map_err(WorkerError::XdpDriver)?;
        Ok(XdpDomain {
            socket,
            fp,
            rx_drops: RxDrops::default(),
            too_long: 0,
        })
    }

    fn report(&self, x: &Exchange, s: &XdpDriverStats) {
        x.report(control::NIC_TX_RING_FULL, s.tx_no_chunk);
        x.report(control::FROM_NIC_TOO_BIG, self.rx_drops.too_big);
        x.report(control::FROM_NIC_RING_FULL, self.rx_drops.ring_full);
        x.report(
            control::KERNEL_DROPS + KernelDrop::TooLong as usize,
            self.too_long + s.tx_too_long,
        );
        x.report(
            control::KERNEL_DROPS + KernelDrop::TooShort as usize,
            s.rx_too_short,
        );
        x.report(
            control::KERNEL_DROPS + KernelDrop::BadHeader as usize,
            s.kernel_errors + s.bad_state,
        );
    }

    fn failed(&self) -> Result<(), WorkerError> {
        match self.fp.failure() {
            Some(e) => Err(WorkerError::XdpDriver(e)),
            None => Ok(()),
        }
    }
}

impl KernelQueue for XdpDomain {
    const WHAT: &'static str = "AF_XDP socket";

    fn move_frames(&mut self, x: &mut Exchange) -> Result<usize, WorkerError> {
        let (fp, too_long) = (&mut self.fp, &mut self.too_long);
        let sent = x
            .to_nic
            .poll(BATCH, |frame| {
                // No room is counted by the driver (`tx_no_chunk`), a failure
                // below.
                if fp.send(frame) == TxOutcome::TooBig {
                    *too_long += 1;
                }
            })
            .map_err(WorkerError::Ring)?;
        // Also without new frames: the kernel may have been busy.
        if sent > 0 || fp.tx_waiting() {
            fp.flush();
        }
        x.took(sent);
        let room = x
            .from_nic
            .available()
            .map_err(WorkerError::Ring)?
            .min(BATCH);
        let before = fp.stats();
        let (mut got, mut ring_failed) = (0, None);
        let (from_nic, rx_drops) = (&mut x.from_nic, &mut self.rx_drops);
        let passed = if room > 0 {
            fp.rx_burst(room, |frame| {
                if ring_failed.is_none() {
                    match push_segments(from_nic, frame, rx_drops) {
                        Ok(pushed) => got += usize::from(pushed),
                        Err(e) => ring_failed = Some(e),
                    }
                }
            })
        } else {
            0
        };
        if let Some(e) = ring_failed {
            return Err(WorkerError::Ring(e));
        }
        self.failed()?;
        x.committed(got);
        let after = self.fp.stats();
        let dropped = (after.kernel_errors + after.rx_too_short)
            - (before.kernel_errors + before.rx_too_short);
        let handled = sent + passed + dropped as usize;
        if handled > 0 {
            self.report(x, &after);
        }
        Ok(handled)
    }

    /// Whether the socket is still bound (a deleted interface unbinds it).
    fn check(&mut self, _x: &Exchange) -> Result<(), WorkerError> {
        kernel_nic::xdp::check_bound(self.socket.as_fd()).map_err(|e| {
            tracing::warn!(error = %e, "the interface is gone");
            WorkerError::NicGone
        })
    }

    fn fd(&self) -> BorrowedFd<'_> {
        self.socket.as_fd()
    }

    fn release(&mut self) -> Result<bool, WorkerError> {
        self.fp.sync();
        self.failed()?;
        Ok(true)
    }

    fn reacquire(&mut self) -> Result<(), WorkerError> {
        self.fp.reattach().map_err(WorkerError::XdpDriver)
    }

    fn dispatch_upcall(&mut self, msg: &driver_env::UpcallMsg) -> Result<&'static str, String> {
        self.fp.dispatch_upcall(msg).map_err(|e| e.to_string())
    }

    fn reset_requested(&self) -> bool {
        self.fp.reset_requested()
    }

    fn report_shared(&mut self, x: &Exchange) {
        let s = self.fp.stats();
        self.report(x, &s);
    }

    /// Every chunk-table word (holders and free stack) made nonsense.
    fn scribble_shared_state(&mut self) {
        use driver_env::DriverMem;
        let l = *self.fp.layout();
        let env = self.fp.env();
        for c in 0..u64::from(l.cfg.frames) {
            let _ = env.write_u32(l.holders + 4 * c, 0x5157_4e54);
        }
        for i in 0..u64::from(l.entries) {
            let _ = env.write_u32(l.free_stack + 4 * i, u32::MAX - i as u32);
        }
    }
}
