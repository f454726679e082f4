//! The switch's supervision of an uplink (`switch::uplink`), with real processes
//! (`twin switch`, `twin nic`, `twin gen`) and a client sending all along:
//!
//! * a NIC that dies (its process killed) and comes back on the same socket, with
//!   the fast path in the domain and in a twin: the outage is detected, recorded
//!   with its cause, its drops and a length the test's own clock bounds; a new
//!   domain connects to the new NIC and frames flow again, accounted per phase
//!   (before, during, after the outage) to the frame;
//! * the restart backoff, read from the outage records: each restart waits as
//!   long as the failures before it say, and every outage's drops are the switch's;
//! * the restart budget: one failure too many and the uplink gives up, stays down
//!   (reported), and comes back on `twin ctl revive`;
//! * the handover timeout: a domain that keeps the fast path (an injected fault)
//!   is replaced after it, frames crossing it until then;
//! * a twin's slow path: the upcalls it posts run in a real driver domain, exactly
//!   as many as posted; a broken queue's reset ends the domain with that reason,
//!   and a new one takes over in twin mode.

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

const C1: &str = "02:00:00:00:00:01";
const OUTSIDE: &str = "02:00:00:00:00:fe";

/// The switch stamps an outage's start and end with the time read at the top of
/// a data-path iteration, before that iteration forwards a batch from every port:
/// a start may precede the failure it records by that much. A test that bounds an
/// outage's length by its own clock allows one link-check interval
/// (`switch::port::uplink::LINK_CHECK_INTERVAL`, 50 ms) for it.
const STAMP_SLACK_MS: u64 = 50;

/// The generator's rate, frames per second.
const RATE: &str = "10000";

struct Rig {
    sw: Proc,
    gen: Option<Proc>,
    ctl: String,
    nic_s: String,
    s: Scratch,
}

/// A switch with client c1 (a generator sending to the outside at [`RATE`],
/// reflected back by the NIC) and uplink u0 in `mode`, with `extra` switch
/// arguments; returns once the fast path is in place and, with `flow`, frames
/// flow through it.
fn start(
    tag: &str,
    mode: &str,
    nic: &mut dyn FnMut(&str),
    extra: &[&str],
    flow: bool,
) -> (Rig, Value) {
    let s = Scratch::new(tag);
    let (nic_s, c1_s, ctl) = (s.path("nic.sock"), s.path("c1.sock"), s.path("ctl.sock"));
    nic(&nic_s);
    let c1 = format!("c1={c1_s},mac={C1}");
    let up = format!("u0={nic_s},mode={mode}");
    let mut args = vec![
        "switch",
        "--client",
        &c1,
        "--uplink",
        &up,
        "--poll",
        "event",
        "--control",
        &ctl,
    ];
    args.extend_from_slice(extra);
    // Its log (with the domains' relayed stderr) is kept: [`Proc::output`].
    let sw = Proc::twin_capturing("switch", &args);
    wait_for_path(&c1_s, Duration::from_secs(10));
    wait_for_path(&ctl, Duration::from_secs(10));
    let st = wait_status(&ctl, Duration::from_secs(20), "fast path in place", |s| {
        fast_path(s) == Some(mode)
    });
    let gen = gen_event_with(&c1_s, C1, OUTSIDE, "300", RATE, &["--id", "5"]);
    let pid = driver_pid(&st).expect("a domain");
    let st = if flow {
        wait_flow(&ctl, &st, pid, "traffic through the first domain")
    } else {
        st
    };
    (
        Rig {
            sw,
            gen: Some(gen),
            ctl,
            nic_s,
            s,
        },
        st,
    )
}

/// Waits until u0 is connected with a domain other than `not`, its fast path in
/// `mode`; returns that status.
fn wait_new_domain(ctl: &str, not: u64, mode: &str, what: &str) -> Value {
    wait_status(ctl, Duration::from_secs(20), what, |s| {
        driver_pid(s).is_some_and(|p| p != not) && fast_path(s) == Some(mode)
    })
}

/// The NIC dies (SIGKILL) while frames flow, stays dead while c1 keeps sending,
/// and a new NIC starts on the same socket.
fn nic_dies_and_comes_back(mode: &str) {
    let mut nic1 = None;
    let (mut r, s0) = start(
        &format!("nicdeath-{mode}"),
        mode,
        &mut |p| nic1 = Some(nic_reflect(p, false)),
        &[],
        true,
    );
    let mut nic1 = nic1.expect("nic");
    let tag = mode.to_string();
    // Before: frames flowed through the first domain (start) to NIC 1 and back.
    let killed_at = Instant::now();
    nic1.kill9();
    // Detected and counted: the domain ended, the uplink is down, and stays down
    // while no NIC listens.
    let s1 = wait_status(&r.ctl, Duration::from_secs(10), "the outage", |s| {
        n(s, "/uplinks/u0/disconnects") == 1 && driver_pid(s).is_none()
    });
    let s1_read = Instant::now();
    let o = outages(&s1);
    assert_eq!(o.len(), 1, "{tag}: {s1}");
    let why = str_at(&o[0], "/reason");
    assert!(
        why.contains("reported failure 1: the NIC hung up"),
        "{tag}: outage reason {why:?}"
    );
    assert_eq!(
        s1.pointer("/uplinks/u0/detail/gave_up"),
        Some(&Value::Bool(false)),
        "{tag}: {s1}"
    );
    // During: every frame c1 sends is dropped and counted, nothing reaches the
    // uplink (the switch reads c1's ring as before).
    let s2 = wait_status(
        &r.ctl,
        Duration::from_secs(20),
        "c1 sending meanwhile",
        |s| n(s, "/clients/c1/rx_packets") >= n(&s1, "/clients/c1/rx_packets") + FLOW,
    );
    assert_eq!(n(&s2, "/uplinks/u0/disconnects"), 1, "{tag}: {s2}");
    assert!(driver_pid(&s2).is_none(), "{tag}: no NIC, no domain: {s2}");
    let d = |p: &str| n(&s2, p) - n(&s1, p);
    assert_eq!(d("/uplinks/u0/tx_packets"), 0, "{tag}");
    assert_eq!(d("/uplinks/u0/rx_packets"), 0, "{tag}");
    assert_eq!(
        d("/clients/c1/rx_packets"),
        c1_drops(&s2) - c1_drops(&s1),
        "{tag}"
    );
    assert_eq!(d("/uplinks/u0/connects"), 0, "{tag}");
    // After: a new NIC on the same socket; a new domain connects to it.
    let nic2_at = Instant::now();
    let mut nic2 = nic_reflect(&r.nic_s, false);
    let s3 = wait_new_domain(&r.ctl, 0, mode, "a domain on the new NIC");
    let s3_read = Instant::now();
    assert_eq!(n(&s3, "/uplinks/u0/connects"), 2, "{tag}: {s3}");
    assert_eq!(n(&s3, "/uplinks/u0/disconnects"), 1, "{tag}: {s3}");
    let o = outages(&s3);
    assert_eq!(o.len(), 1, "{tag}: {s3}");
    // The outage's drops are every frame the switch dropped from before the NIC
    // died until the new domain connected (none before or after it: the uplink was
    // up then).
    assert_eq!(
        n(&o[0], "/frames_dropped"),
        c1_drops(&s3) - c1_drops(&s0),
        "{tag}: {}",
        o[0]
    );
    assert!(n(&o[0], "/frames_dropped") >= FLOW, "{tag}: {}", o[0]);
    assert_c1_accounted(&s0, &s3, &tag);
    // Its length: it began after the kill and before the test saw it (s1), and
    // ended after the new NIC started and before the test saw the new domain (s3).
    // (Both clocks count whole milliseconds, truncated; the start's stamp may be
    // early by up to STAMP_SLACK_MS.)
    let dur = n(&o[0], "/duration_ms");
    let at_least = nic2_at.duration_since(s1_read).as_millis();
    let at_most = s3_read.duration_since(killed_at).as_millis() + u128::from(STAMP_SLACK_MS);
    assert!(
        u128::from(dur) + 1 >= at_least && u128::from(dur) <= at_most,
        "{tag}: outage of {dur} ms, the test saw it last {at_least}..={at_most} ms"
    );
    // Frames flow through the new domain, to the new NIC and back.
    let pid = driver_pid(&s3).expect("a domain");
    let s4 = wait_flow(&r.ctl, &s3, pid, "traffic through the new NIC");
    // The end: c1 stops; once every frame sent to the new NIC has come back, the
    // new NIC's counters are the after phase's, to the frame.
    let g = r.gen.take().expect("gen").stop_report();
    let end = wait_status(&r.ctl, Duration::from_secs(20), "every frame back", |s| {
        let d = |p: &str| n(s, p) - n(&s2, p);
        n(s, "/clients/c1/disconnects") == 1
            && d("/uplinks/u0/rx_packets") + d("/uplinks/u0/drops/domain_from_nic_ring_full")
                == d("/uplinks/u0/tx_packets") - d("/uplinks/u0/drops/domain_nic_tx_ring_full")
    });
    assert_eq!(n(&end, "/uplinks/u0/disconnects"), 1, "{tag}: {end}");
    let sw_r = r.sw.stop_report();
    let nic2_r = nic2.stop_report();
    eprintln!("{tag}\n  gen {g}\n  switch {sw_r}\n  nic2 {nic2_r}");
    let d = |p: &str| n(&sw_r, p) - n(&s2, p);
    assert_eq!(n(&nic2_r, "/connects"), 1, "{tag}: {nic2_r}");
    assert_eq!(
        n(&nic2_r, "/rx_packets"),
        d("/uplinks/u0/tx_packets") - d("/uplinks/u0/drops/domain_nic_tx_ring_full"),
        "{tag}: what the switch queued after the outage reached the new NIC"
    );
    assert_eq!(
        n(&nic2_r, "/tx_packets") + drops(&nic2_r, "/tx_drops"),
        n(&nic2_r, "/rx_packets"),
        "{tag}: {nic2_r}"
    );
    assert_eq!(
        n(&nic2_r, "/tx_packets"),
        d("/uplinks/u0/rx_packets") + d("/uplinks/u0/drops/domain_from_nic_ring_full"),
        "{tag}: what the new NIC sent reached the switch"
    );
    assert!(
        n(&nic2_r, "/rx_packets")
            >= n(&s4, "/uplinks/u0/tx_packets") - n(&s3, "/uplinks/u0/tx_packets")
    );
    // The client: connected once; the switch took every frame it sent; what came
    // back was its own, swapped, in order.
    assert_eq!(n(&sw_r, "/clients/c1/connects"), 1, "{tag}");
    assert_eq!(
        n(&g, "/tx_packets"),
        n(&sw_r, "/clients/c1/rx_packets"),
        "{tag}"
    );
    assert_eq!(n(&g, "/rx_own_swapped"), n(&g, "/rx_packets"), "{tag}: {g}");
    assert_eq!(n(&g, "/rx_out_of_order"), 0, "{tag}: {g}");
    drop(r.s);
}

#[test]
fn a_nic_that_dies_and_comes_back_carries_traffic_again_in_domain_mode() {
    let _m = serial();
    nic_dies_and_comes_back("domain");
}

#[test]
fn a_nic_that_dies_and_comes_back_carries_traffic_again_in_twin_mode() {
    let _m = serial();
    nic_dies_and_comes_back("twin");
}

/// The connector's delay before the restart that ends outage `k`, as
/// `switch::uplink` configures it: 5 ms doubled for every restart (this one
/// included) within the 5 s before it, from 10 ms up to 500 ms. The restarts'
/// times are the outages' `start_ms`.
fn backoff_ms(starts: &[u64], k: usize) -> u64 {
    let recent = starts[..=k]
        .iter()
        .filter(|s| starts[k] - **s < 5000)
        .count() as u32;
    (5u64 << recent.min(7)).min(500)
}

#[test]
fn restarts_back_off_as_configured_and_each_outage_records_its_drops_and_length() {
    let _m = serial();
    let mut nic = None;
    let (mut r, first) = start(
        "backoff",
        "domain",
        &mut |p| nic = Some(nic_reflect(p, false)),
        &[],
        true,
    );
    let mut nic = nic.expect("nic");
    const KILLS: usize = 8;
    let mut st = first;
    let mut pid = driver_pid(&st).expect("a domain");
    // Per kill: (when the test killed, when it saw the new domain).
    let mut seen = Vec::new();
    let mut phases = Vec::new();
    for k in 0..KILLS {
        let tag = format!("kill {}", k + 1);
        // Killed as soon as it is connected: the failures come in a row.
        let killed = Instant::now();
        kill9(pid);
        let after = wait_new_domain(&r.ctl, pid, "domain", &format!("{tag}: a new domain"));
        seen.push((killed, Instant::now()));
        assert_eq!(n(&after, "/uplinks/u0/disconnects"), k as u64 + 1, "{tag}");
        assert_c1_accounted(&st, &after, &tag);
        phases.push(c1_drops(&after) - c1_drops(&st));
        pid = driver_pid(&after).expect("a domain");
        st = after;
    }
    // Repaired: frames flow through the last domain.
    let st = wait_flow(&r.ctl, &st, pid, "traffic through the last domain");
    let o = outages(&st);
    assert_eq!(o.len(), KILLS, "{st}");
    let starts: Vec<u64> = o.iter().map(|x| n(x, "/start_ms")).collect();
    for (k, x) in o.iter().enumerate() {
        let tag = format!("outage {}: {x}", k + 1);
        assert!(str_at(x, "/reason").contains("SIGKILL"), "{tag}");
        // Its drops are the switch's, from the kill to the new domain.
        assert_eq!(n(x, "/frames_dropped"), phases[k], "{tag}");
        let dur = n(x, "/duration_ms");
        // At least the backoff (the connector sleeps it before starting the
        // domain), at most what the test saw: it began after the kill and ended
        // before the test saw the new domain (whole milliseconds, truncated; the
        // start's stamp may be early by up to STAMP_SLACK_MS).
        let (killed, seen_at) = seen[k];
        let at_most = seen_at.duration_since(killed).as_millis() as u64 + STAMP_SLACK_MS;
        let backoff = backoff_ms(&starts, k);
        assert!(
            dur >= backoff && dur <= at_most,
            "{tag}: lasted {dur} ms; backoff {backoff} ms, the test saw at most {at_most} ms"
        );
        if k + 1 < KILLS {
            // The next one began after this one ended, by at least the time the
            // test took from seeing the new domain to killing it (less the
            // stamp's slack).
            let gap = seen[k + 1].0.duration_since(seen_at).as_millis() as u64;
            assert!(
                starts[k + 1] + 1 + STAMP_SLACK_MS >= starts[k] + dur + gap,
                "{tag}: next at {} ms",
                starts[k + 1]
            );
        }
    }
    // The failures came in a row: the last restarts waited the longest backoff.
    assert_eq!(backoff_ms(&starts, KILLS - 1), 500, "{starts:?}");
    assert!(phases.iter().sum::<u64>() > 0, "c1 sent during the outages");
    let g = r.gen.take().expect("gen").stop_report();
    let sw_r = r.sw.stop_report();
    let nic_r = nic.stop_report();
    assert_eq!(n(&nic_r, "/connects"), KILLS as u64 + 1, "{nic_r}");
    assert_eq!(n(&sw_r, "/clients/c1/connects"), 1);
    assert_eq!(n(&g, "/tx_packets"), n(&sw_r, "/clients/c1/rx_packets"));
}

#[test]
fn one_failure_past_the_restart_budget_and_the_uplink_gives_up_until_revived() {
    let _m = serial();
    const BUDGET: u64 = 3;
    let budget = BUDGET.to_string();
    let mut nic = None;
    let (mut r, first) = start(
        "budget",
        "domain",
        &mut |p| nic = Some(nic_reflect(p, false)),
        &["--restart-budget", &budget],
        true,
    );
    let mut nic = nic.expect("nic");
    let gave_up = |s: &Value| s.pointer("/uplinks/u0/detail/gave_up") == Some(&Value::Bool(true));
    let mut pid = driver_pid(&first).expect("a domain");
    // Within the budget: every failure is repaired.
    for k in 1..=BUDGET {
        kill9(pid);
        let st = wait_new_domain(&r.ctl, pid, "domain", &format!("kill {k}: a new domain"));
        assert!(!gave_up(&st), "kill {k}: {st}");
        assert_eq!(n(&st, "/uplinks/u0/detail/restarts_in_window"), k, "{st}");
        pid = driver_pid(&st).expect("a domain");
    }
    // One more: the uplink gives up.
    kill9(pid);
    let down = wait_status(&r.ctl, Duration::from_secs(10), "given up", gave_up);
    assert!(driver_pid(&down).is_none(), "{down}");
    assert_eq!(n(&down, "/uplinks/u0/disconnects"), BUDGET + 1, "{down}");
    assert_eq!(n(&down, "/uplinks/u0/connects"), BUDGET + 1, "{down}");
    assert_eq!(outages(&down).len() as u64, BUDGET + 1, "{down}");
    assert_eq!(
        n(&down, "/uplinks/u0/detail/restarts_in_window"),
        BUDGET + 1,
        "{down}"
    );
    // It stays down: no new domain over longer than the longest backoff (500 ms)
    // plus a domain's start, while c1 keeps sending, every frame dropped and
    // counted. (A duration is the point here.)
    std::thread::sleep(Duration::from_millis(1500));
    let still = ctl_status(&r.ctl);
    assert!(gave_up(&still) && driver_pid(&still).is_none(), "{still}");
    assert_eq!(n(&still, "/uplinks/u0/connects"), BUDGET + 1, "{still}");
    let d = |p: &str| n(&still, p) - n(&down, p);
    assert!(d("/clients/c1/rx_packets") > 0, "c1 kept sending: {still}");
    assert_eq!(
        d("/clients/c1/rx_packets"),
        c1_drops(&still) - c1_drops(&down),
        "{still}"
    );
    assert_eq!(d("/uplinks/u0/tx_packets"), 0);
    // The operator revives it: a new domain, a fresh budget, traffic again.
    ctl_ok(&r.ctl, &["revive", "u0"]);
    let back = wait_new_domain(&r.ctl, pid, "domain", "revived");
    assert!(!gave_up(&back), "{back}");
    assert_eq!(
        n(&back, "/uplinks/u0/detail/restarts_in_window"),
        0,
        "{back}"
    );
    let pid = driver_pid(&back).expect("a domain");
    wait_flow(&r.ctl, &back, pid, "traffic after the revival");
    let _ = r.gen.take().expect("gen").stop_report();
    let _ = r.sw.stop_report();
    let nic_r = nic.stop_report();
    // One NIC connection per domain: none while the uplink had given up.
    assert_eq!(n(&nic_r, "/connects"), BUDGET + 2, "{nic_r}");
}

/// A hostile NIC behind a twin: `--attack` after 300 frames, one used entry.
/// (The tests that use it do not wait for traffic before the attack.)
fn hostile(attack: &str) -> impl FnMut(&str) -> Proc {
    let attack = attack.to_string();
    move |p: &str| {
        Proc::twin(
            "nic",
            &[
                "nic",
                "--socket",
                p,
                "--mode",
                "hostile",
                "--attack",
                &attack,
                "--attack-after",
                "300",
                "--attack-frames",
                "1",
                "--poll",
                "event",
            ],
        )
    }
}

#[test]
fn a_twins_upcall_runs_in_its_driver_domain_once_per_event() {
    let _m = serial();
    let mut nic = None;
    let mut make = hostile("long-length");
    let (mut r, first) = start(
        "upcall",
        "twin",
        &mut |p| nic = Some(make(p)),
        &["--fault-injection"],
        false,
    );
    let mut nic = nic.expect("nic");
    let up = |s: &Value, k: &str| n(s, &format!("/uplinks/u0/detail/upcalls_total/{k}"));
    // One RX used entry lies about its length: the twin's driver drops that frame
    // and, at the end of that batch, posts one device_error upcall; the domain
    // runs it, and reports the driver's check counters at its next periodic
    // look (a race the full suite lost once when only the upcall was awaited).
    let st = wait_status(&r.ctl, Duration::from_secs(20), "the upcall run", |s| {
        up(s, "run_by_domain") >= 1
            && n(s, "/uplinks/u0/detail/device_errors/rx_len_too_large") >= 1
    });
    let pid = driver_pid(&st).expect("a domain");
    let st = wait_flow(&r.ctl, &st, pid, "traffic after the lie");
    assert_eq!(up(&st, "posted"), 1, "{st}");
    assert_eq!(up(&st, "run_by_domain"), 1, "{st}");
    assert_eq!(up(&st, "refused_by_domain"), 0, "{st}");
    assert_eq!(up(&st, "dropped_ring_full"), 0, "{st}");
    // The current domain's own count says the same (it ran it: not a past one).
    assert_eq!(
        n(&st, "/uplinks/u0/detail/driver/upcalls/run_by_domain"),
        1,
        "{st}"
    );
    assert_eq!(
        n(&st, "/uplinks/u0/detail/device_errors/rx_len_too_large"),
        1,
        "{st}"
    );
    assert_eq!(drops(&st, "/uplinks/u0/detail/device_errors"), 1, "{st}");
    assert_eq!(n(&st, "/uplinks/u0/disconnects"), 0, "{st}");
    assert_eq!(fast_path(&st), Some("twin"), "{st}");
    assert_eq!(pid, driver_pid(&first).expect("a domain"), "no restart");
    let _ = r.gen.take().expect("gen").stop_report();
    let _ = r.sw.stop_report();
    let nic_r = nic.stop_report();
    assert_eq!(n(&nic_r, "/attack/tampered"), 1, "{nic_r}");
}

#[test]
fn a_broken_queue_under_a_twin_ends_the_domain_for_a_reset_and_a_new_one_takes_over() {
    let _m = serial();
    let mut nic = None;
    let mut make = hostile("runaway-index");
    let (mut r, first) = start(
        "reset",
        "twin",
        &mut |p| nic = Some(make(p)),
        &["--fault-injection"],
        false,
    );
    let mut nic = nic.expect("nic");
    let pid = driver_pid(&first).expect("a domain");
    let up = |s: &Value, k: &str| n(s, &format!("/uplinks/u0/detail/upcalls_total/{k}"));
    // The twin's driver finds the TX queue broken and posts queue_broken; the
    // domain runs it, asks for a device reset and ends: a new domain, a fresh NIC
    // connection, the twin again.
    let st = wait_new_domain(&r.ctl, pid, "twin", "a new domain after the reset");
    let o = outages(&st);
    assert_eq!(o.len(), 1, "{st}");
    let why = str_at(&o[0], "/reason");
    assert!(
        why.contains("reported failure 4: the driver asked for a device reset"),
        "outage reason {why:?}"
    );
    assert_eq!(n(&st, "/uplinks/u0/detail/twin_fault_count"), 0, "{st}");
    // Every upcall the twin posted was run by the old domain.
    assert!(up(&st, "posted") >= 1, "{st}");
    assert_eq!(up(&st, "run_by_domain"), up(&st, "posted"), "{st}");
    assert_eq!(up(&st, "refused_by_domain"), 0, "{st}");
    assert_eq!(up(&st, "dropped_ring_full"), 0, "{st}");
    let pid = driver_pid(&st).expect("a domain");
    wait_flow(&r.ctl, &st, pid, "traffic through the new domain");
    let _ = r.gen.take().expect("gen").stop_report();
    let _ = r.sw.stop_report();
    let nic_r = nic.stop_report();
    assert_eq!(n(&nic_r, "/connects"), 2, "a fresh NIC connection: {nic_r}");
}

#[test]
fn a_domain_that_keeps_the_fast_path_is_replaced_after_the_handover_timeout() {
    let _m = serial();
    let mut nic = None;
    let (mut r, first) = start(
        "handover",
        "domain",
        &mut |p| nic = Some(nic_reflect(p, false)),
        &["--fault-injection"],
        true,
    );
    let mut nic = nic.expect("nic");
    let pid = driver_pid(&first).expect("a domain");
    ctl_ok(&r.ctl, &["fault", "u0", "refuse-handover"]);
    // The domain took the fault (its relayed log says so) before the request.
    let t = Instant::now();
    while !r
        .sw
        .output()
        .lines()
        .any(|l| l.contains("injected fault") && l.contains("refuse-handover"))
    {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "the fault was not taken"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let asked = Instant::now();
    ctl_ok(&r.ctl, &["mode", "u0", "twin"]);
    // Until the timeout, the request is pending and frames keep crossing the
    // domain.
    let pending = wait_status(&r.ctl, Duration::from_secs(10), "handing over", |s| {
        fast_path(s) == Some("handing-over")
    });
    let pending = wait_flow(&r.ctl, &pending, pid, "traffic while handing over");
    assert_eq!(fast_path(&pending), Some("handing-over"), "{pending}");
    assert!(
        asked.elapsed() < HANDOVER_TIMEOUT,
        "too slow to tell: {pending}"
    );
    let down = wait_status(&r.ctl, Duration::from_secs(10), "the timeout", |s| {
        n(s, "/uplinks/u0/disconnects") == 1
    });
    // Not before the timeout: the request was sent before `asked`.
    assert!(
        asked.elapsed() >= HANDOVER_TIMEOUT,
        "restarted after {:?}: {down}",
        asked.elapsed()
    );
    let o = outages(&down);
    let why = str_at(&o[0], "/reason");
    assert!(
        why.contains("did not hand the fast path over within 1s"),
        "outage reason {why:?}"
    );
    // A new domain takes over, and the fast path moves to the twin as asked.
    let after = wait_new_domain(&r.ctl, pid, "twin", "a new domain in twin mode");
    assert_eq!(str_at(&after, "/uplinks/u0/detail/mode"), "twin", "{after}");
    assert_eq!(n(&after, "/uplinks/u0/disconnects"), 1, "{after}");
    assert_eq!(
        n(&after, "/uplinks/u0/detail/twin_fault_count"),
        0,
        "{after}"
    );
    let o = outages(&after);
    assert_eq!(
        n(&o[0], "/frames_dropped"),
        c1_drops(&after) - c1_drops(&pending),
        "{}",
        o[0]
    );
    assert_c1_accounted(&pending, &after, "handover");
    let pid = driver_pid(&after).expect("a domain");
    wait_flow(&r.ctl, &after, pid, "traffic through the twin");
    let _ = r.gen.take().expect("gen").stop_report();
    let _ = r.sw.stop_report();
    let nic_r = nic.stop_report();
    assert_eq!(n(&nic_r, "/connects"), 2, "{nic_r}");
}

/// `switch::port::uplink::HANDOVER_TIMEOUT`.
const HANDOVER_TIMEOUT: Duration = Duration::from_secs(1);
