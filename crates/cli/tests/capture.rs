//! Packet capture (`twin ctl capture PORT`) of a running switch: what a port
//! sends and receives, as pcap that `tcpdump -r` reads, while traffic flows
//! and without costing it a frame. A capture's reader that stops reading costs
//! the capture frames (counted as missed), never the port: every frame still
//! reaches its client, the control socket keeps answering, and the capture
//! ends on its own.
//!
//! Needs `tcpdump` (scripts/setup-host.sh installs it).

mod common;

use std::io::Write;
use std::process::Command;
use std::time::Duration;

use common::*;
use serde_json::Value;

const C1: &str = "02:00:00:00:00:01";
const C2: &str = "02:00:00:00:00:02";

/// An event-driven switch with clients c1 and c2 and a control socket.
fn two_clients(s: &Scratch) -> (Proc, String, String, String) {
    let (c1_s, c2_s, ctl) = (s.path("c1.sock"), s.path("c2.sock"), s.path("ctl.sock"));
    let sw = Proc::twin(
        "switch",
        &[
            "switch",
            "--client",
            &format!("c1={c1_s},mac={C1}"),
            "--client",
            &format!("c2={c2_s},mac={C2}"),
            "--poll",
            "event",
            "--control",
            &ctl,
        ],
    );
    wait_for_path(&ctl, Duration::from_secs(10));
    (sw, c1_s, c2_s, ctl)
}

/// c2 only receives, for `secs` (its address is pinned: c1's frames to it are
/// unicast); returns once it is connected.
fn receiver(c2_s: &str, ctl: &str, secs: &str) -> Proc {
    let r = gen_event(c2_s, C2, C1, secs, "0");
    wait_status(ctl, Duration::from_secs(10), "c2 connected", |st| {
        n(st, "/clients/c2/connects") == 1
    });
    r
}

#[test]
fn a_capture_of_a_port_is_pcap_that_tcpdump_reads() {
    let _m = serial();
    let s = Scratch::new("capture");
    let (mut sw, c1_s, c2_s, ctl) = two_clients(&s);
    let mut r2 = receiver(&c2_s, &ctl, "6");
    let pcap = s.path("c2.pcap");
    let mut cap = Proc::twin(
        "capture",
        &[
            "ctl",
            "--control",
            &ctl,
            "capture",
            "c2",
            "--direction",
            "tx",
            "--count",
            "100",
            "--output",
            &pcap,
        ],
    );
    wait_status(&ctl, Duration::from_secs(10), "the capture runs", |st| {
        st.pointer("/clients/c2/capturing") == Some(&Value::Bool(true))
    });
    let g1 = gen_event_with(&c1_s, C1, C2, "10", "20000", &["--count", "300"])
        .report(Duration::from_secs(30));
    assert_eq!(n(&g1, "/tx_packets"), 300);
    let done = cap.report(Duration::from_secs(10));
    assert_eq!(n(&done, "/result/frames"), 100, "{done}");
    let st = wait_status(&ctl, Duration::from_secs(10), "c2 got all", |st| {
        n(st, "/clients/c2/tx_packets") == 300
    });
    assert_eq!(n(&st, "/clients/c2/captured"), 100);
    assert_eq!(n(&st, "/clients/c2/capture_missed"), 0);
    assert_eq!(
        st.pointer("/clients/c2/capturing"),
        Some(&Value::Bool(false))
    );
    let mode = std::fs::metadata(&pcap).unwrap();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&mode.permissions()) & 0o777,
        0o600
    );

    // tcpdump reads it: 100 frames from c1 to c2, with their addresses.
    let out = Command::new("tcpdump")
        .args(["-r", &pcap, "-nn", "-e"])
        .output()
        .expect("run tcpdump (package tcpdump)");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "tcpdump: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // One line per frame (a hex dump of the unknown payload follows, indented).
    let lines: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with(|c: char| c.is_ascii_digit()))
        .collect();
    assert_eq!(lines.len(), 100, "{text}");
    for l in &lines {
        assert!(l.contains(&format!("{C1} > {C2}")), "{l}");
    }
    let r2 = r2.report(Duration::from_secs(40));
    assert_eq!(n(&r2, "/rx_packets"), 300, "c2 got every frame");
    let _ = sw.stop_report();
}

#[test]
fn a_capture_reader_that_stops_reading_costs_the_capture_not_the_port() {
    let _m = serial();
    let s = Scratch::new("capture-stall");
    let (mut sw, c1_s, c2_s, ctl) = two_clients(&s);
    let mut r2 = receiver(&c2_s, &ctl, "12");
    // Asks for a capture of both directions and never reads a byte.
    let mut stalled = std::os::unix::net::UnixStream::connect(&ctl).unwrap();
    stalled
        .write_all(b"{\"command\":\"capture\",\"port\":\"c2\"}\n")
        .unwrap();
    wait_status(&ctl, Duration::from_secs(10), "the capture runs", |st| {
        st.pointer("/clients/c2/capturing") == Some(&Value::Bool(true))
    });
    let sent = 20_000;
    let g1 = gen_event_with(
        &c1_s,
        C1,
        C2,
        "20",
        "50000",
        &["--count", &sent.to_string()],
    )
    .report(Duration::from_secs(60));
    assert_eq!(n(&g1, "/tx_packets"), sent);
    // The control socket answers meanwhile, and the capture ends by itself once
    // its reader has taken nothing for 5 s.
    let st = wait_status(&ctl, Duration::from_secs(20), "the capture ended", |st| {
        st.pointer("/clients/c2/capturing") == Some(&Value::Bool(false))
    });
    let (captured, missed) = (
        n(&st, "/clients/c2/captured"),
        n(&st, "/clients/c2/capture_missed"),
    );
    eprintln!("captured {captured}, missed {missed}");
    assert!(missed > 0, "the stalled reader cost the capture frames");
    assert_eq!(n(&st, "/clients/c2/tx_packets"), sent, "not the port");
    assert_eq!(drops(&st, "/clients/c2/drops"), 0);
    drop(stalled);
    let r2 = r2.report(Duration::from_secs(40));
    assert_eq!(n(&r2, "/rx_packets"), sent, "c2 got every frame");
    let _ = sw.stop_report();
}
