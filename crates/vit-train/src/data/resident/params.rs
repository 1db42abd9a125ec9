//! The random parameters of one device-resident batch, drawn on the host from
//! the batch's own seeded RNG ([`crate::data::batches::batch_rng`]) and
//! uploaded as one small f32 tensor (a few numbers per image).
//!
//! Why the host and not `Tensor::rand` after `tch::manual_seed`: libtorch has
//! one global generator per device, which the epoch seeds for dropout and
//! drop-path (`Trainer::train_epoch`); reseeding it per batch would tie those
//! draws to the data and differ between the CPU and CUDA generators. A host
//! draw is the same numbers on every device, independent of the training
//! step's own randomness, cheap (16 floats per image against the 12,288 bytes
//! of a 64x64 image), needs no read back from the device, and lets the tests
//! measure exactly what was drawn. The only per-pixel randomness, the noise of
//! random erasing, is a counter-based hash computed on the device from a key
//! drawn here ([`super::ops::hash_noise`]).

use rand::Rng;
use rand_chacha::ChaCha8Rng;
use tch::{Device, Tensor};

use crate::data::augment::original::CROP_RATIO;
use crate::data::augment::{cutmix_box, draw_mix, random_box, Augment, MixKind, ERASE_RATIO, ERASE_SCALE};

/// Columns of [`BatchParams::to_tensor`], one row per image.
pub mod col {
    /// Random resized crop box: top, left, height, width in pixels (the whole image when off).
    pub const CROP: usize = 0;
    /// Padded-crop shift: rows, then columns (0 when off).
    pub const SHIFT: usize = 4;
    /// 1 to flip horizontally, else 0.
    pub const FLIP: usize = 6;
    /// Colour jitter factors: brightness, contrast, saturation (1 when off).
    pub const JITTER: usize = 7;
    /// Erased box: top, left, height, width (height and width 0 when not erased).
    pub const ERASE: usize = 10;
    /// Values per image.
    pub const WIDTH: usize = 14;
}

/// A batch mix as drawn: the kind with the own label's weight, and for CutMix the box.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Mix {
    /// Mixup or CutMix, with `lam` (for CutMix, corrected to the pasted box).
    pub kind: MixKind,
    /// CutMix's box `(y0, y1, x0, x1)`, end exclusive.
    pub cut: Option<(usize, usize, usize, usize)>,
}

/// Every random number one batch's augmentations use.
#[derive(Debug, Clone, PartialEq)]
pub struct BatchParams {
    /// `n * col::WIDTH` values, row-major (see [`col`]).
    pub table: Vec<f32>,
    /// Images in the batch.
    pub n: usize,
    /// Key of the erasing noise ([`super::ops::hash_noise`]).
    pub noise_key: u32,
    /// The batch mix, if any.
    pub mix: Option<Mix>,
}

impl BatchParams {
    /// Draws the parameters of `n` images of side `side` under `aug`, image by
    /// image in torchvision's order (resized crop, padded crop, flip, jitter,
    /// erasing), then the batch mix (none for a batch of one).
    pub fn draw(aug: &Augment, side: usize, n: usize, rng: &mut ChaCha8Rng) -> Self {
        let mut table = Vec::with_capacity(n * col::WIDTH);
        let s = side as f32;
        let pad = aug.crop_padding as i64;
        let (lo, hi) = ((1.0 - aug.color_jitter).max(0.0) as f32, (1.0 + aug.color_jitter) as f32);
        for _ in 0..n {
            let mut row = [0.0f32; col::WIDTH];
            row[col::CROP..col::CROP + 4].copy_from_slice(&[0.0, 0.0, s, s]);
            if aug.crop_scale.0 < 1.0 {
                let (top, left, h, w) = random_box(side, aug.crop_scale, CROP_RATIO, rng);
                row[col::CROP..col::CROP + 4].copy_from_slice(&[top as f32, left as f32, h as f32, w as f32]);
            }
            if pad > 0 {
                row[col::SHIFT] = rng.random_range(-pad..=pad) as f32;
                row[col::SHIFT + 1] = rng.random_range(-pad..=pad) as f32;
            }
            if aug.hflip && rng.random_bool(0.5) {
                row[col::FLIP] = 1.0;
            }
            row[col::JITTER..col::JITTER + 3].fill(1.0);
            if aug.color_jitter > 0.0 {
                for f in &mut row[col::JITTER..col::JITTER + 3] {
                    *f = rng.random_range(lo..=hi);
                }
            }
            if aug.random_erasing > 0.0 && rng.random_bool(aug.random_erasing.min(1.0)) {
                let (top, left, h, w) = random_box(side, ERASE_SCALE, ERASE_RATIO, rng);
                row[col::ERASE..col::ERASE + 4].copy_from_slice(&[top as f32, left as f32, h as f32, w as f32]);
            }
            table.extend_from_slice(&row);
        }
        let noise_key = if aug.random_erasing > 0.0 { rng.random() } else { 0 };
        let mix = if n > 1 { draw_mix(aug, rng) } else { None };
        let mix = mix.map(|kind| match kind {
            MixKind::Mixup(_) => Mix { kind, cut: None },
            MixKind::Cutmix(lam) => {
                let (y0, y1, x0, x1) = cutmix_box(side, lam, rng);
                let lam = 1.0 - ((y1 - y0) * (x1 - x0)) as f32 / (side * side) as f32;
                Mix { kind: MixKind::Cutmix(lam), cut: Some((y0, y1, x0, x1)) }
            }
        });
        Self { table, n, noise_key, mix }
    }

    /// Column `c` of every image.
    pub fn column(&self, c: usize) -> Vec<f32> {
        self.table.chunks(col::WIDTH).map(|row| row[c]).collect()
    }

    /// The table as one `[n, col::WIDTH]` f32 tensor on `device` (one small upload).
    pub fn to_tensor(&self, device: Device) -> Tensor {
        Tensor::from_slice(&self.table).view([self.n as i64, col::WIDTH as i64]).to_device(device)
    }
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;

    use super::*;

    #[test]
    fn disabled_augmentations_draw_identity_parameters() {
        let p = BatchParams::draw(&Augment::NONE, 8, 3, &mut ChaCha8Rng::seed_from_u64(1));
        let row = [0.0, 0.0, 8.0, 8.0, 0.0, 0.0, 0.0, 1.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0];
        assert_eq!(p.table, row.repeat(3));
        assert_eq!((p.mix, p.noise_key), (None, 0));
    }

    #[test]
    fn cutmix_lam_is_the_kept_area_of_the_drawn_box() {
        let aug = Augment { cutmix_alpha: 1.0, ..Augment::NONE };
        let mut rng = ChaCha8Rng::seed_from_u64(2);
        for _ in 0..50 {
            let p = BatchParams::draw(&aug, 16, 4, &mut rng);
            let Some(Mix { kind: MixKind::Cutmix(lam), cut: Some((y0, y1, x0, x1)) }) = p.mix else {
                panic!("cutmix_alpha > 0 alone must always cut: {:?}", p.mix)
            };
            assert!(y0 <= y1 && y1 <= 16 && x0 <= x1 && x1 <= 16);
            let kept = 1.0 - ((y1 - y0) * (x1 - x0)) as f32 / 256.0;
            assert!((lam - kept).abs() < 1e-6, "{lam} vs {kept}");
        }
    }
}
