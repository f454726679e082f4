//! `twin switch --config FILE`: a TOML file gives the same options as the flags
//! (ports, control socket, metrics, limits, polling), the flags override it, and a
//! bad file stops the switch before it starts with the line and the key.

mod common;

use std::time::Duration;

use common::*;

#[test]
fn a_config_file_starts_the_switch_and_flags_override_it() {
    let _m = serial();
    let s = Scratch::new("config");
    let (c1_s, c2_s) = (s.path("c1.sock"), s.path("c2.sock"));
    let (file_ctl, flag_ctl) = (s.path("file-ctl.sock"), s.path("flag-ctl.sock"));
    let m_s = s.path("metrics.sock");
    let file = s.path("switch.toml");
    std::fs::write(
        &file,
        format!(
            "# a VM host's switch\n\
             poll = \"busy\"\n\
             fdb-capacity = 128\n\
             control = \"{file_ctl}\"\n\
             metrics = \"unix:{m_s}\"\n\
             client = [\"c1={c1_s},mac=02:00:00:00:00:01\"]\n"
        ),
    )
    .unwrap();
    // The command line adds c2, moves the control socket and polls by events.
    let mut sw = Proc::twin(
        "switch",
        &[
            "switch",
            "--config",
            &file,
            "--client",
            &format!("c2={c2_s}"),
            "--control",
            &flag_ctl,
            "--poll",
            "event",
        ],
    );
    wait_for_path(&flag_ctl, Duration::from_secs(10));
    wait_for_path(&m_s, Duration::from_secs(10));
    assert!(
        !std::path::Path::new(&file_ctl).exists(),
        "the flag's control socket, not the file's"
    );
    let st = ctl_status(&flag_ctl);
    assert!(st.pointer("/clients/c1").is_some(), "the file's port: {st}");
    assert!(st.pointer("/clients/c2").is_some(), "the flag's port: {st}");
    let sw_r = sw.stop_report();
    assert_eq!(n(&sw_r, "/clients/c1/rx_packets"), 0);
}

#[test]
fn a_bad_config_file_names_the_line_and_the_key() {
    let s = Scratch::new("config-bad");
    let file = s.path("switch.toml");
    for (text, want) in [
        (
            "poll = \"event\"\nfdb-max-agee = 3\n",
            ["line 2", "fdb-max-agee"],
        ),
        (
            "client = [\"c1=/tmp/c1.sock\"]\nuplink = [\"u0=packet:eth0,mode=warp\"]\n",
            ["line 2", "unknown mode"],
        ),
        ("fdb-capacity = \"lots\"\n", ["line 1", "fdb-capacity"]),
    ] {
        std::fs::write(&file, text).unwrap();
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_twin"))
            .args(["switch", "--config", &file])
            .output()
            .expect("run twin");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{err}");
        for w in want {
            assert!(err.contains(w), "{w:?} not in: {err}");
        }
    }
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_twin"))
        .args(["switch", "--config", &s.path("missing.toml")])
        .output()
        .expect("run twin");
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read the configuration file"));
}
