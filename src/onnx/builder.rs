//! A small fluent ONNX graph builder (in the style of rten's `onnx_builder`):
//! unique names, f32 initializers from [`TensorData`], deduplicated constant
//! initializers, typed attributes, and one helper per operator the ViT graphs
//! use. Every attribute an operator defines is written explicitly, even when it
//! equals the ONNX default, so readers never depend on defaults.
//!
//! Naming:
//! - a node is named `{scope}/{OpType}` (`_{n}` appended if taken) and its one
//!   output value `{node name}:0`;
//! - a checkpoint initializer keeps the checkpoint's tensor name;
//! - a constant the graph adds itself (shapes, indices, scalars) is named
//!   `const.{purpose}` (`_{n}` appended if taken) and is shared by every node
//!   that needs the same value. Checkpoint names never start with `const.`.
//!
//! The output is deterministic: everything is kept in insertion order or in
//! ordered (B-tree) collections.

use std::collections::{BTreeMap, BTreeSet};

use super::proto::attribute_proto::AttributeType;
use super::proto::tensor_proto::DataType;
use super::proto::tensor_shape_proto::{dimension, Dimension};
use super::proto::{
    type_proto, AttributeProto, GraphProto, NodeProto, TensorProto, TensorShapeProto, TypeProto, ValueInfoProto,
};
use crate::tensor::TensorData;

/// Prefix of every constant initializer added by the graph itself.
pub const CONST_PREFIX: &str = "const.";

/// The value of a node attribute.
#[derive(Debug, Clone, PartialEq)]
pub enum AttrValue {
    /// `INT`.
    Int(i64),
    /// `FLOAT`.
    Float(f32),
    /// `INTS`.
    Ints(Vec<i64>),
    /// `STRING` (UTF-8).
    String(String),
}

/// A named attribute, ready to attach to a node.
#[derive(Debug, Clone, PartialEq)]
pub struct Attr {
    /// Attribute name, as the operator defines it.
    pub name: &'static str,
    /// Its value.
    pub value: AttrValue,
}

/// An `INT` attribute.
pub fn int(name: &'static str, v: i64) -> Attr {
    Attr { name, value: AttrValue::Int(v) }
}

/// A `FLOAT` attribute.
pub fn float(name: &'static str, v: f32) -> Attr {
    Attr { name, value: AttrValue::Float(v) }
}

/// An `INTS` attribute.
pub fn ints(name: &'static str, v: &[i64]) -> Attr {
    Attr { name, value: AttrValue::Ints(v.to_vec()) }
}

/// A `STRING` attribute.
pub fn string(name: &'static str, v: &str) -> Attr {
    Attr { name, value: AttrValue::String(v.to_owned()) }
}

impl Attr {
    /// The protobuf form.
    pub fn to_proto(&self) -> AttributeProto {
        let mut a = AttributeProto { name: Some(self.name.to_owned()), ..Default::default() };
        match &self.value {
            AttrValue::Int(v) => {
                a.set_type(AttributeType::Int);
                a.i = Some(*v);
            }
            AttrValue::Float(v) => {
                a.set_type(AttributeType::Float);
                a.f = Some(*v);
            }
            AttrValue::Ints(v) => {
                a.set_type(AttributeType::Ints);
                a.ints = v.clone();
            }
            AttrValue::String(v) => {
                a.set_type(AttributeType::String);
                a.s = Some(v.clone().into_bytes());
            }
        }
        a
    }
}

/// A dimension of a graph input or output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dim<'a> {
    /// A fixed size.
    Fixed(usize),
    /// A symbolic size (`dim_param`), e.g. the batch.
    Symbolic(&'a str),
}

/// Converts a size to an ONNX int64 (sizes of real tensors always fit).
pub fn i64_of(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// Little-endian bytes of f32 values (the `raw_data` layout).
pub fn f32_le_bytes(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

/// Builds one `GraphProto`.
#[derive(Debug, Default)]
pub struct GraphBuilder {
    nodes: Vec<NodeProto>,
    initializers: Vec<TensorProto>,
    inputs: Vec<ValueInfoProto>,
    outputs: Vec<ValueInfoProto>,
    value_names: BTreeSet<String>,
    node_names: BTreeSet<String>,
    consts: BTreeMap<String, String>,
}

fn unique(taken: &mut BTreeSet<String>, base: &str) -> String {
    let mut name = base.to_owned();
    let mut n = 1;
    while taken.contains(&name) {
        name = format!("{base}_{n}");
        n += 1;
    }
    taken.insert(name.clone());
    name
}

fn value_info(name: &str, elem: DataType, dims: &[Dim]) -> ValueInfoProto {
    let dim = dims
        .iter()
        .map(|d| Dimension {
            value: Some(match d {
                Dim::Fixed(n) => dimension::Value::DimValue(i64_of(*n)),
                Dim::Symbolic(s) => dimension::Value::DimParam((*s).to_owned()),
            }),
            denotation: None,
        })
        .collect();
    let tensor = type_proto::Tensor { elem_type: Some(elem as i32), shape: Some(TensorShapeProto { dim }) };
    ValueInfoProto {
        name: Some(name.to_owned()),
        r#type: Some(TypeProto { value: Some(type_proto::Value::TensorType(tensor)), denotation: None }),
        ..Default::default()
    }
}

impl GraphBuilder {
    /// An empty graph.
    pub fn new() -> Self {
        Self::default()
    }

    /// Declares an f32 graph input; returns its value name.
    pub fn input(&mut self, name: &str, dims: &[Dim]) -> String {
        let name = unique(&mut self.value_names, name);
        self.inputs.push(value_info(&name, DataType::Float, dims));
        name
    }

    /// Declares `value` as an f32 graph output called `name`: the node producing
    /// `value` is made to write `name` directly (an `Identity` is added when no
    /// node produces it, e.g. for an input).
    pub fn output(&mut self, value: &str, name: &str, dims: &[Dim]) {
        let producer = self.nodes.iter_mut().find(|n| n.output.iter().any(|o| o == value));
        let renamed = match producer {
            Some(node) if !self.value_names.contains(name) => {
                for o in node.output.iter_mut().filter(|o| *o == value) {
                    name.clone_into(o);
                }
                for n in &mut self.nodes {
                    for i in n.input.iter_mut().filter(|i| *i == value) {
                        name.clone_into(i);
                    }
                }
                self.value_names.insert(name.to_owned());
                name.to_owned()
            }
            _ => {
                let node_name = unique(&mut self.node_names, &format!("{name}/Identity"));
                let out = unique(&mut self.value_names, name);
                self.nodes.push(NodeProto {
                    input: vec![value.to_owned()],
                    output: vec![out.clone()],
                    name: Some(node_name),
                    op_type: Some("Identity".into()),
                    domain: Some(String::new()),
                    ..Default::default()
                });
                out
            }
        };
        self.outputs.push(value_info(&renamed, DataType::Float, dims));
    }

    /// Adds an f32 initializer holding `t` as little-endian `raw_data`.
    pub fn initializer(&mut self, name: &str, t: &TensorData) -> String {
        let dims = t.shape.iter().map(|&d| i64_of(d)).collect();
        self.push_raw_f32(name, dims, f32_le_bytes(&t.data))
    }

    /// Adds the transpose of a 2-D tensor `[rows, cols]` as an f32 initializer
    /// `[cols, rows]` (PyTorch `Linear` weights `[out, in]` become MatMul's `[in, out]`).
    pub fn initializer_transposed(&mut self, name: &str, t: &TensorData) -> String {
        let (rows, cols) = match t.shape[..] {
            [r, c] => (r, c),
            _ => return self.initializer(name, t),
        };
        let mut bytes = Vec::with_capacity(t.data.len() * 4);
        for c in 0..cols {
            for r in 0..rows {
                let v = t.data.get(r * cols + c).copied().unwrap_or(0.0);
                bytes.extend_from_slice(&v.to_le_bytes());
            }
        }
        self.push_raw_f32(name, vec![i64_of(cols), i64_of(rows)], bytes)
    }

    fn push_raw_f32(&mut self, name: &str, dims: Vec<i64>, raw: Vec<u8>) -> String {
        let name = unique(&mut self.value_names, name);
        self.initializers.push(TensorProto {
            dims,
            data_type: Some(DataType::Float as i32),
            name: Some(name.clone()),
            raw_data: Some(raw),
            ..Default::default()
        });
        name
    }

    /// An int64 constant initializer `const.{purpose}` of shape `dims`, shared
    /// with any earlier constant of the same shape and values.
    pub fn const_i64(&mut self, purpose: &str, dims: &[usize], values: &[i64]) -> String {
        let key = format!("i64{dims:?}{values:?}");
        self.shared_const(key, purpose, |name| TensorProto {
            dims: dims.iter().map(|&d| i64_of(d)).collect(),
            data_type: Some(DataType::Int64 as i32),
            int64_data: values.to_vec(),
            name: Some(name),
            ..Default::default()
        })
    }

    /// A 1-D int64 constant (a shape, axes, starts, ...).
    pub fn const_ints(&mut self, purpose: &str, values: &[i64]) -> String {
        self.const_i64(purpose, &[values.len()], values)
    }

    /// A scalar (rank 0) f32 constant `const.{purpose}`, shared like [`Self::const_i64`].
    pub fn const_f32(&mut self, purpose: &str, v: f32) -> String {
        self.const_f32_tensor(purpose, &[], &[v])
    }

    /// An f32 constant `const.{purpose}` of shape `dims`, shared like [`Self::const_i64`].
    pub fn const_f32_tensor(&mut self, purpose: &str, dims: &[usize], values: &[f32]) -> String {
        let bits: Vec<u32> = values.iter().map(|v| v.to_bits()).collect();
        let key = format!("f32{dims:?}{bits:x?}");
        self.shared_const(key, purpose, |name| TensorProto {
            dims: dims.iter().map(|&d| i64_of(d)).collect(),
            data_type: Some(DataType::Float as i32),
            float_data: values.to_vec(),
            name: Some(name),
            ..Default::default()
        })
    }

    /// The constant initializer stored under `key` (type, shape and values),
    /// made by `make(name)` with a fresh `const.{purpose}` name the first time.
    fn shared_const(&mut self, key: String, purpose: &str, make: impl FnOnce(String) -> TensorProto) -> String {
        if let Some(name) = self.consts.get(&key) {
            return name.clone();
        }
        let name = unique(&mut self.value_names, &format!("{CONST_PREFIX}{purpose}"));
        self.initializers.push(make(name.clone()));
        self.consts.insert(key, name.clone());
        name
    }

    /// Appends a node `{scope}/{op}` of the default domain; returns its output.
    pub fn node(&mut self, op: &str, scope: &str, inputs: &[&str], attrs: &[Attr]) -> String {
        let name = unique(&mut self.node_names, &format!("{scope}/{op}"));
        let output = unique(&mut self.value_names, &format!("{name}:0"));
        self.nodes.push(NodeProto {
            input: inputs.iter().map(|s| (*s).to_owned()).collect(),
            output: vec![output.clone()],
            name: Some(name),
            op_type: Some(op.to_owned()),
            domain: Some(String::new()),
            attribute: attrs.iter().map(Attr::to_proto).collect(),
            ..Default::default()
        });
        output
    }

    /// The finished graph.
    pub fn finish(self, name: &str) -> GraphProto {
        GraphProto {
            node: self.nodes,
            name: Some(name.to_owned()),
            initializer: self.initializers,
            input: self.inputs,
            output: self.outputs,
            ..Default::default()
        }
    }

    // ---- one helper per operator ------------------------------------------

    /// 2-D `Conv`: square kernel `k`, stride `stride`, `pad` zeros on every side,
    /// no dilation, one group; `b` is the optional bias.
    #[allow(clippy::too_many_arguments)]
    pub fn conv(
        &mut self,
        scope: &str,
        x: &str,
        w: &str,
        b: Option<&str>,
        k: usize,
        stride: usize,
        pad: usize,
    ) -> String {
        let (k, stride, pad) = (i64_of(k), i64_of(stride), i64_of(pad));
        let attrs = [
            ints("dilations", &[1, 1]),
            int("group", 1),
            ints("kernel_shape", &[k, k]),
            ints("pads", &[pad, pad, pad, pad]),
            ints("strides", &[stride, stride]),
        ];
        match b {
            Some(b) => self.node("Conv", scope, &[x, w, b], &attrs),
            None => self.node("Conv", scope, &[x, w], &attrs),
        }
    }

    /// Inference-mode `BatchNormalization` over axis 1; `params` are scale, bias,
    /// running mean, running variance (the momentum attribute is unused at inference).
    pub fn batch_norm(&mut self, scope: &str, x: &str, params: [&str; 4], eps: f32) -> String {
        let [scale, bias, mean, var] = params;
        let attrs = [float("epsilon", eps), float("momentum", 0.9), int("training_mode", 0)];
        self.node("BatchNormalization", scope, &[x, scale, bias, mean, var], &attrs)
    }

    /// `Reshape` to a constant shape (`-1` allowed once; `allowzero` = 0).
    pub fn reshape(&mut self, scope: &str, x: &str, shape: &[i64]) -> String {
        let s = self.const_ints("shape", shape);
        self.node("Reshape", scope, &[x, &s], &[int("allowzero", 0)])
    }

    /// `Transpose` with an explicit permutation.
    pub fn transpose(&mut self, scope: &str, x: &str, perm: &[i64]) -> String {
        self.node("Transpose", scope, &[x], &[ints("perm", perm)])
    }

    /// `Concat` along `axis`.
    pub fn concat(&mut self, scope: &str, xs: &[&str], axis: i64) -> String {
        self.node("Concat", scope, xs, &[int("axis", axis)])
    }

    /// `Shape` of `x`, dimensions `start..end`.
    pub fn shape(&mut self, scope: &str, x: &str, start: i64, end: i64) -> String {
        self.node("Shape", scope, &[x], &[int("end", end), int("start", start)])
    }

    /// `Expand` (broadcast) `x` to the int64 shape tensor `shape`.
    pub fn expand(&mut self, scope: &str, x: &str, shape: &str) -> String {
        self.node("Expand", scope, &[x, shape], &[])
    }

    /// `Gather` of the single (scalar) `index` along `axis`: that axis disappears.
    pub fn gather_index(&mut self, scope: &str, x: &str, index: i64, axis: i64) -> String {
        let i = self.const_i64(&format!("index{index}"), &[], &[index]);
        self.gather_node(scope, x, &i, axis)
    }

    /// `Gather` of the 1-D constant `indices` (`const.{purpose}`) along `axis`:
    /// that axis becomes `indices.len()` long.
    pub fn gather(&mut self, scope: &str, x: &str, purpose: &str, indices: &[i64], axis: i64) -> String {
        let i = self.const_ints(purpose, indices);
        self.gather_node(scope, x, &i, axis)
    }

    /// The `Gather` node both helpers above write, with its indices tensor.
    fn gather_node(&mut self, scope: &str, x: &str, indices: &str, axis: i64) -> String {
        self.node("Gather", scope, &[x, indices], &[int("axis", axis)])
    }

    /// `Slice` of `x[start..end]` along `axis`, step 1.
    pub fn slice(&mut self, scope: &str, x: &str, axis: i64, start: i64, end: i64) -> String {
        let starts = self.const_ints("starts", &[start]);
        let ends = self.const_ints("ends", &[end]);
        let axes = self.const_ints("axes", &[axis]);
        let steps = self.const_ints("steps", &[1]);
        self.node("Slice", scope, &[x, &starts, &ends, &axes, &steps], &[])
    }

    /// Element-wise `Add`.
    pub fn add(&mut self, scope: &str, a: &str, b: &str) -> String {
        self.node("Add", scope, &[a, b], &[])
    }

    /// Element-wise `Mul`.
    pub fn mul(&mut self, scope: &str, a: &str, b: &str) -> String {
        self.node("Mul", scope, &[a, b], &[])
    }

    /// Element-wise `Div`.
    pub fn div(&mut self, scope: &str, a: &str, b: &str) -> String {
        self.node("Div", scope, &[a, b], &[])
    }

    /// `MatMul` (numpy semantics, batched).
    pub fn matmul(&mut self, scope: &str, a: &str, b: &str) -> String {
        self.node("MatMul", scope, &[a, b], &[])
    }

    /// `Einsum` with `equation`.
    pub fn einsum(&mut self, scope: &str, equation: &str, xs: &[&str]) -> String {
        self.node("Einsum", scope, xs, &[string("equation", equation)])
    }

    /// `Softmax` over `axis` (opset 13 semantics: that one axis).
    pub fn softmax(&mut self, scope: &str, x: &str, axis: i64) -> String {
        self.node("Softmax", scope, &[x], &[int("axis", axis)])
    }

    /// `LayerNormalization` over the last axis with scale and bias, f32 statistics.
    pub fn layer_norm(&mut self, scope: &str, x: &str, w: &str, b: &str, eps: f32) -> String {
        let attrs = [int("axis", -1), float("epsilon", eps), int("stash_type", DataType::Float as i64)];
        self.node("LayerNormalization", scope, &[x, w, b], &attrs)
    }

    /// `Erf`.
    pub fn erf(&mut self, scope: &str, x: &str) -> String {
        self.node("Erf", scope, &[x], &[])
    }

    /// `Relu`.
    pub fn relu(&mut self, scope: &str, x: &str) -> String {
        self.node("Relu", scope, &[x], &[])
    }

    /// `ReduceMean` over `axes` (opset 17: an attribute) with `keepdims`.
    pub fn reduce_mean(&mut self, scope: &str, x: &str, axes: &[i64], keepdims: bool) -> String {
        let attrs = [ints("axes", axes), int("keepdims", i64::from(keepdims))];
        self.node("ReduceMean", scope, &[x], &attrs)
    }

    // ---- composites ---------------------------------------------------------

    /// PyTorch `Linear` as `MatMul(x, {scope}.weight)` (+ `Add {scope}.bias`); the
    /// weight initializer already holds the transposed `[in, out]` matrix.
    pub fn linear(&mut self, scope: &str, x: &str, bias: bool) -> String {
        let w = format!("{scope}.weight");
        let y = self.matmul(scope, x, &w);
        if bias {
            let b = format!("{scope}.bias");
            self.add(scope, &y, &b)
        } else {
            y
        }
    }

    /// Exact GELU: `x * 0.5 * (1 + erf(x / sqrt(2)))`.
    pub fn gelu(&mut self, scope: &str, x: &str) -> String {
        let sqrt2 = self.const_f32("sqrt2", std::f32::consts::SQRT_2);
        let one = self.const_f32("one", 1.0);
        let half = self.const_f32("half", 0.5);
        let t = self.div(scope, x, &sqrt2);
        let t = self.erf(scope, &t);
        let t = self.add(scope, &t, &one);
        let t = self.mul(scope, x, &t);
        self.mul(scope, &t, &half)
    }
}
