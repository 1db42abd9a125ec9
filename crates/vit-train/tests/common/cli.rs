//! Running the `vit-train` binary: a small fast config and helpers that check
//! exit status and messages.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

use super::coco5;

/// A 2-block ViT on 32x32 crops, 6 epochs: seconds per epoch at 40 images per class.
pub const SMALL: &str = r#"
variant = "standard"
image_size = 32
patch_size = 8
in_channels = 3
embed_dim = 32
depth = 2
num_heads = 2
mlp_ratio = 2.0
pooling = "mean"
[train]
epochs = 6
batch_size = 32
lr = 1e-3
optimizer = "adamw"
weight_decay = 0.05
warmup_epochs = 0.5
cosine = true
log_every = 5
seed = 3
"#;

/// `vit-train fit --quiet` on the CPU with 2 threads.
pub fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_vit-train"));
    c.arg("fit").arg("--quiet").arg("--threads").arg("2").arg("--device").arg("cpu");
    c
}

/// Writes `text` as `dir/small.toml`.
pub fn write_config(dir: &Path, text: &str) -> PathBuf {
    let p = dir.join("small.toml");
    std::fs::write(&p, text).unwrap();
    p
}

/// Runs `cmd`, asserting success.
pub fn run_ok(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Runs `cmd`, asserting a clean failure (exit status 1 or clap's 2, not a panic); returns stderr.
pub fn run_err(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "should have failed: {}\n{stderr}", String::from_utf8_lossy(&out.stdout));
    assert!(matches!(out.status.code(), Some(1 | 2)), "exit status {:?}: {stderr}", out.status.code());
    assert!(!stderr.contains("panicked"), "{stderr}");
    stderr
}

/// `RUN/summary.json`.
pub fn summary(run: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(run.join("summary.json")).unwrap()).unwrap()
}

/// `fit` on 40 images per class of COCO-5, no export.
pub fn quick(cfg: &Path, run: &Path, epochs: &str) -> Command {
    let mut cmd = bin();
    cmd.arg("--config").arg(cfg).arg("--data").arg(coco5()).arg("--out").arg(run);
    cmd.args(["--max-per-class", "40", "--epochs", epochs, "--no-export"]);
    cmd
}

/// `vit-train export --run RUN`.
pub fn export(run: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_vit-train"));
    c.arg("export").arg("--run").arg(run);
    c
}

/// Every file under `dir` (but the lock file, which only names its holder) with its bytes.
pub fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut files = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else if path.file_name().is_some_and(|n| n != ".lock") {
                files.insert(path.strip_prefix(dir).unwrap().to_path_buf(), std::fs::read(&path).unwrap());
            }
        }
    }
    files
}

/// Starts `cmd` and kills it as soon as `RUN/resume.safetensors` exists (the
/// first epoch is complete), asserting the run had not ended by itself.
pub fn kill_after_first_epoch(cmd: &mut Command, run: &Path) {
    let mut child = cmd.stdout(std::process::Stdio::null()).stderr(std::process::Stdio::null()).spawn().unwrap();
    let resume = run.join("resume.safetensors");
    while !resume.exists() {
        if let Some(status) = child.try_wait().unwrap() {
            panic!("run ended ({status}) before it could be interrupted");
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(!run.join("summary.json").exists(), "the run must have been interrupted mid-way");
}
