//! A data set that does not fit the memory budget trains in bounded memory:
//! `--data-mode auto` streams it, and the peak resident memory of the
//! `vit-train` process stays within a margin of a run on a handful of images,
//! while decoding the same set into memory goes past that margin (so the bound
//! is one the test can see broken). libtorch alone takes a few hundred MB, so
//! the bound is measured against that baseline, not as an absolute number.
//! A streamed run's peak also stops growing with the number of images once its
//! queues are full: eight times as many images add no more than a small margin.
//! Alone in its test binary: each child's peak is read from its own `wait4`.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};

use common::cli::*;

/// 3 classes of this many images of [`SIDE`] x [`SIDE`] pixels.
const PER_CLASS: usize = 160;
const SIDE: u32 = 160;

/// A 1-block ViT on 160x160 images in 32x32 patches (25 tokens): the model is
/// small, the decoded images are not (76,800 bytes each).
const MODEL: &str = r#"
variant = "standard"
image_size = 160
patch_size = 32
in_channels = 3
embed_dim = 32
depth = 1
num_heads = 2
mlp_ratio = 2.0
pooling = "mean"
[train]
epochs = 1
batch_size = 8
lr = 1e-3
log_every = 5
seed = 3
"#;

/// Writes the image folder: smooth colour ramps as PNG, different per image.
fn write_images(dir: &Path) {
    write_images_of(dir, PER_CLASS, SIDE);
}

/// Writes 3 classes of `per_class` PNG images of `side` x `side` pixels.
fn write_images_of(dir: &Path, per_class: usize, side: u32) {
    for class in 0..3u32 {
        let class_dir = dir.join(format!("class{class}"));
        std::fs::create_dir_all(&class_dir).unwrap();
        for n in 0..per_class as u32 {
            let img = image::RgbImage::from_fn(side, side, |x, y| {
                image::Rgb([(x + n) as u8, (y * 2 + class * 80) as u8, ((x + y) / 2 + n * 3) as u8])
            });
            img.save(class_dir.join(format!("{n:04}.png"))).unwrap();
        }
    }
}

/// Runs `cmd` to completion; fails the test on a non-zero exit. Returns the
/// child's peak resident memory in bytes (`ru_maxrss` of its own `wait4`).
#[allow(clippy::zombie_processes)] // reaped by `wait4`, which std's `wait` cannot replace: it returns the usage too
fn peak_rss(cmd: &mut Command, log: &Path) -> u64 {
    let stderr = std::fs::File::create(log).unwrap();
    let child = cmd.stdout(Stdio::null()).stderr(stderr).spawn().unwrap();
    let (mut status, mut usage) = (0, unsafe { std::mem::zeroed::<libc::rusage>() });
    // SAFETY: waits for our own child, which std has not reaped; both out-pointers are valid.
    let pid = unsafe { libc::wait4(child.id() as libc::pid_t, &mut status, 0, &mut usage) };
    assert_eq!(pid, child.id() as libc::pid_t, "wait4: {}", std::io::Error::last_os_error());
    let ok = libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0;
    assert!(ok, "vit-train failed (status {status}):\n{}", std::fs::read_to_string(log).unwrap_or_default());
    usage.ru_maxrss as u64 * 1024
}

#[test]
fn a_set_over_the_budget_streams_within_a_fixed_margin_of_a_tiny_run() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    write_images(&data);
    let cfg = write_config(tmp.path(), MODEL);
    let decoded = (3 * PER_CLASS) as u64 * u64::from(3 * SIDE * SIDE);
    let fit = |name: &str, mode: &str| {
        let mut cmd = bin();
        cmd.arg("--config").arg(&cfg).arg("--data").arg(&data).arg("--out").arg(tmp.path().join(name));
        cmd.args(["--no-export", "--data-mode", mode, "--data-workers", "1", "--prefetch", "2"]);
        cmd.args(["--eval-batch-size", "8", "--data-memory-budget", "8M"]);
        cmd
    };
    let mib = |b: u64| b as f64 / f64::from(1u32 << 20);
    // libtorch, the model and the pipeline, with next to no images.
    let baseline = peak_rss(fit("tiny", "memory").args(["--max-per-class", "4"]), &tmp.path().join("tiny.log"));
    let streamed = peak_rss(&mut fit("auto", "auto"), &tmp.path().join("auto.log"));
    let run_json = std::fs::read_to_string(tmp.path().join("auto/run.json")).unwrap();
    assert!(run_json.contains("\"data_mode\": \"stream\""), "over the budget, auto must stream: {run_json}");
    let decoded_run = peak_rss(&mut fit("memory", "memory"), &tmp.path().join("memory.log"));
    // Half the decoded set: a streamed run holds a few batches, an in-memory one the whole set (twice, while decoding).
    let margin = decoded / 2;
    let report = format!(
        "baseline {:.1} MiB, streamed {:.1} MiB, in memory {:.1} MiB, decoded set {:.1} MiB, margin {:.1} MiB",
        mib(baseline),
        mib(streamed),
        mib(decoded_run),
        mib(decoded),
        mib(margin)
    );
    eprintln!("{report}");
    assert!(streamed < baseline + margin, "the streamed run is over the bound: {report}");
    assert!(decoded_run > baseline + margin, "decoding the set must break the bound, or it proves nothing: {report}");
}

/// A 1-block ViT on 96x96 images in 16x16 patches, batches of 16.
const WIDE_MODEL: &str = r#"
variant = "standard"
image_size = 96
patch_size = 16
in_channels = 3
embed_dim = 32
depth = 1
num_heads = 2
mlp_ratio = 2.0
pooling = "mean"
[train]
epochs = 1
batch_size = 16
lr = 1e-3
log_every = 50
seed = 3
"#;

#[test]
fn streamed_peak_memory_does_not_grow_with_the_number_of_images() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = write_config(tmp.path(), WIDE_MODEL);
    let mib = |b: u64| b as f64 / f64::from(1u32 << 20);
    // Most images go to validation, where the default queue (--prefetch 8) of default
    // evaluation batches (256) once held up to 8 x 256 x 110 KiB = 226 MiB. Both sets fill
    // every queue (at least 256 + 10 x 32 validation and 10 x 16 training images), so a
    // peak that depends on the data, not on the queues, shows as a difference.
    let peak = |per_class: usize| {
        let data = tmp.path().join(format!("data{per_class}"));
        write_images_of(&data, per_class, 96);
        let run = tmp.path().join(format!("run{per_class}"));
        let mut cmd = bin();
        cmd.arg("--config").arg(&cfg).arg("--data").arg(&data).arg("--out").arg(&run);
        cmd.args(["--no-export", "--data-mode", "stream", "--data-workers", "2", "--val-fraction", "0.8"]);
        let peak = peak_rss(&mut cmd, &tmp.path().join(format!("fit{per_class}.log")));
        let summary = std::fs::read_to_string(run.join("summary.json")).unwrap();
        assert!(summary.contains("\"best_val_accuracy\""), "the run must have evaluated: {summary}");
        std::fs::remove_dir_all(&data).unwrap();
        peak
    };
    let (small, large) = (peak(300), peak(2400));
    // Measured: the old queue added 140-250 MiB at 8x the images, pieces 0-42 MiB (the allocator's arenas vary).
    let margin = 64u64 << 20;
    let report =
        format!("900 images {:.1} MiB, 7,200 images {:.1} MiB, margin {:.1} MiB", mib(small), mib(large), mib(margin));
    eprintln!("{report}");
    assert!(large < small + margin, "peak memory grew with the data set: {report}");
}
