//! An uplink's part of the switch report: its mode and handover history, twin
//! faults, outages, and the counters of its driver domains, the ones that have
//! been replaced included (every counter listed from the start, zeros included).

use std::collections::BTreeMap;

use super::fast_path::UplinkDriver;
use super::{Link, Uplink};

impl Uplink {
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

    /// The drops the uplink counted itself, by reason: its driver domains' and
    /// the frames a handover had no room for.
    pub fn own_drops(&self) -> impl Iterator<Item = (String, u64)> {
        self.domain_drops().chain(std::iter::once((
            crate::counters::DropReason::UplinkRingFull
                .as_str()
                .to_string(),
            self.handover_ring_full,
        )))
    }

    /// `past` plus the current driver domain's `now`, by name.
    fn over_all_domains(
        &self,
        past: &BTreeMap<&'static str, u64>,
        now: impl FnOnce(&UplinkDriver) -> Vec<(&'static str, u64)>,
    ) -> BTreeMap<&'static str, u64> {
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
            "restarts_in_window": self.restarts.in_window(),
            "outages": self.outages.records(),
            "device_errors": device_errors,
            "upcalls_total": upcalls_total,
            // A kernel device's state, read now: `up` (administratively) and
            // `running` (carrier); null for a vhost-user NIC or a missing device.
            "link": self.kernel_link(),
            // Times the kernel interface was seen going down (looked at every
            // LINK_CHECK_INTERVAL while a domain runs).
            "link_downs": self.link_downs,
        })
    }
}

impl Uplink {
    fn kernel_link(&self) -> serde_json::Value {
        use crate::config::UplinkDevice;
        let (UplinkDevice::Tap(name)
        | UplinkDevice::Packet { name, .. }
        | UplinkDevice::Xdp { name, .. }) = &self.spec.device
        else {
            return serde_json::Value::Null;
        };
        match kernel_nic::link_state(name) {
            Ok(Some(s)) => serde_json::json!({"up": s.up, "running": s.running}),
            _ => serde_json::Value::Null,
        }
    }
}

/// A counter map with every name in `names` at zero.
pub(super) fn zeros(names: &[&'static str]) -> BTreeMap<&'static str, u64> {
    names.iter().map(|n| (*n, 0)).collect()
}
