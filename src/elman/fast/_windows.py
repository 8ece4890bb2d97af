"""Windows of arrays: where a strided view lies in a C-contiguous array of the same memory.

The compiled loops take C-contiguous arrays (one specialisation each). Two kinds of views reach
them: a layer's output gradient that is a window of a larger array (a direction's columns of a
bidirectional layer's ``dout``, a row block's rows), and a bidirectional layer's states, the two
directions' planes of one shared array (:func:`elman.timeloop.sequence_forward`'s ``states``).
These functions find that array and the view's place in it, so that the loops read the view
where it lies instead of a copy. Pure NumPy (no numba): :mod:`elman.timeloop` uses it too.
"""
from __future__ import annotations

import numpy as np

__all__ = ["window", "planes"]


def window(view: np.ndarray) -> tuple | None:
    """``(array, (row, column))`` where ``view`` (T, N, P) is the window from that row and
    column of a C-contiguous (T, N', P') array in the same memory (a row block's rows, a
    direction's columns, or both); None for any other layout.

    The array is a view of ``view``'s memory (``view.base``, C-contiguous, of its dtype) in
    planes of ``view``'s own strides: its element ``[t, row + b, column + j]`` lies where
    ``view[t, b, j]`` does."""
    owner, item = view.base, view.itemsize
    T, N, P = view.shape
    s0, s1, s2 = view.strides
    if not isinstance(owner, np.ndarray) or not owner.flags.c_contiguous or view.size == 0 \
            or owner.dtype != view.dtype or s2 != item or s1 <= 0 or s1 % item or s0 % s1:
        return None
    width, rows = s1 // item, s0 // s1
    plane = rows * width
    offset, rest = divmod(view.ctypes.data - owner.ctypes.data, item)
    if rest or offset < 0:
        return None
    first, within = divmod(offset, plane)
    row, column = divmod(within, width)
    flat = owner.reshape(-1)
    if row + N > rows or column + P > width or (first + T) * plane > flat.size:
        return None
    return (flat[first * plane:(first + T) * plane].reshape(T, rows, width),
            (int(row), int(column)))


def planes(S: np.ndarray) -> tuple:
    """``(array, d)``: states ``S`` (T+1, N, P) as a kernel that shares states
    (``shares_states``) takes them: ``S`` itself (and 0) where it is C-contiguous, else as
    plane ``d`` of the C-contiguous (T+1, N, D, P) array a bidirectional layer's two
    directions share (their columns of it, D = 2), ``array[:, :, d]`` being ``S``. The
    kernels index either through :func:`elman.fast._loop.state_rows`/``state_row``: a
    contiguous row either way."""
    T1, N, P = S.shape
    if S.flags.c_contiguous:
        return S, 0
    found = window(S)
    if found is None or found[1][0] or found[1][1] % P or found[0].shape[2] % P:
        raise ValueError(f"states of shape {S.shape} and strides {S.strides}: neither "
                         "C-contiguous nor a direction's columns of a shared array")
    array, (_, column) = found
    return array.reshape(T1, N, array.shape[2] // P, P), column // P
