#![forbid(unsafe_code)]
#![deny(missing_docs)]
//! A driver-side split virtqueue (virtio 1.2, section 2.7) whose state lives in the
//! driver's region.
//!
//! Every piece of bookkeeping (free list, number of free descriptors, shadow avail
//! index, last seen used index, per-descriptor state and posted length, error
//! counters) has its home in a *queue state block* in the region, accessed through
//! [`driver_env::DriverMem`]. The [`Virtqueue`] handle caches the scalar part of it
//! (indices, free count, flags, counter increments) so that the per-buffer path costs
//! a handful of region accesses; the cache is written back at every **batch
//! boundary** ([`Virtqueue::publish`] / [`Virtqueue::flush`], [`Virtqueue::sync`],
//! [`Virtqueue::set_notify`]). Between batch boundaries the region may lag behind
//! the handle; at a boundary it is the source of truth, and another process that
//! maps the same region can [`Virtqueue::attach`] (which validates what it reads)
//! and continue the queue where this one stopped.
//!
//! What it does:
//! * single-descriptor buffers (one buffer per descriptor, no chains, no indirect
//!   tables): reserve a descriptor, commit it with an address and length, publish;
//! * batching: [`Virtqueue::flush`] publishes the avail index once and decides once
//!   whether to kick, honouring `avail_event` (EVENT_IDX) or
//!   `VRING_USED_F_NO_NOTIFY`;
//! * used-ring reclaim that validates what the device wrote: the device's used index
//!   is read once per batch (when the cached one is exhausted); one that runs ahead
//!   by more than the ring size marks the queue broken; an id out of range, an id
//!   not in flight, or a length larger than the posted buffer is a counted
//!   [`DeviceError`], never a panic;
//! * driver-side interrupt suppression with `VRING_AVAIL_F_NO_INTERRUPT` or
//!   `used_event`, so a host can busy-poll or run event-driven.
//!
//! Limits: the device shares the whole region, so it could also scribble on the
//! state block; every value read back from it (free-stack entries, descriptor
//! states, and everything [`Virtqueue::attach`] reads) is range-checked, so that
//! yields a [`QueueError`], not undefined behaviour, but the queue is then unusable
//! until re-initialised. A reused descriptor completed twice across a re-post cannot
//! be told from a legitimate completion (true of every split-ring driver). Posted
//! lengths are limited to `u32`.

use driver_env::{DriverMem, MemFault};

/// `VIRTQ_DESC_F_WRITE`: the device writes into this buffer.
pub const DESC_F_WRITE: u16 = 2;
/// `VRING_AVAIL_F_NO_INTERRUPT`: the driver asks not to be interrupted.
pub const AVAIL_F_NO_INTERRUPT: u16 = 1;
/// `VRING_USED_F_NO_NOTIFY`: the device asks not to be kicked.
pub const USED_F_NO_NOTIFY: u16 = 1;
/// Largest split queue size (virtio 1.2, 2.7).
pub const MAX_QUEUE_SIZE: u16 = 32768;

const STATE_MAGIC: u32 = 0x5456_5132; // "TVQ2"

// Queue state block, offsets from `QueueLayout::state`.
const S_MAGIC: u64 = 0;
const S_SIZE: u64 = 4;
const S_FLAGS: u64 = 6;
const S_NUM_FREE: u64 = 8;
const S_SHADOW_AVAIL: u64 = 10;
const S_LAST_USED: u64 = 12;
const S_PUBLISHED: u64 = 14;
const S_ERR_BAD_ID: u64 = 16;
const S_ERR_NOT_IN_FLIGHT: u64 = 24;
const S_ERR_LEN: u64 = 32;
const S_ERR_IDX_JUMP: u64 = 40;
const S_KICKS: u64 = 48;
const S_KICKS_SUPPRESSED: u64 = 56;
const S_FREE_STACK: u64 = 64;

// Bits of S_FLAGS.
const F_EVENT_IDX: u16 = 1;
const F_NOTIFY: u16 = 2;
const F_BROKEN: u16 = 4;
const F_ALL: u16 = F_EVENT_IDX | F_NOTIFY | F_BROKEN;

// Per-descriptor state, in the high half of the descriptor's u64 meta word (the
// low half is the posted length).
const D_FREE: u32 = 0;
const D_RESERVED: u32 = 1;
const D_IN_FLIGHT: u32 = 2;

const fn meta(state: u32, len: u32) -> u64 {
    ((state as u64) << 32) | len as u64
}
const fn meta_state(m: u64) -> u32 {
    (m >> 32) as u32
}
const fn meta_len(m: u64) -> u32 {
    m as u32
}

/// Error of this module.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum QueueError {
    /// An access to the region was refused.
    #[error("virtqueue memory access failed")]
    Access(#[from] MemFault),
    /// The queue size is zero, not a power of two, or larger than 32768.
    #[error("invalid queue size {0}: must be a power of two in 1..=32768")]
    InvalidSize(u32),
    /// The layout does not fit into the region.
    #[error("queue layout ends at {end:#x}, beyond the region of {region_len:#x} bytes")]
    LayoutOutsideRegion {
        /// First byte after the layout.
        end: u64,
        /// Region size.
        region_len: u64,
    },
    /// `attach` found no valid state block.
    #[error("no initialised virtqueue state at {0:#x}")]
    NotInitialised(u64),
    /// `attach` found a state block whose values are inconsistent.
    #[error("virtqueue state at {0:#x} is corrupted")]
    Corrupted(u64),
    /// The device wrote something invalid; the entry was consumed and counted.
    #[error("device misbehaved")]
    Device(#[from] DeviceError),
    /// The queue saw an unrecoverable device error (or corrupted state) and must be
    /// re-initialised.
    #[error("virtqueue {0} is broken and needs a reset")]
    Broken(u16),
    /// `commit`/`cancel` of a descriptor that was not reserved (a driver bug).
    #[error("descriptor {0} is not reserved")]
    NotReserved(u16),
}

/// A device misbehaviour found while reclaiming used buffers. Each is counted in the
/// queue state block.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DeviceError {
    /// A used element names a descriptor id outside the table.
    #[error("used id {0} is out of range")]
    BadUsedId(u32),
    /// A used element names a descriptor that is not in flight (double completion).
    #[error("used id {0} is not in flight")]
    NotInFlight(u16),
    /// The device claims to have written more than the buffer holds. The descriptor
    /// is reclaimed (free again) but its contents must be dropped.
    #[error("used length {len} of descriptor {id} exceeds its buffer of {cap} bytes")]
    LenTooLarge {
        /// Descriptor id.
        id: u16,
        /// Length the device wrote.
        len: u32,
        /// Length the driver posted.
        cap: u32,
    },
    /// `used.idx` ran ahead of the last seen index by more than the ring size.
    #[error("used index jumped from {last} to {now}")]
    UsedIdxJump {
        /// Last used index the driver consumed.
        last: u16,
        /// Index the device published.
        now: u16,
    },
}

impl QueueError {
    /// Whether the queue can go on after this error (a consumed, counted device
    /// error) or must stop.
    pub fn is_recoverable(&self) -> bool {
        match self {
            QueueError::Device(DeviceError::UsedIdxJump { .. }) => false,
            QueueError::Device(_) => true,
            QueueError::Access(_)
            | QueueError::InvalidSize(_)
            | QueueError::LayoutOutsideRegion { .. }
            | QueueError::NotInitialised(_)
            | QueueError::Corrupted(_)
            | QueueError::Broken(_)
            | QueueError::NotReserved(_) => false,
        }
    }
}

/// Where one queue's rings and state block are in the region.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueLayout {
    /// Number of descriptors (power of two).
    pub size: u16,
    /// Descriptor table (16-byte aligned).
    pub desc: u64,
    /// Available ring (2-byte aligned).
    pub avail: u64,
    /// Used ring (4-byte aligned).
    pub used: u64,
    /// Queue state block (8-byte aligned).
    pub state: u64,
}

const fn align_up(v: u64, a: u64) -> u64 {
    (v + a - 1) & !(a - 1)
}

impl QueueLayout {
    /// Packs a queue of `size` descriptors from `base` upward (base rounded up to 4 KiB
    /// so the rings start page-aligned): descriptor table, avail ring, state block,
    /// used ring. Everything the driver writes is contiguous (a twin's SVM checks it
    /// against one span), and the device-written used ring comes last. Use
    /// [`QueueLayout::end`] for the next free byte.
    pub fn new(base: u64, size: u16) -> Result<Self, QueueError> {
        if size == 0 || !size.is_power_of_two() || size > MAX_QUEUE_SIZE {
            return Err(QueueError::InvalidSize(u32::from(size)));
        }
        let n = u64::from(size);
        let desc = align_up(base, 4096);
        let avail = desc + 16 * n;
        let state = align_up(avail + 6 + 2 * n, 8);
        let state_end = align_up(state + S_FREE_STACK + 2 * n, 8) + 8 * n;
        let used = align_up(state_end, 4);
        Ok(Self {
            size,
            desc,
            avail,
            used,
            state,
        })
    }

    /// First byte after the state block.
    pub fn state_end(&self) -> u64 {
        self.meta_base() + 8 * u64::from(self.size)
    }

    /// First byte after the queue (the used ring's end).
    pub fn end(&self) -> u64 {
        self.used + 6 + 8 * u64::from(self.size)
    }

    fn free_stack(&self, i: u16) -> u64 {
        self.state + S_FREE_STACK + 2 * u64::from(i)
    }
    /// Per-descriptor meta words (state << 32 | posted length), 8-byte aligned.
    fn meta_base(&self) -> u64 {
        align_up(self.state + S_FREE_STACK + 2 * u64::from(self.size), 8)
    }
    fn meta(&self, id: u16) -> u64 {
        self.meta_base() + 8 * u64::from(id)
    }
    fn avail_ring(&self, slot: u16) -> u64 {
        self.avail + 4 + 2 * u64::from(slot)
    }
    fn used_event(&self) -> u64 {
        self.avail + 4 + 2 * u64::from(self.size)
    }
    fn used_ring(&self, slot: u16) -> u64 {
        self.used + 4 + 8 * u64::from(slot)
    }
    fn avail_event(&self) -> u64 {
        self.used + 4 + 8 * u64::from(self.size)
    }
}

/// A buffer the device has finished with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UsedBuf {
    /// Descriptor id (now free again).
    pub id: u16,
    /// Bytes the device wrote (0 for device-readable buffers); at most the posted length.
    pub len: u32,
}

/// Counters kept in the queue state block.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QueueCounters {
    /// Used ids out of range.
    pub bad_used_id: u64,
    /// Used ids not in flight.
    pub not_in_flight: u64,
    /// Used lengths beyond the buffer.
    pub len_too_large: u64,
    /// Used index jumps (the queue is broken afterwards).
    pub used_idx_jump: u64,
    /// Kicks sent.
    pub kicks: u64,
    /// Publishes where the device did not want a kick.
    pub kicks_suppressed: u64,
    /// Descriptors currently free.
    pub num_free: u16,
    /// Whether the queue is broken.
    pub broken: bool,
}

/// Whether an index move from `old` to `new` passes `event` (virtio 1.2, 2.7.10).
pub const fn need_event(event: u16, new: u16, old: u16) -> bool {
    new.wrapping_sub(event).wrapping_sub(1) < new.wrapping_sub(old)
}

/// Counter increments not yet added to the state block.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Pending {
    bad_used_id: u64,
    not_in_flight: u64,
    len_too_large: u64,
    used_idx_jump: u64,
    kicks: u64,
    kicks_suppressed: u64,
}

impl Pending {
    fn is_zero(&self) -> bool {
        *self == Self::default()
    }
}

/// A handle on one split virtqueue in the region.
///
/// Holds the layout and a cache of the state block's scalars (written back at batch
/// boundaries, see the module documentation). Drop it only after a batch boundary,
/// or the region misses the last increments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Virtqueue {
    layout: QueueLayout,
    index: u16,
    mask: u16,
    flags: u16,
    num_free: u16,
    shadow_avail: u16,
    published: u16,
    last_used: u16,
    /// The device's used index as last read (`last_used..used_seen` are ready).
    used_seen: u16,
    /// Last value written to `used_event` while interrupts are off, to avoid
    /// rewriting it on every empty poll.
    used_event_off: Option<u16>,
    pending: Pending,
    /// (flags, num_free, shadow_avail, last_used, published) as last written to the
    /// state block: an idle poll writes nothing.
    synced: [u16; 5],
}

impl Virtqueue {
    /// Initialises the rings and state block of `layout` (all descriptors free,
    /// indices 0, interrupts enabled) as queue number `index` of the device.
    pub fn init<E: DriverMem>(
        env: &E,
        layout: QueueLayout,
        index: u16,
        event_idx: bool,
    ) -> Result<Self, QueueError> {
        Self::check_layout(env, layout)?;
        let n = u64::from(layout.size);
        env.zero_bytes(layout.desc, 16 * n)?;
        env.zero_bytes(layout.avail, 6 + 2 * n)?;
        env.zero_bytes(layout.used, 6 + 8 * n)?;
        env.zero_bytes(layout.state, layout.end() - layout.state)?;
        env.write_u16(layout.state + S_SIZE, layout.size)?;
        let flags = if event_idx {
            F_EVENT_IDX | F_NOTIFY
        } else {
            F_NOTIFY
        };
        env.write_u16(layout.state + S_FLAGS, flags)?;
        // Free stack: popping yields 0, 1, 2, ...
        for i in 0..layout.size {
            env.write_u16(layout.free_stack(i), layout.size - 1 - i)?;
        }
        env.write_u16(layout.state + S_NUM_FREE, layout.size)?;
        env.write_u32(layout.state + S_MAGIC, STATE_MAGIC)?;
        Ok(Self::with(layout, index, flags, layout.size, 0, 0, 0))
    }

    /// Takes over a queue that was initialised (possibly by another process) at
    /// `layout` and left at a batch boundary. Everything read is validated.
    pub fn attach<E: DriverMem>(
        env: &E,
        layout: QueueLayout,
        index: u16,
    ) -> Result<Self, QueueError> {
        Self::check_layout(env, layout)?;
        let s = layout.state;
        if env.read_u32(s + S_MAGIC)? != STATE_MAGIC || env.read_u16(s + S_SIZE)? != layout.size {
            return Err(QueueError::NotInitialised(s));
        }
        let flags = env.read_u16(s + S_FLAGS)?;
        let num_free = env.read_u16(s + S_NUM_FREE)?;
        let shadow = env.read_u16(s + S_SHADOW_AVAIL)?;
        let published = env.read_u16(s + S_PUBLISHED)?;
        let last_used = env.read_u16(s + S_LAST_USED)?;
        if flags & !F_ALL != 0
            || num_free > layout.size
            || shadow.wrapping_sub(published) > layout.size
            || published.wrapping_sub(last_used) > layout.size
        {
            return Err(QueueError::Corrupted(s));
        }
        Ok(Self::with(
            layout, index, flags, num_free, shadow, published, last_used,
        ))
    }

    fn with(
        layout: QueueLayout,
        index: u16,
        flags: u16,
        num_free: u16,
        shadow_avail: u16,
        published: u16,
        last_used: u16,
    ) -> Self {
        Self {
            layout,
            index,
            mask: layout.size - 1,
            flags,
            num_free,
            shadow_avail,
            published,
            last_used,
            used_seen: last_used,
            used_event_off: None,
            pending: Pending::default(),
            synced: [flags, num_free, shadow_avail, last_used, published],
        }
    }

    fn scalars(&self) -> [u16; 5] {
        [
            self.flags,
            self.num_free,
            self.shadow_avail,
            self.last_used,
            self.published,
        ]
    }

    fn check_layout<E: DriverMem>(env: &E, layout: QueueLayout) -> Result<(), QueueError> {
        let expect = QueueLayout::new(layout.desc, layout.size)?;
        if expect != layout {
            return Err(QueueError::NotInitialised(layout.state));
        }
        if layout.end() > env.region_len() {
            return Err(QueueError::LayoutOutsideRegion {
                end: layout.end(),
                region_len: env.region_len(),
            });
        }
        Ok(())
    }

    /// The layout.
    pub fn layout(&self) -> &QueueLayout {
        &self.layout
    }

    /// Queue number at the device (used for kicks).
    pub fn index(&self) -> u16 {
        self.index
    }

    /// Number of descriptors.
    pub fn size(&self) -> u16 {
        self.layout.size
    }

    /// Whether EVENT_IDX was negotiated for this queue.
    pub fn event_idx(&self) -> bool {
        self.flags & F_EVENT_IDX != 0
    }

    fn check_broken(&self) -> Result<(), QueueError> {
        if self.flags & F_BROKEN != 0 {
            return Err(QueueError::Broken(self.index));
        }
        Ok(())
    }

    fn broken<E: DriverMem>(&mut self, env: &E) -> QueueError {
        self.flags |= F_BROKEN;
        // Best effort: if these writes fault, the next access faults too.
        let _ = self.sync(env);
        QueueError::Broken(self.index)
    }

    /// Writes the cached indices, free count, flags and counter increments back to
    /// the state block: after this the region is the source of truth again.
    /// [`Virtqueue::publish`], [`Virtqueue::flush`] and [`Virtqueue::set_notify`]
    /// call it; call it yourself after a reclaim-only batch.
    pub fn sync<E: DriverMem>(&mut self, env: &E) -> Result<(), QueueError> {
        let s = self.layout.state;
        let now = self.scalars();
        if now != self.synced {
            env.write_u16(s + S_FLAGS, self.flags)?;
            env.write_u16(s + S_NUM_FREE, self.num_free)?;
            env.write_u16(s + S_SHADOW_AVAIL, self.shadow_avail)?;
            env.write_u16(s + S_LAST_USED, self.last_used)?;
            env.write_u16(s + S_PUBLISHED, self.published)?;
            self.synced = now;
        }
        if !self.pending.is_zero() {
            let p = self.pending;
            for (off, by) in [
                (S_ERR_BAD_ID, p.bad_used_id),
                (S_ERR_NOT_IN_FLIGHT, p.not_in_flight),
                (S_ERR_LEN, p.len_too_large),
                (S_ERR_IDX_JUMP, p.used_idx_jump),
                (S_KICKS, p.kicks),
                (S_KICKS_SUPPRESSED, p.kicks_suppressed),
            ] {
                if by != 0 {
                    env.write_u64(s + off, env.read_u64(s + off)?.wrapping_add(by))?;
                }
            }
            self.pending = Pending::default();
        }
        Ok(())
    }

    /// Number of free descriptors.
    pub fn num_free(&self) -> u16 {
        self.num_free
    }

    /// Takes a free descriptor, or `None` when all are reserved or in flight.
    pub fn reserve<E: DriverMem>(&mut self, env: &E) -> Result<Option<u16>, QueueError> {
        self.check_broken()?;
        let n = self.num_free;
        if n == 0 {
            return Ok(None);
        }
        let id = env.read_u16(self.layout.free_stack(n - 1))?;
        if id >= self.layout.size || meta_state(env.read_u64(self.layout.meta(id))?) != D_FREE {
            return Err(self.broken(env));
        }
        env.write_u64(self.layout.meta(id), meta(D_RESERVED, 0))?;
        self.num_free = n - 1;
        Ok(Some(id))
    }

    fn push_free<E: DriverMem>(&mut self, env: &E, id: u16) -> Result<(), QueueError> {
        let n = self.num_free;
        if n >= self.layout.size {
            return Err(self.broken(env));
        }
        env.write_u64(self.layout.meta(id), meta(D_FREE, 0))?;
        env.write_u16(self.layout.free_stack(n), id)?;
        self.num_free = n + 1;
        Ok(())
    }

    fn expect_state<E: DriverMem>(&self, env: &E, id: u16, want: u32) -> Result<(), QueueError> {
        if id >= self.layout.size || meta_state(env.read_u64(self.layout.meta(id))?) != want {
            return Err(QueueError::NotReserved(id));
        }
        Ok(())
    }

    /// Returns a reserved descriptor to the free list without posting it.
    pub fn cancel<E: DriverMem>(&mut self, env: &E, id: u16) -> Result<(), QueueError> {
        self.expect_state(env, id, D_RESERVED)?;
        self.push_free(env, id)
    }

    /// Posts reserved descriptor `id` for the buffer `[addr, addr + len)` (device
    /// writable when `device_writes`). Visible to the device only after
    /// [`Virtqueue::flush`].
    pub fn commit<E: DriverMem>(
        &mut self,
        env: &E,
        id: u16,
        addr: u64,
        len: u32,
        device_writes: bool,
    ) -> Result<(), QueueError> {
        self.expect_state(env, id, D_RESERVED)?;
        self.post(env, id, addr, len, device_writes)
    }

    /// Writes the descriptor, marks it in flight and appends it to the avail ring
    /// (not published). `id` is reserved and in range.
    fn post<E: DriverMem>(
        &mut self,
        env: &E,
        id: u16,
        addr: u64,
        len: u32,
        device_writes: bool,
    ) -> Result<(), QueueError> {
        let l = &self.layout;
        let d = l.desc + 16 * u64::from(id);
        env.write_u64(d, addr)?;
        // len (bytes 8..12), flags (12..14) and next = 0 (14..16) in one store.
        let flags = if device_writes { DESC_F_WRITE } else { 0 };
        env.write_u64(d + 8, u64::from(len) | (u64::from(flags) << 32))?;
        env.write_u64(l.meta(id), meta(D_IN_FLIGHT, len))?;
        env.write_u16(l.avail_ring(self.shadow_avail & self.mask), id)?;
        self.shadow_avail = self.shadow_avail.wrapping_add(1);
        Ok(())
    }

    /// Reserves and commits in one step. `Ok(None)`: no free descriptor.
    pub fn add<E: DriverMem>(
        &mut self,
        env: &E,
        addr: u64,
        len: u32,
        device_writes: bool,
    ) -> Result<Option<u16>, QueueError> {
        let Some(id) = self.reserve(env)? else {
            return Ok(None);
        };
        self.post(env, id, addr, len, device_writes)?;
        Ok(Some(id))
    }

    /// Publishes everything committed since the last flush (one release store of
    /// `avail.idx`), decides once whether the device wants a kick, kicks, and syncs
    /// the state block. Returns whether it kicked.
    pub fn flush<E: driver_env::DriverEnv>(&mut self, env: &E) -> Result<bool, QueueError> {
        let kick = self.decide(env)?;
        if kick {
            env.kick(self.index);
            self.pending.kicks += 1;
        }
        self.sync(env)?;
        Ok(kick)
    }

    /// [`Virtqueue::flush`] without the kick: publishes, syncs, and returns whether
    /// a kick is needed (counted as neither sent nor suppressed).
    pub fn publish<E: DriverMem>(&mut self, env: &E) -> Result<bool, QueueError> {
        let kick = self.decide(env)?;
        self.sync(env)?;
        Ok(kick)
    }

    fn decide<E: DriverMem>(&mut self, env: &E) -> Result<bool, QueueError> {
        self.check_broken()?;
        let l = &self.layout;
        let new = self.shadow_avail;
        let old = self.published;
        if new == old {
            return Ok(false);
        }
        env.store_release_u16(l.avail + 2, new)?;
        self.published = new;
        // Order the index store before reading the device's suppression state.
        env.fence();
        let kick = if self.flags & F_EVENT_IDX != 0 {
            need_event(env.read_u16(l.avail_event())?, new, old)
        } else {
            env.read_u16(l.used)? & USED_F_NO_NOTIFY == 0
        };
        if !kick {
            self.pending.kicks_suppressed += 1;
        }
        Ok(kick)
    }

    /// Whether the device has used buffers the driver has not reclaimed yet.
    pub fn has_used<E: DriverMem>(&self, env: &E) -> Result<bool, QueueError> {
        Ok(self.used_seen != self.last_used
            || env.load_acquire_u16(self.layout.used + 2)? != self.last_used)
    }

    /// Reclaims the next used buffer. `Ok(None)`: nothing (more) to reclaim.
    /// A [`QueueError::Device`] error consumed one bad used entry and counted it;
    /// call again for the next one (see [`QueueError::is_recoverable`]). The device's
    /// used index is read only when the entries seen last time are consumed.
    pub fn pop_used<E: DriverMem>(&mut self, env: &E) -> Result<Option<UsedBuf>, QueueError> {
        self.check_broken()?;
        let last = self.last_used;
        if last == self.used_seen {
            let now = env.load_acquire_u16(self.layout.used + 2)?;
            if now == last {
                if self.flags & (F_NOTIFY | F_EVENT_IDX) == F_EVENT_IDX {
                    // Interrupts off under EVENT_IDX: keep used_event half a ring away.
                    let ev = last.wrapping_add(0x8000);
                    if self.used_event_off != Some(ev) {
                        env.write_u16(self.layout.used_event(), ev)?;
                        self.used_event_off = Some(ev);
                    }
                }
                return Ok(None);
            }
            if now.wrapping_sub(last) > self.layout.size {
                self.pending.used_idx_jump += 1;
                let _ = self.broken(env);
                return Err(DeviceError::UsedIdxJump { last, now }.into());
            }
            self.used_seen = now;
        }
        let l = &self.layout;
        let e = l.used_ring(last & self.mask);
        let raw_id = env.read_u32(e)?;
        let len = env.read_u32(e + 4)?;
        self.last_used = last.wrapping_add(1);
        let id = match u16::try_from(raw_id) {
            Ok(id) if id < l.size => id,
            _ => {
                self.pending.bad_used_id += 1;
                return Err(DeviceError::BadUsedId(raw_id).into());
            }
        };
        let m = env.read_u64(l.meta(id))?;
        if meta_state(m) != D_IN_FLIGHT {
            self.pending.not_in_flight += 1;
            return Err(DeviceError::NotInFlight(id).into());
        }
        let cap = meta_len(m);
        self.push_free(env, id)?;
        if len > cap {
            self.pending.len_too_large += 1;
            return Err(DeviceError::LenTooLarge { id, len, cap }.into());
        }
        Ok(Some(UsedBuf { id, len }))
    }

    /// Turns used-buffer notifications (interrupts) on or off, and syncs the state
    /// block. Turning them on returns whether used buffers raced in before the
    /// device could see the change (the caller must then poll again instead of
    /// sleeping).
    pub fn set_notify<E: DriverMem>(&mut self, env: &E, on: bool) -> Result<bool, QueueError> {
        self.check_broken()?;
        let l = self.layout;
        let last = self.last_used;
        let raced = if on {
            self.flags |= F_NOTIFY;
            self.used_event_off = None;
            if self.flags & F_EVENT_IDX != 0 {
                env.write_u16(l.used_event(), last)?;
            }
            env.write_u16(l.avail, 0)?;
            env.fence();
            self.used_seen != last || env.load_acquire_u16(l.used + 2)? != last
        } else {
            self.flags &= !F_NOTIFY;
            if self.flags & F_EVENT_IDX != 0 {
                let ev = last.wrapping_add(0x8000);
                env.write_u16(l.used_event(), ev)?;
                self.used_event_off = Some(ev);
            }
            env.write_u16(l.avail, AVAIL_F_NO_INTERRUPT)?;
            false
        };
        self.sync(env)?;
        Ok(raced)
    }

    /// The index to hand a (re)connecting device in `SET_VRING_BASE`: the last used
    /// index the driver consumed (0 for a fresh queue). Buffers published but not
    /// yet used are offered to the device again; they are still in flight.
    pub fn avail_base(&self) -> u16 {
        self.last_used
    }

    /// Reads the counters (the state block's plus increments not yet synced).
    pub fn counters<E: DriverMem>(&self, env: &E) -> Result<QueueCounters, QueueError> {
        let s = self.layout.state;
        let p = &self.pending;
        Ok(QueueCounters {
            bad_used_id: env.read_u64(s + S_ERR_BAD_ID)?.wrapping_add(p.bad_used_id),
            not_in_flight: env
                .read_u64(s + S_ERR_NOT_IN_FLIGHT)?
                .wrapping_add(p.not_in_flight),
            len_too_large: env.read_u64(s + S_ERR_LEN)?.wrapping_add(p.len_too_large),
            used_idx_jump: env
                .read_u64(s + S_ERR_IDX_JUMP)?
                .wrapping_add(p.used_idx_jump),
            kicks: env.read_u64(s + S_KICKS)?.wrapping_add(p.kicks),
            kicks_suppressed: env
                .read_u64(s + S_KICKS_SUPPRESSED)?
                .wrapping_add(p.kicks_suppressed),
            num_free: self.num_free,
            broken: self.flags & F_BROKEN != 0,
        })
    }
}

#[cfg(test)]
mod tests;
