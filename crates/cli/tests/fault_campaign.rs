//! A fault campaign: every kind of driver-domain and twin fault, injected round
//! after round into a switch with two clients attached and traffic flowing.
//!
//! Asserts, for every fault: it is detected (one outage, or one twin fault, more),
//! the uplink comes back with a new driver domain in the mode it ran in, the switch
//! and both generators keep running; and at the end: no client ever disconnected,
//! traffic flows through the last domain, and the outages add up to the faults.
//! Prints the recovery time (injection to the uplink running again) p50 / p99 /
//! max per kind and over all.
//!
//! `TWIN_FAULTS` sets how many faults (default 22: two of each of the 11 kinds, the
//! CI smoke); `scripts/fault-campaign.sh` runs 2000 and records the numbers.

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

const C1: &str = "02:00:00:00:00:01";
const C2: &str = "02:00:00:00:00:02";
const NIC: &str = "02:00:00:00:00:fe";

/// (fault, the mode it is injected in, what the outage reason contains)
const KINDS: [(&str, &str, &str); 11] = [
    ("kill", "domain", "SIGKILL"),
    ("panic", "domain", "exit status: 101"),
    ("hang", "domain", "hung"),
    ("garbage", "domain", "from_nic ring"),
    ("bogus-length", "domain", "from_nic ring"),
    ("open-file", "domain", "SIGSYS"),
    ("open-socket", "domain", "SIGSYS"),
    ("twin-forbidden-read", "twin", "twin disabled"),
    ("twin-wild-write", "twin", "twin disabled"),
    ("twin-panic", "twin", "twin disabled"),
    ("twin-stuck", "twin", "twin disabled"),
];

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn summary(name: &str, times: &mut [Duration]) -> String {
    times.sort();
    format!(
        "{name:<20} n={:<5} p50={:>7.1} ms p99={:>7.1} ms max={:>7.1} ms",
        times.len(),
        percentile(times, 0.5).as_secs_f64() * 1e3,
        percentile(times, 0.99).as_secs_f64() * 1e3,
        times.last().copied().unwrap_or_default().as_secs_f64() * 1e3
    )
}

#[test]
fn every_fault_is_recovered_with_clients_attached_and_traffic_flowing() {
    let total: usize = std::env::var("TWIN_FAULTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2 * KINDS.len());
    let _m = serial();
    let s = Scratch::new("fault-campaign");
    let (nic_s, c1_s, c2_s, ctl) = (
        s.path("nic.sock"),
        s.path("c1.sock"),
        s.path("c2.sock"),
        s.path("ctl.sock"),
    );
    let mut nic = nic_reflect(&nic_s, false);
    wait_for_path(&nic_s, Duration::from_secs(10));
    let (a, b) = (format!("c1={c1_s},mac={C1}"), format!("c2={c2_s},mac={C2}"));
    let up = format!("u0={nic_s},mode=domain");
    let mut sw = Proc::twin(
        "switch",
        &[
            "switch",
            "--client",
            &a,
            "--client",
            &b,
            "--uplink",
            &up,
            "--poll",
            "event",
            "--control",
            &ctl,
            "--fault-injection",
            // The campaign restarts domains far faster than anything in production.
            "--restart-budget",
            "1000000",
        ],
    );
    wait_for_path(&ctl, Duration::from_secs(10));
    let secs = "100000";
    let mut g1 = gen_event(&c1_s, C1, NIC, secs, "5000");
    let mut g2 = gen_event(&c2_s, C2, NIC, secs, "5000");

    let mut st = wait_status(&ctl, Duration::from_secs(20), "uplink up", |st| {
        driver_pid(st).is_some() && fast_path(st) == Some("domain")
    });
    let mut outages = 0u64;
    let mut by_kind: Vec<Vec<Duration>> = vec![Vec::new(); KINDS.len()];
    let mut all = Vec::with_capacity(total);
    for i in 0..total {
        let k = i % KINDS.len();
        let (kind, mode, cause) = KINDS[k];
        let what = format!("fault {i} ({kind})");
        if fast_path(&st) != Some(mode) {
            ctl_ok(&ctl, &["mode", "u0", mode]);
            st = wait_status(
                &ctl,
                Duration::from_secs(20),
                &format!("{what}: mode {mode}"),
                |st| fast_path(st) == Some(mode),
            );
        }
        let old = driver_pid(&st).expect("a driver domain");
        let t0 = Instant::now();
        ctl_ok(&ctl, &["fault", "u0", kind]);
        // Detected (one more outage), and the uplink running a new domain again.
        st = wait_status(&ctl, Duration::from_secs(20), &what, |st| {
            n(st, "/uplinks/u0/disconnects") > outages
                && st.pointer("/uplinks/u0/detail/connected") == Some(&Value::Bool(true))
                && driver_pid(st).is_some_and(|p| p != old)
                && fast_path(st).is_some()
        });
        let took = t0.elapsed();
        outages += 1;
        assert_eq!(
            n(&st, "/uplinks/u0/disconnects"),
            outages,
            "{what}: one outage per fault"
        );
        let reason = st
            .pointer("/uplinks/u0/detail/outages")
            .and_then(Value::as_array)
            .and_then(|o| o.last())
            .map(|o| str_at(o, "/reason").to_string())
            .unwrap_or_default();
        assert!(reason.contains(cause), "{what}: outage reason {reason:?}");
        assert!(sw.running(), "{what}: the switch died");
        assert!(g1.running() && g2.running(), "{what}: a generator ended");
        by_kind[k].push(took);
        all.push(took);
    }

    // Traffic flows through the last domain, and no client ever noticed.
    let before = n(&st, "/uplinks/u0/rx_packets");
    let st = wait_status(
        &ctl,
        Duration::from_secs(10),
        "traffic after the last fault",
        |st| n(st, "/uplinks/u0/rx_packets") > before + 1000,
    );
    for c in ["c1", "c2"] {
        assert_eq!(n(&st, &format!("/clients/{c}/connects")), 1, "{c}");
        assert_eq!(n(&st, &format!("/clients/{c}/disconnects")), 0, "{c}");
    }
    let g1 = g1.stop_report();
    let g2 = g2.stop_report();
    let sw_r = sw.stop_report();
    let _ = nic.stop_report();
    assert_eq!(n(&sw_r, "/uplinks/u0/disconnects"), total as u64);
    for g in [&g1, &g2] {
        assert_eq!(g["nic_disconnected"], Value::Bool(false), "{g}");
        assert!(n(g, "/rx_own") > 0, "{g}");
    }

    eprintln!("fault campaign: {total} faults, 0 switch crashes, 0 client disconnects");
    eprintln!("recovery time (injection to the uplink running a new domain):");
    for (k, times) in by_kind.iter_mut().enumerate() {
        eprintln!("  {}", summary(KINDS[k].0, times));
    }
    eprintln!("  {}", summary("all", &mut all));
}
