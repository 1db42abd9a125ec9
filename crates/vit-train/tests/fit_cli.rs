//! `vit-train` end to end on a small COCO-5 subset: learning, run folder,
//! plots, determinism, resume after a kill, and bad input.

mod common;

use std::path::Path;

use common::cli::*;
use common::*;
use serde_json::Value;

#[test]
fn short_fit_learns_and_fills_the_run_folder() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = write_config(tmp.path(), SMALL);
    let run = tmp.path().join("run");
    let out = run_ok(
        bin()
            .arg("--config")
            .arg(&cfg)
            .arg("--data")
            .arg(coco5())
            .arg("--out")
            .arg(&run)
            .args(["--max-per-class", "200"]),
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("validation accuracy") && stdout.contains("max |diff|"), "{stdout}");

    let s = summary(&run);
    let acc = s["val_accuracy"].as_f64().unwrap();
    assert!(acc > 0.28, "accuracy {acc} should be well above chance (0.2) on 1000 val images");
    assert_eq!(s["labels"], serde_json::json!(["airplane", "bus", "cat", "dog", "pizza"]));
    assert_eq!((s["train_images"].as_u64(), s["val_images"].as_u64()), (Some(1000), Some(1000)));
    let cm = s["confusion_matrix"].as_array().unwrap();
    let total: u64 = cm.iter().flat_map(|r| r.as_array().unwrap()).map(|v| v.as_u64().unwrap()).sum();
    assert_eq!(total, 1000);
    assert!(s["train_images_per_sec"].as_f64().unwrap() > 0.0);

    // The loss went down: mean of the last three logged steps below the first three.
    let steps: Vec<f64> = std::fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|v| v["kind"] == "step")
        .map(|v| v["loss"].as_f64().unwrap())
        .collect();
    assert!(steps.len() >= 30, "{} logged steps", steps.len());
    let head: f64 = steps[..3].iter().sum::<f64>() / 3.0;
    let tail: f64 = steps[steps.len() - 3..].iter().sum::<f64>() / 3.0;
    assert!(tail < head - 0.05, "loss should decrease: {head} -> {tail}");

    for f in [
        "config.toml",
        "labels.json",
        "last.safetensors",
        "best.safetensors",
        "resume.safetensors",
        "confusion.csv",
        "model.onnx",
    ] {
        assert!(run.join(f).is_file(), "{f} missing");
    }
    let loss_png = image::open(run.join("loss.png")).unwrap();
    assert_eq!((loss_png.width(), loss_png.height()), vit_train::plots::LOSS_SIZE);
    let cm_png = image::open(run.join("confusion.png")).unwrap();
    assert_eq!((cm_png.width(), cm_png.height()), vit_train::plots::CONFUSION_SIZE);
    let csv = std::fs::read_to_string(run.join("confusion.csv")).unwrap();
    assert!(csv.starts_with("true\\predicted,airplane,bus,cat,dog,pizza\n"), "{csv}");
}

fn weights(path: &Path) -> Vec<(String, Vec<f32>)> {
    let mut v: Vec<_> =
        tch::Tensor::read_safetensors(path).unwrap().into_iter().map(|(n, t)| (n, to_vec(&t))).collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

fn strip_timing(mut s: Value) -> Value {
    for k in ["train_images_per_sec", "wall_seconds"] {
        s.as_object_mut().unwrap().remove(k);
    }
    s
}

#[test]
fn same_seed_same_result() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = write_config(tmp.path(), SMALL);
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    run_ok(&mut quick(&cfg, &a, "2"));
    run_ok(&mut quick(&cfg, &b, "2"));
    assert_eq!(strip_timing(summary(&a)), strip_timing(summary(&b)));
    assert_eq!(weights(&a.join("last.safetensors")), weights(&b.join("last.safetensors")));
}

/// SMALL with the COCO-5 recipe's extras: conv stem, stochastic depth, random
/// resized crops, flips, colour jitter, mixup + CutMix, random erasing, label
/// smoothing and a weight average (whose state `--resume` must restore).
fn augmented() -> String {
    SMALL.replace(
        "pooling = \"mean\"\n",
        "pooling = \"mean\"\nstem = \"conv\"\nstem_channels = [8, 16, 16]\ndrop_path = 0.1\n",
    ) + "hflip = true\ncrop_scale = [0.35, 1.0]\ncolor_jitter = 0.3\nmixup_alpha = 0.8\ncutmix_alpha = 1.0\nrandom_erasing = 0.25\nlabel_smoothing = 0.1\nema_decay = 0.9\n"
}

#[test]
fn resume_after_kill_reaches_the_uninterrupted_result() {
    assert_resume_matches(SMALL);
}

#[test]
fn augmented_recipe_with_weight_average_resumes_exactly() {
    assert_resume_matches(&augmented());
}

fn assert_resume_matches(config: &str) {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = write_config(tmp.path(), config);
    let (straight, killed) = (tmp.path().join("straight"), tmp.path().join("killed"));
    run_ok(&mut quick(&cfg, &straight, "5"));

    kill_after_first_epoch(&mut quick(&cfg, &killed, "5"), &killed);

    // A second plain `fit` into the same folder refuses to overwrite it.
    let err = run_err(&mut quick(&cfg, &killed, "5"));
    assert!(err.contains("--resume"), "{err}");

    run_ok(bin().arg("--out").arg(&killed).args(["--resume", "--no-export"]));
    assert_eq!(strip_timing(summary(&straight)), strip_timing(summary(&killed)));
    for ((n1, w1), (n2, w2)) in
        weights(&straight.join("last.safetensors")).iter().zip(weights(&killed.join("last.safetensors")))
    {
        assert_eq!(n1, &n2);
        let diff = w1.iter().zip(&w2).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
        assert!(diff <= 1e-6, "{n1}: resumed weights differ by {diff}");
    }
}

#[test]
fn bad_input_gives_clear_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = write_config(tmp.path(), SMALL);
    let err = run_err(
        bin()
            .arg("--config")
            .arg(&cfg)
            .arg("--data")
            .arg(tmp.path().join("nowhere"))
            .arg("--out")
            .arg(tmp.path().join("r1")),
    );
    assert!(err.contains("nowhere") && err.contains("does not exist"), "{err}");

    let bad = write_config(tmp.path(), &SMALL.replace("num_heads = 2", "num_heads = 3"));
    let err =
        run_err(bin().arg("--config").arg(&bad).arg("--data").arg(coco5()).arg("--out").arg(tmp.path().join("r2")));
    assert!(err.contains("num_heads") && err.contains("embed_dim = 32"), "{err}");

    let err = run_err(
        bin()
            .arg("--config")
            .arg(tmp.path().join("missing.toml"))
            .arg("--data")
            .arg(coco5())
            .arg("--out")
            .arg(tmp.path().join("r3")),
    );
    assert!(err.contains("missing.toml"), "{err}");
}

#[test]
fn export_rejects_broken_checkpoints_and_unwritable_paths() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = write_config(tmp.path(), SMALL);
    let run = tmp.path().join("run");
    run_ok(&mut quick(&cfg, &run, "1"));
    let export = |extra: &[&str]| {
        let mut c = export(&run);
        c.args(extra);
        c
    };
    // Works as is.
    run_ok(&mut export(&[]));
    // Unwritable output path.
    let err = run_err(&mut export(&["--out", "/proc/definitely/not/here.onnx"]));
    assert!(err.contains("/proc/definitely/not/here.onnx"), "{err}");
    // Truncated checkpoint.
    let ckpt = run.join("last.safetensors");
    let bytes = std::fs::read(&ckpt).unwrap();
    std::fs::write(&ckpt, &bytes[..bytes.len() / 2]).unwrap();
    let err = run_err(&mut export(&[]));
    assert!(err.contains("last.safetensors"), "{err}");
    // A checkpoint of another config.
    std::fs::write(&ckpt, &bytes).unwrap();
    let toml = std::fs::read_to_string(run.join("config.toml")).unwrap().replace("depth = 2", "depth = 3");
    std::fs::write(run.join("config.toml"), toml).unwrap();
    let err = run_err(&mut export(&[]));
    assert!(err.contains("does not match") && err.contains("blocks.2"), "{err}");
}
