"""A row block's pass as one compiled call: its whole-sequence GEMMs (MKL's, through their
address) and its cell's compiled loop, without the GIL from the first to the last.

:func:`elman.timeloop.sequence_forward_rows` runs a layer's batch as two blocks of rows at
once, one on the calling thread and one on elman's second thread (the pair's partner). Each
block's pass was a few Python calls, each a short hold of the GIL between calls that release
it: the input projection (MKL through ctypes), the compiled loop, the copy of its output. Two
threads doing that at once hand the GIL to each other at every such step, and on a virtual
machine whose idle cores halt, a thread that waits for the GIL sleeps and takes ~30 us to
wake up. Measured on the Intel Xeon (Emerald Rapids, 2 cores), an LSTM at (32, 50, 16, 64):
a row block's forward took 504-534 us beside the other block, against 407 us of compiled
work on one thread alone (and 545 us, Python included, with the other block in a second
process instead of a second thread). Here the block's pass is one call into compiled code:

    forward:  GX = X W_ih^T (MKL's GEMM);  the loop;  out[:, rows] = h_1..T
    backward: the loop;  dW += dG^T B for each weight gradient (MKL's GEMMs, each in the
              form elman.weight_grads picks);  dX = dG W_ih, copied into its rows of dX

and the caller's bell rung from inside (:class:`elman.fast._pair.Ring`). The two directions of
a small bidirectional layer run so too, in training (:func:`elman.timeloop.forward_directions`,
:func:`~elman.timeloop.backward_directions`): the layer's input as it is (nothing to copy),
their states written into the layer's shared array (no output to copy). A kernel module
whose ``forward``/``backward`` call their loop through :meth:`elman.timeloop.ForwardLoop.run`
(:meth:`~elman.timeloop.BackwardLoop.run`) names in ``fused_calls`` a compiled function of its
own for each loop function, ``fused(block, args)``, whose body is :func:`forward_block` or
:func:`backward_block` with that loop: the loop a global of a function of the module's own,
so that numba caches it (a compiled function that takes another as an argument is typed by
that function object, and its cached form could not be loaded in another process:
"underlying object has vanished", measured).
"""
import numpy as np
from numba import literal_unroll, njit

from . import _cache  # noqa: F401  (before the decorators: the cache keyed by the package)
from ._blas import gemm_at
from ._pair import ring_bell

__all__ = ["forward_block", "backward_block"]


@njit(inline="always")
def forward_block(block, loop_function, args):
    """The body of a kernel module's fused forward pass: ``block`` is ``(bell, gen,
    gemm_address, X_from, X, W_ih_T, GX2, states, out)``. The partner's bell rung (``bell``,
    ``gen``: :class:`elman.fast._pair.Ring`'s; ``gen`` 0: none), from here, where the GIL is
    free; ``X[...] = X_from`` (T, rows, I: the block's rows of the layer's input, a strided
    view, into the block's own array; ``X_from`` empty: X holds them already); then
    ``GX2 = X @ W_ih_T`` by the ``cblas_?gemm`` at ``gemm_address`` (X as (M, I), W_ih_T
    (I, G*H) a transposed view of ``W_ih``, GX2 (M, G*H) the projections, M = T * rows), then
    ``loop_function(*args)`` (the cell's compiled forward loop, which reads GX2 as (T, rows,
    G*H)), then ``out[...] = states`` (the block's (T, rows, P) output, read from its states,
    into its rows of the layer's output; ``out`` empty: none)."""
    bell, gen, gemm_address, X_from, X, W_ih_T, GX2, states, out = block
    ring_bell(bell, gen)
    if X_from.size:
        _copy_rows(X_from, X)
    gemm_at(gemm_address, X.reshape(GX2.shape[0], X.shape[2]), W_ih_T, GX2, False)
    loop_function(*args)
    if out.size:
        _copy_rows(states, out)


@njit(inline="always")
def backward_block(block, loop_function, args):
    """The body of a kernel module's fused backward pass: ``block`` is ``(bell, gen,
    gemm_address, products, dG2, W_ih, dX2, dX_rows)``. The partner's bell rung (as
    :func:`forward_block`), then ``loop_function(*args)`` (the cell's compiled backward loop,
    which writes the pre-activation gradients), then each weight gradient of ``products``,
    tuples ``(dG, lo, hi, B, g, transposed)``: ``g += dG[:, lo:hi]^T B`` (dG (M, G) and B
    (M, C) C-contiguous, g (hi - lo, C)), as ``(B^T dG[:, lo:hi])^T`` where ``transposed``
    (:func:`elman.weight_grads.transposes`), by the ``cblas_?gemm`` at ``gemm_address``; then,
    where ``dX2`` (M, I) is not empty, the input gradient ``dX2 = dG2 @ W_ih`` (dG2
    (M, G*H), W_ih (G*H, I)), and, where ``dX_rows`` is not empty, ``dX_rows[...] = dX2``
    as (T, rows, I) (the block's rows of the layer's input gradient)."""
    bell, gen, gemm_address, products, dG2, W_ih, dX2, dX_rows = block
    ring_bell(bell, gen)
    loop_function(*args)
    # (literal_unroll: a product's B may be an array of another layout than the others', a
    # plane of a bidirectional layer's shared states, whose rows are 2P apart)
    for product in literal_unroll(products):
        dG, lo, hi, B, g, transposed = product
        if transposed:
            part = np.empty((B.shape[1], hi - lo), g.dtype)
            gemm_at(gemm_address, B.T, dG[:, lo:hi], part, False)
            for r in range(g.shape[0]):
                row = g[r]
                for c in range(g.shape[1]):
                    row[c] += part[c, r]
        else:
            gemm_at(gemm_address, dG[:, lo:hi].T, B, g, True)
    if dX2.size:
        gemm_at(gemm_address, dG2, W_ih, dX2, False)
    if dX_rows.size:
        _copy_rows(dX2.reshape(dX_rows.shape), dX_rows)


@njit(inline="always")
def _copy_rows(src, dst):
    """``dst[...] = src`` (T, rows, n), element by element in the innermost loop (numba's
    slice assignment builds a view a row: at 32 elements a row that took longer than the
    copy)."""
    T, rows, n = dst.shape
    for t in range(T):
        for b in range(rows):
            for k in range(n):
                dst[t, b, k] = src[t, b, k]
