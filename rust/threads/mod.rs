//! How many threads the kernels may use.
//!
//! One process-wide setting: [`set_num_threads`], or the environment variable
//! `SINCOS_RS_NUM_THREADS` read the first time it is needed, else the
//! machine's core count. Work is split so that no sum depends on the thread
//! count: results are bit-identical whatever it is set to.
//!
//! The threads themselves: [`pool`] (the kernels' fork-join helpers) and
//! `gemm_pool` (the GEMM crate's rayon pool), both restarted in a forked
//! child ([`fork`]).

use std::sync::atomic::{AtomicUsize, Ordering};

pub(crate) mod fork;
mod gemm_pool;
pub mod openmp;
pub(crate) mod pool;
pub(crate) mod team;

/// 0 means "not decided yet".
static NUM_THREADS: AtomicUsize = AtomicUsize::new(0);

/// The environment variable that sets the default thread count.
pub const ENV_VAR: &str = "SINCOS_RS_NUM_THREADS";

/// The most threads the kernels use, whatever is asked: far more than
/// helps, few enough to start.
pub const MAX_THREADS: usize = 1024;

/// Below this many multiply-adds a product runs on one thread: waking a
/// second core costs more than it saves.
const PARALLEL_MIN_MACS: usize = 1 << 18;

fn default_threads() -> usize {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    match std::env::var(ENV_VAR).ok().and_then(|s| s.trim().parse::<usize>().ok()) {
        Some(n) if n > 0 => n.min(MAX_THREADS),
        _ => cores.min(MAX_THREADS),
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
/// At most [`MAX_THREADS`].
pub fn set_num_threads(n: usize) {
    let n = if n == 0 { default_threads() } else { n.min(MAX_THREADS) };
    NUM_THREADS.store(n, Ordering::Relaxed);
}

/// Runs a matrix product of `macs` multiply-adds, given how to split it:
/// across the threads of the GEMM pool, or on the calling thread alone.
pub(crate) fn run_gemm<R: Send>(macs: usize, product: impl FnOnce(gemm::Parallelism) -> R + Send) -> R {
    let n = num_threads();
    gemm_pool::run(if macs >= PARALLEL_MIN_MACS { n } else { 1 }, product)
}
