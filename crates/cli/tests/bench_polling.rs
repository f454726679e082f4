//! A short run of `scripts/bench-polling.sh` (one 1-second run per poll mode):
//! the benchmark behind the poll-mode rows of `docs/evaluation.md` keeps working,
//! and each row it prints is a measurement: frames went out at full rate and at
//! the fixed rate and came back through the switch, the uplink's twin and the
//! NIC. It asserts no speed and no CPU share (`e2e_adaptive.rs` bounds the idle
//! cost of the default).

mod common;

use std::path::PathBuf;
use std::process::Command;

use common::serial;

#[test]
fn the_poll_mode_benchmark_measures_every_mode() {
    let _m = serial();
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let out = Command::new("bash")
        .arg(root.join("scripts/bench-polling.sh"))
        .args(["1", "1"])
        .current_dir(&root)
        .env("TWIN_BIN", env!("CARGO_BIN_EXE_twin"))
        .output()
        .expect("run bench-polling.sh");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "bench-polling.sh failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    for mode in ["busy", "event", "adaptive"] {
        let line = stdout
            .lines()
            .find(|l| l.starts_with(mode) && l.contains("median of 1:"))
            .unwrap_or_else(|| panic!("no median line for {mode}:\n{stdout}\n{stderr}"));
        // "... full rate M Mpps, back F %; R pps back X %"
        let number_after = |key: &str| -> f64 {
            let rest = line
                .split_once(key)
                .unwrap_or_else(|| panic!("no {key:?} in {line:?}"))
                .1;
            rest.split_whitespace()
                .next()
                .and_then(|t| t.trim_end_matches([',', ';', '%']).parse().ok())
                .unwrap_or_else(|| panic!("no number after {key:?} in {line:?}"))
        };
        assert!(
            number_after("full rate ") > 0.0,
            "{mode}: nothing sent: {line}"
        );
        assert!(
            number_after("Mpps, back ") > 0.0,
            "{mode}: nothing came back: {line}"
        );
        assert!(
            number_after("pps back ") > 0.0,
            "{mode}: nothing came back: {line}"
        );
    }
}
