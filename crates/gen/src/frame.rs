//! The generator's frame format.
//!
//! ```text
//! 0   dst MAC (6)   6   src MAC (6)   12  ethertype 0x88B5 (2, big-endian)
//! 14  generator id (u32 LE)           18  sequence number (u64 LE)
//! 26  send timestamp (u64 LE, ns)     34  payload pattern up to the frame length
//! ```
//!
//! The send timestamp is nanoseconds since the sending generator started (its own
//! monotonic clock, so only that generator can interpret it). Frames built without
//! one ([`GenFrame::with_seq`]) carry the payload pattern there instead (bytes 0..=7,
//! [`NO_TIMESTAMP`]), exactly as before timestamps existed.
//!
//! 60..=1514 bytes (Ethernet without FCS, without the virtio header).
//!
//! A tagged frame ([`GenFrame::tagged`], `twin gen --vlan`) has an 802.1Q tag
//! (0x8100, the VLAN id, priority 0) after the addresses and everything else 4
//! bytes later; [`GenFrame::parse`] reads both forms. Its length counts the
//! tag.

use twin_wire::MacAddr;

/// IEEE "local experimental" ethertype used by the generator.
pub const ETHERTYPE_GEN: u16 = 0x88B5;
/// Smallest frame the generator sends.
pub const MIN_FRAME_LEN: usize = 60;
/// Largest frame the generator sends.
pub const MAX_FRAME_LEN: usize = 1514;
/// Bytes of the generator header (Ethernet + id + sequence number + send timestamp).
pub const GEN_HDR_LEN: usize = 34;
/// The timestamp field of a frame without a timestamp: the payload pattern's bytes
/// 0..=7 read as u64 LE (about 16 years in nanoseconds, never a plausible time).
pub const NO_TIMESTAMP: u64 = 0x0706_0504_0302_0100;

/// Error of this module.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// The requested frame length is outside 60..=1514.
    #[error("frame size {0} B is outside {MIN_FRAME_LEN}..={MAX_FRAME_LEN} B (Ethernet frame without FCS and virtio header)")]
    InvalidFrameLen(usize),
    /// A VLAN id outside 1..=4094.
    #[error("VLAN id {0} is outside 1..=4094")]
    InvalidVlan(u16),
}

/// A frame template; only the sequence number changes per frame.
#[derive(Debug, Clone)]
pub struct GenFrame {
    buf: [u8; MAX_FRAME_LEN],
    len: usize,
    /// Where the generator header's fields start past their untagged place: 4
    /// with a VLAN tag, else 0.
    off: usize,
}

/// Length of an 802.1Q tag.
const TAG_LEN: usize = 4;

/// What [`GenFrame::parse`] found in a received frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Parsed {
    /// Destination MAC.
    pub dst: MacAddr,
    /// Source MAC.
    pub src: MacAddr,
    /// Generator id.
    pub id: u32,
    /// Sequence number.
    pub seq: u64,
    /// Send timestamp (ns since the sender started; [`NO_TIMESTAMP`] if none).
    pub sent_ns: u64,
}

impl GenFrame {
    /// A template of `len` bytes.
    pub fn new(len: usize, src: MacAddr, dst: MacAddr, id: u32) -> Result<Self, FrameError> {
        if !(MIN_FRAME_LEN..=MAX_FRAME_LEN).contains(&len) {
            return Err(FrameError::InvalidFrameLen(len));
        }
        let mut buf = [0u8; MAX_FRAME_LEN];
        buf[0..6].copy_from_slice(&dst.0);
        buf[6..12].copy_from_slice(&src.0);
        buf[12..14].copy_from_slice(&ETHERTYPE_GEN.to_be_bytes());
        buf[14..18].copy_from_slice(&id.to_le_bytes());
        for (i, b) in buf[26..].iter_mut().enumerate() {
            *b = i as u8;
        }
        Ok(Self { buf, len, off: 0 })
    }

    /// A template of `len` bytes (the tag included) tagged with VLAN `vid`
    /// (1..=4094; priority 0).
    pub fn tagged(
        len: usize,
        src: MacAddr,
        dst: MacAddr,
        id: u32,
        vid: u16,
    ) -> Result<Self, FrameError> {
        if !(1..=4094).contains(&vid) {
            return Err(FrameError::InvalidVlan(vid));
        }
        let plain = Self::new(len, src, dst, id)?;
        let mut buf = [0u8; MAX_FRAME_LEN];
        buf[..12].copy_from_slice(&plain.buf[..12]);
        buf[12..14].copy_from_slice(&0x8100u16.to_be_bytes());
        buf[14..16].copy_from_slice(&vid.to_be_bytes());
        buf[16..].copy_from_slice(&plain.buf[12..MAX_FRAME_LEN - TAG_LEN]);
        Ok(Self {
            buf,
            len,
            off: TAG_LEN,
        })
    }

    /// The frame bytes with sequence number `seq` and no timestamp (the same bytes
    /// for the same `seq`, run after run).
    pub fn with_seq(&mut self, seq: u64) -> &[u8] {
        self.with_seq_and_time(seq, NO_TIMESTAMP)
    }

    /// The frame bytes with sequence number `seq` and send timestamp `t_ns`.
    #[inline]
    pub fn with_seq_and_time(&mut self, seq: u64, t_ns: u64) -> &[u8] {
        let o = self.off;
        self.buf[18 + o..26 + o].copy_from_slice(&seq.to_le_bytes());
        self.buf[26 + o..34 + o].copy_from_slice(&t_ns.to_le_bytes());
        &self.buf[..self.len]
    }

    /// Frame length.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Never true (frames are at least 60 bytes).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Parses the first bytes of a received frame (at least [`GEN_HDR_LEN`],
    /// 4 more for a tagged one); `None` if it is not a generator frame.
    pub fn parse(hdr: &[u8]) -> Option<Parsed> {
        let tagged = hdr.get(12..14) == Some(&[0x81, 0x00][..]);
        let mut h = [0u8; GEN_HDR_LEN];
        if tagged {
            h[..12].copy_from_slice(hdr.get(..12)?);
            h[12..].copy_from_slice(hdr.get(12 + TAG_LEN..GEN_HDR_LEN + TAG_LEN)?);
        } else {
            h.copy_from_slice(hdr.get(..GEN_HDR_LEN)?);
        }
        if u16::from_be_bytes([h[12], h[13]]) != ETHERTYPE_GEN {
            return None;
        }
        let u64_at = |o: usize| {
            u64::from_le_bytes([
                h[o],
                h[o + 1],
                h[o + 2],
                h[o + 3],
                h[o + 4],
                h[o + 5],
                h[o + 6],
                h[o + 7],
            ])
        };
        let mac = |o: usize| MacAddr([h[o], h[o + 1], h[o + 2], h[o + 3], h[o + 4], h[o + 5]]);
        Some(Parsed {
            dst: mac(0),
            src: mac(6),
            id: u32::from_le_bytes([h[14], h[15], h[16], h[17]]),
            seq: u64_at(18),
            sent_ns: u64_at(26),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tagged_frame_has_the_tag_after_the_addresses_and_parses() {
        let (src, dst) = (MacAddr::local(1), MacAddr::local(2));
        let mut plain = GenFrame::new(64, src, dst, 7).unwrap();
        let mut t = GenFrame::tagged(64, src, dst, 7, 10).unwrap();
        let p = plain.with_seq(5).to_vec();
        let f = t.with_seq(5).to_vec();
        assert_eq!(f.len(), 64);
        assert_eq!(&f[..12], &p[..12]);
        assert_eq!(&f[12..16], &[0x81, 0x00, 0x00, 10]);
        assert_eq!(&f[16..], &p[12..60]);
        let got = GenFrame::parse(&f).unwrap();
        assert_eq!((got.id, got.seq, got.src, got.dst), (7, 5, src, dst));
        // Cut inside the generator header: not parsed.
        assert!(GenFrame::parse(&f[..GEN_HDR_LEN + 3]).is_none());
        for bad in [0, 4095] {
            assert_eq!(
                GenFrame::tagged(64, src, dst, 7, bad).unwrap_err(),
                FrameError::InvalidVlan(bad)
            );
        }
    }

    #[test]
    fn build_and_parse() {
        assert_eq!(
            GenFrame::new(59, MacAddr::local(1), MacAddr::BROADCAST, 1).unwrap_err(),
            FrameError::InvalidFrameLen(59)
        );
        assert!(GenFrame::new(1515, MacAddr::local(1), MacAddr::BROADCAST, 1).is_err());
        let mut f = GenFrame::new(60, MacAddr::local(7), MacAddr::BROADCAST, 7).unwrap();
        let bytes = f.with_seq(42).to_vec();
        assert_eq!(bytes.len(), 60);
        let p = GenFrame::parse(&bytes).unwrap();
        assert_eq!(
            (p.id, p.seq, p.src, p.dst),
            (7, 42, MacAddr::local(7), MacAddr::BROADCAST)
        );
        assert_eq!(p.sent_ns, NO_TIMESTAMP);
        assert_eq!(GenFrame::parse(&bytes[..20]), None);
        assert_eq!(GenFrame::parse(&bytes[..GEN_HDR_LEN - 1]), None);
        let mut other = bytes.clone();
        other[12] = 8;
        assert_eq!(GenFrame::parse(&other), None);
    }

    #[test]
    fn timestamp_round_trip() {
        let mut f = GenFrame::new(64, MacAddr::local(2), MacAddr::BROADCAST, 2).unwrap();
        let plain = f.with_seq(5).to_vec();
        // The payload pattern as before timestamps: byte i at 26 + i.
        assert!(plain[26..].iter().enumerate().all(|(i, &b)| b == i as u8));
        for t in [0, 1, 123_456_789, u64::MAX] {
            let bytes = f.with_seq_and_time(9, t).to_vec();
            assert_eq!(bytes.len(), 64);
            let p = GenFrame::parse(&bytes).unwrap();
            assert_eq!((p.id, p.seq, p.sent_ns), (2, 9, t));
            assert_eq!(bytes[34..], plain[34..]);
        }
        // with_seq puts the pattern back.
        assert_eq!(f.with_seq(5), &plain[..]);
    }
}
