//! `vit-infer`'s command line: the flags, their defaults and help text, and
//! the value enums that map `--ep` and `--opt-level` names onto the library's
//! [`Provider`] and [`OptLevel`] (the library itself has no clap).

use std::path::PathBuf;

use clap::{Parser, ValueEnum};
use vit::infer::{max_intra_threads, ClassifierOptions, ClassifyOptions, OptLevel, Provider};

/// `--help`'s closing text: exit statuses, then where ONNX Runtime comes from.
pub const EXIT_STATUS: &str = "Exit status:\n  \
0  every input was classified (or, with --eval, every file evaluated)\n  \
1  some inputs failed, each reported and the rest classified: a file that cannot be read or decoded, \
is not a regular file or is over VIT_MAX_IMAGE_BYTES (256 MiB by default), whose logits are NaN or infinite, \
an unreadable entry or an image-less directory among other inputs; with --eval, files were skipped \
(counted in \"skipped\", the accuracy is over the rest)\n  \
2  usage or model error, nothing reported: bad flags, a missing or corrupt model, a model without vit metadata \
or contradicting itself, nothing at all to classify, unusable --eval data, NaN or infinite logits in --eval\n\
ONNX Runtime is loaded from $ORT_DYLIB_PATH, else the path recorded at build time, \
else libonnxruntime.so* next to this executable (run scripts/setup.sh to install it).";

/// Classify images with a Vision Transformer exported by `vit-train export`,
/// using ONNX Runtime. The model's ONNX metadata supplies the input size,
/// channels, normalisation and class labels, so no shape flags are needed.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "vit-infer",
    version,
    after_help = EXIT_STATUS
)]
pub struct Cli {
    /// ONNX model written by `vit-train export`; the default is the model of the Fashion-MNIST demo (scripts/demo.sh).
    #[arg(long, short = 'm', value_name = "PATH", default_value = "runs/demo/model.onnx")]
    pub model: PathBuf,

    /// Also say why the CUDA execution provider was not used when --ep auto fell back to the CPU.
    #[arg(long, short = 'v')]
    pub verbose: bool,

    /// Number of most probable classes printed per image (capped at the model's class count).
    #[arg(long, short = 'k', value_name = "K", default_value_t = 5, value_parser = at_least_one)]
    pub top_k: usize,

    /// Print one JSON object per line (per image, or one for --eval) instead of text.
    #[arg(long)]
    pub json: bool,

    /// Execution provider: auto (CUDA when ONNX Runtime has it and it starts, else CPU), cpu, or cuda (an error when unavailable).
    #[arg(long, value_enum, value_name = "EP", default_value_t = EpArg::Auto)]
    pub ep: EpArg,

    /// Threads used inside each operator, at most 4 x the available cores (default: ONNX Runtime's choice, one per core).
    #[arg(long, value_name = "N", value_parser = thread_count)]
    pub threads: Option<usize>,

    /// Images per inference batch.
    #[arg(long, value_name = "N", default_value_t = 32, value_parser = at_least_one)]
    pub batch_size: usize,

    /// ONNX Runtime graph optimisation level.
    #[arg(long, value_enum, value_name = "LEVEL", default_value_t = OptLevelArg::All)]
    pub opt_level: OptLevelArg,

    // The doc comment is clap's help text, printed verbatim: `<class>` is a placeholder, not HTML.
    #[allow(rustdoc::invalid_html_tags)]
    /// Evaluate instead of classifying: DIR/<class>/* images, or DIR/train + DIR/val (or valid, validation, test: that split is used), or a Fashion-MNIST IDX folder (t10k is used); prints accuracy and the confusion matrix.
    #[arg(long, value_name = "DIR", conflicts_with = "inputs")]
    pub eval: Option<PathBuf>,

    /// Report whether the CUDA provider would start (ONNX Runtime build, driver, CUDA libraries found or missing) and exit: 0 when it would, 2 otherwise.
    #[arg(long, conflicts_with_all = ["eval", "inputs"])]
    pub check_gpu: bool,

    /// Image files, or directories searched recursively for .jpg .jpeg .png .bmp .webp files.
    #[arg(value_name = "IMAGE_OR_DIR", required_unless_present_any = ["eval", "check_gpu"])]
    pub inputs: Vec<PathBuf>,
}

impl Cli {
    /// How to open the model.
    pub fn classifier_options(&self) -> ClassifierOptions {
        ClassifierOptions {
            provider: self.ep.into(),
            intra_threads: self.threads,
            optimization: self.opt_level.into(),
            fallback_metadata: None,
            cuda_library_dirs: Vec::new(),
        }
    }

    /// How to classify the input files.
    pub fn classify_options(&self) -> ClassifyOptions {
        ClassifyOptions { top_k: self.top_k, batch_size: self.batch_size }
    }
}

/// `--ep` values; the variant docs are the help text of each value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum EpArg {
    /// CUDA when the loaded ONNX Runtime has it and it starts, else CPU.
    Auto,
    /// CPU only.
    Cpu,
    /// CUDA or an error.
    Cuda,
}

impl From<EpArg> for Provider {
    fn from(ep: EpArg) -> Self {
        match ep {
            EpArg::Auto => Provider::Auto,
            EpArg::Cpu => Provider::Cpu,
            EpArg::Cuda => Provider::Cuda,
        }
    }
}

/// `--opt-level` values; the variant docs are the help text of each value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OptLevelArg {
    /// No graph optimisation.
    Disable,
    /// Constant folding, redundant node elimination.
    Basic,
    /// Plus node fusions (GELU, LayerNorm, attention, ...).
    Extended,
    /// Everything, layout optimisations included.
    All,
}

impl From<OptLevelArg> for OptLevel {
    fn from(level: OptLevelArg) -> Self {
        match level {
            OptLevelArg::Disable => OptLevel::Disable,
            OptLevelArg::Basic => OptLevel::Basic,
            OptLevelArg::Extended => OptLevel::Extended,
            OptLevelArg::All => OptLevel::All,
        }
    }
}

/// `--threads`: at least 1, at most the library's [`max_intra_threads`].
fn thread_count(s: &str) -> Result<usize, String> {
    let n = at_least_one(s)?;
    let limit = max_intra_threads();
    if n > limit {
        return Err(format!(
            "{n} is more than the limit of {limit} threads (4 x the {} available cores): more only slow ONNX Runtime down",
            limit / 4
        ));
    }
    Ok(n)
}

fn at_least_one(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(n) if n >= 1 => Ok(n),
        _ => Err(format!("`{s}` is not a whole number of at least 1")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn value_names_are_the_library_names() {
        // Every name clap accepts parses to the same library value through FromStr.
        for ep in EpArg::value_variants() {
            let name = ep.to_possible_value().unwrap().get_name().to_string();
            assert_eq!(name.parse::<Provider>().unwrap(), Provider::from(*ep), "{name}");
        }
        for level in OptLevelArg::value_variants() {
            let name = level.to_possible_value().unwrap().get_name().to_string();
            assert_eq!(name.parse::<OptLevel>().unwrap(), OptLevel::from(*level), "{name}");
        }
    }

    #[test]
    fn defaults_are_the_library_defaults() {
        let cli = Cli::parse_from(["vit-infer", "x.png"]);
        assert_eq!(cli.classify_options(), ClassifyOptions::default());
        let opts = cli.classifier_options();
        assert_eq!((opts.provider, opts.optimization), (Provider::default(), OptLevel::default()));
    }
}
