//! Fault injection through the control socket (`twin ctl`): every kind of driver
//! domain failure, twenty times in a row each, while a client keeps sending. The
//! switch must stay up, the client connected, and each failure be detected,
//! reported with its cause, and repaired by a restart.

mod common;

use std::time::{Duration, Instant};

use common::*;

#[test]
fn every_injected_fault_is_contained_twenty_times_in_a_row() {
    let _m = serial();
    let s = Scratch::new("faults");
    let (nic_s, c1_s, ctl_s) = (s.path("nic.sock"), s.path("c1.sock"), s.path("ctl.sock"));
    let mut nic = Proc::twin(
        "nic",
        &[
            "nic", "--socket", &nic_s, "--mode", "reflect", "--poll", "event",
        ],
    );
    let c1 = format!("c1={c1_s}");
    let up = format!("u0={nic_s},mode=domain");
    let mut sw = Proc::twin(
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
    let mut g = Proc::twin(
        "gen",
        &[
            "gen",
            "--socket",
            &c1_s,
            "--size",
            "64",
            "--rate",
            "10000",
            "--duration",
            "600",
            "--dst-mac",
            "02:00:00:00:00:fe",
            "--poll",
            "event",
        ],
    );
    let kinds: [(&str, &str); 7] = [
        ("kill", "SIGKILL"),
        ("panic", "exit status: 101"),
        ("hang", "hung"),
        ("garbage", "from_nic ring"),
        ("bogus-length", "from_nic ring"),
        ("open-file", "SIGSYS"),
        ("open-socket", "SIGSYS"),
    ];
    const ROUNDS: usize = 20;
    let mut pid = wait_domain(&ctl_s, 0);
    let mut failures = 0u64;
    for (kind, cause) in kinds {
        for round in 0..ROUNDS {
            assert_eq!(
                ctl_answer(&ctl_s, &["fault", "u0", kind]),
                "ok",
                "{kind} #{round}"
            );
            // Detected and reported with its cause...
            let start = Instant::now();
            let st = loop {
                let st = ctl_status(&ctl_s);
                if n(&st, "/uplinks/u0/disconnects") > failures {
                    break st;
                }
                assert!(
                    start.elapsed() < Duration::from_secs(10),
                    "{kind} #{round} not detected"
                );
                std::thread::sleep(Duration::from_millis(10));
            };
            failures += 1;
            assert_eq!(
                n(&st, "/uplinks/u0/disconnects"),
                failures,
                "one failure per fault"
            );
            let o = outages(&st);
            let reason = o.last().and_then(|x| x["reason"].as_str()).unwrap_or("");
            assert!(
                reason.contains(cause),
                "{kind} #{round}: reported {reason:?}"
            );
            // ...and repaired, with the switch and the client untouched.
            pid = wait_domain(&ctl_s, pid);
            assert!(
                sw.running() && g.running(),
                "{kind} #{round}: a process died"
            );
        }
    }
    let before = n(&ctl_status(&ctl_s), "/uplinks/u0/rx_packets");
    std::thread::sleep(Duration::from_millis(500));
    let after = n(&ctl_status(&ctl_s), "/uplinks/u0/rx_packets");
    assert!(
        after > before,
        "traffic flows through the last driver domain"
    );
    // The client never noticed: one connection, never dropped.
    let st = ctl_status(&ctl_s);
    assert_eq!(
        n(&st, "/clients/c1/connects"),
        1,
        "the client stayed connected"
    );
    assert_eq!(n(&st, "/clients/c1/disconnects"), 0);
    let g = g.stop_report();
    let sw_r = sw.stop_report();
    let _ = nic.stop_report();
    assert_eq!(
        n(&sw_r, "/uplinks/u0/disconnects"),
        (kinds.len() * ROUNDS) as u64
    );
    assert!(n(&g, "/rx_packets") > 0);
}
