//! `vit-train fit`: the training loop and the run folder it fills.
//!
//! Run folder: `config.toml` (resolved), `run.json` (data options, for --resume),
//! `labels.json`, `metrics.jsonl`, `summary.json`, `last.safetensors`,
//! `best.safetensors`, `resume.safetensors`, `loss.png`, `confusion.png`,
//! `confusion.csv`. Checkpoints are written at the end of every epoch;
//! `--resume` restarts from the last completed epoch with weights, Adam moments
//! (and the weight average, when the recipe keeps one) and the data order of
//! the next epoch, so it reaches the same result.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use serde::{Deserialize, Serialize};
use tch::{nn, nn::ModuleT, Device, Kind, Tensor};
use vit::data::{load_splits, LoadOptions, Splits};
use vit::{Preprocessor, ViTConfig};

use crate::batches::{for_each_train_batch, Augment};
use crate::checkpoint;
use crate::ema::Ema;
use crate::evaluate::{evaluate, to_device};
use crate::metrics::{read_records, write_records, Record, Summary};
use crate::model::{parameter_count, ViT};
use crate::optim::{learning_rate, Adam};

/// Data and run options of `fit` (saved as `run.json` for `--resume`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunOptions {
    /// Data folder.
    pub data: PathBuf,
    /// Validation fraction for folders without train/val.
    pub val_fraction: f64,
    /// Cap on images per class and split.
    pub max_per_class: Option<usize>,
}

/// Everything `fit` needs.
#[derive(Debug, Clone)]
pub struct FitOptions {
    /// Data options.
    pub run: RunOptions,
    /// Run folder.
    pub out: PathBuf,
    /// Device to train on.
    pub device: Device,
    /// Continue the run in `out`.
    pub resume: bool,
    /// Batch size for evaluation.
    pub eval_batch: usize,
    /// Print progress.
    pub progress: bool,
}

/// The resolved device for `auto`, `cpu`, `cuda`, `cuda:N`.
pub fn parse_device(s: &str) -> Result<Device> {
    match s {
        "auto" => Ok(Device::cuda_if_available()),
        "cpu" => Ok(Device::Cpu),
        "cuda" if tch::Cuda::is_available() => Ok(Device::Cuda(0)),
        s if s.starts_with("cuda") => {
            if !tch::Cuda::is_available() {
                bail!(
                    "--device {s}: CUDA is not available (no GPU, or libtorch without CUDA); use --device cpu or auto"
                );
            }
            let n: usize =
                s.trim_start_matches("cuda:").parse().with_context(|| format!("--device {s}: expected cuda:N"))?;
            Ok(Device::Cuda(n))
        }
        other => bail!("--device {other}: expected auto, cpu, cuda or cuda:N"),
    }
}

/// Human name of a device.
pub fn device_name(d: Device) -> String {
    match d {
        Device::Cpu => "cpu".into(),
        Device::Cuda(n) => format!("cuda:{n}"),
        other => format!("{other:?}").to_lowercase(),
    }
}

fn write_json(path: &Path, value: &impl Serialize) -> Result<()> {
    let text = serde_json::to_string_pretty(value)?;
    std::fs::write(path, text + "\n").with_context(|| format!("cannot write {}", path.display()))
}

/// Loads the data a run uses and fixes `num_classes` in the config.
pub fn load_data(cfg: &mut ViTConfig, run: &RunOptions) -> Result<Splits> {
    let prep = Preprocessor::from_config(cfg);
    let opts = LoadOptions { val_fraction: run.val_fraction, seed: cfg.train.seed, max_per_class: run.max_per_class };
    let splits = load_splits(&run.data, &prep, &opts)?;
    if splits.train.is_empty() {
        bail!("no training images found in {}", run.data.display());
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

/// Trains `cfg` on the options' data, filling the run folder; returns the summary.
pub fn fit(mut cfg: ViTConfig, opts: &FitOptions) -> Result<Summary> {
    let started = Instant::now();
    let out = &opts.out;
    let mut run = opts.run.clone();
    let resume_path = out.join("resume.safetensors");
    if opts.resume {
        let text = std::fs::read_to_string(out.join("run.json")).context("--resume: run.json is missing")?;
        run = serde_json::from_str(&text).context("--resume: run.json is malformed")?;
    } else if resume_path.exists() {
        bail!("{} already holds a run; pass --resume to continue it or choose another --out", out.display());
    }
    std::fs::create_dir_all(out).with_context(|| format!("cannot create run folder {}", out.display()))?;

    let splits = load_data(&mut cfg, &run)?;
    let prep = Preprocessor::from_config(&cfg);
    eprintln!(
        "data: {} classes, {} train / {} val images, {} files skipped ({})",
        splits.classes.len(),
        splits.train.len(),
        splits.val.len(),
        splits.skipped(),
        run.data.display()
    );
    std::fs::write(out.join("config.toml"), cfg.to_toml()).context("cannot write config.toml")?;
    write_json(&out.join("run.json"), &run)?;
    write_json(&out.join("labels.json"), &splits.classes)?;

    tch::manual_seed(cfg.train.seed as i64);
    let mut vs = nn::VarStore::new(opts.device);
    let model = ViT::new(&vs.root(), &cfg);
    let mut opt = Adam::new(&vs, &cfg.train);
    let params = parameter_count(&vs);
    eprintln!("model: {:?} variant, {params} parameters, device {}", cfg.variant, device_name(opts.device));

    let mut ema = (cfg.train.ema_decay > 0.0).then(|| Ema::new(&vs, cfg.train.ema_decay));
    let metrics_path = out.join("metrics.jsonl");
    let mut records = Vec::new();
    let mut start_epoch = 0;
    if opts.resume && resume_path.exists() {
        let tensors = checkpoint::read_all(&resume_path)?;
        checkpoint::load_into(&mut vs, &resume_path, &tensors)?;
        opt.load_state(&tensors).map_err(|m| anyhow::anyhow!("{}: {m}", resume_path.display()))?;
        if let Some(ema) = &mut ema {
            ema.load_state(&tensors).map_err(|m| anyhow::anyhow!("{}: {m}", resume_path.display()))?;
        }
        start_epoch = tensors.get("train.epoch").map(|t| t.int64_value(&[0]) as usize).unwrap_or(0);
        records = read_records(&metrics_path).into_iter().filter(|r| r.epoch() < start_epoch).collect();
        eprintln!("resuming after epoch {start_epoch} from {}", resume_path.display());
    }
    write_records(&metrics_path, &records).context("cannot write metrics.jsonl")?;

    let t = &cfg.train;
    let steps_per_epoch = splits.train.len().div_ceil(t.batch_size);
    let total_steps = steps_per_epoch * t.epochs;
    let warmup = (t.warmup_epochs * steps_per_epoch as f64).round() as usize;
    let aug = Augment::from_train(t);
    let k = cfg.num_classes;
    // Evaluation of the current weights; the last epoch always evaluates, so the summary reuses it.
    let mut last_eval = None;

    for epoch in start_epoch..t.epochs {
        tch::manual_seed(t.seed as i64 + 1 + epoch as i64);
        let epoch_start = Instant::now();
        let bar = progress_bar(opts.progress, steps_per_epoch, epoch, t.epochs);
        let (mut window, mut window_n, mut epoch_loss, mut seen) = (0.0, 0usize, 0.0, 0usize);
        let mut train_secs = 0.0;
        for_each_train_batch(&splits.train, &prep, aug, t.batch_size, t.seed, epoch, |i, batch| {
            let step_start = Instant::now();
            let step = epoch * steps_per_epoch + i;
            let lr = learning_rate(t, step, warmup, total_steps);
            let (x, y) = to_device(&batch.pixels, &batch.labels, &prep, opts.device);
            let logits = model.forward_t(&x, true);
            let log_probs = logits.log_softmax(-1, Kind::Float);
            let ce = |y: &Tensor| {
                log_probs.cross_entropy_loss::<Tensor>(y, None, tch::Reduction::Mean, -100, t.label_smoothing)
            };
            let loss = match batch.mix_lam {
                // Mixed images: lam of the own label, 1 - lam of the partner's (the batch reversed).
                Some(lam) => ce(&y) * f64::from(lam) + ce(&y.flip([0])) * (1.0 - f64::from(lam)),
                None => ce(&y),
            };
            opt.zero_grad();
            loss.backward();
            if t.grad_clip > 0.0 {
                opt.clip_grad_norm(t.grad_clip);
            }
            opt.step(lr);
            if let Some(ema) = &mut ema {
                ema.update();
            }
            let l = loss.double_value(&[]);
            train_secs += step_start.elapsed().as_secs_f64();
            let n = batch.labels.len();
            (window, window_n) = (window + l, window_n + 1);
            (epoch_loss, seen) = (epoch_loss + l * n as f64, seen + n);
            if (step + 1) % t.log_every == 0 {
                let rec = Record::Step { epoch, iter: step + 1, loss: window / window_n as f64, lr };
                bar.suspend(|| {
                    eprintln!(
                        "[epoch {:>3}, iter {:>6}] loss: {:.4}  lr: {lr:.2e}",
                        epoch + 1,
                        step + 1,
                        window / window_n as f64
                    )
                });
                records.push(rec);
                (window, window_n) = (0.0, 0);
            }
            bar.set_message(format!("loss {l:.4}  {:.0} img/s", seen as f64 / train_secs.max(1e-9)));
            bar.inc(1);
            true
        });
        bar.finish_and_clear();
        if !epoch_loss.is_finite() {
            bail!("training diverged in epoch {} (loss is {epoch_loss}); lower --lr or add --grad-clip", epoch + 1);
        }
        // With a weight average, evaluation and last/best hold the average.
        if let Some(ema) = &mut ema {
            ema.swap();
        }
        let due = (epoch + 1) % t.eval_every == 0 || epoch + 1 == t.epochs;
        let eval = due.then(|| evaluate(&model, &splits.val, &prep, k, opts.device, opts.eval_batch));
        let (train_loss, ips, secs) =
            (epoch_loss / seen.max(1) as f64, seen as f64 / train_secs.max(1e-9), epoch_start.elapsed().as_secs_f64());
        let rec = Record::Epoch {
            epoch,
            train_loss,
            val_loss: eval.as_ref().map(|e| e.loss),
            val_accuracy: eval.as_ref().map(|e| e.accuracy),
            train_images_per_sec: ips,
            seconds: secs,
        };
        let val = match &eval {
            Some(e) => format!(", val loss {:.4}, val accuracy {:.4}", e.loss, e.accuracy),
            None => String::new(),
        };
        eprintln!("epoch {}/{}: train loss {train_loss:.4}{val}, {ips:.1} img/s, {secs:.1}s", epoch + 1, t.epochs);
        let best_so_far = records.iter().filter_map(Record::val_accuracy).fold(f64::NEG_INFINITY, f64::max);
        records.push(rec);
        write_records(&metrics_path, &records).context("cannot write metrics.jsonl")?;
        checkpoint::save_weights(&vs, &out.join("last.safetensors"))?;
        if eval.as_ref().is_some_and(|e| e.accuracy > best_so_far) {
            checkpoint::save_weights(&vs, &out.join("best.safetensors"))?;
        }
        if let Some(ema) = &mut ema {
            ema.swap();
        }
        let mut state = checkpoint::model_tensors(&vs);
        state.extend(opt.state_tensors());
        state.extend(ema.iter().flat_map(Ema::state_tensors));
        state.push(("train.epoch".into(), Tensor::from_slice(&[epoch as i64 + 1])));
        checkpoint::write_atomic(&resume_path, &state)?;
        last_eval = eval;
    }

    // Only a resumed run that had already finished has no evaluation of its final weights yet.
    let eval = match last_eval {
        Some(eval) => eval,
        None => {
            ema.iter_mut().for_each(Ema::swap);
            evaluate(&model, &splits.val, &prep, k, opts.device, opts.eval_batch)
        }
    };
    let summary = summarize(&records, &eval, &splits, params, opts.device, started.elapsed().as_secs_f64(), t.epochs);
    write_json(&out.join("summary.json"), &summary)?;
    std::fs::write(out.join("confusion.csv"), eval.confusion.to_csv(&splits.classes))
        .context("cannot write confusion.csv")?;
    crate::plots::write_run_plots(out, &records, &eval.confusion, &splits.classes)?;
    Ok(summary)
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

fn summarize(
    records: &[Record],
    eval: &crate::evaluate::Evaluation,
    splits: &Splits,
    params: i64,
    device: Device,
    wall: f64,
    epochs: usize,
) -> Summary {
    let (mut best, mut best_epoch, mut ips, mut n) = (0.0, 0, 0.0, 0);
    for r in records {
        if let Record::Epoch { epoch, val_accuracy, train_images_per_sec, .. } = r {
            if let Some(acc) = val_accuracy.filter(|&a| a > best) {
                (best, best_epoch) = (acc, epoch + 1);
            }
            ips += train_images_per_sec;
            n += 1;
        }
    }
    Summary {
        val_accuracy: eval.accuracy,
        best_val_accuracy: best,
        best_epoch,
        confusion_matrix: eval.confusion.matrix.clone(),
        labels: splits.classes.clone(),
        epochs,
        train_images_per_sec: if n > 0 { ips / n as f64 } else { 0.0 },
        skipped_files: splits.skipped(),
        train_images: splits.train.len(),
        val_images: splits.val.len(),
        parameters: params,
        device: device_name(device),
        wall_seconds: wall,
    }
}
