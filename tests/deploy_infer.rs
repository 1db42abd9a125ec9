//! The deployment formats through ONNX Runtime (`vit::infer`, CPU): a
//! raw-pixel model classifies files and evaluates data sets exactly as the
//! float model does, refuses normalised floats with a clear error, and every
//! format reports itself from the metadata.
//!
//! Run with `--features export,infer`.

#![cfg(all(feature = "infer", feature = "export"))]

use std::path::{Path, PathBuf};

use vit::data::Dataset;
use vit::format::{InputKind, ModelFormat, Precision};
use vit::onnx::{self, ExportOptions};
use vit::ViTConfig;

mod common;
use common::infer::{open, top};

fn write(dir: &Path, cfg: &ViTConfig, format: ModelFormat) -> PathBuf {
    let path = dir.join(format!("{}-{}.onnx", format.input, format.precision));
    let opts = ExportOptions { format, ..Default::default() };
    onnx::write_model(&path, &common::metadata(cfg), &common::random_weights(cfg, 3, 0.3), &opts).expect("export");
    path
}

#[test]
fn a_raw_pixel_model_classifies_files_as_the_float_model_does() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = common::small(3);
    let files: Vec<PathBuf> = (0..5)
        .map(|i| {
            let p = dir.path().join(format!("img{i}.png"));
            common::write_png(&p, 20 + i, 24, u64::from(i));
            p
        })
        .collect();
    let mut float = open(&write(dir.path(), &cfg, ModelFormat::default()));
    let raw_format = ModelFormat { input: InputKind::Uint8Nhwc, ..Default::default() };
    let mut raw = open(&write(dir.path(), &cfg, raw_format));
    assert_eq!(raw.format(), raw_format);
    assert_eq!(float.format(), ModelFormat::default());
    let expected = float.classify_files(&files, &top(3, 2));
    let actual = raw.classify_files(&files, &top(3, 2));
    for (a, e) in actual.into_iter().zip(expected) {
        let (a, e) = (a.expect("raw-pixel prediction"), e.expect("float prediction"));
        assert_eq!(
            a.top.iter().map(|s| &s.label).collect::<Vec<_>>(),
            e.top.iter().map(|s| &s.label).collect::<Vec<_>>()
        );
        for (x, y) in a.top.iter().zip(&e.top) {
            assert!((x.probability - y.probability).abs() < 1e-5, "{} vs {}", x.probability, y.probability);
        }
    }

    let n = 6;
    let image_len = 3 * 16 * 16;
    let mut rng = common::Lcg(5);
    let data = Dataset {
        pixels: (0..n * image_len).map(|_| (rng.uniform() * 255.0) as u8).collect(),
        labels: (0..n as i64).map(|i| i % 3).collect(),
        image_len,
        sources: Vec::new(),
        skipped: Vec::new(),
    };
    let (a, e) = (raw.evaluate(&data, 4).expect("raw eval"), float.evaluate(&data, 4).expect("float eval"));
    assert_eq!(a.confusion, e.confusion);

    let err = raw.logits(&vec![0.0; image_len], 1).unwrap_err().to_string();
    assert!(err.contains("u8 pixels") && err.contains("logits_u8"), "{err}");
}

#[test]
fn an_fp16_model_runs_on_the_cpu_within_float16_tolerance() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = common::small(3);
    let format = ModelFormat { precision: Precision::Fp16, ..Default::default() };
    let path = write(dir.path(), &cfg, format);
    let mut fp16 = open(&path);
    assert_eq!(fp16.format(), format);
    let mut fp32 = open(&write(dir.path(), &cfg, ModelFormat::default()));
    let mut rng = common::Lcg(9);
    let pixels: Vec<f32> = (0..2 * 3 * 16 * 16).map(|_| rng.normal()).collect();
    let (a, e) = (fp16.logits(&pixels, 2).expect("fp16 logits"), fp32.logits(&pixels, 2).expect("fp32 logits"));
    for (x, y) in a.iter().zip(&e) {
        assert!((x - y).abs() <= 2e-2 + 1e-2 * y.abs(), "fp16 {x} vs fp32 {y}");
    }
}
