//! Data-parallel training over c10d (Gloo) on localhost: two ranks against one
//! process with the global batch, a rank killed mid-run, and who writes the run
//! folder. Each rank runs 1 libtorch thread.

mod common;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::cli::*;
use common::*;
use tch::Tensor;

/// [`SMALL`] without augmentation or dropout (so the data order alone decides each
/// step) and with a weight average.
const PLAIN: &str = r#"
variant = "standard"
image_size = 32
patch_size = 8
in_channels = 3
embed_dim = 32
depth = 2
num_heads = 2
mlp_ratio = 2.0
pooling = "mean"
[train]
epochs = 3
batch_size = 16
lr = 1e-3
optimizer = "adamw"
weight_decay = 0.05
warmup_epochs = 0.5
cosine = true
grad_clip = 1.0
ema_decay = 0.9
log_every = 5
seed = 3
"#;

/// The conv stem (3x3 convolutions with BatchNorm) in front of PLAIN's transformer.
const STEM: &str = "stem = \"conv\"\nstem_channels = [8, 16, 16]\nstem_strides = [2, 2, 2]\n";

fn torchrun() -> PathBuf {
    venv_python().with_file_name("torchrun")
}

/// `fit` flags of these tests: PLAIN on 16 images per class, 1 thread.
fn fit_args(cfg: &Path, run: &Path, epochs: &str, batch: &str) -> Vec<String> {
    let mut args: Vec<String> =
        ["fit", "--quiet", "--threads", "1", "--device", "cpu", "--no-export", "--config"].map(String::from).into();
    args.push(cfg.display().to_string());
    args.extend(["--data".into(), coco5().display().to_string(), "--out".into(), run.display().to_string()]);
    args.extend(["--max-per-class", "16", "--epochs", epochs, "--batch-size", batch].map(String::from));
    args
}

/// A port nobody listens on right now.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Rank `rank` of `world` started by hand (as torchrun would, without its agent).
fn spawn_rank(rank: usize, world: usize, port: u16, args: &[String]) -> Child {
    Command::new(env!("CARGO_BIN_EXE_vit-train"))
        .args(args)
        .env("RANK", rank.to_string())
        .env("LOCAL_RANK", rank.to_string())
        .env("WORLD_SIZE", world.to_string())
        .env("MASTER_ADDR", "127.0.0.1")
        .env("MASTER_PORT", port.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn tensors(path: &Path) -> Vec<(String, Tensor)> {
    let mut t = Tensor::read_safetensors(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    t.sort_by(|a, b| a.0.cmp(&b.0));
    t
}

/// Largest |a - b| over the float tensors of two checkpoints with the same names.
fn max_diff(a: &Path, b: &Path) -> f64 {
    let (a, b) = (tensors(a), tensors(b));
    assert_eq!(a.iter().map(|t| &t.0).collect::<Vec<_>>(), b.iter().map(|t| &t.0).collect::<Vec<_>>());
    a.iter()
        .zip(&b)
        .filter(|(x, _)| x.1.is_floating_point())
        .map(|(x, y)| (&x.1 - &y.1).abs().max().double_value(&[]))
        .fold(0.0, f64::max)
}

/// Two ranks with half the batch each against one process with the whole batch.
fn assert_two_ranks_match_one_process(config: &str) {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = write_config(tmp.path(), config);
    let (one, two) = (tmp.path().join("one"), tmp.path().join("two"));
    let mut reference = Command::new(env!("CARGO_BIN_EXE_vit-train"));
    run_ok(reference.args(fit_args(&cfg, &one, "3", "32")));
    let mut ranks = Command::new(torchrun());
    ranks.args(["--standalone", "--nproc-per-node", "2", "--no-python", env!("CARGO_BIN_EXE_vit-train")]);
    run_ok(ranks.args(fit_args(&cfg, &two, "3", "16")));
    // Trained weights, Adam moments and the weight average; the averaged weights are last.safetensors.
    for file in ["resume.safetensors", "last.safetensors"] {
        let diff = max_diff(&one.join(file), &two.join(file));
        assert!(diff < 1e-5, "{file}: max |diff| {diff:e}");
    }
    let (s1, s2) = (summary(&one), summary(&two));
    assert_eq!(s1["val_accuracy"], s2["val_accuracy"]);
    assert_eq!(s1["confusion_matrix"], s2["confusion_matrix"]);
}

#[test]
fn two_ranks_match_one_process_with_the_global_batch() {
    assert_two_ranks_match_one_process(PLAIN);
}

#[test]
fn two_ranks_with_sync_batch_norm_match_one_process() {
    // BatchNorm statistics over both ranks' images, the weight average on.
    assert_two_ranks_match_one_process(&PLAIN.replace("pooling = \"mean\"\n", &format!("pooling = \"mean\"\n{STEM}")));
}

#[test]
fn only_rank_0_writes_a_run_folder_and_the_shards_partition_the_epoch() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = write_config(tmp.path(), PLAIN);
    let port = free_port();
    let (run0, run1) = (tmp.path().join("rank0"), tmp.path().join("rank1"));
    let r1 = spawn_rank(1, 2, port, &fit_args(&cfg, &run1, "1", "16"));
    let r0 = spawn_rank(0, 2, port, &fit_args(&cfg, &run0, "1", "16"));
    for (rank, child) in [(0, r0), (1, r1)] {
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "rank {rank}: {}", String::from_utf8_lossy(&out.stderr));
    }
    assert!(run0.join("summary.json").exists());
    // Rank 1 was given its own --out: it must not even create it.
    assert!(!run1.exists(), "rank 1 wrote {}", run1.display());

    let mut rng = vit_train::data::batches::epoch_rng(3, 0);
    for len in [80, 81] {
        let order: Vec<usize> = vit_train::data::batches::epoch_order(len, len, &mut rng).concat();
        let shards: Vec<Vec<usize>> = (0..2).map(|r| vit_train::dist::sampler::shard_of(&order, r, 2)).collect();
        assert_eq!(shards[0].len(), shards[1].len());
        let mut all = shards.concat();
        all.sort_unstable();
        all.dedup();
        assert_eq!(all, (0..len).collect::<Vec<_>>(), "the shards cover the data");
        if len % 2 == 0 {
            assert!(shards[0].iter().all(|i| !shards[1].contains(i)), "the shards are disjoint");
        }
    }
}

#[test]
fn a_dead_rank_stops_the_other_within_the_timeout_and_the_run_resumes_alone() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = write_config(tmp.path(), PLAIN);
    let (run, other) = (tmp.path().join("run"), tmp.path().join("other"));
    let port = free_port();
    let mut args = fit_args(&cfg, &run, "30", "16");
    args.extend(["--dist-timeout", "20"].map(String::from));
    let mut r1 = spawn_rank(1, 2, port, &fit_args(&cfg, &other, "30", "16"));
    let r0 = spawn_rank(0, 2, port, &args);
    // Kill rank 1 once rank 0 has written a complete epoch.
    let started = Instant::now();
    while !run.join("resume.safetensors").exists() {
        assert!(started.elapsed() < Duration::from_secs(120), "no epoch completed");
        std::thread::sleep(Duration::from_millis(20));
    }
    r1.kill().unwrap();
    let killed = Instant::now();
    let out = r0.wait_with_output().unwrap();
    let waited = killed.elapsed();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "rank 0 went on without rank 1");
    assert!(waited < Duration::from_secs(30), "rank 0 took {waited:?} to notice");
    assert!(stderr.contains("rank 0 of 2 failed") && stderr.contains("failed rank 1"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    let _ = r1.wait();

    // World size 1 from the kept epoch finishes the run, and does so reproducibly.
    let copy = tmp.path().join("copy");
    std::fs::create_dir(&copy).unwrap();
    for entry in std::fs::read_dir(&run).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(&path, copy.join(path.file_name().unwrap())).unwrap();
    }
    let kept = tensors(&run.join("resume.safetensors"))
        .into_iter()
        .find(|(n, _)| n == "train.epoch")
        .map(|(_, t)| t.int64_value(&[0]))
        .unwrap();
    assert!((1..30).contains(&kept), "kept epoch {kept}");
    let resume = |dir: &Path| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_vit-train"));
        cmd.args(["fit", "--quiet", "--threads", "1", "--device", "cpu", "--no-export", "--resume", "--out"]);
        run_ok(cmd.arg(dir));
    };
    resume(&run);
    resume(&copy);
    assert_eq!(summary(&run)["epochs"], 30);
    assert_eq!(max_diff(&run.join("resume.safetensors"), &copy.join("resume.safetensors")), 0.0);
}

#[test]
fn ranks_started_differently_all_stop_at_once_naming_the_difference() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = write_config(tmp.path(), PLAIN);
    // A different learning rate trains on silently without the check; a different batch size aborted in gloo.
    for (flag, value, named) in [
        ("--lr", "0.002", "config.train.lr = 0.002 here, 0.001 on rank 0"),
        ("--batch-size", "8", "config.train.batch_size = 8 here, 16 on rank 0"),
    ] {
        let (run, other) = (tmp.path().join(format!("run{flag}")), tmp.path().join(format!("other{flag}")));
        let port = free_port();
        let mut differs = fit_args(&cfg, &other, "3", "16");
        if flag == "--batch-size" {
            differs = fit_args(&cfg, &other, "3", value);
        } else {
            differs.extend([flag.to_string(), value.to_string()]);
        }
        let started = Instant::now();
        let r1 = spawn_rank(1, 2, port, &differs);
        let r0 = spawn_rank(0, 2, port, &fit_args(&cfg, &run, "3", "16"));
        let (o0, o1) = (r0.wait_with_output().unwrap(), r1.wait_with_output().unwrap());
        let (e0, e1) = (String::from_utf8_lossy(&o0.stderr), String::from_utf8_lossy(&o1.stderr));
        assert!(started.elapsed() < Duration::from_secs(40), "{flag}: took {:?}", started.elapsed());
        assert_eq!((o0.status.code(), o1.status.code()), (Some(1), Some(1)), "{flag}:\n{e0}\n{e1}");
        assert!(e1.contains("rank 1 was not started like rank 0") && e1.contains(named), "{flag}: {e1}");
        assert!(e0.contains("1 rank(s) were not started like rank 0"), "{flag}: {e0}");
        for e in [&e0, &e1] {
            assert!(!e.contains("panicked") && !e.contains("SIGABRT"), "{flag}: {e}");
        }
        // Nothing of a run was written: the same --out starts cleanly once the ranks agree.
        assert!(!run.join("run.json").exists() && !run.join("config.toml").exists(), "{flag}");
    }
}

#[test]
fn dist_timeout_is_positive_and_at_most_a_day() {
    for bad in ["0", "-5", "NaN", "inf", "1e300", "86401"] {
        let out = Command::new(env!("CARGO_BIN_EXE_vit-train"))
            .args(["fit", "--data", "nowhere", &format!("--dist-timeout={bad}")])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{bad}: {err}");
        assert!(err.contains("--dist-timeout") && err.contains("86400"), "{bad}: {err}");
    }
}
