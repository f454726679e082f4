//! `twin bench`: throughput of the data paths that exist, at 64 B and 1500 B, with
//! the CPU time of every process read from /proc.
//!
//! Paths (each a fresh set of processes, pinned as written):
//! * `native`: `twin gen` (busy, CPU 0) straight into `twin nic` sink (busy, CPU 1);
//! * `inline`: gen (busy, CPU 0) -> `twin switch` (busy, CPU 0) -> NIC (busy, CPU 1): the
//!   NIC keeps its core as in `native`, the switch shares the client's core (both
//!   yield it when idle);
//! * `domain`: as `inline`, with the uplink's driver in a driver domain (which inherits
//!   the switch's CPU 0); its CPU time is the domain processes' (reaper and worker);
//! * `twin`: as `inline`, the driver's fast path running in the switch as a twin over
//!   the SVM. Every uplink has a driver domain (it holds the NIC link and runs the
//!   slow path); in `inline` and `twin` mode it sleeps, and its CPU time is counted
//!   all the same;
//! * `client-port`: DPDK virtio-user txonly (core 0) -> switch (busy, CPU 1), no uplink:
//!   what one client port can take, to compare with DPDK's own vhost PMD;
//! * `dpdk`: DPDK virtio-user txonly (core 1) -> switch (busy, CPU 1) -> DPDK net_vhost
//!   rxonly (core 0): three busy pollers on two cores, so the client and the switch
//!   share a core;
//! * `dpdk-ref`: DPDK virtio-user txonly (core 1) straight into DPDK net_vhost rxonly
//!   (core 0).
//!
//! After the throughput table, unless `--no-rtt`: the round-trip time of the
//! generator's own frames at a light load (10 kpps, 64 B) through `native`,
//! `inline`, `domain` and `twin` to a reflecting NIC, as p50, p99, p99.9 and max.
//!
//! Mpps is what reached the far end: the NIC's received frames over the generator's
//! sending time, or for DPDK the median of testpmd's per-second rates. With
//! `--repeat N` every cell runs N times and the table shows medians; the data path's
//! CPU (`datapath_cpu`: switch and driver domain, CPU-seconds per million packets) is
//! the seeds' CPU-scaled cost, without the generator and the NIC, which are the same
//! in every mode. This is a
//! benchmark, not a test: it reports numbers and asserts nothing about them.

use std::time::Duration;

use anyhow::{bail, Context};
use clap::Args;
use serde::Serialize;

use crate::procs::{median_nonzero, n, testpmd_rates, wait_for_path, Proc};

/// Options of `twin bench`.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Seconds of traffic per run.
    #[arg(long, default_value_t = 4.0)]
    duration: f64,
    /// Frame sizes in bytes.
    #[arg(long, value_delimiter = ',', default_value = "64,1500")]
    sizes: Vec<usize>,
    /// Paths to run (native, inline, domain, twin, client-port, dpdk, dpdk-ref).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "native,inline,domain,twin,client-port,dpdk,dpdk-ref"
    )]
    paths: Vec<String>,
    /// Runs per cell; the table shows medians (and the spread of the Mpps).
    #[arg(long, default_value_t = 1)]
    repeat: usize,
    /// Skip the round-trip-time runs (light load, reflecting NIC) after the
    /// throughput table.
    #[arg(long)]
    no_rtt: bool,
    /// A smoke run in well under a minute: the built-in paths (native, inline,
    /// domain, twin) at 64 and 1500 B, one run of 1 s each (overrides --paths,
    /// --duration and --repeat).
    #[arg(long)]
    quick: bool,
    /// Also write the results as JSON to this file.
    #[arg(long)]
    json: Option<std::path::PathBuf>,
}

/// One measured run.
#[derive(Debug, Serialize)]
struct Sample {
    path: String,
    size: usize,
    mpps: f64,
    gbps: f64,
    /// CPU seconds per process during the run.
    cpu_s: Vec<(String, f64)>,
    /// CPU seconds per million delivered packets, all processes together.
    cpu_s_per_mpkt: f64,
    /// CPU seconds per million delivered packets of the switch and the driver
    /// domain: the cost of the data path itself (the generator and the NIC are the
    /// same in every mode). 0 for paths without a switch.
    datapath_cpu_s_per_mpkt: f64,
}

/// The medians of one cell's runs.
#[derive(Debug, Serialize)]
struct Cell {
    path: String,
    size: usize,
    runs: usize,
    mpps: f64,
    mpps_min: f64,
    mpps_max: f64,
    gbps: f64,
    cpu_s_per_mpkt: f64,
    datapath_cpu_s_per_mpkt: f64,
    /// Million packets per CPU-second of the data path (switch and domain).
    datapath_mpps_per_cpu: f64,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => 0.0,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

impl Cell {
    fn of(runs: &[Sample]) -> Cell {
        let get = |f: fn(&Sample) -> f64| median(runs.iter().map(f).collect());
        let dp = get(|r| r.datapath_cpu_s_per_mpkt);
        let mpps: Vec<f64> = runs.iter().map(|r| r.mpps).collect();
        Cell {
            path: runs.first().map(|r| r.path.clone()).unwrap_or_default(),
            size: runs.first().map_or(0, |r| r.size),
            runs: runs.len(),
            mpps: median(mpps.clone()),
            mpps_min: mpps.iter().copied().fold(f64::INFINITY, f64::min),
            mpps_max: mpps.iter().copied().fold(0.0, f64::max),
            gbps: get(|r| r.gbps),
            cpu_s_per_mpkt: get(|r| r.cpu_s_per_mpkt),
            datapath_cpu_s_per_mpkt: dp,
            datapath_mpps_per_cpu: if dp > 0.0 { 1.0 / dp } else { 0.0 },
        }
    }
}

struct Scratch(std::path::PathBuf);
impl Scratch {
    fn new() -> anyhow::Result<Scratch> {
        let d = std::env::temp_dir().join(format!("twin-bench-{}", std::process::id()));
        std::fs::create_dir_all(&d)?;
        Ok(Scratch(d))
    }
    fn sock(&self, n: &str) -> String {
        let p = self.0.join(n);
        let _ = std::fs::remove_file(&p);
        p.to_string_lossy().into_owned()
    }
}
impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn sample(path: &str, size: usize, packets: f64, secs: f64, cpu: Vec<(String, f64)>) -> Sample {
    let mpps = if secs > 0.0 {
        packets / secs / 1e6
    } else {
        0.0
    };
    let total_cpu: f64 = cpu.iter().map(|(_, c)| c).sum();
    let datapath_cpu: f64 = cpu
        .iter()
        .filter(|(n, _)| n == "switch" || n == "domain")
        // A fold from +0.0: an empty float sum is -0.0.
        .fold(0.0, |a, (_, c)| a + c);
    Sample {
        datapath_cpu_s_per_mpkt: if packets > 0.0 {
            datapath_cpu / (packets / 1e6)
        } else {
            0.0
        },
        path: path.to_string(),
        size,
        mpps,
        gbps: mpps * 1e6 * size as f64 * 8.0 / 1e9,
        cpu_s_per_mpkt: if packets > 0.0 {
            total_cpu / (packets / 1e6)
        } else {
            0.0
        },
        cpu_s: cpu,
    }
}

fn gen_args<'a>(sock: &'a str, size: &'a str, dur: &'a str) -> Vec<&'a str> {
    vec![
        "gen",
        "--socket",
        sock,
        "--size",
        size,
        "--duration",
        dur,
        "--cpu",
        "0",
        "--dst-mac",
        "02:00:00:00:00:fe",
    ]
}

fn run_native(s: &Scratch, size: usize, dur: f64) -> anyhow::Result<Sample> {
    let nic_s = s.sock("nic.sock");
    let mut nic = Proc::twin(
        "nic",
        &["nic", "--socket", &nic_s, "--mode", "sink", "--cpu", "1"],
    )?;
    wait_for_path(&nic_s, Duration::from_secs(10))?;
    let (size_s, dur_s) = (size.to_string(), dur.to_string());
    let mut gen = Proc::twin("gen", &gen_args(&nic_s, &size_s, &dur_s))?;
    std::thread::sleep(Duration::from_secs_f64(dur));
    let (cpu_nic, cpu_gen) = wait_cpu(&mut gen, &nic)?;
    let g = gen.report(Duration::from_secs(30))?;
    let r = nic.stop_report()?;
    let secs = g
        .pointer("/duration_s")
        .and_then(|v| v.as_f64())
        .unwrap_or(dur);
    let cpu = vec![("gen".into(), cpu_gen), ("nic".into(), cpu_nic)];
    Ok(sample(
        "native",
        size,
        n(&r, "/rx_packets") as f64,
        secs,
        cpu,
    ))
}

/// Waits for the generator's last moments and reads CPU times just before it exits.
fn wait_cpu(gen: &mut Proc, other: &Proc) -> anyhow::Result<(f64, f64)> {
    // The generator may still be draining; its CPU time is read at the last moment
    // the process is certainly alive, right after the traffic time.
    let cg = gen.cpu_seconds();
    Ok((other.cpu_seconds(), cg))
}

/// `inline`, `domain` or `twin`: gen -> switch -> NIC, the uplink's fast path in the
/// switch or in its driver domain (which inherits the switch's CPU).
fn run_switched(s: &Scratch, mode: &str, size: usize, dur: f64) -> anyhow::Result<Sample> {
    let (nic_s, c1_s) = (s.sock("nic.sock"), s.sock("c1.sock"));
    // The NIC keeps core 1 as in `native`; the switch shares core 0 with the client.
    // Both busy-poll and yield when idle, so they hand the core to each other.
    let mut nic = Proc::twin(
        "nic",
        &["nic", "--socket", &nic_s, "--mode", "sink", "--cpu", "1"],
    )?;
    let c1 = format!("c1={c1_s}");
    let up = format!("u0={nic_s},mode={mode}");
    let mut sw = Proc::twin(
        "switch",
        &["switch", "--client", &c1, "--uplink", &up, "--cpu", "0"],
    )?;
    wait_for_path(&c1_s, Duration::from_secs(10))?;
    std::thread::sleep(Duration::from_millis(500));
    let (size_s, dur_s) = (size.to_string(), dur.to_string());
    let sw_cpu0 = sw.cpu_seconds();
    let dd_cpu0 = sw.descendants_cpu_seconds();
    let mut gen = Proc::twin("gen", &gen_args(&c1_s, &size_s, &dur_s))?;
    std::thread::sleep(Duration::from_secs_f64(dur));
    let (cpu_sw, cpu_gen) = wait_cpu(&mut gen, &sw)?;
    let cpu_dd = sw.descendants_cpu_seconds() - dd_cpu0;
    let cpu_nic = nic.cpu_seconds();
    let g = gen.report(Duration::from_secs(30))?;
    let _ = sw.stop_report()?;
    let r = nic.stop_report()?;
    let secs = g
        .pointer("/duration_s")
        .and_then(|v| v.as_f64())
        .unwrap_or(dur);
    let cpu = vec![
        ("gen".into(), cpu_gen),
        ("switch".into(), cpu_sw - sw_cpu0),
        ("nic".into(), cpu_nic),
        ("domain".into(), cpu_dd),
    ];
    Ok(sample(mode, size, n(&r, "/rx_packets") as f64, secs, cpu))
}

/// Offered load of the round-trip runs: light, so that the times are the path's,
/// not a queue's.
const RTT_RATE_PPS: &str = "10000";

/// Round-trip time under light load: the generator's own 64-byte frames through
/// `path` (native: straight) to a reflecting NIC and back, placed as in the
/// throughput runs. Returns (p50, p99, p99.9, max) in microseconds.
fn run_rtt(s: &Scratch, path: &str, dur: f64) -> anyhow::Result<[f64; 4]> {
    let (nic_s, c1_s) = (s.sock("nic.sock"), s.sock("c1.sock"));
    let mut nic = Proc::twin(
        "nic",
        &["nic", "--socket", &nic_s, "--mode", "reflect", "--cpu", "1"],
    )?;
    wait_for_path(&nic_s, Duration::from_secs(10))?;
    let mut sw = None;
    let target = if path == "native" {
        nic_s.clone()
    } else {
        let c1 = format!("c1={c1_s}");
        let up = format!("u0={nic_s},mode={path}");
        sw = Some(Proc::twin(
            "switch",
            &["switch", "--client", &c1, "--uplink", &up, "--cpu", "0"],
        )?);
        wait_for_path(&c1_s, Duration::from_secs(10))?;
        std::thread::sleep(Duration::from_millis(500));
        c1_s.clone()
    };
    let dur_s = dur.to_string();
    let mut args = gen_args(&target, "64", &dur_s);
    args.extend(["--rate", RTT_RATE_PPS]);
    let g = Proc::twin("gen", &args)?.report(Duration::from_secs(30))?;
    if let Some(mut sw) = sw {
        let _ = sw.stop_report()?;
    }
    let _ = nic.stop_report()?;
    let f = |p: &str| g.pointer(p).and_then(|v| v.as_f64()).unwrap_or(0.0);
    if n(&g, "/rtt_samples") == 0 {
        bail!("no frame came back");
    }
    Ok([
        f("/rtt_p50_us"),
        f("/rtt_p99_us"),
        f("/rtt_p999_us"),
        f("/rtt_max_us"),
    ])
}

/// DPDK runs: the rate is the median of testpmd's per-second figures.
fn run_dpdk(s: &Scratch, path: &str, size: usize, dur: f64) -> anyhow::Result<Sample> {
    let (nic_s, c1_s) = (s.sock("nic.sock"), s.sock("c1.sock"));
    let txpkts = format!("--txpkts={size}");
    let mut procs: Vec<(String, Proc)> = Vec::new();
    let client_sock = match path {
        "dpdk-ref" => nic_s.clone(),
        _ => c1_s.clone(),
    };
    if path != "client-port" {
        let vdev = format!("net_vhost0,iface={nic_s},queues=1");
        let nic = Proc::testpmd("nic", 1, &vdev, &["--forward-mode=rxonly"])?;
        wait_for_path(&nic_s, Duration::from_secs(20))?;
        procs.push(("testpmd-nic".into(), nic));
    }
    if path != "dpdk-ref" {
        let c1 = format!("c1={c1_s}");
        let up = format!("u0={nic_s}");
        let mut args = vec!["switch", "--client", c1.as_str(), "--cpu", "1"];
        if path == "dpdk" {
            // The switch shares core 1 with a testpmd that never yields: busy polling
            // would get it one ring's worth of frames per scheduler slice, so it runs
            // event-driven and is woken by the client's kicks.
            args.extend(["--uplink", up.as_str(), "--poll", "event"]);
        }
        let sw = Proc::twin("switch", &args)?;
        wait_for_path(&c1_s, Duration::from_secs(10))?;
        if let Some((_, nic)) = procs.first() {
            nic.wait_for_output("virtio is now ready", Duration::from_secs(20))?;
        }
        procs.push(("switch".into(), sw));
    }
    // The client forwards on core 0 when it shares the machine with the switch only
    // (client-port); with a DPDK NIC on core 0 it moves to core 1.
    let client_main_lcore = if path == "client-port" { 1 } else { 0 };
    let vdev = format!("net_virtio_user0,path={client_sock},queues=1");
    let client = Proc::testpmd(
        "cl",
        client_main_lcore,
        &vdev,
        &["--forward-mode=txonly", &txpkts],
    )?;
    procs.push(("testpmd-client".into(), client));
    let start_cpu: Vec<f64> = procs.iter().map(|(_, p)| p.cpu_seconds()).collect();
    std::thread::sleep(Duration::from_secs_f64(dur + 1.0));
    let cpu: Vec<(String, f64)> = procs
        .iter()
        .zip(start_cpu)
        .map(|((name, p), c0)| (name.clone(), p.cpu_seconds() - c0))
        .collect();
    let outputs: Vec<(String, String)> = procs
        .iter_mut()
        .rev()
        .map(|(name, p)| {
            p.interrupt();
            (
                name.clone(),
                p.wait(Duration::from_secs(15)).unwrap_or_default(),
            )
        })
        .collect();
    let find = |want: &str| {
        outputs
            .iter()
            .find(|(n, _)| n == want)
            .map(|(_, o)| o.as_str())
    };
    let pps = match path {
        "client-port" => {
            let out = find("testpmd-client").context("no client output")?;
            median_nonzero(
                testpmd_rates(out, 0)
                    .into_iter()
                    .map(|(_, tx)| tx)
                    .collect(),
            )
        }
        _ => {
            let out = find("testpmd-nic").context("no NIC output")?;
            median_nonzero(
                testpmd_rates(out, 0)
                    .into_iter()
                    .map(|(rx, _)| rx)
                    .collect(),
            )
        }
    };
    // CPU per packet over the measured window: rate times the window.
    let packets = pps as f64 * (dur + 1.0);
    Ok(sample(path, size, pps as f64, 1.0, cpu)).map(|mut s| {
        let total: f64 = s.cpu_s.iter().map(|(_, c)| c).sum();
        s.cpu_s_per_mpkt = if packets > 0.0 {
            total / (packets / 1e6)
        } else {
            0.0
        };
        s
    })
}

/// Runs the benchmark and prints a table.
pub fn run(mut a: BenchArgs) -> anyhow::Result<()> {
    if a.quick {
        a.paths = ["native", "inline", "domain", "twin"]
            .map(String::from)
            .to_vec();
        a.duration = 1.0;
        a.repeat = 1;
    }
    if !(a.duration.is_finite() && a.duration >= 1.0) {
        bail!("--duration must be at least 1 second");
    }
    if a.repeat == 0 {
        bail!("--repeat must be at least 1");
    }
    let s = Scratch::new()?;
    let mut runs = Vec::new();
    let mut cells = Vec::new();
    println!(
        "{:<12} {:>6} {:>8} {:>13} {:>8} {:>11} {:>13}  (medians of {} runs)",
        "path", "size", "Mpps", "(min-max)", "Gbit/s", "cpu_s/Mpkt", "datapath_cpu", a.repeat
    );
    for path in &a.paths {
        for &size in &a.sizes {
            let mut cell_runs = Vec::new();
            for _ in 0..a.repeat {
                let r = match path.as_str() {
                    "native" => run_native(&s, size, a.duration),
                    "inline" | "domain" | "twin" => run_switched(&s, path, size, a.duration),
                    "client-port" | "dpdk" | "dpdk-ref" => run_dpdk(&s, path, size, a.duration),
                    other => bail!("unknown path {other:?}"),
                }
                .with_context(|| format!("{path} at {size} B"))?;
                let cpu: Vec<String> = r.cpu_s.iter().map(|(n, c)| format!("{n}={c:.2}")).collect();
                eprintln!(
                    "  run: {path} {size} B: {:.2} Mpps, cpu {}",
                    r.mpps,
                    cpu.join(" ")
                );
                cell_runs.push(r);
            }
            let c = Cell::of(&cell_runs);
            println!(
                "{:<12} {:>6} {:>8.2} {:>13} {:>8.2} {:>11.3} {:>13.3}",
                c.path,
                c.size,
                c.mpps,
                format!("({:.2}-{:.2})", c.mpps_min, c.mpps_max),
                c.gbps,
                c.cpu_s_per_mpkt,
                c.datapath_cpu_s_per_mpkt
            );
            runs.extend(cell_runs);
            cells.push(c);
        }
    }
    let mut rtt = Vec::new();
    let rtt_paths: Vec<&String> = a
        .paths
        .iter()
        .filter(|p| ["native", "inline", "domain", "twin"].contains(&p.as_str()))
        .collect();
    if !a.no_rtt && !rtt_paths.is_empty() {
        println!(
            "\nround trip, 64 B at {RTT_RATE_PPS} pps to a reflecting NIC (medians of {} runs, us)",
            a.repeat
        );
        println!(
            "{:<12} {:>9} {:>9} {:>9} {:>9}",
            "path", "p50", "p99", "p99.9", "max"
        );
        for path in rtt_paths {
            let mut all = Vec::new();
            for _ in 0..a.repeat {
                all.push(run_rtt(&s, path, a.duration).with_context(|| format!("rtt {path}"))?);
            }
            let col = |i: usize| median(all.iter().map(|r| r[i]).collect());
            let row = [col(0), col(1), col(2), col(3)];
            println!(
                "{:<12} {:>9.1} {:>9.1} {:>9.1} {:>9.1}",
                path, row[0], row[1], row[2], row[3]
            );
            rtt.push(serde_json::json!({
                "path": path, "size": 64, "rate_pps": RTT_RATE_PPS.parse::<u64>().unwrap_or(0),
                "runs": all.len(),
                "rtt_p50_us": row[0], "rtt_p99_us": row[1],
                "rtt_p999_us": row[2], "rtt_max_us": row[3],
            }));
        }
    }
    if let Some(p) = a.json {
        let doc = serde_json::json!({ "cells": cells, "runs": runs, "rtt": rtt });
        std::fs::write(&p, serde_json::to_string_pretty(&doc)?)
            .with_context(|| format!("cannot write {}", p.display()))?;
    }
    Ok(())
}
