//! The exchange region: how frames cross between the switch and a driver domain.
//!
//! In `mode=domain` the virtio-net driver runs in a separate, sandboxed driver-domain
//! (DD) process per uplink. The switch and the DD share one memfd, the *exchange
//! region*, and nothing else: the DD never maps client memory. The region holds
//!
//! * a header page ([`layout`]): magic, version, geometry, a heartbeat counter the
//!   DD increments, a DD status word and a few `u64` control fields
//!   ([`ExchangeRegion`]);
//! * two single-producer/single-consumer frame rings ([`ring`]): `to_nic` (the
//!   switch produces, the DD consumes) and `from_nic` (the DD produces, the switch
//!   consumes), with virtio EVENT_IDX-style notification suppression in both
//!   directions (data available, space available).
//!
//! The switch copies each frame from client memory into a ring slot (a
//! [`twin_wire::Segments`] over the slot, so it copies straight in); the DD copies it
//! into its DMA buffer pool; the reverse for receive.
//!
//! # Trust
//!
//! The DD is untrusted: it may write anything into the region at any time, or
//! resize nothing (the memfd is sealed against shrinking and growing, so a DD cannot
//! make the switch's mapping fault). Every handle keeps its own copy of the geometry
//! and of its own ring index and never reads them back from shared memory; every
//! shared value it does read (the peer's index, a slot length, a header word, the
//! status word) is loaded once into a local, validated, then used. A violation is an
//! error ([`ExchangeError`], [`RegionError`]), never a panic or an access outside the
//! region; the switch then restarts the DD.
//!
//! # Limits
//!
//! * Indices are `u32` and wrap; slots per ring are a power of two, at most 32768.
//! * Both rings have the same geometry; one frame per slot (no scatter across
//!   slots), so the largest frame is `slot_size - SLOT_HEADER`.
//! * Notifications themselves (eventfds) are the caller's: this crate only says
//!   *whether* to notify and whether it is safe to sleep.
//! * Single producer and single consumer per ring, across both processes; this
//!   crate cannot enforce that for the peer, but a peer that breaks it only hurts
//!   itself (its frames are garbled or reported as errors here).
//!
//! # Example
//!
//! ```
//! use std::sync::Arc;
//! use exchange::{Consumer, ExchangeRegion, Geometry, Producer, RingId};
//!
//! // Switch side: create the region, keep the to_nic producer.
//! let sw = Arc::new(ExchangeRegion::create("uplink0", Geometry::default())?);
//! let mut to_nic = Producer::new(sw.clone(), RingId::ToNic);
//! // DD side (normally another process, given the memfd): attach, take the consumer.
//! let dd = Arc::new(ExchangeRegion::attach(sw.file().try_clone()?)?);
//! let mut dd_rx = Consumer::new(dd, RingId::ToNic);
//!
//! if let Some(slot) = to_nic.reserve()? {
//!     let n = slot.frame().write_prefix(&[0xff; 60]); // copy the frame straight in
//!     slot.commit(n)?;
//! }
//! to_nic.publish(); // once per batch
//! if to_nic.needs_notify() { /* write the DD's eventfd */ }
//!
//! let got = dd_rx.poll(64, |frame| { /* copy into a DMA buffer */ let _ = frame.len(); })?;
//! assert_eq!(got, 1);
//! if !dd_rx.arm_notify() { /* nothing raced in: sleep on the eventfd */ }
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! This crate is `#![forbid(unsafe_code)]`: shared memory is touched only through
//! vm-memory's checked volatile and atomic accessors.

#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod layout;
pub mod region;
pub mod ring;

pub use layout::{Geometry, GeometryError, Layout, RingId};
pub use region::{DdState, DdStatus, ExchangeRegion, RegionError};
pub use ring::{Consumer, ExchangeError, Producer, Slot};
