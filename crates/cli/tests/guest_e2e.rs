//! Linux guests as clients: QEMU (TCG) virtual machines with the Linux virtio_net
//! driver attached to the switch over vhost-user, in every uplink mode.
//!
//! Each test runs `scripts/guest-e2e.sh MODE` (or, for the TAP uplink,
//! `scripts/guest-kernel.sh`) with this build's `twin` binary: two
//! guests ping each other and run iperf3 through the switch, reach the reflecting
//! NIC behind the uplink, keep their links while the uplink's driver domain is
//! killed and restarted, and get their ports back after a reboot, a new QEMU and a
//! switch restart (the script's header lists every check). The script installs
//! nothing itself but the guest (kernel package and initramfs, cached under
//! `target/guest`); a missing QEMU or kernel is a failure with the reason, never a
//! skip (`scripts/setup-host.sh` installs them).

mod common;

use std::fs::File;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{serial, Scratch};

/// Longer than the script's own limit per mode (480 s) plus building the guest.
const TIMEOUT: Duration = Duration::from_secs(900);

fn run(mode: &str) {
    run_script("scripts/guest-e2e.sh", &[mode]);
}

/// Runs `script ARGS` (a guest script of this repository) with this build's twin
/// and fails with its failed checks when it does not exit 0 in time.
fn run_script(script: &str, args: &[&str]) {
    let _m = serial();
    let mode = args.first().copied().unwrap_or("tap");
    let scratch = Scratch::new(&format!("guest-{mode}"));
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let log_path = scratch.0.join("guest-e2e.log");
    let log = File::create(&log_path).expect("create the log");
    let mut child = Command::new("bash")
        .arg(root.join(script))
        .args(args)
        .current_dir(&root)
        .env("TWIN_BIN", env!("CARGO_BIN_EXE_twin"))
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("clone the log"))
        .stderr(log)
        .spawn()
        .unwrap_or_else(|e| panic!("start {script}: {e}"));
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait for the guest script") {
            break Some(s);
        }
        if start.elapsed() > TIMEOUT {
            // SIGTERM lets the script stop its guests and switch and clean up.
            if let Some(pid) = rustix::process::Pid::from_raw(child.id() as i32) {
                let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
            }
            let stop = Instant::now();
            while stop.elapsed() < Duration::from_secs(30) {
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(200));
            }
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    let out = std::fs::read_to_string(&log_path).unwrap_or_default();
    // The timeline and the summary (shown by cargo test on failure, or with
    // --nocapture).
    println!("{out}");
    // The failed checks go into the panic message too: a CI log that shows only
    // the end of a long output still says what failed.
    let failed = failures(&out);
    match status {
        Some(s) => assert!(
            s.success(),
            "{script} {mode} failed ({s}); its output is above. Failed:\n{failed}"
        ),
        None => panic!(
            "{script} {mode} did not finish within {TIMEOUT:?}; its output is above. Failed:\n{failed}"
        ),
    }
}

/// The script's summary lines that did not pass and its own `FAIL:` lines, at most
/// 20 of them.
fn failures(out: &str) -> String {
    let lines: Vec<&str> = out
        .lines()
        .filter(|l| {
            let t = l.trim_start();
            t.starts_with("FAIL ")
                || t.starts_with("guest-e2e: FAIL")
                || t.starts_with("guest-kernel")
        })
        .take(20)
        .collect();
    if lines.is_empty() {
        "(no failed check in the output)".to_string()
    } else {
        lines.join("\n")
    }
}

#[test]
fn linux_guests_through_an_inline_uplink() {
    run("inline");
}

#[test]
fn linux_guests_through_a_domain_uplink() {
    run("domain");
}

#[test]
fn linux_guests_through_a_twin_uplink() {
    run("twin");
}

/// A guest reaches the host's own kernel through a TAP uplink
/// (`scripts/guest-kernel.sh`: ping and iperf3 both ways with the host, a domain
/// kill during pings, the switch's counters against the kernel's).
#[test]
fn a_linux_guest_through_a_tap_uplink() {
    run_script("scripts/guest-kernel.sh", &["tap"]);
}

/// The same through an AF_PACKET uplink on a veth pair, the host on the other
/// end.
#[test]
fn a_linux_guest_through_a_packet_uplink() {
    run_script("scripts/guest-kernel.sh", &["packet"]);
}

/// The same with the AF_PACKET driver's fast path running in the switch as a
/// twin (checked through the SVM).
#[test]
fn a_linux_guest_through_a_packet_uplink_in_twin_mode() {
    run_script("scripts/guest-kernel.sh", &["packet", "twin"]);
}

/// The same with the fast path inline in the switch (unchecked).
#[test]
fn a_linux_guest_through_a_packet_uplink_in_inline_mode() {
    run_script("scripts/guest-kernel.sh", &["packet", "inline"]);
}

/// The same through an AF_XDP uplink (queue 0, generic mode) on a veth pair.
#[test]
fn a_linux_guest_through_an_xdp_uplink() {
    run_script("scripts/guest-kernel.sh", &["xdp"]);
}

/// The same with the AF_XDP driver's fast path running in the switch as a twin
/// (checked through the SVM); the domain kill still needs a new domain, which
/// brings the new socket.
#[test]
fn a_linux_guest_through_an_xdp_uplink_in_twin_mode() {
    run_script("scripts/guest-kernel.sh", &["xdp", "twin"]);
}

/// The same with the fast path inline in the switch (unchecked).
#[test]
fn a_linux_guest_through_an_xdp_uplink_in_inline_mode() {
    run_script("scripts/guest-kernel.sh", &["xdp", "inline"]);
}
