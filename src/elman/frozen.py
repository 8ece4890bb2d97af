"""``elman.freeze(module)``: a copy of a module for inference whose weights can never change.

As ``torch.jit.freeze`` for a scripted model, and as an onnxruntime session (whose weights are
fixed when it is made), the frozen copy promises that its weights stay what they were: every
parameter's array is a read-only view of an immutable ``bytes`` object, so no write reaches it
(``p.data[...] = x`` raises, and NumPy refuses to make such an array writeable again). The
module it was made from stays as it was, trainable.

Why: a layer in ``eval()`` must see any write into its parameters between two calls, so a
batch of one, which keeps ``W_hh``'s and ``W_ih``'s panels from call to call
(:class:`elman.fast._packed.KeptPack`), compares each matrix with its panels at every call:
~50-100 us of an LSTM's call at H = 256. A frozen matrix cannot have changed, so its panels
are trusted without that compare (:func:`immutable_key`); and a batch's passes, which pack
their per-step matrix at every pass, take a frozen one's packing from the pass before
(:mod:`elman.fast._pass_packing`: inference of an LSTM at (64, 100, 32, 128) 1.03x as fast).

What the copy refuses, with an error that says so: an optimizer over its parameters,
``load_state_dict`` into it. Replacing an array (``p.data = a``) gives that parameter a
writable array again (checked as any other); ``copy.deepcopy`` of a frozen module gives an
ordinary, writable one.
"""
from __future__ import annotations

import copy

import numpy as np

__all__ = ["freeze", "immutable", "immutable_key"]


def freeze(module):
    """A copy of ``module`` in ``eval()`` mode whose parameters are read-only arrays on
    immutable memory (:func:`immutable`): for inference, with the same results as the module
    bit for bit. The module itself is not changed."""
    if not (hasattr(module, "named_parameters") and hasattr(module, "eval")):
        raise TypeError(f"freeze: expected an elman Module, got {type(module).__name__}")
    # (each parameter's array copied once, straight into its immutable form: the deep copy
    # takes it from the memo instead of copying the array first)
    memo = {id(param.data): immutable(param.data) for param in module.parameters()}
    return copy.deepcopy(module, memo).eval()


def immutable(array: np.ndarray) -> np.ndarray:
    """A read-only copy of ``array`` (C-contiguous, same shape and dtype) on a ``bytes`` object
    of its own: NumPy refuses to make an array on immutable memory writeable, so its contents
    can never change."""
    array = np.ascontiguousarray(array)
    return np.frombuffer(array.tobytes(), array.dtype).reshape(array.shape)


def immutable_key(W: np.ndarray):
    """``(memory, address, shape, strides)`` of ``W`` where its memory is an immutable
    ``bytes`` object (:func:`immutable`; the same key at a later call means the same values),
    else None. The key holds the memory itself, so it stays alive and its address unique."""
    if W.flags.writeable:
        return None
    memory = W.base
    while isinstance(memory, np.ndarray):
        memory = memory.base
    if not isinstance(memory, bytes):
        return None
    return memory, W.__array_interface__["data"][0], W.shape, W.strides
