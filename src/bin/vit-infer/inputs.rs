//! The image files named on the command line: files as given, directories
//! walked for image extensions (the check data loading uses).

use std::path::PathBuf;

use anyhow::bail;
use vit::data::{has_image_extension, IMAGE_EXTENSIONS};

/// The files to classify: named files as given, directories walked
/// recursively for image extensions (sorted). A directory without images is
/// an error.
pub fn collect_images(inputs: &[PathBuf]) -> anyhow::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for input in inputs {
        if !input.is_dir() {
            out.push(input.clone());
            continue;
        }
        let mut found: Vec<PathBuf> = walkdir::WalkDir::new(input)
            .follow_links(true)
            .into_iter()
            .filter_map(Result::ok)
            .filter(|e| e.file_type().is_file() && has_image_extension(e.path()))
            .map(walkdir::DirEntry::into_path)
            .collect();
        if found.is_empty() {
            bail!(
                "no image files ({}) found in directory {}",
                IMAGE_EXTENSIONS.iter().map(|e| format!(".{e}")).collect::<Vec<_>>().join(", "),
                input.display()
            );
        }
        found.sort();
        out.extend(found);
    }
    if out.is_empty() {
        bail!("no images given");
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn directories_without_images_are_an_error() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.txt"), "x").unwrap();
        let msg = collect_images(&[dir.path().to_path_buf()]).unwrap_err().to_string();
        assert!(msg.contains("no image files") && msg.contains(".png"), "{msg}");
        std::fs::write(dir.path().join("b.JPG"), "x").unwrap();
        assert_eq!(collect_images(&[dir.path().to_path_buf()]).unwrap(), vec![dir.path().join("b.JPG")]);
    }
}
