//! `vit`: the light half of the Vision Transformer toolchain. It never links
//! libtorch. It holds what training, export and deployment share:
//!
//! - [`config`]: `ViTConfig`, the one model description (TOML presets, JSON in ONNX metadata);
//! - [`preprocess`]: the one decode/resize/normalise implementation;
//! - [`data`]: image-folder and Fashion-MNIST IDX data sets, decoded once to u8;
//! - [`metadata`]: what an exported ONNX file says about itself;
//! - [`metrics`]: the confusion matrix training and inference both report;
//! - [`flags`]: parsers of numeric command-line flags (finite numbers only);
//! - [`atomic`]: file writes that leave the old file or the new one, never a torn one;
//! - `onnx` (feature `export`): the ONNX writer;
//! - `infer` (feature `infer`): ONNX Runtime inference;
//! - `serve` (feature `serve`): an HTTP server (Open Inference Protocol) over `infer`.

#![warn(missing_docs)]

pub mod atomic;
#[cfg(feature = "cli-log")]
pub mod cli_log;
pub mod config;
pub mod data;
pub mod files;
pub mod flags;
pub mod format;
#[cfg(feature = "infer")]
pub mod infer;
pub mod metadata;
pub mod metrics;
#[cfg(feature = "export")]
pub mod onnx;
pub mod preprocess;
#[cfg(feature = "serve")]
pub mod serve;
pub mod tensor;
pub mod text;

pub use config::{Variant, ViTConfig};
pub use metadata::ModelMetadata;
pub use preprocess::Preprocessor;
pub use tensor::{NamedTensors, TensorData};
