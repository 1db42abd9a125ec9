//! Forward shapes, parameter counts and the dlstudio variant's exact maths.

mod common;

use common::*;
use tch::{nn::ModuleT, Kind, Tensor};
use vit::config::{Attention, Pooling};
use vit::ViTConfig;
use vit_train::model::{dlstudio_attention, parameter_count};

#[test]
fn forward_shapes_for_several_configs() {
    let configs = [
        standard(28, 7, 1, 1, 1, Pooling::Cls),
        standard(32, 4, 3, 2, 2, Pooling::Mean),
        standard(64, 16, 3, 3, 4, Pooling::Cls),
        dlstudio(32, 8, 2, Attention::Matmul),
    ];
    for cfg in configs {
        let (_vs, model) = random_model(&cfg, 0);
        for batch in [1, 3] {
            let y = model.forward_t(&random_input(&cfg, batch, 1), false);
            assert_eq!(y.size(), vec![batch as i64, cfg.num_classes as i64], "{cfg:?}");
            assert!(bool::try_from(y.isfinite().all()).unwrap());
        }
    }
}

#[test]
fn state_dict_names_match_pytorch() {
    let (vs, _) = random_model(&standard(32, 8, 3, 2, 2, Pooling::Cls), 0);
    let vars = vs.variables();
    for name in ["patch_embed.proj.weight", "cls_token", "pos_embed", "blocks.1.attn.qkv.weight", "blocks.0.mlp.fc2.bias", "norm.weight", "head.bias"] {
        assert!(vars.contains_key(name), "missing {name}: {:?}", vars.keys());
    }
    let (vs, _) = random_model(&dlstudio(32, 8, 2, Attention::Matmul), 0);
    let vars = vs.variables();
    for name in [
        "encoder.basic_encoder_arr.0.self_attention_layer.attention_heads_arr.1.WQ.weight",
        "encoder.basic_encoder_arr.1.norm1.weight",
        "encoder.basic_encoder_arr.0.W1.weight",
        "encoder.basic_encoder_arr.0.W2.bias",
    ] {
        assert!(vars.contains_key(name), "missing {name}");
    }
}

#[test]
fn seed_hw9_preset_has_the_course_networks_parameter_count() {
    let mut cfg = ViTConfig::from_toml_file(&repo_root().join("models/seed-hw9.toml")).unwrap();
    cfg.num_classes = 5;
    let (vs, _) = random_model(&cfg, 0);
    assert_eq!(parameter_count(&vs), 13_085_445);
}

#[test]
fn matmul_and_einsum_forms_agree() {
    let cfg = dlstudio(32, 8, 2, Attention::Matmul);
    let (vs, m) = random_model(&cfg, 3);
    let einsum_cfg = ViTConfig { attention: Attention::Einsum, ..cfg.clone() };
    let (mut vs2, m2) = random_model(&einsum_cfg, 4);
    vs2.copy(&vs).unwrap();
    let x = random_input(&cfg, 5, 9);
    let (a, b) = (to_vec(&m.forward_t(&x, false)), to_vec(&m2.forward_t(&x, false)));
    for (p, q) in a.iter().zip(&b) {
        assert!((p - q).abs() <= 1e-5 + 1e-4 * q.abs(), "{p} vs {q}");
    }
}

#[test]
fn dlstudio_softmax_is_over_queries_and_scaled_after() {
    // L = 2, d = 2. S = Q K^T = [[1, 0], [0, 0]]; softmax over dim 1 (queries)
    // normalises each COLUMN: col 0 -> [e, 1] / (e + 1), col 1 -> [1/2, 1/2].
    let q = Tensor::from_slice(&[1.0f32, 0.0, 0.0, 1.0]).view([1, 2, 2]);
    let k = Tensor::from_slice(&[1.0f32, 0.0, 0.0, 0.0]).view([1, 2, 2]);
    let v = Tensor::from_slice(&[1.0f32, 2.0, 3.0, 4.0]).view([1, 2, 2]);
    let e = std::f32::consts::E;
    let a = [[e / (e + 1.0), 0.5], [1.0 / (e + 1.0), 0.5]];
    let vv = [[1.0, 2.0], [3.0, 4.0]];
    let s = 2.0f32.sqrt();
    let want: Vec<f32> = (0..2)
        .flat_map(|i| (0..2).map(move |j| (a[i][0] * vv[0][j] + a[i][1] * vv[1][j]) / s))
        .collect();
    for form in [Attention::Matmul, Attention::Einsum] {
        let got = to_vec(&dlstudio_attention(&q, &k, &v, form).to_kind(Kind::Float));
        for (g, w) in got.iter().zip(&want) {
            assert!((g - w).abs() < 1e-6, "{form:?}: got {got:?}, want {want:?}");
        }
    }
}
