//! Training and evaluation on a set kept on the device (`--data-mode device`,
//! [`crate::data::resident`]): the same epoch order, schedule, step and
//! accounting as the host path of [`Trainer::train_epoch`], with batches that
//! are gathered and augmented on the device instead of built by worker threads.

use std::time::Instant;

use tch::{nn::ModuleT, Device, Kind, Tensor};

use super::{DataFlow, EpochStats, StepReport, Trainer};
use crate::data::batches::Augment;
use crate::data::resident::ResidentSet;
use crate::dist::DistError;
use crate::run::metrics::Confusion;
use crate::train::evaluate::{reduce_evaluation, Evaluation};

impl Trainer {
    /// [`Trainer::train_epoch`] on a device-resident set.
    pub(super) fn train_epoch_resident(
        &mut self,
        set: &ResidentSet,
        epoch: usize,
        mut on_step: impl FnMut(&StepReport),
    ) -> Result<EpochStats, DistError> {
        let mut ep = self.begin_epoch(epoch);
        let t = &self.cfg.train;
        let (aug, batch_size, seed) = (Augment::from_train(t), t.batch_size, t.seed);
        let batches = set.epoch_batches(batch_size, seed, epoch, self.shuffle_buffer);
        let (mut data_seconds, mut data_images) = (0.0, 0usize);
        for (i, indices) in batches.iter().enumerate() {
            let made = Instant::now();
            let batch = set.train_batch(indices, &aug, seed, epoch, i);
            (data_seconds, data_images) = (data_seconds + made.elapsed().as_secs_f64(), data_images + batch.len);
            // No queue: the batch is made in line. On a GPU its ops are only queued, so this is launch time.
            let data = DataFlow { queued: 0, capacity: 0, images_per_sec: data_images as f64 / data_seconds.max(1e-9) };
            let step = (&batch.pixels, &batch.labels, batch.mix_lam);
            match self.epoch_step(&mut ep, i, step, Instant::now(), data)? {
                Some(report) => on_step(&report),
                None => break,
            }
        }
        self.end_epoch(ep)
    }

    /// [`Trainer::evaluate`] on a device-resident set: batches of `eval_batch`
    /// images in order (in a process group, every world-size-th image on each rank).
    pub(super) fn evaluate_resident(&self, set: &ResidentSet) -> Result<Evaluation, DistError> {
        let k = self.cfg.num_classes;
        let mut confusion = Confusion::new(k);
        if set.is_empty() {
            return Ok(Evaluation { loss: f64::NAN, accuracy: 0.0, confusion, unreadable: Vec::new() });
        }
        let (rank, world) = self.group.as_ref().map_or((0, 1), |g| (g.rank(), g.world_size()));
        let mine: Vec<usize> = (rank..set.len()).step_by(world).collect();
        let (logits, truth) = tch::no_grad(|| {
            let (mut logits, mut truth) = (Vec::new(), Vec::new());
            for chunk in mine.chunks(self.eval_batch.max(1)) {
                let batch = if world == 1 {
                    set.eval_batch(chunk[0]..chunk[0] + chunk.len())
                } else {
                    set.eval_batch_of(chunk)
                };
                logits.push(self.model.forward_t(&batch.pixels, false).to_kind(Kind::Float));
                truth.push(batch.labels);
            }
            (Tensor::cat(&logits, 0), Tensor::cat(&truth, 0))
        });
        let loss_sum = logits
            .log_softmax(-1, Kind::Float)
            .g_nll_loss::<Tensor>(&truth, None, tch::Reduction::Sum, -100)
            .double_value(&[]);
        let predicted = logits.argmax(-1, false).to_device(Device::Cpu);
        let predicted = Vec::<i64>::try_from(predicted).unwrap_or_default();
        let truth = Vec::<i64>::try_from(truth.to_device(Device::Cpu)).unwrap_or_default();
        for (&t, &p) in truth.iter().zip(&predicted) {
            confusion.add(t as usize, p as usize);
        }
        match &self.group {
            Some(group) => reduce_evaluation(group, set.len(), loss_sum, &confusion, Vec::new()),
            None => {
                let loss = loss_sum / set.len() as f64;
                Ok(Evaluation { loss, accuracy: confusion.accuracy(), confusion, unreadable: Vec::new() })
            }
        }
    }
}
