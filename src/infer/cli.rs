//! The `vit-infer` command line (feature `cli`): argument definitions and the
//! two modes, classification of files/directories and evaluation of a labelled
//! folder. `src/bin/vit-infer.rs` only parses and calls [`run`].
//!
//! Exit status: [`EXIT_OK`] when everything worked, [`EXIT_SOME_FAILED`] when
//! some files could not be classified (each is reported, the others are
//! classified), [`EXIT_USAGE`] for usage and model errors (bad flags, missing or
//! corrupt model, model without metadata, no images found, unusable data).

use std::io::Write;
use std::path::{Path, PathBuf};

use clap::Parser;

use super::{load_eval_data, Classifier, ClassifierOptions, InferError, OptLevel, Prediction, Provider};
use crate::data::{has_image_extension, IMAGE_EXTENSIONS};

/// Everything went fine.
pub const EXIT_OK: u8 = 0;
/// Some files failed (reported per file); the others were classified.
pub const EXIT_SOME_FAILED: u8 = 1;
/// Usage or model error; nothing (more) was classified.
pub const EXIT_USAGE: u8 = 2;

/// Classify images with a Vision Transformer exported by `vit-train export`,
/// using ONNX Runtime. The model's ONNX metadata supplies the input size,
/// channels, normalisation and class labels, so no shape flags are needed.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "vit-infer",
    version,
    after_help = "Exit status: 0 all fine, 1 some files failed (each reported, the others classified), \
2 usage or model error (missing/corrupt model, model without vit metadata, no images found).\n\
ONNX Runtime is loaded from $ORT_DYLIB_PATH, else the path recorded at build time, \
else libonnxruntime.so* next to this executable (run scripts/setup.sh to install it)."
)]
pub struct Cli {
    /// ONNX model written by `vit-train export`; the Fashion-MNIST demo copies its model to the default path.
    #[arg(long, short = 'm', value_name = "PATH", default_value = "models/fashion-mnist.onnx")]
    pub model: PathBuf,

    /// Number of most probable classes printed per image (capped at the model's class count).
    #[arg(long, short = 'k', value_name = "K", default_value_t = 5, value_parser = at_least_one)]
    pub top_k: usize,

    /// Print one JSON object per line (per image, or one for --eval) instead of text.
    #[arg(long)]
    pub json: bool,

    /// Execution provider: auto (CUDA when ONNX Runtime has it and it starts, else CPU), cpu, or cuda (an error when unavailable).
    #[arg(long, value_enum, value_name = "EP", default_value_t = Provider::Auto)]
    pub ep: Provider,

    /// Threads used inside each operator (default: ONNX Runtime's choice, one per core).
    #[arg(long, value_name = "N", value_parser = at_least_one)]
    pub threads: Option<usize>,

    /// Images per inference batch.
    #[arg(long, value_name = "N", default_value_t = 32, value_parser = at_least_one)]
    pub batch_size: usize,

    /// ONNX Runtime graph optimisation level.
    #[arg(long, value_enum, value_name = "LEVEL", default_value_t = OptLevel::All)]
    pub opt_level: OptLevel,

    /// Evaluate instead of classifying: DIR/<class>/* images, or DIR/train + DIR/val (val is used), or a Fashion-MNIST IDX folder (t10k is used); prints accuracy and the confusion matrix.
    #[arg(long, value_name = "DIR", conflicts_with = "inputs")]
    pub eval: Option<PathBuf>,

    /// Image files, or directories searched recursively for .jpg .jpeg .png .bmp .webp files.
    #[arg(value_name = "IMAGE_OR_DIR", required_unless_present = "eval")]
    pub inputs: Vec<PathBuf>,
}

fn at_least_one(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(n) if n >= 1 => Ok(n),
        _ => Err(format!("`{s}` is not a whole number of at least 1")),
    }
}

/// Parses the process arguments and runs; returns the exit status.
pub fn main() -> u8 {
    run(&Cli::parse())
}

/// Runs parsed arguments; returns the exit status (see the module docs).
pub fn run(cli: &Cli) -> u8 {
    let result = match &cli.eval {
        Some(dir) => evaluate(cli, dir),
        None => classify(cli),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("vit-infer: error: {e}");
            EXIT_USAGE
        }
    }
}

fn open(cli: &Cli) -> Result<Classifier, InferError> {
    let opts = ClassifierOptions {
        provider: cli.ep,
        intra_threads: cli.threads,
        optimization: cli.opt_level,
        fallback_metadata: None,
    };
    let clf = Classifier::open(&cli.model, &opts)?;
    let c = &clf.metadata().config;
    eprintln!(
        "vit-infer: model {} ({} classes, {}x{}x{} input{}), execution provider: {}",
        cli.model.display(),
        clf.labels().len(),
        c.in_channels,
        c.image_size,
        c.image_size,
        if c.test_time_flip { ", averages each image with its mirror" } else { "" },
        clf.provider()
    );
    if let Some(reason) = clf.cuda_fallback_reason() {
        eprintln!("vit-infer: CUDA not used: {reason}");
    }
    Ok(clf)
}

/// The files to classify: named files as given, directories walked
/// recursively for image extensions (sorted). A directory without images is
/// an error.
pub fn collect_images(inputs: &[PathBuf]) -> Result<Vec<PathBuf>, InferError> {
    let mut out = Vec::new();
    for input in inputs {
        if input.is_dir() {
            let mut found: Vec<PathBuf> = walkdir::WalkDir::new(input)
                .follow_links(true)
                .into_iter()
                .filter_map(Result::ok)
                .filter(|e| e.file_type().is_file() && has_image_extension(e.path()))
                .map(walkdir::DirEntry::into_path)
                .collect();
            if found.is_empty() {
                return Err(InferError::Invalid(format!(
                    "no image files ({}) found in directory {}",
                    IMAGE_EXTENSIONS.iter().map(|e| format!(".{e}")).collect::<Vec<_>>().join(", "),
                    input.display()
                )));
            }
            found.sort();
            out.extend(found);
        } else {
            out.push(input.clone());
        }
    }
    if out.is_empty() {
        return Err(InferError::Invalid("no images given".into()));
    }
    Ok(out)
}

fn classify(cli: &Cli) -> Result<u8, InferError> {
    let files = collect_images(&cli.inputs)?;
    let mut clf = open(cli)?;
    let provider = clf.provider();
    let width = clf.labels().iter().map(|l| l.chars().count()).max().unwrap_or(0);
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let mut failed = 0usize;
    for chunk in files.chunks(cli.batch_size) {
        for (path, result) in chunk.iter().zip(clf.classify_files(chunk, cli.top_k, cli.batch_size)) {
            let written = match result {
                Ok(pred) => write_prediction(&mut out, path, &pred, provider, cli.json, width),
                Err(e) => {
                    failed += 1;
                    if cli.json {
                        let line = serde_json::json!({ "path": path.display().to_string(), "error": e.to_string() });
                        writeln!(out, "{line}")
                    } else {
                        eprintln!("vit-infer: error: {e}");
                        Ok(())
                    }
                }
            };
            if written.is_err() {
                // stdout closed (e.g. piped into `head`): stop quietly.
                return Ok(if failed > 0 { EXIT_SOME_FAILED } else { EXIT_OK });
            }
        }
    }
    let _ = out.flush();
    if failed > 0 {
        eprintln!("vit-infer: {failed} of {} file(s) could not be classified", files.len());
        return Ok(EXIT_SOME_FAILED);
    }
    Ok(EXIT_OK)
}

fn write_prediction(
    out: &mut impl Write,
    path: &Path,
    pred: &Prediction,
    provider: &str,
    json: bool,
    width: usize,
) -> std::io::Result<()> {
    if json {
        let top: Vec<_> = pred
            .top
            .iter()
            .map(|s| serde_json::json!({ "label": s.label, "index": s.index, "probability": s.probability }))
            .collect();
        let line = serde_json::json!({ "path": path.display().to_string(), "top": top, "provider": provider });
        return writeln!(out, "{line}");
    }
    writeln!(out, "{}", path.display())?;
    for s in &pred.top {
        writeln!(out, "  {:<width$}  {:.4}", s.label, s.probability)?;
    }
    Ok(())
}

fn evaluate(cli: &Cli, dir: &Path) -> Result<u8, InferError> {
    let mut clf = open(cli)?;
    let set = load_eval_data(dir, clf.preprocessor())?;
    clf.check_classes(&set.classes)?;
    if set.data.is_empty() {
        return Err(InferError::Invalid(format!("no images to evaluate in {}", set.description)));
    }
    if !set.data.skipped.is_empty() {
        eprintln!("vit-infer: {} file(s) skipped (could not be decoded)", set.data.skipped.len());
    }
    let eval = clf.evaluate(&set.data, cli.batch_size)?;
    let labels = clf.labels();
    if cli.json {
        let line = serde_json::json!({
            "accuracy": eval.accuracy,
            "total": eval.total,
            "labels": labels,
            "confusion_matrix": eval.confusion,
            "provider": clf.provider(),
        });
        println!("{line}");
        return Ok(EXIT_OK);
    }
    let correct = eval.confusion.correct();
    println!("accuracy {:.4} ({correct}/{} correct) on {}", eval.accuracy, eval.total, set.description);
    println!("confusion matrix (rows: true class, columns: predicted class):");
    print!("{}", confusion_table(labels, &eval.confusion.matrix));
    Ok(EXIT_OK)
}

/// A text table with a header row of column numbers and one row per true class.
pub fn confusion_table(labels: &[String], confusion: &[Vec<u64>]) -> String {
    let name_w = labels.iter().map(|l| l.chars().count()).max().unwrap_or(0);
    let max = confusion.iter().flatten().copied().max().unwrap_or(0);
    let cell_w = max.to_string().len().max(labels.len().to_string().len()).max(3);
    let mut s = format!("{:>w$}  ", "", w = name_w + 4);
    for j in 0..labels.len() {
        s += &format!(" {:>cell_w$}", format!("[{j}]"), cell_w = cell_w + 2);
    }
    s.push('\n');
    for (i, row) in confusion.iter().enumerate() {
        s += &format!("[{i}] {:<name_w$}  ", labels.get(i).map(String::as_str).unwrap_or(""));
        for v in row {
            s += &format!(" {v:>w$}", w = cell_w + 2);
        }
        s.push('\n');
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn confusion_table_aligns_rows_and_columns() {
        let labels: Vec<String> = ["cat", "T-shirt/top", "b"].map(String::from).to_vec();
        let table = confusion_table(&labels, &[vec![12, 0, 3], vec![1, 1500, 0], vec![0, 0, 7]]);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 4, "{table}");
        assert!(lines.iter().all(|l| l.len() == lines[0].len()), "ragged:\n{table}");
        assert!(lines[2].starts_with("[1] T-shirt/top") && lines[2].ends_with("0"), "{table}");
        assert!(lines[0].trim_start().starts_with("[0]"), "{table}");
    }

    #[test]
    fn directories_without_images_are_an_error() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.txt"), "x").unwrap();
        let msg = collect_images(&[dir.path().to_path_buf()]).unwrap_err().to_string();
        assert!(msg.contains("no image files") && msg.contains(".png"), "{msg}");
        std::fs::write(dir.path().join("b.JPG"), "x").unwrap();
        assert_eq!(collect_images(&[dir.path().to_path_buf()]).unwrap(), vec![dir.path().join("b.JPG")]);
    }
}
