//! The training state of one model and what can be done with it: the VarStore
//! and network, the optimiser, the weight average, the device and the
//! preprocessing, with one epoch of training, evaluation and checkpoints as
//! methods. The epoch loop, logging and the run folder live in `train.rs`, so
//! this file is only about tensors.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant;

use tch::{nn, nn::ModuleT, Device, Kind, Tensor};
use vit::data::Dataset;
use vit::{Preprocessor, ViTConfig};

use crate::batches::{epoch_batches, for_each_train_batch, Augment, HostBatch, Pipeline};
use crate::checkpoint::{self, CheckpointError};
use crate::ema::Ema;
use crate::evaluate::{evaluate, to_device, Evaluation};
use crate::memory::{catch_allocation, MemoryError};
use crate::model::{parameter_count, ViT};
use crate::optim::{learning_rate, Adam};

/// Name of the scalar in `resume.safetensors` that counts completed epochs.
const EPOCH_TENSOR: &str = "train.epoch";

/// One optimiser step as the epoch loop sees it (for logs and progress).
#[derive(Debug, Clone, Copy)]
pub struct StepReport {
    /// Global step, 0-based, over all epochs.
    pub step: usize,
    /// Loss of this batch.
    pub loss: f64,
    /// Learning rate used.
    pub lr: f64,
    /// Images trained on in this epoch so far, this batch included.
    pub images: usize,
    /// Seconds spent in training steps in this epoch so far.
    pub train_seconds: f64,
    /// The data pipeline when this step's batch arrived (queue fullness, data images/s).
    pub data: DataFlow,
}

/// The data pipeline as a step saw it, to tell whether data or the model is the bottleneck.
#[derive(Debug, Clone, Copy, Default)]
pub struct DataFlow {
    /// Batches waiting in the prefetch queue.
    pub queued: usize,
    /// Capacity of the prefetch queue.
    pub capacity: usize,
    /// Images the data workers prepare per second.
    pub images_per_sec: f64,
}

/// What one epoch of training measured.
#[derive(Debug, Clone, Copy)]
pub struct EpochStats {
    /// Sum over batches of batch loss times batch size.
    pub loss_sum: f64,
    /// Images trained on.
    pub images: usize,
    /// Seconds spent in training steps (forward, backward, update).
    pub train_seconds: f64,
    /// The step whose loss was not finite; the epoch stopped there.
    pub diverged: Option<Divergence>,
}

/// Where training stopped because the loss was NaN or infinite.
#[derive(Debug, Clone, Copy)]
pub struct Divergence {
    /// Step within the epoch, 0-based.
    pub step_in_epoch: usize,
    /// Global step, 0-based, over all epochs.
    pub step: usize,
    /// The loss of that step.
    pub loss: f64,
}

impl EpochStats {
    /// Mean training loss per image.
    pub fn mean_loss(&self) -> f64 {
        self.loss_sum / self.images.max(1) as f64
    }

    /// Training throughput in images per second.
    pub fn images_per_sec(&self) -> f64 {
        self.images as f64 / self.train_seconds.max(1e-9)
    }
}

/// A model with its optimiser, weight average and learning-rate schedule.
#[derive(Debug)]
pub struct Trainer {
    cfg: ViTConfig,
    vs: nn::VarStore,
    model: ViT,
    opt: Adam,
    ema: Option<Ema>,
    device: Device,
    prep: Preprocessor,
    eval_batch: usize,
    pipe: Pipeline,
    steps_per_epoch: usize,
    warmup_steps: usize,
    total_steps: usize,
}

impl Trainer {
    /// Seeds libtorch with `train.seed` and builds fresh weights on `device`,
    /// with a schedule for `train_images` training images per epoch;
    /// evaluation runs in batches of `eval_batch`. A failed allocation is an
    /// error (check the size first with [`memory::check`](crate::memory::check)).
    pub fn new(cfg: &ViTConfig, device: Device, train_images: usize, eval_batch: usize) -> Result<Self, MemoryError> {
        let t = &cfg.train;
        tch::manual_seed(t.seed as i64);
        let (vs, model, opt, ema) = catch_allocation("model and optimiser state", || {
            let vs = nn::VarStore::new(device);
            let model = ViT::new(&vs.root(), cfg);
            let opt = Adam::new(&vs, t);
            let ema = (t.ema_decay > 0.0).then(|| Ema::new(&vs, t.ema_decay));
            (vs, model, opt, ema)
        })?;
        let steps_per_epoch = train_images.div_ceil(t.batch_size);
        Ok(Self {
            cfg: cfg.clone(),
            vs,
            model,
            opt,
            ema,
            device,
            prep: Preprocessor::from_config(cfg),
            eval_batch,
            pipe: Pipeline::default(),
            steps_per_epoch,
            warmup_steps: (t.warmup_epochs * steps_per_epoch as f64).round() as usize,
            total_steps: steps_per_epoch * t.epochs,
        })
    }

    /// Starts from `tensors` (see [`crate::init`]) instead of the random
    /// initialisation; the weight average restarts from them too.
    pub fn load_init(&mut self, tensors: &std::collections::BTreeMap<String, tch::Tensor>) -> anyhow::Result<()> {
        crate::init::copy_into(&self.vs, tensors)?;
        if self.ema.is_some() {
            self.ema = Some(Ema::new(&self.vs, self.cfg.train.ema_decay));
        }
        Ok(())
    }

    /// True when every trained weight is finite (one reduction per tensor: cheap
    /// once per epoch), so a checkpoint of them is worth keeping.
    pub fn weights_finite(&self) -> bool {
        tch::no_grad(|| self.vs.trainable_variables().iter().all(|v| v.isfinite().all().int64_value(&[]) != 0))
    }

    /// Trainable parameters.
    pub fn parameters(&self) -> i64 {
        parameter_count(&self.vs)
    }

    /// The device the model lives on.
    pub fn device(&self) -> Device {
        self.device
    }

    /// Optimiser steps per epoch.
    pub fn steps_per_epoch(&self) -> usize {
        self.steps_per_epoch
    }

    /// Sets the data workers and prefetch depth of training and evaluation
    /// (batches are the same whatever they are).
    pub fn set_pipeline(&mut self, pipe: Pipeline) {
        self.pipe = pipe;
    }

    /// Trains one epoch (0-based) on `data` in the seeded order of that epoch;
    /// `on_step` sees every step after its update. A step whose loss is not
    /// finite ends the epoch at once ([`EpochStats::diverged`]; `on_step` does not see it).
    pub fn train_epoch(&mut self, data: &Dataset, epoch: usize, mut on_step: impl FnMut(&StepReport)) -> EpochStats {
        let t = &self.cfg.train;
        // Dropout, drop-path and augmentation draws of an epoch depend only on the seed and the epoch,
        // so a resumed run continues exactly.
        tch::manual_seed(t.seed as i64 + 1 + epoch as i64);
        let aug = Augment::from_train(t);
        let (batch_size, seed) = (t.batch_size, t.seed);
        let mut stats = EpochStats { loss_sum: 0.0, images: 0, train_seconds: 0.0, diverged: None };
        let (prep, pipe) = (self.prep.clone(), self.pipe);
        let batches = epoch_batches(data.len(), batch_size, seed, epoch);
        for_each_train_batch(data, &prep, aug, &batches, seed, epoch, pipe, |i, batch, flow| {
            let started = Instant::now();
            let step = epoch * self.steps_per_epoch + i;
            let lr = learning_rate(&self.cfg.train, step, self.warmup_steps, self.total_steps);
            let loss = self.step(&batch, lr);
            stats.train_seconds += started.elapsed().as_secs_f64();
            if !loss.is_finite() {
                stats.diverged = Some(Divergence { step_in_epoch: i, step, loss });
                return false;
            }
            let n = batch.labels.len();
            (stats.loss_sum, stats.images) = (stats.loss_sum + loss * n as f64, stats.images + n);
            let data = DataFlow {
                queued: flow.queued,
                capacity: flow.capacity,
                images_per_sec: flow.items_per_sec * batch_size as f64,
            };
            on_step(&StepReport { step, loss, lr, images: stats.images, train_seconds: stats.train_seconds, data });
            true
        });
        stats
    }

    /// One optimiser step on `batch` at learning rate `lr` (forward, loss,
    /// backward, clipping, update, weight average); returns the loss. The epoch
    /// loop calls it; benchmarks time it alone.
    pub fn step(&mut self, batch: &HostBatch, lr: f64) -> f64 {
        let (label_smoothing, grad_clip) = (self.cfg.train.label_smoothing, self.cfg.train.grad_clip);
        let (x, y) = to_device(&batch.pixels, &batch.labels, &self.prep, self.device);
        let logits = self.model.forward_t(&x, true);
        let log_probs = logits.log_softmax(-1, Kind::Float);
        let ce =
            |y: &Tensor| log_probs.cross_entropy_loss::<Tensor>(y, None, tch::Reduction::Mean, -100, label_smoothing);
        let loss = match batch.mix_lam {
            // Mixed images: lam of the own label, 1 - lam of the partner's (the batch reversed).
            Some(lam) => ce(&y) * f64::from(lam) + ce(&y.flip([0])) * (1.0 - f64::from(lam)),
            None => ce(&y),
        };
        self.opt.zero_grad();
        loss.backward();
        self.reduce_gradients();
        if grad_clip > 0.0 {
            self.opt.clip_grad_norm(grad_clip);
        }
        if let Err(e) = self.opt.step(lr) {
            // The fused kernel failed before changing anything: the written-out step does the same maths.
            log::warn!("{e}; using the per-tensor optimiser step from now on");
            self.opt.unfuse();
            let _ = self.opt.step(lr);
        }
        if let Some(ema) = &mut self.ema {
            ema.update();
        }
        loss.double_value(&[])
    }

    /// The one place where, between `backward` and gradient clipping, data-parallel
    /// training will average the gradients of all ranks (all-reduce, divide by the
    /// world size), so clipping, the update and the weight average see the global
    /// gradient. With a single process there is nothing to combine: a no-op.
    pub fn reduce_gradients(&mut self) {}

    /// Runs `f` with the weights that are evaluated, checkpointed as
    /// `last`/`best` and exported: the weight average when the recipe keeps one,
    /// else the trained weights. Training weights are back in place afterwards.
    pub fn with_eval_weights<R>(&mut self, f: impl FnOnce(&Self) -> R) -> R {
        if let Some(ema) = &mut self.ema {
            ema.swap();
        }
        let result = f(self);
        if let Some(ema) = &mut self.ema {
            ema.swap();
        }
        result
    }

    /// Loss, accuracy and confusion matrix of the current weights on `data`.
    pub fn evaluate(&self, data: &Dataset) -> Evaluation {
        evaluate(&self.model, data, &self.prep, self.cfg.num_classes, self.device, self.eval_batch, self.pipe)
    }

    /// Writes the model's current weights (a `last`/`best` checkpoint).
    pub fn save_weights(&self, path: &Path) -> Result<(), CheckpointError> {
        checkpoint::save_weights(&self.vs, path)
    }

    /// Writes everything `--resume` needs after `epochs_done` completed epochs:
    /// trained weights, optimiser moments, the weight average and the epoch count.
    pub fn save_resume(&self, path: &Path, epochs_done: usize) -> Result<(), CheckpointError> {
        let mut state = checkpoint::model_tensors(&self.vs);
        state.extend(self.opt.state_tensors());
        state.extend(self.ema.iter().flat_map(Ema::state_tensors));
        state.push((EPOCH_TENSOR.into(), Tensor::from_slice(&[epochs_done as i64])));
        checkpoint::write_atomic(path, &state)
    }

    /// Restores a [`save_resume`](Self::save_resume) file; returns the completed epochs.
    pub fn load_resume(&mut self, path: &Path) -> Result<usize, CheckpointError> {
        let tensors: BTreeMap<String, Tensor> = checkpoint::read_all(path)?;
        checkpoint::load_into(&mut self.vs, path, &tensors)?;
        let mismatch = |message: String| CheckpointError::Mismatch { path: path.to_path_buf(), message };
        self.opt.load_state(&tensors).map_err(mismatch)?;
        if let Some(ema) = &mut self.ema {
            ema.load_state(&tensors).map_err(mismatch)?;
        }
        Ok(tensors.get(EPOCH_TENSOR).map(|t| t.int64_value(&[0]) as usize).unwrap_or(0))
    }
}
