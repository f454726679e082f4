//! A driver domain for a kernel socket with shared rings: AF_XDP (frames in a
//! UMEM, four rings on one queue of an interface) and AF_PACKET (TPACKET_V3
//! receive blocks and transmit slots). The switch opened, set up and bound the
//! socket (and for AF_XDP attached the redirect program); the domain maps the
//! driver's space (the state memfd and the socket's rings, and the UMEM:
//! `kernel_nic::xdp::map_space`, `kernel_nic::packet::map_space`) and runs the
//! kind's ring driver (crates `af-xdp-driver`, `af-packet-driver`, which check
//! every index, descriptor and block the kernel writes) over the direct
//! environment: received frames are copied from the driver's space into
//! `from_nic` slots, frames from `to_nic` into free transmit buffers, and the
//! kernel is woken with a `send` of nothing (the driver's doorbell; the one
//! system call these kinds add to the sandbox). The loop around it is
//! [`crate::kernel_domain`]'s.
//!
//! The same driver, derived, is the uplink's twin in the switch, over the same
//! space mapped there; while the switch runs it this domain only runs the
//! slow-path upcalls and watches the socket.
//!
//! The interface's state: a deleted interface unbinds an AF_XDP socket and
//! makes an AF_PACKET socket's `send` fail; the next look at it says so and the
//! domain ends; the switch opens a socket again for the next domain once the
//! interface exists. While an interface is down, AF_PACKET frames handed to the
//! kernel are taken back and counted (`kernel_link_down`); AF_XDP frames stay
//! on the kernel's ring and go out when it is up again.
//!
//! Limits: copy mode for AF_XDP; one queue; no offloads. Descriptors, indexes
//! or blocks the kernel gets wrong count as `kernel_bad_header`.

use std::fs::File;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::Arc;

use af_packet_driver::{AfPacketTwin, PacketStats};
use af_xdp_driver::{AfXdpTwin, XdpStats};
use driver_env::DriverMem;
use driver_host::env::{Bell, DirectEnv};
use driver_host::region::Region;
use driver_host::{PacketBell, RingDriver, RingFastPath, RingStats, TxOutcome};
use kernel_nic::packet::PacketLayout;
use kernel_nic::xdp::XdpLayout;
use kernel_nic::KernelDrop;
use vm_memory::MmapRegion;

use crate::kernel_domain::{push_segments, Exchange, KernelQueue, RxDrops};
use crate::worker::{control, WorkerError, BATCH};

/// What differs between the ring kinds, for the domain.
pub(crate) trait RingKind: RingDriver {
    /// For the log line.
    const SOCKET: &'static str;
    /// The driver's failure as the domain's.
    fn worker_error(e: Self::Error) -> WorkerError;
    /// Writes the counters into the exchange's control words.
    fn report(x: &Exchange, s: &Self::Stats, from_switch_too_long: u64);
    /// Frames from the kernel dropped so far (to count a batch's work).
    fn dropped_from_kernel(s: &Self::Stats) -> u64;
    /// Whether the interface is still there (at least every
    /// `kernel_domain::CHECK_EVERY`); `owner`: whether this domain runs the
    /// fast path now.
    fn check(d: &mut RingDomain<Self>, owner: bool) -> Result<(), WorkerError>;
    /// Injected fault `scribble-state`: the state a twin shares made nonsense.
    fn scribble(fp: &RingFastPath<DirectEnv, Self>);
}

/// The mapped socket, its driver, and what the domain counts of it.
pub(crate) struct RingDomain<D: RingKind> {
    socket: Arc<OwnedFd>,
    fp: RingFastPath<DirectEnv, D>,
    /// Whether this domain runs the fast path (not the switch).
    owner: bool,
    /// Frames from the kernel not given to the switch.
    rx_drops: RxDrops,
    /// Frames from the switch larger than a transmit buffer.
    too_long: u64,
}

impl<D: RingKind> RingDomain<D> {
    /// The driver initialised over `space` (the state memfd `state` is its
    /// first piece), ringing the kernel on `socket`.
    fn new(
        socket: Arc<OwnedFd>,
        state: OwnedFd,
        space: MmapRegion<()>,
        bell: impl Fn() -> Bell,
        packet_bell: Option<Arc<PacketBell>>,
        layout: D::Layout,
    ) -> Result<Self, WorkerError> {
        let region = Region::from_mapping(File::from(state), space)
            .map_err(|e| WorkerError::Driver(driver_host::Error::Region(e)))?;
        // Queue 0 (a fill ring's wake-up) is never rung in copy mode; queue 1 is
        // the transmit wake-up.
        let env = DirectEnv::with_bells(Arc::new(region), vec![bell(), bell()]);
        let fp = RingFastPath::init(env, layout, packet_bell).map_err(D::worker_error)?;
        Ok(RingDomain {
            socket,
            fp,
            owner: true,
            rx_drops: RxDrops::default(),
            too_long: 0,
        })
    }

    fn report(&self, x: &Exchange, s: &RingStats<D::Stats>) {
        x.report(control::FROM_NIC_TOO_BIG, self.rx_drops.too_big);
        x.report(control::FROM_NIC_RING_FULL, self.rx_drops.ring_full);
        D::report(x, &s.driver, self.too_long);
    }

    fn failed(&self) -> Result<(), WorkerError> {
        match self.fp.failure() {
            Some(e) => Err(D::worker_error(e)),
            None => Ok(()),
        }
    }
}

/// Opens the domain of an AF_XDP socket: maps its space and initialises the
/// driver in it (the receive half of the UMEM goes on the fill ring).
pub(crate) fn open_xdp(
    socket: OwnedFd,
    umem: OwnedFd,
    state: OwnedFd,
    layout: XdpLayout,
) -> Result<RingDomain<AfXdpTwin>, WorkerError> {
    let space = kernel_nic::xdp::map_space(&layout, state.as_fd(), socket.as_fd(), umem.as_fd())
        .map_err(WorkerError::Xdp)?;
    let socket = Arc::new(socket);
    let bell = || Bell::XdpSocket(socket.clone());
    RingDomain::new(socket.clone(), state, space, bell, None, layout)
}

/// Opens the domain of an AF_PACKET socket: maps its space and initialises the
/// driver in it.
pub(crate) fn open_packet(
    socket: OwnedFd,
    state: OwnedFd,
    layout: PacketLayout,
) -> Result<RingDomain<AfPacketTwin>, WorkerError> {
    let space = kernel_nic::packet::map_space(&layout, state.as_fd(), socket.as_fd())
        .map_err(WorkerError::Packet)?;
    let socket = Arc::new(socket);
    let bell = PacketBell::new(socket.clone());
    let bells = || Bell::PacketSocket(bell.clone());
    RingDomain::new(socket, state, space, bells, Some(bell.clone()), layout)
}

fn gone(e: std::io::Error) -> WorkerError {
    twin_log::warn_limited!(error = %e, "the interface is gone");
    WorkerError::NicGone
}

fn kernel_drop(x: &Exchange, why: KernelDrop, v: u64) {
    x.report(control::KERNEL_DROPS + why as usize, v);
}

impl RingKind for AfXdpTwin {
    const SOCKET: &'static str = "AF_XDP socket";

    fn worker_error(e: Self::Error) -> WorkerError {
        WorkerError::XdpDriver(e)
    }

    fn report(x: &Exchange, s: &XdpStats, from_switch_too_long: u64) {
        x.report(control::NIC_TX_RING_FULL, s.tx_no_chunk);
        kernel_drop(x, KernelDrop::TooLong, from_switch_too_long + s.tx_too_long);
        kernel_drop(x, KernelDrop::TooShort, s.rx_too_short);
        kernel_drop(x, KernelDrop::BadHeader, s.kernel_errors + s.bad_state);
    }

    fn dropped_from_kernel(s: &XdpStats) -> u64 {
        s.kernel_errors + s.rx_too_short
    }

    /// Whether the socket is still bound (a deleted interface unbinds it).
    fn check(d: &mut RingDomain<Self>, _owner: bool) -> Result<(), WorkerError> {
        kernel_nic::xdp::check_bound(d.socket.as_fd()).map_err(gone)
    }

    /// Every chunk-table word (holders and free stack) made nonsense.
    fn scribble(fp: &RingFastPath<DirectEnv, Self>) {
        let l = *fp.layout();
        let env = fp.env();
        for c in 0..u64::from(l.cfg.frames) {
            let _ = env.write_u32(l.holders + 4 * c, 0x5157_4e54);
        }
        for i in 0..u64::from(l.entries) {
            let _ = env.write_u32(l.free_stack + 4 * i, u32::MAX - i as u32);
        }
    }
}

impl RingKind for AfPacketTwin {
    const SOCKET: &'static str = "AF_PACKET socket";

    fn worker_error(e: Self::Error) -> WorkerError {
        WorkerError::PacketDriver(e)
    }

    fn report(x: &Exchange, s: &PacketStats, from_switch_too_long: u64) {
        x.report(control::NIC_TX_RING_FULL, s.tx_ring_full);
        kernel_drop(
            x,
            KernelDrop::TooLong,
            from_switch_too_long + s.tx_too_long + s.rx_truncated,
        );
        kernel_drop(x, KernelDrop::TooShort, s.rx_too_short);
        kernel_drop(x, KernelDrop::BadHeader, s.rx_bad_blocks + s.bad_state);
        kernel_drop(x, KernelDrop::LinkDown, s.tx_link_down);
        kernel_drop(x, KernelDrop::Refused, s.tx_refused);
    }

    fn dropped_from_kernel(s: &PacketStats) -> u64 {
        s.rx_bad_blocks + s.rx_truncated + s.rx_too_short
    }

    /// Clears the error the kernel noted on the socket, if any, and asks
    /// whether the interface is still there (a wake-up, which fails once it is
    /// deleted; the error noted on the socket cannot tell: an interface already
    /// down notes none when it goes away). A down interface's kept frames are
    /// taken back here only while this domain runs the fast path (the switch's
    /// instance hears of it from its own wake-ups).
    fn check(d: &mut RingDomain<Self>, owner: bool) -> Result<(), WorkerError> {
        let _ = kernel_nic::packet::take_error(d.socket.as_fd());
        let wake = kernel_nic::packet::wake_tx(d.socket.as_fd()).map_err(gone)?;
        if owner && wake == kernel_nic::packet::Wake::LinkDown {
            // The driver's flush takes them back once its bell hears the same.
            d.fp.flush();
        }
        Ok(())
    }

    /// Every transmit slot's status made one the kernel never writes.
    fn scribble(fp: &RingFastPath<DirectEnv, Self>) {
        let l = *fp.layout();
        let env = fp.env();
        for i in 0..l.tx_frames {
            let _ = env.write_u32(l.slot_addr(i) + 20, 0x5157_4e54);
        }
    }
}

impl<D: RingKind> KernelQueue for RingDomain<D> {
    const WHAT: &'static str = D::SOCKET;

    fn move_frames(&mut self, x: &mut Exchange) -> Result<usize, WorkerError> {
        let (fp, too_long) = (&mut self.fp, &mut self.too_long);
        let sent = x
            .to_nic
            .poll(BATCH, |frame| {
                // No room is counted by the driver, a failure below.
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
        let before = D::dropped_from_kernel(&fp.stats().driver);
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
        let dropped = D::dropped_from_kernel(&after.driver) - before;
        let handled = sent + passed + dropped as usize;
        if handled > 0 {
            self.report(x, &after);
        }
        Ok(handled)
    }

    fn check(&mut self, x: &Exchange) -> Result<(), WorkerError> {
        D::check(self, self.owner)?;
        if self.owner {
            let s = self.fp.stats();
            self.report(x, &s);
        }
        Ok(())
    }

    fn fd(&self) -> BorrowedFd<'_> {
        self.socket.as_fd()
    }

    fn release(&mut self) -> Result<bool, WorkerError> {
        self.fp.sync();
        self.failed()?;
        self.owner = false;
        Ok(true)
    }

    fn reacquire(&mut self) -> Result<(), WorkerError> {
        self.fp.reattach().map_err(D::worker_error)?;
        self.owner = true;
        Ok(())
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

    fn scribble_shared_state(&mut self) {
        D::scribble(&self.fp);
    }
}
