//! Flag parsing of `vit-train fit` and `export`.

use super::*;

fn fit_args(extra: &[&str]) -> FitArgs {
    let argv = ["vit-train", "fit", "--out", "r"].iter().chain(extra);
    match Cli::try_parse_from(argv).unwrap_or_else(|e| panic!("{e}")).command {
        Command::Fit(a) => *a,
        other => panic!("parsed {other:?}"),
    }
}

fn export_args(extra: &[&str]) -> ExportArgs {
    let argv = ["vit-train", "export", "--run", "r"].iter().chain(extra);
    match Cli::try_parse_from(argv).unwrap_or_else(|e| panic!("{e}")).command {
        Command::Export(a) => a,
        other => panic!("parsed {other:?}"),
    }
}

#[test]
fn test_time_flip_means_the_same_on_fit_and_export() {
    for (extra, expected) in [
        (&[][..], None),
        (&["--test-time-flip"][..], Some(true)),
        (&["--test-time-flip", "true"][..], Some(true)),
        (&["--test-time-flip", "false"][..], Some(false)),
    ] {
        assert_eq!(fit_args(extra).test_time_flip, expected, "fit {extra:?}");
        assert_eq!(export_args(extra).test_time_flip, expected, "export {extra:?}");
    }
    // Alone before another flag, it does not take that flag as its value.
    assert_eq!(fit_args(&["--test-time-flip", "--quiet"]).test_time_flip, Some(true));
    assert_eq!(export_args(&["--test-time-flip", "--external-data"]).test_time_flip, Some(true));
}

#[test]
fn typed_flags_parse_once() {
    let a = fit_args(&["--optimizer", "adamw", "--device", "cuda:1"]);
    assert_eq!(a.optimizer.map(Optimizer::from), Some(Optimizer::Adamw));
    assert_eq!(a.device, DeviceArg::Cuda(Some(1)));
    assert_eq!(fit_args(&[]).device, DeviceArg::Auto);
    assert_eq!(fit_args(&["--device", "cuda"]).device, DeviceArg::Cuda(None));
    assert_eq!(DeviceArg::Cpu.resolve().unwrap(), Device::Cpu);
    for bad in ["gpu", "cuda:x", "cuda:"] {
        assert!(Cli::try_parse_from(["vit-train", "fit", "--out", "r", "--device", bad]).is_err(), "{bad}");
    }
    assert!(Cli::try_parse_from(["vit-train", "fit", "--out", "r", "--optimizer", "sgd"]).is_err());
    let e = export_args(&["--checkpoint", "best"]);
    assert_eq!(e.checkpoint, Checkpoint::Best);
    assert_eq!((e.atol, e.verify_images), (DEFAULT_ATOL, DEFAULT_VERIFY_IMAGES));
    assert_eq!(export_args(&[]).checkpoint, Checkpoint::Last);
}

#[test]
fn export_takes_a_run_or_foreign_weights() {
    let parse = |extra: &[&str]| Cli::try_parse_from(["vit-train", "export"].iter().chain(extra)).map(|_| ());
    assert!(parse(&["--weights", "w.safetensors", "--out", "m.onnx", "--num-heads", "3"]).is_ok());
    assert!(parse(&["--weights", "w.safetensors"]).is_err(), "--weights needs --out");
    assert!(parse(&["--run", "r", "--weights", "w", "--out", "m.onnx"]).is_err(), "one source only");
    assert!(parse(&["--run", "r", "--num-heads", "3"]).is_err(), "--num-heads goes with --weights");
    assert!(parse(&[]).is_err(), "a source is required");
}

#[test]
fn fit_init_excludes_resume() {
    let parse =
        |extra: &[&str]| Cli::try_parse_from(["vit-train", "fit", "--out", "r"].iter().chain(extra)).map(|_| ());
    assert!(parse(&["--init", "w.safetensors", "--num-heads", "4"]).is_ok());
    assert!(parse(&["--init", "w.safetensors", "--resume"]).is_err());
    assert!(parse(&["--num-heads", "4"]).is_err(), "--num-heads goes with --init");
}

/// Every flag of every command that takes a number with a fraction refuses NaN
/// and infinities: found by probing each flag's own parser, so a float flag
/// added later without `vit::flags` fails here.
#[test]
fn no_flag_of_any_command_takes_a_non_finite_number() {
    use clap::CommandFactory;
    let mut root = Cli::command();
    root.build();
    let mut floats = Vec::new();
    for cmd in root.get_subcommands() {
        for arg in cmd.get_arguments().filter(|a| a.get_action().takes_values()) {
            let Some(long) = arg.get_long() else { continue };
            // Refused by the flag's parser, not for a missing required flag (values are checked first).
            let parses = |v: &str| match Cli::try_parse_from(["vit-train", cmd.get_name(), &format!("--{long}={v}")]) {
                Ok(_) => true,
                Err(e) => {
                    !matches!(e.kind(), clap::error::ErrorKind::ValueValidation | clap::error::ErrorKind::InvalidValue)
                }
            };
            if !["0.5", "75.5"].into_iter().any(parses) || parses("abc") {
                continue; // not a number with a fraction
            }
            let flag = format!("{} --{long}", cmd.get_name());
            for bad in ["NaN", "nan", "inf", "-inf", "1e999"] {
                assert!(!parses(bad), "`{flag} {bad}` is accepted");
            }
            floats.push(flag);
        }
    }
    for guarded in
        ["fit --lr", "fit --val-fraction", "export --max-accuracy-drop", "export --atol", "shards --val-fraction"]
    {
        assert!(floats.iter().any(|f| f == guarded), "{guarded} not found among {floats:?}");
    }
}
