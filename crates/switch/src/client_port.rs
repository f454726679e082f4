//! A client port: one vhost-user socket the switch serves as a virtio-net device.
//!
//! The vhost-user control protocol runs on the port's own control thread (in
//! `vhost-device`); the data-path thread owns the [`DeviceHandle`] and learns about
//! connects and disconnects from it once per loop.

use std::sync::Arc;
use tracing::info;

use vhost_device::{DeviceConfig, DeviceHandle, MemoryBudget, PortEvent, VhostDevice};

use crate::config::ClientSpec;
use crate::counters::PortCounters;
use crate::fdb::Memo;

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
    /// The switch's counters for it.
    pub counters: PortCounters,
    /// Its learning memo as an ingress port.
    pub memo: Memo,
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
        info!(port = %spec.name, socket = %spec.socket.display(), "client port listening");
        Ok(ClientPort {
            spec,
            handle,
            counters: PortCounters::default(),
            memo: Memo::default(),
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
                info!(port = %self.spec.name, "client connected: {ev:?}");
            }
            PortEvent::Stopped => {
                info!(port = %self.spec.name, "client stopped its rings");
            }
            PortEvent::Disconnected => {
                self.disconnects += 1;
                info!(port = %self.spec.name, "client disconnected");
            }
        }
        Some(ev)
    }
}
