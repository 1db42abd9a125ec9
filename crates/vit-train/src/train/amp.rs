//! Mixed-precision training (`train.precision`): an autocast guard for the
//! forward pass (CPU or CUDA, through the C++ shim since tch only binds CUDA's)
//! and the dynamic loss scaler fp16 needs so small gradients do not flush to
//! zero. Weights, gradients and optimiser state stay float32 throughout.

use std::ffi::c_int;

use tch::{Device, Tensor};
use vit::config::Precision;

use crate::shim::{check, ffi, ShimError};

/// A precision the device cannot train in, or autocast failing to switch.
#[derive(Debug, thiserror::Error)]
pub enum AmpError {
    /// fp16 autocast is CUDA-only here: CPU float16 kernels are slow and need loss scaling.
    #[error("precision fp16 needs a CUDA device; on the CPU use bf16 or fp32")]
    Fp16OnCpu,
    /// libtorch refused to switch autocast.
    #[error("switching autocast")]
    Shim(#[source] ShimError),
}

/// Checks that `precision` can train on `device` (fp16 is CUDA-only).
pub fn check_supported(precision: Precision, device: Device) -> Result<(), AmpError> {
    match (precision, device) {
        (Precision::Fp16, Device::Cpu) => Err(AmpError::Fp16OnCpu),
        _ => Ok(()),
    }
}

/// Autocast is on for `device` while this lives (see [`Autocast::enter`]).
#[derive(Debug)]
pub struct Autocast {
    cuda: bool,
}

impl Autocast {
    /// Turns autocast on for `device` at `precision`'s dtype; `None` for fp32.
    pub fn enter(precision: Precision, device: Device) -> Result<Option<Self>, AmpError> {
        check_supported(precision, device)?;
        if precision == Precision::Fp32 {
            return Ok(None);
        }
        let cuda = device != Device::Cpu;
        let fp16 = precision == Precision::Fp16;
        // SAFETY: plain integers in; the returned error string is owned and freed by `check`.
        let err = unsafe { ffi::vit_autocast_set(c_int::from(cuda), 1, c_int::from(fp16)) };
        check("autocast on", err).map_err(AmpError::Shim)?;
        Ok(Some(Self { cuda }))
    }
}

impl Drop for Autocast {
    fn drop(&mut self) {
        // SAFETY: as in `enter`.
        let err = unsafe { ffi::vit_autocast_set(c_int::from(self.cuda), 0, 0) };
        if let Err(e) = check("autocast off", err) {
            log::warn!("{e}");
        }
    }
}

/// Dynamic loss scaling as `torch.amp.GradScaler` does it: the loss is
/// multiplied by `scale` before backward; a step whose unscaled gradients hold
/// inf/NaN is skipped and the scale backs off; after `growth_interval` clean
/// steps in a row the scale grows.
#[derive(Debug, Clone, PartialEq)]
pub struct LossScaler {
    /// Current loss multiplier.
    pub scale: f64,
    /// Clean steps since the last growth or backoff.
    pub growth_tracker: u64,
    /// Factor applied after `growth_interval` clean steps.
    pub growth_factor: f64,
    /// Factor applied after a step with inf/NaN gradients.
    pub backoff_factor: f64,
    /// Clean steps between growths.
    pub growth_interval: u64,
}

/// Checkpoint key of the scale (resume files).
pub const SCALE_TENSOR: &str = "amp.scale";
/// Checkpoint key of the growth tracker (resume files).
pub const TRACKER_TENSOR: &str = "amp.growth_tracker";

impl Default for LossScaler {
    /// GradScaler's defaults: scale 2^16, x2 every 2000 clean steps, x0.5 on overflow.
    fn default() -> Self {
        Self { scale: 65536.0, growth_tracker: 0, growth_factor: 2.0, backoff_factor: 0.5, growth_interval: 2000 }
    }
}

impl LossScaler {
    /// Divides every gradient by the scale in place; true when any of them then
    /// holds an inf or NaN (the step must be skipped). This reads one value back
    /// from the device every step (through [`host_read`](crate::train::host_read)).
    pub fn unscale(&self, grads: &[Tensor]) -> bool {
        let inv = 1.0 / self.scale;
        let mut bad: Option<Tensor> = None;
        for g in grads {
            let _ = g.shallow_clone().g_mul_scalar_(inv);
            let g_bad = g.isfinite().logical_not().any();
            bad = Some(match bad {
                Some(b) => b.logical_or(&g_bad),
                None => g_bad,
            });
        }
        // The one host read per step left in the training path: whether to skip this update is decided on the host.
        bad.is_some_and(|b| crate::train::host_read::read_f64(&b, "fp16 loss scaler: gradients finite?") != 0.0)
    }

    /// Updates the scale after a step: backoff (and a reset of the clean-step
    /// count) when `found_inf`, else growth once `growth_interval` clean steps are reached.
    pub fn update(&mut self, found_inf: bool) {
        if found_inf {
            self.scale *= self.backoff_factor;
            self.growth_tracker = 0;
        } else {
            self.growth_tracker += 1;
            if self.growth_tracker >= self.growth_interval {
                self.scale *= self.growth_factor;
                self.growth_tracker = 0;
            }
        }
    }

    /// The scaler's state for a resume file.
    pub fn state_tensors(&self) -> Vec<(String, Tensor)> {
        vec![
            (SCALE_TENSOR.into(), Tensor::from_slice(&[self.scale])),
            (TRACKER_TENSOR.into(), Tensor::from_slice(&[self.growth_tracker as i64])),
        ]
    }

    /// Restores [`state_tensors`](Self::state_tensors); a resume file without them
    /// (written by an fp32/bf16 run) keeps the fresh state.
    pub fn load_state(&mut self, tensors: &std::collections::BTreeMap<String, Tensor>) {
        if let Some(s) = tensors.get(SCALE_TENSOR) {
            self.scale = s.double_value(&[0]);
        }
        if let Some(t) = tensors.get(TRACKER_TENSOR) {
            self.growth_tracker = t.int64_value(&[0]) as u64;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Kind;

    #[test]
    fn overflow_backs_off_and_resets_the_growth_count() {
        let mut s = LossScaler { growth_interval: 3, ..Default::default() };
        s.update(false);
        s.update(false);
        assert_eq!((s.scale, s.growth_tracker), (65536.0, 2));
        s.update(true);
        assert_eq!((s.scale, s.growth_tracker), (32768.0, 0));
    }

    #[test]
    fn clean_steps_grow_the_scale_every_interval() {
        let mut s = LossScaler { growth_interval: 3, ..Default::default() };
        for _ in 0..3 {
            s.update(false);
        }
        assert_eq!((s.scale, s.growth_tracker), (131072.0, 0));
        for _ in 0..2 {
            s.update(false);
        }
        assert_eq!(s.scale, 131072.0, "no growth before the next interval");
    }

    #[test]
    fn unscale_divides_and_flags_inf_and_nan() {
        let s = LossScaler { scale: 4.0, ..Default::default() };
        let g = Tensor::from_slice(&[4.0f32, -8.0]);
        assert!(!s.unscale(std::slice::from_ref(&g)));
        assert_eq!(Vec::<f32>::try_from(&g).unwrap(), vec![1.0, -2.0]);
        for bad in [f32::INFINITY, f32::NAN] {
            let grads = [Tensor::from_slice(&[1.0f32]), Tensor::from_slice(&[bad, 0.0])];
            assert!(s.unscale(&grads), "{bad} must skip the step");
        }
    }

    #[test]
    fn state_round_trips_through_resume_tensors() {
        let s = LossScaler { scale: 512.0, growth_tracker: 17, ..Default::default() };
        let mut back = LossScaler::default();
        back.load_state(&s.state_tensors().into_iter().collect());
        assert_eq!(back, s);
    }

    #[test]
    fn fp16_is_refused_on_the_cpu_and_bf16_autocasts_matmuls() {
        assert!(matches!(Autocast::enter(Precision::Fp16, Device::Cpu), Err(AmpError::Fp16OnCpu)));
        let a = Tensor::ones([2, 2], (Kind::Float, Device::Cpu));
        {
            let _on = Autocast::enter(Precision::Bf16, Device::Cpu).unwrap();
            assert_eq!(a.matmul(&a).kind(), Kind::BFloat16);
        }
        assert_eq!(a.matmul(&a).kind(), Kind::Float, "autocast must end with the guard");
    }
}
