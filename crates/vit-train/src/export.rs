//! `vit-train export`: checkpoint -> ONNX via the light crate's writer, then
//! self-verification with tract against tch on real validation images (random
//! inputs when the data is gone). An export that does not reproduce the
//! trained logits within `atol` fails, and never replaces the file it was
//! meant to: it is verified under a side name first and moved into place
//! only when it passes; a failing one is kept as `NAME.failed.onnx`.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use rand::{Rng, SeedableRng};
use tch::{nn, nn::ModuleT, Device, Kind, Tensor};
use vit::data::{load_splits, LoadOptions};
use vit::onnx::{write_model, ExportOptions};
use vit::{ModelMetadata, NamedTensors, Preprocessor, TensorData, ViTConfig};

use crate::batches::{make_batch, Augment};
use crate::checkpoint;
use crate::deploy::int8::{Int8Accuracy, Int8Options};
use crate::memory::catch_allocation;
use crate::model::ViT;
use crate::run_dir::{Checkpoint, RunDir};
use crate::verify::{compare, tract_logits, Comparison};

/// Default verification tolerance on |tch - tract| logits.
pub const DEFAULT_ATOL: f32 = 1e-4;
/// Default number of images used for verification.
pub const DEFAULT_VERIFY_IMAGES: usize = 16;

/// What to export and how to check it.
#[derive(Debug, Clone)]
pub struct ExportRequest {
    /// Run folder (config, labels, checkpoints).
    pub run: PathBuf,
    /// Output file (default: the run folder's ONNX file).
    pub out: Option<PathBuf>,
    /// Which checkpoint to export.
    pub checkpoint: Checkpoint,
    /// Force ONNX external data.
    pub external_data: bool,
    /// Verification tolerance on |tch - tract| logits.
    pub atol: f32,
    /// Images used for verification.
    pub verify_images: usize,
    /// Set `test_time_flip` for this export (`None`: as the run's config says).
    /// When it changes the config, the run's accuracy no longer describes the
    /// file, so none is recorded.
    pub test_time_flip: Option<bool>,
    /// Input kind and precision of the graph (default: normalised f32, fp32).
    pub format: vit::format::ModelFormat,
    /// Calibration and accuracy gate of an int8 `format`.
    pub int8: Int8Options,
}

impl ExportRequest {
    /// The default export of `run`: its last checkpoint into the run folder,
    /// embedded weights, [`DEFAULT_ATOL`], [`DEFAULT_VERIFY_IMAGES`], the run's test-time flip.
    pub fn new(run: impl Into<PathBuf>) -> Self {
        Self {
            run: run.into(),
            out: None,
            checkpoint: Checkpoint::Last,
            external_data: false,
            atol: DEFAULT_ATOL,
            verify_images: DEFAULT_VERIFY_IMAGES,
            test_time_flip: None,
            format: Default::default(),
            int8: Int8Options::default(),
        }
    }
}

/// What an export wrote and measured.
#[derive(Debug, Clone)]
pub struct ExportReport {
    /// The ONNX file.
    pub path: PathBuf,
    /// Its size in bytes (external data included).
    pub bytes: u64,
    /// tch vs tract comparison.
    pub comparison: Comparison,
    /// Images compared, and whether they were real validation images.
    pub images: usize,
    /// True when real images were used.
    pub real_images: bool,
    /// An int8 export: its validation accuracy next to the float graph's
    /// (then `comparison` is int8 against float32 logits in ONNX Runtime, not
    /// held to a tolerance).
    pub int8: Option<Int8Accuracy>,
}

/// A VarStore's variables as plain tensors for the writer.
pub fn named_tensors(vs: &nn::VarStore) -> Result<NamedTensors> {
    let mut out = NamedTensors::new();
    for (name, t) in checkpoint::model_tensors(vs) {
        let shape: Vec<usize> = t.size().iter().map(|&d| d as usize).collect();
        let data = Vec::<f32>::try_from(t.to_device(Device::Cpu).to_kind(Kind::Float).flatten(0, -1))
            .with_context(|| format!("tensor `{name}` is not readable as f32"))?;
        out.insert(name, TensorData { shape, data });
    }
    Ok(out)
}

/// Up to `n` validation images of the run's data (u8, as decoded), when the data is
/// still there: the real inputs every export is verified on.
pub(crate) fn validation_sample(dir: &RunDir, cfg: &ViTConfig, n: usize) -> Option<vit::data::Dataset> {
    let prep = Preprocessor::from_config(cfg);
    let r = dir.read_run_options().ok()?;
    let opts = LoadOptions {
        val_fraction: r.val_fraction,
        seed: cfg.train.seed,
        max_per_class: Some(n.div_ceil(cfg.num_classes).max(1)),
        // Verification needs some real images, not all of them.
        allow_unreadable: true,
    };
    let val = load_splits(&r.data, &prep, &opts).ok()?.val;
    let idx: Vec<usize> = (0..val.len().min(n)).collect();
    (!idx.is_empty()).then(|| val.subset(&idx))
}

/// Up to `n` normalised validation images of the run's data, else seeded random inputs.
fn verification_inputs(dir: &RunDir, cfg: &ViTConfig, n: usize) -> (Vec<f32>, usize, bool) {
    let prep = Preprocessor::from_config(cfg);
    if let Some(val) = validation_sample(dir, cfg, n) {
        let idx: Vec<usize> = (0..val.len()).collect();
        return (make_batch(&val, &idx, &prep, Augment::default(), None).pixels, idx.len(), true);
    }
    (random_inputs(cfg, n), n, false)
}

/// `n` seeded random normalised images in [-1, 1) for `cfg`, flattened.
pub(crate) fn random_inputs(cfg: &ViTConfig, n: usize) -> Vec<f32> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
    let len = n * Preprocessor::from_config(cfg).image_len();
    (0..len).map(|_| rng.random_range(-1.0f32..1.0)).collect()
}

/// Runs the same inputs through tch and the ONNX file; compares logits.
pub fn verify_export(
    model: &ViT,
    cfg: &ViTConfig,
    onnx: &Path,
    pixels: &[f32],
    n: usize,
    atol: f32,
) -> Result<Comparison> {
    let shape = [n, cfg.in_channels, cfg.image_size, cfg.image_size];
    let x = Tensor::from_slice(pixels).view([n as i64, shape[1] as i64, shape[2] as i64, shape[3] as i64]);
    let expected = Vec::<f32>::try_from(tch::no_grad(|| model.forward_t(&x, false)).flatten(0, -1))?;
    let actual = tract_logits(onnx, pixels, shape)?;
    Ok(compare(&actual, &expected, atol, 1e-4))
}

/// Exports a run's checkpoint and verifies it; errors if verification fails.
/// Locks the run folder for the time of the export.
pub fn export_run(req: &ExportRequest) -> Result<ExportReport> {
    export_in(&RunDir::open(&req.run)?, req)
}

/// [`export_run`] in a run folder this process has open already (`req.run` is not used).
pub fn export_in(dir: &RunDir, req: &ExportRequest) -> Result<ExportReport> {
    let (mut cfg, labels) =
        dir.read_trained().with_context(|| format!("{} is not a vit-train run folder", dir.path().display()))?;
    let flip = req.test_time_flip.unwrap_or(cfg.test_time_flip);
    let accuracy_applies = flip == cfg.test_time_flip;
    cfg.test_time_flip = flip;
    let ckpt = dir.checkpoint_path(req.checkpoint);
    let summary = dir.read_summary().ok();
    if req.checkpoint == Checkpoint::Best && !ckpt.exists() && summary.as_ref().is_some_and(|s| s.best_epoch.is_none())
    {
        bail!(
            "{} has no best.safetensors: the run had no validation images, so no epoch was chosen by accuracy; \
             export the final weights with --checkpoint last",
            dir.path().display()
        );
    }
    let mut vs = nn::VarStore::new(Device::Cpu);
    let model = catch_allocation("model", || ViT::new(&vs.root(), &cfg))?;
    checkpoint::load_weights(&mut vs, &ckpt)?;
    let val_accuracy = summary
        .and_then(|s| match req.checkpoint {
            Checkpoint::Best => s.best_val_accuracy,
            Checkpoint::Last => s.val_accuracy,
        })
        .filter(|_| accuracy_applies);
    let path = req.out.clone().unwrap_or_else(|| dir.onnx_path());
    let meta = ModelMetadata { config: cfg.clone(), labels, val_accuracy };
    let target = Target { path, external_data: req.external_data, atol: req.atol, source: &ckpt, format: req.format };
    let count = req.verify_images.max(1);
    if req.format.precision == vit::format::Precision::Int8 {
        // int8 is judged by validation accuracy against the float graph, not by a logit tolerance.
        return crate::deploy::int8::export(dir, &meta, &named_tensors(&vs)?, &target, &req.int8, count);
    }
    if req.format.is_default() {
        let (pixels, n, real) = verification_inputs(dir, &cfg, count);
        write_verified(&model, &vs, &meta, &target, &Inputs { samples: Samples::Normalised(&pixels), n, real })
    } else {
        // Raw-pixel and fp16 graphs are checked on u8 images, as a client feeds them.
        let (images, n, real) = crate::deploy::verification_images(dir, &cfg, count);
        write_verified(&model, &vs, &meta, &target, &Inputs { samples: Samples::Pixels(&images), n, real })
    }
}

/// Where an export goes and how it is checked.
#[derive(Debug)]
pub(crate) struct Target<'a> {
    /// The ONNX file.
    pub path: PathBuf,
    /// Force ONNX external data.
    pub external_data: bool,
    /// Verification tolerance on |tch - tract| logits.
    pub atol: f32,
    /// The weights exported, for messages.
    pub source: &'a Path,
    /// Input kind and precision of the file.
    pub format: vit::format::ModelFormat,
}

/// Verification images `[n, C, H, W]`, flattened, in the form the format is checked with.
#[derive(Debug)]
pub(crate) enum Samples<'a> {
    /// Normalised floats (the default float32 graph).
    Normalised(&'a [f32]),
    /// Decoded u8 pixels (raw-pixel and fp16 graphs: tch sees them normalised).
    Pixels(&'a [u8]),
}

/// What an export is verified on.
#[derive(Debug)]
pub(crate) struct Inputs<'a> {
    /// The images.
    pub samples: Samples<'a>,
    /// Number of images.
    pub n: usize,
    /// True when they are real validation images.
    pub real: bool,
}

/// Writes `vs` as ONNX under a side name, verifies it against `model` with
/// tract, and moves it (with `config.json` and `preprocessor_config.json`
/// beside it) into place only when it passes.
pub(crate) fn write_verified(
    model: &ViT,
    vs: &nn::VarStore,
    meta: &ModelMetadata,
    target: &Target,
    inputs: &Inputs,
) -> Result<ExportReport> {
    let (cfg, path) = (&meta.config, &target.path);
    let weights = named_tensors(vs)?;
    let write = |to: &Path| {
        write_model(to, meta, &weights, &ExportOptions { external_data: target.external_data, format: target.format })
            .with_context(|| format!("cannot export {}", target.source.display()))
    };
    // Verify first, replace after: the file at `path` changes only to a verified one.
    let staged = Staged::new(path)?;
    write(&staged.file)?;
    let verified = match inputs.samples {
        Samples::Normalised(pixels) => verify_export(model, cfg, &staged.file, pixels, inputs.n, target.atol),
        Samples::Pixels(images) => {
            crate::deploy::verify_format(model, cfg, &staged.file, target.format, images, inputs.n, target.atol)
        }
    };
    let why = match verified {
        Ok(comparison) if comparison.ok() => {
            staged.commit(path)?;
            crate::hf_files::write_beside(path, meta)?;
            let bytes = [path.clone(), with_data_suffix(path)]
                .iter()
                .map(|p| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0))
                .sum();
            return Ok(ExportReport {
                path: path.clone(),
                bytes,
                comparison,
                images: inputs.n,
                real_images: inputs.real,
                int8: None,
            });
        }
        Ok(comparison) => format!("tract and tch logits differ beyond atol {:e} ({comparison})", target.atol),
        Err(e) => format!("{e:#}"),
    };
    drop(staged);
    let failed = failed_path(path);
    let kept = match write(&failed) {
        Ok(()) => format!("the failing file is {} for inspection", failed.display()),
        Err(e) => format!("the failing file could not be kept either ({e:#})"),
    };
    let previous = if path.exists() { "is unchanged" } else { "was not written" };
    bail!("export verification failed: {why}; {} {previous}, {kept}", path.display())
}

/// An export written under its final file name inside a hidden folder beside
/// the target (`.NAME.tmp-PID/NAME`), so the external data reference, which
/// names the file, stays valid when the verified file moves into place. The
/// folder is removed on drop; a kill leaves it to the run folder's cleanup.
#[derive(Debug)]
pub(crate) struct Staged {
    folder: PathBuf,
    /// The file to write and verify.
    pub file: PathBuf,
}

impl Staged {
    /// Creates the hidden folder for `target`.
    pub(crate) fn new(target: &Path) -> Result<Self> {
        let name = target
            .file_name()
            .with_context(|| format!("cannot export to {}: it has no file name", target.display()))?;
        let parent = target.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
        let folder = parent.join(format!(".{}.tmp-{}", name.to_string_lossy(), std::process::id()));
        let _ = std::fs::remove_dir_all(&folder);
        std::fs::create_dir(&folder).with_context(|| {
            format!("cannot write {}: cannot create the folder {} to verify it in", target.display(), folder.display())
        })?;
        Ok(Self { file: folder.join(name), folder })
    }

    /// Moves the file (and its external data, if any) over `target`.
    pub(crate) fn commit(&self, target: &Path) -> Result<()> {
        let moves =
            [(with_data_suffix(&self.file), with_data_suffix(target)), (self.file.clone(), target.to_path_buf())];
        for (from, to) in moves.iter().filter(|(from, _)| from.exists()) {
            std::fs::rename(from, to)
                .with_context(|| format!("cannot move the verified export {} to {}", from.display(), to.display()))?;
        }
        Ok(())
    }
}

impl Drop for Staged {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.folder);
    }
}

/// `<file>.data`: where the writer puts external weights.
pub(crate) fn with_data_suffix(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(vit::onnx::EXTERNAL_DATA_SUFFIX);
    PathBuf::from(s)
}

/// `model.onnx` -> `model.failed.onnx`: where an export that failed verification is kept.
pub fn failed_path(path: &Path) -> PathBuf {
    let stem = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    let name = match path.extension() {
        Some(ext) => format!("{stem}.failed.{}", ext.to_string_lossy()),
        None => format!("{stem}.failed"),
    };
    path.with_file_name(name)
}
