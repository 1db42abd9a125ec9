//! The fused attention kernel (`scaled_dot_product_attention`) computes what the
//! explicit matmul-softmax-matmul computes: same outputs and same gradients within
//! 1e-5 (relative to the largest element, for gradients that are large sums), alone and inside whole standard networks (plain and locality attention).
//! Its own binary, since the kernel choice is process-wide.

mod common;

use common::{random_input, random_model, seeded_rng, standard, to_vec};
use tch::{nn::ModuleT, Device, Kind, Tensor};
use vit::config::Pooling;
use vit_train::model::{explicit_attention, fused_attention, set_fused_attention};

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f64 {
    (a - b).abs().max().double_value(&[])
}

/// Output and q/k/v/scale gradients of one attention form on seeded [2, 3, 17, 8] inputs.
fn run_form(form: fn(&Tensor, &Tensor, &Tensor, Option<&Tensor>, f64, bool) -> Tensor, locality: bool) -> Vec<Tensor> {
    let _rng = seeded_rng(7);
    let opts = (Kind::Float, Device::Cpu);
    let leaf = |shape: &[i64]| Tensor::randn(shape, opts).set_requires_grad(true);
    let (q, k, v) = (leaf(&[2, 3, 17, 8]), leaf(&[2, 3, 17, 8]), leaf(&[2, 3, 17, 8]));
    let scale = (Tensor::rand([3], opts) + 0.1).set_requires_grad(true);
    let out = form(&q, &k, &v, locality.then_some(&scale), 0.0, true);
    // A fixed random weighting, so every output element's gradient matters.
    let weights = Tensor::randn(out.size(), opts);
    (&out * weights).sum(Kind::Float).backward();
    let mut all = vec![out.detach(), q.grad(), k.grad(), v.grad()];
    if locality {
        all.push(scale.grad());
    }
    all
}

#[test]
fn fused_and_explicit_attention_agree_in_values_and_gradients() {
    for locality in [false, true] {
        let (a, b) = (run_form(explicit_attention, locality), run_form(fused_attention, locality));
        for (i, (x, y)) in a.iter().zip(&b).enumerate() {
            // Relative to the tensor's size: dscale sums thousands of products.
            let (d, size) = (max_abs_diff(x, y), x.abs().max().double_value(&[]).max(1.0));
            assert!(d < 1e-5 * size, "locality {locality}, tensor {i} (out, dq, dk, dv, dscale): |diff| {d} of {size}");
        }
    }
}

#[test]
fn whole_networks_give_the_same_logits_with_either_kernel() {
    let mut plain = standard(32, 8, 3, 2, 2, Pooling::Cls);
    plain.qkv_bias = true;
    let mut locality = standard(32, 8, 3, 3, 3, Pooling::Mean);
    locality.locality_attention = true;
    for cfg in [plain, locality] {
        let (_vs, model) = random_model(&cfg, 3);
        let x = random_input(&cfg, 5, 4);
        set_fused_attention(false);
        let explicit = model.forward_t(&x, false);
        set_fused_attention(true);
        let fused = model.forward_t(&x, false);
        set_fused_attention(false);
        let (a, b) = (to_vec(&explicit), to_vec(&fused));
        let d = a.iter().zip(&b).map(|(x, y)| (x - y).abs()).fold(0.0f32, f32::max);
        assert!(d < 1e-5, "locality {}: logits differ by {d}", cfg.locality_attention);
    }
}
