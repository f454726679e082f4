//! Child processes of the benchmark and of `twin demo`: `twin` subcommands and
//! DPDK testpmd, each owned by a guard that interrupts and reaps it when dropped,
//! with its CPU time read from /proc before it exits.
//!
//! Limits: [`Proc::twin`] starts the running executable, so it is the `twin`
//! subcommand it names only when this crate is linked into the `twin` binary.
//! Output is collected in memory until the process ends (fine for the reports and
//! testpmd's statistics; not for a chatty process that runs for hours). Linux only
//! (/proc).

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A child process that could not be started, did not do what was waited for,
/// or could not be measured.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The path of the running executable is unknown.
    #[error("cannot find the twin binary")]
    NoExe(#[source] std::io::Error),
    /// The process could not be started.
    #[error("cannot start {name}")]
    Spawn {
        /// The process's role.
        name: String,
        /// The system's error.
        #[source]
        source: std::io::Error,
    },
    /// testpmd could not be started.
    #[error("dpdk-testpmd is needed; run scripts/setup-host.sh")]
    NoTestpmd(#[source] Box<Error>),
    /// Something did not happen in time: `what` is what did not happen.
    #[error("{what} within {timeout:?}")]
    Timeout {
        /// What did not happen.
        what: String,
        /// How long it was waited for.
        timeout: Duration,
    },
    /// The process exited unsuccessfully.
    #[error("{name} failed: {status}; output: {output}")]
    Failed {
        /// The process's role.
        name: String,
        /// How it ended.
        status: ExitStatus,
        /// All it printed.
        output: String,
    },
    /// The process printed no line of JSON.
    #[error("{name} printed no JSON report: {output:?}")]
    NoReport {
        /// The process's role.
        name: String,
        /// All it printed.
        output: String,
    },
    /// A process's CPU time could not be read.
    #[error("CPU time of {name}")]
    Cpu {
        /// The process's role.
        name: String,
        /// Why.
        #[source]
        source: Box<Error>,
    },
    /// /proc/PID/stat could not be read.
    #[error("process {pid}: no schedstat and no stat")]
    NoStat {
        /// The process.
        pid: u32,
        /// The system's error.
        #[source]
        source: std::io::Error,
    },
    /// /proc/PID/stat did not have the expected fields.
    #[error("process {pid}: {what}")]
    BadStat {
        /// The process.
        pid: u32,
        /// What was wrong with it.
        what: String,
    },
    /// Waiting for the process failed.
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// A result of this module.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A running child process whose stdout is collected by a reader thread.
#[derive(Debug)]
pub struct Proc {
    pub name: String,
    child: Child,
    out: Arc<Mutex<String>>,
    hugepage_prefix: Option<String>,
}

/// Clock ticks per second for /proc/PID/stat (USER_HZ; 100 on every Linux/x86 build).
const USER_HZ: f64 = 100.0;

impl Proc {
    /// Starts `cmd`, collecting its stdout (and with `capture_stderr` its stderr too:
    /// DPDK logs its vhost events there).
    fn spawn_cmd(name: &str, mut cmd: Command, capture_stderr: bool) -> Result<Proc> {
        let stderr = if capture_stderr {
            Stdio::piped()
        } else if std::env::var_os("TWIN_CHILD_LOG").is_some() {
            Stdio::inherit()
        } else {
            Stdio::null()
        };
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(stderr)
            // testpmd exits at end of input: hold its stdin open.
            .stdin(Stdio::piped())
            .spawn()
            .map_err(|source| Error::Spawn {
                name: name.to_string(),
                source,
            })?;
        let out = Arc::new(Mutex::new(String::new()));
        let streams: [Option<Box<dyn std::io::Read + Send>>; 2] = [
            child.stdout.take().map(|s| Box::new(s) as _),
            child.stderr.take().map(|s| Box::new(s) as _),
        ];
        for stream in streams.into_iter().flatten() {
            let sink = Arc::clone(&out);
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    if let Ok(mut s) = sink.lock() {
                        s.push_str(&line);
                        s.push('\n');
                    }
                }
            });
        }
        Ok(Proc {
            name: name.to_string(),
            child,
            out,
            hugepage_prefix: None,
        })
    }

    /// Waits until the process has printed `needle`.
    pub fn wait_for_output(&self, needle: &str, timeout: Duration) -> Result<()> {
        let start = Instant::now();
        while !self.output().contains(needle) {
            if start.elapsed() > timeout {
                return Err(Error::Timeout {
                    what: format!("{} did not print {needle:?}", self.name),
                    timeout,
                });
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }

    /// Starts this binary with `args`; its log goes to stderr of the parent only when
    /// `TWIN_CHILD_LOG` is set.
    pub fn twin(name: &str, args: &[&str]) -> Result<Proc> {
        let exe = std::env::current_exe().map_err(Error::NoExe)?;
        let mut cmd = Command::new(exe);
        cmd.args(args);
        let mut p = Proc::spawn_cmd(name, cmd, false)?;
        p.name = name.to_string();
        Ok(p)
    }

    /// Starts DPDK testpmd with a private hugepage file prefix.
    pub fn testpmd(name: &str, main_lcore: u32, vdev: &str, fwd: &[&str]) -> Result<Proc> {
        let prefix = format!("twb{name}{}", std::process::id());
        let mut cmd = Command::new("dpdk-testpmd");
        cmd.args([
            "-l",
            "0,1",
            "--main-lcore",
            &main_lcore.to_string(),
            "--no-pci",
        ])
        .args([
            "--single-file-segments",
            "--file-prefix",
            &prefix,
            "-m",
            "512",
        ])
        .args(["--vdev", vdev, "--", "--auto-start", "--nb-cores=1"])
        // Forward at once, before any frontend connects (see the runner's
        // `wait_testpmd_forwarding`).
        .arg("--disable-link-check")
        .args(["--total-num-mbufs=16384", "--stats-period", "1"])
        .args(fwd);
        let mut p = Proc::spawn_cmd(name, cmd, true).map_err(|e| Error::NoTestpmd(Box::new(e)))?;
        p.hugepage_prefix = Some(prefix);
        Ok(p)
    }

    /// The stdout collected so far.
    pub fn output(&self) -> String {
        self.out.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// CPU seconds the process (all its threads) has used so far; an error when
    /// they cannot be read (the process is gone).
    pub fn cpu_seconds(&self) -> Result<f64> {
        cpu_seconds_of(self.child.id()).map_err(|e| Error::Cpu {
            name: self.name.clone(),
            source: Box::new(e),
        })
    }

    /// Process ids of this process's descendants that are alive (the switch's driver
    /// domains: their reapers and workers), sorted.
    pub fn descendants(&self) -> Vec<u32> {
        let mut out = Vec::new();
        let mut stack = children_of(self.child.id());
        while let Some(pid) = stack.pop() {
            stack.extend(children_of(pid));
            out.push(pid);
        }
        out.sort_unstable();
        out
    }

    /// Sends SIGINT.
    pub fn interrupt(&self) {
        if let Some(pid) = rustix::process::Pid::from_raw(self.child.id() as i32) {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::INT);
        }
    }

    /// Waits for the exit; returns all of stdout.
    pub fn wait(&mut self, timeout: Duration) -> Result<String> {
        let start = Instant::now();
        let status = loop {
            if let Some(s) = self.child.try_wait()? {
                break s;
            }
            if start.elapsed() > timeout {
                return Err(Error::Timeout {
                    what: format!("{} did not exit", self.name),
                    timeout,
                });
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        // Let the reader thread take the last lines.
        std::thread::sleep(Duration::from_millis(50));
        let out = self.output();
        if !status.success() {
            return Err(Error::Failed {
                name: self.name.clone(),
                status,
                output: out,
            });
        }
        Ok(out)
    }

    /// Waits for the exit and parses the last line of stdout as the JSON report.
    pub fn report(&mut self, timeout: Duration) -> Result<serde_json::Value> {
        let out = self.wait(timeout)?;
        out.lines()
            .rev()
            .find_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .ok_or_else(|| Error::NoReport {
                name: self.name.clone(),
                output: out.clone(),
            })
    }

    /// SIGINT, then the report.
    pub fn stop_report(&mut self) -> Result<serde_json::Value> {
        self.interrupt();
        self.report(Duration::from_secs(15))
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.interrupt();
            let start = Instant::now();
            while start.elapsed() < Duration::from_secs(3) {
                if let Ok(Some(_)) = self.child.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
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

/// Waits until a socket file exists.
pub fn wait_for_path(path: &str, timeout: Duration) -> Result<()> {
    let start = Instant::now();
    while !Path::new(path).exists() {
        if start.elapsed() > timeout {
            return Err(Error::Timeout {
                what: format!("{path} did not appear"),
                timeout,
            });
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

/// A counter from a JSON report, or 0.
pub fn n(v: &serde_json::Value, pointer: &str) -> u64 {
    v.pointer(pointer).and_then(|x| x.as_u64()).unwrap_or(0)
}

/// The per-second packet rates testpmd printed for `port` (`--stats-period 1`),
/// as (rx_pps, tx_pps) pairs in order.
pub fn testpmd_rates(out: &str, port: u32) -> Vec<(u64, u64)> {
    let marker = format!("NIC statistics for port {port} ");
    let mut rates = Vec::new();
    let mut in_port = false;
    let mut rx = None;
    for line in out.lines() {
        if line.contains("NIC statistics for port") {
            in_port = line.contains(&marker);
            continue;
        }
        if !in_port {
            continue;
        }
        let l = line.trim_start();
        if let Some(v) = l.strip_prefix("Rx-pps:") {
            rx = v.split_whitespace().next().and_then(|x| x.parse().ok());
        } else if let Some(v) = l.strip_prefix("Tx-pps:") {
            let tx = v.split_whitespace().next().and_then(|x| x.parse().ok());
            if let (Some(r), Some(t)) = (rx.take(), tx) {
                rates.push((r, t));
            }
        }
    }
    rates
}

/// The totals testpmd printed at exit over all its ports ("Accumulated forward
/// statistics"), as (rx_packets, tx_packets).
pub fn testpmd_totals(out: &str) -> Option<(u64, u64)> {
    let (_, tail) = out.split_once("Accumulated forward statistics")?;
    let field = |name: &str| {
        tail.split_once(name)
            .and_then(|(_, v)| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
    };
    Some((field("RX-packets:")?, field("TX-packets:")?))
}

/// The median of the non-zero values, or 0.
pub fn median_nonzero(mut v: Vec<u64>) -> u64 {
    v.retain(|x| *x > 0);
    if v.is_empty() {
        return 0;
    }
    v.sort_unstable();
    v[v.len() / 2]
}

/// Process ids of `pid`'s children, over all its threads.
fn children_of(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    if let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) {
        for t in tasks.flatten() {
            if let Ok(s) = std::fs::read_to_string(t.path().join("children")) {
                out.extend(s.split_whitespace().filter_map(|p| p.parse::<u32>().ok()));
            }
        }
    }
    out
}

/// CPU seconds `pid` has used so far: the sum of its threads' run time from
/// /proc/PID/task/*/schedstat (nanoseconds; threads that already exited are not
/// counted, which suits the long-lived threads of the processes measured here),
/// or, without schedstat, user + system time from /proc/PID/stat (10 ms ticks).
/// An error when neither can be read: a missing measurement is never 0.
pub fn cpu_seconds_of(pid: u32) -> Result<f64> {
    let mut ns = 0u64;
    let mut found = false;
    if let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) {
        for t in tasks.flatten() {
            let run = std::fs::read_to_string(t.path().join("schedstat"))
                .ok()
                .and_then(|s| {
                    s.split_whitespace()
                        .next()
                        .and_then(|v| v.parse::<u64>().ok())
                });
            if let Some(run) = run {
                ns += run;
                found = true;
            }
        }
    }
    if found {
        return Ok(ns as f64 / 1e9);
    }
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map_err(|source| Error::NoStat { pid, source })?;
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .ok_or_else(|| Error::BadStat {
            pid,
            what: format!("unreadable stat {stat:?}"),
        })?;
    let f: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of stat, 12 and 13 after the name.
    let tick = |i: usize| {
        f.get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .ok_or_else(|| Error::BadStat {
                pid,
                what: format!("no field {} in stat {stat:?}", i + 3),
            })
    };
    Ok((tick(11)? + tick(12)?) / USER_HZ)
}
