"""The package's public names, imported on first use of any of them
(``sincos_rs/__init__.py`` explains why)."""

from importlib.metadata import PackageNotFoundError, version

from ._core import get_num_threads, set_num_threads, simd_level
from ._saved import saved_size as _saved_size
from .data import SinCosBatches
from .init import PARAM_NAMES, initial_lstm_params, initial_params
from .layers import LSTM, Adam
from .reference import ReferenceRegressor
from .regressor import LSTMRegressor

try:
    __version__ = version("sincos_rs")
except PackageNotFoundError:  # running from a source tree
    __version__ = "0+unknown"

__all__ = [
    "LSTM",
    "PARAM_NAMES",
    "Adam",
    "LSTMRegressor",
    "ReferenceRegressor",
    "SinCosBatches",
    "__version__",
    "_saved_size",
    "get_num_threads",
    "initial_lstm_params",
    "initial_params",
    "set_num_threads",
    "simd_level",
]
