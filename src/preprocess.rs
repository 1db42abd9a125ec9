//! The one image preprocessing implementation. Training, evaluation and
//! inference all call [`Preprocessor`]: decode, convert to the model's channel
//! count, resize to `image_size` square, then normalise per channel. Keeping
//! decode/resize (u8) apart from normalisation (f32) lets the trainer hold
//! compact u8 data sets in memory and normalise each batch with the same code.

use std::path::Path;

use image::{imageops::FilterType, DynamicImage};

use crate::config::{Resize, ViTConfig};

/// Errors turning a file into pixels.
#[derive(Debug, thiserror::Error)]
pub enum PreprocessError {
    /// The file could not be read.
    #[error("cannot read image {path}: {source}")]
    Read {
        /// The image file.
        path: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// The bytes are not a decodable image.
    #[error("cannot decode image {path}: {message}")]
    Decode {
        /// The image file.
        path: String,
        /// The decoder's message.
        message: String,
    },
}

/// Decode + resize + normalise, parameterised by a model's config.
#[derive(Debug, Clone, PartialEq)]
pub struct Preprocessor {
    /// Output side in pixels.
    pub image_size: usize,
    /// 1 or 3.
    pub channels: usize,
    /// Per-channel mean (`channels` values).
    pub mean: Vec<f32>,
    /// Per-channel std (`channels` values).
    pub std: Vec<f32>,
    /// Interpolation for other sizes.
    pub resize: Resize,
}

impl Preprocessor {
    /// The preprocessing a config describes.
    pub fn from_config(cfg: &ViTConfig) -> Self {
        let (mean, std) = cfg.channel_stats();
        Self { image_size: cfg.image_size, channels: cfg.in_channels, mean, std, resize: cfg.preprocess.resize }
    }

    /// Values per image (`channels * image_size^2`).
    pub fn image_len(&self) -> usize {
        self.channels * self.image_size * self.image_size
    }

    /// Reads and decodes a file into CHW u8 pixels.
    ///
    /// ```no_run
    /// use std::path::Path;
    /// use vit::{Preprocessor, ViTConfig};
    ///
    /// let cfg = ViTConfig::from_toml_file(Path::new("models/coco5-vit.toml"))?;
    /// let prep = Preprocessor::from_config(&cfg);
    /// let pixels = prep.load_file(Path::new("cat.jpg"))?; // [C, H, W] u8
    /// let input = prep.normalize(&pixels); // what the model's `pixel_values` takes
    /// assert_eq!(input.len(), prep.image_len());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn load_file(&self, path: &Path) -> Result<Vec<u8>, PreprocessError> {
        let bytes =
            std::fs::read(path).map_err(|source| PreprocessError::Read { path: path.display().to_string(), source })?;
        self.load_bytes(&bytes).map_err(|message| PreprocessError::Decode { path: path.display().to_string(), message })
    }

    /// Decodes encoded image bytes (format guessed from content) into CHW u8 pixels.
    pub fn load_bytes(&self, bytes: &[u8]) -> Result<Vec<u8>, String> {
        let img = image::load_from_memory(bytes).map_err(|e| e.to_string())?;
        Ok(self.prepare(img))
    }

    /// Converts a decoded image to the model's channels and size, CHW u8.
    /// Grayscale becomes RGB by repetition; alpha is dropped (not blended).
    pub fn prepare(&self, img: DynamicImage) -> Vec<u8> {
        let side = self.image_size as u32;
        let filter = match self.resize {
            Resize::Bilinear => FilterType::Triangle,
            Resize::Nearest => FilterType::Nearest,
        };
        let img = if img.width() == side && img.height() == side { img } else { img.resize_exact(side, side, filter) };
        let hw = self.image_size * self.image_size;
        if self.channels == 1 {
            return img.into_luma8().into_raw();
        }
        let rgb = img.into_rgb8();
        let mut chw = vec![0u8; 3 * hw];
        for (i, px) in rgb.pixels().enumerate() {
            chw[i] = px[0];
            chw[hw + i] = px[1];
            chw[2 * hw + i] = px[2];
        }
        chw
    }

    /// Normalises CHW u8 images (any number, back to back) into `out`:
    /// `(pixel / 255 - mean[c]) / std[c]`, computed in f32 in that order.
    pub fn normalize_into(&self, pixels: &[u8], out: &mut Vec<f32>) {
        let hw = self.image_size * self.image_size;
        out.clear();
        out.reserve(pixels.len());
        for (i, &p) in pixels.iter().enumerate() {
            let c = (i / hw) % self.channels;
            out.push((p as f32 / 255.0 - self.mean[c]) / self.std[c]);
        }
    }

    /// Normalised copy of CHW u8 images.
    pub fn normalize(&self, pixels: &[u8]) -> Vec<f32> {
        let mut out = Vec::new();
        self.normalize_into(pixels, &mut out);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::{GrayImage, RgbaImage};

    fn prep(size: usize, channels: usize) -> Preprocessor {
        Preprocessor {
            image_size: size,
            channels,
            mean: vec![0.5; channels],
            std: vec![0.5; channels],
            resize: Resize::Bilinear,
        }
    }

    #[test]
    fn gray_becomes_rgb_and_rgba_drops_alpha() {
        let gray = DynamicImage::ImageLuma8(GrayImage::from_pixel(4, 4, image::Luma([200])));
        let out = prep(4, 3).prepare(gray);
        assert_eq!(out.len(), 48);
        assert!(out.iter().all(|&v| v == 200));
        let rgba = DynamicImage::ImageRgba8(RgbaImage::from_pixel(4, 4, image::Rgba([10, 20, 30, 0])));
        let out = prep(4, 3).prepare(rgba);
        assert_eq!((out[0], out[16], out[32]), (10, 20, 30));
    }

    #[test]
    fn other_sizes_are_resized() {
        let img = DynamicImage::ImageLuma8(GrayImage::from_pixel(10, 7, image::Luma([9])));
        let out = prep(4, 1).prepare(img);
        assert_eq!(out, vec![9; 16]);
    }

    #[test]
    fn normalisation_is_per_channel() {
        let p = Preprocessor {
            image_size: 1,
            channels: 3,
            mean: vec![0.0, 0.5, 1.0],
            std: vec![1.0, 0.5, 0.25],
            resize: Resize::Bilinear,
        };
        let out = p.normalize(&[255, 255, 0]);
        assert_eq!(out, vec![1.0, 1.0, -4.0]);
    }

    #[test]
    fn corrupt_bytes_are_an_error() {
        assert!(prep(4, 3).load_bytes(b"not an image").is_err());
    }
}
