//! Hugging Face `ViTForImageClassification` state dicts renamed to ours
//! (timm's): separate `query`/`key`/`value` projections are fused into
//! `attn.qkv` (rows in q, k, v order, as timm's), and every other tensor is a
//! one-to-one rename. A name with no counterpart is an error naming it.

use std::collections::BTreeMap;

use tch::Tensor;

use super::ImportError;

/// True when the names are Hugging Face's (`vit.*`, `classifier.*`).
pub fn is_hugging_face(tensors: &BTreeMap<String, Tensor>) -> bool {
    tensors.keys().any(|k| k.starts_with("vit.") || k.starts_with("classifier."))
}

/// Our name for one Hugging Face tensor, or `None` for the three attention
/// projections (fused separately).
fn rename(name: &str) -> Result<Option<String>, ImportError> {
    let unsupported = || ImportError::Unsupported { name: name.to_owned(), why: "no counterpart in our ViT".into() };
    let fixed = match name {
        "vit.embeddings.cls_token" => Some("cls_token"),
        "vit.embeddings.position_embeddings" => Some("pos_embed"),
        "vit.embeddings.patch_embeddings.projection.weight" => Some("patch_embed.proj.weight"),
        "vit.embeddings.patch_embeddings.projection.bias" => Some("patch_embed.proj.bias"),
        "vit.layernorm.weight" => Some("norm.weight"),
        "vit.layernorm.bias" => Some("norm.bias"),
        "classifier.weight" => Some("head.weight"),
        "classifier.bias" => Some("head.bias"),
        _ => None,
    };
    if let Some(ours) = fixed {
        return Ok(Some(ours.to_owned()));
    }
    let rest = name.strip_prefix("vit.encoder.layer.").ok_or_else(unsupported)?;
    let (index, tail) = rest.split_once('.').ok_or_else(unsupported)?;
    let index: usize = index.parse().map_err(|_| unsupported())?;
    let (module, param) = tail.rsplit_once('.').ok_or_else(unsupported)?;
    if !matches!(param, "weight" | "bias") {
        return Err(unsupported());
    }
    let ours = match module {
        "layernorm_before" => "norm1",
        "attention.output.dense" => "attn.proj",
        "layernorm_after" => "norm2",
        "intermediate.dense" => "mlp.fc1",
        "output.dense" => "mlp.fc2",
        "attention.attention.query" | "attention.attention.key" | "attention.attention.value" => return Ok(None),
        _ => return Err(unsupported()),
    };
    Ok(Some(format!("blocks.{index}.{ours}.{param}")))
}

/// Renames every tensor and fuses each block's q/k/v into `blocks.{i}.attn.qkv.*`.
pub fn to_timm_names(tensors: BTreeMap<String, Tensor>) -> Result<BTreeMap<String, Tensor>, ImportError> {
    let mut out = BTreeMap::new();
    let mut qkv_parts: BTreeMap<String, Tensor> = BTreeMap::new();
    for (name, t) in tensors {
        match rename(&name)? {
            Some(ours) => {
                out.insert(ours, t);
            }
            None => {
                qkv_parts.insert(name, t);
            }
        }
    }
    let blocks: std::collections::BTreeSet<(String, String)> = qkv_parts
        .keys()
        .filter_map(|k| {
            let (prefix, param) = k.rsplit_once('.')?;
            let layer = prefix
                .strip_suffix(".attention.attention.query")
                .or_else(|| prefix.strip_suffix(".attention.attention.key"))
                .or_else(|| prefix.strip_suffix(".attention.attention.value"))?;
            Some((layer.to_owned(), param.to_owned()))
        })
        .collect();
    for (layer, param) in blocks {
        let mut parts = Vec::with_capacity(3);
        for which in ["query", "key", "value"] {
            let name = format!("{layer}.attention.attention.{which}.{param}");
            let t = qkv_parts.remove(&name).ok_or_else(|| ImportError::Missing {
                name: name.clone(),
                why: "the other attention projections of its layer are present".into(),
            })?;
            parts.push(t);
        }
        let index = layer.trim_start_matches("vit.encoder.layer.");
        out.insert(format!("blocks.{index}.attn.qkv.{param}"), Tensor::cat(&parts, 0));
    }
    Ok(out)
}
