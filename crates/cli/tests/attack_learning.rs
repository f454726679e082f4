//! Attacks on the learning table by real clients of the real `twin switch`.
//!
//! * Taking over a protected MAC: a port without `mac=` (or the network behind an
//!   uplink) sends frames with a pinned client's MAC as source. Before the fix the
//!   table moved the address to the attacker, who then received the victim's
//!   unicast; now the address is pinned and the frames are dropped as
//!   `stolen_source`.
//! * Flooding: a port's broadcast and unknown-unicast frames beyond
//!   `--flood-limit` are dropped and counted as `flood_limited`.

mod common;

use std::time::Duration;

use common::*;
use serde_json::Value;

const A: &str = "02:00:00:00:00:0a";
const C: &str = "02:00:00:00:00:0c";
const BCAST: &str = "ff:ff:ff:ff:ff:ff";

/// A switch drop counter of a client port. The report lists only the reasons that
/// occurred, so a reason the switch does not know is a test error, not a zero.
fn drop_at(r: &Value, port: &str, reason: &str) -> u64 {
    const KNOWN: [&str; 3] = ["stolen_source", "flood_limited", "destination_down"];
    assert!(
        KNOWN.contains(&reason),
        "not a drop reason of the switch: {reason}"
    );
    r.pointer(&format!("/clients/{port}/drops"))
        .and_then(Value::as_object)
        .unwrap_or_else(|| panic!("no drops of {port}: {r}"))
        .get(reason)
        .map_or(0, |v| v.as_u64().expect("a count"))
}

/// Frames the device of `port` could not hand to its client (counted under
/// `to_client_drops`).
fn to_client_drops(r: &Value, port: &str) -> u64 {
    r.pointer(&format!("/clients/{port}/detail/to_client_drops"))
        .and_then(Value::as_object)
        .unwrap_or_else(|| panic!("no to_client_drops for {port}: {r}"))
        .values()
        .map(|v| v.as_u64().expect("a count"))
        .sum()
}

fn wait_connected(ctl: &str, ports: &[&str]) {
    wait_status(ctl, Duration::from_secs(10), "clients connected", |s| {
        ports.iter().all(|p| {
            s.pointer(&format!("/clients/{p}/connects"))
                .and_then(Value::as_u64)
                .is_some_and(|c| c >= 1)
        })
    });
}

#[test]
fn a_pinned_client_mac_cannot_be_taken_over_by_another_port() {
    let _m = serial();
    let s = Scratch::new("attack-steal");
    let (a_s, x_s, c_s, ctl) = (
        s.path("a.sock"),
        s.path("x.sock"),
        s.path("c.sock"),
        s.path("ctl.sock"),
    );
    let mut sw = Proc::twin(
        "switch",
        &[
            "switch",
            "--client",
            &format!("a={a_s},mac={A}"),
            "--client",
            &format!("x={x_s}"),
            "--client",
            &format!("c={c_s},mac={C}"),
            "--poll",
            "event",
            "--control",
            &ctl,
        ],
    );
    wait_for_path(&ctl, Duration::from_secs(10));
    // The victim only receives.
    let mut victim = gen_event(&a_s, A, BCAST, "6", "0");
    wait_connected(&ctl, &["a"]);
    // The attacker claims A, broadcasting (and counts whatever reaches it), while C
    // sends exactly 5000 frames to A.
    let mut thief = gen_exact(&x_s, A, BCAST, "7", "20000", "20000", "3", false);
    wait_connected(&ctl, &["x"]);
    let mut sender = gen_exact(&c_s, C, A, "3", "5000", "5000", "3", false);
    let thief_r = thief.report(Duration::from_secs(20));
    let send_r = sender.report(Duration::from_secs(20));
    let victim_r = victim.report(Duration::from_secs(20));
    let sw_r = sw.stop_report();
    eprintln!("switch {sw_r}\nvictim {victim_r}\nthief {thief_r}");

    let spoofed = n(&thief_r, "/tx_packets");
    assert!(spoofed > 0, "the attacker sent nothing: {thief_r}");
    assert_eq!(
        drop_at(&sw_r, "x", "stolen_source"),
        spoofed,
        "every frame claiming the pinned MAC is dropped at its port"
    );
    let sent = n(&send_r, "/tx_packets");
    assert_eq!(sent, 5000, "{send_r}");
    // The attacker got none of the victim's unicast; the victim got all of it, but
    // what its own device counted as undeliverable (a full receive ring) or what
    // reached it before it was ready.
    assert_eq!(
        n(&thief_r, "/rx_foreign"),
        0,
        "the thief received the victim's frames"
    );
    assert_eq!(
        n(&victim_r, "/rx_foreign")
            + to_client_drops(&sw_r, "a")
            + drop_at(&sw_r, "c", "destination_down"),
        sent,
        "frames to the pinned MAC went elsewhere: {sw_r}"
    );
    assert!(
        n(&victim_r, "/rx_foreign") > 0,
        "nothing reached the victim"
    );
}

#[test]
fn floods_beyond_a_ports_limit_are_dropped_and_counted() {
    let _m = serial();
    let s = Scratch::new("attack-flood");
    let (a_s, b_s, ctl) = (s.path("a.sock"), s.path("b.sock"), s.path("ctl.sock"));
    let limit: u64 = 1000;
    let limit_s = limit.to_string();
    let mut sw = Proc::twin(
        "switch",
        &[
            "switch",
            "--client",
            &format!("a={a_s}"),
            "--client",
            &format!("b={b_s}"),
            "--poll",
            "event",
            "--control",
            &ctl,
            "--flood-limit",
            &limit_s,
        ],
    );
    wait_for_path(&ctl, Duration::from_secs(10));
    let mut rx = gen_event(&b_s, "02:00:00:00:00:0b", BCAST, "5", "0");
    wait_connected(&ctl, &["b"]);
    let mut flood = gen_exact(&a_s, A, BCAST, "1", "20000", "20000", "3", false);
    let flood_r = flood.report(Duration::from_secs(20));
    let rx_r = rx.report(Duration::from_secs(20));
    let sw_r = sw.stop_report();
    eprintln!("switch {sw_r}\nflood {flood_r}\nrx {rx_r}");

    let sent = n(&flood_r, "/tx_packets");
    let limited = drop_at(&sw_r, "a", "flood_limited");
    let passed = n(&sw_r, "/clients/b/tx_packets") + to_client_drops(&sw_r, "b");
    assert_eq!(
        limited + passed,
        sent,
        "every flooded frame is delivered or counted"
    );
    // The bucket: a burst of 64 frames (10 ms at 1000/s is less), then one a
    // millisecond while the generator sends, plus a millisecond of rounding.
    let secs = flood_r["duration_s"].as_f64().expect("duration_s");
    let most = 64 + (limit as f64 * (secs + 0.001)).ceil() as u64;
    assert!(
        passed <= most,
        "{passed} floods passed in {secs} s; at most {most}"
    );
    assert!(limited >= sent - most, "{limited} counted of {sent}");
}
