//! The rayon pool the `gemm` crate's parallel products run on.
//!
//! `gemm` splits a product with rayon, in whatever pool the call runs in:
//! rayon's global pool by default. That pool, like ours, does not survive
//! `fork` (a child waits forever for its threads), and rayon cannot rebuild
//! it. So products run inside a pool of our own, one per process image
//! ([`PerProcess`]: a forked child builds a fresh one) and per thread count.

use std::sync::{Arc, Mutex};

use super::fork::PerProcess;

/// The pool of this process image with its thread count, once built.
type Slot = Mutex<Option<(usize, Arc<rayon::ThreadPool>)>>;

/// A pool of `threads` threads for this process image; `None` if it cannot
/// be built (no thread could be started).
fn pool(threads: usize) -> Option<Arc<rayon::ThreadPool>> {
    static SLOT: PerProcess<Slot> = PerProcess::new();
    let mut slot = SLOT.get(|| Mutex::new(None)).lock().unwrap_or_else(|e| e.into_inner());
    match &*slot {
        Some((n, pool)) if *n == threads => Some(Arc::clone(pool)),
        _ => {
            let pool = Arc::new(
                rayon::ThreadPoolBuilder::new()
                    .num_threads(threads)
                    .thread_name(|i| format!("sincos_rs-gemm-{i}"))
                    .build()
                    .ok()?,
            );
            // A previous pool (another thread count) ends when its last user does.
            *slot = Some((threads, Arc::clone(&pool)));
            Some(pool)
        }
    }
}

/// Runs `product(parallelism)` on `threads` threads of this process's own
/// pool, or on the calling thread alone (`Parallelism::None`) when
/// `threads` is 1 or no pool can be built.
pub(crate) fn run<R: Send>(threads: usize, product: impl FnOnce(gemm::Parallelism) -> R + Send) -> R {
    match (threads > 1).then(|| pool(threads)).flatten() {
        Some(pool) => pool.install(|| product(gemm::Parallelism::Rayon(threads))),
        None => product(gemm::Parallelism::None),
    }
}
