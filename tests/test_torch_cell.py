"""sincos_rs.torch.LSTMCell against torch.nn.LSTMCell from the same weights:
chains of steps (the state of one is the next one's hx) compared in every
output and every gradient (to each step's input, the initial state and each
weight; float64 1e-10, float32 1e-5 relative to the largest magnitude), over
batched and unbatched input, hx given or not, bias or not, chain lengths,
gradients to part of the inputs, retain_graph; plus parameters and state
dicts both ways, the kept weight views following every way a parameter
changes, pickling, and the input errors. tests/test_torch_cell_compat.py has
the transforms and tools (export, trace, compile, ...)."""

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

from sincos_rs.torch import LSTMCell, paths  # noqa: E402

TOL = {torch.float64: 1e-10, torch.float32: 1e-5}
INPUT, HIDDEN = 5, 7


# --- helpers -----------------------------------------------------------------------------


def assert_close(name: str, ours, theirs) -> None:
    """max |ours - theirs| <= tol * max |theirs| (tol by dtype), named."""
    assert ours is not None, f"{name}: no value (expected one like torch's)"
    assert theirs is not None, f"{name}: torch has no value"
    assert ours.shape == theirs.shape, f"{name}: shape {tuple(ours.shape)} vs {tuple(theirs.shape)}"
    assert ours.dtype == theirs.dtype, f"{name}: dtype {ours.dtype} vs {theirs.dtype}"
    if not theirs.numel():
        return
    scale = max(theirs.detach().abs().max().item(), 1e-30)
    diff = (ours.detach() - theirs.detach()).abs().max().item()
    tol = TOL[theirs.dtype]
    assert diff <= tol * scale, f"{name}: max |diff| {diff:.3g} > {tol:g} * {scale:.3g}"


def assert_same(ours: dict, theirs: dict, label: str) -> None:
    assert list(ours) == list(theirs), label
    for name in theirs:
        assert_close(f"{label}: {name}", ours[name], theirs[name])


def pair(dtype=torch.float64, bias=True, seed=0, input_size=INPUT, hidden=HIDDEN):
    """(ours, torch.nn.LSTMCell) with the same weights."""
    torch.manual_seed(seed)
    theirs = torch.nn.LSTMCell(input_size, hidden, bias=bias, dtype=dtype)
    ours = LSTMCell(input_size, hidden, bias=bias, dtype=dtype)
    ours.load_state_dict(theirs.state_dict(), strict=True)
    return ours, theirs


def inputs(steps, batch, dtype, with_state, seed=1, input_size=INPUT, hidden=HIDDEN):
    """xs (steps of (B, I), or (I,) if batch is None) and hx or None."""
    gen = torch.Generator().manual_seed(seed)
    lead = () if batch is None else (batch,)
    xs = [torch.randn(lead + (input_size,), generator=gen, dtype=dtype) for _ in range(steps)]
    hx = None
    if with_state:
        hx = tuple(torch.randn(lead + (hidden,), generator=gen, dtype=dtype) for _ in range(2))
    return xs, hx


def run_chain(model, xs, hx, need=("x", "hx", "weights"), seed=2, retain=False):
    """The steps chained, a loss reaching every h and c with random weights,
    backward. Returns named outputs and the gradients asked for."""
    model.zero_grad(set_to_none=True)
    for p in model.parameters():
        p.requires_grad_("weights" in need)
    leaves = [x.detach().clone().requires_grad_("x" in need) for x in xs]
    state = None
    if hx is not None:
        state = tuple(t.detach().clone().requires_grad_("hx" in need) for t in hx)
    named, h_c = {}, state
    gen = torch.Generator().manual_seed(seed)
    loss = 0
    for t, x in enumerate(leaves):
        h_c = model(x, h_c)
        named[f"h[{t}]"], named[f"c[{t}]"] = h_c
        for out in h_c:
            loss = loss + (out * torch.randn(out.shape, generator=gen, dtype=out.dtype)).sum()
    if loss.requires_grad:
        loss.backward(retain_graph=retain)
        if retain:
            loss.backward()  # the gradients accumulate: twice the first
    if "x" in need:
        named.update({f"grad x[{t}]": x.grad for t, x in enumerate(leaves)})
    if "hx" in need and state is not None:
        named["grad h_0"], named["grad c_0"] = state[0].grad, state[1].grad
    if "weights" in need:
        named.update({f"grad {n}": p.grad for n, p in model.named_parameters()})
    return named


# --- parity: chains ----------------------------------------------------------------------

CHAINS = list(
    itertools.product(
        (torch.float64, torch.float32),
        (3, None),  # batch; None: unbatched
        (False, True),  # hx given
        (True, False),  # bias
        (1, 20),  # steps
    )
)


@pytest.mark.parametrize(
    "dtype,batch,with_state,bias,steps",
    CHAINS,
    ids=[
        f"{str(d)[6:]}-{'B' + str(b) if b else 'unbatched'}-{'hx' if s else 'nohx'}-"
        f"{'bias' if bias else 'nobias'}-T{t}"
        for d, b, s, bias, t in CHAINS
    ],
)
def test_chain_matches_torch(dtype, batch, with_state, bias, steps) -> None:
    ours, theirs = pair(dtype, bias)
    xs, hx = inputs(steps, batch, dtype, with_state)
    assert_same(run_chain(ours, xs, hx), run_chain(theirs, xs, hx), "chain")


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
@pytest.mark.parametrize(
    "need",
    [("hx",), ("x",), ("weights",), ("x", "hx")],
    ids=["hx-only", "x-only", "weights-only", "x-and-hx"],
)
def test_gradients_to_part_of_the_inputs(need, dtype) -> None:
    """Only some inputs need a gradient (frozen weights, a fixed input, a
    learned initial state): the same gradients as torch, and None where
    torch has None."""
    ours, theirs = pair(dtype)
    xs, hx = inputs(6, 4, dtype, True)
    assert_same(run_chain(ours, xs, hx, need), run_chain(theirs, xs, hx, need), f"{need}")


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
def test_retain_graph_backward_twice(dtype) -> None:
    ours, theirs = pair(dtype)
    xs, hx = inputs(20, 3, dtype, True)
    mine = run_chain(ours, xs, hx, retain=True)
    assert_same(mine, run_chain(theirs, xs, hx, retain=True), "retain_graph")
    once = run_chain(ours, xs, hx)
    assert_close("twice = 2 x once", mine["grad weight_hh"], 2 * once["grad weight_hh"])


def test_autograd_grad_with_inputs() -> None:
    """torch.autograd.grad asked for the initial state only, then for a
    weight only, from the same graph: each as torch's."""
    results = []
    for model in pair():
        xs, hx = inputs(10, 3, torch.float64, True)
        h0, c0 = (t.clone().requires_grad_() for t in hx)
        state = (h0, c0)
        outs = []
        for x in xs:
            state = model(x, state)
            outs.append(state[0])
        loss = torch.stack(outs).pow(2).sum()
        g_state = torch.autograd.grad(loss, [h0, c0], retain_graph=True)
        g_weight = torch.autograd.grad(loss, [model.weight_hh], retain_graph=True)
        g_middle = torch.autograd.grad(loss, [outs[4]])
        results.append({"dh0": g_state[0], "dc0": g_state[1], "dW_hh": g_weight[0],
                        "d out[4]": g_middle[0]})  # fmt: skip
        assert model.weight_hh.grad is None
    assert_same(*results, "autograd.grad")


def test_only_c_or_only_h_used() -> None:
    for index in (0, 1):
        results = []
        for model in pair():
            xs, hx = inputs(5, 2, torch.float64, False)
            state = None
            for x in xs:
                state = model(x, state)
            state[index].sum().backward()
            results.append({f"grad {n}": p.grad for n, p in model.named_parameters()})
        assert_same(*results, f"only output {index} used")


def test_no_grad_keeps_no_graph() -> None:
    ours, theirs = pair()
    xs, hx = inputs(4, 3, torch.float64, True)
    with torch.no_grad():
        a, b = hx, hx
        for x in xs:
            a, b = ours(x, a), theirs(x, b)
            assert a[0].grad_fn is None and not a[0].requires_grad
            assert_close("no_grad h", a[0], b[0])
            assert_close("no_grad c", a[1], b[1])


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
def test_through_the_custom_operator(dtype, monkeypatch) -> None:
    """The operator path (what torch.compile traces), run eagerly."""
    monkeypatch.setattr(paths, "through_operator", True)
    ours, theirs = pair(dtype)
    xs, hx = inputs(6, 3, dtype, True)
    assert_same(run_chain(ours, xs, hx), run_chain(theirs, xs, hx), "operator path")
    xs, hx = inputs(3, None, dtype, True)
    assert_same(run_chain(ours, xs, hx), run_chain(theirs, xs, hx), "operator path, unbatched")


@pytest.mark.parametrize("hidden", [64, 65, 300, 1030], ids=lambda h: f"H{h}")
@pytest.mark.parametrize("batch", [1, 5, 17], ids=lambda b: f"B{b}")
def test_kernel_boundaries(batch, hidden) -> None:
    """Each kernel of the step: rows (B <= 4, H <= 64), lanes, GEMM (H > 1024)."""
    ours, theirs = pair(torch.float64, input_size=3, hidden=hidden)
    xs, hx = inputs(3, batch, torch.float64, True, input_size=3, hidden=hidden)
    assert_same(run_chain(ours, xs, hx), run_chain(theirs, xs, hx), f"B{batch} H{hidden}")


# --- parameters, state dicts, kept views -------------------------------------------------


@pytest.mark.parametrize("bias", [True, False])
def test_parameters_init_and_state_dict_as_torch(bias) -> None:
    torch.manual_seed(12)
    theirs = torch.nn.LSTMCell(3, 4, bias=bias)
    torch.manual_seed(12)
    ours = LSTMCell(3, 4, bias=bias)
    assert isinstance(ours, torch.nn.LSTMCell) and isinstance(ours, torch.nn.RNNCellBase)
    ours_sd, theirs_sd = ours.state_dict(), theirs.state_dict()
    assert list(ours_sd) == list(theirs_sd)
    for name in theirs_sd:
        assert torch.equal(ours_sd[name], theirs_sd[name]), f"{name}: initial values differ"
    other = LSTMCell(3, 4, bias=bias)
    other.load_state_dict(theirs.state_dict(), strict=True)
    back = torch.nn.LSTMCell(3, 4, bias=bias)
    back.load_state_dict(ours.state_dict(), strict=True)
    for name in theirs_sd:
        assert torch.equal(other.state_dict()[name], theirs_sd[name])
        assert torch.equal(back.state_dict()[name], ours_sd[name])
    assert repr(ours) == repr(theirs)
    assert [n for n, _ in ours.named_parameters()] == [n for n, _ in theirs.named_parameters()]
    assert LSTMCell(3, 4).weight_ih.dtype == torch.float32
    assert LSTMCell(3, 4, dtype=torch.float64).weight_hh.dtype == torch.float64


def one_step_equal(ours, theirs, label: str, dtype=torch.float64) -> None:
    xs, hx = inputs(2, 3, dtype, True, seed=21)
    assert_same(run_chain(ours, xs, hx), run_chain(theirs, xs, hx), label)


def test_kept_views_follow_every_change_of_the_parameters() -> None:
    """The weights' NumPy views and summed bias are kept between calls
    (views.WeightViews): after each way a parameter can change, the cell
    computes with the new values, as torch's does."""
    ours, theirs = pair()
    one_step_equal(ours, theirs, "start")
    # An optimizer step (in place), on both.
    for model in (ours, theirs):
        torch.optim.SGD(model.parameters(), lr=0.5).step()
    one_step_equal(ours, theirs, "after an optimizer step")
    # In-place edits under no_grad, of a weight and of one bias.
    for model in (ours, theirs):
        with torch.no_grad():
            model.weight_hh.mul_(1.5)
            model.bias_hh.add_(0.25)
    one_step_equal(ours, theirs, "after in-place edits")
    # load_state_dict (a copy into the same memory).
    torch.manual_seed(5)
    fresh = torch.nn.LSTMCell(INPUT, HIDDEN, dtype=torch.float64).state_dict()
    ours.load_state_dict(fresh)
    theirs.load_state_dict(fresh)
    one_step_equal(ours, theirs, "after load_state_dict")
    # .data reassigned: new memory.
    for model in (ours, theirs):
        model.weight_ih.data = model.weight_ih.data * -1.0
        model.bias_ih.data = model.bias_ih.data + 1.0
    one_step_equal(ours, theirs, "after .data =")
    # A parameter replaced by another Parameter object.
    new = torch.nn.Parameter(theirs.weight_hh.detach().clone() * 0.5)
    theirs.weight_hh = new
    ours.weight_hh = torch.nn.Parameter(new.detach().clone())
    one_step_equal(ours, theirs, "after a new Parameter")
    # Converted to float32 and back: new memory each time.
    ours.float(), theirs.float()
    one_step_equal(ours, theirs, "float32", torch.float32)
    ours.double(), theirs.double()
    one_step_equal(ours, theirs, "float64 again")


def test_non_contiguous_and_parametrized_weights() -> None:
    """A weight that is a transposed view (a copy made each call) and one
    computed by torch.nn.utils.parametrize (a new tensor each call)."""
    from torch.nn.utils import parametrize

    ours, theirs = pair()
    for model in (ours, theirs):
        w = model.weight_hh.detach().clone()
        model.weight_hh = torch.nn.Parameter(w.t().contiguous().t())  # (4H, H), not contiguous
        assert not model.weight_hh.is_contiguous()
    one_step_equal(ours, theirs, "non-contiguous weight_hh")
    for model in (ours, theirs):
        with torch.no_grad():
            model.weight_hh.mul_(0.5)  # in place, on the non-contiguous parameter
    one_step_equal(ours, theirs, "non-contiguous weight_hh, edited in place")

    class Scale(torch.nn.Module):
        def forward(self, w):
            return 0.5 * w

    for model in (ours, theirs):
        parametrize.register_parametrization(model, "weight_ih", Scale())
    one_step_equal(ours, theirs, "parametrized weight_ih")


def test_functional_call_uses_the_given_parameters() -> None:
    from torch.func import functional_call

    ours, theirs = pair()
    xs, hx = inputs(1, 3, torch.float64, True)
    other = {n: p.detach() * 2 for n, p in theirs.named_parameters()}
    mine = functional_call(ours, other, (xs[0], hx))
    reference = functional_call(theirs, other, (xs[0], hx))
    assert_same({"h": mine[0], "c": mine[1]}, {"h": reference[0], "c": reference[1]}, "call")
    one_step_equal(ours, theirs, "own parameters again")


def test_pickle_and_copies_compute_the_same_and_keep_no_views() -> None:
    ours, theirs = pair()
    one_step_equal(ours, theirs, "before")  # views kept
    for clone in (pickle.loads(pickle.dumps(ours)), copy.deepcopy(ours), copy.copy(ours)):
        assert type(clone) is LSTMCell
        assert "_views" in vars(clone) and clone._views is not ours._views
        one_step_equal(clone, theirs, "copy")
    deep = copy.deepcopy(ours)
    with torch.no_grad():
        deep.weight_hh.add_(1.0)  # the copy's memory only
    one_step_equal(ours, theirs, "the original, after its deep copy changed")


# --- what is refused ----------------------------------------------------------------------


def test_an_input_modified_in_place_before_backward_is_refused() -> None:
    model = LSTMCell(3, 4, dtype=torch.float64)
    x = torch.randn(2, 3, dtype=torch.float64)
    h, c = model(x)
    with torch.no_grad():
        model.weight_hh.add_(1.0)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        (h.sum() + c.sum()).backward()
    h0 = torch.randn(2, 4, dtype=torch.float64, requires_grad=True)
    state = h0 * 1.0, torch.zeros(2, 4, dtype=torch.float64)
    h, c = model(x, state)
    with torch.no_grad():
        state[0].add_(1.0)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        h.sum().backward()


def test_a_bias_modified_in_place_before_double_backward_is_refused() -> None:
    model = LSTMCell(3, 4, dtype=torch.float64)
    x = torch.randn(2, 3, dtype=torch.float64, requires_grad=True)
    h, _ = model(x)
    with torch.no_grad():
        model.bias_hh.add_(1.0)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        torch.autograd.grad(h.sum(), x, create_graph=True)


ERRORS = {
    "3-D input": (lambda m: m(torch.zeros(2, 1, 3)), ValueError, r"input to be 1D or 2D, got 3D"),
    "input size": (lambda m: m(torch.zeros(2, 5)), RuntimeError, r"input_size: got 5 expected 3"),
    "input dtype": (
        lambda m: m(torch.zeros(2, 3, dtype=torch.float64)),
        RuntimeError,
        r"input has dtype torch\.float64 and the weights torch\.float32.*input\.to",
    ),
    "integer input": (
        lambda m: m(torch.zeros(2, 3, dtype=torch.int64)),
        TypeError,
        r"input has dtype torch\.int64; expected a floating-point tensor",
    ),
    "hx batch": (
        lambda m: m(torch.zeros(2, 3), (torch.zeros(3, 4), torch.zeros(3, 4))),
        RuntimeError,
        r"Input batch size 2 doesn't match hx\[0\] batch size 3",
    ),
    "cx hidden size": (
        lambda m: m(torch.zeros(2, 3), (torch.zeros(2, 4), torch.zeros(2, 5))),
        RuntimeError,
        r"hx\[1\] has inconsistent hidden_size: got 5, expected 4",
    ),
    "hx 3-D": (
        lambda m: m(torch.zeros(2, 3), (torch.zeros(1, 2, 4), torch.zeros(1, 2, 4))),
        ValueError,
        r"hx\[0\] to be 1D or 2D, got 3D",
    ),
    "hx 2-D for unbatched input": (
        lambda m: m(torch.zeros(3), (torch.zeros(2, 4), torch.zeros(2, 4))),
        RuntimeError,
        r"hx\[0\] is 2D for a 1D input",
    ),
    "hx 1-D for batched input": (
        lambda m: m(torch.zeros(2, 3), (torch.zeros(4), torch.zeros(4))),
        RuntimeError,
        r"hx\[0\] is 1D for a 2D input",
    ),
    "hx of one tensor": (
        lambda m: m(torch.zeros(2, 3), (torch.zeros(2, 4),)),
        RuntimeError,
        r"hx must be a pair \(h_0, c_0\) of tensors, got 1 values",
    ),
    "hx dtype": (
        lambda m: m(torch.zeros(2, 3), (torch.zeros(2, 4, dtype=torch.float64), torch.zeros(2, 4))),
        RuntimeError,
        r"hx\[0\] has dtype torch\.float64 on cpu; expected torch\.float32",
    ),
    "non-finite input": (
        lambda m: m(torch.full((2, 3), float("nan"))),
        ValueError,
        r"finite",
    ),
    "non-finite state": (
        lambda m: m(torch.zeros(2, 3), (torch.full((2, 4), float("inf")), torch.zeros(2, 4))),
        ValueError,
        r"finite",
    ),
}


@pytest.mark.parametrize("grad", [True, False], ids=["grad", "no_grad"])
@pytest.mark.parametrize("case", list(ERRORS))
def test_input_errors_name_what_is_wrong(case, grad) -> None:
    """The exception class torch.nn.LSTMCell raises (TypeError for a
    non-float input, as sincos_rs.torch.LSTM), a message naming the argument
    and what was expected; the cell unchanged."""
    call, error, message = ERRORS[case]
    model = LSTMCell(3, 4)
    before = {n: t.clone() for n, t in model.state_dict().items()}
    with torch.set_grad_enabled(grad), pytest.raises(error, match=message):
        call(model)
    assert all(torch.equal(before[n], t) for n, t in model.state_dict().items())
    reference = torch.nn.LSTMCell(3, 4)
    reference.load_state_dict(model.state_dict())
    x = torch.randn(2, 3)
    assert_close("the next call", model(x)[0], reference(x)[0])


def test_other_devices_run_on_torch() -> None:
    """Not on the CPU (the meta device stands in for any other), torch's cell
    runs with the same weights; CPU input to a model elsewhere is an error
    naming both places."""
    ours, theirs = pair(torch.float32)
    x = torch.zeros(2, INPUT, device="meta")
    h, c = ours.to("meta")(x)
    h_ref, c_ref = theirs.to("meta")(x)
    assert h.device.type == "meta" and h.shape == h_ref.shape and c.shape == c_ref.shape
    with pytest.raises(RuntimeError, match="CPU.*meta"):
        ours(torch.zeros(2, INPUT))


def test_readme_cell_example_runs() -> None:
    """The README's loop with the cell runs as written and trains."""
    import re
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    blocks = re.findall(r"^```python\n(.*?)^```", readme, flags=re.MULTILINE | re.DOTALL)
    (example,) = [b for b in blocks if "import LSTMCell" in b]
    namespace: dict = {}
    exec(compile(example, "README.md cell example", "exec"), namespace)  # noqa: S102
    assert all(p.grad is not None for p in namespace["params"])
    assert namespace["predict"](namespace["x"][:2, :5], future=3).shape == (2, 8)


# --- weight gradients relayed down a chain (cell_ops.py) ---------------------------------


def test_weight_gradients_are_relayed_to_the_first_step() -> None:
    """Within a chain, only the first step's node returns weight gradients
    (the others hand theirs down); the totals are torch's."""
    ours, theirs = pair()
    xs, hx = inputs(6, 3, torch.float64, True)
    returned = []
    state = hx
    outs = []
    for x in xs:
        state = ours(x, state)
        outs.append(state[0])
        state[0].grad_fn.register_hook(
            lambda grad_inputs, grad_outputs: returned.append(grad_inputs[4] is not None)
        )
    torch.stack(outs).sum().backward()
    assert returned == [False] * 5 + [True], returned  # backward runs the last step first
    reference = []
    state = hx
    for x in xs:
        state = theirs(x, state)
        reference.append(state[0])
    torch.stack(reference).sum().backward()
    for (name, p), q in zip(ours.named_parameters(), theirs.parameters(), strict=True):
        assert_close(f"grad {name}", p.grad, q.grad)


def chain_with(model, xs, hx, between=None):
    """Steps of ``model``, with ``between(t, state)`` applied to the state
    between steps; returns the outputs."""
    state, outs = hx, []
    for t, x in enumerate(xs):
        state = model(x, state)
        outs.append(state[0])
        if between is not None:
            state = between(t, state)
    return outs


def grads_of(model) -> dict:
    return {f"grad {n}": p.grad for n, p in model.named_parameters()}


def test_branches_and_broken_chains_match_torch() -> None:
    """Two steps continuing from one state (a branch: both relay to the
    same node), states that pass through other operations or through
    another cell between steps (no relay there), a chain of two cells
    taking turns: the same gradients as torch."""
    cases = {
        "branch": lambda model, other, xs, hx: [
            *chain_with(model, xs[:3], hx),
            model(xs[3], model(xs[2], hx))[0],
            model(xs[4], model(xs[2], hx))[0],
        ],
        "scaled state": lambda model, other, xs, hx: chain_with(
            model, xs, hx, lambda t, s: (s[0] * 0.5, s[1]) if t % 2 else s
        ),
        "other cell between": lambda model, other, xs, hx: chain_with(
            model, xs, hx, lambda t, s: other(xs[t], s) if t == 2 else s
        ),
        "two cells in turn": lambda model, other, xs, hx: chain_with(
            model, xs, hx, lambda t, s: other(xs[t], s)
        ),
    }
    for label, build in cases.items():
        results = []
        for cell in (LSTMCell, torch.nn.LSTMCell):
            torch.manual_seed(3)
            model = cell(INPUT, INPUT, dtype=torch.float64)
            other = cell(INPUT, INPUT, dtype=torch.float64)
            xs, hx = inputs(6, 2, torch.float64, True, hidden=INPUT)
            outs = build(model, other, xs, hx)
            torch.stack(outs).pow(2).sum().backward()
            results.append({**grads_of(model), **{f"other {k}": v for k, v in grads_of(other)
                                                   .items() if v is not None}})  # fmt: skip
        assert_same(*results, label)


def test_a_pass_that_stops_half_way_leaves_nothing_behind() -> None:
    """A hook that raises in the middle of a backward pass: steps after it
    had relayed their gradients to steps that never ran. The next pass
    over the same graph (retain_graph) must not see them; nor must a pass
    that prunes the chain (autograd.grad to a middle output)."""
    results = []
    for model in pair():
        xs, hx = inputs(8, 2, torch.float64, True)
        outs = chain_with(model, xs, hx)
        loss = torch.stack(outs).pow(2).sum()

        def fail_once(grad, calls=[]):  # noqa: B006 - one list per loop turn, by design
            calls.append(1)
            if len(calls) == 1:
                raise RuntimeError("stop here")
            return grad

        outs[3].register_hook(fail_once)
        with pytest.raises(RuntimeError, match="stop here"):
            loss.backward(retain_graph=True)
        model.zero_grad(set_to_none=True)
        (middle,) = torch.autograd.grad(loss, [outs[4]], retain_graph=True)
        loss.backward()
        results.append({"d loss / d out[4]": middle, **grads_of(model)})
    assert_same(*results, "after a failed pass")


@pytest.mark.parametrize("reentrant", [False, True], ids=["non-reentrant", "reentrant"])
def test_activation_checkpointing_of_a_chain(reentrant) -> None:
    """torch.utils.checkpoint over segments of a chain (recomputed in the
    backward, the gradients relayed inside each recomputation): torch's
    gradients."""
    from torch.utils.checkpoint import checkpoint

    def segment(cell, xs, h, c):
        outs = []
        for x in xs:
            h, c = cell(x, (h, c))
            outs.append(h)
        return torch.stack(outs), h, c

    results = []
    for model in pair():
        xs, (h0, c0) = inputs(12, 2, torch.float64, True)
        h0.requires_grad_()
        h, c, outs = h0, c0, []
        for k in range(3):
            out, h, c = checkpoint(segment, model, xs[4 * k : 4 * k + 4], h, c,
                                   use_reentrant=reentrant)  # fmt: skip
            outs.append(out)
        torch.cat(outs).pow(2).sum().backward()
        results.append({"grad h_0": h0.grad, **grads_of(model)})
    assert_same(*results, "checkpointed")
