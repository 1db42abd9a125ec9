//! Streaming the data from its files gives the very batches that decoding it
//! into memory gives, whatever the number of batch workers, and a streamed run
//! that is killed and resumed ends where an uninterrupted in-memory run ends.
//! Crops from the original files are seeded alike, and need streamed data.

mod common;

use std::path::Path;

use common::cli::*;
use common::*;
use vit::data::{load_splits, scan_splits, LoadOptions};
use vit::{Preprocessor, ViTConfig};
use vit_train::data::batches::{epoch_batches, for_each_train_batch, Augment, HostBatch, Pipeline};

/// Every training batch of `epoch` under `cfg`'s augmentations.
fn epoch(data: &vit::data::Dataset, cfg: &ViTConfig, epoch: usize, workers: usize) -> Vec<HostBatch> {
    let prep = Preprocessor::from_config(cfg);
    let t = &cfg.train;
    let batches = epoch_batches(data.len(), t.batch_size, t.seed, epoch);
    let pipe = Pipeline { workers, prefetch: 2 * workers };
    let mut out = Vec::new();
    for_each_train_batch(data, &prep, Augment::from_train(t), &batches, t.seed, epoch, pipe, |_, b, _| {
        out.push(b);
        true
    });
    out
}

#[test]
fn streamed_and_decoded_batches_are_bit_identical_at_any_worker_count() {
    let mut cfg = ViTConfig::from_toml_file(&repo_root().join("models/coco5-vit.toml")).unwrap();
    cfg.train.batch_size = 16;
    // Every augmentation on top of the recipe's padded crops and flips, so all draws are covered.
    (cfg.train.mixup_alpha, cfg.train.cutmix_alpha) = (0.8, 1.0);
    (cfg.train.crop_scale, cfg.train.color_jitter, cfg.train.random_erasing) = ((0.35, 1.0), 0.3, 0.25);
    let prep = Preprocessor::from_config(&cfg);
    let opts = LoadOptions { max_per_class: Some(12), seed: cfg.train.seed, ..LoadOptions::default() };
    let memory = load_splits(&coco5(), &prep, &opts).unwrap();
    let stream = scan_splits(&coco5(), &prep, &opts).unwrap();
    assert!(!memory.train.is_streamed() && stream.train.is_streamed());
    assert!(stream.train.pixels.is_empty(), "a streamed set holds no pixels");
    assert_eq!(memory.train.labels, stream.train.labels);
    for e in 0..2 {
        let reference = epoch(&memory.train, &cfg, e, 1);
        assert_eq!(reference.iter().map(|b| b.labels.len()).sum::<usize>(), memory.train.len());
        assert!(reference.iter().all(|b| b.mix_lam.is_some()), "every batch is mixed");
        assert!(epoch(&memory.train, &cfg, e, 3) == reference, "epoch {e}: 3 workers differ from 1");
        assert!(epoch(&stream.train, &cfg, e, 1) == reference, "epoch {e}: streamed differs from decoded");
        assert!(epoch(&stream.train, &cfg, e, 3) == reference, "epoch {e}: streamed, 3 workers, differs");
    }
    assert!(epoch(&memory.train, &cfg, 0, 1) != epoch(&memory.train, &cfg, 1, 1), "epochs differ");
}

fn weights(path: &Path) -> Vec<(String, Vec<f32>)> {
    let mut v: Vec<_> =
        tch::Tensor::read_safetensors(path).unwrap().into_iter().map(|(n, t)| (n, to_vec(&t))).collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

fn without_timing(mut s: serde_json::Value) -> serde_json::Value {
    for k in ["train_images_per_sec", "wall_seconds"] {
        s.as_object_mut().unwrap().remove(k);
    }
    s
}

#[test]
fn a_streamed_run_killed_and_resumed_ends_as_an_uninterrupted_in_memory_run() {
    let tmp = tempfile::tempdir().unwrap();
    let augmented = SMALL.to_string() + "hflip = true\ncrop_scale = [0.35, 1.0]\nmixup_alpha = 0.8\n";
    let cfg = write_config(tmp.path(), &augmented);
    let (straight, killed) = (tmp.path().join("straight"), tmp.path().join("killed"));
    run_ok(quick(&cfg, &straight, "4").args(["--data-mode", "memory", "--data-workers", "1"]));
    let run_json = |run: &Path| std::fs::read_to_string(run.join("run.json")).unwrap();
    assert!(run_json(&straight).contains("\"data_mode\": \"memory\""), "{}", run_json(&straight));

    // A budget far below the decoded size makes `auto` stream.
    kill_after_first_epoch(
        quick(&cfg, &killed, "4").args(["--data-mode", "auto", "--data-memory-budget", "1K", "--data-workers", "3"]),
        &killed,
    );
    assert!(run_json(&killed).contains("\"data_mode\": \"stream\""), "{}", run_json(&killed));

    run_ok(bin().arg("--out").arg(&killed).args(["--resume", "--no-export", "--data-workers", "2"]));
    assert_eq!(without_timing(summary(&straight)), without_timing(summary(&killed)));
    for ((n1, w1), (n2, w2)) in
        weights(&straight.join("last.safetensors")).iter().zip(weights(&killed.join("last.safetensors")))
    {
        assert_eq!(n1, &n2);
        let diff = w1.iter().zip(&w2).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
        assert!(diff <= 1e-6, "{n1}: the streamed, resumed weights differ by {diff}");
    }
}

#[test]
fn a_streamed_file_that_does_not_decode_stops_the_epoch_unless_skipping_is_allowed() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    // Three classes of 6 real images, plus a file that is listed like any JPEG but does not decode.
    for class in ["airplane", "bus", "cat"] {
        let (src, dst) = (coco5().join("train").join(class), data.join(class));
        std::fs::create_dir_all(&dst).unwrap();
        let mut files: Vec<_> = std::fs::read_dir(&src).unwrap().map(|e| e.unwrap().path()).collect();
        files.sort();
        for f in files.iter().take(6) {
            std::fs::copy(f, dst.join(f.file_name().unwrap())).unwrap();
        }
    }
    std::fs::write(data.join("bus").join("broken.jpg"), b"\xff\xd8 not a jpeg").unwrap();
    let cfg = write_config(tmp.path(), SMALL);
    let fit = |run: &Path, epochs: &str| {
        let mut cmd = bin();
        cmd.arg("--config").arg(&cfg).arg("--data").arg(&data).arg("--out").arg(run);
        cmd.args(["--epochs", epochs, "--no-export", "--data-mode", "stream", "--val-fraction", "0"]);
        cmd
    };
    let strict = tmp.path().join("strict");
    let err = run_err(&mut fit(&strict, "1"));
    assert!(err.contains("broken.jpg") && err.contains("--allow-skipped"), "{err}");
    assert!(err.contains("no epoch completed"), "{err}");
    assert!(!strict.join("last.safetensors").exists(), "nothing of the broken epoch may be saved");

    let lenient = tmp.path().join("lenient");
    let out = run_ok(fit(&lenient, "2").arg("--allow-skipped"));
    assert!(String::from_utf8_lossy(&out.stderr).contains("broken.jpg"), "the failure must still be reported");
    assert!(lenient.join("last.safetensors").exists());
    assert_eq!(summary(&lenient)["skipped_files"], 1, "the broken file is counted once, whatever the epochs");
}

#[test]
fn crops_from_the_original_files_are_seeded_and_differ_from_crops_of_the_resized_image() {
    let mut cfg = ViTConfig::from_toml_file(&repo_root().join("models/coco5-vit.toml")).unwrap();
    cfg.train.batch_size = 8;
    (cfg.train.crop_scale, cfg.train.color_jitter, cfg.train.mixup_alpha) = ((0.08, 1.0), 0.3, 0.8);
    let prep = Preprocessor::from_config(&cfg);
    let opts = LoadOptions { max_per_class: Some(6), seed: cfg.train.seed, ..LoadOptions::default() };
    let stream = scan_splits(&coco5(), &prep, &opts).unwrap();
    let resized = epoch(&stream.train, &cfg, 0, 1);
    cfg.train.crop_from_original = true;
    let original = epoch(&stream.train, &cfg, 0, 1);
    assert_eq!(original.len(), resized.len());
    assert!(original.iter().zip(&resized).all(|(a, b)| a.labels == b.labels), "the sample order is the same");
    assert!(original != resized, "the crop of the original must differ from the crop of the resized image");
    assert!(epoch(&stream.train, &cfg, 0, 3) == original, "3 workers differ from 1");
    assert!(epoch(&stream.train, &cfg, 1, 1) != original, "epochs differ");
    assert!(original.iter().all(|b| b.unreadable.is_empty() && b.pixels.iter().all(|v| v.is_finite())));
}

#[test]
fn crop_from_original_refuses_memory_mode_and_streams_in_auto() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = write_config(
        tmp.path(),
        &(SMALL.to_string() + "hflip = true\ncrop_scale = [0.08, 1.0]\ncrop_from_original = true\n"),
    );
    let err = run_err(quick(&cfg, &tmp.path().join("memory"), "1").args(["--data-mode", "memory"]));
    assert!(err.contains("train.crop_from_original") && err.contains("--data-mode stream"), "{err}");
    let run = tmp.path().join("auto");
    run_ok(quick(&cfg, &run, "1").args(["--data-mode", "auto"]));
    let run_json = std::fs::read_to_string(run.join("run.json")).unwrap();
    assert!(run_json.contains("\"data_mode\": \"stream\""), "{run_json}");
    assert!(std::fs::read_to_string(run.join("config.toml")).unwrap().contains("crop_from_original = true"));
}
