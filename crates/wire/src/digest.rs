//! An order-sensitive digest of a frame sequence: FNV-1a 64 folded over every frame,
//! its length (u64, little-endian) first, then its bytes. The hash state carries
//! over from frame to frame, so two sequences have the same digest only if they
//! hold the same frames in the same order (up to hash collisions).
//!
//! The traffic generator and the software NIC both report one (`--digest`), so that
//! tests can show two runs delivered the same frames in the same order.

use crate::Segments;

/// FNV-1a 64 offset basis.
const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
/// FNV-1a 64 prime.
const PRIME: u64 = 0x0000_0100_0000_01b3;
/// Bytes copied out of a segment at a time.
const CHUNK: usize = 256;

/// The running digest of a frame sequence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameDigest(u64);

impl Default for FrameDigest {
    fn default() -> Self {
        Self::new()
    }
}

impl FrameDigest {
    /// The digest of no frames (the FNV-1a offset basis).
    pub const fn new() -> Self {
        Self(OFFSET)
    }

    #[inline]
    fn fold(&mut self, bytes: &[u8]) {
        let mut h = self.0;
        for &b in bytes {
            h ^= u64::from(b);
            h = h.wrapping_mul(PRIME);
        }
        self.0 = h;
    }

    /// Folds in one frame given as bytes.
    pub fn frame(&mut self, bytes: &[u8]) {
        self.fold(&(bytes.len() as u64).to_le_bytes());
        self.fold(bytes);
    }

    /// Folds in one frame given as volatile segments (copied out in small chunks).
    pub fn frame_segments(&mut self, frame: &Segments<'_>) {
        self.fold(&(frame.len() as u64).to_le_bytes());
        let mut buf = [0u8; CHUNK];
        for seg in frame.as_slice() {
            let mut off = 0;
            while off < seg.len() {
                let n = (seg.len() - off).min(CHUNK);
                let Ok(part) = seg.subslice(off, n) else {
                    break;
                };
                let got = part.copy_to(&mut buf[..n]);
                self.fold(&buf[..got]);
                off += n;
            }
        }
    }

    /// The digest value.
    pub fn value(&self) -> u64 {
        self.0
    }

    /// The digest as 16 lowercase hex digits.
    pub fn hex(&self) -> String {
        format!("{:016x}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv1a_reference_vectors() {
        // Plain FNV-1a 64 of "a" and "foobar" (the published test vectors).
        let mut d = FrameDigest::new();
        d.fold(b"a");
        assert_eq!(d.value(), 0xaf63_dc4c_8601_ec8c);
        let mut d = FrameDigest::new();
        d.fold(b"foobar");
        assert_eq!(d.value(), 0x8594_4171_f739_67e8);
        assert_eq!(FrameDigest::new().hex(), "cbf29ce484222325");
    }

    #[test]
    fn known_frame_sequence() {
        let mut d = FrameDigest::new();
        d.frame(b"abc");
        d.frame(&[0u8; 60]);
        // Computed independently (Python) from the definition above.
        assert_eq!(d.hex(), "db49c78465b4686e");
    }

    #[test]
    fn identical_sequences_give_identical_digests() {
        let frames: Vec<Vec<u8>> = (0..10u8).map(|i| vec![i; 60 + usize::from(i)]).collect();
        let mut a = FrameDigest::new();
        let mut b = FrameDigest::new();
        for f in &frames {
            a.frame(f);
            b.frame(f);
        }
        assert_eq!(a, b);
        assert_ne!(a, FrameDigest::new());
    }

    #[test]
    fn order_matters() {
        let (x, y) = (vec![1u8; 64], vec![2u8; 64]);
        let mut a = FrameDigest::new();
        a.frame(&x);
        a.frame(&y);
        let mut b = FrameDigest::new();
        b.frame(&y);
        b.frame(&x);
        assert_ne!(a, b);
    }

    #[test]
    fn frame_boundaries_matter() {
        // Same bytes, split into frames differently: the lengths tell them apart.
        let mut a = FrameDigest::new();
        a.frame(b"abcd");
        a.frame(b"ef");
        let mut b = FrameDigest::new();
        b.frame(b"abc");
        b.frame(b"def");
        assert_ne!(a, b);
        // A lost frame changes the digest.
        let mut c = FrameDigest::new();
        c.frame(b"abcd");
        assert_ne!(a, c);
    }

    #[test]
    fn segments_and_bytes_agree() {
        let mut frame: Vec<u8> = (0..1000u32).map(|i| (i * 7) as u8).collect();
        let mut flat = FrameDigest::new();
        flat.frame(&frame);
        let (head, tail) = frame.split_at_mut(300);
        let mut segs = Segments::new();
        segs.push(vm_memory::VolatileSlice::from(head)).unwrap();
        segs.push(vm_memory::VolatileSlice::from(tail)).unwrap();
        let mut split = FrameDigest::new();
        split.frame_segments(&segs);
        assert_eq!(flat, split);
    }
}
