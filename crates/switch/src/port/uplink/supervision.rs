//! Keeping an uplink's driver domain alive: starting it on a connector thread (so a
//! slow or absent NIC never stalls the data path), checking the link every
//! [`LINK_CHECK_INTERVAL`], restarting a domain that exited, hung, reported a
//! failure, broke the exchange protocol or let its twin fault, with backoff and
//! within a restart budget ([`RestartBudget`]), and recording each outage
//! ([`OutageLog`]).
//!
//! The budget and the outage log are plain state machines over `Instant`s, tested
//! here without processes; the process behaviour is tested end to end
//! (`crates/cli/tests/e2e_supervision.rs`, `e2e_domain_faults.rs`).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, TryRecvError};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use driver_domain::launch::{DomainDevice, DomainFailure};
use driver_domain::{DomainLink, LaunchConfig};
use driver_host::DriverConfig;
use serde::Serialize;
use twin_runtime::TwinFault;

use super::fast_path::{FastPath, UplinkDriver, HANDOVER_TIMEOUT};
use super::handover::Step;
use super::{error_chain, Link, TwinFaultReport, Uplink, UplinkError, EXCHANGE_SLOTS, WATCHDOG};
use crate::config::{PollMode, UplinkMode, UplinkSpec};
use crate::port::PortCommandError;

/// How often the data path checks that the NIC (and the domain) are still there.
pub const LINK_CHECK_INTERVAL: Duration = Duration::from_millis(50);
/// Driver-domain restarts allowed within [`BUDGET_WINDOW`] by default
/// (`SwitchConfig::restart_budget`); past it the uplink gives up until
/// `twin ctl revive UPLINK`.
pub const RESTART_BUDGET: usize = 200;
/// The window of the restart budget.
pub const BUDGET_WINDOW: Duration = Duration::from_secs(60);
/// Outage windows kept for the report.
const OUTAGES_KEPT: usize = 32;

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

/// Why a connected uplink went down (rendered with its causes for the outage
/// record and the log).
#[derive(Debug, thiserror::Error)]
pub(super) enum LinkDown {
    /// The driver domain failed (exited, hung, reported, broke a ring).
    #[error(transparent)]
    Domain(#[from] DomainFailure),
    /// The domain never acknowledged a handover of the fast path.
    #[error("driver domain did not hand the fast path over within {0:?}")]
    HandoverTimeout(Duration),
    /// The switch's twin instance faulted.
    #[error("twin disabled: {0}")]
    TwinFault(TwinFault),
}

/// Why a driver domain could not be started (the connector retries).
#[derive(Debug, thiserror::Error)]
pub(super) enum ConnectError {
    /// The switch's own executable (which the domain runs) was not found.
    #[error("cannot find the twin executable")]
    CurrentExe(#[source] std::io::Error),
    /// The domain did not start or reach the NIC.
    #[error(transparent)]
    Launch(#[from] driver_domain::launch::LaunchError),
}

/// Driver-domain restarts within a sliding [`BUDGET_WINDOW`], and the backoff
/// before the next start.
#[derive(Debug)]
pub(super) struct RestartBudget {
    restarts: VecDeque<Instant>,
    budget: usize,
}

/// What [`RestartBudget::record`] decides.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum NextStart {
    /// Start a new domain after this delay.
    After(Duration),
    /// More than the budget within the window: stay down until revived.
    GiveUp,
}

/// Restarts within this long of each other count as "in a row" for the backoff.
const BACKOFF_RUN: Duration = Duration::from_secs(5);
/// The backoff: 5 ms doubled per recent restart, at most this.
const BACKOFF_MAX: Duration = Duration::from_millis(500);

impl RestartBudget {
    pub(super) fn new(budget: usize) -> Self {
        RestartBudget {
            restarts: VecDeque::new(),
            budget,
        }
    }

    /// Records a restart at `now` and says when to start the next domain: at once
    /// after a first failure, later when failures come in a row (5 ms doubled per
    /// restart in the last [`BACKOFF_RUN`], at most [`BACKOFF_MAX`]), or never when
    /// more than the budget fell within the window.
    pub(super) fn record(&mut self, now: Instant) -> NextStart {
        self.restarts.push_back(now);
        while self
            .restarts
            .front()
            .is_some_and(|t| now.duration_since(*t) > BUDGET_WINDOW)
        {
            self.restarts.pop_front();
        }
        if self.restarts.len() > self.budget {
            return NextStart::GiveUp;
        }
        let recent = self
            .restarts
            .iter()
            .filter(|t| now.duration_since(**t) < BACKOFF_RUN)
            .count() as u32;
        NextStart::After(Duration::from_millis(5u64 << recent.min(7)).min(BACKOFF_MAX))
    }

    /// Forgets every restart (the operator revived the uplink).
    pub(super) fn reset(&mut self) {
        self.restarts.clear();
    }

    /// Restarts within the window, for the report.
    pub(super) fn in_window(&self) -> usize {
        self.restarts.len()
    }
}

/// The uplink's outages: each from the moment the link was found down until it was
/// up again, with the frames lost meanwhile; the last [`OUTAGES_KEPT`].
#[derive(Debug)]
pub(super) struct OutageLog {
    started: Instant,
    outages: VecDeque<Outage>,
    /// Start of the current outage and the switch-wide drop count at its start.
    down_since: Option<(Instant, u64)>,
}

impl OutageLog {
    /// An empty log; times are reported in milliseconds since `started`.
    pub(super) fn new(started: Instant) -> Self {
        OutageLog {
            started,
            outages: VecDeque::new(),
            down_since: None,
        }
    }

    /// The link went down at `now`: `in_flight_lost` frames went with the driver,
    /// and the switch had dropped `dropped_so_far` frames until then.
    pub(super) fn begin(
        &mut self,
        now: Instant,
        reason: String,
        in_flight_lost: u64,
        dropped_so_far: u64,
    ) {
        self.down_since = Some((now, dropped_so_far));
        self.outages.push_back(Outage {
            start_ms: now.duration_since(self.started).as_millis() as u64,
            duration_ms: 0,
            reason,
            frames_dropped: 0,
            frames_in_flight_lost: in_flight_lost,
        });
        if self.outages.len() > OUTAGES_KEPT {
            self.outages.pop_front();
        }
    }

    /// The link is up again at `now`; the switch has dropped `dropped_so_far`
    /// frames by now. Returns how long the outage lasted, if one was open.
    pub(super) fn end(&mut self, now: Instant, dropped_so_far: u64) -> Option<Duration> {
        let (since, drops0) = self.down_since.take()?;
        let lasted = now.duration_since(since);
        if let Some(o) = self.outages.back_mut() {
            o.duration_ms = lasted.as_millis() as u64;
            o.frames_dropped = dropped_so_far.saturating_sub(drops0);
        }
        Some(lasted)
    }

    /// The outages kept, oldest first.
    pub(super) fn records(&self) -> &VecDeque<Outage> {
        &self.outages
    }
}

/// Starts the uplink's driver domain. Every uplink has one: it negotiates with the
/// NIC, sets up the queues, runs the slow path, and runs the fast path in `domain`
/// mode; in `inline` and `twin` mode the switch takes the fast path over.
fn connect_once(
    spec: &UplinkSpec,
    device: &DomainDevice,
    poll: PollMode,
) -> Result<UplinkDriver, ConnectError> {
    let exe = std::env::current_exe().map_err(ConnectError::CurrentExe)?;
    let cfg = launch_config(spec, device, poll, exe);
    let domain = DomainLink::launch(&cfg)?;
    Ok(UplinkDriver {
        domain,
        fast: FastPath::Domain,
    })
}

/// How the uplink's domains are started: its device, this executable as `twin
/// driver-domain`, exchange rings of [`EXCHANGE_SLOTS`], the watchdog, the
/// domain's own id and address-space limit.
fn launch_config(
    spec: &UplinkSpec,
    device: &DomainDevice,
    poll: PollMode,
    exe: std::path::PathBuf,
) -> LaunchConfig {
    LaunchConfig {
        device: device.clone(),
        exe,
        poll: poll.into(),
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
    }
}

/// Starts a connector thread that starts driver domains until one reaches the NIC
/// (after `first_delay`, then with backoff), and hands it over through a channel.
pub(super) fn spawn_connector(
    spec: &UplinkSpec,
    device: &DomainDevice,
    poll: PollMode,
    first_delay: Duration,
) -> Result<Link, UplinkError> {
    let (tx, rx) = mpsc::sync_channel(1);
    let cancel = Arc::new(AtomicBool::new(false));
    let stop = Arc::clone(&cancel);
    let spec2 = spec.clone();
    let device = device.clone();
    let name = spec.name.clone();
    thread::Builder::new()
        .name(format!("connect-{name}"))
        .spawn(move || {
            thread::sleep(first_delay);
            let mut delay = Duration::from_millis(10);
            let mut said_waiting = false;
            let mut last_error_log = Instant::now();
            while !stop.load(Ordering::Relaxed) {
                match connect_once(&spec2, &device, poll) {
                    Ok(d) => {
                        twin_log::info_limited!(uplink = %name, device = %spec2.device, mode = %spec2.mode, "uplink up");
                        let _ = tx.send(d);
                        return;
                    }
                    Err(e) => {
                        let e = error_chain(&e);
                        if !said_waiting {
                            twin_log::info_limited!(uplink = %name, device = %spec2.device,
                                  "waiting for the NIC, retrying: {e}");
                            said_waiting = true;
                        } else if last_error_log.elapsed() > Duration::from_secs(10) {
                            twin_log::warn_limited!(uplink = %name, "still cannot reach the NIC: {e}");
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
                    if let Some(lasted) = self.outages.end(now, dropped_so_far) {
                        twin_log::info_limited!(uplink = %self.spec.name, outage_ms = lasted.as_millis() as u64, "uplink back");
                    }
                    // A fresh domain runs the fast path; move it where it belongs.
                    self.apply_mode(now);
                    Ok(true)
                }
                Err(TryRecvError::Empty) => Ok(false),
                Err(TryRecvError::Disconnected) => {
                    self.link =
                        spawn_connector(&self.spec, &self.device, self.poll, Duration::ZERO)?;
                    Ok(false)
                }
            },
            Link::Up(d) => {
                // Every iteration: a faulted twin does nothing, so act at once.
                if let FastPath::Switch { instance, .. } = &d.fast {
                    if let Some(f) = instance.fault() {
                        let fault = f.clone();
                        return self.contain_twin_fault(now, dropped_so_far, fault);
                    }
                }
                match d.fast.poll(&mut d.domain, now, HANDOVER_TIMEOUT) {
                    Step::Stay => {}
                    Step::TimedOut => {
                        let reason = LinkDown::HandoverTimeout(HANDOVER_TIMEOUT);
                        return self.restart(now, dropped_so_far, reason);
                    }
                    step => return Ok(self.took_step(&step)),
                }
                if now.duration_since(self.last_check) < LINK_CHECK_INTERVAL {
                    return Ok(false);
                }
                self.last_check = now;
                let Some(reason) = d.failure(now) else {
                    self.watch_kernel_link();
                    return Ok(false);
                };
                self.restart(now, dropped_so_far, reason.into())
            }
        }
    }

    /// Looks at a kernel interface's state (every [`LINK_CHECK_INTERVAL`]): a
    /// change is logged, and each time it goes down is counted (`link_downs`).
    /// The log is bounded by the check interval (20 lines a second at most from
    /// a link that flaps as fast as it can).
    fn watch_kernel_link(&mut self) {
        use crate::config::UplinkDevice;
        let (UplinkDevice::Tap(name)
        | UplinkDevice::Packet { name, .. }
        | UplinkDevice::Xdp { name, .. }) = &self.spec.device
        else {
            return;
        };
        let up = matches!(kernel_nic::link_state(name), Ok(Some(s)) if s.up && s.running);
        match (self.kernel_link_up, up) {
            (Some(true), false) => {
                self.link_downs += 1;
                twin_log::warn_limited!(uplink = %self.spec.name, device = %name, "the interface went down");
            }
            (Some(false), true) => {
                twin_log::info_limited!(uplink = %self.spec.name, device = %name, "the interface is up again");
            }
            _ => {}
        }
        self.kernel_link_up = Some(up);
    }

    /// A twin faulted: report it, fall back to `domain`, and restart the driver
    /// domain (the twin may have left its state inconsistent).
    fn contain_twin_fault(
        &mut self,
        now: Instant,
        dropped_so_far: u64,
        fault: TwinFault,
    ) -> Result<bool, UplinkError> {
        twin_log::warn_limited!(uplink = %self.spec.name, "twin disabled: {fault}; falling back to domain mode");
        self.twin_fault_count += 1;
        self.twin_faults.push_back(TwinFaultReport {
            at_ms: now.duration_since(self.started).as_millis() as u64,
            fault: fault.to_string(),
        });
        if self.twin_faults.len() > OUTAGES_KEPT {
            self.twin_faults.pop_front();
        }
        self.mode = UplinkMode::Domain;
        self.restart(now, dropped_so_far, LinkDown::TwinFault(fault))
    }

    /// Drops the failed driver (killing its domain), records the outage, and starts
    /// a new domain unless the restart budget is spent.
    fn restart(
        &mut self,
        now: Instant,
        dropped_so_far: u64,
        reason: LinkDown,
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
        let reason = error_chain(&reason);
        twin_log::warn_limited!(uplink = %self.spec.name, lost, "uplink down: {reason}; restarting");
        self.disconnects += 1;
        self.outages.begin(now, reason, lost, dropped_so_far);
        // Dropping the driver kills the domain (and with it the NIC connection)
        // before anything new starts.
        drop(std::mem::replace(&mut self.link, Link::GaveUp));
        match self.restarts.record(now) {
            NextStart::GiveUp => {
                twin_log::warn_limited!(uplink = %self.spec.name, budget = self.restarts.budget, window = ?BUDGET_WINDOW,
                    "restart budget spent; giving up until `twin ctl revive`");
            }
            NextStart::After(delay) => {
                self.link = spawn_connector(&self.spec, &self.device, self.poll, delay)?;
            }
        }
        Ok(true)
    }

    /// Starts a new driver domain for an uplink that gave up (its restart budget
    /// spent), with a fresh budget: the operator's way back (`twin ctl revive`).
    pub fn revive(&mut self) -> Result<(), PortCommandError> {
        if !matches!(self.link, Link::GaveUp) {
            return Err(PortCommandError::Refused(format!(
                "uplink {} has not given up",
                self.spec.name
            )));
        }
        self.restarts.reset();
        self.link =
            spawn_connector(&self.spec, &self.device, self.poll, Duration::ZERO).map_err(|e| {
                PortCommandError::Failed {
                    message: format!("cannot revive uplink {}", self.spec.name),
                    source: Box::new(e),
                }
            })?;
        twin_log::info_local!(uplink = %self.spec.name, "revived by the operator: starting a new driver domain");
        Ok(())
    }

    /// Injects a fault into the uplink's driver domain or twin (see `crate::ctl`).
    pub fn inject(&mut self, kind: crate::ctl::FaultKind) -> Result<(), PortCommandError> {
        let name = &self.spec.name;
        let Link::Up(d) = &mut self.link else {
            return Err(PortCommandError::NotUp { port: name.clone() });
        };
        match kind {
            crate::ctl::FaultKind::Kill => {
                twin_log::warn_local!(uplink = %name, pid = d.domain.pid(), "fault injection: kill -9");
                d.domain.kill();
                Ok(())
            }
            crate::ctl::FaultKind::InDomain(f) => {
                d.domain.inject(f).map_err(|e| PortCommandError::Failed {
                    message: format!("cannot inject {f:?} into uplink {name}'s driver domain"),
                    source: Box::new(e),
                })
            }
            crate::ctl::FaultKind::InTwin(f) => match &d.fast {
                FastPath::Switch { instance, .. } if instance.is_twin() => {
                    twin_log::warn_local!(uplink = %name, fault = ?f, "fault injection into the twin");
                    instance.inject(f);
                    Ok(())
                }
                _ => Err(PortCommandError::Refused(format!(
                    "uplink {name} runs no twin now (fast path: {}); twin faults need mode twin",
                    d.fast_path_name()
                ))),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn restarts_back_off_while_failures_come_in_a_row() {
        let t0 = Instant::now();
        let mut b = RestartBudget::new(100);
        let delays: Vec<NextStart> = (0..9).map(|i| b.record(t0 + ms(i))).collect();
        let want: Vec<NextStart> = [10, 20, 40, 80, 160, 320, 500, 500, 500]
            .iter()
            .map(|d| NextStart::After(ms(*d)))
            .collect();
        assert_eq!(delays, want);
        // After a quiet spell the backoff starts over.
        assert_eq!(
            b.record(t0 + BACKOFF_RUN + ms(100)),
            NextStart::After(ms(10))
        );
    }

    #[test]
    fn more_restarts_than_the_budget_within_the_window_give_up_until_reset() {
        let t0 = Instant::now();
        let mut b = RestartBudget::new(3);
        for i in 0..3 {
            assert!(matches!(b.record(t0 + ms(i)), NextStart::After(_)));
        }
        assert_eq!(b.record(t0 + ms(3)), NextStart::GiveUp);
        assert_eq!(b.in_window(), 4);
        b.reset();
        assert_eq!(b.in_window(), 0);
        assert!(matches!(b.record(t0 + ms(4)), NextStart::After(_)));
    }

    #[test]
    fn the_window_and_the_backoff_run_include_their_ends() {
        let t0 = Instant::now();
        let mut b = RestartBudget::new(100);
        b.record(t0);
        // Exactly a window apart: both in it.
        b.record(t0 + BUDGET_WINDOW);
        assert_eq!(b.in_window(), 2);
        // Exactly a backoff run apart: not in a row (the first delay again).
        let mut b = RestartBudget::new(100);
        b.record(t0);
        assert_eq!(b.record(t0 + BACKOFF_RUN), NextStart::After(ms(10)));
    }

    #[test]
    fn domains_get_exchange_rings_of_the_uplinks_size() {
        let spec: UplinkSpec = "u0=/tmp/nic.sock,mode=domain".parse().unwrap();
        let device = DomainDevice::Vhost("/tmp/nic.sock".into());
        let cfg = launch_config(&spec, &device, PollMode::Event, "/bin/twin".into());
        assert_eq!(cfg.geometry.slots, EXCHANGE_SLOTS);
        assert_eq!(cfg.poll, twin_poll::PollMode::Event);
        assert_eq!(cfg.name, "u0");
        assert_eq!(cfg.memory_limit, driver_domain::launch::DOMAIN_MEMORY_LIMIT);
    }

    #[test]
    fn restarts_older_than_the_window_do_not_count() {
        let t0 = Instant::now();
        let mut b = RestartBudget::new(2);
        b.record(t0);
        b.record(t0 + ms(1));
        // Both are out of the window by now: this one is the only one in it.
        let later = t0 + BUDGET_WINDOW + ms(2);
        assert!(matches!(b.record(later), NextStart::After(_)));
        assert_eq!(b.in_window(), 1);
    }

    #[test]
    fn an_outage_records_its_length_its_drops_and_what_was_in_flight() {
        let t0 = Instant::now();
        let mut log = OutageLog::new(t0);
        assert_eq!(log.end(t0, 0), None, "nothing to end");
        log.begin(t0 + ms(100), "domain exited".into(), 7, 40);
        let o = log.records().back().unwrap().clone();
        assert_eq!((o.start_ms, o.duration_ms, o.frames_dropped), (100, 0, 0));
        assert_eq!(o.frames_in_flight_lost, 7);
        assert_eq!(log.end(t0 + ms(350), 52), Some(ms(250)));
        let o = log.records().back().unwrap();
        assert_eq!((o.duration_ms, o.frames_dropped), (250, 12));
        assert_eq!(o.reason, "domain exited");
        assert_eq!(log.end(t0 + ms(400), 60), None, "ended once");
    }

    #[test]
    fn the_log_keeps_the_last_outages() {
        let t0 = Instant::now();
        let mut log = OutageLog::new(t0);
        for i in 0..(OUTAGES_KEPT as u64 + 5) {
            log.begin(t0 + ms(10 * i), format!("#{i}"), 0, 0);
            log.end(t0 + ms(10 * i + 1), 0);
        }
        assert_eq!(log.records().len(), OUTAGES_KEPT);
        assert_eq!(log.records().front().unwrap().reason, "#5");
        assert!(log.records().iter().all(|o| o.duration_ms == 1));
    }
}
