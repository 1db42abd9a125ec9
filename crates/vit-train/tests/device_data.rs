//! `--data-mode device`: the set kept in one u8 tensor and augmented by batched
//! tensor ops (here on the CPU; the same code runs on CUDA tensors). Batches
//! repeat per seed; each augmentation's statistics match the recipe, measured
//! from the pixels it produced (position-coded images reveal where each output
//! pixel came from); with no augmentation the normalisation is the
//! `Preprocessor`'s; and a short fit learns as memory mode does.

mod common;

use common::cli::*;
use common::*;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tch::Tensor;
use vit::data::Dataset;
use vit::{Preprocessor, ViTConfig};
use vit_train::data::augment::{Augment, MixKind};
use vit_train::data::resident::params::{col, BatchParams};
use vit_train::data::resident::ResidentSet;

/// Batches per statistics test and images per batch: 1,280 draws of each parameter.
const BATCHES: usize = 40;
const BATCH: usize = 32;

fn prep(side: usize, channels: usize) -> Preprocessor {
    let cfg = ViTConfig { image_size: side, in_channels: channels, ..Default::default() };
    let mut p = Preprocessor::from_config(&cfg);
    (p.mean, p.std) = (vec![0.485, 0.456, 0.406][..channels].to_vec(), vec![0.229, 0.224, 0.225][..channels].to_vec());
    p
}

/// `n` images of `channels` x `side` x `side` from `pixel(image, channel, row, column)`.
fn dataset(n: usize, channels: usize, side: usize, mut pixel: impl FnMut(usize, usize, usize, usize) -> u8) -> Dataset {
    let mut pixels = Vec::with_capacity(n * channels * side * side);
    for i in 0..n {
        for c in 0..channels {
            for y in 0..side {
                for x in 0..side {
                    pixels.push(pixel(i, c, y, x));
                }
            }
        }
    }
    let labels = (0..n as i64).map(|i| i % 5).collect();
    Dataset { pixels, labels, image_len: channels * side * side, ..Default::default() }
}

/// Image `i`: channel 0 holds row + 1, channel 1 column + 1 (0 only where padding came in), channel 2 the image index.
fn position_coded(n: usize, side: usize) -> Dataset {
    dataset(n, 3, side, |i, c, y, x| [y + 1, x + 1, i][c] as u8)
}

/// Undoes the normalisation: pixel values 0..=255 as f32, `[B, C, S, S]`.
fn pixels(batch: &Tensor, p: &Preprocessor) -> Tensor {
    let c = p.channels as i64;
    let mean = Tensor::from_slice(&p.mean).view([1, c, 1, 1]);
    let std = Tensor::from_slice(&p.std).view([1, c, 1, 1]);
    (batch * std + mean) * 255.0
}

fn value(t: &Tensor, idx: &[i64]) -> f64 {
    t.double_value(idx)
}

/// Every batch of `aug` over `set` (indices `0..BATCH`), each with its drawn parameters and its pixels.
fn batches(set: &ResidentSet, p: &Preprocessor, aug: &Augment, seed: u64) -> Vec<(BatchParams, Tensor, Option<f32>)> {
    batches_n(set, p, aug, seed, BATCHES)
}

/// [`batches`], `count` of them.
fn batches_n(
    set: &ResidentSet,
    p: &Preprocessor,
    aug: &Augment,
    seed: u64,
    count: usize,
) -> Vec<(BatchParams, Tensor, Option<f32>)> {
    let indices: Vec<usize> = (0..BATCH).collect();
    (0..count)
        .map(|b| {
            let params =
                BatchParams::draw(aug, p.image_size, BATCH, &mut vit_train::data::batches::batch_rng(seed, 0, b));
            let batch = set.augmented(&indices, aug, &params);
            let again = set.train_batch(&indices, aug, seed, 0, b);
            assert!(batch.pixels.equal(&again.pixels), "train_batch draws from the batch's RNG");
            (params, pixels(&batch.pixels, p), batch.mix_lam)
        })
        .collect()
}

const ALL: Augment = Augment {
    hflip: true,
    crop_padding: 3,
    crop_scale: (0.35, 1.0),
    from_original: false,
    color_jitter: 0.3,
    random_erasing: 0.5,
    mixup_alpha: 0.8,
    cutmix_alpha: 1.0,
};

#[test]
fn the_same_seed_gives_the_same_batches_and_another_seed_others() {
    let p = prep(16, 3);
    let mut rng = ChaCha8Rng::seed_from_u64(9);
    let data = dataset(48, 3, 16, |_, _, _, _| rng.random());
    let set = ResidentSet::upload(&data, &p, tch::Device::Cpu, "training").unwrap();
    let indices: Vec<usize> = (0..BATCH).map(|i| (i * 7) % 48).collect();
    for b in 0..4 {
        let one = set.train_batch(&indices, &ALL, 5, 1, b);
        let again = set.train_batch(&indices, &ALL, 5, 1, b);
        assert!(one.pixels.equal(&again.pixels) && one.mix_lam == again.mix_lam, "batch {b} did not repeat");
        assert!(one.labels.equal(&Tensor::from_slice(&indices.iter().map(|&i| (i % 5) as i64).collect::<Vec<_>>())));
        let other_seed = set.train_batch(&indices, &ALL, 6, 1, b);
        let other_batch = set.train_batch(&indices, &ALL, 5, 1, b + 1);
        let differ = |t: &Tensor| (t - &one.pixels).abs().max().double_value(&[]) > 0.1;
        assert!(
            differ(&other_seed.pixels) && differ(&other_batch.pixels),
            "batch {b}: another seed or batch must differ"
        );
    }
}

#[test]
fn without_augmentation_the_batches_are_the_preprocessors_normalisation() {
    let p = prep(8, 3);
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let data = dataset(10, 3, 8, |_, _, _, _| rng.random());
    let set = ResidentSet::upload(&data, &p, tch::Device::Cpu, "training").unwrap();
    let expected = Tensor::from_slice(&p.normalize(&data.pixels)).view([10, 3, 8, 8]);
    let eval = set.eval_batch(0..10);
    assert!((&eval.pixels - &expected).abs().max().double_value(&[]) <= 1e-6);
    let order = [3usize, 1, 4, 1, 5, 9, 2, 6];
    let train = set.train_batch(&order, &Augment::NONE, 0, 0, 0);
    let idx = Tensor::from_slice(&order.iter().map(|&i| i as i64).collect::<Vec<_>>());
    let diff = (&train.pixels - expected.index_select(0, &idx)).abs().max().double_value(&[]);
    assert!(diff <= 1e-6, "max difference {diff}");
    assert_eq!(train.mix_lam, None);
}

#[test]
fn with_flips_and_padded_crops_alone_the_batches_are_memory_modes() {
    // The host draws follow the CPU path's order (shift, then flip, per image, from the same batch RNG), and
    // integer shifts and flips are exact: the recipe of models/coco5-vit.toml gives memory mode's very batches.
    let p = prep(16, 3);
    let mut rng = ChaCha8Rng::seed_from_u64(4);
    let data = dataset(40, 3, 16, |_, _, _, _| rng.random());
    let set = ResidentSet::upload(&data, &p, tch::Device::Cpu, "training").unwrap();
    let aug = Augment { hflip: true, crop_padding: 6, ..Augment::NONE };
    for (b, indices) in vit_train::data::batches::epoch_batches(40, 16, 7, 2).iter().enumerate() {
        let rng = &mut vit_train::data::batches::batch_rng(7, 2, b);
        let host = vit_train::data::batches::make_batch(&data, indices, &p, aug, Some(rng));
        let resident = set.train_batch(indices, &aug, 7, 2, b);
        let shape = [indices.len() as i64, 3, 16, 16];
        let diff = (&resident.pixels - Tensor::from_slice(&host.pixels).view(shape)).abs().max().double_value(&[]);
        assert!(diff <= 1e-6, "batch {b}: device and memory batches differ by {diff}");
        assert_eq!(Vec::<i64>::try_from(&resident.labels).unwrap(), host.labels);
    }
    assert_eq!(set.epoch_batches(16, 7, 2, 1), vit_train::data::batches::epoch_batches(40, 16, 7, 2));
}

#[test]
fn flips_mirror_about_half_of_the_images() {
    let p = prep(16, 3);
    let set = ResidentSet::upload(&position_coded(BATCH, 16), &p, tch::Device::Cpu, "training").unwrap();
    let aug = Augment { hflip: true, ..Augment::NONE };
    let mut flipped = 0;
    for (params, px, _) in batches(&set, &p, &aug, 3) {
        for (i, f) in params.column(col::FLIP).into_iter().enumerate() {
            // Column + 1 at the left edge: 1 as it was, 16 mirrored.
            let left = value(&px, &[i as i64, 1, 5, 0]).round();
            assert_eq!(left, if f > 0.5 { 16.0 } else { 1.0 }, "image {i}: flip {f}");
            flipped += usize::from(f > 0.5);
        }
    }
    let rate = flipped as f64 / (BATCHES * BATCH) as f64;
    assert!((rate - 0.5).abs() < 0.05, "flip rate {rate}");
}

#[test]
fn padded_crop_offsets_cover_the_range_uniformly() {
    let (side, pad) = (16usize, 3i64);
    let p = prep(side, 3);
    let set = ResidentSet::upload(&position_coded(BATCH, side), &p, tch::Device::Cpu, "training").unwrap();
    let aug = Augment { crop_padding: pad as usize, hflip: true, ..Augment::NONE };
    let mut counts = vec![0usize; (2 * pad + 1) as usize];
    for (params, px, _) in batches(&set, &p, &aug, 4) {
        for i in 0..BATCH {
            let (dy, dx, f) = (
                params.table[i * col::WIDTH + col::SHIFT],
                params.table[i * col::WIDTH + col::SHIFT + 1],
                params.table[i * col::WIDTH + col::FLIP],
            );
            // The centre pixel (8, 8) came from row 8 + dy; column 8 + dx, or 7 + dx after the flip.
            let (row, column) = (value(&px, &[i as i64, 0, 8, 8]).round(), value(&px, &[i as i64, 1, 8, 8]).round());
            assert_eq!(row, 8.0 + f64::from(dy) + 1.0);
            assert_eq!(column, if f > 0.5 { 7.0 } else { 8.0 } + f64::from(dx) + 1.0);
            assert!((-pad..=pad).contains(&(dy as i64)) && (-pad..=pad).contains(&(dx as i64)));
            counts[(dy as i64 + pad) as usize] += 1;
            // A shifted image brings in zero padding on the side it moved away from.
            if dy > 0.0 {
                assert_eq!(
                    value(&px, &[i as i64, 0, 15, 8]).round(),
                    0.0,
                    "image {i}: dy {dy} must pad the bottom row"
                );
            }
        }
    }
    let expected = (BATCHES * BATCH) as f64 / counts.len() as f64;
    assert!(counts.iter().all(|&c| (c as f64 - expected).abs() < 0.3 * expected), "row offsets {counts:?}");
}

#[test]
fn resized_crop_boxes_respect_the_scale_and_ratio_ranges() {
    let side = 32usize;
    let p = prep(side, 3);
    let set = ResidentSet::upload(&position_coded(BATCH, side), &p, tch::Device::Cpu, "training").unwrap();
    let scale = (0.35, 1.0);
    let aug = Augment { crop_scale: scale, ..Augment::NONE };
    let s = side as f64;
    let (mut areas, mut wide, mut tall) = (Vec::new(), 0, 0);
    for (params, px, _) in batches(&set, &p, &aug, 5) {
        for i in 0..BATCH {
            let i64i = i as i64;
            // Coordinates are linear in the output: the slope between columns 2 and S-3 is the box width / S.
            let w = (value(&px, &[i64i, 1, 16, (side - 3) as i64]) - value(&px, &[i64i, 1, 16, 2])) * s / (s - 5.0);
            let h = (value(&px, &[i64i, 0, (side - 3) as i64, 16]) - value(&px, &[i64i, 0, 2, 16])) * s / (s - 5.0);
            let drawn = &params.table[i * col::WIDTH + col::CROP..i * col::WIDTH + col::CROP + 4];
            assert!(
                (w - f64::from(drawn[3])).abs() < 0.05 && (h - f64::from(drawn[2])).abs() < 0.05,
                "{w}x{h} vs {drawn:?}"
            );
            let (area, ratio) = (w * h / (s * s), w / h);
            // Boxes are whole pixels, so area and ratio may pass the ranges by a rounding.
            assert!(area >= scale.0 - 0.04 && area <= scale.1 + 1e-6, "area {area}");
            assert!((0.75 - 0.07..=4.0 / 3.0 + 0.07).contains(&ratio), "ratio {ratio}");
            // The box lies inside the image: its top-left sample is at or after pixel 0.
            assert!(value(&px, &[i64i, 1, 16, 0]) >= 1.0 - 1e-4 && f64::from(drawn[1] + drawn[3]) <= s);
            areas.push(area);
            (wide, tall) = (wide + usize::from(ratio > 1.05), tall + usize::from(ratio < 0.95));
        }
    }
    let mean = areas.iter().sum::<f64>() / areas.len() as f64;
    // Uniform area in [0.35, 1] has mean 0.675, but a large box of a ratio away from 1 does not fit and is
    // drawn again (torchvision's sampler, shared with the CPU path), which pulls the mean down (0.62 here).
    assert!((0.57..=0.69).contains(&mean), "mean area {mean}");
    assert!(areas.iter().any(|&a| a < 0.4) && areas.iter().any(|&a| a > 0.9), "areas must spread over the range");
    assert!(wide > 300 && tall > 300, "aspect ratios must spread both ways: {wide} wide, {tall} tall");
}

#[test]
fn colour_jitter_factors_stay_in_range() {
    let p = prep(8, 3);
    let set = ResidentSet::upload(&dataset(BATCH, 3, 8, |_, _, _, _| 100), &p, tch::Device::Cpu, "training").unwrap();
    let strength = 0.4;
    let aug = Augment { color_jitter: strength, ..Augment::NONE };
    let mut brightness = Vec::new();
    for (params, px, _) in batches(&set, &p, &aug, 6) {
        for k in 0..3 {
            let f = params.column(col::JITTER + k);
            assert!(f.iter().all(|&v| (f64::from(v) - 1.0).abs() <= strength + 1e-6), "factor {k}: {f:?}");
        }
        // A gray image keeps one value: contrast and saturation leave it, brightness scales it.
        for i in 0..BATCH as i64 {
            let img = px.get(i);
            let (lo, hi) = (img.min().double_value(&[]), img.max().double_value(&[]));
            assert!(hi - lo < 1e-3, "image {i} is no longer flat: {lo}..{hi}");
            brightness.push(lo / 100.0);
            let drawn = f64::from(params.table[i as usize * col::WIDTH + col::JITTER]);
            assert!((lo / 100.0 - drawn).abs() < 1e-4, "brightness {} vs drawn {drawn}", lo / 100.0);
        }
    }
    let mean = brightness.iter().sum::<f64>() / brightness.len() as f64;
    assert!((mean - 1.0).abs() < 0.03, "mean brightness {mean}");
    let (lo, hi) = brightness.iter().fold((f64::MAX, f64::MIN), |(a, b), &v| (a.min(v), b.max(v)));
    assert!(lo < 0.65 && hi > 1.35, "factors must spread over [0.6, 1.4]: {lo}..{hi}");
}

#[test]
fn random_erasing_fills_boxes_of_the_drawn_area_with_noise() {
    let side = 32usize;
    let p = prep(side, 3);
    let set = ResidentSet::upload(&dataset(BATCH, 3, side, |_, _, _, _| 0), &p, tch::Device::Cpu, "training").unwrap();
    let aug = Augment { random_erasing: 0.5, ..Augment::NONE };
    let (mut erased, mut noise_sum, mut noise_n) = (0, 0.0, 0.0);
    for (params, px, _) in batches(&set, &p, &aug, 7) {
        let px = px.round();
        for i in 0..BATCH {
            let drawn = &params.table[i * col::WIDTH + col::ERASE..i * col::WIDTH + col::ERASE + 4];
            let area = f64::from(drawn[2] * drawn[3]) / (side * side) as f64;
            let changed = px.get(i as i64).ne(0.0).to_kind(tch::Kind::Float).sum(tch::Kind::Float).double_value(&[]);
            let changed = changed / (3 * side * side) as f64;
            if area == 0.0 {
                assert_eq!(changed, 0.0, "image {i} was not to be erased");
                continue;
            }
            erased += 1;
            // Whole-pixel sides: a box drawn at 2% of 32x32 (20.5 pixels) can round to 18 (1.8%).
            assert!((0.015..=0.34).contains(&area), "erased area {area}");
            // Noise is 0 with odds 1/256, so slightly fewer pixels than the box may change.
            assert!(changed <= area + 1e-9 && changed > area * 0.95, "changed {changed} of drawn {area}");
            noise_sum += px.get(i as i64).sum(tch::Kind::Float).double_value(&[]);
            noise_n += area * (3 * side * side) as f64;
        }
    }
    let rate = erased as f64 / (BATCHES * BATCH) as f64;
    assert!((rate - 0.5).abs() < 0.05, "erasing rate {rate}");
    let mean = noise_sum / noise_n;
    assert!((mean - 127.5).abs() < 3.0, "mean noise value {mean}");
}

#[test]
fn mixup_lambda_has_the_beta_mean_and_cutmix_keeps_its_area() {
    let p = prep(16, 3);
    // Image i is flat at 4 * i: a mixed pixel tells lam.
    let set = ResidentSet::upload(&dataset(BATCH, 3, 16, |i, _, _, _| 4 * i as u8), &p, tch::Device::Cpu, "training")
        .unwrap();
    let mixup = Augment { mixup_alpha: 0.8, ..Augment::NONE };
    let mut lams = Vec::new();
    for (params, px, lam) in batches_n(&set, &p, &mixup, 8, 400) {
        let lam = f64::from(lam.expect("mixup_alpha > 0 mixes every batch"));
        assert!(matches!(params.mix.map(|m| m.kind), Some(MixKind::Mixup(_))));
        // Image 0 (value 0) blends with image 31 (value 124): 124 * (1 - lam).
        let seen = 1.0 - value(&px, &[0, 0, 3, 3]) / 124.0;
        assert!((seen - lam).abs() < 1e-4, "pixels say lam {seen}, batch says {lam}");
        lams.push(lam);
    }
    let mean = lams.iter().sum::<f64>() / lams.len() as f64;
    // Beta(0.8, 0.8) has mean 0.5 and sd 0.31: the mean of 400 draws has sd 0.016.
    assert!((mean - 0.5).abs() < 0.05, "mean lam {mean}");
    assert!(lams.iter().any(|&l| l < 0.25) && lams.iter().any(|&l| l > 0.75), "{lams:?}");

    let cut = Augment { cutmix_alpha: 1.0, ..Augment::NONE };
    for (_, px, lam) in batches(&set, &p, &cut, 9) {
        let lam = f64::from(lam.expect("cutmix_alpha > 0 mixes every batch"));
        let own = px.get(1).round().eq(4.0).to_kind(tch::Kind::Float).mean(tch::Kind::Float).double_value(&[]);
        let partner = px.get(1).round().eq(120.0).to_kind(tch::Kind::Float).mean(tch::Kind::Float).double_value(&[]);
        assert!((own - lam).abs() < 1e-6 && (own + partner - 1.0).abs() < 1e-6, "kept {own}, lam {lam}");
    }
}

/// A 32x32 network on 40 images per class, 5 epochs, flips, padded crops, colour jitter
/// and erasing (whose draws differ between the modes); in `mode`.
fn short_fit(tmp: &std::path::Path, mode: &str) -> (serde_json::Value, Vec<f64>) {
    let cfg = write_config(
        tmp,
        &(SMALL.to_string() + "hflip = true\ncrop_padding = 2\ncolor_jitter = 0.2\nrandom_erasing = 0.25\n"),
    );
    let run = tmp.join(mode);
    let mut cmd = bin();
    cmd.arg("--config").arg(&cfg).arg("--data").arg(coco5()).arg("--out").arg(&run);
    run_ok(cmd.args(["--max-per-class", "40", "--epochs", "5", "--no-export", "--data-mode", mode]));
    let records = std::fs::read_to_string(run.join("metrics.jsonl")).unwrap();
    let losses = records
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|r| r.get("train_loss").and_then(serde_json::Value::as_f64))
        .collect();
    let run_json = std::fs::read_to_string(run.join("run.json")).unwrap();
    assert!(run_json.contains(&format!("\"data_mode\": \"{mode}\"")), "{run_json}");
    (summary(&run), losses)
}

#[test]
fn a_short_fit_in_device_mode_learns_as_in_memory_mode() {
    let tmp = tempfile::tempdir().unwrap();
    let (device, device_losses) = short_fit(tmp.path(), "device");
    let (memory, memory_losses) = short_fit(tmp.path(), "memory");
    assert_eq!(device_losses.len(), 5, "{device_losses:?}");
    // Measured: 1.605 -> 1.549 (device), 1.607 -> 1.550 (memory); the curves differ by 0.003 at most.
    assert!(device_losses[4] < device_losses[0] - 0.03, "device mode's loss must fall: {device_losses:?}");
    assert!(memory_losses[4] < memory_losses[0] - 0.03, "memory mode's loss must fall: {memory_losses:?}");
    for (e, (d, m)) in device_losses.iter().zip(&memory_losses).enumerate() {
        assert!((d - m).abs() < 0.02, "epoch {e}: training loss {d} in device mode, {m} in memory mode");
    }
    assert_ne!(device_losses, memory_losses, "erasing noise differs, so the runs must too");
    let acc = |s: &serde_json::Value| s["val_accuracy"].as_f64().unwrap();
    // 200 validation images: one run's accuracy varies by about 0.035; the two runs draw different augmentations.
    assert!((acc(&device) - acc(&memory)).abs() <= 0.1, "device {} vs memory {}", acc(&device), acc(&memory));
    assert!(acc(&device) > 0.25, "5 classes: device mode must beat chance, got {}", acc(&device));
    assert_eq!(device["train_images"], memory["train_images"]);
}

#[test]
fn auto_keeps_memory_mode_on_the_cpu_and_device_mode_refuses_crops_from_originals() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = write_config(tmp.path(), &(SMALL.to_string() + "crop_from_original = true\ncrop_scale = [0.5, 1.0]\n"));
    let err = run_err(quick(&cfg, &tmp.path().join("r"), "1").args(["--data-mode", "device"]));
    assert!(err.contains("--data-mode device") && err.contains("crop_from_original"), "{err}");
    let cfg = write_config(tmp.path(), SMALL);
    let run = tmp.path().join("auto");
    let mut cmd = bin();
    cmd.arg("--config").arg(&cfg).arg("--data").arg(coco5()).arg("--out").arg(&run);
    run_ok(cmd.args(["--max-per-class", "4", "--epochs", "1", "--no-export", "--data-mode", "auto"]));
    let run_json = std::fs::read_to_string(run.join("run.json")).unwrap();
    assert!(run_json.contains("\"data_mode\": \"memory\""), "auto on the CPU must stay in memory: {run_json}");
}

#[test]
fn a_device_mode_run_killed_and_resumed_ends_as_an_uninterrupted_one() {
    let tmp = tempfile::tempdir().unwrap();
    let recipe =
        SMALL.to_string() + "hflip = true\ncrop_scale = [0.35, 1.0]\nrandom_erasing = 0.25\nmixup_alpha = 0.8\n";
    let cfg = write_config(tmp.path(), &recipe);
    let (straight, killed) = (tmp.path().join("straight"), tmp.path().join("killed"));
    run_ok(quick(&cfg, &straight, "3").args(["--data-mode", "device"]));
    kill_after_first_epoch(quick(&cfg, &killed, "3").args(["--data-mode", "device"]), &killed);
    // run.json keeps the mode, so the resumed run reads the data on the device again.
    run_ok(bin().arg("--out").arg(&killed).args(["--resume", "--no-export"]));
    let run_json = std::fs::read_to_string(killed.join("run.json")).unwrap();
    assert!(run_json.contains("\"data_mode\": \"device\""), "{run_json}");
    let (a, b) = (summary(&straight), summary(&killed));
    assert_eq!(a["val_accuracy"], b["val_accuracy"]);
    let read = |run: &std::path::Path| Tensor::read_safetensors(run.join("last.safetensors")).unwrap();
    let mut resumed: std::collections::BTreeMap<_, _> = read(&killed).into_iter().collect();
    for (name, w) in read(&straight) {
        let other = resumed.remove(&name).unwrap_or_else(|| panic!("{name} missing after resume"));
        let diff = (&w - other).abs().max().double_value(&[]);
        assert!(diff <= 1e-6, "{name}: the resumed weights differ by {diff}");
    }
}
