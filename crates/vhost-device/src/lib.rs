//! The device side of vhost-user for virtio-net: one socket, one device, one
//! client at a time (queue 0 = RX toward the client, queue 1 = TX from the client).
//!
//! Used by the switch (one device per client port) and by the software NIC.
//!
//! # Why not `vhost-user-backend`
//!
//! `vhost-user-backend`'s daemon registers each kick eventfd in its own epoll worker
//! threads. The switch runs ONE data-path thread that must own the kick fds (it
//! busy-polls, or waits in its own epoll), so this crate implements
//! [`vhost::vhost_user::VhostUserBackendReqHandlerMut`] directly on `vhost`, in a
//! control thread per device ([`control`]), and hands the rings to the data path
//! through a generation-counted snapshot ([`shared`]).
//!
//! # Structure
//!
//! * [`listen`] creates the socket and returns the control half ([`VhostDevice`], owns
//!   the control thread; dropping it stops the thread) and the data-path half
//!   ([`DeviceHandle`], `Send`, owned by one data-path thread).
//! * [`datapath`]: [`DeviceHandle`]: `refresh`, `pop_tx`, `push_rx`, `flush_rx`.
//! * [`ring_access`]: raw access to the split rings, bounds validated once per
//!   snapshot; [`fault_fence`]: mapping client files so that a client that
//!   truncates its memory cannot crash the process (SIGBUS containment). These two
//!   modules hold all of the crate's `unsafe` code.
//! * [`budget`]: caps on the client memory mapped per client and per switch.
//! * [`stats`]: counters and drop reasons; [`ratelimit`]: log-line rate limiting.
//! * `datapath::hostile` (feature `hostile-nic`, for the software NIC's hostile
//!   mode only): a separate path that writes invalid used entries on purpose, to
//!   test drivers. Client ports never call it; nothing else changes with it.
//!
//! # Limits
//!
//! Split rings only (no packed rings, no indirect descriptors: neither is offered),
//! one queue pair, no offloads (the virtio-net header is skipped on TX and zeroed on
//! RX), no dirty-page logging (no live migration). A client that truncates the file
//! backing its memory after the memory table was accepted makes our next access
//! fault (SIGBUS); [`fault_fence`] contains that fault and fences the port off.

#![deny(missing_docs)]

pub mod budget;
pub mod control;
pub mod datapath;
pub mod fault_fence;
#[doc(hidden)]
pub mod fuzzing;
pub mod ratelimit;
pub mod ring_access;
pub mod shared;
pub mod stats;
#[cfg(test)]
mod test_log;

use std::path::Path;

pub use budget::MemoryBudget;
pub use control::{DeviceConfig, VhostDevice};
pub use datapath::{DeviceHandle, PortEvent};
pub use stats::{DropCounts, DropReason, PortStats};

/// Errors of [`listen`].
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The control plane could not be set up.
    #[error(transparent)]
    Control(#[from] control::Error),
}

/// Creates the vhost-user socket at `path` (replacing a stale socket file) and starts
/// the device's control thread. Returns the control half and the data-path half.
pub fn listen(path: &Path, cfg: DeviceConfig) -> Result<(VhostDevice, DeviceHandle), Error> {
    Ok(control::start(path, cfg)?)
}
