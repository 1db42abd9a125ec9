//! `fit --init` with the fine-tuning options: `--freeze-backbone` leaves every
//! tensor but the head bit-identical, `--layer-decay` trains (the loss falls),
//! both are recorded in run.json and `--resume` refuses a conflicting value.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use common::cli::{bin, run_err, run_ok, write_config, SMALL};
use tch::Tensor;

/// SMALL with timm's avg pooling (so the model has an `fc_norm`).
fn avg_config(dir: &Path) -> PathBuf {
    write_config(dir, &SMALL.replace(r#"pooling = "mean""#, r#"pooling = "avg""#))
}

/// A random-init run of one epoch: its `last.safetensors` is the checkpoint to start from.
fn checkpoint(dir: &Path, cfg: &Path) -> PathBuf {
    let run = dir.join("base");
    let mut cmd = bin();
    cmd.arg("--config").arg(cfg).arg("--data").arg(common::coco5()).arg("--out").arg(&run);
    run_ok(cmd.args(["--max-per-class", "8", "--epochs", "1", "--no-export"]));
    run.join("last.safetensors")
}

/// `fit --init WEIGHTS` on COCO-5 with `per_class` images per class.
fn fit_from(weights: &Path, cfg: &Path, run: &Path, epochs: &str, per_class: &str) -> std::process::Command {
    let mut cmd = bin();
    cmd.arg("--init").arg(weights).args(["--num-heads", "2"]).arg("--config").arg(cfg);
    cmd.arg("--data").arg(common::coco5()).arg("--out").arg(run);
    cmd.args(["--max-per-class", per_class, "--epochs", epochs, "--no-export"]);
    cmd
}

fn tensors(path: &Path) -> BTreeMap<String, Tensor> {
    Tensor::read_safetensors(path).unwrap().into_iter().collect()
}

fn run_json(run: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(run.join("run.json")).unwrap()).unwrap()
}

#[test]
fn freeze_backbone_trains_only_the_head_and_fc_norm() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = avg_config(tmp.path());
    let weights = checkpoint(tmp.path(), &cfg);
    let run = tmp.path().join("frozen");
    let out = run_ok(fit_from(&weights, &cfg, &run, "2", "8").arg("--freeze-backbone"));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("training fc_norm.bias, fc_norm.weight, head.bias, head.weight"), "{stderr}");
    assert_eq!(run_json(&run)["finetune"]["freeze_backbone"], true);

    let (before, after) = (tensors(&weights), tensors(&run.join("last.safetensors")));
    assert_eq!(before.keys().collect::<Vec<_>>(), after.keys().collect::<Vec<_>>());
    for (name, b) in &before {
        let same = b.equal(&after[name]);
        let head = name.starts_with("head.") || name.starts_with("fc_norm.");
        assert_eq!(same, !head, "{name}: frozen tensors are bit-identical, the head trains");
    }
    // The optimiser holds state for the head only.
    let state = tensors(&run.join("resume.safetensors"));
    let moments: Vec<&String> = state.keys().filter(|k| k.starts_with("optim.m.")).collect();
    assert_eq!(moments, ["optim.m.fc_norm.bias", "optim.m.fc_norm.weight", "optim.m.head.bias", "optim.m.head.weight"]);

    let mut resume = bin();
    resume.arg("--out").arg(&run).args(["--resume", "--epochs", "3", "--layer-decay", "0.5", "--no-export"]);
    let err = run_err(&mut resume);
    assert!(err.contains("--layer-decay 0.5: the run has no layer decay"), "{err}");
    let mut resume = bin();
    resume.arg("--out").arg(&run).args(["--resume", "--epochs", "3", "--no-export"]);
    run_ok(&mut resume);
    let resumed = tensors(&run.join("last.safetensors"));
    assert!(resumed["blocks.0.attn.qkv.weight"].equal(&before["blocks.0.attn.qkv.weight"]), "still frozen on resume");
}

#[test]
fn layer_decay_is_accepted_recorded_and_the_loss_falls() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = avg_config(tmp.path());
    let weights = checkpoint(tmp.path(), &cfg);
    let run = tmp.path().join("decayed");
    let mut cmd = fit_from(&weights, &cfg, &run, "3", "40");
    cmd.args(["--layer-decay", "0.75", "--batch-size", "16"]);
    let out = run_ok(&mut cmd);
    assert!(String::from_utf8_lossy(&out.stderr).contains("--layer-decay 0.75"));
    assert_eq!(run_json(&run)["finetune"]["layer_decay"], 0.75);
    let losses: Vec<f64> = std::fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok()?["train_loss"].as_f64())
        .collect();
    assert!(losses.len() >= 2 && losses.last() < losses.first(), "the loss falls: {losses:?}");

    let mut resume = bin();
    resume.arg("--out").arg(&run).args(["--resume", "--epochs", "4", "--freeze-backbone", "--no-export"]);
    let err = run_err(&mut resume);
    assert!(err.contains("--freeze-backbone: the run trains every tensor"), "{err}");
}

#[test]
fn a_preset_patch_size_other_than_the_checkpoints_is_logged() {
    let tmp = tempfile::tempdir().unwrap();
    let weights = checkpoint(tmp.path(), &avg_config(tmp.path()));
    let other = tmp.path().join("patch4");
    std::fs::create_dir(&other).unwrap();
    let text = SMALL.replace(r#"pooling = "mean""#, r#"pooling = "avg""#).replace("patch_size = 8", "patch_size = 4");
    let cfg = write_config(&other, &text);
    let out = run_ok(&mut fit_from(&weights, &cfg, &tmp.path().join("run"), "1", "8"));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let line = "the config's patch_size 4 differs from the checkpoint's 8; the checkpoint's patch size 8 is used";
    assert!(stderr.contains(line), "{stderr}");
}
