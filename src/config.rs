//! `ViTConfig`: the one description of a model, shared by training, ONNX export
//! and inference. Presets live as TOML files in `models/`; the exported ONNX file
//! carries the same struct as JSON in its metadata, so inference needs no flags.

use std::path::Path;

use serde::{Deserialize, Serialize};

/// Errors from reading or validating a config.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config {path}: {source}")]
    Read {
        /// The config file.
        path: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// Not a regular file, or too large for a config.
    #[error(transparent)]
    File(#[from] crate::files::FileError),
    /// The file is not valid TOML for a `ViTConfig`.
    #[error("config {path} is not a valid ViT config: {message}")]
    Parse {
        /// The config file (`<json>` for JSON read from a model).
        path: String,
        /// The parser's message.
        message: String,
    },
    /// A value is out of range or inconsistent with another one.
    #[error("invalid config value `{field}` = {value}: {reason}")]
    Invalid {
        /// The config key.
        field: &'static str,
        /// Its value, as written.
        value: String,
        /// Why it is rejected and what would be accepted.
        reason: String,
    },
}

/// Which network family the config describes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Variant {
    /// Standard pre-LN ViT (Dosovitskiy et al. 2020), timm tensor names.
    #[default]
    Standard,
    /// DLStudio's ViTHelper network, as used by the Purdue ECE 60146 HW9 report.
    Dlstudio,
}

/// How the token sequence is reduced to one vector for the head.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Pooling {
    /// The class token's output.
    #[default]
    Cls,
    /// The mean over all tokens (the class token included).
    Mean,
    /// timm's `global_pool = "avg"`: the mean over the patch tokens only (the
    /// class token left out), normalised by `fc_norm` instead of the final
    /// `norm` (standard variant).
    Avg,
}

/// How attention products are written (dlstudio variant: the report's two heads).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Attention {
    /// Batched matrix products (exported as ONNX `MatMul`).
    #[default]
    Matmul,
    /// `einsum` (exported as ONNX `Einsum`).
    Einsum,
}

/// How pixels become tokens (standard variant).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Stem {
    /// One Conv2d(C, E, kernel = stride = patch): the original ViT.
    #[default]
    Patch,
    /// 3x3 convolutions with BatchNorm and ReLU (`stem_channels`, strides
    /// `stem_strides`), then a 1x1 convolution to E ("Early convolutions help
    /// transformers see better", Xiao et al. 2021). `patch_size` must be the
    /// product of the strides.
    Conv,
}

/// Interpolation used when an image is not already `image_size` square.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Resize {
    /// Bilinear ("triangle") filter, aspect ratio not kept (as PIL's `resize`).
    #[default]
    Bilinear,
    /// Nearest neighbour, aspect ratio not kept.
    Nearest,
}

/// Pixel preprocessing: `x = (pixel / 255 - mean[c]) / std[c]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Preprocess {
    /// Per-channel mean (one value is used for every channel).
    pub mean: Vec<f32>,
    /// Per-channel standard deviation (one value is used for every channel).
    pub std: Vec<f32>,
    /// Interpolation for images of another size.
    pub resize: Resize,
}

impl Default for Preprocess {
    fn default() -> Self {
        Self { mean: vec![0.5], std: vec![0.5], resize: Resize::Bilinear }
    }
}

mod preset;
mod saved;
mod timm_options;
mod train;
use timm_options::{is_false, is_true};
pub use train::{Optimizer, Precision, TrainConfig};

/// Added to the attention scores' diagonal by locality self-attention, in
/// training and in the ONNX graph alike: a token's softmax weight on itself
/// becomes exactly 0.
pub const SELF_ATTENTION_MASK: f32 = -1e9;

/// A Vision Transformer: architecture, preprocessing and training recipe.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ViTConfig {
    /// Network family.
    pub variant: Variant,
    /// Input images are `image_size` x `image_size`.
    pub image_size: usize,
    /// Square patch side; must divide `image_size`.
    pub patch_size: usize,
    /// 1 (grayscale) or 3 (RGB).
    pub in_channels: usize,
    /// Number of classes; 0 in a preset means "from the data".
    pub num_classes: usize,
    /// Token width.
    pub embed_dim: usize,
    /// Number of transformer blocks.
    pub depth: usize,
    /// Attention heads; must divide `embed_dim`.
    pub num_heads: usize,
    /// MLP hidden width = `mlp_ratio * embed_dim` (standard variant).
    pub mlp_ratio: f64,
    /// Class-token or mean pooling before the head.
    pub pooling: Pooling,
    /// LayerNorm epsilon.
    pub layer_norm_eps: f64,
    /// Dropout probability (standard variant; 0 disables).
    pub dropout: f64,
    /// Bias on the q/k/v projection (standard variant).
    pub qkv_bias: bool,
    /// Attention product form (dlstudio variant).
    pub attention: Attention,
    /// Patch embedding: one strided convolution or a convolutional stem (standard variant).
    pub stem: Stem,
    /// Output channels of each 3x3 convolution of a conv stem.
    pub stem_channels: Vec<usize>,
    /// Stride (1 or 2) of each conv-stem convolution; empty means 2 for every one.
    /// Stride-1 layers add capacity at a resolution without shrinking the grid.
    pub stem_strides: Vec<usize>,
    /// Locality self-attention (Lee et al. 2021, "Vision Transformer for
    /// Small-Size Datasets"; standard variant): a learnable per-head temperature
    /// `blocks.{i}.attn.scale` (initialised to 1/sqrt(head_dim)) replaces the
    /// fixed scale, and no token attends to itself (the diagonal is masked).
    pub locality_attention: bool,
    /// Stochastic depth: the rate of dropping a block's residual branches grows
    /// linearly from 0 to this value over the blocks (standard variant; 0 disables).
    pub drop_path: f64,
    /// Test-time flip: evaluation and the exported graph average the logits of
    /// each image and its mirror image (horizontal flip), at twice the
    /// inference cost; training is unchanged. Suits data trained with `hflip`.
    pub test_time_flip: bool,
    /// LayerScale (Touvron et al. 2021, "Going deeper with image transformers";
    /// timm's `init_values`; standard variant): each residual branch is
    /// multiplied by a learnable per-channel vector `blocks.{i}.ls1.gamma` /
    /// `ls2.gamma` `[E]`, initialised to this value. Absent: no LayerScale.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub layer_scale: Option<f64>,
    /// A LayerNorm `norm_pre` after the position embedding, before the blocks
    /// (timm's `pre_norm = True`, as CLIP's ViTs; standard variant).
    #[serde(skip_serializing_if = "is_false")]
    pub norm_pre: bool,
    /// A class token before the patch tokens (timm's `class_token`); without
    /// one, `pooling` must be `"avg"` (standard variant).
    #[serde(skip_serializing_if = "is_true")]
    pub class_token: bool,
    /// Pixel preprocessing.
    pub preprocess: Preprocess,
    /// Training recipe.
    pub train: TrainConfig,
}

impl Default for ViTConfig {
    fn default() -> Self {
        Self {
            variant: Variant::Standard,
            image_size: 32,
            patch_size: 4,
            in_channels: 3,
            num_classes: 0,
            embed_dim: 64,
            depth: 4,
            num_heads: 4,
            mlp_ratio: 2.0,
            pooling: Pooling::Cls,
            layer_norm_eps: 1e-6,
            dropout: 0.0,
            qkv_bias: true,
            attention: Attention::Matmul,
            stem: Stem::Patch,
            stem_channels: Vec::new(),
            stem_strides: Vec::new(),
            locality_attention: false,
            drop_path: 0.0,
            test_time_flip: false,
            layer_scale: None,
            norm_pre: false,
            class_token: true,
            preprocess: Preprocess::default(),
            train: TrainConfig::default(),
        }
    }
}

/// A [`ConfigError::Invalid`] naming the key, its value and why it is rejected.
fn invalid(field: &'static str, value: impl ToString, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid { field, value: value.to_string(), reason: reason.into() }
}

/// The first of `values` that is NaN or infinite, as a [`ConfigError::Invalid`]
/// naming its key: range checks alone let infinity through, and NaN compares
/// false both ways.
fn require_finite(values: &[(&'static str, f64)]) -> Result<(), ConfigError> {
    match values.iter().find(|(_, v)| !v.is_finite()) {
        Some(&(field, v)) => Err(invalid(field, v, "must be a finite number (not NaN or infinity)")),
        None => Ok(()),
    }
}

/// `x > 0`, false for NaN (so a NaN value is rejected as not positive).
fn is_positive<T: PartialOrd + Default>(x: T) -> bool {
    x > T::default()
}

/// A [`ConfigError::Parse`] naming the preset file, shared by the preset chain and the final parse.
fn parse_error(path: &Path, message: impl Into<String>) -> ConfigError {
    ConfigError::Parse { path: path.display().to_string(), message: message.into() }
}

impl ViTConfig {
    /// Reads a TOML preset (with the `base` preset it names, if any, merged
    /// under it) and validates it (a `num_classes` of 0 is allowed here).
    ///
    /// ```no_run
    /// use std::path::Path;
    /// use vit::ViTConfig;
    ///
    /// let mut cfg = ViTConfig::from_toml_file(Path::new("models/fashion-mnist.toml"))?;
    /// cfg.num_classes = 10; // presets leave it to the data set
    /// cfg.validate()?;
    /// println!("{} tokens of width {}", cfg.num_tokens(), cfg.embed_dim);
    /// # Ok::<(), vit::config::ConfigError>(())
    /// ```
    pub fn from_toml_file(path: &Path) -> Result<Self, ConfigError> {
        let table = preset::load_table(path)?;
        let cfg: Self = table.try_into().map_err(|e: toml::de::Error| parse_error(path, e.to_string()))?;
        cfg.validate_architecture()?;
        Ok(cfg)
    }

    /// Parses the JSON form stored in ONNX metadata and run folders.
    pub fn from_json(text: &str) -> Result<Self, ConfigError> {
        let cfg: Self = serde_json::from_str(text)
            .map_err(|e| ConfigError::Parse { path: "<json>".into(), message: e.to_string() })?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// The JSON form (stable field order).
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("ViTConfig always serialises")
    }

    /// The TOML form, as written into run folders.
    pub fn to_toml(&self) -> String {
        toml::to_string(self).expect("ViTConfig always serialises")
    }

    /// Patches per side.
    pub fn grid_size(&self) -> usize {
        self.image_size / self.patch_size
    }

    /// Patches per image.
    pub fn num_patches(&self) -> usize {
        self.grid_size() * self.grid_size()
    }

    /// Tokens per image: the patches plus the class token (if any).
    pub fn num_tokens(&self) -> usize {
        self.num_patches() + self.num_prefix_tokens()
    }

    /// Tokens before the patch tokens: 1 with a class token, else 0.
    pub fn num_prefix_tokens(&self) -> usize {
        usize::from(self.class_token)
    }

    /// Per-head width.
    pub fn head_dim(&self) -> usize {
        self.embed_dim / self.num_heads
    }

    /// MLP hidden width of the standard variant.
    pub fn mlp_hidden(&self) -> usize {
        (self.embed_dim as f64 * self.mlp_ratio).round() as usize
    }

    /// Mean and std expanded to one value per channel.
    pub fn channel_stats(&self) -> (Vec<f32>, Vec<f32>) {
        let expand = |v: &[f32]| {
            if v.len() == 1 {
                vec![v[0]; self.in_channels]
            } else {
                v.to_vec()
            }
        };
        (expand(&self.preprocess.mean), expand(&self.preprocess.std))
    }

    /// Full validation, `num_classes` included (use before building a model).
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.validate_architecture()?;
        if self.num_classes < 2 {
            return Err(invalid("num_classes", self.num_classes, "a classifier needs at least 2 classes"));
        }
        Ok(())
    }

    /// Validation of everything but `num_classes` (which may come from the data).
    pub fn validate_architecture(&self) -> Result<(), ConfigError> {
        let p = &self.preprocess;
        let stats = p.mean.iter().map(|&m| ("preprocess.mean", m)).chain(p.std.iter().map(|&s| ("preprocess.std", s)));
        let floats: Vec<(&'static str, f64)> = [
            ("mlp_ratio", self.mlp_ratio),
            ("layer_norm_eps", self.layer_norm_eps),
            ("dropout", self.dropout),
            ("drop_path", self.drop_path),
        ]
        .into_iter()
        .chain(stats.map(|(k, v)| (k, v as f64)))
        .collect();
        require_finite(&floats)?;
        let positive = [
            ("image_size", self.image_size),
            ("patch_size", self.patch_size),
            ("embed_dim", self.embed_dim),
            ("depth", self.depth),
            ("num_heads", self.num_heads),
        ];
        for (field, value) in positive {
            if value == 0 {
                return Err(invalid(field, value, "must be at least 1"));
            }
        }
        if self.image_size % self.patch_size != 0 {
            return Err(invalid(
                "patch_size",
                self.patch_size,
                format!("must divide image_size = {}", self.image_size),
            ));
        }
        if self.embed_dim % self.num_heads != 0 {
            return Err(invalid("num_heads", self.num_heads, format!("must divide embed_dim = {}", self.embed_dim)));
        }
        if self.in_channels != 1 && self.in_channels != 3 {
            return Err(invalid("in_channels", self.in_channels, "must be 1 (grayscale) or 3 (RGB)"));
        }
        if !(self.mlp_ratio > 0.0 && self.mlp_ratio.is_finite()) {
            return Err(invalid("mlp_ratio", self.mlp_ratio, "must be a positive number"));
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return Err(invalid("dropout", self.dropout, "must be in [0, 1)"));
        }
        if !is_positive(self.layer_norm_eps) {
            return Err(invalid("layer_norm_eps", self.layer_norm_eps, "must be positive"));
        }
        if self.variant == Variant::Dlstudio && self.pooling != Pooling::Mean {
            let value = format!("{:?}", self.pooling).to_lowercase();
            return Err(invalid("pooling", value, "the dlstudio variant pools by mean, as ViTHelper"));
        }
        self.validate_stem()?;
        self.validate_timm_options()?;
        if !(0.0..1.0).contains(&self.drop_path) {
            return Err(invalid("drop_path", self.drop_path, "must be in [0, 1)"));
        }
        if self.variant == Variant::Dlstudio && self.drop_path > 0.0 {
            return Err(invalid(
                "drop_path",
                self.drop_path,
                "the dlstudio variant has no stochastic depth (ViTHelper)",
            ));
        }
        if self.variant == Variant::Dlstudio && self.locality_attention {
            return Err(invalid("locality_attention", true, "the dlstudio variant has ViTHelper's attention only"));
        }
        for (field, v) in [("preprocess.mean", &p.mean), ("preprocess.std", &p.std)] {
            if v.len() != 1 && v.len() != self.in_channels {
                return Err(invalid(
                    field,
                    format!("{v:?}"),
                    format!("needs 1 or in_channels = {} values", self.in_channels),
                ));
            }
        }
        if !p.std.iter().all(|&s| is_positive(s)) {
            return Err(invalid("preprocess.std", format!("{:?}", p.std), "every std must be positive"));
        }
        self.train.validate()
    }

    /// `(out_channels, stride)` of each conv-stem convolution, in order (empty
    /// for a patch stem).
    pub fn stem_layers(&self) -> Vec<(usize, usize)> {
        if self.stem != Stem::Conv {
            return Vec::new();
        }
        let stride = |i: usize| self.stem_strides.get(i).copied().unwrap_or(2);
        self.stem_channels.iter().enumerate().map(|(i, &c)| (c, stride(i))).collect()
    }

    /// The strides of a conv stem must bring the image to the patch grid.
    fn validate_stem(&self) -> Result<(), ConfigError> {
        let used_only_by_conv =
            |field: &'static str, v: &[usize]| invalid(field, format!("{v:?}"), "is only used with stem = \"conv\"");
        match self.stem {
            Stem::Patch if !self.stem_channels.is_empty() => {
                Err(used_only_by_conv("stem_channels", &self.stem_channels))
            }
            Stem::Patch if !self.stem_strides.is_empty() => Err(used_only_by_conv("stem_strides", &self.stem_strides)),
            Stem::Patch => Ok(()),
            Stem::Conv if self.variant == Variant::Dlstudio => {
                Err(invalid("stem", "conv", "the dlstudio variant has ViTHelper's patch embedding only"))
            }
            Stem::Conv => {
                let n = self.stem_channels.len();
                if n == 0 || self.stem_channels.contains(&0) {
                    return Err(invalid(
                        "stem_channels",
                        format!("{:?}", self.stem_channels),
                        "a conv stem needs at least one convolution, each with at least 1 channel",
                    ));
                }
                let strides = &self.stem_strides;
                if !strides.is_empty() && (strides.len() != n || strides.iter().any(|&s| s != 1 && s != 2)) {
                    return Err(invalid(
                        "stem_strides",
                        format!("{strides:?}"),
                        format!(
                            "give one stride, 1 or 2, per entry of stem_channels ({n}), or leave it empty for all 2"
                        ),
                    ));
                }
                let halvings = self.stem_layers().iter().filter(|&&(_, s)| s == 2).count();
                if halvings >= usize::BITS as usize || 1usize << halvings != self.patch_size {
                    return Err(invalid(
                        "patch_size",
                        self.patch_size,
                        format!(
                            "a conv stem with {halvings} stride-2 convolutions makes patch_size {}",
                            1u128 << halvings.min(127)
                        ),
                    ));
                }
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests;
