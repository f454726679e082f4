//! An uplink: a NIC driven by the project's virtio-net driver. In `inline` mode the
//! driver runs in the switch process, on the data-path thread.
//!
//! Connecting to the NIC (the vhost-user handshake) happens on a connector thread, so
//! that a NIC that is slow, absent or gone never stalls the data path; the connected
//! driver is handed over through a channel. A NIC that disappears mid-traffic is
//! noticed by the data path ([`Uplink::check_link`]), reported, and reconnected.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, TryRecvError};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use driver_host::{DriverConfig, HostedDriver};
use tracing::{info, warn};

use crate::config::UplinkSpec;
use crate::counters::PortCounters;
use crate::fdb::Memo;

/// Errors of an uplink.
#[derive(Debug, thiserror::Error)]
pub enum UplinkError {
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

enum Link {
    /// A connector thread is trying to reach the NIC.
    Connecting {
        rx: Receiver<HostedDriver>,
        cancel: Arc<AtomicBool>,
    },
    /// The driver is attached to the NIC.
    Up(Box<HostedDriver>),
}

/// One uplink, owned by the data-path thread.
pub struct Uplink {
    /// The configuration it was made from.
    pub spec: UplinkSpec,
    /// The switch's counters for it.
    pub counters: PortCounters,
    /// Its learning memo as an ingress port.
    pub memo: Memo,
    /// Times the NIC connected.
    pub connects: u64,
    /// Times the NIC went away.
    pub disconnects: u64,
    link: Link,
    last_check: Instant,
    /// Driver counters of earlier connections, so the report covers the whole run.
    past_driver_stats: Vec<serde_json::Value>,
}

impl std::fmt::Debug for Uplink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Uplink")
            .field("name", &self.spec.name)
            .field("up", &self.driver().is_some())
            .finish()
    }
}

/// How often the data path checks that the NIC is still there.
const LINK_CHECK_INTERVAL: Duration = Duration::from_millis(100);

fn spawn_connector(spec: &UplinkSpec) -> Result<Link, UplinkError> {
    let (tx, rx) = mpsc::sync_channel(1);
    let cancel = Arc::new(AtomicBool::new(false));
    let stop = Arc::clone(&cancel);
    let socket: PathBuf = spec.socket.clone();
    let name = spec.name.clone();
    thread::Builder::new()
        .name(format!("connect-{name}"))
        .spawn(move || {
            let cfg = DriverConfig::default();
            let mut delay = Duration::from_millis(10);
            let mut said_waiting = false;
            let mut last_error_log = Instant::now();
            while !stop.load(Ordering::Relaxed) {
                match HostedDriver::connect(&socket, &cfg) {
                    Ok(d) => {
                        info!(uplink = %name, socket = %socket.display(), "connected to NIC");
                        let _ = tx.send(d);
                        return;
                    }
                    Err(e) => {
                        let e = error_chain(&e);
                        if !said_waiting {
                            info!(uplink = %name, socket = %socket.display(),
                                  "waiting for NIC socket to appear, retrying: {e}");
                            said_waiting = true;
                        } else if last_error_log.elapsed() > Duration::from_secs(10) {
                            warn!(uplink = %name, "still cannot reach NIC: {e}");
                            last_error_log = Instant::now();
                        }
                    }
                }
                thread::sleep(delay);
                delay = (delay * 2).min(Duration::from_millis(250));
            }
        })
        .map_err(|source| UplinkError::SpawnConnector {
            name: spec.name.clone(),
            source,
        })?;
    Ok(Link::Connecting { rx, cancel })
}

/// An error and its causes on one line: "a: b: c".
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

impl Uplink {
    /// Starts connecting to the uplink's NIC in the background.
    pub fn new(spec: UplinkSpec) -> Result<Self, UplinkError> {
        let link = spawn_connector(&spec)?;
        Ok(Uplink {
            spec,
            counters: PortCounters::default(),
            memo: Memo::default(),
            connects: 0,
            disconnects: 0,
            link,
            last_check: Instant::now(),
            past_driver_stats: Vec::new(),
        })
    }

    /// The attached driver, if the NIC is connected.
    #[inline]
    pub fn driver(&self) -> Option<&HostedDriver> {
        match &self.link {
            Link::Up(d) => Some(d),
            Link::Connecting { .. } => None,
        }
    }

    /// The attached driver, if the NIC is connected.
    #[inline]
    pub fn driver_mut(&mut self) -> Option<&mut HostedDriver> {
        match &mut self.link {
            Link::Up(d) => Some(d),
            Link::Connecting { .. } => None,
        }
    }

    /// The attached driver and the uplink's counters, borrowed together.
    #[inline]
    pub fn driver_and_counters(&mut self) -> Option<(&mut HostedDriver, &mut PortCounters)> {
        match &mut self.link {
            Link::Up(d) => Some((d, &mut self.counters)),
            Link::Connecting { .. } => None,
        }
    }

    /// The driver, counters and memo, borrowed together, for the uplink as a source.
    #[inline]
    pub fn source_parts(&mut self) -> Option<(&mut HostedDriver, &mut PortCounters, &mut Memo)> {
        match &mut self.link {
            Link::Up(d) => Some((d, &mut self.counters, &mut self.memo)),
            Link::Connecting { .. } => None,
        }
    }

    /// Takes a finished connection, and now and then checks that a connected NIC is
    /// still there. Returns true when the link changed (the caller re-arms its waits).
    pub fn check_link(&mut self, now: Instant) -> Result<bool, UplinkError> {
        match &mut self.link {
            Link::Connecting { rx, .. } => match rx.try_recv() {
                Ok(d) => {
                    self.link = Link::Up(Box::new(d));
                    self.connects += 1;
                    Ok(true)
                }
                Err(TryRecvError::Empty) => Ok(false),
                Err(TryRecvError::Disconnected) => {
                    self.link = spawn_connector(&self.spec)?;
                    Ok(false)
                }
            },
            Link::Up(d) => {
                if now.duration_since(self.last_check) < LINK_CHECK_INTERVAL {
                    return Ok(false);
                }
                self.last_check = now;
                if d.is_connected() {
                    return Ok(false);
                }
                warn!(uplink = %self.spec.name, "NIC disconnected; reconnecting");
                self.past_driver_stats
                    .push(serde_json::to_value(d.stats()).unwrap_or_default());
                self.disconnects += 1;
                self.link = spawn_connector(&self.spec)?;
                Ok(true)
            }
        }
    }

    /// Driver-level details for the report.
    pub fn detail(&self) -> serde_json::Value {
        let current = self
            .driver()
            .map(|d| serde_json::to_value(d.stats()).unwrap_or_default());
        serde_json::json!({
            "mode": self.spec.mode,
            "connected": current.is_some(),
            "driver": current,
            "earlier_connections": self.past_driver_stats,
        })
    }
}

impl Drop for Uplink {
    fn drop(&mut self) {
        if let Link::Connecting { cancel, .. } = &self.link {
            cancel.store(true, Ordering::Relaxed);
        }
    }
}
