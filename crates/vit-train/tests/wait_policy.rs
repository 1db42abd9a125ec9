//! `vit-train fit` on a machine that other work keeps busy restarts itself with
//! a short OpenMP spin (libgomp's long default spin starves the working thread
//! there), and leaves a wait policy the user set alone. Its own binary: the
//! busy threads here must not slow other tests' runs.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use common::cli::{quick, run_ok, write_config, SMALL};

/// Runs `fit` for one epoch while two threads of this process spin; returns stderr.
fn fit_while_busy(env: Option<(&str, &str)>) -> String {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = write_config(tmp.path(), SMALL);
    let stop = Arc::new(AtomicBool::new(false));
    let spinners: Vec<_> = (0..2)
        .map(|_| {
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || {
                let mut x = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
                }
            })
        })
        .collect();
    let mut cmd = quick(&cfg, &tmp.path().join("run"), "1");
    cmd.env_remove("OMP_WAIT_POLICY").env_remove("GOMP_SPINCOUNT");
    if let Some((k, v)) = env {
        cmd.env(k, v);
    }
    let out = run_ok(&mut cmd);
    stop.store(true, Ordering::Relaxed);
    spinners.into_iter().for_each(|t| t.join().unwrap());
    assert!(tmp.path().join("run/summary.json").exists(), "the restarted run trained");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn a_busy_machine_gets_the_short_spin_unless_the_user_chose() {
    let stderr = fit_while_busy(None);
    assert!(stderr.contains("GOMP_SPINCOUNT=1000"), "no short spin on a busy machine:\n{stderr}");
    assert!(!stderr.contains("could not restart"), "{stderr}");
    let stderr = fit_while_busy(Some(("OMP_WAIT_POLICY", "ACTIVE")));
    assert!(!stderr.contains("GOMP_SPINCOUNT"), "the user's OMP_WAIT_POLICY was overridden:\n{stderr}");
}
