//! SVG charts of a [`Document`] (plotters' SVG back-end; the text is left to the
//! viewer's sans-serif font, so label widths are estimates):
//! * `throughput.svg`: Mpps by mode for each workload and size, with the runs'
//!   spread as whiskers (built-in peers, maximum rate);
//! * `cpu-per-packet.svg`: CPU-seconds per million packets by mode, the data path
//!   (switch + driver domain) solid and the client and NIC light on top;
//! * `fixed-rate.svg`: the data path's CPU (in cores) at each offered rate,
//!   event-driven, one panel per size;
//! * `rtt.svg`: round-trip-time percentiles by mode (log scale);
//! * `dpdk.svg`: Mpps by mode for each peer set and workload at the smallest size
//!   (only when DPDK peers ran).

use std::path::Path;

use plotters::coord::types::RangedCoordf64;
use plotters::coord::Shift;
use plotters::prelude::*;

use crate::plan::{Mode, Peer, Workload, PEER_SETS};
use crate::results::Cell;
use crate::results::Document;
use crate::Error;

/// The colour of each mode in every chart.
fn mode_color(m: Mode) -> RGBColor {
    match m {
        Mode::Native => RGBColor(120, 120, 120),
        Mode::Inline => RGBColor(31, 119, 180),
        Mode::Domain => RGBColor(255, 127, 14),
        Mode::Twin => RGBColor(44, 160, 44),
    }
}

/// One bar: its value, an optional lighter segment stacked on top, and an optional
/// whisker (min, max).
#[derive(Debug, Clone, Copy)]
struct Bar {
    value: f64,
    on_top: f64,
    whisker: Option<(f64, f64)>,
}

/// A named, coloured series of bars, one (or none) per group.
struct Series {
    name: String,
    color: RGBColor,
    bars: Vec<Option<Bar>>,
}

fn err<E: std::fmt::Debug>(e: E) -> Error {
    Error::Chart(format!("{e:?}"))
}

/// Grouped bars on `area`: one group per entry of `groups`, one bar per series.
fn grouped_bars(
    area: &DrawingArea<SVGBackend<'_>, Shift>,
    title: &str,
    y_desc: &str,
    groups: &[String],
    series: &[Series],
    log_y: bool,
) -> Result<(), Error> {
    let top = series
        .iter()
        .flat_map(|s| s.bars.iter().flatten())
        .map(|b| (b.value + b.on_top).max(b.whisker.map_or(0.0, |w| w.1)))
        .fold(0.0, f64::max);
    let bottom = series
        .iter()
        .flat_map(|s| s.bars.iter().flatten())
        .map(|b| b.value)
        .filter(|v| *v > 0.0)
        .fold(f64::INFINITY, f64::min);
    let n = groups.len().max(1) as f64;
    let mut builder = ChartBuilder::on(area);
    builder
        .caption(title, ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(48)
        .y_label_area_size(64);
    if log_y {
        let base = if bottom.is_finite() {
            bottom / 10.0
        } else {
            0.1
        };
        let mut chart = builder
            .build_cartesian_2d(0f64..n, (base..(top * 2.0).max(base * 10.0)).log_scale())
            .map_err(err)?;
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_labels(0)
            .y_desc(y_desc)
            .y_label_formatter(&|y| format!("{y:.0}"))
            .draw()
            .map_err(err)?;
        draw_bars(area, &mut chart, groups, series, base)
    } else {
        let mut chart = builder
            .build_cartesian_2d(0f64..n, 0f64..(top * 1.25).max(1e-3))
            .map_err(err)?;
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_labels(0)
            .y_desc(y_desc)
            .draw()
            .map_err(err)?;
        draw_bars(area, &mut chart, groups, series, 0.0)
    }
}

/// Draws `series` as bars side by side in each group, from `base` (0, or on a log
/// scale a decade below the smallest bar), with the legend and the group names.
fn draw_bars<'a, 'b: 'a, Y: Ranged<ValueType = f64>>(
    area: &DrawingArea<SVGBackend<'b>, Shift>,
    chart: &mut ChartContext<'a, SVGBackend<'b>, Cartesian2d<RangedCoordf64, Y>>,
    groups: &[String],
    series: &[Series],
    base: f64,
) -> Result<(), Error> {
    let width = 0.8 / series.len().max(1) as f64;
    for (si, s) in series.iter().enumerate() {
        let x0 = |g: usize| g as f64 + 0.1 + si as f64 * width;
        let bars: Vec<(usize, Bar)> = s
            .bars
            .iter()
            .enumerate()
            .filter_map(|(g, b)| b.map(|b| (g, b)))
            .collect();
        chart
            .draw_series(bars.iter().map(|&(g, b)| {
                Rectangle::new(
                    [(x0(g), base), (x0(g) + width * 0.9, b.value.max(base))],
                    s.color.filled(),
                )
            }))
            .map_err(err)?
            .label(s.name.clone())
            .legend({
                let c = s.color;
                move |(x, y)| Rectangle::new([(x, y - 5), (x + 12, y + 5)], c.filled())
            });
        chart
            .draw_series(bars.iter().filter(|(_, b)| b.on_top > 0.0).map(|&(g, b)| {
                Rectangle::new(
                    [
                        (x0(g), b.value.max(base)),
                        (x0(g) + width * 0.9, b.value + b.on_top),
                    ],
                    s.color.mix(0.35).filled(),
                )
            }))
            .map_err(err)?;
        chart
            .draw_series(bars.iter().filter_map(|&(g, b)| {
                let (lo, hi) = b.whisker?;
                let x = x0(g) + width * 0.45;
                Some(PathElement::new(
                    [(x, lo.max(base)), (x, hi)],
                    BLACK.stroke_width(1),
                ))
            }))
            .map_err(err)?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK.mix(0.4))
        .draw()
        .map_err(err)?;
    // Group names under the axis, centred under their bars.
    for (g, name) in groups.iter().enumerate() {
        let (px, py) = chart.backend_coord(&(g as f64 + 0.5, base));
        area.draw(&Text::new(
            name.clone(),
            (px, py + 10),
            ("sans-serif", 13).into_font().color(&BLACK).pos(
                plotters::style::text_anchor::Pos::new(
                    plotters::style::text_anchor::HPos::Center,
                    plotters::style::text_anchor::VPos::Top,
                ),
            ),
        ))
        .map_err(err)?;
    }
    Ok(())
}

/// Draws one SVG file `dir/name` of `size` pixels on a white background.
fn with_svg(
    dir: &Path,
    name: &str,
    size: (u32, u32),
    draw: impl FnOnce(&DrawingArea<SVGBackend<'_>, Shift>) -> Result<(), Error>,
) -> Result<(), Error> {
    let path = dir.join(name);
    let area = SVGBackend::new(&path, size).into_drawing_area();
    area.fill(&WHITE).map_err(err)?;
    draw(&area)?;
    area.present().map_err(err)
}

/// One series per mode, with the bar `bar` makes for each group.
fn mode_series<G>(
    modes: &[Mode],
    groups: &[G],
    bar: impl Fn(Mode, &G) -> Option<Bar>,
) -> Vec<Series> {
    modes
        .iter()
        .map(|&m| Series {
            name: m.name().to_string(),
            color: mode_color(m),
            bars: groups.iter().map(|g| bar(m, g)).collect(),
        })
        .collect()
}

/// A cell's median Mpps, with the runs' spread as a whisker.
fn mpps_bar(c: &Cell) -> Bar {
    Bar {
        value: c.mpps,
        on_top: 0.0,
        whisker: (c.runs > 1).then_some((c.mpps_min, c.mpps_max)),
    }
}

/// Built-in peers, maximum rate: one group per (workload, size).
fn builtin_groups(doc: &Document) -> Vec<(Workload, usize)> {
    let mut g: Vec<(Workload, usize)> = doc
        .cells
        .iter()
        .filter(|c| c.spec.rate_pps.is_none() && c.spec.peers() == "builtin")
        .map(|c| (c.spec.workload, c.spec.size))
        .collect();
    g.sort();
    g.dedup();
    g
}

fn modes_present(doc: &Document) -> Vec<Mode> {
    Mode::ALL
        .into_iter()
        .filter(|m| doc.cells.iter().any(|c| c.spec.mode == *m))
        .collect()
}

/// Writes every chart the document has data for into `dir`.
pub fn write_all(doc: &Document, dir: &Path) -> Result<(), Error> {
    std::fs::create_dir_all(dir).map_err(|e| Error::file("create", dir, e))?;
    let groups = builtin_groups(doc);
    let names: Vec<String> = groups
        .iter()
        .map(|(w, s)| format!("{} {s} B", w.name()))
        .collect();
    let modes = modes_present(doc);

    let throughput = mode_series(&modes, &groups, |m, &(w, s)| {
        doc.builtin(m, w, s).map(mpps_bar)
    });
    with_svg(dir, "throughput.svg", (960, 460), |area| {
        grouped_bars(
            area,
            "Throughput at maximum rate (built-in peers; whiskers: min-max of the runs)",
            "Mpps delivered",
            &names,
            &throughput,
            false,
        )
    })?;

    let cost = mode_series(&modes, &groups, |m, &(w, s)| {
        doc.builtin(m, w, s).map(|c| Bar {
            value: c.datapath_cpu_s_per_mpkt,
            on_top: (c.total_cpu_s_per_mpkt - c.datapath_cpu_s_per_mpkt).max(0.0),
            whisker: None,
        })
    });
    with_svg(dir, "cpu-per-packet.svg", (960, 460), |area| {
        grouped_bars(
            area,
            "CPU per packet at maximum rate (solid: switch + driver domain; light: client + NIC)",
            "CPU-seconds per million packets",
            &names,
            &cost,
            false,
        )
    })?;

    fixed_rate_chart(doc, dir, &modes)?;

    if !doc.rtt.is_empty() {
        let pct = ["p50", "p99", "p99.9"];
        let shades = [
            RGBColor(70, 70, 160),
            RGBColor(140, 140, 210),
            RGBColor(200, 200, 235),
        ];
        let rtt_names: Vec<String> = doc.rtt.iter().map(|r| r.mode.name().to_string()).collect();
        let series: Vec<Series> = pct
            .iter()
            .zip(shades)
            .enumerate()
            .map(|(i, (p, color))| Series {
                name: p.to_string(),
                color,
                bars: doc
                    .rtt
                    .iter()
                    .map(|r| {
                        let v = [r.rtt_p50_us, r.rtt_p99_us, r.rtt_p999_us][i];
                        Some(Bar {
                            value: v,
                            on_top: 0.0,
                            whisker: None,
                        })
                    })
                    .collect(),
            })
            .collect();
        with_svg(dir, "rtt.svg", (760, 420), |area| {
            grouped_bars(
                area,
                "Round-trip time, 64 B at 10 kpps to a reflecting NIC (busy polling)",
                "microseconds (log)",
                &rtt_names,
                &series,
                true,
            )
        })?;
    }

    dpdk_chart(doc, dir, &modes)?;
    Ok(())
}

fn fixed_rate_chart(doc: &Document, dir: &Path, modes: &[Mode]) -> Result<(), Error> {
    let mut sizes: Vec<usize> = doc
        .cells
        .iter()
        .filter(|c| c.spec.rate_pps.is_some())
        .map(|c| c.spec.size)
        .collect();
    sizes.sort_unstable();
    sizes.dedup();
    if sizes.is_empty() {
        return Ok(());
    }
    with_svg(
        dir,
        "fixed-rate.svg",
        (480 * sizes.len() as u32, 420),
        |root| fixed_rate_panels(doc, root, &sizes, modes),
    )
}

fn fixed_rate_panels(
    doc: &Document,
    root: &DrawingArea<SVGBackend<'_>, Shift>,
    sizes: &[usize],
    modes: &[Mode],
) -> Result<(), Error> {
    let panels = root.split_evenly((1, sizes.len()));
    for (panel, &size) in panels.iter().zip(sizes) {
        let cells: Vec<_> = doc
            .cells
            .iter()
            .filter(|c| {
                c.spec.rate_pps.is_some() && c.spec.size == size && c.spec.mode != Mode::Native
            })
            .collect();
        let rate = |c: &&crate::results::Cell| c.spec.rate_pps.unwrap_or(0) as f64 / 1e6;
        let cores = |c: &&crate::results::Cell| c.mpps * c.datapath_cpu_s_per_mpkt;
        let xmax = cells.iter().map(rate).fold(0.0, f64::max);
        let ymax = cells.iter().map(cores).fold(0.0, f64::max);
        if cells.is_empty() {
            continue;
        }
        let mut chart = ChartBuilder::on(panel)
            .caption(
                format!("Data-path CPU at fixed rates, {size} B (event-driven)"),
                ("sans-serif", 16),
            )
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(56)
            .build_cartesian_2d(0f64..xmax * 1.1, 0f64..(ymax * 1.25).max(0.05))
            .map_err(err)?;
        chart
            .configure_mesh()
            .x_desc("offered Mpps")
            .y_desc("CPU cores (switch + driver domain)")
            .draw()
            .map_err(err)?;
        for &m in modes.iter().filter(|m| **m != Mode::Native) {
            let mut pts: Vec<(f64, f64)> = cells
                .iter()
                .filter(|c| c.spec.mode == m)
                .map(|c| (rate(c), cores(c)))
                .collect();
            pts.sort_by(|a, b| a.0.total_cmp(&b.0));
            let color = mode_color(m);
            chart
                .draw_series(LineSeries::new(pts.clone(), color.stroke_width(2)))
                .map_err(err)?
                .label(m.name())
                .legend(move |(x, y)| {
                    PathElement::new([(x, y), (x + 14, y)], color.stroke_width(2))
                });
            chart
                .draw_series(pts.iter().map(|&p| Circle::new(p, 3, color.filled())))
                .map_err(err)?;
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK.mix(0.4))
            .draw()
            .map_err(err)?;
    }
    Ok(())
}

fn dpdk_chart(doc: &Document, dir: &Path, modes: &[Mode]) -> Result<(), Error> {
    let Some(size) = doc
        .cells
        .iter()
        .filter(|c| c.spec.client == Peer::Dpdk || c.spec.nic == Peer::Dpdk)
        .map(|c| c.spec.size)
        .min()
    else {
        return Ok(());
    };
    let mut groups: Vec<(&'static str, Workload)> = doc
        .cells
        .iter()
        .filter(|c| c.spec.rate_pps.is_none() && c.spec.size == size)
        .map(|c| (c.spec.peers(), c.spec.workload))
        .collect();
    groups.sort_by_key(|(p, w)| (PEER_SETS.iter().position(|x| x == p), *w));
    groups.dedup();
    let names: Vec<String> = groups
        .iter()
        .map(|(p, w)| format!("{p} {}", &w.name()[..2]))
        .collect();
    let series = mode_series(modes, &groups, |m, &(p, w)| {
        doc.cells
            .iter()
            .find(|c| {
                c.spec.mode == m
                    && c.spec.peers() == p
                    && c.spec.workload == w
                    && c.spec.size == size
                    && c.spec.rate_pps.is_none()
            })
            .map(mpps_bar)
    });
    with_svg(dir, "dpdk.svg", (1280, 460), |area| {
        grouped_bars(
            area,
            &format!("Throughput by peers at {size} B (tr: transmit, re: receive, ro: round trip)"),
            "Mpps delivered",
            &names,
            &series,
            false,
        )
    })
}
