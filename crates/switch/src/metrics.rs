//! The metrics endpoint: the switch's report in the Prometheus text exposition
//! format (version 0.0.4), served over HTTP (`GET /metrics`) on a loopback
//! address or a unix socket (`--metrics 127.0.0.1:9187`, `--metrics
//! unix:/run/twin/metrics.sock`).
//!
//! Every counter of the report is a metric ([`render`]): per port (frames,
//! bytes, drops by reason, connects), per uplink and per queue of an uplink
//! (mode, twin faults, restarts, outages, the kernel link, device errors,
//! upcalls), the learning table, client memory, and the data path (rounds,
//! rounds with work, idle time). Names follow Prometheus conventions: a
//! `twin_` prefix, `_total` on counters, base units (`_seconds`, `_bytes`),
//! labels for the port, its kind, the queue and the reason.
//!
//! A scrape asks the data-path thread for the report between two batches (as
//! `twin ctl status` does), so the numbers of one scrape are one snapshot. The
//! listener serves one connection at a time; a request must arrive whole
//! within 2 s and in at most [`MAX_REQUEST`] bytes, and anything but `GET
//! /metrics` gets a 404 or 405. What a peer sends is never logged more than
//! once a second.
//!
//! The text format is written here: it is a few lines per metric family, and
//! the maintained Rust clients (`prometheus`, `prometheus-client`) encode live
//! metric objects registered ahead, not a report taken as a whole.
//!
//! Limits: a TCP endpoint must be on a loopback address (there is no TLS and no
//! authentication; expose it further through a proxy); a unix socket is created
//! with mode 0600 like the control socket, and its peers are not checked
//! further.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::counters::{PortReport, SwitchReport};

/// The longest request head taken (request line and headers).
pub const MAX_REQUEST: usize = 8192;
/// How long a request may take to arrive, and an answer to be written.
const IO_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a scrape waits for the data path.
const DATA_PATH_TIMEOUT: Duration = Duration::from_secs(5);

/// Where the endpoint listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MetricsAddr {
    /// A loopback TCP address (port 0: any free port).
    Tcp(SocketAddr),
    /// A unix socket at this path (`unix:PATH`).
    Unix(PathBuf),
}

impl FromStr for MetricsAddr {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if let Some(path) = s.strip_prefix("unix:") {
            if path.is_empty() {
                return Err("unix: needs a path".into());
            }
            return Ok(MetricsAddr::Unix(PathBuf::from(path)));
        }
        let addr: SocketAddr = s
            .parse()
            .map_err(|e| format!("{s:?} is not ADDRESS:PORT or unix:PATH: {e}"))?;
        if !addr.ip().is_loopback() {
            return Err(format!(
                "{addr} is not a loopback address: the endpoint has no authentication"
            ));
        }
        Ok(MetricsAddr::Tcp(addr))
    }
}

impl std::fmt::Display for MetricsAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MetricsAddr::Tcp(a) => write!(f, "{a}"),
            MetricsAddr::Unix(p) => write!(f, "unix:{}", p.display()),
        }
    }
}

/// Errors of the endpoint.
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    /// The address could not be listened on.
    #[error("cannot listen for metrics on {addr}")]
    Listen {
        /// The address.
        addr: MetricsAddr,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// The unix socket's path is taken.
    #[error(transparent)]
    Path(#[from] crate::ctl::CtlError),
}

/// A scrape waiting for the data path's report.
#[derive(Debug)]
pub struct Scrape {
    /// The report goes here.
    pub reply: SyncSender<SwitchReport>,
}

/// Listens on `addr` and returns the scrapes' channel and the address it
/// listens on (a TCP port 0 resolved).
pub fn serve(addr: &MetricsAddr) -> Result<(Receiver<Scrape>, MetricsAddr), MetricsError> {
    let listen_err = |source| MetricsError::Listen {
        addr: addr.clone(),
        source,
    };
    let (tx, rx) = mpsc::sync_channel(1);
    let spawn = |f: Box<dyn FnOnce() + Send>| {
        std::thread::Builder::new()
            .name("metrics".into())
            .spawn(f)
            .map(|_| ())
    };
    match addr {
        MetricsAddr::Tcp(a) => {
            let listener = TcpListener::bind(a).map_err(listen_err)?;
            let bound = listener.local_addr().map_err(listen_err)?;
            spawn(Box::new(move || {
                let mut log = LogLimit::default();
                for conn in listener.incoming().flatten() {
                    if !answer(conn, &tx, &mut log) {
                        return;
                    }
                }
            }))
            .map_err(listen_err)?;
            Ok((rx, MetricsAddr::Tcp(bound)))
        }
        MetricsAddr::Unix(path) => {
            crate::ctl::clear_path(path)?;
            let listener = crate::ctl::bind_private(path).map_err(listen_err)?;
            spawn(Box::new(move || {
                let mut log = LogLimit::default();
                for conn in listener.incoming().flatten() {
                    if !answer(conn, &tx, &mut log) {
                        return;
                    }
                }
            }))
            .map_err(listen_err)?;
            Ok((rx, addr.clone()))
        }
    }
}

/// At most one log line a second about what peers send.
#[derive(Debug, Default)]
struct LogLimit(Option<Instant>);

impl LogLimit {
    fn warn(&mut self, what: &str) {
        if self.0.is_none_or(|t| t.elapsed() >= Duration::from_secs(1)) {
            self.0 = Some(Instant::now());
            twin_log::warn_limited!("metrics endpoint: {what}");
        }
    }
}

/// A connection's stream, whichever the listener.
trait Conn: Read + Write {
    fn set_timeouts(&self, t: Duration);
}

impl Conn for std::net::TcpStream {
    fn set_timeouts(&self, t: Duration) {
        let _ = self.set_read_timeout(Some(t));
        let _ = self.set_write_timeout(Some(t));
    }
}

impl Conn for std::os::unix::net::UnixStream {
    fn set_timeouts(&self, t: Duration) {
        let _ = self.set_read_timeout(Some(t));
        let _ = self.set_write_timeout(Some(t));
    }
}

/// Answers one connection. Returns false once the data path is gone.
fn answer(mut conn: impl Conn, tx: &SyncSender<Scrape>, log: &mut LogLimit) -> bool {
    conn.set_timeouts(IO_TIMEOUT);
    let (status, body, go_on) = match read_head(&mut conn) {
        Err(why) => {
            log.warn(why);
            ("400 Bad Request", format!("{why}\n"), true)
        }
        Ok(Target::Metrics) => match scrape(tx) {
            Some(report) => ("200 OK", render(&report), true),
            None => (
                "503 Service Unavailable",
                "the data path did not answer\n".into(),
                false,
            ),
        },
        Ok(Target::NotFound) => ("404 Not Found", "try /metrics\n".into(), true),
        Ok(Target::BadMethod) => ("405 Method Not Allowed", "GET only\n".into(), true),
    };
    let content_type = if status.starts_with("200") {
        "text/plain; version=0.0.4; charset=utf-8"
    } else {
        "text/plain; charset=utf-8"
    };
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n",
        body.len()
    );
    let _ = conn
        .write_all(head.as_bytes())
        .and_then(|()| conn.write_all(body.as_bytes()));
    go_on
}

/// What a request asked for.
#[derive(Debug, PartialEq, Eq)]
enum Target {
    Metrics,
    NotFound,
    BadMethod,
}

/// Reads a request head (up to the blank line, at most [`MAX_REQUEST`] bytes)
/// and looks at its request line.
fn read_head(conn: &mut impl Read) -> Result<Target, &'static str> {
    let mut head = Vec::with_capacity(512);
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && !head.windows(2).any(|w| w == b"\n\n") {
        if head.len() >= MAX_REQUEST {
            return Err("a request head longer than 8 KiB");
        }
        let want = buf.len().min(MAX_REQUEST - head.len());
        match conn.read(&mut buf[..want]) {
            Ok(0) => break,
            Ok(n) => head.extend_from_slice(&buf[..n]),
            Err(_) => return Err("no complete request in time"),
        }
    }
    let line = head.split(|b| *b == b'\n').next().unwrap_or_default();
    let mut words = line.split(|b| *b == b' ').filter(|w| !w.is_empty());
    let (Some(method), Some(target)) = (words.next(), words.next()) else {
        return Err("no request line");
    };
    if method != b"GET" {
        return Ok(Target::BadMethod);
    }
    let path = target.split(|b| *b == b'?').next().unwrap_or_default();
    Ok(if path == b"/metrics" {
        Target::Metrics
    } else {
        Target::NotFound
    })
}

/// The data path's report, or `None` when it did not answer.
fn scrape(tx: &SyncSender<Scrape>) -> Option<SwitchReport> {
    let (reply, answer) = mpsc::sync_channel(1);
    tx.send(Scrape { reply }).ok()?;
    answer.recv_timeout(DATA_PATH_TIMEOUT).ok()
}

/// A metric family: its samples, written together under one `HELP` and `TYPE`.
struct Family {
    help: &'static str,
    kind: &'static str,
    /// Each sample's labels and value, as written.
    samples: Vec<(String, String)>,
}

/// The metric families of one scrape, in the order first used.
#[derive(Default)]
struct Families {
    order: Vec<&'static str>,
    by_name: BTreeMap<&'static str, Family>,
}

impl Families {
    /// Adds a sample of `name` (a counter when `kind` is `counter`) with `labels`.
    fn add(
        &mut self,
        name: &'static str,
        kind: &'static str,
        help: &'static str,
        labels: &[(&str, &str)],
        value: impl std::fmt::Display,
    ) {
        let family = self.by_name.entry(name).or_insert_with(|| {
            self.order.push(name);
            Family {
                help,
                kind,
                samples: Vec::new(),
            }
        });
        let mut l = String::new();
        for (i, (k, v)) in labels.iter().enumerate() {
            let _ = write!(l, "{}{k}=\"{}\"", if i == 0 { "" } else { "," }, escape(v));
        }
        family.samples.push((l, value.to_string()));
    }

    fn counter(&mut self, name: &'static str, help: &'static str, labels: &[(&str, &str)], v: u64) {
        // Integers exactly (an f64 would round past 2^53).
        self.add(name, "counter", help, labels, v);
    }

    fn gauge(&mut self, name: &'static str, help: &'static str, labels: &[(&str, &str)], v: f64) {
        self.add(name, "gauge", help, labels, v);
    }

    fn write(&self, out: &mut String) {
        for name in &self.order {
            let Some(f) = self.by_name.get(name) else {
                continue;
            };
            let _ = writeln!(out, "# HELP {name} {}", f.help);
            let _ = writeln!(out, "# TYPE {name} {}", f.kind);
            for (labels, v) in &f.samples {
                if labels.is_empty() {
                    let _ = writeln!(out, "{name} {v}");
                } else {
                    let _ = writeln!(out, "{name}{{{labels}}} {v}");
                }
            }
        }
    }
}

/// A label value as the text format wants it: backslash, double quote and
/// line feed escaped.
fn escape(v: &str) -> String {
    let mut s = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => s.push_str("\\\\"),
            '"' => s.push_str("\\\""),
            '\n' => s.push_str("\\n"),
            c => s.push(c),
        }
    }
    s
}

/// The report in the Prometheus text format.
pub fn render(r: &SwitchReport) -> String {
    let mut f = Families::default();
    for (kind, ports) in [("client", &r.clients), ("uplink", &r.uplinks)] {
        for (name, p) in ports {
            port(&mut f, name, kind, p);
        }
    }
    for (name, p) in &r.uplinks {
        match p.detail.get("queues").and_then(Value::as_array) {
            Some(queues) => {
                for (i, q) in queues.iter().enumerate() {
                    uplink(&mut f, name, &i.to_string(), q);
                }
            }
            None => uplink(&mut f, name, "0", &p.detail),
        }
    }
    f.gauge(
        "twin_fdb_entries",
        "Addresses in the learning table.",
        &[],
        r.fdb_entries as f64,
    );
    f.counter(
        "twin_fdb_full_total",
        "Source addresses not learned because the learning table was full.",
        &[],
        r.fdb_full,
    );
    f.counter(
        "twin_fdb_quota_full_total",
        "Source addresses not learned because their port owned its quota.",
        &[],
        r.fdb_quota_full,
    );
    f.gauge(
        "twin_client_memory_bytes",
        "Client memory mapped (the memory tables in force, all clients).",
        &[],
        r.client_memory as f64,
    );
    f.gauge(
        "twin_client_memory_limit_bytes",
        "The switch's client memory budget.",
        &[],
        r.client_memory_limit as f64,
    );
    let d = &r.datapath;
    f.counter(
        "twin_datapath_rounds_total",
        "Rounds of the data-path loop.",
        &[],
        d.rounds,
    );
    f.counter(
        "twin_datapath_work_rounds_total",
        "Rounds of the data-path loop that delivered at least one frame.",
        &[],
        d.work_rounds,
    );
    f.counter_f(
        "twin_datapath_seconds_total",
        "Seconds since the data path started.",
        d.seconds,
    );
    f.counter_f(
        "twin_datapath_idle_seconds_total",
        "Seconds the data path spent in rounds without work (polling, yielding, sleeping).",
        d.idle_seconds,
    );
    let mut out = String::with_capacity(16 * 1024);
    f.write(&mut out);
    out
}

impl Families {
    fn counter_f(&mut self, name: &'static str, help: &'static str, v: f64) {
        self.add(name, "counter", help, &[], v);
    }
}

/// One port's counters.
fn port(f: &mut Families, name: &str, kind: &str, p: &PortReport) {
    let l = [("port", name), ("kind", kind)];
    f.counter(
        "twin_port_rx_packets_total",
        "Frames the switch took from the port.",
        &l,
        p.rx_packets,
    );
    f.counter(
        "twin_port_rx_bytes_total",
        "Bytes the switch took from the port.",
        &l,
        p.rx_bytes,
    );
    f.counter(
        "twin_port_tx_packets_total",
        "Frames the switch delivered to the port.",
        &l,
        p.tx_packets,
    );
    f.counter(
        "twin_port_tx_bytes_total",
        "Bytes the switch delivered to the port.",
        &l,
        p.tx_bytes,
    );
    for (reason, n) in &p.drops {
        f.counter(
            "twin_port_dropped_packets_total",
            "Frames dropped on the port, by reason (the switch's, the device's or the driver's).",
            &[("port", name), ("kind", kind), ("reason", reason)],
            *n,
        );
    }
    f.counter(
        "twin_port_captured_packets_total",
        "Frames taken into packet captures of the port.",
        &l,
        p.captured,
    );
    f.counter(
        "twin_port_capture_missed_packets_total",
        "Frames left out of captures of the port (its reader was behind; the frames went on).",
        &l,
        p.capture_missed,
    );
    f.counter(
        "twin_port_connects_total",
        "Times the port's peer connected (a client, a NIC, a driver domain started).",
        &l,
        p.connects,
    );
    f.counter(
        "twin_port_disconnects_total",
        "Times the port's peer went away.",
        &l,
        p.disconnects,
    );
}

/// One uplink's (or one queue's) driver details.
fn uplink(f: &mut Families, name: &str, queue: &str, d: &Value) {
    let l = [("uplink", name), ("queue", queue)];
    let num = |key: &str| d.get(key).and_then(Value::as_u64).unwrap_or(0);
    let flag = |key: &str| f64::from(u8::from(d.get(key) == Some(&Value::Bool(true))));
    let mode = d.get("mode").and_then(Value::as_str).unwrap_or("");
    for m in crate::config::UplinkMode::ALL {
        f.gauge(
            "twin_uplink_mode",
            "1 for the mode the uplink's fast path should run in (inline, domain, twin).",
            &[("uplink", name), ("queue", queue), ("mode", m.as_str())],
            f64::from(u8::from(m.as_str() == mode)),
        );
    }
    f.gauge(
        "twin_uplink_connected",
        "1 while the uplink's driver is attached to its NIC.",
        &l,
        flag("connected"),
    );
    f.gauge(
        "twin_uplink_gave_up",
        "1 when the uplink's domain failed too often and is not restarted again.",
        &l,
        flag("gave_up"),
    );
    f.counter(
        "twin_uplink_twin_faults_total",
        "Faults of the uplink's twin, each contained.",
        &l,
        num("twin_fault_count"),
    );
    f.counter(
        "twin_uplink_mode_changes_total",
        "Moves of the uplink's fast path carried out.",
        &l,
        num("mode_changes"),
    );
    f.gauge(
        "twin_uplink_restarts_in_window",
        "Driver-domain restarts within the restart budget's window.",
        &l,
        num("restarts_in_window") as f64,
    );
    f.counter(
        "twin_uplink_link_downs_total",
        "Times the uplink's kernel interface was seen going down.",
        &l,
        num("link_downs"),
    );
    if let Some(link) = d.get("link").filter(|v| v.is_object()) {
        f.gauge(
            "twin_uplink_link_up",
            "1 while the uplink's kernel interface is up and running.",
            &l,
            f64::from(u8::from(
                link.get("up") == Some(&Value::Bool(true))
                    && link.get("running") == Some(&Value::Bool(true)),
            )),
        );
    }
    for (family, help, key, label) in [
        (
            "twin_uplink_device_errors_total",
            "Errors of the NIC that the uplink's driver domains found, by kind.",
            "device_errors",
            "error",
        ),
        (
            "twin_uplink_upcalls_total",
            "Slow-path upcalls of the uplink's fast path, by outcome.",
            "upcalls_total",
            "outcome",
        ),
    ] {
        if let Some(map) = d.get(key).and_then(Value::as_object) {
            for (k, v) in map {
                f.counter(
                    family,
                    help,
                    &[("uplink", name), ("queue", queue), (label, k)],
                    v.as_u64().unwrap_or(0),
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::counters::{PortCounters, SwitchReport};

    fn report() -> SwitchReport {
        let mut c = PortCounters::default();
        c.drop(crate::counters::DropReason::Hairpin);
        let client = PortReport::new(&c, [], 1, 0, Value::Null);
        let uplink = PortReport::new(
            &PortCounters::default(),
            [("kernel_too_long".to_string(), 3)],
            2,
            1,
            serde_json::json!({
                "queues": [
                    {"mode": "twin", "connected": true, "twin_fault_count": 2,
                     "link": {"up": true, "running": true},
                     "upcalls_total": {"posted": 5}},
                    {"mode": "domain", "connected": false},
                ]
            }),
        );
        let mut clients = BTreeMap::new();
        clients.insert("c\"1\n".to_string(), client);
        let mut uplinks = BTreeMap::new();
        uplinks.insert("u0".to_string(), uplink);
        SwitchReport::new(clients, uplinks, 4, 0)
    }

    #[test]
    fn each_family_is_written_once_with_its_samples_together() {
        let text = render(&report());
        let mut seen = std::collections::HashSet::new();
        let mut current = "";
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let name = rest.split(' ').next().unwrap();
                assert!(seen.insert(name.to_string()), "{name} twice");
                current = name;
            } else if !line.starts_with('#') {
                let name = line.split(['{', ' ']).next().unwrap();
                assert_eq!(name, current, "{line} outside its family");
            }
        }
        for counter in text.lines().filter(|l| l.ends_with(" counter")) {
            assert!(counter.contains("_total "), "{counter}");
        }
        assert!(text.contains(
            "twin_port_dropped_packets_total{port=\"u0\",kind=\"uplink\",reason=\"kernel_too_long\"} 3"
        ));
        assert!(text.contains("twin_uplink_twin_faults_total{uplink=\"u0\",queue=\"0\"} 2"));
        assert!(text.contains("twin_uplink_connected{uplink=\"u0\",queue=\"1\"} 0"));
        assert!(text.contains("twin_uplink_mode{uplink=\"u0\",queue=\"0\",mode=\"twin\"} 1"));
        assert!(text.contains("twin_uplink_link_up{uplink=\"u0\",queue=\"0\"} 1"));
    }

    #[test]
    fn label_values_are_escaped() {
        let text = render(&report());
        assert!(
            text.contains("port=\"c\\\"1\\n\""),
            "a name with a quote and a newline: {text}"
        );
        assert!(!text.lines().any(|l| l == "\""), "no line split by a label");
    }

    #[test]
    fn requests_are_read_within_bounds() {
        let t = |req: &[u8]| read_head(&mut &req[..]);
        assert_eq!(
            t(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"),
            Ok(Target::Metrics)
        );
        assert_eq!(t(b"GET /metrics?x=1 HTTP/1.0\r\n\r\n"), Ok(Target::Metrics));
        assert_eq!(t(b"GET / HTTP/1.1\r\n\r\n"), Ok(Target::NotFound));
        assert_eq!(t(b"POST /metrics HTTP/1.1\r\n\r\n"), Ok(Target::BadMethod));
        assert!(t(b"\r\n\r\n").is_err());
        let long = vec![b'a'; MAX_REQUEST * 2];
        assert!(
            t(&long).is_err(),
            "a head without end is refused at the bound"
        );
    }

    #[test]
    fn only_loopback_or_unix_addresses_are_taken() {
        assert!("127.0.0.1:9187".parse::<MetricsAddr>().is_ok());
        assert!("[::1]:0".parse::<MetricsAddr>().is_ok());
        assert!("unix:/run/m.sock".parse::<MetricsAddr>().is_ok());
        assert!("0.0.0.0:9187".parse::<MetricsAddr>().is_err());
        assert!("10.0.0.1:9187".parse::<MetricsAddr>().is_err());
        assert!("unix:".parse::<MetricsAddr>().is_err());
    }
}
