//! The virtio-net header (virtio 1.2, 5.1.6) that precedes each frame in a buffer.
//!
//! This project never offers checksum or segmentation offloads, so the header it
//! writes is all zeroes except `num_buffers`, and the header it reads is skipped.

/// Header length with VERSION_1 or MRG_RXBUF negotiated.
pub const HDR_LEN_MODERN: usize = 12;
/// Header length of a legacy device without MRG_RXBUF.
pub const HDR_LEN_LEGACY: usize = 10;
/// Byte offset of the little-endian `num_buffers` field (present in the 12-byte header).
pub const NUM_BUFFERS_OFFSET: usize = 10;

/// The header length for a negotiated feature set.
pub const fn hdr_len(features: u64) -> usize {
    if crate::features::has(features, crate::features::F_VERSION_1)
        || crate::features::has(features, crate::features::NET_F_MRG_RXBUF)
    {
        HDR_LEN_MODERN
    } else {
        HDR_LEN_LEGACY
    }
}

/// A zeroed 12-byte header with `num_buffers` set, ready to copy into a buffer.
/// Callers copy only the first [`hdr_len`] bytes of it.
pub const fn header_bytes(num_buffers: u16) -> [u8; HDR_LEN_MODERN] {
    let nb = num_buffers.to_le_bytes();
    [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, nb[0], nb[1]]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::features::*;

    #[test]
    fn header_length_follows_features() {
        assert_eq!(hdr_len(F_VERSION_1), 12);
        assert_eq!(hdr_len(NET_F_MRG_RXBUF), 12);
        assert_eq!(hdr_len(0), 10);
    }

    #[test]
    fn num_buffers_is_little_endian_at_offset_10() {
        let h = header_bytes(0x0102);
        assert_eq!(&h[NUM_BUFFERS_OFFSET..], &[0x02, 0x01]);
    }
}
