//! ONNX export: the exported files load and run in tract at several batch
//! sizes, give hand-computable results on hand-made weights, are well-formed
//! and deterministic, survive external data, and bad checkpoints or paths give
//! the right error.

#![cfg(feature = "export")]

use std::collections::HashMap;
use std::path::Path;

use prost::Message;
use tract_onnx::prelude::*;
use vit::config::{Attention, Pooling, Variant, ViTConfig};
use vit::onnx::proto::{tensor_proto::DataLocation, ModelProto};
use vit::onnx::{self, ExportError, ExportOptions};
use vit::{ModelMetadata, NamedTensors, TensorData};

// ---- helpers ----------------------------------------------------------------

mod common;
use common::Lcg;

fn random_weights(cfg: &ViTConfig, seed: u64) -> NamedTensors {
    common::random_weights(cfg, seed, 0.1)
}

fn zero_weights(cfg: &ViTConfig) -> NamedTensors {
    onnx::expected_tensors(cfg)
        .into_iter()
        .map(|(name, shape)| {
            let n = shape.iter().product();
            (name, TensorData { shape, data: vec![0.0; n] })
        })
        .collect()
}

fn meta(cfg: &ViTConfig) -> ModelMetadata {
    let labels = (0..cfg.num_classes).map(|i| format!("class {i}")).collect();
    ModelMetadata { config: cfg.clone(), labels, val_accuracy: Some(0.5) }
}

fn images(cfg: &ViTConfig, batch: usize, seed: u64) -> Vec<f32> {
    let mut rng = Lcg(seed);
    (0..batch * cfg.in_channels * cfg.image_size * cfg.image_size).map(|_| rng.normal()).collect()
}

/// Runs a tract model (optimised for this batch) on `pixels`; returns (shape, values).
fn run(model: InferenceModel, cfg: &ViTConfig, batch: usize, pixels: &[f32]) -> TractResult<(Vec<usize>, Vec<f32>)> {
    let shape = [batch, cfg.in_channels, cfg.image_size, cfg.image_size];
    let plan = model.with_input_fact(0, f32::fact(shape).into())?.into_optimized()?.into_runnable()?;
    let out = plan.run(tvec!(Tensor::from_shape(&shape, pixels)?.into()))?;
    let view = out[0].to_plain_array_view::<f32>()?;
    Ok((view.shape().to_vec(), view.iter().copied().collect()))
}

fn run_bytes(bytes: &[u8], cfg: &ViTConfig, batch: usize, pixels: &[f32]) -> TractResult<(Vec<usize>, Vec<f32>)> {
    run(tract_onnx::onnx().model_for_read(&mut &bytes[..])?, cfg, batch, pixels)
}

fn assert_close(a: &[f32], b: &[f32], tol: f32, what: &str) {
    assert_eq!(a.len(), b.len(), "{what}: lengths");
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        assert!((x - y).abs() <= tol * (1.0 + y.abs()), "{what}: [{i}] {x} vs {y}");
    }
}

fn standard(depth: usize, heads: usize, patch: usize, image: usize, ch: usize, pooling: Pooling) -> ViTConfig {
    ViTConfig {
        variant: Variant::Standard,
        image_size: image,
        patch_size: patch,
        in_channels: ch,
        num_classes: 5,
        embed_dim: 16,
        depth,
        num_heads: heads,
        pooling,
        ..Default::default()
    }
}

fn dlstudio(attention: Attention, depth: usize, heads: usize, patch: usize, image: usize, ch: usize) -> ViTConfig {
    ViTConfig {
        variant: Variant::Dlstudio,
        image_size: image,
        patch_size: patch,
        in_channels: ch,
        num_classes: 4,
        embed_dim: 16,
        depth,
        num_heads: heads,
        pooling: Pooling::Mean,
        attention,
        ..Default::default()
    }
}

fn config_table() -> Vec<ViTConfig> {
    vec![
        standard(1, 1, 4, 28, 1, Pooling::Cls),
        standard(3, 2, 8, 32, 3, Pooling::Mean),
        ViTConfig { qkv_bias: false, ..standard(1, 4, 16, 64, 3, Pooling::Cls) },
        ViTConfig { mlp_ratio: 4.0, ..standard(3, 4, 4, 32, 1, Pooling::Mean) },
        ViTConfig { locality_attention: true, ..standard(2, 2, 8, 32, 3, Pooling::Cls) },
        ViTConfig { test_time_flip: true, ..standard(2, 2, 8, 32, 3, Pooling::Mean) },
        dlstudio(Attention::Matmul, 2, 2, 8, 32, 3),
        dlstudio(Attention::Einsum, 1, 4, 7, 28, 1),
        dlstudio(Attention::Einsum, 2, 1, 16, 64, 3),
    ]
}

// ---- running in tract ---------------------------------------------------------

#[test]
fn config_table_runs_at_batch_1_and_7() -> TractResult<()> {
    for (i, cfg) in config_table().into_iter().enumerate() {
        let bytes = onnx::export_to_bytes(&meta(&cfg), &random_weights(&cfg, i as u64))?;
        let pixels = images(&cfg, 7, 100 + i as u64);
        let (shape7, out7) = run_bytes(&bytes, &cfg, 7, &pixels)?;
        assert_eq!(shape7, [7, cfg.num_classes], "config {i}");
        assert!(out7.iter().all(|v| v.is_finite()), "config {i}: {out7:?}");
        assert!(out7.iter().any(|v| *v != out7[0]), "config {i}: constant output {out7:?}");
        // Image 2 alone gives the logits it got inside the batch.
        let one = cfg.in_channels * cfg.image_size * cfg.image_size;
        let (shape1, out1) = run_bytes(&bytes, &cfg, 1, &pixels[2 * one..3 * one])?;
        assert_eq!(shape1, [1, cfg.num_classes], "config {i}");
        let k = cfg.num_classes;
        assert_close(&out1, &out7[2 * k..3 * k], 1e-4, &format!("config {i} batch 1 vs 7"));
    }
    Ok(())
}

#[test]
fn zero_weights_give_the_head_bias() -> TractResult<()> {
    for cfg in [standard(2, 2, 8, 32, 3, Pooling::Cls), dlstudio(Attention::Matmul, 2, 2, 8, 32, 1)] {
        let mut w = zero_weights(&cfg);
        let bias: Vec<f32> = (0..cfg.num_classes).map(|i| i as f32 - 1.5).collect();
        w.insert("head.bias".into(), TensorData { shape: vec![cfg.num_classes], data: bias.clone() });
        let bytes = onnx::export_to_bytes(&meta(&cfg), &w)?;
        let (shape, out) = run_bytes(&bytes, &cfg, 3, &images(&cfg, 3, 5))?;
        assert_eq!(shape, [3, cfg.num_classes]);
        assert_close(&out, &bias.repeat(3), 1e-6, "logits = head.bias");
    }
    Ok(())
}

/// Tokens `[L][E]` after patch embedding, class token and position embedding, by hand.
fn embed_by_hand(cfg: &ViTConfig, w: &NamedTensors, img: &[f32]) -> Vec<Vec<f32>> {
    let (c, p, e, s, g) = (cfg.in_channels, cfg.patch_size, cfg.embed_dim, cfg.image_size, cfg.grid_size());
    let (conv_w, conv_b) = (&w["patch_embed.proj.weight"].data, &w["patch_embed.proj.bias"].data);
    let mut tokens = vec![w["cls_token"].data.clone()];
    for n in 0..g * g {
        let (gy, gx) = (n / g, n % g);
        tokens.push(
            (0..e)
                .map(|o| {
                    let mut acc = conv_b[o];
                    for ci in 0..c {
                        for i in 0..p {
                            for j in 0..p {
                                let wv = conv_w[((o * c + ci) * p + i) * p + j];
                                acc += wv * img[(ci * s + gy * p + i) * s + gx * p + j];
                            }
                        }
                    }
                    acc
                })
                .collect(),
        );
    }
    let pos = &w["pos_embed"].data;
    for (t, tok) in tokens.iter_mut().enumerate() {
        for (o, v) in tok.iter_mut().enumerate() {
            *v += pos[t * e + o];
        }
    }
    tokens
}

fn layer_norm(x: &[f32], w: &[f32], b: &[f32], eps: f64) -> Vec<f32> {
    let n = x.len() as f64;
    let mean = x.iter().map(|&v| v as f64).sum::<f64>() / n;
    let var = x.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / n;
    let inv = 1.0 / (var + eps).sqrt();
    x.iter().zip(w).zip(b).map(|((&v, &wi), &bi)| ((v as f64 - mean) * inv) as f32 * wi + bi).collect()
}

/// `head.weight` is `[K, E]` in PyTorch layout: logits = W x + b.
fn head_by_hand(cfg: &ViTConfig, w: &NamedTensors, x: &[f32]) -> Vec<f32> {
    let (hw, hb) = (&w["head.weight"].data, &w["head.bias"].data);
    (0..cfg.num_classes)
        .map(|k| hb[k] + (0..cfg.embed_dim).map(|e| hw[k * cfg.embed_dim + e] * x[e]).sum::<f32>())
        .collect()
}

fn mean_tokens(tokens: &[Vec<f32>]) -> Vec<f32> {
    let n = tokens.len() as f32;
    (0..tokens[0].len()).map(|e| tokens.iter().map(|t| t[e]).sum::<f32>() / n).collect()
}

/// With every block/encoder zeroed, blocks are identities (residual + 0), so
/// logits follow from embedding, final norm, pooling and head alone.
#[test]
fn embedding_norm_pooling_and_head_match_a_hand_computation() -> TractResult<()> {
    let configs = [
        standard(2, 2, 8, 32, 3, Pooling::Cls),
        standard(1, 1, 4, 28, 1, Pooling::Mean),
        standard(2, 2, 8, 32, 3, Pooling::Avg),
        dlstudio(Attention::Einsum, 2, 2, 8, 32, 3),
    ];
    for (i, cfg) in configs.into_iter().enumerate() {
        let random = random_weights(&cfg, 40 + i as u64);
        let mut w = zero_weights(&cfg);
        let kept = ["patch_embed.", "cls_token", "pos_embed", "norm.", "fc_norm.", "head."];
        for (name, t) in &random {
            if kept.iter().any(|k| name.starts_with(k)) {
                w.insert(name.clone(), t.clone());
            }
        }
        let bytes = onnx::export_to_bytes(&meta(&cfg), &w)?;
        let batch = 2;
        let pixels = images(&cfg, batch, 9);
        let (_, out) = run_bytes(&bytes, &cfg, batch, &pixels)?;
        let one = pixels.len() / batch;
        let mut expected = Vec::new();
        for img in pixels.chunks(one) {
            let mut tokens = embed_by_hand(&cfg, &w, img);
            if cfg.variant == Variant::Standard && cfg.pooling != Pooling::Avg {
                let (nw, nb) = (&w["norm.weight"].data, &w["norm.bias"].data);
                tokens = tokens.iter().map(|t| layer_norm(t, nw, nb, cfg.layer_norm_eps)).collect();
            }
            let pooled = match cfg.pooling {
                Pooling::Cls => tokens[0].clone(),
                Pooling::Mean => mean_tokens(&tokens),
                // timm's avg: patch tokens only, then fc_norm.
                Pooling::Avg => {
                    let (nw, nb) = (&w["fc_norm.weight"].data, &w["fc_norm.bias"].data);
                    layer_norm(&mean_tokens(&tokens[1..]), nw, nb, cfg.layer_norm_eps)
                }
            };
            expected.extend(head_by_hand(&cfg, &w, &pooled));
        }
        assert_close(&out, &expected, 1e-4, &format!("config {i}"));
    }
    Ok(())
}

// ---- structure ------------------------------------------------------------------

#[test]
fn model_structure() {
    for cfg in config_table() {
        let m = meta(&cfg);
        let bytes = onnx::export_to_bytes(&m, &random_weights(&cfg, 1)).unwrap();
        let model = ModelProto::decode(&bytes[..]).unwrap();
        assert_eq!(model.ir_version(), 8);
        assert_eq!(model.opset_import.len(), 1);
        assert_eq!((model.opset_import[0].domain(), model.opset_import[0].version()), ("", 17));
        assert_eq!(model.producer_name(), "vit-train");
        assert_eq!(model.producer_version(), env!("CARGO_PKG_VERSION"));
        let g = model.graph.as_ref().unwrap();
        assert_eq!(g.name(), "vit");

        // Initializers: the checkpoint names in expected_tensors order, then constants.
        let expected: Vec<String> = onnx::expected_tensors(&cfg).into_iter().map(|(n, _)| n).collect();
        let names: Vec<&str> = g.initializer.iter().map(|t| t.name()).collect();
        let (weights, consts) = names.split_at(expected.len());
        assert_eq!(weights, expected.iter().map(String::as_str).collect::<Vec<_>>());
        assert!(!consts.is_empty() && consts.iter().all(|n| n.starts_with(onnx::CONST_PREFIX)), "{consts:?}");
        let mut seen = std::collections::BTreeSet::new();
        assert!(names.iter().all(|n| seen.insert(*n)), "duplicate initializer name");
        // Linear weights are stored transposed: head [E, K].
        let head = g.initializer.iter().find(|t| t.name() == "head.weight").unwrap();
        assert_eq!(head.dims, [cfg.embed_dim as i64, cfg.num_classes as i64]);

        // Topological order; every value defined once; node names unique.
        let mut defined: std::collections::BTreeSet<&str> = names.iter().copied().collect();
        assert_eq!(g.input.len(), 1);
        defined.insert(g.input[0].name());
        let mut node_names = std::collections::BTreeSet::new();
        for node in &g.node {
            assert!(node_names.insert(node.name()), "duplicate node {}", node.name());
            for i in &node.input {
                assert!(defined.contains(i.as_str()), "{} reads {i} before it is defined", node.name());
            }
            for o in &node.output {
                assert!(defined.insert(o), "{o} defined twice");
            }
            assert_attributes(node, &cfg);
        }
        assert_eq!(g.output.len(), 1);
        assert_eq!(g.output[0].name(), "logits");
        assert!(defined.contains("logits"));
        assert_eq!(g.input[0].name(), "pixel_values");
        let dims = |v: &vit::onnx::proto::ValueInfoProto| -> Vec<String> {
            use vit::onnx::proto::{tensor_shape_proto::dimension::Value, type_proto};
            let Some(type_proto::Value::TensorType(t)) = &v.r#type.as_ref().unwrap().value else { panic!() };
            t.shape
                .as_ref()
                .unwrap()
                .dim
                .iter()
                .map(|d| match d.value.as_ref().unwrap() {
                    Value::DimValue(n) => n.to_string(),
                    Value::DimParam(s) => s.clone(),
                })
                .collect()
        };
        let s = |n: usize| n.to_string();
        assert_eq!(dims(&g.input[0]), ["batch".into(), s(cfg.in_channels), s(cfg.image_size), s(cfg.image_size)]);
        assert_eq!(dims(&g.output[0]), ["batch".into(), s(cfg.num_classes)]);

        // Metadata reads back.
        let props: HashMap<String, String> =
            model.metadata_props.iter().map(|p| (p.key().to_owned(), p.value().to_owned())).collect();
        for key in [vit::metadata::KEY_CONFIG, vit::metadata::KEY_LABELS, vit::metadata::KEY_IMAGE_SIZE] {
            assert!(props.contains_key(key), "{key}");
        }
        assert_eq!(ModelMetadata::from_props(&props).unwrap(), m);

        // Deterministic.
        assert_eq!(onnx::export_to_bytes(&m, &random_weights(&cfg, 1)).unwrap(), bytes);
    }
}

#[test]
fn locality_attention_masks_exactly_the_diagonal() {
    let cfg = ViTConfig { locality_attention: true, ..standard(2, 2, 8, 32, 3, Pooling::Cls) };
    let bytes = onnx::export_to_bytes(&meta(&cfg), &random_weights(&cfg, 1)).unwrap();
    let g = ModelProto::decode(&bytes[..]).unwrap().graph.unwrap();
    let masks: Vec<_> = g.initializer.iter().filter(|t| t.name().contains("self_attention_mask")).collect();
    assert_eq!(masks.len(), 1, "one mask shared by the blocks");
    let n = cfg.num_tokens(); // 16 patches + class token
    assert_eq!(masks[0].dims, [n as i64, n as i64]);
    assert_eq!(masks[0].float_data.len(), n * n);
    for (i, &v) in masks[0].float_data.iter().enumerate() {
        let expected = if i / n == i % n { vit::config::SELF_ATTENTION_MASK } else { 0.0 };
        assert_eq!(v, expected, "mask[{}][{}]", i / n, i % n);
    }
    // Each block scales by its own learned per-head temperature.
    for i in 0..cfg.depth {
        let scale = g.initializer.iter().find(|t| t.name() == format!("blocks.{i}.attn.scale")).unwrap();
        assert_eq!(scale.dims, [cfg.num_heads as i64]);
        assert!(g.node.iter().any(|n| n.op_type() == "Reshape" && n.input[0] == scale.name()));
    }
}

#[test]
fn test_time_flip_averages_each_image_with_its_mirror() -> TractResult<()> {
    let plain = standard(2, 2, 8, 32, 3, Pooling::Cls);
    let flip = ViTConfig { test_time_flip: true, ..plain.clone() };
    let w = random_weights(&plain, 9);
    let (plain_bytes, flip_bytes) =
        (onnx::export_to_bytes(&meta(&plain), &w)?, onnx::export_to_bytes(&meta(&flip), &w)?);
    let (batch, side, k) = (3, plain.image_size, plain.num_classes);
    let x = images(&plain, batch, 4);
    // Mirror every row of every channel of every image.
    let mirrored: Vec<f32> = x.chunks(side).flat_map(|row| row.iter().rev().copied()).collect();
    let (_, a) = run_bytes(&plain_bytes, &plain, batch, &x)?;
    let (_, b) = run_bytes(&plain_bytes, &plain, batch, &mirrored)?;
    let (shape, got) = run_bytes(&flip_bytes, &flip, batch, &x)?;
    assert_eq!(shape, [batch, k]);
    let mean: Vec<f32> = a.iter().zip(&b).map(|(a, b)| (a + b) / 2.0).collect();
    assert_close(&got, &mean, 1e-5, "flip graph vs mean of the plain graph on x and mirror(x)");
    assert!(a.iter().zip(&b).any(|(a, b)| (a - b).abs() > 1e-3), "random weights are not mirror-symmetric");
    let (_, got_mirrored) = run_bytes(&flip_bytes, &flip, batch, &mirrored)?;
    assert_close(&got_mirrored, &got, 1e-5, "an image and its mirror give the same averaged logits");
    Ok(())
}

/// The attributes each operator must carry, written explicitly (zeros included).
fn assert_attributes(node: &vit::onnx::proto::NodeProto, cfg: &ViTConfig) {
    let needed: &[&str] = match node.op_type() {
        "Conv" => &["dilations", "group", "kernel_shape", "pads", "strides"],
        "LayerNormalization" => &["axis", "epsilon", "stash_type"],
        "Softmax" | "Concat" | "Gather" => &["axis"],
        "Transpose" => &["perm"],
        "ReduceMean" => &["axes", "keepdims"],
        "Reshape" => &["allowzero"],
        "Shape" => &["start", "end"],
        "Einsum" => &["equation"],
        _ => &[],
    };
    for name in needed {
        let a = node.attribute.iter().find(|a| a.name() == *name);
        let a = a.unwrap_or_else(|| panic!("{} lacks attribute {name}", node.name()));
        assert!(a.i.is_some() || a.f.is_some() || a.s.is_some() || !a.ints.is_empty(), "{} {name} empty", node.name());
    }
    if node.op_type() == "Softmax" {
        let axis = node.attribute[0].i();
        assert_eq!(axis, if cfg.variant == Variant::Dlstudio { 1 } else { -1 });
    }
    let einsum = cfg.variant == Variant::Dlstudio && cfg.attention == Attention::Einsum;
    assert!(einsum || node.op_type() != "Einsum");
}

// ---- files ------------------------------------------------------------------------

#[test]
fn external_data_round_trip() -> TractResult<()> {
    let cfg = dlstudio(Attention::Matmul, 1, 2, 8, 32, 3);
    let (m, w) = (meta(&cfg), random_weights(&cfg, 3));
    let dir = tempfile::tempdir()?;
    let inline_path = dir.path().join("inline.onnx");
    let ext_path = dir.path().join("ext.onnx");
    onnx::write_model(&inline_path, &m, &w, &ExportOptions::default())?;
    onnx::write_model(&ext_path, &m, &w, &ExportOptions { external_data: true, ..Default::default() })?;

    assert_eq!(std::fs::read(&inline_path)?, onnx::export_to_bytes(&m, &w)?);
    assert!(!dir.path().join("inline.onnx.data").exists());
    let data_path = dir.path().join("ext.onnx.data");
    let weight_bytes: usize = w.values().map(|t| t.numel() * 4).sum();
    assert!(std::fs::metadata(&data_path)?.len() as usize >= weight_bytes);
    let ext = ModelProto::decode(&std::fs::read(&ext_path)?[..])?;
    for t in &ext.graph.as_ref().unwrap().initializer {
        let external = t.data_location() == DataLocation::External;
        assert_eq!(external, !t.name().starts_with(onnx::CONST_PREFIX), "{}", t.name());
        assert!(t.raw_data.is_none(), "{}: raw_data left inline", t.name());
    }
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())?.filter_map(|e| e.ok()).map(|e| e.file_name()).collect();
    assert_eq!(leftovers.len(), 3, "temporary files left behind: {leftovers:?}");

    let pixels = images(&cfg, 2, 77);
    let load = |p: &Path| tract_onnx::onnx().model_for_path(p);
    let (_, a) = run(load(&inline_path)?, &cfg, 2, &pixels)?;
    let (_, b) = run(load(&ext_path)?, &cfg, 2, &pixels)?;
    assert_eq!(a, b);
    // Rewriting replaces both files.
    onnx::write_model(
        &ext_path,
        &m,
        &random_weights(&cfg, 4),
        &ExportOptions { external_data: true, ..Default::default() },
    )?;
    let (_, c) = run(load(&ext_path)?, &cfg, 2, &pixels)?;
    assert_ne!(a, c);
    Ok(())
}

// ---- errors -------------------------------------------------------------------------

fn export_err(cfg: &ViTConfig, w: &NamedTensors) -> ExportError {
    onnx::export_to_bytes(&meta(cfg), w).unwrap_err()
}

#[test]
fn missing_tensor_is_named() {
    let cfg = standard(2, 2, 8, 32, 3, Pooling::Cls);
    let mut w = random_weights(&cfg, 0);
    w.remove("blocks.1.attn.proj.bias");
    let err = export_err(&cfg, &w);
    assert!(matches!(&err, ExportError::MissingTensor { name } if name == "blocks.1.attn.proj.bias"), "{err:?}");
    assert!(err.to_string().contains("blocks.1.attn.proj.bias"), "{err}");
}

#[test]
fn wrong_shape_is_named() {
    let cfg = dlstudio(Attention::Matmul, 1, 2, 8, 32, 3);
    let mut w = random_weights(&cfg, 0);
    let t = w.get_mut("head.weight").unwrap();
    t.shape.reverse();
    let err = export_err(&cfg, &w);
    let ok = matches!(&err, ExportError::ShapeMismatch { name, expected, found }
        if name == "head.weight" && expected == &[4, 16] && found == &[16, 4]);
    assert!(ok, "{err:?}");
    assert!(err.to_string().contains("head.weight"), "{err}");
}

#[test]
fn extra_tensor_is_named() {
    let cfg = ViTConfig { qkv_bias: false, ..standard(1, 2, 8, 32, 3, Pooling::Cls) };
    let mut w = random_weights(&cfg, 0);
    w.insert("blocks.0.attn.qkv.bias".into(), TensorData { shape: vec![48], data: vec![0.0; 48] });
    let err = export_err(&cfg, &w);
    assert!(matches!(&err, ExportError::UnexpectedTensor { name } if name == "blocks.0.attn.qkv.bias"), "{err:?}");
    assert!(err.to_string().contains("blocks.0.attn.qkv.bias"), "{err}");
}

#[test]
fn bad_config_and_labels_are_rejected() {
    let cfg = standard(1, 2, 8, 32, 3, Pooling::Cls);
    let w = random_weights(&cfg, 0);
    let mut m = meta(&cfg);
    m.labels.pop();
    let err = onnx::export_to_bytes(&m, &w).unwrap_err();
    assert!(matches!(err, ExportError::LabelCount { expected: 5, found: 4 }), "{err:?}");
    let bad = ViTConfig { num_classes: 1, ..cfg };
    let err = onnx::export_to_bytes(&meta(&bad), &w).unwrap_err();
    assert!(matches!(err, ExportError::Config(_)), "{err:?}");
}

#[test]
fn unwritable_paths_are_named() {
    let cfg = standard(1, 1, 8, 32, 1, Pooling::Cls);
    let (m, w) = (meta(&cfg), random_weights(&cfg, 0));
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("plain-file");
    std::fs::write(&file, b"x").unwrap();
    for (path, external) in [
        (dir.path().join("no-such-dir").join("model.onnx"), false),
        (file.join("model.onnx"), false),
        (file.join("model.onnx"), true),
    ] {
        let err = onnx::write_model(&path, &m, &w, &ExportOptions { external_data: external, ..Default::default() })
            .unwrap_err();
        assert!(matches!(err, ExportError::Io { .. }), "{err:?}");
        let msg = err.to_string();
        assert!(msg.contains("model.onnx"), "{msg}");
    }
    let err = onnx::write_model(Path::new("/"), &m, &w, &ExportOptions::default()).unwrap_err();
    assert!(matches!(err, ExportError::InvalidPath { .. }), "{err:?}");
}
