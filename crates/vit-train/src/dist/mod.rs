//! Data-parallel training over PyTorch's own collective library, c10d (through the
//! C++ shim's `dist.cpp`): the rendezvous that `torchrun` describes in the
//! environment, a process group, and the few collectives training needs
//! (bucketed gradient averaging, broadcast from rank 0, barrier). See the README's
//! "Distributed training" section for the exact semantics.

pub mod agree;
pub mod sampler;

use std::cell::RefCell;
use std::ffi::{c_char, c_int, CString};
use std::sync::atomic::{AtomicPtr, Ordering};
use std::time::{Duration, Instant};

use tch::{nn, Kind, Tensor};

use crate::shim::{check, ShimError};

/// Gradient bucket size, as DDP's default `bucket_cap_mb`.
pub const BUCKET_BYTES: usize = 25 << 20;

/// What can go wrong setting up or using the process group.
#[derive(Debug, thiserror::Error)]
pub enum DistError {
    /// A torchrun variable is missing or malformed.
    #[error("environment variable {name}: {message} (launch with torchrun, which sets RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and MASTER_PORT)")]
    Env {
        /// The variable.
        name: &'static str,
        /// What is wrong with it.
        message: String,
    },
    /// c10d raised an error (rendezvous, collective, timeout, dead peer).
    #[error(transparent)]
    C10d(#[from] ShimError),
}

/// Which c10d backend carries the collectives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Backend {
    /// Gloo (CPU tensors).
    Gloo,
    /// NCCL (CUDA tensors).
    Nccl,
}

/// This process's place in a torchrun launch, read from the environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Launch {
    /// Global rank.
    pub rank: usize,
    /// Number of ranks.
    pub world_size: usize,
    /// Rank on this machine (picks `cuda:LOCAL_RANK`).
    pub local_rank: usize,
    /// Host of the store.
    pub master_addr: String,
    /// Port of the store.
    pub master_port: u16,
    /// torchrun's agent serves the store (`TORCHELASTIC_USE_AGENT_STORE=True`): every rank is a client.
    pub agent_store: bool,
}

impl Launch {
    /// The launch torchrun describes, or `None` when `WORLD_SIZE` is not set (a plain run).
    pub fn from_env() -> Result<Option<Self>, DistError> {
        Self::from_vars(|name| std::env::var(name).ok())
    }

    /// [`from_env`](Self::from_env) over any variable lookup.
    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> Result<Option<Self>, DistError> {
        if var("WORLD_SIZE").is_none() {
            return Ok(None);
        }
        let get = |name: &'static str| var(name).ok_or(DistError::Env { name, message: "not set".into() });
        let number = |name: &'static str| -> Result<usize, DistError> {
            let v = get(name)?;
            v.trim().parse().map_err(|_| DistError::Env { name, message: format!("`{v}` is not a number") })
        };
        let launch = Self {
            rank: number("RANK")?,
            world_size: number("WORLD_SIZE")?,
            local_rank: number("LOCAL_RANK").or_else(|_| number("RANK"))?,
            master_addr: get("MASTER_ADDR")?,
            master_port: {
                let port = number("MASTER_PORT")?;
                u16::try_from(port)
                    .ok()
                    .filter(|&p| p > 0)
                    .ok_or(DistError::Env { name: "MASTER_PORT", message: format!("{port} is not a TCP port") })?
            },
            agent_store: var("TORCHELASTIC_USE_AGENT_STORE").is_some_and(|v| v == "True"),
        };
        if launch.world_size == 0 || launch.rank >= launch.world_size {
            return Err(DistError::Env {
                name: "RANK",
                message: format!("rank {} is not in a world of size {}", launch.rank, launch.world_size),
            });
        }
        Ok(Some(launch))
    }
}

mod ffi {
    use std::ffi::{c_char, c_int};

    /// `at::Tensor`, only ever behind a pointer.
    #[repr(C)]
    pub struct AtTensor {
        _private: [u8; 0],
    }

    /// `vit_dist`, only ever behind a pointer.
    #[repr(C)]
    pub struct VitDist {
        _private: [u8; 0],
    }

    extern "C" {
        pub fn vit_dist_init(
            master_addr: *const c_char,
            master_port: c_int,
            rank: c_int,
            world: c_int,
            store_is_client: c_int,
            timeout_s: f64,
            cuda_device: c_int,
            out: *mut *mut VitDist,
        ) -> *mut c_char;
        pub fn vit_dist_all_reduce(
            d: *mut VitDist,
            tensors: *const *mut AtTensor,
            n: usize,
            average: c_int,
        ) -> *mut c_char;
        pub fn vit_dist_broadcast(d: *mut VitDist, tensors: *const *mut AtTensor, n: usize, root: c_int)
            -> *mut c_char;
        pub fn vit_dist_barrier(d: *mut VitDist) -> *mut c_char;
        pub fn vit_dist_destroy(d: *mut VitDist);
        #[allow(clippy::too_many_arguments)] // mirrors the C API one to one
        pub fn vit_dist_sync_batch_norm(
            d: *mut VitDist,
            x: *mut AtTensor,
            weight: *mut AtTensor,
            bias: *mut AtTensor,
            running_mean: *mut AtTensor,
            running_var: *mut AtTensor,
            eps: f64,
            momentum: f64,
            out: *mut *mut AtTensor,
        ) -> *mut c_char;
    }
}

/// Time and bytes spent in collectives, for the benchmark and debug logs.
#[derive(Debug, Clone, Copy, Default)]
pub struct CommStats {
    /// Collective calls.
    pub calls: usize,
    /// Bytes reduced or broadcast (each rank's buffer size).
    pub bytes: usize,
    /// Wall time inside the collectives.
    pub seconds: f64,
}

/// A c10d process group this process belongs to; left (and freed) on drop.
#[derive(Debug)]
pub struct ProcessGroup {
    raw: *mut ffi::VitDist,
    launch: Launch,
    stats: std::cell::Cell<CommStats>,
}

impl ProcessGroup {
    /// Joins the group `launch` describes over `backend` (NCCL on CUDA device
    /// `cuda:LOCAL_RANK`); every rendezvous wait and collective fails after
    /// `timeout` instead of hanging.
    pub fn join(launch: &Launch, backend: Backend, timeout: Duration) -> Result<Self, DistError> {
        let cuda_device = match backend {
            Backend::Nccl => launch.local_rank as c_int,
            Backend::Gloo => -1,
        };
        let addr = CString::new(launch.master_addr.clone())
            .map_err(|_| DistError::Env { name: "MASTER_ADDR", message: "contains a NUL byte".into() })?;
        let mut raw = std::ptr::null_mut();
        // SAFETY: addr outlives the call; `raw` is written only on success.
        let err = unsafe {
            ffi::vit_dist_init(
                addr.as_ptr(),
                c_int::from(launch.master_port),
                launch.rank as c_int,
                launch.world_size as c_int,
                c_int::from(launch.agent_store),
                timeout.as_secs_f64(),
                cuda_device,
                &mut raw,
            )
        };
        check("c10d rendezvous", err)?;
        sampler::set_rank(launch.rank, launch.world_size);
        // One rank has nothing to synchronise with: plain BatchNorm, as
        // torch.nn.SyncBatchNorm does at world size 1 (a collective per BatchNorm
        // layer and pass cost ~20% of a step on a GPU, measured).
        if launch.world_size > 1 {
            SYNC_BN_GROUP.store(raw, Ordering::SeqCst);
        }
        Ok(Self { raw, launch: launch.clone(), stats: Default::default() })
    }

    /// This process's rank.
    pub fn rank(&self) -> usize {
        self.launch.rank
    }

    /// Number of ranks.
    pub fn world_size(&self) -> usize {
        self.launch.world_size
    }

    /// Collective time and volume since the last call.
    pub fn take_stats(&self) -> CommStats {
        self.stats.take()
    }

    /// Runs one collective `f` over the pointers of `tensors`, counting its time and bytes.
    fn timed(
        &self,
        op: &'static str,
        tensors: &[&Tensor],
        f: impl FnOnce(*const *mut ffi::AtTensor, usize) -> *mut c_char,
    ) -> Result<(), DistError> {
        let started = Instant::now();
        let ptrs: Vec<*mut ffi::AtTensor> = tensors.iter().map(|t| t.as_ptr() as *mut ffi::AtTensor).collect();
        let err = f(ptrs.as_ptr(), ptrs.len());
        let mut s = self.stats.get();
        s.calls += 1;
        s.bytes += tensors.iter().map(|t| t.numel() * t.kind().elt_size_in_bytes()).sum::<usize>();
        s.seconds += started.elapsed().as_secs_f64();
        self.stats.set(s);
        Ok(check(op, err)?)
    }

    /// Averages `tensors` across ranks in place, one collective per bucket of
    /// at most [`BUCKET_BYTES`] (tensors of one dtype).
    pub fn all_reduce_mean(&self, tensors: &[&Tensor]) -> Result<(), DistError> {
        if self.world_size() == 1 {
            return Ok(()); // the identity, without the copies and the collective
        }
        for bucket in buckets(tensors, BUCKET_BYTES) {
            // SAFETY: the pointers are live tensors of `bucket` for the whole call.
            self.timed("all-reduce", &bucket, |p, n| unsafe { ffi::vit_dist_all_reduce(self.raw, p, n, 1) })?;
        }
        Ok(())
    }

    /// Sums `tensors` across ranks in place (one collective per bucket).
    pub fn all_reduce_sum(&self, tensors: &[&Tensor]) -> Result<(), DistError> {
        if self.world_size() == 1 {
            return Ok(()); // the identity, without the copies and the collective
        }
        for bucket in buckets(tensors, BUCKET_BYTES) {
            // SAFETY: as in all_reduce_mean.
            self.timed("all-reduce", &bucket, |p, n| unsafe { ffi::vit_dist_all_reduce(self.raw, p, n, 0) })?;
        }
        Ok(())
    }

    /// Overwrites `tensors` with rank 0's (one collective per bucket).
    pub fn broadcast_from_rank0(&self, tensors: &[&Tensor]) -> Result<(), DistError> {
        if self.world_size() == 1 {
            return Ok(()); // the identity, without the copies and the collective
        }
        for bucket in buckets(tensors, BUCKET_BYTES) {
            // SAFETY: as in all_reduce_mean.
            self.timed("broadcast", &bucket, |p, n| unsafe { ffi::vit_dist_broadcast(self.raw, p, n, 0) })?;
        }
        Ok(())
    }

    /// BatchNorm layers of this process normalise with its own batch from now
    /// on (`train.sync_batch_norm = false`), as DDP without SyncBatchNorm does.
    pub fn local_batch_norm(&self) {
        let _ = SYNC_BN_GROUP.compare_exchange(self.raw, std::ptr::null_mut(), Ordering::SeqCst, Ordering::SeqCst);
    }

    /// Waits for every rank; rank 0's error names the ranks that did not arrive.
    pub fn barrier(&self) -> Result<(), DistError> {
        // SAFETY: raw is the live group.
        let err = unsafe { ffi::vit_dist_barrier(self.raw) };
        Ok(check("barrier", err)?)
    }
}

impl Drop for ProcessGroup {
    fn drop(&mut self) {
        let _ = SYNC_BN_GROUP.compare_exchange(self.raw, std::ptr::null_mut(), Ordering::SeqCst, Ordering::SeqCst);
        // SAFETY: raw came from vit_dist_init and is freed once.
        unsafe { ffi::vit_dist_destroy(self.raw) };
    }
}

/// The group BatchNorm layers synchronise over: the live [`ProcessGroup`] of this
/// process (a process is one rank), null outside one.
static SYNC_BN_GROUP: AtomicPtr<ffi::VitDist> = AtomicPtr::new(std::ptr::null_mut());

thread_local! {
    /// A SyncBatchNorm failure inside a forward pass (which cannot return it), for
    /// [`take_forward_error`].
    static FORWARD_ERROR: RefCell<Option<DistError>> = const { RefCell::new(None) };
}

/// Training-mode BatchNorm of `x` [N, C, H, W] with `bn`'s affine weights and running
/// statistics over the batches of all ranks (SyncBatchNorm), when this process is in
/// a process group; `None` outside one (the caller applies `bn` itself). A failed
/// collective is kept for [`take_forward_error`] and the input comes back unchanged.
pub fn sync_batch_norm(x: &Tensor, bn: &nn::BatchNorm, eps: f64, momentum: f64) -> Option<Tensor> {
    let group = SYNC_BN_GROUP.load(Ordering::SeqCst);
    if group.is_null() {
        return None;
    }
    let (Some(ws), Some(bs)) = (&bn.ws, &bn.bs) else { return None };
    let p = |t: &Tensor| t.as_ptr() as *mut ffi::AtTensor;
    let mut out = std::ptr::null_mut();
    // SAFETY: the group is live while it is registered; every tensor outlives the call.
    let err = unsafe {
        ffi::vit_dist_sync_batch_norm(
            group,
            p(x),
            p(ws),
            p(bs),
            p(&bn.running_mean),
            p(&bn.running_var),
            eps,
            momentum,
            &mut out,
        )
    };
    match check("SyncBatchNorm", err) {
        // SAFETY: on success `out` is a new at::Tensor the caller owns, as tch's own tensors.
        Ok(()) => Some(unsafe { Tensor::from_ptr(out as *mut torch_sys::C_tensor) }),
        Err(e) => {
            FORWARD_ERROR.with(|slot| *slot.borrow_mut() = Some(e.into()));
            Some(x.shallow_clone())
        }
    }
}

/// The SyncBatchNorm failure of the last forward pass on this thread, if any.
pub fn take_forward_error() -> Result<(), DistError> {
    FORWARD_ERROR.with(|slot| slot.borrow_mut().take()).map_or(Ok(()), Err)
}

/// Groups `tensors` by dtype and device, in order, into buckets of at most
/// `cap` bytes (a tensor larger than `cap` is a bucket of its own).
pub fn buckets<'a>(tensors: &[&'a Tensor], cap: usize) -> Vec<Vec<&'a Tensor>> {
    let key = |t: &Tensor| (t.kind(), t.device());
    let mut keys: Vec<(Kind, tch::Device)> = Vec::new();
    for t in tensors {
        if !keys.contains(&key(t)) {
            keys.push(key(t));
        }
    }
    let mut out = Vec::new();
    for k in keys {
        let (mut bucket, mut filled) = (Vec::new(), 0);
        for &t in tensors.iter().filter(|t| key(t) == k) {
            let bytes = t.numel() * t.kind().elt_size_in_bytes();
            if filled + bytes > cap && !bucket.is_empty() {
                out.push(std::mem::take(&mut bucket));
                filled = 0;
            }
            bucket.push(t);
            filled += bytes;
        }
        if !bucket.is_empty() {
            out.push(bucket);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn torchrun_variables_are_read() {
        let vars = [
            ("RANK", "1"),
            ("WORLD_SIZE", "2"),
            ("LOCAL_RANK", "1"),
            ("MASTER_ADDR", "127.0.0.1"),
            ("MASTER_PORT", "29500"),
            ("TORCHELASTIC_USE_AGENT_STORE", "True"),
        ];
        let get = |name: &str| vars.iter().find(|(n, _)| *n == name).map(|(_, v)| v.to_string());
        let launch = Launch::from_vars(get).unwrap().unwrap();
        assert_eq!((launch.rank, launch.world_size, launch.master_port, launch.agent_store), (1, 2, 29500, true));
        assert!(Launch::from_vars(|_| None).unwrap().is_none());
        let bad = |name: &str| if name == "RANK" { Some("2".into()) } else { get(name) };
        assert!(Launch::from_vars(bad).is_err());
    }

    #[test]
    fn buckets_respect_the_cap_and_the_dtype() {
        let f = |n: i64| Tensor::zeros([n], (Kind::Float, tch::Device::Cpu));
        let (a, b, c, d) = (f(10), f(10), f(30), Tensor::zeros([4], (Kind::Int64, tch::Device::Cpu)));
        let sizes =
            |bs: Vec<Vec<&Tensor>>| bs.iter().map(|b| b.iter().map(|t| t.numel()).collect()).collect::<Vec<Vec<_>>>();
        assert_eq!(sizes(buckets(&[&a, &b, &c, &d], 80)), vec![vec![10, 10], vec![30], vec![4]]);
        assert_eq!(sizes(buckets(&[&a, &b], 1 << 20)), vec![vec![10, 10]]);
    }
}
