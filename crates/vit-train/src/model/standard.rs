//! Standard pre-LN Vision Transformer (Dosovitskiy et al. 2020), laid out as
//! timm's `VisionTransformer` so names match its state dict:
//! `patch_embed.proj.*`, `cls_token`, `pos_embed`, `blocks.{i}.{norm1,attn.qkv,attn.proj,norm2,mlp.fc1,mlp.fc2}.*`,
//! `norm.*`, `head.*`; with locality self-attention also `blocks.{i}.attn.scale`
//! (`[H]`, not a timm tensor). With `pooling = "avg"` the final norm is
//! `fc_norm.*` after pooling, as timm's `global_pool = "avg"` (its `norm` is
//! then an Identity, without tensors). timm's options `init_values`
//! (LayerScale `blocks.{i}.ls1.gamma`, `ls2.gamma`), `pre_norm` (`norm_pre.*`)
//! and `class_token = False` are the config's `layer_scale`, `norm_pre` and
//! `class_token`.

use std::sync::atomic::{AtomicBool, Ordering};

use tch::{nn, nn::ModuleT, Kind, Tensor};
use vit::config::{Pooling, ViTConfig, SELF_ATTENTION_MASK};

use super::PatchEmbed;

fn linear(p: nn::Path, i: usize, o: usize, bias: bool) -> nn::Linear {
    // timm: trunc_normal(std=0.02) weights, zero biases.
    let cfg = nn::LinearConfig {
        ws_init: nn::Init::Randn { mean: 0.0, stdev: 0.02 },
        bs_init: Some(nn::Init::Const(0.0)),
        bias,
    };
    nn::linear(p, i as i64, o as i64, cfg)
}

fn layer_norm(p: nn::Path, cfg: &ViTConfig) -> nn::LayerNorm {
    let c = nn::LayerNormConfig { eps: cfg.layer_norm_eps, ..Default::default() };
    nn::layer_norm(p, vec![cfg.embed_dim as i64], c)
}

/// Multi-head self-attention with a fused q/k/v projection; with
/// `locality_attention`, a learnable per-head scale and a masked diagonal.
#[derive(Debug)]
struct Attention {
    qkv: nn::Linear,
    proj: nn::Linear,
    /// Locality self-attention: the learnable per-head scale `[H]`.
    locality_scale: Option<Tensor>,
    heads: i64,
    tokens: i64,
    head_dim: i64,
    dropout: f64,
}

impl Attention {
    fn new(p: nn::Path, cfg: &ViTConfig) -> Self {
        let e = cfg.embed_dim;
        let (h, d) = (cfg.num_heads as i64, cfg.head_dim() as f64);
        let locality_scale = cfg.locality_attention.then(|| p.var("scale", &[h], nn::Init::Const(d.powf(-0.5))));
        Self {
            locality_scale,
            qkv: linear(&p / "qkv", e, 3 * e, cfg.qkv_bias),
            proj: linear(&p / "proj", e, e, true),
            heads: cfg.num_heads as i64,
            tokens: cfg.num_tokens() as i64,
            head_dim: cfg.head_dim() as i64,
            dropout: cfg.dropout,
        }
    }

    /// [B, L, E] -> [B, L, E]
    fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        let (l, h, d) = (self.tokens, self.heads, self.head_dim);
        let qkv = xs.apply(&self.qkv).reshape([-1, l, 3, h, d]).permute([2, 0, 3, 1, 4]); // [3, B, H, L, d]
        let (q, k, v) = (qkv.get(0), qkv.get(1), qkv.get(2));
        let attend = if FUSED_ATTENTION.load(Ordering::Relaxed) { fused_attention } else { explicit_attention };
        let out = attend(&q, &k, &v, self.locality_scale.as_ref(), self.dropout, train); // [B, H, L, d]
        let out = out.transpose(1, 2).reshape([-1, l, h * d]); // [B, L, E]
        out.apply(&self.proj).dropout(self.dropout, train)
    }
}

/// Whether [`StandardViT`] attends with one fused `scaled_dot_product_attention`
/// kernel (true) or the explicit matmul-softmax-matmul (false, the default: its
/// numbers are the ones the seeded preset fingerprints were taken with; the fused
/// kernel agrees to ~1e-6 but not to the bit). Read at every forward pass.
pub static FUSED_ATTENTION: AtomicBool = AtomicBool::new(false);

/// Selects the attention kernel of every [`StandardViT`] (see [`FUSED_ATTENTION`]).
pub fn set_fused_attention(fused: bool) {
    FUSED_ATTENTION.store(fused, Ordering::Relaxed);
}

/// `softmax(q k^T * s + mask) v` on [B, H, L, d] tensors written out: `s` is the
/// per-head `locality_scale` `[H]` with the diagonal masked, else 1 / sqrt(d);
/// attention dropout with probability `dropout` when `train`.
pub fn explicit_attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    locality_scale: Option<&Tensor>,
    dropout: f64,
    train: bool,
) -> Tensor {
    let (h, l, d) = (q.size()[1], q.size()[2], q.size()[3]);
    let scores = q.matmul(&k.transpose(-2, -1)); // [B, H, L, L]
    let scores = match locality_scale {
        Some(scale) => {
            // [L, L], built where the scores live (device and dtype follow the model)
            let mask = Tensor::eye(l, (scores.kind(), scores.device())) * f64::from(SELF_ATTENTION_MASK);
            scores * scale.reshape([h, 1, 1]) + mask
        }
        None => scores * (d as f64).powf(-0.5),
    };
    let attn = scores.softmax(-1, Kind::Float); // [B, H, L, L]
    attn.dropout(dropout, train).matmul(v)
}

/// The same attention as [`explicit_attention`] in one fused kernel: the per-head
/// locality scale is folded into q (`(q s) k^T = s (q k^T)`) and the diagonal mask
/// is the additive `attn_mask`, with the kernel's own scale set to 1.
pub fn fused_attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    locality_scale: Option<&Tensor>,
    dropout: f64,
    train: bool,
) -> Tensor {
    let dropout = if train { dropout } else { 0.0 };
    match locality_scale {
        Some(scale) => {
            let (h, l) = (q.size()[1], q.size()[2]);
            let q = q * scale.reshape([h, 1, 1]);
            let mask = Tensor::eye(l, (q.kind(), q.device())) * f64::from(SELF_ATTENTION_MASK); // [L, L]
            Tensor::scaled_dot_product_attention(&q, k, v, Some(&mask), dropout, false, 1.0, false)
        }
        None => Tensor::scaled_dot_product_attention(q, k, v, None::<Tensor>, dropout, false, None, false),
    }
}

/// E -> hidden -> E with exact GELU.
#[derive(Debug)]
struct Mlp {
    fc1: nn::Linear,
    fc2: nn::Linear,
    dropout: f64,
}

impl Mlp {
    fn new(p: nn::Path, cfg: &ViTConfig) -> Self {
        let (e, hidden) = (cfg.embed_dim, cfg.mlp_hidden());
        Self {
            fc1: linear(&p / "fc1", e, hidden, true),
            fc2: linear(&p / "fc2", hidden, e, true),
            dropout: cfg.dropout,
        }
    }

    fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        let hidden = xs.apply(&self.fc1).gelu("none").dropout(self.dropout, train);
        hidden.apply(&self.fc2).dropout(self.dropout, train)
    }
}

/// Stochastic depth (Huang et al. 2016): in training, zeroes a residual branch
/// for a random subset of the samples with probability `rate` and scales the
/// kept ones by 1 / (1 - rate); the identity at evaluation.
pub fn drop_path(xs: &Tensor, rate: f64, train: bool) -> Tensor {
    if !train || rate <= 0.0 {
        return xs.shallow_clone();
    }
    let keep = 1.0 - rate;
    let mut shape = vec![1i64; xs.dim()];
    shape[0] = xs.size()[0];
    let mask = Tensor::empty(shape.as_slice(), (xs.kind(), xs.device())).bernoulli_float_(keep); // [B, 1, 1]
    xs * mask / keep
}

/// Pre-LN transformer block: x + ls1(attn(ln1(x))), then x + ls2(mlp(ln2(x))),
/// with stochastic depth on both branches (`ls*`: optional LayerScale).
#[derive(Debug)]
struct Block {
    norm1: nn::LayerNorm,
    attn: Attention,
    /// LayerScale gammas `[E]` of the attention and MLP branches.
    layer_scale: Option<(Tensor, Tensor)>,
    norm2: nn::LayerNorm,
    mlp: Mlp,
    drop_path: f64,
}

impl Block {
    fn new(p: nn::Path, cfg: &ViTConfig, drop_path: f64) -> Self {
        Self {
            norm1: layer_norm(&p / "norm1", cfg),
            attn: Attention::new(&p / "attn", cfg),
            layer_scale: cfg.layer_scale.map(|v| {
                let gamma = |name: &str| (&p / name).var("gamma", &[cfg.embed_dim as i64], nn::Init::Const(v));
                (gamma("ls1"), gamma("ls2"))
            }),
            norm2: layer_norm(&p / "norm2", cfg),
            mlp: Mlp::new(&p / "mlp", cfg),
            drop_path,
        }
    }

    fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        // Out of place: `*=` would modify a tensor autograd may have kept for the backward pass.
        let a = self.attn.forward_t(&xs.apply(&self.norm1), train);
        let a = match &self.layer_scale {
            Some((ls1, _)) => a * ls1,
            None => a,
        };
        let xs = xs + drop_path(&a, self.drop_path, train);
        let m = self.mlp.forward_t(&xs.apply(&self.norm2), train);
        let m = match &self.layer_scale {
            Some((_, ls2)) => m * ls2,
            None => m,
        };
        &xs + drop_path(&m, self.drop_path, train)
    }
}

/// The final LayerNorm's name: `norm` over the tokens, or timm's `fc_norm`
/// over the pooled vector with avg pooling.
pub fn final_norm_name(pooling: Pooling) -> &'static str {
    match pooling {
        Pooling::Avg => "fc_norm",
        Pooling::Cls | Pooling::Mean => "norm",
    }
}

/// The whole network.
#[derive(Debug)]
pub struct StandardViT {
    embed: PatchEmbed,
    /// timm's `norm_pre`: a LayerNorm before the blocks (boxed: rarely
    /// present, it would otherwise double the size of every model value).
    norm_pre: Option<Box<nn::LayerNorm>>,
    blocks: Vec<Block>,
    /// `norm` before pooling, or (avg pooling) `fc_norm` after it.
    norm: nn::LayerNorm,
    head: nn::Linear,
    pooling: Pooling,
    /// Tokens before the patch tokens (the class token, if any).
    prefix_tokens: i64,
    dropout: f64,
}

impl StandardViT {
    /// Variables under `p` with timm names.
    pub fn new(p: &nn::Path, cfg: &ViTConfig) -> Self {
        let tok = nn::Init::Randn { mean: 0.0, stdev: 0.02 };
        // timm: drop-path rates rise linearly from 0 (first block) to `drop_path` (last).
        let rate =
            |i: usize| if cfg.depth > 1 { cfg.drop_path * i as f64 / (cfg.depth - 1) as f64 } else { cfg.drop_path };
        let blocks = (0..cfg.depth).map(|i| Block::new(p / "blocks" / i, cfg, rate(i))).collect();
        Self {
            embed: PatchEmbed::new(p, cfg, tok, tok),
            norm_pre: cfg.norm_pre.then(|| Box::new(layer_norm(p / "norm_pre", cfg))),
            blocks,
            norm: layer_norm(p / final_norm_name(cfg.pooling), cfg),
            head: linear(p / "head", cfg.embed_dim, cfg.num_classes, true),
            pooling: cfg.pooling,
            prefix_tokens: cfg.num_prefix_tokens() as i64,
            dropout: cfg.dropout,
        }
    }
}

impl ModuleT for StandardViT {
    fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        let mut x = self.embed.forward_t(xs, train).dropout(self.dropout, train); // [B, L, E]
        if let Some(norm_pre) = &self.norm_pre {
            x = x.apply(norm_pre.as_ref());
        }
        for block in &self.blocks {
            x = block.forward_t(&x, train);
        }
        let pooled = match self.pooling {
            Pooling::Cls => x.apply(&self.norm).select(1, 0), // [B, E]
            Pooling::Mean => x.apply(&self.norm).mean_dim(1, false, Kind::Float), // [B, E]
            Pooling::Avg => {
                let patches = x.narrow(1, self.prefix_tokens, x.size()[1] - self.prefix_tokens); // [B, N, E]
                patches.mean_dim(1, false, Kind::Float).apply(&self.norm)
            }
        };
        pooled.apply(&self.head)
    }
}
