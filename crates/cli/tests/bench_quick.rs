//! `twin bench --quick --json` runs every built-in mode and workload and reports
//! every metric of the documented schema (docs/evaluation.md, "JSON schema").
//! A smoke test of the benchmark's plumbing: it asserts no speed, only that each
//! number was measured (non-zero where a run cannot honestly produce zero).

use std::process::Command;

use serde_json::Value;

const MODES: [&str; 4] = ["native", "inline", "domain", "twin"];
const WORKLOADS: [&str; 3] = ["transmit", "receive", "roundtrip"];
const SIZES: [u64; 2] = [64, 1500];

fn num(v: &Value, k: &str) -> f64 {
    v[k].as_f64().unwrap_or(-1.0)
}

#[test]
fn bench_quick_reports_every_mode_workload_and_metric() {
    let dir = std::env::temp_dir().join(format!("twin-bench-quick-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let json = dir.join("out.json");
    let charts = dir.join("charts");
    let out = Command::new(env!("CARGO_BIN_EXE_twin"))
        .args(["bench", "--quick", "--json"])
        .arg(&json)
        .arg("--charts")
        .arg(&charts)
        .output()
        .expect("run twin bench");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "twin bench failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
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
    for mode in MODES {
        for workload in WORKLOADS {
            for size in SIZES {
                let c = cells
                    .iter()
                    .find(|c| {
                        c["mode"] == mode
                            && c["workload"] == workload
                            && c["size"] == size
                            && c["rate_pps"].is_null()
                    })
                    .unwrap_or_else(|| panic!("no cell {mode} {workload} {size} in {stdout}"));
                assert_eq!(c["client"], "builtin");
                assert_eq!(c["nic"], "builtin");
                assert!(num(c, "mpps") > 0.0, "{c}");
                assert!(num(c, "gbps") > 0.0, "{c}");
                assert!(num(c, "total_cpu_s_per_mpkt") > 0.0, "{c}");
                let roles = &c["cpu_s_per_mpkt"];
                for role in ["client", "nic"] {
                    assert!(num(roles, role) >= 0.0, "{role} missing: {c}");
                }
                if mode != "native" {
                    assert!(num(roles, "switch") >= 0.0, "switch missing: {c}");
                    assert!(num(roles, "domain") >= 0.0, "domain missing: {c}");
                    assert!(num(c, "datapath_cpu_s_per_mpkt") > 0.0, "{c}");
                }
            }
        }
        // Fixed offered rates: transmit, event-driven, delivered more than nothing.
        let fixed: Vec<&Value> = cells
            .iter()
            .filter(|c| c["mode"] == mode && !c["rate_pps"].is_null())
            .collect();
        assert!(
            fixed.len() >= 2 * SIZES.len(),
            "{mode}: fixed-rate cells {fixed:?}"
        );
        for c in fixed {
            assert_eq!(c["poll"], "event", "{c}");
            assert!(num(c, "mpps") > 0.0, "{c}");
        }
        let r = doc["rtt"]
            .as_array()
            .and_then(|r| r.iter().find(|r| r["mode"] == mode))
            .unwrap_or_else(|| panic!("no rtt for {mode} in {stdout}"));
        assert!(num(r, "rtt_p50_us") > 0.0, "{r}");
        assert!(num(r, "rtt_p50_us") <= num(r, "rtt_p99_us"), "{r}");
        assert!(num(r, "rtt_p99_us") <= num(r, "rtt_p999_us"), "{r}");
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
        "fixed offered rates",
        "ratios between modes",
        "round trip",
    ] {
        assert!(stdout.contains(table), "no {table:?} table in {stdout}");
    }
}
