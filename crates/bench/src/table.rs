//! Tables of a [`Document`], rendered as aligned text for the terminal or as
//! Markdown for `docs/evaluation.md`. The same rows either way.
//!
//! Limits: layout only (no colour, no terminal width detection): wide tables
//! wrap in a narrow terminal.

use crate::plan::{Mode, Workload, PEER_SETS};
use crate::results::{Cell, Document, ROLES};

/// Rows of strings under a header.
#[derive(Debug, Clone)]
pub struct Table {
    /// Column names.
    pub header: Vec<String>,
    /// Rows, each as long as the header.
    pub rows: Vec<Vec<String>>,
}

impl Table {
    fn new(header: &[&str]) -> Table {
        Table {
            header: header.iter().map(|h| h.to_string()).collect(),
            rows: Vec::new(),
        }
    }

    /// Aligned columns: the first left-aligned, the others right-aligned.
    pub fn text(&self) -> String {
        let widths: Vec<usize> = (0..self.header.len())
            .map(|i| {
                self.rows
                    .iter()
                    .map(|r| r[i].len())
                    .chain([self.header[i].len()])
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        let line = |cells: &[String]| {
            let cols: Vec<String> = cells
                .iter()
                .zip(&widths)
                .enumerate()
                .map(|(i, (c, w))| {
                    if i == 0 {
                        format!("{c:<w$}")
                    } else {
                        format!("{c:>w$}")
                    }
                })
                .collect();
            cols.join("  ").trim_end().to_string()
        };
        let mut out = line(&self.header);
        for r in &self.rows {
            out.push('\n');
            out.push_str(&line(r));
        }
        out.push('\n');
        out
    }

    /// A Markdown table (numbers right-aligned).
    pub fn markdown(&self) -> String {
        let mut out = format!("| {} |\n|", self.header.join(" | "));
        for i in 0..self.header.len() {
            out.push_str(if i == 0 { " --- |" } else { " ---: |" });
        }
        for r in &self.rows {
            out.push_str(&format!("\n| {} |", r.join(" | ")));
        }
        out.push('\n');
        out
    }
}

fn f2(x: f64) -> String {
    format!("{x:.2}")
}

fn f3(x: f64) -> String {
    format!("{x:.3}")
}

fn spread(c: &Cell) -> String {
    if c.runs > 1 {
        format!("{:.2}-{:.2}", c.mpps_min, c.mpps_max)
    } else {
        "-".to_string()
    }
}

/// Maximum-rate cells with the peers `peers`: throughput and CPU per packet by
/// process.
pub fn max_rate(doc: &Document, peers: &str) -> Table {
    let mut header = vec![
        "workload", "size", "mode", "poll", "Mpps", "min-max", "Gbit/s",
    ];
    header.extend(ROLES);
    header.extend(["total", "datapath"]);
    let mut t = Table::new(&header);
    let mut cells: Vec<&Cell> = doc
        .cells
        .iter()
        .filter(|c| c.spec.rate_pps.is_none() && c.spec.peers() == peers)
        .collect();
    cells.sort_by_key(|c| (c.spec.workload, c.spec.size, c.spec.mode));
    for c in cells {
        let mut row = vec![
            c.spec.workload.name().to_string(),
            c.spec.size.to_string(),
            c.spec.mode.name().to_string(),
            c.poll.name().to_string(),
            f2(c.mpps),
            spread(c),
            f2(c.gbps),
        ];
        for role in ROLES {
            row.push(
                c.cpu_s_per_mpkt
                    .get(role)
                    .map_or("-".to_string(), |v| f3(*v)),
            );
        }
        row.push(f3(c.total_cpu_s_per_mpkt));
        row.push(if c.spec.mode == Mode::Native {
            "-".to_string()
        } else {
            f3(c.datapath_cpu_s_per_mpkt)
        });
        t.rows.push(row);
    }
    t
}

/// Fixed-rate cells: what the data path costs at each offered rate.
pub fn fixed_rate(doc: &Document) -> Table {
    let mut t = Table::new(&[
        "offered kpps",
        "size",
        "mode",
        "delivered Mpps",
        "datapath CPU %",
        "datapath cpu_s/Mpkt",
        "Mpps per datapath CPU",
        "total cpu_s/Mpkt",
    ]);
    let mut cells: Vec<&Cell> = doc
        .cells
        .iter()
        .filter(|c| c.spec.rate_pps.is_some())
        .collect();
    cells.sort_by_key(|c| (c.spec.rate_pps, c.spec.size, c.spec.mode));
    for c in cells {
        let native = c.spec.mode == Mode::Native;
        let dash = |s: String| if native { "-".to_string() } else { s };
        t.rows.push(vec![
            (c.spec.rate_pps.unwrap_or(0) / 1000).to_string(),
            c.spec.size.to_string(),
            c.spec.mode.name().to_string(),
            f3(c.mpps),
            dash(format!("{:.1}", c.mpps * c.datapath_cpu_s_per_mpkt * 100.0)),
            dash(f3(c.datapath_cpu_s_per_mpkt)),
            dash(f2(c.datapath_mpps_per_cpu)),
            f3(c.total_cpu_s_per_mpkt),
        ]);
    }
    t
}

/// The ratios of the maximum-rate runs with the built-in peers, and of the
/// fixed-rate runs.
pub fn ratios(doc: &Document) -> Table {
    let mut t = Table::new(&[
        "ratio",
        "workload",
        "size",
        "offered",
        "Mpps",
        "total cpu/pkt",
        "CPU-scaled Mpps",
        "datapath cpu/pkt",
    ]);
    let mut rs: Vec<_> = doc.ratios.iter().filter(|r| r.peers == "builtin").collect();
    rs.sort_by(|a, b| {
        (a.rate_pps, a.workload, a.size, &a.name).cmp(&(b.rate_pps, b.workload, b.size, &b.name))
    });
    for r in rs {
        t.rows.push(vec![
            r.name.clone(),
            r.workload.name().to_string(),
            r.size.to_string(),
            r.rate_pps
                .map_or("max".to_string(), |p| format!("{} kpps", p / 1000)),
            f2(r.mpps),
            f2(r.total_cpu_s_per_mpkt),
            f2(r.total_mpps_per_cpu),
            r.datapath_cpu_s_per_mpkt.map_or("-".to_string(), f2),
        ]);
    }
    t
}

/// Round-trip times.
pub fn rtt(doc: &Document) -> Table {
    let mut t = Table::new(&["mode", "p50 us", "p99 us", "p99.9 us", "max us", "runs"]);
    for r in &doc.rtt {
        t.rows.push(vec![
            r.mode.name().to_string(),
            format!("{:.1}", r.rtt_p50_us),
            format!("{:.1}", r.rtt_p99_us),
            format!("{:.1}", r.rtt_p999_us),
            format!("{:.1}", r.rtt_max_us),
            r.runs.to_string(),
        ]);
    }
    t
}

/// Maximum-rate Mpps of every mode per peers and workload at `size`: the DPDK
/// matrix at a glance.
pub fn peers_overview(doc: &Document, size: usize) -> Table {
    let mut header = vec!["peers", "workload"];
    header.extend(Mode::ALL.map(Mode::name));
    let mut t = Table::new(&header);
    for peers in PEER_SETS {
        for w in Workload::ALL {
            let mut row = vec![peers.to_string(), w.name().to_string()];
            let mut any = false;
            for m in Mode::ALL {
                let c = doc.cells.iter().find(|c| {
                    c.spec.peers() == peers
                        && c.spec.workload == w
                        && c.spec.mode == m
                        && c.spec.size == size
                        && c.spec.rate_pps.is_none()
                });
                any |= c.is_some();
                row.push(c.map_or("-".to_string(), |c| f2(c.mpps)));
            }
            if any {
                t.rows.push(row);
            }
        }
    }
    t
}
