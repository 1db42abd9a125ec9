//! The server's counters in Prometheus text format (`GET /metrics`):
//! requests by model, endpoint and status, request latency and queue-time
//! histograms (seconds), the batch-size histogram, queue depth per model and
//! requests in flight. Plain atomics and mutexes: a handful of series does
//! not need a metrics crate.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

/// A cumulative histogram with fixed upper bounds.
#[derive(Debug)]
struct Histogram {
    bounds: Vec<f64>,
    counts: Vec<AtomicU64>,
    /// Sum of observations in millionths, so that it fits an atomic.
    sum_micro: AtomicU64,
    count: AtomicU64,
}

impl Histogram {
    fn new(bounds: &[f64]) -> Self {
        Self {
            bounds: bounds.to_vec(),
            counts: bounds.iter().map(|_| AtomicU64::new(0)).collect(),
            sum_micro: AtomicU64::new(0),
            count: AtomicU64::new(0),
        }
    }

    fn observe(&self, v: f64) {
        if let Some(i) = self.bounds.iter().position(|&b| v <= b) {
            self.counts[i].fetch_add(1, Ordering::Relaxed);
        }
        self.sum_micro.fetch_add((v * 1e6).round() as u64, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        let mut cumulative = 0;
        for (b, c) in self.bounds.iter().zip(&self.counts) {
            cumulative += c.load(Ordering::Relaxed);
            let _ = writeln!(out, "{name}_bucket{{le=\"{b}\"}} {cumulative}");
        }
        let count = self.count.load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {count}");
        let _ = writeln!(out, "{name}_sum {}", self.sum_micro.load(Ordering::Relaxed) as f64 / 1e6);
        let _ = writeln!(out, "{name}_count {count}");
    }
}

/// Seconds, from 0.5 ms to 10 s.
const TIME_BOUNDS: [f64; 14] = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];
/// Images per ORT call.
const BATCH_BOUNDS: [f64; 9] = [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0];

/// Everything `/metrics` reports.
#[derive(Debug)]
pub struct Metrics {
    requests: Mutex<BTreeMap<(String, String, u16), u64>>,
    latency: Histogram,
    queue_time: Histogram,
    batch_size: Histogram,
    queue_depth: Mutex<BTreeMap<String, i64>>,
    in_flight: AtomicI64,
    dropped: AtomicU64,
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            requests: Mutex::default(),
            latency: Histogram::new(&TIME_BOUNDS),
            queue_time: Histogram::new(&TIME_BOUNDS),
            batch_size: Histogram::new(&BATCH_BOUNDS),
            queue_depth: Mutex::default(),
            in_flight: AtomicI64::new(0),
            dropped: AtomicU64::new(0),
        }
    }
}

impl Metrics {
    /// A request finished with `status` after `latency`.
    pub fn request(&self, model: &str, endpoint: &str, status: u16, latency: Duration) {
        let mut map = self.requests.lock().unwrap_or_else(|e| e.into_inner());
        *map.entry((model.to_string(), endpoint.to_string(), status)).or_default() += 1;
        drop(map);
        self.latency.observe(latency.as_secs_f64());
    }

    /// A request started (`+1`) or finished (`-1`).
    pub fn in_flight(&self, delta: i64) {
        self.in_flight.fetch_add(delta, Ordering::Relaxed);
    }

    /// A queued input waited `wait` before its batch ran.
    pub fn queued(&self, wait: Duration) {
        self.queue_time.observe(wait.as_secs_f64());
    }

    /// One ORT call ran on `images` inputs.
    pub fn batch(&self, images: usize) {
        self.batch_size.observe(images as f64);
    }

    /// Inputs dropped before running: their client left or their deadline passed.
    pub fn dropped(&self, n: usize) {
        self.dropped.fetch_add(n as u64, Ordering::Relaxed);
    }

    /// The queue of `model` holds `depth` requests.
    pub fn queue_depth(&self, model: &str, depth: usize) {
        let mut map = self.queue_depth.lock().unwrap_or_else(|e| e.into_inner());
        map.insert(model.to_string(), depth as i64);
    }

    /// The Prometheus text exposition of every series.
    pub fn render(&self) -> String {
        let mut out = String::new();
        out.push_str("# HELP vit_requests_total HTTP requests by model, endpoint and status.\n");
        out.push_str("# TYPE vit_requests_total counter\n");
        for ((model, endpoint, status), n) in self.requests.lock().unwrap_or_else(|e| e.into_inner()).iter() {
            let _ = writeln!(
                out,
                "vit_requests_total{{model=\"{model}\",endpoint=\"{endpoint}\",status=\"{status}\"}} {n}"
            );
        }
        self.latency.render(&mut out, "vit_request_duration_seconds", "Time from request to response.");
        self.queue_time.render(&mut out, "vit_queue_duration_seconds", "Time an input waited for its batch.");
        self.batch_size.render(&mut out, "vit_batch_size", "Inputs per ONNX Runtime call.");
        out.push_str("# HELP vit_queue_depth Requests waiting per model.\n# TYPE vit_queue_depth gauge\n");
        for (model, depth) in self.queue_depth.lock().unwrap_or_else(|e| e.into_inner()).iter() {
            let _ = writeln!(out, "vit_queue_depth{{model=\"{model}\"}} {depth}");
        }
        let _ = writeln!(
            out,
            "# HELP vit_in_flight Requests being handled.\n# TYPE vit_in_flight gauge\nvit_in_flight {}",
            self.in_flight.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            out,
            "# HELP vit_dropped_total Queued inputs dropped (client gone or deadline passed).\n# TYPE vit_dropped_total counter\nvit_dropped_total {}",
            self.dropped.load(Ordering::Relaxed)
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histograms_are_cumulative_and_requests_are_labelled() {
        let m = Metrics::default();
        for n in [1, 3, 8, 9] {
            m.batch(n);
        }
        m.request("coco", "infer", 200, Duration::from_millis(3));
        m.request("coco", "infer", 503, Duration::from_millis(1));
        let text = m.render();
        assert!(text.contains("vit_batch_size_bucket{le=\"1\"} 1\n"), "{text}");
        assert!(text.contains("vit_batch_size_bucket{le=\"4\"} 2\n"), "{text}");
        assert!(text.contains("vit_batch_size_bucket{le=\"8\"} 3\n"), "{text}");
        assert!(text.contains("vit_batch_size_bucket{le=\"+Inf\"} 4\n"), "{text}");
        assert!(text.contains("vit_batch_size_sum 21\n"), "{text}");
        assert!(text.contains("vit_requests_total{model=\"coco\",endpoint=\"infer\",status=\"503\"} 1"), "{text}");
        assert!(text.contains("vit_request_duration_seconds_count 2"), "{text}");
    }
}
