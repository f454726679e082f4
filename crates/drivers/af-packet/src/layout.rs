//! The AF_PACKET driver's address space.
//!
//! ```text
//! 0x0000  state page (4 KiB): configuration words (magic, version, block
//!         size, blocks, space length; first 64 bytes), then the counters and
//!         the rings' positions (see `driver`)
//! 0x1000  driver-domain private page (4 KiB): what the slow-path routines
//!         record. A twin has no access at all.
//! 0x2000  the receive ring: `blocks` blocks of `block_size` bytes
//!   ...   the transmit ring: as many bytes, in slots of [`TX_FRAME_SIZE`]
//! ```
//!
//! The two pages are one memfd (the state memfd); the rings are one mapping of
//! the socket (the kernel places the transmit ring right after the receive
//! ring). Both the driver domain and the switch map the pieces at these offsets
//! into one contiguous space (crate `kernel-nic`), so a driver address means
//! the same in both.
//!
//! [`PacketLayout::twin_access_map`] says what a twin may do where; it is built
//! from the host's own configuration, never from the region.

use driver_env::access::{Access, AccessRange};

/// Bytes of one transmit slot (its header and the frame).
pub const TX_FRAME_SIZE: u32 = 2048;
/// Where a transmit frame's data starts in its slot: `TPACKET3_HDRLEN` less the
/// `sockaddr_ll` the kernel does not read on transmit.
pub const TX_DATA_OFFSET: u64 = 48;
/// Page size the pieces are aligned to.
pub const PAGE: u64 = 4096;
/// Size of the state page.
pub const STATE_PAGE: u64 = 4096;
/// Bytes at the start of the state page holding the configuration words.
pub const STATE_CONFIG_LEN: u64 = 64;
/// Bytes of counters and positions after the configuration words.
pub const STATE_RW_LEN: u64 = 192;
/// Size of the private page.
pub const PRIVATE_PAGE: u64 = 4096;
/// The largest block the layout accepts (the kernel's own limit depends on its
/// page allocator; 4 MiB is far below it).
pub const MAX_BLOCK_SIZE: u32 = 1 << 22;
/// The most blocks per ring the layout accepts.
pub const MAX_BLOCKS: u32 = 1024;

/// Error of this module.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PacketLayoutError {
    /// The block size is not a power of two from a page to [`MAX_BLOCK_SIZE`].
    #[error("invalid block size {0}: must be a power of two from 4096 to 4 MiB")]
    BlockSize(u32),
    /// The block count is not in 1..=[`MAX_BLOCKS`].
    #[error("invalid block count {0}: must be 1 to 1024")]
    Blocks(u32),
}

/// The rings' shape, as the host configured the socket: each ring has `blocks`
/// blocks of `block_size` bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PacketConfig {
    /// Bytes per block.
    pub block_size: u32,
    /// Blocks per ring.
    pub blocks: u32,
}

/// The computed layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PacketLayout {
    /// What it was computed from.
    pub cfg: PacketConfig,
    /// The private page.
    pub private: u64,
    /// Bytes of the state memfd (the state and private pages).
    pub state_len: u64,
    /// The receive ring's first byte.
    pub rx: u64,
    /// Bytes of one ring.
    pub ring_len: u64,
    /// The transmit ring's first byte.
    pub tx: u64,
    /// Transmit slots.
    pub tx_frames: u32,
    /// Bytes of the whole space.
    pub len: u64,
}

/// Number of ranges in [`PacketLayout::twin_access_map`].
pub const ACCESS_RANGES: usize = 6;

impl PacketLayout {
    /// Places everything for `cfg`.
    pub fn new(cfg: PacketConfig) -> Result<PacketLayout, PacketLayoutError> {
        let bs = cfg.block_size;
        if !bs.is_power_of_two() || u64::from(bs) < PAGE || bs > MAX_BLOCK_SIZE {
            return Err(PacketLayoutError::BlockSize(bs));
        }
        if !(1..=MAX_BLOCKS).contains(&cfg.blocks) {
            return Err(PacketLayoutError::Blocks(cfg.blocks));
        }
        let private = STATE_PAGE;
        let state_len = private + PRIVATE_PAGE;
        let ring_len = u64::from(bs) * u64::from(cfg.blocks);
        let rx = state_len;
        let tx = rx + ring_len;
        Ok(PacketLayout {
            cfg,
            private,
            state_len,
            rx,
            ring_len,
            tx,
            // Below 2^22 / 2^11 * 2^10 = 2^21.
            tx_frames: bs / TX_FRAME_SIZE * cfg.blocks,
            len: tx + ring_len,
        })
    }

    /// The driver address of receive block `b`.
    pub fn block_addr(&self, b: u32) -> u64 {
        self.rx + u64::from(b) * u64::from(self.cfg.block_size)
    }

    /// The driver address of transmit slot `i`.
    pub fn slot_addr(&self, i: u32) -> u64 {
        self.tx + u64::from(i) * u64::from(TX_FRAME_SIZE)
    }

    /// Bytes a transmit frame may have.
    pub fn tx_capacity(&self) -> u32 {
        TX_FRAME_SIZE - TX_DATA_OFFSET as u32
    }

    /// What a twin may touch: the configuration read-only, the counters and
    /// positions read-write, the rest of the state page and the private page
    /// not at all; both rings read-write. The receive ring is the kernel's to
    /// write, but the driver gives each block back by writing its status word,
    /// one in every block: a range per word would be a range per block. A twin
    /// that writes elsewhere in it spoils only frames the driver itself checks
    /// (the kernel reads nothing of a block but that word).
    pub fn twin_access_map(&self) -> [AccessRange; ACCESS_RANGES] {
        let r = |start, len, access, name| AccessRange {
            start,
            len,
            access,
            name,
        };
        [
            r(0, STATE_CONFIG_LEN, Access::ReadOnly, "state-config"),
            r(
                STATE_CONFIG_LEN,
                STATE_RW_LEN,
                Access::ReadWrite,
                "counters",
            ),
            r(
                STATE_CONFIG_LEN + STATE_RW_LEN,
                STATE_PAGE - STATE_CONFIG_LEN - STATE_RW_LEN,
                Access::None,
                "state-unused",
            ),
            r(self.private, PRIVATE_PAGE, Access::None, "private"),
            r(self.rx, self.ring_len, Access::ReadWrite, "rx-ring"),
            r(self.tx, self.ring_len, Access::ReadWrite, "tx-ring"),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(block_size: u32, blocks: u32) -> PacketConfig {
        PacketConfig { block_size, blocks }
    }

    #[test]
    fn the_rings_follow_the_two_pages() {
        let l = PacketLayout::new(cfg(1 << 16, 64)).unwrap();
        assert_eq!((l.private, l.state_len, l.rx), (0x1000, 0x2000, 0x2000));
        assert_eq!(l.ring_len, 64 << 16);
        assert_eq!(l.tx, 0x2000 + (64 << 16));
        assert_eq!(l.len, 0x2000 + (128 << 16));
        assert_eq!(l.tx_frames, 32 * 64);
        assert_eq!(l.block_addr(3), 0x2000 + 3 * (1 << 16));
        assert_eq!(l.slot_addr(5), l.tx + 5 * 2048);
        assert_eq!(l.tx_capacity(), 2000);
    }

    #[test]
    fn bad_shapes_are_refused() {
        for bs in [0, 2048, 4097, 3 << 12, 1 << 23] {
            assert_eq!(
                PacketLayout::new(cfg(bs, 4)),
                Err(PacketLayoutError::BlockSize(bs))
            );
        }
        for blocks in [0, 1025] {
            assert_eq!(
                PacketLayout::new(cfg(4096, blocks)),
                Err(PacketLayoutError::Blocks(blocks))
            );
        }
    }

    #[test]
    fn the_access_map_covers_the_space_without_overlap() {
        let l = PacketLayout::new(cfg(4096, 8)).unwrap();
        let mut map = l.twin_access_map().to_vec();
        map.sort_by_key(|r| r.start);
        assert_eq!(map[0].start, 0);
        for w in map.windows(2) {
            assert_eq!(w[0].end(), w[1].start, "{:?} / {:?}", w[0], w[1]);
        }
        assert_eq!(map.last().unwrap().end(), l.len);
        let find = |name: &str| *map.iter().find(|r| r.name == name).unwrap();
        assert_eq!(find("private").access, Access::None);
        assert_eq!(find("state-config").access, Access::ReadOnly);
    }
}
