//! The trusted switch: an L2 learning switch between vhost-user client ports and
//! uplink NICs, and the single data-path thread that moves frames between them.
//!
//! Read in this order:
//! * [`config`]: the ports and uplinks to serve, parsed from the command line;
//! * [`port`]: the one interface every kind of port implements, and the kinds:
//!   [`port::client`] (a client's vhost-user socket, served as a virtio-net device)
//!   and [`port::uplink`] (a NIC driven from a driver domain, its fast path in the
//!   domain or the switch);
//! * [`vlan`]: VLANs (802.1Q): a port's membership, a frame's VLAN, tags added
//!   and removed;
//! * [`fdb`]: the MAC learning table, per VLAN;
//! * [`datapath`]: the loop that moves frames between ports, batched, busy-polling
//!   or event-driven;
//! * [`counters`]: per-port counters, drop reasons and the final report;
//! * [`ctl`]: the control socket (status, fault injection into driver domains);
//! * [`metrics`]: the report as Prometheus metrics over HTTP;
//! * [`capture`]: packet capture of a port as pcap.
//!
//! Limits: one queue pair per port but for the queues of a `packet:` or `xdp:`
//! uplink; one 802.1Q tag at most (no stacked VLANs); no offloads or jumbo frames.

#![deny(missing_docs)]

pub mod capture;
pub mod config;
pub mod counters;
pub mod ctl;
pub mod datapath;
pub mod fdb;
pub mod metrics;
pub mod port;
pub mod vlan;

use std::collections::BTreeMap;
use std::sync::atomic::AtomicBool;

use config::{ConfigError, SwitchConfig};
use counters::SwitchReport;
use datapath::{DataPath, DataPathError};
use fdb::Fdb;
use port::client::ClientPortError;
use port::factory::PortFactory;
use port::uplink::UplinkError;
use port::{Port, PortKind};

/// Errors of the switch.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A client port could not be served.
    #[error(transparent)]
    ClientPort(#[from] ClientPortError),
    /// An uplink could not be started.
    #[error(transparent)]
    Uplink(#[from] UplinkError),
    /// A port could not be made.
    #[error(transparent)]
    Port(#[from] port::factory::FactoryError),
    /// The data path failed.
    #[error(transparent)]
    DataPath(#[from] DataPathError),
    /// The control socket failed.
    #[error(transparent)]
    Ctl(#[from] ctl::CtlError),
    /// The metrics endpoint could not listen.
    #[error(transparent)]
    Metrics(#[from] metrics::MetricsError),
}

/// Runs the switch until `stop` is set, then returns its counters.
pub fn run(cfg: &SwitchConfig, stop: &AtomicBool) -> Result<SwitchReport, Error> {
    cfg.validate()?;
    let budget = vhost_device::MemoryBudget::new(cfg.max_total_client_memory);
    // Each uplink queue's domains run as an id of their own.
    let domain_ids = rustix::process::geteuid()
        .is_root()
        .then_some(cfg.domain_id_base);
    let mut factory = PortFactory::new(
        cfg.poll,
        cfg.restart_budget,
        cfg.max_client_memory,
        budget.clone(),
        domain_ids,
    );
    let mut ports: Vec<Box<dyn Port>> = Vec::new();
    for c in &cfg.clients {
        ports.push(factory.client(c.clone())?);
    }
    for u in &cfg.uplinks {
        ports.push(factory.uplink(u.clone())?);
    }
    let mut fdb = Fdb::new(cfg.fdb_capacity, cfg.fdb_max_age_ms, cfg.fdb_port_quota);
    // Client ports come first in the table: client i is port i.
    for (i, c) in cfg.clients.iter().enumerate() {
        if let Some(mac) = c.mac {
            fdb.pin(mac, i as fdb::PortId);
        }
    }
    let mut dp = DataPath::new(ports, fdb, cfg.poll);
    dp.set_factory(factory);
    dp.set_flood_limit(cfg.flood_limit_pps);
    dp.memory_budget = Some(budget);
    if let Some(path) = &cfg.control {
        dp.set_control(ctl::serve(path, cfg.control_access.clone())?);
    }
    if let Some(addr) = &cfg.metrics {
        let (scrapes, bound) = metrics::serve(addr)?;
        twin_log::info_local!(%bound, "metrics endpoint listening");
        dp.set_metrics(scrapes);
    }
    let result = dp.run(stop);
    if let Some(path) = &cfg.control {
        // Ours: a live socket is never replaced (ctl::serve).
        let _ = std::fs::remove_file(path);
    }
    if let Some(metrics::MetricsAddr::Unix(path)) = &cfg.metrics {
        let _ = std::fs::remove_file(path);
    }
    result?;
    Ok(report(&dp))
}

/// The counters of every port.
pub fn report(dp: &DataPath) -> SwitchReport {
    let mut clients = BTreeMap::new();
    let mut uplinks = BTreeMap::new();
    for e in dp.ports.iter().filter(|e| !e.vacant) {
        let section = match e.kind {
            PortKind::Client => &mut clients,
            PortKind::Uplink => &mut uplinks,
        };
        // A running capture's counts so far.
        let report = match &e.capture {
            None => e.port.report(&e.counters),
            Some(t) => {
                let mut c = e.counters.clone();
                c.captured += t.captured;
                c.capture_missed += t.missed;
                let mut r = e.port.report(&c);
                r.capturing = true;
                r
            }
        };
        let mut report = report;
        report.vlan = Some(e.vlan);
        section.insert(e.port.name().to_string(), report);
    }
    let mut r = SwitchReport::new(clients, uplinks, dp.fdb().len(), dp.fdb_full());
    r.fdb_quota_full = dp.fdb().quota_refusals();
    r.datapath = dp.loop_report();
    if let Some(b) = &dp.memory_budget {
        r.client_memory = b.used();
        r.client_memory_limit = b.limit();
    }
    r
}
