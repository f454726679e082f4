#![forbid(unsafe_code)]
#![deny(missing_docs)]
//! The virtio-net driver (virtio 1.2, section 5.1), written once against
//! [`driver_env::DriverEnv`].
//!
//! Read in this order:
//! * [`layout`]: where everything lives in the driver's region: a state page with
//!   the configuration and counters, the driver domain's private page, the RX
//!   (queue 0) and TX (queue 1) rings and their state blocks, and a buffer pool with
//!   one fixed buffer per descriptor; and what a twin may touch of it.
//! * [`driver`]: feature selection, transmit (reserve a buffer, let the host copy a
//!   frame into it, commit, flush once per batch), receive (a burst of used RX
//!   buffers handed to a callback, then recycled with one publish), TX completion
//!   reaping, interrupt control and counters.
//!
//! The region is the driver's state: [`driver::VirtioNet`] caches the validated
//! layout, the queues' indices and counter increments, and writes them back at every
//! batch boundary (end of a TX flush, an RX burst, a notification change). Anything
//! in the region at a batch boundary can be continued by another process that maps
//! it ([`driver::VirtioNet::attach`]).
//!
//! The driver is twin-capable (crate `twin-derive`): [`VirtioNetTwin`] is its
//! fast-path entry table, [`VirtioNetUpcall`] its slow-path upcalls, and
//! [`VirtioNet::dispatch_upcall`] runs them in the driver domain. See
//! `docs/twin-drivers.md`.
//!
//! Limits: one queue pair, no offloads, no control queue, no config space (MAC,
//! link status). Frames larger than a buffer are refused on TX; on RX, with
//! MRG_RXBUF negotiated, a frame spread over more than one buffer is dropped and
//! counted (it cannot happen with the default 2 KiB buffers and 1518-byte frames).

pub mod driver;
pub mod layout;

pub use driver::{
    DomainErrors, NetError, NetStats, RxFrame, TxBuf, UpcallDispatchError, VirtioNet,
    VirtioNetTwin, VirtioNetUpcall,
};
pub use layout::{LayoutError, NetConfig, NetLayout};
