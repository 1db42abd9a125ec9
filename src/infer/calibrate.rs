//! Calibration of an int8 export: runs the float graph of
//! [`crate::onnx::calibration_model`] on training images with ONNX Runtime
//! and turns the values of every activation it exposes into the (min, max)
//! range its int8 version covers. Lives here, not in the writer, because it
//! needs a runtime; the writer only takes the ranges.

use std::collections::BTreeMap;

use ort::session::Session;
use ort::value::TensorRef;

use super::runtime::environment;
use super::InferError;

/// Values kept per activation and batch for [`RangeMethod::Percentile`]: an
/// evenly strided sample, so memory stays bounded whatever the tensor size.
const SAMPLES_PER_BATCH: usize = 1 << 16;

/// How the range of an activation is chosen from its calibration values.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum RangeMethod {
    /// Smallest and largest value seen: nothing clips, outliers widen the steps.
    MinMax,
    /// The `p` and `100 - p` percentiles (e.g. 99.99): rare outliers clip,
    /// the common values get finer steps.
    Percentile(f32),
}

/// The calibration images: `n` normalised `[C, H, W]` images, flattened.
#[derive(Debug, Clone, Copy)]
pub struct CalibrationImages<'a> {
    /// The pixels, `n * C * H * W` values.
    pub pixels: &'a [f32],
    /// Number of images.
    pub n: usize,
    /// `[C, H, W]` of one image.
    pub shape: [usize; 3],
}

/// Runs `model` (a calibration graph: one float input, the activations
/// `targets` as outputs) on `images` in batches of `batch` on the CPU, and
/// returns each target's range by `method`.
pub fn calibrate(
    model: &[u8],
    targets: &[String],
    images: CalibrationImages<'_>,
    batch: usize,
    method: RangeMethod,
) -> Result<BTreeMap<String, (f32, f32)>, InferError> {
    let mut session = Session::builder(environment()?)
        .map_err(InferError::ort("creating a session builder"))?
        .commit_from_memory(model)
        .map_err(InferError::ort("loading the calibration graph"))?;
    let input = session.inputs()[0].name().to_owned();
    let [c, h, w] = images.shape;
    let len = c * h * w;
    let mut stats: BTreeMap<&str, Stats> = targets.iter().map(|t| (t.as_str(), Stats::default())).collect();
    for start in (0..images.n).step_by(batch.max(1)) {
        let b = (images.n - start).min(batch.max(1));
        let px = &images.pixels[start * len..(start + b) * len];
        let x = TensorRef::from_array_view(([b, c, h, w], px)).map_err(InferError::ort("wrapping the images"))?;
        let outputs = session.run(ort::inputs![input.as_str() => x]).map_err(InferError::ort("running calibration"))?;
        for (name, s) in &mut stats {
            let value = outputs
                .get(name)
                .ok_or_else(|| InferError::Output(format!("the calibration graph has no output `{name}`")))?;
            let (_, data) = value.try_extract_tensor::<f32>().map_err(InferError::ort("reading an activation"))?;
            s.add(data, method != RangeMethod::MinMax);
        }
    }
    Ok(stats.into_iter().map(|(name, s)| (name.to_owned(), s.range(method))).collect())
}

/// What calibration keeps of one activation.
#[derive(Debug)]
struct Stats {
    min: f32,
    max: f32,
    sample: Vec<f32>,
}

impl Default for Stats {
    fn default() -> Self {
        Self { min: f32::INFINITY, max: f32::NEG_INFINITY, sample: Vec::new() }
    }
}

impl Stats {
    fn add(&mut self, data: &[f32], keep_sample: bool) {
        for &v in data {
            self.min = self.min.min(v);
            self.max = self.max.max(v);
        }
        if keep_sample {
            let stride = data.len().div_ceil(SAMPLES_PER_BATCH).max(1);
            self.sample.extend(data.iter().step_by(stride));
        }
    }

    fn range(mut self, method: RangeMethod) -> (f32, f32) {
        let RangeMethod::Percentile(p) = method else { return (self.min, self.max) };
        if self.sample.is_empty() {
            return (self.min, self.max);
        }
        self.sample.sort_unstable_by(f32::total_cmp);
        let at = |q: f32| {
            let i = ((q / 100.0) * (self.sample.len() - 1) as f32).round() as usize;
            self.sample[i.min(self.sample.len() - 1)]
        };
        (at(100.0 - p), at(p))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_clip_outliers_and_min_max_does_not() {
        let mut data: Vec<f32> = (0..10_000).map(|i| i as f32 / 10_000.0).collect();
        data.push(1000.0);
        let mut s = Stats::default();
        s.add(&data, true);
        assert_eq!(s.range(RangeMethod::MinMax), (0.0, 1000.0));
        let mut s = Stats::default();
        s.add(&data, true);
        let (lo, hi) = s.range(RangeMethod::Percentile(99.9));
        assert!(lo < 0.01 && (0.99..1.0).contains(&hi), "{lo} {hi}");
    }
}
