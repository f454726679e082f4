//! Where an uplink's fast path runs, and moving it (the handover).
//!
//! A connected uplink is an [`UplinkDriver`]: its driver domain plus a
//! [`FastPath`] state. In `domain` mode frames cross the exchange rings to the
//! domain; in `inline` and `twin` mode the switch's data-path thread runs the
//! driver's fast path on the domain's region ([`SwitchInstance`]) after the domain
//! handed it over (`driver_domain::handover`). The handover states are
//! `Domain -> ToSwitch (asked, waiting for the acknowledgement) -> Switch`, and back
//! to `Domain` at a batch boundary; frames queued for the domain before a handover
//! are sent first, and the domain's last received frames are delivered before the
//! switch's instance is polled, so a move neither reorders nor duplicates.

use std::time::{Duration, Instant};

use driver_domain::handover::Owner;
use driver_domain::launch::DomainFailure;
use driver_domain::launch::Send as DomainSend;
use driver_domain::DomainLink;
use twin_runtime::SwitchInstance;
use twin_wire::Segments;

use super::handover::{self, HandoverDomain, Step, SwitchSide};
use super::{Link, Uplink};
use crate::config::UplinkMode;
use crate::counters::DropReason;
use crate::port::Delivery;
use twin_runtime::AttachError;

/// The switch-side instance an uplink's fast path moves to.
pub(super) fn attach_instance(
    kind: UplinkMode,
    domain: &DomainLink,
) -> Result<SwitchInstance, AttachError> {
    match kind {
        UplinkMode::Twin => SwitchInstance::twin(domain),
        _ => SwitchInstance::inline(domain),
    }
}

/// Where a connected uplink's fast path runs, with the switch's instance.
pub(super) type FastPath = handover::FastPath<SwitchInstance>;

impl HandoverDomain for DomainLink {
    type Instance = SwitchInstance;
    type AttachError = AttachError;
    type QueueError = exchange::ExchangeError;

    fn request_owner(&mut self, owner: Owner) -> u64 {
        DomainLink::request_owner(self, owner)
    }

    fn owner_acked(&self, seq: u64, owner: Owner) -> bool {
        DomainLink::owner_acked(self, seq, owner)
    }

    fn attach(&self, mode: UplinkMode) -> Result<SwitchInstance, AttachError> {
        attach_instance(mode, self)
    }

    fn move_queued(
        &mut self,
        instance: &mut SwitchInstance,
    ) -> Result<u64, exchange::ExchangeError> {
        let mut ring_full = 0;
        self.take_queued_to_nic(|frame| {
            if instance.send(frame) != DomainSend::Queued {
                ring_full += 1;
            }
        })?;
        instance.flush();
        Ok(ring_full)
    }
}

impl SwitchSide for SwitchInstance {
    fn sync(&mut self) {
        SwitchInstance::sync(self);
    }

    fn mode(&self) -> UplinkMode {
        if self.is_twin() {
            UplinkMode::Twin
        } else {
            UplinkMode::Inline
        }
    }
}

/// A connected uplink: its driver domain, and wherever its fast path runs.
#[derive(Debug)]
pub struct UplinkDriver {
    pub(super) domain: DomainLink,
    pub(super) fast: FastPath,
}

impl UplinkDriver {
    /// Copies `frame` toward the NIC.
    #[inline]
    pub fn send(&mut self, frame: &Segments<'_>) -> Delivery {
        let outcome = match &mut self.fast {
            FastPath::Switch { instance, .. } => instance.send(frame),
            _ => self.domain.send(frame),
        };
        match outcome {
            DomainSend::Queued => Delivery::Delivered,
            DomainSend::RingFull => Delivery::Dropped(DropReason::UplinkRingFull),
            DomainSend::TooBig => Delivery::Dropped(DropReason::TooBigForUplink),
            DomainSend::Failed => Delivery::Dropped(DropReason::UplinkDown),
        }
    }

    /// Publishes what was sent this iteration.
    #[inline]
    pub fn flush(&mut self) {
        match &mut self.fast {
            FastPath::Switch { instance, .. } => instance.flush(),
            _ => self.domain.flush(),
        }
    }

    /// Frames received from the NIC, up to `max`.
    #[inline]
    pub fn rx_burst(&mut self, max: usize, mut f: impl FnMut(&Segments<'_>)) -> usize {
        match &mut self.fast {
            FastPath::Switch {
                instance,
                from_nic_drained,
            } => {
                if !*from_nic_drained {
                    let n = self.domain.rx_burst(max, &mut f);
                    if n > 0 {
                        return n;
                    }
                    *from_nic_drained = true;
                }
                instance.rx_burst(max, f)
            }
            _ => self.domain.rx_burst(max, f),
        }
    }

    /// The fd that becomes readable when frames arrive (event mode).
    pub fn rx_call_fd(&self) -> std::os::fd::RawFd {
        match &self.fast {
            // A switch-side instance exists only over a vhost-user NIC's or an
            // AF_XDP socket's domain.
            FastPath::Switch { .. } => self
                .domain
                .nic_rx_call_fd()
                .unwrap_or_else(|| self.domain.rx_call_fd()),
            _ => self.domain.rx_call_fd(),
        }
    }

    /// Event mode: turns receive notifications on or off; true when frames raced in.
    pub fn set_rx_notify(&mut self, on: bool) -> bool {
        match &mut self.fast {
            FastPath::Switch {
                instance,
                from_nic_drained,
            } => instance.set_rx_notify(on) || (on && !*from_nic_drained),
            _ => self.domain.set_rx_notify(on),
        }
    }

    /// Where the fast path runs now, for reports.
    pub(super) fn fast_path_name(&self) -> &'static str {
        match &self.fast {
            FastPath::ToSwitch { .. } => "handing-over",
            fp => fp.mode().as_str(),
        }
    }

    /// Frames handed to the driver domain that its failure would lose.
    pub(super) fn in_flight(&mut self) -> u64 {
        self.domain.in_flight()
    }

    /// Why the link is down, if it is.
    pub(super) fn failure(&mut self, now: Instant) -> Option<DomainFailure> {
        self.domain.check_health(now)
    }

    /// Drops counted inside the driver domain, by reason.
    pub(super) fn domain_drops(&self) -> [(&'static str, u64); 8] {
        self.domain.dd_drops()
    }

    pub(super) fn detail(&self) -> serde_json::Value {
        let stats = match &self.fast {
            FastPath::Switch { instance, .. } => serde_json::to_value(instance.stats()).ok(),
            _ => None,
        };
        let svm = match &self.fast {
            FastPath::Switch { instance, .. } => instance.svm().map(|svm| {
                serde_json::json!({
                    "checks": svm.checks(),
                    "faults": svm.faults(),
                    "ranges": svm.map().len(),
                })
            }),
            _ => None,
        };
        let upcalls: serde_json::Map<String, serde_json::Value> = self
            .domain
            .upcall_counts()
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.into()))
            .collect();
        serde_json::json!({
            "pid": self.domain.pid(),
            "fast_path": self.fast_path_name(),
            "switch_instance_stats": stats,
            "svm": svm,
            "upcalls": upcalls,
        })
    }
}

/// How long a driver domain may take to acknowledge a handover before it counts as
/// failed.
pub const HANDOVER_TIMEOUT: Duration = Duration::from_secs(1);

impl Uplink {
    /// Carries out what a step of the handover did: counts completed moves, sets the
    /// mode back when an instance could not be attached, logs. Returns whether the
    /// wake-up fd may have changed; a timeout is the caller's to act on.
    pub(super) fn took_step(&mut self, step: &Step) -> bool {
        let name = &self.spec.name;
        match step {
            Step::Stay | Step::Asked | Step::Withdrawn | Step::TimedOut => {}
            Step::InSwitch { mode, ring_full } => {
                self.handover_ring_full += ring_full;
                self.mode_changes += 1;
                twin_log::info_limited!(uplink = %name, mode = %mode, "fast path runs in the switch");
            }
            Step::QueueBroken { mode, error } => {
                // The DD broke the ring: its health check will restart it.
                twin_log::warn_limited!(uplink = %name, "to_nic ring at handover: {error}");
                self.mode_changes += 1;
                twin_log::info_limited!(uplink = %name, mode = %mode, "fast path runs in the switch");
            }
            Step::BackInDomain => {
                self.mode_changes += 1;
                twin_log::info_limited!(uplink = %name, "fast path runs in the driver domain");
            }
            Step::AttachFailed {
                target,
                now_in,
                error,
            } => {
                twin_log::warn_limited!(uplink = %name, mode = %target, "cannot attach the switch's instance: {error}; the fast path stays in {now_in}");
                self.mode = *now_in;
            }
        }
        step.fds_changed()
    }

    /// Moves the fast path toward `self.mode`, as far as it can go without waiting.
    /// Returns true when the notification fd may have changed.
    pub(super) fn apply_mode(&mut self, now: Instant) -> bool {
        let Link::Up(d) = &mut self.link else {
            return false;
        };
        let step = d.fast.toward(&mut d.domain, self.mode, now);
        self.took_step(&step)
    }

    /// `twin ctl mode`: moves the fast path to `mode` (now, or when the link is up).
    /// Returns true when the notification fd may have changed.
    pub fn set_mode(&mut self, mode: UplinkMode, now: Instant) -> bool {
        if self.mode != mode {
            twin_log::info_local!(uplink = %self.spec.name, from = %self.mode, to = %mode, "mode change requested");
        }
        self.mode = mode;
        self.apply_mode(now)
    }
}
