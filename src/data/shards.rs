//! WebDataset tar shards as a data set: each `*.tar` file holds samples as
//! members `<key>.<ext>` grouped by key (`dir/name.jpg` has key `dir/name` and
//! extension `jpg`: the key ends at the first dot of the file name), an image
//! (`.jpg`, `.jpeg`, `.png`, `.bmp`, `.webp`) and its class index as ASCII
//! decimal (`.cls`, also `.cls.txt` or `.label`). This is the public format
//! Python's `webdataset` and timm read and write, so shards from either read here.
//!
//! Each tar is indexed once (member offsets and sizes, labels read); an image
//! is then read with one positioned read of its bytes, so streaming from
//! shards needs no open archive state and any thread can read any sample.
//!
//! Splits: `train*.tar` beside `val*.tar` (or `valid`, `validation`, `test`,
//! the first found), like split folders (`train*.tar` alone: nothing to
//! evaluate on); shards named otherwise form one set split by a seeded
//! fraction, as a flat class folder is. Class names come from
//! `classes.json` (`{"classes": [...]}`) when it is there, else classes are numbered.
//!
//! Completeness: `vit-train shards` marks its folder incomplete (`shards.json`
//! with `"complete": false`) before it writes a shard, and writes the list of
//! its shards with their sizes and sample counts last (`"complete": true`),
//! atomically. A folder whose `shards.json` says incomplete, lists a shard that
//! is missing or of another size, or misses one that is there, is refused by
//! name; a folder without `shards.json` (shards from other tools) is read as it is.

use std::fs::File;
use std::io::{BufReader, Read};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::{first_per_class, seeded_split, DataError, Dataset, Labelled, LoadOptions, Skipped};
use super::{Member, Source, EVAL_SPLIT_NAMES, IMAGE_EXTENSIONS};

/// The file beside the shards naming the classes in label order.
pub const SHARD_CLASSES_FILE: &str = "classes.json";

/// The file `vit-train shards` writes first (incomplete) and last (the list of
/// shards), so a set it did not finish is never read as complete.
pub const SHARD_MANIFEST_FILE: &str = "shards.json";

/// `shards.json`: whether the set is complete, and its shards.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ShardManifest {
    /// False while `vit-train shards` writes the set.
    pub complete: bool,
    /// Every shard of the set (empty while incomplete).
    #[serde(default)]
    pub shards: Vec<ManifestEntry>,
}

/// One shard of a [`ShardManifest`].
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ManifestEntry {
    /// The file name, in the set's folder.
    pub file: String,
    /// Its size in bytes.
    pub bytes: u64,
    /// Samples in it.
    pub samples: usize,
}

/// Member extensions read as the class index.
const LABEL_EXTENSIONS: &[&str] = &["cls", "cls.txt", "label"];

/// The samples of one tar shard.
#[derive(Debug, Clone, Default)]
pub struct ShardIndex {
    /// Each sample's image member and class index, in the shard's order.
    pub samples: Vec<(Member, i64)>,
    /// Samples without an image or a readable class index.
    pub skipped: Vec<Skipped>,
}

/// The samples of a folder of shards, split for training.
#[derive(Debug, Clone)]
pub struct ShardSplits {
    /// Class names, in label order.
    pub classes: Vec<String>,
    /// Training samples, in shard order.
    pub train: Vec<(Source, i64)>,
    /// Evaluation samples, in shard order.
    pub val: Vec<(Source, i64)>,
    /// Samples that cannot be used, found while indexing.
    pub skipped: Vec<Skipped>,
}

/// True when `dir` is a folder holding `*.tar` files and no sub-folders (an
/// image folder with a stray tar file beside its class folders stays an image folder).
pub fn is_shard_dir(dir: &Path) -> bool {
    let Ok(entries) = std::fs::read_dir(dir) else { return false };
    let has_subfolder =
        entries.flatten().any(|e| !e.file_name().to_string_lossy().starts_with('.') && e.path().is_dir());
    !has_subfolder && tar_files(dir).is_ok_and(|files| !files.is_empty())
}

/// The `*.tar` files of the set in `dir`, checked against its `shards.json` when it has one.
fn complete_tar_files(dir: &Path) -> Result<Vec<PathBuf>, DataError> {
    let files = tar_files(dir)?;
    let path = dir.join(SHARD_MANIFEST_FILE);
    let text = match crate::files::read_text(&path, "shard manifest") {
        Ok(text) => text,
        Err(e) if e.is_not_found() => return Ok(files),
        Err(e) => return Err(e.into()),
    };
    let refuse = |message: String| {
        Err(DataError::Shard {
            path: path.clone(),
            message: format!("{message}; write the set again with `vit-train shards --force`"),
        })
    };
    let manifest: ShardManifest = match serde_json::from_str(&text) {
        Ok(m) => m,
        Err(e) => return refuse(format!("not a shard list ({e})")),
    };
    if !manifest.complete {
        return refuse("the set is incomplete: the `vit-train shards` that wrote it did not finish".into());
    }
    for entry in &manifest.shards {
        match std::fs::metadata(dir.join(&entry.file)) {
            Ok(meta) if meta.len() == entry.bytes => {}
            Ok(meta) => {
                return refuse(format!("{} has {} bytes, the list says {}", entry.file, meta.len(), entry.bytes))
            }
            Err(_) => return refuse(format!("{} is listed but missing", entry.file)),
        }
    }
    if let Some(extra) = files.iter().find(|f| !manifest.shards.iter().any(|e| f.file_name() == Some(e.file.as_ref())))
    {
        return refuse(format!("{} is not one of the set's shards", extra.display()));
    }
    Ok(files)
}

/// The `*.tar` files directly in `dir`, sorted by name.
fn tar_files(dir: &Path) -> Result<Vec<PathBuf>, DataError> {
    let io = |source| DataError::Io { path: dir.to_path_buf(), source };
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io)? {
        let path = entry.map_err(io)?.path();
        let is_tar = path.extension().is_some_and(|e| e.eq_ignore_ascii_case("tar"));
        let hidden = path.file_name().is_some_and(|n| n.to_string_lossy().starts_with('.'));
        if is_tar && !hidden && path.is_file() {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

/// Key and extension of a member name, by WebDataset's rule: the key ends at
/// the first dot of the file name (None for names without one, or starting with one).
fn key_and_extension(name: &str) -> Option<(&str, &str)> {
    let file_start = name.rfind('/').map_or(0, |i| i + 1);
    let dot = name[file_start..].find('.')? + file_start;
    (dot > file_start).then(|| (&name[..dot], &name[dot + 1..]))
}

/// A sample being gathered from consecutive members with one key.
#[derive(Default)]
struct Pending {
    key: String,
    image: Option<Member>,
    label: Option<Result<i64, String>>,
}

/// Indexes the tar file `path`: one pass over its headers, reading only the
/// class members. Not a tar file, or one cut short, is a [`DataError::Shard`].
pub fn index_shard(path: &Path) -> Result<ShardIndex, DataError> {
    let bad = |message: String| DataError::Shard { path: path.to_path_buf(), message };
    let file = File::open(path).map_err(|source| DataError::Io { path: path.to_path_buf(), source })?;
    let file_len = file.metadata().map_err(|source| DataError::Io { path: path.to_path_buf(), source })?.len();
    let shard: Arc<Path> = Arc::from(path);
    let mut archive = tar::Archive::new(BufReader::new(file));
    let entries = archive.entries_with_seek().map_err(|e| bad(format!("not a readable tar file: {e}")))?;
    let mut index = ShardIndex::default();
    let mut pending = Pending::default();
    // Where the last member's data ends, rounded up to tar's 512-byte blocks.
    let mut data_end = 0u64;
    for entry in entries {
        let mut entry = entry.map_err(|e| bad(format!("not a tar file, or a damaged one: {e}")))?;
        let (offset, len) = (entry.raw_file_position(), entry.size());
        if offset + len > file_len {
            return Err(bad(format!(
                "truncated: a member needs bytes up to {} but the file has {file_len}",
                offset + len
            )));
        }
        data_end = data_end.max((offset + len).div_ceil(512) * 512);
        if !entry.header().entry_type().is_file() {
            continue;
        }
        let name = entry.path().map_err(|e| bad(format!("a member name cannot be read: {e}")))?;
        let name = name.to_string_lossy().into_owned();
        let Some((key, ext)) = key_and_extension(&name) else { continue };
        if key != pending.key {
            finish(std::mem::take(&mut pending), &shard, &mut index);
            pending.key = key.to_owned();
        }
        let ext = ext.to_ascii_lowercase();
        if LABEL_EXTENSIONS.contains(&ext.as_str()) {
            let mut text = String::new();
            let read = entry.by_ref().take(64).read_to_string(&mut text);
            pending.label = Some(match read {
                Ok(_) => text
                    .trim()
                    .parse::<i64>()
                    .ok()
                    .filter(|l| *l >= 0)
                    .ok_or_else(|| format!("its class member {name} holds {:?}, not a class index", text.trim())),
                Err(e) => Err(format!("its class member {name} cannot be read: {e}")),
            });
        } else if pending.image.is_none() && IMAGE_EXTENSIONS.contains(&ext.as_str()) {
            pending.image = Some(Member { shard: shard.clone(), name, offset, len });
        }
    }
    finish(pending, &shard, &mut index);
    // Tar ends with two zero blocks: without them the file was cut at a member boundary.
    if file_len < data_end + 1024 {
        return Err(bad("truncated: the end-of-archive blocks are missing".into()));
    }
    Ok(index)
}

/// Adds the gathered sample to `index`, or to its skipped list when it lacks an image or a class
/// (warned about with the other skipped entries when the split is made).
fn finish(sample: Pending, shard: &Arc<Path>, index: &mut ShardIndex) {
    if sample.key.is_empty() {
        return;
    }
    let skip = |reason: String| Skipped { path: shard.join(&sample.key), reason };
    let skipped = match (sample.image, sample.label) {
        (Some(image), Some(Ok(label))) => {
            index.samples.push((image, label));
            return;
        }
        (_, Some(Err(reason))) => skip(reason),
        (None, _) => skip("the sample has no image member (.jpg, .jpeg, .png, .bmp, .webp)".into()),
        (Some(_), None) => skip("the sample has no class member (.cls)".into()),
    };
    index.skipped.push(skipped);
}

/// The split a shard's file name puts it in: `train-000000.tar` is in `train`.
fn split_of(path: &Path) -> Option<&'static str> {
    let stem = path.file_stem()?.to_str()?.to_ascii_lowercase();
    super::SPLIT_NAMES
        .iter()
        .copied()
        .find(|split| stem.strip_prefix(split).is_some_and(|rest| rest.is_empty() || rest.starts_with(['-', '_', '.'])))
}

/// Indexes the shards of `dir` and splits them (see the module docs);
/// `opts.max_per_class` keeps the first samples of each class in shard order.
pub fn split_shards(dir: &Path, opts: &LoadOptions) -> Result<ShardSplits, DataError> {
    let files = complete_tar_files(dir)?;
    let invalid = |message: String| DataError::Shard { path: dir.to_path_buf(), message };
    let has = |split: &str| files.iter().any(|f| split_of(f) == Some(split));
    let eval = eval_split(&files);
    let of = |split: &str| -> Vec<&PathBuf> { files.iter().filter(|f| split_of(f) == Some(split)).collect() };
    // Named shards keep their split (train alone: no evaluation set); unnamed ones are split by the fraction.
    let (train_files, val_files, named) = match (has("train"), eval) {
        (true, eval) => {
            for f in files.iter().filter(|f| !matches!(split_of(f), Some(s) if s == "train" || Some(s) == eval)) {
                log::warn!("ignoring {}: neither a train nor an evaluation shard", f.display());
            }
            (of("train"), eval.map_or_else(Vec::new, of), true)
        }
        (false, Some(eval)) => return Err(invalid(format!("has {eval} shards but no train shards (train-*.tar)"))),
        (false, None) => (files.iter().collect(), Vec::new(), false),
    };
    let (train, val) = (index_shards(&train_files)?, index_shards(&val_files)?);
    let classes = read_classes(dir, train.samples.iter().chain(&val.samples))?;
    let skipped = [train.skipped, val.skipped].concat();
    let (train, val) = if named {
        (cap(labelled(train.samples), opts.max_per_class), cap(labelled(val.samples), opts.max_per_class))
    } else {
        split_by_fraction(labelled(train.samples), classes.len(), opts)
    };
    if train.is_empty() {
        return Err(invalid("holds no training samples (an image member and a .cls member per key)".into()));
    }
    Ok(ShardSplits { classes, train, val, skipped })
}

/// The samples an evaluation of the shard folder `dir` reads, as an image
/// folder's: its evaluation shards (`val-*.tar`, ...) when it has them, else
/// every shard; with the class names and the members skipped while indexing.
pub fn eval_shards(dir: &Path) -> Result<EvalShards, DataError> {
    let files = complete_tar_files(dir)?;
    let eval = eval_split(&files);
    let chosen: Vec<&PathBuf> = files.iter().filter(|f| eval.map_or(true, |s| split_of(f) == Some(s))).collect();
    let index = index_shards(&chosen)?;
    let classes = read_classes(dir, index.samples.iter())?;
    Ok(EvalShards { classes, samples: labelled(index.samples), skipped: index.skipped })
}

/// The evaluation split (`val`, `valid`, ...) some of `files` are named for, if any.
fn eval_split(files: &[PathBuf]) -> Option<&'static str> {
    EVAL_SPLIT_NAMES.iter().copied().find(|s| files.iter().any(|f| split_of(f) == Some(*s)))
}

/// The samples and skipped entries of the shards `files`, in file order.
fn index_shards(files: &[&PathBuf]) -> Result<ShardIndex, DataError> {
    let mut all = ShardIndex::default();
    for f in files {
        let one = index_shard(f)?;
        all.samples.extend(one.samples);
        all.skipped.extend(one.skipped);
    }
    Ok(all)
}

/// Shard members as samples.
fn labelled(samples: Vec<(Member, i64)>) -> Vec<(Source, i64)> {
    samples.into_iter().map(|(m, l)| (Source::Member(m), l)).collect()
}

/// The evaluation set of a shard folder ([`eval_shards`]).
#[derive(Debug, Clone)]
pub struct EvalShards {
    /// Class names, in label order.
    pub classes: Vec<String>,
    /// The samples, in shard order.
    pub samples: Vec<(Source, i64)>,
    /// Members that could not be used.
    pub skipped: Vec<Skipped>,
}

/// The first `max` samples of each class, in order.
fn cap(samples: Vec<(Source, i64)>, max: Option<usize>) -> Vec<(Source, i64)> {
    first_per_class(samples.iter().map(|(_, l)| *l), max).into_iter().map(|i| samples[i].clone()).collect()
}

/// The seeded per-class split of image folders, each side kept in shard order
/// (so reads stay sequential within a shard).
fn split_by_fraction(
    samples: Vec<(Source, i64)>,
    num_classes: usize,
    opts: &LoadOptions,
) -> (Labelled<Source>, Labelled<Source>) {
    let positions: Vec<(usize, i64)> = samples.iter().enumerate().map(|(i, (_, l))| (i, *l)).collect();
    let (train, val) = seeded_split(&positions, num_classes, opts);
    let in_order = |mut picked: Vec<(usize, i64)>| {
        picked.sort_unstable();
        picked.into_iter().map(|(i, _)| samples[i].clone()).collect()
    };
    (in_order(train), in_order(val))
}

/// The most classes a shard set without `classes.json` may have (its labels
/// alone then size the class list): ImageNet-21k has 21,841.
pub const MAX_UNNAMED_CLASSES: usize = 100_000;

/// The class names: from `classes.json` beside the shards, else `0`, `1`, ...
/// up to the largest label. A label outside `classes.json`'s classes is an error.
fn read_classes<'a>(dir: &Path, samples: impl Iterator<Item = &'a (Member, i64)>) -> Result<Vec<String>, DataError> {
    #[derive(serde::Deserialize)]
    struct ClassesFile {
        classes: Vec<String>,
    }
    let path = dir.join(SHARD_CLASSES_FILE);
    let named = match crate::files::read_text(&path, "class list") {
        Ok(text) => Some(
            serde_json::from_str::<ClassesFile>(&text)
                .map_err(|e| DataError::Shard { path: path.clone(), message: format!("not a class list: {e}") })?
                .classes,
        ),
        Err(e) if e.is_not_found() => None,
        Err(e) => return Err(e.into()),
    };
    let mut max_label = -1;
    for (member, label) in samples {
        if named.as_ref().is_some_and(|names| *label as usize >= names.len()) {
            return Err(DataError::Shard {
                path: member.shard.to_path_buf(),
                message: format!(
                    "member {}: class {label} is outside the {} classes of {}",
                    member.name,
                    named.as_ref().map_or(0, Vec::len),
                    path.display()
                ),
            });
        }
        if named.is_none() && *label >= MAX_UNNAMED_CLASSES as i64 {
            // Without a class list the labels alone size the class list and the model's head.
            return Err(DataError::Shard {
                path: member.shard.to_path_buf(),
                message: format!(
                    "member {}: class {label} would make {} classes, over the {MAX_UNNAMED_CLASSES} a set without \
                     {SHARD_CLASSES_FILE} may have; fix the label, or write {} naming the classes",
                    member.name,
                    label + 1,
                    path.display()
                ),
            });
        }
        max_label = max_label.max(*label);
    }
    Ok(named.unwrap_or_else(|| (0..=max_label).map(|l| l.to_string()).collect()))
}

impl Dataset {
    /// The samples of each tar shard as index ranges, in order (a run of
    /// consecutive samples from one shard is one range); None unless every
    /// sample is a tar member.
    pub fn shard_ranges(&self) -> Option<Vec<Range<usize>>> {
        let mut ranges: Vec<Range<usize>> = Vec::new();
        let mut last: Option<&Arc<Path>> = None;
        for (i, source) in self.sources.iter().enumerate() {
            let Source::Member(m) = source else { return None };
            match ranges.last_mut() {
                Some(r) if last.is_some_and(|s| Arc::ptr_eq(s, &m.shard) || *s == m.shard) => r.end = i + 1,
                _ => ranges.push(i..i + 1),
            }
            last = Some(&m.shard);
        }
        (!ranges.is_empty() && ranges.last().is_some_and(|r| r.end == self.len())).then_some(ranges)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_end_at_the_first_dot_of_the_file_name() {
        assert_eq!(key_and_extension("dir/name.jpg"), Some(("dir/name", "jpg")));
        assert_eq!(key_and_extension("a.b/000001.cls.txt"), Some(("a.b/000001", "cls.txt")));
        assert_eq!(key_and_extension("dir/.hidden"), None);
        assert_eq!(key_and_extension("noext"), None);
    }

    #[test]
    fn members_group_by_key_and_incomplete_samples_are_skipped_with_the_reason() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("set-000000.tar");
        let mut tar = tar::Builder::new(File::create(&path).unwrap());
        let members: [(&str, &[u8]); 7] = [
            ("d/a.cls", b"2\n"),
            ("d/a.JPG", b"jpeg bytes"),
            ("b.seg.png", b"a mask, not the image"),
            ("b.cls", b"1"),
            ("c.jpg", b"no class"),
            ("e.jpg", b"x"),
            ("e.cls", b"cat"),
        ];
        for (name, data) in members {
            let mut header = tar::Header::new_ustar();
            header.set_size(data.len() as u64);
            header.set_cksum();
            tar.append_data(&mut header, name, data).unwrap();
        }
        tar.finish().unwrap();
        drop(tar);
        let index = index_shard(&path).unwrap();
        assert_eq!(index.samples.len(), 1);
        let (member, label) = &index.samples[0];
        assert_eq!((member.name.as_str(), *label, member.len), ("d/a.JPG", 2, 10));
        assert_eq!(member.read(u64::MAX).unwrap(), b"jpeg bytes");
        let reasons: Vec<_> = index.skipped.iter().map(|s| (s.path.clone(), s.reason.clone())).collect();
        assert_eq!(reasons.len(), 3, "{reasons:?}");
        assert!(reasons[0].0.ends_with("set-000000.tar/b") && reasons[0].1.contains("no image member"));
        assert!(reasons[1].0.ends_with("set-000000.tar/c") && reasons[1].1.contains("no class member"));
        assert!(reasons[2].1.contains("e.cls holds \"cat\""), "{reasons:?}");
    }

    #[test]
    fn a_stray_tar_beside_class_folders_leaves_an_image_folder() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(tmp.path().join("backup.tar"), b"").unwrap();
        assert!(is_shard_dir(tmp.path()));
        std::fs::create_dir(tmp.path().join("cat")).unwrap();
        assert!(!is_shard_dir(tmp.path()));
    }

    #[test]
    fn shard_names_give_their_split() {
        assert_eq!(split_of(Path::new("x/train-000000.tar")), Some("train"));
        assert_eq!(split_of(Path::new("validation_3.tar")), Some("validation"));
        assert_eq!(split_of(Path::new("val.tar")), Some("val"));
        assert_eq!(split_of(Path::new("trainset-0.tar")), None);
        assert_eq!(split_of(Path::new("imagenet-0.tar")), None);
    }
}
