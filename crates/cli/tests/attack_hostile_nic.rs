//! A hostile NIC (`twin nic --mode hostile --attack KIND`) behind a switch whose
//! uplink runs in `inline`, `domain` and `twin` mode, with a client sending all
//! along. The NIC behaves for its first frames, then lies once about the buffers it
//! used; afterwards it behaves again. For every attack and mode:
//!
//! * the switch never stops and the client is never disconnected;
//! * the driver's check that catches the attack fired, exactly as often as the NIC
//!   lied (`/uplinks/u0/detail/device_errors`, reported by the driver domain from
//!   the driver's counters, summed over every domain of the uplink; in `inline`
//!   and `twin` also the switch-side instance's own `tx_checks`/`rx_checks`);
//! * a recoverable lie (a bad id, a long length) is counted and survived: no
//!   outage; in `inline` and `twin` the `device_error` slow path ran as an upcall
//!   in the driver domain;
//! * a broken queue (a runaway used index) makes the driver ask for a reset (in
//!   `inline` and `twin` through the `queue_broken` upcall, run by the domain),
//!   and a stuck TX queue trips the domain's TX watchdog: the domain ends, the
//!   outage is recorded with that reason, and a new domain with a fresh NIC
//!   connection carries the traffic again, to the NIC (frames counted there after
//!   the outage) and back.

mod common;

use std::time::Duration;

use common::*;
use serde_json::Value;

const C1: &str = "02:00:00:00:00:01";
const OUTSIDE: &str = "02:00:00:00:00:fe";
/// Frames the NIC takes before it attacks.
const AFTER: u64 = 300;
/// Used entries that lie (bad-used-id, long-length).
const FRAMES: u64 = 4;
const MODES: [&str; 3] = ["inline", "domain", "twin"];

struct Rig {
    nic: Proc,
    sw: Proc,
    gen: Proc,
    ctl: String,
    _s: Scratch,
}

fn start(attack: &str, mode: &str) -> Rig {
    let s = Scratch::new(&format!("hnic-{attack}-{mode}"));
    let (nic_s, c1_s, ctl) = (s.path("nic.sock"), s.path("c1.sock"), s.path("ctl.sock"));
    let after = AFTER.to_string();
    let frames = FRAMES.to_string();
    let nic = Proc::twin(
        "nic",
        &[
            "nic",
            "--socket",
            &nic_s,
            "--mode",
            "hostile",
            "--attack",
            attack,
            "--attack-after",
            &after,
            "--attack-frames",
            &frames,
            "--poll",
            "event",
        ],
    );
    let c1 = format!("c1={c1_s},mac={C1}");
    let up = format!("u0={nic_s},mode={mode}");
    let sw = Proc::twin(
        "switch",
        &[
            "switch",
            "--client",
            &c1,
            "--uplink",
            &up,
            "--poll",
            "event",
            "--control",
            &ctl,
            "--fault-injection",
        ],
    );
    wait_for_path(&c1_s, Duration::from_secs(10));
    wait_for_path(&ctl, Duration::from_secs(10));
    wait_status(&ctl, Duration::from_secs(15), "fast path in place", |st| {
        fast_path(st) == Some(mode)
    });
    // Sends until stopped: 2000 frames per second to the outside, which the NIC
    // reflects back to c1.
    let gen = gen_event(&c1_s, C1, OUTSIDE, "120", "2000");
    Rig {
        nic,
        sw,
        gen,
        ctl,
        _s: s,
    }
}

fn dev_err(st: &Value, name: &str) -> u64 {
    n(st, &format!("/uplinks/u0/detail/device_errors/{name}"))
}

/// Waits until frames from the NIC reach the switch `more` times more than in `st`.
fn wait_traffic(ctl: &str, st: &Value, more: u64, what: &str) -> Value {
    let base = n(st, "/uplinks/u0/rx_packets");
    wait_status(ctl, Duration::from_secs(20), what, |s| {
        n(s, "/uplinks/u0/rx_packets") >= base + more
    })
}

/// The switch and the client are fine: both run, the client connected once.
fn assert_undisturbed(r: &mut Rig, tag: &str) {
    assert!(r.sw.running(), "{tag}: the switch died");
    assert!(r.gen.running(), "{tag}: the client died");
    let st = ctl_status(&r.ctl);
    assert_eq!(n(&st, "/clients/c1/connects"), 1, "{tag}: {st}");
    assert_eq!(n(&st, "/clients/c1/disconnects"), 0, "{tag}: {st}");
}

/// Stops everything; returns the NIC's report.
fn finish(mut r: Rig, tag: &str) -> (Value, Value) {
    assert_undisturbed(&mut r, tag);
    let g = r.gen.stop_report();
    let sw = r.sw.stop_report();
    let nic = r.nic.stop_report();
    eprintln!("{tag}\n  gen {g}\n  switch {sw}\n  nic {nic}");
    // One connection all along (it ends when the client is stopped).
    assert_eq!(n(&sw, "/clients/c1/connects"), 1, "{tag}");
    // The NIC behaved until then.
    assert_eq!(n(&nic, "/attack/started_at_frame"), AFTER, "{tag}: {nic}");
    assert!(n(&g, "/rx_packets") > 0, "{tag}: nothing came back");
    (sw, nic)
}

/// A lie the driver counts and survives: exact counts, no outage, upcalls when the
/// fast path is in the switch, traffic on.
fn recoverable(attack: &str, checks: &[(&str, &str, u64)]) {
    let _m = serial();
    for mode in MODES {
        let tag = format!("{attack} in {mode}");
        let r = start(attack, mode);
        let st = wait_status(&r.ctl, Duration::from_secs(20), "the check fired", |s| {
            checks
                .iter()
                .all(|(name, _, want)| dev_err(s, name) >= *want)
        });
        // Exactly as often as the NIC lied, and nothing else.
        let st = wait_traffic(&r.ctl, &st, 1000, "traffic after the attack");
        for (name, _, want) in checks {
            assert_eq!(dev_err(&st, name), *want, "{tag}: {name}: {st}");
        }
        let total = drops(&st, "/uplinks/u0/detail/device_errors");
        let want_total: u64 = checks.iter().map(|c| c.2).sum();
        assert_eq!(total, want_total, "{tag}: other checks fired: {st}");
        assert_eq!(n(&st, "/uplinks/u0/disconnects"), 0, "{tag}: {st}");
        assert!(outages(&st).is_empty(), "{tag}: {st}");
        let posted = n(&st, "/uplinks/u0/detail/upcalls_total/posted");
        let run = n(&st, "/uplinks/u0/detail/upcalls_total/run_by_domain");
        if mode == "domain" {
            // The slow path runs in place in the domain: nothing to post.
            assert_eq!(posted, 0, "{tag}: {st}");
        } else {
            // device_error, once per batch that counted errors.
            assert!(posted >= 1 && run == posted, "{tag}: upcalls: {st}");
            for (name, pointer, want) in checks {
                let got = n(
                    &st,
                    &format!("/uplinks/u0/detail/driver/switch_instance_stats/{pointer}"),
                );
                assert_eq!(got, *want, "{tag}: instance {name}: {st}");
            }
            assert_eq!(
                n(&st, "/uplinks/u0/detail/twin_fault_count"),
                0,
                "{tag}: the driver caught it; nothing to contain: {st}"
            );
        }
        let (_, nic) = finish(r, &tag);
        assert_eq!(n(&nic, "/attack/tampered"), FRAMES, "{tag}: {nic}");
        assert_eq!(n(&nic, "/connects"), 1, "{tag}: {nic}");
        assert_eq!(n(&nic, "/attack/frames_on_later_connections"), 0, "{tag}");
        assert!(n(&nic, "/rx_packets") > AFTER + 1000, "{tag}: {nic}");
    }
}

/// A lie that breaks the queue: the domain ends for a NIC reset, the outage says
/// why, a new domain with a fresh connection carries traffic again.
fn fatal(attack: &str, check: &str, reason: &str, upcall: bool) {
    let _m = serial();
    for mode in MODES {
        let tag = format!("{attack} in {mode}");
        let r = start(attack, mode);
        let st = wait_status(&r.ctl, Duration::from_secs(20), "an outage", |s| {
            !outages(s).is_empty()
        });
        let o = outages(&st);
        let why = str_at(&o[0], "/reason");
        assert!(why.contains(reason), "{tag}: outage reason {why:?}");
        let st = wait_status(&r.ctl, Duration::from_secs(20), "uplink back", |s| {
            fast_path(s) == Some(mode) && n(s, "/uplinks/u0/connects") == 2
        });
        let st = wait_traffic(&r.ctl, &st, 1000, "traffic after the outage");
        assert_eq!(n(&st, "/uplinks/u0/disconnects"), 1, "{tag}: {st}");
        assert_eq!(outages(&st).len(), 1, "{tag}: {st}");
        assert_eq!(dev_err(&st, check), 1, "{tag}: {check}: {st}");
        if upcall && mode != "domain" {
            // queue_broken ran in the old domain as an upcall.
            let posted = n(&st, "/uplinks/u0/detail/upcalls_total/posted");
            let run = n(&st, "/uplinks/u0/detail/upcalls_total/run_by_domain");
            assert!(posted >= 1 && run >= 1, "{tag}: upcalls: {st}");
        }
        assert_eq!(n(&st, "/uplinks/u0/detail/twin_fault_count"), 0, "{tag}");
        let (_, nic) = finish(r, &tag);
        assert_eq!(n(&nic, "/connects"), 2, "{tag}: a fresh connection: {nic}");
        assert!(
            nic.pointer("/attack/finished").and_then(Value::as_bool) == Some(true),
            "{tag}: {nic}"
        );
        // The new connection carried frames to the NIC (and the switch saw the
        // reflected ones come back: wait_traffic above).
        assert!(
            n(&nic, "/attack/frames_on_later_connections") >= 500,
            "{tag}: too few frames reached the NIC after the outage: {nic}"
        );
    }
}

#[test]
fn bad_used_ids_are_counted_and_survived() {
    recoverable(
        "bad-used-id",
        &[
            ("tx_bad_used_id", "tx_checks/bad_used_id", FRAMES / 2),
            ("tx_not_in_flight", "tx_checks/not_in_flight", FRAMES / 2),
        ],
    );
}

#[test]
fn long_used_lengths_are_counted_and_the_frames_dropped() {
    recoverable(
        "long-length",
        &[("rx_len_too_large", "rx_checks/len_too_large", FRAMES)],
    );
}

#[test]
fn a_runaway_used_index_breaks_the_queue_and_the_domain_restarts() {
    fatal(
        "runaway-index",
        "tx_used_idx_jump",
        "asked for a device reset",
        true,
    );
}

#[test]
fn a_stuck_tx_queue_trips_the_watchdog_and_the_domain_restarts() {
    fatal("stuck", "tx_timeout", "TX timeout", false);
}
