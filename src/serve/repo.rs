//! Finding the models to serve: one `model.onnx` file (served under its file
//! stem), or a repository folder in Triton's layout, `REPO/<name>/model.onnx`
//! or `REPO/<name>/<version>/model.onnx` (the highest numeric version wins),
//! each served under its folder name.

use std::path::{Path, PathBuf};

use super::ServeError;

/// One model found in a repository: the name it is served under, its version and file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelEntry {
    /// The name in `/v2/models/{name}`.
    pub name: String,
    /// The version reported (`1` when the layout has none).
    pub version: String,
    /// The ONNX file.
    pub path: PathBuf,
}

/// The models at `path`: a file, or every `<name>/model.onnx` and
/// `<name>/<version>/model.onnx` of a folder, sorted by name.
pub fn discover(path: &Path) -> Result<Vec<ModelEntry>, ServeError> {
    if path.is_file() {
        let name = path.file_stem().map_or_else(|| "model".to_string(), |s| s.to_string_lossy().into_owned());
        return Ok(vec![ModelEntry { name, version: "1".into(), path: path.to_path_buf() }]);
    }
    if !path.is_dir() {
        return Err(ServeError::NotFound(path.to_path_buf()));
    }
    let mut entries = Vec::new();
    for dir in list_dirs(path)? {
        let name = dir.file_name().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
        if dir.join("model.onnx").is_file() {
            entries.push(ModelEntry { name, version: "1".into(), path: dir.join("model.onnx") });
            continue;
        }
        // Triton's numbered version folders: serve the newest one.
        let newest = list_dirs(&dir)?
            .into_iter()
            .filter_map(|v| {
                let n: u64 = v.file_name()?.to_str()?.parse().ok()?;
                v.join("model.onnx").is_file().then_some((n, v))
            })
            .max_by_key(|(n, _)| *n);
        if let Some((n, v)) = newest {
            entries.push(ModelEntry { name, version: n.to_string(), path: v.join("model.onnx") });
        }
    }
    if entries.is_empty() {
        return Err(ServeError::EmptyRepository(path.to_path_buf()));
    }
    entries.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(entries)
}

/// The sub-folders of `dir`, sorted.
fn list_dirs(dir: &Path) -> Result<Vec<PathBuf>, ServeError> {
    let io = |source| ServeError::Io { path: dir.to_path_buf(), source };
    let mut dirs = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io)? {
        let p = entry.map_err(io)?.path();
        if p.is_dir() {
            dirs.push(p);
        }
    }
    dirs.sort();
    Ok(dirs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_folder_serves_names_and_newest_versions_and_a_file_its_stem() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        for p in ["b/model.onnx", "a/1/model.onnx", "a/10/model.onnx", "a/2/model.onnx", "a/x/model.onnx"] {
            std::fs::create_dir_all(root.join(p).parent().unwrap()).unwrap();
            std::fs::write(root.join(p), b"x").unwrap();
        }
        std::fs::create_dir_all(root.join("empty")).unwrap();
        let found = discover(root).unwrap();
        let names: Vec<_> = found.iter().map(|e| (e.name.as_str(), e.version.as_str())).collect();
        assert_eq!(names, [("a", "10"), ("b", "1")]);
        assert_eq!(found[0].path, root.join("a/10/model.onnx"));
        let file = discover(&root.join("b/model.onnx")).unwrap();
        assert_eq!(file[0].name, "model");
        assert!(matches!(discover(&root.join("empty")), Err(ServeError::EmptyRepository(_))));
        assert!(discover(&root.join("nope")).unwrap_err().to_string().contains("does not exist"));
    }
}
