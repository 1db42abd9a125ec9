//! The networks, as tch modules whose VarStore names equal PyTorch state-dict
//! keys (so checkpoints load into timm / the course code, and the ONNX writer
//! can name its initializers after them).

mod dlstudio;
pub mod finetune;
mod standard;

use tch::{nn, nn::ModuleT, Tensor};
use vit::{Variant, ViTConfig};

pub use dlstudio::{attention as dlstudio_attention, DlstudioViT};
pub use standard::{drop_path, explicit_attention, fused_attention, set_fused_attention, StandardViT, FUSED_ATTENTION};

/// Either network family, chosen by `cfg.variant`.
#[derive(Debug)]
enum Network {
    /// Pre-LN ViT with timm names.
    Standard(StandardViT),
    /// DLStudio ViTHelper network.
    Dlstudio(DlstudioViT),
}

/// The network of a config, with its evaluation-time behaviour.
#[derive(Debug)]
pub struct ViT {
    net: Network,
    /// `cfg.test_time_flip`: evaluation averages the logits of x and its mirror image.
    test_time_flip: bool,
}

impl ViT {
    /// Creates the variables under `p` (use `vs.root()` for state-dict names).
    pub fn new(p: &nn::Path, cfg: &ViTConfig) -> Self {
        let net = match cfg.variant {
            Variant::Standard => Network::Standard(StandardViT::new(p, cfg)),
            Variant::Dlstudio => Network::Dlstudio(DlstudioViT::new(p, cfg)),
        };
        Self { net, test_time_flip: cfg.test_time_flip }
    }

    /// One pass of the network, without test-time augmentation.
    fn network_t(&self, xs: &Tensor, train: bool) -> Tensor {
        match &self.net {
            Network::Standard(m) => m.forward_t(xs, train),
            Network::Dlstudio(m) => m.forward_t(xs, train),
        }
    }
}

impl nn::ModuleT for ViT {
    /// [B, C, H, W] normalised pixels -> [B, num_classes] logits.
    fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        if train || !self.test_time_flip {
            return self.network_t(xs, train);
        }
        // One pass over [x; flip_W(x)] ([2B, C, H, W]), then the mean of each image's two logit rows.
        let b = xs.size()[0];
        let both = Tensor::cat(&[xs.shallow_clone(), xs.flip([3])], 0);
        let logits = self.network_t(&both, false); // [2B, K]
        logits.view([2, b, -1]).mean_dim(0, false, logits.kind()) // [B, K]
    }
}

/// PyTorch's BatchNorm2d defaults.
const BN_EPS: f64 = 1e-5;
const BN_MOMENTUM: f64 = 0.1;

/// One conv-stem stage: 3x3 convolution (no bias, stride 1 or 2), BatchNorm, ReLU.
/// Names: `patch_embed.stem.{i}.conv.weight`, `patch_embed.stem.{i}.bn.{weight,bias,running_mean,running_var}`.
#[derive(Debug)]
struct StemStage {
    conv: nn::Conv2D,
    bn: nn::BatchNorm,
}

impl StemStage {
    fn new(p: nn::Path, inp: i64, out: i64, stride: i64) -> Self {
        let conv = nn::ConvConfig { stride, padding: 1, bias: false, ..Default::default() };
        let bn = nn::BatchNormConfig { eps: BN_EPS, momentum: BN_MOMENTUM, ..Default::default() };
        Self { conv: nn::conv2d(&p / "conv", inp, out, 3, conv), bn: nn::batch_norm2d(&p / "bn", out, bn) }
    }

    /// [B, C, H, W] -> [B, C', H/s, W/s]; in training, BatchNorm runs over the
    /// batches of all ranks when data-parallel (SyncBatchNorm).
    fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        let y = xs.apply(&self.conv);
        let synced = train.then(|| crate::dist::sync_batch_norm(&y, &self.bn, BN_EPS, BN_MOMENTUM)).flatten();
        synced.unwrap_or_else(|| y.apply_t(&self.bn, train)).relu()
    }
}

/// Shared patch embedding: Conv2d(C, E, kernel = stride = patch) (or a conv
/// stem and a 1x1 Conv2d to E), flattened row-major to tokens, class token
/// (if the config has one) prepended, position embedding added.
#[derive(Debug)]
pub(crate) struct PatchEmbed {
    stem: Vec<StemStage>,
    proj: nn::Conv2D,
    cls_token: Option<Tensor>,
    pos_embed: Tensor,
    embed_dim: i64,
    /// `train.channels_last`: the convolutions see NHWC tensors.
    channels_last: bool,
}

impl PatchEmbed {
    /// `cls_init`/`pos_init`: the variant's initialisers.
    pub(crate) fn new(p: &nn::Path, cfg: &ViTConfig, cls_init: nn::Init, pos_init: nn::Init) -> Self {
        let e = cfg.embed_dim as i64;
        let (mut stem, mut channels) = (Vec::new(), cfg.in_channels as i64);
        for (i, (out, stride)) in cfg.stem_layers().into_iter().enumerate() {
            stem.push(StemStage::new(p / "patch_embed" / "stem" / i, channels, out as i64, stride as i64));
            channels = out as i64;
        }
        // After a conv stem the image is already on the patch grid: a 1x1 projection.
        let k = if stem.is_empty() { cfg.patch_size as i64 } else { 1 };
        let conv = nn::ConvConfig { stride: k, ..Default::default() };
        let proj = nn::conv2d(&(p / "patch_embed" / "proj"), channels, e, k, conv);
        let cls_token = cfg.class_token.then(|| p.var("cls_token", &[1, 1, e], cls_init));
        let pos_embed = p.var("pos_embed", &[1, cfg.num_tokens() as i64, e], pos_init);
        Self { stem, proj, cls_token, pos_embed, embed_dim: e, channels_last: cfg.train.channels_last }
    }

    /// [B, C, H, W] -> [B, L, E]
    pub(crate) fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        let b = xs.size()[0];
        let mut x = if self.channels_last {
            // The layout propagates: every convolution and BatchNorm after this one stays NHWC.
            crate::shim::channels_last(xs).unwrap_or_else(|e| {
                log::warn!("{e}; running the convolutions in the default layout");
                xs.shallow_clone()
            })
        } else {
            xs.shallow_clone()
        };
        for stage in &self.stem {
            x = stage.forward_t(&x, train); // [B, C_i, H / s_0..s_i, W / s_0..s_i]
        }
        let patches = x.apply(&self.proj).flatten(2, -1).transpose(1, 2); // [B, N, E]
        let Some(cls_token) = &self.cls_token else { return patches + &self.pos_embed };
        let cls = cls_token.expand([b, 1, self.embed_dim], false); // [B, 1, E]
        Tensor::cat(&[cls, patches], 1) + &self.pos_embed
    }
}

/// Number of scalar parameters in a VarStore.
pub fn parameter_count(vs: &nn::VarStore) -> i64 {
    vs.trainable_variables().iter().map(|t| t.numel() as i64).sum()
}
