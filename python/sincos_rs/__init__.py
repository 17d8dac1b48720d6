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

# The names below are imported on first use (module __getattr__, PEP 562),
# not here: ``python -m sincos_rs.train`` imports this package before its
# own code runs, and must be able to turn Ctrl-C into exit status 130 before
# NumPy and the kernels load (about 0.2 s). Using any name imports them all,
# exactly as an eager import did.
from __future__ import annotations

import sys as _sys

if _sys.argv[:1] == ["-m"]:  # Python is locating `-m sincos_rs.<module>` to run it
    from ._early_sigint import install

    install()
    del install

TYPE_CHECKING = False
if TYPE_CHECKING:
    from types import ModuleType

    from ._api import (
        LSTM,
        PARAM_NAMES,
        Adam,
        LSTMRegressor,
        ReferenceRegressor,
        SinCosBatches,
        get_num_threads,
        initial_lstm_params,
        initial_params,
        set_num_threads,
        simd_level,
    )
    from ._api import (
        __version__ as __version__,
    )
    from ._api import (
        _saved_size as _saved_size,
    )

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


#: Submodules an eager ``import sincos_rs`` used to import (attributes of
#: the package from the start): imported on first use, as the names are.
_SUBMODULES = frozenset(
    ["_atomic", "_core", "_fork", "_npz", "_saved", "data", "init", "layers", "reference",
     "regressor"]
)  # fmt: skip


def __getattr__(name: str) -> object:
    if name in _SUBMODULES:  # imported alone: a sibling may ask for it while _api loads
        __import__(f"{__name__}.{name}")
        return _sys.modules[f"{__name__}.{name}"]
    if name in __all__ or name in ("__version__", "_saved_size"):
        api = _api_module()
        if api is not None:
            globals().update({key: getattr(api, key) for key in api.__all__})
            return globals()[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _api_module() -> ModuleType | None:
    """``sincos_rs._api``, imported if need be (waiting while another thread
    imports it: the import system's locks); None while this thread is
    importing it."""
    name = __name__ + "._api"
    __import__(name)
    api = _sys.modules[name]
    if getattr(getattr(api, "__spec__", None), "_initializing", False):
        return None
    return api


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__) | {"__version__"})
