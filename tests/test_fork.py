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
