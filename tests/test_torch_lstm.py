"""sincos_rs.torch.LSTM against torch.nn.LSTM from the same weights: outputs,
final state and every gradient (float64 1e-10, float32 1e-5 relative to the
largest magnitude), over layers, directions, batch_first, initial state, batch
sizes and the GEMM kernel's hidden sizes; plus state dicts both ways,
initialisation, unbatched input, dropout, bias=False, PackedSequence, double
backward through either path, other devices and the input errors.
tests/test_torch_compat.py has the transforms and tools (export, trace, ...)."""

from __future__ import annotations

import importlib.util
import itertools
import os

import pytest

if os.environ.get("CI") and importlib.util.find_spec("torch") is None:
    raise RuntimeError("CI must run the torch tests: .ci/run installs torch")
torch = pytest.importorskip("torch")

from torch.nn.utils.rnn import pack_padded_sequence  # noqa: E402

from sincos_rs.torch import LSTM, paths  # noqa: E402

TOL = {torch.float64: 1e-10, torch.float32: 1e-5}


# --- helpers -----------------------------------------------------------------------------


def assert_close(name: str, ours, theirs, dtype) -> None:
    """max |ours - theirs| <= tol * max |theirs| (tol by dtype), named."""
    assert ours is not None, f"{name}: no value (expected one like torch's)"
    assert theirs is not None, f"{name}: torch has no value"
    assert ours.shape == theirs.shape, f"{name}: shape {tuple(ours.shape)} vs {tuple(theirs.shape)}"
    assert ours.dtype == theirs.dtype, f"{name}: dtype {ours.dtype} vs {theirs.dtype}"
    scale = max(theirs.detach().abs().max().item(), 1e-30)
    diff = (ours.detach() - theirs.detach()).abs().max().item() if ours.numel() else 0.0
    tol = TOL[dtype]
    assert diff <= tol * scale, f"{name}: max |diff| {diff:.3g} > {tol:g} * {scale:.3g}"


def pair(dtype=torch.float64, seed: int = 0, **config):
    """torch.nn.LSTM and ours with the same config and the same weights."""
    torch.manual_seed(seed)
    theirs = torch.nn.LSTM(dtype=dtype, **config)
    ours = LSTM(dtype=dtype, **config)
    ours.load_state_dict(theirs.state_dict(), strict=True)
    return ours, theirs


def run_both(ours, theirs, x, hx=None, seed: int = 1):
    """Forward both from clones of x and hx (leaves that need grad), a loss
    that reaches every output with random weights, backward. Returns, per
    model, a dict of named tensors: output, h_n, c_n and every gradient."""
    results = []
    for model in (ours, theirs):
        model.zero_grad(set_to_none=True)
        xi = x.detach().clone().requires_grad_(True)
        hi = None if hx is None else tuple(t.detach().clone().requires_grad_(True) for t in hx)
        out, (h_n, c_n) = model(xi, hi)
        gen = torch.Generator().manual_seed(seed)
        loss = sum(
            (t * torch.randn(t.shape, generator=gen, dtype=t.dtype)).sum() for t in (out, h_n, c_n)
        )
        loss.backward()
        named = {"output": out, "h_n": h_n, "c_n": c_n, "grad input": xi.grad}
        if hi is not None:
            named["grad h_0"], named["grad c_0"] = hi[0].grad, hi[1].grad
        for name, p in model.named_parameters():
            named[f"grad {name}"] = p.grad
        results.append(named)
    return results


def assert_same_results(ours_named, theirs_named, dtype, label: str) -> None:
    assert list(ours_named) == list(theirs_named)
    for name in theirs_named:
        assert_close(f"{label}: {name}", ours_named[name], theirs_named[name], dtype)


# --- parity ------------------------------------------------------------------------------

CASES = list(
    itertools.product(
        (1, 2, 3),  # num_layers
        (False, True),  # bidirectional
        (False, True),  # batch_first
        (False, True),  # with an initial state
    )
)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("batch", [1, 20], ids=["B1", "B20"])
@pytest.mark.parametrize(
    "layers,bidirectional,batch_first,with_state",
    CASES,
    ids=[
        f"L{n}-{'bi' if b else 'uni'}-{'bf' if f else 'tf'}-{'hx' if s else 'nohx'}"
        for n, b, f, s in CASES
    ],
)
def test_matches_torch(layers, bidirectional, batch_first, with_state, batch, dtype) -> None:
    input_size, hidden, steps = 5, 7, 6
    ours, theirs = pair(
        dtype,
        input_size=input_size,
        hidden_size=hidden,
        num_layers=layers,
        bidirectional=bidirectional,
        batch_first=batch_first,
    )
    gen = torch.Generator().manual_seed(2)
    shape = (batch, steps, input_size) if batch_first else (steps, batch, input_size)
    x = torch.randn(shape, generator=gen, dtype=dtype)
    hx = None
    if with_state:
        state_shape = (layers * (2 if bidirectional else 1), batch, hidden)
        hx = tuple(torch.randn(state_shape, generator=gen, dtype=dtype) for _ in range(2))
    ours_named, theirs_named = run_both(ours, theirs, x, hx)
    assert_same_results(ours_named, theirs_named, dtype, "parity")


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("batch_first", [False, True], ids=["tf", "bf"])
@pytest.mark.parametrize("stack", [(1, False), (2, True)], ids=["1layer", "2layer-bi"])
def test_operator_path_matches_torch(stack, batch_first, dtype, monkeypatch) -> None:
    """In eager mode the module calls the kernels through a plain
    autograd.Function (ops._EagerLstm); here through the custom operator instead,
    as under torch.compile. One layer one way takes its own path (state kept
    (1, B, H))."""
    monkeypatch.setattr(paths, "through_operator", True)
    num_layers, bidirectional = stack
    ours, theirs = pair(
        dtype,
        input_size=3,
        hidden_size=4,
        num_layers=num_layers,
        bidirectional=bidirectional,
        batch_first=batch_first,
    )
    gen = torch.Generator().manual_seed(13)
    x = torch.randn((5, 20, 3), generator=gen, dtype=dtype)
    states = num_layers * (2 if bidirectional else 1)
    hx = tuple(
        torch.randn((states, 5 if batch_first else 20, 4), generator=gen, dtype=dtype)
        for _ in range(2)
    )
    ours_named, theirs_named = run_both(ours, theirs, x, hx)
    assert_same_results(ours_named, theirs_named, dtype, "operator path")
    with torch.no_grad():
        assert_close("operator path, no_grad", ours(x, hx)[0], theirs(x, hx)[0], dtype)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bi"])
def test_matches_torch_at_large_hidden_size(bidirectional, dtype) -> None:
    """H > 1024 runs the GEMM kernel; B and T stay small to keep it cheap."""
    ours, theirs = pair(dtype, input_size=3, hidden_size=1030, bidirectional=bidirectional)
    x = torch.randn((3, 2, 3), generator=torch.Generator().manual_seed(3), dtype=dtype)
    ours_named, theirs_named = run_both(ours, theirs, x)
    assert_same_results(ours_named, theirs_named, dtype, "H1030")


@pytest.mark.parametrize("batch_first", [False, True])
def test_unbatched_input(batch_first) -> None:
    ours, theirs = pair(input_size=4, hidden_size=5, num_layers=2, batch_first=batch_first)
    gen = torch.Generator().manual_seed(4)
    x = torch.randn((6, 4), generator=gen, dtype=torch.float64)
    hx = tuple(torch.randn((2, 5), generator=gen, dtype=torch.float64) for _ in range(2))
    for state in (None, hx):
        ours_named, theirs_named = run_both(ours, theirs, x, state)
        assert ours_named["output"].shape == (6, 5)
        assert_same_results(ours_named, theirs_named, torch.float64, "unbatched")


def test_without_bias() -> None:
    ours, theirs = pair(input_size=4, hidden_size=5, num_layers=2, bias=False, bidirectional=True)
    assert [n for n, _ in ours.named_parameters()] == [n for n, _ in theirs.named_parameters()]
    x = torch.randn((6, 3, 4), generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    ours_named, theirs_named = run_both(ours, theirs, x)
    assert_same_results(ours_named, theirs_named, torch.float64, "bias=False")


@pytest.mark.parametrize("batch_first", [False, True])
def test_dropout_between_layers_draws_as_torch(batch_first) -> None:
    """Train mode: the same seed drops the same units as torch's LSTM; eval
    mode: no dropout."""
    ours, theirs = pair(
        input_size=4,
        hidden_size=5,
        num_layers=3,
        dropout=0.4,
        bidirectional=True,
        batch_first=batch_first,
    )
    x = torch.randn((6, 3, 4), generator=torch.Generator().manual_seed(6), dtype=torch.float64)
    for train in (True, False):
        ours.train(train)
        theirs.train(train)
        results = []
        for model in (ours, theirs):
            torch.manual_seed(7)
            results.append(run_both(model, model, x)[0])
        assert_same_results(*results, torch.float64, f"dropout, train={train}")
    ours.train()
    torch.manual_seed(8)
    a = ours(x)[0]
    b = ours(x)[0]
    assert not torch.equal(a, b), "train mode: two calls should draw different masks"


def test_no_grad_forward_matches() -> None:
    ours, theirs = pair(input_size=4, hidden_size=5, num_layers=2, bidirectional=True)
    x = torch.randn((6, 3, 4), generator=torch.Generator().manual_seed(9), dtype=torch.float64)
    with torch.no_grad():
        out, (h, c) = ours(x)
        ref, (h_ref, c_ref) = theirs(x)
    for name, a, b in (("output", out, ref), ("h_n", h, h_ref), ("c_n", c, c_ref)):
        assert_close(f"no_grad: {name}", a, b, torch.float64)
    assert not out.requires_grad


# --- PackedSequence ----------------------------------------------------------------------


def test_packed_dropout_draws_as_torch() -> None:
    ours, theirs = pair(input_size=3, hidden_size=4, num_layers=3, dropout=0.5, bidirectional=True)
    x = torch.randn((7, 5, 3), generator=torch.Generator().manual_seed(14), dtype=torch.float64)
    lengths = torch.tensor([7, 2, 5, 1, 7])
    results = []
    for model in (ours, theirs):
        torch.manual_seed(15)
        out, (h, c) = model(pack_padded_sequence(x, lengths, enforce_sorted=False))
        results.append({"output": out.data, "h_n": h, "c_n": c})
    assert_same_results(*results, torch.float64, "packed dropout")


@pytest.mark.parametrize("path", ["function", "operator"])
@pytest.mark.parametrize("enforce_sorted", [False, True])
@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bi"])
@pytest.mark.parametrize("with_state", [False, True], ids=["nohx", "hx"])
def test_packed_sequence_matches_torch(
    with_state, bidirectional, enforce_sorted, path, monkeypatch
) -> None:
    if path == "operator":
        monkeypatch.setattr(paths, "through_operator", True)
    dtype = torch.float64
    ours, theirs = pair(
        input_size=3, hidden_size=4, num_layers=2, bidirectional=bidirectional, batch_first=True
    )
    gen = torch.Generator().manual_seed(10)
    lengths = torch.tensor([5, 2, 7, 7, 1, 3])
    if enforce_sorted:
        lengths = lengths.sort(descending=True).values
    x = torch.randn((6, 7, 3), generator=gen, dtype=dtype)
    state_shape = (2 * (2 if bidirectional else 1), 6, 4)
    hx = None
    if with_state:
        hx = tuple(torch.randn(state_shape, generator=gen, dtype=dtype) for _ in range(2))
    results = []
    for model in (ours, theirs):
        model.zero_grad(set_to_none=True)
        xi = x.clone().requires_grad_(True)
        hi = None if hx is None else tuple(t.clone().requires_grad_(True) for t in hx)
        packed = pack_padded_sequence(xi, lengths, batch_first=True, enforce_sorted=enforce_sorted)
        out, (h_n, c_n) = model(packed, hi)
        assert isinstance(out, torch.nn.utils.rnn.PackedSequence)
        assert torch.equal(out.batch_sizes, packed.batch_sizes)
        for attr in ("sorted_indices", "unsorted_indices"):
            mine, given = getattr(out, attr), getattr(packed, attr)
            assert (mine is None and given is None) or torch.equal(mine, given), attr
        g = torch.Generator().manual_seed(11)
        loss = sum(
            (t * torch.randn(t.shape, generator=g, dtype=dtype)).sum() for t in (out.data, h_n, c_n)
        )
        loss.backward()
        named = {"output": out.data, "h_n": h_n, "c_n": c_n, "grad input": xi.grad}
        if hi is not None:
            named["grad h_0"], named["grad c_0"] = hi[0].grad, hi[1].grad
        named.update({f"grad {n}": p.grad for n, p in model.named_parameters()})
        results.append(named)
    assert_same_results(*results, dtype, "packed")


# --- parameters and state dicts ----------------------------------------------------------


@pytest.mark.parametrize("bias", [True, False])
def test_parameters_init_and_state_dict_as_torch(bias) -> None:
    config = dict(input_size=3, hidden_size=4, num_layers=2, bidirectional=True, bias=bias)
    torch.manual_seed(12)
    theirs = torch.nn.LSTM(**config)
    torch.manual_seed(12)
    ours = LSTM(**config)
    assert isinstance(ours, torch.nn.RNNBase)
    ours_sd, theirs_sd = ours.state_dict(), theirs.state_dict()
    assert list(ours_sd) == list(theirs_sd)
    for name in theirs_sd:
        assert torch.equal(ours_sd[name], theirs_sd[name]), f"{name}: initial values differ"
    # Both ways, strict.
    other = LSTM(**config)
    other.load_state_dict(theirs.state_dict(), strict=True)
    back = torch.nn.LSTM(**config)
    back.load_state_dict(ours.state_dict(), strict=True)
    for name in theirs_sd:
        assert torch.equal(other.state_dict()[name], theirs_sd[name])
        assert torch.equal(back.state_dict()[name], ours_sd[name])
    assert repr(ours) == repr(theirs)


def test_float32_by_default_and_float64_on_request() -> None:
    assert LSTM(2, 3).weight_ih_l0.dtype == torch.float32
    assert LSTM(2, 3, dtype=torch.float64).weight_ih_l0.dtype == torch.float64
    assert LSTM(2, 3).double()(torch.zeros(4, 1, 2, dtype=torch.float64))[0].dtype == torch.float64


# --- what is not supported: clear errors -------------------------------------------------


def test_other_devices_run_on_torch() -> None:
    """Not on the CPU, torch's own LSTM runs with the same weights (CUDA is
    not available here; the meta device stands in for any other device);
    CPU input to a model elsewhere is an error naming both places."""
    ours, theirs = pair(torch.float32, input_size=3, hidden_size=4, num_layers=2)
    x = torch.zeros(2, 1, 3, device="meta")
    out, (h, c) = ours.to("meta")(x)
    ref, (h_ref, c_ref) = theirs.to("meta")(x)
    assert out.device.type == "meta" and out.shape == ref.shape == (2, 1, 4)
    assert h.shape == h_ref.shape and c.shape == c_ref.shape
    with pytest.raises(ValueError, match="CPU.*meta"):
        ours(torch.zeros(2, 1, 3))


def test_input_errors_name_what_is_wrong() -> None:
    model = LSTM(3, 4, num_layers=2)
    with pytest.raises(ValueError, match="2D or 3D"):
        model(torch.zeros(1, 2, 1, 3))
    with pytest.raises(RuntimeError, match="input_size"):
        model(torch.zeros(2, 1, 5))
    with pytest.raises(ValueError, match="dtype"):
        model(torch.zeros(2, 1, 3, dtype=torch.float64))
    bad = (torch.zeros(1, 1, 4), torch.zeros(2, 1, 4))
    with pytest.raises(RuntimeError, match=r"hidden\[0\]"):
        model(torch.zeros(2, 1, 3), bad)
    with pytest.raises(RuntimeError, match="3-D"):
        model(torch.zeros(2, 1, 3), (torch.zeros(2, 4), torch.zeros(2, 4)))


def test_non_finite_input_raises() -> None:
    model = LSTM(3, 4)
    x = torch.zeros(2, 1, 3)
    x[1, 0, 2] = float("nan")
    with pytest.raises((ValueError, RuntimeError), match="finite"):
        model(x)


@pytest.mark.parametrize("path", ["function", "operator"])
@pytest.mark.parametrize("num_layers", [1, 2])
def test_double_backward_matches_torch(num_layers, path, monkeypatch) -> None:
    """create_graph=True through either path (the eager Function, the custom
    operator): the backward recomputes its layer with torch operations, so
    second derivatives match torch.nn.LSTM's; gradgradcheck in float64."""
    if path == "operator":
        monkeypatch.setattr(paths, "through_operator", True)
    ours, theirs = pair(input_size=3, hidden_size=4, num_layers=num_layers, bidirectional=True)
    gen = torch.Generator().manual_seed(16)
    x = torch.randn((2, 5, 3), generator=gen, dtype=torch.float64)
    lengths = torch.tensor([5, 3])
    results = []
    for model in (ours, theirs):
        xi = x.clone().requires_grad_(True)
        out, (h, c) = model(pack_padded_sequence(xi, lengths, batch_first=True))
        loss = (out.data**2).sum() + (h * c).sum()
        (gx,) = torch.autograd.grad(loss, xi, create_graph=True)
        (gx**2).sum().backward()
        named = {"grad input": gx, "grad of |grad input|^2 by input": xi.grad}
        named.update({f"grad {n}": p.grad for n, p in model.named_parameters()})
        results.append(named)
        model.zero_grad(set_to_none=True)
    assert_same_results(*results, torch.float64, f"double backward, {path}")
    small = torch.randn((2, 3, 3), generator=gen, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradgradcheck(lambda x: ours(x)[0], (small,), eps=1e-6, atol=1e-7)


@pytest.mark.parametrize("path", ["function", "operator"])
@pytest.mark.parametrize("num_layers", [1, 2])
def test_an_input_modified_in_place_before_backward_is_refused(
    num_layers, path, monkeypatch
) -> None:
    """As with torch.nn.LSTM: the backward would otherwise use the new
    weights with the old activations, silently."""
    if path == "operator":
        monkeypatch.setattr(paths, "through_operator", True)
    model = LSTM(3, 4, num_layers=num_layers, dtype=torch.float64)
    x = torch.randn(2, 5, 3, dtype=torch.float64)
    out, _ = model(x)
    with torch.no_grad():
        model.weight_hh_l0.add_(1.0)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        out.sum().backward()


@pytest.mark.parametrize("path", ["function", "operator"])
def test_a_bias_modified_in_place_before_double_backward_is_refused(path, monkeypatch) -> None:
    """The double backward recomputes the layer from its inputs: a bias
    changed since the forward would silently give another gradient."""
    if path == "operator":
        monkeypatch.setattr(paths, "through_operator", True)
    model = LSTM(3, 4, dtype=torch.float64)
    x = torch.randn(2, 5, 3, dtype=torch.float64, requires_grad=True)
    out, _ = model(x)
    with torch.no_grad():
        model.bias_hh_l0.add_(1.0)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        torch.autograd.grad(out.sum(), x, create_graph=True)
