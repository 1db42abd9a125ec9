//! Keeps the memory that libtorch frees inside the process, so a CPU training
//! step does not page-fault its activations in again every time.
//!
//! libtorch allocates every activation and gradient with `malloc` and frees it
//! within the same step. glibc serves blocks above its mmap threshold (which
//! never exceeds 32 MiB) with a fresh `mmap` and returns them with `munmap`, so
//! the next step faults the same pages in again and the kernel zero-fills them.
//! Training `models/coco5-vit-hires.toml` on the 2-core machine spent 17% of its
//! CPU time in the kernel that way (its first activation, 64x32x64x64 floats, is
//! 32 MiB). With large-block mmap and heap trimming off, freed blocks stay in
//! the heap for the next step. glibc still falls back to `mmap` when the heap
//! cannot grow.
//!
//! A heap that never gives memory back also fragments: streaming a 224x224 set
//! (a 0.3M-parameter model, batches of 32) grew from 0.70 to 0.89 GB over 300
//! steps while the memory in use stayed flat (glibc's defaults: 0.70-0.82 GB).
//! So the epoch loop hands the free pages back every [`RELEASE_EVERY_STEPS`]
//! steps ([`release_free_memory`]): the next step faults them in once, instead
//! of every step. Measured on `models/coco5-vit-hires.toml`, 2 cores: 224 img/s
//! with these settings, 175 with glibc's defaults.
//!
//! `malloc_trim` frees pages in every arena's free lists but shrinks only the
//! main arena's top; a thread's arena (a data worker's) keeps its top, since
//! keeping memory sets the threshold at which glibc would trim it to never.
//! Lowering that threshold for a few steps after each release did give those
//! tops back, but left peak memory where it was (streamed 224x224 runs, within
//! their run-to-run spread of 100-250 MB), so it is not done.

use std::sync::atomic::{AtomicBool, Ordering};

/// Steps between two [`release_free_memory`] calls of the epoch loop.
pub const RELEASE_EVERY_STEPS: usize = 64;

/// Set once [`keep_freed_memory`] has changed the allocator.
static KEEPING: AtomicBool = AtomicBool::new(false);

/// What [`keep_freed_memory`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MallocTuning {
    /// glibc took both settings.
    Applied,
    /// glibc refused a setting; the allocator runs with its defaults.
    Refused,
    /// Not a glibc target: nothing to change.
    Unsupported,
}

/// Turns off glibc's mmap for large blocks and its heap trimming, for the whole
/// process. Call it once, before training starts; it changes only where freed
/// memory goes, never what is computed.
pub fn keep_freed_memory() -> MallocTuning {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: mallopt only changes allocator parameters; glibc validates them and returns 0 when it refuses one.
        let ok = unsafe {
            libc::mallopt(libc::M_MMAP_MAX, 0) == 1 && libc::mallopt(libc::M_TRIM_THRESHOLD, libc::c_int::MAX) == 1
        };
        if ok {
            KEEPING.store(true, Ordering::Relaxed);
            MallocTuning::Applied
        } else {
            MallocTuning::Refused
        }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        MallocTuning::Unsupported
    }
}

/// Returns the heap's free pages to the kernel (glibc's `malloc_trim`) when
/// [`keep_freed_memory`] is in effect; otherwise glibc trims by itself and
/// this does nothing.
pub fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if KEEPING.load(Ordering::Relaxed) {
        // SAFETY: malloc_trim only releases free memory; allocations in use are untouched.
        unsafe { libc::malloc_trim(0) };
    }
}

#[cfg(all(test, target_os = "linux", target_env = "gnu"))]
mod tests {
    use super::*;

    /// Minor page faults of the calling thread so far.
    fn thread_faults() -> i64 {
        // SAFETY: getrusage writes one rusage struct that we own.
        unsafe {
            let mut usage: libc::rusage = std::mem::zeroed();
            assert_eq!(libc::getrusage(libc::RUSAGE_THREAD, &mut usage), 0);
            usage.ru_minflt
        }
    }

    /// Faults taken by allocating, filling and freeing a block twice: (first, second).
    fn faults_of_two_rounds(bytes: usize) -> (i64, i64) {
        let mut rounds = [0; 2];
        for faults in &mut rounds {
            let before = thread_faults();
            let block = vec![1u8; bytes];
            std::hint::black_box(&block);
            drop(block);
            *faults = thread_faults() - before;
        }
        (rounds[0], rounds[1])
    }

    /// Set in the child process that runs the page-fault check alone.
    const ALONE: &str = "VIT_ALLOCATOR_TEST_ALONE";

    /// glibc gives each thread an arena and malloc_trim cannot shrink the top of a thread's
    /// arena: in an arena other tests have left holes in, the small block "in use" lands in a
    /// hole below the large one, which then joins the top on free and stays resident. So the
    /// check runs as the only test of a child process, in a fresh arena with no holes.
    #[test]
    fn freed_large_blocks_are_reused_without_page_faults() {
        if std::env::var_os(ALONE).is_some() {
            return page_faults_follow_the_settings();
        }
        let name = "host::allocator::tests::freed_large_blocks_are_reused_without_page_faults";
        let exe = std::env::current_exe().expect("the test binary's path");
        let out = std::process::Command::new(&exe)
            .args([name, "--exact", "--test-threads=1", "--nocapture"])
            .env(ALONE, "1")
            .output()
            .expect("run the test binary again");
        let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(out.status.success(), "the check failed in its own process:\n{text}");
        assert!(text.contains("1 passed"), "the child ran no test:\n{text}");
    }

    fn page_faults_follow_the_settings() {
        const BYTES: usize = 40 << 20; // above glibc's largest mmap threshold (32 MiB)
        let pages = (BYTES / 4096) as i64;
        // glibc's default: every round maps fresh pages.
        let (_, default_second) = faults_of_two_rounds(BYTES);
        assert!(default_second > pages / 2, "expected glibc's default to fault again: {default_second} faults");
        assert_eq!(keep_freed_memory(), MallocTuning::Applied);
        let (first, second) = faults_of_two_rounds(BYTES);
        assert!(second < pages / 20, "second round took {second} faults (first {first}, {pages} pages)");
        // A block freed below one still in use (as between a step's activations) stays in the free
        // lists, resident; released, its pages are the kernel's again and the next use faults them in.
        let block = vec![1u8; BYTES];
        let in_use = std::hint::black_box(vec![1u8; 64 << 10]);
        assert!(in_use.as_ptr() > block.as_ptr(), "the block in use was placed below the large one");
        drop(block);
        let (kept, _) = faults_of_two_rounds(BYTES);
        release_free_memory();
        let (after_release, again) = faults_of_two_rounds(BYTES);
        drop(in_use);
        assert!(kept < pages / 20, "a freed block below one in use took {kept} faults ({pages} pages)");
        assert!(after_release > pages / 2, "after release_free_memory: {after_release} faults ({pages} pages)");
        assert!(again < pages / 20, "and kept again afterwards: {again} faults");
    }
}
