//! `twin switch`'s options: one definition for the command line (clap) and the
//! configuration file (`--config FILE`, TOML, serde), so that the two cannot
//! drift apart. A key of the file is its flag's long name (`fdb-max-age = 600`);
//! `client` and `uplink` are lists of the flags' specifications:
//!
//! ```toml
//! poll = "adaptive"
//! control = "/run/twin/ctl.sock"
//! metrics = "127.0.0.1:9187"
//! client = ["vm1=/run/twin/vm1.sock,mac=02:00:00:00:00:01"]
//! uplink = ["up0=packet:eth0,mode=twin"]
//! ```
//!
//! Flags override the file: a flag given on the command line wins over the same
//! key in the file, `--client` and `--uplink` add ports to the file's, and
//! `--control-uid` adds to its list. A file with an unknown key, a value of the
//! wrong type or a specification that does not parse is an error that names the
//! line and the key. Defaults apply last, to what neither gives.

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Args;
use serde::{Deserialize, Deserializer};
use switch::config::{ClientSpec, PollMode, SwitchConfig, UplinkSpec};

use crate::commands::RunArgs;

/// `twin switch`'s options (see the module docs).
#[derive(Debug, Default, Args, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct SwitchArgs {
    /// Read options from this TOML file first (keys are the long flag names;
    /// `client` and `uplink` are lists of specifications); flags override it.
    #[arg(long, value_name = "FILE")]
    #[serde(skip)]
    config: Option<PathBuf>,
    /// A client port: NAME=SOCKET[,mac=MAC]. The switch listens on SOCKET as a vhost-user
    /// virtio-net device. With mac=, that MAC is offered to the client and frames from
    /// any other source address are dropped. Repeatable.
    #[arg(long = "client", value_name = "NAME=SOCKET[,mac=MAC]")]
    #[serde(default, rename = "client", deserialize_with = "from_strs")]
    clients: Vec<ClientSpec>,
    /// An uplink: NAME=DEVICE[,mode=inline|domain|twin]. DEVICE is a NIC's
    /// vhost-user socket (its driver domain connects, retrying until it appears),
    /// tap:IFNAME, packet:IFNAME[,qdisc-bypass=on|off][,queues=N] or
    /// xdp:IFNAME[,queue=N][,queues=M][,xdp-mode=native|generic]. The mode says
    /// who runs the driver's fast path: default twin (checked, in the switch),
    /// domain for tap: (its only mode); inline is unsafe (a driver bug takes
    /// the switch down) and only by name. With queues=N a packet: or xdp:
    /// uplink has N sockets, each with its own driver domain (queue i is NAME:i
    /// in `twin ctl`).
    /// Repeatable.
    #[arg(long = "uplink", value_name = "NAME=DEVICE[,mode=inline|domain|twin]")]
    #[serde(default, rename = "uplink", deserialize_with = "from_strs")]
    uplinks: Vec<UplinkSpec>,
    /// Learned MAC addresses expire after this many seconds without traffic
    /// [default: 300].
    #[arg(long)]
    fdb_max_age: Option<u64>,
    /// At most this many learned MAC addresses [default: 4096].
    #[arg(long)]
    fdb_capacity: Option<usize>,
    /// At most this many learned MAC addresses per port (clients and uplinks), so
    /// that no port can fill the table [default: 1024].
    #[arg(long)]
    fdb_port_quota: Option<u32>,
    /// Most flooded frames (broadcast, multicast, unknown unicast) a second that one
    /// port may send; the rest are dropped and counted (`flood_limited`). 0: no
    /// limit (the default: a NIC that never answers, as in benchmarks with a sink,
    /// makes every frame to it an unknown unicast).
    #[arg(long)]
    flood_limit: Option<u64>,
    /// Serve the control socket (`twin ctl`) at this path (mode 0600).
    #[arg(long)]
    control: Option<PathBuf>,
    /// Serve metrics in the Prometheus text format (HTTP `GET /metrics`) on this
    /// loopback ADDRESS:PORT (port 0: any free one, logged) or unix:PATH (mode
    /// 0600).
    #[arg(long, value_name = "ADDR")]
    #[serde(default, deserialize_with = "from_str_opt")]
    metrics: Option<switch::metrics::MetricsAddr>,
    /// A user id allowed on the control socket (checked with SO_PEERCRED).
    /// Repeatable; without it only the switch's own effective uid is.
    #[arg(long = "control-uid", value_name = "UID")]
    #[serde(default, rename = "control-uid")]
    control_uids: Vec<u32>,
    /// Carry out `twin ctl fault` commands: kill or corrupt driver domains and make
    /// twins misbehave on request. For tests and fault campaigns; off by default.
    #[arg(long)]
    #[serde(default)]
    fault_injection: bool,
    /// Most memory one client may share with the switch (its whole vhost-user
    /// memory table, e.g. a VM's RAM): a larger table is refused. Bytes, or with a
    /// K, M, G or T suffix (binary) [default: 64G].
    #[arg(long, value_parser = switch::config::parse_bytes)]
    #[serde(default, deserialize_with = "bytes")]
    max_client_memory: Option<u64>,
    /// Most client memory the switch maps for all clients together; a table that
    /// does not fit in what is left is refused [default: 256G].
    #[arg(long, value_parser = switch::config::parse_bytes)]
    #[serde(default, deserialize_with = "bytes")]
    max_total_client_memory: Option<u64>,
    /// Driver-domain restarts an uplink may make within a minute; past them it
    /// gives up, and stays down until `twin ctl revive UPLINK` [default: 200].
    #[arg(long)]
    restart_budget: Option<usize>,
    /// Run as root, the switch runs the driver domains of its uplinks' queues as
    /// user and group ids BASE, BASE+1... (one per queue, uplinks in order)
    /// outside their namespaces, ids nothing else on the host should use
    /// [default: 3000000000].
    #[arg(long, value_name = "BASE")]
    domain_id_base: Option<u32>,
    /// The file's `poll` (the command line's is `--poll`, below).
    #[arg(skip)]
    #[serde(default)]
    poll: Option<PollMode>,
    /// The file's `cpu` (the command line's is `--cpu`, below).
    #[arg(skip)]
    #[serde(default)]
    cpu: Option<usize>,
    #[command(flatten)]
    #[serde(skip)]
    run: RunArgs,
}

/// Each string of a list, parsed with its type's `FromStr`.
fn from_strs<'de, D, T>(d: D) -> Result<Vec<T>, D::Error>
where
    D: Deserializer<'de>,
    T: std::str::FromStr,
    T::Err: std::fmt::Display,
{
    Vec::<String>::deserialize(d)?
        .iter()
        .map(|s| s.parse().map_err(serde::de::Error::custom))
        .collect()
}

/// A string parsed with its type's `FromStr`.
fn from_str_opt<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: std::str::FromStr,
    T::Err: std::fmt::Display,
{
    let s = String::deserialize(d)?;
    s.parse().map(Some).map_err(serde::de::Error::custom)
}

/// A byte count: a number, or a string with a binary suffix ("64G").
fn bytes<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Bytes {
        Number(u64),
        Text(String),
    }
    match Bytes::deserialize(d)? {
        Bytes::Number(n) => Ok(Some(n)),
        Bytes::Text(s) => switch::config::parse_bytes(&s)
            .map(Some)
            .map_err(serde::de::Error::custom),
    }
}

/// Reads a configuration file.
fn read_file(path: &Path) -> anyhow::Result<SwitchArgs> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the configuration file {}", path.display()))?;
    toml::from_str(&text).with_context(|| format!("in the configuration file {}", path.display()))
}

impl SwitchArgs {
    /// The options of the command line over those of `file`.
    fn over(self, file: SwitchArgs) -> SwitchArgs {
        let mut clients = file.clients;
        clients.extend(self.clients);
        let mut uplinks = file.uplinks;
        uplinks.extend(self.uplinks);
        let mut control_uids = file.control_uids;
        control_uids.extend(self.control_uids);
        SwitchArgs {
            config: self.config,
            clients,
            uplinks,
            fdb_max_age: self.fdb_max_age.or(file.fdb_max_age),
            fdb_capacity: self.fdb_capacity.or(file.fdb_capacity),
            fdb_port_quota: self.fdb_port_quota.or(file.fdb_port_quota),
            flood_limit: self.flood_limit.or(file.flood_limit),
            control: self.control.or(file.control),
            metrics: self.metrics.or(file.metrics),
            control_uids,
            fault_injection: self.fault_injection || file.fault_injection,
            max_client_memory: self.max_client_memory.or(file.max_client_memory),
            max_total_client_memory: self
                .max_total_client_memory
                .or(file.max_total_client_memory),
            restart_budget: self.restart_budget.or(file.restart_budget),
            domain_id_base: self.domain_id_base.or(file.domain_id_base),
            poll: None,
            cpu: None,
            run: RunArgs {
                poll: self.run.poll.or(file.poll),
                cpu: self.run.cpu.or(file.cpu),
            },
        }
    }

    /// The switch's configuration: the file (if any) under the command line,
    /// then the defaults; and the options of the data-path thread.
    pub fn into_config(self) -> anyhow::Result<(SwitchConfig, RunArgs)> {
        let a = match &self.config {
            Some(path) => {
                let file = read_file(path)?;
                self.over(file)
            }
            None => self,
        };
        let cfg = SwitchConfig {
            clients: a.clients,
            uplinks: a.uplinks,
            poll: a.run.poll(),
            fdb_max_age_ms: a.fdb_max_age.unwrap_or(300).saturating_mul(1000),
            fdb_capacity: a.fdb_capacity.unwrap_or(4096),
            fdb_port_quota: a.fdb_port_quota.unwrap_or(1024),
            flood_limit_pps: a.flood_limit.unwrap_or(0),
            control: a.control,
            metrics: a.metrics,
            control_access: switch::ctl::Access {
                uids: a.control_uids,
                fault_injection: a.fault_injection,
            },
            max_client_memory: a.max_client_memory.unwrap_or(64 << 30),
            max_total_client_memory: a.max_total_client_memory.unwrap_or(256 << 30),
            restart_budget: a
                .restart_budget
                .unwrap_or(switch::port::uplink::RESTART_BUDGET),
            domain_id_base: a.domain_id_base.unwrap_or(3_000_000_000),
        };
        Ok((cfg, a.run))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(text: &str) -> Result<SwitchArgs, String> {
        toml::from_str(text).map_err(|e| e.to_string())
    }

    #[test]
    fn a_file_gives_every_option_and_flags_override_it() {
        let f = file(
            r#"
poll = "event"
cpu = 1
fdb-max-age = 60
max-client-memory = "1G"
max-total-client-memory = 4294967296
control = "/run/twin/ctl.sock"
metrics = "127.0.0.1:9187"
control-uid = [1000]
client = ["vm1=/run/vm1.sock,mac=02:00:00:00:00:01"]
uplink = ["up0=packet:eth0,mode=twin,queues=2"]
"#,
        )
        .unwrap();
        let flags = SwitchArgs {
            fdb_max_age: Some(90),
            control_uids: vec![1001],
            clients: vec!["vm2=/run/vm2.sock".parse().unwrap()],
            run: RunArgs {
                poll: Some(PollMode::Busy),
                cpu: None,
            },
            ..SwitchArgs::default()
        };
        let (cfg, run) = SwitchArgs {
            config: None,
            ..flags.over(f)
        }
        .into_config()
        .unwrap();
        assert_eq!(cfg.fdb_max_age_ms, 90_000, "the flag wins");
        assert_eq!(cfg.poll, PollMode::Busy, "the flag wins");
        assert_eq!(run.cpu, Some(1), "the file's, no flag");
        assert_eq!(cfg.max_client_memory, 1 << 30);
        assert_eq!(cfg.max_total_client_memory, 4 << 30);
        assert_eq!(cfg.control_access.uids, [1000, 1001]);
        let names: Vec<_> = cfg.clients.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["vm1", "vm2"], "the file's ports, then the flags'");
        assert_eq!(cfg.uplinks[0].device.queues(), 2);
        assert_eq!(cfg.fdb_capacity, 4096, "the default");
    }

    #[test]
    fn a_bad_file_names_the_line_and_the_key() {
        let e = file("poll = \"event\"\nfdb-max-agee = 3\n").unwrap_err();
        assert!(e.contains("line 2") && e.contains("fdb-max-agee"), "{e}");
        let e = file("\nuplink = [\"up0=packet:eth0,mode=warp\"]\n").unwrap_err();
        assert!(e.contains("line 2") && e.contains("unknown mode"), "{e}");
        let e = file("fdb-capacity = \"many\"\n").unwrap_err();
        assert!(e.contains("line 1") && e.contains("fdb-capacity"), "{e}");
        let e = file("max-client-memory = \"12X\"\n").unwrap_err();
        assert!(e.contains("line 1"), "{e}");
        let e = file("metrics = \"0.0.0.0:80\"\n").unwrap_err();
        assert!(e.contains("loopback"), "{e}");
    }
}
