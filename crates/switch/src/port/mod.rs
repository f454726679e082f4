//! The switch's one port interface: every kind of port (a client's vhost-user
//! socket, an uplink NIC driven from a driver domain) is a [`Port`], and the data
//! path forwards from any port to any other through it without knowing the kind.
//!
//! A port is the device side only. What the switch keeps about a port (its
//! counters, its learning memo, its pinned MAC) lives beside it in the data path's
//! port table, so a port implementation never sees another port or the learning
//! table, and adding a kind touches no forwarding code: implement [`Port`] and hand
//! the data path a `Box<dyn Port>`.
//!
//! Limits: a port is driven by the data-path thread only
//! (its control-plane threads talk to it through its own channels, taken in
//! [`Port::maintain`]).

pub mod client;
pub mod factory;
pub mod uplink;

use std::os::fd::RawFd;
use std::time::Instant;

use twin_wire::{MacAddr, Segments};

use crate::config::UplinkMode;
use crate::counters::{DropReason, PortReport};
use crate::ctl::FaultKind;

/// What happened to one copy of a frame handed to [`Port::deliver`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// Queued for the port's peer (published at the next [`Port::flush`]).
    Delivered,
    /// Not queued, for a reason the switch counts on this port.
    Dropped(DropReason),
    /// Not queued, for a reason the port counted itself (a device-level reason such
    /// as no receive buffers; merged into its report by [`Port::report`]).
    DroppedByPort,
    /// The port is down or not ready. The caller counts it (as [`PortKind::down_reason`])
    /// only when the port was the frame's one destination: a flood skips it.
    Down,
}

/// The kinds of port, as the report groups them and the switch names a port that is
/// down.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PortKind {
    /// A vhost-user client (a VM or an application).
    Client,
    /// A NIC, through a driver.
    Uplink,
}

impl PortKind {
    /// The drop reason for a frame whose one destination, a port of this kind, is down.
    pub const fn down_reason(self) -> DropReason {
        match self {
            PortKind::Client => DropReason::DestinationDown,
            PortKind::Uplink => DropReason::UplinkDown,
        }
    }
}

/// What [`Port::maintain`] found.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PortNews {
    /// The port's wake-up fds may have changed: rebuild the wait set.
    pub fds_changed: bool,
    /// The port's peer went away: forget the addresses learned on it.
    pub peer_gone: bool,
}

/// What the data path tells a port when it maintains it.
#[derive(Debug, Clone, Copy)]
pub struct MaintainContext {
    /// The loop's clock.
    pub now: Instant,
    /// Frames the switch has dropped so far, all ports and reasons (an uplink
    /// attributes the difference to an outage).
    pub dropped_so_far: u64,
}

/// An operator's command for one port (`twin ctl`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PortCommand {
    /// Inject a fault (tests and fault campaigns).
    Fault(FaultKind),
    /// Start again after giving up (a spent restart budget).
    Revive,
    /// Move the fast path.
    Mode(UplinkMode),
}

/// A [`PortCommand`] carried out (or under way).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandDone {
    /// The port's wake-up fds may have changed.
    pub fds_changed: bool,
}

/// Why a [`PortCommand`] was not carried out.
#[derive(Debug, thiserror::Error)]
pub enum PortCommandError {
    /// This kind of port has no such command.
    #[error("port {port} does not take this command")]
    Unsupported {
        /// Port name.
        port: String,
    },
    /// The port is not connected to its peer now.
    #[error("port {port} is not up")]
    NotUp {
        /// Port name.
        port: String,
    },
    /// The command does not fit the port's state.
    #[error("{0}")]
    Refused(String),
    /// The command failed.
    #[error("{message}")]
    Failed {
        /// What failed.
        message: String,
        /// Cause.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

/// Errors a port reports to the data path from [`Port::maintain`]; they stop the
/// switch (a port's own failures, such as a NIC going away, are handled inside it).
#[derive(Debug, thiserror::Error)]
pub enum PortError {
    /// An uplink could not start its connector.
    #[error(transparent)]
    Uplink(#[from] uplink::UplinkError),
}

/// One port of the switch, driven by the data-path thread.
pub trait Port: std::fmt::Debug + Send {
    /// The port's name (unique in the switch).
    fn name(&self) -> &str;

    /// Its kind.
    fn kind(&self) -> PortKind;

    /// The source MAC its peer must use (anti-spoofing), when configured.
    fn pinned_mac(&self) -> Option<MacAddr> {
        None
    }

    /// Its VLANs: a client port's from its spec; by default, a client port is
    /// untagged (native VLAN) and an uplink a trunk of every VLAN.
    fn vlan(&self) -> crate::vlan::PortVlan {
        match self.kind() {
            PortKind::Client => crate::vlan::PortVlan::Untagged,
            PortKind::Uplink => crate::vlan::PortVlan::Uplink,
        }
    }

    /// Changes the MAC its peer must use (and is offered, where the port offers
    /// one). Returns false for a port that has none to change (an uplink).
    fn set_mac(&mut self, _mac: Option<MacAddr>) -> bool {
        false
    }

    /// Takes up to `max` frames from the port's peer, in order, handing each to
    /// `sink`. Returns how many it took.
    fn receive(&mut self, max: usize, sink: &mut dyn FnMut(&Segments<'_>)) -> usize;

    /// Copies `frame` toward the port's peer.
    fn deliver(&mut self, frame: &Segments<'_>) -> Delivery;

    /// Publishes what was delivered since the last flush and notifies the peer when
    /// it asked to be.
    fn flush(&mut self);

    /// Event mode: asks the peer to notify on new frames (`on`) or to stop. Returns
    /// true when frames raced in (the caller must not sleep).
    fn set_notify(&mut self, on: bool) -> bool;

    /// Hands every fd that becomes readable when the port has frames or news to
    /// `add` (the data path waits on them in event mode).
    fn wake_fds(&self, add: &mut dyn FnMut(RawFd));

    /// True when the port must be drained before it takes its news (a client stops
    /// its rings only after its last frame).
    fn wants_drain(&self) -> bool {
        false
    }

    /// Takes control-plane news (connects, disconnects, link checks), once per loop.
    fn maintain(&mut self, cx: &MaintainContext) -> Result<PortNews, PortError>;

    /// Carries out an operator's command, on one of the port's queues when
    /// `queue` says which (`twin ctl fault u0:1 kill`), else on the port.
    fn command(
        &mut self,
        cmd: PortCommand,
        queue: Option<u32>,
        now: Instant,
    ) -> Result<CommandDone, PortCommandError> {
        let _ = (cmd, queue, now);
        Err(PortCommandError::Unsupported {
            port: self.name().to_string(),
        })
    }

    /// The port's part of the switch report, from the switch's counters for it plus
    /// its own.
    fn report(&self, counters: &crate::counters::PortCounters) -> PortReport;
}

/// An error and its causes on one line: "a: b: c".
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}
