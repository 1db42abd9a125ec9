//! `TrainConfig`: the training recipe part of a [`super::ViTConfig`] (the
//! `[train]` table of a preset), with its own validation. Every field can be
//! overridden on `vit-train fit`'s command line.

use serde::{Deserialize, Serialize};

use super::{invalid, require_finite, ConfigError};

/// Optimiser family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Optimizer {
    /// Adam with L2 weight decay added to the gradient (PyTorch `Adam`).
    #[default]
    Adam,
    /// AdamW with decoupled weight decay (PyTorch `AdamW`); no decay on norms, biases, tokens.
    Adamw,
}

/// Arithmetic of the forward and backward passes. Master weights, optimiser
/// state, checkpoints and exports are float32 in every mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    /// Everything in float32.
    #[default]
    Fp32,
    /// Autocast to bfloat16 (CPU and CUDA): matrix products and convolutions in
    /// bf16, reductions and the loss in f32; no loss scaling needed.
    Bf16,
    /// Autocast to float16 with a dynamic loss scaler (CUDA only).
    Fp16,
}

impl std::str::FromStr for Precision {
    type Err = String;

    /// `fp32`, `bf16` or `fp16` (the config file's spelling).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "fp32" => Ok(Self::Fp32),
            "bf16" => Ok(Self::Bf16),
            "fp16" => Ok(Self::Fp16),
            _ => Err(format!("unknown precision `{s}` (fp32, bf16 or fp16)")),
        }
    }
}

/// Training hyper-parameters; every field can be overridden on the command line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrainConfig {
    /// Passes over the training set.
    pub epochs: usize,
    /// Images per optimisation step.
    pub batch_size: usize,
    /// Peak learning rate.
    pub lr: f64,
    /// Optimiser family.
    pub optimizer: Optimizer,
    /// Adam betas.
    pub betas: (f64, f64),
    /// Adam epsilon.
    pub eps: f64,
    /// Weight decay (L2 for adam, decoupled for adamw).
    pub weight_decay: f64,
    /// Linear warm-up length in epochs (0: none).
    pub warmup_epochs: f64,
    /// Cosine decay of the learning rate to 0 after warm-up.
    pub cosine: bool,
    /// Clip the global gradient norm to this value (0: no clipping).
    pub grad_clip: f64,
    /// Label smoothing for the cross-entropy (0: none).
    pub label_smoothing: f64,
    /// Random horizontal flips of training images.
    pub hflip: bool,
    /// Random crop after zero padding by this many pixels (0: none).
    pub crop_padding: usize,
    /// Random resized crop: range of the crop's area as a fraction of the image
    /// (aspect ratio in [3/4, 4/3]), resized back bilinearly; `[1, 1]` disables it.
    pub crop_scale: (f64, f64),
    /// Take the random resized crop (area in `crop_scale`, aspect in [3/4, 4/3],
    /// torchvision's `RandomResizedCrop`) from the original image file and
    /// resize it straight to `image_size` in one antialiased bilinear pass,
    /// instead of cropping the image already resized to `image_size`. Needs
    /// streamed data (`--data-mode stream` or `auto`): memory mode keeps no
    /// originals. Written to `config.toml` only when set.
    #[serde(skip_serializing_if = "is_false")]
    pub crop_from_original: bool,
    /// Colour jitter strength: brightness, contrast and saturation factors are
    /// drawn from [1 - s, 1 + s] (0: none).
    pub color_jitter: f64,
    /// Mixup with Beta(alpha, alpha) mixing weights (0: none).
    pub mixup_alpha: f64,
    /// CutMix with Beta(alpha, alpha) area fractions (0: none). With mixup too,
    /// each batch uses one of the two, chosen with equal odds.
    pub cutmix_alpha: f64,
    /// Probability of erasing one random rectangle of a training image with noise.
    pub random_erasing: f64,
    /// Exponential moving average of the weights with this decay (0: none). When
    /// set, evaluation, checkpoints and export use the averaged weights.
    pub ema_decay: f64,
    /// Evaluate on the validation split every this many epochs, and always after
    /// the last one; `best.safetensors` is the best of the evaluated epochs.
    pub eval_every: usize,
    /// Log the training loss every this many iterations.
    pub log_every: usize,
    /// Seed for weights, shuffling, split and dropout.
    pub seed: u64,
    /// Update all weights with one fused Adam/AdamW kernel (libtorch's
    /// `_fused_adam[w]_`) instead of the step written out per tensor: same maths,
    /// fewer kernels, results equal to ~1e-7 but not to the bit. Written to
    /// `config.toml` only when set, so existing runs and exports keep their bytes.
    #[serde(skip_serializing_if = "is_false")]
    pub fused_optimizer: bool,
    /// Attention through libtorch's `scaled_dot_product_attention` (standard
    /// variant) instead of the explicit softmax(QK^T)V: same maths to ~1e-6, the
    /// exported graph is unchanged. Written to `config.toml` only when set.
    #[serde(skip_serializing_if = "is_false")]
    pub fused_attention: bool,
    /// Run the convolutions (conv stem, patchify) on channels-last (NHWC) tensors:
    /// the same maths through oneDNN's / cuDNN's NHWC kernels, faster on CPUs
    /// and tensor cores; results equal to ~1e-6, not to the bit. Written to
    /// `config.toml` only when set.
    #[serde(skip_serializing_if = "is_false")]
    pub channels_last: bool,
    /// Capture the training step as a CUDA graph and replay it for every full
    /// batch (`fit --cuda-graph`; see vit-train's `train::graph`): far fewer
    /// kernel launches on a GPU. Where it cannot be used (the CPU, fp16, mixup,
    /// CutMix, several ranks) training is eager, with one warning. Written to
    /// `config.toml` only when set.
    #[serde(skip_serializing_if = "is_false")]
    pub cuda_graph: bool,
    /// Data-parallel only: BatchNorm layers normalise with the statistics of the
    /// whole global batch, gathered from every rank (SyncBatchNorm), so ranks
    /// train as one process would. `false` uses each rank's own batch, as
    /// DistributedDataParallel without `SyncBatchNorm` does: no collective per
    /// BatchNorm layer, but a different (noisier) training. Written to
    /// `config.toml` only when false.
    #[serde(skip_serializing_if = "is_true")]
    pub sync_batch_norm: bool,
    /// Mixed precision of training (see [`Precision`]). Written to `config.toml`
    /// only when not fp32.
    #[serde(skip_serializing_if = "is_fp32")]
    pub precision: Precision,
}

fn is_fp32(p: &Precision) -> bool {
    *p == Precision::Fp32
}

fn is_false(b: &bool) -> bool {
    !*b
}

fn is_true(b: &bool) -> bool {
    *b
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self {
            epochs: 10,
            batch_size: 16,
            lr: 1e-4,
            optimizer: Optimizer::Adam,
            betas: (0.9, 0.999),
            eps: 1e-8,
            weight_decay: 0.0,
            warmup_epochs: 0.0,
            cosine: false,
            grad_clip: 0.0,
            label_smoothing: 0.0,
            hflip: false,
            crop_padding: 0,
            crop_scale: (1.0, 1.0),
            crop_from_original: false,
            color_jitter: 0.0,
            mixup_alpha: 0.0,
            cutmix_alpha: 0.0,
            random_erasing: 0.0,
            ema_decay: 0.0,
            eval_every: 1,
            log_every: 100,
            seed: 0,
            fused_optimizer: false,
            fused_attention: false,
            channels_last: false,
            cuda_graph: false,
            sync_batch_norm: true,
            precision: Precision::Fp32,
        }
    }
}

impl TrainConfig {
    /// Range checks of the recipe; errors name the field as `train.<field>`.
    /// Every float must be finite.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let t = self;
        require_finite(&[
            ("train.lr", t.lr),
            ("train.betas", t.betas.0),
            ("train.betas", t.betas.1),
            ("train.eps", t.eps),
            ("train.weight_decay", t.weight_decay),
            ("train.warmup_epochs", t.warmup_epochs),
            ("train.grad_clip", t.grad_clip),
            ("train.label_smoothing", t.label_smoothing),
            ("train.crop_scale", t.crop_scale.0),
            ("train.crop_scale", t.crop_scale.1),
            ("train.color_jitter", t.color_jitter),
            ("train.mixup_alpha", t.mixup_alpha),
            ("train.cutmix_alpha", t.cutmix_alpha),
            ("train.random_erasing", t.random_erasing),
            ("train.ema_decay", t.ema_decay),
        ])?;
        if t.epochs == 0 {
            return Err(invalid("train.epochs", 0, "must be at least 1"));
        }
        if t.batch_size == 0 {
            return Err(invalid("train.batch_size", 0, "must be at least 1"));
        }
        if !(t.lr > 0.0 && t.lr.is_finite()) {
            return Err(invalid("train.lr", t.lr, "must be a positive number"));
        }
        if !(0.0..1.0).contains(&t.betas.0) || !(0.0..1.0).contains(&t.betas.1) {
            return Err(invalid("train.betas", format!("{:?}", t.betas), "each beta must be in [0, 1)"));
        }
        if !(0.0..1.0).contains(&t.label_smoothing) {
            return Err(invalid("train.label_smoothing", t.label_smoothing, "must be in [0, 1)"));
        }
        if t.log_every == 0 {
            return Err(invalid("train.log_every", 0, "must be at least 1"));
        }
        if t.eval_every == 0 {
            return Err(invalid("train.eval_every", 0, "must be at least 1 (1: every epoch)"));
        }
        let (lo, hi) = t.crop_scale;
        if !(lo > 0.0 && lo <= hi && hi <= 1.0) {
            return Err(invalid(
                "train.crop_scale",
                format!("{:?}", t.crop_scale),
                "needs 0 < min <= max <= 1 ([1, 1] disables)",
            ));
        }
        for (field, v) in [
            ("train.color_jitter", t.color_jitter),
            ("train.mixup_alpha", t.mixup_alpha),
            ("train.cutmix_alpha", t.cutmix_alpha),
        ] {
            if !(v >= 0.0 && v.is_finite()) {
                return Err(invalid(field, v, "must be 0 (off) or a positive number"));
            }
        }
        if !(0.0..=1.0).contains(&t.random_erasing) {
            return Err(invalid("train.random_erasing", t.random_erasing, "is a probability, in [0, 1]"));
        }
        if !(0.0..1.0).contains(&t.ema_decay) {
            return Err(invalid("train.ema_decay", t.ema_decay, "must be in [0, 1) (0 disables), e.g. 0.999"));
        }
        Ok(())
    }
}
