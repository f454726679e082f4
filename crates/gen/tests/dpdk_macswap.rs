//! End to end against a real DPDK device: `dpdk-testpmd` with a `net_vhost` port in
//! `macswap` mode reflects the generator's frames with swapped MAC addresses. The
//! generator's counts must match testpmd's forward statistics.
//!
//! Needs `dpdk-testpmd` and hugepages (`scripts/setup-host.sh`); fails, never skips,
//! when they are absent. Runs 64 B and 1500 B for a few seconds each, sequentially
//! (the machine has two cores).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use traffic_gen::{run, GenConfig, GenReport};

/// A testpmd we started; SIGINT by its own PID on drop so it removes its hugepage files.
struct Testpmd {
    child: Option<Child>,
    log: PathBuf,
    prefix: String,
}

impl Testpmd {
    fn start(dir: &Path, prefix: &str) -> (Self, PathBuf) {
        let sock = dir.join("nic.sock");
        let log = dir.join("testpmd.log");
        let out = fs::File::create(&log).expect("create testpmd log");
        let err = out.try_clone().expect("clone log fd");
        let child = Command::new("dpdk-testpmd")
            .args([
                "-l",
                "0,1",
                "--main-lcore",
                "0",
                "--no-pci",
                "--single-file-segments",
            ])
            .arg(format!("--file-prefix={prefix}"))
            .args(["-m", "512", "--vdev"])
            .arg(format!("net_vhost0,iface={},queues=1", sock.display()))
            .args([
                "--",
                "--forward-mode=macswap",
                "--port-topology=loop",
                "--auto-start",
                "--stats-period",
                "1",
                "--nb-cores=1",
                "--total-num-mbufs=16384",
            ])
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn();
        let child = match child {
            Ok(c) => c,
            Err(e) => panic!(
                "FAIL: cannot run dpdk-testpmd ({e}); install DPDK with scripts/setup-host.sh \
                 (apt-get install dpdk) — this test needs a real DPDK net_vhost device"
            ),
        };
        let mut me = Self {
            child: Some(child),
            log,
            prefix: prefix.to_owned(),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while !sock.exists() {
            if let Some(c) = me.child.as_mut() {
                if let Ok(Some(st)) = c.try_wait() {
                    panic!(
                        "FAIL: dpdk-testpmd exited early ({st}); log:\n{}",
                        me.log_text()
                    );
                }
            }
            assert!(
                Instant::now() < deadline,
                "FAIL: testpmd socket never appeared; log:\n{}",
                me.log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        (me, sock)
    }

    fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGINT, wait, return the log.
    fn stop(&mut self) -> String {
        if let Some(mut c) = self.child.take() {
            if let Some(pid) = rustix::process::Pid::from_child(&c).into() {
                let _ = rustix::process::kill_process(pid, rustix::process::Signal::INT);
            }
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                match c.try_wait() {
                    Ok(Some(_)) => break,
                    _ if Instant::now() > deadline => {
                        let _ = c.kill();
                        let _ = c.wait();
                        break;
                    }
                    _ => std::thread::sleep(Duration::from_millis(50)),
                }
            }
        }
        // testpmd normally removes its hugepage file on SIGINT; make sure files of
        // this run's unique prefix (and only those) are gone.
        if let Ok(dir) = fs::read_dir("/dev/hugepages") {
            for e in dir.flatten() {
                if e.file_name()
                    .to_string_lossy()
                    .starts_with(&format!("{}map_", self.prefix))
                {
                    eprintln!("removing leftover hugepage file {:?}", e.path());
                    let _ = fs::remove_file(e.path());
                }
            }
        }
        self.log_text()
    }
}

impl Drop for Testpmd {
    fn drop(&mut self) {
        self.stop();
    }
}

/// (RX-packets, RX-dropped, TX-packets, TX-dropped) of the last forward statistics
/// block for port 0.
fn forward_stats(log: &str) -> Option<(u64, u64, u64, u64)> {
    let at = log.rfind("Forward statistics for port 0")?;
    let block = &log[at..];
    let num = |key: &str| -> Option<u64> {
        let i = block.find(key)? + key.len();
        block[i..].split_whitespace().next()?.parse().ok()
    };
    Some((
        num("RX-packets:")?,
        num("RX-dropped:")?,
        num("TX-packets:")?,
        num("TX-dropped:")?,
    ))
}

fn one_run(frame_len: usize, tag: &str) -> GenReport {
    let dir = std::env::temp_dir().join(format!("drvtest-{}-{tag}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).expect("temp dir");
    let prefix = format!("drvtest{}{tag}", std::process::id());
    let (mut pmd, sock) = Testpmd::start(&dir, &prefix);
    let mut cfg = GenConfig::new(&sock);
    cfg.frame_len = frame_len;
    cfg.duration = Duration::from_secs(3);
    cfg.id = 7;
    cfg.connect_timeout = Duration::from_secs(10);
    cfg.drain = Duration::from_millis(500);
    let stop = AtomicBool::new(false);
    let report = run(&cfg, &stop).unwrap_or_else(|e| {
        panic!(
            "generator failed: {e} ({:?}); testpmd log:\n{}",
            std::error::Error::source(&e),
            pmd.log_text()
        )
    });
    // Let testpmd's forwarding settle before stopping it.
    std::thread::sleep(Duration::from_millis(200));
    let log = pmd.stop();
    let _ = fs::remove_dir_all(&dir);
    eprintln!(
        "{frame_len} B report: {}",
        serde_json::to_string_pretty(&report).unwrap_or_default()
    );
    let (rx, rx_drop, tx, tx_drop) = forward_stats(&log)
        .unwrap_or_else(|| panic!("no forward statistics in testpmd log:\n{log}"));
    eprintln!("testpmd: RX-packets {rx} RX-dropped {rx_drop} TX-packets {tx} TX-dropped {tx_drop}");
    assert!(
        report.tx_packets > 10_000,
        "too few frames sent: {report:?}"
    );
    assert!(report.rx_packets > 0, "nothing came back");
    // Everything testpmd received came from us; everything it sent back, we received.
    assert_eq!(
        rx + rx_drop,
        report.tx_packets,
        "testpmd RX vs generator TX"
    );
    assert_eq!(tx, report.rx_packets, "testpmd TX vs generator RX");
    assert_eq!(report.rx_own, report.rx_packets, "foreign frames came back");
    assert_eq!(
        report.rx_own_swapped, report.rx_own,
        "frames were not MAC-swapped"
    );
    assert_eq!(report.rx_out_of_order, 0, "frames came back out of order");
    assert_eq!(report.rx_bytes, report.rx_packets * frame_len as u64);
    let d = &report.driver;
    assert_eq!(
        d.rx_device_errors + d.tx_device_errors + d.driver_errors + d.rx_short,
        0,
        "{d:?}"
    );
    assert!(!report.nic_disconnected);
    report
}

#[test]
fn macswap_through_dpdk_net_vhost() {
    let small = one_run(64, "s");
    let large = one_run(1500, "l");
    eprintln!(
        "RESULT 64 B: tx {:.3} Mpps, rx {:.3} Mpps; 1500 B: tx {:.3} Mpps ({:.2} Gbit/s), rx {:.3} Mpps",
        small.mpps, small.rx_mpps, large.mpps, large.tx_gbps, large.rx_mpps
    );
}
