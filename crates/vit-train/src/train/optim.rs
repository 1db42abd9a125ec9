//! Adam / AdamW written out on tch tensors (as `torch.optim.Adam[W]`), so the
//! moment estimates are plain named tensors that checkpoints save and `--resume`
//! restores exactly. Norm weights, biases and the class/position tokens get no
//! weight decay (timm's `param_groups_weight_decay`). Fine-tuning options
//! ([`Finetune`](crate::model::finetune::Finetune)) freeze the backbone (frozen tensors get no state at all) or
//! scale each tensor's learning rate by its depth (timm's
//! `param_groups_layer_decay`).

use std::collections::BTreeMap;

use tch::{nn, Tensor};
use vit::config::{Optimizer, TrainConfig};

use crate::model::finetune::is_head;
use crate::shim::{self, ShimError};

/// One parameter and its Adam state.
#[derive(Debug)]
struct Slot {
    param: Tensor,
    m: Tensor,
    v: Tensor,
    /// Scratch of the parameter's shape: the update allocates nothing per step
    /// (large per-step temporaries cost more than the arithmetic on the CPU).
    buf: Tensor,
    decay: bool,
    /// Multiplies the learning rate (`--layer-decay`; 1 otherwise).
    lr_scale: f64,
}

/// Adam or AdamW over a VarStore's trainable variables.
#[derive(Debug)]
pub struct Adam {
    slots: BTreeMap<String, Slot>,
    kind: Optimizer,
    betas: (f64, f64),
    eps: f64,
    weight_decay: f64,
    /// Steps taken so far (bias correction uses it).
    pub step: i64,
    /// `train.fused_optimizer`: one fused kernel per parameter group; the step
    /// count as a float tensor on the parameters' device, as the kernel reads it.
    fused: Option<Tensor>,
    /// The learning rate of the next update (see [`Adam::set_lr`]).
    lr: f64,
    /// Capturable mode: learning rates and step count live on the device.
    on_device: Option<OnDevice>,
}

/// What makes the fused update capturable (CUDA graphs) and free of host
/// values: the kernel reads the step count and the learning rate from device
/// tensors, the step count is incremented on the device, and a new learning
/// rate is a `fill_` outside the step.
#[derive(Debug)]
struct OnDevice {
    /// 1-based step count of the last update (float, as the kernel reads it).
    steps: Tensor,
    /// One learning-rate tensor per lr scale (`--layer-decay` groups), keyed by the scale's bits.
    lrs: BTreeMap<u64, Tensor>,
}

/// True for tensors that must not be decayed: 1-D (norms, biases) and tokens.
pub fn is_no_decay(name: &str, shape: &[i64]) -> bool {
    shape.len() <= 1 || name.ends_with("cls_token") || name.ends_with("pos_embed")
}

impl Adam {
    /// Fresh state (zero moments) for every trainable variable of `vs`.
    pub fn new(vs: &nn::VarStore, cfg: &TrainConfig) -> Self {
        Self::with_lr_scales(vs, cfg, |_| 1.0)
    }

    /// [`Adam::new`] with the learning rate of each variable multiplied by
    /// `lr_scale(name)`. Variables that do not require gradients (frozen by
    /// [`freeze_backbone`]) get no state, so no update and no weight decay.
    pub fn with_lr_scales(vs: &nn::VarStore, cfg: &TrainConfig, lr_scale: impl Fn(&str) -> f64) -> Self {
        let slots = vs
            .variables()
            .into_iter()
            .filter(|(_, t)| t.requires_grad())
            .map(|(name, param)| {
                let decay = !is_no_decay(&name, &param.size());
                let (m, v, buf) = (param.zeros_like(), param.zeros_like(), param.zeros_like());
                let lr_scale = lr_scale(&name);
                (name, Slot { param, m, v, buf, decay, lr_scale })
            })
            .collect();
        let device = vs.device();
        let fused = cfg.fused_optimizer.then(|| Tensor::zeros([], (tch::Kind::Float, device)));
        Self {
            slots,
            kind: cfg.optimizer,
            betas: cfg.betas,
            eps: cfg.eps,
            weight_decay: cfg.weight_decay,
            step: 0,
            fused,
            lr: cfg.lr,
            on_device: None,
        }
    }

    /// Makes the update capturable: the fused kernel (turned on if it was not)
    /// with the step count and learning rate held in device tensors, so an
    /// update reads and writes no host value and can be replayed from a CUDA
    /// graph. The same maths as the fused step; the learning rate is float32 on
    /// CUDA (as PyTorch's kernel reads it) and float64 on the CPU.
    pub fn make_capturable(&mut self) {
        let device = self.slots.values().next().map_or(tch::Device::Cpu, |s| s.param.device());
        let lr_kind = if device == tch::Device::Cpu { tch::Kind::Double } else { tch::Kind::Float };
        let mut scales: Vec<u64> = self.slots.values().map(|s| s.lr_scale.to_bits()).collect();
        scales.sort_unstable();
        scales.dedup();
        let lrs = scales
            .into_iter()
            .map(|bits| (bits, Tensor::full([], self.lr * f64::from_bits(bits), (lr_kind, device))))
            .collect();
        let steps = Tensor::full([], self.step as f64, (tch::Kind::Float, device));
        self.fused = Some(steps.shallow_clone());
        self.on_device = Some(OnDevice { steps, lrs });
    }

    /// True when updates are capturable ([`Adam::make_capturable`]).
    pub fn is_capturable(&self) -> bool {
        self.on_device.is_some()
    }

    /// Sets the learning rate of the next updates; when capturable, a `fill_`
    /// of the device tensors (queued, no wait), to be called outside a captured step.
    pub fn set_lr(&mut self, lr: f64) {
        self.lr = lr;
        if let Some(d) = &mut self.on_device {
            for (bits, t) in d.lrs.iter_mut() {
                let _ = t.fill_(lr * f64::from_bits(*bits));
            }
        }
    }

    /// Counts an update that ran on the device without this object (a replayed
    /// CUDA graph): keeps the host's step count, which checkpoints save, in step.
    pub fn count_replayed_update(&mut self) {
        self.step += 1;
    }

    /// True when updates run as fused kernels (`train.fused_optimizer`).
    pub fn is_fused(&self) -> bool {
        self.fused.is_some()
    }

    /// Switches to the per-tensor update (after a fused step failed).
    pub fn unfuse(&mut self) {
        self.fused = None;
        self.on_device = None;
    }

    /// Clears gradients.
    pub fn zero_grad(&mut self) {
        for s in self.slots.values_mut() {
            s.param.zero_grad();
        }
    }

    /// Scales gradients so their global L2 norm is at most `max_norm`, as
    /// `torch.nn.utils.clip_grad_norm_`; returns the norm before, a 0-dim double
    /// tensor on the parameters' device. Everything stays on the device: reading
    /// each gradient's norm back to the host made a GPU wait for its queue once per
    /// parameter, about 70 times a step.
    pub fn clip_grad_norm(&mut self, max_norm: f64) -> Option<Tensor> {
        tch::no_grad(|| {
            let grads: Vec<Tensor> = self.slots.values().map(|s| s.param.grad()).filter(|g| g.defined()).collect();
            if grads.is_empty() {
                return None;
            }
            let squares: Vec<Tensor> = grads.iter().map(|g| g.square().sum(tch::Kind::Double)).collect();
            let total = Tensor::stack(&squares, 0).sum(tch::Kind::Double).sqrt();
            if max_norm > 0.0 {
                // min(1, max_norm / (norm + 1e-6)): gradients under the limit are multiplied by exactly 1.
                let scale = (total.full_like(max_norm) / (&total + 1e-6)).clamp_max(1.0);
                for mut g in grads {
                    let _ = g.g_mul_(&scale);
                }
            }
            Some(total)
        })
    }

    /// One update with learning rate `lr`, in place, as PyTorch's single-tensor Adam:
    /// `m = lerp(m, g, 1 - b1)`, `v = b2 v + (1 - b2) g^2`,
    /// `p -= lr / bc1 * m / (sqrt(v) / sqrt(bc2) + eps)`.
    ///
    /// With `train.fused_optimizer` the same update runs as one `_fused_adam[w]_`
    /// kernel per parameter group (decayed, not decayed); an error of that kernel is
    /// returned with nothing updated and the step not counted.
    pub fn step(&mut self, lr: f64) -> Result<(), ShimError> {
        self.set_lr(lr);
        self.update()
    }

    /// [`Adam::step`] at the learning rate of the last [`Adam::set_lr`]; when
    /// capturable, only device work.
    pub fn update(&mut self) -> Result<(), ShimError> {
        let lr = self.lr;
        if self.on_device.is_some() {
            return self.capturable_step();
        }
        if self.fused.is_some() {
            return self.fused_step(lr);
        }
        self.step += 1;
        let (b1, b2) = self.betas;
        let bc1 = 1.0 - b1.powi(self.step as i32);
        let bc2_sqrt = (1.0 - b2.powi(self.step as i32)).sqrt();
        tch::no_grad(|| {
            for s in self.slots.values_mut() {
                let mut g = s.param.grad();
                if !g.defined() {
                    continue;
                }
                // As a torch param group with lr * scale: decoupled decay uses the scaled lr too.
                let lr = lr * s.lr_scale;
                let step_size = lr / bc1;
                let wd = if s.decay { self.weight_decay } else { 0.0 };
                match self.kind {
                    Optimizer::Adam if wd > 0.0 => {
                        s.buf.copy_(&s.param);
                        let _ = s.buf.g_mul_scalar_(wd);
                        let _ = g.g_add_(&s.buf);
                    }
                    Optimizer::Adamw if wd > 0.0 => {
                        let _ = s.param.g_mul_scalar_(1.0 - lr * wd);
                    }
                    _ => {}
                }
                let _ = s.m.lerp_(&g, 1.0 - b1);
                s.buf.copy_(&g);
                let _ = s.buf.g_mul_scalar_(1.0 - b2);
                let _ = s.v.g_mul_scalar_(b2);
                let _ = s.v.addcmul_(&s.buf, &g);
                let _ = s.v.sqrt_out(&s.buf);
                // buf = -(sqrt(v) / bc2_sqrt + eps) / step_size, so p += m / buf is the update.
                let _ = s.buf.g_div_scalar_(bc2_sqrt);
                let _ = s.buf.g_add_scalar_(self.eps);
                let _ = s.buf.g_mul_scalar_(-1.0 / step_size);
                let _ = s.param.addcdiv_(&s.m, &s.buf);
            }
        });
        Ok(())
    }

    /// [`Adam::step`] as fused kernels.
    fn fused_step(&mut self, lr: f64) -> Result<(), ShimError> {
        let Some(step) = &mut self.fused else { return Ok(()) };
        let _ = step.fill_(self.step as f64 + 1.0);
        let grads: Vec<(&Slot, Tensor)> =
            self.slots.values().map(|s| (s, s.param.grad())).filter(|(_, g)| g.defined()).collect();
        // One kernel per (decayed or not, lr scale): timm's parameter groups.
        let mut keys: Vec<(bool, u64)> = grads.iter().map(|(s, _)| (s.decay, s.lr_scale.to_bits())).collect();
        keys.sort_unstable();
        keys.dedup();
        for (decay, scale) in keys {
            let group: Vec<&(&Slot, Tensor)> =
                grads.iter().filter(|(s, _)| (s.decay, s.lr_scale.to_bits()) == (decay, scale)).collect();
            let list = |f: fn(&Slot) -> &Tensor| group.iter().map(|(s, _)| f(s)).collect::<Vec<_>>();
            let g: Vec<&Tensor> = group.iter().map(|(_, g)| g).collect();
            let hp = shim::AdamStep {
                lr: lr * f64::from_bits(scale),
                betas: self.betas,
                weight_decay: if decay { self.weight_decay } else { 0.0 },
                eps: self.eps,
                decoupled: self.kind == Optimizer::Adamw,
            };
            shim::adam_step(&list(|s| &s.param), &g, &list(|s| &s.m), &list(|s| &s.v), step, hp)?;
        }
        self.step += 1;
        Ok(())
    }

    /// [`Adam::step`] with the step count and learning rates on the device.
    fn capturable_step(&mut self) -> Result<(), ShimError> {
        let Some(d) = &mut self.on_device else { return Ok(()) };
        let grads: Vec<(&Slot, Tensor)> =
            self.slots.values().map(|s| (s, s.param.grad())).filter(|(_, g)| g.defined()).collect();
        let _ = d.steps.g_add_scalar_(1.0);
        let mut keys: Vec<(bool, u64)> = grads.iter().map(|(s, _)| (s.decay, s.lr_scale.to_bits())).collect();
        keys.sort_unstable();
        keys.dedup();
        for (decay, scale) in keys {
            let group: Vec<&(&Slot, Tensor)> =
                grads.iter().filter(|(s, _)| (s.decay, s.lr_scale.to_bits()) == (decay, scale)).collect();
            let list = |f: fn(&Slot) -> &Tensor| group.iter().map(|(s, _)| f(s)).collect::<Vec<_>>();
            let g: Vec<&Tensor> = group.iter().map(|(_, g)| g).collect();
            let hp = shim::AdamStep {
                lr: f64::NAN, // read from the tensor
                betas: self.betas,
                weight_decay: if decay { self.weight_decay } else { 0.0 },
                eps: self.eps,
                decoupled: self.kind == Optimizer::Adamw,
            };
            let lr = &d.lrs[&scale];
            let (p, m, v) = (list(|s| &s.param), list(|s| &s.m), list(|s| &s.v));
            if let Err(e) = shim::adam_step_tensor_lr(&p, &g, &m, &v, &d.steps, lr, hp) {
                // Nothing was updated by the failing group: undo the count (earlier groups did update, as before).
                let _ = d.steps.g_sub_scalar_(1.0);
                return Err(e);
            }
        }
        self.step += 1;
        Ok(())
    }

    /// Moments as named tensors (`optim.m.<name>`, `optim.v.<name>`) plus `optim.step`.
    pub fn state_tensors(&self) -> Vec<(String, Tensor)> {
        let mut out = Vec::with_capacity(2 * self.slots.len() + 1);
        for (name, s) in &self.slots {
            out.push((format!("optim.m.{name}"), s.m.shallow_clone()));
            out.push((format!("optim.v.{name}"), s.v.shallow_clone()));
        }
        out.push(("optim.step".to_string(), Tensor::from_slice(&[self.step])));
        out
    }

    /// Restores what [`Adam::state_tensors`] saved; names must match exactly.
    pub fn load_state(&mut self, tensors: &BTreeMap<String, Tensor>) -> Result<(), String> {
        for (name, s) in self.slots.iter_mut() {
            for (kind, dst) in [("m", &mut s.m), ("v", &mut s.v)] {
                let key = format!("optim.{kind}.{name}");
                let src = tensors.get(&key).ok_or_else(|| format!("optimizer state `{key}` is missing"))?;
                if src.size() != dst.size() {
                    return Err(format!(
                        "optimizer state `{key}` has shape {:?}, expected {:?}",
                        src.size(),
                        dst.size()
                    ));
                }
                tch::no_grad(|| dst.copy_(src));
            }
        }
        let step = tensors.get("optim.step").ok_or("optimizer state `optim.step` is missing")?;
        self.step = step.int64_value(&[0]);
        if let Some(d) = &mut self.on_device {
            let _ = d.steps.fill_(self.step as f64);
        }
        Ok(())
    }
}

/// Stops gradients for every variable of `vs` but the head ([`is_head`]);
/// returns how many tensors were frozen.
pub fn freeze_backbone(vs: &nn::VarStore) -> usize {
    let mut frozen = 0;
    for (name, var) in vs.variables() {
        if !is_head(&name) && var.requires_grad() {
            let _ = var.set_requires_grad(false);
            frozen += 1;
        }
    }
    frozen
}

/// Learning rate at optimisation step `step` of `total`: linear warm-up over
/// `warmup` steps, then constant or cosine decay to 0.
pub fn learning_rate(cfg: &TrainConfig, step: usize, warmup: usize, total: usize) -> f64 {
    if warmup > 0 && step < warmup {
        return cfg.lr * (step + 1) as f64 / warmup as f64;
    }
    if !cfg.cosine || total <= warmup {
        return cfg.lr;
    }
    let progress = (step - warmup) as f64 / (total - warmup) as f64;
    0.5 * cfg.lr * (1.0 + (std::f64::consts::PI * progress.min(1.0)).cos())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::finetune::Finetune;

    #[test]
    fn schedule_warms_up_then_decays() {
        let cfg = TrainConfig { lr: 1.0, cosine: true, ..Default::default() };
        assert!((learning_rate(&cfg, 0, 10, 110) - 0.1).abs() < 1e-12);
        assert!((learning_rate(&cfg, 9, 10, 110) - 1.0).abs() < 1e-12);
        assert!((learning_rate(&cfg, 60, 10, 110) - 0.5).abs() < 1e-12);
        assert!(learning_rate(&cfg, 109, 10, 110) < 1e-3);
    }

    #[test]
    fn adam_matches_hand_computed_first_step() {
        // First Adam step moves each weight by lr * sign(grad) (bias-corrected m/sqrt(v) = g/|g|).
        let vs = nn::VarStore::new(tch::Device::Cpu);
        let w = vs.root().var("w", &[2], nn::Init::Const(1.0));
        let cfg = TrainConfig { lr: 0.1, ..Default::default() };
        let mut opt = Adam::new(&vs, &cfg);
        let loss = (&w * Tensor::from_slice(&[3.0f32, -2.0])).sum(tch::Kind::Float);
        loss.backward();
        opt.step(0.1).unwrap();
        let got = Vec::<f32>::try_from(&w).unwrap();
        assert!((got[0] - 0.9).abs() < 1e-6 && (got[1] - 1.1).abs() < 1e-6, "{got:?}");
    }

    #[test]
    fn layer_decay_scales_match_timm_for_depth_2() {
        let ft = Finetune { layer_decay: Some(0.5), ..Default::default() };
        // decay^(L + 1 - layer_id), L = 2.
        let table = [
            ("cls_token", 0.125),
            ("pos_embed", 0.125),
            ("patch_embed.proj.weight", 0.125),
            ("patch_embed.stem.0.conv.weight", 0.125),
            ("blocks.0.attn.qkv.weight", 0.25),
            ("blocks.0.norm1.bias", 0.25),
            ("blocks.1.mlp.fc2.weight", 0.5),
            ("norm.weight", 1.0),
            ("fc_norm.bias", 1.0),
            ("head.weight", 1.0),
        ];
        for (name, want) in table {
            assert_eq!(ft.lr_scale(name, 2), want, "{name}");
        }
        assert_eq!(Finetune::default().lr_scale("cls_token", 2), 1.0);
        assert!(Finetune { layer_decay: Some(1.5), ..ft }.check(&Default::default()).is_err());
    }

    #[test]
    fn layer_decay_scales_each_step_fused_or_not() {
        // First Adam step moves each weight by lr * scale * sign(grad); depth 1, decay 0.5.
        for fused in [false, true] {
            let vs = nn::VarStore::new(tch::Device::Cpu);
            let b = vs.root().sub("blocks").sub("0").var("w", &[2], nn::Init::Const(1.0));
            let h = vs.root().sub("head").var("weight", &[2], nn::Init::Const(1.0));
            let ft = Finetune { layer_decay: Some(0.5), ..Default::default() };
            let cfg = TrainConfig { lr: 0.1, fused_optimizer: fused, ..Default::default() };
            let mut opt = Adam::with_lr_scales(&vs, &cfg, |n| ft.lr_scale(n, 1));
            (b.sum(tch::Kind::Float) + h.sum(tch::Kind::Float)).backward();
            opt.step(0.1).unwrap();
            let (b, h) = (Vec::<f32>::try_from(&b).unwrap(), Vec::<f32>::try_from(&h).unwrap());
            assert!(
                b.iter().all(|x| (x - 0.95).abs() < 1e-6) && h.iter().all(|x| (x - 0.9).abs() < 1e-6),
                "{b:?} {h:?}"
            );
        }
    }

    #[test]
    fn frozen_tensors_get_no_state_and_do_not_move() {
        let vs = nn::VarStore::new(tch::Device::Cpu);
        let w = vs.root().sub("blocks").sub("0").var("w", &[2, 2], nn::Init::Const(1.0));
        let h = vs.root().sub("head").var("weight", &[2, 2], nn::Init::Const(1.0));
        assert_eq!(freeze_backbone(&vs), 1);
        let cfg = TrainConfig { weight_decay: 0.5, optimizer: Optimizer::Adamw, ..Default::default() };
        let mut opt = Adam::new(&vs, &cfg);
        let names: Vec<String> = opt.state_tensors().into_iter().map(|(n, _)| n).collect();
        assert_eq!(names, ["optim.m.head.weight", "optim.v.head.weight", "optim.step"]);
        ((&w * 2.0).sum(tch::Kind::Float) + h.sum(tch::Kind::Float)).backward();
        opt.step(0.1).unwrap();
        assert_eq!(Vec::<f32>::try_from(w.flatten(0, -1)).unwrap(), [1.0; 4]);
        assert!(Vec::<f32>::try_from(h.flatten(0, -1)).unwrap().iter().all(|&x| x < 1.0));
    }

    #[test]
    fn clip_grad_norm_scales_to_the_limit_and_leaves_small_gradients_alone() {
        let vs = nn::VarStore::new(tch::Device::Cpu);
        let a = vs.root().var("a", &[2], nn::Init::Const(1.0));
        let b = vs.root().var("b", &[1], nn::Init::Const(1.0));
        let mut opt = Adam::new(&vs, &TrainConfig::default());
        let grads = |opt: &mut Adam, ga: [f32; 2], gb: f32| {
            opt.zero_grad();
            let loss =
                (&a * Tensor::from_slice(&ga)).sum(tch::Kind::Float) + (&b * f64::from(gb)).sum(tch::Kind::Float);
            loss.backward();
        };
        let read = |t: &Tensor| Vec::<f32>::try_from(t.grad()).unwrap();

        // Gradients (3, 0) and (4): global norm 5, clipped to 1 -> (0.6, 0) and (0.8).
        grads(&mut opt, [3.0, 0.0], 4.0);
        let norm = opt.clip_grad_norm(1.0).expect("gradients exist").double_value(&[]);
        assert!((norm - 5.0).abs() < 1e-9, "norm before clipping: {norm}");
        let (ga, gb) = (read(&a), read(&b));
        assert!((ga[0] - 0.6).abs() < 1e-6 && ga[1] == 0.0 && (gb[0] - 0.8).abs() < 1e-6, "{ga:?} {gb:?}");

        // Under the limit nothing changes, to the bit.
        grads(&mut opt, [0.3, -0.1], 0.2);
        let norm = opt.clip_grad_norm(1.0).expect("gradients exist").double_value(&[]);
        assert!((norm - 0.14f64.sqrt()).abs() < 1e-7, "{norm}");
        assert_eq!((read(&a), read(&b)), (vec![0.3f32, -0.1], vec![0.2f32]));
    }
}
