//! WebDataset tar shards: written by `vit-train shards` or by Python's
//! `tarfile`, they read back to the samples of the folder they came from;
//! corrupt members are reported by shard and member and counted; damaged tar
//! files are named; and a run from shards trains and resumes exactly.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::cli::*;
use common::*;
use vit::data::{load_splits, scan_splits, Dataset, LoadOptions, Splits};
use vit::{Preprocessor, ViTConfig};
use vit_train::data::batches::{epoch_batches_of, for_each_train_batch, Augment, HostBatch, Pipeline};

/// `vit-train shards --data DATA --out OUT` with `args`.
fn shards(data: &Path, out: &Path, args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_vit-train"));
    c.arg("shards").arg("--data").arg(data).arg("--out").arg(out).args(args);
    c
}

fn prep() -> Preprocessor {
    Preprocessor::from_config(&ViTConfig::from_toml_file(&repo_root().join("models/coco5-vit.toml")).unwrap())
}

fn load(dir: &Path, opts: &LoadOptions) -> Splits {
    load_splits(dir, &prep(), opts).unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
}

/// (label, pixels) of every image, sorted: the samples whatever their order.
fn samples(data: &Dataset) -> Vec<(i64, Vec<u8>)> {
    let mut v: Vec<_> = (0..data.len()).map(|i| (data.labels[i], data.image(i).to_vec())).collect();
    v.sort();
    v
}

/// The first `n` files of each of `classes` of COCO-5's train split copied to `dir/<class>/`.
fn small_folder(dir: &Path, classes: &[&str], n: usize) -> Vec<Vec<PathBuf>> {
    classes
        .iter()
        .map(|class| {
            let (src, dst) = (coco5().join("train").join(class), dir.join(class));
            std::fs::create_dir_all(&dst).unwrap();
            let mut files: Vec<_> = std::fs::read_dir(&src).unwrap().map(|e| e.unwrap().path()).collect();
            files.sort();
            files.truncate(n);
            files
                .iter()
                .map(|f| std::fs::copy(f, dst.join(f.file_name().unwrap())).map(|_| f.clone()).unwrap())
                .collect()
        })
        .collect()
}

#[test]
fn shards_written_by_our_command_hold_the_folders_samples_in_memory_and_streamed() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("shards");
    run_ok(&mut shards(&coco5(), &out, &["--max-per-class", "12", "--shard-size", "48K"]));
    let tars: Vec<_> = std::fs::read_dir(&out).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert!(tars.iter().filter(|n| n.to_string_lossy().starts_with("train-")).count() > 1, "{tars:?}");
    let stderr = run_err(&mut shards(&coco5(), &out, &[]));
    assert!(stderr.contains("not empty") && stderr.contains("--force"), "{stderr}");

    let opts = LoadOptions { max_per_class: Some(12), ..LoadOptions::default() };
    let folder = load(&coco5(), &opts);
    let packed = load(&out, &LoadOptions::default());
    assert_eq!(packed.classes, folder.classes, "classes.json names the classes");
    assert_eq!(samples(&packed.train), samples(&folder.train));
    assert_eq!(samples(&packed.val), samples(&folder.val));
    // Written shuffled: the first shard mixes classes.
    let first = packed.train.shard_ranges().unwrap()[0].clone();
    assert!(packed.train.labels[first].windows(2).any(|w| w[0] != w[1]));

    // Streamed from the shards, the batches are those of the decoded shards, at any worker count.
    let streamed = scan_splits(&out, &prep(), &LoadOptions::default()).unwrap();
    assert!(streamed.train.is_streamed() && streamed.train.labels == packed.train.labels);
    let mut cfg = ViTConfig::from_toml_file(&repo_root().join("models/coco5-vit.toml")).unwrap();
    cfg.train.batch_size = 8;
    let epoch = |data: &Dataset, e: usize, workers: usize| -> Vec<HostBatch> {
        let t = &cfg.train;
        let batches = epoch_batches_of(data, t.batch_size, t.seed, e, 10);
        let mut out = Vec::new();
        let pipe = Pipeline { workers, prefetch: 2 * workers };
        for_each_train_batch(data, &prep(), Augment::from_train(t), &batches, t.seed, e, pipe, |_, b, _| {
            out.push(b);
            true
        });
        out
    };
    let reference = epoch(&packed.train, 1, 1);
    assert_eq!(reference.iter().map(|b| b.labels.len()).sum::<usize>(), packed.train.len());
    assert!(epoch(&streamed.train, 1, 1) == reference, "streamed shards differ from decoded ones");
    assert!(epoch(&streamed.train, 1, 3) == reference, "3 workers differ from 1");
}

/// Writes WebDataset shards with Python's `tarfile` from `classes` (lists of
/// image files, label = position): keys `CLASS/NAME`, `.cls` first for odd samples.
fn python_shards(out: &Path, classes: &[Vec<PathBuf>]) {
    std::fs::create_dir_all(out).unwrap();
    let list: Vec<String> = classes
        .iter()
        .enumerate()
        .flat_map(|(label, files)| files.iter().map(move |f| format!("({:?}, {label})", f.to_str().unwrap())))
        .collect();
    let script = format!(
        r#"
import io, os, tarfile
samples = [{}]
for shard in range(2):
    with tarfile.open(os.path.join({out:?}, "pets-%06d.tar" % shard), "w") as tar:
        for i, (path, label) in enumerate(samples[shard::2]):
            key = "c%d/img_%03d" % (label, i)
            members = [(key + ".jpg", open(path, "rb").read()), (key + ".cls", str(label).encode())]
            if i % 2:
                members.reverse()
            for name, data in members:
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
"#,
        list.join(", "),
        out = out.to_str().unwrap()
    );
    let status = Command::new(venv_python()).arg("-c").arg(script).status().unwrap();
    assert!(status.success());
}

#[test]
fn shards_written_by_python_tarfile_read_back_to_the_same_samples() {
    let tmp = tempfile::tempdir().unwrap();
    let folder = tmp.path().join("folder");
    let files = small_folder(&folder, &["airplane", "bus", "cat"], 5);
    let out = tmp.path().join("py");
    python_shards(&out, &files);
    let all = LoadOptions { val_fraction: 0.0, ..LoadOptions::default() };
    let packed = load(&out, &all);
    assert_eq!(packed.classes, vec!["0", "1", "2"], "without classes.json, classes are numbered");
    assert!(packed.skipped() == 0 && packed.val.is_empty());
    assert_eq!(samples(&packed.train), samples(&load(&folder, &all).train));
    assert_eq!(packed.train.shard_ranges().unwrap().len(), 2);
    // A flat set of shards is split by the seeded fraction, as a flat folder is.
    let split = load(&out, &LoadOptions { val_fraction: 0.4, ..LoadOptions::default() });
    assert_eq!((split.train.len(), split.val.len()), (9, 6));
}

#[test]
fn a_corrupt_member_is_named_and_counted_and_damaged_tar_files_are_named() {
    let tmp = tempfile::tempdir().unwrap();
    let folder = tmp.path().join("folder");
    small_folder(&folder, &["airplane", "bus", "cat"], 6);
    std::fs::write(folder.join("bus").join("broken.jpg"), b"\xff\xd8 not a jpeg").unwrap();
    let out = tmp.path().join("shards");
    run_ok(&mut shards(&folder, &out, &["--val-fraction", "0", "--shard-size", "24K"]));

    let packed = load(&out, &LoadOptions { val_fraction: 0.0, ..LoadOptions::default() });
    assert_eq!((packed.train.len(), packed.skipped()), (18, 1));
    let skipped = &packed.train.skipped[0];
    let named = skipped.path.to_string_lossy();
    assert!(named.contains("/train-0000") && named.contains(".tar/") && named.ends_with(".jpg"), "{named}");

    let cfg = write_config(tmp.path(), SMALL);
    let fit = |run: &Path| {
        let mut cmd = bin();
        cmd.arg("--config").arg(&cfg).arg("--data").arg(&out).arg("--out").arg(run);
        cmd.args(["--epochs", "1", "--no-export", "--data-mode", "stream"]);
        cmd
    };
    let err = run_err(&mut fit(&tmp.path().join("strict")));
    assert!(err.contains(".tar (tar member ") && err.contains("--allow-skipped"), "{err}");
    assert!(!tmp.path().join("strict/last.safetensors").exists(), "nothing of the broken epoch may be saved");
    let lenient = run_ok(fit(&tmp.path().join("lenient")).arg("--allow-skipped"));
    assert!(String::from_utf8_lossy(&lenient.stderr).contains("tar member"), "the failure is still reported");

    let shard = std::fs::read_dir(&out).unwrap().map(|e| e.unwrap().path()).find(|p| p.ends_with("train-000000.tar"));
    let bytes = std::fs::read(shard.unwrap()).unwrap();
    let damaged = |name: &str, bytes: &[u8], expected: &str| {
        let dir = tmp.path().join(name);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("set-000000.tar"), bytes).unwrap();
        let err = load_splits(&dir, &prep(), &LoadOptions::default()).unwrap_err().to_string();
        assert!(err.contains("set-000000.tar") && err.contains(expected), "{name}: {err}");
    };
    damaged("cut", &bytes[..bytes.len() / 2], "truncated");
    damaged("no-end", &bytes[..bytes.len() - 1024], "truncated");
    damaged("garbage", &[7u8; 4096], "not a tar file");
}

#[test]
fn a_run_from_shards_learns_and_a_killed_resumed_run_ends_as_an_uninterrupted_one() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("shards");
    run_ok(&mut shards(&coco5(), &out, &["--max-per-class", "40", "--shard-size", "64K"]));
    let cfg = write_config(tmp.path(), &(SMALL.to_string() + "hflip = true\n"));
    let fit = |run: &Path, mode: &str, workers: &str| {
        let mut cmd = bin();
        cmd.arg("--config").arg(&cfg).arg("--data").arg(&out).arg("--out").arg(run);
        cmd.args(["--epochs", "4", "--no-export", "--shuffle-buffer", "50", "--data-mode", mode]);
        cmd.args(["--data-workers", workers]);
        cmd
    };
    let (straight, killed) = (tmp.path().join("straight"), tmp.path().join("killed"));
    run_ok(&mut fit(&straight, "memory", "1"));
    let losses: Vec<f64> = std::fs::read_to_string(straight.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok()?.get("train_loss")?.as_f64())
        .collect();
    assert!(losses.len() >= 4 && losses[losses.len() - 1] < losses[0], "the loss falls: {losses:?}");

    kill_after_first_epoch(&mut fit(&killed, "stream", "3"), &killed);
    run_ok(bin().arg("--out").arg(&killed).args(["--resume", "--no-export", "--data-workers", "2"]));
    let without_timing = |run: &Path| {
        let mut s = summary(run);
        for k in ["train_images_per_sec", "wall_seconds"] {
            s.as_object_mut().unwrap().remove(k);
        }
        s
    };
    assert_eq!(without_timing(&straight), without_timing(&killed));
    let weights = |run: &Path| std::fs::read(run.join("last.safetensors")).unwrap();
    assert!(weights(&straight) == weights(&killed), "resumed from shards, the weights differ");
}
