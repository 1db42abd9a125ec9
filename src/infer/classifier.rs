//! [`Classifier`]: an opened model with its metadata and preprocessing, and
//! the ways to run it, from raw normalised pixels ([`Classifier::logits`]) to
//! decoded images ([`Classifier::classify_pixels`]) and image files
//! ([`Classifier::classify_files`]). `pixels` feeds raw-pixel models.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use ort::session::Session;
use ort::value::TensorRef;
use rayon::prelude::*;

use super::prediction;
use super::session::{self, Opened};
use super::signature::{check_signature, read_metadata};
use super::{ClassifierOptions, ClassifyOptions, CudaError, ExecutionProvider, InferError, Prediction};
use crate::format::{InputKind, ModelFormat};
use crate::metadata::ModelMetadata;

mod pixels;
use crate::preprocess::Preprocessor;

/// An ONNX model with its metadata and preprocessing, ready to classify.
pub struct Classifier {
    session: Session,
    meta: ModelMetadata,
    prep: Preprocessor,
    provider: ExecutionProvider,
    cuda_fallback: Option<CudaError>,
    input_name: String,
    path: PathBuf,
    format: ModelFormat,
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

impl Classifier {
    /// Opens the model at `path`: checks the options
    /// ([`ClassifierOptions::validate`]), loads ONNX Runtime (once per process),
    /// creates a session with the requested provider, reads the metadata and
    /// checks that the graph's input and output match it.
    ///
    /// ```no_run
    /// use vit::infer::{Classifier, ClassifierOptions, Provider};
    /// # fn main() -> Result<(), vit::infer::InferError> {
    /// let opts = ClassifierOptions { provider: Provider::Cpu, ..Default::default() };
    /// let clf = Classifier::open("runs/demo/model.onnx", &opts)?;
    /// println!("{} classes on {}", clf.labels().len(), clf.provider());
    /// # Ok(())
    /// # }
    /// ```
    pub fn open(path: impl AsRef<Path>, opts: &ClassifierOptions) -> Result<Self, InferError> {
        let path = path.as_ref();
        opts.validate()?;
        // Before ONNX Runtime opens it: it would block on a FIFO and read /dev/zero until memory runs out.
        match crate::files::check_regular(path, crate::files::MAX_WEIGHTS_BYTES, "ONNX model") {
            Err(e) if e.is_not_found() => return Err(InferError::ModelNotFound(path.to_path_buf())),
            Err(e) => return Err(e.into()),
            Ok(_) => {}
        }
        let Opened { session, provider, cuda_fallback } = session::open(path, opts)?;
        let meta = read_metadata(&session, path, opts.fallback_metadata.as_ref())?;
        let prep = Preprocessor::from_config(&meta.config);
        let format = pixels::read_format(&session, path)?;
        let input_name = match format.input {
            InputKind::Float32Nchw => check_signature(&session, &meta, path)?,
            InputKind::Uint8Nhwc => pixels::check_u8_input(&session, &meta, path)?,
        };
        Ok(Self { session, meta, prep, provider, cuda_fallback, input_name, path: path.to_path_buf(), format })
    }

    /// The model's config, labels and recorded validation accuracy.
    pub fn metadata(&self) -> &ModelMetadata {
        &self.meta
    }

    /// The preprocessing the model expects.
    pub fn preprocessor(&self) -> &Preprocessor {
        &self.prep
    }

    /// The execution provider the session runs on.
    pub fn provider(&self) -> ExecutionProvider {
        self.provider
    }

    /// With [`Provider::Auto`](super::Provider::Auto) on the CPU: why CUDA was not used.
    pub fn cuda_fallback_reason(&self) -> Option<&CudaError> {
        self.cuda_fallback.as_ref()
    }

    /// The model file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The name of the graph's one input (`pixel_values` for vit-train exports).
    pub fn input_name(&self) -> &str {
        &self.input_name
    }

    /// Class names in logit order.
    pub fn labels(&self) -> &[String] {
        &self.meta.labels
    }

    /// Logits (`[batch, num_classes]`, row-major) of `batch` normalised NCHW
    /// images; a raw-pixel model takes [`Self::logits_u8`] instead.
    pub fn logits(&mut self, pixels: &[f32], batch: usize) -> Result<Vec<f32>, InferError> {
        if self.format.input != InputKind::Float32Nchw {
            return Err(InferError::Invalid(format!(
                "{} takes u8 pixels ({}), not normalised floats: use logits_u8 or classify_pixels",
                self.path.display(),
                self.format.input
            )));
        }
        if batch == 0 {
            return Err(InferError::Invalid("batch must be at least 1".into()));
        }
        if pixels.len() != batch * self.prep.image_len() {
            return Err(size_error(&self.prep, "pixels".into(), pixels.len(), batch));
        }
        let (c, s) = (self.prep.channels, self.prep.image_size);
        let input = TensorRef::from_array_view(([batch, c, s, s], pixels))
            .map_err(InferError::ort("wrapping the pixels in a tensor"))?;
        self.run(input.into(), batch)
    }

    /// Runs the model on its one input and returns the `[batch, num_classes]`
    /// logits, checking the output's type and shape.
    pub(super) fn run(
        &mut self,
        input: ort::session::SessionInputValue<'_>,
        batch: usize,
    ) -> Result<Vec<f32>, InferError> {
        let k = self.meta.labels.len();
        let outputs = self
            .session
            .run(ort::inputs![self.input_name.as_str() => input])
            .map_err(InferError::ort("running the model"))?;
        if outputs.len() == 0 {
            return Err(InferError::Output("the model produced no output".into()));
        }
        let (shape, data) =
            outputs[0].try_extract_tensor::<f32>().map_err(InferError::ort("reading the output as f32 logits"))?;
        if **shape != [batch as i64, k as i64] {
            return Err(InferError::Output(format!(
                "output has shape {:?}, expected [{batch}, {k}] (batch, classes in the metadata)",
                &**shape
            )));
        }
        Ok(data.to_vec())
    }

    /// Classifies CHW u8 images (as [`Preprocessor::load_file`] returns them)
    /// in one batch; `top_k` is capped at the number of classes. An image
    /// whose logits are NaN or infinite is an [`InferError::NonFiniteLogits`]
    /// naming it (`image N`).
    pub fn classify_pixels(&mut self, images_u8: &[&[u8]], top_k: usize) -> Result<Vec<Prediction>, InferError> {
        let logits = self.batch_logits(images_u8)?;
        let labels = &self.meta.labels;
        logits
            .chunks(labels.len().max(1))
            .enumerate()
            .map(|(i, row)| {
                InferError::check_finite(row, || format!("image {i}"))?;
                Ok(Prediction { path: None, top: prediction::top_k(row, labels, top_k) })
            })
            .collect()
    }

    /// Logits of CHW u8 images, normalised and run as one batch (empty for none).
    fn batch_logits(&mut self, images_u8: &[&[u8]]) -> Result<Vec<f32>, InferError> {
        if images_u8.is_empty() {
            return Ok(Vec::new());
        }
        let len = self.prep.image_len();
        let mut pixels = Vec::with_capacity(images_u8.len() * len);
        for (i, img) in images_u8.iter().enumerate() {
            if img.len() != len {
                return Err(size_error(&self.prep, format!("image {i}"), img.len(), 1));
            }
            pixels.extend_from_slice(img);
        }
        self.logits_u8(&pixels, images_u8.len())
    }

    /// Classifies image files in batches of `opts.batch_size`. One result per
    /// path, in order: a file that cannot be read or decoded, or whose logits
    /// are NaN or infinite, is an error of its own and the others are still
    /// classified.
    ///
    /// ```no_run
    /// use vit::infer::{Classifier, ClassifierOptions, ClassifyOptions};
    /// # fn main() -> Result<(), vit::infer::InferError> {
    /// let mut clf = Classifier::open("runs/demo/model.onnx", &ClassifierOptions::default())?;
    /// let opts = ClassifyOptions { top_k: 3, ..Default::default() };
    /// for result in clf.classify_files(&["shoe.png", "shirt.jpg"], &opts) {
    ///     let pred = result?;
    ///     println!("{:?}: {} {:.3}", pred.path, pred.top[0].label, pred.top[0].probability);
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub fn classify_files<P: AsRef<Path> + Sync>(
        &mut self,
        paths: &[P],
        opts: &ClassifyOptions,
    ) -> Vec<Result<Prediction, InferError>> {
        let mut results = Vec::with_capacity(paths.len());
        for chunk in paths.chunks(opts.batch_size.max(1)) {
            let decoded: Vec<_> = chunk.par_iter().map(|p| self.prep.load_file(p.as_ref())).collect();
            let ok: Vec<&[u8]> = decoded.iter().filter_map(|d| d.as_ref().ok().map(Vec::as_slice)).collect();
            let k = self.meta.labels.len().max(1);
            // One failed batch is every decoded file's error.
            let (logits, batch_error) = match self.batch_logits(&ok) {
                Ok(logits) => (logits, None),
                Err(e) => (Vec::new(), Some(Arc::new(e))),
            };
            let mut rows = logits.chunks(k);
            for (path, d) in chunk.iter().zip(decoded) {
                let path = path.as_ref().to_path_buf();
                results.push(match (d, &batch_error) {
                    (Err(source), _) => Err(InferError::Image { path, source }),
                    (Ok(_), Some(source)) => Err(InferError::Batch { path, source: Arc::clone(source) }),
                    (Ok(_), None) => match rows.next() {
                        Some(row) => InferError::check_finite(row, || path.display().to_string()).map(|()| {
                            Prediction { top: prediction::top_k(row, &self.meta.labels, opts.top_k), path: Some(path) }
                        }),
                        None => Err(InferError::Output(format!("no prediction for {}", path.display()))),
                    },
                });
            }
        }
        results
    }
}

/// The error for `found` values where `batch` images of the model's size were
/// expected, with a guess at the layout that was supplied instead.
fn size_error(prep: &Preprocessor, what: String, found: usize, batch: usize) -> InferError {
    let (c, s) = (prep.channels, prep.image_size);
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
                hint = format!(
                    "; that is {ch} channel(s) of {s}x{s}: convert the image to {c} channel(s) (Preprocessor does this)"
                )
            }
            Some((ch, side)) => {
                hint = format!(
                    "; that looks like {ch} channel(s) of {side}x{side}: resize to {s}x{s} (Preprocessor does this)"
                )
            }
            None => {}
        }
    }
    InferError::InputSize { what, found, expected: batch * prep.image_len(), batch, channels: c, size: s, hint }
}
