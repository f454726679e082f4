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
