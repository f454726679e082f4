//! End-to-end tests against a real DPDK client (`dpdk-testpmd` with
//! `net_virtio_user`). They FAIL (never skip) when dpdk-testpmd or hugepages are
//! missing: run `scripts/setup-host.sh` first.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
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
        let thread = std::thread::spawn(move || soft_nic::run(&cfg, &s).expect("NIC failed"));
        // Wait for the socket.
        let deadline = Instant::now() + Duration::from_secs(5);
        Nic {
            stop,
            thread: Some(thread),
        }
        .wait_socket(deadline)
    }
    fn wait_socket(self, _deadline: Instant) -> Nic {
        std::thread::sleep(Duration::from_millis(200));
        self
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
    std::thread::sleep(Duration::from_secs(4));
    let out = pmd.stop();
    std::thread::sleep(Duration::from_millis(300));
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

#[test]
fn dpdk_macswap_against_reflect_and_reconnect() {
    let sock = sock_path("refl");
    let nic = Nic::start(NicConfig::new(&sock, Mode::Reflect));
    for round in 0..2 {
        let pmd = Testpmd::start(
            &sock,
            &format!("twnicr{round}{}", std::process::id()),
            "macswap",
            64,
        );
        std::thread::sleep(Duration::from_secs(3));
        let out = pmd.stop();
        let rx = last_count(&out, "RX-packets:").unwrap_or(0);
        eprintln!("round {round}: testpmd RX-packets {rx}");
        assert!(rx > 0, "round {round}: no frames came back:\n{out}");
        std::thread::sleep(Duration::from_millis(300));
    }
    let rep = nic.finish();
    eprintln!(
        "reflect report: {}",
        serde_json::to_string(&rep).unwrap_or_default()
    );
    assert!(rep.tx_packets > 0);
    assert_eq!(rep.connects, 2, "the second client must get a working port");
    assert_eq!(rep.rx_drops.total(), 0);
}
