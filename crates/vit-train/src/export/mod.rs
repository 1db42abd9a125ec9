//! `vit-train export`: checkpoint -> ONNX via the light crate's writer, then
//! self-verification with tract against tch on real validation images (random
//! inputs when the data is gone). An export that does not reproduce the
//! trained logits within `atol` fails, and never replaces the file it was
//! meant to: it is verified under a side name first and moved into place
//! only when it passes; a failing one is kept as `NAME.failed.onnx`.
//!
//! Folder map: [`target`] (what every export path shares), [`mod@write`] (stage,
//! verify, move into place), [`deploy`] (raw-pixel and fp16 formats), [`int8`]
//! (calibrated int8), [`verify`] (tract against tch), [`hf_files`] (Hugging
//! Face's JSON files), [`weights`] (timm / Hugging Face checkpoints straight to
//! ONNX).

pub mod deploy;
pub mod hf_files;
pub mod int8;
pub mod target;
pub mod verify;
pub mod weights;
pub mod write;

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use tch::{nn, Device};
use vit::{ModelMetadata, Preprocessor, ViTConfig};

use crate::data::batches::{make_batch, Augment};
use crate::host::memory::catch_allocation;
use crate::model::ViT;
use crate::run::checkpoint;
use crate::run::dir::{Checkpoint, RunDir};
use int8::Int8Options;
pub use target::Int8Accuracy;
pub use target::{failed_path, named_tensors, ExportReport};
use target::{random_inputs, validation_sample, Inputs, Samples, Target};
pub use write::verify_export;
use write::write_verified;

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
    /// Input kind and precision of the graph (default: normalised f32, fp32).
    pub format: vit::format::ModelFormat,
    /// Calibration and accuracy gate of an int8 `format`.
    pub int8: Int8Options,
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
            format: Default::default(),
            int8: Int8Options::default(),
        }
    }
}

/// Up to `n` normalised validation images of the run's data, else seeded random inputs.
fn verification_inputs(dir: &RunDir, cfg: &ViTConfig, n: usize) -> (Vec<f32>, usize, bool) {
    let prep = Preprocessor::from_config(cfg);
    if let Some(val) = validation_sample(dir, cfg, n) {
        let idx: Vec<usize> = (0..val.len()).collect();
        return (make_batch(&val, &idx, &prep, Augment::default(), None).pixels, idx.len(), true);
    }
    (random_inputs(cfg, n), n, false)
}

/// Exports a run's checkpoint and verifies it; errors if verification fails.
/// Locks the run folder for the time of the export.
pub fn export_run(req: &ExportRequest) -> Result<ExportReport> {
    export_in(&RunDir::open(&req.run)?, req)
}

/// [`export_run`] in a run folder this process has open already (`req.run` is not used).
pub fn export_in(dir: &RunDir, req: &ExportRequest) -> Result<ExportReport> {
    let (mut cfg, labels) =
        dir.read_trained().with_context(|| format!("{} is not a vit-train run folder", dir.path().display()))?;
    let flip = req.test_time_flip.unwrap_or(cfg.test_time_flip);
    let accuracy_applies = flip == cfg.test_time_flip;
    cfg.test_time_flip = flip;
    let ckpt = dir.checkpoint_path(req.checkpoint);
    let summary = dir.read_summary().ok();
    if req.checkpoint == Checkpoint::Best && !ckpt.exists() && summary.as_ref().is_some_and(|s| s.best_epoch.is_none())
    {
        bail!(
            "{} has no best.safetensors: the run had no validation images, so no epoch was chosen by accuracy; \
             export the final weights with --checkpoint last",
            dir.path().display()
        );
    }
    let mut vs = nn::VarStore::new(Device::Cpu);
    let model = catch_allocation("model", || ViT::new(&vs.root(), &cfg))?;
    checkpoint::load_weights(&mut vs, &ckpt)?;
    let val_accuracy = summary
        .and_then(|s| match req.checkpoint {
            Checkpoint::Best => s.best_val_accuracy,
            Checkpoint::Last => s.val_accuracy,
        })
        .filter(|_| accuracy_applies);
    let path = req.out.clone().unwrap_or_else(|| dir.onnx_path());
    let meta = ModelMetadata { config: cfg.clone(), labels, val_accuracy };
    let target = Target { path, external_data: req.external_data, atol: req.atol, source: &ckpt, format: req.format };
    let count = req.verify_images.max(1);
    if req.format.precision == vit::format::Precision::Int8 {
        // int8 is judged by validation accuracy against the float graph, not by a logit tolerance.
        return int8::export(dir, &meta, &named_tensors(&vs)?, &target, &req.int8, count);
    }
    if req.format.is_default() {
        let (pixels, n, real) = verification_inputs(dir, &cfg, count);
        write_verified(&model, &vs, &meta, &target, &Inputs { samples: Samples::Normalised(&pixels), n, real })
    } else {
        // Raw-pixel and fp16 graphs are checked on u8 images, as a client feeds them.
        let (images, n, real) = deploy::verification_images(dir, &cfg, count);
        write_verified(&model, &vs, &meta, &target, &Inputs { samples: Samples::Pixels(&images), n, real })
    }
}
