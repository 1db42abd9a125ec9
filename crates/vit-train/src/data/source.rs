//! Where a run's images live while it trains: decoded in memory, or streamed
//! from their files by the batch workers (`--data-mode`). Both give the same
//! batches, so the choice is about memory only: `auto` streams when the
//! decoded set would exceed a memory budget (half the memory available by
//! default). `run.json` records the mode chosen, so `--resume` reads the data the same way.

use std::path::Path;

use serde::{Deserialize, Serialize};
use vit::data::{decoded_bytes, load_splits, scan_splits, DataError, LoadOptions, Splits};
use vit::Preprocessor;

use crate::data::workers::Pipeline;

/// How the images of a run are held (`--data-mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum DataMode {
    /// Decode every image once, before training.
    #[default]
    Memory,
    /// Decode each image when a batch needs it; memory is bounded by the prefetch queue.
    Stream,
    /// Stream when the decoded images would exceed the memory budget, else memory
    /// (on CUDA: the device when the decoded set fits half its free memory).
    Auto,
    /// Decode every image once and keep the set on the training device as one u8
    /// tensor; batches are gathered and augmented there ([`crate::data::resident`]).
    Device,
}

/// Data options of `fit` that do not change the batches: workers, queue, memory budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DataOptions {
    /// Batch workers and prefetch depth.
    pub pipeline: Pipeline,
    /// Bytes the decoded images may take before `auto` streams (None: half of the available memory).
    pub memory_budget: Option<u64>,
}

impl DataOptions {
    /// The budget in bytes: the one given, else half of `MemAvailable`.
    pub fn budget(&self) -> u64 {
        self.memory_budget.unwrap_or_else(|| available_memory().map_or(u64::MAX, |b| b / 2))
    }
}

/// `MemAvailable` of `/proc/meminfo` in bytes (None where there is none).
pub fn available_memory() -> Option<u64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = info.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Parses a byte size: a number with an optional `K`, `M`, `G` or `T` (powers of 1024, `B`/`iB` allowed).
pub fn parse_bytes(s: &str) -> Result<u64, String> {
    let t = s.trim().to_ascii_uppercase();
    let t = t.trim_end_matches("IB").trim_end_matches('B');
    let (digits, shift) = match t.chars().last() {
        Some('K') => (&t[..t.len() - 1], 10),
        Some('M') => (&t[..t.len() - 1], 20),
        Some('G') => (&t[..t.len() - 1], 30),
        Some('T') => (&t[..t.len() - 1], 40),
        _ => (t, 0),
    };
    let value: f64 = digits.trim().parse().map_err(|_| format!("{s:?} is not a size such as 512M or 8G"))?;
    if !value.is_finite() || value < 0.0 {
        return Err(format!("{s:?} is not a size such as 512M or 8G"));
    }
    Ok((value * (1u64 << shift) as f64) as u64)
}

/// Loads the splits of `dir` in `mode` (`auto` resolved against `budget`
/// bytes); returns them with the mode used: `memory` or `stream` for `auto`
/// (the device is chosen later, by [`crate::data::resident::choose`]), else `mode`.
pub fn load_splits_in(
    dir: &Path,
    prep: &Preprocessor,
    opts: &LoadOptions,
    mode: DataMode,
    budget: u64,
) -> Result<(Splits, DataMode), DataError> {
    match mode {
        DataMode::Memory => Ok((load_splits(dir, prep, opts)?, DataMode::Memory)),
        DataMode::Device => Ok((load_splits(dir, prep, opts)?, DataMode::Device)),
        DataMode::Stream => Ok((scan_splits(dir, prep, opts)?, DataMode::Stream)),
        DataMode::Auto => {
            let index = scan_splits(dir, prep, opts)?;
            let bytes = decoded_bytes(index.train.len() + index.val.len(), prep.image_len());
            if !index.train.is_streamed() {
                // IDX files: decoded already.
                return Ok((index, DataMode::Memory));
            }
            if bytes <= budget {
                return Ok((load_splits(dir, prep, opts)?, DataMode::Memory));
            }
            log::info!(
                "data: the decoded images would take {:.1} GiB, over the {:.1} GiB budget: streaming them",
                bytes as f64 / f64::from(1u32 << 30),
                budget as f64 / f64::from(1u32 << 30)
            );
            Ok((index, DataMode::Stream))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_like_a_person_writes_them() {
        assert_eq!(parse_bytes("512").unwrap(), 512);
        assert_eq!(parse_bytes("2K").unwrap(), 2048);
        assert_eq!(parse_bytes("1.5G").unwrap(), 3 << 29);
        assert_eq!(parse_bytes("8GiB").unwrap(), 8 << 30);
        assert_eq!(parse_bytes("64mb").unwrap(), 64 << 20);
        assert!(parse_bytes("lots").is_err());
    }
}
