//! `vit-infer`: classify images, or evaluate a labelled folder, with a model
//! exported by `vit-train export`, on ONNX Runtime through `vit::infer`. This
//! file runs the two modes and turns errors into messages and exit statuses;
//! [`args`] is the command line, [`inputs`] finds the files, [`output`]
//! prints.
//!
//! Exit status: [`EXIT_OK`] when everything worked, [`EXIT_SOME_FAILED`] when
//! some inputs failed (each is reported, the others are classified) or
//! `--eval` skipped files (counted), [`EXIT_USAGE`] for usage and model errors
//! (bad flags, missing or corrupt model, model without metadata, nothing at
//! all to classify, unusable data). `args::EXIT_STATUS` says the same in
//! `--help`.

mod args;
mod check_gpu;
mod inputs;
mod output;

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

use anyhow::bail;
use clap::Parser;
use vit::data::DataError;
use vit::infer::{scan_eval_data, Classifier, InferError};

use args::Cli;
use output::Format;

/// Everything went fine.
const EXIT_OK: u8 = 0;
/// Some inputs failed (reported per file) or `--eval` skipped files (counted).
const EXIT_SOME_FAILED: u8 = 1;
/// Usage or model error; nothing (more) was classified.
const EXIT_USAGE: u8 = 2;

fn main() -> ExitCode {
    vit::cli_log::init();
    let cli = Cli::parse();
    if cli.check_gpu {
        return ExitCode::from(if check_gpu::run(cli.json) { EXIT_OK } else { EXIT_USAGE });
    }
    let result = match &cli.eval {
        Some(dir) => evaluate(&cli, dir),
        None => classify(&cli),
    };
    ExitCode::from(result.unwrap_or_else(|e| {
        eprintln!("vit-infer: error: {e}");
        if let Some(hint) = e.downcast_ref::<InferError>().and_then(cli_hint) {
            eprintln!("vit-infer: hint: {hint}");
        }
        EXIT_USAGE
    }))
}

/// What to change on the command line for a library error, when a flag fixes it.
fn cli_hint(error: &InferError) -> Option<&'static str> {
    match error {
        InferError::ModelNotFound(_) => Some("pass --model PATH"),
        InferError::CudaUnavailable(_) => Some("use --ep auto (falls back to the CPU) or --ep cpu"),
        InferError::Data(DataError::NotADir(_)) => {
            Some("pass --eval DIR with DIR/<class>/* images, DIR/train + DIR/val, or Fashion-MNIST IDX files")
        }
        _ => None,
    }
}

/// Opens the model and reports it on stderr. Why CUDA was not used is said only
/// when asked (`-v`): on a machine without a GPU the CPU is the expected
/// provider, and `--ep cuda` or `--check-gpu` say everything anyway.
fn open(cli: &Cli) -> Result<Classifier, InferError> {
    let clf = Classifier::open(&cli.model, &cli.classifier_options())?;
    let c = &clf.metadata().config;
    log::info!(
        "vit-infer: model {} ({} classes, {}x{}x{} input{}{}), execution provider: {}",
        cli.model.display(),
        clf.labels().len(),
        c.in_channels,
        c.image_size,
        c.image_size,
        if c.test_time_flip { ", averages each image with its mirror" } else { "" },
        // The deployment format, when it is not the float32 graph.
        if clf.format().is_default() { String::new() } else { format!(", format {}", clf.format()) },
        clf.provider()
    );
    if let Some(reason) = clf.cuda_fallback_reason() {
        if cli.verbose {
            log::info!("vit-infer: CUDA not used: {reason}");
        } else {
            log::debug!("vit-infer: CUDA not used: {reason}");
        }
    }
    Ok(clf)
}

fn classify(cli: &Cli) -> anyhow::Result<u8> {
    let inputs = inputs::collect_images(&cli.inputs)?;
    let mut clf = open(cli)?;
    let provider = clf.provider();
    let width = clf.labels().iter().map(|l| vit::text::escape(l).chars().count()).max().unwrap_or(0);
    let format = Format { json: cli.json, label_width: width };
    let opts = cli.classify_options();
    let mut out = std::io::stdout().lock();
    let total = inputs.files.len() + inputs.failures.len();
    let mut failed = 0usize;
    let mut report = |out: &mut std::io::StdoutLock, path: &Path, error: &dyn std::fmt::Display| {
        failed += 1;
        if cli.json {
            output::write_json_error(out, path, error)
        } else {
            eprintln!("vit-infer: error: {error}");
            Ok(())
        }
    };
    let mut written = Ok(());
    for (path, reason) in &inputs.failures {
        written = written
            .and_then(|()| report(&mut out, path, &format!("cannot classify {}: {reason}", vit::text::path(path))));
    }
    // A chunk at a time, so that results print while later batches run.
    for chunk in inputs.files.chunks(opts.batch_size) {
        if written.is_err() {
            break;
        }
        for (path, result) in chunk.iter().zip(clf.classify_files(chunk, &opts)) {
            written = written.and_then(|()| match result {
                Ok(pred) => output::write_prediction(&mut out, path, &pred, provider, format),
                Err(e) => report(&mut out, path, &e),
            });
        }
    }
    if written.is_err() {
        // stdout closed (e.g. piped into `head`): stop quietly.
        return Ok(if failed > 0 { EXIT_SOME_FAILED } else { EXIT_OK });
    }
    let _ = out.flush();
    if failed > 0 {
        eprintln!("vit-infer: {failed} of {total} file(s) could not be classified");
        return Ok(EXIT_SOME_FAILED);
    }
    Ok(EXIT_OK)
}

fn evaluate(cli: &Cli, dir: &Path) -> anyhow::Result<u8> {
    let mut clf = open(cli)?;
    // Indexed, decoded batch by batch: the folder's size does not matter.
    let set = scan_eval_data(dir, clf.preprocessor())?;
    clf.check_classes(&set.classes)?;
    if set.data.is_empty() {
        bail!("no images to evaluate in {}", set.description);
    }
    let eval = clf.evaluate(&set.data, cli.batch_size)?;
    let mut out = std::io::stdout().lock();
    // A closed stdout (e.g. piped into `head`) is not an evaluation failure.
    let _ = output::write_evaluation(&mut out, &set, &eval, clf.labels(), clf.provider(), cli.json)
        .and_then(|()| out.flush());
    let skipped = output::skipped(&set, &eval);
    if skipped > 0 {
        // Each was warned about as it was skipped; the count says what the accuracy leaves out.
        eprintln!(
            "vit-infer: {skipped} file(s) skipped (could not be read or decoded): the accuracy is over the other {}",
            eval.total
        );
        return Ok(EXIT_SOME_FAILED);
    }
    Ok(EXIT_OK)
}
