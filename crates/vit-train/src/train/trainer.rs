//! The training state of one model and what can be done with it: the VarStore
//! and network, the optimiser, the weight average, the device and the
//! preprocessing, with one epoch of training, evaluation and checkpoints as
//! methods. The epoch loop, logging and the run folder live in `fit.rs`, so
//! this file is only about tensors.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant;

use tch::{nn, nn::ModuleT, Device, Kind, Tensor};
use vit::{Preprocessor, ViTConfig};

use crate::data::batches::{epoch_batches_of, for_each_train_batch, Augment, HostBatch, Pipeline};
use crate::data::resident::Split;
use crate::dist::{DistError, ProcessGroup};
use crate::host::memory::{catch_allocation, MemoryError};
use crate::model::finetune::Finetune;
use crate::model::{parameter_count, ViT};
use crate::run::checkpoint::{self, CheckpointError};
use crate::shim::ShimError;
use crate::train::amp::{Autocast, LossScaler};
use crate::train::ema::Ema;
use crate::train::evaluate::{evaluate, evaluate_part, reduce_evaluation, to_device, Evaluation};
use crate::train::graph::{StepGraph, WARMUP_STEPS};
use crate::train::host_read;
use crate::train::optim::{freeze_backbone, Adam};
use crate::train::tally::LossTally;

mod epoch;
mod resident;

/// Name of the scalar in `resume.safetensors` that counts completed epochs.
const EPOCH_TENSOR: &str = "train.epoch";

pub use crate::train::report::{DataFlow, Divergence, EpochStats, StepReport};

/// A model with its optimiser, weight average and learning-rate schedule.
#[derive(Debug)]
pub struct Trainer {
    cfg: ViTConfig,
    vs: nn::VarStore,
    model: ViT,
    opt: Adam,
    ema: Option<Ema>,
    /// fp16's dynamic loss scaler (none in fp32 and bf16).
    scaler: Option<LossScaler>,
    /// The epoch's training loss, summed on the device.
    tally: LossTally,
    /// `train.cuda_graph` where it can be used: the captured step.
    graph: Option<StepGraph>,
    device: Device,
    prep: Preprocessor,
    eval_batch: usize,
    pipe: Pipeline,
    shuffle_buffer: usize,
    steps_per_epoch: usize,
    warmup_steps: usize,
    total_steps: usize,
    group: Option<ProcessGroup>,
}

impl Trainer {
    /// Seeds libtorch with `train.seed` and builds fresh weights on `device`,
    /// with a schedule for `train_images` training images per epoch;
    /// evaluation runs in batches of `eval_batch`. A failed allocation is an
    /// error (check the size first with [`memory::check`](crate::host::memory::check)).
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
        let mut trainer = Self {
            cfg: cfg.clone(),
            vs,
            model,
            opt,
            ema,
            scaler: (t.precision == vit::config::Precision::Fp16).then(LossScaler::default),
            tally: LossTally::new(device),
            graph: None,
            device,
            prep: Preprocessor::from_config(cfg),
            eval_batch,
            pipe: Pipeline::default(),
            shuffle_buffer: crate::data::shard_order::DEFAULT_SHUFFLE_BUFFER,
            steps_per_epoch,
            warmup_steps: (t.warmup_epochs * steps_per_epoch as f64).round() as usize,
            total_steps: steps_per_epoch * t.epochs,
            group: None,
        };
        if t.cuda_graph {
            trainer.use_cuda_graph();
        }
        Ok(trainer)
    }

    /// `train.cuda_graph`: captures the step once it has warmed up, with the
    /// optimiser made capturable; where that cannot work, warns once why and trains eagerly.
    fn use_cuda_graph(&mut self) {
        let graph =
            match (crate::train::graph::refusal(&self.cfg.train, self.device, self.group.is_some()), self.device) {
                (None, Device::Cuda(index)) => StepGraph::new(index).map_err(|e| e.to_string()),
                (why, _) => Err(why.unwrap_or_default()),
            };
        match graph {
            Ok(graph) => {
                self.opt.make_capturable();
                self.graph = Some(graph);
                log::info!("--cuda-graph: the step is captured after {WARMUP_STEPS} warm-up steps and replayed");
            }
            Err(why) => log::warn!("--cuda-graph: {why}; training eagerly"),
        }
    }

    /// Makes the optimiser capturable (fused, with its step count and learning
    /// rate on the device): what `--cuda-graph` uses, switchable alone for benchmarks.
    pub fn make_optimizer_capturable(&mut self) {
        self.opt.make_capturable();
    }

    /// Starts from `tensors` (see [`crate::import::init`]) instead of the random
    /// initialisation; the weight average restarts from them too.
    pub fn load_init(&mut self, tensors: &std::collections::BTreeMap<String, tch::Tensor>) -> anyhow::Result<()> {
        crate::import::init::copy_into(&self.vs, tensors)?;
        if self.ema.is_some() {
            self.ema = Some(Ema::new(&self.vs, self.cfg.train.ema_decay));
        }
        Ok(())
    }

    /// Applies `fit --freeze-backbone` / `--layer-decay`: frozen tensors stop
    /// requiring gradients and the optimiser is rebuilt with per-tensor lr
    /// scales. Call before [`load_resume`](Self::load_resume), whose optimiser
    /// state then has the same tensors.
    pub fn finetune(&mut self, ft: &Finetune) -> anyhow::Result<()> {
        if ft.is_none() {
            return Ok(());
        }
        ft.check(&self.cfg).map_err(anyhow::Error::msg)?;
        if ft.freeze_backbone {
            let frozen = freeze_backbone(&self.vs);
            let mut trained: Vec<String> =
                self.vs.variables().into_iter().filter(|(_, v)| v.requires_grad()).map(|(n, _)| n).collect();
            trained.sort();
            log::info!("--freeze-backbone: {frozen} tensors frozen; training {}", trained.join(", "));
        }
        if let Some(d) = ft.layer_decay {
            log::info!(
                "--layer-decay {d}: lr scale {d}^(depth + 1 - layer), embeddings {:.3e}",
                ft.lr_scale("pos_embed", self.cfg.depth)
            );
        }
        let depth = self.cfg.depth;
        self.opt = Adam::with_lr_scales(&self.vs, &self.cfg.train, |name| ft.lr_scale(name, depth));
        Ok(())
    }

    /// True when every trained weight is finite (one reduction per tensor, one
    /// host read: cheap once per epoch), so a checkpoint of them is worth keeping.
    pub fn weights_finite(&self) -> bool {
        let vars = self.vs.trainable_variables();
        if vars.is_empty() {
            return true;
        }
        let all = tch::no_grad(|| {
            let each: Vec<Tensor> = vars.iter().map(|v| v.isfinite().all().reshape([1])).collect();
            Tensor::cat(&each, 0).all()
        });
        host_read::read_f64(&all, "weights finite at the epoch end") != 0.0
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

    /// Makes this trainer one rank of `group` (data-parallel training): gradients
    /// are averaged across ranks from now on, evaluation is sharded. Call
    /// [`sync_from_rank0`](Self::sync_from_rank0) next so every rank starts alike.
    pub fn join(&mut self, group: ProcessGroup) {
        self.group = Some(group);
        if self.graph.take().is_some() {
            log::warn!(
                "--cuda-graph: gradients are all-reduced by the process group outside the graph; training eagerly"
            );
        }
    }

    /// The process group this trainer is a rank of, if any.
    pub fn group(&self) -> Option<&ProcessGroup> {
        self.group.as_ref()
    }

    /// True unless this is a rank other than 0 (only rank 0 writes files).
    pub fn is_rank0(&self) -> bool {
        self.group.as_ref().map_or(true, |g| g.rank() == 0)
    }

    /// Overwrites every rank's whole training state (weights, BatchNorm buffers,
    /// optimiser moments and step, weight average) with rank 0's, and returns rank
    /// 0's `epochs_done`: after a fresh start or a resume on rank 0, all ranks agree.
    pub fn sync_from_rank0(&mut self, epochs_done: usize) -> Result<usize, DistError> {
        let Some(group) = &self.group else { return Ok(epochs_done) };
        let state = self.resume_state(epochs_done);
        let tensors: Vec<&Tensor> = state.iter().map(|(_, t)| t).collect();
        group.broadcast_from_rank0(&tensors)?;
        // Weights and moments are shared with the model; the counters are copies, so load them back.
        let map: BTreeMap<String, Tensor> = state.into_iter().collect();
        let restore = |message: String| DistError::C10d(ShimError { op: "broadcast", message });
        self.opt.load_state(&map).map_err(restore)?;
        if let Some(ema) = &mut self.ema {
            ema.load_state(&map).map_err(restore)?;
        }
        Ok(map[EPOCH_TENSOR].int64_value(&[0]) as usize)
    }

    /// Sets the data workers and prefetch depth of training and evaluation
    /// (batches are the same whatever they are).
    pub fn set_pipeline(&mut self, pipe: Pipeline) {
        self.pipe = pipe;
    }

    /// Sets the shuffle buffer of data read from tar shards (`--shuffle-buffer`; it changes the batches).
    pub fn set_shuffle_buffer(&mut self, samples: usize) {
        self.shuffle_buffer = samples;
    }

    /// Trains one epoch (0-based) on `data` in the seeded order of that epoch;
    /// `on_step` sees every step after its update. The loss stays on the device:
    /// it is read back (with a non-finite check) only every `train.log_every`
    /// global steps and once at the epoch's end. A non-finite loss found there
    /// ends the epoch ([`EpochStats::diverged`] names the steps; `on_step` does
    /// not see the step that found it). In a process group each rank trains on
    /// its shard, and the returned loss and image count are the sums over all ranks.
    /// A set kept on the device (`--data-mode device`) is batched there instead.
    pub fn train_epoch<'a>(
        &mut self,
        data: impl Into<Split<'a>>,
        epoch: usize,
        mut on_step: impl FnMut(&StepReport),
    ) -> Result<EpochStats, DistError> {
        let data = match data.into() {
            Split::Host(data) => data,
            Split::Resident(set) => return self.train_epoch_resident(set, epoch, on_step),
        };
        let mut ep = self.begin_epoch(epoch);
        let t = &self.cfg.train;
        let (aug, batch_size, seed) = (Augment::from_train(t), t.batch_size, t.seed);
        let (prep, pipe) = (self.prep.clone(), self.pipe);
        let mut failed = None;
        let batches = epoch_batches_of(data, batch_size, seed, epoch, self.shuffle_buffer);
        let unreadable = for_each_train_batch(data, &prep, aug, &batches, seed, epoch, pipe, |i, batch, flow| {
            let started = Instant::now();
            let (x, y) = to_device(&batch.pixels, &batch.labels, &self.prep, self.device);
            let data = DataFlow {
                queued: flow.queued,
                capacity: flow.capacity,
                images_per_sec: flow.items_per_sec * batch_size as f64,
            };
            match self.epoch_step(&mut ep, i, (&x, &y, batch.mix_lam), started, data) {
                Ok(Some(report)) => {
                    on_step(&report);
                    true
                }
                Ok(None) => false,
                Err(e) => {
                    failed = Some(e);
                    false
                }
            }
        });
        ep.stats.unreadable = unreadable;
        if let Some(e) = failed {
            return Err(e);
        }
        self.end_epoch(ep)
    }

    /// One optimiser step on `batch` at learning rate `lr` (forward, loss,
    /// backward, clipping, update, weight average); returns the loss, one
    /// element still on the device: nothing here reads a device value on the
    /// host (but fp16's loss scaler, which must know whether to skip the
    /// update). Benchmarks time it alone. Fails only when averaging the
    /// gradients across ranks fails (a dead peer, a timeout).
    pub fn step(&mut self, batch: &HostBatch, lr: f64) -> Result<Tensor, DistError> {
        let (x, y) = to_device(&batch.pixels, &batch.labels, &self.prep, self.device);
        self.step_on(&x, &y, batch.mix_lam, lr)
    }

    /// [`step`](Self::step) on a batch already on the device: normalised images
    /// `x`, labels `y`, and the own label's weight of a mixed batch.
    pub fn step_on(&mut self, x: &Tensor, y: &Tensor, mix_lam: Option<f32>, lr: f64) -> Result<Tensor, DistError> {
        self.opt.set_lr(lr);
        let (loss, updated) = self.update_on_device(x, y, mix_lam)?;
        if let (true, Some(ema)) = (updated, &mut self.ema) {
            ema.update();
        }
        Ok(loss)
    }

    /// Forward, loss, backward, clipping and the optimiser update on device
    /// inputs, at the learning rate set last; returns the loss and whether the
    /// weights were updated (fp16 skips overflowing steps). Everything a CUDA graph captures.
    fn update_on_device(&mut self, x: &Tensor, y: &Tensor, mix_lam: Option<f32>) -> Result<(Tensor, bool), DistError> {
        let (label_smoothing, grad_clip) = (self.cfg.train.label_smoothing, self.cfg.train.grad_clip);
        let logits = {
            // Autocast covers the forward pass only; the loss and backward see f32 logits.
            let _autocast = Autocast::enter(self.cfg.train.precision, self.device).unwrap_or_else(|e| {
                log::warn!("{e}; training this step in fp32");
                None
            });
            self.model.forward_t(x, true).to_kind(Kind::Float)
        };
        let log_probs = logits.log_softmax(-1, Kind::Float);
        let ce =
            |y: &Tensor| log_probs.cross_entropy_loss::<Tensor>(y, None, tch::Reduction::Mean, -100, label_smoothing);
        let loss = match mix_lam {
            // Mixed images: lam of the own label, 1 - lam of the partner's (the batch reversed).
            Some(lam) => ce(y) * f64::from(lam) + ce(&y.flip([0])) * (1.0 - f64::from(lam)),
            None => ce(y),
        };
        crate::dist::take_forward_error()?;
        self.opt.zero_grad();
        // A collective inside backward (SyncBatchNorm) may fail: an error, not a panic.
        let scaled = match &self.scaler {
            Some(scaler) => &loss * scaler.scale,
            None => loss.shallow_clone(),
        };
        scaled.f_backward().map_err(|e| ShimError { op: "backward", message: e.to_string() })?;
        // Averaged with the gradients, so every rank logs and checks the same global loss.
        let loss = loss.detach().reshape([1]).copy();
        self.reduce_gradients(&loss)?;
        if let Some(scaler) = &mut self.scaler {
            // After the all-reduce every rank holds the same gradients, so all skip or step together.
            let grads: Vec<Tensor> =
                self.vs.trainable_variables().iter().map(Tensor::grad).filter(Tensor::defined).collect();
            let found_inf = scaler.unscale(&grads);
            scaler.update(found_inf);
            if found_inf {
                // Overflow in fp16: no update, no weight average; the next step runs at a lower scale.
                return Ok((loss, false));
            }
        }
        if grad_clip > 0.0 {
            self.opt.clip_grad_norm(grad_clip);
        }
        if let Err(e) = self.opt.update() {
            // The fused kernel failed before changing anything: the written-out step does the same maths.
            log::warn!("{e}; using the per-tensor optimiser step from now on");
            self.opt.unfuse();
            let _ = self.opt.update();
        }
        Ok((loss, true))
    }

    /// Between `backward` and gradient clipping: averages the gradients of all
    /// ranks, and `loss` (a detached copy) with them, flattened into buckets of
    /// about 25 MB with one all-reduce each, so clipping, the update and the weight
    /// average see the global gradient. With a single process: a no-op.
    pub fn reduce_gradients(&mut self, loss: &Tensor) -> Result<(), DistError> {
        let Some(group) = &self.group else { return Ok(()) };
        let vars = self.vs.trainable_variables();
        let grads: Vec<Tensor> = vars.iter().map(Tensor::grad).filter(Tensor::defined).collect();
        let refs: Vec<&Tensor> = grads.iter().chain(std::iter::once(loss)).collect();
        group.all_reduce_mean(&refs)
    }

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

    /// Loss, accuracy and confusion matrix of the current weights on `data`. In a
    /// process group each rank evaluates every world-size-th image and the sums are
    /// all-reduced: every rank gets the same, exact counts.
    /// A set kept on the device is evaluated there.
    pub fn evaluate<'a>(&self, data: impl Into<Split<'a>>) -> Result<Evaluation, DistError> {
        let data = match data.into() {
            Split::Host(data) => data,
            Split::Resident(set) => return self.evaluate_resident(set),
        };
        let Some(group) = &self.group else {
            return Ok(evaluate(
                &self.model,
                data,
                &self.prep,
                self.cfg.num_classes,
                self.device,
                self.eval_batch,
                self.pipe,
            ));
        };
        let k = self.cfg.num_classes;
        if data.is_empty() {
            return Ok(evaluate(&self.model, data, &self.prep, k, self.device, self.eval_batch, self.pipe));
        }
        let mine: Vec<usize> = (group.rank()..data.len()).step_by(group.world_size()).collect();
        let (loss_sum, part, unreadable) =
            evaluate_part(&self.model, data, &mine, &self.prep, k, self.device, self.eval_batch, self.pipe);
        reduce_evaluation(group, data.len(), loss_sum, &part, unreadable)
    }

    /// Writes the model's current weights (a `last`/`best` checkpoint).
    pub fn save_weights(&self, path: &Path) -> Result<(), CheckpointError> {
        checkpoint::save_weights(&self.vs, path)
    }

    /// Writes everything `--resume` needs after `epochs_done` completed epochs:
    /// trained weights, optimiser moments, the weight average and the epoch count.
    pub fn save_resume(&self, path: &Path, epochs_done: usize) -> Result<(), CheckpointError> {
        checkpoint::write_atomic(path, &self.resume_state(epochs_done))
    }

    /// Everything a resume file holds; weights and moments share storage with the live state.
    fn resume_state(&self, epochs_done: usize) -> Vec<(String, Tensor)> {
        let mut state = checkpoint::model_tensors(&self.vs);
        state.extend(self.opt.state_tensors());
        state.extend(self.ema.iter().flat_map(Ema::state_tensors));
        state.extend(self.scaler.iter().flat_map(LossScaler::state_tensors));
        state.push((EPOCH_TENSOR.into(), Tensor::from_slice(&[epochs_done as i64])));
        state
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
        if let Some(scaler) = &mut self.scaler {
            scaler.load_state(&tensors);
        }
        Ok(tensors.get(EPOCH_TENSOR).map(|t| t.int64_value(&[0]) as usize).unwrap_or(0))
    }
}
