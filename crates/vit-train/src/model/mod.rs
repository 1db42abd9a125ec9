//! The networks, as tch modules whose VarStore names equal PyTorch state-dict
//! keys (so checkpoints load into timm / the course code, and the ONNX writer
//! can name its initializers after them).

mod dlstudio;
mod standard;

use tch::{nn, Tensor};
use vit::{Variant, ViTConfig};

pub use dlstudio::{attention as dlstudio_attention, DlstudioViT};
pub use standard::StandardViT;

/// Either network family, chosen by `cfg.variant`.
#[derive(Debug)]
pub enum ViT {
    /// Pre-LN ViT with timm names.
    Standard(StandardViT),
    /// DLStudio ViTHelper network.
    Dlstudio(DlstudioViT),
}

impl ViT {
    /// Creates the variables under `p` (use `vs.root()` for state-dict names).
    pub fn new(p: &nn::Path, cfg: &ViTConfig) -> Self {
        match cfg.variant {
            Variant::Standard => Self::Standard(StandardViT::new(p, cfg)),
            Variant::Dlstudio => Self::Dlstudio(DlstudioViT::new(p, cfg)),
        }
    }
}

impl nn::ModuleT for ViT {
    /// [B, C, H, W] normalised pixels -> [B, num_classes] logits.
    fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        match self {
            Self::Standard(m) => m.forward_t(xs, train),
            Self::Dlstudio(m) => m.forward_t(xs, train),
        }
    }
}

/// Shared patch embedding: Conv2d(C, E, kernel = stride = patch), flattened
/// row-major to tokens, class token prepended, position embedding added.
#[derive(Debug)]
pub(crate) struct PatchEmbed {
    proj: nn::Conv2D,
    cls_token: Tensor,
    pos_embed: Tensor,
    embed_dim: i64,
}

impl PatchEmbed {
    /// `cls_init`/`pos_init`: the variant's initialisers.
    pub(crate) fn new(p: &nn::Path, cfg: &ViTConfig, cls_init: nn::Init, pos_init: nn::Init) -> Self {
        let e = cfg.embed_dim as i64;
        let conv = nn::ConvConfig { stride: cfg.patch_size as i64, ..Default::default() };
        let proj = nn::conv2d(&(p / "patch_embed" / "proj"), cfg.in_channels as i64, e, cfg.patch_size as i64, conv);
        let cls_token = p.var("cls_token", &[1, 1, e], cls_init);
        let pos_embed = p.var("pos_embed", &[1, cfg.num_tokens() as i64, e], pos_init);
        Self { proj, cls_token, pos_embed, embed_dim: e }
    }

    /// [B, C, H, W] -> [B, L, E]
    pub(crate) fn forward(&self, xs: &Tensor) -> Tensor {
        let b = xs.size()[0];
        let patches = xs.apply(&self.proj).flatten(2, -1).transpose(1, 2); // [B, N, E]
        let cls = self.cls_token.expand([b, 1, self.embed_dim], false); // [B, 1, E]
        Tensor::cat(&[cls, patches], 1) + &self.pos_embed
    }
}

/// Number of scalar parameters in a VarStore.
pub fn parameter_count(vs: &nn::VarStore) -> i64 {
    vs.trainable_variables().iter().map(|t| t.numel() as i64).sum()
}
