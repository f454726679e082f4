//! The data path: one thread that moves frames from every port to their
//! destinations, in batches, through the one port interface ([`Port`]): it does not
//! know what kind of port it forwards from or to.
//!
//! The port table holds each port beside what the switch keeps about it (counters,
//! learning memo, pinned MAC). Forwarding from port `i` splits the table into that
//! port and an [`Egress`] view of all the others ([`PortTable::split`]), so the
//! ingress port cannot be reached as a destination: the borrows are disjoint by
//! construction.
//!
//! Per loop iteration it: takes control-plane news (client connects, uplink links),
//! drains up to [`BATCH`] frames from each port, decides each frame's destination
//! with the learning table and copies it straight from the source memory into the
//! destination's buffer (one copy, no staging, no allocation), then publishes every
//! destination once and notifies the peers that asked for it. A round that delivered
//! nothing goes to a [`twin_poll::Waiter`]: in `busy` mode it spins, then yields; in
//! `event` mode, after a few empty rounds, it re-enables notifications on every
//! source, re-checks, and sleeps in epoll on the kick and call eventfds; `adaptive`
//! polls like `busy` for a while after the last frame, then sleeps like `event`.
//!
//! Frames are delivered in the order they were taken from each source; a frame
//! flooded to several ports is copied to each.
//!
//! A frame's memory belongs to its source, which may change it at any time (a
//! client thread racing the data path). The switch decides on a private copy of the
//! Ethernet header and delivers that copy, followed by the rest of the frame from
//! the source's memory ([`Segments::with_header`]): what it checked (the source
//! address, anti-spoofing) and looked up (the destination) is what every
//! destination gets. The payload after the header is not looked at, so it is
//! copied as it is at each copy (a flooded frame's copies may differ there).
//!
//! VLANs ([`crate::vlan`]): the private copy is the frame's first 18 bytes, read
//! once; they say the frame's VLAN (by the ingress port's membership), which
//! decides the learning table's VLAN and the ports it may go to (members of its
//! VLAN only). Each copy leaves in the form its destination takes: untagged (a
//! 14-byte header) or tagged (18 bytes), both built from the private copy at
//! most once per frame, followed by the source's bytes after the original
//! header ([`Segments::replace_prefix`]): a tag is added or removed without a
//! copy of the frame and without reading the source's header again.

use std::os::fd::RawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use twin_poll::{Idle, Policy, Sources, Waiter};
use twin_wire::ether::{ETH_HLEN, ETH_VLAN_HLEN};
use twin_wire::{MacAddr, Segments};
use vm_memory::VolatileSlice;

use crate::config::PollMode;
use crate::counters::{DropReason, PortCounters};
use crate::fdb::{Destination, Fdb, Learned, Memo, PortId};
use crate::port::{Delivery, MaintainContext, Port, PortCommand, PortError, PortKind};
use crate::vlan::{self, PortVlan};

/// Frames taken from one source per iteration.
pub const BATCH: usize = 64;
/// How long an idle event-mode or adaptive loop sleeps at most before looking at
/// control news (uplink supervision runs every 50 ms).
const IDLE_WAIT: Duration = Duration::from_millis(50);
/// At most this many batches are drained from a client whose rings are changing.
const MAX_DRAIN_BATCHES: usize = 64;
/// How often learned addresses are expired.
const EXPIRE_INTERVAL_MS: u64 = 1000;

/// Errors of the data path.
#[derive(Debug, thiserror::Error)]
pub enum DataPathError {
    /// A port failed in a way that stops the switch.
    #[error(transparent)]
    Port(#[from] PortError),
    /// Waiting for work (epoll) failed.
    #[error("waiting for work failed")]
    Wait(#[from] twin_poll::WaitError),
}

/// One port and what the switch keeps about it.
#[derive(Debug)]
pub struct PortEntry {
    /// The port.
    pub port: Box<dyn Port>,
    /// Its kind (fixed for its life).
    pub kind: PortKind,
    /// The source MAC its peer must use (anti-spoofing), when configured.
    pub pinned_mac: Option<MacAddr>,
    /// The switch's counters for it.
    pub counters: PortCounters,
    /// Its learning memo as an ingress port.
    pub memo: Memo,
    /// A packet capture of the port, while one runs.
    pub capture: Option<crate::capture::Tap>,
    /// The place of a removed port ([`crate::port::factory::Vacant`]).
    pub vacant: bool,
    /// Its VLANs (fixed for its life).
    pub vlan: PortVlan,
}

impl PortEntry {
    /// A port with fresh counters.
    pub fn new(port: Box<dyn Port>) -> Self {
        PortEntry {
            kind: port.kind(),
            pinned_mac: port.pinned_mac(),
            vlan: port.vlan(),
            port,
            counters: PortCounters::default(),
            memo: Memo::default(),
            capture: None,
            vacant: false,
        }
    }

    /// The place of a removed port.
    pub fn vacant() -> Self {
        PortEntry {
            vacant: true,
            ..PortEntry::new(Box::new(crate::port::factory::Vacant))
        }
    }
}

/// The ports; a port's [`PortId`] is its index.
#[derive(Debug, Default)]
pub struct PortTable {
    entries: Vec<PortEntry>,
}

impl PortTable {
    /// A table of `ports`, numbered in order.
    pub fn new(ports: Vec<Box<dyn Port>>) -> Self {
        PortTable {
            entries: ports.into_iter().map(PortEntry::new).collect(),
        }
    }

    /// Every port, in id order.
    pub fn iter(&self) -> impl Iterator<Item = &PortEntry> {
        self.entries.iter()
    }

    /// Every port, in id order.
    pub fn iter_mut(&mut self) -> impl Iterator<Item = &mut PortEntry> {
        self.entries.iter_mut()
    }

    /// Number of ports.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True without ports.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Port `i` and every other port as destinations.
    fn split(&mut self, i: usize) -> Option<(&mut PortEntry, Egress<'_>)> {
        let (before, rest) = self.entries.split_at_mut(i);
        let (ingress, after) = rest.split_first_mut()?;
        Some((
            ingress,
            Egress {
                before,
                after,
                delivered: 0,
            },
        ))
    }
}

/// The learning table, the clock and the switch-wide limits: what every forwarding
/// decision shares, apart from the ports.
#[derive(Debug)]
struct Core {
    fdb: Fdb,
    /// Sources not learned because the table was full.
    fdb_full: u64,
    /// Flooded frames a second one ingress port may send (0: no limit).
    flood_pps: u64,
    start: Instant,
    last_expire_ms: u64,
}

/// The switch's ports and learning table.
#[derive(Debug)]
pub struct DataPath {
    /// The ports.
    pub ports: PortTable,
    core: Core,
    poll: PollMode,
    /// Commands from the control socket.
    ctl: Option<std::sync::mpsc::Receiver<crate::ctl::Request>>,
    /// The client memory budget shared by the client ports (for the report).
    pub memory_budget: Option<std::sync::Arc<vhost_device::MemoryBudget>>,
    /// Scrapes from the metrics endpoint.
    metrics: Option<std::sync::mpsc::Receiver<crate::metrics::Scrape>>,
    /// Makes the ports `twin ctl add` asks for.
    factory: Option<crate::port::factory::PortFactory>,
    /// How the loop spent its time.
    loop_stats: LoopStats,
}

/// What [`DataPath::run`] counts of itself.
#[derive(Debug, Default)]
struct LoopStats {
    rounds: u64,
    work_rounds: u64,
    idle: Duration,
}

/// Every port but the ingress one, as destinations: the ports before it and the
/// ports after it in the table.
struct Egress<'a> {
    before: &'a mut [PortEntry],
    after: &'a mut [PortEntry],
    /// Copies delivered so far (the measure of progress: a round that only drops,
    /// because its destinations are full, lets the core go to whoever drains them).
    delivered: usize,
}

/// Where a switching decision sends frames: the egress side of [`switch_frame`],
/// so that the decision can be tested without real ports.
trait Ports {
    /// Number of ports, the ingress port included.
    fn n_ports(&self) -> usize;
    /// What a frame whose one destination, port `p`, is down counts as.
    fn down_reason(&self, p: usize) -> DropReason;
    /// Port `p`'s VLANs (`None`: no such port, or the ingress port).
    fn vlan(&self, p: usize) -> Option<&PortVlan>;
    /// Copies `frame` to port `p`, counting the copy on `p` when it is delivered or
    /// dropped there; the ingress port is [`Delivery::Down`].
    fn deliver(&mut self, p: usize, frame: &Segments<'_>) -> Delivery;
}

impl Egress<'_> {
    fn entry(&mut self, p: usize) -> Option<&mut PortEntry> {
        let n = self.before.len();
        if p < n {
            self.before.get_mut(p)
        } else {
            self.after.get_mut(p.checked_sub(n + 1)?)
        }
    }

    fn entry_ref(&self, p: usize) -> Option<&PortEntry> {
        let n = self.before.len();
        if p < n {
            self.before.get(p)
        } else {
            self.after.get(p.checked_sub(n + 1)?)
        }
    }
}

impl Ports for Egress<'_> {
    fn n_ports(&self) -> usize {
        self.before.len() + 1 + self.after.len()
    }

    fn down_reason(&self, p: usize) -> DropReason {
        let kind = self.entry_ref(p).map(|e| e.kind);
        kind.unwrap_or(PortKind::Client).down_reason()
    }

    #[inline]
    fn vlan(&self, p: usize) -> Option<&PortVlan> {
        self.entry_ref(p).map(|e| &e.vlan)
    }

    #[inline]
    fn deliver(&mut self, p: usize, frame: &Segments<'_>) -> Delivery {
        let Some(e) = self.entry(p) else {
            return Delivery::Down;
        };
        let d = e.port.deliver(frame);
        match d {
            Delivery::Delivered => {
                e.counters.tx_packets += 1;
                e.counters.tx_bytes += frame.len() as u64;
                if let Some(tap) = &mut e.capture {
                    tap.frame(frame, crate::capture::Direction::Tx);
                }
                self.delivered += 1;
            }
            Delivery::Dropped(why) => e.counters.drop(why),
            Delivery::DroppedByPort | Delivery::Down => {}
        }
        d
    }
}

/// What one forwarding round did.
#[derive(Debug, Clone, Copy, Default)]
struct Moved {
    /// Frames taken from sources.
    taken: usize,
    /// Copies delivered to destinations.
    delivered: usize,
}

impl std::ops::AddAssign for Moved {
    fn add_assign(&mut self, o: Moved) {
        self.taken += o.taken;
        self.delivered += o.delivered;
    }
}

/// The port a frame came in on, as the switching decision needs it.
struct Ingress<'a> {
    id: PortId,
    /// The configured MAC, when anti-spoofing is on.
    mac: Option<MacAddr>,
    counters: &'a mut PortCounters,
    memo: &'a mut Memo,
    /// Its VLANs.
    vlan: &'a PortVlan,
}

/// The learning table and the time, shared by every source of one iteration.
struct Table<'a> {
    fdb: &'a mut Fdb,
    /// Sources not learned because the table was full.
    fdb_full: &'a mut u64,
    now_ms: u64,
    /// Flooded frames a second one ingress port may send (0: no limit).
    flood_pps: u64,
}

/// The switching decision for one frame from `ingress`, carried out on `egress`.
fn switch_frame(
    frame: &Segments<'_>,
    ingress: &mut Ingress<'_>,
    t: &mut Table<'_>,
    egress: &mut impl Ports,
) {
    let counters = &mut *ingress.counters;
    counters.rx_packets += 1;
    counters.rx_bytes += frame.len() as u64;
    // The private copy: every decision is taken on it, and every header
    // delivered is built from it.
    let mut pre = [0u8; ETH_VLAN_HLEN];
    let n = frame.read_prefix(&mut pre);
    let Some(hdr) = pre.first_chunk::<ETH_HLEN>().filter(|_| n >= ETH_HLEN) else {
        counters.drop(DropReason::Runt);
        return;
    };
    let (dst, src) = (MacAddr::dst_of(hdr), MacAddr::src_of(hdr));
    if src.is_multicast() {
        counters.drop(DropReason::GroupSource);
        return;
    }
    if ingress.mac.is_some_and(|m| m != src) {
        counters.drop(DropReason::SpoofedSource);
        return;
    }
    let (vlan, tci, hlen) = match ingress.vlan.classify(&pre, n) {
        vlan::Ingress::Vlan { vlan, tci, hlen } => (vlan, tci, hlen),
        vlan::Ingress::Runt => return counters.drop(DropReason::Runt),
        vlan::Ingress::Tagged => return counters.drop(DropReason::VlanTagged),
        vlan::Ingress::NotMember => return counters.drop(DropReason::VlanNotMember),
        vlan::Ingress::Unsupported => return counters.drop(DropReason::VlanUnsupported),
    };
    // A copy leaves untagged or tagged, its header built from the private copy
    // and followed by the source's bytes after the header it came with.
    // Re-reading the header from the source's memory would let the source
    // change what was checked.
    let mut plain_hdr = [0u8; ETH_VLAN_HLEN];
    let mut tagged_hdr = [0u8; ETH_VLAN_HLEN];
    match t
        .fdb
        .learn_memo(ingress.memo, vlan, src, ingress.id, t.now_ms)
    {
        Learned::TableFull => *t.fdb_full += 1,
        Learned::Pinned => {
            counters.drop(DropReason::StolenSource);
            return;
        }
        _ => {}
    }
    let me = ingress.id;
    match t.fdb.lookup_memo(ingress.memo, vlan, dst, t.now_ms) {
        Destination::Port(p) if p == me => counters.drop(DropReason::Hairpin),
        Destination::Port(p) => {
            let p = usize::from(p);
            let Some(pv) = egress.vlan(p).filter(|pv| pv.is_member(vlan)) else {
                // A pinned address of a port outside the frame's VLAN.
                counters.drop(DropReason::VlanNotMember);
                return;
            };
            // One destination: its form only, built in place (a segment list
            // is a few hundred bytes; the common path moves none of them).
            let tag = pv.egress_tagged(vlan).then_some(tci);
            let len = vlan::build_header(&pre, hlen, tag, &mut plain_hdr);
            let header = VolatileSlice::from(&mut plain_hdr[..len]);
            let Some(copy) = Segments::replace_prefix(header, hlen, frame) else {
                counters.drop(DropReason::Runt);
                return;
            };
            if egress.deliver(p, &copy) == Delivery::Down {
                counters.drop(egress.down_reason(p));
            }
        }
        Destination::Flood => {
            if !ingress.memo.allow_flood(t.flood_pps, t.now_ms) {
                counters.drop(DropReason::FloodLimited);
                return;
            }
            // The forms the members of the frame's VLAN take, each built once
            // and in place (a segment list is a few hundred bytes: moving one
            // per frame showed in the flood-heavy benchmark).
            let members = || {
                (0..egress.n_ports())
                    .filter(|&p| p != usize::from(me))
                    .filter_map(|p| {
                        let pv = egress.vlan(p).filter(|pv| pv.is_member(vlan))?;
                        Some((p, pv.egress_tagged(vlan)))
                    })
            };
            let (mut want_plain, mut want_tagged) = (false, false);
            for (_, tagged) in members() {
                want_plain |= !tagged;
                want_tagged |= tagged;
            }
            let plain = if want_plain {
                let len = vlan::build_header(&pre, hlen, None, &mut plain_hdr);
                let header = VolatileSlice::from(&mut plain_hdr[..len]);
                Segments::replace_prefix(header, hlen, frame)
            } else {
                None
            };
            let tagged = if want_tagged {
                let len = vlan::build_header(&pre, hlen, Some(tci), &mut tagged_hdr);
                let header = VolatileSlice::from(&mut tagged_hdr[..len]);
                Segments::replace_prefix(header, hlen, frame)
            } else {
                None
            };
            if (want_plain && plain.is_none()) || (want_tagged && tagged.is_none()) {
                counters.drop(DropReason::Runt);
                return;
            }
            let mut any = false;
            for p in (0..egress.n_ports()).filter(|&p| p != usize::from(me)) {
                let Some(pv) = egress.vlan(p).filter(|pv| pv.is_member(vlan)) else {
                    continue;
                };
                let copy = if pv.egress_tagged(vlan) {
                    &tagged
                } else {
                    &plain
                };
                if let Some(copy) = copy {
                    any |= egress.deliver(p, copy) != Delivery::Down;
                }
            }
            if !any {
                counters.drop(DropReason::NoDestination);
            }
        }
    }
}

/// Refuses `mac` when it is pinned to a port other than `except` (a configured
/// MAC belongs to one client: another cannot take it).
fn refuse_taken_mac(
    fdb: &Fdb,
    ports: &PortTable,
    mac: MacAddr,
    except: Option<usize>,
) -> Result<(), crate::ctl::Response> {
    let Some(owner) = fdb
        .pinned_to(mac)
        .map(usize::from)
        .filter(|&o| Some(o) != except)
    else {
        return Ok(());
    };
    let owner = ports.entries.get(owner).map_or("?", |e| e.port.name());
    Err(crate::ctl::Response::error(
        crate::ctl::ErrorKind::Rejected,
        format!("MAC {mac} belongs to port {owner}"),
    ))
}

impl DataPath {
    /// A data path over `ports` (a port's [`PortId`] is its index).
    pub fn new(ports: Vec<Box<dyn Port>>, fdb: Fdb, poll: PollMode) -> Self {
        DataPath {
            ports: PortTable::new(ports),
            core: Core {
                fdb,
                fdb_full: 0,
                flood_pps: 0,
                start: Instant::now(),
                last_expire_ms: 0,
            },
            poll,
            ctl: None,
            memory_budget: None,
            metrics: None,
            factory: None,
            loop_stats: LoopStats::default(),
        }
    }

    /// Lets `twin ctl add` and `remove` change the ports, making new ones with
    /// `factory` (which knows the ports there are).
    pub fn set_factory(&mut self, factory: crate::port::factory::PortFactory) {
        self.factory = Some(factory);
    }

    /// Answers scrapes from `metrics` between batches.
    pub fn set_metrics(&mut self, metrics: std::sync::mpsc::Receiver<crate::metrics::Scrape>) {
        self.metrics = Some(metrics);
    }

    /// How the loop spent its time so far.
    pub fn loop_report(&self) -> crate::counters::LoopReport {
        crate::counters::LoopReport {
            rounds: self.loop_stats.rounds,
            work_rounds: self.loop_stats.work_rounds,
            seconds: self.core.start.elapsed().as_secs_f64(),
            idle_seconds: self.loop_stats.idle.as_secs_f64(),
        }
    }

    /// Answers the metrics endpoint's scrapes with the report.
    fn serve_metrics(&self) {
        let Some(metrics) = &self.metrics else {
            return;
        };
        // At most a few a round: the endpoint serves one connection at a time.
        for _ in 0..4 {
            match metrics.try_recv() {
                Ok(scrape) => {
                    let _ = scrape.reply.try_send(crate::report(self));
                }
                Err(_) => return,
            }
        }
    }

    /// Sets how many flooded frames a second one ingress port may send (0: no limit).
    pub fn set_flood_limit(&mut self, pps: u64) {
        self.core.flood_pps = pps;
    }

    /// The learning table.
    pub fn fdb(&self) -> &Fdb {
        &self.core.fdb
    }

    /// Sources not learned because the table was full.
    pub fn fdb_full(&self) -> u64 {
        self.core.fdb_full
    }

    /// Takes commands from `ctl` between batches.
    pub fn set_control(&mut self, ctl: std::sync::mpsc::Receiver<crate::ctl::Request>) {
        self.ctl = Some(ctl);
    }

    /// Carries out control-socket commands. Returns true when a notification fd
    /// may have changed (a mode change).
    fn serve_control(&mut self, now: Instant) -> bool {
        let mut changed = false;
        let Some(ctl) = &self.ctl else {
            return false;
        };
        let mut requests = Vec::new();
        while let Ok(r) = ctl.try_recv() {
            requests.push(r);
        }
        use crate::ctl::{Command, ErrorKind, Response};
        let no_uplink =
            |name: &str| Response::error(ErrorKind::NoSuchUplink, format!("no uplink {name:?}"));
        for mut r in requests {
            let (uplink, cmd) = match &r.command {
                Command::Status => {
                    let _ = r.reply.try_send(Response::ok(&crate::report(self)));
                    continue;
                }
                // Port-table commands: Ok(whether the set of ports changed).
                Command::Add { .. }
                | Command::Remove { .. }
                | Command::Mac { .. }
                | Command::Capture { .. } => {
                    let done = match &r.command {
                        Command::Add { kind, spec } => self.add_port(*kind, spec).map(|()| true),
                        Command::Remove { port } => self.remove_port(port).map(|()| true),
                        Command::Mac { port, mac } => self.set_mac(port, mac.0).map(|()| false),
                        Command::Capture { port, .. } => {
                            self.start_capture(port, r.tap.take()).map(|()| false)
                        }
                        _ => Ok(false),
                    };
                    let answer = match done {
                        Ok(ports_changed) => {
                            changed |= ports_changed;
                            Response::ok(&r.command)
                        }
                        Err(e) => e,
                    };
                    let _ = r.reply.try_send(answer);
                    continue;
                }
                Command::Fault { uplink, fault } => (uplink, PortCommand::Fault(fault.kind())),
                Command::Revive { uplink } => (uplink, PortCommand::Revive),
                Command::Mode { uplink, mode } => (uplink, PortCommand::Mode(*mode)),
            };
            // `u0` is the uplink, `u0:1` its queue 1.
            let (name, queue) = match uplink.split_once(':') {
                None => (uplink.as_str(), Ok(None)),
                Some((name, q)) => (name, q.parse::<u32>().map(Some)),
            };
            let target = self
                .ports
                .iter_mut()
                .find(|e| e.kind == PortKind::Uplink && e.port.name() == name);
            let answer = match (target, queue) {
                (Some(e), Ok(queue)) => match e.port.command(cmd, queue, now) {
                    Ok(done) => {
                        changed |= done.fds_changed;
                        Response::ok(&r.command)
                    }
                    Err(err) => {
                        Response::error(ErrorKind::Rejected, crate::port::error_chain(&err))
                    }
                },
                _ => no_uplink(uplink),
            };
            let _ = r.reply.try_send(answer);
        }
        changed
    }

    /// Makes a port of `spec` and puts it in the first free place of the table.
    fn add_port(
        &mut self,
        kind: crate::ctl::AddKind,
        spec: &str,
    ) -> Result<(), crate::ctl::Response> {
        use crate::ctl::{AddKind, ErrorKind, Response};
        let refused = |e: &dyn std::error::Error| {
            Response::error(ErrorKind::Rejected, crate::port::error_chain(e))
        };
        let Some(factory) = self.factory.as_mut() else {
            return Err(Response::error(
                ErrorKind::Rejected,
                "this switch cannot add ports",
            ));
        };
        let slot = self.ports.entries.iter().position(|e| e.vacant);
        if slot.is_none() && self.ports.entries.len() > usize::from(PortId::MAX) {
            return Err(Response::error(ErrorKind::Rejected, "too many ports"));
        }
        let id = slot.unwrap_or(self.ports.entries.len());
        let (port, pin) = match kind {
            AddKind::Client => {
                let spec: crate::config::ClientSpec = spec.parse().map_err(|e| refused(&e))?;
                // A configured MAC belongs to one port: a new one cannot take it.
                if let Some(m) = spec.mac {
                    refuse_taken_mac(&self.core.fdb, &self.ports, m, None)?;
                }
                let mac = spec.mac;
                (factory.client(spec).map_err(|e| refused(&e))?, mac)
            }
            AddKind::Uplink => {
                let spec: crate::config::UplinkSpec = spec.parse().map_err(|e| refused(&e))?;
                (factory.uplink(spec).map_err(|e| refused(&e))?, None)
            }
        };
        twin_log::info_local!(port = %port.name(), id, "port added");
        let entry = PortEntry::new(port);
        match self.ports.entries.get_mut(id) {
            Some(place) => *place = entry,
            None => self.ports.entries.push(entry),
        }
        if let Some(mac) = pin {
            self.core.fdb.pin(mac, id as PortId);
        }
        Ok(())
    }

    /// Removes port `name`: its place becomes vacant, its addresses are
    /// forgotten, and dropping it releases what it held (a client's memory maps
    /// and descriptors, an uplink's driver domains, a capture).
    fn remove_port(&mut self, name: &str) -> Result<(), crate::ctl::Response> {
        use crate::ctl::{ErrorKind, Response};
        let Some(id) = self
            .ports
            .entries
            .iter()
            .position(|e| !e.vacant && e.port.name() == name)
        else {
            return Err(Response::error(
                ErrorKind::NoSuchPort,
                format!("no port {name:?}"),
            ));
        };
        self.core.fdb.remove_port(id as PortId);
        let gone = std::mem::replace(&mut self.ports.entries[id], PortEntry::vacant());
        drop(gone);
        if let Some(f) = &mut self.factory {
            f.forget(name);
        }
        twin_log::info_local!(port = %name, id, "port removed");
        Ok(())
    }

    /// Changes client port `name`'s MAC: the address pinned to it (anti-spoofing,
    /// the learning table) and offered in its config space; `None` lifts both.
    /// Every address the port had in the table goes (a client pinned to a MAC
    /// has no other; one that was not, loses what it was learned with).
    fn set_mac(&mut self, name: &str, mac: Option<MacAddr>) -> Result<(), crate::ctl::Response> {
        use crate::ctl::{ErrorKind, Response};
        let Some(id) = self
            .ports
            .entries
            .iter()
            .position(|e| !e.vacant && e.kind == PortKind::Client && e.port.name() == name)
        else {
            return Err(Response::error(
                ErrorKind::NoSuchPort,
                format!("no client port {name:?}"),
            ));
        };
        if let Some(m) = mac {
            refuse_taken_mac(&self.core.fdb, &self.ports, m, Some(id))?;
        }
        let entry = &mut self.ports.entries[id];
        if !entry.port.set_mac(mac) {
            return Err(Response::error(
                ErrorKind::Rejected,
                format!("port {name} has no MAC to change"),
            ));
        }
        entry.pinned_mac = mac;
        entry.memo = Memo::default();
        self.core.fdb.remove_port(id as PortId);
        if let Some(m) = mac {
            self.core.fdb.pin(m, id as PortId);
        }
        twin_log::info_local!(port = %name, mac = ?mac, "client MAC changed");
        Ok(())
    }

    /// Puts `tap` on port `name`.
    fn start_capture(
        &mut self,
        name: &str,
        tap: Option<crate::capture::Tap>,
    ) -> Result<(), crate::ctl::Response> {
        use crate::ctl::{ErrorKind, Response};
        let Some(e) = self
            .ports
            .iter_mut()
            .find(|e| !e.vacant && e.port.name() == name)
        else {
            return Err(Response::error(
                ErrorKind::NoSuchPort,
                format!("no port {name:?}"),
            ));
        };
        if e.capture.is_some() {
            return Err(Response::error(
                ErrorKind::Rejected,
                format!("port {name} is being captured already"),
            ));
        }
        let Some(tap) = tap else {
            return Err(Response::error(
                ErrorKind::Internal,
                "a capture without its tap",
            ));
        };
        e.capture = Some(tap);
        Ok(())
    }

    /// Takes the taps of finished captures off their ports, keeping their counts.
    fn end_captures(&mut self) {
        for e in self.ports.iter_mut() {
            if e.capture
                .as_ref()
                .is_some_and(crate::capture::Tap::finished)
            {
                if let Some(t) = e.capture.take() {
                    e.counters.captured += t.captured;
                    e.counters.capture_missed += t.missed;
                }
            }
        }
    }

    fn now_ms(&self, now: Instant) -> u64 {
        now.duration_since(self.core.start).as_millis() as u64
    }

    /// Frames dropped so far by the switch itself, over all ports and reasons.
    fn total_drops(&self) -> u64 {
        self.ports.iter().map(|e| e.counters.dropped_total()).sum()
    }

    /// Takes control-plane news. Returns true when the set of wait fds changed.
    fn control(&mut self, now: Instant) -> Result<bool, DataPathError> {
        let mut changed = self.serve_control(now);
        self.serve_metrics();
        self.end_captures();
        let now_ms = self.now_ms(now);
        let cx = MaintainContext {
            now,
            dropped_so_far: self.total_drops(),
        };
        for i in 0..self.ports.len() {
            if self.ports.entries[i].port.wants_drain() {
                // Drain before adopting: a client stops its rings only after its last
                // frame, so every frame it posted is taken (bounded against a client
                // that keeps posting).
                for _ in 0..MAX_DRAIN_BATCHES {
                    if self.forward_from(i, now_ms).taken == 0 {
                        break;
                    }
                }
                self.flush();
            }
            let news = self.ports.entries[i].port.maintain(&cx)?;
            changed |= news.fds_changed;
            if news.peer_gone {
                self.core.fdb.forget_port(i as PortId);
            }
        }
        if now_ms.saturating_sub(self.core.last_expire_ms) >= EXPIRE_INTERVAL_MS {
            self.core.fdb.expire(now_ms);
            self.core.last_expire_ms = now_ms;
        }
        Ok(changed)
    }

    /// Moves one batch from every port.
    fn forward_once(&mut self, now_ms: u64) -> Moved {
        let mut work = Moved::default();
        for i in 0..self.ports.len() {
            work += self.forward_from(i, now_ms);
        }
        work
    }

    /// Moves one batch from port `i`.
    fn forward_from(&mut self, i: usize, now_ms: u64) -> Moved {
        let Some((src, mut egress)) = self.ports.split(i) else {
            return Moved::default();
        };
        let mut table = Table {
            fdb: &mut self.core.fdb,
            fdb_full: &mut self.core.fdb_full,
            now_ms,
            flood_pps: self.core.flood_pps,
        };
        let mut ingress = Ingress {
            id: i as PortId,
            mac: src.pinned_mac,
            counters: &mut src.counters,
            memo: &mut src.memo,
            vlan: &src.vlan,
        };
        let capture = &mut src.capture;
        let taken = src.port.receive(BATCH, &mut |frame| {
            if let Some(tap) = capture {
                tap.frame(frame, crate::capture::Direction::Rx);
            }
            switch_frame(frame, &mut ingress, &mut table, &mut egress)
        });
        Moved {
            taken,
            delivered: egress.delivered,
        }
    }

    /// Publishes what this iteration delivered and notifies peers that want it.
    fn flush(&mut self) {
        for e in self.ports.iter_mut() {
            e.port.flush();
        }
    }

    /// Runs until `stop` is set.
    ///
    /// Per round: forward one batch from every port, flush, take control news
    /// (a changed set of wake-up fds is re-registered at the next sleep). A round
    /// that delivered nothing goes to the [`Waiter`]: spin, yield or sleep as the
    /// poll mode says (`twin_poll::waiter`), with the ports as its [`Sources`].
    pub fn run(&mut self, stop: &AtomicBool) -> Result<(), DataPathError> {
        let mut waiter = Waiter::new(self.poll.into(), Policy::new(IDLE_WAIT));
        while !stop.load(Ordering::Relaxed) {
            let now = Instant::now();
            self.loop_stats.rounds += 1;
            // Drain the rings before taking control news: a client that kicks and
            // then stops its rings gets the frames it posted before the stop.
            let work = self.forward_once(self.now_ms(now));
            self.flush();
            if self.control(now)? {
                waiter.invalidate();
            }
            // Progress is what was delivered: a round that took frames only to drop
            // them (every destination full) counts as idle, so that a busy poller
            // sharing its core with the consumer of those frames yields it.
            if work.delivered > 0 {
                self.loop_stats.work_rounds += 1;
                waiter.work();
                continue;
            }
            // An idle round counts as idle from its start: its look at the ports
            // found nothing to deliver.
            let raced = waiter.idle(&mut self.ports)? == Idle::Raced;
            if raced {
                // Frames are waiting but the last rounds delivered nothing (their
                // destinations are full): let whoever shares the core drain them.
                std::thread::yield_now();
            }
            self.loop_stats.idle += now.elapsed();
        }
        Ok(())
    }
}

/// The ports as what an idle data path waits on: every port's wake-up fds
/// (edge-triggered kick, call and control eventfds), and notifications asked of
/// every port before a sleep.
impl Sources for PortTable {
    fn wake_fds(&self, add: &mut dyn FnMut(RawFd)) {
        for e in self.iter() {
            e.port.wake_fds(add);
        }
    }

    fn set_notify(&mut self, on: bool) -> bool {
        // Every port is asked, even after one reported a race.
        let mut raced = false;
        for e in self.iter_mut() {
            raced |= e.port.set_notify(on);
        }
        raced
    }
}

#[cfg(test)]
mod loop_tests;
#[cfg(test)]
mod tests;
