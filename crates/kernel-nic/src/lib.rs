//! The host kernel's network interfaces as uplinks (the first seed's idea: reuse
//! the kernel's own, unmodified drivers behind a sandboxed translation module).
//!
//! The work is split by privilege, as QEMU, DPDK and OVS split it:
//!
//! * the switch, with its privileges, opens the device ([`Tap::open`]) or the
//!   socket ([`packet::PacketSocket::open`]: bound, its rings set up) and reads
//!   the interface's state ([`link_state`]);
//! * a driver domain, sandboxed, gets only the open descriptor and moves frames
//!   through it ([`TapQueue`]; [`packet::Rings`], which maps the AF_PACKET rings
//!   and reads receive blocks through [`packet_ring`]'s checked walk): no `open`,
//!   no `socket`, no `ioctl`.
//!
//! Not done yet: AF_XDP, several queues (fanout), and offloads (the TAP is opened
//! with the vnet header but with every offload off, so the kernel hands over
//! whole, checksummed frames and a header that must be all zeroes).
//!
//! Everything read from the kernel side is checked before use ([`TapQueue::recv`],
//! [`packet_ring`]): a short read, a frame longer than the buffer, a header
//! asking for an offload that was never enabled, a ring block that points outside
//! itself is a counted drop ([`KernelDrop`]), never trusted.
//!
//! The crate's `unsafe` code is the interface ioctls and socket options, in `sys`.

#![deny(unsafe_code)]

mod ifname;
mod kernel_drop;
mod link;
pub mod packet;
pub mod packet_ring;
// The crate's only unsafe code (see its module docs).
#[allow(unsafe_code)]
mod sys;
mod tap;
pub mod xdp;

pub use ifname::{IfName, IfNameError};
pub use kernel_drop::KernelDrop;
pub use link::{link_state, LinkError, LinkState};
pub use tap::{Recv, Send, Tap, TapError, TapHandle, TapIoError, TapQueue, VNET_HDR_LEN};
