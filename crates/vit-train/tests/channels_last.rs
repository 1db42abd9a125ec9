//! `train.channels_last` changes only the memory layout the convolutions see:
//! a conv-stem network and a patchify network give the same logits and the same
//! gradients for every weight (within 1e-5 of the largest value) in training
//! mode, BatchNorm statistics included, and the layout really is NHWC.

mod common;

use common::{random_input, random_model, standard};
use tch::{nn::ModuleT, Kind, Tensor};
use vit::config::{Pooling, Stem};
use vit::ViTConfig;

/// Logits, then every weight's gradient (sorted by name), of one training-mode
/// forward and backward pass under a fixed random weighting of the logits.
fn logits_and_grads(cfg: &ViTConfig) -> Vec<(String, Tensor)> {
    let (vs, model) = random_model(cfg, 3);
    let x = random_input(cfg, 6, 4);
    let logits = model.forward_t(&x, true);
    let weights = random_input(cfg, 1, 5).flatten(0, -1).narrow(0, 0, logits.numel() as i64).view_as(&logits);
    (&logits * weights).sum(Kind::Float).backward();
    let mut vars: Vec<_> = vs.variables().into_iter().filter(|(_, v)| v.requires_grad()).collect();
    vars.sort_by(|a, b| a.0.cmp(&b.0));
    let mut out = vec![("logits".to_string(), logits.detach())];
    out.extend(vars.into_iter().map(|(name, v)| (name, v.grad())));
    out
}

#[test]
fn channels_last_changes_the_layout_not_the_numbers() {
    let mut stem = standard(32, 8, 3, 2, 2, Pooling::Cls);
    stem.stem = Stem::Conv;
    stem.stem_channels = vec![8, 16, 16];
    stem.stem_strides = vec![2, 2, 2];
    let patch = standard(32, 8, 3, 2, 2, Pooling::Mean);
    for cfg in [stem, patch] {
        let mut nhwc = cfg.clone();
        nhwc.train.channels_last = true;
        let (a, b) = (logits_and_grads(&cfg), logits_and_grads(&nhwc));
        assert_eq!(a.len(), b.len());
        for ((name, x), (_, y)) in a.iter().zip(&b) {
            let d = (x - y).abs().max().double_value(&[]);
            let size = x.abs().max().double_value(&[]).max(1e-3);
            assert!(d <= 1e-5 * size.max(1.0), "stem {:?}, {name}: |diff| {d} of {size}", cfg.stem);
        }
    }
}

#[test]
fn the_copy_is_nhwc_and_keeps_values() {
    let x = Tensor::arange(2 * 3 * 4 * 5, (Kind::Float, tch::Device::Cpu)).view([2, 3, 4, 5]);
    let y = vit_train::shim::channels_last(&x).unwrap();
    assert_eq!(y.size(), vec![2, 3, 4, 5]);
    assert_eq!(y.stride(), vec![60, 1, 15, 3], "strides of an NHWC tensor");
    assert_eq!((&x - &y).abs().max().double_value(&[]), 0.0);
}
