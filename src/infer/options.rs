//! What a caller chooses: how to open a model ([`ClassifierOptions`]: the
//! execution provider requested, threads, graph optimisation, fallback
//! metadata) and how to classify ([`ClassifyOptions`]). Plain data with
//! `Default`s, parsed from names through `FromStr` so that no command-line
//! parser is needed here.

use std::str::FromStr;

use ort::session::builder::GraphOptimizationLevel;

use super::InferError;
use crate::metadata::ModelMetadata;

/// Which execution provider to run the model with: a request, see
/// [`ExecutionProvider`](super::ExecutionProvider) for what runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Provider {
    /// CUDA when the loaded ONNX Runtime has it and it starts, else CPU.
    #[default]
    Auto,
    /// CPU only.
    Cpu,
    /// CUDA or an error.
    Cuda,
}

impl FromStr for Provider {
    type Err = InferError;

    /// `auto`, `cpu`, `cuda` (or `gpu`), in any case.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "auto" => Ok(Self::Auto),
            "cpu" => Ok(Self::Cpu),
            "cuda" | "gpu" => Ok(Self::Cuda),
            _ => Err(InferError::UnknownValue {
                what: "execution provider",
                value: s.to_string(),
                expected: "auto, cpu or cuda",
            }),
        }
    }
}

/// ONNX Runtime graph optimisation level.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OptLevel {
    /// No graph optimisation.
    Disable,
    /// Constant folding, redundant node elimination.
    Basic,
    /// Plus node fusions (GELU, LayerNorm, attention, ...).
    Extended,
    /// Everything, layout optimisations included.
    #[default]
    All,
}

impl FromStr for OptLevel {
    type Err = InferError;

    /// `disable` (or `none`), `basic`, `extended`, `all`, in any case.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "disable" | "none" => Ok(Self::Disable),
            "basic" => Ok(Self::Basic),
            "extended" => Ok(Self::Extended),
            "all" => Ok(Self::All),
            _ => Err(InferError::UnknownValue {
                what: "optimization level",
                value: s.to_string(),
                expected: "disable, basic, extended or all",
            }),
        }
    }
}

impl From<OptLevel> for GraphOptimizationLevel {
    fn from(level: OptLevel) -> Self {
        match level {
            OptLevel::Disable => GraphOptimizationLevel::Disable,
            OptLevel::Basic => GraphOptimizationLevel::Level1,
            OptLevel::Extended => GraphOptimizationLevel::Level2,
            OptLevel::All => GraphOptimizationLevel::All,
        }
    }
}

/// How to open a model.
#[derive(Debug, Clone, Default)]
pub struct ClassifierOptions {
    /// Execution provider requested.
    pub provider: Provider,
    /// Threads within an operator (`None`: ONNX Runtime's default, one per
    /// core); at most [`max_intra_threads`].
    pub intra_threads: Option<usize>,
    /// Graph optimisation level.
    pub optimization: OptLevel,
    /// Metadata to use when the model has none of ours (for models not written
    /// by vit-train). A model that has our metadata always uses its own.
    pub fallback_metadata: Option<ModelMetadata>,
    /// Folders searched first for the CUDA libraries (before `VIT_CUDA_LIB_DIR`,
    /// the venv, `CUDA_HOME`/`CUDA_PATH` and the system; see
    /// [`CudaSearch::dirs`](super::CudaSearch::dirs)).
    pub cuda_library_dirs: Vec<std::path::PathBuf>,
}

/// The most threads per operator [`ClassifierOptions::intra_threads`] may ask
/// for: 4 x the cores available to this process. Beyond that ONNX Runtime only
/// slows down (15 x at 1000 threads on 2 cores) or, far beyond, never finishes
/// starting its pool.
pub fn max_intra_threads() -> usize {
    4 * std::thread::available_parallelism().map_or(1, |n| n.get())
}

impl ClassifierOptions {
    /// Checks the options that can be checked before ONNX Runtime is loaded.
    pub fn validate(&self) -> Result<(), InferError> {
        let limit = max_intra_threads();
        match self.intra_threads {
            Some(n) if n > limit => Err(InferError::Invalid(format!(
                "{n} threads per operator is more than the limit of {limit} (4 x the {} available cores): more only slow ONNX Runtime down",
                limit / 4
            ))),
            _ => Ok(()),
        }
    }
}

/// How to classify image files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClassifyOptions {
    /// Classes reported per image, most probable first (capped at the
    /// model's class count).
    pub top_k: usize,
    /// Images per inference batch (0 counts as 1).
    pub batch_size: usize,
}

impl Default for ClassifyOptions {
    /// The five most probable classes, 32 images per batch.
    fn default() -> Self {
        Self { top_k: 5, batch_size: 32 }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_in_any_case_and_unknown_ones_are_named() {
        assert_eq!("CUDA".parse::<Provider>().unwrap(), Provider::Cuda);
        assert_eq!("gpu".parse::<Provider>().unwrap(), Provider::Cuda);
        let msg = "tpu".parse::<Provider>().unwrap_err().to_string();
        assert!(msg.contains("`tpu`") && msg.contains("auto, cpu or cuda"), "{msg}");
        assert_eq!("extended".parse::<OptLevel>().unwrap(), OptLevel::Extended);
        assert_eq!("none".parse::<OptLevel>().unwrap(), OptLevel::Disable);
        assert!("max".parse::<OptLevel>().unwrap_err().to_string().contains("max"));
    }
}
