//! `twin demo`: the main job, on the built-in parts only. It starts, as separate
//! processes of this same binary, a software NIC in reflect mode, the switch with two
//! client ports and one inline uplink, and two traffic generators, then prints every
//! process's counters.
//!
//! Traffic: client `c1` sends to an address behind the uplink (the NIC reflects it
//! back to `c1`), client `c2` sends to `c1`. The first frames are flooded until the
//! switch has learned where each address lives.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Args;

/// Options of `twin demo`.
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Seconds of traffic.
    #[arg(long, default_value_t = 5.0)]
    duration: f64,
    /// Frame size in bytes.
    #[arg(long, default_value_t = 64)]
    size: usize,
    /// Packets per second per generator (the demo runs five processes on two cores,
    /// so it runs them event-driven at a moderate rate).
    #[arg(long, default_value_t = 200_000)]
    rate: u64,
}

const C1_MAC: &str = "02:00:00:00:00:01";
const C2_MAC: &str = "02:00:00:00:00:02";
const OUTSIDE_MAC: &str = "02:00:00:00:00:fe";

/// A child process that is sent SIGINT and reaped when dropped.
struct Proc {
    name: &'static str,
    child: Child,
}

impl Proc {
    fn spawn(name: &'static str, args: &[&str]) -> anyhow::Result<Proc> {
        let exe = std::env::current_exe().context("cannot find the twin binary")?;
        let child = Command::new(exe)
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .with_context(|| format!("cannot start {name}"))?;
        Ok(Proc { name, child })
    }

    fn interrupt(&self) {
        if let Some(pid) = rustix::process::Pid::from_raw(self.child.id() as i32) {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::INT);
        }
    }

    /// Waits for exit and returns the last line of stdout (the JSON report).
    fn report(mut self, timeout: Duration) -> anyhow::Result<serde_json::Value> {
        let start = Instant::now();
        let status = loop {
            if let Some(s) = self.child.try_wait()? {
                break s;
            }
            if start.elapsed() > timeout {
                bail!("{} did not exit within {timeout:?}", self.name);
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let mut out = String::new();
        if let Some(mut so) = self.child.stdout.take() {
            so.read_to_string(&mut out)?;
        }
        if !status.success() {
            bail!("{} failed: {status}", self.name);
        }
        let line = out.lines().last().unwrap_or_default();
        serde_json::from_str(line)
            .with_context(|| format!("{} printed no JSON report: {out:?}", self.name))
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.interrupt();
            std::thread::sleep(Duration::from_millis(200));
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn wait_for_socket(path: &Path, timeout: Duration) -> anyhow::Result<()> {
    let start = Instant::now();
    while !path.exists() {
        if start.elapsed() > timeout {
            bail!("{} did not appear within {timeout:?}", path.display());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

/// Runs the demo and prints the counters.
pub fn run(a: DemoArgs) -> anyhow::Result<()> {
    let dir: PathBuf = std::env::temp_dir().join(format!("twin-demo-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let sock = |n: &str| dir.join(n).to_string_lossy().into_owned();
    let (nic_s, c1_s, c2_s) = (sock("nic.sock"), sock("c1.sock"), sock("c2.sock"));
    let (dur, size, rate) = (a.duration.to_string(), a.size.to_string(), a.rate.to_string());

    println!("twin demo: NIC (reflect) <- uplink u0 <- switch -> clients c1, c2 in {}", dir.display());
    let nic = Proc::spawn("nic", &["nic", "--socket", &nic_s, "--mode", "reflect", "--poll", "event"])?;
    let c1 = format!("c1={c1_s},mac={C1_MAC}");
    let c2 = format!("c2={c2_s},mac={C2_MAC}");
    let up = format!("u0={nic_s},mode=inline");
    let sw = Proc::spawn(
        "switch",
        &["switch", "--client", &c1, "--client", &c2, "--uplink", &up, "--poll", "event"],
    )?;
    wait_for_socket(Path::new(&c1_s), Duration::from_secs(10))?;
    wait_for_socket(Path::new(&c2_s), Duration::from_secs(10))?;
    let gen = |id: &str, s: &str, src: &str, dst: &str| -> anyhow::Result<Proc> {
        Proc::spawn(
            "gen",
            &[
                "gen", "--socket", s, "--size", &size, "--rate", &rate, "--duration", &dur,
                "--src-mac", src, "--dst-mac", dst, "--id", id, "--poll", "event",
            ],
        )
    };
    let g1 = gen("1", &c1_s, C1_MAC, OUTSIDE_MAC)?;
    let g2 = gen("2", &c2_s, C2_MAC, C1_MAC)?;
    let wait = Duration::from_secs_f64(a.duration + 30.0);
    let r1 = g1.report(wait)?;
    let r2 = g2.report(wait)?;
    sw.interrupt();
    let rs = sw.report(Duration::from_secs(10))?;
    nic.interrupt();
    let rn = nic.report(Duration::from_secs(10))?;
    let _ = std::fs::remove_dir_all(&dir);

    let n = |v: &serde_json::Value, k: &str| v.get(k).and_then(|x| x.as_u64()).unwrap_or(0);
    println!();
    println!("{:<22} {:>12} {:>12}", "process", "tx_packets", "rx_packets");
    println!("{:<22} {:>12} {:>12}", "gen c1 -> outside", n(&r1, "tx_packets"), n(&r1, "rx_packets"));
    println!("{:<22} {:>12} {:>12}", "gen c2 -> c1", n(&r2, "tx_packets"), n(&r2, "rx_packets"));
    println!("{:<22} {:>12} {:>12}", "nic (reflect)", n(&rn, "tx_packets"), n(&rn, "rx_packets"));
    println!();
    println!("switch counters:");
    println!("{}", serde_json::to_string_pretty(&rs)?);
    let expect_c1 = n(&r1, "tx_packets") + n(&r2, "tx_packets");
    println!(
        "\nc1 received {} of the {} frames sent to it (its own reflected by the NIC, plus c2's)",
        n(&r1, "rx_packets"),
        expect_c1
    );
    Ok(())
}
