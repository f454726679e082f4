//! The AF_XDP driver's address space.
//!
//! ```text
//! 0x0000  state page (4 KiB): configuration words (magic, version, chunks,
//!         ring entries, space length; first 64 bytes), then the counters and
//!         the free-stack depth (see `driver`)
//! 0x1000  driver-domain private page (4 KiB): what the slow-path routine
//!         records. A twin has no access at all.
//! 0x2000  chunk tables: a holder word (u32) per UMEM chunk, then the stack of
//!         free transmit chunks, a u32 each; page-aligned end
//!   ...   fill, completion, receive and transmit ring, each page-aligned and as
//!         long as its mapping of the socket (page-rounded): the kernel's
//!         producer, consumer and flags words and descriptors at the offsets it
//!         gives (`XDP_MMAP_OFFSETS`)
//!   ...   the UMEM: `frames` chunks of [`FRAME_SIZE`] bytes; the first half
//!         receive chunks, the second half transmit chunks
//! ```
//!
//! Everything above the chunk tables is one memfd (the state memfd); each ring
//! is a mapping of the socket; the UMEM is the memfd the socket registered. Both
//! the driver domain and the switch map the pieces at these offsets into one
//! contiguous space (crate `kernel-nic`), so a driver address means the same in
//! both.
//!
//! [`XdpLayout::twin_access_map`] says what a twin may do where; it is built
//! from the ring offsets the switch read from the kernel itself, never from the
//! region.

use driver_env::access::{Access, AccessRange};

/// Bytes of one UMEM chunk.
pub const FRAME_SIZE: u32 = 2048;
/// Page size the pieces are aligned to.
pub const PAGE: u64 = 4096;
/// Size of the state page.
pub const STATE_PAGE: u64 = 4096;
/// Bytes at the start of the state page holding the configuration words.
pub const STATE_CONFIG_LEN: u64 = 64;
/// Bytes of counters and cursors after the configuration words.
pub const STATE_RW_LEN: u64 = 128;
/// Size of the private page.
pub const PRIVATE_PAGE: u64 = 4096;
/// Descriptor bytes of the receive and transmit rings (`struct xdp_desc`).
pub const DESC_SIZE: u64 = 16;
/// Entry bytes of the fill and completion rings (a UMEM address).
pub const ADDR_SIZE: u64 = 8;
/// Queue number the transmit wake-up is rung on ([`driver_env::Doorbell::kick`]).
pub const TX_QUEUE: u16 = 1;
/// Queue number the fill ring's wake-up is rung on (needed only by drivers in
/// zero-copy mode, where the kernel asks for it).
pub const FILL_QUEUE: u16 = 0;

/// Error of this module.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum XdpLayoutError {
    /// The chunk count is not a power of two in 64..=65536.
    #[error("invalid UMEM of {0} chunks: must be a power of two in 64..=65536")]
    Frames(u32),
    /// A ring's offsets overlap, are misaligned or leave its first page.
    #[error("invalid offsets for the {0} ring")]
    Offsets(&'static str),
}

/// Where the kernel keeps one ring's words and descriptors in the ring's
/// mapping (`struct xdp_ring_offset`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RingOffsets {
    /// The producer index (u32).
    pub producer: u64,
    /// The consumer index (u32).
    pub consumer: u64,
    /// The first descriptor.
    pub desc: u64,
    /// The flags word (u32: `XDP_RING_NEED_WAKEUP`).
    pub flags: u64,
}

impl RingOffsets {
    /// Whether a ring can be placed with these offsets: each word 4-aligned,
    /// the descriptors 8-aligned, all in the first page, no two overlapping.
    fn is_valid(&self) -> bool {
        let words = [self.producer, self.consumer, self.flags];
        let aligned = words.iter().all(|w| w.is_multiple_of(4)) && self.desc.is_multiple_of(8);
        let in_page = words.iter().all(|&w| w + 4 <= PAGE) && self.desc < PAGE;
        let apart = |a: u64, b: u64| a.abs_diff(b) >= 4;
        let before_desc = words.iter().all(|&w| w + 4 <= self.desc);
        aligned
            && in_page
            && before_desc
            && apart(self.producer, self.consumer)
            && apart(self.producer, self.flags)
            && apart(self.consumer, self.flags)
    }
}

/// What the host chooses (the UMEM's size) and what the kernel said (where
/// each ring keeps its words).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct XdpConfig {
    /// UMEM chunks; the fill ring has `frames` entries, the others `frames / 2`.
    pub frames: u32,
    /// The fill ring's offsets.
    pub fill: RingOffsets,
    /// The completion ring's offsets.
    pub completion: RingOffsets,
    /// The receive ring's offsets.
    pub rx: RingOffsets,
    /// The transmit ring's offsets.
    pub tx: RingOffsets,
}

/// One ring placed in the space: absolute driver addresses of its words.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RingLayout {
    /// Where the ring's mapping starts.
    pub base: u64,
    /// Bytes of the mapping (page-rounded).
    pub len: u64,
    /// The producer index.
    pub producer: u64,
    /// The consumer index.
    pub consumer: u64,
    /// The flags word.
    pub flags: u64,
    /// The first descriptor.
    pub desc: u64,
    /// Bytes per descriptor.
    pub desc_size: u64,
    /// Entries (a power of two).
    pub entries: u32,
}

impl RingLayout {
    fn place(base: u64, o: RingOffsets, entries: u32, desc_size: u64) -> RingLayout {
        let len = (o.desc + u64::from(entries) * desc_size).next_multiple_of(PAGE);
        RingLayout {
            base,
            len,
            producer: base + o.producer,
            consumer: base + o.consumer,
            flags: base + o.flags,
            desc: base + o.desc,
            desc_size,
            entries,
        }
    }

    /// The twin's ranges of this ring: the words the driver writes read-write,
    /// the ones the kernel writes read-only; the descriptors read-write on the
    /// rings the driver produces, read-only on the ones it consumes.
    fn access(&self, driver_produces: bool, names: [&'static str; 4]) -> [AccessRange; 4] {
        let (mine, kernels) = if driver_produces {
            (self.producer, self.consumer)
        } else {
            (self.consumer, self.producer)
        };
        let word = |start, access, name| AccessRange {
            start,
            len: 4,
            access,
            name,
        };
        [
            word(mine, Access::ReadWrite, names[0]),
            word(kernels, Access::ReadOnly, names[1]),
            word(self.flags, Access::ReadOnly, names[2]),
            AccessRange {
                start: self.desc,
                len: u64::from(self.entries) * self.desc_size,
                access: if driver_produces {
                    Access::ReadWrite
                } else {
                    Access::ReadOnly
                },
                name: names[3],
            },
        ]
    }
}

/// The computed layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct XdpLayout {
    /// What it was computed from.
    pub cfg: XdpConfig,
    /// Entries of the completion, receive and transmit rings: `frames / 2`,
    /// the chunks of each half. The fill ring has `frames` entries, twice the
    /// receive chunks: the kernel publishes a receive ring's producer before
    /// the fill ring's consumer, so a driver may see its chunks received and
    /// still counted on the fill ring; the spare half keeps room for them.
    pub entries: u32,
    /// The private page.
    pub private: u64,
    /// The holder words, a u32 per chunk.
    pub holders: u64,
    /// The free stack, a u32 per transmit chunk.
    pub free_stack: u64,
    /// Bytes of the state memfd (state page through the chunk tables).
    pub state_len: u64,
    /// The fill ring.
    pub fill: RingLayout,
    /// The completion ring.
    pub completion: RingLayout,
    /// The receive ring.
    pub rx: RingLayout,
    /// The transmit ring.
    pub tx: RingLayout,
    /// The UMEM's first byte.
    pub umem: u64,
    /// Bytes of the whole space.
    pub len: u64,
}

/// Number of ranges in [`XdpLayout::twin_access_map`].
pub const ACCESS_RANGES: usize = 24;

impl XdpLayout {
    /// Places everything for `cfg`.
    pub fn new(cfg: XdpConfig) -> Result<XdpLayout, XdpLayoutError> {
        let frames = cfg.frames;
        if !frames.is_power_of_two() || !(64..=65536).contains(&frames) {
            return Err(XdpLayoutError::Frames(frames));
        }
        for (o, what) in [
            (cfg.fill, "fill"),
            (cfg.completion, "completion"),
            (cfg.rx, "receive"),
            (cfg.tx, "transmit"),
        ] {
            if !o.is_valid() {
                return Err(XdpLayoutError::Offsets(what));
            }
        }
        let entries = frames / 2;
        let private = STATE_PAGE;
        let holders = private + PRIVATE_PAGE;
        let free_stack = holders + u64::from(frames) * 4;
        let state_len = (free_stack + u64::from(entries) * 4).next_multiple_of(PAGE);
        let fill = RingLayout::place(state_len, cfg.fill, frames, ADDR_SIZE);
        let completion =
            RingLayout::place(fill.base + fill.len, cfg.completion, entries, ADDR_SIZE);
        let rx = RingLayout::place(completion.base + completion.len, cfg.rx, entries, DESC_SIZE);
        let tx = RingLayout::place(rx.base + rx.len, cfg.tx, entries, DESC_SIZE);
        let umem = tx.base + tx.len;
        let len = umem + u64::from(frames) * u64::from(FRAME_SIZE);
        Ok(XdpLayout {
            cfg,
            entries,
            private,
            holders,
            free_stack,
            state_len,
            fill,
            completion,
            rx,
            tx,
            umem,
            len,
        })
    }

    /// Bytes of the UMEM.
    pub fn umem_len(&self) -> u64 {
        u64::from(self.cfg.frames) * u64::from(FRAME_SIZE)
    }

    /// The driver address of chunk `c`'s first byte.
    pub fn chunk_addr(&self, c: u32) -> u64 {
        self.umem + u64::from(c) * u64::from(FRAME_SIZE)
    }

    /// What a twin may touch: the configuration read-only, the counters and
    /// chunk tables read-write, the private page not at all; per ring its own
    /// index and (on the rings it produces) descriptors read-write, the
    /// kernel's index and flags read-only; the receive chunks read-only (the
    /// kernel writes them), the transmit chunks read-write.
    pub fn twin_access_map(&self) -> [AccessRange; ACCESS_RANGES] {
        let r = |start, len, access, name| AccessRange {
            start,
            len,
            access,
            name,
        };
        let e = self.entries;
        let [f0, f1, f2, f3] = self.fill.access(
            true,
            ["fill-producer", "fill-consumer", "fill-flags", "fill-desc"],
        );
        let [c0, c1, c2, c3] = self.completion.access(
            false,
            ["comp-consumer", "comp-producer", "comp-flags", "comp-desc"],
        );
        let [r0, r1, r2, r3] = self
            .rx
            .access(false, ["rx-consumer", "rx-producer", "rx-flags", "rx-desc"]);
        let [t0, t1, t2, t3] = self
            .tx
            .access(true, ["tx-producer", "tx-consumer", "tx-flags", "tx-desc"]);
        let half = self.umem_len() / 2;
        [
            r(0, STATE_CONFIG_LEN, Access::ReadOnly, "state-config"),
            r(
                STATE_CONFIG_LEN,
                STATE_RW_LEN,
                Access::ReadWrite,
                "counters",
            ),
            r(self.private, PRIVATE_PAGE, Access::None, "private"),
            r(
                self.holders,
                u64::from(self.cfg.frames) * 4,
                Access::ReadWrite,
                "holders",
            ),
            r(
                self.free_stack,
                u64::from(e) * 4,
                Access::ReadWrite,
                "free-stack",
            ),
            f0,
            f1,
            f2,
            f3,
            c0,
            c1,
            c2,
            c3,
            r0,
            r1,
            r2,
            r3,
            t0,
            t1,
            t2,
            t3,
            r(self.umem, half, Access::ReadOnly, "rx-chunks"),
            r(self.umem + half, half, Access::ReadWrite, "tx-chunks"),
            // The rest of the state page after the counters: nothing lives there.
            r(
                STATE_CONFIG_LEN + STATE_RW_LEN,
                STATE_PAGE - STATE_CONFIG_LEN - STATE_RW_LEN,
                Access::None,
                "state-unused",
            ),
        ]
    }
}

/// The kernel's offsets on Linux 6.1 (`XDP_MMAP_OFFSETS` with flags), for tests.
pub const LINUX_OFFSETS: RingOffsets = RingOffsets {
    producer: 0,
    consumer: 128,
    desc: 320,
    flags: 196,
};

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(frames: u32) -> XdpConfig {
        XdpConfig {
            frames,
            fill: LINUX_OFFSETS,
            completion: LINUX_OFFSETS,
            rx: LINUX_OFFSETS,
            tx: LINUX_OFFSETS,
        }
    }

    #[test]
    fn every_piece_is_page_aligned_and_in_order() {
        let l = XdpLayout::new(cfg(4096)).unwrap();
        assert_eq!(l.entries, 2048);
        assert_eq!(l.holders, 0x2000);
        assert_eq!(l.free_stack, 0x2000 + 4096 * 4);
        assert_eq!(l.state_len, 0x2000 + 4096 * 4 + 2048 * 4);
        let mut at = l.state_len;
        for (ring, size, n) in [
            (l.fill, 8, 4096),
            (l.completion, 8, 2048),
            (l.rx, 16, 2048),
            (l.tx, 16, 2048),
        ] {
            assert_eq!(ring.base, at);
            assert_eq!(ring.base % PAGE, 0);
            assert_eq!(ring.entries, n);
            assert_eq!(ring.len, (320 + u64::from(n) * size).next_multiple_of(PAGE));
            at += ring.len;
        }
        assert_eq!(l.umem, at);
        assert_eq!(l.len, at + 4096 * 2048);
        assert_eq!(l.chunk_addr(3), l.umem + 3 * 2048);
    }

    #[test]
    fn bad_shapes_are_refused() {
        for frames in [0, 32, 100, 1 << 17] {
            assert_eq!(
                XdpLayout::new(cfg(frames)),
                Err(XdpLayoutError::Frames(frames))
            );
        }
        let bad = [
            RingOffsets {
                producer: 2,
                ..LINUX_OFFSETS
            },
            RingOffsets {
                desc: 4,
                ..LINUX_OFFSETS
            },
            RingOffsets {
                desc: 324,
                ..LINUX_OFFSETS
            },
            RingOffsets {
                consumer: 0,
                ..LINUX_OFFSETS
            },
            RingOffsets {
                flags: 4096,
                ..LINUX_OFFSETS
            },
            RingOffsets {
                desc: 4096,
                ..LINUX_OFFSETS
            },
        ];
        for o in bad {
            let c = XdpConfig { rx: o, ..cfg(64) };
            assert_eq!(
                XdpLayout::new(c),
                Err(XdpLayoutError::Offsets("receive")),
                "{o:?}"
            );
        }
    }

    #[test]
    fn the_access_map_covers_what_the_twin_needs_and_no_more() {
        let l = XdpLayout::new(cfg(64)).unwrap();
        let map = l.twin_access_map();
        let find = |name: &str| *map.iter().find(|r| r.name == name).unwrap();
        assert_eq!(find("private").access, Access::None);
        assert_eq!(find("rx-producer").access, Access::ReadOnly);
        assert_eq!(find("rx-consumer").access, Access::ReadWrite);
        assert_eq!(find("rx-desc").access, Access::ReadOnly);
        assert_eq!(find("tx-desc").access, Access::ReadWrite);
        assert_eq!(find("tx-consumer").access, Access::ReadOnly);
        assert_eq!(find("fill-producer").start, l.fill.producer);
        assert_eq!(find("rx-chunks").start, l.umem);
        assert_eq!(find("tx-chunks").start + find("tx-chunks").len, l.len);
        // No two ranges overlap.
        let mut sorted = map.to_vec();
        sorted.sort_by_key(|r| r.start);
        for w in sorted.windows(2) {
            assert!(w[0].end() <= w[1].start, "{:?} / {:?}", w[0], w[1]);
        }
    }
}
