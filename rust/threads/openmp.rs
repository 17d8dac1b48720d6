//! Running the kernels' parallel passes on the host's OpenMP threads.
//!
//! PyTorch runs its own operations on an OpenMP team (libgomp on Linux),
//! whose idle workers spin for a while after each operation, on the cores
//! our own helper threads would use. A pass that forks onto our helpers
//! right after a torch operation shares those cores with spinning threads,
//! and a helper descheduled in the middle of its share holds the whole pass
//! up for a time slice: measured, a B64 T50 I128 H128 training step inside
//! a torch model took twice its time through the NumPy API. So when the
//! host has an OpenMP runtime and says so ([`set_runtime`]: the PyTorch
//! bridge passes torch's libgomp entry points), a pass runs on the host's
//! team through `GOMP_parallel`, whose workers are the ones already
//! spinning, waiting for work; nothing competes.
//!
//! Only the process image that registered the runtime uses it: a forked
//! child falls back to the kernels' own helpers (libgomp's team does not
//! exist in a child). Results do not change either way: which thread runs a
//! task never changes what it computes.

use std::cell::Cell;
use std::ffi::{c_int, c_uint, c_void};
use std::sync::atomic::{AtomicUsize, Ordering};

use super::fork;

/// `GOMP_parallel(fn, data, num_threads, flags)`: runs `fn(data)` on a team
/// of up to `num_threads` (the caller is thread 0) and returns when all are
/// done (libgomp's ABI since GCC 4.9).
type GompParallel = unsafe extern "C" fn(unsafe extern "C" fn(*mut c_void), *mut c_void, c_uint, c_uint);
/// `omp_get_thread_num()` and `omp_get_max_threads()`.
type OmpInt = unsafe extern "C" fn() -> c_int;

/// The registered entry points (addresses, 0 when none) and the fork
/// generation they belong to.
static PARALLEL: AtomicUsize = AtomicUsize::new(0);
static THREAD_NUM: AtomicUsize = AtomicUsize::new(0);
static MAX_THREADS: AtomicUsize = AtomicUsize::new(0);
static GENERATION: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    /// Set while this thread runs a task of a host team (a nested pass
    /// then uses the kernels' own helpers: nested OpenMP teams run on one
    /// thread).
    static IN_TEAM: Cell<bool> = const { Cell::new(false) };
}

/// Registers the host's OpenMP entry points by address: `GOMP_parallel`,
/// `omp_get_thread_num`, `omp_get_max_threads`; any 0 unregisters.
///
/// # Safety
/// Each non-zero address is that function of one loaded libgomp, with the
/// signatures above, and stays loaded for the life of the process.
pub unsafe fn set_runtime(parallel: usize, thread_num: usize, max_threads: usize) {
    let all = parallel != 0 && thread_num != 0 && max_threads != 0;
    PARALLEL.store(0, Ordering::SeqCst);
    THREAD_NUM.store(if all { thread_num } else { 0 }, Ordering::SeqCst);
    MAX_THREADS.store(if all { max_threads } else { 0 }, Ordering::SeqCst);
    GENERATION.store(fork::generation(), Ordering::SeqCst);
    PARALLEL.store(if all { parallel } else { 0 }, Ordering::SeqCst);
}

/// The registered runtime, if any, for this process image and this thread
/// (not from inside a host team).
fn runtime() -> Option<(GompParallel, OmpInt, OmpInt)> {
    let parallel = PARALLEL.load(Ordering::Acquire);
    if parallel == 0 || GENERATION.load(Ordering::Relaxed) != fork::generation() || IN_TEAM.with(Cell::get) {
        return None;
    }
    let (thread_num, max_threads) = (THREAD_NUM.load(Ordering::Relaxed), MAX_THREADS.load(Ordering::Relaxed));
    // SAFETY: the addresses were registered as these functions (`set_runtime`).
    unsafe {
        Some((
            std::mem::transmute::<usize, GompParallel>(parallel),
            std::mem::transmute::<usize, OmpInt>(thread_num),
            std::mem::transmute::<usize, OmpInt>(max_threads),
        ))
    }
}

/// Whether a pass would run on the host's team now.
pub fn active() -> bool {
    runtime().is_some()
}

/// What one host team runs: `work(worker)` on each of its threads.
struct Job<'a> {
    work: &'a (dyn Fn(usize) + Sync),
    thread_num: OmpInt,
}

unsafe extern "C" fn run_job(data: *mut c_void) {
    // SAFETY: `data` is the `Job` that `run` passes, alive until
    // GOMP_parallel returns.
    let job = unsafe { &*(data as *const Job<'_>) };
    // SAFETY: a registered libgomp function, called on one of its threads.
    let worker = unsafe { (job.thread_num)() }.max(0) as usize;
    IN_TEAM.with(|t| t.set(true));
    // `work` catches its tasks' panics; one escaping here would unwind
    // through C frames, so it ends the process instead.
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| (job.work)(worker)));
    IN_TEAM.with(|t| t.set(false));
    if outcome.is_err() {
        std::process::abort();
    }
}

/// Runs `work(w)` for workers `w = 0..` on a host team of at most `workers`
/// threads (and at most the host's own thread count), and returns how many
/// threads the team had; `None` (nothing run) when no host runtime is
/// registered. The team may have fewer threads than asked: `work` must
/// finish the job whatever the count (the team's claims do).
pub(crate) fn run(workers: usize, work: &(dyn Fn(usize) + Sync)) -> Option<usize> {
    let (parallel, thread_num, max_threads) = runtime()?;
    // SAFETY: registered libgomp functions.
    let host = unsafe { max_threads() }.max(1) as usize;
    let threads = workers.clamp(1, host);
    let job = Job { work, thread_num };
    // SAFETY: `run_job` matches the callback type; `job` outlives the call,
    // which returns only once every thread of the team is done.
    unsafe { parallel(run_job, &job as *const Job<'_> as *mut c_void, threads as c_uint, 0) };
    Some(threads)
}
