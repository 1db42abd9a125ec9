//! What `fit --resume` may change about a run. A resumed run continues the
//! saved one exactly, so its config and data options come from the run folder;
//! a flag that says otherwise would either be ignored or make the run's record
//! untrue. The rule: more epochs than the run's extend it (logged); every
//! other difference (config values, `--config`, data, validation fraction,
//! images per class, fine-tuning options, fewer epochs) is refused, all conflicts in one error.

use std::path::{Path, PathBuf};

use serde_json::Value;
use vit::ViTConfig;

use crate::model::finetune::Finetune;
use crate::run::dir::RunOptions;

/// Config keys and the `fit` flags that set them, for the messages.
const FLAGS: &[(&str, &str)] = &[
    ("train.batch_size", "--batch-size"),
    ("train.lr", "--lr"),
    ("train.optimizer", "--optimizer"),
    ("train.betas", "--beta1/--beta2"),
    ("train.weight_decay", "--weight-decay"),
    ("train.warmup_epochs", "--warmup-epochs"),
    ("train.label_smoothing", "--label-smoothing"),
    ("train.grad_clip", "--grad-clip"),
    ("train.log_every", "--log-every"),
    ("train.eval_every", "--eval-every"),
    ("train.seed", "--seed"),
    ("train.crop_scale", "--crop-scale"),
    ("train.color_jitter", "--color-jitter"),
    ("train.mixup_alpha", "--mixup-alpha"),
    ("train.cutmix_alpha", "--cutmix-alpha"),
    ("train.random_erasing", "--random-erasing"),
    ("train.ema_decay", "--ema-decay"),
    ("drop_path", "--drop-path"),
    ("test_time_flip", "--test-time-flip"),
];

/// What the command line of a `fit --resume` asks for.
#[derive(Debug, Clone)]
pub struct ResumeRequest {
    /// `--config`: its path and contents.
    pub preset: Option<(PathBuf, ViTConfig)>,
    /// The saved config with every value flag applied, `--epochs` excepted.
    pub overridden: ViTConfig,
    /// `--epochs`.
    pub epochs: Option<usize>,
    /// `--data`.
    pub data: Option<PathBuf>,
    /// `--val-fraction`.
    pub val_fraction: Option<f64>,
    /// `--max-per-class`.
    pub max_per_class: Option<usize>,
    /// `--freeze-backbone` and `--layer-decay` as given (unset: as the run has them).
    pub finetune: Finetune,
}

/// The command line contradicts the run it resumes.
#[derive(Debug, thiserror::Error)]
#[error(
    "--resume of {run}: the command line contradicts the saved run:\n{}\n\
     leave these flags out to continue the run as it was (more --epochs may extend it), \
     or start a new run with another --out",
    .conflicts.iter().map(|c| format!("  - {c}")).collect::<Vec<_>>().join("\n")
)]
pub struct ResumeConflict {
    /// The run folder.
    pub run: PathBuf,
    /// One line per contradicting flag.
    pub conflicts: Vec<String>,
}

/// The config to continue the run with: the saved one, with more epochs when
/// asked for; an error listing every contradiction otherwise.
pub fn reconcile(
    run_dir: &Path,
    saved: &ViTConfig,
    run: &RunOptions,
    req: &ResumeRequest,
) -> Result<ViTConfig, ResumeConflict> {
    let mut conflicts = Vec::new();
    let saved_keys = flatten(saved);
    for (key, given, had) in differences(&saved_keys, &flatten(&req.overridden)) {
        let flag = FLAGS.iter().find(|(k, _)| *k == key).map_or(key.as_str(), |(_, f)| f);
        conflicts.push(format!("{flag} ({key}): {given} given, the run has {had}"));
    }
    let mut epochs = req.epochs;
    if let Some((path, preset)) = &req.preset {
        let mut preset = preset.clone();
        if preset.num_classes == 0 {
            preset.num_classes = saved.num_classes; // taken from the data, as the run did
        }
        epochs = epochs.or(Some(preset.train.epochs));
        preset.train.epochs = saved.train.epochs;
        for (key, given, had) in differences(&saved_keys, &flatten(&preset)) {
            conflicts.push(format!("--config {}: {key} = {given}, the run has {had}", path.display()));
        }
    }
    if let Some(n) = epochs.filter(|&n| n < saved.train.epochs) {
        conflicts.push(format!(
            "--epochs {n}: the run has {} epochs; a resumed run can only be extended",
            saved.train.epochs
        ));
    }
    if let Some(data) = req.data.as_ref().filter(|d| !same_path(d, &run.data)) {
        conflicts.push(format!("--data {}: the run trains on {}", data.display(), run.data.display()));
    }
    if let Some(f) = req.val_fraction.filter(|&f| f != run.val_fraction) {
        conflicts.push(format!("--val-fraction {f}: the run has {}", run.val_fraction));
    }
    if let Some(n) = req.max_per_class.filter(|&n| Some(n) != run.max_per_class) {
        let had = run.max_per_class.map_or("no limit".to_string(), |m| m.to_string());
        conflicts.push(format!("--max-per-class {n}: the run has {had}"));
    }
    if req.finetune.freeze_backbone && !run.finetune.freeze_backbone {
        conflicts.push("--freeze-backbone: the run trains every tensor".to_string());
    }
    if let Some(d) = req.finetune.layer_decay.filter(|&d| Some(d) != run.finetune.layer_decay) {
        let had = run.finetune.layer_decay.map_or("no layer decay".to_string(), |h| h.to_string());
        conflicts.push(format!("--layer-decay {d}: the run has {had}"));
    }
    if !conflicts.is_empty() {
        return Err(ResumeConflict { run: run_dir.to_path_buf(), conflicts });
    }
    let mut cfg = saved.clone();
    if let Some(n) = epochs.filter(|&n| n > saved.train.epochs) {
        log::info!("extending the run from {} to {n} epochs", saved.train.epochs);
        cfg.train.epochs = n;
    }
    Ok(cfg)
}

/// `(key, given, saved)` for every key whose value differs.
fn differences(saved: &[(String, Value)], given: &[(String, Value)]) -> Vec<(String, Value, Value)> {
    given
        .iter()
        .filter_map(|(key, v)| {
            let had = saved.iter().find(|(k, _)| k == key).map_or(Value::Null, |(_, v)| v.clone());
            (had != *v).then(|| (key.clone(), v.clone(), had))
        })
        .collect()
}

/// Every value of a config under its dotted key (`train.lr`), in order.
fn flatten(cfg: &ViTConfig) -> Vec<(String, Value)> {
    fn walk(prefix: &str, v: Value, out: &mut Vec<(String, Value)>) {
        match v {
            Value::Object(map) => {
                for (k, v) in map {
                    let key = if prefix.is_empty() { k } else { format!("{prefix}.{k}") };
                    walk(&key, v, out);
                }
            }
            other => out.push((prefix.to_string(), other)),
        }
    }
    let mut out = Vec::new();
    walk("", serde_json::to_value(cfg).unwrap_or(Value::Null), &mut out);
    out
}

/// Equal paths, or the same folder reached two ways.
fn same_path(a: &Path, b: &Path) -> bool {
    a == b || matches!((a.canonicalize(), b.canonicalize()), (Ok(x), Ok(y)) if x == y)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(saved: &ViTConfig) -> ResumeRequest {
        ResumeRequest {
            preset: None,
            overridden: saved.clone(),
            epochs: None,
            data: None,
            val_fraction: None,
            max_per_class: None,
            finetune: Finetune::default(),
        }
    }

    #[test]
    fn more_epochs_extend_and_everything_else_that_differs_is_listed() {
        let mut saved = ViTConfig { num_classes: 5, ..Default::default() };
        saved.train.epochs = 3;
        let run = RunOptions {
            data: "data".into(),
            val_fraction: 0.2,
            max_per_class: Some(40),
            allow_skipped: false,
            init: None,
            data_mode: crate::data::source::DataMode::Memory,
            shuffle_buffer: crate::data::shard_order::DEFAULT_SHUFFLE_BUFFER,
            finetune: Finetune { freeze_backbone: false, layer_decay: Some(0.75) },
            data_index: None,
        };
        let dir = Path::new("runs/r");
        let finetune = Finetune { layer_decay: Some(0.75), ..Default::default() };
        let same = ResumeRequest { epochs: Some(3), max_per_class: Some(40), finetune, ..request(&saved) };
        assert_eq!(reconcile(dir, &saved, &run, &same).unwrap(), saved);
        let longer = reconcile(dir, &saved, &run, &ResumeRequest { epochs: Some(5), ..request(&saved) }).unwrap();
        assert_eq!(longer.train.epochs, 5);

        let mut overridden = saved.clone();
        overridden.train.lr *= 10.0;
        let mut preset = saved.clone();
        preset.depth += 1;
        preset.num_classes = 0;
        let req = ResumeRequest {
            preset: Some(("other.toml".into(), preset)),
            overridden,
            epochs: Some(2),
            data: Some("elsewhere".into()),
            val_fraction: Some(0.3),
            max_per_class: Some(10),
            finetune: Finetune { freeze_backbone: true, layer_decay: Some(0.65) },
        };
        let err = reconcile(dir, &saved, &run, &req).unwrap_err();
        let text = err.to_string();
        assert_eq!(err.conflicts.len(), 8, "{text}");
        let needles = ["--lr (train.lr)", "other.toml: depth", "--epochs 2", "--data elsewhere", "0.3", "10"];
        let finetune = ["--freeze-backbone: the run trains every", "--layer-decay 0.65: the run has 0.75"];
        for needle in needles.into_iter().chain(finetune) {
            assert!(text.contains(needle), "{needle}: {text}");
        }
        assert!(!text.contains("num_classes"), "{text}");
    }
}
