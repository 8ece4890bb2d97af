"""LSTM with peephole connections (Gers & Schmidhuber 2000), as the ONNX ``LSTM`` operator
defines them: the input and forget gates see the previous cell state ``c_prev``, the output gate
sees the new one ``c``, each through a diagonal weight (one value per unit).

Gate rows of ``W_ih``/``W_hh`` are ``[i | f | g | o]`` (PyTorch's order); the peephole weights
``w_ci``, ``w_cf``, ``w_co`` (H,) are the parameters ``weight_ci``, ``weight_cf``, ``weight_co``,
created after the standard ones and initialised to zero (so a peephole LSTM starts as the plain
LSTM with the same seed, weight for weight). One step::

    i = sigmoid(W_ii x + b_ii + W_hi h_prev + b_hi + w_ci * c_prev)
    f = sigmoid(W_if x + b_if + W_hf h_prev + b_hf + w_cf * c_prev)
    g = tanh(W_ig x + b_ig + W_hg h_prev + b_hg)
    c = f * c_prev + i * g
    o = sigmoid(W_io x + b_io + W_ho h_prev + b_ho + w_co * c)
    h = o * tanh(c)                 (with proj_size: h = W_hr (o * tanh(c)), done by the loop)

Backward, from dh and dc (the gradient reaching c from the next step)::

    do_pre  = dh * tanh(c) * o * (1 - o)
    dc      = dc + dh * o * (1 - tanh(c)**2) + do_pre * w_co
    di_pre  = dc * g * i * (1 - i)
    df_pre  = dc * c_prev * f * (1 - f)
    dg_pre  = dc * i * (1 - g**2)
    dc_prev = dc * f + di_pre * w_ci + df_pre * w_cf
    dGX = dGH = [di_pre, df_pre, dg_pre, do_pre];  dh_prev = dGH W_hh  (the loop's GEMM)
    dw_ci = sum over steps and rows of di_pre * c_prev, dw_cf of df_pre * c_prev,
    dw_co of do_pre * c                                  (parameter_grads, once per sequence)
"""
from __future__ import annotations

import numpy as np

from .base import ParamSpec, sigmoid_
from .lstm import LSTMEquations

__all__ = ["PeepholeLSTMEquations", "PEEPHOLES"]

#: The peephole parameters of one layer-direction, in creation order: input, forget, output gate.
PEEPHOLES = ("weight_ci", "weight_cf", "weight_co")


class PeepholeLSTMEquations(LSTMEquations):
    """The LSTM's equations with peepholes; the derivative factors (``prepare_backward``) are
    the LSTM's own."""
    kernel = "elman.fast.peephole_lstm"

    def parameters(self, input_size, hidden_size, proj_size=0, bias=True):
        # after the standard ones: the random draws of those stay the plain LSTM's
        return super().parameters(input_size, hidden_size, proj_size, bias) + [
            ParamSpec(name, (hidden_size,), "zeros") for name in PEEPHOLES]

    def prepare_forward(self, w, H, dtype):
        """The LSTM's ``(bias, (s, 1 - s))``, with the peephole weights appended to the step
        constants: ``(s, 1 - s, w_ci, w_cf, w_co)``."""
        bias, consts = super().prepare_forward(w, H, dtype)
        return bias, consts + tuple(w[name] for name in PEEPHOLES)

    def forward(self, gx, gh, consts, h_prev, c_prev, h, c, saved):
        H = c.shape[1]
        s, shift, w_ci, w_cf, w_co = consts
        gx += gh                                       # all four pre-activations
        gx[:, :H] += w_ci * c_prev                     # i and f peep at c_prev
        gx[:, H:2 * H] += w_cf * c_prev
        ifg = gx[:, :3 * H]                            # i, f: sigmoid; g: tanh (one tanh call)
        ifg *= s[:3 * H]
        np.tanh(ifg, out=ifg)
        ifg *= s[:3 * H]
        ifg += shift[:3 * H]
        i, f, g, o = gx[:, :H], gx[:, H:2 * H], gx[:, 2 * H:3 * H], gx[:, 3 * H:]
        np.multiply(f, c_prev, out=c)                  # c = f * c_prev + i * g
        c += i * g
        o += w_co * c                                  # o peeps at the new c
        sigmoid_(o)
        np.tanh(c, out=saved)                          # tanh(c), kept for backward
        np.multiply(o, saved, out=h)                   # h = o * tanh(c)

    def backward(self, dh, dc, gates, saved, aux, h_prev, c_prev, dgx, dgh, work, consts):
        H = dh.shape[1]
        w_ci, w_cf, w_co = consts[2:]
        i, f, g = gates[:, :H], gates[:, H:2 * H], gates[:, 2 * H:3 * H]
        raw = work                                     # gradients wrt the activated gates
        np.multiply(dh, saved, out=raw[:, 3 * H:])     # output gate: dh * tanh(c)
        do = dgx[:, 3 * H:]
        do *= raw[:, 3 * H:]                           # do_pre (slope from prepare_backward)
        np.multiply(dh, aux, out=raw[:, :H])           # cell: dc += dh * o * (1 - tanh(c)^2)
        dc += raw[:, :H]
        dc += do * w_co                                #   and through o's peephole
        np.multiply(dc, g, out=raw[:, :H])             # input gate: dc * g
        np.multiply(dc, c_prev, out=raw[:, H:2 * H])   # forget gate: dc * c_prev
        np.multiply(dc, i, out=raw[:, 2 * H:3 * H])    # candidate: dc * i
        dgx[:, :3 * H] *= raw[:, :3 * H]               # times the slopes
        dc *= f                                        # dc_prev: through f, and the peepholes
        dc += dgx[:, :H] * w_ci
        dc += dgx[:, H:2 * H] * w_cf
        return None

    def parameter_grads(self, cache, dGX, dGH, g):
        """dw_ci, dw_cf, dw_co from the whole sequence (padded slots of dGX are zero)."""
        H = cache.C.shape[2]
        C_prev, C_new = (cache.C[1:], cache.C[:-1]) if cache.reverse \
            else (cache.C[:-1], cache.C[1:])
        if cache.zone is not None:         # o saw the new c before zoneout mixed it
            C_new = cache.zone.c_new
        for name, gate, c in (("weight_ci", 0, C_prev), ("weight_cf", 1, C_prev),
                              ("weight_co", 3, C_new)):
            d = dGX[..., gate * H:(gate + 1) * H]
            g[name] += np.einsum("tnh,tnh->h", d, c)
