//! Reading an AF_PACKET TPACKET_V3 receive block:
//! the block is memory the kernel fills and hands over, so every field is read
//! once, checked against the block's own bounds, and only then used.
//!
//! Layout (linux/if_packet.h): a block starts with `tpacket_block_desc` (version,
//! offset to private data, then `tpacket_hdr_v1`: status, packet count, offset to
//! the first packet, the length used, a sequence number, two timestamps); packets
//! follow, each a `tpacket3_hdr` (offset to the next, timestamps, captured and
//! wire lengths, status, offset of the MAC header...) and its bytes.
//!
//! What is refused, and how: a block not handed to user space is not read; a
//! first-packet offset, a packet header, a next offset or a frame that leaves the
//! used length (or the block) ends the walk of that block as `Malformed`, keeping
//! the frames already delivered; a packet count larger than the block could hold
//! is refused at once; a captured length shorter than the wire length (a cut
//! frame) is dropped as `Truncated` and the walk goes on. The walk is bounded by
//! the packet count, which is bounded by the block size.
//!
//! The memory is reached through [`BlockMem`], implemented for byte slices (tests)
//! and, in a driver domain, for its mapping of the ring.

/// Size of `tpacket_block_desc` up to the first packet's possible start.
pub const BLOCK_HEADER_LEN: usize = 48;
/// Size of `tpacket3_hdr`.
pub const PACKET_HEADER_LEN: usize = 48;
/// `tpacket_hdr_v1.block_status`: the block belongs to user space.
pub const TP_STATUS_USER: u32 = 1;
/// `tpacket_block_desc.version` of TPACKET_V3 blocks: the kernel writes the
/// version enum's value, `TPACKET_V3` (2).
pub const TPACKET_V3_BLOCK_VERSION: u32 = 2;

/// Read access to one block of the ring.
pub trait BlockMem {
    /// The block's size in bytes.
    fn block_len(&self) -> usize;
    /// The little-endian (host order) `u32` at `off`, if it is inside the block.
    fn u32_at(&self, off: usize) -> Option<u32>;
    /// The `u16` at `off`, if it is inside the block.
    fn u16_at(&self, off: usize) -> Option<u16>;
    /// Copies `dst.len()` bytes from `off`; false if they are not inside the block.
    fn copy_out(&self, off: usize, dst: &mut [u8]) -> bool;
}

impl BlockMem for [u8] {
    fn block_len(&self) -> usize {
        self.len()
    }
    fn u32_at(&self, off: usize) -> Option<u32> {
        let b = self.get(off..off.checked_add(4)?)?;
        Some(u32::from_ne_bytes(b.try_into().ok()?))
    }
    fn u16_at(&self, off: usize) -> Option<u16> {
        let b = self.get(off..off.checked_add(2)?)?;
        Some(u16::from_ne_bytes(b.try_into().ok()?))
    }
    fn copy_out(&self, off: usize, dst: &mut [u8]) -> bool {
        match off
            .checked_add(dst.len())
            .and_then(|end| self.get(off..end))
        {
            Some(src) => {
                dst.copy_from_slice(src);
                true
            }
            None => false,
        }
    }
}

/// Why a block's walk ended early.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Malformed {
    /// Not a TPACKET_V3 block.
    Version,
    /// More packets than the block could hold.
    TooManyPackets,
    /// The used length is larger than the block.
    BlockLength,
    /// A packet's header, offset or frame leaves the used length.
    PacketBounds,
}

/// What one walk of a block did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Walk {
    /// Frames handed to the caller.
    pub frames: u32,
    /// Frames dropped because the kernel cut them (captured < wire length) or
    /// because they did not fit the caller's buffer.
    pub truncated: u32,
    /// Frames shorter than an Ethernet header.
    pub runts: u32,
    /// Why the walk stopped before the packet count, if it did.
    pub malformed: Option<Malformed>,
}

/// Whether the block is the user's to read (`block_status` has `TP_STATUS_USER`).
pub fn block_ready(mem: &(impl BlockMem + ?Sized)) -> bool {
    mem.u32_at(8).is_some_and(|s| s & TP_STATUS_USER != 0)
}

/// A block handed to user space, being read: its header's fields, read once and
/// checked, and where the walk stands. A block can be read in several calls (the
/// caller takes only as many frames as it has room for); the kernel does not touch
/// it until it is given back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockCursor {
    num_pkts: usize,
    blk_len: usize,
    /// Offset of the next packet's header.
    at: usize,
    /// Packets visited.
    index: usize,
}

/// Opens a block for reading: `None` when it is still the kernel's; a block whose
/// header fails the checks is `Err` (nothing of it can be read).
pub fn open_block(mem: &(impl BlockMem + ?Sized)) -> Option<Result<BlockCursor, Malformed>> {
    // Each field once, into a local.
    let version = mem.u32_at(0)?;
    let status = mem.u32_at(8)?;
    if status & TP_STATUS_USER == 0 {
        return None;
    }
    if version != TPACKET_V3_BLOCK_VERSION {
        return Some(Err(Malformed::Version));
    }
    let (Some(num_pkts), Some(first), Some(blk_len)) =
        (mem.u32_at(12), mem.u32_at(16), mem.u32_at(20))
    else {
        return Some(Err(Malformed::BlockLength));
    };
    let (num_pkts, first, blk_len) = (num_pkts as usize, first as usize, blk_len as usize);
    if blk_len > mem.block_len() || blk_len < BLOCK_HEADER_LEN {
        return Some(Err(Malformed::BlockLength));
    }
    let most = (blk_len - BLOCK_HEADER_LEN) / PACKET_HEADER_LEN;
    if num_pkts > most {
        return Some(Err(Malformed::TooManyPackets));
    }
    Some(Ok(BlockCursor {
        num_pkts,
        blk_len,
        at: first,
        index: 0,
    }))
}

impl BlockCursor {
    /// Whether every packet of the block was visited (or the walk was ended by a
    /// malformed packet).
    pub fn is_done(&self) -> bool {
        self.index >= self.num_pkts
    }

    /// Visits up to `max` more packets: each frame is copied into `buf` and passed
    /// to `f`. A malformed packet ends the block's walk (the cursor is done).
    pub fn walk(
        &mut self,
        mem: &(impl BlockMem + ?Sized),
        buf: &mut [u8],
        max: usize,
        mut f: impl FnMut(&[u8]),
    ) -> Walk {
        let mut w = Walk::default();
        let end = self.num_pkts.min(self.index.saturating_add(max));
        while self.index < end {
            if let Err(m) = self.visit(mem, buf, &mut w, &mut f) {
                w.malformed = Some(m);
                self.index = self.num_pkts;
                break;
            }
            self.index += 1;
        }
        w
    }

    /// One packet at `self.at`; moves `at` to the next one unless it is the last.
    fn visit(
        &mut self,
        mem: &(impl BlockMem + ?Sized),
        buf: &mut [u8],
        w: &mut Walk,
        f: &mut impl FnMut(&[u8]),
    ) -> Result<(), Malformed> {
        let (at, blk_len) = (self.at, self.blk_len);
        // The header inside the used length, at or after the block header.
        let hdr_ok = at >= BLOCK_HEADER_LEN
            && at
                .checked_add(PACKET_HEADER_LEN)
                .is_some_and(|e| e <= blk_len);
        if !hdr_ok {
            return Err(Malformed::PacketBounds);
        }
        let (Some(next), Some(snaplen), Some(len), Some(mac)) = (
            mem.u32_at(at),
            mem.u32_at(at + 12),
            mem.u32_at(at + 16),
            mem.u16_at(at + 24),
        ) else {
            return Err(Malformed::PacketBounds);
        };
        let (next, snaplen, len, mac) =
            (next as usize, snaplen as usize, len as usize, mac as usize);
        let start = at + mac;
        let frame_ok =
            mac >= PACKET_HEADER_LEN && start.checked_add(snaplen).is_some_and(|e| e <= blk_len);
        if !frame_ok {
            return Err(Malformed::PacketBounds);
        }
        if snaplen < len || snaplen >= buf.len() {
            w.truncated += 1;
        } else if snaplen < twin_wire::ether::ETH_HLEN {
            w.runts += 1;
        } else if mem.copy_out(start, &mut buf[..snaplen]) {
            f(&buf[..snaplen]);
            w.frames += 1;
        } else {
            return Err(Malformed::PacketBounds);
        }
        if self.index + 1 < self.num_pkts {
            // The next packet lies after this one's frame: the walk moves forward.
            if next == 0 || next < mac + snaplen {
                return Err(Malformed::PacketBounds);
            }
            self.at = at.checked_add(next).ok_or(Malformed::PacketBounds)?;
        }
        Ok(())
    }
}

/// Walks a whole block handed to user space: each frame is copied into `buf` and
/// passed to `f`. `None` when the block is not ready.
pub fn walk_block(
    mem: &(impl BlockMem + ?Sized),
    buf: &mut [u8],
    f: impl FnMut(&[u8]),
) -> Option<Walk> {
    match open_block(mem)? {
        Ok(mut c) => Some(c.walk(mem, buf, usize::MAX, f)),
        Err(m) => Some(Walk {
            malformed: Some(m),
            ..Walk::default()
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A block of `size` bytes with `frames` laid out as the kernel does.
    fn block(size: usize, frames: &[&[u8]]) -> Vec<u8> {
        let mut b = vec![0u8; size];
        let put32 =
            |b: &mut Vec<u8>, off: usize, v: u32| b[off..off + 4].copy_from_slice(&v.to_ne_bytes());
        put32(&mut b, 0, TPACKET_V3_BLOCK_VERSION);
        put32(&mut b, 8, TP_STATUS_USER);
        put32(&mut b, 12, frames.len() as u32);
        put32(&mut b, 16, BLOCK_HEADER_LEN as u32);
        let mut at = BLOCK_HEADER_LEN;
        for (i, f) in frames.iter().enumerate() {
            let mac = PACKET_HEADER_LEN + 2;
            let step = (mac + f.len()).next_multiple_of(16);
            put32(
                &mut b,
                at,
                if i + 1 < frames.len() { step as u32 } else { 0 },
            );
            put32(&mut b, at + 12, f.len() as u32);
            put32(&mut b, at + 16, f.len() as u32);
            b[at + 24..at + 26].copy_from_slice(&(mac as u16).to_ne_bytes());
            b[at + mac..at + mac + f.len()].copy_from_slice(f);
            at += step;
        }
        put32(&mut b, 20, at as u32);
        b
    }

    fn frames_of(b: &[u8]) -> (Walk, Vec<Vec<u8>>) {
        let mut buf = [0u8; 2048];
        let mut got = Vec::new();
        let w = walk_block(b, &mut buf, |f| got.push(f.to_vec())).expect("ready");
        (w, got)
    }

    #[test]
    fn frames_are_read_in_order() {
        let (a, b) = (vec![1u8; 60], vec![2u8; 1514]);
        let blk = block(4096, &[&a, &b]);
        assert!(block_ready(blk.as_slice()));
        let (w, got) = frames_of(&blk);
        assert_eq!(
            w,
            Walk {
                frames: 2,
                ..Walk::default()
            }
        );
        assert_eq!(got, vec![a, b]);
    }

    #[test]
    fn a_block_still_the_kernels_is_not_read() {
        let mut blk = block(4096, &[&[1u8; 60]]);
        blk[8..12].copy_from_slice(&0u32.to_ne_bytes());
        assert!(!block_ready(blk.as_slice()));
        let mut buf = [0u8; 2048];
        assert_eq!(
            walk_block(blk.as_slice(), &mut buf, |_| panic!("read")),
            None
        );
    }

    #[test]
    fn lies_end_the_walk_and_keep_what_was_good() {
        let good = block(4096, &[&[1u8; 60], &[2u8; 60]]);
        fn set(b: &mut [u8], off: usize, v: u32) {
            b[off..off + 4].copy_from_slice(&v.to_ne_bytes());
        }
        let second = BLOCK_HEADER_LEN + (PACKET_HEADER_LEN + 2 + 60).next_multiple_of(16);
        type Lie = Box<dyn Fn(&mut Vec<u8>)>;
        let cases: Vec<(&str, Lie, u32, Malformed)> = vec![
            (
                "too many packets",
                Box::new(|b| set(b, 12, 1000)),
                0,
                Malformed::TooManyPackets,
            ),
            (
                "used length past the block",
                Box::new(|b| set(b, 20, 5000)),
                0,
                Malformed::BlockLength,
            ),
            (
                "first packet inside the block header",
                Box::new(|b| set(b, 16, 8)),
                0,
                Malformed::PacketBounds,
            ),
            (
                "first packet past the used length",
                Box::new(|b| set(b, 16, 4090)),
                0,
                Malformed::PacketBounds,
            ),
            (
                "a frame past the used length",
                Box::new(move |b| set(b, second + 12, 4000)),
                1,
                Malformed::PacketBounds,
            ),
            (
                "a MAC offset inside the packet header",
                Box::new(|b| {
                    b[BLOCK_HEADER_LEN + 24..BLOCK_HEADER_LEN + 26]
                        .copy_from_slice(&4u16.to_ne_bytes())
                }),
                0,
                Malformed::PacketBounds,
            ),
            (
                "a next offset of 0 before the last",
                Box::new(|b| set(b, BLOCK_HEADER_LEN, 0)),
                1,
                Malformed::PacketBounds,
            ),
            (
                "a next offset back into the frame",
                Box::new(|b| set(b, BLOCK_HEADER_LEN, 16)),
                1,
                Malformed::PacketBounds,
            ),
            (
                "a next offset that wraps",
                Box::new(|b| set(b, BLOCK_HEADER_LEN, u32::MAX)),
                1,
                Malformed::PacketBounds,
            ),
            (
                "not version 3",
                Box::new(|b| set(b, 0, 1)),
                0,
                Malformed::Version,
            ),
        ];
        for (what, lie, frames, why) in cases {
            let mut b = good.clone();
            lie(&mut b);
            let (w, _) = frames_of(&b);
            assert_eq!((w.frames, w.malformed), (frames, Some(why)), "{what}");
        }
    }

    #[test]
    fn a_block_is_read_in_parts_each_packet_once() {
        let frames: Vec<Vec<u8>> = (0..5u8).map(|i| vec![i; 60 + usize::from(i)]).collect();
        let refs: Vec<&[u8]> = frames.iter().map(|f| f.as_slice()).collect();
        let blk = block(4096, &refs);
        let mut c = open_block(blk.as_slice())
            .expect("ready")
            .expect("well formed");
        let mut buf = [0u8; 2048];
        let mut got = Vec::new();
        for (max, want) in [(2, 2), (0, 0), (2, 2), (7, 1)] {
            assert!(!c.is_done());
            let w = c.walk(blk.as_slice(), &mut buf, max, |f| got.push(f.to_vec()));
            assert_eq!((w.frames, w.malformed), (want, None), "max {max}");
        }
        assert!(c.is_done());
        assert_eq!(got, frames);
        // A done cursor visits nothing more.
        let w = c.walk(blk.as_slice(), &mut buf, 10, |_| panic!("read again"));
        assert_eq!(w, Walk::default());
    }

    #[test]
    fn a_lie_in_a_later_part_ends_the_block() {
        let mut blk = block(4096, &[&[1u8; 60], &[2u8; 60], &[3u8; 60]]);
        let second = BLOCK_HEADER_LEN + (PACKET_HEADER_LEN + 2 + 60).next_multiple_of(16);
        // The second packet's frame runs past the used length.
        blk[second + 12..second + 16].copy_from_slice(&4000u32.to_ne_bytes());
        let mut c = open_block(blk.as_slice())
            .expect("ready")
            .expect("well formed");
        let mut buf = [0u8; 2048];
        let w = c.walk(blk.as_slice(), &mut buf, 1, |_| {});
        assert_eq!((w.frames, w.malformed), (1, None));
        let w = c.walk(blk.as_slice(), &mut buf, 5, |_| panic!("a lie was read"));
        assert_eq!((w.frames, w.malformed), (0, Some(Malformed::PacketBounds)));
        assert!(c.is_done());
    }

    #[test]
    fn cut_frames_and_runts_are_dropped_and_the_walk_goes_on() {
        let mut b = block(4096, &[&[1u8; 100], &[2u8; 60], &[3u8; 8]]);
        // The first was cut by the kernel (wire length larger than captured).
        b[BLOCK_HEADER_LEN + 16..BLOCK_HEADER_LEN + 20].copy_from_slice(&1500u32.to_ne_bytes());
        let (w, got) = frames_of(&b);
        assert_eq!(
            (w.frames, w.truncated, w.runts, w.malformed),
            (1, 1, 1, None)
        );
        assert_eq!(got, vec![vec![2u8; 60]]);
    }
}
