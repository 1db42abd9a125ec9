//! The training loss kept on the device: each step adds its loss to the
//! current log window and to the epoch's sum, and raises a flag when the loss
//! is not finite, without reading anything back. The host reads the window
//! (and the flag) at `log_every` points and the epoch's sum once at its end,
//! through [`host_read`], so a GPU step never waits for the device.
//! The sums are f64 and added in the same order as the host sums they
//! replace, so the logged values are the same to the bit.

use tch::{Device, Kind, Tensor};

use crate::train::host_read;

/// What a read of the window found.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum WindowRead {
    /// Every loss since the last read was finite; their mean.
    Mean(f64),
    /// Some loss since the last read was NaN or infinite.
    NonFinite,
}

/// Loss sums of one epoch on the device.
#[derive(Debug)]
pub struct LossTally {
    /// [window sum of step losses, epoch sum of loss x images, non-finite flag (0 or 1)].
    sums: Tensor,
    window_steps: usize,
}

impl LossTally {
    /// Zeroed sums on `device`.
    pub fn new(device: Device) -> Self {
        Self { sums: Tensor::zeros([3], (Kind::Double, device)), window_steps: 0 }
    }

    /// Starts a new epoch: every sum and the flag back to zero, in place (a
    /// captured graph keeps writing to the same memory).
    pub fn reset(&mut self) {
        let _ = self.sums.zero_();
        self.window_steps = 0;
    }

    /// Adds the loss of a step on `images` images (`loss`: one element on the
    /// device); no host read. Only device work, so it can be part of a captured step.
    pub fn add_on_device(&mut self, loss: &Tensor, images: usize) {
        tch::no_grad(|| {
            let l = loss.detach().reshape([1]).to_kind(Kind::Double);
            let bad = l.isfinite().logical_not().to_kind(Kind::Double);
            // One in-place add of [l, l * n, bad]; the flag saturates at 1 below.
            let delta = Tensor::cat(&[&l, &(&l * images as f64), &bad], 0);
            let _ = self.sums.g_add_(&delta);
            let mut flag = self.sums.narrow(0, 2, 1);
            let _ = flag.clamp_max_(1.0);
        });
    }

    /// Counts one more step in the current window (host bookkeeping only).
    pub fn count_step(&mut self) {
        self.window_steps += 1;
    }

    /// One host read: the mean loss of the window (then started anew) or that a loss was not finite.
    pub fn read_window(&mut self) -> WindowRead {
        let v = host_read::read_f64s(&self.sums, "training loss at a log_every point");
        let steps = std::mem::take(&mut self.window_steps).max(1);
        tch::no_grad(|| {
            let _ = self.sums.narrow(0, 0, 1).zero_();
        });
        if v[2] != 0.0 {
            return WindowRead::NonFinite;
        }
        WindowRead::Mean(v[0] / steps as f64)
    }

    /// One host read at the epoch's end: the sum of loss x images, or `None`
    /// when a loss since the last check was not finite.
    pub fn read_epoch(&self) -> Option<f64> {
        let v = host_read::read_f64s(&self.sums, "training loss at the epoch end");
        (v[2] == 0.0).then_some(v[1])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_match_the_host_and_a_nan_raises_the_flag() {
        let mut t = LossTally::new(Device::Cpu);
        let losses = [0.7f32, 0.25, 1.125];
        let (mut window, mut epoch) = (0.0f64, 0.0f64);
        for &l in &losses {
            t.add_on_device(&Tensor::from_slice(&[l]), 4);
            t.count_step();
            (window, epoch) = (window + f64::from(l), epoch + f64::from(l) * 4.0);
        }
        let before = host_read::count();
        assert_eq!(t.read_window(), WindowRead::Mean(window / 3.0));
        assert_eq!(t.read_epoch(), Some(epoch));
        assert_eq!(host_read::count() - before, 2);
        for bad in [f32::NAN, f32::INFINITY, f32::NAN] {
            t.add_on_device(&Tensor::from_slice(&[bad]), 4);
        }
        assert_eq!(t.read_window(), WindowRead::NonFinite);
        assert_eq!(t.read_epoch(), None);
        t.reset();
        assert_eq!(t.read_epoch(), Some(0.0));
    }
}
