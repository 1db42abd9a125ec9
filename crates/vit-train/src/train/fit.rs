//! `vit-train fit`: the loop that drives a [`Trainer`] through the epochs,
//! logs progress and fills the run folder ([`RunDir`]). Checkpoints are written
//! at the end of every epoch; `--resume` restarts from the last completed epoch
//! with weights, Adam moments (and the weight average, when the recipe keeps
//! one) and the data order of the next epoch, so it reaches the same result.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::rc::Rc;
use std::time::Instant;

use anyhow::{bail, Result};
use indicatif::{ProgressBar, ProgressStyle};
use tch::Device;
use vit::data::{LoadOptions, Skipped, Splits};
use vit::{Preprocessor, ViTConfig};

use crate::data::resident::{ResidentSplits, Split};
use crate::data::source::{load_splits_in, DataMode, DataOptions};
use crate::dist::agree::RankFacts;
use crate::dist::ProcessGroup;
use crate::import::Imported;
use crate::run::dir::{Checkpoint, RunDir, RunOptions};
use crate::run::events::RunEvents;
use crate::run::metrics::{Record, Summary};
use crate::train::evaluate::Evaluation;
use crate::train::trainer::{EpochStats, StepReport, Trainer};

/// Everything `fit` needs.
#[derive(Debug, Clone)]
pub struct FitOptions {
    /// Data options of a new run (a resumed run reads its own from `run.json`).
    pub run: RunOptions,
    /// Device to train on.
    pub device: Device,
    /// Continue the run in the folder.
    pub resume: bool,
    /// Batch size for evaluation.
    pub eval_batch: usize,
    /// Print progress.
    pub progress: bool,
    /// Batch workers, prefetch depth and the memory budget of `--data-mode auto`.
    pub data: DataOptions,
    /// The `--init` checkpoint of `run.init`, already read when the config was
    /// made from it (None: read here when a new run needs it).
    pub init_checkpoint: Option<Rc<Imported>>,
}

/// Human name of a device.
pub fn device_name(d: Device) -> String {
    match d {
        Device::Cpu => "cpu".into(),
        Device::Cuda(n) => format!("cuda:{n}"),
        other => format!("{other:?}").to_lowercase(),
    }
}

/// Loads the data a run uses (decoded, or indexed for streaming: `run.data_mode`,
/// resolved in place when `auto` against `budget` bytes) and fixes `num_classes` in the config.
pub fn load_data(cfg: &mut ViTConfig, run: &mut RunOptions, budget: u64) -> Result<Splits> {
    let prep = Preprocessor::from_config(cfg);
    let opts = LoadOptions {
        val_fraction: run.val_fraction,
        seed: cfg.train.seed,
        max_per_class: run.max_per_class,
        allow_unreadable: run.allow_skipped,
    };
    if cfg.train.crop_from_original {
        match run.data_mode {
            DataMode::Memory | DataMode::Device => bail!(
                "train.crop_from_original = true crops each training image from its original file, and \
                 --data-mode {} keeps only the images resized to image_size: pass --data-mode stream \
                 (or auto), or set train.crop_from_original = false",
                if run.data_mode == DataMode::Device { "device" } else { "memory" }
            ),
            DataMode::Auto => {
                log::info!("data: train.crop_from_original = true reads the original files, so the data is streamed");
                run.data_mode = DataMode::Stream;
            }
            DataMode::Stream => {}
        }
    }
    let splits = match load_splits_in(&run.data, &prep, &opts, run.data_mode, budget) {
        Err(e @ vit::data::DataError::Unreadable { .. }) => {
            return Err(anyhow::Error::new(e).context("pass --allow-skipped to train on the readable part"))
        }
        other => {
            let (splits, mode) = other?;
            run.data_mode = mode;
            splits
        }
    };
    if splits.train.is_empty() {
        bail!("no training images found in {}", run.data.display());
    }
    if cfg.train.crop_from_original && !splits.train.is_streamed() {
        bail!(
            "train.crop_from_original = true needs image files, but {} holds IDX data, decoded in memory; set \
             train.crop_from_original = false",
            run.data.display()
        );
    }
    if cfg.num_classes != 0 && cfg.num_classes != splits.classes.len() {
        bail!(
            "config says num_classes = {} but {} has {} classes {:?}; set num_classes = 0 to take it from the data",
            cfg.num_classes,
            run.data.display(),
            splits.classes.len(),
            splits.classes
        );
    }
    cfg.num_classes = splits.classes.len();
    cfg.validate()?;
    Ok(splits)
}

/// Trains `cfg` on the options' data, filling the run folder `dir` (made by
/// [`RunDir::create`], or [`RunDir::open`] to resume); returns the summary.
pub fn fit(dir: &RunDir, cfg: ViTConfig, opts: &FitOptions) -> Result<Summary> {
    fit_rank(Some(dir), cfg, opts, None)
}

/// [`fit`] as one rank of `group` (data-parallel training): rank 0 passes the run
/// folder and is the only one to read checkpoints or write anything; the other
/// ranks pass `None` (with the run's options in `opts.run`, also on `--resume`)
/// and receive rank 0's state. Without a group, `dir` is required.
pub fn fit_rank(
    dir: Option<&RunDir>,
    mut cfg: ViTConfig,
    opts: &FitOptions,
    group: Option<ProcessGroup>,
) -> Result<Summary> {
    let started = Instant::now();
    if cfg.train.epochs == 0 {
        bail!("train.epochs = 0: train for at least 1 epoch");
    }
    // On --resume, `opts.run` is the run's run.json with what the command line may change
    // (--allow-skipped) applied; reading run.json again here would drop that.
    let mut run = match dir {
        Some(dir) if !opts.resume && dir.holds_run() => {
            bail!("{} already holds a run; pass --resume to continue it or choose another --out", dir.path().display())
        }
        _ => opts.run.clone(),
    };
    if dir.is_none() && group.as_ref().map_or(true, |g| g.rank() == 0) {
        bail!("only ranks other than 0 train without the run folder");
    }

    let estimate = crate::host::memory::check(&cfg, opts.device)?;
    log::debug!("memory estimate: {:.0} MiB", estimate.total() / (1u64 << 20) as f64);
    let requested_mode = run.data_mode;
    let splits = load_data(&mut cfg, &mut run, opts.data.budget())?;
    let device_budget = match requested_mode {
        DataMode::Auto => crate::host::gpu::cuda_free_memory(opts.device).map(|free| free / 2),
        _ => None,
    };
    run.data_mode = crate::data::resident::choose(requested_mode, run.data_mode, &splits, opts.device, device_budget);
    if let Some(shards) = splits.train.shard_ranges() {
        crate::data::shard_order::check_shards_for_ranks(shards.len(), crate::dist::sampler::rank().1)
            .map_err(anyhow::Error::msg)?;
    }
    crate::run::data_index::record_or_check(&mut run, &splits, opts.resume)?;
    if let Some(group) = &group {
        // Before the first collective whose shapes depend on any of it (rank 0's state broadcast).
        group.agree(&rank_facts(&cfg, &run, requested_mode, opts.resume))?;
        if !cfg.train.sync_batch_norm {
            group.local_batch_norm();
        }
    }
    let measured = !splits.val.is_empty();
    if !measured {
        log::warn!("no validation images: accuracy will not be measured (and no best.safetensors chosen by it)");
    }
    log::info!(
        "data: {} classes, {} train / {} val images, {} files skipped ({}, {:?} mode)",
        splits.classes.len(),
        splits.train.len(),
        splits.val.len(),
        splits.skipped(),
        run.data.display(),
        run.data_mode
    );
    // run.json first: with it, the folder is recognisably a run however early a kill comes.
    // A resumed run rewrites its files only once its checkpoint and records have been read.
    let write_run_files = |dir: &RunDir| -> Result<()> {
        dir.write_run_options(&run)?;
        dir.write_config(&cfg)?;
        dir.write_labels(&splits.classes)?;
        Ok(())
    };
    if let Some(dir) = dir.filter(|_| !opts.resume) {
        write_run_files(dir)?;
    }

    // Uploaded before the model, so a set that does not fit fails before anything else is allocated there.
    let resident = match run.data_mode {
        DataMode::Device => Some(ResidentSplits::upload(&splits, &Preprocessor::from_config(&cfg), opts.device)?),
        _ => None,
    };
    crate::train::amp::check_supported(cfg.train.precision, opts.device)?;
    crate::model::set_fused_attention(cfg.train.fused_attention);
    let shard = crate::dist::sampler::shard_len(splits.train.len());
    let mut trainer = Trainer::new(&cfg, opts.device, shard, opts.eval_batch)?;
    trainer.set_pipeline(opts.data.pipeline);
    trainer.set_shuffle_buffer(run.shuffle_buffer);
    trainer.finetune(&run.finetune)?;
    let parameters = trainer.parameters();
    log::info!("model: {:?} variant, {parameters} parameters, device {}", cfg.variant, device_name(opts.device));

    let mut records = Vec::new();
    let mut start_epoch = 0;
    if let Some(dir) = dir {
        let resume_path = dir.resume_path();
        if opts.resume && resume_path.exists() {
            start_epoch = trainer.load_resume(&resume_path)?;
            records = dir.read_records_before(start_epoch)?;
            log::info!("resuming after epoch {start_epoch} from {}", resume_path.display());
        } else if opts.resume {
            log::warn!(
                "no complete epoch checkpoint yet ({} is missing): starting from epoch 1",
                resume_path.display()
            );
        }
        if opts.resume {
            write_run_files(dir)?;
        }
    }
    if let (0, Some(init)) = (start_epoch, &run.init) {
        let imported = match &opts.init_checkpoint {
            Some(read) => Rc::clone(read),
            None => Rc::new(crate::import::init::read(&init.weights, init.num_heads)?),
        };
        trainer.load_init(&crate::import::init::tensors_for(&imported, &cfg)?)?;
        log::info!("initial weights: {}", init.weights.display());
    }
    if let Some(group) = group {
        log::info!("rank {} of {}: training on {shard} images per epoch", group.rank(), group.world_size());
        trainer.join(group);
        start_epoch = trainer.sync_from_rank0(start_epoch)?;
    }
    if let Some(dir) = dir {
        dir.write_records(&records)?;
    }
    let mut events = RunEvents::open(dir.map(|d| d.path()));

    let t = &cfg.train;
    // Evaluation of the current weights; the last epoch always evaluates, so the summary reuses it.
    let mut last_eval = None;
    // Streamed files found unreadable in this process's epochs, counted once each in `skipped_files`. Every epoch
    // reads the whole training split and the last one evaluates, so a resumed run that trains on finds the same files.
    let mut unreadable = BTreeSet::new();
    let val_split: Split = resident.as_ref().map_or((&splits.val).into(), |r| (&r.val).into());
    for epoch in start_epoch..t.epochs {
        let epoch_start = Instant::now();
        let bar = progress_bar(opts.progress, trainer.steps_per_epoch(), epoch, t.epochs);
        let mut shown_loss = f64::NAN;
        let train_split: Split = resident.as_ref().map_or((&splits.train).into(), |r| (&r.train).into());
        let stats = trainer.train_epoch(train_split, epoch, |s| {
            if let Some(rec) = step_record(s, epoch) {
                bar.suspend(|| log_step(&rec));
                if let Record::Step { iter, loss, lr, .. } = rec {
                    events.scalars(iter as u64, &[("loss/train", loss), ("lr", lr)]);
                }
                records.push(rec);
            }
            shown_loss = s.loss.unwrap_or(shown_loss);
            bar.set_message(format!(
                "loss {:.4}  {:.0} img/s  data {:.0} img/s, queue {}/{}",
                shown_loss,
                s.images as f64 / s.train_seconds.max(1e-9),
                s.data.images_per_sec,
                s.data.queued,
                s.data.capacity
            ));
            bar.inc(1);
        })?;
        bar.finish_and_clear();
        check_reads(run.allow_skipped, dir, epoch, "training", &stats.unreadable, &mut unreadable)?;
        if let Some(d) = stats.diverged {
            bail!(
                "training diverged: the loss became NaN or infinite {}; {}; lower --lr or set --grad-clip",
                d.describe(epoch, trainer.steps_per_epoch()),
                kept_checkpoint(dir, epoch)
            );
        }
        if !trainer.weights_finite() {
            bail!(
                "training diverged: the weights are no longer finite after epoch {}; {}; lower --lr or set --grad-clip",
                epoch + 1,
                kept_checkpoint(dir, epoch)
            );
        }
        let due = measured && ((epoch + 1) % t.eval_every == 0 || epoch + 1 == t.epochs);
        let best_so_far = records.iter().filter_map(Record::val_accuracy).fold(f64::NEG_INFINITY, f64::max);
        let eval = trainer.with_eval_weights(|tr| -> Result<Option<Evaluation>> {
            let eval = if due { Some(tr.evaluate(val_split)?) } else { None };
            let failed = eval.as_ref().map_or(&[][..], |e| &e.unreadable[..]);
            check_reads(run.allow_skipped, dir, epoch, "evaluation", failed, &mut unreadable)?;
            let rec = epoch_record(epoch, &stats, eval.as_ref(), epoch_start.elapsed().as_secs_f64());
            log_epoch(&rec, t.epochs);
            epoch_events(&mut events, &rec, (epoch + 1) * tr.steps_per_epoch());
            records.push(rec);
            let Some(dir) = dir else { return Ok(eval) };
            dir.write_records(&records)?;
            tr.save_weights(&dir.checkpoint_path(Checkpoint::Last))?;
            if eval.as_ref().is_some_and(|e| e.accuracy > best_so_far) {
                tr.save_weights(&dir.checkpoint_path(Checkpoint::Best))?;
            }
            Ok(eval)
        })?;
        if let Some(dir) = dir {
            trainer.save_resume(&dir.resume_path(), epoch + 1)?;
        }
        last_eval = eval;
    }

    // Only a resumed run that had already finished has no evaluation of its final weights yet.
    let eval = match last_eval {
        Some(eval) => Some(eval),
        None if measured => Some(trainer.with_eval_weights(|tr| tr.evaluate(val_split))?),
        None => None,
    };
    unreadable.extend(eval.iter().flat_map(|e| e.unreadable.iter().map(|s| s.path.clone())));
    let summary = summarize(&SummaryInputs {
        records: &records,
        eval: eval.as_ref(),
        splits: &splits,
        parameters,
        device: opts.device,
        wall_seconds: started.elapsed().as_secs_f64(),
        epochs: t.epochs,
        unreadable_streamed: unreadable.len(),
    });
    let Some(dir) = dir else { return Ok(summary) };
    dir.write_summary(&summary)?;
    if let Some(eval) = &eval {
        dir.write_confusion_csv(&eval.confusion, &splits.classes)?;
    }
    let confusion = eval.as_ref().map(|e| &e.confusion);
    crate::run::plots::write_run_plots(dir, &records, trainer.steps_per_epoch(), confusion, &splits.classes)?;
    Ok(summary)
}

/// An epoch's record as TensorBoard scalars at the global step it ends on.
fn epoch_events(events: &mut RunEvents, rec: &Record, step: usize) {
    if let Record::Epoch { train_loss, val_loss, val_accuracy, train_images_per_sec, .. } = *rec {
        let mut scalars =
            vec![("loss/train_epoch", train_loss), ("throughput/train_images_per_sec", train_images_per_sec)];
        scalars.extend(val_loss.map(|v| ("loss/val", v)));
        scalars.extend(val_accuracy.map(|v| ("accuracy/val", v)));
        events.scalars(step as u64, &scalars);
    }
}

/// Stops the run when streamed images could not be read during `epoch`'s
/// `phase` (`failed`; they were fed as black images), before anything of the
/// epoch is saved; with `--allow-skipped` only warns, and adds their files to `seen`.
fn check_reads(
    allow_skipped: bool,
    dir: Option<&RunDir>,
    epoch: usize,
    phase: &str,
    failed: &[Skipped],
    seen: &mut BTreeSet<PathBuf>,
) -> Result<()> {
    if failed.is_empty() {
        return Ok(());
    }
    seen.extend(failed.iter().map(|s| s.path.clone()));
    let shown = failed.iter().take(3).map(|s| s.reason.as_str()).collect::<Vec<_>>().join("; ");
    if allow_skipped {
        log::warn!(
            "{} streamed images could not be read in epoch {} ({phase}), fed as black images: {shown}",
            failed.len(),
            epoch + 1
        );
        return Ok(());
    }
    bail!(
        "{} streamed images could not be read in epoch {} ({phase}): {shown}; {}; fix or remove them, or pass \
         --allow-skipped (with --resume) to train on with a black image in their place",
        failed.len(),
        epoch + 1,
        kept_checkpoint(dir, epoch)
    )
}

/// What a run stopped in `epoch` (0-based) keeps: nothing of the broken epoch is saved.
fn kept_checkpoint(dir: Option<&RunDir>, epoch: usize) -> String {
    match dir {
        _ if epoch == 0 => "no epoch completed, so no checkpoint was written".into(),
        Some(dir) => format!(
            "{} still holds epoch {}, the last good one",
            dir.checkpoint_path(Checkpoint::Last).display(),
            epoch
        ),
        None => format!("rank 0's run folder still holds epoch {epoch}, the last good one"),
    }
}

/// What every rank must have alike: the config, the run's data options and
/// the index of its data, the requested data mode and whether it resumes.
fn rank_facts(cfg: &ViTConfig, run: &RunOptions, requested: DataMode, resume: bool) -> RankFacts {
    let mut facts = RankFacts::new();
    facts.add_serialized("config", cfg);
    facts.add_serialized("run", run);
    // Paths may differ from node to node (what they hold is compared through run.data_index), and
    // `auto` may resolve differently on GPUs with different free memory (the batches' order is the same).
    for path_or_resolved in ["run.data", "run.init.weights", "run.data_mode"] {
        facts.remove(path_or_resolved);
    }
    facts.insert("data_mode", format!("{requested:?}"));
    facts.insert("resume", resume);
    facts
}

/// The record of a `log_every` point: the mean loss of the steps since the last
/// one in this epoch (summed on the device; see [`StepReport::loss`]).
fn step_record(s: &StepReport, epoch: usize) -> Option<Record> {
    s.loss.map(|loss| Record::Step { epoch, iter: s.step + 1, loss, lr: s.lr })
}

fn log_step(rec: &Record) {
    if let Record::Step { epoch, iter, loss, lr } = rec {
        log::info!("[epoch {:>3}, iter {:>6}] loss: {loss:.4}  lr: {lr:.2e}", epoch + 1, iter);
    }
}

fn epoch_record(epoch: usize, stats: &EpochStats, eval: Option<&Evaluation>, seconds: f64) -> Record {
    Record::Epoch {
        epoch,
        train_loss: stats.mean_loss(),
        val_loss: eval.map(|e| e.loss),
        val_accuracy: eval.map(|e| e.accuracy),
        train_images_per_sec: stats.images_per_sec(),
        seconds,
    }
}

fn log_epoch(rec: &Record, epochs: usize) {
    if let Record::Epoch { epoch, train_loss, val_loss, val_accuracy, train_images_per_sec, seconds } = rec {
        let val = match (val_loss, val_accuracy) {
            (Some(loss), Some(acc)) => format!(", val loss {loss:.4}, val accuracy {acc:.4}"),
            _ => String::new(),
        };
        log::info!(
            "epoch {}/{epochs}: train loss {train_loss:.4}{val}, {train_images_per_sec:.1} img/s, {seconds:.1}s",
            epoch + 1
        );
    }
}

fn progress_bar(enabled: bool, len: usize, epoch: usize, epochs: usize) -> ProgressBar {
    if !enabled {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(len as u64);
    if let Ok(style) = ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} {msg} ({eta})") {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_prefix(format!("epoch {}/{epochs}", epoch + 1));
    bar
}

/// What [`summarize`] condenses into `summary.json`.
#[derive(Debug, Clone, Copy)]
pub struct SummaryInputs<'a> {
    /// Every record of the run, resumed epochs included.
    pub records: &'a [Record],
    /// Evaluation of the final weights (`None`: no validation images).
    pub eval: Option<&'a Evaluation>,
    /// The data the run used.
    pub splits: &'a Splits,
    /// Trainable parameters.
    pub parameters: i64,
    /// Device trained on.
    pub device: Device,
    /// Wall time of the whole fit.
    pub wall_seconds: f64,
    /// Epochs trained.
    pub epochs: usize,
    /// Streamed files that could not be read during training or evaluation
    /// (each counted once), on top of the files skipped at load time.
    pub unreadable_streamed: usize,
}

/// The run's `summary.json`: final and best accuracy, mean throughput and the data's size.
pub fn summarize(inputs: &SummaryInputs) -> Summary {
    let (mut best, mut ips, mut n) = (None::<(f64, usize)>, 0.0, 0);
    for r in inputs.records {
        if let Record::Epoch { epoch, val_accuracy, train_images_per_sec, .. } = r {
            if let Some(acc) = val_accuracy.filter(|&a| best.map_or(true, |(b, _)| a > b)) {
                best = Some((acc, epoch + 1));
            }
            ips += train_images_per_sec;
            n += 1;
        }
    }
    let splits = inputs.splits;
    Summary {
        val_accuracy: inputs.eval.map(|e| e.accuracy),
        best_val_accuracy: best.map(|(acc, _)| acc),
        best_epoch: best.map(|(_, epoch)| epoch),
        confusion_matrix: inputs.eval.map(|e| e.confusion.matrix.clone()),
        labels: splits.classes.clone(),
        epochs: inputs.epochs,
        train_images_per_sec: if n > 0 { ips / n as f64 } else { 0.0 },
        skipped_files: splits.skipped() + inputs.unreadable_streamed,
        train_images: splits.train.len(),
        val_images: splits.val.len(),
        parameters: inputs.parameters,
        device: device_name(inputs.device),
        wall_seconds: inputs.wall_seconds,
    }
}
