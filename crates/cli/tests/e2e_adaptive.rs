//! End to end with `twin switch --poll adaptive`: a client (`twin gen`), the
//! switch with an inline uplink, a reflecting `twin nic`. An adaptive switch
//! forwards exactly (every counter agrees hop by hop, as in `e2e_builtin.rs`)
//! when traffic comes at full rate, and sleeps when it does not: its CPU time over
//! two idle seconds, before and after the traffic, stays under a bound.
//!
//! The bound, [`IDLE_CPU_MAX`]: 10 % of one core. An idle adaptive switch wakes
//! from epoll at its timeout (50 ms, 20 times a second), runs one round (a poll of
//! every port, uplink supervision, control news) and sleeps again; its control
//! threads sleep in epoll. That is tens of microseconds a wake-up: well under 1 %
//! of a core. After traffic it polls at most `twin_poll::waiter::ADAPTIVE_ROUNDS`
//! empty rounds (under a millisecond) before the first sleep. A switch that
//! polls (busy mode: it spins, then yields a core nobody else wants and goes on)
//! takes a whole core, or on a loaded 2-core machine at least its fair share, a
//! third of a core or more. 10 % sits an order of magnitude above the expected
//! idle cost (room for the 10 ms granularity of /proc's utime and stime: one
//! tick is 0.5 % of two seconds, and for a loaded machine) and several times below
//! any polling switch.

mod common;

use std::time::{Duration, Instant};

use common::*;

const C1: &str = "02:00:00:00:00:01";
const OUTSIDE: &str = "02:00:00:00:00:fe";

/// Most CPU an idle adaptive switch may use, as a share of one core (see the
/// module documentation).
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

/// The share of one core `pid` used over `span`: from stat (asserted) and from
/// schedstat (logged).
fn cpu_share(pid: u32, span: Duration) -> (f64, f64) {
    let (c0, r0, t0) = (cpu_seconds(pid), run_seconds(pid), Instant::now());
    std::thread::sleep(span);
    let (c1, r1, t1) = (cpu_seconds(pid), run_seconds(pid), Instant::now());
    let secs = (t1 - t0).as_secs_f64();
    ((c1 - c0) / secs, (r1 - r0) / secs)
}

#[test]
fn an_adaptive_switch_forwards_exactly_and_sleeps_when_idle() {
    let _m = serial();
    let s = Scratch::new("adaptive");
    let nic_s = s.path("nic.sock");
    let mut nic = nic_reflect(&nic_s, false);
    let c1_s = s.path("c1.sock");
    let ctl = s.path("ctl.sock");
    let client = format!("c1={c1_s},mac={C1}");
    let uplink = format!("u0={nic_s},mode=inline");
    let mut sw = Proc::twin(
        "switch",
        &[
            "switch",
            "--client",
            &client,
            "--uplink",
            &uplink,
            "--poll",
            "adaptive",
            "--control",
            &ctl,
        ],
    );
    wait_for_path(&c1_s, Duration::from_secs(10));
    wait_for_path(&ctl, Duration::from_secs(10));
    // (An unknown --poll value would have stopped the switch at its command line.)
    wait_status(
        &ctl,
        Duration::from_secs(20),
        "the uplink connected",
        |st| n(st, "/uplinks/u0/connects") == 1,
    );

    // Idle: nothing connected to the client port, the NIC idle.
    std::thread::sleep(Duration::from_millis(500));
    let (idle_before, idle_before_fine) = cpu_share(sw.pid(), Duration::from_secs(2));

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
            "--poll",
            "event",
        ],
    );
    let (c0, t0) = (cpu_seconds(sw.pid()), Instant::now());
    let g = g.report(Duration::from_secs(60));
    let busy = (cpu_seconds(sw.pid()) - c0) / t0.elapsed().as_secs_f64();

    // Idle again: back to sleep after the traffic.
    std::thread::sleep(Duration::from_millis(500));
    let (idle_after, idle_after_fine) = cpu_share(sw.pid(), Duration::from_secs(2));

    let sw_r = sw.stop_report();
    let nic_r = nic.stop_report();
    eprintln!("gen {g}\nswitch {sw_r}\nnic {nic_r}");
    eprintln!(
        "adaptive switch CPU (stat; schedstat): idle before {:.1} %; {:.3} %, \
         while the generator ran {:.1} % ({:.3} Mpps sent), idle after {:.1} %; {:.3} % \
         (bound {:.0} %)",
        idle_before * 100.0,
        idle_before_fine * 100.0,
        busy * 100.0,
        g["mpps"].as_f64().unwrap_or(0.0),
        idle_after * 100.0,
        idle_after_fine * 100.0,
        IDLE_CPU_MAX * 100.0
    );

    // Asleep when idle, before and after the traffic.
    assert!(
        idle_before < IDLE_CPU_MAX,
        "idle adaptive switch used {:.1} % of a core",
        idle_before * 100.0
    );
    assert!(
        idle_after < IDLE_CPU_MAX,
        "adaptive switch idle after traffic used {:.1} % of a core",
        idle_after * 100.0
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
}
