//! Ready Applications over time, as CSV and as an SVG line chart.

use std::path::Path;

use plotters::prelude::*;

pub struct Series<'a> {
    /// The CSV's `series` column.
    pub key: &'a str,
    /// The chart's legend.
    pub label: &'a str,
    pub samples: &'a [(f64, usize)],
}

/// One row per sample: `series,seconds,ready`.
pub fn write_csv(path: &Path, series: &[Series]) -> std::io::Result<()> {
    let mut out = String::from("series,seconds,ready\n");
    for s in series {
        for (t, n) in s.samples {
            out.push_str(&format!("{},{t:.3},{n}\n", s.key));
        }
    }
    std::fs::write(path, out)
}

pub fn write_svg(path: &Path, title: &str, series: &[Series]) -> Result<(), Box<dyn std::error::Error>> {
    let x_max = series.iter().flat_map(|s| s.samples.iter().map(|p| p.0)).fold(1.0, f64::max);
    let y_max = series.iter().flat_map(|s| s.samples.iter().map(|p| p.1)).max().unwrap_or(1).max(1);
    let root = SVGBackend::new(path, (800, 480)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(0.0..x_max * 1.02, 0usize..y_max + y_max / 50)?;
    chart.configure_mesh().x_desc("seconds since start").y_desc("Applications Ready").draw()?;
    let colours = [RGBColor(0x1f, 0x77, 0xb4), RGBColor(0xd6, 0x27, 0x28), RGBColor(0x2c, 0xa0, 0x2c)];
    for (s, colour) in series.iter().zip(colours.iter().cycle()) {
        let colour = *colour;
        chart
            .draw_series(LineSeries::new(s.samples.iter().copied(), colour.stroke_width(2)))?
            .label(s.label)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], colour.stroke_width(2)));
    }
    chart
        .configure_series_labels()
        .border_style(BLACK)
        .background_style(WHITE)
        .position(SeriesLabelPosition::LowerRight)
        .draw()?;
    root.present()?;
    Ok(())
}
