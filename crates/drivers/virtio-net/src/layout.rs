//! The virtio-net driver's region layout.
//!
//! ```text
//! 0x0000  state page (4 KiB): configuration words (magic, version, negotiated
//!         features, queue size, buffer size, region length; first 64 bytes), then
//!         the counters (see `driver`)
//! 0x1000  driver-domain private page (4 KiB): what the slow-path routines record
//!         (device errors per queue, the last error, broken queues, reset request).
//!         A twin has no access at all.
//! 0x2000  RX queue (device queue 0): descriptor table, avail ring, queue state
//!         block, used ring (crate driver-virtqueue)
//!   ...   TX queue (device queue 1), page-aligned, same shape
//!   ...   buffer pool, page-aligned: queue_size RX buffers, then queue_size TX
//!         buffers, buf_size bytes each; buffer i of a queue belongs to its
//!         descriptor i. Each buffer is a 12-byte virtio-net header + frame.
//! ```
//!
//! All addresses are driver-domain addresses (offsets in the region).
//! [`NetLayout::twin_access_map`] says what a twin may do where.

use driver_env::access::{Access, AccessRange};
use driver_virtqueue::{QueueError, QueueLayout};
use twin_wire::net_hdr::HDR_LEN_MODERN;

/// Size of the state page.
pub const STATE_PAGE: u64 = 4096;
/// Bytes at the start of the state page holding the configuration words (written
/// by `init` only; read-only for a twin).
pub const STATE_CONFIG_LEN: u64 = 64;
/// Bytes of counters after the configuration words.
pub const COUNTERS_LEN: u64 = 88;
/// Size of the driver-domain private page (right after the state page).
pub const PRIVATE_PAGE: u64 = 4096;
/// Number of ranges in [`NetLayout::twin_access_map`].
pub const ACCESS_RANGES: usize = 13;
/// Device queue index of the receive queue.
pub const RX_QUEUE: u16 = 0;
/// Device queue index of the transmit queue.
pub const TX_QUEUE: u16 = 1;
/// Smallest buffer: a header and the largest frame the project forwards (1518 B).
pub const MIN_BUF_SIZE: u32 = 1536;

/// Error of this module.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum LayoutError {
    /// The queue size is not usable.
    #[error("invalid virtqueue layout")]
    PlaceQueue(#[from] QueueError),
    /// The buffer size is too small, too large or not a multiple of 64.
    #[error("invalid buffer size {0}: must be a multiple of 64 in {MIN_BUF_SIZE}..=65536")]
    InvalidBufSize(u32),
}

/// What the host chooses when it creates a driver region.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NetConfig {
    /// Descriptors per queue (power of two, at most 32768).
    pub queue_size: u16,
    /// Bytes per DMA buffer (header + frame).
    pub buf_size: u32,
}

impl Default for NetConfig {
    fn default() -> Self {
        Self {
            queue_size: 256,
            buf_size: 2048,
        }
    }
}

/// The computed layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NetLayout {
    /// The configuration it was computed from.
    pub cfg: NetConfig,
    /// RX queue rings.
    pub rx: QueueLayout,
    /// TX queue rings.
    pub tx: QueueLayout,
    /// The driver-domain private page ([`PRIVATE_PAGE`] bytes).
    pub private: u64,
    /// First byte of the buffer pool.
    pub pool: u64,
    /// Region size needed.
    pub region_len: u64,
}

impl NetLayout {
    /// Computes the layout for `cfg`.
    pub fn new(cfg: NetConfig) -> Result<Self, LayoutError> {
        if cfg.buf_size < MIN_BUF_SIZE || cfg.buf_size > 65536 || !cfg.buf_size.is_multiple_of(64) {
            return Err(LayoutError::InvalidBufSize(cfg.buf_size));
        }
        let private = STATE_PAGE;
        let rx = QueueLayout::new(private + PRIVATE_PAGE, cfg.queue_size)?;
        let tx = QueueLayout::new(rx.end(), cfg.queue_size)?;
        let pool = tx.end().div_ceil(4096) * 4096;
        let pool_len = 2 * u64::from(cfg.queue_size) * u64::from(cfg.buf_size);
        let region_len = (pool + pool_len).div_ceil(4096) * 4096;
        Ok(Self {
            cfg,
            rx,
            tx,
            private,
            pool,
            region_len,
        })
    }

    /// What a twin may do where in the region, in address order. Not covered (no
    /// access either): the alignment padding between ranges.
    ///
    /// | range | access | why |
    /// |---|---|---|
    /// | `state-config` | read-only | configuration words, written by `init` only |
    /// | `counters` | read-write | counters written back at batch boundaries |
    /// | `private` | none | the driver domain's own records (slow-path routines) |
    /// | `rx-desc`, `tx-desc` | read-write | descriptor tables |
    /// | `rx-avail`, `tx-avail` | read-write | avail rings (with `used_event`) |
    /// | `rx-used`, `tx-used` | read-only | used rings: the device writes them, the driver only reads (also `avail_event` and the `NO_NOTIFY` flag) |
    /// | `rx-state`, `tx-state` | read-write | queue state blocks (indices, free stack, descriptor states, counters) |
    /// | `rx-buffers` | read-only | the device writes received frames; the driver only reads headers and hands frames out |
    /// | `tx-buffers` | read-write | the host copies frames in |
    pub fn twin_access_map(&self) -> [AccessRange; ACCESS_RANGES] {
        const fn r(start: u64, len: u64, access: Access, name: &'static str) -> AccessRange {
            AccessRange {
                start,
                len,
                access,
                name,
            }
        }
        let n = u64::from(self.cfg.queue_size);
        let q = |l: &QueueLayout, names: [&'static str; 4]| {
            [
                r(l.desc, 16 * n, Access::ReadWrite, names[0]),
                // flags, idx, ring[n], used_event, and the padding up to the state
                // block, so that everything the driver writes is one span
                r(l.avail, l.state - l.avail, Access::ReadWrite, names[1]),
                r(
                    l.state,
                    l.state_end() - l.state,
                    Access::ReadWrite,
                    names[3],
                ),
                // flags, idx, ring[n], avail_event
                r(l.used, 6 + 8 * n, Access::ReadOnly, names[2]),
            ]
        };
        let [rd, ra, rs, ru] = q(&self.rx, ["rx-desc", "rx-avail", "rx-used", "rx-state"]);
        let [td, ta, ts, tu] = q(&self.tx, ["tx-desc", "tx-avail", "tx-used", "tx-state"]);
        let bufs = n * u64::from(self.cfg.buf_size);
        [
            r(0, STATE_CONFIG_LEN, Access::ReadOnly, "state-config"),
            r(
                STATE_CONFIG_LEN,
                COUNTERS_LEN,
                Access::ReadWrite,
                "counters",
            ),
            r(self.private, PRIVATE_PAGE, Access::None, "private"),
            rd,
            ra,
            rs,
            ru,
            td,
            ta,
            ts,
            tu,
            r(self.pool, bufs, Access::ReadOnly, "rx-buffers"),
            r(self.pool + bufs, bufs, Access::ReadWrite, "tx-buffers"),
        ]
    }

    /// Start of RX descriptor `id`'s buffer (its header).
    pub fn rx_buf(&self, id: u16) -> u64 {
        self.pool + u64::from(id) * u64::from(self.cfg.buf_size)
    }

    /// Start of TX descriptor `id`'s buffer (its header).
    pub fn tx_buf(&self, id: u16) -> u64 {
        self.pool + (u64::from(self.cfg.queue_size) + u64::from(id)) * u64::from(self.cfg.buf_size)
    }

    /// Largest frame (without header) a buffer holds.
    pub fn frame_capacity(&self) -> usize {
        self.cfg.buf_size as usize - HDR_LEN_MODERN
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_layout_is_ordered_and_aligned() {
        let l = NetLayout::new(NetConfig::default()).unwrap();
        assert_eq!(l.private, STATE_PAGE);
        assert_eq!(l.rx.desc, STATE_PAGE + PRIVATE_PAGE);
        assert!(l.tx.desc >= l.rx.end());
        assert_eq!(l.tx.desc % 4096, 0);
        assert!(l.pool >= l.tx.end());
        assert_eq!(l.pool % 4096, 0);
        assert_eq!(l.tx_buf(255) + 2048, l.region_len);
        assert_eq!(l.frame_capacity(), 2036);
        assert!(NetLayout::new(NetConfig {
            queue_size: 256,
            buf_size: 1000
        })
        .is_err());
        assert!(NetLayout::new(NetConfig {
            queue_size: 300,
            buf_size: 2048
        })
        .is_err());
    }

    /// The map is ordered, disjoint, inside the region, and covers everything but
    /// alignment padding (a gap ends where its start, rounded up to 4, 8 or 4096
    /// bytes, ends).
    #[test]
    fn access_map_covers_the_region() {
        for (queue_size, buf_size) in [(1, 1536), (16, 2048), (256, 2048), (1024, 9216)] {
            let l = NetLayout::new(NetConfig {
                queue_size,
                buf_size,
            })
            .unwrap();
            let map = l.twin_access_map();
            let mut at = 0;
            for r in &map {
                assert!(r.len > 0, "{r:?}");
                assert!(r.start >= at, "{r:?} overlaps");
                let gap = r.start - at;
                assert!(
                    gap == 0 || [4, 8, 4096].iter().any(|a| at.div_ceil(*a) * a == r.start),
                    "gap of {gap} bytes before {r:?}"
                );
                at = r.end();
            }
            assert!(at <= l.region_len);
            assert_eq!(l.region_len.div_ceil(4096) * 4096, at.div_ceil(4096) * 4096);
            let by_name = |n: &str| *map.iter().find(|r| r.name == n).unwrap();
            assert_eq!(by_name("private").access, Access::None);
            assert_eq!(by_name("private").start, l.private);
            assert_eq!(by_name("state-config").access, Access::ReadOnly);
            assert_eq!(by_name("rx-used").access, Access::ReadOnly);
            assert_eq!(by_name("tx-used").access, Access::ReadOnly);
            assert_eq!(
                by_name("tx-buffers").end(),
                l.tx_buf(queue_size - 1) + u64::from(buf_size)
            );
            assert_eq!(by_name("rx-buffers").start, l.rx_buf(0));
            assert_eq!(by_name("tx-state").end(), l.tx.state_end());
            assert_eq!(by_name("tx-used").end(), l.tx.end());
        }
    }
}
