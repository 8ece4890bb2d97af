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
"""
from __future__ import annotations

import numpy as np

from .base import CellBase, sigmoid_

__all__ = ["LSTMEquations", "LSTMCell"]


class LSTMEquations:
    gates = 4
    has_cell = True
    saved_width = 1        # tanh(c)
    separate_dgh = False

    @staticmethod
    def split_bias(b_ih, b_hh, H):
        return (None, None) if b_ih is None else (b_ih + b_hh, None)

    def forward(self, gx, gh, h_bias, h_prev, c_prev, h, c, saved):
        H = c.shape[1]
        gx += gh                                       # all four pre-activations
        sigmoid_(gx[:, :2 * H])                        # i, f
        np.tanh(gx[:, 2 * H:3 * H], out=gx[:, 2 * H:3 * H])   # g
        sigmoid_(gx[:, 3 * H:])                        # o
        i, f, g, o = gx[:, :H], gx[:, H:2 * H], gx[:, 2 * H:3 * H], gx[:, 3 * H:]
        np.multiply(f, c_prev, out=c)                  # c = f * c_prev + i * g
        c += i * g
        np.tanh(c, out=saved)                          # tanh(c), kept for backward
        np.multiply(o, saved, out=h)                   # h = o * tanh(c)

    def backward(self, dh, dc, gates, saved, h_prev, c_prev, h, dgx, dgh):
        H = dh.shape[1]
        i, f, g, o = gates[:, :H], gates[:, H:2 * H], gates[:, 2 * H:3 * H], gates[:, 3 * H:]
        di, df, dg, do = dgx[:, :H], dgx[:, H:2 * H], dgx[:, 2 * H:3 * H], dgx[:, 3 * H:]
        tanh_c = saved
        # output gate: dh * tanh(c), through the sigmoid
        np.multiply(dh, tanh_c, out=do)
        do *= o * (1 - o)
        # cell: what reaches c from h, added to what reaches it from the next step
        dc += dh * o * (1 - tanh_c * tanh_c)
        np.multiply(dc, g, out=di)                     # input gate, through the sigmoid
        di *= i * (1 - i)
        np.multiply(dc, c_prev, out=df)                # forget gate, through the sigmoid
        df *= f * (1 - f)
        np.multiply(dc, i, out=dg)                     # candidate, through the tanh
        dg *= 1 - g * g
        dc *= f                                        # dc_prev, in place
        return None


class LSTMCell(CellBase):
    """One LSTM step (equations in the module docstring); returns ``(h, c)``.

    >>> import numpy as np, elman
    >>> cell = elman.LSTMCell(3, 4, seed=0)
    >>> h, c = cell(np.zeros((2, 3)))                  # states default to zeros
    >>> h.shape, c.shape
    ((2, 4), (2, 4))
    >>> dx, (dh, dc) = cell.backward(np.ones_like(h), None)
    """

    def __init__(self, input_size, hidden_size, bias=True, dtype=np.float32, seed=None):
        super().__init__(LSTMEquations(), input_size, hidden_size, bias, dtype, seed)
