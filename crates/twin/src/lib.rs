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
//! The instance calls the driver only through its generated fast-path entry table
//! (`VirtioNetTwin`, via `driver_host::FastPath`).
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
use driver_host::{DriverStats, FastPath, HostEnv};
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
    /// The region holds a layout other than the one the switch configured.
    #[error("the driver domain's state describes another layout than the switch configured")]
    LayoutMismatch,
    /// The domain drives no vhost-user NIC (a TAP device): there is no driver
    /// state a switch-side instance could run over.
    #[error("the driver domain drives no vhost-user NIC: its fast path cannot move")]
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

/// A twin: the driver's fast path over SVM, contained.
#[derive(Debug)]
pub struct Twin {
    fp: FastPath<SvmEnv>,
    fault: Option<TwinFault>,
}

impl Twin {
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

    /// A twin over an instance already attached in an [`SvmEnv`] (what
    /// [`Twin::attach`] builds from a driver domain; tests build their own).
    pub fn new(fp: FastPath<SvmEnv>) -> Self {
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
    fn guarded<R>(&mut self, idle: R, call: impl FnOnce(&mut FastPath<SvmEnv>) -> R) -> R {
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
        let r = self.guarded(Send::Failed, |fp| send_frame(fp, frame));
        if self.fault.is_some() {
            Send::Failed
        } else {
            r
        }
    }

    /// Publishes the TX batch, kicks if wanted, reaps completions.
    #[inline]
    pub fn flush(&mut self) {
        self.guarded((), FastPath::tx_flush)
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

    /// Asks the driver to commit `fault` in its next fast-path call (tests).
    pub fn inject(&self, fault: InjectedFault) {
        self.fp.env().inject(fault);
    }

    /// The driver's counters (read through the SVM).
    pub fn stats(&self) -> DriverStats {
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
    /// Direct access; unprotected.
    Inline(Box<FastPath<DirectEnv>>),
    /// Through the SVM; contained.
    Twin(Box<Twin>),
}

impl SwitchInstance {
    /// Attaches an inline instance to `link`'s driver state.
    pub fn inline(link: &DomainLink) -> Result<Self, AttachError> {
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
        Ok(SwitchInstance::Twin(Box::new(Twin::attach(link)?)))
    }

    /// Copies `frame` toward the NIC.
    #[inline]
    pub fn send(&mut self, frame: &Segments<'_>) -> Send {
        match self {
            SwitchInstance::Inline(fp) => send_frame(fp, frame),
            SwitchInstance::Twin(t) => t.send(frame),
        }
    }

    /// Publishes what was sent this iteration.
    #[inline]
    pub fn flush(&mut self) {
        match self {
            SwitchInstance::Inline(fp) => fp.tx_flush(),
            SwitchInstance::Twin(t) => t.flush(),
        }
    }

    /// Received frames, up to `max`.
    #[inline]
    pub fn rx_burst(&mut self, max: usize, f: impl FnMut(&Segments<'_>)) -> usize {
        match self {
            SwitchInstance::Inline(fp) => fp.rx_burst(max, f),
            SwitchInstance::Twin(t) => t.rx_burst(max, f),
        }
    }

    /// Event mode: RX notifications on or off; true when frames raced in.
    pub fn set_rx_notify(&mut self, on: bool) -> bool {
        match self {
            SwitchInstance::Inline(fp) => fp.set_rx_notify(on),
            SwitchInstance::Twin(t) => t.set_rx_notify(on),
        }
    }

    /// Writes everything back to the region (a batch boundary another instance can
    /// continue from). Only meaningful for a healthy instance.
    pub fn sync(&mut self) {
        match self {
            SwitchInstance::Inline(fp) => fp.sync(),
            SwitchInstance::Twin(t) => t.guarded((), FastPath::sync),
        }
    }

    /// Why a twin was disabled.
    pub fn fault(&self) -> Option<&TwinFault> {
        match self {
            SwitchInstance::Inline(_) => None,
            SwitchInstance::Twin(t) => t.fault(),
        }
    }

    /// The driver's counters.
    pub fn stats(&self) -> DriverStats {
        match self {
            SwitchInstance::Inline(fp) => fp.stats(),
            SwitchInstance::Twin(t) => t.stats(),
        }
    }
}
