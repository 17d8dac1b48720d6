"""The grid benchmark's parts that decide what it reports (no timing here):
the peers built from the same weights agree with torch.nn.LSTM (the ONNX
model's gate order and bias layout, the torch modules, the NumPy API), the
interleaving order and repetition counts, the bandwidth interpolation, the
targets a cell is marked against, and the grid's cells and options.

JAX is a benchmark extra (``.[bench]``), not a test one: benches/grid.py
checks its LSTM against torch.nn.LSTM in every cell it runs."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benches"))

import grid  # noqa: E402
import grid_report  # noqa: E402
import limits  # noqa: E402
import peers  # noqa: E402
import timing  # noqa: E402

TOL = {"float64": 1e-10, "float32": 1e-5}


def _assert_close(result: peers.Result, reference: peers.Result, dtype: str) -> None:
    tensors = {"out": reference.out, **(reference.grads or {})}
    for name, diff in peers.max_abs_diffs(result, reference).items():
        scale = max(1.0, float(np.max(np.abs(tensors[name]))))
        assert diff <= TOL[dtype] * scale, f"{name}: max |diff| {diff:.3e} (scale {scale:.3g})"


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("train", [False, True])
@pytest.mark.parametrize("name", ["module", "numpy_api", "onnxruntime"])
def test_peer_matches_torch_from_the_same_weights(name: str, train: bool, dtype: str) -> None:
    pytest.importorskip("torch")
    weights = peers.Weights.random(5, 7, dtype, seed=3)
    x = peers.random_input(3, 6, 5, dtype)
    reference = peers.torch_reference(weights, x, train)
    try:
        runner = peers.RUNNERS[name](weights, x, train)
    except peers.Unsupported:
        assert name == "onnxruntime" and (train or dtype == "float64")
        return
    result = runner.result(runner.step())
    assert result.out.shape == (3, 6, 7)
    if train:
        assert set(result.grads or {}) == {"weight_ih", "weight_hh", "bias", "x"}
    _assert_close(result, reference, dtype)


def test_onnx_model_reorders_every_gate_and_both_biases() -> None:
    """Each gate block and each bias gets its own value: a swap of any two
    ONNX blocks, or of Wb and Rb, would change the output."""
    onnx = pytest.importorskip("onnx")
    from onnx import numpy_helper

    h = 4
    rows = np.repeat(np.arange(4, dtype=np.float32), h)  # block g holds g
    weights = peers.Weights(
        rows[:, None] * np.ones((1, 3), np.float32),
        rows[:, None] * np.ones((1, h), np.float32),
        rows,
        rows + 10,
    )
    model = peers.onnx_lstm_model(weights)
    onnx.checker.check_model(model)
    init = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    order = [0, 3, 1, 2]  # ONNX (i, o, f, c) from torch (i, f, g, o)
    assert init["W"].shape == (1, 4 * h, 3) and init["R"].shape == (1, 4 * h, h)
    assert [int(init["W"][0, g * h, 0]) for g in range(4)] == order
    assert [int(init["R"][0, g * h, 0]) for g in range(4)] == order
    assert [int(init["B"][0, g * h]) for g in range(8)] == order + [o + 10 for o in order]


def test_lstm_cell_from_the_same_weights_is_one_step_of_the_layer() -> None:
    torch = pytest.importorskip("torch")
    weights = peers.Weights.random(5, 7, "float64", seed=1)
    x = peers.random_input(3, 1, 5, "float64")
    with torch.no_grad():
        out = peers.torch_lstm(weights)(torch.from_numpy(x))[0][:, 0]
        h, _ = peers.torch_lstm_cell(weights)(torch.from_numpy(x[:, 0]))
    assert torch.allclose(out, h, rtol=0, atol=1e-12)


def test_budget_spreads_repetitions_over_rounds() -> None:
    budget = timing.Budget(seconds=0.3, rounds=3, min_reps=3, max_reps=600)
    assert budget.reps_per_round(10.0) == 1  # 3 calls at least, one per round
    assert budget.reps_per_round(0.01) == 10  # 30 calls for 0.3 s
    assert budget.reps_per_round(1e-9) == 200  # capped at 600 calls
    assert timing.Budget(0.3, 2, 3).reps_per_round(10.0) == 2  # ceil(3 / 2)


def test_interleave_rotates_the_order_each_round() -> None:
    calls: list[str] = []

    def contender(name: str) -> timing.Contender:
        return timing.Contender(name, lambda: calls.append(name), lambda: calls.append("prep"))

    names = ["a", "b", "c"]
    budget = timing.Budget(seconds=1e-12, rounds=3, min_reps=6, settle=0)  # 2 calls per round
    samples = timing.interleave([contender(n) for n in names], budget)
    runs = [c for c in calls if c != "prep"][3:]  # after the calibration calls
    blocks = [runs[k : k + 3] for k in range(0, len(runs), 3)]  # a warm-up call, 2 timed
    assert [b[0] for b in blocks] == ["a", "b", "c", "b", "c", "a", "c", "a", "b"]
    assert all(b[0] == b[1] == b[2] for b in blocks) and len(runs) == 27
    assert calls.count("prep") == 3 + 9  # before each calibration and each block
    assert all(len(s.times) == 6 and len(s.rounds) == 3 for s in samples.values())


def test_bandwidth_interpolates_log_log_and_clamps() -> None:
    bw = {1000: 100.0, 4000: 25.0}
    assert limits.interpolate_bandwidth(bw, 10) == 100.0
    assert limits.interpolate_bandwidth(bw, 1e9) == 25.0
    assert limits.interpolate_bandwidth(bw, 2000) == pytest.approx(50.0)


def test_limits_keep_the_best_of_start_and_end() -> None:
    def run(fma: float, bw: float) -> dict:
        return {
            "fma_gflops": {"float32": {"all": fma, "one_thread": fma / 2, "peak": fma}},
            "gemm_gflops": {"float32": {"256": fma}},
            "bandwidth_gbs": {"65536": bw, "131072": bw / 2},
        }

    best = limits.best_of(run(100.0, 10.0), run(90.0, 20.0))
    assert best["fma_gflops"]["float32"] == {"all": 100.0, "one_thread": 50.0, "peak": 100.0}
    assert best["bandwidth_gbs"] == {"65536": 20.0, "131072": 10.0}


def _record(mode: str, batch: int, hidden: int, medians: dict[str, float]) -> dict:
    cell = grid.Cell(mode, "float32", batch, 50, hidden)
    return {
        "cell": {
            "mode": mode,
            "dtype": "float32",
            "batch": batch,
            "steps": 50,
            "hidden": hidden,
        },
        "flop": cell.flop(),
        "weight_bytes": cell.weight_bytes(),
        "passes": cell.passes(),
        "peers": list(grid.PEERS[mode]),
        "samples": {k: {"median": v} for k, v in medians.items()},
        "error": None,
    }


LIMITS = {
    "fma_gflops": {"float32": {"peak": 100.0}, "float64": {"peak": 50.0}},
    "bandwidth_gbs": {"1000": 100.0, "100000000": 100.0},
}


def test_targets_of_a_small_batch_cell() -> None:
    """B1 H256 training: ratio against the faster peer (JAX here), the
    streaming floor 2 passes x 50 steps x 1 MiB / 100 GB/s, the overhead bound."""
    record = _record(
        "training", 1, 256, {"module": 4e-3, "numpy_api": 2.2e-3, "torch": 5e-3, "jax": 3e-3}
    )
    d = grid_report.derive(record, LIMITS, "module")
    assert d["faster_peer"] == "jax" and d["ratio"] == pytest.approx(0.75)
    floor = 2 * 50 * 4 * 256 * 256 * 4 / 100e9
    assert d["floor"] == pytest.approx(floor)
    assert d["overhead"]["bound"] == pytest.approx(1.1 * 2.2e-3 + 100e-6)
    assert d["below"] == ["≥1× peer", "≤2× floor", "≤1.1×API+100µs"]
    api = grid_report.derive(record, LIMITS, "numpy_api")
    assert api["ratio"] == pytest.approx(3 / 2.2) and api["below"] == ["≤2× floor"]


def test_targets_of_a_large_batch_cell() -> None:
    flop = grid.Cell("inference", "float32", 64, 50, 256).flop()
    fast = flop / 70e9  # 70 % of the 100 GFLOP/s peak
    record = _record("inference", 64, 256, {"module": fast, "numpy_api": fast, "torch": 2 * fast})
    d = grid_report.derive(record, LIMITS, "module")
    assert d["faster_peer"] == "torch" and d["ratio"] == pytest.approx(2.0)
    assert d["fma_share"] == pytest.approx(0.7)
    assert d["targets"] == [("≥1× peer", True), ("≥60 % FMA", True)]  # no overhead target
    slow = _record("inference", 64, 256, {"module": flop / 50e9, "torch": flop / 40e9})
    assert grid_report.derive(slow, LIMITS, "module")["below"] == ["≥60 % FMA"]
    aborted = dict(record, error="jax disagrees")
    assert grid_report.derive(aborted, LIMITS, "module") is None


def test_small_hidden_needs_twice_the_peer() -> None:
    record = _record("inference", 16, 64, {"module": 1.0, "onnxruntime": 1.5, "torch": 3.0})
    d = grid_report.derive(record, LIMITS, "module")
    assert d["faster_peer"] == "onnxruntime" and d["below"] == ["≥2× peer"]


def test_the_full_grid_has_every_cell() -> None:
    args = grid.parse_args([])
    cells = grid.grid_cells(args)
    per_mode = 9 * 7 + 7 + 7  # B x H, B1 T1000 at each H, float64 at B64
    assert len(cells) == 2 * per_mode == len(set(cells))
    assert grid.Cell("training", "float32", 1, 1000, 1024) in cells
    assert grid.Cell("inference", "float64", 64, 50, 512) in cells


def test_grid_options_name_what_is_wrong(capsys: pytest.CaptureFixture[str]) -> None:
    for argv, expected in [
        (["--batch", "1,x"], "--batch"),
        (["--batch", "0"], "--batch"),
        (["--modes", "train"], "--modes"),
        (["--isa", "avx9"], "--isa"),
        (["--budget", "0"], "--budget"),
        (["--rounds", "0"], "--rounds"),
    ]:
        with pytest.raises(SystemExit):
            grid.parse_args(argv)
        assert expected in capsys.readouterr().err


def test_isa_env_caps_every_library_and_keeps_other_xla_flags() -> None:
    env = timing.isa_env("avx2", {"XLA_FLAGS": "--xla_foo=1 --xla_cpu_max_isa=AVX512"})
    assert env["SINCOS_RS_SIMD"] == "avx2" and env["ONEDNN_MAX_CPU_ISA"] == "AVX2"
    assert env["ATEN_CPU_CAPABILITY"] == "avx2" and env["MKL_ENABLE_INSTRUCTIONS"] == "AVX2"
    assert env["XLA_FLAGS"] == "--xla_foo=1 --xla_cpu_max_isa=AVX2"
    assert "XLA_FLAGS" not in timing.isa_env("avx512", {})


def _wrong_by(error: float):
    """A stand-in JAX peer: torch.nn.LSTM's result plus ``error``."""

    def build(weights: peers.Weights, x: np.ndarray, train: bool) -> peers.Runner:
        reference = peers.torch_reference(weights, x, train)
        grads = {k: v + error for k, v in (reference.grads or {}).items()}
        return peers.Runner(lambda: None, lambda _: peers.Result(reference.out + error, grads))

    return build


def _measure_tiny_cell(monkeypatch: pytest.MonkeyPatch, jax_runner) -> dict:
    """A B2 T3 H4 training cell with ``jax_runner`` as the JAX peer."""
    torch = pytest.importorskip("torch")
    monkeypatch.setitem(peers.RUNNERS, "jax", jax_runner)
    cell = grid.Cell("training", "float32", 2, 3, 4)
    names = grid.contender_names("training", ["jax"])
    budget = timing.Budget(seconds=1e-3, rounds=1, min_reps=1)
    before = torch.get_num_threads()
    try:  # torch's default taken as 2, all cores as 3: both extra columns timed
        return grid.measure_cell(cell, names, budget, {"default": 2, "all": 3}, lambda _: None)
    finally:
        torch.set_num_threads(before)


def test_a_wrong_peer_aborts_the_cell(monkeypatch: pytest.MonkeyPatch) -> None:
    record = _measure_tiny_cell(monkeypatch, _wrong_by(0.1))
    assert record["error"].startswith("jax disagrees with torch.nn.LSTM")
    assert record["samples"] == {} and not record["checks"]["jax"]["ok"]
    assert grid_report.derive(record, LIMITS, "module") is None


def test_a_right_peer_is_timed_with_the_others(monkeypatch: pytest.MonkeyPatch) -> None:
    record = _measure_tiny_cell(monkeypatch, _wrong_by(0.0))
    assert record["error"] is None
    timed = {"torch", "torch_1t", "torch_all", "module", "numpy_api", "jax"}
    assert set(record["samples"]) == timed
    assert all(check["ok"] for check in record["checks"].values())


def test_a_peer_not_installed_leaves_its_column_empty(monkeypatch: pytest.MonkeyPatch) -> None:
    def missing(weights: peers.Weights, x: np.ndarray, train: bool) -> peers.Runner:
        raise ModuleNotFoundError("No module named 'jax'")

    record = _measure_tiny_cell(monkeypatch, missing)
    assert record["error"] is None and "jax" in record["unsupported"]
    assert "jax" not in record["samples"] and "module" in record["samples"]


def test_interleave_warms_up_only_cheap_calls() -> None:
    calls: list[str] = []
    budget = timing.Budget(1e-12, rounds=2, min_reps=2, settle=0, block_warmup_below=0)
    samples = timing.interleave([timing.Contender("a", lambda: calls.append("a"))], budget)
    assert len(samples["a"].times) == 2 and len(calls) == 3  # calibration + one per round
