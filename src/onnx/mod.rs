//! ONNX writer (feature `export`): a [`ModelMetadata`] (config, labels) and the
//! checkpoint as plain [`NamedTensors`] in, an ONNX model (opset 17, IR version 8)
//! out.
//!
//! The exporter takes a config and plain f32 tensors, not a libtorch module, so
//! it lives in the light crate and is tested without libtorch: tests make
//! random weights for [`expected_tensors`], export them and run the file with
//! tract. The trainer only has to hand over its state dict by name.
//!
//! The graph is written node by node from the config (`graph/` is laid out as
//! the tch model: shared pieces in `graph/mod.rs`, the variants in
//! `graph/standard.rs` and `graph/dlstudio.rs`, all on the small builder in
//! `builder.rs`), not traced, so every operator and attribute is the one chosen
//! here:
//!
//! - input `pixel_values` f32 `[batch, C, H, W]`, output `logits` f32
//!   `[batch, num_classes]`, `batch` symbolic: one file serves every batch size;
//! - every checkpoint tensor is an initializer **under its checkpoint name**.
//!   PyTorch `Linear` weights (`[out, in]`) are stored **transposed** (`[in, out]`)
//!   so that a linear layer is `MatMul(x, W) + b`; e.g. the initializer
//!   `blocks.0.attn.qkv.weight` is `[E, 3E]` while the checkpoint's is `[3E, E]`.
//!   All other tensors keep their PyTorch layout;
//! - constants the graph adds (shapes, indices, scalars) are initializers named
//!   `const.{purpose}` (e.g. `const.shape`, `const.shape_1`, `const.index0`,
//!   `const.sqrt2`), int64 or f32, deduplicated by value;
//! - `metadata_props` holds [`ModelMetadata::to_props`]; the bytes are
//!   deterministic (no timestamps, ordered collections only).

use std::path::Path;

use prost::Message;

use crate::config::ConfigError;
use crate::format::{InputKind, ModelFormat, Precision};
use crate::metadata::{ModelMetadata, PRODUCER};
use crate::tensor::NamedTensors;

mod builder;
mod graph;
mod input;
mod precision;
pub mod proto;
mod quantize;
mod write;

/// Suffix of the external data file written beside `<model>.onnx` (`<model>.onnx.data`).
pub const EXTERNAL_DATA_SUFFIX: &str = ".data";
pub use builder::CONST_PREFIX;
pub use graph::{BATCH_DIM, INPUT_NAME, OUTPUT_NAME};
pub use input::PIXELS_U8_NAME;
pub use quantize::Ranges;

use builder::GraphBuilder;
use graph::Layout;
use proto::tensor_proto::DataType;
use proto::{type_proto, ModelProto, OperatorSetIdProto, StringStringEntryProto, TypeProto, ValueInfoProto};

/// ONNX IR version written into the model.
pub const IR_VERSION: i64 = 8;
/// Opset version of the default (`""`) domain.
pub const OPSET_VERSION: i64 = 17;
/// Protobuf cannot encode a message of 2 GiB or more; larger models need external data.
pub const INLINE_LIMIT: usize = i32::MAX as usize;

/// Options of [`write_model`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExportOptions {
    /// Always put the weights in `<file name>.data` next to the model (they go
    /// there anyway when the inline model would exceed 2 GiB).
    pub external_data: bool,
    /// Input kind and precision of the graph (default: normalised f32 input, fp32).
    /// int8 is refused by [`write_model`] ([`ExportError::Format`]): it needs
    /// calibration ranges, which [`write_quantized_model`] takes.
    pub format: ModelFormat,
}

/// Why an export failed. Every message names the tensor or file concerned.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// The config's graph needs a tensor the checkpoint lacks.
    #[error("checkpoint has no tensor `{name}`, which this config's graph needs: export a checkpoint trained with this config (variant, depth, num_heads, qkv_bias)")]
    MissingTensor {
        /// State-dict name.
        name: String,
    },
    /// A tensor's shape is not the one the config implies.
    #[error("tensor `{name}` has shape {found:?} but this config needs {expected:?}: the checkpoint does not match the config (check image_size, patch_size, in_channels, embed_dim, num_heads, mlp_ratio, num_classes)")]
    ShapeMismatch {
        /// State-dict name.
        name: String,
        /// Shape the config implies (PyTorch layout).
        expected: Vec<usize>,
        /// Shape in the checkpoint.
        found: Vec<usize>,
    },
    /// The checkpoint holds a tensor the graph would not use.
    #[error("tensor `{name}` is in the checkpoint but this config's graph has no use for it: the checkpoint does not match the config (check variant, depth, qkv_bias), or drop the tensor")]
    UnexpectedTensor {
        /// State-dict name.
        name: String,
    },
    /// A tensor's data does not fill its shape.
    #[error("tensor `{name}` has {found} values but its shape {shape:?} needs {expected}: the tensor is corrupt, re-export it from the trainer")]
    TensorSize {
        /// State-dict name.
        name: String,
        /// Its declared shape.
        shape: Vec<usize>,
        /// `shape.iter().product()`.
        expected: usize,
        /// `data.len()`.
        found: usize,
    },
    /// `labels` does not have one entry per class.
    #[error("metadata has {found} labels for num_classes = {expected}: pass one label per class, in logit order")]
    LabelCount {
        /// `config.num_classes`.
        expected: usize,
        /// `labels.len()`.
        found: usize,
    },
    /// The config is invalid.
    #[error("cannot export: {0}")]
    Config(#[from] ConfigError),
    /// The model does not fit one protobuf message.
    #[error("the model is {bytes} bytes, over protobuf's 2 GiB limit: write it with write_model, which moves the weights to an external data file")]
    TooLarge {
        /// Encoded size with inline weights.
        bytes: usize,
    },
    /// The output path cannot name a file.
    #[error("cannot write the model to `{path}`: {reason}")]
    InvalidPath {
        /// The path given.
        path: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The requested format cannot be written by this function.
    #[error("cannot write a {format} graph here: {reason}")]
    Format {
        /// The format asked for.
        format: ModelFormat,
        /// Why, and what to use instead.
        reason: &'static str,
    },
    /// An int8 export lacks the calibrated range of an activation it quantises.
    #[error("no calibration range for the activation `{name}`: calibrate with the graph of calibration_model for this same config and format")]
    MissingRange {
        /// The activation tensor.
        name: String,
    },
    /// Writing a file failed.
    #[error("cannot write `{path}`: {source} (check that the directory exists and is writable)")]
    Io {
        /// The file being written.
        path: String,
        /// The OS error.
        source: std::io::Error,
    },
}

/// Tensor names and shapes (PyTorch layout) the config's graph needs, in a
/// fixed order (graph order; used to validate checkpoints). The initializers
/// of an exported model carry the same names in the same order.
pub fn expected_tensors(cfg: &crate::ViTConfig) -> Vec<(String, Vec<usize>)> {
    graph::tensor_specs(cfg).into_iter().map(|s| (s.name, s.shape)).collect()
}

/// Builds the ModelProto bytes (weights inline). Checks every expected tensor
/// is present with the right shape and that there are no extra tensors.
pub fn export_to_bytes(meta: &ModelMetadata, weights: &NamedTensors) -> Result<Vec<u8>, ExportError> {
    let model = build_model(meta, weights, ModelFormat::default(), None)?;
    let bytes = model.encoded_len();
    if bytes > INLINE_LIMIT {
        return Err(ExportError::TooLarge { bytes });
    }
    Ok(model.encode_to_vec())
}

/// Writes `path` atomically (temporary file in the same directory, then
/// rename). The weights go to the external data file `<file name>.data` next to
/// it when `opts.external_data` is set or when the inline model would exceed
/// 2 GiB: each weight initializer then has `data_location = EXTERNAL` and
/// `location`/`offset`/`length` entries (offsets aligned to 64 bytes, 4096 for
/// tensors of 1 MiB or more). Constants stay inline. The data file is written
/// (atomically) before the model file.
///
/// ```no_run
/// use std::path::Path;
/// use vit::onnx::{expected_tensors, write_model, ExportOptions};
/// use vit::{ModelMetadata, NamedTensors, TensorData, ViTConfig};
///
/// let config = ViTConfig { num_classes: 3, ..ViTConfig::default() };
/// // A checkpoint: every tensor the graph needs, by state-dict name (zeros here).
/// let weights: NamedTensors = expected_tensors(&config)
///     .into_iter()
///     .map(|(name, shape)| {
///         let data = vec![0.0; shape.iter().product()];
///         (name, TensorData::new(shape, data).expect("data fills the shape"))
///     })
///     .collect();
/// let labels = vec!["cat".to_owned(), "dog".to_owned(), "fox".to_owned()];
/// let meta = ModelMetadata { config, labels, val_accuracy: None };
/// write_model(Path::new("model.onnx"), &meta, &weights, &ExportOptions::default())?;
/// # Ok::<(), vit::onnx::ExportError>(())
/// ```
pub fn write_model(
    path: &Path,
    meta: &ModelMetadata,
    weights: &NamedTensors,
    opts: &ExportOptions,
) -> Result<(), ExportError> {
    let model = build_model(meta, weights, opts.format, None)?;
    write::write_model_proto(path, model, opts.external_data)
}

/// [`write_model`] for an int8 format (`opts.format.precision` must be
/// [`Precision::Int8`]): the graph in QDQ form with the activation ranges
/// `ranges`, measured by running [`calibration_model`] on training images.
pub fn write_quantized_model(
    path: &Path,
    meta: &ModelMetadata,
    weights: &NamedTensors,
    opts: &ExportOptions,
    ranges: &Ranges,
) -> Result<(), ExportError> {
    if opts.format.precision != Precision::Int8 {
        return Err(ExportError::Format {
            format: opts.format,
            reason: "write_quantized_model writes int8 graphs only",
        });
    }
    let model = build_model(meta, weights, opts.format, Some(ranges))?;
    write::write_model_proto(path, model, opts.external_data)
}

/// The float32 graph that an int8 export of `meta` and `weights` starts from
/// (normalised float input, batch norms folded into convolutions), with every
/// activation the int8 graph quantises as an extra float output: the model
/// bytes, and the names of those outputs, whose (min, max) over calibration
/// images are the [`Ranges`] that [`write_quantized_model`] takes.
pub fn calibration_model(meta: &ModelMetadata, weights: &NamedTensors) -> Result<(Vec<u8>, Vec<String>), ExportError> {
    let mut model = build_model(meta, weights, ModelFormat::default(), None)?;
    let graph = model.graph.as_mut().expect("build_model sets the graph");
    quantize::fold_batch_norms(graph);
    let targets = quantize::calibration_targets(graph);
    let float = type_proto::Tensor { elem_type: Some(DataType::Float as i32), shape: None };
    graph.output.extend(targets.iter().map(|name| ValueInfoProto {
        name: Some(name.clone()),
        r#type: Some(TypeProto { value: Some(type_proto::Value::TensorType(float.clone())), denotation: None }),
        ..Default::default()
    }));
    let bytes = model.encoded_len();
    if bytes > INLINE_LIMIT {
        return Err(ExportError::TooLarge { bytes });
    }
    Ok((model.encode_to_vec(), targets))
}

/// Validates the checkpoint against the config and assembles the model.
fn build_model(
    meta: &ModelMetadata,
    weights: &NamedTensors,
    format: ModelFormat,
    ranges: Option<&Ranges>,
) -> Result<ModelProto, ExportError> {
    let cfg = &meta.config;
    cfg.validate()?;
    if meta.labels.len() != cfg.num_classes {
        return Err(ExportError::LabelCount { expected: cfg.num_classes, found: meta.labels.len() });
    }
    let specs = graph::tensor_specs(cfg);
    let mut b = GraphBuilder::new();
    for spec in &specs {
        let t = weights.get(&spec.name).ok_or_else(|| ExportError::MissingTensor { name: spec.name.clone() })?;
        if t.shape != spec.shape {
            return Err(ExportError::ShapeMismatch {
                name: spec.name.clone(),
                expected: spec.shape.clone(),
                found: t.shape.clone(),
            });
        }
        let expected = t.shape.iter().product::<usize>();
        if t.data.len() != expected {
            return Err(ExportError::TensorSize {
                name: spec.name.clone(),
                shape: t.shape.clone(),
                expected,
                found: t.data.len(),
            });
        }
        match spec.layout {
            Layout::AsIs => b.initializer(&spec.name, t),
            Layout::LinearWeight => b.initializer_transposed(&spec.name, t),
        };
    }
    if let Some(name) = weights.keys().find(|k| !specs.iter().any(|s| &s.name == *k)) {
        return Err(ExportError::UnexpectedTensor { name: name.clone() });
    }
    let mut graph = graph::build(cfg, b);
    if format.input == InputKind::Uint8Nhwc {
        input::take_uint8_pixels(&mut graph, cfg);
    }
    match format.precision {
        Precision::Fp32 => {}
        Precision::Fp16 => precision::to_float16(&mut graph),
        Precision::Int8 => {
            let Some(ranges) = ranges else {
                return Err(ExportError::Format {
                    format,
                    reason: "int8 needs calibration ranges measured on training images: use write_quantized_model",
                });
            };
            quantize::fold_batch_norms(&mut graph);
            quantize::to_int8(&mut graph, ranges).map_err(|m| ExportError::MissingRange { name: m.0 })?;
        }
    }
    let props = meta.to_props().into_iter().chain(format.to_props());
    let entry = |(key, value): (String, String)| StringStringEntryProto { key: Some(key), value: Some(value) };
    Ok(ModelProto {
        ir_version: Some(IR_VERSION),
        opset_import: vec![OperatorSetIdProto { domain: Some(String::new()), version: Some(OPSET_VERSION) }],
        producer_name: Some(PRODUCER.to_owned()),
        producer_version: Some(env!("CARGO_PKG_VERSION").to_owned()),
        graph: Some(graph),
        metadata_props: props.map(entry).collect(),
        ..Default::default()
    })
}

#[cfg(test)]
mod tests;
