//! Class folders whose names cannot be labels (not UTF-8, control characters)
//! are refused by name, never dropped: the run would silently have a class fewer.

mod common;

use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use common::cli::*;
use common::*;

/// `dir/<class>/` with three of COCO-5's cat images each.
fn folder(dir: &Path, classes: &[&[u8]]) {
    let cats: Vec<_> =
        std::fs::read_dir(coco5().join("train").join("cat")).unwrap().take(3).map(|e| e.unwrap().path()).collect();
    for class in classes {
        let d = dir.join(std::ffi::OsStr::from_bytes(class));
        std::fs::create_dir_all(&d).unwrap();
        for (i, f) in cats.iter().enumerate() {
            std::fs::copy(f, d.join(format!("{i}.jpg"))).unwrap();
        }
    }
}

#[test]
fn class_folders_that_cannot_be_labels_are_refused_by_name() {
    for (bad, shown, why) in [
        (&b"caf\xe9"[..], "caf\\xe9", "its name is not valid UTF-8"),
        (&b"red\x1b[31m"[..], "red\\u{1b}[31m", "its name holds control characters"),
    ] {
        let tmp = tempfile::tempdir().unwrap();
        let data = tmp.path().join("data");
        folder(&data, &[b"bus", bad]);
        let cfg = write_config(tmp.path(), SMALL);
        let run = tmp.path().join("run");
        let err = run_err(bin().arg("--config").arg(&cfg).arg("--data").arg(&data).arg("--out").arg(&run));
        assert!(err.contains(&format!("class folder {}/{shown}: {why}", data.display())), "{err}");
        assert!(err.contains("rename the folder"), "{err}");
        assert!(!err.contains('\u{1b}'), "a raw escape reached the terminal: {err:?}");
        assert!(!run.join("run.json").exists());
    }
}
