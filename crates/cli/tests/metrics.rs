//! The metrics endpoint (`twin switch --metrics`), scraped while the switch
//! runs: a client sends through the switch to a reflecting built-in NIC behind
//! an uplink whose fast path is a twin; the endpoint's text passes Prometheus's
//! own checker (`promtool check metrics`: the format and the naming
//! conventions), and its counters are the control socket's report, exactly.
//! Hostile scrapers get an error status and cannot stall the endpoint: a
//! request that never ends is cut off after 2 s, one past 8 KiB is refused,
//! and the next scrape is answered. On a unix socket the endpoint is mode 0600.
//!
//! Needs `promtool` (package `prometheus`; scripts/setup-host.sh installs it).

mod common;

use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

const C1: &str = "02:00:00:00:00:01";
const OUTSIDE: &str = "02:00:00:00:00:fe";

/// Sends `request` on `stream` and returns the whole answer (the server closes).
fn exchange(mut stream: impl Read + Write, request: &[u8]) -> String {
    stream.write_all(request).expect("send the request");
    let mut answer = String::new();
    stream.read_to_string(&mut answer).expect("read the answer");
    answer
}

/// The status line and the body of an HTTP answer.
fn split(answer: &str) -> (&str, &str) {
    let status = answer.lines().next().unwrap_or_default();
    let body = answer.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    (status, body)
}

/// The value of the sample `series` (name and labels, as written) in `text`.
fn sample(text: &str, series: &str) -> u64 {
    let line = text
        .lines()
        .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
        .unwrap_or_else(|| panic!("no sample {series} in:\n{text}"));
    let v: f64 = line[series.len() + 1..].parse().expect("a number");
    v as u64
}

/// Where the switch says its endpoint listens.
fn bound_address(sw: &Proc) -> String {
    sw.wait_for_output("metrics endpoint listening", Duration::from_secs(10));
    let out = sw.output();
    let at = out.find("bound=").expect("the bound address logged") + "bound=".len();
    out[at..]
        .split_whitespace()
        .next()
        .expect("an address")
        .to_string()
}

#[test]
fn the_metrics_endpoint_passes_promtool_and_agrees_with_the_report() {
    let _m = serial();
    let s = Scratch::new("metrics");
    let nic_s = s.path("nic.sock");
    let c1_s = s.path("c1.sock");
    let ctl = s.path("ctl.sock");
    let mut nic = Proc::twin(
        "nic",
        &[
            "nic", "--socket", &nic_s, "--mode", "reflect", "--poll", "event",
        ],
    );
    wait_for_path(&nic_s, Duration::from_secs(10));
    let mut sw = Proc::twin_capturing(
        "switch",
        &[
            "switch",
            "--client",
            &format!("c1={c1_s},mac={C1}"),
            "--uplink",
            &format!("u0={nic_s},mode=twin"),
            "--poll",
            "event",
            "--control",
            &ctl,
            "--metrics",
            "127.0.0.1:0",
        ],
    );
    let addr = bound_address(&sw);
    wait_for_path(&ctl, Duration::from_secs(10));
    wait_status(&ctl, Duration::from_secs(20), "the twin runs", |st| {
        fast_path(st) == Some("twin")
    });
    let g = gen_event(&c1_s, C1, OUTSIDE, "1", "20000").report(Duration::from_secs(30));
    assert!(n(&g, "/tx_packets") > 10_000);
    // Everything reflected has come back before the two looks.
    std::thread::sleep(Duration::from_millis(300));
    let st = ctl_status(&ctl);
    let answer = exchange(
        std::net::TcpStream::connect(&addr).expect("connect to the endpoint"),
        b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nAccept: */*\r\n\r\n",
    );
    let (status, text) = split(&answer);
    assert_eq!(status, "HTTP/1.1 200 OK", "{answer}");
    assert!(answer.contains("Content-Type: text/plain; version=0.0.4"));

    // Prometheus's own checker: the format and the naming conventions.
    let mut check = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run promtool (package prometheus)");
    check
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = check.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics: {}{}\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    // The same numbers as the report (nothing moved between the two looks).
    for (series, pointer) in [
        (
            r#"twin_port_rx_packets_total{port="c1",kind="client"}"#,
            "/clients/c1/rx_packets",
        ),
        (
            r#"twin_port_tx_packets_total{port="c1",kind="client"}"#,
            "/clients/c1/tx_packets",
        ),
        (
            r#"twin_port_tx_packets_total{port="u0",kind="uplink"}"#,
            "/uplinks/u0/tx_packets",
        ),
        (
            r#"twin_port_rx_bytes_total{port="u0",kind="uplink"}"#,
            "/uplinks/u0/rx_bytes",
        ),
        (
            r#"twin_port_connects_total{port="u0",kind="uplink"}"#,
            "/uplinks/u0/connects",
        ),
    ] {
        assert_eq!(sample(text, series), n(&st, pointer), "{series}");
    }
    assert_eq!(
        sample(
            text,
            r#"twin_uplink_mode{uplink="u0",queue="0",mode="twin"}"#
        ),
        1
    );
    assert_eq!(
        sample(text, r#"twin_uplink_connected{uplink="u0",queue="0"}"#),
        1
    );
    assert!(sample(text, "twin_datapath_work_rounds_total") > 0);
    assert!(
        sample(text, "twin_datapath_rounds_total")
            >= sample(text, "twin_datapath_work_rounds_total")
    );

    // Hostile scrapers: each gets its answer, and the endpoint goes on.
    let post = exchange(
        std::net::TcpStream::connect(&addr).unwrap(),
        b"POST /metrics HTTP/1.1\r\n\r\n",
    );
    assert!(post.starts_with("HTTP/1.1 405"), "{post}");
    let other = exchange(
        std::net::TcpStream::connect(&addr).unwrap(),
        b"GET /admin HTTP/1.1\r\n\r\n",
    );
    assert!(other.starts_with("HTTP/1.1 404"), "{other}");
    // Exactly the bound, with no end: the endpoint reads it all, then refuses.
    let mut long = b"GET /metrics HTTP/1.1\r\nX: ".to_vec();
    long.resize(switch::metrics::MAX_REQUEST, b'a');
    let too_long = exchange(std::net::TcpStream::connect(&addr).unwrap(), &long);
    assert!(too_long.starts_with("HTTP/1.1 400"), "{too_long}");
    // A request that never ends holds the endpoint for 2 s, no more.
    let mut silent = std::net::TcpStream::connect(&addr).unwrap();
    silent.write_all(b"GET /metr").unwrap();
    let started = Instant::now();
    let mut cut = String::new();
    silent
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let _ = silent.read_to_string(&mut cut);
    assert!(cut.starts_with("HTTP/1.1 400"), "{cut}");
    assert!(started.elapsed() < Duration::from_secs(8));
    let again = exchange(
        std::net::TcpStream::connect(&addr).unwrap(),
        b"GET /metrics HTTP/1.0\r\n\r\n",
    );
    assert!(again.starts_with("HTTP/1.1 200"), "answered again");

    let sw_r = sw.stop_report();
    assert!(n(&sw_r, "/datapath/rounds") > 0);
    let _ = nic.stop();
}

#[test]
fn a_unix_socket_endpoint_is_private_and_answers() {
    let _m = serial();
    let s = Scratch::new("metrics-unix");
    let c1_s = s.path("c1.sock");
    let m_s = s.path("metrics.sock");
    let mut sw = Proc::twin_capturing(
        "switch",
        &[
            "switch",
            "--client",
            &format!("c1={c1_s},mac={C1}"),
            "--poll",
            "event",
            "--metrics",
            &format!("unix:{m_s}"),
        ],
    );
    bound_address(&sw);
    let mode = std::fs::metadata(&m_s).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "the socket's mode");
    let answer = exchange(
        std::os::unix::net::UnixStream::connect(&m_s).unwrap(),
        b"GET /metrics HTTP/1.1\r\n\r\n",
    );
    let (status, text) = split(&answer);
    assert_eq!(status, "HTTP/1.1 200 OK");
    assert_eq!(
        sample(
            text,
            r#"twin_port_rx_packets_total{port="c1",kind="client"}"#
        ),
        0
    );
    let sw_r: Value = sw.stop_report();
    assert_eq!(n(&sw_r, "/clients/c1/rx_packets"), 0);
    assert!(
        !std::path::Path::new(&m_s).exists(),
        "the socket is removed at exit"
    );
}
