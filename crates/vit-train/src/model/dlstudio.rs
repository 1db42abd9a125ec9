//! DLStudio's ViTHelper network, the one the Purdue ECE 60146 HW9 report used,
//! reproduced as ViTHelper computes it (oddities included):
//!
//! - each head sees only its slice x[:, :, h*d:(h+1)*d] and projects the whole
//!   flattened slice with Linear(L*d, L*d) (not per token);
//! - `A = softmax(Q K^T)` is normalised over **dim 1, the query axis**;
//! - `Z = (A V) / sqrt(d)`: the scale comes **after** softmax and product;
//! - the FFN is Linear(L*E, 2*L*E) -> ReLU -> Linear(2*L*E, L*E) on the whole
//!   flattened sequence; no final LayerNorm, no dropout; mean pooling.
//!
//! Names follow ViTHelper's modules under `encoder.` (`basic_encoder_arr.{i}.
//! self_attention_layer.attention_heads_arr.{h}.WQ`, `norm1`, `W1`, ...).

use tch::{nn, nn::ModuleT, Kind, Tensor};
use vit::config::{Attention, ViTConfig};

use super::PatchEmbed;

/// One head: flattened-sequence Q/K/V projections on the head's slice.
#[derive(Debug)]
struct AttentionHead {
    wq: nn::Linear,
    wk: nn::Linear,
    wv: nn::Linear,
    tokens: i64,
    head_dim: i64,
    attention: Attention,
}

impl AttentionHead {
    fn new(p: nn::Path, cfg: &ViTConfig) -> Self {
        let n = (cfg.num_tokens() * cfg.head_dim()) as i64;
        let c = Default::default();
        Self {
            wq: nn::linear(&p / "WQ", n, n, c),
            wk: nn::linear(&p / "WK", n, n, c),
            wv: nn::linear(&p / "WV", n, n, c),
            tokens: cfg.num_tokens() as i64,
            head_dim: cfg.head_dim() as i64,
            attention: cfg.attention,
        }
    }

    /// [B, L, d] -> [B, L, d]
    fn forward(&self, xs: &Tensor) -> Tensor {
        let (l, d) = (self.tokens, self.head_dim);
        let flat = xs.reshape([-1, l * d]); // [B, L*d]
        let q = flat.apply(&self.wq).reshape([-1, l, d]);
        let k = flat.apply(&self.wk).reshape([-1, l, d]);
        let v = flat.apply(&self.wv).reshape([-1, l, d]);
        attention(&q, &k, &v, self.attention)
    }
}

/// ViTHelper's attention on [B, L, d] tensors: `softmax(Q K^T, dim = 1) V / sqrt(d)`,
/// normalised over the query axis and scaled after the product, as the course code.
pub fn attention(q: &Tensor, k: &Tensor, v: &Tensor, form: Attention) -> Tensor {
    let d = *q.size().last().unwrap_or(&1);
    let scores = match form {
        Attention::Matmul => q.matmul(&k.transpose(1, 2)),
        Attention::Einsum => Tensor::einsum("bqd,bkd->bqk", &[q, k], None::<i64>),
    }; // [B, L(query), L(key)]
    let a = scores.softmax(1, Kind::Float); // over the query axis, as ViTHelper
    let z = match form {
        Attention::Matmul => a.matmul(v),
        Attention::Einsum => Tensor::einsum("bqk,bkd->bqd", &[&a, v], None::<i64>),
    };
    z / (d as f64).sqrt()
}

/// Heads on disjoint embedding slices, concatenated back; no output projection.
#[derive(Debug)]
struct SelfAttention {
    heads: Vec<AttentionHead>,
    head_dim: i64,
}

impl SelfAttention {
    fn new(p: nn::Path, cfg: &ViTConfig) -> Self {
        let arr = &p / "attention_heads_arr";
        let heads = (0..cfg.num_heads).map(|h| AttentionHead::new(&arr / h, cfg)).collect();
        Self { heads, head_dim: cfg.head_dim() as i64 }
    }

    /// [B, L, E] -> [B, L, E]
    fn forward(&self, xs: &Tensor) -> Tensor {
        let d = self.head_dim;
        let outs: Vec<Tensor> =
            self.heads.iter().enumerate().map(|(h, head)| head.forward(&xs.narrow(2, h as i64 * d, d))).collect();
        Tensor::cat(&outs, 2)
    }
}

/// Pre-LN encoder with the flattened-sequence FFN.
#[derive(Debug)]
struct BasicEncoder {
    norm1: nn::LayerNorm,
    self_attention_layer: SelfAttention,
    norm2: nn::LayerNorm,
    w1: nn::Linear,
    w2: nn::Linear,
    tokens: i64,
    embed_dim: i64,
}

impl BasicEncoder {
    fn new(p: nn::Path, cfg: &ViTConfig) -> Self {
        let (l, e) = (cfg.num_tokens() as i64, cfg.embed_dim as i64);
        let ln = nn::LayerNormConfig { eps: cfg.layer_norm_eps, ..Default::default() };
        Self {
            norm1: nn::layer_norm(&p / "norm1", vec![e], ln),
            self_attention_layer: SelfAttention::new(&p / "self_attention_layer", cfg),
            norm2: nn::layer_norm(&p / "norm2", vec![e], ln),
            w1: nn::linear(&p / "W1", l * e, 2 * l * e, Default::default()),
            w2: nn::linear(&p / "W2", 2 * l * e, l * e, Default::default()),
            tokens: l,
            embed_dim: e,
        }
    }

    /// [B, L, E] -> [B, L, E]
    fn forward(&self, xs: &Tensor) -> Tensor {
        let y = xs + self.self_attention_layer.forward(&xs.apply(&self.norm1));
        let flat = y.apply(&self.norm2).reshape([-1, self.tokens * self.embed_dim]); // [B, L*E]
        let ffn = flat.apply(&self.w1).relu().apply(&self.w2).reshape([-1, self.tokens, self.embed_dim]);
        &y + ffn
    }
}

/// Patch embedding, `depth` BasicEncoders (ViTHelper's MasterEncoder), mean pooling, head.
#[derive(Debug)]
pub struct DlstudioViT {
    embed: PatchEmbed,
    encoders: Vec<BasicEncoder>,
    head: nn::Linear,
}

impl DlstudioViT {
    /// Variables under `p`: shared names for the embedding and head, ViTHelper's under `encoder.`.
    pub fn new(p: &nn::Path, cfg: &ViTConfig) -> Self {
        // The course code: class token torch.rand (uniform [0, 1)), position embedding torch.randn.
        let cls = nn::Init::Uniform { lo: 0.0, up: 1.0 };
        let pos = nn::Init::Randn { mean: 0.0, stdev: 1.0 };
        let arr = p / "encoder" / "basic_encoder_arr";
        Self {
            embed: PatchEmbed::new(p, cfg, cls, pos),
            encoders: (0..cfg.depth).map(|i| BasicEncoder::new(&arr / i, cfg)).collect(),
            head: nn::linear(p / "head", cfg.embed_dim as i64, cfg.num_classes as i64, Default::default()),
        }
    }
}

impl ModuleT for DlstudioViT {
    fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        let mut x = self.embed.forward_t(xs, train); // [B, L, E]
        for enc in &self.encoders {
            x = enc.forward(&x);
        }
        x.mean_dim(1, false, Kind::Float).apply(&self.head) // [B, E] -> [B, K]
    }
}
