//! Port counters and the reasons a frame can be dropped.
//!
//! Directions are named from the client's point of view to avoid the usual RX/TX
//! confusion: `from_client` = frames the client transmitted (its TX queue, queue 1),
//! `to_client` = frames delivered into the client's RX queue (queue 0).
//! Counters are plain `u64`s owned by the data-path thread; read them from there.

use serde::ser::SerializeMap;
use serde::{Serialize, Serializer};

/// Errors of this module.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A name that is not a drop reason.
    #[error("unknown drop reason {0:?}")]
    UnknownReason(String),
}

/// Why a frame was dropped. Every drop is counted under exactly one reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DropReason {
    /// The port has no ready queue (no client, or rings not started).
    NotReady,
    /// The client posted no (or not enough) receive buffers.
    NoBuffers,
    /// The client's receive buffer is smaller than header + frame (without MRG_RXBUF).
    BufferTooSmall,
    /// A frame shorter than the virtio-net header + an Ethernet header.
    TooShort,
    /// A frame longer than header + `twin_wire::ether::MAX_FRAME`.
    TooLong,
    /// A descriptor index (head or `next`) not below the queue size.
    BadIndex,
    /// A chain of more descriptors than any frame needs
    /// (`datapath::MAX_CHAIN_DESCRIPTORS`, or the queue size if smaller): a loop,
    /// or padding with empty descriptors.
    ChainLoop,
    /// A buffer outside the client's memory.
    OutOfMemory,
    /// A chain with more than `twin_wire::MAX_SEGMENTS` segments.
    TooManySegments,
    /// A write-only descriptor in a TX chain, or a read-only one in an RX chain.
    WrongDirection,
    /// An indirect descriptor (never offered).
    Indirect,
    /// The ring itself is broken (avail idx ran more than the queue size ahead).
    RingBroken,
}

impl DropReason {
    /// Every reason, in counter order.
    pub const ALL: [DropReason; 12] = [
        DropReason::NotReady,
        DropReason::NoBuffers,
        DropReason::BufferTooSmall,
        DropReason::TooShort,
        DropReason::TooLong,
        DropReason::BadIndex,
        DropReason::ChainLoop,
        DropReason::OutOfMemory,
        DropReason::TooManySegments,
        DropReason::WrongDirection,
        DropReason::Indirect,
        DropReason::RingBroken,
    ];
    /// Number of reasons.
    pub const COUNT: usize = Self::ALL.len();

    /// A stable snake_case name, for reports and logs.
    pub const fn as_str(self) -> &'static str {
        match self {
            DropReason::NotReady => "not_ready",
            DropReason::NoBuffers => "no_buffers",
            DropReason::BufferTooSmall => "buffer_too_small",
            DropReason::TooShort => "too_short",
            DropReason::TooLong => "too_long",
            DropReason::BadIndex => "bad_index",
            DropReason::ChainLoop => "chain_loop",
            DropReason::OutOfMemory => "out_of_memory",
            DropReason::TooManySegments => "too_many_segments",
            DropReason::WrongDirection => "wrong_direction",
            DropReason::Indirect => "indirect",
            DropReason::RingBroken => "ring_broken",
        }
    }

    /// Position in [`DropReason::ALL`].
    pub const fn index(self) -> usize {
        self as usize
    }

    /// Parses [`DropReason::as_str`] output.
    pub fn from_name(s: &str) -> Result<DropReason, Error> {
        Self::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| Error::UnknownReason(s.to_string()))
    }
}

impl std::fmt::Display for DropReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Drop counters, one per [`DropReason`]. Serializes as a map `reason -> count`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DropCounts(pub [u64; DropReason::COUNT]);

impl DropCounts {
    /// Counts one drop.
    #[inline]
    pub fn add(&mut self, r: DropReason) {
        self.0[r.index()] += 1;
    }

    /// The count for one reason.
    pub fn get(&self, r: DropReason) -> u64 {
        self.0[r.index()]
    }

    /// Sum over all reasons.
    pub fn total(&self) -> u64 {
        self.0.iter().sum()
    }

    /// Adds another set of counters into this one.
    pub fn merge(&mut self, o: &DropCounts) {
        for (a, b) in self.0.iter_mut().zip(o.0.iter()) {
            *a += *b;
        }
    }
}

impl Serialize for DropCounts {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(DropReason::COUNT))?;
        for r in DropReason::ALL {
            m.serialize_entry(r.as_str(), &self.get(r))?;
        }
        m.end()
    }
}

/// Counters of one port (one device), owned by the data-path thread.
#[derive(Debug, Clone, Default, Serialize)]
pub struct PortStats {
    /// Frames the client transmitted and the data path accepted.
    pub from_client_packets: u64,
    /// Bytes of those frames (without the virtio-net header).
    pub from_client_bytes: u64,
    /// Frames the client transmitted that were dropped, by reason.
    pub from_client_drops: DropCounts,
    /// Frames delivered into the client's receive queue.
    pub to_client_packets: u64,
    /// Bytes of those frames (without the virtio-net header).
    pub to_client_bytes: u64,
    /// Frames for the client that were dropped, by reason.
    pub to_client_drops: DropCounts,
    /// Interrupts (call eventfd writes) sent to the client.
    pub calls: u64,
    /// Times a ring was found broken and the port was reset.
    pub ring_resets: u64,
    /// Times the client's memory faulted (its file was truncated): the port was
    /// fenced off and the client disconnected ([`crate::fault_fence`]).
    pub memory_faults: u64,
    /// vhost-user requests the control thread refused (a bad memory table, ring
    /// or feature set); each one dropped its client. Taken from the control
    /// thread's count at every refresh.
    pub refused_requests: u64,
    /// Client connections seen by the data path (ready transitions).
    pub connects: u64,
    /// Client disconnections seen by the data path.
    pub disconnects: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for (i, r) in DropReason::ALL.into_iter().enumerate() {
            assert_eq!(r.index(), i);
            assert_eq!(DropReason::from_name(r.as_str()).unwrap(), r);
        }
        assert!(DropReason::from_name("nope").is_err());
    }

    #[test]
    fn drop_counts_add_get_total_and_merge_per_reason() {
        let mut a = DropCounts::default();
        a.add(DropReason::ChainLoop);
        a.add(DropReason::ChainLoop);
        a.add(DropReason::NoBuffers);
        assert_eq!(a.get(DropReason::ChainLoop), 2);
        assert_eq!(a.get(DropReason::NoBuffers), 1);
        assert_eq!(a.get(DropReason::NotReady), 0);
        assert_eq!(a.total(), 3);
        let mut b = DropCounts::default();
        b.add(DropReason::ChainLoop);
        b.add(DropReason::RingBroken);
        b.merge(&a);
        assert_eq!(b.get(DropReason::ChainLoop), 3);
        assert_eq!(b.get(DropReason::NoBuffers), 1);
        assert_eq!(b.get(DropReason::RingBroken), 1);
        assert_eq!(b.total(), 5);
        assert_eq!(a.total(), 3, "merge leaves its source alone");
    }

    #[test]
    fn a_reason_displays_as_its_report_name() {
        for r in DropReason::ALL {
            assert_eq!(r.to_string(), r.as_str());
        }
        assert_eq!(DropReason::BufferTooSmall.to_string(), "buffer_too_small");
    }

    #[test]
    fn drop_counts_serialize_as_every_reason_by_name() {
        let mut c = DropCounts::default();
        c.add(DropReason::Indirect);
        c.add(DropReason::Indirect);
        let v = serde_json::to_value(&c).unwrap();
        let m = v.as_object().unwrap();
        assert_eq!(m.len(), DropReason::COUNT);
        for r in DropReason::ALL {
            let want = if r == DropReason::Indirect { 2 } else { 0 };
            assert_eq!(m[r.as_str()], want, "{r}");
        }
    }
}
