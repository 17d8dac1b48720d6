"""Stubs for the compiled module ``sincos_rs._core`` (rust/python.rs)."""

from typing import Any, final

import numpy as np
from typing_extensions import Self

__all__ = [
    "SeedNetworkCore",
    "LstmCore",
    "AdamCore",
    "check_adam_config",
    "set_num_threads",
    "get_num_threads",
    "simd_level",
    "PARAM_NAMES",
    "NUM_THREADS_ENV_VAR",
    "SIMD_ENV_VAR",
    "MAX_THREADS",
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
    def last_prediction(self) -> np.ndarray | None: ...
    def get_params(self) -> dict[str, np.ndarray]: ...
    def set_params(self, params: dict[str, np.ndarray]) -> None: ...
    def get_adam(self) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], int]: ...
    def set_adam(self, m: dict[str, np.ndarray], v: dict[str, np.ndarray], step: int) -> None: ...
    def get_state(self) -> tuple[np.ndarray, np.ndarray] | None: ...
    def set_state(self, state: tuple[Any, Any] | None) -> None: ...
    @property
    def step(self) -> int: ...

@final
class LstmCore:
    def __new__(cls, input_size: int, hidden_size: int, dtype: str) -> Self: ...
    def forward(
        self,
        x: np.ndarray,
        weight_ih: np.ndarray,
        weight_hh: np.ndarray,
        bias: np.ndarray,
        state: tuple[np.ndarray, np.ndarray] | None = None,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]: ...
    def backward(
        self,
        d_out: np.ndarray,
        weight_ih: np.ndarray,
        weight_hh: np.ndarray,
        bias: np.ndarray,
        grad_weight_ih: np.ndarray,
        grad_weight_hh: np.ndarray,
        grad_bias: np.ndarray,
        d_state: tuple[np.ndarray, np.ndarray] | None = None,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]: ...

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
