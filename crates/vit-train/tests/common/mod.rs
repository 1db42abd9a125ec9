//! Helpers shared by the vit-train integration tests.
#![allow(dead_code)] // each test binary uses a different subset

pub mod cli;

use std::path::PathBuf;

use tch::{nn, Device, Kind, Tensor};
use vit::config::{Attention, Pooling, Variant, ViTConfig};
use vit_train::model::ViT;

/// Repository root.
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The toolchain venv's python (`$VIT_VENV`, else scripts/env.sh's default); the
/// tests that need it fail (never skip) without it.
pub fn venv_python() -> PathBuf {
    let venv = std::env::var_os("VIT_VENV").map(PathBuf::from).unwrap_or_else(|| {
        PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache/vit-toolchain/venv")
    });
    let python = venv.join("bin/python");
    assert!(python.exists(), "{} not found: run scripts/setup.sh (or set VIT_VENV)", python.display());
    python
}

/// `../shared/data/coco5` beside the repository (or `$VIT_COCO5`); the tests need it.
pub fn coco5() -> PathBuf {
    let dir =
        std::env::var_os("VIT_COCO5").map(PathBuf::from).unwrap_or_else(|| repo_root().join("../shared/data/coco5"));
    assert!(dir.join("train").is_dir(), "COCO-5 data not found at {} (set VIT_COCO5)", dir.display());
    dir
}

/// A small standard config.
pub fn standard(
    image: usize,
    patch: usize,
    channels: usize,
    depth: usize,
    heads: usize,
    pooling: Pooling,
) -> ViTConfig {
    ViTConfig {
        variant: Variant::Standard,
        image_size: image,
        patch_size: patch,
        in_channels: channels,
        num_classes: 5,
        embed_dim: 16 * heads.max(1),
        depth,
        num_heads: heads,
        mlp_ratio: 2.0,
        pooling,
        ..Default::default()
    }
}

/// A small dlstudio config.
pub fn dlstudio(image: usize, patch: usize, heads: usize, attention: Attention) -> ViTConfig {
    ViTConfig {
        variant: Variant::Dlstudio,
        attention,
        image_size: image,
        patch_size: patch,
        in_channels: 3,
        num_classes: 4,
        embed_dim: 8 * heads,
        depth: 2,
        num_heads: heads,
        pooling: Pooling::Mean,
        layer_norm_eps: 1e-5,
        ..Default::default()
    }
}

/// Seeds libtorch's global generator and holds it until the guard drops: the tests
/// of one binary run on parallel threads, and without the lock one test's draws
/// would interleave with another's, so seeded models would differ from run to run.
pub fn seeded_rng(seed: i64) -> std::sync::MutexGuard<'static, ()> {
    static RNG: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let guard = RNG.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    tch::manual_seed(seed);
    guard
}

/// A model whose every variable is perturbed by seeded noise (so LayerNorm
/// affine terms, biases and tokens all matter), on the CPU.
pub fn random_model(cfg: &ViTConfig, seed: i64) -> (nn::VarStore, ViT) {
    let _rng = seeded_rng(seed);
    let vs = nn::VarStore::new(Device::Cpu);
    let model = ViT::new(&vs.root(), cfg);
    // Sorted by name: `variables()` is a HashMap, whose order differs between two
    // VarStores, and each variable must draw the same noise in every call.
    let mut vars: Vec<_> = vs.variables().into_iter().collect();
    vars.sort_by(|a, b| a.0.cmp(&b.0));
    tch::no_grad(|| {
        for (_, mut v) in vars {
            let noise = Tensor::randn(v.size(), (Kind::Float, Device::Cpu)) * 0.2;
            let _ = v.g_add_(&noise);
        }
    });
    (vs, model)
}

/// Seeded inputs [n, c, s, s] in [-1, 1].
pub fn random_input(cfg: &ViTConfig, n: usize, seed: i64) -> Tensor {
    let _rng = seeded_rng(seed);
    let s = cfg.image_size as i64;
    Tensor::rand([n as i64, cfg.in_channels as i64, s, s], (Kind::Float, Device::Cpu)) * 2.0 - 1.0
}

/// Flattened f32 copy.
pub fn to_vec(t: &Tensor) -> Vec<f32> {
    Vec::<f32>::try_from(t.flatten(0, -1).to_kind(Kind::Float)).expect("f32 tensor")
}
