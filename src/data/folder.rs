//! Scanning of torchvision-style `ImageFolder` trees. Every entry that cannot
//! be read (a dangling link, a link loop, a folder without permission) is
//! recorded, never dropped: the caller decides whether that is an error.

use std::path::{Path, PathBuf};

use super::{DataError, Skipped};

/// File extensions taken as images (case-insensitive).
pub const IMAGE_EXTENSIONS: &[&str] = &["jpg", "jpeg", "png", "bmp", "webp"];

/// The classes and files of an image folder.
#[derive(Debug, Clone, PartialEq)]
pub struct FolderScan {
    /// Sorted class folder names; a label is an index into this.
    pub classes: Vec<String>,
    /// (file, label), sorted by class then file name.
    pub files: Vec<(PathBuf, i64)>,
    /// Entries that could not be read, with the reason, in walk order.
    pub unreadable: Vec<Skipped>,
}

/// True when the path has an image extension.
pub fn has_image_extension(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .map(|e| IMAGE_EXTENSIONS.iter().any(|x| x.eq_ignore_ascii_case(e)))
        .unwrap_or(false)
}

/// Image files under `dir`, walked recursively through links (sorted), and the
/// entries that could not be read on the way.
pub fn walk_images(dir: &Path) -> (Vec<PathBuf>, Vec<Skipped>) {
    let (mut images, mut unreadable) = (Vec::new(), Vec::new());
    for entry in walkdir::WalkDir::new(dir).follow_links(true) {
        match entry {
            // Not only regular files: a FIFO or device named like an image is refused, and counted, when read.
            Ok(e) if !e.file_type().is_dir() && has_image_extension(e.path()) => images.push(e.into_path()),
            Ok(_) => {}
            Err(e) => {
                let path = e.path().unwrap_or(dir).to_path_buf();
                unreadable.push(Skipped { path, reason: e.to_string() });
            }
        }
    }
    images.sort();
    (images, unreadable)
}

/// Lists `dir/<class>/*` image files. Files with other extensions are ignored;
/// an image-less class folder is an error (it would be a class with no
/// examples); entries that cannot be read are listed in
/// [`FolderScan::unreadable`].
pub fn scan_image_folder(dir: &Path) -> Result<FolderScan, DataError> {
    let io = |source| DataError::Io { path: dir.to_path_buf(), source };
    let mut classes: Vec<String> = Vec::new();
    let mut unreadable = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io)? {
        let entry = entry.map_err(io)?;
        let raw = entry.file_name();
        if raw.as_encoded_bytes().starts_with(b".") {
            continue;
        }
        // Class names become labels (labels.json, the model's metadata, every report): text that
        // cannot be carried as it is is refused by name, never dropped (one class fewer, silently).
        let refuse = |why: &str| DataError::ClassName { path: crate::text::path(&entry.path()), why: why.to_string() };
        let Some(name) = raw.to_str().map(str::to_owned) else {
            if entry.path().is_dir() {
                return Err(refuse("its name is not valid UTF-8"));
            }
            continue;
        };
        if crate::text::needs_escape(&name) && entry.path().is_dir() {
            return Err(refuse("its name holds control characters"));
        }
        // Through links, as the walk below: a link that cannot be followed may be a lost class.
        match std::fs::metadata(entry.path()) {
            Ok(meta) if meta.is_dir() => classes.push(name),
            Ok(_) => {}
            Err(e) => unreadable.push(Skipped { path: entry.path(), reason: e.to_string() }),
        }
    }
    classes.sort();
    if classes.is_empty() {
        return Err(DataError::NoClasses(dir.to_path_buf()));
    }
    let mut files = Vec::new();
    for (label, class) in classes.iter().enumerate() {
        let class_dir = dir.join(class);
        let (members, lost) = walk_images(&class_dir);
        unreadable.extend(lost);
        if members.is_empty() {
            return Err(DataError::EmptyClass(class_dir));
        }
        files.extend(members.into_iter().map(|p| (p, label as i64)));
    }
    Ok(FolderScan { classes, files, unreadable })
}
