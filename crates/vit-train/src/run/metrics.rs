//! Classification metrics and the run's JSON records (`metrics.jsonl`, `summary.json`).

use std::io::Write;
use std::path::Path;

use serde::{Deserialize, Serialize};
pub use vit::metrics::Confusion;

/// One line of `metrics.jsonl`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Record {
    /// Mean training loss over the last `log_every` iterations.
    Step {
        /// Epoch, 0-based.
        epoch: usize,
        /// Global iteration, 1-based, over all epochs.
        iter: usize,
        /// Mean loss over the window.
        loss: f64,
        /// Learning rate of the last step.
        lr: f64,
    },
    /// End of an epoch; the validation fields only on evaluated epochs (`train.eval_every`).
    Epoch {
        /// Epoch, 0-based.
        epoch: usize,
        /// Mean training loss per image.
        train_loss: f64,
        /// Validation loss of the evaluated weights.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        val_loss: Option<f64>,
        /// Validation accuracy of the evaluated weights.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        val_accuracy: Option<f64>,
        /// Training throughput (forward, backward, update).
        train_images_per_sec: f64,
        /// Wall time of the epoch, evaluation included.
        seconds: f64,
    },
}

impl Record {
    /// The epoch the record belongs to.
    pub fn epoch(&self) -> usize {
        match self {
            Record::Step { epoch, .. } | Record::Epoch { epoch, .. } => *epoch,
        }
    }

    /// The validation accuracy of an evaluated epoch.
    pub fn val_accuracy(&self) -> Option<f64> {
        match self {
            Record::Epoch { val_accuracy, .. } => *val_accuracy,
            Record::Step { .. } => None,
        }
    }
}

/// Reads `metrics.jsonl` (missing file: empty; unparsable lines are skipped).
pub fn read_records(path: &Path) -> Vec<Record> {
    vit::files::read_text(path, "run records")
        .map(|s| s.lines().filter_map(|l| serde_json::from_str(l).ok()).collect())
        .unwrap_or_default()
}

/// Rewrites `metrics.jsonl` with `records`, atomically: a kill keeps the
/// previous epochs' records whole.
pub fn write_records(path: &Path, records: &[Record]) -> std::io::Result<()> {
    vit::atomic::write_with(path, |f| {
        for r in records {
            writeln!(f, "{}", serde_json::to_string(r).map_err(std::io::Error::other)?)?;
        }
        Ok(())
    })
}

/// `summary.json`: what a run achieved.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// Validation accuracy of the final weights (`last.safetensors`); `None`
    /// (null) when the run had no validation images: not measured.
    pub val_accuracy: Option<f64>,
    /// Best per-epoch validation accuracy (`best.safetensors`); `None` when not measured.
    pub best_val_accuracy: Option<f64>,
    /// Epoch (1-based) of the best accuracy; `None` when not measured.
    pub best_epoch: Option<usize>,
    /// Confusion matrix of the final weights, `[true][predicted]`; `None` when not measured.
    pub confusion_matrix: Option<Vec<Vec<u64>>>,
    /// Class names in label order.
    pub labels: Vec<String>,
    /// Epochs trained.
    pub epochs: usize,
    /// Mean training throughput over all epochs (images/s, forward + backward + update).
    pub train_images_per_sec: f64,
    /// Files that could not be decoded.
    pub skipped_files: usize,
    /// Training images used.
    pub train_images: usize,
    /// Validation images used.
    pub val_images: usize,
    /// Trainable parameters.
    pub parameters: i64,
    /// Device trained on (`cpu`, `cuda:0`).
    pub device: String,
    /// Wall time of the whole fit, data loading included, in seconds.
    pub wall_seconds: f64,
}
