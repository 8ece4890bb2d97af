"""A pass's weight gradients, ``dW += dG^T B``, in the form of product that runs fastest.

:func:`elman.timeloop.sequence_backward` ends with the weight gradients as whole-sequence
products of the pre-activation gradients ``dG`` (M = T*N rows, G columns) with the layer's
input ``X`` (M, I) and the previous states ``H_prev`` (M, P). As plain products ``dG^T @ B``
those with few columns ``B`` (I = 32 or 128) ran far below the GEMM's pace inside the
training steps (MKL, one thread a pass: 59-116 GFLOP/s where the large products ran at
140-166). Two other forms, each taken only where it was measured faster:

**Joined** (:func:`joins`, :func:`add_joined`): where both gradients come from one ``dG``
(the LSTM's, the RNN's; a layer-normalised cell has one for each side), ``X`` and ``H_prev``
are copied side by side, :data:`ROWS` rows at a time, into one array (it stays in L2), and
each chunk of rows is one product, added into a (G, I + P) array that is then split::

    [dW_ih | dW_hh] += sum over chunks c of dG[c]^T [X[c] | H_prev[c]]

MKL packs ``dG^T`` once instead of twice, and multiplies I + P columns at a time.

**Transposed** (:func:`add_product`): ``dW += (B^T dG)^T`` for a ``B`` of few columns,
the product's own output a (columns, G) array added back transposed.

Measured, whole training steps (two threads, medians): *joined*, old and new code in
alternating processes (0.4 s of steps after a 0.1 s pause, medians of 7, then of 5-7 such
pairs): the LSTM at (64, 100, 128, 256) 1.043x as fast, bidirectional 1.077x, two layers
1.019x; at (128, 200, 256, 512) 1.034x, bidirectional 1.054x; at (64, 100, 32, 128) it lost
((0.96-0.97x, chunks of 512 or 1024 rows), so :data:`MIN_STATE`. The products alone on one
thread (T*N = 6400): chunks of 256, 512, 1024 and 2048 rows 34.5, 33.7, 34.4 and 35.0 ms
against 42.7 for the two products at (I, P, G) = (128, 256, 1024); the RNN's shapes (G = P)
0.99-1.00x, so ``G >= 4 P``. *Transposed*, for ``B`` of up to 128 columns and ``G`` at least
three times as many (the same way of measuring, against the code with the joined products):
at (64, 100, 32, 128) the LN-LSTM 1.066x as fast, the LN-GRU 1.047x, the LN-RNN 1.022x, the
LSTM 1.006x, the GRU 1.009x, the RNN 0.984x, 0.986x and 1.008x (three runs: no change); at
(64, 100, 128, 256) the LN-LSTM 1.030x, the LN-GRU 1.025x, the GRU 1.021x. Up to 256
columns, against up to 128: the GRU at (128, 200, 256, 512) 1.012x, with two layers at (64,
100, 128, 256) 1.024x, the LN-LSTM and the LN-GRU there 1.004x and 1.006x.
"""
from __future__ import annotations

import numpy as np

from . import threads
from .fast import _mkl

__all__ = ["ROWS", "MIN_STATE", "joins", "add_joined", "transposes", "add_product"]

#: rows of ``[X | H_prev]`` copied and multiplied at a time
ROWS = 512

#: the smallest state size P for which the products are joined
MIN_STATE = 256

#: the most columns of ``B`` for which :func:`add_product` takes the transposed form
TRANSPOSED_MAX_COLUMNS = 256


def joins(G: int, P: int, dtype) -> bool:
    """Whether :func:`add_joined` takes a pass's two weight gradients of ``G`` gate columns and
    ``P`` state columns: where its products run on the calling thread alone
    (:func:`elman.threads.pinned`: a row block's or a direction's pass), on MKL (measured
    there only), for float32/float64, ``G >= 4 P`` and ``P >= MIN_STATE``."""
    return (G >= 4 * P and P >= MIN_STATE and threads.pinned() and _mkl.enabled()
            and np.dtype(dtype) in (np.float32, np.float64))


def add_joined(dG: np.ndarray, X: np.ndarray, H_prev: np.ndarray, g_ih: np.ndarray,
               g_hh: np.ndarray) -> None:
    """``g_ih += dG^T X`` (G, I) and ``g_hh += dG^T H_prev`` (G, P), from ``dG`` (M, G), ``X``
    (M, I) and ``H_prev`` (M, P), as one product a chunk of rows (the module docstring), on
    the calling thread."""
    M, I = X.shape
    P = H_prev.shape[1]
    Z = np.empty((min(ROWS, M), I + P), dG.dtype)
    both = np.empty((dG.shape[1], I + P), dG.dtype)
    for start in range(0, M, ROWS):
        stop = min(M, start + ROWS)
        n = stop - start
        Z[:n, :I] = X[start:stop]
        Z[:n, I:] = H_prev[start:stop]
        threads.one_thread_matmul(dG[start:stop].T, Z[:n], both, accumulate=start > 0)
    g_ih += both[:, :I]
    g_hh += both[:, I:]


def transposes(G: int, C: int) -> bool:
    """Whether the product ``g += dG^T B`` of ``G`` gate columns and ``C`` columns of ``B``
    takes the transposed form on one thread on MKL (the module docstring):
    ``C <= TRANSPOSED_MAX_COLUMNS`` and ``G >= 3 C``."""
    return C <= TRANSPOSED_MAX_COLUMNS and G >= 3 * C


def add_product(dG: np.ndarray, B: np.ndarray, g: np.ndarray) -> None:
    """``g += dG^T B`` (G, C) from ``dG`` (M, G) and ``B`` (M, C): as ``(B^T dG)^T`` where it
    runs on the calling thread alone on MKL, ``C <= TRANSPOSED_MAX_COLUMNS`` and ``G >= 3 C``
    (the module docstring), else as :func:`elman.threads.matmul` with ``accumulate``."""
    if transposes(dG.shape[1], B.shape[1]) and threads.pinned() and _mkl.enabled():
        g += threads.one_thread_matmul(B.T, dG).T
    else:
        threads.matmul(dG.T, B, g, accumulate=True)
