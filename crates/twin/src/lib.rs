#![forbid(unsafe_code)]
#![deny(missing_docs)]
//! Runs an uplink driver's fast path inside the switch, on the driver domain's own
//! state: the seeds' *twin driver*, and the unprotected *inline* instance.
//!
//! Both attach, at a handover (`driver_domain::handover`), to the driver state the
//! driver domain left in its region, and drive the NIC's queues directly: transmit,
//! receive, RX refill, completion reaping and doorbells, with no per-packet hop to
//! the driver domain. Slow-path routines become upcalls into the domain.
//!
//! * [`SwitchInstance::Inline`]: the driver over the direct environment: every
//!   access bounds-checked against the region, nothing else. A driver bug can take
//!   the switch down (that is what `inline` means).
//! * [`SwitchInstance::Twin`]: the driver over [`SvmEnv`] (crate `svm`): every
//!   access translated and checked against the driver's access map, each call
//!   guarded against panics and watched by an access-budget watchdog. The first
//!   SVM fault, panic or stuck call disables the twin ([`Twin::fault`]); the caller
//!   falls back to the driver domain, restarting it since its state may be
//!   corrupt.
//!
//! Three drivers have switch-side instances: the virtio-net driver of a
//! vhost-user NIC's domain (`driver_host::FastPath` over `VirtioNetTwin`) and the
//! ring drivers of an AF_XDP or AF_PACKET socket's domain
//! (`driver_host::RingFastPath` over `AfXdpTwin` or `AfPacketTwin`, in the
//! switch's own mapping of the driver's space, the socket's `send` as its
//! doorbell). Each is called only through its generated fast-path entry table
//! ([`Instance`] is what the switch needs of all; the ring drivers' instances
//! sit behind one [`RingInstance`] vtable).
//!
//! Limits: one queue pair; the watchdog sees only loops that touch driver memory;
//! the switch's own code inside the receive callback runs under the same guard, so a
//! (never expected) panic there would be blamed on the twin.

pub mod env;

use std::panic::{catch_unwind, AssertUnwindSafe};

use driver_domain::launch::Send;
use driver_domain::DomainLink;
use driver_env::access::AccessRange;
use driver_env::InjectedFault;
use driver_host::env::{Bell, DirectEnv};
use driver_host::{
    DriverStats, FastPath, HostEnv, PacketBell, RingDriver, RingFastPath, RingStats, TxOutcome,
};
use twin_wire::Segments;
use virtio_net_driver::{NetConfig, NetError, NetLayout};

pub use env::{EnvFault, SvmEnv};

/// Errors while attaching a switch-side instance.
#[derive(Debug, thiserror::Error)]
pub enum AttachError {
    /// The driver configuration gives no valid layout.
    #[error("invalid driver layout")]
    Layout(#[source] NetError),
    /// The access map was refused by the SVM.
    #[error("cannot build the SVM")]
    Svm(#[source] svm::SvmError),
    /// The eventfds could not be duplicated.
    #[error("cannot duplicate the queue eventfds")]
    Fds(#[source] std::io::Error),
    /// The driver state in the region is invalid.
    #[error("the driver domain's state cannot be attached")]
    Driver(#[source] NetError),
    /// A ring driver's state in its space is invalid.
    #[error("the {driver} driver's state cannot be attached: {reason}")]
    RingDriver {
        /// Which driver.
        driver: &'static str,
        /// Why.
        reason: String,
    },
    /// The region holds a layout other than the one the switch configured.
    #[error("the driver domain's state describes another layout than the switch configured")]
    LayoutMismatch,
    /// The domain drives a TAP device: there is no driver state in shared
    /// memory a switch-side instance could run over.
    #[error("the driver domain's fast path cannot move (its state is not shared memory)")]
    NotVhost,
}

/// Why a twin was disabled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TwinFault {
    /// An access the SVM refused.
    Svm(svm::SvmFault),
    /// A fast-path call ran longer than the watchdog allows.
    Stuck {
        /// How long it had run.
        ran_for_ms: u64,
    },
    /// The driver panicked.
    Panic(String),
}

impl std::fmt::Display for TwinFault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TwinFault::Svm(e) => write!(f, "{e}"),
            TwinFault::Stuck { ran_for_ms } => {
                write!(f, "fast path stuck for {ran_for_ms} ms (watchdog)")
            }
            TwinFault::Panic(m) => write!(f, "driver panicked: {m}"),
        }
    }
}

/// The layout the switch expects, from its own configuration.
fn expected_layout(link: &DomainLink) -> Result<NetLayout, AttachError> {
    let cfg = link.driver_config().ok_or(AttachError::NotVhost)?;
    NetLayout::new(NetConfig {
        queue_size: cfg.queue_size,
        buf_size: cfg.buf_size,
    })
    .map_err(|e| AttachError::Layout(e.into()))
}

fn attach_checked<E: HostEnv>(env: E, layout: &NetLayout) -> Result<FastPath<E>, AttachError> {
    let fp = FastPath::attach(env).map_err(AttachError::Driver)?;
    if fp.driver().layout() != layout {
        return Err(AttachError::LayoutMismatch);
    }
    Ok(fp)
}

fn kicks(link: &DomainLink) -> Result<Vec<vmm_sys_util::eventfd::EventFd>, AttachError> {
    let [rx, tx] = link
        .queue_fds()
        .ok_or(AttachError::NotVhost)?
        .map_err(AttachError::Fds)?;
    Ok(vec![rx.kick, tx.kick])
}

/// Copies `frame` into a TX buffer of `fp` (visible after the next flush).
#[inline]
fn send_frame<E: HostEnv>(fp: &mut FastPath<E>, frame: &Segments<'_>) -> Send {
    let Some(slot) = fp.tx_reserve() else {
        return if fp.failure().is_some() {
            Send::Failed
        } else {
            Send::RingFull
        };
    };
    if slot.capacity() < frame.len() {
        // Dropping the slot gives the buffer back.
        return Send::TooBig;
    }
    let copied = frame.copy_to(&slot.frame());
    if copied != frame.len() {
        // The frame area was refused: the slot goes back unused.
        return Send::Failed;
    }
    if slot.commit(copied) {
        Send::Queued
    } else {
        Send::Failed
    }
}

/// An instance's counters, by driver.
#[derive(Debug, Clone, Copy, serde::Serialize)]
#[serde(untagged)]
pub enum InstanceStats {
    /// The virtio-net driver's.
    VirtioNet(DriverStats),
    /// The AF_XDP driver's.
    AfXdp(RingStats<af_xdp_driver::XdpStats>),
    /// The AF_PACKET driver's.
    AfPacket(RingStats<af_packet_driver::PacketStats>),
}

/// A ring driver whose counters a report can show.
pub trait ReportedRing: RingDriver {
    /// The counters as an [`InstanceStats`].
    fn instance_stats(s: RingStats<Self::Stats>) -> InstanceStats;
}

impl ReportedRing for af_xdp_driver::AfXdpTwin {
    fn instance_stats(s: RingStats<af_xdp_driver::XdpStats>) -> InstanceStats {
        InstanceStats::AfXdp(s)
    }
}

impl ReportedRing for af_packet_driver::AfPacketTwin {
    fn instance_stats(s: RingStats<af_packet_driver::PacketStats>) -> InstanceStats {
        InstanceStats::AfPacket(s)
    }
}

/// What the switch needs of a driver instance (virtio-net's or a ring
/// driver's) in either environment.
pub trait Instance {
    /// The environment it runs in.
    type Env;
    /// The environment.
    fn env(&self) -> &Self::Env;
    /// Copies `frame` toward the NIC (visible after the next flush).
    fn send(&mut self, frame: &Segments<'_>) -> Send;
    /// Publishes what was sent, rings the device if it wants it, reaps
    /// completions.
    fn flush(&mut self);
    /// Hands up to `max` received frames to `f`; returns how many.
    fn rx_burst<F: FnMut(&Segments<'_>)>(&mut self, max: usize, f: F) -> usize;
    /// Event mode: receive notifications on or off; true when frames raced in.
    fn set_rx_notify(&mut self, on: bool) -> bool;
    /// Writes everything back (a batch boundary another instance continues
    /// from).
    fn sync(&mut self);
    /// The driver's counters.
    fn stats(&self) -> InstanceStats;
}

impl<E: HostEnv> Instance for FastPath<E> {
    type Env = E;
    fn env(&self) -> &E {
        FastPath::env(self)
    }
    #[inline]
    fn send(&mut self, frame: &Segments<'_>) -> Send {
        send_frame(self, frame)
    }
    #[inline]
    fn flush(&mut self) {
        self.tx_flush();
    }
    #[inline]
    fn rx_burst<F: FnMut(&Segments<'_>)>(&mut self, max: usize, f: F) -> usize {
        FastPath::rx_burst(self, max, f)
    }
    fn set_rx_notify(&mut self, on: bool) -> bool {
        FastPath::set_rx_notify(self, on)
    }
    fn sync(&mut self) {
        FastPath::sync(self);
    }
    fn stats(&self) -> InstanceStats {
        InstanceStats::VirtioNet(FastPath::stats(self))
    }
}

impl<E: HostEnv, D: ReportedRing> Instance for RingFastPath<E, D> {
    type Env = E;
    fn env(&self) -> &E {
        RingFastPath::env(self)
    }
    #[inline]
    fn send(&mut self, frame: &Segments<'_>) -> Send {
        match RingFastPath::send(self, frame) {
            TxOutcome::Queued => Send::Queued,
            TxOutcome::NoRoom => Send::RingFull,
            TxOutcome::TooBig => Send::TooBig,
            TxOutcome::Failed => Send::Failed,
        }
    }
    #[inline]
    fn flush(&mut self) {
        RingFastPath::flush(self);
    }
    /// Also wakes the kernel for frames it left on the transmit ring (busy at
    /// the last flush): the switch polls this every round.
    #[inline]
    fn rx_burst<F: FnMut(&Segments<'_>)>(&mut self, max: usize, f: F) -> usize {
        if self.tx_waiting() {
            RingFastPath::flush(self);
        }
        RingFastPath::rx_burst(self, max, f)
    }
    /// The socket is readable whenever frames wait: nothing to arm.
    fn set_rx_notify(&mut self, on: bool) -> bool {
        on && self.rx_pending()
    }
    fn sync(&mut self) {
        RingFastPath::sync(self);
    }
    fn stats(&self) -> InstanceStats {
        D::instance_stats(RingFastPath::stats(self))
    }
}

/// A twin: a driver's fast path over SVM, contained.
#[derive(Debug)]
pub struct Twin<F> {
    fp: F,
    fault: Option<TwinFault>,
}

impl Twin<FastPath<SvmEnv>> {
    /// Attaches a twin to the state `link`'s driver domain left in its region (after
    /// the domain handed the fast path over).
    pub fn attach(link: &DomainLink) -> Result<Self, AttachError> {
        let layout = expected_layout(link)?;
        let map = layout.twin_access_map();
        let region = link.region().ok_or(AttachError::NotVhost)?.clone();
        let svm = svm::Svm::new(region, &map).map_err(AttachError::Svm)?;
        let env = SvmEnv::new(svm, kicks(link)?, Box::new(link.upcall_sink()));
        env.enter();
        Ok(Self::new(attach_checked(env, &layout)?))
    }
}

/// A ring kind's link, as the instances need it: the socket, the switch's
/// mapping of the driver's space, the layout, and the access map of the switch's
/// own layout (never read from the space).
struct RingParts<L> {
    socket: std::sync::Arc<std::os::fd::OwnedFd>,
    space: std::sync::Arc<driver_host::region::Region>,
    layout: L,
    map: Vec<AccessRange>,
    /// An AF_PACKET socket's bell (it hears of a down interface).
    packet_bell: Option<std::sync::Arc<PacketBell>>,
}

impl<L> RingParts<L> {
    /// The doorbells, one per queue (queue 1 transmits; queue 0 is never rung
    /// in copy mode).
    fn bells(&self) -> Vec<Bell> {
        let bell = || match &self.packet_bell {
            Some(b) => Bell::PacketSocket(b.clone()),
            None => Bell::XdpSocket(self.socket.clone()),
        };
        vec![bell(), bell()]
    }
}

fn xdp_parts(link: &DomainLink) -> Option<RingParts<af_xdp_driver::XdpLayout>> {
    let x = link.xdp()?;
    Some(RingParts {
        socket: x.socket().clone(),
        space: x.space().clone(),
        layout: *x.layout(),
        map: x.layout().twin_access_map().to_vec(),
        packet_bell: None,
    })
}

fn packet_parts(link: &DomainLink) -> Option<RingParts<af_packet_driver::PacketLayout>> {
    let p = link.packet()?;
    Some(RingParts {
        socket: p.socket().clone(),
        space: p.space().clone(),
        layout: *p.layout(),
        map: p.layout().twin_access_map().to_vec(),
        packet_bell: Some(PacketBell::new(p.socket().clone())),
    })
}

fn ring_attach_error<D: RingDriver>(e: D::Error) -> AttachError {
    AttachError::RingDriver {
        driver: D::WHAT,
        reason: e.to_string(),
    }
}

impl<D: ReportedRing> Twin<RingFastPath<SvmEnv, D>> {
    /// Attaches a twin to the ring driver state `link`'s domain left in the
    /// driver's space (after it handed the fast path over), through the
    /// switch's own mapping, with the access map of the switch's own layout.
    fn attach_ring(link: &DomainLink, parts: RingParts<D::Layout>) -> Result<Self, AttachError> {
        let svm = svm::Svm::new(parts.space.clone(), &parts.map).map_err(AttachError::Svm)?;
        let env = SvmEnv::with_bells(svm, parts.bells(), Box::new(link.upcall_sink()));
        env.enter();
        let fp = RingFastPath::attach(env, parts.layout, parts.packet_bell)
            .map_err(ring_attach_error::<D>)?;
        Ok(Self::new(fp))
    }
}

/// An inline instance of a ring driver over `parts`.
fn inline_ring<D: ReportedRing>(
    link: &DomainLink,
    parts: RingParts<D::Layout>,
) -> Result<Box<dyn RingInstance>, AttachError>
where
    RingFastPath<DirectEnv, D>: RingInstance,
{
    let env = DirectEnv::with_upcalls(
        parts.space.clone(),
        parts.bells(),
        Box::new(link.upcall_sink()),
    );
    let fp = RingFastPath::<DirectEnv, D>::attach(env, parts.layout, parts.packet_bell)
        .map_err(ring_attach_error::<D>)?;
    Ok(Box::new(fp))
}

impl<F: Instance<Env = SvmEnv>> Twin<F> {
    /// A twin over an instance already attached in an [`SvmEnv`] (what
    /// [`Twin::attach`] builds from a driver domain; tests build their own).
    pub fn new(fp: F) -> Self {
        Self { fp, fault: None }
    }

    /// Why the twin is disabled, if it is. A disabled twin does nothing.
    #[inline]
    pub fn fault(&self) -> Option<&TwinFault> {
        self.fault.as_ref()
    }

    /// Runs one fast-path call under the guard: a refilled watchdog budget, a panic
    /// catcher, and a look at the environment's faults afterwards.
    #[inline]
    fn guarded<R>(&mut self, idle: R, call: impl FnOnce(&mut F) -> R) -> R {
        if self.fault.is_some() {
            return idle;
        }
        self.fp.env().enter();
        let fp = &mut self.fp;
        match catch_unwind(AssertUnwindSafe(|| call(fp))) {
            Ok(r) => {
                if let Some(f) = self.fp.env().fault() {
                    self.fault = Some(match f {
                        EnvFault::Svm(e) => TwinFault::Svm(e),
                        EnvFault::Watchdog { ran_for } => TwinFault::Stuck {
                            ran_for_ms: ran_for.as_millis() as u64,
                        },
                    });
                }
                r
            }
            Err(payload) => {
                let msg = payload
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| payload.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "non-string panic payload".to_string());
                self.fault = Some(TwinFault::Panic(msg));
                idle
            }
        }
    }

    /// Copies `frame` toward the NIC.
    #[inline]
    pub fn send(&mut self, frame: &Segments<'_>) -> Send {
        let r = self.guarded(Send::Failed, |fp| fp.send(frame));
        if self.fault.is_some() {
            Send::Failed
        } else {
            r
        }
    }

    /// Publishes the TX batch, kicks if wanted, reaps completions.
    #[inline]
    pub fn flush(&mut self) {
        self.guarded((), Instance::flush)
    }

    /// Received frames, up to `max`.
    #[inline]
    pub fn rx_burst(&mut self, max: usize, f: impl FnMut(&Segments<'_>)) -> usize {
        self.guarded(0, |fp| fp.rx_burst(max, f))
    }

    /// Event mode: RX notifications on or off; true when frames raced in.
    pub fn set_rx_notify(&mut self, on: bool) -> bool {
        self.guarded(false, |fp| fp.set_rx_notify(on))
    }

    /// Writes everything back (only meaningful while healthy).
    pub fn sync(&mut self) {
        self.guarded((), Instance::sync)
    }

    /// Asks the driver to commit `fault` in its next fast-path call (tests).
    pub fn inject(&self, fault: InjectedFault) {
        self.fp.env().inject(fault);
    }

    /// The driver's counters (read through the SVM).
    pub fn stats(&self) -> InstanceStats {
        self.fp.stats()
    }

    /// The SVM's fault count and map, for reports.
    pub fn svm(&self) -> &svm::Svm {
        self.fp.env().svm()
    }
}

/// A ring driver's instance in the switch (AF_XDP or AF_PACKET, inline or
/// twin), behind one vtable. Its frames cost a system call per batch, so an
/// indirect call per frame is noise there; and it keeps [`SwitchInstance`]'s
/// virtio-net arms small enough to be inlined into the switch's delivery
/// (with four inlined arms, virtio-net's twin transmit lost 7 % in five paired
/// `twin bench` runs).
pub trait RingInstance: std::fmt::Debug + std::marker::Send {
    /// Copies `frame` toward the NIC.
    fn send(&mut self, frame: &Segments<'_>) -> Send;
    /// Wakes the kernel for what was sent.
    fn flush(&mut self);
    /// Received frames, up to `max`.
    fn rx_burst(&mut self, max: usize, f: &mut dyn FnMut(&Segments<'_>)) -> usize;
    /// Event mode: true when frames wait.
    fn set_rx_notify(&mut self, on: bool) -> bool;
    /// Writes everything back.
    fn sync(&mut self);
    /// The driver's counters.
    fn stats(&self) -> InstanceStats;
    /// Why a twin was disabled.
    fn fault(&self) -> Option<&TwinFault>;
    /// A twin's SVM.
    fn svm(&self) -> Option<&svm::Svm>;
    /// Asks a twin's driver to commit `fault`; false for an inline instance.
    fn inject(&self, fault: InjectedFault) -> bool;
    /// Whether it runs through the SVM.
    fn is_twin(&self) -> bool;
}

impl<D: ReportedRing> RingInstance for RingFastPath<DirectEnv, D>
where
    RingFastPath<DirectEnv, D>: std::marker::Send,
{
    fn send(&mut self, frame: &Segments<'_>) -> Send {
        Instance::send(self, frame)
    }
    fn flush(&mut self) {
        Instance::flush(self)
    }
    fn rx_burst(&mut self, max: usize, f: &mut dyn FnMut(&Segments<'_>)) -> usize {
        Instance::rx_burst(self, max, f)
    }
    fn set_rx_notify(&mut self, on: bool) -> bool {
        Instance::set_rx_notify(self, on)
    }
    fn sync(&mut self) {
        Instance::sync(self)
    }
    fn stats(&self) -> InstanceStats {
        Instance::stats(self)
    }
    fn fault(&self) -> Option<&TwinFault> {
        None
    }
    fn svm(&self) -> Option<&svm::Svm> {
        None
    }
    fn inject(&self, _fault: InjectedFault) -> bool {
        false
    }
    fn is_twin(&self) -> bool {
        false
    }
}

impl<D: ReportedRing> RingInstance for Twin<RingFastPath<SvmEnv, D>>
where
    Twin<RingFastPath<SvmEnv, D>>: std::marker::Send,
{
    fn send(&mut self, frame: &Segments<'_>) -> Send {
        Twin::send(self, frame)
    }
    fn flush(&mut self) {
        Twin::flush(self)
    }
    fn rx_burst(&mut self, max: usize, f: &mut dyn FnMut(&Segments<'_>)) -> usize {
        Twin::rx_burst(self, max, f)
    }
    fn set_rx_notify(&mut self, on: bool) -> bool {
        Twin::set_rx_notify(self, on)
    }
    fn sync(&mut self) {
        Twin::sync(self)
    }
    fn stats(&self) -> InstanceStats {
        Twin::stats(self)
    }
    fn fault(&self) -> Option<&TwinFault> {
        Twin::fault(self)
    }
    fn svm(&self) -> Option<&svm::Svm> {
        Some(Twin::svm(self))
    }
    fn inject(&self, fault: InjectedFault) -> bool {
        Twin::inject(self, fault);
        true
    }
    fn is_twin(&self) -> bool {
        true
    }
}

/// The fast path of an uplink, run in the switch.
#[derive(Debug)]
pub enum SwitchInstance {
    /// The virtio-net driver, direct access; unprotected.
    Inline(Box<FastPath<DirectEnv>>),
    /// The virtio-net driver through the SVM; contained.
    Twin(Box<Twin<FastPath<SvmEnv>>>),
    /// A ring driver (AF_XDP, AF_PACKET), inline or twin.
    Ring(Box<dyn RingInstance>),
}

/// Evaluates `$inline` with `$i` bound to a virtio-net inline instance, `$twin`
/// with `$t` bound to a virtio-net twin, or `$ring` with `$r` bound to a ring
/// driver's instance, whichever `$self` holds.
macro_rules! each {
    ($self:expr, $i:ident => $inline:expr, $t:ident => $twin:expr, $r:ident => $ring:expr) => {
        match $self {
            SwitchInstance::Inline($i) => $inline,
            SwitchInstance::Twin($t) => $twin,
            SwitchInstance::Ring($r) => $ring,
        }
    };
}

impl SwitchInstance {
    /// Attaches an inline instance to `link`'s driver state.
    pub fn inline(link: &DomainLink) -> Result<Self, AttachError> {
        if let Some(parts) = xdp_parts(link) {
            return Ok(SwitchInstance::Ring(
                inline_ring::<af_xdp_driver::AfXdpTwin>(link, parts)?,
            ));
        }
        if let Some(parts) = packet_parts(link) {
            return Ok(SwitchInstance::Ring(inline_ring::<
                af_packet_driver::AfPacketTwin,
            >(link, parts)?));
        }
        let layout = expected_layout(link)?;
        let env = DirectEnv::with_upcalls(
            link.region().ok_or(AttachError::NotVhost)?.clone(),
            kicks(link)?.into_iter().map(Bell::EventFd).collect(),
            Box::new(link.upcall_sink()),
        );
        Ok(SwitchInstance::Inline(Box::new(attach_checked(
            env, &layout,
        )?)))
    }

    /// Attaches a twin to `link`'s driver state.
    pub fn twin(link: &DomainLink) -> Result<Self, AttachError> {
        if let Some(parts) = xdp_parts(link) {
            let t =
                Twin::<RingFastPath<SvmEnv, af_xdp_driver::AfXdpTwin>>::attach_ring(link, parts)?;
            return Ok(SwitchInstance::Ring(Box::new(t)));
        }
        if let Some(parts) = packet_parts(link) {
            let t = Twin::<RingFastPath<SvmEnv, af_packet_driver::AfPacketTwin>>::attach_ring(
                link, parts,
            )?;
            return Ok(SwitchInstance::Ring(Box::new(t)));
        }
        Ok(SwitchInstance::Twin(Box::new(Twin::attach(link)?)))
    }

    /// Whether it runs through the SVM.
    pub fn is_twin(&self) -> bool {
        each!(self, _i => false, _t => true, r => r.is_twin())
    }

    /// Copies `frame` toward the NIC.
    #[inline]
    pub fn send(&mut self, frame: &Segments<'_>) -> Send {
        each!(self, fp => send_frame(fp, frame), t => t.send(frame), r => r.send(frame))
    }

    /// Publishes what was sent this iteration.
    #[inline]
    pub fn flush(&mut self) {
        each!(self, fp => fp.tx_flush(), t => t.flush(), r => r.flush())
    }

    /// Received frames, up to `max`.
    #[inline]
    pub fn rx_burst(&mut self, max: usize, mut f: impl FnMut(&Segments<'_>)) -> usize {
        each!(self, fp => fp.rx_burst(max, f), t => t.rx_burst(max, f), r => r.rx_burst(max, &mut f))
    }

    /// Event mode: RX notifications on or off; true when frames raced in.
    pub fn set_rx_notify(&mut self, on: bool) -> bool {
        each!(self, fp => Instance::set_rx_notify(&mut **fp, on), t => t.set_rx_notify(on), r => r.set_rx_notify(on))
    }

    /// Writes everything back to the region (a batch boundary another instance can
    /// continue from). Only meaningful for a healthy instance.
    pub fn sync(&mut self) {
        each!(self, fp => Instance::sync(&mut **fp), t => t.sync(), r => r.sync())
    }

    /// Why a twin was disabled.
    pub fn fault(&self) -> Option<&TwinFault> {
        each!(self, _fp => None, t => t.fault(), r => r.fault())
    }

    /// The driver's counters.
    pub fn stats(&self) -> InstanceStats {
        each!(self, fp => Instance::stats(&**fp), t => t.stats(), r => r.stats())
    }

    /// A twin's SVM (its checks, faults and map), for reports.
    pub fn svm(&self) -> Option<&svm::Svm> {
        each!(self, _fp => None, t => Some(t.svm()), r => r.svm())
    }

    /// Asks a twin's driver to commit `fault` in its next fast-path call
    /// (tests); false for an inline instance.
    pub fn inject(&self, fault: InjectedFault) -> bool {
        each!(self, _fp => false, t => {
            t.inject(fault);
            true
        }, r => r.inject(fault))
    }
}
