#!/usr/bin/env python3
"""What ``sincos_rs.torch.LSTM`` costs around its kernels: one layer's
forward + backward (``out.sum().backward()``), timed as the minimum over
repeats (the floor of this machine's noise), in four versions:

- ``trivial op``: ``(x * 1.0).sum().backward()``, torch's own floor;
- ``empty Function``: an ``autograd.Function`` with the layer's inputs,
  outputs and saved tensors that computes nothing (outputs by
  ``np.empty``): the floor of any Python autograd node;
- ``module, no-op kernels``: ``sincos_rs.torch.LSTM`` with
  ``_core.lstm_forward`` and ``lstm_backward`` replaced by no-ops: the
  module's own glue (the outputs are left unwritten);
- ``module``: the real thing.

The parameters' gradients are reset before each call, as
``zero_grad(set_to_none=True)`` does in a training loop. Torch and the
kernels run on one thread.

Usage::

    python benches/torch_glue.py                     # the seed's layer, B50 T20 H10
    python benches/torch_glue.py --batch 64 --steps 100 --input 32 --hidden 128
"""

from __future__ import annotations

import argparse
import sys
import timeit

import numpy as np


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--batch", type=int, default=50)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--input", type=int, default=10)
    p.add_argument("--hidden", type=int, default=10)
    p.add_argument("--number", type=int, default=300, help="calls per repeat")
    p.add_argument("--repeat", type=int, default=15, help="repeats (the minimum is kept)")
    args = p.parse_args(argv)

    import torch

    import sincos_rs as sr
    import sincos_rs.torch as srt
    from sincos_rs import _core

    torch.set_num_threads(1)
    sr.set_num_threads(1)
    b, t, i, h = args.batch, args.steps, args.input, args.hidden
    model = srt.LSTM(i, h, batch_first=True)
    params = list(model.parameters())
    x = torch.randn(b, t, i, requires_grad=True)
    h0, c0 = torch.zeros(1, b, h), torch.zeros(1, b, h)

    class Empty(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x, w_ih, w_hh, b_ih, b_hh, h0, c0):
            ctx.set_materialize_grads(False)
            ctx.save_for_backward(x, w_ih, w_hh, h0, c0)
            out, state = np.empty((b, t, h), np.float32), (1, b, h)
            return tuple(
                torch.from_numpy(a)
                for a in (out, np.empty(state, np.float32), np.empty(state, np.float32))
            )

        @staticmethod
        def backward(ctx, d_out, dh_n, dc_n):
            ctx.saved_tensors  # noqa: B018 - as the module's backward does
            shapes = [(b, t, i), (4 * h, i), (4 * h, h), (4 * h,), (4 * h,)]
            grads = tuple(torch.from_numpy(np.empty(s, np.float32)) for s in shapes)
            return (*grads, None, None)

    def reset() -> None:
        for param in params:
            param.grad = None
        x.grad = None

    def trivial() -> None:
        reset()
        (x * 1.0).sum().backward()

    def empty() -> None:
        reset()
        Empty.apply(x, *params, h0, c0)[0].sum().backward()

    def module() -> None:
        reset()
        model(x, (h0, c0))[0].sum().backward()

    def best(f) -> float:
        f()
        return min(timeit.repeat(f, number=args.number, repeat=args.repeat)) / args.number

    kernels = (_core.lstm_forward, _core.lstm_backward)
    times = {"trivial op": best(trivial), "empty Function": best(empty)}
    try:
        _core.lstm_forward = _core.lstm_backward = lambda *a, **k: None
        times["module, no-op kernels"] = best(module)
    finally:
        _core.lstm_forward, _core.lstm_backward = kernels
    times["module"] = best(module)

    shape = f"B{b} T{t} I{i} H{h} float32, {sr.simd_level()}"
    print(f"{shape}: forward + backward, best of {args.repeat} x {args.number}")
    for name, seconds in times.items():
        print(f"  {name:24s} {seconds * 1e6:9.1f} µs")
    glue = times["module, no-op kernels"] - times["trivial op"]
    print(f"  module glue over the trivial op: {glue * 1e6:.1f} µs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
