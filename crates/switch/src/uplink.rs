//! An uplink: a NIC driven by the project's virtio-net driver, in one of two places.
//!
//! * `inline`: the driver runs in the switch process, on the data-path thread
//!   ([`HostedDriver`]).
//! * `domain`: the driver runs in its own driver-domain process; the switch reaches it
//!   through the exchange rings ([`DomainLink`]) and supervises it.
//!
//! Connecting (the vhost-user handshake, or starting a driver domain) happens on a
//! connector thread, so that a NIC or a domain that is slow, absent or gone never
//! stalls the data path; the ready driver is handed over through a channel. The data
//! path checks the link every [`LINK_CHECK_INTERVAL`]: a NIC that hung up, or a
//! driver domain that exited, hung (no heartbeat within the watchdog), reported a
//! failure or broke the exchange protocol, is dropped (the domain killed) and a new
//! connector starts, with backoff. Each outage is recorded with its length and the
//! frames dropped meanwhile. A domain that fails more than [`RESTART_BUDGET`] times
//! within [`BUDGET_WINDOW`] is not restarted again: the uplink stays down, reported.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, TryRecvError};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use driver_domain::{DomainLink, LaunchConfig};
use driver_host::{DriverConfig, HostedDriver};
use serde::Serialize;
use tracing::{info, warn};
use twin_wire::Segments;

use crate::config::{PollMode, UplinkMode, UplinkSpec};
use crate::counters::{Drop, PortCounters};
use crate::fdb::Memo;

/// How often the data path checks that the NIC (and the domain) are still there.
pub const LINK_CHECK_INTERVAL: Duration = Duration::from_millis(50);
/// Driver-domain restarts allowed within [`BUDGET_WINDOW`].
pub const RESTART_BUDGET: usize = 200;
/// The window of the restart budget.
pub const BUDGET_WINDOW: Duration = Duration::from_secs(60);
/// A driver domain without a heartbeat for this long counts as hung.
pub const WATCHDOG: Duration = Duration::from_millis(500);
/// Slots per exchange ring: as many as the driver's queue, so a burst the NIC
/// delivers at once fits.
const EXCHANGE_SLOTS: u32 = 512;
/// Outage windows kept for the report.
const OUTAGES_KEPT: usize = 32;

/// Errors of an uplink.
#[derive(Debug, thiserror::Error)]
pub enum UplinkError {
    /// The connector thread could not be started.
    #[error("cannot start the connector thread of uplink {name}")]
    SpawnConnector {
        /// Uplink name.
        name: String,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
}

/// The driver of a connected uplink.
#[derive(Debug)]
pub enum UplinkDriver {
    /// In this process.
    Inline(Box<HostedDriver>),
    /// In a driver-domain process.
    Domain(Box<DomainLink>),
}

/// What happened to a frame sent to an uplink.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sent {
    /// Queued for the NIC.
    Queued,
    /// Dropped and counted (ring full, too big, or the domain failed).
    Dropped,
}

impl UplinkDriver {
    /// Copies `frame` toward the NIC, counting a failure in `counters`.
    #[inline]
    pub fn send(&mut self, frame: &Segments<'_>, counters: &mut PortCounters) -> Sent {
        match self {
            UplinkDriver::Inline(d) => {
                let Some(slot) = d.tx_reserve() else {
                    counters.drop(Drop::UplinkRingFull);
                    return Sent::Dropped;
                };
                if slot.capacity() < frame.len() {
                    // Dropping the slot gives the buffer back.
                    counters.drop(Drop::TooBigForUplink);
                    return Sent::Dropped;
                }
                let copied = frame.copy_to(&slot.frame());
                if slot.commit(copied) {
                    Sent::Queued
                } else {
                    // Counted by the driver (`tx_too_long`).
                    Sent::Dropped
                }
            }
            UplinkDriver::Domain(d) => match d.send(frame) {
                driver_domain::launch::Send::Queued => Sent::Queued,
                driver_domain::launch::Send::RingFull => {
                    counters.drop(Drop::UplinkRingFull);
                    Sent::Dropped
                }
                driver_domain::launch::Send::TooBig => {
                    counters.drop(Drop::TooBigForUplink);
                    Sent::Dropped
                }
                driver_domain::launch::Send::Failed => {
                    counters.drop(Drop::UplinkDown);
                    Sent::Dropped
                }
            },
        }
    }

    /// Publishes what was sent this iteration.
    #[inline]
    pub fn flush(&mut self) {
        match self {
            UplinkDriver::Inline(d) => d.tx_flush(),
            UplinkDriver::Domain(d) => d.flush(),
        }
    }

    /// Frames received from the NIC, up to `max`.
    #[inline]
    pub fn rx_burst(&mut self, max: usize, f: impl FnMut(&Segments<'_>)) -> usize {
        match self {
            UplinkDriver::Inline(d) => d.rx_burst(max, f),
            UplinkDriver::Domain(d) => d.rx_burst(max, f),
        }
    }

    /// The fd that becomes readable when frames arrive (event mode).
    pub fn rx_call_fd(&self) -> std::os::fd::RawFd {
        match self {
            UplinkDriver::Inline(d) => d.rx_call_fd(),
            UplinkDriver::Domain(d) => d.rx_call_fd(),
        }
    }

    /// Event mode: turns receive notifications on or off; true when frames raced in.
    pub fn set_rx_notify(&mut self, on: bool) -> bool {
        match self {
            UplinkDriver::Inline(d) => d.set_rx_notify(on),
            UplinkDriver::Domain(d) => d.set_rx_notify(on),
        }
    }

    /// Frames handed to the driver that a failure would lose (domain mode).
    fn in_flight(&mut self) -> u64 {
        match self {
            UplinkDriver::Inline(_) => 0,
            UplinkDriver::Domain(d) => d.in_flight(),
        }
    }

    /// Why the link is down, if it is.
    fn failure(&mut self, now: Instant) -> Option<String> {
        match self {
            UplinkDriver::Inline(d) => (!d.is_connected()).then(|| "NIC hung up".to_string()),
            UplinkDriver::Domain(d) => d.check_health(now),
        }
    }

    /// Drops counted inside a driver domain, by reason.
    fn domain_drops(&self) -> Option<[(&'static str, u64); 2]> {
        match self {
            UplinkDriver::Inline(_) => None,
            UplinkDriver::Domain(d) => Some(d.dd_drops()),
        }
    }

    fn detail(&self) -> serde_json::Value {
        match self {
            UplinkDriver::Inline(d) => serde_json::to_value(d.stats()).unwrap_or_default(),
            UplinkDriver::Domain(d) => serde_json::json!({ "pid": d.pid() }),
        }
    }
}

enum Link {
    /// A connector thread is trying to reach the NIC (or start the domain).
    Connecting {
        rx: Receiver<UplinkDriver>,
        cancel: Arc<AtomicBool>,
    },
    /// The driver is attached to the NIC.
    Up(UplinkDriver),
    /// A driver domain failed too often; not restarted again.
    GaveUp,
}

/// One outage: from the moment the link was found down until it was up again.
#[derive(Debug, Clone, Serialize)]
pub struct Outage {
    /// Milliseconds since the switch started.
    pub start_ms: u64,
    /// How long it lasted (so far, for the current one).
    pub duration_ms: u64,
    /// Why it began.
    pub reason: String,
    /// Frames the switch dropped for this uplink meanwhile (`uplink_down` and
    /// `no_destination` on its behalf are counted on the ingress ports).
    pub frames_dropped: u64,
    /// Frames already handed to the failed driver domain that it had not taken
    /// (lost with it); 0 for inline.
    pub frames_in_flight_lost: u64,
}

/// One uplink, owned by the data-path thread.
pub struct Uplink {
    /// The configuration it was made from.
    pub spec: UplinkSpec,
    /// The switch's counters for it.
    pub counters: PortCounters,
    /// Its learning memo as an ingress port.
    pub memo: Memo,
    /// Times the NIC connected (or a domain started).
    pub connects: u64,
    /// Times the link went down.
    pub disconnects: u64,
    poll: PollMode,
    link: Link,
    last_check: Instant,
    started: Instant,
    outages: VecDeque<Outage>,
    /// Start of the current outage and the switch-wide drop count at its start.
    down_since: Option<(Instant, u64)>,
    restarts: VecDeque<Instant>,
    /// Drops counted by driver domains that have since been replaced.
    past_domain_drops: std::collections::BTreeMap<&'static str, u64>,
}

impl std::fmt::Debug for Uplink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Uplink")
            .field("name", &self.spec.name)
            .field("mode", &self.spec.mode)
            .field("up", &matches!(self.link, Link::Up(_)))
            .finish()
    }
}

/// An error and its causes on one line: "a: b: c".
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

fn connect_once(spec: &UplinkSpec, poll: PollMode) -> Result<UplinkDriver, String> {
    let driver = DriverConfig::default();
    match spec.mode {
        UplinkMode::Inline => HostedDriver::connect(&spec.socket, &driver)
            .map(|d| UplinkDriver::Inline(Box::new(d)))
            .map_err(|e| error_chain(&e)),
        UplinkMode::Domain => {
            let exe = std::env::current_exe().map_err(|e| format!("cannot find twin: {e}"))?;
            let cfg = LaunchConfig {
                nic_socket: spec.socket.clone(),
                exe,
                busy_poll: poll == PollMode::Busy,
                geometry: exchange::Geometry {
                    slots: EXCHANGE_SLOTS,
                    ..exchange::Geometry::default()
                },
                driver,
                name: spec.name.clone(),
                watchdog: WATCHDOG,
                start_timeout: Duration::from_secs(5),
            };
            DomainLink::launch(&cfg)
                .map(|d| UplinkDriver::Domain(Box::new(d)))
                .map_err(|e| error_chain(&e))
        }
    }
}

fn spawn_connector(
    spec: &UplinkSpec,
    poll: PollMode,
    first_delay: Duration,
) -> Result<Link, UplinkError> {
    let (tx, rx) = mpsc::sync_channel(1);
    let cancel = Arc::new(AtomicBool::new(false));
    let stop = Arc::clone(&cancel);
    let spec2 = spec.clone();
    let socket: PathBuf = spec.socket.clone();
    let name = spec.name.clone();
    thread::Builder::new()
        .name(format!("connect-{name}"))
        .spawn(move || {
            thread::sleep(first_delay);
            let mut delay = Duration::from_millis(10);
            let mut said_waiting = false;
            let mut last_error_log = Instant::now();
            while !stop.load(Ordering::Relaxed) {
                match connect_once(&spec2, poll) {
                    Ok(d) => {
                        info!(uplink = %name, socket = %socket.display(), mode = %spec2.mode, "uplink up");
                        let _ = tx.send(d);
                        return;
                    }
                    Err(e) => {
                        if !said_waiting {
                            info!(uplink = %name, socket = %socket.display(),
                                  "waiting for the NIC, retrying: {e}");
                            said_waiting = true;
                        } else if last_error_log.elapsed() > Duration::from_secs(10) {
                            warn!(uplink = %name, "still cannot reach the NIC: {e}");
                            last_error_log = Instant::now();
                        }
                    }
                }
                thread::sleep(delay);
                delay = (delay * 2).min(Duration::from_millis(250));
            }
        })
        .map_err(|source| UplinkError::SpawnConnector {
            name: spec.name.clone(),
            source,
        })?;
    Ok(Link::Connecting { rx, cancel })
}

impl Uplink {
    /// Starts connecting to the uplink's NIC in the background.
    pub fn new(spec: UplinkSpec, poll: PollMode) -> Result<Self, UplinkError> {
        let link = spawn_connector(&spec, poll, Duration::ZERO)?;
        Ok(Uplink {
            spec,
            counters: PortCounters::default(),
            memo: Memo::default(),
            connects: 0,
            disconnects: 0,
            poll,
            link,
            last_check: Instant::now(),
            started: Instant::now(),
            outages: VecDeque::new(),
            down_since: None,
            restarts: VecDeque::new(),
            past_domain_drops: Default::default(),
        })
    }

    /// The connected driver, if any.
    #[inline]
    pub fn driver(&self) -> Option<&UplinkDriver> {
        match &self.link {
            Link::Up(d) => Some(d),
            _ => None,
        }
    }

    /// The connected driver, if any.
    #[inline]
    pub fn driver_mut(&mut self) -> Option<&mut UplinkDriver> {
        match &mut self.link {
            Link::Up(d) => Some(d),
            _ => None,
        }
    }

    /// The driver and counters, borrowed together, for the uplink as a destination.
    #[inline]
    pub fn driver_and_counters(&mut self) -> Option<(&mut UplinkDriver, &mut PortCounters)> {
        match &mut self.link {
            Link::Up(d) => Some((d, &mut self.counters)),
            _ => None,
        }
    }

    /// The driver, counters and memo, borrowed together, for the uplink as a source.
    #[inline]
    pub fn source_parts(&mut self) -> Option<(&mut UplinkDriver, &mut PortCounters, &mut Memo)> {
        match &mut self.link {
            Link::Up(d) => Some((d, &mut self.counters, &mut self.memo)),
            _ => None,
        }
    }

    /// Takes a finished connection, and now and then checks that a connected link is
    /// still healthy. `dropped_so_far` is the switch's running total of drops, to
    /// attribute to an outage. Returns true when the link changed.
    pub fn check_link(&mut self, now: Instant, dropped_so_far: u64) -> Result<bool, UplinkError> {
        match &mut self.link {
            Link::GaveUp => Ok(false),
            Link::Connecting { rx, .. } => match rx.try_recv() {
                Ok(d) => {
                    self.link = Link::Up(d);
                    self.connects += 1;
                    if let Some((since, drops0)) = self.down_since.take() {
                        let start_ms = since.duration_since(self.started).as_millis() as u64;
                        if let Some(o) = self
                            .outages
                            .iter_mut()
                            .rev()
                            .find(|o| o.start_ms == start_ms)
                        {
                            o.duration_ms = now.duration_since(since).as_millis() as u64;
                            o.frames_dropped = dropped_so_far.saturating_sub(drops0);
                        }
                        info!(uplink = %self.spec.name, outage_ms = now.duration_since(since).as_millis() as u64, "uplink back");
                    }
                    Ok(true)
                }
                Err(TryRecvError::Empty) => Ok(false),
                Err(TryRecvError::Disconnected) => {
                    self.link = spawn_connector(&self.spec, self.poll, Duration::ZERO)?;
                    Ok(false)
                }
            },
            Link::Up(d) => {
                if now.duration_since(self.last_check) < LINK_CHECK_INTERVAL {
                    return Ok(false);
                }
                self.last_check = now;
                let Some(reason) = d.failure(now) else {
                    return Ok(false);
                };
                let lost = d.in_flight();
                for (k, v) in d.domain_drops().into_iter().flatten() {
                    *self.past_domain_drops.entry(k).or_default() += v;
                }
                warn!(uplink = %self.spec.name, lost, "uplink down: {reason}; restarting");
                self.disconnects += 1;
                self.down_since = Some((now, dropped_so_far));
                self.outages.push_back(Outage {
                    start_ms: now.duration_since(self.started).as_millis() as u64,
                    duration_ms: 0,
                    reason,
                    frames_dropped: 0,
                    frames_in_flight_lost: lost,
                });
                if self.outages.len() > OUTAGES_KEPT {
                    self.outages.pop_front();
                }
                // Dropping the driver kills a domain and closes an inline NIC link,
                // before anything new starts.
                drop(std::mem::replace(&mut self.link, Link::GaveUp));
                self.restarts.push_back(now);
                while self
                    .restarts
                    .front()
                    .is_some_and(|t| now.duration_since(*t) > BUDGET_WINDOW)
                {
                    self.restarts.pop_front();
                }
                if self.spec.mode == UplinkMode::Domain && self.restarts.len() > RESTART_BUDGET {
                    warn!(uplink = %self.spec.name, "restart budget spent ({RESTART_BUDGET} in {BUDGET_WINDOW:?}); giving up");
                    self.link = Link::GaveUp;
                    return Ok(true);
                }
                // Back off when failures come in a row.
                let recent = self
                    .restarts
                    .iter()
                    .filter(|t| now.duration_since(**t) < Duration::from_secs(5))
                    .count() as u32;
                let delay =
                    Duration::from_millis(5u64 << recent.min(7)).min(Duration::from_millis(500));
                self.link = spawn_connector(&self.spec, self.poll, delay)?;
                Ok(true)
            }
        }
    }

    /// Injects a fault into the uplink's driver domain (see `crate::ctl`).
    pub fn inject(&mut self, kind: crate::ctl::FaultKind) -> Result<(), String> {
        let name = &self.spec.name;
        match &mut self.link {
            Link::Up(UplinkDriver::Domain(d)) => match kind {
                crate::ctl::FaultKind::Kill => {
                    warn!(uplink = %name, pid = d.pid(), "fault injection: kill -9");
                    d.kill();
                    Ok(())
                }
                crate::ctl::FaultKind::InDomain(f) => d.inject(f).map_err(|e| e.to_string()),
            },
            Link::Up(UplinkDriver::Inline(_)) => Err(format!(
                "uplink {name} runs inline; faults need mode=domain"
            )),
            _ => Err(format!("uplink {name} is not up")),
        }
    }

    /// Drops counted inside driver domains (past and current), by reason.
    pub fn domain_drops(&self) -> impl Iterator<Item = (String, u64)> {
        let mut all = self.past_domain_drops.clone();
        if let Some(now) = self.driver().and_then(UplinkDriver::domain_drops) {
            for (k, v) in now {
                *all.entry(k).or_default() += v;
            }
        }
        all.into_iter().map(|(k, v)| (k.to_string(), v))
    }

    /// Driver-level details for the report.
    pub fn detail(&self) -> serde_json::Value {
        let current = self.driver().map(UplinkDriver::detail);
        serde_json::json!({
            "mode": self.spec.mode,
            "connected": current.is_some(),
            "gave_up": matches!(self.link, Link::GaveUp),
            "driver": current,
            "restarts_in_window": self.restarts.len(),
            "outages": self.outages,
        })
    }
}

impl std::ops::Drop for Uplink {
    fn drop(&mut self) {
        if let Link::Connecting { cancel, .. } = &self.link {
            cancel.store(true, Ordering::Relaxed);
        }
    }
}
