#![deny(missing_docs)]
#![forbid(unsafe_code)]
//! Hosts a driver (virtio-net, AF_XDP, AF_PACKET) in a process.
//!
//! * [`region`]: the driver's memory region: a memfd mapped once with vm-memory. Its
//!   driver-domain addresses (offsets) are also the "guest physical" addresses the
//!   NIC sees through the vhost-user memory table.
//! * [`env`](mod@env): [`env::DirectEnv`], the direct environment: `driver_env` traits over
//!   that mapping, and doorbells that write the NIC's kick eventfds.
//! * [`link`]: the vhost-user *frontend* connection to a NIC *device* (DPDK
//!   `net_vhost`, the project's software NIC, a switch port): features, memory
//!   table, vrings, eventfds, hang-up detection.
//! * [`fast_path`]: [`FastPath`], one driver instance's data path over any
//!   environment (direct here, SVM in the twin): reserve/commit/flush on TX, bursts
//!   on RX, stats, through the driver's fast-path entry table.
//! * [`ring_fast_path`]: [`RingFastPath`], the same for the ring drivers of
//!   kernel sockets (crates `af-xdp-driver`, `af-packet-driver`): a socket's
//!   space in a driver domain, or in the switch for its inline instance and
//!   twin.
//! * [`hosted`]: [`HostedDriver`], a [`FastPath`] with its own NIC link: what a
//!   driver domain and the traffic generator run; notification fds, hand-over.
//! * `raw_frontend` (only with the `test-utils` feature, off by default):
//!   `RawFrontend`, a vhost-user frontend whose rings the caller writes by hand, and
//!   `RawWire`, raw vhost-user messages: test tooling to play a hostile client. Test
//!   crates enable the feature in their `[dev-dependencies]`; the shipped binary
//!   does not contain it.
//!
//! Limits: one queue pair; no reconnection (make a new [`HostedDriver`] when
//! [`HostedDriver::is_connected`] turns false); no unsafe code anywhere in the crate.

pub mod env;
pub mod fast_path;
pub mod hosted;
pub mod link;
#[cfg(any(test, feature = "test-utils"))]
pub mod raw_frontend;
pub mod region;
pub mod ring_fast_path;

pub use fast_path::{FastPath, FrameMemory, HostEnv, TxSlot, UpcallFailed};
pub use hosted::{DriverConfig, DriverStats, Error, HostedDriver, UsedRingChecks};
pub use ring_fast_path::{
    PacketBell, PacketFastPath, RingDriver, RingFastPath, RingStats, TxOutcome, XdpFastPath,
};
