//! Random resized crop from the original image, as torchvision's
//! `RandomResizedCrop`: the box is drawn on the decoded file at its own size
//! and resampled straight to the model's side in one antialiased bilinear
//! pass. Cropping the image already shrunk to the model's side instead (the
//! in-memory path, [`super::augment_image`]) resamples twice and zooms into
//! pixels that lost their detail. Resampling is `fast_image_resize`'s SIMD
//! convolution (PIL's bilinear filter): about ten times faster than `image`'s
//! resize for a 256x256 to 224x224 crop, which would otherwise cost more than
//! decoding the JPEG.

use std::cell::RefCell;

use fast_image_resize::images::{Image, ImageRef};
use fast_image_resize::{FilterType, PixelType, ResizeAlg, ResizeOptions, Resizer};
use image::DynamicImage;
use rand::Rng;
use rand_chacha::ChaCha8Rng;

/// The aspect ratio range (width / height) of torchvision's `RandomResizedCrop`.
pub const CROP_RATIO: (f64, f64) = (3.0 / 4.0, 4.0 / 3.0);

/// A crop box in pixels of the original image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CropBox {
    /// First row.
    pub top: u32,
    /// First column.
    pub left: u32,
    /// Rows.
    pub height: u32,
    /// Columns.
    pub width: u32,
}

/// torchvision's `RandomResizedCrop.get_params` on a `width` x `height`
/// image: up to 10 draws of an area fraction in `scale` and a log-uniform
/// aspect ratio in `ratio`, the first box that fits placed uniformly; after 10
/// misses, the largest centred box whose aspect ratio is clamped to `ratio`.
/// Sides round half to even, as Python's `round`.
pub fn random_crop_box(width: u32, height: u32, scale: (f64, f64), ratio: (f64, f64), rng: &mut ChaCha8Rng) -> CropBox {
    let (w_img, h_img) = (f64::from(width), f64::from(height));
    let area = w_img * h_img;
    let log_ratio = (ratio.0.ln(), ratio.1.ln());
    for _ in 0..10 {
        let target = area * rng.random_range(scale.0..=scale.1);
        let aspect = rng.random_range(log_ratio.0..=log_ratio.1).exp();
        let w = (target * aspect).sqrt().round_ties_even();
        let h = (target / aspect).sqrt().round_ties_even();
        if w > 0.0 && w <= w_img && h > 0.0 && h <= h_img {
            let (w, h) = (w as u32, h as u32);
            let top = rng.random_range(0..=height - h);
            let left = rng.random_range(0..=width - w);
            return CropBox { top, left, height: h, width: w };
        }
    }
    let in_ratio = w_img / h_img;
    let (w, h) = if in_ratio < ratio.0 {
        (width, ((w_img / ratio.0).round_ties_even() as u32).clamp(1, height))
    } else if in_ratio > ratio.1 {
        (((h_img * ratio.1).round_ties_even() as u32).clamp(1, width), height)
    } else {
        (width, height)
    };
    CropBox { top: (height - h) / 2, left: (width - w) / 2, height: h, width: w }
}

thread_local! {
    /// One resampler per batch worker: it keeps its scratch buffers between images.
    static RESIZER: RefCell<Resizer> = RefCell::new(Resizer::new());
}

/// Resamples the box `crop` of `img` to `side` x `side` into `out` as CHW u8
/// with `channels` planes (1 or 3): grayscale becomes RGB by repetition and
/// alpha is dropped, as [`vit::Preprocessor::prepare`] does. `crop` must lie
/// inside the image; the error (the resampler's message) cannot happen then.
pub fn crop_resize(
    img: DynamicImage,
    crop: CropBox,
    channels: usize,
    side: usize,
    out: &mut [u8],
) -> Result<(), String> {
    let width = img.width() as usize;
    let (raw, pixel) = if channels == 1 {
        (img.into_luma8().into_raw(), PixelType::U8)
    } else {
        (img.into_rgb8().into_raw(), PixelType::U8x3)
    };
    // The box is copied out first, as torchvision's `img.crop(box).resize(...)`: resampling inside the
    // whole image would blend in the pixels around the box at its edges.
    let (row, left) = (crop.width as usize * channels, crop.left as usize * channels);
    let mut boxed = Vec::with_capacity(row * crop.height as usize);
    for y in crop.top as usize..(crop.top + crop.height) as usize {
        let start = y * width * channels + left;
        boxed.extend_from_slice(&raw[start..start + row]);
    }
    let src = ImageRef::new(crop.width, crop.height, &boxed, pixel).map_err(|e| e.to_string())?;
    let mut dst = Image::new(side as u32, side as u32, pixel);
    let options = ResizeOptions::new().resize_alg(ResizeAlg::Convolution(FilterType::Bilinear));
    RESIZER.with(|r| r.borrow_mut().resize(&src, &mut dst, &options)).map_err(|e| e.to_string())?;
    let hwc = dst.buffer();
    let hw = side * side;
    for (i, px) in hwc.chunks_exact(channels).enumerate() {
        for (c, &v) in px.iter().enumerate() {
            out[c * hw + i] = v;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use image::{GrayImage, RgbImage};
    use rand::SeedableRng;

    use super::*;

    #[test]
    fn boxes_fit_the_image_and_follow_the_scale_and_ratio() {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        for _ in 0..500 {
            let b = random_crop_box(256, 192, (0.08, 1.0), CROP_RATIO, &mut rng);
            assert!(b.left + b.width <= 256 && b.top + b.height <= 192, "{b:?}");
            let fraction = f64::from(b.width * b.height) / f64::from(256 * 192);
            let aspect = f64::from(b.width) / f64::from(b.height);
            let fallback = b == CropBox { top: 0, left: 0, height: 192, width: 256 };
            assert!(fallback || (0.07..=1.01).contains(&fraction), "{b:?}: area {fraction}");
            assert!(fallback || (0.7..=1.4).contains(&aspect), "{b:?}: aspect {aspect}");
        }
    }

    #[test]
    fn ten_misses_fall_back_to_the_centre_at_the_nearest_allowed_ratio() {
        let mut rng = ChaCha8Rng::seed_from_u64(2);
        // A 100x10 strip: no box of 90-100% of its area has an aspect ratio in [3/4, 4/3].
        let b = random_crop_box(100, 10, (0.9, 1.0), CROP_RATIO, &mut rng);
        assert_eq!(b, CropBox { top: 0, left: 43, height: 10, width: 13 });
        let b = random_crop_box(10, 100, (0.9, 1.0), CROP_RATIO, &mut rng);
        assert_eq!(b, CropBox { top: 43, left: 0, height: 13, width: 10 });
    }

    #[test]
    fn the_same_rng_draws_the_same_box() {
        let draw = |seed| random_crop_box(300, 200, (0.08, 1.0), CROP_RATIO, &mut ChaCha8Rng::seed_from_u64(seed));
        assert_eq!(draw(5), draw(5));
        assert_ne!(draw(5), draw(6));
    }

    #[test]
    fn a_whole_box_at_the_same_size_is_a_copy_and_a_crop_only_sees_its_box() {
        let img = RgbImage::from_fn(8, 8, |x, y| image::Rgb([(x * 30) as u8, (y * 30) as u8, 7]));
        let mut out = vec![0u8; 3 * 64];
        let whole = CropBox { top: 0, left: 0, height: 8, width: 8 };
        crop_resize(DynamicImage::ImageRgb8(img.clone()), whole, 3, 8, &mut out).unwrap();
        assert_eq!(out[..64], (0..64).map(|i| ((i % 8) * 30) as u8).collect::<Vec<_>>()[..], "red plane = x ramp");
        assert!(out[128..].iter().all(|&v| v == 7), "blue plane stays constant");
        // The left half of a horizontal ramp, zoomed back to 8x8: no value of the right half.
        let left = CropBox { top: 0, left: 0, height: 8, width: 4 };
        crop_resize(DynamicImage::ImageRgb8(img), left, 3, 8, &mut out).unwrap();
        assert!(out[..64].iter().all(|&v| v <= 90), "{:?}", &out[..64]);
        let gray = GrayImage::from_pixel(20, 10, image::Luma([99]));
        let mut one = vec![0u8; 16];
        crop_resize(DynamicImage::ImageLuma8(gray), CropBox { top: 1, left: 3, height: 7, width: 9 }, 1, 4, &mut one)
            .unwrap();
        assert!(one.iter().all(|&v| v == 99));
    }
}
