"""sincos_rs.torch.LSTMCell under every transform and tool of
tests/compat_matrix.py (CELL_TRANSFORMS), each case a chain of CELL_STEPS steps
against torch.nn.LSTMCell holding the same weights (float64 1e-10, float32 1e-5
relative to the largest magnitude; where both run torch's op, identical), and
the path that computed it; README.md's cell compatibility table is that
matrix. The helpers are tests/test_torch_compat.py's."""

from __future__ import annotations

import io
import re
import socket
import warnings
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from compat_matrix import (  # noqa: E402
    CELL_CONFIGS,
    CELL_STEPS,
    CELL_TRANSFORMS,
    CellConfig,
    render_cell_table,
)
from sincos_rs.torch import LSTMCell, paths  # noqa: E402
from test_torch_compat import (  # noqa: E402
    Holder,
    assert_all_close,
    assert_all_equal,
    assert_close,
    assert_same_run,
    loss_of,
    need,
    onnx_op_types,
    onnx_session_outputs,
    run_with_grads,
)

INPUT, HIDDEN = 3, 4
BATCH, OTHER_BATCH = 4, 6


# --- helpers -----------------------------------------------------------------------------


def dtype_of(config: CellConfig) -> torch.dtype:
    return getattr(torch, config.dtype)


def pair(config: CellConfig, seed: int = 0):
    """(ours, torch.nn.LSTMCell) with the configuration and the same weights."""
    torch.manual_seed(seed)
    theirs = torch.nn.LSTMCell(INPUT, HIDDEN, bias=config.bias).to(dtype_of(config))
    ours = LSTMCell(INPUT, HIDDEN, bias=config.bias).to(dtype_of(config))
    ours.load_state_dict(theirs.state_dict(), strict=True)
    return ours, theirs


def make_args(config: CellConfig, batch=BATCH, seed=1, dtype=None):
    """x (T, B, I) (or (T, I) unbatched), then h0, c0 if an initial state."""
    dtype = dtype or dtype_of(config)
    gen = torch.Generator().manual_seed(seed)
    lead = (batch,) if config.batched else ()
    args = [torch.randn((CELL_STEPS, *lead, INPUT), generator=gen, dtype=torch.float64)]
    if config.state:
        args += [torch.randn((*lead, HIDDEN), generator=gen, dtype=torch.float64) for _ in "hc"]
    return tuple(a.to(dtype) for a in args)


class CellCall(torch.nn.Module):
    """The cell over the steps of x, from hx if given: (every step's h
    stacked, the last h, the last c). What trace and the exporters see."""

    def __init__(self, cell) -> None:
        super().__init__()
        self.cell = cell

    def forward(self, x, *hx):
        state = (hx[0], hx[1]) if hx else None
        hs = []
        for t in range(x.shape[0]):
            state = self.cell(x[t], state)
            hs.append(state[0])
        return torch.stack(hs), state[0], state[1]


class ScriptableChain(torch.nn.Module):
    """A user's model holding the cell, written so that TorchScript compiles it."""

    def __init__(self, cell) -> None:
        super().__init__()
        self.cell = cell

    def forward(self, x: torch.Tensor, hx: tuple[torch.Tensor, torch.Tensor] | None = None):
        hs = []
        state = hx
        for t in range(x.size(0)):
            state = self.cell(x[t], state)
            hs.append(state[0])
        return torch.stack(hs)


@pytest.fixture
def chosen(monkeypatch):
    """The paths paths.choose_cell returned, in order."""
    record: list[str] = []
    choose = paths.choose_cell

    def spy(*args, **kwargs):
        path = choose(*args, **kwargs)
        record.append(path)
        return path

    monkeypatch.setattr(paths, "choose_cell", spy)
    return record


def both(config, ours, theirs, args=None):
    args = make_args(config) if args is None else args
    return run_with_grads(CellCall(ours), args), run_with_grads(CellCall(theirs), args)


# --- the matrix: one checker per transform -----------------------------------------------


def check_eager(config, ours, theirs, chosen):
    assert_same_run(*both(config, ours, theirs))
    assert set(chosen) == {paths.KERNELS}


def check_no_grad(config, ours, theirs, chosen):
    args = make_args(config)
    with torch.no_grad():
        mine, reference = CellCall(ours)(*args), CellCall(theirs)(*args)
    assert_all_close("outputs", mine, reference)
    assert not any(t.requires_grad for t in mine)
    assert set(chosen) == {paths.KERNELS}


def check_half(config, ours, theirs, chosen):
    assert_same_run(*both(config, ours, theirs), equal=True)
    assert set(chosen) == {paths.TORCH}


def check_empty_batch(config, ours, theirs, chosen):
    assert_same_run(*both(config, ours, theirs, make_args(config, batch=0)))
    assert all(p.grad is not None and not p.grad.any() for p in ours.parameters())
    assert set(chosen) == {paths.TORCH}


def check_trace(config, ours, theirs, chosen):
    """Traced under no_grad and in training, run on another batch size."""
    other = make_args(config, OTHER_BATCH, seed=3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        with torch.no_grad():
            traced = torch.jit.trace(CellCall(ours), make_args(config))
        assert_all_close("no_grad trace", traced(*other), CellCall(theirs)(*other))
        graph = str(traced.inlined_graph)  # torch's cell, as the ops it is made of
        assert "aten::sigmoid" in graph and "PythonOp" not in graph, graph
        traced = torch.jit.trace(CellCall(ours), make_args(config))
    assert_same_run(run_with_grads(traced, other), run_with_grads(CellCall(theirs), other))
    assert paths.TORCH in chosen


def check_script(config, ours, theirs, chosen, tmp_path):
    """The cell alone and inside a scriptable model, saved and loaded."""
    x, *hx = make_args(config)
    state = tuple(hx) if hx else None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        scripted_cell = torch.jit.script(ours)
        scripted = torch.jit.script(ScriptableChain(ours))
    assert type(ours) is LSTMCell  # scripting changed nothing in the module
    assert_all_close("scripted cell", scripted_cell(x[0], state), theirs(x[0], state))
    path = tmp_path / "chain.pt"
    torch.jit.save(scripted, str(path))
    loaded = torch.jit.load(str(path))
    expected = ScriptableChain(theirs)(x, state)
    assert_close("scripted model", scripted(x, state), expected)
    assert_close("saved and loaded", loaded(x, state), expected)


def dynamic_batch(config: CellConfig):
    """CellCall's dynamic_shapes: the batch axis of x and of hx."""
    batch = torch.export.Dim("batch")
    if not config.state:
        return ({1: batch},)
    return ({1: batch}, ({0: batch}, {0: batch}))


def check_export(config, ours, theirs, chosen):
    programs = [
        torch.export.export(
            CellCall(m), make_args(config), dynamic_shapes=dynamic_batch(config), strict=strict
        )
        for m, strict in ((ours, False), (theirs, False), (ours, True))
    ]
    ranges = [[(int(r.lower), str(r.upper)) for r in p.range_constraints.values()]
              for p in programs]  # fmt: skip
    assert ranges[0] == ranges[1] == ranges[2], f"batch ranges: ours, torch's, strict {ranges}"
    buffer = io.BytesIO()
    torch.export.save(programs[0], buffer)
    buffer.seek(0)
    loaded = torch.export.load(buffer)
    assert "sincos_rs" not in str(loaded.graph)
    for size in (1, OTHER_BATCH):
        args = make_args(config, batch=size, seed=4)
        expected = CellCall(theirs)(*args)
        assert_all_close(f"batch {size}", programs[0].module()(*args), expected)
        assert_all_close(f"batch {size}, strict", programs[2].module()(*args), expected)
        assert_all_close(f"batch {size}, loaded", loaded.module()(*args), expected)
    assert set(chosen) == {paths.TORCH}


def input_names(config: CellConfig) -> list[str]:
    return ["x"] + (["h0", "c0"] if config.state else [])


def check_onnx_torchscript(config, ours, theirs, chosen, tmp_path):
    need("onnx")
    names = input_names(config)
    axes = {"x": {1: "batch"}, "h0": {0: "batch"}, "c0": {0: "batch"}}
    path = tmp_path / "cell.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(CellCall(ours), make_args(config), str(path), dynamo=False,
                          input_names=names, dynamic_axes={n: axes[n] for n in names})  # fmt: skip
    other = make_args(config, OTHER_BATCH, seed=5)
    assert_all_close("ONNX Runtime", onnx_session_outputs(path, other), CellCall(theirs)(*other))
    assert not any("sincos" in op for op in onnx_op_types(path))
    assert set(chosen) == {paths.TORCH}


def check_onnx_dynamo(config, ours, theirs, chosen, tmp_path):
    need("onnxscript")
    path = tmp_path / "cell.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(CellCall(ours), make_args(config), str(path), dynamo=True,
                          dynamic_shapes=dynamic_batch(config), input_names=input_names(config),
                          verbose=False)  # fmt: skip
    assert not any("sincos" in op for op in onnx_op_types(path))
    other = make_args(config, OTHER_BATCH, seed=6)
    assert_all_close("ONNX Runtime", onnx_session_outputs(path, other), CellCall(theirs)(*other))
    assert set(chosen) == {paths.TORCH}


def check_compile(config, ours, theirs, chosen):
    """fullgraph=True through AOT autograd: one forward and one backward
    operator call per step, outputs and every gradient as torch's."""
    torch._dynamo.reset()
    targets: list[str] = []

    def recording(graph_module, example_inputs):
        targets.extend(str(node.target) for node in graph_module.graph.nodes)
        return graph_module.forward

    from torch._dynamo.backends.common import aot_autograd

    backend = aot_autograd(fw_compiler=recording, bw_compiler=recording)
    compiled = torch.compile(CellCall(ours), backend=backend, fullgraph=True)
    args = make_args(config)
    assert_same_run(run_with_grads(compiled, args), run_with_grads(CellCall(theirs), args))
    assert sum("sincos_rs.lstm_forward" in t for t in targets) == CELL_STEPS, targets
    assert sum("sincos_rs.lstm_backward" in t for t in targets) == CELL_STEPS, targets


def check_func(config, ours, theirs, chosen):
    """grad over the parameters (functional_call), jacrev over the input,
    vmap over a stack of inputs (against a loop: torch.nn.LSTMCell has no
    batching rule), jvp."""
    from torch.func import functional_call, grad, jacrev, jvp, vmap

    args = make_args(config)
    params = [dict(m.named_parameters()) for m in (ours, theirs)]

    def loss(model):
        def of(p, *a):
            return loss_of(functional_call(CellCall(model), {f"cell.{k}": v for k, v in p.items()},
                                           a))  # fmt: skip

        return of

    grads = [grad(loss(m))({k: v.detach() for k, v in p.items()}, *args)
             for m, p in zip((ours, theirs), params, strict=True)]  # fmt: skip
    for name in grads[1]:
        assert_close(f"grad {name}", grads[0][name], grads[1][name])
    jacobians = [jacrev(lambda x, m=m: CellCall(m)(x, *args[1:])[0])(args[0])
                 for m in (ours, theirs)]  # fmt: skip
    assert_close("jacrev", *jacobians)
    stack = torch.stack([make_args(config, seed=10 + i)[0] for i in range(3)])
    mapped = vmap(lambda x: CellCall(ours)(x, *args[1:]))(stack)
    each = [CellCall(theirs)(x, *args[1:]) for x in stack]  # torch's cell: no batching rule
    assert_all_close("vmap", mapped, [torch.stack(parts) for parts in zip(*each, strict=True)])
    tangent = torch.randn_like(args[0])
    pushed = [jvp(lambda x, m=m: CellCall(m)(x, *args[1:]), (args[0],), (tangent,))
              for m in (ours, theirs)]  # fmt: skip
    assert_all_close("jvp primal", pushed[0][0], pushed[1][0])
    assert_all_close("jvp tangent", pushed[0][1], pushed[1][1])
    assert set(chosen) == {paths.STEPS}


def check_forward_ad(config, ours, theirs, chosen):
    import torch.autograd.forward_ad as fwad

    args = make_args(config)
    tangent = torch.randn_like(args[0])
    for grad_mode in (False, True):
        tangents = []
        for model in (ours, theirs):
            with fwad.dual_level(), torch.set_grad_enabled(grad_mode):
                outputs = CellCall(model)(fwad.make_dual(args[0], tangent), *args[1:])
                tangents.append([fwad.unpack_dual(t).tangent for t in outputs])
        assert all(t is not None for t in tangents[0]), f"grad mode {grad_mode}: a tangent dropped"
        assert_all_close(f"tangents, grad mode {grad_mode}", *tangents)
    assert set(chosen) == {paths.STEPS}


def check_double_backward(config, ours, theirs, chosen):
    """A gradient penalty through the chain; in float64 a gradgradcheck."""
    args = make_args(config)
    results = []
    for model in (ours, theirs):
        model.zero_grad(set_to_none=True)
        leaves = [a.detach().clone().requires_grad_() for a in args]
        first = torch.autograd.grad(loss_of(CellCall(model)(*leaves)), leaves, create_graph=True)
        sum(g.pow(2).sum() for g in first).backward()
        results.append([*first, *(a.grad for a in leaves), *(p.grad for p in model.parameters())])
    assert_all_close("first and second derivatives", *results)
    assert set(chosen) == {paths.KERNELS}
    if config.dtype == "float64":
        leaves = tuple(a.detach().clone().requires_grad_() for a in make_args(config, batch=2))
        call = CellCall(ours)
        assert torch.autograd.gradgradcheck(lambda *a: call(*a), leaves, eps=1e-6, atol=1e-7)


def check_autocast(config, ours, theirs, chosen):
    results = []
    for model in (ours, theirs):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            results.append(run_with_grads(CellCall(model), make_args(config)))
    assert_same_run(*results, equal=True)  # torch's op on both sides
    assert set(chosen) == {paths.TORCH}


def check_save_load(config, ours, theirs, chosen, tmp_path):
    path = tmp_path / "cell.pt"
    torch.save(ours, path)
    loaded = torch.load(path)
    torch.save(Holder(ours), path)
    with torch.serialization.safe_globals([Holder]):
        held = torch.load(path).lstm
    args = make_args(config)
    expected = run_with_grads(CellCall(ours), args)
    for model in (loaded, held):
        assert type(model) is LSTMCell
        assert_same_run(run_with_grads(CellCall(model), args), expected, equal=True)
    assert set(chosen) == {paths.KERNELS}


def check_quantize_dynamic(config, ours, theirs, chosen):
    from torch.ao.nn.quantized.dynamic import LSTMCell as QuantizedLSTMCell
    from torch.ao.quantization import quantize_dynamic

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mine = quantize_dynamic(Holder(ours), {torch.nn.LSTMCell, LSTMCell}).lstm
        reference = quantize_dynamic(Holder(theirs), {torch.nn.LSTMCell}).lstm
        untouched = quantize_dynamic(Holder(ours), {torch.nn.LSTMCell}).lstm
    assert type(mine) is QuantizedLSTMCell and type(reference) is QuantizedLSTMCell
    args = make_args(config)
    assert_all_equal("quantized", CellCall(mine)(*args), CellCall(reference)(*args))
    assert type(untouched) is LSTMCell
    assert_all_close("unchanged", CellCall(untouched)(*args), CellCall(theirs)(*args))


def check_ddp(config, ours, theirs, chosen):
    import torch.distributed as dist

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=0, world_size=1)
    try:
        wrapped = [torch.nn.parallel.DistributedDataParallel(CellCall(m)) for m in (ours, theirs)]
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
    "empty_batch": check_empty_batch,
    "trace": check_trace,
    "script": check_script,
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
NEEDS_TMP = {"onnx_torchscript", "onnx_dynamo", "save_load", "script"}

CASES = [(t.key, c) for t in CELL_TRANSFORMS for c in t.configs]


@pytest.mark.parametrize("transform,config_id", CASES, ids=[f"{t}-{c}" for t, c in CASES])
@pytest.mark.filterwarnings("ignore:dynamo_pgo force disabled")
def test_cell_matrix(transform, config_id, chosen, tmp_path) -> None:
    config = CELL_CONFIGS[config_id]
    ours, theirs = pair(config)
    extra = {"tmp_path": tmp_path} if transform in NEEDS_TMP else {}
    CHECKS[transform](config, ours, theirs, chosen, **extra)


def test_every_cell_transform_has_a_check() -> None:
    keys = {t.key for t in CELL_TRANSFORMS if t.configs}
    assert keys == set(CHECKS), keys ^ set(CHECKS)


def test_readme_cell_compatibility_table_is_the_matrix() -> None:
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    found = re.search(
        r"<!-- compat-table-cell: .*? -->\n(.*?)<!-- /compat-table-cell -->",
        readme,
        flags=re.DOTALL,
    )
    assert found, "README.md: no <!-- compat-table-cell: ... --> block"
    assert found.group(1) == render_cell_table(), (
        "README.md's cell compatibility table differs from tests/compat_matrix.py: "
        "replace it with the output of python tests/compat_matrix.py --cell"
    )


def test_isinstance_torch_lstm_cell() -> None:
    cell = LSTMCell(3, 4)
    assert isinstance(cell, torch.nn.LSTMCell) and isinstance(cell, torch.nn.RNNCellBase)


def test_compiled_cell_itself_has_no_graph_break() -> None:
    torch._dynamo.reset()
    config = CELL_CONFIGS["B-hx-f64"]
    ours, theirs = pair(config)
    x, h0, c0 = make_args(config)
    compiled = torch.compile(ours, fullgraph=True, backend="eager")
    assert_all_close("compiled", compiled(x[0], (h0, c0)), theirs(x[0], (h0, c0)))


def test_fake_tensor_mode_propagates_shapes_as_torch() -> None:
    from torch._subclasses.fake_tensor import FakeTensorMode

    config = CELL_CONFIGS["B-hx-f64"]
    ours, theirs = pair(config)
    with FakeTensorMode(allow_non_fake_inputs=True):
        args = make_args(config)
        shapes = [[tuple(t.shape) for t in CellCall(m)(*args)] for m in (ours, theirs)]
    assert shapes[0] == shapes[1]
