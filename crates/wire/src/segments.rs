//! A frame's bytes as a short list of volatile memory segments.
//!
//! A frame in a client's virtqueue is a descriptor chain: several buffers in guest
//! memory. A frame in a driver's buffer pool is one buffer in the driver region.
//! Both are [`VolatileSlice`]s of memory that another party may write concurrently,
//! so the bytes are never turned into Rust references; they are copied with
//! volatile-safe copies. [`Segments`] holds up to [`MAX_SEGMENTS`] of them on the stack.

use arrayvec::ArrayVec;
use vm_memory::VolatileSlice;

/// The most segments one frame may span. Longer chains are dropped by the ports
/// that build them (a counted drop, never a panic).
pub const MAX_SEGMENTS: usize = 16;

/// Error of [`Segments::push`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("a frame may span at most {MAX_SEGMENTS} segments")]
pub struct TooManySegments;

/// An ordered list of memory segments that together hold one frame (or one buffer
/// space to write a frame into).
#[derive(Debug, Clone, Default)]
pub struct Segments<'a> {
    segs: ArrayVec<VolatileSlice<'a>, MAX_SEGMENTS>,
    len: usize,
}

impl<'a> Segments<'a> {
    /// An empty list.
    pub fn new() -> Self {
        Self::default()
    }

    /// A list of one segment.
    pub fn single(seg: VolatileSlice<'a>) -> Self {
        let mut s = Self::new();
        s.len = seg.len();
        s.segs.push(seg);
        s
    }

    /// Appends a segment. Empty segments are skipped.
    pub fn push(&mut self, seg: VolatileSlice<'a>) -> Result<(), TooManySegments> {
        if seg.is_empty() {
            return Ok(());
        }
        self.segs.try_push(seg).map_err(|_| TooManySegments)?;
        self.len += seg.len();
        Ok(())
    }

    /// Total bytes over all segments.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether there are no bytes.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The segments in order.
    pub fn as_slice(&self) -> &[VolatileSlice<'a>] {
        &self.segs
    }

    /// Removes the first `n` bytes (for example the virtio-net header). Returns false,
    /// and leaves the list empty, when there are fewer than `n` bytes.
    pub fn skip(&mut self, mut n: usize) -> bool {
        if n > self.len {
            self.segs.clear();
            self.len = 0;
            return false;
        }
        self.len -= n;
        let mut drop_front = 0;
        for seg in self.segs.iter_mut() {
            if n == 0 {
                break;
            }
            if n >= seg.len() {
                n -= seg.len();
                drop_front += 1;
            } else {
                // In bounds: n < seg.len().
                if let Ok(rest) = seg.offset(n) {
                    *seg = rest;
                }
                n = 0;
            }
        }
        self.segs.drain(..drop_front);
        true
    }

    /// Keeps only the first `n` bytes.
    pub fn truncate(&mut self, n: usize) {
        if n >= self.len {
            return;
        }
        let mut left = n;
        let mut keep = 0;
        for seg in self.segs.iter_mut() {
            if left == 0 {
                break;
            }
            keep += 1;
            if seg.len() > left {
                if let Ok(head) = seg.subslice(0, left) {
                    *seg = head;
                }
                left = 0;
            } else {
                left -= seg.len();
            }
        }
        self.segs.truncate(keep);
        self.len = n;
    }

    /// Copies the first `buf.len()` bytes (or fewer, if the frame is shorter) into
    /// `buf`; returns how many were copied.
    pub fn read_prefix(&self, buf: &mut [u8]) -> usize {
        let mut done = 0;
        for seg in &self.segs {
            if done == buf.len() {
                break;
            }
            done += seg.copy_to(&mut buf[done..]);
        }
        done
    }

    /// Writes `buf` at the start of the segments (for example a header); returns how
    /// many bytes were written (fewer when the segments are shorter).
    pub fn write_prefix(&self, buf: &[u8]) -> usize {
        let mut done = 0;
        for seg in &self.segs {
            if done == buf.len() {
                break;
            }
            let n = seg.len().min(buf.len() - done);
            if let Ok(head) = seg.subslice(0, n) {
                head.copy_from(&buf[done..done + n]);
            }
            done += n;
        }
        done
    }

    /// Copies as many bytes as fit from `self` into `dst`; returns the count, which is
    /// `min(self.len(), dst.len())`.
    pub fn copy_to(&self, dst: &Segments<'_>) -> usize {
        let (mut si, mut so) = (0usize, 0usize);
        let (mut di, mut doff) = (0usize, 0usize);
        let mut done = 0;
        while si < self.segs.len() && di < dst.segs.len() {
            let s = &self.segs[si];
            let d = &dst.segs[di];
            let n = (s.len() - so).min(d.len() - doff);
            if let (Ok(sp), Ok(dp)) = (s.subslice(so, n), d.subslice(doff, n)) {
                sp.copy_to_volatile_slice(dp);
            }
            done += n;
            so += n;
            doff += n;
            if so == s.len() {
                si += 1;
                so = 0;
            }
            if doff == d.len() {
                di += 1;
                doff = 0;
            }
        }
        done
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryMmap};

    fn mem() -> GuestMemoryMmap {
        GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x10000)]).unwrap()
    }

    fn seg(m: &GuestMemoryMmap, addr: u64, len: usize) -> VolatileSlice<'_> {
        m.get_slice(GuestAddress(addr), len).unwrap()
    }

    #[test]
    fn copy_across_uneven_segments() {
        let m = mem();
        let data: Vec<u8> = (0..100u8).collect();
        m.write_slice(&data[..30], GuestAddress(0x100)).unwrap();
        m.write_slice(&data[30..], GuestAddress(0x200)).unwrap();
        let mut src = Segments::new();
        src.push(seg(&m, 0x100, 30)).unwrap();
        src.push(seg(&m, 0x200, 70)).unwrap();
        let mut dst = Segments::new();
        for i in 0..5u64 {
            dst.push(seg(&m, 0x1000 + i * 0x100, 17)).unwrap();
        }
        assert_eq!(src.copy_to(&dst), 85);
        let mut out = [0u8; 85];
        assert_eq!(dst.read_prefix(&mut out), 85);
        assert_eq!(&out[..], &data[..85]);
    }

    #[test]
    fn skip_and_truncate() {
        let m = mem();
        let data: Vec<u8> = (0..40u8).collect();
        m.write_slice(&data, GuestAddress(0)).unwrap();
        let mut s = Segments::new();
        s.push(seg(&m, 0, 10)).unwrap();
        s.push(seg(&m, 10, 30)).unwrap();
        assert!(s.skip(12));
        assert_eq!(s.len(), 28);
        let mut b = [0u8; 3];
        s.read_prefix(&mut b);
        assert_eq!(b, [12, 13, 14]);
        s.truncate(5);
        assert_eq!(s.len(), 5);
        let mut b = [0u8; 8];
        assert_eq!(s.read_prefix(&mut b), 5);
        assert!(!s.skip(6));
        assert!(s.is_empty());
    }

    #[test]
    fn too_many_segments_is_an_error() {
        let m = mem();
        let mut s = Segments::new();
        for i in 0..MAX_SEGMENTS as u64 {
            s.push(seg(&m, i * 16, 16)).unwrap();
        }
        assert_eq!(s.push(seg(&m, 0x8000, 16)), Err(TooManySegments));
        assert_eq!(s.len(), MAX_SEGMENTS * 16);
    }
}
