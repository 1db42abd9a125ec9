//! The augmentations of [`crate::data::augment`] as batched tensor operations
//! on `[B, C, S, S]` f32 images holding pixel values 0..=255, each image with
//! its own parameters (a row of [`super::params::BatchParams`]). Every op is
//! plain ATen (gather, `where`, `grid_sampler`, integer arithmetic), so the same
//! code runs on CPU and CUDA tensors without a host round trip.
//!
//! Unlike the CPU path, values are not rounded back to u8 between ops: the
//! results are statistically, not bitwise, those of the CPU augmentations.

use tch::{Device, Kind, Tensor};

/// `[1, n]`-shaped `0, 1, ..., n-1` as f32 on `device`.
fn positions(n: i64, device: Device) -> Tensor {
    Tensor::arange(n, (Kind::Float, device))
}

/// Column `c` of a `[B, W]` parameter table as `[B, 1, 1, 1]`, to broadcast over an image.
fn per_image(params: &Tensor, c: usize) -> Tensor {
    params.select(1, c as i64).view([-1, 1, 1, 1])
}

/// Random resized crop: each image's box (`params[:, c..c+4]` = top, left,
/// height, width in pixels) resampled to the full side, bilinearly with
/// half-pixel centres (as the CPU path), through one affine grid per image and
/// `grid_sampler` (border padding, so samples a half pixel outside the box repeat its edge).
pub fn resized_crop(x: &Tensor, params: &Tensor, c: usize) -> Tensor {
    let size = x.size();
    let s = size[3] as f64;
    let col = |k: usize| params.select(1, (c + k) as i64);
    let (top, left, h, w) = (col(0), col(1), col(2), col(3));
    // Output coordinate u in [-1, 1] (align_corners = false) samples the input at
    // u * w / S + (2 * left + w) / S - 1: pixel centre o maps to left + (o + 0.5) * w / S - 0.5.
    let zero = w.zeros_like();
    let row_x = Tensor::stack(&[&w / s, zero.shallow_clone(), (&left * 2.0 + &w) / s - 1.0], 1);
    let row_y = Tensor::stack(&[zero, &h / s, (&top * 2.0 + &h) / s - 1.0], 1);
    let theta = Tensor::stack(&[row_x, row_y], 1);
    let grid = Tensor::affine_grid_generator(&theta, size.as_slice(), false);
    // interpolation 0: bilinear; padding 1: border.
    x.grid_sampler(&grid, 0, 1, false)
}

/// Zero padding by `pad` then a crop back at each image's shift (`params[:, c]`
/// rows, `params[:, c+1]` columns), with each image's horizontal flip
/// (`params[:, flip] = 1`) folded into the same column gather: pad once, then
/// two `gather`s of per-image row and column indices.
pub fn padded_crop_flip(x: &Tensor, params: &Tensor, pad: i64, c: usize, flip: Option<usize>) -> Tensor {
    let size = x.size();
    let (b, ch, s) = (size[0], size[1], size[3]);
    let padded = x.constant_pad_nd([pad, pad, pad, pad]);
    let base = positions(s, x.device()).view([1, s]);
    let dy = params.select(1, c as i64).view([b, 1]);
    let dx = params.select(1, c as i64 + 1).view([b, 1]);
    let rows = (&base + dy + pad as f64).to_kind(Kind::Int64);
    let cols = match flip {
        Some(f) => {
            let flipped = params.select(1, f as i64).view([b, 1]).gt(0.5);
            (base.shallow_clone() * -1.0 + (s - 1) as f64).where_self(&flipped, &base)
        }
        None => base.expand([b, s], false),
    };
    let cols = (cols + dx + pad as f64).to_kind(Kind::Int64);
    let rows = rows.view([b, 1, s, 1]).expand([b, ch, s, s + 2 * pad], false);
    let cropped = padded.gather(2, &rows, false);
    cropped.gather(3, &cols.view([b, 1, 1, s]).expand([b, ch, s, s], false), false)
}

/// Horizontal flip of the images whose `params[:, c]` is 1: `where` on a per-image mask.
pub fn flip(x: &Tensor, params: &Tensor, c: usize) -> Tensor {
    x.flip([3]).where_self(&per_image(params, c).gt(0.5), x)
}

/// Colour jitter with each image's brightness, contrast and saturation factors
/// (`params[:, c..c+3]`), in the CPU path's order and with its clamping to
/// 0..=255; contrast blends with the mean gray level, saturation with the
/// per-pixel gray (saturation needs 3 channels).
pub fn color_jitter(x: &Tensor, params: &Tensor, c: usize) -> Tensor {
    let channels = x.size()[1];
    let gray = |x: &Tensor| -> Tensor {
        if channels == 3 {
            let weights = Tensor::from_slice(&[0.299f32, 0.587, 0.114]).view([1, 3, 1, 1]).to_device(x.device());
            (x * weights).sum_dim_intlist(1, true, Kind::Float)
        } else {
            x.shallow_clone()
        }
    };
    let x = (x * per_image(params, c)).clamp(0.0, 255.0);
    let mean = gray(&x).mean_dim(&[1i64, 2, 3][..], true, Kind::Float);
    let x = ((&x - &mean) * per_image(params, c + 1) + &mean).clamp(0.0, 255.0);
    if channels != 3 {
        return x;
    }
    let y = gray(&x);
    ((&x - &y) * per_image(params, c + 2) + &y).clamp(0.0, 255.0)
}

/// `[B, 1, S, S]` bool mask of each image's box `params[:, c..c+4]` (top, left, height, width).
pub fn box_mask(params: &Tensor, c: usize, side: i64) -> Tensor {
    let p = positions(side, params.device());
    let col = |k: usize| params.select(1, (c + k) as i64).view([-1, 1, 1]);
    let (top, left, h, w) = (col(0), col(1), col(2), col(3));
    let (yy, xx) = (p.view([1, side, 1]), p.view([1, 1, side]));
    let rows = yy.ge_tensor(&top).logical_and(&yy.lt_tensor(&(&top + h)));
    let cols = xx.ge_tensor(&left).logical_and(&xx.lt_tensor(&(&left + w)));
    rows.logical_and(&cols).unsqueeze(1)
}

/// Random erasing: each image's box (`params[:, c..c+4]`; empty when not
/// erased) filled with uniform noise 0..=255 from [`hash_noise`] with `key`.
pub fn erase(x: &Tensor, params: &Tensor, c: usize, key: u32) -> Tensor {
    let mask = box_mask(params, c, x.size()[3]);
    hash_noise(key, &x.size(), x.device()).where_self(&mask, x)
}

/// Uniform integer noise 0..=255 (as f32) of `shape`: a 32-bit integer hash
/// (two rounds of multiply-xorshift, "lowbias32") of each element's index mixed
/// with `key`, in int64 arithmetic that never overflows, so every device
/// computes the same values without a random generator.
pub fn hash_noise(key: u32, shape: &[i64], device: Device) -> Tensor {
    const MASK: i64 = 0xFFFF_FFFF;
    let numel: i64 = shape.iter().product();
    let index = Tensor::arange(numel, (Kind::Int64, device));
    // Index (< 2^31 for any batch that fits) times a 32-bit odd constant stays below 2^63.
    let mut h = (index * 0x9E37_79B1i64 + i64::from(key)).bitwise_and(MASK);
    for _ in 0..2 {
        h = (h.bitwise_right_shift_tensor_scalar(16).bitwise_xor_tensor(&h) * 0x045D_9F3Bi64).bitwise_and(MASK);
    }
    let h = h.bitwise_right_shift_tensor_scalar(16).bitwise_xor_tensor(&h);
    h.bitwise_and(255).to_kind(Kind::Float).view(shape)
}

/// CutMix: the box `(y0, y1, x0, x1)` of image `n - 1 - i` pasted into image `i`.
pub fn cutmix(x: &Tensor, cut: (usize, usize, usize, usize)) -> Tensor {
    let side = x.size()[3];
    let (y0, y1, x0, x1) = cut;
    let b = Tensor::from_slice(&[y0 as f32, x0 as f32, (y1 - y0) as f32, (x1 - x0) as f32]).to_device(x.device());
    let mask = box_mask(&b.view([1, 4]), 0, side);
    x.flip([0]).where_self(&mask, x)
}

/// Mixup on normalised images: `lam * x_i + (1 - lam) * x_{n-1-i}`.
pub fn mixup(x: &Tensor, lam: f32) -> Tensor {
    x * f64::from(lam) + x.flip([0]) * (1.0 - f64::from(lam))
}

/// `(x / 255 - mean[c]) / std[c]` in f32, the [`vit::Preprocessor`]'s normalisation.
pub fn normalize(x: &Tensor, mean: &Tensor, std: &Tensor) -> Tensor {
    (x / 255.0 - mean) / std
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashed_noise_is_uniform_repeatable_and_keyed() {
        let shape = [4i64, 3, 32, 32];
        let a = hash_noise(7, &shape, Device::Cpu);
        assert!(a.equal(&hash_noise(7, &shape, Device::Cpu)), "the same key must give the same noise");
        let other = hash_noise(8, &shape, Device::Cpu);
        let same = a.eq_tensor(&other).to_kind(Kind::Float).mean(Kind::Float).double_value(&[]);
        assert!(same < 0.02, "another key must give other noise ({same} equal)");
        let bins = (a.flatten(0, -1) / 16.0).floor().to_kind(Kind::Int64);
        let counts = Vec::<i64>::try_from(bins.bincount::<Tensor>(None, 16)).unwrap();
        assert_eq!(counts.len(), 16, "values must lie in 0..=255: {counts:?}");
        let expected = 12288.0 / 16.0;
        assert!(counts.iter().all(|&c| (c as f64 - expected).abs() < 0.15 * expected), "16 bins: {counts:?}");
        let mean = a.mean(Kind::Float).double_value(&[]);
        assert!((mean - 127.5).abs() < 3.0, "mean {mean}");
    }

    #[test]
    fn box_masks_cover_exactly_their_boxes() {
        let boxes = Tensor::from_slice(&[1.0f32, 2.0, 3.0, 4.0, 0.0, 0.0, 0.0, 0.0]).view([2, 4]);
        let mask = box_mask(&boxes, 0, 8).to_kind(Kind::Float);
        assert_eq!(mask.size(), [2, 1, 8, 8]);
        assert_eq!(mask.get(0).sum(Kind::Float).double_value(&[]), 12.0);
        assert_eq!(mask.double_value(&[0, 0, 1, 2]), 1.0);
        assert_eq!(mask.double_value(&[0, 0, 3, 5]), 1.0);
        assert_eq!(mask.double_value(&[0, 0, 4, 5]), 0.0);
        assert_eq!(mask.double_value(&[0, 0, 1, 6]), 0.0);
        assert_eq!(mask.get(1).sum(Kind::Float).double_value(&[]), 0.0, "an empty box erases nothing");
    }
}
