"""Figures of a training run (matplotlib, imported only when a figure is made).

One figure, two panels (three with a stream):

1. as the seed tutorial's live plot, the true ``cos(x)`` (solid red) and the
   prediction (dashed blue) for row 0 of each batch, laid end to end along x:
   row 0 of batch k + 1 continues row 0 of batch k, so reading from left to
   right one sees the fit improve iteration by iteration;
2. the cost of each iteration, on a log scale;
3. with ``--stream N``, cos(x) against the prediction streamed one step at
   a time through ``predict_step`` over x the model never trained on.

``save_figure`` draws on a bare ``matplotlib.figure.Figure`` and writes a PNG
with the Agg renderer: no pyplot, no GUI backend, no display needed.
``LivePlot`` (``--show``) uses pyplot's interactive mode, as the tutorial's
``plt.ion()``, and needs a display (``has_display``).

``trace`` arguments are ``sincos_rs.train.PredictionTrace``-like: ``xs``,
``true``, ``pred`` arrays of shape (batches kept, T) and ``stride`` (1 when
every batch was kept).
"""

from __future__ import annotations

import io
import math
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from ._atomic import atomic_write

__all__ = ["DPI", "FIGSIZE", "LivePlot", "draw", "has_display", "save_figure", "write_atomic"]

#: Figure size in inches and resolution: a 1000 x 600 PNG.
FIGSIZE = (10.0, 6.0)
DPI = 100


class Trace(Protocol):
    xs: np.ndarray
    true: np.ndarray
    pred: np.ndarray
    stride: int


class Stream(Protocol):
    xs: np.ndarray
    true: np.ndarray
    pred: np.ndarray


def has_display() -> bool:
    """Whether a window can be opened: on Linux and other X11/Wayland systems,
    DISPLAY or WAYLAND_DISPLAY must be set; macOS and Windows always have one."""
    if sys.platform in ("darwin", "win32", "cygwin"):
        return True
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def _end_to_end(rows: np.ndarray, stride: int) -> np.ndarray:
    """Rows (K, T) laid end to end, (K*T,); with NaN between rows when
    batches were skipped (stride > 1), so that gaps are not bridged."""
    if stride > 1:
        rows = np.concatenate([rows, np.full((len(rows), 1), np.nan)], axis=1)
    return rows.ravel()


def draw(
    fig: Any,
    trace: Trace,
    costs: Sequence[float],
    *,
    title: str = "",
    resumed_at: int = 0,
    stream: Stream | None = None,
) -> None:
    """Draw the panels on ``fig`` (a matplotlib Figure), replacing what
    was there.

    Args:
        trace: row 0 of each batch of this run (see the module docs).
        costs: the cost of every iteration, from the first (resumed ones included).
        resumed_at: iterations done before this run (0 for a fresh run); the
            first batch of ``trace`` is iteration ``resumed_at + 1``.
        stream: x, cos(x) and the streamed prediction, (N,) each, or None.
    """
    fig.clear()
    if stream is None:
        top, bottom = fig.subplots(2, 1, gridspec_kw={"height_ratios": [3, 2]})
    else:
        top, bottom, streamed = fig.subplots(3, 1, gridspec_kw={"height_ratios": [3, 2, 3]})
        streamed.plot(stream.xs, stream.true, "r-", lw=1.0, label="cos(x), the target")
        streamed.plot(stream.xs, stream.pred, "g--", lw=1.0, label="streamed prediction")
        streamed.set_xlabel("x, never trained on: sin(x) fed one step at a time (predict_step)")
        streamed.set_ylabel("cos(x)")
        streamed.legend(loc="upper right", ncol=2, fontsize="small", framealpha=0.9)
        if len(stream.xs):
            streamed.set_xlim(stream.xs[0], stream.xs[-1])

    xs = _end_to_end(trace.xs, trace.stride)
    top.plot(xs, _end_to_end(trace.true, trace.stride), "r-", lw=1.0, label="cos(x), the target")
    top.plot(xs, _end_to_end(trace.pred, trace.stride), "b--", lw=1.0, label="prediction")
    top.set_xlabel("x: row 0 of each batch, laid end to end (first iteration left, last right)")
    top.set_ylabel("cos(x)")
    top.legend(loc="upper right", ncol=2, fontsize="small", framealpha=0.9)
    if len(trace.xs):
        top.set_xlim(trace.xs[0, 0], trace.xs[-1, -1])
        values = np.concatenate([trace.true.ravel(), trace.pred.ravel()])
        low, high = float(np.nanmin(values)), float(np.nanmax(values))
        if math.isfinite(low) and math.isfinite(high) and high > low:
            span = high - low  # headroom above the curves for the legend
            top.set_ylim(low - 0.05 * span, high + 0.3 * span)
        # x grows by T / (10 pi) per batch: label the top edge in iterations.
        steps = trace.xs.shape[1]
        x0 = trace.xs[0, 0]
        per_iteration = steps / (10 * math.pi)

        def to_iteration(x: Any) -> Any:
            return resumed_at + (np.asarray(x) - x0) / per_iteration

        def to_x(iteration: Any) -> Any:
            return x0 + (np.asarray(iteration) - resumed_at) * per_iteration

        top.secondary_xaxis("top", functions=(to_iteration, to_x)).set_xlabel(
            "iteration", fontsize="small"
        )

    iterations = np.arange(1, len(costs) + 1)
    bottom.semilogy(iterations, np.asarray(costs, dtype=float), color="k", lw=1.0)
    if resumed_at:
        bottom.axvline(resumed_at + 0.5, color="gray", ls=":", lw=1.0, label="resumed")
        bottom.legend(loc="upper right", fontsize="small")
    bottom.set_xlabel("iteration")
    bottom.set_ylabel("cost (log scale)")
    bottom.set_xlim(0.5, max(len(costs), 1) + 0.5)
    bottom.grid(True, which="major", alpha=0.3)

    if title:
        fig.suptitle(title, fontsize="medium")
    fig.tight_layout()


def _png_bytes(fig: Any) -> bytes:
    """``fig`` as a PNG with a 256-colour palette: a line plot has few
    colours, and the palette makes the file about 2.5 times smaller than
    matplotlib's RGBA PNG (~70 KB instead of ~190 KB) with no visible change."""
    from PIL import Image

    raw = io.BytesIO()
    fig.savefig(raw, format="png", dpi=DPI, facecolor="white")
    raw.seek(0)
    with Image.open(raw) as image:
        palette = image.convert("RGB").quantize(colors=256)
    out = io.BytesIO()
    palette.save(out, format="png", optimize=True)
    return out.getvalue()


def write_atomic(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (see ``sincos_rs._atomic``)."""
    return atomic_write(path, lambda f: f.write(data))


def save_figure(
    path: str | os.PathLike[str],
    trace: Trace,
    costs: Sequence[float],
    *,
    title: str = "",
    resumed_at: int = 0,
    stream: Stream | None = None,
) -> Path:
    """Draw the figure (see ``draw``) and write it as a PNG to ``path``,
    atomically, with the Agg renderer (no display needed). Returns the path."""
    from matplotlib.figure import Figure

    size = FIGSIZE if stream is None else (FIGSIZE[0], FIGSIZE[1] * 1.5)
    fig = Figure(figsize=size, dpi=DPI)
    draw(fig, trace, costs, title=title, resumed_at=resumed_at, stream=stream)
    return write_atomic(path, _png_bytes(fig))


#: matplotlib backends that cannot open a window.
_NON_INTERACTIVE = frozenset({"agg", "cairo", "pdf", "pgf", "ps", "svg", "template"})


class LivePlot:
    """A window that ``update`` redraws during training (pyplot interactive
    mode, as the tutorial's ``plt.ion()``); ``block`` keeps it open at the end.
    Make one with ``LivePlot.open()``."""

    def __init__(self) -> None:
        import matplotlib.pyplot as plt

        self._plt = plt
        plt.ion()
        self.figure = plt.figure("sincos_rs", figsize=FIGSIZE, dpi=DPI)
        plt.show(block=False)

    @classmethod
    def open(cls) -> tuple[LivePlot | None, str]:
        """A new window, or None and the reason when none can be opened (no
        display, only non-interactive matplotlib backends, or the window
        system refused)."""
        if not has_display():
            return None, "no display found (DISPLAY / WAYLAND_DISPLAY unset)"
        try:
            import matplotlib.pyplot as plt

            backend = plt.get_backend().lower()
            if backend in _NON_INTERACTIVE:
                return None, f"matplotlib has no interactive backend (using {backend!r})"
            return cls(), ""
        except Exception as err:  # e.g. a TclError from a dead X connection
            return None, f"cannot open a window ({' '.join(str(err).split())})"

    def update(
        self,
        trace: Trace,
        costs: Sequence[float],
        title: str = "",
        resumed_at: int = 0,
        stream: Stream | None = None,
    ) -> None:
        """Redraw with the run so far and let the window process its events."""
        draw(self.figure, trace, costs, title=title, resumed_at=resumed_at, stream=stream)
        self.figure.canvas.draw_idle()
        self._plt.pause(0.001)

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the current figure as a PNG, atomically."""
        return write_atomic(path, _png_bytes(self.figure))

    def block(self) -> None:
        """Leave interactive mode and wait until the window is closed."""
        self._plt.ioff()
        if self._plt.fignum_exists(self.figure.number):
            self._plt.show()
