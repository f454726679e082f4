//! Fault injection through the control socket (`twin ctl`): every kind of driver
//! domain failure, twenty times in a row each, while a client keeps sending. The
//! switch must stay up, the client connected, and each failure be detected,
//! reported with its own cause, and repaired: a new domain connected and frames
//! flowing through it again, to the NIC and back, before the next fault.

mod common;

use std::time::Duration;

use common::*;

const C1: &str = "02:00:00:00:00:01";
const OUTSIDE: &str = "02:00:00:00:00:fe";

/// How many times the switch's log (with the domains' relayed stderr) says a
/// domain committed the injected fault `kind`.
fn committed(log: &str, kind: &str) -> usize {
    log.lines()
        .filter(|l| l.contains("driver domain: injected fault") && l.contains(kind))
        .count()
}

#[test]
fn every_injected_fault_is_contained_twenty_times_in_a_row() {
    let _m = serial();
    let s = Scratch::new("faults");
    let (nic_s, c1_s, ctl_s) = (s.path("nic.sock"), s.path("c1.sock"), s.path("ctl.sock"));
    let mut nic = nic_reflect(&nic_s, false);
    let c1 = format!("c1={c1_s},mac={C1}");
    let up = format!("u0={nic_s},mode=domain");
    // Its log holds the domains' relayed stderr, which names each fault committed.
    let mut sw = Proc::twin_capturing(
        "switch",
        &[
            "switch",
            "--client",
            &c1,
            "--uplink",
            &up,
            "--poll",
            "event",
            "--fault-injection",
            "--control",
            &ctl_s,
        ],
    );
    wait_for_path(&c1_s, Duration::from_secs(10));
    wait_for_path(&ctl_s, Duration::from_secs(10));
    // 10 000 frames a second until stopped, reflected back to c1 by the NIC.
    let mut g = gen_event_with(&c1_s, C1, OUTSIDE, "900", "10000", &["--id", "3"]);
    // Each fault kind with the cause its outage must report, none a part of
    // another's, except that both sandbox violations end the same way (the kernel
    // kills the domain with SIGSYS; which call it was is in the domain's own log,
    // checked below).
    let kinds: [(&str, &str); 7] = [
        ("kill", "exited: signal: 9 (SIGKILL)"),
        ("panic", "exited: exit status: 101"),
        ("hang", "hung: no heartbeat"),
        ("garbage", "from_nic ring: peer index"),
        ("bogus-length", "from_nic ring: slot of ring index"),
        ("open-file", "exited: signal: 31 (SIGSYS)"),
        ("open-socket", "exited: signal: 31 (SIGSYS)"),
    ];
    for (i, (k, c)) in kinds.iter().enumerate() {
        for (j, (k2, c2)) in kinds.iter().enumerate() {
            let sandbox = k.starts_with("open-") && k2.starts_with("open-");
            assert!(
                i == j || sandbox || !c.contains(c2),
                "{k} and {k2}: indistinguishable causes"
            );
        }
    }
    const ROUNDS: u64 = 20;
    let first = wait_status(&ctl_s, Duration::from_secs(20), "a driver domain", |s| {
        driver_pid(s).is_some()
    });
    let mut pid = driver_pid(&first).expect("a domain");
    let mut st = wait_flow(&ctl_s, &first, pid, "traffic through the first domain");
    let mut failures = 0u64;
    for (kind, cause) in kinds {
        for round in 0..ROUNDS {
            let tag = format!("{kind} #{round}");
            let before = st;
            ctl_ok(&ctl_s, &["fault", "u0", kind]);
            // Detected, reported with its cause, and repaired by a new domain...
            let after = wait_status(&ctl_s, Duration::from_secs(20), &tag, |s| {
                n(s, "/uplinks/u0/disconnects") > failures
                    && driver_pid(s).is_some_and(|p| p != pid)
            });
            failures += 1;
            assert_eq!(
                n(&after, "/uplinks/u0/disconnects"),
                failures,
                "{tag}: one failure per fault: {after}"
            );
            assert_eq!(n(&after, "/uplinks/u0/connects"), failures + 1, "{tag}");
            let o = outages(&after);
            let last = o.last().expect("an outage");
            let reason = str_at(last, "/reason");
            assert!(reason.contains(cause), "{tag}: reported {reason:?}");
            if kind != "kill" {
                let log = sw.output();
                assert_eq!(
                    committed(&log, kind),
                    round as usize + 1,
                    "{tag}: the domain committed the fault asked for"
                );
            }
            // ...every frame the switch dropped during the outage is in its record
            // (a failed link refuses sends as the uplink's `uplink_down` before the
            // outage begins: those are not the outage's)...
            assert_eq!(
                n(last, "/frames_dropped"),
                c1_drops(&after) - c1_drops(&before),
                "{tag}: {last}"
            );
            assert_c1_accounted(&before, &after, &tag);
            assert!(sw.running() && g.running(), "{tag}: a process died");
            // ...and frames flow through the new domain, to the NIC and back.
            pid = driver_pid(&after).expect("a domain");
            st = wait_flow(
                &ctl_s,
                &after,
                pid,
                &format!("{tag}: traffic after the repair"),
            );
            assert_eq!(
                n(&st, "/clients/c1/connects"),
                1,
                "{tag}: the client stayed"
            );
            assert_eq!(n(&st, "/clients/c1/disconnects"), 0, "{tag}");
        }
    }
    let g = g.stop_report();
    wait_status(&ctl_s, Duration::from_secs(10), "c1 gone", |s| {
        n(s, "/clients/c1/disconnects") == 1
    });
    let sw_r = sw.stop_report();
    let nic_r = nic.stop_report();
    let total = kinds.len() as u64 * ROUNDS;
    assert_eq!(n(&sw_r, "/uplinks/u0/disconnects"), total);
    assert_eq!(
        n(&nic_r, "/connects"),
        total + 1,
        "one NIC connection per domain"
    );
    assert_eq!(n(&g, "/tx_packets"), n(&sw_r, "/clients/c1/rx_packets"));
    assert_eq!(n(&g, "/rx_own_swapped"), n(&g, "/rx_packets"), "{g}");
}
