"""``sincos_rs.torch.LSTMCell``: a ``torch.nn.LSTMCell`` whose step runs on
the Rust kernels where they cover the call, and on torch's own cell op with
the same weights where they do not (``paths.py``)."""

from __future__ import annotations

import torch
from torch import _VF, Tensor

from . import cell_ops, ops, paths, steps
from .views import WeightViews

__all__ = ["LSTMCell"]


class LSTMCell(torch.nn.LSTMCell):
    """``torch.nn.LSTMCell`` (a subclass of it) on sincos_rs's Rust kernels.

    The constructor, parameters (``weight_ih`` (4H, I), ``weight_hh``
    (4H, H), ``bias_ih``, ``bias_hh`` (4H,)), their initialisation (the same
    draws for the same seed), ``state_dict`` and ``forward(input, hx=None)
    -> (h_1, c_1)`` are ``torch.nn.LSTMCell``'s: input (B, I) or unbatched
    (I,), ``hx`` a pair (h_0, c_0) of (B, H) (or (H,)), zeros if None.

    float32 and float64 on the CPU run on the kernels: in eager mode through
    a plain ``torch.autograd.Function`` (``cell_ops.py``), one autograd node
    per step and none when nothing needs a gradient; under
    ``torch.compile`` through the custom operator
    ``torch.ops.sincos_rs.lstm_forward`` over one step. ``torch.func``
    transforms and forward-mode AD run one step of torch operations
    (``steps.py``: ``vmap`` works, which torch's cell op lacks). Everything
    else runs ``torch.nn.LSTMCell``'s own forward (``torch._VF.lstm_cell``)
    with the same weights (``paths.choose_cell``): ``torch.jit.trace``,
    ``torch.jit.script``, ``torch.export`` and ONNX export, autocast,
    float16/bfloat16, other devices, an empty batch. Double backward
    recomputes the step with torch's cell op.
    """

    def __init__(
        self, input_size: int, hidden_size: int, bias: bool = True, device=None, dtype=None
    ) -> None:
        super().__init__(input_size, hidden_size, bias, device, dtype)
        self._views = WeightViews()

    def __getstate__(self):
        """Pickled and copied without the kept NumPy views (views of this
        module's memory; a copy makes its own)."""
        state = super().__getstate__()
        state.pop("_views", None)
        return state

    def __setstate__(self, state) -> None:
        super().__setstate__(state)
        self._views = WeightViews()

    def forward(
        self, input: Tensor, hx: tuple[Tensor, Tensor] | None = None
    ) -> tuple[Tensor, Tensor]:
        if torch.jit.is_scripting():  # TorchScript compiles this branch only
            return self._torch_forward(input, hx)
        return self._eager_forward(input, hx)

    def _torch_forward(
        self, input: Tensor, hx: tuple[Tensor, Tensor] | None = None
    ) -> tuple[Tensor, Tensor]:
        """``torch.nn.LSTMCell.forward`` as torch 2.15 writes it, in a form
        TorchScript compiles (it cannot call the parent's method)."""
        if input.dim() not in (1, 2):
            raise ValueError(f"LSTMCell: Expected input to be 1D or 2D, got {input.dim()}D instead")
        if hx is not None:
            for idx, value in enumerate(hx):
                if value.dim() not in (1, 2):
                    raise ValueError(
                        f"LSTMCell: Expected hx[{idx}] to be 1D or 2D, got {value.dim()}D instead"
                    )
        is_batched = input.dim() == 2
        if not is_batched:
            input = input.unsqueeze(0)  # noqa: A001
        if hx is None:
            zeros = torch.zeros(
                input.size(0), self.hidden_size, dtype=input.dtype, device=input.device
            )
            hx = (zeros, zeros)
        else:
            hx = (hx[0].unsqueeze(0), hx[1].unsqueeze(0)) if not is_batched else hx
        ret = _VF.lstm_cell(input, hx, self.weight_ih, self.weight_hh, self.bias_ih, self.bias_hh)
        if not is_batched:
            ret = (ret[0].squeeze(0), ret[1].squeeze(0))
        return ret

    @torch.jit.unused
    def _eager_forward(self, input: Tensor, hx) -> tuple[Tensor, Tensor]:  # noqa: A002
        path = paths.choose_cell(input)
        if path != paths.KERNELS:
            return self._other_path(path, input, hx)
        # The hot path of a user's step loop: the kernels check every
        # argument, and only a refused call looks for what was wrong.
        params = self._parameters
        try:
            weights = params["weight_ih"], params["weight_hh"], params["bias_ih"], params["bias_hh"]
        except KeyError:  # a parametrized weight (torch.nn.utils.parametrize)
            weights = self.weight_ih, self.weight_hh, self.bias_ih, self.bias_hh
        try:
            batched = input.dim() == 2
            x = input if batched else input.unsqueeze(0)
            if hx is None:
                h0 = c0 = None
            else:
                h0, c0 = hx
                if not batched:
                    h0, c0 = h0.unsqueeze(0), c0.unsqueeze(0)
            h, c = cell_ops.step(x, h0, c0, weights, self._views)
        except (TypeError, ValueError, RuntimeError) as err:
            found = self._input_error(input, hx, weights[0])
            if found is None:
                raise
            raise found from err
        return (h, c) if batched else (h.squeeze(0), c.squeeze(0))

    @torch.jit.unused
    def _other_path(self, path: str, input: Tensor, hx):  # noqa: A002
        """Every path but the eager kernels: torch's cell op, or the custom
        operator while ``torch.compile`` traces."""
        if path == paths.TORCH:
            if not input.is_floating_point():
                raise TypeError(_input_dtype_message(input.dtype, self.weight_ih.dtype))
            return super().forward(input, hx)
        found = self._input_error(input, hx, self.weight_ih)
        if found is not None:
            raise found
        batched = input.dim() == 2
        x = input if batched else input.unsqueeze(0)
        h0 = c0 = None
        if hx is not None:
            h0, c0 = hx if batched else (hx[0].unsqueeze(0), hx[1].unsqueeze(0))
        weights = self.weight_ih, self.weight_hh, self.bias_ih, self.bias_hh
        step = steps.lstm if path == paths.STEPS else ops.lstm_operator
        _, h, c = step(x.unsqueeze(1), *weights, h0, c0, None, False, _store(x, h0, c0, weights))
        return (h, c) if batched else (h.squeeze(0), c.squeeze(0))

    @torch.jit.unused
    def _input_error(self, input: Tensor, hx, weight: Tensor) -> Exception | None:  # noqa: A002
        """What is wrong with a call, as torch.nn.LSTMCell would say it (and
        its exception class), naming the argument and what was expected; None
        if the arguments are right (the kernels' own error then stands)."""
        if input.dim() not in (1, 2):
            return ValueError(_dims_message("input", input.dim()))
        if not input.is_floating_point():
            return TypeError(_input_dtype_message(input.dtype, weight.dtype))
        if input.dtype != weight.dtype:
            return RuntimeError(
                f"LSTMCell: input has dtype {input.dtype} and the weights {weight.dtype}: "
                f"convert the input with input.to({weight.dtype}), or the model with "
                f"model.to({input.dtype})"
            )
        if not weight.is_cpu:
            return RuntimeError(
                f"LSTMCell: the input is on the CPU and the parameters on {weight.device}; move "
                "the input there (torch's cell runs it) or the model to the CPU (the Rust "
                "kernels run it)"
            )
        if input.size(-1) != self.input_size:
            return RuntimeError(
                f"LSTMCell: input has inconsistent input_size: got {input.size(-1)} "
                f"expected {self.input_size}"
            )
        if hx is None:
            return None
        if not isinstance(hx, (tuple, list)) or len(hx) != 2:
            got = f"{len(hx)} values" if isinstance(hx, (tuple, list)) else type(hx).__name__
            return RuntimeError(f"LSTMCell: hx must be a pair (h_0, c_0) of tensors, got {got}")
        batch = input.size(0) if input.dim() == 2 else None
        for i, t in enumerate(hx):
            if not isinstance(t, Tensor):
                return TypeError(f"LSTMCell: hx[{i}] must be a tensor, got {type(t).__name__}")
            if t.dim() not in (1, 2):
                return ValueError(_dims_message(f"hx[{i}]", t.dim()))
            if t.dim() != input.dim():
                return RuntimeError(
                    f"LSTMCell: hx[{i}] is {t.dim()}D for a {input.dim()}D input; expected "
                    f"{'(batch, hidden_size)' if batch is not None else '(hidden_size,)'}"
                )
            if t.dtype != input.dtype or t.device != input.device:
                return RuntimeError(
                    f"LSTMCell: hx[{i}] has dtype {t.dtype} on {t.device}; expected "
                    f"{input.dtype} on {input.device} (the input's)"
                )
            if batch is not None and t.size(0) != batch:
                return RuntimeError(
                    f"LSTMCell: Input batch size {batch} doesn't match hx[{i}] batch size "
                    f"{t.size(0)}"
                )
            if t.size(-1) != self.hidden_size:
                return RuntimeError(
                    f"LSTMCell: hx[{i}] has inconsistent hidden_size: got {t.size(-1)}, "
                    f"expected {self.hidden_size}"
                )
        return None


def _store(x: Tensor, h0, c0, weights) -> bool:
    """Whether the step keeps what a backward needs: grad mode on and an
    input that needs a gradient."""
    if not torch.is_grad_enabled():
        return False
    weight_ih, weight_hh, bias_ih, bias_hh = weights
    return (
        weight_ih.requires_grad
        or weight_hh.requires_grad
        or x.requires_grad
        or (h0 is not None and h0.requires_grad)
        or (c0 is not None and c0.requires_grad)
        or (bias_ih is not None and (bias_ih.requires_grad or bias_hh.requires_grad))
    )


def _dims_message(name: str, dims: int) -> str:
    return f"LSTMCell: Expected {name} to be 1D or 2D, got {dims}D instead"


def _input_dtype_message(dtype: torch.dtype, weight_dtype: torch.dtype) -> str:
    return (
        f"sincos_rs.torch.LSTMCell: input has dtype {dtype}; expected a floating-point tensor "
        f"of the model's dtype {weight_dtype} (the cell runs float32 and float64 on the Rust "
        f"kernels, float16 and bfloat16 on torch's cell): convert it with "
        f"input.to({weight_dtype})"
    )
