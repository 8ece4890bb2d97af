"""Compiled time loops of the layer-normalised cells (equations in :mod:`elman.cells.layer_norm`),
the fast twins of ``LayerNormRNNEquations``, ``LayerNormGRUEquations`` and
``LayerNormLSTMEquations``.

The input side's normalisation is a whole-sequence NumPy pass (the cell's ``transform_input``,
shared by both paths); what runs here is the recurrence: per step the GEMM ``h_prev W_hh^T``
into a scratch row, its normalisation, and the gate math, all in one pass over each row. The
saved values are the reference's own layout (``saved_width`` None: the cell's), so the backward
loops read what either path wrote. The per-step gradients of the recurrent normalisation's gain
and shift (and of the GRU's ``b_hh``, and the LSTM's ``LN(c)``) go into the sums the cell's
``prepare_backward`` creates in the pass's own constants (``cache.consts["grad_sums"]``); its
``parameter_grads`` hands them to the layer. Nothing is kept on the shared cell object, so two
directions or two row blocks of a layer may run at once (``reentrant``).
"""
import numpy as np
from numba import njit

from . import _cache  # noqa: F401  (before the decorators: the cache keyed by the package)
from ._blas import gemm
from ._loop import (JIT, ONE, ZERO, absent, add_rows, backward_step, mask_into, or_empty,
                    or_no_matrix, project_back, step_at, zone_arrays, zone_states, unzone_grads,
                    into_previous)
from ._math import sigmoid, tanh
from ..cells.layer_norm import EPS

__all__ = ["forward", "backward"]

saved_width = None     # the reference's layout (the cell's saved_width)
dgh_blocks = None      # dGH has every gate block (the recurrent side has its own norm)


# The row sums below are the only reductions in these loops. LLVM keeps a float sum in its
# written order, one add after another (each waits for the last: scalar, latency-bound), unless
# it may reassociate it; so the sums live in helpers of their own compiled with only that
# licence ('reassoc', and 'contract' for a * b + s as one FMA), which lets them run on vector
# registers with several partial sums. Not numba's fastmath=True: 'nnan'/'ninf' would let LLVM
# assume no NaN or inf, and a NaN must still come out as NaN. The helpers are not numba-inlined
# (that would drop their flags into the caller's); LLVM inlines them, flags kept per instruction.
SUMS = dict(JIT, fastmath={"reassoc", "contract"})


@njit(**SUMS)
def _row_sum(v):
    """sum(v), in float64 (float32 rounding, amplified by 1/std, would be most of the float32
    error)."""
    s = 0.0
    for k in range(v.shape[0]):
        s += v[k]
    return s


@njit(**SUMS)
def _row_sum_sq(v, mu):
    """sum((v - mu)^2), in float64."""
    s = 0.0
    for k in range(v.shape[0]):
        d = v[k] - mu
        s += d * d
    return s


@njit(**SUMS)
def _row_dot(a, b):
    """sum(a * b), in float64."""
    s = 0.0
    for k in range(a.shape[0]):
        s += a[k] * b[k]
    return s


@njit(inline="always")
def _normalise(v, out, inv_m, eps):
    """out = (v - mean(v)) / sqrt(var(v) + eps) over the row; returns 1/sqrt(var + eps). The
    sums are taken in float64 (:func:`_row_sum`)."""
    mu = _row_sum(v) * inv_m
    rstd = 1.0 / np.sqrt(_row_sum_sq(v, mu) * inv_m + eps)
    for k in range(v.shape[0]):
        out[k] = (v[k] - mu) * rstd
    return rstd


@njit(inline="always")
def _normalise_backward(d, n, gain, rstd, inv_m, acc_w, acc_b, dn, out):
    """out = rstd (dn - mean(dn) - n mean(dn n)) with dn = d * gain: the gradient wrt the
    un-normalised row from ``d`` (wrt gain * n + shift); acc_w += d n, acc_b += d. Sums in
    float64, as in :func:`_normalise`. ``out`` may be ``d`` itself."""
    for k in range(d.shape[0]):
        acc_w[k] += d[k] * n[k]
        acc_b[k] += d[k]
        dn[k] = d[k] * gain[k]
    s1 = _row_sum(dn) * inv_m
    s2 = _row_dot(dn, n) * inv_m
    for k in range(d.shape[0]):
        out[k] = rstd * ((dn[k] - s1) - n[k] * s2)


@njit(inline="always")
def _recurrent_gemm(S, p, n, W_hh_T, gh, mask, hm):
    """gh[:n] = h_prev W_hh^T (h_prev * mask with recurrent dropout)."""
    if absent(mask):
        gemm(S[p, :n], W_hh_T, gh[:n])
    else:
        mask_into(S[p, :n], mask, hm)
        gemm(hm[:n], W_hh_T, gh[:n])


# -- RNN ----------------------------------------------------------------------------------------

@njit(**JIT)
def _forward_rnn(GX, bias, W_hh_T, S, gh, saved, w_hh, s_hh, inv_g, eps, relu, schedule, mask,
                 zh):
    """h = act((GX[t] + bias) + LN(h_prev W_hh^T)); GX (T, N, H) receives h (the gates),
    saved (T, N, 2H) the normalised recurrent row and its rstd (column H)."""
    H = S.shape[2]
    hm = np.empty_like(S[0])
    for s in range(schedule.shape[0]):
        t, p, q, n = step_at(schedule, s)
        _recurrent_gemm(S, p, n, W_hh_T, gh, mask, hm)
        for b in range(n):
            g, sv, h = GX[t, b], saved[t, b], S[q, b]
            sv[H] = _normalise(gh[b], sv[:H], inv_g, eps)
            for j in range(H):
                a = (g[j] + bias[j]) + (sv[j] * w_hh[j] + s_hh[j])
                if relu:
                    a = a if a > ZERO else ZERO
                else:
                    a = tanh(a)
                g[j] = a
                h[j] = a
        zone_states(S, None, None, zh, None, t, p, q, n)


@njit(**JIT)
def _backward_rnn(gates, saved, dY, dh, dGX, dGH, W_hh, w_hh, acc_w, acc_b, inv_g, relu,
                  schedule, mask, zh):
    N, H = dh.shape
    row = np.empty(H, dh.dtype)
    dn = np.empty(H, dh.dtype)
    keep = np.empty((N, H), dh.dtype)
    for s in range(schedule.shape[0] - 1, -1, -1):
        t, p, q, n = backward_step(schedule, s, dh, dY)
        unzone_grads(dh, None, zh, None, keep, None, t, n)
        for b in range(n):
            h, sv, dh_b = gates[t, b], saved[t, b], dh[b]
            for j in range(H):
                if relu:
                    row[j] = dh_b[j] if h[j] > ZERO else ZERO
                else:
                    row[j] = dh_b[j] * (ONE - h[j] * h[j])
            _normalise_backward(row, sv[:H], w_hh, sv[H], inv_g, acc_w, acc_b, dn, dGH[t, b])
            d = dGX[t, b]
            for j in range(H):
                d[j] = row[j]
        into_previous(dGH[t, :n], W_hh, dh, None, mask, zh, keep, None, n)


# -- GRU ----------------------------------------------------------------------------------------

@njit(**JIT)
def _forward_gru(GX, bias, W_hh_T, S, gh, saved, w_hh, s_hh, b_hn, inv_g, eps, schedule, mask,
                 zh):
    """[r, z] = sigmoid((GX + bias) + LN(gh)); n = tanh((GX_n + bias_n) + r (LN(gh)_n +
    b_hn)); h = n + z (h_prev - n). saved (T, N, 4H): LN(gh) normalised (3H), rstd."""
    H = S.shape[2]
    hm = np.empty_like(S[0])
    for s in range(schedule.shape[0]):
        t, p, q, n = step_at(schedule, s)
        _recurrent_gemm(S, p, n, W_hh_T, gh, mask, hm)
        for b in range(n):
            g, sv, h_prev, h = GX[t, b], saved[t, b], S[p, b], S[q, b]
            sv[3 * H] = _normalise(gh[b], sv[:3 * H], inv_g, eps)
            for k in range(2 * H):                                    # r, z
                g[k] = sigmoid((g[k] + bias[k]) + (sv[k] * w_hh[k] + s_hh[k]))
            for j in range(H):
                k = 2 * H + j
                hn = (sv[k] * w_hh[k] + s_hh[k]) + b_hn[j]
                nj = tanh((g[k] + bias[k]) + g[j] * hn)
                g[k] = nj
                h[j] = (h_prev[j] - nj) * g[H + j] + nj
        zone_states(S, None, None, zh, None, t, p, q, n)


@njit(**JIT)
def _backward_gru(gates, saved, S, dY, dh, dGX, dGH, W_hh, w_hh, s_hh, b_hn, acc_w, acc_b,
                  acc_bhh, inv_g, schedule, mask, zh):
    N, H = dh.shape
    row = np.empty(3 * H, dh.dtype)            # [dr, dz, dn]: the input side
    rec = np.empty(3 * H, dh.dtype)            # [dr, dz, dn r]: wrt LN(gh) (+ b_hh)
    dn = np.empty(3 * H, dh.dtype)
    direct = np.empty((N, H), dh.dtype)
    keep = np.empty((N, H), dh.dtype)
    for s in range(schedule.shape[0] - 1, -1, -1):
        t, p, q, n = backward_step(schedule, s, dh, dY)
        unzone_grads(dh, None, zh, None, keep, None, t, n)
        for b in range(n):
            g, sv, h_prev, dh_b = gates[t, b], saved[t, b], S[p, b], dh[b]
            for j in range(H):
                rj, zj, nj, dhj = g[j], g[H + j], g[2 * H + j], dh_b[j]
                k = 2 * H + j
                hn = (sv[k] * w_hh[k] + s_hh[k]) + b_hn[j]
                dnj = dhj * (ONE - zj) * (ONE - nj * nj)
                row[j] = dnj * hn * rj * (ONE - rj)
                row[H + j] = dhj * (h_prev[j] - nj) * zj * (ONE - zj)
                row[k] = dnj
                rec[k] = dnj * rj
                direct[b, j] = dhj * zj                # h_prev's path through z h_prev
            for k in range(2 * H):
                rec[k] = row[k]
            if not absent(acc_bhh):
                for k in range(3 * H):
                    acc_bhh[k] += rec[k]
            _normalise_backward(rec, sv[:3 * H], w_hh, sv[3 * H], inv_g, acc_w, acc_b, dn,
                                dGH[t, b])
            d = dGX[t, b]                              # last: dGX may be the gates just read
            for k in range(3 * H):
                d[k] = row[k]
        into_previous(dGH[t, :n], W_hh, dh, None, mask, zh, keep, None, n)
        add_rows(dh, direct, n)


# -- LSTM ---------------------------------------------------------------------------------------

@njit(**JIT)
def _forward_lstm(GX, bias, scale, shift, W_hh_T, S, C, R, W_hr_T, gh, saved, w_hh, s_hh, w_c,
                  s_c, inv_g, inv_h, eps, schedule, mask, zh, zc, Cn):
    """[i, f, g, o] = act((GX + bias) + LN(gh)); c = f c_prev + i g; h = o tanh(LN(c)).
    saved (T, N, 8H): LN(gh) normalised (4H), rstd, LN(c) normalised (H), rstd,
    tanh(LN(c)) (H), as the reference keeps them."""
    H = C.shape[2]
    hm = np.empty_like(S[0])
    for s in range(schedule.shape[0]):
        t, p, q, n = step_at(schedule, s)
        _recurrent_gemm(S, p, n, W_hh_T, gh, mask, hm)
        for b in range(n):
            g, sv, c_prev, c = GX[t, b], saved[t, b], C[p, b], C[q, b]
            h = S[q, b] if absent(R) else R[t, b]
            sv[4 * H] = _normalise(gh[b], sv[:4 * H], inv_g, eps)
            for k in range(4 * H):
                a = (g[k] + bias[k]) + (sv[k] * w_hh[k] + s_hh[k])
                g[k] = scale[k] * tanh(scale[k] * a) + shift[k]
            for j in range(H):
                c[j] = g[H + j] * c_prev[j] + g[j] * g[2 * H + j]  # c = f c_prev + i g
            nc, y = sv[5 * H:6 * H], sv[7 * H:8 * H]
            sv[6 * H] = _normalise(c, nc, inv_h, eps)
            for j in range(H):
                yj = tanh(nc[j] * w_c[j] + s_c[j])
                y[j] = yj
                h[j] = g[3 * H + j] * yj                            # h = o tanh(LN(c))
        if not absent(R):
            gemm(R[t, :n], W_hr_T, S[q, :n])                       # h = W_hr r
        zone_states(S, C, Cn, zh, zc, t, p, q, n)


@njit(**JIT)
def _backward_lstm(gates, C, saved, dY, dh, dc, dGX, dGH, W_hh, W_hr, dHs, dR, w_hh, w_c,
                   acc_w, acc_b, acc_cw, acc_cb, inv_g, inv_h, schedule, mask, zh, zc):
    N, H = dc.shape
    row = np.empty(4 * H, dh.dtype)
    dy = np.empty(H, dh.dtype)
    dn = np.empty(4 * H, dh.dtype)
    keep_h = np.empty((N, dh.shape[1]), dh.dtype)
    keep_c = np.empty((N, H), dh.dtype)
    for s in range(schedule.shape[0] - 1, -1, -1):
        t, p, q, n = backward_step(schedule, s, dh, dY)
        unzone_grads(dh, dc, zh, zc, keep_h, keep_c, t, n)
        d_out = project_back(dh, dHs, W_hr, dR, t, n)     # what reaches o * tanh(LN(c))
        for b in range(n):
            g, sv, c_prev, d_b, dc_b = gates[t, b], saved[t, b], C[p, b], d_out[b], dc[b]
            nc, y = sv[5 * H:6 * H], sv[7 * H:8 * H]
            for j in range(H):
                dy[j] = d_b[j] * g[3 * H + j] * (ONE - y[j] * y[j])    # wrt LN(c)
            _normalise_backward(dy, nc, w_c, sv[6 * H], inv_h, acc_cw, acc_cb, dn[:H],
                                row[:H])
            for j in range(H):
                ij, fj, gj, oj = g[j], g[H + j], g[2 * H + j], g[3 * H + j]
                dcj = dc_b[j] + row[j]
                row[j] = dcj * gj * ij * (ONE - ij)
                row[H + j] = dcj * c_prev[j] * fj * (ONE - fj)
                row[2 * H + j] = dcj * ij * (ONE - gj * gj)
                row[3 * H + j] = d_b[j] * y[j] * oj * (ONE - oj)
                dc_b[j] = dcj * fj                              # dc_prev
            _normalise_backward(row, sv[:4 * H], w_hh, sv[4 * H], inv_g, acc_w, acc_b, dn,
                                dGH[t, b])
            d = dGX[t, b]                              # last: dGX may be the gates just read
            for k in range(4 * H):
                d[k] = row[k]
        into_previous(dGH[t, :n], W_hh, dh, dc, mask, zh, keep_h, keep_c, n)


# -- the input side, whole sequence -------------------------------------------------------------

@njit(**JIT)
def _normalise_rows(V, gain, shift, Nrm, rstd, inv_m, eps):
    """Each row of V (R, M) normalised into Nrm (R, M) with its rstd (R, 1), and V = gain Nrm +
    shift in place: the cell's ``transform_input``, compiled."""
    for r in range(V.shape[0]):
        v, n = V[r], Nrm[r]
        rstd[r, 0] = _normalise(v, n, inv_m, eps)
        for k in range(v.shape[0]):
            v[k] = n[k] * gain[k] + shift[k]


@njit(**JIT)
def _normalise_rows_backward(D, Nrm, rstd, gain, inv_m, acc_w, acc_b):
    """D (R, M), the gradient wrt gain Nrm + shift, becomes in place the gradient wrt the raw
    rows; acc_w, acc_b (float64) receive the gain's and the shift's."""
    dn = np.empty(D.shape[1], D.dtype)
    for r in range(D.shape[0]):
        _normalise_backward(D[r], Nrm[r], gain, rstd[r, 0], inv_m, acc_w, acc_b, dn, D[r])


def transform_input(eq, GX, w):
    """The compiled twin of ``_LayerNorm.transform_input``: the same ``(n, rstd, gain)``."""
    T, N, GH = GX.shape
    n = np.empty_like(GX)
    rstd = np.empty((T, N, 1), GX.dtype)
    _normalise_rows(GX.reshape(T * N, GH), w["ln_ih_weight"], w["ln_ih_bias"],
                    n.reshape(T * N, GH), rstd.reshape(T * N, 1), 1.0 / GH, EPS)
    return n, rstd, w["ln_ih_weight"]


def transform_input_backward(eq, dGX, cache, g):
    """The compiled twin of ``_LayerNorm.transform_input_backward`` (in place on ``dGX``)."""
    n, rstd, gain = cache.input_state
    T, N, GH = dGX.shape
    acc_w, acc_b = np.zeros(GH), np.zeros(GH)
    _normalise_rows_backward(dGX.reshape(T * N, GH), n.reshape(T * N, GH),
                             rstd.reshape(T * N, 1), gain, 1.0 / GH, acc_w, acc_b)
    g["ln_ih_weight"] += acc_w
    g["ln_ih_bias"] += acc_b
    return dGX


# -- the entry points ---------------------------------------------------------------------------

def _kind(eq) -> str:
    return "lstm" if eq.has_cell else "gru" if eq.gates == 3 else "rnn"


def _scalars(dtype, GH: int, H: int):
    """1/(G*H), 1/H and eps for the normalisations (float64: their sums are)."""
    return 1.0 / GH, 1.0 / H, EPS


def _b_hn(consts, H: int, dtype):
    b = consts.get("bias_hh")
    return np.zeros(H, dtype) if b is None else np.ascontiguousarray(b[2 * H:], dtype=dtype)


def forward(eq, loop):
    k, c = _kind(eq), loop.consts
    GH = loop.GX.shape[2]
    H = GH // eq.gates
    inv_g, inv_h, eps = _scalars(loop.GX.dtype, GH, H)
    dt = loop.GX.dtype
    zh, zc, Cn = zone_arrays(loop.zone, dt)
    mask = or_empty(loop.h_mask, dt, 2)
    w_hh, s_hh = c["ln_hh_weight"], c["ln_hh_bias"]
    if k == "rnn":
        _forward_rnn(loop.GX, loop.bias, loop.W_hh_T, loop.S, loop.gh, loop.saved, w_hh, s_hh,
                     inv_g, eps, eq.nonlinearity == "relu", loop.schedule, mask, zh)
    elif k == "gru":
        _forward_gru(loop.GX, loop.bias, loop.W_hh_T, loop.S, loop.gh, loop.saved, w_hh, s_hh,
                     _b_hn(c, H, dt), inv_g, eps, loop.schedule, mask, zh)
    else:
        _forward_lstm(loop.GX, loop.bias, c["s"], c["shift"], loop.W_hh_T, loop.S, loop.C,
                      or_empty(loop.R, dt, 3), or_no_matrix(loop.W_hr_T, dt), loop.gh,
                      loop.saved, w_hh, s_hh, c["ln_c_weight"], c["ln_c_bias"], inv_g, inv_h,
                      eps, loop.schedule, mask, zh, zc, Cn)


def backward(eq, loop):
    cache, c = loop.cache, loop.cache.consts
    eq.prepare_backward(cache, loop.dGX, loop.dGH)       # the sums (c["grad_sums"])
    # summed here in float64 (T*N rows one by one: in float32 their rounding would add up),
    # then handed to the cell's
    acc = {name: np.zeros(a.shape) for name, a in c["grad_sums"].items()}
    k = _kind(eq)
    GH = cache.gates.shape[2]
    H = GH // eq.gates
    inv_g, inv_h, _ = _scalars(cache.gates.dtype, GH, H)
    dt = loop.dh.dtype
    zh, zc, _ = zone_arrays(cache.zone, dt)
    dY, mask = or_empty(loop.dY, dt, 3), or_empty(loop.h_mask, dt, 2)
    W_hh, w_hh = loop.W_step, c["ln_hh_weight"]
    acc_w, acc_b = acc["ln_hh_weight"], acc["ln_hh_bias"]
    if k == "rnn":
        _backward_rnn(cache.gates, cache.saved, dY, loop.dh, loop.dGX, loop.dGH, W_hh,
                      w_hh, acc_w, acc_b, inv_g, eq.nonlinearity == "relu", loop.schedule,
                      mask, zh)
    elif k == "gru":
        _backward_gru(cache.gates, cache.saved, cache.S, dY, loop.dh, loop.dGX, loop.dGH,
                      W_hh, w_hh, c["ln_hh_bias"], _b_hn(c, H, cache.gates.dtype), acc_w,
                      acc_b, or_empty(acc.get("bias_hh"), np.float64, 1), inv_g,
                      loop.schedule, mask, zh)
    else:
        W_hr = loop.w.get("weight_hr")
        dR = None if W_hr is None else np.empty(loop.dc.shape, dt)
        _backward_lstm(cache.gates, cache.C, cache.saved, dY, loop.dh, loop.dc, loop.dGX,
                       loop.dGH, W_hh, or_empty(W_hr, dt, 2), or_empty(loop.dHs, dt, 3),
                       or_empty(dR, dt, 2), w_hh, c["ln_c_weight"], acc_w, acc_b,
                       acc["ln_c_weight"], acc["ln_c_bias"], inv_g, inv_h, loop.schedule,
                       mask, zh, zc)
    for name, a in acc.items():
        c["grad_sums"][name] += a
