//! The AF_PACKET data path and its counters.
//!
//! Receive: [`AfPacket::rx_burst`] hands each frame of the blocks the kernel
//! handed over (its driver address and length) to a callback and gives a block
//! back once every packet of it was visited. Transmit: [`AfPacket::tx_reserve`]
//! takes the next slot if the kernel is done with it, the host copies a frame
//! into it, [`AfPacket::tx_commit`] hands it to the kernel (`TP_STATUS_SEND_REQUEST`);
//! [`AfPacket::tx_flush`] wakes the kernel once per batch (the doorbell: a `send`
//! of nothing on the socket). While the interface is down the kernel leaves the
//! slots handed to it; the host that heard so from the doorbell takes them back
//! ([`AfPacket::tx_take_back`]), counted, so that nothing stale leaves when the
//! link returns.
//!
//! A receive block or packet that fails the checks of [`crate::block`] is
//! counted (`rx_bad_blocks`) and dropped. A transmit slot whose status is none
//! the kernel writes can only come from another instance of this driver (a
//! compromised domain): counted (`bad_state`), left alone, and reported to the
//! domain, which asks to be restarted. Counters and the rings' positions are
//! accumulated in the handle and written back at every batch boundary.
//!
//! # Twin
//!
//! The impl block is derived by `twin-derive`: the data-path methods are
//! `#[fast_path]` entries of [`AfPacketTwin`]; two `#[slow_path]` routines run
//! in the driver domain:
//!
//! * `kernel_error(count)`: a batch dropped malformed blocks or packets; the
//!   domain keeps the total and the last batch's count in its private page;
//! * `state_corrupt(count)`: a batch found transmit slots in a state the kernel
//!   never writes; the domain records it and requests a restart
//!   ([`AfPacket::reset_requested`]).
//!
//! # Fault injection
//!
//! As in the other drivers: with the `fault-injection` feature,
//! [`AfPacket::rx_burst`] and [`AfPacket::tx_flush`] first commit a pending
//! [`driver_env::InjectedFault`].

use driver_env::ring_record;
pub use driver_env::ring_record::DomainErrors;
use driver_env::{DriverEnv, MemFault, RxFrame, TxChunk};

use crate::block::{self, BlockCursor, Packet, BLOCK_STATUS};
use crate::layout::{
    PacketLayout, PacketLayoutError, PRIVATE_PAGE, STATE_CONFIG_LEN, STATE_PAGE, STATE_RW_LEN,
    TX_DATA_OFFSET,
};

const MAGIC: u32 = 0x5450_4b31; // "TPK1"
const VERSION: u32 = 1;

// State page: configuration (read-only for a twin).
const P_MAGIC: u64 = 0;
const P_VERSION: u64 = 4;
const P_BLOCK_SIZE: u64 = 8;
const P_BLOCKS: u64 = 12;
const P_LEN: u64 = 16;
// Counters (u64 each).
const C_RX_PACKETS: u64 = 64;
const C_RX_BYTES: u64 = 72;
const C_RX_TOO_SHORT: u64 = 80;
const C_RX_TRUNCATED: u64 = 88;
const C_RX_BAD_BLOCKS: u64 = 96;
const C_TX_PACKETS: u64 = 104;
const C_TX_BYTES: u64 = 112;
const C_TX_RING_FULL: u64 = 120;
const C_TX_TOO_LONG: u64 = 128;
const C_TX_REFUSED: u64 = 136;
const C_TX_LINK_DOWN: u64 = 144;
const C_BAD_STATE: u64 = 152;
// The rings' positions (u32 each).
const S_RX_NEXT: u64 = 160;
const S_RX_OPEN: u64 = 164;
/// Four words: the open block's cursor ([`BlockCursor::words`]).
const S_RX_CURSOR: u64 = 168;
const S_TX_NEXT: u64 = 184;
const S_TX_PENDING: u64 = 188;
const _: () = assert!(P_LEN + 8 <= STATE_CONFIG_LEN && C_RX_PACKETS == STATE_CONFIG_LEN);
const _: () = assert!(S_TX_PENDING + 4 <= STATE_CONFIG_LEN + STATE_RW_LEN);

// Private page (from the layout's `private`; driver domain only): the
// slow paths' record, `driver_env::ring_record`.
const _: () = assert!(ring_record::LEN <= PRIVATE_PAGE);

/// Offsets in a transmit slot's `tpacket3_hdr`.
const TP_NEXT_OFFSET: u64 = 0;
const TP_LEN: u64 = 16;
const TP_STATUS: u64 = 20;
/// `tp_status` of a transmit slot: free for user space.
const TP_STATUS_AVAILABLE: u32 = 0;
/// `tp_status`: handed to the kernel to send.
const TP_STATUS_SEND_REQUEST: u32 = 1;
/// `tp_status`: the kernel is sending it.
const TP_STATUS_SENDING: u32 = 2;
/// `tp_status`: the kernel refused the frame's format.
const TP_STATUS_WRONG_FORMAT: u32 = 4;
/// Queue number the transmit wake-up is rung on ([`driver_env::Doorbell::kick`]).
pub const TX_QUEUE: u16 = 1;

/// Error of this module.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PacketDriverError {
    /// A region access was refused.
    #[error("driver memory access failed")]
    Access(#[from] MemFault),
    /// The layout is invalid.
    #[error("invalid driver layout")]
    Layout(#[from] PacketLayoutError),
    /// The space is smaller than the layout.
    #[error("space of {have:#x} bytes is smaller than the {need:#x} the layout needs")]
    RegionTooSmall {
        /// Space size.
        have: u64,
        /// Needed size.
        need: u64,
    },
    /// The region holds no initialised driver of this layout.
    #[error("the region holds no AF_PACKET driver of this layout")]
    NotInitialised,
    /// The rings' positions in the region are impossible.
    #[error("the rings' positions in the driver state are impossible")]
    BadPosition,
    /// A slot handed to commit or cancel is not the one this handle reserved.
    #[error("transmit slot {0} was not reserved")]
    NotReserved(u32),
}

/// Counters of one driver (the region's, shared by every instance).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct PacketStats {
    /// Frames received and handed on.
    pub rx_packets: u64,
    /// Their bytes.
    pub rx_bytes: u64,
    /// Frames shorter than an Ethernet header (dropped).
    pub rx_too_short: u64,
    /// Frames the kernel cut (dropped).
    pub rx_truncated: u64,
    /// Malformed blocks and packets (each drops what was left of its block).
    pub rx_bad_blocks: u64,
    /// Frames handed to the kernel.
    pub tx_packets: u64,
    /// Their bytes.
    pub tx_bytes: u64,
    /// `tx_reserve` found the next slot still the kernel's.
    pub tx_ring_full: u64,
    /// Frames longer than a slot holds (refused).
    pub tx_too_long: u64,
    /// Frames the kernel refused (`TP_STATUS_WRONG_FORMAT`).
    pub tx_refused: u64,
    /// Frames taken back from a down interface.
    pub tx_link_down: u64,
    /// Transmit slots in a state the kernel never writes.
    pub bad_state: u64,
}

/// Counter increments not yet written to the state page.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Pending {
    rx_packets: u64,
    rx_bytes: u64,
    rx_too_short: u64,
    rx_truncated: u64,
    rx_bad_blocks: u64,
    tx_packets: u64,
    tx_bytes: u64,
    tx_ring_full: u64,
    tx_too_long: u64,
    tx_refused: u64,
    tx_link_down: u64,
    bad_state: u64,
}

impl Pending {
    fn fields(&self) -> [(u64, u64); 12] {
        [
            (C_RX_PACKETS, self.rx_packets),
            (C_RX_BYTES, self.rx_bytes),
            (C_RX_TOO_SHORT, self.rx_too_short),
            (C_RX_TRUNCATED, self.rx_truncated),
            (C_RX_BAD_BLOCKS, self.rx_bad_blocks),
            (C_TX_PACKETS, self.tx_packets),
            (C_TX_BYTES, self.tx_bytes),
            (C_TX_RING_FULL, self.tx_ring_full),
            (C_TX_TOO_LONG, self.tx_too_long),
            (C_TX_REFUSED, self.tx_refused),
            (C_TX_LINK_DOWN, self.tx_link_down),
            (C_BAD_STATE, self.bad_state),
        ]
    }
}

/// An AF_PACKET driver instance. The handle caches the layout (computed by the
/// host from its own configuration), the rings' positions and counter
/// increments, and writes them back at every batch boundary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AfPacket {
    layout: PacketLayout,
    /// The receive block to read next.
    rx_next: u32,
    /// That block's walk, when it was opened and not read whole.
    rx_cursor: Option<BlockCursor>,
    /// The transmit slot to fill next.
    tx_next: u32,
    /// Frames handed to the kernel since the last wake-up.
    tx_pending: u32,
    /// The slot between reserve and commit.
    reserved: Option<u32>,
    pending: Pending,
}

#[twin_derive::twin_driver(twin = AfPacketTwin, upcall = AfPacketUpcall)]
impl AfPacket {
    /// Initialises a fresh space for `layout` (a socket just bound, its rings
    /// all the kernel's): the configuration, the counters and positions at 0.
    pub fn init<E: DriverEnv>(env: &E, layout: PacketLayout) -> Result<Self, PacketDriverError> {
        let layout = Self::checked(env, layout)?;
        env.zero_bytes(0, STATE_PAGE)?;
        env.zero_bytes(layout.private, PRIVATE_PAGE)?;
        env.write_u32(P_VERSION, VERSION)?;
        env.write_u32(P_BLOCK_SIZE, layout.cfg.block_size)?;
        env.write_u32(P_BLOCKS, layout.cfg.blocks)?;
        env.write_u64(P_LEN, layout.len)?;
        env.write_u32(P_MAGIC, MAGIC)?;
        Ok(Self {
            layout,
            rx_next: 0,
            rx_cursor: None,
            tx_next: 0,
            tx_pending: 0,
            reserved: None,
            pending: Pending::default(),
        })
    }

    /// `layout` recomputed from its configuration, and the space large enough.
    fn checked<E: DriverEnv>(
        env: &E,
        layout: PacketLayout,
    ) -> Result<PacketLayout, PacketDriverError> {
        let layout = PacketLayout::new(layout.cfg)?;
        if env.region_len() < layout.len {
            return Err(PacketDriverError::RegionTooSmall {
                have: env.region_len(),
                need: layout.len,
            });
        }
        Ok(layout)
    }

    /// Continues the driver whose state is in the space (left at a batch
    /// boundary by another instance). `layout` is the host's own; the region's
    /// configuration must match it, and every position is checked.
    pub fn attach<E: DriverEnv>(env: &E, layout: PacketLayout) -> Result<Self, PacketDriverError> {
        let layout = Self::checked(env, layout)?;
        if env.read_u32(P_MAGIC)? != MAGIC
            || env.read_u32(P_VERSION)? != VERSION
            || env.read_u32(P_BLOCK_SIZE)? != layout.cfg.block_size
            || env.read_u32(P_BLOCKS)? != layout.cfg.blocks
            || env.read_u64(P_LEN)? != layout.len
        {
            return Err(PacketDriverError::NotInitialised);
        }
        let rx_next = env.read_u32(S_RX_NEXT)?;
        let rx_cursor = match env.read_u32(S_RX_OPEN)? {
            0 => None,
            1 => {
                let mut w = [0u32; 4];
                for (i, v) in w.iter_mut().enumerate() {
                    *v = env.read_u32(S_RX_CURSOR + 4 * i as u64)?;
                }
                Some(
                    BlockCursor::from_words(w, layout.cfg.block_size)
                        .ok_or(PacketDriverError::BadPosition)?,
                )
            }
            _ => return Err(PacketDriverError::BadPosition),
        };
        let tx_next = env.read_u32(S_TX_NEXT)?;
        let tx_pending = env.read_u32(S_TX_PENDING)?;
        if rx_next >= layout.cfg.blocks
            || tx_next >= layout.tx_frames
            || tx_pending > layout.tx_frames
        {
            return Err(PacketDriverError::BadPosition);
        }
        Ok(Self {
            layout,
            rx_next,
            rx_cursor,
            tx_next,
            tx_pending,
            reserved: None,
            pending: Pending::default(),
        })
    }

    /// The layout.
    #[fast_path]
    pub fn layout(&self) -> &PacketLayout {
        &self.layout
    }

    /// Gives the current receive block back to the kernel and moves on.
    fn give_back<E: DriverEnv>(&mut self, env: &E) -> Result<(), MemFault> {
        let base = self.layout.block_addr(self.rx_next);
        env.store_release_u32(base + BLOCK_STATUS, 0)?;
        self.rx_cursor = None;
        self.rx_next = (self.rx_next + 1) % self.layout.cfg.blocks;
        Ok(())
    }

    /// Hands up to `max` received frames to `f` (driver address and length; the
    /// memory is valid during the call), giving back every block read whole; a
    /// batch boundary. Returns the frames `f` saw.
    #[fast_path]
    pub fn rx_burst<E: DriverEnv>(
        &mut self,
        env: &E,
        max: usize,
        mut f: impl FnMut(RxFrame),
    ) -> Result<usize, PacketDriverError> {
        #[cfg(feature = "fault-injection")]
        if let Some(fault) = env.take_injected_fault() {
            self.commit_injected_fault(env, fault)?;
        }
        let l = self.layout;
        let (mut seen, mut bytes) = (0usize, 0u64);
        // Each round reads one block: every block at most once, and the one left
        // open by the last call.
        for _ in 0..=l.cfg.blocks {
            if seen >= max {
                break;
            }
            let base = l.block_addr(self.rx_next);
            let mut cursor = match self.rx_cursor {
                Some(c) => c,
                None => match block::open_block(env, base, l.cfg.block_size)? {
                    None => break,
                    Some(Ok(c)) => c,
                    Some(Err(_)) => {
                        self.pending.rx_bad_blocks += 1;
                        self.give_back(env)?;
                        continue;
                    }
                },
            };
            // Each step visits one packet: at most the block's count.
            while !cursor.is_done() && seen < max {
                match cursor.next(env, base)? {
                    Ok(Packet::Frame { offset, len }) => {
                        f(RxFrame {
                            addr: base + u64::from(offset),
                            len,
                        });
                        seen += 1;
                        bytes += u64::from(len);
                    }
                    Ok(Packet::Truncated) => self.pending.rx_truncated += 1,
                    Ok(Packet::Runt) => self.pending.rx_too_short += 1,
                    Err(_) => self.pending.rx_bad_blocks += 1,
                }
            }
            if cursor.is_done() {
                self.give_back(env)?;
            } else {
                self.rx_cursor = Some(cursor);
                break;
            }
        }
        self.pending.rx_packets += seen as u64;
        self.pending.rx_bytes += bytes;
        self.sync(env)?;
        Ok(seen)
    }

    /// Whether received frames wait: a block left open, or the next one handed
    /// over.
    #[fast_path]
    pub fn rx_pending<E: DriverEnv>(&self, env: &E) -> Result<bool, PacketDriverError> {
        if self.rx_cursor.is_some() {
            return Ok(true);
        }
        let base = self.layout.block_addr(self.rx_next);
        Ok(env.load_acquire_u32(base + BLOCK_STATUS)? & block::TP_STATUS_USER != 0)
    }

    /// Reserves the next transmit slot if the kernel is done with it. `None`:
    /// it is not (counted).
    #[fast_path]
    pub fn tx_reserve<E: DriverEnv>(
        &mut self,
        env: &E,
    ) -> Result<Option<TxChunk>, PacketDriverError> {
        let l = self.layout;
        let slot = self.tx_next;
        let at = l.slot_addr(slot);
        if self.reserved != Some(slot) {
            match env.load_acquire_u32(at + TP_STATUS)? {
                TP_STATUS_AVAILABLE => {}
                TP_STATUS_WRONG_FORMAT => {
                    // Counted once: the slot is free from now on.
                    self.pending.tx_refused += 1;
                    env.write_u32(at + TP_STATUS, TP_STATUS_AVAILABLE)?;
                }
                TP_STATUS_SEND_REQUEST | TP_STATUS_SENDING => {
                    self.pending.tx_ring_full += 1;
                    return Ok(None);
                }
                _ => {
                    // No kernel writes this: left alone, and reported.
                    self.pending.bad_state += 1;
                    self.pending.tx_ring_full += 1;
                    return Ok(None);
                }
            }
            self.reserved = Some(slot);
        }
        Ok(Some(TxChunk {
            chunk: slot,
            addr: at + TX_DATA_OFFSET,
            capacity: l.tx_capacity(),
        }))
    }

    /// Checks that `chunk` is the slot this handle reserved, and forgets the
    /// reservation.
    fn take_reserved(&mut self, chunk: &TxChunk) -> Result<u32, PacketDriverError> {
        match self.reserved {
            Some(s) if s == chunk.chunk => {
                self.reserved = None;
                Ok(s)
            }
            _ => Err(PacketDriverError::NotReserved(chunk.chunk)),
        }
    }

    /// Gives a reserved slot back unused.
    #[fast_path]
    pub fn tx_cancel<E: DriverEnv>(
        &mut self,
        _env: &E,
        chunk: TxChunk,
    ) -> Result<(), PacketDriverError> {
        self.take_reserved(&chunk)?;
        Ok(())
    }

    /// Hands the reserved slot holding a `len`-byte frame to the kernel (sent
    /// at the next flush's wake-up). A frame longer than a slot holds is
    /// refused and counted, and the slot stays free.
    #[fast_path]
    pub fn tx_commit<E: DriverEnv>(
        &mut self,
        env: &E,
        chunk: TxChunk,
        len: u32,
    ) -> Result<bool, PacketDriverError> {
        let slot = self.take_reserved(&chunk)?;
        let l = self.layout;
        if len > l.tx_capacity() {
            self.pending.tx_too_long += 1;
            return Ok(false);
        }
        let at = l.slot_addr(slot);
        // One slot each (the kernel refuses a variable-sized one).
        env.write_u32(at + TP_NEXT_OFFSET, 0)?;
        env.write_u32(at + TP_LEN, len)?;
        env.store_release_u32(at + TP_STATUS, TP_STATUS_SEND_REQUEST)?;
        self.tx_next = (slot + 1) % l.tx_frames;
        self.tx_pending += 1;
        self.pending.tx_packets += 1;
        self.pending.tx_bytes += u64::from(len);
        Ok(true)
    }

    /// Wakes the kernel to send what was handed to it (once per batch, and
    /// again while the last slot handed over waits: the kernel stops when its
    /// socket's send buffer is full); a batch boundary.
    #[fast_path]
    pub fn tx_flush<E: DriverEnv>(&mut self, env: &E) -> Result<(), PacketDriverError> {
        #[cfg(feature = "fault-injection")]
        if let Some(fault) = env.take_injected_fault() {
            self.commit_injected_fault(env, fault)?;
        }
        if self.tx_pending > 0 || self.tx_waiting(env)? {
            self.tx_pending = 0;
            env.kick(TX_QUEUE);
        }
        self.sync(env)?;
        Ok(())
    }

    /// Whether a frame handed to the kernel waits for a wake-up (the slot
    /// behind the next one still a send request).
    #[fast_path]
    pub fn tx_waiting<E: DriverEnv>(&self, env: &E) -> Result<bool, PacketDriverError> {
        if self.tx_pending > 0 {
            return Ok(true);
        }
        let l = self.layout;
        let last = (self.tx_next + l.tx_frames - 1) % l.tx_frames;
        Ok(env.load_acquire_u32(l.slot_addr(last) + TP_STATUS)? == TP_STATUS_SEND_REQUEST)
    }

    /// Takes back every slot handed to the kernel and not yet taken by it (the
    /// doorbell heard that the interface is down: the kernel keeps them until
    /// it is up again); counted. The kernel reads the ring in order from its own
    /// position and stops at the first slot not handed over, so those slots are
    /// the run just behind the next one: walking back over it puts the next
    /// slot where the kernel will look next. Returns how many.
    #[fast_path]
    pub fn tx_take_back<E: DriverEnv>(&mut self, env: &E) -> Result<u32, PacketDriverError> {
        let l = self.layout;
        let frames = l.tx_frames;
        let mut n = 0;
        // Each step takes one slot back: at most the ring.
        while n < frames {
            let prev = (self.tx_next + frames - 1) % frames;
            let status = l.slot_addr(prev) + TP_STATUS;
            // Only this instance hands slots over, and the kernel takes none
            // while the interface is down.
            if env.load_acquire_u32(status)? != TP_STATUS_SEND_REQUEST {
                break;
            }
            env.store_release_u32(status, TP_STATUS_AVAILABLE)?;
            self.tx_next = prev;
            n += 1;
        }
        self.tx_pending = 0;
        // A reservation named a slot the walk may have moved past.
        self.reserved = None;
        self.pending.tx_link_down += u64::from(n);
        self.sync(env)?;
        Ok(n)
    }

    /// Writes the counter increments and the rings' positions back: afterwards
    /// the region is the source of truth. Reports a batch's malformed blocks and
    /// impossible slot states to the driver domain (one upcall each).
    #[fast_path]
    pub fn sync<E: DriverEnv>(&mut self, env: &E) -> Result<(), PacketDriverError> {
        env.write_u32(S_RX_NEXT, self.rx_next)?;
        match self.rx_cursor {
            Some(c) => {
                for (i, w) in c.words().into_iter().enumerate() {
                    env.write_u32(S_RX_CURSOR + 4 * i as u64, w)?;
                }
                env.write_u32(S_RX_OPEN, 1)?;
            }
            None => env.write_u32(S_RX_OPEN, 0)?,
        }
        env.write_u32(S_TX_NEXT, self.tx_next)?;
        env.write_u32(S_TX_PENDING, self.tx_pending)?;
        if self.pending == Pending::default() {
            return Ok(());
        }
        let p = self.pending;
        for (off, by) in p.fields() {
            ring_record::add_u64(env, off, by)?;
        }
        self.pending = Pending::default();
        let clamp = |n: u64| u32::try_from(n).unwrap_or(u32::MAX);
        if p.rx_bad_blocks > 0 {
            self.kernel_error(env, clamp(p.rx_bad_blocks))?;
        }
        if p.bad_state > 0 {
            self.state_corrupt(env, clamp(p.bad_state))?;
        }
        Ok(())
    }

    /// Reads the counters (the state page's plus increments not yet written).
    #[fast_path]
    pub fn stats<E: DriverEnv>(&self, env: &E) -> Result<PacketStats, PacketDriverError> {
        let p = &self.pending;
        let r = |off: u64, add: u64| -> Result<u64, PacketDriverError> {
            Ok(env.read_u64(off)?.wrapping_add(add))
        };
        Ok(PacketStats {
            rx_packets: r(C_RX_PACKETS, p.rx_packets)?,
            rx_bytes: r(C_RX_BYTES, p.rx_bytes)?,
            rx_too_short: r(C_RX_TOO_SHORT, p.rx_too_short)?,
            rx_truncated: r(C_RX_TRUNCATED, p.rx_truncated)?,
            rx_bad_blocks: r(C_RX_BAD_BLOCKS, p.rx_bad_blocks)?,
            tx_packets: r(C_TX_PACKETS, p.tx_packets)?,
            tx_bytes: r(C_TX_BYTES, p.tx_bytes)?,
            tx_ring_full: r(C_TX_RING_FULL, p.tx_ring_full)?,
            tx_too_long: r(C_TX_TOO_LONG, p.tx_too_long)?,
            tx_refused: r(C_TX_REFUSED, p.tx_refused)?,
            tx_link_down: r(C_TX_LINK_DOWN, p.tx_link_down)?,
            bad_state: r(C_BAD_STATE, p.bad_state)?,
        })
    }

    /// Slow path: a batch dropped `count` malformed blocks or packets.
    #[slow_path]
    fn kernel_error<E: DriverEnv>(&self, env: &E, count: u32) -> Result<(), PacketDriverError> {
        ring_record::kernel_errors(env, self.layout.private, count)?;
        Ok(())
    }

    /// Slow path: a batch found `count` transmit slots in a state the kernel
    /// never writes (a compromised or broken instance wrote it). Records them
    /// and requests a restart.
    #[slow_path]
    fn state_corrupt<E: DriverEnv>(&self, env: &E, count: u32) -> Result<(), PacketDriverError> {
        ring_record::state_corrupt(env, self.layout.private, count)?;
        Ok(())
    }

    /// Whether a slow path requested a restart (driver domain only).
    pub fn reset_requested<E: DriverEnv>(&self, env: &E) -> Result<bool, PacketDriverError> {
        Ok(ring_record::reset_requested(env, self.layout.private)?)
    }

    /// What the slow paths recorded (driver domain only).
    pub fn domain_errors<E: DriverEnv>(&self, env: &E) -> Result<DomainErrors, PacketDriverError> {
        Ok(ring_record::read(env, self.layout.private)?)
    }

    /// Commits an injected fault (feature `fault-injection`).
    #[cfg(feature = "fault-injection")]
    fn commit_injected_fault<E: DriverEnv>(
        &self,
        env: &E,
        fault: driver_env::InjectedFault,
    ) -> Result<(), PacketDriverError> {
        driver_env::commit_injected_fault(
            env,
            fault,
            "AF_PACKET",
            self.layout.private + ring_record::RESET_REQUESTED,
            self.layout.block_addr(self.rx_next) + BLOCK_STATUS,
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests;
