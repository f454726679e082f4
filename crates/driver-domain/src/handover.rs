//! Who runs an uplink's fast path, how it changes hands, and how slow-path requests
//! (upcalls) reach the driver domain.
//!
//! **Ownership.** The fast path of the driver's queues (transmit, receive, refill,
//! completion reaping, doorbells) is run by exactly one instance at a time: the
//! driver domain's own, or the switch's (inline, or the twin over SVM). A fresh DD
//! always starts as the owner: it negotiates features, sets up the queues and posts
//! the receive buffers. A change is a request and an acknowledgement through two
//! control words of the exchange region:
//!
//! 1. *quiesce*: the current owner stops at a batch boundary, where every cached
//!    index and counter is written back to the region;
//! 2. *hand over*: the switch writes [`CONTROL_OWNER_REQUEST`]; the DD answers in
//!    [`CONTROL_OWNER_ACK`] with the same word once it has stopped (or, taking the
//!    fast path back, once it has re-read and validated the region);
//! 3. *resume*: the new owner attaches to the state in the region and continues.
//!
//! Frames never change order: toward the NIC, everything the DD took from `to_nic`
//! is in the TX ring before it acknowledges, and the switch moves what is left in
//! `to_nic` into the TX ring before any new frame; from the NIC, the DD publishes
//! everything it received before it acknowledges, and the switch delivers those
//! frames first.
//!
//! **Upcalls.** While the switch owns the fast path, the driver's slow-path routines
//! still run in the DD: the switch's environment posts each one as a 32-byte message
//! into the exchange region's `upcalls` ring ([`UpcallChannel`]); the DD decodes,
//! validates and dispatches them (`twin-derive` generates the dispatcher). Upcalls
//! are asynchronous: a full ring drops the request and counts it.

use std::os::fd::OwnedFd;
use std::sync::{Arc, Mutex};

use driver_env::{UpcallMsg, UpcallRoute, UPCALL_MAX_ARGS};
use driver_host::env::UpcallSink;
use exchange::{ExchangeRegion, Producer, RingId};
use twin_wire::Segments;

/// Control word the switch writes: the requested owner ([`Request::to_word`]).
pub const CONTROL_OWNER_REQUEST: usize = 3;
/// Control word the DD writes: the last request it carried out.
pub const CONTROL_OWNER_ACK: usize = 4;
/// Control word the DD writes: upcalls it ran.
pub const CONTROL_UPCALLS_RUN: usize = 5;
/// Control word the DD writes: upcalls it refused (undecodable, or the routine
/// failed).
pub const CONTROL_UPCALLS_REFUSED: usize = 6;

/// Who runs the fast path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Owner {
    /// The driver domain's own instance.
    Domain,
    /// An instance in the switch (inline or twin; the DD cannot tell them apart).
    Switch,
}

/// One ownership request: a sequence number (from 1) and the wanted owner.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Request {
    /// Increases with every request of one switch to one DD.
    pub seq: u64,
    /// Who is to run the fast path.
    pub owner: Owner,
}

impl Request {
    /// The control word: `seq << 1 | (owner is Switch)`; 0 means "no request".
    pub const fn to_word(self) -> u64 {
        (self.seq << 1) | matches!(self.owner, Owner::Switch) as u64
    }

    /// Decodes a control word; `None` for 0 (no request yet).
    pub const fn from_word(w: u64) -> Option<Self> {
        if w >> 1 == 0 {
            return None;
        }
        Some(Self {
            seq: w >> 1,
            owner: if w & 1 == 1 {
                Owner::Switch
            } else {
                Owner::Domain
            },
        })
    }
}

/// Bytes of one upcall message in an exchange slot.
pub const UPCALL_WIRE_LEN: usize = 32;

/// Encodes `msg`: `op` (u32 LE), 4 reserved zero bytes, then the arguments (u64 LE).
pub fn encode_upcall(msg: &UpcallMsg) -> [u8; UPCALL_WIRE_LEN] {
    let mut b = [0u8; UPCALL_WIRE_LEN];
    b[..4].copy_from_slice(&msg.op.to_le_bytes());
    for (i, a) in msg.args.iter().enumerate() {
        b[8 + 8 * i..16 + 8 * i].copy_from_slice(&a.to_le_bytes());
    }
    b
}

/// Decodes one slot; `None` when it is not exactly one well-formed message (the
/// routine's own decoder then checks the operation and arguments).
pub fn decode_upcall(frame: &Segments<'_>) -> Option<UpcallMsg> {
    if frame.len() != UPCALL_WIRE_LEN {
        return None;
    }
    let mut b = [0u8; UPCALL_WIRE_LEN];
    if frame.read_prefix(&mut b) != UPCALL_WIRE_LEN || b[4..8] != [0; 4] {
        return None;
    }
    let mut args = [0u64; UPCALL_MAX_ARGS];
    for (i, a) in args.iter_mut().enumerate() {
        let mut w = [0u8; 8];
        w.copy_from_slice(&b[8 + 8 * i..16 + 8 * i]);
        *a = u64::from_le_bytes(w);
    }
    let mut op = [0u8; 4];
    op.copy_from_slice(&b[..4]);
    Some(UpcallMsg {
        op: u32::from_le_bytes(op),
        args,
    })
}

/// The switch's end of the `upcalls` ring. Shared (behind a mutex, uncontended:
/// one data-path thread) by whichever switch-side instance runs the fast path.
#[derive(Debug)]
pub struct UpcallChannel {
    producer: Producer,
    doorbell: OwnedFd,
    posted: u64,
    dropped: u64,
}

impl UpcallChannel {
    /// The channel over `xr`'s `upcalls` ring; `doorbell` wakes the DD.
    pub fn new(xr: Arc<ExchangeRegion>, doorbell: OwnedFd) -> Self {
        Self {
            producer: Producer::new(xr, RingId::Upcalls),
            doorbell,
            posted: 0,
            dropped: 0,
        }
    }

    /// Posts `msg` and wakes the DD if it sleeps.
    pub fn post(&mut self, msg: &UpcallMsg) -> UpcallRoute {
        let bytes = encode_upcall(msg);
        let ok = match self.producer.reserve() {
            Ok(Some(slot)) => {
                slot.frame().write_prefix(&bytes);
                slot.commit(UPCALL_WIRE_LEN).is_ok()
            }
            // Full, or the DD broke the ring (its health check will notice).
            Ok(None) | Err(_) => false,
        };
        if !ok {
            self.dropped += 1;
            return UpcallRoute::Dropped;
        }
        self.producer.publish();
        if self.producer.needs_notify() {
            let _ = rustix::io::write(&self.doorbell, &1u64.to_ne_bytes());
        }
        self.posted += 1;
        UpcallRoute::Posted
    }

    /// (posted, dropped) so far.
    pub fn counts(&self) -> (u64, u64) {
        (self.posted, self.dropped)
    }
}

/// An [`UpcallSink`] over a shared [`UpcallChannel`], for a switch-side
/// environment.
#[derive(Debug, Clone)]
pub struct SharedUpcalls(pub Arc<Mutex<UpcallChannel>>);

impl UpcallSink for SharedUpcalls {
    fn post(&self, msg: UpcallMsg) -> UpcallRoute {
        match self.0.lock() {
            Ok(mut ch) => ch.post(&msg),
            Err(_) => UpcallRoute::Dropped,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_words_round_trip() {
        assert_eq!(Request::from_word(0), None);
        assert_eq!(Request::from_word(1), None);
        for (seq, owner) in [
            (1, Owner::Switch),
            (2, Owner::Domain),
            (u64::MAX >> 1, Owner::Switch),
        ] {
            let r = Request { seq, owner };
            assert_eq!(Request::from_word(r.to_word()), Some(r));
        }
    }

    #[test]
    fn upcall_messages_cross_the_ring() {
        let xr = Arc::new(
            ExchangeRegion::create(
                "upcall-test",
                exchange::Geometry {
                    slots: 4,
                    slot_size: 64,
                },
            )
            .unwrap(),
        );
        let bell = rustix::event::eventfd(0, rustix::event::EventfdFlags::NONBLOCK).unwrap();
        let mut ch = UpcallChannel::new(xr.clone(), bell);
        let msg = UpcallMsg {
            op: 2,
            args: [7, u64::MAX, 0],
        };
        for _ in 0..4 {
            assert_eq!(ch.post(&msg), UpcallRoute::Posted);
        }
        // The ring holds four: the fifth is dropped and counted.
        assert_eq!(ch.post(&msg), UpcallRoute::Dropped);
        assert_eq!(ch.counts(), (4, 1));
        let mut dd = exchange::Consumer::new(xr, RingId::Upcalls);
        let mut got = Vec::new();
        dd.poll(8, |f| got.push(decode_upcall(f))).unwrap();
        assert_eq!(got, vec![Some(msg); 4]);
    }
}
