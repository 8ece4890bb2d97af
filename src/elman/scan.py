"""The first-order linear recurrence ``h_t = a_t * h_{t-1} + b_t`` over time, element-wise, as a
blocked parallel scan, with its exact backward (the same recurrence run in reverse).

This is the whole time dependence of :class:`elman.MinGRU` and :class:`elman.MinLSTM`: their
gates read only ``x_t``, so ``a`` and ``b`` for every step come from one GEMM, and only this scan
is left. Shapes: ``a``, ``b`` (T, ...) with ``0 < a <= 1``; ``h0`` (...); the result ``h`` (T, ...)
holds ``h_1 .. h_T``.

Why not the closed form ``h_t = A_t (h_0 + sum_{s<=t} b_s / A_s)``, ``A_t = prod_{r<=t} a_r``
(cumprod and cumsum)? ``A_t`` shrinks geometrically: with ``a`` around 0.5 it underflows to 0
after ~1075 steps in float64 (~150 in float32), ``b_s / A_s`` becomes inf and ``0 * inf`` NaN.
Moving it to log space fixes the range but not the signs (``b`` may be negative) and loses the
exponent's precision at large ``t`` (``L_t - L_s`` of two large cumulative sums).

The blocked scan never divides. Split time into K blocks of C steps (C ~ sqrt(T)):

1. within every block at once (vectorised over the K blocks, C steps): the block's own prefix
   ``(P_j, Q_j)`` with ``P_j = a_j P_{j-1}`` (a cumulative product, which may underflow to 0
   harmlessly: it is only ever multiplied, never divided by) and ``Q_j = a_j Q_{j-1} + b_j``, so that inside the
   block ``h_j = P_j h_start + Q_j``;
2. the states at the blocks' starts: the same recurrence over the K block ends ``(P_C, Q_C)``,
   solved by this scan again (recursively, down to a short sequential loop);
3. every state at once: ``h = P * h_start + Q``.

Every number is a product of factors in (0, 1] times a ``b`` or a sum of such terms, as in the
sequential loop, so it is as accurate as the loop in any dtype and at any length. It costs about
three times the loop's arithmetic but ~2 sqrt(T) NumPy calls instead of T.

The backward: with ``g_t = dL/dh_t`` (total), ``g_t = dh_t + a_{t+1} g_{t+1}`` and ``g_T = dh_T
+ dh_n``: the same recurrence, reversed in time, with ``a`` shifted by one step. Then ``db_t =
g_t``, ``da_t = g_t h_{t-1}``, ``dh_0 = a_1 g_1``.

>>> import numpy as np
>>> a, b = np.full((5, 1), 0.5), np.ones((5, 1))
>>> scan(a, b, np.zeros(1))[:, 0]
array([1.    , 1.5   , 1.75  , 1.875 , 1.9375])
>>> np.allclose(scan(a, b, np.zeros(1)), scan_sequential(a, b, np.zeros(1)))
True
"""
from __future__ import annotations

import math

import numpy as np

__all__ = ["scan", "scan_sequential", "scan_backward", "SCANS"]

# below this many steps the sequential loop is the scan's base case
_SHORT = 16


def scan_sequential(a: np.ndarray, b: np.ndarray, h0: np.ndarray) -> np.ndarray:
    """``h_t = a_t * h_{t-1} + b_t`` one step at a time (the reference, and the base case)."""
    h = np.empty(np.broadcast_shapes(a.shape, b.shape), np.result_type(a, b, h0))
    prev = h0
    for t in range(h.shape[0]):
        np.multiply(a[t], prev, out=h[t])
        h[t] += b[t]
        prev = h[t]
    return h


def scan(a: np.ndarray, b: np.ndarray, h0: np.ndarray, block: int | None = None) -> np.ndarray:
    """``h_t = a_t * h_{t-1} + b_t`` for t = 1..T as a blocked scan (see the module docstring);
    ``block`` is the block length C (default ~sqrt(T))."""
    T = a.shape[0]
    if T <= _SHORT and block is None:
        return scan_sequential(a, b, h0)
    C = block or math.isqrt(T - 1) + 1
    K = -(-T // C)
    rest = a.shape[1:]
    dtype = np.result_type(a, b, h0)
    if K * C == T:                   # blocks as views of a; Q starts as a copy of b
        A = a.reshape((K, C) + rest)
        Q = np.array(b, dtype).reshape((K, C) + rest)
    else:                            # pad to K*C steps with the identity step (a = 1, b = 0)
        A = np.ones((K * C,) + rest, dtype)
        Q = np.zeros((K * C,) + rest, dtype)
        A[:T], Q[:T] = a, b
        A, Q = A.reshape((K, C) + rest), Q.reshape((K, C) + rest)
    # 1. each block's own prefix, all blocks at once
    # (a loop over the C positions, each over all K blocks: NumPy's cumprod along a middle
    # axis is several times slower)
    P = np.empty(A.shape, dtype)
    P[:, 0] = A[:, 0]
    work = np.empty((K,) + rest, dtype)
    for j in range(1, C):
        np.multiply(A[:, j], P[:, j - 1], out=P[:, j])
        Q[:, j] += np.multiply(A[:, j], Q[:, j - 1], out=work)
    # 2. the state entering each block: the scan over the block ends
    ends = scan(P[:, -1], Q[:, -1], h0)
    starts = np.concatenate([h0[None], ends[:-1]]) if K > 1 else h0[None]
    # 3. every state, in P's memory
    P *= starts[:, None]
    P += Q
    h = P
    return h.reshape((K * C,) + rest)[:T]


def scan_backward(a: np.ndarray, h0: np.ndarray, h: np.ndarray, dh: np.ndarray | None,
                  dh_n: np.ndarray | None, run=scan):
    """Gradients ``(da, db, dh0)`` of a scan ``h = run(a, b, h0)`` from ``dh`` (T, ...), the
    gradient wrt every ``h_t`` as an output, and ``dh_n``, the gradient wrt the last state
    (either may be None: zero). ``run`` is the scan that solves the reversed recurrence."""
    d = np.zeros(h.shape, h.dtype) if dh is None else dh
    last = np.zeros(h.shape[1:], h.dtype) if dh_n is None else dh_n
    # g_t = dh_t + a_{t+1} g_{t+1}, g_T = dh_T + dh_n: reversed in time, g_T's factor is 1
    g = run(np.concatenate([np.ones_like(a[:1]), a[:0:-1]]), np.ascontiguousarray(d[::-1]),
            last)[::-1]
    h_prev = np.concatenate([h0[None], h[:-1]])
    return g * h_prev, g, a[0] * g[0]


#: the two ways to run the recurrence, by the name a layer's ``mode`` gives
SCANS = {"scan": scan, "sequential": scan_sequential}
