//! The forwarding database of the L2 learning switch: which port a MAC address was
//! last seen on, in which VLAN.
//!
//! Learning is per VLAN (independent VLAN learning): an entry's key is the VLAN
//! and the address ([`crate::vlan::Vlan`], 0 for the native VLAN), so the same
//! address may live on one port in VLAN 10 and on another in VLAN 20, and a
//! lookup in one VLAN never answers with what was learned in another.
//!
//! Limits, chosen because every source address comes from an untrusted client:
//! * the table has a fixed capacity, allocated up front, so a client that sprays
//!   random source addresses can neither grow memory nor make the data path allocate;
//!   when the table is full, new addresses are not learned (their frames are flooded)
//!   and the event is counted;
//! * entries age out after a configurable time without traffic from that address;
//! * group (multicast/broadcast) source addresses are never learned;
//! * a configured client MAC is *pinned* to its port ([`Fdb::pin`]): it never ages,
//!   never moves, and a frame from any other port with it as source is refused
//!   ([`Learned::Pinned`]; the caller drops it), so no port, and no network behind
//!   an uplink, can take over a protected client's unicast. A pin holds in every
//!   VLAN, not only the port's own: no port may use a protected address as its
//!   source in any VLAN (an upstream bridge that learns across VLANs would
//!   otherwise move it), and a lookup of it in any VLAN answers its port (the
//!   data path delivers only within the frame's VLAN);
//! * each port may own at most a quota of learned entries ([`Fdb::new`]), so one
//!   port cannot fill the shared table and make every new address flood; refusals
//!   are counted ([`Fdb::quota_refusals`]);
//! * [`Memo::allow_flood`] is a per-ingress-port token bucket for flooded frames.
//!
//! Time is passed in by the caller as a monotonic tick in milliseconds, so the
//! table is deterministic under test.

use std::collections::HashMap;

use twin_wire::MacAddr;

use crate::vlan::Vlan;

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
    /// Not learned: the port owns its quota of entries already.
    QuotaFull,
    /// Refused: the address is pinned to another port. Drop the frame.
    Pinned,
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    port: PortId,
    last_seen_ms: u64,
}

/// Port `port`'s count of owned entries, the table grown to hold it (only when a
/// port id learns for the first time, not per frame).
fn owned_slot(owned: &mut Vec<u32>, port: PortId) -> Option<&mut u32> {
    let i = usize::from(port);
    if i >= owned.len() {
        owned.resize(i + 1, 0);
    }
    owned.get_mut(i)
}

/// A MAC learning table with fixed capacity and ageing.
#[derive(Debug)]
pub struct Fdb {
    /// Learned addresses, by VLAN and address.
    entries: HashMap<(Vlan, MacAddr), Entry>,
    /// Configured addresses (every VLAN): never age, never move, own no quota;
    /// they take room in the table's capacity.
    pins: HashMap<MacAddr, PortId>,
    capacity: usize,
    max_age_ms: u64,
    /// Changes whenever an address is added, moves or goes away, so that a
    /// [`Memo`] knows when its remembered answer may be stale.
    generation: u64,
    /// Learned entries one port may own.
    port_quota: u32,
    /// Learned (not pinned) entries owned, by port id; grows when a new port id
    /// first learns (not per frame).
    owned: Vec<u32>,
    /// Learnings refused because the port owned its quota.
    quota_refusals: u64,
}

/// One ingress port's state for the switching decisions: its last learning and
/// lookup, so that a burst of frames between the same two addresses hashes once per
/// millisecond, not per frame (valid only within the same millisecond and table
/// generation), and its flood budget ([`Memo::allow_flood`]).
#[derive(Debug, Clone, Copy, Default)]
pub struct Memo {
    learned: Option<(Vlan, MacAddr, u64)>,
    looked_up: Option<(Vlan, MacAddr, u64, u64, Destination)>,
    /// Flood tokens, in thousandths of a frame.
    flood_tokens: u64,
    flood_refilled_ms: u64,
}

impl Memo {
    /// Whether the port may flood one more frame at `now_ms` with a limit of `pps`
    /// flooded frames a second (0: no limit). Bursts of 10 ms of frames (at least
    /// 64) pass at once.
    #[inline]
    pub fn allow_flood(&mut self, pps: u64, now_ms: u64) -> bool {
        if pps == 0 {
            return true;
        }
        let cap = pps.saturating_mul(10).max(64_000);
        let elapsed = now_ms.saturating_sub(self.flood_refilled_ms);
        if elapsed > 0 {
            self.flood_tokens = self
                .flood_tokens
                .saturating_add(elapsed.saturating_mul(pps))
                .min(cap);
            self.flood_refilled_ms = now_ms;
        }
        if self.flood_tokens >= 1000 {
            self.flood_tokens -= 1000;
            true
        } else {
            false
        }
    }
}

impl Fdb {
    /// A table of at most `capacity` entries whose entries expire after
    /// `max_age_ms`, of which one port may own at most `port_quota`.
    pub fn new(capacity: usize, max_age_ms: u64, port_quota: u32) -> Self {
        Self {
            entries: HashMap::with_capacity(capacity),
            pins: HashMap::new(),
            capacity,
            max_age_ms,
            generation: 0,
            port_quota,
            owned: Vec::new(),
            quota_refusals: 0,
        }
    }

    /// Pins `mac` to `port` (a configured client MAC) in every VLAN; replaces
    /// whatever was there (a learned entry of it, in any VLAN, is forgotten and
    /// its port refunded). A control-plane operation: it walks the table.
    pub fn pin(&mut self, mac: MacAddr, port: PortId) {
        let owned = &mut self.owned;
        self.entries.retain(|(_, m), e| {
            if *m == mac {
                if let Some(o) = owned_slot(owned, e.port) {
                    *o = o.saturating_sub(1);
                }
                return false;
            }
            true
        });
        self.pins.insert(mac, port);
        self.generation += 1;
    }

    /// Learnings refused so far because the port owned its quota.
    pub fn quota_refusals(&self) -> u64 {
        self.quota_refusals
    }

    /// [`Fdb::learn`], skipped when `memo` shows the same source was learned on this
    /// port in this millisecond. A refusal ([`Learned::Pinned`]) is never memoised:
    /// every such frame must be dropped.
    #[inline]
    pub fn learn_memo(
        &mut self,
        memo: &mut Memo,
        vlan: Vlan,
        mac: MacAddr,
        port: PortId,
        now_ms: u64,
    ) -> Learned {
        if memo.learned == Some((vlan, mac, now_ms)) {
            return Learned::Refreshed;
        }
        let r = self.learn(vlan, mac, port, now_ms);
        if r != Learned::Pinned {
            memo.learned = Some((vlan, mac, now_ms));
        }
        r
    }

    /// [`Fdb::lookup`], answered from `memo` for a repeated destination in the same
    /// millisecond and table generation.
    #[inline]
    pub fn lookup_memo(
        &self,
        memo: &mut Memo,
        vlan: Vlan,
        dst: MacAddr,
        now_ms: u64,
    ) -> Destination {
        if let Some((v, m, t, g, d)) = memo.looked_up {
            if v == vlan && m == dst && t == now_ms && g == self.generation {
                return d;
            }
        }
        let d = self.lookup(vlan, dst, now_ms);
        memo.looked_up = Some((vlan, dst, now_ms, self.generation, d));
        d
    }

    /// Records that `mac` was seen as a source on `port` in `vlan` at `now_ms`.
    pub fn learn(&mut self, vlan: Vlan, mac: MacAddr, port: PortId, now_ms: u64) -> Learned {
        if mac.is_multicast() {
            return Learned::Ignored;
        }
        if let Some(&p) = self.pins.get(&mac) {
            return if p == port {
                Learned::Refreshed
            } else {
                Learned::Pinned
            };
        }
        let quota = self.port_quota;
        if let Some(e) = self.entries.get_mut(&(vlan, mac)) {
            if e.port == port {
                e.last_seen_ms = now_ms;
                return Learned::Refreshed;
            }
            let from = e.port;
            if owned_slot(&mut self.owned, port).is_none_or(|o| *o >= quota) {
                self.quota_refusals += 1;
                return Learned::QuotaFull;
            }
            e.port = port;
            e.last_seen_ms = now_ms;
            if let Some(o) = owned_slot(&mut self.owned, port) {
                *o += 1;
            }
            if let Some(o) = owned_slot(&mut self.owned, from) {
                *o = o.saturating_sub(1);
            }
            self.generation += 1;
            return Learned::Moved { from };
        }
        if self.len() >= self.capacity {
            return Learned::TableFull;
        }
        match owned_slot(&mut self.owned, port) {
            Some(o) if *o < quota => *o += 1,
            _ => {
                self.quota_refusals += 1;
                return Learned::QuotaFull;
            }
        }
        self.entries.insert(
            (vlan, mac),
            Entry {
                port,
                last_seen_ms: now_ms,
            },
        );
        self.generation += 1;
        Learned::New
    }

    /// Where a frame of `vlan` to `dst` goes at `now_ms`. Expired entries count
    /// as unknown. A pinned address answers its port in every VLAN: the caller
    /// delivers only if that port is a member of `vlan`.
    pub fn lookup(&self, vlan: Vlan, dst: MacAddr, now_ms: u64) -> Destination {
        if dst.is_multicast() {
            return Destination::Flood;
        }
        if let Some(&p) = self.pins.get(&dst) {
            return Destination::Port(p);
        }
        match self.entries.get(&(vlan, dst)) {
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
        let owned = &mut self.owned;
        self.entries.retain(|_, e| {
            let keep = now_ms.saturating_sub(e.last_seen_ms) <= max_age;
            if !keep {
                if let Some(o) = owned.get_mut(usize::from(e.port)) {
                    *o = o.saturating_sub(1);
                }
            }
            keep
        });
        self.generation += 1;
        before - self.entries.len()
    }

    /// The port `mac` is pinned to, if it is.
    pub fn pinned_to(&self, mac: MacAddr) -> Option<PortId> {
        self.pins.get(&mac).copied()
    }

    /// Forgets every address of `port`, its pinned ones included (the port was
    /// removed; its number may be given to a new port).
    pub fn remove_port(&mut self, port: PortId) -> usize {
        let before = self.len();
        self.entries.retain(|_, e| e.port != port);
        self.pins.retain(|_, p| *p != port);
        if let Some(o) = self.owned.get_mut(usize::from(port)) {
            *o = 0;
        }
        self.generation += 1;
        before - self.len()
    }

    /// Forgets every address learned on `port` (the client went away); its pinned
    /// address stays.
    pub fn forget_port(&mut self, port: PortId) -> usize {
        let before = self.entries.len();
        self.entries.retain(|_, e| e.port != port);
        if let Some(o) = self.owned.get_mut(usize::from(port)) {
            *o = 0;
        }
        self.generation += 1;
        before - self.entries.len()
    }

    /// Number of addresses in the table: learned ones (one per VLAN they were
    /// seen in) and pinned ones.
    pub fn len(&self) -> usize {
        self.entries.len() + self.pins.len()
    }

    /// Whether no address is in the table.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: MacAddr = MacAddr([2, 0, 0, 0, 0, 1]);
    const B: MacAddr = MacAddr([2, 0, 0, 0, 0, 2]);
    const C: MacAddr = MacAddr([2, 0, 0, 0, 0, 3]);

    #[test]
    fn learns_and_forwards() {
        let mut f = Fdb::new(8, 1000, 1000);
        assert_eq!(f.lookup(0, A, 0), Destination::Flood);
        assert_eq!(f.learn(0, A, 3, 0), Learned::New);
        assert_eq!(f.lookup(0, A, 10), Destination::Port(3));
        assert_eq!(f.learn(0, A, 3, 20), Learned::Refreshed);
        assert_eq!(f.learn(0, A, 4, 30), Learned::Moved { from: 3 });
        assert_eq!(f.lookup(0, A, 30), Destination::Port(4));
    }

    #[test]
    fn group_addresses_flood_and_are_not_learned() {
        let mut f = Fdb::new(8, 1000, 1000);
        assert_eq!(f.learn(0, MacAddr::BROADCAST, 1, 0), Learned::Ignored);
        assert_eq!(f.lookup(0, MacAddr::BROADCAST, 0), Destination::Flood);
        assert!(f.is_empty());
    }

    #[test]
    fn ages_out() {
        let mut f = Fdb::new(8, 1000, 1000);
        f.learn(0, A, 1, 0);
        f.learn(0, B, 2, 900);
        assert_eq!(f.lookup(0, A, 1000), Destination::Port(1));
        assert_eq!(f.lookup(0, A, 1001), Destination::Flood);
        assert_eq!(f.expire(1500), 1);
        assert_eq!(f.len(), 1);
        assert_eq!(f.lookup(0, B, 1500), Destination::Port(2));
    }

    #[test]
    fn capacity_is_a_hard_limit() {
        let mut f = Fdb::new(2, 1000, 1000);
        assert_eq!(f.learn(0, A, 1, 0), Learned::New);
        assert_eq!(f.learn(0, B, 1, 0), Learned::New);
        assert_eq!(f.learn(0, MacAddr::local(9), 1, 0), Learned::TableFull);
        assert_eq!(f.learn(0, A, 2, 1), Learned::Moved { from: 1 });
        assert_eq!(f.len(), 2);
    }

    #[test]
    fn memo_answers_within_a_millisecond_and_generation() {
        let mut f = Fdb::new(8, 1000, 1000);
        let mut m = Memo::default();
        assert_eq!(f.learn_memo(&mut m, 0, A, 1, 5), Learned::New);
        assert_eq!(f.lookup_memo(&mut m, 0, B, 5), Destination::Flood);
        // B appears on port 2: the generation changes, the memo must not answer Flood.
        f.learn(0, B, 2, 5);
        assert_eq!(f.lookup_memo(&mut m, 0, B, 5), Destination::Port(2));
        // A moves to port 3 in the same millisecond: the memo of port 1 skips the
        // learn, but a learn from port 3 is not skipped (its own memo).
        let mut m3 = Memo::default();
        assert_eq!(
            f.learn_memo(&mut m3, 0, A, 3, 5),
            Learned::Moved { from: 1 }
        );
        assert_eq!(f.lookup(0, A, 5), Destination::Port(3));
        // Forgetting port 2 invalidates the memo.
        f.forget_port(2);
        assert_eq!(f.lookup_memo(&mut m, 0, B, 5), Destination::Flood);
    }

    #[test]
    fn a_pinned_address_never_moves_ages_or_is_forgotten() {
        let mut f = Fdb::new(8, 1000, 1000);
        f.pin(A, 1);
        let mut m = Memo::default();
        // Another port (or the network behind an uplink) claims A: refused, every time.
        assert_eq!(f.learn_memo(&mut m, 0, A, 2, 5), Learned::Pinned);
        assert_eq!(f.learn_memo(&mut m, 0, A, 2, 5), Learned::Pinned);
        assert_eq!(f.lookup(0, A, 5), Destination::Port(1));
        assert_eq!(f.learn(0, A, 1, 6), Learned::Refreshed);
        assert_eq!(f.expire(1_000_000), 0);
        assert_eq!(f.lookup(0, A, 1_000_000), Destination::Port(1));
        assert_eq!(f.forget_port(1), 0);
        assert_eq!(f.lookup(0, A, 1_000_000), Destination::Port(1));
    }

    #[test]
    fn one_port_cannot_take_more_than_its_quota() {
        let mac = |i: u8| MacAddr([6, 0, 0, 0, 0x10, i]);
        let mut f = Fdb::new(16, 1000, 3);
        for i in 0..3 {
            assert_eq!(f.learn(0, mac(i), 1, 0), Learned::New);
        }
        assert_eq!(f.learn(0, mac(3), 1, 0), Learned::QuotaFull);
        assert_eq!(f.quota_refusals(), 1);
        // Other ports still learn.
        assert_eq!(f.learn(0, B, 2, 0), Learned::New);
        // Nor can a port at its quota take an address over from another.
        assert_eq!(f.learn(0, B, 1, 0), Learned::QuotaFull);
        assert_eq!(f.lookup(0, B, 0), Destination::Port(2));
        // Ageing and forgetting give the quota back.
        assert_eq!(f.expire(5000), 4);
        assert_eq!(f.learn(0, mac(3), 1, 5000), Learned::New);
        assert_eq!(f.forget_port(1), 1);
        for i in 10..13 {
            assert_eq!(f.learn(0, mac(i), 1, 5000), Learned::New);
        }
        // A move hands the quota from the old port to the new one.
        assert_eq!(f.learn(0, mac(10), 2, 5000), Learned::Moved { from: 1 });
        assert_eq!(f.learn(0, mac(20), 1, 5000), Learned::New);
    }

    #[test]
    fn floods_are_limited_per_port_with_a_burst() {
        let mut m = Memo::default();
        // 1000 floods a second: a burst of 64 (the minimum), then one a millisecond.
        let passed = (0..100).filter(|_| m.allow_flood(1000, 0)).count();
        assert_eq!(passed, 0, "no tokens before any time passed");
        let passed = (0..100).filter(|_| m.allow_flood(1000, 64)).count();
        assert_eq!(passed, 64);
        let passed = (0..100).filter(|_| m.allow_flood(1000, 65)).count();
        assert_eq!(passed, 1);
        // No limit.
        assert!((0..10_000).all(|_| m.allow_flood(0, 65)));
    }

    #[test]
    fn forgets_a_port() {
        let mut f = Fdb::new(8, 1000, 1000);
        f.learn(0, A, 1, 0);
        f.learn(0, B, 2, 0);
        assert_eq!(f.forget_port(1), 1);
        assert_eq!(f.lookup(0, A, 0), Destination::Flood);
    }

    #[test]
    fn quota_refusals_count_every_refused_learning_and_move() {
        let mac = |i: u8| MacAddr([6, 0, 0, 0, 0x20, i]);
        let mut f = Fdb::new(16, 1000, 1);
        assert_eq!(f.learn(0, mac(0), 1, 0), Learned::New);
        assert_eq!(f.learn(0, mac(1), 1, 0), Learned::QuotaFull);
        assert_eq!(f.learn(0, mac(2), 1, 0), Learned::QuotaFull);
        assert_eq!(f.quota_refusals(), 2);
        // A move onto a port at its quota is refused and counted too.
        assert_eq!(f.learn(0, mac(3), 2, 0), Learned::New);
        assert_eq!(f.learn(0, mac(3), 1, 0), Learned::QuotaFull);
        assert_eq!(f.quota_refusals(), 3);
        // Nor onto port 2, which owns its one entry (mac(3)).
        assert_eq!(f.learn(0, mac(0), 2, 0), Learned::QuotaFull);
        assert_eq!(f.quota_refusals(), 4);
    }

    #[test]
    fn a_move_charges_the_new_port_and_refunds_the_old_one() {
        let mac = |i: u8| MacAddr([6, 0, 0, 0, 0x30, i]);
        let mut f = Fdb::new(16, 1000, 2);
        assert_eq!(f.learn(0, mac(0), 1, 0), Learned::New);
        assert_eq!(f.learn(0, mac(1), 1, 0), Learned::New);
        assert_eq!(f.learn(0, mac(0), 2, 0), Learned::Moved { from: 1 });
        // Port 1 has room for one more; port 2 for one more.
        assert_eq!(f.learn(0, mac(2), 1, 0), Learned::New);
        assert_eq!(f.learn(0, mac(3), 1, 0), Learned::QuotaFull);
        assert_eq!(f.learn(0, mac(4), 2, 0), Learned::New);
        assert_eq!(f.learn(0, mac(5), 2, 0), Learned::QuotaFull);
    }

    #[test]
    fn pinning_an_address_refunds_the_port_that_had_learned_it() {
        let mac = |i: u8| MacAddr([6, 0, 0, 0, 0x40, i]);
        let mut f = Fdb::new(16, 1000, 2);
        assert_eq!(f.learn(0, mac(0), 1, 0), Learned::New);
        assert_eq!(f.learn(0, mac(1), 1, 0), Learned::New);
        f.pin(mac(0), 3);
        assert_eq!(f.lookup(0, mac(0), 0), Destination::Port(3));
        assert_eq!(f.learn(0, mac(2), 1, 0), Learned::New);
        assert_eq!(f.learn(0, mac(3), 1, 0), Learned::QuotaFull);
        // Re-pinning a pinned address refunds no one.
        f.pin(mac(0), 4);
        assert_eq!(f.learn(0, mac(4), 1, 0), Learned::QuotaFull);
        assert_eq!(f.lookup(0, mac(0), 0), Destination::Port(4));
    }

    #[test]
    fn a_memo_answers_only_for_the_same_address_millisecond_and_table() {
        let mut f = Fdb::new(8, 1000, 8);
        let mut m = Memo::default();
        f.learn(0, A, 1, 0);
        assert_eq!(f.lookup_memo(&mut m, 0, A, 1000), Destination::Port(1));
        // Another address in the same millisecond.
        assert_eq!(f.lookup_memo(&mut m, 0, B, 1000), Destination::Flood);
        assert_eq!(f.lookup_memo(&mut m, 0, A, 1000), Destination::Port(1));
        // The same address a millisecond later, when A has aged out.
        assert_eq!(f.lookup_memo(&mut m, 0, A, 1001), Destination::Flood);
        // A pin changes the table: a remembered flood is not reused.
        assert_eq!(f.lookup_memo(&mut m, 0, B, 1001), Destination::Flood);
        f.pin(B, 2);
        assert_eq!(f.lookup_memo(&mut m, 0, B, 1001), Destination::Port(2));
        // A move or a forgotten port changes the table: a remembered port is not
        // reused.
        assert_eq!(f.lookup_memo(&mut m, 0, A, 900), Destination::Port(1));
        assert_eq!(f.learn(0, A, 3, 900), Learned::Moved { from: 1 });
        assert_eq!(f.lookup_memo(&mut m, 0, A, 900), Destination::Port(3));
        f.forget_port(3);
        assert_eq!(f.lookup_memo(&mut m, 0, A, 900), Destination::Flood);
        // A learning memo skips only the same source in the same millisecond.
        let mut lm = Memo::default();
        assert_eq!(f.learn_memo(&mut lm, 0, C, 5, 2000), Learned::New);
        assert_eq!(f.learn_memo(&mut lm, 0, C, 5, 2000), Learned::Refreshed);
        assert_eq!(f.learn_memo(&mut lm, 0, A, 5, 2000), Learned::New);
        assert_eq!(
            f.learn_memo(&mut lm, 0, C, 6, 2001),
            Learned::Moved { from: 5 }
        );
    }

    #[test]
    fn expiring_or_forgetting_touches_only_what_it_should() {
        let mut f = Fdb::new(8, 1000, 8);
        assert_eq!(f.expire(0), 0, "an empty table");
        assert!(f.is_empty());
        f.learn(0, A, 1, 0);
        f.learn(0, B, 2, 0);
        f.learn(0, C, 1, 500);
        assert!(!f.is_empty());
        assert_eq!(f.len(), 3);
        assert_eq!(f.expire(1000), 0, "exactly the maximum age is still fresh");
        assert_eq!(f.expire(1001), 2);
        assert_eq!(f.lookup(0, C, 1001), Destination::Port(1));
        f.learn(0, A, 2, 1001);
        assert_eq!(f.forget_port(1), 1);
        assert_eq!(
            f.lookup(0, A, 1001),
            Destination::Port(2),
            "another port's entry stays"
        );
        assert_eq!(f.len(), 1);
    }

    #[test]
    fn time_running_backwards_grants_no_flood_tokens() {
        let mut m = Memo::default();
        // 100 ms at 1000 a second: 100 tokens (the cap is 64 000 thousandths).
        assert_eq!((0..200).filter(|_| m.allow_flood(1000, 100)).count(), 64);
        // An earlier time, then the same time again: nothing new.
        assert!(!m.allow_flood(1000, 50));
        assert!(!m.allow_flood(1000, 100));
        assert!(m.allow_flood(1000, 101));
    }

    #[test]
    fn the_same_address_lives_in_two_vlans_on_two_ports() {
        let mut f = Fdb::new(8, 1000, 8);
        assert_eq!(f.learn(10, A, 1, 0), Learned::New);
        // In VLAN 20, A is another station: learned anew, nothing moves.
        assert_eq!(f.learn(20, A, 2, 0), Learned::New);
        assert_eq!(f.lookup(10, A, 0), Destination::Port(1));
        assert_eq!(f.lookup(20, A, 0), Destination::Port(2));
        // Unknown in the native VLAN and in a third one.
        assert_eq!(f.lookup(0, A, 0), Destination::Flood);
        assert_eq!(f.lookup(30, A, 0), Destination::Flood);
        assert_eq!(f.len(), 2);
        // A move happens within a VLAN only.
        assert_eq!(f.learn(20, A, 3, 1), Learned::Moved { from: 2 });
        assert_eq!(f.lookup(10, A, 1), Destination::Port(1));
        // A memo answers only for the VLAN it looked up.
        let mut m = Memo::default();
        assert_eq!(f.lookup_memo(&mut m, 10, A, 1), Destination::Port(1));
        assert_eq!(f.lookup_memo(&mut m, 20, A, 1), Destination::Port(3));
        let mut lm = Memo::default();
        assert_eq!(f.learn_memo(&mut lm, 30, B, 4, 1), Learned::New);
        assert_eq!(f.learn_memo(&mut lm, 40, B, 4, 1), Learned::New);
        // Forgetting a port forgets it in every VLAN.
        assert_eq!(f.forget_port(4), 2);
        assert_eq!(f.lookup(30, B, 1), Destination::Flood);
    }

    #[test]
    fn a_pinned_address_is_refused_as_a_source_in_every_vlan() {
        let mut f = Fdb::new(8, 1000, 8);
        // Learned in two VLANs, then configured for port 1: the learned entries
        // go, their ports refunded.
        f.learn(10, A, 2, 0);
        f.learn(20, A, 3, 0);
        f.pin(A, 1);
        assert_eq!(f.len(), 1);
        for vlan in [0, 10, 20, 4094] {
            assert_eq!(f.learn(vlan, A, 2, 5), Learned::Pinned, "vlan {vlan}");
            assert_eq!(f.lookup(vlan, A, 5), Destination::Port(1), "vlan {vlan}");
        }
        // Its own port refreshes it in any of its VLANs, and nothing is added.
        assert_eq!(f.learn(10, A, 1, 5), Learned::Refreshed);
        assert_eq!(f.len(), 1);
        // Pins take room in the capacity.
        let mut g = Fdb::new(2, 1000, 8);
        g.pin(A, 1);
        assert_eq!(g.learn(10, B, 2, 0), Learned::New);
        assert_eq!(g.learn(10, C, 2, 0), Learned::TableFull);
        // Removing the port removes its pin.
        assert_eq!(g.remove_port(1), 1);
        assert_eq!(g.pinned_to(A), None);
        assert_eq!(g.learn(10, A, 2, 0), Learned::New);
    }
}
