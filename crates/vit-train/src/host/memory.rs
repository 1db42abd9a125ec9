//! Will training a config fit in memory? libtorch answers an impossible
//! allocation with a C++ exception that tch turns into a panic, after minutes
//! of decoding data, and an absurd config (`embed_dim = 100000`, `depth =
//! 100000`, `image_size = 70000`) asks for hundreds of GB. So `fit` estimates
//! the memory from the config alone, before loading anything, and refuses with
//! the estimate and the fix when the device cannot hold it; and whatever still
//! fails to allocate while building the model becomes an error, not a panic.
//!
//! The estimate is deliberately simple (f32 everywhere, counted per value):
//! - state: the parameters times 5 (weights, gradients, two Adam moments and
//!   the optimiser's update buffer), plus one more copy with a weight average;
//! - activations kept for the backward pass, per image: per block
//!   [`ACTIVATION_FACTOR`] values per token and embedding channel, plus the
//!   MLP's hidden layer twice (before and after the activation) and three
//!   `heads x tokens x tokens` attention maps (scores, softmax, gradient);
//!   per conv-stem stage three maps (convolution, BatchNorm, ReLU); the input
//!   twice; times the batch size.

use std::panic::{catch_unwind, AssertUnwindSafe};

use tch::Device;
use vit::config::Stem;
use vit::{Variant, ViTConfig};

/// Values per token and embedding channel that one block keeps for the
/// backward pass, besides the MLP hidden layer and the attention maps: the two
/// LayerNorm outputs and their inputs, q, k and v, the attention output, its
/// projection, the MLP output and the two residual sums (about 11; 12 leaves
/// room for dropout and drop-path masks).
pub const ACTIVATION_FACTOR: f64 = 12.0;

/// Bytes of one f32 value.
const F32: f64 = 4.0;
/// Bytes in a GiB.
const GIB: f64 = (1u64 << 30) as f64;

/// Training would not fit, or building the model failed to allocate.
#[derive(Debug, thiserror::Error)]
pub enum MemoryError {
    /// The estimate exceeds what the device has.
    #[error(
        "training this config needs about {:.1} GiB ({} parameters: {:.1} GiB for weights, gradients and optimiser \
         state{}; activations for a batch of {}: {:.1} GiB) but the {device} has {:.1} GiB available; \
         make embed_dim, depth, mlp_ratio or image_size smaller (or patch_size larger), or lower --batch-size",
        .estimate.total() / GIB,
        .estimate.parameters,
        .estimate.state_bytes / GIB,
        if .estimate.weight_average { " and the weight average" } else { "" },
        .estimate.batch_size,
        .estimate.activation_bytes / GIB,
        *.available as f64 / GIB
    )]
    TooLarge {
        /// What training needs.
        estimate: MemoryEstimate,
        /// The device, in words.
        device: String,
        /// Bytes it has available.
        available: u64,
    },
    /// An allocation failed while building the model or optimiser.
    #[error("cannot allocate the {what} of this config: {message}; make the model smaller")]
    Allocation {
        /// What was being built.
        what: &'static str,
        /// libtorch's message.
        message: String,
    },
}

/// The memory training a config needs, by part.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MemoryEstimate {
    /// Parameters of the network (trainable and BatchNorm statistics).
    pub parameters: f64,
    /// Weights, gradients, optimiser state and weight average, in bytes.
    pub state_bytes: f64,
    /// Activations of one training batch, in bytes.
    pub activation_bytes: f64,
    /// Batch size the activations are for.
    pub batch_size: usize,
    /// Whether a weight average is kept.
    pub weight_average: bool,
}

impl MemoryEstimate {
    /// Everything, in bytes.
    pub fn total(&self) -> f64 {
        self.state_bytes + self.activation_bytes
    }
}

/// Estimates the memory of training `cfg` (a `num_classes` of 0 counts as 2).
pub fn estimate(cfg: &ViTConfig) -> MemoryEstimate {
    let f = |v: usize| v as f64;
    let (e, tokens, heads) = (f(cfg.embed_dim), f(cfg.num_tokens()), f(cfg.num_heads));
    let (side, channels, classes) = (f(cfg.image_size), f(cfg.in_channels), f(cfg.num_classes.max(2)));
    let hidden_per_token = match cfg.variant {
        Variant::Standard => cfg.mlp_ratio * e,
        Variant::Dlstudio => 2.0 * e, // Linear(L*E, 2*L*E)
    };

    // Patch embedding (or conv stem + 1x1 projection) and its activations per image.
    let (mut params, mut activations) = (0.0, 2.0 * channels * side * side);
    match cfg.stem {
        Stem::Patch => params += channels * f(cfg.patch_size).powi(2) * e + e,
        Stem::Conv => {
            let (mut cin, mut s) = (channels, side);
            for (cout, stride) in cfg.stem_layers() {
                s = (s / f(stride)).ceil();
                params += 9.0 * cin * f(cout) + 4.0 * f(cout);
                activations += 3.0 * f(cout) * s * s;
                cin = f(cout);
            }
            params += cin * e + e;
        }
    }
    params += e + tokens * e; // class token, position embedding
    let block_params = match cfg.variant {
        // LayerNorms, qkv, projection, MLP, locality temperature.
        Variant::Standard => {
            let qkv_bias = if cfg.qkv_bias { 3.0 * e } else { 0.0 };
            let temperature = if cfg.locality_attention { heads } else { 0.0 };
            4.0 * e
                + 3.0 * e * e
                + qkv_bias
                + e * e
                + e
                + 2.0 * e * hidden_per_token
                + hidden_per_token
                + e
                + temperature
        }
        // Per head WQ/WK/WV of (L*d)^2 each, LayerNorms, FFN Linear(L*E, 2*L*E) and back.
        Variant::Dlstudio => {
            let ld = tokens * e / heads;
            heads * 3.0 * (ld * ld + ld) + 4.0 * e + 2.0 * (tokens * e) * (2.0 * tokens * e) + 3.0 * tokens * e
        }
    };
    let final_norm = if cfg.variant == Variant::Standard { 2.0 * e } else { 0.0 };
    params += f(cfg.depth) * block_params + final_norm + e * classes + classes;
    activations +=
        f(cfg.depth) * (tokens * (ACTIVATION_FACTOR * e + 2.0 * hidden_per_token) + 3.0 * heads * tokens * tokens);

    let weight_average = cfg.train.ema_decay > 0.0;
    let copies = 5.0 + if weight_average { 1.0 } else { 0.0 };
    let batch_size = cfg.train.batch_size;
    MemoryEstimate {
        parameters: params,
        state_bytes: params * copies * F32,
        activation_bytes: activations * f(batch_size) * F32,
        batch_size,
        weight_average,
    }
}

/// Refuses `cfg` when its estimate exceeds the memory `device` has available;
/// returns the estimate otherwise. Only the CPU is checked (`MemAvailable` of
/// /proc/meminfo); on CUDA, or where that file is missing, nothing is refused.
pub fn check(cfg: &ViTConfig, device: Device) -> Result<MemoryEstimate, MemoryError> {
    let estimate = estimate(cfg);
    if device == Device::Cpu {
        if let Some(available) = cpu_available_bytes() {
            if estimate.total() > available as f64 {
                return Err(MemoryError::TooLarge { estimate, device: "CPU".into(), available });
            }
        }
    }
    Ok(estimate)
}

/// `MemAvailable` of /proc/meminfo, in bytes.
fn cpu_available_bytes() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Runs `build`, turning a panic (tch's answer to a failed allocation) into an
/// error naming `what`. The panic message is not printed: the error carries it.
pub fn catch_allocation<T>(what: &'static str, build: impl FnOnce() -> T) -> Result<T, MemoryError> {
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let result = catch_unwind(AssertUnwindSafe(build));
    std::panic::set_hook(hook);
    result.map_err(|payload| {
        let message = payload
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "allocation failed".into());
        // libtorch appends a C++ backtrace; its first line says what failed.
        let first = message.lines().find(|l| !l.trim().is_empty()).unwrap_or("allocation failed").trim().to_string();
        MemoryError::Allocation { what, message: first }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn small() -> ViTConfig {
        let mut cfg = ViTConfig { num_classes: 10, ..Default::default() };
        cfg.train.ema_decay = 0.0;
        cfg
    }

    #[test]
    fn parameter_count_matches_the_built_model() {
        for cfg in [
            small(),
            ViTConfig { locality_attention: true, ..small() },
            ViTConfig {
                stem: Stem::Conv,
                stem_channels: vec![8, 16, 16],
                stem_strides: vec![2, 1, 2],
                image_size: 32,
                patch_size: 4,
                ..small()
            },
            ViTConfig {
                variant: Variant::Dlstudio,
                pooling: vit::config::Pooling::Mean,
                image_size: 32,
                patch_size: 8,
                embed_dim: 16,
                num_heads: 2,
                ..small()
            },
        ] {
            cfg.validate().unwrap();
            let vs = tch::nn::VarStore::new(Device::Cpu);
            let _model = crate::model::ViT::new(&vs.root(), &cfg);
            let built: i64 = vs.variables().values().map(|t| t.numel() as i64).sum();
            assert_eq!(estimate(&cfg).parameters as i64, built, "{:?} {:?}", cfg.variant, cfg.stem);
        }
    }

    #[test]
    fn absurd_sizes_are_refused_with_the_estimate_and_the_fix() {
        for (key, cfg) in [
            ("embed_dim", ViTConfig { embed_dim: 100_000, num_heads: 4, ..small() }),
            ("depth", ViTConfig { depth: 100_000, ..small() }),
            ("image_size", ViTConfig { image_size: 70_000, patch_size: 7, ..small() }),
        ] {
            let err = check(&cfg, Device::Cpu).unwrap_err().to_string();
            assert!(err.contains("GiB") && err.contains("available") && err.contains("--batch-size"), "{key}: {err}");
        }
        let ok = check(&small(), Device::Cpu).unwrap();
        assert!(ok.total() < 1e9, "{ok:?}");
    }

    #[test]
    fn every_preset_needs_a_few_gib_at_most() {
        let models = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models");
        for entry in std::fs::read_dir(models).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "toml") {
                let est = estimate(&ViTConfig::from_toml_file(&path).unwrap());
                eprintln!("{}: {:.2} GiB ({est:?})", path.display(), est.total() / GIB);
                assert!(est.total() < 4.0 * GIB, "{}: {est:?}", path.display());
            }
        }
    }

    #[test]
    fn a_failed_allocation_is_an_error() {
        let err = catch_allocation("model", || -> () { panic!("DefaultCPUAllocator: not enough memory\nbacktrace") })
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "cannot allocate the model of this config: DefaultCPUAllocator: not enough memory; make the model smaller"
        );
    }
}
