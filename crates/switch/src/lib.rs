//! The trusted switch: an L2 learning switch between vhost-user client ports and
//! uplink NICs, and the single data-path thread that moves frames between them.
//!
//! Read in this order:
//! * [`config`]: the ports and uplinks to serve, parsed from the command line;
//! * [`client_port`]: a client's vhost-user socket, served as a virtio-net device;
//! * [`uplink`]: a NIC driven by the project's virtio-net driver (`inline` mode);
//! * [`fdb`]: the MAC learning table;
//! * [`datapath`]: the loop that moves frames, batched, busy-polling or event-driven;
//! * [`counters`]: per-port counters, drop reasons and the final report;
//! * [`ctl`]: the control socket (status, fault injection into driver domains).
//!
//! Limits: one queue pair per port; no VLANs, offloads or jumbo frames.

#![deny(missing_docs)]

pub mod client_port;
pub mod config;
pub mod counters;
pub mod ctl;
pub mod datapath;
pub mod fdb;
pub mod uplink;

use std::collections::BTreeMap;
use std::sync::atomic::AtomicBool;

use client_port::{ClientPort, ClientPortError};
use config::{ConfigError, SwitchConfig};
use counters::{PortReport, SwitchReport};
use datapath::{DataPath, DataPathError};
use fdb::Fdb;
use uplink::{Uplink, UplinkError};

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
    /// The data path failed.
    #[error(transparent)]
    DataPath(#[from] DataPathError),
    /// The control socket failed.
    #[error(transparent)]
    Ctl(#[from] ctl::CtlError),
}

/// Runs the switch until `stop` is set, then returns its counters.
pub fn run(cfg: &SwitchConfig, stop: &AtomicBool) -> Result<SwitchReport, Error> {
    cfg.validate()?;
    let budget = vhost_device::MemoryBudget::new(cfg.max_total_client_memory);
    let clients = cfg
        .clients
        .iter()
        .cloned()
        .map(|c| ClientPort::listen(c, cfg.max_client_memory, budget.clone()))
        .collect::<Result<Vec<_>, _>>()?;
    let uplinks = cfg
        .uplinks
        .iter()
        .cloned()
        .enumerate()
        .map(|(i, mut u)| {
            if rustix::process::geteuid().is_root() {
                u.domain_id = Some(cfg.domain_id_base.saturating_add(i as u32));
            }
            Uplink::new(u, cfg.poll, cfg.restart_budget)
        })
        .collect::<Result<Vec<_>, _>>()?;
    let mut fdb = Fdb::new(cfg.fdb_capacity, cfg.fdb_max_age_ms, cfg.fdb_port_quota);
    for (i, c) in cfg.clients.iter().enumerate() {
        if let Some(mac) = c.mac {
            fdb.pin(mac, i as fdb::PortId);
        }
    }
    let mut dp = DataPath::new(clients, uplinks, fdb, cfg.poll);
    dp.flood_pps = cfg.flood_limit_pps;
    dp.memory_budget = Some(budget);
    if let Some(path) = &cfg.control {
        dp.set_control(ctl::serve(path, cfg.control_access.clone())?);
    }
    let result = dp.run(stop);
    if let Some(path) = &cfg.control {
        // Ours: a live socket is never replaced (ctl::serve).
        let _ = std::fs::remove_file(path);
    }
    result?;
    Ok(report(&dp))
}

/// The counters of every port.
pub fn report(dp: &DataPath) -> SwitchReport {
    let clients: BTreeMap<_, _> = dp
        .clients
        .iter()
        .map(|c| {
            let s = c.handle.stats();
            // The device's own drops, in both directions, under its reason names.
            let extra = vhost_device::DropReason::ALL.iter().map(|r| {
                let v = s.from_client_drops.get(*r) + s.to_client_drops.get(*r);
                (r.as_str().to_string(), v)
            });
            let detail = serde_json::to_value(s).unwrap_or_default();
            let r = PortReport::new(&c.counters, extra, c.connects, c.disconnects, detail);
            (c.spec.name.clone(), r)
        })
        .collect();
    let uplinks: BTreeMap<_, _> = dp
        .uplinks
        .iter()
        .map(|u| {
            let r = PortReport::new(
                &u.counters,
                u.domain_drops(),
                u.connects,
                u.disconnects,
                u.detail(),
            );
            (u.spec.name.clone(), r)
        })
        .collect();
    let mut r = SwitchReport::new(clients, uplinks, dp.fdb.len(), dp.fdb_full);
    r.fdb_quota_full = dp.fdb.quota_refusals();
    if let Some(b) = &dp.memory_budget {
        r.client_memory = b.used();
        r.client_memory_limit = b.limit();
    }
    r
}
