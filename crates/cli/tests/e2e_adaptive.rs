//! End to end on the defaults (no `--poll`, no uplink mode): adaptive polling in
//! every process, a twin uplink. A client (`twin gen`), the switch with an uplink
//! whose driver domain runs beside it, a reflecting `twin nic`, and a second,
//! idle client (`twin gen --rate 0`). The chain forwards exactly (every counter
//! agrees hop by hop, as in `e2e_builtin.rs`) when traffic comes at full rate,
//! and every process sleeps when it does not: the CPU time of the switch, the
//! driver domain, the NIC and the idle generator over two idle seconds, before and
//! after the traffic, stays under a bound each.
//!
//! The bound, [`IDLE_CPU_MAX`]: 10 % of one core. An idle adaptive loop wakes
//! from epoll at its timeout (the switch every 50 ms, the driver domain, NIC and
//! generator every 10 ms at most), runs one round and sleeps again; control
//! threads sleep in epoll. That is tens of microseconds a wake-up: around 1 % of
//! a core or less. After traffic a loop polls at most
//! `twin_poll::waiter::ADAPTIVE_ROUNDS` empty rounds (under a millisecond) before
//! its first sleep. A loop that polls (busy mode: it spins, then yields a core
//! nobody else wants and goes on) takes a whole core, or on a loaded 2-core
//! machine at least its fair share, a third of a core or more. 10 % sits an order
//! of magnitude above the expected idle cost (room for the 10 ms granularity of
//! /proc's utime and stime: one tick is 0.5 % of two seconds, and for a loaded
//! machine) and several times below any polling process.

mod common;

use std::time::{Duration, Instant};

use common::*;

const C1: &str = "02:00:00:00:00:01";
const OUTSIDE: &str = "02:00:00:00:00:fe";

/// Most CPU an idle process may use, as a share of one core (see the module
/// documentation).
const IDLE_CPU_MAX: f64 = 0.10;
/// /proc reports utime and stime in USER_HZ ticks, 100 a second on Linux.
const USER_HZ: f64 = 100.0;

/// utime + stime of `pid` (all its threads), in seconds, from /proc/PID/stat.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("read stat");
    // The fields after the command name (in parentheses, which may hold spaces):
    // utime and stime are fields 14 and 15 of stat, 12 and 13 after the name.
    let rest = stat.rsplit_once(')').expect("stat has a command name").1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let tick = |i: usize| -> f64 { f[i].parse().expect("a tick count") };
    (tick(11) + tick(12)) / USER_HZ
}

/// Run time of `pid`'s threads in seconds from /proc/PID/task/*/schedstat
/// (nanoseconds; for the log only: finer than the ticks of stat, which the
/// assertions use).
fn run_seconds(pid: u32) -> f64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return f64::NAN;
    };
    let ns: u64 = tasks
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .sum();
    ns as f64 / 1e9
}

/// The idle share of a core of each process, over the same two seconds.
fn idle_shares(procs: &[(&str, u32)]) -> Vec<(String, f64, f64)> {
    let before: Vec<_> = procs
        .iter()
        .map(|&(_, pid)| (cpu_seconds(pid), run_seconds(pid)))
        .collect();
    let t0 = Instant::now();
    std::thread::sleep(Duration::from_secs(2));
    let secs = t0.elapsed().as_secs_f64();
    procs
        .iter()
        .zip(before)
        .map(|(&(who, pid), (c0, r0))| {
            let c = (cpu_seconds(pid) - c0) / secs;
            let r = (run_seconds(pid) - r0) / secs;
            (who.to_string(), c, r)
        })
        .collect()
}

fn assert_idle(when: &str, shares: &[(String, f64, f64)]) {
    for (who, stat, fine) in shares {
        eprintln!(
            "idle {when}: {who} {:.1} % of a core (stat), {:.3} % (schedstat)",
            stat * 100.0,
            fine * 100.0
        );
    }
    for (who, stat, _) in shares {
        assert!(
            *stat < IDLE_CPU_MAX,
            "idle {when}: {who} used {:.1} % of a core (bound {:.0} %)",
            stat * 100.0,
            IDLE_CPU_MAX * 100.0
        );
    }
}

#[test]
fn on_the_defaults_every_process_forwards_exactly_and_sleeps_when_idle() {
    let _m = serial();
    let s = Scratch::new("adaptive");
    let nic_s = s.path("nic.sock");
    let mut nic = Proc::twin("nic", &["nic", "--socket", &nic_s, "--mode", "reflect"]);
    let (c1_s, c2_s) = (s.path("c1.sock"), s.path("c2.sock"));
    let ctl = s.path("ctl.sock");
    let (c1, c2) = (format!("c1={c1_s},mac={C1}"), format!("c2={c2_s}"));
    let uplink = format!("u0={nic_s}");
    let mut sw = Proc::twin(
        "switch",
        &[
            "switch",
            "--client",
            &c1,
            "--client",
            &c2,
            "--uplink",
            &uplink,
            "--control",
            &ctl,
        ],
    );
    wait_for_path(&c1_s, Duration::from_secs(10));
    wait_for_path(&ctl, Duration::from_secs(10));
    // The default mode is twin: the fast path runs in the switch, the driver
    // domain holds the NIC connection and its slow path.
    let st = wait_status(
        &ctl,
        Duration::from_secs(20),
        "the uplink's twin running",
        |st| {
            n(st, "/uplinks/u0/connects") == 1
                && st.pointer("/uplinks/u0/detail/driver/fast_path")
                    == Some(&serde_json::json!("twin"))
        },
    );
    let domain = u32::try_from(n(&st, "/uplinks/u0/detail/driver/pid")).expect("a pid");
    // An idle client: connected, receiving only, for longer than the test.
    let mut idle_gen = Proc::twin(
        "idle-gen",
        &[
            "gen",
            "--socket",
            &c2_s,
            "--size",
            "64",
            "--rate",
            "0",
            "--duration",
            "60",
            "--src-mac",
            "02:00:00:00:00:02",
        ],
    );
    wait_status(&ctl, Duration::from_secs(10), "c2 connected", |st| {
        n(st, "/clients/c2/connects") == 1
    });
    let procs = [
        ("switch", sw.pid()),
        ("driver domain", domain),
        ("nic", nic.pid()),
        ("idle gen", idle_gen.pid()),
    ];

    // Idle: nothing sent anywhere.
    std::thread::sleep(Duration::from_millis(500));
    let before = idle_shares(&procs);

    // Full rate: the generator sends as fast as it can (no --rate), a fixed count.
    let sent_want = 300_000u64;
    let count = sent_want.to_string();
    let mut g = Proc::twin(
        "gen",
        &[
            "gen",
            "--socket",
            &c1_s,
            "--size",
            "64",
            "--duration",
            "20",
            "--count",
            &count,
            "--src-mac",
            C1,
            "--dst-mac",
            OUTSIDE,
        ],
    );
    let (c0, t0) = (cpu_seconds(sw.pid()), Instant::now());
    let g = g.report(Duration::from_secs(60));
    let busy = (cpu_seconds(sw.pid()) - c0) / t0.elapsed().as_secs_f64();

    // Idle again: back to sleep after the traffic.
    std::thread::sleep(Duration::from_millis(500));
    let after = idle_shares(&procs);

    let sw_r = sw.stop_report();
    let nic_r = nic.stop_report();
    let idle_r = idle_gen.stop_report();
    eprintln!("gen {g}\nswitch {sw_r}\nnic {nic_r}\nidle gen {idle_r}");
    eprintln!(
        "switch while the generator ran: {:.1} % of a core ({:.3} Mpps sent)",
        busy * 100.0,
        g["mpps"].as_f64().unwrap_or(0.0),
    );

    // Asleep when idle, before and after the traffic.
    assert_idle("before the traffic", &before);
    assert_idle("after the traffic", &after);
    // The switch still had its twin: the traffic went through the default mode.
    assert_eq!(
        sw_r.pointer("/uplinks/u0/detail/driver/fast_path"),
        Some(&serde_json::json!("twin")),
        "the uplink left twin mode"
    );

    // Exact forwarding, hop by hop (as e2e_builtin's reflect test).
    assert_eq!(
        n(&g, "/tx_packets"),
        sent_want,
        "the generator sent its count"
    );
    assert_reflected_round_trip(&g, &sw_r, &nic_r);
    // At full rate a ring overflows whenever its consumer is off its core: the
    // uplink's transmit ring (`uplink_ring_full`), the client's or the switch's
    // receive ring (`no_buffers`). Those are the only drops allowed; every one is
    // counted above.
    for (who, report, pointer) in [
        ("switch", &sw_r, "/drops"),
        ("nic", &nic_r, "/rx_drops"),
        ("nic", &nic_r, "/tx_drops"),
    ] {
        let m = report
            .pointer(pointer)
            .and_then(|v| v.as_object())
            .unwrap_or_else(|| panic!("no {pointer} in the {who} report"));
        for (reason, count) in m {
            let explained = matches!(reason.as_str(), "uplink_ring_full" | "no_buffers");
            assert!(
                explained || count.as_u64() == Some(0),
                "{who} dropped {count} frames as {reason}"
            );
        }
    }
    assert!(n(&g, "/rx_packets") > 0, "no frame came back");
    // The idle client, asleep, still took every frame the switch gave it (c1's
    // first frames, flooded until the NIC's reflection taught the switch where
    // OUTSIDE lives).
    assert_eq!(
        n(&idle_r, "/rx_packets"),
        n(&sw_r, "/clients/c2/tx_packets"),
        "the sleeping client lost frames"
    );
}
