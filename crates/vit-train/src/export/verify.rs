//! Runs an exported ONNX file with tract (pure-Rust, CPU) and compares its
//! logits with tch's, so every export proves it computes what was trained.

use std::path::Path;

use anyhow::{Context, Result};
use tract_onnx::prelude::*;

/// Logits of `pixels` ([batch, c, h, w], row-major) through the ONNX file at `path`.
pub fn tract_logits(path: &Path, pixels: &[f32], shape: [usize; 4]) -> Result<Vec<f32>> {
    let model = tract_onnx::onnx()
        .model_for_path(path)
        .with_context(|| format!("tract cannot load {}", path.display()))?
        .with_input_fact(0, f32::fact(shape).into())?
        .into_optimized()
        .with_context(|| format!("tract cannot optimise {}", path.display()))?
        .into_runnable()?;
    let input = tract_ndarray::Array4::from_shape_vec(shape, pixels.to_vec())?.into_tensor();
    let outputs = model.run(tvec!(input.into()))?;
    let view = outputs[0].to_plain_array_view::<f32>()?;
    Ok(view.iter().copied().collect())
}

/// Result of an element-wise comparison.
#[derive(Debug, Clone, PartialEq)]
pub struct Comparison {
    /// Largest |actual - expected|.
    pub max_abs_diff: f32,
    /// Elements outside `atol + rtol * |expected|` (as `torch.allclose`).
    pub mismatches: usize,
    /// First few bad indices with (actual, expected).
    pub first_bad: Vec<(usize, f32, f32)>,
}

impl Comparison {
    /// True when nothing is out of tolerance.
    pub fn ok(&self) -> bool {
        self.mismatches == 0
    }
}

impl std::fmt::Display for Comparison {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "max |diff| {:.3e}, {} mismatches", self.max_abs_diff, self.mismatches)?;
        if !self.first_bad.is_empty() {
            write!(f, ", first (index, actual, expected): {:?}", self.first_bad)?;
        }
        Ok(())
    }
}

/// Compares like `torch.allclose(actual, expected, rtol, atol)`; lengths must agree.
pub fn compare(actual: &[f32], expected: &[f32], atol: f32, rtol: f32) -> Comparison {
    let mut cmp = Comparison { max_abs_diff: 0.0, mismatches: 0, first_bad: Vec::new() };
    if actual.len() != expected.len() {
        cmp.mismatches = actual.len().max(expected.len());
        cmp.max_abs_diff = f32::INFINITY;
        return cmp;
    }
    for (i, (&a, &e)) in actual.iter().zip(expected).enumerate() {
        let diff = (a - e).abs();
        cmp.max_abs_diff = cmp.max_abs_diff.max(if diff.is_nan() { f32::INFINITY } else { diff });
        // A NaN difference is never within tolerance.
        let within = diff <= atol + rtol * e.abs();
        if !within {
            cmp.mismatches += 1;
            if cmp.first_bad.len() < 5 {
                cmp.first_bad.push((i, a, e));
            }
        }
    }
    cmp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compare_counts_and_reports() {
        let c = compare(&[1.0, 2.0, 3.5], &[1.0, 2.00001, 3.0], 1e-4, 1e-4);
        assert_eq!(c.mismatches, 1);
        assert_eq!(c.first_bad, vec![(2, 3.5, 3.0)]);
        assert!((c.max_abs_diff - 0.5).abs() < 1e-6);
        assert!(!compare(&[f32::NAN], &[0.0], 1.0, 1.0).ok());
    }
}
