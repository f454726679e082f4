//! Attacks on the switch's isolation by real processes: the test process plays a
//! hostile vhost-user client against the real `twin switch` binary.
//!
//! * Descriptor leak: a client's memory (a memfd) and eventfds must never reach a
//!   driver domain, nor may anything the switch's own parent left open. Before the
//!   fix, a domain restarted while a client was attached held the client's
//!   guest-RAM memfd read-write and four of its eventfds.
//! * Stalled control connection: a client that sends part of a message and stops
//!   must be dropped after `READ_TIMEOUT`, and must never keep the switch from
//!   stopping. Before the fix, neither happened until the client closed.

mod common;

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

/// The switch's deadline for a message (`vhost_device::control::READ_TIMEOUT`).
const READ_TIMEOUT: Duration = Duration::from_secs(5);

/// What a driver domain's descriptors above stdio may be.
const DOMAIN_FDS: &[&str] = &[
    "socket:[",
    "anon_inode:[eventfd]",
    "anon_inode:[eventpoll]",
    "/memfd:twin-dd-u0 ",
    "/memfd:twin-xchg-u0 ",
];

/// Every descriptor of `pid` as `(fd, link target)`.
fn fds(pid: u32) -> Vec<(String, String)> {
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return Vec::new();
    };
    let mut out: Vec<(String, String)> = dir
        .flatten()
        .map(|e| {
            let target = std::fs::read_link(e.path())
                .map(|t| t.to_string_lossy().into_owned())
                .unwrap_or_default();
            (e.file_name().to_string_lossy().into_owned(), target)
        })
        .collect();
    out.sort();
    out
}

#[test]
fn driver_domains_hold_only_the_descriptors_the_switch_hands_them() {
    let _m = serial();
    let s = Scratch::new("attack-fds");
    let (nic_s, c1_s, ctl_s) = (s.path("nic.sock"), s.path("c1.sock"), s.path("ctl.sock"));
    let marker = s.path("launching-shell-secret");
    std::fs::write(&marker, "not for driver domains").unwrap();

    let mut nic = Proc::twin(
        "nic",
        &[
            "nic", "--socket", &nic_s, "--mode", "sink", "--poll", "event",
        ],
    );
    wait_for_path(&nic_s, Duration::from_secs(10));
    // The switch is started by a shell that leaves a file open on descriptor 7
    // without close-on-exec, as a careless launcher would.
    let mut cmd = Command::new("bash");
    cmd.args(["-c", "exec 7<\"$0\"; exec \"$@\"", &marker])
        .arg(env!("CARGO_BIN_EXE_twin"))
        .args(["switch", "--client", &format!("c1={c1_s}")])
        .args(["--uplink", &format!("u0={nic_s},mode=domain")])
        .args(["--poll", "event", "--control", &ctl_s, "--fault-injection"])
        .env("TWIN_LOG", "info");
    let mut sw = Proc::command("switch", cmd);
    wait_for_path(&ctl_s, Duration::from_secs(10));
    assert!(
        fds(sw.pid()).iter().any(|(_, t)| t == &marker),
        "the switch did not inherit the launcher's descriptor; the test proves nothing"
    );
    let mut pid = wait_domain(&ctl_s, 0);

    // The attacker's client: its whole memory is one memfd, plus kick and call
    // eventfds for both queues, all handed to the switch.
    let client = connect_raw(&c1_s, 64, 1 << 20);
    let client_mem = "twin-raw-frontend";
    let start = Instant::now();
    while !maps_contain(sw.pid(), client_mem) {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "the switch never mapped the client's memory; the test proves nothing"
        );
        std::thread::sleep(Duration::from_millis(10));
    }

    for restart in 1..=3 {
        ctl_ok(&ctl_s, &["fault", "u0", "kill"]);
        pid = wait_domain(&ctl_s, pid);
        // The reaper (the switch's child) and the worker (its child, PID 1 of its
        // own pid namespace).
        let domain = descendants(sw.pid());
        assert_eq!(
            domain.len(),
            2,
            "restart {restart}: domain processes {domain:?}"
        );
        for p in domain {
            let held = fds(p);
            let eventfds = held.iter().filter(|(_, t)| t.contains("[eventfd]")).count();
            assert!(
                !maps_contain(p, client_mem),
                "restart {restart}: driver-domain process {p} maps the client's memory"
            );
            // Never root outside, and a bounded address space.
            let status = std::fs::read_to_string(format!("/proc/{p}/status")).unwrap();
            let uid = status
                .lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .and_then(|l| l.split_whitespace().next())
                .and_then(|u| u.parse::<u32>().ok())
                .expect("a Uid line");
            assert_ne!(
                uid, 0,
                "restart {restart}: process {p} runs as root outside"
            );
            let limits = std::fs::read_to_string(format!("/proc/{p}/limits")).unwrap();
            assert!(
                limits
                    .lines()
                    .any(|l| l.starts_with("Max address space") && l.contains("1073741824")),
                "restart {restart}: process {p} has no 1 GiB address-space limit:\n{limits}"
            );
            for (fd, target) in &held {
                assert!(
                    !target.contains(client_mem),
                    "restart {restart}: driver-domain process {p} holds the client's \
                     memory on fd {fd}: {held:?}"
                );
                assert!(
                    target != &marker,
                    "restart {restart}: driver-domain process {p} holds the launcher's \
                     file on fd {fd}: {held:?}"
                );
            }
            // Beyond stdio, only what the switch hands over (the bootstrap and NIC
            // sockets, the two regions, eventfds) and what the domain makes itself.
            let above_stdio = || {
                held.iter()
                    .filter(|(fd, _)| !["0", "1", "2"].contains(&fd.as_str()))
            };
            // One end of the sandbox's own pipe between reaper and worker.
            let pipes = above_stdio()
                .filter(|(_, t)| t.starts_with("pipe:["))
                .count();
            assert!(
                pipes <= 1,
                "restart {restart}: process {p} holds {pipes} pipes: {held:?}"
            );
            for (fd, target) in above_stdio().filter(|(_, t)| !t.starts_with("pipe:[")) {
                assert!(
                    DOMAIN_FDS.iter().any(|k| target.starts_with(k)),
                    "restart {restart}: process {p} holds fd {fd} ({target}), which the \
                     switch never handed it: {held:?}"
                );
            }
            // The switch hands a domain six eventfds: kick and call of the NIC's two
            // queues and two doorbells. The client's four would make ten.
            assert!(
                eventfds <= 6,
                "restart {restart}: process {p} holds {eventfds} eventfds: {held:?}"
            );
        }
    }
    assert!(client.is_connected(), "the client was disconnected");
    assert!(sw.running(), "the switch died");
    drop(client);
    sw.stop();
    nic.stop();
}

/// The thread ids of `pid` named `name`.
fn threads_named(pid: u32, name: &str) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    dir.flatten()
        .filter(|t| std::fs::read_to_string(t.path().join("comm")).is_ok_and(|c| c.trim() == name))
        .filter_map(|t| t.file_name().to_str()?.parse().ok())
        .collect()
}

/// Waits until the switch's control thread is blocked inside `recvmsg` (system
/// call 47 on x86_64), i.e. reading the rest of a message.
fn wait_control_thread_in_recvmsg(pid: u32) {
    let start = Instant::now();
    loop {
        let blocked = threads_named(pid, "vhost-ctl").iter().any(|t| {
            std::fs::read_to_string(format!("/proc/{pid}/task/{t}/syscall"))
                .is_ok_and(|s| s.split_whitespace().next() == Some("47"))
        });
        if blocked {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "the control thread never started reading the message"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn a_client_stalled_mid_message_is_dropped_and_cannot_block_shutdown() {
    let _m = serial();
    let s = Scratch::new("attack-stall");
    let c1_s = s.path("c1.sock");
    let mut sw = Proc::twin(
        "switch",
        &[
            "switch",
            "--client",
            &format!("c1={c1_s}"),
            "--poll",
            "event",
        ],
    );
    wait_for_path(&c1_s, Duration::from_secs(10));

    // Four bytes of a twelve-byte header, then nothing.
    let mut stalled = UnixStream::connect(&c1_s).expect("connect");
    stalled.write_all(&1u32.to_ne_bytes()).unwrap(); // GET_FEATURES, no more
    wait_control_thread_in_recvmsg(sw.pid());
    let t0 = Instant::now();
    stalled
        .set_read_timeout(Some(READ_TIMEOUT * 3))
        .expect("timeout");
    let mut b = [0u8; 1];
    let got = stalled.read(&mut b);
    assert!(
        matches!(got, Ok(0)),
        "the switch did not hang up on the stalled client within {:?} ({got:?})",
        READ_TIMEOUT * 3
    );
    assert!(
        t0.elapsed() >= READ_TIMEOUT - Duration::from_millis(500),
        "dropped after {:?}, before the deadline",
        t0.elapsed()
    );
    assert!(sw.running(), "the switch died");

    // The port listens again; another stalled client must not hold up SIGINT. The
    // switch has to stop well before the stall deadline would free it.
    let mut again = UnixStream::connect(&c1_s).expect("reconnect");
    again.write_all(&1u32.to_ne_bytes()).unwrap();
    wait_control_thread_in_recvmsg(sw.pid());
    let t1 = Instant::now();
    let (status, _) = sw.stop();
    assert!(status.success(), "the switch failed to stop: {status}");
    assert!(
        t1.elapsed() < READ_TIMEOUT - Duration::from_secs(1),
        "stopping took {:?}: the stalled client held the switch",
        t1.elapsed()
    );
}

/// Runs `twin switch` with a client port and `extra` arguments and waits for `ctl`.
fn switch_with_control(s: &Scratch, ctl: &str, extra: &[&str]) -> Proc {
    let c1 = format!("c1={}", s.path("c1.sock"));
    let mut args = vec![
        "switch",
        "--client",
        &c1,
        "--poll",
        "event",
        "--control",
        ctl,
    ];
    args.extend_from_slice(extra);
    let sw = Proc::twin("switch", &args);
    wait_for_path(ctl, Duration::from_secs(10));
    sw
}

#[test]
fn the_control_socket_is_private_checks_its_peer_and_injects_no_fault_unless_allowed() {
    use std::os::unix::fs::PermissionsExt;
    let _m = serial();
    let s = Scratch::new("attack-ctl");
    let ctl = s.path("ctl.sock");

    // Anything but a stale socket at the path is left alone.
    std::fs::write(&ctl, "an operator's file").unwrap();
    let mut sw = Proc::twin(
        "switch",
        &[
            "switch",
            "--client",
            &format!("c1={}", s.path("c1.sock")),
            "--control",
            &ctl,
        ],
    );
    let (status, _) = sw.wait_exit(Duration::from_secs(10));
    assert!(
        !status.success(),
        "the switch replaced a regular file with its socket"
    );
    assert_eq!(std::fs::read_to_string(&ctl).unwrap(), "an operator's file");
    std::fs::remove_file(&ctl).unwrap();

    // Private from the start, and no fault injection unless asked for.
    let mut sw = switch_with_control(&s, &ctl, &[]);
    let mode = std::fs::metadata(&ctl).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "control socket mode {mode:o}");
    let (kind, message) = ctl_err(&ctl, &["fault", "u0", "kill"]);
    assert_eq!(kind, "fault_injection_disabled", "{message}");
    assert!(ctl_status(&ctl).get("clients").is_some(), "status refused");

    // A second switch must not take over a live control socket.
    let mut other = Proc::twin(
        "switch2",
        &[
            "switch",
            "--client",
            &format!("c2={}", s.path("c2.sock")),
            "--control",
            &ctl,
        ],
    );
    let (status, _) = other.wait_exit(Duration::from_secs(10));
    assert!(
        !status.success(),
        "a second switch replaced a live control socket"
    );
    assert!(
        ctl_status(&ctl).get("clients").is_some(),
        "the first switch lost its socket"
    );
    sw.stop();

    // A peer whose uid is not allowed is refused even when the file mode lets it
    // in (here: the test runs as root, and only uid 4242 is allowed).
    let mut sw = switch_with_control(&s, &ctl, &["--control-uid", "4242"]);
    let (kind, message) = ctl_err(&ctl, &["status"]);
    assert_eq!(kind, "permission_denied", "{message}");
    sw.stop();
}

#[test]
fn an_uplink_that_spent_its_restart_budget_is_revived_from_the_control_socket() {
    let _m = serial();
    let s = Scratch::new("attack-budget");
    let (nic_s, c1_s, ctl_s) = (s.path("nic.sock"), s.path("c1.sock"), s.path("ctl.sock"));
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
            &ctl_s,
            "--fault-injection",
            "--restart-budget",
            "2",
        ],
    );
    wait_for_path(&ctl_s, Duration::from_secs(10));
    // A domain that keeps dying (as a hostile NIC can make it) spends the budget:
    // two restarts are allowed, the third failure gives up.
    let mut pid = wait_domain(&ctl_s, 0);
    for _ in 0..2 {
        ctl_ok(&ctl_s, &["fault", "u0", "kill"]);
        pid = wait_domain(&ctl_s, pid);
    }
    ctl_ok(&ctl_s, &["fault", "u0", "kill"]);
    let st = wait_status(&ctl_s, Duration::from_secs(10), "given up", |s| {
        s.pointer("/uplinks/u0/detail/gave_up") == Some(&Value::Bool(true))
    });
    assert_eq!(
        st.pointer("/uplinks/u0/detail/connected"),
        Some(&Value::Bool(false))
    );
    // A client port is not an uplink.
    assert_eq!(ctl_err(&ctl_s, &["revive", "c1"]).0, "no_such_uplink");

    ctl_ok(&ctl_s, &["revive", "u0"]);
    let new_pid = wait_domain(&ctl_s, pid);
    assert_ne!(new_pid, pid);
    let st = ctl_status(&ctl_s);
    assert_eq!(
        st.pointer("/uplinks/u0/detail/gave_up"),
        Some(&Value::Bool(false))
    );
    // Reviving an uplink that is up is refused.
    let (kind, message) = ctl_err(&ctl_s, &["revive", "u0"]);
    assert_eq!(kind, "rejected", "{message}");
    assert!(message.contains("has not given up"), "{message}");
    sw.stop();
    nic.stop();
}

#[test]
fn what_a_driver_domain_writes_is_relayed_quoted_never_as_the_switchs_own_lines() {
    let _m = serial();
    let s = Scratch::new("attack-stderr");
    let (nic_s, c1_s, ctl_s) = (s.path("nic.sock"), s.path("c1.sock"), s.path("ctl.sock"));
    let mut nic = Proc::twin(
        "nic",
        &[
            "nic", "--socket", &nic_s, "--mode", "sink", "--poll", "event",
        ],
    );
    wait_for_path(&nic_s, Duration::from_secs(10));
    let c1 = format!("c1={c1_s}");
    let up = format!("u0={nic_s},mode=domain");
    let mut sw = Proc::twin_capturing(
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
            &ctl_s,
            "--fault-injection",
        ],
    );
    wait_for_path(&ctl_s, Duration::from_secs(10));
    let pid = wait_domain(&ctl_s, 0);
    // The domain panics: the panic message goes to its stderr.
    ctl_ok(&ctl_s, &["fault", "u0", "panic"]);
    wait_domain(&ctl_s, pid);
    sw.wait_for_output("driver domain wrote to stderr", Duration::from_secs(10));
    sw.stop();
    nic.stop();
    let out = sw.output();
    let relayed: Vec<&str> = out
        .lines()
        .filter(|l| l.contains("driver domain wrote to stderr"))
        .collect();
    assert!(
        relayed.iter().any(|l| l.contains("injected fault")),
        "the panic message was not relayed: {relayed:?}"
    );
    // Every line of the switch's stderr is the switch's own: a log line with a
    // timestamp and level, or its JSON report.
    for l in out.lines() {
        assert!(
            l.starts_with("20") || l.starts_with('{'),
            "a line the switch did not write: {l:?}"
        );
    }
}
