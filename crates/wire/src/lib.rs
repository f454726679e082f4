//! Wire formats that every side of the data path shares.
//!
//! * [`features`]: virtio and virtio-net feature bits, and the set each side offers.
//! * [`net_hdr`]: the virtio-net header that precedes every frame in a virtqueue buffer.
//! * [`ether`]: Ethernet addresses and the one header field the switch reads.
//! * [`segments`]: a frame's bytes scattered over guest or driver memory, as
//!   [`vm_memory::VolatileSlice`]s, and the copy between two such lists.
//! * [`digest`]: an order-sensitive digest of a frame sequence (for equivalence tests).
//! * [`flow`]: a frame's flow hash, to pick one of several queues.
//!
//! Nothing here allocates; everything is checked before use and never panics on
//! short or hostile input.

#![deny(missing_docs)]

pub mod digest;
pub mod ether;
pub mod features;
pub mod flow;
pub mod net_hdr;
pub mod segments;

pub use ether::MacAddr;
pub use segments::{Segments, MAX_SEGMENTS};
