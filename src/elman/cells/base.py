"""What the three cells share: the in-place sigmoid, PyTorch's initialisation, the input and state
checks, and :class:`CellBase`, the single-step module that runs a cell's equations through the same
time loop as the layers (with T = 1), so a cell and a layer cannot disagree."""
from __future__ import annotations

import numpy as np

from .. import _validate
from ..init import uniform_
from ..module import Module, Param
from ..timeloop import Weights, sequence_backward, sequence_forward

__all__ = ["sigmoid_", "CellBase", "check_input", "check_state"]


def sigmoid_(x: np.ndarray) -> np.ndarray:
    """In place: ``sigmoid(x) = (1 + tanh(x / 2)) / 2``. Same value as ``1 / (1 + exp(-x))`` but
    cannot overflow, and costs one transcendental call on ``x``'s own memory."""
    x *= 0.5
    np.tanh(x, out=x)
    x *= 0.5
    x += 0.5
    return x


def check_input(x, input_size: int, dtype: np.dtype, batched_ndim: int, name: str = "input",
                time_axis: int | None = None):
    """Convert and check an input whose last axis is the feature axis.

    Returns ``(array, batched)``; ``batched_ndim`` is 3 for layers (T, N, I) and 2 for cells.
    A batch of no sequences (N = 0) is accepted and gives empty results, as in PyTorch; a
    sequence of no steps is not (``time_axis``, the time axis of batched input, for layers).
    """
    arr = _validate.float_array(name, x, dtype)
    if arr.ndim not in (batched_ndim - 1, batched_ndim):
        raise ValueError(
            f"{name} must have {batched_ndim - 1} (unbatched) or {batched_ndim} (batched) "
            f"dimensions, got {arr.ndim} with shape {arr.shape}")
    if arr.shape[-1] != input_size:
        raise ValueError(
            f"{name}.shape[-1] must be equal to input_size. Expected {input_size}, "
            f"got {arr.shape[-1]}")
    batched = arr.ndim == batched_ndim
    if time_axis is not None and arr.shape[time_axis if batched else 0] == 0:
        raise ValueError(f"{name} must have at least one time step (as in PyTorch), got shape "
                         f"{arr.shape}")
    return arr, batched


def check_state(name: str, value, expected: tuple, dtype: np.dtype) -> np.ndarray:
    arr = _validate.float_array(name, value, dtype)
    if arr.shape != tuple(expected):
        raise ValueError(f"Expected {name} of shape {tuple(expected)}, got {arr.shape}")
    return arr


class CellBase(Module):
    """One time step of a cell, with PyTorch's ``RNNCell``/``GRUCell``/``LSTMCell`` interface.

    Parameters ``weight_ih`` (G*H, I), ``weight_hh`` (G*H, H), ``bias_ih`` and ``bias_hh`` (G*H,)
    where G is the cell's gate count; all initialised U(-1/sqrt(H), 1/sqrt(H)) as in PyTorch.
    Input ``x`` is (N, I) or unbatched (I,); states are (N, H) or (H,), zeros when omitted.
    """

    def __init__(self, eq, input_size, hidden_size, bias=True, dtype=np.float32, seed=None):
        super().__init__()
        self.eq = eq
        self.input_size = _validate.positive_int("input_size", input_size)
        self.hidden_size = _validate.positive_int("hidden_size", hidden_size)
        self.bias = _validate.flag("bias", bias)
        self.dtype = _validate.float_dtype(dtype)
        rng = _validate.rng(seed)
        G, H, I = eq.gates, self.hidden_size, self.input_size
        _validate.affordable(type(self).__name__, G * H * (I + H + (2 if self.bias else 0)),
                             self.dtype,
                             {"input_size": I, "hidden_size": H})
        bound = 1.0 / np.sqrt(H)
        shapes = {"weight_ih": (G * H, I), "weight_hh": (G * H, H)}
        if self.bias:
            shapes.update(bias_ih=(G * H,), bias_hh=(G * H,))
        for name, shape in shapes.items():
            setattr(self, name, Param(uniform_(np.empty(shape, self.dtype), bound, rng)))
        self._cache = None

    def extra_repr(self):
        s = f"{self.input_size}, {self.hidden_size}"
        if not self.bias:
            s += ", bias=False"
        return s + ("" if self.dtype == np.float32 else f", dtype={self.dtype}")

    def config(self) -> dict:
        """The constructor arguments, as plain JSON-able values (``seed`` is not kept)."""
        return {"input_size": self.input_size, "hidden_size": self.hidden_size,
                "bias": self.bias, "dtype": self.dtype.name}

    def _weights(self, grads: bool = False) -> Weights:
        a = "grad" if grads else "data"
        b = (getattr(self.bias_ih, a), getattr(self.bias_hh, a)) if self.bias else (None, None)
        return Weights(getattr(self.weight_ih, a), getattr(self.weight_hh, a), *b)

    def forward(self, x, hx=None):
        x, batched = check_input(x, self.input_size, self.dtype, 2)
        X = x.reshape(1, x.shape[0] if batched else 1, self.input_size)
        N, H = X.shape[1], self.hidden_size
        state_shape = (N, H) if batched else (H,)
        if self.eq.has_cell:
            if hx is None:
                h0 = c0 = np.zeros((N, H), self.dtype)
            else:
                if not isinstance(hx, (tuple, list)) or len(hx) != 2:
                    raise TypeError(f"hx of {type(self).__name__} must be a tuple (h, c), "
                                    f"got {type(hx).__name__}")
                h0 = check_state("h", hx[0], state_shape, self.dtype).reshape(N, H)
                c0 = check_state("c", hx[1], state_shape, self.dtype).reshape(N, H)
        else:
            c0 = None
            h0 = (np.zeros((N, H), self.dtype) if hx is None
                  else check_state("hx", hx, state_shape, self.dtype).reshape(N, H))
        cache = sequence_forward(self.eq, X, h0, c0, self._weights())
        self._cache = (cache, batched)
        h1 = cache.S[1].reshape(state_shape).copy()
        if self.eq.has_cell:
            return h1, cache.C[1].reshape(state_shape).copy()
        return h1

    def backward(self, dh=None, dc=None, retain_graph: bool = False):
        """Gradients wrt ``(x, hx)`` from the gradients wrt the new state(s); parameter
        gradients are accumulated. LSTMCell: ``backward(dh, dc)`` returns ``(dx, (dh, dc))``."""
        if self._cache is None:
            raise RuntimeError(f"{type(self).__name__}.backward() needs a forward() first: there "
                               "is no saved step to differentiate (backward() frees what "
                               "forward() kept: one backward per forward, or "
                               "backward(..., retain_graph=True))")
        cache, batched = self._cache
        N, H = cache.X.shape[1], self.hidden_size
        shape = (N, H) if batched else (H,)
        dh = None if dh is None else check_state("dh", dh, shape, self.dtype).reshape(N, H)
        if dc is not None:
            if not self.eq.has_cell:
                raise TypeError(f"{type(self).__name__}.backward() takes no dc (it has no cell "
                                "state)")
            dc = check_state("dc", dc, shape, self.dtype).reshape(N, H)
        dX, dh0, dc0 = sequence_backward(self.eq, cache, None, dh, dc, self._weights(),
                                         self._weights(grads=True), consume=not retain_graph)
        if not retain_graph:
            self._cache = None             # one backward per forward, as in PyTorch
        x_shape = cache.X.shape[1:] if batched else cache.X.shape[2:]
        dx = dX.reshape(x_shape)
        if self.eq.has_cell:
            return dx, (dh0.reshape(shape), dc0.reshape(shape))
        return dx, dh0.reshape(shape)
