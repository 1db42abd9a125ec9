//! Command-line interface of `vit-train` (clap derive). `main` only parses and
//! calls [`run`]; every flag that overrides a config value says which.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand, ValueEnum};
use tch::Device;
use vit::config::Optimizer;
use vit::flags::finite_f64;
use vit::ViTConfig;

use crate::export::weights::{export_weights, WeightsExportRequest};
use crate::export::{export_in, ExportRequest, DEFAULT_ATOL, DEFAULT_VERIFY_IMAGES};
use crate::import::ImportOptions;
use crate::run::dir::{Checkpoint, RunDir};

/// Train, evaluate and export Vision Transformers (tch / libtorch).
#[derive(Debug, Parser)]
#[command(name = "vit-train", version, about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Sub-commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Train a ViT on an image folder or IDX data set, evaluate it each epoch, export ONNX.
    Fit(Box<FitArgs>),
    /// Export a run's checkpoint to ONNX and verify it against tch with tract.
    Export(ExportArgs),
    /// Write a few validation images as PNG (`<index>_<label>.png`), as the model sees them.
    Samples(SamplesArgs),
    /// Pack an image folder into WebDataset tar shards that `fit --data` reads.
    Shards(shards::ShardsArgs),
}

/// `vit-train samples` flags.
#[derive(Debug, Args)]
pub struct SamplesArgs {
    /// Run folder whose config gives size and channels.
    #[arg(long)]
    pub run: PathBuf,
    /// Data set (default: the run's).
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Output folder.
    #[arg(long)]
    pub out: PathBuf,
    /// Number of images.
    #[arg(long, default_value_t = 8)]
    pub count: usize,
}

/// `vit-train fit` flags.
#[derive(Debug, Args)]
pub struct FitArgs {
    /// Model preset (TOML), e.g. models/fashion-mnist.toml (not needed with --resume).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Data: DIR/CLASS/*.jpg, DIR/{train,val}/CLASS/*.jpg, a folder of IDX files, or a folder of
    /// tar shards (not needed with --resume).
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Run folder for config, metrics, checkpoints, plots and model.onnx.
    #[arg(long)]
    pub out: PathBuf,
    /// Start from a timm or Hugging Face checkpoint (`.safetensors` or a `save_pretrained`
    /// folder): its architecture, with --config's image size, preprocessing and recipe
    /// (position embeddings resampled, a head for another class count re-initialised).
    #[arg(long, conflicts_with = "resume")]
    pub init: Option<PathBuf>,
    /// With --init: attention heads, when the checkpoint's config.json does not say.
    #[arg(long, requires = "init")]
    pub num_heads: Option<usize>,
    /// Train only the head (and `fc_norm` with avg pooling); every other tensor stays as initialised.
    #[arg(long)]
    pub freeze_backbone: bool,
    /// timm's layer-wise lr decay, e.g. 0.75: block i's lr is scaled by DECAY^(depth - i).
    #[arg(long, value_name = "DECAY", value_parser = finite_f64)]
    pub layer_decay: Option<f64>,
    /// Continue the run in --out from its last completed epoch (--epochs may extend it).
    #[arg(long)]
    pub resume: bool,
    /// Override train.epochs.
    #[arg(long)]
    pub epochs: Option<usize>,
    /// Override train.batch_size.
    #[arg(long)]
    pub batch_size: Option<usize>,
    /// Override train.lr (peak learning rate).
    #[arg(long, value_parser = finite_f64)]
    pub lr: Option<f64>,
    /// Override train.optimizer.
    #[arg(long, value_enum)]
    pub optimizer: Option<OptimizerArg>,
    /// Override train.precision: fp32, bf16 (autocast) or fp16 (autocast and loss scaling; CUDA only).
    #[arg(long)]
    pub precision: Option<vit::config::Precision>,
    /// Override train.fused_attention (alone: true): scaled_dot_product_attention in training.
    #[arg(long, value_name = "true|false", num_args = 0..=1, default_missing_value = "true")]
    pub fused_attention: Option<bool>,
    /// Override train.fused_optimizer (alone: true): one fused Adam/AdamW kernel per parameter group.
    #[arg(long, value_name = "true|false", num_args = 0..=1, default_missing_value = "true")]
    pub fused_optimizer: Option<bool>,
    /// Override train.channels_last (alone: true): convolutions on NHWC tensors.
    #[arg(long, value_name = "true|false", num_args = 0..=1, default_missing_value = "true")]
    pub channels_last: Option<bool>,
    /// Override train.cuda_graph (alone: true): capture the training step as a CUDA graph and replay it
    /// (CUDA only; elsewhere training is eager, with one warning).
    #[arg(long, value_name = "true|false", num_args = 0..=1, default_missing_value = "true")]
    pub cuda_graph: Option<bool>,
    /// Override train.sync_batch_norm (alone: true): under torchrun, BatchNorm statistics of the
    /// global batch (false: each rank's own batch, as DDP without SyncBatchNorm).
    #[arg(long, value_name = "true|false", num_args = 0..=1, default_missing_value = "true")]
    pub sync_batch_norm: Option<bool>,
    /// Override train.betas.0.
    #[arg(long, value_parser = finite_f64)]
    pub beta1: Option<f64>,
    /// Override train.betas.1.
    #[arg(long, value_parser = finite_f64)]
    pub beta2: Option<f64>,
    /// Override train.weight_decay.
    #[arg(long, value_parser = finite_f64)]
    pub weight_decay: Option<f64>,
    /// Override train.warmup_epochs.
    #[arg(long, value_parser = finite_f64)]
    pub warmup_epochs: Option<f64>,
    /// Override train.label_smoothing.
    #[arg(long, value_parser = finite_f64)]
    pub label_smoothing: Option<f64>,
    /// Override train.grad_clip (0 disables).
    #[arg(long, value_parser = finite_f64)]
    pub grad_clip: Option<f64>,
    /// Override train.crop_scale with [MIN, 1] (random resized crop; 1 disables).
    #[arg(long, value_name = "MIN", value_parser = finite_f64)]
    pub crop_scale: Option<f64>,
    /// Override train.color_jitter (brightness/contrast/saturation strength; 0 disables).
    #[arg(long, value_parser = finite_f64)]
    pub color_jitter: Option<f64>,
    /// Override train.mixup_alpha (0 disables).
    #[arg(long, value_parser = finite_f64)]
    pub mixup_alpha: Option<f64>,
    /// Override train.cutmix_alpha (0 disables).
    #[arg(long, value_parser = finite_f64)]
    pub cutmix_alpha: Option<f64>,
    /// Override train.random_erasing (probability per image).
    #[arg(long, value_parser = finite_f64)]
    pub random_erasing: Option<f64>,
    /// Override train.ema_decay (weight average for evaluation and export; 0 disables).
    #[arg(long, value_parser = finite_f64)]
    pub ema_decay: Option<f64>,
    /// Override drop_path (stochastic depth rate of the last block; standard variant).
    #[arg(long, value_parser = finite_f64)]
    pub drop_path: Option<f64>,
    /// Override train.eval_every (epochs between validation passes; the last epoch is always evaluated).
    #[arg(long)]
    pub eval_every: Option<usize>,
    /// Override test_time_flip (alone: true): evaluation and the export average each
    /// image's logits with its mirror image's.
    #[arg(long, value_name = "true|false", num_args = 0..=1, default_missing_value = "true")]
    pub test_time_flip: Option<bool>,
    /// Override train.log_every (iterations between loss log lines).
    #[arg(long)]
    pub log_every: Option<usize>,
    /// Override train.seed (weights, shuffling, split, dropout).
    #[arg(long)]
    pub seed: Option<u64>,
    /// auto (CUDA when available), cpu, cuda or cuda:N.
    #[arg(long, default_value = "auto", value_parser = DeviceArg::parse)]
    pub device: DeviceArg,
    /// CPU threads for libtorch and data decoding (default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Use at most this many images per class in each split (quick runs).
    #[arg(long)]
    pub max_per_class: Option<usize>,
    /// Train on what can be read when entries of the data folder cannot be (dangling links,
    /// unreadable folders); each is reported and counted. Without it such data is an error.
    #[arg(long)]
    pub allow_skipped: bool,
    /// Validation fraction for a folder without train/ and val/ (default 0.2).
    #[arg(long, value_parser = finite_f64)]
    pub val_fraction: Option<f64>,
    /// Batch size for evaluation.
    #[arg(long, default_value_t = 256)]
    pub eval_batch_size: usize,
    /// Skip the ONNX export at the end.
    #[arg(long)]
    pub no_export: bool,
    /// No progress bar.
    #[arg(long)]
    pub quiet: bool,
    /// Data-parallel training under torchrun.
    #[command(flatten)]
    pub dist: dist::DistArgs,
    /// Data pipeline: --data-mode, --data-workers, --prefetch, --data-memory-budget.
    #[command(flatten)]
    pub data_pipeline: data::DataArgs,
}

/// `vit-train export` flags.
#[derive(Debug, Args)]
pub struct ExportArgs {
    /// Run folder written by `vit-train fit`.
    #[arg(long, required_unless_present = "weights", conflicts_with = "weights")]
    pub run: Option<PathBuf>,
    /// A timm or Hugging Face ViT checkpoint trained elsewhere (`.safetensors`, or a
    /// `save_pretrained` folder) to export instead of a run; its config is inferred.
    #[arg(long, requires = "out")]
    pub weights: Option<PathBuf>,
    /// With --weights: attention heads (else config.json, else timm's for the width).
    #[arg(long, requires = "weights")]
    pub num_heads: Option<usize>,
    /// With --weights: class names, one per line (else config.json's, else class_N).
    #[arg(long, requires = "weights")]
    pub labels: Option<PathBuf>,
    /// With --weights: a preset (TOML) giving preprocessing (the architecture is the checkpoint's).
    #[arg(long, requires = "weights")]
    pub config: Option<PathBuf>,
    /// Output ONNX file (default: RUN/model.onnx); config.json and
    /// preprocessor_config.json are written beside it.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Which checkpoint.
    #[arg(long, value_enum, default_value_t = Checkpoint::Last)]
    pub checkpoint: Checkpoint,
    /// Store weights as ONNX external data (`<out>.data`) whatever the size.
    #[arg(long)]
    pub external_data: bool,
    /// Absolute tolerance of the verification: |tch - tract| <= atol + 1e-4 * |tch| per logit.
    #[arg(long, default_value_t = DEFAULT_ATOL, value_parser = tolerance)]
    pub atol: f32,
    /// Validation images used for the verification.
    #[arg(long, default_value_t = DEFAULT_VERIFY_IMAGES)]
    pub verify_images: usize,
    /// Export with test_time_flip on (alone or true: the graph averages each image's logits
    /// with its mirror image's) or off (false), whatever the run's config says; a file that
    /// differs from the run's config records no val_accuracy.
    #[arg(long, value_name = "true|false", num_args = 0..=1, default_missing_value = "true")]
    pub test_time_flip: Option<bool>,
    /// Deployment format: --input, --precision, --quantize.
    #[command(flatten)]
    pub deploy: crate::export::deploy::DeployArgs,
}

/// `--optimizer` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OptimizerArg {
    /// Adam with L2 weight decay added to the gradient.
    Adam,
    /// AdamW: decoupled weight decay.
    Adamw,
}

impl From<OptimizerArg> for Optimizer {
    fn from(o: OptimizerArg) -> Self {
        match o {
            OptimizerArg::Adam => Optimizer::Adam,
            OptimizerArg::Adamw => Optimizer::Adamw,
        }
    }
}

/// `--device` values, checked against the machine by [`DeviceArg::resolve`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceArg {
    /// CUDA when available, else the CPU.
    Auto,
    /// The CPU.
    Cpu,
    /// A CUDA device (`cuda` is the first one).
    Cuda(Option<usize>),
}

impl DeviceArg {
    /// Parses `auto`, `cpu`, `cuda` or `cuda:N`.
    pub fn parse(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(Self::Auto),
            "cpu" => Ok(Self::Cpu),
            "cuda" => Ok(Self::Cuda(None)),
            _ => s
                .strip_prefix("cuda:")
                .and_then(|n| n.parse().ok())
                .map(|n| Self::Cuda(Some(n)))
                .ok_or_else(|| "expected auto, cpu, cuda or cuda:N".into()),
        }
    }

    /// The libtorch device; errors when CUDA is asked for and not available.
    pub fn resolve(self) -> Result<Device> {
        match self {
            Self::Auto => Ok(Device::cuda_if_available()),
            Self::Cpu => Ok(Device::Cpu),
            Self::Cuda(n) => {
                if !tch::Cuda::is_available() {
                    let name = n.map_or("cuda".to_string(), |n| format!("cuda:{n}"));
                    bail!(
                        "--device {name}: CUDA is not available (no GPU, or libtorch without CUDA); use --device cpu or auto"
                    );
                }
                Ok(Device::Cuda(n.unwrap_or(0)))
            }
        }
    }
}

/// `--threads` above this many times the available cores is refused: libtorch's
/// spinning OpenMP threads make an oversubscribed run crawl, or hang at 100000.
pub const MAX_THREADS_PER_CORE: usize = 4;

/// Parses `--atol`: a finite number, at least 0.
fn tolerance(s: &str) -> Result<f32, String> {
    match vit::flags::finite_f32(s)? {
        v if v >= 0.0 => Ok(v),
        v => Err(format!("{v} is negative; give a number of at least 0")),
    }
}

fn set_threads(threads: Option<usize>) -> Result<()> {
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let n = threads.unwrap_or(cores);
    if n == 0 {
        bail!("--threads 0: need at least 1");
    }
    let limit = MAX_THREADS_PER_CORE * cores;
    if n > limit {
        bail!("--threads {n}: at most {limit} ({MAX_THREADS_PER_CORE} x the {cores} available cores)");
    }
    tch::set_num_threads(n as i32);
    tch::set_num_interop_threads(1);
    // The global pool may already exist (tests); that is fine.
    let _ = rayon::ThreadPoolBuilder::new().num_threads(n).build_global();
    Ok(())
}

/// Runs a parsed command line.
pub fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Fit(a) => run_fit(&a),
        Command::Shards(a) => shards::run_shards(&a),
        Command::Samples(a) => {
            let dir = RunDir::inspect(&a.run)?;
            let (cfg, _) =
                dir.read_trained().with_context(|| format!("{} is not a vit-train run folder", a.run.display()))?;
            let data = match a.data {
                Some(d) => d,
                None => dir.read_run_options().context("pass --data")?.data,
            };
            for f in crate::run::samples::write_samples(&cfg, &data, &a.out, a.count)? {
                println!("{}", f.display());
            }
            Ok(())
        }
        Command::Export(a) => {
            a.deploy.check()?;
            match (&a.run, &a.weights) {
                (_, Some(_)) if !a.deploy.format().is_default() => {
                    bail!("--input, --precision and --quantize apply to run folders only (export --run); --weights writes float32 input, fp32")
                }
                (_, Some(weights)) => export_weights_and_print(&a, weights),
                (Some(run), None) => {
                    let req = ExportRequest {
                        run: run.clone(),
                        out: a.out,
                        checkpoint: a.checkpoint,
                        external_data: a.external_data,
                        atol: a.atol,
                        verify_images: a.verify_images,
                        test_time_flip: a.test_time_flip,
                        format: a.deploy.format(),
                        int8: a.deploy.int8(),
                    };
                    export_and_print(&RunDir::open(&req.run)?, &req)
                }
                (None, None) => bail!("pass --run or --weights"),
            }
        }
    }
}

/// `vit-train export --weights`: import a foreign checkpoint, export, verify.
fn export_weights_and_print(a: &ExportArgs, weights: &std::path::Path) -> Result<()> {
    let base = a.config.as_deref().map(ViTConfig::from_toml_file).transpose()?;
    let labels = match &a.labels {
        Some(path) => {
            let text = vit::files::read_text(path, "label list (--labels)")?;
            Some(text.lines().map(str::trim).filter(|l| !l.is_empty()).map(str::to_owned).collect())
        }
        None => None,
    };
    let req = WeightsExportRequest {
        weights: weights.to_path_buf(),
        out: a.out.clone().context("--out is required with --weights")?,
        import: ImportOptions { num_heads: a.num_heads, base, labels, test_time_flip: a.test_time_flip },
        external_data: a.external_data,
        atol: a.atol,
        verify_images: a.verify_images,
    };
    let report = export_weights(&req).context("export failed")?;
    println!(
        "exported {} ({:.1} KiB); tract vs tch on {} random images: max |diff| {:.2e}",
        report.path.display(),
        report.bytes as f64 / 1024.0,
        report.images,
        report.comparison.max_abs_diff
    );
    Ok(())
}

fn export_and_print(dir: &RunDir, req: &ExportRequest) -> Result<()> {
    let report = export_in(dir, req).context("export failed")?;
    if let Some(acc) = report.int8 {
        println!(
            "exported {} ({:.1} KiB, int8, calibrated on {} training images); validation accuracy on {} images: \
             float32 {:.4}, int8 {:.4} (drop {:.2} points); max |int8 - float32| logit {:.2e}",
            report.path.display(),
            report.bytes as f64 / 1024.0,
            acc.calibration_images,
            acc.images,
            acc.float,
            acc.int8,
            acc.drop_points(),
            report.comparison.max_abs_diff
        );
        return Ok(());
    }
    println!(
        "exported {} ({:.1} KiB); tract vs tch on {} {} images: max |diff| {:.2e}",
        report.path.display(),
        report.bytes as f64 / 1024.0,
        report.images,
        if report.real_images { "validation" } else { "random" },
        report.comparison.max_abs_diff
    );
    Ok(())
}

mod data;
mod dist;
mod fit;
mod shards;

use fit::{new_run_options, resume_config, run_fit};
pub use fit::{resolve_config, DEFAULT_VAL_FRACTION};

#[cfg(test)]
mod tests;
