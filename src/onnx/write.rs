//! Writing a model to disk: atomic file replacement and external data.

use std::fs::{self, File};
use std::io::{self, BufWriter, Read as _, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use prost::Message;

use super::proto::tensor_proto::DataLocation;
use super::proto::{ModelProto, StringStringEntryProto};
use super::{ExportError, INLINE_LIMIT};

/// Offset alignment of tensors in the external data file.
const ALIGN: u64 = 64;
/// Offset alignment of large tensors (page size, so readers can map them).
const ALIGN_LARGE: u64 = 4096;
/// Tensors of at least this many bytes use [`ALIGN_LARGE`].
const LARGE: usize = 1 << 20;

/// Writes `model` to `path`, moving the weights to `<file name>.data` when
/// `external` is set or the inline model would exceed the protobuf limit.
pub(super) fn write_model_proto(path: &Path, mut model: ModelProto, external: bool) -> Result<(), ExportError> {
    let invalid = |reason: &str| ExportError::InvalidPath { path: path.display().to_string(), reason: reason.into() };
    let file_name = path
        .file_name()
        .ok_or_else(|| invalid("it has no file name; give a path like `models/vit.onnx`"))?
        .to_str()
        .ok_or_else(|| invalid("the file name is not valid UTF-8, which the external data reference needs"))?
        .to_owned();
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    if external || model.encoded_len() > INLINE_LIMIT {
        let data_name = format!("{file_name}{}", super::EXTERNAL_DATA_SUFFIX);
        let blobs = externalize(&mut model, &data_name);
        let bytes = model.encoded_len();
        if bytes > INLINE_LIMIT {
            return Err(ExportError::TooLarge { bytes });
        }
        write_atomic(&dir, &data_name, |w| {
            let mut pos = 0u64;
            for (offset, bytes) in &blobs {
                let pad = offset - pos;
                io::copy(&mut io::repeat(0).take(pad), w)?;
                w.write_all(bytes)?;
                pos = offset + bytes.len() as u64;
            }
            Ok(())
        })?;
    }
    let bytes = model.encode_to_vec();
    write_atomic(&dir, &file_name, |w| w.write_all(&bytes))
}

/// Moves every `raw_data` initializer (the checkpoint weights) out of `model`;
/// returns `(offset, bytes)` for the data file, in initializer order.
fn externalize(model: &mut ModelProto, data_name: &str) -> Vec<(u64, Vec<u8>)> {
    let mut blobs = Vec::new();
    let mut end = 0u64;
    let Some(graph) = model.graph.as_mut() else { return blobs };
    for t in &mut graph.initializer {
        let Some(raw) = t.raw_data.take() else { continue };
        let align = if raw.len() >= LARGE { ALIGN_LARGE } else { ALIGN };
        let offset = end.div_ceil(align) * align;
        let length = raw.len() as u64;
        let entry = |k: &str, v: String| StringStringEntryProto { key: Some(k.to_owned()), value: Some(v) };
        t.external_data = vec![
            entry("location", data_name.to_owned()),
            entry("offset", offset.to_string()),
            entry("length", length.to_string()),
        ];
        t.set_data_location(DataLocation::External);
        end = offset + length;
        blobs.push((offset, raw));
    }
    blobs
}

/// Writes `dir/name` through a temporary file in `dir` (flushed and synced,
/// then renamed over the target), so readers never see a partial file.
fn write_atomic(
    dir: &Path,
    name: &str,
    fill: impl FnOnce(&mut BufWriter<File>) -> io::Result<()>,
) -> Result<(), ExportError> {
    let target = dir.join(name);
    static SERIAL: AtomicU64 = AtomicU64::new(0);
    let serial = SERIAL.fetch_add(1, Ordering::Relaxed);
    let tmp = dir.join(format!(".{name}.tmp-{}-{serial}", std::process::id()));
    let io_err = |path: &Path| {
        let path = path.display().to_string();
        move |source| ExportError::Io { path, source }
    };
    let file = File::create(&tmp).map_err(io_err(&target))?;
    let result = fill_sync_rename(file, &tmp, &target, fill);
    if result.is_err() {
        // Best effort: the temporary file is ours and useless now.
        let _ = fs::remove_file(&tmp);
    }
    result.map_err(io_err(&target))
}

fn fill_sync_rename(
    file: File,
    tmp: &Path,
    target: &Path,
    fill: impl FnOnce(&mut BufWriter<File>) -> io::Result<()>,
) -> io::Result<()> {
    let mut w = BufWriter::new(file);
    fill(&mut w)?;
    let file = w.into_inner().map_err(io::IntoInnerError::into_error)?;
    file.sync_all()?;
    drop(file);
    fs::rename(tmp, target)
}
