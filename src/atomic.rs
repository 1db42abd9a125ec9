//! Atomic file writes, the one implementation every writer of a file that must
//! never be seen half-written goes through (run files, checkpoints, shard
//! sets): the bytes go to a hidden temporary file beside the target, which is
//! synced, renamed over the target, and the folder synced, so a kill or a
//! power cut at any moment leaves either the old file or the new one.
//!
//! The temporary name is `.NAME.tmp-PID`: hidden from folder scans, and it
//! names its writer so a later holder of the folder can remove leftovers of
//! writers that are gone.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

/// The hidden name an atomic write of `path` by this process goes through.
pub fn temp_path(path: &Path) -> PathBuf {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    path.with_file_name(format!(".{name}.tmp-{}", std::process::id()))
}

/// Makes the complete, closed file `tmp` the file `path`: syncs it, renames it
/// over `path` and syncs the folder, so the rename itself survives a crash.
/// On failure `tmp` is removed and `path` is as it was.
pub fn commit(tmp: &Path, path: &Path) -> std::io::Result<()> {
    let done = File::open(tmp).and_then(|f| f.sync_all()).and_then(|()| std::fs::rename(tmp, path));
    if let Err(e) = done {
        let _ = std::fs::remove_file(tmp);
        return Err(e);
    }
    sync_parent(path)
}

/// Writes `path` atomically with what `write` writes.
pub fn write_with(path: &Path, write: impl FnOnce(&mut BufWriter<File>) -> std::io::Result<()>) -> std::io::Result<()> {
    let tmp = temp_path(path);
    let written = File::create(&tmp).and_then(|file| {
        let mut out = BufWriter::new(file);
        write(&mut out)?;
        out.into_inner().map_err(|e| e.into_error())?.sync_all()
    });
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    commit(&tmp, path)
}

/// Writes `bytes` to `path` atomically.
pub fn write_bytes(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    write_with(path, |out| out.write_all(bytes))
}

/// Syncs the folder holding `path`, so a rename into it is durable.
pub fn sync_parent(path: &Path) -> std::io::Result<()> {
    match path.parent().filter(|p| !p.as_os_str().is_empty()) {
        Some(dir) => sync_dir(dir),
        None => sync_dir(Path::new(".")),
    }
}

#[cfg(unix)]
fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

#[cfg(not(unix))]
fn sync_dir(_dir: &Path) -> std::io::Result<()> {
    // Folders cannot be opened as files here; the rename is as durable as the platform makes it.
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_write_replaces_the_file_whole_and_a_failed_one_leaves_it_and_no_temporary() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("run.json");
        write_bytes(&path, b"old").unwrap();
        write_bytes(&path, b"new").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"new");
        let err = write_with(&path, |out| {
            out.write_all(b"half")?;
            Err(std::io::Error::other("killed"))
        })
        .unwrap_err();
        assert_eq!(err.to_string(), "killed");
        assert_eq!(std::fs::read(&path).unwrap(), b"new");
        let names: Vec<_> = std::fs::read_dir(tmp.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, vec![std::ffi::OsString::from("run.json")]);
        assert_eq!(temp_path(&path), tmp.path().join(format!(".run.json.tmp-{}", std::process::id())));
    }
}
