//! Bad command lines fail with exit code 2 and a message that says what is wrong.

use std::process::Command;

fn twin(args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_twin"))
        .args(args)
        .output()
        .expect("run twin");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn bad_arguments_give_clear_errors() {
    let cases: &[(&[&str], &str)] = &[
        (
            &["switch", "--client", "/tmp/x.sock"],
            "expected NAME=SOCKET",
        ),
        (&["switch", "--client", "a=/x,colour=red"], "unknown option"),
        (&["switch", "--uplink", "u=/x,mode=warp"], "unknown mode"),
        (&["switch", "--client", "a=/x,mac=01:02"], "invalid MAC"),
        (
            &["nic", "--socket", "/tmp/n.sock", "--mode", "mirror"],
            "invalid value 'mirror'",
        ),
        (
            &["gen", "--socket", "/tmp/g.sock", "--size", "64"],
            "--duration",
        ),
        (
            &["switch", "--poll", "sometimes", "--client", "a=/x"],
            "unknown poll mode",
        ),
        (&["frobnicate"], "unrecognized subcommand"),
        // twin ctl checks its command before it calls any switch.
        (
            &["ctl", "--control", "/nonexistent", "reboot"],
            "unknown command",
        ),
        (
            &["ctl", "--control", "/nonexistent", "fault", "u0", "melt"],
            "unknown fault \"melt\" (known: kill, panic,",
        ),
        (
            &["ctl", "--control", "/nonexistent", "mode", "u0", "warp"],
            "unknown mode",
        ),
        (
            &["ctl", "--control", "/nonexistent", "revive"],
            "usage: revive UPLINK",
        ),
        (
            &["ctl", "--control", "/nonexistent", "mac", "c1", "02:00"],
            "is neither a MAC address nor none",
        ),
        (
            &["ctl", "--control", "/nonexistent", "mac", "c1"],
            "usage: mac PORT MAC|none",
        ),
    ];
    for (args, want) in cases {
        let (code, err) = twin(args);
        assert_eq!(
            code, 2,
            "twin {args:?} should fail with usage error, got {code}: {err}"
        );
        assert!(
            err.contains(want),
            "twin {args:?}: expected {want:?} in: {err}"
        );
    }
}

#[test]
fn invalid_configurations_are_rejected_before_starting() {
    let (code, err) = twin(&["switch"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("at least one --client or --uplink"), "{err}");
    let (code, err) = twin(&[
        "switch",
        "--client",
        "a=/tmp/a.sock",
        "--client",
        "a=/tmp/b.sock",
    ]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("used twice"), "{err}");
    let (code, err) = twin(&[
        "gen",
        "--socket",
        "/tmp/g.sock",
        "--size",
        "9000",
        "--duration",
        "1",
    ]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("size"), "{err}");
}

#[test]
fn nic_source_options_are_checked_before_starting() {
    let sock = std::env::temp_dir().join(format!("twin-args-src-{}.sock", std::process::id()));
    let s = sock.to_str().expect("utf-8 temp dir");
    for size in ["59", "1515"] {
        let (code, err) = twin(&["nic", "--socket", s, "--mode", "source", "--size", size]);
        assert_eq!(code, 1, "{err}");
        assert!(
            err.contains(&format!("frame size {size} B is outside 60..=1514")),
            "{err}"
        );
    }
    for extra in [
        &["--size", "64"][..],
        &["--rate", "1000"][..],
        &["--dst-mac", "02:00:00:00:00:01"][..],
    ] {
        let mut args = vec!["nic", "--socket", s, "--mode", "sink"];
        args.extend_from_slice(extra);
        let (code, err) = twin(&args);
        assert_eq!(code, 1, "{err}");
        assert!(err.contains("apply to --mode source only"), "{err}");
    }
    let (code, err) = twin(&[
        "nic",
        "--socket",
        s,
        "--mode",
        "source",
        "--dst-mac",
        "02:00",
    ]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("invalid MAC"), "{err}");
    // Nothing was started: no socket was created.
    assert!(!sock.exists());
}
