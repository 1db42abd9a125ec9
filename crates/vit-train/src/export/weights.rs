//! `vit-train export --weights`: a timm or Hugging Face checkpoint trained
//! elsewhere, imported ([`crate::import`]), exported to ONNX and verified with
//! tract against tch on seeded random inputs, like every export.

use std::path::PathBuf;

use anyhow::{Context, Result};
use tch::{nn, Device};
use vit::ModelMetadata;

use crate::export::target::{random_inputs, ExportReport, Inputs, Samples, Target};
use crate::export::write::write_verified;
use crate::import::{self, describe, ImportOptions, Imported};
use crate::model::ViT;

/// What to import and where to write it.
#[derive(Debug, Clone)]
pub struct WeightsExportRequest {
    /// A `.safetensors` file, or a `save_pretrained` folder.
    pub weights: PathBuf,
    /// The ONNX file.
    pub out: PathBuf,
    /// What the checkpoint does not say.
    pub import: ImportOptions,
    /// Force ONNX external data.
    pub external_data: bool,
    /// Verification tolerance on |tch - tract| logits.
    pub atol: f32,
    /// Random images used for the verification.
    pub verify_images: usize,
}

/// Reads a foreign checkpoint into a model of its inferred config.
pub fn load_model(weights: &std::path::Path, opts: &ImportOptions) -> Result<(Imported, nn::VarStore, ViT)> {
    let imported = import::load(weights, opts).with_context(|| format!("cannot import {}", weights.display()))?;
    log::info!("{:?} checkpoint {}: {}", imported.format, imported.weights.display(), describe(&imported.cfg));
    let mut vs = nn::VarStore::new(Device::Cpu);
    let model = ViT::new(&vs.root(), &imported.cfg);
    crate::run::checkpoint::load_into(&mut vs, &imported.weights, &imported.tensors)?;
    Ok((imported, vs, model))
}

/// Imports, exports and verifies; errors name the tensor or file at fault.
pub fn export_weights(req: &WeightsExportRequest) -> Result<ExportReport> {
    let (imported, vs, model) = load_model(&req.weights, &req.import)?;
    if let Some(folder) = req.out.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(folder).with_context(|| format!("cannot create {}", folder.display()))?;
    }
    let meta = ModelMetadata { config: imported.cfg.clone(), labels: imported.labels, val_accuracy: None };
    let n = req.verify_images.max(1);
    let pixels = random_inputs(&meta.config, n);
    let target = Target {
        path: req.out.clone(),
        external_data: req.external_data,
        atol: req.atol,
        source: &imported.weights,
        format: Default::default(),
    };
    write_verified(&model, &vs, &meta, &target, &Inputs { samples: Samples::Normalised(&pixels), n, real: false })
}
