"""What ``import sincos_rs.torch`` registers with torch, so that its modules
work where torch looks modules up by name or by exact type:

- ``torch.load``: the module classes are safe globals, so a whole model
  saved with ``torch.save`` loads with the default ``weights_only=True``.
- ``torch.ao.quantization.quantize_dynamic``: it maps modules by exact type,
  so ``{torch.nn.LSTM}`` does not select a subclass; naming
  ``sincos_rs.torch.LSTM`` (``LSTMCell``) in its set gives torch's
  dynamically quantized LSTM (LSTMCell: int8 weights, torch's kernels)
  built from the same weights.
- ``torch.compile``: dynamo graph-breaks at every instance of
  ``torch.nn.LSTM``, subclasses included, unless ``allow_rnn`` is set
  (``torch/_dynamo/variables/builder.py``, ``VariableBuilder.wrap_module``).
  Our module traces to custom operators, not to torch's RNN, so the builder
  is wrapped to set ``allow_rnn`` while it wraps one of ours only; for
  ``torch.nn.LSTM`` and everything else it is unchanged. The builder is
  heavy to import, so it is wrapped when torch imports it, not before.
"""

from __future__ import annotations

import importlib.abc
import importlib.util
import sys

import torch

_BUILDER = "torch._dynamo.variables.builder"


def register(modules: tuple[type, ...]) -> None:
    torch.serialization.add_safe_globals(list(modules))
    _register_dynamic_quantization(modules)
    if _BUILDER in sys.modules:
        _trace_through_in_dynamo(sys.modules[_BUILDER], modules)
    else:
        then = lambda builder: _trace_through_in_dynamo(builder, modules)  # noqa: E731
        sys.meta_path.insert(0, _WhenImported(_BUILDER, then))


# --- quantize_dynamic ----------------------------------------------------------------------


class _DynamicQuantizedLSTM:
    """The ``quantize_dynamic`` mapping's target for our LSTM: torch's
    dynamically quantized LSTM, from a ``torch.nn.LSTM`` holding the same
    weights (torch's ``from_float`` takes exactly ``torch.nn.LSTM``)."""

    @staticmethod
    def from_float(mod, use_precomputed_fake_quant: bool = False):
        from torch.ao.nn.quantized.dynamic import LSTM as QuantizedLSTM

        plain = torch.nn.LSTM(
            mod.input_size,
            mod.hidden_size,
            mod.num_layers,
            mod.bias,
            mod.batch_first,
            mod.dropout,
            mod.bidirectional,
            mod.proj_size,
            dtype=mod.weight_ih_l0.dtype,
        )
        plain.load_state_dict(mod.state_dict())
        plain.qconfig = mod.qconfig
        return QuantizedLSTM.from_float(plain, use_precomputed_fake_quant)


class _DynamicQuantizedLSTMCell:
    """The same for our cell: torch's dynamically quantized LSTMCell, from a
    ``torch.nn.LSTMCell`` holding the same weights."""

    @staticmethod
    def from_float(mod, use_precomputed_fake_quant: bool = False):
        from torch.ao.nn.quantized.dynamic import LSTMCell as QuantizedLSTMCell

        plain = torch.nn.LSTMCell(
            mod.input_size, mod.hidden_size, mod.bias, dtype=mod.weight_ih.dtype
        )
        plain.load_state_dict(mod.state_dict())
        plain.qconfig = mod.qconfig
        return QuantizedLSTMCell.from_float(plain, use_precomputed_fake_quant)


def _register_dynamic_quantization(modules: tuple[type, ...]) -> None:
    from torch.ao.quantization.quantization_mappings import (
        get_default_dynamic_quant_module_mappings,
    )

    mappings = get_default_dynamic_quant_module_mappings()
    for module in modules:
        if issubclass(module, torch.nn.LSTM):
            mappings[module] = _DynamicQuantizedLSTM
        elif issubclass(module, torch.nn.LSTMCell):
            mappings[module] = _DynamicQuantizedLSTMCell


# --- torch.compile -------------------------------------------------------------------------


def _trace_through_in_dynamo(builder_module, modules: tuple[type, ...]) -> None:
    from torch._dynamo import config

    builder = builder_module.VariableBuilder
    wrap_module = builder.wrap_module
    if getattr(wrap_module, "_sincos_rs_modules", None) is not None:
        return

    def wrap_module_tracing_ours(self, value):
        if isinstance(value, modules) and not config.allow_rnn:
            with config.patch(allow_rnn=True):
                return wrap_module(self, value)
        return wrap_module(self, value)

    wrap_module_tracing_ours._sincos_rs_modules = modules
    wrap_module_tracing_ours.__wrapped__ = wrap_module
    builder.wrap_module = wrap_module_tracing_ours


class _WhenImported(importlib.abc.MetaPathFinder):
    """Calls ``then(module)`` right after ``name`` is imported, then leaves
    ``sys.meta_path``."""

    def __init__(self, name: str, then) -> None:
        self.name, self.then = name, then

    def find_spec(self, fullname, path=None, target=None):
        if fullname != self.name:
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(fullname)
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        exec_module, then = spec.loader.exec_module, self.then

        def exec_module_then(module) -> None:
            exec_module(module)
            then(module)

        spec.loader.exec_module = exec_module_then
        return spec
