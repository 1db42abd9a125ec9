//! The `vit-infer` binary, run as a process: text and JSON output checked
//! against the library's numbers, exit codes 0/1/2, errors and their
//! command-line hints, `--eval` on image folders and Fashion-MNIST, `--help`.
//!
//! Run with `--features export,cli`.

#![cfg(all(feature = "cli", feature = "export"))]

use std::path::PathBuf;
use std::process::{Command, Output};

use vit::config::ViTConfig;
use vit::infer::{argmax, softmax, Classifier, ClassifierOptions, Provider};
use vit::ModelMetadata;

mod common;
use common::infer::{file_logits, open};
use common::{image_folder, small, strip_metadata, write_gray_png, write_model, write_png, LABELS};

fn vit_infer(args: &[&std::ffi::OsStr]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_vit-infer")).args(args).output().expect("run vit-infer")
}

fn run(args: &[&dyn AsRef<std::ffi::OsStr>]) -> (i32, String, String) {
    let args: Vec<&std::ffi::OsStr> = args.iter().map(|a| a.as_ref()).collect();
    let out = vit_infer(&args);
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

struct Fixture {
    dir: tempfile::TempDir,
    model: PathBuf,
    images: PathBuf,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let model = write_model(dir.path(), "m.onnx", &small(3), 17);
    let images = dir.path().join("imgs");
    std::fs::create_dir_all(images.join("sub")).unwrap();
    write_png(&images.join("one.png"), 16, 16, 1);
    write_png(&images.join("sub/two.PNG"), 20, 20, 2);
    write_gray_png(&images.join("sub/three.png"), 16, 16, 3);
    std::fs::write(images.join("notes.txt"), "not an image").unwrap();
    Fixture { dir, model, images }
}

#[test]
fn classifies_a_directory_as_json_lines() {
    let f = fixture();
    let (code, stdout, stderr) =
        run(&[&"--model", &f.model, &"--json", &"--top-k", &"2", &"--batch-size", &"2", &"--ep", &"cpu", &f.images]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stderr.contains("execution provider: cpu"), "{stderr}");
    let lines: Vec<serde_json::Value> = stdout.lines().map(|l| serde_json::from_str(l).expect("json line")).collect();
    assert_eq!(lines.len(), 3, "{stdout}");
    let mut clf = open(&f.model);
    for v in &lines {
        let path = PathBuf::from(v["path"].as_str().unwrap());
        assert!(path.extension().unwrap().eq_ignore_ascii_case("png"));
        assert_eq!(v["provider"], "cpu");
        let top = v["top"].as_array().unwrap();
        assert_eq!(top.len(), 2);
        let logits = file_logits(&mut clf, &path);
        assert_eq!(top[0]["index"].as_u64().unwrap() as usize, argmax(&logits), "{v}");
        assert_eq!(top[0]["label"], LABELS[argmax(&logits)]);
        let p = top[0]["probability"].as_f64().unwrap();
        assert!((p - softmax(&logits)[argmax(&logits)]).abs() < 1e-5, "{v}");
    }
}

#[test]
fn text_output_lists_path_then_labels() {
    let f = fixture();
    let one = f.images.join("one.png");
    let (code, stdout, stderr) = run(&[&"-m", &f.model, &"-k", &"3", &one]);
    assert_eq!(code, 0, "{stderr}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 4, "{stdout}");
    assert_eq!(lines[0], one.display().to_string());
    for l in &lines[1..] {
        let mut parts = l.split_whitespace();
        let label = parts.next().unwrap();
        assert!(LABELS.contains(&label), "{l}");
        let p: f64 = parts.next().unwrap().parse().unwrap();
        assert!((0.0..=1.0).contains(&p), "{l}");
    }
}

#[test]
fn failed_files_exit_1_and_the_rest_is_classified() {
    let f = fixture();
    let bad = f.dir.path().join("bad.png");
    std::fs::write(&bad, b"garbage").unwrap();
    let (code, stdout, stderr) = run(&[&"-m", &f.model, &"--json", &f.images, &bad, &f.images.join("notes.txt")]);
    assert_eq!(code, 1, "{stderr}");
    let lines: Vec<serde_json::Value> = stdout.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 5, "{stdout}");
    assert_eq!(lines.iter().filter(|v| v.get("top").is_some()).count(), 3);
    let errors: Vec<_> = lines.iter().filter(|v| v.get("error").is_some()).collect();
    assert_eq!(errors.len(), 2);
    assert!(errors[0]["path"].as_str().unwrap().ends_with("bad.png"));
    assert!(errors[1]["error"].as_str().unwrap().contains("notes.txt"));
    // Text mode reports the failure on stderr.
    let (code, _, stderr) = run(&[&"-m", &f.model, &bad]);
    assert_eq!(code, 1);
    assert!(stderr.contains("bad.png"), "{stderr}");
}

#[test]
fn model_and_usage_errors_exit_2() {
    let f = fixture();
    let img = f.images.join("one.png");
    let (code, _, stderr) = run(&[&"-m", &f.dir.path().join("none.onnx"), &img]);
    assert_eq!(code, 2);
    assert!(stderr.contains("none.onnx") && stderr.contains("does not exist"), "{stderr}");
    assert!(stderr.contains("hint: pass --model PATH"), "{stderr}");

    let corrupt = f.dir.path().join("corrupt.onnx");
    std::fs::write(&corrupt, [7u8; 1000]).unwrap();
    let (code, _, stderr) = run(&[&"-m", &corrupt, &img]);
    assert_eq!(code, 2);
    assert!(stderr.contains("corrupt.onnx"), "{stderr}");

    let bare = f.dir.path().join("bare.onnx");
    std::fs::write(&bare, strip_metadata(&std::fs::read(&f.model).unwrap())).unwrap();
    let (code, _, stderr) = run(&[&"-m", &bare, &img]);
    assert_eq!(code, 2);
    assert!(stderr.contains("vit.config"), "{stderr}");

    // A device or a FIFO as the model: refused by name at once (ONNX Runtime would read /dev/zero
    // until memory runs out, and block on a FIFO).
    let (zero, pipe) = (f.dir.path().join("zero.onnx"), f.dir.path().join("pipe.onnx"));
    std::os::unix::fs::symlink("/dev/zero", &zero).unwrap();
    assert!(Command::new("mkfifo").arg(&pipe).status().unwrap().success());
    for (model, kind) in [(&zero, "character device"), (&pipe, "FIFO")] {
        let started = std::time::Instant::now();
        let (code, _, stderr) = run(&[&"-m", model, &img]);
        assert_eq!(code, 2, "{stderr}");
        assert!(stderr.contains(&format!("{}: it is a {kind}, not a regular file", model.display())), "{stderr}");
        assert!(started.elapsed() < std::time::Duration::from_secs(20));
    }

    let empty = f.dir.path().join("empty");
    std::fs::create_dir_all(empty.join("nested")).unwrap();
    std::fs::write(empty.join("nested/readme.md"), "x").unwrap();
    let (code, _, stderr) = run(&[&"-m", &f.model, &empty]);
    assert_eq!(code, 2);
    assert!(stderr.contains("no image files") && stderr.contains("empty"), "{stderr}");

    // No inputs, unknown flag, bad value, inputs together with --eval: clap usage errors.
    assert_eq!(run(&[&"-m", &f.model]).0, 2);
    assert_eq!(run(&[&"--frobnicate", &img]).0, 2);
    assert_eq!(run(&[&"--top-k", &"0", &img]).0, 2);
    assert_eq!(run(&[&"--ep", &"tpu", &img]).0, 2);
    assert_eq!(run(&[&"--eval", &f.images, &img]).0, 2);
}

#[test]
fn ep_cuda_errors_when_unavailable() {
    let f = fixture();
    let img = f.images.join("one.png");
    let cuda = Classifier::open(&f.model, &ClassifierOptions { provider: Provider::Cuda, ..Default::default() });
    let (code, _, stderr) = run(&[&"-m", &f.model, &"--ep", &"cuda", &img]);
    if cuda.is_ok() {
        assert_eq!(code, 0, "{stderr}");
        assert!(stderr.contains("execution provider: cuda"), "{stderr}");
    } else {
        assert_eq!(code, 2, "{stderr}");
        assert!(stderr.contains("CUDA execution provider requested but unavailable"), "{stderr}");
        assert!(stderr.contains("hint: use --ep auto") && stderr.contains("--ep cpu"), "{stderr}");
    }
}

#[test]
fn missing_runtime_library_says_how_to_fix_it() {
    let f = fixture();
    let out = Command::new(env!("CARGO_BIN_EXE_vit-infer"))
        .env("ORT_DYLIB_PATH", f.dir.path().join("libonnxruntime.so.0"))
        .arg("-m")
        .arg(&f.model)
        .arg(f.images.join("one.png"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("libonnxruntime.so.0")
            && stderr.contains("scripts/setup.sh")
            && stderr.contains("ORT_DYLIB_PATH"),
        "{stderr}"
    );
}

#[test]
fn eval_prints_accuracy_and_confusion_matrix() {
    let f = fixture();
    let data = f.dir.path().join("data");
    image_folder(&data, &LABELS, 5);
    let (code, stdout, stderr) = run(&[&"-m", &f.model, &"--eval", &data, &"--json", &"--batch-size", &"4"]);
    assert_eq!(code, 0, "{stderr}");
    let v: serde_json::Value = serde_json::from_str(stdout.trim()).expect("one json object");
    let mut clf = open(&f.model);
    let set = vit::infer::load_eval_data(&data, clf.preprocessor()).unwrap();
    let eval = clf.evaluate(&set.data, 7).unwrap();
    assert_eq!(v["accuracy"].as_f64().unwrap(), eval.accuracy);
    assert_eq!(v["total"].as_u64().unwrap(), 15);
    assert_eq!(v["labels"], serde_json::json!(LABELS));
    assert_eq!(v["confusion_matrix"], serde_json::json!(eval.confusion));

    let (code, stdout, stderr) = run(&[&"-m", &f.model, &"--eval", &data]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.starts_with(&format!("accuracy {:.4}", eval.accuracy)), "{stdout}");
    assert!(stdout.contains("confusion matrix") && stdout.contains("b_green"), "{stdout}");

    // Classes that are not the model's labels.
    let other = f.dir.path().join("other");
    image_folder(&other, &["x", "y", "z"], 1);
    let (code, _, stderr) = run(&[&"-m", &f.model, &"--eval", &other]);
    assert_eq!(code, 2);
    assert!(stderr.contains("not the model's labels"), "{stderr}");
    // Not a data folder.
    let (code, _, stderr) = run(&[&"-m", &f.model, &"--eval", &f.dir.path().join("nothing")]);
    assert_eq!(code, 2, "{stderr}");
}

#[test]
fn eval_on_fashion_mnist_idx_uses_t10k() {
    let dir = PathBuf::from(
        std::env::var_os("FASHION_MNIST_DIR").unwrap_or_else(|| "/usr/share/datasets/fashion-mnist".into()),
    );
    if !vit::data::is_idx_dir(&dir) {
        eprintln!("skipped: no Fashion-MNIST IDX files in {} (set FASHION_MNIST_DIR)", dir.display());
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let cfg = ViTConfig { image_size: 28, patch_size: 7, num_classes: 10, ..small(1) };
    let meta = ModelMetadata {
        config: cfg.clone(),
        labels: vit::data::FASHION_MNIST_LABELS.map(String::from).to_vec(),
        val_accuracy: None,
    };
    let model = tmp.path().join("fm.onnx");
    std::fs::write(&model, vit::onnx::export_to_bytes(&meta, &common::random_weights(&cfg, 77, 0.3)).unwrap()).unwrap();
    let (code, stdout, stderr) = run(&[&"-m", &model, &"--eval", &dir, &"--json", &"--batch-size", &"256"]);
    assert_eq!(code, 0, "{stderr}");
    let v: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(v["total"].as_u64(), Some(10_000));
    assert_eq!(v["labels"], serde_json::json!(vit::data::FASHION_MNIST_LABELS));
    let mut clf = open(&model);
    let splits = vit::data::load_splits(&dir, clf.preprocessor(), &vit::data::LoadOptions::default()).unwrap();
    let eval = clf.evaluate(&splits.val, 1000).unwrap();
    assert_eq!(v["accuracy"].as_f64().unwrap(), eval.accuracy);
    assert_eq!(v["confusion_matrix"], serde_json::json!(eval.confusion));
    // A model whose labels are not Fashion-MNIST's is refused.
    let other = write_model(tmp.path(), "other.onnx", &ViTConfig { image_size: 28, patch_size: 7, ..small(1) }, 3);
    let (code, _, stderr) = run(&[&"-m", &other, &"--eval", &dir]);
    assert_eq!(code, 2);
    assert!(stderr.contains("T-shirt/top") && stderr.contains("not the model's labels"), "{stderr}");
}

#[test]
fn help_documents_every_flag() {
    let (code, stdout, _) = run(&[&"--help"]);
    assert_eq!(code, 0);
    for flag in [
        "--model",
        "--top-k",
        "--json",
        "--ep",
        "--threads",
        "--batch-size",
        "--opt-level",
        "--eval",
        "runs/demo/model.onnx",
        "--verbose",
    ] {
        assert!(stdout.contains(flag), "--help lacks {flag}:\n{stdout}");
    }
}

#[test]
fn file_names_that_are_not_utf8_or_hold_control_characters_print_distinct_and_escaped() {
    use std::os::unix::ffi::OsStrExt;
    let f = fixture();
    let dir = f.dir.path().join("odd");
    std::fs::create_dir_all(&dir).unwrap();
    let names: [&[u8]; 3] = [b"\xffa.png", b"\xfea.png", b"esc\x1b[2J.png"];
    for (i, name) in names.iter().enumerate() {
        write_png(&dir.join(std::ffi::OsStr::from_bytes(name)), 16, 16, i as u64);
    }
    let (code, stdout, _) = run(&[&"-m", &f.model, &"--json", &dir]);
    assert_eq!(code, 0, "{stdout}");
    let paths: Vec<String> = stdout
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["path"].as_str().unwrap().to_string())
        .collect();
    let want: Vec<String> =
        ["esc\\u{1b}[2J.png", "\\xfea.png", "\\xffa.png"].iter().map(|n| format!("{}/{n}", dir.display())).collect();
    let mut want = want;
    want.sort();
    let mut sorted = paths.clone();
    sorted.sort();
    assert_eq!(sorted, want, "{stdout}");
    let (code, stdout, _) = run(&[&"-m", &f.model, &dir]);
    assert_eq!(code, 0);
    assert!(!stdout.contains('\u{1b}') && stdout.contains("esc\\u{1b}[2J.png"), "{stdout:?}");
}
