//! The raw-pixel prologue: turns a graph that takes normalised float
//! `pixel_values [batch, C, H, W]` into one that takes the decoded image
//! itself, `pixels` u8 `[batch, H, W, C]` (NHWC, the interleaved layout image
//! decoders and canvases return). The preprocessing moves into the graph:
//!
//! `Cast(float) -> Transpose(0, 3, 1, 2) -> Div(255) -> Sub(mean) -> Div(std)`
//!
//! with the config's per-channel mean and std as `[1, C, 1, 1]` constants,
//! the same operations in the same order as [`crate::Preprocessor::normalize`],
//! so the graph sees the same floats. The last node writes the old input's
//! name, so the rest of the graph is untouched.

use super::builder::{i64_of, int, ints};
use super::graph::{BATCH_DIM, INPUT_NAME};
use super::proto::tensor_proto::DataType;
use super::proto::tensor_shape_proto::{dimension, Dimension};
use super::proto::{type_proto, GraphProto, NodeProto, TensorProto, TensorShapeProto, TypeProto, ValueInfoProto};
use crate::config::ViTConfig;

/// Name of the u8 `[batch, H, W, C]` input of a raw-pixel graph.
pub const PIXELS_U8_NAME: &str = "pixels";

/// Scope of the prologue's nodes and constants.
const SCOPE: &str = "preprocess";

/// Replaces the graph's f32 input with the u8 NHWC one and prepends the preprocessing.
pub(super) fn take_uint8_pixels(graph: &mut GraphProto, cfg: &ViTConfig) {
    let (c, s) = (cfg.in_channels, cfg.image_size);
    let (mean, std) = cfg.channel_stats();
    let dims = [Dim::Batch, Dim::Fixed(s), Dim::Fixed(s), Dim::Fixed(c)];
    graph.input = vec![u8_input(PIXELS_U8_NAME, &dims)];
    let per_channel = |name: &str, values: &[f32]| TensorProto {
        dims: vec![1, i64_of(c), 1, 1],
        data_type: Some(DataType::Float as i32),
        float_data: values.to_vec(),
        name: Some(format!("const.{SCOPE}.{name}")),
        ..Default::default()
    };
    let scalar_255 = TensorProto {
        data_type: Some(DataType::Float as i32),
        float_data: vec![255.0],
        name: Some(format!("const.{SCOPE}.255")),
        ..Default::default()
    };
    let consts = [scalar_255, per_channel("mean", &mean), per_channel("std", &std)];
    let [k255, kmean, kstd] = consts.each_ref().map(|t| t.name.clone().unwrap_or_default());
    graph.initializer.splice(0..0, consts);

    let v = |op: &str| format!("{SCOPE}/{op}:0");
    let cast = node("Cast", PIXELS_U8_NAME, &[], &v("Cast"), vec![int("to", DataType::Float as i64).to_proto()]);
    let nchw = node("Transpose", &v("Cast"), &[], &v("Transpose"), vec![ints("perm", &[0, 3, 1, 2]).to_proto()]);
    let unit = node("Div", &v("Transpose"), &[&k255], &v("Div"), vec![]);
    let centred = node("Sub", &v("Div"), &[&kmean], &v("Sub"), vec![]);
    let mut scaled = node("Div", &v("Sub"), &[&kstd], INPUT_NAME, vec![]);
    scaled.name = Some(format!("{SCOPE}/Div_1"));
    graph.node.splice(0..0, [cast, nchw, unit, centred, scaled]);
}

/// A dimension of the new input.
enum Dim {
    Batch,
    Fixed(usize),
}

fn u8_input(name: &str, dims: &[Dim]) -> ValueInfoProto {
    let dim = dims
        .iter()
        .map(|d| Dimension {
            value: Some(match d {
                Dim::Batch => dimension::Value::DimParam(BATCH_DIM.to_owned()),
                Dim::Fixed(n) => dimension::Value::DimValue(i64_of(*n)),
            }),
            denotation: None,
        })
        .collect();
    let tensor = type_proto::Tensor { elem_type: Some(DataType::Uint8 as i32), shape: Some(TensorShapeProto { dim }) };
    ValueInfoProto {
        name: Some(name.to_owned()),
        r#type: Some(TypeProto { value: Some(type_proto::Value::TensorType(tensor)), denotation: None }),
        ..Default::default()
    }
}

/// A prologue node `preprocess/{op}` reading `x` (then `rest`) and writing `out`.
fn node(op: &str, x: &str, rest: &[&str], out: &str, attribute: Vec<super::proto::AttributeProto>) -> NodeProto {
    NodeProto {
        input: std::iter::once(x).chain(rest.iter().copied()).map(str::to_owned).collect(),
        output: vec![out.to_owned()],
        name: Some(format!("{SCOPE}/{op}")),
        op_type: Some(op.to_owned()),
        domain: Some(String::new()),
        attribute,
        ..Default::default()
    }
}
