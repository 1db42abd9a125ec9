//! Writes an export under a side name, verifies it against tch with tract, and
//! moves it into place only when it passes; a failing one is kept as
//! `NAME.failed.onnx`.

use std::path::Path;

use anyhow::{bail, Context, Result};
use tch::{nn, nn::ModuleT, Tensor};
use vit::onnx::{write_model, ExportOptions};
use vit::{ModelMetadata, ViTConfig};

use crate::export::target::{
    failed_path, named_tensors, with_data_suffix, ExportReport, Inputs, Samples, Staged, Target,
};
use crate::export::verify::{compare, tract_logits, Comparison};
use crate::model::ViT;

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

/// Writes `vs` as ONNX under a side name, verifies it against `model` with
/// tract, and moves it (with `config.json` and `preprocessor_config.json`
/// beside it) into place only when it passes.
pub(crate) fn write_verified(
    model: &ViT,
    vs: &nn::VarStore,
    meta: &ModelMetadata,
    target: &Target,
    inputs: &Inputs,
) -> Result<ExportReport> {
    let (cfg, path) = (&meta.config, &target.path);
    let weights = named_tensors(vs)?;
    let write = |to: &Path| {
        write_model(to, meta, &weights, &ExportOptions { external_data: target.external_data, format: target.format })
            .with_context(|| format!("cannot export {}", target.source.display()))
    };
    // Verify first, replace after: the file at `path` changes only to a verified one.
    let staged = Staged::new(path)?;
    write(&staged.file)?;
    let verified = match inputs.samples {
        Samples::Normalised(pixels) => verify_export(model, cfg, &staged.file, pixels, inputs.n, target.atol),
        Samples::Pixels(images) => {
            crate::export::deploy::verify_format(model, cfg, &staged.file, target.format, images, inputs.n, target.atol)
        }
    };
    let why = match verified {
        Ok(comparison) if comparison.ok() => {
            staged.commit(path)?;
            crate::export::hf_files::write_beside(path, meta)?;
            let bytes = [path.clone(), with_data_suffix(path)]
                .iter()
                .map(|p| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0))
                .sum();
            return Ok(ExportReport {
                path: path.clone(),
                bytes,
                comparison,
                images: inputs.n,
                real_images: inputs.real,
                int8: None,
            });
        }
        Ok(comparison) => format!("tract and tch logits differ beyond atol {:e} ({comparison})", target.atol),
        Err(e) => format!("{e:#}"),
    };
    drop(staged);
    let failed = failed_path(path);
    let kept = match write(&failed) {
        Ok(()) => format!("the failing file is {} for inspection", failed.display()),
        Err(e) => format!("the failing file could not be kept either ({e:#})"),
    };
    let previous = if path.exists() { "is unchanged" } else { "was not written" };
    bail!("export verification failed: {why}; {} {previous}, {kept}", path.display())
}
