//! Driver domains (the seeds' DD/OS): one uplink's NIC driver runs in its own process,
//! the *driver domain* (DD), and reaches the switch only through an exchange region.
//!
//! * [`bootstrap`]: how the switch hands the DD every descriptor it needs over one
//!   unix socket (SCM_RIGHTS): the NIC connection, the driver's region, the exchange
//!   region, two doorbell eventfds and the four vring eventfds. The DD opens nothing
//!   itself.
//! * [`worker`]: the DD's side, the *translation module*: it moves frames between the
//!   exchange rings and the virtio-net driver, beats a heartbeat and reports its state;
//!   for a kernel interface, the loop of `kernel_domain` around one of: a TAP
//!   device (`tap_domain`), between the exchange rings and the kernel's TAP
//!   queue (`readv`/`writev` on the one descriptor it is handed); for a socket
//!   with shared rings (`ring_domain`: AF_PACKET's TPACKET_V3 rings, AF_XDP's
//!   UMEM and rings), between the exchange rings and the ring driver it runs
//!   over the socket's mapped space (or, while the switch runs that driver as
//!   a twin, only its slow paths).
//! * [`fault`]: fault injection (panic, hang, ring garbage, bogus lengths, sandbox
//!   violations) through a control word of the exchange region.
//! * [`handover`]: who runs the uplink's fast path (the DD, or the switch as inline
//!   or twin), the request/acknowledge protocol that moves it, and the `upcalls`
//!   channel through which a switch-side instance reaches the driver's slow path.
//! * [`launch`]: the switch's side: create the regions and doorbells, connect to the
//!   NIC, start the DD process (the same `twin` binary, `twin driver-domain`), hand
//!   over the descriptors, and then act as the uplink's driver through the exchange
//!   rings, validating everything the DD writes.
//!
//! Frames are copied twice in `domain` mode: from client memory into an exchange slot
//! (by the switch) and from the slot into a DMA buffer of the driver's region (by the
//! DD); the DD never maps client memory, and the NIC is given only the driver's region.
//!
//! Limits: one queue pair; a DD serves one uplink; a restarted DD gets fresh regions
//! and a fresh NIC connection (no state carries over).

#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod bootstrap;
pub mod fault;
pub mod handover;
mod kernel_domain;
pub mod launch;
mod ring_domain;
mod tap_domain;
pub mod worker;

pub use fault::Fault;
pub use launch::{DomainLink, LaunchConfig, LaunchError};
pub use worker::{serve, WorkerError};
