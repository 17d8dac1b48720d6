"""Property tests (hypothesis): random shapes across every kernel's edges
against the NumPy reference, in both dtypes; results bit-identical across
thread counts; every instruction set this CPU has; and random damage to a
checkpoint file, which loads as it was or raises ValueError, nothing else.

Two profiles: "ci" (the default, sized for CI: the whole file in under a
minute here) and "thorough" (20 times the examples of every test), chosen
with the environment variable ``SINCOS_RS_HYPOTHESIS_PROFILE``::

    SINCOS_RS_HYPOTHESIS_PROFILE=thorough python -m pytest tests/test_properties.py
"""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import sincos_rs as sr
from sincos_rs import reference as ref
from test_api import assert_same, snapshot, trained_model
from test_rust_vs_reference import TOL, assert_cost_close, diffs
from test_simd_levels import level_in

PROFILE_ENV_VAR = "SINCOS_RS_HYPOTHESIS_PROFILE"
_COMMON = {
    "deadline": None,  # kernels on a shared machine: timing is not the property
    "derandomize": False,
    "suppress_health_check": [HealthCheck.too_slow, HealthCheck.data_too_large],
    "print_blob": True,
}
#: How many times the "ci" examples the "thorough" profile runs.
SCALE = 20 if os.environ.get(PROFILE_ENV_VAR) == "thorough" else 1
settings.register_profile("ci", max_examples=12, **_COMMON)
settings.register_profile("thorough", max_examples=12 * SCALE, **_COMMON)
settings.load_profile(os.environ.get(PROFILE_ENV_VAR, "ci"))

DTYPES = st.sampled_from(["float32", "float64"])
#: Around every kernel edge: the rows kernel (B <= 4), one 16-row lane chunk
#: (15, 16, 17), two (31, 32, 33).
BATCHES = st.sampled_from([1, 2, 3, 4, 5, 15, 16, 17, 31, 32, 33])
#: Around the rows kernel's one vector (16), the lanes kernel's register
#: blocks (64, 128) and odd sizes.
HIDDEN = st.sampled_from([1, 2, 3, 15, 16, 17, 31, 63, 64, 65, 127, 128, 129])


@st.composite
def layer_cases(draw: st.DrawFn, hidden: st.SearchStrategy[int] = HIDDEN) -> dict[str, Any]:
    h = draw(hidden)
    # I + H around 16 (the rows kernel's one-vector back-projection), else small.
    i = draw(st.sampled_from(sorted({1, 2, 5, max(1, 15 - h), max(1, 16 - h), 17 - h} - {0})))
    i = max(1, i)
    return {
        "dtype": draw(DTYPES),
        "batch": draw(BATCHES),
        "steps": draw(st.integers(1, 5)),
        "input": i,
        "hidden": h,
        "state": draw(st.booleans()),
        "d_state": draw(st.booleans()),
        "seed": draw(st.integers(0, 2**32 - 1)),
    }


def run_layer(case: dict[str, Any]) -> dict[str, np.ndarray]:
    """The layer's forward and backward on the case's random data."""
    dtype, b, t, i, h = (case[k] for k in ("dtype", "batch", "steps", "input", "hidden"))
    rng = np.random.default_rng(case["seed"])

    def rand(*shape: int) -> np.ndarray:
        return np.ascontiguousarray(rng.standard_normal(shape), dtype=dtype)

    layer = sr.LSTM(i, h, seed=case["seed"] % 1000, dtype=dtype)
    x = rand(b, t, i)
    state = (rand(b, h), rand(b, h)) if case["state"] else None
    out, (h_n, c_n) = layer.forward(x, state)
    d_out = rand(b, t, h)
    d_state = (rand(b, h), rand(b, h)) if case["d_state"] else None
    dx, (dh0, dc0) = layer.backward(d_out, d_state)
    result = {"x": x, "out": out, "h_n": h_n, "c_n": c_n, "dx": dx, "dh0": dh0, "dc0": dc0}
    result |= {f"grad {k}": g.copy() for k, g in layer.gradients().items()}
    result |= {f"param {k}": p for k, p in layer.parameters().items()}
    result |= {"d_out": d_out, "state": state, "d_state": d_state}
    return result


def assert_close(name: str, got: np.ndarray, want: np.ndarray, tol: float) -> None:
    """max |got - want| <= tol * max(1, max |want|): relative for values of 1
    and more, absolute below. The kernels' σ and tanh are accurate to a few
    ulps of 1, not of their result (tanh(x) = 2σ(2x) - 1): when random
    weights make a whole tensor small (~1e-3), its relative error is larger
    than any tolerance of the relative test in ``test_rust_vs_reference``."""
    got, want = np.asarray(got), np.asarray(want)
    assert got.shape == want.shape and got.dtype == want.dtype, name
    assert np.isfinite(got).all(), f"{name}: NaN or inf"
    abs_diff, _ = diffs(got, want)
    scale = max(1.0, float(np.abs(want.astype(np.float64)).max(initial=0.0)))
    assert abs_diff <= tol * scale, (
        f"{name}: max |rust - reference| = {abs_diff:.3g} > {tol:g} * {scale:.3g}"
    )


def check_against_reference(case: dict[str, Any]) -> None:
    got = run_layer(case)
    state, d_state = got["state"], got["d_state"]
    ref_out, (ref_h, ref_c), cache = ref.lstm_forward(
        got["x"],
        got["param weight_ih"],
        got["param weight_hh"],
        got["param bias"],
        *(state if state else (None, None)),
    )
    ref_dx, (ref_dh0, ref_dc0), ref_grads = ref.lstm_backward(
        got["d_out"], cache, *(d_state if d_state else (None, None))
    )
    tol, tag = TOL[case["dtype"]], str(case)
    for name, want in [
        ("out", ref_out),
        ("h_n", ref_h),
        ("c_n", ref_c),
        ("dx", ref_dx),
        ("dh0", ref_dh0),
        ("dc0", ref_dc0),
    ] + [(f"grad {k}", g) for k, g in ref_grads.items()]:
        assert_close(f"{tag} {name}", got[name], want, tol)


@given(layer_cases())
def test_layer_matches_the_reference(case: dict[str, Any]) -> None:
    check_against_reference(case)


@settings(max_examples=3 * SCALE)
@given(
    layer_cases(hidden=st.sampled_from([1025, 1031])).map(
        lambda c: c | {"batch": min(c["batch"], 3), "steps": min(c["steps"], 2)}
    )
)
def test_large_hidden_gemm_kernel_matches_the_reference(case: dict[str, Any]) -> None:
    """H > 1024: the GEMM kernel (kept small in B and T: the reference is slow)."""
    check_against_reference(case)


@given(
    st.fixed_dictionaries(
        {
            "dtype": DTYPES,
            "sizes": st.tuples(st.integers(1, 3), st.integers(1, 20), st.integers(1, 3)),
            "batch": BATCHES,
            "steps": st.integers(1, 6),
            "seed": st.integers(0, 1000),
            "steps_before": st.integers(0, 2),
        }
    )
)
def test_seed_network_matches_the_reference(case: dict[str, Any]) -> None:
    """Cost and gradients of LSTMRegressor against ReferenceRegressor, from a
    carried state after a few training steps."""
    dtype, (i, h, o) = case["dtype"], case["sizes"]
    rng = np.random.default_rng(case["seed"])
    shape = (case["batch"], case["steps"])
    models = [
        cls(i, h, o, seed=case["seed"], dtype=dtype)
        for cls in (sr.LSTMRegressor, ref.ReferenceRegressor)
    ]
    for _ in range(case["steps_before"] + 1):
        seq = np.ascontiguousarray(rng.standard_normal((*shape, i)), dtype=dtype)
        res = np.ascontiguousarray(rng.standard_normal((*shape, o)), dtype=dtype)
        (cost, grads), (ref_cost, ref_grads) = (m.loss_and_grads(seq, res) for m in models)
        tol = TOL[dtype] * 10  # the training steps before compound the rounding
        assert_cost_close(f"{case} cost", cost, ref_cost, tol)
        for name in sr.PARAM_NAMES:
            assert_close(f"{case} grad {name}", grads[name], ref_grads[name], tol)
        for model in models:
            model.train_step(seq, res)


@settings(max_examples=6 * SCALE)
@given(layer_cases(hidden=st.sampled_from([16, 64, 128, 200])).map(lambda c: c | {"batch": 40}))
def test_bit_identical_across_thread_counts(case: dict[str, Any]) -> None:
    before = sr.get_num_threads()
    try:
        results = []
        for threads in (1, 2, 3):
            sr.set_num_threads(threads)
            results.append(run_layer(case))
    finally:
        sr.set_num_threads(before)
    for threads, result in zip((2, 3), results[1:], strict=True):
        for name, value in result.items():
            if isinstance(value, np.ndarray):
                np.testing.assert_array_equal(
                    value, results[0][name], err_msg=f"{name}, 1 vs {threads} threads, {case}"
                )


@pytest.mark.parametrize("level", ["baseline", "avx2", "avx512"])
def test_every_instruction_set_matches_the_reference(level: str) -> None:
    """``SINCOS_RS_SIMD`` is read once per process: a subprocess per level
    this CPU has reruns the layer and seed-network properties with it."""
    if level_in(level) != level:
        pytest.skip(f"this CPU has no {level}: its instance cannot run here")
    env = {**os.environ, sr._core.SIMD_ENV_VAR: level}
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", __file__, "-k",
         "layer_matches or seed_network_matches or gemm_kernel"],
        env=env, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert run.returncode == 0, f"{level}:\n{run.stdout[-3000:]}\n{run.stderr[-2000:]}"
    assert " passed" in run.stdout and "failed" not in run.stdout, run.stdout[-1000:]


# --- damaged checkpoints ------------------------------------------------------------------

_GOOD: dict[str, Any] = {}


def good_checkpoint(tmp: pytest.TempPathFactory) -> tuple[bytes, dict[str, Any]]:
    """A checkpoint's bytes and the snapshot of the model it holds (made once)."""
    if not _GOOD:
        path = tmp.mktemp("good") / "good.npz"
        model = trained_model(steps=2)
        model.save(path)
        _GOOD.update(data=path.read_bytes(), snapshot=snapshot(model, False))
    return _GOOD["data"], _GOOD["snapshot"]


@st.composite
def damage(draw: st.DrawFn, size: int) -> list[tuple[str, int, int]]:
    """A few edits: (kind, position, value)."""
    edit = st.tuples(
        st.sampled_from(["set", "xor", "insert", "delete", "truncate"]),
        st.integers(0, size - 1),
        st.integers(1, 255),
    )
    return draw(st.lists(edit, min_size=1, max_size=4))


def apply(data: bytes, edits: list[tuple[str, int, int]]) -> bytes:
    out = bytearray(data)
    for kind, at, value in edits:
        at = min(at, len(out) - 1) if out else 0
        if kind == "set" and out:
            out[at] = value
        elif kind == "xor" and out:
            out[at] ^= value
        elif kind == "insert":
            out[at:at] = bytes([value]) * (value % 7 + 1)
        elif kind == "delete":
            del out[at : at + value % 7 + 1]
        elif kind == "truncate":
            del out[at:]
    return bytes(out)


@settings(max_examples=60 * SCALE, suppress_health_check=list(HealthCheck))
@given(st.data())
def test_damaged_checkpoints_load_as_saved_or_raise_value_error(
    tmp_path_factory: pytest.TempPathFactory, data: st.DataObject
) -> None:
    raw, saved = good_checkpoint(tmp_path_factory)
    edits = data.draw(damage(len(raw)))
    path = tmp_path_factory.mktemp("damaged") / "damaged.npz"
    path.write_bytes(apply(raw, edits))
    try:
        model = sr.LSTMRegressor.load(path)
    except ValueError as err:
        assert str(path) in str(err)
    else:  # the edits hit bytes nothing reads (a timestamp, say)
        assert_same(snapshot(model, False), saved, f"loaded after {edits}")
