//! Attack: a local client floods the switch's log. It connects to a client
//! port's socket and hangs up, as fast as it can, for three seconds: every
//! connection is a line "vhost-user client connected" and one "... disconnected"
//! in the switch's log, thousands a second if nothing held them back. Every line a
//! peer can cause goes through a rate-limited macro (`twin_log::*_limited!`, at
//! most `twin_log::LINES_PER_SEC` lines a second from one place in the code), so
//! the log gets at most that many a second of each, one of them says how many
//! were held back (`log_suppressed`), and the switch goes on serving the port.

mod common;

use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use common::*;

/// How long the attacker connects and hangs up.
const ATTACK: Duration = Duration::from_secs(3);
/// The limit of one call site (`twin_log::LINES_PER_SEC`).
const LINES_PER_SEC: usize = 10;

/// The time of day of a log line (`2026-12-01T02:21:00.943898Z ...`), in
/// seconds.
fn seconds_of_day(line: &str) -> Option<f64> {
    let time = line.split_once('T')?.1.split_once('Z')?.0;
    let mut parts = time.split(':');
    let (h, m, s) = (parts.next()?, parts.next()?, parts.next()?);
    Some(h.parse::<f64>().ok()? * 3600.0 + m.parse::<f64>().ok()? * 60.0 + s.parse::<f64>().ok()?)
}

#[test]
fn a_client_that_reconnects_in_a_loop_cannot_flood_the_log() {
    let _m = serial();
    let s = Scratch::new("logflood");
    let (c1_s, ctl) = (s.path("c1.sock"), s.path("ctl.sock"));
    let mut sw = Proc::twin_capturing(
        "switch",
        &[
            "switch",
            "--client",
            &format!("c1={c1_s}"),
            "--control",
            &ctl,
        ],
    );
    wait_for_path(&c1_s, Duration::from_secs(10));
    wait_for_path(&ctl, Duration::from_secs(10));

    let start = Instant::now();
    let mut connections = 0u64;
    while start.elapsed() < ATTACK {
        if let Ok(c) = UnixStream::connect(&c1_s) {
            connections += 1;
            drop(c);
        }
    }
    let attack_s = start.elapsed().as_secs_f64();

    // The port still serves: a client that speaks vhost-user gets its answer.
    let mut g = Proc::twin(
        "gen",
        &[
            "gen",
            "--socket",
            &c1_s,
            "--size",
            "64",
            "--count",
            "100",
            "--duration",
            "5",
            "--rate",
            "10000",
            "--dst-mac",
            "02:00:00:00:00:fe",
        ],
    );
    let g = g.report(Duration::from_secs(30));
    let (_, log) = sw.stop();

    // The switch takes the queued connections at its own pace, after the
    // attack too: what it may log depends on how long it logged.
    let lines = |what: &str| -> (usize, f64) {
        let times: Vec<f64> = log
            .lines()
            .filter(|l| l.contains(what))
            .filter_map(seconds_of_day)
            .collect();
        let span = match (times.first(), times.last()) {
            (Some(a), Some(b)) => b - a,
            _ => 0.0,
        };
        (times.len(), span)
    };
    let (connected, connected_s) = lines("vhost-user client connected");
    let (disconnected, disconnected_s) = lines("vhost-user client disconnected");
    let suppressed: u64 = log
        .lines()
        .filter(|l| l.contains("vhost-user client connected"))
        .filter_map(|l| l.split("log_suppressed=").nth(1)?.split_whitespace().next())
        .filter_map(|n| n.parse::<u64>().ok())
        .sum();
    eprintln!(
        "{connections} connections in {attack_s:.1} s; log lines: {connected} connected \
         over {connected_s:.1} s, {disconnected} disconnected over {disconnected_s:.1} s; \
         held back and reported: {suppressed}"
    );
    // The attack did what it should have: far more connections than lines.
    assert!(
        connections >= 1000,
        "only {connections} connections: the attack did not run"
    );
    // A window of a second each over the time the lines span, and two more for
    // the edges (the first window, the generator's connection).
    for (what, lines, span) in [
        ("connected", connected, connected_s),
        ("disconnected", disconnected, disconnected_s),
    ] {
        let windows = span.ceil() as usize + 2;
        assert!(
            lines <= LINES_PER_SEC * windows,
            "{lines} \"client {what}\" lines over {span:.1} s for {connections} connections"
        );
        assert!(lines > 0, "no \"client {what}\" line at all");
    }
    // What was held back is said, not hidden.
    assert!(
        suppressed > 0,
        "no line reported the lines it held back:\n{log}"
    );
    assert_eq!(n(&g, "/tx_packets"), 100, "the port stopped serving");
}
