"""Long short-term memory (Hochreiter & Schmidhuber 1997; forget gate: Gers et al. 2000).

Gate rows of ``W_ih``/``W_hh`` are ``[i | f | g | o]`` (PyTorch's order). One step::

    i = sigmoid(W_ii x + b_ii + W_hi h_prev + b_hi)     input gate
    f = sigmoid(W_if x + b_if + W_hf h_prev + b_hf)     forget gate
    g = tanh(W_ig x + b_ig + W_hg h_prev + b_hg)        candidate cell
    o = sigmoid(W_io x + b_io + W_ho h_prev + b_ho)     output gate
    c = f * c_prev + i * g
    h = o * tanh(c)                 (with proj_size: h = W_hr (o * tanh(c)), done by the loop)

Backward, from dh and dc (the gradient reaching c from the next step)::

    do_pre = dh * tanh(c) * o * (1 - o)
    dc     = dc + dh * o * (1 - tanh(c)**2)
    di_pre = dc * g * i * (1 - i)
    df_pre = dc * c_prev * f * (1 - f)
    dg_pre = dc * i * (1 - g**2)
    dc_prev = dc * f
    dGX = dGH = [di_pre, df_pre, dg_pre, do_pre];  dh_prev = dGH W_hh  (the loop's GEMM)

The one-step module, ``LSTMCell``, is in :mod:`elman.cells.lstm_cell`.
"""
from __future__ import annotations

import functools

import numpy as np

from ..init import uniform_
from .base import CellEquations, ParamSpec, summed_biases

__all__ = ["LSTMEquations"]


class LSTMEquations(CellEquations):
    """``forget_bias=b`` (Jozefowicz et al. 2015; Keras' ``unit_forget_bias`` is b = 1): the
    forget blocks of the biases start at ``b_if = b`` and ``b_hf = 0``, so the forget gate starts
    near sigmoid(b); the other values are drawn as usual (the same draws as without it)."""
    kernel = "elman.fast.lstm"
    gates = 4
    has_cell = True
    saved_width = 1        # tanh(c)
    separate_dgh = False
    work_width = 4
    recurrent_gates = 4

    def __init__(self, forget_bias: float | None = None):
        self.forget_bias = _forget_bias(forget_bias)

    def parameters(self, input_size, hidden_size, proj_size=0, bias=True):
        specs = super().parameters(input_size, hidden_size, proj_size, bias)
        if self.forget_bias is None:
            return specs
        starts = {"bias_ih": self.forget_bias, "bias_hh": 0.0}
        return [ParamSpec(s.name, s.shape, _forget_block(starts[s.name], hidden_size))
                if s.name in starts else s for s in specs]

    @staticmethod
    def prepare_forward(w, H, dtype):
        """(bias for the input projection, step constants ``(s, 1 - s)``).

        ``s`` (4H,) is 0.5 on the sigmoid gates i, f, o and 1 on the tanh gate g: with it
        ``s * tanh(s * x) + (1 - s)`` is sigmoid(x) on i, f, o and tanh(x) on g, so one tanh
        call activates all four gates (sigmoid(x) = (1 + tanh(x/2)) / 2)."""
        return summed_biases(w, H), _gate_scales(H, np.dtype(dtype))

    projection_bias = staticmethod(summed_biases)

    def keeps_operands(self) -> bool:
        return True

    def forward(self, gx, gh, consts, h_prev, c_prev, h, c, saved):
        H = c.shape[1]
        s, shift = consts
        gx += gh                                       # all four pre-activations
        gx *= s                                        # i, f, o: sigmoid; g: tanh
        np.tanh(gx, out=gx)
        gx *= s
        gx += shift
        i, f, g, o = gx[:, :H], gx[:, H:2 * H], gx[:, 2 * H:3 * H], gx[:, 3 * H:]
        np.multiply(f, c_prev, out=c)                  # c = f * c_prev + i * g
        c += i * g
        np.tanh(c, out=saved)                          # tanh(c), kept for backward
        np.multiply(o, saved, out=h)                   # h = o * tanh(c)

    def prepare_backward(self, cache, dGX, dGH):
        """Whole-sequence slopes: s(1-s) for i, f, o and 1-g^2 for g into dGX; returns
        o * (1 - tanh(c)^2), what reaches c per unit of dh."""
        H = dGX.shape[2] // 4
        gates = cache.gates
        np.subtract(1, gates, out=dGX)
        dGX *= gates
        g, dg = gates[..., 2 * H:3 * H], dGX[..., 2 * H:3 * H]
        np.multiply(g, g, out=dg)
        np.subtract(1, dg, out=dg)
        tanh_c = cache.saved
        to_c = tanh_c * tanh_c
        np.subtract(1, to_c, out=to_c)
        to_c *= gates[..., 3 * H:]
        return to_c

    def backward(self, dh, dc, gates, saved, aux, h_prev, c_prev, dgx, dgh, work, consts):
        H = dh.shape[1]
        i, f, g = gates[:, :H], gates[:, H:2 * H], gates[:, 2 * H:3 * H]
        raw = work                                     # gradients wrt the activated gates
        np.multiply(dh, aux, out=raw[:, :H])           # cell: dc += dh * o * (1 - tanh(c)^2)
        dc += raw[:, :H]
        np.multiply(dc, g, out=raw[:, :H])             # input gate: dc * g
        np.multiply(dc, c_prev, out=raw[:, H:2 * H])   # forget gate: dc * c_prev
        np.multiply(dc, i, out=raw[:, 2 * H:3 * H])    # candidate: dc * i
        np.multiply(dh, saved, out=raw[:, 3 * H:])     # output gate: dh * tanh(c)
        dgx *= raw                                     # times the slopes (prepare_backward)
        dc *= f                                        # dc_prev
        return None


@functools.lru_cache(maxsize=32)
def _gate_scales(H: int, dtype: np.dtype):
    """``(s, 1 - s)`` of :meth:`LSTMEquations.prepare_forward`, made once per size and dtype
    (every call of a layer asks for them) and only ever read."""
    s = np.full(4 * H, 0.5, dtype=dtype)
    s[2 * H:3 * H] = 1
    return s, 1 - s


def _forget_bias(value) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)) \
            or not np.isfinite(value):
        raise TypeError(f"forget_bias must be None (PyTorch's initialisation) or a finite "
                        f"number, got {value!r}")
    return float(value)


def _forget_block(value: float, H: int):
    """An initialiser: PyTorch's U(-1/sqrt(H), 1/sqrt(H)), then the forget block set to
    ``value``."""
    def init(array, rng):
        uniform_(array, 1.0 / np.sqrt(H), rng)
        array[H:2 * H] = value
    return init
