//! Ports added and removed while the switch runs (`twin ctl add`, `twin ctl
//! remove`), under traffic: c1 sends to c2 throughout, and c2 gets every frame,
//! exactly, while a client port and an uplink (with its driver domain) come and
//! go. Removing a port releases what it held: its socket file, its descriptors
//! (the switch's count goes back to what it was), its driver domain (the
//! process is gone). What may not be added is refused with a reason: a name or
//! a socket a live port has, a MAC another client owns.

mod common;

use std::time::Duration;

use common::*;
use serde_json::Value;

const C1: &str = "02:00:00:00:00:01";
const C2: &str = "02:00:00:00:00:02";
const C3: &str = "02:00:00:00:00:03";

fn fd_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// Waits until the switch `pid` holds `want` descriptors (threads of a removed
/// port close theirs as they end).
fn wait_fds(pid: u32, want: usize) {
    let start = std::time::Instant::now();
    while fd_count(pid) != want {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "the switch holds {} descriptors, not {want}",
            fd_count(pid)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn ports_come_and_go_under_traffic_without_a_lost_frame() {
    let _m = serial();
    let s = Scratch::new("runtime-ports");
    let (c1_s, c2_s, c3_s) = (s.path("c1.sock"), s.path("c2.sock"), s.path("c3.sock"));
    let (ctl, nic_s) = (s.path("ctl.sock"), s.path("nic.sock"));
    let mut sw = Proc::twin(
        "switch",
        &[
            "switch",
            "--client",
            &format!("c1={c1_s},mac={C1}"),
            "--client",
            &format!("c2={c2_s},mac={C2}"),
            "--poll",
            "event",
            "--control",
            &ctl,
        ],
    );
    wait_for_path(&ctl, Duration::from_secs(10));
    let sw_pid = sw.pid();
    let mut r2 = gen_event(&c2_s, C2, C1, "12", "0");
    wait_status(&ctl, Duration::from_secs(10), "c2 connected", |st| {
        n(st, "/clients/c2/connects") == 1
    });
    let mut g1 = gen_event(&c1_s, C1, C2, "6", "10000");
    wait_status(&ctl, Duration::from_secs(10), "c1 sending", |st| {
        n(st, "/clients/c2/tx_packets") > 1000
    });

    // A client port added under traffic, used, and removed.
    let fds = fd_count(sw_pid);
    ctl_ok(&ctl, &["add", "client", &format!("c3={c3_s},mac={C3}")]);
    wait_for_path(&c3_s, Duration::from_secs(5));
    let g3 = gen_event_with(&c3_s, C3, C2, "5", "5000", &["--count", "500"])
        .report(Duration::from_secs(20));
    assert_eq!(n(&g3, "/tx_packets"), 500);
    let st = ctl_status(&ctl);
    assert_eq!(n(&st, "/clients/c3/rx_packets"), 500, "{st}");
    ctl_ok(&ctl, &["remove", "c3"]);
    let st = ctl_status(&ctl);
    assert!(st.pointer("/clients/c3").is_none(), "c3 is gone: {st}");
    assert!(!std::path::Path::new(&c3_s).exists(), "its socket file too");
    wait_fds(sw_pid, fds);

    // Refusals, each with its reason; nothing changes.
    for (args, why) in [
        (
            vec![
                "add",
                "client",
                &*format!("c4={},mac={C1}", s.path("c4.sock")),
            ],
            "belongs to port c1",
        ),
        (vec!["add", "client", &*format!("c4={c2_s}")], "serves"),
        (
            vec!["add", "client", &*format!("c1={}", s.path("c5.sock"))],
            "a port named \"c1\" exists",
        ),
        (vec!["add", "uplink", "u9=/x,mode=warp"], "unknown mode"),
    ] {
        let (kind, message) = ctl_err(&ctl, &args);
        assert_eq!(kind, "rejected", "{args:?}: {message}");
        assert!(message.contains(why), "{args:?}: {message}");
    }
    let (kind, _) = ctl_err(&ctl, &["remove", "nobody"]);
    assert_eq!(kind, "no_such_port");

    // An uplink added (its driver domain starts) and removed (the domain ends).
    let mut nic = Proc::twin(
        "nic",
        &[
            "nic", "--socket", &nic_s, "--mode", "sink", "--poll", "event",
        ],
    );
    wait_for_path(&nic_s, Duration::from_secs(10));
    ctl_ok(&ctl, &["add", "uplink", &format!("u9={nic_s},mode=domain")]);
    let st = wait_status(&ctl, Duration::from_secs(20), "u9's domain up", |st| {
        st.pointer("/uplinks/u9/detail/connected") == Some(&Value::Bool(true))
    });
    let domain = n(&st, "/uplinks/u9/detail/driver/pid");
    assert!(std::path::Path::new(&format!("/proc/{domain}")).exists());
    ctl_ok(&ctl, &["remove", "u9"]);
    let start = std::time::Instant::now();
    while std::path::Path::new(&format!("/proc/{domain}/stat")).exists()
        && std::fs::read_to_string(format!("/proc/{domain}/stat"))
            .map(|s| !s.contains(") Z "))
            .unwrap_or(false)
    {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "u9's domain {domain} still runs"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(ctl_status(&ctl).pointer("/uplinks/u9").is_none());

    // c1's traffic went on throughout: c2 got every frame of c1 and c3.
    let g1 = g1.report(Duration::from_secs(30));
    let r2 = r2.report(Duration::from_secs(30));
    let sent = n(&g1, "/tx_packets");
    assert!(sent > 30_000, "c1 sent {sent}");
    assert_eq!(n(&r2, "/rx_packets"), sent + 500, "not a frame lost");
    let sw_r = sw.stop_report();
    assert_eq!(drops(&sw_r, "/clients/c1/drops"), 0);
    assert_eq!(n(&sw_r, "/clients/c2/tx_packets"), sent + 500);
    let _ = nic.stop();
}

/// `twin ctl mac`: a client's MAC pin changes while the switch runs. Frames from
/// the new address pass and from the old one are refused as spoofed; a MAC
/// another client owns is refused; `none` lifts the pin. Counters exact at each
/// step.
#[test]
fn a_clients_mac_changes_at_run_time() {
    const NEW: &str = "02:00:00:00:00:0a";
    let _m = serial();
    let s = Scratch::new("runtime-mac");
    let (c1_s, c2_s, ctl) = (s.path("c1.sock"), s.path("c2.sock"), s.path("ctl.sock"));
    let mut sw = Proc::twin(
        "switch",
        &[
            "switch",
            "--client",
            &format!("c1={c1_s},mac={C1}"),
            "--client",
            &format!("c2={c2_s},mac={C2}"),
            "--poll",
            "event",
            "--control",
            &ctl,
        ],
    );
    wait_for_path(&ctl, Duration::from_secs(10));
    let mut r2 = gen_event(&c2_s, C2, C1, "60", "0");
    wait_status(&ctl, Duration::from_secs(10), "c2 connected", |st| {
        n(st, "/clients/c2/connects") == 1
    });
    // 100 frames from c1 with source `src`, to c2; returns (delivered to c2,
    // refused as spoofed on c1) over that run.
    let send = |src: &str| -> (u64, u64) {
        let before = ctl_status(&ctl);
        let g = gen_event_with(&c1_s, src, C2, "5", "5000", &["--count", "100"])
            .report(Duration::from_secs(20));
        assert_eq!(n(&g, "/tx_packets"), 100);
        let after = wait_status(&ctl, Duration::from_secs(10), "c1's frames taken", |st| {
            n(st, "/clients/c1/rx_packets") == n(&before, "/clients/c1/rx_packets") + 100
        });
        let delta = |p: &str| n(&after, p) - n(&before, p);
        (
            delta("/clients/c2/tx_packets"),
            delta("/clients/c1/drops/spoofed_source"),
        )
    };

    assert_eq!(send(C1), (100, 0), "the configured MAC passes");
    assert_eq!(send(NEW), (0, 100), "another MAC is spoofed");
    ctl_ok(&ctl, &["mac", "c1", NEW]);
    assert_eq!(send(NEW), (100, 0), "the new MAC passes");
    assert_eq!(send(C1), (0, 100), "the old one is spoofed now");

    // Refusals: another client's MAC, no such client (what is not a MAC,
    // `twin ctl` refuses itself: cli_args.rs).
    let (kind, message) = ctl_err(&ctl, &["mac", "c1", C2]);
    assert_eq!(kind, "rejected", "{message}");
    assert!(message.contains("belongs to port c2"), "{message}");
    let (kind, _) = ctl_err(&ctl, &["mac", "c9", NEW]);
    assert_eq!(kind, "no_such_port");
    assert_eq!(send(NEW), (100, 0), "a refusal changed nothing");

    // No pin: any unicast source passes, and c1's old MAC is free for another.
    ctl_ok(&ctl, &["mac", "c1", "none"]);
    assert_eq!(send(C1), (100, 0));
    assert_eq!(send(C3), (100, 0));
    ctl_ok(&ctl, &["mac", "c2", NEW]);

    let _ = r2.stop();
    let sw_r = sw.stop_report();
    assert_eq!(n(&sw_r, "/clients/c1/rx_packets"), 700);
    assert_eq!(n(&sw_r, "/clients/c1/drops/spoofed_source"), 200);
}
