//! DPDK testpmd as an interactive NIC: started with `-i`, driven by commands on
//! its standard input (`start`, `stop`, `quit`), so a test decides when it sends.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::{require_testpmd, sigint};

/// testpmd as the NIC of uplink `u0`, interactive: `net_vhost` on `sock` (and
/// `vdev`, another `--vdev`, if any), `args` after `--`. It sends nothing before
/// [`TestpmdNic::command`]`("start")`. Output (stdout and stderr) is collected;
/// it keeps no hugepage files (`--in-memory`); its stdout is line-buffered
/// (`stdbuf -oL`: it is a pipe). Stopped with SIGINT, by its own
/// PID, when dropped.
pub struct TestpmdNic {
    child: Option<std::process::Child>,
    out: Arc<Mutex<String>>,
}

impl TestpmdNic {
    pub fn start(sock: &str, vdev: &str, args: &str) -> TestpmdNic {
        require_testpmd();
        let cmd = format!(
            "exec stdbuf -oL dpdk-testpmd -l 0,1 --main-lcore 1 --no-pci --in-memory \
             --single-file-segments -m 512 --vdev net_vhost0,iface={sock},queues=1 {vdev} \
             -- -i {args} --nb-cores=1 --total-num-mbufs=16384 2>&1"
        );
        let mut child = Command::new("sh")
            .args(["-c", &cmd])
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
        TestpmdNic {
            child: Some(child),
            out,
        }
    }

    pub fn output(&self) -> String {
        self.out.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn command(&mut self, line: &str) {
        let stdin = self
            .child
            .as_mut()
            .and_then(|c| c.stdin.as_mut())
            .expect("testpmd's stdin");
        writeln!(stdin, "{line}").expect("write a testpmd command");
        stdin.flush().expect("flush");
    }

    /// Waits until testpmd printed `needle`.
    pub fn wait_for(&self, needle: &str, timeout: Duration) {
        let start = Instant::now();
        while !self.output().contains(needle) {
            assert!(
                start.elapsed() < timeout,
                "testpmd did not print {needle:?} within {timeout:?}:\n{}",
                self.output()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `quit`, and waits for the exit.
    pub fn quit(mut self) {
        self.command("quit");
        let mut c = self.child.take().expect("child");
        let start = Instant::now();
        while !matches!(c.try_wait(), Ok(Some(_))) {
            if start.elapsed() > Duration::from_secs(20) {
                sigint(&c);
                let _ = c.wait();
                panic!("testpmd did not quit:\n{}", self.output());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for TestpmdNic {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            sigint(&c);
            let start = Instant::now();
            while !matches!(c.try_wait(), Ok(Some(_))) && start.elapsed() < Duration::from_secs(5) {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
