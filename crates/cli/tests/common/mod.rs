//! Shared harness of the end-to-end tests: starts real processes (`twin` subcommands
//! and DPDK `dpdk-testpmd`), stops them with SIGINT, and reads their counters.
//!
//! Every process is owned by a guard that interrupts, then kills, and reaps it when
//! dropped, so a failing assertion leaves nothing running. Only processes started
//! here are ever signalled, by their own PID.

#![allow(dead_code)] // each test binary uses a different part of the harness

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde_json::Value;

mod flow;
mod netns;
mod raw;
mod testpmd_nic;

// Each test binary uses a different part of the harness (as `dead_code` above).
#[allow(unused_imports)]
pub use flow::{assert_c1_accounted, c1_drops, kill9, wait_flow, FLOW};
#[allow(unused_imports)]
pub use netns::{ip, quiet, Netns};
#[allow(unused_imports)]
pub use raw::{connect_raw, connect_wire, retry, CONNECT_TIMEOUT};
#[allow(unused_imports)]
pub use testpmd_nic::TestpmdNic;

/// End-to-end tests busy-poll; on two cores they must not overlap.
static SERIAL: Mutex<()> = Mutex::new(());

/// Takes the machine for one test.
pub fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// A scratch directory removed at the end of the test.
pub struct Scratch(pub PathBuf);

impl Scratch {
    pub fn new(tag: &str) -> Scratch {
        let d = std::env::temp_dir().join(format!("twin-test-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).expect("create scratch dir");
        Scratch(d)
    }

    pub fn path(&self, name: &str) -> String {
        self.0.join(name).to_string_lossy().into_owned()
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A running child process.
pub struct Proc {
    pub name: String,
    child: Option<Child>,
    stdout: Arc<Mutex<String>>,
    reader: Option<std::thread::JoinHandle<()>>,
    hugepage_prefix: Option<String>,
}

fn sigint(child: &Child) {
    if let Some(pid) = rustix::process::Pid::from_raw(child.id() as i32) {
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::INT);
    }
}

impl Proc {
    /// Starts `cmd`; with `capture_stderr`, its stderr is collected with stdout (DPDK
    /// logs its vhost events there), else it goes to the test's stderr.
    fn spawn(name: &str, mut cmd: Command, capture_stderr: bool) -> Proc {
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(if capture_stderr {
                Stdio::piped()
            } else {
                Stdio::inherit()
            })
            // testpmd exits at end of input: hold its stdin open.
            .stdin(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        let stdout = Arc::new(Mutex::new(String::new()));
        let sink = Arc::clone(&stdout);
        let so = child.stdout.take().expect("piped stdout");
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(so).lines().map_while(Result::ok) {
                let mut s = sink.lock().unwrap_or_else(|e| e.into_inner());
                s.push_str(&line);
                s.push('\n');
            }
        });
        if let Some(se) = child.stderr.take() {
            let sink = Arc::clone(&stdout);
            std::thread::spawn(move || {
                for line in BufReader::new(se).lines().map_while(Result::ok) {
                    let mut s = sink.lock().unwrap_or_else(|e| e.into_inner());
                    s.push_str(&line);
                    s.push('\n');
                }
            });
        }
        Proc {
            name: name.to_string(),
            child: Some(child),
            stdout,
            reader: Some(reader),
            hugepage_prefix: None,
        }
    }

    /// What the process printed so far.
    pub fn output(&self) -> String {
        self.stdout
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Waits until the process has printed `needle`.
    pub fn wait_for_output(&self, needle: &str, timeout: Duration) {
        let start = Instant::now();
        while !self.output().contains(needle) {
            assert!(
                start.elapsed() < timeout,
                "{} did not print {needle:?} within {timeout:?}; it printed:\n{}",
                self.name,
                self.output()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// testpmd as a NIC: waits until our driver is attached and testpmd forwards.
    /// Traffic must not start before: testpmd drains its receive queues (twice, one
    /// ring each) when it starts forwarding and counts nothing it drained there, so
    /// frames sent before are acknowledged to our driver and never counted (the
    /// "1024 frames" of two full 512-descriptor rings).
    pub fn wait_testpmd_forwarding(&self, timeout: Duration) {
        self.wait_for_output("virtio is now ready for processing", timeout);
        self.wait_for_output("Press enter to exit", timeout);
    }

    /// Starts an arbitrary command as a harnessed process (its stderr goes to the
    /// test's).
    pub fn command(name: &str, cmd: Command) -> Proc {
        Proc::spawn(name, cmd, false)
    }

    /// Starts `twin ARGS...` with its stderr collected with its stdout
    /// ([`Proc::output`]).
    pub fn twin_capturing(name: &str, args: &[&str]) -> Proc {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_twin"));
        cmd.args(args).env("TWIN_LOG", "info").env("NO_COLOR", "1");
        Proc::spawn(name, cmd, true)
    }

    /// Starts `twin ARGS...`.
    pub fn twin(name: &str, args: &[&str]) -> Proc {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_twin"));
        cmd.args(args).env("TWIN_LOG", "info");
        Proc::spawn(name, cmd, false)
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// Process ids of its children (for example the switch's driver domains).
    pub fn children(&self) -> Vec<u32> {
        let mut out = Vec::new();
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{}/task", self.pid())) else {
            return out;
        };
        for t in tasks.flatten() {
            if let Ok(s) = std::fs::read_to_string(t.path().join("children")) {
                out.extend(s.split_whitespace().filter_map(|p| p.parse::<u32>().ok()));
            }
        }
        out
    }

    /// Whether it is still running.
    pub fn running(&mut self) -> bool {
        matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }

    /// Sends SIGKILL (a crash, as far as its peers can tell).
    pub fn kill9(&mut self) {
        if let Some(c) = self.child.as_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Waits for the process to exit by itself and returns its stdout.
    pub fn wait_exit(&mut self, timeout: Duration) -> (std::process::ExitStatus, String) {
        let mut child = self.child.take().expect("process already reaped");
        let start = Instant::now();
        let status = loop {
            if let Some(s) = child.try_wait().expect("try_wait") {
                break s;
            }
            if start.elapsed() > timeout {
                sigint(&child);
                std::thread::sleep(Duration::from_millis(500));
                let _ = child.kill();
                let _ = child.wait();
                panic!("{} did not exit within {timeout:?}", self.name);
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
        self.cleanup_hugepages();
        (status, self.output())
    }

    /// Sends SIGINT and waits for the exit.
    pub fn stop(&mut self) -> (std::process::ExitStatus, String) {
        if let Some(c) = self.child.as_ref() {
            sigint(c);
        }
        self.wait_exit(Duration::from_secs(15))
    }

    /// Sends SIGINT, waits, and parses the final JSON line of stdout.
    pub fn stop_report(&mut self) -> Value {
        let (status, out) = self.stop();
        assert!(
            status.success(),
            "{} failed ({status}); stdout: {out}",
            self.name
        );
        last_json(&self.name, &out)
    }

    /// Waits for a process that ends by itself (the generator) and parses its report.
    pub fn report(&mut self, timeout: Duration) -> Value {
        let (status, out) = self.wait_exit(timeout);
        assert!(
            status.success(),
            "{} failed ({status}); stdout: {out}",
            self.name
        );
        last_json(&self.name, &out)
    }

    fn cleanup_hugepages(&self) {
        if let Some(prefix) = &self.hugepage_prefix {
            if let Ok(dir) = std::fs::read_dir("/dev/hugepages") {
                for e in dir.flatten() {
                    if e.file_name().to_string_lossy().starts_with(prefix.as_str()) {
                        let _ = std::fs::remove_file(e.path());
                    }
                }
            }
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            if let Ok(None) = c.try_wait() {
                sigint(&c);
                let start = Instant::now();
                while start.elapsed() < Duration::from_secs(3) {
                    if let Ok(Some(_)) = c.try_wait() {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
                let _ = c.kill();
            }
            let _ = c.wait();
        }
        self.cleanup_hugepages();
    }
}

/// An event-driven `twin gen` of 64-byte frames from `src` to `dst` at `rate` pps
/// for `secs` seconds.
pub fn gen_event(sock: &str, src: &str, dst: &str, secs: &str, rate: &str) -> Proc {
    gen_event_with(sock, src, dst, secs, rate, &[])
}

/// [`gen_event`] with `extra` arguments (`--id`, `--count`, `--digest`, ...).
pub fn gen_event_with(
    sock: &str,
    src: &str,
    dst: &str,
    secs: &str,
    rate: &str,
    extra: &[&str],
) -> Proc {
    let mut args = vec![
        "gen",
        "--socket",
        sock,
        "--size",
        "64",
        "--rate",
        rate,
        "--duration",
        secs,
        "--src-mac",
        src,
        "--dst-mac",
        dst,
        "--poll",
        "event",
    ];
    args.extend_from_slice(extra);
    Proc::twin("gen", &args)
}

/// The last line of `out` that parses as a JSON object.
pub fn last_json(name: &str, out: &str) -> Value {
    out.lines()
        .rev()
        .find_map(|l| {
            serde_json::from_str::<Value>(l)
                .ok()
                .filter(|v| v.is_object())
        })
        .unwrap_or_else(|| panic!("{name} printed no JSON report; stdout: {out:?}"))
}

/// Reads an unsigned counter by JSON pointer (for example `/clients/c1/rx_packets`).
pub fn n(v: &Value, pointer: &str) -> u64 {
    v.pointer(pointer)
        .and_then(Value::as_u64)
        .unwrap_or_else(|| panic!("no counter {pointer} in {v}"))
}

/// Sum of all drop counters under `pointer` (an object of reason -> count, which
/// every report lists in full, zeros included). Fails when the object is missing
/// or a value is not a counter.
pub fn drops(v: &Value, pointer: &str) -> u64 {
    let m = v
        .pointer(pointer)
        .and_then(Value::as_object)
        .unwrap_or_else(|| panic!("no drop counters {pointer} in {v}"));
    m.iter()
        .map(|(k, c)| {
            c.as_u64()
                .unwrap_or_else(|| panic!("drop counter {pointer}/{k} is not a count: {c}"))
        })
        .sum()
}

/// Waits until a socket file exists.
pub fn wait_for_path(p: &str, timeout: Duration) {
    let start = Instant::now();
    while !Path::new(p).exists() {
        assert!(
            start.elapsed() < timeout,
            "{p} did not appear within {timeout:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Fails the test, loudly, when DPDK's testpmd is not installed.
pub fn require_testpmd() {
    let ok = Command::new("dpdk-testpmd")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok();
    assert!(
        ok,
        "dpdk-testpmd is not installed: run scripts/setup-host.sh (apt-get install dpdk-dev) \
         and reserve hugepages; this test does not skip"
    );
}

/// The most frames that can be on their way from the switch to its NIC at one
/// moment (counted by the switch as sent to the uplink, not yet taken by the NIC),
/// with the uplink's fast path in `mode`: the driver's transmit queue, plus, in
/// `domain` mode, the exchange ring from the switch to the driver domain.
///
/// A test that stops the switch while the NIC is behind loses these: DPDK's
/// testpmd, starved of CPU on a loaded two-core machine, stops taking frames when
/// the switch disconnects. (Alone, on an idle machine, testpmd keeps up and nothing
/// is in flight.) Frames sent back by the NIC are not subject to this: testpmd
/// counts what our receive ring could not take as `TX-dropped`.
///
/// The "1024 frames" testpmd once reported missing, in `domain` and in `inline`
/// mode, were not these: traffic had started before testpmd started forwarding,
/// and testpmd drains its receive queue twice when it starts (one full ring each
/// time) without counting what it drained, while our driver sees every one of
/// those buffers completed. Tests now start traffic only once testpmd forwards
/// ([`Proc::wait_testpmd_forwarding`]).
pub fn in_flight_to_nic_max(mode: &str) -> u64 {
    let queue = u64::from(driver_host::DriverConfig::default().queue_size);
    match mode {
        "domain" => queue + u64::from(switch::port::uplink::EXCHANGE_SLOTS),
        "inline" | "twin" => queue,
        other => panic!("unknown uplink mode {other}"),
    }
}

/// Asserts that testpmd, the NIC of an uplink in `mode`, received `got` of the
/// `sent` frames the switch queued to it: all of them but at most the ones in
/// flight when the switch stopped ([`in_flight_to_nic_max`]).
pub fn assert_testpmd_received(got: u64, sent: u64, mode: &str) {
    let max = in_flight_to_nic_max(mode);
    assert!(
        got <= sent && sent - got <= max,
        "testpmd received {got} of the {sent} frames sent to it ({mode}: at most {max} \
         may be in flight at the stop)"
    );
}

/// DPDK testpmd's per-port counters, parsed from its exit statistics.
#[derive(Debug, Default, Clone, Copy)]
pub struct TestpmdStats {
    pub rx_packets: u64,
    pub rx_dropped: u64,
    pub tx_packets: u64,
    pub tx_dropped: u64,
}

fn field(line: &str, key: &str) -> Option<u64> {
    let i = line.find(key)? + key.len();
    line[i..].split_whitespace().next()?.parse().ok()
}

/// Parses "Forward statistics for port 0" from testpmd's stdout.
pub fn parse_testpmd(out: &str, port: u32) -> TestpmdStats {
    let marker = format!("Forward statistics for port {port} ");
    let mut lines = out.lines().skip_while(|l| !l.contains(&marker));
    assert!(
        lines.next().is_some(),
        "no statistics for port {port} in testpmd output:\n{out}"
    );
    let rx = lines.next().unwrap_or_default();
    let tx = lines.next().unwrap_or_default();
    TestpmdStats {
        rx_packets: field(rx, "RX-packets:").expect("RX-packets"),
        rx_dropped: field(rx, "RX-dropped:").expect("RX-dropped"),
        tx_packets: field(tx, "TX-packets:").expect("TX-packets"),
        tx_dropped: field(tx, "TX-dropped:").expect("TX-dropped"),
    }
}

/// Starts testpmd. `vdev` is the full `--vdev` value, `fwd` the testpmd arguments
/// after `--`. Returns once testpmd reports that forwarding started.
pub fn testpmd(tag: &str, main_lcore: u32, vdev: &str, fwd: &[&str]) -> Proc {
    require_testpmd();
    let prefix = format!("twt{tag}{}", std::process::id());
    // Line-buffered: "Press enter to exit" is printed, not flushed, before testpmd
    // waits on its stdin.
    let mut cmd = Command::new("stdbuf");
    cmd.args([
        "-oL",
        "dpdk-testpmd",
        "-l",
        "0,1",
        "--main-lcore",
        &main_lcore.to_string(),
        "--no-pci",
        "--single-file-segments",
        "--file-prefix",
        &prefix,
        "-m",
        "512",
        "--vdev",
        vdev,
        "--",
        "--auto-start",
        // Forward at once, before any frontend connects: with the link check,
        // forwarding starts only once the link is up, and its first act drains
        // the receive queue uncounted (see `wait_testpmd_forwarding`).
        "--disable-link-check",
        "--nb-cores=1",
        "--total-num-mbufs=16384",
    ])
    .args(fwd);
    let mut p = Proc::spawn(&format!("testpmd-{tag}"), cmd, true);
    p.hugepage_prefix = Some(prefix);
    p
}

/// An event-driven `twin gen` that sends exactly `count` 64-byte frames from `src`
/// to `dst` at `rate` pps (at most `secs` seconds), with generator id `id`; with
/// `digest`, its report has `rx_digest`.
#[allow(clippy::too_many_arguments)]
pub fn gen_exact(
    sock: &str,
    src: &str,
    dst: &str,
    id: &str,
    count: &str,
    rate: &str,
    secs: &str,
    digest: bool,
) -> Proc {
    let mut extra = vec!["--count", count, "--id", id];
    if digest {
        extra.push("--digest");
    }
    gen_event_with(sock, src, dst, secs, rate, &extra)
}

/// An event-driven built-in NIC in reflect mode on `sock`; with `digest`, its report
/// has `rx_digest`.
pub fn nic_reflect(sock: &str, digest: bool) -> Proc {
    let mut args = vec![
        "nic", "--socket", sock, "--mode", "reflect", "--poll", "event",
    ];
    if digest {
        args.push("--digest");
    }
    Proc::twin("nic", &args)
}

/// The accounting of a generator on client port c1 whose frames go out through
/// uplink u0 to a reflecting NIC and come back, hop by hop, from the three final
/// reports: c1's port took every frame sent; each went to the uplink or found its
/// ring full; the NIC got what the switch handed it and the switch what the NIC
/// sent; c1 got what the switch delivered; and every frame that did not come back
/// is counted as a drop somewhere (switch or NIC). Every frame that came back is the
/// generator's own, with its addresses swapped.
pub fn assert_reflected_round_trip(g: &Value, sw_r: &Value, nic_r: &Value) {
    let sent = n(g, "/tx_packets");
    // Client -> switch.
    assert_eq!(n(sw_r, "/clients/c1/rx_packets"), sent);
    // Switch -> NIC: every frame the client sent went to the uplink, or found its
    // transmit ring full (counted on the uplink).
    assert_eq!(
        n(sw_r, "/uplinks/u0/tx_packets") + n(sw_r, "/uplinks/u0/drops/uplink_ring_full"),
        sent
    );
    assert_eq!(n(nic_r, "/rx_packets"), n(sw_r, "/uplinks/u0/tx_packets"));
    // NIC -> switch -> client.
    assert_eq!(n(sw_r, "/uplinks/u0/rx_packets"), n(nic_r, "/tx_packets"));
    assert_eq!(n(g, "/rx_packets"), n(sw_r, "/clients/c1/tx_packets"));
    let counted = drops(sw_r, "/drops") + drops(nic_r, "/rx_drops") + drops(nic_r, "/tx_drops");
    assert_eq!(
        n(g, "/rx_packets") + counted,
        sent,
        "frames lost on the round trip without a count"
    );
    assert_eq!(n(g, "/rx_own_swapped"), n(g, "/rx_packets"));
}

/// What one `twin ctl` run did.
#[derive(Debug)]
pub struct CtlRun {
    /// Its exit status.
    pub code: Option<i32>,
    /// The response it printed (`Value::Null` when it printed none).
    pub response: Value,
    /// Its standard error.
    pub stderr: String,
}

/// Runs `twin ctl --control SOCK ARGS...`, checking its contract on the way: one
/// JSON response line on stdout, exit status 0 exactly when the response is ok and
/// 1 when it is an error; nothing on stdout and exit status 2 when the switch could
/// not be reached.
pub fn ctl_run(sock: &str, args: &[&str]) -> CtlRun {
    let out = Command::new(env!("CARGO_BIN_EXE_twin"))
        .args(["ctl", "--control", sock])
        .args(args)
        .output()
        .expect("run twin ctl");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    let code = out.status.code();
    if stdout.is_empty() {
        assert_eq!(code, Some(2), "twin ctl {args:?} printed nothing: {stderr}");
        return CtlRun {
            code,
            response: Value::Null,
            stderr,
        };
    }
    assert_eq!(
        stdout.matches('\n').count(),
        1,
        "twin ctl {args:?}: not one line: {stdout:?}"
    );
    let response: Value = serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("twin ctl {args:?}: not JSON ({e}): {stdout:?}"));
    let ok = match response.get("ok") {
        Some(Value::Bool(ok)) => *ok,
        _ => panic!("twin ctl {args:?}: no ok in {response}"),
    };
    assert_eq!(
        code,
        Some(if ok { 0 } else { 1 }),
        "twin ctl {args:?}: exit status for {response} ({stderr})"
    );
    CtlRun {
        code,
        response,
        stderr,
    }
}

/// Runs `twin ctl --control SOCK ARGS...` and returns the response (`Value::Null`
/// when the switch could not be reached).
pub fn ctl_answer(sock: &str, args: &[&str]) -> Value {
    ctl_run(sock, args).response
}

/// Runs a `twin ctl` command that must succeed and returns its result.
pub fn ctl_ok(sock: &str, args: &[&str]) -> Value {
    let r = ctl_answer(sock, args);
    assert_eq!(r["ok"], Value::Bool(true), "twin ctl {args:?} answered {r}");
    r.get("result")
        .cloned()
        .unwrap_or_else(|| panic!("twin ctl {args:?}: no result in {r}"))
}

/// Runs a `twin ctl` command that must be refused and returns the error's kind
/// and message.
pub fn ctl_err(sock: &str, args: &[&str]) -> (String, String) {
    let r = ctl_answer(sock, args);
    assert_eq!(
        r["ok"],
        Value::Bool(false),
        "twin ctl {args:?} answered {r}"
    );
    (
        str_at(&r, "/error/kind").to_string(),
        str_at(&r, "/error/message").to_string(),
    )
}

/// The switch's live report (the result of `twin ctl ... status`).
pub fn ctl_status(sock: &str) -> Value {
    ctl_ok(sock, &["status"])
}

/// Polls the switch's status until `pred` holds and returns that status; fails
/// after `timeout`, naming `what` and showing the last status.
pub fn wait_status(
    sock: &str,
    timeout: Duration,
    what: &str,
    pred: impl Fn(&Value) -> bool,
) -> Value {
    let start = Instant::now();
    loop {
        let s = ctl_status(sock);
        if pred(&s) {
            return s;
        }
        assert!(
            start.elapsed() < timeout,
            "not {what} within {timeout:?}; last status: {s}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Waits until uplink u0 is connected with a driver domain other than `not` (0:
/// any); returns its pid.
pub fn wait_domain(ctl: &str, not: u64) -> u64 {
    let s = wait_status(ctl, Duration::from_secs(20), "a new driver domain", |s| {
        s.pointer("/uplinks/u0/detail/connected") == Some(&Value::Bool(true))
            && s.pointer("/uplinks/u0/detail/driver/pid")
                .and_then(Value::as_u64)
                .is_some_and(|p| p != not)
    });
    n(&s, "/uplinks/u0/detail/driver/pid")
}

/// A string by JSON pointer; fails when it is missing or not a string.
pub fn str_at<'a>(v: &'a Value, pointer: &str) -> &'a str {
    v.pointer(pointer)
        .and_then(Value::as_str)
        .unwrap_or_else(|| panic!("no string {pointer} in {v}"))
}

/// A string by JSON pointer that is legitimately absent at times (for example
/// the driver's fast path while no driver domain is connected): `None` then.
pub fn maybe_str<'a>(v: &'a Value, pointer: &str) -> Option<&'a str> {
    v.pointer(pointer).and_then(Value::as_str)
}

/// An array by JSON pointer; fails when it is missing or not an array.
pub fn array(v: &Value, pointer: &str) -> Vec<Value> {
    v.pointer(pointer)
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_else(|| panic!("no array {pointer} in {v}"))
}

/// uplink u0's outage records (oldest first).
pub fn outages(st: &Value) -> Vec<Value> {
    array(st, "/uplinks/u0/detail/outages")
}

/// Where u0's fast path runs ("inline", "domain", "twin"); `None` while no
/// driver domain is connected.
pub fn fast_path(st: &Value) -> Option<&str> {
    maybe_str(st, "/uplinks/u0/detail/driver/fast_path")
}

/// The switch's own drop reasons (`switch::counters::DropReason`) but `uplink_ring_full`
/// (nothing can be queued to an uplink that is down), from the switch itself, so
/// a reason added there is counted here too.
pub fn switch_drops_but_ring_full() -> Vec<&'static str> {
    use switch::counters::DropReason;
    DropReason::ALL
        .iter()
        .filter(|d| **d != DropReason::UplinkRingFull)
        .map(|d| d.as_str())
        .collect()
}

/// uplink u0's driver domain (its reaper's pid); `None` while none is connected.
pub fn driver_pid(st: &Value) -> Option<u64> {
    st.pointer("/uplinks/u0/detail/driver/pid")
        .and_then(Value::as_u64)
}

/// Process ids of `pid`'s children.
pub fn children_of(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return out;
    };
    for t in tasks.flatten() {
        if let Ok(s) = std::fs::read_to_string(t.path().join("children")) {
            out.extend(s.split_whitespace().filter_map(|p| p.parse::<u32>().ok()));
        }
    }
    out
}

/// Process ids of every descendant of `pid` (children, their children, ...).
pub fn descendants(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    let mut todo = children_of(pid);
    while let Some(p) = todo.pop() {
        if !out.contains(&p) {
            todo.extend(children_of(p));
            out.push(p);
        }
    }
    out
}

/// Whether a line of `/proc/PID/maps` contains `needle` (a memfd shows as
/// `/memfd:NAME (deleted)`).
pub fn maps_contain(pid: u32, needle: &str) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/maps"))
        .map(|m| m.lines().any(|l| l.contains(needle)))
        .unwrap_or(false)
}
