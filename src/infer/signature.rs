//! What a model says about itself and whether its graph agrees: the
//! [`ModelMetadata`] read from the ONNX metadata properties (or a caller's
//! fallback for models not written by vit-train), and the check that the
//! graph takes one f32 `[batch, C, H, W]` input and gives `[batch, K]` logits
//! matching it. Both run once, when a model is opened, so that a mismatch is
//! an error naming the file instead of a failure deep inside a run.

use std::collections::HashMap;
use std::path::Path;

use ort::session::Session;
use ort::value::{TensorElementType, ValueType};

use super::InferError;
use crate::metadata::{MetadataError, ModelMetadata, KEY_LABELS};

/// The model's metadata, or `fallback` when the model has none of ours.
pub(super) fn read_metadata(
    session: &Session,
    path: &Path,
    fallback: Option<&ModelMetadata>,
) -> Result<ModelMetadata, InferError> {
    let load_error = |source| InferError::ModelLoad { path: path.to_path_buf(), source };
    let md = session.metadata().map_err(load_error)?;
    let keys = md.custom_keys().map_err(load_error)?;
    let props: HashMap<String, String> = keys.into_iter().filter_map(|k| md.custom(&k).map(|v| (k, v))).collect();
    let metadata_error = |source| InferError::Metadata { path: path.to_path_buf(), source };
    match (ModelMetadata::from_props(&props), fallback) {
        (Ok(meta), _) => Ok(meta),
        (Err(MetadataError::Missing(_)), Some(meta)) => {
            meta.config.validate().map_err(|e| metadata_error(e.into()))?;
            if meta.labels.len() != meta.config.num_classes {
                return Err(metadata_error(MetadataError::Malformed {
                    key: KEY_LABELS,
                    message: format!(
                        "fallback metadata has {} labels for {} classes",
                        meta.labels.len(),
                        meta.config.num_classes
                    ),
                }));
            }
            Ok(meta.clone())
        }
        (Err(source), _) => Err(metadata_error(source)),
    }
}

/// Checks the graph has one f32 `[batch, C, H, W]` input and a `[batch, K]`
/// output agreeing with the metadata; returns the input name.
pub(super) fn check_signature(session: &Session, meta: &ModelMetadata, path: &Path) -> Result<String, InferError> {
    let bad = |message: String| InferError::ModelShape { path: path.to_path_buf(), message };
    let [input] = session.inputs() else {
        return Err(bad(format!(
            "the graph has {} inputs; a vit-train model has exactly one (pixel_values)",
            session.inputs().len()
        )));
    };
    let Some(output) = session.outputs().first() else {
        return Err(bad("the graph has no output".into()));
    };
    let c = &meta.config;
    let want = [-1, c.in_channels as i64, c.image_size as i64, c.image_size as i64];
    let ValueType::Tensor { ty, shape, .. } = input.dtype() else {
        return Err(bad(format!("input `{}` is not a tensor", input.name())));
    };
    // Dimensions <= 0 are symbolic (the batch, or any dimension of a foreign export).
    let dims_ok = shape.len() == 4 && shape.iter().zip(want).skip(1).all(|(&d, w)| d <= 0 || d == w);
    if *ty != TensorElementType::Float32 || !dims_ok {
        return Err(bad(format!(
            "input `{}` is {ty:?} {:?} but the metadata describes f32 [batch, {}, {}, {}]",
            input.name(),
            &**shape,
            c.in_channels,
            c.image_size,
            c.image_size
        )));
    }
    if let ValueType::Tensor { shape, .. } = output.dtype() {
        let k = meta.labels.len() as i64;
        if shape.len() != 2 || (shape[1] > 0 && shape[1] != k) {
            return Err(bad(format!(
                "output `{}` has shape {:?} but the metadata lists {k} labels ([batch, {k}] expected)",
                output.name(),
                &**shape
            )));
        }
    }
    Ok(input.name().to_string())
}
