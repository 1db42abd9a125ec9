//! Scanning of torchvision-style `ImageFolder` trees.

use std::path::{Path, PathBuf};

use super::DataError;

/// File extensions taken as images (case-insensitive).
pub const IMAGE_EXTENSIONS: &[&str] = &["jpg", "jpeg", "png", "bmp", "webp"];

/// The classes and files of an image folder.
#[derive(Debug, Clone, PartialEq)]
pub struct FolderScan {
    /// Sorted class folder names; a label is an index into this.
    pub classes: Vec<String>,
    /// (file, label), sorted by class then file name.
    pub files: Vec<(PathBuf, i64)>,
}

/// True when the path has an image extension.
pub fn has_image_extension(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .map(|e| IMAGE_EXTENSIONS.iter().any(|x| x.eq_ignore_ascii_case(e)))
        .unwrap_or(false)
}

/// Lists `dir/<class>/*` image files. Files with other extensions are ignored;
/// an image-less class folder is an error (it would be a class with no examples).
pub fn scan_image_folder(dir: &Path) -> Result<FolderScan, DataError> {
    let io = |source| DataError::Io { path: dir.to_path_buf(), source };
    let mut classes: Vec<String> = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io)? {
        let entry = entry.map_err(io)?;
        if entry.path().is_dir() {
            if let Some(name) = entry.file_name().to_str() {
                if !name.starts_with('.') {
                    classes.push(name.to_string());
                }
            }
        }
    }
    classes.sort();
    if classes.is_empty() {
        return Err(DataError::NoClasses(dir.to_path_buf()));
    }
    let mut files = Vec::new();
    for (label, class) in classes.iter().enumerate() {
        let class_dir = dir.join(class);
        let mut members: Vec<PathBuf> = walkdir::WalkDir::new(&class_dir)
            .follow_links(true)
            .into_iter()
            .filter_map(Result::ok)
            .filter(|e| e.file_type().is_file() && has_image_extension(e.path()))
            .map(|e| e.into_path())
            .collect();
        if members.is_empty() {
            return Err(DataError::EmptyClass(class_dir));
        }
        members.sort();
        files.extend(members.into_iter().map(|p| (p, label as i64)));
    }
    Ok(FolderScan { classes, files })
}
