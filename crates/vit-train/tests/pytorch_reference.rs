//! The speed yardstick `bench/pytorch_reference.py` must build the very network
//! vit-train trains: for a tiny run of each variant (the standard one with a conv
//! stem, locality attention, class-token pooling and test-time flip), its PyTorch
//! logits on the run's weights equal the run's ONNX within 1e-4.

mod common;

use std::process::Command;

use common::cli::{bin, run_ok, write_config};
use common::{coco5, repo_root, venv_python};

const STANDARD: &str = r#"
variant = "standard"
image_size = 32
patch_size = 8
in_channels = 3
embed_dim = 24
depth = 2
num_heads = 3
mlp_ratio = 2.0
pooling = "cls"
qkv_bias = true
stem = "conv"
stem_channels = [8, 8, 16]
stem_strides = [2, 2, 2]
locality_attention = true
test_time_flip = true
[train]
epochs = 1
batch_size = 8
lr = 1e-3
optimizer = "adamw"
weight_decay = 0.05
seed = 1
"#;

const DLSTUDIO: &str = r#"
variant = "dlstudio"
image_size = 32
patch_size = 16
in_channels = 3
embed_dim = 16
depth = 2
num_heads = 2
pooling = "mean"
layer_norm_eps = 1e-5
[train]
epochs = 1
batch_size = 8
lr = 1e-3
seed = 1
"#;

fn reference_matches_onnx(config: &str) {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(dir.path(), config);
    let run = dir.path().join("run");
    run_ok(
        bin()
            .arg("--config")
            .arg(&cfg)
            .arg("--data")
            .arg(coco5())
            .arg("--out")
            .arg(&run)
            .args(["--max-per-class", "4"]),
    );
    let script = repo_root().join("bench/pytorch_reference.py");
    let out = run_ok(Command::new(venv_python()).arg(&script).arg(&run).args(["--check-only", "--threads", "1"]));
    let line = String::from_utf8_lossy(&out.stdout);
    let result: serde_json::Value = serde_json::from_str(line.trim()).unwrap_or_else(|e| panic!("{e}: {line}"));
    let diff = result["onnx_max_abs_diff"].as_f64().expect("the check ran");
    assert!(diff <= 1e-4, "PyTorch reference vs ONNX: {diff}");
}

#[test]
fn reference_equals_the_standard_network_with_conv_stem_and_locality_attention() {
    reference_matches_onnx(STANDARD);
}

#[test]
fn reference_equals_the_dlstudio_network() {
    reference_matches_onnx(DLSTUDIO);
}
