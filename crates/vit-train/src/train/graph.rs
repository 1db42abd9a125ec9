//! `fit --cuda-graph` (`train.cuda_graph`): the training step recorded once as
//! a CUDA graph and replayed for every full batch, so its ~1,000 kernel launches
//! cost one. The recipe of PyTorch's "CUDA graphs in C++": a few eager steps on
//! a side stream first (autograd and the allocator settle), then zero_grad,
//! forward, loss, backward, clipping, the capturable optimiser and the loss
//! tally are captured on static input tensors; each later step copies its batch
//! into them and replays. The step reads no device value on the host, which
//! capture requires. The weight average is not captured (its decay warms up
//! with a host counter) and runs eagerly after each replay; the last, smaller
//! batch of an epoch runs eagerly too. Anything that cannot be captured falls
//! back to eager training with one warning.

use tch::{Device, Tensor};
use vit::config::{Precision, TrainConfig};

use crate::dist::DistError;
use crate::shim::{CudaGraph, ShimError};

/// Eager steps on the side stream before capture, as PyTorch's examples do.
pub const WARMUP_STEPS: usize = 3;

/// Why `train.cuda_graph` cannot be used here (then training is eager), or `None`.
pub fn refusal(t: &TrainConfig, device: Device, distributed: bool) -> Option<String> {
    if !matches!(device, Device::Cuda(_)) {
        return Some("it needs a CUDA device, and this run is on the CPU".into());
    }
    if t.precision == Precision::Fp16 {
        return Some("fp16's loss scaler reads the device every step to decide whether to skip it; use bf16".into());
    }
    if t.mixup_alpha > 0.0 || t.cutmix_alpha > 0.0 {
        return Some("mixup and CutMix weigh each batch's loss by a new host value".into());
    }
    if distributed {
        return Some("gradients are all-reduced by the process group outside the graph".into());
    }
    None
}

/// A step that failed: in the step's own work, or in the graph machinery (then train eagerly).
#[derive(Debug)]
pub enum GraphFailure {
    /// The step itself failed (as an eager step would).
    Step(DistError),
    /// Capture or replay failed; nothing of this step ran.
    Graph(String),
}

impl From<ShimError> for GraphFailure {
    fn from(e: ShimError) -> Self {
        Self::Graph(e.to_string())
    }
}

/// Warm-up, capture and replay of one trainer's step.
#[derive(Debug)]
pub struct StepGraph {
    graph: CudaGraph,
    /// The static inputs the captured step reads (set at capture).
    inputs: Option<(Tensor, Tensor)>,
    warmups_left: usize,
}

impl StepGraph {
    /// A graph on CUDA device `index`, not captured yet.
    pub fn new(index: usize) -> Result<Self, ShimError> {
        Ok(Self { graph: CudaGraph::new(index)?, inputs: None, warmups_left: WARMUP_STEPS })
    }

    /// True once the step is captured: later calls of [`run`](Self::run) replay it.
    pub fn captured(&self) -> bool {
        self.inputs.is_some()
    }

    /// One step of the device batch `x`, `y`: eagerly on the side stream during
    /// warm-up, captured then replayed once, or replayed. `body` runs the step
    /// (everything captured) on the inputs it is given.
    pub fn run(
        &mut self,
        x: &Tensor,
        y: &Tensor,
        mut body: impl FnMut(&Tensor, &Tensor) -> Result<(), DistError>,
    ) -> Result<(), GraphFailure> {
        if let Some((sx, sy)) = &mut self.inputs {
            sx.copy_(x);
            sy.copy_(y);
            return Ok(self.graph.replay()?);
        }
        self.graph.side_stream(true)?;
        let result = if self.warmups_left > 0 {
            self.warmups_left -= 1;
            body(x, y).map_err(GraphFailure::Step)
        } else {
            self.capture(x, y, &mut body)
        };
        self.graph.side_stream(false)?;
        result?;
        if self.captured() {
            // Capture records without running: run the captured step once for this batch.
            self.graph.replay()?;
        }
        Ok(())
    }

    fn capture(
        &mut self,
        x: &Tensor,
        y: &Tensor,
        body: &mut impl FnMut(&Tensor, &Tensor) -> Result<(), DistError>,
    ) -> Result<(), GraphFailure> {
        let (sx, sy) = (x.copy(), y.copy());
        self.graph.capture_begin()?;
        // A libtorch error inside capture panics in tch's infallible calls: catch it so it ends the capture.
        let ran = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| body(&sx, &sy)));
        let ended = self.graph.capture_end();
        match ran {
            Ok(Ok(())) => ended?,
            Ok(Err(e)) => return Err(GraphFailure::Step(e)),
            Err(panic) => {
                let what = panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_else(|| "a panic".into());
                return Err(GraphFailure::Graph(format!("capturing the step failed: {what}")));
            }
        }
        self.inputs = Some((sx, sy));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn graphs_are_refused_on_the_cpu_with_fp16_mixup_or_ranks() {
        let t = TrainConfig::default();
        assert!(refusal(&t, Device::Cpu, false).unwrap().contains("needs a CUDA device"));
        assert!(refusal(&t, Device::Cuda(0), false).is_none());
        let fp16 = TrainConfig { precision: Precision::Fp16, ..Default::default() };
        assert!(refusal(&fp16, Device::Cuda(0), false).unwrap().contains("fp16"));
        let mix = TrainConfig { mixup_alpha: 0.2, ..Default::default() };
        assert!(refusal(&mix, Device::Cuda(0), false).unwrap().contains("mixup"));
        assert!(refusal(&t, Device::Cuda(0), true).unwrap().contains("process group"));
    }
}
