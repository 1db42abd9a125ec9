//! `vit-train export --quantize int8` on a trained run: calibrates, prints the
//! float and int8 validation accuracy side by side, writes an int8 file that
//! `vit::infer` reads as int8, and refuses (non-zero exit, both numbers, the
//! flag to change, no file) when the drop is over `--max-accuracy-drop`.

mod common;
use common::cli::{export, quick, run_err, run_ok, write_config, SMALL};
use vit::format::Precision;
use vit::infer::{Classifier, ClassifierOptions, Provider};

#[test]
fn int8_export_is_gated_on_validation_accuracy() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    run_ok(&mut quick(&write_config(dir.path(), SMALL), &run, "6"));

    let out = run.join("int8.onnx");
    let ok = run_ok(export(&run).args(["--quantize", "int8", "--calibration-images", "64"]).arg("--out").arg(&out));
    let stdout = String::from_utf8_lossy(&ok.stdout);
    assert!(stdout.contains("float32 0.") && stdout.contains("int8 0."), "{stdout}");
    let opts = ClassifierOptions { provider: Provider::Cpu, ..Default::default() };
    let clf = Classifier::open(&out, &opts).expect("vit::infer opens the int8 file");
    assert_eq!(clf.format().precision, Precision::Int8);
    assert!(out.with_file_name("config.json").exists());

    // Ranges clipped to the middle of each activation's values lose accuracy; a zero limit refuses that.
    let refused = run.join("refused.onnx");
    let err = run_err(
        export(&run)
            .args(["--quantize", "int8", "--calibration-method", "percentile", "--calibration-percentile", "60"])
            .args(["--max-accuracy-drop", "0"])
            .arg("--out")
            .arg(&refused),
    );
    assert!(
        err.contains("float32's") && err.contains("--max-accuracy-drop") && err.contains("was not written"),
        "{err}"
    );
    assert!(!refused.exists());

    let err = run_err(export(&run).args(["--quantize", "int8", "--precision", "fp16"]));
    assert!(err.contains("--precision"), "{err}");
    let err = run_err(export(&run).args(["--precision", "int8"]));
    assert!(err.contains("--quantize int8"), "{err}");
    let err = run_err(export(&run).args(["--calibration-images", "8"]));
    assert!(err.contains("--quantize"), "{err}");
}
