//! Checkpoints trained elsewhere: timm `VisionTransformer` and Hugging Face
//! `ViTForImageClassification` safetensors. Names are mapped to ours (timm's),
//! the [`ViTConfig`] is inferred from the tensors' shapes (heads, labels and
//! preprocessing from a `config.json` beside the weights or from flags), and
//! every tensor must be one the config's graph uses with the shape it expects:
//! anything else is an error naming the tensor, never a silent drop.

mod hf;
pub mod init;
pub mod resample;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::Value;
use tch::{Kind, Tensor};
use vit::config::{Pooling, ViTConfig};

/// Errors from reading a foreign checkpoint.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    /// The weights or a file beside them could not be read.
    #[error("cannot read {path}: {message}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        message: String,
    },
    /// A tensor our ViT has no use for (or cannot reproduce).
    #[error("tensor `{name}` is not supported: {why}")]
    Unsupported {
        /// Its name in the checkpoint.
        name: String,
        /// What it is and what to do.
        why: String,
    },
    /// A tensor the inferred config needs is absent.
    #[error("tensor `{name}` is missing: {why}")]
    Missing {
        /// The name we looked for.
        name: String,
        /// Why it is needed.
        why: String,
    },
    /// A tensor has a shape other than the inferred config's.
    #[error("tensor `{name}` has shape {actual:?}, the inferred config needs {expected:?}")]
    Shape {
        /// Its name (ours).
        name: String,
        /// Its shape.
        actual: Vec<i64>,
        /// The shape the config implies.
        expected: Vec<usize>,
    },
    /// Something the config needs cannot be inferred.
    #[error("cannot infer `{field}`: {why}")]
    Infer {
        /// The config key.
        field: &'static str,
        /// What is missing and which flag gives it.
        why: String,
    },
    /// The inferred config is not valid.
    #[error("the inferred config is invalid: {0}")]
    Config(#[source] vit::config::ConfigError),
}

/// What the caller knows that the weights do not say.
#[derive(Debug, Clone, Default)]
pub struct ImportOptions {
    /// Attention heads (else `config.json`, else timm's value for the width).
    pub num_heads: Option<usize>,
    /// Preprocessing, dropout rates and training recipe to start from (the
    /// architecture is always the checkpoint's, test-time flip is `test_time_flip`).
    pub base: Option<ViTConfig>,
    /// Class names (else `id2label` / `label_names` from `config.json`, else `class_<i>`).
    pub labels: Option<Vec<String>>,
    /// Set `test_time_flip` (`None`: off, so the file computes the checkpoint's function).
    pub test_time_flip: Option<bool>,
}

/// Which naming a checkpoint used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// timm `VisionTransformer` (our names).
    Timm,
    /// Hugging Face `ViTForImageClassification`.
    HuggingFace,
}

/// A foreign checkpoint, renamed and checked against its inferred config.
#[derive(Debug)]
pub struct Imported {
    /// The inferred config (`num_classes` from the head).
    pub cfg: ViTConfig,
    /// One name per class.
    pub labels: Vec<String>,
    /// Every tensor under our names, as f32 on the CPU.
    pub tensors: BTreeMap<String, Tensor>,
    /// The naming the checkpoint used.
    pub format: Format,
    /// The weights file read.
    pub weights: PathBuf,
}

/// The weights file of `path`: itself, or `model.safetensors` in a folder.
fn weights_file(path: &Path) -> Result<PathBuf, ImportError> {
    let file = if path.is_dir() { path.join("model.safetensors") } else { path.to_path_buf() };
    let ext = file.extension().and_then(|e| e.to_str()).unwrap_or("");
    if ext != "safetensors" {
        return Err(ImportError::Read {
            path: file,
            message: "only .safetensors weights are read; convert a PyTorch state dict with \
                      `safetensors.torch.save_file(model.state_dict(), \"model.safetensors\")`"
                .into(),
        });
    }
    Ok(file)
}

/// A JSON file beside the weights, if present.
fn json_beside(weights: &Path, name: &str) -> Result<Option<Value>, ImportError> {
    let path = weights.with_file_name(name);
    let text = match vit::files::read_text(&path, "checkpoint's JSON") {
        Ok(text) => text,
        Err(e) if e.is_not_found() => return Ok(None),
        Err(e) => return Err(ImportError::Read { path, message: e.to_string() }),
    };
    serde_json::from_str(&text).map(Some).map_err(|e| ImportError::Read { path, message: e.to_string() })
}

/// timm's heads for its standard widths (tiny, small, base, large, huge).
fn timm_heads(embed_dim: usize) -> Option<usize> {
    match embed_dim {
        192 => Some(3),
        384 => Some(6),
        768 => Some(12),
        1024 | 1280 => Some(16),
        _ => None,
    }
}

/// Reads a timm or Hugging Face checkpoint (a `.safetensors` file, or a
/// `save_pretrained` folder) and infers its config.
pub fn load(path: &Path, opts: &ImportOptions) -> Result<Imported, ImportError> {
    let weights = weights_file(path)?;
    vit::files::check_regular(&weights, vit::files::MAX_WEIGHTS_BYTES, "checkpoint")
        .map_err(|e| ImportError::Read { path: weights.clone(), message: e.to_string() })?;
    let raw = Tensor::read_safetensors(&weights)
        .map_err(|e| ImportError::Read { path: weights.clone(), message: e.to_string() })?;
    let raw: BTreeMap<String, Tensor> = raw.into_iter().map(|(n, t)| (n, t.to_kind(Kind::Float))).collect();
    let json = json_beside(&weights, "config.json")?;
    let format = if hf::is_hugging_face(&raw) { Format::HuggingFace } else { Format::Timm };
    let tensors = match format {
        Format::HuggingFace => hf::to_timm_names(raw)?,
        Format::Timm => raw,
    };
    let mut tensors = tensors;
    refuse_known_extras(&tensors)?;
    zero_patch_bias_if_absent(&mut tensors);
    let mut cfg = infer_config(&tensors, json.as_ref(), format, opts)?;
    if format == Format::HuggingFace {
        apply_hf_preprocessor(&mut cfg, &weights, opts)?;
    }
    cfg.validate().map_err(ImportError::Config)?;
    check_tensors(&cfg, &tensors)?;
    let labels = labels(&cfg, json.as_ref(), opts)?;
    Ok(Imported { cfg, labels, tensors, format, weights })
}

/// timm tensors with a known meaning we do not reproduce, named with why.
fn refuse_known_extras(tensors: &BTreeMap<String, Tensor>) -> Result<(), ImportError> {
    for name in tensors.keys() {
        let why = if name == "reg_token" {
            "register tokens are not part of our ViT"
        } else if name.contains(".q_norm.") || name.contains(".k_norm.") {
            "query/key normalisation (timm qk_norm) is not part of our ViT"
        } else if name.starts_with("attn_pool.") {
            "attention pooling (timm global_pool = \"map\") is not part of our ViT"
        } else {
            continue;
        };
        return Err(ImportError::Unsupported { name: name.clone(), why: why.into() });
    }
    Ok(())
}

/// timm's `pre_norm = True` ViTs (CLIP's layout) have a patch projection
/// without bias; ours always has one, so a zero bias stands in for it (the
/// same function; a fine-tune then trains it).
fn zero_patch_bias_if_absent(tensors: &mut BTreeMap<String, Tensor>) {
    if tensors.contains_key("patch_embed.proj.bias") {
        return;
    }
    if let Some(e) = tensors.get("patch_embed.proj.weight").map(|w| w.size()[0]) {
        log::info!("patch_embed.proj has no bias (timm pre_norm = True): a zero bias stands in for it");
        tensors.insert("patch_embed.proj.bias".into(), Tensor::zeros([e], (Kind::Float, tch::Device::Cpu)));
    }
}

/// The shape of a tensor the inference needs.
fn shape_of(tensors: &BTreeMap<String, Tensor>, name: &str, why: &str) -> Result<Vec<usize>, ImportError> {
    let t = tensors.get(name).ok_or_else(|| ImportError::Missing { name: name.into(), why: why.into() })?;
    Ok(t.size().iter().map(|&d| d as usize).collect())
}

/// Architecture from shapes, heads and norm epsilon from `config.json` or flags.
fn infer_config(
    tensors: &BTreeMap<String, Tensor>,
    json: Option<&Value>,
    format: Format,
    opts: &ImportOptions,
) -> Result<ViTConfig, ImportError> {
    let proj = shape_of(tensors, "patch_embed.proj.weight", "it gives the patch size and width")?;
    let [embed_dim, in_channels, patch, patch_w] = proj[..] else {
        return Err(ImportError::Unsupported {
            name: "patch_embed.proj.weight".into(),
            why: "not a Conv2d weight".into(),
        });
    };
    if patch != patch_w {
        return Err(ImportError::Unsupported {
            name: "patch_embed.proj.weight".into(),
            why: format!("non-square patches {patch}x{patch_w}"),
        });
    }
    let class_token = tensors.contains_key("cls_token");
    let grid = patch_grid(tensors, class_token)?;
    let depth = (0..).take_while(|i| tensors.contains_key(&format!("blocks.{i}.norm1.weight"))).count();
    let fc1 = shape_of(tensors, "blocks.0.mlp.fc1.weight", "it gives the MLP width")?;
    let head = shape_of(tensors, "head.weight", "a classifier head is needed (timm num_classes = 0 has none)")?;
    let key = |k: &str| json.and_then(|j| j.get(k));
    let num_heads = match (opts.num_heads, key("num_attention_heads").and_then(Value::as_u64)) {
        (Some(h), _) => h,
        (None, Some(h)) => h as usize,
        (None, None) => timm_heads(embed_dim).ok_or_else(|| ImportError::Infer {
            field: "num_heads",
            why: format!("embed_dim {embed_dim} is not one of timm's standard widths; pass --num-heads"),
        })?,
    };
    let pooling = if tensors.contains_key("fc_norm.weight") { Pooling::Avg } else { Pooling::Cls };
    if !class_token && pooling != Pooling::Avg {
        return Err(ImportError::Missing {
            name: "fc_norm.weight".into(),
            why: "without a class token (timm class_token = False) only global_pool = \"avg\" is supported".into(),
        });
    }
    let mut cfg = opts.base.clone().unwrap_or_default();
    cfg.variant = vit::Variant::Standard;
    cfg.stem = vit::config::Stem::Patch;
    cfg.stem_channels.clear();
    cfg.stem_strides.clear();
    cfg.locality_attention = false;
    cfg.image_size = grid * patch;
    cfg.patch_size = patch;
    cfg.in_channels = in_channels;
    cfg.num_classes = head[0];
    cfg.embed_dim = embed_dim;
    cfg.depth = depth;
    cfg.num_heads = num_heads;
    cfg.mlp_ratio = fc1[0] as f64 / embed_dim as f64;
    cfg.pooling = pooling;
    cfg.qkv_bias = tensors.contains_key("blocks.0.attn.qkv.bias");
    cfg.class_token = class_token;
    cfg.norm_pre = tensors.contains_key("norm_pre.weight");
    cfg.layer_scale = layer_scale(tensors);
    cfg.layer_norm_eps = 1e-6; // timm's ViT norm layer
    if format == Format::HuggingFace {
        if let Some(act) = key("hidden_act").and_then(Value::as_str).filter(|a| *a != "gelu") {
            return Err(ImportError::Infer {
                field: "hidden_act",
                why: format!("{act:?}: only exact \"gelu\" is supported"),
            });
        }
        cfg.layer_norm_eps = key("layer_norm_eps").and_then(Value::as_f64).unwrap_or(1e-12);
    }
    cfg.test_time_flip = opts.test_time_flip.unwrap_or(false);
    if opts.base.is_none() {
        cfg.preprocess = preprocess_from_timm(json).unwrap_or_default();
    }
    Ok(cfg)
}

/// Patches per side, from `pos_embed` `[1, prefix + grid^2, E]` (prefix: the
/// class token, if any). timm's `no_embed_class` (a class token without a
/// position) is refused by name.
fn patch_grid(tensors: &BTreeMap<String, Tensor>, class_token: bool) -> Result<usize, ImportError> {
    let pos = shape_of(tensors, "pos_embed", "the position embedding gives the image size")?;
    let len = pos.get(1).copied().unwrap_or(0);
    let square = |n: usize| Some((n as f64).sqrt().round() as usize).filter(|g| g * g == n && n > 0);
    let prefix = usize::from(class_token);
    match square(len.saturating_sub(prefix)) {
        Some(grid) if pos.len() == 3 => Ok(grid),
        _ if class_token && square(len).is_some() => Err(ImportError::Unsupported {
            name: "pos_embed".into(),
            why: format!(
                "shape {pos:?} has no position for the class token (timm no_embed_class = True), \
                 which our ViT does not reproduce"
            ),
        }),
        _ => Err(ImportError::Unsupported {
            name: "pos_embed".into(),
            why: format!("shape {pos:?} is not [1, {prefix} + grid^2, E] (a square patch grid)"),
        }),
    }
}

/// LayerScale (timm `init_values`) when `blocks.0.ls1.gamma` is present: the
/// config records the mean of that first gamma (only a model trained from
/// scratch uses the value; an import loads every gamma as it is).
fn layer_scale(tensors: &BTreeMap<String, Tensor>) -> Option<f64> {
    tensors.get("blocks.0.ls1.gamma").map(|g| g.mean(Kind::Double).double_value(&[]))
}

/// `pretrained_cfg.mean/std` of a timm hub `config.json`, if any.
fn preprocess_from_timm(json: Option<&Value>) -> Option<vit::config::Preprocess> {
    let p = json?.get("pretrained_cfg")?;
    let floats =
        |k: &str| -> Option<Vec<f32>> { p.get(k)?.as_array()?.iter().map(|v| v.as_f64().map(|f| f as f32)).collect() };
    Some(vit::config::Preprocess { mean: floats("mean")?, std: floats("std")?, ..Default::default() })
}

/// `image_mean` / `image_std` of a Hugging Face `preprocessor_config.json`
/// (its defaults are 0.5 / 0.5, ours too), unless a base config was given.
fn apply_hf_preprocessor(cfg: &mut ViTConfig, weights: &Path, opts: &ImportOptions) -> Result<(), ImportError> {
    if opts.base.is_some() {
        return Ok(());
    }
    let Some(json) = json_beside(weights, "preprocessor_config.json")? else { return Ok(()) };
    let floats = |k: &str| -> Option<Vec<f32>> {
        json.get(k)?.as_array()?.iter().map(|v| v.as_f64().map(|f| f as f32)).collect()
    };
    if let (Some(mean), Some(std)) = (floats("image_mean"), floats("image_std")) {
        cfg.preprocess.mean = mean;
        cfg.preprocess.std = std;
    }
    Ok(())
}

/// Every tensor is one the config's graph uses, with its shape, and none is missing.
fn check_tensors(cfg: &ViTConfig, tensors: &BTreeMap<String, Tensor>) -> Result<(), ImportError> {
    let expected: BTreeMap<String, Vec<usize>> = vit::onnx::expected_tensors(cfg).into_iter().collect();
    for (name, t) in tensors {
        let Some(shape) = expected.get(name) else {
            return Err(ImportError::Unsupported {
                name: name.clone(),
                why: format!("the inferred config (pooling {:?}, depth {}) does not use it", cfg.pooling, cfg.depth),
            });
        };
        if t.size().iter().map(|&d| d as usize).ne(shape.iter().copied()) {
            return Err(ImportError::Shape { name: name.clone(), actual: t.size(), expected: shape.clone() });
        }
    }
    if let Some(name) = expected.keys().find(|n| !tensors.contains_key(*n)) {
        return Err(ImportError::Missing { name: name.clone(), why: "the inferred config's graph uses it".into() });
    }
    Ok(())
}

/// Class names: the flag's, else `id2label` (Hugging Face) or `label_names`
/// (timm hub), else `class_<i>`.
fn labels(cfg: &ViTConfig, json: Option<&Value>, opts: &ImportOptions) -> Result<Vec<String>, ImportError> {
    let from_json = || -> Option<Vec<String>> {
        let j = json?;
        if let Some(map) = j.get("id2label").and_then(Value::as_object) {
            return (0..cfg.num_classes).map(|i| map.get(&i.to_string())?.as_str().map(str::to_owned)).collect();
        }
        j.get("label_names")?.as_array()?.iter().map(|v| v.as_str().map(str::to_owned)).collect()
    };
    let labels = opts
        .labels
        .clone()
        .or_else(from_json)
        .unwrap_or_else(|| (0..cfg.num_classes).map(|i| format!("class_{i}")).collect());
    if labels.len() != cfg.num_classes {
        return Err(ImportError::Infer {
            field: "num_classes",
            why: format!("{} labels given, the head has {} classes", labels.len(), cfg.num_classes),
        });
    }
    Ok(labels)
}

/// One line with the inferred architecture.
pub fn describe(cfg: &ViTConfig) -> String {
    format!(
        "image_size {}, patch_size {}, in_channels {}, embed_dim {}, depth {}, num_heads {}, mlp_ratio {}, \
         pooling {:?}, qkv_bias {}, layer_norm_eps {:e}, num_classes {}, mean {:?}, std {:?}, \
         class_token {}, norm_pre {}, layer_scale {:?}",
        cfg.image_size,
        cfg.patch_size,
        cfg.in_channels,
        cfg.embed_dim,
        cfg.depth,
        cfg.num_heads,
        cfg.mlp_ratio,
        cfg.pooling,
        cfg.qkv_bias,
        cfg.layer_norm_eps,
        cfg.num_classes,
        cfg.preprocess.mean,
        cfg.preprocess.std,
        cfg.class_token,
        cfg.norm_pre,
        cfg.layer_scale
    )
}
