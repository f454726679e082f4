//! The handover state machine: where an uplink's fast path runs, and the steps that
//! move it between the driver domain and the switch (`driver_domain::handover` has
//! the protocol on the wire).
//!
//! States ([`FastPath`]): `Domain` -> `ToSwitch` (the domain was asked and has not
//! acknowledged yet) -> `Switch` (an instance runs in the switch), and back to
//! `Domain` at a batch boundary; `inline` <-> `twin` swaps instances in the
//! switch. The machine is generic over the domain ([`HandoverDomain`]) and the
//! switch-side instance ([`SwitchSide`]) so that it is tested here without
//! processes; the uplink runs it on a real `DomainLink` and `SwitchInstance`.
//!
//! Limits: one request in flight; a request the domain never acknowledges is
//! reported as [`Step::TimedOut`] after the caller's timeout, and the caller
//! restarts the domain.

use std::time::{Duration, Instant};

use driver_domain::handover::Owner;

use crate::config::UplinkMode;

/// The driver domain's side, as the handover needs it.
pub(super) trait HandoverDomain {
    /// The instance the switch runs on the domain's region.
    type Instance: SwitchSide;
    /// Why an instance could not be attached.
    type AttachError: std::error::Error + 'static;
    /// Error of reading what was queued for the domain.
    type QueueError: std::fmt::Display;

    /// Writes an ownership request; returns its sequence number.
    fn request_owner(&mut self, owner: Owner) -> u64;
    /// Whether the domain acknowledged request `seq` for `owner`.
    fn owner_acked(&self, seq: u64, owner: Owner) -> bool;
    /// Attaches a switch-side instance of kind `mode` (`inline` or `twin`).
    fn attach(&self, mode: UplinkMode) -> Result<Self::Instance, Self::AttachError>;
    /// Sends every frame still queued for the domain through `instance`, in order;
    /// returns how many did not fit.
    fn move_queued(&mut self, instance: &mut Self::Instance) -> Result<u64, Self::QueueError>;
}

/// The switch-side instance, as the handover needs it.
pub(super) trait SwitchSide {
    /// Quiesces it at a batch boundary and writes its state back to the region.
    fn sync(&mut self);
    /// `inline` or `twin`.
    fn mode(&self) -> UplinkMode;
}

/// Where a connected uplink's fast path runs.
#[derive(Debug)]
pub(super) enum FastPath<I> {
    /// In the driver domain; frames cross the exchange rings.
    Domain,
    /// Asked the driver domain to hand it over; frames still cross the exchange
    /// rings until it acknowledges.
    ToSwitch {
        seq: u64,
        target: UplinkMode,
        since: Instant,
    },
    /// In the switch.
    Switch {
        instance: I,
        /// The driver domain's last received frames (published before it handed
        /// over) have been delivered; until then they go first.
        from_nic_drained: bool,
    },
}

/// What a step of the machine did.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Step {
    /// Nothing changed (already there, or still waiting).
    Stay,
    /// The domain was asked to hand the fast path over.
    Asked,
    /// A request not yet acknowledged was taken back.
    Withdrawn,
    /// The fast path now runs in the switch, in this mode; `ring_full` frames that
    /// were queued for the domain did not fit the instance.
    InSwitch { mode: UplinkMode, ring_full: u64 },
    /// The fast path runs in the domain again.
    BackInDomain,
    /// No instance of `target` could be attached; the fast path stays (or went back)
    /// where `now_in` says, and the uplink's mode should become that.
    AttachFailed {
        target: UplinkMode,
        now_in: UplinkMode,
        error: String,
    },
    /// The domain did not acknowledge within the timeout.
    TimedOut,
    /// The queued frames could not be read at the handover (the domain broke the
    /// ring; its health check restarts it). The fast path is in the switch.
    QueueBroken { mode: UplinkMode, error: String },
}

impl Step {
    /// Whether the uplink's wake-up fd may have changed.
    pub(super) fn fds_changed(&self) -> bool {
        matches!(
            self,
            Step::Withdrawn
                | Step::BackInDomain
                | Step::InSwitch { .. }
                | Step::QueueBroken { .. }
                | Step::AttachFailed { .. }
        )
    }
}

impl<I: SwitchSide> FastPath<I> {
    /// Where the fast path is now, as a mode (`ToSwitch` counts as `domain`).
    pub(super) fn mode(&self) -> UplinkMode {
        match self {
            FastPath::Switch { instance, .. } => instance.mode(),
            _ => UplinkMode::Domain,
        }
    }

    /// Moves toward `want` as far as it can without waiting for the domain.
    pub(super) fn toward<D>(&mut self, domain: &mut D, want: UplinkMode, now: Instant) -> Step
    where
        D: HandoverDomain<Instance = I>,
    {
        match (&mut *self, want) {
            (FastPath::Domain, UplinkMode::Domain) => Step::Stay,
            (FastPath::Domain, target) => {
                let seq = domain.request_owner(Owner::Switch);
                *self = FastPath::ToSwitch {
                    seq,
                    target,
                    since: now,
                };
                Step::Asked
            }
            (FastPath::ToSwitch { .. }, UplinkMode::Domain) => {
                // Nothing attached yet: take the request back.
                domain.request_owner(Owner::Domain);
                *self = FastPath::Domain;
                Step::Withdrawn
            }
            (FastPath::ToSwitch { target, .. }, t) => {
                *target = t;
                Step::Stay
            }
            (FastPath::Switch { instance, .. }, UplinkMode::Domain) => {
                // Quiesce at this batch boundary, hand back; frames sent from now on
                // queue in `to_nic` behind everything the instance posted.
                instance.sync();
                *self = FastPath::Domain;
                domain.request_owner(Owner::Domain);
                Step::BackInDomain
            }
            (FastPath::Switch { instance, .. }, target) => {
                if instance.mode() == target {
                    return Step::Stay;
                }
                instance.sync();
                match domain.attach(target) {
                    Ok(next) => {
                        *instance = next;
                        Step::InSwitch {
                            mode: target,
                            ring_full: 0,
                        }
                    }
                    Err(e) => Step::AttachFailed {
                        target,
                        now_in: instance.mode(),
                        error: crate::port::error_chain(&e),
                    },
                }
            }
        }
    }

    /// Waits for the domain's acknowledgement of a request to hand over: on it,
    /// attaches the instance and sends what was queued for the domain first; past
    /// `timeout`, [`Step::TimedOut`].
    pub(super) fn poll<D>(&mut self, domain: &mut D, now: Instant, timeout: Duration) -> Step
    where
        D: HandoverDomain<Instance = I>,
    {
        let FastPath::ToSwitch { seq, target, since } = *self else {
            return Step::Stay;
        };
        if !domain.owner_acked(seq, Owner::Switch) {
            return if now.duration_since(since) > timeout {
                Step::TimedOut
            } else {
                Step::Stay
            };
        }
        match domain.attach(target) {
            Ok(mut instance) => {
                let moved = domain.move_queued(&mut instance);
                *self = FastPath::Switch {
                    instance,
                    from_nic_drained: false,
                };
                match moved {
                    Ok(ring_full) => Step::InSwitch {
                        mode: target,
                        ring_full,
                    },
                    Err(e) => Step::QueueBroken {
                        mode: target,
                        error: e.to_string(),
                    },
                }
            }
            Err(e) => {
                domain.request_owner(Owner::Domain);
                *self = FastPath::Domain;
                Step::AttachFailed {
                    target,
                    now_in: UplinkMode::Domain,
                    error: crate::port::error_chain(&e),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Default)]
    struct FakeDomain {
        seq: u64,
        /// Requests written, in order.
        requests: Vec<(u64, Owner)>,
        /// The request the domain acknowledged.
        acked: Option<(u64, Owner)>,
        fail_attach: bool,
        /// Frames queued for the domain at the handover.
        queued: u64,
        broken_queue: bool,
    }

    #[derive(Debug, PartialEq)]
    struct FakeInstance {
        mode: UplinkMode,
        synced: u32,
        room: u64,
        sent: u64,
    }

    #[derive(Debug, thiserror::Error)]
    #[error("no layout")]
    struct NoLayout;

    impl HandoverDomain for FakeDomain {
        type Instance = FakeInstance;
        type AttachError = NoLayout;
        type QueueError = &'static str;

        fn request_owner(&mut self, owner: Owner) -> u64 {
            self.seq += 1;
            self.requests.push((self.seq, owner));
            self.seq
        }

        fn owner_acked(&self, seq: u64, owner: Owner) -> bool {
            self.acked == Some((seq, owner))
        }

        fn attach(&self, mode: UplinkMode) -> Result<FakeInstance, NoLayout> {
            if self.fail_attach {
                return Err(NoLayout);
            }
            Ok(FakeInstance {
                mode,
                synced: 0,
                room: 3,
                sent: 0,
            })
        }

        fn move_queued(&mut self, instance: &mut FakeInstance) -> Result<u64, &'static str> {
            if self.broken_queue {
                return Err("index out of range");
            }
            instance.sent = self.queued.min(instance.room);
            Ok(self.queued - instance.sent)
        }
    }

    impl SwitchSide for FakeInstance {
        fn sync(&mut self) {
            self.synced += 1;
        }

        fn mode(&self) -> UplinkMode {
            self.mode
        }
    }

    const T: Duration = Duration::from_secs(1);

    fn in_switch(mode: UplinkMode) -> FastPath<FakeInstance> {
        FastPath::Switch {
            instance: FakeInstance {
                mode,
                synced: 0,
                room: 0,
                sent: 0,
            },
            from_nic_drained: true,
        }
    }

    #[test]
    fn a_handover_waits_for_the_acknowledgement_then_sends_the_queue_first() {
        let mut d = FakeDomain {
            queued: 5,
            ..Default::default()
        };
        let mut fp = FastPath::Domain;
        let t0 = Instant::now();
        assert_eq!(fp.toward(&mut d, UplinkMode::Twin, t0), Step::Asked);
        assert_eq!(d.requests, [(1, Owner::Switch)]);
        assert_eq!(
            fp.mode(),
            UplinkMode::Domain,
            "still in the domain until acked"
        );
        assert_eq!(fp.poll(&mut d, t0, T), Step::Stay);
        // An acknowledgement of another request does not count.
        d.acked = Some((1, Owner::Domain));
        assert_eq!(fp.poll(&mut d, t0, T), Step::Stay);
        d.acked = Some((1, Owner::Switch));
        let step = fp.poll(&mut d, t0, T);
        assert_eq!(
            step,
            Step::InSwitch {
                mode: UplinkMode::Twin,
                ring_full: 2
            }
        );
        assert!(step.fds_changed());
        let FastPath::Switch {
            instance,
            from_nic_drained,
        } = &fp
        else {
            panic!("not in the switch: {fp:?}");
        };
        assert_eq!(
            instance.sent, 3,
            "the queue went through the instance first"
        );
        assert!(!from_nic_drained, "the domain's last frames go first");
        assert_eq!(fp.mode(), UplinkMode::Twin);
        // Once there, asking again changes nothing.
        assert_eq!(fp.toward(&mut d, UplinkMode::Twin, t0), Step::Stay);
        assert_eq!(fp.poll(&mut d, t0, T), Step::Stay);
        assert_eq!(d.requests.len(), 1);
    }

    #[test]
    fn a_request_taken_back_before_the_acknowledgement_leaves_the_domain_in_charge() {
        let mut d = FakeDomain::default();
        let mut fp = FastPath::Domain;
        let t0 = Instant::now();
        fp.toward(&mut d, UplinkMode::Inline, t0);
        // Retargeting while asked keeps the one request.
        assert_eq!(fp.toward(&mut d, UplinkMode::Twin, t0), Step::Stay);
        assert!(matches!(
            fp,
            FastPath::ToSwitch {
                target: UplinkMode::Twin,
                ..
            }
        ));
        assert_eq!(fp.toward(&mut d, UplinkMode::Domain, t0), Step::Withdrawn);
        assert_eq!(d.requests, [(1, Owner::Switch), (2, Owner::Domain)]);
        // A late acknowledgement of the withdrawn request is ignored.
        d.acked = Some((1, Owner::Switch));
        assert_eq!(fp.poll(&mut d, t0, T), Step::Stay);
        assert!(matches!(fp, FastPath::Domain));
    }

    #[test]
    fn a_domain_that_never_acknowledges_times_out() {
        let mut d = FakeDomain::default();
        let mut fp = FastPath::Domain;
        let t0 = Instant::now();
        fp.toward(&mut d, UplinkMode::Twin, t0);
        assert_eq!(
            fp.poll(&mut d, t0 + T, T),
            Step::Stay,
            "not past the timeout yet"
        );
        assert_eq!(
            fp.poll(&mut d, t0 + T + Duration::from_millis(1), T),
            Step::TimedOut
        );
    }

    #[test]
    fn an_instance_that_cannot_attach_gives_the_fast_path_back_to_the_domain() {
        let mut d = FakeDomain {
            fail_attach: true,
            ..Default::default()
        };
        let mut fp = FastPath::Domain;
        let t0 = Instant::now();
        fp.toward(&mut d, UplinkMode::Twin, t0);
        d.acked = Some((1, Owner::Switch));
        assert_eq!(
            fp.poll(&mut d, t0, T),
            Step::AttachFailed {
                target: UplinkMode::Twin,
                now_in: UplinkMode::Domain,
                error: "no layout".to_string()
            }
        );
        assert!(matches!(fp, FastPath::Domain));
        assert_eq!(d.requests.last(), Some(&(2, Owner::Domain)));
    }

    #[test]
    fn the_switch_hands_back_after_syncing_its_instance() {
        let mut d = FakeDomain::default();
        let mut fp = in_switch(UplinkMode::Inline);
        let step = fp.toward(&mut d, UplinkMode::Domain, Instant::now());
        assert_eq!(step, Step::BackInDomain);
        assert!(step.fds_changed());
        assert!(matches!(fp, FastPath::Domain));
        assert_eq!(d.requests, [(1, Owner::Domain)]);
    }

    #[test]
    fn inline_and_twin_swap_in_the_switch_or_keep_the_current_one() {
        let mut d = FakeDomain::default();
        let mut fp = in_switch(UplinkMode::Inline);
        let t0 = Instant::now();
        assert_eq!(
            fp.toward(&mut d, UplinkMode::Twin, t0),
            Step::InSwitch {
                mode: UplinkMode::Twin,
                ring_full: 0
            }
        );
        assert_eq!(fp.mode(), UplinkMode::Twin);
        assert!(d.requests.is_empty(), "no request to the domain for a swap");
        d.fail_attach = true;
        assert_eq!(
            fp.toward(&mut d, UplinkMode::Inline, t0),
            Step::AttachFailed {
                target: UplinkMode::Inline,
                now_in: UplinkMode::Twin,
                error: "no layout".to_string()
            }
        );
        let FastPath::Switch { instance, .. } = &fp else {
            panic!("left the switch: {fp:?}");
        };
        assert_eq!(instance.mode, UplinkMode::Twin);
        assert_eq!(instance.synced, 1, "synced before the failed swap");
    }

    #[test]
    fn a_broken_queue_at_the_handover_is_reported_with_the_fast_path_in_the_switch() {
        let mut d = FakeDomain {
            broken_queue: true,
            ..Default::default()
        };
        let mut fp = FastPath::Domain;
        let t0 = Instant::now();
        fp.toward(&mut d, UplinkMode::Inline, t0);
        d.acked = Some((1, Owner::Switch));
        assert_eq!(
            fp.poll(&mut d, t0, T),
            Step::QueueBroken {
                mode: UplinkMode::Inline,
                error: "index out of range".to_string()
            }
        );
        assert_eq!(fp.mode(), UplinkMode::Inline);
    }
}
