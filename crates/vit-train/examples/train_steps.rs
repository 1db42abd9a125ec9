//! Training-step throughput of one run's network: times `Trainer::step`
//! (forward, loss, backward, clipping, optimiser update, weight average) on a
//! fixed synthetic batch at the run's batch size, the same work
//! `bench/pytorch_reference.py` times in PyTorch. Prints one JSON line.
//!
//! `cargo run -p vit-train --example train_steps -- --run runs/x --threads 2`
//! (scripts/bench-train.sh alternates it with the PyTorch reference).

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result};
use clap::Parser;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tch::Device;
use vit::ViTConfig;
use vit_train::data::batches::HostBatch;
use vit_train::train::trainer::Trainer;

/// Times training steps of a run's network.
#[derive(Debug, Parser)]
struct Args {
    /// Run folder (its config.toml; resume.safetensors is loaded when present).
    #[arg(long)]
    run: PathBuf,
    /// Timed steps.
    #[arg(long, default_value_t = 20)]
    steps: usize,
    /// Untimed steps first.
    #[arg(long, default_value_t = 3)]
    warmup: usize,
    /// libtorch intra-op threads (default: all cores).
    #[arg(long)]
    threads: Option<usize>,
    /// Attend with the fused `scaled_dot_product_attention` kernel (standard variant).
    #[arg(long)]
    fused_attention: bool,
    /// Train in this precision instead of the run's `train.precision` (fp32, bf16, fp16).
    #[arg(long)]
    precision: Option<vit::config::Precision>,
    /// Run Adam/AdamW as fused kernels (true) or per tensor (false) instead of
    /// the run's `train.fused_optimizer`.
    #[arg(long)]
    fused_optimizer: Option<bool>,
    /// Run the convolutions on channels-last tensors (`train.channels_last`).
    #[arg(long)]
    channels_last: bool,
    /// Make the optimiser capturable: fused, with its step count and learning rate on the device.
    #[arg(long)]
    capturable_optimizer: bool,
    /// Capture the step as a CUDA graph and replay it (`train.cuda_graph`; eager with a warning off CUDA).
    #[arg(long)]
    cuda_graph: bool,
    /// `cpu` or `cuda`.
    #[arg(long, default_value = "cpu")]
    device: String,
}

fn main() -> Result<()> {
    vit::cli_log::init();
    let a = Args::parse();
    let threads = a.threads.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    tch::set_num_threads(threads as i32);
    tch::set_num_interop_threads(1);
    let device = match a.device.as_str() {
        "cpu" => Device::Cpu,
        "cuda" => Device::Cuda(0),
        other => anyhow::bail!("--device {other}: expected cpu or cuda"),
    };
    vit_train::model::set_fused_attention(a.fused_attention);
    let config = a.run.join("config.toml");
    let mut cfg = ViTConfig::from_toml_file(&config).with_context(|| format!("reading {}", config.display()))?;
    if let Some(p) = a.precision {
        cfg.train.precision = p;
    }
    if let Some(f) = a.fused_optimizer {
        cfg.train.fused_optimizer = f;
    }
    cfg.train.channels_last |= a.channels_last;
    cfg.train.cuda_graph |= a.cuda_graph;
    let batch_size = cfg.train.batch_size;
    let mut trainer = Trainer::new(&cfg, device, batch_size * (a.steps + a.warmup), batch_size)?;
    let resume = a.run.join("resume.safetensors");
    if resume.exists() {
        trainer.load_resume(&resume)?;
    }
    if a.capturable_optimizer {
        trainer.make_optimizer_capturable();
    }

    let mut rng = ChaCha8Rng::seed_from_u64(0);
    let image_len = cfg.in_channels * cfg.image_size * cfg.image_size;
    let batch = HostBatch {
        pixels: (0..batch_size * image_len).map(|_| rng.random_range(-2.0f32..2.0)).collect(),
        labels: (0..batch_size).map(|_| rng.random_range(0..cfg.num_classes as i64)).collect(),
        mix_lam: None,
        unreadable: Vec::new(),
    };
    let lr = cfg.train.lr;
    // The step reads nothing back, so on a GPU it only queues work: the steps are
    // timed together up to one read of the last loss (which waits for them all).
    let finite = |loss: &tch::Tensor, when: &str| -> Result<()> {
        let v = vit_train::train::host_read::read_f64(loss, "train_steps: last loss");
        anyhow::ensure!(v.is_finite(), "loss {v} after the {when} steps");
        Ok(())
    };
    // With --cuda-graph the epoch loop's step (warm-up, capture, replay); its loss stays in the trainer.
    let one = |trainer: &mut Trainer| -> Result<Option<tch::Tensor>> {
        if a.cuda_graph {
            trainer.train_step(&batch, lr)?;
            return Ok(None);
        }
        Ok(Some(trainer.step(&batch, lr)?))
    };
    for _ in 0..a.warmup {
        if let Some(loss) = one(&mut trainer)? {
            finite(&loss, "warm-up")?;
        }
    }
    let mut times = Vec::with_capacity(a.steps);
    let started = Instant::now();
    let mut loss = None;
    for _ in 0..a.steps {
        let issued = Instant::now();
        loss = one(&mut trainer)?;
        times.push(issued.elapsed().as_secs_f64());
    }
    match &loss {
        Some(loss) => finite(loss, "timed")?,
        None => anyhow::ensure!(trainer.weights_finite(), "weights not finite after the timed steps"),
    }
    let total = started.elapsed().as_secs_f64();
    times.sort_by(f64::total_cmp);
    // Host time per step call: on the CPU the step itself, on a GPU the time to queue it.
    let median = times.get(times.len() / 2).copied().unwrap_or(f64::NAN);
    let json = serde_json::json!({
        "run": a.run,
        "variant": format!("{:?}", cfg.variant).to_lowercase(),
        "threads": threads,
        "batch_size": batch_size,
        "steps": a.steps,
        "fused_attention": a.fused_attention,
        "fused_optimizer": cfg.train.fused_optimizer,
        "channels_last": cfg.train.channels_last,
        "capturable_optimizer": a.capturable_optimizer,
        "cuda_graph": a.cuda_graph,
        "precision": format!("{:?}", cfg.train.precision).to_lowercase(),
        "device": a.device,
        "step_ms_median": median * 1e3,
        "step_ms_mean": total / a.steps.max(1) as f64 * 1e3,
        "images_per_sec": (a.steps * batch_size) as f64 / total,
    });
    println!("{json}");
    Ok(())
}
