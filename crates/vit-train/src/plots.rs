//! `loss.png` (training loss per logged step, as the report's Figures 1-2) and
//! `confusion.png` (heat map with counts, as Figures 3-4), rendered with
//! plotters and an embedded DejaVu Sans so no system font is needed.

use std::path::Path;
use std::sync::Once;

use anyhow::{anyhow, Context, Result};
use plotters::prelude::*;
use plotters::style::FontStyle;

use crate::metrics::{Confusion, Record};
use crate::run_dir::RunDir;

const FONT: &[u8] = include_bytes!("../assets/DejaVuSans.ttf");
const FAMILY: &str = "sans-serif";

/// Pixel size of `loss.png`.
pub const LOSS_SIZE: (u32, u32) = (800, 500);
/// Pixel size of `confusion.png`.
pub const CONFUSION_SIZE: (u32, u32) = (860, 760);

fn register_font() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        for style in [FontStyle::Normal, FontStyle::Bold] {
            // The bytes are a valid TTF compiled into the binary; failure would only lose text.
            let _ = plotters::style::register_font(FAMILY, style, FONT);
        }
    });
}

/// Writes the loss plot into the run folder, and the confusion plot when there is a matrix.
pub fn write_run_plots(
    dir: &RunDir,
    records: &[Record],
    confusion: Option<&Confusion>,
    labels: &[String],
) -> Result<()> {
    let steps: Vec<(f64, f64)> = records
        .iter()
        .filter_map(|r| match r {
            Record::Step { iter, loss, .. } => Some((*iter as f64, *loss)),
            _ => None,
        })
        .collect();
    plot_loss(&dir.loss_plot_path(), &steps)?;
    match confusion {
        Some(confusion) => plot_confusion(&dir.confusion_plot_path(), confusion, labels),
        None => Ok(()),
    }
}

/// Training loss against iteration.
pub fn plot_loss(path: &Path, points: &[(f64, f64)]) -> Result<()> {
    register_font();
    let draw = || -> Result<(), Box<dyn std::error::Error>> {
        let root = BitMapBackend::new(path, LOSS_SIZE).into_drawing_area();
        root.fill(&WHITE)?;
        let x_max = points.iter().map(|p| p.0).fold(1.0, f64::max);
        let y_max = points.iter().map(|p| p.1).filter(|v| v.is_finite()).fold(0.1, f64::max) * 1.05;
        let mut chart = ChartBuilder::on(&root)
            .caption("Training loss", (FAMILY, 26))
            .margin(16)
            .x_label_area_size(48)
            .y_label_area_size(64)
            .build_cartesian_2d(0.0..x_max, 0.0..y_max)?;
        chart
            .configure_mesh()
            .x_desc("iteration")
            .y_desc("cross-entropy loss")
            .label_style((FAMILY, 15))
            .axis_desc_style((FAMILY, 18))
            .draw()?;
        chart.draw_series(LineSeries::new(points.iter().copied(), BLUE.stroke_width(2)))?;
        root.present()?;
        Ok(())
    };
    draw().map_err(|e| anyhow!("{e}")).with_context(|| format!("cannot write {}", path.display()))
}

/// Confusion heat map, true class on the y axis, predicted on the x axis.
pub fn plot_confusion(path: &Path, confusion: &Confusion, labels: &[String]) -> Result<()> {
    register_font();
    let n = confusion.matrix.len().max(1);
    let max = confusion.matrix.iter().flatten().copied().max().unwrap_or(1).max(1) as f64;
    let draw = || -> Result<(), Box<dyn std::error::Error>> {
        let root = BitMapBackend::new(path, CONFUSION_SIZE).into_drawing_area();
        root.fill(&WHITE)?;
        let caption = format!("Confusion matrix (accuracy {:.2}%)", 100.0 * confusion.accuracy());
        // Cell (predicted p, true t) spans [p, p+1] x [n-1-t, n-t]: row 0 on top.
        // A segmented 0..n-1 range has exactly n segments.
        let axis = || (0..n - 1).into_segmented();
        let mut chart = ChartBuilder::on(&root)
            .caption(caption, (FAMILY, 24))
            .margin(16)
            .x_label_area_size(70)
            .y_label_area_size(110)
            .build_cartesian_2d(axis(), axis())?;
        let name = |i: usize| labels.get(i).cloned().unwrap_or_default();
        let x_label = |v: &SegmentValue<usize>| match v {
            SegmentValue::CenterOf(i) => name(*i),
            _ => String::new(),
        };
        let y_label = |v: &SegmentValue<usize>| match v {
            SegmentValue::CenterOf(i) if *i < n => name(n - 1 - i),
            _ => String::new(),
        };
        chart
            .configure_mesh()
            .disable_mesh()
            .x_labels(n)
            .y_labels(n)
            .x_desc("predicted")
            .y_desc("true")
            .x_label_formatter(&x_label)
            .y_label_formatter(&y_label)
            .label_style((FAMILY, if n > 6 { 12 } else { 14 }))
            .axis_desc_style((FAMILY, 18))
            .draw()?;
        let centre = plotters::style::text_anchor::Pos::new(
            plotters::style::text_anchor::HPos::Center,
            plotters::style::text_anchor::VPos::Center,
        );
        for (t, row) in confusion.matrix.iter().enumerate() {
            let y = n - 1 - t;
            for (x, &count) in row.iter().enumerate() {
                use SegmentValue::{CenterOf, Exact};
                let shade = count as f64 / max;
                let color = RGBColor(255 - (shade * 200.0) as u8, 255 - (shade * 140.0) as u8, 255);
                chart.draw_series(std::iter::once(Rectangle::new(
                    [(Exact(x), Exact(y)), (Exact(x + 1), Exact(y + 1))],
                    color.filled(),
                )))?;
                let text_color = if shade > 0.6 { WHITE } else { BLACK };
                let style = (FAMILY, 16).into_font().color(&text_color).pos(centre);
                chart.draw_series(std::iter::once(Text::new(count.to_string(), (CenterOf(x), CenterOf(y)), style)))?;
            }
        }
        root.present()?;
        Ok(())
    };
    draw().map_err(|e| anyhow!("{e}")).with_context(|| format!("cannot write {}", path.display()))
}
