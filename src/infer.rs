//! ONNX Runtime inference (feature `infer`): a [`Classifier`] opens a model
//! exported by vit-train, reads its config, labels and preprocessing from the
//! ONNX metadata ([`ModelMetadata`]), and classifies image files, decoded
//! pixels or whole evaluation sets with the same [`Preprocessor`] that training
//! used. No libtorch, no protobuf crate, no command-line parser in this path.
//!
//! ONNX Runtime is loaded at run time (`ort`'s `load-dynamic`); see
//! [`runtime_candidates`] for where the library is looked for.
//!
//! ```no_run
//! use vit::infer::{Classifier, ClassifierOptions};
//! # fn main() -> Result<(), vit::infer::InferError> {
//! let mut clf = Classifier::open("models/fashion-mnist.onnx".as_ref(), &ClassifierOptions::default())?;
//! for result in clf.classify_files(&["shoe.png"], 3, 32) {
//!     let pred = result?;
//!     println!("{} {:.3}", pred.top[0].label, pred.top[0].probability);
//! }
//! # Ok(())
//! # }
//! ```

mod runtime;

#[cfg(feature = "cli")]
pub mod cli;

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use ort::ep::{ExecutionProvider, CUDA};
use ort::session::builder::GraphOptimizationLevel;
use ort::session::Session;
use ort::value::{TensorElementType, TensorRef, ValueType};

use crate::data::{self, DataError, Dataset};
use crate::metadata::{MetadataError, ModelMetadata};
pub use crate::metrics::{argmax, Confusion};
use crate::preprocess::Preprocessor;

pub use runtime::{runtime_candidates, runtime_path, RuntimeCandidate};

/// Why inference failed. Every message names the file, key or value concerned
/// and says what to do.
#[derive(Debug, thiserror::Error)]
pub enum InferError {
    /// The ONNX Runtime shared library could not be found or loaded.
    #[error("{0}")]
    Runtime(String),
    /// The model file does not exist.
    #[error("model file {0} does not exist (pass --model PATH, or export one with `vit-train export`)")]
    ModelNotFound(PathBuf),
    /// ONNX Runtime cannot load the model (corrupt or not an ONNX file).
    #[error("cannot load model {path}: {message} (is it an ONNX file written by `vit-train export`? re-export it)")]
    ModelLoad {
        /// The model file.
        path: PathBuf,
        /// ONNX Runtime's message.
        message: String,
    },
    /// The model's metadata is missing or malformed.
    #[error("model {path}: {source}")]
    Metadata {
        /// The model file.
        path: PathBuf,
        /// What is wrong.
        source: MetadataError,
    },
    /// The graph's inputs/outputs disagree with its metadata.
    #[error("model {path}: {message}")]
    ModelShape {
        /// The model file.
        path: PathBuf,
        /// What disagrees.
        message: String,
    },
    /// CUDA was requested but cannot be used.
    #[error("CUDA execution provider requested but unavailable: {0}; use --ep auto or --ep cpu, or install a CUDA build of ONNX Runtime (onnxruntime-gpu) and point ORT_DYLIB_PATH at it")]
    CudaUnavailable(String),
    /// A session option was rejected.
    #[error("invalid session option {option}: {message}")]
    SessionOption {
        /// The option.
        option: &'static str,
        /// ONNX Runtime's message.
        message: String,
    },
    /// Supplied pixels do not have the model's input size.
    #[error("{what} has {found} values but the model takes {batch} x {channels} x {size} x {size} = {expected} ({channels} channel(s) of {size}x{size}){hint}")]
    InputSize {
        /// Which input (`pixels`, `image 3`).
        what: String,
        /// Values supplied.
        found: usize,
        /// Values expected.
        expected: usize,
        /// Images in the batch.
        batch: usize,
        /// Model channels.
        channels: usize,
        /// Model side.
        size: usize,
        /// A guess at what was supplied instead.
        hint: String,
    },
    /// An image file could not be read or decoded.
    #[error("cannot classify {path}: {message}")]
    Image {
        /// The file.
        path: PathBuf,
        /// The read or decode error.
        message: String,
    },
    /// ONNX Runtime failed while running the model.
    #[error("inference failed: {0}")]
    Run(String),
    /// An evaluation data set could not be loaded.
    #[error(transparent)]
    Data(#[from] DataError),
    /// A data set does not fit the model.
    #[error("{0}")]
    DataMismatch(String),
    /// A bad argument value.
    #[error("{0}")]
    Invalid(String),
}

/// Which execution provider runs the model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(feature = "cli", derive(clap::ValueEnum))]
pub enum Provider {
    /// CUDA when the loaded ONNX Runtime has it and it starts, else CPU.
    #[default]
    Auto,
    /// CPU only.
    Cpu,
    /// CUDA or an error.
    Cuda,
}

impl FromStr for Provider {
    type Err = InferError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "auto" => Ok(Self::Auto),
            "cpu" => Ok(Self::Cpu),
            "cuda" | "gpu" => Ok(Self::Cuda),
            other => Err(InferError::Invalid(format!("execution provider `{other}`: expected auto, cpu or cuda"))),
        }
    }
}

/// ONNX Runtime graph optimisation level.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(feature = "cli", derive(clap::ValueEnum))]
pub enum OptLevel {
    /// No graph optimisation.
    Disable,
    /// Constant folding, redundant node elimination.
    Basic,
    /// Plus node fusions (GELU, LayerNorm, attention, ...).
    Extended,
    /// Everything, layout optimisations included.
    #[default]
    All,
}

impl FromStr for OptLevel {
    type Err = InferError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "disable" | "none" => Ok(Self::Disable),
            "basic" => Ok(Self::Basic),
            "extended" => Ok(Self::Extended),
            "all" => Ok(Self::All),
            other => Err(InferError::Invalid(format!(
                "optimization level `{other}`: expected disable, basic, extended or all"
            ))),
        }
    }
}

impl From<OptLevel> for GraphOptimizationLevel {
    fn from(level: OptLevel) -> Self {
        match level {
            OptLevel::Disable => GraphOptimizationLevel::Disable,
            OptLevel::Basic => GraphOptimizationLevel::Level1,
            OptLevel::Extended => GraphOptimizationLevel::Level2,
            OptLevel::All => GraphOptimizationLevel::All,
        }
    }
}

/// How to open a model.
#[derive(Debug, Clone, Default)]
pub struct ClassifierOptions {
    /// Execution provider.
    pub provider: Provider,
    /// Threads within an operator (`None`: ONNX Runtime's default, one per core).
    pub intra_threads: Option<usize>,
    /// Graph optimisation level.
    pub optimization: OptLevel,
    /// Metadata to use when the model has none of ours (for models not written
    /// by vit-train). A model that has our metadata always uses its own.
    pub fallback_metadata: Option<ModelMetadata>,
}

/// One class and its probability.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Scored {
    /// Class index (logit position).
    pub index: usize,
    /// Class name.
    pub label: String,
    /// Softmax probability.
    pub probability: f32,
}

/// The top classes of one image, most probable first.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Prediction {
    /// The image file, when classified from a file.
    pub path: Option<PathBuf>,
    /// The `top_k` most probable classes, sorted by descending probability
    /// (ties: lower index first, so `top[0]` is the first argmax of the logits).
    pub top: Vec<Scored>,
}

/// Accuracy and confusion matrix over a data set.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Evaluation {
    /// Top-1 accuracy (correct / total; 0 for an empty set).
    pub accuracy: f64,
    /// `confusion.matrix[true][predicted]` counts.
    pub confusion: Confusion,
    /// Images evaluated.
    pub total: u64,
}

/// An evaluation set as [`load_eval_data`] found it.
#[derive(Debug, Clone)]
pub struct EvalData {
    /// Class names of the data, in label order.
    pub classes: Vec<String>,
    /// The decoded images.
    pub data: Dataset,
    /// Which split was used, in words (`val split of DIR`, ...).
    pub description: String,
}

/// Loads the images to evaluate a model on, exactly as vit-train validated:
/// - an IDX folder (Fashion-MNIST): its `t10k` split (via [`data::load_splits`]);
/// - a folder with `train/` and `val/`: the `val/` image folder;
/// - otherwise an image folder `DIR/<class>/*`, all of it.
pub fn load_eval_data(dir: &Path, prep: &Preprocessor) -> Result<EvalData, InferError> {
    match data::Layout::detect(dir)? {
        data::Layout::Idx => {
            // The same t10k decode `load_splits` uses for validation, without the 60k training images.
            let data = data::load_idx_split(dir, "t10k", prep, None)?;
            let classes = data::FASHION_MNIST_LABELS.iter().map(|s| s.to_string()).collect();
            let description = format!("t10k split of IDX folder {}", dir.display());
            Ok(EvalData { classes, data, description })
        }
        data::Layout::Splits { val, .. } => {
            // `load_splits` decodes `val/` with `load_folder`'s code path (no cap):
            // loading it alone gives the same images without decoding train/.
            let (classes, data) = data::load_folder(&val, prep)?;
            Ok(EvalData { classes, data, description: format!("val split {}", val.display()) })
        }
        data::Layout::Folder => {
            let (classes, data) = data::load_folder(dir, prep)?;
            Ok(EvalData { classes, data, description: format!("image folder {}", dir.display()) })
        }
    }
}

/// An ONNX model with its metadata and preprocessing, ready to classify.
pub struct Classifier {
    session: Session,
    meta: ModelMetadata,
    prep: Preprocessor,
    provider: &'static str,
    cuda_fallback: Option<String>,
    input_name: String,
    path: PathBuf,
}

impl fmt::Debug for Classifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Classifier")
            .field("path", &self.path)
            .field("provider", &self.provider)
            .field("labels", &self.meta.labels)
            .finish_non_exhaustive()
    }
}

fn new_session(path: &Path, opts: &ClassifierOptions, cuda: bool) -> Result<Session, (InferError, bool)> {
    // Err((error, is_cuda_registration_error))
    let env = runtime::environment().map_err(|e| (e, false))?;
    let option = |option: &'static str| {
        move |e: ort::Error<_>| (InferError::SessionOption { option, message: e.to_string() }, false)
    };
    let mut builder = Session::builder(env).map_err(|e| (InferError::Run(e.to_string()), false))?;
    builder = builder.with_optimization_level(opts.optimization.into()).map_err(option("optimization"))?;
    if let Some(n) = opts.intra_threads {
        builder = builder.with_intra_threads(n).map_err(option("intra_threads"))?;
    }
    if cuda {
        builder = builder
            .with_execution_providers([CUDA::default().build().error_on_failure()])
            .map_err(|e| (InferError::CudaUnavailable(format!("registering it failed: {e}")), true))?;
    }
    builder
        .commit_from_file(path)
        .map_err(|e| (InferError::ModelLoad { path: path.to_path_buf(), message: e.to_string() }, false))
}

fn cuda_compiled_in() -> Result<bool, InferError> {
    CUDA::is_available().map_err(|e| InferError::Run(format!("cannot list ONNX Runtime's execution providers: {e}")))
}

impl Classifier {
    /// Opens `path`: loads ONNX Runtime (once per process), creates a session
    /// with the requested provider, reads the metadata and checks that the
    /// graph's input matches it.
    pub fn open(path: &Path, opts: &ClassifierOptions) -> Result<Self, InferError> {
        if !path.is_file() {
            return Err(InferError::ModelNotFound(path.to_path_buf()));
        }
        runtime::environment()?;
        let mut cuda_fallback = None;
        let (session, provider) = match opts.provider {
            Provider::Cpu => (new_session(path, opts, false).map_err(|e| e.0)?, "cpu"),
            Provider::Cuda => {
                if !cuda_compiled_in()? {
                    return Err(InferError::CudaUnavailable(format!(
                        "the ONNX Runtime library {} was built without the CUDA execution provider",
                        runtime_path().map(|p| p.display().to_string()).unwrap_or_default()
                    )));
                }
                match new_session(path, opts, true) {
                    Ok(s) => (s, "cuda"),
                    Err((e, true)) => return Err(e),
                    Err((e, false)) => {
                        // Tell a bad model apart from a CUDA failure at session creation.
                        let message = match e {
                            InferError::ModelLoad { message, .. } => message,
                            other => other.to_string(),
                        };
                        return Err(match new_session(path, opts, false) {
                            Ok(_) => InferError::CudaUnavailable(format!("creating a CUDA session failed: {message}")),
                            Err((cpu_err, _)) => cpu_err,
                        });
                    }
                }
            }
            Provider::Auto => {
                let cuda = if cuda_compiled_in()? {
                    new_session(path, opts, true).map_err(|(e, _)| match e {
                        InferError::ModelLoad { message, .. } => format!("creating a CUDA session failed: {message}"),
                        other => other.to_string(),
                    })
                } else {
                    Err("the loaded ONNX Runtime has no CUDA execution provider".to_string())
                };
                match cuda {
                    Ok(s) => (s, "cuda"),
                    Err(reason) => {
                        cuda_fallback = Some(reason);
                        (new_session(path, opts, false).map_err(|e| e.0)?, "cpu")
                    }
                }
            }
        };
        let meta = read_metadata(&session, path, opts.fallback_metadata.as_ref())?;
        let prep = Preprocessor::from_config(&meta.config);
        let input_name = check_signature(&session, &meta, path)?;
        Ok(Self { session, meta, prep, provider, cuda_fallback, input_name, path: path.to_path_buf() })
    }

    /// The model's config, labels and recorded validation accuracy.
    pub fn metadata(&self) -> &ModelMetadata {
        &self.meta
    }

    /// The preprocessing the model expects.
    pub fn preprocessor(&self) -> &Preprocessor {
        &self.prep
    }

    /// `"cuda"` or `"cpu"`: the execution provider the session was created with.
    pub fn provider(&self) -> &'static str {
        self.provider
    }

    /// With [`Provider::Auto`] on the CPU: why CUDA was not used.
    pub fn cuda_fallback_reason(&self) -> Option<&str> {
        self.cuda_fallback.as_deref()
    }

    /// The model file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Class names in logit order.
    pub fn labels(&self) -> &[String] {
        &self.meta.labels
    }

    fn size_error(&self, what: String, found: usize, batch: usize) -> InferError {
        let (c, s) = (self.prep.channels, self.prep.image_size);
        let mut hint = String::new();
        if batch > 0 && found > 0 && found % batch == 0 {
            let per = found / batch;
            // The most plausible layout of what was supplied: C x side x side, C in {model's, 1, 3, 4}.
            let guess = [c, 1, 3, 4].into_iter().find_map(|ch| {
                let side = ((per / ch) as f64).sqrt().round() as usize;
                (per % ch == 0 && side * side * ch == per).then_some((ch, side))
            });
            match guess {
                Some((ch, side)) if side == s => {
                    hint = format!("; that is {ch} channel(s) of {s}x{s}: convert the image to {c} channel(s) (Preprocessor does this)")
                }
                Some((ch, side)) => {
                    hint = format!("; that looks like {ch} channel(s) of {side}x{side}: resize to {s}x{s} (Preprocessor does this)")
                }
                None => {}
            }
        }
        InferError::InputSize {
            what,
            found,
            expected: batch * self.prep.image_len(),
            batch,
            channels: c,
            size: s,
            hint,
        }
    }

    /// Logits (`[batch, num_classes]`, row-major) of `batch` normalised NCHW images.
    pub fn logits(&mut self, pixels: &[f32], batch: usize) -> Result<Vec<f32>, InferError> {
        if batch == 0 {
            return Err(InferError::Invalid("batch must be at least 1".into()));
        }
        if pixels.len() != batch * self.prep.image_len() {
            return Err(self.size_error("pixels".into(), pixels.len(), batch));
        }
        let (c, s) = (self.prep.channels, self.prep.image_size);
        let k = self.meta.labels.len();
        let input =
            TensorRef::from_array_view(([batch, c, s, s], pixels)).map_err(|e| InferError::Run(e.to_string()))?;
        let outputs = self
            .session
            .run(ort::inputs![self.input_name.as_str() => input])
            .map_err(|e| InferError::Run(e.to_string()))?;
        if outputs.len() == 0 {
            return Err(InferError::Run("the model produced no output".into()));
        }
        let (shape, data) = outputs[0]
            .try_extract_tensor::<f32>()
            .map_err(|e| InferError::Run(format!("output is not an f32 tensor: {e}")))?;
        if **shape != [batch as i64, k as i64] {
            return Err(InferError::Run(format!(
                "output has shape {:?}, expected [{batch}, {k}] (batch, classes in the metadata)",
                &**shape
            )));
        }
        Ok(data.to_vec())
    }

    /// Classifies CHW u8 images (as [`Preprocessor::load_file`] returns them)
    /// in one batch; `top_k` is capped at the number of classes.
    pub fn classify_pixels(&mut self, images_u8: &[&[u8]], top_k: usize) -> Result<Vec<Prediction>, InferError> {
        if images_u8.is_empty() {
            return Ok(Vec::new());
        }
        let len = self.prep.image_len();
        let mut pixels = Vec::with_capacity(images_u8.len() * len);
        for (i, img) in images_u8.iter().enumerate() {
            if img.len() != len {
                return Err(self.size_error(format!("image {i}"), img.len(), 1));
            }
            pixels.extend_from_slice(img);
        }
        let normalised = self.prep.normalize(&pixels);
        let logits = self.logits(&normalised, images_u8.len())?;
        Ok(logits
            .chunks(self.meta.labels.len())
            .map(|row| Prediction { path: None, top: self.top_k(row, top_k) })
            .collect())
    }

    /// Classifies image files in batches of `batch_size`. One result per path,
    /// in order: a file that cannot be read or decoded is an error of its own
    /// and the others are still classified.
    pub fn classify_files<P: AsRef<Path> + Sync>(
        &mut self,
        paths: &[P],
        top_k: usize,
        batch_size: usize,
    ) -> Vec<Result<Prediction, InferError>> {
        use rayon::prelude::*;
        let mut results = Vec::with_capacity(paths.len());
        for chunk in paths.chunks(batch_size.max(1)) {
            let decoded: Vec<_> = chunk.par_iter().map(|p| self.prep.load_file(p.as_ref())).collect();
            let ok: Vec<&[u8]> = decoded.iter().filter_map(|d| d.as_ref().ok().map(Vec::as_slice)).collect();
            let batch = if ok.is_empty() { Ok(Vec::new()) } else { self.classify_pixels(&ok, top_k) };
            let mut preds = match batch {
                Ok(p) => p.into_iter().map(Ok).collect::<Vec<_>>(),
                Err(e) => {
                    let msg = e.to_string();
                    (0..ok.len()).map(|_| Err(msg.clone())).collect()
                }
            }
            .into_iter();
            for (path, d) in chunk.iter().zip(decoded) {
                let path = path.as_ref().to_path_buf();
                results.push(match d {
                    Err(e) => Err(InferError::Image { path, message: e.to_string() }),
                    Ok(_) => match preds.next() {
                        Some(Ok(mut p)) => {
                            p.path = Some(path);
                            Ok(p)
                        }
                        Some(Err(message)) => Err(InferError::Image { path, message }),
                        None => Err(InferError::Run("missing prediction".into())),
                    },
                });
            }
        }
        results
    }

    /// Accuracy and confusion matrix of the model on `data` (labels must index
    /// the model's classes), in batches of `batch_size`.
    pub fn evaluate(&mut self, data: &Dataset, batch_size: usize) -> Result<Evaluation, InferError> {
        let k = self.meta.labels.len();
        if data.image_len != self.prep.image_len() && !data.is_empty() {
            return Err(InferError::DataMismatch(format!(
                "the data set holds {} values per image but the model takes {} ({} x {}x{}): load it with this model's Preprocessor",
                data.image_len,
                self.prep.image_len(),
                self.prep.channels,
                self.prep.image_size,
                self.prep.image_size
            )));
        }
        if let Some(bad) = data.labels.iter().find(|&&l| l < 0 || l as usize >= k) {
            return Err(InferError::DataMismatch(format!("label {bad} is out of range for a model with {k} classes")));
        }
        let mut confusion = Confusion::new(k);
        let mut normalised = Vec::new();
        let bs = batch_size.max(1);
        let mut start = 0;
        while start < data.len() {
            let end = (start + bs).min(data.len());
            let px = &data.pixels[start * data.image_len..end * data.image_len];
            self.prep.normalize_into(px, &mut normalised);
            let logits = self.logits(&normalised, end - start)?;
            for (row, &label) in logits.chunks(k).zip(&data.labels[start..end]) {
                confusion.add(label as usize, argmax(row));
            }
            start = end;
        }
        Ok(Evaluation { accuracy: confusion.accuracy(), total: confusion.total(), confusion })
    }

    /// Checks that the data's class names are the model's labels, in order.
    pub fn check_classes(&self, classes: &[String]) -> Result<(), InferError> {
        if classes != self.meta.labels.as_slice() {
            return Err(InferError::DataMismatch(format!(
                "the data's classes {classes:?} are not the model's labels {:?} (same names, same order required)",
                self.meta.labels
            )));
        }
        Ok(())
    }

    fn top_k(&self, logits: &[f32], k: usize) -> Vec<Scored> {
        let probs = softmax(logits);
        let mut order: Vec<usize> = (0..probs.len()).collect();
        // Stable: equal probabilities keep index order.
        order.sort_by(|&a, &b| probs[b].partial_cmp(&probs[a]).unwrap_or(std::cmp::Ordering::Equal));
        order
            .into_iter()
            .take(k.min(probs.len()))
            .map(|i| Scored { index: i, label: self.meta.labels[i].clone(), probability: probs[i] as f32 })
            .collect()
    }
}

/// Softmax in f64 (max subtracted).
pub fn softmax(logits: &[f32]) -> Vec<f64> {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    let exps: Vec<f64> = logits.iter().map(|&l| (l as f64 - max).exp()).collect();
    let sum: f64 = exps.iter().sum();
    exps.into_iter().map(|e| e / sum).collect()
}

fn read_metadata(
    session: &Session,
    path: &Path,
    fallback: Option<&ModelMetadata>,
) -> Result<ModelMetadata, InferError> {
    let md =
        session.metadata().map_err(|e| InferError::ModelLoad { path: path.to_path_buf(), message: e.to_string() })?;
    let keys =
        md.custom_keys().map_err(|e| InferError::ModelLoad { path: path.to_path_buf(), message: e.to_string() })?;
    let props: HashMap<String, String> = keys.into_iter().filter_map(|k| md.custom(&k).map(|v| (k, v))).collect();
    match (ModelMetadata::from_props(&props), fallback) {
        (Ok(meta), _) => Ok(meta),
        (Err(MetadataError::Missing(_)), Some(meta)) => {
            let meta = meta.clone();
            meta.config.validate().map_err(|e| InferError::Metadata { path: path.to_path_buf(), source: e.into() })?;
            if meta.labels.len() != meta.config.num_classes {
                return Err(InferError::Metadata {
                    path: path.to_path_buf(),
                    source: MetadataError::Malformed {
                        key: crate::metadata::KEY_LABELS,
                        message: format!(
                            "fallback metadata has {} labels for {} classes",
                            meta.labels.len(),
                            meta.config.num_classes
                        ),
                    },
                });
            }
            Ok(meta)
        }
        (Err(source), _) => Err(InferError::Metadata { path: path.to_path_buf(), source }),
    }
}

/// Checks the graph has one f32 `[batch, C, H, W]` input and a `[batch, K]`
/// output agreeing with the metadata; returns the input name.
fn check_signature(session: &Session, meta: &ModelMetadata, path: &Path) -> Result<String, InferError> {
    let bad = |message: String| InferError::ModelShape { path: path.to_path_buf(), message };
    let [input] = session.inputs() else {
        return Err(bad(format!(
            "the graph has {} inputs; a vit-train model has exactly one (pixel_values)",
            session.inputs().len()
        )));
    };
    let Some(output) = session.outputs().first() else {
        return Err(bad("the graph has no output".into()));
    };
    let c = &meta.config;
    let want = [-1, c.in_channels as i64, c.image_size as i64, c.image_size as i64];
    if let ValueType::Tensor { ty, shape, .. } = input.dtype() {
        let dims_ok = shape.len() == 4 && shape.iter().zip(want).skip(1).all(|(&d, w)| d <= 0 || d == w);
        if *ty != TensorElementType::Float32 || !dims_ok {
            return Err(bad(format!(
                "input `{}` is {ty:?} {:?} but the metadata describes f32 [batch, {}, {}, {}]",
                input.name(),
                &**shape,
                c.in_channels,
                c.image_size,
                c.image_size
            )));
        }
    } else {
        return Err(bad(format!("input `{}` is not a tensor", input.name())));
    }
    if let ValueType::Tensor { shape, .. } = output.dtype() {
        let k = meta.labels.len() as i64;
        if shape.len() != 2 || (shape[1] > 0 && shape[1] != k) {
            return Err(bad(format!(
                "output `{}` has shape {:?} but the metadata lists {k} labels ([batch, {k}] expected)",
                output.name(),
                &**shape
            )));
        }
    }
    Ok(input.name().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn softmax_and_argmax() {
        let p = softmax(&[1.0, 3.0, 3.0, -1.0]);
        assert!((p.iter().sum::<f64>() - 1.0).abs() < 1e-12);
        assert_eq!(argmax(&[1.0, 3.0, 3.0, -1.0]), 1);
        assert_eq!(argmax(&[f32::NAN, 0.5]), 1);
    }

    #[test]
    fn parse_options() {
        assert_eq!("CUDA".parse::<Provider>().unwrap(), Provider::Cuda);
        assert!("tpu".parse::<Provider>().unwrap_err().to_string().contains("tpu"));
        assert_eq!("extended".parse::<OptLevel>().unwrap(), OptLevel::Extended);
    }
}
