//! One receive block of a TPACKET_V3 ring, read through checks.
//!
//! The kernel packs received frames into a block and hands the block to user
//! space whole (`block_status` gains `TP_STATUS_USER`); user space gives it back
//! by writing the status 0. Until then the kernel does not touch it, so what is
//! read of it stays as read. Each header field is read once, into a local, and
//! checked before use:
//!
//! * the block header: version 3, a used length (`blk_len`) inside the block and
//!   past its header, no more packets than the used length can hold;
//! * each packet: its header inside the used length and 4-aligned, its frame (`tp_mac`,
//!   `tp_snaplen`) inside the used length and after its header, the next
//!   packet's offset moving forward past the frame.
//!
//! The kernel takes an 802.1Q (or 802.1ad) tag off every frame it receives and
//! reports it beside the frame (`TP_STATUS_VLAN_VALID`, `tp_vlan_tci`,
//! `tp_vlan_tpid`): the walk puts it back in place, in the block (the 12
//! address bytes move 4 bytes toward the packet header, into the room the
//! kernel leaves there, and the tag follows them), and rewrites the packet's
//! header to match (`tp_mac`, `tp_snaplen`, `tp_len`, the status without
//! `TP_STATUS_VLAN_VALID`), so a frame visited again after a handover is the
//! same tagged frame. Without this a tagged frame would reach the switch
//! untagged: in the native VLAN. A packet with a tag and no room for it ends the
//! walk (a kernel always leaves room: its frames start 34 bytes past the packet
//! header). A fault in the middle of the rewrite can leave that one frame
//! garbled, as a duplicate after such a fault may be.
//!
//! A block that fails is dropped whole ([`Malformed`]); a packet that fails ends
//! the block's walk, keeping what was good before it. A frame the kernel cut
//! (`tp_snaplen < tp_len`) or shorter than an Ethernet header is dropped and the
//! walk goes on. The walk can stop and resume ([`BlockCursor`]): a host takes
//! only as many frames as it has room for.

use driver_env::{DriverMem, MemFault};

/// Size of `struct tpacket_block_desc` (version, private offset, and the
/// `tpacket_hdr_v1` with its timestamps).
pub const BLOCK_HEADER_LEN: u32 = 48;
/// Size of `struct tpacket3_hdr`.
pub const PACKET_HEADER_LEN: u32 = 48;
/// `tpacket_hdr_v1.block_status`: the block belongs to user space.
pub const TP_STATUS_USER: u32 = 1;
/// `tpacket_block_desc.version` of TPACKET_V3 blocks: the kernel writes the
/// version enum's value, `TPACKET_V3` (2).
pub const TPACKET_V3_BLOCK_VERSION: u32 = 2;
/// Offset of `block_status` in a block.
pub const BLOCK_STATUS: u64 = 8;
/// The shortest frame handed on (an Ethernet header).
pub const MIN_FRAME: u32 = 14;
/// `tpacket3_hdr.tp_status`: `tp_vlan_tci` holds the tag the kernel took off.
pub const TP_STATUS_VLAN_VALID: u32 = 1 << 4;
/// `tpacket3_hdr.tp_status`: `tp_vlan_tpid` holds that tag's TPID.
pub const TP_STATUS_VLAN_TPID_VALID: u32 = 1 << 6;
/// Offsets in `struct tpacket3_hdr`.
const TP_SNAPLEN: u64 = 12;
const TP_LEN: u64 = 16;
const TP_STATUS: u64 = 20;
const TP_MAC: u64 = 24;
const TP_VLAN_TCI: u64 = 32;
const TP_VLAN_TPID: u64 = 36;
/// An 802.1Q tag's length.
const TAG_LEN: u32 = 4;

/// Why a block's walk ended early.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Malformed {
    /// Not a TPACKET_V3 block.
    Version,
    /// More packets than the block could hold.
    TooManyPackets,
    /// The used length is outside the block.
    BlockLength,
    /// A packet's header, frame or next offset leaves the used length.
    PacketBounds,
}

/// What one packet of a block was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Packet {
    /// A frame: `len` bytes at block offset `offset`.
    Frame {
        /// Offset of the first byte from the block's start.
        offset: u32,
        /// Length.
        len: u32,
    },
    /// The kernel cut it (captured less than the wire length).
    Truncated,
    /// Shorter than an Ethernet header.
    Runt,
}

/// A block handed to user space, being read: its header's fields, read once
/// and checked, and where the walk stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockCursor {
    num_pkts: u32,
    blk_len: u32,
    /// Offset of the next packet's header.
    at: u32,
    /// Packets visited.
    index: u32,
}

/// Reads and checks the header of the block at `base` (`block_size` bytes):
/// `Ok(None)` while it is the kernel's; `Some(Err)` when it fails the checks
/// (nothing of it can be read).
pub fn open_block<E: DriverMem>(
    env: &E,
    base: u64,
    block_size: u32,
) -> Result<Option<Result<BlockCursor, Malformed>>, MemFault> {
    // The status first, with acquire: the kernel wrote the block before it.
    let status = env.load_acquire_u32(base + BLOCK_STATUS)?;
    if status & TP_STATUS_USER == 0 {
        return Ok(None);
    }
    let version = env.read_u32(base)?;
    let num_pkts = env.read_u32(base + 12)?;
    let first = env.read_u32(base + 16)?;
    let blk_len = env.read_u32(base + 20)?;
    Ok(Some(BlockCursor::new(
        version, num_pkts, first, blk_len, block_size,
    )))
}

impl BlockCursor {
    /// A cursor at the first packet, from the header's fields, checked.
    fn new(
        version: u32,
        num_pkts: u32,
        first: u32,
        blk_len: u32,
        block_size: u32,
    ) -> Result<BlockCursor, Malformed> {
        if version != TPACKET_V3_BLOCK_VERSION {
            return Err(Malformed::Version);
        }
        if blk_len > block_size || blk_len < BLOCK_HEADER_LEN {
            return Err(Malformed::BlockLength);
        }
        if num_pkts > (blk_len - BLOCK_HEADER_LEN) / PACKET_HEADER_LEN {
            return Err(Malformed::TooManyPackets);
        }
        Ok(BlockCursor {
            num_pkts,
            blk_len,
            at: first,
            index: 0,
        })
    }

    /// A cursor saved by [`BlockCursor::words`], checked again as a block
    /// header is (the words come from shared memory).
    pub fn from_words(words: [u32; 4], block_size: u32) -> Option<BlockCursor> {
        let [num_pkts, blk_len, at, index] = words;
        let mut c =
            BlockCursor::new(TPACKET_V3_BLOCK_VERSION, num_pkts, at, blk_len, block_size).ok()?;
        if index > num_pkts {
            return None;
        }
        c.index = index;
        Some(c)
    }

    /// The cursor as four words, to save (packets, used length, next packet's
    /// offset, packets visited).
    pub fn words(&self) -> [u32; 4] {
        [self.num_pkts, self.blk_len, self.at, self.index]
    }

    /// Whether every packet of the block was visited.
    pub fn is_done(&self) -> bool {
        self.index >= self.num_pkts
    }

    /// Visits the next packet (there must be one: `!is_done()`): `Ok(Err)` when
    /// it is malformed, which ends the walk (the cursor is then done).
    pub fn next<E: DriverMem>(
        &mut self,
        env: &E,
        base: u64,
    ) -> Result<Result<Packet, Malformed>, MemFault> {
        let r = self.visit(env, base)?;
        if r.is_err() {
            self.index = self.num_pkts;
        } else {
            self.index += 1;
        }
        Ok(r)
    }

    fn visit<E: DriverMem>(
        &mut self,
        env: &E,
        base: u64,
    ) -> Result<Result<Packet, Malformed>, MemFault> {
        let (at, blk_len) = (self.at, self.blk_len);
        // The header inside the used length, at or after the block header, and
        // aligned for its words (the kernel aligns every packet to 8 bytes or
        // more; found by fuzzing: a misaligned offset was a failed access).
        let hdr_ok = at >= BLOCK_HEADER_LEN
            && at.is_multiple_of(4)
            && at
                .checked_add(PACKET_HEADER_LEN)
                .is_some_and(|e| e <= blk_len);
        if !hdr_ok {
            return Ok(Err(Malformed::PacketBounds));
        }
        let h = base + u64::from(at);
        let next = env.read_u32(h)?;
        let snaplen = env.read_u32(h + TP_SNAPLEN)?;
        let len = env.read_u32(h + TP_LEN)?;
        let status = env.read_u32(h + TP_STATUS)?;
        let mac = u32::from(env.read_u16(h + TP_MAC)?);
        let start = at + mac;
        let frame_ok =
            mac >= PACKET_HEADER_LEN && start.checked_add(snaplen).is_some_and(|e| e <= blk_len);
        if !frame_ok {
            return Ok(Err(Malformed::PacketBounds));
        }
        if self.index + 1 < self.num_pkts {
            // The next packet lies after this one's frame: the walk moves forward.
            if next < mac + snaplen {
                return Ok(Err(Malformed::PacketBounds));
            }
            match at.checked_add(next) {
                Some(n) => self.at = n,
                None => return Ok(Err(Malformed::PacketBounds)),
            }
        }
        Ok(Ok(if snaplen < len {
            Packet::Truncated
        } else if snaplen < MIN_FRAME {
            Packet::Runt
        } else if status & TP_STATUS_VLAN_VALID != 0 {
            // Room for the tag between the packet header and the frame.
            if mac < PACKET_HEADER_LEN + TAG_LEN {
                return Ok(Err(Malformed::PacketBounds));
            }
            let tci = env.read_u32(h + TP_VLAN_TCI)? as u16;
            let tpid = if status & TP_STATUS_VLAN_TPID_VALID != 0 {
                env.read_u16(h + TP_VLAN_TPID)?
            } else {
                0x8100
            };
            let at_frame = base + u64::from(start);
            let mut hdr = [0u8; 16];
            env.read_bytes(at_frame, &mut hdr[..12])?;
            hdr[12..14].copy_from_slice(&tpid.to_be_bytes());
            hdr[14..16].copy_from_slice(&tci.to_be_bytes());
            env.write_bytes(at_frame - u64::from(TAG_LEN), &hdr)?;
            // The packet's header says what its frame is now.
            env.write_u16(h + TP_MAC, (mac - TAG_LEN) as u16)?;
            env.write_u32(h + TP_SNAPLEN, snaplen + TAG_LEN)?;
            env.write_u32(h + TP_LEN, len + TAG_LEN)?;
            env.write_u32(h + TP_STATUS, status & !TP_STATUS_VLAN_VALID)?;
            Packet::Frame {
                offset: start - TAG_LEN,
                len: snaplen + TAG_LEN,
            }
        } else {
            Packet::Frame {
                offset: start,
                len: snaplen,
            }
        }))
    }
}
