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
    let curves_png = image::open(run.join("curves.png")).unwrap();
    assert_eq!((curves_png.width(), curves_png.height()), vit_train::run::plots::CURVES_SIZE);
    assert!(!run.join("loss.png").exists(), "curves.png replaces loss.png");
    assert_curves_match_records(&run);
    let cm_png = image::open(run.join("confusion.png")).unwrap();
    assert_eq!((cm_png.width(), cm_png.height()), vit_train::run::plots::CONFUSION_SIZE);
    let csv = std::fs::read_to_string(run.join("confusion.csv")).unwrap();
    assert!(csv.starts_with("true\\predicted,airplane,bus,cat,dog,pizza\n"), "{csv}");
}

/// The series `curves.png` draws are `metrics.jsonl`'s: every logged step's loss at
/// iteration / steps-per-epoch, every epoch's validation loss and accuracy at its end,
/// and the best epoch the one `summary.json` names.
fn assert_curves_match_records(run: &Path) {
    use vit_train::run::metrics::Record;
    let records: Vec<Record> = std::fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let s = summary(run);
    let (train, batch) = (s["train_images"].as_u64().unwrap() as usize, 32); // SMALL's batch size
    let steps_per_epoch = train.div_ceil(batch);
    let c = vit_train::run::plots::Curves::from_records(&records, steps_per_epoch);
    let steps: Vec<(usize, f64)> = records
        .iter()
        .filter_map(|r| match r {
            Record::Step { iter, loss, .. } => Some((*iter, *loss)),
            _ => None,
        })
        .collect();
    assert_eq!(c.train_loss.len(), steps.len());
    for ((x, y), (iter, loss)) in c.train_loss.iter().zip(&steps) {
        assert!((x - *iter as f64 / steps_per_epoch as f64).abs() < 1e-12 && y == loss, "{x},{y} vs {iter},{loss}");
    }
    let epochs: Vec<&Value> = std::fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|v| v["kind"] == "epoch")
        .collect::<Vec<_>>()
        .leak()
        .iter()
        .collect();
    assert_eq!(c.val_accuracy.len(), epochs.len());
    assert_eq!(c.epochs, epochs.len());
    for (i, e) in epochs.iter().enumerate() {
        assert_eq!(c.val_accuracy[i], ((i + 1) as f64, e["val_accuracy"].as_f64().unwrap()));
        assert_eq!(c.val_loss[i], ((i + 1) as f64, e["val_loss"].as_f64().unwrap()));
    }
    let (best_epoch, best) = c.best.expect("a best epoch");
    assert_eq!(Some(best), s["best_val_accuracy"].as_f64());
    assert_eq!(Some(best_epoch as u64), s["best_epoch"].as_u64());
}

/// `fit` writes TensorBoard events beside `metrics.jsonl`; the `tensorboard` package's own
/// reader finds the same training losses (per logged step), learning rates and validation
/// accuracies (per epoch), at the global steps they belong to.
#[test]
fn tensorboard_reads_the_events() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = write_config(tmp.path(), SMALL);
    let run = tmp.path().join("run");
    run_ok(&mut quick(&cfg, &run, "2"));
    let events: Vec<_> = std::fs::read_dir(&run)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("events.out.tfevents."))
        .collect();
    assert_eq!(events.len(), 1, "one event file: {events:?}");
    let script = r#"
import json, sys
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
acc = EventAccumulator(sys.argv[1]); acc.Reload()
print(json.dumps({t: [[e.step, e.value] for e in acc.Scalars(t)] for t in acc.Tags()["scalars"]}))
"#;
    let out = std::process::Command::new(venv_python())
        .args(["-c", script])
        .arg(&run)
        .output()
        .expect("run the venv's python (scripts/setup.sh installs tensorboard)");
    assert!(out.status.success(), "tensorboard reader failed: {}", String::from_utf8_lossy(&out.stderr));
    let tb: Value = serde_json::from_slice(&out.stdout).unwrap();
    let series = |tag: &str| -> Vec<(u64, f64)> {
        tb[tag]
            .as_array()
            .unwrap_or_else(|| panic!("no scalar `{tag}` in {tb}"))
            .iter()
            .map(|p| (p[0].as_u64().unwrap(), p[1].as_f64().unwrap()))
            .collect()
    };
    let records: Vec<Value> = std::fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let close = |a: f64, b: f64| (a - b).abs() <= 1e-6 * b.abs().max(1.0);
    let steps: Vec<&Value> = records.iter().filter(|r| r["kind"] == "step").collect();
    let (loss, lr) = (series("loss/train"), series("lr"));
    assert_eq!((loss.len(), lr.len()), (steps.len(), steps.len()));
    for ((l, r), rec) in loss.iter().zip(&lr).zip(&steps) {
        let iter = rec["iter"].as_u64().unwrap();
        assert!(l.0 == iter && close(l.1, rec["loss"].as_f64().unwrap()), "{l:?} vs {rec}");
        assert!(r.0 == iter && close(r.1, rec["lr"].as_f64().unwrap()), "{r:?} vs {rec}");
    }
    let epochs: Vec<&Value> = records.iter().filter(|r| r["kind"] == "epoch").collect();
    let (acc, val_loss, ips) = (series("accuracy/val"), series("loss/val"), series("throughput/train_images_per_sec"));
    assert_eq!((acc.len(), val_loss.len(), ips.len()), (2, 2, 2));
    let per_epoch = acc[0].0;
    assert!(per_epoch > 0 && acc[1].0 == 2 * per_epoch, "epoch ends at steps {acc:?}");
    assert!(steps.iter().all(|s| s["iter"].as_u64().unwrap() <= 2 * per_epoch));
    for (i, e) in epochs.iter().enumerate() {
        assert!(close(acc[i].1, e["val_accuracy"].as_f64().unwrap()), "{:?} vs {e}", acc[i]);
        assert!(close(val_loss[i].1, e["val_loss"].as_f64().unwrap()), "{:?} vs {e}", val_loss[i]);
        assert!(close(ips[i].1, e["train_images_per_sec"].as_f64().unwrap()), "{:?} vs {e}", ips[i]);
    }
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

#[test]
fn cuda_graph_on_the_cpu_warns_once_and_trains_exactly_as_without() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = write_config(tmp.path(), SMALL);
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    run_ok(&mut quick(&cfg, &a, "2"));
    let out = run_ok(quick(&cfg, &b, "2").arg("--cuda-graph"));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.matches("--cuda-graph").count(), 1, "one warning: {stderr}");
    assert!(stderr.contains("needs a CUDA device") && stderr.contains("training eagerly"), "{stderr}");
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
