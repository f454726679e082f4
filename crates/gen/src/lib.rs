#![forbid(unsafe_code)]
#![deny(missing_docs)]
//! Traffic generator: a [`driver_host::HostedDriver`] that sends numbered frames to a
//! vhost-user device and counts what comes back.
//!
//! * [`frame`]: the generator's frame format (Ethernet, ethertype 0x88B5, generator
//!   id, a u64 sequence number and a u64 send timestamp) and its parser.
//! * [`run`](mod@run): connect (retrying until a timeout), send in batches (optionally rate
//!   limited by a token bucket, optionally an exact number of frames), receive and
//!   check order, report ([`GenReport`]).
//! * [`latency`]: a fixed-size log-linear histogram for round-trip times (every
//!   frame carries a send timestamp; own frames that come back are measured, see
//!   [`run`](mod@run) and the `rtt_*` fields of [`GenReport`]).
//! * [`FrameDigest`]: an order-sensitive digest of the received frames (optional).
//!
//! It connects to any vhost-user *device* socket: a switch client port, the
//! software NIC, DPDK `net_vhost`.
//!
//! Limits: one queue pair; the clock is checked once per batch; the rate limiter
//! grants whole batches, so rates below one batch per millisecond are lumpy.

pub mod frame;
pub mod latency;
pub mod run;

pub use frame::{FrameError, GenFrame, ETHERTYPE_GEN, MAX_FRAME_LEN, MIN_FRAME_LEN, NO_TIMESTAMP};
pub use latency::LatencyHistogram;
pub use run::{run, GenConfig, GenError, GenReport, PollMode, RTT_MAX};
pub use twin_wire::digest::FrameDigest;
