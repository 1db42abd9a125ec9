//! The one image preprocessing implementation. Training, evaluation and
//! inference all call [`Preprocessor`]: decode, convert to the model's channel
//! count, resize to `image_size` square, then normalise per channel. Keeping
//! decode/resize (u8) apart from normalisation (f32) lets the trainer hold
//! compact u8 data sets in memory and normalise each batch with the same code.
//!
//! A file is read only when it is a regular file no larger than
//! [`Preprocessor::max_file_bytes`]: a FIFO, a device such as `/dev/zero` or
//! a multi-gigabyte file would otherwise be read whole, or forever, before
//! the decoder (with its own pixel limits) sees a byte.

use std::io::Read;
use std::path::Path;
use std::sync::OnceLock;

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
    /// The path is not a regular file (a directory, FIFO, device, socket).
    #[error("cannot read image {path}: it is a {kind}, not a regular file")]
    NotAFile {
        /// The image path.
        path: String,
        /// What it is instead (`directory`, `FIFO`, `character device`, ...).
        kind: &'static str,
    },
    /// The file is larger than [`Preprocessor::max_file_bytes`].
    #[error("cannot read image {path}: it is {size} bytes, over the limit of {limit} bytes for one image file (set {MAX_IMAGE_BYTES_ENV} to raise it)")]
    TooLarge {
        /// The image file.
        path: String,
        /// Its size in bytes (at least, for a file still growing).
        size: u64,
        /// The limit in bytes.
        limit: u64,
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
    /// Largest image file read, in bytes; larger files are a
    /// [`PreprocessError::TooLarge`] before anything is read.
    pub max_file_bytes: u64,
}

/// Default of [`Preprocessor::max_file_bytes`]: 256 MiB, far above any
/// encoded image a ViT is fed, far below what would exhaust memory.
pub const DEFAULT_MAX_IMAGE_BYTES: u64 = 256 << 20;

/// Environment variable that sets [`Preprocessor::max_file_bytes`] for
/// [`Preprocessor::from_config`] (a whole number of bytes).
pub const MAX_IMAGE_BYTES_ENV: &str = "VIT_MAX_IMAGE_BYTES";

/// [`DEFAULT_MAX_IMAGE_BYTES`], or the value of [`MAX_IMAGE_BYTES_ENV`] when
/// it is set; read once per process (an invalid value is warned about once).
pub fn max_image_bytes() -> u64 {
    static LIMIT: OnceLock<u64> = OnceLock::new();
    *LIMIT.get_or_init(|| match std::env::var(MAX_IMAGE_BYTES_ENV) {
        Err(_) => DEFAULT_MAX_IMAGE_BYTES,
        Ok(v) => match v.trim().parse::<u64>() {
            Ok(n) if n > 0 => n,
            _ => {
                log::warn!(
                    "ignoring {MAX_IMAGE_BYTES_ENV}={v:?}: not a positive whole number of bytes; the limit stays {DEFAULT_MAX_IMAGE_BYTES}"
                );
                DEFAULT_MAX_IMAGE_BYTES
            }
        },
    })
}

impl Preprocessor {
    /// The preprocessing a config describes, with the file size limit of
    /// [`max_image_bytes`].
    pub fn from_config(cfg: &ViTConfig) -> Self {
        let (mean, std) = cfg.channel_stats();
        Self {
            image_size: cfg.image_size,
            channels: cfg.in_channels,
            mean,
            std,
            resize: cfg.preprocess.resize,
            max_file_bytes: max_image_bytes(),
        }
    }

    /// Values per image (`channels * image_size^2`).
    pub fn image_len(&self) -> usize {
        self.channels * self.image_size * self.image_size
    }

    /// Reads and decodes a file into CHW u8 pixels. Only a regular file of at
    /// most [`Preprocessor::max_file_bytes`] is read.
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
        Ok(self.prepare(self.decode_file(path)?))
    }

    /// Reads and decodes a file at its own size and colour type, before
    /// [`Preprocessor::prepare`]: what a crop of the original image starts from.
    /// Only a regular file of at most [`Preprocessor::max_file_bytes`] is read.
    pub fn decode_file(&self, path: &Path) -> Result<DynamicImage, PreprocessError> {
        let name = || path.display().to_string();
        let read_error = |source| PreprocessError::Read { path: name(), source };
        // Checked before opening: opening a FIFO blocks, and /dev/zero never ends.
        let meta = std::fs::metadata(path).map_err(read_error)?;
        if !meta.is_file() {
            return Err(PreprocessError::NotAFile { path: name(), kind: crate::files::file_kind(meta.file_type()) });
        }
        let limit = self.max_file_bytes;
        if meta.len() > limit {
            return Err(PreprocessError::TooLarge { path: name(), size: meta.len(), limit });
        }
        let mut bytes = Vec::with_capacity(meta.len() as usize);
        // The file may grow after the check: never read past the limit.
        std::fs::File::open(path)
            .and_then(|f| f.take(limit.saturating_add(1)).read_to_end(&mut bytes))
            .map_err(read_error)?;
        if bytes.len() as u64 > limit {
            return Err(PreprocessError::TooLarge { path: name(), size: bytes.len() as u64, limit });
        }
        image::load_from_memory(&bytes).map_err(|e| PreprocessError::Decode { path: name(), message: e.to_string() })
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
        let hw = (self.image_size * self.image_size).max(1);
        // A u8 has 256 values: each channel's results are computed once (with the same f32 operations) and
        // looked up, plane by plane, instead of two divisions per pixel.
        let tables: Vec<[f32; 256]> = (0..self.channels)
            .map(|c| std::array::from_fn(|p| (p as f32 / 255.0 - self.mean[c]) / self.std[c]))
            .collect();
        out.clear();
        out.reserve(pixels.len());
        for (plane, values) in pixels.chunks(hw).enumerate() {
            let table = &tables[plane % self.channels];
            out.extend(values.iter().map(|&p| table[usize::from(p)]));
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
            max_file_bytes: DEFAULT_MAX_IMAGE_BYTES,
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
            max_file_bytes: DEFAULT_MAX_IMAGE_BYTES,
        };
        let out = p.normalize(&[255, 255, 0]);
        assert_eq!(out, vec![1.0, 1.0, -4.0]);
    }

    #[test]
    fn normalisation_is_the_formula_bit_for_bit_for_every_value_and_plane() {
        let p = Preprocessor { mean: vec![0.485, 0.456, 0.406], std: vec![0.229, 0.224, 0.225], ..prep(16, 3) };
        // Two images of 3 planes of 256 values: every u8 value in every plane.
        let pixels: Vec<u8> = (0..2 * 3 * 256).map(|i| (i % 256) as u8).collect();
        let out = p.normalize(&pixels);
        for (i, (&v, &px)) in out.iter().zip(&pixels).enumerate() {
            let c = (i / 256) % 3;
            assert_eq!(v.to_bits(), ((px as f32 / 255.0 - p.mean[c]) / p.std[c]).to_bits(), "value {px}, plane {c}");
        }
    }

    #[test]
    fn corrupt_bytes_are_an_error() {
        assert!(prep(4, 3).load_bytes(b"not an image").is_err());
    }

    #[test]
    fn huge_and_endless_files_are_refused_unread() {
        let dir = tempfile::tempdir().unwrap();
        let huge = dir.path().join("huge.png");
        // Sparse: 2 GiB on paper, no disk used; reading it whole would take 2 GiB of memory.
        std::fs::File::create(&huge).unwrap().set_len(1 << 31).unwrap();
        let err = prep(4, 3).load_file(&huge).unwrap_err();
        assert!(matches!(err, PreprocessError::TooLarge { size: 2147483648, .. }), "{err}");
        assert!(err.to_string().contains(MAX_IMAGE_BYTES_ENV), "{err}");
        let err = prep(4, 3).load_file(Path::new("/dev/zero")).unwrap_err();
        assert!(matches!(err, PreprocessError::NotAFile { kind: "character device", .. }), "{err}");
        let small = Preprocessor { max_file_bytes: 4, ..prep(4, 3) };
        std::fs::write(dir.path().join("five.png"), b"12345").unwrap();
        assert!(matches!(small.load_file(&dir.path().join("five.png")), Err(PreprocessError::TooLarge { .. })));
    }
}
