//! Data sets too big to decode into memory: an image folder or tar shards read
//! as an index (file paths or tar members, and labels; no pixels) whose images
//! are decoded one at a time, when a batch needs them. The index comes from the same folder walk, split
//! and checks as [`load_splits`](super::load_splits), so a streamed set holds
//! the same samples in the same order as the decoded one, and an image decodes
//! to the same pixels through the same [`Preprocessor::load_file`].

use std::path::Path;

use image::DynamicImage;

use super::{folder_with, splits_with, DataError, Dataset, LoadOptions, Skipped, Source, Splits};
use crate::preprocess::{PreprocessError, Preprocessor};

/// Like [`load_splits`](super::load_splits), but image folders are only
/// indexed: each split's [`Dataset`] holds `labels`, `sources` and `image_len`
/// and no pixels ([`Dataset::is_streamed`]); read an image with
/// [`Dataset::read_image`]. IDX files are small and always decoded. Files that
/// turn out undecodable are found only when read.
pub fn scan_splits(dir: &Path, prep: &Preprocessor, opts: &LoadOptions) -> Result<Splits, DataError> {
    splits_with(dir, prep, opts, index_files)
}

/// Like [`load_folder`](super::load_folder), but the image folder is only
/// indexed: one evaluation set whose images are decoded when read
/// ([`Dataset::read_image`]), so evaluating a folder of any size takes the
/// memory of a batch, not of the folder.
pub fn scan_folder(dir: &Path, prep: &Preprocessor) -> Result<(Vec<String>, Dataset), DataError> {
    folder_with(dir, prep, index_files)
}

/// Bytes that `images` decoded images of `image_len` values take in memory.
pub fn decoded_bytes(images: usize, image_len: usize) -> u64 {
    images as u64 * image_len as u64
}

/// The index of `files`: sources and labels, no pixels; the `unreadable`
/// entries of the walk are warned about and kept in [`Dataset::skipped`].
fn index_files(
    _root: &Path,
    files: &[(Source, i64)],
    unreadable: Vec<Skipped>,
    prep: &Preprocessor,
) -> Result<Dataset, DataError> {
    for s in &unreadable {
        log::warn!("skipping {}: {}", crate::text::path(&s.path), crate::text::escape(&s.reason));
    }
    Ok(Dataset {
        pixels: Vec::new(),
        labels: files.iter().map(|(_, l)| *l).collect(),
        image_len: prep.image_len(),
        sources: files.iter().map(|(s, _)| s.clone()).collect(),
        skipped: unreadable,
    })
}

impl Dataset {
    /// True when the set is an index of files whose pixels are decoded on
    /// demand (made by [`scan_splits`]), false when every image is in memory.
    pub fn is_streamed(&self) -> bool {
        self.pixels.len() != self.labels.len() * self.image_len
    }

    /// Writes the CHW u8 pixels of image `i` into `out` (`image_len` values):
    /// copied from memory, or decoded from its file or tar member when the set is streamed.
    pub fn read_image(&self, i: usize, prep: &Preprocessor, out: &mut [u8]) -> Result<(), PreprocessError> {
        if !self.is_streamed() {
            out.copy_from_slice(self.image(i));
            return Ok(());
        }
        let pixels = self.sources[i].load(prep)?;
        out.copy_from_slice(&pixels);
        Ok(())
    }

    /// The original image `i`, decoded at its own size from its file or tar
    /// member (a streamed set only: a decoded set keeps the resized pixels
    /// alone), for augmentations that crop before resizing.
    pub fn read_original(&self, i: usize, prep: &Preprocessor) -> Result<DynamicImage, PreprocessError> {
        self.sources[i].original(prep)
    }
}
