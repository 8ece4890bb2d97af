"""Compiled peephole-LSTM time loops (equations in :mod:`elman.cells.peephole_lstm`), the fast
twin of ``PeepholeLSTMEquations.forward``/``backward``: :mod:`elman.fast.lstm`'s loops with the
three diagonal peephole terms. As there, the forward pass keeps no ``tanh(c)`` (backward
recomputes it from ``c``); the peephole weights' own gradients are whole-sequence sums, done by
the cell's ``parameter_grads`` after the loop. Shapes as in :class:`elman.timeloop.SequenceCache`.
"""
import numpy as np
from numba import njit

from . import _cache  # noqa: F401  (before the decorators: the cache keyed by the package)
from ._blas import gemm, gemm_acc
from ._loop import (JIT, ONE, HALF, absent, backward_step, bias_sums, copy_row_summed,
                    mask_into, or_empty, or_no_matrix, output_grad, project_back, row_added, scratch_row,
                    settle_sums, step_at, zone_arrays, zone_states, unzone_grads, into_previous)
from ._math import tanh

__all__ = ["forward", "backward"]


@njit(**JIT)
def _forward(GX, bias, w_ci, w_cf, w_co, W_hh_T, S, C, R, W_hr_T, schedule, mask, zh, zc,
             Cn):
    """As :func:`elman.fast.lstm._forward`, with the peephole weights w_ci, w_cf, w_co (H,):
    i and f see c_prev before their activation, o sees the new c. One short loop per gate
    (sigmoid(x) = 0.5 tanh(0.5 x) + 0.5): with fewer arrays each, LLVM vectorises them all,
    where one loop over the whole row stayed scalar (measured: 1.6x the time of the plain
    LSTM's row pass; split, the same time). The bias comes in with each gate's activation,
    as in the plain loop (whose comment says why): with zero peepholes the two loops' results
    are the same to the bit."""
    H = C.shape[2]
    hm = np.empty_like(S[0])                   # h_prev * mask (recurrent dropout)
    for s in range(schedule.shape[0]):
        t, p, q, n = step_at(schedule, s)
        if absent(mask):
            gemm_acc(S[p, :n], W_hh_T, GX[t, :n])      # GX[t] += h_prev W_hh^T
        else:
            mask_into(S[p, :n], mask, hm)
            gemm_acc(hm[:n], W_hh_T, GX[t, :n])
        for b in range(n):
            g, c_prev, c = GX[t, b], C[p, b], C[q, b]
            h = S[q, b] if absent(R) else R[t, b]      # R: o tanh(c) before the projection
            for j in range(H):                         # i peeps at c_prev
                g[j] = HALF * tanh(HALF * ((g[j] + bias[j]) + w_ci[j] * c_prev[j])) + HALF
            for j in range(H):                         # f peeps at c_prev
                f = (g[H + j] + bias[H + j]) + w_cf[j] * c_prev[j]
                g[H + j] = HALF * tanh(HALF * f) + HALF
            for j in range(H):                         # g
                g[2 * H + j] = tanh(g[2 * H + j] + bias[2 * H + j])
            for j in range(H):                         # c = f c_prev + i g
                c[j] = g[H + j] * c_prev[j] + g[j] * g[2 * H + j]
            for j in range(H):                         # o peeps at the new c
                o = (g[3 * H + j] + bias[3 * H + j]) + w_co[j] * c[j]
                g[3 * H + j] = HALF * tanh(HALF * o) + HALF
            for j in range(H):                         # h = o tanh(c)
                h[j] = g[3 * H + j] * tanh(c[j])
        if not absent(R):
            gemm(R[t, :n], W_hr_T, S[q, :n])                       # h = W_hr r
        zone_states(S, C, Cn, zh, zc, t, p, q, n)


@njit(**JIT)
def _backward(gates, C, w_ci, w_cf, w_co, dY, dY_at, dh, dc, dG, W_hh, W_hr, dHs, dR, schedule,
              mask, zh, zc, Cn, sums, part, rows):
    """As :func:`elman.fast.lstm._backward` (the biases' gradient summed into ``sums`` too),
    with the peepholes' paths into dc: o's from the new c, i's and f's into dc_prev."""
    N, H = dc.shape
    row = scratch_row(gates)
    keep_h = np.empty((N, dh.shape[1]), dh.dtype)    # zoneout, as in elman.fast.lstm
    keep_c = np.empty((N, H), dh.dtype)
    for s in range(schedule.shape[0] - 1, -1, -1):
        t, p, q, n = backward_step(schedule, s, dh, dY, dY_at)
        unzone_grads(dh, dc, zh, zc, keep_h, keep_c, t, n)
        d_out = project_back(dh, dHs, W_hr, dR, t, n)     # what reaches o * tanh(c)
        for b in range(n):
            c = C[q, b] if absent(zh) else Cn[t, b]
            g, c_prev, d_b, dc_b = gates[t, b], C[p, b], d_out[b], dc[b]
            for j in range(H):
                ij, fj, gj, oj = g[j], g[H + j], g[2 * H + j], g[3 * H + j]
                y = tanh(c[j])
                do = ((ONE - oj) * oj) * (d_b[j] * y)
                dcj = dc_b[j] + d_b[j] * ((ONE - y * y) * oj) + do * w_co[j]
                di = ((ONE - ij) * ij) * (dcj * gj)
                df = ((ONE - fj) * fj) * (dcj * c_prev[j])
                row[j], row[H + j], row[3 * H + j] = di, df, do
                row[2 * H + j] = (ONE - gj * gj) * (dcj * ij)
                dc_b[j] = dcj * fj + di * w_ci[j] + df * w_cf[j]     # dc_prev
            copy_row_summed(row, dG[t, b], part)
            row_added(sums, part, rows)
        into_previous(dG[t, :n], W_hh, dh, dc, mask, zh, keep_h, keep_c, n)  # dG W_hh, ...
    settle_sums(sums, part, rows)


saved_width = 0        # the reference keeps tanh(c); backward here recomputes it from c


def forward(eq, loop):
    w_ci, w_cf, w_co = loop.consts[2:]         # (the one-tanh constants are not needed here)
    dt = loop.GX.dtype
    _forward(loop.GX, loop.bias, w_ci, w_cf, w_co, loop.W_hh_T, loop.S, loop.C,
             or_empty(loop.R, dt, 3), or_no_matrix(loop.W_hr_T, dt), loop.schedule,
             or_empty(loop.h_mask, dt, 2), *zone_arrays(loop.zone, dt))


def backward(eq, loop):
    w_ci, w_cf, w_co = loop.cache.consts[2:]
    dt = loop.dh.dtype
    W_hr = loop.w.get("weight_hr")
    dR = None if W_hr is None else np.empty(loop.dc.shape, dt)
    sums = bias_sums(loop.dGX.shape[2], dt)
    _backward(loop.cache.gates, loop.cache.C, w_ci, w_cf, w_co, *output_grad(loop, dt),
              loop.dh, loop.dc, loop.dGX, loop.W_step, or_empty(W_hr, dt, 2),
              or_empty(loop.dHs, dt, 3), or_empty(dR, dt, 2), loop.schedule,
              or_empty(loop.h_mask, dt, 2), *zone_arrays(loop.zone, dt), *sums)
    loop.bias_sums = (sums[0], None)
