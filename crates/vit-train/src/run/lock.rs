//! One process per run folder. Two `fit` or `export` processes on the same
//! folder would interleave their checkpoints, metrics and ONNX files, so
//! [`RunDir`](crate::run::dir::RunDir) holds an exclusive OS lock (`flock`) on
//! `RUN/.lock` while it is open. The kernel drops the lock when the process
//! ends, however it ends, so a killed run leaves no stale marker; the file only
//! carries the holder's PID for the error message of the process turned away.
//!
//! The same module removes what killed writes leave behind: atomic writes go
//! through `.NAME.tmp-PID[-N]` files (checkpoints, ONNX files, export staging
//! folders) that a kill between write and rename leaves in the folder.

use std::fs::{File, OpenOptions};
use std::io::{Read as _, Seek as _, Write as _};
use std::path::{Path, PathBuf};

/// Name of the lock file inside a run folder.
pub const LOCK_FILE: &str = ".lock";

/// Why a run folder could not be locked.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// Another process holds the folder.
    #[error(
        "{path} is in use by another vit-train process ({holder}); wait for it to finish, or stop it, before running this again"
    )]
    Busy {
        /// The run folder.
        path: PathBuf,
        /// `PID n`, or why the PID is unknown.
        holder: String,
    },
    /// The lock file could not be opened or locked.
    #[error("cannot lock run folder {path} (through {lock})")]
    Io {
        /// The run folder.
        path: PathBuf,
        /// The lock file.
        lock: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// An exclusive lock on a run folder, held until dropped (or the process ends).
#[derive(Debug)]
pub struct RunLock {
    _file: File,
}

impl RunLock {
    /// Locks `dir` (which must exist) without waiting and records this process's PID.
    pub fn acquire(dir: &Path) -> Result<Self, LockError> {
        let lock = dir.join(LOCK_FILE);
        let io = |source| LockError::Io { path: dir.to_path_buf(), lock: lock.clone(), source };
        // No truncation on open: until we hold the lock the file is the holder's.
        let mut file =
            OpenOptions::new().read(true).write(true).create(true).truncate(false).open(&lock).map_err(io)?;
        match try_lock_exclusive(&file) {
            Ok(true) => {}
            Ok(false) => return Err(LockError::Busy { path: dir.to_path_buf(), holder: holder(&mut file) }),
            Err(e) => return Err(io(e)),
        }
        file.set_len(0).and_then(|()| file.rewind()).map_err(io)?;
        writeln!(file, "{}", std::process::id()).and_then(|()| file.flush()).map_err(io)?;
        Ok(Self { _file: file })
    }
}

/// `PID n` from the lock file of a holder.
fn holder(file: &mut File) -> String {
    let mut text = String::new();
    let _ = file.read_to_string(&mut text);
    match text.trim().parse::<u32>() {
        Ok(pid) => format!("PID {pid}"),
        Err(_) => "PID not yet recorded".into(),
    }
}

#[cfg(unix)]
fn try_lock_exclusive(file: &File) -> std::io::Result<bool> {
    use std::os::fd::AsRawFd;
    // SAFETY: flock only reads the descriptor, which `file` keeps open for the call.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
        return Ok(true);
    }
    let err = std::io::Error::last_os_error();
    if err.kind() == std::io::ErrorKind::WouldBlock {
        Ok(false)
    } else {
        Err(err)
    }
}

#[cfg(not(unix))]
fn try_lock_exclusive(_file: &File) -> std::io::Result<bool> {
    // No flock: the folder is not guarded on this platform.
    Ok(true)
}

/// The PID in a temporary name `.NAME.tmp-PID` or `.NAME.tmp-PID-N`, if it is one.
pub fn temp_owner(name: &str) -> Option<u32> {
    if !name.starts_with('.') {
        return None;
    }
    let (_, tail) = name.rsplit_once(".tmp-")?;
    let pid = tail.split_once('-').map_or(tail, |(pid, serial)| {
        if serial.bytes().all(|b| b.is_ascii_digit()) && !serial.is_empty() {
            pid
        } else {
            ""
        }
    });
    if pid.is_empty() || !pid.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    pid.parse().ok()
}

/// Removes the temporary files and folders that interrupted writes of other
/// processes left in `dir`; call it only while holding the folder's lock (every
/// writer of a run folder holds it, so no other writer is alive). Returns what
/// was removed.
pub fn remove_leftovers(dir: &Path) -> Vec<PathBuf> {
    let me = std::process::id();
    let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
    let mut removed = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(owner) = name.to_str().and_then(temp_owner) else { continue };
        if owner == me {
            continue;
        }
        let path = entry.path();
        let gone = if entry.file_type().is_ok_and(|t| t.is_dir()) {
            std::fs::remove_dir_all(&path)
        } else {
            std::fs::remove_file(&path)
        };
        match gone {
            Ok(()) => removed.push(path),
            Err(e) => log::warn!("cannot remove leftover {}: {e}", path.display()),
        }
    }
    removed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temporary_names_are_recognised_and_nothing_else() {
        assert_eq!(temp_owner(".last.safetensors.tmp-1234"), Some(1234));
        assert_eq!(temp_owner(".model.onnx.tmp-77-3"), Some(77));
        for other in ["last.safetensors", ".lock", ".x.tmp-", ".x.tmp-12a", ".x.tmp-1-", "x.tmp-12", ".x.tmp-1-b"] {
            assert_eq!(temp_owner(other), None, "{other}");
        }
    }

    #[test]
    fn a_second_lock_is_refused_with_the_holders_pid_and_released_on_drop() {
        let tmp = tempfile::tempdir().unwrap();
        let first = RunLock::acquire(tmp.path()).unwrap();
        let err = RunLock::acquire(tmp.path()).unwrap_err().to_string();
        assert!(err.contains(&format!("PID {}", std::process::id())) && err.contains("in use"), "{err}");
        drop(first);
        RunLock::acquire(tmp.path()).unwrap();
    }

    #[test]
    fn leftovers_of_other_processes_are_removed() {
        let tmp = tempfile::tempdir().unwrap();
        let keep = ["last.safetensors", ".lock", &format!(".mine.tmp-{}", std::process::id())];
        for name in keep.iter().chain(&[".last.safetensors.tmp-999999", ".model.onnx.tmp-999999-2"]) {
            std::fs::write(tmp.path().join(name), b"x").unwrap();
        }
        std::fs::create_dir(tmp.path().join(".model.onnx.tmp-999998")).unwrap();
        assert_eq!(remove_leftovers(tmp.path()).len(), 3);
        let mut left: Vec<String> =
            std::fs::read_dir(tmp.path()).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
        left.sort();
        let mut expected: Vec<String> = keep.iter().map(|s| s.to_string()).collect();
        expected.sort();
        assert_eq!(left, expected);
    }
}
