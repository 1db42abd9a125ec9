//! Mini-batches from an in-memory u8 [`Dataset`]: seeded shuffling, cheap
//! u8 augmentations (random crop with zero padding, horizontal flip), then the
//! shared [`Preprocessor`] normalisation. A producer thread prepares batches
//! ahead of the training step so data work stays off the critical path.

use std::sync::mpsc;

use rand::{seq::SliceRandom, Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use vit::{data::Dataset, Preprocessor};

/// A host-side batch: normalised NCHW f32 pixels and labels.
#[derive(Debug, Clone, PartialEq)]
pub struct HostBatch {
    /// `labels.len() * image_len` values.
    pub pixels: Vec<f32>,
    /// Class indices.
    pub labels: Vec<i64>,
}

/// Augmentations applied to training images.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Augment {
    /// Random horizontal flip with probability 1/2.
    pub hflip: bool,
    /// Pad by this many zero pixels, then crop back at a random offset.
    pub crop_padding: usize,
}

/// The RNG of epoch `epoch` of a run seeded with `seed` (restarts identically on resume).
pub fn epoch_rng(seed: u64, epoch: usize) -> ChaCha8Rng {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(epoch as u64 + 1);
    rng
}

/// Random crop with zero padding and flip of one CHW u8 image, in place.
fn augment_image(img: &mut [u8], scratch: &mut Vec<u8>, channels: usize, side: usize, aug: Augment, rng: &mut ChaCha8Rng) {
    let pad = aug.crop_padding as i64;
    if pad > 0 {
        let dy = rng.random_range(-pad..=pad) as isize;
        let dx = rng.random_range(-pad..=pad) as isize;
        if dx != 0 || dy != 0 {
            scratch.clear();
            scratch.extend_from_slice(img);
            let s = side as isize;
            for c in 0..channels {
                let plane = c * side * side;
                for y in 0..s {
                    for x in 0..s {
                        let (sy, sx) = (y + dy, x + dx);
                        let inside = (0..s).contains(&sy) && (0..s).contains(&sx);
                        img[plane + (y * s + x) as usize] =
                            if inside { scratch[plane + (sy * s + sx) as usize] } else { 0 };
                    }
                }
            }
        }
    }
    if aug.hflip && rng.random_bool(0.5) {
        for row in img.chunks_mut(side) {
            row.reverse();
        }
    }
}

/// Builds the batch of `indices`.
pub fn make_batch(
    data: &Dataset,
    indices: &[usize],
    prep: &Preprocessor,
    aug: Augment,
    rng: Option<&mut ChaCha8Rng>,
) -> HostBatch {
    let mut pixels_u8 = Vec::with_capacity(indices.len() * data.image_len);
    for &i in indices {
        pixels_u8.extend_from_slice(data.image(i));
    }
    if let Some(rng) = rng {
        let mut scratch = Vec::new();
        for img in pixels_u8.chunks_mut(data.image_len) {
            augment_image(img, &mut scratch, prep.channels, prep.image_size, aug, rng);
        }
    }
    HostBatch { pixels: prep.normalize(&pixels_u8), labels: indices.iter().map(|&i| data.labels[i]).collect() }
}

/// Shuffled training batches of one epoch (the last partial batch is kept).
pub fn epoch_order(len: usize, batch_size: usize, rng: &mut ChaCha8Rng) -> Vec<Vec<usize>> {
    let mut order: Vec<usize> = (0..len).collect();
    order.shuffle(rng);
    order.chunks(batch_size.max(1)).map(<[usize]>::to_vec).collect()
}

/// Runs `consume` on every training batch of epoch `epoch`, prepared by a
/// producer thread up to `depth` batches ahead. Stops early if `consume` returns false.
pub fn for_each_train_batch(
    data: &Dataset,
    prep: &Preprocessor,
    aug: Augment,
    batch_size: usize,
    seed: u64,
    epoch: usize,
    mut consume: impl FnMut(usize, HostBatch) -> bool,
) {
    let mut rng = epoch_rng(seed, epoch);
    let order = epoch_order(data.len(), batch_size, &mut rng);
    std::thread::scope(|scope| {
        let (tx, rx) = mpsc::sync_channel::<HostBatch>(4);
        scope.spawn(move || {
            for idx in &order {
                if tx.send(make_batch(data, idx, prep, aug, Some(&mut rng))).is_err() {
                    break;
                }
            }
        });
        for (i, batch) in rx.into_iter().enumerate() {
            if !consume(i, batch) {
                break;
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flip_and_crop_move_pixels() {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let mut img: Vec<u8> = (0..9).collect(); // 1x3x3
        let mut scratch = Vec::new();
        // Flip only, run until one flip happened.
        let aug = Augment { hflip: true, crop_padding: 0 };
        loop {
            augment_image(&mut img, &mut scratch, 1, 3, aug, &mut rng);
            if img != (0..9).collect::<Vec<u8>>() {
                break;
            }
        }
        assert_eq!(img, vec![2, 1, 0, 5, 4, 3, 8, 7, 6]);
        // A crop keeps the pixel multiset minus what falls out (zeros come in).
        let aug = Augment { hflip: false, crop_padding: 1 };
        let mut img: Vec<u8> = (1..10).collect();
        for _ in 0..20 {
            let mut copy = img.clone();
            augment_image(&mut copy, &mut scratch, 1, 3, aug, &mut rng);
            assert!(copy.iter().all(|v| *v == 0 || (1..10).contains(v)));
            img = (1..10).collect();
        }
    }

    #[test]
    fn epochs_are_reproducible() {
        let a = epoch_order(10, 3, &mut epoch_rng(7, 2));
        let b = epoch_order(10, 3, &mut epoch_rng(7, 2));
        let c = epoch_order(10, 3, &mut epoch_rng(7, 3));
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_eq!(a.iter().map(Vec::len).collect::<Vec<_>>(), vec![3, 3, 3, 1]);
    }
}
