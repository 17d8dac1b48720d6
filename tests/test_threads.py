"""One model, layer or optimiser used from several threads at once.

Overlapping calls on one object are serialised by a lock of that object
(the GIL stays released inside the kernels, so the calls do overlap): each
runs whole, as if the calls had come one after the other. These tests start
real threads on one object and compare with a serial run."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

import sincos_rs as sr
from test_api import assert_same, batches, snapshot

THREADS = 4


def run_threads(work: Callable[[int], Any], count: int = THREADS) -> list[Any]:
    """``work(i)`` on ``count`` threads started together; their results,
    re-raising the first exception."""
    barrier = threading.Barrier(count)
    results: list[Any] = [None] * count
    errors: list[BaseException] = []

    def target(i: int) -> None:
        barrier.wait()
        try:
            results[i] = work(i)
        except BaseException as err:  # noqa: BLE001
            errors.append(err)

    threads = [threading.Thread(target=target, args=(i,)) for i in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
        assert not t.is_alive(), "a thread hangs"
    if errors:
        raise errors[0]
    return results


def test_concurrent_predictions_on_one_model() -> None:
    model = sr.LSTMRegressor(hidden_size=64, seed=0)
    data = batches(THREADS, batch_size=32, time_steps=50)
    expected = [model.predict(seq) for seq, _ in data]
    results = run_threads(lambda i: [model.predict(data[i][0]) for _ in range(5)])
    for i, preds in enumerate(results):
        for pred in preds:
            assert_same(pred, expected[i], f"thread {i}")


def test_concurrent_train_steps_equal_some_serial_order() -> None:
    """Every thread trains on the same batch: the order does not matter then,
    and the result must equal THREADS * 3 steps run one after another."""
    seq, res = batches(1, batch_size=32, time_steps=50)[0]
    serial = sr.LSTMRegressor(hidden_size=32, seed=0)
    serial_costs = sorted(serial.train_step(seq, res) for _ in range(THREADS * 3))
    model = sr.LSTMRegressor(hidden_size=32, seed=0)
    costs = run_threads(lambda i: [model.train_step(seq, res) for _ in range(3)])
    assert sorted(c for per_thread in costs for c in per_thread) == serial_costs
    assert_same(snapshot(model), snapshot(serial), "after the concurrent steps")


def test_concurrent_save_and_train(tmp_path: Path) -> None:
    """save() copies a consistent model (parameters, moments and step of
    the same step) while other threads train it."""
    seq, res = batches(1, batch_size=32, time_steps=50)[0]
    model = sr.LSTMRegressor(hidden_size=32, seed=0)

    def work(i: int) -> None:
        for k in range(4):
            if i == 0:
                path = tmp_path / f"m{k}.npz"
                model.save(path)
                loaded = sr.LSTMRegressor.load(path)
                replay = sr.LSTMRegressor(hidden_size=32, seed=0)
                for _ in range(loaded.step):
                    replay.train_step(seq, res)
                assert_same(snapshot(loaded, False), snapshot(replay, False), f"save {k}")
            else:
                model.train_step(seq, res)

    run_threads(work)
    assert model.step == (THREADS - 1) * 4


def test_concurrent_layer_forward_backward() -> None:
    layer = sr.LSTM(16, 64, seed=0)
    xs = [
        np.random.default_rng(i).standard_normal((16, 30, 16)).astype(np.float32)
        for i in range(THREADS)
    ]
    expected = [layer.forward(x)[0] for x in xs]
    results = run_threads(lambda i: [layer.forward(xs[i])[0] for _ in range(5)])
    for i, outs in enumerate(results):
        for out in outs:
            assert_same(out, expected[i], f"thread {i}")


def test_concurrent_optimiser_steps() -> None:
    params = {"w": np.zeros((256, 256), np.float32)}
    grad = {"w": np.ones((256, 256), np.float32)}
    serial = sr.Adam({"w": np.zeros((256, 256), np.float32)}, lr=0.01)
    for _ in range(THREADS * 10):
        serial.step(grad)
    opt = sr.Adam(params, lr=0.01)
    run_threads(lambda i: [opt.step(grad) for _ in range(10)])
    assert opt.step_count == THREADS * 10
    assert_same(opt.state_dict(), serial.state_dict(), "Adam after concurrent steps")
    assert_same(params["w"], serial.params["w"], "parameters after concurrent steps")


def test_weights_reassigned_while_other_threads_run_forward() -> None:
    """Reassigning a weight copies into the array in use, under the layer's
    lock: every forward sees the old weights or the new ones, never half."""
    layer = sr.LSTM(8, 32, seed=0)
    x = np.random.default_rng(0).standard_normal((16, 20, 8)).astype(np.float32)
    old_w = layer.weight_hh.copy()
    new_w = (old_w * 0.5).astype(np.float32)
    out_old = layer.forward(x)[0]
    layer.weight_hh = new_w
    out_new = layer.forward(x)[0]
    layer.weight_hh = old_w

    def work(i: int) -> list[np.ndarray]:
        if i == 0:
            for k in range(20):
                layer.weight_hh = new_w if k % 2 == 0 else old_w
            return []
        return [layer.forward(x)[0] for _ in range(10)]

    for outs in run_threads(work):
        for out in outs:
            assert np.array_equal(out, out_old) or np.array_equal(out, out_new)
