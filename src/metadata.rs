//! What an exported ONNX file says about itself in `metadata_props`: the full
//! config, the class labels and the preprocessing, so that inference needs no
//! shape or label flags. One struct, written by the exporter, read by `infer`.
//! The separate keys (`vit.image_size`, `vit.mean`, ...) are copies for other
//! tools to read; a file whose copies contradict `vit.config` is refused, as
//! no one can tell which of the two the weights were trained with.

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
    #[error("ONNX metadata key `{0}` is missing: the model was not exported by vit-train; re-export it with `vit-train export`, or, embedding the library, describe it with `ClassifierOptions::fallback_metadata`")]
    Missing(&'static str),
    /// A copy key disagrees with the config.
    #[error("ONNX metadata key `{key}` = {found} contradicts `vit.config`, which says {config}: the file was edited or damaged; re-export it with `vit-train export`")]
    Contradiction {
        /// The copy key.
        key: &'static str,
        /// Its value, as written.
        found: String,
        /// The config's value.
        config: String,
    },
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
        let resize = resize_name(c);
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
        check_copies(props, &config)?;
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

/// The resize filter's name, as written under [`KEY_RESIZE`].
fn resize_name(config: &ViTConfig) -> String {
    serde_json::to_value(config.preprocess.resize).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default()
}

/// Each copy key that is present must agree with `config`.
fn check_copies(props: &HashMap<String, String>, config: &ViTConfig) -> Result<(), MetadataError> {
    let (mean, std) = config.channel_stats();
    check_copy(props, KEY_IMAGE_SIZE, config.image_size)?;
    check_copy(props, KEY_CHANNELS, config.in_channels)?;
    check_copy(props, KEY_MEAN, mean)?;
    check_copy(props, KEY_STD, std)?;
    if let Some(found) = props.get(KEY_RESIZE) {
        let expected = resize_name(config);
        if found.trim() != expected {
            return Err(MetadataError::Contradiction { key: KEY_RESIZE, found: found.clone(), config: expected });
        }
    }
    Ok(())
}

/// `key`, when present, must parse (as JSON) to `expected`.
fn check_copy<T>(props: &HashMap<String, String>, key: &'static str, expected: T) -> Result<(), MetadataError>
where
    T: serde::de::DeserializeOwned + serde::Serialize + PartialEq,
{
    let Some(text) = props.get(key) else { return Ok(()) };
    let found: T = serde_json::from_str(text).map_err(|e| MetadataError::Malformed { key, message: e.to_string() })?;
    if found != expected {
        let config = serde_json::to_string(&expected).unwrap_or_default();
        return Err(MetadataError::Contradiction { key, found: text.clone(), config });
    }
    Ok(())
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
        assert!(err.contains("vit.config") && err.contains("vit-train export"), "{err}");
        assert!(err.contains("fallback_metadata") && !err.contains("pass the image size"), "{err}");
    }

    #[test]
    fn copies_that_contradict_the_config_are_named() {
        let config = ViTConfig { num_classes: 2, in_channels: 3, ..Default::default() };
        let meta = ModelMetadata { config, labels: vec!["a".into(), "b".into()], val_accuracy: None };
        for (key, bad) in [
            (KEY_IMAGE_SIZE, "64"),
            (KEY_CHANNELS, "1"),
            (KEY_MEAN, "[0.485,0.456,0.406]"),
            (KEY_STD, "[0.5]"),
            (KEY_RESIZE, "nearest"),
        ] {
            let mut props: HashMap<_, _> = meta.to_props().into_iter().collect();
            props.insert(key.to_string(), bad.to_string());
            let err = ModelMetadata::from_props(&props).unwrap_err();
            let msg = err.to_string();
            assert!(matches!(err, MetadataError::Contradiction { .. }), "{key}: {msg}");
            assert!(msg.contains(&format!("`{key}` = {bad}")) && msg.contains("contradicts `vit.config`"), "{msg}");
        }
        let mut props: HashMap<_, _> = meta.to_props().into_iter().collect();
        props.insert(KEY_IMAGE_SIZE.to_string(), "thirty-two".to_string());
        let msg = ModelMetadata::from_props(&props).unwrap_err().to_string();
        assert!(msg.contains("vit.image_size") && msg.contains("malformed"), "{msg}");
        // Copies are optional: a file without them reads as before.
        props.retain(|k, _| k == KEY_CONFIG || k == KEY_LABELS);
        assert_eq!(ModelMetadata::from_props(&props).unwrap(), meta);
    }
}
