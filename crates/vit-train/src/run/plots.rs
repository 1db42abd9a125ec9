//! `curves.png` (training loss per logged step and validation loss per epoch
//! on one panel, as the report's Figures 1-2 with the validation curve they
//! lack; validation accuracy per epoch with the best epoch marked on a second)
//! and `confusion.png` (heat map with counts, as Figures 3-4), rendered with
//! plotters and an embedded DejaVu Sans so no system font is needed.

use std::path::Path;
use std::sync::Once;

use anyhow::{anyhow, Context, Result};
use plotters::prelude::*;
use plotters::style::FontStyle;

use crate::run::dir::RunDir;
use crate::run::metrics::{Confusion, Record};

const FONT: &[u8] = include_bytes!("../../assets/DejaVuSans.ttf");
const FAMILY: &str = "sans-serif";

/// Pixel size of `curves.png`.
pub const CURVES_SIZE: (u32, u32) = (900, 760);
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

/// Writes `curves.png` into the run folder, and `confusion.png` when there is a matrix.
pub fn write_run_plots(
    dir: &RunDir,
    records: &[Record],
    steps_per_epoch: usize,
    confusion: Option<&Confusion>,
    labels: &[String],
) -> Result<()> {
    plot_curves(&dir.curves_plot_path(), &Curves::from_records(records, steps_per_epoch))?;
    match confusion {
        Some(confusion) => plot_confusion(&dir.confusion_plot_path(), confusion, labels),
        None => Ok(()),
    }
}

/// The series `curves.png` draws, all against epochs: a logged step at global
/// iteration `i` sits at `i / steps_per_epoch`, an epoch's validation at its end.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Curves {
    /// Training loss per logged step (mean over the logging window).
    pub train_loss: Vec<(f64, f64)>,
    /// Validation loss per evaluated epoch.
    pub val_loss: Vec<(f64, f64)>,
    /// Validation accuracy per evaluated epoch.
    pub val_accuracy: Vec<(f64, f64)>,
    /// The best epoch (1-based, the one `best.safetensors` holds) and its accuracy.
    pub best: Option<(usize, f64)>,
    /// Epochs on the x axis.
    pub epochs: usize,
}

impl Curves {
    /// The series of a run's records (`metrics.jsonl`).
    pub fn from_records(records: &[Record], steps_per_epoch: usize) -> Self {
        let per_epoch = steps_per_epoch.max(1) as f64;
        let mut c = Curves::default();
        for r in records {
            match r {
                Record::Step { iter, loss, .. } => c.train_loss.push((*iter as f64 / per_epoch, *loss)),
                Record::Epoch { epoch, val_loss, val_accuracy, .. } => {
                    let x = (*epoch + 1) as f64;
                    c.val_loss.extend(val_loss.map(|v| (x, v)));
                    if let Some(a) = *val_accuracy {
                        c.val_accuracy.push((x, a));
                        // The first epoch to reach the maximum, as fit keeps it.
                        if c.best.map_or(true, |(_, b)| a > b) {
                            c.best = Some((*epoch + 1, a));
                        }
                    }
                }
            }
            c.epochs = c.epochs.max(r.epoch() + 1);
        }
        c
    }
}

/// A tick step of 1, 2, 5, 10, 20, 50, ... epochs: at most about ten integer ticks.
fn epoch_step(epochs: usize) -> f64 {
    let mut step = 1.0;
    for k in [2.0, 2.5, 2.0].iter().cycle() {
        if epochs as f64 / step <= 10.0 {
            return step;
        }
        step *= k;
    }
    unreachable!("the cycle only ends by returning")
}

/// Loss (training per logged step, validation per epoch) on the upper panel,
/// validation accuracy on the lower one with the best epoch marked.
pub fn plot_curves(path: &Path, c: &Curves) -> Result<()> {
    register_font();
    let draw = || -> Result<(), Box<dyn std::error::Error>> {
        let root = BitMapBackend::new(path, CURVES_SIZE).into_drawing_area();
        root.fill(&WHITE)?;
        let (upper, lower) = root.split_vertically(CURVES_SIZE.1 * 11 / 20);
        let x_max = (c.epochs.max(1)) as f64;
        let step = epoch_step(c.epochs.max(1));
        // A little room past the last epoch, so its tick and point are not cut off.
        let x_axis = || (0.0..x_max * 1.02).step(step);
        let epoch_label = |v: &f64| format!("{}", v.round() as i64);
        let finite = c.train_loss.iter().chain(&c.val_loss).map(|p| p.1).filter(|v| v.is_finite());
        // Headroom above the highest loss for the legend, so it never hides a curve (an overfitting
        // run's validation loss peaks at the right, where the legend sits).
        let y_max = finite.fold(0.1, f64::max) * 1.3;
        let mut loss = ChartBuilder::on(&upper)
            .caption("Loss", (FAMILY, 24))
            .margin(14)
            .x_label_area_size(40)
            .y_label_area_size(64)
            .build_cartesian_2d(x_axis(), 0.0..y_max)?;
        loss.configure_mesh()
            .x_desc("epoch")
            .y_desc("cross-entropy loss")
            .x_label_formatter(&epoch_label)
            .label_style((FAMILY, 15))
            .axis_desc_style((FAMILY, 17))
            .draw()?;
        let finite_points = |v: &[(f64, f64)]| v.iter().copied().filter(|p| p.1.is_finite()).collect::<Vec<_>>();
        loss.draw_series(LineSeries::new(finite_points(&c.train_loss), BLUE.stroke_width(2)))?
            .label("training (per logged step)")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLUE.stroke_width(2)));
        let orange = RGBColor(230, 120, 20);
        if !c.val_loss.is_empty() {
            let points = finite_points(&c.val_loss);
            loss.draw_series(LineSeries::new(points.clone(), orange.stroke_width(2)))?
                .label("validation (per epoch)")
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], orange.stroke_width(2)));
            loss.draw_series(points.into_iter().map(|p| Circle::new(p, 3, orange.filled())))?;
        }
        loss.configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .label_font((FAMILY, 15))
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK.mix(0.3))
            .draw()?;

        let caption = match c.best {
            Some((epoch, a)) => format!("Validation accuracy (best {:.2}% at epoch {epoch})", 100.0 * a),
            None => "Validation accuracy (no validation images)".to_string(),
        };
        let (a_min, a_max) = c.val_accuracy.iter().fold((1.0f64, 0.0f64), |(lo, hi), p| (lo.min(p.1), hi.max(p.1)));
        let (y_lo, y_hi) = if c.val_accuracy.is_empty() {
            (0.0, 1.0)
        } else {
            (((a_min - 0.05).max(0.0) * 20.0).floor() / 20.0, ((a_max + 0.05).min(1.0) * 20.0).ceil() / 20.0)
        };
        let mut acc = ChartBuilder::on(&lower)
            .caption(caption, (FAMILY, 22))
            .margin(14)
            .x_label_area_size(48)
            .y_label_area_size(64)
            .build_cartesian_2d(x_axis(), y_lo..y_hi)?;
        acc.configure_mesh()
            .x_desc("epoch")
            .y_desc("accuracy")
            .x_label_formatter(&epoch_label)
            .y_label_formatter(&|v| format!("{:.0}%", v * 100.0))
            .label_style((FAMILY, 15))
            .axis_desc_style((FAMILY, 17))
            .draw()?;
        let green = RGBColor(30, 140, 60);
        acc.draw_series(LineSeries::new(c.val_accuracy.iter().copied(), green.stroke_width(2)))?;
        acc.draw_series(c.val_accuracy.iter().map(|&p| Circle::new(p, 3, green.filled())))?;
        if let Some((epoch, a)) = c.best {
            let x = epoch as f64;
            acc.draw_series(std::iter::once(PathElement::new(
                vec![(x, y_lo), (x, y_hi)],
                RED.mix(0.5).stroke_width(1),
            )))?;
            acc.draw_series(std::iter::once(Circle::new((x, a), 6, RED.stroke_width(2))))?;
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn step(epoch: usize, iter: usize, loss: f64) -> Record {
        Record::Step { epoch, iter, loss, lr: 1e-3 }
    }

    fn epoch(epoch: usize, val: Option<(f64, f64)>) -> Record {
        Record::Epoch {
            epoch,
            train_loss: 1.0,
            val_loss: val.map(|v| v.0),
            val_accuracy: val.map(|v| v.1),
            train_images_per_sec: 100.0,
            seconds: 1.0,
        }
    }

    #[test]
    fn series_sit_on_the_epoch_axis_and_the_first_best_is_marked() {
        let records = [
            step(0, 5, 2.0),
            step(0, 10, 1.5),
            epoch(0, Some((1.4, 0.50))),
            step(1, 15, 1.2),
            step(1, 20, 1.0),
            epoch(1, None),
            epoch(2, Some((1.1, 0.70))),
            epoch(3, Some((1.0, 0.70))),
        ];
        let c = Curves::from_records(&records, 10);
        assert_eq!(c.train_loss, vec![(0.5, 2.0), (1.0, 1.5), (1.5, 1.2), (2.0, 1.0)]);
        assert_eq!(c.val_loss, vec![(1.0, 1.4), (3.0, 1.1), (4.0, 1.0)]);
        assert_eq!(c.val_accuracy, vec![(1.0, 0.5), (3.0, 0.7), (4.0, 0.7)]);
        assert_eq!(c.best, Some((3, 0.7)), "fit keeps the first epoch to reach the maximum");
        assert_eq!(c.epochs, 4);
    }

    #[test]
    fn epoch_ticks_are_integers_at_most_about_ten() {
        let steps: Vec<f64> = [1, 10, 11, 20, 30, 60, 100, 300, 1000].map(epoch_step).to_vec();
        assert_eq!(steps, vec![1.0, 1.0, 2.0, 2.0, 5.0, 10.0, 10.0, 50.0, 100.0]);
    }

    #[test]
    fn curves_png_is_written_for_runs_with_and_without_validation() {
        let dir = tempfile::tempdir().unwrap();
        let with = Curves::from_records(&[step(0, 2, 1.0), epoch(0, Some((0.9, 0.6)))], 2);
        let without = Curves::from_records(&[step(0, 2, f64::NAN), epoch(0, None)], 2);
        for (name, c) in [("with.png", with), ("without.png", without)] {
            let path = dir.path().join(name);
            plot_curves(&path, &c).unwrap();
            let img = image::open(&path).unwrap();
            assert_eq!((img.width(), img.height()), CURVES_SIZE);
        }
    }
}
