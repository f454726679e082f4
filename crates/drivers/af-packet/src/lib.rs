#![forbid(unsafe_code)]
#![deny(missing_docs)]
//! The AF_PACKET driver: an AF_PACKET socket's TPACKET_V3 receive and transmit
//! rings driven through [`driver_env::DriverEnv`], so that the same source runs
//! in a driver domain and, derived by `twin-derive`, as its twin in the switch.
//!
//! Read in this order:
//! * [`layout`]: the driver's address space: a state page, the domain's private
//!   page, then the socket's two rings (one mapping of the socket), and what a
//!   twin may touch of it.
//! * [`block`]: the checked walk of one receive block (the kernel packs frames
//!   into blocks and hands a block over whole).
//! * [`driver`]: receive (frames of the blocks the kernel handed over, each
//!   block given back once every frame of it was seen), transmit (reserve the
//!   next free slot, let the host copy a frame into it, commit; one wake-up of
//!   the kernel per batch), taking back what a down interface kept, counters.
//!
//! The rings' positions are the driver's state: the next receive block, how far
//! a block was read, the next transmit slot. They live in the state page at
//! every batch boundary, so another instance that maps the same space continues
//! where this one stopped ([`driver::AfPacket::attach`]).
//!
//! Everything the kernel (or another instance) wrote is checked before use, each
//! field read once: a block header that is not version 3, claims more packets
//! than fit or a length past the block; a packet whose header, frame or next
//! offset leaves the block's used length; a cursor in the state page that points
//! nowhere. Each is counted and the block or frame dropped.
//!
//! Limits: one socket (no fanout); a transmit frame holds at most
//! [`layout::TX_FRAME_SIZE`] less its header; no offloads (no vnet header).

pub mod block;
pub mod driver;
pub mod layout;

pub use block::{BlockCursor, Malformed};
pub use driver::{
    AfPacket, AfPacketTwin, AfPacketUpcall, DomainErrors, PacketDriverError, PacketStats,
    UpcallDispatchError,
};
pub use layout::{PacketConfig, PacketLayout, PacketLayoutError, TX_DATA_OFFSET, TX_FRAME_SIZE};
