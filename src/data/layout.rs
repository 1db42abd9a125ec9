//! Which layout a data folder has ([`Layout`]): IDX files, `train/` beside an
//! evaluation split, or one image folder. Decided in one place, so training
//! and evaluation read a folder alike, and so split folder names are never
//! taken for classes.

use std::path::{Path, PathBuf};

use super::{idx, require_dir, DataError};

/// How a data folder is read, for the messages of layout errors.
pub(super) const LAYOUT_HELP: &str =
    "a data folder is read as DIR/train/<class>/* with DIR/val/<class>/* (or valid/, validation/, test/; \
the first found) as the evaluation split, as DIR/<class>/* without split folders (split by a seeded fraction), \
or as Fashion-MNIST IDX files";

/// Folder names that are splits, never classes.
pub const SPLIT_NAMES: &[&str] = &["train", "val", "valid", "validation", "test"];

/// The evaluation split folders recognised beside `train/`, in order of preference.
pub const EVAL_SPLIT_NAMES: &[&str] = &["val", "valid", "validation", "test"];

/// `val/, valid/` for messages.
pub(super) fn split_list<S: AsRef<str>>(names: &[S]) -> String {
    names.iter().map(|n| format!("{}/", n.as_ref())).collect::<Vec<_>>().join(", ")
}

/// How a data folder is laid out. Decided here once, for training
/// ([`load_splits`](super::load_splits)) and for evaluation (`vit-infer --eval`) alike, so both read
/// a folder the same way.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Layout {
    /// Fashion-MNIST/MNIST IDX files: `train` trains, `t10k` evaluates.
    Idx,
    /// Image folders `DIR/train/<class>/*` and `DIR/<split>/<class>/*`, the
    /// evaluation split being the first of [`EVAL_SPLIT_NAMES`] found.
    Splits {
        /// The training split's folder.
        train: PathBuf,
        /// The evaluation split's folder (`val/`, `valid/`, `validation/` or `test/`).
        val: PathBuf,
    },
    /// One image folder `DIR/<class>/*`, split by a seeded fraction for training.
    Folder,
}

impl Layout {
    /// Detects the layout of `dir` (which must be a directory). Split folder
    /// names ([`SPLIT_NAMES`]) are never classes: `train/` needs an
    /// evaluation split beside it, and other split folders need `train/`.
    pub fn detect(dir: &Path) -> Result<Self, DataError> {
        require_dir(dir)?;
        if is_idx_dir(dir) {
            return Ok(Self::Idx);
        }
        let found: Vec<String> =
            SPLIT_NAMES.iter().filter(|name| dir.join(name).is_dir()).map(|name| name.to_string()).collect();
        if found.is_empty() {
            return Ok(Self::Folder);
        }
        let train = dir.join("train");
        if !train.is_dir() {
            return Err(DataError::NoTrainSplit { dir: dir.to_path_buf(), found });
        }
        match EVAL_SPLIT_NAMES.iter().map(|name| dir.join(name)).find(|p| p.is_dir()) {
            Some(val) => Ok(Self::Splits { train, val }),
            None => Err(DataError::NoEvalSplit(dir.to_path_buf())),
        }
    }
}

/// True when `dir` holds Fashion-MNIST/MNIST style IDX training files.
pub fn is_idx_dir(dir: &Path) -> bool {
    idx::find(dir, "train-images-idx3-ubyte").is_some()
}
