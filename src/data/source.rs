//! Where one sample's encoded image lives ([`Source`]): its own file in an
//! image folder, or a member of a tar shard read by offset ([`Member`]). One
//! type for both, so a [`Dataset`](super::Dataset) decodes, streams, reports
//! and skips samples alike whichever way the data was stored.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::preprocess::{PreprocessError, Preprocessor};

/// The encoded bytes of one sample.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// An image file.
    File(PathBuf),
    /// A member of a tar shard.
    Member(Member),
}

/// An image stored as a member of a tar file: its data is `len` bytes at `offset`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// The tar file (shared by all of its members).
    pub shard: Arc<Path>,
    /// The member's name inside the tar file.
    pub name: String,
    /// Where the member's data starts in the file.
    pub offset: u64,
    /// The member's size in bytes.
    pub len: u64,
}

impl Source {
    /// The file to read: the image itself, or the shard holding it.
    pub fn file(&self) -> &Path {
        match self {
            Source::File(path) => path,
            Source::Member(m) => &m.shard,
        }
    }

    /// A path naming the sample in messages and skip lists: the file, or `SHARD.tar/MEMBER`.
    pub fn path(&self) -> PathBuf {
        match self {
            Source::File(path) => path.clone(),
            Source::Member(m) => m.shard.join(&m.name),
        }
    }

    /// Reads and decodes the image at its own size and colour type (before
    /// [`Preprocessor::prepare`]), for crops of the original image.
    pub fn original(&self, prep: &Preprocessor) -> Result<image::DynamicImage, PreprocessError> {
        match self {
            Source::File(path) => prep.decode_file(path),
            Source::Member(m) => {
                let bytes = m.read(prep.max_file_bytes)?;
                image::load_from_memory(&bytes)
                    .map_err(|e| PreprocessError::Decode { path: m.to_string(), message: e.to_string() })
            }
        }
    }

    /// Reads and decodes the image into CHW u8 pixels through `prep`.
    pub fn load(&self, prep: &Preprocessor) -> Result<Vec<u8>, PreprocessError> {
        Ok(prep.prepare(self.original(prep)?))
    }
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::File(path) => write!(f, "{}", path.display()),
            Source::Member(m) => m.fmt(f),
        }
    }
}

impl Member {
    /// The member's bytes, by one positioned read (at most `limit` bytes, as for image files).
    pub fn read(&self, limit: u64) -> Result<Vec<u8>, PreprocessError> {
        if self.len > limit {
            return Err(PreprocessError::TooLarge { path: self.to_string(), size: self.len, limit });
        }
        let mut bytes = vec![0u8; self.len as usize];
        read_at(&self.shard, self.offset, &mut bytes)
            .map_err(|source| PreprocessError::Read { path: self.to_string(), source })?;
        Ok(bytes)
    }
}

impl fmt::Display for Member {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (tar member {})", self.shard.display(), self.name)
    }
}

/// Fills `buf` from `path` at `offset`; a positioned read, so threads share no file cursor.
fn read_at(path: &Path, offset: u64, buf: &mut [u8]) -> std::io::Result<()> {
    let file = std::fs::File::open(path)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileExt;
        file.read_exact_at(buf, offset)
    }
    #[cfg(not(unix))]
    {
        use std::io::{Read, Seek, SeekFrom};
        let mut file = file;
        file.seek(SeekFrom::Start(offset))?;
        file.read_exact(buf)
    }
}
