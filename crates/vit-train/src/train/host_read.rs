//! The one door through which the training path reads device values on the
//! host. On a GPU every such read waits for the whole queue of kernels before
//! it, so a step that reads one cannot run ahead of the host (and cannot be
//! captured in a CUDA graph). Reads are counted per thread, so a test can
//! assert that a step makes none and that an epoch makes exactly the expected
//! few (one per `log_every` point, one at the epoch end).

use std::cell::Cell;

use tch::{Device, Kind, Tensor};

thread_local! {
    static READS: Cell<u64> = const { Cell::new(0) };
}

/// Host reads of device values made by this thread so far.
pub fn count() -> u64 {
    READS.with(Cell::get)
}

/// All values of `t` as f64, in one read (`why` names the read in debug logs).
/// On CUDA the copy goes to pinned memory without blocking and then waits for
/// the device once, so it does not also stall on a pageable staging copy.
pub fn read_f64s(t: &Tensor, why: &'static str) -> Vec<f64> {
    READS.with(|c| c.set(c.get() + 1));
    log::trace!("host read: {why}");
    let flat = t.detach().reshape([-1]).to_kind(Kind::Double);
    let host = match flat.device() {
        Device::Cuda(index) => {
            let pinned = Tensor::empty(flat.size(), (Kind::Double, Device::Cpu)).pin_memory(flat.device());
            let _ = flat.internal_copy_from(&pinned, true);
            tch::Cuda::synchronize(index as i64);
            pinned
        }
        _ => flat,
    };
    // A Double CPU tensor always converts; an empty vector would only hide a bug in the caller's shapes.
    Vec::<f64>::try_from(&host).unwrap_or_default()
}

/// The single value of the one-element tensor `t` (see [`read_f64s`]); NaN when `t` is empty.
pub fn read_f64(t: &Tensor, why: &'static str) -> f64 {
    read_f64s(t, why).first().copied().unwrap_or(f64::NAN)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_return_the_values_and_are_counted() {
        let before = count();
        let t = Tensor::from_slice(&[1.5f32, -2.0, 3.25]);
        assert_eq!(read_f64s(&t, "test"), vec![1.5, -2.0, 3.25]);
        assert_eq!(read_f64(&t.get(1), "test"), -2.0);
        assert_eq!(count() - before, 2);
    }
}
