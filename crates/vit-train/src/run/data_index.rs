//! What a run trains on, recorded in `run.json` so `--resume` continues on
//! exactly that. The seeded validation split is drawn from the folder's file
//! list, and labels from its sorted class folders: one image added, or one
//! class folder renamed, silently redraws the split (former validation images
//! get trained on) or re-maps the labels. So a run records its class list and,
//! per split, the number of images and a digest of their list (file, relative
//! to the data folder, and label), and a resume on anything else is refused
//! naming what changed.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use vit::data::{Dataset, Splits};

use crate::run::dir::RunOptions;

/// `--resume` on data other than the run's.
#[derive(Debug, thiserror::Error)]
#[error(
    "--resume: the data in {} is not what the run trained on:\n{}\nput the data back as it was (files added or \
     removed, class folders renamed), or start a new run with another --out",
    .data.display(),
    .changes.iter().map(|c| format!("  - {c}")).collect::<Vec<_>>().join("\n")
)]
pub struct DataChanged {
    /// The data folder.
    pub data: PathBuf,
    /// What differs, one line each ([`DataIndex::changes`]).
    pub changes: Vec<String>,
}

/// Records what a new run trains on in `run.data_index`; on `--resume`, refuses
/// data that is not what the run recorded. A run from before the record
/// resumes with a warning and gets it recorded.
pub fn record_or_check(run: &mut RunOptions, splits: &Splits, resume: bool) -> Result<(), DataChanged> {
    let now = DataIndex::of(splits, &run.data);
    match &run.data_index {
        Some(had) if resume => {
            let changes = had.changes(&now);
            if !changes.is_empty() {
                return Err(DataChanged { data: run.data.clone(), changes });
            }
        }
        _ if resume => {
            log::warn!(
                "run.json of this run does not record its data (a run from before data records): cannot check that {} \
                 still holds the images it trained on; recording them as they are now",
                run.data.display()
            );
            if run.data.is_relative() {
                log::warn!("run.json records --data {} relative to the folder vit-train runs in", run.data.display());
            }
            run.data_index = Some(now);
        }
        _ => run.data_index = Some(now),
    }
    Ok(())
}

/// The data a run trained on (`run.json`'s `data_index`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DataIndex {
    /// Class names in label order.
    pub classes: Vec<String>,
    /// The training split.
    pub train: SplitIndex,
    /// The validation split.
    pub val: SplitIndex,
}

/// One split's images: how many, and a digest of their list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SplitIndex {
    /// Images in the split.
    pub images: usize,
    /// FNV-1a (64 bit, hex) of each image's file (relative to the data
    /// folder; `SHARD/MEMBER` in tar shards) and label, in split order; of the
    /// labels alone for IDX data, which has no files.
    pub digest: String,
}

impl DataIndex {
    /// The index of `splits`, loaded from the folder `data`.
    pub fn of(splits: &Splits, data: &Path) -> Self {
        Self {
            classes: splits.classes.clone(),
            train: SplitIndex::of(&splits.train, data),
            val: SplitIndex::of(&splits.val, data),
        }
    }

    /// What differs between the recorded index (`self`) and `now`, one line each; empty when nothing does.
    pub fn changes(&self, now: &DataIndex) -> Vec<String> {
        let mut out = Vec::new();
        if self.classes != now.classes {
            let missing: Vec<&String> = self.classes.iter().filter(|c| !now.classes.contains(c)).collect();
            let new: Vec<&String> = now.classes.iter().filter(|c| !self.classes.contains(c)).collect();
            out.push(format!(
                "classes: the run has {:?}, the data now {:?} (gone: {missing:?}, new: {new:?})",
                self.classes, now.classes
            ));
        }
        for (name, had, has) in [("training", &self.train, &now.train), ("validation", &self.val, &now.val)] {
            if had != has {
                let delta = has.images as i64 - had.images as i64;
                let count = match delta {
                    0 => "as many images, but other files or labels".to_string(),
                    d if d > 0 => format!("{d} more image{}", if d == 1 { "" } else { "s" }),
                    d => format!("{} fewer image{}", -d, if d == -1 { "" } else { "s" }),
                };
                out.push(format!(
                    "{name} split: {} images recorded, {} now ({count}; list digest {} recorded, {} now)",
                    had.images, has.images, had.digest, has.digest
                ));
            }
        }
        out
    }
}

impl SplitIndex {
    fn of(split: &Dataset, data: &Path) -> Self {
        let mut hash = Fnv::default();
        if split.sources.is_empty() {
            for label in &split.labels {
                hash.write(&label.to_le_bytes());
            }
        } else {
            for (source, label) in split.sources.iter().zip(&split.labels) {
                let path = source.path();
                let relative = path.strip_prefix(data).unwrap_or(&path);
                hash.write(relative.as_os_str().as_encoded_bytes());
                hash.write(&[0]);
                hash.write(&label.to_le_bytes());
            }
        }
        Self { images: split.len(), digest: format!("{:016x}", hash.0) }
    }
}

/// 64-bit FNV-1a: stable across Rust versions and platforms, unlike `std`'s hasher.
struct Fnv(u64);

impl Default for Fnv {
    fn default() -> Self {
        Self(0xcbf2_9ce4_8422_2325)
    }
}

impl Fnv {
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vit::data::{Source, SourceKind};

    fn split(files: &[(&str, i64)]) -> Dataset {
        Dataset {
            labels: files.iter().map(|f| f.1).collect(),
            sources: files.iter().map(|f| Source::File(Path::new("/d").join(f.0))).collect(),
            ..Default::default()
        }
    }

    #[test]
    fn an_added_file_or_a_renamed_class_is_named_and_the_same_data_is_not() {
        let splits = |train: &[(&str, i64)], classes: &[&str]| Splits {
            classes: classes.iter().map(|c| c.to_string()).collect(),
            train: split(train),
            val: split(&[("a/3.jpg", 0)]),
            source: SourceKind::FolderSeededSplit,
        };
        let had = DataIndex::of(&splits(&[("a/1.jpg", 0), ("b/2.jpg", 1)], &["a", "b"]), Path::new("/d"));
        let same = DataIndex::of(&splits(&[("a/1.jpg", 0), ("b/2.jpg", 1)], &["a", "b"]), Path::new("/d"));
        assert_eq!(had, same);
        assert!(had.changes(&same).is_empty());
        let added =
            DataIndex::of(&splits(&[("a/1.jpg", 0), ("a/9.jpg", 0), ("b/2.jpg", 1)], &["a", "b"]), Path::new("/d"));
        let changes = had.changes(&added);
        assert_eq!(changes.len(), 1, "{changes:?}");
        assert!(changes[0].starts_with("training split: 2 images recorded, 3 now (1 more image;"), "{changes:?}");
        let renamed = DataIndex::of(&splits(&[("a/1.jpg", 0), ("c/2.jpg", 1)], &["a", "c"]), Path::new("/d"));
        let changes = had.changes(&renamed).join("\n");
        assert!(
            changes.contains(r#"gone: ["b"], new: ["c"]"#) && changes.contains("other files or labels"),
            "{changes}"
        );
    }
}
