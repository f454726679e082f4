//! A client port: one vhost-user socket the switch serves as a virtio-net device.
//!
//! The vhost-user control protocol runs on the port's own control thread (in
//! `vhost-device`); the data-path thread owns the [`DeviceHandle`] and learns about
//! connects and disconnects from it once per loop ([`Port::maintain`]).
//!
//! As a [`Port`], it takes frames from the client's transmit queue and delivers to
//! its receive queue; device-level drops (no receive buffers, bad chains) are
//! counted by the device under their own reasons and merged into its report.

use std::os::fd::RawFd;
use std::sync::Arc;

use twin_wire::{MacAddr, Segments};
use vhost_device::{DeviceConfig, DeviceHandle, MemoryBudget, PortEvent, VhostDevice};

use super::{Delivery, MaintainContext, Port, PortError, PortKind, PortNews};
use crate::config::ClientSpec;
use crate::counters::{PortCounters, PortReport};

/// Errors of a client port.
#[derive(Debug, thiserror::Error)]
pub enum ClientPortError {
    /// The socket could not be served.
    #[error("cannot serve client port {name} on {socket}")]
    Listen {
        /// Port name.
        name: String,
        /// Socket path.
        socket: String,
        /// Cause.
        #[source]
        source: vhost_device::Error,
    },
}

/// One client port, owned by the data-path thread.
pub struct ClientPort {
    /// The configuration it was made from.
    pub spec: ClientSpec,
    /// The data-path side of the device.
    pub handle: DeviceHandle,
    /// Times a client connected.
    pub connects: u64,
    /// Times a client went away.
    pub disconnects: u64,
    /// Keeps the control thread alive; dropped last.
    _control: VhostDevice,
}

impl std::fmt::Debug for ClientPort {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientPort")
            .field("name", &self.spec.name)
            .finish()
    }
}

impl ClientPort {
    /// Starts serving the port's socket. Its client may map at most
    /// `max_client_memory` bytes, and only what is left of the switch's `budget`.
    pub fn listen(
        spec: ClientSpec,
        max_client_memory: u64,
        budget: Arc<MemoryBudget>,
    ) -> Result<Self, ClientPortError> {
        let cfg = DeviceConfig {
            mac: spec.mac,
            max_client_memory,
            budget: Some(budget),
            ..Default::default()
        };
        let (control, handle) =
            vhost_device::listen(&spec.socket, cfg).map_err(|source| ClientPortError::Listen {
                name: spec.name.clone(),
                socket: spec.socket.display().to_string(),
                source,
            })?;
        twin_log::info_local!(port = %spec.name, socket = %spec.socket.display(), "client port listening");
        Ok(ClientPort {
            spec,
            handle,
            connects: 0,
            disconnects: 0,
            _control: control,
        })
    }

    /// Takes connect/disconnect news from the control thread. Returns the event, if
    /// any, after counting and logging it.
    pub fn refresh(&mut self) -> Option<PortEvent> {
        let ev = self.handle.refresh()?;
        match &ev {
            PortEvent::Connected { .. } => {
                self.connects += 1;
                twin_log::info_limited!(port = %self.spec.name, "client connected: {ev:?}");
            }
            PortEvent::Stopped => {
                twin_log::info_limited!(port = %self.spec.name, "client stopped its rings");
            }
            PortEvent::Disconnected => {
                self.disconnects += 1;
                twin_log::info_limited!(port = %self.spec.name, "client disconnected");
            }
        }
        Some(ev)
    }
}

impl Port for ClientPort {
    fn name(&self) -> &str {
        &self.spec.name
    }

    fn kind(&self) -> PortKind {
        PortKind::Client
    }

    fn pinned_mac(&self) -> Option<MacAddr> {
        self.spec.mac
    }

    fn vlan(&self) -> crate::vlan::PortVlan {
        self.spec.vlan
    }

    fn set_mac(&mut self, mac: Option<MacAddr>) -> bool {
        self.spec.mac = mac;
        self.handle.set_offered_mac(mac);
        true
    }

    #[inline]
    fn receive(&mut self, max: usize, sink: &mut dyn FnMut(&Segments<'_>)) -> usize {
        if !self.handle.is_ready() {
            return 0;
        }
        self.handle.pop_tx(max, sink)
    }

    #[inline]
    fn deliver(&mut self, frame: &Segments<'_>) -> Delivery {
        if !self.handle.is_ready() {
            return Delivery::Down;
        }
        match self.handle.push_rx(frame) {
            Ok(()) => Delivery::Delivered,
            Err(_) => Delivery::DroppedByPort,
        }
    }

    #[inline]
    fn flush(&mut self) {
        if self.handle.is_ready() {
            self.handle.flush_rx();
        }
    }

    fn set_notify(&mut self, on: bool) -> bool {
        self.handle.is_ready() && self.handle.set_tx_notify(on)
    }

    fn wake_fds(&self, add: &mut dyn FnMut(RawFd)) {
        // The control thread writes the wake fd on every change, so a sleeping data
        // path takes control news at once.
        add(self.handle.wake_fd());
        if let Some(fd) = self.handle.tx_kick_fd() {
            add(fd);
        }
    }

    fn wants_drain(&self) -> bool {
        self.handle.has_pending_change()
    }

    fn maintain(&mut self, _cx: &MaintainContext) -> Result<PortNews, PortError> {
        Ok(match self.refresh() {
            None => PortNews::default(),
            Some(ev) => PortNews {
                fds_changed: true,
                peer_gone: matches!(ev, PortEvent::Disconnected),
            },
        })
    }

    fn report(&self, counters: &PortCounters) -> PortReport {
        let s = self.handle.stats();
        // The device's own drops, in both directions, under its reason names.
        let extra = vhost_device::DropReason::ALL.iter().map(|r| {
            let v = s.from_client_drops.get(*r) + s.to_client_drops.get(*r);
            (r.as_str().to_string(), v)
        });
        let detail = serde_json::to_value(s).unwrap_or_default();
        PortReport::new(counters, extra, self.connects, self.disconnects, detail)
    }
}
