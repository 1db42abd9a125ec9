//! What an epoch of training reports to the loop that drives it: each step
//! ([`StepReport`], with the loss only at `log_every` points), the epoch's sums
//! ([`EpochStats`]) and where a run diverged ([`Divergence`]).

use vit::data::Skipped;

/// One optimiser step as the epoch loop sees it (for logs and progress).
#[derive(Debug, Clone, Copy)]
pub struct StepReport {
    /// Global step, 0-based, over all epochs.
    pub step: usize,
    /// At a `log_every` point: the mean loss of the steps since the last one in
    /// this epoch (read from the device there); `None` at other steps, which
    /// read nothing back.
    pub loss: Option<f64>,
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
#[derive(Debug, Clone)]
pub struct EpochStats {
    /// Sum over batches of batch loss times batch size.
    pub loss_sum: f64,
    /// Images trained on.
    pub images: usize,
    /// Seconds spent in training steps (forward, backward, update).
    pub train_seconds: f64,
    /// The steps among which a loss was not finite; the epoch stopped at the check that found it.
    pub diverged: Option<Divergence>,
    /// Streamed files that could not be read (trained on as black images).
    pub unreadable: Vec<Skipped>,
}

/// Where training stopped because the loss was NaN or infinite. The loss is
/// only read back at `log_every` points and at the epoch's end, so the first
/// bad step is known to lie in a range of steps.
#[derive(Debug, Clone, Copy)]
pub struct Divergence {
    /// Global steps, 0-based, first and last of the range that holds the first non-finite loss.
    pub steps: (usize, usize),
    /// The same range as steps within the epoch, 0-based.
    pub in_epoch: (usize, usize),
}

impl Divergence {
    /// "at epoch 2, step 3 to 5 of 8 (iterations 11 to 13)", 1-based, for the error message.
    pub fn describe(&self, epoch: usize, steps_per_epoch: usize) -> String {
        let ((a, b), (ga, gb)) = (self.in_epoch, self.steps);
        if a == b {
            format!("at epoch {}, step {} of {steps_per_epoch} (iteration {})", epoch + 1, a + 1, ga + 1)
        } else {
            format!(
                "at epoch {}, step {} to {} of {steps_per_epoch} (between iterations {} and {})",
                epoch + 1,
                a + 1,
                b + 1,
                ga + 1,
                gb + 1
            )
        }
    }
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
