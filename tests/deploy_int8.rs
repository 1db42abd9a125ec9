//! The int8 writer through ONNX Runtime (CPU): calibrated on images like the
//! ones it then classifies, the QDQ graph gives the float graph's logits
//! within int8 error on every config shape (plain, conv stem with batch
//! norm, raw-pixel input), says it is int8 in its metadata, stores its
//! weights as int8, and cannot be written without ranges.
//!
//! Run with `--features export,infer`.

#![cfg(all(feature = "infer", feature = "export"))]

use std::path::{Path, PathBuf};

use prost::Message;
use vit::config::{Stem, ViTConfig};
use vit::format::{InputKind, ModelFormat, Precision};
use vit::infer::{calibrate, CalibrationImages, RangeMethod};
use vit::onnx::{self, proto::ModelProto, ExportError, ExportOptions, Ranges};
use vit::NamedTensors;

mod common;
use common::infer::open;

/// `n` seeded u8 CHW images with some structure (smooth gradients plus noise).
fn images(cfg: &ViTConfig, n: usize, seed: u64) -> Vec<u8> {
    let mut rng = common::Lcg(seed);
    let (c, s) = (cfg.in_channels, cfg.image_size);
    let mut out = Vec::with_capacity(n * c * s * s);
    for _ in 0..n {
        let (a, b) = (rng.uniform(), rng.uniform());
        for ch in 0..c {
            for y in 0..s {
                for x in 0..s {
                    let v = 255.0 * (0.5 * a * (x as f32 / s as f32) + 0.3 * b * (y + ch) as f32 / s as f32)
                        + 60.0 * rng.uniform();
                    out.push(v.clamp(0.0, 255.0) as u8);
                }
            }
        }
    }
    out
}

fn ranges(cfg: &ViTConfig, weights: &NamedTensors, method: RangeMethod) -> Ranges {
    let (model, targets) = onnx::calibration_model(&common::metadata(cfg), weights).expect("calibration graph");
    let prep = vit::Preprocessor::from_config(cfg);
    let n = 32;
    let pixels = prep.normalize(&images(cfg, n, 1));
    let shape = [cfg.in_channels, cfg.image_size, cfg.image_size];
    calibrate(&model, &targets, CalibrationImages { pixels: &pixels, n, shape }, 8, method).expect("calibrate")
}

fn write(dir: &Path, cfg: &ViTConfig, weights: &NamedTensors, format: ModelFormat, r: Option<&Ranges>) -> PathBuf {
    let path = dir.join(format!("{}-{}.onnx", format.input, format.precision));
    let opts = ExportOptions { format, ..Default::default() };
    let meta = common::metadata(cfg);
    match r {
        Some(r) => onnx::write_quantized_model(&path, &meta, weights, &opts, r).expect("int8 export"),
        None => onnx::write_model(&path, &meta, weights, &opts).expect("export"),
    }
    path
}

fn configs() -> Vec<(&'static str, ViTConfig)> {
    let small = common::small(3);
    vec![
        ("standard", small.clone()),
        ("conv stem", ViTConfig { stem: Stem::Conv, stem_channels: vec![8, 16], stem_strides: vec![2, 2], ..small }),
    ]
}

#[test]
fn int8_logits_follow_the_float_graph() {
    let dir = tempfile::tempdir().unwrap();
    for (what, cfg) in configs() {
        let weights = common::random_weights(&cfg, 3, 0.3);
        let r = ranges(&cfg, &weights, RangeMethod::MinMax);
        for input in [InputKind::Float32Nchw, InputKind::Uint8Nhwc] {
            let int8_format = ModelFormat { input, precision: Precision::Int8 };
            let mut int8 = open(&write(dir.path(), &cfg, &weights, int8_format, Some(&r)));
            assert_eq!(int8.format(), int8_format, "{what}");
            let mut fp32 = open(&write(dir.path(), &cfg, &weights, ModelFormat { input, ..Default::default() }, None));
            let px = images(&cfg, 8, 2);
            let (a, e) = (int8.logits_u8(&px, 8).expect("int8 logits"), fp32.logits_u8(&px, 8).expect("fp32 logits"));
            let spread = e.iter().fold(0f32, |m, v| m.max(v.abs()));
            let worst = a.iter().zip(&e).fold(0f32, |m, (x, y)| m.max((x - y).abs()));
            assert!(worst <= 0.1 * spread, "{what} {input}: int8 logits differ by {worst}, logits reach {spread}");
            // What `vit-infer --eval` runs.
            let data = vit::data::Dataset {
                pixels: px,
                labels: vec![0, 1, 2, 0, 1, 2, 0, 1],
                image_len: 3 * 16 * 16,
                ..Default::default()
            };
            assert_eq!(int8.evaluate(&data, 3).expect("int8 evaluation").total, 8, "{what} {input}");
        }
    }
}

#[test]
fn int8_weights_are_stored_as_int8() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = &configs()[1].1;
    let weights = common::random_weights(cfg, 3, 0.3);
    let r = ranges(cfg, &weights, RangeMethod::Percentile(99.99));
    let format = ModelFormat { precision: Precision::Int8, ..Default::default() };
    let int8 = std::fs::metadata(write(dir.path(), cfg, &weights, format, Some(&r))).unwrap().len();
    let fp32 = std::fs::metadata(write(dir.path(), cfg, &weights, ModelFormat::default(), None)).unwrap().len();
    assert!(int8 < fp32, "int8 file {int8} bytes, fp32 {fp32}");
    let bytes = std::fs::read(dir.path().join("float32_nchw-int8.onnx")).unwrap();
    let graph = ModelProto::decode(&bytes[..]).unwrap().graph.unwrap();
    let ops: Vec<_> = graph.node.iter().filter_map(|n| n.op_type.clone()).collect();
    assert!(ops.iter().any(|o| o == "QuantizeLinear") && !ops.iter().any(|o| o == "BatchNormalization"), "{ops:?}");
    let int8_tensors = |suffix: &str| {
        graph
            .initializer
            .iter()
            .filter(|t| t.data_type == Some(3) && t.name.as_deref().is_some_and(|n| n.ends_with(suffix)))
            .count()
    };
    // Every weight MatMul and Conv reads an int8 weight; no float copy is left behind.
    let weight_ops = ops.iter().filter(|o| *o == "MatMul" || *o == "Conv").count();
    // Attention's two activation MatMuls per block and the head stay float.
    assert_eq!(int8_tensors(".weight.int8"), weight_ops - 2 * cfg.depth - 1, "{weight_ops} weight ops");
    for t in &graph.initializer {
        let name = t.name.as_deref().unwrap_or_default();
        assert!(
            !(name.ends_with(".weight") && t.dims.len() >= 2 && !name.starts_with("head")),
            "float weight {name} kept"
        );
    }
}

#[test]
fn int8_needs_ranges_for_every_quantised_activation() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = common::small(3);
    let weights = common::random_weights(&cfg, 3, 0.3);
    let format = ModelFormat { precision: Precision::Int8, ..Default::default() };
    let path = dir.path().join("m.onnx");
    let opts = ExportOptions { format, ..Default::default() };
    let err = onnx::write_model(&path, &common::metadata(&cfg), &weights, &opts).unwrap_err();
    assert!(matches!(err, ExportError::Format { .. }), "{err}");
    let err = onnx::write_quantized_model(&path, &common::metadata(&cfg), &weights, &opts, &Ranges::new()).unwrap_err();
    assert!(matches!(err, ExportError::MissingRange { .. }), "{err}");
    assert!(!path.exists());
}

#[test]
fn the_calibration_graph_computes_the_float_graph() {
    // Batch norms folded into the convolutions, extra outputs added: the logits must not move.
    let cfg = &configs()[1].1;
    let weights = common::random_weights(cfg, 3, 0.3);
    let (bytes, targets) = onnx::calibration_model(&common::metadata(cfg), &weights).expect("calibration graph");
    let float = onnx::export_to_bytes(&common::metadata(cfg), &weights).expect("float graph");
    let graph = ModelProto::decode(&bytes[..]).unwrap().graph.unwrap();
    assert!(graph.node.iter().all(|n| n.op_type.as_deref() != Some("BatchNormalization")));
    assert_eq!(graph.output.len(), 1 + targets.len());
    let prep = vit::Preprocessor::from_config(cfg);
    let pixels = prep.normalize(&images(cfg, 4, 3));
    let shape = [4, cfg.in_channels, cfg.image_size, cfg.image_size];
    let run = |model: &[u8]| -> Vec<f32> {
        use tract_onnx::prelude::*;
        let plan = tract_onnx::onnx()
            .model_for_read(&mut std::io::Cursor::new(model))
            .and_then(|m| m.with_input_fact(0, f32::fact(shape).into()))
            .and_then(|m| m.into_optimized())
            .and_then(|m| m.into_runnable())
            .expect("tract runs the graph");
        let out = plan.run(tvec!(Tensor::from_shape(&shape, &pixels).unwrap().into())).expect("run");
        out[0].to_plain_array_view::<f32>().unwrap().iter().copied().collect()
    };
    let (folded, reference) = (run(&bytes), run(&float));
    for (a, e) in folded.iter().zip(&reference) {
        assert!((a - e).abs() <= 1e-4 + 1e-4 * e.abs(), "folded {a} vs float {e}");
    }
}
