"""The custom operators under sincos_rs.torch.LSTM: torch.library.opcheck
(schema, autograd registration, fake kernels, AOT dispatch with dynamic
shapes), torch.autograd.gradcheck in float64, torch.compile of a training
step against eager mode, and the import rules (``import sincos_rs`` never
imports torch; ``import sincos_rs.torch`` without torch says how to get it)."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

if os.environ.get("CI") and importlib.util.find_spec("torch") is None:
    raise RuntimeError("CI must run the torch tests: .ci/run installs torch")
torch = pytest.importorskip("torch")

from torch._inductor.compile_fx import compile_fx  # noqa: E402

from sincos_rs.torch import LSTM, ops  # noqa: E402

F64 = torch.float64


def op_inputs(batch=3, steps=4, features=2, hidden=3, *, bias=True, state=True, lengths=None,
              reverse=False, dtype=F64, seed=0):  # fmt: skip
    """Arguments of ops.lstm_forward, every float tensor a leaf that needs grad."""
    gen = torch.Generator().manual_seed(seed)

    def leaf(*shape):
        return (0.5 * torch.randn(shape, generator=gen, dtype=dtype)).requires_grad_(True)

    return (
        leaf(batch, steps, features),
        leaf(4 * hidden, features),
        leaf(4 * hidden, hidden),
        leaf(4 * hidden) if bias else None,
        leaf(4 * hidden) if bias else None,
        leaf(batch, hidden) if state else None,
        leaf(batch, hidden) if state else None,
        None if lengths is None else torch.tensor(lengths, dtype=torch.int64),
        reverse,
        True,
    )


VARIANTS = {
    "plain": {},
    "no-state": {"state": False},
    "no-bias": {"bias": False},
    "reverse": {"reverse": True},
    "lengths": {"lengths": [4, 1, 3]},
    "lengths-reverse": {"lengths": [2, 4, 1], "reverse": True},
    # The lanes kernel (B > 4) and the GEMM kernel (H > 1024).
    "lanes": {"batch": 6, "lengths": [4, 1, 3, 4, 2, 2], "reverse": True},
    "gemm": {"batch": 2, "steps": 2, "hidden": 1025, "lengths": [2, 1]},
}


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_opcheck_forward(variant) -> None:
    args = op_inputs(**VARIANTS[variant])
    torch.library.opcheck(ops.lstm_forward, args)
    # And as inference (no stored activations, nothing needs grad).
    plain = tuple(a.detach() if isinstance(a, torch.Tensor) else a for a in args)
    torch.library.opcheck(ops.lstm_forward, (*plain[:-1], False))


@pytest.mark.parametrize("need_dx", [True, False])
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_opcheck_backward(variant, need_dx) -> None:
    args = tuple(
        a.detach() if isinstance(a, torch.Tensor) else a for a in op_inputs(**VARIANTS[variant])
    )
    x, w_ih, w_hh, b_ih, b_hh, h0, c0, lengths, reverse, _ = args
    out, h_n, c_n, saved = ops.lstm_forward(*args)
    gen = torch.Generator().manual_seed(1)
    d_out, dh_n, dc_n = (torch.randn(t.shape, generator=gen, dtype=F64) for t in (out, h_n, c_n))
    torch.library.opcheck(
        ops.lstm_backward,
        (x, w_ih, w_hh, b_ih, b_hh, h0, c0, lengths, saved, d_out, dh_n, dc_n, reverse, need_dx),
    )


@pytest.mark.parametrize("variant", [v for v in VARIANTS if v != "gemm"])
def test_gradcheck_float64(variant) -> None:
    args = op_inputs(**VARIANTS[variant])

    def first_three(*tensors):
        return ops.lstm_forward(*tensors, *args[7:])[:3]

    assert torch.autograd.gradcheck(first_three, args[:7], eps=1e-6, atol=1e-8, rtol=1e-6)


def test_gradcheck_float64_gemm_kernel_fast_mode() -> None:
    """H > 1024: the weights have millions of entries, too many for a full
    numerical Jacobian; gradcheck's fast mode checks random projections of
    it instead (every gradient is also checked against torch.nn.LSTM in
    test_torch_lstm.py)."""
    args = op_inputs(**VARIANTS["gemm"])

    def first_three(*tensors):
        return ops.lstm_forward(*tensors, *args[7:])[:3]

    assert torch.autograd.gradcheck(
        first_three, args[:7], eps=1e-6, atol=1e-8, rtol=1e-6, fast_mode=True
    )


def test_gradcheck_stacked_bidirectional_module() -> None:
    torch.manual_seed(0)
    model = LSTM(2, 3, num_layers=2, bidirectional=True, batch_first=True, dtype=F64)
    params = tuple(model.parameters())
    x = torch.randn(3, 4, 2, dtype=F64, requires_grad=True)
    h0 = torch.randn(4, 3, 3, dtype=F64, requires_grad=True)
    c0 = torch.randn(4, 3, 3, dtype=F64, requires_grad=True)

    def run(x, h0, c0, *weights):
        state = dict(zip([n for n, _ in model.named_parameters()], weights, strict=True))
        out, (h, c) = torch.func.functional_call(model, state, (x, (h0, c0)))
        return out, h, c

    assert torch.autograd.gradcheck(run, (x, h0, c0, *params), eps=1e-6, atol=1e-8, rtol=1e-6)


def test_backward_without_stored_activations_says_so() -> None:
    args = op_inputs()
    out = ops.lstm_forward(*args[:-1], False)[0]
    with pytest.raises(RuntimeError, match="store=False"):
        out.sum().backward()


# --- torch.compile -----------------------------------------------------------------------


class SeedNet(torch.nn.Module):
    """Linear -> LSTM -> Linear, the seed network's shape, with a choice of LSTM."""

    def __init__(self, lstm_class, hidden=6, **lstm_kwargs) -> None:
        super().__init__()
        self.input = torch.nn.Linear(2, hidden)
        self.lstm = lstm_class(hidden, hidden, batch_first=True, **lstm_kwargs)
        self.output = torch.nn.Linear(hidden * (2 if lstm_kwargs.get("bidirectional") else 1), 1)

    def forward(self, x):
        y, (h, c) = self.lstm(self.input(x))
        return self.output(y), h, c


def train_steps(model, batches):
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    losses = []
    for x, y in batches:
        opt.zero_grad(set_to_none=True)
        pred, h, c = model(x)
        loss = ((pred - y) ** 2).sum() / x.shape[0] + (h**2).mean() + (c**2).mean()
        loss.backward()
        opt.step()
        losses.append(loss.detach())
    return torch.stack(losses)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
@pytest.mark.filterwarnings("ignore:dynamo_pgo force disabled")
def test_torch_compile_training_matches_eager(dtype) -> None:
    # No compiled graphs from an earlier build: their saved-buffer sizes
    # (from the fake kernel at trace time) may be another layout's.
    with torch._inductor.config.patch(force_disable_caches=True):
        compile_and_compare(dtype)


def compile_and_compare(dtype) -> None:
    torch._dynamo.reset()
    gen = torch.Generator().manual_seed(0)
    batches = [
        (
            torch.randn(4, 5, 2, generator=gen, dtype=dtype),
            torch.randn(4, 5, 1, generator=gen, dtype=dtype),
        )
        for _ in range(3)
    ]
    torch.manual_seed(0)
    eager = SeedNet(LSTM, num_layers=2, bidirectional=True).to(dtype)
    compiled_model = SeedNet(LSTM, num_layers=2, bidirectional=True).to(dtype)
    compiled_model.load_state_dict(eager.state_dict())
    targets: list[str] = []

    def inductor_recording_ops(graph_module, example_inputs):
        targets.extend(str(node.target) for node in graph_module.graph.nodes)
        return compile_fx(graph_module, example_inputs)

    compiled = torch.compile(compiled_model, backend=inductor_recording_ops, fullgraph=True)

    eager_losses = train_steps(eager, batches)
    compiled_losses = train_steps(compiled, batches)
    tol = 1e-10 if dtype == torch.float64 else 1e-5
    torch.testing.assert_close(compiled_losses, eager_losses, rtol=tol, atol=tol)
    for (name, p), q in zip(eager.named_parameters(), compiled_model.parameters(), strict=True):
        torch.testing.assert_close(q, p, rtol=tol, atol=tol, msg=lambda m, n=name: f"{n}: {m}")
    # The compiled graph calls our operator (one per layer and direction).
    assert sum("sincos_rs.lstm_forward" in t for t in targets) == 4, targets


# --- imports -----------------------------------------------------------------------------


def run_python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=300
    )


def test_import_sincos_rs_does_not_import_torch() -> None:
    result = run_python(
        """
        import sys
        import sincos_rs, sincos_rs.layers, sincos_rs.regressor, sincos_rs.reference
        assert "torch" not in sys.modules, sorted(m for m in sys.modules if "torch" in m)
        print("ok")
        """
    )
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr


def test_import_sincos_rs_torch_without_torch_says_how_to_install() -> None:
    """torch hidden from the import system, as if it were not installed."""
    result = run_python(
        """
        import sys
        class NoTorch:
            def find_spec(self, name, path=None, target=None):
                if name == "torch" or name.startswith("torch."):
                    raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        sys.meta_path.insert(0, NoTorch())
        import sincos_rs
        try:
            import sincos_rs.torch
        except ImportError as err:
            print(err)
        else:
            print("imported")
        """
    )
    assert result.returncode == 0, result.stderr
    assert 'pip install "sincos_rs[torch]"' in result.stdout, result.stdout
    assert 'pip install ".[torch]"' in result.stdout, result.stdout


def test_readme_pytorch_example_runs() -> None:
    """The README's PyTorch example runs as written."""
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    blocks = re.findall(r"^```python\n(.*?)^```", readme, flags=re.MULTILINE | re.DOTALL)
    example = [b for b in blocks if "from sincos_rs.torch import LSTM " in b]  # not the cell
    assert len(example) == 1, "README.md: expected one ```python example of sincos_rs.torch"
    namespace: dict[str, object] = {}
    exec(compile(example[0], "README.md PyTorch example", "exec"), namespace)  # noqa: S102
    assert tuple(namespace["out"].shape) == (64, 100, 128)
    assert namespace["lstm"].weight_hh_l1.grad is not None


@pytest.mark.parametrize("op", ["lstm_forward", "lstm_backward"])
def test_gil_is_released_inside_the_ops(op) -> None:
    """While one op runs its kernel, a Python thread keeps running (the
    method of test_api.py's GIL test)."""
    import sincos_rs as sr
    from test_api import Ticker

    threads = sr.get_num_threads()
    sr.set_num_threads(1)  # leave a core to the Python thread
    try:
        args = tuple(
            a.detach() if isinstance(a, torch.Tensor) else a
            for a in op_inputs(64, 60, 128, 512, state=False, dtype=torch.float32)
        )
        if op == "lstm_forward":
            call = lambda: ops.lstm_forward(*args)  # noqa: E731
        else:
            out, h_n, c_n, saved = ops.lstm_forward(*args)
            call = lambda: ops.lstm_backward(*args[:8], saved, out, h_n, c_n, False, True)  # noqa: E731
        with Ticker() as ticker:
            start = time.perf_counter()
            call()
            end = time.perf_counter()
        duration = end - start
        assert duration >= 0.04, f"{op} took {duration * 1e3:.1f} ms: make the call longer"
        quarter = duration / 4
        inside = [t for t in ticker.stamps if start + quarter <= t <= end - quarter]
        assert inside, f"{op}: no Python thread ran during {duration * 1e3:.0f} ms: GIL held?"
    finally:
        sr.set_num_threads(threads)
