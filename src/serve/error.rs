//! [`ServeError`], why a repository cannot be served (start-up and reload),
//! and [`ApiError`], what one HTTP request is answered with when it fails:
//! a status and `{"error": "..."}` naming the problem, as the Open Inference
//! Protocol asks.

use std::path::PathBuf;

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use crate::infer::InferError;

/// Why models cannot be found, opened or served.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServeError {
    /// The model path does not exist.
    #[error("{0} does not exist: pass a model.onnx file or a repository folder holding <name>/model.onnx")]
    NotFound(PathBuf),
    /// A repository folder without any `<name>/model.onnx` or `<name>/<version>/model.onnx`.
    #[error("{0} holds no model: a repository folder has <name>/model.onnx or <name>/<version>/model.onnx")]
    EmptyRepository(PathBuf),
    /// A folder could not be listed.
    #[error("cannot list {path}: {source}")]
    Io {
        /// The folder.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// ONNX Runtime cannot open a model.
    #[error("model `{name}` ({path}): {source}")]
    Model {
        /// The name it is served under.
        name: String,
        /// Its file.
        path: PathBuf,
        /// Why it cannot be opened (boxed: InferError is large, and this is the rare path).
        #[source]
        source: Box<InferError>,
    },
    /// An option is out of range.
    #[error("{0}")]
    Invalid(String),
    /// The listener failed.
    #[error("serving on {addr}: {source}")]
    Listen {
        /// The address.
        addr: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

/// A failed request: its status, message and, for 503, a `Retry-After`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// The HTTP status.
    pub status: StatusCode,
    /// What went wrong and how to fix it.
    pub message: String,
}

impl ApiError {
    /// An error with this status and message.
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self { status, message: message.into() }
    }

    /// 400: the request itself is wrong.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    /// 404: no model of that name.
    pub fn unknown_model(name: &str, known: &[&str]) -> Self {
        Self::new(StatusCode::NOT_FOUND, format!("unknown model `{name}`: this server has {}", known.join(", ")))
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = axum::Json(serde_json::json!({ "error": self.message }));
        let mut response = (self.status, body).into_response();
        if self.status == StatusCode::SERVICE_UNAVAILABLE {
            // Clients back off for a second instead of hammering a full queue.
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        response
    }
}
