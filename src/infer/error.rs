//! [`InferError`], the one error type of inference. Messages name the file,
//! metadata key or value concerned and say what to do, but never a
//! command-line flag: a program embedding the library has none, and
//! `vit-infer` adds its own hints.

use std::path::PathBuf;
use std::sync::Arc;

use super::CudaError;
use crate::data::DataError;
use crate::metadata::MetadataError;
use crate::preprocess::PreprocessError;

/// Why inference failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum InferError {
    /// The model path is not a regular file, or too large.
    #[error(transparent)]
    File(#[from] crate::files::FileError),
    /// The ONNX Runtime shared library could not be found or loaded; the
    /// message lists every place looked at and how to fix it.
    #[error("{0}")]
    Runtime(String),
    /// The model file does not exist.
    #[error("model file {0} does not exist (export one with `vit-train export`)")]
    ModelNotFound(PathBuf),
    /// ONNX Runtime cannot load the model (corrupt or not an ONNX file).
    #[error("cannot load model {path}: {source} (is it an ONNX file written by `vit-train export`? re-export it)")]
    ModelLoad {
        /// The model file.
        path: PathBuf,
        /// ONNX Runtime's error.
        #[source]
        source: ort::Error,
    },
    /// The model's metadata is missing or malformed.
    #[error("model {path}: {source}")]
    Metadata {
        /// The model file.
        path: PathBuf,
        /// What is wrong.
        #[source]
        source: MetadataError,
    },
    /// The graph's inputs/outputs disagree with its metadata.
    #[error("model {path}: {message}")]
    ModelShape {
        /// The model file.
        path: PathBuf,
        /// What disagrees.
        message: String,
    },
    /// CUDA was requested but cannot be used.
    #[error("CUDA execution provider requested but unavailable: {0}; request the CPU provider, or install a CUDA build of ONNX Runtime (onnxruntime-gpu) and point ORT_DYLIB_PATH at it")]
    CudaUnavailable(#[source] CudaError),
    /// A session option was rejected.
    #[error("invalid session option {option}: {source}")]
    SessionOption {
        /// The option.
        option: &'static str,
        /// ONNX Runtime's error.
        #[source]
        source: ort::Error,
    },
    /// Supplied pixels do not have the model's input size.
    #[error("{what} has {found} values but the model takes {batch} x {channels} x {size} x {size} = {expected} ({channels} channel(s) of {size}x{size}){hint}")]
    InputSize {
        /// Which input (`pixels`, `image 3`).
        what: String,
        /// Values supplied.
        found: usize,
        /// Values expected.
        expected: usize,
        /// Images in the batch.
        batch: usize,
        /// Model channels.
        channels: usize,
        /// Model side.
        size: usize,
        /// A guess at what was supplied instead (empty, or `; ...`).
        hint: String,
    },
    /// An image file could not be read or decoded.
    #[error("cannot classify {path}: {source}")]
    Image {
        /// The file.
        path: PathBuf,
        /// The read or decode error.
        #[source]
        source: PreprocessError,
    },
    /// The batch holding this image file failed; every file of the batch
    /// reports the same shared error.
    #[error("cannot classify {path}: {source}")]
    Batch {
        /// The file.
        path: PathBuf,
        /// Why the batch failed.
        #[source]
        source: Arc<InferError>,
    },
    /// An ONNX Runtime call failed.
    #[error("inference failed: {action}: {source}")]
    Ort {
        /// What was being done (`running the model`, ...).
        action: &'static str,
        /// ONNX Runtime's error.
        #[source]
        source: ort::Error,
    },
    /// The model gave NaN or infinite logits for an image, so no class can be
    /// reported for it.
    #[error("model gave non-finite logits for {image} ({logits}): its weights or this input hold NaN or infinity, so no class is reported")]
    NonFiniteLogits {
        /// The image: its file, or `image N` of a batch of pixels.
        image: String,
        /// The first logits, as printed.
        logits: String,
    },
    /// Evaluation met images whose logits are NaN or infinite; an accuracy
    /// over them would count garbage as predictions, so none is reported.
    #[error("{count} of {total} images gave non-finite logits (NaN or infinity), the first {first}: no accuracy is reported (are the model's weights NaN? re-export a finite checkpoint)")]
    NonFiniteEvaluation {
        /// Images with non-finite logits.
        count: usize,
        /// Images evaluated.
        total: usize,
        /// The first such image: its file, or `image N` of the data set.
        first: String,
    },
    /// The model ran but its output is not the `[batch, classes]` logits expected.
    #[error("inference failed: {0}")]
    Output(String),
    /// An evaluation data set could not be loaded.
    #[error(transparent)]
    Data(#[from] DataError),
    /// A data set does not fit the model.
    #[error("{0}")]
    DataMismatch(String),
    /// A name that is not one of an option's values.
    #[error("{what} `{value}`: expected {expected}")]
    UnknownValue {
        /// The option (`execution provider`, ...).
        what: &'static str,
        /// The name given.
        value: String,
        /// The accepted names, in words.
        expected: &'static str,
    },
    /// A bad argument value.
    #[error("{0}")]
    Invalid(String),
}

impl InferError {
    /// An ONNX Runtime failure while doing `action`.
    pub(super) fn ort(action: &'static str) -> impl FnOnce(ort::Error) -> Self {
        move |source| Self::Ort { action, source }
    }

    /// [`InferError::NonFiniteLogits`] when a row of logits holds NaN or infinity.
    pub(super) fn check_finite(row: &[f32], image: impl FnOnce() -> String) -> Result<(), Self> {
        if row.iter().all(|v| v.is_finite()) {
            return Ok(());
        }
        // A few values say enough (NaN everywhere, or one overflow) without flooding the line.
        const SHOWN: usize = 6;
        let mut logits = row.iter().take(SHOWN).map(|v| v.to_string()).collect::<Vec<_>>().join(", ");
        if row.len() > SHOWN {
            logits += &format!(", ... {} values", row.len());
        }
        Err(Self::NonFiniteLogits { image: image(), logits: format!("[{logits}]") })
    }
}
