//! Evaluating a model on a labelled data set: [`load_eval_data`] finds the
//! split vit-train validated on (through [`Layout`], the one detection both
//! share), and [`Classifier::evaluate`] counts a [`Confusion`] matrix of the
//! argmax of the logits, the same numbers training reported.
//! [`scan_eval_data`] indexes the same images instead of decoding them, and
//! [`Classifier::evaluate`] then decodes one batch at a time, so a folder of
//! any size is evaluated in the memory of a batch.

use std::path::Path;

use rayon::prelude::*;

use super::{Classifier, InferError};
use crate::data::{self, Dataset, Layout, Skipped};
use crate::metrics::{argmax, Confusion};
use crate::preprocess::Preprocessor;

/// Accuracy and confusion matrix over a data set.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Evaluation {
    /// Top-1 accuracy (correct / total; 0 for an empty set).
    pub accuracy: f64,
    /// `confusion.matrix[true][predicted]` counts.
    pub confusion: Confusion,
    /// Images evaluated.
    pub total: u64,
    /// Files of a streamed set that could not be read or decoded when their
    /// batch came (each warned about), left out of the counts as a decoded
    /// set leaves out the files it skipped at load time.
    #[serde(skip)]
    pub skipped: Vec<Skipped>,
}

/// An evaluation set as [`load_eval_data`] found it.
#[derive(Debug, Clone)]
pub struct EvalData {
    /// Class names of the data, in label order.
    pub classes: Vec<String>,
    /// The images: decoded ([`load_eval_data`]) or indexed ([`scan_eval_data`]).
    pub data: Dataset,
    /// Which split was used, in words (`val split DIR`, `test split DIR`, ...).
    pub description: String,
}

/// Loads the images to evaluate a model on, exactly as vit-train validated:
/// - an IDX folder (Fashion-MNIST): its `t10k` split;
/// - a folder with `train/` and `val/` (or `valid/`, `validation/`, `test/`,
///   the first found): that evaluation split's image folder;
/// - otherwise an image folder `DIR/<class>/*`, all of it.
pub fn load_eval_data(dir: impl AsRef<Path>, prep: &Preprocessor) -> Result<EvalData, InferError> {
    eval_data(dir.as_ref(), prep, data::load_folder)
}

/// The images [`load_eval_data`] would decode, indexed only (IDX data, small,
/// is decoded): [`Classifier::evaluate`] decodes them batch by batch, and
/// counts the ones that fail in [`Evaluation::skipped`].
pub fn scan_eval_data(dir: impl AsRef<Path>, prep: &Preprocessor) -> Result<EvalData, InferError> {
    eval_data(dir.as_ref(), prep, data::scan_folder)
}

/// How an image folder becomes an evaluation set: decoded or indexed.
type ReadFolder = fn(&Path, &Preprocessor) -> Result<(Vec<String>, Dataset), data::DataError>;

/// [`load_eval_data`] with the folder step `read`.
fn eval_data(dir: &Path, prep: &Preprocessor, read: ReadFolder) -> Result<EvalData, InferError> {
    match Layout::detect(dir)? {
        Layout::Idx => {
            // The same t10k decode `load_splits` uses for validation, without the 60k training images.
            let data = data::load_idx_split(dir, "t10k", prep, None)?;
            let classes = data::FASHION_MNIST_LABELS.iter().map(|s| s.to_string()).collect();
            let description = format!("t10k split of IDX folder {}", dir.display());
            Ok(EvalData { classes, data, description })
        }
        Layout::Splits { val, .. } => {
            // `load_splits` decodes `val/` with `load_folder`'s code path (no cap):
            // loading it alone gives the same images without decoding train/.
            let (classes, data) = read(&val, prep)?;
            let name = val.file_name().map_or_else(|| "evaluation".into(), |n| n.to_string_lossy().into_owned());
            Ok(EvalData { classes, data, description: format!("{name} split {}", val.display()) })
        }
        Layout::Folder => {
            let (classes, data) = read(dir, prep)?;
            let kind = if data::is_shard_dir(dir) { "tar shards" } else { "image folder" };
            Ok(EvalData { classes, data, description: format!("{kind} {}", dir.display()) })
        }
    }
}

/// Decodes the images `range` of a streamed set in parallel: the CHW u8
/// pixels of those that decode, back to back, and their indices; the others
/// are warned about and added to `skipped`.
fn decode_batch(
    data: &Dataset,
    range: std::ops::Range<usize>,
    prep: &Preprocessor,
    skipped: &mut Vec<Skipped>,
) -> (Vec<u8>, Vec<usize>) {
    let decoded: Vec<_> = data.sources[range.clone()].par_iter().map(|source| source.load(prep)).collect();
    let (mut pixels, mut kept) = (Vec::with_capacity(range.len() * data.image_len), Vec::new());
    for (i, result) in range.zip(decoded) {
        match result {
            Ok(px) => {
                pixels.extend_from_slice(&px);
                kept.push(i);
            }
            Err(e) => {
                log::warn!("skipping {}: {e}", data.sources[i]);
                skipped.push(Skipped { path: data.sources[i].path(), reason: e.to_string() });
            }
        }
    }
    (pixels, kept)
}

impl Classifier {
    /// Accuracy and confusion matrix of the model on `data` (labels must index
    /// the model's classes), in batches of `batch_size` (0 counts as 1).
    /// Images whose logits are NaN or infinite make it an
    /// [`InferError::NonFiniteEvaluation`] naming how many: an accuracy over
    /// them would not mean anything.
    pub fn evaluate(&mut self, data: &Dataset, batch_size: usize) -> Result<Evaluation, InferError> {
        let k = self.labels().len();
        let prep = self.preprocessor().clone();
        if data.image_len != prep.image_len() && !data.is_empty() {
            return Err(InferError::DataMismatch(format!(
                "the data set holds {} values per image but the model takes {} ({} x {}x{}): load it with this model's Preprocessor",
                data.image_len,
                prep.image_len(),
                prep.channels,
                prep.image_size,
                prep.image_size
            )));
        }
        if let Some(bad) = data.labels.iter().find(|&&l| l < 0 || l as usize >= k) {
            return Err(InferError::DataMismatch(format!("label {bad} is out of range for a model with {k} classes")));
        }
        let mut confusion = Confusion::new(k);
        let bs = batch_size.max(1);
        let (mut non_finite, mut first, mut skipped) = (0usize, None, Vec::new());
        for start in (0..data.len()).step_by(bs) {
            let end = (start + bs).min(data.len());
            let decoded;
            let (px, rows) = if data.is_streamed() {
                let (pixels, kept) = decode_batch(data, start..end, &prep, &mut skipped);
                decoded = pixels;
                (&decoded[..], kept)
            } else {
                (&data.pixels[start * data.image_len..end * data.image_len], (start..end).collect())
            };
            if rows.is_empty() {
                continue;
            }
            let logits = self.logits_u8(px, rows.len())?;
            for (row, &i) in logits.chunks(k).zip(&rows) {
                if row.iter().all(|v| v.is_finite()) {
                    confusion.add(data.labels[i] as usize, argmax(row));
                } else {
                    non_finite += 1;
                    first.get_or_insert(i);
                }
            }
        }
        if let Some(i) = first {
            let first = data.sources.get(i).map_or_else(|| format!("image {i}"), |s| s.to_string());
            return Err(InferError::NonFiniteEvaluation { count: non_finite, total: data.len(), first });
        }
        Ok(Evaluation { accuracy: confusion.accuracy(), total: confusion.total(), confusion, skipped })
    }

    /// Checks that the data's class names are the model's labels, in order.
    pub fn check_classes(&self, classes: &[String]) -> Result<(), InferError> {
        if classes != self.labels() {
            return Err(InferError::DataMismatch(format!(
                "the data's classes {classes:?} are not the model's labels {:?} (same names, same order required)",
                self.labels()
            )));
        }
        Ok(())
    }
}
