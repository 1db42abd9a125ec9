//! The browser example (`examples/web/`) in headless Chromium: a COCO-5
//! shaped model (64x64, the five COCO-5 classes), float32 and raw-pixel
//! exports, classifies a COCO-5 validation image with the same top-1 as
//! `vit::infer` (what vit-infer runs) and probabilities within 1e-3, and
//! prints the page's time to first answer (wasm backend).
//!
//! The page decodes images with the browser; JPEG decoders may differ by a
//! grey level here and there (Chromium's libjpeg-turbo against the `image`
//! crate's decoder), so the 1e-3 check runs on the validation image as the
//! `image` crate decodes it, saved losslessly (PNG), plus a resized copy that
//! exercises the page's resize; the original JPEG must give the same top-1
//! within a decoder tolerance.
//!
//! Needs `scripts/setup.sh` (npm ci in examples/web, Chromium). Run with
//! `--features export,infer`.

#![cfg(all(feature = "infer", feature = "export"))]

use std::path::{Path, PathBuf};
use std::process::Command;

use vit::config::{Pooling, ViTConfig};
use vit::format::{InputKind, ModelFormat};
use vit::infer::Classifier;
use vit::onnx::{self, ExportOptions};
use vit::ModelMetadata;

mod common;
use common::infer::{open, top};

const CLASSES: [&str; 5] = ["airplane", "bus", "cat", "dog", "pizza"];

fn web_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/web")
}

/// What the page answered for one image.
struct PageAnswer {
    top1: String,
    probabilities: Vec<f32>,
    ms: f64,
}

fn page(model: &Path, image: &Path) -> PageAnswer {
    let web = web_dir();
    assert!(
        web.join("node_modules/puppeteer-core").is_dir() && web.join("vendor/ort.wasm.min.mjs").is_file(),
        "examples/web is not set up: run scripts/setup.sh (npm ci and the vendored onnxruntime-web files)"
    );
    let out = Command::new("node").arg(web.join("drive.mjs")).arg(model).arg(image).output().expect("node runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "the page failed on {}: {stderr}", image.display());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("the driver prints JSON");
    PageAnswer {
        top1: v["top1"].as_str().expect("top1").to_owned(),
        probabilities: v["probabilities"]
            .as_array()
            .expect("probabilities")
            .iter()
            .map(|p| p.as_f64().unwrap() as f32)
            .collect(),
        ms: v["ms_since_navigation"].as_f64().expect("time"),
    }
}

/// vit::infer's class probabilities of `image`, by class index, and its top-1 label.
fn reference(clf: &mut Classifier, image: &Path) -> (Vec<f32>, String) {
    let pred = clf.classify_files(&[image], &top(CLASSES.len(), 1)).remove(0).expect("vit::infer classifies");
    let mut probs = vec![0.0; CLASSES.len()];
    for s in &pred.top {
        probs[s.index] = s.probability;
    }
    (probs, pred.top[0].label.clone())
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

#[test]
fn the_page_classifies_like_vit_infer() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = ViTConfig {
        image_size: 64,
        patch_size: 8,
        num_classes: CLASSES.len(),
        embed_dim: 32,
        depth: 2,
        pooling: Pooling::Mean,
        ..common::small(3)
    };
    let meta = ModelMetadata { config: cfg.clone(), labels: CLASSES.map(str::to_owned).to_vec(), val_accuracy: None };
    let weights = common::random_weights(&cfg, 5, 0.5);

    let val = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data/coco5/val/cat");
    let jpeg = std::fs::read_dir(&val).expect("COCO-5 at ../shared/data/coco5").next().unwrap().unwrap().path();
    let decoded = image::open(&jpeg).expect("decode the validation image");
    let png = dir.path().join("val.png");
    decoded.save(&png).unwrap();
    let resized = dir.path().join("resized.png");
    decoded.resize_exact(91, 77, image::imageops::FilterType::Triangle).save(&resized).unwrap();

    for input in [InputKind::Float32Nchw, InputKind::Uint8Nhwc] {
        let path = dir.path().join(format!("{input}.onnx"));
        let opts = ExportOptions { format: ModelFormat { input, ..Default::default() }, ..Default::default() };
        onnx::write_model(&path, &meta, &weights, &opts).expect("export");
        let mut clf = open(&path);
        for image in [&png, &resized] {
            let (expected, top1) = reference(&mut clf, image);
            let answer = page(&path, image);
            assert_eq!(answer.top1, top1, "{input} {}", image.display());
            let diff = max_diff(&answer.probabilities, &expected);
            assert!(diff <= 1e-3, "{input} {}: page and vit::infer differ by {diff}", image.display());
            println!("{input} {}: time to first answer {:.0} ms, max |diff| {diff:.1e}", image.display(), answer.ms);
        }
        let (expected, top1) = reference(&mut clf, &jpeg);
        let answer = page(&path, &jpeg);
        let diff = max_diff(&answer.probabilities, &expected);
        assert_eq!(answer.top1, top1, "{input} {}", jpeg.display());
        assert!(diff <= 1e-2, "{input} {}: page and vit::infer differ by {diff}", jpeg.display());
        println!("{input} {} (JPEG, two decoders): max |diff| {diff:.1e}", jpeg.display());
    }
}
