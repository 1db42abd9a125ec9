//! The Open Inference Protocol (KServe v2) REST side: the JSON of model
//! metadata and of an inference request and response, and the checks that
//! turn a wrong tensor into a 400 naming it. A float model takes FP32
//! `[N, C, H, W]` normalised pixels, a raw-pixel (`--input uint8`) model
//! UINT8 `[N, H, W, C]`; the response's one output is FP32 `[N, classes]`
//! logits. Tensor data is JSON (flat or nested arrays); the binary-tensor
//! extension is refused with a message saying so.

use serde::Deserialize;
use serde_json::{json, Value};

use super::error::ApiError;
use super::model::{Loaded, ModelSlot};
use super::queue::Input;
use crate::format::InputKind;

/// The name of the output every vit-train export has.
pub const OUTPUT_NAME: &str = "logits";

/// `POST /v2/models/{name}/infer` body.
#[derive(Debug, Deserialize)]
pub struct InferRequest {
    /// Echoed in the response.
    pub id: Option<String>,
    /// The one input tensor.
    pub inputs: Vec<InputTensor>,
    /// Outputs asked for (only `logits` exists).
    pub outputs: Option<Vec<RequestedOutput>>,
}

/// One input tensor.
#[derive(Debug, Deserialize)]
pub struct InputTensor {
    /// Tensor name.
    pub name: String,
    /// Dimensions.
    pub shape: Vec<i64>,
    /// `FP32`, `UINT8`, ...
    pub datatype: String,
    /// Row-major values, flat or nested.
    pub data: Option<Value>,
    /// Extension parameters (`binary_data_size` for the binary extension).
    pub parameters: Option<serde_json::Map<String, Value>>,
}

/// One requested output.
#[derive(Debug, Deserialize)]
pub struct RequestedOutput {
    /// Output name.
    pub name: String,
    /// Extension parameters (`binary_data`).
    pub parameters: Option<serde_json::Map<String, Value>>,
}

/// The datatype and shape (batch `-1`) of a model's input.
fn input_signature(m: &Loaded) -> (&'static str, [i64; 4]) {
    let (c, s) = (m.prep.channels as i64, m.prep.image_size as i64);
    match m.input {
        InputKind::Float32Nchw => ("FP32", [-1, c, s, s]),
        InputKind::Uint8Nhwc => ("UINT8", [-1, s, s, c]),
    }
}

/// `GET /v2/models/{name}`.
pub fn model_metadata(slot: &ModelSlot) -> Value {
    let m = slot.current();
    let (datatype, shape) = input_signature(&m);
    json!({
        "name": slot.name,
        "versions": [slot.version],
        "platform": "onnxruntime_onnx",
        "inputs": [{ "name": m.input_name, "datatype": datatype, "shape": shape }],
        "outputs": [{ "name": OUTPUT_NAME, "datatype": "FP32", "shape": [-1, m.labels.len() as i64] }],
    })
}

/// Checks a request against the model and returns its images and their count.
pub fn parse_request(m: &Loaded, body: &[u8]) -> Result<(Option<String>, Input, usize), ApiError> {
    let req: InferRequest = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("the body is not an inference request in JSON: {e}")))?;
    if let Some(outputs) = &req.outputs {
        for o in outputs {
            if o.name != OUTPUT_NAME {
                return Err(ApiError::bad_request(format!(
                    "unknown output `{}`: the model's one output is `{OUTPUT_NAME}`",
                    o.name
                )));
            }
            if o.parameters.as_ref().and_then(|p| p.get("binary_data")).and_then(Value::as_bool) == Some(true) {
                return Err(binary_refused());
            }
        }
    }
    let [input] = req.inputs.as_slice() else {
        return Err(ApiError::bad_request(format!(
            "{} input tensors given: the model takes exactly one, `{}`",
            req.inputs.len(),
            m.input_name
        )));
    };
    if input.name != m.input_name {
        return Err(ApiError::bad_request(format!(
            "unknown input `{}`: the model's input is `{}`",
            input.name, m.input_name
        )));
    }
    if input.parameters.as_ref().is_some_and(|p| p.contains_key("binary_data_size")) {
        return Err(binary_refused());
    }
    let (datatype, want) = input_signature(m);
    if input.datatype != datatype {
        return Err(ApiError::bad_request(format!(
            "input `{}` has datatype {} but the model takes {datatype} (shape {want:?}, -1 = any batch)",
            input.name, input.datatype
        )));
    }
    let shape_ok =
        input.shape.len() == 4 && input.shape[0] >= 1 && input.shape.iter().zip(want).skip(1).all(|(&d, w)| d == w);
    if !shape_ok {
        return Err(ApiError::bad_request(format!(
            "input `{}` has shape {:?} but the model takes {want:?} (-1 = any batch of at least 1)",
            input.name, input.shape
        )));
    }
    let images = input.shape[0] as usize;
    let expected = images * m.prep.image_len();
    let data = input.data.as_ref().ok_or_else(|| {
        ApiError::bad_request(format!("input `{}` has no `data`: send its {expected} values as JSON", input.name))
    })?;
    let mut values = Vec::with_capacity(expected);
    flatten(data, &mut values, expected)
        .map_err(|what| ApiError::bad_request(format!("input `{}`: {what}", input.name)))?;
    if values.len() != expected {
        return Err(ApiError::bad_request(format!(
            "input `{}` has {} values but its shape {:?} needs {expected}",
            input.name,
            values.len(),
            input.shape
        )));
    }
    let input = match m.input {
        InputKind::Float32Nchw => Input::F32(values.into_iter().map(|v| v as f32).collect()),
        InputKind::Uint8Nhwc => {
            let mut bytes = Vec::with_capacity(expected);
            for v in values {
                if !(0.0..=255.0).contains(&v) || v.fract() != 0.0 {
                    return Err(ApiError::bad_request(format!(
                        "input `{}` holds {v}, not a UINT8 (a whole number 0-255)",
                        input.name
                    )));
                }
                bytes.push(v as u8);
            }
            Input::U8Chw(nhwc_to_chw(&bytes, m.prep.channels, m.prep.image_size * m.prep.image_size))
        }
    };
    Ok((req.id, input, images))
}

/// The 400 for the binary-tensor extension.
fn binary_refused() -> ApiError {
    ApiError::bad_request(
        "the binary tensor extension is not supported: send JSON data (tritonclient: binary_data=False for inputs and outputs)",
    )
}

/// Appends the numbers of a flat or nested JSON array; stops past `limit`.
fn flatten(v: &Value, out: &mut Vec<f64>, limit: usize) -> Result<(), String> {
    match v {
        Value::Number(n) => {
            out.push(n.as_f64().ok_or_else(|| format!("{n} is not a number"))?);
            Ok(())
        }
        Value::Array(items) => {
            for item in items {
                if out.len() > limit {
                    return Ok(());
                }
                flatten(item, out, limit)?;
            }
            Ok(())
        }
        other => Err(format!("`data` holds {other}, not a number")),
    }
}

/// NHWC images (`hw` pixels of `channels` each) -> CHW, the layout the batcher takes.
fn nhwc_to_chw(nhwc: &[u8], channels: usize, hw: usize) -> Vec<u8> {
    let mut out = vec![0; nhwc.len()];
    for (src, dst) in nhwc.chunks(channels * hw).zip(out.chunks_mut(channels * hw)) {
        for p in 0..hw {
            for c in 0..channels {
                dst[c * hw + p] = src[p * channels + c];
            }
        }
    }
    out
}

/// The response of a finished request.
pub fn response(slot: &ModelSlot, id: Option<String>, logits: Vec<f32>, images: usize, classes: usize) -> Value {
    let mut v = json!({
        "model_name": slot.name,
        "model_version": slot.version,
        "outputs": [{ "name": OUTPUT_NAME, "datatype": "FP32", "shape": [images, classes], "data": logits }],
    });
    if let Some(id) = id {
        v["id"] = json!(id);
    }
    v
}
