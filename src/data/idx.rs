//! IDX files (MNIST, Fashion-MNIST), plain or gzip-compressed.
//! Format: big-endian magic `0x00 0x00 type ndim`, then `ndim` u32 sizes, then data.

use std::io::Read;
use std::path::{Path, PathBuf};

use image::{DynamicImage, GrayImage};

use super::{DataError, Dataset};
use crate::preprocess::Preprocessor;

/// Fashion-MNIST class names, in label order.
pub const FASHION_MNIST_LABELS: [&str; 10] =
    ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"];

/// `dir/stem` or `dir/stem.gz`, whichever exists.
pub(super) fn find(dir: &Path, stem: &str) -> Option<PathBuf> {
    [dir.join(stem), dir.join(format!("{stem}.gz"))].into_iter().find(|p| p.is_file())
}

/// The largest IDX file, plain or once decompressed (Fashion-MNIST's training
/// images are 47 MB).
pub const MAX_IDX_BYTES: u64 = 4 << 30;

fn read_all(path: &Path) -> Result<Vec<u8>, DataError> {
    let io = |source| DataError::Io { path: path.to_path_buf(), source };
    let raw = crate::files::read(path, MAX_IDX_BYTES, "IDX file")?;
    if !raw.starts_with(&[0x1f, 0x8b]) {
        return Ok(raw);
    }
    // A small gzip file can expand without limit: decompress the header, then
    // only the data it declares, and one byte more to tell whether there is more.
    let mut gz = flate2::read::GzDecoder::new(&raw[..]);
    let mut out = Vec::new();
    (&mut gz).take(4).read_to_end(&mut out).map_err(io)?;
    if out.len() < 4 {
        return Ok(out); // parse() names the truncated header
    }
    let ndim = u64::from(out[3]);
    (&mut gz).take(4 * ndim).read_to_end(&mut out).map_err(io)?;
    let data = out[4..]
        .chunks_exact(4)
        .try_fold(1u64, |n, d| n.checked_mul(u64::from(u32::from_be_bytes([d[0], d[1], d[2], d[3]]))));
    let declared =
        data.and_then(|d| d.checked_add(out.len() as u64)).filter(|n| *n <= MAX_IDX_BYTES).ok_or_else(|| {
            DataError::Idx {
                path: path.to_path_buf(),
                message: format!("its header declares more than {MAX_IDX_BYTES} bytes of data"),
            }
        })?;
    let rest = declared - out.len() as u64;
    out.reserve(rest.min(64 << 20) as usize);
    gz.take(rest + 1).read_to_end(&mut out).map_err(io)?;
    if out.len() as u64 > declared {
        return Err(DataError::Idx {
            path: path.to_path_buf(),
            message: format!("decompresses to more than the {declared} bytes its header declares"),
        });
    }
    Ok(out)
}

/// Parses an IDX u8 tensor: (dims, data).
fn parse(path: &Path, bytes: &[u8], want_ndim: usize) -> Result<(Vec<usize>, Vec<u8>), DataError> {
    let bad = |message: String| DataError::Idx { path: path.to_path_buf(), message };
    if bytes.len() < 4 || bytes[0] != 0 || bytes[1] != 0 {
        return Err(bad("not an IDX file (bad magic number)".into()));
    }
    if bytes[2] != 0x08 {
        return Err(bad(format!("element type 0x{:02x} is not u8 (0x08)", bytes[2])));
    }
    let ndim = bytes[3] as usize;
    if ndim != want_ndim {
        return Err(bad(format!("has {ndim} dimensions, expected {want_ndim}")));
    }
    let header = 4 + 4 * ndim;
    if bytes.len() < header {
        return Err(bad("truncated header".into()));
    }
    let dims: Vec<usize> = (0..ndim)
        .map(|i| u32::from_be_bytes([bytes[4 + 4 * i], bytes[5 + 4 * i], bytes[6 + 4 * i], bytes[7 + 4 * i]]) as usize)
        .collect();
    let n: usize = dims.iter().product();
    if bytes.len() - header != n {
        return Err(bad(format!("holds {} data bytes, header says {dims:?} = {n}", bytes.len() - header)));
    }
    Ok((dims, bytes[header..].to_vec()))
}

/// Reads an `idx3` image file: (count, rows, cols, pixels).
pub fn read_idx_images(path: &Path) -> Result<(usize, usize, usize, Vec<u8>), DataError> {
    let (dims, data) = parse(path, &read_all(path)?, 3)?;
    Ok((dims[0], dims[1], dims[2], data))
}

/// Reads an `idx1` label file.
pub fn read_idx_labels(path: &Path) -> Result<Vec<u8>, DataError> {
    Ok(parse(path, &read_all(path)?, 1)?.1)
}

/// Loads `{prefix}-images-idx3-ubyte[.gz]` + labels (`prefix` = `train` or `t10k`)
/// through the shared preprocessing, keeping at most `max_per_class` per class.
pub fn load_idx_split(
    dir: &Path,
    prefix: &str,
    prep: &Preprocessor,
    max_per_class: Option<usize>,
) -> Result<Dataset, DataError> {
    let missing = |stem: String| DataError::Idx {
        path: dir.join(&stem),
        message: "file not found (expected it, or its .gz, beside train-images-idx3-ubyte)".into(),
    };
    let img_stem = format!("{prefix}-images-idx3-ubyte");
    let lbl_stem = format!("{prefix}-labels-idx1-ubyte");
    let img_path = find(dir, &img_stem).ok_or_else(|| missing(img_stem))?;
    let lbl_path = find(dir, &lbl_stem).ok_or_else(|| missing(lbl_stem))?;
    let (count, rows, cols, pixels) = read_idx_images(&img_path)?;
    let labels = read_idx_labels(&lbl_path)?;
    if labels.len() != count {
        return Err(DataError::Idx {
            path: lbl_path,
            message: format!("{} labels for {count} images in {}", labels.len(), img_path.display()),
        });
    }
    if let Some(&bad) = labels.iter().find(|&&l| l as usize >= FASHION_MNIST_LABELS.len()) {
        return Err(DataError::Idx { path: lbl_path, message: format!("label {bad} is out of range 0..10") });
    }
    let keep = super::first_per_class(labels.iter().map(|&l| l as i64), max_per_class);
    use rayon::prelude::*;
    let hw = rows * cols;
    let images: Vec<Vec<u8>> = keep
        .par_iter()
        .map(|&i| {
            let raw = pixels[i * hw..(i + 1) * hw].to_vec();
            match GrayImage::from_raw(cols as u32, rows as u32, raw) {
                Some(img) => prep.prepare(DynamicImage::ImageLuma8(img)),
                None => vec![0; prep.image_len()],
            }
        })
        .collect();
    let mut out = Dataset { image_len: prep.image_len(), ..Default::default() };
    out.pixels = images.concat();
    out.labels = keep.iter().map(|&i| labels[i] as i64).collect();
    Ok(out)
}
