//! Throughput of the batch producer alone (no model step): images/s of
//! augmented, normalised training batches built by the worker pool, for each
//! worker count given, from a data set decoded in memory or streamed from its
//! files or tar shards (in the epoch order `fit` uses for each). Tells whether the data side keeps up with a GPU. Prints one JSON line per worker count.
//!
//! `cargo run -p vit-train --example data_throughput -- --config models/coco5-vit.toml \
//!  --data ../shared/data/coco5 --workers 1,2`

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Result;
use clap::Parser;
use vit::data::LoadOptions;
use vit::{Preprocessor, ViTConfig};
use vit_train::batches::{epoch_batches_of, for_each_train_batch, Augment, Pipeline};
use vit_train::data_source::{load_splits_in, DataMode};
use vit_train::shard_order::DEFAULT_SHUFFLE_BUFFER;

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
}

fn main() -> Result<()> {
    vit::cli_log::init();
    let a = Args::parse();
    let cfg = ViTConfig::from_toml_file(&a.config)?;
    let prep = Preprocessor::from_config(&cfg);
    let opts = LoadOptions { seed: cfg.train.seed, ..LoadOptions::default() };
    let (splits, mode) = load_splits_in(&a.data, &prep, &opts, a.mode, u64::MAX)?;
    let (t, data) = (&cfg.train, &splits.train);
    for &workers in &a.workers {
        let pipe = Pipeline { workers, prefetch: 2 * workers };
        let started = Instant::now();
        let mut images = 0;
        for epoch in 0..a.epochs {
            let batches = epoch_batches_of(data, t.batch_size, t.seed, epoch, DEFAULT_SHUFFLE_BUFFER);
            for_each_train_batch(data, &prep, Augment::from_train(t), &batches, t.seed, epoch, pipe, |_, b, _| {
                images += b.labels.len();
                true
            });
        }
        let seconds = started.elapsed().as_secs_f64();
        let line = serde_json::json!({
            "mode": format!("{mode:?}").to_lowercase(),
            "workers": workers,
            "images": images,
            "seconds": seconds,
            "images_per_sec": images as f64 / seconds,
        });
        println!("{line}");
    }
    Ok(())
}
