//! What every export path shares: where an export goes (`Target`), what it is
//! checked on (`Inputs`), what it reports ([`ExportReport`]), the staging folder
//! it is verified in (`Staged`) and the inputs it is verified with. The
//! export paths (float, deployment formats, int8, foreign weights) import this
//! file and never each other's internals.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use rand::{Rng, SeedableRng};
use tch::{nn, Device, Kind};
use vit::data::{load_splits, LoadOptions};
use vit::{NamedTensors, Preprocessor, TensorData, ViTConfig};

use crate::export::verify::Comparison;
use crate::run::checkpoint;
use crate::run::dir::RunDir;

/// Float and int8 accuracy of an int8 export on the validation split.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Int8Accuracy {
    /// The float32 graph's accuracy (same input kind).
    pub float: f64,
    /// The int8 graph's accuracy.
    pub int8: f64,
    /// Validation images both were evaluated on.
    pub images: usize,
    /// Training images the ranges were measured on.
    pub calibration_images: usize,
}

impl Int8Accuracy {
    /// `float - int8`, in points.
    pub fn drop_points(&self) -> f64 {
        (self.float - self.int8) * 100.0
    }
}

/// What an export wrote and measured.
#[derive(Debug, Clone)]
pub struct ExportReport {
    /// The ONNX file.
    pub path: PathBuf,
    /// Its size in bytes (external data included).
    pub bytes: u64,
    /// tch vs tract comparison.
    pub comparison: Comparison,
    /// Images compared, and whether they were real validation images.
    pub images: usize,
    /// True when real images were used.
    pub real_images: bool,
    /// An int8 export: its validation accuracy next to the float graph's
    /// (then `comparison` is int8 against float32 logits in ONNX Runtime, not
    /// held to a tolerance).
    pub int8: Option<Int8Accuracy>,
}

/// A VarStore's variables as plain tensors for the writer.
pub fn named_tensors(vs: &nn::VarStore) -> Result<NamedTensors> {
    let mut out = NamedTensors::new();
    for (name, t) in checkpoint::model_tensors(vs) {
        let shape: Vec<usize> = t.size().iter().map(|&d| d as usize).collect();
        let data = Vec::<f32>::try_from(t.to_device(Device::Cpu).to_kind(Kind::Float).flatten(0, -1))
            .with_context(|| format!("tensor `{name}` is not readable as f32"))?;
        out.insert(name, TensorData { shape, data });
    }
    Ok(out)
}

/// Up to `n` validation images of the run's data (u8, as decoded), when the data is
/// still there: the real inputs every export is verified on.
pub(crate) fn validation_sample(dir: &RunDir, cfg: &ViTConfig, n: usize) -> Option<vit::data::Dataset> {
    let prep = Preprocessor::from_config(cfg);
    let r = dir.read_run_options().ok()?;
    let opts = LoadOptions {
        val_fraction: r.val_fraction,
        seed: cfg.train.seed,
        max_per_class: Some(n.div_ceil(cfg.num_classes).max(1)),
        // Verification needs some real images, not all of them.
        allow_unreadable: true,
    };
    let val = load_splits(&r.data, &prep, &opts).ok()?.val;
    let idx: Vec<usize> = (0..val.len().min(n)).collect();
    (!idx.is_empty()).then(|| val.subset(&idx))
}

/// `n` seeded random normalised images in [-1, 1) for `cfg`, flattened.
pub(crate) fn random_inputs(cfg: &ViTConfig, n: usize) -> Vec<f32> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
    let len = n * Preprocessor::from_config(cfg).image_len();
    (0..len).map(|_| rng.random_range(-1.0f32..1.0)).collect()
}

/// Where an export goes and how it is checked.
#[derive(Debug)]
pub(crate) struct Target<'a> {
    /// The ONNX file.
    pub path: PathBuf,
    /// Force ONNX external data.
    pub external_data: bool,
    /// Verification tolerance on |tch - tract| logits.
    pub atol: f32,
    /// The weights exported, for messages.
    pub source: &'a Path,
    /// Input kind and precision of the file.
    pub format: vit::format::ModelFormat,
}

/// Verification images `[n, C, H, W]`, flattened, in the form the format is checked with.
#[derive(Debug)]
pub(crate) enum Samples<'a> {
    /// Normalised floats (the default float32 graph).
    Normalised(&'a [f32]),
    /// Decoded u8 pixels (raw-pixel and fp16 graphs: tch sees them normalised).
    Pixels(&'a [u8]),
}

/// What an export is verified on.
#[derive(Debug)]
pub(crate) struct Inputs<'a> {
    /// The images.
    pub samples: Samples<'a>,
    /// Number of images.
    pub n: usize,
    /// True when they are real validation images.
    pub real: bool,
}

/// An export written under its final file name inside a hidden folder beside
/// the target (`.NAME.tmp-PID/NAME`), so the external data reference, which
/// names the file, stays valid when the verified file moves into place. The
/// folder is removed on drop; a kill leaves it to the run folder's cleanup.
#[derive(Debug)]
pub(crate) struct Staged {
    folder: PathBuf,
    /// The file to write and verify.
    pub file: PathBuf,
}

impl Staged {
    /// Creates the hidden folder for `target`.
    pub(crate) fn new(target: &Path) -> Result<Self> {
        let name = target
            .file_name()
            .with_context(|| format!("cannot export to {}: it has no file name", target.display()))?;
        let parent = target.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
        let folder = parent.join(format!(".{}.tmp-{}", name.to_string_lossy(), std::process::id()));
        let _ = std::fs::remove_dir_all(&folder);
        std::fs::create_dir(&folder).with_context(|| {
            format!("cannot write {}: cannot create the folder {} to verify it in", target.display(), folder.display())
        })?;
        Ok(Self { file: folder.join(name), folder })
    }

    /// Moves the file (and its external data, if any) over `target`.
    pub(crate) fn commit(&self, target: &Path) -> Result<()> {
        let moves =
            [(with_data_suffix(&self.file), with_data_suffix(target)), (self.file.clone(), target.to_path_buf())];
        for (from, to) in moves.iter().filter(|(from, _)| from.exists()) {
            std::fs::rename(from, to)
                .with_context(|| format!("cannot move the verified export {} to {}", from.display(), to.display()))?;
        }
        Ok(())
    }
}

impl Drop for Staged {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.folder);
    }
}

/// `<file>.data`: where the writer puts external weights.
pub(crate) fn with_data_suffix(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(vit::onnx::EXTERNAL_DATA_SUFFIX);
    PathBuf::from(s)
}

/// `model.onnx` -> `model.failed.onnx`: where an export that failed verification is kept.
pub fn failed_path(path: &Path) -> PathBuf {
    let stem = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    let name = match path.extension() {
        Some(ext) => format!("{stem}.failed.{}", ext.to_string_lossy()),
        None => format!("{stem}.failed"),
    };
    path.with_file_name(name)
}
