//! `twin bench --quick` runs every built-in mode and reports every metric it has.
//! (A smoke test of the benchmark's plumbing: it asserts no speed.)

use std::process::Command;

use serde_json::Value;

#[test]
fn bench_quick_reports_every_mode() {
    let dir = std::env::temp_dir().join(format!("twin-bench-quick-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let json = dir.join("out.json");
    let out = Command::new(env!("CARGO_BIN_EXE_twin"))
        .args(["bench", "--quick", "--json"])
        .arg(&json)
        .output()
        .expect("run twin bench");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "twin bench failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let doc: Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    let cells = doc["cells"].as_array().expect("cells");
    let f = |c: &Value, k: &str| c[k].as_f64().unwrap_or(-1.0);
    for path in ["native", "inline", "domain", "twin"] {
        for size in [64, 1500] {
            let c = cells
                .iter()
                .find(|c| c["path"] == path && c["size"] == size)
                .unwrap_or_else(|| panic!("no cell {path} {size} in {stdout}"));
            assert!(f(c, "mpps") > 0.0, "{path} {size}: {c}");
            assert!(f(c, "gbps") > 0.0, "{path} {size}: {c}");
            assert!(f(c, "cpu_s_per_mpkt") > 0.0, "{path} {size}: {c}");
            if path != "native" {
                assert!(f(c, "datapath_cpu_s_per_mpkt") > 0.0, "{path} {size}: {c}");
            }
        }
        let r = doc["rtt"]
            .as_array()
            .and_then(|r| r.iter().find(|r| r["path"] == path))
            .unwrap_or_else(|| panic!("no rtt for {path} in {stdout}"));
        let p = |k: &str| r[k].as_f64().unwrap_or(-1.0);
        assert!(p("rtt_p50_us") > 0.0, "{r}");
        assert!(p("rtt_p50_us") <= p("rtt_p99_us"), "{r}");
        assert!(p("rtt_p99_us") <= p("rtt_p999_us"), "{r}");
    }
}
