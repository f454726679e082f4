//! The host kernel's network interfaces as uplinks (the first seed's idea: reuse
//! the kernel's own, unmodified drivers behind a sandboxed translation module).
//!
//! The work is split by privilege, as QEMU, DPDK and OVS split it:
//!
//! * the switch, with its privileges, opens the device ([`Tap::open`]) or the
//!   socket ([`packet::PacketSocket::open`], [`xdp::XdpProgram::open_socket`]:
//!   bound, its rings set up, the driver's state memfd made) and reads the
//!   interface's state ([`link_state`]);
//! * a driver domain, sandboxed, gets only the open descriptors and moves frames
//!   through them: [`TapQueue`] with `readv`/`writev`; for the ring kinds, the
//!   driver space ([`packet::map_space`], [`xdp::map_space`]) that the ring
//!   drivers (crates `af-packet-driver`, `af-xdp-driver`) run over, in the
//!   domain or as twins in the switch. No `open`, no `socket`, no `ioctl`.
//!
//! An uplink of several queues has a socket per queue: AF_PACKET sockets in one
//! fanout group ([`packet::Fanout`]), AF_XDP sockets behind one program
//! ([`xdp::XdpAttachment`]).
//!
//! Not done yet: offloads (the TAP is opened with the vnet header but with every
//! offload off, so the kernel hands over whole, checksummed frames and a header
//! that must be all zeroes).
//!
//! Everything read from the kernel side is checked before use ([`TapQueue::recv`],
//! the ring drivers): a short read, a frame longer than the buffer, a header
//! asking for an offload that was never enabled, a ring block that points outside
//! itself is a counted drop ([`KernelDrop`]), never trusted.
//!
//! The crate's `unsafe` code is the interface ioctls and socket options, in `sys`.

#![deny(unsafe_code)]

mod ifname;
mod kernel_drop;
mod link;
pub mod packet;
mod space;
// The crate's only unsafe code (see its module docs).
#[allow(unsafe_code)]
mod sys;
mod tap;
pub mod xdp;

pub use ifname::{IfName, IfNameError};
pub use kernel_drop::KernelDrop;
pub use link::{link_state, LinkError, LinkState};
pub use space::SpaceError;
pub use tap::{Recv, Send, Tap, TapError, TapHandle, TapIoError, TapQueue, VNET_HDR_LEN};
