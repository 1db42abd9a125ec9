//! A served model: its sessions (one batcher thread each) behind one queue,
//! and the slot that holds it so that `load` can replace it. A reload opens
//! the new sessions first; only when all are ready does the slot switch, so
//! the old model serves until then, and a file that fails to open leaves it
//! serving. The old queue is closed when its last request is done, and its
//! batchers drain it and end.

use std::path::PathBuf;
use std::sync::{Arc, RwLock};

use super::metrics::Metrics;
use super::queue::{run_batcher, BatchPolicy, Queue};
use super::repo::ModelEntry;
use super::{ServeError, ServeOptions};
use crate::format::InputKind;
use crate::infer::{Classifier, ExecutionProvider, Provider};
use crate::preprocess::Preprocessor;

/// What handlers need to know about a loaded model; the sessions live in its batchers.
#[derive(Debug)]
pub struct Loaded {
    /// Class names in logit order.
    pub labels: Vec<String>,
    /// The graph's input name.
    pub input_name: String,
    /// Float NCHW or raw u8 NHWC.
    pub input: InputKind,
    /// The model's preprocessing (decode limits included).
    pub prep: Preprocessor,
    /// Where requests go.
    pub queue: Arc<Queue>,
}

impl Drop for Loaded {
    /// The last request of a replaced model is done: its batchers drain and end.
    fn drop(&mut self) {
        self.queue.close();
    }
}

/// One name in the repository and the model currently serving under it.
#[derive(Debug)]
pub struct ModelSlot {
    /// The name in `/v2/models/{name}`.
    pub name: String,
    /// The version reported.
    pub version: String,
    /// The file that `load` reopens.
    pub path: PathBuf,
    current: RwLock<Arc<Loaded>>,
    /// One reload at a time per model.
    reloading: tokio::sync::Mutex<()>,
}

impl ModelSlot {
    /// Opens the entry's sessions and starts their batchers (blocking).
    pub fn open(entry: &ModelEntry, opts: &ServeOptions, metrics: &Arc<Metrics>) -> Result<Self, ServeError> {
        let loaded = open_loaded(&entry.name, &entry.path, opts, metrics)?;
        Ok(Self {
            name: entry.name.clone(),
            version: entry.version.clone(),
            path: entry.path.clone(),
            current: RwLock::new(Arc::new(loaded)),
            reloading: tokio::sync::Mutex::new(()),
        })
    }

    /// The model serving now.
    pub fn current(&self) -> Arc<Loaded> {
        Arc::clone(&self.current.read().unwrap_or_else(|e| e.into_inner()))
    }

    /// Reopens the file; the old model serves until the new one is ready,
    /// and stays when the file cannot be opened.
    pub async fn reload(&self, opts: Arc<ServeOptions>, metrics: Arc<Metrics>) -> Result<(), ServeError> {
        let _one = self.reloading.lock().await;
        let (name, path) = (self.name.clone(), self.path.clone());
        let loaded = tokio::task::spawn_blocking(move || open_loaded(&name, &path, &opts, &metrics))
            .await
            .map_err(|e| ServeError::Invalid(format!("reloading `{}` panicked: {e}", self.name)))??;
        let old = std::mem::replace(&mut *self.current.write().unwrap_or_else(|e| e.into_inner()), Arc::new(loaded));
        log::info!("model `{}` reloaded from {}", self.name, self.path.display());
        drop(old);
        Ok(())
    }

    /// Closes the queue: batchers finish what is queued and end.
    pub fn close(&self) {
        self.current().queue.close();
    }
}

/// Opens `opts.instances` sessions of the file and starts a batcher on each.
fn open_loaded(
    name: &str,
    path: &std::path::Path,
    opts: &ServeOptions,
    metrics: &Arc<Metrics>,
) -> Result<Loaded, ServeError> {
    let model_error =
        |source| ServeError::Model { name: name.to_string(), path: path.to_path_buf(), source: Box::new(source) };
    // Auto (neither --instances nor --threads): on the CPU provider,
    // auto_instances' sessions sharing the cores.
    let auto = opts.instances.is_none() && opts.classifier.intra_threads.is_none();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let (auto_count, share) = super::auto_instances(cores);
    let mut classifier = opts.classifier.clone();
    if auto && auto_count > 1 && classifier.provider == Provider::Cpu {
        classifier.intra_threads = Some(share);
    }
    let first = Classifier::open(path, &classifier).map_err(model_error)?;
    let on_cpu = first.provider() == ExecutionProvider::Cpu;
    if on_cpu {
        // The other sessions go where the first went: CUDA is not probed again.
        classifier.provider = Provider::Cpu;
    }
    let mut sessions = vec![first];
    let count = match opts.instances {
        Some(n) => n.max(1),
        None if auto && on_cpu => {
            if auto_count > 1 && classifier.intra_threads.is_none() {
                // `auto` fell back to the CPU: the first, opened with one
                // thread per core, is opened again with its share.
                classifier.intra_threads = Some(share);
                sessions.clear();
            }
            auto_count
        }
        None => 1,
    };
    while sessions.len() < count {
        sessions.push(Classifier::open(path, &classifier).map_err(model_error)?);
    }
    let first = &sessions[0];
    let queue = Arc::new(Queue::new(name, opts.queue, Arc::clone(metrics)));
    let loaded = Loaded {
        labels: first.labels().to_vec(),
        input_name: first.input_name().to_string(),
        input: first.format().input,
        prep: first.preprocessor().clone(),
        queue: Arc::clone(&queue),
    };
    log::info!(
        "model `{name}`: {} ({} classes, {} input, {} session(s) on {}, {} each)",
        path.display(),
        loaded.labels.len(),
        loaded.input,
        sessions.len(),
        first.provider(),
        classifier.intra_threads.map_or("ONNX Runtime's default threads".to_string(), |n| format!("{n} thread(s)"))
    );
    let policy = BatchPolicy { max_batch: opts.max_batch, max_delay: opts.max_delay };
    for (i, clf) in sessions.into_iter().enumerate() {
        let queue = Arc::clone(&queue);
        std::thread::Builder::new()
            .name(format!("batcher-{name}-{i}"))
            .spawn(move || run_batcher(clf, queue, policy))
            .map_err(|e| ServeError::Invalid(format!("cannot start a batcher thread for `{name}`: {e}")))?;
    }
    Ok(loaded)
}
