"""A pass's packed per-step matrix, kept in its layer-direction's workspace from one pass to the
next (:data:`elman.timeloop.PACKINGS`), and taken as it is where its matrix is frozen.

Each pass of a batch packs the matrix of its per-step GEMMs (forward ``W_hh^T``, backward
``W_hh``: :func:`elman.timeloop._step_operand`), into the buffer of the pass before: a fresh
multi-megabyte buffer at every pass stalled on its huge pages (:func:`elman.fast._mkl.pack`).
Where the matrix is frozen (:func:`elman.freeze`: read-only, on immutable memory,
:func:`elman.frozen.immutable_key`), no write can reach it, so a buffer that was packed from it,
in the same form, still holds its packing: the pass takes the buffer as it is, and packs
nothing.

Why only frozen matrices: a layer's matrix may be written between two calls (an optimizer step,
``load_state_dict``, ``p.data[...] = x``), and every pass must see that. Checked against a copy
of the matrix kept with the buffer, the check cost what the packing it saved did: inference of
an LSTM at (64, 100, 32, 128), one and two layers, and of a GRU there, 0.99-1.00x as fast
as packing at every pass; with no packing and no check (the frozen case), 1.025-1.029x (one
process, the two ways alternating, medians of 30; an Intel Xeon, Emerald Rapids, MKL). A
pass's packing reads the matrix and writes its buffer from memory (the call's arrays between
two calls evict both from the caches), and so does a compare.
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from ..frozen import immutable_key

__all__ = ["PassPacking"]


class PassPacking:
    """A packing buffer of a layer-direction's passes, and, where the matrix last packed into
    it is frozen, what it holds: the matrix's :func:`elman.frozen.immutable_key` and the
    packing's form (backend, transpose, rows). Not thread-safe: a pass takes it from its
    workspace and gives it back after (as the workspace's arrays are lent)."""

    __slots__ = ("buffer", "holds")

    def __init__(self):
        self.buffer = None          # what the last packing returned (the next one's ``into``)
        self.holds = None           # (immutable_key(W), form) where W was frozen, else None

    def packed(self, W: np.ndarray, form: tuple, pack: Callable) -> np.ndarray:
        """The packing of ``W`` in ``form``: the buffer as it is where it already holds that
        (``W`` frozen, packed into it in that form by the last packing), else ``pack(into)``
        with ``into`` the buffer (the packing function reuses it where it fits), kept as the
        buffer."""
        key = immutable_key(W)
        if key is not None and self._holds(key, form):
            return self.buffer
        self.buffer = pack(self.buffer)
        self.holds = None if key is None else (key, form)
        return self.buffer

    def _holds(self, key: tuple, form: tuple) -> bool:
        if self.holds is None:
            return False
        (memory, *place), held_form = self.holds
        # (the memory itself, by identity: the key keeps it alive, so its address is unique)
        return memory is key[0] and place == list(key[1:]) and held_form == form
