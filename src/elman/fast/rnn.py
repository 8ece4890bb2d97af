"""Compiled Elman RNN time loops (equations in :mod:`elman.cells.rnn`), the fast twin of
``RNNEquations.forward``/``backward``."""
import numpy as np
from numba import njit

from ._blas import gemm, gemm_acc
from ._loop import JIT, ONE, ZERO, add_bias, backward_step, mask_into, scale_rows, step_at
from ._math import tanh

__all__ = ["forward", "backward"]


@njit(**JIT)
def _forward(GX, bias, W_hh_T, S, relu, schedule, mask):
    """h_t = tanh((GX[t] + bias) + h_prev W_hh^T) (or relu) into S (T+1, N, H); GX, the input
    projection without its bias, receives both terms. ``mask`` (N, H) or None: recurrent
    dropout, the GEMM reads h_prev * mask."""
    H = S.shape[2]
    hm = np.empty_like(S[0])
    for s in range(schedule.shape[0]):
        t, p, q, n = step_at(schedule, s)
        h = S[q, :n]
        add_bias(GX[t, :n], bias)
        if mask is None:
            gemm_acc(S[p, :n], W_hh_T, GX[t, :n])      # GX[t] += h_prev W_hh^T (beta = 1)
        else:
            mask_into(S[p, :n], mask, hm)
            gemm_acc(hm[:n], W_hh_T, GX[t, :n])
        for b in range(n):
            g, h_b = GX[t, b], h[b]
            if relu:
                for j in range(H):
                    a = g[j]
                    h_b[j] = a if a > ZERO else ZERO
            else:
                for j in range(H):
                    h_b[j] = tanh(g[j])


@njit(**JIT)
def _backward(S, dY, dh, dG, W_hh, relu, schedule, mask):
    """dG (T, N, H) receives the pre-activation gradients; dh (N, H) enters as the gradient wrt
    the final state and leaves as that wrt h0."""
    H = dh.shape[1]
    for s in range(schedule.shape[0] - 1, -1, -1):
        t, p, q, n = backward_step(schedule, s, dh, dY)
        for b in range(n):
            h, d, dh_b = S[q, b], dG[t, b], dh[b]
            if relu:
                for j in range(H):
                    d[j] = dh_b[j] if h[j] > ZERO else ZERO
            else:
                for j in range(H):
                    d[j] = (ONE - h[j] * h[j]) * dh_b[j]
        gemm(dG[t, :n], W_hh, dh[:n])
        if mask is not None:
            scale_rows(dh, mask, n)


saved_width = 0        # backward needs only h


def forward(eq, loop):
    _forward(loop.GX, loop.bias, loop.W_hh_T, loop.S, eq.nonlinearity == "relu", loop.schedule,
             loop.h_mask)


def backward(eq, loop):
    _backward(loop.cache.S, loop.dY, loop.dh, loop.dGX, loop.w["weight_hh"],
              eq.nonlinearity == "relu", loop.schedule, loop.h_mask)
