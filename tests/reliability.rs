//! Nothing lost, nothing silent: `vit-infer` and data loading on the inputs a
//! hostile test found mishandled. Each test states what the user meets (exit
//! status, the key words of the message) and checks that no image went
//! missing without a word: NaN models, unreadable entries, split layouts,
//! endless files, self-contradicting metadata, image-less folders, thread
//! counts.
//!
//! Run with `--features export,cli`.

#![cfg(all(feature = "cli", feature = "export"))]

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Command;

use vit::infer::{Classifier, InferError};

mod common;
use common::infer::cpu;
use common::{
    image_folder, metadata, model_bytes, random_weights, set_metadata, small, strip_metadata, write_model, write_png,
    LABELS,
};

/// Runs `vit-infer` with `args`: (exit code, stdout, stderr).
fn run(args: &[&dyn AsRef<OsStr>]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_vit-infer")).args(args).output().expect("run vit-infer");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The JSON lines of `stdout`.
fn json_lines(stdout: &str) -> Vec<serde_json::Value> {
    stdout.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"))).collect()
}

/// A model of `small(3)` whose every weight is NaN: every logit it gives is NaN.
fn nan_model(dir: &Path) -> PathBuf {
    let cfg = small(3);
    let path = dir.join("nan.onnx");
    let bytes = vit::onnx::export_to_bytes(&metadata(&cfg), &random_weights(&cfg, 1, f32::NAN)).expect("export");
    std::fs::write(&path, bytes).unwrap();
    path
}

// ---- 3: non-finite logits are errors, never results ---------------------------

#[test]
fn nan_logits_fail_each_file_and_never_print_as_results() {
    let dir = tempfile::tempdir().unwrap();
    let model = nan_model(dir.path());
    let images = dir.path().join("imgs");
    image_folder(&images, &LABELS, 2);

    let (code, stdout, stderr) = run(&[&"-m", &model, &images]);
    assert_eq!(code, 1, "{stderr}");
    assert!(!stdout.contains("NaN"), "no NaN probability is printed:\n{stdout}");
    assert!(stderr.contains("non-finite logits") && stderr.contains("0.png"), "{stderr}");
    assert!(stderr.contains("6 of 6 file(s) could not be classified"), "{stderr}");

    let (code, stdout, stderr) = run(&[&"-m", &model, &"--json", &images]);
    assert_eq!(code, 1, "{stderr}");
    let lines = json_lines(&stdout);
    assert_eq!(lines.len(), 6, "one line per image, none lost:\n{stdout}");
    for v in &lines {
        assert!(v.get("top").is_none() && !v.to_string().contains("null"), "{v}");
        assert!(v["error"].as_str().unwrap().contains("non-finite logits"), "{v}");
    }
}

#[test]
fn eval_refuses_an_accuracy_over_nan_logits() {
    let dir = tempfile::tempdir().unwrap();
    let model = nan_model(dir.path());
    let data = dir.path().join("data");
    image_folder(&data, &LABELS, 2);

    let (code, stdout, stderr) = run(&[&"-m", &model, &"--eval", &data, &"--json"]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stdout.is_empty(), "no accuracy is reported:\n{stdout}");
    assert!(stderr.contains("6 of 6 images gave non-finite logits") && stderr.contains("no accuracy"), "{stderr}");

    let mut clf = Classifier::open(&model, &cpu()).unwrap();
    let set = vit::infer::load_eval_data(&data, clf.preprocessor()).unwrap();
    let err = clf.evaluate(&set.data, 4).unwrap_err();
    assert!(matches!(err, InferError::NonFiniteEvaluation { count: 6, total: 6, .. }), "{err}");
    let px = set.data.image(0);
    let err = clf.classify_pixels(&[px, px], 1).unwrap_err();
    assert!(matches!(err, InferError::NonFiniteLogits { ref image, .. } if image == "image 0"), "{err}");
}

// ---- 4: unreadable entries are reported and counted ---------------------------

#[test]
fn unreadable_entries_in_a_walked_folder_fail_by_themselves() {
    let dir = tempfile::tempdir().unwrap();
    let model = write_model(dir.path(), "m.onnx", &small(3), 5);
    let images = dir.path().join("imgs");
    image_folder(&images, &LABELS, 1);
    // Tests run as root, where permission bits do not stop reads: a dangling
    // link and a link loop cannot be read by anyone.
    std::os::unix::fs::symlink(dir.path().join("gone.png"), images.join("a_red/ghost.png")).unwrap();
    std::os::unix::fs::symlink(&images, images.join("b_green/loop")).unwrap();

    let (code, stdout, stderr) = run(&[&"-m", &model, &"--json", &images]);
    assert_eq!(code, 1, "{stderr}");
    let lines = json_lines(&stdout);
    assert_eq!(lines.iter().filter(|v| v.get("top").is_some()).count(), 3, "{stdout}");
    let errors: Vec<&str> = lines.iter().filter_map(|v| v["error"].as_str()).collect();
    assert_eq!(errors.len(), 2, "{stdout}");
    assert!(errors.iter().any(|e| e.contains("ghost.png")) && errors.iter().any(|e| e.contains("loop")), "{stdout}");
    assert!(stderr.contains("2 of 5 file(s) could not be classified"), "{stderr}");

    let (code, _, stderr) = run(&[&"-m", &model, &images]);
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("ghost.png") && stderr.contains("cannot read"), "{stderr}");
}

// ---- 5, 13: split folders are never classes --------------------------------------

#[test]
fn eval_reads_train_and_test_as_splits_and_refuses_a_lone_train() {
    let dir = tempfile::tempdir().unwrap();
    let model = write_model(dir.path(), "m.onnx", &small(3), 5);
    let data = dir.path().join("data");
    image_folder(&data.join("train"), &LABELS, 1);
    image_folder(&data.join("test"), &LABELS, 2);

    let (code, stdout, stderr) = run(&[&"-m", &model, &"--eval", &data]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("/6 correct) on test split"), "the 6 test images, not 2 classes train/test:\n{stdout}");

    std::fs::remove_dir_all(data.join("test")).unwrap();
    let (code, stdout, stderr) = run(&[&"-m", &model, &"--eval", &data]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stdout.is_empty(), "{stdout}");
    assert!(stderr.contains("no evaluation split beside it") && stderr.contains("val/, valid/"), "{stderr}");
}

// ---- 10: huge and endless files are refused before reading ------------------------

#[test]
fn huge_endless_and_special_files_are_refused_without_reading_them() {
    let dir = tempfile::tempdir().unwrap();
    let model = write_model(dir.path(), "m.onnx", &small(3), 5);
    let good = dir.path().join("good.png");
    write_png(&good, 16, 16, 1);
    // Sparse: 2 GiB on paper and no disk used; read whole it would take 2 GiB of memory.
    let huge = dir.path().join("huge.png");
    std::fs::File::create(&huge).unwrap().set_len(1 << 31).unwrap();
    let fifo = dir.path().join("fifo.png");
    let have_fifo = Command::new("mkfifo").arg(&fifo).status().is_ok_and(|s| s.success());
    let mut args: Vec<&dyn AsRef<OsStr>> = vec![&"-m", &model, &"--json", &good, &huge, &"/dev/zero"];
    if have_fifo {
        args.push(&fifo);
    }
    let started = std::time::Instant::now();
    let (code, stdout, stderr) = run(&args);
    assert!(started.elapsed().as_secs() < 60, "nothing may be read whole, nor block on the FIFO");
    assert_eq!(code, 1, "{stderr}");
    let lines = json_lines(&stdout);
    assert_eq!(lines.len(), args.len() - 3, "{stdout}");
    assert!(lines[0].get("top").is_some(), "the good image is classified: {stdout}");
    let error = |i: usize| lines[i]["error"].as_str().unwrap_or_default().to_string();
    assert!(error(1).contains("huge.png") && error(1).contains("2147483648 bytes, over the limit"), "{stdout}");
    assert!(error(1).contains("VIT_MAX_IMAGE_BYTES"), "{stdout}");
    assert!(error(2).contains("/dev/zero") && error(2).contains("not a regular file"), "{stdout}");
    if have_fifo {
        assert!(error(3).contains("FIFO"), "{stdout}");
    }

    // The limit is the environment's when set.
    let out = Command::new(env!("CARGO_BIN_EXE_vit-infer"))
        .env("VIT_MAX_IMAGE_BYTES", "100")
        .args([OsStr::new("-m"), model.as_os_str(), good.as_os_str()])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("over the limit of 100 bytes"), "{stderr}");
}

// ---- 14, 15: metadata that contradicts itself, or is missing --------------------

#[test]
fn a_model_whose_metadata_contradicts_itself_is_refused_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("one.png");
    write_png(&img, 16, 16, 1);
    let bytes = model_bytes(&small(3), 5);
    for (key, value) in [("vit.image_size", "64"), ("vit.mean", "[0.1,0.2,0.3]"), ("vit.resize", "nearest")] {
        let model = dir.path().join("edited.onnx");
        std::fs::write(&model, set_metadata(&bytes, key, value)).unwrap();
        let (code, stdout, stderr) = run(&[&"-m", &model, &img]);
        assert_eq!(code, 2, "{stderr}");
        assert!(stdout.is_empty(), "{stdout}");
        assert!(stderr.contains(&format!("`{key}` = {value} contradicts `vit.config`")), "{stderr}");
        assert!(stderr.contains("edited.onnx"), "{stderr}");
    }
}

#[test]
fn a_model_without_metadata_gets_a_hint_that_is_true() {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("one.png");
    write_png(&img, 16, 16, 1);
    let bare = dir.path().join("bare.onnx");
    std::fs::write(&bare, strip_metadata(&model_bytes(&small(3), 5))).unwrap();
    let (code, _, stderr) = run(&[&"-m", &bare, &img]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("vit.config") && stderr.contains("vit-train export"), "{stderr}");
    assert!(!stderr.contains("pass the image size"), "vit-infer has no such flags: {stderr}");
}

// ---- 16: --eval counts what it skips; image-less folders fail by themselves ---------

#[test]
fn eval_with_skipped_files_exits_1_and_counts_them() {
    let dir = tempfile::tempdir().unwrap();
    let model = write_model(dir.path(), "m.onnx", &small(3), 5);
    let data = dir.path().join("data");
    image_folder(&data, &LABELS, 2);
    std::fs::write(data.join("a_red/broken.png"), b"not a png").unwrap();
    // A dangling link: unreadable even for root, who runs these tests.
    std::os::unix::fs::symlink(dir.path().join("gone.png"), data.join("c_blue/ghost.png")).unwrap();

    let (code, stdout, stderr) = run(&[&"-m", &model, &"--eval", &data, &"--json"]);
    assert_eq!(code, 1, "{stderr}");
    let v: serde_json::Value = serde_json::from_str(stdout.trim()).expect("one json object");
    assert_eq!((v["total"].as_u64(), v["skipped"].as_u64()), (Some(6), Some(2)), "{v}");
    assert!(stderr.contains("broken.png") && stderr.contains("ghost.png"), "each is named: {stderr}");

    let (code, stdout, stderr) = run(&[&"-m", &model, &"--eval", &data]);
    assert_eq!(code, 1, "{stderr}");
    assert!(stdout.contains("(") && stdout.contains("/6 correct)"), "{stdout}");
    assert!(stderr.contains("2 file(s) skipped") && stderr.contains("the other 6"), "{stderr}");

    std::fs::remove_file(data.join("a_red/broken.png")).unwrap();
    std::fs::remove_file(data.join("c_blue/ghost.png")).unwrap();
    let (code, stdout, stderr) = run(&[&"-m", &model, &"--eval", &data, &"--json"]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(serde_json::from_str::<serde_json::Value>(stdout.trim()).unwrap()["skipped"], 0);
}

#[test]
fn eval_on_a_missing_folder_names_the_eval_flag() {
    let dir = tempfile::tempdir().unwrap();
    let model = write_model(dir.path(), "m.onnx", &small(3), 5);
    let (code, stdout, stderr) = run(&[&"-m", &model, &"--eval", &dir.path().join("nowhere")]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stdout.is_empty(), "{stdout}");
    assert!(stderr.contains("nowhere") && stderr.contains("does not exist"), "{stderr}");
    assert!(stderr.contains("hint: pass --eval DIR") && !stderr.contains("--data"), "{stderr}");
}

#[test]
fn an_image_less_directory_fails_by_itself_unless_nothing_is_classifiable() {
    let dir = tempfile::tempdir().unwrap();
    let model = write_model(dir.path(), "m.onnx", &small(3), 5);
    let good = dir.path().join("good.png");
    write_png(&good, 16, 16, 1);
    let empty = dir.path().join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    std::fs::write(empty.join("readme.txt"), "no images here").unwrap();
    let missing = dir.path().join("missing.png");

    let (code, stdout, stderr) = run(&[&"-m", &model, &"--json", &empty, &good, &missing]);
    assert_eq!(code, 1, "{stderr}");
    let lines = json_lines(&stdout);
    assert_eq!(lines.len(), 3, "every input has its line:\n{stdout}");
    assert!(lines[0]["path"].as_str().unwrap().ends_with("empty"), "{stdout}");
    assert!(lines[0]["error"].as_str().unwrap().contains("no image files"), "{stdout}");
    assert!(lines[1].get("top").is_some() && lines[2]["error"].as_str().unwrap().contains("missing.png"), "{stdout}");
    assert!(stderr.contains("2 of 3 file(s) could not be classified"), "{stderr}");

    let (code, stdout, stderr) = run(&[&"-m", &model, &empty, &empty]);
    assert_eq!(code, 2, "nothing at all is classifiable: {stderr}");
    assert!(
        stdout.is_empty() && stderr.contains("nothing to classify") && stderr.contains("no image files"),
        "{stderr}"
    );
}

#[test]
fn help_states_the_exit_statuses() {
    let (code, stdout, _) = run(&[&"--help"]);
    assert_eq!(code, 0);
    for words in [
        "0  every input was classified",
        "1  some inputs failed, each reported and the rest classified",
        "an image-less directory among other inputs",
        "with --eval, files were skipped (counted in \"skipped\"",
        "2  usage or model error",
        "nothing at all to classify",
        "NaN or infinite logits in --eval",
    ] {
        assert!(stdout.contains(words), "--help lacks {words:?}:\n{stdout}");
    }
}

// ---- 9: --threads is bounded ------------------------------------------------------

#[test]
fn threads_beyond_four_per_core_are_refused_naming_the_limit() {
    let dir = tempfile::tempdir().unwrap();
    let model = write_model(dir.path(), "m.onnx", &small(3), 5);
    let img = dir.path().join("one.png");
    write_png(&img, 16, 16, 1);
    let limit = vit::infer::max_intra_threads();
    assert_eq!(limit % 4, 0);
    for threads in [limit + 1, 100_000] {
        let started = std::time::Instant::now();
        let (code, stdout, stderr) = run(&[&"-m", &model, &"--threads", &threads.to_string(), &img]);
        assert!(started.elapsed().as_secs() < 30, "refused at once, not after starting {threads} threads");
        assert_eq!(code, 2, "{stderr}");
        assert!(stdout.is_empty(), "{stdout}");
        assert!(stderr.contains(&format!("more than the limit of {limit} threads")), "{stderr}");
    }
    let (code, _, stderr) = run(&[&"-m", &model, &"--threads", &limit.to_string(), &img]);
    assert_eq!(code, 0, "the limit itself is accepted: {stderr}");

    let opts = vit::infer::ClassifierOptions { intra_threads: Some(limit + 1), ..cpu() };
    let err = Classifier::open(&model, &opts).unwrap_err();
    assert!(matches!(err, InferError::Invalid(_)) && err.to_string().contains(&format!("limit of {limit}")), "{err}");
}
