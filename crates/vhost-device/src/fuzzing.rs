//! The in-process harness of the fuzz targets under `fuzz/` (`vhost_user_messages`,
//! `device_rings`): **not** part of the crate's API, hidden from its documentation,
//! and used by nothing else.
//!
//! It exposes only what the targets need of the crate-private control plane:
//!
//! * [`FuzzDevice`]: a request [`Handler`] and the data-path [`DeviceHandle`] of
//!   one device, on one thread, with no socket: a target calls the handler's
//!   [`VhostUserBackendReqHandlerMut`](vhost::vhost_user::VhostUserBackendReqHandlerMut)
//!   methods directly, as `vhost` would after decoding a message, and runs the
//!   data path between them. The one difference from the control thread: a ring
//!   stop (`GET_VRING_BASE`) does not wait for the data path's acknowledgement
//!   (nobody else could give it; the wait would cost
//!   [`STOP_TIMEOUT`](crate::shared::STOP_TIMEOUT) per message).
//! * [`device_handle`]: a data-path handle on a [`Shared`] the target publishes
//!   snapshots into itself (the approach of `datapath/tests.rs`).

use std::sync::Arc;

use crate::control::{DeviceConfig, Handler};
use crate::datapath::DeviceHandle;
use crate::shared::{Error, Shared};

/// A device without a socket: the request handler of one connection and the
/// data-path handle, driven from one thread.
#[derive(Debug)]
pub struct FuzzDevice {
    handler: Handler,
    handle: DeviceHandle,
    shared: Arc<Shared>,
    cfg: DeviceConfig,
    connection: u64,
}

impl FuzzDevice {
    /// A device configured by `cfg`, a client connected (connection 1).
    ///
    /// # Errors
    /// The device's wake-up eventfd could not be created.
    pub fn new(cfg: DeviceConfig) -> Result<Self, Error> {
        let shared = Arc::new(Shared::new()?);
        let handle = DeviceHandle::new(shared.clone(), Arc::from("fuzz"));
        let handler = Handler::connect_for_fuzzing(shared.clone(), cfg.clone(), 1);
        Ok(Self {
            handler,
            handle,
            shared,
            cfg,
            connection: 1,
        })
    }

    /// The request handler: call its `VhostUserBackendReqHandlerMut` methods.
    pub fn handler(&mut self) -> &mut Handler {
        &mut self.handler
    }

    /// The data-path half.
    pub fn data_path(&mut self) -> &mut DeviceHandle {
        &mut self.handle
    }

    /// What the control thread does when the client closes the socket (or is
    /// kicked out), and then when the next client connects: the old handler
    /// disconnects, a fresh one serves the new connection.
    pub fn reconnect(&mut self) {
        self.handler.disconnect_for_fuzzing();
        self.connection += 1;
        self.handler =
            Handler::connect_for_fuzzing(self.shared.clone(), self.cfg.clone(), self.connection);
    }

    /// Whether the data path asked the control thread to drop the client (a broken
    /// ring, a memory fault).
    pub fn kick_out_requested(&self) -> bool {
        self.shared
            .kick_out
            .load(std::sync::atomic::Ordering::Acquire)
    }

    /// Checks the handler's invariants (memory table, budget reservation, ring
    /// sizes); the reason when one does not hold.
    pub fn check(&self) -> Result<(), String> {
        self.handler.check_invariants()
    }
}

/// A data-path handle on `shared`, as [`crate::listen`] makes one.
pub fn device_handle(shared: Arc<Shared>) -> DeviceHandle {
    DeviceHandle::new(shared, Arc::from("fuzz"))
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use vhost::vhost_user::VhostUserBackendReqHandlerMut;

    use super::*;
    use crate::shared::STOP_TIMEOUT;

    #[test]
    fn a_ring_stop_does_not_wait_and_a_reconnect_starts_clean() {
        let mut d = FuzzDevice::new(DeviceConfig::default()).unwrap();
        let t = Instant::now();
        let state = d.handler().get_vring_base(1).unwrap();
        let num = state.num;
        assert_eq!(num, 0);
        assert!(t.elapsed() < STOP_TIMEOUT / 2, "waited {:?}", t.elapsed());
        d.check().unwrap();
        assert!(d.data_path().refresh().is_none());
        d.reconnect();
        d.check().unwrap();
        assert!(!d.kick_out_requested());
    }
}
