//! The forwarding database of the L2 learning switch: which port a MAC address was
//! last seen on.
//!
//! Limits, chosen because every source address comes from an untrusted client:
//! * the table has a fixed capacity, allocated up front, so a client that sprays
//!   random source addresses can neither grow memory nor make the data path allocate;
//!   when the table is full, new addresses are not learned (their frames are flooded)
//!   and the event is counted;
//! * entries age out after a configurable time without traffic from that address;
//! * group (multicast/broadcast) source addresses are never learned.
//!
//! Time is passed in by the caller as a monotonic tick in milliseconds, so the
//! table is deterministic under test.

use std::collections::HashMap;

use twin_wire::MacAddr;

/// Index of a switch port (client ports first, then uplinks).
pub type PortId = u16;

/// Where a frame goes, as decided by [`Fdb::lookup`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Destination {
    /// Exactly one known port.
    Port(PortId),
    /// Every port but the ingress port (unknown unicast, broadcast, multicast).
    Flood,
}

/// Outcome of [`Fdb::learn`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Learned {
    /// A new entry was added.
    New,
    /// The entry existed on this port and was refreshed.
    Refreshed,
    /// The address moved from another port to this one.
    Moved {
        /// The port it was on before.
        from: PortId,
    },
    /// Not learned: group address.
    Ignored,
    /// Not learned: the table is full.
    TableFull,
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    port: PortId,
    last_seen_ms: u64,
}

/// A MAC learning table with fixed capacity and ageing.
#[derive(Debug)]
pub struct Fdb {
    entries: HashMap<MacAddr, Entry>,
    capacity: usize,
    max_age_ms: u64,
    /// Changes whenever an address is added, moves or goes away, so that a
    /// [`Memo`] knows when its remembered answer may be stale.
    generation: u64,
}

/// One ingress port's memory of its last learning and lookup, so that a burst of
/// frames between the same two addresses hashes once per millisecond, not per frame.
/// Valid only within the same millisecond and the same table generation.
#[derive(Debug, Clone, Copy, Default)]
pub struct Memo {
    learned: Option<(MacAddr, u64)>,
    looked_up: Option<(MacAddr, u64, u64, Destination)>,
}

impl Fdb {
    /// A table of at most `capacity` entries whose entries expire after `max_age_ms`.
    pub fn new(capacity: usize, max_age_ms: u64) -> Self {
        Self {
            entries: HashMap::with_capacity(capacity),
            capacity,
            max_age_ms,
            generation: 0,
        }
    }

    /// [`Fdb::learn`], skipped when `memo` shows the same source was learned on this
    /// port in this millisecond. Returns false only when the table was full.
    #[inline]
    pub fn learn_memo(&mut self, memo: &mut Memo, mac: MacAddr, port: PortId, now_ms: u64) -> bool {
        if memo.learned == Some((mac, now_ms)) {
            return true;
        }
        let r = self.learn(mac, port, now_ms);
        memo.learned = Some((mac, now_ms));
        r != Learned::TableFull
    }

    /// [`Fdb::lookup`], answered from `memo` for a repeated destination in the same
    /// millisecond and table generation.
    #[inline]
    pub fn lookup_memo(&self, memo: &mut Memo, dst: MacAddr, now_ms: u64) -> Destination {
        if let Some((m, t, g, d)) = memo.looked_up {
            if m == dst && t == now_ms && g == self.generation {
                return d;
            }
        }
        let d = self.lookup(dst, now_ms);
        memo.looked_up = Some((dst, now_ms, self.generation, d));
        d
    }

    /// Records that `mac` was seen as a source on `port` at `now_ms`.
    pub fn learn(&mut self, mac: MacAddr, port: PortId, now_ms: u64) -> Learned {
        if mac.is_multicast() {
            return Learned::Ignored;
        }
        if let Some(e) = self.entries.get_mut(&mac) {
            let before = e.port;
            e.port = port;
            e.last_seen_ms = now_ms;
            return if before == port {
                Learned::Refreshed
            } else {
                self.generation += 1;
                Learned::Moved { from: before }
            };
        }
        if self.entries.len() >= self.capacity {
            return Learned::TableFull;
        }
        self.entries.insert(
            mac,
            Entry {
                port,
                last_seen_ms: now_ms,
            },
        );
        self.generation += 1;
        Learned::New
    }

    /// Where a frame to `dst` goes at `now_ms`. Expired entries count as unknown.
    pub fn lookup(&self, dst: MacAddr, now_ms: u64) -> Destination {
        if dst.is_multicast() {
            return Destination::Flood;
        }
        match self.entries.get(&dst) {
            Some(e) if now_ms.saturating_sub(e.last_seen_ms) <= self.max_age_ms => {
                Destination::Port(e.port)
            }
            _ => Destination::Flood,
        }
    }

    /// Drops entries older than the maximum age; returns how many. Call it now and
    /// then (not per packet): it walks the table.
    pub fn expire(&mut self, now_ms: u64) -> usize {
        let before = self.entries.len();
        let max_age = self.max_age_ms;
        self.entries
            .retain(|_, e| now_ms.saturating_sub(e.last_seen_ms) <= max_age);
        self.generation += 1;
        before - self.entries.len()
    }

    /// Forgets every address learned on `port` (the client went away).
    pub fn forget_port(&mut self, port: PortId) -> usize {
        let before = self.entries.len();
        self.entries.retain(|_, e| e.port != port);
        self.generation += 1;
        before - self.entries.len()
    }

    /// Number of learned addresses.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no address is learned.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: MacAddr = MacAddr([2, 0, 0, 0, 0, 1]);
    const B: MacAddr = MacAddr([2, 0, 0, 0, 0, 2]);

    #[test]
    fn learns_and_forwards() {
        let mut f = Fdb::new(8, 1000);
        assert_eq!(f.lookup(A, 0), Destination::Flood);
        assert_eq!(f.learn(A, 3, 0), Learned::New);
        assert_eq!(f.lookup(A, 10), Destination::Port(3));
        assert_eq!(f.learn(A, 3, 20), Learned::Refreshed);
        assert_eq!(f.learn(A, 4, 30), Learned::Moved { from: 3 });
        assert_eq!(f.lookup(A, 30), Destination::Port(4));
    }

    #[test]
    fn group_addresses_flood_and_are_not_learned() {
        let mut f = Fdb::new(8, 1000);
        assert_eq!(f.learn(MacAddr::BROADCAST, 1, 0), Learned::Ignored);
        assert_eq!(f.lookup(MacAddr::BROADCAST, 0), Destination::Flood);
        assert!(f.is_empty());
    }

    #[test]
    fn ages_out() {
        let mut f = Fdb::new(8, 1000);
        f.learn(A, 1, 0);
        f.learn(B, 2, 900);
        assert_eq!(f.lookup(A, 1000), Destination::Port(1));
        assert_eq!(f.lookup(A, 1001), Destination::Flood);
        assert_eq!(f.expire(1500), 1);
        assert_eq!(f.len(), 1);
        assert_eq!(f.lookup(B, 1500), Destination::Port(2));
    }

    #[test]
    fn capacity_is_a_hard_limit() {
        let mut f = Fdb::new(2, 1000);
        assert_eq!(f.learn(A, 1, 0), Learned::New);
        assert_eq!(f.learn(B, 1, 0), Learned::New);
        assert_eq!(f.learn(MacAddr::local(9), 1, 0), Learned::TableFull);
        assert_eq!(f.learn(A, 2, 1), Learned::Moved { from: 1 });
        assert_eq!(f.len(), 2);
    }

    #[test]
    fn memo_answers_within_a_millisecond_and_generation() {
        let mut f = Fdb::new(8, 1000);
        let mut m = Memo::default();
        assert!(f.learn_memo(&mut m, A, 1, 5));
        assert_eq!(f.lookup_memo(&mut m, B, 5), Destination::Flood);
        // B appears on port 2: the generation changes, the memo must not answer Flood.
        f.learn(B, 2, 5);
        assert_eq!(f.lookup_memo(&mut m, B, 5), Destination::Port(2));
        // A moves to port 3 in the same millisecond: the memo of port 1 skips the
        // learn, but a learn from port 3 is not skipped (its own memo).
        let mut m3 = Memo::default();
        assert!(f.learn_memo(&mut m3, A, 3, 5));
        assert_eq!(f.lookup(A, 5), Destination::Port(3));
        // Forgetting port 2 invalidates the memo.
        f.forget_port(2);
        assert_eq!(f.lookup_memo(&mut m, B, 5), Destination::Flood);
    }

    #[test]
    fn forgets_a_port() {
        let mut f = Fdb::new(8, 1000);
        f.learn(A, 1, 0);
        f.learn(B, 2, 0);
        assert_eq!(f.forget_port(1), 1);
        assert_eq!(f.lookup(A, 0), Destination::Flood);
    }
}
