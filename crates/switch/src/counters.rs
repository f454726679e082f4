//! Per-port counters of the switch, and the report it prints when it stops.
//!
//! "rx" is what the switch received from a port, "tx" what it sent to it. Every copy
//! of a frame the switch does not deliver is counted once, under a [`DropReason`], on
//! the port where the decision was made: the ingress port for frames that are invalid,
//! whose one destination is down, or that have nowhere to go; the egress port for a
//! destination that had no room for it. A flooded frame skips ports that are down
//! without counting them.

use std::collections::BTreeMap;

use serde::Serialize;

/// Why the switch dropped a frame. Device-level reasons (bad descriptor chains, no
/// receive buffers) are counted by the ports themselves and merged into the report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(usize)]
pub enum DropReason {
    /// Shorter than an Ethernet header.
    Runt,
    /// Source address is a group address.
    GroupSource,
    /// Source address differs from the port's configured MAC (anti-spoofing).
    SpoofedSource,
    /// The learned destination is the ingress port itself.
    Hairpin,
    /// No port could take the frame (flood with every other port down).
    NoDestination,
    /// The learned destination client port is not connected or not ready.
    DestinationDown,
    /// The learned destination uplink's NIC is not connected.
    UplinkDown,
    /// The uplink's transmit ring is full.
    UplinkRingFull,
    /// Larger than an uplink buffer.
    TooBigForUplink,
    /// Source address pinned to another port (a configured client MAC).
    StolenSource,
    /// Over the ingress port's flood limit (broadcast, multicast, unknown unicast).
    FloodLimited,
    /// A VLAN-tagged frame from a port that takes untagged frames only (an
    /// access port, or a client port without VLANs).
    VlanTagged,
    /// A frame of a VLAN the port is not a member of: from a trunk client, an
    /// untagged frame or a VID outside its set; or a known destination outside
    /// the frame's VLAN.
    VlanNotMember,
    /// A VLAN the switch does not switch: VID 4095, or a stacked tag's outer
    /// TPID (0x88a8, 0x9100).
    VlanUnsupported,
}

impl DropReason {
    /// Every reason, in report order.
    pub const ALL: [DropReason; 14] = [
        DropReason::Runt,
        DropReason::GroupSource,
        DropReason::SpoofedSource,
        DropReason::Hairpin,
        DropReason::NoDestination,
        DropReason::DestinationDown,
        DropReason::UplinkDown,
        DropReason::UplinkRingFull,
        DropReason::TooBigForUplink,
        DropReason::StolenSource,
        DropReason::FloodLimited,
        DropReason::VlanTagged,
        DropReason::VlanNotMember,
        DropReason::VlanUnsupported,
    ];

    /// The reason's name in reports.
    pub const fn as_str(self) -> &'static str {
        match self {
            DropReason::Runt => "runt",
            DropReason::GroupSource => "group_source",
            DropReason::SpoofedSource => "spoofed_source",
            DropReason::Hairpin => "hairpin",
            DropReason::NoDestination => "no_destination",
            DropReason::DestinationDown => "destination_down",
            DropReason::UplinkDown => "uplink_down",
            DropReason::UplinkRingFull => "uplink_ring_full",
            DropReason::TooBigForUplink => "too_big_for_uplink",
            DropReason::StolenSource => "stolen_source",
            DropReason::FloodLimited => "flood_limited",
            DropReason::VlanTagged => "vlan_tagged",
            DropReason::VlanNotMember => "vlan_not_member",
            DropReason::VlanUnsupported => "vlan_unsupported",
        }
    }
}

/// Counters of one port, owned by the data-path thread (plain integers, no atomics).
#[derive(Debug, Default, Clone)]
pub struct PortCounters {
    /// Frames received from the port.
    pub rx_packets: u64,
    /// Bytes received from the port (Ethernet frame, no virtio header).
    pub rx_bytes: u64,
    /// Frames sent to the port.
    pub tx_packets: u64,
    /// Bytes sent to the port.
    pub tx_bytes: u64,
    /// Frames taken into packet captures of the port (`twin ctl capture`).
    pub captured: u64,
    /// Frames left out of captures (the capture's reader was behind; the
    /// frames themselves went on).
    pub capture_missed: u64,
    drops: [u64; DropReason::ALL.len()],
    /// The sum of `drops`, kept as they are counted: the data path reads the
    /// switch's running total every round (outage accounting), so it costs one
    /// load per port instead of a sum over every reason.
    dropped_total: u64,
}

impl PortCounters {
    /// Counts one dropped frame.
    #[inline]
    pub fn drop(&mut self, why: DropReason) {
        self.drops[why as usize] += 1;
        self.dropped_total += 1;
    }

    /// Frames dropped for any reason.
    #[inline]
    pub fn dropped_total(&self) -> u64 {
        self.dropped_total
    }

    /// How many frames were dropped for `why`.
    pub fn dropped(&self, why: DropReason) -> u64 {
        self.drops[why as usize]
    }

    /// Every drop counter by name, zeros included.
    pub fn drops_by_reason(&self) -> BTreeMap<&'static str, u64> {
        DropReason::ALL
            .iter()
            .map(|d| (d.as_str(), self.dropped(*d)))
            .collect()
    }
}

/// One port's part of the report.
#[derive(Debug, Clone, Serialize)]
pub struct PortReport {
    /// Frames received from the port.
    pub rx_packets: u64,
    /// Bytes received from the port.
    pub rx_bytes: u64,
    /// Frames sent to the port.
    pub tx_packets: u64,
    /// Bytes sent to the port.
    pub tx_bytes: u64,
    /// Dropped frames by reason: the switch's own and the port's device or driver
    /// level. Every reason the port can count is listed, zeros included, so a
    /// reader can tell "none" from "not reported".
    pub drops: BTreeMap<String, u64>,
    /// Frames taken into packet captures of the port.
    pub captured: u64,
    /// Frames left out of captures (not dropped: they went on).
    pub capture_missed: u64,
    /// Whether a capture of the port runs now.
    pub capturing: bool,
    /// Times the peer connected.
    pub connects: u64,
    /// Times the peer went away.
    pub disconnects: u64,
    /// The port's VLANs: `untagged`, `access N`, `trunk 10;20-22`, or `all`
    /// (an uplink).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vlan: Option<crate::vlan::PortVlan>,
    /// Port- or driver-level details (ring state, driver counters).
    #[serde(skip_serializing_if = "serde_json::Value::is_null")]
    pub detail: serde_json::Value,
}

impl PortReport {
    /// A report from the switch's counters plus the port's own drop reasons.
    pub fn new(
        c: &PortCounters,
        extra_drops: impl IntoIterator<Item = (String, u64)>,
        connects: u64,
        disconnects: u64,
        detail: serde_json::Value,
    ) -> Self {
        let mut drops: BTreeMap<String, u64> = c
            .drops_by_reason()
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect();
        for (k, v) in extra_drops {
            *drops.entry(k).or_default() += v;
        }
        PortReport {
            rx_packets: c.rx_packets,
            rx_bytes: c.rx_bytes,
            tx_packets: c.tx_packets,
            tx_bytes: c.tx_bytes,
            captured: c.captured,
            capture_missed: c.capture_missed,
            capturing: false,
            drops,
            connects,
            disconnects,
            vlan: None,
            detail,
        }
    }
}

/// What `twin switch` prints when it stops.
#[derive(Debug, Clone, Serialize)]
pub struct SwitchReport {
    /// Client ports by name.
    pub clients: BTreeMap<String, PortReport>,
    /// Uplinks by name.
    pub uplinks: BTreeMap<String, PortReport>,
    /// All drops of all ports, by reason.
    pub drops: BTreeMap<String, u64>,
    /// Addresses in the learning table at the end.
    pub fdb_entries: usize,
    /// Source addresses not learned because the table was full.
    pub fdb_full: u64,
    /// Source addresses not learned because their port owned its quota.
    pub fdb_quota_full: u64,
    /// Bytes of client memory mapped (the memory tables in force, all clients).
    pub client_memory: u64,
    /// The switch's client memory budget.
    pub client_memory_limit: u64,
    /// How the data-path thread spent its time.
    pub datapath: LoopReport,
}

/// How the data-path thread spent its time since the switch started.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct LoopReport {
    /// Rounds of the loop (each takes a batch from every port).
    pub rounds: u64,
    /// Rounds that delivered at least one frame.
    pub work_rounds: u64,
    /// Seconds since the data path started.
    pub seconds: f64,
    /// Seconds it spent waiting for work (polling empty rounds before a sleep,
    /// yielding, sleeping in epoll); the rest it was forwarding or looking at
    /// its ports.
    pub idle_seconds: f64,
}

impl SwitchReport {
    /// Builds the report and the drop totals.
    pub fn new(
        clients: BTreeMap<String, PortReport>,
        uplinks: BTreeMap<String, PortReport>,
        fdb_entries: usize,
        fdb_full: u64,
    ) -> Self {
        let mut drops = BTreeMap::new();
        for p in clients.values().chain(uplinks.values()) {
            for (k, v) in &p.drops {
                *drops.entry(k.clone()).or_default() += v;
            }
        }
        SwitchReport {
            clients,
            uplinks,
            drops,
            fdb_entries,
            fdb_full,
            fdb_quota_full: 0,
            client_memory: 0,
            client_memory_limit: 0,
            datapath: LoopReport::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drops_are_counted_by_reason_and_totalled() {
        let mut c = PortCounters::default();
        c.drop(DropReason::Hairpin);
        c.drop(DropReason::Hairpin);
        c.drop(DropReason::Runt);
        assert_eq!(c.dropped_total(), 3);
        assert_eq!(
            c.dropped_total(),
            DropReason::ALL.iter().map(|d| c.dropped(*d)).sum::<u64>()
        );
        let p = PortReport::new(
            &c,
            [("no_rx_buffers".to_string(), 3), ("zero".to_string(), 0)],
            1,
            0,
            serde_json::Value::Null,
        );
        assert_eq!(p.drops.get("hairpin"), Some(&2));
        assert_eq!(p.drops.get("runt"), Some(&1));
        assert_eq!(p.drops.get("no_rx_buffers"), Some(&3));
        // Every reason is listed, zeros included.
        assert_eq!(p.drops.get("zero"), Some(&0));
        assert_eq!(p.drops.get("flood_limited"), Some(&0));
        assert_eq!(p.drops.len(), DropReason::ALL.len() + 2);
        let r = SwitchReport::new(
            [("a".to_string(), p.clone())].into(),
            [("u".to_string(), p)].into(),
            0,
            0,
        );
        assert_eq!(r.drops.get("hairpin"), Some(&4));
    }
}

#[cfg(test)]
mod counting_tests {
    use super::*;

    #[test]
    fn each_reason_has_its_own_counter_and_report_name() {
        let names = [
            "runt",
            "group_source",
            "spoofed_source",
            "hairpin",
            "no_destination",
            "destination_down",
            "uplink_down",
            "uplink_ring_full",
            "too_big_for_uplink",
            "stolen_source",
            "flood_limited",
            "vlan_tagged",
            "vlan_not_member",
            "vlan_unsupported",
        ];
        let mut c = PortCounters::default();
        for (i, d) in DropReason::ALL.iter().enumerate() {
            assert_eq!(d.as_str(), names[i]);
            for _ in 0..=i {
                c.drop(*d);
            }
        }
        for (i, d) in DropReason::ALL.iter().enumerate() {
            assert_eq!(c.dropped(*d), i as u64 + 1, "{}", d.as_str());
            assert_eq!(c.drops_by_reason().get(d.as_str()), Some(&(i as u64 + 1)));
        }
    }

    #[test]
    fn a_port_report_adds_the_ports_own_reasons_to_the_switchs() {
        let mut c = PortCounters {
            rx_packets: 7,
            rx_bytes: 700,
            tx_packets: 5,
            tx_bytes: 500,
            ..Default::default()
        };
        c.drop(DropReason::UplinkDown);
        let p = PortReport::new(
            &c,
            [
                ("uplink_down".to_string(), 2),
                ("device_error".to_string(), 4),
            ],
            3,
            2,
            serde_json::json!({"k": 1}),
        );
        assert_eq!((p.rx_packets, p.rx_bytes), (7, 700));
        assert_eq!((p.tx_packets, p.tx_bytes), (5, 500));
        assert_eq!((p.connects, p.disconnects), (3, 2));
        assert_eq!(p.drops.get("uplink_down"), Some(&3));
        assert_eq!(p.drops.get("device_error"), Some(&4));
        assert_eq!(p.detail, serde_json::json!({"k": 1}));
        let r = SwitchReport::new(
            [("a".to_string(), p.clone()), ("b".to_string(), p.clone())].into(),
            [("u".to_string(), p)].into(),
            9,
            4,
        );
        assert_eq!(r.drops.get("uplink_down"), Some(&9));
        assert_eq!(r.drops.get("device_error"), Some(&12));
        assert_eq!((r.fdb_entries, r.fdb_full), (9, 4));
        assert_eq!(r.clients.len(), 2);
        assert_eq!(r.uplinks.len(), 1);
    }
}
