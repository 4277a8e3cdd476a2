//! The SVG chart: msg/s per configuration, hrpc, raw UDP, quinn and renet side by side on a
//! log scale, with each configuration's name under its group.

use std::path::Path;

use super::markdown::fmt_rate;
use super::rows::{Report, Row};

/// Grouped bars, log scale: hrpc, raw UDP, quinn, renet msg/s per configuration.
pub fn chart(r: &Report, path: &Path) -> Result<(), Box<dyn std::error::Error>> {
    use plotters::prelude::*;

    let n = r.rows.len().max(1);
    let series: [(&str, RGBColor); 4] = [
        ("hrpc", RGBColor(0x1f, 0x77, 0xb4)),
        ("raw UDP", RGBColor(0x7f, 0x7f, 0x7f)),
        ("quinn", RGBColor(0xff, 0x7f, 0x0e)),
        ("renet", RGBColor(0x2c, 0xa0, 0x2c)),
    ];
    let values = |row: &Row| -> [Option<f64>; 4] {
        [
            row.hrpc.as_ref().map(|h| h.msgs_per_sec),
            row.raw_udp,
            row.peer.as_ref().and_then(|p| p.quinn_msgs_per_sec),
            row.peer.as_ref().and_then(|p| p.renet_msgs_per_sec),
        ]
    };
    let max = r
        .rows
        .iter()
        .flat_map(|row| values(row).into_iter().flatten())
        .fold(10.0f64, f64::max);

    let root = SVGBackend::new(path, (1400, 760)).into_drawing_area();
    root.fill(&WHITE)?;
    let (plot, labels) = root.split_vertically(500);
    let mut chart = ChartBuilder::on(&plot)
        .caption(
            format!("hrpc one-way throughput on loopback ({} s per row)", r.secs),
            ("sans-serif", 22),
        )
        .margin(12)
        .x_label_area_size(10)
        .y_label_area_size(90)
        .build_cartesian_2d(0f64..n as f64, (100f64..max * 20.0).log_scale())?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .disable_x_axis()
        .y_desc("messages per second")
        .y_label_formatter(&|v| fmt_rate(Some(*v)))
        .draw()?;
    let width = 0.8 / series.len() as f64;
    for (k, (name, color)) in series.iter().enumerate() {
        let bars = r.rows.iter().enumerate().filter_map(move |(i, row)| {
            let v = values(row)[k]?;
            let x0 = i as f64 + 0.1 + k as f64 * width;
            Some(Rectangle::new(
                [(x0, 100.0), (x0 + width * 0.92, v.max(100.0))],
                color.filled(),
            ))
        });
        chart
            .draw_series(bars)?
            .label(*name)
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 12, y + 5)], color.filled()));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()?;
    // Configuration names under their groups, rotated.
    let style = TextStyle::from(("sans-serif", 13).into_font())
        .transform(FontTransform::Rotate90)
        .color(&BLACK);
    for (i, row) in r.rows.iter().enumerate() {
        let (px, _) = chart.backend_coord(&(i as f64 + 0.5, 100.0));
        let mut label = row.spec.label();
        if row.hrpc.is_none() {
            label.push_str(" (hrpc FAILED)");
        }
        labels.draw(&Text::new(label, (px - 6, 6), style.clone()))?;
    }
    root.present()?;
    Ok(())
}
