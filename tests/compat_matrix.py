"""The compatibility matrices of ``sincos_rs.torch.LSTM`` and ``LSTMCell``: each
transform or tool, the configurations it is checked with against ``torch.nn.LSTM``
(``torch.nn.LSTMCell``) holding the same weights, and the path that computes it
(``sincos_rs/torch/paths.py``).

``tests/test_torch_compat.py`` runs one test per (transform, configuration) of the
LSTM, ``tests/test_torch_cell_compat.py`` of the cell; README.md's compatibility
tables are rendered from this file, and tests check that the README holds exactly
those tables. Print them with ``python tests/compat_matrix.py`` (``--cell``).
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Config:
    """One module configuration and input: options are tested in combination."""

    layers: int
    bidirectional: bool
    batch_first: bool
    packed: bool  # a PackedSequence input (enforce_sorted=False)
    state: bool  # an initial state hx
    dtype: str
    proj_size: int = 0
    bias: bool = True


CONFIGS = {
    "L1-f32": Config(1, False, False, False, False, "float32"),
    "L2-bi-bf-hx-f64": Config(2, True, True, False, True, "float64"),
    "L2-bi-bf-hx-f32": Config(2, True, True, False, True, "float32"),
    "L2-bi-bf-hx-nobias-f32": Config(2, True, True, False, True, "float32", bias=False),
    "L2-bi-packed-hx-f32": Config(2, True, False, True, True, "float32"),
    "L1-bf-packed-nobias-f64": Config(1, False, True, True, False, "float64", bias=False),
    "L2-bf-hx-bf16": Config(2, False, True, False, True, "bfloat16"),
    "L1-bi-packed-f16": Config(1, True, False, True, False, "float16"),
    "L1-proj-f32": Config(1, False, False, False, False, "float32", proj_size=3),
    "L2-bi-bf-hx-proj-f64": Config(2, True, True, False, True, "float64", proj_size=3),
}

# README columns: an option, and how to tell a configuration has it.
OPTIONS = {
    "2 layers": lambda c: c.layers == 2,
    "bidirectional": lambda c: c.bidirectional,
    "batch_first": lambda c: c.batch_first,
    "PackedSequence": lambda c: c.packed,
    "initial state": lambda c: c.state,
    "proj_size": lambda c: c.proj_size > 0,
    "bias=False": lambda c: not c.bias,
}

# What computes each case (README wording of paths.py's names).
KERNELS = "Rust kernels"
OPERATOR = "Rust kernels (custom operators)"
TORCH = "torch's LSTM op, same weights"
ONNX = "ONNX `LSTM` op"
STEPS = "torch ops per step, same weights"


@dataclass(frozen=True)
class Transform:
    key: str  # the test's name for it
    name: str  # README
    path: str
    configs: tuple[str, ...]
    # Options not in any tested configuration, and why.
    not_tested: dict[str, str] = field(default_factory=dict)
    note: str = ""


AS_TORCH = "no (torch.nn.LSTM neither)"

TRANSFORMS = (
    Transform(
        "eager",
        "eager training (outputs, state, every gradient)",
        KERNELS,
        ("L1-f32", "L2-bi-bf-hx-f64", "L2-bi-packed-hx-f32", "L1-bf-packed-nobias-f64"),
    ),
    Transform(
        "no_grad",
        "inference (`torch.no_grad`, eval)",
        KERNELS,
        ("L2-bi-bf-hx-f64", "L2-bi-packed-hx-f32"),
        note="no autograd node",
    ),
    Transform(
        "half",
        "float16 / bfloat16 weights",
        KERNELS,
        ("L2-bf-hx-bf16", "L1-bi-packed-f16"),
        note="computed in float32, rounded to the dtype: error against float64 at most torch's",
    ),
    Transform(
        "proj_size",
        "`proj_size > 0`",
        TORCH,
        ("L1-proj-f32", "L2-bi-bf-hx-proj-f64"),
        not_tested={"PackedSequence": "not tested"},
    ),
    Transform(
        "empty_batch",
        "a batch of 0 rows",
        TORCH,
        ("L1-f32", "L2-bi-bf-hx-f64"),
        not_tested={"PackedSequence": "no (cannot be empty)"},
        note="empty outputs, zero gradients",
    ),
    Transform(
        "trace",
        "`torch.jit.trace` (eval and training)",
        TORCH,
        ("L1-f32", "L2-bi-bf-hx-f64", "L2-bi-packed-hx-f32"),
        note="the graph follows its input (other batch sizes and lengths)",
    ),
    Transform(
        "export",
        "`torch.export.export` (strict or not) + `save`/`load`",
        TORCH,
        ("L1-f32", "L2-bi-bf-hx-f64"),
        not_tested={"PackedSequence": AS_TORCH},
        note="`Dim('batch')` over torch.nn.LSTM's range; the number of steps is "
        "fixed, as torch's op fixes it",
    ),
    Transform(
        "onnx_torchscript",
        "`torch.onnx.export(dynamo=False)` + ONNX Runtime",
        TORCH,
        ("L1-f32", "L2-bi-bf-hx-nobias-f32", "L2-bi-packed-hx-f32"),
        note="dynamic batch and time; float32 (ONNX Runtime's LSTM has no float64)",
    ),
    Transform(
        "onnx_dynamo",
        "`torch.onnx.export(dynamo=True)` + ONNX Runtime",
        ONNX,
        ("L1-f32", "L2-bi-bf-hx-nobias-f32"),
        not_tested={"PackedSequence": AS_TORCH},
        note="dynamic batch and time (torch.nn.LSTM's export fixes time); float32",
    ),
    Transform(
        "compile",
        "`torch.compile(fullgraph=True)`, training",
        OPERATOR,
        ("L1-f32", "L2-bi-bf-hx-f64"),
        not_tested={"PackedSequence": "graph break at `pack_padded_sequence`, as torch.nn.LSTM"},
        note="no graph break (torch.nn.LSTM breaks the graph)",
    ),
    Transform(
        "func",
        "`torch.func`: `grad`, `jacrev`, `vmap`, `jvp`",
        STEPS,
        ("L1-f32", "L2-bi-bf-hx-f64"),
        not_tested={"PackedSequence": "not tested"},
        note="`vmap` compared with a loop (torch.nn.LSTM has no batching rule)",
    ),
    Transform(
        "forward_ad",
        "forward-mode AD (`torch.autograd.forward_ad`)",
        STEPS,
        ("L1-f32", "L2-bi-bf-hx-f64"),
        not_tested={"PackedSequence": "not tested"},
    ),
    Transform(
        "double_backward",
        "double backward (`create_graph=True`)",
        KERNELS + "; the gradient's graph: " + STEPS,
        ("L1-f32", "L2-bi-bf-hx-f64", "L2-bi-packed-hx-f32"),
        note="gradgradcheck in float64",
    ),
    Transform(
        "autocast",
        '`torch.autocast("cpu", torch.bfloat16)`',
        TORCH,
        ("L1-f32", "L2-bi-bf-hx-nobias-f32", "L2-bi-packed-hx-f32"),
        note="output dtypes as torch.nn.LSTM's",
    ),
    Transform(
        "save_load",
        "`torch.save` of the model, `torch.load` with defaults",
        KERNELS,
        ("L1-f32", "L2-bi-bf-hx-f64", "L1-bi-packed-f16"),
        note="`weights_only=True`: the class is a safe global",
    ),
    Transform(
        "quantize_dynamic",
        "`quantize_dynamic(m, {sincos_rs.torch.LSTM})`",
        "torch's dynamic quantized LSTM",
        ("L1-f32", "L2-bi-bf-hx-f32"),
        not_tested={"PackedSequence": "not tested", "bias=False": AS_TORCH},
        note="`{torch.nn.LSTM}` alone leaves the module as it is (torch maps exact types)",
    ),
    Transform(
        "script",
        "`torch.jit.script`",
        "refused: the error names `torch.jit.trace`, `torch.export`, `torch.compile`",
        (),
        note="a scripted torch.nn.LSTM cannot be called in torch 2.15",
    ),
    Transform(
        "isinstance",
        "`isinstance(m, torch.nn.LSTM)`",
        "True: a subclass",
        (),
        note="found by tools that look for LSTMs",
    ),
    Transform(
        "ddp",
        "`DistributedDataParallel` (gloo)",
        KERNELS,
        ("L2-bi-bf-hx-f64", "L2-bi-packed-hx-f32"),
        note="1 process here; 2 in tests/test_torch_ddp.py",
    ),
)


# --- sincos_rs.torch.LSTMCell -------------------------------------------------------------


@dataclass(frozen=True)
class CellConfig:
    """One cell configuration and input: a chain of CELL_STEPS steps."""

    batched: bool  # (B, I) input; else unbatched (I,)
    state: bool  # an initial state hx
    bias: bool
    dtype: str


CELL_STEPS = 3

CELL_CONFIGS = {
    "B-f32": CellConfig(True, False, True, "float32"),
    "B-hx-f64": CellConfig(True, True, True, "float64"),
    "B-hx-f32": CellConfig(True, True, True, "float32"),
    "B-hx-nobias-f32": CellConfig(True, True, False, "float32"),
    "unbatched-hx-f64": CellConfig(False, True, True, "float64"),
    "unbatched-nobias-f32": CellConfig(False, False, False, "float32"),
    "B-hx-bf16": CellConfig(True, True, True, "bfloat16"),
    "unbatched-hx-f16": CellConfig(False, True, True, "float16"),
}

CELL_OPTIONS = {
    "unbatched": lambda c: not c.batched,
    "initial state": lambda c: c.state,
    "bias=False": lambda c: not c.bias,
}

TORCH_CELL = "torch's cell op, same weights"
STEPS_CELL = "Rust kernels; the gradient's graph: " + TORCH_CELL

CELL_TRANSFORMS = (
    Transform(
        "eager",
        "eager training, a chain of steps (outputs, every gradient)",
        KERNELS,
        ("B-f32", "B-hx-f64", "B-hx-nobias-f32", "unbatched-hx-f64"),
    ),
    Transform(
        "no_grad",
        "inference (`torch.no_grad`)",
        KERNELS,
        ("B-hx-f64", "unbatched-nobias-f32"),
        note="no autograd node",
    ),
    Transform(
        "half",
        "float16 / bfloat16",
        TORCH_CELL,
        ("B-hx-bf16", "unbatched-hx-f16"),
        note="identical to torch.nn.LSTMCell's",
    ),
    Transform(
        "empty_batch",
        "a batch of 0 rows",
        TORCH_CELL,
        ("B-f32", "B-hx-f64"),
        note="empty outputs, zero gradients",
    ),
    Transform(
        "trace",
        "`torch.jit.trace` (eval and training)",
        TORCH_CELL,
        ("B-f32", "B-hx-f64", "unbatched-hx-f64"),
        note="the graph follows the batch size",
    ),
    Transform(
        "script",
        "`torch.jit.script` + `save`/`load`",
        TORCH_CELL,
        ("B-hx-f64", "unbatched-nobias-f32"),
        note="TorchScript compiles torch.nn.LSTMCell's forward",
    ),
    Transform(
        "export",
        "`torch.export.export` (strict or not) + `save`/`load`",
        TORCH_CELL,
        ("B-f32", "B-hx-f64", "B-hx-nobias-f32"),
        note="`Dim('batch')` over torch.nn.LSTMCell's range",
    ),
    Transform(
        "onnx_torchscript",
        "`torch.onnx.export(dynamo=False)` + ONNX Runtime",
        TORCH_CELL,
        ("B-f32", "B-hx-nobias-f32"),
        note="dynamic batch",
    ),
    Transform(
        "onnx_dynamo",
        "`torch.onnx.export(dynamo=True)` + ONNX Runtime",
        TORCH_CELL,
        ("B-f32", "B-hx-nobias-f32"),
        note="dynamic batch",
    ),
    Transform(
        "compile",
        "`torch.compile(fullgraph=True)`, training",
        OPERATOR,
        ("B-f32", "B-hx-f64", "unbatched-hx-f64"),
        note="no graph break; one operator call per step",
    ),
    Transform(
        "func",
        "`torch.func`: `grad`, `jacrev`, `vmap`, `jvp`",
        STEPS,
        ("B-f32", "B-hx-f64"),
        not_tested={"unbatched": "not tested"},
        note="`vmap` compared with a loop (torch.nn.LSTMCell has no batching rule)",
    ),
    Transform(
        "forward_ad",
        "forward-mode AD (`torch.autograd.forward_ad`)",
        STEPS,
        ("B-f32", "B-hx-f64"),
        not_tested={"unbatched": "not tested"},
    ),
    Transform(
        "double_backward",
        "double backward (`create_graph=True`)",
        STEPS_CELL,
        ("B-f32", "B-hx-f64", "unbatched-hx-f64"),
        note="gradgradcheck in float64",
    ),
    Transform(
        "autocast",
        '`torch.autocast("cpu", torch.bfloat16)`',
        TORCH_CELL,
        ("B-f32", "B-hx-nobias-f32"),
        note="output dtypes as torch.nn.LSTMCell's",
    ),
    Transform(
        "save_load",
        "`torch.save` of the model, `torch.load` with defaults",
        KERNELS,
        ("B-f32", "B-hx-f64"),
        note="`weights_only=True`: the class is a safe global",
    ),
    Transform(
        "quantize_dynamic",
        "`quantize_dynamic(m, {sincos_rs.torch.LSTMCell})`",
        "torch's dynamic quantized LSTMCell",
        ("B-f32", "B-hx-f32"),
        not_tested={"unbatched": "not tested", "bias=False": "no (torch.nn.LSTMCell neither)"},
        note="`{torch.nn.LSTMCell}` alone leaves the cell as it is (torch maps exact types)",
    ),
    Transform(
        "isinstance",
        "`isinstance(m, torch.nn.LSTMCell)`",
        "True: a subclass",
        (),
    ),
    Transform(
        "ddp",
        "`DistributedDataParallel` (gloo)",
        KERNELS,
        ("B-hx-f64",),
        note="1 process",
    ),
)


def render_table(
    transforms: tuple[Transform, ...] = TRANSFORMS,
    configs_by_name: dict | None = None,
    options: dict | None = None,
) -> str:
    """A README compatibility table (markdown): the LSTM's by default."""
    configs_by_name = CONFIGS if configs_by_name is None else configs_by_name
    options = OPTIONS if options is None else options
    head = ["with", "runs on", *options, "dtypes", "notes"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for t in transforms:
        configs = [configs_by_name[c] for c in t.configs]
        cells = [t.name, t.path]
        for option, has in options.items():
            if not configs:
                cells.append("")
            elif any(has(c) for c in configs):
                cells.append("yes")
            else:
                cells.append(t.not_tested.get(option, "—"))
        dtypes = sorted({c.dtype for c in configs}, key=list(_DTYPE_ORDER).index)
        cells += [", ".join(dtypes), t.note]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def render_cell_table() -> str:
    """The README's compatibility table of the cell (markdown)."""
    return render_table(CELL_TRANSFORMS, CELL_CONFIGS, CELL_OPTIONS)


_DTYPE_ORDER = ("float32", "float64", "float16", "bfloat16")

if __name__ == "__main__":
    import sys

    print(render_cell_table() if "--cell" in sys.argv[1:] else render_table(), end="")
