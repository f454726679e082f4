//! HOSTILE NIC ONLY (feature `hostile-nic`): a reflecting device that writes
//! invalid used entries on purpose, so that tests can show what a driver does with
//! a NIC that lies (`twin nic --mode hostile`).
//!
//! This is a separate path: [`DeviceHandle::hostile_reflect_tx`] takes the client's
//! frames one at a time through the very same checked code as
//! [`DeviceHandle::reflect_tx`] (`pop_batch`, `push_frame`: every validation of
//! what the *client* wrote stays), and only afterwards rewrites the used entry it
//! just wrote, as [`UsedTamper`] says, before publishing. Client ports never call
//! it; with the feature on, nothing else in the device changes.

use twin_wire::ether::{ETH_HLEN, MAX_FRAME};
use twin_wire::Segments;

use super::{log_drop, pop_batch, push_frame, Batch, DeviceHandle};
use crate::stats::DropReason;

/// What the hostile path does to the used entry of one buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UsedTamper {
    /// Written as a correct device writes it.
    Honest,
    /// The id is replaced by `queue size + head`: out of range (the buffer is
    /// never returned).
    IdOutOfRange,
    /// Written correctly, then once more: the second entry names a descriptor
    /// that is no longer in flight (a double completion).
    Duplicate,
    /// The length claims [`LONG_LENGTH_EXTRA`] bytes more than were written, more
    /// than any buffer holds.
    LongLength,
    /// Not published: the buffer is kept and never returned (a stuck used ring).
    Withhold,
    /// The used index is published [`RUNAWAY_JUMP`] ahead of the entries written:
    /// far more than the ring size.
    RunawayIndex,
}

/// How much a [`UsedTamper::LongLength`] entry adds to the true length.
pub const LONG_LENGTH_EXTRA: u32 = 0x1_0000;
/// How far a [`UsedTamper::RunawayIndex`] moves the used index past the truth.
pub const RUNAWAY_JUMP: u16 = 0x4000;

/// Which ring a tamper decision is asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ring {
    /// The client's TX queue (a frame the device took).
    Tx,
    /// The client's RX queue (a frame the device reflected).
    Rx,
}

impl DeviceHandle {
    /// HOSTILE NIC ONLY. Like [`DeviceHandle::reflect_tx`] (up to `max` frames,
    /// `edit` applied to the copy's Ethernet header, `seen` called with every frame
    /// taken), but for every used entry it writes, `tamper` chooses how it lies.
    /// Returns the number of TX chains consumed.
    pub fn hostile_reflect_tx(
        &mut self,
        max: usize,
        mut edit: impl FnMut(&mut [u8; ETH_HLEN]),
        mut seen: impl FnMut(&Segments<'_>),
        mut tamper: impl FnMut(Ring) -> UsedTamper,
    ) -> usize {
        self.check_fault();
        let mut buf = [0u8; MAX_FRAME];
        let mut done = 0usize;
        let mut broken = false;
        for _ in 0..max {
            let Some(ring) = self.tx.ring.as_ref() else {
                break;
            };
            // The head `pop_batch` is about to take (it re-reads and checks it).
            let head = ring.avail_entry(self.tx.last_avail);
            let size = u32::from(ring.size());
            let mut len = 0usize;
            let res = pop_batch(
                &mut self.tx,
                1,
                self.hdr_len,
                &mut self.stats.from_client_drops,
                &mut self.lim_tx,
                &self.name,
                &mut self.stats.from_client_packets,
                &mut self.stats.from_client_bytes,
                |f| {
                    seen(f);
                    len = f.read_prefix(&mut buf[..f.len().min(MAX_FRAME)]);
                },
            );
            match res {
                Batch::Done(0) => break,
                Batch::Done(_) => done += 1,
                Batch::Broken => {
                    broken = true;
                    break;
                }
            }
            let q = &mut self.tx;
            let (Some(ring), last) = (q.ring.as_ref(), q.next_used.wrapping_sub(1)) else {
                break;
            };
            match tamper(Ring::Tx) {
                UsedTamper::Honest => {}
                UsedTamper::IdOutOfRange => ring.set_used_elem(last, size + u32::from(head), 0),
                UsedTamper::Duplicate => {
                    ring.set_used_elem(q.next_used, u32::from(head), 0);
                    q.next_used = q.next_used.wrapping_add(1);
                }
                UsedTamper::LongLength => {
                    ring.set_used_elem(last, u32::from(head), LONG_LENGTH_EXTRA)
                }
                UsedTamper::Withhold => q.next_used = last,
                UsedTamper::RunawayIndex => q.next_used = q.next_used.wrapping_add(RUNAWAY_JUMP),
            }
            if len == 0 {
                continue;
            }
            self.hostile_push_rx(&mut buf[..len], &mut edit, &mut tamper);
        }
        self.flush_rx();
        self.finish_tx(if broken {
            Batch::Broken
        } else {
            Batch::Done(done)
        })
    }

    /// Reflects one frame into the RX queue, then lies about its used entry.
    fn hostile_push_rx(
        &mut self,
        frame: &mut [u8],
        edit: &mut impl FnMut(&mut [u8; ETH_HLEN]),
        tamper: &mut impl FnMut(Ring) -> UsedTamper,
    ) {
        let len = frame.len();
        let first = self.rx.next_used;
        let head = self
            .rx
            .ring
            .as_ref()
            .map(|r| r.avail_entry(self.rx.last_avail));
        let seg = Segments::single(vm_memory::VolatileSlice::from(frame));
        match push_frame(&mut self.rx, &seg, self.hdr_len, self.mrg, edit) {
            Ok(()) => {
                self.stats.to_client_packets += 1;
                self.stats.to_client_bytes += len as u64;
            }
            Err(r) => {
                self.stats.to_client_drops.add(r);
                log_drop(&mut self.lim_rx, &self.name, "to_client", r);
                if r == DropReason::RingBroken {
                    self.break_queue(super::RX_QUEUE);
                }
                return;
            }
        }
        let (Some(ring), Some(head)) = (self.rx.ring.as_ref(), head) else {
            return;
        };
        let written = (self.hdr_len + len) as u32;
        match tamper(Ring::Rx) {
            UsedTamper::Honest => {}
            UsedTamper::IdOutOfRange => {
                ring.set_used_elem(first, u32::from(ring.size()) + u32::from(head), written)
            }
            UsedTamper::Duplicate => {
                ring.set_used_elem(self.rx.next_used, u32::from(head), written);
                self.rx.next_used = self.rx.next_used.wrapping_add(1);
            }
            UsedTamper::LongLength => {
                ring.set_used_elem(first, u32::from(head), written + LONG_LENGTH_EXTRA)
            }
            UsedTamper::Withhold => self.rx.next_used = first,
            UsedTamper::RunawayIndex => {
                self.rx.next_used = self.rx.next_used.wrapping_add(RUNAWAY_JUMP)
            }
        }
    }
}
