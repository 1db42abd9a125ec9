//! The flags of `vit-train shards` (packing an image folder into WebDataset tar shards).

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;

use super::DEFAULT_VAL_FRACTION;
use crate::data::shards::{write_shards, ShardsRequest};
use crate::data::source::parse_bytes;

/// `vit-train shards` flags.
#[derive(Debug, Args)]
pub struct ShardsArgs {
    /// Image folder: DIR/CLASS/*.jpg or DIR/{train,val}/CLASS/*.jpg (split as `fit` splits it).
    #[arg(long)]
    pub data: PathBuf,
    /// Folder for the shards (SPLIT-000000.tar ...) and classes.json; must be empty unless --force.
    #[arg(long)]
    pub out: PathBuf,
    /// Size of each tar file, e.g. 512M or 1G.
    #[arg(long, default_value = "1G", value_parser = parse_bytes)]
    pub shard_size: u64,
    /// Seed of the shuffle across shards and of the split of a folder without train/val
    /// (pass the config's train.seed to split as `fit --data DIR` would).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Validation fraction of a folder without train/val.
    #[arg(long, default_value_t = DEFAULT_VAL_FRACTION, value_parser = vit::flags::fraction_f64)]
    pub val_fraction: f64,
    /// Keep at most this many images per class and split.
    #[arg(long)]
    pub max_per_class: Option<usize>,
    /// Replace the shards already in --out.
    #[arg(long)]
    pub force: bool,
}

/// Runs `vit-train shards`, printing one line per split.
pub fn run_shards(a: &ShardsArgs) -> Result<()> {
    let req = ShardsRequest {
        data: a.data.clone(),
        out: a.out.clone(),
        shard_size: a.shard_size.max(1),
        seed: a.seed,
        val_fraction: a.val_fraction,
        max_per_class: a.max_per_class,
        force: a.force,
    };
    // One writer per folder: two `shards --force` into one folder would each report success with one's output lost.
    std::fs::create_dir_all(&a.out).with_context(|| format!("cannot create {}", a.out.display()))?;
    let _lock = crate::run::lock::RunLock::acquire(&a.out)?;
    for split in write_shards(&req)? {
        println!(
            "{}: {} samples in {} shard(s) in {}",
            split.split,
            split.samples,
            split.shards.len(),
            a.out.display()
        );
    }
    Ok(())
}
