//! A frame's flow hash: which of several queues a frame goes out of, so that
//! the frames of one conversation keep their order on the wire.
//!
//! The hash covers the Ethernet addresses and, for IPv4 and IPv6 (without VLAN
//! tags), the addresses, the protocol and, for TCP, UDP and SCTP in an
//! unfragmented IPv4 datagram or right after the IPv6 header, the ports. Frames
//! it cannot parse further hash by what it parsed. It is a spreading function,
//! not a secure one: a peer that picks its headers picks its queue, which is
//! the point.

/// Bytes of a frame [`flow_hash`] reads at most: Ethernet, an IPv6 header, ports.
pub const FLOW_PREFIX: usize = 14 + 40 + 4;

const ETHERTYPE_IPV4: [u8; 2] = [0x08, 0x00];
const ETHERTYPE_IPV6: [u8; 2] = [0x86, 0xdd];

fn has_ports(protocol: u8) -> bool {
    matches!(protocol, 6 | 17 | 132)
}

/// The flow hash of the frame whose first bytes are `prefix` (up to
/// [`FLOW_PREFIX`] of them; fewer for a short frame).
pub fn flow_hash(prefix: &[u8]) -> u32 {
    // FNV-1a, 32 bits.
    let mut h: u32 = 0x811c_9dc5;
    let mut add = |bytes: &[u8]| {
        for b in bytes {
            h = (h ^ u32::from(*b)).wrapping_mul(0x0100_0193);
        }
    };
    let Some(macs) = prefix.get(..12) else {
        add(prefix);
        return finish(h);
    };
    add(macs);
    let l3 = prefix.get(14..).unwrap_or_default();
    match prefix.get(12..14) {
        Some(t) if t == ETHERTYPE_IPV4 => {
            if let Some(ip) = l3.get(..20) {
                add(&ip[12..20]);
                add(&ip[9..10]);
                let header = usize::from(ip[0] & 0x0f) * 4;
                let fragment = u16::from_be_bytes([ip[6], ip[7]]) & 0x3fff != 0;
                if has_ports(ip[9]) && !fragment && header >= 20 {
                    add(l3.get(header..header + 4).unwrap_or_default());
                }
            }
        }
        Some(t) if t == ETHERTYPE_IPV6 => {
            if let Some(ip) = l3.get(..40) {
                add(&ip[8..40]);
                add(&ip[6..7]);
                if has_ports(ip[6]) {
                    add(l3.get(40..44).unwrap_or_default());
                }
            }
        }
        _ => {}
    }
    finish(h)
}

/// Mixes the high bits down, so that `hash % n` for a small `n` uses them all.
fn finish(h: u32) -> u32 {
    h ^ (h >> 16)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn udp4(src_port: u16, dst_port: u16, frag: u16) -> Vec<u8> {
        let mut f = vec![0u8; 64];
        f[12..14].copy_from_slice(&ETHERTYPE_IPV4);
        f[14] = 0x45;
        f[20..22].copy_from_slice(&frag.to_be_bytes());
        f[23] = 17;
        f[26..30].copy_from_slice(&[10, 0, 0, 1]);
        f[30..34].copy_from_slice(&[10, 0, 0, 2]);
        f[34..36].copy_from_slice(&src_port.to_be_bytes());
        f[36..38].copy_from_slice(&dst_port.to_be_bytes());
        f[40] = 0xaa; // payload, not hashed
        f
    }

    #[test]
    fn ports_separate_flows_and_the_payload_does_not() {
        let a = udp4(1000, 7, 0);
        let mut a2 = a.clone();
        a2[40] = 0xbb;
        assert_eq!(flow_hash(&a[..FLOW_PREFIX]), flow_hash(&a2[..FLOW_PREFIX]));
        let spread: std::collections::HashSet<u32> = (0..64)
            .map(|p| flow_hash(&udp4(1000 + p, 7, 0)) % 4)
            .collect();
        assert_eq!(spread.len(), 4, "64 flows reach all of 4 queues");
    }

    #[test]
    fn a_fragment_hashes_by_its_addresses_only() {
        // More fragments / an offset: the ports are not there to read.
        assert_eq!(
            flow_hash(&udp4(1000, 7, 0x2000)),
            flow_hash(&udp4(2000, 9, 0x2000))
        );
        assert_ne!(flow_hash(&udp4(1000, 7, 0)), flow_hash(&udp4(2000, 9, 0)));
    }

    #[test]
    fn short_and_odd_frames_hash_without_panicking() {
        for len in 0..FLOW_PREFIX {
            let _ = flow_hash(&udp4(1, 2, 0)[..len]);
        }
        let mut bad = udp4(1, 2, 0);
        bad[14] = 0x4f; // a 60-byte IPv4 header: its ports lie past the prefix
        let _ = flow_hash(&bad[..FLOW_PREFIX]);
        let mut v6 = vec![0u8; FLOW_PREFIX];
        v6[12..14].copy_from_slice(&ETHERTYPE_IPV6);
        v6[20] = 6;
        let _ = flow_hash(&v6);
        let _ = flow_hash(&v6[..30]);
    }
}
