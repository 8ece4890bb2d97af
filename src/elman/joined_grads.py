"""The input and recurrent weight gradients of a pass as one product: ``dG^T [X | H_prev]``.

Where both weight gradients come from the same pre-activation gradients ``dG`` (T*N, G) (the
RNN's and the LSTM's, and not a layer-normalised cell's, whose two sides have their own),
:func:`elman.timeloop.sequence_backward` multiplies ``dG^T`` by the layer's input ``X``
(T*N, I) and by the previous states ``H_prev`` (T*N, P). As two products MKL packs ``dG^T``
twice, and the first, with few columns (I = 32 or 128), runs far below the GEMM's pace. Here
``X`` and ``H_prev`` are copied side by side, :data:`ROWS` rows at a time, into one array
(``Z``, ROWS x (I + P), it stays in L2), and each chunk of rows is one product
``dG[rows]^T Z`` added into a (G, I + P) array, which is then split between the two
gradients:

    [dW_ih | dW_hh] += sum over chunks c of dG[c]^T [X[c] | H_prev[c]]

Measured, the products alone on one thread (MKL's sequential GEMM, T*N = 6400 rows, medians
of 15, alternating): LSTM shapes (I, P, G) = (128, 256, 1024) 42.7 -> 33.7 ms (1.27x; two
such processes at once 43.4 -> 35.5), (256, 512, 2048) 1.10x, (256, 256, 1024) 1.04x, (512,
256, 1024) 1.02x; the RNN's (G = P) 0.99-1.00x. Chunks of 256, 512, 1024 and 2048 rows: 34.5,
33.7, 34.4 and 35.0 ms at the first shape; one copy of all rows 34.9 ms, and a (T*N, I + P)
array more. Whole training steps (two threads, old and new code in alternating processes,
0.4 s of steps after a 0.1 s pause, medians of 7, then of 5-7 such pairs): the LSTM at (64,
100, 128, 256) 1.043x as fast, bidirectional 1.077x, two layers 1.019x; at (128, 200, 256,
512) 1.034x, bidirectional 1.054x. At (64, 100, 32, 128) it lost (0.96-0.97x, chunks of 512
or 1024 rows): there the two products inside the step ran at 144 and 116 GFLOP/s, and the
copies cost more than the joined product saved; so :data:`MIN_STATE`.
"""
from __future__ import annotations

import numpy as np

from . import threads
from .fast import _mkl

__all__ = ["ROWS", "MIN_STATE", "joins", "add_weight_grads"]

#: rows of ``[X | H_prev]`` copied and multiplied at a time
ROWS = 512

#: the smallest state size P for which the products are joined (measured: the module docstring)
MIN_STATE = 256


def joins(G: int, P: int, dtype) -> bool:
    """Whether :func:`add_weight_grads` takes a pass's two weight gradients of ``G`` gate
    columns and ``P`` state columns: where its products run on the calling thread alone
    (:func:`elman.threads.pinned`: a row block's or a direction's pass), on MKL (measured
    there only), for float32/float64, ``G >= 4 P`` (the LSTM's shapes, where it was measured
    faster; the RNN's were not) and ``P >= MIN_STATE``."""
    return (G >= 4 * P and P >= MIN_STATE and threads.pinned() and _mkl.enabled()
            and np.dtype(dtype) in (np.float32, np.float64))


def add_weight_grads(dG: np.ndarray, X: np.ndarray, H_prev: np.ndarray, g_ih: np.ndarray,
                     g_hh: np.ndarray) -> None:
    """``g_ih += dG^T X`` (G, I) and ``g_hh += dG^T H_prev`` (G, P), from ``dG`` (M, G), ``X``
    (M, I) and ``H_prev`` (M, P), as the module docstring says, on the calling thread."""
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
