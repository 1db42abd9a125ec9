//! `vit-train export`: checkpoint -> ONNX via the light crate's writer, then
//! self-verification with tract against tch on real validation images (random
//! inputs when the data is gone). An export that does not reproduce the
//! trained logits within `atol` fails.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use rand::{Rng, SeedableRng};
use tch::{nn, nn::ModuleT, Device, Kind, Tensor};
use vit::data::{load_splits, LoadOptions};
use vit::onnx::{write_model, ExportOptions};
use vit::{ModelMetadata, NamedTensors, Preprocessor, TensorData, ViTConfig};

use crate::batches::{make_batch, Augment};
use crate::checkpoint;
use crate::model::ViT;
use crate::run_dir::{Checkpoint, RunDir};
use crate::verify::{compare, tract_logits, Comparison};

/// Default verification tolerance on |tch - tract| logits.
pub const DEFAULT_ATOL: f32 = 1e-4;
/// Default number of images used for verification.
pub const DEFAULT_VERIFY_IMAGES: usize = 16;

/// What to export and how to check it.
#[derive(Debug, Clone)]
pub struct ExportRequest {
    /// Run folder (config, labels, checkpoints).
    pub run: PathBuf,
    /// Output file (default: the run folder's ONNX file).
    pub out: Option<PathBuf>,
    /// Which checkpoint to export.
    pub checkpoint: Checkpoint,
    /// Force ONNX external data.
    pub external_data: bool,
    /// Verification tolerance on |tch - tract| logits.
    pub atol: f32,
    /// Images used for verification.
    pub verify_images: usize,
    /// Set `test_time_flip` for this export (`None`: as the run's config says).
    /// When it changes the config, the run's accuracy no longer describes the
    /// file, so none is recorded.
    pub test_time_flip: Option<bool>,
}

impl ExportRequest {
    /// The default export of `run`: its last checkpoint into the run folder,
    /// embedded weights, [`DEFAULT_ATOL`], [`DEFAULT_VERIFY_IMAGES`], the run's test-time flip.
    pub fn new(run: impl Into<PathBuf>) -> Self {
        Self {
            run: run.into(),
            out: None,
            checkpoint: Checkpoint::Last,
            external_data: false,
            atol: DEFAULT_ATOL,
            verify_images: DEFAULT_VERIFY_IMAGES,
            test_time_flip: None,
        }
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

/// Up to `n` normalised validation images of the run's data, else seeded random inputs.
fn verification_inputs(dir: &RunDir, cfg: &ViTConfig, n: usize) -> (Vec<f32>, usize, bool) {
    let prep = Preprocessor::from_config(cfg);
    let real = dir
        .read_run_options()
        .ok()
        .and_then(|r| {
            let opts = LoadOptions {
                val_fraction: r.val_fraction,
                seed: cfg.train.seed,
                max_per_class: Some(n.div_ceil(cfg.num_classes).max(1)),
                ..LoadOptions::default()
            };
            load_splits(&r.data, &prep, &opts).ok()
        })
        .filter(|s| !s.val.is_empty());
    if let Some(splits) = real {
        let idx: Vec<usize> = (0..splits.val.len().min(n)).collect();
        return (make_batch(&splits.val, &idx, &prep, Augment::default(), None).pixels, idx.len(), true);
    }
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
    let len = n * prep.image_len();
    ((0..len).map(|_| rng.random_range(-1.0f32..1.0)).collect(), n, false)
}

/// Runs the same inputs through tch and the ONNX file; compares logits.
pub fn verify_export(
    model: &ViT,
    cfg: &ViTConfig,
    onnx: &Path,
    pixels: &[f32],
    n: usize,
    atol: f32,
) -> Result<Comparison> {
    let shape = [n, cfg.in_channels, cfg.image_size, cfg.image_size];
    let x = Tensor::from_slice(pixels).view([n as i64, shape[1] as i64, shape[2] as i64, shape[3] as i64]);
    let expected = Vec::<f32>::try_from(tch::no_grad(|| model.forward_t(&x, false)).flatten(0, -1))?;
    let actual = tract_logits(onnx, pixels, shape)?;
    Ok(compare(&actual, &expected, atol, 1e-4))
}

/// Exports a run's checkpoint and verifies it; errors if verification fails.
pub fn export_run(req: &ExportRequest) -> Result<ExportReport> {
    let dir = RunDir::open(&req.run)?;
    let (mut cfg, labels) =
        dir.read_trained().with_context(|| format!("{} is not a vit-train run folder", req.run.display()))?;
    let flip = req.test_time_flip.unwrap_or(cfg.test_time_flip);
    let accuracy_applies = flip == cfg.test_time_flip;
    cfg.test_time_flip = flip;
    let ckpt = dir.checkpoint_path(req.checkpoint);
    let mut vs = nn::VarStore::new(Device::Cpu);
    let model = ViT::new(&vs.root(), &cfg);
    checkpoint::load_weights(&mut vs, &ckpt)?;
    let val_accuracy = dir
        .read_summary()
        .ok()
        .map(|s| match req.checkpoint {
            Checkpoint::Best => s.best_val_accuracy,
            Checkpoint::Last => s.val_accuracy,
        })
        .filter(|_| accuracy_applies);
    let path = req.out.clone().unwrap_or_else(|| dir.onnx_path());
    let meta = ModelMetadata { config: cfg.clone(), labels, val_accuracy };
    write_model(&path, &meta, &named_tensors(&vs)?, &ExportOptions { external_data: req.external_data })
        .with_context(|| format!("cannot export {}", ckpt.display()))?;
    let (pixels, n, real) = verification_inputs(&dir, &cfg, req.verify_images.max(1));
    let comparison = verify_export(&model, &cfg, &path, &pixels, n, req.atol)?;
    if !comparison.ok() {
        bail!(
            "export verification failed for {}: tract and tch logits differ beyond atol {:e} ({comparison}); the file is kept for inspection",
            path.display(),
            req.atol
        );
    }
    let mut bytes = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
    let mut data_file = path.clone().into_os_string();
    data_file.push(vit::onnx::EXTERNAL_DATA_SUFFIX);
    bytes += std::fs::metadata(&data_file).map(|m| m.len()).unwrap_or(0);
    Ok(ExportReport { path, bytes, comparison, images: n, real_images: real })
}
