"""The reusable pieces for your own code: ``LSTM`` (a layer with forward and
backward through time in Rust) and ``Adam`` (a fused in-place update in Rust).

The layer keeps its weights and gradients as plain NumPy arrays you can read,
write, save or hand to any optimiser; the Rust kernels borrow them on each
call (no copies of the weights). Shapes: x (B, T, I), out (B, T, H), state
h and c (B, H); weights in PyTorch layout, gate order (i, f, g, o):
``weight_ih (4H, I)``, ``weight_hh (4H, H)``, ``bias (4H,)``.

Example::

    layer = sr.LSTM(input_size=3, hidden_size=32, seed=0)
    opt = sr.Adam(layer.parameters(), lr=1e-3)
    out, (h, c) = layer.forward(x)
    dx, (dh0, dc0) = layer.backward(d_out)
    opt.step(layer.gradients())
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

import numpy as np

from . import _core
from ._fork import object_lock
from .init import (
    _check_finite_float,
    _check_fits_in_memory,
    _check_in_dtype,
    _check_non_negative_int,
    _check_positive_int,
    _float_dtype,
    initial_lstm_params,
)

__all__ = ["LSTM", "Adam"]

State = tuple[np.ndarray, np.ndarray]


class LSTM:
    """An LSTM layer over whole sequences, with backward through time.

    Args:
        input_size: I, features per step.
        hidden_size: H, hidden units.
        forget_bias: initial bias of the forget gate (1.0 as TF's
            BasicLSTMCell; PyTorch's nn.LSTM starts at 0).
        seed: seed of the initial weights (``init.initial_lstm_params``).
        dtype: "float32" (default) or "float64"; every array in or out.

    Attributes:
        weight_ih, weight_hh, bias: the parameters (NumPy arrays, finite:
            ``forward`` and ``backward`` raise ValueError naming one that
            holds NaN or inf). Modify them in place, or assign an array of
            the same shape and dtype: assigning *copies into* the existing
            array (after checking shape, dtype and finiteness; a bad array
            raises and changes nothing), so an ``Adam`` built on
            ``layer.parameters()`` keeps updating the arrays the layer uses.
        grad_weight_ih, grad_weight_hh, grad_bias: the gradients of the last
            ``backward`` (overwritten by each call, not accumulated). Each
            must be its own memory: an array that shares memory with a
            weight, ``d_out`` or another gradient is a ValueError naming both.

    Threads: the calls of one layer (``forward``, ``backward``, assigning a
    weight, pickling) hold a lock of the layer, so overlapping calls from
    several threads run one after the other; the GIL is released inside
    the kernels. Writing a weight array from another thread without the
    layer (``layer.weight_ih[0] = 1``, or an ``Adam.step`` on another
    thread) while a call runs is not serialised: the call then raises
    ValueError if it sees the array borrowed, else reads whatever is there.
    A ``fork`` waits for a call in progress on another thread to end (at
    most ``sincos_rs._fork.WAIT_SECONDS``), so a forked child gets the layer
    between two calls; if the call outlasts the wait, the child's copy
    raises RuntimeError on every call instead.

    Pickling and ``copy.deepcopy`` keep the weights and gradients exactly;
    what ``forward`` saved for ``backward`` is not kept (call ``forward``
    again). Arrays pickled with the layer stay shared with it (an ``Adam``
    pickled with its layer still updates that layer's weights).
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        *,
        forget_bias: float = 1.0,
        seed: int = 0,
        dtype: str | type | np.dtype = "float32",
    ) -> None:
        dtype = _float_dtype(dtype, "dtype")
        n_in = _check_positive_int(input_size, "input_size")
        hidden = _check_positive_int(hidden_size, "hidden_size")
        forget_bias = _check_finite_float(forget_bias, "forget_bias")
        _check_in_dtype(forget_bias, "forget_bias", dtype)
        # The float64 draws, the weights and their gradients.
        _check_fits_in_memory(
            4 * hidden * (n_in + hidden + 1) * (2 * 8 + 2 * dtype.itemsize),
            f"LSTM(input_size={n_in}, hidden_size={hidden})",
        )
        params = initial_lstm_params(
            n_in, hidden, forget_bias, _check_non_negative_int(seed, "seed"), dtype
        )
        self._init(n_in, hidden, dtype, params, {k: np.zeros_like(p) for k, p in params.items()})

    def _init(
        self,
        input_size: int,
        hidden_size: int,
        dtype: np.dtype,
        weights: dict[str, np.ndarray],
        grads: dict[str, np.ndarray],
    ) -> None:
        self._lock = object_lock(self)
        self._sizes = (input_size, hidden_size)
        self._dtype = dtype
        self._weights = weights
        self.grad_weight_ih = grads["weight_ih"]
        self.grad_weight_hh = grads["weight_hh"]
        self.grad_bias = grads["bias"]
        # What backward needs from the last forward (see ``_forward_record``).
        self._last: _ForwardRecord | None = None
        self._saved = np.empty(0, dtype)  # reused while the size fits

    @property
    def input_size(self) -> int:
        return self._sizes[0]

    @property
    def hidden_size(self) -> int:
        return self._sizes[1]

    @property
    def dtype(self) -> np.dtype:
        return self._dtype

    weight_ih = property(
        lambda self: self._weights["weight_ih"],
        lambda self, value: self._assign("weight_ih", value),
        doc="(4H, I) input weights, gate order (i, f, g, o); assigning copies into it.",
    )
    weight_hh = property(
        lambda self: self._weights["weight_hh"],
        lambda self, value: self._assign("weight_hh", value),
        doc="(4H, H) recurrent weights; assigning copies into it.",
    )
    bias = property(
        lambda self: self._weights["bias"],
        lambda self, value: self._assign("bias", value),
        doc="(4H,) bias; assigning copies into it.",
    )

    def _assign(self, name: str, value: object) -> None:
        """``layer.<name> = value``: check, then copy into the array in use."""
        with self._lock:
            current = self._weights[name]
            if not isinstance(value, np.ndarray):
                raise TypeError(f"{name}: expected a numpy.ndarray, got {type(value).__name__}")
            if value.dtype != current.dtype:
                raise TypeError(
                    f"{name}: expected dtype {current.dtype}, got {value.dtype} "
                    f"(convert with .astype(np.{current.dtype}))"
                )
            if value.shape != current.shape:
                raise ValueError(f"{name}: expected shape {current.shape}, got {value.shape}")
            if not np.isfinite(value).all():
                raise ValueError(f"{name}: all values must be finite, found NaN or inf")
            if value is not current:
                np.copyto(current, value)

    def forward(
        self,
        x: np.ndarray,
        state: State | None = None,
        *,
        lengths: np.ndarray | None = None,
        reverse: bool = False,
        store: bool = True,
    ) -> tuple[np.ndarray, State]:
        """Run the layer over ``x`` (B, T, I) from ``state`` = (h0, c0), each
        (B, H), or zeros. Returns ``(out (B, T, H), (h_n, c_n))``.

        Args:
            lengths: None (every row runs all T steps), or B ints in 1..T:
                row b runs its first ``lengths[b]`` steps of the padded ``x``
                (as ``torch.nn.utils.rnn.pack_padded_sequence``). Its output
                past them is zero, ``(h_n, c_n)`` is its state after its last
                real step, and ``x`` past them is never read (any padding,
                even NaN, gives the same result). Rows of similar length
                share SIMD chunks, so a batch costs about its real steps.
            reverse: run each row from its last real step to its first (the
                backward direction of a bidirectional layer); ``out[:, t]``
                is still the output at time t. No reversed copy is made.
            store: keep what ``backward`` needs (default). ``store=False`` is
                for inference: the kernels keep only the current step,
                O(B·H) memory beside the output, and ``backward`` then
                raises until the next ``forward`` with ``store=True``.
        """
        with self._lock:
            return self._forward(x, state, lengths, reverse, store)

    def _forward(
        self, x: np.ndarray, state: State | None, lengths: Any, reverse: object, store: object
    ) -> tuple[np.ndarray, State]:
        reverse, store = _flag(reverse, "reverse"), _flag(store, "store")
        batch, steps = _batch_steps(x)
        h, d = self.hidden_size, self.dtype
        lens = _lengths(lengths, batch, steps)
        h0, c0 = (None, None) if state is None else _pair(state, "state")
        out = np.empty((batch, steps, h), d)
        h_n, c_n = np.empty((batch, h), d), np.empty((batch, h), d)
        saved = record = None
        if store:
            size = _core.lstm_saved_size(batch, steps, self.input_size, h, d.name)
            saved = self._saved if self._saved.size == size else np.empty(size, d)
            # Copies of what backward reads again, whatever the caller then
            # does to x or the state (lens is a copy already).
            copy = _copy_or_none
            record = _ForwardRecord(np.array(x), copy(h0), copy(c0), lens, reverse)
        # A call that raises changes nothing: the previous forward stays for
        # its backward. A call into the saved buffer in use drops its record
        # first (an interrupt may come once the kernel wrote), and puts it
        # back if the call's checks refused the arguments (nothing written).
        previous = self._last
        if saved is self._saved:
            self._last = None
        weights = (self.weight_ih, self.weight_hh, self.bias)
        try:
            _core.lstm_forward(
                x, *weights, h0, c0, out, h_n, c_n, saved, lengths=lens, reverse=reverse
            )
        except (TypeError, ValueError, MemoryError):
            # Raised by the call's checks, before it wrote anything.
            self._last = previous
            raise
        self._last = None  # in this order: never a record beside another's buffer
        if saved is not None:
            self._saved = saved
        self._last = record
        return out, (h_n, c_n)

    __call__ = forward

    def backward(self, d_out: np.ndarray, d_state: State | None = None) -> tuple[np.ndarray, State]:
        """Backward through time over the last ``forward`` (with its lengths
        and direction; it must have run with ``store=True``).

        Args:
            d_out: (B, T, H), the gradient of the loss by ``out``.
            d_state: (dh_n, dc_n), the gradient by the final state, or None.

        Returns:
            ``(dx (B, T, I), (dh0, dc0))`` (dx is zero past each row's
            length); the weight gradients are written to ``grad_weight_ih``,
            ``grad_weight_hh`` and ``grad_bias``.
        """
        with self._lock:
            return self._backward(d_out, d_state)

    def _backward(self, d_out: np.ndarray, d_state: State | None) -> tuple[np.ndarray, State]:
        last = self._last
        if last is None:
            raise RuntimeError(
                "backward called before forward, or after forward(store=False), "
                "which keeps nothing for it: run forward(x) first"
            )
        x = last.x
        batch, _, _ = x.shape
        h, d = self.hidden_size, self.dtype
        dh_n, dc_n = (None, None) if d_state is None else _pair(d_state, "d_state")
        dx = np.empty_like(x)
        dh0, dc0 = np.empty((batch, h), d), np.empty((batch, h), d)
        _core.lstm_backward(
            x,
            self.weight_ih,
            self.weight_hh,
            self.bias,
            last.h0,
            last.c0,
            self._saved,
            d_out,
            dh_n,
            dc_n,
            dx,
            dh0,
            dc0,
            self.grad_weight_ih,
            self.grad_weight_hh,
            self.grad_bias,
            lengths=last.lengths,
            reverse=last.reverse,
        )
        return dx, (dh0, dc0)

    def step(
        self,
        x_t: np.ndarray,
        state: State | None = None,
        *,
        out: State | None = None,
    ) -> tuple[np.ndarray, State]:
        """One time step, keeping nothing: ``x_t`` (B, I) from ``state`` =
        (h, c), each (B, H), or zeros. Returns ``(h, (h, c))``, the new state
        (``h`` is both the output and the state's h).

        ``out=(h_buf, c_buf)`` writes the new state into those arrays instead
        of new ones (no allocation); they may be ``state``'s own arrays (or
        views of all of each, ``h[:]``), for an in-place update. Any other
        sharing of memory between arguments is a ValueError naming both.
        ``step`` called T times gives the same bits as ``forward`` over the
        T steps.
        """
        # Attributes read directly, not through properties: at B1 H10 the
        # Python around the kernel is most of a step's time. Bad arguments
        # are found on the error path (try costs nothing) or by the kernel
        # call, which names them.
        if out is None:
            try:
                shape = (x_t.shape[0], self._sizes[1])
            except (AttributeError, IndexError, TypeError):
                shape = (1, self._sizes[1])  # x_t is not (B, I): the call says so
            h_out, c_out = np.empty(shape, self._dtype), np.empty(shape, self._dtype)
        else:
            try:
                h_out, c_out = out
            except (TypeError, ValueError):
                raise TypeError(
                    f"out: expected None or a pair (h, c), got {_describe(out)}"
                ) from None
        if state is None:
            h = c = None
        else:
            try:
                h, c = state
            except (TypeError, ValueError):
                raise TypeError(
                    f"state: expected None or a pair (h, c), got {_describe(state)}"
                ) from None
        w = self._weights
        with self._lock:
            _core.lstm_step(x_t, w["weight_ih"], w["weight_hh"], w["bias"], h, c, h_out, c_out)
        return h_out, (h_out, c_out)

    def parameters(self) -> dict[str, np.ndarray]:
        """The parameter arrays themselves (not copies), by name."""
        return dict(self._weights)

    def gradients(self) -> dict[str, np.ndarray]:
        """The gradient arrays of the last ``backward``, by parameter name."""
        return {
            "weight_ih": self.grad_weight_ih,
            "weight_hh": self.grad_weight_hh,
            "bias": self.grad_bias,
        }

    def __getstate__(self) -> dict[str, Any]:
        with self._lock:
            return {
                "input_size": self.input_size,
                "hidden_size": self.hidden_size,
                "dtype": self.dtype.name,
                "weights": dict(self._weights),  # the arrays themselves: pickle shares them
                "grads": self.gradients(),
            }

    def __setstate__(self, state: dict[str, Any]) -> None:
        dtype = _float_dtype(state["dtype"], "dtype")
        sizes = (state["input_size"], state["hidden_size"])
        self._init(*sizes, dtype, state["weights"], state["grads"])

    def __repr__(self) -> str:
        return (
            f"LSTM(input_size={self.input_size}, hidden_size={self.hidden_size}, "
            f"dtype={self.dtype.name!r})"
        )


class _ForwardRecord(NamedTuple):
    """What ``LSTM.backward`` needs from the forward pass it follows (the
    activations themselves are in the layer's saved buffer)."""

    x: np.ndarray
    h0: np.ndarray | None
    c0: np.ndarray | None
    lengths: np.ndarray | None
    reverse: bool


def _batch_steps(x: object) -> tuple[int, int]:
    """(B, T) of x, or a clear error (the kernel checks the rest)."""
    if not isinstance(x, np.ndarray):
        raise TypeError(f"x: expected a numpy.ndarray (B, T, I), got {type(x).__name__}")
    if x.ndim != 3 or 0 in x.shape:
        raise ValueError(
            f"x: expected a 3-d array (B, T, I) with B, T, I >= 1, got shape {x.shape}"
        )
    return x.shape[0], x.shape[1]


def _flag(value: object, name: str) -> bool:
    """A True/False argument: bool or numpy.bool_ only (``"False"`` is truthy)."""
    if isinstance(value, bool | np.bool_):
        return bool(value)
    raise TypeError(f"{name}: expected True or False, got {_describe(value)}")


def _describe(value: object) -> str:
    """What ``value`` is, for a message: its type, and a short repr."""
    if isinstance(value, tuple | list):
        return f"a {type(value).__name__} of {len(value)}"
    return f"{type(value).__name__} {value!r:.40}"


def _copy_or_none(a: np.ndarray | None) -> np.ndarray | None:
    return None if a is None else np.array(a)


def _lengths(lengths: object, batch: int, steps: int) -> np.ndarray | None:
    """``lengths`` as a new int64 array (the kernels' type; a copy, so that
    backward sees the forward's lengths whatever the caller then does to
    its array), or a clear error."""
    if lengths is None:
        return None
    values = np.asarray(lengths)
    if values.dtype.kind not in "iu" or values.ndim != 1:
        raise ValueError(
            f"lengths: expected a 1-d array of integers, one per batch row, got "
            f"dtype {values.dtype} with shape {values.shape}"
        )
    if values.shape[0] != batch:
        raise ValueError(
            f"lengths: expected {batch} values (the batch size of x), got {values.shape[0]}"
        )
    if values.size and (values.min() < 1 or values.max() > steps):
        raise ValueError(
            f"lengths: expected values in 1..{steps} (the time steps of x), got "
            f"{values.min()}..{values.max()}"
        )
    return np.array(values, dtype=np.int64)


def _pair(value: State | None, name: str) -> State | None:
    if value is None:
        return None
    if not isinstance(value, tuple | list) or len(value) != 2:
        raise TypeError(f"{name}: expected None or a pair (h, c), got {type(value).__name__}")
    return (value[0], value[1])


def _check_hyper_types(hyper: Mapping[str, object]) -> None:
    """TypeError naming the first of Adam's settings of the wrong type."""
    for name, value in hyper.items():
        if name == "eps_style":
            ok = isinstance(value, str)
        else:
            ok = isinstance(value, int | float | np.integer | np.floating)
            ok = ok and not isinstance(value, bool)
        if not ok:
            expected = "a str" if name == "eps_style" else "a real number"
            raise TypeError(
                f"{name}: expected {expected}, got {type(value).__name__} {value!r:.40}"
            )


def _check_updatable(p: object, name: str) -> np.ndarray:
    """Adam updates ``p`` in place: a writable C-contiguous float array."""
    if not isinstance(p, np.ndarray) or p.dtype not in (np.float32, np.float64):
        raise TypeError(f"{name}: expected a float32 or float64 numpy array, got {p!r:.60}")
    if not p.flags.c_contiguous:
        raise ValueError(f"{name}: expected a C-contiguous array")
    if not p.flags.writeable:
        raise ValueError(f"{name}: expected a writable array")
    return p


def _check_disjoint(arrays: Mapping[str, np.ndarray], label: str) -> None:
    """ValueError naming both if two of ``arrays`` share memory."""
    names = list(arrays)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            if np.may_share_memory(arrays[a], arrays[b]):
                raise ValueError(
                    f"{label}[{a!r}] and {label}[{b!r}] share memory: Adam would update it "
                    "twice per step (pass separate arrays)"
                )


class Adam:
    """Adam over a set of NumPy arrays, updated in place by fused Rust
    kernels, all in one call per step.

    Args:
        params: the arrays to optimise, by name (e.g. ``layer.parameters()``);
            each must be a writable C-contiguous float32/float64 array, and
            no two may share memory.
        lr, beta1, beta2, eps: the usual hyper-parameters; lr and eps must be
            finite and > 0 in the parameters' dtype (eps = 0 would make a
            parameter whose gradients are all 0 NaN). They are attributes you
            may change between steps (a schedule); a bad value then raises
            ValueError at the next step, changing nothing.
        eps_style: "tensorflow" (default; ε outside the bias correction, as
            TF's AdamOptimizer and the seed program) or "pytorch" (as
            ``torch.optim.Adam``).

    ``step`` is all or nothing: it checks every gradient (shape, dtype,
    finite, sharing no memory with an array it writes: ValueError naming
    both) and that every new parameter and moment would be finite
    (FloatingPointError otherwise), and only then updates them all and
    counts the step. Overlapping calls from several threads are serialised
    by a lock of the optimiser; a forked child gets it between two calls
    (as ``LSTM``). Pickling and ``copy.deepcopy`` keep the
    moments, the step count and the settings; pickled together with its
    layer (one ``pickle.dumps((layer, opt))``) it keeps updating that
    layer's arrays.
    """

    def __init__(
        self,
        params: Mapping[str, np.ndarray],
        lr: float = 0.001,
        *,
        beta1: float = 0.9,
        beta2: float = 0.999,
        eps: float = 1e-8,
        eps_style: str = "tensorflow",
    ) -> None:
        if not isinstance(params, Mapping) or not params:
            raise TypeError("params: expected a non-empty dict name -> array")
        for name in params:
            if not isinstance(name, str):
                raise TypeError(f"params: expected str names, got {name!r}")
        checked = {name: _check_updatable(p, f"params[{name!r}]") for name, p in params.items()}
        _check_disjoint(checked, "params")
        self.lr = _check_finite_float(lr, "lr")
        self.beta1 = _check_finite_float(beta1, "beta1")
        self.beta2 = _check_finite_float(beta2, "beta2")
        self.eps = _check_finite_float(eps, "eps")
        self.eps_style = eps_style
        _core.check_adam_config(
            **self._hyper(), dtypes=sorted({p.dtype.name for p in checked.values()})
        )
        self._init(checked, {k: np.zeros_like(p) for k, p in checked.items()},
                   {k: np.zeros_like(p) for k, p in checked.items()}, 0)  # fmt: skip

    def _init(
        self,
        params: dict[str, np.ndarray],
        m: dict[str, np.ndarray],
        v: dict[str, np.ndarray],
        step: int,
    ) -> None:
        self._lock = object_lock(self)
        self.params = params
        self.m = m
        self.v = v
        self._core = _core.AdamCore()
        self._core.set_step_count(step)

    def _hyper(self) -> dict[str, Any]:
        return {
            "lr": self.lr,
            "beta1": self.beta1,
            "beta2": self.beta2,
            "eps": self.eps,
            "eps_style": self.eps_style,
        }

    @property
    def step_count(self) -> int:
        """The number of updates done."""
        return self._core.step_count

    def step(self, grads: Mapping[str, np.ndarray]) -> None:
        """One update of every parameter, given its gradient by name (all or
        nothing: see the class docs)."""
        if not isinstance(grads, Mapping):
            raise TypeError(f"grads: expected a dict name -> array, got {type(grads).__name__}")
        missing = self.params.keys() - grads.keys()
        if missing:
            raise KeyError(f"grads: missing {sorted(missing)}")
        with self._lock:
            names = list(self.params)
            hyper = self._hyper()
            try:
                self._core.step(
                    names,
                    [self.params[k] for k in names],
                    [grads[k] for k in names],
                    [self.m[k] for k in names],
                    [self.v[k] for k in names],
                    **hyper,
                )
            except TypeError:
                _check_hyper_types(hyper)  # name the attribute (a schedule set it wrong?)
                raise

    def state_dict(self) -> dict[str, Any]:
        """Copies of the moments and the step count."""
        with self._lock:
            return {
                "step": self.step_count,
                "m": {k: a.copy() for k, a in self.m.items()},
                "v": {k: a.copy() for k, a in self.v.items()},
            }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore what ``state_dict`` returned: ``m`` and ``v`` with exactly
        the parameters' names, shapes and dtypes, finite, v >= 0, and an int
        ``step`` >= 0. Everything is checked first (ValueError naming what is
        wrong, TypeError if ``state`` is not a mapping); on error nothing
        changes."""
        if not isinstance(state, Mapping):
            raise TypeError(f"state: expected a mapping, got {type(state).__name__}")
        step = state.get("step")
        integer = isinstance(step, int | np.integer) and not isinstance(step, bool)
        if not (integer and 0 <= step < 2**64):
            raise ValueError(f"state['step']: expected an int from 0 to 2**64 - 1, got {step!r}")
        moments = {}
        for label in ("m", "v"):
            given = state.get(label)
            if not isinstance(given, Mapping):
                raise ValueError(f"state[{label!r}]: expected a dict name -> array, got {given!r}")
            if set(given) != set(self.params):
                raise ValueError(
                    f"state[{label!r}]: expected the keys {sorted(self.params)}, "
                    f"got {sorted(given, key=str)}"
                )
            for name, p in self.params.items():
                a = given[name]
                where = f"{label}[{name!r}]"
                if not isinstance(a, np.ndarray) or a.dtype != p.dtype or a.shape != p.shape:
                    got = f"{a.dtype} {a.shape}" if isinstance(a, np.ndarray) else type(a).__name__
                    expected = f"a {p.dtype} array of shape {p.shape}"
                    raise ValueError(f"{where}: expected {expected}, got {got}")
                if not np.isfinite(a).all():
                    raise ValueError(f"{where}: all values must be finite, found NaN or inf")
                if label == "v" and (a < 0).any():
                    raise ValueError(f"{where}: the second moment must be >= 0")
            moments[label] = given
        with self._lock:
            for label, target in (("m", self.m), ("v", self.v)):
                for name in self.params:
                    np.copyto(target[name], moments[label][name])
            self._core.set_step_count(int(step))

    def __getstate__(self) -> dict[str, Any]:
        with self._lock:
            return {
                "params": dict(self.params),  # the arrays themselves: pickle shares them
                "m": dict(self.m),
                "v": dict(self.v),
                "step": self.step_count,
                "hyper": self._hyper(),
            }

    def __setstate__(self, state: dict[str, Any]) -> None:
        for name, value in state["hyper"].items():
            setattr(self, name, value)
        self._init(dict(state["params"]), dict(state["m"]), dict(state["v"]), state["step"])
