//! The OpenMP wait policy of libtorch's CPU threads. libgomp (libtorch's OpenMP
//! on Linux) lets a thread that waits at the end of a parallel region spin for
//! a long while (300,000 spins) before it sleeps. On an idle machine that saves
//! a wake-up per region; when other processes keep the cores busy, the spinning
//! threads take the time the working thread needs, and a run slows to a fraction
//! of its share. Measured on 2 cores (README "Training speed"): a short spin
//! (1,000) is 1.3-1.8x faster than the default under a competing load but 5-10%
//! slower on an idle machine. So `vit-train` chooses at start: when other
//! processes already keep at least half a core busy, it sets the short spin;
//! an idle machine keeps libgomp's default. libgomp reads its settings once,
//! when it is loaded (before `main`), so the choice is put in the environment
//! and the program re-executes itself. A user's own `OMP_WAIT_POLICY` or
//! `GOMP_SPINCOUNT` is always left alone.

use std::time::Duration;

/// Spins of a waiting libgomp thread before it sleeps, on a busy machine.
pub const BUSY_SPIN_COUNT: &str = "1000";

/// Cores kept busy by other processes from which the machine counts as busy.
pub const BUSY_CORES: f64 = 0.5;

/// CPU time counters of `/proc/stat`'s first line: (busy, total) in ticks.
pub fn cpu_ticks(proc_stat: &str) -> Option<(u64, u64)> {
    let line = proc_stat.lines().find(|l| l.starts_with("cpu "))?;
    let v: Vec<u64> = line.split_whitespace().skip(1).filter_map(|f| f.parse().ok()).collect();
    if v.len() < 4 {
        return None;
    }
    // user nice system idle iowait irq softirq steal [guest guest_nice]: guests are inside user already.
    let total: u64 = v.iter().take(8).sum();
    let idle = v[3] + v.get(4).copied().unwrap_or(0);
    Some((total - idle, total))
}

/// Cores busy between two `/proc/stat` readings on a machine of `cores` cores.
pub fn busy_cores(before: (u64, u64), after: (u64, u64), cores: usize) -> f64 {
    let (busy, total) = (after.0.saturating_sub(before.0), after.1.saturating_sub(before.1));
    if total == 0 {
        return 0.0;
    }
    busy as f64 / total as f64 * cores as f64
}

/// The variable and value to add to the environment, given whether the user
/// set a policy (`chosen`) and how many cores other processes keep busy.
pub fn spin_to_set(chosen: bool, busy: f64) -> Option<(&'static str, &'static str)> {
    (!chosen && busy >= BUSY_CORES).then_some(("GOMP_SPINCOUNT", BUSY_SPIN_COUNT))
}

/// Cores other processes keep busy now, over a short sample (None without `/proc/stat`).
fn busy_now(cores: usize) -> Option<f64> {
    let read = || std::fs::read_to_string("/proc/stat").ok().as_deref().and_then(cpu_ticks);
    let before = read()?;
    std::thread::sleep(Duration::from_millis(200));
    Some(busy_cores(before, read()?, cores))
}

/// On a busy machine, re-executes this program with [`BUSY_SPIN_COUNT`] in its
/// environment, unless a wait policy is set already. Returns when nothing was
/// to be done or the re-execution failed (then the run goes on as it is).
#[cfg(unix)]
pub fn adapt_wait_policy() {
    use std::os::unix::process::CommandExt;

    let chosen = ["OMP_WAIT_POLICY", "GOMP_SPINCOUNT"].iter().any(|n| std::env::var_os(n).is_some());
    if chosen {
        return;
    }
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let Some(busy) = busy_now(cores) else { return };
    let Some((name, value)) = spin_to_set(chosen, busy) else { return };
    let Ok(exe) = std::env::current_exe() else { return };
    log::info!(
        "other processes keep {busy:.1} of {cores} cores busy: libtorch's threads wait with {name}={value} \
         (set OMP_WAIT_POLICY or GOMP_SPINCOUNT to choose yourself)"
    );
    let mut args = std::env::args_os();
    let arg0 = args.next().unwrap_or_else(|| exe.clone().into_os_string());
    // `exec` only returns on failure.
    let err = std::process::Command::new(&exe).arg0(arg0).args(args).env(name, value).exec();
    log::warn!("could not restart {} with {name}={value}: {err}", exe.display());
}

/// Other platforms: libgomp's default stays.
#[cfg(not(unix))]
pub fn adapt_wait_policy() {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_stat_counts_busy_and_total_ticks() {
        let stat = "cpu  100 5 50 800 45 0 0 0 0 0\ncpu0 50 2 25 400 20 0 0 0 0 0\n";
        assert_eq!(cpu_ticks(stat), Some((155, 1000)));
        assert_eq!(cpu_ticks("intr 1 2 3"), None);
        // Half the ticks busy on 2 cores: one core busy.
        assert!((busy_cores((100, 1000), (200, 1200), 2) - 1.0).abs() < 1e-12);
        assert_eq!(busy_cores((5, 5), (5, 5), 2), 0.0);
    }

    #[test]
    fn only_a_busy_machine_without_a_user_choice_gets_the_short_spin() {
        assert_eq!(spin_to_set(false, 1.2), Some(("GOMP_SPINCOUNT", BUSY_SPIN_COUNT)));
        assert_eq!(spin_to_set(false, 0.1), None);
        assert_eq!(spin_to_set(true, 1.9), None);
    }
}
