"""Differential fuzzer of ``sincos_rs.torch.LSTM`` against ``torch.nn.LSTM``
from the same weights: random combinations of layers, directions,
``batch_first``, an initial state, dtype, batch sizes across the kernels'
16-row chunks, and input as a padded tensor or as a ``PackedSequence``
(``enforce_sorted`` both ways, lengths that are random, sorted, all equal to
T, all equal below T or ones). Outputs, final state and the gradients of
the input, the initial state and every weight, in training mode.

Same profiles as ``tests/test_fuzz.py`` (``SINCOS_RS_FUZZ``: "ci" or "long").
"""

from __future__ import annotations

import importlib.util
import os
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

if os.environ.get("CI") and importlib.util.find_spec("torch") is None:
    raise RuntimeError("CI must run the torch tests: .ci/run installs torch")
torch = pytest.importorskip("torch")

from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence  # noqa: E402

from sincos_rs.torch import LSTM  # noqa: E402
from test_fuzz import EDGES, LENGTH_PATTERNS, PROFILE_ENV_VAR, make_lengths  # noqa: E402

EXAMPLES = {"ci": 300, "long": 15_000}[os.environ.get(PROFILE_ENV_VAR, "ci")]
TOL = {torch.float64: 1e-10, torch.float32: 1e-5}


@st.composite
def cases(draw: st.DrawFn) -> dict[str, Any]:
    return {
        "dtype": draw(st.sampled_from([torch.float32, torch.float64])),
        "batch": draw(st.one_of(st.sampled_from(EDGES), st.integers(1, 100))),
        "steps": draw(st.integers(1, 6)),
        "input": draw(st.integers(1, 12)),
        "hidden": draw(st.one_of(st.integers(1, 24), st.sampled_from([64, 65]))),
        "layers": draw(st.integers(1, 3)),
        "bidirectional": draw(st.booleans()),
        "batch_first": draw(st.booleans()),
        "hx": draw(st.booleans()),
        "packed": draw(st.booleans()),
        "enforce_sorted": draw(st.booleans()),
        "lengths": draw(st.sampled_from([p for p in LENGTH_PATTERNS if p != "none"])),
        "seed": draw(st.integers(0, 2**31 - 1)),
    }


def run(model: torch.nn.Module, case: dict[str, Any], x: torch.Tensor, hx: Any, lengths: Any):
    """Forward from leaf copies of x and hx, a random-weighted loss over
    every output, backward: named outputs and gradients."""
    model.zero_grad(set_to_none=True)
    xi = x.detach().clone().requires_grad_(True)
    hi = None if hx is None else tuple(t.detach().clone().requires_grad_(True) for t in hx)
    inp: Any = xi
    if case["packed"]:
        inp = pack_padded_sequence(
            xi, lengths, batch_first=case["batch_first"], enforce_sorted=case["enforce_sorted"]
        )
    out, (h_n, c_n) = model(inp, hi)
    if case["packed"]:
        out, _ = pad_packed_sequence(out, batch_first=case["batch_first"])
    gen = torch.Generator().manual_seed(case["seed"])
    loss = sum(
        (t * torch.randn(t.shape, generator=gen, dtype=t.dtype)).sum() for t in (out, h_n, c_n)
    )
    loss.backward()
    named = {"output": out, "h_n": h_n, "c_n": c_n, "grad input": xi.grad}
    if hi is not None:
        named |= {"grad h_0": hi[0].grad, "grad c_0": hi[1].grad}
    return named | {f"grad {n}": p.grad for n, p in model.named_parameters()}


def check_case(case: dict[str, Any]) -> None:
    b, t, dtype = case["batch"], case["steps"], case["dtype"]
    config = {
        "input_size": case["input"],
        "hidden_size": case["hidden"],
        "num_layers": case["layers"],
        "bidirectional": case["bidirectional"],
        "batch_first": case["batch_first"],
        "dtype": dtype,
    }
    torch.manual_seed(case["seed"])
    theirs = torch.nn.LSTM(**config)
    ours = LSTM(**config)
    ours.load_state_dict(theirs.state_dict(), strict=True)
    rng = np.random.default_rng(case["seed"])
    lengths = make_lengths(case["lengths"], b, t, rng)
    if case["packed"] and case["enforce_sorted"]:
        lengths = np.sort(lengths)[::-1].copy()
    shape = (b, t, case["input"]) if case["batch_first"] else (t, b, case["input"])
    x = torch.randn(shape, dtype=dtype, generator=torch.Generator().manual_seed(case["seed"]))
    hx = None
    if case["hx"]:
        dirs = 2 if case["bidirectional"] else 1
        state = (case["layers"] * dirs, b, case["hidden"])
        hx = (torch.randn(state, dtype=dtype), torch.randn(state, dtype=dtype))
    lens = torch.as_tensor(lengths) if case["packed"] else None
    got, want = (run(m, case, x, hx, lens) for m in (ours, theirs))
    assert list(got) == list(want), case
    for name, value in want.items():
        mine = got[name]
        assert mine is not None and mine.shape == value.shape, f"{name}: {case}"
        scale = max(1.0, value.detach().abs().max().item()) if value.numel() else 1.0
        diff = (mine.detach() - value.detach()).abs().max().item() if value.numel() else 0.0
        assert diff <= TOL[dtype] * scale, f"{name}: max |diff| {diff:.3g}, {case}"


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    print_blob=True,
)
@given(cases())
def test_torch_module_agrees_with_torch_nn_lstm(case: dict[str, Any]) -> None:
    check_case(case)


def test_full_length_packed_batch_with_hx_across_three_chunks() -> None:
    """The ordinary NLP batch of issue 21: every row of full length, hx, B33,
    training mode (off by 0.62 from torch.nn.LSTM before the fix)."""
    for dtype in (torch.float32, torch.float64):
        check_case(
            {
                "dtype": dtype,
                "batch": 33,
                "steps": 3,
                "input": 2,
                "hidden": 5,
                "layers": 1,
                "bidirectional": False,
                "batch_first": True,
                "hx": True,
                "packed": True,
                "enforce_sorted": True,
                "lengths": "all_t",
                "seed": 0,
            }
        )
