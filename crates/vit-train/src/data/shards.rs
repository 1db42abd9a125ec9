//! `vit-train shards`: packs an image folder into WebDataset tar shards that
//! `fit --data SHARDS/` reads (see `vit::data`'s shards module for the format).
//! The folder is walked and split exactly as `fit` does, and each split is
//! written as `SPLIT-000000.tar`, `SPLIT-000001.tar`, ... (`train`, `val`) of
//! about `--shard-size` each, its samples shuffled with the seed so every shard
//! mixes the classes. A sample is `<key>.<ext>` (the original encoded bytes,
//! extension kept) and `<key>.cls` (the class index in ASCII); `classes.json`
//! names the classes. Each file is written under a hidden temporary name and
//! renamed when complete ([`vit::atomic`]), so an interrupted run never leaves a
//! short shard; and `shards.json` says "incomplete" from before the first shard
//! until it lists every shard, written last, so an interrupted run never leaves
//! a set `fit` takes for complete. The caller holds the folder's lock (one writer).

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use rand::{seq::SliceRandom, SeedableRng};
use rand_chacha::ChaCha8Rng;
use vit::data::{scan_splits, Dataset, LoadOptions, ManifestEntry, ShardManifest, Source, SourceKind};
use vit::data::{SHARD_CLASSES_FILE, SHARD_MANIFEST_FILE};
use vit::{Preprocessor, ViTConfig};

/// What `vit-train shards` writes.
#[derive(Debug, Clone)]
pub struct ShardsRequest {
    /// The image folder (`DIR/<class>/*` or `DIR/train` + `DIR/val`).
    pub data: PathBuf,
    /// The folder to write the shards into.
    pub out: PathBuf,
    /// A shard is closed before it would pass this many bytes (a single larger sample gets a shard alone).
    pub shard_size: u64,
    /// Seeds the shuffle across shards, and the split of a folder without train/val.
    pub seed: u64,
    /// Validation fraction of a folder without train/val.
    pub val_fraction: f64,
    /// Keep at most this many images per class and split.
    pub max_per_class: Option<usize>,
    /// Replace the shards already in `out`.
    pub force: bool,
}

/// One split as written.
#[derive(Debug, Clone, PartialEq)]
pub struct SplitReport {
    /// `train` or `val`.
    pub split: String,
    /// Samples written.
    pub samples: usize,
    /// The tar files, in order.
    pub shards: Vec<PathBuf>,
    /// Samples in each of them.
    pub shard_samples: Vec<usize>,
}

/// Packs `req.data` into shards in `req.out`; returns what each split got.
pub fn write_shards(req: &ShardsRequest) -> Result<Vec<SplitReport>> {
    prepare_out(&req.out, req.force)?;
    let prep = Preprocessor::from_config(&ViTConfig::default());
    let opts = LoadOptions {
        val_fraction: req.val_fraction,
        seed: req.seed,
        max_per_class: req.max_per_class,
        allow_unreadable: false,
    };
    let splits = scan_splits(&req.data, &prep, &opts)?;
    if splits.source == SourceKind::Idx {
        bail!("{} holds IDX files, which are compact already: shards are for image folders", req.data.display());
    }
    let mut reports = Vec::new();
    for (stream, split, data) in [(1, "train", &splits.train), (2, "val", &splits.val)] {
        if data.is_empty() {
            continue;
        }
        let mut rng = ChaCha8Rng::seed_from_u64(req.seed);
        rng.set_stream(stream);
        reports.push(write_split(&req.out, split, data, req.shard_size, &mut rng)?);
    }
    let classes = serde_json::to_string_pretty(&serde_json::json!({ "classes": splits.classes }))?;
    write_atomic(&req.out.join(SHARD_CLASSES_FILE), |f| f.write_all(classes.as_bytes()))?;
    let mut manifest = ShardManifest { complete: true, shards: Vec::new() };
    for report in &reports {
        for (path, &samples) in report.shards.iter().zip(&report.shard_samples) {
            let bytes = std::fs::metadata(path).with_context(|| format!("cannot read {}", path.display()))?.len();
            let file = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            manifest.shards.push(ManifestEntry { file, bytes, samples });
        }
    }
    write_manifest(&req.out, &manifest)?;
    Ok(reports)
}

/// Writes `shards.json` atomically.
fn write_manifest(out: &Path, manifest: &ShardManifest) -> Result<()> {
    let text = serde_json::to_string_pretty(manifest)? + "\n";
    write_atomic(&out.join(SHARD_MANIFEST_FILE), |f| f.write_all(text.as_bytes()))
}

/// Creates `out`, or empties it of earlier shards with `force`; a folder holding anything is refused without it.
fn prepare_out(out: &Path, force: bool) -> Result<()> {
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    let entries: Vec<PathBuf> = std::fs::read_dir(out)
        .with_context(|| format!("cannot read {}", out.display()))?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<_, _>>()?;
    let name = |p: &PathBuf| p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    // The lock of the writer that holds the folder (this process) is not content.
    let entries: Vec<PathBuf> = entries.into_iter().filter(|p| name(p) != ".lock").collect();
    if !entries.is_empty() && !force {
        bail!("{} is not empty; choose an empty folder, or pass --force to replace the shards in it", out.display());
    }
    // Marked incomplete before anything is removed or written: a kill from here on leaves a refused set.
    write_manifest(out, &ShardManifest::default())?;
    for path in entries {
        let name = name(&path);
        if name.ends_with(".tar") || name == SHARD_CLASSES_FILE || (name.starts_with('.') && name.contains(".tmp")) {
            std::fs::remove_file(&path).with_context(|| format!("cannot remove {}", path.display()))?;
        }
    }
    Ok(())
}

/// Writes `data`'s samples, shuffled by `rng`, as `SPLIT-NNNNNN.tar` files in `out`.
fn write_split(out: &Path, split: &str, data: &Dataset, shard_size: u64, rng: &mut ChaCha8Rng) -> Result<SplitReport> {
    let mut order: Vec<usize> = (0..data.len()).collect();
    order.shuffle(rng);
    let mut report = SplitReport { split: split.to_owned(), samples: 0, shards: Vec::new(), shard_samples: Vec::new() };
    let mut current: Option<(tar::Builder<BufWriter<File>>, PathBuf, u64)> = None;
    for (key, &i) in order.iter().enumerate() {
        let source = &data.sources[i];
        let bytes = read_source(source)?;
        let label = data.labels[i].to_string();
        // Each member: a 512-byte header and its data padded to 512 bytes.
        let size = 1024 + (bytes.len() as u64).div_ceil(512) * 512 + 512;
        if current.as_ref().is_some_and(|(_, _, written)| written + size > shard_size) {
            let (builder, path, _) = current.take().expect("checked above");
            report.shards.push(close_shard(builder, &path)?);
            report.shard_samples.push(report.samples - report.shard_samples.iter().sum::<usize>());
        }
        let (builder, _, written) = match &mut current {
            Some(open) => open,
            None => current.insert(open_shard(out, split, report.shards.len())?),
        };
        let ext = source.path().extension().map_or("jpg".into(), |e| e.to_string_lossy().to_ascii_lowercase());
        append(builder, &format!("{key:08}.{ext}"), &bytes)?;
        append(builder, &format!("{key:08}.cls"), label.as_bytes())?;
        *written += size;
        report.samples += 1;
    }
    if let Some((builder, path, _)) = current {
        report.shards.push(close_shard(builder, &path)?);
        report.shard_samples.push(report.samples - report.shard_samples.iter().sum::<usize>());
    }
    Ok(report)
}

/// The encoded bytes of a sample, as stored.
fn read_source(source: &Source) -> Result<Vec<u8>> {
    match source {
        Source::File(path) => std::fs::read(path).with_context(|| format!("cannot read {}", path.display())),
        Source::Member(m) => Ok(m.read(u64::MAX)?),
    }
}

/// Starts shard `n` of `split` under its temporary name.
fn open_shard(out: &Path, split: &str, n: usize) -> Result<(tar::Builder<BufWriter<File>>, PathBuf, u64)> {
    let path = out.join(format!("{split}-{n:06}.tar"));
    let tmp = temp_name(&path);
    let file = File::create(&tmp).with_context(|| format!("cannot create {}", tmp.display()))?;
    Ok((tar::Builder::new(BufWriter::new(file)), path, 0))
}

/// Ends the archive, syncs it and gives it its final name.
fn close_shard(builder: tar::Builder<BufWriter<File>>, path: &Path) -> Result<PathBuf> {
    let tmp = temp_name(path);
    let file = builder.into_inner().and_then(|w| w.into_inner().map_err(|e| e.into_error()));
    drop(file.with_context(|| format!("cannot write {}", tmp.display()))?);
    vit::atomic::commit(&tmp, path)
        .with_context(|| format!("cannot rename {} to {}", tmp.display(), path.display()))?;
    Ok(path.to_path_buf())
}

/// A regular-file member with fixed metadata, so the same input gives the same bytes.
fn append(builder: &mut tar::Builder<BufWriter<File>>, name: &str, data: &[u8]) -> Result<()> {
    let mut header = tar::Header::new_ustar();
    header.set_size(data.len() as u64);
    header.set_mode(0o644);
    header.set_mtime(0);
    header.set_entry_type(tar::EntryType::Regular);
    builder.append_data(&mut header, name, data).with_context(|| format!("cannot write member {name}"))
}

/// The hidden name `path` is written under until complete (readers skip hidden files).
fn temp_name(path: &Path) -> PathBuf {
    vit::atomic::temp_path(path)
}

/// Writes `path` atomically.
fn write_atomic(path: &Path, write: impl FnOnce(&mut BufWriter<File>) -> std::io::Result<()>) -> Result<()> {
    vit::atomic::write_with(path, write).with_context(|| format!("cannot write {}", path.display()))
}
