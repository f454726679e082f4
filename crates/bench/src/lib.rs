//! `twin bench` (the `twin-bench` crate): the seeds' evaluation, redone on this
//! project. One invocation runs
//! `native` (client straight into the NIC), `inline`, `domain` and `twin` side by
//! side, for the transmit, receive and round-trip workloads at each frame size,
//! with the built-in peers and (when `dpdk-testpmd` is installed) with testpmd as
//! the client, the NIC or both; then transmit at fixed offered rates
//! (event-driven), then the round-trip time under light load. It reports medians
//! and spread, CPU-seconds per million packets per process (the seeds'
//! CPU-scaled units), and the ratios between modes.
//!
//! * [`plan`]: the matrix and the placement of processes on the two cores;
//! * [`runner`]: one run, as fresh processes;
//! * [`results`]: samples, medians, ratios and the JSON document;
//! * [`table`]: terminal and Markdown tables;
//! * [`charts`]: SVG charts;
//! * [`report`]: regenerates the results section of `docs/evaluation.md`;
//! * [`procs`]: child processes (`twin` subcommands, testpmd) and their CPU time,
//!   also used by `twin demo`;
//! * [`Error`]: what can go wrong, for the caller to print.
//!
//! The `twin` binary parses the command line into [`Options`] and calls [`run`].
//! Limits: the runs start the *running executable* as `twin nic`, `twin switch`
//! and `twin gen` ([`procs::Proc::twin`]), so this crate works only linked into
//! the `twin` binary; placement assumes a machine of two cores (CPU 0 and 1).
//!
//! This is a benchmark, not a test: it reports numbers and asserts nothing about
//! them. Numbers move between invocations on a shared 2-core VM; compare modes
//! within one invocation (which is what the ratios do).

#![forbid(unsafe_code)]

pub mod charts;
mod error;
pub mod plan;
pub mod procs;
pub mod report;
pub mod results;
pub mod runner;
pub mod table;

use std::path::PathBuf;
use std::time::{Duration, Instant};

pub use error::Error;
use error::ResultExt as _;
use plan::{DpdkCells, Mode, Plan, Workload, QUICK_FIXED_RATES_PPS};
use results::{Cell, Document, RttRow, Setup, SCHEMA_VERSION};
use runner::{Scratch, RTT_RATE_PPS, RTT_SIZE};

pub use plan::FIXED_RATES_PPS;

/// Whether the DPDK part of the matrix runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DpdkChoice {
    /// When `dpdk-testpmd` is on the PATH.
    Auto,
    /// Always (an error when testpmd is missing).
    On,
    /// Never.
    Off,
}

/// What to run and what to write: the options of `twin bench`, one field per
/// flag (the flags' help in crates/cli/src/bench.rs says what each means).
#[derive(Debug, Clone)]
pub struct Options {
    /// Seconds of traffic per run (at least 0.5).
    pub duration: f64,
    /// Runs per configuration with the built-in peers.
    pub repeat: usize,
    /// Runs per configuration with DPDK peers.
    pub dpdk_repeat: usize,
    /// Frame sizes in bytes (Ethernet, without FCS), each in 60..=1514.
    pub sizes: Vec<usize>,
    /// Modes by name (native, inline, domain, twin).
    pub modes: Vec<String>,
    /// Workloads by name (transmit, receive, roundtrip).
    pub workloads: Vec<String>,
    /// Offered rates (packets per second) of the fixed-rate transmit runs.
    pub rates: Vec<u64>,
    /// Skip the fixed-rate runs.
    pub no_fixed_rates: bool,
    /// Whether the DPDK part of the matrix runs.
    pub dpdk: DpdkChoice,
    /// Skip the round-trip-time runs.
    pub no_rtt: bool,
    /// A smoke run: overrides `duration`, `repeat`, `dpdk_repeat` and `rates`, and
    /// runs only two DPDK cells.
    pub quick: bool,
    /// Write the results as JSON to this file.
    pub json: Option<PathBuf>,
    /// Write SVG charts into this directory.
    pub charts: Option<PathBuf>,
    /// Regenerate this report (docs/evaluation.md).
    pub report: Option<PathBuf>,
}

fn testpmd_installed() -> bool {
    std::process::Command::new("dpdk-testpmd")
        .arg("--version")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok()
}

/// Prints a progress line on stderr: how far, how long, what runs now.
struct Progress {
    start: Instant,
    done: usize,
    total: usize,
}

impl Progress {
    fn line(&mut self, what: &str, result: &str) {
        self.done += 1;
        let el = self.start.elapsed().as_secs_f64();
        let eta = el / self.done as f64 * (self.total - self.done) as f64;
        let mmss = |s: f64| format!("{}:{:02}", s as u64 / 60, s as u64 % 60);
        eprintln!(
            "[{:>3}/{} {} eta {}] {what}: {result}",
            self.done,
            self.total,
            mmss(el),
            mmss(eta)
        );
    }
}

fn kernel_release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

/// Runs the benchmark: progress on stderr, the tables on stdout, and the files
/// `a` asks for.
pub fn run(mut a: Options) -> Result<(), Error> {
    if a.quick {
        a.duration = 0.5;
        a.repeat = 1;
        a.rates = QUICK_FIXED_RATES_PPS.to_vec();
        a.dpdk_repeat = 1;
    }
    if !(a.duration.is_finite() && a.duration >= 0.5) {
        return Err(Error::Options(
            "--duration must be at least 0.5 seconds".into(),
        ));
    }
    if a.repeat == 0 || a.dpdk_repeat == 0 {
        return Err(Error::Options(
            "--repeat and --dpdk-repeat must be at least 1".into(),
        ));
    }
    if a.sizes.iter().any(|&s| !(60..=1514).contains(&s)) {
        return Err(Error::Options(
            "--sizes must be Ethernet frame lengths, 60..=1514".into(),
        ));
    }
    let modes = a
        .modes
        .iter()
        .map(|m| Mode::parse(m).ok_or_else(|| Error::Options(format!("unknown mode {m:?}"))))
        .collect::<Result<Vec<_>, _>>()?;
    let workloads = a
        .workloads
        .iter()
        .map(|w| {
            Workload::parse(w).ok_or_else(|| Error::Options(format!("unknown workload {w:?}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let dpdk = match a.dpdk {
        DpdkChoice::Off => false,
        DpdkChoice::Auto => testpmd_installed(),
        DpdkChoice::On if testpmd_installed() => true,
        DpdkChoice::On => {
            return Err(Error::Options(
                "--dpdk on: dpdk-testpmd is not installed (scripts/setup-host.sh)".into(),
            ))
        }
    };
    let rates = if a.no_fixed_rates {
        Vec::new()
    } else {
        a.rates.clone()
    };
    let dpdk_cells = match (dpdk, a.quick) {
        (false, _) => DpdkCells::None,
        (true, true) => DpdkCells::Quick,
        (true, false) => DpdkCells::All,
    };
    let plan = Plan::new(&modes, &workloads, &a.sizes, &rates, dpdk_cells);
    let repeat_of = |s: &plan::Spec| {
        if s.client == plan::Peer::Dpdk || s.nic == plan::Peer::Dpdk {
            a.dpdk_repeat
        } else {
            a.repeat
        }
    };
    let rtt_modes = if a.no_rtt {
        Vec::new()
    } else {
        plan.rtt_modes.clone()
    };
    let total = plan.specs.iter().map(repeat_of).sum::<usize>() + rtt_modes.len() * a.repeat;
    let started_unix_s = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let mut progress = Progress {
        start: Instant::now(),
        done: 0,
        total,
    };
    eprintln!(
        "twin bench: {} configurations, {total} runs of {} s{}",
        plan.specs.len(),
        a.duration,
        if dpdk {
            ", DPDK peers included"
        } else {
            ", built-in peers only"
        }
    );
    let s = Scratch::new()?;
    let mut cells = Vec::new();
    let mut runs = Vec::new();
    for spec in &plan.specs {
        let n = repeat_of(spec);
        let mut samples = Vec::new();
        for i in 0..n {
            let sample = runner::run(&s, spec, a.duration)
                .within(|| format!("{} (run {} of {n})", spec.label(), i + 1))?;
            let cpu: Vec<String> = sample
                .cpu_s
                .iter()
                .map(|(r, c)| format!("{r} {c:.2}"))
                .collect();
            let mut what = format!("{:.3} Mpps, cpu-s {}", sample.mpps(), cpu.join(", "));
            if let Some(f) = &sample.frames {
                let offered = f
                    .offered
                    .map(|o| {
                        format!(
                            "{o} offered ({} ring full, {} late), ",
                            f.not_sent_ring_full, f.not_sent_late
                        )
                    })
                    .unwrap_or_default();
                what += &format!(
                    "; frames: {offered}{} sent, {} delivered, {} dropped",
                    f.sent,
                    f.delivered,
                    f.dropped()
                );
            }
            if let Some(e) = &sample.switch_end {
                what += &format!("; fast path at the end: {}", e.fast_path);
            }
            progress.line(&format!("{} run {}/{n}", spec.label(), i + 1), &what);
            samples.push(sample);
        }
        cells.push(Cell::of(*spec, spec.placement().poll, &samples));
        runs.extend(samples);
    }
    let mut rtt = Vec::new();
    for mode in rtt_modes {
        let mut all = Vec::new();
        for i in 0..a.repeat {
            let r = runner::run_rtt(&s, mode, a.duration)
                .within(|| format!("round trip through {}", mode.name()))?;
            progress.line(
                &format!("rtt {} run {}/{}", mode.name(), i + 1, a.repeat),
                &format!("p50 {:.1} us, p99 {:.1} us", r[0], r[1]),
            );
            all.push(r);
        }
        rtt.push(RttRow::of(mode, RTT_SIZE, RTT_RATE_PPS, &all));
    }
    let ratios = results::ratios(&cells);
    let doc = Document {
        schema_version: SCHEMA_VERSION,
        setup: Setup {
            duration_s: a.duration,
            repeat: a.repeat,
            quick: a.quick,
            cpus: std::thread::available_parallelism().map_or(0, |n| n.get()),
            kernel: kernel_release(),
            started_unix_s,
            elapsed_s: progress.start.elapsed().as_secs_f64(),
        },
        cells,
        ratios,
        rtt,
        runs,
    };
    print_tables(&doc, &a.sizes);
    if let Some(p) = &a.json {
        write_json(&doc, p)?;
    }
    if let Some(dir) = &a.charts {
        charts::write_all(&doc, dir)?;
    }
    if let Some(md) = &a.report {
        report::regenerate(&doc, md)?;
        eprintln!("twin bench: regenerated {}", md.display());
    }
    eprintln!(
        "twin bench: done in {:.0} s",
        Duration::from_secs_f64(doc.setup.elapsed_s).as_secs_f64()
    );
    Ok(())
}

fn write_json(doc: &Document, path: &std::path::Path) -> Result<(), Error> {
    std::fs::write(path, serde_json::to_string_pretty(doc)? + "\n")
        .map_err(|e| Error::file("write", path, e))
}

fn print_tables(doc: &Document, sizes: &[usize]) {
    let repeat = doc.setup.repeat;
    for peers in plan::PEER_SETS {
        let t = table::max_rate(doc, peers);
        if !t.rows.is_empty() {
            println!(
                "\nmaximum rate, peers {peers}: Mpps and CPU-seconds per million packets (medians)\n{}",
                t.text()
            );
        }
    }
    if doc.cells.iter().any(|c| c.spec.peers() != "builtin") {
        for &size in sizes {
            println!(
                "\nMpps by peers at {size} B\n{}",
                table::peers_overview(doc, size).text()
            );
        }
    }
    let t = table::fixed_rate(doc);
    if !t.rows.is_empty() {
        println!(
            "\nfixed offered rates, transmit, event-driven (medians of {repeat})\n{}",
            t.text()
        );
    }
    let t = table::ratios(doc);
    if !t.rows.is_empty() {
        println!("\nratios between modes, same invocation\n{}", t.text());
    }
    if !doc.rtt.is_empty() {
        println!(
            "\nround trip, {RTT_SIZE} B at {RTT_RATE_PPS} pps to a reflecting NIC, busy polling (medians of {repeat})\n{}",
            table::rtt(doc).text()
        );
    }
}
