//! The systemd unit in `contrib/systemd` is one systemd accepts: `systemd-analyze
//! verify` reads it (with `ExecStart` pointing at the binary under test, since
//! the unit names the installed path) and has nothing to say. A copy with a
//! mistyped key shows the check can fail. The unit is not started: the test
//! machines have no systemd as init.

use std::path::{Path, PathBuf};
use std::process::Command;

const INSTALLED: &str = "/usr/local/bin/twin";

/// `systemd-analyze verify` of `unit` (a file name ending in `.service`): its
/// exit status and what it printed.
fn verify(unit: &Path) -> (bool, String) {
    let out = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(unit)
        .output()
        .expect("run systemd-analyze (package systemd)");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

#[test]
fn the_service_unit_is_one_systemd_accepts() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let unit = std::fs::read_to_string(root.join("contrib/systemd/twin-switch.service"))
        .expect("read the unit");
    assert!(
        unit.contains(&format!("ExecStart={INSTALLED} switch --config ")),
        "the unit starts the installed binary with a config file"
    );
    let dir = std::env::temp_dir().join(format!("twin-unit-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("scratch directory");
    let here = unit.replace(INSTALLED, env!("CARGO_BIN_EXE_twin"));

    let good = dir.join("twin-switch.service");
    std::fs::write(&good, &here).expect("write the unit");
    let (ok, said) = verify(&good);
    assert!(
        ok && said.trim().is_empty(),
        "systemd-analyze verify: {said}"
    );

    let bad = dir.join("twin-switch-typo.service");
    std::fs::write(&bad, here.replace("ProtectHome=", "ProtectHomes=")).expect("write");
    let (_, said) = verify(&bad);
    assert!(
        said.contains("Unknown key 'ProtectHomes'"),
        "a mistyped key went unnoticed: {said}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
