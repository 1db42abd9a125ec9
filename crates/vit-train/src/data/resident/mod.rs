//! Device-resident data (`--data-mode device`): the decoded set uploaded once
//! to the training device as one u8 tensor `[N, C, S, S]`, each batch gathered
//! there (`index_select` of the epoch's indices, the same seeded order memory
//! mode visits: [`crate::data::batches::epoch_batches_of`]) and augmented by
//! batched tensor ops ([`ops`]) with per-image parameters drawn on the host
//! ([`params`]), then normalised to f32. No worker threads, no per-batch
//! pixel copy: on a GPU, what is left per batch is two small uploads (the
//! indices and the parameter table). On the CPU the set simply lives in a tensor.
//!
//! Batches are not bit-identical to memory mode's (other random streams, no
//! rounding to u8 between ops); their statistics are the same
//! (`tests/device_data.rs`).

use std::ops::Range;

use tch::{Device, Kind, Tensor};
use vit::data::{decoded_bytes, Dataset, Splits};
use vit::Preprocessor;

use crate::data::augment::{Augment, MixKind};
use crate::data::batches::batch_rng;
use crate::data::source::DataMode;

pub mod ops;
pub mod params;

use params::{col, BatchParams};

/// Why a set could not be kept on the device.
#[derive(Debug, thiserror::Error)]
pub enum ResidentError {
    /// The upload failed (out of device memory, usually).
    #[error(
        "cannot keep the {what} set ({mib:.0} MiB of u8 pixels) on {device:?}: {message}; use --data-mode memory \
         (or auto), or train on fewer images (--max-per-class)"
    )]
    Upload {
        /// `training` or `validation`.
        what: &'static str,
        /// Size of the pixels in MiB.
        mib: f64,
        /// The device.
        device: Device,
        /// libtorch's message.
        message: String,
    },
    /// A set streamed from its files has no decoded pixels to upload.
    #[error("the {0} set is streamed from its files, and --data-mode device needs it decoded: use --data-mode memory or device on a set that fits in memory")]
    Streamed(&'static str),
}

/// A u8 data set on a device, with its labels.
#[derive(Debug)]
pub struct ResidentSet {
    /// `[N, C, S, S]` u8.
    pixels: Tensor,
    /// `[N]` i64.
    labels: Tensor,
    len: usize,
    side: usize,
    /// The tar shards of the samples, for the epoch order ([`crate::data::batches::epoch_batches_in`]).
    shards: Option<Vec<Range<usize>>>,
    /// `[1, C, 1, 1]` f32 mean and std of the normalisation.
    mean: Tensor,
    std: Tensor,
}

/// A batch on the device, ready for the model.
#[derive(Debug)]
pub struct ResidentBatch {
    /// `[B, C, S, S]` f32, augmented and normalised.
    pub pixels: Tensor,
    /// `[B]` i64 class indices.
    pub labels: Tensor,
    /// The weight of each image's own label when the batch was mixed (the
    /// partner of image `i` is image `n - 1 - i`, as in [`crate::data::batches::HostBatch`]).
    pub mix_lam: Option<f32>,
    /// Images in the batch.
    pub len: usize,
}

impl ResidentSet {
    /// Uploads the decoded images of `data` (`what` names the split in errors).
    pub fn upload(
        data: &Dataset,
        prep: &Preprocessor,
        device: Device,
        what: &'static str,
    ) -> Result<Self, ResidentError> {
        if data.is_streamed() {
            return Err(ResidentError::Streamed(what));
        }
        let (n, c, s) = (data.len() as i64, prep.channels as i64, prep.image_size as i64);
        let norm = |v: &[f32]| Tensor::from_slice(v).view([1, c, 1, 1]).to_device(device);
        let upload = || -> Result<(Tensor, Tensor), tch::TchError> {
            let pixels = Tensor::f_from_slice(&data.pixels)?.f_view([n, c, s, s])?.f_to_device(device)?;
            let labels = Tensor::f_from_slice(&data.labels)?.f_to_device(device)?;
            Ok((pixels, labels))
        };
        let (pixels, labels) = upload().map_err(|e| ResidentError::Upload {
            what,
            mib: data.pixels.len() as f64 / f64::from(1u32 << 20),
            device,
            message: e.to_string(),
        })?;
        Ok(Self {
            pixels,
            labels,
            len: data.len(),
            side: prep.image_size,
            shards: data.shard_ranges(),
            mean: norm(&prep.mean),
            std: norm(&prep.std),
        })
    }

    /// The batches of epoch `epoch`: the order memory mode visits ([`crate::data::batches::epoch_batches_of`]).
    pub fn epoch_batches(&self, batch_size: usize, seed: u64, epoch: usize, shuffle_buffer: usize) -> Vec<Vec<usize>> {
        crate::data::batches::epoch_batches_in(
            self.len,
            self.shards.as_deref(),
            batch_size,
            seed,
            epoch,
            shuffle_buffer,
        )
    }

    /// Number of images.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when the set holds no image.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The device the set lives on.
    pub fn device(&self) -> Device {
        self.pixels.device()
    }

    /// The class indices, on the device.
    pub fn labels(&self) -> &Tensor {
        &self.labels
    }

    /// The un-augmented, normalised images `range` (evaluation).
    pub fn eval_batch(&self, range: Range<usize>) -> ResidentBatch {
        let len = range.len();
        let (start, n) = (range.start as i64, len as i64);
        let x = self.pixels.narrow(0, start, n).to_kind(Kind::Float);
        ResidentBatch {
            pixels: ops::normalize(&x, &self.mean, &self.std),
            labels: self.labels.narrow(0, start, n),
            mix_lam: None,
            len,
        }
    }

    /// The un-augmented, normalised images `indices` (one rank's share of an evaluation).
    pub fn eval_batch_of(&self, indices: &[usize]) -> ResidentBatch {
        let idx = self.index_tensor(indices);
        let x = self.pixels.index_select(0, &idx).to_kind(Kind::Float);
        ResidentBatch {
            pixels: ops::normalize(&x, &self.mean, &self.std),
            labels: self.labels.index_select(0, &idx),
            mix_lam: None,
            len: indices.len(),
        }
    }

    /// `indices` as an i64 tensor on the set's device (one small upload).
    fn index_tensor(&self, indices: &[usize]) -> Tensor {
        let idx: Vec<i64> = indices.iter().map(|&i| i as i64).collect();
        Tensor::from_slice(&idx).to_device(self.device())
    }

    /// Training batch `batch` of epoch `epoch` (run seed `seed`): the images
    /// `indices`, augmented under `aug` with parameters from the batch's own RNG.
    pub fn train_batch(
        &self,
        indices: &[usize],
        aug: &Augment,
        seed: u64,
        epoch: usize,
        batch: usize,
    ) -> ResidentBatch {
        let p = BatchParams::draw(aug, self.side, indices.len(), &mut batch_rng(seed, epoch, batch));
        self.augmented(indices, aug, &p)
    }

    /// The images `indices` augmented with the parameters `p` (drawn for `aug`).
    pub fn augmented(&self, indices: &[usize], aug: &Augment, p: &BatchParams) -> ResidentBatch {
        let idx = self.index_tensor(indices);
        let mut x = self.pixels.index_select(0, &idx).to_kind(Kind::Float);
        let table = p.to_tensor(self.device());
        if aug.crop_scale.0 < 1.0 {
            x = ops::resized_crop(&x, &table, col::CROP);
        }
        if aug.crop_padding > 0 {
            let flip = aug.hflip.then_some(col::FLIP);
            x = ops::padded_crop_flip(&x, &table, aug.crop_padding as i64, col::SHIFT, flip);
        } else if aug.hflip {
            x = ops::flip(&x, &table, col::FLIP);
        }
        if aug.color_jitter > 0.0 {
            x = ops::color_jitter(&x, &table, col::JITTER);
        }
        if aug.random_erasing > 0.0 {
            x = ops::erase(&x, &table, col::ERASE, p.noise_key);
        }
        // CutMix pastes pixels before normalisation, mixup blends normalised ones (as the CPU path).
        if let Some(cut) = p.mix.and_then(|m| m.cut) {
            x = ops::cutmix(&x, cut);
        }
        let mut x = ops::normalize(&x, &self.mean, &self.std);
        if let Some(MixKind::Mixup(lam)) = p.mix.map(|m| m.kind) {
            x = ops::mixup(&x, lam);
        }
        ResidentBatch {
            pixels: x,
            labels: self.labels.index_select(0, &idx),
            mix_lam: p.mix.map(|m| m.kind.lam()),
            len: indices.len(),
        }
    }
}

/// Both splits on the device.
#[derive(Debug)]
pub struct ResidentSplits {
    /// The training split.
    pub train: ResidentSet,
    /// The evaluation split (possibly empty).
    pub val: ResidentSet,
}

impl ResidentSplits {
    /// Uploads both decoded splits to `device`.
    pub fn upload(splits: &Splits, prep: &Preprocessor, device: Device) -> Result<Self, ResidentError> {
        Ok(Self {
            train: ResidentSet::upload(&splits.train, prep, device, "training")?,
            val: ResidentSet::upload(&splits.val, prep, device, "validation")?,
        })
    }
}

/// A split as the trainer reads it: u8 images on the host (memory or stream
/// mode, batched by worker threads) or a set resident on the device.
#[derive(Debug, Clone, Copy)]
pub enum Split<'a> {
    /// Host images, batched by [`crate::data::batches`].
    Host(&'a Dataset),
    /// Images on the device, batched by [`ResidentSet`].
    Resident(&'a ResidentSet),
}

impl<'a> From<&'a Dataset> for Split<'a> {
    fn from(d: &'a Dataset) -> Self {
        Self::Host(d)
    }
}

impl<'a> From<&'a ResidentSet> for Split<'a> {
    fn from(d: &'a ResidentSet) -> Self {
        Self::Resident(d)
    }
}

/// Resolves `auto` (`requested`) to `device` where it pays: on CUDA, when the
/// decoded set (`loaded`, as `memory` mode loaded it) fits `budget` bytes of
/// device memory; elsewhere, and for streamed sets, `loaded` stays, so `auto` on the
/// CPU behaves as it always has. Any explicit mode is kept. Says what it picked and why.
pub fn choose(requested: DataMode, loaded: DataMode, splits: &Splits, device: Device, budget: Option<u64>) -> DataMode {
    if requested != DataMode::Auto || loaded != DataMode::Memory || !device.is_cuda() {
        return loaded;
    }
    let bytes = decoded_bytes(splits.train.len() + splits.val.len(), splits.train.image_len);
    let mib = |b: u64| b as f64 / f64::from(1u32 << 20);
    match budget {
        Some(budget) if bytes <= budget => {
            log::info!(
                "data: the decoded images take {:.0} MiB, within the {:.0} MiB device budget (half the free memory \
                 of {device:?}): keeping them there (--data-mode device)",
                mib(bytes),
                mib(budget)
            );
            DataMode::Device
        }
        Some(budget) => {
            log::info!(
                "data: the decoded images take {:.0} MiB, over the {:.0} MiB device budget (half the free memory \
                 of {device:?}): batching them on the host (--data-mode memory)",
                mib(bytes),
                mib(budget)
            );
            DataMode::Memory
        }
        None => {
            log::info!(
                "data: the free memory of {device:?} is unknown, so the images stay on the host (--data-mode \
                 memory); --data-mode device keeps them on the device"
            );
            DataMode::Memory
        }
    }
}
