"""After ``fork``, the child runs the kernels: no hang, the same results.

The kernels fork work onto helper threads (``rust/threads/pool.rs``) and, for
H > 1024, onto the GEMM kernel's rayon pool. Threads do not survive ``fork``:
a child that waited for the parent's helpers would wait forever. Each case
runs in a fresh interpreter in its own session, under a timeout, and the
whole session (the forked children too) is killed if it does not finish, so
a regression fails the test instead of hanging CI.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

import pytest

#: Generous for a 2-core machine shared with other builds; a healthy run
#: takes a few seconds.
TIMEOUT = 120

PRELUDE = """
import os, sys
import numpy as np
import sincos_rs as sr

sr.set_num_threads(2)

def layer_case(hidden, batch, steps, n_in):
    layer = sr.LSTM(n_in, hidden, seed=1)
    x = np.random.default_rng(2).standard_normal((batch, steps, n_in)).astype(np.float32)
    return layer, x

def run(layer, x):
    out, (h, c) = layer.forward(x)
    dx, _ = layer.backward(np.ones_like(out))
    return [out, h, c, dx] + [g.copy() for g in layer.gradients().values()]

def same(a, b):
    return all(np.array_equal(p, q) for p, q in zip(a, b, strict=True))

def fork_and_check(layer, x, expected):
    pid = os.fork()
    if pid == 0:
        ok = same(run(layer, x), expected)
        os._exit(0 if ok else 3)
    _, status = os.waitpid(pid, 0)
    code = os.waitstatus_to_exitcode(status)
    assert code == 0, f"child exit status {code}"
"""

#: (name, hidden, batch, steps, input): one shape per multi-threaded kernel.
KERNELS = [
    ("lanes", 128, 64, 20, 32),  # batch chunks split across the helper threads
    ("gemm", 1100, 4, 3, 8),  # H > 1024: matrix products on rayon
]


def run_script(body: str) -> subprocess.CompletedProcess[str]:
    """Run PRELUDE + body in a new session; kill the session on timeout."""
    code = PRELUDE + textwrap.dedent(body)
    proc = subprocess.Popen(
        [sys.executable, "-c", code],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # the forked children too
        proc.communicate()
        pytest.fail(f"timed out after {TIMEOUT} s: a forked child hangs")
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork on this platform")
@pytest.mark.parametrize("case", KERNELS, ids=lambda c: c[0])
def test_child_runs_the_kernel_after_the_parent_did(case: tuple[str, int, int, int, int]) -> None:
    name, hidden, batch, steps, n_in = case
    result = run_script(
        f"""
        layer, x = layer_case({hidden}, {batch}, {steps}, {n_in})
        expected = run(layer, x)  # the parent's helpers are running now
        fork_and_check(layer, x, expected)
        # and the parent still works after its child did
        assert same(run(layer, x), expected)
        # a grandchild, forked from a child that itself ran the kernel
        pid = os.fork()
        if pid == 0:
            ok = same(run(layer, x), expected)
            fork_and_check(layer, x, expected)
            os._exit(0 if ok else 3)
        assert os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 0
        print("ok")
        """
    )
    assert result.returncode == 0 and result.stdout.strip() == "ok", (
        f"{name}: {result.stdout[-2000:]}\n{result.stderr[-3000:]}"
    )


@pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork on this platform")
def test_multiprocessing_fork_pool_after_parallel_kernels() -> None:
    """multiprocessing's fork start method (Linux's default before Python
    3.14): workers forked after both parallel kernels ran in the parent."""
    result = run_script(
        """
        import multiprocessing as mp

        cases = {"lanes": layer_case(128, 64, 20, 32), "gemm": layer_case(1100, 4, 3, 8)}
        expected = {k: run(*case) for k, case in cases.items()}
        model = sr.LSTMRegressor(seed=0)
        seq, res, _ = next(sr.SinCosBatches())
        cost = model.train_step(seq, res)

        def work(name):
            if name == "seed":
                fresh = sr.LSTMRegressor(seed=0)
                return fresh.train_step(seq, res) == cost
            return same(run(*cases[name]), expected[name])

        with mp.get_context("fork").Pool(2) as pool:
            results = pool.map(work, ["lanes", "gemm", "seed", "lanes"])
        assert results == [True] * 4, results
        print("ok")
        """
    )
    assert result.returncode == 0 and result.stdout.strip() == "ok", (
        f"{result.stdout[-2000:]}\n{result.stderr[-3000:]}"
    )


# --- fork while another thread is in a call (issue 21, item 3) ------------------------------

#: The three objects with a lock, each with a call to make in the child.
OBJECTS = """
import threading, time, pickle
from sincos_rs import _fork

def make(kind):
    if kind == "LSTM":
        layer, x = layer_case(16, 8, 5, 3)
        def call():
            out, _ = layer.forward(x)
            layer.backward(np.ones_like(out))
            return layer.step(np.ascontiguousarray(x[:, 0]))
        return layer, call
    if kind == "Adam":
        layer, _ = layer_case(16, 8, 5, 3)
        opt = sr.Adam(layer.parameters(), lr=1e-3)
        return opt, lambda: opt.step(layer.gradients())
    model = sr.LSTMRegressor(seed=0)
    seq, res, _ = next(sr.SinCosBatches())
    def call():
        model.train_step(seq, res)
        return model.predict(seq), model.state, model.step
    return model, call

def fork_while_held(obj, call, hold_seconds, in_child=None):
    # Another thread holds the object's lock, as it does through a call.
    held = threading.Event()
    def hold():
        with obj._lock:
            held.set()
            time.sleep(hold_seconds)
    holder = threading.Thread(target=hold)
    holder.start()
    held.wait()
    pid = os.fork()
    if pid == 0:
        try:
            (in_child or call)()
            code = 0
        except RuntimeError as err:
            code = 4 if "forked" in str(err) else 5
        except BaseException:
            code = 6
        os._exit(code)
    holder.join()
    call()  # the parent's object works on
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
"""

KINDS = ["LSTM", "Adam", "LSTMRegressor"]


@pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork on this platform")
@pytest.mark.parametrize("kind", KINDS)
def test_fork_during_a_call_on_another_thread_gives_the_child_a_working_object(
    kind: str,
) -> None:
    """The fork waits for the call to end; the child's object has a fresh
    lock (before the fix, its first call waited forever for the copied
    lock)."""
    result = run_script(
        OBJECTS
        + textwrap.dedent(
            f"""
        obj, call = make({kind!r})
        call()
        assert fork_while_held(obj, call, hold_seconds=0.5) == 0
        print("ok")
        """
        )
    )
    assert result.returncode == 0 and result.stdout.strip() == "ok", (
        f"{kind}: {result.stdout[-2000:]}\n{result.stderr[-3000:]}"
    )


@pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork on this platform")
@pytest.mark.parametrize("kind", KINDS)
def test_a_call_that_outlasts_the_fork_wait_is_a_clear_error_in_the_child(kind: str) -> None:
    """A call still running when the wait runs out leaves the object in an
    unknown state in the child: its calls there raise RuntimeError (also
    pickling it, and in a grandchild), never hang; the parent's is fine."""
    result = run_script(
        OBJECTS
        + textwrap.dedent(
            f"""
        _fork.WAIT_SECONDS = 0.2
        obj, call = make({kind!r})
        call()
        assert fork_while_held(obj, call, hold_seconds=2.0) == 4

        def child_checks():
            try:
                pickle.dumps(obj)
            except RuntimeError:
                pass
            else:
                raise AssertionError("pickled")
            try:
                repr(obj)
            except Exception:
                os._exit(7)
            pid = os.fork()  # a grandchild: still unusable, no hang
            if pid == 0:
                try:
                    call()
                except RuntimeError:
                    os._exit(4)
                os._exit(0)
            assert os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 4
            call()

        assert fork_while_held(obj, call, hold_seconds=2.0, in_child=child_checks) == 4
        print("ok")
        """
        )
    )
    assert result.returncode == 0 and result.stdout.strip() == "ok", (
        f"{kind}: {result.stdout[-2000:]}\n{result.stderr[-3000:]}"
    )


@pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork on this platform")
def test_fork_pool_while_a_background_thread_trains_and_predicts() -> None:
    """The server case: a background thread trains the model (and a layer
    and its optimiser) without pause while a fork pool's workers use them."""
    result = run_script(
        OBJECTS
        + textwrap.dedent(
            """
        import multiprocessing as mp

        objects = {kind: make(kind) for kind in ("LSTM", "Adam", "LSTMRegressor")}
        stop = threading.Event()

        def background():
            while not stop.is_set():
                for _, call in objects.values():
                    call()

        thread = threading.Thread(target=background)
        thread.start()

        def work(kind):
            objects[kind][1]()
            return kind

        try:
            for _ in range(3):
                with mp.get_context("fork").Pool(2) as pool:
                    done = pool.map(work, list(objects) * 2)
                assert done == list(objects) * 2, done
        finally:
            stop.set()
            thread.join()
        print("ok")
        """
        )
    )
    assert result.returncode == 0 and result.stdout.strip() == "ok", (
        f"{result.stdout[-2000:]}\n{result.stderr[-3000:]}"
    )


@pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork on this platform")
def test_fork_during_stateless_calls_on_other_threads() -> None:
    """The stateless functions (the PyTorch op's path) hold no lock of an
    object, but take the kernels' scratch from a process-wide pool behind a
    lock: a child forked while another thread held it waited forever for it
    (about 1 fork in 150 here before the fix). Many forks while two threads
    call without pause; every child must run a call and exit."""
    result = run_script(
        """
        import threading, time
        from sincos_rs import _core

        sr.set_num_threads(1)
        b, t, i, h = 1, 1, 1, 4
        x = np.ones((b, t, i), np.float32)
        w_ih = np.full((4 * h, i), 0.1, np.float32)
        w_hh = np.full((4 * h, h), 0.1, np.float32)
        bias = np.zeros(4 * h, np.float32)

        def call():
            out = np.empty((b, t, h), np.float32)
            h_n, c_n = np.empty((b, h), np.float32), np.empty((b, h), np.float32)
            _core.lstm_forward(x, w_ih, w_hh, bias, None, None, out, h_n, c_n, None)

        stop = threading.Event()

        def background():
            while not stop.is_set():
                call()

        threads = [threading.Thread(target=background) for _ in range(2)]
        for thread in threads:
            thread.start()
        hung = 0
        try:
            for _ in range(1500):
                pid = os.fork()
                if pid == 0:
                    call()
                    os._exit(0)
                started = time.monotonic()
                while os.waitpid(pid, os.WNOHANG)[0] != pid:
                    if time.monotonic() - started > 5:
                        os.kill(pid, 9)
                        os.waitpid(pid, 0)
                        hung += 1
                        break
                    time.sleep(0.0005)
        finally:
            stop.set()
            for thread in threads:
                thread.join()
        print("hung", hung)
        """
    )
    assert result.returncode == 0 and result.stdout.strip() == "hung 0", (
        f"{result.stdout[-2000:]}\n{result.stderr[-3000:]}"
    )
