//! How the project's polling loops wait for work, and how they pace what they send.
//!
//! * [`Waiter`]: the idle half of a polling loop (the switch's data path, the
//!   software NIC, the driver domain's worker). The loop does its work and tells the
//!   waiter whether a round found any; the waiter spins, yields, or arms
//!   notifications, re-checks and sleeps in epoll, according to a [`PollMode`]
//!   (busy, event, adaptive) and a [`Policy`].
//! * [`TokenBucket`]: frames per second with a burst capacity, refilled from the
//!   monotonic clock (the traffic generator and the NIC's source mode).
//!
//! Neither allocates or makes a system call in a round that found work; see each
//! type for its limits.

#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod bucket;
pub mod waiter;

pub use bucket::{BucketError, TokenBucket};
pub use waiter::{Idle, Policy, PollMode, Sources, WaitError, Waiter};
