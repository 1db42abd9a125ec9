//! Creating the ONNX Runtime session of a model, and the choice between CUDA
//! and the CPU: [`Provider::Auto`] tries CUDA and falls back to the CPU,
//! keeping the reason ([`CudaError`]) so that a caller can say why the GPU
//! sits idle; [`Provider::Cuda`] turns the same reason into an error. The
//! CUDA libraries are found and loaded by [`cuda`](super::cuda) first.

use std::fmt;
use std::path::Path;

use ort::ep::CUDA;
use ort::session::Session;

use super::cuda::{self, CudaError};
use super::runtime::environment;
use super::{ClassifierOptions, InferError, Provider};

/// The execution provider a [`Classifier`](super::Classifier) really runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ExecutionProvider {
    /// ONNX Runtime's CPU provider.
    Cpu,
    /// ONNX Runtime's CUDA provider.
    Cuda,
}

impl ExecutionProvider {
    /// `"cpu"` or `"cuda"`, as displayed and serialised.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Cpu => "cpu",
            Self::Cuda => "cuda",
        }
    }
}

impl fmt::Display for ExecutionProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A session and the provider it runs on.
pub(super) struct Opened {
    pub session: Session,
    pub provider: ExecutionProvider,
    /// With [`Provider::Auto`] on the CPU: why CUDA was not used.
    pub cuda_fallback: Option<CudaError>,
}

/// Creates the session of the model at `path` with the provider `opts` asks for.
pub(super) fn open(path: &Path, opts: &ClassifierOptions) -> Result<Opened, InferError> {
    environment()?;
    let cuda = match opts.provider {
        Provider::Cpu => None,
        Provider::Auto | Provider::Cuda => Some(cuda_session(path, opts)?),
    };
    let cpu = |cuda_fallback| {
        Ok(Opened { session: build(path, opts, false)?, provider: ExecutionProvider::Cpu, cuda_fallback })
    };
    match (opts.provider, cuda) {
        (_, None) => cpu(None),
        (_, Some(Ok(session))) => Ok(Opened { session, provider: ExecutionProvider::Cuda, cuda_fallback: None }),
        (Provider::Cuda, Some(Err(CudaError::Session(e)))) => {
            // A model the CPU rejects too is a model error, not a CUDA one.
            build(path, opts, false)?;
            Err(InferError::CudaUnavailable(CudaError::Session(e)))
        }
        (Provider::Cuda, Some(Err(e))) => Err(InferError::CudaUnavailable(e)),
        (_, Some(Err(reason))) => cpu(Some(reason)),
    }
}

/// A CUDA session, or why CUDA cannot be used; the outer error is one that
/// the CPU would hit as well (a rejected option).
fn cuda_session(path: &Path, opts: &ClassifierOptions) -> Result<Result<Session, CudaError>, InferError> {
    if let Err(missing) = cuda::prepare(&opts.cuda_library_dirs)? {
        return Ok(Err(missing));
    }
    match build(path, opts, true) {
        Ok(session) => Ok(Ok(session)),
        Err(InferError::CudaUnavailable(e)) => Ok(Err(e)),
        Err(InferError::ModelLoad { source, .. }) => Ok(Err(CudaError::Session(source))),
        Err(other) => Err(other),
    }
}

/// One session with the CPU provider, plus CUDA when `cuda` is set. A failure
/// to register CUDA is [`InferError::CudaUnavailable`].
fn build(path: &Path, opts: &ClassifierOptions, cuda: bool) -> Result<Session, InferError> {
    let option = |option: &'static str| move |e: ort::Error<_>| InferError::SessionOption { option, source: e.into() };
    let mut builder = Session::builder(environment()?).map_err(InferError::ort("creating a session builder"))?;
    builder = builder.with_optimization_level(opts.optimization.into()).map_err(option("optimization"))?;
    if let Some(n) = opts.intra_threads {
        builder = builder.with_intra_threads(n).map_err(option("intra_threads"))?;
    }
    if cuda {
        builder = builder
            .with_execution_providers([CUDA::default().build().error_on_failure()])
            .map_err(|e| InferError::CudaUnavailable(CudaError::Register(e.into())))?;
    }
    builder.commit_from_file(path).map_err(|e| InferError::ModelLoad { path: path.to_path_buf(), source: e })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn providers_display_and_serialise_lowercase() {
        assert_eq!(ExecutionProvider::Cuda.to_string(), "cuda");
        assert_eq!(serde_json::to_string(&ExecutionProvider::Cpu).unwrap(), "\"cpu\"");
        assert_eq!(serde_json::from_str::<ExecutionProvider>("\"cuda\"").unwrap(), ExecutionProvider::Cuda);
    }
}
