//! An uplink: a NIC driven by one of the project's drivers (virtio-net for a
//! vhost-user NIC, AF_PACKET, AF_XDP; a TAP's frame loop). Every uplink has a
//! driver domain ([`DomainLink`]: the NIC connection, the slow path, supervision);
//! its mode says who runs the fast path:
//!
//! * `domain`: the driver domain; the switch reaches it through the exchange rings;
//! * `inline` or `twin`: the switch's data-path thread, on the driver domain's
//!   region ([`SwitchInstance`]), after a handover (`driver_domain::handover`).
//!
//! [`Uplink::set_mode`] (`twin ctl mode`) moves the fast path at run time; a fresh
//! driver domain always starts with it and is asked to hand it over when the mode
//! wants; a faulted twin is contained here: reported, the mode set back to
//! `domain`, the driver domain restarted.
//!
//! Starting a driver domain happens on a connector thread, so that a NIC or a domain
//! that is slow, absent or gone never stalls the data path; the ready driver is
//! handed over through a channel. The data path checks the link every
//! [`LINK_CHECK_INTERVAL`]: a NIC that hung up, or a driver domain that exited, hung
//! (no heartbeat within the watchdog), reported a failure or broke the exchange
//! protocol, is dropped (the domain killed) and a new connector starts, with
//! backoff. Each outage is recorded with its length and the frames dropped
//! meanwhile. A domain that fails more than [`RESTART_BUDGET`] times within
//! [`BUDGET_WINDOW`] is not restarted again: the uplink stays down, reported.
//!
//! Split by responsibility: `handover` (the state machine that moves the fast path,
//! generic and unit-tested), `fast_path` (the connected driver and the handover run
//! on the real domain and instance), `supervision` (connector, health checks,
//! restart budget, outage log, operators' commands) and `report`. As a [`Port`], an
//! uplink receives what its driver received and delivers toward the NIC.
//! `multi_queue` is the port of a `packet:` or `xdp:` uplink of several queues:
//! an uplink per queue behind one port.

mod fast_path;
mod handover;
mod multi_queue;
mod report;
mod supervision;

use std::collections::VecDeque;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Receiver;
use std::sync::Arc;
use std::time::{Duration, Instant};

use driver_domain::launch::DomainDevice;
use driver_domain::{launch, worker};
use serde::Serialize;
use twin_wire::Segments;

use crate::config::{PollMode, UplinkDevice, UplinkMode, UplinkSpec};
use crate::counters::{PortCounters, PortReport};
use crate::port::{
    CommandDone, Delivery, MaintainContext, Port, PortCommand, PortCommandError, PortError,
    PortKind, PortNews,
};

pub use fast_path::{UplinkDriver, HANDOVER_TIMEOUT};
pub use multi_queue::MultiQueueUplink;
use multi_queue::QueueGroup;
use supervision::{spawn_connector, OutageLog, RestartBudget};
pub use supervision::{Outage, BUDGET_WINDOW, LINK_CHECK_INTERVAL, RESTART_BUDGET};

/// A driver domain without a heartbeat for this long counts as hung.
pub const WATCHDOG: Duration = Duration::from_millis(500);
/// Slots per exchange ring: as many as the driver's queue, so a burst the NIC
/// delivers at once fits.
pub const EXCHANGE_SLOTS: u32 = 512;

/// Errors of an uplink.
#[derive(Debug, thiserror::Error)]
pub enum UplinkError {
    /// The uplink's TAP device could not be opened or created.
    #[error("cannot open the TAP device of uplink {name}")]
    OpenTap {
        /// Uplink name.
        name: String,
        /// Cause.
        #[source]
        source: kernel_nic::TapError,
    },
    /// The interface of a `packet:` or `xdp:` uplink does not exist (or its
    /// state cannot be read).
    #[error("uplink {name}: no interface {device} in the switch's network namespace")]
    NoInterface {
        /// Uplink name.
        name: String,
        /// The interface.
        device: kernel_nic::IfName,
    },
    /// The connector thread could not be started.
    #[error("cannot start the connector thread of uplink {name}")]
    SpawnConnector {
        /// Uplink name.
        name: String,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
}

/// Where the uplink's link stands.
enum Link {
    /// A connector thread is trying to reach the NIC (or start the domain).
    Connecting {
        rx: Receiver<UplinkDriver>,
        cancel: Arc<AtomicBool>,
    },
    /// The driver is attached to the NIC.
    Up(Box<UplinkDriver>),
    /// A driver domain failed too often; not restarted again.
    GaveUp,
}

/// A contained twin fault.
#[derive(Debug, Clone, Serialize)]
pub struct TwinFaultReport {
    /// Milliseconds since the switch started.
    pub at_ms: u64,
    /// What the twin did.
    pub fault: String,
}

/// One uplink, owned by the data-path thread.
pub struct Uplink {
    /// The configuration it was made from.
    pub spec: UplinkSpec,
    /// The device as the switch holds it, handed to each driver domain (a TAP
    /// device's descriptor stays open here for the uplink's lifetime).
    device: DomainDevice,
    /// Times the NIC connected (or a domain started).
    pub connects: u64,
    /// Times the link went down.
    pub disconnects: u64,
    /// Where the fast path should run (the configured mode, changed by
    /// `twin ctl mode` and by a twin fault, which falls back to `domain`).
    mode: UplinkMode,
    /// Twin faults, oldest first (the last few).
    twin_faults: VecDeque<TwinFaultReport>,
    /// Twin faults in total.
    twin_fault_count: u64,
    /// Mode changes carried out.
    mode_changes: u64,
    poll: PollMode,
    link: Link,
    last_check: Instant,
    started: Instant,
    outages: OutageLog,
    restarts: RestartBudget,
    /// Frames queued for the domain at a handover that the switch's instance had no
    /// room for (counted as `uplink_ring_full` in the report).
    handover_ring_full: u64,
    /// Drops counted by driver domains that have since been replaced.
    past_domain_drops: std::collections::BTreeMap<&'static str, u64>,
    /// Device errors (driver checks of the NIC's used rings, TX timeouts) reported
    /// by driver domains that have since been replaced.
    past_device_errors: std::collections::BTreeMap<&'static str, u64>,
    /// Upcall counts of driver domains that have since been replaced.
    past_upcalls: std::collections::BTreeMap<&'static str, u64>,
    /// A kernel interface's state when last looked at (up and running); `None`
    /// for a vhost-user NIC or before the first look.
    kernel_link_up: Option<bool>,
    /// Times a kernel interface was seen going down.
    link_downs: u64,
}

impl std::fmt::Debug for Uplink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Uplink")
            .field("name", &self.spec.name)
            .field("mode", &self.mode)
            .field("up", &matches!(self.link, Link::Up(_)))
            .finish()
    }
}

use crate::port::error_chain;

impl Uplink {
    /// Starts connecting to the uplink's NIC in the background. A `packet:` or
    /// `xdp:` uplink of several queues is a [`MultiQueueUplink`] instead (here
    /// only the first queue would be driven).
    pub fn new(
        spec: UplinkSpec,
        poll: PollMode,
        restart_budget: usize,
    ) -> Result<Self, UplinkError> {
        Self::start(spec, poll, restart_budget, None)
    }

    /// [`Uplink::new`], for one queue of a [`MultiQueueUplink`] when `group` is
    /// what its queues share.
    fn start(
        spec: UplinkSpec,
        poll: PollMode,
        restart_budget: usize,
        group: Option<QueueGroup>,
    ) -> Result<Self, UplinkError> {
        if let UplinkDevice::Packet { name: ifname, .. } | UplinkDevice::Xdp { name: ifname, .. } =
            &spec.device
        {
            // An existing interface: a missing one is an error now, a down one is
            // said once (traffic starts when it comes up).
            match kernel_nic::link_state(ifname) {
                Ok(Some(s)) if !s.up => {
                    twin_log::warn_local!(uplink = %spec.name, device = %ifname, "the interface is down");
                }
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => {
                    return Err(UplinkError::NoInterface {
                        name: spec.name.clone(),
                        device: ifname.clone(),
                    })
                }
            }
        }
        let device = match &spec.device {
            UplinkDevice::Vhost(socket) => DomainDevice::Vhost(socket.clone()),
            UplinkDevice::Tap(ifname) => {
                let tap =
                    kernel_nic::TapHandle::open(ifname).map_err(|source| UplinkError::OpenTap {
                        name: spec.name.clone(),
                        source,
                    })?;
                twin_log::info_limited!(uplink = %spec.name, device = %spec.device, "TAP device open");
                DomainDevice::Tap(Arc::new(tap))
            }
            UplinkDevice::Packet {
                name, qdisc_bypass, ..
            } => DomainDevice::Packet {
                name: name.clone(),
                options: kernel_nic::packet::PacketOptions {
                    qdisc_bypass: *qdisc_bypass,
                    ..Default::default()
                },
                fanout: match group {
                    Some(QueueGroup::Fanout(f)) => Some(f),
                    _ => None,
                },
            },
            UplinkDevice::Xdp {
                name, queue, mode, ..
            } => DomainDevice::Xdp {
                attachment: match group {
                    Some(QueueGroup::Xdp(a)) => a,
                    _ => Arc::new(kernel_nic::xdp::XdpAttachment::new(
                        name.clone(),
                        queue + 1,
                        *mode,
                    )),
                },
                queue: *queue,
                geometry: kernel_nic::xdp::XdpGeometry::default(),
            },
        };
        let link = spawn_connector(&spec, &device, poll, Duration::ZERO)?;
        let now = Instant::now();
        Ok(Uplink {
            mode: spec.mode,
            spec,
            device,
            connects: 0,
            disconnects: 0,
            twin_faults: VecDeque::new(),
            twin_fault_count: 0,
            mode_changes: 0,
            poll,
            link,
            last_check: now,
            started: now,
            outages: OutageLog::new(now),
            restarts: RestartBudget::new(restart_budget),
            handover_ring_full: 0,
            kernel_link_up: None,
            link_downs: 0,
            // Every counter is reported from the start, zeros included, so a reader
            // can tell "none" from "not reported".
            past_domain_drops: report::zeros(&launch::DD_DROP_NAMES),
            past_device_errors: report::zeros(&worker::control::DEVICE_ERROR_NAMES),
            past_upcalls: report::zeros(&launch::UPCALL_COUNT_NAMES),
        })
    }

    /// The connected driver, if any.
    #[inline]
    pub fn driver(&self) -> Option<&UplinkDriver> {
        match &self.link {
            Link::Up(d) => Some(&**d),
            _ => None,
        }
    }

    /// The connected driver, if any.
    #[inline]
    pub fn driver_mut(&mut self) -> Option<&mut UplinkDriver> {
        match &mut self.link {
            Link::Up(d) => Some(&mut **d),
            _ => None,
        }
    }

    /// The mode the uplink runs in (or is moving to).
    pub fn mode(&self) -> UplinkMode {
        self.mode
    }
}

impl Port for Uplink {
    fn name(&self) -> &str {
        &self.spec.name
    }

    fn kind(&self) -> PortKind {
        PortKind::Uplink
    }

    #[inline]
    fn receive(&mut self, max: usize, sink: &mut dyn FnMut(&Segments<'_>)) -> usize {
        match self.driver_mut() {
            Some(d) => d.rx_burst(max, sink),
            None => 0,
        }
    }

    #[inline]
    fn deliver(&mut self, frame: &Segments<'_>) -> Delivery {
        match self.driver_mut() {
            Some(d) => d.send(frame),
            None => Delivery::Down,
        }
    }

    #[inline]
    fn flush(&mut self) {
        if let Some(d) = self.driver_mut() {
            d.flush();
        }
    }

    fn set_notify(&mut self, on: bool) -> bool {
        self.driver_mut().is_some_and(|d| d.set_rx_notify(on))
    }

    fn wake_fds(&self, add: &mut dyn FnMut(RawFd)) {
        if let Some(d) = self.driver() {
            add(d.rx_call_fd());
        }
    }

    fn maintain(&mut self, cx: &MaintainContext) -> Result<PortNews, PortError> {
        let changed = self.check_link(cx.now, cx.dropped_so_far)?;
        Ok(PortNews {
            fds_changed: changed,
            peer_gone: changed && self.driver().is_none(),
        })
    }

    fn command(
        &mut self,
        cmd: PortCommand,
        queue: Option<u32>,
        now: Instant,
    ) -> Result<CommandDone, PortCommandError> {
        if queue.is_some_and(|q| q != 0) {
            return Err(PortCommandError::Refused(format!(
                "uplink {} has one queue, 0",
                self.spec.name
            )));
        }
        let fds_changed = match cmd {
            PortCommand::Fault(kind) => {
                self.inject(kind)?;
                false
            }
            PortCommand::Revive => {
                self.revive()?;
                false
            }
            PortCommand::Mode(mode) if mode != UplinkMode::Domain => {
                if let Some(why) = self.spec.device.domain_only_because() {
                    return Err(PortCommandError::Refused(format!(
                        "uplink {} drives {}: it runs in domain mode only ({why})",
                        self.spec.name, self.spec.device
                    )));
                }
                self.set_mode(mode, now)
            }
            PortCommand::Mode(mode) => self.set_mode(mode, now),
        };
        Ok(CommandDone { fds_changed })
    }

    fn report(&self, counters: &PortCounters) -> PortReport {
        PortReport::new(
            counters,
            self.own_drops(),
            self.connects,
            self.disconnects,
            self.detail(),
        )
    }
}

impl std::ops::Drop for Uplink {
    fn drop(&mut self) {
        if let Link::Connecting { cancel, .. } = &self.link {
            cancel.store(true, Ordering::Relaxed);
        }
    }
}
