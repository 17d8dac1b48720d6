"""What probing the package like a hostile user found, beyond the issue's
list, kept as regression tests: odd dtypes and keys, Ctrl-C in the middle of
calls, reentrant calls, and loading a file while it is being written."""

from __future__ import annotations

import random
import signal
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from pathlib import Path

import numpy as np
import pytest

import sincos_rs as sr


def test_byte_swapped_dtypes_name_the_native_ones() -> None:
    model = sr.LSTMRegressor(dtype=np.dtype(">f4"))
    assert model.dtype == np.float32 and model.dtype.isnative
    layer = sr.LSTM(2, 3, dtype=np.dtype(">f8"))
    assert layer.forward(np.ones((1, 2, 2)))[0].dtype == np.float64


def test_odd_keys_and_metadata_are_clear_errors() -> None:
    with pytest.raises(TypeError, match="str names"):
        sr.Adam({1: np.zeros(2, np.float32)})  # type: ignore[dict-item]
    opt = sr.Adam({"a": np.zeros(2, np.float32)})
    with pytest.raises(ValueError, match="keys"):
        opt.load_state_dict({"m": {1: 0, "a": 1}, "v": {}, "step": 0})
    with pytest.raises(TypeError, match="metadata"):
        sr.LSTMRegressor().save("never-written.npz", metadata=[1, 2])  # type: ignore[arg-type]
    assert not Path("never-written.npz").exists()


@pytest.mark.skipif(sys.platform == "win32", reason="setitimer is POSIX")
def test_ctrl_c_never_splits_an_update_from_its_step_count() -> None:
    """A KeyboardInterrupt at a random moment of ``Adam.step``: either the
    whole update and its count happened, or neither (the count lives with
    the update, in one Rust call)."""
    params = {"w": np.zeros((500, 500), np.float32)}
    opt = sr.Adam(params)
    grads = {"w": np.ones((500, 500), np.float32)}

    def interrupt(*_: object) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGALRM, interrupt)
    rng = random.Random(0)
    try:
        for _ in range(60):
            try:
                signal.setitimer(signal.ITIMER_REAL, rng.uniform(1e-4, 2e-3))
                opt.step(grads)
                time.sleep(3e-3)
            except KeyboardInterrupt:
                pass
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    k = opt.step_count
    # With a gradient of ones, v = 1 - 0.999**k after k updates.
    assert abs(float(opt.v["w"][0, 0]) - (1 - 0.999**k)) < 1e-5, k


def test_reentrant_calls_run_one_after_the_other() -> None:
    """A gradient mapping whose lookup steps the same optimiser: the inner
    step runs first, whole, then the outer one."""
    opt = sr.Adam({"w": np.zeros(3, np.float32)}, lr=0.1)

    class Reentrant(Mapping[str, np.ndarray]):
        calls = 0

        def __getitem__(self, key: str) -> np.ndarray:
            if not self.calls:
                self.calls += 1
                opt.step({"w": np.ones(3, np.float32)})
            return np.ones(3, np.float32)

        def __iter__(self) -> Iterator[str]:
            return iter(["w"])

        def __len__(self) -> int:
            return 1

    opt.step(Reentrant())
    assert opt.step_count == 2


def test_loading_while_another_thread_saves(tmp_path: Path) -> None:
    path = tmp_path / "m.npz"
    model = sr.LSTMRegressor()
    model.save(path)
    stop = threading.Event()

    def writer() -> None:
        batches = sr.SinCosBatches()
        while not stop.is_set():
            model.train_step(*next(batches)[:2])
            model.save(path)

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        steps = {sr.LSTMRegressor.load(path).step for _ in range(100)}
    finally:
        stop.set()
        thread.join()
    assert len(steps) > 1, "the writer did not run"
    assert [p.name for p in tmp_path.iterdir()] == ["m.npz"]
