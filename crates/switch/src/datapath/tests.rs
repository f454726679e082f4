//! The switching decision ([`switch_frame`]) on fake ports: every drop reason it
//! decides, learning and flooding.

use std::sync::Arc;

use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryMmap};

use super::*;

const A: MacAddr = MacAddr([2, 0, 0, 0, 0, 0xa]);
const B: MacAddr = MacAddr([2, 0, 0, 0, 0, 0xb]);
const C: MacAddr = MacAddr([2, 0, 0, 0, 0, 0xc]);
const GROUP: MacAddr = MacAddr([1, 0, 0x5e, 0, 0, 1]);

/// An Ethernet frame of `len` bytes from `src` to `dst` (payload 0, 1, 2, ...).
fn frame(dst: MacAddr, src: MacAddr, len: usize) -> Vec<u8> {
    let mut f: Vec<u8> = (0..len).map(|i| i as u8).collect();
    let hdr = [&dst.0[..], &src.0[..]].concat();
    let n = hdr.len().min(len);
    f[..n].copy_from_slice(&hdr[..n]);
    f
}

/// Fake egress ports: port `p` answers `outcome[p]`, and every copy is recorded.
struct FakePorts {
    n_clients: usize,
    /// Each port's VLANs (clients untagged, uplinks every VLAN, by default).
    vlans: Vec<PortVlan>,
    outcome: Vec<Delivery>,
    copies: Vec<(usize, Vec<u8>)>,
    /// Runs after each copy (a source rewriting its memory meanwhile).
    after_copy: Option<Box<dyn FnMut()>>,
}

impl FakePorts {
    /// `clients` client ports and `uplinks` uplinks, all taking every frame.
    fn new(clients: usize, uplinks: usize) -> Self {
        FakePorts {
            n_clients: clients,
            vlans: (0..clients + uplinks)
                .map(|p| {
                    if p < clients {
                        PortVlan::Untagged
                    } else {
                        PortVlan::Uplink
                    }
                })
                .collect(),
            outcome: vec![Delivery::Delivered; clients + uplinks],
            copies: Vec::new(),
            after_copy: None,
        }
    }

    /// The ports that got a copy, in order.
    fn took(&mut self) -> Vec<usize> {
        self.copies.drain(..).map(|(p, _)| p).collect()
    }
}

impl Ports for FakePorts {
    fn down_reason(&self, p: usize) -> DropReason {
        if p < self.n_clients {
            DropReason::DestinationDown
        } else {
            DropReason::UplinkDown
        }
    }

    fn n_ports(&self) -> usize {
        self.outcome.len()
    }

    fn vlan(&self, p: usize) -> Option<&PortVlan> {
        self.vlans.get(p)
    }

    fn deliver(&mut self, p: usize, frame: &Segments<'_>) -> Delivery {
        let d = self.outcome[p];
        if d == Delivery::Delivered {
            let mut v = vec![0u8; frame.len()];
            frame.read_prefix(&mut v);
            self.copies.push((p, v));
        }
        if let Some(f) = self.after_copy.as_mut() {
            f();
        }
        d
    }
}

/// The switch's side of a decision: table, time, and per-port counters, memos and
/// configured MACs.
struct Switch {
    fdb: Fdb,
    fdb_full: u64,
    now_ms: u64,
    flood_pps: u64,
    counters: Vec<PortCounters>,
    memos: Vec<Memo>,
    macs: Vec<Option<MacAddr>>,
    /// Each port's VLANs as an ingress port (all untagged unless a test says).
    vlans: Vec<PortVlan>,
    /// Where a source's frame lives (its memory, as a port's would).
    mem: Arc<GuestMemoryMmap>,
}

impl Switch {
    fn new(ports: usize) -> Self {
        Switch {
            fdb: Fdb::new(64, 1000, 64),
            fdb_full: 0,
            now_ms: 5,
            flood_pps: 0,
            counters: vec![PortCounters::default(); ports],
            memos: vec![Memo::default(); ports],
            macs: vec![None; ports],
            vlans: vec![PortVlan::Untagged; ports],
            mem: Arc::new(GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x1_0000)]).unwrap()),
        }
    }

    /// Port `from` sends `bytes` (placed in source memory).
    fn send(&mut self, ports: &mut FakePorts, from: PortId, bytes: &[u8]) {
        self.mem.write_slice(bytes, GuestAddress(0)).unwrap();
        let mem = self.mem.clone();
        let seg = Segments::single(mem.get_slice(GuestAddress(0), bytes.len()).unwrap());
        let i = usize::from(from);
        let mut ingress = Ingress {
            id: from,
            mac: self.macs[i],
            counters: &mut self.counters[i],
            memo: &mut self.memos[i],
            vlan: &self.vlans[i],
        };
        let mut table = Table {
            fdb: &mut self.fdb,
            fdb_full: &mut self.fdb_full,
            now_ms: self.now_ms,
            flood_pps: self.flood_pps,
        };
        switch_frame(&seg, &mut ingress, &mut table, ports);
    }

    fn dropped(&self, port: usize, why: DropReason) -> u64 {
        self.counters[port].dropped(why)
    }

    /// Drops on `port` over every reason.
    fn drops(&self, port: usize) -> u64 {
        DropReason::ALL.iter().map(|d| self.dropped(port, *d)).sum()
    }
}

#[test]
fn a_frame_shorter_than_an_ethernet_header_is_a_runt() {
    let mut sw = Switch::new(3);
    let mut ports = FakePorts::new(3, 0);
    sw.send(&mut ports, 0, &frame(B, A, ETH_HLEN - 1));
    assert_eq!(sw.dropped(0, DropReason::Runt), 1);
    assert_eq!(sw.counters[0].rx_packets, 1);
    assert_eq!(sw.counters[0].rx_bytes, (ETH_HLEN - 1) as u64);
    assert!(ports.took().is_empty());
    assert!(sw.fdb.is_empty(), "nothing learned from a runt");
    // A runt is a runt whatever its first bytes say (here: a group source).
    sw.send(&mut ports, 0, &frame(B, GROUP, ETH_HLEN - 1));
    assert_eq!(sw.dropped(0, DropReason::Runt), 2);
    assert_eq!(sw.dropped(0, DropReason::GroupSource), 0);
    // A bare header is a frame.
    sw.send(&mut ports, 0, &frame(B, A, ETH_HLEN));
    assert_eq!(ports.took(), [1, 2]);
    assert_eq!(sw.dropped(0, DropReason::Runt), 2);
    assert_eq!(sw.counters[0].rx_packets, 3);
    assert_eq!(sw.counters[0].rx_bytes, (3 * ETH_HLEN - 2) as u64);
}

#[test]
fn a_group_source_address_is_dropped_and_not_learned() {
    let mut sw = Switch::new(2);
    let mut ports = FakePorts::new(2, 0);
    sw.send(&mut ports, 0, &frame(B, GROUP, 60));
    sw.send(&mut ports, 0, &frame(B, MacAddr::BROADCAST, 60));
    assert_eq!(sw.dropped(0, DropReason::GroupSource), 2);
    assert_eq!(sw.drops(0), 2);
    assert!(ports.took().is_empty());
    assert!(sw.fdb.is_empty());
}

#[test]
fn a_source_other_than_the_ports_configured_mac_is_spoofed() {
    let mut sw = Switch::new(2);
    sw.macs[0] = Some(A);
    let mut ports = FakePorts::new(2, 0);
    sw.send(&mut ports, 0, &frame(C, B, 60));
    assert_eq!(sw.dropped(0, DropReason::SpoofedSource), 1);
    assert!(ports.took().is_empty());
    assert_eq!(
        sw.fdb.lookup(0, B, sw.now_ms),
        Destination::Flood,
        "not learned"
    );
    // Its own address passes; a port without a configured MAC takes any source.
    sw.send(&mut ports, 0, &frame(C, A, 60));
    sw.send(&mut ports, 1, &frame(C, B, 60));
    assert_eq!(ports.took(), [1, 0]);
    assert_eq!(sw.drops(0) + sw.drops(1), 1);
}

#[test]
fn unknown_destinations_flood_to_every_other_port_and_sources_are_learned() {
    // Two client ports (0, 1) and two uplinks (2, 3).
    let mut sw = Switch::new(4);
    let mut ports = FakePorts::new(2, 2);
    let f1 = frame(B, A, 60);
    sw.send(&mut ports, 1, &f1);
    assert_eq!(
        ports.copies,
        [(0, f1.clone()), (2, f1.clone()), (3, f1.clone())]
    );
    ports.copies.clear();
    assert_eq!(sw.fdb.lookup(0, A, sw.now_ms), Destination::Port(1));
    // The answer goes to port 1 only, and teaches the switch where B is.
    let f2 = frame(A, B, 100);
    sw.send(&mut ports, 2, &f2);
    assert_eq!(ports.copies, [(1, f2)]);
    ports.copies.clear();
    sw.send(&mut ports, 3, &frame(B, C, 60));
    assert_eq!(ports.took(), [2]);
    // Broadcast floods whatever is learned.
    sw.send(&mut ports, 0, &frame(MacAddr::BROADCAST, C, 60));
    assert_eq!(ports.took(), [1, 2, 3]);
    assert_eq!(sw.fdb_full, 0);
    assert!((0..4).all(|p| sw.drops(p) == 0));
}

#[test]
fn a_frame_to_a_destination_learned_on_its_own_port_is_a_hairpin() {
    let mut sw = Switch::new(3);
    let mut ports = FakePorts::new(3, 0);
    sw.send(&mut ports, 0, &frame(B, A, 60));
    ports.took();
    sw.send(&mut ports, 0, &frame(A, C, 60));
    assert_eq!(sw.dropped(0, DropReason::Hairpin), 1);
    assert!(ports.took().is_empty());
}

#[test]
fn a_known_destination_that_is_down_counts_as_destination_or_uplink_down() {
    // Client ports 0, 1; uplinks 2, 3.
    let mut sw = Switch::new(4);
    let mut ports = FakePorts::new(2, 2);
    sw.send(&mut ports, 1, &frame(C, A, 60));
    sw.send(&mut ports, 2, &frame(C, B, 60));
    ports.took();
    ports.outcome[1] = Delivery::Down;
    ports.outcome[2] = Delivery::Down;
    // The last client port, then the first uplink.
    sw.send(&mut ports, 0, &frame(A, C, 60));
    assert_eq!(sw.dropped(0, DropReason::DestinationDown), 1);
    assert_eq!(sw.dropped(0, DropReason::UplinkDown), 0);
    sw.send(&mut ports, 0, &frame(B, C, 60));
    assert_eq!(sw.dropped(0, DropReason::DestinationDown), 1);
    assert_eq!(sw.dropped(0, DropReason::UplinkDown), 1);
    assert_eq!(sw.drops(0), 2);
    // A destination that is up but had no room counts it itself: not the ingress.
    ports.outcome[1] = Delivery::DroppedByPort;
    sw.send(&mut ports, 0, &frame(A, C, 60));
    assert_eq!(sw.drops(0), 2);
    assert!(ports.took().is_empty());
}

#[test]
fn a_flood_that_no_port_takes_is_no_destination() {
    let mut sw = Switch::new(3);
    let mut ports = FakePorts::new(2, 1);
    ports.outcome = vec![Delivery::Down; 3];
    sw.send(&mut ports, 0, &frame(B, A, 60));
    assert_eq!(sw.dropped(0, DropReason::NoDestination), 1);
    // The ingress port being up does not count.
    ports.outcome[0] = Delivery::Delivered;
    sw.send(&mut ports, 0, &frame(B, A, 60));
    assert_eq!(sw.dropped(0, DropReason::NoDestination), 2);
    assert!(ports.took().is_empty());
    // One port that is up but full took its decision itself: not no_destination.
    ports.outcome[2] = Delivery::DroppedByPort;
    sw.send(&mut ports, 0, &frame(B, A, 60));
    assert_eq!(sw.dropped(0, DropReason::NoDestination), 2);
    // One port that takes it.
    ports.outcome[1] = Delivery::Delivered;
    sw.send(&mut ports, 0, &frame(B, A, 60));
    assert_eq!(ports.took(), [1]);
    assert_eq!(sw.drops(0), 2);
}

#[test]
fn a_source_pinned_to_another_port_is_stolen_and_not_forwarded() {
    let mut sw = Switch::new(3);
    sw.fdb.pin(A, 0);
    let mut ports = FakePorts::new(3, 0);
    sw.send(&mut ports, 1, &frame(B, A, 60));
    sw.send(&mut ports, 1, &frame(B, A, 60));
    assert_eq!(sw.dropped(1, DropReason::StolenSource), 2);
    assert!(ports.took().is_empty());
    assert_eq!(sw.fdb.lookup(0, A, sw.now_ms), Destination::Port(0));
    // From its own port it is forwarded.
    sw.send(&mut ports, 0, &frame(B, A, 60));
    assert_eq!(ports.took(), [1, 2]);
}

#[test]
fn floods_over_the_ingress_ports_limit_are_flood_limited() {
    let mut sw = Switch::new(3);
    sw.flood_pps = 1000;
    sw.now_ms = 0;
    let mut ports = FakePorts::new(3, 0);
    // No time has passed: no flood tokens yet.
    sw.send(&mut ports, 0, &frame(B, A, 60));
    assert_eq!(sw.dropped(0, DropReason::FloodLimited), 1);
    assert!(ports.took().is_empty());
    // 64 ms at 1000 a second: a burst of 64 floods, then the limit.
    sw.now_ms = 64;
    for _ in 0..65 {
        sw.send(&mut ports, 0, &frame(B, A, 60));
    }
    assert_eq!(ports.took().len(), 64 * 2);
    assert_eq!(sw.dropped(0, DropReason::FloodLimited), 2);
    // Known unicast is not limited; another port has its own budget.
    sw.send(&mut ports, 1, &frame(A, B, 60));
    assert_eq!(ports.took(), [0]);
    assert_eq!(sw.dropped(1, DropReason::FloodLimited), 0);
    // No limit configured.
    sw.flood_pps = 0;
    sw.send(&mut ports, 0, &frame(C, A, 60));
    assert_eq!(ports.took(), [1, 2]);
}

#[test]
fn a_source_that_does_not_fit_the_full_table_is_counted_and_still_forwarded() {
    let mut sw = Switch::new(3);
    sw.fdb = Fdb::new(1, 1000, 64);
    let mut ports = FakePorts::new(3, 0);
    sw.send(&mut ports, 0, &frame(C, A, 60));
    assert_eq!(sw.fdb_full, 0);
    sw.send(&mut ports, 1, &frame(A, B, 60));
    assert_eq!(sw.fdb_full, 1);
    assert_eq!(ports.took(), [1, 2, 0]);
    sw.send(&mut ports, 2, &frame(A, C, 60));
    assert_eq!(sw.fdb_full, 2);
    assert_eq!(sw.fdb.len(), 1);
}

#[test]
fn every_copy_carries_the_checked_header_while_the_source_rewrites_its_frame() {
    let mut sw = Switch::new(3);
    sw.macs[0] = Some(A);
    let mut ports = FakePorts::new(3, 0);
    // After the first copy, the source claims another address in its memory.
    let mem = sw.mem.clone();
    ports.after_copy = Some(Box::new(move || {
        mem.write_slice(&C.0, GuestAddress(6)).unwrap();
    }));
    let f = frame(B, A, 60);
    sw.send(&mut ports, 0, &f);
    assert_eq!(ports.copies, [(1, f.clone()), (2, f)]);
    assert_eq!(sw.fdb.lookup(0, C, sw.now_ms), Destination::Flood);
}

// VLANs: the attacks first (frames that must never cross), then the forms.

/// `f` with an 802.1Q tag of `tci` after its addresses.
fn tag(f: &[u8], tci: u16) -> Vec<u8> {
    [&f[..12], &[0x81, 0x00][..], &tci.to_be_bytes(), &f[12..]].concat()
}

/// `f` (tagged) without its tag.
fn untag(f: &[u8]) -> Vec<u8> {
    [&f[..12], &f[16..]].concat()
}

/// Clients 0 and 1 access ports of VLAN 10, client 2 of VLAN 20, port 3 an
/// uplink.
fn two_vlans() -> (Switch, FakePorts) {
    let mut sw = Switch::new(4);
    let mut ports = FakePorts::new(3, 1);
    let v = [
        PortVlan::Access(10),
        PortVlan::Access(10),
        PortVlan::Access(20),
        PortVlan::Uplink,
    ];
    sw.vlans = v.to_vec();
    ports.vlans = v.to_vec();
    (sw, ports)
}

#[test]
fn a_flood_stays_in_its_vlan_and_is_tagged_toward_the_uplink_only() {
    let (mut sw, mut ports) = two_vlans();
    let f = frame(MacAddr::BROADCAST, A, 60);
    sw.send(&mut ports, 0, &f);
    assert_eq!(ports.copies, [(1, f.clone()), (3, tag(&f, 10))]);
    ports.copies.clear();
    // Unknown unicast too; VLAN 20's port never gets VLAN 10's frames.
    sw.send(&mut ports, 1, &frame(C, B, 60));
    assert_eq!(ports.took(), [0, 3]);
    // VLAN 20's frames go to the uplink, tagged 20, and to no VLAN 10 port.
    let g = frame(MacAddr::BROADCAST, C, 60);
    sw.send(&mut ports, 2, &g);
    assert_eq!(ports.copies, [(3, tag(&g, 20))]);
    ports.copies.clear();
    assert!((0..4).all(|p| sw.drops(p) == 0));
}

#[test]
fn a_learned_address_is_found_in_its_own_vlan_only() {
    let (mut sw, mut ports) = two_vlans();
    // A is learned on port 0 in VLAN 10.
    sw.send(&mut ports, 0, &frame(MacAddr::BROADCAST, A, 60));
    ports.took();
    assert_eq!(sw.fdb.lookup(10, A, sw.now_ms), Destination::Port(0));
    assert_eq!(sw.fdb.lookup(20, A, sw.now_ms), Destination::Flood);
    // From VLAN 20 (a client and the uplink), a frame to A does not reach
    // port 0: A is unknown in VLAN 20 and floods there.
    sw.send(&mut ports, 2, &frame(A, C, 60));
    assert_eq!(ports.took(), [3]);
    sw.send(&mut ports, 3, &tag(&frame(A, B, 60), 20));
    assert_eq!(ports.took(), [2]);
    // From VLAN 10 on the uplink, it is port 0's.
    let f = frame(A, B, 60);
    sw.send(&mut ports, 3, &tag(&f, 10));
    assert_eq!(ports.copies, [(0, f)]);
    ports.copies.clear();
    // The same address in VLAN 20 behind the uplink is another station.
    sw.send(&mut ports, 3, &tag(&frame(C, A, 60), 20));
    assert_eq!(ports.took(), [2]);
    assert_eq!(sw.fdb.lookup(10, A, sw.now_ms), Destination::Port(0));
    assert_eq!(sw.fdb.lookup(20, A, sw.now_ms), Destination::Port(3));
}

#[test]
fn a_tagged_frame_from_an_access_or_untagged_port_is_dropped() {
    let (mut sw, mut ports) = two_vlans();
    // An access client of VLAN 10 tries to send into VLAN 20 (and into 10).
    for vid in [20, 10] {
        sw.send(
            &mut ports,
            0,
            &tag(&frame(MacAddr::BROADCAST, A, 60), 0x2000 | vid),
        );
    }
    assert_eq!(sw.dropped(0, DropReason::VlanTagged), 2);
    assert!(ports.took().is_empty());
    assert!(sw.fdb.is_empty(), "nothing learned");
    // A client without VLANs cannot reach a VLAN by tagging either.
    sw.vlans[1] = PortVlan::Untagged;
    sw.send(&mut ports, 1, &tag(&frame(MacAddr::BROADCAST, B, 60), 10));
    assert_eq!(sw.dropped(1, DropReason::VlanTagged), 1);
    assert!(ports.took().is_empty());
}

#[test]
fn a_priority_tagged_frame_belongs_to_the_ports_own_vlan_and_loses_its_tag() {
    let (mut sw, mut ports) = two_vlans();
    let f = frame(MacAddr::BROADCAST, A, 60);
    sw.send(&mut ports, 0, &tag(&f, 0x6000));
    assert_eq!(ports.copies, [(1, f.clone()), (3, tag(&f, 10))]);
    ports.copies.clear();
    // From the uplink, a priority-tagged frame is native: no access port of a
    // VLAN takes it.
    sw.send(
        &mut ports,
        3,
        &tag(&frame(MacAddr::BROADCAST, B, 60), 0x6000),
    );
    assert_eq!(sw.dropped(3, DropReason::NoDestination), 1);
    assert!(ports.took().is_empty());
}

#[test]
fn the_uplinks_frames_go_to_their_vlans_members_untagged() {
    let (mut sw, mut ports) = two_vlans();
    let f = frame(MacAddr::BROADCAST, B, 100);
    sw.send(&mut ports, 3, &tag(&f, 10));
    assert_eq!(ports.copies, [(0, f.clone()), (1, f.clone())]);
    ports.copies.clear();
    sw.send(&mut ports, 3, &tag(&f, 20));
    assert_eq!(ports.copies, [(2, f.clone())]);
    ports.copies.clear();
    // A VLAN with no member, and the native VLAN (no untagged client here).
    sw.send(&mut ports, 3, &tag(&f, 30));
    sw.send(&mut ports, 3, &f);
    assert_eq!(sw.dropped(3, DropReason::NoDestination), 2);
    assert!(ports.took().is_empty());
}

#[test]
fn a_trunk_client_takes_and_gives_tagged_frames_of_its_set_only() {
    // Port 0 a trunk of 10 and 20, port 1 access 10, port 2 untagged, 3 uplink.
    let mut sw = Switch::new(4);
    let mut ports = FakePorts::new(3, 1);
    let v = [
        PortVlan::Trunk("10;20".parse().unwrap()),
        PortVlan::Access(10),
        PortVlan::Untagged,
        PortVlan::Uplink,
    ];
    sw.vlans = v.to_vec();
    ports.vlans = v.to_vec();
    // Tagged 10 (priority 5 kept toward tagged ports): untagged to the access
    // port, tagged as it came to the uplink.
    let f = frame(MacAddr::BROADCAST, A, 60);
    let t = tag(&f, 0xa000 | 10);
    sw.send(&mut ports, 0, &t);
    assert_eq!(ports.copies, [(1, f.clone()), (3, t.clone())]);
    ports.copies.clear();
    // Tagged 20: the uplink only.
    sw.send(&mut ports, 0, &tag(&f, 20));
    assert_eq!(ports.took(), [3]);
    // Not in its set, untagged, priority-tagged: not member.
    sw.send(&mut ports, 0, &tag(&f, 30));
    sw.send(&mut ports, 0, &f);
    sw.send(&mut ports, 0, &tag(&f, 0x2000));
    assert_eq!(sw.dropped(0, DropReason::VlanNotMember), 3);
    assert!(ports.took().is_empty());
    // Toward it: VLAN 10 from the access port, tagged 10; native frames never.
    let g = frame(MacAddr::BROADCAST, B, 60);
    sw.send(&mut ports, 1, &g);
    assert_eq!(ports.copies, [(0, tag(&g, 10)), (3, tag(&g, 10))]);
    ports.copies.clear();
    sw.send(&mut ports, 2, &frame(MacAddr::BROADCAST, C, 60));
    assert_eq!(ports.took(), [3]);
    // A VLAN 30 frame from the uplink reaches no one.
    sw.send(&mut ports, 3, &tag(&frame(MacAddr::BROADCAST, C, 60), 30));
    assert_eq!(sw.dropped(3, DropReason::NoDestination), 1);
}

#[test]
fn vid_4095_and_stacked_tags_are_not_switched_and_a_cut_tag_is_a_runt() {
    let (mut sw, mut ports) = two_vlans();
    let f = frame(MacAddr::BROADCAST, B, 60);
    sw.send(&mut ports, 3, &tag(&f, 4095));
    for tpid in [[0x88, 0xa8], [0x91, 0x00]] {
        let mut s = tag(&f, 10);
        s[12..14].copy_from_slice(&tpid);
        sw.send(&mut ports, 3, &s);
        sw.send(&mut ports, 0, &s);
    }
    assert_eq!(sw.dropped(3, DropReason::VlanUnsupported), 3);
    assert_eq!(sw.dropped(0, DropReason::VlanUnsupported), 2);
    // A 0x8100 frame of 14 to 17 bytes: no whole tag.
    for len in 14..18 {
        sw.send(&mut ports, 3, &tag(&f, 10)[..len]);
    }
    assert_eq!(sw.dropped(3, DropReason::Runt), 4);
    assert!(ports.took().is_empty());
    // A whole tag and nothing after it: an 18-byte frame, 14 bytes untagged.
    sw.send(&mut ports, 3, &tag(&f, 10)[..18]);
    assert_eq!(ports.copies, [(0, f[..14].to_vec()), (1, f[..14].to_vec())]);
}

#[test]
fn a_pinned_address_is_stolen_in_any_vlan_and_never_crosses_into_another() {
    let (mut sw, mut ports) = two_vlans();
    // A is client 0's configured address (VLAN 10).
    sw.fdb.pin(A, 0);
    // Client 2 (VLAN 20) and the uplink in VLAN 20 claim it: refused.
    sw.send(&mut ports, 2, &frame(MacAddr::BROADCAST, A, 60));
    sw.send(&mut ports, 3, &tag(&frame(MacAddr::BROADCAST, A, 60), 20));
    assert_eq!(sw.dropped(2, DropReason::StolenSource), 1);
    assert_eq!(sw.dropped(3, DropReason::StolenSource), 1);
    // A frame to A in VLAN 20 does not reach client 0.
    sw.send(&mut ports, 3, &tag(&frame(A, C, 60), 20));
    sw.send(&mut ports, 2, &frame(A, C, 60));
    assert_eq!(sw.dropped(3, DropReason::VlanNotMember), 1);
    assert_eq!(sw.dropped(2, DropReason::VlanNotMember), 1);
    assert!(ports.took().is_empty());
    // In VLAN 10 it does, untagged.
    let f = frame(A, C, 60);
    sw.send(&mut ports, 3, &tag(&f, 10));
    assert_eq!(ports.copies, [(0, f)]);
}

#[test]
fn every_form_carries_the_checked_header_while_the_source_rewrites_its_frame() {
    // Client 0 (VLAN 10, configured MAC A) floods; after the first copy it
    // rewrites its source address and puts a VLAN 20 tag in its memory.
    let (mut sw, mut ports) = two_vlans();
    sw.macs[0] = Some(A);
    let mem = sw.mem.clone();
    ports.after_copy = Some(Box::new(move || {
        mem.write_slice(&C.0, GuestAddress(6)).unwrap();
        mem.write_slice(&[0x81, 0x00, 0x00, 20], GuestAddress(12))
            .unwrap();
    }));
    let f = frame(MacAddr::BROADCAST, A, 60);
    sw.send(&mut ports, 0, &f);
    // The uplink's tagged copy: the checked addresses, VLAN 10, and the bytes
    // after the original header as they are now (the source's to change).
    let mut now = f.clone();
    now[6..12].copy_from_slice(&C.0);
    now[12..16].copy_from_slice(&[0x81, 0x00, 0x00, 20]);
    let mut want = tag(&f, 10);
    want[18..].copy_from_slice(&now[14..]);
    assert_eq!(ports.copies, [(1, f.clone()), (3, want)]);
    ports.copies.clear();
    // From the uplink: the tag says VLAN 10; rewritten to 20 after the first
    // copy, every copy still goes by 10 and has the checked header.
    let (mut sw, mut ports) = two_vlans();
    let mem = sw.mem.clone();
    ports.after_copy = Some(Box::new(move || {
        mem.write_slice(&[0x81, 0x00, 0x00, 20], GuestAddress(12))
            .unwrap();
    }));
    let g = frame(MacAddr::BROADCAST, B, 60);
    sw.send(&mut ports, 3, &tag(&g, 10));
    assert_eq!(ports.copies, [(0, g.clone()), (1, g)]);
}

#[test]
fn a_full_size_frame_grows_by_the_tag_toward_the_uplink_and_shrinks_back() {
    let (mut sw, mut ports) = two_vlans();
    let f = frame(MacAddr::BROADCAST, A, 1514);
    sw.send(&mut ports, 0, &f);
    assert_eq!(ports.copies, [(1, f.clone()), (3, tag(&f, 10))]);
    assert_eq!(ports.copies[1].1.len(), 1518);
    ports.copies.clear();
    let t = tag(&frame(MacAddr::BROADCAST, B, 1514), 20);
    sw.send(&mut ports, 3, &t);
    assert_eq!(ports.copies, [(2, untag(&t))]);
    assert_eq!(sw.counters[3].rx_bytes, 1518);
}
