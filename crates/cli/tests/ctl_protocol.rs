//! The control protocol end to end (`switch::ctl`): a real `twin switch` with a
//! client port and an uplink (the built-in NIC, in domain mode), `twin ctl`, and a
//! raw client on the socket.
//!
//! * `status`: `{"ok":true,"result":REPORT}`, exit status 0;
//! * errors are typed and make `twin ctl` exit 1: an unknown uplink
//!   (`no_such_uplink`), a fault without `--fault-injection`
//!   (`fault_injection_disabled`); an unknown fault name never leaves `twin ctl`
//!   (exit status 2, the known names listed);
//! * `mode`: answered with the request, and carried out;
//! * a raw client sending garbage, an unknown command, an unknown fault, an unknown
//!   field, an oversize line, a stalled partial line, or nothing, gets its typed
//!   error (or nothing) and the switch keeps answering;
//! * no switch: exit status 2, nothing on stdout.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};

/// Sends `bytes` on a connection of its own (then shuts down its side unless
/// `stall`) and returns the response line, parsed.
fn raw(ctl: &str, bytes: &[u8], stall: bool) -> Value {
    let mut c = UnixStream::connect(ctl).expect("connect to the control socket");
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    // The switch may answer an oversize line before it read all of it.
    let _ = c.write_all(bytes);
    if !stall {
        let _ = c.shutdown(std::net::Shutdown::Write);
    }
    let mut line = String::new();
    BufReader::new(&c).read_line(&mut line).expect("a response");
    assert!(line.ends_with('\n'), "not a line: {line:?}");
    serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line:?}"))
}

/// The kind of an error response; fails on anything else.
fn error_kind(r: &Value) -> &str {
    assert_eq!(r["ok"], Value::Bool(false), "{r}");
    assert!(
        r.pointer("/error/message").is_some_and(Value::is_string),
        "{r}"
    );
    assert_eq!(r.as_object().map(|o| o.len()), Some(2), "{r}");
    str_at(r, "/error/kind")
}

#[test]
fn the_control_protocol_is_typed_json_end_to_end() {
    let _m = serial();
    let s = Scratch::new("ctl-protocol");
    let (nic_s, c1_s, ctl) = (s.path("nic.sock"), s.path("c1.sock"), s.path("ctl.sock"));
    let mut nic = Proc::twin(
        "nic",
        &[
            "nic", "--socket", &nic_s, "--mode", "sink", "--poll", "event",
        ],
    );
    wait_for_path(&nic_s, Duration::from_secs(10));
    let c1 = format!("c1={c1_s}");
    let up = format!("u0={nic_s},mode=domain");
    let mut sw = Proc::twin(
        "switch",
        &[
            "switch",
            "--client",
            &c1,
            "--uplink",
            &up,
            "--poll",
            "event",
            "--control",
            &ctl,
        ],
    );
    wait_for_path(&ctl, Duration::from_secs(10));
    wait_domain(&ctl, 0);

    // status: ok, the report as the result.
    let run = ctl_run(&ctl, &["status"]);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert_eq!(run.response["ok"], Value::Bool(true));
    let report = &run.response["result"];
    assert_eq!(n(report, "/clients/c1/connects"), 0, "{report}");
    assert_eq!(maybe_str(report, "/uplinks/u0/detail/mode"), Some("domain"));

    // An unknown uplink: a typed error, exit status 1.
    for args in [&["mode", "u9", "twin"][..], &["revive", "c1"]] {
        let run = ctl_run(&ctl, args);
        assert_eq!(run.code, Some(1), "{args:?}");
        assert_eq!(error_kind(&run.response), "no_such_uplink", "{args:?}");
        assert!(run.stderr.contains("no_such_uplink"), "{}", run.stderr);
    }
    let (kind, message) = ctl_err(&ctl, &["fault", "u0", "kill"]);
    assert_eq!(kind, "fault_injection_disabled", "{message}");
    // An unknown fault is refused by twin ctl itself, naming the known ones.
    let run = ctl_run(&ctl, &["fault", "u0", "melt"]);
    assert_eq!((run.code, &run.response), (Some(2), &Value::Null));
    assert!(
        run.stderr.contains("unknown fault \"melt\"") && run.stderr.contains("twin-wild-write"),
        "{}",
        run.stderr
    );

    // A mode change: answered with the request, and carried out.
    let done = ctl_ok(&ctl, &["mode", "u0", "twin"]);
    assert_eq!(
        done,
        json!({"command": "mode", "uplink": "u0", "mode": "twin"})
    );
    wait_status(&ctl, Duration::from_secs(20), "fast path twin", |st| {
        fast_path(st) == Some("twin")
    });

    // A raw client: each mistake gets its typed error; the switch goes on.
    let oversize = format!(
        "{{\"command\":\"status\",\"pad\":\"{}\"}}\n",
        "x".repeat(5000)
    );
    let cases: [(&[u8], &str); 7] = [
        (b"garbage\n", "malformed_json"),
        (b"\xff\xfe\n", "malformed_json"),
        (b"{\"command\":\"reboot\"}\n", "unknown_command"),
        (
            b"{\"command\":\"fault\",\"uplink\":\"u0\",\"fault\":\"melt\"}\n",
            "unknown_fault",
        ),
        (
            b"{\"command\":\"status\",\"verbose\":true}\n",
            "bad_request",
        ),
        (b"\n", "bad_request"),
        (oversize.as_bytes(), "request_too_large"),
    ];
    for (bytes, kind) in cases {
        let r = raw(&ctl, bytes, false);
        assert_eq!(error_kind(&r), kind, "{}", String::from_utf8_lossy(bytes));
        assert!(ctl_status(&ctl).get("uplinks").is_some());
    }
    // A client that stops mid-line is answered after the switch's 2 s.
    let t = Instant::now();
    let r = raw(&ctl, b"{\"command\":", true);
    assert_eq!(error_kind(&r), "request_timeout");
    let waited = t.elapsed();
    assert!(
        waited >= Duration::from_millis(1500) && waited < Duration::from_secs(8),
        "{waited:?}"
    );
    // One that hangs up without a word, then a raw request done right.
    drop(UnixStream::connect(&ctl).unwrap());
    let r = raw(&ctl, b"{\"command\":\"status\"}\n", false);
    assert_eq!(r["ok"], Value::Bool(true), "{r}");
    assert_eq!(
        maybe_str(&r, "/result/uplinks/u0/detail/mode"),
        Some("twin")
    );

    sw.stop();
    nic.stop();
    // No switch: nothing on stdout, exit status 2, a message on stderr.
    let run = ctl_run(&ctl, &["status"]);
    assert_eq!((run.code, &run.response), (Some(2), &Value::Null));
    assert!(
        run.stderr.contains("cannot reach the switch"),
        "{}",
        run.stderr
    );
}
