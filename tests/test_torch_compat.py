"""sincos_rs.torch.LSTM under every transform and tool of tests/compat_matrix.py,
each case against torch.nn.LSTM holding the same weights (float64 1e-10, float32
1e-5 relative to the largest magnitude; float16/bfloat16: no less accurate than
torch), and the path that computed it; README.md's compatibility table is that
matrix. Also: torch.jit.script's refusal, isinstance, the dtype message."""

from __future__ import annotations

import copy
import importlib.util
import io
import os
import re
import socket
import warnings
from pathlib import Path

import pytest

if os.environ.get("CI") and importlib.util.find_spec("torch") is None:
    raise RuntimeError("CI must run the torch tests: .ci/run installs torch")
torch = pytest.importorskip("torch")

from torch.nn.utils.rnn import (  # noqa: E402
    PackedSequence,
    pack_padded_sequence,
    pad_packed_sequence,
)

from compat_matrix import CONFIGS, TRANSFORMS, Config, render_table  # noqa: E402
from sincos_rs.torch import LSTM, paths  # noqa: E402

TOL = {torch.float64: 1e-10, torch.float32: 1e-5}
INPUT, HIDDEN = 3, 4
BATCH, STEPS = 4, 5  # the example a graph is made from
OTHER_BATCH, OTHER_STEPS = 6, 7  # what the graph is then run on


# --- helpers -----------------------------------------------------------------------------


def dtype_of(config: Config) -> torch.dtype:
    return getattr(torch, config.dtype)


def pair(config: Config, seed: int = 0):
    """(ours, torch.nn.LSTM) with the configuration and the same weights."""
    options = dict(
        input_size=INPUT,
        hidden_size=HIDDEN,
        num_layers=config.layers,
        bidirectional=config.bidirectional,
        batch_first=config.batch_first,
        proj_size=config.proj_size,
        bias=config.bias,
    )
    torch.manual_seed(seed)
    theirs = torch.nn.LSTM(**options).to(dtype_of(config))
    ours = LSTM(**options).to(dtype_of(config))
    ours.load_state_dict(theirs.state_dict(), strict=True)
    return ours, theirs


def lengths_for(batch: int, steps: int) -> torch.Tensor:
    """Lengths in 1..steps, unsorted, the longest = steps."""
    lengths = torch.arange(batch) * 3 % steps + 1
    lengths[batch // 2] = steps
    return lengths


def make_args(config: Config, batch=BATCH, steps=STEPS, seed=1, dtype=None):
    """The tensors one call takes, as a flat tuple: (x,), then lengths if
    packed, then h0, c0 if an initial state."""
    dtype = dtype or dtype_of(config)
    gen = torch.Generator().manual_seed(seed)
    shape = (batch, steps, INPUT) if config.batch_first or config.packed else (steps, batch, INPUT)
    args = [torch.randn(shape, generator=gen, dtype=torch.float64).to(dtype)]
    if config.packed:
        args.append(lengths_for(batch, steps))
    if config.state:
        states = config.layers * (2 if config.bidirectional else 1)
        out_size = config.proj_size or HIDDEN
        args.append(torch.randn((states, batch, out_size), generator=gen, dtype=torch.float64))
        args.append(torch.randn((states, batch, HIDDEN), generator=gen, dtype=torch.float64))
        args[-2:] = [t.to(dtype) for t in args[-2:]]
    return tuple(args)


class Call(torch.nn.Module):
    """An LSTM called on make_args' flat tensors, packing and unpacking
    inside when the configuration is packed: what trace and the exporters
    see. Returns (output padded, h_n, c_n)."""

    def __init__(self, lstm, config: Config) -> None:
        super().__init__()
        self.lstm, self.config = lstm, config

    def forward(self, *args):
        x, rest = args[0], list(args[1:])
        if self.config.packed:
            lengths = rest.pop(0)
            x = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
        hx = (rest[0], rest[1]) if rest else None
        out, (h_n, c_n) = self.lstm(x, hx)
        if isinstance(out, PackedSequence):
            out = pad_packed_sequence(out, batch_first=True)[0]
        return out, h_n, c_n


def assert_close(name: str, ours, theirs, dtype=None) -> None:
    """max |ours - theirs| <= tol * max |theirs|, tol by dtype; same shape and dtype."""
    assert ours.shape == theirs.shape, f"{name}: shape {tuple(ours.shape)} vs {tuple(theirs.shape)}"
    assert ours.dtype == theirs.dtype, f"{name}: dtype {ours.dtype} vs {theirs.dtype}"
    ours, theirs = torch.as_tensor(ours).detach(), torch.as_tensor(theirs).detach()
    if not theirs.numel():
        return
    tol = TOL[dtype or theirs.dtype]
    scale = max(theirs.abs().max().item(), 1e-30)
    diff = (ours.double() - theirs.double()).abs().max().item()
    assert diff <= tol * scale, f"{name}: max |diff| {diff:.3g} > {tol:g} * {scale:.3g}"


def assert_all_close(label: str, ours, theirs, dtype=None) -> None:
    assert len(ours) == len(theirs), label
    for i, (a, b) in enumerate(zip(ours, theirs, strict=True)):
        assert_close(f"{label} [{i}]", a, b, dtype)


def assert_same_run(mine, reference, label: str = "", equal: bool = False) -> None:
    """Two run_with_grads results: outputs, input gradients, parameter
    gradients; close by dtype, or identical if ``equal``."""
    for part, a, b in zip(("outputs", "input grads", "param grads"), mine, reference, strict=True):
        (assert_all_equal if equal else assert_all_close)(f"{label}{part}", a, b)


def assert_all_equal(label: str, ours, theirs) -> None:
    assert len(ours) == len(theirs), label
    for i, (a, b) in enumerate(zip(ours, theirs, strict=True)):
        assert a.dtype == b.dtype and torch.equal(a, b), f"{label} [{i}]: not identical"


def loss_of(outputs, seed=2):
    """A loss reaching every output with random weights."""
    gen = torch.Generator().manual_seed(seed)
    weights = [torch.randn(t.shape, generator=gen, dtype=torch.float64) for t in outputs]
    return sum((t * w.to(t.dtype)).sum() for t, w in zip(outputs, weights, strict=True))


def run_with_grads(call, args):
    """call(*args) with leaves that need grad, then backward: (outputs,
    gradients of the float args, gradients of the parameters)."""
    leaves = [a.detach().clone().requires_grad_(a.is_floating_point()) for a in args]
    call.zero_grad(set_to_none=True)
    outputs = call(*leaves)
    loss_of(outputs).backward()
    grads = [a.grad for a in leaves if a.is_floating_point()]
    return outputs, grads, [p.grad for p in call.parameters()]


@pytest.fixture
def chosen(monkeypatch):
    """The paths paths.choose returned, in order."""
    record: list[str] = []
    choose = paths.choose

    def spy(*args, **kwargs):
        path = choose(*args, **kwargs)
        record.append(path)
        return path

    monkeypatch.setattr(paths, "choose", spy)
    return record


# --- the matrix: one checker per transform -----------------------------------------------


def check_eager(config, ours, theirs, chosen):
    args = make_args(config)
    mine, reference = (
        run_with_grads(Call(ours, config), args),
        run_with_grads(Call(theirs, config), args),
    )
    assert_same_run(mine, reference)
    assert set(chosen) == {paths.KERNELS}


def check_no_grad(config, ours, theirs, chosen):
    ours.eval(), theirs.eval()
    args = make_args(config)
    with torch.no_grad():
        mine, reference = Call(ours, config)(*args), Call(theirs, config)(*args)
    assert_all_close("outputs", mine, reference)
    assert not any(t.requires_grad for t in mine)
    assert set(chosen) == {paths.KERNELS}


def check_half(config, ours, theirs, chosen):
    """float16/bfloat16 weights: outputs and gradients in that dtype, against
    torch.nn.LSTM in float64 from the same (rounded) weights and input: the
    error is at most torch's own in that dtype (+ one rounding of the result)."""
    exact = copy.deepcopy(theirs).double()
    args = make_args(config)
    results = [run_with_grads(Call(m, config), args) for m in (ours, theirs)]
    truth = run_with_grads(
        Call(exact, config), [a.double() if a.is_floating_point() else a for a in args]
    )
    dtype = dtype_of(config)
    eps = torch.finfo(dtype).eps
    for part in range(3):
        for i, (mine, torch_half, exact_value) in enumerate(
            zip(results[0][part], results[1][part], truth[part], strict=True)
        ):
            assert mine.dtype == torch_half.dtype == dtype, (part, i, mine.dtype)
            scale = exact_value.abs().max().item()
            ours_err = (mine.double() - exact_value).abs().max().item()
            torch_err = (torch_half.double() - exact_value).abs().max().item()
            assert ours_err <= torch_err + eps * scale, (
                f"{config.dtype} part {part}[{i}]: our error {ours_err:.3g} > torch's "
                f"{torch_err:.3g} + one rounding"
            )
    assert set(chosen) == {paths.KERNELS}


def check_proj_size(config, ours, theirs, chosen):
    check_eager_against_torch(config, ours, theirs)
    assert set(chosen) == {paths.TORCH}


def check_eager_against_torch(config, ours, theirs, batch=BATCH):
    args = make_args(config, batch=batch)
    mine, reference = (
        run_with_grads(Call(ours, config), args),
        run_with_grads(Call(theirs, config), args),
    )
    assert_same_run(mine, reference)


def check_empty_batch(config, ours, theirs, chosen):
    check_eager_against_torch(config, ours, theirs, batch=0)
    assert all(p.grad is not None and not p.grad.any() for p in ours.parameters())
    assert set(chosen) == {paths.TORCH}


def check_trace(config, ours, theirs, chosen):
    """Traced in eval mode under no_grad (the case that recorded a constant),
    then in training mode with gradients; run on other batch sizes and
    lengths than the example, against torch.nn.LSTM in eager mode."""
    other = make_args(config, OTHER_BATCH, OTHER_STEPS, seed=3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        ours.eval()
        with torch.no_grad():
            traced = torch.jit.trace(Call(ours, config), make_args(config))
        theirs.eval()
        assert_all_close("eval, no_grad", traced(*other), Call(theirs, config)(*other))
        assert "aten::lstm" in str(traced.inlined_graph)
        ours.train(), theirs.train()
        traced = torch.jit.trace(Call(ours, config), make_args(config))
    mine, reference = run_with_grads(traced, other), run_with_grads(Call(theirs, config), other)
    assert_same_run(mine, reference, "training, ")
    # Traced on torch's op; trace's own check_trace also runs the module eagerly.
    assert paths.TORCH in chosen


def check_export(config, ours, theirs, chosen):
    """Dim('batch') on the batch axis of every input: the exported program's
    batch range is torch.nn.LSTM's, runs other batch sizes, and survives
    torch.export.save/load. Non-strict (the default) and strict (dynamo)."""
    ours.eval(), theirs.eval()
    batch = torch.export.Dim("batch")
    axis = 0 if config.batch_first else 1
    spec = [{axis: batch}] + [{1: batch}] * (2 if config.state else 0)
    shapes = (tuple(spec),)
    programs = [
        torch.export.export(
            Call(m, config), make_args(config), dynamic_shapes=shapes, strict=strict
        )
        for m, strict in ((ours, False), (theirs, False), (ours, True))
    ]
    ranges = [
        [(int(r.lower), str(r.upper)) for r in p.range_constraints.values()] for p in programs
    ]
    assert ranges[0] == ranges[1] == ranges[2], f"batch ranges: ours, torch's, strict {ranges}"
    buffer = io.BytesIO()
    torch.export.save(programs[0], buffer)
    buffer.seek(0)
    loaded = torch.export.load(buffer)
    graph = str(loaded.graph)
    assert "aten.lstm" in graph and "sincos_rs" not in graph, graph
    for size in (1, OTHER_BATCH):
        args = make_args(config, batch=size, seed=4)
        expected = Call(theirs, config)(*args)
        assert_all_close(f"batch {size}", programs[0].module()(*args), expected)
        assert_all_close(f"batch {size}, strict", programs[2].module()(*args), expected)
        assert_all_close(f"batch {size}, loaded", loaded.module()(*args), expected)
    assert set(chosen) == {paths.TORCH}


def need(module: str):
    """An optional test dependency (the test extra): skipped without it,
    except in CI, which installs it."""
    if os.environ.get("CI") and importlib.util.find_spec(module) is None:
        raise RuntimeError(f"CI must run the ONNX tests: the test extra installs {module}")
    return pytest.importorskip(module)


def onnx_session_outputs(path, args):
    ort = need("onnxruntime")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]
    assert len(names) == len(args), f"the ONNX graph takes {len(names)} inputs, not {len(args)}"
    return [
        torch.from_numpy(a)
        for a in session.run(None, dict(zip(names, (a.numpy() for a in args), strict=True)))
    ]


def onnx_op_types(path) -> set[str]:
    onnx = need("onnx")
    return {(n.domain or "") + n.op_type for n in onnx.load(str(path)).graph.node}


def input_names(config: Config) -> list[str]:
    return ["x"] + (["lengths"] if config.packed else []) + (["h0", "c0"] if config.state else [])


def check_onnx_torchscript(config, ours, theirs, chosen, tmp_path):
    """Exported with grad mode on and under no_grad (which once wrote a
    graph of constants), dynamic batch and time; ONNX Runtime on another
    batch size and length against torch.nn.LSTM."""
    need("onnx")
    ours.eval(), theirs.eval()
    names = input_names(config)
    batch_axis = 0 if config.batch_first or config.packed else 1
    axes = {"x": {batch_axis: "batch", 1 - batch_axis: "time"}, "lengths": {0: "batch"},
            "h0": {1: "batch"}, "c0": {1: "batch"}}  # fmt: skip
    other = make_args(config, OTHER_BATCH, OTHER_STEPS, seed=5)
    dynamic_axes = {n: axes[n] for n in names}
    for grad_mode in (False, True):
        path = tmp_path / f"lstm-{grad_mode}.onnx"
        with warnings.catch_warnings(), torch.set_grad_enabled(grad_mode):
            warnings.simplefilter("ignore")
            torch.onnx.export(Call(ours, config), make_args(config), str(path), dynamo=False,
                              input_names=names, dynamic_axes=dynamic_axes)  # fmt: skip
        assert_all_close(
            f"ONNX Runtime, exported with grad mode {grad_mode}",
            onnx_session_outputs(path, other),
            Call(theirs, config)(*other),
        )
        assert "LSTM" in onnx_op_types(path), f"grad mode {grad_mode}"
    assert set(chosen) == {paths.TORCH}


def check_onnx_dynamo(config, ours, theirs, chosen, tmp_path):
    need("onnxscript")
    ours.eval(), theirs.eval()
    batch, time = torch.export.Dim("batch"), torch.export.Dim("time")
    batch_axis = 0 if config.batch_first else 1
    spec = [{batch_axis: batch, 1 - batch_axis: time}] + [{1: batch}] * (2 if config.state else 0)
    path = tmp_path / "lstm.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            Call(ours, config),
            make_args(config),
            str(path),
            dynamo=True,
            dynamic_shapes=(tuple(spec),),
            input_names=input_names(config),
            verbose=False,
        )
    ops = onnx_op_types(path)
    assert "LSTM" in ops and not any("sincos" in o for o in ops), ops
    other = make_args(config, OTHER_BATCH, OTHER_STEPS, seed=6)
    assert_all_close(
        "ONNX Runtime", onnx_session_outputs(path, other), Call(theirs, config)(*other)
    )
    assert set(chosen) == {paths.ONNX}


def check_compile(config, ours, theirs, chosen):
    """fullgraph=True (no graph break) through AOT autograd: outputs and
    every gradient against torch.nn.LSTM in eager mode; the graph calls the
    custom operator (one per layer and direction)."""
    torch._dynamo.reset()
    targets: list[str] = []

    def recording_aot_eager(graph_module, example_inputs):
        targets.extend(str(node.target) for node in graph_module.graph.nodes)
        return graph_module.forward

    from torch._dynamo.backends.common import aot_autograd

    backend = aot_autograd(fw_compiler=recording_aot_eager, bw_compiler=recording_aot_eager)
    compiled = torch.compile(Call(ours, config), backend=backend, fullgraph=True)
    args = make_args(config)
    mine, reference = run_with_grads(compiled, args), run_with_grads(Call(theirs, config), args)
    assert_same_run(mine, reference)
    directions = config.layers * (2 if config.bidirectional else 1)
    assert sum("sincos_rs.lstm_forward" in t for t in targets) == directions, targets
    assert sum("sincos_rs.lstm_backward" in t for t in targets) == directions, targets


def check_func(config, ours, theirs, chosen):
    """torch.func.grad over the parameters (functional_call), jacrev over the
    input, vmap over a stack of inputs (against a loop: torch.nn.LSTM has no
    batching rule), jvp (against float64: torch's float32 op has no
    forward-mode formula)."""
    from torch.func import functional_call, grad, jacrev, jvp, vmap

    args = make_args(config)
    params = [dict(m.named_parameters()) for m in (ours, theirs)]

    def loss(model):
        def of(p, *a):
            named = {f"lstm.{k}": v for k, v in p.items()}
            return loss_of(functional_call(Call(model, config), named, a))

        return of

    grads = [grad(loss(m))({k: v.detach() for k, v in p.items()}, *args)
             for m, p in zip((ours, theirs), params, strict=True)]  # fmt: skip
    for name in grads[1]:
        assert_close(f"grad {name}", grads[0][name], grads[1][name])
    jacobians = [jacrev(lambda x, m=m: Call(m, config)(x, *args[1:])[0])(args[0])
                 for m in (ours, theirs)]  # fmt: skip
    assert_close("jacrev", *jacobians)
    stack = torch.stack([make_args(config, seed=10 + i)[0] for i in range(3)])
    batched = vmap(lambda x: Call(ours, config)(x, *args[1:]))(stack)
    each = [Call(theirs, config)(x, *args[1:]) for x in stack]
    assert_all_close("vmap", batched, [torch.stack(parts) for parts in zip(*each, strict=True)])
    tangent = torch.randn_like(args[0])
    primal, pushed = jvp(lambda x: Call(ours, config)(x, *args[1:]), (args[0],), (tangent,))
    exact = Call(copy.deepcopy(theirs).double(), config)
    exact_args = [a.double() if a.is_floating_point() else a for a in args]
    expected = jvp(lambda x: exact(x, *exact_args[1:]), (exact_args[0],), (tangent.double(),))
    assert_all_close("jvp primal", primal, [t.to(args[0].dtype) for t in expected[0]])
    assert_all_close("jvp tangent", pushed, [t.to(args[0].dtype) for t in expected[1]])
    assert set(chosen) == {paths.STEPS}


def check_forward_ad(config, ours, theirs, chosen):
    """Dual tensors through the module, with grad mode on and off (off, the
    kernels' NumPy path would drop the tangent), against torch.nn.LSTM in
    float64 (torch's float32 op has no forward-mode formula)."""
    import torch.autograd.forward_ad as fwad

    args = make_args(config)
    tangent = torch.randn_like(args[0])
    exact = Call(copy.deepcopy(theirs).double(), config)
    exact_args = [a.double() if a.is_floating_point() else a for a in args]
    with fwad.dual_level():
        outputs = exact(fwad.make_dual(exact_args[0], tangent.double()), *exact_args[1:])
        expected = [fwad.unpack_dual(t).tangent.to(args[0].dtype) for t in outputs]
    for grad_mode in (False, True):
        with fwad.dual_level(), torch.set_grad_enabled(grad_mode):
            outputs = Call(ours, config)(fwad.make_dual(args[0], tangent), *args[1:])
            tangents = [fwad.unpack_dual(t).tangent for t in outputs]
        assert all(t is not None for t in tangents), f"grad mode {grad_mode}: a tangent dropped"
        assert_all_close(f"tangents, grad mode {grad_mode}", tangents, expected)
    assert set(chosen) == {paths.STEPS}


def check_double_backward(config, ours, theirs, chosen):
    """A gradient penalty: the gradient of |d loss / d input|² with respect
    to the parameters and the input, as with torch.nn.LSTM; in float64 a
    gradgradcheck of the layers (first, smaller sizes)."""
    args = make_args(config)
    results = []
    for model in (ours, theirs):
        model.zero_grad(set_to_none=True)
        leaves = [a.detach().clone().requires_grad_(a.is_floating_point()) for a in args]
        outputs = Call(model, config)(*leaves)
        floats = [a for a in leaves if a.is_floating_point()]
        first = torch.autograd.grad(loss_of(outputs), floats, create_graph=True)
        sum(g.pow(2).sum() for g in first).backward()
        results.append([*first, *(a.grad for a in floats), *(p.grad for p in model.parameters())])
    assert_all_close("first and second derivatives", *results)
    assert chosen[0] == paths.KERNELS and set(chosen) == {paths.KERNELS}
    if config.dtype == "float64":
        small = make_args(config, batch=2, steps=3, seed=7)
        leaves = tuple(a.detach().clone().requires_grad_(a.is_floating_point()) for a in small)
        call = Call(ours, config)
        assert torch.autograd.gradgradcheck(lambda *a: call(*a)[:3], leaves, eps=1e-6, atol=1e-7)


def check_autocast(config, ours, theirs, chosen):
    args = make_args(config)
    results = []
    for model in (ours, theirs):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            results.append(run_with_grads(Call(model, config), args))
    assert_same_run(*results, equal=True)  # torch's op on both sides
    assert set(chosen) == {paths.TORCH}


class Holder(torch.nn.Module):
    """A user's model around the LSTM (a class the user allow-lists)."""

    def __init__(self, lstm) -> None:
        super().__init__()
        self.lstm = lstm


def check_save_load(config, ours, theirs, chosen, tmp_path):
    """The model alone, and inside a user's class that the user allow-lists
    (as pytorch/examples' word_language_model does): loaded with the default
    weights_only=True, it computes what the saved one computes, bit for bit."""
    path = tmp_path / "model.pt"
    torch.save(ours, path)
    loaded = torch.load(path)
    torch.save(Holder(ours), path)
    with torch.serialization.safe_globals([Holder]):
        held = torch.load(path).lstm
    args = make_args(config)
    expected = run_with_grads(Call(ours, config), args)
    for model in (loaded, held):
        assert type(model) is LSTM
        got = run_with_grads(Call(model, config), args)
        assert_same_run(got, expected, equal=True)
    assert set(chosen) == {paths.KERNELS}


def check_quantize_dynamic(config, ours, theirs, chosen):
    from torch.ao.nn.quantized.dynamic import LSTM as QuantizedLSTM
    from torch.ao.quantization import quantize_dynamic

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mine = quantize_dynamic(Holder(ours), {torch.nn.LSTM, LSTM}).lstm
        reference = quantize_dynamic(Holder(theirs), {torch.nn.LSTM}).lstm
        untouched = quantize_dynamic(Holder(ours), {torch.nn.LSTM}).lstm
    assert type(mine) is QuantizedLSTM and type(reference) is QuantizedLSTM
    args = make_args(config)
    a, b = Call(mine, config)(*args), Call(reference, config)(*args)
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True)), "not torch's result"
    assert type(untouched) is LSTM
    assert_all_close(
        "{torch.nn.LSTM}: unchanged", Call(untouched, config)(*args), Call(theirs, config)(*args)
    )


def check_ddp(config, ours, theirs, chosen):
    """DistributedDataParallel on one process (gloo): outputs and gradients
    as torch.nn.LSTM's under DDP."""
    import torch.distributed as dist

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=0, world_size=1)
    try:
        wrapped = [
            torch.nn.parallel.DistributedDataParallel(Call(m, config)) for m in (ours, theirs)
        ]
        args = make_args(config)
        mine, reference = (run_with_grads(w, args) for w in wrapped)
    finally:
        dist.destroy_process_group()
    assert_same_run(mine, reference)
    assert set(chosen) == {paths.KERNELS}


CHECKS = {
    "eager": check_eager,
    "no_grad": check_no_grad,
    "half": check_half,
    "proj_size": check_proj_size,
    "empty_batch": check_empty_batch,
    "trace": check_trace,
    "export": check_export,
    "onnx_torchscript": check_onnx_torchscript,
    "onnx_dynamo": check_onnx_dynamo,
    "compile": check_compile,
    "func": check_func,
    "forward_ad": check_forward_ad,
    "double_backward": check_double_backward,
    "autocast": check_autocast,
    "save_load": check_save_load,
    "quantize_dynamic": check_quantize_dynamic,
    "ddp": check_ddp,
}
NEEDS_TMP = {"onnx_torchscript", "onnx_dynamo", "save_load"}

CASES = [(t.key, c) for t in TRANSFORMS for c in t.configs]


@pytest.mark.parametrize("transform,config_id", CASES, ids=[f"{t}-{c}" for t, c in CASES])
@pytest.mark.filterwarnings("ignore:dynamo_pgo force disabled")
def test_matrix(transform, config_id, chosen, tmp_path) -> None:
    config = CONFIGS[config_id]
    ours, theirs = pair(config)
    extra = {"tmp_path": tmp_path} if transform in NEEDS_TMP else {}
    CHECKS[transform](config, ours, theirs, chosen, **extra)


def test_every_transform_has_a_check() -> None:
    keys = {t.key for t in TRANSFORMS if t.configs}
    assert keys == set(CHECKS), keys ^ set(CHECKS)


def test_readme_compatibility_table_is_the_matrix() -> None:
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    found = re.search(
        r"<!-- compat-table: .*? -->\n(.*?)<!-- /compat-table -->", readme, flags=re.DOTALL
    )
    assert found, "README.md: no <!-- compat-table: ... --> block"
    assert found.group(1) == render_table(), (
        "README.md's compatibility table differs from tests/compat_matrix.py: "
        "replace it with the output of python tests/compat_matrix.py"
    )


# --- outside the matrix ------------------------------------------------------------------


def test_isinstance_torch_lstm() -> None:
    model = LSTM(3, 4)
    assert isinstance(model, torch.nn.LSTM) and isinstance(model, torch.nn.RNNBase)


def test_jit_script_refuses_naming_the_ways_out() -> None:
    model = Holder(LSTM(3, 4))
    for target in (model.lstm, model):
        with pytest.raises(RuntimeError, match=r"torch\.jit\.trace.*torch\.export.*torch\.compile"):
            torch.jit.script(target)
    # What torch.nn.LSTM does in this torch: scripts, and cannot be called.
    scripted = torch.jit.script(torch.nn.LSTM(3, 4))
    with pytest.raises(Exception):  # noqa: B017,PT011 - torch's error, whatever it is
        scripted(torch.zeros(2, 1, 3))


@pytest.mark.parametrize("dtype", [torch.int64, torch.int32, torch.bool])
def test_integer_input_names_the_dtypes_accepted(dtype) -> None:
    model = LSTM(3, 4)
    for x in (torch.zeros(2, 1, 3, dtype=dtype), torch.zeros(2, 3, dtype=dtype)):
        with pytest.raises(
            TypeError, match=r"input has dtype .*float32, float64, float16 and bfloat16"
        ):
            model(x)
        with pytest.raises(TypeError, match=r"input\.to\(torch\.float32\)"), torch.no_grad():
            torch.jit.trace(model, x)


def test_compiled_module_itself_has_no_graph_break() -> None:
    """torch.compile of the LSTM itself, not only of a model holding it, and
    torch.nn.LSTM still breaks (nothing changed for it)."""
    torch._dynamo.reset()
    ours, theirs = pair(CONFIGS["L1-f32"])
    x = make_args(CONFIGS["L1-f32"])[0]
    compiled = torch.compile(ours, fullgraph=True, backend="eager")
    assert_all_close("compiled", [compiled(x)[0]], [theirs(x)[0]])
    with pytest.raises(Exception, match="(?i)lstm|rnn|unsupported"):
        torch.compile(torch.nn.LSTM(3, 4), fullgraph=True, backend="eager")(x)
    assert torch._dynamo.config.allow_rnn is False


def test_fake_tensor_mode_propagates_shapes_as_torch() -> None:
    """Under FakeTensorMode (shape and memory planning) the input is a
    FakeTensor, which has no NumPy view: torch's op runs, as for nn.LSTM."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    ours, theirs = pair(CONFIGS["L2-bi-bf-hx-f32"])
    with FakeTensorMode(allow_non_fake_inputs=True):
        args = make_args(CONFIGS["L2-bi-bf-hx-f32"])
        shapes = [[tuple(t.shape) for t in Call(m, CONFIGS["L2-bi-bf-hx-f32"])(*args)]
                  for m in (ours, theirs)]  # fmt: skip
    assert shapes[0] == shapes[1]


@pytest.mark.parametrize("dynamo_first", [False, True], ids=["sincos_rs-first", "dynamo-first"])
def test_dynamo_builder_is_wrapped_whatever_the_import_order(dynamo_first) -> None:
    """registry.py wraps dynamo's module builder when torch imports it
    (importing sincos_rs.torch does not import it: it is slow to import),
    or at once if it is already imported."""
    import subprocess
    import sys
    import textwrap

    code = textwrap.dedent(
        f"""
        import sys, torch
        if {dynamo_first}:
            import torch._dynamo
        import sincos_rs.torch as srt
        builder = "torch._dynamo.variables.builder"
        assert {dynamo_first} or builder not in sys.modules, "imported the dynamo builder"
        model = srt.LSTM(2, 3, batch_first=True)
        x = torch.randn(2, 4, 2)
        out = torch.compile(model, fullgraph=True, backend="eager")(x)[0]
        assert torch.equal(out, model(x)[0])
        print("ok")
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr[-3000:]


def test_quantize_dynamic_without_bias_fails_as_torch() -> None:
    """The table's claim: torch's dynamic quantized LSTM needs biases, for
    torch.nn.LSTM as for ours (the same error)."""
    from torch.ao.quantization import quantize_dynamic

    errors = []
    for model in (LSTM(3, 4, bias=False), torch.nn.LSTM(3, 4, bias=False)):
        with pytest.raises(AssertionError) as info, warnings.catch_warnings():
            warnings.simplefilter("ignore")
            quantize_dynamic(Holder(model), {torch.nn.LSTM, LSTM})
        errors.append(str(info.value))
    assert errors[0] == errors[1], errors
