"""The Rust core against the NumPy reference (``sincos_rs.reference``), tensor
by tensor and by name: the LSTM layer, the seed network's gradients, Adam, a
50-iteration training run, and TensorFlow's costs (tests/fixtures/tf_seed0.npz).

Differences are measured as ``max |rust - reference| / max |reference|`` per
tensor (the "relative" below); every failure message gives it with the
absolute max difference and the tensor's name. Run with ``-s`` to see every
measured difference (lines starting with ``[diff]``).
"""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest

import sincos_rs as sr
from sincos_rs import reference as ref
from sincos_rs.init import PARAM_NAMES, grads_from_tensorflow, params_from_tensorflow

FIXTURE = Path(__file__).parent / "fixtures" / "tf_seed0.npz"
DTYPES = ("float64", "float32")
EPS_STYLES = ("tensorflow", "pytorch")

# Relative tolerances (max |diff| / max |reference|). Measured on the first
# implementation: float64 <= 2e-15, float32 <= 8e-7 for the LSTM layer and
# the seed network's gradients; they leave room for reordered sums and a
# vectorised exp, not for a wrong formula.
TOL = {"float64": 1e-12, "float32": 1e-5}


# --- helpers -------------------------------------------------------------------------


def diffs(got: np.ndarray, want: np.ndarray) -> tuple[float, float]:
    """(max |got - want|, that divided by max |want|), in float64."""
    got64 = np.asarray(got, dtype=np.float64)
    want64 = np.asarray(want, dtype=np.float64)
    if got64.size == 0:
        return 0.0, 0.0
    abs_diff = float(np.abs(got64 - want64).max())
    scale = float(np.abs(want64).max())
    return abs_diff, abs_diff / scale if scale > 0 else abs_diff


def assert_close(name: str, got: np.ndarray, want: np.ndarray, tol: float) -> float:
    """Assert that ``got`` (Rust) matches ``want`` (reference) by shape,
    dtype and relative max difference; returns the relative difference."""
    got, want = np.asarray(got), np.asarray(want)
    assert got.shape == want.shape, f"{name}: shape {got.shape}, reference {want.shape}"
    assert got.dtype == want.dtype, f"{name}: dtype {got.dtype}, reference {want.dtype}"
    assert np.isfinite(got).all(), f"{name}: Rust result has NaN or inf"
    abs_diff, rel_diff = diffs(got, want)
    print(f"[diff] {name}: max|diff| {abs_diff:.3g}, relative {rel_diff:.3g} (tol {tol:g})")
    assert rel_diff <= tol, (
        f"{name}: max |rust - reference| = {abs_diff:.3g}, "
        f"relative to max |reference| = {rel_diff:.3g} > {tol:g}"
    )
    return rel_diff


def assert_cost_close(name: str, got: float, want: float, tol: float) -> float:
    rel_diff = abs(got / want - 1)
    print(f"[diff] {name}: {got!r} vs {want!r}, relative {rel_diff:.3g} (tol {tol:g})")
    assert rel_diff <= tol, (
        f"{name}: rust {got!r}, reference {want!r}, relative difference {rel_diff:.3g} > {tol:g}"
    )
    return rel_diff


def random_seq(rng: np.random.Generator, shape: tuple[int, ...], dtype: str) -> np.ndarray:
    return np.ascontiguousarray(rng.standard_normal(shape), dtype=dtype)


# --- the LSTM layer --------------------------------------------------------------------

LAYER_SHAPES = [  # (B, T, I, H)
    (1, 1, 1, 1),
    (1, 6, 3, 4),  # B = 1
    (5, 1, 4, 6),  # T = 1
    (2, 3, 4, 5),  # I != H
    (3, 7, 5, 9),  # odd sizes
    (2, 4, 9, 3),  # I > H
    (1, 5, 6, 10),  # the rows kernel's one-vector backward at its edge, I + H = 16
    (2, 4, 7, 10),  # ... and just past it (I + H = 17)
    (3, 3, 2, 17),  # the rows kernel's general forward (H > 16)
    (17, 3, 2, 10),  # more rows than one 16-lane chunk, padded
    (50, 5, 10, 10),  # the seed's LSTM: 4 chunks, which may run in parallel
    (33, 2, 3, 64),  # the largest H of the small-H kernel
    (3, 2, 4, 65),  # the smallest H of the large-H kernel
    (4, 3, 16, 256),  # large H
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", LAYER_SHAPES, ids=lambda s: "B{}-T{}-I{}-H{}".format(*s))
@pytest.mark.parametrize("with_state", [True, False], ids=["state", "zeros"])
def test_lstm_layer_matches_reference(
    dtype: str, shape: tuple[int, int, int, int], with_state: bool
) -> None:
    batch, steps, n_in, hidden = shape
    rng = np.random.default_rng(sum(shape) + 7 * with_state)
    layer = sr.LSTM(n_in, hidden, seed=3, dtype=dtype)
    # Weights of a useful size (saturating some gates) and a nonzero bias,
    # assigned as new arrays, as a user would.
    layer.weight_ih = random_seq(rng, (4 * hidden, n_in), dtype) * np.asarray(0.6, dtype)
    layer.weight_hh = random_seq(rng, (4 * hidden, hidden), dtype) * np.asarray(0.4, dtype)
    layer.bias = random_seq(rng, (4 * hidden,), dtype) * np.asarray(0.5, dtype)
    layer.grad_weight_ih = np.zeros_like(layer.weight_ih)
    layer.grad_weight_hh = np.zeros_like(layer.weight_hh)
    layer.grad_bias = np.zeros_like(layer.bias)
    weights = {k: v.copy() for k, v in layer.parameters().items()}

    x = random_seq(rng, (batch, steps, n_in), dtype)
    state = d_state = None
    if with_state:
        state = (random_seq(rng, (batch, hidden), dtype), random_seq(rng, (batch, hidden), dtype))
        d_state = (random_seq(rng, (batch, hidden), dtype), random_seq(rng, (batch, hidden), dtype))
    d_out = random_seq(rng, (batch, steps, hidden), dtype)

    out, (h_n, c_n) = layer.forward(x, state)
    dx, (dh0, dc0) = layer.backward(d_out, d_state)

    h0, c0 = (None, None) if state is None else state
    dh_n, dc_n = (None, None) if d_state is None else d_state
    ref_out, (ref_h_n, ref_c_n), cache = ref.lstm_forward(
        x, weights["weight_ih"], weights["weight_hh"], weights["bias"], h0, c0
    )
    ref_dx, (ref_dh0, ref_dc0), ref_grads = ref.lstm_backward(d_out, cache, dh_n, dc_n)

    tol = TOL[dtype]
    tag = f"lstm {dtype} {shape} {'state' if with_state else 'zeros'}"
    assert_close(f"{tag} out", out, ref_out, tol)
    assert_close(f"{tag} h_n", h_n, ref_h_n, tol)
    assert_close(f"{tag} c_n", c_n, ref_c_n, tol)
    assert_close(f"{tag} dx", dx, ref_dx, tol)
    assert_close(f"{tag} dh0", dh0, ref_dh0, tol)
    assert_close(f"{tag} dc0", dc0, ref_dc0, tol)
    for name in ("weight_ih", "weight_hh", "bias"):
        assert_close(f"{tag} grad {name}", layer.gradients()[name], ref_grads[name], tol)
    # The weights are read, never written.
    for name, w in weights.items():
        np.testing.assert_array_equal(layer.parameters()[name], w, err_msg=name)


# --- the seed network ------------------------------------------------------------------

SEED_SIZES = [(1, 10, 1), (2, 6, 3)]  # (I, H, O): the seed's, and one with I, O > 1


def seed_batch(
    sizes: tuple[int, int, int], dtype: str, seed: int = 11, batch: int = 5, steps: int = 7
) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    n_in, _, n_out = sizes
    return (
        random_seq(rng, (batch, steps, n_in), dtype),
        random_seq(rng, (batch, steps, n_out), dtype),
    )


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("sizes", SEED_SIZES, ids=lambda s: "I{}-H{}-O{}".format(*s))
@pytest.mark.parametrize("carried", ["none", "set", "trained"])
def test_seed_loss_and_grads_match_reference(
    dtype: str, sizes: tuple[int, int, int], carried: str
) -> None:
    seq, res = seed_batch(sizes, dtype)
    model = sr.LSTMRegressor(*sizes, seed=1, dtype=dtype)
    if carried == "set":  # a state given by the user
        rng = np.random.default_rng(5)
        hidden = sizes[1]
        model.state = (random_seq(rng, (5, hidden), dtype), random_seq(rng, (5, hidden), dtype))
    elif carried == "trained":  # the state a train_step carries
        model.train_step(*seed_batch(sizes, dtype, seed=12))
        assert model.state is not None
    params = model.state_dict()
    state = model.state

    cost, grads = model.loss_and_grads(seq, res)
    pred = model.predict(seq)

    ref_pred, _, cache = ref.seed_forward(params, seq, state)
    ref_cost = ref.seed_cost(ref_pred, res)
    ref_grads = ref.seed_backward(ref_pred, res, cache)

    tol = TOL[dtype]
    tag = f"seed {dtype} {sizes} carried={carried}"
    assert_cost_close(f"{tag} cost", cost, ref_cost, tol)
    assert_close(f"{tag} pred", pred, ref_pred, tol)
    assert list(grads) == list(PARAM_NAMES)
    for name in PARAM_NAMES:
        assert_close(f"{tag} grad {name}", grads[name], ref_grads[name], tol)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("eps_style", EPS_STYLES)
def test_one_train_step_matches_reference(dtype: str, eps_style: str) -> None:
    sizes = (2, 6, 3)
    seq, res = seed_batch(sizes, dtype)
    model = sr.LSTMRegressor(*sizes, lr=0.01, eps_style=eps_style, seed=2, dtype=dtype)
    reference = sr.ReferenceRegressor(*sizes, lr=0.01, eps_style=eps_style, seed=9, dtype=dtype)
    reference.load_state_dict(model.state_dict())

    cost = model.train_step(seq, res)
    ref_cost = reference.train_step(seq, res)

    tol = TOL[dtype]
    tag = f"train_step {dtype} {eps_style}"
    assert model.step == reference.step == 1
    assert_cost_close(f"{tag} cost", cost, ref_cost, tol)
    params, ref_params = model.state_dict(), reference.state_dict()
    for name in PARAM_NAMES:
        assert_close(f"{tag} param {name}", params[name], ref_params[name], tol)
    (h, c), (ref_h, ref_c) = model.state, reference.state
    assert_close(f"{tag} state h", h, ref_h, tol)
    assert_close(f"{tag} state c", c, ref_c, tol)
    assert_close(f"{tag} last_prediction", model.last_prediction, reference.last_prediction, tol)


# --- Adam ------------------------------------------------------------------------------

# Adam computes the same expression in the same order as the reference.
ADAM_TOL = {"float64": 1e-14, "float32": 1e-6}


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("eps_style", EPS_STYLES)
def test_adam_matches_reference(dtype: str, eps_style: str) -> None:
    rng = np.random.default_rng(4)
    shapes = {"w": (7, 5), "b": (13,), "tiny": (6,)}
    params = {name: random_seq(rng, shape, dtype) for name, shape in shapes.items()}
    ref_params = {name: p.copy() for name, p in params.items()}
    ref_m = {name: np.zeros_like(p) for name, p in params.items()}
    ref_v = {name: np.zeros_like(p) for name, p in params.items()}
    hyper = {"lr": 0.01, "beta1": 0.8, "beta2": 0.99, "eps": 1e-6, "eps_style": eps_style}
    opt = sr.Adam(params, **hyper)

    tol = ADAM_TOL[dtype]
    for step in range(1, 6):
        grads = {name: random_seq(rng, p.shape, dtype) for name, p in params.items()}
        grads["tiny"] *= np.asarray(1e-7, dtype)  # where the eps placement matters
        opt.step(grads)
        for name in shapes:
            ref.adam_update(ref_params[name], grads[name], ref_m[name], ref_v[name], step, **hyper)
        for name in shapes:
            tag = f"adam {dtype} {eps_style} step {step} {name}"
            assert_close(f"{tag} param", params[name], ref_params[name], tol)
            assert_close(f"{tag} m", opt.m[name], ref_m[name], tol)
            assert_close(f"{tag} v", opt.v[name], ref_v[name], tol)
    assert opt.step_count == 5


# --- training trajectories ---------------------------------------------------------------

TRAJECTORY_TOL = {"float64": 1e-9, "float32": 1e-4}


@pytest.mark.parametrize("dtype", DTYPES)
def test_training_trajectory_matches_reference(dtype: str) -> None:
    """50 stateful iterations of the seed program: Rust and the reference
    from identical weights agree on every cost (float64) or on the first 10
    (float32, where rounding differences grow as training goes)."""
    model = sr.LSTMRegressor(seed=0, dtype=dtype)
    reference = sr.ReferenceRegressor(seed=123, dtype=dtype)
    reference.load_state_dict(model.state_dict())
    costs, ref_costs = [], []
    for seq, res, _ in itertools.islice(sr.SinCosBatches(dtype=dtype), 50):
        costs.append(model.train_step(seq, res))
        ref_costs.append(reference.train_step(seq, res))
    costs, ref_costs = np.array(costs), np.array(ref_costs)
    relative = np.abs(costs / ref_costs - 1)

    checked = 50 if dtype == "float64" else 10
    worst = int(np.argmax(relative[:checked]))
    tol = TRAJECTORY_TOL[dtype]
    print(
        f"[diff] trajectory {dtype}: max relative cost difference {relative[:checked].max():.3g} "
        f"over {checked} iterations (all 50: {relative.max():.3g}) (tol {tol:g})"
    )
    assert relative[:checked].max() < tol, (
        f"trajectory {dtype}: cost[{worst}] rust {costs[worst]!r}, reference "
        f"{ref_costs[worst]!r}, relative difference {relative[worst]:.3g} > {tol:g}"
    )
    assert costs[-1] < 0.5 * costs[0], "training did not reduce the cost"
    if dtype == "float64":
        params, ref_params = model.state_dict(), reference.state_dict()
        for name in PARAM_NAMES:
            assert_close(f"trajectory {dtype} final {name}", params[name], ref_params[name], 1e-9)


@pytest.fixture(scope="module")
def tf() -> dict[str, np.ndarray]:
    with np.load(FIXTURE) as data:
        return {k: data[k] for k in data.files}


def test_first_gradients_match_tensorflow(tf: dict[str, np.ndarray]) -> None:
    model = sr.LSTMRegressor(seed=0, dtype="float32")
    model.load_state_dict(params_from_tensorflow(tf, prefix="init/"))
    seq, res, _ = next(sr.SinCosBatches(dtype="float32"))
    cost, grads = model.loss_and_grads(seq, res)
    assert_cost_close("tf float32 cost[0] (loss_and_grads)", cost, float(tf["costs"][0]), 1e-6)
    tf_grads = grads_from_tensorflow(tf, "grad0/", dtype="float32")
    for name in PARAM_NAMES:
        assert_close(f"tf float32 grad0 {name}", grads[name], tf_grads[name], 1e-4)


def test_costs_match_tensorflow(tf: dict[str, np.ndarray]) -> None:
    """TensorFlow's seed run: the first cost to float32 rounding, the first
    ten within 1e-5 relative, in float32."""
    model = sr.LSTMRegressor(seed=0, dtype="float32")
    model.load_state_dict(params_from_tensorflow(tf, prefix="init/"))
    batches = sr.SinCosBatches(dtype="float32")
    costs = np.array([model.train_step(seq, res) for seq, res, _ in itertools.islice(batches, 10)])
    tf_costs = tf["costs"][:10]
    relative = np.abs(costs / tf_costs - 1)
    print(f"[diff] tf float32 costs[0]: relative {relative[0]:.3g} (tol 1e-6)")
    print(f"[diff] tf float32 costs[:10]: max relative {relative.max():.3g} (tol 1e-5)")
    assert relative[0] < 1e-6, (
        f"costs[0]: rust {costs[0]!r}, TensorFlow {tf_costs[0]!r}, relative {relative[0]:.3g}"
    )
    worst = int(np.argmax(relative))
    assert relative.max() < 1e-5, (
        f"costs[{worst}]: rust {costs[worst]!r}, TensorFlow {tf_costs[worst]!r}, "
        f"relative {relative[worst]:.3g} > 1e-5"
    )
