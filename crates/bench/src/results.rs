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
//!
//! Limits: medians and min-max of a few runs (1-3 by default), no confidence
//! intervals; a ratio compares medians of the same invocation only.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::plan::{Mode, Peer, Poll, Spec, Workload};

/// Version of the JSON document's layout.
pub const SCHEMA_VERSION: u32 = 1;

/// Process roles whose CPU time is measured.
pub const ROLES: [&str; 4] = ["client", "switch", "domain", "nic"];

/// The uplink at the end of a run, from the switch's final report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SwitchEnd {
    /// Who ran the uplink driver's fast path when the switch stopped (`inline`,
    /// `domain`, `twin`): a run counts only when it is the spec's mode.
    pub fast_path: String,
    /// Twin faults during the run (each made the uplink fall back to `domain`).
    pub twin_faults: u64,
    /// Times the uplink's driver domain went away during the run.
    pub uplink_disconnects: u64,
}

/// Where the frames of a run went, from the peers' and the switch's reports:
/// `delivered` + the sum of `drops` == `sent` when nothing was lost uncounted.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Frames {
    /// At a fixed rate, the frames due over the client's send phase (rate x its
    /// length, rounded down); `None` at maximum rate.
    pub offered: Option<u64>,
    /// Frames that were due at the fixed rate but found the client's transmit
    /// ring full, so were never sent (0 at maximum rate).
    pub not_sent_ring_full: u64,
    /// Frames that were due at the fixed rate but were given up because the
    /// generator did not run in time (more accrued than its token bucket holds: a
    /// loaded machine); 0 at maximum rate.
    pub not_sent_late: u64,
    /// Frames the client sent.
    pub sent: u64,
    /// Frames the far end (the NIC) received.
    pub delivered: u64,
    /// Frames dropped between, by `PROCESS/REASON` (`switch/...`: every port of
    /// the switch; `nic/...`: the built-in NIC's receive side), zeros included.
    pub drops: BTreeMap<String, u64>,
}

impl Frames {
    /// All counted drops.
    pub fn dropped(&self) -> u64 {
        self.drops.values().sum()
    }

    /// The sum of `self` and `o` (of runs of one spec).
    fn add(&self, o: &Frames) -> Frames {
        let mut drops = self.drops.clone();
        for (k, v) in &o.drops {
            *drops.entry(k.clone()).or_default() += v;
        }
        Frames {
            offered: self.offered.zip(o.offered).map(|(a, b)| a + b),
            not_sent_ring_full: self.not_sent_ring_full + o.not_sent_ring_full,
            not_sent_late: self.not_sent_late + o.not_sent_late,
            sent: self.sent + o.sent,
            delivered: self.delivered + o.delivered,
            drops,
        }
    }
}

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
    /// The uplink at the end (`None` in `native`).
    pub switch_end: Option<SwitchEnd>,
    /// Where the frames went (transmit runs; `None` otherwise).
    pub frames: Option<Frames>,
    /// Runs of the spec it took to get this one: a fixed-rate run whose generator
    /// did not send what the rate offered is run again (1 otherwise).
    pub attempts: u32,
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
    /// Who ran the uplink's fast path when the switch stopped, the same in every
    /// run (`mixed` when not); `None` in `native`.
    pub fast_path_end: Option<String>,
    /// Twin faults, all runs together (`None` in `native`).
    pub twin_faults: Option<u64>,
    /// Disconnects of the uplink's driver domain, all runs together (`None` in
    /// `native`).
    pub uplink_disconnects: Option<u64>,
    /// Where the frames went, all runs together (transmit; `None` otherwise).
    pub frames: Option<Frames>,
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
        let ends: Vec<&SwitchEnd> = runs.iter().filter_map(|r| r.switch_end.as_ref()).collect();
        let all_ends = !ends.is_empty() && ends.len() == runs.len();
        let fast_path_end = all_ends.then(|| {
            if ends.iter().all(|e| e.fast_path == ends[0].fast_path) {
                ends[0].fast_path.clone()
            } else {
                "mixed".to_string()
            }
        });
        let frames = runs
            .iter()
            .map(|r| r.frames.clone())
            .collect::<Option<Vec<Frames>>>()
            .and_then(|f| f.into_iter().reduce(|a, b| a.add(&b)));
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
            fast_path_end,
            twin_faults: all_ends.then(|| ends.iter().map(|e| e.twin_faults).sum()),
            uplink_disconnects: all_ends.then(|| ends.iter().map(|e| e.uplink_disconnects).sum()),
            frames,
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
            switch_end: None,
            frames: None,
            attempts: 1,
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
