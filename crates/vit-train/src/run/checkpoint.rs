//! Safetensors checkpoints, always written atomically ([`vit::atomic`]: temp file in the same
//! folder, fsync, rename, folder fsync) so a run killed at any moment leaves either the old
//! or the new file, never a torn one.
//!
//! - `last.safetensors` / `best.safetensors`: model tensors only, PyTorch state-dict names;
//! - `resume.safetensors`: model + Adam moments (`optim.*`) + `train.epoch`, all in one
//!   file so they can never disagree.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use tch::{nn, Tensor};

/// Prefix of the averaged tensors in a resume file.
pub const EMA_PREFIX: &str = "ema.";

/// Errors reading or writing checkpoints.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    /// Writing failed.
    #[error("cannot write checkpoint {path}: {message}")]
    Write {
        /// The checkpoint file.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// Reading or parsing failed (missing, truncated, not safetensors).
    #[error("cannot read checkpoint {path}: {message} (is it a complete .safetensors file written by vit-train?)")]
    Read {
        /// The checkpoint file.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// The file does not match the model the config describes.
    #[error("checkpoint {path} does not match its config: {message}")]
    Mismatch {
        /// The checkpoint file.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
}

/// Writes named tensors to `path` atomically.
pub fn write_atomic(path: &Path, tensors: &[(String, Tensor)]) -> Result<(), CheckpointError> {
    let err = |message: String| CheckpointError::Write { path: path.to_path_buf(), message };
    if path.file_name().is_none() {
        return Err(err("not a file path".into()));
    }
    let tmp = vit::atomic::temp_path(path);
    let cpu: Vec<(String, Tensor)> =
        tensors.iter().map(|(n, t)| (n.clone(), t.to_device(tch::Device::Cpu).contiguous())).collect();
    if let Err(e) = Tensor::write_safetensors(&cpu, &tmp) {
        let _ = std::fs::remove_file(&tmp);
        return Err(err(e.to_string()));
    }
    vit::atomic::commit(&tmp, path).map_err(|e| err(e.to_string()))
}

/// Reads every tensor of a safetensors file.
pub fn read_all(path: &Path) -> Result<BTreeMap<String, Tensor>, CheckpointError> {
    if let Err(e) = vit::files::check_regular(path, vit::files::MAX_WEIGHTS_BYTES, "checkpoint") {
        let message = if e.is_not_found() { "file not found".to_string() } else { e.to_string() };
        return Err(CheckpointError::Read { path: path.to_path_buf(), message });
    }
    let tensors = Tensor::read_safetensors(path)
        .map_err(|e| CheckpointError::Read { path: path.to_path_buf(), message: e.to_string() })?;
    Ok(tensors.into_iter().collect())
}

/// The model's variables, sorted by name.
pub fn model_tensors(vs: &nn::VarStore) -> Vec<(String, Tensor)> {
    let mut vars: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
    vars.sort_by(|a, b| a.0.cmp(&b.0));
    vars
}

/// Saves the model's weights only.
pub fn save_weights(vs: &nn::VarStore, path: &Path) -> Result<(), CheckpointError> {
    write_atomic(path, &model_tensors(vs))
}

/// Copies `tensors` into the model; every variable must be present with its shape
/// (extra `optim.*`/`train.*`/`ema.*` entries of a resume file are ignored, any other extra is an error).
pub fn load_into(
    vs: &mut nn::VarStore,
    path: &Path,
    tensors: &BTreeMap<String, Tensor>,
) -> Result<(), CheckpointError> {
    let mismatch = |message: String| CheckpointError::Mismatch { path: path.to_path_buf(), message };
    let vars = vs.variables();
    for (name, var) in &vars {
        let src = tensors.get(name).ok_or_else(|| mismatch(format!("tensor `{name}` is missing")))?;
        if src.size() != var.size() {
            return Err(mismatch(format!(
                "tensor `{name}` has shape {:?}, the config needs {:?}",
                src.size(),
                var.size()
            )));
        }
    }
    if let Some(extra) = tensors.keys().find(|k| {
        !vars.contains_key(*k) && !k.starts_with("optim.") && !k.starts_with("train.") && !k.starts_with(EMA_PREFIX)
    }) {
        return Err(mismatch(format!("tensor `{extra}` is not part of this model (wrong config or variant?)")));
    }
    tch::no_grad(|| {
        for (name, mut var) in vars {
            if let Some(src) = tensors.get(&name) {
                var.copy_(&src.to_kind(var.kind()).to_device(var.device()));
            }
        }
    });
    Ok(())
}

/// Loads model weights from a `last`/`best`/`resume` file.
pub fn load_weights(vs: &mut nn::VarStore, path: &Path) -> Result<(), CheckpointError> {
    let tensors = read_all(path)?;
    load_into(vs, path, &tensors)
}
