//! Helpers shared by the root crate's integration tests: seeded weights, small
//! random-weight ONNX models, test images and folders, and (feature `infer`)
//! opening those models with ONNX Runtime on the CPU.
#![allow(dead_code)] // each test binary uses a different subset
#![cfg(feature = "export")]

use std::path::{Path, PathBuf};

use prost::Message;
use vit::config::{Pooling, Variant};
use vit::onnx::proto::ModelProto;
use vit::{ModelMetadata, NamedTensors, TensorData, ViTConfig};

/// Seeded weights for every tensor the config's graph needs: `scale` * ~N(0, 1)
/// (BatchNorm running variances: 0.5 + |that|, as a variance must be positive).
pub fn random_weights(cfg: &ViTConfig, seed: u64, scale: f32) -> NamedTensors {
    let mut rng = Lcg(seed);
    vit::onnx::expected_tensors(cfg)
        .into_iter()
        .map(|(name, shape)| {
            let n = shape.iter().product();
            let variance = name.ends_with("running_var");
            let data = (0..n).map(|_| rng.normal() * scale).map(|v| if variance { 0.5 + v.abs() } else { v }).collect();
            (name, TensorData { shape, data })
        })
        .collect()
}

/// Deterministic pseudo-random numbers (64-bit LCG, Knuth's constants).
pub struct Lcg(pub u64);

impl Lcg {
    /// Uniform in [0, 1).
    pub fn uniform(&mut self) -> f32 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        ((self.0 >> 40) as f32) / (1u64 << 24) as f32
    }

    /// Roughly standard normal (Irwin–Hall with 4 terms, rescaled).
    pub fn normal(&mut self) -> f32 {
        let s: f32 = (0..4).map(|_| self.uniform()).sum();
        (s - 2.0) * (3.0f32).sqrt()
    }
}

// ---- small random-weight models and test images -------------------------------

/// Class names of the small test models.
pub const LABELS: [&str; 3] = ["a_red", "b_green", "c_blue"];

/// A small standard config: image 16, patch 4, embed 16, depth 1, 2 heads, 3 classes.
pub fn small(channels: usize) -> ViTConfig {
    ViTConfig {
        variant: Variant::Standard,
        image_size: 16,
        patch_size: 4,
        in_channels: channels,
        num_classes: 3,
        embed_dim: 16,
        depth: 1,
        num_heads: 2,
        mlp_ratio: 2.0,
        pooling: Pooling::Cls,
        ..Default::default()
    }
}

/// Metadata of a test model: `LABELS` (then `class{i}`), validation accuracy 0.5.
pub fn metadata(cfg: &ViTConfig) -> ModelMetadata {
    let labels = (0..cfg.num_classes).map(|i| LABELS.get(i).map_or(format!("class{i}"), |s| s.to_string())).collect();
    ModelMetadata { config: cfg.clone(), labels, val_accuracy: Some(0.5) }
}

/// The ONNX bytes of a random-weight model (weights seeded by `seed`, scale 0.3).
pub fn model_bytes(cfg: &ViTConfig, seed: u64) -> Vec<u8> {
    vit::onnx::export_to_bytes(&metadata(cfg), &random_weights(cfg, seed, 0.3)).expect("export")
}

/// Writes a random-weight model into `dir`; returns its path.
pub fn write_model(dir: &Path, name: &str, cfg: &ViTConfig, seed: u64) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, model_bytes(cfg, seed)).expect("write model");
    path
}

/// A deterministic RGB test image of `w` x `h`.
pub fn write_png(path: &Path, w: u32, h: u32, seed: u64) {
    let mut rng = Lcg(seed);
    let img = image::RgbImage::from_fn(w, h, |_, _| {
        image::Rgb([(rng.uniform() * 255.0) as u8, (rng.uniform() * 255.0) as u8, (rng.uniform() * 255.0) as u8])
    });
    img.save(path).expect("write png");
}

/// A deterministic grayscale test image of `w` x `h`.
pub fn write_gray_png(path: &Path, w: u32, h: u32, seed: u64) {
    let mut rng = Lcg(seed);
    let img = image::GrayImage::from_fn(w, h, |_, _| image::Luma([(rng.uniform() * 255.0) as u8]));
    img.save(path).expect("write png");
}

/// `root/<label>/*.png`, `n` per class.
pub fn image_folder(root: &Path, labels: &[&str], n: usize) {
    for (c, label) in labels.iter().enumerate() {
        std::fs::create_dir_all(root.join(label)).unwrap();
        for i in 0..n {
            write_png(&root.join(label).join(format!("{i}.png")), 16, 16, (c * 100 + i) as u64);
        }
    }
}

/// The same model without its metadata properties (a model not written by vit-train).
pub fn strip_metadata(bytes: &[u8]) -> Vec<u8> {
    let mut model = ModelProto::decode(bytes).expect("decode our own model");
    assert!(!model.metadata_props.is_empty());
    model.metadata_props.clear();
    model.encode_to_vec()
}

/// The same model with metadata property `key` set to `value`.
pub fn set_metadata(bytes: &[u8], key: &str, value: &str) -> Vec<u8> {
    let mut model = ModelProto::decode(bytes).expect("decode our own model");
    let prop =
        model.metadata_props.iter_mut().find(|p| p.key.as_deref() == Some(key)).expect("key written by the exporter");
    prop.value = Some(value.to_string());
    model.encode_to_vec()
}

// ---- opening them with ONNX Runtime ---------------------------------------------

/// Test models opened with ONNX Runtime on the CPU.
#[cfg(feature = "infer")]
pub mod infer {
    use std::path::Path;

    use vit::infer::{Classifier, ClassifierOptions, ClassifyOptions, Provider};

    /// Options that open a model on the CPU.
    pub fn cpu() -> ClassifierOptions {
        ClassifierOptions { provider: Provider::Cpu, ..Default::default() }
    }

    /// Classify options: the `k` most probable classes, `batch_size` images per batch.
    pub fn top(k: usize, batch_size: usize) -> ClassifyOptions {
        ClassifyOptions { top_k: k, batch_size }
    }

    /// Opens a model on the CPU, panicking with the error.
    pub fn open(path: &Path) -> Classifier {
        Classifier::open(path, &cpu()).unwrap_or_else(|e| panic!("cannot open {}: {e}", path.display()))
    }

    /// Logits of one file through the shared preprocessing, batch 1.
    pub fn file_logits(clf: &mut Classifier, path: &Path) -> Vec<f32> {
        let prep = clf.preprocessor().clone();
        let px = prep.load_file(path).expect("decode");
        clf.logits(&prep.normalize(&px), 1).expect("logits")
    }
}
