//! `twin bench --quick --json` runs every built-in mode and workload, the fixed
//! offered rates and two cells with DPDK testpmd (as the client, as the NIC), and
//! reports every metric of the documented schema (docs/evaluation.md, "JSON
//! schema"). It asserts no speed. It asserts that each number was measured and
//! means what it says:
//! * every process that ran in a cell has a measured CPU time above zero (a role
//!   that could not be measured is an error of the bench, never a 0);
//! * the uplink's fast path at the end of every run was the cell's mode, with no
//!   twin fault and no driver-domain disconnect (from the switch's final report);
//! * transmit cells account for every frame: delivered + counted drops == sent,
//!   and the delivered count is the number the Mpps is computed from;
//! * at a fixed rate every frame the rate offered is accounted for (sent, refused
//!   by a full ring, due while the generator did not run, or still in its token
//!   bucket), and at most a bucket's worth found the generator's ring full
//!   (derived below).

mod common;

use std::process::Command;

use serde_json::Value;

const MODES: [&str; 4] = ["native", "inline", "domain", "twin"];
const WORKLOADS: [&str; 3] = ["transmit", "receive", "roundtrip"];
const SIZES: [u64; 2] = [64, 1500];
/// The rates of `--quick` (crates/cli/src/bench/plan.rs, QUICK_FIXED_RATES_PPS).
const QUICK_RATES: [u64; 2] = [100_000, 1_000_000];

/// The generator's batch and longest sleep (crates/gen/src/run.rs: `batch`
/// default 32, `MAX_SLEEP` 10 ms), which bound what its token bucket holds back.
const GEN_BATCH: f64 = 32.0;
const GEN_MAX_SLEEP_S: f64 = 0.010;

/// A number by key; fails when it is missing or not a number.
fn num(v: &Value, k: &str) -> f64 {
    v[k].as_f64()
        .unwrap_or_else(|| panic!("no number {k:?} in {v}"))
}

/// An unsigned count by key; fails when it is missing.
fn cnt(v: &Value, k: &str) -> u64 {
    v[k].as_u64()
        .unwrap_or_else(|| panic!("no count {k:?} in {v}"))
}

/// The roles whose CPU time a cell of `mode` must report.
fn roles_of(mode: &str) -> &'static [&'static str] {
    if mode == "native" {
        &["client", "nic"]
    } else {
        &["client", "domain", "nic", "switch"]
    }
}

/// Every role of `mode` has a CPU time above zero, in the cell and in each of its
/// runs, and no other role is reported.
fn assert_cpu_measured(c: &Value, runs: &[&Value]) {
    let mode = c["mode"].as_str().expect("mode");
    let want = roles_of(mode);
    let roles = c["cpu_s_per_mpkt"].as_object().expect("cpu_s_per_mpkt");
    let got: Vec<&str> = roles.keys().map(String::as_str).collect();
    assert_eq!(got, want, "roles of {c}");
    for role in want {
        assert!(
            num(&c["cpu_s_per_mpkt"], role) > 0.0,
            "{role} has no CPU time: {c}"
        );
    }
    assert_eq!(runs.len() as u64, cnt(c, "runs"), "runs of {c}");
    for r in runs {
        let got: Vec<&str> = r["cpu_s"]
            .as_object()
            .expect("cpu_s")
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(got, want, "roles of run {r}");
        for role in want {
            assert!(num(&r["cpu_s"], role) > 0.0, "{role} has no CPU time: {r}");
        }
    }
}

/// The switch's final report said the fast path ended in the cell's mode, with no
/// twin fault and no disconnect of the driver domain (in the cell and every run).
fn assert_mode_held(c: &Value, runs: &[&Value]) {
    let mode = c["mode"].as_str().expect("mode");
    if mode == "native" {
        assert!(c["fast_path_end"].is_null(), "native has no uplink: {c}");
        for r in runs {
            assert!(r["switch_end"].is_null(), "native has no switch: {r}");
        }
        return;
    }
    assert_eq!(c["fast_path_end"], mode, "{c}");
    assert_eq!(cnt(c, "twin_faults"), 0, "{c}");
    assert_eq!(cnt(c, "uplink_disconnects"), 0, "{c}");
    for r in runs {
        let e = &r["switch_end"];
        assert_eq!(e["fast_path"], mode, "{r}");
        assert_eq!(cnt(e, "twin_faults"), 0, "{r}");
        assert_eq!(cnt(e, "uplink_disconnects"), 0, "{r}");
    }
}

/// Sum of the drop counters of a `frames` object; fails unless every reason of
/// the processes on the path is listed (zeros included).
fn dropped(frames: &Value, mode: &str, nic_builtin: bool) -> u64 {
    let d = frames["drops"].as_object().expect("drops");
    if mode != "native" {
        for reason in ["switch/uplink_ring_full", "switch/uplink_down"] {
            assert!(d.contains_key(reason), "no {reason} in {frames}");
        }
    }
    if nic_builtin {
        assert!(
            d.keys().any(|k| k.starts_with("nic/")),
            "no drop of the NIC in {frames}"
        );
    }
    d.iter()
        .map(|(k, v)| v.as_u64().unwrap_or_else(|| panic!("drop {k} is {v}")))
        .sum()
}

/// A transmit run with a built-in NIC lost no frame without counting it, and the
/// frames it counted as delivered are what its Mpps is computed from.
fn assert_conserved(r: &Value) {
    let f = &r["frames"];
    let mode = r["mode"].as_str().expect("mode");
    let (sent, delivered) = (cnt(f, "sent"), cnt(f, "delivered"));
    assert!(delivered > 0, "nothing delivered: {r}");
    assert_eq!(
        delivered + dropped(f, mode, true),
        sent,
        "frames lost without a count: {r}"
    );
    if r["client"] == "builtin" {
        // packets (what mpps is over secs) is the NIC's count.
        assert_eq!(num(r, "packets"), delivered as f64, "{r}");
    }
}

/// The generator's token bucket at `rate` (crates/gen/src/run.rs: two batches of
/// 32, and at least what accrues during two of its longest sleeps of 10 ms).
fn gen_bucket(rate: u64) -> u64 {
    (2.0 * GEN_BATCH)
        .max(rate as f64 * 2.0 * GEN_MAX_SLEEP_S)
        .ceil() as u64
}

/// A fixed-rate run's generator sent what the rate offered over its send phase.
///
/// Its token bucket starts empty when the send phase starts and fills at the rate,
/// so exactly `offered` = rate x the phase's length became due (rounded down), and
/// each of those frames was sent, found the generator's ring full
/// (`not_sent_ring_full`), was given up because the generator was not running when
/// it was due and the bucket overflowed (`not_sent_late`), or was still in the
/// bucket at the end: at most a bucket (20 ms of the rate at these rates, 4 % of a
/// 0.5 s run), give or take a frame of rounding each way.
///
/// Frames that found the ring full mean the path did not take the rate: at most a
/// bucket of them is allowed. The bug of commit 11d8627 (a generator ring too
/// shallow for its millisecond sleeps: 1 Mpps offered, 0.45 sent) put half the
/// frames there. Frames due while the generator did not run are the machine's
/// load, not the path's: they are recorded, and the bench ran such a run again
/// (3 attempts in all) before it kept it.
///
/// The delivered rate is not compared with the offered one: between the sent and
/// the delivered frames every loss is counted by reason (asserted exactly in
/// `assert_conserved`), and how many frames a NIC sharing its core with other
/// busy pollers drops at the uplink is the machine's load, not the bench's.
fn assert_rate_offered(r: &Value, rate: u64) {
    let f = &r["frames"];
    let secs = num(r, "secs");
    let offered = cnt(f, "offered");
    let exact = rate as f64 * secs;
    assert!(
        offered as f64 <= exact && exact - (offered as f64) < 1.0,
        "offered {offered} is not {rate} pps x {secs} s: {r}"
    );
    let (sent, ring_full, late) = (
        cnt(f, "sent"),
        cnt(f, "not_sent_ring_full"),
        cnt(f, "not_sent_late"),
    );
    let bucket = gen_bucket(rate);
    let held_back = offered as i128 - (sent + ring_full + late) as i128;
    assert!(
        (-2..=bucket as i128 + 2).contains(&held_back),
        "{held_back} frames of the {offered} offered are unaccounted for (a bucket is \
         {bucket}): {r}"
    );
    assert!(
        ring_full <= bucket,
        "{ring_full} of the {offered} frames offered at {rate} pps found the generator's \
         ring full (at most a bucket, {bucket}): {r}"
    );
    let attempts = cnt(r, "attempts");
    assert!((1..=3).contains(&attempts), "{r}");
    if late > bucket {
        assert_eq!(
            attempts, 3,
            "a run with {late} frames late was kept early: {r}"
        );
    }
}

#[test]
fn bench_quick_reports_every_mode_workload_and_metric() {
    common::require_testpmd();
    let dir = std::env::temp_dir().join(format!("twin-bench-quick-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let json = dir.join("out.json");
    let charts = dir.join("charts");
    let out = Command::new(env!("CARGO_BIN_EXE_twin"))
        .args(["bench", "--quick", "--dpdk", "on", "--json"])
        .arg(&json)
        .arg("--charts")
        .arg(&charts)
        .output()
        .expect("run twin bench");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "twin bench failed: {stdout}\n{stderr}"
    );
    eprintln!("{stderr}");
    let doc: Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    let chart_files: Vec<String> = std::fs::read_dir(&charts)
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    let _ = std::fs::remove_dir_all(&dir);

    assert_eq!(doc["schema_version"], 1);
    assert!(doc["setup"]["quick"].as_bool().unwrap_or(false));
    let cells = doc["cells"].as_array().expect("cells");
    let all_runs = doc["runs"].as_array().expect("runs");
    let key = ["mode", "workload", "client", "nic", "size", "rate_pps"];
    let runs_of = |c: &Value| -> Vec<&Value> {
        all_runs
            .iter()
            .filter(|r| key.iter().all(|k| r[*k] == c[*k]))
            .collect()
    };
    for mode in MODES {
        for workload in WORKLOADS {
            for size in SIZES {
                let c = cells
                    .iter()
                    .find(|c| {
                        c["mode"] == mode
                            && c["workload"] == workload
                            && c["size"] == size
                            && c["client"] == "builtin"
                            && c["nic"] == "builtin"
                            && c["rate_pps"].is_null()
                    })
                    .unwrap_or_else(|| panic!("no cell {mode} {workload} {size} in {stdout}"));
                let runs = runs_of(c);
                assert!(num(c, "mpps") > 0.0, "{c}");
                assert!(num(c, "gbps") > 0.0, "{c}");
                assert!(num(c, "total_cpu_s_per_mpkt") > 0.0, "{c}");
                if mode != "native" {
                    assert!(num(c, "datapath_cpu_s_per_mpkt") > 0.0, "{c}");
                }
                assert_cpu_measured(c, &runs);
                assert_mode_held(c, &runs);
                if workload == "transmit" {
                    for r in &runs {
                        assert!(r["frames"]["offered"].is_null(), "{r}");
                        assert_eq!(cnt(&r["frames"], "not_sent_ring_full"), 0, "{r}");
                        assert_eq!(cnt(&r["frames"], "not_sent_late"), 0, "{r}");
                        assert_eq!(cnt(r, "attempts"), 1, "{r}");
                        assert_conserved(r);
                    }
                }
            }
        }
        // Fixed offered rates: transmit, event-driven, the rate offered and every
        // frame accounted for.
        for rate in QUICK_RATES {
            for size in SIZES {
                let c = cells
                    .iter()
                    .find(|c| c["mode"] == mode && c["size"] == size && c["rate_pps"] == rate)
                    .unwrap_or_else(|| panic!("no cell {mode} {size} B at {rate} pps"));
                assert_eq!(c["workload"], "transmit", "{c}");
                assert_eq!(c["poll"], "event", "{c}");
                assert!(num(c, "mpps") > 0.0, "{c}");
                let runs = runs_of(c);
                assert_cpu_measured(c, &runs);
                assert_mode_held(c, &runs);
                for r in &runs {
                    assert_conserved(r);
                    assert_rate_offered(r, rate);
                }
            }
        }
        let r = doc["rtt"]
            .as_array()
            .and_then(|r| r.iter().find(|r| r["mode"] == mode))
            .unwrap_or_else(|| panic!("no rtt for {mode} in {stdout}"));
        assert!(num(r, "rtt_p50_us") > 0.0, "{r}");
        assert!(num(r, "rtt_p50_us") <= num(r, "rtt_p99_us"), "{r}");
        assert!(num(r, "rtt_p99_us") <= num(r, "rtt_p999_us"), "{r}");
    }

    // testpmd as the client (txonly into the twin, the built-in NIC counting) and
    // as the NIC (rxonly, the generator sending through the twin).
    for (client, nic) in [("dpdk", "builtin"), ("builtin", "dpdk")] {
        let c = cells
            .iter()
            .find(|c| c["client"] == client && c["nic"] == nic)
            .unwrap_or_else(|| panic!("no cell with client {client}, NIC {nic} in {stdout}"));
        assert_eq!(c["mode"], "twin", "{c}");
        assert_eq!(c["workload"], "transmit", "{c}");
        assert!(num(c, "mpps") > 0.0, "{c}");
        let runs = runs_of(c);
        assert_cpu_measured(c, &runs);
        assert_mode_held(c, &runs);
        for r in &runs {
            let f = &r["frames"];
            let (sent, delivered) = (cnt(f, "sent"), cnt(f, "delivered"));
            assert!(delivered > 0, "nothing delivered: {r}");
            if nic == "builtin" {
                assert_conserved(r);
            } else {
                // packets (what mpps is over secs) is testpmd's count.
                assert_eq!(num(r, "packets"), delivered as f64, "{r}");
                // testpmd's count of what it received can fall short of what it was
                // given by the frames in flight when the switch stopped
                // (common::in_flight_to_nic_max has the story); never above.
                let accounted = delivered + dropped(f, "twin", false);
                assert!(
                    accounted <= sent && sent - accounted <= common::in_flight_to_nic_max("twin"),
                    "testpmd received {delivered} and the switch dropped {} of the {sent} \
                     frames sent: {r}",
                    accounted - delivered
                );
            }
        }
    }

    let ratios = doc["ratios"].as_array().expect("ratios");
    for name in [
        "twin/inline",
        "twin/domain",
        "inline/native",
        "domain/native",
        "twin/native",
    ] {
        for workload in WORKLOADS {
            let r = ratios
                .iter()
                .find(|r| r["name"] == name && r["workload"] == workload && r["rate_pps"].is_null())
                .unwrap_or_else(|| panic!("no ratio {name} {workload}"));
            assert!(num(r, "mpps") > 0.0, "{r}");
            assert!(num(r, "total_cpu_s_per_mpkt") > 0.0, "{r}");
        }
    }
    for chart in [
        "throughput.svg",
        "cpu-per-packet.svg",
        "fixed-rate.svg",
        "rtt.svg",
    ] {
        assert!(
            chart_files.iter().any(|f| f == chart),
            "no {chart} in {chart_files:?}"
        );
    }
    for table in [
        "maximum rate, peers builtin",
        "maximum rate, peers dpdk-client",
        "maximum rate, peers dpdk-nic",
        "fixed offered rates",
        "ratios between modes",
        "round trip",
    ] {
        assert!(stdout.contains(table), "no {table:?} table in {stdout}");
    }
}
