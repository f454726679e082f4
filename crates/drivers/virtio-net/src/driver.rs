//! The virtio-net data path and its counters.
//!
//! Transmit: [`VirtioNet::tx_reserve`] hands out a TX buffer's frame area (address and
//! capacity), the host copies a frame there, [`VirtioNet::tx_commit`] zeroes the
//! header and posts it; [`VirtioNet::tx_flush`] publishes the batch, kicks at most
//! once and reaps completions. Receive: [`VirtioNet::rx_burst`] hands each used RX
//! frame (after the header) to a callback, then reposts the buffers with one
//! publish and at most one kick.
//!
//! Every device-written value is checked (by the virtqueue, plus the header length
//! and `num_buffers` here); bad frames are dropped and counted. Counters live in the
//! state page; RX counters are written once per burst.

use driver_env::{DriverEnv, DriverMem, MemFault};
use driver_virtqueue::{QueueCounters, QueueError, Virtqueue};
use twin_wire::features::{self, F_VERSION_1, NET_F_MRG_RXBUF, RING_F_EVENT_IDX};
use twin_wire::net_hdr::{HDR_LEN_MODERN, NUM_BUFFERS_OFFSET};

use crate::layout::{LayoutError, NetConfig, NetLayout, RX_QUEUE, STATE_PAGE, TX_QUEUE};

const MAGIC: u32 = 0x5456_4e31; // "TVN1"
const VERSION: u32 = 1;

// State page fields.
const P_MAGIC: u64 = 0;
const P_VERSION: u64 = 4;
const P_FEATURES: u64 = 8;
const P_QUEUE_SIZE: u64 = 16;
const P_BUF_SIZE: u64 = 20;
const P_REGION_LEN: u64 = 24;
// Counters (u64 each).
const C_TX_PACKETS: u64 = 64;
const C_TX_BYTES: u64 = 72;
const C_RX_PACKETS: u64 = 80;
const C_RX_BYTES: u64 = 88;
const C_TX_RING_FULL: u64 = 96;
const C_RX_SHORT: u64 = 104;
const C_RX_MERGED: u64 = 112;
const C_RX_DEVICE_ERR: u64 = 120;
const C_TX_DEVICE_ERR: u64 = 128;
const C_TX_TOO_LONG: u64 = 136;
const C_TX_COMPLETED: u64 = 144;

/// Error of this module.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum NetError {
    /// A region access was refused.
    #[error("driver memory access failed")]
    Access(#[from] MemFault),
    /// A virtqueue failed (device errors that are merely counted never surface here).
    #[error("virtqueue failed")]
    Queue(#[from] QueueError),
    /// The layout is invalid.
    #[error("invalid driver layout")]
    Layout(#[from] LayoutError),
    /// The device lacks a feature the driver needs.
    #[error("device does not offer required features {missing:#x} (offers {offered:#x})")]
    MissingFeatures {
        /// Required bits not offered.
        missing: u64,
        /// What the device offered.
        offered: u64,
    },
    /// The region is smaller than the layout.
    #[error("region of {have:#x} bytes is smaller than the {need:#x} the layout needs")]
    RegionTooSmall {
        /// Region size.
        have: u64,
        /// Needed size.
        need: u64,
    },
    /// `attach` found no initialised driver state.
    #[error("region holds no initialised virtio-net driver state")]
    NotInitialised,
    /// A frame does not fit in a TX buffer (the buffer is returned to the free list).
    #[error("frame of {len} bytes exceeds the TX buffer capacity of {cap}")]
    FrameTooLong {
        /// Frame length.
        len: usize,
        /// Capacity.
        cap: usize,
    },
}

/// A reserved TX buffer: the host writes up to `capacity` frame bytes at `frame_addr`.
#[derive(Debug, PartialEq, Eq)]
#[must_use = "commit or cancel a reserved TX buffer, or its descriptor is lost"]
pub struct TxBuf {
    /// Descriptor id.
    pub id: u16,
    /// Driver-domain address of the frame area (after the header).
    pub frame_addr: u64,
    /// Bytes the frame area holds.
    pub capacity: usize,
}

/// A received frame (header already stripped) in an RX buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RxFrame {
    /// Driver-domain address of the first frame byte.
    pub addr: u64,
    /// Frame length.
    pub len: usize,
}

/// Counters of one driver instance.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NetStats {
    /// Frames committed for transmission.
    pub tx_packets: u64,
    /// Frame bytes committed (without header).
    pub tx_bytes: u64,
    /// TX completions reaped.
    pub tx_completed: u64,
    /// `tx_reserve` found no free buffer.
    pub tx_ring_full: u64,
    /// Frames refused because they exceed the buffer.
    pub tx_too_long: u64,
    /// Bad TX used entries (sum of the TX queue's device errors).
    pub tx_device_errors: u64,
    /// Frames received and handed to the host.
    pub rx_packets: u64,
    /// Frame bytes received (without header).
    pub rx_bytes: u64,
    /// RX entries shorter than the header (dropped).
    pub rx_short: u64,
    /// RX frames that claimed more than one buffer (dropped).
    pub rx_merged: u64,
    /// Bad RX used entries (dropped).
    pub rx_device_errors: u64,
    /// The RX queue's counters.
    pub rx_queue: QueueCounters,
    /// The TX queue's counters.
    pub tx_queue: QueueCounters,
    /// Negotiated features.
    pub features: u64,
}

/// A virtio-net driver instance: constants only, its state is in the region.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VirtioNet {
    layout: NetLayout,
    rx: Virtqueue,
    tx: Virtqueue,
    mrg_rxbuf: bool,
}

/// Chooses the features to acknowledge from what the device offers: VERSION_1 is
/// required; EVENT_IDX and MRG_RXBUF are taken when offered
/// ([`twin_wire::features::DRIVER_WANT`]).
pub fn negotiate(offered: u64) -> Result<u64, NetError> {
    if !features::has(offered, F_VERSION_1) {
        return Err(NetError::MissingFeatures {
            missing: F_VERSION_1,
            offered,
        });
    }
    Ok(offered & features::DRIVER_WANT)
}

fn bump<E: DriverMem>(env: &E, off: u64, by: u64) -> Result<(), MemFault> {
    if by == 0 {
        return Ok(());
    }
    let a = off;
    env.write_u64(a, env.read_u64(a)?.wrapping_add(by))
}

impl VirtioNet {
    /// Initialises a fresh region for `cfg` with the negotiated `features` (from
    /// [`negotiate`]) and posts every RX buffer (published, not kicked).
    pub fn init<E: DriverEnv>(env: &E, cfg: NetConfig, features: u64) -> Result<Self, NetError> {
        let layout = NetLayout::new(cfg)?;
        if env.region_len() < layout.region_len {
            return Err(NetError::RegionTooSmall {
                have: env.region_len(),
                need: layout.region_len,
            });
        }
        if !features::has(features, F_VERSION_1) {
            return Err(NetError::MissingFeatures {
                missing: F_VERSION_1,
                offered: features,
            });
        }
        let event_idx = features::has(features, RING_F_EVENT_IDX);
        env.zero_bytes(0, STATE_PAGE)?;
        env.write_u32(P_VERSION, VERSION)?;
        env.write_u64(P_FEATURES, features)?;
        env.write_u16(P_QUEUE_SIZE, cfg.queue_size)?;
        env.write_u32(P_BUF_SIZE, cfg.buf_size)?;
        env.write_u64(P_REGION_LEN, layout.region_len)?;
        let rx = Virtqueue::init(env, layout.rx, RX_QUEUE, event_idx)?;
        let tx = Virtqueue::init(env, layout.tx, TX_QUEUE, event_idx)?;
        env.write_u32(P_MAGIC, MAGIC)?;
        let me = Self {
            layout,
            rx,
            tx,
            mrg_rxbuf: features::has(features, NET_F_MRG_RXBUF),
        };
        // TX completions are reaped on flush, never by interrupt.
        tx.set_notify(env, false)?;
        me.rx_refill(env)?;
        rx.publish(env)?;
        Ok(me)
    }

    /// Continues a driver whose state is already in the region.
    pub fn attach<E: DriverEnv>(env: &E) -> Result<Self, NetError> {
        if env.read_u32(P_MAGIC)? != MAGIC || env.read_u32(P_VERSION)? != VERSION {
            return Err(NetError::NotInitialised);
        }
        let cfg = NetConfig {
            queue_size: env.read_u16(P_QUEUE_SIZE)?,
            buf_size: env.read_u32(P_BUF_SIZE)?,
        };
        let layout = NetLayout::new(cfg)?;
        if env.region_len() < layout.region_len {
            return Err(NetError::RegionTooSmall {
                have: env.region_len(),
                need: layout.region_len,
            });
        }
        let features = env.read_u64(P_FEATURES)?;
        Ok(Self {
            layout,
            rx: Virtqueue::attach(env, layout.rx, RX_QUEUE)?,
            tx: Virtqueue::attach(env, layout.tx, TX_QUEUE)?,
            mrg_rxbuf: features::has(features, NET_F_MRG_RXBUF),
        })
    }

    /// The layout.
    pub fn layout(&self) -> &NetLayout {
        &self.layout
    }

    /// The receive queue.
    pub fn rx_queue(&self) -> &Virtqueue {
        &self.rx
    }

    /// The transmit queue.
    pub fn tx_queue(&self) -> &Virtqueue {
        &self.tx
    }

    /// Reserves a TX buffer, reaping completions first if none is free. `Ok(None)`:
    /// the ring is full (counted).
    pub fn tx_reserve<E: DriverEnv>(&self, env: &E) -> Result<Option<TxBuf>, NetError> {
        let mut id = self.tx.reserve(env)?;
        if id.is_none() {
            self.tx_reap(env)?;
            id = self.tx.reserve(env)?;
        }
        match id {
            Some(id) => Ok(Some(TxBuf {
                id,
                frame_addr: self.layout.tx_buf(id) + HDR_LEN_MODERN as u64,
                capacity: self.layout.frame_capacity(),
            })),
            None => {
                bump(env, C_TX_RING_FULL, 1)?;
                Ok(None)
            }
        }
    }

    /// Posts a reserved TX buffer holding a `len`-byte frame. Visible to the device
    /// after [`VirtioNet::tx_flush`].
    pub fn tx_commit<E: DriverEnv>(&self, env: &E, buf: TxBuf, len: usize) -> Result<(), NetError> {
        if len > buf.capacity || len > self.layout.frame_capacity() {
            bump(env, C_TX_TOO_LONG, 1)?;
            self.tx.cancel(env, buf.id)?;
            return Err(NetError::FrameTooLong {
                len,
                cap: self.layout.frame_capacity(),
            });
        }
        let hdr = self.layout.tx_buf(buf.id);
        // The 12-byte header: no offloads, num_buffers 0.
        env.write_u64(hdr, 0)?;
        env.write_u32(hdr + 8, 0)?;
        // len <= frame_capacity < 65536.
        let total = (len + HDR_LEN_MODERN) as u32;
        self.tx.commit(env, buf.id, hdr, total, false)?;
        bump(env, C_TX_PACKETS, 1)?;
        bump(env, C_TX_BYTES, len as u64)?;
        Ok(())
    }

    /// Returns a reserved TX buffer unused.
    pub fn tx_cancel<E: DriverEnv>(&self, env: &E, buf: TxBuf) -> Result<(), NetError> {
        Ok(self.tx.cancel(env, buf.id)?)
    }

    /// Publishes the committed TX batch, kicks the device if it wants it, and reaps
    /// completions. Returns whether it kicked.
    pub fn tx_flush<E: DriverEnv>(&self, env: &E) -> Result<bool, NetError> {
        let kicked = self.tx.flush(env)?;
        self.tx_reap(env)?;
        Ok(kicked)
    }

    /// Reclaims completed TX buffers; returns how many.
    pub fn tx_reap<E: DriverEnv>(&self, env: &E) -> Result<usize, NetError> {
        let mut done = 0usize;
        let mut bad = 0u64;
        // Bounded: each pop consumes one used entry, and there are at most size of them.
        for _ in 0..=u32::from(self.tx.size()) {
            match self.tx.pop_used(env) {
                Ok(Some(_)) => done += 1,
                Ok(None) => break,
                Err(e) if e.is_recoverable() => bad += 1,
                Err(e) => {
                    bump(env, C_TX_DEVICE_ERR, bad)?;
                    return Err(e.into());
                }
            }
        }
        bump(env, C_TX_COMPLETED, done as u64)?;
        bump(env, C_TX_DEVICE_ERR, bad)?;
        Ok(done)
    }

    /// Posts every free RX buffer (not published). Returns how many.
    pub fn rx_refill<E: DriverEnv>(&self, env: &E) -> Result<usize, NetError> {
        let mut n = 0;
        while let Some(id) = self.rx.reserve(env)? {
            self.rx.commit(
                env,
                id,
                self.layout.rx_buf(id),
                self.layout.cfg.buf_size,
                true,
            )?;
            n += 1;
        }
        Ok(n)
    }

    /// Hands up to `max` received frames to `f`, then reposts their buffers and
    /// publishes once (kicking if the device wants it). Returns how many frames `f`
    /// saw. The frame memory is only valid during the call of `f`.
    pub fn rx_burst<E: DriverEnv>(
        &self,
        env: &E,
        max: usize,
        mut f: impl FnMut(RxFrame),
    ) -> Result<usize, NetError> {
        let (mut pkts, mut bytes, mut short, mut merged, mut bad) = (0u64, 0u64, 0u64, 0u64, 0u64);
        let mut seen = 0usize;
        let mut result: Result<(), NetError> = Ok(());
        // Each iteration consumes one used entry; at most size are outstanding.
        let limit = max.min(usize::from(self.rx.size()));
        for _ in 0..limit {
            match self.rx.pop_used(env) {
                Ok(Some(u)) => {
                    let len = u.len as usize;
                    if len < HDR_LEN_MODERN {
                        short += 1;
                        continue;
                    }
                    let hdr = self.layout.rx_buf(u.id);
                    if self.mrg_rxbuf {
                        match env.read_u16(hdr + NUM_BUFFERS_OFFSET as u64) {
                            Ok(1) => {}
                            Ok(_) => {
                                merged += 1;
                                continue;
                            }
                            Err(e) => {
                                result = Err(e.into());
                                break;
                            }
                        }
                    }
                    let frame_len = len - HDR_LEN_MODERN;
                    f(RxFrame {
                        addr: hdr + HDR_LEN_MODERN as u64,
                        len: frame_len,
                    });
                    pkts += 1;
                    bytes += frame_len as u64;
                    seen += 1;
                }
                Ok(None) => break,
                Err(e) if e.is_recoverable() => bad += 1,
                Err(e) => {
                    result = Err(e.into());
                    break;
                }
            }
        }
        bump(env, C_RX_PACKETS, pkts)?;
        bump(env, C_RX_BYTES, bytes)?;
        bump(env, C_RX_SHORT, short)?;
        bump(env, C_RX_MERGED, merged)?;
        bump(env, C_RX_DEVICE_ERR, bad)?;
        result?;
        if self.rx_refill(env)? > 0 {
            self.rx.flush(env)?;
        }
        Ok(seen)
    }

    /// Whether received frames are waiting.
    pub fn rx_pending<E: DriverEnv>(&self, env: &E) -> Result<bool, NetError> {
        Ok(self.rx.has_used(env)?)
    }

    /// Turns RX interrupts on (event-driven host) or off (busy poll). Turning them on
    /// returns whether frames raced in (poll again before sleeping).
    pub fn set_rx_notify<E: DriverEnv>(&self, env: &E, on: bool) -> Result<bool, NetError> {
        Ok(self.rx.set_notify(env, on)?)
    }

    /// Reads the counters.
    pub fn stats<E: DriverEnv>(&self, env: &E) -> Result<NetStats, NetError> {
        Ok(NetStats {
            tx_packets: env.read_u64(C_TX_PACKETS)?,
            tx_bytes: env.read_u64(C_TX_BYTES)?,
            tx_completed: env.read_u64(C_TX_COMPLETED)?,
            tx_ring_full: env.read_u64(C_TX_RING_FULL)?,
            tx_too_long: env.read_u64(C_TX_TOO_LONG)?,
            tx_device_errors: env.read_u64(C_TX_DEVICE_ERR)?,
            rx_packets: env.read_u64(C_RX_PACKETS)?,
            rx_bytes: env.read_u64(C_RX_BYTES)?,
            rx_short: env.read_u64(C_RX_SHORT)?,
            rx_merged: env.read_u64(C_RX_MERGED)?,
            rx_device_errors: env.read_u64(C_RX_DEVICE_ERR)?,
            rx_queue: self.rx.counters(env)?,
            tx_queue: self.tx.counters(env)?,
            features: env.read_u64(P_FEATURES)?,
        })
    }
}

#[cfg(test)]
mod tests;
