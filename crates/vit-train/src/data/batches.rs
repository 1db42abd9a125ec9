//! Mini-batches from a u8 [`Dataset`], decoded in memory or streamed from its
//! files: seeded shuffling, the u8 augmentations and batch mixes of
//! [`crate::data::augment`], then the shared [`Preprocessor`] normalisation. A pool
//! of workers ([`crate::data::workers`]) prepares batches ahead of the training step
//! so data work stays off the critical path.
//!
//! Randomness is split so that no draw depends on which thread runs it: the
//! epoch's sample order comes from [`epoch_rng`], and each batch's
//! augmentations from its own [`batch_rng`] of (seed, epoch, batch index).
//!
//! A streamed file that breaks after it was indexed is fed as a black image
//! and travels with its batch ([`HostBatch::unreadable`]) back to the epoch
//! loop, which decides whether the run stops.

use rand::{seq::SliceRandom, SeedableRng};
use rand_chacha::ChaCha8Rng;
use vit::data::{Dataset, Skipped, Source};
use vit::Preprocessor;

use crate::data::augment::original::{crop_resize, random_crop_box, CROP_RATIO};
pub use crate::data::augment::Augment;
use crate::data::augment::{augment_image, cutmix, draw_mix, mixup, Geometry, MixKind};
pub use crate::data::workers::{Flow, Pipeline};

/// A host-side batch: normalised NCHW f32 pixels and labels.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HostBatch {
    /// `labels.len() * image_len` values.
    pub pixels: Vec<f32>,
    /// Class indices.
    pub labels: Vec<i64>,
    /// Set when the batch was mixed (mixup or CutMix): the weight of each
    /// image's own label; the partner of image `i` is image `n - 1 - i`, so the
    /// partner labels are `labels` reversed.
    pub mix_lam: Option<f32>,
    /// Streamed files of this batch that could not be read or decoded (the
    /// reason names the file); each was fed as a black image.
    pub unreadable: Vec<Skipped>,
}

/// The RNG of epoch `epoch` of a run seeded with `seed` (restarts identically on resume).
pub fn epoch_rng(seed: u64, epoch: usize) -> ChaCha8Rng {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(epoch as u64 + 1);
    rng
}

/// The RNG of batch `batch` of epoch `epoch`: its own stream, so a batch is
/// the same whichever worker builds it and whatever was drawn before.
pub fn batch_rng(seed: u64, epoch: usize, batch: usize) -> ChaCha8Rng {
    let mut key = [0u8; 32];
    key[..8].copy_from_slice(&seed.to_le_bytes());
    key[8..16].copy_from_slice(&(epoch as u64).to_le_bytes());
    key[16..24].copy_from_slice(&(batch as u64).to_le_bytes());
    key[24..].copy_from_slice(b"vitbatch");
    ChaCha8Rng::from_seed(key)
}

/// Builds the batch of `indices`.
/// With an RNG, each image is augmented and the batch may be mixed; without
/// one (evaluation), the images are only normalised. With
/// [`Augment::from_original`] on a streamed set, the resized crop is taken from
/// each original file ([`crate::data::augment::original`]) instead of from the
/// image resized to the model's side.
pub fn make_batch(
    data: &Dataset,
    indices: &[usize],
    prep: &Preprocessor,
    aug: Augment,
    mut rng: Option<&mut ChaCha8Rng>,
) -> HostBatch {
    let from_original = aug.from_original && data.is_streamed() && rng.is_some();
    let mut pixels_u8 = vec![0u8; indices.len() * data.image_len];
    let mut unreadable = Vec::new();
    for (&i, out) in indices.iter().zip(pixels_u8.chunks_mut(data.image_len.max(1))) {
        let read = match rng.as_deref_mut() {
            Some(rng) if from_original => read_crop(data, i, prep, aug.crop_scale, rng, out),
            _ => data.read_image(i, prep, out).map_err(|e| e.to_string()),
        };
        // A streamed file can break after it was indexed: a black image takes its place, and the epoch loop
        // sees the failure with the batch.
        if let Err(reason) = read {
            out.fill(0);
            unreadable.push(Skipped { path: data.sources.get(i).map(Source::path).unwrap_or_default(), reason });
        }
    }
    let labels: Vec<i64> = indices.iter().map(|&i| data.labels[i]).collect();
    let Some(rng) = rng else {
        return HostBatch { pixels: prep.normalize(&pixels_u8), labels, mix_lam: None, unreadable };
    };
    // The crop from the original replaces the crop of the resized image.
    let aug = if from_original { Augment { crop_scale: (1.0, 1.0), ..aug } } else { aug };
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
    HostBatch { pixels, labels, mix_lam: mix_kind.map(MixKind::lam), unreadable }
}

/// A random resized crop (area in `scale`) of the original file of image `i`,
/// resampled to the model's side into `out`; the error names the file.
fn read_crop(
    data: &Dataset,
    i: usize,
    prep: &Preprocessor,
    scale: (f64, f64),
    rng: &mut ChaCha8Rng,
    out: &mut [u8],
) -> Result<(), String> {
    let img = data.read_original(i, prep).map_err(|e| e.to_string())?;
    let crop = random_crop_box(img.width(), img.height(), scale, CROP_RATIO, rng);
    crop_resize(img, crop, prep.channels, prep.image_size, out)
        .map_err(|e| format!("cannot resize image {}: {e}", data.sources[i]))
}

/// Shuffled training batches of one epoch (the last partial batch is kept).
pub fn epoch_order(len: usize, batch_size: usize, rng: &mut ChaCha8Rng) -> Vec<Vec<usize>> {
    let mut order: Vec<usize> = (0..len).collect();
    order.shuffle(rng);
    let order = crate::dist::sampler::shard(order);
    order.chunks(batch_size.max(1)).map(<[usize]>::to_vec).collect()
}

/// The sample order of epoch `epoch`, cut into batches: the one place that
/// decides which samples an epoch visits. A data-parallel rank keeps its own
/// share of these batches.
pub fn epoch_batches(len: usize, batch_size: usize, seed: u64, epoch: usize) -> Vec<Vec<usize>> {
    epoch_order(len, batch_size, &mut epoch_rng(seed, epoch))
}

/// The batches of epoch `epoch` of `data`: WebDataset's order
/// ([`crate::data::shard_order`], with a shuffle buffer of `shuffle_buffer` samples)
/// when every sample comes from a tar shard, otherwise [`epoch_batches`]. In a
/// process group, this rank's share either way.
pub fn epoch_batches_of(
    data: &Dataset,
    batch_size: usize,
    seed: u64,
    epoch: usize,
    shuffle_buffer: usize,
) -> Vec<Vec<usize>> {
    epoch_batches_in(data.len(), data.shard_ranges().as_deref(), batch_size, seed, epoch, shuffle_buffer)
}

/// [`epoch_batches_of`] for a set of `len` samples whose tar shards, if every
/// sample comes from one, are `shards` (a set kept on the device keeps only these facts).
pub fn epoch_batches_in(
    len: usize,
    shards: Option<&[std::ops::Range<usize>]>,
    batch_size: usize,
    seed: u64,
    epoch: usize,
    shuffle_buffer: usize,
) -> Vec<Vec<usize>> {
    let Some(shards) = shards else { return epoch_batches(len, batch_size, seed, epoch) };
    let rank = crate::dist::sampler::rank();
    let order = crate::data::shard_order::shard_epoch_order(shards, shuffle_buffer, &mut epoch_rng(seed, epoch), rank);
    order.chunks(batch_size.max(1)).map(<[usize]>::to_vec).collect()
}

/// Runs `consume` on every training batch of `batches` (epoch `epoch`),
/// built by `pipe`'s workers ahead of it, each from its [`batch_rng`]; the
/// [`Flow`] says how full the queue is. Stops early if `consume` returns false.
/// Returns the streamed files that could not be read in the batches consumed
/// (each also in its batch's [`HostBatch::unreadable`]).
#[allow(clippy::too_many_arguments)] // each is one independent knob of the epoch; a struct would only rename them
pub fn for_each_train_batch(
    data: &Dataset,
    prep: &Preprocessor,
    aug: Augment,
    batches: &[Vec<usize>],
    seed: u64,
    epoch: usize,
    pipe: Pipeline,
    mut consume: impl FnMut(usize, HostBatch, Flow) -> bool,
) -> Vec<Skipped> {
    let make = |i: usize| make_batch(data, &batches[i], prep, aug, Some(&mut batch_rng(seed, epoch, i)));
    let mut unreadable = Vec::new();
    crate::data::workers::run_ordered(batches.len(), pipe, make, |i, batch, flow| {
        unreadable.extend(batch.unreadable.iter().cloned());
        consume(i, batch, flow)
    });
    unreadable
}

/// Images in each piece of an evaluation batch that the workers build and
/// queue. The queue holds `prefetch` pieces, not `prefetch` whole batches, so
/// its memory does not grow with `--eval-batch-size` or with the data: at
/// 224x224 a batch of 256 is 154 MB of f32 pixels, and eight of them queued
/// made a streamed run's peak memory grow with the validation set until the
/// queue was full.
pub const EVAL_PIECE: usize = 32;

/// A piece of evaluation batch `batch`: images `offset..offset + len` of its `batch_len`.
#[derive(Debug, Clone, PartialEq)]
pub struct EvalPiece {
    /// Index of the batch this piece belongs to.
    pub batch: usize,
    /// Images in the whole batch.
    pub batch_len: usize,
    /// Position of the piece's first image in the batch.
    pub offset: usize,
    /// The piece's pixels and labels (`unreadable` is moved to the returned list).
    pub images: HostBatch,
}

impl EvalPiece {
    /// True for the piece that completes its batch.
    pub fn ends_batch(&self) -> bool {
        self.offset + self.images.labels.len() == self.batch_len
    }
}

/// Runs `consume` on the un-augmented images `indices` of `data`, in order
/// (evaluation), cut into batches of `batch_size` that arrive as pieces of at
/// most [`EVAL_PIECE`] images, built by `pipe`'s workers (so a streamed set
/// decodes in parallel too). The consumer assembles each batch where it needs
/// it (an image's pixels do not depend on its batch), so no whole batch waits
/// in a queue. Returns the streamed files that could not be read (fed as
/// black images).
pub fn for_each_eval_piece(
    data: &Dataset,
    indices: &[usize],
    prep: &Preprocessor,
    batch_size: usize,
    pipe: Pipeline,
    mut consume: impl FnMut(EvalPiece),
) -> Vec<Skipped> {
    let batch_size = batch_size.max(1);
    // Pieces never straddle two batches: (batch, its length, offset in it, the piece's images).
    let pieces: Vec<(usize, usize, usize, &[usize])> = indices
        .chunks(batch_size)
        .enumerate()
        .flat_map(|(b, batch)| {
            batch.chunks(EVAL_PIECE).enumerate().map(move |(k, piece)| (b, batch.len(), k * EVAL_PIECE, piece))
        })
        .collect();
    let make = |i: usize| make_batch(data, pieces[i].3, prep, Augment::NONE, None);
    let mut unreadable = Vec::new();
    crate::data::workers::run_ordered(pieces.len(), pipe, make, |i, mut images, _| {
        unreadable.append(&mut images.unreadable);
        let (batch, batch_len, offset, _) = pieces[i];
        consume(EvalPiece { batch, batch_len, offset, images });
        true
    });
    unreadable
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
        assert_eq!(epoch_batches(10, 3, 7, 2), a);
    }

    #[test]
    fn each_batch_has_its_own_random_stream() {
        use rand::Rng;
        let draw = |seed, epoch, batch| batch_rng(seed, epoch, batch).random::<u64>();
        assert_eq!(draw(1, 2, 3), draw(1, 2, 3));
        assert_ne!(draw(1, 2, 3), draw(1, 2, 4));
        assert_ne!(draw(1, 2, 3), draw(1, 3, 3));
        assert_ne!(draw(1, 2, 3), draw(2, 2, 3));
    }

    #[test]
    fn evaluation_pieces_put_together_are_the_whole_batches() {
        let (side, n) = (4usize, 2 * EVAL_PIECE + 5);
        let cfg = vit::ViTConfig { image_size: side, ..vit::ViTConfig::default() };
        let prep = Preprocessor::from_config(&cfg);
        let image_len = prep.image_len();
        let data = Dataset {
            pixels: (0..n * image_len).map(|i| (i * 7 % 251) as u8).collect(),
            labels: (0..n as i64).map(|i| i % 3).collect(),
            image_len,
            ..Dataset::default()
        };
        // A batch of 1.5 pieces then the rest: pieces must restart at each batch.
        let indices: Vec<usize> = (0..n).rev().collect();
        let batch_size = EVAL_PIECE + EVAL_PIECE / 2;
        let whole: Vec<HostBatch> =
            indices.chunks(batch_size).map(|c| make_batch(&data, c, &prep, Augment::NONE, None)).collect();
        for workers in [1, 3] {
            let mut joined: Vec<HostBatch> = Vec::new();
            let pipe = Pipeline { workers, prefetch: 2 };
            for_each_eval_piece(&data, &indices, &prep, batch_size, pipe, |p| {
                assert!(p.images.labels.len() <= EVAL_PIECE);
                if p.offset == 0 {
                    joined.push(HostBatch::default());
                }
                let at = joined.len() - 1;
                let b = &mut joined[at];
                assert_eq!((p.batch, p.offset, p.batch_len), (at, b.labels.len(), whole[p.batch].labels.len()));
                b.pixels.extend_from_slice(&p.images.pixels);
                b.labels.extend_from_slice(&p.images.labels);
                assert_eq!(p.ends_batch(), b.labels.len() == p.batch_len);
            });
            assert_eq!(joined.iter().map(|b| b.labels.len()).collect::<Vec<_>>(), vec![48, 21]);
            assert_eq!(joined, whole, "{workers} workers");
        }
    }
}
