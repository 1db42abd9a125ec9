//! `vit-train fit --init`: a new run starts from a checkpoint trained
//! elsewhere (timm or Hugging Face, see [`crate::import`]). The run keeps the
//! checkpoint's architecture; a head for another number of classes is
//! re-initialised and position embeddings for another patch grid are resampled
//! as timm does, each said in the log. Any other difference is an error
//! naming the tensor.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{bail, Context, Result};
use tch::{nn, Tensor};
use vit::ViTConfig;

use crate::import::resample::resample_abs_pos_embed;
use crate::import::{self, ImportOptions, Imported};

/// Reads the checkpoint `weights` (with `--num-heads` when the file does not say).
pub fn read(weights: &Path, num_heads: Option<usize>) -> Result<Imported> {
    let opts = ImportOptions { num_heads, ..Default::default() };
    import::load(weights, &opts).with_context(|| format!("cannot import {}", weights.display()))
}

/// The run's config: the checkpoint's architecture, with `image_size`,
/// `num_classes`, preprocessing, test-time flip and training recipe from
/// `preset` (without one: the checkpoint's image size, the data's classes);
/// returned with the checkpoint read, so the run loads it without reading it again.
pub fn run_config(
    weights: &Path,
    num_heads: Option<usize>,
    preset: Option<&ViTConfig>,
) -> Result<(ViTConfig, Imported)> {
    let flip = preset.map(|p| p.test_time_flip);
    let opts = ImportOptions { num_heads, base: preset.cloned(), test_time_flip: flip, ..Default::default() };
    let imported = import::load(weights, &opts).with_context(|| format!("cannot import {}", weights.display()))?;
    let mut cfg = imported.cfg.clone();
    log::info!("--init {:?} checkpoint: {}", imported.format, crate::import::describe(&cfg));
    if let Some(p) = preset.filter(|p| p.patch_size != cfg.patch_size) {
        // Patch embeddings are not resampled: the checkpoint's kernel size is the model's.
        log::info!(
            "--init: the config's patch_size {} differs from the checkpoint's {}; the checkpoint's patch size {} is used",
            p.patch_size,
            cfg.patch_size,
            cfg.patch_size
        );
    }
    if let Some(p) = preset {
        if p.image_size % cfg.patch_size != 0 {
            bail!(
                "image_size {} of the config is not a multiple of the checkpoint's patch_size {}",
                p.image_size,
                cfg.patch_size
            );
        }
        cfg.image_size = p.image_size;
        cfg.num_classes = p.num_classes;
    } else {
        cfg.num_classes = 0; // from the data
    }
    Ok((cfg, imported))
}

/// The checkpoint's tensors for a model of `cfg` (whose `num_classes` and
/// `image_size` may differ from the checkpoint's): heads of another class
/// count are left out (the model keeps its fresh ones) and the position
/// embedding is resampled to the new grid.
pub fn tensors_for(imported: &Imported, cfg: &ViTConfig) -> Result<BTreeMap<String, Tensor>> {
    let mut tensors: BTreeMap<String, Tensor> =
        imported.tensors.iter().map(|(name, t)| (name.clone(), t.shallow_clone())).collect();
    if imported.cfg.num_classes != cfg.num_classes {
        tensors.retain(|name, _| !name.starts_with("head."));
        log::info!(
            "--init: head re-initialised for {} classes (the checkpoint has {})",
            cfg.num_classes,
            imported.cfg.num_classes
        );
    }
    let (old, new) = (imported.cfg.grid_size(), cfg.grid_size());
    if old != new {
        let pos = tensors.remove("pos_embed").context("the checkpoint has no pos_embed")?;
        let prefix = cfg.num_prefix_tokens() as i64;
        tensors.insert("pos_embed".into(), resample_abs_pos_embed(&pos, new as i64, prefix));
        log::info!(
            "--init: position embeddings resampled from a {old}x{old} to a {new}x{new} patch grid (image size {})",
            cfg.image_size
        );
    }
    Ok(tensors)
}

/// Copies `tensors` into `vs`; variables without a tensor keep their
/// initialisation, and a tensor with no variable or another shape is an error.
pub fn copy_into(vs: &nn::VarStore, tensors: &BTreeMap<String, Tensor>) -> Result<()> {
    let vars = vs.variables();
    for (name, t) in tensors {
        let var = vars.get(name).with_context(|| format!("tensor `{name}` is not part of the run's model"))?;
        if var.size() != t.size() {
            bail!("tensor `{name}` has shape {:?}, the run's model needs {:?}", t.size(), var.size());
        }
    }
    tch::no_grad(|| {
        for (name, t) in tensors {
            let mut var = vars[name].shallow_clone();
            var.copy_(&t.to_kind(var.kind()).to_device(var.device()));
        }
    });
    Ok(())
}
