//! Data sets for training and evaluation, decoded once into compact u8 memory
//! (or indexed for streaming, [`scan_splits`]).
//!
//! Three sources are recognised, as a PyTorch user expects:
//! - an image folder as torchvision's `ImageFolder`: `DIR/<class>/*.{jpg,jpeg,png,bmp,webp}`,
//!   split by `DIR/train` + an evaluation split beside it (`val`, `valid`,
//!   `validation` or `test`), otherwise by a seeded fraction ([`Layout`]);
//! - a Fashion-MNIST/MNIST IDX folder (`train-images-idx3-ubyte[.gz]` ...);
//! - a folder of WebDataset tar shards (`*.tar`, see [`split_shards`]); each
//!   sample then lives in a tar member rather than a file ([`Source`]).
//!
//! Every image goes through [`Preprocessor::prepare`], the same code inference uses.
//! Undecodable files are skipped with a warning each and counted; entries the
//! folder walk cannot read are an error for training unless
//! [`LoadOptions::allow_unreadable`] (then skipped and counted alike); a set
//! with nothing usable is an error.

mod folder;
mod idx;
mod layout;
mod shards;
mod source;
mod stream;

use std::path::{Path, PathBuf};

use rand::{seq::SliceRandom, SeedableRng};

use crate::preprocess::Preprocessor;

pub use folder::{has_image_extension, scan_image_folder, walk_images, FolderScan, IMAGE_EXTENSIONS};
pub use idx::{load_idx_split, read_idx_images, read_idx_labels, FASHION_MNIST_LABELS};
pub use layout::{is_idx_dir, Layout, EVAL_SPLIT_NAMES, SPLIT_NAMES};
use layout::{split_list, LAYOUT_HELP};
pub use shards::{
    index_shard, is_shard_dir, split_shards, ManifestEntry, ShardManifest, ShardSplits, SHARD_CLASSES_FILE,
    SHARD_MANIFEST_FILE,
};
pub use source::{Member, Source};
pub use stream::{decoded_bytes, scan_folder, scan_splits};

/// Errors loading a data set.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// A class folder whose name cannot be a label.
    #[error("class folder {path}: {why}; class names become the model's labels, so rename the folder")]
    ClassName {
        /// The folder, escaped ([`crate::text::path`]).
        path: String,
        /// What is wrong with its name.
        why: String,
    },
    /// A file of the set (class list, manifest, IDX file) is not a regular file or is too large.
    #[error(transparent)]
    File(#[from] crate::files::FileError),
    /// The path does not exist or is not a directory.
    #[error("data folder {0} does not exist or is not a directory (expected DIR/<class>/*.jpg, DIR/train + DIR/val, or Fashion-MNIST IDX files)")]
    NotADir(PathBuf),
    /// No class sub-folders.
    #[error("data folder {0} has no class sub-folders (expected DIR/<class>/*.jpg)")]
    NoClasses(PathBuf),
    /// A class folder holds no image files.
    #[error("class folder {0} holds no image files (.jpg, .jpeg, .png, .bmp, .webp); remove it or add images")]
    EmptyClass(PathBuf),
    /// Every image file of a class failed to decode: the class would have no
    /// examples.
    #[error("class folder {dir}: none of its {files} image file(s) could be decoded, so the class would have no examples; fix or remove them, or remove the folder")]
    ClassUnusable {
        /// The class folder.
        dir: PathBuf,
        /// How many files were tried.
        files: usize,
    },
    /// train/ and val/ disagree on the classes.
    #[error("class folders differ between {train} ({train_classes:?}) and {val} ({val_classes:?})")]
    SplitMismatch {
        /// The training split's folder.
        train: PathBuf,
        /// The validation split's folder.
        val: PathBuf,
        /// Class folders of `train`.
        train_classes: Vec<String>,
        /// Class folders of `val`.
        val_classes: Vec<String>,
    },
    /// A tar shard cannot be indexed (not a tar file, truncated, a bad label).
    #[error("tar shard {path}: {message}")]
    Shard {
        /// The tar file.
        path: PathBuf,
        /// What is wrong with it.
        message: String,
    },
    /// Nothing could be decoded.
    #[error("no usable image in {path}: all {skipped} files failed to decode")]
    NothingUsable {
        /// The folder the files came from.
        path: PathBuf,
        /// How many files failed.
        skipped: usize,
    },
    /// Entries of the data folder cannot be read (dangling links, link
    /// loops, folders without permission) and skipping them was not allowed.
    #[error("{count} entr{} under {dir} cannot be read, so {} would be missing from the data: {first}; fix or remove {}, or allow skipping unreadable entries", if *count == 1 { "y" } else { "ies" }, if *count == 1 { "it" } else { "they" }, if *count == 1 { "it" } else { "them" })]
    Unreadable {
        /// The data folder.
        dir: PathBuf,
        /// How many entries cannot be read.
        count: usize,
        /// The first few, each with its reason.
        first: String,
    },
    /// An IDX file is malformed.
    #[error("IDX file {path}: {message}")]
    Idx {
        /// The IDX file.
        path: PathBuf,
        /// What is wrong with it.
        message: String,
    },
    /// An I/O error on a named file.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file or folder being read.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// `train/` without an evaluation split beside it.
    #[error("data folder {0} has train/ but no evaluation split beside it (looked for {evals}); {LAYOUT_HELP}", evals = split_list(EVAL_SPLIT_NAMES))]
    NoEvalSplit(PathBuf),
    /// Split folders without `train/`: they are not classes, and there is
    /// nothing to train on.
    #[error("data folder {dir} has the split folder(s) {} but no train/ beside them, and split names are never read as classes; {LAYOUT_HELP}", split_list(found))]
    NoTrainSplit {
        /// The data folder.
        dir: PathBuf,
        /// The split folders found.
        found: Vec<String>,
    },
    /// A bad option value.
    #[error("{0}")]
    Invalid(String),
}

/// A file that was skipped, and why.
#[derive(Debug, Clone, PartialEq)]
pub struct Skipped {
    /// The file.
    pub path: PathBuf,
    /// The decode or read error.
    pub reason: String,
}

/// Decoded images of one split: `len()` images of `image_len` u8 values each (CHW).
#[derive(Debug, Clone, Default)]
pub struct Dataset {
    /// Images back to back, CHW u8.
    pub pixels: Vec<u8>,
    /// Class index per image.
    pub labels: Vec<i64>,
    /// Values per image.
    pub image_len: usize,
    /// Where each image came from: a file or a tar shard member (empty for IDX data).
    pub sources: Vec<Source>,
    /// Files that could not be used.
    pub skipped: Vec<Skipped>,
}

impl Dataset {
    /// Number of images.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// True when there are no images.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// CHW u8 pixels of image `i`.
    pub fn image(&self, i: usize) -> &[u8] {
        &self.pixels[i * self.image_len..(i + 1) * self.image_len]
    }

    /// The images at `indices`, in that order.
    pub fn subset(&self, indices: &[usize]) -> Dataset {
        let mut out = Dataset { image_len: self.image_len, ..Default::default() };
        out.pixels.reserve(indices.len() * self.image_len);
        for &i in indices {
            out.pixels.extend_from_slice(self.image(i));
            out.labels.push(self.labels[i]);
            if let Some(s) = self.sources.get(i) {
                out.sources.push(s.clone());
            }
        }
        out
    }

    /// Images per class index (`num_classes` counters).
    pub fn class_counts(&self, num_classes: usize) -> Vec<usize> {
        let mut counts = vec![0; num_classes];
        for &l in &self.labels {
            if let Some(c) = counts.get_mut(l as usize) {
                *c += 1;
            }
        }
        counts
    }
}

/// Where the data came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceKind {
    /// `DIR/train` and an evaluation split folder beside it.
    FolderSplits,
    /// One image folder split by `val_fraction`.
    FolderSeededSplit,
    /// IDX files (train + t10k as val).
    Idx,
    /// WebDataset tar shards (`train-*.tar` + `val-*.tar`, or one set split by `val_fraction`).
    Shards,
}

/// How to load a data set.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// Validation fraction when the folder has no train/val split.
    pub val_fraction: f64,
    /// Seed of that split.
    pub seed: u64,
    /// Keep at most this many images per class in each split (quick runs).
    pub max_per_class: Option<usize>,
    /// Skip entries of an image folder that cannot be read (each warned and
    /// counted in [`Dataset::skipped`]) instead of failing with
    /// [`DataError::Unreadable`]. Off by default: a model trained on part of
    /// the data should be a choice.
    pub allow_unreadable: bool,
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self { val_fraction: 0.2, seed: 0, max_per_class: None, allow_unreadable: false }
    }
}

/// A loaded training/validation pair.
#[derive(Debug, Clone)]
pub struct Splits {
    /// Class names, in label order.
    pub classes: Vec<String>,
    /// Training images.
    pub train: Dataset,
    /// Validation images.
    pub val: Dataset,
    /// Where they came from.
    pub source: SourceKind,
}

impl Splits {
    /// Files skipped in both splits.
    pub fn skipped(&self) -> usize {
        self.train.skipped.len() + self.val.skipped.len()
    }
}

/// Loads train and validation splits from `dir` (see the module docs for layouts).
///
/// ```no_run
/// use std::path::Path;
/// use vit::data::{load_splits, LoadOptions};
/// use vit::{Preprocessor, ViTConfig};
///
/// let cfg = ViTConfig::from_toml_file(Path::new("models/coco5-vit.toml"))?;
/// let prep = Preprocessor::from_config(&cfg);
/// let opts = LoadOptions { max_per_class: Some(100), ..LoadOptions::default() };
/// let splits = load_splits(Path::new("../shared/data/coco5"), &prep, &opts)?;
/// println!("{:?}: {} train, {} val images", splits.classes, splits.train.len(), splits.val.len());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn load_splits(dir: &Path, prep: &Preprocessor, opts: &LoadOptions) -> Result<Splits, DataError> {
    splits_with(dir, prep, opts, decode_sources)
}

/// How one split of samples becomes a [`Dataset`]: decoded ([`decode_sources`]) or indexed for streaming.
type MakeSplit = fn(&Path, &[(Source, i64)], Vec<Skipped>, &Preprocessor) -> Result<Dataset, DataError>;

/// [`load_splits`] with the per-split step `make`, so decoding and streaming read a folder alike.
fn splits_with(dir: &Path, prep: &Preprocessor, opts: &LoadOptions, make: MakeSplit) -> Result<Splits, DataError> {
    let layout = Layout::detect(dir)?;
    if !(0.0..1.0).contains(&opts.val_fraction) {
        return Err(DataError::Invalid(format!("val_fraction {} must be in [0, 1)", opts.val_fraction)));
    }
    // A folder of shards has no sub-folders, so its layout reads as `Folder`: shards are told apart here.
    if is_shard_dir(dir) {
        let shards = split_shards(dir, opts)?;
        let train = make(dir, &shards.train, shards.skipped, prep)?;
        let val = make(dir, &shards.val, Vec::new(), prep)?;
        return Ok(Splits { classes: shards.classes, train, val, source: SourceKind::Shards });
    }
    if layout == Layout::Idx {
        let train = load_idx_split(dir, "train", prep, opts.max_per_class)?;
        let val = load_idx_split(dir, "t10k", prep, opts.max_per_class)?;
        let classes = FASHION_MNIST_LABELS.iter().map(|s| s.to_string()).collect();
        return Ok(Splits { classes, train, val, source: SourceKind::Idx });
    }
    if let Layout::Splits { train: train_dir, val: val_dir } = layout {
        let train_scan = scan_image_folder(&train_dir)?;
        let val_scan = scan_image_folder(&val_dir)?;
        if train_scan.classes != val_scan.classes {
            return Err(DataError::SplitMismatch {
                train: train_dir,
                val: val_dir,
                train_classes: train_scan.classes,
                val_classes: val_scan.classes,
            });
        }
        check_unreadable(dir, [&train_scan.unreadable, &val_scan.unreadable], opts)?;
        let (train_files, val_files) =
            (cap(train_scan.files, opts.max_per_class), cap(val_scan.files, opts.max_per_class));
        let train = make(&train_dir, &as_sources(&train_files), train_scan.unreadable, prep)?;
        let val = make(&val_dir, &as_sources(&val_files), val_scan.unreadable, prep)?;
        require_decoded_classes(&train_dir, &train_scan.classes, &[(&train_files, &train)])?;
        require_decoded_classes(&val_dir, &train_scan.classes, &[(&val_files, &val)])?;
        return Ok(Splits { classes: train_scan.classes, train, val, source: SourceKind::FolderSplits });
    }
    let scan = scan_image_folder(dir)?;
    check_unreadable(dir, [&scan.unreadable], opts)?;
    let (train_files, val_files) = seeded_split(&scan.files, scan.classes.len(), opts);
    // Which split an unreadable entry would have joined is unknown: the training split counts them.
    let train = make(dir, &as_sources(&train_files), scan.unreadable, prep)?;
    let val = make(dir, &as_sources(&val_files), Vec::new(), prep)?;
    require_decoded_classes(dir, &scan.classes, &[(&train_files, &train), (&val_files, &val)])?;
    Ok(Splits { classes: scan.classes, train, val, source: SourceKind::FolderSeededSplit })
}

/// [`DataError::ClassUnusable`] for the first class of `root` that had files
/// in `parts` (files tried, data decoded from them) but kept no image.
fn require_decoded_classes(
    root: &Path,
    classes: &[String],
    parts: &[(&LabelledFiles, &Dataset)],
) -> Result<(), DataError> {
    for (label, class) in classes.iter().enumerate() {
        let label = label as i64;
        let tried: usize = parts.iter().map(|(files, _)| files.iter().filter(|(_, l)| *l == label).count()).sum();
        let kept: usize = parts.iter().map(|(_, data)| data.labels.iter().filter(|&&l| l == label).count()).sum();
        if tried > 0 && kept == 0 {
            return Err(DataError::ClassUnusable { dir: root.join(class), files: tried });
        }
    }
    Ok(())
}

/// [`DataError::Unreadable`] when entries could not be read and skipping them is not allowed.
fn check_unreadable<const N: usize>(dir: &Path, lists: [&[Skipped]; N], opts: &LoadOptions) -> Result<(), DataError> {
    let all: Vec<&Skipped> = lists.into_iter().flatten().collect();
    if all.is_empty() || opts.allow_unreadable {
        return Ok(());
    }
    const SHOWN: usize = 3;
    let mut first = all
        .iter()
        .take(SHOWN)
        .map(|s| format!("{} ({})", crate::text::path(&s.path), crate::text::escape(&s.reason)))
        .collect::<Vec<_>>();
    if all.len() > SHOWN {
        first.push(format!("and {} more", all.len() - SHOWN));
    }
    Err(DataError::Unreadable { dir: dir.to_path_buf(), count: all.len(), first: first.join(", ") })
}

/// Loads one image folder (`DIR/<class>/*`) as a single evaluation set; a
/// folder of tar shards gives its evaluation shards, or all when it has none.
/// Entries that cannot be read and files that cannot be decoded are skipped,
/// each warned and listed in [`Dataset::skipped`].
pub fn load_folder(dir: &Path, prep: &Preprocessor) -> Result<(Vec<String>, Dataset), DataError> {
    folder_with(dir, prep, decode_sources)
}

/// [`load_folder`] with the step `make` that turns the samples into a [`Dataset`]
/// (decoded, or indexed for streaming), so both read a folder alike.
fn folder_with(dir: &Path, prep: &Preprocessor, make: MakeSplit) -> Result<(Vec<String>, Dataset), DataError> {
    require_dir(dir)?;
    if is_shard_dir(dir) {
        let set = shards::eval_shards(dir)?;
        return Ok((set.classes, make(dir, &set.samples, set.skipped, prep)?));
    }
    let scan = scan_image_folder(dir)?;
    let data = make(dir, &as_sources(&scan.files), scan.unreadable, prep)?;
    Ok((scan.classes, data))
}

/// The one check that a data path is a folder, so every entry point reports it alike.
fn require_dir(dir: &Path) -> Result<(), DataError> {
    if dir.is_dir() {
        Ok(())
    } else {
        Err(DataError::NotADir(dir.to_path_buf()))
    }
}

/// Indices of the first `max` items of each label, in order (all when `max` is None).
pub(crate) fn first_per_class(labels: impl IntoIterator<Item = i64>, max: Option<usize>) -> Vec<usize> {
    let max = max.unwrap_or(usize::MAX);
    let mut seen = std::collections::HashMap::new();
    labels
        .into_iter()
        .enumerate()
        .filter(|(_, l)| {
            let n = seen.entry(*l).or_insert(0usize);
            *n += 1;
            *n <= max
        })
        .map(|(i, _)| i)
        .collect()
}

/// (item, label) pairs.
type Labelled<T> = Vec<(T, i64)>;

/// (file, label) pairs, as [`FolderScan::files`].
type LabelledFiles = Labelled<PathBuf>;

/// Keeps the first `max` files of each class (files are sorted within a class).
fn cap(files: LabelledFiles, max: Option<usize>) -> LabelledFiles {
    first_per_class(files.iter().map(|(_, l)| *l), max).into_iter().map(|i| files[i].clone()).collect()
}

/// Per class, a seeded shuffle; the first `val_fraction` go to validation.
fn seeded_split<T: Clone>(files: &[(T, i64)], num_classes: usize, opts: &LoadOptions) -> (Labelled<T>, Labelled<T>) {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(opts.seed);
    let (mut train, mut val) = (Vec::new(), Vec::new());
    for class in 0..num_classes as i64 {
        let mut members: Vec<_> = files.iter().filter(|(_, l)| *l == class).cloned().collect();
        members.shuffle(&mut rng);
        let n_val = ((members.len() as f64) * opts.val_fraction).round() as usize;
        let (v, t) = members.split_at(n_val.min(members.len()));
        let take = opts.max_per_class.unwrap_or(usize::MAX);
        val.extend(v.iter().take(take).cloned());
        train.extend(t.iter().take(take).cloned());
    }
    (train, val)
}

/// Files as samples.
fn as_sources(files: &[(PathBuf, i64)]) -> Vec<(Source, i64)> {
    files.iter().map(|(p, l)| (Source::File(p.clone()), *l)).collect()
}

/// Decodes samples in parallel; failures are skipped with one warning each, as
/// are the `unreadable` entries found before.
fn decode_sources(
    root: &Path,
    samples: &[(Source, i64)],
    unreadable: Vec<Skipped>,
    prep: &Preprocessor,
) -> Result<Dataset, DataError> {
    use rayon::prelude::*;
    let decoded: Vec<_> = samples.par_iter().map(|(source, _)| source.load(prep)).collect();
    let mut out = Dataset { image_len: prep.image_len(), ..Default::default() };
    for s in &unreadable {
        log::warn!("skipping {}: {}", crate::text::path(&s.path), crate::text::escape(&s.reason));
    }
    out.skipped = unreadable;
    for ((source, label), result) in samples.iter().zip(decoded) {
        match result {
            Ok(px) => {
                out.pixels.extend_from_slice(&px);
                out.labels.push(*label);
                out.sources.push(source.clone());
            }
            Err(e) => {
                log::warn!("skipping {source}: {e}");
                out.skipped.push(Skipped { path: source.path(), reason: e.to_string() });
            }
        }
    }
    if out.is_empty() && !samples.is_empty() {
        return Err(DataError::NothingUsable { path: root.to_path_buf(), skipped: out.skipped.len() });
    }
    Ok(out)
}
