//! The host kernel's network interfaces as uplinks (the first seed's idea: reuse
//! the kernel's own, unmodified drivers behind a sandboxed translation module).
//!
//! The work is split by privilege, as QEMU, DPDK and OVS split it:
//!
//! * the switch, with its privileges, opens the device ([`Tap::open`]) and reads
//!   the interface's state ([`link_state`]);
//! * a driver domain, sandboxed, gets only the open descriptor and moves frames
//!   through it ([`TapQueue`]): no `open`, no `socket`, no `ioctl`.
//!
//! AF_PACKET, the next kind, has its rings ([`packet`]: TPACKET_V3 receive and
//! transmit rings the switch opens and a domain maps; [`packet_ring`]: the checked
//! walk of a receive block), not yet wired to an uplink. Not done yet: the
//! AF_PACKET uplink kind, AF_XDP, several queues, and offloads (the TAP is opened
//! with the vnet header but with every offload off, so the kernel hands over
//! whole, checksummed frames and a header that must be all zeroes).
//!
//! Everything read from the kernel side is checked before use ([`TapQueue::recv`]):
//! a short read, a frame longer than the buffer, or a header asking for an offload
//! that was never enabled is a counted drop ([`KernelDrop`]), never trusted.
//!
//! The crate's `unsafe` code is the interface ioctls, in `sys`.

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

pub use ifname::{IfName, IfNameError};
pub use kernel_drop::KernelDrop;
pub use link::{link_state, LinkError, LinkState};
pub use tap::{Recv, Send, Tap, TapError, TapHandle, TapIoError, TapQueue, VNET_HDR_LEN};
