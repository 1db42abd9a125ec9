//! Dynamic batching: a bounded queue per model and one batcher thread per
//! ONNX Runtime session. A batcher takes up to `max_batch` images, waits at
//! most `max_delay` for more (never, at 0), runs one ORT call and answers
//! each request on its oneshot channel. Handlers never touch a session
//! (`Session::run` takes `&mut self`): they push decoded pixels and await.
//! A full queue refuses at once (the caller answers 503), and a request takes
//! its place ([`Queue::reserve`]) before its image is decoded or its JSON
//! parsed, so that under overload refusals cost no decoding (at twice the
//! sustainable rate, decoding what was then refused left a third of the
//! throughput; docs/serving.md); requests whose
//! client has gone or whose deadline has passed are dropped before a batch
//! runs, and counted.

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use super::metrics::Metrics;
use crate::format::InputKind;
use crate::infer::Classifier;

/// A request's images, decoded.
#[derive(Debug)]
pub enum Input {
    /// CHW u8 images (decoded files, or raw-pixel tensors), normalised here for float models.
    U8Chw(Vec<u8>),
    /// Normalised f32 NCHW images (float models only).
    F32(Vec<f32>),
}

/// What a batcher answers: the request's logits, `[images, classes]` row-major.
pub type Reply = Result<Vec<f32>, String>;

/// One request in the queue.
#[derive(Debug)]
pub struct Job {
    /// Its images.
    pub input: Input,
    /// How many.
    pub images: usize,
    /// Dropped unrun after this.
    pub deadline: Option<Instant>,
    /// When it was queued.
    pub queued: Instant,
    /// Where the logits go.
    pub reply: oneshot::Sender<Reply>,
}

/// Why a job was not queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// The queue holds its capacity.
    Full,
    /// The model is being replaced or the server is stopping.
    Closed,
}

#[derive(Debug, Default)]
struct State {
    jobs: VecDeque<Job>,
    /// Places held by requests still being decoded ([`Ticket`]s).
    reserved: usize,
    closed: bool,
}

/// A place in a model's queue, held from before a request is decoded until
/// it is queued ([`Queue::push`]) or dropped (the place is given back).
#[derive(Debug)]
pub struct Ticket {
    queue: Arc<Queue>,
    /// False once the place became a queued job's.
    held: bool,
}

impl Drop for Ticket {
    fn drop(&mut self) {
        if self.held {
            let mut state = self.queue.lock();
            state.reserved = state.reserved.saturating_sub(1);
        }
    }
}

/// The bounded queue of one model, shared by its batchers.
#[derive(Debug)]
pub struct Queue {
    state: Mutex<State>,
    ready: Condvar,
    capacity: usize,
    model: String,
    metrics: Arc<Metrics>,
}

impl Queue {
    /// An empty queue of at most `capacity` requests.
    pub fn new(model: &str, capacity: usize, metrics: Arc<Metrics>) -> Self {
        Self { state: Mutex::default(), ready: Condvar::new(), capacity, model: model.to_string(), metrics }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Holds a place for a request about to be decoded, or refuses it at once:
    /// queued jobs and held places together stay within the capacity.
    pub fn reserve(self: &Arc<Self>) -> Result<Ticket, Refused> {
        let mut state = self.lock();
        if state.closed {
            return Err(Refused::Closed);
        }
        if state.jobs.len() + state.reserved >= self.capacity {
            return Err(Refused::Full);
        }
        state.reserved += 1;
        Ok(Ticket { queue: Arc::clone(self), held: true })
    }

    /// Queues a job in the place its ticket held (refused only once closed).
    pub fn push(&self, mut ticket: Ticket, job: Job) -> Result<(), Refused> {
        let mut state = self.lock();
        if state.closed {
            drop(state); // the ticket gives its place back as it drops, after the lock
            return Err(Refused::Closed);
        }
        // The ticket's place becomes the job's.
        state.reserved = state.reserved.saturating_sub(1);
        ticket.held = false;
        state.jobs.push_back(job);
        self.metrics.queue_depth(&self.model, state.jobs.len());
        drop(state);
        self.ready.notify_one();
        Ok(())
    }

    /// Stops taking jobs; batchers finish what is queued, then end.
    pub fn close(&self) {
        self.lock().closed = true;
        self.ready.notify_all();
    }

    /// The next batch: at least one job, up to `max_batch` images (a request
    /// larger than that runs alone), waiting up to `max_delay` for more;
    /// `None` once closed and empty.
    fn next_batch(&self, max_batch: usize, max_delay: Duration) -> Option<Vec<Job>> {
        let mut state = self.lock();
        loop {
            self.drop_dead(&mut state);
            if !state.jobs.is_empty() {
                break;
            }
            if state.closed {
                return None;
            }
            state = self.ready.wait(state).unwrap_or_else(|e| e.into_inner());
        }
        let mut batch = Vec::new();
        let mut images = 0;
        let until = Instant::now() + max_delay;
        loop {
            while let Some(next) = state.jobs.front() {
                if !batch.is_empty() && images + next.images > max_batch {
                    break;
                }
                let job = state.jobs.pop_front().expect("front exists");
                images += job.images;
                batch.push(job);
            }
            let now = Instant::now();
            if images >= max_batch || now >= until || state.closed || !state.jobs.is_empty() {
                break;
            }
            state = self.ready.wait_timeout(state, until - now).unwrap_or_else(|e| e.into_inner()).0;
            self.drop_dead(&mut state);
        }
        self.metrics.queue_depth(&self.model, state.jobs.len());
        Some(batch)
    }

    /// Removes jobs whose client has gone or whose deadline has passed.
    fn drop_dead(&self, state: &mut State) {
        let now = Instant::now();
        let before = state.jobs.len();
        state.jobs.retain(|j| !j.reply.is_closed() && j.deadline.map_or(true, |d| d > now));
        let dropped = before - state.jobs.len();
        if dropped > 0 {
            // Their handlers answer 504 (deadline) or have nobody to answer.
            self.metrics.dropped(dropped);
            self.metrics.queue_depth(&self.model, state.jobs.len());
        }
    }
}

/// How a batcher batches.
#[derive(Debug, Clone, Copy)]
pub struct BatchPolicy {
    /// Most images per ORT call.
    pub max_batch: usize,
    /// Longest wait for a batch to fill.
    pub max_delay: Duration,
}

/// Runs batches from `queue` on `clf` until the queue is closed and drained.
pub fn run_batcher(mut clf: Classifier, queue: Arc<Queue>, policy: BatchPolicy) {
    while let Some(mut batch) = queue.next_batch(policy.max_batch.max(1), policy.max_delay) {
        // Clients may have left (deadline, disconnect) while the batch filled.
        let before = batch.len();
        batch.retain(|j| !j.reply.is_closed());
        queue.metrics.dropped(before - batch.len());
        if batch.is_empty() {
            continue;
        }
        let now = Instant::now();
        let images: usize = batch.iter().map(|j| j.images).sum();
        for job in &batch {
            queue.metrics.queued(now - job.queued);
        }
        queue.metrics.batch(images);
        let k = clf.labels().len();
        match run_batch(&mut clf, &batch, images) {
            Ok(logits) => {
                let mut rows = logits.chunks(k.max(1));
                for job in batch {
                    let mine: Vec<f32> = rows.by_ref().take(job.images).flatten().copied().collect();
                    let _ = job.reply.send(Ok(mine));
                }
            }
            Err(e) => {
                log::error!("model `{}`: a batch of {images} failed: {e}", queue.model);
                for job in batch {
                    let _ = job.reply.send(Err(e.clone()));
                }
            }
        }
    }
    log::debug!("model `{}`: batcher stopped", queue.model);
}

/// One ORT call on every job's images.
fn run_batch(clf: &mut Classifier, batch: &[Job], images: usize) -> Result<Vec<f32>, String> {
    if clf.format().input == InputKind::Float32Nchw {
        let prep = clf.preprocessor().clone();
        let mut pixels = Vec::with_capacity(images * prep.image_len());
        let mut scratch = Vec::new();
        for job in batch {
            match &job.input {
                Input::F32(v) => pixels.extend_from_slice(v),
                Input::U8Chw(v) => {
                    prep.normalize_into(v, &mut scratch);
                    pixels.extend_from_slice(&scratch);
                }
            }
        }
        return clf.logits(&pixels, images).map_err(|e| e.to_string());
    }
    let mut pixels = Vec::new();
    for job in batch {
        match &job.input {
            Input::U8Chw(v) => pixels.extend_from_slice(v),
            // Handlers refuse float tensors for raw-pixel models before queueing.
            Input::F32(_) => return Err("a float tensor reached a raw-pixel (uint8) model".into()),
        }
    }
    clf.logits_u8(&pixels, images).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(images: usize) -> (Job, oneshot::Receiver<Reply>) {
        let (tx, rx) = oneshot::channel();
        (Job { input: Input::U8Chw(vec![]), images, deadline: None, queued: Instant::now(), reply: tx }, rx)
    }

    /// Reserves a place and queues the job in it.
    fn put(q: &Arc<Queue>, j: Job) -> Result<(), Refused> {
        q.push(q.reserve()?, j)
    }

    #[test]
    fn batches_fill_to_the_limit_and_a_full_queue_refuses() {
        let q = Arc::new(Queue::new("m", 3, Arc::new(Metrics::default())));
        let mut rxs = Vec::new();
        for n in [2, 1, 4] {
            let (j, rx) = job(n);
            put(&q, j).unwrap();
            rxs.push(rx);
        }
        let (j, _rx) = job(1);
        assert_eq!(put(&q, j).unwrap_err(), Refused::Full);
        let first = q.next_batch(3, Duration::ZERO).unwrap();
        assert_eq!(first.iter().map(|j| j.images).collect::<Vec<_>>(), [2, 1]);
        // Larger than max_batch: runs alone.
        let second = q.next_batch(3, Duration::ZERO).unwrap();
        assert_eq!(second.iter().map(|j| j.images).collect::<Vec<_>>(), [4]);
        q.close();
        assert!(q.next_batch(3, Duration::ZERO).is_none());
        let (j, _rx) = job(1);
        assert_eq!(put(&q, j).unwrap_err(), Refused::Closed);
    }

    #[test]
    fn places_held_while_decoding_count_against_the_capacity_and_come_back_when_dropped() {
        let q = Arc::new(Queue::new("m", 2, Arc::new(Metrics::default())));
        let a = q.reserve().unwrap();
        let b = q.reserve().unwrap();
        // Two requests decoding fill a queue of 2: the third is refused before decoding.
        assert_eq!(q.reserve().unwrap_err(), Refused::Full);
        drop(b); // e.g. its image did not decode
        let c = q.reserve().unwrap();
        let (j, _rx) = job(1);
        q.push(a, j).unwrap();
        assert_eq!(q.reserve().unwrap_err(), Refused::Full, "one queued and one held");
        drop(c);
        let d = q.reserve().unwrap();
        q.close();
        let (j, _rx) = job(1);
        assert_eq!(q.push(d, j).unwrap_err(), Refused::Closed);
        assert_eq!(q.lock().reserved, 0, "a refused push gives its place back");
        assert_eq!(q.lock().jobs.len(), 1);
    }

    #[test]
    fn jobs_whose_client_left_are_dropped_and_the_delay_waits_for_more() {
        let q = Arc::new(Queue::new("m", 8, Arc::new(Metrics::default())));
        let (gone, rx) = job(1);
        drop(rx);
        put(&q, gone).unwrap();
        let (j, _rx1) = job(1);
        put(&q, j).unwrap();
        let q2 = Arc::clone(&q);
        let late = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            let (j, rx) = job(1);
            put(&q2, j).unwrap();
            rx
        });
        let batch = q.next_batch(2, Duration::from_secs(5)).unwrap();
        assert_eq!(batch.len(), 2, "the live job and the late one, not the dropped one");
        let _rx2 = late.join().unwrap();
        assert!(q.metrics.render().contains("vit_dropped_total 1"));
    }
}
