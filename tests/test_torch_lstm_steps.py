"""sincos_rs.torch.LSTM called one step at a time (T = 1, the state carried
from call to call), as decoders and samplers call torch.nn.LSTM: against
torch.nn.LSTM from the same weights through chains of 1 and 20 calls, every
output and every gradient (float64 1e-10, float32 1e-5), over batch_first,
unbatched input, hx given or not, bias or not, several layers and
directions (which take the general path), gradients to part of the inputs,
no_grad, float16 weights, double backward; plus the kept weight views of a
one-layer LSTM following its parameters, and pickling."""

from __future__ import annotations

import copy
import importlib.util
import itertools
import os
import pickle

import pytest

if os.environ.get("CI") and importlib.util.find_spec("torch") is None:
    raise RuntimeError("CI must run the torch tests: .ci/run installs torch")
torch = pytest.importorskip("torch")

from sincos_rs.torch import LSTM, paths  # noqa: E402

TOL = {torch.float64: 1e-10, torch.float32: 1e-5}
INPUT, HIDDEN = 4, 6


def assert_close(name: str, ours, theirs) -> None:
    assert ours is not None and theirs is not None, f"{name}: {ours is None}, {theirs is None}"
    assert ours.shape == theirs.shape, f"{name}: shape {tuple(ours.shape)} vs {tuple(theirs.shape)}"
    assert ours.dtype == theirs.dtype, f"{name}: dtype {ours.dtype} vs {theirs.dtype}"
    scale = max(theirs.detach().abs().max().item(), 1e-30)
    diff = (ours.detach() - theirs.detach()).abs().max().item()
    tol = TOL[theirs.dtype]
    assert diff <= tol * scale, f"{name}: max |diff| {diff:.3g} > {tol:g} * {scale:.3g}"


def assert_same(ours: dict, theirs: dict, label: str) -> None:
    assert list(ours) == list(theirs), label
    for name in theirs:
        assert_close(f"{label}: {name}", ours[name], theirs[name])


def pair(dtype=torch.float64, seed=0, **config):
    torch.manual_seed(seed)
    theirs = torch.nn.LSTM(INPUT, HIDDEN, dtype=dtype, **config)
    ours = LSTM(INPUT, HIDDEN, dtype=dtype, **config)
    ours.load_state_dict(theirs.state_dict(), strict=True)
    return ours, theirs


def steps_for(model, steps, batch, dtype, with_state, seed=1):
    """Inputs of one step each ((1, B, I), (B, 1, I) or unbatched (1, I))
    and hx (or None)."""
    gen = torch.Generator().manual_seed(seed)
    states = model.num_layers * (2 if model.bidirectional else 1)
    if batch is None:
        shape, state_shape = (1, INPUT), (states, HIDDEN)
    else:
        shape = (batch, 1, INPUT) if model.batch_first else (1, batch, INPUT)
        state_shape = (states, batch, HIDDEN)
    xs = [torch.randn(shape, generator=gen, dtype=dtype) for _ in range(steps)]
    hx = None
    if with_state:
        hx = tuple(torch.randn(state_shape, generator=gen, dtype=dtype) for _ in range(2))
    return xs, hx


def run_steps(model, xs, hx, need=("x", "hx", "weights"), seed=2):
    """The calls chained, a loss over every output and final state, backward."""
    model.zero_grad(set_to_none=True)
    for p in model.parameters():
        p.requires_grad_("weights" in need)
    leaves = [x.detach().clone().requires_grad_("x" in need) for x in xs]
    state = None if hx is None else tuple(t.detach().clone().requires_grad_("hx" in need)
                                         for t in hx)  # fmt: skip
    carried, named, loss = state, {}, 0
    gen = torch.Generator().manual_seed(seed)
    for t, x in enumerate(leaves):
        out, carried = model(x, carried)
        named[f"out[{t}]"] = out
        for o in (out, *carried):
            loss = loss + (o * torch.randn(o.shape, generator=gen, dtype=o.dtype)).sum()
    named["h_n"], named["c_n"] = carried
    if loss.requires_grad:
        loss.backward()
    if "x" in need:
        named.update({f"grad x[{t}]": x.grad for t, x in enumerate(leaves)})
    if "hx" in need and state is not None:
        named["grad h_0"], named["grad c_0"] = state[0].grad, state[1].grad
    if "weights" in need:
        named.update({f"grad {n}": p.grad for n, p in model.named_parameters()})
    return named


CASES = list(
    itertools.product(
        (torch.float64, torch.float32),
        (False, True),  # batch_first
        (3, None),  # batch; None: unbatched
        (False, True),  # hx
        (True, False),  # bias
        (1, 20),  # calls
    )
)


@pytest.mark.parametrize(
    "dtype,batch_first,batch,with_state,bias,steps",
    CASES,
    ids=[
        f"{str(d)[6:]}-{'bf' if bf else 'tf'}-{'B' + str(b) if b else 'unbatched'}-"
        f"{'hx' if s else 'nohx'}-{'bias' if bias else 'nobias'}-T{t}"
        for d, bf, b, s, bias, t in CASES
    ],
)
def test_one_step_calls_match_torch(dtype, batch_first, batch, with_state, bias, steps) -> None:
    ours, theirs = pair(dtype, batch_first=batch_first, bias=bias)
    xs, hx = steps_for(ours, steps, batch, dtype, with_state)
    assert_same(run_steps(ours, xs, hx), run_steps(theirs, xs, hx), "T = 1 calls")


@pytest.mark.parametrize("config", [dict(num_layers=2), dict(bidirectional=True)],
                         ids=["2 layers", "bidirectional"])  # fmt: skip
def test_one_step_calls_of_stacked_and_bidirectional_layers(config) -> None:
    ours, theirs = pair(**config)
    xs, hx = steps_for(ours, 6, 3, torch.float64, True)
    assert_same(run_steps(ours, xs, hx), run_steps(theirs, xs, hx), f"{config}")


@pytest.mark.parametrize("need", [("hx",), ("x",), ("weights",)], ids=["hx", "x", "weights"])
def test_gradients_to_part_of_the_inputs(need) -> None:
    ours, theirs = pair()
    xs, hx = steps_for(ours, 8, 2, torch.float64, True)
    assert_same(run_steps(ours, xs, hx, need), run_steps(theirs, xs, hx, need), f"{need}")


def test_no_grad_steps_and_outputs_of_their_own() -> None:
    """No autograd node; output and h_n hold the same values in memory of
    their own (an in-place change of one leaves the other, as torch's)."""
    ours, theirs = pair()
    xs, hx = steps_for(ours, 5, 3, torch.float64, True)
    with torch.no_grad():
        a, b = hx, hx
        for x in xs:
            out, a = ours(x, a)
            ref, b = theirs(x, b)
            assert out.grad_fn is None
            assert_close("no_grad out", out, ref)
            assert_close("no_grad h_n", a[0], b[0])
            assert_close("no_grad c_n", a[1], b[1])
        out.add_(1.0)
        assert_close("h_n after out changed", a[0], b[0])
    out, (h_n, _) = ours(xs[0], hx)
    assert out.data_ptr() != h_n.data_ptr()
    # One layer one way at T = 1 takes the cell's step (cell_ops.layer_step).
    assert type(out.grad_fn).__name__ == "_EagerLayerStepBackward", type(out.grad_fn)


def test_float16_weights_step_by_step() -> None:
    """float16 weights are computed in float32 (as the module's whole-sequence
    path does): no less accurate than torch's float16 LSTM."""
    exact, _ = pair(torch.float64)
    half = copy.deepcopy(exact).half()
    reference = torch.nn.LSTM(INPUT, HIDDEN).half()
    reference.load_state_dict(half.state_dict())
    exact.load_state_dict(half.state_dict())  # the rounded weights, in float64
    xs, hx = steps_for(exact, 6, 3, torch.float64, True)
    xs_h, hx_h = [x.half() for x in xs], tuple(t.half() for t in hx)
    mine, theirs = run_steps(half, xs_h, hx_h), run_steps(reference, xs_h, hx_h)
    truth = run_steps(exact, [x.double() for x in xs_h], tuple(t.double() for t in hx_h))
    for name, value in truth.items():
        scale = value.abs().max().item()
        ours_err = (mine[name].double() - value).abs().max().item()
        torch_err = (theirs[name].double() - value).abs().max().item()
        assert mine[name].dtype == torch.float16, name
        assert ours_err <= torch_err + torch.finfo(torch.float16).eps * scale, (name, ours_err)


def test_double_backward_through_one_step_calls() -> None:
    results = []
    for model in pair():
        xs, hx = steps_for(model, 4, 2, torch.float64, True)
        leaves = [x.clone().requires_grad_() for x in xs]
        state = hx
        loss = 0
        for x in leaves:
            out, state = model(x, state)
            loss = loss + out.pow(2).sum()
        grads = torch.autograd.grad(loss, leaves, create_graph=True)
        sum(g.pow(2).sum() for g in grads).backward()
        named = {f"grad x[{t}]": g for t, g in enumerate(grads)}
        named.update({f"second grad {n}": p.grad for n, p in model.named_parameters()})
        results.append(named)
    assert_same(*results, "double backward")
    ours, _ = pair()
    x = torch.randn(2, 1, INPUT, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradgradcheck(lambda x: ours(x)[0], (x,), eps=1e-6, atol=1e-7)


def test_the_operator_path_at_one_step(monkeypatch) -> None:
    monkeypatch.setattr(paths, "through_operator", True)
    ours, theirs = pair()
    xs, hx = steps_for(ours, 5, 3, torch.float64, True)
    assert_same(run_steps(ours, xs, hx), run_steps(theirs, xs, hx), "operator path")


def test_kept_views_follow_the_parameters_and_are_not_pickled() -> None:
    ours, theirs = pair()
    xs, hx = steps_for(ours, 3, 2, torch.float64, True)
    assert_same(run_steps(ours, xs, hx), run_steps(theirs, xs, hx), "start")
    for model in (ours, theirs):
        torch.optim.SGD(model.parameters(), lr=0.3).step()
        model.weight_ih_l0.data = model.weight_ih_l0.data * 0.5
    assert_same(run_steps(ours, xs, hx), run_steps(theirs, xs, hx), "after updates")
    for clone in (pickle.loads(pickle.dumps(ours)), copy.deepcopy(ours)):
        assert clone._views is not ours._views
        assert_same(run_steps(clone, xs, hx), run_steps(theirs, xs, hx), "copy")
    ours.float(), theirs.float()
    xs32, hx32 = [x.float() for x in xs], tuple(t.float() for t in hx)
    assert_same(run_steps(ours, xs32, hx32), run_steps(theirs, xs32, hx32), "float32")


def test_an_input_modified_in_place_before_backward_is_refused() -> None:
    model = LSTM(INPUT, HIDDEN, dtype=torch.float64)
    out, _ = model(torch.randn(1, 2, INPUT, dtype=torch.float64))
    with torch.no_grad():
        model.weight_hh_l0.add_(1.0)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        out.sum().backward()


def test_parametrized_weight_and_errors_at_one_step() -> None:
    """A parametrized weight, and the general path's errors, in torch's
    words, for what the one-step path refuses."""
    from torch.nn.utils import parametrize

    class Half(torch.nn.Module):
        def forward(self, w):
            return 0.5 * w

    ours, theirs = pair()
    for model in (ours, theirs):
        parametrize.register_parametrization(model, "weight_hh_l0", Half())
    xs, hx = steps_for(ours, 3, 2, torch.float64, True)
    assert_same(run_steps(ours, xs, hx), run_steps(theirs, xs, hx), "parametrized")
    model = LSTM(INPUT, HIDDEN)
    x = torch.zeros(1, 2, INPUT)
    with pytest.raises(RuntimeError, match="input_size"):
        model(torch.zeros(1, 2, INPUT + 1))
    with pytest.raises(ValueError, match="dtype"):
        model(x.double())
    with pytest.raises(RuntimeError, match="3-D"):
        model(x, (torch.zeros(2, HIDDEN), torch.zeros(2, HIDDEN)))
    with pytest.raises(RuntimeError, match=r"hidden\[0\]"):
        model(x, (torch.zeros(1, 3, HIDDEN), torch.zeros(1, 3, HIDDEN)))
    with pytest.raises((ValueError, RuntimeError), match="finite"):
        model(torch.full((1, 2, INPUT), float("nan")))
