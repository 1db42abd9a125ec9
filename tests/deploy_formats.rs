//! Deployment formats of the ONNX writer, run with tract: the raw-pixel
//! graph (u8 NHWC in) gives the float graph's logits on the same images
//! normalised by `Preprocessor`, the fp16 graph gives them within a float16
//! tolerance, both say what they are in their metadata, and the default
//! format's bytes do not change.

#![cfg(feature = "export")]

use prost::Message;
use tract_onnx::prelude::*;
use vit::config::{Pooling, Stem, Variant, ViTConfig};
use vit::format::{InputKind, ModelFormat, Precision, KEY_INPUT, KEY_PRECISION};
use vit::onnx::{self, proto::ModelProto, ExportOptions};
use vit::Preprocessor;

mod common;
use common::Lcg;

/// The configs the formats are checked on: plain, conv stem with batch norm,
/// DLStudio, and test-time flip.
fn configs() -> Vec<(&'static str, ViTConfig)> {
    let small = common::small(3);
    vec![
        ("standard", small.clone()),
        (
            "conv stem",
            ViTConfig { stem: Stem::Conv, stem_channels: vec![8, 16], stem_strides: vec![2, 2], ..small.clone() },
        ),
        ("dlstudio", ViTConfig { variant: Variant::Dlstudio, pooling: Pooling::Mean, ..small.clone() }),
        ("test-time flip", ViTConfig { test_time_flip: true, ..small }),
    ]
}

fn write(cfg: &ViTConfig, format: ModelFormat, dir: &std::path::Path) -> std::path::PathBuf {
    let path = dir.join(format!("{}-{}.onnx", format.input, format.precision));
    let opts = ExportOptions { format, ..Default::default() };
    onnx::write_model(&path, &common::metadata(cfg), &common::random_weights(cfg, 7, 0.3), &opts).expect("export");
    path
}

/// `n` seeded u8 images in CHW order, as `Preprocessor::load_file` returns them.
fn images_chw(cfg: &ViTConfig, n: usize) -> Vec<u8> {
    let mut rng = Lcg(11);
    (0..n * cfg.in_channels * cfg.image_size * cfg.image_size).map(|_| (rng.uniform() * 255.0) as u8).collect()
}

/// CHW images -> HWC, the raw-pixel graph's layout.
fn to_nhwc(chw: &[u8], cfg: &ViTConfig) -> Vec<u8> {
    let (c, hw) = (cfg.in_channels, cfg.image_size * cfg.image_size);
    let mut out = Vec::with_capacity(chw.len());
    for img in chw.chunks(c * hw) {
        for p in 0..hw {
            out.extend((0..c).map(|ch| img[ch * hw + p]));
        }
    }
    out
}

fn tract_logits<T: Datum + Copy>(path: &std::path::Path, shape: [usize; 4], input: &[T]) -> Vec<f32> {
    let plan = tract_onnx::onnx()
        .model_for_path(path)
        .and_then(|m| m.with_input_fact(0, T::fact(shape).into()))
        .and_then(|m| m.into_optimized())
        .and_then(|m| m.into_runnable())
        .unwrap_or_else(|e| panic!("tract cannot run {}: {e:?}", path.display()));
    let out = plan.run(tvec!(Tensor::from_shape(&shape, input).expect("input").into())).expect("run");
    out[0].to_plain_array_view::<f32>().expect("f32 logits").iter().copied().collect()
}

fn assert_close(actual: &[f32], expected: &[f32], atol: f32, rtol: f32, what: &str) {
    assert_eq!(actual.len(), expected.len(), "{what}: lengths");
    for (i, (a, e)) in actual.iter().zip(expected).enumerate() {
        assert!((a - e).abs() <= atol + rtol * e.abs(), "{what}: logit {i} is {a}, float32 graph gives {e}");
    }
}

fn metadata_value(path: &std::path::Path, key: &str) -> Option<String> {
    let model = ModelProto::decode(&std::fs::read(path).expect("read")[..]).expect("decode");
    model.metadata_props.into_iter().find(|p| p.key.as_deref() == Some(key)).and_then(|p| p.value)
}

#[test]
fn the_raw_pixel_graph_gives_the_float_graphs_logits() {
    let dir = tempfile::tempdir().unwrap();
    for (name, cfg) in configs() {
        let n = 3;
        let (c, s) = (cfg.in_channels, cfg.image_size);
        let chw = images_chw(&cfg, n);
        let float = write(&cfg, ModelFormat::default(), dir.path());
        let expected = tract_logits(&float, [n, c, s, s], &Preprocessor::from_config(&cfg).normalize(&chw));
        let format = ModelFormat { input: InputKind::Uint8Nhwc, ..Default::default() };
        let raw = write(&cfg, format, dir.path());
        let actual = tract_logits(&raw, [n, s, s, c], &to_nhwc(&chw, &cfg));
        assert_close(&actual, &expected, 1e-5, 1e-5, name);
        assert_eq!(metadata_value(&raw, KEY_INPUT).as_deref(), Some("uint8_nhwc"), "{name}");
        assert_eq!(metadata_value(&raw, KEY_PRECISION), None, "{name}");
    }
}

#[test]
fn the_fp16_graph_agrees_with_fp32_within_float16_tolerance() {
    let dir = tempfile::tempdir().unwrap();
    for (name, cfg) in configs() {
        let n = 3;
        let (c, s) = (cfg.in_channels, cfg.image_size);
        let chw = images_chw(&cfg, n);
        let pixels = Preprocessor::from_config(&cfg).normalize(&chw);
        let expected = tract_logits(&write(&cfg, ModelFormat::default(), dir.path()), [n, c, s, s], &pixels);
        let fp16 = write(&cfg, ModelFormat { precision: Precision::Fp16, ..Default::default() }, dir.path());
        assert_close(&tract_logits(&fp16, [n, c, s, s], &pixels), &expected, 2e-2, 1e-2, name);
        assert_eq!(metadata_value(&fp16, KEY_PRECISION).as_deref(), Some("fp16"), "{name}");

        let both = ModelFormat { input: InputKind::Uint8Nhwc, precision: Precision::Fp16 };
        let raw16 = write(&cfg, both, dir.path());
        assert_close(&tract_logits(&raw16, [n, s, s, c], &to_nhwc(&chw, &cfg)), &expected, 2e-2, 1e-2, name);
    }
}

#[test]
fn the_default_format_writes_what_export_to_bytes_writes() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = common::small(3);
    let path = write(&cfg, ModelFormat::default(), dir.path());
    let bytes = onnx::export_to_bytes(&common::metadata(&cfg), &common::random_weights(&cfg, 7, 0.3)).unwrap();
    assert_eq!(std::fs::read(path).unwrap(), bytes);
}

#[test]
fn int8_is_refused_without_calibration() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = common::small(3);
    let opts = ExportOptions {
        format: ModelFormat { precision: Precision::Int8, ..Default::default() },
        ..Default::default()
    };
    let err = onnx::write_model(
        &dir.path().join("m.onnx"),
        &common::metadata(&cfg),
        &common::random_weights(&cfg, 7, 0.3),
        &opts,
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("int8") && err.contains("calibration"), "{err}");
}
