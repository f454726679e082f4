#![forbid(unsafe_code)]
#![deny(missing_docs)]
//! The AF_XDP driver: an AF_XDP socket's UMEM and four rings (fill, completion,
//! receive, transmit) driven through [`driver_env::DriverEnv`], so that the same
//! source runs in a driver domain and, derived by `twin-derive`, as its twin in
//! the switch.
//!
//! Read in this order:
//! * [`layout`]: the driver's address space: a state page, the domain's private
//!   page, the chunk tables, the kernel's four rings (each mapped from the socket
//!   at its own place) and the UMEM; and what a twin may touch of it.
//! * [`driver`]: receive (a burst of frames from the receive ring, each chunk
//!   given back on the fill ring, one publish), transmit (reserve a free chunk,
//!   let the host copy a frame into it, commit; one flush per batch publishes and
//!   wakes the kernel), completion reaping, counters.
//!
//! The kernel's ring indexes are the queues' state: the driver writes its side
//! (fill and transmit producers, receive and completion consumers) into the rings
//! at every batch boundary, and the chunk tables (who holds each chunk, the stack
//! of free transmit chunks) live in the region. Another instance that maps the
//! same space continues where this one stopped ([`driver::AfXdp::attach`]).
//!
//! Everything the kernel (or another instance) wrote is checked before use: an
//! index that moved by more than a ring, a chunk outside the UMEM or not the
//! kernel's to hand back, a frame that leaves its chunk, a chunk table entry
//! that makes no sense. Each is counted and the frame or chunk dropped.
//!
//! Limits: copy mode semantics (a frame is in the first bytes of its chunk on
//! transmit); one socket; the receive half of the UMEM is the fill ring's, the
//! transmit half the transmit ring's.

pub mod driver;
pub mod layout;

pub use driver::{
    AfXdp, AfXdpTwin, AfXdpUpcall, DomainErrors, TxChunk, UpcallDispatchError, XdpDriverError,
    XdpStats,
};
pub use layout::{RingOffsets, XdpConfig, XdpLayout, XdpLayoutError, FRAME_SIZE};
