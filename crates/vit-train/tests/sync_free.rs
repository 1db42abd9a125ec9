//! The training step reads nothing back from the device: the loss is summed
//! there and read only at `log_every` points and once at the epoch's end, all
//! through `train::host_read`, whose counter these tests check. The logged
//! means are the same to the bit as the per-step losses averaged on the host,
//! and a diverging run names the steps between two checks.

mod common;

use common::{seeded_rng, standard};
use tch::Device;
use vit::config::{Optimizer, Pooling, TrainConfig, ViTConfig};
use vit::data::Dataset;
use vit_train::train::host_read;
use vit_train::train::trainer::Trainer;

/// `n` images of `cfg`'s size with seeded pixels and labels 0..5 in turn.
fn data(cfg: &ViTConfig, n: usize) -> Dataset {
    let image_len = cfg.in_channels * cfg.image_size * cfg.image_size;
    let mut x = 12345u64;
    let pixels = (0..n * image_len)
        .map(|_| {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (x >> 56) as u8
        })
        .collect();
    Dataset { pixels, labels: (0..n as i64).map(|i| i % 5).collect(), image_len, ..Default::default() }
}

fn config(log_every: usize, lr: f64) -> ViTConfig {
    let mut cfg = standard(16, 4, 3, 2, 2, Pooling::Mean);
    cfg.train = TrainConfig {
        batch_size: 4,
        epochs: 2,
        lr,
        optimizer: Optimizer::Adamw,
        weight_decay: 0.05,
        grad_clip: 1.0,
        ema_decay: 0.9,
        log_every,
        ..Default::default()
    };
    cfg
}

/// Per step: (global step, logged loss); and the host reads the epoch made.
fn epoch(tr: &mut Trainer, data: &Dataset, e: usize) -> (Vec<(usize, Option<f64>)>, u64, f64) {
    let before = host_read::count();
    let mut steps = Vec::new();
    let stats = tr.train_epoch(data, e, |s| steps.push((s.step, s.loss))).expect("epoch");
    assert!(stats.diverged.is_none(), "{:?}", stats.diverged);
    (steps, host_read::count() - before, stats.loss_sum)
}

#[test]
fn an_epoch_reads_the_device_only_at_log_points_and_at_its_end() {
    let _rng = seeded_rng(0);
    let cfg = config(3, 1e-3);
    // 38 images in batches of 4: 10 steps per epoch, the last one of 2 images.
    let data = data(&cfg, 38);
    let mut tr = Trainer::new(&cfg, Device::Cpu, data.len(), 8).unwrap();
    for e in 0..2 {
        let (steps, reads, loss_sum) = epoch(&mut tr, &data, e);
        assert_eq!(steps.len(), 10);
        let logged: Vec<usize> = steps.iter().filter(|(_, l)| l.is_some()).map(|(s, _)| *s).collect();
        let want: Vec<usize> = (e * 10..e * 10 + 10).filter(|s| (s + 1) % 3 == 0).collect();
        assert_eq!(logged, want, "epoch {e}: log points");
        assert_eq!(reads, want.len() as u64 + 1, "epoch {e}: one read per log point and one at the end");
        assert!(loss_sum.is_finite() && loss_sum > 0.0, "{loss_sum}");
    }
    // The step alone reads nothing.
    let before = host_read::count();
    let batch = vit_train::data::batches::HostBatch {
        pixels: vec![0.5; 4 * data.image_len],
        labels: vec![0, 1, 2, 3],
        mix_lam: None,
        unreadable: Vec::new(),
    };
    for _ in 0..5 {
        let _loss = tr.step(&batch, 1e-3).unwrap();
    }
    assert_eq!(host_read::count(), before, "a training step read a device value on the host");
}

#[test]
fn logged_means_equal_the_per_step_losses_averaged_on_the_host() {
    let _rng = seeded_rng(0);
    let data = data(&config(1, 1e-3), 38);
    let run = |log_every: usize| {
        let mut tr = Trainer::new(&config(log_every, 1e-3), Device::Cpu, data.len(), 8).unwrap();
        let (steps, _, loss_sum) = epoch(&mut tr, &data, 0);
        (steps, loss_sum)
    };
    let (every, sum_every) = run(1);
    let (by4, sum_by4) = run(4);
    assert_eq!(sum_every.to_bits(), sum_by4.to_bits(), "epoch sums differ: {sum_every} {sum_by4}");
    let losses: Vec<f64> = every.iter().map(|(_, l)| l.expect("log_every 1 logs every step")).collect();
    for (step, logged) in by4.iter().filter_map(|(s, l)| l.map(|l| (*s, l))) {
        let window = &losses[step + 1 - 4..=step];
        let mean = window.iter().fold(0.0, |a, b| a + b) / 4.0;
        assert_eq!(logged.to_bits(), mean.to_bits(), "step {step}: logged {logged}, host mean {mean}");
    }
}

#[test]
fn a_diverging_epoch_names_the_steps_between_two_checks() {
    let _rng = seeded_rng(0);
    let cfg = config(4, 1e6);
    let data = data(&cfg, 38);
    let mut tr = Trainer::new(&cfg, Device::Cpu, data.len(), 8).unwrap();
    let mut seen = 0;
    let stats = tr.train_epoch(&data, 0, |_| seen += 1).unwrap();
    let d = stats.diverged.expect("lr 1e6 must diverge");
    let (first, last) = d.steps;
    assert!(first <= last && last - first < 4, "{d:?}");
    assert!((last + 1) % 4 == 0 || last == 9, "checked at a log point or the epoch end: {d:?}");
    assert_eq!(seen, last, "on_step sees every step before the one whose check failed");
    let text = d.describe(0, 10);
    assert!(text.starts_with("at epoch 1, step "), "{text}");
}
