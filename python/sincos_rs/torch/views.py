"""NumPy views of a module's weights, kept from one call to the next.

``Tensor.numpy()`` is one of the dearer calls of a step (it makes a detached
tensor, its Python object and the array), and a step loop hands the kernels
the same parameters on every call. A module therefore keeps the arrays it
made, with the kernel's one bias (the sum of torch's two, a copy), and
reuses them while they still show the parameters' current memory and
values:

- the same tensor objects (``functional_call`` or a reassigned parameter
  is another one);
- the same data pointers and shapes: ``param.data = other`` (``.to``,
  ``.double()``) gives a parameter new memory, and never the old address,
  since the kept array holds the old storage alive;
- for the summed bias, also the biases' versions, which every in-place
  update (an optimizer step, ``load_state_dict``, ``add_`` under
  ``no_grad``) bumps. The weights' views are views: in-place updates show
  through them.

The views of a non-contiguous parameter (a copy) are made again each call.
The checks also make a shared or copied ``WeightViews`` safe (other
tensors: made again); a module leaves it out of its pickled state.
"""

from __future__ import annotations

import numpy as np


class WeightViews:
    """``arrays(weight_ih, weight_hh, bias_ih, bias_hh)`` -> the kernel's
    (weight_ih, weight_hh, bias) as NumPy arrays; call with grad mode off
    or on tensors that need no gradient (``numpy()`` needs no ``detach``)."""

    __slots__ = ("_kept",)

    def __init__(self) -> None:
        # (weight_ih, weight_hh, bias_ih, bias_hh, key, arrays), replaced as a
        # whole (one attribute: a thread never sees one call's key with
        # another's arrays).
        self._kept: tuple | None = None

    def arrays(self, weight_ih, weight_hh, bias_ih, bias_hh) -> tuple:
        key = (weight_ih.data_ptr(), weight_hh.data_ptr(), weight_ih.shape, weight_hh.shape)
        biased = bias_ih is not None and bias_hh is not None
        if biased:
            key += (bias_ih.data_ptr(), bias_hh.data_ptr(), bias_ih.shape, bias_hh.shape,
                    bias_ih._version, bias_hh._version)  # fmt: skip
        kept = self._kept
        if (
            kept is not None
            and kept[0] is weight_ih
            and kept[1] is weight_hh
            and kept[2] is bias_ih
            and kept[3] is bias_hh
            and kept[4] == key
        ):
            return kept[5]
        w_ih, w_hh = weight_ih.contiguous().numpy(), weight_hh.contiguous().numpy()
        if biased:
            bias = np.add(bias_ih.contiguous().numpy(), bias_hh.contiguous().numpy())
        else:
            bias = np.zeros(w_ih.shape[0], w_ih.dtype)
        arrays = (w_ih, w_hh, bias)
        # A non-contiguous parameter's array is a copy, which would not
        # follow in-place updates: made again each call.
        if all(t is None or t.is_contiguous() for t in (weight_ih, weight_hh, bias_ih, bias_hh)):
            self._kept = (weight_ih, weight_hh, bias_ih, bias_hh, key, arrays)
        return arrays
