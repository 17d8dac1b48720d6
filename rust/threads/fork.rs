//! Surviving `fork`: the threads the kernels run on are per process.
//!
//! `fork` copies the memory of the parent, the kernels' thread pools
//! included, but only the thread that called it: in the child, the pools'
//! threads do not exist, and a kernel that waited for them would wait
//! forever. So the pools live in [`PerProcess`] slots: a `pthread_atfork`
//! child handler counts forks, and a slot made before the last fork is
//! replaced on first use in the child by a fresh one, whose threads start
//! lazily as usual. (OpenMP runtimes do the same.) The stale pool is leaked,
//! never dropped: in the child its threads are gone and its locks may be
//! held by threads that no longer exist. Anything else behind a lock that
//! threads share (the kernels' scratch pools) lives in a slot too, so a
//! child never waits for a lock that was held when it was forked.
//!
//! A handler rather than comparing `getpid()` on every call: `getpid` is a
//! system call in current glibc (no cached pid), the handler's counter is one
//! atomic load on the hot path.

use std::sync::atomic::{AtomicPtr, AtomicUsize, Ordering};
use std::sync::Once;

/// Forks seen by this process image (0 in the original process).
static FORKS: AtomicUsize = AtomicUsize::new(0);

#[cfg(unix)]
extern "C" fn count_fork_in_child() {
    // Runs in the child, single-threaded, right after fork: an atomic add
    // is all it does (async-signal-safe).
    FORKS.fetch_add(1, Ordering::Relaxed);
}

/// Registers the fork handler, once per process (before any pool exists:
/// every pool is reached through [`generation`]).
pub(crate) fn watch() {
    static REGISTER: Once = Once::new();
    REGISTER.call_once(|| {
        #[cfg(unix)]
        // SAFETY: the handler is a plain `extern "C" fn` that lives as long
        // as the process; it only touches an atomic.
        unsafe {
            // On failure (ENOMEM) forks go unnoticed: nothing else to do.
            let _ = libc::pthread_atfork(None, None, Some(count_fork_in_child));
        }
    });
}

/// The number of forks between the original process and this one.
pub(crate) fn generation() -> usize {
    watch();
    FORKS.load(Ordering::Acquire)
}

/// A value made once per process image (see the module docs): after a
/// fork, the child's first [`PerProcess::get`] makes a fresh one.
pub(crate) struct PerProcess<T: 'static> {
    current: AtomicPtr<(usize, T)>,
}

impl<T: 'static> PerProcess<T> {
    pub(crate) const fn new() -> Self {
        PerProcess {
            current: AtomicPtr::new(std::ptr::null_mut()),
        }
    }

    /// This process image's value, made by `make` on first use. `make` must
    /// be cheap and start no thread: two callers may race, and the loser's
    /// value is dropped.
    pub(crate) fn get(&'static self, make: impl FnOnce() -> T) -> &'static T {
        let generation = generation();
        let seen = self.current.load(Ordering::Acquire);
        // SAFETY: a non-null pointer here came from `Box::into_raw` below
        // and is never freed once published.
        if let Some((made_in, value)) = unsafe { seen.as_ref() } {
            if *made_in == generation {
                return value;
            }
        }
        let fresh = Box::into_raw(Box::new((generation, make())));
        match self
            .current
            .compare_exchange(seen, fresh, Ordering::AcqRel, Ordering::Acquire)
        {
            // SAFETY: published, so never freed (the stale one is leaked).
            Ok(_) => unsafe { &(*fresh).1 },
            Err(winner) => {
                // SAFETY: `fresh` was never published; `winner` was, by a
                // caller of this generation (forks do not race with threads).
                unsafe {
                    drop(Box::from_raw(fresh));
                    &(*winner).1
                }
            }
        }
    }
}

#[cfg(all(test, unix))]
mod tests {
    use std::time::{Duration, Instant};

    /// Sums 0..n on both kinds of threads: a join on the helper pool, and a
    /// parallel loop on the GEMM pool.
    fn use_both_pools() -> (usize, usize) {
        let (mut left, mut right) = (0, 0);
        super::super::pool::join(|| left = (0..1000).sum(), || right = (1000..2000).sum());
        let par = super::super::gemm_pool::run(2, |_| {
            use rayon::prelude::*;
            (0..2000usize).into_par_iter().sum::<usize>()
        });
        (left + right, par)
    }

    /// Forks, runs `child` in the child (exit status 0 if it returns
    /// true) and waits for it with a timeout: a regression hangs the child.
    fn in_forked_child(child: impl FnOnce() -> bool) {
        // SAFETY: the child only runs `child` and leaves with _exit.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork failed");
        if pid == 0 {
            let ok = child();
            // SAFETY: ends the child at once, running no destructor.
            unsafe { libc::_exit(if ok { 0 } else { 3 }) };
        }
        let start = Instant::now();
        let mut status = 0;
        loop {
            // SAFETY: waiting for our own child.
            let done = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
            if done == pid {
                break;
            }
            if start.elapsed() > Duration::from_secs(60) {
                // SAFETY: killing our own child.
                unsafe { libc::kill(pid, libc::SIGKILL) };
                panic!("the forked child hangs");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(
            libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
            "child status {status}"
        );
    }

    #[test]
    fn a_lock_held_at_fork_is_fresh_in_the_child() {
        use std::sync::Mutex;
        static SLOT: super::PerProcess<Mutex<u32>> = super::PerProcess::new();
        let parent = SLOT.get(|| Mutex::new(1));
        // Held by another thread while the process forks (a scratch being
        // taken from the kernels' pool, say).
        let (held_tx, held_rx) = std::sync::mpsc::channel();
        let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
        let holder = std::thread::spawn(move || {
            let _guard = parent.lock().unwrap_or_else(|e| e.into_inner());
            held_tx.send(()).ok();
            done_rx.recv().ok();
        });
        held_rx.recv().expect("the holder thread started");
        in_forked_child(|| {
            let fresh = SLOT.get(|| Mutex::new(2));
            let value = *fresh.lock().unwrap_or_else(|e| e.into_inner());
            value == 2
        });
        done_tx.send(()).ok();
        holder.join().expect("the holder thread");
        assert_eq!(*SLOT.get(|| Mutex::new(3)).lock().unwrap_or_else(|e| e.into_inner()), 1);
    }

    #[test]
    fn a_forked_child_runs_on_fresh_threads() {
        crate::threads::set_num_threads(2);
        let expected = use_both_pools(); // the parent's threads now exist
                                         // SAFETY: the child only computes and leaves with _exit.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork failed");
        if pid == 0 {
            let ok = use_both_pools() == expected;
            // SAFETY: ends the child at once, running no destructor.
            unsafe { libc::_exit(if ok { 0 } else { 3 }) };
        }
        // The parent waits, with a timeout: a regression hangs the child.
        let start = Instant::now();
        let mut status = 0;
        loop {
            // SAFETY: waiting for our own child.
            let done = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
            if done == pid {
                break;
            }
            if start.elapsed() > Duration::from_secs(60) {
                // SAFETY: killing our own child.
                unsafe { libc::kill(pid, libc::SIGKILL) };
                panic!("the forked child hangs");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(
            libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
            "child status {status}"
        );
        assert_eq!(use_both_pools(), expected, "the parent after the fork");
    }
}
