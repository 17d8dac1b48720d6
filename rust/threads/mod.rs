//! How many threads the kernels may use.
//!
//! One process-wide setting: [`set_num_threads`], or the environment variable
//! `SINCOS_RS_NUM_THREADS` read the first time it is needed, else the
//! machine's core count. Work is split so that no sum depends on the thread
//! count: results are bit-identical whatever it is set to.

use std::sync::atomic::{AtomicUsize, Ordering};

pub(crate) mod pool;

/// 0 means "not decided yet".
static NUM_THREADS: AtomicUsize = AtomicUsize::new(0);

/// The environment variable that sets the default thread count.
pub const ENV_VAR: &str = "SINCOS_RS_NUM_THREADS";

/// Below this many multiply-adds a product runs on one thread: waking a
/// second core costs more than it saves.
const PARALLEL_MIN_MACS: usize = 1 << 18;

fn default_threads() -> usize {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    match std::env::var(ENV_VAR).ok().and_then(|s| s.trim().parse::<usize>().ok()) {
        Some(n) if n > 0 => n,
        _ => cores,
    }
}

/// The thread count in force (at least 1).
pub fn num_threads() -> usize {
    match NUM_THREADS.load(Ordering::Relaxed) {
        0 => {
            let n = default_threads();
            NUM_THREADS.store(n, Ordering::Relaxed);
            n
        }
        n => n,
    }
}

/// Sets the thread count for all later calls; `0` restores the default.
pub fn set_num_threads(n: usize) {
    let n = if n == 0 { default_threads() } else { n };
    NUM_THREADS.store(n, Ordering::Relaxed);
}

/// How a matrix product of `macs` multiply-adds should be split.
pub(crate) fn gemm_parallelism(macs: usize) -> gemm::Parallelism {
    let n = num_threads();
    if n > 1 && macs >= PARALLEL_MIN_MACS {
        gemm::Parallelism::Rayon(n)
    } else {
        gemm::Parallelism::None
    }
}
