//! A short run of `scripts/bench-kernel.sh` for every kind it measures (one
//! 1-second run at 64 B each): the benchmark behind the kernel-uplink rows of
//! `docs/evaluation.md` keeps working, its peers (`dpdk-testpmd`, `trafgen`)
//! are installed, and each row it prints is a measurement: frames arrived in
//! the kernel, and the processes that moved them used CPU time. It asserts no
//! speed.

mod common;

use std::path::PathBuf;
use std::process::Command;

use common::serial;

/// A median line's numbers: Mpps, Gbit/s, forwarder and domain CPU-s/Mpkt.
#[derive(Debug)]
struct Row {
    mpps: f64,
    forwarder: f64,
    domain: f64,
}

/// Runs the script for `kind` with `env` and reads its 64 B median line.
fn bench(kind: &str, env: &[(&str, &str)]) -> Row {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let out = Command::new("bash")
        .arg(root.join("scripts/bench-kernel.sh"))
        .args([kind, "1", "1", "64"])
        .current_dir(&root)
        .env("TWIN_BIN", env!("CARGO_BIN_EXE_twin"))
        .envs(env.iter().copied())
        .output()
        .unwrap_or_else(|e| panic!("run bench-kernel.sh {kind}: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "bench-kernel.sh {kind} failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    let line = stdout
        .lines()
        .find(|l| l.contains("median of 1:"))
        .unwrap_or_else(|| panic!("no median line for {kind}:\n{stdout}\n{stderr}"));
    // "KIND    64 B  median of 1: M Mpps, G Gbit/s; CPU-s/Mpkt forwarder F, domain D"
    let nums: Vec<f64> = line
        .split_once("median of 1:")
        .expect("median")
        .1
        .split(|c: char| !(c.is_ascii_digit() || c == '.'))
        .filter_map(|t| t.parse().ok())
        .collect();
    match nums[..] {
        [mpps, _gbit, forwarder, domain] => Row {
            mpps,
            forwarder,
            domain,
        },
        _ => panic!("cannot read {line:?}"),
    }
}

#[test]
fn every_kernel_kind_and_peer_of_the_benchmark_measures_frames_and_cpu() {
    let _m = serial();
    // (kind, XDP_MODE, whether a driver domain moves the frames)
    let cells = [
        ("tap", "generic", true),
        ("packet", "generic", true),
        ("packet-twin", "generic", false),
        ("packet-inline", "generic", false),
        ("xdp", "generic", true),
        ("xdp", "native", true),
        ("xdp-twin", "generic", false),
        ("xdp-inline", "generic", false),
        ("testpmd-packet", "generic", false),
        ("testpmd-xdp", "generic", false),
        ("kernel-bridge", "generic", false),
        ("trafgen-direct", "generic", false),
    ];
    for (kind, xdp_mode, domain) in cells {
        let row = bench(kind, &[("XDP_MODE", xdp_mode)]);
        assert!(
            row.mpps > 0.0,
            "{kind} ({xdp_mode}): no frame arrived: {row:?}"
        );
        assert!(
            row.forwarder > 0.0,
            "{kind} ({xdp_mode}): the forwarder's CPU time was not measured: {row:?}"
        );
        if domain {
            assert!(
                row.domain > 0.0,
                "{kind} ({xdp_mode}): the domain's CPU time was not measured: {row:?}"
            );
        }
    }
}
