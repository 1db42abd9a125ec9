//! The dlstudio variant's encoders (DLStudio's ViTHelper, as trained by
//! `vit-train`), oddities included, as `vit_train::model::DlstudioViT` computes it:
//!
//! - head `h` takes the slice `x[:, :, h*d:(h+1)*d]`, flattens it to `[B, L*d]`
//!   and projects it with `WQ`/`WK`/`WV`, each `Linear(L*d, L*d)`, reshaped back
//!   to `[B, L, d]`;
//! - `A = softmax(Q K^T)` over **axis 1, the query axis**;
//! - `Z = (A V) / sqrt(d)`: the scale comes after softmax and product;
//! - heads are concatenated on axis 2, with no output projection;
//! - the FFN is `W2(ReLU(W1(flatten(norm2(y)))))` on the whole `[B, L*E]` sequence;
//! - no final LayerNorm; mean pooling over all `L` tokens.
//!
//! With `attention = einsum` the two attention products are ONNX `Einsum` nodes
//! (`bqd,bkd->bqk`, `bqk,bkd->bqd`), otherwise `MatMul` (with a `Transpose` for K^T).

use super::{head, layer_norm, Specs};
use crate::config::{Attention, ViTConfig};
use crate::onnx::builder::{i64_of, GraphBuilder};

/// Prefix of encoder `i`.
fn encoder_prefix(i: usize) -> String {
    format!("encoder.basic_encoder_arr.{i}")
}

/// Prefix of head `h` in the encoder with prefix `enc`.
fn head_prefix(enc: &str, h: usize) -> String {
    format!("{enc}.self_attention_layer.attention_heads_arr.{h}")
}

/// The encoders' tensors (patch embedding and head are shared with the standard variant).
pub(super) fn tensor_specs(cfg: &ViTConfig, s: &mut Specs) {
    let (l, e, d) = (cfg.num_tokens(), cfg.embed_dim, cfg.head_dim());
    for i in 0..cfg.depth {
        let enc = encoder_prefix(i);
        s.layer_norm(&format!("{enc}.norm1"), e);
        for h in 0..cfg.num_heads {
            let hp = head_prefix(&enc, h);
            for w in ["WQ", "WK", "WV"] {
                s.linear(&format!("{hp}.{w}"), l * d, l * d, true);
            }
        }
        s.layer_norm(&format!("{enc}.norm2"), e);
        s.linear(&format!("{enc}.W1"), l * e, 2 * l * e, true);
        s.linear(&format!("{enc}.W2"), 2 * l * e, l * e, true);
    }
}

/// Encoders, mean pooling and head: `[B, L, E]` -> `[B, K]`.
pub(super) fn body(b: &mut GraphBuilder, cfg: &ViTConfig, x: &str) -> String {
    let mut x = x.to_owned();
    for i in 0..cfg.depth {
        x = encoder(b, cfg, &encoder_prefix(i), &x);
    }
    let pooled = b.reduce_mean("pool", &x, &[1], false); // [B, E]
    head(b, &pooled)
}

/// `y = x + attn(norm1(x))`, `y + reshape(W2(relu(W1(flatten(norm2(y))))))`.
fn encoder(b: &mut GraphBuilder, cfg: &ViTConfig, enc: &str, x: &str) -> String {
    let (l, e) = (i64_of(cfg.num_tokens()), i64_of(cfg.embed_dim));

    let n = layer_norm(b, cfg, &format!("{enc}.norm1"), x);
    let heads: Vec<String> = (0..cfg.num_heads).map(|h| attention_head(b, cfg, enc, h, &n)).collect();
    let att = if heads.len() == 1 {
        heads[0].clone()
    } else {
        let refs: Vec<&str> = heads.iter().map(String::as_str).collect();
        b.concat(&format!("{enc}.self_attention_layer"), &refs, 2) // [B, L, E]
    };
    let y = b.add(&format!("{enc}.residual1"), x, &att);

    let n = layer_norm(b, cfg, &format!("{enc}.norm2"), &y);
    let f = b.reshape(&format!("{enc}.flatten"), &n, &[-1, l * e]); // [B, L*E]
    let f = b.linear(&format!("{enc}.W1"), &f, true); // [B, 2LE]
    let f = b.relu(&format!("{enc}.relu"), &f);
    let f = b.linear(&format!("{enc}.W2"), &f, true); // [B, LE]
    let f = b.reshape(&format!("{enc}.unflatten"), &f, &[-1, l, e]);
    b.add(&format!("{enc}.residual2"), &y, &f)
}

/// Head `h` on the normalised `[B, L, E]` input: `[B, L, d]`.
fn attention_head(b: &mut GraphBuilder, cfg: &ViTConfig, enc: &str, h: usize, x: &str) -> String {
    let (l, d) = (i64_of(cfg.num_tokens()), i64_of(cfg.head_dim()));
    let hp = head_prefix(enc, h);
    let h = i64_of(h);

    let s = b.slice(&hp, x, 2, h * d, (h + 1) * d); // [B, L, d]
    let flat = b.reshape(&hp, &s, &[-1, l * d]); // [B, L*d]
    let mut project = |w: &str| {
        let y = b.linear(&format!("{hp}.{w}"), &flat, true);
        b.reshape(&format!("{hp}.{w}"), &y, &[-1, l, d]) // [B, L, d]
    };
    let (q, k, v) = (project("WQ"), project("WK"), project("WV"));

    let scores = match cfg.attention {
        Attention::Matmul => {
            let kt = b.transpose(&hp, &k, &[0, 2, 1]);
            b.matmul(&hp, &q, &kt)
        }
        Attention::Einsum => b.einsum(&hp, "bqd,bkd->bqk", &[&q, &k]),
    }; // [B, L(query), L(key)]
    let a = b.softmax(&hp, &scores, 1); // over the query axis, as ViTHelper
    let z = match cfg.attention {
        Attention::Matmul => b.matmul(&hp, &a, &v),
        Attention::Einsum => b.einsum(&hp, "bqk,bkd->bqd", &[&a, &v]),
    };
    let sqrt_d = b.const_f32("sqrt_head_dim", (cfg.head_dim() as f64).sqrt() as f32);
    b.div(&hp, &z, &sqrt_d)
}
