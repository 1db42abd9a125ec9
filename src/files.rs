//! Reading the files the tools are handed besides images (configs, label
//! lists, run records, class lists, IDX data, checkpoints, models): as for
//! images ([`crate::preprocess`]), only a regular file is opened, and only up
//! to a size limit, checked before the read. `/dev/zero` would be read until
//! memory runs out, and opening a FIFO blocks until a writer comes.

use std::io::Read;
use std::path::{Path, PathBuf};

/// The largest text file read (configs, label lists, run records, class lists).
pub const MAX_TEXT_BYTES: u64 = 64 << 20;

/// The largest checkpoint or model file opened: far above any ViT this
/// toolchain trains (ViT-H/14 in f32 is 2.5 GB), far below what would fill a disk by mistake.
pub const MAX_WEIGHTS_BYTES: u64 = 64 << 30;

/// Why a file was not read.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    /// The operating system refused (missing, no permission, not UTF-8 text).
    #[error("cannot read {what} {}: {source}", .path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// What the file was to be.
        what: &'static str,
        /// The cause.
        source: std::io::Error,
    },
    /// A directory, FIFO, device or socket.
    #[error("cannot read {what} {}: it is a {kind}, not a regular file", .path.display())]
    NotAFile {
        /// The path.
        path: PathBuf,
        /// What the file was to be.
        what: &'static str,
        /// What it is instead.
        kind: &'static str,
    },
    /// Over the limit for its kind.
    #[error("cannot read {what} {}: it is {size} bytes, over the limit of {limit} bytes for {what}", .path.display())]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// What the file was to be.
        what: &'static str,
        /// Its size, or what was read of it.
        size: u64,
        /// The limit.
        limit: u64,
    },
}

impl FileError {
    /// The file does not exist (callers for which that is normal ask).
    pub fn is_not_found(&self) -> bool {
        matches!(self, Self::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound)
    }
}

/// Checks that `path` is a regular file of at most `limit` bytes, without
/// opening it (for files handed to a library that opens them: ONNX Runtime,
/// libtorch); returns its size. `what` names it in errors ("a config").
pub fn check_regular(path: &Path, limit: u64, what: &'static str) -> Result<u64, FileError> {
    let meta = std::fs::metadata(path).map_err(|source| FileError::Io { path: path.into(), what, source })?;
    if !meta.is_file() {
        return Err(FileError::NotAFile { path: path.into(), what, kind: file_kind(meta.file_type()) });
    }
    if meta.len() > limit {
        return Err(FileError::TooLarge { path: path.into(), what, size: meta.len(), limit });
    }
    Ok(meta.len())
}

/// Reads a regular file of at most `limit` bytes.
pub fn read(path: &Path, limit: u64, what: &'static str) -> Result<Vec<u8>, FileError> {
    let size = check_regular(path, limit, what)?;
    let mut bytes = Vec::with_capacity(size as usize);
    // The file may grow after the check: never read past the limit.
    std::fs::File::open(path)
        .and_then(|f| f.take(limit.saturating_add(1)).read_to_end(&mut bytes))
        .map_err(|source| FileError::Io { path: path.into(), what, source })?;
    if bytes.len() as u64 > limit {
        return Err(FileError::TooLarge { path: path.into(), what, size: bytes.len() as u64, limit });
    }
    Ok(bytes)
}

/// Reads a regular UTF-8 text file of at most [`MAX_TEXT_BYTES`].
pub fn read_text(path: &Path, what: &'static str) -> Result<String, FileError> {
    let bytes = read(path, MAX_TEXT_BYTES, what)?;
    String::from_utf8(bytes).map_err(|e| FileError::Io {
        path: path.into(),
        what,
        source: std::io::Error::new(std::io::ErrorKind::InvalidData, format!("not UTF-8 text ({e})")),
    })
}

/// What a non-regular file is, in words.
pub fn file_kind(ft: std::fs::FileType) -> &'static str {
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        if ft.is_fifo() {
            return "FIFO";
        }
        if ft.is_char_device() {
            return "character device";
        }
        if ft.is_block_device() {
            return "block device";
        }
        if ft.is_socket() {
            return "socket";
        }
    }
    if ft.is_dir() {
        "directory"
    } else {
        "special file"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_regular_files_under_the_limit_are_read() {
        let tmp = tempfile::tempdir().unwrap();
        let small = tmp.path().join("a.txt");
        std::fs::write(&small, "abc").unwrap();
        assert_eq!(read_text(&small, "a label list").unwrap(), "abc");
        let err = read(&small, 2, "a label list").unwrap_err().to_string();
        assert!(err.contains("3 bytes, over the limit of 2 bytes for a label list"), "{err}");
        let err = read_text(tmp.path(), "a config").unwrap_err().to_string();
        assert!(err.contains("it is a directory, not a regular file"), "{err}");
        #[cfg(unix)]
        {
            let err = read_text(Path::new("/dev/zero"), "a config").unwrap_err().to_string();
            assert!(err.contains("/dev/zero: it is a character device"), "{err}");
        }
        let missing = read_text(&tmp.path().join("none"), "a config").unwrap_err();
        assert!(missing.is_not_found(), "{missing}");
        std::fs::write(&small, [0xff, 0xfe]).unwrap();
        assert!(read_text(&small, "a config").unwrap_err().to_string().contains("not UTF-8"));
    }
}
