//! What classification returns: [`Prediction`] (the top classes of one image)
//! made of [`Scored`] classes, and the arithmetic from logits to them
//! ([`softmax`], top-k). Serialisable, so that a program can print or store
//! predictions as they are.

use std::path::PathBuf;

/// One class and its probability.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Scored {
    /// Class index (logit position).
    pub index: usize,
    /// Class name.
    pub label: String,
    /// Softmax probability.
    pub probability: f32,
}

/// The top classes of one image, most probable first.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Prediction {
    /// The image file, when classified from a file.
    pub path: Option<PathBuf>,
    /// The `top_k` most probable classes, sorted by descending probability
    /// (ties: lower index first, so `top[0]` is the first argmax of the logits).
    pub top: Vec<Scored>,
}

/// Softmax in f64 (max subtracted).
pub fn softmax(logits: &[f32]) -> Vec<f64> {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    let exps: Vec<f64> = logits.iter().map(|&l| (l as f64 - max).exp()).collect();
    let sum: f64 = exps.iter().sum();
    exps.into_iter().map(|e| e / sum).collect()
}

/// The `k` most probable classes of one row of logits (`labels[i]` names logit `i`).
pub(super) fn top_k(logits: &[f32], labels: &[String], k: usize) -> Vec<Scored> {
    let probs = softmax(logits);
    let mut order: Vec<usize> = (0..probs.len()).collect();
    // Stable: equal probabilities keep index order.
    order.sort_by(|&a, &b| probs[b].partial_cmp(&probs[a]).unwrap_or(std::cmp::Ordering::Equal));
    order
        .into_iter()
        .take(k.min(probs.len()))
        .map(|i| Scored { index: i, label: labels[i].clone(), probability: probs[i] as f32 })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::argmax;

    #[test]
    fn softmax_sums_to_one_and_top_k_agrees_with_argmax() {
        let logits = [1.0, 3.0, 3.0, -1.0];
        let p = softmax(&logits);
        assert!((p.iter().sum::<f64>() - 1.0).abs() < 1e-12);
        assert_eq!(argmax(&logits), 1);
        assert_eq!(argmax(&[f32::NAN, 0.5]), 1);
        let labels: Vec<String> = ["a", "b", "c", "d"].map(String::from).to_vec();
        let top = top_k(&logits, &labels, 3);
        assert_eq!(top.iter().map(|s| s.index).collect::<Vec<_>>(), [1, 2, 0]);
        assert_eq!(top[0].label, "b");
        assert_eq!(top_k(&logits, &labels, 10).len(), 4);
    }
}
