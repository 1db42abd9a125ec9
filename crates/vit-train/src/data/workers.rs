//! The pool of worker threads that builds batches ahead of the training step.
//! Batch `i` of an epoch is always built by worker `i % N` and handed over
//! through that worker's bounded queue, and the consumer takes batches in
//! order, so the sequence it sees does not depend on `N` or on timing; since
//! each batch draws from its own RNG ([`crate::data::batches::batch_rng`]), neither do
//! the batches. Memory stays bounded by the queues (`prefetch` batches in all),
//! whatever the size of the data set.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::Instant;

/// How batches are produced: worker threads and queue depth (`--data-workers`, `--prefetch`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pipeline {
    /// Threads building batches (at least 1).
    pub workers: usize,
    /// Batches prepared ahead of the consumer, over all workers (at least one per worker).
    pub prefetch: usize,
}

impl Default for Pipeline {
    fn default() -> Self {
        Self { workers: default_workers(), prefetch: DEFAULT_PREFETCH }
    }
}

/// Batches queued ahead by default: enough to hide a slow batch, few enough to bound memory.
pub const DEFAULT_PREFETCH: usize = 8;

/// Half the machine's cores (the other half runs the training step), 1 to 8.
pub fn default_workers() -> usize {
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    (cores / 2).clamp(1, 8)
}

/// The state of the pipeline when the consumer received an item.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Flow {
    /// Items waiting in the queues after this one was taken.
    pub queued: usize,
    /// Capacity of the queues.
    pub capacity: usize,
    /// Items the workers build per second of their own busy time, all workers together.
    pub items_per_sec: f64,
}

/// Builds items `0..count` with `make` on `pipe.workers` threads and gives
/// them to `consume` in order (with the pipeline's [`Flow`]); stops early when
/// `consume` returns false.
pub fn run_ordered<T: Send>(
    count: usize,
    pipe: Pipeline,
    make: impl Fn(usize) -> T + Sync,
    mut consume: impl FnMut(usize, T, Flow) -> bool,
) {
    let workers = pipe.workers.clamp(1, count.max(1));
    let depth = pipe.prefetch.div_ceil(workers).max(1);
    let (busy_nanos, built) = (AtomicU64::new(0), AtomicUsize::new(0));
    std::thread::scope(|scope| {
        let mut receivers = Vec::with_capacity(workers);
        for w in 0..workers {
            let (tx, rx) = mpsc::sync_channel::<T>(depth);
            receivers.push(rx);
            let (make, busy_nanos, built) = (&make, &busy_nanos, &built);
            scope.spawn(move || {
                for i in (w..count).step_by(workers) {
                    let started = Instant::now();
                    let item = make(i);
                    busy_nanos.fetch_add(started.elapsed().as_nanos() as u64, Ordering::Relaxed);
                    built.fetch_add(1, Ordering::Relaxed);
                    if tx.send(item).is_err() {
                        break;
                    }
                }
            });
        }
        for i in 0..count {
            // A worker only stops early when the consumer has, so a missing item cannot happen.
            let Ok(item) = receivers[i % workers].recv() else { break };
            let busy = busy_nanos.load(Ordering::Relaxed) as f64 * 1e-9;
            let built = built.load(Ordering::Relaxed);
            // Built but not yet taken; a worker holding a finished item for a full queue counts as full.
            let capacity = depth * workers;
            let flow = Flow {
                queued: built.saturating_sub(i + 1).min(capacity),
                capacity,
                items_per_sec: built as f64 * workers as f64 / busy.max(1e-9),
            };
            if !consume(i, item, flow) {
                break;
            }
        }
        // Dropping the receivers ends workers blocked on a full queue.
        drop(receivers);
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn collect(workers: usize, prefetch: usize) -> Vec<(usize, u64)> {
        let mut out = Vec::new();
        run_ordered(
            23,
            Pipeline { workers, prefetch },
            |i| (i as u64) * 7919 % 101,
            |i, v, flow| {
                assert!(flow.queued <= flow.capacity && flow.items_per_sec > 0.0);
                out.push((i, v));
                true
            },
        );
        out
    }

    #[test]
    fn items_arrive_in_order_whatever_the_worker_count() {
        let one = collect(1, 1);
        assert_eq!(one.len(), 23);
        assert!(one.iter().enumerate().all(|(k, (i, _))| k == *i));
        assert_eq!(collect(3, 2), one);
        assert_eq!(collect(8, 16), one);
    }

    #[test]
    fn a_consumer_that_stops_ends_the_workers() {
        let mut seen = 0;
        run_ordered(
            1000,
            Pipeline { workers: 3, prefetch: 3 },
            |i| i,
            |_, _, _| {
                seen += 1;
                seen < 5
            },
        );
        assert_eq!(seen, 5);
    }
}
