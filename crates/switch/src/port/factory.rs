//! Making ports from their specifications, at start and while the switch runs
//! (`twin ctl add`), and the [`Vacant`] port that holds a removed port's place.
//!
//! The factory keeps what every port needs from the switch's configuration (the
//! poll mode, the restart budget, the client memory caps) and what must stay
//! unique among the live ports: names, and the socket or interface each one
//! serves (a second port on a client's socket path would take the path over).
//! It also hands out the driver domains' user ids, one per uplink queue, never
//! twice.
//!
//! Limits: a removed port's name and socket are free again at once; its user id
//! is not reused.

use std::collections::BTreeMap;
use std::os::fd::RawFd;
use std::path::PathBuf;
use std::sync::Arc;

use twin_wire::Segments;
use vhost_device::MemoryBudget;

use super::client::{ClientPort, ClientPortError};
use super::uplink::{MultiQueueUplink, Uplink, UplinkError};
use super::{Delivery, MaintainContext, Port, PortError, PortKind, PortNews};
use crate::config::{ClientSpec, PollMode, UplinkDevice, UplinkSpec};
use crate::counters::{PortCounters, PortReport};

/// Why a port could not be made.
#[derive(Debug, thiserror::Error)]
pub enum FactoryError {
    /// Another live port has the name.
    #[error("a port named {0:?} exists")]
    NameTaken(String),
    /// Another live port serves the socket or interface.
    #[error("port {owner:?} serves {what} already")]
    SocketTaken {
        /// The socket or interface.
        what: String,
        /// The port that serves it.
        owner: String,
    },
    /// The client port could not listen.
    #[error(transparent)]
    Client(#[from] ClientPortError),
    /// The uplink could not start.
    #[error(transparent)]
    Uplink(#[from] UplinkError),
}

/// Makes ports (see the module docs).
#[derive(Debug)]
pub struct PortFactory {
    poll: PollMode,
    restart_budget: usize,
    max_client_memory: u64,
    budget: Arc<MemoryBudget>,
    /// The next driver-domain id (`None`: the switch is not root, domains keep
    /// its ids).
    next_domain_id: Option<u32>,
    /// Each live port's socket or interface, by name.
    live: BTreeMap<String, PathBuf>,
}

/// What a port serves, as the uniqueness check sees it: a socket path, or
/// the kernel interface's specification (`packet:eth0`).
fn served(device: &UplinkDevice) -> PathBuf {
    match device {
        UplinkDevice::Vhost(p) => p.clone(),
        other => PathBuf::from(other.to_string()),
    }
}

impl PortFactory {
    /// A factory for ports polled as `poll`, uplinks with `restart_budget`,
    /// clients within `max_client_memory` and the shared `budget`; driver
    /// domains run as `domain_id_base` onward when given.
    pub fn new(
        poll: PollMode,
        restart_budget: usize,
        max_client_memory: u64,
        budget: Arc<MemoryBudget>,
        domain_id_base: Option<u32>,
    ) -> Self {
        PortFactory {
            poll,
            restart_budget,
            max_client_memory,
            budget,
            next_domain_id: domain_id_base,
            live: BTreeMap::new(),
        }
    }

    fn claim(&self, name: &str, serves: &PathBuf) -> Result<(), FactoryError> {
        if self.live.contains_key(name) {
            return Err(FactoryError::NameTaken(name.to_string()));
        }
        if let Some((owner, _)) = self.live.iter().find(|(_, s)| *s == serves) {
            return Err(FactoryError::SocketTaken {
                what: serves.display().to_string(),
                owner: owner.clone(),
            });
        }
        Ok(())
    }

    /// A client port serving `spec`.
    pub fn client(&mut self, spec: ClientSpec) -> Result<Box<dyn Port>, FactoryError> {
        self.claim(&spec.name, &spec.socket)?;
        let (name, socket) = (spec.name.clone(), spec.socket.clone());
        let port = ClientPort::listen(spec, self.max_client_memory, Arc::clone(&self.budget))?;
        self.live.insert(name, socket);
        Ok(Box::new(port))
    }

    /// An uplink of `spec` (several queues: a [`MultiQueueUplink`]), its
    /// domains given ids of their own.
    pub fn uplink(&mut self, mut spec: UplinkSpec) -> Result<Box<dyn Port>, FactoryError> {
        let serves = served(&spec.device);
        self.claim(&spec.name, &serves)?;
        let queues = spec.device.queues();
        if let Some(id) = self.next_domain_id {
            spec.domain_id = Some(id);
        }
        let name = spec.name.clone();
        let port: Box<dyn Port> = if queues > 1 {
            Box::new(MultiQueueUplink::new(spec, self.poll, self.restart_budget)?)
        } else {
            Box::new(Uplink::new(spec, self.poll, self.restart_budget)?)
        };
        if let Some(id) = &mut self.next_domain_id {
            *id = id.saturating_add(queues);
        }
        self.live.insert(name, serves);
        Ok(port)
    }

    /// Port `name` is gone: its name and socket are free again.
    pub fn forget(&mut self, name: &str) {
        self.live.remove(name);
    }
}

/// The place of a removed port in the data path's table (so that every other
/// port keeps its number, which the learning table holds): no peer, no frames,
/// never a destination.
#[derive(Debug)]
pub struct Vacant;

impl Port for Vacant {
    fn name(&self) -> &str {
        ""
    }

    fn kind(&self) -> PortKind {
        PortKind::Client
    }

    fn receive(&mut self, _max: usize, _sink: &mut dyn FnMut(&Segments<'_>)) -> usize {
        0
    }

    fn deliver(&mut self, _frame: &Segments<'_>) -> Delivery {
        Delivery::Down
    }

    fn flush(&mut self) {}

    fn set_notify(&mut self, _on: bool) -> bool {
        false
    }

    fn wake_fds(&self, _add: &mut dyn FnMut(RawFd)) {}

    fn maintain(&mut self, _cx: &MaintainContext) -> Result<PortNews, PortError> {
        Ok(PortNews::default())
    }

    fn report(&self, counters: &PortCounters) -> PortReport {
        PortReport::new(counters, [], 0, 0, serde_json::Value::Null)
    }
}
