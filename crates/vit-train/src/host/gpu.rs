//! Free memory of a CUDA device, for `--data-mode auto`'s choice of keeping the
//! data on the GPU. libtorch does not expose `cudaMemGetInfo` through tch, so
//! this asks the CUDA driver (`cuMemGetInfo_v2` of `libcuda.so.1`, which
//! libtorch's CUDA runtime has already loaded) directly.

use tch::{Device, Kind, Tensor};

/// Free bytes of the current CUDA device after libtorch has initialised it
/// (None on the CPU, or when the driver cannot say). With several GPUs this is the
/// device libtorch's runtime made current, which is `device` for a one-GPU run.
pub fn cuda_free_memory(device: Device) -> Option<u64> {
    if !device.is_cuda() {
        return None;
    }
    // The first CUDA allocation creates the device's context and makes it current on this thread.
    let _context = Tensor::f_zeros([1], (Kind::Uint8, device)).ok()?;
    driver_free_memory()
}

#[cfg(unix)]
fn driver_free_memory() -> Option<u64> {
    type MemGetInfo = unsafe extern "C" fn(*mut usize, *mut usize) -> i32;
    // SAFETY: RTLD_NOLOAD only finds a library already in the process (no initialiser runs);
    // cuMemGetInfo_v2 has this signature in every CUDA driver since 3.2 and writes two size_t.
    unsafe {
        let lib = libc::dlopen(c"libcuda.so.1".as_ptr(), libc::RTLD_NOW | libc::RTLD_NOLOAD);
        if lib.is_null() {
            return None;
        }
        let sym = libc::dlsym(lib, c"cuMemGetInfo_v2".as_ptr());
        let result = if sym.is_null() {
            None
        } else {
            let get: MemGetInfo = std::mem::transmute(sym);
            let (mut free, mut total) = (0usize, 0usize);
            (get(&mut free, &mut total) == 0).then_some(free as u64)
        };
        libc::dlclose(lib);
        result
    }
}

#[cfg(not(unix))]
fn driver_free_memory() -> Option<u64> {
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cpu_has_no_device_memory_to_report() {
        assert_eq!(cuda_free_memory(Device::Cpu), None);
    }
}
