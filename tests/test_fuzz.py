"""Differential fuzzer of the sequence API: random option combinations run
through the Rust kernels and compared with the NumPy reference (float64),
and with each other where the README promises the same bits.

Each example draws a whole combination at once -- dtype, a kernel forced
through ``_core._set_kernel`` (or the choice by shape), batch 1..100 across
every 16-row chunk boundary, steps, sizes, a lengths pattern (none, random,
sorted either way, all equal to T, all equal below T, ones), an initial
state, a final-state gradient, ``reverse``, ``dx`` asked or not, and a
thread count -- because the wrong answers this file was written for needed
three options at once (full lengths, an initial state and more than two
chunks). Every call runs on memory it cannot trust: the kernels' scratch is
poisoned with NaN (``_core._set_poison``), and the saved buffer and every
output array are filled with NaN before the call, so a read of memory the
call never wrote shows as NaN in a result.

Checked per example:
- forward (out, h_n, c_n) and backward (dx, dh0, dc0, every weight
  gradient) against ``sincos_rs.reference`` in float64;
- ``store=False`` gives the same bits as the storing forward;
- a chain of ``lstm_step`` calls gives the same bits as the forward (whole
  rows in time order, the only case ``step`` expresses);
- the same bits on 1 thread as on the drawn count.

Profiles (``SINCOS_RS_FUZZ``): "ci" (the default, a few minutes in CI) and
"long" (50 times the examples)::

    SINCOS_RS_FUZZ=long python -m pytest tests/test_fuzz.py

The torch module has its own fuzzer against ``torch.nn.LSTM``
(``tests/test_fuzz_torch.py``).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import sincos_rs as sr
from sincos_rs import _core
from sincos_rs import reference as ref

PROFILE_ENV_VAR = "SINCOS_RS_FUZZ"
#: Examples per test: "ci" runs the file in a few minutes here.
EXAMPLES = {"ci": 2_000, "long": 100_000}[os.environ.get(PROFILE_ENV_VAR, "ci")]

FUZZ_SETTINGS = settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=False,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    print_blob=True,
)

#: Relative to max(1, max |reference|): float32 kernels against a float64
#: reference over a few steps; float64 to the last few digits.
TOL = {"float32": 2e-5, "float64": 1e-10}

KERNELS = ["auto", "lanes", "rows", "gemm", "units"]
#: Every 16-row chunk boundary up to 100 rows, and the rows kernel's (4).
EDGES = sorted({1, 2, 3, 4, 5, 100} | {q * 16 + d for q in range(1, 7) for d in (-1, 0, 1)})
LENGTH_PATTERNS = ["none", "random", "sorted", "ascending", "all_t", "all_below_t", "ones"]


@contextmanager
def poisoned(kernel: str, threads: int) -> Iterator[None]:
    """Run with ``kernel`` forced, poisoned scratch and ``threads`` threads."""
    before = sr.get_num_threads()
    _core._set_kernel(kernel)
    _core._set_poison(True)
    sr.set_num_threads(threads)
    try:
        yield
    finally:
        _core._set_kernel("auto")
        _core._set_poison(False)
        sr.set_num_threads(before)


def make_lengths(pattern: str, batch: int, steps: int, rng: np.random.Generator) -> Any:
    if pattern == "none":
        return None
    if pattern == "all_t":
        return np.full(batch, steps, np.int64)
    if pattern == "all_below_t":
        return np.full(batch, max(1, steps - 1 - int(rng.integers(0, steps))), np.int64)
    if pattern == "ones":
        return np.ones(batch, np.int64)
    lengths = rng.integers(1, steps + 1, batch).astype(np.int64)
    if pattern == "sorted":
        lengths = np.sort(lengths)[::-1].copy()
    elif pattern == "ascending":
        lengths = np.sort(lengths)
    return lengths


@st.composite
def cases(draw: st.DrawFn) -> dict[str, Any]:
    hidden = draw(st.one_of(st.integers(1, 40), st.sampled_from([63, 64, 65, 127, 128, 129])))
    return {
        "dtype": draw(st.sampled_from(["float32", "float64"])),
        "kernel": draw(st.sampled_from(KERNELS)),
        "batch": draw(st.one_of(st.sampled_from(EDGES), st.integers(1, 100))),
        # Mostly short; sometimes across the weight-gradient sweep's 64-step blocks.
        "steps": draw(st.one_of(st.integers(1, 7), st.sampled_from([16, 63, 64, 65]))),
        "input": draw(st.one_of(st.integers(1, 20), st.sampled_from([31, 32, 33, 127, 128, 129]))),
        "hidden": hidden,
        "lengths": draw(st.sampled_from(LENGTH_PATTERNS)),
        "state": draw(st.booleans()),
        "d_state": draw(st.booleans()),
        "reverse": draw(st.booleans()),
        "dx": draw(st.booleans()),
        "threads": draw(st.integers(1, 3)),
        "seed": draw(st.integers(0, 2**32 - 1)),
    }


def nan_like(shape: tuple[int, ...], dtype: str) -> np.ndarray:
    return np.full(shape, np.nan, dtype)


def data_for(case: dict[str, Any]) -> dict[str, Any]:
    """The case's random arrays; padding of x and d_out past each row's
    length is NaN (the kernels must never read it)."""
    b, t, i, h, dtype = (case[k] for k in ("batch", "steps", "input", "hidden", "dtype"))
    rng = np.random.default_rng(case["seed"])

    def rand(*shape: int, scale: float = 1.0) -> np.ndarray:
        return np.ascontiguousarray(rng.standard_normal(shape) * scale, dtype=dtype)

    lengths = make_lengths(case["lengths"], b, t, rng)
    x, d_out = rand(b, t, i), rand(b, t, h)
    if lengths is not None:
        for row, n in enumerate(lengths):
            x[row, n:] = np.nan
            d_out[row, n:] = np.nan
    scale = 1 / np.sqrt(h)
    return {
        "x": x,
        "weights": (rand(4 * h, i, scale=scale), rand(4 * h, h, scale=scale), rand(4 * h)),
        "state": (rand(b, h), rand(b, h)) if case["state"] else (None, None),
        "d_out": d_out,
        "d_state": (rand(b, h), rand(b, h)) if case["d_state"] else (None, None),
        "lengths": lengths,
    }


def run_rust(case: dict[str, Any], d: dict[str, Any]) -> dict[str, np.ndarray]:
    """Forward (storing and not) and backward through ``_core``, every
    output and the saved buffer NaN before the call."""
    b, t, i, h, dtype = (case[k] for k in ("batch", "steps", "input", "hidden", "dtype"))
    x, (h0, c0), lengths, reverse = d["x"], d["state"], d["lengths"], case["reverse"]
    saved = nan_like((_core.lstm_saved_size(b, t, i, h, dtype),), dtype)
    out, h_n, c_n = nan_like((b, t, h), dtype), nan_like((b, h), dtype), nan_like((b, h), dtype)
    seq = {"lengths": lengths, "reverse": reverse}
    _core.lstm_forward(x, *d["weights"], h0, c0, out, h_n, c_n, saved, **seq)
    streamed = nan_like((b, t, h), dtype), nan_like((b, h), dtype), nan_like((b, h), dtype)
    _core.lstm_forward(x, *d["weights"], h0, c0, *streamed, None, **seq)
    dx = nan_like((b, t, i), dtype) if case["dx"] else None
    dh0, dc0 = nan_like((b, h), dtype), nan_like((b, h), dtype)
    grads = [nan_like(w.shape, dtype) for w in d["weights"]]
    _core.lstm_backward(
        x, *d["weights"], h0, c0, saved, d["d_out"], *d["d_state"], dx, dh0, dc0, *grads, **seq
    )
    result = {"out": out, "h_n": h_n, "c_n": c_n, "dh0": dh0, "dc0": dc0}
    result |= {f"streamed {k}": v for k, v in zip(("out", "h_n", "c_n"), streamed, strict=True)}
    result |= {"grad weight_ih": grads[0], "grad weight_hh": grads[1], "grad bias": grads[2]}
    if dx is not None:
        result["dx"] = dx
    return result


def run_steps(case: dict[str, Any], d: dict[str, Any]) -> tuple[np.ndarray, ...]:
    """``lstm_step`` T times from the case's state: (out, h_n, c_n)."""
    b, t, h, dtype = (case[k] for k in ("batch", "steps", "hidden", "dtype"))
    h_cur, c_cur = d["state"]
    out = nan_like((b, t, h), dtype)
    for step in range(t):
        h_new, c_new = nan_like((b, h), dtype), nan_like((b, h), dtype)
        x_t = np.ascontiguousarray(d["x"][:, step])
        _core.lstm_step(x_t, *d["weights"], h_cur, c_cur, h_new, c_new)
        out[:, step] = h_new
        h_cur, c_cur = h_new, c_new
    return out, h_cur, c_cur


def reference(case: dict[str, Any], d: dict[str, Any]) -> dict[str, np.ndarray]:
    """The reference in float64 (zero padding: it never reads it either)."""

    def f64(a: Any) -> Any:
        return None if a is None else np.asarray(a, np.float64)

    x, d_out = f64(d["x"]), f64(d["d_out"])
    if d["lengths"] is not None:
        x, d_out = np.nan_to_num(x), np.nan_to_num(d_out)
    weights = [f64(w) for w in d["weights"]]
    out, (h_n, c_n), cache = ref.lstm_forward(
        x, *weights, *map(f64, d["state"]), lengths=d["lengths"], reverse=case["reverse"]
    )
    dx, (dh0, dc0), grads = ref.lstm_backward(d_out, cache, *map(f64, d["d_state"]))
    want = {"out": out, "h_n": h_n, "c_n": c_n, "dx": dx, "dh0": dh0, "dc0": dc0}
    return want | {f"grad {k}": g for k, g in grads.items()}


def assert_close(what: str, got: np.ndarray, want: np.ndarray, tol: float) -> None:
    diff = np.abs(np.asarray(got, np.float64) - want)
    scale = max(1.0, float(np.abs(want).max(initial=0.0)))
    worst = float(np.nanmax(diff, initial=0.0)) if not np.isnan(diff).all() else np.inf
    assert not np.isnan(diff).any() and worst <= tol * scale, (
        f"{what}: max |rust - reference| = {worst:.3g} (tolerance {tol * scale:.3g}), "
        f"{int(np.isnan(diff).sum())} NaN of {diff.size}"
    )


def assert_same_bits(what: str, got: np.ndarray, want: np.ndarray) -> None:
    differ = got.view(np.uint8) != want.view(np.uint8)
    assert not differ.any(), (
        f"{what}: not the same bits ({int(differ.sum())} bytes differ, "
        f"max |difference| {float(np.nanmax(np.abs(got - want), initial=0.0)):.3g})"
    )


def check_case(case: dict[str, Any]) -> None:
    d = data_for(case)
    with poisoned(case["kernel"], case["threads"]):
        got = run_rust(case, d)
        full = d["lengths"] is None or bool((d["lengths"] == case["steps"]).all())
        whole = full and not case["reverse"]
        steps = run_steps(case, d) if whole else None
    want = reference(case, d)
    tol = TOL[case["dtype"]]
    for name, value in got.items():
        if not name.startswith("streamed"):
            assert_close(f"{name} {case}", value, want[name], tol)
    for name in ("out", "h_n", "c_n"):
        assert_same_bits(f"store=False {name} {case}", got[f"streamed {name}"], got[name])
        if steps is not None:
            value = steps[("out", "h_n", "c_n").index(name)]
            assert_same_bits(f"step chain {name} {case}", value, got[name])
    if case["threads"] != 1:
        with poisoned(case["kernel"], 1):
            single = run_rust(case, d)
        for name, value in got.items():
            assert_same_bits(f"{name}, {case['threads']} threads vs 1, {case}", value, single[name])


@FUZZ_SETTINGS
@given(cases())
def test_kernels_agree_with_the_reference_and_with_themselves(case: dict[str, Any]) -> None:
    check_case(case)


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("pattern", LENGTH_PATTERNS)
def test_every_kernel_and_lengths_pattern_across_three_chunks(kernel: str, pattern: str) -> None:
    """A fixed sweep beside the random one: each kernel and lengths pattern
    at B = 40 (three 16-row chunks) with a state, both directions."""
    for reverse in (False, True):
        check_case(
            {
                "dtype": "float64",
                "kernel": kernel,
                "batch": 40,
                "steps": 4,
                "input": 3,
                "hidden": 5,
                "lengths": pattern,
                "state": True,
                "d_state": True,
                "reverse": reverse,
                "dx": True,
                "threads": 2,
                "seed": 7,
            }
        )


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize(
    "batch,inputs,hidden", [(1, 8, 1025), (1, 16, 1025), (1, 33, 7), (3, 20, 7), (6, 20, 7)]
)
def test_step_chain_and_store_false_give_the_forward_bits(
    kernel: str, dtype: str, batch: int, inputs: int, hidden: int
) -> None:
    """The README's promise ("step gives the same bits as forward"), where
    the GEMM kernel broke it (B1 with I >= 8 in float64, I >= 16 in float32;
    store=False also at B3 and B6 with a state or reversed)."""
    for state in (False, True):
        check_case(
            {
                "dtype": dtype,
                "kernel": kernel,
                "batch": batch,
                "steps": 5,
                "input": inputs,
                "hidden": hidden,
                "lengths": "none",
                "state": state,
                "d_state": False,
                "reverse": state,
                "dx": True,
                "threads": 2,
                "seed": 3,
            }
        )
