//! Helpers shared by the root crate's integration tests.
#![allow(dead_code)] // each test binary uses a different subset
#![cfg(feature = "export")]

use vit::{NamedTensors, TensorData, ViTConfig};

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
