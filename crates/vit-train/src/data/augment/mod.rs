//! Training-time augmentations on CHW u8 images, cheap enough to run on the
//! batch producer thread beside a 2-core training step: random resized crop,
//! random crop with zero padding, horizontal flip, colour jitter, random
//! erasing; and the batch-level mixes (mixup, CutMix) that pair image `i`
//! with image `n - 1 - i` of the batch (timm's `Mixup`, batch mode).
//!
//! Every draw comes from the batch's seeded RNG, so runs and resumes repeat.
//! A streamed set can instead take the resized crop from the original file
//! ([`original`]).

use rand::Rng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Beta, Distribution};
use vit::config::TrainConfig;

pub mod original;

/// Which augmentations run, with their strengths (see [`TrainConfig`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Augment {
    /// Random horizontal flip with probability 1/2.
    pub hflip: bool,
    /// Pad by this many zero pixels, then crop back at a random offset.
    pub crop_padding: usize,
    /// Random resized crop area range; `(1, 1)` is off.
    pub crop_scale: (f64, f64),
    /// Take the resized crop from the original file ([`original`]) when the
    /// set is streamed.
    pub from_original: bool,
    /// Colour jitter strength (0: off).
    pub color_jitter: f64,
    /// Probability of erasing one rectangle.
    pub random_erasing: f64,
    /// Mixup Beta parameter (0: off).
    pub mixup_alpha: f64,
    /// CutMix Beta parameter (0: off).
    pub cutmix_alpha: f64,
}

impl Default for Augment {
    fn default() -> Self {
        Self::NONE
    }
}

impl Augment {
    /// No augmentation (evaluation).
    pub const NONE: Self = Self {
        hflip: false,
        crop_padding: 0,
        crop_scale: (1.0, 1.0),
        from_original: false,
        color_jitter: 0.0,
        random_erasing: 0.0,
        mixup_alpha: 0.0,
        cutmix_alpha: 0.0,
    };

    /// The recipe's training augmentations.
    pub fn from_train(t: &TrainConfig) -> Self {
        Self {
            hflip: t.hflip,
            crop_padding: t.crop_padding,
            crop_scale: t.crop_scale,
            from_original: t.crop_from_original,
            color_jitter: t.color_jitter,
            random_erasing: t.random_erasing,
            mixup_alpha: t.mixup_alpha,
            cutmix_alpha: t.cutmix_alpha,
        }
    }
}

/// One image's geometry: channels and square side.
#[derive(Debug, Clone, Copy)]
pub struct Geometry {
    /// Colour planes.
    pub channels: usize,
    /// Width = height.
    pub side: usize,
}

/// All per-image augmentations of `aug`, in place, in torchvision's usual order:
/// geometry (resized crop, padded crop, flip), colour, then erasing.
pub fn augment_image(img: &mut [u8], scratch: &mut Vec<u8>, g: Geometry, aug: &Augment, rng: &mut ChaCha8Rng) {
    if aug.crop_scale.0 < 1.0 {
        random_resized_crop(img, scratch, g, aug.crop_scale, rng);
    }
    if aug.crop_padding > 0 {
        padded_crop(img, scratch, g, aug.crop_padding, rng);
    }
    if aug.hflip && rng.random_bool(0.5) {
        for row in img.chunks_mut(g.side) {
            row.reverse();
        }
    }
    if aug.color_jitter > 0.0 {
        color_jitter(img, g, aug.color_jitter, rng);
    }
    if aug.random_erasing > 0.0 && rng.random_bool(aug.random_erasing) {
        random_erase(img, g, rng);
    }
}

/// A random `(top, left, height, width)` box of area fraction in `scale` and
/// aspect ratio in `ratio` (log-uniform), as torchvision's `get_params`; the
/// whole image after 10 failed draws.
pub(crate) fn random_box(
    side: usize,
    scale: (f64, f64),
    ratio: (f64, f64),
    rng: &mut ChaCha8Rng,
) -> (usize, usize, usize, usize) {
    let area = (side * side) as f64;
    for _ in 0..10 {
        let target = area * rng.random_range(scale.0..=scale.1);
        let aspect = rng.random_range(ratio.0.ln()..=ratio.1.ln()).exp();
        let w = (target * aspect).sqrt().round() as usize;
        let h = (target / aspect).sqrt().round() as usize;
        if (1..=side).contains(&w) && (1..=side).contains(&h) {
            return (rng.random_range(0..=side - h), rng.random_range(0..=side - w), h, w);
        }
    }
    (0, 0, side, side)
}

/// Crops a random box (area in `scale`, aspect in [3/4, 4/3]) and resizes it
/// back to `side` x `side` bilinearly (half-pixel centres, as `antialias=False`).
fn random_resized_crop(img: &mut [u8], scratch: &mut Vec<u8>, g: Geometry, scale: (f64, f64), rng: &mut ChaCha8Rng) {
    let (top, left, h, w) = random_box(g.side, scale, original::CROP_RATIO, rng);
    scratch.clear();
    scratch.extend_from_slice(img);
    let s = g.side;
    // Source coordinate of each output row/column, with the two taps and weight.
    let taps = |len: usize, offset: usize| -> Vec<(usize, usize, f32)> {
        let step = len as f32 / s as f32;
        (0..s)
            .map(|o| {
                let src = ((o as f32 + 0.5) * step - 0.5).clamp(0.0, (len - 1) as f32);
                let i0 = src.floor() as usize;
                let i1 = (i0 + 1).min(len - 1);
                (offset + i0, offset + i1, src - i0 as f32)
            })
            .collect()
    };
    let (rows, cols) = (taps(h, top), taps(w, left));
    for c in 0..g.channels {
        let plane = &scratch[c * s * s..(c + 1) * s * s];
        let out = &mut img[c * s * s..(c + 1) * s * s];
        for (y, &(y0, y1, fy)) in rows.iter().enumerate() {
            for (x, &(x0, x1, fx)) in cols.iter().enumerate() {
                let p = |yy: usize, xx: usize| f32::from(plane[yy * s + xx]);
                let top_row = p(y0, x0) + (p(y0, x1) - p(y0, x0)) * fx;
                let bottom_row = p(y1, x0) + (p(y1, x1) - p(y1, x0)) * fx;
                out[y * s + x] = (top_row + (bottom_row - top_row) * fy).round().clamp(0.0, 255.0) as u8;
            }
        }
    }
}

/// Shifts the image by up to `pad` pixels each way, filling with zeros
/// (= zero padding then a random crop back to size).
fn padded_crop(img: &mut [u8], scratch: &mut Vec<u8>, g: Geometry, pad: usize, rng: &mut ChaCha8Rng) {
    let pad = pad as i64;
    let dy = rng.random_range(-pad..=pad) as isize;
    let dx = rng.random_range(-pad..=pad) as isize;
    if dx == 0 && dy == 0 {
        return;
    }
    scratch.clear();
    scratch.extend_from_slice(img);
    let s = g.side as isize;
    for c in 0..g.channels {
        let plane = c * g.side * g.side;
        for y in 0..s {
            for x in 0..s {
                let (sy, sx) = (y + dy, x + dx);
                let inside = (0..s).contains(&sy) && (0..s).contains(&sx);
                img[plane + (y * s + x) as usize] = if inside { scratch[plane + (sy * s + sx) as usize] } else { 0 };
            }
        }
    }
}

/// Brightness, contrast and saturation factors each drawn from [1 - s, 1 + s]
/// (torchvision's `ColorJitter(s, s, s)`, fixed order; saturation needs 3 channels).
fn color_jitter(img: &mut [u8], g: Geometry, strength: f64, rng: &mut ChaCha8Rng) {
    let lo = (1.0 - strength).max(0.0) as f32;
    let hi = (1.0 + strength) as f32;
    let mut draw = || rng.random_range(lo..=hi);
    let (brightness, contrast, saturation) = (draw(), draw(), draw());
    let n = g.side * g.side;
    let mut px: Vec<f32> = img.iter().map(|&v| f32::from(v) * brightness).collect();
    let gray = |px: &[f32], i: usize| -> f32 {
        if g.channels == 3 {
            0.299 * px[i] + 0.587 * px[n + i] + 0.114 * px[2 * n + i]
        } else {
            px[i]
        }
    };
    let clamp = |v: f32| v.clamp(0.0, 255.0);
    px.iter_mut().for_each(|v| *v = clamp(*v));
    let mean = (0..n).map(|i| gray(&px, i)).sum::<f32>() / n as f32;
    px.iter_mut().for_each(|v| *v = clamp(mean + (*v - mean) * contrast));
    if g.channels == 3 {
        for i in 0..n {
            let y = gray(&px, i);
            for c in 0..3 {
                px[c * n + i] = clamp(y + (px[c * n + i] - y) * saturation);
            }
        }
    }
    for (o, v) in img.iter_mut().zip(&px) {
        *o = v.round() as u8;
    }
}

/// Area fraction range of an erased box (torchvision's `RandomErasing` default).
pub const ERASE_SCALE: (f64, f64) = (0.02, 0.33);
/// Aspect ratio range of an erased box.
pub const ERASE_RATIO: (f64, f64) = (0.3, 1.0 / 0.3);

/// Fills one random rectangle (2-33% of the area, aspect 0.3-3.3) with
/// uniform noise (torchvision's `RandomErasing` with random values).
fn random_erase(img: &mut [u8], g: Geometry, rng: &mut ChaCha8Rng) {
    let (top, left, h, w) = random_box(g.side, ERASE_SCALE, ERASE_RATIO, rng);
    for c in 0..g.channels {
        for y in top..top + h {
            let row = c * g.side * g.side + y * g.side;
            img[row + left..row + left + w].iter_mut().for_each(|v| *v = rng.random());
        }
    }
}

/// Which batch mix to apply, with its weight. Either way image `i` becomes
/// `lam` of itself and `1 - lam` of image `n - 1 - i`, so the loss is
/// `lam * CE(labels) + (1 - lam) * CE(labels reversed)`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum MixKind {
    /// Blend whole images: `lam * x + (1 - lam) * partner` (on normalised pixels).
    Mixup(f32),
    /// Paste the partner's pixels into a box of area `1 - lam`; the returned
    /// `lam` is corrected to the box actually pasted.
    Cutmix(f32),
}

impl MixKind {
    /// The weight of each image's own label.
    pub fn lam(self) -> f32 {
        match self {
            Self::Mixup(lam) | Self::Cutmix(lam) => lam,
        }
    }
}

/// Draws this batch's mix (none when both alphas are 0; one of the two, with
/// equal odds, when both are set).
pub fn draw_mix(aug: &Augment, rng: &mut ChaCha8Rng) -> Option<MixKind> {
    let beta = |alpha: f64, rng: &mut ChaCha8Rng| Beta::new(alpha, alpha).map(|b| b.sample(rng) as f32).unwrap_or(1.0);
    match (aug.mixup_alpha > 0.0, aug.cutmix_alpha > 0.0) {
        (false, false) => None,
        (true, false) => Some(MixKind::Mixup(beta(aug.mixup_alpha, rng))),
        (false, true) => Some(MixKind::Cutmix(beta(aug.cutmix_alpha, rng))),
        (true, true) if rng.random_bool(0.5) => Some(MixKind::Mixup(beta(aug.mixup_alpha, rng))),
        (true, true) => Some(MixKind::Cutmix(beta(aug.cutmix_alpha, rng))),
    }
}

/// CutMix on a batch of u8 images (`n` images of `g`): a box of area about
/// `1 - lam`, centred uniformly and clipped to the image, is copied from image
/// `n - 1 - i` into image `i`. Returns the weight of the own label, `1 - box area / image area`.
pub fn cutmix(pixels: &mut [u8], g: Geometry, lam: f32, rng: &mut ChaCha8Rng) -> f32 {
    let s = g.side;
    let (y0, y1, x0, x1) = cutmix_box(s, lam, rng);
    let image_len = g.channels * s * s;
    let source = pixels.to_vec();
    let n = pixels.len() / image_len;
    for (i, img) in pixels.chunks_mut(image_len).enumerate() {
        let partner = &source[(n - 1 - i) * image_len..(n - i) * image_len];
        for c in 0..g.channels {
            for y in y0..y1 {
                let row = c * s * s + y * s;
                img[row + x0..row + x1].copy_from_slice(&partner[row + x0..row + x1]);
            }
        }
    }
    1.0 - ((y1 - y0) * (x1 - x0)) as f32 / (s * s) as f32
}

/// CutMix's box `(y0, y1, x0, x1)` (end exclusive) on a `side` x `side` image:
/// sides of `sqrt(1 - lam) * side`, centred uniformly, clipped to the image.
pub fn cutmix_box(side: usize, lam: f32, rng: &mut ChaCha8Rng) -> (usize, usize, usize, usize) {
    let cut = ((1.0 - lam).max(0.0).sqrt() * side as f32) as usize;
    let (cy, cx) = (rng.random_range(0..side), rng.random_range(0..side));
    let (y0, y1) = (cy.saturating_sub(cut / 2), (cy + cut / 2).min(side));
    let (x0, x1) = (cx.saturating_sub(cut / 2), (cx + cut / 2).min(side));
    (y0, y1, x0, x1)
}

/// Mixup on normalised pixels: `x_i = lam * x_i + (1 - lam) * x_{n-1-i}`.
pub fn mixup(pixels: &mut [f32], image_len: usize, lam: f32) {
    let source = pixels.to_vec();
    let n = pixels.len() / image_len;
    for (i, img) in pixels.chunks_mut(image_len).enumerate() {
        let partner = &source[(n - 1 - i) * image_len..(n - i) * image_len];
        for (v, p) in img.iter_mut().zip(partner) {
            *v = lam * *v + (1.0 - lam) * p;
        }
    }
}

#[cfg(test)]
mod tests;
