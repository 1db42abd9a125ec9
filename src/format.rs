//! How an exported graph takes its input and stores its numbers: the
//! deployment variants of one trained model (raw `uint8` pixels instead of
//! normalised floats, float16 or int8 weights). The exporter records the
//! format in two metadata keys and `vit::infer` reads them back, so a client
//! feeds every variant the right tensor without being told. A float32 graph
//! with a normalised input writes neither key: files exported before these
//! variants existed keep their exact bytes and read as that default.

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;

use crate::metadata::MetadataError;

/// Metadata key: what the graph input is (`uint8_nhwc`; absent: `float32_nchw`).
pub const KEY_INPUT: &str = "vit.input";
/// Metadata key: how weights and activations are stored (`fp16`, `int8`; absent: `fp32`).
pub const KEY_PRECISION: &str = "vit.precision";

/// What a client passes to the graph.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum InputKind {
    /// `pixel_values` f32 `[batch, C, H, W]`, normalised with the config's mean/std.
    #[default]
    Float32Nchw,
    /// `pixels` u8 `[batch, H, W, C]`: decoded, resized pixels in the interleaved
    /// layout image decoders return; the graph casts, transposes to NCHW, scales
    /// by 1/255 and applies `(x - mean) / std` itself.
    Uint8Nhwc,
}

/// How weights and activations are stored inside the graph (inputs and
/// outputs stay float32 in every precision).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum Precision {
    /// float32 throughout.
    #[default]
    Fp32,
    /// float16 weights and activations; LayerNormalization and Softmax run
    /// in float32, where float16 would overflow.
    Fp16,
    /// Static per-channel int8 (QuantizeLinear/DequantizeLinear pairs).
    Int8,
}

/// The input kind and precision of an exported graph.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct ModelFormat {
    /// What the graph takes.
    pub input: InputKind,
    /// How it stores its numbers.
    pub precision: Precision,
}

impl InputKind {
    /// The metadata (and command line) spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Float32Nchw => "float32_nchw",
            Self::Uint8Nhwc => "uint8_nhwc",
        }
    }
}

impl Precision {
    /// The metadata (and command line) spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Fp32 => "fp32",
            Self::Fp16 => "fp16",
            Self::Int8 => "int8",
        }
    }
}

impl fmt::Display for InputKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Display for Precision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Display for ModelFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} input, {}", self.input, self.precision)
    }
}

impl FromStr for InputKind {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        [Self::Float32Nchw, Self::Uint8Nhwc]
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| format!("`{s}` is not an input kind (float32_nchw, uint8_nhwc)"))
    }
}

impl FromStr for Precision {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        [Self::Fp32, Self::Fp16, Self::Int8]
            .into_iter()
            .find(|p| p.as_str() == s)
            .ok_or_else(|| format!("`{s}` is not a precision (fp32, fp16, int8)"))
    }
}

impl ModelFormat {
    /// True for the float32, normalised-input graph (no metadata keys).
    pub fn is_default(&self) -> bool {
        *self == Self::default()
    }

    /// Metadata pairs: one per value that differs from the default, so the
    /// default format adds nothing to a file.
    pub fn to_props(&self) -> Vec<(String, String)> {
        let mut props = Vec::new();
        if self.input != InputKind::default() {
            props.push((KEY_INPUT.to_owned(), self.input.to_string()));
        }
        if self.precision != Precision::default() {
            props.push((KEY_PRECISION.to_owned(), self.precision.to_string()));
        }
        props
    }

    /// Reads [`Self::to_props`]; an absent key is the default value.
    pub fn from_props(props: &HashMap<String, String>) -> Result<Self, MetadataError> {
        let malformed = |key, message| MetadataError::Malformed { key, message };
        let input = match props.get(KEY_INPUT) {
            Some(v) => v.parse().map_err(|m| malformed(KEY_INPUT, m))?,
            None => InputKind::default(),
        };
        let precision = match props.get(KEY_PRECISION) {
            Some(v) => v.parse().map_err(|m| malformed(KEY_PRECISION, m))?,
            None => Precision::default(),
        };
        Ok(Self { input, precision })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_format_writes_no_keys() {
        assert!(ModelFormat::default().to_props().is_empty());
        assert_eq!(ModelFormat::from_props(&HashMap::new()).unwrap(), ModelFormat::default());
    }

    #[test]
    fn every_format_round_trips() {
        for input in [InputKind::Float32Nchw, InputKind::Uint8Nhwc] {
            for precision in [Precision::Fp32, Precision::Fp16, Precision::Int8] {
                let f = ModelFormat { input, precision };
                let props: HashMap<_, _> = f.to_props().into_iter().collect();
                assert_eq!(ModelFormat::from_props(&props).unwrap(), f);
            }
        }
    }

    #[test]
    fn an_unknown_value_names_the_key() {
        let props = HashMap::from([(KEY_PRECISION.to_owned(), "int4".to_owned())]);
        let err = ModelFormat::from_props(&props).unwrap_err().to_string();
        assert!(err.contains(KEY_PRECISION) && err.contains("int4"), "{err}");
    }
}
