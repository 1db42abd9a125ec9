//! `vit-train export --quantize int8`: calibration on training images, the
//! int8 writer, and the accuracy gate. An int8 graph is not expected to
//! reproduce tch's logits to a tolerance, so it is judged the way users judge
//! it: its accuracy on the run's validation split next to the float graph's,
//! both run by ONNX Runtime on the CPU. A drop over the limit refuses the
//! file, and the message carries both numbers.

use std::path::Path;

use anyhow::{bail, Context, Result};
use clap::ValueEnum;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use vit::data::{load_splits, Dataset, LoadOptions};
use vit::format::{ModelFormat, Precision};
use vit::infer::{calibrate, CalibrationImages, Classifier, ClassifierOptions, Provider, RangeMethod};
use vit::onnx::{calibration_model, write_model, write_quantized_model, ExportOptions};
use vit::{ModelMetadata, NamedTensors, Preprocessor};

use crate::export::target::{with_data_suffix, ExportReport, Int8Accuracy, Staged, Target};
use crate::export::verify::compare;
use crate::run::dir::RunDir;

/// Default number of training images the ranges are measured on.
pub const DEFAULT_CALIBRATION_IMAGES: usize = 256;
/// Default largest accepted accuracy drop, in points (percent).
pub const DEFAULT_MAX_ACCURACY_DROP: f64 = 1.0;
/// Default percentile of [`CalibrationArg::Percentile`].
pub const DEFAULT_PERCENTILE: f32 = 99.99;

/// `--calibration-method` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum CalibrationArg {
    /// Smallest and largest value seen.
    Minmax,
    /// The (100 - p)th and pth percentiles (`--calibration-percentile`): rare outliers clip.
    Percentile,
}

impl CalibrationArg {
    /// The range method it names, with percentile `p` for [`Self::Percentile`].
    pub fn method(self, p: f32) -> RangeMethod {
        match self {
            Self::Minmax => RangeMethod::MinMax,
            Self::Percentile => RangeMethod::Percentile(p),
        }
    }
}

/// How an int8 export is calibrated and gated.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Int8Options {
    /// Training images the ranges are measured on (seeded choice).
    pub calibration_images: usize,
    /// How a range is chosen from the values seen.
    pub method: RangeMethod,
    /// Largest accepted drop of validation accuracy, in points.
    pub max_accuracy_drop: f64,
}

impl Default for Int8Options {
    fn default() -> Self {
        Self {
            calibration_images: DEFAULT_CALIBRATION_IMAGES,
            method: CalibrationArg::Percentile.method(DEFAULT_PERCENTILE),
            max_accuracy_drop: DEFAULT_MAX_ACCURACY_DROP,
        }
    }
}

/// Calibrates, writes, evaluates and gates the int8 export of `weights` to `target.path`.
pub(crate) fn export(
    dir: &RunDir,
    meta: &ModelMetadata,
    weights: &NamedTensors,
    target: &Target,
    opts: &Int8Options,
    compare_images: usize,
) -> Result<ExportReport> {
    let cfg = &meta.config;
    let prep = Preprocessor::from_config(cfg);
    let r = dir.read_run_options().context("an int8 export calibrates and evaluates on the run's data")?;
    let load = LoadOptions {
        val_fraction: r.val_fraction,
        seed: cfg.train.seed,
        max_per_class: r.max_per_class,
        allow_unreadable: true,
    };
    let splits = load_splits(&r.data, &prep, &load).with_context(|| {
        format!("an int8 export needs the run's data ({}) to calibrate and to measure accuracy", r.data.display())
    })?;
    if splits.train.is_empty() || splits.val.is_empty() {
        bail!("an int8 export needs training images (calibration) and validation images (the accuracy gate)");
    }
    let mut idx: Vec<usize> = (0..splits.train.len()).collect();
    idx.shuffle(&mut rand_chacha::ChaCha8Rng::seed_from_u64(cfg.train.seed));
    idx.truncate(opts.calibration_images.max(1));
    let calib = prep.normalize(&splits.train.subset(&idx).pixels);
    let (graph, targets) = calibration_model(meta, weights)?;
    let shape = [cfg.in_channels, cfg.image_size, cfg.image_size];
    let images = CalibrationImages { pixels: &calib, n: idx.len(), shape };
    let ranges = calibrate(&graph, &targets, images, 32, opts.method)?;
    log::info!("calibrated {} activations on {} training images", ranges.len(), idx.len());

    let staged = Staged::new(&target.path)?;
    let float_path = staged.file.with_extension("float.onnx");
    let float_format = ModelFormat { precision: Precision::Fp32, ..target.format };
    let eopts = |format| ExportOptions { external_data: target.external_data, format };
    write_model(&float_path, meta, weights, &eopts(float_format))?;
    write_quantized_model(&staged.file, meta, weights, &eopts(target.format), &ranges)
        .with_context(|| format!("cannot export {}", target.source.display()))?;
    let (float, float_logits) = evaluate(&float_path, &splits.val, compare_images)?;
    let (int8, int8_logits) = evaluate(&staged.file, &splits.val, compare_images)?;
    std::fs::remove_file(&float_path).ok();
    let accuracy = Int8Accuracy { float, int8, images: splits.val.len(), calibration_images: idx.len() };
    log::info!(
        "validation accuracy on {} images (ONNX Runtime, CPU): float32 {float:.4}, int8 {int8:.4} (drop {:.2} points, limit {})",
        accuracy.images,
        accuracy.drop_points(),
        opts.max_accuracy_drop
    );
    if accuracy.drop_points() > opts.max_accuracy_drop {
        let previous = if target.path.exists() { "is unchanged" } else { "was not written" };
        bail!(
            "int8 accuracy {int8:.4} is {:.2} points below float32's {float:.4} on {} validation images, over the \
             limit of {} points: {} {previous}; allow more with --max-accuracy-drop, or calibrate differently \
             (--calibration-images, --calibration-method)",
            accuracy.drop_points(),
            accuracy.images,
            opts.max_accuracy_drop,
            target.path.display()
        );
    }
    staged.commit(&target.path)?;
    crate::export::hf_files::write_beside(&target.path, meta)?;
    let bytes = [target.path.clone(), with_data_suffix(&target.path)]
        .iter()
        .map(|p| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0))
        .sum();
    Ok(ExportReport {
        path: target.path.clone(),
        bytes,
        comparison: compare(&int8_logits, &float_logits, f32::INFINITY, 0.0),
        images: float_logits.len() / cfg.num_classes.max(1),
        real_images: true,
        int8: Some(accuracy),
    })
}

/// Accuracy of the model at `path` on `val` with ONNX Runtime on the CPU, and
/// the logits of its first `n` images.
fn evaluate(path: &Path, val: &Dataset, n: usize) -> Result<(f64, Vec<f32>)> {
    let opts = ClassifierOptions { provider: Provider::Cpu, ..Default::default() };
    let mut clf = Classifier::open(path, &opts)?;
    let accuracy = clf.evaluate(val, 64)?.accuracy;
    let n = n.clamp(1, val.len());
    let logits = clf.logits_u8(&val.pixels[..n * val.image_len], n)?;
    Ok((accuracy, logits))
}
