//! A plain f32 tensor (shape + row-major data) for handing weights from the
//! trainer to the ONNX writer without any libtorch type in the light crate.

use std::collections::BTreeMap;

/// Row-major f32 tensor.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorData {
    /// Dimensions, outermost first.
    pub shape: Vec<usize>,
    /// `shape.iter().product()` values.
    pub data: Vec<f32>,
}

impl TensorData {
    /// A tensor, checking that `data` fills `shape`.
    pub fn new(shape: Vec<usize>, data: Vec<f32>) -> Option<Self> {
        (shape.iter().product::<usize>() == data.len()).then_some(Self { shape, data })
    }

    /// Number of elements.
    pub fn numel(&self) -> usize {
        self.data.len()
    }
}

/// Weights by PyTorch state-dict name (sorted, so iteration is deterministic).
pub type NamedTensors = BTreeMap<String, TensorData>;
