//! The runner's results as files: a CSV, a Markdown table and SVG bar charts.

use anyhow::{Context, Result};
use plotters::coord::ranged1d::{AsRangedCoord, ValueFormatter};
use plotters::prelude::*;
use std::fmt::Write as _;
use std::path::Path;

/// One measured point: a server under one load.
#[derive(Debug, Clone)]
pub struct Row {
    /// What was measured.
    pub target: String,
    /// The `wasmtime serve` mode it is compared with (itself for those).
    pub reference: String,
    /// Connections (requests in flight).
    pub connections: u32,
    /// Requests per second.
    pub rate: f64,
    /// Median latency, µs.
    pub p50_us: f64,
    /// 99th percentile latency, µs.
    pub p99_us: f64,
    /// Server CPU time per request, µs.
    pub cpu_us: f64,
    /// Failed requests.
    pub errors: u64,
    /// How many runs the figures are the median of.
    pub runs: u32,
    /// The lowest and highest req/s of those runs.
    pub rate_range: (f64, f64),
    /// The lowest and highest p50 of those runs, µs.
    pub p50_range: (f64, f64),
}

impl Row {
    fn reference_row<'a>(&self, rows: &'a [Row]) -> Option<&'a Row> {
        rows.iter()
            .find(|r| r.target == self.reference && r.connections == self.connections)
    }
}

/// Throughput table as CSV (with the ratios to the matching reference).
pub fn csv(rows: &[Row]) -> String {
    let mut out = String::from(
        "target,connections,runs,req_per_s,req_per_s_min,req_per_s_max,p50_us,p50_us_min,p50_us_max,p99_us,server_cpu_us_per_req,errors,reference,rate_ratio,p50_ratio\n",
    );
    for r in rows {
        let (rate_ratio, p50_ratio) = ratios(r, rows);
        let _ = writeln!(
            out,
            "{},{},{},{:.0},{:.0},{:.0},{:.0},{:.0},{:.0},{:.0},{:.1},{},{},{:.2},{:.2}",
            r.target,
            r.connections,
            r.runs,
            r.rate,
            r.rate_range.0,
            r.rate_range.1,
            r.p50_us,
            r.p50_range.0,
            r.p50_range.1,
            r.p99_us,
            r.cpu_us,
            r.errors,
            r.reference,
            rate_ratio,
            p50_ratio
        );
    }
    out
}

/// Throughput table as Markdown.
pub fn markdown(rows: &[Row]) -> String {
    let mut out = String::from(
        "| target | c | req/s (min–max) | p50 µs (min–max) | p99 µs | server CPU µs/req | errors | req/s ÷ ref | p50 ÷ ref | ref |\n\
         |---|---:|---:|---:|---:|---:|---:|---:|---:|---|\n",
    );
    for r in rows {
        let (rate_ratio, p50_ratio) = ratios(r, rows);
        let _ = writeln!(
            out,
            "| {} | {} | {:.0} ({:.0}–{:.0}) | {:.0} ({:.0}–{:.0}) | {:.0} | {:.1} | {} | {:.2}× | {:.2}× | {} |",
            r.target,
            r.connections,
            r.rate,
            r.rate_range.0,
            r.rate_range.1,
            r.p50_us,
            r.p50_range.0,
            r.p50_range.1,
            r.p99_us,
            r.cpu_us,
            r.errors,
            rate_ratio,
            p50_ratio,
            r.reference
        );
    }
    out
}

fn ratios(r: &Row, rows: &[Row]) -> (f64, f64) {
    match r.reference_row(rows) {
        Some(base) if base.rate > 0.0 && base.p50_us > 0.0 => {
            (r.rate / base.rate, r.p50_us / base.p50_us)
        }
        _ => (f64::NAN, f64::NAN),
    }
}

/// A bar series: its label and one value per category.
pub struct Series<'a> {
    /// Legend text.
    pub label: &'a str,
    /// One value per category.
    pub values: Vec<f64>,
}

impl<'a> Series<'a> {
    /// Series from (label, values) pairs.
    pub fn from_pairs(pairs: &'a [(String, Vec<f64>)]) -> Vec<Series<'a>> {
        pairs
            .iter()
            .map(|(label, values)| Series {
                label,
                values: values.clone(),
            })
            .collect()
    }
}

/// Grouped bars: one group per category, one bar per series.
pub fn bar_chart(
    path: &Path,
    title: &str,
    y_label: &str,
    categories: &[String],
    series: &[Series<'_>],
) -> Result<()> {
    let max = series
        .iter()
        .flat_map(|s| s.values.iter().copied())
        .filter(|v| v.is_finite())
        .fold(0.0f64, f64::max)
        .max(1.0)
        * 1.15;
    let root = SVGBackend::new(path, (960, 540)).into_drawing_area();
    root.fill(&WHITE)?;
    let n = categories.len().max(1);
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 22))
        .margin(16)
        .x_label_area_size(60)
        .y_label_area_size(80)
        .build_cartesian_2d(0f64..n as f64, 0f64..max)?;
    let names = categories.to_vec();
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(n * 2 + 1)
        .x_label_formatter(&move |x| {
            let i = x.floor() as usize;
            if (x - x.floor() - 0.5).abs() < 1e-6 {
                names.get(i).cloned().unwrap_or_default()
            } else {
                String::new()
            }
        })
        .y_desc(y_label)
        .draw()?;
    let width = 0.8 / series.len().max(1) as f64;
    for (k, s) in series.iter().enumerate() {
        let color = colour(k);
        let bars = s.values.iter().enumerate().map(move |(i, v)| {
            let x0 = i as f64 + 0.1 + k as f64 * width;
            Rectangle::new([(x0, 0.0), (x0 + width * 0.9, *v)], color.filled())
        });
        chart
            .draw_series(bars)?
            .label(s.label)
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 10, y + 5)], color.filled()));
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .position(SeriesLabelPosition::UpperRight)
        .draw()?;
    root.present()
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

/// Lines on log-log axes: one per series, points at `xs`.
pub fn loglog_chart(
    path: &Path,
    title: &str,
    (x_label, y_label): (&str, &str),
    xs: &[f64],
    series: &[Series<'_>],
) -> Result<()> {
    let finite = |v: &f64| v.is_finite() && *v > 0.0;
    let ys: Vec<f64> = series
        .iter()
        .flat_map(|s| s.values.iter().copied())
        .filter(finite)
        .collect();
    let y_min = ys.iter().copied().fold(f64::INFINITY, f64::min).min(1.0) * 0.8;
    let y_max = ys.iter().copied().fold(0.0f64, f64::max).max(y_min * 10.0) * 1.25;
    let x_min = xs.iter().copied().fold(f64::INFINITY, f64::min) * 0.8;
    let x_max = xs.iter().copied().fold(0.0f64, f64::max) * 1.25;
    lines_svg(
        path,
        title,
        (x_label, y_label),
        ((x_min..x_max).log_scale(), (y_min..y_max).log_scale()),
        xs,
        series,
        |y| finite(&y),
        SeriesLabelPosition::UpperRight,
    )
}

/// An SVG chart on the axes `ranges` (linear or log alike): each series as
/// a line with a dot at each of its points (those whose value `keep`
/// accepts), in its colour, then the legend at `legend`.
#[allow(clippy::too_many_arguments)]
fn lines_svg<X, Y>(
    path: &Path,
    title: &str,
    (x_label, y_label): (&str, &str),
    ranges: (X, Y),
    xs: &[f64],
    series: &[Series<'_>],
    keep: impl Fn(f64) -> bool,
    legend: SeriesLabelPosition,
) -> Result<()>
where
    X: AsRangedCoord<Value = f64>,
    Y: AsRangedCoord<Value = f64>,
    X::CoordDescType: ValueFormatter<f64>,
    Y::CoordDescType: ValueFormatter<f64>,
{
    let root = SVGBackend::new(path, (960, 540)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 22))
        .margin(16)
        .x_label_area_size(50)
        .y_label_area_size(80)
        .build_cartesian_2d(ranges.0, ranges.1)?;
    chart
        .configure_mesh()
        .x_desc(x_label)
        .y_desc(y_label)
        .draw()?;
    for (k, s) in series.iter().enumerate() {
        let color = colour(k);
        let points: Vec<(f64, f64)> = xs
            .iter()
            .copied()
            .zip(s.values.iter().copied())
            .filter(|&(_, y)| keep(y))
            .collect();
        chart
            .draw_series(LineSeries::new(points.clone(), color.stroke_width(2)))?
            .label(s.label)
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 16, y)], color.stroke_width(2)));
        chart.draw_series(
            points
                .into_iter()
                .map(move |p| Circle::new(p, 3, color.filled())),
        )?;
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .position(legend)
        .draw()?;
    root.present()
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

/// Colour-blind-safe colours (Okabe and Ito), then plotters' palette.
fn colour(k: usize) -> RGBAColor {
    const SAFE: [(u8, u8, u8); 7] = [
        (0, 114, 178),
        (213, 94, 0),
        (0, 158, 115),
        (204, 121, 167),
        (230, 159, 0),
        (86, 180, 233),
        (0, 0, 0),
    ];
    match SAFE.get(k) {
        Some(&(r, g, b)) => RGBColor(r, g, b).to_rgba(),
        None => Palette99::pick(k).to_rgba(),
    }
}

/// Lines on linear axes, one per series, points at `xs`. The y axis is
/// fitted to the finite values up to five times the smallest, so that a
/// curve rising without bound does not flatten the others; points above are
/// left out (and infinite ones always).
pub fn line_chart(
    path: &Path,
    title: &str,
    (x_label, y_label): (&str, &str),
    xs: &[f64],
    series: &[Series<'_>],
) -> Result<()> {
    let finite: Vec<f64> = series
        .iter()
        .flat_map(|s| s.values.iter().copied())
        .filter(|v| v.is_finite())
        .collect();
    let y_lo = finite.iter().copied().fold(f64::INFINITY, f64::min);
    let y_hi = finite.iter().copied().fold(0.0f64, f64::max);
    let (y_lo, y_hi) = if finite.is_empty() {
        (0.0, 1.0)
    } else {
        let hi = y_hi.min(y_lo.max(1e-9) * 5.0);
        ((y_lo * 0.9).max(0.0), hi * 1.05)
    };
    let x_lo = xs.iter().copied().fold(f64::INFINITY, f64::min).min(0.0);
    let x_hi = xs.iter().copied().fold(0.0f64, f64::max).max(x_lo + 1.0);
    lines_svg(
        path,
        title,
        (x_label, y_label),
        (x_lo..x_hi, y_lo..y_hi),
        xs,
        series,
        |y| y.is_finite() && y <= y_hi,
        SeriesLabelPosition::UpperLeft,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(target: &str, reference: &str, rate: f64, p50: f64) -> Row {
        Row {
            target: target.into(),
            reference: reference.into(),
            connections: 1,
            rate,
            p50_us: p50,
            p99_us: p50 * 2.0,
            cpu_us: 10.0,
            errors: 0,
            runs: 3,
            rate_range: (rate * 0.9, rate * 1.1),
            p50_range: (p50, p50),
        }
    }

    #[test]
    fn ratios_are_against_the_matching_reference() {
        let rows = [
            row("wasmtime serve", "wasmtime serve", 1000.0, 100.0),
            row("edge-node cold", "wasmtime serve", 1500.0, 50.0),
        ];
        let table = csv(&rows);
        assert!(table.contains(
            "edge-node cold,1,3,1500,1350,1650,50,50,50,100,10.0,0,wasmtime serve,1.50,0.50"
        ));
        let md = markdown(&rows);
        assert!(md.contains("| 1500 (1350–1650) |"), "{md}");
        assert!(md.contains("| 1.50× | 0.50× |"), "{md}");
    }

    #[test]
    fn charts_are_written() {
        let dir = tempfile::tempdir().unwrap();
        let bars = dir.path().join("bars.svg");
        bar_chart(
            &bars,
            "t",
            "req/s",
            &["a".into(), "b".into()],
            &[Series {
                label: "c=1",
                values: vec![1.0, 2.0],
            }],
        )
        .unwrap();
        let linear = dir.path().join("linear.svg");
        line_chart(
            &linear,
            "t",
            ("x", "y"),
            &[0.0, 5.0, 10.0],
            &[Series {
                label: "m",
                values: vec![3.0, 2.0, f64::INFINITY],
            }],
        )
        .unwrap();
        let lines = dir.path().join("lines.svg");
        loglog_chart(
            &lines,
            "t",
            ("x", "y"),
            &[1.0, 10.0],
            &[Series {
                label: "m",
                values: vec![5.0, 0.5],
            }],
        )
        .unwrap();
        for p in [bars, linear, lines] {
            let svg = std::fs::read_to_string(p).unwrap();
            assert!(svg.starts_with("<svg") && svg.contains("</svg>"));
        }
    }
}
