//! Evaluation of a model on a u8 data set (in memory or streamed): loss,
//! accuracy, confusion matrix, whole or one rank's share of it.

use tch::{nn::ModuleT, Device, Kind, Tensor};
use vit::data::{Dataset, Skipped};
use vit::Preprocessor;

use crate::data::batches::{for_each_eval_piece, Pipeline};
use crate::dist::{DistError, ProcessGroup};
use crate::run::metrics::Confusion;

/// What an evaluation measured.
#[derive(Debug, Clone)]
pub struct Evaluation {
    /// Mean cross-entropy.
    pub loss: f64,
    /// Top-1 accuracy.
    pub accuracy: f64,
    /// `[true][predicted]` counts.
    pub confusion: Confusion,
    /// Streamed files that could not be read (evaluated as black images).
    pub unreadable: Vec<Skipped>,
}

/// Host batch -> device tensors.
pub fn to_device(pixels: &[f32], labels: &[i64], prep: &Preprocessor, device: Device) -> (Tensor, Tensor) {
    let side = prep.image_size as i64;
    let x = Tensor::from_slice(pixels).view([labels.len() as i64, prep.channels as i64, side, side]).to_device(device);
    let y = Tensor::from_slice(labels).to_device(device);
    (x, y)
}

/// Logits of the whole data set, in order ([N, K] on the CPU), and the
/// streamed files that could not be read; `pipe`'s workers build the batches.
pub fn predict(
    model: &impl ModuleT,
    data: &Dataset,
    prep: &Preprocessor,
    device: Device,
    batch: usize,
    pipe: Pipeline,
) -> (Tensor, Vec<Skipped>) {
    let indices: Vec<usize> = (0..data.len()).collect();
    predict_indices(model, data, &indices, prep, device, batch, pipe)
}

/// Logits of the images `indices` of `data`, in that order ([len, K] on the
/// CPU), and the streamed files that could not be read.
pub fn predict_indices(
    model: &impl ModuleT,
    data: &Dataset,
    indices: &[usize],
    prep: &Preprocessor,
    device: Device,
    batch: usize,
    pipe: Pipeline,
) -> (Tensor, Vec<Skipped>) {
    let (c, side) = (prep.channels as i64, prep.image_size as i64);
    let (mut outs, mut filling) = (Vec::new(), None::<Tensor>);
    let unreadable = tch::no_grad(|| {
        for_each_eval_piece(data, indices, prep, batch, pipe, |p| {
            // Each piece is written into the batch's own tensor: no host copy of a whole batch.
            let x = filling
                .get_or_insert_with(|| Tensor::empty([p.batch_len as i64, c, side, side], (Kind::Float, Device::Cpu)));
            let n = p.images.labels.len() as i64;
            x.narrow(0, p.offset as i64, n).copy_(&Tensor::from_slice(&p.images.pixels).view([n, c, side, side]));
            if p.ends_batch() {
                let x = filling.take().map(|x| x.to_device(device)).unwrap_or_default();
                outs.push(model.forward_t(&x, false).to_device(Device::Cpu));
            }
        })
    });
    // An evaluation batch is larger than a training batch: give its pages back rather than keep them.
    crate::host::allocator::release_free_memory();
    (Tensor::cat(&outs, 0), unreadable)
}

/// Loss, accuracy and confusion matrix over `data` with `num_classes` classes.
pub fn evaluate(
    model: &impl ModuleT,
    data: &Dataset,
    prep: &Preprocessor,
    num_classes: usize,
    device: Device,
    batch: usize,
    pipe: Pipeline,
) -> Evaluation {
    let mut confusion = Confusion::new(num_classes);
    if data.is_empty() {
        return Evaluation { loss: f64::NAN, accuracy: 0.0, confusion, unreadable: Vec::new() };
    }
    let (logits, unreadable) = predict(model, data, prep, device, batch, pipe);
    let labels = Tensor::from_slice(&data.labels);
    let loss = logits.cross_entropy_for_logits(&labels).double_value(&[]);
    let predicted = Vec::<i64>::try_from(logits.argmax(-1, false).to_kind(Kind::Int64)).unwrap_or_default();
    for (&t, &p) in data.labels.iter().zip(&predicted) {
        confusion.add(t as usize, p as usize);
    }
    Evaluation { loss, accuracy: confusion.accuracy(), confusion, unreadable }
}

/// The additive part of an evaluation of the images `indices` of `data`: the sum of
/// their cross-entropies and their confusion counts (ranks add these up exactly),
/// with the streamed files that could not be read.
#[allow(clippy::too_many_arguments)] // the model, its data and the knobs of one pass
pub fn evaluate_part(
    model: &impl ModuleT,
    data: &Dataset,
    indices: &[usize],
    prep: &Preprocessor,
    num_classes: usize,
    device: Device,
    batch: usize,
    pipe: Pipeline,
) -> (f64, Confusion, Vec<Skipped>) {
    let mut confusion = Confusion::new(num_classes);
    if indices.is_empty() {
        return (0.0, confusion, Vec::new());
    }
    let (logits, unreadable) = predict_indices(model, data, indices, prep, device, batch, pipe);
    let truth: Vec<i64> = indices.iter().map(|&i| data.labels[i]).collect();
    let loss_sum = logits
        .log_softmax(-1, Kind::Float)
        .g_nll_loss::<Tensor>(&Tensor::from_slice(&truth), None, tch::Reduction::Sum, -100)
        .double_value(&[]);
    let predicted = Vec::<i64>::try_from(logits.argmax(-1, false).to_kind(Kind::Int64)).unwrap_or_default();
    for (&t, &p) in truth.iter().zip(&predicted) {
        confusion.add(t as usize, p as usize);
    }
    (loss_sum, confusion, unreadable)
}

/// One rank's share of an evaluation of `len` images (its loss sum and
/// confusion counts) summed over `group`: every rank gets the same, exact counts.
pub fn reduce_evaluation(
    group: &ProcessGroup,
    len: usize,
    loss_sum: f64,
    part: &Confusion,
    unreadable: Vec<Skipped>,
) -> Result<Evaluation, DistError> {
    let k = part.matrix.len();
    let mut sums = vec![loss_sum];
    sums.extend(part.matrix.iter().flatten().map(|&c| c as f64));
    let sums = Tensor::from_slice(&sums);
    group.all_reduce_sum(&[&sums])?;
    let sums = Vec::<f64>::try_from(&sums).unwrap_or_default();
    let mut confusion = Confusion::new(k);
    for (row, counts) in confusion.matrix.iter_mut().zip(sums[1..].chunks(k)) {
        *row = counts.iter().map(|&c| c as u64).collect();
    }
    let loss = sums[0] / len as f64;
    Ok(Evaluation { loss, accuracy: confusion.accuracy(), confusion, unreadable })
}
