#![forbid(unsafe_code)]
#![deny(missing_docs)]
//! A driver-side split virtqueue (virtio 1.2, section 2.7) whose state lives entirely
//! in the driver's region.
//!
//! [`Virtqueue`] is a small `Copy` handle holding only constants (where the rings are,
//! how big they are). Every piece of bookkeeping (free list, number of free
//! descriptors, shadow avail index, last seen used index, per-descriptor state and
//! posted length, error counters) is in a *queue state block* in the region, read
//! and written through [`driver_env::DriverMem`]. Another process that maps the same
//! region can [`Virtqueue::attach`] and continue the queue where this one stopped.
//!
//! What it does:
//! * single-descriptor buffers (one buffer per descriptor, no chains, no indirect
//!   tables): reserve a descriptor, commit it with an address and length, publish;
//! * batching: [`Virtqueue::flush`] publishes the avail index once and decides once
//!   whether to kick, honouring `avail_event` (EVENT_IDX) or
//!   `VRING_USED_F_NO_NOTIFY`;
//! * used-ring reclaim that validates what the device wrote: a used index that runs
//!   ahead by more than the ring size marks the queue broken; an id out of range, an
//!   id not in flight, or a length larger than the posted buffer is a counted
//!   [`DeviceError`], never a panic;
//! * driver-side interrupt suppression with `VRING_AVAIL_F_NO_INTERRUPT` or
//!   `used_event`, so a host can busy-poll or run event-driven.
//!
//! Limits: the device shares the whole region, so it could also scribble on the
//! state block; every value read back from it is range-checked, so that yields a
//! [`QueueError`], not undefined behaviour, but the queue is then unusable until
//! re-initialised. A reused descriptor completed twice across a re-post cannot be
//! told from a legitimate completion (true of every split-ring driver).

use driver_env::{DriverMem, MemFault};

/// `VIRTQ_DESC_F_WRITE`: the device writes into this buffer.
pub const DESC_F_WRITE: u16 = 2;
/// `VRING_AVAIL_F_NO_INTERRUPT`: the driver asks not to be interrupted.
pub const AVAIL_F_NO_INTERRUPT: u16 = 1;
/// `VRING_USED_F_NO_NOTIFY`: the device asks not to be kicked.
pub const USED_F_NO_NOTIFY: u16 = 1;
/// Largest split queue size (virtio 1.2, 2.7).
pub const MAX_QUEUE_SIZE: u16 = 32768;

const STATE_MAGIC: u32 = 0x5456_5131; // "TVQ1"

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

// Per-descriptor state.
const D_FREE: u16 = 0;
const D_RESERVED: u16 = 1;
const D_IN_FLIGHT: u16 = 2;

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
    /// so the rings start page-aligned). Use [`QueueLayout::end`] for the next free byte.
    pub fn new(base: u64, size: u16) -> Result<Self, QueueError> {
        if size == 0 || !size.is_power_of_two() || size > MAX_QUEUE_SIZE {
            return Err(QueueError::InvalidSize(u32::from(size)));
        }
        let n = u64::from(size);
        let desc = align_up(base, 4096);
        let avail = desc + 16 * n;
        let used = align_up(avail + 6 + 2 * n, 4);
        let state = align_up(used + 6 + 8 * n, 8);
        Ok(Self {
            size,
            desc,
            avail,
            used,
            state,
        })
    }

    /// First byte after the state block.
    pub fn end(&self) -> u64 {
        let n = u64::from(self.size);
        self.posted_len_base() + 4 * n
    }

    fn free_stack(&self, i: u16) -> u64 {
        self.state + S_FREE_STACK + 2 * u64::from(i)
    }
    fn desc_state_base(&self) -> u64 {
        self.state + S_FREE_STACK + 2 * u64::from(self.size)
    }
    fn desc_state(&self, id: u16) -> u64 {
        self.desc_state_base() + 2 * u64::from(id)
    }
    fn posted_len_base(&self) -> u64 {
        align_up(self.desc_state_base() + 2 * u64::from(self.size), 4)
    }
    fn posted_len(&self, id: u16) -> u64 {
        self.posted_len_base() + 4 * u64::from(id)
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

/// A handle on one split virtqueue in the region. Holds constants only.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Virtqueue {
    layout: QueueLayout,
    index: u16,
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
        let q = Self::checked(env, layout, index)?;
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
        Ok(q)
    }

    /// Takes over a queue that was initialised (possibly by another process) at
    /// `layout`.
    pub fn attach<E: DriverMem>(
        env: &E,
        layout: QueueLayout,
        index: u16,
    ) -> Result<Self, QueueError> {
        let q = Self::checked(env, layout, index)?;
        if env.read_u32(layout.state + S_MAGIC)? != STATE_MAGIC
            || env.read_u16(layout.state + S_SIZE)? != layout.size
        {
            return Err(QueueError::NotInitialised(layout.state));
        }
        Ok(q)
    }

    fn checked<E: DriverMem>(env: &E, layout: QueueLayout, index: u16) -> Result<Self, QueueError> {
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
        Ok(Self { layout, index })
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
    pub fn event_idx<E: DriverMem>(&self, env: &E) -> Result<bool, QueueError> {
        Ok(env.read_u16(self.layout.state + S_FLAGS)? & F_EVENT_IDX != 0)
    }

    fn flags<E: DriverMem>(&self, env: &E) -> Result<u16, QueueError> {
        let f = env.read_u16(self.layout.state + S_FLAGS)?;
        if f & F_BROKEN != 0 {
            return Err(QueueError::Broken(self.index));
        }
        Ok(f)
    }

    fn mark_broken<E: DriverMem>(&self, env: &E) {
        if let Ok(f) = env.read_u16(self.layout.state + S_FLAGS) {
            // Best effort: if even this write faults, the next call faults too.
            let _ = env.write_u16(self.layout.state + S_FLAGS, f | F_BROKEN);
        }
    }

    fn bump<E: DriverMem>(&self, env: &E, off: u64) -> Result<(), QueueError> {
        let a = self.layout.state + off;
        env.write_u64(a, env.read_u64(a)?.wrapping_add(1))?;
        Ok(())
    }

    /// Number of free descriptors.
    pub fn num_free<E: DriverMem>(&self, env: &E) -> Result<u16, QueueError> {
        let n = env.read_u16(self.layout.state + S_NUM_FREE)?;
        if n > self.layout.size {
            self.mark_broken(env);
            return Err(QueueError::Broken(self.index));
        }
        Ok(n)
    }

    /// Takes a free descriptor, or `None` when all are reserved or in flight.
    pub fn reserve<E: DriverMem>(&self, env: &E) -> Result<Option<u16>, QueueError> {
        let n = self.num_free(env)?;
        if n == 0 {
            return Ok(None);
        }
        let id = env.read_u16(self.layout.free_stack(n - 1))?;
        if id >= self.layout.size || env.read_u16(self.layout.desc_state(id))? != D_FREE {
            self.mark_broken(env);
            return Err(QueueError::Broken(self.index));
        }
        env.write_u16(self.layout.desc_state(id), D_RESERVED)?;
        env.write_u16(self.layout.state + S_NUM_FREE, n - 1)?;
        Ok(Some(id))
    }

    fn push_free<E: DriverMem>(&self, env: &E, id: u16) -> Result<(), QueueError> {
        let n = self.num_free(env)?;
        if n >= self.layout.size {
            self.mark_broken(env);
            return Err(QueueError::Broken(self.index));
        }
        env.write_u16(self.layout.desc_state(id), D_FREE)?;
        env.write_u16(self.layout.free_stack(n), id)?;
        env.write_u16(self.layout.state + S_NUM_FREE, n + 1)?;
        Ok(())
    }

    fn expect_state<E: DriverMem>(&self, env: &E, id: u16, want: u16) -> Result<(), QueueError> {
        if id >= self.layout.size || env.read_u16(self.layout.desc_state(id))? != want {
            return Err(QueueError::NotReserved(id));
        }
        Ok(())
    }

    /// Returns a reserved descriptor to the free list without posting it.
    pub fn cancel<E: DriverMem>(&self, env: &E, id: u16) -> Result<(), QueueError> {
        self.expect_state(env, id, D_RESERVED)?;
        self.push_free(env, id)
    }

    /// Posts reserved descriptor `id` for the buffer `[addr, addr + len)` (device
    /// writable when `device_writes`). Visible to the device only after
    /// [`Virtqueue::flush`].
    pub fn commit<E: DriverMem>(
        &self,
        env: &E,
        id: u16,
        addr: u64,
        len: u32,
        device_writes: bool,
    ) -> Result<(), QueueError> {
        self.expect_state(env, id, D_RESERVED)?;
        let l = &self.layout;
        let d = l.desc + 16 * u64::from(id);
        env.write_u64(d, addr)?;
        env.write_u32(d + 8, len)?;
        env.write_u16(d + 12, if device_writes { DESC_F_WRITE } else { 0 })?;
        env.write_u16(d + 14, 0)?;
        env.write_u32(l.posted_len(id), len)?;
        env.write_u16(l.desc_state(id), D_IN_FLIGHT)?;
        let shadow = env.read_u16(l.state + S_SHADOW_AVAIL)?;
        env.write_u16(l.avail_ring(shadow & (l.size - 1)), id)?;
        env.write_u16(l.state + S_SHADOW_AVAIL, shadow.wrapping_add(1))?;
        Ok(())
    }

    /// Reserves and commits in one step. `Ok(None)`: no free descriptor.
    pub fn add<E: DriverMem>(
        &self,
        env: &E,
        addr: u64,
        len: u32,
        device_writes: bool,
    ) -> Result<Option<u16>, QueueError> {
        let Some(id) = self.reserve(env)? else {
            return Ok(None);
        };
        self.commit(env, id, addr, len, device_writes)?;
        Ok(Some(id))
    }

    /// Publishes everything committed since the last flush (one release store of
    /// `avail.idx`) and decides once whether the device wants a kick. Returns
    /// whether it kicked.
    pub fn flush<E: driver_env::DriverEnv>(&self, env: &E) -> Result<bool, QueueError> {
        if self.publish(env)? {
            env.kick(self.index);
            self.bump(env, S_KICKS)?;
            Ok(true)
        } else {
            Ok(false)
        }
    }

    /// The first half of [`Virtqueue::flush`]: publishes and returns whether a kick
    /// is needed, without kicking.
    pub fn publish<E: DriverMem>(&self, env: &E) -> Result<bool, QueueError> {
        let l = &self.layout;
        let flags = self.flags(env)?;
        let new = env.read_u16(l.state + S_SHADOW_AVAIL)?;
        let old = env.read_u16(l.state + S_PUBLISHED)?;
        if new == old {
            return Ok(false);
        }
        env.store_release_u16(l.avail + 2, new)?;
        env.write_u16(l.state + S_PUBLISHED, new)?;
        // Order the index store before reading the device's suppression state.
        env.fence();
        let kick = if flags & F_EVENT_IDX != 0 {
            need_event(env.read_u16(l.avail_event())?, new, old)
        } else {
            env.read_u16(l.used)? & USED_F_NO_NOTIFY == 0
        };
        if !kick {
            self.bump(env, S_KICKS_SUPPRESSED)?;
        }
        Ok(kick)
    }

    /// Whether the device has used buffers the driver has not reclaimed yet.
    pub fn has_used<E: DriverMem>(&self, env: &E) -> Result<bool, QueueError> {
        let last = env.read_u16(self.layout.state + S_LAST_USED)?;
        Ok(env.load_acquire_u16(self.layout.used + 2)? != last)
    }

    /// Reclaims the next used buffer. `Ok(None)`: nothing (more) to reclaim.
    /// A [`QueueError::Device`] error consumed one bad used entry and counted it;
    /// call again for the next one (see [`QueueError::is_recoverable`]).
    pub fn pop_used<E: DriverMem>(&self, env: &E) -> Result<Option<UsedBuf>, QueueError> {
        let l = &self.layout;
        let flags = self.flags(env)?;
        let last = env.read_u16(l.state + S_LAST_USED)?;
        let now = env.load_acquire_u16(l.used + 2)?;
        if now == last {
            if flags & (F_NOTIFY | F_EVENT_IDX) == F_EVENT_IDX {
                // Interrupts off under EVENT_IDX: keep used_event half a ring-space away.
                env.write_u16(l.used_event(), last.wrapping_add(0x8000))?;
            }
            return Ok(None);
        }
        if now.wrapping_sub(last) > l.size {
            self.bump(env, S_ERR_IDX_JUMP)?;
            self.mark_broken(env);
            return Err(DeviceError::UsedIdxJump { last, now }.into());
        }
        let e = l.used_ring(last & (l.size - 1));
        let raw_id = env.read_u32(e)?;
        let len = env.read_u32(e + 4)?;
        env.write_u16(l.state + S_LAST_USED, last.wrapping_add(1))?;
        let id = match u16::try_from(raw_id) {
            Ok(id) if id < l.size => id,
            _ => {
                self.bump(env, S_ERR_BAD_ID)?;
                return Err(DeviceError::BadUsedId(raw_id).into());
            }
        };
        if env.read_u16(l.desc_state(id))? != D_IN_FLIGHT {
            self.bump(env, S_ERR_NOT_IN_FLIGHT)?;
            return Err(DeviceError::NotInFlight(id).into());
        }
        let cap = env.read_u32(l.posted_len(id))?;
        self.push_free(env, id)?;
        if len > cap {
            self.bump(env, S_ERR_LEN)?;
            return Err(DeviceError::LenTooLarge { id, len, cap }.into());
        }
        Ok(Some(UsedBuf { id, len }))
    }

    /// Turns used-buffer notifications (interrupts) on or off. Turning them on
    /// returns whether used buffers raced in before the device could see the change
    /// (the caller must then poll again instead of sleeping).
    pub fn set_notify<E: DriverMem>(&self, env: &E, on: bool) -> Result<bool, QueueError> {
        let l = &self.layout;
        let flags = self.flags(env)?;
        let last = env.read_u16(l.state + S_LAST_USED)?;
        if on {
            env.write_u16(l.state + S_FLAGS, flags | F_NOTIFY)?;
            if flags & F_EVENT_IDX != 0 {
                env.write_u16(l.used_event(), last)?;
            }
            env.write_u16(l.avail, 0)?;
            env.fence();
            Ok(env.load_acquire_u16(l.used + 2)? != last)
        } else {
            env.write_u16(l.state + S_FLAGS, flags & !F_NOTIFY)?;
            if flags & F_EVENT_IDX != 0 {
                env.write_u16(l.used_event(), last.wrapping_add(0x8000))?;
            }
            env.write_u16(l.avail, AVAIL_F_NO_INTERRUPT)?;
            Ok(false)
        }
    }

    /// The avail index to hand the device in `SET_VRING_BASE`: where the device starts
    /// reading the avail ring. That is the driver's last consumed used index (0 for a
    /// fresh queue): buffers published but not yet returned are offered again. Not the
    /// published index — a device told to start there would never see the RX buffers
    /// posted before it attached.
    pub fn avail_base<E: DriverMem>(&self, env: &E) -> Result<u16, QueueError> {
        Ok(env.read_u16(self.layout.state + S_LAST_USED)?)
    }

    /// Reads the counters.
    pub fn counters<E: DriverMem>(&self, env: &E) -> Result<QueueCounters, QueueError> {
        let s = self.layout.state;
        Ok(QueueCounters {
            bad_used_id: env.read_u64(s + S_ERR_BAD_ID)?,
            not_in_flight: env.read_u64(s + S_ERR_NOT_IN_FLIGHT)?,
            len_too_large: env.read_u64(s + S_ERR_LEN)?,
            used_idx_jump: env.read_u64(s + S_ERR_IDX_JUMP)?,
            kicks: env.read_u64(s + S_KICKS)?,
            kicks_suppressed: env.read_u64(s + S_KICKS_SUPPRESSED)?,
            num_free: env.read_u16(s + S_NUM_FREE)?,
            broken: env.read_u16(s + S_FLAGS)? & F_BROKEN != 0,
        })
    }
}

#[cfg(test)]
mod tests;
