//! float16 graphs (`keep_io_types`): a rewrite of a finished float32 graph
//! in which weights and activations are float16 while the graph's input and
//! output stay float32, so clients feed and read the same tensors as before.
//!
//! - the float input (`pixel_values`, a graph input or the output of the
//!   raw-pixel prologue, which stays float32) is cast to float16 where the
//!   body starts, and the logits are cast back to float32 at the end;
//! - `LayerNormalization` and `Softmax` run in float32 between two casts:
//!   their sums of squares and exponentials overflow float16's 65504;
//! - every float32 initializer the float16 nodes read becomes float16 (a
//!   copy named `{name}.fp16` when a float32 node reads it too).

use std::collections::{BTreeMap, BTreeSet};

use half::f16;

use super::builder::int;
use super::graph::{INPUT_NAME, OUTPUT_NAME};
use super::proto::tensor_proto::DataType;
use super::proto::{GraphProto, NodeProto, TensorProto};

/// Operators kept in float32.
const FLOAT32_OPS: [&str; 2] = ["LayerNormalization", "Softmax"];
/// Scope of the raw-pixel prologue's nodes, which run before the float16 body.
const PROLOGUE: &str = "preprocess/";

/// Converts `graph` in place (see the module docs).
pub(super) fn to_float16(graph: &mut GraphProto) {
    let is_prologue = |n: &NodeProto| n.name.as_deref().is_some_and(|s| s.starts_with(PROLOGUE));
    let is_f32_op = |n: &NodeProto| n.op_type.as_deref().is_some_and(|op| FLOAT32_OPS.contains(&op));
    let float_inits: BTreeSet<String> = graph
        .initializer
        .iter()
        .filter(|t| t.data_type == Some(DataType::Float as i32))
        .filter_map(|t| t.name.clone())
        .collect();

    // Who reads each float initializer: float16 nodes, float32 nodes, or both.
    let (mut read_f16, mut read_f32) = (BTreeSet::new(), BTreeSet::new());
    for n in &graph.node {
        let readers = if is_prologue(n) || is_f32_op(n) { &mut read_f32 } else { &mut read_f16 };
        readers.extend(n.input.iter().filter(|i| float_inits.contains(*i)).cloned());
    }
    let mut renamed = BTreeMap::new();
    let mut copies = Vec::new();
    for t in &mut graph.initializer {
        let Some(name) = t.name.clone().filter(|n| read_f16.contains(n)) else { continue };
        if read_f32.contains(&name) {
            let mut copy = half_tensor(t);
            let new = format!("{name}.fp16");
            copy.name = Some(new.clone());
            copies.push(copy);
            renamed.insert(name, new);
        } else {
            *t = half_tensor(t);
        }
    }
    graph.initializer.extend(copies);

    let input_is_graph_input = graph.input.iter().any(|i| i.name.as_deref() == Some(INPUT_NAME));
    let input_f16 = format!("{INPUT_NAME}.fp16");
    renamed.insert(INPUT_NAME.to_owned(), input_f16.clone());
    let mut nodes = Vec::with_capacity(graph.node.len() + 8);
    let mut widened = BTreeSet::new();
    if input_is_graph_input {
        nodes.push(cast(INPUT_NAME, &input_f16, DataType::Float16));
    }
    for mut n in std::mem::take(&mut graph.node) {
        if is_prologue(&n) {
            let ends_prologue = n.output.iter().any(|o| o == INPUT_NAME);
            nodes.push(n);
            if ends_prologue {
                nodes.push(cast(INPUT_NAME, &input_f16, DataType::Float16));
            }
        } else if is_f32_op(&n) {
            for i in n.input.iter_mut().filter(|i| !float_inits.contains(*i)) {
                let wide = format!("{i}.fp32");
                if widened.insert(wide.clone()) {
                    let from = renamed.get(i).unwrap_or(i).clone();
                    nodes.push(cast(&from, &wide, DataType::Float));
                }
                *i = wide;
            }
            let outs: Vec<String> = n.output.clone();
            for o in &mut n.output {
                *o = format!("{o}.fp32");
            }
            let wide_outs = n.output.clone();
            nodes.push(n);
            for (wide, o) in wide_outs.iter().zip(&outs) {
                nodes.push(cast(wide, o, DataType::Float16));
            }
        } else {
            for i in &mut n.input {
                if let Some(new) = renamed.get(i) {
                    new.clone_into(i);
                }
            }
            let writes_logits = n.output.iter().any(|o| o == OUTPUT_NAME);
            let narrow = format!("{OUTPUT_NAME}.fp16");
            for o in n.output.iter_mut().filter(|o| *o == OUTPUT_NAME) {
                narrow.clone_into(o);
            }
            nodes.push(n);
            if writes_logits {
                nodes.push(cast(&narrow, OUTPUT_NAME, DataType::Float));
            }
        }
    }
    graph.node = nodes;
}

/// A `Cast` of `from` to `to` writing `out`, named after its output.
fn cast(from: &str, out: &str, to: DataType) -> NodeProto {
    NodeProto {
        input: vec![from.to_owned()],
        output: vec![out.to_owned()],
        name: Some(format!("{out}/Cast")),
        op_type: Some("Cast".into()),
        domain: Some(String::new()),
        attribute: vec![int("to", to as i64).to_proto()],
        ..Default::default()
    }
}

/// The float16 copy of a float32 initializer (`raw_data` or `float_data`).
fn half_tensor(t: &TensorProto) -> TensorProto {
    let values: Vec<f32> = match &t.raw_data {
        Some(raw) => raw.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect(),
        None => t.float_data.clone(),
    };
    let raw = values.iter().flat_map(|&v| f16::from_f32(v).to_le_bytes()).collect();
    TensorProto {
        dims: t.dims.clone(),
        data_type: Some(DataType::Float16 as i32),
        name: t.name.clone(),
        raw_data: Some(raw),
        ..Default::default()
    }
}
