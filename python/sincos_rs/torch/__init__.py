"""sincos_rs for PyTorch: ``sincos_rs.torch.LSTM`` and ``LSTMCell``, a
``torch.nn.LSTM`` and a ``torch.nn.LSTMCell`` that run on the Rust kernels
where they cover the call (``paths.py``).

Needs PyTorch, which ``import sincos_rs`` never imports: install it with
``pip install "sincos_rs[torch]"`` (from a source tree: ``pip install ".[torch]"``).

Example::

    from sincos_rs.torch import LSTM       # instead of torch.nn.LSTM
    lstm = LSTM(input_size=32, hidden_size=128, num_layers=2, batch_first=True)
    out, (h_n, c_n) = lstm(torch.randn(64, 100, 32))

    from sincos_rs.torch import LSTMCell   # instead of torch.nn.LSTMCell
    cell = LSTMCell(input_size=32, hidden_size=128)
    h, c = cell(torch.randn(64, 32))       # one step; pass (h, c) to the next
"""

try:
    import torch  # noqa: F401 - fail here, with the install hint, if it is missing
except ImportError as err:
    raise ImportError(
        "sincos_rs.torch needs PyTorch, which is not installed: "
        'pip install "sincos_rs[torch]" (or, from a source tree, pip install ".[torch]")'
    ) from err

from . import registry, threads
from .cell import LSTMCell
from .lstm import LSTM

registry.register((LSTM, LSTMCell))
# The kernels' parallel passes run on torch's OpenMP team (threads.py).
threads.use_torch_openmp()

__all__ = ["LSTM", "LSTMCell"]
