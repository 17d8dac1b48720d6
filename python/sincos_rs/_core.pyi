"""Stubs for the compiled module ``sincos_rs._core`` (rust/python.rs)."""

from typing import Any, final

import numpy as np
from typing_extensions import Self

__all__ = [
    "SeedNetworkCore",
    "AdamCore",
    "check_adam_config",
    "lstm_saved_size",
    "lstm_forward",
    "lstm_backward",
    "lstm_step",
    "cell_saved_size",
    "cell_forward",
    "cell_backward",
    "chain_weight_grads",
    "set_num_threads",
    "get_num_threads",
    "simd_level",
    "PARAM_NAMES",
    "NUM_THREADS_ENV_VAR",
    "SIMD_ENV_VAR",
    "MAX_THREADS",
    "_set_kernel",
    "_forced_kernel",
    "_set_poison",
    "_set_openmp",
    "_openmp_active",
]

PARAM_NAMES: list[str]
NUM_THREADS_ENV_VAR: str
SIMD_ENV_VAR: str
MAX_THREADS: int

@final
class SeedNetworkCore:
    def __new__(
        cls,
        input_size: int,
        hidden_size: int,
        output_size: int,
        params: dict[str, np.ndarray],
        *,
        dtype: str,
        lr: float,
        beta1: float,
        beta2: float,
        eps: float,
        eps_style: str,
    ) -> Self: ...
    def train_step(self, seq: np.ndarray, res: np.ndarray) -> float: ...
    def loss_and_grads(
        self, seq: np.ndarray, res: np.ndarray
    ) -> tuple[float, dict[str, np.ndarray]]: ...
    def predict(self, seq: np.ndarray) -> np.ndarray: ...
    def predict_step(self, x_t: np.ndarray) -> np.ndarray: ...
    def last_prediction(self) -> np.ndarray | None: ...
    def get_params(self) -> dict[str, np.ndarray]: ...
    def set_params(self, params: dict[str, np.ndarray]) -> None: ...
    def get_adam(self) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], int]: ...
    def set_adam(self, m: dict[str, np.ndarray], v: dict[str, np.ndarray], step: int) -> None: ...
    def get_state(self) -> tuple[np.ndarray, np.ndarray] | None: ...
    def set_state(self, state: tuple[Any, Any] | None) -> None: ...
    @property
    def step(self) -> int: ...

def lstm_saved_size(batch: int, steps: int, input_size: int, hidden_size: int, dtype: str) -> int:
    """Elements of ``dtype`` ("float32" or "float64") the ``saved`` buffer of
    ``lstm_forward`` needs for x (batch, steps, input_size) and hidden_size
    units. Any aligned 1-D array of that many elements works (the kernels
    align inside it). Equals ``sincos_rs._saved_size(batch, steps,
    input_size, hidden_size, itemsize)``, the same sum in plain Python."""

def lstm_forward(
    x: np.ndarray,
    weight_ih: np.ndarray,
    weight_hh: np.ndarray,
    bias: np.ndarray,
    h0: np.ndarray | None,
    c0: np.ndarray | None,
    out: np.ndarray,
    h_n: np.ndarray,
    c_n: np.ndarray,
    saved: np.ndarray | None,
    *,
    lengths: np.ndarray | None = None,
    reverse: bool = False,
) -> None:
    """Stateless LSTM forward; every output preallocated by the caller.

    x (B, T, I) float32 or float64 (every array the same dtype, C-contiguous,
    aligned); weight_ih (4H, I), weight_hh (4H, H), bias (4H,), gates
    (i, f, g, o); h0, c0 (B, H) or None (zeros). Writes out (B, T, H),
    h_n, c_n (B, H) and, unless None, ``saved``, a 1-D array of
    ``lstm_saved_size(B, T, I, H, dtype)`` elements that ``lstm_backward``
    reads (None: inference, nothing kept for backward). Nothing is kept
    between calls; calls may run on several threads at once; the GIL is
    released. Every argument is checked (shape, dtype, contiguity,
    writability, finite inputs, outputs sharing memory with any other
    argument) and a bad one raises TypeError/ValueError naming it, before
    anything is written.

    lengths: None, or a 1-D int64 array of B values in 1..T; row b then
    stops after lengths[b] steps (out is zero past it, h_n, c_n the state
    after its last real step). reverse: run each row from its last real
    step to its first.
    """

def lstm_backward(
    x: np.ndarray,
    weight_ih: np.ndarray,
    weight_hh: np.ndarray,
    bias: np.ndarray,
    h0: np.ndarray | None,
    c0: np.ndarray | None,
    saved: np.ndarray,
    d_out: np.ndarray,
    dh_n: np.ndarray | None,
    dc_n: np.ndarray | None,
    dx: np.ndarray | None,
    dh0: np.ndarray,
    dc0: np.ndarray,
    grad_weight_ih: np.ndarray,
    grad_weight_hh: np.ndarray,
    grad_bias: np.ndarray,
    *,
    lengths: np.ndarray | None = None,
    reverse: bool = False,
) -> None:
    """Stateless backward through time over the ``lstm_forward`` call that
    wrote ``saved`` (pass it the same x, weights, h0, c0, lengths and
    reverse). d_out (B, T, H); dh_n, dc_n (B, H) or None (zeros). Overwrites
    dh0, dc0 (B, H), the three weight gradients (shapes of the weights) and
    dx (B, T, I) unless None (then not formed). Checks as ``lstm_forward``.
    """

def lstm_step(
    x_t: np.ndarray,
    weight_ih: np.ndarray,
    weight_hh: np.ndarray,
    bias: np.ndarray,
    h: np.ndarray | None,
    c: np.ndarray | None,
    h_out: np.ndarray,
    c_out: np.ndarray,
) -> None:
    """One time step, keeping nothing: x_t (B, I) from (h, c), each (B, H),
    or zeros (None), into h_out and c_out (B, H), which may be h and c
    themselves (updated in place). The same bits as ``lstm_forward`` over
    the step. Checks as ``lstm_forward``; runs with the GIL held (a step is
    shorter than releasing it)."""

def cell_saved_size(batch: int, input_size: int, hidden_size: int, dtype: str) -> int:
    """Elements of ``dtype`` the activations ``cell_forward`` saves for one
    step of ``batch`` rows."""

def cell_forward(
    x: np.ndarray,
    weight_ih: np.ndarray,
    weight_hh: np.ndarray,
    bias: np.ndarray,
    h0: np.ndarray | None,
    c0: np.ndarray | None,
    h: np.ndarray,
    c: np.ndarray,
    saved: np.ndarray | None,
) -> None:
    """One step for a chain of one-step calls (``rust/lstm/chain.rs``): x
    (B, I) from (h0, c0), each (B, H), or zeros, into h and c (B, H), and
    the activations ``cell_backward`` reads into ``saved`` (1-D, of
    ``cell_saved_size`` elements) unless it is None; the same bits either
    way. Checks as ``lstm_forward``."""

def cell_backward(
    weight_ih: np.ndarray,
    weight_hh: np.ndarray,
    saved: np.ndarray,
    c0: np.ndarray | None,
    d_out: np.ndarray | None,
    dh_n: np.ndarray | None,
    dc_n: np.ndarray | None,
    dz: np.ndarray,
    dx: np.ndarray | None,
    dh0: np.ndarray,
    dc0: np.ndarray,
) -> None:
    """The backward of the ``cell_forward`` step that wrote ``saved`` from
    ``c0`` (the same array, or None: zeros), without weight gradients:
    from the gradients by h (``d_out`` and ``dh_n``, which add up) and c
    (``dc_n``), each (B, H) or None (zero),
    writes the gate gradients dz (B, 4H) for ``chain_weight_grads``, dx
    (B, I) unless None, dh0 and dc0 (B, H)."""

def chain_weight_grads(
    dz: np.ndarray | list[np.ndarray],
    x: np.ndarray | list[np.ndarray],
    h0: np.ndarray | list[np.ndarray | None] | None,
    grad_weight_ih: np.ndarray,
    grad_weight_hh: np.ndarray,
    grad_bias: np.ndarray,
) -> None:
    """The weight gradients (overwritten) of a chain of ``cell_backward``
    steps from their rows: dz (R, 4H), x (R, I) and h0 (R, H) or None
    (zero), each either one array of every step's rows stacked in one order,
    or a list with one array per step (the same length for all three; h0's
    items may be None). ``dW_ih = dzᵀ·x``, ``dW_hh = dzᵀ·h0``, ``db = Σ
    dz``, the rows in order, list item after item: the same bits however
    the rows are split, on any thread count."""

@final
class AdamCore:
    def __new__(cls) -> Self: ...
    @property
    def step_count(self) -> int: ...
    def set_step_count(self, step: int) -> None: ...
    def step(
        self,
        names: list[str],
        params: list[np.ndarray],
        grads: list[np.ndarray],
        ms: list[np.ndarray],
        vs: list[np.ndarray],
        *,
        lr: float,
        beta1: float,
        beta2: float,
        eps: float,
        eps_style: str,
    ) -> None: ...

def check_adam_config(
    *, lr: float, beta1: float, beta2: float, eps: float, eps_style: str, dtypes: list[str]
) -> None: ...
def set_num_threads(n: int) -> None: ...
def get_num_threads() -> int: ...
def simd_level() -> str: ...

# Testing only (tests/test_fuzz.py): force a kernel, poison scratch with NaN.
def _set_kernel(name: str) -> None: ...
def _forced_kernel() -> str: ...
def _set_poison(on: bool) -> None: ...
def _set_openmp(parallel: int, thread_num: int, max_threads: int) -> None: ...
def _openmp_active() -> bool: ...
