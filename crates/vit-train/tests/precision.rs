//! `train.precision`: a bf16-autocast run on the CPU learns like the fp32 run of
//! the same recipe and seed, and its fp32 export passes the tract check; fp16 on
//! the CPU is refused with a clear error. The loss scaler's logic is unit-tested
//! in `src/train/amp.rs`.

mod common;

use std::path::Path;

use common::cli::*;
use common::*;
use serde_json::Value;

/// The logged training losses of a run.
fn step_losses(run: &Path) -> Vec<f64> {
    std::fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|v| v["kind"] == "step")
        .map(|v| v["loss"].as_f64().unwrap())
        .collect()
}

fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len() as f64
}

#[test]
fn a_bf16_run_learns_like_fp32_and_exports_in_fp32() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = write_config(tmp.path(), SMALL);
    let fit = |precision: &str| {
        let run = tmp.path().join(precision);
        let out = run_ok(bin().arg("--config").arg(&cfg).arg("--data").arg(coco5()).arg("--out").arg(&run).args([
            "--max-per-class",
            "100",
            "--precision",
            precision,
        ]));
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        // The export is verified against tch with tract; fit fails if it does not match.
        assert!(stdout.contains("max |diff|"), "{precision}: no verified export in {stdout}");
        (run, step_losses(&tmp.path().join(precision)))
    };
    let (_, fp32) = fit("fp32");
    let (bf16_run, bf16) = fit("bf16");
    assert_eq!(fp32.len(), bf16.len());
    assert!(fp32.len() >= 15, "{} logged steps", fp32.len());
    // Same start (same weights, same first batch: bf16 rounds the logits to ~3
    // significant digits) and the same fall. The trajectories then diverge like two
    // seeds of one recipe, so the end is compared with a tolerance of 0.15 nats
    // (run-to-run spread of this recipe's final loss across seeds is ~0.1).
    assert!((fp32[0] - bf16[0]).abs() < 0.02, "first loss fp32 {} vs bf16 {}", fp32[0], bf16[0]);
    let (head32, tail32) = (mean(&fp32[..3]), mean(&fp32[fp32.len() - 3..]));
    let (head16, tail16) = (mean(&bf16[..3]), mean(&bf16[bf16.len() - 3..]));
    assert!(tail32 < head32 - 0.05, "fp32 loss should fall: {head32} -> {tail32}");
    assert!(tail16 < head16 - 0.05, "bf16 loss should fall: {head16} -> {tail16}");
    assert!((tail16 - tail32).abs() < 0.15, "final loss fp32 {tail32} vs bf16 {tail16}");

    let saved = std::fs::read_to_string(bf16_run.join("config.toml")).unwrap();
    assert!(saved.contains("precision = \"bf16\""), "{saved}");
    let kinds: Vec<_> = tch::Tensor::read_safetensors(bf16_run.join("last.safetensors"))
        .unwrap()
        .iter()
        .map(|(_, t)| t.kind())
        .collect();
    assert!(kinds.iter().all(|k| *k == tch::Kind::Float), "checkpoints stay fp32: {kinds:?}");
}

#[test]
fn fp16_on_the_cpu_is_a_clear_error() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = write_config(tmp.path(), SMALL);
    let err = run_err(quick(&cfg, &tmp.path().join("run"), "1").args(["--precision", "fp16"]));
    assert!(err.contains("fp16 needs a CUDA device"), "{err}");
}
