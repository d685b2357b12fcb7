//! The scaling figures of `cargo xtask bench`: throughput and peak memory of each command at
//! each size, as a Markdown table (`scaling.md`) and a chart (`scaling.svg`, written by hand:
//! axes, one polyline per command, a legend). Both files are written to a temporary file
//! beside them and renamed over them.

use crate::bench::{human, Size};
use anyhow::{Context, Result};
use std::fmt::Write as _;
use std::path::Path;

pub const MARKDOWN: &str = "scaling.md";
pub const SVG: &str = "scaling.svg";

/// One command at one size.
pub struct Point {
    /// The command, as the table and legend name it.
    pub series: String,
    /// The size asked for (the column).
    pub size: u64,
    /// Octets it moved: the stream, or the wire for a migration.
    pub bytes: u64,
    /// Best time.
    pub secs: f64,
    /// Peak resident memory, octets.
    pub rss: u64,
    /// Its ratio to each baseline of the same run (above 1: faster than the baseline).
    pub vs: Vec<(String, f64)>,
    /// The process holds a simulated domain of `size` octets (its RSS may grow with it).
    pub domain: bool,
    /// Drawn in the chart (the table has every point).
    pub chart: bool,
}

impl Point {
    fn mbps(&self) -> f64 {
        self.bytes as f64 / self.secs / 1e6
    }

    fn rss_mib(&self) -> f64 {
        self.rss as f64 / MIB
    }
}

const MIB: f64 = (1u64 << 20) as f64;

/// The series in the order they first appear, each with its points.
fn series(points: &[Point]) -> Vec<(&str, Vec<&Point>)> {
    let mut out: Vec<(&str, Vec<&Point>)> = Vec::new();
    for p in points {
        match out.iter_mut().find(|(name, _)| *name == p.series) {
            Some((_, v)) => v.push(p),
            None => out.push((&p.series, vec![p])),
        }
    }
    out
}

/// A Markdown table cell: no pipes or line breaks.
fn cell(s: &str) -> String {
    s.replace('|', "\\|").replace('\n', " ")
}

/// Writes both files into `dir`; returns the Markdown.
/// `floor`: the peak RSS `true` reports when the bench runs it under its launcher as the table
/// is written (the launcher's own resident set, the floor of every figure it measures).
pub fn write(
    dir: &Path,
    points: &[Point],
    sizes: &[Size],
    runs: usize,
    floor: u64,
) -> Result<String> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let md = markdown(points, sizes, runs, floor);
    write_atomic(&dir.join(MARKDOWN), &md)?;
    write_atomic(&dir.join(SVG), &svg(points, sizes))?;
    Ok(md)
}

/// Writes `text` to a temporary file beside `path` and renames it over `path`.
fn write_atomic(path: &Path, text: &str) -> Result<()> {
    let name = path.file_name().context("a file name")?.to_string_lossy();
    let tmp = path.with_file_name(format!(".{name}.tmp-{}", std::process::id()));
    std::fs::write(&tmp, text).with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| {
        let _ = std::fs::remove_file(&tmp);
        format!("cannot rename {} to {}", tmp.display(), path.display())
    })
}

fn markdown(points: &[Point], sizes: &[Size], runs: usize, floor: u64) -> String {
    let all = series(points);
    let heads: Vec<String> = sizes.iter().map(Size::human).collect();
    let mut s = String::new();
    let _ = writeln!(s, "# xenmig: cost against the size of the work\n");
    let _ = writeln!(
        s,
        "Written by `cargo xtask bench`: best of {runs} runs at each size, every input in the \
         page cache.\nThroughput is octets of the stream (for the migration, octets on the \
         wire) per second of the\nbest run; in brackets, the ratio to each baseline named \
         beside the command, measured in the same\nrun at the same size (above 1: faster than \
         the baseline). The ratio targets are judged on the\nlargest size only.\n"
    );
    let _ = writeln!(s, "## Throughput (MB/s)\n");
    let _ = writeln!(s, "| command | against | {} |", heads.join(" | "));
    let _ = writeln!(s, "|---|---|{}", "---:|".repeat(sizes.len()));
    for (name, ps) in &all {
        let against = ps
            .first()
            .map(|p| {
                p.vs.iter()
                    .map(|(b, _)| b.as_str())
                    .collect::<Vec<_>>()
                    .join("; ")
            })
            .unwrap_or_default();
        let cells: Vec<String> = sizes
            .iter()
            .map(|z| match ps.iter().find(|p| p.size == z.bytes) {
                None => "-".into(),
                Some(p) => {
                    let r: Vec<String> = p.vs.iter().map(|(_, r)| format!("{r:.2}x")).collect();
                    format!("{:.0} ({})", p.mbps(), r.join(", "))
                }
            })
            .collect();
        let _ = writeln!(
            s,
            "| {} | {} | {} |",
            cell(name),
            cell(&against),
            cells.join(" | ")
        );
    }
    let _ = writeln!(
        s,
        "\n## Peak RSS (MiB)\n\nThe process's `ru_maxrss` (for a pipeline, its last command). \
         The commands marked (*) hold a\nsimulated domain as large as the column's size; the \
         others should stay flat. A child's\n`ru_maxrss` starts at its parent's resident set \
         (Linux keeps the high-water mark of the memory\nan exec replaces): each command is \
         started from a small launcher (`rss-launch`), whose resident set\nis the floor of \
         every figure: `true` started the same way reported {:.1} MiB.\n",
        floor as f64 / MIB
    );
    let _ = writeln!(s, "| command | {} |", heads.join(" | "));
    let _ = writeln!(s, "|---|{}", "---:|".repeat(sizes.len()));
    for (name, ps) in &all {
        let cells: Vec<String> = sizes
            .iter()
            .map(|z| match ps.iter().find(|p| p.size == z.bytes) {
                None => "-".into(),
                Some(p) => format!("{:.1}", p.rss_mib()),
            })
            .collect();
        let mark = if ps.iter().any(|p| p.domain) {
            " (*)"
        } else {
            ""
        };
        let _ = writeln!(s, "| {}{mark} | {} |", cell(name), cells.join(" | "));
    }
    s
}

/// Text for SVG: no markup characters.
fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A round step near `span / 5`.
fn step(span: f64) -> f64 {
    let raw = (span / 5.0).max(f64::MIN_POSITIVE);
    let p = 10f64.powf(raw.log10().floor());
    let m = raw / p;
    p * if m <= 1.0 {
        1.0
    } else if m <= 2.0 {
        2.0
    } else if m <= 5.0 {
        5.0
    } else {
        10.0
    }
}

const COLOURS: &[&str] = &[
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
    "#bcbd22", "#17becf",
];

/// A line of the chart: its name, colour, dash pattern and (size, value) points.
struct Line<'a> {
    colour: &'a str,
    dash: &'a str,
    points: Vec<(u64, f64)>,
}

/// Geometry of one panel.
const PANEL_W: f64 = 500.0;
const PLOT_L: f64 = 70.0;
const PLOT_T: f64 = 40.0;
const PLOT_W: f64 = 400.0;
const PLOT_H: f64 = 260.0;

/// The y axis: linear from a round value below the lowest (or 0) to one above the highest, or
/// logarithmic between powers of ten (positive values only). Its ticks.
struct Axis {
    log: bool,
    lo: f64,
    hi: f64,
    ticks: Vec<f64>,
}

impl Axis {
    fn new(values: &[f64], log: bool) -> Axis {
        let positive: Vec<f64> = values.iter().copied().filter(|v| *v > 0.0).collect();
        if log && !positive.is_empty() {
            let min = positive.iter().copied().fold(f64::INFINITY, f64::min);
            let max = positive.iter().copied().fold(0f64, f64::max);
            let (a, b) = (
                min.log10().floor(),
                max.log10().ceil().max(min.log10().floor() + 1.0),
            );
            let mut ticks = Vec::new();
            let mut e = a;
            while e <= b {
                for m in [1.0, 2.0, 5.0] {
                    let t = m * 10f64.powf(e);
                    if t <= 10f64.powf(b) * 1.0001 {
                        ticks.push(t);
                    }
                }
                e += 1.0;
            }
            return Axis {
                log: true,
                lo: 10f64.powf(a),
                hi: 10f64.powf(b),
                ticks,
            };
        }
        let (lo, hi) = values
            .iter()
            .fold((0f64, 0f64), |(lo, hi), &v| (lo.min(v), hi.max(v)));
        let st = step((hi - lo).max(1e-9));
        let (lo, hi) = ((lo / st).floor() * st, ((hi / st).ceil() * st).max(st));
        let ticks = (0..)
            .map(|i| lo + i as f64 * st)
            .take_while(|t| *t <= hi + st / 2.0)
            .collect();
        Axis {
            log: false,
            lo,
            hi,
            ticks,
        }
    }

    /// Where `v` falls, 0 (bottom) to 1 (top).
    fn frac(&self, v: f64) -> f64 {
        if self.log {
            (v.max(self.lo).log10() - self.lo.log10()) / (self.hi.log10() - self.lo.log10())
        } else {
            (v - self.lo) / (self.hi - self.lo)
        }
    }
}

fn tick_label(v: f64) -> String {
    if v >= 1.0 || v == 0.0 {
        format!("{v:.0}")
    } else {
        let t = format!("{v:.3}");
        t.trim_end_matches('0').trim_end_matches('.').to_string()
    }
}

/// One panel: title, y axis title, x ticks at the sizes (log scale), the lines.
fn panel(
    s: &mut String,
    x0: f64,
    title: &str,
    unit: &str,
    sizes: &[u64],
    lines: &[Line<'_>],
    log: bool,
) {
    let values: Vec<f64> = lines
        .iter()
        .flat_map(|l| l.points.iter().map(|p| p.1))
        .collect();
    let axis = Axis::new(&values, log);
    let (smin, smax) = (
        sizes.iter().copied().min().unwrap_or(1).max(1) as f64,
        sizes.iter().copied().max().unwrap_or(1).max(1) as f64,
    );
    let x = |size: u64| {
        if smax <= smin {
            x0 + PLOT_L + PLOT_W / 2.0
        } else {
            let f = ((size.max(1) as f64).log2() - smin.log2()) / (smax.log2() - smin.log2());
            x0 + PLOT_L + 20.0 + f * (PLOT_W - 40.0)
        }
    };
    let y = |v: f64| PLOT_T + PLOT_H - axis.frac(v) * PLOT_H;
    let _ = writeln!(
        s,
        r#"<text x="{:.1}" y="22" font-size="15" font-weight="bold" text-anchor="middle">{}</text>"#,
        x0 + PLOT_L + PLOT_W / 2.0,
        esc(title)
    );
    // Grid and y ticks.
    for &v in &axis.ticks {
        let _ = writeln!(
            s,
            r##"<line x1="{:.1}" y1="{:.1}" x2="{:.1}" y2="{:.1}" stroke="#ddd"/><text x="{:.1}" y="{:.1}" font-size="11" text-anchor="end">{}</text>"##,
            x0 + PLOT_L,
            y(v),
            x0 + PLOT_L + PLOT_W,
            y(v),
            x0 + PLOT_L - 6.0,
            y(v) + 4.0,
            tick_label(v)
        );
    }
    // Axes.
    let _ = writeln!(
        s,
        r##"<polyline points="{:.1},{:.1} {:.1},{:.1} {:.1},{:.1}" fill="none" stroke="#000"/>"##,
        x0 + PLOT_L,
        PLOT_T,
        x0 + PLOT_L,
        PLOT_T + PLOT_H,
        x0 + PLOT_L + PLOT_W,
        PLOT_T + PLOT_H
    );
    for &z in sizes {
        let _ = writeln!(
            s,
            r##"<line x1="{0:.1}" y1="{1:.1}" x2="{0:.1}" y2="{2:.1}" stroke="#000"/><text x="{0:.1}" y="{3:.1}" font-size="11" text-anchor="middle">{4}</text>"##,
            x(z),
            PLOT_T + PLOT_H,
            PLOT_T + PLOT_H + 5.0,
            PLOT_T + PLOT_H + 18.0,
            esc(&human(z))
        );
    }
    let _ = writeln!(
        s,
        r#"<text x="{:.1}" y="{:.1}" font-size="12" text-anchor="middle">size of the work (log scale)</text>"#,
        x0 + PLOT_L + PLOT_W / 2.0,
        PLOT_T + PLOT_H + 36.0
    );
    let _ = writeln!(
        s,
        r#"<text x="{0:.1}" y="{1:.1}" font-size="12" text-anchor="middle" transform="rotate(-90 {0:.1} {1:.1})">{2}</text>"#,
        x0 + 18.0,
        PLOT_T + PLOT_H / 2.0,
        esc(unit)
    );
    for l in lines {
        let pts: Vec<String> = l
            .points
            .iter()
            .map(|&(z, v)| format!("{:.1},{:.1}", x(z), y(v)))
            .collect();
        let _ = writeln!(
            s,
            r#"<polyline points="{}" fill="none" stroke="{}" stroke-width="2" stroke-dasharray="{}"/>"#,
            pts.join(" "),
            l.colour,
            l.dash
        );
        for &(z, v) in &l.points {
            let _ = writeln!(
                s,
                r#"<circle cx="{:.1}" cy="{:.1}" r="3" fill="{}"/>"#,
                x(z),
                y(v),
                l.colour
            );
        }
    }
}

fn svg(points: &[Point], sizes: &[Size]) -> String {
    let charted: Vec<(&str, Vec<&Point>)> = series(points)
        .into_iter()
        .filter(|(_, ps)| ps.iter().all(|p| p.chart))
        .collect();
    let style = |i: usize| {
        (
            COLOURS[i % COLOURS.len()],
            ["none", "6 3", "2 3"][(i / COLOURS.len()) % 3],
        )
    };
    let lines = |f: &dyn Fn(&Point) -> f64| -> Vec<Line<'static>> {
        charted
            .iter()
            .enumerate()
            .map(|(i, (_, ps))| {
                let (colour, dash) = style(i);
                let mut pts: Vec<(u64, f64)> = ps.iter().map(|p| (p.size, f(p))).collect();
                pts.sort_by_key(|p| p.0);
                Line {
                    colour,
                    dash,
                    points: pts,
                }
            })
            .collect()
    };
    let sizes: Vec<u64> = sizes.iter().map(|z| z.bytes).collect();
    let legend_rows = charted.len().div_ceil(2);
    let height = PLOT_T + PLOT_H + 60.0 + legend_rows as f64 * 18.0 + 10.0;
    let width = 2.0 * PANEL_W;
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0}" height="{height:.0}" viewBox="0 0 {width:.0} {height:.0}" font-family="sans-serif">"#
    );
    let _ = writeln!(
        s,
        r#"<rect x="0" y="0" width="{width:.0}" height="{height:.0}" fill="white"/>"#
    );
    panel(
        &mut s,
        0.0,
        "Throughput",
        "MB/s (log scale)",
        &sizes,
        &lines(&Point::mbps),
        true,
    );
    panel(
        &mut s,
        PANEL_W,
        "Peak RSS",
        "MiB",
        &sizes,
        &lines(&Point::rss_mib),
        false,
    );
    let top = PLOT_T + PLOT_H + 60.0;
    for (i, (name, ps)) in charted.iter().enumerate() {
        let (colour, dash) = style(i);
        let (lx, ly) = (20.0 + (i % 2) as f64 * PANEL_W, top + (i / 2) as f64 * 18.0);
        let label = if ps.iter().any(|p| p.domain) {
            format!("{name} (holds the simulated domain)")
        } else {
            name.to_string()
        };
        let _ = writeln!(
            s,
            r#"<line x1="{:.1}" y1="{:.1}" x2="{:.1}" y2="{:.1}" stroke="{colour}" stroke-width="2" stroke-dasharray="{dash}"/><text x="{:.1}" y="{:.1}" font-size="11">{}</text>"#,
            lx,
            ly,
            lx + 24.0,
            ly,
            lx + 30.0,
            ly + 4.0,
            esc(&label)
        );
    }
    s.push_str("</svg>\n");
    s
}
