//! Throughput of the batch producer alone (no model step): images/s of
//! augmented, normalised training batches built by the worker pool, for each
//! worker count given, from a data set decoded in memory or streamed from its
//! files or tar shards (in the epoch order `fit` uses for each). Tells whether the data side keeps up with a GPU.
//! Prints one JSON line per worker count, with the process's peak resident memory so far
//! (`VmHWM`: run one worker count per process to read it per count).
//!
//! `cargo run -p vit-train --example data_throughput -- --config models/coco5-vit.toml \
//!  --data ../shared/data/coco5 --workers 1,2`
//!
//! torchvision's `RandomResizedCrop(224)` + `RandomHorizontalFlip()` from the
//! original files, as `scripts/bench-data.sh` runs it against PyTorch:
//! `... --data DIR --mode stream --image-size 224 --batch-size 64 --augment crop-flip
//!  --crop-from-original --val-fraction 0`

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Result;
use clap::Parser;
use vit::data::LoadOptions;
use vit::{Preprocessor, ViTConfig};
use vit_train::data::batches::{epoch_batches_of, for_each_train_batch, Augment, Pipeline};
use vit_train::data::shard_order::DEFAULT_SHUFFLE_BUFFER;
use vit_train::data::source::{load_splits_in, DataMode};

/// Which augmentations run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Recipe {
    /// The preset's own.
    Preset,
    /// torchvision's ImageNet training pair alone: random resized crop (area
    /// 0.08-1) and horizontal flip.
    CropFlip,
}

/// Times the batch producer.
#[derive(Debug, Parser)]
struct Args {
    /// Preset whose size, batch and augmentations are used.
    #[arg(long)]
    config: PathBuf,
    /// Data folder (an image folder, IDX files or tar shards).
    #[arg(long)]
    data: PathBuf,
    /// Worker counts to time, comma separated.
    #[arg(long, value_delimiter = ',', default_value = "1,2")]
    workers: Vec<usize>,
    /// memory or stream.
    #[arg(long, value_enum, default_value_t = DataMode::Memory)]
    mode: DataMode,
    /// Epochs timed per worker count.
    #[arg(long, default_value_t = 1)]
    epochs: usize,
    /// Model side in pixels instead of the preset's.
    #[arg(long)]
    image_size: Option<usize>,
    /// Batch size instead of the preset's.
    #[arg(long)]
    batch_size: Option<usize>,
    /// Augmentations: the preset's, or crop-flip.
    #[arg(long, value_enum, default_value_t = Recipe::Preset)]
    augment: Recipe,
    /// Take the resized crop from each original file (train.crop_from_original; stream mode).
    #[arg(long)]
    crop_from_original: bool,
    /// Validation fraction held out of the timed training split (0: every image).
    #[arg(long, default_value_t = 0.2)]
    val_fraction: f64,
    /// Batches built before the clock starts (pool start-up and queue filling).
    #[arg(long, default_value_t = 2)]
    warmup: usize,
    /// Stop each epoch after this many batches.
    #[arg(long)]
    max_batches: Option<usize>,
}

/// Peak resident memory of this process in bytes (`VmHWM`), where /proc has it.
fn peak_rss() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    Some(line.split_whitespace().nth(1)?.parse::<u64>().ok()? * 1024)
}

fn main() -> Result<()> {
    vit::cli_log::init();
    let a = Args::parse();
    let mut cfg = ViTConfig::from_toml_file(&a.config)?;
    cfg.image_size = a.image_size.unwrap_or(cfg.image_size);
    let t = &mut cfg.train;
    t.batch_size = a.batch_size.unwrap_or(t.batch_size);
    t.crop_from_original = a.crop_from_original;
    if a.augment == Recipe::CropFlip {
        let (batch_size, seed, crop_from_original) = (t.batch_size, t.seed, t.crop_from_original);
        *t = vit::config::TrainConfig { batch_size, seed, crop_from_original, ..Default::default() };
        (t.crop_scale, t.hflip) = ((0.08, 1.0), true);
    }
    let prep = Preprocessor::from_config(&cfg);
    let opts = LoadOptions { seed: cfg.train.seed, val_fraction: a.val_fraction, ..LoadOptions::default() };
    let (splits, mode) = load_splits_in(&a.data, &prep, &opts, a.mode, u64::MAX)?;
    let (t, data) = (&cfg.train, &splits.train);
    let aug = Augment::from_train(t);
    for &workers in &a.workers {
        let pipe = Pipeline { workers, prefetch: 2 * workers };
        let (mut started, mut images, mut batches_seen) = (Instant::now(), 0, 0);
        for epoch in 0..a.epochs {
            let mut batches = epoch_batches_of(data, t.batch_size, t.seed, epoch, DEFAULT_SHUFFLE_BUFFER);
            batches.truncate(a.max_batches.unwrap_or(usize::MAX));
            for_each_train_batch(data, &prep, aug, &batches, t.seed, epoch, pipe, |_, b, _| {
                batches_seen += 1;
                if batches_seen == a.warmup {
                    started = Instant::now();
                } else if batches_seen > a.warmup {
                    images += b.labels.len();
                }
                true
            });
        }
        let seconds = started.elapsed().as_secs_f64();
        let line = serde_json::json!({
            "mode": format!("{mode:?}").to_lowercase(),
            "workers": workers,
            "image_size": cfg.image_size,
            "images": images,
            "seconds": seconds,
            "images_per_sec": images as f64 / seconds,
            "peak_rss_mib": peak_rss().map(|b| b as f64 / f64::from(1u32 << 20)),
        });
        println!("{line}");
    }
    Ok(())
}
