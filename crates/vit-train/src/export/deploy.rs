//! `vit-train export --input uint8 --precision fp16 --quantize int8`: the
//! deployment formats of an export ([`ModelFormat`]) as command-line flags,
//! and their verification (int8: [`super::int8`]). A raw-pixel graph is fed the same decoded u8 images that tch
//! sees normalised; an fp16 graph is held to a float16 tolerance instead of
//! the float32 one.

use std::path::Path;

use anyhow::{Context, Result};
use clap::{Args, ValueEnum};
use rand::{Rng, SeedableRng};
use tch::{nn::ModuleT, Tensor};
use tract_onnx::prelude::*;
use vit::format::{InputKind, ModelFormat, Precision};
use vit::{Preprocessor, ViTConfig};

use crate::model::ViT;

use crate::export::int8::{
    CalibrationArg, Int8Options, DEFAULT_CALIBRATION_IMAGES, DEFAULT_MAX_ACCURACY_DROP, DEFAULT_PERCENTILE,
};
use crate::export::verify::{compare, Comparison};
use crate::run::dir::RunDir;

/// Tolerance of an fp16 graph against tch's float32 logits: float16 keeps
/// about 3 significant digits through every layer.
pub const FP16_ATOL: f32 = 5e-2;
/// Relative part of the fp16 tolerance.
pub const FP16_RTOL: f32 = 2e-2;

/// `--input` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum InputArg {
    /// Normalised f32 `pixel_values [batch, C, H, W]`.
    Float32,
    /// Decoded u8 pixels `[batch, H, W, C]` (NHWC); the graph normalises them.
    Uint8,
}

/// `--precision` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PrecisionArg {
    /// float32 weights and activations.
    Fp32,
    /// float16 weights and activations, float32 input/output, LayerNorm and Softmax in float32.
    Fp16,
    /// Not a precision of its own: refused with a pointer to --quantize int8,
    /// which calibrates and gates on accuracy.
    Int8,
}

/// `--quantize` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum QuantizeArg {
    /// Static int8 in QDQ form: int8 weights per output channel, uint8
    /// activations with calibrated ranges.
    Int8,
}

/// The deployment flags of `vit-train export`.
#[derive(Debug, Clone, Args)]
pub struct DeployArgs {
    /// Graph input: float32 (normalised NCHW) or uint8 (decoded pixels, [batch, H, W, C],
    /// normalised inside the graph).
    #[arg(long, value_enum, default_value_t = InputArg::Float32)]
    pub input: InputArg,
    /// Weights and activations: fp32, or fp16 with float32 input and output.
    #[arg(long, value_enum, default_value_t = PrecisionArg::Fp32)]
    pub precision: PrecisionArg,
    /// Quantise: int8 weights and activations, calibrated on training images and
    /// written only when its validation accuracy is within --max-accuracy-drop of float32's.
    #[arg(long, value_enum, conflicts_with = "precision")]
    pub quantize: Option<QuantizeArg>,
    /// With --quantize: training images the activation ranges are measured on (seeded choice).
    #[arg(long, default_value_t = DEFAULT_CALIBRATION_IMAGES, requires = "quantize")]
    pub calibration_images: usize,
    /// With --quantize: range of an activation: all values seen (minmax), or the
    /// (100 - p)th to pth percentiles (percentile, p from --calibration-percentile).
    #[arg(long, value_enum, default_value_t = CalibrationArg::Percentile, requires = "quantize")]
    pub calibration_method: CalibrationArg,
    /// With --calibration-method percentile: p, in (50, 100].
    #[arg(long, default_value_t = DEFAULT_PERCENTILE, value_parser = percentile, requires = "quantize")]
    pub calibration_percentile: f32,
    /// With --quantize: largest accepted drop of validation accuracy, in points (percent).
    #[arg(long, default_value_t = DEFAULT_MAX_ACCURACY_DROP, value_parser = vit::flags::non_negative_f64, requires = "quantize")]
    pub max_accuracy_drop: f64,
}

impl DeployArgs {
    /// The format these flags ask for.
    pub fn format(&self) -> ModelFormat {
        let input = match self.input {
            InputArg::Float32 => InputKind::Float32Nchw,
            InputArg::Uint8 => InputKind::Uint8Nhwc,
        };
        let precision = match (self.quantize, self.precision) {
            (Some(QuantizeArg::Int8), _) | (_, PrecisionArg::Int8) => Precision::Int8,
            (None, PrecisionArg::Fp32) => Precision::Fp32,
            (None, PrecisionArg::Fp16) => Precision::Fp16,
        };
        ModelFormat { input, precision }
    }

    /// Refuses `--precision int8`, naming the flag that writes int8.
    pub fn check(&self) -> Result<()> {
        if self.precision == PrecisionArg::Int8 {
            anyhow::bail!(
                "int8 is written by --quantize int8 (it calibrates on training images and checks validation \
                 accuracy): vit-train export --run RUN --quantize int8 [--calibration-images N] [--max-accuracy-drop POINTS]"
            );
        }
        Ok(())
    }

    /// The calibration and gate of an int8 export.
    pub fn int8(&self) -> Int8Options {
        Int8Options {
            calibration_images: self.calibration_images,
            method: self.calibration_method.method(self.calibration_percentile),
            max_accuracy_drop: self.max_accuracy_drop,
        }
    }
}

/// Parses `--calibration-percentile`.
fn percentile(s: &str) -> Result<f32, String> {
    let p = vit::flags::finite_f32(s)?;
    if p > 50.0 && p <= 100.0 {
        Ok(p)
    } else {
        Err(format!("{p} is not in (50, 100]"))
    }
}

/// Up to `n` u8 CHW validation images of the run's data, else seeded random pixels;
/// with the count and whether they are real.
pub fn verification_images(dir: &RunDir, cfg: &ViTConfig, n: usize) -> (Vec<u8>, usize, bool) {
    let prep = Preprocessor::from_config(cfg);
    if let Some(val) = crate::export::target::validation_sample(dir, cfg, n) {
        let count = val.len();
        return (val.pixels, count, true);
    }
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
    ((0..n * prep.image_len()).map(|_| rng.random::<u8>()).collect(), n, false)
}

/// Runs `images` (u8 CHW) through tch (normalised) and through the ONNX file
/// in `format` with tract; compares logits with the format's tolerance
/// (`atol` for float32 graphs, [`FP16_ATOL`] / [`FP16_RTOL`] at least for fp16).
pub fn verify_format(
    model: &ViT,
    cfg: &ViTConfig,
    onnx: &Path,
    format: ModelFormat,
    images: &[u8],
    n: usize,
    atol: f32,
) -> Result<Comparison> {
    let prep = Preprocessor::from_config(cfg);
    let (c, s) = (cfg.in_channels, cfg.image_size);
    let pixels = prep.normalize(images);
    let x = Tensor::from_slice(&pixels).view([n as i64, c as i64, s as i64, s as i64]);
    let expected = Vec::<f32>::try_from(tch::no_grad(|| model.forward_t(&x, false)).flatten(0, -1))?;
    let model =
        tract_onnx::onnx().model_for_path(onnx).with_context(|| format!("tract cannot load {}", onnx.display()))?;
    let input: Tensor_ = match format.input {
        InputKind::Float32Nchw => tract_ndarray::Array4::from_shape_vec([n, c, s, s], pixels)?.into_tensor(),
        InputKind::Uint8Nhwc => tract_ndarray::Array4::from_shape_vec([n, c, s, s], images.to_vec())?
            .permuted_axes([0, 2, 3, 1])
            .as_standard_layout()
            .to_owned()
            .into_tensor(),
    };
    let plan = model
        .with_input_fact(0, input.datum_type().fact(input.shape()).into())?
        .into_optimized()
        .with_context(|| format!("tract cannot optimise {}", onnx.display()))?
        .into_runnable()?;
    let outputs = plan.run(tvec!(input.into()))?;
    let actual: Vec<f32> = outputs[0].to_plain_array_view::<f32>()?.iter().copied().collect();
    let (atol, rtol) = match format.precision {
        Precision::Fp16 => (atol.max(FP16_ATOL), FP16_RTOL),
        _ => (atol, 1e-4),
    };
    Ok(compare(&actual, &expected, atol, rtol))
}

/// tract's tensor type, named apart from tch's.
type Tensor_ = tract_onnx::prelude::Tensor;
