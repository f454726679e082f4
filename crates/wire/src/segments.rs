//! A frame's bytes as a short list of volatile memory segments.
//!
//! A frame in a client's virtqueue is a descriptor chain: several buffers in guest
//! memory. A frame in a driver's buffer pool is one buffer in the driver region.
//! Both are [`VolatileSlice`]s of memory that another party may write concurrently,
//! so the bytes are never turned into Rust references; they are copied with
//! volatile-safe copies. [`Segments`] holds up to [`MAX_SEGMENTS`] of them on the stack.
//!
//! Whoever decides on a frame's bytes (the switch on its Ethernet header) must
//! decide on a private copy, since the owner of the memory can change it between two
//! reads, and then deliver that copy: [`Segments::with_header`] builds a frame whose
//! header is the decider's copy and whose rest is the original memory, so every
//! copy routine that takes a [`Segments`] copies the checked header.

use arrayvec::ArrayVec;
use vm_memory::VolatileSlice;

/// The most segments one frame may span. Longer chains are dropped by the ports
/// that build them (a counted drop, never a panic).
pub const MAX_SEGMENTS: usize = 16;

/// Room in a list: [`MAX_SEGMENTS`] from a port, plus one for a header that
/// [`Segments::with_header`] puts in front of them.
const CAPACITY: usize = MAX_SEGMENTS + 1;

/// Error of [`Segments::push`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("a frame may span at most {MAX_SEGMENTS} segments")]
pub struct TooManySegments;

/// An ordered list of memory segments that together hold one frame (or one buffer
/// space to write a frame into).
#[derive(Debug, Clone, Default)]
pub struct Segments<'a> {
    segs: ArrayVec<VolatileSlice<'a>, CAPACITY>,
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

    /// Appends a segment. Empty segments are skipped; a list never takes more than
    /// [`MAX_SEGMENTS`] this way.
    pub fn push(&mut self, seg: VolatileSlice<'a>) -> Result<(), TooManySegments> {
        if seg.is_empty() {
            return Ok(());
        }
        if self.segs.len() >= MAX_SEGMENTS {
            return Err(TooManySegments);
        }
        self.segs.try_push(seg).map_err(|_| TooManySegments)?;
        self.len += seg.len();
        Ok(())
    }

    /// The frame `rest` with its first `header.len()` bytes taken from `header`
    /// instead: `header`, then `rest` from byte `header.len()` on. Same length as
    /// `rest`; nothing is copied. `None` when `rest` is shorter than `header`, or
    /// (only when `rest` was itself built here with a shorter header) when the
    /// result would span more than [`MAX_SEGMENTS`] + 1 segments.
    ///
    /// The decider of a frame passes its private, checked copy of the header, so
    /// that what it delivers is what it decided on, whatever the owner of `rest`'s
    /// memory writes meanwhile.
    pub fn with_header(header: VolatileSlice<'a>, rest: &Segments<'a>) -> Option<Self> {
        Self::replace_prefix(header, header.len(), rest)
    }

    /// The frame `rest` with its first `skip` bytes replaced by `header`, which
    /// may be longer or shorter than them: `header`, then `rest` from byte `skip`
    /// on. Its length is `header.len() + rest.len() - skip`; nothing is copied.
    /// `None` when `rest` is shorter than `skip`, or (only when `rest` was itself
    /// built here) when the result would span more than [`MAX_SEGMENTS`] + 1
    /// segments.
    ///
    /// This is how a VLAN tag is added or removed without a copy: the decider
    /// builds the 14-byte (untagged) or 18-byte (tagged) header from its private
    /// copy of the frame's first bytes, and skips the 14 or 18 bytes of the
    /// original header.
    pub fn replace_prefix(
        header: VolatileSlice<'a>,
        skip: usize,
        rest: &Segments<'a>,
    ) -> Option<Self> {
        let mut skip = skip;
        if rest.len < skip {
            return None;
        }
        let mut s = Segments {
            segs: ArrayVec::new(),
            len: rest.len - skip + header.len(),
        };
        if !header.is_empty() {
            s.segs.try_push(header).ok()?;
        }
        for seg in &rest.segs {
            if skip >= seg.len() {
                skip -= seg.len();
                continue;
            }
            let tail = seg.offset(skip).ok()?;
            skip = 0;
            s.segs.try_push(tail).ok()?;
        }
        Some(s)
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
    fn with_header_takes_the_header_from_the_copy_and_the_rest_from_the_frame() {
        let m = mem();
        let data: Vec<u8> = (0..100u8).collect();
        // Split at 5, 20 and 60: the header boundary (14) falls inside segment 2.
        m.write_slice(&data[..5], GuestAddress(0x100)).unwrap();
        m.write_slice(&data[5..20], GuestAddress(0x200)).unwrap();
        m.write_slice(&data[20..60], GuestAddress(0x300)).unwrap();
        m.write_slice(&data[60..], GuestAddress(0x400)).unwrap();
        let mut frame = Segments::new();
        frame.push(seg(&m, 0x100, 5)).unwrap();
        frame.push(seg(&m, 0x200, 15)).unwrap();
        frame.push(seg(&m, 0x300, 40)).unwrap();
        frame.push(seg(&m, 0x400, 40)).unwrap();
        let mut hdr = [0u8; 14];
        assert_eq!(frame.read_prefix(&mut hdr), 14);
        hdr[6..12].copy_from_slice(&[0xaa; 6]);
        let checked = Segments::with_header(VolatileSlice::from(&mut hdr[..]), &frame).unwrap();
        assert_eq!(checked.len(), 100);
        // header, rest of segment 2 (6 bytes), segments 3 and 4.
        assert_eq!(checked.as_slice().len(), 4);
        // The frame's memory changes after the check: the copy keeps the checked
        // header and follows the frame for the rest.
        m.write_slice(&[0x55; 5], GuestAddress(0x100)).unwrap();
        m.write_slice(&[0x66; 15], GuestAddress(0x200)).unwrap();
        let mut out = [0u8; 100];
        let mut dst = Segments::new();
        dst.push(seg(&m, 0x2000, 100)).unwrap();
        assert_eq!(checked.copy_to(&dst), 100);
        dst.read_prefix(&mut out);
        let mut want: Vec<u8> = (0..100u8).collect();
        want[6..12].copy_from_slice(&[0xaa; 6]);
        want[14..20].copy_from_slice(&[0x66; 6]);
        assert_eq!(&out[..], &want[..]);
    }

    #[test]
    fn with_header_on_exact_boundaries_and_short_frames() {
        let m = mem();
        let mut frame = Segments::new();
        frame.push(seg(&m, 0x100, 14)).unwrap();
        frame.push(seg(&m, 0x200, 46)).unwrap();
        let mut hdr = [7u8; 14];
        let h = Segments::with_header(VolatileSlice::from(&mut hdr[..]), &frame).unwrap();
        assert_eq!(h.len(), 60);
        assert_eq!(h.as_slice().len(), 2);
        assert_eq!(h.as_slice()[1].len(), 46);
        drop(h);
        // A frame exactly the header's length: the header alone.
        let mut short = Segments::single(seg(&m, 0x100, 14));
        let h = Segments::with_header(VolatileSlice::from(&mut hdr[..]), &short).unwrap();
        assert_eq!((h.len(), h.as_slice().len()), (14, 1));
        drop(h);
        short.truncate(13);
        assert!(Segments::with_header(VolatileSlice::from(&mut hdr[..]), &short).is_none());
    }

    #[test]
    fn with_header_has_room_for_a_full_frame_and_push_still_stops_at_the_limit() {
        let m = mem();
        // MAX_SEGMENTS segments of 16 bytes: the header ends inside the first.
        let mut frame = Segments::new();
        for i in 0..MAX_SEGMENTS as u64 {
            frame.push(seg(&m, i * 16, 16)).unwrap();
        }
        let mut hdr = [0u8; 14];
        let mut h = Segments::with_header(VolatileSlice::from(&mut hdr[..]), &frame).unwrap();
        assert_eq!(h.as_slice().len(), MAX_SEGMENTS + 1);
        assert_eq!(h.len(), MAX_SEGMENTS * 16);
        assert_eq!(h.as_slice()[1].len(), 2);
        // The extra room is for the header only: no more pushes.
        assert_eq!(h.push(seg(&m, 0x8000, 16)), Err(TooManySegments));
        assert_eq!(h.len(), MAX_SEGMENTS * 16);
        // A header shorter than the one in front: one segment too many.
        let mut hdr2 = [0u8; 10];
        assert!(Segments::with_header(VolatileSlice::from(&mut hdr2[..]), &h).is_none());
    }

    #[test]
    fn replace_prefix_grows_or_shrinks_the_header_and_follows_the_frame_for_the_rest() {
        let m = mem();
        let data: Vec<u8> = (0..60u8).collect();
        // Split at 10 and 16: an 18-byte header ends inside the third segment.
        m.write_slice(&data[..10], GuestAddress(0x100)).unwrap();
        m.write_slice(&data[10..16], GuestAddress(0x200)).unwrap();
        m.write_slice(&data[16..], GuestAddress(0x300)).unwrap();
        let mut frame = Segments::new();
        frame.push(seg(&m, 0x100, 10)).unwrap();
        frame.push(seg(&m, 0x200, 6)).unwrap();
        frame.push(seg(&m, 0x300, 44)).unwrap();
        // Insert a tag: 18 bytes of header in place of 14.
        let mut tagged = [0xa8u8; 18];
        tagged[12..16].copy_from_slice(&[0x81, 0x00, 0x00, 0x0a]);
        let t = Segments::replace_prefix(VolatileSlice::from(&mut tagged[..]), 14, &frame).unwrap();
        assert_eq!(t.len(), 64);
        assert_eq!(seg_lens(&t), vec![18, 2, 44]);
        let out = bytes(&t);
        assert_eq!(&out[12..16], &[0x81, 0x00, 0x00, 0x0a]);
        assert_eq!(&out[18..], &data[14..]);
        drop(t);
        // Strip a tag: 14 bytes of header in place of 18.
        let mut plain = [0x77u8; 14];
        let u = Segments::replace_prefix(VolatileSlice::from(&mut plain[..]), 18, &frame).unwrap();
        assert_eq!(u.len(), 56);
        assert_eq!(seg_lens(&u), vec![14, 42]);
        let out = bytes(&u);
        assert_eq!(&out[..14], &[0x77u8; 14]);
        assert_eq!(&out[14..], &data[18..]);
        // The source changes after the decision: the header stays the copy.
        m.write_slice(&[0xee; 10], GuestAddress(0x100)).unwrap();
        assert_eq!(&bytes(&u)[..14], &[0x77u8; 14]);
        drop(u);
        // Exactly the skipped bytes: the header alone; fewer: none.
        let mut short = frame.clone();
        short.truncate(18);
        let h = Segments::replace_prefix(VolatileSlice::from(&mut plain[..]), 18, &short).unwrap();
        assert_eq!((h.len(), h.as_slice().len()), (14, 1));
        drop(h);
        short.truncate(17);
        assert!(
            Segments::replace_prefix(VolatileSlice::from(&mut plain[..]), 18, &short).is_none()
        );
    }

    /// Three segments of 10, 30 and 10 bytes holding 0, 1, 2, ... 49.
    fn three(m: &GuestMemoryMmap) -> Segments<'_> {
        let data: Vec<u8> = (0..50u8).collect();
        m.write_slice(&data[..10], GuestAddress(0x100)).unwrap();
        m.write_slice(&data[10..40], GuestAddress(0x200)).unwrap();
        m.write_slice(&data[40..], GuestAddress(0x300)).unwrap();
        let mut s = Segments::new();
        s.push(seg(m, 0x100, 10)).unwrap();
        s.push(seg(m, 0x200, 30)).unwrap();
        s.push(seg(m, 0x300, 10)).unwrap();
        s
    }

    fn bytes(s: &Segments<'_>) -> Vec<u8> {
        let mut b = vec![0u8; 64];
        let n = s.read_prefix(&mut b);
        b.truncate(n);
        b
    }

    fn seg_lens(s: &Segments<'_>) -> Vec<usize> {
        s.as_slice().iter().map(|x| x.len()).collect()
    }

    #[test]
    fn skip_on_and_across_segment_boundaries() {
        let m = mem();
        let mut s = three(&m);
        assert!(!s.is_empty());
        assert!(s.skip(0));
        assert_eq!((s.len(), seg_lens(&s)), (50, vec![10, 30, 10]));
        // Exactly the first segment: it goes, the next is whole.
        assert!(s.skip(10));
        assert_eq!((s.len(), seg_lens(&s)), (40, vec![30, 10]));
        assert_eq!(bytes(&s), (10..50).collect::<Vec<u8>>());
        // Into the middle of the last one.
        assert!(s.skip(33));
        assert_eq!((s.len(), seg_lens(&s)), (7, vec![7]));
        assert_eq!(bytes(&s), (43..50).collect::<Vec<u8>>());
        // Everything that is left: true, and empty.
        assert!(s.skip(7));
        assert!(s.is_empty());
        assert_eq!(s.as_slice().len(), 0);
        // One byte more than there is: false, and empty.
        let mut s = three(&m);
        assert!(!s.skip(51));
        assert_eq!((s.len(), s.as_slice().len()), (0, 0));
    }

    #[test]
    fn truncate_inside_on_and_past_segment_boundaries() {
        let m = mem();
        let mut s = three(&m);
        s.truncate(25);
        assert_eq!((s.len(), seg_lens(&s)), (25, vec![10, 15]));
        assert_eq!(bytes(&s), (0..25).collect::<Vec<u8>>());
        let mut s = three(&m);
        s.truncate(40);
        assert_eq!((s.len(), seg_lens(&s)), (40, vec![10, 30]));
        let mut s = three(&m);
        s.truncate(50);
        assert_eq!((s.len(), seg_lens(&s)), (50, vec![10, 30, 10]));
        s.truncate(0);
        assert_eq!((s.len(), s.as_slice().len()), (0, 0));
    }

    #[test]
    fn write_prefix_fills_segments_in_order_and_stops_at_either_end() {
        let m = mem();
        let s = three(&m);
        let data: Vec<u8> = (100..145u8).collect();
        assert_eq!(s.write_prefix(&data), 45);
        let mut want: Vec<u8> = (100..145u8).collect();
        want.extend(45..50u8);
        assert_eq!(bytes(&s), want);
        // Longer than the segments: what fits.
        assert_eq!(s.write_prefix(&[7u8; 60]), 50);
        assert_eq!(bytes(&s), vec![7u8; 50]);
        // Shorter than the first segment.
        assert_eq!(s.write_prefix(&[1, 2, 3]), 3);
        assert_eq!(&bytes(&s)[..4], &[1, 2, 3, 7]);
        assert_eq!(Segments::new().write_prefix(&[1]), 0);
    }

    #[test]
    fn read_prefix_stops_at_the_buffer_or_the_frame() {
        let m = mem();
        let s = three(&m);
        let mut small = [0u8; 12];
        assert_eq!(s.read_prefix(&mut small), 12);
        assert_eq!(small.to_vec(), (0..12).collect::<Vec<u8>>());
        let mut big = [0xeeu8; 60];
        assert_eq!(s.read_prefix(&mut big), 50);
        assert_eq!(big[49..51], [49, 0xee]);
    }

    #[test]
    fn copy_to_a_shorter_and_a_longer_destination() {
        let m = mem();
        let src = three(&m);
        let mut short = Segments::new();
        short.push(seg(&m, 0x1000, 4)).unwrap();
        short.push(seg(&m, 0x1100, 21)).unwrap();
        assert_eq!(src.copy_to(&short), 25);
        assert_eq!(bytes(&short), (0..25).collect::<Vec<u8>>());
        let long = Segments::single(seg(&m, 0x2000, 64));
        assert_eq!(long.len(), 64);
        assert_eq!(src.copy_to(&long), 50);
        assert_eq!(bytes(&long)[..50].to_vec(), (0..50).collect::<Vec<u8>>());
        assert_eq!(Segments::new().copy_to(&long), 0);
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
