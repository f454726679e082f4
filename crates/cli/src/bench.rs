//! `twin bench`: its command line. The benchmark itself is the `twin-bench` crate
//! (crates/bench); this module only turns the flags into [`twin_bench::Options`].

use std::path::PathBuf;

use clap::Args;

/// Whether the DPDK part of the matrix runs ([`twin_bench::DpdkChoice`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum DpdkChoice {
    /// When `dpdk-testpmd` is on the PATH.
    Auto,
    /// Always (an error when testpmd is missing).
    On,
    /// Never.
    Off,
}

/// Options of `twin bench`.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Seconds of traffic per run.
    #[arg(long, default_value_t = 2.0)]
    duration: f64,
    /// Runs per configuration with the built-in peers; tables show medians and the
    /// spread (min-max) of the Mpps.
    #[arg(long, default_value_t = 3)]
    repeat: usize,
    /// Runs per configuration with DPDK peers (each starts one or two testpmd
    /// processes, which takes a few seconds).
    #[arg(long, default_value_t = 1)]
    dpdk_repeat: usize,
    /// Frame sizes in bytes (Ethernet, without FCS).
    #[arg(long, value_delimiter = ',', default_value = "64,1500")]
    sizes: Vec<usize>,
    /// Modes to run (native, inline, domain, twin).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "native,inline,domain,twin"
    )]
    modes: Vec<String>,
    /// Workloads to run (transmit, receive, roundtrip); the fixed-rate runs are
    /// transmit only.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "transmit,receive,roundtrip"
    )]
    workloads: Vec<String>,
    /// Offered rates (packets per second) of the fixed-rate transmit runs.
    #[arg(long, value_delimiter = ',', default_values_t = twin_bench::FIXED_RATES_PPS)]
    rates: Vec<u64>,
    /// Skip the fixed-rate runs.
    #[arg(long)]
    no_fixed_rates: bool,
    /// Run the matrix with DPDK testpmd peers too.
    #[arg(long, value_enum, default_value_t = DpdkChoice::Auto)]
    dpdk: DpdkChoice,
    /// Skip the round-trip-time runs.
    #[arg(long)]
    no_rtt: bool,
    /// A smoke run: every mode, workload and metric with the built-in peers, one
    /// run of 0.5 s each, two fixed rates, and (with `--dpdk`: when testpmd is
    /// installed, by default) two cells with testpmd, as the client and as the NIC.
    #[arg(long)]
    quick: bool,
    /// Write the results as JSON to this file (schema: docs/evaluation.md).
    #[arg(long)]
    json: Option<PathBuf>,
    /// Write SVG charts into this directory.
    #[arg(long)]
    charts: Option<PathBuf>,
    /// Regenerate this report (docs/evaluation.md): its results section, and the
    /// charts and JSON in the `evaluation/` directory next to it.
    #[arg(long)]
    report: Option<PathBuf>,
}

/// Runs the benchmark, prints the tables and writes what was asked for.
pub fn run(a: BenchArgs) -> anyhow::Result<()> {
    let opts = twin_bench::Options {
        duration: a.duration,
        repeat: a.repeat,
        dpdk_repeat: a.dpdk_repeat,
        sizes: a.sizes,
        modes: a.modes,
        workloads: a.workloads,
        rates: a.rates,
        no_fixed_rates: a.no_fixed_rates,
        dpdk: match a.dpdk {
            DpdkChoice::Auto => twin_bench::DpdkChoice::Auto,
            DpdkChoice::On => twin_bench::DpdkChoice::On,
            DpdkChoice::Off => twin_bench::DpdkChoice::Off,
        },
        no_rtt: a.no_rtt,
        quick: a.quick,
        json: a.json,
        charts: a.charts,
        report: a.report,
    };
    Ok(twin_bench::run(opts)?)
}
