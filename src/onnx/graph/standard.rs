//! The standard (timm) variant's encoder: an optional `norm_pre`, pre-LN
//! blocks `blocks.{i}` with a fused q/k/v projection (optionally locality
//! self-attention, optionally LayerScale `ls1`/`ls2`), the final
//! `norm`, class-token or mean pooling (or timm's avg pooling over the patch
//! tokens followed by `fc_norm`), then the shared head. Mirrors
//! `vit_train::model::StandardViT`.

use super::{head, layer_norm, Specs};
use crate::config::{Pooling, ViTConfig, SELF_ATTENTION_MASK};
use crate::onnx::builder::{i64_of, GraphBuilder};

/// The blocks' and the final norm's tensors (patch embedding and head are shared).
pub(super) fn tensor_specs(cfg: &ViTConfig, s: &mut Specs) {
    let (e, hidden) = (cfg.embed_dim, cfg.mlp_hidden());
    if cfg.norm_pre {
        s.layer_norm("norm_pre", e);
    }
    for i in 0..cfg.depth {
        let b = format!("blocks.{i}");
        s.layer_norm(&format!("{b}.norm1"), e);
        s.linear(&format!("{b}.attn.qkv"), e, 3 * e, cfg.qkv_bias);
        if cfg.locality_attention {
            s.plain(format!("{b}.attn.scale"), &[cfg.num_heads]);
        }
        s.linear(&format!("{b}.attn.proj"), e, e, true);
        if cfg.layer_scale.is_some() {
            s.plain(format!("{b}.ls1.gamma"), &[e]);
        }
        s.layer_norm(&format!("{b}.norm2"), e);
        s.linear(&format!("{b}.mlp.fc1"), e, hidden, true);
        s.linear(&format!("{b}.mlp.fc2"), hidden, e, true);
        if cfg.layer_scale.is_some() {
            s.plain(format!("{b}.ls2.gamma"), &[e]);
        }
    }
    s.layer_norm(if cfg.pooling == Pooling::Avg { "fc_norm" } else { "norm" }, e);
}

/// Blocks, final norm, pooling and head: `[B, L, E]` -> `[B, K]`.
pub(super) fn body(b: &mut GraphBuilder, cfg: &ViTConfig, x: &str) -> String {
    let mut x = if cfg.norm_pre { layer_norm(b, cfg, "norm_pre", x) } else { x.to_owned() };
    for i in 0..cfg.depth {
        x = block(b, cfg, &format!("blocks.{i}"), &x);
    }
    let pooled = match cfg.pooling {
        Pooling::Cls => {
            let x = layer_norm(b, cfg, "norm", &x);
            b.gather_index("pool", &x, 0, 1)
        }
        Pooling::Mean => {
            let x = layer_norm(b, cfg, "norm", &x);
            b.reduce_mean("pool", &x, &[1], false)
        }
        Pooling::Avg => {
            // The patch tokens only ([B, prefix.., E]), then fc_norm on the mean.
            let patches = if cfg.class_token {
                b.slice("pool", &x, 1, i64_of(cfg.num_prefix_tokens()), i64_of(cfg.num_tokens()))
            } else {
                x
            };
            let mean = b.reduce_mean("pool", &patches, &[1], false);
            layer_norm(b, cfg, "fc_norm", &mean)
        }
    };
    head(b, &pooled)
}

/// Pre-LN block: `x + ls1(attn(norm1(x)))`, then `x + ls2(mlp(norm2(x)))`
/// (`ls*`: LayerScale, a `Mul` by `{p}.ls*.gamma` `[E]`, if configured).
fn block(b: &mut GraphBuilder, cfg: &ViTConfig, p: &str, x: &str) -> String {
    let y = layer_norm(b, cfg, &format!("{p}.norm1"), x);
    let out = attention(b, cfg, &format!("{p}.attn"), &y);
    let out = layer_scale(b, cfg, &format!("{p}.ls1"), &out);
    let x = b.add(&format!("{p}.residual1"), x, &out);

    let y = layer_norm(b, cfg, &format!("{p}.norm2"), &x);
    let y = b.linear(&format!("{p}.mlp.fc1"), &y, true);
    let y = b.gelu(&format!("{p}.mlp.act"), &y);
    let y = b.linear(&format!("{p}.mlp.fc2"), &y, true);
    let y = layer_scale(b, cfg, &format!("{p}.ls2"), &y);
    b.add(&format!("{p}.residual2"), &x, &y)
}

/// `y * {s}.gamma` (broadcast over `[B, L, E]`) with LayerScale, else `y`.
fn layer_scale(b: &mut GraphBuilder, cfg: &ViTConfig, s: &str, y: &str) -> String {
    match cfg.layer_scale {
        Some(_) => b.mul(s, y, &format!("{s}.gamma")),
        None => y.to_owned(),
    }
}

/// Multi-head self-attention under prefix `s` (`{s}.qkv`, `{s}.proj`, `{s}.scale`):
/// `[B, L, E]` -> `[B, L, E]`.
fn attention(b: &mut GraphBuilder, cfg: &ViTConfig, s: &str, y: &str) -> String {
    let (l, e, h, d) = (i64_of(cfg.num_tokens()), i64_of(cfg.embed_dim), i64_of(cfg.num_heads), i64_of(cfg.head_dim()));

    let qkv_scope = format!("{s}.qkv");
    let qkv = b.linear(&qkv_scope, y, cfg.qkv_bias); // [B, L, 3E]
    let qkv = b.reshape(&qkv_scope, &qkv, &[-1, l, 3, h, d]);
    let qkv = b.transpose(&qkv_scope, &qkv, &[2, 0, 3, 1, 4]); // [3, B, H, L, d]
    let q = b.gather_index(&format!("{s}.q"), &qkv, 0, 0); // [B, H, L, d]
    let k = b.gather_index(&format!("{s}.k"), &qkv, 1, 0);
    let v = b.gather_index(&format!("{s}.v"), &qkv, 2, 0);
    let kt = b.transpose(s, &k, &[0, 1, 3, 2]); // [B, H, d, L]
    let scores = b.matmul(s, &q, &kt); // [B, H, L, L]
    let scores = if cfg.locality_attention {
        // Locality self-attention: learned per-head scale [H] -> [H, 1, 1], masked diagonal.
        let scale = b.reshape(s, &format!("{s}.scale"), &[h, 1, 1]);
        let scores = b.mul(s, &scores, &scale);
        let n = cfg.num_tokens();
        let diag: Vec<f32> = (0..n * n).map(|i| if i % (n + 1) == 0 { SELF_ATTENTION_MASK } else { 0.0 }).collect();
        let mask = b.const_f32_tensor("self_attention_mask", &[n, n], &diag);
        b.add(s, &scores, &mask)
    } else {
        let scale = b.const_f32("attn_scale", (cfg.head_dim() as f64).powf(-0.5) as f32);
        b.mul(s, &scores, &scale)
    };
    let attn = b.softmax(s, &scores, -1);
    let out = b.matmul(s, &attn, &v); // [B, H, L, d]
    let out = b.transpose(s, &out, &[0, 2, 1, 3]); // [B, L, H, d]
    let out = b.reshape(s, &out, &[-1, l, e]);
    b.linear(&format!("{s}.proj"), &out, true)
}
