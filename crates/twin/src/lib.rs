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
//! Two drivers have switch-side instances: the virtio-net driver of a vhost-user
//! NIC's domain (`driver_host::FastPath` over `VirtioNetTwin`) and the AF_XDP
//! driver of an AF_XDP socket's domain (`driver_host::XdpFastPath` over
//! `AfXdpTwin`, in the switch's own mapping of the driver's space, the socket's
//! `send` as its doorbell). Either is called only through its generated
//! fast-path entry table ([`Instance`] is what the switch needs of both).
//!
//! Limits: one queue pair; the watchdog sees only loops that touch driver memory;
//! the switch's own code inside the receive callback runs under the same guard, so a
//! (never expected) panic there would be blamed on the twin.

pub mod env;

use std::panic::{catch_unwind, AssertUnwindSafe};

use driver_domain::launch::Send;
use driver_domain::DomainLink;
use driver_env::InjectedFault;
use driver_host::env::{Bell, DirectEnv};
use driver_host::{DriverStats, FastPath, HostEnv, TxOutcome, XdpDriverStats, XdpFastPath};
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
    /// The AF_XDP driver's state in its space is invalid.
    #[error("the AF_XDP driver's state cannot be attached")]
    XdpDriver(#[source] af_xdp_driver::XdpDriverError),
    /// The region holds a layout other than the one the switch configured.
    #[error("the driver domain's state describes another layout than the switch configured")]
    LayoutMismatch,
    /// The domain drives neither a vhost-user NIC nor an AF_XDP socket (a TAP
    /// device, an AF_PACKET socket): there is no driver state in shared memory a
    /// switch-side instance could run over.
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
    AfXdp(XdpDriverStats),
}

/// What the switch needs of a driver instance (virtio-net's or AF_XDP's) in
/// either environment.
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

impl<E: HostEnv> Instance for XdpFastPath<E> {
    type Env = E;
    fn env(&self) -> &E {
        XdpFastPath::env(self)
    }
    #[inline]
    fn send(&mut self, frame: &Segments<'_>) -> Send {
        match XdpFastPath::send(self, frame) {
            TxOutcome::Queued => Send::Queued,
            TxOutcome::NoRoom => Send::RingFull,
            TxOutcome::TooBig => Send::TooBig,
            TxOutcome::Failed => Send::Failed,
        }
    }
    #[inline]
    fn flush(&mut self) {
        XdpFastPath::flush(self);
    }
    /// Also wakes the kernel for frames it left on the transmit ring (busy at
    /// the last flush): the switch polls this every round.
    #[inline]
    fn rx_burst<F: FnMut(&Segments<'_>)>(&mut self, max: usize, f: F) -> usize {
        if self.tx_waiting() {
            XdpFastPath::flush(self);
        }
        XdpFastPath::rx_burst(self, max, f)
    }
    /// The socket is readable whenever frames wait: nothing to arm.
    fn set_rx_notify(&mut self, on: bool) -> bool {
        on && self.rx_pending()
    }
    fn sync(&mut self) {
        XdpFastPath::sync(self);
    }
    fn stats(&self) -> InstanceStats {
        InstanceStats::AfXdp(XdpFastPath::stats(self))
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

impl Twin<XdpFastPath<SvmEnv>> {
    /// Attaches a twin to the AF_XDP driver state `link`'s domain left in the
    /// driver's space (after it handed the fast path over), through the
    /// switch's own mapping, with the access map of the switch's own layout.
    pub fn attach_xdp(link: &DomainLink) -> Result<Self, AttachError> {
        let x = link.xdp().ok_or(AttachError::NotVhost)?;
        let map = x.layout().twin_access_map();
        let svm = svm::Svm::new(x.space().clone(), &map).map_err(AttachError::Svm)?;
        let env = SvmEnv::with_bells(svm, xdp_bells(x), Box::new(link.upcall_sink()));
        env.enter();
        let fp = XdpFastPath::attach(env, *x.layout()).map_err(AttachError::XdpDriver)?;
        Ok(Self::new(fp))
    }
}

/// The AF_XDP driver's doorbells: the socket for both queues (only transmit is
/// rung in copy mode).
fn xdp_bells(x: &driver_domain::launch::XdpLink) -> Vec<Bell> {
    vec![
        Bell::XdpSocket(x.socket().clone()),
        Bell::XdpSocket(x.socket().clone()),
    ]
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

/// The fast path of an uplink, run in the switch.
#[derive(Debug)]
pub enum SwitchInstance {
    /// The virtio-net driver, direct access; unprotected.
    Inline(Box<FastPath<DirectEnv>>),
    /// The virtio-net driver through the SVM; contained.
    Twin(Box<Twin<FastPath<SvmEnv>>>),
    /// The AF_XDP driver, direct access; unprotected.
    XdpInline(Box<XdpFastPath<DirectEnv>>),
    /// The AF_XDP driver through the SVM; contained.
    XdpTwin(Box<Twin<XdpFastPath<SvmEnv>>>),
}

/// Runs `f` as a call of its own (see [`SwitchInstance::send`]).
#[inline(never)]
fn out_of_line<R>(f: impl FnOnce() -> R) -> R {
    f()
}

/// Evaluates `$inline` with `$i` bound to an inline instance, or `$twin` with
/// `$t` bound to a twin, whichever `$self` holds (either driver).
macro_rules! each {
    ($self:expr, $i:ident => $inline:expr, $t:ident => $twin:expr) => {
        match $self {
            SwitchInstance::Inline($i) => $inline,
            SwitchInstance::XdpInline($i) => $inline,
            SwitchInstance::Twin($t) => $twin,
            SwitchInstance::XdpTwin($t) => $twin,
        }
    };
}

impl SwitchInstance {
    /// Attaches an inline instance to `link`'s driver state.
    pub fn inline(link: &DomainLink) -> Result<Self, AttachError> {
        if let Some(x) = link.xdp() {
            let env = DirectEnv::with_upcalls(
                x.space().clone(),
                xdp_bells(x),
                Box::new(link.upcall_sink()),
            );
            let fp = XdpFastPath::attach(env, *x.layout()).map_err(AttachError::XdpDriver)?;
            return Ok(SwitchInstance::XdpInline(Box::new(fp)));
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
        if link.xdp().is_some() {
            return Ok(SwitchInstance::XdpTwin(Box::new(Twin::attach_xdp(link)?)));
        }
        Ok(SwitchInstance::Twin(Box::new(Twin::attach(link)?)))
    }

    /// Whether it runs through the SVM.
    pub fn is_twin(&self) -> bool {
        matches!(self, SwitchInstance::Twin(_) | SwitchInstance::XdpTwin(_))
    }

    /// Copies `frame` toward the NIC.
    ///
    /// The per-frame calls keep the AF_XDP arms out of line: inlined, all four
    /// made this function too large to be inlined into the switch's delivery,
    /// and virtio-net's twin transmit lost 7 % (five paired `twin bench`
    /// runs); AF_XDP's path pays a call next to a system call per batch.
    #[inline]
    pub fn send(&mut self, frame: &Segments<'_>) -> Send {
        match self {
            SwitchInstance::Inline(fp) => send_frame(fp, frame),
            SwitchInstance::Twin(t) => t.send(frame),
            SwitchInstance::XdpInline(fp) => out_of_line(|| Instance::send(&mut **fp, frame)),
            SwitchInstance::XdpTwin(t) => out_of_line(|| t.send(frame)),
        }
    }

    /// Publishes what was sent this iteration.
    #[inline]
    pub fn flush(&mut self) {
        match self {
            SwitchInstance::Inline(fp) => fp.tx_flush(),
            SwitchInstance::Twin(t) => t.flush(),
            SwitchInstance::XdpInline(fp) => out_of_line(|| Instance::flush(&mut **fp)),
            SwitchInstance::XdpTwin(t) => out_of_line(|| t.flush()),
        }
    }

    /// Received frames, up to `max`.
    #[inline]
    pub fn rx_burst(&mut self, max: usize, f: impl FnMut(&Segments<'_>)) -> usize {
        match self {
            SwitchInstance::Inline(fp) => fp.rx_burst(max, f),
            SwitchInstance::Twin(t) => t.rx_burst(max, f),
            SwitchInstance::XdpInline(fp) => out_of_line(|| Instance::rx_burst(&mut **fp, max, f)),
            SwitchInstance::XdpTwin(t) => out_of_line(|| t.rx_burst(max, f)),
        }
    }

    /// Event mode: RX notifications on or off; true when frames raced in.
    pub fn set_rx_notify(&mut self, on: bool) -> bool {
        each!(self, fp => Instance::set_rx_notify(&mut **fp, on), t => t.set_rx_notify(on))
    }

    /// Writes everything back to the region (a batch boundary another instance can
    /// continue from). Only meaningful for a healthy instance.
    pub fn sync(&mut self) {
        each!(self, fp => Instance::sync(&mut **fp), t => t.sync())
    }

    /// Why a twin was disabled.
    pub fn fault(&self) -> Option<&TwinFault> {
        each!(self, _fp => None, t => t.fault())
    }

    /// The driver's counters.
    pub fn stats(&self) -> InstanceStats {
        each!(self, fp => Instance::stats(&**fp), t => t.stats())
    }

    /// A twin's SVM (its checks, faults and map), for reports.
    pub fn svm(&self) -> Option<&svm::Svm> {
        each!(self, _fp => None, t => Some(t.svm()))
    }

    /// Asks a twin's driver to commit `fault` in its next fast-path call
    /// (tests); false for an inline instance.
    pub fn inject(&self, fault: InjectedFault) -> bool {
        each!(self, _fp => false, t => {
            t.inject(fault);
            true
        })
    }
}
