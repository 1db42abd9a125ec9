//! What an exported ONNX file says about itself in `metadata_props`: the full
//! config, the class labels and the preprocessing, so that inference needs no
//! shape or label flags. One struct, written by the exporter, read by `infer`.

use std::collections::HashMap;

use crate::config::{ConfigError, ViTConfig};

/// Metadata key: the full `ViTConfig` as JSON.
pub const KEY_CONFIG: &str = "vit.config";
/// Metadata key: the class labels as a JSON array of strings, in logit order.
pub const KEY_LABELS: &str = "vit.labels";
/// Metadata key: input side in pixels (informational copy of the config's).
pub const KEY_IMAGE_SIZE: &str = "vit.image_size";
/// Metadata key: input channels (informational copy).
pub const KEY_CHANNELS: &str = "vit.in_channels";
/// Metadata key: per-channel mean as a JSON array (informational copy).
pub const KEY_MEAN: &str = "vit.mean";
/// Metadata key: per-channel std as a JSON array (informational copy).
pub const KEY_STD: &str = "vit.std";
/// Metadata key: resize filter, `bilinear` or `nearest` (informational copy).
pub const KEY_RESIZE: &str = "vit.resize";
/// Metadata key: validation accuracy of the exported weights, if measured.
pub const KEY_VAL_ACCURACY: &str = "vit.val_accuracy";
/// Producer name written into the ModelProto.
pub const PRODUCER: &str = "vit-train";

/// Errors reading a model's metadata.
#[derive(Debug, thiserror::Error)]
pub enum MetadataError {
    /// A required key is absent: the model was not written by vit-train.
    #[error("ONNX metadata key `{0}` is missing (was the model exported by vit-train? otherwise pass the image size and labels explicitly)")]
    Missing(&'static str),
    /// A key's value does not parse.
    #[error("ONNX metadata key `{key}` is malformed: {message}")]
    Malformed {
        /// The metadata key.
        key: &'static str,
        /// Why its value does not parse.
        message: String,
    },
    /// The embedded config is invalid.
    #[error("ONNX metadata key `vit.config`: {0}")]
    Config(#[from] ConfigError),
}

/// Everything inference needs to know about a model.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelMetadata {
    /// Architecture and preprocessing.
    pub config: ViTConfig,
    /// Class names in logit order (`config.num_classes` of them).
    pub labels: Vec<String>,
    /// Validation accuracy measured by the trainer, if any.
    pub val_accuracy: Option<f64>,
}

impl ModelMetadata {
    /// Key/value pairs for `metadata_props`, in a fixed order.
    pub fn to_props(&self) -> Vec<(String, String)> {
        let c = &self.config;
        let (mean, std) = c.channel_stats();
        let resize = serde_json::to_value(c.preprocess.resize)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default();
        let mut props = vec![
            (KEY_CONFIG, c.to_json()),
            (KEY_LABELS, serde_json::to_string(&self.labels).unwrap_or_default()),
            (KEY_IMAGE_SIZE, c.image_size.to_string()),
            (KEY_CHANNELS, c.in_channels.to_string()),
            (KEY_MEAN, serde_json::to_string(&mean).unwrap_or_default()),
            (KEY_STD, serde_json::to_string(&std).unwrap_or_default()),
            (KEY_RESIZE, resize),
        ];
        if let Some(acc) = self.val_accuracy {
            props.push((KEY_VAL_ACCURACY, format!("{acc}")));
        }
        props.into_iter().map(|(k, v)| (k.to_string(), v)).collect()
    }

    /// Reads the pairs written by [`ModelMetadata::to_props`].
    pub fn from_props(props: &HashMap<String, String>) -> Result<Self, MetadataError> {
        let get = |key: &'static str| props.get(key).ok_or(MetadataError::Missing(key));
        let config = ViTConfig::from_json(get(KEY_CONFIG)?)?;
        let labels: Vec<String> = serde_json::from_str(get(KEY_LABELS)?)
            .map_err(|e| MetadataError::Malformed { key: KEY_LABELS, message: e.to_string() })?;
        if labels.len() != config.num_classes {
            return Err(MetadataError::Malformed {
                key: KEY_LABELS,
                message: format!("{} labels for {} classes", labels.len(), config.num_classes),
            });
        }
        let val_accuracy = match props.get(KEY_VAL_ACCURACY) {
            None => None,
            Some(v) => Some(v.parse().map_err(|e: std::num::ParseFloatError| MetadataError::Malformed {
                key: KEY_VAL_ACCURACY,
                message: e.to_string(),
            })?),
        };
        Ok(Self { config, labels, val_accuracy })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn props_round_trip() {
        let config = ViTConfig { num_classes: 2, ..Default::default() };
        let meta = ModelMetadata { config, labels: vec!["a".into(), "b".into()], val_accuracy: Some(0.75) };
        let props: HashMap<_, _> = meta.to_props().into_iter().collect();
        assert_eq!(ModelMetadata::from_props(&props).unwrap(), meta);
    }

    #[test]
    fn missing_key_is_named() {
        let err = ModelMetadata::from_props(&HashMap::new()).unwrap_err().to_string();
        assert!(err.contains("vit.config"), "{err}");
    }
}
