//! TensorBoard event files (`events.out.tfevents.*` in the run folder), so
//! `tensorboard --logdir runs` shows every run live, as PyTorch's
//! `SummaryWriter` does. Only scalars are written.
//!
//! The format: a sequence of TFRecords (`u64` length, masked CRC32C of the
//! length, the bytes, masked CRC32C of the bytes, all little-endian), each an
//! `Event` protocol buffer (TensorFlow's `event.proto` / `summary.proto`; the
//! few fields used here are declared below with prost). The first event names
//! the file version, as TensorBoard expects.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use prost::Message;

/// `tensorflow.Event`, the fields a scalar needs.
#[derive(Clone, PartialEq, Message)]
struct Event {
    #[prost(double, tag = "1")]
    wall_time: f64,
    #[prost(int64, tag = "2")]
    step: i64,
    #[prost(string, optional, tag = "3")]
    file_version: Option<String>,
    #[prost(message, optional, tag = "5")]
    summary: Option<Summary>,
}

/// `tensorflow.Summary`.
#[derive(Clone, PartialEq, Message)]
struct Summary {
    #[prost(message, repeated, tag = "1")]
    value: Vec<SummaryValue>,
}

/// `tensorflow.Summary.Value` with a `simple_value`.
#[derive(Clone, PartialEq, Message)]
struct SummaryValue {
    #[prost(string, tag = "1")]
    tag: String,
    #[prost(float, optional, tag = "2")]
    simple_value: Option<f32>,
}

/// TFRecord's CRC: CRC32C, rotated and offset so that a CRC of data that
/// contains CRCs stays well distributed.
fn masked_crc(bytes: &[u8]) -> u32 {
    let crc = crc32c::crc32c(bytes);
    crc.rotate_right(15).wrapping_add(0xa282_ead8)
}

/// One TFRecord: the framing TensorBoard's reader checks.
fn frame(data: &[u8]) -> Vec<u8> {
    let len = (data.len() as u64).to_le_bytes();
    let mut out = Vec::with_capacity(data.len() + 16);
    out.extend_from_slice(&len);
    out.extend_from_slice(&masked_crc(&len).to_le_bytes());
    out.extend_from_slice(data);
    out.extend_from_slice(&masked_crc(data).to_le_bytes());
    out
}

fn now() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0)
}

fn hostname() -> String {
    #[cfg(unix)]
    {
        let mut buf = [0u8; 256];
        // SAFETY: the buffer is valid for its length; gethostname NUL-terminates within it or fails.
        if unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) } == 0 {
            let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
            if let Ok(name) = std::str::from_utf8(&buf[..end]) {
                if !name.is_empty() {
                    return name.to_string();
                }
            }
        }
    }
    "localhost".to_string()
}

/// Appends scalar events to one `events.out.tfevents.*` file, flushed after
/// every write so TensorBoard sees a run while it trains.
#[derive(Debug)]
pub struct EventWriter {
    path: PathBuf,
    file: BufWriter<File>,
}

impl EventWriter {
    /// Creates `events.out.tfevents.<seconds>.<host>.<pid>` in `dir` and writes
    /// the file-version event. A resumed run adds a new file; TensorBoard reads
    /// every file of the folder as one run.
    pub fn create(dir: impl AsRef<Path>) -> Result<Self> {
        let secs = now();
        let name = format!("events.out.tfevents.{}.{}.{}", secs as u64, hostname(), std::process::id());
        let path = dir.as_ref().join(name);
        let file = File::create(&path).with_context(|| format!("cannot create {}", path.display()))?;
        let mut w = Self { path, file: BufWriter::new(file) };
        w.write(&Event { wall_time: secs, step: 0, file_version: Some("brain.Event:2".into()), summary: None })?;
        Ok(w)
    }

    /// The file written.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// One event holding `scalars` (tag, value) at global step `step`.
    pub fn scalars(&mut self, step: u64, scalars: &[(&str, f64)]) -> Result<()> {
        let value = scalars
            .iter()
            .map(|(tag, v)| SummaryValue { tag: tag.to_string(), simple_value: Some(*v as f32) })
            .collect();
        self.write(&Event { wall_time: now(), step: step as i64, file_version: None, summary: Some(Summary { value }) })
    }

    fn write(&mut self, event: &Event) -> Result<()> {
        self.file
            .write_all(&frame(&event.encode_to_vec()))
            .and_then(|()| self.file.flush())
            .with_context(|| format!("cannot write {}", self.path.display()))
    }
}

/// The events of a training run: a write that fails turns them off with one
/// warning. They mirror `metrics.jsonl`, which stays the record, so a failing
/// event file must not stop a long run.
#[derive(Debug, Default)]
pub struct RunEvents(Option<EventWriter>);

impl RunEvents {
    /// Events in `dir`, or none (another rank, or a run without a folder).
    pub fn open(dir: Option<&Path>) -> Self {
        let writer =
            dir.and_then(|d| EventWriter::create(d).map_err(|e| log::warn!("TensorBoard events are off: {e:#}")).ok());
        Self(writer)
    }

    /// [`EventWriter::scalars`], when the events are on.
    pub fn scalars(&mut self, step: u64, scalars: &[(&str, f64)]) {
        if let Some(w) = &mut self.0 {
            if let Err(e) = w.scalars(step, scalars) {
                log::warn!("TensorBoard events are off from step {step}: {e:#}");
                self.0 = None;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masked_crc_matches_tensorflow() {
        // CRC32C("123456789") = 0xE3069283 (the check value of the Castagnoli polynomial);
        // masked: rotate right by 15, add 0xa282ead8.
        assert_eq!(crc32c::crc32c(b"123456789"), 0xe306_9283);
        assert_eq!(masked_crc(b"123456789"), 0xe306_9283u32.rotate_right(15).wrapping_add(0xa282_ead8));
    }

    #[test]
    fn records_frame_and_decode() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = EventWriter::create(dir.path()).unwrap();
        w.scalars(7, &[("loss/train", 0.5), ("lr", 1e-3)]).unwrap();
        let bytes = std::fs::read(w.path()).unwrap();
        let mut events = Vec::new();
        let mut rest = &bytes[..];
        while !rest.is_empty() {
            let len = u64::from_le_bytes(rest[..8].try_into().unwrap()) as usize;
            assert_eq!(u32::from_le_bytes(rest[8..12].try_into().unwrap()), masked_crc(&rest[..8]));
            let data = &rest[12..12 + len];
            assert_eq!(u32::from_le_bytes(rest[12 + len..16 + len].try_into().unwrap()), masked_crc(data));
            events.push(Event::decode(data).unwrap());
            rest = &rest[16 + len..];
        }
        assert_eq!(events.len(), 2);
        assert_eq!(events[0].file_version.as_deref(), Some("brain.Event:2"));
        let s = events[1].summary.as_ref().unwrap();
        assert_eq!(events[1].step, 7);
        assert_eq!(s.value[0].tag, "loss/train");
        assert_eq!(s.value[0].simple_value, Some(0.5));
        assert!((s.value[1].simple_value.unwrap() - 1e-3).abs() < 1e-9);
    }
}
