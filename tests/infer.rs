//! ONNX Runtime inference through the library: `vit::infer::Classifier`
//! against tract and Python onnxruntime on exported random-weight models;
//! preprocessing parity with `Preprocessor`; per-file and per-model errors;
//! the light crate's dependency tree. The `vit-infer` binary is tested in
//! `tests/infer_cli.rs`.
//!
//! Run with `--features export,infer`.

#![cfg(all(feature = "infer", feature = "export"))]

use std::path::{Path, PathBuf};

use tract_onnx::prelude::*;
use vit::config::{Pooling, ViTConfig};
use vit::data::Dataset;
use vit::infer::{argmax, softmax, Classifier, ClassifierOptions, ExecutionProvider, InferError, OptLevel, Provider};
use vit::Preprocessor;

// ---- helpers ----------------------------------------------------------------

mod common;
use common::infer::{cpu, file_logits, open, top};
use common::{
    image_folder, metadata, model_bytes, small, strip_metadata, write_gray_png, write_model, write_png, Lcg, LABELS,
};

fn images(cfg: &ViTConfig, batch: usize, seed: u64) -> Vec<f32> {
    let mut rng = Lcg(seed);
    (0..batch * cfg.in_channels * cfg.image_size * cfg.image_size).map(|_| rng.normal()).collect()
}

fn tract_logits(path: &Path, cfg: &ViTConfig, batch: usize, pixels: &[f32]) -> Vec<f32> {
    let shape = [batch, cfg.in_channels, cfg.image_size, cfg.image_size];
    let run = || -> TractResult<Vec<f32>> {
        let plan = tract_onnx::onnx()
            .model_for_path(path)?
            .with_input_fact(0, f32::fact(shape).into())?
            .into_optimized()?
            .into_runnable()?;
        let out = plan.run(tvec!(Tensor::from_shape(&shape, pixels)?.into()))?;
        let view = out[0].to_plain_array_view::<f32>()?;
        assert_eq!(view.shape(), [batch, cfg.num_classes]);
        Ok(view.iter().copied().collect())
    };
    run().unwrap_or_else(|e| panic!("tract on {}: {e:?}", path.display()))
}

/// `torch.allclose`-style check; panics with the mismatch count and the first
/// bad indices. Returns max |actual - expected|.
fn assert_allclose(actual: &[f32], expected: &[f32], atol: f32, rtol: f32, what: &str) -> f32 {
    assert_eq!(actual.len(), expected.len(), "{what}: lengths differ");
    let mut max = 0.0f32;
    let mut bad = Vec::new();
    for (i, (&a, &e)) in actual.iter().zip(expected).enumerate() {
        let d = (a - e).abs();
        max = max.max(if d.is_nan() { f32::INFINITY } else { d });
        if d.is_nan() || d > atol + rtol * e.abs() {
            bad.push((i, a, e));
        }
    }
    assert!(
        bad.is_empty(),
        "{what}: {} of {} values differ beyond atol {atol:e} + rtol {rtol:e} * |expected| (max |diff| {max:e}); first (index, actual, expected): {:?}",
        bad.len(),
        actual.len(),
        &bad[..bad.len().min(5)]
    );
    max
}

// ---- numerics -----------------------------------------------------------------

#[test]
fn ort_logits_match_tract() {
    let dir = tempfile::tempdir().unwrap();
    let configs = [
        ("rgb cls", small(3)),
        ("gray cls", small(1)),
        ("rgb mean depth 2", ViTConfig { depth: 2, pooling: Pooling::Mean, ..small(3) }),
    ];
    for (i, (name, cfg)) in configs.iter().enumerate() {
        let path = write_model(dir.path(), &format!("m{i}.onnx"), cfg, 7 + i as u64);
        for opt in [OptLevel::Disable, OptLevel::All] {
            let opts = ClassifierOptions {
                provider: Provider::Cpu,
                optimization: opt,
                intra_threads: Some(1),
                ..Default::default()
            };
            let mut clf = Classifier::open(&path, &opts).expect("open");
            assert_eq!(clf.provider(), ExecutionProvider::Cpu);
            for batch in [1, 5] {
                let x = images(cfg, batch, 100 + batch as u64);
                let ort = clf.logits(&x, batch).expect("ort logits");
                assert_eq!(ort.len(), batch * cfg.num_classes);
                let tract = tract_logits(&path, cfg, batch, &x);
                let max =
                    assert_allclose(&ort, &tract, 1e-5, 1e-4, &format!("{name}, {opt:?}, batch {batch}: ort vs tract"));
                eprintln!("{name}, {opt:?}, batch {batch}: max |ort - tract| = {max:.3e}");
            }
        }
    }
}

#[test]
fn batch_rows_match_single_images() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = small(3);
    let path = write_model(dir.path(), "m.onnx", &cfg, 3);
    let mut clf = open(&path);
    let x = images(&cfg, 5, 9);
    let batched = clf.logits(&x, 5).unwrap();
    let len = Preprocessor::from_config(&cfg).image_len();
    for i in 0..5 {
        let one = clf.logits(&x[i * len..(i + 1) * len], 1).unwrap();
        assert_allclose(&batched[i * 3..(i + 1) * 3], &one, 1e-5, 1e-4, &format!("row {i} of batch 5 vs batch 1"));
    }
}

#[test]
fn metadata_and_preprocessing_come_from_the_model() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = small(1);
    let path = write_model(dir.path(), "m.onnx", &cfg, 4);
    let clf = open(&path);
    assert_eq!(clf.metadata(), &metadata(&cfg));
    assert_eq!(clf.preprocessor(), &Preprocessor::from_config(&cfg));
    assert_eq!(clf.labels(), &LABELS.map(String::from));
}

// ---- files and preprocessing --------------------------------------------------

#[test]
fn classify_files_gives_softmax_of_the_logits() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = small(3);
    let path = write_model(dir.path(), "m.onnx", &cfg, 11);
    let mut clf = open(&path);
    let mut files = Vec::new();
    for i in 0..7u64 {
        let f = dir.path().join(format!("img{i}.png"));
        match i % 3 {
            0 => write_png(&f, 16, 16, i),
            1 => write_png(&f, 23, 11, i),      // resized by the Preprocessor
            _ => write_gray_png(&f, 16, 16, i), // gray -> RGB
        }
        files.push(f);
    }
    let results = clf.classify_files(&files, &top(3, 4));
    assert_eq!(results.len(), files.len());
    for (f, r) in files.iter().zip(results) {
        let pred = r.unwrap_or_else(|e| panic!("{}: {e}", f.display()));
        assert_eq!(pred.path.as_deref(), Some(f.as_path()));
        assert_eq!(pred.top.len(), 3);
        let sum: f32 = pred.top.iter().map(|s| s.probability).sum();
        assert!((sum - 1.0).abs() < 1e-5, "{}: probabilities sum to {sum}", f.display());
        assert!(pred.top.windows(2).all(|w| w[0].probability >= w[1].probability), "sorted: {:?}", pred.top);
        let logits = file_logits(&mut clf, f);
        assert_eq!(pred.top[0].index, argmax(&logits), "{}: top-1 vs argmax of {logits:?}", f.display());
        assert_eq!(pred.top[0].label, LABELS[pred.top[0].index]);
        let probs = softmax(&logits);
        for s in &pred.top {
            assert!((s.probability as f64 - probs[s.index]).abs() < 1e-5, "{}: {s:?} vs {probs:?}", f.display());
        }
    }
    // top_k is capped at the class count and 1 gives one entry.
    let r = clf.classify_files(&files[..1], &top(10, 1));
    assert_eq!(r[0].as_ref().unwrap().top.len(), 3);
    let r = clf.classify_files(&files[..1], &top(1, 1));
    assert_eq!(r[0].as_ref().unwrap().top.len(), 1);
}

#[test]
fn classifying_a_file_is_bit_exact_with_the_preprocessor() {
    let dir = tempfile::tempdir().unwrap();
    for channels in [1, 3] {
        let cfg = small(channels);
        let path = write_model(dir.path(), &format!("m{channels}.onnx"), &cfg, 21);
        let mut clf = open(&path);
        for (i, (w, h)) in [(16, 16), (40, 30), (9, 9)].into_iter().enumerate() {
            let f = dir.path().join(format!("c{channels}_{i}.png"));
            write_png(&f, w, h, 50 + i as u64);
            // Same decode + resize + normalise code, same batch size: identical numbers.
            let logits = file_logits(&mut clf, &f);
            let pred = clf.classify_files(&[&f], &top(3, 1)).remove(0).expect("classify");
            let probs = softmax(&logits);
            for s in &pred.top {
                assert_eq!(s.probability, probs[s.index] as f32, "{}: {s:?} vs softmax {probs:?}", f.display());
            }
            let px = Preprocessor::from_config(&cfg).load_file(&f).unwrap();
            let via_pixels = clf.classify_pixels(&[&px], 3).unwrap().remove(0);
            assert_eq!(via_pixels.top, pred.top);
        }
    }
}

#[test]
fn wrong_input_sizes_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = small(3);
    let path = write_model(dir.path(), "m.onnx", &cfg, 5);
    let mut clf = open(&path);
    let gray = vec![0u8; 16 * 16];
    let msg = clf.classify_pixels(&[&gray], 3).unwrap_err().to_string();
    assert!(msg.contains("image 0") && msg.contains("1 channel(s)") && msg.contains("convert the image to 3"), "{msg}");
    let big = vec![0u8; 3 * 32 * 32];
    let msg = clf.classify_pixels(&[&big], 3).unwrap_err().to_string();
    assert!(msg.contains("32x32") && msg.contains("resize"), "{msg}");
    let msg = clf.logits(&vec![0.0; 100], 1).unwrap_err().to_string();
    assert!(msg.contains("100") && msg.contains("768"), "{msg}");
    let msg = clf.logits(&vec![0.0; 768], 2).unwrap_err().to_string();
    assert!(msg.contains("1536"), "{msg}");
    assert!(clf.logits(&[], 0).is_err());
    assert!(clf.classify_pixels(&[], 3).unwrap().is_empty());
}

#[test]
fn a_bad_file_among_images_is_reported_alone() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = small(3);
    let path = write_model(dir.path(), "m.onnx", &cfg, 6);
    let mut clf = open(&path);
    let good1 = dir.path().join("a.png");
    let bad = dir.path().join("b.png");
    let missing = dir.path().join("nope.png");
    let good2 = dir.path().join("c.png");
    write_png(&good1, 16, 16, 1);
    std::fs::write(&bad, b"this is not a png").unwrap();
    write_png(&good2, 16, 16, 2);
    let files = [&good1, &bad, &missing, &good2];
    let r = clf.classify_files(&files, &top(2, 8));
    assert!(r[0].is_ok() && r[3].is_ok(), "{r:?}");
    let e1 = r[1].as_ref().unwrap_err().to_string();
    assert!(e1.contains("b.png") && e1.contains("decode"), "{e1}");
    let e2 = r[2].as_ref().unwrap_err().to_string();
    assert!(e2.contains("nope.png"), "{e2}");
    // Same predictions as without the bad files.
    let alone = clf.classify_files(&[&good1, &good2], &top(2, 8));
    assert_eq!(r[0].as_ref().unwrap(), alone[0].as_ref().unwrap());
    assert_eq!(r[3].as_ref().unwrap(), alone[1].as_ref().unwrap());
}

// ---- evaluation ---------------------------------------------------------------

#[test]
fn evaluate_counts_argmax_per_true_class() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = small(3);
    let path = write_model(dir.path(), "m.onnx", &cfg, 8);
    let data_dir = dir.path().join("data");
    image_folder(&data_dir, &LABELS, 7);
    let mut clf = open(&path);
    let set = vit::infer::load_eval_data(&data_dir, clf.preprocessor()).unwrap();
    clf.check_classes(&set.classes).unwrap();
    assert_eq!(set.data.len(), 21);
    let eval = clf.evaluate(&set.data, 4).unwrap();
    let mut expected = vec![vec![0u64; 3]; 3];
    for i in 0..set.data.len() {
        let x = clf.preprocessor().normalize(set.data.image(i));
        let l = clf.logits(&x, 1).unwrap();
        expected[set.data.labels[i] as usize][argmax(&l)] += 1;
    }
    assert_eq!(eval.confusion.matrix, expected);
    assert_eq!(eval.total, 21);
    let correct: u64 = (0..3).map(|i| expected[i][i]).sum();
    assert_eq!(eval.accuracy, correct as f64 / 21.0);
    // train/ + val/: only val/ is evaluated.
    let split_dir = dir.path().join("split");
    image_folder(&split_dir.join("train"), &LABELS, 2);
    image_folder(&split_dir.join("val"), &LABELS, 3);
    let set = vit::infer::load_eval_data(&split_dir, clf.preprocessor()).unwrap();
    assert_eq!(set.data.len(), 9);
    assert!(set.data.sources.iter().all(|p| p.file().starts_with(split_dir.join("val"))));
    // Other class names are refused.
    let msg = clf.check_classes(&["x".into(), "y".into(), "z".into()]).unwrap_err().to_string();
    assert!(msg.contains("a_red") && msg.contains("\"x\""), "{msg}");
    // Pixels of another size are refused.
    let wrong = Dataset { pixels: vec![0; 10], labels: vec![0], image_len: 10, ..Default::default() };
    assert!(clf.evaluate(&wrong, 4).unwrap_err().to_string().contains("Preprocessor"));
}

#[test]
fn a_streamed_evaluation_equals_the_decoded_one_and_counts_the_same_skipped_files() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_model(dir.path(), "m.onnx", &small(3), 8);
    let data_dir = dir.path().join("data");
    image_folder(&data_dir, &LABELS, 7);
    std::fs::write(data_dir.join("b_green/broken.png"), b"not a png").unwrap();
    let mut clf = open(&path);
    let decoded = vit::infer::load_eval_data(&data_dir, clf.preprocessor()).unwrap();
    let streamed = vit::infer::scan_eval_data(&data_dir, clf.preprocessor()).unwrap();
    assert!(streamed.data.is_streamed() && streamed.data.pixels.is_empty(), "an index holds no pixels");
    assert_eq!((decoded.classes.clone(), decoded.description.clone()), (streamed.classes, streamed.description));
    let reference = clf.evaluate(&decoded.data, 4).unwrap();
    assert_eq!((decoded.data.skipped.len(), reference.total), (1, 21));
    // Batch sizes that do and do not divide the set, so the broken file falls in a batch of its own or not.
    for batch in [1, 4, 7, 64] {
        let eval = clf.evaluate(&streamed.data, batch).unwrap();
        assert_eq!((eval.accuracy, &eval.confusion, eval.total), (reference.accuracy, &reference.confusion, 21));
        assert_eq!(eval.skipped.len(), 1, "batch {batch}");
        assert!(eval.skipped[0].path.ends_with("b_green/broken.png"), "{:?}", eval.skipped);
    }
}

#[test]
fn a_folder_of_tar_shards_evaluates_like_the_image_folder() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_model(dir.path(), "m.onnx", &small(3), 8);
    let data_dir = dir.path().join("data");
    image_folder(&data_dir, &LABELS, 7);
    // WebDataset layout, as Python's tarfile writes it: `<key>.png` and `<key>.cls` per sample,
    // the samples of all classes mixed, and the class names beside the shards.
    let shards = dir.path().join("shards");
    std::fs::create_dir(&shards).unwrap();
    let mut samples = Vec::new();
    for (label, class) in LABELS.iter().enumerate() {
        let mut files: Vec<_> = std::fs::read_dir(data_dir.join(class)).unwrap().map(|e| e.unwrap().path()).collect();
        files.sort();
        samples.extend(files.into_iter().map(|f| (label, f)));
    }
    samples.reverse();
    let mut tar = tar::Builder::new(std::fs::File::create(shards.join("val-000000.tar")).unwrap());
    for (i, (label, file)) in samples.iter().enumerate() {
        let mut add = |name: String, bytes: &[u8]| {
            let mut header = tar::Header::new_gnu();
            header.set_size(bytes.len() as u64);
            header.set_mode(0o644);
            tar.append_data(&mut header, name, bytes).unwrap();
        };
        add(format!("s{i:04}.png"), &std::fs::read(file).unwrap());
        add(format!("s{i:04}.cls"), label.to_string().as_bytes());
    }
    tar.finish().unwrap();
    drop(tar);
    std::fs::write(shards.join("classes.json"), serde_json::json!({ "classes": LABELS }).to_string()).unwrap();

    let mut clf = open(&path);
    let folder = vit::infer::load_eval_data(&data_dir, clf.preprocessor()).unwrap();
    let reference = clf.evaluate(&folder.data, 4).unwrap();
    for set in [
        vit::infer::load_eval_data(&shards, clf.preprocessor()).unwrap(),
        vit::infer::scan_eval_data(&shards, clf.preprocessor()).unwrap(),
    ] {
        assert_eq!(set.classes, folder.classes);
        assert!(set.description.starts_with("tar shards"), "{}", set.description);
        assert_eq!(set.data.len(), 21);
        let eval = clf.evaluate(&set.data, 4).unwrap();
        assert_eq!((eval.accuracy, &eval.confusion, eval.total), (reference.accuracy, &reference.confusion, 21));
    }
}

// ---- model errors -------------------------------------------------------------

#[test]
fn missing_and_corrupt_models_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.onnx");
    let err = Classifier::open(&missing, &cpu()).unwrap_err();
    assert!(matches!(err, InferError::ModelNotFound(_)), "{err:?}");
    assert!(err.to_string().contains("missing.onnx"), "{err}");

    let corrupt = dir.path().join("corrupt.onnx");
    let mut rng = Lcg(99);
    std::fs::write(&corrupt, (0..4096).map(|_| (rng.uniform() * 256.0) as u8).collect::<Vec<u8>>()).unwrap();
    let err = Classifier::open(&corrupt, &cpu()).unwrap_err();
    assert!(matches!(err, InferError::ModelLoad { .. }), "{err:?}");
    assert!(err.to_string().contains("corrupt.onnx"), "{err}");

    // A directory is not a model file: the error says what it is instead, before ONNX Runtime opens it.
    let err = Classifier::open(dir.path(), &cpu()).unwrap_err();
    assert!(matches!(err, InferError::File(vit::files::FileError::NotAFile { kind: "directory", .. })), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains("directory") && msg.contains(&dir.path().display().to_string()), "{msg}");
}

#[test]
fn a_model_without_metadata_names_the_key_or_uses_the_fallback() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = small(3);
    let with = write_model(dir.path(), "with.onnx", &cfg, 12);
    let without = dir.path().join("without.onnx");
    std::fs::write(&without, strip_metadata(&model_bytes(&cfg, 12))).unwrap();
    let err = Classifier::open(&without, &cpu()).unwrap_err();
    assert!(matches!(err, InferError::Metadata { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains("vit.config") && msg.contains("without.onnx"), "{msg}");

    let opts = ClassifierOptions { fallback_metadata: Some(metadata(&cfg)), ..cpu() };
    let mut fallback = Classifier::open(&without, &opts).expect("fallback metadata");
    let x = images(&cfg, 2, 5);
    assert_eq!(fallback.logits(&x, 2).unwrap(), open(&with).logits(&x, 2).unwrap());
    // A fallback that does not fit the graph is refused.
    let opts = ClassifierOptions { fallback_metadata: Some(metadata(&small(1))), ..cpu() };
    let msg = Classifier::open(&without, &opts).unwrap_err().to_string();
    assert!(msg.contains("pixel_values") && msg.contains("f32 [batch, 1, 16, 16]"), "{msg}");
}

#[test]
fn cuda_is_used_or_refused_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_model(dir.path(), "m.onnx", &small(3), 13);
    let opts = ClassifierOptions { provider: Provider::Cuda, ..Default::default() };
    match Classifier::open(&path, &opts) {
        Ok(clf) => assert_eq!(clf.provider(), ExecutionProvider::Cuda),
        Err(e) => {
            assert!(matches!(e, InferError::CudaUnavailable(_)), "{e:?}");
            let msg = e.to_string();
            // The library names the fix without command-line flags (vit-infer adds those).
            assert!(msg.contains("CUDA") && msg.contains("CPU provider") && !msg.contains("--"), "{msg}");
            // Auto falls back to the CPU.
            let auto = Classifier::open(&path, &ClassifierOptions::default()).expect("auto");
            assert_eq!(auto.provider(), ExecutionProvider::Cpu);
            assert!(auto.cuda_fallback_reason().is_some());
            assert!(open(&path).cuda_fallback_reason().is_none());
        }
    }
}

// ---- Python onnxruntime -------------------------------------------------------

fn venv_python() -> PathBuf {
    let venv = std::env::var_os("VIT_VENV").map(PathBuf::from).unwrap_or_else(|| {
        PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache/vit-toolchain/venv")
    });
    let python = venv.join("bin/python");
    assert!(python.exists(), "{} not found: run scripts/setup.sh (or set VIT_VENV)", python.display());
    python
}

const PY_RUN: &str = r#"
import sys, numpy as np, onnxruntime as ort
model, inp, out, n, c, s = sys.argv[1], sys.argv[2], sys.argv[3], *map(int, sys.argv[4:7])
x = np.fromfile(inp, dtype="<f4").reshape(n, c, s, s)
sess = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
meta = sess.get_modelmeta().custom_metadata_map
assert "vit.config" in meta and "vit.labels" in meta, meta
y = sess.run(None, {sess.get_inputs()[0].name: x})[0]
np.ascontiguousarray(y, dtype="<f4").tofile(out)
"#;

#[test]
fn python_onnxruntime_agrees() {
    let dir = tempfile::tempdir().unwrap();
    for (i, cfg) in [small(3), small(1)].iter().enumerate() {
        let path = write_model(dir.path(), &format!("m{i}.onnx"), cfg, 30 + i as u64);
        let n = 6;
        let x = images(cfg, n, 40 + i as u64);
        let inp = dir.path().join(format!("x{i}.f32"));
        let out = dir.path().join(format!("y{i}.f32"));
        std::fs::write(&inp, x.iter().flat_map(|v| v.to_le_bytes()).collect::<Vec<u8>>()).unwrap();
        let status = std::process::Command::new(venv_python())
            .args(["-c", PY_RUN])
            .arg(&path)
            .arg(&inp)
            .arg(&out)
            .args([n, cfg.in_channels, cfg.image_size].map(|v| v.to_string()))
            .status()
            .expect("run python");
        assert!(status.success(), "python onnxruntime failed ({status})");
        let py: Vec<f32> =
            std::fs::read(&out).unwrap().chunks(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
        let mut clf = open(&path);
        let ours = clf.logits(&x, n).unwrap();
        let max = assert_allclose(&ours, &py, 1e-4, 0.0, &format!("config {i}: vit::infer vs Python onnxruntime"));
        eprintln!("config {i}: max |rust ort - python ort| = {max:.3e}");
        let k = cfg.num_classes;
        for j in 0..n {
            assert_eq!(argmax(&ours[j * k..(j + 1) * k]), argmax(&py[j * k..(j + 1) * k]), "image {j}: top-1 differs");
        }
    }
}

// ---- dependency tree ----------------------------------------------------------

#[test]
fn inference_path_does_not_pull_torch_protobuf_or_clap() {
    let out = std::process::Command::new(env!("CARGO"))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args([
            "tree",
            "--offline",
            "-p",
            "vit",
            "--no-default-features",
            "--features",
            "infer",
            "-e",
            "normal",
            "--prefix",
            "none",
        ])
        .output()
        .expect("run cargo tree");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "cargo tree failed: {}", String::from_utf8_lossy(&out.stderr));
    assert!(text.lines().any(|l| l.starts_with("ort ")), "ort missing from:\n{text}");
    for banned in ["torch-sys", "tch", "prost", "clap"] {
        let hit = text.lines().find(|l| l.split_whitespace().next() == Some(banned));
        assert!(hit.is_none(), "`{banned}` is in the inference dependency tree: {hit:?}");
    }
}
