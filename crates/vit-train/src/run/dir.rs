//! The run folder of `vit-train fit`, in one place: every file name in it and
//! the typed reading and writing of each file. `fit`, `export`, `samples` and
//! the tests reach the folder only through [`RunDir`], so the layout is
//! written down once, and [`RunDir::create`] / [`RunDir::open`] are the only
//! ways in for a writer: both take the folder's exclusive lock
//! ([`RunLock`], `.lock`), so one process at a time trains or exports a run,
//! and both remove what interrupted atomic writes left behind.
//! [`RunDir::inspect`] reads a run without the lock (e.g. while it trains).
//!
//! Layout: `config.toml` (resolved config, with `num_classes`), `labels.json`,
//! `run.json` ([`RunOptions`], for `--resume`), `metrics.jsonl`, `summary.json`,
//! `last.safetensors`, `best.safetensors`, `resume.safetensors`, `model.onnx`,
//! `curves.png`, `confusion.png`, `confusion.csv`, `events.out.tfevents.*` (TensorBoard).

use std::path::{Path, PathBuf};

use serde::{de::DeserializeOwned, Deserialize, Serialize};
use vit::config::ConfigError;
use vit::ViTConfig;

use crate::run::data_index::DataIndex;
use crate::run::lock::{remove_leftovers, temp_owner, LockError, RunLock, LOCK_FILE};
use crate::run::metrics::{read_records, write_records, Confusion, Record, Summary};

/// Data and run options of `fit` (saved as `run.json` for `--resume`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunOptions {
    /// Data folder.
    pub data: PathBuf,
    /// Validation fraction for folders without train/val.
    pub val_fraction: f64,
    /// Cap on images per class and split.
    pub max_per_class: Option<usize>,
    /// Train on what can be read when some entries of the data folder cannot be
    /// (`--allow-skipped`); each is still reported and counted. Off: such a data
    /// set is an error, so no run silently trains on part of its data.
    #[serde(default)]
    pub allow_skipped: bool,
    /// Checkpoint trained elsewhere the run started from (`fit --init`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub init: Option<InitSource>,
    /// How the images are held (`--data-mode`); a run records the mode it
    /// resolved (`memory` or `stream`), and runs from before streaming read as `memory`.
    #[serde(default)]
    pub data_mode: crate::data::source::DataMode,
    /// Samples in the shuffle buffer of data read from tar shards (`--shuffle-buffer`).
    #[serde(default = "default_shuffle_buffer")]
    pub shuffle_buffer: usize,
    /// `--freeze-backbone` and `--layer-decay` (neither, in runs from before them).
    #[serde(default, skip_serializing_if = "crate::model::finetune::Finetune::is_none")]
    pub finetune: crate::model::finetune::Finetune,
    /// The classes and split file lists the run trains on, recorded at its start
    /// (`None` in runs from before it, which resume with a warning).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_index: Option<DataIndex>,
}

/// The shuffle buffer of runs from before tar shards.
fn default_shuffle_buffer() -> usize {
    crate::data::shard_order::DEFAULT_SHUFFLE_BUFFER
}

/// Where a run's initial weights came from (`run.json`'s `init`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InitSource {
    /// The checkpoint (`.safetensors` or `save_pretrained` folder).
    pub weights: PathBuf,
    /// `--num-heads`, when the checkpoint does not say.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub num_heads: Option<usize>,
}

/// Which model-only checkpoint of a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Checkpoint {
    /// The weights after the last completed epoch.
    #[default]
    Last,
    /// The weights of the epoch with the best validation accuracy.
    Best,
}

/// Errors reading or writing a run folder; each names the file.
#[derive(Debug, thiserror::Error)]
pub enum RunDirError {
    /// A run file is not a regular file, too large, or unreadable.
    #[error(transparent)]
    File(#[from] vit::files::FileError),
    /// The folder could not be created.
    #[error("cannot create run folder {path}")]
    Create {
        /// The folder.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The folder does not exist.
    #[error("{path} is not a vit-train run folder (no such directory)")]
    Missing {
        /// The folder.
        path: PathBuf,
    },
    /// `fit` was pointed at a folder that holds something else.
    #[error(
        "{path} is neither empty nor a vit-train run folder (it holds {example}, and no run.json); \
         choose a new or empty --out folder so nothing in it is overwritten"
    )]
    Foreign {
        /// The folder.
        path: PathBuf,
        /// One of the entries found.
        example: String,
    },
    /// Another process holds the folder, or it cannot be locked.
    #[error(transparent)]
    Lock(#[from] LockError),
    /// A file could not be read or written.
    #[error("cannot {action} {path}")]
    Io {
        /// `read` or `write`.
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A JSON file is malformed (or empty, or cut short).
    #[error(
        "{path} is malformed or incomplete: restore it from a copy, or start a new run with another --out \
         (the checkpoints here stay usable for `vit-train export`)"
    )]
    Json {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: serde_json::Error,
    },
    /// A run file lacks what the run's checkpoints say it must hold.
    #[error(
        "{path} is incomplete: {what}; it cannot be rebuilt, so resuming would lose or rewrite the run's record: \
         restore it from a copy, or start a new run with another --out (the checkpoints here stay usable for \
         `vit-train export`)"
    )]
    Incomplete {
        /// The file.
        path: PathBuf,
        /// What is missing.
        what: String,
    },
    /// `config.toml` is unreadable or invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// `labels.json` does not match the config.
    #[error("{path}: {labels} labels for num_classes = {num_classes}")]
    LabelCount {
        /// `labels.json`.
        path: PathBuf,
        /// Labels in the file.
        labels: usize,
        /// Classes in the config.
        num_classes: usize,
    },
}

/// A run folder and the paths of everything in it; while a value made by
/// [`create`](Self::create) or [`open`](Self::open) lives, this process holds the folder's lock.
#[derive(Debug)]
pub struct RunDir {
    root: PathBuf,
    _lock: Option<RunLock>,
}

impl RunDir {
    /// Creates the folder (and its parents) if needed and locks it, for a new run:
    /// refuses a folder that holds files but no run (see [`RunDirError::Foreign`]).
    pub fn create(path: impl AsRef<Path>) -> Result<Self, RunDirError> {
        let root = path.as_ref().to_path_buf();
        std::fs::create_dir_all(&root).map_err(|source| RunDirError::Create { path: root.clone(), source })?;
        let dir = Self::locked(root)?;
        if !dir.run_options_path().exists() {
            if let Some(example) = dir.foreign_entry()? {
                return Err(RunDirError::Foreign { path: dir.root, example });
            }
        }
        Ok(dir)
    }

    /// Opens and locks an existing run folder (to resume, export or otherwise write it).
    pub fn open(path: impl AsRef<Path>) -> Result<Self, RunDirError> {
        let root = path.as_ref().to_path_buf();
        if !root.is_dir() {
            return Err(RunDirError::Missing { path: root });
        }
        Self::locked(root)
    }

    /// An existing run folder for reading only, without the lock: its files may
    /// change underneath while another process trains it.
    pub fn inspect(path: impl AsRef<Path>) -> Result<Self, RunDirError> {
        let root = path.as_ref().to_path_buf();
        if !root.is_dir() {
            return Err(RunDirError::Missing { path: root });
        }
        Ok(Self { root, _lock: None })
    }

    fn locked(root: PathBuf) -> Result<Self, RunDirError> {
        let lock = RunLock::acquire(&root)?;
        for path in remove_leftovers(&root) {
            log::info!("removed {}, left by an interrupted write", path.display());
        }
        Ok(Self { root, _lock: Some(lock) })
    }

    /// The first entry that is neither the lock nor a temporary file, if any.
    fn foreign_entry(&self) -> Result<Option<String>, RunDirError> {
        let io = |source| RunDirError::Io { action: "read", path: self.root.clone(), source };
        for entry in std::fs::read_dir(&self.root).map_err(io)? {
            let name = entry.map_err(io)?.file_name().to_string_lossy().into_owned();
            if name != LOCK_FILE && temp_owner(&name).is_none() {
                return Ok(Some(name));
            }
        }
        Ok(None)
    }

    /// The folder itself.
    pub fn path(&self) -> &Path {
        &self.root
    }

    /// `config.toml`: the resolved config.
    pub fn config_path(&self) -> PathBuf {
        self.root.join("config.toml")
    }

    /// `labels.json`: class names in label order.
    pub fn labels_path(&self) -> PathBuf {
        self.root.join("labels.json")
    }

    /// `run.json`: the [`RunOptions`].
    pub fn run_options_path(&self) -> PathBuf {
        self.root.join("run.json")
    }

    /// `metrics.jsonl`: one [`Record`] per line.
    pub fn metrics_path(&self) -> PathBuf {
        self.root.join("metrics.jsonl")
    }

    /// `summary.json`: the [`Summary`].
    pub fn summary_path(&self) -> PathBuf {
        self.root.join("summary.json")
    }

    /// `last.safetensors` or `best.safetensors`: model tensors only.
    pub fn checkpoint_path(&self, which: Checkpoint) -> PathBuf {
        self.root.join(match which {
            Checkpoint::Last => "last.safetensors",
            Checkpoint::Best => "best.safetensors",
        })
    }

    /// `resume.safetensors`: model, optimiser, weight average and epoch.
    pub fn resume_path(&self) -> PathBuf {
        self.root.join("resume.safetensors")
    }

    /// `model.onnx`: the default export.
    pub fn onnx_path(&self) -> PathBuf {
        self.root.join("model.onnx")
    }

    /// `curves.png`: training and validation loss, validation accuracy.
    pub fn curves_plot_path(&self) -> PathBuf {
        self.root.join("curves.png")
    }

    /// `confusion.png`: heat map of the final confusion matrix.
    pub fn confusion_plot_path(&self) -> PathBuf {
        self.root.join("confusion.png")
    }

    /// `confusion.csv`: the final confusion matrix with class names.
    pub fn confusion_csv_path(&self) -> PathBuf {
        self.root.join("confusion.csv")
    }

    /// True once a run has written its resume checkpoint here.
    pub fn holds_run(&self) -> bool {
        self.resume_path().exists()
    }

    /// Reads `config.toml` (validated as a preset; `num_classes` not checked):
    /// an empty or cut-short file is an error, never the default config.
    pub fn read_config(&self) -> Result<ViTConfig, RunDirError> {
        Ok(ViTConfig::from_saved_toml_file(&self.config_path())?)
    }

    /// Writes `config.toml`.
    pub fn write_config(&self, cfg: &ViTConfig) -> Result<(), RunDirError> {
        write_text(&self.config_path(), &cfg.to_toml())
    }

    /// Reads `labels.json`.
    pub fn read_labels(&self) -> Result<Vec<String>, RunDirError> {
        read_json(&self.labels_path())
    }

    /// Writes `labels.json`.
    pub fn write_labels(&self, labels: &[String]) -> Result<(), RunDirError> {
        write_json(&self.labels_path(), &labels)
    }

    /// The config and labels of a trained run, validated against each other.
    pub fn read_trained(&self) -> Result<(ViTConfig, Vec<String>), RunDirError> {
        let cfg = self.read_config()?;
        let labels = self.read_labels()?;
        cfg.validate()?;
        if labels.len() != cfg.num_classes {
            return Err(RunDirError::LabelCount {
                path: self.labels_path(),
                labels: labels.len(),
                num_classes: cfg.num_classes,
            });
        }
        Ok((cfg, labels))
    }

    /// Reads `run.json`.
    pub fn read_run_options(&self) -> Result<RunOptions, RunDirError> {
        read_json(&self.run_options_path())
    }

    /// Writes `run.json`.
    pub fn write_run_options(&self, run: &RunOptions) -> Result<(), RunDirError> {
        write_json(&self.run_options_path(), run)
    }

    /// Reads `metrics.jsonl` for plots and reports (missing file: empty; unparsable lines are skipped).
    pub fn read_records(&self) -> Vec<Record> {
        read_records(&self.metrics_path())
    }

    /// The records of the first `epochs` epochs, for a run resumed after them:
    /// every line must parse and each of those epochs must have its record, or
    /// the best epoch so far (and with it `best.safetensors`) would be chosen
    /// from a partial history.
    pub fn read_records_before(&self, epochs: usize) -> Result<Vec<Record>, RunDirError> {
        let path = self.metrics_path();
        let incomplete = |what: String| RunDirError::Incomplete { path: path.clone(), what };
        let text = match vit::files::read_text(&path, "run records") {
            Err(e) if e.is_not_found() && epochs == 0 => return Ok(Vec::new()),
            Err(e) if e.is_not_found() => {
                return Err(incomplete(format!("it is missing, and the run has completed {epochs} epochs")))
            }
            Err(e) => return Err(e.into()),
            Ok(text) => text,
        };
        let mut records = Vec::new();
        for (n, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
            let record: Record =
                serde_json::from_str(line).map_err(|e| incomplete(format!("line {} is not a record ({e})", n + 1)))?;
            records.push(record);
        }
        let recorded = |e: usize| records.iter().any(|r| matches!(r, Record::Epoch { epoch, .. } if *epoch == e));
        if let Some(lost) = (0..epochs).find(|&e| !recorded(e)) {
            return Err(incomplete(format!(
                "it has no record of epoch {} of the {epochs} epochs the run has completed",
                lost + 1
            )));
        }
        records.retain(|r| r.epoch() < epochs);
        Ok(records)
    }

    /// Rewrites `metrics.jsonl` with `records`, atomically.
    pub fn write_records(&self, records: &[Record]) -> Result<(), RunDirError> {
        let path = self.metrics_path();
        write_records(&path, records).map_err(|source| RunDirError::Io { action: "write", path, source })
    }

    /// Reads `summary.json`.
    pub fn read_summary(&self) -> Result<Summary, RunDirError> {
        read_json(&self.summary_path())
    }

    /// Writes `summary.json`.
    pub fn write_summary(&self, summary: &Summary) -> Result<(), RunDirError> {
        write_json(&self.summary_path(), summary)
    }

    /// Writes `confusion.csv`.
    pub fn write_confusion_csv(&self, confusion: &Confusion, labels: &[String]) -> Result<(), RunDirError> {
        write_text(&self.confusion_csv_path(), &confusion.to_csv(labels))
    }
}

/// Every run file is replaced atomically: a kill leaves the old file or the new one.
fn write_text(path: &Path, text: &str) -> Result<(), RunDirError> {
    vit::atomic::write_bytes(path, text.as_bytes()).map_err(|source| RunDirError::Io {
        action: "write",
        path: path.to_path_buf(),
        source,
    })
}

fn write_json(path: &Path, value: &impl Serialize) -> Result<(), RunDirError> {
    let text =
        serde_json::to_string_pretty(value).map_err(|source| RunDirError::Json { path: path.to_path_buf(), source })?;
    write_text(path, &(text + "\n"))
}

fn read_json<T: DeserializeOwned>(path: &Path) -> Result<T, RunDirError> {
    let text = vit::files::read_text(path, "run file")?;
    serde_json::from_str(&text).map_err(|source| RunDirError::Json { path: path.to_path_buf(), source })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_options_round_trip_and_missing_folders_are_named() {
        let tmp = tempfile::tempdir().unwrap();
        let run = RunDir::create(tmp.path().join("a/b")).unwrap();
        let opts = RunOptions {
            data: "data".into(),
            val_fraction: 0.25,
            max_per_class: Some(3),
            allow_skipped: true,
            init: None,
            data_mode: crate::data::source::DataMode::Stream,
            shuffle_buffer: crate::data::shard_order::DEFAULT_SHUFFLE_BUFFER,
            finetune: crate::model::finetune::Finetune { freeze_backbone: true, layer_decay: Some(0.75) },
            data_index: None,
        };
        run.write_run_options(&opts).unwrap();
        let back = RunDir::inspect(run.path()).unwrap().read_run_options().unwrap();
        assert_eq!((back.data, back.val_fraction, back.max_per_class), (opts.data, 0.25, Some(3)));
        assert_eq!(back.finetune, opts.finetune);
        // A run.json from before the fine-tuning options reads as neither.
        let old = r#"{"data": "d", "val_fraction": 0.2, "max_per_class": null}"#;
        let old: RunOptions = serde_json::from_str(old).unwrap();
        assert!(old.finetune.is_none() && old.data_index.is_none());
        assert_eq!(run.checkpoint_path(Checkpoint::Best), run.path().join("best.safetensors"));
        let err = RunDir::open(tmp.path().join("nowhere")).unwrap_err().to_string();
        assert!(err.contains("nowhere"), "{err}");
        let err = run.read_summary().unwrap_err().to_string();
        assert!(err.contains("summary.json"), "{err}");
        // Held by `run`: a second writer is turned away, a reader is not.
        let err = RunDir::open(run.path()).unwrap_err().to_string();
        assert!(err.contains("in use"), "{err}");
        drop(run);
        RunDir::create(tmp.path().join("a/b")).unwrap();
    }

    #[test]
    fn create_refuses_a_folder_with_other_files_but_not_an_empty_one() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(tmp.path().join("notes.txt"), "mine").unwrap();
        let err = RunDir::create(tmp.path()).unwrap_err().to_string();
        assert!(err.contains("notes.txt") && err.contains("neither empty nor"), "{err}");
        assert_eq!(std::fs::read_to_string(tmp.path().join("notes.txt")).unwrap(), "mine");
        let empty = tmp.path().join("empty");
        std::fs::create_dir(&empty).unwrap();
        drop(RunDir::create(&empty).unwrap());
        RunDir::create(&empty).expect("only the lock file in it");
    }
}
