"""Two threads on every time step of one sequence: the compiled side of
:func:`elman.timeloop.sequence_forward_pair`.

A batch of one sequence multiplies its state by all of ``W_hh`` at every step (an LSTM at
H = 256: 1 MB), and one core streams that from its cache no faster than ~100 GB/s. Split the
hidden units in two, and each thread reads only its half of ``W_hh``'s rows (the rows of its
units in every gate block), which then stays in its own core's cache from step to step; the
gates of a unit need nothing of the other half, so the threads meet once a step, where both
need the whole new state. The meeting has to cost far less than a step (a few us): a
condition variable's wake-up costs ~50 us on a virtual machine, so the threads spin on
counters in shared memory (atomic loads, stores and adds, with the CPU's ``pause`` in the spin),
as OpenBLAS's and OpenMP's threads do.

**The step protocol** (``sync``, one row of :data:`ROW` int64 per step, 128 bytes: the two
halves' claims in one cache line, the count of halves done, on which the threads spin, in the
next): a thread first waits until both halves
of the previous step are done (``sync[t-1, DONE] == 2``), then *claims* its own half of step
``t`` (an atomic add on ``sync[t, CLAIM + me]``: the first one to add gets it), computes it and
counts it done. Then it looks at the other half: still unclaimed a while later (``patience``
spins; none when the partner has not arrived at all or missed the last step) and it claims and
computes that one too. So a partner that is late, descheduled by a busy machine, or never
comes costs waiting only up to ``patience`` once: the caller's thread always finishes the
sequence by itself, and each half is computed exactly once, by whoever claimed it (the same
arithmetic either way: results do not depend on who computed what).

**Cache lines**: the two threads write the same rows of the gate and state arrays at the same
time, each its own units. A line holding units of both would travel between the cores at every
write (measured, LSTM H = 128: a half step took 9,000 instead of 4,500 cycles, and the sequence
ran slower than on one thread); the arrays are 64-byte aligned (:func:`aligned_empty`) and the
split point a multiple of :data:`ALIGN` elements.

x86-64 only (``pause``); :data:`SUPPORTED` says whether this machine may use it.
"""
from __future__ import annotations

import math
import os
import platform
import threading
import time

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic, overload

from . import _cache  # noqa: F401  (before the decorators: the cache keyed by the package)
from . import _blas
from ._blas import gemm
from ._panel_check import same_as_panels
from ._vectors import wide_vectors

__all__ = ["SUPPORTED", "ROW", "ALIGN", "pair_steps", "pair_stack", "pipe_stack", "rows_stack",
           "rows_work_size", "rows_arrays",
           "project_units",
           "unit_rows",
           "wait_for_bell", "ring_bell", "Ring", "aligned_empty", "aligned_arrays",
           "sequence_arrays", "sync_array",
           "fresh_counters", "fresh_states",
           "split_point", "Partner", "partner", "rest_partner", "SPIN_SECONDS",
           "PATIENCE_SECONDS", "CheckAside", "claim_check", "check_verdict", "claim_task",
           "finish_task", "wait_task"]

#: the CPU has ``pause`` (x86-64): the spin loops here are written for it
SUPPORTED = platform.machine().lower() in ("x86_64", "amd64")
ROW = 16               # int64 per step in ``sync``: 128 bytes, two cache lines
CLAIM, DONE = 0, 8     # sync[t, CLAIM + half]: claims of a half; sync[t, DONE]: halves done
ALIGN = 16             # the split point is a multiple of this many elements (64 bytes or more)


def _pointer(context, builder, signature, array, index):
    kind = signature.args[0]
    view = context.make_array(kind)(context, builder, array)
    return cgutils.get_item_pointer(context, builder, kind, view, [index])


@intrinsic
def _load(typingctx, array, index):
    """``array[index]`` (int64) as an atomic load with acquire order: what the other thread
    wrote before its release store is visible after it."""
    def codegen(context, builder, signature, args):
        return builder.load_atomic(_pointer(context, builder, signature, *args), "acquire", 8)
    return types.int64(array, index), codegen


@intrinsic
def _store(typingctx, array, index, value):
    """``array[index] = value`` (int64) as an atomic store with release order."""
    def codegen(context, builder, signature, args):
        builder.store_atomic(args[2], _pointer(context, builder, signature, args[0], args[1]),
                             "release", 8)
        return context.get_dummy_value()
    return types.void(array, index, value), codegen


@intrinsic
def _add(typingctx, array, index, value):
    """``array[index] += value`` (int64) atomically; returns the value before."""
    def codegen(context, builder, signature, args):
        return builder.atomic_rmw("add", _pointer(context, builder, signature, args[0], args[1]),
                                  args[2], "acq_rel")
    return types.int64(array, index, value), codegen


@intrinsic
def _pause(typingctx):
    """The CPU's spin-wait hint (x86 ``pause``): the spinning core yields its pipeline to the
    other hyperthread and does not flood the memory system with loads."""
    def codegen(context, builder, signature, args):
        kind = ir.FunctionType(ir.VoidType(), [])
        builder.call(cgutils.get_or_insert_function(builder.module, kind,
                                                    "llvm.x86.sse2.pause"), [])
        return context.get_dummy_value()
    return types.void(), codegen


@njit(nogil=True, cache=True)
def wait_for_bell(bell, seen, spins):
    """Spin until ``bell[0]`` differs from ``seen`` (a new sequence to share), at most
    ``spins`` times; returns ``bell[0]`` (``seen`` when none came)."""
    for _ in range(spins):
        value = _load(bell, 0)
        if value != seen:
            return value
        _pause()
    return _load(bell, 0)


@njit(inline="always")
def project_units(X, W_ih, ih_panels, compute, GX, H, lo, hi):
    """``GX[:, units] = X W_ih[units]^T`` for hidden units ``lo:hi`` of every gate block (G =
    GX.shape[1] // H): a cell's ``units`` at step 0 projects the whole sequence's input for
    its units, as products of T rows (every later step of these units needs step 0 done, so
    the projection is there when they run, whoever runs them). By the micro-kernel on
    ``ih_panels`` (a kept packing of ``W_ih^T``, flattened, as :func:`unit_rows`'s of
    ``W_hh``: each gate block's units whole panels) with the product at ``compute``, else
    (``ih_panels`` empty) BLAS's GEMM on ``W_ih``'s rows. Why: OpenBLAS packs ``W_ih`` anew
    at every call, and a GEMM of 50 rows on a transposed view of 128 of its rows ran at about
    60 GFLOP/s on one thread, the micro-kernel on kept panels at about 110 (an upper layer's
    projection, (50 x 256) @ (256 x 1024), took 393 us of one thread's BLAS in a two-layer
    LSTM's 1467 us call at H = 256)."""
    I = X.shape[1]
    zero = GX.dtype.type(0)
    for k in range(GX.shape[1] // H):
        a, b = k * H + lo, k * H + hi
        if ih_panels.shape[0] == 0:
            gemm(X, W_ih[a:b].T, GX[:, a:b])
        else:
            _blas._compute_at(compute, X.shape[0], b - a, I, X.ctypes.data, I,
                              ih_panels[a * I:].ctypes.data, zero, GX[:, a:].ctypes.data,
                              GX.shape[1])


@njit(inline="always")
def unit_rows(W_hh, panels, compute, h_prev, out, a, b, accumulate):
    """``out (+)= W_hh[a:b] h_prev`` (``accumulate``: added to ``out``): the rows of one gate
    block for a thread's hidden units. By the micro-kernel on ``panels`` (a kept packing of
    ``W_hh^T``, flattened, :class:`elman.fast._packed.KeptPack`; ``a`` and ``b`` on panel
    boundaries, so the rows are whole panels) with the product at ``compute``
    (:func:`elman.fast._packed.compute_address`), else (``panels`` empty) the GEMV on
    ``W_hh``'s rows (:func:`elman.fast._blas._gemv_rows`). Why: the micro-kernel reads
    panels 1.5-1.65x as fast (:data:`elman.fast._packed.ONE_ROW_MIN_STEPS`)."""
    if panels.shape[0] == 0:
        _blas._gemv_rows(W_hh[a:b], h_prev, out, accumulate)
    else:
        k = h_prev.shape[0]
        beta = out.dtype.type(1 if accumulate else 0)
        _blas._compute_at(compute, 1, b - a, k, h_prev.ctypes.data, k, panels[a * k:].ctypes.data,
                          beta, out.ctypes.data, b - a)


@njit(inline="always")
def _run_half(units, operands, sync, t, half, me, split, H):
    """Claim half ``half`` of step ``t``; if this thread got it, compute it and count it done.
    Returns whether it did."""
    if _add(sync, t * ROW + CLAIM + half, 1) != 0:
        return False
    lo, hi = (0, split) if half == 0 else (split, H)
    units(operands, t, lo, hi)          # (one call: the cell's units compiled once, not twice)
    _add(sync, t * ROW + DONE, 1)
    return True


@njit(inline="always")
def pair_steps(units, operands, T, H, sync, bell, gen, me, split, patience, spins):
    """Steps ``0..T-1`` of one sequence as thread ``me`` (0: the caller, which rings ``bell``
    with ``gen`` first; 1: the partner) of the two, ``units(operands, t, lo, hi)`` computing
    hidden units ``lo:hi`` of step ``t`` (see the module's docstring for the protocol).
    ``sync`` ((T + 1) * ROW int64 zeros, a new one for each sequence); its last row holds who
    has arrived. The caller returns when every step is done; the partner then waits for the
    next sequence (up to ``spins``) and returns the bell's value."""
    wide_vectors()                       # (the cell's units: :mod:`._vectors`)
    if me == 0:
        _store(bell, 0, gen)
    _store(sync, T * ROW + me, 1)
    other = 1 - me
    present = True                       # whether the partner took its half of the last step
    for t in range(T):
        if t > 0:
            while _load(sync, (t - 1) * ROW + DONE) < 2:
                _pause()
        # this thread's half, then the other's unless the partner claims it in time (one
        # call site of _run_half: each is a copy of the cell's units in the compiled code)
        for turn in range(2):
            half = me
            if turn == 1:
                half = other
                wait = 0
                if present and _load(sync, T * ROW + other) != 0:
                    wait = patience
                while wait > 0 and _load(sync, t * ROW + CLAIM + other) == 0:
                    _pause()
                    wait -= 1
            ran = _run_half(units, operands, sync, t, half, me, split, H)
            if turn == 1:
                present = not ran
    while _load(sync, (T - 1) * ROW + DONE) < 2:
        _pause()
    if me == 0:
        return gen
    return wait_for_bell(bell, gen, spins)


@njit(inline="always")
def pair_stack(direction, forward_lean, X, h0, c0, h_n, c_n, operands, schedules, outs, sync,
               bell, gen, me, spins):
    """A small bidirectional stack as thread ``me`` (0: the caller, which rings ``bell`` with
    ``gen`` first; 1: the partner): of each layer, the caller runs the forward direction and
    whoever claims it first the reverse one (``direction`` and ``forward_lean`` as in
    :func:`elman.fast._loop.stack_lean`), and both wait until both are done before the next
    layer, which reads them. ``outs`` (L, T, N, 2P): the layers' outputs, ``h_n``/``c_n`` the
    final states, written by both threads (each its own columns and rows); ``sync`` (L * ROW
    int64 zeros, a new one for each call): per layer, the reverse direction's claim and the
    count of directions done. A partner that comes late finds the reverse directions claimed
    and does nothing; so the caller never waits for a partner that has not come, only for one
    that is computing its direction. The caller returns ``gen``; the partner then waits for
    the next sequence (up to ``spins``) and returns the bell's value.

    Why: the two directions of a layer share nothing but the input, so they meet once a layer
    instead of once a step (:func:`pair_steps`), and each core reads only its own direction's
    ``W_hh``."""
    if me == 0:
        _store(bell, 0, gen)
    _pair_layer(direction, forward_lean, X, outs[0], 0, h0, c0, h_n, c_n, operands, schedules,
                sync, me)
    for layer in range(1, outs.shape[0]):
        _pair_layer(direction, forward_lean, outs[layer - 1], outs[layer], layer, h0, c0, h_n,
                    c_n, operands, schedules, sync, me)
    if me == 0:
        return gen
    return wait_for_bell(bell, gen, spins)


@njit(inline="always")
def _pair_layer(direction, forward_lean, layer_in, out, layer, h0, c0, h_n, c_n, operands,
                schedules, sync, me):
    """Layer ``layer`` of :func:`pair_stack` as thread ``me`` (a function of its own: the
    first layer reads the caller's ``X``, whose array type the later inputs need not share)."""
    row = layer * ROW
    if me == 0:
        direction(forward_lean, layer_in, out, 2 * layer, 0, h0, c0, h_n, c_n, operands,
                  schedules[0])
        _add(sync, row + DONE, 1)
    if _add(sync, row + CLAIM, 1) == 0:
        direction(forward_lean, layer_in, out, 2 * layer + 1, 1, h0, c0, h_n, c_n, operands,
                  schedules[1])
        _add(sync, row + DONE, 1)
    while _load(sync, row + DONE) < 2:
        _pause()


@njit(inline="always")
def pipe_stack(direction, forward_lean, X, h0, c0, h_n, c_n, operands, schedule, last, outs,
               sync, bell, gen, me, spins):
    """A unidirectional stack of layers as thread ``me`` of two (0: the caller, which rings
    ``bell`` with ``gen`` first; 1: the partner), the layers in a pipeline: the caller claims
    every layer in order, the partner the odd ones (so each keeps the same layers' weights in
    its core's cache from call to call), and each runs what it claimed chunk by chunk
    (``schedule``: a chunk's steps,
    ``last``: the last chunk's), each chunk as soon as the layer below has finished it, so
    that layer ``l`` runs chunk ``k`` while layer ``l - 1`` runs chunk ``k + 1``.
    ``direction`` and ``forward_lean`` as in :func:`elman.fast._loop.stack_lean` (a chunk is
    one call of the module's lean loop, from the states the chunk before left in
    ``h_n``/``c_n``); ``outs`` (L, T, N, P): the layers' outputs; ``sync`` ((L + 1) * ROW
    int64 zeros, a new one for each call): in its first row each layer's claims, then each
    layer's chunks done, a row each. A partner that comes late claims what is left of its
    layers (nothing, or a layer above the caller's); one that never comes leaves every layer
    to the caller, which returns once the top layer is done (so all are). The caller returns ``gen``; the partner
    then waits for the next sequence (up to ``spins``) and returns the bell's value.

    Why: the layers of one sequence depend on each other only through the layer below's
    output, step by step; on two threads, each with its own layer's weights in its own core's
    cache, they meet once a chunk (tens of microseconds of work), not once a step (a few
    microseconds, :func:`pair_steps`), and the stack takes about one layer's time instead of
    the sum of its layers'."""
    if me == 0:
        _store(bell, 0, gen)
    layers = outs.shape[0]
    chunks = -(-outs.shape[1] // schedule.shape[0])
    for layer in range(me, layers, 1 + me):      # (the partner: the odd layers only)
        if _add(sync, layer, 1) != 0:
            continue                              # (the other thread has it)
        if layer == 0:
            _pipe_layer(direction, forward_lean, X, outs, 0, h0, c0, h_n, c_n, operands,
                        schedule, last, sync, chunks)
        else:
            _pipe_layer(direction, forward_lean, outs[layer - 1], outs, layer, h0, c0, h_n,
                        c_n, operands, schedule, last, sync, chunks)
    if me == 0:
        while _load(sync, layers * ROW) < chunks:
            _pause()
        return gen
    return wait_for_bell(bell, gen, spins)


@njit(inline="always")
def _pipe_layer(direction, forward_lean, layer_in, outs, layer, h0, c0, h_n, c_n, operands,
                schedule, last, sync, chunks):
    """Layer ``layer`` of :func:`pipe_stack`, chunk by chunk, each after the layer below has
    counted it done (a function of its own: the first layer reads the caller's ``X``, whose
    array type the next layers' inputs need not share)."""
    T, size = outs.shape[1], schedule.shape[0]
    for k in range(chunks):
        if layer > 0:
            while _load(sync, layer * ROW) <= k:
                _pause()
        start = k * size
        stop = min(T, start + size)
        steps = schedule if stop - start == size else last
        if k == 0:
            direction(forward_lean, layer_in[start:stop], outs[layer, start:stop], layer, 0,
                      h0, c0, h_n, c_n, operands, steps)
        else:                     # (from the states the chunk before kept in h_n and c_n)
            direction(forward_lean, layer_in[start:stop], outs[layer, start:stop], layer, 0,
                      h_n, c_n, h_n, c_n, operands, steps)
        _store(sync, (layer + 1) * ROW, k + 1)


@njit(inline="always")
def rows_stack(direction, X, h0, c0, h_n, c_n, operands, schedules, first, out, work, sync,
               bell, gen, me, spins):
    """A stack of layers on a batch whose rows run as two blocks at once, thread ``me`` of two
    (0: the caller, which rings ``bell`` with ``gen`` first; 1: the partner): the caller runs
    the whole stack on rows ``:first``, and whoever claims it first on rows ``first:``, each
    layer-direction by ``direction(layer_in, out, k, d, h0, c0, h_n, c_n, operands,
    schedule, arrays)`` (the kernel module's: its lean loop, projection included, on the
    block's arrays, :func:`rows_arrays`). Rows are independent through every layer and
    direction, so the blocks never meet before the end: the caller waits only for a partner
    that claimed the second block. ``schedules`` (2, D, T, 4): each block's (its own row
    count); ``out`` (T, N, D*P), ``h_n`` and ``c_n`` (L*D, N, P or H): written by both
    threads, each its own rows; ``work`` (2, :func:`rows_work_size`): each block's arrays,
    carved from its row (kept by the caller from call to call); ``sync`` (:data:`ROW` int64
    zeros, a new one for each call): the second block's claim and the count of blocks done.
    A partner that comes late finds the block claimed and does nothing. The caller returns
    ``gen``; the partner then waits for the next sequence (up to ``spins``) and returns the
    bell's value.

    Why: the general path's row blocks (:func:`elman.timeloop.sequence_forward_rows`) hand
    each layer's blocks to a Python thread and back: their bookkeeping ran under one GIL, and
    the hand-over cost tens of microseconds on a virtual machine, so a small batch's blocks
    started 100-300 us into a call of 600-900 (LSTM (32, 50, 16, 64)). Why arrays kept by
    the caller: made at every call inside the compiled code (as the lean loops make theirs),
    a few MB of them cost 400-3,400 page faults a call (1-5 ms of the kernel's time) where
    the C library gave the memory back to the system between calls, which depends on the
    process's history of allocations."""
    if me == 0:
        _store(bell, 0, gen)
        _rows_block(direction, X, h0, c0, h_n, c_n, operands, schedules[0], 0, first, out,
                    work[0])
        _add(sync, DONE, 1)
    if _add(sync, CLAIM, 1) == 0:
        _rows_block(direction, X, h0, c0, h_n, c_n, operands, schedules[1], first, X.shape[1],
                    out, work[1])
        _add(sync, DONE, 1)
    if me == 0:
        while _load(sync, DONE) < 2:
            _pause()
        return gen
    return wait_for_bell(bell, gen, spins)


@njit(cache=True)
def rows_work_size(T, n, I, GH, P, H, D):
    """Elements of one block's arrays for :func:`rows_arrays` (each on a cache line of its
    own): its input, two layer outputs in turn, and one layer-direction's arrays at a time
    (the projections, the states, the cell states or the GRU's per-step keep, a step's
    scratch row block)."""
    total = 0
    for size in (T * n * I, T * n * D * P, T * n * D * P, T * n * GH, (T + 1) * n * P,
                 (T + 1) * n * H, T * n * H, n * GH):
        total += -(-size // ALIGN) * ALIGN
    return total


@njit(inline="always")
def rows_arrays(buf, T, n, I, GH, P, H, D):
    """The arrays of one block carved from ``buf`` (a row of ``work``, 64-byte aligned):
    ``(X, ping, pong, GX, S, C, E, g)`` of shapes (T, n, I), (T, n, D*P) twice, (T, n, GH),
    (T + 1, n, P), (T + 1, n, H), (T, n, H), (n, GH)."""
    at = 0
    X = buf[at:at + T * n * I].reshape((T, n, I))
    at += -(-(T * n * I) // ALIGN) * ALIGN
    ping = buf[at:at + T * n * D * P].reshape((T, n, D * P))
    at += -(-(T * n * D * P) // ALIGN) * ALIGN
    pong = buf[at:at + T * n * D * P].reshape((T, n, D * P))
    at += -(-(T * n * D * P) // ALIGN) * ALIGN
    GX = buf[at:at + T * n * GH].reshape((T, n, GH))
    at += -(-(T * n * GH) // ALIGN) * ALIGN
    S = buf[at:at + (T + 1) * n * P].reshape((T + 1, n, P))
    at += -(-((T + 1) * n * P) // ALIGN) * ALIGN
    C = buf[at:at + (T + 1) * n * H].reshape((T + 1, n, H))
    at += -(-((T + 1) * n * H) // ALIGN) * ALIGN
    E = buf[at:at + T * n * H].reshape((T, n, H))
    at += -(-(T * n * H) // ALIGN) * ALIGN
    g = buf[at:at + n * GH].reshape((n, GH))
    return X, ping, pong, GX, S, C, E, g


@njit(inline="always")
def _rows_block(direction, X, h0, c0, h_n, c_n, operands, schedules, lo, hi, out, buf):
    """Rows ``lo:hi`` of :func:`rows_stack`: their input copied into the block's arrays
    (the lean loops take C-contiguous ones), each layer into one of two output arrays in
    turn, the last one's rows and the final states into the caller's arrays (``c0``/``c_n``
    None for a cell without a cell state)."""
    T, n, I = X.shape[0], hi - lo, X.shape[2]
    D = schedules.shape[0]
    P, H = h_n.shape[2], out.shape[2] // D
    GH = operands[1][0].shape[0]                       # (every kernel's bias: (G*H,))
    arrays = rows_arrays(buf, T, n, I, GH, P, H, D)
    arrays[0][...] = X[:, lo:hi]
    h_rows, c_rows = _rows_of(h0, lo, hi), _rows_of(c0, lo, hi)
    h_last, c_last = np.empty_like(h_rows), _empty_like(c_rows)
    layers = h0.shape[0] // D
    for layer in range(layers):
        # layer l reads the block's input (l = 0) or layer l - 1's output, and writes into the
        # other of the two output arrays
        ping, pong = arrays[1], arrays[2]
        layer_in = arrays[0] if layer == 0 else pong if layer % 2 == 0 else ping
        layer_out = ping if layer % 2 == 0 else pong
        for d in range(D):
            direction(layer_in, layer_out, layer * D + d, d, h_rows, c_rows, h_last, c_last,
                      operands, schedules[d], arrays)
        if layer == layers - 1:
            out[:, lo:hi] = layer_out
    h_n[:, lo:hi] = h_last
    _put_rows(c_n, c_last, lo, hi)


def _rows_of(a, lo, hi):
    """``a[:, lo:hi]`` as a C-contiguous array; None for None (compiled code only)."""
    raise NotImplementedError("_rows_of runs in compiled code only")


def _empty_like(a):
    """``np.empty_like(a)``; None for None (compiled code only)."""
    raise NotImplementedError("_empty_like runs in compiled code only")


def _put_rows(a, rows, lo, hi):
    """``a[:, lo:hi] = rows``; nothing for None (compiled code only)."""
    raise NotImplementedError("_put_rows runs in compiled code only")


# (three overloads, not a branch on ``is None``: inside an inlined function numba types both
# sides of such a branch, and an LSTM's arrays met the None side's calls)
@overload(_rows_of, inline="always")
def _rows_of_impl(a, lo, hi):
    if isinstance(a, types.NoneType):
        return lambda a, lo, hi: None
    return lambda a, lo, hi: np.ascontiguousarray(a[:, lo:hi])


@overload(_empty_like, inline="always")
def _empty_like_impl(a):
    if isinstance(a, types.NoneType):
        return lambda a: None
    return lambda a: np.empty_like(a)


@overload(_put_rows, inline="always")
def _put_rows_impl(a, rows, lo, hi):
    if isinstance(a, types.NoneType):
        return lambda a, rows, lo, hi: None

    def put(a, rows, lo, hi):
        a[:, lo:hi] = rows
    return put


def sync_array(T: int) -> np.ndarray:
    """The zeroed counters of one sequence's steps (see :func:`pair_steps`), a step's row on
    its own two cache lines."""
    return fresh_counters((T + 1) * ROW)


@njit(nogil=True, cache=True)
def _fresh_lines(nbytes):
    """A new uint8 array of ``nbytes`` starting on a 64-byte boundary, and room after it to the
    next boundary (in numba: the buffer's address costs ~2 us in Python, ``ndarray.ctypes``)."""
    raw = np.empty(nbytes + 128, np.uint8)
    at = -raw.ctypes.data & 63
    return raw[at:at + nbytes]


@njit(nogil=True, cache=True)
def fresh_counters(words):
    """``words`` int64 zeros, a new array on cache lines of its own (a call's ``sync``, a
    check's state: fresh at every call, see :func:`sequence_arrays`)."""
    counters = _fresh_lines(words * 8).view(np.int64)
    counters[:] = 0
    return counters


@njit(nogil=True, cache=True)
def fresh_states(like, rows, width, words):
    """``(S (rows, width) of like's dtype, uninitialised; sync (words,) int64 zeros)``, new and
    each on cache lines of its own, from one block: :func:`sequence_arrays`'s two fresh
    arrays in one compiled call (carving them in Python cost ~25 us of an LSTM's pair call at
    H = 256, measured inside the call, where its code and data are out of the caches)."""
    size = rows * width * like.itemsize
    lines = (size + 63) // 64 * 64
    block = _fresh_lines(lines + words * 8)
    sync = block[lines:].view(np.int64)
    sync[:] = 0
    return block[:size].view(like.dtype).reshape((rows, width)), sync


def sequence_arrays(T: int, GH: int, H: int, cell: bool, dtype, reuse=None) -> tuple:
    """``(GX (T, GH), g (GH,), S (T + 1, H), C (T + 1, H) or None, sync, kept)`` of one
    sequence's pair call, every array on cache lines of its own (:func:`aligned_arrays`),
    ``sync`` zeroed (:func:`sync_array`'s form). GX, g and C never leave the call: they come
    from ``reuse``, what an earlier call returned as ``kept`` (its block of memory and the
    arrays carved from it: as they are for the same sizes, carved anew from the block where
    it is large enough), else from a new block; the caller keeps ``kept`` for the next call.
    (A fresh block of 100-200 KB came from the system at every call and cost its page faults,
    and carving arrays in Python costs ~1.5 us each: together 11 us of a 150 us call, LSTM
    H = 128, T = 50.) Safe to reuse because a partner thread that comes late to an earlier
    call, whose steps its caller finished, finds every half claimed in that call's own
    ``sync`` and touches nothing else; so ``sync`` is always fresh, and S is the caller's
    output."""
    key = (T, GH, H, cell, dtype)
    if reuse is not None and reuse[0] == key:
        kept = reuse
    else:
        inner = _layout([((T, GH), dtype), ((GH,), dtype)]
                        + ([((T + 1, H), dtype)] if cell else []))
        block = reuse[1] if reuse is not None and reuse[1].nbytes >= inner[0] else \
            np.empty(inner[0], np.uint8)
        kept = (key, block, _carve(inner, block))
    GX, g, *C = kept[2]
    S, sync = fresh_states(g, T + 1, H, (T + 1) * ROW)
    return GX, g, S, C[0] if cell else None, sync, kept


def split_point(H: int) -> int:
    """Where the hidden units split: about half, on a multiple of :data:`ALIGN`."""
    return max(ALIGN, (H // 2) // ALIGN * ALIGN)


def aligned_empty(shape, dtype) -> np.ndarray:
    """``np.empty(shape, dtype)`` starting on a 64-byte boundary (NumPy promises 16)."""
    return aligned_arrays((shape, dtype))[0]


def aligned_arrays(*specs, block=None) -> list:
    """Uninitialised arrays of the given ``(shape, dtype)``, each starting on a 64-byte
    boundary and ending before the next one's line, carved from one allocation (``block``, a
    uint8 array of at least :func:`_span` bytes, or a new one). (Why one: each array's own
    aligned allocation cost 5-6 us of Python, ``np.prod`` and the buffer's address included,
    and a pair call needs five; measured: 55 us of a 190 us call outside its compiled
    loop.)"""
    return _carve(_layout(specs), block)


def _layout(specs) -> tuple:
    """``(bytes, [(shape, dtype, nbytes, offset)])`` of :func:`aligned_arrays`: each array's
    offset from the first line boundary of the block, and the block's size (:func:`_span`)."""
    sized = _sized(specs)
    parts, at = [], 0
    for shape, dtype, nbytes in sized:
        parts.append((shape, dtype, nbytes, at))
        at += _lines(nbytes)
    return _span(sized), parts


def _carve(layout, block=None) -> list:
    """The arrays of a :func:`_layout` from ``block`` (or a new one), from its first 64-byte
    boundary on."""
    span, parts = layout
    raw = np.empty(span, np.uint8) if block is None else block
    at = -raw.ctypes.data % 64
    return [raw[at + offset:at + offset + nbytes].view(dtype).reshape(shape)
            for shape, dtype, nbytes, offset in parts]


def _sized(specs) -> list:
    """``(shape, dtype)`` pairs as ``(shape tuple, np.dtype, bytes)``."""
    sized = []
    for shape, dtype in specs:
        shape = (shape,) if isinstance(shape, int) else tuple(shape)
        dtype = np.dtype(dtype)
        sized.append((shape, dtype, math.prod(shape) * dtype.itemsize))
    return sized


def _span(sized) -> int:
    """The bytes :func:`aligned_arrays` needs for :func:`_sized` arrays: each rounded up to
    whole lines, and a line to align the first."""
    return 64 + sum(_lines(nbytes) for _, _, nbytes in sized)


def _lines(nbytes: int) -> int:
    """``nbytes`` rounded up to whole 64-byte cache lines."""
    return -(-nbytes // 64) * 64


#: how long the partner thread spins for the next sequence after one before it sleeps (s):
#: back-to-back calls (a stream of sequences, a benchmark) find it awake; after a pause the
#: first call wakes it (~50 us on a virtual machine), and the caller starts alone meanwhile
SPIN_SECONDS = 0.002
#: how long a thread waits for its partner to claim its half of a step before taking it (s)
PATIENCE_SECONDS = 2e-5


class Partner:
    """elman's second thread: one daemon thread, started at its first task, that spins for
    the next one for :data:`SPIN_SECONDS` after each and then sleeps on an event. It serves
    :func:`pair_steps` (:meth:`share` runs a sequence's steps on the caller's thread and
    offers them to the partner: the caller rings the bell from inside its compiled loop, the
    GIL free then, so the partner picks the task up without a wait, and finishes every step
    the partner does not claim) and :func:`elman.threads.concurrently` (:meth:`beside`: two
    tasks at once, row blocks or directions). The partner never holds the caller up: a task
    it has not claimed by the time the caller needs it, the caller runs itself."""

    def __init__(self):
        self.bell = aligned_empty(ROW, np.int64)      # (a line of its own: the partner spins
        self.bell[:] = 0                               # on it for SPIN_SECONDS after each call)
        self.gen = 0
        self.posted = 0.0                  # when the last task was posted (perf_counter)
        self.task = None
        self.sleeping = True
        self.wake = threading.Event()
        self.error = None                  # the last exception of a task on the partner
        per_second = _spins_per_second(self.bell)
        self.spins = max(1, int(SPIN_SECONDS * per_second))
        self.patience = max(1, int(PATIENCE_SECONDS * per_second))
        threading.Thread(target=self._run, name="elman-pair", daemon=True).start()

    def share(self, steps):
        """``steps(gen, me)`` on this thread as ``me = 0`` (it rings the bell with ``gen``),
        offered to the partner as ``me = 1``. Returns what this thread's call returns."""
        return steps(self._post(steps), 0)

    def _post(self, task) -> int:
        """Make ``task`` the partner's next, under a new generation (returned), waking a
        sleeping partner; the bell is rung by the caller."""
        self.gen += 1
        self.posted = time.perf_counter()
        self.task = task
        if self.sleeping:
            self.wake.set()
        return self.gen

    def beside(self, first, second, ring: bool = False) -> tuple:
        """``(first(), second())``, run at once: ``first`` offered to the partner, ``second``
        run here; then ``first`` run here too if the partner has not claimed it by then (a
        partner that is asleep, late or busy elsewhere never holds the caller up), else its
        result waited for, spinning (then sleeping after :data:`SPIN_SECONDS`). An exception
        in either is raised here once neither runs (``second``'s if both fail; ``first`` is
        not started here after ``second`` failed).

        ``ring``: ``second`` is called as ``second(ring=Ring(...))`` and rings the partner's
        bell itself (:class:`Ring`), from compiled code once it has let go of the GIL, as
        :meth:`share`'s steps do: the partner, which spins for the bell, then finds the GIL
        free. (Rung by the caller, the bell woke a partner whose first Python then waited for
        the caller's, asleep: 80-120 us from the bell to the partner's first compiled call,
        measured in the row blocks of an LSTM at (32, 50, 16, 64); a thread waiting for the
        GIL sleeps, and this virtual machine's idle cores halt.) Rung here after ``second``
        where it did not ring. A bell rung later than :data:`SPIN_SECONDS` after the post
        finds the partner asleep (as :meth:`share`'s), and the caller then runs ``first``
        too, once ``second`` is done.

        Why not a thread pool (``concurrent.futures``, as before): its hand-offs are a
        condition variable's, and on a virtual machine whose idle cores halt (this project's:
        ``haltpoll`` with ``guest_halt_poll_ns`` 0) each wake-up of a sleeping thread costs
        ~30 us: submit and result with nothing to run took 65-70 us a call in most processes
        (10 us in some), at each forward and backward of a layer's row blocks or directions.
        Here the partner spins for the task, and the task's end is a store the caller spins
        on, made from compiled code (:func:`finish_task`) once the partner has let go of the
        GIL. What stays is the GIL: the partner waits for it while the caller's Python
        runs up to its first compiled call (35-60 us from the offer to the partner's start).
        What it gains, and where the pool is kept: :data:`elman.threads.PARTNER_MAX_FLOPS`."""
        state = fresh_counters(ROW)
        outcome = [None, None]             # first's result, or the exception it raised
        finished = threading.Event()       # (set with the store: a caller past its spin)
        spins = self.spins

        def side(gen, me):
            if not claim_task(state):      # (the caller took it: spin for the next task)
                return wait_for_bell(self.bell, gen, spins)
            try:
                outcome[0] = first()
            except BaseException as error:
                outcome[1] = error
            finished.set()
            return finish_task(state, self.bell, gen, spins)

        if ring:
            bell = Ring(self.bell, self._post(side))
            try:
                result = second(ring=bell)
            except BaseException:
                bell()
                if not claim_task(state):
                    self._wait(state, finished)
                raise
            bell()
            if self.sleeping:              # (as offer: asleep since the post, it missed it)
                self.wake.set()
        else:
            self.offer(side)
            try:
                result = second()
            except BaseException:
                if not claim_task(state):      # (the partner runs first: let it finish)
                    self._wait(state, finished)
                raise
        if claim_task(state):
            return first(), result
        self._wait(state, finished)
        if outcome[1] is not None:
            raise outcome[1]
        return outcome[0], result

    def _wait(self, state, finished) -> None:
        """Until the partner has finished the task of :meth:`beside` whose ``state`` it
        claimed: spinning for up to :data:`SPIN_SECONDS`, then asleep on ``finished``."""
        if not wait_task(state, self.spins):
            finished.wait()

    def offer(self, task):
        """``task(gen, 1)`` offered to the partner while this thread goes on with other work
        (:class:`CheckAside`; :meth:`share` instead runs a task's other side here, which rings
        the bell from compiled code): a partner that takes it returns ``gen`` from it and then
        sleeps until the next call wakes it (:meth:`beside`'s tasks spin for the next one
        instead). The caller must not depend on it coming."""
        _ring(self.bell, self._post(task))
        # (once more after the bell: a partner that was awake at the post may have given up
        # spinning since, the post long before the bell, e.g. a garbage collection between
        # them; asleep now, it would not see the bell)
        if self.sleeping:
            self.wake.set()

    def rest(self):
        """Stop spinning for the next sequence now (the next :meth:`share` wakes the
        partner): the caller's next call runs without the pair, and its other threads
        (BLAS's) need the core (behind a spinning partner a GEMM on two threads waited for
        its worker up to a scheduler's time slice: measured, an LSTM stack's one-thread calls
        right after a pair call took 2-3x their time). A partner inside a sequence finishes
        it first; one that misses a sequence because of this leaves it to its caller, as any
        late partner does."""
        self.task = None
        self.gen += 1
        _ring(self.bell, self.gen)

    def _run(self):
        seen = 0
        while True:
            rung = wait_for_bell(self.bell, seen, self.spins)
            while rung != seen:          # a sequence: its steps, then spin for the next
                seen = rung
                task = self.task
                if task is None:         # rest(): sleep until the next sequence
                    break
                try:
                    rung = task(seen, 1)
                except BaseException as error:    # (never raised to anyone: the caller
                    self.error = error            # computes the steps the partner left)
                    rung = seen
            self.sleeping = True
            # No bell since, and no task posted whose bell is still to ring (a caller that
            # found the partner awake in _post and rings just after this, from compiled code
            # for share: offer wakes a sleeping partner after its bell too): sleep until one
            # rings. (A post whose bell has not rung within SPIN_SECONDS is given up: its
            # caller computes what the partner does not claim.)
            if int(self.bell[0]) == seen and (
                    self.gen == seen or time.perf_counter() - self.posted > SPIN_SECONDS):
                self.wake.wait()
            self.wake.clear()
            self.sleeping = False


@njit(nogil=True, cache=True)
def _ring(bell, gen):
    """``bell[0] = gen`` as the release store the partner's acquire loads pair with."""
    _store(bell, 0, gen)


@njit(inline="always")
def ring_bell(bell, gen):
    """:class:`Ring`'s bell rung from compiled code (``gen`` 0: no bell to ring)."""
    if gen != 0 and _load(bell, 0) != gen:
        _store(bell, 0, gen)


class Ring:
    """The partner's bell and the generation of a task posted to it (:meth:`Partner.beside`
    with ``ring``), for the caller's task to ring from compiled code (:func:`ring_bell` on
    ``bell`` and ``gen``), or here (``ring()``), where it has not."""

    __slots__ = ("bell", "gen")

    def __init__(self, bell: np.ndarray, gen: int):
        self.bell, self.gen = bell, gen

    def __call__(self) -> None:
        if int(self.bell[0]) != self.gen:
            _ring(self.bell, self.gen)


TASK_CLAIM, TASK_DONE = 0, 8          # a task of Partner.beside: its claims; 1 when done


@njit(nogil=True, cache=True)
def claim_task(state):
    """Claim the task of :meth:`Partner.beside` whose ``state`` this is (an atomic add on
    ``state[TASK_CLAIM]``); whether this thread got it (the first to add)."""
    return _add(state, TASK_CLAIM, 1) == 0


@njit(nogil=True, cache=True)
def finish_task(state, bell, gen, spins):
    """The partner's end of a task of :meth:`Partner.beside`: mark it done (a release store
    on ``state[TASK_DONE]``), from compiled code, so that the caller, which spins on it,
    finds the GIL free when it sees it; then spin for the next task
    (:func:`wait_for_bell`'s return)."""
    _store(state, TASK_DONE, 1)
    return wait_for_bell(bell, gen, spins)


@njit(nogil=True, cache=True)
def wait_task(state, spins):
    """Spin until the task of ``state`` is done, at most ``spins`` times; whether it is."""
    for _ in range(spins):
        if _load(state, TASK_DONE) != 0:
            return True
        _pause()
    return _load(state, TASK_DONE) != 0


CHECK_CLAIM, CHECK_VERDICT = 0, 8      # a CheckAside's state: the claims; 1 same, 2 differs


@njit(nogil=True, cache=True)
def claim_check(state, a, a_panels, b, b_panels):
    """Claim the check of :class:`CheckAside` (an atomic add on ``state[CHECK_CLAIM]``: the
    first thread to add gets it); if this thread got it, compare ``a`` with the panels
    ``a_panels`` packed from it and ``b`` with ``b_panels`` (words,
    :func:`elman.fast._panel_check.same_as_panels`) and store the verdict. Returns whether
    this thread ran it."""
    if _add(state, CHECK_CLAIM, 1) != 0:
        return False
    same = same_as_panels(a, a_panels) and same_as_panels(b, b_panels)
    _store(state, CHECK_VERDICT, 1 if same else 2)
    return True


@njit(nogil=True, cache=True)
def check_verdict(state, a, a_panels, b, b_panels, spins):
    """The caller's side of :class:`CheckAside` once its call is done: the check claimed and
    run here if the partner has not claimed it, else the partner's verdict, waited for up to
    ``spins`` rounds (then the check runs here too: a partner descheduled mid-check must not
    hold the caller up longer). Returns whether every matrix was its panels' source."""
    if not claim_check(state, a, a_panels, b, b_panels):
        waited = 0
        while _load(state, CHECK_VERDICT) == 0 and waited < spins:
            _pause()
            waited += 1
        if _load(state, CHECK_VERDICT) == 0:
            return same_as_panels(a, a_panels) and same_as_panels(b, b_panels)
    return _load(state, CHECK_VERDICT) == 1


class CheckAside:
    """The checks of a call's kept packings (:class:`elman.fast._packed.KeptPack`), run on the
    partner thread while the call computes with them: the panels are trusted for the call
    (``KeptPack.panels(..., aside)`` adds each check here), :meth:`start` offers the checks
    to the partner just before the compiled call (a pair call, whose partner computes too,
    has it run them first: :meth:`prepare`, :meth:`run_here`), and :meth:`holds` (after it)
    says whether
    every matrix was still its packed source: if not, the caller makes the call again with the
    checks in line, which pack the panels anew. The partner and the caller claim the check (a
    partner that comes late finds it done, or claimed: the caller runs it then), so it runs
    once, wherever, and the call's result never rests on panels it has not compared.

    Why: a batch of one's call of 50 steps at H = 256 (an LSTM) does ~620 us of compiled work,
    and the check in line (1.1 MB of ``W_hh`` and ``W_ih`` compared, then, with copies of
    them) cost ~250 us more: its own reads from L3 and, after them, the first steps' panels
    no longer in L2. On the idle partner's core it cost the call ~15 us (one process,
    alternating, medians of 60: 873 -> 636 us; LSTM H = 128 260 -> 212, GRU H = 256 659 ->
    500). At most two matrices (``W_hh`` and ``W_ih`` of one layer-direction)."""

    __slots__ = ("pairs", "state", "arrays")

    def __init__(self):
        self.pairs = []
        self.state = self.arrays = None

    def add(self, words: np.ndarray, panels: np.ndarray) -> None:
        """A matrix's words (2-D) and those of the panels packed from it (3-D; ``uint32``
        views, :class:`elman.fast._packed.KeptPack`), to compare."""
        if len(self.pairs) == 2:
            raise ValueError("CheckAside: at most two matrices (W_hh and W_ih) a call")
        self.pairs.append((words, panels))

    def prepare(self) -> bool:
        """Make the checks ready to be claimed; whether there are any."""
        if not self.pairs:
            return False
        state = fresh_counters(ROW)
        a, a_panels = self.pairs[0]
        b, b_panels = self.pairs[1] if len(self.pairs) == 2 else \
            (a[:0, :0], a_panels[:0, :0])          # (nothing to compare: the same types)
        self.state, self.arrays = state, (a, a_panels, b, b_panels)
        return True

    def start(self) -> None:
        """Offer the checks to the partner (nothing to offer: nothing to do)."""
        if self.prepare():
            partner().offer(self._partner_side)

    def run_here(self) -> None:
        """Claim the checks and, if no thread has, run them on this one (a pair call's partner,
        before its steps: :func:`elman.timeloop.sequence_forward_pair`)."""
        if self.state is not None:
            claim_check(self.state, *self.arrays)

    def _partner_side(self, gen, me):
        self.run_here()
        return gen                       # (no new bell: the partner sleeps until the next call)

    def holds(self) -> bool:
        """Whether every matrix was its source (call after the compiled call: the partner's
        verdict, or the check run here)."""
        if self.state is None:
            return True
        return bool(check_verdict(self.state, *self.arrays, partner().spins * 25))


def _spins_per_second(bell) -> float:
    """How many rounds of :func:`wait_for_bell`'s loop run in a second here."""
    rounds = 20000
    wait_for_bell(bell, bell[0], 10)
    start = time.perf_counter()
    wait_for_bell(bell, bell[0], rounds)
    return rounds / max(time.perf_counter() - start, 1e-9)


_partner: Partner | None = None
_partner_pid = None


def partner() -> Partner:
    """The process's :class:`Partner` (a new one in a forked child, which inherits the object
    but not its thread)."""
    global _partner, _partner_pid
    if _partner is None or _partner_pid != os.getpid():
        _partner, _partner_pid = Partner(), os.getpid()
    return _partner


def rest_partner() -> None:
    """:meth:`Partner.rest` the process's partner, if it has one and it is awake (never
    starts one)."""
    if _partner is not None and _partner_pid == os.getpid() and not _partner.sleeping:
        _partner.rest()
