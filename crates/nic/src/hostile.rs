//! Hostile mode: a reflecting NIC that, once, lies to its driver about the buffers
//! it used (`twin nic --mode hostile --attack KIND`), to show that the driver's
//! validation catches it and that the host recovers.
//!
//! The NIC behaves (reflects, like `reflect` mode) until it has received
//! [`AttackConfig::after`] frames from its driver; then the attack runs once:
//!
//! * `bad-used-id` ([`Attack::BadUsedId`]): the next [`AttackConfig::frames`] TX
//!   used entries lie about their id, alternately out of range (`queue size +
//!   head`: the buffer is never returned) and a duplicate of the entry just written
//!   (a descriptor no longer in flight);
//! * `long-length` ([`Attack::LongLength`]): the next `frames` reflected frames
//!   claim, in their RX used entry, 64 KiB more than was written;
//! * `runaway-index` ([`Attack::RunawayIndex`]): one TX batch publishes a used index
//!   16384 ahead of the entries written;
//! * `stuck` ([`Attack::Stuck`]): the TX used ring stops advancing: frames are taken
//!   (and reflected) but their buffers are never returned, until the driver
//!   reconnects.
//!
//! The attack is one per run: it ends after its entries (or, `stuck`, when the
//! connection ends), and the NIC behaves from then on, also toward a reconnecting
//! driver. The report's `attack` section says what was done.

use serde::Serialize;
use vhost_device::datapath::hostile::{Ring, UsedTamper};

/// The kinds of attack.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Attack {
    /// TX used ids out of range or not in flight.
    BadUsedId,
    /// RX used lengths beyond the buffer.
    LongLength,
    /// A TX used index far ahead of what was made available.
    RunawayIndex,
    /// A TX used ring that never advances.
    Stuck,
}

/// Error of this module.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// Not an attack this NIC knows.
    #[error("unknown attack {0:?} (bad-used-id, long-length, runaway-index, stuck)")]
    UnknownAttack(String),
}

impl std::str::FromStr for Attack {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        match s {
            "bad-used-id" => Ok(Attack::BadUsedId),
            "long-length" => Ok(Attack::LongLength),
            "runaway-index" => Ok(Attack::RunawayIndex),
            "stuck" => Ok(Attack::Stuck),
            _ => Err(Error::UnknownAttack(s.to_string())),
        }
    }
}

/// What hostile mode does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AttackConfig {
    /// The attack.
    pub kind: Attack,
    /// Frames received from the driver (over the whole run) before it starts.
    pub after: u64,
    /// `bad-used-id` and `long-length`: how many used entries lie.
    pub frames: u64,
}

impl Default for AttackConfig {
    /// `bad-used-id` at once, four entries.
    fn default() -> Self {
        Self {
            kind: Attack::BadUsedId,
            after: 0,
            frames: 4,
        }
    }
}

/// What the attack did, for the report.
#[derive(Debug, Clone, Default, Serialize)]
pub struct AttackReport {
    /// The attack.
    pub kind: Option<Attack>,
    /// Used entries written as a lie (`stuck`: buffers withheld; `runaway-index`:
    /// 1).
    pub tampered: u64,
    /// Frames received from the driver when it started (`None`: never started).
    pub started_at_frame: Option<u64>,
    /// Whether it is over (the NIC behaves again).
    pub finished: bool,
    /// The driver connection it ran on.
    pub connection: Option<u64>,
    /// Frames received from the driver on later connections (after the driver
    /// reconnected to a NIC that behaves again).
    pub frames_on_later_connections: u64,
}

/// The attack's state, owned by the NIC's loop.
#[derive(Debug)]
pub(crate) struct Hostile {
    cfg: AttackConfig,
    current: Option<u64>,
    pub(crate) report: AttackReport,
}

impl Hostile {
    pub(crate) fn new(cfg: AttackConfig) -> Self {
        Self {
            cfg,
            current: None,
            report: AttackReport {
                kind: Some(cfg.kind),
                ..AttackReport::default()
            },
        }
    }

    /// The driver connection now (`None` while none is up).
    pub(crate) fn current(&self) -> u64 {
        self.current.unwrap_or(0)
    }

    fn active(&self) -> bool {
        self.report.started_at_frame.is_some() && !self.report.finished
    }

    /// The connection changed: a `stuck` attack is over.
    pub(crate) fn connection(&mut self, connection: Option<u64>) {
        self.current = connection;
        if self.active() && self.report.connection != connection {
            self.report.finished = true;
        }
    }

    /// `n` frames were taken from the driver.
    pub(crate) fn taken(&mut self, n: usize) {
        if self.report.connection.is_some() && self.current != self.report.connection {
            self.report.frames_on_later_connections += n as u64;
        }
    }

    /// How to write the next used entry on `ring`, with `received` frames taken so
    /// far (including the one this entry is for, on TX) on `connection`.
    pub(crate) fn decide(&mut self, ring: Ring, received: u64, connection: u64) -> UsedTamper {
        if self.report.finished {
            return UsedTamper::Honest;
        }
        if self.report.started_at_frame.is_none() {
            // Starts with the first TX entry after `after` frames.
            if ring != Ring::Tx || received <= self.cfg.after {
                return UsedTamper::Honest;
            }
            self.report.started_at_frame = Some(received - 1);
            self.report.connection = Some(connection);
            twin_log::warn_local!(attack = ?self.cfg.kind, after = received - 1, connection,
                "hostile NIC: the attack starts");
        }
        let t = match (self.cfg.kind, ring) {
            (Attack::BadUsedId, Ring::Tx) => {
                if self.report.tampered.is_multiple_of(2) {
                    UsedTamper::IdOutOfRange
                } else {
                    UsedTamper::Duplicate
                }
            }
            (Attack::LongLength, Ring::Rx) => UsedTamper::LongLength,
            (Attack::RunawayIndex, Ring::Tx) => UsedTamper::RunawayIndex,
            (Attack::Stuck, Ring::Tx) => UsedTamper::Withhold,
            _ => return UsedTamper::Honest,
        };
        self.report.tampered += 1;
        let done = match self.cfg.kind {
            Attack::BadUsedId | Attack::LongLength => self.report.tampered >= self.cfg.frames,
            Attack::RunawayIndex => true,
            Attack::Stuck => false,
        };
        if done {
            self.report.finished = true;
        }
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_window_then_honest() {
        let mut h = Hostile::new(AttackConfig {
            kind: Attack::BadUsedId,
            after: 2,
            frames: 3,
        });
        assert_eq!(h.decide(Ring::Tx, 1, 1), UsedTamper::Honest);
        assert_eq!(h.decide(Ring::Tx, 2, 1), UsedTamper::Honest);
        assert_eq!(h.decide(Ring::Tx, 3, 1), UsedTamper::IdOutOfRange);
        assert_eq!(h.decide(Ring::Rx, 3, 1), UsedTamper::Honest);
        assert_eq!(h.decide(Ring::Tx, 4, 1), UsedTamper::Duplicate);
        assert_eq!(h.decide(Ring::Tx, 5, 1), UsedTamper::IdOutOfRange);
        assert_eq!(h.decide(Ring::Tx, 6, 1), UsedTamper::Honest);
        assert_eq!(h.report.tampered, 3);
        assert_eq!(h.report.started_at_frame, Some(2));

        let mut l = Hostile::new(AttackConfig {
            kind: Attack::LongLength,
            after: 0,
            frames: 1,
        });
        assert_eq!(l.decide(Ring::Tx, 1, 1), UsedTamper::Honest);
        assert_eq!(l.decide(Ring::Rx, 1, 1), UsedTamper::LongLength);
        assert_eq!(l.decide(Ring::Rx, 2, 1), UsedTamper::Honest);

        let mut s = Hostile::new(AttackConfig {
            kind: Attack::Stuck,
            after: 0,
            frames: 0,
        });
        assert_eq!(s.decide(Ring::Tx, 1, 7), UsedTamper::Withhold);
        assert_eq!(s.decide(Ring::Tx, 2, 7), UsedTamper::Withhold);
        s.connection(Some(7));
        assert_eq!(s.decide(Ring::Tx, 3, 7), UsedTamper::Withhold);
        s.connection(Some(8));
        assert_eq!(s.decide(Ring::Tx, 4, 8), UsedTamper::Honest);
        assert!(s.report.finished);

        assert!("nope".parse::<Attack>().is_err());
        assert_eq!("runaway-index".parse::<Attack>(), Ok(Attack::RunawayIndex));
    }
}
