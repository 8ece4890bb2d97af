"""What the compiled time loops share: the compile options, the step schedule, small helpers."""
import numpy as np
from numba import njit, types
from numba.extending import overload

from . import _cache  # noqa: F401  (before the decorators: the cache keyed by the package)
from . import MATRIX, empty, matrix_operand
from ._blas import gemm
from ._vectors import wide_vectors

# cache: compiled once per dtype/signature, then loaded from disk (numba's cache directory).
# error_model="numpy": a float division never raises, so no branch keeps a loop from SIMD.
# nogil: the loops hold no Python objects, so other threads may run meanwhile.
# fastmath "contract" only: a * b + c may become one fused multiply-add (one rounding instead
# of two, so no less exact); the LSTM's gate activations ran 1.6x faster with it (measured:
# 26 -> 16 us for 64 x 512 gates). No reassociation, and NaN and infinity keep their meaning.
JIT = dict(cache=True, error_model="numpy", nogil=True, fastmath={"contract"})

ONE = np.float32(1)     # float32 constants keep float32 arithmetic in float32 (a Python 1.0
HALF = np.float32(0.5)  # would promote it to float64) and are exact in float64 arithmetic
ZERO = np.float32(0)


@njit(**JIT)
def project_input(X2, W, out):
    """out = X2 @ W.T, (rows, I) @ (G*H, I).T: the input projection of a layer, through the
    kernels' BLAS binding (one row: a GEMV); the same BLAS call as NumPy's matmul, without its
    few microseconds of dispatch, which a streaming caller's one-step calls each paid."""
    gemm(X2, W.T, out)


def project_by(X2, W_ih, out):
    """``out = X2 W_ih^T`` in compiled code, ``W_ih`` either the (G*H, I) matrix itself (the
    same BLAS call as :func:`project_input`) or ``W_ih^T`` in :func:`elman.fast.
    matrix_operand`'s form (its panels, :func:`elman.fast.packed_operand`: a batch of one's,
    kept between calls). Two types, so two compiled forms of each caller: an operand tuple
    costs numba's dispatch ~1-2 us more a call to type than an array (measured: a streaming
    caller's one-step calls 0.85-0.93x as fast with the tuple), so the short calls keep the
    array."""
    raise NotImplementedError("project_by runs in compiled code only")


@overload(project_by, inline="always")
def _project_by(X2, W_ih, out):
    if isinstance(W_ih, types.BaseTuple):
        return lambda X2, W_ih, out: gemm(X2, W_ih, out)
    return lambda X2, W_ih, out: gemm(X2, W_ih.T, out)


def state_rows(S, t, n, plane):
    """Rows ``:n`` of step slot ``t`` of the states ``S``, in compiled code: ``S[t, :n]`` for
    one direction's own (T+1, N, P) array, ``S[t, :n, plane]`` for a plane of a shared
    (T+1, N, D, P) one (:func:`elman.fast._windows.planes`). Two types, so two compiled
    forms of each loop: an own array keeps numba's C layout (a batch of one's product then
    runs on the kernels' own matrix-vector loop, :mod:`._blas`), a plane cannot."""
    raise NotImplementedError("state_rows runs in compiled code only")


@overload(state_rows, inline="always")
def _state_rows(S, t, n, plane):
    if S.ndim == 3:
        return lambda S, t, n, plane: S[t, :n]
    return lambda S, t, n, plane: S[t, :n, plane]


def state_row(S, t, b, plane):
    """Row ``b`` of step slot ``t`` of the states (:func:`state_rows`), a contiguous row."""
    raise NotImplementedError("state_row runs in compiled code only")


@overload(state_row, inline="always")
def _state_row(S, t, b, plane):
    if S.ndim == 3:
        return lambda S, t, b, plane: S[t, b]
    return lambda S, t, b, plane: S[t, b, plane]


@njit(inline="always")
def lean_arrays(X, GH, P):
    """A kernel's ``forward_lean`` (``timeloop.sequence_forward_lean``) makes its arrays inside
    its one compiled call: the projections ``GX`` (T, N, GH) and the states ``S``
    (T+1, N, P), new (a row block's are kept by its caller instead:
    :func:`elman.fast._pair.rows_arrays`)."""
    T, N, _ = X.shape
    return np.empty((T, N, GH), X.dtype), np.empty((T + 1, N, P), X.dtype)


@njit(inline="always")
def lean_start_into(X, W_ih, h0, schedule, GX, S):
    """The start of a kernel's ``forward_lean``, in the arrays it was given
    (:func:`lean_arrays`, or a row block's): ``GX = X W_ih^T`` (:func:`project_by`), and ``h0``
    into the slot of ``S`` the schedule's first step reads."""
    T, N, I = X.shape
    project_by(X.reshape(T * N, I), W_ih, GX.reshape(T * N, GX.shape[2]))
    S[schedule[0, 1]] = h0


@njit(inline="always")
def keep_direction(S, out, h_n, k, d):
    """After layer-direction ``k`` (direction ``d``: 0 forward, 1 reverse) of a
    ``forward_stack_lean``: its outputs into columns ``d*P:(d+1)*P`` of the layer's output
    ``out`` (T, N, D*P), the next layer's input (forward: ``S[1:]``; reverse, which writes slot
    ``t`` at time ``t``: ``S[:-1]``), and its final state into ``h_n[k]`` (no lengths: the
    last step's slot)."""
    T, N, P = out.shape[0], out.shape[1], S.shape[2]
    for t in range(T):
        for b in range(N):
            src, dst = S[t + 1 - d, b], out[t, b, d * P:(d + 1) * P]
            for j in range(P):
                dst[j] = src[j]
    h_n[k] = S[0] if d else S[T]


@njit(inline="always")
def stack_lean(direction, forward_lean, X, h0, c0, h_n, c_n, operands, schedules):
    """The body of a kernel module's ``forward_stack_lean``: every layer-direction of a small
    stack in one compiled call. ``direction(forward_lean, layer_in, out, k, d, h0, c0, h_n,
    c_n, operands, schedule)`` runs layer-direction ``k`` (direction ``d``) on ``layer_in``
    through the module's compiled ``forward_lean`` and keeps its outputs and final states:
    :func:`keep_lean_direction` for a module whose lean loop returns only S, the module's own
    for one with more. ``operands``: tuples by ``k = layer * D + d``; ``schedules`` (D, steps,
    4). Returns the last layer's output (T, N, D*P). (numba caches a compiled function that
    hands a global compiled function to an inline one, not one handed in from Python.)"""
    out = _stack_layer(direction, forward_lean, X, 0, h0, c0, h_n, c_n, operands, schedules)
    for layer in range(1, h0.shape[0] // schedules.shape[0]):
        out = _stack_layer(direction, forward_lean, out, layer, h0, c0, h_n, c_n, operands,
                           schedules)
    return out


@njit(inline="always")
def _stack_layer(direction, forward_lean, layer_in, layer, h0, c0, h_n, c_n, operands,
                 schedules):
    """One layer of :func:`stack_lean`: its directions' outputs side by side in a new
    (T, N, D*P) array (a function of its own: the first layer reads the caller's ``X``, whose
    array type the next layers' inputs need not share)."""
    D = schedules.shape[0]
    out = np.empty((layer_in.shape[0], layer_in.shape[1], D * h_n.shape[2]), layer_in.dtype)
    for d in range(D):
        direction(forward_lean, layer_in, out, layer * D + d, d, h0, c0, h_n, c_n, operands,
                  schedules[d])
    return out


@njit(inline="always")
def keep_lean_direction(forward_lean, layer_in, out, k, d, h0, c0, h_n, c_n, operands,
                        schedule):
    """Layer-direction ``k`` of :func:`stack_lean` for a kernel whose
    ``forward_lean(X, W_ih, h0, bias, A, B, schedule)`` returns S alone (RNN: A = W_hh^T,
    B = relu; GRU: W_hh^T, b_hn; classic GRU: W_rz^T, W_hn^T), ``operands`` = (W_ih, bias, A,
    B) tuples; its outputs and final state kept by :func:`keep_direction`."""
    W_ih, bias, A, B = operands
    keep_direction(forward_lean(layer_in, W_ih[k], h0[k], bias[k], A[k], B[k], schedule),
                   out, h_n, k, d)


@njit(inline="always")
def absent(a):
    """Whether an optional array argument of a kernel was left out: the wrappers pass an empty
    array (:func:`or_empty`) where a layer has no such option (recurrent dropout's mask,
    zoneout's weights, a projection, an output gradient), and the kernels test for it at run
    time, once a step. Why not None, which numba compiles away: every combination of options
    was then a compiled specialization of its own (35 of the LSTM's forward loop alone in one
    run of the tests, each 1-4 s to compile); with arrays it is one per dtype and operand form."""
    return a.size == 0


def or_empty(a, dtype, ndim: int):
    """``a``, or where it is None an empty ``ndim``-dimensional array of ``dtype``
    (:func:`elman.fast.empty`): what a kernel takes for an option a layer does not use
    (:func:`absent`)."""
    return empty(dtype, ndim) if a is None else a


def or_no_matrix(operand, dtype):
    """``operand``, a per-step matrix in :func:`elman.fast.matrix_operand`'s form, or where it
    is None an empty matrix in that form (:func:`absent`, as :func:`or_empty` for arrays)."""
    return matrix_operand(empty(dtype, 2)) if operand is None else operand


@njit(inline="always")
def no_matrix(like):
    """:func:`or_no_matrix`'s empty matrix for compiled code (of ``like``'s dtype; typed as
    the tuples made in Python are: ``np.bool_(False)``, not a literal ``False``, which numba
    types apart, one specialization more)."""
    return (np.empty((0, 0), like.dtype), np.bool_(False), np.empty(0, like.dtype),
            np.int64(MATRIX), np.int64(0))


@njit(inline="always")
def step_at(schedule, s):
    """(t, prev, new, rows) of step ``s`` of ``timeloop._schedule``: the time index, the state
    slots read and written, and the number of sequences still running (only steps with rows).
    Every time loop calls it, so the loop's compiled function takes sixteen-float vectors here
    (:func:`._vectors.wide_vectors`)."""
    wide_vectors()
    return schedule[s, 0], schedule[s, 1], schedule[s, 2], schedule[s, 3]


@njit(inline="always")
def add_bias(G, bias):
    """G[b] += bias for each row of the step's pre-activations, just before the GEMM that adds
    the recurrent term onto them reads them: the order of the sums of the NumPy reference
    ((x W_ih^T + b) + h W_hh^T), and the rows are in cache for that GEMM, where a
    whole-sequence ``GX += b`` is one more trip through memory."""
    for b in range(G.shape[0]):
        row = G[b]
        for k in range(row.shape[0]):
            row[k] += bias[k]


@njit(inline="always")
def add_output_grad(dh, dY, at, t, n):
    """dh[:n] += dY[t, :n]: what reaches h_t from the output sequence (nothing when dY is
    :func:`absent`: only the final state had a gradient). ``dY`` a C-contiguous array whose
    window from row ``at[0]`` and column ``at[1]`` is the layer's output gradient
    (:func:`output_grad`)."""
    if not absent(dY):
        r, c = at
        for b in range(n):
            row = dY[t, r + b]
            for j in range(dh.shape[1]):
                dh[b, j] += row[c + j]


@njit(inline="always")
def backward_step(schedule, s, dh, dY, at):
    """(t, prev, new, rows) of step ``s``, after adding dY[t] into dh (backward runs the
    schedule from its last step to its first; ``at``: :func:`add_output_grad`)."""
    t, p, q, n = step_at(schedule, s)
    add_output_grad(dh, dY, at, t, n)
    return t, p, q, n


def output_grad(loop, dtype) -> tuple:
    """``(dY, at)`` for a backward loop's :func:`backward_step`: ``loop.dY`` (an empty array
    where None) and ``loop.dY_at``, the window's first row and column in it."""
    return or_empty(loop.dY, dtype, 3), loop.dY_at


@njit(inline="always")
def mask_into(h, mask, out):
    """out = h * mask row by row (recurrent dropout: what the recurrent GEMM reads)."""
    for b in range(h.shape[0]):
        for j in range(h.shape[1]):
            out[b, j] = h[b, j] * mask[b, j]


@njit(inline="always")
def scale_rows(dh, mask, n):
    """dh[:n] *= mask[:n]: back through the recurrent dropout mask (the caller skips it when
    there is none)."""
    for b in range(n):
        for j in range(dh.shape[1]):
            dh[b, j] *= mask[b, j]


@njit(inline="always")
def scratch_row(gates):
    """A fresh (G,) array for one row's gate gradients. The backward loops compute a row into
    it and only then copy it over ``dG``, which may be the gates' own memory: with reads and
    writes on arrays that may overlap, LLVM keeps the loop scalar (measured: the in-place LSTM
    backward ran its element-wise part 2.5-3x slower than into a separate array), while a
    fresh allocation is known to overlap nothing."""
    return np.empty(gates.shape[2], gates.dtype)


@njit(inline="always")
def copy_row(row, out):
    """out[:] = row, for the 1-D rows of :func:`scratch_row`."""
    for k in range(row.shape[0]):
        out[k] = row[k]


#: Rows a backward loop's sums (the biases', :func:`bias_sums`; the layer norm's gains and
#: shifts, ``layer_norm._gain_sums``) take in the rows' own precision before they go into its
#: float64 sums (:func:`add_partial`).
SUM_ROWS = 32


def bias_sums(G: int, dtype) -> tuple:
    """A backward loop's bias gradient sums, ``(sums, part, rows)``: ``sums`` (G,) float64, the
    sums over every row of the pass; ``part`` (G,) in the rows' precision, where each row adds
    as the loop writes it (:func:`copy_row_summed`, :func:`add_row`), into ``sums`` every
    :data:`SUM_ROWS` rows and at the end (:func:`settle_sums`); ``rows`` (1,) int64, the
    rows in ``part``. Summed where the rows are written, in cache, where a whole-sequence sum
    after the loop (``CellEquations.bias_grads``) read all T*N rows again from memory: an
    LSTM's training step at (64, 100, 32, 128) and (64, 100, 128, 256) spent 0.3 and 0.7 ms
    a row block there; summed here, the whole training steps ran 1.01x (LSTM, the first
    size), 1.03x (LSTM, the second; GRU, the first) as fast (alternating in one process,
    medians of 9-25). In float64 for T*N rows (float32's rounding would add up), in the rows'
    precision for a few (twice as many values a vector, no conversions)."""
    return np.zeros(G), np.zeros(G, dtype), np.zeros(1, np.int64)


@njit(inline="always")
def add_row(row, part):
    """part += row (one row of :func:`bias_sums`' ``part``; see :func:`row_added`)."""
    for k in range(row.shape[0]):
        part[k] += row[k]


@njit(inline="always")
def copy_row_summed(row, out, part):
    """:func:`copy_row` and :func:`add_row` in one pass."""
    for k in range(row.shape[0]):
        v = row[k]
        out[k] = v
        part[k] += v


@njit(inline="always")
def row_added(sums, part, rows):
    """After a row went into ``part``: every :data:`SUM_ROWS` rows ``part`` into ``sums``."""
    rows[0] += 1
    if rows[0] == SUM_ROWS:
        settle_sums(sums, part, rows)


@njit(inline="always")
def settle_sums(sums, part, rows):
    """sums += part (float64), part = 0, rows = 0."""
    add_partial(part, sums)
    rows[0] = 0


@njit(inline="always")
def add_partial(part, sums):
    """sums += part, then part = 0: partial sums in the rows' own precision into the loop's
    float64 ones (:func:`bias_sums`; the layer norm's gains, ``layer_norm._gain_sums``)."""
    for k in range(part.shape[0]):
        sums[k] += part[k]
        part[k] = 0


@njit(inline="always")
def project_back(dh, dHs, W_hr, dR, t, n):
    """What reaches ``o * tanh(c)`` at step ``t`` of an LSTM's backward loop: ``dh`` itself, or
    with a projection (``W_hr`` (P, H); :func:`absent` otherwise) ``dr = dh W_hr``
    written into the scratch ``dR`` (N, H), after keeping ``dh`` in ``dHs[t]`` (for dW_hr)."""
    if absent(W_hr):
        return dh
    for b in range(n):
        dHs_b, dh_b = dHs[t, b], dh[b]
        for j in range(dh_b.shape[0]):
            dHs_b[j] = dh_b[j]
    gemm(dh[:n], W_hr, dR[:n])
    return dR


@njit(inline="always")
def zone_rows(prev, new, a, n):
    """Zoneout after a step: new[:n] = a * prev + (1 - a) * new (``a`` (N, W) the step's
    weights of the previous state: 0/1 in training, p in evaluation)."""
    for b in range(n):
        for j in range(new.shape[1]):
            new[b, j] = a[b, j] * prev[b, j] + (ONE - a[b, j]) * new[b, j]


@njit(inline="always")
def keep_rows(src, dst, n):
    """dst[:n] = src[:n] (zoneout: the new cell state before mixing, for backward)."""
    for b in range(n):
        for j in range(src.shape[1]):
            dst[b, j] = src[b, j]


@njit(inline="always")
def zone_split(d, a, keep, n):
    """Zoneout backward at the start of a step: keep[:n] = d * a (straight to the previous
    state), d[:n] *= 1 - a (to the cell's new value)."""
    for b in range(n):
        for j in range(d.shape[1]):
            keep[b, j] = d[b, j] * a[b, j]
            d[b, j] *= ONE - a[b, j]


@njit(inline="always")
def add_rows(d, keep, n):
    """d[:n] += keep[:n] (zoneout backward at the end of a step)."""
    for b in range(n):
        for j in range(d.shape[1]):
            d[b, j] += keep[b, j]


def zone_arrays(zone, dtype):
    """(a for h, b for c, c_new) of a :class:`~elman.timeloop.Zoneout`, or empty arrays
    (:func:`absent`): what the kernels take. The weights are read only, and made contiguous
    (a row block's are a view of the batch's: one more specialization otherwise)."""
    if zone is None:
        empty = or_empty(None, dtype, 3)
        return empty, empty, empty
    zc = None if zone.c is None else np.ascontiguousarray(zone.c)
    return np.ascontiguousarray(zone.h), or_empty(zc, dtype, 3), or_empty(zone.c_new, dtype, 3)


@njit(inline="always")
def zone_states(S, C, Cn, zh, zc, t, p, q, n, plane=0):
    """Zoneout at the end of forward step ``t``: h (and c, keeping the un-mixed c in Cn) mixed
    with the previous states. Nothing without zoneout (``zh`` :func:`absent`); for a cell
    without a cell state (``C`` None, a branch numba removes), h only. ``S`` a direction's
    own states, or a plane of a shared array (:func:`state_row`)."""
    if not absent(zh):
        if C is not None:
            keep_rows(C[q], Cn[t], n)
            zone_rows(C[p], C[q], zc[t], n)
        for b in range(n):                     # (zone_rows' arithmetic, row by row)
            prev, new, a = state_row(S, p, b, plane), state_row(S, q, b, plane), zh[t, b]
            for j in range(new.shape[0]):
                new[j] = a[j] * prev[j] + (ONE - a[j]) * new[j]


@njit(inline="always")
def unzone_grads(dh, dc, zh, zc, keep_h, keep_c, t, n):
    """Zoneout at the start of backward step ``t``: dh (and dc) split into the new states' share
    (left in place) and the previous states' (into keep_h, keep_c)."""
    if not absent(zh):
        zone_split(dh, zh[t], keep_h, n)
        if dc is not None:
            zone_split(dc, zc[t], keep_c, n)


@njit(inline="always")
def into_previous(dG, W_hh, dh, dc, mask, zh, keep_h, keep_c, n):
    """The end of a backward step: dh_prev = dG W_hh (times the recurrent dropout mask), plus
    zoneout's direct shares of dh and dc (:func:`unzone_grads`)."""
    gemm(dG, W_hh, dh[:n])
    if not absent(mask):
        scale_rows(dh, mask, n)
    if not absent(zh):
        add_rows(dh, keep_h, n)
        if dc is not None:
            add_rows(dc, keep_c, n)
