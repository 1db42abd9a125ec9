//! Reading a request body under the server's limits, and decoding image
//! bytes under decode limits. A body over `max_body` is a 413 as soon as its
//! length says so, or as soon as that many bytes have arrived; a client that
//! stops sending is a 408 after `body_timeout`, so a slow client holds no
//! worker. Decoding refuses images whose dimensions or pixel memory exceed
//! [`MAX_IMAGE_SIDE`] and [`MAX_DECODE_BYTES`] before allocating them (a
//! decompression bomb is a few kilobytes claiming gigapixels).

use std::io::Cursor;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::StatusCode;
use futures_util::StreamExt;

use super::error::ApiError;
use crate::preprocess::Preprocessor;

/// Widest and tallest image decoded, in pixels.
pub const MAX_IMAGE_SIDE: u32 = 16_384;
/// Most memory one decoded image may take, in bytes (the `image` crate's own
/// default allowance is 512 MiB; a server decoding many at once needs less).
pub const MAX_DECODE_BYTES: u64 = 256 << 20;

/// The whole body, at most `limit` bytes, each chunk arriving within `timeout`.
pub async fn read_body(body: Body, limit: usize, timeout: Duration) -> Result<Bytes, ApiError> {
    let mut stream = body.into_data_stream();
    let mut buf = Vec::new();
    loop {
        let next = tokio::time::timeout(timeout, stream.next()).await.map_err(|_| {
            ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                format!("the request body stopped arriving for {} ms: send it whole", timeout.as_millis()),
            )
        })?;
        match next {
            None => return Ok(Bytes::from(buf)),
            Some(Ok(chunk)) => {
                if buf.len() + chunk.len() > limit {
                    return Err(too_large(limit));
                }
                buf.extend_from_slice(&chunk);
            }
            Some(Err(e)) => {
                // hyper checks Content-Length against DefaultBodyLimit-free streams itself: an
                // over-long declared length arrives here as an error mentioning the limit.
                let text = e.to_string();
                if text.contains("length limit") {
                    return Err(too_large(limit));
                }
                return Err(ApiError::bad_request(format!("the request body was cut off: {text}")));
            }
        }
    }
}

/// 413 naming the limit.
pub fn too_large(limit: usize) -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        format!("request body over the limit of {limit} bytes (vit-serve --max-body raises it)"),
    )
}

/// Whether JPEG bytes end with the end-of-image marker (FF D9), ignoring the
/// zero or whitespace padding some writers append.
fn ends_with_eoi(bytes: &[u8]) -> bool {
    let end = bytes.iter().rposition(|&b| !matches!(b, 0 | b' ' | b'\t' | b'\r' | b'\n')).map_or(0, |i| i + 1);
    bytes[..end].ends_with(&[0xff, 0xd9])
}

/// Decodes image bytes into the model's CHW u8 pixels, exactly as
/// [`Preprocessor::load_file`] does (same decoder, same resize), under the
/// decode limits.
pub fn decode_image(prep: &Preprocessor, bytes: &[u8]) -> Result<Vec<u8>, ApiError> {
    if bytes.is_empty() {
        return Err(ApiError::bad_request(
            "empty body: send an image's bytes (JPEG, PNG, BMP or WebP) or a multipart form with one file",
        ));
    }
    let reader = image::ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| ApiError::bad_request(format!("cannot read the image: {e}")))?;
    if reader.format().is_none() {
        return Err(ApiError::bad_request(format!(
            "the body ({} bytes) is not an image: expected JPEG, PNG, BMP or WebP bytes",
            bytes.len()
        )));
    }
    if reader.format() == Some(image::ImageFormat::Jpeg) && !ends_with_eoi(bytes) {
        // The JPEG decoder fills a cut-off scan with grey and says nothing: an
        // upload that lost its tail would be classified as another image.
        return Err(ApiError::bad_request(format!(
            "cannot decode the image: the JPEG ({} bytes) has no end-of-image marker, it was cut off: send the whole file",
            bytes.len()
        )));
    }
    let mut reader = reader;
    let mut limits = image::Limits::default();
    limits.max_image_width = Some(MAX_IMAGE_SIDE);
    limits.max_image_height = Some(MAX_IMAGE_SIDE);
    limits.max_alloc = Some(MAX_DECODE_BYTES);
    reader.limits(limits);
    let img = reader.decode().map_err(|e| match e {
        image::ImageError::Limits(l) => ApiError::bad_request(format!(
            "image refused: {l} (at most {MAX_IMAGE_SIDE}x{MAX_IMAGE_SIDE} pixels and {MAX_DECODE_BYTES} bytes decoded; a decompression bomb?)"
        )),
        other => ApiError::bad_request(format!("cannot decode the image: {other}")),
    })?;
    Ok(prep.prepare(img))
}
