//! The host check (`scripts/check-host.sh`, the first step of the test command after
//! set-up): every external program a test runs must come from a package that
//! `scripts/setup-host.sh` installs itself. These tests show that it passes on this
//! machine and that it fails, naming the program and the package, in each way the
//! lists can go wrong, including the one that once hid behind a green CI:
//! `dpdk-testpmd` owned by `dpdk-dev` while set-up installed only `dpdk`.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::Scratch;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Runs `scripts/check-host.sh` with optional replacements of its two inputs.
fn check(setup: Option<&Path>, programs: Option<&Path>) -> (i32, String, String) {
    let mut cmd = Command::new("bash");
    cmd.arg(repo().join("scripts/check-host.sh"));
    if let Some(s) = setup {
        cmd.env("TWIN_SETUP_HOST", s);
    }
    if let Some(p) = programs {
        cmd.env("TWIN_HOST_PROGRAMS", p);
    }
    let out = cmd.output().expect("run scripts/check-host.sh");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A copy of `file` with every line for which `keep` is false left out; panics when
/// nothing was left out, so a renamed entry cannot make a test vacuous.
fn without(scratch: &Scratch, file: &str, name: &str, keep: impl Fn(&str) -> bool) -> PathBuf {
    let text = std::fs::read_to_string(repo().join(file)).expect("read the original");
    let kept: Vec<&str> = text.lines().filter(|l| keep(l)).collect();
    assert!(
        kept.len() < text.lines().count(),
        "{file}: nothing to leave out; the test no longer matches the file"
    );
    let path = scratch.0.join(name);
    std::fs::write(&path, kept.join("\n") + "\n").expect("write the copy");
    path
}

#[test]
fn every_program_the_tests_run_comes_from_a_package_setup_installs() {
    let (code, out, err) = check(None, None);
    assert_eq!(code, 0, "check-host failed on this machine:\n{err}");
    assert!(out.contains("check-host: ok"), "no ok line: {out}");
}

#[test]
fn setup_installing_dpdk_instead_of_dpdk_dev_fails_naming_testpmd_and_its_package() {
    let scratch = Scratch::new("host-check-setup");
    // The old mistake: the package list says `dpdk`, the machine has `dpdk-dev`.
    let text = std::fs::read_to_string(repo().join("scripts/setup-host.sh")).unwrap();
    let doctored: String = text
        .lines()
        .map(|l| {
            if l.trim_start().starts_with("dpdk-dev") {
                "  dpdk".to_string()
            } else {
                l.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    assert_ne!(
        doctored.trim_end(),
        text.trim_end(),
        "no dpdk-dev line in setup-host.sh"
    );
    let setup = scratch.0.join("setup-host.sh");
    std::fs::write(&setup, doctored).unwrap();

    let (code, _, err) = check(Some(&setup), None);
    assert_eq!(
        code, 1,
        "the check passed without dpdk-dev in set-up:\n{err}"
    );
    let line = err
        .lines()
        .find(|l| l.contains("dpdk-testpmd"))
        .unwrap_or_else(|| panic!("no line names dpdk-testpmd:\n{err}"));
    assert!(
        line.contains("package dpdk-dev") && line.contains("does not install"),
        "the line does not name the package set-up lacks: {line}"
    );
}

#[test]
fn a_program_the_rust_code_runs_but_nobody_declared_fails_the_check() {
    let scratch = Scratch::new("host-check-programs");
    let programs = without(&scratch, "scripts/host-programs", "host-programs", |l| {
        !l.starts_with("dpdk-testpmd ")
    });
    let (code, _, err) = check(None, Some(&programs));
    assert_eq!(code, 1, "an undeclared dpdk-testpmd passed:\n{err}");
    assert!(
        err.contains("dpdk-testpmd is run by the Rust code") && err.contains("not declared"),
        "no message about the undeclared program:\n{err}"
    );
}

#[test]
fn a_script_cannot_require_an_undeclared_program() {
    let lib = repo().join("scripts/lib/programs.sh");
    let script = format!(
        ". '{}'; require_programs jq twin-no-such-program; echo unreachable",
        lib.display()
    );
    let out = Command::new("bash").args(["-c", &script]).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "stderr: {err}");
    assert!(
        err.contains("'twin-no-such-program' is not declared in scripts/host-programs"),
        "stderr: {err}"
    );
    assert!(!String::from_utf8_lossy(&out.stdout).contains("unreachable"));
}
