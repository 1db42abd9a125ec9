//! Inference latency and throughput of one exported model, ONNX Runtime (the
//! `vit` crate's `Classifier`, as `vit-infer` runs it) against tract, on the
//! same seeded normalised inputs: p50/p99 latency at batch 1 and images/s at a
//! large batch. Preprocessing is not timed (it is the same code for both). A
//! raw-pixel model is fed seeded u8 pixels instead (ONNX Runtime only).
//!
//! `cargo run -p vit-train --example infer_latency -- --model runs/demo/model.onnx`
//! (scripts/bench-infer.sh adds the cold-start time and the binary size).

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result};
use clap::Parser;
use tract_onnx::prelude::*;
use vit::infer::{Classifier, ClassifierOptions, Provider};

/// Latency of ort vs tract on one ONNX model.
#[derive(Debug, Parser)]
struct Args {
    /// Exported model.
    #[arg(long, default_value = "runs/demo/model.onnx")]
    model: PathBuf,
    /// Timed runs at batch 1 (after 20 warm-up runs).
    #[arg(long, default_value_t = 500)]
    iters: usize,
    /// Batch size of the throughput measurement.
    #[arg(long, default_value_t = 64)]
    batch: usize,
    /// Timed runs at the large batch (after 3 warm-up runs).
    #[arg(long, default_value_t = 30)]
    batch_iters: usize,
    /// ONNX Runtime intra-op threads (default: one per core).
    #[arg(long)]
    threads: Option<usize>,
    /// ONNX Runtime execution provider: cpu, cuda or auto.
    #[arg(long, default_value = "cpu")]
    ep: Provider,
    /// Time ONNX Runtime only (tract runs on the CPU, which says nothing about a GPU).
    #[arg(long)]
    no_tract: bool,
    /// Also print one JSON line per engine (`engine`, `provider`, `p50_ms`, `p99_ms`, `mean_ms`, `batch`, `images_per_sec`).
    #[arg(long)]
    json: bool,
}

/// Something that maps `batch` normalised images to logits.
type Runner<'a> = Box<dyn FnMut(&[f32], usize) -> Result<Vec<f32>> + 'a>;

/// Milliseconds of each call of `run` on `input`.
fn time_calls(run: &mut Runner<'_>, input: &[f32], batch: usize, warmup: usize, iters: usize) -> Result<Vec<f64>> {
    for _ in 0..warmup {
        run(input, batch)?;
    }
    let mut ms = Vec::with_capacity(iters);
    for _ in 0..iters {
        let t = Instant::now();
        run(input, batch)?;
        ms.push(t.elapsed().as_secs_f64() * 1e3);
    }
    Ok(ms)
}

/// The `q` quantile (nearest rank) of sorted values.
fn quantile(sorted: &[f64], q: f64) -> f64 {
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

/// A tract plan of the model at a fixed batch size.
fn tract_runner(model: &std::path::Path, shape: [usize; 4]) -> Result<Runner<'static>> {
    let plan = tract_onnx::onnx()
        .model_for_path(model)?
        .with_input_fact(0, f32::fact(shape).into())?
        .into_optimized()?
        .into_runnable()?;
    Ok(Box::new(move |pixels: &[f32], _batch: usize| {
        let input = tract_ndarray::Array4::from_shape_vec(shape, pixels.to_vec())?.into_tensor();
        let out = plan.run(tvec!(input.into()))?;
        Ok(out[0].to_plain_array_view::<f32>()?.iter().copied().collect())
    }))
}

fn main() -> Result<()> {
    let args = Args::parse();
    let opts = ClassifierOptions { provider: args.ep, intra_threads: args.threads, ..Default::default() };
    let clf = Classifier::open(&args.model, &opts).with_context(|| format!("cannot open {}", args.model.display()))?;
    let prep = clf.preprocessor().clone();
    let (c, s) = (prep.channels, prep.image_size);
    // Seeded pseudo-random normalised pixels in [-1, 1).
    let mut state = 0x9e3779b97f4a7c15u64;
    let mut next = || {
        state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (state >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    };
    let big: Vec<f32> = (0..args.batch * prep.image_len()).map(|_| next()).collect();
    let one = &big[..prep.image_len()];
    println!(
        "model {} ({}x{}x{}), {} classes, ort provider {}",
        args.model.display(),
        c,
        s,
        s,
        clf.labels().len(),
        clf.provider()
    );

    let raw = clf.format().input == vit::format::InputKind::Uint8Nhwc;
    let big_u8: Vec<u8> = big.iter().map(|v| ((v + 1.0) * 127.5) as u8).collect();
    let clf = std::cell::RefCell::new(clf);
    // A raw-pixel model gets the same images as u8, prepared before the clock starts.
    let run = |p: &[f32], b: usize| -> Result<Vec<f32>> {
        let mut clf = clf.borrow_mut();
        Ok(if raw { clf.logits_u8(&big_u8[..p.len()], b)? } else { clf.logits(p, b)? })
    };
    let ort_single: Runner<'_> = Box::new(run);
    let ort_batched: Runner<'_> = Box::new(run);
    let provider = clf.borrow().provider();
    let mut backends: Vec<(&str, Runner<'_>, Runner<'_>)> = vec![("ort", ort_single, ort_batched)];
    if !args.no_tract && !raw {
        backends.push((
            "tract",
            tract_runner(&args.model, [1, c, s, s])?,
            tract_runner(&args.model, [args.batch, c, s, s])?,
        ));
    }
    let mut reference: Option<Vec<f32>> = None;
    println!(
        "{:<6} {:>12} {:>12} {:>12} {:>16}",
        "engine",
        "p50 ms (b1)",
        "p99 ms (b1)",
        "mean ms (b1)",
        format!("img/s (b{})", args.batch)
    );
    for (name, mut single, mut batched) in backends {
        let logits = batched(&big, args.batch)?;
        let diff = reference.as_ref().map(|r| r.iter().zip(&logits).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max));
        reference.get_or_insert(logits);
        let mut ms = time_calls(&mut single, one, 1, 20, args.iters)?;
        ms.sort_by(f64::total_cmp);
        let mean = ms.iter().sum::<f64>() / ms.len() as f64;
        let batch_ms = time_calls(&mut batched, &big, args.batch, 3, args.batch_iters)?;
        let ips = (args.batch * batch_ms.len()) as f64 / (batch_ms.iter().sum::<f64>() / 1e3);
        let (p50, p99) = (quantile(&ms, 0.5), quantile(&ms, 0.99));
        println!("{name:<6} {p50:>12.3} {p99:>12.3} {mean:>12.3} {ips:>16.0}");
        if args.json {
            let provider = if name == "ort" { provider.to_string() } else { "cpu".into() };
            let line = serde_json::json!({ "engine": name, "provider": provider, "p50_ms": p50, "p99_ms": p99,
                "mean_ms": mean, "batch": args.batch, "images_per_sec": ips });
            println!("{line}");
        }
        if let Some(d) = diff {
            println!("       max |ort - {name}| over the batch-{} logits: {d:.2e}", args.batch);
        }
    }
    Ok(())
}
