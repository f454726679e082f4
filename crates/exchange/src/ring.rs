//! The two single-producer/single-consumer frame rings of an exchange region.
//!
//! A ring has `N` slots (a power of two) and two free-running `u32` indices in shared
//! memory: the producer index (frames published) and the consumer index (frames
//! released). Each side keeps its own index locally and only *writes* it to shared
//! memory; it never reads it back, so the peer cannot move it. The peer's index is
//! loaded once per batch (acquire), checked to lie within one ring of ours and not to
//! go backwards, and only then used.
//!
//! * [`Producer`]: [`reserve`](Producer::reserve) a slot, copy the frame into its
//!   [`Segments`], [`commit`](Slot::commit) the length; after a batch,
//!   [`publish`](Producer::publish) once (one release store) and ask
//!   [`needs_notify`](Producer::needs_notify) whether the consumer is asleep.
//! * [`Consumer`]: [`poll`](Consumer::poll) hands each frame to a closure as
//!   [`Segments`] over the slot, then releases the whole batch with one release
//!   store; [`needs_notify`](Consumer::needs_notify) says whether the producer waits
//!   for space.
//!
//! Notification suppression works like virtio `EVENT_IDX`: a side about to sleep
//! writes "wake me when your index passes X" into its own cache line, issues a full
//! fence and re-checks ([`Consumer::arm_notify`], [`Producer::arm_notify`]); the
//! other side, after storing its index, issues a full fence and notifies only if it
//! moved past X since its last check. Busy-polling sides never arm and are never
//! notified (except once per 2^32 frames, when a stale X comes round again).
//!
//! Limits: one frame per slot; nothing here blocks or touches eventfds; handles are
//! for one region lifetime (indices start at zero). A frame's bytes may be changed
//! by a hostile peer while the closure copies them: the copy then holds garbage,
//! which is the peer's problem, never a memory-safety one. Nothing allocates per
//! frame.

use std::sync::atomic::{fence, AtomicU32, Ordering};
use std::sync::Arc;

use twin_wire::Segments;
use vm_memory::VolatileSlice;

use crate::layout::{
    RingId, MIN_FRAME, OFF_CONS_EVENT, OFF_CONS_IDX, OFF_PROD_EVENT, OFF_PROD_IDX, SLOT_HEADER,
};
use crate::region::ExchangeRegion;

/// Error of this module.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ExchangeError {
    /// The peer's index is more than one ring away from ours, or went backwards.
    #[error("peer index {peer} is not within one ring of local index {local}")]
    IndexRunaway {
        /// The peer's index as read.
        peer: u32,
        /// Our index.
        local: u32,
    },
    /// A slot holds a frame length larger than the slot or shorter than an
    /// Ethernet header. The frames before it in this batch were delivered and
    /// released.
    #[error("slot of ring index {index} holds invalid frame length {len} (after {consumed} good frames)")]
    BadLength {
        /// Ring index of the slot.
        index: u32,
        /// The length as read.
        len: u32,
        /// Frames delivered by this `poll` before the bad one.
        consumed: usize,
    },
    /// A constant header word changed (magic or geometry).
    #[error("exchange header corrupt at offset {offset:#x} (reads {found:#x})")]
    Corrupt {
        /// Offset of the word.
        offset: u64,
        /// What it reads.
        found: u64,
    },
    /// `commit` with a length outside `MIN_FRAME..=capacity` (a local bug).
    #[error(
        "cannot commit a {len}-byte frame into a slot of {capacity} bytes (minimum {MIN_FRAME})"
    )]
    FrameSize {
        /// Requested length.
        len: usize,
        /// Slot capacity.
        capacity: u32,
    },
    /// A ring field could not be accessed (cannot happen for a validated region).
    #[error("exchange ring access at {0:#x} failed")]
    Access(u64),
}

impl ExchangeError {
    /// Frames delivered by the failing `poll` before the error (0 for errors found
    /// before any frame).
    pub fn consumed(&self) -> usize {
        match self {
            Self::BadLength { consumed, .. } => *consumed,
            _ => 0,
        }
    }
}

/// virtio's `vring_need_event`: did the index move from `old` to `new` past `event`?
#[inline]
fn need_event(event: u32, new: u32, old: u32) -> bool {
    new.wrapping_sub(event).wrapping_sub(1) < new.wrapping_sub(old)
}

/// What both handles need about one ring: fixed at construction, local.
#[derive(Debug, Clone, Copy)]
struct RingGeo {
    ctrl: u64,
    slots: u64,
    mask: u32,
    size: u32,
    slot_size: u64,
    capacity: u32,
}

impl RingGeo {
    fn new(region: &ExchangeRegion, ring: RingId) -> Self {
        let g = region.geometry();
        let l = region.layout();
        Self {
            ctrl: l.ring(ring),
            slots: l.slots(ring),
            mask: g.slots - 1,
            size: g.slots,
            slot_size: u64::from(g.slot_size),
            capacity: g.frame_capacity(),
        }
    }

    #[inline]
    fn slot(&self, idx: u32) -> u64 {
        self.slots + u64::from(idx & self.mask) * self.slot_size
    }
}

#[inline]
fn atomic(region: &ExchangeRegion, off: u64) -> Result<&AtomicU32, ExchangeError> {
    region.u32_at(off).map_err(|_| ExchangeError::Access(off))
}

#[inline]
fn check_header(region: &ExchangeRegion) -> Result<(), ExchangeError> {
    match region.header_mismatch() {
        None => Ok(()),
        Some((offset, found)) => Err(ExchangeError::Corrupt { offset, found }),
    }
}

/// The producing end of a ring.
#[derive(Debug)]
pub struct Producer {
    region: Arc<ExchangeRegion>,
    geo: RingGeo,
    /// Next index to fill (local only).
    prod: u32,
    /// Last index stored to shared memory.
    published: u32,
    /// `published` at the last `needs_notify`.
    checked: u32,
    /// Last validated consumer index.
    cons: u32,
}

/// A reserved slot: copy the frame into [`frame`](Slot::frame), then
/// [`commit`](Slot::commit). Dropping it without a commit leaves the ring as it was.
#[derive(Debug)]
pub struct Slot<'p> {
    region: &'p ExchangeRegion,
    len_at: u64,
    capacity: u32,
    prod: &'p mut u32,
    // Not a `Segments`: that is a few hundred bytes, and moving it out of
    // `reserve`'s `Result<Option<_>>` cost more than the frame copy.
    area: VolatileSlice<'p>,
}

impl<'p> Slot<'p> {
    /// The slot's frame area (`capacity()` bytes, one segment). Built on each
    /// call; call it once per frame.
    #[inline]
    pub fn frame(&self) -> Segments<'p> {
        Segments::single(self.area)
    }

    /// Largest frame the slot holds.
    pub fn capacity(&self) -> u32 {
        self.capacity
    }

    /// Records the frame's length and moves the producer on (locally: the consumer
    /// sees it after [`Producer::publish`]).
    pub fn commit(self, len: usize) -> Result<(), ExchangeError> {
        let ok = u32::try_from(len)
            .ok()
            .filter(|l| (MIN_FRAME..=self.capacity).contains(l));
        let Some(l) = ok else {
            return Err(ExchangeError::FrameSize {
                len,
                capacity: self.capacity,
            });
        };
        // Relaxed: ordered before the consumer's read by publish's release store.
        atomic(self.region, self.len_at)?.store(l, Ordering::Relaxed);
        *self.prod = self.prod.wrapping_add(1);
        Ok(())
    }

    /// Records `len_field` as the slot's length without any check and moves the
    /// producer on: what a broken or malicious peer does. For fault injection only;
    /// the consumer must refuse it.
    pub fn commit_unchecked(self, len_field: u32) -> Result<(), ExchangeError> {
        atomic(self.region, self.len_at)?.store(len_field, Ordering::Relaxed);
        *self.prod = self.prod.wrapping_add(1);
        Ok(())
    }
}

impl Producer {
    /// The producing end of `ring`: the switch takes [`RingId::ToNic`] and
    /// [`RingId::Upcalls`], the DD [`RingId::FromNic`]. One producer per ring per
    /// region at a time.
    pub fn new(region: Arc<ExchangeRegion>, ring: RingId) -> Self {
        let geo = RingGeo::new(&region, ring);
        Self {
            region,
            geo,
            prod: 0,
            published: 0,
            checked: 0,
            cons: 0,
        }
    }

    /// The region.
    pub fn region(&self) -> &Arc<ExchangeRegion> {
        &self.region
    }

    /// Re-reads the consumer index (once, acquire) and validates it: it must lie
    /// between the last one seen and what we published.
    fn refresh(&mut self) -> Result<(), ExchangeError> {
        check_header(&self.region)?;
        let c = atomic(&self.region, self.geo.ctrl + OFF_CONS_IDX)?.load(Ordering::Acquire);
        if c.wrapping_sub(self.cons) > self.published.wrapping_sub(self.cons) {
            return Err(ExchangeError::IndexRunaway {
                peer: c,
                local: self.published,
            });
        }
        self.cons = c;
        Ok(())
    }

    /// Free slots, after re-reading the consumer index.
    pub fn available(&mut self) -> Result<usize, ExchangeError> {
        self.refresh()?;
        Ok((self.geo.size - self.prod.wrapping_sub(self.cons)) as usize)
    }

    /// The next free slot, or `None` when the ring is full. The consumer index is
    /// read only when the ring looks full from what we last saw.
    pub fn reserve(&mut self) -> Result<Option<Slot<'_>>, ExchangeError> {
        if self.prod.wrapping_sub(self.cons) >= self.geo.size {
            self.refresh()?;
            if self.prod.wrapping_sub(self.cons) >= self.geo.size {
                return Ok(None);
            }
        }
        let off = self.geo.slot(self.prod);
        let area = self
            .region
            .bytes(off + u64::from(SLOT_HEADER), self.geo.capacity as usize)
            .ok_or(ExchangeError::Access(off))?;
        Ok(Some(Slot {
            region: &self.region,
            len_at: off,
            capacity: self.geo.capacity,
            prod: &mut self.prod,
            area,
        }))
    }

    /// Committed frames not yet published.
    pub fn pending(&self) -> u32 {
        self.prod.wrapping_sub(self.published)
    }

    /// Frames published but not yet taken by a consumer standing at index `cons`,
    /// by this producer's own count and at most the ring's size: a bound that
    /// nothing the peer writes into the ring can raise (for draining the ring after
    /// the consumer's role moved, [`Consumer::resume`]).
    pub fn outstanding_from(&self, cons: u32) -> usize {
        self.published.wrapping_sub(cons).min(self.geo.size) as usize
    }

    /// Makes every committed frame visible to the consumer: one release store.
    pub fn publish(&mut self) {
        if self.prod == self.published {
            return;
        }
        if let Ok(a) = atomic(&self.region, self.geo.ctrl + OFF_PROD_IDX) {
            a.store(self.prod, Ordering::Release);
            self.published = self.prod;
        }
    }

    /// After [`publish`](Self::publish): whether the consumer asked to be woken for
    /// the frames published since the last call. Call once per batch.
    pub fn needs_notify(&mut self) -> bool {
        if self.published == self.checked {
            return false;
        }
        // Pairs with the consumer's fence in `arm_notify`: either it sees our index
        // or we see its event index.
        fence(Ordering::SeqCst);
        let Ok(a) = atomic(&self.region, self.geo.ctrl + OFF_CONS_EVENT) else {
            return true;
        };
        let event = a.load(Ordering::Relaxed);
        let old = self.checked;
        self.checked = self.published;
        need_event(event, self.published, old)
    }

    /// Before sleeping on a full ring: asks the consumer to notify when it frees a
    /// slot. Returns true when space (or a bad consumer index, which `reserve`
    /// reports) raced in: do not sleep, call `reserve` again.
    pub fn arm_notify(&mut self) -> bool {
        let event = self.prod.wrapping_sub(self.geo.size);
        let Ok(ev) = atomic(&self.region, self.geo.ctrl + OFF_PROD_EVENT) else {
            return true;
        };
        ev.store(event, Ordering::Relaxed);
        fence(Ordering::SeqCst);
        let Ok(ci) = atomic(&self.region, self.geo.ctrl + OFF_CONS_IDX) else {
            return true;
        };
        let c = ci.load(Ordering::Acquire);
        self.prod.wrapping_sub(c) != self.geo.size
    }
}

/// The consuming end of a ring.
#[derive(Debug)]
pub struct Consumer {
    region: Arc<ExchangeRegion>,
    geo: RingGeo,
    /// Next index to read (local only).
    cons: u32,
    /// Last validated producer index.
    seen: u32,
    /// `cons` at the last `needs_notify`.
    checked: u32,
}

impl Consumer {
    /// The consuming end of `ring`: the switch takes [`RingId::FromNic`], the DD
    /// [`RingId::ToNic`] and [`RingId::Upcalls`]. One consumer per ring per region at
    /// a time; while a twin owns the fast path, the switch also consumes what is
    /// left in `to_nic` (the handover protocol makes the DD stop first).
    pub fn new(region: Arc<ExchangeRegion>, ring: RingId) -> Self {
        let geo = RingGeo::new(&region, ring);
        Self {
            region,
            geo,
            cons: 0,
            seen: 0,
            checked: 0,
        }
    }

    /// A consuming end that continues where the previous consumer of `ring` stopped
    /// (the shared consumer index), for a handover of the consuming role between
    /// processes. The index is untrusted: the next [`Consumer::poll`] validates it
    /// against the producer's like any other.
    pub fn resume(region: Arc<ExchangeRegion>, ring: RingId) -> Result<Self, ExchangeError> {
        let geo = RingGeo::new(&region, ring);
        let cons = atomic(&region, geo.ctrl + OFF_CONS_IDX)?.load(Ordering::Acquire);
        Ok(Self {
            region,
            geo,
            cons,
            seen: cons,
            checked: cons,
        })
    }

    /// The region.
    pub fn region(&self) -> &Arc<ExchangeRegion> {
        &self.region
    }

    /// The index of the next frame to take.
    pub fn position(&self) -> u32 {
        self.cons
    }

    /// Hands up to `max` published frames, in order, to `f`, then releases them
    /// with one release store. Returns how many.
    ///
    /// Errors (the peer is broken or hostile; restart it): a changed header, a
    /// producer index more than one ring ahead or moved backwards (nothing is
    /// delivered), a slot with an invalid length (the frames before it are
    /// delivered and released, see [`ExchangeError::consumed`]; the bad slot is
    /// not, so the next poll fails again).
    ///
    /// The frame's bytes stay in shared memory that the peer can change while `f`
    /// runs: copy what you need to decide on (the Ethernet header) into a local
    /// first, then decide on the copy.
    pub fn poll<F>(&mut self, max: usize, mut f: F) -> Result<usize, ExchangeError>
    where
        F: FnMut(&Segments<'_>),
    {
        check_header(&self.region)?;
        let p = atomic(&self.region, self.geo.ctrl + OFF_PROD_IDX)?.load(Ordering::Acquire);
        let ahead = p.wrapping_sub(self.cons);
        if ahead > self.geo.size || ahead < self.seen.wrapping_sub(self.cons) {
            return Err(ExchangeError::IndexRunaway {
                peer: p,
                local: self.cons,
            });
        }
        self.seen = p;
        let n = (ahead as usize).min(max);
        let mut done = 0;
        let mut result = Ok(());
        // One `Segments` per batch, refilled per frame: it is a few hundred bytes
        // (room for 16 segments), too big to build and move once per frame.
        let mut frame = Segments::new();
        while done < n {
            let off = self.geo.slot(self.cons);
            // Read once; validated; then used.
            let len = match atomic(&self.region, off) {
                Ok(a) => a.load(Ordering::Relaxed),
                Err(e) => {
                    result = Err(e);
                    break;
                }
            };
            if !(MIN_FRAME..=self.geo.capacity).contains(&len) {
                result = Err(ExchangeError::BadLength {
                    index: self.cons,
                    len,
                    consumed: done,
                });
                break;
            }
            let Some(area) = self
                .region
                .bytes(off + u64::from(SLOT_HEADER), len as usize)
            else {
                result = Err(ExchangeError::Access(off));
                break;
            };
            frame.truncate(0);
            if frame.push(area).is_err() {
                // Cannot happen: the list is empty.
                result = Err(ExchangeError::Access(off));
                break;
            }
            f(&frame);
            self.cons = self.cons.wrapping_add(1);
            done += 1;
        }
        if done > 0 {
            atomic(&self.region, self.geo.ctrl + OFF_CONS_IDX)?.store(self.cons, Ordering::Release);
        }
        result.map(|()| done)
    }

    /// Before sleeping: asks the producer to notify when it publishes past what we
    /// consumed. Returns true when frames raced in (or the producer index is bad,
    /// which `poll` reports): do not sleep, poll again.
    pub fn arm_notify(&mut self) -> bool {
        let Ok(ev) = atomic(&self.region, self.geo.ctrl + OFF_CONS_EVENT) else {
            return true;
        };
        ev.store(self.cons, Ordering::Relaxed);
        // Pairs with the producer's fence in `needs_notify`.
        fence(Ordering::SeqCst);
        let Ok(pi) = atomic(&self.region, self.geo.ctrl + OFF_PROD_IDX) else {
            return true;
        };
        pi.load(Ordering::Acquire) != self.cons
    }

    /// After [`poll`](Self::poll): whether the producer asked to be woken for the
    /// slots released since the last call. Call once per batch.
    pub fn needs_notify(&mut self) -> bool {
        if self.cons == self.checked {
            return false;
        }
        fence(Ordering::SeqCst);
        let Ok(a) = atomic(&self.region, self.geo.ctrl + OFF_PROD_EVENT) else {
            return true;
        };
        let event = a.load(Ordering::Relaxed);
        let old = self.checked;
        self.checked = self.cons;
        need_event(event, self.cons, old)
    }
}

#[cfg(test)]
mod tests;
