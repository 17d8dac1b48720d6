"""The kernels' parallel passes on torch's OpenMP team (``sincos_rs.torch.threads``,
``rust/threads/openmp.rs``): found on import where torch's backend is OpenMP,
the same bits as on the kernels' own helpers, and a forked child falls back
to its own helpers."""

from __future__ import annotations

import importlib.util
import multiprocessing
import os
import sys

import numpy as np
import pytest

if os.environ.get("CI") and importlib.util.find_spec("torch") is None:
    raise RuntimeError("CI must run the torch tests: .ci/run installs torch")
torch = pytest.importorskip("torch")

import sincos_rs as sr  # noqa: E402
from sincos_rs import _core  # noqa: E402
from sincos_rs.torch import LSTM, threads  # noqa: E402

OPENMP = sys.platform.startswith("linux") and (
    "parallel backend: OpenMP" in torch.__config__.parallel_info()
)


def train_once(batch: int, hidden: int) -> list[np.ndarray]:
    torch.manual_seed(0)
    model = LSTM(32, hidden, num_layers=2, batch_first=True)
    x = torch.randn(batch, 12, 32, requires_grad=True)
    out, (h, c) = model(x)
    (out.square().sum() + h.sum() + c.sum()).backward()
    tensors = [out, h, c, x.grad, *(p.grad for p in model.parameters())]
    return [t.detach().numpy().copy() for t in tensors]


@pytest.mark.skipif(not OPENMP, reason="torch's backend here is not OpenMP on Linux")
def test_importing_the_bridge_puts_the_passes_on_torchs_team() -> None:
    assert threads.use_torch_openmp()
    assert _core._openmp_active()


@pytest.mark.skipif(not OPENMP, reason="torch's backend here is not OpenMP on Linux")
@pytest.mark.parametrize("batch,hidden", [(1, 256), (8, 64), (40, 64), (64, 128)])
def test_the_same_bits_on_torchs_team_and_on_the_kernels_own(batch: int, hidden: int) -> None:
    """Units (B <= 16) and lanes (B > 16) shapes, two threads either way."""
    before = sr.get_num_threads()
    sr.set_num_threads(2)
    try:
        threads.use_own_threads()
        assert not _core._openmp_active()
        own = train_once(batch, hidden)
        assert threads.use_torch_openmp()
        host = train_once(batch, hidden)
    finally:
        threads.use_torch_openmp()
        sr.set_num_threads(before)
    for a, b in zip(own, host, strict=True):
        np.testing.assert_array_equal(a, b)


def _child(queue: multiprocessing.Queue) -> None:
    queue.put((_core._openmp_active(), [a.sum() for a in train_once(8, 64)]))


@pytest.mark.skipif(not OPENMP, reason="torch's backend here is not OpenMP on Linux")
def test_a_forked_child_runs_on_its_own_helpers() -> None:
    threads.use_torch_openmp()
    want = [a.sum() for a in train_once(8, 64)]
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    child = ctx.Process(target=_child, args=(queue,))
    child.start()
    active, got = queue.get(timeout=120)
    child.join(timeout=60)
    assert child.exitcode == 0
    assert not active, "the child used the parent's OpenMP team"
    np.testing.assert_allclose(got, want, rtol=0, atol=0)
