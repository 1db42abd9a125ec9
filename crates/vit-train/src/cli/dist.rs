//! `vit-train fit`'s data-parallel flags and the start of a rank: under torchrun
//! (which sets `WORLD_SIZE` and friends) `fit` joins a c10d process group, picks
//! `cuda:LOCAL_RANK` on a GPU box and leaves the run folder to rank 0.

use std::time::Duration;

use anyhow::{bail, Result};
use clap::Args;
use tch::Device;

use crate::dist::{Backend, Launch, ProcessGroup};

/// Flags of data-parallel training (used only when launched by torchrun).
#[derive(Debug, Clone, Args)]
pub struct DistArgs {
    /// c10d backend between ranks (default: nccl on CUDA, gloo on the CPU).
    #[arg(long, value_enum)]
    pub dist_backend: Option<Backend>,
    /// Seconds a rendezvous or collective may wait for the other ranks before the run fails.
    #[arg(long, default_value_t = 60.0, value_parser = positive_seconds)]
    pub dist_timeout: f64,
}

/// The longest `--dist-timeout`: a day. Longer, a dead peer holds every other
/// rank (and its GPU) as good as forever, and past ~1e10 s c10d's chrono
/// arithmetic overflows.
const MAX_DIST_TIMEOUT_S: f64 = 86_400.0;

fn positive_seconds(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(v) if v.is_finite() && v > 0.0 && v <= MAX_DIST_TIMEOUT_S => Ok(v),
        Ok(v) if v.is_finite() && v > MAX_DIST_TIMEOUT_S => {
            Err(format!("{v} s is longer than a day ({MAX_DIST_TIMEOUT_S} s), the longest a rank may wait"))
        }
        _ => Err("expected a positive number of seconds, at most 86400 (a day)".into()),
    }
}

/// This process's rank when launched by torchrun: the launch and the device it
/// trains on (`cuda:LOCAL_RANK` when `device` is CUDA). `None`: a plain run.
pub fn launch(device: Device) -> Result<Option<(Launch, Device)>> {
    let Some(launch) = Launch::from_env()? else { return Ok(None) };
    let device = match device {
        Device::Cuda(_) => Device::Cuda(launch.local_rank),
        other => other,
    };
    Ok(Some((launch, device)))
}

/// Joins the process group of `launch` for training on `device`.
pub fn join(a: &DistArgs, launch: &Launch, device: Device) -> Result<ProcessGroup> {
    let backend = a.dist_backend.unwrap_or(if device.is_cuda() { Backend::Nccl } else { Backend::Gloo });
    match backend {
        Backend::Gloo if device.is_cuda() => {
            bail!("--dist-backend gloo reduces CPU tensors only: train on the CPU (--device cpu) or use nccl")
        }
        Backend::Nccl if !device.is_cuda() => {
            bail!("--dist-backend nccl reduces CUDA tensors only: train on CUDA (--device cuda) or use gloo")
        }
        _ => {}
    }
    let group = ProcessGroup::join(launch, backend, Duration::from_secs_f64(a.dist_timeout))?;
    log::debug!(
        "joined rank {} of {} over {backend:?} at {}:{}",
        launch.rank,
        launch.world_size,
        launch.master_addr,
        launch.master_port
    );
    Ok(group)
}

/// `fit` on a rank other than 0: same config and data as rank 0, no run folder
/// (on `--resume` its run.json and config.json are read, never locked or written),
/// warnings only on the console, no export.
pub(super) fn fit_other_rank(a: &super::FitArgs, launch: &Launch, device: Device) -> Result<()> {
    log::set_max_level(log::LevelFilter::Warn);
    let (cfg, run, init_checkpoint) = if a.resume {
        let dir = crate::run::dir::RunDir::inspect(&a.out)?;
        let mut run = dir.read_run_options()?;
        run.allow_skipped |= a.allow_skipped;
        (super::resume_config(&dir, a)?, run, None)
    } else {
        let (cfg, checkpoint) = super::resolve_config(a)?;
        (cfg, super::new_run_options(a)?, checkpoint)
    };
    let opts = crate::train::fit::FitOptions {
        run,
        device,
        resume: a.resume,
        eval_batch: a.eval_batch_size,
        progress: false,
        data: a.data_pipeline.options(),
        init_checkpoint,
    };
    let group = join(&a.dist, launch, device)?;
    crate::train::fit::fit_rank(None, cfg, &opts, Some(group))?;
    Ok(())
}
