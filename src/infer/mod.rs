#![warn(missing_docs)]
//! ONNX Runtime inference (feature `infer`): a [`Classifier`] opens a model
//! exported by vit-train, reads its config, labels and preprocessing from the
//! ONNX metadata ([`ModelMetadata`](crate::ModelMetadata)), and classifies
//! image files, decoded pixels or whole evaluation sets with the same
//! [`Preprocessor`](crate::Preprocessor) that training used. No libtorch, no
//! protobuf crate and no command-line parser in this path: it is a library to
//! embed, and `vit-infer` is one program built on it.
//!
//! ONNX Runtime is loaded at run time (`ort`'s `load-dynamic`); see
//! [`runtime_candidates`] for where the library is looked for.
//!
//! Classify image files:
//!
//! ```no_run
//! use vit::infer::{Classifier, ClassifierOptions, ClassifyOptions};
//! # fn main() -> Result<(), vit::infer::InferError> {
//! let mut clf = Classifier::open("runs/demo/model.onnx", &ClassifierOptions::default())?;
//! for result in clf.classify_files(&["shoe.png"], &ClassifyOptions { top_k: 3, ..Default::default() }) {
//!     let pred = result?;
//!     println!("{} {:.3}", pred.top[0].label, pred.top[0].probability);
//! }
//! # Ok(())
//! # }
//! ```
//!
//! Evaluate a labelled folder (`DIR/<class>/*`, `DIR/val/<class>/*` or
//! Fashion-MNIST IDX files), as `vit-train` validated:
//!
//! ```no_run
//! use vit::infer::{load_eval_data, Classifier, ClassifierOptions};
//! # fn main() -> Result<(), vit::infer::InferError> {
//! let mut clf = Classifier::open("runs/coco5/model.onnx", &ClassifierOptions::default())?;
//! let set = load_eval_data("../shared/data/coco5", clf.preprocessor())?;
//! clf.check_classes(&set.classes)?;
//! let eval = clf.evaluate(&set.data, 64)?;
//! println!("accuracy {:.4} on {} ({} images)", eval.accuracy, set.description, eval.total);
//! # Ok(())
//! # }
//! ```

#[cfg(feature = "export")]
mod calibrate;
mod classifier;
mod cuda;
mod error;
mod eval;
mod options;
mod prediction;
mod runtime;
mod session;
mod signature;

#[cfg(feature = "export")]
pub use calibrate::{calibrate, CalibrationImages, RangeMethod};
pub use classifier::Classifier;
pub use cuda::{
    check_cuda, resolve, CudaCheck, CudaError, CudaLibrary, CudaSearch, DirSource, FoundLibrary, LibraryStatus,
    SearchDir, CUDA_DRIVER, CUDA_LIBRARIES, CUDA_LIB_DIR_ENV, CUDA_PROVIDER_LIBRARY,
};
pub use error::InferError;
pub use eval::{load_eval_data, scan_eval_data, EvalData, Evaluation};
pub use options::{max_intra_threads, ClassifierOptions, ClassifyOptions, OptLevel, Provider};
pub use prediction::{softmax, Prediction, Scored};
pub use runtime::{runtime_candidates, runtime_path, RuntimeCandidate};
pub use session::ExecutionProvider;

pub use crate::metrics::{argmax, Confusion};
