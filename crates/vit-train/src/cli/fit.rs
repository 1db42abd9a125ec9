//! `vit-train fit`: the config of a new or resumed run from the flags, the run's
//! data options, and the flow that checks everything before the run folder is
//! touched, trains (alone or as rank 0 of a process group) and exports.

use std::path::PathBuf;
use std::rc::Rc;

use anyhow::{bail, Context, Result};
use vit::ViTConfig;

use super::{dist, export_and_print, set_threads, FitArgs};
use crate::export::ExportRequest;
use crate::import::Imported;
use crate::run::dir::{InitSource, RunDir, RunOptions};
use crate::run::resume::{reconcile, ResumeRequest};
use crate::train::fit::{fit_rank, FitOptions};

impl FitArgs {
    /// `--freeze-backbone` and `--layer-decay`.
    pub fn finetune(&self) -> crate::model::finetune::Finetune {
        crate::model::finetune::Finetune { freeze_backbone: self.freeze_backbone, layer_decay: self.layer_decay }
    }
}

/// Validation fraction when `--val-fraction` is not given.
pub const DEFAULT_VAL_FRACTION: f64 = 0.2;

/// Config of a new run: the preset with flag overrides applied; with `--init`,
/// also the checkpoint it was made from.
pub fn resolve_config(a: &FitArgs) -> Result<(ViTConfig, Option<Rc<Imported>>)> {
    let preset = a.config.as_deref().map(ViTConfig::from_toml_file).transpose()?;
    let (mut cfg, checkpoint) = match (&a.init, preset) {
        (Some(weights), preset) => {
            let (cfg, checkpoint) = crate::import::init::run_config(weights, a.num_heads, preset.as_ref())?;
            (cfg, Some(Rc::new(checkpoint)))
        }
        (None, Some(cfg)) => (cfg, None),
        (None, None) => bail!("--config is required (e.g. --config models/fashion-mnist.toml)"),
    };
    apply_overrides(&mut cfg, a);
    if cfg.train.epochs == 0 {
        let source = if a.epochs.is_some() { "--epochs 0" } else { "train.epochs = 0" };
        bail!("{source}: train for at least 1 epoch");
    }
    cfg.validate_architecture()?;
    Ok((cfg, checkpoint))
}

/// Config of a resumed run: the saved one, unless the flags contradict it (see [`crate::run::resume`]).
pub(super) fn resume_config(dir: &RunDir, a: &FitArgs) -> Result<ViTConfig> {
    let saved = dir.read_config()?;
    let run = dir.read_run_options().context("--resume needs the run's run.json")?;
    let preset = match &a.config {
        Some(p) => Some((p.clone(), ViTConfig::from_toml_file(p)?)),
        None => None,
    };
    let mut overridden = saved.clone();
    apply_overrides(&mut overridden, a);
    overridden.train.epochs = saved.train.epochs;
    let req = ResumeRequest {
        preset,
        overridden,
        epochs: a.epochs,
        data: a.data.clone(),
        val_fraction: a.val_fraction,
        max_per_class: a.max_per_class,
        finetune: a.finetune(),
    };
    Ok(reconcile(dir.path(), &saved, &run, &req)?)
}

/// Sets every config value a flag of `a` overrides.
fn apply_overrides(cfg: &mut ViTConfig, a: &FitArgs) {
    let t = &mut cfg.train;
    macro_rules! set {
        ($($flag:ident => $field:expr),*) => { $(if let Some(v) = a.$flag.clone() { $field = v; })* };
    }
    set!(epochs => t.epochs, batch_size => t.batch_size, lr => t.lr, beta1 => t.betas.0, beta2 => t.betas.1,
         weight_decay => t.weight_decay, warmup_epochs => t.warmup_epochs, label_smoothing => t.label_smoothing,
         grad_clip => t.grad_clip, log_every => t.log_every, eval_every => t.eval_every, seed => t.seed, color_jitter => t.color_jitter,
         mixup_alpha => t.mixup_alpha, cutmix_alpha => t.cutmix_alpha, random_erasing => t.random_erasing,
         ema_decay => t.ema_decay, precision => t.precision, fused_attention => t.fused_attention,
         fused_optimizer => t.fused_optimizer, channels_last => t.channels_last, cuda_graph => t.cuda_graph,
         sync_batch_norm => t.sync_batch_norm);
    if let Some(min) = a.crop_scale {
        t.crop_scale = (min, 1.0);
    }
    if let Some(o) = a.optimizer {
        t.optimizer = o.into();
    }
    if let Some(rate) = a.drop_path {
        cfg.drop_path = rate;
    }
    if let Some(flip) = a.test_time_flip {
        cfg.test_time_flip = flip;
    }
}

/// `vit-train fit`: everything is checked before the run folder is touched, and
/// the folder stays locked from the first write to the end of the export.
pub(super) fn run_fit(a: &FitArgs) -> Result<()> {
    // First: on a machine other processes keep busy this restarts the program with a short OpenMP spin.
    crate::host::omp::adapt_wait_policy();
    set_threads(a.threads)?;
    let _ = crate::host::allocator::keep_freed_memory(); // only speed depends on it
    let device = a.device.resolve()?;
    let ranked = dist::launch(device)?;
    let device = ranked.as_ref().map_or(device, |(_, d)| *d);
    if let Some((launch, _)) = ranked.as_ref().filter(|(l, _)| l.rank != 0) {
        return dist::fit_other_rank(a, launch, device);
    }
    let group = ranked.map(|(launch, _)| dist::join(&a.dist, &launch, device)).transpose()?;
    let (dir, cfg, run, init_checkpoint) = if a.resume {
        let dir = RunDir::open(&a.out)?;
        let cfg = resume_config(&dir, a)?;
        let mut run = dir.read_run_options()?;
        // Allowing skipped entries later is the user's explicit choice, never a contradiction.
        run.allow_skipped |= a.allow_skipped;
        (dir, cfg, run, None)
    } else {
        let (cfg, checkpoint) = resolve_config(a)?;
        crate::host::memory::check(&cfg, device)?;
        a.finetune().check(&cfg).map_err(anyhow::Error::msg)?;
        let run = new_run_options(a)?;
        (RunDir::create(&a.out)?, cfg, run, checkpoint)
    };
    let data = a.data_pipeline.options();
    let progress = !a.quiet;
    let opts =
        FitOptions { run, device, resume: a.resume, eval_batch: a.eval_batch_size, progress, data, init_checkpoint };
    let summary = fit_rank(Some(&dir), cfg, &opts, group)?;
    let accuracy = match (summary.val_accuracy, summary.best_val_accuracy, summary.best_epoch) {
        (Some(acc), Some(best), Some(epoch)) => format!("{acc:.4} (best {best:.4} at epoch {epoch})"),
        (Some(acc), ..) => format!("{acc:.4}"),
        _ => "not measured (no validation images)".into(),
    };
    println!(
        "validation accuracy: {accuracy}, {:.1} train images/s, {:.1}s",
        summary.train_images_per_sec, summary.wall_seconds
    );
    if !a.no_export {
        export_and_print(&dir, &ExportRequest::new(&a.out))?;
    }
    Ok(())
}

/// The data options of a new run, from the flags.
pub(super) fn new_run_options(a: &FitArgs) -> Result<RunOptions> {
    let Some(data) = a.data.clone() else { bail!("--data is required (an image folder or a folder of IDX files)") };
    // The canonical path in run.json: a resume or an int8 export from another folder reads the same data.
    let data = std::fs::canonicalize(&data).with_context(|| {
        format!(
            "--data {}: does not exist; give a folder of class subfolders of images, of IDX files or of shards",
            data.display()
        )
    })?;
    let val_fraction = a.val_fraction.unwrap_or(DEFAULT_VAL_FRACTION);
    // An absolute path in run.json, so --resume finds the weights from any folder.
    let absolute = |w: &PathBuf| std::fs::canonicalize(w).unwrap_or_else(|_| w.clone());
    let init = a.init.as_ref().map(|w| InitSource { weights: absolute(w), num_heads: a.num_heads });
    Ok(RunOptions {
        data,
        val_fraction,
        max_per_class: a.max_per_class,
        allow_skipped: a.allow_skipped,
        init,
        data_mode: a.data_pipeline.data_mode,
        shuffle_buffer: a.data_pipeline.shuffle_buffer,
        finetune: a.finetune(),
        data_index: None,
    })
}
