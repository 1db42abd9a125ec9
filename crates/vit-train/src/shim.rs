//! Safe Rust over the C++ shim of `csrc/` (ATen operations tch does not bind):
//! every call hands over `at::Tensor` pointers of live tch tensors and turns a
//! C++ exception into a [`ShimError`]. The raw `extern "C"` declarations mirror
//! `csrc/vit_shim.h` and stay private to this module.

use std::ffi::{c_char, c_int, CStr};

use tch::Tensor;

/// An error raised by libtorch inside the shim (the C++ exception's message).
#[derive(Debug, thiserror::Error)]
#[error("{op}: {message}")]
pub struct ShimError {
    /// The shim operation that failed.
    pub op: &'static str,
    /// libtorch's message.
    pub message: String,
}

pub(crate) mod ffi {
    use std::ffi::{c_char, c_int};

    /// `at::Tensor`, only ever behind a pointer.
    #[repr(C)]
    pub struct AtTensor {
        _private: [u8; 0],
    }

    /// `vit_graph` of graph.cpp, only ever behind a pointer.
    #[repr(C)]
    pub struct VitGraph {
        _private: [u8; 0],
    }

    extern "C" {
        pub fn vit_shim_free_error(message: *mut c_char);
        pub fn vit_autocast_set(cuda: c_int, enabled: c_int, fp16: c_int) -> *mut c_char;
        pub fn vit_channels_last(x: *mut AtTensor, out: *mut *mut AtTensor) -> *mut c_char;
        pub fn vit_graph_new(device: c_int, out: *mut *mut VitGraph) -> *mut c_char;
        pub fn vit_graph_side_stream(g: *mut VitGraph, enter: c_int) -> *mut c_char;
        pub fn vit_graph_capture(g: *mut VitGraph, begin: c_int) -> *mut c_char;
        pub fn vit_graph_replay(g: *mut VitGraph) -> *mut c_char;
        pub fn vit_graph_free(g: *mut VitGraph);
        #[allow(clippy::too_many_arguments)] // mirrors the C API one to one
        pub fn vit_fused_adam_step(
            params: *const *mut AtTensor,
            grads: *const *mut AtTensor,
            exp_avgs: *const *mut AtTensor,
            exp_avg_sqs: *const *mut AtTensor,
            n: usize,
            step: *mut AtTensor,
            lr: f64,
            beta1: f64,
            beta2: f64,
            weight_decay: f64,
            eps: f64,
            decoupled: c_int,
            lr_tensor: *mut AtTensor,
        ) -> *mut c_char;
    }
}

/// Takes ownership of a shim error string (NULL: success).
pub(crate) fn check(op: &'static str, err: *mut c_char) -> Result<(), ShimError> {
    if err.is_null() {
        return Ok(());
    }
    // SAFETY: a non-NULL result is a NUL-terminated string the shim allocated; it is freed once, here.
    let message = unsafe { CStr::from_ptr(err) }.to_string_lossy().into_owned();
    unsafe { ffi::vit_shim_free_error(err) };
    Err(ShimError { op, message })
}

fn ptrs(tensors: &[&Tensor]) -> Vec<*mut ffi::AtTensor> {
    tensors.iter().map(|t| t.as_ptr() as *mut ffi::AtTensor).collect()
}

/// Hyper-parameters of one fused Adam step.
#[derive(Debug, Clone, Copy)]
pub struct AdamStep {
    /// Learning rate.
    pub lr: f64,
    /// Adam betas.
    pub betas: (f64, f64),
    /// Weight decay of this parameter group.
    pub weight_decay: f64,
    /// Adam epsilon.
    pub eps: f64,
    /// AdamW (decay applied to the weights) rather than Adam (L2 decay added to the gradient).
    pub decoupled: bool,
}

/// One Adam/AdamW update of `params` in place (`at::_fused_adam[w]_`), with their
/// `grads` and moments `exp_avgs` / `exp_avg_sqs`; `step` is a float tensor on the
/// parameters' device holding the 1-based step count. All slices have one entry per parameter.
pub fn adam_step(
    params: &[&Tensor],
    grads: &[&Tensor],
    exp_avgs: &[&Tensor],
    exp_avg_sqs: &[&Tensor],
    step: &Tensor,
    hp: AdamStep,
) -> Result<(), ShimError> {
    let n = params.len();
    if grads.len() != n || exp_avgs.len() != n || exp_avg_sqs.len() != n {
        return Err(ShimError { op: "fused adam", message: "lists of different lengths".into() });
    }
    let (p, g, m, v) = (ptrs(params), ptrs(grads), ptrs(exp_avgs), ptrs(exp_avg_sqs));
    // SAFETY: every pointer is a live at::Tensor owned by the caller's tch tensors for the whole call.
    let err = unsafe {
        ffi::vit_fused_adam_step(
            p.as_ptr(),
            g.as_ptr(),
            m.as_ptr(),
            v.as_ptr(),
            n,
            step.as_ptr() as *mut ffi::AtTensor,
            hp.lr,
            hp.betas.0,
            hp.betas.1,
            hp.weight_decay,
            hp.eps,
            c_int::from(hp.decoupled),
            std::ptr::null_mut(),
        )
    };
    check("fused adam", err)
}

/// [`adam_step`] with the learning rate read from `lr`, a 0-dim tensor on the
/// parameters' device (float32 on CUDA), instead of `hp.lr`: with `step` on the
/// device too, the update needs no host value and can be captured in a CUDA graph.
pub fn adam_step_tensor_lr(
    params: &[&Tensor],
    grads: &[&Tensor],
    exp_avgs: &[&Tensor],
    exp_avg_sqs: &[&Tensor],
    step: &Tensor,
    lr: &Tensor,
    hp: AdamStep,
) -> Result<(), ShimError> {
    let n = params.len();
    if grads.len() != n || exp_avgs.len() != n || exp_avg_sqs.len() != n {
        return Err(ShimError { op: "fused adam", message: "lists of different lengths".into() });
    }
    let (p, g, m, v) = (ptrs(params), ptrs(grads), ptrs(exp_avgs), ptrs(exp_avg_sqs));
    // SAFETY: every pointer is a live at::Tensor owned by the caller's tch tensors for the whole call.
    let err = unsafe {
        ffi::vit_fused_adam_step(
            p.as_ptr(),
            g.as_ptr(),
            m.as_ptr(),
            v.as_ptr(),
            n,
            step.as_ptr() as *mut ffi::AtTensor,
            0.0,
            hp.betas.0,
            hp.betas.1,
            hp.weight_decay,
            hp.eps,
            c_int::from(hp.decoupled),
            lr.as_ptr() as *mut ffi::AtTensor,
        )
    };
    check("fused adam", err)
}

/// `x` (4-D) copied into the channels-last memory format, differentiably: the
/// same values, laid out NHWC, so convolutions use their NHWC kernels.
pub fn channels_last(x: &Tensor) -> Result<Tensor, ShimError> {
    let mut out: *mut ffi::AtTensor = std::ptr::null_mut();
    // SAFETY: `x` is a live at::Tensor for the whole call; `out` is written only on success.
    let err = unsafe { ffi::vit_channels_last(x.as_ptr() as *mut ffi::AtTensor, &mut out) };
    check("channels last", err)?;
    // SAFETY: on success `out` is a new at::Tensor the caller owns, as tch's own tensors.
    Ok(unsafe { Tensor::from_ptr(out as *mut torch_sys::C_tensor) })
}

/// A CUDA graph of one training step (`at::cuda::CUDAGraph` with a side stream;
/// see csrc/graph.cpp). Work between [`CudaGraph::capture_begin`] and
/// [`CudaGraph::capture_end`] is recorded, not run; [`CudaGraph::replay`] runs it.
#[derive(Debug)]
pub struct CudaGraph {
    raw: *mut ffi::VitGraph,
}

impl CudaGraph {
    /// An empty graph on CUDA device `device` (an error in builds without the CUDA headers).
    pub fn new(device: usize) -> Result<Self, ShimError> {
        let mut raw = std::ptr::null_mut();
        // SAFETY: `raw` is written only on success.
        check("cuda graph", unsafe { ffi::vit_graph_new(device as c_int, &mut raw) })?;
        Ok(Self { raw })
    }

    /// Sends later work to the graph's side stream (`true`) or back to the previous stream (`false`).
    pub fn side_stream(&mut self, enter: bool) -> Result<(), ShimError> {
        // SAFETY: `raw` is a live graph owned by self.
        check("cuda graph stream", unsafe { ffi::vit_graph_side_stream(self.raw, c_int::from(enter)) })
    }

    /// Waits for the device, then records the side stream's work instead of running it.
    pub fn capture_begin(&mut self) -> Result<(), ShimError> {
        // SAFETY: as above.
        check("cuda graph capture", unsafe { ffi::vit_graph_capture(self.raw, 1) })
    }

    /// Ends the recording and instantiates the graph.
    pub fn capture_end(&mut self) -> Result<(), ShimError> {
        // SAFETY: as above.
        check("cuda graph capture", unsafe { ffi::vit_graph_capture(self.raw, 0) })
    }

    /// Runs the recorded work again on the current stream.
    pub fn replay(&mut self) -> Result<(), ShimError> {
        // SAFETY: as above.
        check("cuda graph replay", unsafe { ffi::vit_graph_replay(self.raw) })
    }
}

impl Drop for CudaGraph {
    fn drop(&mut self) {
        // SAFETY: `raw` came from vit_graph_new and is freed once, here.
        unsafe { ffi::vit_graph_free(self.raw) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn libtorch_errors_come_back_as_rust_errors() {
        // Moments of the wrong shape: ATen throws, the shim must not abort.
        let p = Tensor::zeros([3], (tch::Kind::Float, tch::Device::Cpu));
        let g = p.ones_like();
        let bad = Tensor::zeros([5], (tch::Kind::Float, tch::Device::Cpu));
        let step = Tensor::from_slice(&[1.0f32]).reshape([] as [i64; 0]);
        let hp = AdamStep { lr: 0.1, betas: (0.9, 0.999), weight_decay: 0.0, eps: 1e-8, decoupled: true };
        let err = adam_step(&[&p], &[&g], &[&bad], &[&bad], &step, hp).expect_err("shapes differ");
        assert!(err.to_string().starts_with("fused adam: "), "{err}");
    }
}
