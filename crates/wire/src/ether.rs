//! Ethernet addresses and header fields.

use std::fmt;
use std::str::FromStr;

/// Length of an Ethernet header without VLAN tag.
pub const ETH_HLEN: usize = 14;
/// Smallest frame the switch forwards: a bare Ethernet header.
pub const MIN_FRAME: usize = ETH_HLEN;
/// Largest frame the switch forwards: 1500 B MTU plus header and one 802.1Q
/// tag (1514 + 4); no jumbo frames.
pub const MAX_FRAME: usize = 1514 + 4;
/// Length of an Ethernet header with one 802.1Q tag.
pub const ETH_VLAN_HLEN: usize = ETH_HLEN + 4;
/// The 802.1Q tag protocol identifier (a C-tag), in the EtherType field.
pub const TPID_8021Q: u16 = 0x8100;
/// The 802.1ad tag protocol identifier (an S-tag, provider bridging, "QinQ").
pub const TPID_8021AD: u16 = 0x88a8;
/// The pre-standard QinQ tag protocol identifier some equipment still sends.
pub const TPID_QINQ_LEGACY: u16 = 0x9100;
/// The VLAN id bits of a tag control information (TCI) word.
pub const VID_MASK: u16 = 0x0fff;

/// The EtherType (or tag protocol identifier) of a frame whose first bytes are
/// `hdr`.
pub fn ethertype_of(hdr: &[u8]) -> u16 {
    match hdr.get(12..14) {
        Some(&[a, b]) => u16::from_be_bytes([a, b]),
        _ => 0,
    }
}

/// A 48-bit IEEE 802 MAC address.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct MacAddr(pub [u8; 6]);

impl MacAddr {
    /// ff:ff:ff:ff:ff:ff.
    pub const BROADCAST: MacAddr = MacAddr([0xff; 6]);

    /// Group (multicast or broadcast) addresses have the low bit of the first octet set.
    pub const fn is_multicast(&self) -> bool {
        self.0[0] & 1 == 1
    }

    /// A locally administered unicast address built from a small integer, for
    /// generated clients: 02:00:00:00:hi:lo style.
    pub const fn local(id: u32) -> MacAddr {
        let b = id.to_be_bytes();
        MacAddr([0x02, 0x00, b[0], b[1], b[2], b[3]])
    }

    /// Destination address of a frame whose first bytes are `hdr` (at least 6 bytes).
    pub fn dst_of(hdr: &[u8; ETH_HLEN]) -> MacAddr {
        MacAddr([hdr[0], hdr[1], hdr[2], hdr[3], hdr[4], hdr[5]])
    }

    /// Source address of a frame whose first bytes are `hdr`.
    pub fn src_of(hdr: &[u8; ETH_HLEN]) -> MacAddr {
        MacAddr([hdr[6], hdr[7], hdr[8], hdr[9], hdr[10], hdr[11]])
    }
}

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            b[0], b[1], b[2], b[3], b[4], b[5]
        )
    }
}

impl fmt::Debug for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl serde::Serialize for MacAddr {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// Error of [`MacAddr::from_str`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid MAC address {0:?}: want six hex octets separated by ':'")]
pub struct ParseMacError(String);

impl FromStr for MacAddr {
    type Err = ParseMacError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || ParseMacError(s.to_string());
        let mut out = [0u8; 6];
        let mut parts = s.split(':');
        for byte in out.iter_mut() {
            let p = parts.next().ok_or_else(err)?;
            if p.is_empty() || p.len() > 2 {
                return Err(err());
            }
            *byte = u8::from_str_radix(p, 16).map_err(|_| err())?;
        }
        if parts.next().is_some() {
            return Err(err());
        }
        Ok(MacAddr(out))
    }
}

/// Swaps destination and source MAC addresses in place (the reflect NIC, DPDK's macswap).
pub fn swap_macs(hdr: &mut [u8; ETH_HLEN]) {
    for i in 0..6 {
        hdr.swap(i, i + 6);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints() {
        let m: MacAddr = "52:54:00:0a:0B:ff".parse().unwrap();
        assert_eq!(m.to_string(), "52:54:00:0a:0b:ff");
        assert!("52:54:00:0a:0b".parse::<MacAddr>().is_err());
        assert!("52:54:00:0a:0b:ff:00".parse::<MacAddr>().is_err());
        assert!("52:54:00:0a:0b:fg".parse::<MacAddr>().is_err());
        assert!("52:54:00:0a:0b:".parse::<MacAddr>().is_err());
    }

    #[test]
    fn parse_takes_one_or_two_hex_digits_per_octet_and_no_more() {
        let m: MacAddr = "2:0:a:B:0c:ff".parse().unwrap();
        assert_eq!(m, MacAddr([2, 0, 0xa, 0xb, 0xc, 0xff]));
        for bad in [
            "052:54:00:0a:0b:ff",
            "52:54:00:0a:0b:0ff",
            "52::00:0a:0b:ff",
            "",
        ] {
            assert_eq!(
                bad.parse::<MacAddr>(),
                Err(ParseMacError(bad.to_string())),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn debug_and_serialize_print_the_colon_form() {
        let m = MacAddr([0x52, 0x54, 0, 0x0a, 0x0b, 0xff]);
        assert_eq!(format!("{m:?}"), "52:54:00:0a:0b:ff");
        assert_eq!(serde_json::to_string(&m).unwrap(), "\"52:54:00:0a:0b:ff\"");
    }

    #[test]
    fn local_addresses_are_locally_administered_unicast() {
        assert_eq!(
            MacAddr::local(0x0102_0304),
            MacAddr([0x02, 0x00, 0x01, 0x02, 0x03, 0x04])
        );
        assert_eq!(MacAddr::local(7).to_string(), "02:00:00:00:00:07");
    }

    #[test]
    fn frame_size_limits() {
        assert_eq!((ETH_HLEN, MIN_FRAME, MAX_FRAME), (14, 14, 1518));
    }

    #[test]
    fn multicast_bit() {
        assert!(MacAddr([0x01, 0, 0x5e, 0, 0, 1]).is_multicast());
        assert!(MacAddr([0x33, 0x33, 0, 0, 0, 1]).is_multicast());
        assert!(!MacAddr([0x52, 0x54, 0, 0, 0, 1]).is_multicast());
        assert!(!MacAddr([0; 6]).is_multicast());
        assert!(MacAddr::BROADCAST.is_multicast());
        assert!(!MacAddr::local(7).is_multicast());
    }

    #[test]
    fn swap() {
        let mut h = [0u8; ETH_HLEN];
        h[..6].copy_from_slice(&[1; 6]);
        h[6..12].copy_from_slice(&[2; 6]);
        swap_macs(&mut h);
        assert_eq!(MacAddr::dst_of(&h), MacAddr([2; 6]));
        assert_eq!(MacAddr::src_of(&h), MacAddr([1; 6]));
    }
}
