//! Exponential moving average of the weights (Polyak averaging, timm's
//! `ModelEmaV2`): after every optimiser step `ema = d * ema + (1 - d) * w` for
//! every variable, BatchNorm running statistics included. The averaged weights
//! are what a run evaluates, checkpoints as `last`/`best` and exports; the raw
//! weights keep training. `resume.safetensors` stores the averages as `ema.<name>`.
//!
//! The decay warms up as `min(d, (1 + n) / (10 + n))` after `n` updates, so the
//! average is not dominated by the random initialisation in short runs.

use std::collections::BTreeMap;

use tch::{nn, Tensor};

use crate::run::checkpoint::EMA_PREFIX as PREFIX;

/// The averaged copy of a VarStore's variables.
#[derive(Debug)]
pub struct Ema {
    /// (live variable, its average), sorted by name.
    slots: Vec<(String, Tensor, Tensor)>,
    decay: f64,
    updates: u64,
}

impl Ema {
    /// Starts the average at the current weights.
    pub fn new(vs: &nn::VarStore, decay: f64) -> Self {
        let mut vars: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
        vars.sort_by(|a, b| a.0.cmp(&b.0));
        let slots = tch::no_grad(|| {
            vars.into_iter()
                .map(|(n, v)| {
                    let avg = v.detach().copy();
                    (n, v, avg)
                })
                .collect()
        });
        Self { slots, decay, updates: 0 }
    }

    /// The decay used by the next update.
    pub fn current_decay(&self) -> f64 {
        let n = self.updates as f64;
        self.decay.min((1.0 + n) / (10.0 + n))
    }

    /// Moves the average towards the current weights.
    pub fn update(&mut self) {
        let d = self.current_decay();
        tch::no_grad(|| {
            for (_, var, avg) in &mut self.slots {
                let _ = avg.lerp_(var, 1.0 - d);
            }
        });
        self.updates += 1;
    }

    /// Exchanges live and averaged values in place: call once to evaluate or
    /// save the average, and once more to resume training the raw weights.
    pub fn swap(&mut self) {
        tch::no_grad(|| {
            for (_, var, avg) in &mut self.slots {
                let tmp = var.detach().copy();
                var.copy_(avg);
                avg.copy_(&tmp);
            }
        });
    }

    /// The averages as `ema.<name>` tensors, plus `ema.updates`.
    pub fn state_tensors(&self) -> Vec<(String, Tensor)> {
        let mut out: Vec<(String, Tensor)> =
            self.slots.iter().map(|(n, _, avg)| (format!("{PREFIX}{n}"), avg.shallow_clone())).collect();
        out.push((format!("{PREFIX}updates"), Tensor::from_slice(&[self.updates as i64])));
        out
    }

    /// Restores what [`Ema::state_tensors`] saved; every variable must be there.
    pub fn load_state(&mut self, tensors: &BTreeMap<String, Tensor>) -> Result<(), String> {
        for (name, _, avg) in &mut self.slots {
            let key = format!("{PREFIX}{name}");
            let src = tensors.get(&key).ok_or_else(|| format!("weight average `{key}` is missing"))?;
            if src.size() != avg.size() {
                return Err(format!("weight average `{key}` has shape {:?}, expected {:?}", src.size(), avg.size()));
            }
            tch::no_grad(|| avg.copy_(src));
        }
        let updates = tensors.get(&format!("{PREFIX}updates")).ok_or("weight average `ema.updates` is missing")?;
        self.updates = updates.int64_value(&[0]).max(0) as u64;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn average_follows_the_formula_and_swap_round_trips() {
        let vs = nn::VarStore::new(tch::Device::Cpu);
        let mut w = vs.root().var("w", &[2], nn::Init::Const(0.0));
        let mut ema = Ema::new(&vs, 0.5);
        // Update 0 uses min(0.5, 1/10) = 0.1: avg = 0.1 * 0 + 0.9 * 10 = 9.
        tch::no_grad(|| w.copy_(&Tensor::from_slice(&[10.0f32, -10.0])));
        ema.update();
        // Update 1 uses min(0.5, 2/11) = 2/11: avg = 2/11 * 9 + 9/11 * 20.
        tch::no_grad(|| w.copy_(&Tensor::from_slice(&[20.0f32, -20.0])));
        ema.update();
        let expected = 2.0 / 11.0 * 9.0 + 9.0 / 11.0 * 20.0;
        ema.swap();
        let avg = Vec::<f32>::try_from(&w).unwrap();
        assert!((avg[0] - expected as f32).abs() < 1e-5 && (avg[1] + expected as f32).abs() < 1e-5, "{avg:?}");
        ema.swap();
        assert_eq!(Vec::<f32>::try_from(&w).unwrap(), vec![20.0, -20.0]);
        // The saved state restores the average and the update count.
        let saved: BTreeMap<String, Tensor> = ema.state_tensors().into_iter().collect();
        let mut other = Ema::new(&vs, 0.5);
        other.load_state(&saved).unwrap();
        assert_eq!(other.updates, 2);
        other.swap();
        assert!((Vec::<f32>::try_from(&w).unwrap()[0] - expected as f32).abs() < 1e-5);
    }
}
