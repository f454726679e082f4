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
//!
//! # Twin
//!
//! The impl block is derived by `twin-derive`: the data-path methods are
//! `#[fast_path]` entry points of [`VirtioNetTwin`], which the switch's twin runtime
//! holds; two `#[slow_path]` routines run in the driver domain:
//!
//! * `device_error(queue, count)`: at a batch boundary that counted device errors on
//!   a queue (one upcall per queue and batch, never per error), the domain adds them
//!   to its own per-queue count in the private page and records the last error;
//! * `queue_broken(queue)`: the first time a queue turns out broken (an
//!   unrecoverable [`QueueError`] other than a refused memory access or a
//!   caller's bad descriptor), the domain records it and requests a reset, which
//!   [`VirtioNet::reset_requested`] reports (the driver-domain process then ends
//!   and is restarted with a fresh NIC connection).
//!
//! In the driver domain (environment routes [`driver_env::UpcallRoute::Local`]) they
//! run in place; in a twin they are posted, and the domain runs them through
//! [`VirtioNet::dispatch_upcall`]. A twin may touch only what
//! [`NetLayout::twin_access_map`] grants: never the private page.
//!
//! # Fault injection
//!
//! With the `fault-injection` feature (off by default; the project's release binary
//! enables it so that tests can inject faults at run time), [`VirtioNet::tx_flush`]
//! and [`VirtioNet::rx_burst`] first take a pending
//! [`driver_env::InjectedFault`] from the environment (one `take` of a `Cell` per
//! batch in the project's environments) and commit it: `ForbiddenRead` reads the
//! private page (a twin faults, the domain goes on), `WildWrite` writes past the
//! region (always refused), `Panic` panics, `Stuck` spins re-reading the RX used
//! index until an access fails (a watchdog-armed environment makes it fail).

use driver_env::{DriverEnv, DriverMem, MemFault};
use driver_virtqueue::{QueueCounters, QueueError, Virtqueue};
use twin_wire::features::{self, F_VERSION_1, NET_F_MRG_RXBUF, RING_F_EVENT_IDX};
use twin_wire::net_hdr::{HDR_LEN_MODERN, NUM_BUFFERS_OFFSET};

use crate::layout::{
    LayoutError, NetConfig, NetLayout, COUNTERS_LEN, PRIVATE_PAGE, RX_QUEUE, STATE_CONFIG_LEN,
    STATE_PAGE, TX_QUEUE,
};

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
// The twin's access map (`NetLayout::twin_access_map`) follows these.
const _: () = assert!(P_REGION_LEN + 8 <= STATE_CONFIG_LEN && C_TX_PACKETS == STATE_CONFIG_LEN);
const _: () = assert!(C_TX_COMPLETED + 8 == STATE_CONFIG_LEN + COUNTERS_LEN);

// Private page fields (offsets from `NetLayout::private`; driver domain only).
/// u64: 1 once a slow-path routine requested a device reset.
const V_RESET_REQUESTED: u64 = 0;
/// u64: bit q set when queue q was reported broken.
const V_BROKEN_QUEUES: u64 = 8;
/// u64: the last device-error report, `LAST_ERROR_VALID | queue << 32 | count`.
const V_LAST_ERROR: u64 = 16;
/// u64 per queue (RX, TX): device errors reported.
const V_DEVICE_ERRORS: u64 = 24;
const LAST_ERROR_VALID: u64 = 1 << 48;
const _: () = assert!(V_DEVICE_ERRORS + 16 <= PRIVATE_PAGE);

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
    /// A slow-path routine was asked about a queue the driver does not have.
    #[error("no queue {0}")]
    UnknownQueue(u16),
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

/// What the driver domain's slow-path routines recorded in its private page
/// ([`VirtioNet::domain_errors`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DomainErrors {
    /// RX device errors reported by fast paths.
    pub rx_device_errors: u64,
    /// TX device errors reported by fast paths.
    pub tx_device_errors: u64,
    /// The last report: queue and how many errors that batch counted.
    pub last_error: Option<(u16, u32)>,
    /// The RX queue was reported broken.
    pub rx_broken: bool,
    /// The TX queue was reported broken.
    pub tx_broken: bool,
    /// A device reset was requested.
    pub reset_requested: bool,
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
    /// Queues (bit per device queue) this handle reported broken already.
    reported_broken: u8,
}

/// Whether `e` means the queue is broken for good: not recoverable, and neither a
/// refused memory access (an environment's verdict on this instance, not on the
/// queue) nor a descriptor the caller did not reserve (a caller's bug).
fn breaks_queue(e: &QueueError) -> bool {
    !e.is_recoverable() && !matches!(e, QueueError::Access(_) | QueueError::NotReserved(_))
}

fn queue_bit(queue: u16) -> Result<u64, NetError> {
    match queue {
        RX_QUEUE | TX_QUEUE => Ok(1 << queue),
        q => Err(NetError::UnknownQueue(q)),
    }
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

#[twin_derive::twin_driver(twin = VirtioNetTwin, upcall = VirtioNetUpcall)]
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
        env.zero_bytes(layout.private, PRIVATE_PAGE)?;
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
            reported_broken: 0,
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
    #[fast_path]
    pub fn layout(&self) -> &NetLayout {
        &self.layout
    }

    /// The receive queue.
    #[fast_path]
    pub fn rx_queue(&self) -> &Virtqueue {
        &self.rx
    }

    /// The transmit queue.
    #[fast_path]
    pub fn tx_queue(&self) -> &Virtqueue {
        &self.tx
    }

    /// Reserves a TX buffer, reaping completions first if none is free. `Ok(None)`:
    /// the ring is full (counted).
    #[fast_path]
    pub fn tx_reserve<E: DriverEnv>(&mut self, env: &E) -> Result<Option<TxBuf>, NetError> {
        let r = self.tx.reserve(env);
        let mut id = self.q(env, TX_QUEUE, r)?;
        if id.is_none() {
            self.tx_reap(env)?;
            let r = self.tx.reserve(env);
            id = self.q(env, TX_QUEUE, r)?;
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
    #[fast_path]
    pub fn tx_commit<E: DriverEnv>(
        &mut self,
        env: &E,
        buf: TxBuf,
        len: usize,
    ) -> Result<(), NetError> {
        if len > buf.capacity || len > self.frame_capacity {
            self.pending.tx_too_long += 1;
            let r = self.tx.cancel(env, buf.id);
            self.q(env, TX_QUEUE, r)?;
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
        let r = self.tx.commit(env, buf.id, hdr, total, false);
        self.q(env, TX_QUEUE, r)?;
        self.pending.tx_packets += 1;
        self.pending.tx_bytes += len as u64;
        Ok(())
    }

    /// Returns a reserved TX buffer unused.
    #[fast_path]
    pub fn tx_cancel<E: DriverEnv>(&mut self, env: &E, buf: TxBuf) -> Result<(), NetError> {
        let r = self.tx.cancel(env, buf.id);
        self.q(env, TX_QUEUE, r)
    }

    /// Publishes the committed TX batch, kicks the device if it wants it, reaps
    /// completions and writes the counters back (a batch boundary). Returns whether
    /// it kicked.
    #[fast_path]
    pub fn tx_flush<E: DriverEnv>(&mut self, env: &E) -> Result<bool, NetError> {
        #[cfg(feature = "fault-injection")]
        if let Some(fault) = env.take_injected_fault() {
            self.commit_injected_fault(env, fault)?;
        }
        let r = self.tx.flush(env);
        let kicked = self.q(env, TX_QUEUE, r)?;
        let reaped = self.tx_reap(env);
        self.sync(env)?;
        reaped?;
        Ok(kicked)
    }

    /// Reclaims completed TX buffers; returns how many. Counted in the handle until
    /// the next batch boundary.
    #[fast_path]
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
                    return Err(self.queue_error(env, TX_QUEUE, e));
                }
            }
        }
        self.pending.tx_completed += done as u64;
        Ok(done)
    }

    /// Writes counter increments and both queues' cached state back to the region:
    /// afterwards the region is the source of truth. If the batch counted device
    /// errors on a queue, reports them to the driver domain (one `device_error`
    /// upcall per queue).
    #[fast_path]
    pub fn sync<E: DriverEnv>(&mut self, env: &E) -> Result<(), NetError> {
        let mut device_errors = [0u64; 2];
        if self.pending != Pending::default() {
            let p = self.pending;
            for (off, by) in p.fields() {
                bump(env, off, by)?;
            }
            self.pending = Pending::default();
            device_errors = [p.rx_device_errors, p.tx_device_errors];
        }
        let r = self.tx.sync(env);
        self.q(env, TX_QUEUE, r)?;
        let r = self.rx.sync(env);
        self.q(env, RX_QUEUE, r)?;
        for (queue, n) in [(RX_QUEUE, device_errors[0]), (TX_QUEUE, device_errors[1])] {
            if n != 0 {
                self.device_error(env, queue, u32::try_from(n).unwrap_or(u32::MAX))?;
            }
        }
        Ok(())
    }

    /// Posts every free RX buffer (not published). Returns how many.
    #[fast_path]
    pub fn rx_refill<E: DriverEnv>(&mut self, env: &E) -> Result<usize, NetError> {
        let mut n = 0;
        let buf_size = self.layout.cfg.buf_size;
        let pool = self.layout.pool;
        // Buffer i of the RX queue belongs to descriptor i (see `layout`).
        while self.rx.num_free() > 0 {
            let r = self.rx.reserve(env);
            let Some(id) = self.q(env, RX_QUEUE, r)? else {
                break;
            };
            let addr = pool + u64::from(id) * u64::from(buf_size);
            let r = self.rx.commit(env, id, addr, buf_size, true);
            self.q(env, RX_QUEUE, r)?;
            n += 1;
        }
        Ok(n)
    }

    /// Hands up to `max` received frames to `f`, then reposts their buffers and
    /// publishes once (kicking if the device wants it); a batch boundary. Returns
    /// how many frames `f` saw. The frame memory is only valid during the call of
    /// `f`.
    #[fast_path]
    pub fn rx_burst<E: DriverEnv>(
        &mut self,
        env: &E,
        max: usize,
        mut f: impl FnMut(RxFrame),
    ) -> Result<usize, NetError> {
        #[cfg(feature = "fault-injection")]
        if let Some(fault) = env.take_injected_fault() {
            self.commit_injected_fault(env, fault)?;
        }
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
                    result = Err(self.queue_error(env, RX_QUEUE, e));
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
                        result = Err(self.queue_error(env, RX_QUEUE, e));
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
    #[fast_path]
    pub fn rx_pending<E: DriverEnv>(&self, env: &E) -> Result<bool, NetError> {
        Ok(self.rx.has_used(env)?)
    }

    /// Turns RX interrupts on (event-driven host) or off (busy poll); a batch
    /// boundary. Turning them on returns whether frames raced in (poll again before
    /// sleeping).
    #[fast_path]
    pub fn set_rx_notify<E: DriverEnv>(&mut self, env: &E, on: bool) -> Result<bool, NetError> {
        let r = self.rx.set_notify(env, on);
        let raced = self.q(env, RX_QUEUE, r)?;
        self.sync(env)?;
        Ok(raced)
    }

    /// Reads the counters (the state page's plus increments not yet written back).
    #[fast_path]
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

    /// Passes a queue result through; on an error that breaks the queue, reports it
    /// to the driver domain (see [`VirtioNet::queue_error`]).
    #[inline]
    fn q<T, E: DriverEnv>(
        &mut self,
        env: &E,
        queue: u16,
        r: Result<T, QueueError>,
    ) -> Result<T, NetError> {
        r.map_err(|e| self.queue_error(env, queue, e))
    }

    /// Converts a queue error. The first time this handle sees `queue` broken, it
    /// calls the `queue_broken` slow path (the original error is returned either
    /// way; a failure of the routine itself, possible only in the driver domain,
    /// is dropped in its favour).
    fn queue_error<E: DriverEnv>(&mut self, env: &E, queue: u16, e: QueueError) -> NetError {
        if breaks_queue(&e) {
            let bit = 1u8 << (queue & 7);
            if self.reported_broken & bit == 0 {
                self.reported_broken |= bit;
                let _ = self.queue_broken(env, queue);
            }
        }
        e.into()
    }

    /// Slow path: a fast path counted `count` device errors on `queue` in one
    /// batch. Adds them to the driver domain's per-queue count and records them as
    /// the last error.
    #[slow_path]
    fn device_error<E: DriverEnv>(&self, env: &E, queue: u16, count: u32) -> Result<(), NetError> {
        queue_bit(queue)?;
        let private = self.layout.private;
        bump(
            env,
            private + V_DEVICE_ERRORS + 8 * u64::from(queue),
            u64::from(count),
        )?;
        let last = LAST_ERROR_VALID | (u64::from(queue) << 32) | u64::from(count);
        env.write_u64(private + V_LAST_ERROR, last)?;
        Ok(())
    }

    /// Slow path: `queue` turned out broken. Records it and requests a device reset
    /// (the driver domain restarts with a fresh NIC connection).
    #[slow_path]
    fn queue_broken<E: DriverEnv>(&self, env: &E, queue: u16) -> Result<(), NetError> {
        let bit = queue_bit(queue)?;
        let at = self.layout.private + V_BROKEN_QUEUES;
        env.write_u64(at, env.read_u64(at)? | bit)?;
        env.write_u64(self.layout.private + V_RESET_REQUESTED, 1)?;
        Ok(())
    }

    /// Whether a slow-path routine requested a device reset (driver domain only:
    /// reads the private page).
    pub fn reset_requested<E: DriverEnv>(&self, env: &E) -> Result<bool, NetError> {
        Ok(env.read_u64(self.layout.private + V_RESET_REQUESTED)? != 0)
    }

    /// What the slow-path routines recorded (driver domain only: reads the private
    /// page).
    pub fn domain_errors<E: DriverEnv>(&self, env: &E) -> Result<DomainErrors, NetError> {
        let private = self.layout.private;
        let broken = env.read_u64(private + V_BROKEN_QUEUES)?;
        let last = env.read_u64(private + V_LAST_ERROR)?;
        Ok(DomainErrors {
            rx_device_errors: env.read_u64(private + V_DEVICE_ERRORS)?,
            tx_device_errors: env.read_u64(private + V_DEVICE_ERRORS + 8)?,
            // Bits 32..48 and 0..32 by construction.
            last_error: (last & LAST_ERROR_VALID != 0)
                .then_some(((last >> 32) as u16, last as u32)),
            rx_broken: broken & (1 << RX_QUEUE) != 0,
            tx_broken: broken & (1 << TX_QUEUE) != 0,
            reset_requested: env.read_u64(private + V_RESET_REQUESTED)? != 0,
        })
    }

    /// Commits an injected fault (feature `fault-injection`). `Ok`: the
    /// misbehaviour was allowed here (a forbidden read in the driver domain) and the
    /// caller goes on.
    #[cfg(feature = "fault-injection")]
    fn commit_injected_fault<E: DriverEnv>(
        &self,
        env: &E,
        fault: driver_env::InjectedFault,
    ) -> Result<(), NetError> {
        // Spinning on the receive queue's used ring (flags and index).
        driver_env::commit_injected_fault(
            env,
            fault,
            "virtio-net",
            self.layout.private + V_RESET_REQUESTED,
            self.layout.rx.used,
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests;
