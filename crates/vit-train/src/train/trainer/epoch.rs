//! One epoch's steps, the same whether batches come from host workers or from a
//! device-resident set: the step (replayed from the CUDA graph when there is
//! one), the loss tallied on the device and read back only at `log_every`
//! points, the range of steps a divergence lies in, and the epoch's sums over
//! the ranks.

use std::time::Instant;

use tch::Tensor;

use super::{DataFlow, Divergence, EpochStats, StepReport, Trainer};
use crate::data::batches::HostBatch;
use crate::dist::DistError;
use crate::host::allocator::{release_free_memory, RELEASE_EVERY_STEPS};
use crate::train::evaluate::to_device;
use crate::train::graph::GraphFailure;
use crate::train::optim::learning_rate;
use crate::train::tally::WindowRead;

/// The bookkeeping of an epoch in progress.
#[derive(Debug)]
pub(super) struct EpochLoop {
    epoch: usize,
    first_step: usize,
    log_every: usize,
    /// First step (within the epoch) whose loss has not been checked yet.
    unchecked: usize,
    /// The last step run, within the epoch.
    last: Option<usize>,
    pub(super) stats: EpochStats,
}

impl Trainer {
    /// Starts epoch `epoch` (0-based): seeds its random draws and zeroes the tally.
    pub(super) fn begin_epoch(&mut self, epoch: usize) -> EpochLoop {
        let t = &self.cfg.train;
        // Dropout, drop-path and augmentation draws of an epoch depend only on the seed and the epoch,
        // so a resumed run continues exactly.
        tch::manual_seed(t.seed as i64 + 1 + epoch as i64);
        self.tally.reset();
        EpochLoop {
            epoch,
            first_step: epoch * self.steps_per_epoch,
            log_every: t.log_every.max(1),
            unchecked: 0,
            last: None,
            stats: EpochStats { loss_sum: 0.0, images: 0, train_seconds: 0.0, diverged: None, unreadable: Vec::new() },
        }
    }

    /// Step `i` of the epoch on the device batch `x`, `y` (its timing started
    /// at `started`). Returns what `on_step` sees, or `None` when the window
    /// read at a `log_every` point found a non-finite loss (the epoch ends;
    /// [`EpochStats::diverged`] is set).
    pub(super) fn epoch_step(
        &mut self,
        ep: &mut EpochLoop,
        i: usize,
        (x, y, mix_lam): (&Tensor, &Tensor, Option<f32>),
        started: Instant,
        data: DataFlow,
    ) -> Result<Option<StepReport>, DistError> {
        let step = ep.first_step + i;
        let lr = learning_rate(&self.cfg.train, step, self.warmup_steps, self.total_steps);
        self.train_step_on(x, y, mix_lam, lr)?;
        self.tally.count_step();
        ep.last = Some(i);
        let n = y.size().first().copied().unwrap_or(0) as usize;
        let stats = &mut ep.stats;
        (stats.train_seconds, stats.images) = (stats.train_seconds + started.elapsed().as_secs_f64(), stats.images + n);
        if (step + 1) % RELEASE_EVERY_STEPS == 0 {
            release_free_memory();
        }
        let mut loss = None;
        if (step + 1) % ep.log_every == 0 {
            match self.tally.read_window() {
                WindowRead::Mean(mean) => (loss, ep.unchecked) = (Some(mean), i + 1),
                WindowRead::NonFinite => {
                    let from = ep.unchecked;
                    stats.diverged = Some(Divergence { steps: (ep.first_step + from, step), in_epoch: (from, i) });
                    return Ok(None);
                }
            }
        }
        Ok(Some(StepReport { step, loss, lr, images: stats.images, train_seconds: stats.train_seconds, data }))
    }

    /// Ends the epoch: one read of the epoch's loss sum (which also checks the
    /// steps since the last `log_every` point) and, in a process group, the
    /// sums over all ranks.
    pub(super) fn end_epoch(&mut self, ep: EpochLoop) -> Result<EpochStats, DistError> {
        let EpochLoop { epoch, first_step, unchecked, last, mut stats, .. } = ep;
        if let (None, Some(last)) = (stats.diverged, last) {
            match self.tally.read_epoch() {
                Some(sum) => stats.loss_sum = sum,
                None => {
                    let (a, b) = (unchecked.min(last), last);
                    stats.diverged = Some(Divergence { steps: (first_step + a, first_step + b), in_epoch: (a, b) });
                }
            }
        }
        if let Some(group) = &self.group {
            let comm = group.take_stats();
            log::debug!(
                "epoch {}: {} collectives, {:.1} MiB per step, {:.3} s per step in collectives",
                epoch + 1,
                comm.calls,
                comm.bytes as f64 / self.steps_per_epoch.max(1) as f64 / (1 << 20) as f64,
                comm.seconds / self.steps_per_epoch.max(1) as f64
            );
            // A rank that diverged stops early: the sums then cover fewer steps, which the others see.
            let sums = Tensor::from_slice(&[stats.loss_sum, stats.images as f64]);
            group.all_reduce_sum(&[&sums])?;
            let v = Vec::<f64>::try_from(&sums).unwrap_or_default();
            (stats.loss_sum, stats.images) = (v[0], v[1] as usize);
        }
        Ok(stats)
    }

    /// [`train_step_on`](Self::train_step_on) on a host batch: what the epoch
    /// loop does with each batch (benchmarks time it alone).
    pub fn train_step(&mut self, batch: &HostBatch, lr: f64) -> Result<(), DistError> {
        let (x, y) = to_device(&batch.pixels, &batch.labels, &self.prep, self.device);
        self.train_step_on(&x, &y, batch.mix_lam, lr)
    }

    /// One step of the epoch loop on a device batch: replayed from the CUDA
    /// graph when there is one and the batch is full (see
    /// [`graph`](crate::train::graph)), else [`step_on`](Self::step_on); the
    /// loss goes to the device tally.
    pub fn train_step_on(&mut self, x: &Tensor, y: &Tensor, mix_lam: Option<f32>, lr: f64) -> Result<(), DistError> {
        let n = y.size().first().copied().unwrap_or(0) as usize;
        if n == self.cfg.train.batch_size && mix_lam.is_none() {
            if let Some(mut graph) = self.graph.take() {
                self.opt.set_lr(lr);
                let (replay, count) = (graph.captured(), self.opt.step);
                let result = graph.run(x, y, |x, y| {
                    let (loss, _) = self.update_on_device(x, y, None)?;
                    self.tally.add_on_device(&loss, n);
                    Ok(())
                });
                match result {
                    Ok(()) => {
                        if replay {
                            self.opt.count_replayed_update();
                        }
                        if let Some(ema) = &mut self.ema {
                            ema.update();
                        }
                        self.graph = Some(graph);
                        return Ok(());
                    }
                    Err(GraphFailure::Step(e)) => {
                        self.graph = Some(graph);
                        return Err(e);
                    }
                    Err(GraphFailure::Graph(why)) => {
                        // Nothing of this step ran: the eager step below trains on the batch.
                        log::warn!("--cuda-graph: {why}; training eagerly from now on");
                        self.opt.step = count;
                    }
                }
            }
        }
        let loss = self.step_on(x, y, mix_lam, lr)?;
        self.tally.add_on_device(&loss, n);
        Ok(())
    }
}
