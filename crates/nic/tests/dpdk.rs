//! End-to-end tests against a real DPDK client (`dpdk-testpmd` with
//! `net_virtio_user`). They FAIL (never skip) when dpdk-testpmd or hugepages are
//! missing: run `scripts/setup-host.sh` first.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use soft_nic::{Mode, NicConfig, NicReport};

/// testpmd child, stopped with SIGINT (by its own PID) when dropped.
struct Testpmd {
    child: Option<Child>,
    prefix: String,
}

impl Testpmd {
    fn start(sock: &Path, prefix: &str, fwd: &str, pkt_len: usize) -> Testpmd {
        let out = Command::new("dpdk-testpmd").arg("--version").output();
        assert!(
            out.is_ok(),
            "dpdk-testpmd is missing: install DPDK with scripts/setup-host.sh (apt-get install dpdk-dev)"
        );
        let huge = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let free = huge
            .lines()
            .find(|l| l.starts_with("HugePages_Free:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0);
        assert!(
            free >= 256,
            "only {free} free 2 MiB hugepages (need 256): run scripts/setup-host.sh"
        );
        let mut cmd = Command::new("dpdk-testpmd");
        cmd.args([
            "-l",
            "0,1",
            "--main-lcore",
            "1",
            "--no-pci",
            "--single-file-segments",
        ])
        .arg(format!("--file-prefix={prefix}"))
        .arg("--vdev")
        .arg(format!("net_virtio_user0,path={},queues=1", sock.display()))
        .args(["-m", "512", "--"])
        .arg(format!("--forward-mode={fwd}"))
        .args(["--auto-start", "--stats-period", "1", "--nb-cores=1"])
        .arg(format!("--txpkts={pkt_len}"))
        .arg("--total-num-mbufs=16384")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
        if fwd == "macswap" || fwd == "io" {
            cmd.args(["--port-topology=loop", "--tx-first"]);
        }
        let child = cmd.spawn().expect("cannot start dpdk-testpmd");
        Testpmd {
            child: Some(child),
            prefix: prefix.to_string(),
        }
    }

    /// SIGINT, wait, return stdout+stderr.
    fn stop(mut self) -> String {
        let mut child = self.child.take().expect("child");
        sigint_and_wait(&mut child);
        let mut out = String::new();
        if let Some(mut o) = child.stdout.take() {
            let _ = o.read_to_string(&mut out);
        }
        if let Some(mut e) = child.stderr.take() {
            let _ = e.read_to_string(&mut out);
        }
        out
    }
}

fn sigint_and_wait(child: &mut Child) {
    let pid = child.id().to_string();
    let _ = Command::new("kill").args(["-INT", &pid]).status();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

impl Drop for Testpmd {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            sigint_and_wait(&mut c);
        }
        let _ = std::fs::remove_file(format!("/dev/hugepages/{}map_0", self.prefix));
    }
}

struct Nic {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<NicReport>>,
}

impl Nic {
    fn start(cfg: NicConfig) -> Nic {
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let sock = cfg.socket.clone();
        let thread = std::thread::spawn(move || soft_nic::run(&cfg, &s).expect("NIC failed"));
        let deadline = Instant::now() + Duration::from_secs(5);
        Nic {
            stop,
            thread: Some(thread),
        }
        .wait_socket(&sock, deadline)
    }

    /// Returns once the NIC's socket exists; fails at `deadline`, or at once when
    /// the NIC thread ended (it failed to listen).
    fn wait_socket(self, sock: &Path, deadline: Instant) -> Nic {
        while !sock.exists() {
            if self.thread.as_ref().is_some_and(JoinHandle::is_finished) {
                let r = self.thread_result();
                panic!(
                    "the NIC ended before its socket {} existed: {r}",
                    sock.display()
                );
            }
            assert!(
                Instant::now() < deadline,
                "the NIC's socket {} did not appear in time",
                sock.display()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        self
    }

    fn thread_result(mut self) -> String {
        match self.thread.take().map(JoinHandle::join) {
            Some(Ok(r)) => format!("report {r:?}"),
            Some(Err(e)) => format!("panic {:?}", e.downcast_ref::<String>()),
            None => "no thread".into(),
        }
    }

    fn finish(mut self) -> NicReport {
        self.stop.store(true, Ordering::Relaxed);
        self.thread
            .take()
            .expect("thread")
            .join()
            .expect("NIC thread panicked")
    }
}

impl Drop for Nic {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn sock_path(tag: &str) -> PathBuf {
    std::env::temp_dir().join(format!("twin-nic-{tag}-{}.sock", std::process::id()))
}

/// Last "TX-packets: N" (the accumulated statistics printed on exit).
fn last_count(out: &str, key: &str) -> Option<u64> {
    out.rsplit(key)
        .next()
        .filter(|_| out.contains(key))
        .and_then(|s| s.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

/// Peak "Tx-pps:" from the periodic statistics.
fn peak_pps(out: &str, key: &str) -> u64 {
    out.split(key)
        .skip(1)
        .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .max()
        .unwrap_or(0)
}

fn txonly_into_sink(pkt_len: usize, busy_poll: bool, tag: &str) {
    let sock = sock_path(tag);
    let mut cfg = NicConfig::new(&sock, Mode::Sink);
    cfg.busy_poll = busy_poll;
    let nic = Nic::start(cfg);
    let pmd = Testpmd::start(
        &sock,
        &format!("twnic{tag}{}", std::process::id()),
        "txonly",
        pkt_len,
    );
    // Traffic runs for a while: the duration is the point.
    std::thread::sleep(Duration::from_secs(4));
    // testpmd's virtio-user stops its rings (GET_VRING_BASE) when it closes the
    // port; the NIC acknowledges a ring stop only after it drained the ring, so
    // every frame testpmd counted as sent has been taken when it has exited.
    let out = pmd.stop();
    let rep = nic.finish();
    let tx = last_count(&out, "TX-packets:")
        .unwrap_or_else(|| panic!("no TX-packets in testpmd output:\n{out}"));
    let pps = peak_pps(&out, "Tx-pps:");
    eprintln!(
        "txonly {pkt_len} B -> NIC sink (busy_poll={busy_poll}): testpmd TX-packets {tx}, peak {:.2} Mpps; NIC {}",
        pps as f64 / 1e6,
        serde_json::to_string(&rep).unwrap_or_default()
    );
    assert!(tx > 0, "testpmd sent nothing:\n{out}");
    assert_eq!(
        rep.rx_packets + rep.rx_drops.total(),
        tx,
        "NIC rx_packets + drops must equal testpmd's TX-packets"
    );
    assert_eq!(
        rep.rx_drops.total(),
        0,
        "valid frames were dropped: {rep:?}"
    );
    let frame = (pkt_len as u64).max(14);
    assert_eq!(rep.rx_bytes, rep.rx_packets * frame, "byte count");
    assert!(rep.connects >= 1);
}

#[test]
fn dpdk_txonly_64b_into_sink_busy_poll() {
    txonly_into_sink(64, true, "s64");
}

#[test]
fn dpdk_txonly_1500b_into_sink_busy_poll() {
    txonly_into_sink(1500, true, "s1500");
}

#[test]
fn dpdk_txonly_into_sink_event_mode() {
    txonly_into_sink(64, false, "ev");
}

/// testpmd in interactive mode, its commands written to its stdin, its output
/// (stdout and stderr) collected.
struct Interactive {
    child: Option<Child>,
    out: Arc<Mutex<String>>,
}

impl Interactive {
    fn start(vdev: &str, args: &[&str]) -> Interactive {
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "exec stdbuf -oL dpdk-testpmd -l 0,1 --main-lcore 1 --no-pci --in-memory \
                 --single-file-segments -m 512 --vdev {vdev} -- -i {} 2>&1",
                args.join(" ")
            ))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("cannot start dpdk-testpmd");
        let out = Arc::new(Mutex::new(String::new()));
        let sink = out.clone();
        let so = child.stdout.take().expect("stdout");
        std::thread::spawn(move || {
            for l in BufReader::new(so).lines().map_while(Result::ok) {
                let mut s = sink.lock().unwrap_or_else(|e| e.into_inner());
                s.push_str(&l);
                s.push('\n');
            }
        });
        Interactive {
            child: Some(child),
            out,
        }
    }

    fn output(&self) -> String {
        self.out.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn command(&mut self, line: &str) {
        let c = self.child.as_mut().expect("child");
        let stdin = c.stdin.as_mut().expect("stdin");
        writeln!(stdin, "{line}").expect("write a testpmd command");
        stdin.flush().expect("flush");
    }

    /// Waits until `pred` holds on the output; fails at the deadline.
    fn wait(&self, what: &str, timeout: Duration, pred: impl Fn(&str) -> bool) {
        let start = Instant::now();
        while !pred(&self.output()) {
            assert!(
                start.elapsed() < timeout,
                "testpmd: not {what} within {timeout:?}:\n{}",
                self.output()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `quit`, then waits for the exit; returns the whole output.
    fn quit(mut self) -> String {
        self.command("quit");
        let mut c = self.child.take().expect("child");
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(Some(_)) = c.try_wait() {
                break;
            }
            if Instant::now() > deadline {
                sigint_and_wait(&mut c);
                panic!("testpmd did not quit:\n{}", self.output());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        // The reader thread ends at end of file.
        let start = Instant::now();
        while !self.output().contains("Bye") && start.elapsed() < Duration::from_secs(2) {
            std::thread::sleep(Duration::from_millis(10));
        }
        self.output()
    }
}

impl Drop for Interactive {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            sigint_and_wait(&mut c);
        }
    }
}

/// Packets testpmd reported receiving in its verbose per-burst lines.
fn received_in_bursts(out: &str) -> u64 {
    out.lines()
        .filter_map(|l| {
            let i = l.find(": received ")?;
            l[i + ": received ".len()..]
                .split_whitespace()
                .next()?
                .parse::<u64>()
                .ok()
        })
        .sum()
}

/// Source and destination MAC of every packet testpmd dumped (verbose mode).
fn dumped_macs(out: &str) -> Vec<(String, String)> {
    out.lines()
        .filter_map(|l| {
            // A line may start with the prompt ("testpmd> "), printed meanwhile.
            let rest = &l[l.find("  src=")? + "  src=".len()..];
            let (src, rest) = rest.split_once(" - dst=")?;
            let dst = rest.split_whitespace().next()?;
            Some((src.to_ascii_lowercase(), dst.to_ascii_lowercase()))
        })
        .collect()
}

const TP_MAC: &str = "02:00:00:00:00:11";
const PEER_MAC: &str = "02:00:00:00:00:99";
/// Bursts testpmd sends first (`start tx_first`), of 32 packets each.
const BURSTS: u64 = 4;
const BURST: u64 = 32;

#[test]
fn dpdk_macswap_against_reflect_and_reconnect() {
    let sock = sock_path("refl");
    let nic = Nic::start(NicConfig::new(&sock, Mode::Reflect));
    let want = BURSTS * BURST;
    let (mut sent, mut received) = (0u64, 0u64);
    for round in 0..2 {
        // testpmd sends `want` frames from TP_MAC to PEER_MAC, then only receives
        // and dumps every frame it gets: the reflecting NIC must send each back
        // with the addresses swapped.
        let vdev = format!(
            "net_virtio_user0,path={},queues=1,mac={TP_MAC}",
            sock.display()
        );
        let peer = format!("--eth-peer=0,{PEER_MAC}");
        let burst = format!("--burst={BURST}");
        let mut tp = Interactive::start(&vdev, &[&peer, &burst, "--nb-cores=1"]);
        // Its prompt ends no line: the commands wait in the pipe until it reads
        // them, after its port (and so the connection to the NIC) is set up.
        tp.command("set fwd rxonly");
        tp.command("set verbose 1");
        tp.command(&format!("start tx_first {BURSTS}"));
        tp.wait("receiving every frame back", Duration::from_secs(20), |o| {
            received_in_bursts(o) >= want
        });
        tp.command("stop");
        tp.wait("stopped", Duration::from_secs(20), |o| {
            o.contains("Forward statistics for port 0")
        });
        let out = tp.quit();
        let tx = last_count(&out, "TX-packets:").expect("TX-packets");
        let tx_dropped = last_count(&out, "TX-dropped:").expect("TX-dropped");
        let rx = last_count(&out, "RX-packets:").expect("RX-packets");
        let macs = dumped_macs(&out);
        eprintln!("round {round}: testpmd TX {tx} (dropped {tx_dropped}), RX {rx}");
        assert_eq!(tx, want, "round {round}: testpmd sent {tx}:\n{out}");
        assert_eq!(tx_dropped, 0, "round {round}: testpmd could not send all");
        assert_eq!(rx, want, "round {round}: frames came back");
        assert_eq!(received_in_bursts(&out), want);
        assert_eq!(macs.len() as u64, want, "every received frame dumped");
        for (i, (src, dst)) in macs.iter().enumerate() {
            assert_eq!(
                (src.as_str(), dst.as_str()),
                (PEER_MAC, TP_MAC),
                "round {round}: frame {i} not MAC-swapped"
            );
        }
        sent += tx;
        received += rx;
    }
    let rep = nic.finish();
    eprintln!(
        "reflect report: {}",
        serde_json::to_string(&rep).unwrap_or_default()
    );
    // Conservation: every frame sent was received by the NIC or dropped there;
    // every one it received was reflected or dropped; testpmd got what it
    // reflected.
    assert_eq!(rep.rx_packets + rep.rx_drops.total(), sent);
    assert_eq!(rep.rx_drops.total(), 0);
    assert_eq!(rep.tx_packets + rep.tx_drops.total(), rep.rx_packets);
    assert_eq!(rep.tx_drops.total(), 0);
    assert_eq!(rep.tx_packets, received);
    assert_eq!(rep.connects, 2, "the second client must get a working port");
}
