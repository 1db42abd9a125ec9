//! `vit-train` under misuse: every refusal is a clean error that says what to
//! do, and no file that existed before is lost or changed.

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::cli::*;

/// Starts `cmd` and waits until it holds the run folder's lock (its PID is in `RUN/.lock`).
fn spawn_holding(cmd: &mut Command, run: &Path) -> Child {
    let mut child = cmd.stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    let pid = child.id().to_string();
    let started = Instant::now();
    while std::fs::read_to_string(run.join(".lock")).map_or(true, |s| s.trim() != pid) {
        if let Some(status) = child.try_wait().unwrap() {
            panic!("the first process ended ({status}) before it was seen holding the folder");
        }
        assert!(started.elapsed() < Duration::from_secs(60), "no lock after a minute");
        std::thread::sleep(Duration::from_millis(5));
    }
    child
}

#[test]
fn a_second_process_on_a_locked_run_folder_is_refused_with_the_holders_pid() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = write_config(tmp.path(), SMALL);
    let run = tmp.path().join("run");
    run_ok(&mut quick(&cfg, &run, "1"));
    let before = snapshot(&run);

    // A resumed run extended by more epochs than it can finish before it is
    // killed holds the folder for the whole test, however loaded the machine.
    let mut first =
        spawn_holding(bin().arg("--out").arg(&run).args(["--resume", "--epochs", "100000", "--no-export"]), &run);
    let holder = format!("PID {}", first.id());
    let attempts = [
        quick(&cfg, &run, "1"),
        {
            let mut c = bin();
            c.arg("--out").arg(&run).args(["--resume", "--no-export"]);
            c
        },
        export(&run),
    ];
    for mut cmd in attempts {
        let err = run_err(&mut cmd);
        assert!(err.contains(&holder) && err.contains("in use"), "{err}");
        assert!(err.contains(&run.display().to_string()), "{err}");
    }
    first.kill().unwrap();
    first.wait().unwrap();
    // The lock died with the process: the folder opens again at once.
    run_ok(&mut export(&run));
    for (name, bytes) in &before {
        if name.to_str().is_some_and(|n| n.ends_with(".safetensors") || n.ends_with(".jsonl")) {
            continue; // the killed process may have completed epochs
        }
        assert!(run.join(name).exists(), "{} lost", name.display());
        if name.to_str() == Some("run.json") {
            assert_eq!(&std::fs::read(run.join(name)).unwrap(), bytes, "run.json changed");
        }
    }
}

#[test]
fn fit_refuses_a_folder_that_holds_something_else() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = write_config(tmp.path(), SMALL);
    let photos = tmp.path().join("photos");
    std::fs::create_dir_all(photos.join("2024")).unwrap();
    std::fs::write(photos.join("holiday.jpg"), b"not really a photo").unwrap();
    std::fs::write(photos.join("2024/notes.txt"), b"keep me").unwrap();
    let before = snapshot(&photos);
    let err = run_err(&mut quick(&cfg, &photos, "1"));
    assert!(err.contains(&photos.display().to_string()) && err.contains("neither empty nor a vit-train run"), "{err}");
    assert_eq!(snapshot(&photos), before);

    // An empty folder is fine.
    let empty = tmp.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    run_ok(&mut quick(&cfg, &empty, "1"));
}

#[test]
fn leftover_temporary_files_of_killed_writes_are_removed_when_the_folder_is_opened() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = write_config(tmp.path(), SMALL);
    let run = tmp.path().join("run");
    run_ok(&mut quick(&cfg, &run, "1"));
    // What a kill between write and rename leaves (PIDs of processes long gone).
    let leftovers = [".last.safetensors.tmp-999999", ".model.onnx.tmp-999998-0"];
    for name in leftovers {
        std::fs::write(run.join(name), b"torn").unwrap();
    }
    run_ok(&mut export(&run));
    for name in leftovers {
        assert!(!run.join(name).exists(), "{name} left behind");
    }
}

/// Rewrites a checkpoint with every value of `tensor` set to NaN.
fn poison(checkpoint: &Path, tensor: &str) {
    let mut tensors = tch::Tensor::read_safetensors(checkpoint).unwrap();
    let t = &mut tensors.iter_mut().find(|(n, _)| n == tensor).unwrap().1;
    *t = t.full_like(f64::NAN);
    tch::Tensor::write_safetensors(&tensors, checkpoint).unwrap();
}

#[test]
fn a_failed_export_keeps_the_good_model_and_the_failing_file_beside_it() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = write_config(tmp.path(), SMALL);
    let run = tmp.path().join("run");
    run_ok(&mut quick(&cfg, &run, "1"));
    run_ok(&mut export(&run));
    let good = std::fs::read(run.join("model.onnx")).unwrap();

    // NaN weights: tract and tch both give NaN, which no tolerance accepts.
    poison(&run.join("last.safetensors"), "head.weight");
    let err = run_err(&mut export(&run));
    assert!(err.contains("verification failed") && err.contains("model.failed.onnx"), "{err}");
    assert!(err.contains("model.onnx is unchanged"), "{err}");
    assert_eq!(std::fs::read(run.join("model.onnx")).unwrap(), good, "the verified model.onnx was replaced");
    assert!(std::fs::metadata(run.join("model.failed.onnx")).unwrap().len() > 0);
    let stray: Vec<_> = std::fs::read_dir(&run)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".tmp-"))
        .collect();
    assert!(stray.is_empty(), "staging left behind: {stray:?}");
}

#[test]
fn a_diverging_run_stops_at_the_step_and_keeps_the_last_good_checkpoint() {
    let tmp = tempfile::tempdir().unwrap();
    let huge = SMALL.replace("lr = 1e-3", "lr = 1e6");
    let cfg = write_config(tmp.path(), &huge);
    let fresh = tmp.path().join("fresh");
    let err = run_err(&mut quick(&cfg, &fresh, "2"));
    assert!(err.contains("diverged") && err.contains("at epoch 1, step "), "{err}");
    assert!(err.contains("no checkpoint was written") && err.contains("--lr"), "{err}");
    for f in ["last.safetensors", "best.safetensors", "resume.safetensors", "summary.json"] {
        assert!(!fresh.join(f).exists(), "{f} written for broken weights");
    }

    // One good epoch, then the same run continued with the huge rate.
    let good_cfg = write_config(tmp.path(), SMALL);
    let run = tmp.path().join("run");
    run_ok(&mut quick(&good_cfg, &run, "1"));
    let checkpoints = snapshot(&run);
    let saved = std::fs::read_to_string(run.join("config.toml")).unwrap();
    std::fs::write(run.join("config.toml"), saved.replace("lr = 0.001", "lr = 1000000.0")).unwrap();
    let err = run_err(bin().arg("--out").arg(&run).args(["--resume", "--epochs", "3", "--no-export"]));
    assert!(err.contains("at epoch 2, step ") && err.contains("still holds epoch 1"), "{err}");
    for (name, bytes) in checkpoints.iter().filter(|(n, _)| n.extension().is_some_and(|e| e == "safetensors")) {
        assert_eq!(&std::fs::read(run.join(name)).unwrap(), bytes, "{} changed", name.display());
    }
}

/// `n` COCO-5 training images per class in one flat folder (no train/ or val/).
fn flat_folder(dir: &Path, n: usize) -> std::path::PathBuf {
    let out = dir.join("flat");
    for class in std::fs::read_dir(common::coco5().join("train")).unwrap() {
        let class = class.unwrap().path();
        let target = out.join(class.file_name().unwrap());
        std::fs::create_dir_all(&target).unwrap();
        let mut files: Vec<_> = std::fs::read_dir(&class).unwrap().map(|e| e.unwrap().path()).collect();
        files.sort();
        for f in files.iter().take(n) {
            std::fs::copy(f, target.join(f.file_name().unwrap())).unwrap();
        }
    }
    out
}

#[test]
fn without_validation_images_accuracy_is_not_measured_rather_than_zero() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = write_config(tmp.path(), SMALL);
    let data = flat_folder(tmp.path(), 12);
    let run = tmp.path().join("run");
    let mut cmd = bin();
    cmd.arg("--config").arg(&cfg).arg("--data").arg(&data).arg("--out").arg(&run);
    let out = run_ok(cmd.args(["--val-fraction", "0", "--epochs", "2"]));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("warning: no validation images: accuracy will not be measured"), "{stderr}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("validation accuracy: not measured"));

    let s = summary(&run);
    for key in ["val_accuracy", "best_val_accuracy", "best_epoch", "confusion_matrix"] {
        assert!(s[key].is_null(), "{key} = {}", s[key]);
    }
    assert_eq!(s["val_images"], 0);
    assert!(!run.join("best.safetensors").exists() && !run.join("confusion.csv").exists());

    let mut clf = vit::infer::Classifier::open(run.join("model.onnx"), &Default::default()).unwrap();
    assert_eq!(clf.metadata().val_accuracy, None, "the ONNX file claims an accuracy");
    let image = data.join("cat").read_dir().unwrap().next().unwrap().unwrap().path();
    let opts = vit::infer::ClassifyOptions { top_k: 1, batch_size: 1 };
    assert!(clf.classify_files(&[image], &opts)[0].is_ok());

    let err = run_err(export(&run).args(["--checkpoint", "best"]));
    assert!(err.contains("no best.safetensors") && err.contains("no validation images"), "{err}");
    assert!(err.contains("--checkpoint last"), "{err}");
}

#[test]
fn resume_refuses_flags_that_contradict_the_run_and_extends_only_with_more_epochs() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = write_config(tmp.path(), SMALL);
    let run = tmp.path().join("run");
    run_ok(&mut quick(&cfg, &run, "2"));
    let finished = snapshot(&run);
    let resume = |extra: &[&str]| {
        let mut c = bin();
        c.arg("--out").arg(&run).args(["--resume", "--no-export"]).args(extra);
        c
    };

    let err = run_err(&mut resume(&["--epochs", "1"]));
    assert!(err.contains("--epochs 1: the run has 2 epochs"), "{err}");
    assert_eq!(snapshot(&run), finished, "a refused resume changed the run");

    let other = tmp.path().join("other.toml");
    std::fs::write(&other, SMALL.replace("depth = 2", "depth = 3")).unwrap();
    let mut cmd = resume(&["--lr", "0.01", "--max-per-class", "10", "--val-fraction", "0.3"]);
    let err = run_err(cmd.arg("--config").arg(&other).arg("--data").arg(tmp.path()));
    for needle in
        ["--lr (train.lr): 0.01 given, the run has 0.001", "depth = 3", "--max-per-class 10", "--val-fraction 0.3"]
    {
        assert!(err.contains(needle), "{needle}: {err}");
    }
    assert!(err.contains(&format!("--data {}", tmp.path().display())), "{err}");
    assert_eq!(snapshot(&run), finished, "a refused resume changed the run");

    // The run's own values are no conflict; more epochs extend it.
    let mut cmd = resume(&["--epochs", "3", "--lr", "0.001", "--max-per-class", "40"]);
    let out = run_ok(cmd.arg("--config").arg(&cfg).arg("--data").arg(common::coco5()));
    assert!(String::from_utf8_lossy(&out.stderr).contains("extending the run from 2 to 3 epochs"));
    assert_eq!(summary(&run)["epochs"], 3);
    assert!(std::fs::read_to_string(run.join("config.toml")).unwrap().contains("epochs = 3"));
}

#[test]
fn absurd_sizes_are_refused_before_anything_is_allocated() {
    let tmp = tempfile::tempdir().unwrap();
    for (key, from, to) in [
        ("embed_dim", "embed_dim = 32", "embed_dim = 100000"),
        ("depth", "depth = 2", "depth = 100000"),
        ("image_size", "image_size = 32", "image_size = 70000\npatch_size = 7"),
    ] {
        let text = SMALL.replace(from, to);
        let text = if key == "image_size" { text.replace("patch_size = 8\n", "") } else { text };
        let cfg = write_config(tmp.path(), &text);
        let run = tmp.path().join(key);
        let started = Instant::now();
        let err = run_err(&mut quick(&cfg, &run, "1"));
        assert!(err.contains("training this config needs about") && err.contains("GiB"), "{key}: {err}");
        assert!(err.contains("available") && err.contains(key), "{key}: {err}");
        assert!(started.elapsed() < Duration::from_secs(20), "{key}: took {:?}", started.elapsed());
        assert!(!run.exists(), "{key}: the run folder was created");
    }
}

#[test]
fn threads_beyond_four_per_core_are_refused_naming_the_limit() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = write_config(tmp.path(), SMALL);
    let run = tmp.path().join("run");
    let cores = std::thread::available_parallelism().unwrap().get();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_vit-train"));
    cmd.arg("fit").arg("--config").arg(&cfg).arg("--data").arg(common::coco5()).arg("--out").arg(&run);
    let err = run_err(cmd.args(["--threads", "100000"]));
    assert!(err.contains("--threads 100000") && err.contains(&format!("at most {}", 4 * cores)), "{err}");
    assert!(!run.exists());
}

#[test]
fn zero_epochs_and_non_finite_flags_are_refused_naming_the_flag() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = write_config(tmp.path(), SMALL);
    let run = tmp.path().join("run");
    let err = run_err(&mut quick(&cfg, &run, "0"));
    assert!(err.contains("--epochs 0") && err.contains("at least 1"), "{err}");
    let zero = tmp.path().join("zero.toml");
    std::fs::write(&zero, SMALL.replace("epochs = 6", "epochs = 0")).unwrap();
    let mut cmd = bin();
    let err = run_err(cmd.arg("--config").arg(&zero).arg("--data").arg(common::coco5()).arg("--out").arg(&run));
    assert!(err.contains("train.epochs") && err.contains("= 0") && err.contains("at least 1"), "{err}");

    for (flag, value) in [
        ("--lr", "nan"),
        ("--weight-decay", "inf"),
        ("--grad-clip", "NaN"),
        ("--val-fraction", "-inf"),
        ("--crop-scale", "nan"),
    ] {
        let err = run_err(quick(&cfg, &run, "1").arg(format!("{flag}={value}")));
        assert!(err.contains(&format!("'{value}' for '{flag}")) && err.contains("finite"), "{flag}: {err}");
    }
    assert!(!run.exists(), "a refused fit created its run folder");

    run_ok(&mut quick(&cfg, &run, "1"));
    let before = snapshot(&run);
    for value in ["nan", "-1"] {
        let err = run_err(export(&run).arg(format!("--atol={value}")));
        assert!(err.contains(&format!("'{value}' for '--atol")), "{err}");
    }
    assert_eq!(snapshot(&run), before);
}

#[test]
fn resume_before_the_first_checkpoint_says_it_starts_over_and_removes_torn_files() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = write_config(tmp.path(), SMALL);
    let run = tmp.path().join("run");
    run_ok(&mut quick(&cfg, &run, "1"));
    // What a kill during the very first checkpoint write leaves: the run's
    // records but no checkpoint, and a torn temporary file of a dead process.
    for f in ["last.safetensors", "best.safetensors", "resume.safetensors", "summary.json"] {
        std::fs::remove_file(run.join(f)).unwrap();
    }
    let torn = run.join(".resume.safetensors.tmp-999999");
    std::fs::write(&torn, b"half a checkpoint").unwrap();

    let out = run_ok(bin().arg("--out").arg(&run).args(["--resume", "--no-export"]));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("warning: no complete epoch checkpoint yet") && stderr.contains("starting from epoch 1"),
        "{stderr}"
    );
    assert!(stderr.contains(".resume.safetensors.tmp-999999"), "the removal is not reported: {stderr}");
    assert!(!torn.exists(), "torn file left behind");
    assert!(run.join("resume.safetensors").is_file() && summary(&run)["epochs"] == 1);
}

#[test]
fn unreadable_data_entries_stop_training_unless_skipping_is_allowed() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = write_config(tmp.path(), SMALL);
    let data = flat_folder(tmp.path(), 12);
    // Tests run as root, which reads through permission bits: a dangling link is an
    // entry the walk cannot read whatever the user.
    let class = std::fs::read_dir(&data).unwrap().next().unwrap().unwrap().path();
    std::os::unix::fs::symlink(tmp.path().join("gone.jpg"), class.join("dangling.jpg")).unwrap();
    let run = tmp.path().join("run");
    let fit = |extra: &[&str]| {
        let mut cmd = bin();
        cmd.arg("--config").arg(&cfg).arg("--data").arg(&data).arg("--out").arg(&run);
        cmd.args(["--epochs", "1", "--no-export"]).args(extra);
        cmd
    };
    let err = run_err(&mut fit(&[]));
    assert!(err.contains("dangling.jpg") && err.contains("--allow-skipped"), "{err}");
    assert!(!run.join("last.safetensors").exists(), "a checkpoint was written by a refused run");

    std::fs::remove_dir_all(&run).ok();
    run_ok(&mut fit(&["--allow-skipped"]));
    assert_eq!(summary(&run)["skipped_files"], 1, "the unreadable entry is counted");
}

/// A default-sized config with 10 classes and no weight average.
fn small_config() -> vit::ViTConfig {
    let mut cfg = vit::ViTConfig { num_classes: 10, ..Default::default() };
    cfg.train.ema_decay = 0.0;
    cfg
}

#[test]
fn a_model_too_large_to_allocate_is_an_error_not_a_panic() {
    // The first qkv weight alone is 192 TB, beyond any address space, so the
    // allocation fails whatever the kernel's overcommit policy; what comes
    // before it is about 300 MB.
    let cfg = vit::ViTConfig {
        image_size: 4,
        patch_size: 4,
        in_channels: 1,
        embed_dim: 4_000_000,
        num_heads: 1,
        depth: 1,
        ..small_config()
    };
    let err = vit_train::train::trainer::Trainer::new(&cfg, tch::Device::Cpu, 10, 10).unwrap_err().to_string();
    assert!(err.starts_with("cannot allocate the model and optimiser state"), "{err}");
}
