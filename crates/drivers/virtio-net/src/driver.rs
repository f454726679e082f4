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
//! state page; the handle accumulates increments and writes them (and the queues'
//! cached indices) back once per batch: at the end of [`VirtioNet::tx_flush`],
//! [`VirtioNet::rx_burst`] and [`VirtioNet::set_rx_notify`]. Nothing allocates.

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

/// Counter increments not yet written to the state page.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Pending {
    tx_packets: u64,
    tx_bytes: u64,
    tx_completed: u64,
    tx_ring_full: u64,
    tx_too_long: u64,
    tx_device_errors: u64,
    rx_packets: u64,
    rx_bytes: u64,
    rx_short: u64,
    rx_merged: u64,
    rx_device_errors: u64,
}

impl Pending {
    fn fields(&self) -> [(u64, u64); 11] {
        [
            (C_TX_PACKETS, self.tx_packets),
            (C_TX_BYTES, self.tx_bytes),
            (C_TX_COMPLETED, self.tx_completed),
            (C_TX_RING_FULL, self.tx_ring_full),
            (C_TX_TOO_LONG, self.tx_too_long),
            (C_TX_DEVICE_ERR, self.tx_device_errors),
            (C_RX_PACKETS, self.rx_packets),
            (C_RX_BYTES, self.rx_bytes),
            (C_RX_SHORT, self.rx_short),
            (C_RX_MERGED, self.rx_merged),
            (C_RX_DEVICE_ERR, self.rx_device_errors),
        ]
    }
}

/// A virtio-net driver instance. Its state is in the region; the handle caches the
/// layout (validated once, at init or attach), the queues' indices and counter
/// increments, and writes them back at every batch boundary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VirtioNet {
    layout: NetLayout,
    rx: Virtqueue,
    tx: Virtqueue,
    mrg_rxbuf: bool,
    /// The frame capacity of a buffer, computed once.
    frame_capacity: usize,
    pending: Pending,
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
    env.write_u64(off, env.read_u64(off)?.wrapping_add(by))
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
        for id in 0..cfg.queue_size {
            env.zero_bytes(layout.tx_buf(id), HDR_LEN_MODERN as u64)?;
        }
        env.write_u32(P_MAGIC, MAGIC)?;
        let mut me = Self::with(layout, rx, tx, features);
        // TX completions are reaped on flush, never by interrupt.
        me.tx.set_notify(env, false)?;
        me.rx_refill(env)?;
        me.rx.publish(env)?;
        Ok(me)
    }

    fn with(layout: NetLayout, rx: Virtqueue, tx: Virtqueue, features: u64) -> Self {
        Self {
            layout,
            rx,
            tx,
            mrg_rxbuf: features::has(features, NET_F_MRG_RXBUF),
            frame_capacity: layout.frame_capacity(),
            pending: Pending::default(),
        }
    }

    /// Continues a driver whose state is already in the region (left at a batch
    /// boundary by another handle). Everything read is validated.
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
        let rx = Virtqueue::attach(env, layout.rx, RX_QUEUE)?;
        let tx = Virtqueue::attach(env, layout.tx, TX_QUEUE)?;
        Ok(Self::with(layout, rx, tx, features))
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
    pub fn tx_reserve<E: DriverEnv>(&mut self, env: &E) -> Result<Option<TxBuf>, NetError> {
        let mut id = self.tx.reserve(env)?;
        if id.is_none() {
            self.tx_reap(env)?;
            id = self.tx.reserve(env)?;
        }
        match id {
            Some(id) => Ok(Some(TxBuf {
                id,
                frame_addr: self.layout.tx_buf(id) + HDR_LEN_MODERN as u64,
                capacity: self.frame_capacity,
            })),
            None => {
                self.pending.tx_ring_full += 1;
                Ok(None)
            }
        }
    }

    /// Posts a reserved TX buffer holding a `len`-byte frame. Visible to the device
    /// after [`VirtioNet::tx_flush`].
    pub fn tx_commit<E: DriverEnv>(
        &mut self,
        env: &E,
        buf: TxBuf,
        len: usize,
    ) -> Result<(), NetError> {
        if len > buf.capacity || len > self.frame_capacity {
            self.pending.tx_too_long += 1;
            self.tx.cancel(env, buf.id)?;
            return Err(NetError::FrameTooLong {
                len,
                cap: self.frame_capacity,
            });
        }
        // The 12-byte header (no offloads, num_buffers 0) was zeroed at init and the
        // host only writes the frame area; the device may only read TX buffers (if it
        // scribbles on a header anyway, only its own view of the frame suffers).
        let hdr = self.layout.tx_buf(buf.id);
        // len <= frame_capacity < 65536.
        let total = (len + HDR_LEN_MODERN) as u32;
        self.tx.commit(env, buf.id, hdr, total, false)?;
        self.pending.tx_packets += 1;
        self.pending.tx_bytes += len as u64;
        Ok(())
    }

    /// Returns a reserved TX buffer unused.
    pub fn tx_cancel<E: DriverEnv>(&mut self, env: &E, buf: TxBuf) -> Result<(), NetError> {
        Ok(self.tx.cancel(env, buf.id)?)
    }

    /// Publishes the committed TX batch, kicks the device if it wants it, reaps
    /// completions and writes the counters back (a batch boundary). Returns whether
    /// it kicked.
    pub fn tx_flush<E: DriverEnv>(&mut self, env: &E) -> Result<bool, NetError> {
        let kicked = self.tx.flush(env)?;
        let reaped = self.tx_reap(env);
        self.sync(env)?;
        reaped?;
        Ok(kicked)
    }

    /// Reclaims completed TX buffers; returns how many. Counted in the handle until
    /// the next batch boundary.
    pub fn tx_reap<E: DriverEnv>(&mut self, env: &E) -> Result<usize, NetError> {
        let mut done = 0usize;
        // Bounded: each pop consumes one used entry, and there are at most size of them.
        for _ in 0..=u32::from(self.tx.size()) {
            match self.tx.pop_used(env) {
                Ok(Some(_)) => done += 1,
                Ok(None) => break,
                Err(e) if e.is_recoverable() => self.pending.tx_device_errors += 1,
                Err(e) => {
                    self.pending.tx_completed += done as u64;
                    return Err(e.into());
                }
            }
        }
        self.pending.tx_completed += done as u64;
        Ok(done)
    }

    /// Writes counter increments and both queues' cached state back to the region:
    /// afterwards the region is the source of truth.
    pub fn sync<E: DriverEnv>(&mut self, env: &E) -> Result<(), NetError> {
        if self.pending != Pending::default() {
            for (off, by) in self.pending.fields() {
                bump(env, off, by)?;
            }
            self.pending = Pending::default();
        }
        self.tx.sync(env)?;
        self.rx.sync(env)?;
        Ok(())
    }

    /// Posts every free RX buffer (not published). Returns how many.
    pub fn rx_refill<E: DriverEnv>(&mut self, env: &E) -> Result<usize, NetError> {
        let mut n = 0;
        let buf_size = self.layout.cfg.buf_size;
        let pool = self.layout.pool;
        // Buffer i of the RX queue belongs to descriptor i (see `layout`).
        while self.rx.num_free() > 0 {
            let Some(id) = self.rx.reserve(env)? else {
                break;
            };
            let addr = pool + u64::from(id) * u64::from(buf_size);
            self.rx.commit(env, id, addr, buf_size, true)?;
            n += 1;
        }
        Ok(n)
    }

    /// Hands up to `max` received frames to `f`, then reposts their buffers and
    /// publishes once (kicking if the device wants it); a batch boundary. Returns
    /// how many frames `f` saw. The frame memory is only valid during the call of
    /// `f`.
    pub fn rx_burst<E: DriverEnv>(
        &mut self,
        env: &E,
        max: usize,
        mut f: impl FnMut(RxFrame),
    ) -> Result<usize, NetError> {
        let mut seen = 0usize;
        let mut bytes = 0u64;
        let mut result: Result<(), NetError> = Ok(());
        // Each iteration consumes one used entry; at most size are outstanding.
        let limit = max.min(usize::from(self.rx.size()));
        for _ in 0..limit {
            match self.rx.pop_used(env) {
                Ok(Some(u)) => {
                    let len = u.len as usize;
                    if len < HDR_LEN_MODERN {
                        self.pending.rx_short += 1;
                        continue;
                    }
                    let hdr = self.layout.rx_buf(u.id);
                    if self.mrg_rxbuf {
                        match env.read_u16(hdr + NUM_BUFFERS_OFFSET as u64) {
                            Ok(1) => {}
                            Ok(_) => {
                                self.pending.rx_merged += 1;
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
                    bytes += frame_len as u64;
                    seen += 1;
                }
                Ok(None) => break,
                Err(e) if e.is_recoverable() => self.pending.rx_device_errors += 1,
                Err(e) => {
                    result = Err(e.into());
                    break;
                }
            }
        }
        self.pending.rx_packets += seen as u64;
        self.pending.rx_bytes += bytes;
        if result.is_ok() && self.rx.num_free() > 0 {
            match self.rx_refill(env) {
                // flush() syncs the queue; sync() below writes the rest.
                Ok(n) if n > 0 => {
                    if let Err(e) = self.rx.flush(env) {
                        result = Err(e.into());
                    }
                }
                Ok(_) => {}
                Err(e) => result = Err(e),
            }
        }
        self.sync(env)?;
        result?;
        Ok(seen)
    }

    /// Whether received frames are waiting.
    pub fn rx_pending<E: DriverEnv>(&self, env: &E) -> Result<bool, NetError> {
        Ok(self.rx.has_used(env)?)
    }

    /// Turns RX interrupts on (event-driven host) or off (busy poll); a batch
    /// boundary. Turning them on returns whether frames raced in (poll again before
    /// sleeping).
    pub fn set_rx_notify<E: DriverEnv>(&mut self, env: &E, on: bool) -> Result<bool, NetError> {
        let raced = self.rx.set_notify(env, on)?;
        self.sync(env)?;
        Ok(raced)
    }

    /// Reads the counters (the state page's plus increments not yet written back).
    pub fn stats<E: DriverEnv>(&self, env: &E) -> Result<NetStats, NetError> {
        let p = &self.pending;
        let r = |off: u64, add: u64| -> Result<u64, NetError> {
            Ok(env.read_u64(off)?.wrapping_add(add))
        };
        Ok(NetStats {
            tx_packets: r(C_TX_PACKETS, p.tx_packets)?,
            tx_bytes: r(C_TX_BYTES, p.tx_bytes)?,
            tx_completed: r(C_TX_COMPLETED, p.tx_completed)?,
            tx_ring_full: r(C_TX_RING_FULL, p.tx_ring_full)?,
            tx_too_long: r(C_TX_TOO_LONG, p.tx_too_long)?,
            tx_device_errors: r(C_TX_DEVICE_ERR, p.tx_device_errors)?,
            rx_packets: r(C_RX_PACKETS, p.rx_packets)?,
            rx_bytes: r(C_RX_BYTES, p.rx_bytes)?,
            rx_short: r(C_RX_SHORT, p.rx_short)?,
            rx_merged: r(C_RX_MERGED, p.rx_merged)?,
            rx_device_errors: r(C_RX_DEVICE_ERR, p.rx_device_errors)?,
            rx_queue: self.rx.counters(env)?,
            tx_queue: self.tx.counters(env)?,
            features: env.read_u64(P_FEATURES)?,
        })
    }
}

#[cfg(test)]
mod tests;
