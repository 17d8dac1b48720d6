//! Fork-join on a few persistent helper threads, without heap allocation.
//!
//! rayon, called from a thread outside its pool (every call from Python
//! is), queues each job in a global injector that allocates a new block
//! every 63 jobs: a training step that forks a few times allocated once
//! every 15 steps or so (`tests/no_alloc.rs` counts). Here [`join`] hands
//! its second half to an idle helper through that helper's own slot: no
//! queue, nothing allocated once the helpers exist.
//!
//! There are `num_threads() - 1` helpers at most, started on first use,
//! once per process image: a forked child starts its own (`fork.rs`).
//! A helper spins for [`SPIN`] after its last job, then parks. A caller
//! that finishes its own half while the helper has not yet taken the
//! other (parked, or not scheduled) takes it back and runs it itself,
//! without waiting: a pass that arrives after a pause (the next call from
//! Python, after the rest of a PyTorch model ran) costs one wake-up call,
//! not the OS's wake-up latency, and the woken helper spins, ready for the
//! passes that follow. Joins nest (a half may join again, on another idle
//! helper or inline). A panic in either half is re-raised in the caller
//! once both halves are done.

use std::any::Any;
use std::cell::UnsafeCell;
use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

use super as threads;
use super::fork::PerProcess;

/// How long a helper spins without work before it parks: long enough to
/// stay hot from one pass of a training step to the next, short enough to
/// hand the core back to other work (NumPy's BLAS threads, say) at once.
/// A training step's passes follow each other well within it (the seed
/// network's too, from one Python call to the next), so only the first
/// pass after a pause wakes a parked helper.
const SPIN: Duration = Duration::from_micros(100);

/// At most this many helpers, whatever the thread count asks for.
const MAX_HELPERS: usize = 63;

const IDLE: u8 = 0;
const POSTED: u8 = 1;
/// The helper has taken the posted job: the poster must wait for DONE.
const TAKEN: u8 = 2;
const DONE: u8 = 3;

/// A posted half: a type-erased closure living on the caller's stack.
#[derive(Clone, Copy)]
struct JobRef {
    data: *const (),
    run: unsafe fn(*const ()),
}

struct Helper {
    /// Held by the caller that has posted to this helper.
    owner: Mutex<()>,
    state: AtomicU8,
    job: UnsafeCell<Option<JobRef>>,
    /// Set by the helper before it parks; a caller then wakes it.
    parked: AtomicBool,
    /// Set with a wake-up: spin again even if the job is taken back.
    woken: AtomicBool,
    wake_lock: Mutex<()>,
    wake: Condvar,
}

// SAFETY: `job` is written only by the caller holding `owner` while the
// state is IDLE (the previous owner saw DONE and reset it, or took its job
// back), and read only by the helper after it moved POSTED to TAKEN; the
// SeqCst store of POSTED and the Acquire exchange that sees it order the
// two. A job taken back (POSTED to IDLE) is never read.
unsafe impl Sync for Helper {}

/// This process image's helpers, each started on first use.
type Helpers = [OnceLock<Option<&'static Helper>>; MAX_HELPERS];

/// The helpers of this process (a forked child gets fresh ones: the
/// parent's threads do not exist in it).
fn helpers() -> &'static Helpers {
    static HELPERS: PerProcess<Helpers> = PerProcess::new();
    HELPERS.get(|| [const { OnceLock::new() }; MAX_HELPERS])
}

/// Helper `i` of `helpers`, started on first use; `None` if the thread could
/// not be started (then its share runs on the caller).
fn helper(helpers: &'static Helpers, i: usize) -> Option<&'static Helper> {
    *helpers[i].get_or_init(|| {
        let h: &'static Helper = Box::leak(Box::new(Helper {
            owner: Mutex::new(()),
            state: AtomicU8::new(IDLE),
            job: UnsafeCell::new(None),
            parked: AtomicBool::new(false),
            woken: AtomicBool::new(false),
            wake_lock: Mutex::new(()),
            wake: Condvar::new(),
        }));
        let started = std::thread::Builder::new()
            .name(format!("sincos_rs-{i}"))
            .spawn(move || {
                h.state.store(DONE, Ordering::Release);
                helper_loop(h)
            })
            .is_ok();
        // Wait for the thread to run: what it allocates as it starts then
        // happens here, on first use, not in some later pass (that may have
        // taken its half back without waiting; tests/no_alloc.rs counts).
        while started && h.state.load(Ordering::Acquire) != DONE {
            std::thread::yield_now();
        }
        h.state.store(IDLE, Ordering::Relaxed);
        started.then_some(h)
    })
}

fn helper_loop(h: &'static Helper) {
    loop {
        let mut since = Instant::now();
        let mut polls = 0u32;
        while h.state.load(Ordering::Acquire) != POSTED {
            std::hint::spin_loop();
            polls = polls.wrapping_add(1);
            // The clock costs more than a poll: read it now and then.
            if polls.is_multiple_of(256) && since.elapsed() > SPIN {
                let mut guard = h.wake_lock.lock().unwrap_or_else(|e| e.into_inner());
                h.parked.store(true, Ordering::SeqCst);
                while h.state.load(Ordering::SeqCst) != POSTED && !h.woken.swap(false, Ordering::SeqCst) {
                    guard = h.wake.wait(guard).unwrap_or_else(|e| e.into_inner());
                }
                h.parked.store(false, Ordering::SeqCst);
                drop(guard);
                since = Instant::now();
            }
        }
        // The poster may take the job back until this succeeds.
        if h.state
            .compare_exchange(POSTED, TAKEN, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            continue;
        }
        // SAFETY: POSTED was published after the job was written (see Helper).
        let job = unsafe { (*h.job.get()).take() };
        if let Some(job) = job {
            // SAFETY: the poster keeps the half alive until it sees DONE.
            unsafe { (job.run)(job.data) };
        }
        h.state.store(DONE, Ordering::Release);
    }
}

/// The second half of a join; whoever claims it first runs it.
struct Half<B> {
    claimed: AtomicBool,
    f: UnsafeCell<Option<B>>,
    panic: UnsafeCell<Option<Box<dyn Any + Send>>>,
}

impl<B: FnOnce()> Half<B> {
    fn run_if_unclaimed(&self) {
        if self.claimed.swap(true, Ordering::AcqRel) {
            return;
        }
        // SAFETY: the claim above is exclusive, so this is the only access.
        let f = unsafe { (*self.f.get()).take() };
        if let Some(f) = f {
            if let Err(payload) = panic::catch_unwind(AssertUnwindSafe(f)) {
                // SAFETY: as above; the poster reads it only after DONE.
                unsafe { *self.panic.get() = Some(payload) };
            }
        }
    }
}

unsafe fn run_half<B: FnOnce()>(data: *const ()) {
    // SAFETY: `data` is the `Half<B>` that `join` posted and waits on.
    let half = unsafe { &*(data as *const Half<B>) };
    half.run_if_unclaimed();
}

/// Runs `a` on this thread and `b` on an idle helper, and returns when both
/// are done; both here when no helper is idle or the thread count is 1.
/// With a host OpenMP runtime (`openmp.rs`), on two threads of its team.
pub(crate) fn join<A: FnOnce() + Send, B: FnOnce() + Send>(a: A, b: B) {
    if threads::num_threads() > 1 && super::openmp::active() {
        return join_on_host(a, b);
    }
    let count = threads::num_threads().saturating_sub(1).min(MAX_HELPERS);
    let helpers = helpers();
    for h in (0..count).filter_map(|i| helper(helpers, i)) {
        if let Ok(_owner) = h.owner.try_lock() {
            post_and_run(h, a, b);
            return;
        }
    }
    a();
    b();
}

/// [`join`] on a host OpenMP team of two; a half the team did not run (a
/// team of one) runs here after it. Panics are raised once both are done.
fn join_on_host<A: FnOnce() + Send, B: FnOnce() + Send>(a: A, b: B) {
    let halves = (Mutex::new(Some(a)), Mutex::new(Some(b)));
    let panics: Mutex<Vec<Box<dyn Any + Send>>> = Mutex::new(Vec::new());
    let keep = |result: std::thread::Result<()>| {
        if let Err(payload) = result {
            panics.lock().unwrap_or_else(|e| e.into_inner()).push(payload);
        }
    };
    let work = |w: usize| match w {
        0 => {
            if let Some(a) = halves.0.lock().unwrap_or_else(|e| e.into_inner()).take() {
                keep(panic::catch_unwind(AssertUnwindSafe(a)));
            }
        }
        1 => {
            if let Some(b) = halves.1.lock().unwrap_or_else(|e| e.into_inner()).take() {
                keep(panic::catch_unwind(AssertUnwindSafe(b)));
            }
        }
        _ => {}
    };
    super::openmp::run(2, &work);
    for w in 0..2 {
        work(w);
    }
    if let Some(payload) = panics
        .into_inner()
        .unwrap_or_else(|e| e.into_inner())
        .into_iter()
        .next()
    {
        panic::resume_unwind(payload);
    }
}

fn post_and_run<A: FnOnce(), B: FnOnce()>(h: &Helper, a: A, b: B) {
    let half = Half {
        claimed: AtomicBool::new(false),
        f: UnsafeCell::new(Some(b)),
        panic: UnsafeCell::new(None),
    };
    // SAFETY: this caller holds `owner` and the state is IDLE (see Helper).
    unsafe {
        *h.job.get() = Some(JobRef {
            data: &half as *const Half<B> as *const (),
            run: run_half::<B>,
        })
    };
    h.state.store(POSTED, Ordering::SeqCst);
    if h.parked.load(Ordering::SeqCst) {
        let _lock = h.wake_lock.lock().unwrap_or_else(|e| e.into_inner());
        h.woken.store(true, Ordering::SeqCst);
        h.wake.notify_one();
    }
    let mine = panic::catch_unwind(AssertUnwindSafe(a));
    let taken_back = h
        .state
        .compare_exchange(POSTED, IDLE, Ordering::AcqRel, Ordering::Acquire)
        .is_ok();
    if taken_back {
        // SAFETY: state IDLE and `owner` held: the helper cannot read it.
        unsafe { *h.job.get() = None };
    }
    half.run_if_unclaimed();
    if !taken_back {
        // `half` lives on this stack: wait until the helper is done with
        // it, even if `a` panicked. Yield now and then, in case the helper
        // waits for this very core.
        let mut polls = 0u32;
        while h.state.load(Ordering::Acquire) != DONE {
            std::hint::spin_loop();
            polls = polls.wrapping_add(1);
            if polls.is_multiple_of(1024) {
                std::thread::yield_now();
            }
        }
        h.state.store(IDLE, Ordering::Relaxed);
    }
    if let Err(payload) = mine {
        panic::resume_unwind(payload);
    }
    if let Some(payload) = half.panic.into_inner() {
        panic::resume_unwind(payload);
    }
}

#[cfg(test)]
mod tests {
    use super::join;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// Sums 0..n by splitting in halves down to `leaf`, every split a join.
    fn tree_sum(lo: usize, hi: usize, leaf: usize) -> usize {
        if hi - lo <= leaf {
            return (lo..hi).sum();
        }
        let mid = (lo + hi) / 2;
        let (mut left, mut right) = (0, 0);
        join(|| left = tree_sum(lo, mid, leaf), || right = tree_sum(mid, hi, leaf));
        left + right
    }

    #[test]
    fn runs_both_halves_every_time_and_nests() {
        for round in 0..2_000 {
            let (mut left, mut right) = (0, 0);
            join(|| left = round, || right = round + 1);
            assert_eq!((left, right), (round, round + 1));
        }
        assert_eq!(tree_sum(0, 100_000, 1_000), (0..100_000).sum::<usize>());
    }

    #[test]
    fn wakes_a_helper_after_it_parked() {
        let mut out = 0;
        join(|| (), || out = 1);
        std::thread::sleep(super::SPIN * 3);
        join(|| (), || out += 1);
        assert_eq!(out, 2);
    }

    #[test]
    fn halves_taken_back_from_a_parked_helper_still_run_once() {
        // Each join finds the helper parked: its half is usually taken back
        // and run here, sometimes taken by the woken helper; either way once.
        let runs = AtomicUsize::new(0);
        for _ in 0..50 {
            std::thread::sleep(super::SPIN * 3);
            join(
                || {},
                || {
                    runs.fetch_add(1, Ordering::Relaxed);
                },
            );
            // The woken helper spins: joins right after it find it ready.
            for _ in 0..10 {
                join(
                    || {},
                    || {
                        runs.fetch_add(1, Ordering::Relaxed);
                    },
                );
            }
        }
        assert_eq!(runs.load(Ordering::Relaxed), 50 * 11);
    }

    #[test]
    fn concurrent_callers_each_get_both_halves() {
        let total = AtomicUsize::new(0);
        std::thread::scope(|s| {
            for id in 0..4 {
                let total = &total;
                s.spawn(move || {
                    for _ in 0..2_000 {
                        let (mut a, mut b) = (0, 0);
                        join(|| a = id, || b = id * 10);
                        assert_eq!((a, b), (id, id * 10));
                        total.fetch_add(1, Ordering::Relaxed);
                    }
                });
            }
        });
        assert_eq!(total.load(Ordering::Relaxed), 8_000);
    }

    #[test]
    fn a_panic_in_either_half_reaches_the_caller() {
        assert!(std::panic::catch_unwind(|| join(|| (), || panic!("second half"))).is_err());
        assert!(std::panic::catch_unwind(|| join(|| panic!("first half"), || ())).is_err());
        // The helpers survive and keep working.
        let mut ok = false;
        join(|| (), || ok = true);
        assert!(ok);
    }
}
