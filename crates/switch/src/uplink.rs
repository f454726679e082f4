//! An uplink: a NIC driven by the project's virtio-net driver. Every uplink has a
//! driver domain ([`DomainLink`]: the NIC connection, the slow path, supervision);
//! its mode says who runs the fast path:
//!
//! * `domain`: the driver domain; the switch reaches it through the exchange rings;
//! * `inline` or `twin`: the switch's data-path thread, on the driver domain's
//!   region ([`SwitchInstance`]), after a handover (`driver_domain::handover`).
//!
//! [`Uplink::set_mode`] (`twin ctl mode`) moves the fast path at run time; a fresh
//! driver domain always starts with it and is asked to hand it over when the mode
//! wants; a faulted twin is contained here: reported, the mode set back to
//! `domain`, the driver domain restarted.
//!
//! Starting a driver domain happens on a connector thread, so that a NIC or a domain
//! that is slow, absent or gone never stalls the data path; the ready driver is
//! handed over through a channel. The data
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

use driver_domain::handover::Owner;
use driver_domain::launch::Send as DomainSend;
use driver_domain::{launch, worker, DomainLink, LaunchConfig};
use driver_host::DriverConfig;
use serde::Serialize;
use tracing::{info, warn};
use twin_wire::Segments;

use crate::config::{PollMode, UplinkMode, UplinkSpec};
use crate::counters::{Drop, PortCounters};
use crate::fdb::Memo;
use twin_runtime::SwitchInstance;

/// How often the data path checks that the NIC (and the domain) are still there.
pub const LINK_CHECK_INTERVAL: Duration = Duration::from_millis(50);
/// Driver-domain restarts allowed within [`BUDGET_WINDOW`] by default
/// (`SwitchConfig::restart_budget`); past it the uplink gives up until
/// `twin ctl revive UPLINK`.
pub const RESTART_BUDGET: usize = 200;
/// The window of the restart budget.
pub const BUDGET_WINDOW: Duration = Duration::from_secs(60);
/// A driver domain without a heartbeat for this long counts as hung.
pub const WATCHDOG: Duration = Duration::from_millis(500);
/// Slots per exchange ring: as many as the driver's queue, so a burst the NIC
/// delivers at once fits.
pub const EXCHANGE_SLOTS: u32 = 512;
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

/// The switch-side instance an uplink's fast path moves to.
fn attach_instance(kind: UplinkMode, domain: &DomainLink) -> Result<SwitchInstance, String> {
    let r = match kind {
        UplinkMode::Twin => SwitchInstance::twin(domain),
        _ => SwitchInstance::inline(domain),
    };
    r.map_err(|e| error_chain(&e))
}

/// Where a connected uplink's fast path runs (see `driver_domain::handover`).
#[derive(Debug)]
enum FastPath {
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
        instance: SwitchInstance,
        /// The driver domain's last received frames (published before it handed
        /// over) have been delivered; until then they go first.
        from_nic_drained: bool,
    },
}

/// A connected uplink: its driver domain, and wherever its fast path runs.
#[derive(Debug)]
pub struct UplinkDriver {
    domain: DomainLink,
    fast: FastPath,
}

/// What happened to a frame sent to an uplink.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sent {
    /// Queued for the NIC.
    Queued,
    /// Dropped and counted (ring full, too big, or the driver failed).
    Dropped,
}

impl UplinkDriver {
    /// Copies `frame` toward the NIC, counting a failure in `counters`.
    #[inline]
    pub fn send(&mut self, frame: &Segments<'_>, counters: &mut PortCounters) -> Sent {
        let outcome = match &mut self.fast {
            FastPath::Switch { instance, .. } => instance.send(frame),
            _ => self.domain.send(frame),
        };
        match outcome {
            DomainSend::Queued => Sent::Queued,
            DomainSend::RingFull => {
                counters.drop(Drop::UplinkRingFull);
                Sent::Dropped
            }
            DomainSend::TooBig => {
                counters.drop(Drop::TooBigForUplink);
                Sent::Dropped
            }
            DomainSend::Failed => {
                counters.drop(Drop::UplinkDown);
                Sent::Dropped
            }
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
            FastPath::Switch { .. } => self.domain.nic_rx_call_fd(),
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
    fn fast_path_name(&self) -> &'static str {
        match &self.fast {
            FastPath::Domain => "domain",
            FastPath::ToSwitch { .. } => "handing-over",
            FastPath::Switch {
                instance: SwitchInstance::Inline(_),
                ..
            } => "inline",
            FastPath::Switch {
                instance: SwitchInstance::Twin(_),
                ..
            } => "twin",
        }
    }

    /// Frames handed to the driver domain that its failure would lose.
    fn in_flight(&mut self) -> u64 {
        self.domain.in_flight()
    }

    /// Why the link is down, if it is.
    fn failure(&mut self, now: Instant) -> Option<String> {
        self.domain.check_health(now)
    }

    /// Drops counted inside the driver domain, by reason.
    fn domain_drops(&self) -> [(&'static str, u64); 3] {
        self.domain.dd_drops()
    }

    fn detail(&self) -> serde_json::Value {
        let stats = match &self.fast {
            FastPath::Switch { instance, .. } => serde_json::to_value(instance.stats()).ok(),
            _ => None,
        };
        let svm = match &self.fast {
            FastPath::Switch {
                instance: SwitchInstance::Twin(t),
                ..
            } => Some(serde_json::json!({
                "checks": t.svm().checks(),
                "faults": t.svm().faults(),
                "ranges": t.svm().map().len(),
            })),
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

enum Link {
    /// A connector thread is trying to reach the NIC (or start the domain).
    Connecting {
        rx: Receiver<UplinkDriver>,
        cancel: Arc<AtomicBool>,
    },
    /// The driver is attached to the NIC.
    Up(Box<UplinkDriver>),
    /// A driver domain failed too often; not restarted again.
    GaveUp,
}

/// A contained twin fault.
#[derive(Debug, Clone, Serialize)]
pub struct TwinFaultReport {
    /// Milliseconds since the switch started.
    pub at_ms: u64,
    /// What the twin did.
    pub fault: String,
}

/// How long a driver domain may take to acknowledge a handover before it counts as
/// failed.
pub const HANDOVER_TIMEOUT: Duration = Duration::from_secs(1);

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
    /// Where the fast path should run (the configured mode, changed by
    /// `twin ctl mode` and by a twin fault, which falls back to `domain`).
    mode: UplinkMode,
    /// Twin faults, oldest first (the last few).
    twin_faults: VecDeque<TwinFaultReport>,
    /// Twin faults in total.
    twin_fault_count: u64,
    /// Mode changes carried out.
    mode_changes: u64,
    poll: PollMode,
    link: Link,
    last_check: Instant,
    started: Instant,
    outages: VecDeque<Outage>,
    /// Start of the current outage and the switch-wide drop count at its start.
    down_since: Option<(Instant, u64)>,
    restarts: VecDeque<Instant>,
    /// Restarts allowed within [`BUDGET_WINDOW`].
    restart_budget: usize,
    /// Drops counted by driver domains that have since been replaced.
    past_domain_drops: std::collections::BTreeMap<&'static str, u64>,
    /// Device errors (driver checks of the NIC's used rings, TX timeouts) reported
    /// by driver domains that have since been replaced.
    past_device_errors: std::collections::BTreeMap<&'static str, u64>,
    /// Upcall counts of driver domains that have since been replaced.
    past_upcalls: std::collections::BTreeMap<&'static str, u64>,
}

impl std::fmt::Debug for Uplink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Uplink")
            .field("name", &self.spec.name)
            .field("mode", &self.mode)
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

/// Starts the uplink's driver domain. Every uplink has one: it negotiates with the
/// NIC, sets up the queues, runs the slow path, and runs the fast path in `domain`
/// mode; in `inline` and `twin` mode the switch takes the fast path over.
fn connect_once(spec: &UplinkSpec, poll: PollMode) -> Result<UplinkDriver, String> {
    let exe = std::env::current_exe().map_err(|e| format!("cannot find twin: {e}"))?;
    let cfg = LaunchConfig {
        nic_socket: spec.socket.clone(),
        exe,
        busy_poll: poll == PollMode::Busy,
        geometry: exchange::Geometry {
            slots: EXCHANGE_SLOTS,
            ..exchange::Geometry::default()
        },
        driver: DriverConfig::default(),
        name: spec.name.clone(),
        watchdog: WATCHDOG,
        start_timeout: Duration::from_secs(5),
        outside_id: spec.domain_id,
        memory_limit: driver_domain::launch::DOMAIN_MEMORY_LIMIT,
    };
    DomainLink::launch(&cfg)
        .map(|domain| UplinkDriver {
            domain,
            fast: FastPath::Domain,
        })
        .map_err(|e| error_chain(&e))
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
    pub fn new(
        spec: UplinkSpec,
        poll: PollMode,
        restart_budget: usize,
    ) -> Result<Self, UplinkError> {
        let link = spawn_connector(&spec, poll, Duration::ZERO)?;
        Ok(Uplink {
            mode: spec.mode,
            spec,
            counters: PortCounters::default(),
            memo: Memo::default(),
            connects: 0,
            disconnects: 0,
            twin_faults: VecDeque::new(),
            twin_fault_count: 0,
            mode_changes: 0,
            poll,
            link,
            last_check: Instant::now(),
            started: Instant::now(),
            outages: VecDeque::new(),
            down_since: None,
            restarts: VecDeque::new(),
            restart_budget,
            // Every counter is reported from the start, zeros included, so a reader
            // can tell "none" from "not reported".
            past_domain_drops: zeros(&launch::DD_DROP_NAMES),
            past_device_errors: zeros(&worker::control::DEVICE_ERROR_NAMES),
            past_upcalls: zeros(&launch::UPCALL_COUNT_NAMES),
        })
    }

    /// The connected driver, if any.
    #[inline]
    pub fn driver(&self) -> Option<&UplinkDriver> {
        match &self.link {
            Link::Up(d) => Some(&**d),
            _ => None,
        }
    }

    /// The connected driver, if any.
    #[inline]
    pub fn driver_mut(&mut self) -> Option<&mut UplinkDriver> {
        match &mut self.link {
            Link::Up(d) => Some(&mut **d),
            _ => None,
        }
    }

    /// The driver and counters, borrowed together, for the uplink as a destination.
    #[inline]
    pub fn driver_and_counters(&mut self) -> Option<(&mut UplinkDriver, &mut PortCounters)> {
        match &mut self.link {
            Link::Up(d) => Some((&mut **d, &mut self.counters)),
            _ => None,
        }
    }

    /// The driver, counters and memo, borrowed together, for the uplink as a source.
    #[inline]
    pub fn source_parts(&mut self) -> Option<(&mut UplinkDriver, &mut PortCounters, &mut Memo)> {
        match &mut self.link {
            Link::Up(d) => Some((&mut **d, &mut self.counters, &mut self.memo)),
            _ => None,
        }
    }

    /// Takes a finished connection, moves a handover on, contains a faulted twin,
    /// and now and then checks that a connected link is healthy. `dropped_so_far` is
    /// the switch's running total of drops, to attribute to an outage. Returns true
    /// when the link or its notification fd changed.
    pub fn check_link(&mut self, now: Instant, dropped_so_far: u64) -> Result<bool, UplinkError> {
        match &mut self.link {
            Link::GaveUp => Ok(false),
            Link::Connecting { rx, .. } => match rx.try_recv() {
                Ok(d) => {
                    self.link = Link::Up(Box::new(d));
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
                    // A fresh domain runs the fast path; move it where it belongs.
                    self.apply_mode(now);
                    Ok(true)
                }
                Err(TryRecvError::Empty) => Ok(false),
                Err(TryRecvError::Disconnected) => {
                    self.link = spawn_connector(&self.spec, self.poll, Duration::ZERO)?;
                    Ok(false)
                }
            },
            Link::Up(d) => {
                // Every iteration: a faulted twin does nothing, so act at once.
                if let FastPath::Switch { instance, .. } = &d.fast {
                    if let Some(f) = instance.fault() {
                        let fault = f.to_string();
                        return self.contain_twin_fault(now, dropped_so_far, fault);
                    }
                }
                if let FastPath::ToSwitch { seq, target, since } = d.fast {
                    if d.domain.owner_acked(seq, Owner::Switch) {
                        return Ok(self.finish_handover(target));
                    }
                    if now.duration_since(since) > HANDOVER_TIMEOUT {
                        let reason = format!(
                            "driver domain did not hand the fast path over within {HANDOVER_TIMEOUT:?}"
                        );
                        return self.restart(now, dropped_so_far, reason);
                    }
                }
                if now.duration_since(self.last_check) < LINK_CHECK_INTERVAL {
                    return Ok(false);
                }
                self.last_check = now;
                let Some(reason) = d.failure(now) else {
                    return Ok(false);
                };
                self.restart(now, dropped_so_far, reason)
            }
        }
    }

    /// A twin faulted: report it, fall back to `domain`, and restart the driver
    /// domain (the twin may have left its state inconsistent).
    fn contain_twin_fault(
        &mut self,
        now: Instant,
        dropped_so_far: u64,
        fault: String,
    ) -> Result<bool, UplinkError> {
        warn!(uplink = %self.spec.name, "twin disabled: {fault}; falling back to domain mode");
        self.twin_fault_count += 1;
        self.twin_faults.push_back(TwinFaultReport {
            at_ms: now.duration_since(self.started).as_millis() as u64,
            fault: fault.clone(),
        });
        if self.twin_faults.len() > OUTAGES_KEPT {
            self.twin_faults.pop_front();
        }
        self.mode = UplinkMode::Domain;
        self.restart(now, dropped_so_far, format!("twin disabled: {fault}"))
    }

    /// The driver domain acknowledged a handover to the switch: attach the switch's
    /// instance, send what is still queued for the domain first, and take over.
    fn finish_handover(&mut self, target: UplinkMode) -> bool {
        let Link::Up(d) = &mut self.link else {
            return false;
        };
        match attach_instance(target, &d.domain) {
            Ok(mut instance) => {
                let counters = &mut self.counters;
                let moved = d.domain.take_queued_to_nic(|frame| {
                    if instance.send(frame) != DomainSend::Queued {
                        counters.drop(Drop::UplinkRingFull);
                    }
                });
                instance.flush();
                if let Err(e) = moved {
                    // The DD broke the ring: its health check will restart it.
                    warn!(uplink = %self.spec.name, "to_nic ring at handover: {e}");
                }
                info!(uplink = %self.spec.name, mode = %target, "fast path runs in the switch");
                d.fast = FastPath::Switch {
                    instance,
                    from_nic_drained: false,
                };
                self.mode_changes += 1;
            }
            Err(e) => {
                warn!(uplink = %self.spec.name, mode = %target, "cannot attach the switch's instance: {e}; the driver domain keeps the fast path");
                d.domain.request_owner(Owner::Domain);
                d.fast = FastPath::Domain;
                self.mode = UplinkMode::Domain;
            }
        }
        true
    }

    /// Moves the fast path toward `self.mode`, as far as it can go without waiting.
    /// Returns true when the notification fd may have changed.
    fn apply_mode(&mut self, now: Instant) -> bool {
        let Link::Up(d) = &mut self.link else {
            return false;
        };
        let want = self.mode;
        match (&mut d.fast, want) {
            (FastPath::Domain, UplinkMode::Domain) => false,
            (FastPath::Domain, target) => {
                let seq = d.domain.request_owner(Owner::Switch);
                d.fast = FastPath::ToSwitch {
                    seq,
                    target,
                    since: now,
                };
                false
            }
            (FastPath::ToSwitch { .. }, UplinkMode::Domain) => {
                // Nothing attached yet: take the request back.
                d.domain.request_owner(Owner::Domain);
                d.fast = FastPath::Domain;
                true
            }
            (FastPath::ToSwitch { target, .. }, t) => {
                *target = t;
                false
            }
            (FastPath::Switch { instance, .. }, UplinkMode::Domain) => {
                // Quiesce at this batch boundary, hand back; frames sent from now on
                // queue in `to_nic` behind everything the instance posted.
                instance.sync();
                d.fast = FastPath::Domain;
                d.domain.request_owner(Owner::Domain);
                self.mode_changes += 1;
                info!(uplink = %self.spec.name, "fast path runs in the driver domain");
                true
            }
            (FastPath::Switch { instance, .. }, target) => {
                let same = matches!(
                    (&*instance, target),
                    (SwitchInstance::Inline(_), UplinkMode::Inline)
                        | (SwitchInstance::Twin(_), UplinkMode::Twin)
                );
                if same {
                    return false;
                }
                instance.sync();
                match attach_instance(target, &d.domain) {
                    Ok(next) => {
                        *instance = next;
                        self.mode_changes += 1;
                        info!(uplink = %self.spec.name, mode = %target, "fast path runs in the switch");
                    }
                    Err(e) => {
                        warn!(uplink = %self.spec.name, mode = %target, "cannot attach the switch's instance: {e}; keeping the current one");
                        self.mode = match instance {
                            SwitchInstance::Inline(_) => UplinkMode::Inline,
                            SwitchInstance::Twin(_) => UplinkMode::Twin,
                        };
                    }
                }
                false
            }
        }
    }

    /// `twin ctl mode`: moves the fast path to `mode` (now, or when the link is up).
    /// Returns true when the notification fd may have changed.
    pub fn set_mode(&mut self, mode: UplinkMode, now: Instant) -> bool {
        if self.mode != mode {
            info!(uplink = %self.spec.name, from = %self.mode, to = %mode, "mode change requested");
        }
        self.mode = mode;
        self.apply_mode(now)
    }

    /// The mode the uplink runs in (or is moving to).
    pub fn mode(&self) -> UplinkMode {
        self.mode
    }

    /// Drops the failed driver (killing its domain), records the outage, and starts
    /// a new domain unless the restart budget is spent.
    fn restart(
        &mut self,
        now: Instant,
        dropped_so_far: u64,
        reason: String,
    ) -> Result<bool, UplinkError> {
        let Link::Up(d) = &mut self.link else {
            return Ok(false);
        };
        let lost = d.in_flight();
        for (k, v) in d.domain_drops() {
            *self.past_domain_drops.entry(k).or_default() += v;
        }
        for (k, v) in d.domain.dd_device_errors() {
            *self.past_device_errors.entry(k).or_default() += v;
        }
        for (k, v) in d.domain.upcall_counts() {
            *self.past_upcalls.entry(k).or_default() += v;
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
        // Dropping the driver kills the domain (and with it the NIC connection)
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
        if self.restarts.len() > self.restart_budget {
            warn!(uplink = %self.spec.name, budget = self.restart_budget, window = ?BUDGET_WINDOW,
                "restart budget spent; giving up until `twin ctl revive`");
            return Ok(true);
        }
        // Back off when failures come in a row.
        let recent = self
            .restarts
            .iter()
            .filter(|t| now.duration_since(**t) < Duration::from_secs(5))
            .count() as u32;
        let delay = Duration::from_millis(5u64 << recent.min(7)).min(Duration::from_millis(500));
        self.link = spawn_connector(&self.spec, self.poll, delay)?;
        Ok(true)
    }

    /// Starts a new driver domain for an uplink that gave up (its restart budget
    /// spent), with a fresh budget: the operator's way back (`twin ctl revive`).
    pub fn revive(&mut self) -> Result<(), String> {
        if !matches!(self.link, Link::GaveUp) {
            return Err(format!("uplink {} has not given up", self.spec.name));
        }
        self.restarts.clear();
        self.link =
            spawn_connector(&self.spec, self.poll, Duration::ZERO).map_err(|e| e.to_string())?;
        info!(uplink = %self.spec.name, "revived by the operator: starting a new driver domain");
        Ok(())
    }

    /// Injects a fault into the uplink's driver domain or twin (see `crate::ctl`).
    pub fn inject(&mut self, kind: crate::ctl::FaultKind) -> Result<(), String> {
        let name = &self.spec.name;
        let Link::Up(d) = &mut self.link else {
            return Err(format!("uplink {name} is not up"));
        };
        match kind {
            crate::ctl::FaultKind::Kill => {
                warn!(uplink = %name, pid = d.domain.pid(), "fault injection: kill -9");
                d.domain.kill();
                Ok(())
            }
            crate::ctl::FaultKind::InDomain(f) => d.domain.inject(f).map_err(|e| e.to_string()),
            crate::ctl::FaultKind::InTwin(f) => match &d.fast {
                FastPath::Switch {
                    instance: SwitchInstance::Twin(t),
                    ..
                } => {
                    warn!(uplink = %name, fault = ?f, "fault injection into the twin");
                    t.inject(f);
                    Ok(())
                }
                _ => Err(format!(
                    "uplink {name} runs no twin now (fast path: {}); twin faults need mode twin",
                    d.fast_path_name()
                )),
            },
        }
    }

    /// Drops counted inside driver domains (past and current), by reason.
    pub fn domain_drops(&self) -> impl Iterator<Item = (String, u64)> {
        let mut all = self.past_domain_drops.clone();
        if let Some(now) = self.driver().map(UplinkDriver::domain_drops) {
            for (k, v) in now {
                *all.entry(k).or_default() += v;
            }
        }
        all.into_iter().map(|(k, v)| (k.to_string(), v))
    }

    /// `past` plus the current driver domain's `now`, by name.
    fn over_all_domains(
        &self,
        past: &std::collections::BTreeMap<&'static str, u64>,
        now: impl FnOnce(&UplinkDriver) -> Vec<(&'static str, u64)>,
    ) -> std::collections::BTreeMap<&'static str, u64> {
        let mut all = past.clone();
        if let Some(d) = self.driver() {
            for (k, v) in now(d) {
                *all.entry(k).or_default() += v;
            }
        }
        all
    }

    /// Driver-level details for the report.
    pub fn detail(&self) -> serde_json::Value {
        let current = self.driver().map(UplinkDriver::detail);
        let device_errors = self.over_all_domains(&self.past_device_errors, |d| {
            d.domain.dd_device_errors().to_vec()
        });
        let upcalls_total =
            self.over_all_domains(&self.past_upcalls, |d| d.domain.upcall_counts().to_vec());
        serde_json::json!({
            "mode": self.mode,
            "configured_mode": self.spec.mode,
            "mode_changes": self.mode_changes,
            "twin_fault_count": self.twin_fault_count,
            "twin_faults": self.twin_faults,
            "connected": current.is_some(),
            "gave_up": matches!(self.link, Link::GaveUp),
            "driver": current,
            "restarts_in_window": self.restarts.len(),
            "outages": self.outages,
            "device_errors": device_errors,
            "upcalls_total": upcalls_total,
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

/// A counter map with every name in `names` at zero.
fn zeros(names: &[&'static str]) -> std::collections::BTreeMap<&'static str, u64> {
    names.iter().map(|n| (*n, 0)).collect()
}
