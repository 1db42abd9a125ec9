//! Unit tests of the builder and the tensor lists (the end-to-end tests that
//! run exported files in tract are in `tests/onnx_export.rs`).

use prost::Message;

use super::builder::{int, GraphBuilder};
use super::expected_tensors;
use crate::config::{Variant, ViTConfig};
use crate::tensor::TensorData;

#[test]
fn names_are_unique_and_constants_shared() {
    let mut b = GraphBuilder::new();
    let x = b.input("x", &[]);
    let a = b.reshape("s", &x, &[-1, 4]);
    let c = b.reshape("s", &a, &[-1, 4]);
    let d = b.reshape("s", &c, &[-1, 2, 2]);
    let g = b.finish("g");
    let names: Vec<&str> = g.node.iter().map(|n| n.name()).collect();
    assert_eq!(names, ["s/Reshape", "s/Reshape_1", "s/Reshape_2"]);
    assert_eq!([a.as_str(), c.as_str(), d.as_str()], ["s/Reshape:0", "s/Reshape_1:0", "s/Reshape_2:0"]);
    let consts: Vec<&str> = g.initializer.iter().map(|t| t.name()).collect();
    assert_eq!(consts, ["const.shape", "const.shape_1"]);
    assert_eq!(g.node[1].input[1], "const.shape");
}

#[test]
fn linear_weights_are_transposed() {
    let mut b = GraphBuilder::new();
    let t = TensorData::new(vec![2, 3], vec![1., 2., 3., 4., 5., 6.]).unwrap();
    b.initializer_transposed("fc.weight", &t);
    let g = b.finish("g");
    let init = &g.initializer[0];
    assert_eq!(init.dims, [3, 2]);
    let values: Vec<f32> = init.raw_data().chunks(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
    assert_eq!(values, [1., 4., 2., 5., 3., 6.]);
}

#[test]
fn zero_valued_attributes_are_on_the_wire() {
    // proto2 explicit presence: `i = 0` is encoded (tag 3, varint -> 0x18 0x00).
    let bytes = int("axis", 0).to_proto().encode_to_vec();
    assert!(bytes.windows(2).any(|w| w == [0x18, 0x00]), "{bytes:?}");
}

#[test]
fn expected_tensor_counts() {
    let cfg = ViTConfig { depth: 2, num_classes: 3, ..Default::default() };
    // 4 embedding + 12 per block (qkv bias on) + 2 norm + 2 head.
    assert_eq!(expected_tensors(&cfg).len(), 4 + 2 * 12 + 2 + 2);
    let cfg = ViTConfig { qkv_bias: false, ..cfg };
    assert_eq!(expected_tensors(&cfg).len(), 4 + 2 * 11 + 2 + 2);
    let cfg = ViTConfig { variant: Variant::Dlstudio, num_heads: 2, ..cfg };
    let t = expected_tensors(&cfg);
    // 4 embedding + per encoder (4 norm + 6 per head + 4 FFN) + 2 head.
    assert_eq!(t.len(), 4 + 2 * (4 + 2 * 6 + 4) + 2);
    let (l, e, d) = (cfg.num_tokens(), cfg.embed_dim, cfg.head_dim());
    let find = |n: &str| t.iter().find(|(name, _)| name == n).map(|(_, s)| s.clone());
    let wq = "encoder.basic_encoder_arr.1.self_attention_layer.attention_heads_arr.1.WQ.weight";
    assert_eq!(find(wq), Some(vec![l * d, l * d]));
    assert_eq!(find("encoder.basic_encoder_arr.0.W1.weight"), Some(vec![2 * l * e, l * e]));
    assert_eq!(find("encoder.basic_encoder_arr.0.W2.bias"), Some(vec![l * e]));
}
