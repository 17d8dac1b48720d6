//! Lockstep passes: a team of threads works through a run of phases (the
//! time steps of a recurrence), each cut into the same number of tasks; a
//! phase starts when every task of the one before is done.
//!
//! Tasks are claimed, not handed out. Each worker owns a contiguous share
//! of every phase's tasks and claims its own first, so a task runs on the
//! same worker phase after phase and the weights it reads stay in that
//! core's cache (every other phase it runs its share backwards, so the
//! tasks it ran last come first while their data is still cached); then it
//! claims whatever the others have not taken. So a
//! worker that starts late (its helper was parked, or busy with another
//! call) or is descheduled holds up only the task it is running: the rest
//! of the team does its share, and a team of one thread does every task.
//!
//! The team's workers are the caller and helpers of `pool` (a fork-join
//! tree of `pool::join`), or the host's OpenMP team when there is one
//! (`openmp.rs`); nothing is allocated per pass: the claim counters live on
//! the caller's stack. Which worker runs a task never
//! changes what the task computes, so results do not depend on the thread
//! count (each task writes its own outputs, and no sum is split between
//! tasks).

use std::any::Any;
use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;

use super::{openmp, pool};

/// The most workers a pass takes (the rest of the thread count, if any,
/// would only wait at the phase barriers).
pub(crate) const MAX_WORKERS: usize = 64;

/// One worker's claim counter, alone on its cache line: its owner claims
/// from it every phase, the others only when they run out of work.
#[repr(align(64))]
struct Claims(AtomicUsize);

/// The state a pass shares between its workers.
struct Pass<'f, F> {
    work: &'f F,
    phases: usize,
    tasks: usize,
    workers: usize,
    /// Worker w's share of a phase: tasks `tasks·w/workers ..`.
    claims: [Claims; MAX_WORKERS],
    /// Tasks done over all phases so far.
    done: AtomicUsize,
    /// The phase being worked on (`phases` once the pass is over).
    phase: AtomicUsize,
    panicked: AtomicBool,
    panic: Mutex<Option<Box<dyn Any + Send>>>,
}

impl<F: Fn(usize, usize) + Sync> Pass<'_, F> {
    /// Worker w's share of a phase's tasks.
    fn share(&self, w: usize) -> (usize, usize) {
        (self.tasks * w / self.workers, self.tasks * (w + 1) / self.workers)
    }

    /// Claims the next task of phase `p` in worker `owner`'s share: its
    /// counter counts the claims of every phase, and phase p's claims are
    /// its values `p·len ..= (p + 1)·len − 1` (every task of a phase is
    /// claimed before the next phase starts).
    fn claim(&self, owner: usize, p: usize) -> Option<usize> {
        let (lo, hi) = self.share(owner);
        let len = hi - lo;
        let counter = &self.claims[owner].0;
        let mut seen = counter.load(Ordering::Relaxed);
        loop {
            if seen >= (p + 1) * len {
                return None;
            }
            match counter.compare_exchange_weak(seen, seen + 1, Ordering::Relaxed, Ordering::Relaxed) {
                // Every other phase the share runs backwards: the tasks a
                // worker ran last are first, their data still in its cache
                // (a share of weights a little larger than the cache then
                // keeps part of it there from step to step).
                Ok(_) if p % 2 == 1 => return Some(hi - 1 - (seen - p * len)),
                Ok(_) => return Some(lo + seen - p * len),
                Err(now) => seen = now,
            }
        }
    }

    /// Worker w: every phase, its own tasks, then anyone's left, then waits
    /// for the phase to end.
    fn run_worker(&self, w: usize) {
        let mut p = self.phase.load(Ordering::Acquire);
        while p < self.phases {
            let mut ran = 0;
            for owner in (0..self.workers).map(|i| (w + i) % self.workers) {
                while let Some(task) = self.claim(owner, p) {
                    self.run_task(p, task);
                    ran += 1;
                }
            }
            if ran > 0 && self.done.fetch_add(ran, Ordering::AcqRel) + ran == (p + 1) * self.tasks {
                self.phase.store(p + 1, Ordering::Release);
            }
            let mut polls = 0u32;
            while self.phase.load(Ordering::Acquire) == p {
                std::hint::spin_loop();
                polls = polls.wrapping_add(1);
                // A peer holding the last task may wait for this core.
                if polls.is_multiple_of(1 << 12) {
                    std::thread::yield_now();
                }
            }
            p = self.phase.load(Ordering::Acquire);
        }
    }

    /// Runs one task; a panic is kept for the caller and the task counts as
    /// done, so the rest of the team does not wait forever.
    fn run_task(&self, p: usize, task: usize) {
        if self.panicked.load(Ordering::Relaxed) {
            return;
        }
        if let Err(payload) = panic::catch_unwind(AssertUnwindSafe(|| (self.work)(p, task))) {
            self.panicked.store(true, Ordering::Relaxed);
            let mut slot = self.panic.lock().unwrap_or_else(|e| e.into_inner());
            slot.get_or_insert(payload);
        }
    }

    /// Workers `lo..hi`, forked over the pool's helpers.
    fn spawn(&self, lo: usize, hi: usize) {
        if hi - lo == 1 {
            self.run_worker(lo);
        } else {
            let mid = (lo + hi) / 2;
            pool::join(|| self.spawn(lo, mid), || self.spawn(mid, hi));
        }
    }
}

/// Runs `work(phase, task)` for every task `0..tasks` of every phase
/// `0..phases`, phase after phase, on up to `workers` threads (this one and
/// the pool's helpers; at most [`MAX_WORKERS`] and `tasks`). Every write a
/// phase makes is seen by the next. A panic in a task is raised here once
/// the pass is over.
pub(crate) fn run<F: Fn(usize, usize) + Sync>(workers: usize, phases: usize, tasks: usize, work: F) {
    if phases == 0 || tasks == 0 {
        return;
    }
    let workers = workers.clamp(1, MAX_WORKERS).min(tasks);
    if workers == 1 {
        for p in 0..phases {
            for task in 0..tasks {
                work(p, task);
            }
        }
        return;
    }
    let pass = Pass {
        work: &work,
        phases,
        tasks,
        workers,
        claims: [const { Claims(AtomicUsize::new(0)) }; MAX_WORKERS],
        done: AtomicUsize::new(0),
        phase: AtomicUsize::new(0),
        panicked: AtomicBool::new(false),
        panic: Mutex::new(None),
    };
    // On the host's OpenMP team when there is one (`openmp.rs`), else on
    // the kernels' own helpers.
    let run_worker = |w: usize| pass.run_worker(w);
    if openmp::run(workers, &run_worker).is_none() {
        pass.spawn(0, workers);
    }
    if let Some(payload) = pass.panic.into_inner().unwrap_or_else(|e| e.into_inner()) {
        panic::resume_unwind(payload);
    }
}

/// Raw access to a buffer that a pass's tasks write in disjoint parts
/// (each task its own rows or columns), which the borrow rules cannot see.
pub(crate) struct Shared<T> {
    ptr: *mut T,
    len: usize,
}

impl<T> Clone for Shared<T> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<T> Copy for Shared<T> {}

// SAFETY: a `Shared` is only a pointer; the tasks that use it promise (at
// each `unsafe` call) to touch disjoint parts, or to read what no task of
// the same phase writes.
unsafe impl<T: Send> Send for Shared<T> {}
unsafe impl<T: Send> Sync for Shared<T> {}

impl<T> Shared<T> {
    pub(crate) fn new(buf: &mut [T]) -> Self {
        Shared {
            ptr: buf.as_mut_ptr(),
            len: buf.len(),
        }
    }

    /// A view of a buffer no task writes during the pass (read only).
    pub(crate) fn of(buf: &[T]) -> Self {
        Shared {
            ptr: buf.as_ptr().cast_mut(),
            len: buf.len(),
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// The first element; reads and writes through it carry the promises
    /// of [`Self::slice`] and [`Self::slice_mut`].
    pub(crate) fn ptr(&self) -> *mut T {
        self.ptr
    }

    /// `len` elements from `at`, as a view of their own (bounds checked),
    /// carrying the same promises.
    pub(crate) fn sub(self, at: usize, len: usize) -> Shared<T> {
        assert!(at <= self.len && len <= self.len - at, "shared view out of bounds");
        Shared {
            // SAFETY: in bounds (checked).
            ptr: unsafe { self.ptr.add(at) },
            len,
        }
    }

    /// `len` elements from `at`, writable.
    ///
    /// # Safety
    /// No other task of the same phase reads or writes any of them, and the
    /// buffer outlives the use (both hold for the pass that made this).
    #[inline(always)]
    #[allow(clippy::mut_from_ref)]
    pub(crate) unsafe fn slice_mut(&self, at: usize, len: usize) -> &mut [T] {
        assert!(at <= self.len && len <= self.len - at, "shared slice out of bounds");
        // SAFETY: in bounds (checked), and exclusive by the caller's promise.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.add(at), len) }
    }

    /// `len` elements from `at`, read-only.
    ///
    /// # Safety
    /// No task of the same phase writes any of them.
    #[inline(always)]
    pub(crate) unsafe fn slice(&self, at: usize, len: usize) -> &[T] {
        assert!(at <= self.len && len <= self.len - at, "shared slice out of bounds");
        // SAFETY: in bounds (checked); nothing writes it meanwhile (caller).
        unsafe { std::slice::from_raw_parts(self.ptr.add(at), len) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU64;

    /// Every task of every phase runs exactly once, after every task of the
    /// phase before: task t of phase p reads phase p − 1's results of its
    /// neighbours.
    #[test]
    fn phases_run_in_order_and_every_task_once() {
        for workers in [1, 2, 3, 7] {
            for tasks in [1, 2, 5, 16, 33] {
                let phases = 40;
                let values: Vec<AtomicU64> = (0..2 * tasks).map(|_| AtomicU64::new(1)).collect();
                let runs = AtomicUsize::new(0);
                run(workers, phases, tasks, |p, t| {
                    let (read, write) = if p % 2 == 0 { (0, tasks) } else { (tasks, 0) };
                    let left = values[read + (t + tasks - 1) % tasks].load(Ordering::Relaxed);
                    let right = values[read + (t + 1) % tasks].load(Ordering::Relaxed);
                    values[write + t].store(left.wrapping_mul(3).wrapping_add(right), Ordering::Relaxed);
                    runs.fetch_add(1, Ordering::Relaxed);
                });
                assert_eq!(runs.load(Ordering::Relaxed), phases * tasks);
                // The same recurrence on one thread, plainly.
                let mut now = vec![1u64; tasks];
                for _ in 0..phases {
                    now = (0..tasks)
                        .map(|t| {
                            now[(t + tasks - 1) % tasks]
                                .wrapping_mul(3)
                                .wrapping_add(now[(t + 1) % tasks])
                        })
                        .collect();
                }
                let last = if phases % 2 == 0 { 0 } else { tasks };
                let got: Vec<u64> = (0..tasks).map(|t| values[last + t].load(Ordering::Relaxed)).collect();
                assert_eq!(got, now, "workers {workers}, tasks {tasks}");
            }
        }
    }

    #[test]
    fn a_panic_in_a_task_reaches_the_caller_and_the_team_survives() {
        let result = std::panic::catch_unwind(|| {
            run(2, 10, 8, |p, t| {
                if p == 3 && t == 5 {
                    panic!("task");
                }
            })
        });
        assert!(result.is_err());
        let runs = AtomicUsize::new(0);
        run(2, 3, 4, |_, _| {
            runs.fetch_add(1, Ordering::Relaxed);
        });
        assert_eq!(runs.load(Ordering::Relaxed), 12);
    }
}
