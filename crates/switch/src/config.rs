//! The switch's configuration: its client ports and uplinks, as given on the command
//! line (`--client NAME=SOCKET[,mac=MAC][,vlan=VID|,trunk=VIDS]`,
//! `--uplink NAME=NIC_SOCKET[,mode=inline]`). The same spec strings are what
//! `twin ctl add` and the config file take.
//!
//! Parsing is strict: an unknown key, an empty name, a duplicate name or socket, or a
//! mode that does not exist is an error with a message that names the offending
//! option, never a silent default.

use std::collections::HashSet;
use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use twin_wire::MacAddr;

use crate::vlan::{parse_vid, PortVlan, VlanSet};

/// Errors in a port or uplink specification.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// The text has no `NAME=` part.
    #[error("{spec:?}: expected NAME=SOCKET[,key=value...]")]
    MissingName {
        /// The specification as given.
        spec: String,
    },
    /// The name is empty or has characters other than letters, digits, `-`, `_`, `.`.
    #[error("{spec:?}: a name must be 1-32 letters, digits, '-', '_' or '.'")]
    BadName {
        /// The specification as given.
        spec: String,
    },
    /// The socket path is empty.
    #[error("{spec:?}: the socket path is empty")]
    EmptySocket {
        /// The specification as given.
        spec: String,
    },
    /// A `key=value` option that this kind of port does not have.
    #[error("{spec:?}: unknown option {key:?} (allowed: {allowed})")]
    UnknownOption {
        /// The specification as given.
        spec: String,
        /// The key.
        key: String,
        /// The keys that are allowed.
        allowed: &'static str,
    },
    /// A value that does not parse.
    #[error("{spec:?}: bad value for {key}: {reason}")]
    BadValue {
        /// The specification as given.
        spec: String,
        /// The key.
        key: &'static str,
        /// Why.
        reason: String,
    },
    /// Two ports share a name.
    #[error("the name {0:?} is used twice")]
    DuplicateName(String),
    /// Two ports share a socket path.
    #[error("the socket {0:?} is used twice")]
    DuplicateSocket(PathBuf),
    /// Nothing to switch.
    #[error("give at least one --client or --uplink")]
    NoPorts,
}

/// Where an uplink's driver runs.
///
/// The default is [`UplinkMode::Twin`], the one mode that is both fast and safe;
/// a kind whose fast path cannot move ([`UplinkDevice::domain_only_because`]) gets
/// [`UplinkMode::Domain`] instead. [`UplinkMode::Inline`] is there for measuring
/// and by name only: it is unsafe.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum UplinkMode {
    /// The driver's fast path runs inside the switch with direct access to the
    /// driver domain's region: fast, unprotected. Unsafe: a driver bug, or a
    /// driver domain that writes its own memory hostilely, takes the switch down.
    Inline,
    /// The driver runs in its own sandboxed driver-domain process; frames cross
    /// through an exchange region.
    Domain,
    /// The driver's fast path runs inside the switch as a twin: every access to the
    /// driver domain's region goes through the SVM, and a fault falls back to
    /// `domain`.
    #[default]
    Twin,
}

impl UplinkMode {
    /// The mode an uplink of `device` gets when its spec names none: `twin`, or
    /// `domain` for a kind whose fast path cannot move.
    pub fn default_for(device: &UplinkDevice) -> Self {
        if device.domain_only_because().is_some() {
            UplinkMode::Domain
        } else {
            UplinkMode::default()
        }
    }
}

impl UplinkMode {
    /// Every mode, in the order users read them.
    pub const ALL: [UplinkMode; 3] = [UplinkMode::Inline, UplinkMode::Domain, UplinkMode::Twin];
}

impl FromStr for UplinkMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "inline" => Ok(UplinkMode::Inline),
            "domain" => Ok(UplinkMode::Domain),
            "twin" => Ok(UplinkMode::Twin),
            _ => Err(format!("unknown mode {s:?} (known: inline, domain, twin)")),
        }
    }
}

impl UplinkMode {
    /// The mode's name, as `--uplink` and reports spell it.
    pub const fn as_str(self) -> &'static str {
        match self {
            UplinkMode::Inline => "inline",
            UplinkMode::Domain => "domain",
            UplinkMode::Twin => "twin",
        }
    }
}

impl fmt::Display for UplinkMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A client port: a vhost-user socket the switch serves as a virtio-net device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ClientSpec {
    /// Port name, used in counters and logs.
    pub name: String,
    /// The vhost-user socket the switch listens on.
    pub socket: PathBuf,
    /// The client's MAC address. When set, it is offered to the client in the
    /// device config space and frames with any other source address are dropped
    /// (anti-spoofing).
    pub mac: Option<MacAddr>,
    /// Its VLANs (`vlan=N`: an access port of VLAN N; `trunk=10;20;30-40`: a
    /// trunk of those VLANs; neither: untagged, the native VLAN).
    pub vlan: PortVlan,
}

/// Queues an `xdp:` uplink may name (the XSKMAP has an entry per queue up to its
/// own).
pub const MAX_XDP_QUEUE: u32 = 64;

/// Queues a `packet:` (fanout members) or `xdp:` uplink may have.
pub const MAX_QUEUES: u32 = 16;

/// What an uplink's driver domain drives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UplinkDevice {
    /// A NIC reached as a vhost-user frontend at this socket; the switch connects
    /// to it, retrying until it exists.
    Vhost(PathBuf),
    /// A TAP device of the host kernel (`tap:IFNAME`), created when it does not
    /// exist; frames go to and from the kernel's network stack.
    Tap(kernel_nic::IfName),
    /// An existing interface of the host kernel reached through an AF_PACKET
    /// socket with TPACKET_V3 rings
    /// (`packet:IFNAME[,qdisc-bypass=on|off][,queues=N]`): frames go to and
    /// come from the wire of that interface (its driver), not the host's stack.
    /// The switch opens a socket per domain; a missing interface is an error at
    /// start, one deleted later is bound again once it exists. With `queues=N`
    /// the uplink has N sockets in a fanout group, each with a driver domain
    /// (and fast path) of its own, and the kernel spreads the received frames
    /// over them by flow.
    Packet {
        /// The interface.
        name: kernel_nic::IfName,
        /// Transmit past the interface's queueing discipline
        /// (`PACKET_QDISC_BYPASS`; off by default: it also hides the frames from
        /// `tc` and from the interface's packet taps).
        qdisc_bypass: bool,
        /// Sockets in the fanout group (1: one socket, no group).
        queues: u32,
    },
    /// Queues of an existing interface reached through AF_XDP sockets
    /// (`xdp:IFNAME[,queue=N][,queues=M][,xdp-mode=native|generic]`: queues N
    /// to N+M-1, default queue 0 alone): the switch attaches the uplink's
    /// redirect program and opens a socket per domain, a domain (and fast path)
    /// per queue.
    Xdp {
        /// The interface.
        name: kernel_nic::IfName,
        /// Its first queue.
        queue: u32,
        /// How many queues from `queue` on.
        queues: u32,
        /// Where the program runs.
        mode: kernel_nic::xdp::XdpMode,
    },
}

impl UplinkDevice {
    /// How many queues the uplink has: a driver domain (and fast path) each.
    pub fn queues(&self) -> u32 {
        match self {
            UplinkDevice::Packet { queues, .. } | UplinkDevice::Xdp { queues, .. } => {
                (*queues).max(1)
            }
            UplinkDevice::Vhost(_) | UplinkDevice::Tap(_) => 1,
        }
    }

    /// Whether the switch can take the fast path over (every kind but a TAP;
    /// see [`UplinkDevice::domain_only_because`]).
    pub fn has_movable_fast_path(&self) -> bool {
        self.domain_only_because().is_none()
    }

    /// Why the device's fast path runs in its domain only, if it does.
    pub fn domain_only_because(&self) -> Option<&'static str> {
        match self {
            UplinkDevice::Vhost(_) => None,
            UplinkDevice::Tap(_) => Some(
                "a TAP's fast path is system calls, with no shared rings the switch \
                 could take over",
            ),
            UplinkDevice::Packet { .. } | UplinkDevice::Xdp { .. } => None,
        }
    }
}

impl std::fmt::Display for UplinkDevice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            UplinkDevice::Vhost(p) => write!(f, "{}", p.display()),
            UplinkDevice::Tap(n) => write!(f, "tap:{n}"),
            UplinkDevice::Packet { name, queues, .. } if *queues > 1 => {
                write!(f, "packet:{name},queues={queues}")
            }
            UplinkDevice::Packet { name, .. } => write!(f, "packet:{name}"),
            UplinkDevice::Xdp {
                name,
                queue,
                queues,
                ..
            } if *queues > 1 => write!(f, "xdp:{name},queue={queue},queues={queues}"),
            UplinkDevice::Xdp { name, queue, .. } => write!(f, "xdp:{name},queue={queue}"),
        }
    }
}

impl Serialize for UplinkDevice {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// An uplink: a NIC driven from a driver domain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UplinkSpec {
    /// Uplink name, used in counters and logs.
    pub name: String,
    /// What its driver domain drives.
    pub device: UplinkDevice,
    /// Where the driver runs.
    pub mode: UplinkMode,
    /// The user and group id its driver domain runs as outside its namespaces
    /// (assigned by the switch, one per uplink, when it runs as root).
    #[serde(skip)]
    pub domain_id: Option<u32>,
}

/// A specification split into its name, socket and `key=value` options.
struct SplitSpec<'a> {
    name: String,
    socket: PathBuf,
    opts: Vec<(&'a str, &'a str)>,
}

fn split_spec(spec: &str) -> Result<SplitSpec<'_>, ConfigError> {
    let (name, rest) = spec
        .split_once('=')
        .ok_or_else(|| ConfigError::MissingName {
            spec: spec.to_string(),
        })?;
    let name_ok = !name.is_empty()
        && name.len() <= 32
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if !name_ok {
        return Err(ConfigError::BadName {
            spec: spec.to_string(),
        });
    }
    let mut parts = rest.split(',');
    let socket = parts.next().unwrap_or_default();
    if socket.is_empty() {
        return Err(ConfigError::EmptySocket {
            spec: spec.to_string(),
        });
    }
    let mut opts = Vec::new();
    for p in parts {
        let (k, v) = p.split_once('=').unwrap_or((p, ""));
        opts.push((k, v));
    }
    Ok(SplitSpec {
        name: name.to_string(),
        socket: PathBuf::from(socket),
        opts,
    })
}

impl FromStr for ClientSpec {
    type Err = ConfigError;
    fn from_str(spec: &str) -> Result<Self, ConfigError> {
        let SplitSpec { name, socket, opts } = split_spec(spec)?;
        let mut mac = None;
        let mut vlan = PortVlan::Untagged;
        for (k, v) in opts {
            let bad = |key, reason| ConfigError::BadValue {
                spec: spec.to_string(),
                key,
                reason,
            };
            match k {
                "vlan" | "trunk" if vlan != PortVlan::Untagged => {
                    return Err(bad(
                        if k == "vlan" { "vlan" } else { "trunk" },
                        "a port takes one vlan= or one trunk=, not both or twice".to_string(),
                    ))
                }
                "vlan" => vlan = PortVlan::Access(parse_vid(v).map_err(|r| bad("vlan", r))?),
                "trunk" => {
                    vlan = PortVlan::Trunk(v.parse::<VlanSet>().map_err(|r| bad("trunk", r))?)
                }
                "mac" => {
                    mac = Some(v.parse().map_err(|e: twin_wire::ether::ParseMacError| {
                        ConfigError::BadValue {
                            spec: spec.to_string(),
                            key: "mac",
                            reason: e.to_string(),
                        }
                    })?)
                }
                _ => {
                    return Err(ConfigError::UnknownOption {
                        spec: spec.to_string(),
                        key: k.to_string(),
                        allowed: "mac, vlan, trunk",
                    })
                }
            }
        }
        Ok(ClientSpec {
            name,
            socket,
            mac,
            vlan,
        })
    }
}

impl FromStr for UplinkSpec {
    type Err = ConfigError;
    fn from_str(spec: &str) -> Result<Self, ConfigError> {
        let SplitSpec { name, socket, opts } = split_spec(spec)?;
        let ifname = |kind: &'static str, name: &str| {
            name.parse()
                .map_err(|e: kernel_nic::IfNameError| ConfigError::BadValue {
                    spec: spec.to_string(),
                    key: kind,
                    reason: e.to_string(),
                })
        };
        let text = socket.to_str().unwrap_or("");
        let device = if let Some(name) = text.strip_prefix("tap:") {
            UplinkDevice::Tap(ifname("tap", name)?)
        } else if let Some(name) = text.strip_prefix("packet:") {
            UplinkDevice::Packet {
                name: ifname("packet", name)?,
                qdisc_bypass: false,
                queues: 1,
            }
        } else if let Some(name) = text.strip_prefix("xdp:") {
            UplinkDevice::Xdp {
                name: ifname("xdp", name)?,
                queue: 0,
                queues: 1,
                mode: kernel_nic::xdp::XdpMode::default(),
            }
        } else {
            UplinkDevice::Vhost(socket)
        };
        let mut mode = UplinkMode::default_for(&device);
        let mut device = device;
        for (k, v) in opts {
            let bad = |key, reason| ConfigError::BadValue {
                spec: spec.to_string(),
                key,
                reason,
            };
            match (k, &mut device) {
                ("mode", _) => mode = v.parse().map_err(|reason| bad("mode", reason))?,
                ("queue", UplinkDevice::Xdp { queue, .. }) => {
                    *queue = v
                        .parse()
                        .ok()
                        .filter(|q| *q < MAX_XDP_QUEUE)
                        .ok_or_else(|| {
                            bad(
                                "queue",
                                format!("{v:?} is not a queue below {MAX_XDP_QUEUE}"),
                            )
                        })?
                }
                ("xdp-mode", UplinkDevice::Xdp { mode, .. }) => {
                    *mode = v.parse().map_err(|reason| bad("xdp-mode", reason))?
                }
                (
                    "queues",
                    UplinkDevice::Packet { queues, .. } | UplinkDevice::Xdp { queues, .. },
                ) => {
                    *queues = v
                        .parse()
                        .ok()
                        .filter(|q| (1..=MAX_QUEUES).contains(q))
                        .ok_or_else(|| {
                            bad(
                                "queues",
                                format!("{v:?} is not a count from 1 to {MAX_QUEUES}"),
                            )
                        })?
                }
                ("qdisc-bypass", UplinkDevice::Packet { qdisc_bypass, .. }) => {
                    *qdisc_bypass = match v {
                        "on" => true,
                        "off" => false,
                        _ => return Err(bad("qdisc-bypass", format!("{v:?} is not on or off"))),
                    }
                }
                _ => {
                    return Err(ConfigError::UnknownOption {
                        spec: spec.to_string(),
                        key: k.to_string(),
                        allowed: match device {
                            UplinkDevice::Xdp { .. } => "mode, queue, queues, xdp-mode",
                            UplinkDevice::Packet { .. } => "mode, qdisc-bypass, queues",
                            _ => "mode",
                        },
                    })
                }
            }
        }
        if let UplinkDevice::Xdp { queue, queues, .. } = device {
            if queue + queues > MAX_XDP_QUEUE {
                return Err(ConfigError::BadValue {
                    spec: spec.to_string(),
                    key: "queues",
                    reason: format!(
                        "queues {queue} to {} are not all below {MAX_XDP_QUEUE}",
                        queue + queues - 1
                    ),
                });
            }
        }
        if let Some(why) = device.domain_only_because() {
            if mode != UplinkMode::Domain {
                return Err(ConfigError::BadValue {
                    spec: spec.to_string(),
                    key: "mode",
                    reason: format!("{device} runs in domain mode only, not {mode}: {why}"),
                });
            }
        }
        Ok(UplinkSpec {
            name,
            device,
            mode,
            domain_id: None,
        })
    }
}

/// How the data-path thread waits for work.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum PollMode {
    /// Spin on the rings; peers are asked never to notify. Lowest latency, one core
    /// per polling thread, always.
    Busy,
    /// Sleep in epoll on kick and call eventfds when there is no work.
    Event,
    /// The default: busy-poll while there is work; after a run of empty rounds
    /// (`twin_poll::waiter::ADAPTIVE_ROUNDS`) sleep in epoll like `event`. Uplinks'
    /// driver domains poll the same way.
    #[default]
    Adaptive,
}

impl From<PollMode> for twin_poll::PollMode {
    fn from(m: PollMode) -> Self {
        match m {
            PollMode::Busy => twin_poll::PollMode::Busy,
            PollMode::Event => twin_poll::PollMode::Event,
            PollMode::Adaptive => twin_poll::PollMode::Adaptive,
        }
    }
}

impl FromStr for PollMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "busy" => Ok(PollMode::Busy),
            "event" => Ok(PollMode::Event),
            "adaptive" => Ok(PollMode::Adaptive),
            _ => Err(format!(
                "unknown poll mode {s:?} (known: busy, event, adaptive)"
            )),
        }
    }
}

/// Everything the switch needs to start.
#[derive(Debug, Clone, Serialize)]
pub struct SwitchConfig {
    /// Client ports.
    pub clients: Vec<ClientSpec>,
    /// Uplinks.
    pub uplinks: Vec<UplinkSpec>,
    /// How the data path waits.
    pub poll: PollMode,
    /// Learned addresses expire after this many milliseconds without traffic.
    pub fdb_max_age_ms: u64,
    /// At most this many learned addresses.
    pub fdb_capacity: usize,
    /// At most this many learned addresses per port.
    pub fdb_port_quota: u32,
    /// Flooded frames (broadcast, multicast, unknown unicast) a second one port may
    /// send; 0 for no limit.
    pub flood_limit_pps: u64,
    /// The control socket (`twin ctl`), if any.
    pub control: Option<PathBuf>,
    /// Where the metrics endpoint listens, if anywhere.
    #[serde(skip)]
    pub metrics: Option<crate::metrics::MetricsAddr>,
    /// Who may use the control socket, and whether it injects faults.
    #[serde(skip)]
    pub control_access: crate::ctl::Access,
    /// Most bytes of memory one client may have mapped (its memory table).
    pub max_client_memory: u64,
    /// Most bytes of client memory all clients together may have mapped.
    pub max_total_client_memory: u64,
    /// Driver-domain restarts an uplink may make within a minute before it gives
    /// up (until `twin ctl revive`).
    pub restart_budget: usize,
    /// A switch running as root runs the driver domains of its uplinks' queues
    /// as users and groups `domain_id_base`, `domain_id_base + 1`... (one per
    /// queue, in order) outside their namespaces (never as root).
    pub domain_id_base: u32,
}

/// Parses a byte count: a number with an optional binary suffix `K`, `M`, `G` or
/// `T` (optionally followed by `iB` or `B`), e.g. `64G`, `512MiB`, `1048576`.
pub fn parse_bytes(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let digits = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, suffix) = t.split_at(digits);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?}: expected a number of bytes, e.g. 64G"))?;
    let shift = match suffix.to_ascii_uppercase().as_str() {
        "" | "B" => 0,
        "K" | "KB" | "KIB" => 10,
        "M" | "MB" | "MIB" => 20,
        "G" | "GB" | "GIB" => 30,
        "T" | "TB" | "TIB" => 40,
        _ => return Err(format!("{s:?}: unknown unit (known: K, M, G, T)")),
    };
    n.checked_mul(1u64 << shift)
        .filter(|&v| v > 0)
        .ok_or_else(|| format!("{s:?}: must be above zero and below 16 EiB"))
}

impl SwitchConfig {
    /// Checks the whole configuration: at least one port, unique names and sockets.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.clients.is_empty() && self.uplinks.is_empty() {
            return Err(ConfigError::NoPorts);
        }
        let mut names = HashSet::new();
        let mut sockets = HashSet::new();
        // A kernel interface stands for its socket here: `tap:IFNAME`,
        // `packet:IFNAME`.
        let taps: Vec<PathBuf> = self
            .uplinks
            .iter()
            .map(|u| match &u.device {
                UplinkDevice::Vhost(p) => p.clone(),
                UplinkDevice::Tap(_) | UplinkDevice::Packet { .. } | UplinkDevice::Xdp { .. } => {
                    PathBuf::from(u.device.to_string())
                }
            })
            .collect();
        let all = self
            .clients
            .iter()
            .map(|c| (&c.name, &c.socket))
            .chain(self.uplinks.iter().map(|u| &u.name).zip(taps.iter()));
        for (name, socket) in all {
            if !names.insert(name) {
                return Err(ConfigError::DuplicateName(name.clone()));
            }
            if !sockets.insert(socket) {
                return Err(ConfigError::DuplicateSocket(socket.clone()));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_client_and_uplink() {
        let c: ClientSpec = "vm1=/tmp/vm1.sock,mac=52:54:00:00:00:01".parse().unwrap();
        assert_eq!(c.name, "vm1");
        assert_eq!(c.socket, PathBuf::from("/tmp/vm1.sock"));
        assert_eq!(c.mac, Some("52:54:00:00:00:01".parse().unwrap()));
        let u: UplinkSpec = "up0=/tmp/nic.sock,mode=inline".parse().unwrap();
        assert_eq!(u.mode, UplinkMode::Inline);
        // The safe default: twin.
        let u: UplinkSpec = "up0=/tmp/nic.sock".parse().unwrap();
        assert_eq!(u.mode, UplinkMode::Twin);
        assert_eq!(u.device, UplinkDevice::Vhost("/tmp/nic.sock".into()));
    }

    #[test]
    fn a_tap_uplink_runs_in_domain_mode_only() {
        let tw0: kernel_nic::IfName = "tw0".parse().unwrap();
        let u: UplinkSpec = "up0=tap:tw0".parse().unwrap();
        assert_eq!(u.device, UplinkDevice::Tap(tw0));
        assert_eq!(u.device.to_string(), "tap:tw0");
        assert_eq!(u.mode, UplinkMode::Domain);
        let u: UplinkSpec = "up0=tap:tw0,mode=domain".parse().unwrap();
        assert_eq!(u.mode, UplinkMode::Domain);
        for mode in ["inline", "twin"] {
            let bad = format!("up0=tap:tw0,mode={mode}");
            let e = bad.parse::<UplinkSpec>().unwrap_err();
            assert!(
                matches!(e, ConfigError::BadValue { key: "mode", .. }),
                "{bad}: {e}"
            );
        }
    }

    #[test]
    fn kernel_interface_names_are_checked() {
        for kind in ["tap", "packet", "xdp"] {
            for name in ["", "a/b", "x234567890123456"] {
                let bad = format!("up0={kind}:{name}");
                let e = bad.parse::<UplinkSpec>().unwrap_err();
                assert!(
                    matches!(e, ConfigError::BadValue { key, .. } if key == kind),
                    "{bad}: {e}"
                );
            }
        }
    }

    #[test]
    fn a_packet_uplink_has_every_mode_and_an_optional_qdisc_bypass() {
        let u: UplinkSpec = "up0=packet:tw0".parse().unwrap();
        assert_eq!(
            u.device,
            UplinkDevice::Packet {
                name: "tw0".parse().unwrap(),
                qdisc_bypass: false,
                queues: 1,
            }
        );
        assert_eq!(u.device.to_string(), "packet:tw0");
        assert_eq!(u.mode, UplinkMode::Twin);
        assert!(u.device.has_movable_fast_path());
        for (mode, want) in [
            ("inline", UplinkMode::Inline),
            ("twin", UplinkMode::Twin),
            ("domain", UplinkMode::Domain),
        ] {
            let u: UplinkSpec = format!("up0=packet:tw0,mode={mode},qdisc-bypass=on")
                .parse()
                .unwrap();
            assert_eq!(u.mode, want);
            assert!(matches!(
                u.device,
                UplinkDevice::Packet {
                    qdisc_bypass: true,
                    ..
                }
            ));
        }
        let e = "up0=packet:tw0,qdisc-bypass=yes"
            .parse::<UplinkSpec>()
            .unwrap_err();
        assert!(
            matches!(
                e,
                ConfigError::BadValue {
                    key: "qdisc-bypass",
                    ..
                }
            ),
            "{e}"
        );
        let e = "up0=tap:tw0,qdisc-bypass=on"
            .parse::<UplinkSpec>()
            .unwrap_err();
        assert!(matches!(e, ConfigError::UnknownOption { .. }), "{e}");
    }

    #[test]
    fn a_packet_uplink_may_have_several_queues() {
        let u: UplinkSpec = "up0=packet:tw0,queues=4,mode=twin".parse().unwrap();
        assert!(matches!(u.device, UplinkDevice::Packet { queues: 4, .. }));
        assert_eq!(u.device.to_string(), "packet:tw0,queues=4");
        for bad in ["0", "17", "x", ""] {
            let e = format!("up0=packet:tw0,queues={bad}")
                .parse::<UplinkSpec>()
                .unwrap_err();
            assert!(
                matches!(e, ConfigError::BadValue { key: "queues", .. }),
                "{bad}: {e}"
            );
        }
        let e = "up0=tap:tw0,queues=2".parse::<UplinkSpec>().unwrap_err();
        assert!(matches!(e, ConfigError::UnknownOption { .. }), "{e}");
    }

    #[test]
    fn an_xdp_uplink_may_have_several_queues_below_the_last() {
        let u: UplinkSpec = "up0=xdp:tw0,queue=2,queues=4".parse().unwrap();
        assert!(matches!(
            u.device,
            UplinkDevice::Xdp {
                queue: 2,
                queues: 4,
                ..
            }
        ));
        assert_eq!(u.device.queues(), 4);
        assert_eq!(u.device.to_string(), "xdp:tw0,queue=2,queues=4");
        assert!("up0=xdp:tw0,queue=48,queues=16"
            .parse::<UplinkSpec>()
            .is_ok());
        let e = "up0=xdp:tw0,queue=49,queues=16"
            .parse::<UplinkSpec>()
            .unwrap_err();
        assert!(
            matches!(e, ConfigError::BadValue { key: "queues", .. }),
            "{e}"
        );
    }

    #[test]
    fn an_xdp_uplink_names_its_queue_and_mode() {
        use kernel_nic::xdp::XdpMode;
        let u: UplinkSpec = "up1=xdp:eth1,queue=3,xdp-mode=native".parse().unwrap();
        assert_eq!(
            u.device,
            UplinkDevice::Xdp {
                name: "eth1".parse().unwrap(),
                queue: 3,
                queues: 1,
                mode: XdpMode::Native
            }
        );
        assert_eq!(u.device.to_string(), "xdp:eth1,queue=3");
        assert_eq!(u.mode, UplinkMode::Twin);
        // Its fast path moves: the AF_XDP driver has a twin.
        let u: UplinkSpec = "up1=xdp:eth1,mode=twin".parse().unwrap();
        assert_eq!(u.mode, UplinkMode::Twin);
        assert!(u.device.has_movable_fast_path());
        let u: UplinkSpec = "up1=xdp:eth1".parse().unwrap();
        assert!(matches!(
            u.device,
            UplinkDevice::Xdp {
                queue: 0,
                mode: XdpMode::Generic,
                ..
            }
        ));
        for (bad, key) in [
            ("up1=xdp:eth1,queue=x", "queue"),
            ("up1=xdp:eth1,queue=64", "queue"),
            ("up1=xdp:eth1,xdp-mode=fast", "xdp-mode"),
        ] {
            let e = bad.parse::<UplinkSpec>().unwrap_err();
            assert!(
                matches!(e, ConfigError::BadValue { key: k, .. } if k == key),
                "{bad}: {e}"
            );
        }
        // Queue and XDP mode belong to xdp: uplinks only.
        let e = "up1=packet:eth1,queue=1".parse::<UplinkSpec>().unwrap_err();
        assert!(matches!(e, ConfigError::UnknownOption { .. }), "{e}");
    }

    #[test]
    fn rejects_bad_specs_with_reasons() {
        let e = "/tmp/x.sock".parse::<ClientSpec>().unwrap_err();
        assert!(matches!(e, ConfigError::MissingName { .. }), "{e}");
        assert!(matches!(
            "=/x".parse::<ClientSpec>().unwrap_err(),
            ConfigError::BadName { .. }
        ));
        assert!(matches!(
            "a=".parse::<ClientSpec>().unwrap_err(),
            ConfigError::EmptySocket { .. }
        ));
        assert!(matches!(
            "a=/x,speed=9".parse::<ClientSpec>().unwrap_err(),
            ConfigError::UnknownOption { .. }
        ));
        let e = "a=/x,mode=warp".parse::<UplinkSpec>().unwrap_err();
        assert!(e.to_string().contains("unknown mode"), "{e}");
        let e = "a=/x,mac=zz".parse::<ClientSpec>().unwrap_err();
        assert!(e.to_string().contains("invalid MAC"), "{e}");
    }

    #[test]
    fn a_client_is_untagged_an_access_port_or_a_trunk() {
        let c: ClientSpec = "c1=/s".parse().unwrap();
        assert_eq!(c.vlan, PortVlan::Untagged);
        let c: ClientSpec = "c1=/s,vlan=10,mac=02:00:00:00:00:01".parse().unwrap();
        assert_eq!(c.vlan, PortVlan::Access(10));
        assert!(c.mac.is_some());
        let c: ClientSpec = "c1=/s,vlan=1".parse().unwrap();
        assert_eq!(c.vlan, PortVlan::Access(1));
        let c: ClientSpec = "c1=/s,vlan=4094".parse().unwrap();
        assert_eq!(c.vlan, PortVlan::Access(4094));
        let c: ClientSpec = "c1=/s,trunk=10;20;30-32".parse().unwrap();
        let PortVlan::Trunk(set) = c.vlan else {
            panic!("{:?}", c.vlan)
        };
        assert_eq!(set.iter().collect::<Vec<_>>(), [10, 20, 30, 31, 32]);
        assert_eq!(c.vlan.to_string(), "trunk 10;20;30-32");
        let c: ClientSpec = "c1=/s,trunk=5".parse().unwrap();
        assert_eq!(c.vlan.to_string(), "trunk 5");
    }

    #[test]
    fn bad_vlan_options_are_refused_with_the_key() {
        for (bad, key) in [
            ("c1=/s,vlan=0", "vlan"),
            ("c1=/s,vlan=4095", "vlan"),
            ("c1=/s,vlan=", "vlan"),
            ("c1=/s,vlan=ten", "vlan"),
            ("c1=/s,vlan=-3", "vlan"),
            ("c1=/s,vlan=10;20", "vlan"),
            ("c1=/s,trunk=", "trunk"),
            ("c1=/s,trunk=0", "trunk"),
            ("c1=/s,trunk=10;4095", "trunk"),
            ("c1=/s,trunk=20-10", "trunk"),
            ("c1=/s,trunk=10;;20", "trunk"),
            ("c1=/s,trunk=x", "trunk"),
            ("c1=/s,vlan=10,trunk=20", "trunk"),
            ("c1=/s,trunk=20,vlan=10", "vlan"),
            ("c1=/s,vlan=10,vlan=20", "vlan"),
        ] {
            let e = bad.parse::<ClientSpec>().unwrap_err();
            assert!(
                matches!(e, ConfigError::BadValue { key: k, .. } if k == key),
                "{bad}: {e}"
            );
        }
        // A trunk list's ',' would start another option: it is refused as one.
        let e = "c1=/s,trunk=10,20".parse::<ClientSpec>().unwrap_err();
        assert!(matches!(e, ConfigError::UnknownOption { .. }), "{e}");
        // Uplinks are trunks of every VLAN: no option.
        let e = "u0=/s,vlan=10".parse::<UplinkSpec>().unwrap_err();
        assert!(matches!(e, ConfigError::UnknownOption { .. }), "{e}");
    }

    #[test]
    fn parses_byte_counts() {
        assert_eq!(parse_bytes("64G"), Ok(64 << 30));
        assert_eq!(parse_bytes("512MiB"), Ok(512 << 20));
        assert_eq!(parse_bytes("1t"), Ok(1 << 40));
        assert_eq!(parse_bytes("4096"), Ok(4096));
        assert!(parse_bytes("0").is_err());
        assert!(parse_bytes("12X").is_err());
        assert!(parse_bytes("G").is_err());
        assert!(parse_bytes("99999999999T").is_err());
    }

    #[test]
    fn validate_finds_duplicates() {
        let mut cfg = SwitchConfig {
            clients: vec!["a=/s1".parse().unwrap(), "b=/s2".parse().unwrap()],
            uplinks: vec!["a=/s3".parse().unwrap()],
            poll: PollMode::Busy,
            fdb_max_age_ms: 300_000,
            fdb_capacity: 4096,
            fdb_port_quota: 1024,
            flood_limit_pps: 0,
            control: None,
            metrics: None,
            control_access: Default::default(),
            max_client_memory: 1 << 30,
            max_total_client_memory: 4 << 30,
            restart_budget: 200,
            domain_id_base: 3_000_000_000,
        };
        assert_eq!(cfg.validate(), Err(ConfigError::DuplicateName("a".into())));
        cfg.uplinks = vec!["u=/s1".parse().unwrap()];
        assert_eq!(
            cfg.validate(),
            Err(ConfigError::DuplicateSocket(PathBuf::from("/s1")))
        );
        cfg.uplinks.clear();
        assert_eq!(cfg.validate(), Ok(()));
        cfg.clients.clear();
        assert_eq!(cfg.validate(), Err(ConfigError::NoPorts));
    }
}
