//! Inputs that once grew `vit-train` until the kernel killed it, or blocked it
//! for ever: a device or a FIFO where a file was expected, a class index of
//! 999999999 in shards without a class list, a small `.gz` IDX file that
//! expands without limit. Each is refused quickly, by name, and nothing is
//! written.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::cli::*;
use common::*;

/// `run_err` that must also end within `limit` (a FIFO once blocked for ever).
fn refused_within(cmd: &mut Command, limit: Duration) -> String {
    let started = Instant::now();
    let err = run_err(cmd);
    assert!(started.elapsed() < limit, "took {:?}: {err}", started.elapsed());
    err
}

fn fifo(path: &Path) {
    let status = Command::new("mkfifo").arg(path).status().expect("mkfifo (coreutils) is needed");
    assert!(status.success(), "mkfifo {}", path.display());
}

fn python(script: &str) {
    let status = Command::new(venv_python()).arg("-c").arg(script).status().unwrap();
    assert!(status.success(), "{script}");
}

#[test]
fn devices_and_fifos_are_refused_by_name_instead_of_read() {
    let tmp = tempfile::tempdir().unwrap();
    // Named as the files they stand for, so only what they are can refuse them.
    let (pipe, zero) = (tmp.path().join("pipe.safetensors"), tmp.path().join("zero.safetensors"));
    fifo(&pipe);
    std::os::unix::fs::symlink("/dev/zero", &zero).unwrap();
    let out = tmp.path().join("x.onnx");
    let vit_train = || Command::new(env!("CARGO_BIN_EXE_vit-train"));
    for (path, kind) in [(zero.as_path(), "character device"), (pipe.as_path(), "FIFO")] {
        let limit = Duration::from_secs(20);
        let err = refused_within(vit_train().arg("export").arg("--weights").arg(path).arg("--out").arg(&out), limit);
        assert!(err.contains(&format!("{}: it is a {kind}, not a regular file", path.display())), "{err}");
        let err = refused_within(
            vit_train().args(["export", "--weights", "none.safetensors", "--labels"]).arg(path).arg("--out").arg(&out),
            limit,
        );
        assert!(err.contains("label list") && err.contains(kind), "{err}");
        let run = tmp.path().join("run");
        let err =
            refused_within(bin().arg("--config").arg(path).arg("--data").arg(coco5()).arg("--out").arg(&run), limit);
        assert!(err.contains("config") && err.contains(kind), "{err}");
        assert!(!out.exists() && !run.join("run.json").exists());
    }
}

#[test]
fn a_huge_class_index_without_a_class_list_is_refused_before_allocating() {
    let tmp = tempfile::tempdir().unwrap();
    let shards = tmp.path().join("shards");
    std::fs::create_dir(&shards).unwrap();
    let jpg = std::fs::read_dir(coco5().join("train").join("cat")).unwrap().next().unwrap().unwrap().path();
    python(&format!(
        r#"
import io, tarfile
img = open({jpg:?}, "rb").read()
with tarfile.open({tar:?}, "w") as tar:
    for key, label in [("a", b"0"), ("b", b"999999999")]:
        for name, data in [(key + ".jpg", img), (key + ".cls", label)]:
            info = tarfile.TarInfo(name); info.size = len(data); tar.addfile(info, io.BytesIO(data))
"#,
        jpg = jpg.to_str().unwrap(),
        tar = shards.join("train-000000.tar").to_str().unwrap()
    ));
    let cfg = write_config(tmp.path(), SMALL);
    let run = tmp.path().join("run");
    let err = refused_within(
        bin().arg("--config").arg(&cfg).arg("--data").arg(&shards).arg("--out").arg(&run),
        Duration::from_secs(60),
    );
    assert!(
        err.contains("member b.cls") || err.contains("member b.jpg") || err.contains("member b"),
        "the member is named: {err}"
    );
    assert!(err.contains("class 999999999 would make 1000000000 classes, over the 100000"), "{err}");
    assert!(err.contains("classes.json"), "{err}");
    assert!(!run.join("run.json").exists());
}

#[test]
fn a_gzip_idx_file_that_expands_past_its_header_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("idx");
    std::fs::create_dir(&data).unwrap();
    // Two 28x28 images and labels per split; the training images' .gz holds 64 MiB of zeros
    // after the header (64 KiB compressed), and a second set declares 2^32 x 2^32 x 2^32 bytes.
    python(&format!(
        r#"
import gzip, os, struct
d = {dir:?}
def images(n, extra=0):
    return struct.pack(">BBBBIII", 0, 0, 8, 3, n, 28, 28) + bytes(n * 784 + extra)
def labels(n):
    return struct.pack(">BBBBI", 0, 0, 8, 1, n) + bytes(n)
with gzip.open(os.path.join(d, "train-images-idx3-ubyte.gz"), "wb") as f:
    f.write(images(2, 64 << 20))
for name, body in [("train-labels-idx1-ubyte", labels(2)), ("t10k-images-idx3-ubyte", images(2)),
                   ("t10k-labels-idx1-ubyte", labels(2))]:
    open(os.path.join(d, name), "wb").write(body)
"#,
        dir = data.to_str().unwrap()
    ));
    let cfg = write_config(tmp.path(), &SMALL.replace("in_channels = 3", "in_channels = 1"));
    let run = tmp.path().join("run");
    let fit = || {
        let mut c = bin();
        c.arg("--config").arg(&cfg).arg("--data").arg(&data).arg("--out").arg(&run);
        c
    };
    let err = refused_within(&mut fit(), Duration::from_secs(60));
    assert!(err.contains("train-images-idx3-ubyte.gz"), "{err}");
    assert!(err.contains("decompresses to more than the 1584 bytes its header declares"), "{err}");

    python(&format!(
        r#"
import gzip, struct
with gzip.open({path:?}, "wb") as f:
    f.write(struct.pack(">BBBBIII", 0, 0, 8, 3, 0xffffffff, 0xffffffff, 0xffffffff))
"#,
        path = data.join("train-images-idx3-ubyte.gz").to_str().unwrap()
    ));
    let err = refused_within(&mut fit(), Duration::from_secs(60));
    assert!(err.contains("its header declares more than 4294967296 bytes of data"), "{err}");
    assert!(!run.join("run.json").exists());
}
