//! Mini-batches from an in-memory u8 [`Dataset`]: seeded shuffling, the u8
//! augmentations and batch mixes of [`crate::augment`], then the shared
//! [`Preprocessor`] normalisation. A producer thread prepares batches
//! ahead of the training step so data work stays off the critical path.

use std::sync::mpsc;

use rand::{seq::SliceRandom, SeedableRng};
use rand_chacha::ChaCha8Rng;
use vit::{data::Dataset, Preprocessor};

pub use crate::augment::Augment;
use crate::augment::{augment_image, cutmix, draw_mix, mixup, Geometry, MixKind};

/// A host-side batch: normalised NCHW f32 pixels and labels.
#[derive(Debug, Clone, PartialEq)]
pub struct HostBatch {
    /// `labels.len() * image_len` values.
    pub pixels: Vec<f32>,
    /// Class indices.
    pub labels: Vec<i64>,
    /// Set when the batch was mixed (mixup or CutMix): the weight of each
    /// image's own label; the partner of image `i` is image `n - 1 - i`, so the
    /// partner labels are `labels` reversed.
    pub mix_lam: Option<f32>,
}

/// The RNG of epoch `epoch` of a run seeded with `seed` (restarts identically on resume).
pub fn epoch_rng(seed: u64, epoch: usize) -> ChaCha8Rng {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(epoch as u64 + 1);
    rng
}

/// Builds the batch of `indices`.
/// With an RNG, each image is augmented and the batch may be mixed; without
/// one (evaluation), the images are only normalised.
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
    let labels: Vec<i64> = indices.iter().map(|&i| data.labels[i]).collect();
    let Some(rng) = rng else {
        return HostBatch { pixels: prep.normalize(&pixels_u8), labels, mix_lam: None };
    };
    let g = Geometry { channels: prep.channels, side: prep.image_size };
    let mut scratch = Vec::new();
    for img in pixels_u8.chunks_mut(data.image_len) {
        augment_image(img, &mut scratch, g, &aug, rng);
    }
    let mut mix_kind = if labels.len() > 1 { draw_mix(&aug, rng) } else { None };
    // CutMix pastes u8 pixels (and corrects lam to the pasted area); mixup blends normalised ones.
    if let Some(MixKind::Cutmix(lam)) = &mut mix_kind {
        *lam = cutmix(&mut pixels_u8, g, *lam, rng);
    }
    let mut pixels = prep.normalize(&pixels_u8);
    if let Some(MixKind::Mixup(lam)) = mix_kind {
        mixup(&mut pixels, data.image_len, lam);
    }
    HostBatch { pixels, labels, mix_lam: mix_kind.map(MixKind::lam) }
}

/// Shuffled training batches of one epoch (the last partial batch is kept).
pub fn epoch_order(len: usize, batch_size: usize, rng: &mut ChaCha8Rng) -> Vec<Vec<usize>> {
    let mut order: Vec<usize> = (0..len).collect();
    order.shuffle(rng);
    let order = crate::dist::sampler::shard(order);
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
    fn epochs_are_reproducible() {
        let a = epoch_order(10, 3, &mut epoch_rng(7, 2));
        let b = epoch_order(10, 3, &mut epoch_rng(7, 2));
        let c = epoch_order(10, 3, &mut epoch_rng(7, 3));
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_eq!(a.iter().map(Vec::len).collect::<Vec<_>>(), vec![3, 3, 3, 1]);
    }
}
