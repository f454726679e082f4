//! VLANs (IEEE 802.1Q): which VLANs a port is a member of, and in which form
//! (tagged or untagged) its frames come and go.
//!
//! Inside the switch a frame belongs to one VLAN, a [`Vlan`]: 1 to 4094 for the
//! tagged VLANs, 0 for the native VLAN (untagged frames). A port is one of:
//!
//! * [`PortVlan::Untagged`] (a client port without `vlan=` or `trunk=`, as before
//!   VLANs existed): member of the native VLAN only; takes and gives untagged
//!   frames;
//! * [`PortVlan::Access`] (`vlan=N`): member of VLAN N only; its client sends and
//!   receives untagged frames, the switch adds the tag toward uplinks and trunks
//!   and removes it toward the client;
//! * [`PortVlan::Trunk`] (`trunk=10;20;30-40`): member of the VLANs of its set;
//!   frames come and go tagged; untagged frames are not taken;
//! * [`PortVlan::Uplink`]: member of every VLAN; a tagged frame belongs to its
//!   VID, an untagged one to the native VLAN, and so they leave.
//!
//! What a frame's first bytes say ([`classify`]): a frame whose EtherType is
//! 0x8100 carries a tag and belongs to its VID. A priority-tagged frame (VID 0)
//! belongs to the port's untagged VLAN, like an untagged frame (802.1Q 6.9.1);
//! its tag is removed (its priority is lost). VID 4095 (reserved) and outer
//! tags of stacked VLANs (0x88a8, 802.1ad, and the older 0x9100) are not
//! switched: dropped on every port ([`crate::counters::DropReason::VlanUnsupported`]).
//! A 0x8100 tag inside the first one (C-tag in C-tag) is payload to the switch.
//!
//! Limits: one tag is added or removed, never more; the priority bits of a tag
//! are kept when a tagged frame leaves tagged, and are 0 on a tag the switch
//! adds; no per-VLAN limits beyond the learning table's per-port quota.

use std::fmt;
use std::str::FromStr;

use twin_wire::ether::{
    ethertype_of, ETH_HLEN, ETH_VLAN_HLEN, TPID_8021AD, TPID_8021Q, TPID_QINQ_LEGACY, VID_MASK,
};

/// A VLAN inside the switch: 1..=4094, or 0 for the native (untagged) VLAN.
pub type Vlan = u16;

/// The native VLAN: untagged frames.
pub const NATIVE: Vlan = 0;

/// The highest VLAN id a port may name (4095 is reserved).
pub const MAX_VID: u16 = 4094;

/// A set of VLAN ids 1..=4094, as a bitmap (no allocation, `Copy`).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct VlanSet([u64; 64]);

impl Default for VlanSet {
    fn default() -> Self {
        VlanSet([0; 64])
    }
}

impl VlanSet {
    /// Adds `vid` (1..=4094; others are ignored).
    pub fn insert(&mut self, vid: u16) {
        if (1..=MAX_VID).contains(&vid) {
            if let Some(w) = self.0.get_mut(usize::from(vid / 64)) {
                *w |= 1 << (vid % 64);
            }
        }
    }

    /// Whether `vid` is in the set (never 0 or 4095).
    #[inline]
    pub fn contains(&self, vid: u16) -> bool {
        self.0
            .get(usize::from(vid / 64))
            .is_some_and(|w| w & (1 << (vid % 64)) != 0)
    }

    /// The ids in the set, in order.
    pub fn iter(&self) -> impl Iterator<Item = u16> + '_ {
        (1..=MAX_VID).filter(|v| self.contains(*v))
    }

    /// Number of ids in the set.
    pub fn len(&self) -> usize {
        self.0.iter().map(|w| w.count_ones() as usize).sum()
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The set as its spec syntax: ids and ranges separated by `;` (`10;20-22`).
impl fmt::Display for VlanSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        let mut v = 1u16;
        while v <= MAX_VID {
            if !self.contains(v) {
                v += 1;
                continue;
            }
            let start = v;
            while v < MAX_VID && self.contains(v + 1) {
                v += 1;
            }
            if !first {
                f.write_str(";")?;
            }
            first = false;
            if start == v {
                write!(f, "{start}")?;
            } else {
                write!(f, "{start}-{v}")?;
            }
            v += 1;
        }
        Ok(())
    }
}

impl fmt::Debug for VlanSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "VlanSet({self})")
    }
}

/// Parses one VLAN id, 1..=4094.
pub fn parse_vid(s: &str) -> Result<u16, String> {
    match s.trim().parse::<u16>() {
        Ok(v) if (1..=MAX_VID).contains(&v) => Ok(v),
        _ => Err(format!("{s:?} is not a VLAN id from 1 to {MAX_VID}")),
    }
}

/// `10;20;30-40`: ids and inclusive ranges separated by `;` (not `,`, which
/// separates a spec's options). Empty items, reversed ranges and ids outside
/// 1..=4094 are errors.
impl FromStr for VlanSet {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let mut set = VlanSet::default();
        for item in s.split(';') {
            match item.split_once('-') {
                Some((a, b)) => {
                    let (a, b) = (parse_vid(a)?, parse_vid(b)?);
                    if a > b {
                        return Err(format!("{item:?} is a reversed range"));
                    }
                    for v in a..=b {
                        set.insert(v);
                    }
                }
                None => set.insert(parse_vid(item)?),
            }
        }
        Ok(set)
    }
}

/// A port's VLAN membership and the form its frames take.
// One per port, read per frame: the trunk's 512-byte bitmap inline saves a
// pointer chase on every membership test.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PortVlan {
    /// Native VLAN only, untagged (a client port by default).
    #[default]
    Untagged,
    /// One VLAN, untagged at the port (`vlan=N`).
    Access(u16),
    /// The VLANs of the set, tagged (`trunk=...`).
    Trunk(VlanSet),
    /// Every VLAN: tagged, the native one untagged (an uplink).
    Uplink,
}

/// What the first bytes of a frame from a port say about its VLAN.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ingress {
    /// The frame belongs to `vlan`; its header is the first `hlen` bytes (14 or
    /// 18); `tci` is the tag to put on it when it leaves tagged (its VID is
    /// `vlan`).
    Vlan {
        /// Its VLAN.
        vlan: Vlan,
        /// Its tag control information when it leaves tagged.
        tci: u16,
        /// Its header's length as received: 14 untagged, 18 tagged.
        hlen: usize,
    },
    /// Shorter than its header (a tagged frame shorter than 18 bytes).
    Runt,
    /// A VLAN-tagged frame from a port that takes untagged frames only.
    Tagged,
    /// A frame of a VLAN the port is not a member of (a trunk client's
    /// untagged frame, or a VID outside its set).
    NotMember,
    /// VID 4095, or a stacked tag's outer TPID (0x88a8, 0x9100).
    Unsupported,
}

impl PortVlan {
    /// The VLAN of an untagged (or priority-tagged) frame from this port, if it
    /// takes them.
    fn untagged_vlan(&self) -> Option<Vlan> {
        match *self {
            PortVlan::Untagged | PortVlan::Uplink => Some(NATIVE),
            PortVlan::Access(v) => Some(v),
            PortVlan::Trunk(_) => None,
        }
    }

    /// Whether the port is a member of `vlan`.
    #[inline]
    pub fn is_member(&self, vlan: Vlan) -> bool {
        match self {
            PortVlan::Untagged => vlan == NATIVE,
            PortVlan::Access(v) => vlan == *v,
            PortVlan::Trunk(set) => set.contains(vlan),
            PortVlan::Uplink => vlan <= MAX_VID,
        }
    }

    /// Whether a frame of `vlan` leaves this port tagged (a member's frame;
    /// the native VLAN never is).
    #[inline]
    pub fn egress_tagged(&self, vlan: Vlan) -> bool {
        match self {
            PortVlan::Untagged | PortVlan::Access(_) => false,
            PortVlan::Trunk(_) => true,
            PortVlan::Uplink => vlan != NATIVE,
        }
    }

    /// Classifies a frame from this port by its first bytes `pre` (`n` of them
    /// valid, at least [`ETH_HLEN`]).
    pub fn classify(&self, pre: &[u8; ETH_VLAN_HLEN], n: usize) -> Ingress {
        let ethertype = ethertype_of(pre);
        if ethertype == TPID_8021AD || ethertype == TPID_QINQ_LEGACY {
            return Ingress::Unsupported;
        }
        if ethertype != TPID_8021Q {
            return match self.untagged_vlan() {
                Some(vlan) => Ingress::Vlan {
                    vlan,
                    tci: vlan,
                    hlen: ETH_HLEN,
                },
                None => Ingress::NotMember,
            };
        }
        if n < ETH_VLAN_HLEN {
            return Ingress::Runt;
        }
        let tci = u16::from_be_bytes([pre[14], pre[15]]);
        let vid = tci & VID_MASK;
        if vid > MAX_VID {
            return Ingress::Unsupported;
        }
        if vid == 0 {
            // Priority-tagged: the port's untagged VLAN, tag removed.
            return match self.untagged_vlan() {
                Some(vlan) => Ingress::Vlan {
                    vlan,
                    tci: vlan,
                    hlen: ETH_VLAN_HLEN,
                },
                None => Ingress::NotMember,
            };
        }
        match self {
            PortVlan::Untagged | PortVlan::Access(_) => Ingress::Tagged,
            PortVlan::Trunk(set) if !set.contains(vid) => Ingress::NotMember,
            PortVlan::Trunk(_) | PortVlan::Uplink => Ingress::Vlan {
                vlan: vid,
                tci,
                hlen: ETH_VLAN_HLEN,
            },
        }
    }
}

/// The port's VLAN configuration as the report and `twin ctl status` show it:
/// `untagged`, `access 10`, `trunk 10;20-22`, `all` (an uplink: every VLAN).
impl fmt::Display for PortVlan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PortVlan::Untagged => f.write_str("untagged"),
            PortVlan::Access(v) => write!(f, "access {v}"),
            PortVlan::Trunk(set) => write!(f, "trunk {set}"),
            PortVlan::Uplink => f.write_str("all"),
        }
    }
}

impl serde::Serialize for PortVlan {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// Writes the header a frame leaves with into `out`: the untagged form (14
/// bytes: addresses and inner EtherType) or the tagged one (18: addresses,
/// 0x8100, `tci`, inner EtherType), from `pre`, the private copy of the frame's
/// first bytes whose header was `hlen` bytes long. Returns the header's length.
pub fn build_header(
    pre: &[u8; ETH_VLAN_HLEN],
    hlen: usize,
    tagged: Option<u16>,
    out: &mut [u8; ETH_VLAN_HLEN],
) -> usize {
    // The inner EtherType: after the tag when there was one.
    let inner = if hlen == ETH_VLAN_HLEN {
        [pre[16], pre[17]]
    } else {
        [pre[12], pre[13]]
    };
    out[..12].copy_from_slice(&pre[..12]);
    match tagged {
        None => {
            out[12..14].copy_from_slice(&inner);
            ETH_HLEN
        }
        Some(tci) => {
            out[12..14].copy_from_slice(&TPID_8021Q.to_be_bytes());
            out[14..16].copy_from_slice(&tci.to_be_bytes());
            out[16..18].copy_from_slice(&inner);
            ETH_VLAN_HLEN
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pre(ethertype: u16, tci: u16, inner: u16) -> [u8; ETH_VLAN_HLEN] {
        let mut p = [0u8; ETH_VLAN_HLEN];
        p[..6].copy_from_slice(&[2, 0, 0, 0, 0, 1]);
        p[6..12].copy_from_slice(&[2, 0, 0, 0, 0, 2]);
        p[12..14].copy_from_slice(&ethertype.to_be_bytes());
        p[14..16].copy_from_slice(&tci.to_be_bytes());
        p[16..18].copy_from_slice(&inner.to_be_bytes());
        p
    }

    #[test]
    fn sets_parse_print_and_refuse_what_is_not_a_vid() {
        let s: VlanSet = "10;20;30-33;4094".parse().unwrap();
        assert_eq!(s.iter().collect::<Vec<_>>(), [10, 20, 30, 31, 32, 33, 4094]);
        assert_eq!(s.len(), 7);
        assert_eq!(s.to_string(), "10;20;30-33;4094");
        assert!(!s.contains(0) && !s.contains(4095) && !s.contains(u16::MAX));
        let all: VlanSet = "1-4094".parse().unwrap();
        assert_eq!((all.len(), all.to_string().as_str()), (4094, "1-4094"));
        for bad in [
            "", "0", "4095", "10;", ";10", "10;;20", "x", "10-", "-5", "20-10", "1-4095", "10,20",
            "65536", "-1",
        ] {
            assert!(bad.parse::<VlanSet>().is_err(), "{bad:?}");
        }
        assert!(VlanSet::default().is_empty());
    }

    #[test]
    fn membership_and_egress_form_per_kind() {
        let trunk = PortVlan::Trunk("10;20".parse().unwrap());
        for (p, members, not) in [
            (PortVlan::Untagged, &[0][..], &[10, 20][..]),
            (PortVlan::Access(10), &[10], &[0, 20]),
            (trunk, &[10, 20], &[0, 30]),
            (PortVlan::Uplink, &[0, 10, 20, 4094], &[4095]),
        ] {
            assert!(members.iter().all(|v| p.is_member(*v)), "{p}");
            assert!(!not.iter().any(|v| p.is_member(*v)), "{p}");
        }
        assert!(!PortVlan::Access(10).egress_tagged(10));
        assert!(trunk.egress_tagged(10));
        assert!(PortVlan::Uplink.egress_tagged(10));
        assert!(!PortVlan::Uplink.egress_tagged(NATIVE));
        assert_eq!(trunk.to_string(), "trunk 10;20");
        assert_eq!(PortVlan::Access(7).to_string(), "access 7");
    }

    #[test]
    fn classification_of_untagged_tagged_priority_and_stacked_frames() {
        let trunk = PortVlan::Trunk("10".parse().unwrap());
        let ip = 0x0800;
        let untagged = pre(ip, 0, 0);
        let t10 = pre(TPID_8021Q, 0x2000 | 10, ip); // priority 1, VID 10
        let t20 = pre(TPID_8021Q, 20, ip);
        let prio = pre(TPID_8021Q, 0x6000, ip); // VID 0
        let v4095 = pre(TPID_8021Q, 4095, ip);
        let v = |vlan, tci, hlen| Ingress::Vlan { vlan, tci, hlen };
        // Untagged and access ports: untagged and priority-tagged frames only.
        assert_eq!(PortVlan::Untagged.classify(&untagged, 60), v(0, 0, 14));
        assert_eq!(PortVlan::Access(10).classify(&untagged, 60), v(10, 10, 14));
        assert_eq!(PortVlan::Access(10).classify(&prio, 60), v(10, 10, 18));
        assert_eq!(PortVlan::Access(10).classify(&t10, 60), Ingress::Tagged);
        assert_eq!(PortVlan::Untagged.classify(&t10, 60), Ingress::Tagged);
        // Trunks: tagged frames of their set only; the priority bits stay.
        assert_eq!(trunk.classify(&t10, 60), v(10, 0x2000 | 10, 18));
        assert_eq!(trunk.classify(&t20, 60), Ingress::NotMember);
        assert_eq!(trunk.classify(&untagged, 60), Ingress::NotMember);
        assert_eq!(trunk.classify(&prio, 60), Ingress::NotMember);
        // Uplinks: every VID; untagged and priority-tagged are native.
        assert_eq!(PortVlan::Uplink.classify(&t20, 60), v(20, 20, 18));
        assert_eq!(PortVlan::Uplink.classify(&untagged, 60), v(0, 0, 14));
        assert_eq!(PortVlan::Uplink.classify(&prio, 60), v(0, 0, 18));
        // Everywhere: 4095 and stacked outer tags are not switched; a tag cut
        // short is a runt.
        for p in [
            PortVlan::Untagged,
            PortVlan::Access(10),
            trunk,
            PortVlan::Uplink,
        ] {
            assert_eq!(p.classify(&v4095, 60), Ingress::Unsupported, "{p}");
            for tpid in [TPID_8021AD, TPID_QINQ_LEGACY] {
                assert_eq!(p.classify(&pre(tpid, 10, ip), 60), Ingress::Unsupported);
            }
        }
        assert_eq!(PortVlan::Uplink.classify(&t10, 17), Ingress::Runt);
        assert_eq!(PortVlan::Access(10).classify(&t10, 14), Ingress::Runt);
    }

    #[test]
    fn headers_are_built_in_either_form_from_either_form() {
        let mut out = [0u8; ETH_VLAN_HLEN];
        let untagged = pre(0x0806, 0xdead, 0xbeef);
        // Untagged in, tagged out: the tag goes between the addresses and the
        // EtherType.
        assert_eq!(build_header(&untagged, 14, Some(10), &mut out), 18);
        assert_eq!(out, pre(TPID_8021Q, 10, 0x0806));
        // Tagged in, untagged out: the inner EtherType follows the addresses.
        let tagged = pre(TPID_8021Q, 10, 0x0800);
        assert_eq!(build_header(&tagged, 18, None, &mut out), 14);
        assert_eq!(&out[..14], &pre(0x0800, 0, 0)[..14]);
        // Tagged in, tagged out with another TCI.
        assert_eq!(build_header(&tagged, 18, Some(0x2000 | 10), &mut out), 18);
        assert_eq!(out, pre(TPID_8021Q, 0x2000 | 10, 0x0800));
    }
}
