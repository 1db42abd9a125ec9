#![warn(missing_docs)]
//! Serving exported models over HTTP (feature `serve`): the Open Inference
//! Protocol (KServe v2) REST endpoints, a human `classify` endpoint taking
//! image bytes, Prometheus metrics, and dynamic batching behind a bounded
//! queue per model. [`Repository::open`] opens the models (blocking),
//! [`Repository::router`] gives an [`axum::Router`] another application can
//! mount, and [`serve`] runs it with header timeouts and graceful shutdown;
//! `vit-serve` is one program built on them.
//!
//! ```no_run
//! use vit::serve::{Repository, ServeOptions};
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let repo = Repository::open("runs/demo/model.onnx", ServeOptions { max_batch: 8, ..Default::default() })?;
//! let app = axum::Router::new().nest("/vit", repo.router()); // POST /vit/v1/models/model/classify
//! let rt = tokio::runtime::Runtime::new()?;
//! rt.block_on(async {
//!     let listener = tokio::net::TcpListener::bind("127.0.0.1:8000").await?;
//!     let opts = repo.options();
//!     vit::serve::serve(listener, app, opts.header_timeout, opts.drain_timeout, async {
//!         let _ = tokio::signal::ctrl_c().await;
//!     })
//!     .await;
//!     repo.close();
//!     Ok::<_, std::io::Error>(())
//! })?;
//! # Ok(())
//! # }
//! ```
//!
//! Routes: `GET /v2`, `/v2/health/live`, `/v2/health/ready`,
//! `/v2/models/{name}`, `/v2/models/{name}/ready`, `POST
//! /v2/models/{name}/infer`, `POST /v2/repository/models/{name}/load`, `POST
//! /v1/models/{name}/classify?top_k=5`, `GET /metrics`.

mod body;
mod error;
mod http;
mod listen;
mod metrics;
mod model;
mod oip;
mod queue;
mod repo;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

pub use body::{MAX_DECODE_BYTES, MAX_IMAGE_SIDE};
pub use error::{ApiError, ServeError};
pub use listen::serve;
pub use metrics::Metrics;
pub use repo::{discover, ModelEntry};

use crate::infer::ClassifierOptions;

/// How models are served.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// How each session is opened (execution provider, threads).
    pub classifier: ClassifierOptions,
    /// Most images per ONNX Runtime call.
    pub max_batch: usize,
    /// Longest a batcher waits for a batch to fill (zero: never waits).
    pub max_delay: Duration,
    /// Sessions per model, each with its own batcher thread; `None`: [`auto_instances`]
    /// on the CPU provider, one session on CUDA.
    pub instances: Option<usize>,
    /// Largest request body, in bytes (413 above).
    pub max_body: usize,
    /// Requests queued per model before 503s.
    pub queue: usize,
    /// Per-request deadline (504 past it); `None`: none.
    pub timeout: Option<Duration>,
    /// Longest gap while reading a request body (408 past it).
    pub body_timeout: Duration,
    /// Longest time to receive a request's headers (the connection is closed past it).
    pub header_timeout: Duration,
    /// Longest wait for open requests at shutdown.
    pub drain_timeout: Duration,
}

impl Default for ServeOptions {
    /// Batches of up to 8 without waiting, sessions chosen by provider ([`auto_instances`]), 16 MiB bodies, 64 queued requests,
    /// no deadline, 10 s read timeouts, 30 s drain.
    fn default() -> Self {
        Self {
            classifier: ClassifierOptions::default(),
            max_batch: 8,
            max_delay: Duration::ZERO,
            instances: None,
            max_body: 16 << 20,
            queue: 64,
            timeout: None,
            body_timeout: Duration::from_secs(10),
            header_timeout: Duration::from_secs(10),
            drain_timeout: Duration::from_secs(30),
        }
    }
}

impl ServeOptions {
    /// Checks the values that must be positive.
    pub fn validate(&self) -> Result<(), ServeError> {
        let instances = self.instances.unwrap_or(1);
        for (what, v) in [("max batch", self.max_batch), ("instances", instances), ("queue", self.queue)] {
            if v == 0 {
                return Err(ServeError::Invalid(format!("{what} must be at least 1")));
            }
        }
        if self.max_body == 0 {
            return Err(ServeError::Invalid("max body must be at least 1 byte".into()));
        }
        if self.timeout == Some(Duration::ZERO) {
            return Err(ServeError::Invalid("the request timeout must be positive (leave it unset for none)".into()));
        }
        Ok(())
    }
}

/// Sessions per model and threads per session when neither is given
/// ([`ServeOptions::instances`] and the classifier's `intra_threads` both `None`), for `cores`
/// cores and the CPU provider: two sessions sharing the cores (one each on two
/// cores). For a small network one ONNX Runtime call cannot keep every core
/// busy (each operator's work split across threads waits on the slowest), and
/// while one session runs, the other's batch is being gathered and answered:
/// measured on 2 cores with `models/coco5-vit.toml` (docs/serving.md), 2 x 1
/// thread served 1,070-1,140 images/s at concurrency 64 where 1 x 2 threads
/// served 950-960. One core: one session. On CUDA the default stays one session.
pub fn auto_instances(cores: usize) -> (usize, usize) {
    let sessions = cores.clamp(1, 2);
    (sessions, (cores / sessions).max(1))
}

/// The models being served, by name.
#[derive(Debug)]
pub struct Repository {
    state: http::AppState,
}

impl Repository {
    /// Opens every model at `path` (a `model.onnx` file, or a repository
    /// folder of `<name>/model.onnx` or `<name>/<version>/model.onnx`) and
    /// starts their batchers. Blocking: call it before entering an async
    /// runtime or on its blocking pool.
    pub fn open(path: impl AsRef<Path>, opts: ServeOptions) -> Result<Self, ServeError> {
        opts.validate()?;
        let metrics = Arc::new(Metrics::default());
        let mut models = BTreeMap::new();
        for entry in discover(path.as_ref())? {
            let slot = model::ModelSlot::open(&entry, &opts, &metrics)?;
            models.insert(entry.name.clone(), Arc::new(slot));
        }
        Ok(Self { state: http::AppState { models: Arc::new(models), opts: Arc::new(opts), metrics } })
    }

    /// The names served, sorted.
    pub fn names(&self) -> Vec<&str> {
        self.state.models.keys().map(String::as_str).collect()
    }

    /// The options the repository was opened with.
    pub fn options(&self) -> &ServeOptions {
        &self.state.opts
    }

    /// The counters `/metrics` reports.
    pub fn metrics(&self) -> &Metrics {
        &self.state.metrics
    }

    /// Every route, ready to serve or to nest in another router.
    pub fn router(&self) -> axum::Router {
        http::router(self.state.clone())
    }

    /// Closes every queue: batchers finish what is queued and end.
    pub fn close(&self) {
        for slot in self.state.models.values() {
            slot.close();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::auto_instances;

    #[test]
    fn auto_instances_share_the_cores_between_at_most_two_sessions() {
        assert_eq!(auto_instances(0), (1, 1));
        assert_eq!(auto_instances(1), (1, 1));
        assert_eq!(auto_instances(2), (2, 1));
        assert_eq!(auto_instances(3), (2, 1));
        assert_eq!(auto_instances(16), (2, 8));
    }
}
