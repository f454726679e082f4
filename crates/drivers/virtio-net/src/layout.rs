//! The virtio-net driver's region layout.
//!
//! ```text
//! 0x0000  state page (4 KiB): magic, version, negotiated features, queue size,
//!         buffer size, region length, counters (see `driver`)
//! 0x1000  RX queue (device queue 0): descriptor table, avail ring, used ring,
//!         queue state block (crate driver-virtqueue)
//!   ...   TX queue (device queue 1), page-aligned, same shape
//!   ...   buffer pool, page-aligned: queue_size RX buffers, then queue_size TX
//!         buffers, buf_size bytes each; buffer i of a queue belongs to its
//!         descriptor i. Each buffer is a 12-byte virtio-net header + frame.
//! ```
//!
//! All addresses are driver-domain addresses (offsets in the region).

use driver_virtqueue::{QueueError, QueueLayout};
use twin_wire::net_hdr::HDR_LEN_MODERN;

/// Size of the state page.
pub const STATE_PAGE: u64 = 4096;
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
        let rx = QueueLayout::new(STATE_PAGE, cfg.queue_size)?;
        let tx = QueueLayout::new(rx.end(), cfg.queue_size)?;
        let pool = tx.end().div_ceil(4096) * 4096;
        let pool_len = 2 * u64::from(cfg.queue_size) * u64::from(cfg.buf_size);
        let region_len = (pool + pool_len).div_ceil(4096) * 4096;
        Ok(Self {
            cfg,
            rx,
            tx,
            pool,
            region_len,
        })
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
        assert_eq!(l.rx.desc, STATE_PAGE);
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
}
