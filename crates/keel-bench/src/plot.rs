//! SVG plots of the end-to-end results: throughput and p99 latency against
//! the number of clients, keel-kv and etcd on the same axes.

use std::path::Path;

use plotters::prelude::*;

use crate::load::LoadResult;
use crate::workloads::EndToEndPoint;

type Series = Vec<(f64, f64)>;

fn series(
    points: &[EndToEndPoint],
    read_percent: u32,
    value: impl Fn(&LoadResult) -> f64,
) -> (Series, Series) {
    let mut etcd = Vec::new();
    let mut keel = Vec::new();
    for point in points.iter().filter(|point| point.read_percent == read_percent) {
        let clients = point.clients as f64;
        etcd.extend(point.etcd.as_ref().map(|result| (clients, value(result))));
        keel.extend(point.keel.as_ref().map(|result| (clients, value(result))));
    }
    (etcd, keel)
}

/// Draws one line chart with a log-scaled client axis. `lines` are
/// (label, colour, thin, points).
fn chart(
    path: &Path,
    title: &str,
    y_label: &str,
    lines: &[(String, RGBColor, bool, Series)],
) -> Result<(), String> {
    let error = |error: &dyn std::fmt::Display| error.to_string();
    let x_max = lines
        .iter()
        .flat_map(|line| line.3.iter().map(|point| point.0))
        .fold(1.0f64, f64::max)
        * 1.3;
    let y_max = lines
        .iter()
        .flat_map(|line| line.3.iter().map(|point| point.1))
        .fold(0.0f64, f64::max)
        * 1.15;
    let root = SVGBackend::new(path, (800, 480)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| error(&e))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 22))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d((0.8f64..x_max).log_scale(), 0f64..y_max.max(1.0))
        .map_err(|e| error(&e))?;
    chart
        .configure_mesh()
        .x_desc("clients")
        .y_desc(y_label)
        .x_label_formatter(&|clients| format!("{clients:.0}"))
        .y_label_formatter(&|value| {
            if y_max >= 100.0 {
                format!("{value:.0}")
            } else {
                format!("{value:.1}")
            }
        })
        .draw()
        .map_err(|e| error(&e))?;
    for (label, colour, thin, points) in lines {
        let colour = *colour;
        // Reads-heavy lines are thinner; each line has its own colour.
        let width = if *thin { 2 } else { 3 };
        let style = colour.stroke_width(width);
        chart
            .draw_series(LineSeries::new(points.iter().copied(), style))
            .map_err(|e| error(&e))?
            .label(label.clone())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], colour.stroke_width(width)));
        chart
            .draw_series(points.iter().map(|&point| Circle::new(point, 4, colour.filled())))
            .map_err(|e| error(&e))?;
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .position(SeriesLabelPosition::UpperLeft)
        .draw()
        .map_err(|e| error(&e))?;
    root.present().map_err(|e| error(&e))?;
    Ok(())
}

const KEEL_COLOUR: RGBColor = RGBColor(0x1f, 0x77, 0xb4);
const ETCD_COLOUR: RGBColor = RGBColor(0xd6, 0x27, 0x28);
const KEEL_READS_COLOUR: RGBColor = RGBColor(0x6b, 0xae, 0xd6);
const ETCD_READS_COLOUR: RGBColor = RGBColor(0xfc, 0x8d, 0x59);

/// Writes `throughput.svg` and `p99.svg` into `directory`.
pub fn end_to_end(points: &[EndToEndPoint], directory: &Path) -> Result<(), String> {
    std::fs::create_dir_all(directory).map_err(|error| error.to_string())?;
    let mut throughput = Vec::new();
    let mut p99 = Vec::new();
    for (read_percent, thin, mix) in [(0u32, false, "writes"), (90, true, "90% reads")] {
        let (keel_colour, etcd_colour) = if thin {
            (KEEL_READS_COLOUR, ETCD_READS_COLOUR)
        } else {
            (KEEL_COLOUR, ETCD_COLOUR)
        };
        let (etcd, keel) = series(points, read_percent, LoadResult::requests_per_second);
        let (etcd_p99, keel_p99) = series(points, read_percent, |result| result.latency_ms(0.99));
        if !keel.is_empty() {
            throughput.push((format!("keel-kv, {mix}"), keel_colour, thin, keel));
            p99.push((format!("keel-kv, {mix}"), keel_colour, thin, keel_p99));
        }
        if !etcd.is_empty() {
            throughput.push((format!("etcd, {mix}"), etcd_colour, thin, etcd));
            p99.push((format!("etcd, {mix}"), etcd_colour, thin, etcd_p99));
        }
    }
    if throughput.is_empty() {
        return Ok(());
    }
    chart(
        &directory.join("throughput.svg"),
        "Requests per second, 3 members, 256-byte values",
        "requests/s",
        &throughput,
    )?;
    chart(
        &directory.join("p99.svg"),
        "p99 latency, 3 members, 256-byte values",
        "p99 ms",
        &p99,
    )
}
