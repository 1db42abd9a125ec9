//! Forward shapes, parameter counts and the dlstudio variant's exact maths.

mod common;

use common::*;
use tch::{nn::ModuleT, Kind, Tensor};
use vit::config::Stem;
use vit::config::{Attention, Pooling};
use vit::ViTConfig;
use vit_train::model::{dlstudio_attention, drop_path, parameter_count};
use vit_train::train::optim::is_no_decay;

#[test]
fn forward_shapes_for_several_configs() {
    let configs = [
        standard(28, 7, 1, 1, 1, Pooling::Cls),
        standard(32, 4, 3, 2, 2, Pooling::Mean),
        standard(64, 16, 3, 3, 4, Pooling::Cls),
        ViTConfig { locality_attention: true, ..standard(32, 8, 3, 2, 2, Pooling::Mean) },
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
fn conv_stem_names_shapes_and_decay() {
    let cfg = ViTConfig {
        stem: Stem::Conv,
        stem_channels: vec![8, 16, 16, 24],
        stem_strides: vec![2, 2, 1, 2],
        ..standard(64, 8, 3, 2, 2, Pooling::Mean)
    };
    let (vs, model) = random_model(&cfg, 0);
    let vars = vs.variables();
    // Every tensor the ONNX graph needs exists under its name and shape, and nothing else.
    let expected = vit::onnx::expected_tensors(&cfg);
    assert_eq!(vars.len(), expected.len(), "{:?}", vars.keys());
    for (name, shape) in &expected {
        let v = vars.get(name).unwrap_or_else(|| panic!("missing {name}"));
        assert_eq!(v.size(), shape.iter().map(|&d| d as i64).collect::<Vec<_>>(), "{name}");
    }
    assert_eq!(vars["patch_embed.stem.2.conv.weight"].size(), vec![16, 16, 3, 3]);
    assert_eq!(vars["patch_embed.stem.3.conv.weight"].size(), vec![24, 16, 3, 3]);
    assert_eq!(vars["patch_embed.proj.weight"].size(), vec![32, 24, 1, 1]);
    assert!(!vars["patch_embed.stem.0.bn.running_var"].requires_grad(), "running stats are buffers");
    assert!(
        is_no_decay("patch_embed.stem.0.bn.weight", &[8])
            && !is_no_decay("patch_embed.stem.0.conv.weight", &[8, 3, 3, 3])
    );
    assert!(is_no_decay("blocks.0.attn.scale", &[2]), "locality attention's per-head scale has no weight decay");
    let y = model.forward_t(&random_input(&cfg, 2, 1), true);
    assert_eq!(y.size(), vec![2, 5]);
}

#[test]
fn test_time_flip_averages_an_image_and_its_mirror_in_eval_only() {
    let plain = ViTConfig { stem: Stem::Conv, stem_channels: vec![8, 16], ..standard(32, 4, 3, 2, 2, Pooling::Cls) };
    let flip = ViTConfig { test_time_flip: true, ..plain.clone() };
    let (vs, tta) = random_model(&flip, 3);
    let mut vs_plain = tch::nn::VarStore::new(tch::Device::Cpu);
    let net = vit_train::model::ViT::new(&vs_plain.root(), &plain);
    vs_plain.copy(&vs).unwrap();
    let x = random_input(&flip, 4, 5);
    let mirrored = x.flip([3]);
    let eval = |m: &vit_train::model::ViT, x: &Tensor| tch::no_grad(|| m.forward_t(x, false));
    let expected = (eval(&net, &x) + eval(&net, &mirrored)) / 2.0;
    let got = eval(&tta, &x);
    assert!(got.allclose(&expected, 1e-5, 1e-5, false), "mean of the pair:\n{got}\n{expected}");
    // The pair is the same for an image and its mirror (but not for an upside-down image).
    assert!(got.allclose(&eval(&tta, &mirrored), 1e-5, 1e-5, false));
    assert!(!got.allclose(&eval(&tta, &x.flip([2])), 1e-3, 1e-3, false));
    assert!(!got.allclose(&eval(&net, &x), 1e-3, 1e-3, false), "random weights are not mirror-symmetric");
    // Training sees single images: same batch size out, as the plain network.
    assert_eq!(tta.forward_t(&x, true).size(), vec![4, 5]);
}

#[test]
fn drop_path_drops_whole_samples_and_is_identity_in_eval() {
    let _rng = seeded_rng(0); // held while drop_path draws its masks
    let x = Tensor::ones([4000, 3, 2], (Kind::Float, tch::Device::Cpu));
    assert_eq!(Vec::<f32>::try_from(drop_path(&x, 0.25, false).flatten(0, -1)).unwrap(), vec![1.0; 24000]);
    let y = drop_path(&x, 0.25, true);
    let per_sample = Vec::<f32>::try_from(y.flatten(0, -1)).unwrap();
    let rows: Vec<f32> = Vec::<f32>::try_from(y.view([4000, 6]).select(1, 0)).unwrap();
    // Each sample is all 0 or all 1/(1 - 0.25), and about a quarter are dropped.
    for (i, r) in rows.iter().enumerate() {
        assert!(*r == 0.0 || (*r - 4.0 / 3.0).abs() < 1e-6, "sample {i}: {r}");
        assert!(per_sample[i * 6..(i + 1) * 6].iter().all(|v| v == r));
    }
    let dropped = rows.iter().filter(|r| **r == 0.0).count() as f64 / 4000.0;
    assert!((dropped - 0.25).abs() < 0.03, "dropped fraction {dropped}");
}

#[test]
fn state_dict_names_match_pytorch() {
    let (vs, _) = random_model(&standard(32, 8, 3, 2, 2, Pooling::Cls), 0);
    let vars = vs.variables();
    for name in [
        "patch_embed.proj.weight",
        "cls_token",
        "pos_embed",
        "blocks.1.attn.qkv.weight",
        "blocks.0.mlp.fc2.bias",
        "norm.weight",
        "head.bias",
    ] {
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
    let want: Vec<f32> =
        (0..2).flat_map(|i| (0..2).map(move |j| (a[i][0] * vv[0][j] + a[i][1] * vv[1][j]) / s)).collect();
    for form in [Attention::Matmul, Attention::Einsum] {
        let got = to_vec(&dlstudio_attention(&q, &k, &v, form).to_kind(Kind::Float));
        for (g, w) in got.iter().zip(&want) {
            assert!((g - w).abs() < 1e-6, "{form:?}: got {got:?}, want {want:?}");
        }
    }
}

#[test]
fn every_preset_parses_validates_and_builds() {
    let mut seen = 0;
    for entry in std::fs::read_dir(repo_root().join("models")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("toml") {
            continue;
        }
        let mut cfg = ViTConfig::from_toml_file(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        cfg.num_classes = 5;
        cfg.validate().unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        if cfg.variant == vit::Variant::Standard {
            let (_vs, model) = random_model(&cfg, 0);
            let y = model.forward_t(&random_input(&cfg, 2, 0), true);
            assert_eq!(y.size(), vec![2, 5], "{}", path.display());
        }
        seen += 1;
    }
    assert!(seen >= 4, "expected the presets in models/, found {seen}");
}
