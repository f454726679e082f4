//! The data path: one thread that moves frames from every source (client transmit
//! queues, uplink receive queues) to their destinations, in batches.
//!
//! Per loop iteration it: takes control-plane news (client connects, uplink links),
//! drains up to [`BATCH`] frames from each source, decides each frame's destination
//! with the learning table and copies it straight from the source memory into the
//! destination's buffer (one copy, no staging, no allocation), then publishes every
//! destination once and notifies the peers that asked for it. In `busy` mode it spins;
//! in `event` mode, when an iteration found no work, it re-enables notifications on
//! every source, re-checks, and sleeps in epoll on the kick and call eventfds.
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

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use twin_wire::ether::ETH_HLEN;
use twin_wire::{MacAddr, Segments};
use vm_memory::VolatileSlice;
use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};

use crate::client_port::ClientPort;
use crate::config::PollMode;
use crate::counters::{Drop, PortCounters};
use crate::fdb::{Destination, Fdb, Learned, Memo, PortId};
use crate::uplink::{Sent, Uplink, UplinkError};

/// Frames taken from one source per iteration.
pub const BATCH: usize = 64;
/// How long an idle event-mode loop sleeps at most before looking at control news.
const IDLE_WAIT: Duration = Duration::from_millis(50);
/// Empty busy-poll rounds before the data path yields its core.
const IDLE_SPINS_BEFORE_YIELD: u32 = 16;
/// At most this many batches are drained from a client whose rings are changing.
const MAX_DRAIN_BATCHES: usize = 64;
/// How often learned addresses are expired.
const EXPIRE_INTERVAL_MS: u64 = 1000;

/// Errors of the data path.
#[derive(Debug, thiserror::Error)]
pub enum DataPathError {
    /// An uplink could not be reconnected.
    #[error(transparent)]
    Uplink(#[from] UplinkError),
    /// epoll failed.
    #[error("epoll failed")]
    Epoll(#[source] std::io::Error),
}

/// The switch's ports and learning table.
#[derive(Debug)]
pub struct DataPath {
    /// Client ports; their [`PortId`] is their index.
    pub clients: Vec<ClientPort>,
    /// Uplinks; their [`PortId`] is `clients.len()` plus their index.
    pub uplinks: Vec<Uplink>,
    /// The learning table.
    pub fdb: Fdb,
    /// Sources not learned because the table was full.
    pub fdb_full: u64,
    /// Flooded frames a second one ingress port may send (0: no limit).
    pub flood_pps: u64,
    poll: PollMode,
    start: Instant,
    last_expire_ms: u64,
    /// Commands from the control socket.
    ctl: Option<std::sync::mpsc::Receiver<crate::ctl::Request>>,
    /// The client memory budget shared by the client ports (for the report).
    pub memory_budget: Option<std::sync::Arc<vhost_device::MemoryBudget>>,
}

/// The ports a frame can go to, with the ingress port borrowed elsewhere.
struct Egress<'a> {
    /// Client ports before the ingress client (or all clients, for an uplink source).
    clients_lo: &'a mut [ClientPort],
    /// Client ports after the ingress client.
    clients_hi: &'a mut [ClientPort],
    /// Uplinks before the ingress uplink (or all uplinks, for a client source).
    uplinks_lo: &'a mut [Uplink],
    /// Uplinks after the ingress uplink.
    uplinks_hi: &'a mut [Uplink],
    /// Port ids at which the `_hi` slices start (ingress + 1).
    clients_hi_base: usize,
    uplinks_hi_base: usize,
    n_clients: usize,
    n_ports: usize,
    /// Copies delivered so far (the measure of progress: a round that only drops,
    /// because its destinations are full, lets the core go to whoever drains them).
    delivered: usize,
}

/// Where a switching decision sends frames: the egress side of [`switch_frame`],
/// so that the decision can be tested without real ports.
trait Ports {
    /// Ports below this id are client ports; the others are uplinks.
    fn n_clients(&self) -> usize;
    /// Number of ports (client ports, then uplinks).
    fn n_ports(&self) -> usize;
    /// Copies `frame` to port `p`.
    fn deliver(&mut self, p: usize, frame: &Segments<'_>) -> Delivery;
}

impl Ports for Egress<'_> {
    fn n_clients(&self) -> usize {
        self.n_clients
    }

    fn n_ports(&self) -> usize {
        self.n_ports
    }

    fn deliver(&mut self, p: usize, frame: &Segments<'_>) -> Delivery {
        Egress::deliver(self, p, frame)
    }
}

impl Egress<'_> {
    fn client(&mut self, i: usize) -> Option<&mut ClientPort> {
        if i < self.clients_lo.len() {
            self.clients_lo.get_mut(i)
        } else {
            self.clients_hi
                .get_mut(i.checked_sub(self.clients_hi_base)?)
        }
    }

    fn uplink(&mut self, i: usize) -> Option<&mut Uplink> {
        if i < self.uplinks_lo.len() {
            self.uplinks_lo.get_mut(i)
        } else {
            self.uplinks_hi
                .get_mut(i.checked_sub(self.uplinks_hi_base)?)
        }
    }

    /// Copies `frame` to port `p`. A copy that a resource shortage prevents is
    /// counted on the egress port; a port that is down is [`Delivery::Skipped`] and
    /// counted by the caller only when it was the one destination.
    fn deliver(&mut self, p: usize, frame: &Segments<'_>) -> Delivery {
        let len = frame.len() as u64;
        if p < self.n_clients {
            let Some(port) = self.client(p) else {
                return Delivery::Skipped;
            };
            if !port.handle.is_ready() {
                return Delivery::Skipped;
            }
            // Device-level failures (no receive buffers, bad chains) are counted by
            // the device under their own reasons.
            if port.handle.push_rx(frame).is_err() {
                return Delivery::Dropped;
            }
            port.counters.tx_packets += 1;
            port.counters.tx_bytes += len;
            self.delivered += 1;
            Delivery::Delivered
        } else {
            let Some(up) = self.uplink(p - self.n_clients) else {
                return Delivery::Skipped;
            };
            let Some((drv, counters)) = up.driver_and_counters() else {
                return Delivery::Skipped;
            };
            match drv.send(frame, counters) {
                Sent::Queued => {
                    counters.tx_packets += 1;
                    counters.tx_bytes += len;
                    self.delivered += 1;
                    Delivery::Delivered
                }
                Sent::Dropped => Delivery::Dropped,
            }
        }
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

/// What happened to one copy of a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Delivery {
    /// Copied into the destination.
    Delivered,
    /// The destination could not take it; counted there.
    Dropped,
    /// The destination is down or not ready; not counted (yet).
    Skipped,
}

/// The port a frame came in on, as the switching decision needs it.
struct Ingress<'a> {
    id: PortId,
    /// The configured MAC, when anti-spoofing is on.
    mac: Option<MacAddr>,
    counters: &'a mut PortCounters,
    memo: &'a mut Memo,
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
    let mut hdr = [0u8; ETH_HLEN];
    if frame.read_prefix(&mut hdr) < ETH_HLEN {
        counters.drop(Drop::Runt);
        return;
    }
    let (dst, src) = (MacAddr::dst_of(&hdr), MacAddr::src_of(&hdr));
    if src.is_multicast() {
        counters.drop(Drop::GroupSource);
        return;
    }
    if ingress.mac.is_some_and(|m| m != src) {
        counters.drop(Drop::SpoofedSource);
        return;
    }
    // From here on the frame is the checked header plus the rest of the source's
    // memory: re-reading the header from there would let the source change what
    // was checked. (Cannot fail: the frame holds the header's 14 bytes.)
    let Some(frame) = Segments::with_header(VolatileSlice::from(&mut hdr[..]), frame) else {
        counters.drop(Drop::Runt);
        return;
    };
    let frame = &frame;
    match t.fdb.learn_memo(ingress.memo, src, ingress.id, t.now_ms) {
        Learned::TableFull => *t.fdb_full += 1,
        Learned::Pinned => {
            counters.drop(Drop::StolenSource);
            return;
        }
        _ => {}
    }
    let me = ingress.id;
    match t.fdb.lookup_memo(ingress.memo, dst, t.now_ms) {
        Destination::Port(p) if p == me => counters.drop(Drop::Hairpin),
        Destination::Port(p) => {
            if egress.deliver(usize::from(p), frame) == Delivery::Skipped {
                let down = if usize::from(p) < egress.n_clients() {
                    Drop::DestinationDown
                } else {
                    Drop::UplinkDown
                };
                counters.drop(down);
            }
        }
        Destination::Flood => {
            if !ingress.memo.allow_flood(t.flood_pps, t.now_ms) {
                counters.drop(Drop::FloodLimited);
                return;
            }
            let mut any = false;
            for p in (0..egress.n_ports()).filter(|&p| p != usize::from(me)) {
                any |= egress.deliver(p, frame) != Delivery::Skipped;
            }
            if !any {
                counters.drop(Drop::NoDestination);
            }
        }
    }
}

impl DataPath {
    /// A data path over the given ports.
    pub fn new(clients: Vec<ClientPort>, uplinks: Vec<Uplink>, fdb: Fdb, poll: PollMode) -> Self {
        DataPath {
            clients,
            uplinks,
            fdb,
            fdb_full: 0,
            flood_pps: 0,
            poll,
            start: Instant::now(),
            last_expire_ms: 0,
            ctl: None,
            memory_budget: None,
        }
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
        for r in requests {
            let answer = match &r.command {
                Command::Status => Response::ok(&crate::report(self)),
                Command::Fault { uplink, fault } => {
                    match self.uplinks.iter_mut().find(|u| &u.spec.name == uplink) {
                        None => no_uplink(uplink),
                        Some(u) => match u.inject(fault.kind()) {
                            Ok(()) => Response::ok(&r.command),
                            Err(e) => Response::error(ErrorKind::Rejected, e),
                        },
                    }
                }
                Command::Revive { uplink } => {
                    match self.uplinks.iter_mut().find(|u| &u.spec.name == uplink) {
                        None => no_uplink(uplink),
                        Some(u) => match u.revive() {
                            Ok(()) => Response::ok(&r.command),
                            Err(e) => Response::error(ErrorKind::Rejected, e),
                        },
                    }
                }
                Command::Mode { uplink, mode } => {
                    match self.uplinks.iter_mut().find(|u| &u.spec.name == uplink) {
                        None => no_uplink(uplink),
                        Some(u) => {
                            changed |= u.set_mode(*mode, now);
                            Response::ok(&r.command)
                        }
                    }
                }
            };
            let _ = r.reply.try_send(answer);
        }
        changed
    }

    fn now_ms(&self, now: Instant) -> u64 {
        now.duration_since(self.start).as_millis() as u64
    }

    /// Frames dropped so far by the switch itself, over all ports and reasons.
    fn total_drops(&self) -> u64 {
        let ports = self.clients.iter().map(|c| &c.counters);
        ports
            .chain(self.uplinks.iter().map(|u| &u.counters))
            .map(|c| Drop::ALL.iter().map(|d| c.dropped(*d)).sum::<u64>())
            .sum()
    }

    /// Takes control-plane news. Returns true when the set of wait fds changed.
    fn control(&mut self, now: Instant) -> Result<bool, DataPathError> {
        let mut changed = self.serve_control(now);
        let now_ms = self.now_ms(now);
        for i in 0..self.clients.len() {
            if self.clients[i].handle.has_pending_change() {
                // Drain before adopting: a client stops its rings only after its last
                // frame, so every frame it posted is taken (bounded against a client
                // that keeps posting).
                for _ in 0..MAX_DRAIN_BATCHES {
                    if self.forward_client(i, now_ms).taken == 0 {
                        break;
                    }
                }
                self.flush();
            }
            let c = &mut self.clients[i];
            if let Some(ev) = c.refresh() {
                changed = true;
                if matches!(ev, vhost_device::PortEvent::Disconnected) {
                    self.fdb.forget_port(i as PortId);
                }
            }
        }
        let n_clients = self.clients.len();
        let dropped_so_far = self.total_drops();
        for (i, u) in self.uplinks.iter_mut().enumerate() {
            if u.check_link(now, dropped_so_far)? {
                changed = true;
                if u.driver().is_none() {
                    self.fdb.forget_port((n_clients + i) as PortId);
                }
            }
        }
        if now_ms.saturating_sub(self.last_expire_ms) >= EXPIRE_INTERVAL_MS {
            self.fdb.expire(now_ms);
            self.last_expire_ms = now_ms;
        }
        Ok(changed)
    }

    /// Moves one batch from every source.
    fn forward_once(&mut self, now_ms: u64) -> Moved {
        let mut work = Moved::default();
        for i in 0..self.clients.len() {
            work += self.forward_client(i, now_ms);
        }
        for k in 0..self.uplinks.len() {
            work += self.forward_uplink(k, now_ms);
        }
        work
    }

    /// Moves one batch from client `i`'s transmit queue.
    fn forward_client(&mut self, i: usize, now_ms: u64) -> Moved {
        let n_clients = self.clients.len();
        let n_ports = n_clients + self.uplinks.len();
        let (lo, rest) = self.clients.split_at_mut(i);
        let Some((src, hi)) = rest.split_first_mut() else {
            return Moved::default();
        };
        if !src.handle.is_ready() {
            return Moved::default();
        }
        let mut egress = Egress {
            clients_lo: lo,
            clients_hi: hi,
            uplinks_lo: &mut self.uplinks,
            uplinks_hi: &mut [],
            clients_hi_base: i + 1,
            uplinks_hi_base: usize::MAX,
            n_clients,
            n_ports,
            delivered: 0,
        };
        let mut table = Table {
            fdb: &mut self.fdb,
            fdb_full: &mut self.fdb_full,
            now_ms,
            flood_pps: self.flood_pps,
        };
        let mut ingress = Ingress {
            id: i as PortId,
            mac: src.spec.mac,
            counters: &mut src.counters,
            memo: &mut src.memo,
        };
        let taken = src.handle.pop_tx(BATCH, |frame| {
            switch_frame(frame, &mut ingress, &mut table, &mut egress)
        });
        Moved {
            taken,
            delivered: egress.delivered,
        }
    }

    /// Moves one batch from uplink `k`'s receive queue.
    fn forward_uplink(&mut self, k: usize, now_ms: u64) -> Moved {
        let n_clients = self.clients.len();
        let n_ports = n_clients + self.uplinks.len();
        let (lo, rest) = self.uplinks.split_at_mut(k);
        let Some((src, hi)) = rest.split_first_mut() else {
            return Moved::default();
        };
        let Some((drv, counters, memo)) = src.source_parts() else {
            return Moved::default();
        };
        let mut egress = Egress {
            clients_lo: &mut self.clients,
            clients_hi: &mut [],
            uplinks_lo: lo,
            uplinks_hi: hi,
            clients_hi_base: usize::MAX,
            uplinks_hi_base: k + 1,
            n_clients,
            n_ports,
            delivered: 0,
        };
        let mut table = Table {
            fdb: &mut self.fdb,
            fdb_full: &mut self.fdb_full,
            now_ms,
            flood_pps: self.flood_pps,
        };
        let mut ingress = Ingress {
            id: (n_clients + k) as PortId,
            mac: None,
            counters,
            memo,
        };
        let taken = drv.rx_burst(BATCH, |frame| {
            switch_frame(frame, &mut ingress, &mut table, &mut egress)
        });
        Moved {
            taken,
            delivered: egress.delivered,
        }
    }

    /// Publishes what this iteration delivered and notifies peers that want it.
    fn flush(&mut self) {
        for c in &mut self.clients {
            if c.handle.is_ready() {
                c.handle.flush_rx();
            }
        }
        for u in &mut self.uplinks {
            if let Some(d) = u.driver_mut() {
                d.flush();
            }
        }
    }

    /// Registers every source's notification fd in a fresh epoll set.
    fn build_waits(&self) -> Result<Epoll, DataPathError> {
        let ep = Epoll::new().map_err(DataPathError::Epoll)?;
        // The control threads write a port's wake fd on every change, so a sleeping
        // data path takes control news at once.
        let fds = self
            .clients
            .iter()
            .flat_map(|c| [Some(c.handle.wake_fd()), c.handle.tx_kick_fd()])
            .flatten()
            .chain(
                self.uplinks
                    .iter()
                    .filter_map(|u| u.driver().map(|d| d.rx_call_fd())),
            );
        for fd in fds {
            // Edge-triggered: every eventfd write is a new edge, so the counters need
            // not be drained.
            ep.ctl(
                ControlOperation::Add,
                fd,
                EpollEvent::new(EventSet::IN | EventSet::EDGE_TRIGGERED, fd as u64),
            )
            .map_err(DataPathError::Epoll)?;
        }
        Ok(ep)
    }

    /// Event mode, after an iteration without work: asks every source to notify,
    /// re-checks for work that raced in, and sleeps until a notification or timeout.
    fn sleep(&mut self, ep: &Epoll) -> Result<(), DataPathError> {
        let mut raced = false;
        for c in self.clients.iter_mut().filter(|c| c.handle.is_ready()) {
            raced |= c.handle.set_tx_notify(true);
        }
        for u in &mut self.uplinks {
            if let Some(d) = u.driver_mut() {
                raced |= d.set_rx_notify(true);
            }
        }
        if !raced {
            let mut events = [EpollEvent::default(); 16];
            match ep.wait(IDLE_WAIT.as_millis() as i32, &mut events) {
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(DataPathError::Epoll(e)),
            }
        } else {
            // Frames are waiting but the last rounds delivered nothing (their
            // destinations are full): let whoever shares the core drain them.
            std::thread::yield_now();
        }
        for c in self.clients.iter_mut().filter(|c| c.handle.is_ready()) {
            c.handle.set_tx_notify(false);
        }
        for u in &mut self.uplinks {
            if let Some(d) = u.driver_mut() {
                d.set_rx_notify(false);
            }
        }
        Ok(())
    }

    /// Runs until `stop` is set.
    pub fn run(&mut self, stop: &AtomicBool) -> Result<(), DataPathError> {
        let mut waits: Option<Epoll> = None;
        let mut idle_spins = 0u32;
        while !stop.load(Ordering::Relaxed) {
            let now = Instant::now();
            // Drain the rings before taking control news: a client that kicks and
            // then stops its rings gets the frames it posted before the stop.
            let work = self.forward_once(self.now_ms(now));
            self.flush();
            if self.control(now)? {
                waits = None;
            }
            // Progress is what was delivered: a round that took frames only to drop
            // them (every destination full) counts as idle, so that a busy poller
            // sharing its core with the consumer of those frames yields it.
            if work.delivered > 0 {
                idle_spins = 0;
                continue;
            }
            idle_spins = idle_spins.saturating_add(1);
            match self.poll {
                // On a machine with fewer cores than busy pollers, a poller that spins
                // through its whole time slice starves the peer it waits for; after a
                // few empty rounds it yields the core instead (a cheap syscall when no
                // one else wants it).
                PollMode::Busy if idle_spins > IDLE_SPINS_BEFORE_YIELD => std::thread::yield_now(),
                PollMode::Busy => std::hint::spin_loop(),
                PollMode::Event => {
                    // A few empty spins first: a peer that is mid-batch costs less to
                    // wait for than a sleep and a wake-up.
                    if idle_spins < 64 {
                        continue;
                    }
                    if waits.is_none() {
                        waits = Some(self.build_waits()?);
                    }
                    if let Some(ep) = &waits {
                        self.sleep(ep)?;
                    }
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
