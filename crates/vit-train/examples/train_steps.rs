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
    let batch_size = cfg.train.batch_size;
    let mut trainer = Trainer::new(&cfg, device, batch_size * (a.steps + a.warmup), batch_size)?;
    let resume = a.run.join("resume.safetensors");
    if resume.exists() {
        trainer.load_resume(&resume)?;
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
    let mut times = Vec::with_capacity(a.steps);
    for i in 0..a.warmup + a.steps {
        let started = Instant::now();
        let loss = trainer.step(&batch, lr)?;
        anyhow::ensure!(loss.is_finite(), "step {i}: loss {loss}");
        if i >= a.warmup {
            times.push(started.elapsed().as_secs_f64());
        }
    }
    let total: f64 = times.iter().sum();
    times.sort_by(f64::total_cmp);
    let median = times[times.len() / 2];
    let json = serde_json::json!({
        "run": a.run,
        "variant": format!("{:?}", cfg.variant).to_lowercase(),
        "threads": threads,
        "batch_size": batch_size,
        "steps": a.steps,
        "fused_attention": a.fused_attention,
        "fused_optimizer": cfg.train.fused_optimizer,
        "channels_last": cfg.train.channels_last,
        "precision": format!("{:?}", cfg.train.precision).to_lowercase(),
        "device": a.device,
        "step_ms_median": median * 1e3,
        "images_per_sec": (a.steps * batch_size) as f64 / total,
    });
    println!("{json}");
    Ok(())
}
