//! The benchmark's numbers: a [`Sample`] per run, a [`Cell`] per spec (medians
//! and spread of its runs), [`Ratio`]s between modes measured in the same
//! invocation, [`RttRow`]s, and the JSON [`Document`] (its schema is documented in
//! `docs/evaluation.md`, "JSON schema"; bump [`SCHEMA_VERSION`] on any change that
//! is not an addition).
//!
//! Costs are CPU-seconds per million delivered packets, per process role
//! (`client`, `switch`, `domain`, `nic`): the seeds' CPU-scaled units, inverted.
//! `datapath` is `switch` + `domain`, the cost of the path itself, since the client
//! and the NIC are the same programs in every mode.

use std::collections::BTreeMap;

use serde::Serialize;

use super::plan::{Mode, Peer, Poll, Spec, Workload};

/// Version of the JSON document's layout.
pub const SCHEMA_VERSION: u32 = 1;

/// Process roles whose CPU time is measured.
pub const ROLES: [&str; 4] = ["client", "switch", "domain", "nic"];

/// One run of a spec.
#[derive(Debug, Clone, Serialize)]
pub struct Sample {
    /// What ran.
    #[serde(flatten)]
    pub spec: Spec,
    /// Poll mode of the switch, its domain and the built-in peers.
    pub poll: Poll,
    /// Frames that reached the far end (the NIC for transmit, the client
    /// otherwise) during the measured window.
    pub packets: f64,
    /// Length of the measured window in seconds.
    pub secs: f64,
    /// CPU-seconds per role during the window.
    pub cpu_s: BTreeMap<String, f64>,
}

impl Sample {
    /// Delivered million packets per second.
    pub fn mpps(&self) -> f64 {
        if self.secs > 0.0 {
            self.packets / self.secs / 1e6
        } else {
            0.0
        }
    }

    /// CPU-seconds per million delivered packets of the roles `roles`.
    fn cost_of(&self, roles: &[&str]) -> f64 {
        let cpu = roles
            .iter()
            .filter_map(|r| self.cpu_s.get(*r))
            // From +0.0: an empty float sum is -0.0.
            .fold(0.0, |a, c| a + c);
        if self.packets > 0.0 {
            cpu / (self.packets / 1e6)
        } else {
            0.0
        }
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => 0.0,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// The medians of one spec's runs.
#[derive(Debug, Clone, Serialize)]
pub struct Cell {
    /// What ran.
    #[serde(flatten)]
    pub spec: Spec,
    /// Poll mode of the switch, its domain and the built-in peers.
    pub poll: Poll,
    /// Runs that the medians are over.
    pub runs: usize,
    /// Delivered million packets per second (median).
    pub mpps: f64,
    /// Smallest Mpps of the runs.
    pub mpps_min: f64,
    /// Largest Mpps of the runs.
    pub mpps_max: f64,
    /// Delivered Gbit/s of frame bytes (median Mpps x size x 8).
    pub gbps: f64,
    /// CPU-seconds per million packets per role (median of each).
    pub cpu_s_per_mpkt: BTreeMap<String, f64>,
    /// CPU-seconds per million packets, all roles together (median).
    pub total_cpu_s_per_mpkt: f64,
    /// CPU-seconds per million packets of switch + domain (median).
    pub datapath_cpu_s_per_mpkt: f64,
    /// Million packets per CPU-second of switch + domain (inverse of the above;
    /// 0 without a data path, in `native`).
    pub datapath_mpps_per_cpu: f64,
    /// Million packets per CPU-second of all processes: the seeds' CPU-scaled
    /// throughput.
    pub total_mpps_per_cpu: f64,
}

fn inverse(x: f64) -> f64 {
    if x > 0.0 {
        1.0 / x
    } else {
        0.0
    }
}

impl Cell {
    /// The medians of `runs`, which are all of `spec`.
    pub fn of(spec: Spec, poll: Poll, runs: &[Sample]) -> Cell {
        let mpps: Vec<f64> = runs.iter().map(Sample::mpps).collect();
        let cost = |roles: &[&str]| median(runs.iter().map(|r| r.cost_of(roles)).collect());
        let per_role = ROLES
            .iter()
            .filter(|r| runs.iter().any(|s| s.cpu_s.contains_key(**r)))
            .map(|r| (r.to_string(), cost(&[r])))
            .collect();
        let total = cost(&ROLES);
        let datapath = cost(&["switch", "domain"]);
        let m = median(mpps.clone());
        Cell {
            spec,
            poll,
            runs: runs.len(),
            mpps: m,
            mpps_min: mpps.iter().copied().fold(f64::INFINITY, f64::min).min(m),
            mpps_max: mpps.iter().copied().fold(0.0, f64::max),
            gbps: m * 1e6 * spec.size as f64 * 8.0 / 1e9,
            cpu_s_per_mpkt: per_role,
            total_cpu_s_per_mpkt: total,
            datapath_cpu_s_per_mpkt: datapath,
            datapath_mpps_per_cpu: inverse(datapath),
            total_mpps_per_cpu: inverse(total),
        }
    }
}

/// One mode against another on the same workload, size, peers and rate, from the
/// same invocation.
#[derive(Debug, Clone, Serialize)]
pub struct Ratio {
    /// `twin/inline`, `twin/domain`, or `MODE/native`.
    pub name: String,
    /// The workload compared.
    pub workload: Workload,
    /// Frame size.
    pub size: usize,
    /// Peers label (`builtin`, `dpdk-client`, `dpdk-nic`, `dpdk-both`).
    pub peers: &'static str,
    /// Offered rate, `None` for maximum rate.
    pub rate_pps: Option<u64>,
    /// Delivered Mpps, numerator over denominator.
    pub mpps: f64,
    /// CPU-seconds per Mpkt of all processes, numerator over denominator.
    pub total_cpu_s_per_mpkt: f64,
    /// CPU-scaled throughput (Mpps per CPU-second of all processes): the seeds'
    /// unit, numerator over denominator.
    pub total_mpps_per_cpu: f64,
    /// Data-path CPU per packet, numerator over denominator (`None` against
    /// `native`, which has no data path).
    pub datapath_cpu_s_per_mpkt: Option<f64>,
}

fn ratio(a: f64, b: f64) -> f64 {
    if b > 0.0 {
        a / b
    } else {
        0.0
    }
}

/// Pairs compared in every group of cells that has both.
const PAIRS: [(Mode, Mode); 5] = [
    (Mode::Twin, Mode::Inline),
    (Mode::Twin, Mode::Domain),
    (Mode::Inline, Mode::Native),
    (Mode::Domain, Mode::Native),
    (Mode::Twin, Mode::Native),
];

/// Every ratio of [`PAIRS`] for which both cells exist.
pub fn ratios(cells: &[Cell]) -> Vec<Ratio> {
    let mut out = Vec::new();
    for a in cells {
        for (num, den) in PAIRS {
            if a.spec.mode != num {
                continue;
            }
            let want = Spec {
                mode: den,
                ..a.spec
            };
            let Some(b) = cells.iter().find(|c| c.spec == want) else {
                continue;
            };
            out.push(Ratio {
                name: format!("{}/{}", num.name(), den.name()),
                workload: a.spec.workload,
                size: a.spec.size,
                peers: a.spec.peers(),
                rate_pps: a.spec.rate_pps,
                mpps: ratio(a.mpps, b.mpps),
                total_cpu_s_per_mpkt: ratio(a.total_cpu_s_per_mpkt, b.total_cpu_s_per_mpkt),
                total_mpps_per_cpu: ratio(a.total_mpps_per_cpu, b.total_mpps_per_cpu),
                datapath_cpu_s_per_mpkt: (den != Mode::Native)
                    .then(|| ratio(a.datapath_cpu_s_per_mpkt, b.datapath_cpu_s_per_mpkt)),
            });
        }
    }
    out
}

/// Round-trip time of one mode under light load (medians over runs).
#[derive(Debug, Clone, Serialize)]
pub struct RttRow {
    /// The data path.
    pub mode: Mode,
    /// Frame size.
    pub size: usize,
    /// Offered rate in packets per second.
    pub rate_pps: u64,
    /// Poll mode of every process.
    pub poll: Poll,
    /// Runs the medians are over.
    pub runs: usize,
    /// Median round-trip time in microseconds.
    pub rtt_p50_us: f64,
    /// 99th percentile.
    pub rtt_p99_us: f64,
    /// 99.9th percentile.
    pub rtt_p999_us: f64,
    /// Largest (median of the runs' maxima).
    pub rtt_max_us: f64,
}

impl RttRow {
    /// The medians of per-run `[p50, p99, p99.9, max]` quadruples.
    pub fn of(mode: Mode, size: usize, rate_pps: u64, runs: &[[f64; 4]]) -> RttRow {
        let col = |i: usize| median(runs.iter().map(|r| r[i]).collect());
        RttRow {
            mode,
            size,
            rate_pps,
            poll: Poll::Busy,
            runs: runs.len(),
            rtt_p50_us: col(0),
            rtt_p99_us: col(1),
            rtt_p999_us: col(2),
            rtt_max_us: col(3),
        }
    }
}

/// The machine and the invocation, for the record.
#[derive(Debug, Clone, Serialize)]
pub struct Setup {
    /// Seconds of traffic per run.
    pub duration_s: f64,
    /// Runs per spec.
    pub repeat: usize,
    /// `--quick` was given.
    pub quick: bool,
    /// CPUs online.
    pub cpus: usize,
    /// `uname -r`.
    pub kernel: String,
    /// Seconds since the Unix epoch at the start.
    pub started_unix_s: u64,
    /// Wall-clock seconds the whole invocation took.
    pub elapsed_s: f64,
}

/// Everything one invocation measured: what `--json` writes.
#[derive(Debug, Clone, Serialize)]
pub struct Document {
    /// [`SCHEMA_VERSION`].
    pub schema_version: u32,
    /// The invocation.
    pub setup: Setup,
    /// One per spec, medians.
    pub cells: Vec<Cell>,
    /// Mode against mode.
    pub ratios: Vec<Ratio>,
    /// Round-trip times under light load.
    pub rtt: Vec<RttRow>,
    /// Every run.
    pub runs: Vec<Sample>,
}

impl Document {
    /// The cell of `spec`, if it ran.
    pub fn cell(&self, spec: &Spec) -> Option<&Cell> {
        self.cells.iter().find(|c| c.spec == *spec)
    }

    /// The built-in, maximum-rate cell of `mode`, `workload`, `size`.
    pub fn builtin(&self, mode: Mode, workload: Workload, size: usize) -> Option<&Cell> {
        self.cell(&Spec {
            mode,
            workload,
            client: Peer::Builtin,
            nic: Peer::Builtin,
            size,
            rate_pps: None,
        })
    }

    /// The ratio `name` for the built-in, maximum-rate cells of `workload`, `size`.
    pub fn builtin_ratio(&self, name: &str, workload: Workload, size: usize) -> Option<&Ratio> {
        self.ratios.iter().find(|r| {
            r.name == name
                && r.workload == workload
                && r.size == size
                && r.peers == "builtin"
                && r.rate_pps.is_none()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(mode: Mode, packets: f64, cpu: &[(&str, f64)]) -> Sample {
        Sample {
            spec: Spec {
                mode,
                workload: Workload::Transmit,
                client: Peer::Builtin,
                nic: Peer::Builtin,
                size: 64,
                rate_pps: None,
            },
            poll: Poll::Busy,
            packets,
            secs: 1.0,
            cpu_s: cpu.iter().map(|(r, c)| (r.to_string(), *c)).collect(),
        }
    }

    #[test]
    fn cell_takes_medians_and_costs_per_role() {
        let runs = [
            sample(
                Mode::Twin,
                1e6,
                &[("switch", 0.2), ("domain", 0.0), ("client", 1.0)],
            ),
            sample(
                Mode::Twin,
                3e6,
                &[("switch", 0.6), ("domain", 0.0), ("client", 1.0)],
            ),
            sample(
                Mode::Twin,
                2e6,
                &[("switch", 0.4), ("domain", 0.0), ("client", 1.0)],
            ),
        ];
        let c = Cell::of(runs[0].spec, Poll::Busy, &runs);
        assert_eq!(c.mpps, 2.0);
        assert_eq!((c.mpps_min, c.mpps_max), (1.0, 3.0));
        assert!((c.datapath_cpu_s_per_mpkt - 0.2).abs() < 1e-12);
        assert!((c.cpu_s_per_mpkt["client"] - 0.5).abs() < 1e-12);
        assert!(!c.cpu_s_per_mpkt.contains_key("nic"));
        assert!((c.gbps - 2e6 * 64.0 * 8.0 / 1e9).abs() < 1e-12);
    }

    #[test]
    fn ratios_pair_modes_of_the_same_spec_only() {
        let cell = |mode, packets, sw| {
            let s = sample(mode, packets, &[("switch", sw), ("client", 1.0)]);
            Cell::of(s.spec, Poll::Busy, &[s])
        };
        let mut other_size = cell(Mode::Domain, 1e6, 1.0);
        other_size.spec.size = 1500;
        let cells = vec![
            cell(Mode::Native, 4e6, 0.0),
            cell(Mode::Inline, 2e6, 0.5),
            cell(Mode::Twin, 2e6, 1.0),
            other_size,
        ];
        let r = ratios(&cells);
        let names: Vec<&str> = r.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, ["inline/native", "twin/inline", "twin/native"]);
        let ti = &r[1];
        assert_eq!(ti.mpps, 1.0);
        assert_eq!(ti.datapath_cpu_s_per_mpkt, Some(2.0));
        assert_eq!(r[0].datapath_cpu_s_per_mpkt, None);
        assert_eq!(r[0].mpps, 0.5);
    }
}
