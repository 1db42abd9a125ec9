//! The two JSON files the Hugging Face ecosystem looks for beside a model:
//! `config.json` (architecture, `id2label` / `label2id`, image size and
//! channels, in `transformers`' `ViTConfig` field names) and
//! `preprocessor_config.json` (`ViTImageProcessor`: resize to the square
//! image size, rescale by 1/255, normalise by mean/std), so Python and
//! JavaScript clients can set up their usual loaders around our ONNX file.

use std::path::Path;

use anyhow::{Context, Result};
use serde_json::{json, Map, Value};
use vit::config::{Pooling, Resize, Stem, Variant};
use vit::{ModelMetadata, ViTConfig};

/// PIL's resampling codes, as `preprocessor_config.json` stores them.
const PIL_NEAREST: u32 = 0;
/// PIL's bilinear filter.
const PIL_BILINEAR: u32 = 2;

/// True when `transformers`' `ViTForImageClassification` computes the same
/// function (only then does `config.json` name it as the architecture).
fn is_hf_vit(cfg: &ViTConfig) -> bool {
    cfg.variant == Variant::Standard
        && cfg.stem == Stem::Patch
        && cfg.pooling == Pooling::Cls
        && !cfg.locality_attention
        && !cfg.test_time_flip
        && cfg.layer_scale.is_none()
        && !cfg.norm_pre
}

/// The `config.json` object for a model.
pub fn config_json(meta: &ModelMetadata) -> Value {
    let cfg = &meta.config;
    let id2label: Map<String, Value> =
        meta.labels.iter().enumerate().map(|(i, l)| (i.to_string(), Value::from(l.as_str()))).collect();
    let label2id: Map<String, Value> =
        meta.labels.iter().enumerate().map(|(i, l)| (l.clone(), Value::from(i))).collect();
    let mut out = json!({
        "model_type": "vit",
        "hidden_size": cfg.embed_dim,
        "num_hidden_layers": cfg.depth,
        "num_attention_heads": cfg.num_heads,
        "intermediate_size": cfg.mlp_hidden(),
        "hidden_act": "gelu",
        "layer_norm_eps": cfg.layer_norm_eps,
        "image_size": cfg.image_size,
        "patch_size": cfg.patch_size,
        "num_channels": cfg.in_channels,
        "qkv_bias": cfg.qkv_bias,
        "num_labels": meta.labels.len(),
        "id2label": id2label,
        "label2id": label2id,
        "problem_type": "single_label_classification",
        // Our own full description, the one the ONNX metadata carries.
        "vit_config": serde_json::from_str::<Value>(&cfg.to_json()).expect("ViTConfig JSON parses"),
    });
    if is_hf_vit(cfg) {
        out["architectures"] = json!(["ViTForImageClassification"]);
    }
    out
}

/// The `preprocessor_config.json` object (`ViTImageProcessor` fields).
pub fn preprocessor_json(cfg: &ViTConfig) -> Value {
    // f32 -> shortest decimal -> f64, so 0.485 is written as 0.485, not 0.48500001430511475.
    let decimal =
        |v: Vec<f32>| -> Vec<f64> { v.iter().map(|x| x.to_string().parse().unwrap_or(f64::from(*x))).collect() };
    let (mean, std) = cfg.channel_stats();
    let (mean, std) = (decimal(mean), decimal(std));
    let resample = match cfg.preprocess.resize {
        Resize::Bilinear => PIL_BILINEAR,
        Resize::Nearest => PIL_NEAREST,
    };
    json!({
        "image_processor_type": "ViTImageProcessor",
        "do_resize": true,
        "size": { "height": cfg.image_size, "width": cfg.image_size },
        "resample": resample,
        "do_rescale": true,
        "rescale_factor": 1.0 / 255.0,
        "do_normalize": true,
        "image_mean": mean,
        "image_std": std,
    })
}

/// Writes `config.json` and `preprocessor_config.json` in the folder of `onnx`.
pub fn write_beside(onnx: &Path, meta: &ModelMetadata) -> Result<()> {
    let folder = onnx.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    for (name, value) in
        [("config.json", config_json(meta)), ("preprocessor_config.json", preprocessor_json(&meta.config))]
    {
        let path = folder.join(name);
        let text = serde_json::to_string_pretty(&value).expect("JSON values serialise");
        std::fs::write(&path, text + "\n").with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(())
}
