"""sincos_rs: a fast LSTM (forward, backward through time, Adam) in Rust.

The public API::

    import sincos_rs as sr

    batches = sr.SinCosBatches(batch_size=50, time_steps=20)   # the seed's data
    model = sr.LSTMRegressor(seed=0)                           # the seed's network
    cost = model.train_step(*next(batches)[:2])                # one call into Rust

    layer = sr.LSTM(input_size=3, hidden_size=32)              # for your own code
    opt = sr.Adam(layer.parameters(), lr=1e-3)

``sincos_rs.reference`` is the NumPy reference every Rust result is checked
against; ``python -m sincos_rs.train`` runs the seed program, trained for real.

For frameworks that own every buffer (the PyTorch op), ``sincos_rs._core``
has the layer as two stateless functions, ``lstm_forward`` and
``lstm_backward``, with the activations in a caller's buffer of
``_core.lstm_saved_size(...)`` elements; ``sincos_rs._saved_size`` is the same
size as plain integer arithmetic, for symbolic shapes.
"""

from importlib.metadata import PackageNotFoundError, version

from ._core import get_num_threads, set_num_threads, simd_level
from ._saved import saved_size as _saved_size  # noqa: F401 (for the PyTorch op)
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
    "get_num_threads",
    "initial_lstm_params",
    "initial_params",
    "set_num_threads",
    "simd_level",
]
