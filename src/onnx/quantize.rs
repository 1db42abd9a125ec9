//! Static int8 graphs in QDQ form: a rewrite of a finished float32 graph in
//! which every `MatMul` and `Conv` with a weight initializer reads its weight
//! through a per-channel `DequantizeLinear` of an int8 tensor and its
//! activation through a per-tensor `QuantizeLinear`/`DequantizeLinear` pair
//! with ranges measured on training images ([`Ranges`]).
//!
//! The choices follow what ONNX Runtime's CPU provider fuses into integer
//! kernels, so the QDQ pairs run as int8 arithmetic instead of float
//! round trips:
//!
//! - activations are **uint8, asymmetric** and weights **int8, symmetric per
//!   output channel** (`U8S8`, the combination MLAS has kernels for on x86);
//! - `DQ(x) -> MatMul <- DQ(W)` with a float output (no `Q` after) becomes
//!   `MatMulIntegerToFloat`, which takes a per-column weight scale `[N]`;
//!   the bias `Add` stays float. Activation-by-activation `MatMul`s
//!   (attention scores) stay float: their ranges vary per image;
//! - `DQ(x) -> Conv <- DQ(W), DQ(b) -> Q` becomes `QLinearConv`, which needs
//!   the output quantised and the bias as int32 at scale `s_x * s_w[c]`. A
//!   `Relu` between the `Conv` and its `Q` is absorbed when the range starts
//!   at zero, so the `Q` goes after the `Relu`;
//! - `BatchNormalization` after a `Conv` is folded into the `Conv`'s weight
//!   and bias first (it would otherwise sit between the `Conv` and its `Q`).
//!
//! The calibration graph ([`calibration_targets`]) is the same float graph
//! after the same folding, so the tensors measured are the ones quantised.

use std::collections::{BTreeMap, BTreeSet};

use super::builder::{i64_of, int};
use super::proto::tensor_proto::DataType;
use super::proto::{GraphProto, NodeProto, TensorProto};

/// Activation ranges measured by calibration: tensor name -> (min, max).
pub type Ranges = BTreeMap<String, (f32, f32)>;

/// The classifier head's weight, left in float32 (see [`weight_op`]).
const HEAD_WEIGHT: &str = "head.weight";

/// Largest magnitude of a symmetric int8 weight (-127..=127: the -128 code is
/// left out so that negating a weight never saturates).
const INT8_MAX: f32 = 127.0;

/// Folds every `Conv -> BatchNormalization` pair whose `Conv` output only the
/// normalisation reads into one `Conv` with a bias, and drops initializers no
/// node reads any more.
pub(super) fn fold_batch_norms(graph: &mut GraphProto) {
    let readers = readers(graph);
    let mut removed = BTreeSet::new();
    for bn_idx in 0..graph.node.len() {
        let bn = &graph.node[bn_idx];
        if bn.op_type.as_deref() != Some("BatchNormalization") || bn.input.len() != 5 {
            continue;
        }
        let x = bn.input[0].clone();
        let Some(conv_idx) = graph.node.iter().position(|n| n.op_type.as_deref() == Some("Conv") && n.output[0] == x)
        else {
            continue;
        };
        if readers.get(&x).map_or(0, Vec::len) != 1 {
            continue;
        }
        let params: Option<Vec<Vec<f32>>> = bn.input[1..].iter().map(|name| floats_of(graph, name)).collect();
        let (Some(params), Some(weight)) = (params, floats_of(graph, &graph.node[conv_idx].input[1])) else {
            continue;
        };
        let eps = bn.attribute.iter().find(|a| a.name.as_deref() == Some("epsilon")).and_then(|a| a.f).unwrap_or(1e-5);
        let [gamma, beta, mean, var] = [&params[0], &params[1], &params[2], &params[3]];
        let channels = gamma.len();
        let per_channel = weight.len() / channels;
        let factor: Vec<f32> = (0..channels).map(|c| gamma[c] / (var[c] + eps).sqrt()).collect();
        let bias_in = graph.node[conv_idx].input.get(2).and_then(|b| floats_of(graph, b));
        let folded_w: Vec<f32> = weight.iter().enumerate().map(|(i, w)| w * factor[i / per_channel]).collect();
        let folded_b: Vec<f32> =
            (0..channels).map(|c| (bias_in.as_ref().map_or(0.0, |b| b[c]) - mean[c]) * factor[c] + beta[c]).collect();

        let w_name = graph.node[conv_idx].input[1].clone();
        let out = bn.output[0].clone();
        let dims = initializer(graph, &w_name).map(|t| t.dims.clone()).unwrap_or_default();
        let new_w = format!("{w_name}.bn_folded");
        let new_b = format!("{new_w}.bias");
        graph.initializer.push(f32_tensor(&new_w, dims, &folded_w));
        graph.initializer.push(f32_tensor(&new_b, vec![channels as i64], &folded_b));
        let conv = &mut graph.node[conv_idx];
        conv.input.truncate(2);
        conv.input[1] = new_w;
        conv.input.push(new_b);
        conv.output[0] = out;
        removed.insert(bn_idx);
    }
    let mut i = 0;
    graph.node.retain(|_| {
        i += 1;
        !removed.contains(&(i - 1))
    });
    drop_unused_initializers(graph);
}

/// The activations [`to_int8`] quantises, in graph order: the float input of
/// every weight `MatMul` and `Conv`, and the output of every such `Conv`
/// (after its `Relu`, when one follows it alone).
pub(super) fn calibration_targets(graph: &GraphProto) -> Vec<String> {
    let readers = readers(graph);
    let mut targets = Vec::new();
    let mut push = |t: &String| {
        if !targets.contains(t) {
            targets.push(t.clone());
        }
    };
    for n in &graph.node {
        match weight_op(graph, n) {
            Some(WeightOp::MatMul) => push(&n.input[0]),
            Some(WeightOp::Conv) => {
                push(&n.input[0]);
                push(&conv_output(graph, &readers, n));
            }
            None => {}
        }
    }
    targets
}

/// Why a graph could not be quantised.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct MissingRange(pub String);

/// Quantises `graph` in place (see the module docs). `graph` has had
/// [`fold_batch_norms`] applied, as the calibration graph had.
pub(super) fn to_int8(graph: &mut GraphProto, ranges: &Ranges) -> Result<(), MissingRange> {
    let targets = calibration_targets(graph);
    let mut act = BTreeMap::new();
    for t in &targets {
        let &(lo, hi) = ranges.get(t).ok_or_else(|| MissingRange(t.clone()))?;
        act.insert(t.clone(), uint8_params(lo, hi));
    }

    // Weights (and conv biases) become int8/int32 initializers behind a DQ node.
    let mut prologue = Vec::new();
    let mut new_inits = Vec::new();
    let mut weight_dq: BTreeMap<(usize, usize), String> = BTreeMap::new();
    for (idx, n) in graph.node.iter().enumerate() {
        let Some(op) = weight_op(graph, n) else { continue };
        let w_name = &n.input[1];
        let w = floats_of(graph, w_name).unwrap_or_default();
        let dims = initializer(graph, w_name).map(|t| t.dims.clone()).unwrap_or_default();
        let (axis, channels) = match op {
            WeightOp::MatMul => (1, dims[1] as usize),
            WeightOp::Conv => (0, dims[0] as usize),
        };
        let channel = |i: usize| if axis == 1 { i % channels } else { i / (w.len() / channels) };
        let scales = weight_scales(&w, channels, channel);
        let q =
            w.iter().enumerate().map(|(i, &v)| (v / scales[channel(i)]).round().clamp(-INT8_MAX, INT8_MAX) as i8 as u8);
        let base = format!("{}.int8", w_name.trim_end_matches(".bn_folded"));
        let n_ch = vec![i64_of(channels)];
        new_inits.push(raw_tensor(&base, dims.clone(), DataType::Int8, q.collect()));
        new_inits.push(f32_tensor(&format!("{base}.scale"), n_ch.clone(), &scales));
        new_inits.push(raw_tensor(&format!("{base}.zero_point"), n_ch.clone(), DataType::Int8, vec![0; channels]));
        prologue.push(dq_node(&base, &format!("{base}.dq"), Some(axis)));
        weight_dq.insert((idx, 1), format!("{base}.dq"));
        if op == WeightOp::Conv && n.input.len() > 2 {
            let b_name = &n.input[2];
            let b = floats_of(graph, b_name).unwrap_or_else(|| vec![0.0; channels]);
            let s_x = act[&n.input[0]].0;
            let b_scales: Vec<f32> = scales.iter().map(|s| s * s_x).collect();
            let qb = b.iter().zip(&b_scales).flat_map(|(v, s)| ((v / s).round() as i32).to_le_bytes());
            let bb = format!("{}.int32", b_name.replace(".weight.bn_folded.bias", ".bias"));
            new_inits.push(raw_tensor(&bb, n_ch.clone(), DataType::Int32, qb.collect()));
            new_inits.push(f32_tensor(&format!("{bb}.scale"), n_ch.clone(), &b_scales));
            new_inits.push(raw_tensor(&format!("{bb}.zero_point"), n_ch, DataType::Int32, vec![0; 4 * channels]));
            prologue.push(dq_node(&bb, &format!("{bb}.dq"), Some(0)));
            weight_dq.insert((idx, 2), format!("{bb}.dq"));
        }
    }
    graph.initializer.extend(new_inits);

    // Activations: one Q after the producer, one DQ per reader.
    let readers = readers(graph);
    let mut rewired = weight_dq;
    let mut after: BTreeMap<String, Vec<NodeProto>> = BTreeMap::new();
    for t in &targets {
        let (scale, zp) = act[t];
        let q_out = format!("{t}/q");
        let (s_name, z_name) = (format!("{q_out}.scale"), format!("{q_out}.zero_point"));
        graph.initializer.push(f32_tensor(&s_name, vec![], &[scale]));
        graph.initializer.push(raw_tensor(&z_name, vec![], DataType::Uint8, vec![zp]));
        let mut nodes = vec![NodeProto {
            input: vec![t.clone(), s_name.clone(), z_name.clone()],
            output: vec![q_out.clone()],
            name: Some(format!("{t}/QuantizeLinear")),
            op_type: Some("QuantizeLinear".into()),
            domain: Some(String::new()),
            ..Default::default()
        }];
        // `Shape` only reads the dimensions: it keeps the float tensor.
        let value_readers =
            readers.get(t).into_iter().flatten().filter(|(n, _)| graph.node[*n].op_type.as_deref() != Some("Shape"));
        for (k, &(node, slot)) in value_readers.enumerate() {
            let out = format!("{t}/dq{k}");
            nodes.push(dq_node(&q_out, &out, None));
            rewired.insert((node, slot), out);
        }
        after.insert(t.clone(), nodes);
    }
    let mut nodes = prologue;
    let inputs: Vec<String> = graph.input.iter().filter_map(|i| i.name.clone()).collect();
    for i in &inputs {
        nodes.extend(after.remove(i).unwrap_or_default());
    }
    for (idx, mut n) in std::mem::take(&mut graph.node).into_iter().enumerate() {
        for (slot, i) in n.input.iter_mut().enumerate() {
            if let Some(new) = rewired.get(&(idx, slot)) {
                new.clone_into(i);
            }
        }
        let outs = n.output.clone();
        nodes.push(n);
        for o in &outs {
            nodes.extend(after.remove(o).unwrap_or_default());
        }
    }
    graph.node = nodes;
    drop_unused_initializers(graph);
    Ok(())
}

/// The kinds of node that get an int8 weight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum WeightOp {
    MatMul,
    Conv,
}

/// `Some` for a `MatMul` by a rank-2 float initializer or a `Conv` with a
/// rank-4 float weight initializer, except the classifier head: a few
/// hundred weights on pooled features, where ONNX Runtime fuses `MatMul` and
/// bias into a float `Gemm` before any QDQ fusion could apply.
fn weight_op(graph: &GraphProto, n: &NodeProto) -> Option<WeightOp> {
    if n.input.get(1).is_some_and(|w| w == HEAD_WEIGHT) {
        return None;
    }
    let (op, rank) = match n.op_type.as_deref()? {
        "MatMul" => (WeightOp::MatMul, 2),
        "Conv" => (WeightOp::Conv, 4),
        _ => return None,
    };
    let w = initializer(graph, n.input.get(1)?)?;
    (w.data_type == Some(DataType::Float as i32) && w.dims.len() == rank).then_some(op)
}

/// The tensor a `Conv`'s output `Q` reads: the `Relu` after it when that is its only reader.
fn conv_output(graph: &GraphProto, readers: &BTreeMap<String, Vec<(usize, usize)>>, conv: &NodeProto) -> String {
    let out = &conv.output[0];
    match readers.get(out).map(Vec::as_slice) {
        Some(&[(r, _)]) if graph.node[r].op_type.as_deref() == Some("Relu") => graph.node[r].output[0].clone(),
        _ => out.clone(),
    }
}

/// uint8 scale and zero point covering `[lo, hi]` and zero.
fn uint8_params(lo: f32, hi: f32) -> (f32, u8) {
    let (lo, hi) = (lo.min(0.0), hi.max(0.0));
    let scale = ((hi - lo) / 255.0).max(1e-8);
    (scale, (-lo / scale).round().clamp(0.0, 255.0) as u8)
}

/// Symmetric per-channel scales of `w`, whose value `i` is in channel `channel(i)`.
fn weight_scales(w: &[f32], channels: usize, channel: impl Fn(usize) -> usize) -> Vec<f32> {
    let mut max = vec![0f32; channels];
    for (i, v) in w.iter().enumerate() {
        max[channel(i)] = max[channel(i)].max(v.abs());
    }
    max.into_iter().map(|m| if m > 0.0 { m / INT8_MAX } else { 1.0 }).collect()
}

/// `(node index, input slot)` of every reader of every tensor.
fn readers(graph: &GraphProto) -> BTreeMap<String, Vec<(usize, usize)>> {
    let mut map: BTreeMap<String, Vec<(usize, usize)>> = BTreeMap::new();
    for (i, n) in graph.node.iter().enumerate() {
        for (slot, input) in n.input.iter().enumerate() {
            map.entry(input.clone()).or_default().push((i, slot));
        }
    }
    map
}

fn initializer<'g>(graph: &'g GraphProto, name: &str) -> Option<&'g TensorProto> {
    graph.initializer.iter().find(|t| t.name.as_deref() == Some(name))
}

/// The values of a float32 initializer (`raw_data` or `float_data`).
fn floats_of(graph: &GraphProto, name: &str) -> Option<Vec<f32>> {
    let t = initializer(graph, name).filter(|t| t.data_type == Some(DataType::Float as i32))?;
    Some(match &t.raw_data {
        Some(raw) => raw.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect(),
        None => t.float_data.clone(),
    })
}

fn f32_tensor(name: &str, dims: Vec<i64>, values: &[f32]) -> TensorProto {
    raw_tensor(name, dims, DataType::Float, values.iter().flat_map(|v| v.to_le_bytes()).collect())
}

fn raw_tensor(name: &str, dims: Vec<i64>, dtype: DataType, raw: Vec<u8>) -> TensorProto {
    TensorProto {
        dims,
        data_type: Some(dtype as i32),
        name: Some(name.to_owned()),
        raw_data: Some(raw),
        ..Default::default()
    }
}

/// A `DequantizeLinear` of `x` with the scale `{x}.scale` and zero point
/// `{x}.zero_point` (per-axis when `axis` is given), writing `out`.
fn dq_node(x: &str, out: &str, axis: Option<i64>) -> NodeProto {
    NodeProto {
        input: vec![x.to_owned(), format!("{x}.scale"), format!("{x}.zero_point")],
        output: vec![out.to_owned()],
        name: Some(format!("{out}/DequantizeLinear")),
        op_type: Some("DequantizeLinear".into()),
        domain: Some(String::new()),
        attribute: axis.map(|a| int("axis", a).to_proto()).into_iter().collect(),
        ..Default::default()
    }
}

/// Removes initializers that no node reads.
fn drop_unused_initializers(graph: &mut GraphProto) {
    let read: BTreeSet<&String> = graph.node.iter().flat_map(|n| &n.input).collect();
    let keep: Vec<bool> = graph.initializer.iter().map(|t| t.name.as_ref().is_some_and(|n| read.contains(n))).collect();
    let mut k = keep.into_iter();
    graph.initializer.retain(|_| k.next().unwrap_or(true));
}
