//! Feeding decoded pixels to every input kind a model may take
//! ([`ModelFormat`]): a float-input graph gets them normalised by the
//! [`Preprocessor`](crate::Preprocessor), a raw-pixel graph gets them as they
//! are, u8 `[batch, H, W, C]`, and normalises them itself. The format comes
//! from the model's metadata and is checked against the graph's input when
//! the model is opened.

use std::collections::HashMap;
use std::path::Path;

use ort::session::Session;
use ort::value::{TensorElementType, TensorRef, ValueType};

use super::Classifier;
use crate::format::{InputKind, ModelFormat};
use crate::infer::InferError;
use crate::metadata::ModelMetadata;

impl Classifier {
    /// The model's input kind and precision, from its metadata.
    pub fn format(&self) -> ModelFormat {
        self.format
    }

    /// Logits (`[batch, num_classes]`, row-major) of `batch` CHW u8 images (as
    /// [`Preprocessor::load_file`](crate::Preprocessor::load_file) returns them),
    /// whatever input the model takes.
    pub fn logits_u8(&mut self, images_chw: &[u8], batch: usize) -> Result<Vec<f32>, InferError> {
        if self.format.input == InputKind::Float32Nchw {
            let normalised = self.prep.normalize(images_chw);
            return self.logits(&normalised, batch);
        }
        if batch == 0 {
            return Err(InferError::Invalid("batch must be at least 1".into()));
        }
        if images_chw.len() != batch * self.prep.image_len() {
            return Err(super::size_error(&self.prep, "pixels".into(), images_chw.len(), batch));
        }
        let (c, s) = (self.prep.channels, self.prep.image_size);
        let nhwc = to_nhwc(images_chw, c, s * s);
        let input = TensorRef::from_array_view(([batch, s, s, c], &nhwc[..]))
            .map_err(InferError::ort("wrapping the pixels in a tensor"))?;
        self.run(input.into(), batch)
    }
}

/// CHW images -> HWC (interleaved channels).
fn to_nhwc(chw: &[u8], channels: usize, hw: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(chw.len());
    for img in chw.chunks(channels * hw) {
        for p in 0..hw {
            out.extend((0..channels).map(|c| img[c * hw + p]));
        }
    }
    out
}

/// The format recorded in the model's metadata (the default when it has none).
pub(super) fn read_format(session: &Session, path: &Path) -> Result<ModelFormat, InferError> {
    let load_error = |source| InferError::ModelLoad { path: path.to_path_buf(), source };
    let md = session.metadata().map_err(load_error)?;
    let keys = md.custom_keys().map_err(load_error)?;
    let props: HashMap<String, String> = keys.into_iter().filter_map(|k| md.custom(&k).map(|v| (k, v))).collect();
    ModelFormat::from_props(&props).map_err(|source| InferError::Metadata { path: path.to_path_buf(), source })
}

/// Checks that a raw-pixel model's one input is u8 `[batch, H, W, C]` as its
/// metadata says; returns the input name.
pub(super) fn check_u8_input(session: &Session, meta: &ModelMetadata, path: &Path) -> Result<String, InferError> {
    let bad = |message: String| InferError::ModelShape { path: path.to_path_buf(), message };
    let [input] = session.inputs() else {
        return Err(bad(format!("the graph has {} inputs; a raw-pixel model has exactly one", session.inputs().len())));
    };
    let c = &meta.config;
    let want = [-1, c.image_size as i64, c.image_size as i64, c.in_channels as i64];
    let ValueType::Tensor { ty, shape, .. } = input.dtype() else {
        return Err(bad(format!("input `{}` is not a tensor", input.name())));
    };
    let dims_ok = shape.len() == 4 && shape.iter().zip(want).skip(1).all(|(&d, w)| d <= 0 || d == w);
    if *ty != TensorElementType::Uint8 || !dims_ok {
        return Err(bad(format!(
            "input `{}` is {ty:?} {:?} but the metadata (vit.input = uint8_nhwc) describes u8 [batch, {}, {}, {}]",
            input.name(),
            &**shape,
            c.image_size,
            c.image_size,
            c.in_channels
        )));
    }
    Ok(input.name().to_string())
}
