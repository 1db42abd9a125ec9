//! The data pipeline flags of `vit-train fit`: how images are held
//! (`--data-mode`), how many threads build batches and how far ahead, and the
//! shuffle buffer of tar shards. Only the mode and the shuffle buffer are saved
//! in `run.json`; the others change speed and memory, never the batches.

use clap::Args;

use crate::data::shard_order::DEFAULT_SHUFFLE_BUFFER;
use crate::data::source::{parse_bytes, DataMode, DataOptions};
use crate::data::workers::{default_workers, Pipeline, DEFAULT_PREFETCH};

/// `fit`'s data pipeline flags.
#[derive(Debug, Clone, Args)]
pub struct DataArgs {
    /// memory: decode every image once; stream: decode each image when a batch needs it
    /// (memory bounded by the prefetch queue); auto: stream when the decoded images would
    /// exceed --data-memory-budget (memory and stream give the same batches); device: keep
    /// the decoded set on the training device and augment batches there (auto picks it on
    /// CUDA when the set fits half the free GPU memory).
    #[arg(long, value_enum, default_value_t = DataMode::Auto)]
    pub data_mode: DataMode,
    /// Threads that build batches (default: half the cores, 1 to 8).
    #[arg(long)]
    pub data_workers: Option<usize>,
    /// Batches prepared ahead of training, over all workers.
    #[arg(long, default_value_t = DEFAULT_PREFETCH)]
    pub prefetch: usize,
    /// Memory the decoded images may take before --data-mode auto streams, e.g. 8G
    /// (default: half of the memory available).
    #[arg(long, value_parser = parse_bytes)]
    pub data_memory_budget: Option<u64>,
    /// With --data a folder of tar shards: samples the shuffle buffer mixes, in the order
    /// the shards are read (1 reads each shard in order; a resumed run keeps its own).
    #[arg(long, default_value_t = DEFAULT_SHUFFLE_BUFFER)]
    pub shuffle_buffer: usize,
}

impl DataArgs {
    /// The options `fit` takes.
    pub fn options(&self) -> DataOptions {
        let workers = self.data_workers.unwrap_or_else(default_workers).max(1);
        DataOptions {
            pipeline: Pipeline { workers, prefetch: self.prefetch.max(1) },
            memory_budget: self.data_memory_budget,
        }
    }
}
