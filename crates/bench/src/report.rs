//! Regenerates the results section of `docs/evaluation.md` from a [`Document`]:
//! everything between the markers [`BEGIN`] and [`END`] is replaced (the method and
//! the discussion around them are written by hand and stay), the charts and the
//! JSON go to the `evaluation/` directory next to the file.
//!
//! Limits: the file must already have both markers, begin before end; the
//! generated section is overwritten, so hand edits belong outside it.

use std::fmt::Write as _;
use std::path::Path;

use crate::plan::{Workload, PEER_SETS};
use crate::results::{Document, Ratio};
use crate::{table, Error};

/// Start of the generated section.
pub const BEGIN: &str = "<!-- twin bench --report: generated from here -->";
/// End of the generated section.
pub const END: &str = "<!-- twin bench --report: generated up to here -->";

/// `YYYY-MM-DD HH:MM` (UTC) of a Unix time (days to civil date after H. Hinnant's
/// published algorithm).
fn utc(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}",
        rem / 3600,
        rem % 3600 / 60
    )
}

/// "a-b" over the ratios `name` of the built-in maximum-rate cells of
/// `workloads` at every size, with `f` picking the number; "-" when none ran.
fn range(
    doc: &Document,
    name: &str,
    workloads: &[Workload],
    f: fn(&Ratio) -> Option<f64>,
) -> String {
    let vals: Vec<f64> = doc
        .ratios
        .iter()
        .filter(|r| r.name == name && r.peers == "builtin" && r.rate_pps.is_none())
        .filter(|r| workloads.contains(&r.workload))
        .filter_map(f)
        .collect();
    if vals.is_empty() {
        return "-".to_string();
    }
    let lo = vals.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = vals.iter().copied().fold(0.0, f64::max);
    if (hi - lo).abs() < 0.005 {
        format!("{lo:.2}x")
    } else {
        format!("{lo:.2}-{hi:.2}x")
    }
}

/// The ratio `name` at each size for `workload`, as "64 B: 1.04x, 1500 B: 1.33x".
fn per_size(
    doc: &Document,
    name: &str,
    workload: Workload,
    f: fn(&Ratio) -> Option<f64>,
) -> String {
    let mut sizes: Vec<usize> = doc.cells.iter().map(|c| c.spec.size).collect();
    sizes.sort_unstable();
    sizes.dedup();
    let parts: Vec<String> = sizes
        .iter()
        .filter_map(|&s| {
            let r = doc.builtin_ratio(name, workload, s)?;
            Some(format!("{s} B: {:.2}x", f(r)?))
        })
        .collect();
    if parts.is_empty() {
        "-".to_string()
    } else {
        parts.join(", ")
    }
}

/// The seeds' claims next to this invocation's numbers.
fn seeds(doc: &Document) -> String {
    let mpps = |r: &Ratio| Some(r.mpps);
    let cpu = |r: &Ratio| Some(r.total_cpu_s_per_mpkt);
    let scaled = |r: &Ratio| Some(r.total_mpps_per_cpu);
    let datapath_scaled = |r: &Ratio| {
        r.datapath_cpu_s_per_mpkt
            .map(|x| if x > 0.0 { 1.0 / x } else { 0.0 })
    };
    let dp = |r: &Ratio| r.datapath_cpu_s_per_mpkt;
    let all = Workload::ALL;
    let rows = [
        (
            "DD/OS: throughput of a driver in a driver domain within 3-8 % of native",
            "0.92-0.97x",
            "domain/native Mpps",
            range(doc, "domain/native", &all, mpps),
        ),
        (
            "DD/OS: at 1.6-2.2x the CPU of native",
            "1.6-2.2x",
            "domain/native CPU per packet, all processes",
            range(doc, "domain/native", &all, cpu),
        ),
        (
            "TwinDrivers: transmit 2.4x the driver domain, CPU-scaled",
            "2.4x",
            "twin/domain Mpps per CPU-second, all processes (data path only)",
            format!(
                "{} ({})",
                per_size(doc, "twin/domain", Workload::Transmit, scaled),
                per_size(doc, "twin/domain", Workload::Transmit, datapath_scaled)
            ),
        ),
        (
            "TwinDrivers: receive 2.1x the driver domain, CPU-scaled",
            "2.1x",
            "twin/domain Mpps per CPU-second, all processes (data path only)",
            format!(
                "{} ({})",
                per_size(doc, "twin/domain", Workload::Receive, scaled),
                per_size(doc, "twin/domain", Workload::Receive, datapath_scaled)
            ),
        ),
        (
            "TwinDrivers: 64-67 % of native throughput",
            "0.64-0.67x",
            "twin/native Mpps",
            range(doc, "twin/native", &all, mpps),
        ),
        (
            "This project's goal: the twin within 10 % of inline CPU per packet",
            "<= 1.10x",
            "twin/inline data-path CPU per packet",
            range(doc, "twin/inline", &all, dp),
        ),
    ];
    let mut out =
        String::from("| claim | seed | measured as | this run |\n| --- | --- | --- | --- |\n");
    for (claim, seed, how, ours) in rows {
        let _ = writeln!(out, "| {claim} | {seed} | {how} | {ours} |");
    }
    out
}

/// The generated Markdown (between the markers).
pub fn section(doc: &Document) -> String {
    let s = &doc.setup;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "Latest run: {} UTC, {:.0} s in all, {} s of traffic per run, {} runs per built-in \
         configuration{}; {} CPUs, Linux {}.\n",
        utc(s.started_unix_s),
        s.elapsed_s,
        s.duration_s,
        s.repeat,
        if s.quick { " (`--quick`)" } else { "" },
        s.cpus,
        s.kernel
    );
    out.push_str("### Against the seeds\n\n");
    out.push_str(&seeds(doc));
    out.push_str("\n### Charts\n\n");
    for (file, alt) in [
        ("throughput.svg", "Throughput by mode"),
        ("cpu-per-packet.svg", "CPU per packet by mode"),
        ("fixed-rate.svg", "Data-path CPU at fixed offered rates"),
        ("rtt.svg", "Round-trip time by mode"),
        ("dpdk.svg", "Throughput by peers"),
    ] {
        let _ = writeln!(out, "![{alt}](evaluation/{file})\n");
    }
    out.push_str("### Maximum rate, built-in peers\n\nMpps and CPU-seconds per million packets by process (medians; `min-max` is the spread of the Mpps).\n\n");
    out.push_str(&table::max_rate(doc, "builtin").markdown());
    if doc.cells.iter().any(|c| c.spec.peers() != "builtin") {
        let mut sizes: Vec<usize> = doc.cells.iter().map(|c| c.spec.size).collect();
        sizes.sort_unstable();
        sizes.dedup();
        for size in sizes {
            let _ = writeln!(out, "\n### Mpps by peers at {size} B\n");
            out.push_str(&table::peers_overview(doc, size).markdown());
        }
        for peers in &PEER_SETS[1..] {
            let t = table::max_rate(doc, peers);
            if !t.rows.is_empty() {
                let _ = writeln!(
                    out,
                    "\n<details><summary>Maximum rate, peers {peers}</summary>\n"
                );
                out.push_str(&t.markdown());
                out.push_str("\n</details>\n");
            }
        }
    }
    let t = table::fixed_rate(doc);
    if !t.rows.is_empty() {
        out.push_str("\n### Fixed offered rates (transmit, built-in peers, event-driven)\n\n");
        out.push_str(&t.markdown());
    }
    out.push_str("\n### Ratios between modes (built-in peers)\n\n");
    out.push_str(&table::ratios(doc).markdown());
    if !doc.rtt.is_empty() {
        out.push_str("\n### Round-trip time under light load (64 B, 10 kpps, busy polling)\n\n");
        out.push_str(&table::rtt(doc).markdown());
    }
    out
}

/// Rewrites `md`'s generated section and writes the charts and `results.json`
/// into `evaluation/` next to it.
pub fn regenerate(doc: &Document, md: &Path) -> Result<(), Error> {
    let text = std::fs::read_to_string(md).map_err(|e| Error::file("read", md, e))?;
    let (Some(b), Some(e)) = (text.find(BEGIN), text.find(END)) else {
        return Err(Error::Options(format!(
            "{} has no generated section (the lines {BEGIN:?} and {END:?})",
            md.display()
        )));
    };
    if e < b {
        return Err(Error::Options(format!(
            "{}: the end marker comes before the begin marker",
            md.display()
        )));
    }
    let dir = md.parent().unwrap_or(Path::new(".")).join("evaluation");
    crate::charts::write_all(doc, &dir)?;
    crate::write_json(doc, &dir.join("results.json"))?;
    let new = format!("{}{BEGIN}\n\n{}\n{}", &text[..b], section(doc), &text[e..]);
    std::fs::write(md, new).map_err(|e| Error::file("write", md, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_formats_known_instants() {
        assert_eq!(utc(0), "1970-01-01 00:00");
        assert_eq!(utc(951_782_400), "2000-02-29 00:00");
        assert_eq!(utc(1_795_300_000), "2026-11-21 22:26");
    }
}
