//! The AF_XDP data path and its counters.
//!
//! Receive: [`AfXdp::rx_burst`] hands each frame of the receive ring (its
//! driver address and length) to a callback, puts its chunk back on the fill
//! ring, and publishes both rings once. Transmit: [`AfXdp::tx_reserve`] pops a
//! free transmit chunk, the host copies a frame into it, [`AfXdp::tx_commit`]
//! puts it on the transmit ring; [`AfXdp::tx_flush`] publishes the batch, wakes
//! the kernel while it asks for it (the doorbell: a `send` of nothing on the
//! socket) and reaps completions.
//!
//! Chunk ownership is a table in the region, one word per chunk: the kernel's
//! for receiving, free for transmitting, the host's between reserve and commit,
//! the kernel's for transmitting. A descriptor from the kernel naming a chunk it
//! does not hold, or outside the UMEM, is counted (`kernel_errors`) and nothing
//! of it used; a chunk-table entry that makes no sense (only another instance of
//! this driver, a compromised domain, writes the table) is counted
//! (`bad_state`), skipped, and reported to the domain, which asks to be
//! restarted. Counters are accumulated in the handle and written back, with the
//! free-stack depth, at every batch boundary.
//!
//! # Twin
//!
//! The impl block is derived by `twin-derive`: the data-path methods are
//! `#[fast_path]` entries of [`AfXdpTwin`]; two `#[slow_path]` routines run in
//! the driver domain:
//!
//! * `kernel_error(count)`: a batch counted descriptors or indexes from the
//!   kernel that failed the checks; the domain keeps the total and the last
//!   batch's count in its private page;
//! * `state_corrupt(count)`: a batch found chunk-table entries that make no
//!   sense; the domain records it and requests a restart
//!   ([`AfXdp::reset_requested`]).
//!
//! # Fault injection
//!
//! As in the virtio-net driver: with the `fault-injection` feature,
//! [`AfXdp::rx_burst`] and [`AfXdp::tx_flush`] first commit a pending
//! [`driver_env::InjectedFault`].

use driver_env::ring_record;
pub use driver_env::ring_record::DomainErrors;
use driver_env::{DriverEnv, MemFault};
pub use driver_env::{RxFrame, TxChunk};

use crate::layout::{
    XdpLayout, XdpLayoutError, FRAME_SIZE, PRIVATE_PAGE, STATE_CONFIG_LEN, STATE_PAGE,
    STATE_RW_LEN, TX_QUEUE,
};

const MAGIC: u32 = 0x5458_4431; // "TXD1"
const VERSION: u32 = 1;

// State page: configuration (read-only for a twin).
const P_MAGIC: u64 = 0;
const P_VERSION: u64 = 4;
const P_FRAMES: u64 = 8;
const P_ENTRIES: u64 = 12;
const P_LEN: u64 = 16;
// Counters (u64 each) and the free-stack depth (u32).
const C_RX_PACKETS: u64 = 64;
const C_RX_BYTES: u64 = 72;
const C_RX_TOO_SHORT: u64 = 80;
const C_TX_PACKETS: u64 = 88;
const C_TX_BYTES: u64 = 96;
const C_TX_COMPLETED: u64 = 104;
const C_TX_NO_CHUNK: u64 = 112;
const C_TX_TOO_LONG: u64 = 120;
const C_KERNEL_ERRORS: u64 = 128;
const C_BAD_STATE: u64 = 136;
const S_FREE_TOP: u64 = 184;
const _: () = assert!(P_LEN + 8 <= STATE_CONFIG_LEN && C_RX_PACKETS == STATE_CONFIG_LEN);
const _: () = assert!(S_FREE_TOP + 4 <= STATE_CONFIG_LEN + STATE_RW_LEN);

// Private page (from the layout's `private`; driver domain only): the
// slow paths' record, `driver_env::ring_record`.
const _: () = assert!(ring_record::LEN <= PRIVATE_PAGE);

/// `XDP_RING_NEED_WAKEUP`.
const NEED_WAKEUP: u32 = 1;
/// The shortest frame handed on (an Ethernet header).
const MIN_FRAME: u32 = 14;
/// Frames the kernel transmits per wake-up in copy mode (`TX_BATCH_SIZE`).
const KERNEL_TX_BATCH: u32 = 32;

/// Who holds a chunk (the chunk table's words).
mod holder {
    /// On the fill or receive ring: the kernel's until received.
    pub const KERNEL_RX: u32 = 1;
    /// Free for a frame to transmit.
    pub const FREE_TX: u32 = 2;
    /// Reserved by the host, between reserve and commit.
    pub const HOST: u32 = 3;
    /// On the transmit ring: the kernel's until completed.
    pub const KERNEL_TX: u32 = 4;
}

/// Error of this module.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum XdpDriverError {
    /// A region access was refused.
    #[error("driver memory access failed")]
    Access(#[from] MemFault),
    /// The layout is invalid.
    #[error("invalid driver layout")]
    Layout(#[from] XdpLayoutError),
    /// The space is smaller than the layout.
    #[error("space of {have:#x} bytes is smaller than the {need:#x} the layout needs")]
    RegionTooSmall {
        /// Space size.
        have: u64,
        /// Needed size.
        need: u64,
    },
    /// The region holds no initialised driver of this layout.
    #[error("the region holds no AF_XDP driver of this layout")]
    NotInitialised,
    /// The free-stack depth in the region is impossible.
    #[error("free-stack depth {0} is impossible")]
    BadFreeTop(u32),
    /// A chunk handed to commit or cancel is not one this handle reserved.
    #[error("chunk {0} was not reserved")]
    NotReserved(u32),
}

/// Counters of one driver (the region's, shared by every instance).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct XdpStats {
    /// Frames received and handed on.
    pub rx_packets: u64,
    /// Their bytes.
    pub rx_bytes: u64,
    /// Frames shorter than an Ethernet header (dropped).
    pub rx_too_short: u64,
    /// Frames committed for transmission.
    pub tx_packets: u64,
    /// Their bytes.
    pub tx_bytes: u64,
    /// Transmit chunks the kernel completed.
    pub tx_completed: u64,
    /// `tx_reserve` found no free chunk.
    pub tx_no_chunk: u64,
    /// Frames longer than a chunk (refused).
    pub tx_too_long: u64,
    /// Descriptors and indexes from the kernel that failed the checks.
    pub kernel_errors: u64,
    /// Chunk-table entries that made no sense.
    pub bad_state: u64,
}

/// Counter increments not yet written to the state page.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Pending {
    rx_packets: u64,
    rx_bytes: u64,
    rx_too_short: u64,
    tx_packets: u64,
    tx_bytes: u64,
    tx_completed: u64,
    tx_no_chunk: u64,
    tx_too_long: u64,
    kernel_errors: u64,
    bad_state: u64,
}

impl Pending {
    fn fields(&self) -> [(u64, u64); 10] {
        [
            (C_RX_PACKETS, self.rx_packets),
            (C_RX_BYTES, self.rx_bytes),
            (C_RX_TOO_SHORT, self.rx_too_short),
            (C_TX_PACKETS, self.tx_packets),
            (C_TX_BYTES, self.tx_bytes),
            (C_TX_COMPLETED, self.tx_completed),
            (C_TX_NO_CHUNK, self.tx_no_chunk),
            (C_TX_TOO_LONG, self.tx_too_long),
            (C_KERNEL_ERRORS, self.kernel_errors),
            (C_BAD_STATE, self.bad_state),
        ]
    }
}

/// An AF_XDP driver instance. The handle caches the layout (computed by the
/// host from its own configuration), its side of each ring's index, the
/// free-stack depth and counter increments, and writes them back at every batch
/// boundary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AfXdp {
    layout: XdpLayout,
    mask: u32,
    rx_cons: u32,
    fill_prod: u32,
    tx_prod: u32,
    comp_cons: u32,
    /// Frames committed since the transmit producer was last published.
    tx_unpublished: u32,
    free_top: u32,
    pending: Pending,
}

#[twin_derive::twin_driver(twin = AfXdpTwin, upcall = AfXdpUpcall)]
impl AfXdp {
    /// Initialises a fresh space for `layout` (a socket just bound): the
    /// configuration, the chunk tables, and the receive half of the UMEM on the
    /// fill ring (published).
    pub fn init<E: DriverEnv>(env: &E, layout: XdpLayout) -> Result<Self, XdpDriverError> {
        let layout = XdpLayout::new(layout.cfg)?;
        if env.region_len() < layout.len {
            return Err(XdpDriverError::RegionTooSmall {
                have: env.region_len(),
                need: layout.len,
            });
        }
        let frames = layout.cfg.frames;
        let half = frames / 2;
        env.zero_bytes(0, STATE_PAGE)?;
        env.zero_bytes(layout.private, PRIVATE_PAGE)?;
        env.write_u32(P_VERSION, VERSION)?;
        env.write_u32(P_FRAMES, frames)?;
        env.write_u32(P_ENTRIES, layout.entries)?;
        env.write_u64(P_LEN, layout.len)?;
        for c in 0..frames {
            let h = if c < half {
                holder::KERNEL_RX
            } else {
                holder::FREE_TX
            };
            env.write_u32(layout.holders + u64::from(c) * 4, h)?;
        }
        // The lowest transmit chunk on top.
        for i in 0..half {
            env.write_u32(layout.free_stack + u64::from(i) * 4, frames - 1 - i)?;
        }
        env.write_u32(S_FREE_TOP, half)?;
        env.write_u32(P_MAGIC, MAGIC)?;
        let mut me = Self::with(env, layout, half)?;
        for c in 0..half {
            me.put_fill(env, c)?;
        }
        env.store_release_u32(layout.fill.producer, me.fill_prod)?;
        Ok(me)
    }

    /// The handle over `layout` with each ring's index read from the ring.
    fn with<E: DriverEnv>(
        env: &E,
        layout: XdpLayout,
        free_top: u32,
    ) -> Result<Self, XdpDriverError> {
        Ok(Self {
            mask: layout.entries - 1,
            rx_cons: env.read_u32(layout.rx.consumer)?,
            fill_prod: env.read_u32(layout.fill.producer)?,
            tx_prod: env.read_u32(layout.tx.producer)?,
            comp_cons: env.read_u32(layout.completion.consumer)?,
            tx_unpublished: 0,
            free_top,
            pending: Pending::default(),
            layout,
        })
    }

    /// Continues the driver whose state is in the space (left at a batch
    /// boundary by another instance). `layout` is the host's own; the region's
    /// configuration must match it.
    pub fn attach<E: DriverEnv>(env: &E, layout: XdpLayout) -> Result<Self, XdpDriverError> {
        let layout = XdpLayout::new(layout.cfg)?;
        if env.region_len() < layout.len {
            return Err(XdpDriverError::RegionTooSmall {
                have: env.region_len(),
                need: layout.len,
            });
        }
        if env.read_u32(P_MAGIC)? != MAGIC
            || env.read_u32(P_VERSION)? != VERSION
            || env.read_u32(P_FRAMES)? != layout.cfg.frames
            || env.read_u32(P_ENTRIES)? != layout.entries
            || env.read_u64(P_LEN)? != layout.len
        {
            return Err(XdpDriverError::NotInitialised);
        }
        let free_top = env.read_u32(S_FREE_TOP)?;
        if free_top > layout.entries {
            return Err(XdpDriverError::BadFreeTop(free_top));
        }
        Self::with(env, layout, free_top)
    }

    /// The layout.
    #[fast_path]
    pub fn layout(&self) -> &XdpLayout {
        &self.layout
    }

    /// Puts chunk `c` on the fill ring (not published).
    fn put_fill<E: DriverEnv>(&mut self, env: &E, c: u32) -> Result<(), MemFault> {
        let fill = &self.layout.fill;
        let at = fill.desc + u64::from(self.fill_prod & (fill.entries - 1)) * 8;
        env.write_u64(at, u64::from(c) * u64::from(FRAME_SIZE))?;
        self.fill_prod = self.fill_prod.wrapping_add(1);
        Ok(())
    }

    /// The chunk a UMEM address (as the kernel writes it) is in, if any.
    fn chunk_of(&self, umem_addr: u64) -> Option<u32> {
        let c = umem_addr / u64::from(FRAME_SIZE);
        // Fits: frames <= 65536.
        (c < u64::from(self.layout.cfg.frames)).then_some(c as u32)
    }

    fn holder<E: DriverEnv>(&self, env: &E, c: u32) -> Result<u32, MemFault> {
        env.read_u32(self.layout.holders + u64::from(c) * 4)
    }

    fn set_holder<E: DriverEnv>(&self, env: &E, c: u32, h: u32) -> Result<(), MemFault> {
        env.write_u32(self.layout.holders + u64::from(c) * 4, h)
    }

    /// Hands up to `max` received frames to `f` (driver address and length; the
    /// memory is valid during the call), puts their chunks back on the fill
    /// ring, and publishes both rings; a batch boundary. Returns the frames `f`
    /// saw.
    #[fast_path]
    pub fn rx_burst<E: DriverEnv>(
        &mut self,
        env: &E,
        max: usize,
        mut f: impl FnMut(RxFrame),
    ) -> Result<usize, XdpDriverError> {
        #[cfg(feature = "fault-injection")]
        if let Some(fault) = env.take_injected_fault() {
            self.commit_injected_fault(env, fault)?;
        }
        let l = self.layout;
        let entries = l.entries;
        let ready = env
            .load_acquire_u32(l.rx.producer)?
            .wrapping_sub(self.rx_cons);
        if ready > entries {
            // The kernel's index ran past the ring: nothing of it is believed.
            self.pending.kernel_errors += 1;
            self.sync(env)?;
            return Ok(0);
        }
        // Bounded by the ring (`ready <= entries`) and by the caller.
        let n = ready.min(u32::try_from(max).unwrap_or(u32::MAX));
        // Room on the fill ring, read once per batch: the kernel's consumer only
        // moves forward, so the room only grows meanwhile. The ring has twice
        // the receive chunks (see `XdpLayout::entries`), so a consumer the
        // kernel has not published yet never leaves too little.
        let queued = self
            .fill_prod
            .wrapping_sub(env.load_acquire_u32(l.fill.consumer)?);
        let mut fill_room = l.fill.entries.saturating_sub(queued);
        let (mut seen, mut bytes) = (0usize, 0u64);
        for i in 0..n {
            let at = l.rx.desc + u64::from(self.rx_cons.wrapping_add(i) & self.mask) * 16;
            // Each field read once.
            let addr = env.read_u64(at)?;
            let len = env.read_u32(at + 8)?;
            let Some(c) = self.chunk_of(addr) else {
                self.pending.kernel_errors += 1;
                continue;
            };
            if self.holder(env, c)? != holder::KERNEL_RX {
                // Not a chunk the kernel may hand back: left where it is.
                self.pending.kernel_errors += 1;
                continue;
            }
            // Both below FRAME_SIZE after the check, so no overflow.
            let in_chunk = (addr % u64::from(FRAME_SIZE)) as u32;
            if len > FRAME_SIZE || in_chunk + len > FRAME_SIZE {
                self.pending.kernel_errors += 1;
            } else if len < MIN_FRAME {
                self.pending.rx_too_short += 1;
            } else {
                f(RxFrame {
                    addr: l.umem + addr,
                    len,
                });
                seen += 1;
                bytes += u64::from(len);
            }
            // Back on the fill ring at the chunk's start, unless the ring is full
            // (only a kernel that handed chunks back more than once can make it
            // so: the ring holds every receive chunk twice over).
            if fill_room == 0 {
                self.pending.kernel_errors += 1;
                continue;
            }
            fill_room -= 1;
            self.put_fill(env, c)?;
        }
        if n > 0 {
            self.rx_cons = self.rx_cons.wrapping_add(n);
            env.store_release_u32(l.rx.consumer, self.rx_cons)?;
            env.store_release_u32(l.fill.producer, self.fill_prod)?;
        }
        self.pending.rx_packets += seen as u64;
        self.pending.rx_bytes += bytes;
        self.sync(env)?;
        Ok(seen)
    }

    /// Whether received frames wait on the receive ring.
    #[fast_path]
    pub fn rx_pending<E: DriverEnv>(&self, env: &E) -> Result<bool, XdpDriverError> {
        Ok(env.load_acquire_u32(self.layout.rx.producer)? != self.rx_cons)
    }

    /// Reserves a free transmit chunk (reaping completions when none is free).
    /// `None`: none is free (counted).
    #[fast_path]
    pub fn tx_reserve<E: DriverEnv>(&mut self, env: &E) -> Result<Option<TxChunk>, XdpDriverError> {
        if self.free_top == 0 {
            self.tx_reap(env)?;
        }
        let l = self.layout;
        let half = l.cfg.frames / 2;
        // Each iteration pops one entry; the stack holds at most `entries`.
        while self.free_top > 0 {
            self.free_top -= 1;
            let c = env.read_u32(l.free_stack + u64::from(self.free_top) * 4)?;
            if c < half || c >= l.cfg.frames || self.holder(env, c)? != holder::FREE_TX {
                self.pending.bad_state += 1;
                continue;
            }
            self.set_holder(env, c, holder::HOST)?;
            return Ok(Some(TxChunk {
                chunk: c,
                addr: l.chunk_addr(c),
                capacity: FRAME_SIZE,
            }));
        }
        self.pending.tx_no_chunk += 1;
        Ok(None)
    }

    /// Checks that `chunk` is one the host reserved.
    fn reserved<E: DriverEnv>(&self, env: &E, chunk: &TxChunk) -> Result<u32, XdpDriverError> {
        let c = chunk.chunk;
        let half = self.layout.cfg.frames / 2;
        if c < half || c >= self.layout.cfg.frames || self.holder(env, c)? != holder::HOST {
            return Err(XdpDriverError::NotReserved(c));
        }
        Ok(c)
    }

    /// Gives a reserved chunk back unused.
    #[fast_path]
    pub fn tx_cancel<E: DriverEnv>(
        &mut self,
        env: &E,
        chunk: TxChunk,
    ) -> Result<(), XdpDriverError> {
        let c = self.reserved(env, &chunk)?;
        self.push_free(env, c)?;
        Ok(())
    }

    /// Puts chunk `c` on the free stack. A full stack means the table lied
    /// about some chunk: counted, and `c` is left out.
    fn push_free<E: DriverEnv>(&mut self, env: &E, c: u32) -> Result<(), MemFault> {
        if self.free_top >= self.layout.entries {
            self.pending.bad_state += 1;
            return Ok(());
        }
        self.set_holder(env, c, holder::FREE_TX)?;
        env.write_u32(self.layout.free_stack + u64::from(self.free_top) * 4, c)?;
        self.free_top += 1;
        Ok(())
    }

    /// Puts a reserved chunk holding a `len`-byte frame on the transmit ring
    /// (handed to the kernel at the next flush). A frame longer than a chunk is
    /// refused and counted, and the chunk goes back.
    #[fast_path]
    pub fn tx_commit<E: DriverEnv>(
        &mut self,
        env: &E,
        chunk: TxChunk,
        len: u32,
    ) -> Result<bool, XdpDriverError> {
        let c = self.reserved(env, &chunk)?;
        if len > FRAME_SIZE {
            self.pending.tx_too_long += 1;
            self.push_free(env, c)?;
            return Ok(false);
        }
        let at = self.layout.tx.desc + u64::from(self.tx_prod & self.mask) * 16;
        env.write_u64(at, u64::from(c) * u64::from(FRAME_SIZE))?;
        env.write_u32(at + 8, len)?;
        env.write_u32(at + 12, 0)?;
        self.set_holder(env, c, holder::KERNEL_TX)?;
        self.tx_prod = self.tx_prod.wrapping_add(1);
        self.tx_unpublished += 1;
        self.pending.tx_packets += 1;
        self.pending.tx_bytes += u64::from(len);
        Ok(true)
    }

    /// Publishes the committed frames, wakes the kernel while it has not taken
    /// them all and asks for it (in copy mode it transmits a bounded batch per
    /// wake-up), and reaps completions; a batch boundary.
    #[fast_path]
    pub fn tx_flush<E: DriverEnv>(&mut self, env: &E) -> Result<(), XdpDriverError> {
        #[cfg(feature = "fault-injection")]
        if let Some(fault) = env.take_injected_fault() {
            self.commit_injected_fault(env, fault)?;
        }
        let l = self.layout;
        if self.tx_unpublished > 0 {
            self.tx_unpublished = 0;
            env.store_release_u32(l.tx.producer, self.tx_prod)?;
        }
        // At most one wake-up per kernel batch of a full ring, and one more.
        for _ in 0..l.entries / KERNEL_TX_BATCH + 2 {
            let taken = env.load_acquire_u32(l.tx.consumer)?;
            if taken == self.tx_prod || env.load_acquire_u32(l.tx.flags)? & NEED_WAKEUP == 0 {
                break;
            }
            env.kick(TX_QUEUE);
        }
        self.tx_reap(env)?;
        self.sync(env)?;
        Ok(())
    }

    /// Whether committed frames wait for the kernel (a flush should be made
    /// even without new ones).
    #[fast_path]
    pub fn tx_waiting<E: DriverEnv>(&self, env: &E) -> Result<bool, XdpDriverError> {
        Ok(env.load_acquire_u32(self.layout.tx.consumer)? != self.tx_prod)
    }

    /// Takes back the chunks the kernel finished transmitting. Returns how many.
    #[fast_path]
    pub fn tx_reap<E: DriverEnv>(&mut self, env: &E) -> Result<usize, XdpDriverError> {
        let l = self.layout;
        let done = env
            .load_acquire_u32(l.completion.producer)?
            .wrapping_sub(self.comp_cons);
        if done > l.entries {
            self.pending.kernel_errors += 1;
            return Ok(0);
        }
        let half = l.cfg.frames / 2;
        let mut reaped = 0u32;
        for i in 0..done {
            let at = l.completion.desc + u64::from(self.comp_cons.wrapping_add(i) & self.mask) * 8;
            let addr = env.read_u64(at)?;
            match self.chunk_of(addr) {
                Some(c) if c >= half && self.holder(env, c)? == holder::KERNEL_TX => {
                    self.push_free(env, c)?;
                    reaped += 1;
                }
                _ => self.pending.kernel_errors += 1,
            }
        }
        if done > 0 {
            self.comp_cons = self.comp_cons.wrapping_add(done);
            env.store_release_u32(l.completion.consumer, self.comp_cons)?;
        }
        self.pending.tx_completed += u64::from(reaped);
        Ok(reaped as usize)
    }

    /// Writes the counter increments and the free-stack depth back: afterwards
    /// the region is the source of truth. Reports a batch's kernel errors and
    /// corrupt chunk-table entries to the driver domain (one upcall each).
    #[fast_path]
    pub fn sync<E: DriverEnv>(&mut self, env: &E) -> Result<(), XdpDriverError> {
        if self.tx_unpublished > 0 {
            self.tx_unpublished = 0;
            env.store_release_u32(self.layout.tx.producer, self.tx_prod)?;
        }
        env.write_u32(S_FREE_TOP, self.free_top)?;
        if self.pending == Pending::default() {
            return Ok(());
        }
        let p = self.pending;
        for (off, by) in p.fields() {
            ring_record::add_u64(env, off, by)?;
        }
        self.pending = Pending::default();
        let clamp = |n: u64| u32::try_from(n).unwrap_or(u32::MAX);
        if p.kernel_errors > 0 {
            self.kernel_error(env, clamp(p.kernel_errors))?;
        }
        if p.bad_state > 0 {
            self.state_corrupt(env, clamp(p.bad_state))?;
        }
        Ok(())
    }

    /// Reads the counters (the state page's plus increments not yet written).
    #[fast_path]
    pub fn stats<E: DriverEnv>(&self, env: &E) -> Result<XdpStats, XdpDriverError> {
        let p = &self.pending;
        let r = |off: u64, add: u64| -> Result<u64, XdpDriverError> {
            Ok(env.read_u64(off)?.wrapping_add(add))
        };
        Ok(XdpStats {
            rx_packets: r(C_RX_PACKETS, p.rx_packets)?,
            rx_bytes: r(C_RX_BYTES, p.rx_bytes)?,
            rx_too_short: r(C_RX_TOO_SHORT, p.rx_too_short)?,
            tx_packets: r(C_TX_PACKETS, p.tx_packets)?,
            tx_bytes: r(C_TX_BYTES, p.tx_bytes)?,
            tx_completed: r(C_TX_COMPLETED, p.tx_completed)?,
            tx_no_chunk: r(C_TX_NO_CHUNK, p.tx_no_chunk)?,
            tx_too_long: r(C_TX_TOO_LONG, p.tx_too_long)?,
            kernel_errors: r(C_KERNEL_ERRORS, p.kernel_errors)?,
            bad_state: r(C_BAD_STATE, p.bad_state)?,
        })
    }

    /// Slow path: a batch counted `count` bad descriptors or indexes from the
    /// kernel.
    #[slow_path]
    fn kernel_error<E: DriverEnv>(&self, env: &E, count: u32) -> Result<(), XdpDriverError> {
        ring_record::kernel_errors(env, self.layout.private, count)?;
        Ok(())
    }

    /// Slow path: a batch found `count` chunk-table entries that make no sense
    /// (written by a compromised or broken instance). Records them and requests
    /// a restart.
    #[slow_path]
    fn state_corrupt<E: DriverEnv>(&self, env: &E, count: u32) -> Result<(), XdpDriverError> {
        ring_record::state_corrupt(env, self.layout.private, count)?;
        Ok(())
    }

    /// Whether a slow path requested a restart (driver domain only).
    pub fn reset_requested<E: DriverEnv>(&self, env: &E) -> Result<bool, XdpDriverError> {
        Ok(ring_record::reset_requested(env, self.layout.private)?)
    }

    /// What the slow paths recorded (driver domain only).
    pub fn domain_errors<E: DriverEnv>(&self, env: &E) -> Result<DomainErrors, XdpDriverError> {
        Ok(ring_record::read(env, self.layout.private)?)
    }

    /// Commits an injected fault (feature `fault-injection`).
    #[cfg(feature = "fault-injection")]
    fn commit_injected_fault<E: DriverEnv>(
        &self,
        env: &E,
        fault: driver_env::InjectedFault,
    ) -> Result<(), XdpDriverError> {
        driver_env::commit_injected_fault(
            env,
            fault,
            "AF_XDP",
            self.layout.private + ring_record::RESET_REQUESTED,
            self.layout.rx.producer,
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests;
