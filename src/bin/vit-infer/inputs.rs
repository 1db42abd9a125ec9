//! The image files named on the command line: files as given, directories
//! walked for image extensions (the walk data loading uses). What cannot be
//! used (an entry the walk cannot read, a directory without images) is a
//! failure of its own, reported beside the classified files, never dropped.

use std::path::PathBuf;

use anyhow::bail;
use vit::data::{walk_images, IMAGE_EXTENSIONS};

/// The inputs sorted out: files to classify and inputs that failed already.
#[derive(Debug, Default, PartialEq)]
pub struct Inputs {
    /// Files to classify, in command-line order (each directory's sorted).
    pub files: Vec<PathBuf>,
    /// Unreadable entries and image-less directories, with the reason.
    pub failures: Vec<(PathBuf, String)>,
}

/// Sorts out the inputs: named files as given, directories walked recursively
/// for image extensions (sorted). An unreadable entry or a directory without
/// images fails by itself; it is an error only when nothing at all is left to
/// classify.
pub fn collect_images(inputs: &[PathBuf]) -> anyhow::Result<Inputs> {
    let mut out = Inputs::default();
    for input in inputs {
        if !input.is_dir() {
            out.files.push(input.clone());
            continue;
        }
        let (found, unreadable) = walk_images(input);
        out.failures.extend(unreadable.into_iter().map(|s| (s.path, format!("cannot read it: {}", s.reason))));
        if found.is_empty() {
            let extensions: Vec<String> = IMAGE_EXTENSIONS.iter().map(|e| format!(".{e}")).collect();
            let reason = format!("no image files ({}) found in directory {}", extensions.join(", "), input.display());
            out.failures.push((input.clone(), reason));
        }
        out.files.extend(found);
    }
    if out.files.is_empty() {
        let reasons: Vec<String> =
            out.failures.iter().map(|(path, reason)| format!("{}: {reason}", vit::text::path(path))).collect();
        if reasons.is_empty() {
            bail!("no images given");
        }
        bail!("nothing to classify: {}", reasons.join("; "));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn directories_without_images_fail_by_themselves() {
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty");
        std::fs::create_dir_all(&empty).unwrap();
        std::fs::write(empty.join("a.txt"), "x").unwrap();
        let msg = collect_images(std::slice::from_ref(&empty)).unwrap_err().to_string();
        assert!(msg.contains("no image files") && msg.contains(".png"), "{msg}");
        let full = dir.path().join("full");
        std::fs::create_dir_all(&full).unwrap();
        std::fs::write(full.join("b.JPG"), "x").unwrap();
        let inputs = collect_images(&[empty.clone(), full.clone()]).unwrap();
        assert_eq!(inputs.files, vec![full.join("b.JPG")]);
        assert_eq!(inputs.failures.len(), 1);
        assert_eq!(inputs.failures[0].0, empty);
    }
}
