//! Checkpoints trained elsewhere: random-weight timm and Hugging Face models
//! built by Python (tests/foreign/checkpoints.py, venv with timm and
//! transformers: scripts/setup.sh), imported and exported by `vit-train
//! export --weights`; Python onnxruntime on our ONNX equals their PyTorch
//! forward, and every unsupported or mismatched tensor is refused by name.
//! timm's LayerScale, `norm_pre` and class-token-free models are covered too,
//! imported and trained from scratch.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use common::cli::{run_err, run_ok};
use common::venv_python;

/// `python tests/foreign/checkpoints.py ARGS...`, asserting success.
fn python(args: &[&std::ffi::OsStr]) -> String {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/foreign/checkpoints.py");
    let out = run_ok(Command::new(venv_python()).arg(script).args(args));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Every case, made once per test binary.
fn checkpoints() -> &'static Path {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        python(&["make".as_ref(), dir.path().as_os_str()]);
        dir
    })
    .path()
}

/// `vit-train export --weights DIR/CASE/model.safetensors --out OUT/model.onnx`.
fn export(case: &str, out: &Path, extra: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_vit-train"));
    c.arg("export").arg("--weights").arg(checkpoints().join(case).join("model.safetensors"));
    c.arg("--out").arg(out.join("model.onnx")).args(["--verify-images", "2"]).args(extra);
    c
}

fn json(path: PathBuf) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

#[test]
fn timm_and_hugging_face_exports_equal_their_pytorch_forward() {
    // A preset gives preprocessing only: its test_time_flip must not change the function.
    let preset = common::repo_root().join("models/coco5-vit.toml");
    let with_preset = ["--num-heads", "4", "--config", preset.to_str().unwrap()];
    let cases = [
        ("timm_custom_token", &["--num-heads", "4"][..]),
        ("timm_custom_avg", &with_preset[..]),
        ("timm_custom_avg", &["--num-heads", "4"][..]),
        ("hf", &[][..]),
        ("timm_tiny_token", &[][..]),
        ("timm_tiny_avg", &[][..]),
        ("timm_custom_ls_prenorm", &["--num-heads", "4"][..]),
        ("timm_custom_nocls", &["--num-heads", "4"][..]),
    ];
    for (case, extra) in cases {
        let out = tempfile::tempdir().unwrap();
        let log = run_ok(&mut export(case, out.path(), extra));
        let stderr = String::from_utf8_lossy(&log.stderr);
        let avg = case.ends_with("avg") || case.ends_with("nocls");
        let pooling = if avg { "pooling Avg" } else { "pooling Cls" };
        assert!(stderr.contains(pooling), "{case}: the inferred config is printed: {stderr}");
        let onnx = out.path().join("model.onnx");
        let report = python(&["check".as_ref(), checkpoints().join(case).as_os_str(), onnx.as_os_str()]);
        eprint!("{report}");
        let config = json(out.path().join("config.json"));
        let pre = json(out.path().join("preprocessor_config.json"));
        assert_eq!(config["image_size"], pre["size"]["height"], "{case}");
        assert_eq!(pre["rescale_factor"].as_f64().unwrap(), 1.0 / 255.0);
        if case == "hf" {
            assert_eq!(config["id2label"]["2"], "cat", "id2label comes from the checkpoint's config.json");
            assert_eq!(config["label2id"]["dog"], 3);
            assert_eq!(config["architectures"][0], "ViTForImageClassification");
        }
        if case.ends_with("ls_prenorm") {
            assert!(stderr.contains("norm_pre true, layer_scale Some("), "{case}: {stderr}");
        }
        if case.ends_with("nocls") {
            assert!(stderr.contains("class_token false"), "{case}: {stderr}");
        }
        if avg || case.ends_with("ls_prenorm") {
            assert!(config.get("architectures").is_none(), "{case} is not transformers' ViT");
        }
    }
}

#[test]
fn unsupported_or_mismatched_tensors_are_refused_by_name() {
    let cases = [
        ("no_embed_class", "`pos_embed` is not supported: shape [1, 16, 64] has no position for the class token"),
        ("half_layer_scale", "`blocks.0.ls2.gamma` is missing"),
        ("unknown", "`blocks.0.extra.weight` is not supported"),
        ("head_shape", "`head.bias` has shape [4], the inferred config needs [3]"),
    ];
    for (case, expected) in cases {
        let out = tempfile::tempdir().unwrap();
        let err = run_err(&mut export(case, out.path(), &["--num-heads", "4"]));
        assert!(err.contains(expected), "{case}: {err}");
        assert!(!out.path().join("model.onnx").exists(), "{case}: nothing is written");
    }
    let out = tempfile::tempdir().unwrap();
    let err = run_err(&mut export("timm_custom_token", out.path(), &[]));
    assert!(err.contains("cannot infer `num_heads`") && err.contains("--num-heads"), "{err}");
}

#[test]
fn resampled_position_embeddings_equal_timms() {
    let dir = tempfile::tempdir().unwrap();
    python(&["resample".as_ref(), dir.path().as_os_str()]);
    let t = vit_train::run::checkpoint::read_all(&dir.path().join("resample.safetensors")).unwrap();
    let ours = vit_train::import::resample::resample_abs_pos_embed(&t["pos_embed"], 7, 1);
    assert_eq!(ours.size(), t["resampled"].size());
    let diff = (&ours - &t["resampled"]).abs().max().double_value(&[]);
    assert!(diff <= 1e-5, "max |ours - timm| = {diff:e}");
    let ours = vit_train::import::resample::resample_abs_pos_embed(&t["grid_only"], 7, 0);
    assert_eq!(ours.size(), t["grid_only_resampled"].size());
    let diff = (&ours - &t["grid_only_resampled"]).abs().max().double_value(&[]);
    assert!(diff <= 1e-5, "no class token: max |ours - timm| = {diff:e}");
}

/// `fit --init CASE` at image size 32 on COCO-5 (5 classes): the head is
/// re-initialised, the position embedding resampled, the loss falls, the run exports.
fn fit_init_lowers_the_loss_and_exports(case: &str) {
    let tmp = tempfile::tempdir().unwrap();
    let preset = common::cli::write_config(
        tmp.path(),
        "image_size = 32\n[train]\nepochs = 3\nbatch_size = 30\nlr = 1e-3\noptimizer = \"adamw\"\nlog_every = 1\nseed = 3\n",
    );
    let run = tmp.path().join("run");
    let weights = checkpoints().join(case).join("model.safetensors");
    let mut cmd = common::cli::bin();
    cmd.arg("--init").arg(&weights).args(["--num-heads", "4"]).arg("--config").arg(&preset);
    cmd.arg("--data").arg(common::coco5()).arg("--out").arg(&run).args(["--max-per-class", "30"]);
    let out = run_ok(&mut cmd);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("head re-initialised for 5 classes (the checkpoint has 3)"), "{case}: {stderr}");
    assert!(stderr.contains("resampled from a 8x8 to a 4x4 patch grid"), "{case}: {stderr}");
    let run_json = json(run.join("run.json"));
    assert_eq!(PathBuf::from(run_json["init"]["weights"].as_str().unwrap()), weights.canonicalize().unwrap());
    let losses: Vec<f64> = std::fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok()?["train_loss"].as_f64())
        .collect();
    assert!(losses.len() >= 2 && losses.last() < losses.first(), "{case}: train loss per epoch: {losses:?}");
    assert!(run.join("model.onnx").exists() && run.join("config.json").exists());
}

#[test]
fn fit_init_from_timm_with_other_classes_and_image_size_lowers_the_loss_and_exports() {
    fit_init_lowers_the_loss_and_exports("timm_custom_token");
}

#[test]
fn fit_init_without_class_token_with_layer_scale_lowers_the_loss_and_exports() {
    fit_init_lowers_the_loss_and_exports("timm_custom_nocls");
}

#[test]
fn timm_options_from_scratch_start_as_configured_and_export_the_same_function() {
    use tch::nn::ModuleT;

    let cfg = vit::ViTConfig {
        layer_scale: Some(0.25),
        norm_pre: true,
        class_token: false,
        ..common::standard(32, 8, 3, 2, 2, vit::config::Pooling::Avg)
    };
    let vs = tch::nn::VarStore::new(tch::Device::Cpu);
    let _model = vit_train::model::ViT::new(&vs.root(), &cfg);
    let vars = vs.variables();
    assert!(!vars.contains_key("cls_token") && vars.contains_key("norm_pre.weight"));
    assert_eq!(vars["pos_embed"].size(), [1, 16, 32]);
    for name in ["blocks.0.ls1.gamma", "blocks.1.ls2.gamma"] {
        let gamma = &vars[name];
        assert_eq!(gamma.size(), [32]);
        assert!(gamma.eq(0.25).all().int64_value(&[]) == 1, "{name} starts at layer_scale");
    }
    let (vs, model) = common::random_model(&cfg, 11);
    let meta = vit::ModelMetadata {
        config: cfg.clone(),
        labels: (0..5).map(|i| format!("c{i}")).collect(),
        val_accuracy: None,
    };
    let bytes = vit::onnx::export_to_bytes(&meta, &vit_train::export::named_tensors(&vs).unwrap()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.onnx");
    std::fs::write(&path, bytes).unwrap();
    for batch in [1usize, 7] {
        let x = common::random_input(&cfg, batch, 20 + batch as i64);
        let expected = common::to_vec(&tch::no_grad(|| model.forward_t(&x, false)));
        let shape = [batch, 3, 32, 32];
        let actual = vit_train::export::verify::tract_logits(&path, &common::to_vec(&x), shape).unwrap();
        let cmp = vit_train::export::verify::compare(&actual, &expected, 1e-5, 1e-4);
        assert!(cmp.ok(), "batch {batch}: {cmp}");
    }
}
