"""Compiled time loops of the layer-normalised cells (equations in :mod:`elman.cells.layer_norm`),
the fast twins of ``LayerNormRNNEquations``, ``LayerNormGRUEquations`` and
``LayerNormLSTMEquations``.

Both normalisations run inside the loops, row by row: per step the GEMM ``h_prev W_hh^T`` into
a scratch row, then for each row the input projection's normalisation and the recurrent one,
and the gate math. The reference normalises the input side as a whole-sequence pass first
(``transform_input``) and back again after its loop (``transform_input_backward``), one more
trip each through the (T, N, G*H) projections in memory: 14 % of an LN-LSTM's training step at
(64, 100, 32, 128) on one thread when this module did the same. In the loops they cost about as
much on one thread, and less on two, which share the memory's bandwidth: training steps ran
1.10-1.13x as fast with two threads (LN-RNN, LN-GRU and LN-LSTM, old and new code in one
process, medians of 20 alternating repeats). So this module's twins of those two do nothing,
and its twin of ``bias_grads`` neither: the backward loops sum every gradient of the
normalisations' gains and shifts, and of the biases, as they go.

``saved`` is this module's own layout (:func:`saved_elements`): per row the normalised
recurrent and input pre-activations (G*H each), for the LSTM ``LN(c)`` normalised (H; the
backward recomputes ``tanh(LN(c))`` from it), then the rows' 1/std (recurrent, input, ``c``),
one column each.
The per-step sums go into the pass's own constants (``cache.consts["grad_sums"]``, made by
the cell's ``prepare_backward``), keyed by the parameter they belong to; the cell's
``parameter_grads`` hands them to the layer. Nothing is kept on the shared cell object, so two
directions or two row blocks of a layer may run at once (``reentrant``).
"""
import numpy as np
from numba import njit

from . import _cache  # noqa: F401  (before the decorators: the cache keyed by the package)
from ._blas import gemm
from ._block import backward_block, forward_block
from ._loop import (JIT, ONE, SUM_ROWS, ZERO, absent, add_partial, add_rows, backward_step,
                    mask_into, or_empty, or_no_matrix, output_grad, project_back, step_at,
                    zone_arrays, zone_states, unzone_grads, into_previous)
from ._math import sigmoid, tanh
from ._vectors import wide_vectors
from ..cells.layer_norm import EPS

__all__ = ["forward", "backward", "saved_elements"]

dgh_blocks = None      # dGH has every gate block (the recurrent side has its own norm)


def _scalars_at(G: int, has_cell: bool) -> int:
    """The first column (in blocks of H) of a row's three 1/std values in ``saved``."""
    return 2 * G + (1 if has_cell else 0)


#: the elements a row keeps after its blocks for the three 1/std values: a cache line of
#: float32, so that every row starts on one where H is a multiple of 16
SCALARS = 16


def saved_elements(eq, H: int) -> int:
    """Elements that a step keeps per row: normalised recurrent and input pre-activations
    (G blocks of H each), the LSTM's ``LN(c)`` (a block), and the three 1/std values
    (:data:`SCALARS` elements).

    Why not a whole block of H for the three (as until the fifth session of 2026-12-07): the
    LSTM's rows were 11 H long, a twelfth more memory to write and read than 10 H + 16. Its
    training steps at (64, 100, 32, 128), measured in alternating processes, 9-11 pairs a run:
    1.031x and 1.024x (the same code, the width switched by an environment variable), then
    0.999x, 1.028x and 1.008x (the code before against this; medians of the pairs' ratios);
    at (64, 100, 128, 256) 0.997x; the LN-GRU's 7 H -> 6 H + 16 1.004x and 1.012x, the
    LN-RNN's 3 H -> 2 H + 16 1.001x: a gain of 1-2 % at most, within this machine's noise,
    and a twelfth less memory.

    Why not ``tanh(LN(c))`` too (a block of H, until the sixth session of 2026-12-07): the
    backward recomputes it from ``LN(c)``, a tanh of H per row, for a tenth less memory at
    the same speed (:func:`_backward_lstm`)."""
    return _scalars_at(eq.gates, eq.has_cell) * H + SCALARS


# The row sums below are the only reductions in these loops. LLVM keeps a float sum in its
# written order, one add after another (each waits for the last: scalar, latency-bound), unless
# it may reassociate it; so the sums live in helpers of their own compiled with only that
# licence ('reassoc', and 'contract' for a * b + s as one FMA), which lets them run on vector
# registers with several partial sums. Not numba's fastmath=True: 'nnan'/'ninf' would let LLVM
# assume no NaN or inf, and a NaN must still come out as NaN. The helpers are not numba-inlined
# (that would drop their flags into the caller's); LLVM inlines them, flags kept per instruction.
SUMS = dict(JIT, fastmath={"reassoc", "contract"})


@njit(**SUMS)
def _shifted_sums(v):
    """``(K, sum(v - K), sum((v - K)^2))`` of a row, ``K = v[0]``, in float64, one pass
    (float32 rounding, amplified by 1/std, would be most of the float32 error)."""
    wide_vectors()
    K = np.float64(v[0])
    s = 0.0
    q = 0.0
    for k in range(v.shape[0]):
        d = v[k] - K
        s += d
        q += d * d
    return K, s, q


@njit(**SUMS)
def _backward_sums(d, gain, n):
    """(sum(d * gain), sum(d * gain * n)) in one pass, in the rows' own precision: unlike the
    forward's mean and variance (:func:`_normalise`), these enter the gradient as they are, not
    divided by a small std, and with the licence to reassociate each is many short partial
    sums (float32, rows of 512: 1.5e-8 of sum(|d|) from the float64 sums, measured, where
    float32 itself is 6e-8); in float64 they took 1.6-2.6x as long."""
    wide_vectors()
    s1 = d.dtype.type(0)
    s2 = d.dtype.type(0)
    for k in range(d.shape[0]):
        e = d[k] * gain[k]
        s1 += e
        s2 += e * n[k]
    return s1, s2


@njit(inline="always")
def _moments(v, inv_m, eps):
    """(mean(v), 1/sqrt(var(v) + eps)) of a row, from one pass of float64 sums around the
    row's first element (:func:`_shifted_sums`): ``var = mean(d^2) - mean(d)^2``, d = v - K.

    Why one pass is exact enough: the sums' rounding, float64's, reaches the variance
    multiplied by at most ``1 + (mean - K)^2 / var``, and no element of a row of M lies
    further than ``sqrt(M - 1)`` stds from its mean, so with K = v[0] by at most M (512 at
    G*H = 512): at worst about 1e-11 of the variance, where float32 itself is 6e-8 (without
    the shift, a mean of 1e4 stds would multiply it by 1e8). Two passes (the mean, then the
    squares around it) took 1.4x as long as one (32 rows of 512, float32: 2.8 us and 2.0 us;
    a whole normalisation 5.6 us and 4.7 us)."""
    K, s, q = _shifted_sums(v)
    d = s * inv_m
    return K + d, 1.0 / np.sqrt(max(q * inv_m - d * d, 0.0) + eps)


@njit(inline="always")
def _split_mean(v, mu, rstd):
    """The mean split in two, ``hi`` in the row's precision and ``lo = (mu - hi) rstd``, and
    ``rstd`` in it: ``(v - hi) r - lo`` then loses nothing of a mean much larger than the std,
    in arithmetic of the row's precision (float32: 1.5x as fast as the same in float64; in
    float64 ``lo`` is 0)."""
    hi = v.dtype.type(mu)
    return hi, v.dtype.type((mu - hi) * rstd), v.dtype.type(rstd)


@njit(inline="always")
def _normalise(v, out, inv_m, eps):
    """out = (v - mean(v)) / sqrt(var(v) + eps) over the row; returns 1/sqrt(var + eps)."""
    mu, rstd = _moments(v, inv_m, eps)
    hi, lo, r = _split_mean(v, mu, rstd)
    for k in range(v.shape[0]):
        out[k] = (v[k] - hi) * r - lo
    return rstd


@njit(inline="always")
def _normalise_affine(v, out, gain, shift, bias, inv_m, eps):
    """:func:`_normalise` of ``v`` into ``out``, and in the same pass ``v = (out * gain +
    shift) + bias`` in place; returns 1/std."""
    mu, rstd = _moments(v, inv_m, eps)
    hi, lo, r = _split_mean(v, mu, rstd)
    for k in range(v.shape[0]):
        nk = (v[k] - hi) * r - lo
        out[k] = nk
        v[k] = (nk * gain[k] + shift[k]) + bias[k]
    return rstd


@njit(inline="always")
def _normalise_backward(d, n, gain, rstd, inv_m, out):
    """out = rstd (dn - mean(dn) - n mean(dn n)) with dn = d * gain: the gradient wrt the
    un-normalised row from ``d`` (wrt gain * n + shift), in the row's precision (as the
    reference's). The gain's and the shift's gradients are :func:`_column_sums_dots`'."""
    s1, s2 = _backward_sums(d, gain, n)
    a = d.dtype.type(rstd)
    b = d.dtype.type(s1 * inv_m * rstd)
    c = d.dtype.type(s2 * inv_m * rstd)
    for k in range(d.shape[0]):
        out[k] = (a * (d[k] * gain[k]) - b) - n[k] * c


@njit(inline="always")
def _column_sums_dots(D, sav, off, n, acc_sum, acc_dot):
    """``acc_sum += sum(D[:n], axis=0)`` and ``acc_dot += sum(D[:n] * sav[:n, off:off + M],
    axis=0)`` (M = their length; a shift's and a gain's gradients, from the rows' gradients and
    their normalised values in ``sav``, a step's saved rows), in one pass over the rows, four
    at a time: each column sum is read and written once per four rows (row by row, the same
    sums took 1.7-1.9x as long, measured on a step's 32 rows of 512). The sums are arrays of
    the loop's own (no row of the caller's can overlap them), in the rows' precision
    (:func:`_chunked`)."""
    M = acc_sum.shape[0]
    b = 0
    while b + 4 <= n:
        d0, d1, d2, d3 = D[b], D[b + 1], D[b + 2], D[b + 3]
        n0, n1 = sav[b][off:off + M], sav[b + 1][off:off + M]
        n2, n3 = sav[b + 2][off:off + M], sav[b + 3][off:off + M]
        for k in range(M):
            e0, e1, e2, e3 = d0[k], d1[k], d2[k], d3[k]
            acc_sum[k] += (e0 + e1) + (e2 + e3)
            acc_dot[k] += (e0 * n0[k] + e1 * n1[k]) + (e2 * n2[k] + e3 * n3[k])
        b += 4
    while b < n:
        d, v = D[b], sav[b][off:off + M]
        for k in range(M):
            acc_sum[k] += d[k]
            acc_dot[k] += d[k] * v[k]
        b += 1


@njit(inline="always")
def _column_sums_two_dots(D, sav, GH, n, acc_sum, acc_x, acc_h):
    """:func:`_column_sums_dots` of rows that are the gradient wrt both sides' normalised
    pre-activations (the RNN's and the LSTM's, whose two sides add): ``acc_sum += sum(D)``,
    ``acc_x += sum(D * LN(x))`` (``sav[:, GH:2 GH]``) and ``acc_h += sum(D * LN(gh))``
    (``sav[:, :GH]``), one pass over the rows (as two, the rows were read twice)."""
    b = 0
    while b + 4 <= n:
        d0, d1, d2, d3 = D[b], D[b + 1], D[b + 2], D[b + 3]
        s0, s1, s2, s3 = sav[b], sav[b + 1], sav[b + 2], sav[b + 3]
        x0, x1, x2, x3 = s0[GH:2 * GH], s1[GH:2 * GH], s2[GH:2 * GH], s3[GH:2 * GH]
        h0, h1, h2, h3 = s0[:GH], s1[:GH], s2[:GH], s3[:GH]
        for k in range(GH):
            e0, e1, e2, e3 = d0[k], d1[k], d2[k], d3[k]
            acc_sum[k] += (e0 + e1) + (e2 + e3)
            acc_x[k] += (e0 * x0[k] + e1 * x1[k]) + (e2 * x2[k] + e3 * x3[k])
            acc_h[k] += (e0 * h0[k] + e1 * h1[k]) + (e2 * h2[k] + e3 * h3[k])
        b += 4
    while b < n:
        d, x, h = D[b], sav[b][GH:2 * GH], sav[b][:GH]
        for k in range(GH):
            acc_sum[k] += d[k]
            acc_x[k] += d[k] * x[k]
            acc_h[k] += d[k] * h[k]
        b += 1


@njit(inline="always")
def _gain_sums(D, sav, off, n, part, acc):
    """A gain's and a shift's gradients from a step's rows: ``acc[0] += sum(D[:n])`` and
    ``acc[1] += sum(D[:n] * sav[:n, off:off + M])`` (M = ``acc``'s width; ``acc`` the loop's
    float64 sums, ``part`` its scratch: :func:`_chunked`)."""
    for b0 in range(0, n, SUM_ROWS):
        m = min(SUM_ROWS, n - b0)
        _column_sums_dots(D[b0:b0 + m], sav[b0:b0 + m], off, m, part[0], part[1])
        _chunked(part, acc, 2)


@njit(inline="always")
def _chunked(part, acc, k):
    """The sums of a chunk of :data:`_loop.SUM_ROWS` rows (``part[:k]``, in the rows' own
    precision; zero again after) added into the loop's float64 sums ``acc[:k]``: the sums of
    T*N rows stay float64's (in float32 their rounding would add up over the steps), the
    four-row sums inside a chunk run on twice as many values a vector as float64 ones, with
    no conversions (at (64, 100, 32, 128), inside whole training steps, old and new code
    alternating in one process, medians of 15: the LN-LSTM's backward loop 7.7 -> 7.0 ms a row
    block, its step 1.04x as fast, the LN-GRU's 1.04x; the gradients as far from a float64
    run's as before: 1.9e-5 of the largest)."""
    for a in range(k):
        add_partial(part[a], acc[a])


@njit(inline="always")
def _recurrent_gemm(S, p, n, W_hh_T, gh, mask, hm):
    """gh[:n] = h_prev W_hh^T (h_prev * mask with recurrent dropout)."""
    if absent(mask):
        gemm(S[p, :n], W_hh_T, gh[:n])
    else:
        mask_into(S[p, :n], mask, hm)
        gemm(hm[:n], W_hh_T, gh[:n])


@njit(inline="always")
def _both_norms(sv, gh_b, gx_b, w_ih, s_ih, bias, GH, at, inv_g, eps):
    """A step's row: the recurrent pre-activations ``gh_b`` normalised into ``sv[:GH]``, the
    input projection ``gx_b`` into ``sv[GH:2 GH]``, their 1/std into ``sv[at]``,
    ``sv[at + 1]``; and ``gx_b`` becomes ``LN(gx_b; ih) + bias`` in place, in the pass that
    writes its normalised values (a pass of its own over a row cost as much again). Returns
    ``sv[:GH]``."""
    nh = sv[:GH]
    sv[at] = _normalise(gh_b, nh, inv_g, eps)
    sv[at + 1] = _normalise_affine(gx_b, sv[GH:2 * GH], w_ih, s_ih, bias, inv_g, eps)
    return nh


@njit(inline="always")
def _both_norms_backward(rows, recs, split, sav, dGX, dGH, w_ih, w_hh, GH, at, inv_g, acc,
                         part, n):
    """The end of a backward step's element-wise part: from each row's gradient wrt the
    pre-activations of the input side (``rows``) and of the recurrent side (``recs``; the same
    array, but for the GRU: ``split``), through the two normalisations into ``dGX`` and
    ``dGH``; and the sums for the gains, shifts and biases
    into ``acc`` (4, GH): sum(rows), sum(rows * LN(x)), sum(recs) (only where ``split``: else
    it is the first), and sum(recs * LN(gh)), by chunks of :data:`_loop.SUM_ROWS` rows
    (``part`` their scratch, :func:`_chunked`), each chunk's in one pass over its rows where
    not ``split`` (:func:`_column_sums_two_dots`), two where it is. (The two normalisations'
    sums, :func:`_backward_sums`, in one pass took 1.35x as long as in two, measured on a
    step's 32 rows of 512: LLVM vectorises a loop of four reductions less well.)"""
    for b0 in range(0, n, SUM_ROWS):
        m = min(SUM_ROWS, n - b0)
        saved = sav[b0:b0 + m]
        if split:
            _column_sums_dots(rows[b0:b0 + m], saved, GH, m, part[0], part[1])
            _column_sums_dots(recs[b0:b0 + m], saved, 0, m, part[2], part[3])
        else:
            _column_sums_two_dots(rows[b0:b0 + m], saved, GH, m, part[0], part[1], part[3])
        _chunked(part, acc, 4)
    for b in range(n):
        sv = sav[b]
        _normalise_backward(recs[b], sv[:GH], w_hh, sv[at], inv_g, dGH[b])
        _normalise_backward(rows[b], sv[GH:2 * GH], w_ih, sv[at + 1], inv_g, dGX[b])


# -- RNN ----------------------------------------------------------------------------------------

@njit(**JIT)
def _forward_rnn(GX, bias, W_hh_T, S, gh, saved, w_ih, s_ih, w_hh, s_hh, inv_g, eps, relu,
                 schedule, mask, zh):
    """h = act((LN(GX[t]; ih) + bias) + LN(h_prev W_hh^T; hh)); GX (T, N, H), the raw input
    projections, receives h (the gates)."""
    H = S.shape[2]
    at = 2 * H
    hm = np.empty_like(S[0])
    for s in range(schedule.shape[0]):
        t, p, q, n = step_at(schedule, s)
        _recurrent_gemm(S, p, n, W_hh_T, gh, mask, hm)
        for b in range(n):
            g, h = GX[t, b], S[q, b]
            nh = _both_norms(saved[t, b], gh[b], g, w_ih, s_ih, bias, H, at, inv_g, eps)
            for j in range(H):
                a = g[j] + (nh[j] * w_hh[j] + s_hh[j])
                if relu:
                    a = a if a > ZERO else ZERO
                else:
                    a = tanh(a)
                g[j] = a
                h[j] = a
        zone_states(S, None, None, zh, None, t, p, q, n)


@njit(**JIT)
def _backward_rnn(gates, saved, dY, dY_at, dh, dGX, dGH, W_hh, w_ih, w_hh, sums, inv_g, relu,
                  schedule, mask, zh):
    """``sums`` (4, H) float64 receives the sums of :func:`_both_norms_backward`."""
    N, H = dh.shape
    rows = np.empty((N, H), dh.dtype)
    acc = np.zeros((4, H))
    part = np.zeros((4, H), dh.dtype)
    keep = np.empty((N, H), dh.dtype)
    for s in range(schedule.shape[0] - 1, -1, -1):
        t, p, q, n = backward_step(schedule, s, dh, dY, dY_at)
        unzone_grads(dh, None, zh, None, keep, None, t, n)
        for b in range(n):
            h, dh_b, row = gates[t, b], dh[b], rows[b]
            for j in range(H):
                if relu:
                    row[j] = dh_b[j] if h[j] > ZERO else ZERO
                else:
                    row[j] = dh_b[j] * (ONE - h[j] * h[j])
        _both_norms_backward(rows, rows, False, saved[t], dGX[t], dGH[t], w_ih, w_hh, H, 2 * H,
                             inv_g, acc, part, n)
        into_previous(dGH[t, :n], W_hh, dh, None, mask, zh, keep, None, n)
    sums += acc


# -- GRU ----------------------------------------------------------------------------------------

@njit(**JIT)
def _forward_gru(GX, bias, W_hh_T, S, gh, saved, w_ih, s_ih, w_hh, s_hh, b_hn, inv_g, eps,
                 schedule, mask, zh):
    """With gx = LN(GX[t]; ih) + bias and gh = LN(h_prev W_hh^T; hh): [r, z] = sigmoid(gx +
    gh); n = tanh(gx_n + r (gh_n + b_hn)); h = n + z (h_prev - n). GX (T, N, 3H), the raw
    input projections, receives [r, z, n]."""
    H = S.shape[2]
    G = 3 * H
    at = 2 * G
    hm = np.empty_like(S[0])
    for s in range(schedule.shape[0]):
        t, p, q, n = step_at(schedule, s)
        _recurrent_gemm(S, p, n, W_hh_T, gh, mask, hm)
        for b in range(n):
            g, h_prev, h = GX[t, b], S[p, b], S[q, b]
            nh = _both_norms(saved[t, b], gh[b], g, w_ih, s_ih, bias, G, at, inv_g, eps)
            for k in range(2 * H):                                    # r, z
                g[k] = sigmoid(g[k] + (nh[k] * w_hh[k] + s_hh[k]))
            for j in range(H):
                k = 2 * H + j
                hn = (nh[k] * w_hh[k] + s_hh[k]) + b_hn[j]
                nj = tanh(g[k] + g[j] * hn)
                g[k] = nj
                h[j] = (h_prev[j] - nj) * g[H + j] + nj
        zone_states(S, None, None, zh, None, t, p, q, n)


@njit(**JIT)
def _backward_gru(gates, saved, S, dY, dY_at, dh, dGX, dGH, W_hh, w_ih, w_hh, s_hh, b_hn, sums,
                  inv_g, schedule, mask, zh):
    """``sums`` (4, 3H) float64 receives the sums of :func:`_both_norms_backward`."""
    N, H = dh.shape
    G = 3 * H
    rows = np.empty((N, G), dh.dtype)          # [dr, dz, dn]: the input side
    recs = np.empty((N, G), dh.dtype)          # [dr, dz, dn r]: wrt LN(gh) (+ b_hh)
    acc = np.zeros((4, G))
    part = np.zeros((4, G), dh.dtype)
    direct = np.empty((N, H), dh.dtype)
    keep = np.empty((N, H), dh.dtype)
    for s in range(schedule.shape[0] - 1, -1, -1):
        t, p, q, n = backward_step(schedule, s, dh, dY, dY_at)
        unzone_grads(dh, None, zh, None, keep, None, t, n)
        for b in range(n):
            g, nh, h_prev, dh_b = gates[t, b], saved[t, b, :G], S[p, b], dh[b]
            row, rec = rows[b], recs[b]
            for j in range(H):
                rj, zj, nj, dhj = g[j], g[H + j], g[2 * H + j], dh_b[j]
                k = 2 * H + j
                hn = (nh[k] * w_hh[k] + s_hh[k]) + b_hn[j]
                dnj = dhj * (ONE - zj) * (ONE - nj * nj)
                row[j] = dnj * hn * rj * (ONE - rj)
                row[H + j] = dhj * (h_prev[j] - nj) * zj * (ONE - zj)
                row[k] = dnj
                rec[k] = dnj * rj
                direct[b, j] = dhj * zj                # h_prev's path through z h_prev
            for k in range(2 * H):
                rec[k] = row[k]
        _both_norms_backward(rows, recs, True, saved[t], dGX[t], dGH[t], w_ih, w_hh, G, 2 * G,
                             inv_g, acc, part, n)
        into_previous(dGH[t, :n], W_hh, dh, None, mask, zh, keep, None, n)
        add_rows(dh, direct, n)
    sums += acc


# -- LSTM ---------------------------------------------------------------------------------------

@njit(**JIT)
def _forward_lstm(GX, bias, scale, shift, W_hh_T, S, C, R, W_hr_T, gh, saved, w_ih, s_ih,
                  w_hh, s_hh, w_c, s_c, inv_g, inv_h, eps, schedule, mask, zh, zc, Cn):
    """[i, f, g, o] = act((LN(GX[t]; ih) + bias) + LN(h_prev W_hh^T; hh)); c = f c_prev + i g;
    h = o tanh(LN(c)). GX (T, N, 4H), the raw input projections, receives the gates."""
    H = C.shape[2]
    G = 4 * H
    at = 2 * G + H
    hm = np.empty_like(S[0])
    for s in range(schedule.shape[0]):
        t, p, q, n = step_at(schedule, s)
        _recurrent_gemm(S, p, n, W_hh_T, gh, mask, hm)
        for b in range(n):
            g, sv, c_prev, c = GX[t, b], saved[t, b], C[p, b], C[q, b]
            h = S[q, b] if absent(R) else R[t, b]
            nh = _both_norms(sv, gh[b], g, w_ih, s_ih, bias, G, at, inv_g, eps)
            for k in range(G):
                a = g[k] + (nh[k] * w_hh[k] + s_hh[k])
                g[k] = scale[k] * tanh(scale[k] * a) + shift[k]
            for j in range(H):
                c[j] = g[H + j] * c_prev[j] + g[j] * g[2 * H + j]  # c = f c_prev + i g
            nc = sv[2 * G:2 * G + H]
            sv[at + 2] = _normalise(c, nc, inv_h, eps)
            for j in range(H):                                      # h = o tanh(LN(c))
                h[j] = g[3 * H + j] * tanh(nc[j] * w_c[j] + s_c[j])
        if not absent(R):
            gemm(R[t, :n], W_hr_T, S[q, :n])                       # h = W_hr r
        zone_states(S, C, Cn, zh, zc, t, p, q, n)


@njit(**JIT)
def _backward_lstm(gates, C, saved, dY, dY_at, dh, dc, dGX, dGH, W_hh, W_hr, dHs, dR, w_ih, w_hh, w_c,
                   s_c, sums, c_sums, inv_g, inv_h, schedule, mask, zh, zc):
    """``sums`` (4, 4H) float64 receives the sums of :func:`_both_norms_backward`, ``c_sums``
    (2, H) those of ``LN(c)``'s shift and gain. ``y = tanh(LN(c) w_c + s_c)`` is recomputed
    from the saved ``LN(c)`` with the forward's arithmetic, so to the same values. (Kept, they
    were a tenth of the saved rows; recomputed, the training steps at (64, 100, 32, 128) ran
    as fast, 0.996x, medians of 11 pairs of alternating processes: the memory is the gain.)"""
    N, H = dc.shape
    G = 4 * H
    at = 2 * G + H
    rows = np.empty((N, G), dh.dtype)
    y = np.empty(H, dh.dtype)                  # a row's tanh(LN(c)) (recomputed)
    dys = np.empty((N, H), dh.dtype)           # wrt LN(c)
    dcn = np.empty(H, dh.dtype)                # wrt c, through LN(c)
    acc = np.zeros((4, G))
    part = np.zeros((4, G), dh.dtype)
    acc_c = np.zeros((2, H))
    part_c = np.zeros((2, H), dh.dtype)
    keep_h = np.empty((N, dh.shape[1]), dh.dtype)
    keep_c = np.empty((N, H), dh.dtype)
    for s in range(schedule.shape[0] - 1, -1, -1):
        t, p, q, n = backward_step(schedule, s, dh, dY, dY_at)
        unzone_grads(dh, dc, zh, zc, keep_h, keep_c, t, n)
        d_out = project_back(dh, dHs, W_hr, dR, t, n)     # what reaches o * tanh(LN(c))
        for b in range(n):
            g, sv, c_prev, d_b, dc_b = gates[t, b], saved[t, b], C[p, b], d_out[b], dc[b]
            nc = sv[2 * G:2 * G + H]
            dy, row = dys[b], rows[b]
            for j in range(H):
                yj = tanh(nc[j] * w_c[j] + s_c[j])
                y[j] = yj
                dy[j] = d_b[j] * g[3 * H + j] * (ONE - yj * yj)
            _normalise_backward(dy, nc, w_c, sv[at + 2], inv_h, dcn)
            for j in range(H):
                ij, fj, gj, oj = g[j], g[H + j], g[2 * H + j], g[3 * H + j]
                dcj = dc_b[j] + dcn[j]
                row[j] = dcj * gj * ij * (ONE - ij)
                row[H + j] = dcj * c_prev[j] * fj * (ONE - fj)
                row[2 * H + j] = dcj * ij * (ONE - gj * gj)
                row[3 * H + j] = d_b[j] * y[j] * oj * (ONE - oj)
                dc_b[j] = dcj * fj                              # dc_prev
        _gain_sums(dys, saved[t], 2 * G, n, part_c, acc_c)
        _both_norms_backward(rows, rows, False, saved[t], dGX[t], dGH[t], w_ih, w_hh, G, at,
                             inv_g, acc, part, n)
        into_previous(dGH[t, :n], W_hh, dh, dc, mask, zh, keep_h, keep_c, n)
    sums += acc
    c_sums += acc_c


# -- the entry points ---------------------------------------------------------------------------

def transform_input(eq, GX, w):
    """Nothing: the loops normalise each step's input projection (the module docstring). Its
    presence also keeps these cells off the lean and pair paths (:mod:`elman.timeloop`: a
    kernel module with a ``transform_input`` never takes them), whose loops do not
    normalise."""
    return None


def transform_input_backward(eq, dGX, cache, g):
    """``dGX`` as it is: the loops wrote the gradients wrt the raw projections, and summed the
    input side's gain and shift gradients (the module docstring)."""
    return dGX


def bias_grads(eq, dGX, dGH, g, split):
    """Nothing: the loops summed the biases' gradients (the module docstring)."""
    return None


def _kind(eq) -> str:
    return "lstm" if eq.has_cell else "gru" if eq.gates == 3 else "rnn"


def _b_hn(consts, H: int, dtype):
    b = consts.get("bias_hh")
    return np.zeros(H, dtype) if b is None else np.ascontiguousarray(b[2 * H:], dtype=dtype)


def forward(eq, loop):
    k, c = _kind(eq), loop.consts
    GH = loop.GX.shape[2]
    H = GH // eq.gates
    inv_g, inv_h = 1.0 / GH, 1.0 / H              # (float64: the sums they scale are)
    dt = loop.GX.dtype
    zh, zc, Cn = zone_arrays(loop.zone, dt)
    mask = or_empty(loop.h_mask, dt, 2)
    w_ih, s_ih = c["ln_ih_weight"], c["ln_ih_bias"]
    w_hh, s_hh = c["ln_hh_weight"], c["ln_hh_bias"]
    if k == "rnn":
        loop.run(_forward_rnn, loop.GX, loop.bias, loop.W_hh_T, loop.S, loop.gh, loop.saved,
                 w_ih, s_ih, w_hh, s_hh, inv_g, EPS, eq.nonlinearity == "relu", loop.schedule,
                 mask, zh)
    elif k == "gru":
        loop.run(_forward_gru, loop.GX, loop.bias, loop.W_hh_T, loop.S, loop.gh, loop.saved,
                 w_ih, s_ih, w_hh, s_hh, _b_hn(c, H, dt), inv_g, EPS, loop.schedule, mask, zh)
    else:
        loop.run(_forward_lstm, loop.GX, loop.bias, c["s"], c["shift"], loop.W_hh_T, loop.S,
                 loop.C, or_empty(loop.R, dt, 3), or_no_matrix(loop.W_hr_T, dt), loop.gh,
                 loop.saved, w_ih, s_ih, w_hh, s_hh, c["ln_c_weight"], c["ln_c_bias"],
                 inv_g, inv_h, EPS, loop.schedule, mask, zh, zc, Cn)


def backward(eq, loop):
    cache, c = loop.cache, loop.cache.consts
    eq.prepare_backward(cache, loop.dGX, loop.dGH)       # the sums (c["grad_sums"])
    k = _kind(eq)
    GH = cache.gates.shape[2]
    H = GH // eq.gates
    inv_g, inv_h = 1.0 / GH, 1.0 / H
    dt = loop.dh.dtype
    zh, zc, _ = zone_arrays(cache.zone, dt)
    (dY, dY_at), mask = output_grad(loop, dt), or_empty(loop.h_mask, dt, 2)
    W_hh, w_ih, w_hh = loop.W_step, c["ln_ih_weight"], c["ln_hh_weight"]
    # summed in float64 (T*N rows: in float32 their rounding would add up), then handed to
    # the cell's sums under the parameters' names
    sums = np.zeros((4, GH))
    if k == "rnn":
        loop.run(_backward_rnn, cache.gates, cache.saved, dY, dY_at, loop.dh, loop.dGX,
                 loop.dGH, W_hh, w_ih, w_hh, sums, inv_g, eq.nonlinearity == "relu",
                 loop.schedule, mask, zh)
    elif k == "gru":
        loop.run(_backward_gru, cache.gates, cache.saved, cache.S, dY, dY_at, loop.dh, loop.dGX,
                 loop.dGH, W_hh, w_ih, w_hh, c["ln_hh_bias"], _b_hn(c, H, cache.gates.dtype),
                 sums, inv_g, loop.schedule, mask, zh)
    else:
        W_hr = loop.w.get("weight_hr")
        dR = None if W_hr is None else np.empty(loop.dc.shape, dt)
        c_sums = np.zeros((2, H))
        loop.run(_backward_lstm, cache.gates, cache.C, cache.saved, dY, dY_at, loop.dh, loop.dc,
                 loop.dGX, loop.dGH, W_hh, or_empty(W_hr, dt, 2), or_empty(loop.dHs, dt, 3),
                 or_empty(dR, dt, 2), w_ih, w_hh, c["ln_c_weight"], c["ln_c_bias"], sums,
                 c_sums, inv_g, inv_h, loop.schedule, mask, zh, zc)
        _add_sums(c["grad_sums"], ln_c_bias=c_sums[0], ln_c_weight=c_sums[1])
    if k != "gru":                  # one gradient wrt both sides' pre-activations
        sums[2] = sums[0]
    _add_sums(c["grad_sums"], ln_ih_bias=sums[0], ln_ih_weight=sums[1], ln_hh_bias=sums[2],
              ln_hh_weight=sums[3])
    if "bias_ih" in loop.w:         # both biases add where the normalisations' shifts do
        _add_sums(c["grad_sums"], bias_ih=sums[0], bias_hh=sums[2])


def _add_sums(grad_sums: dict, **sums) -> None:
    """Each of ``sums`` added into ``grad_sums`` under its name (a copy where it is new)."""
    for name, a in sums.items():
        if name in grad_sums:
            grad_sums[name] += a
        else:
            grad_sums[name] = a.copy()


# -- a row block's pass as one compiled call --------------------------------------------------

@njit(**JIT)
def _forward_rnn_fused(block, args):
    forward_block(block, _forward_rnn, args)


@njit(**JIT)
def _forward_gru_fused(block, args):
    forward_block(block, _forward_gru, args)


@njit(**JIT)
def _forward_lstm_fused(block, args):
    forward_block(block, _forward_lstm, args)


@njit(**JIT)
def _backward_rnn_fused(block, args):
    backward_block(block, _backward_rnn, args)


@njit(**JIT)
def _backward_gru_fused(block, args):
    backward_block(block, _backward_gru, args)


@njit(**JIT)
def _backward_lstm_fused(block, args):
    backward_block(block, _backward_lstm, args)


#: forward and backward call their loop once, through ``loop.run``, so that a row block's
#: pass may run it in one compiled call with the input projection, the weight and input
#: gradients and the copies of its rows (:mod:`._block`; before, each of those was a Python
#: call between the loops, and two blocks' threads handed the GIL to each other at each)
fused_calls = {
    _forward_rnn: _forward_rnn_fused, _forward_gru: _forward_gru_fused,
    _forward_lstm: _forward_lstm_fused, _backward_rnn: _backward_rnn_fused,
    _backward_gru: _backward_gru_fused, _backward_lstm: _backward_lstm_fused,
}
#: the loops take the raw input projection ``X W_ih^T`` and normalise it themselves (and the
#: backward loops give the gradient wrt it): a fused pass may project with a plain GEMM and
#: skip this module's ``transform_input`` and ``transform_input_backward``, which do nothing
#: (:func:`elman.timeloop.fuses_block`)
transforms_in_loop = True
