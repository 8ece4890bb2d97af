"""Compiled GRU time loops (equations in :mod:`elman.cells.gru`), the fast twin of
``GRUEquations.forward``/``backward``: ``reset_after=True`` (PyTorch's GRU, Keras' default)
and the classic candidate ``tanh(W_in x + W_hn (r * h_prev) + b)`` (``reset_after=False``),
whose step needs a second GEMM once r is known."""
import numpy as np
from numba import njit

from . import _cache  # noqa: F401  (before the decorators: the cache keyed by the package)
from ._blas import gemm, gemm_acc
from ._pair import pair_stack, pair_steps, pipe_stack, project_units, rows_stack, unit_rows
from ._loop import (JIT, ONE, absent, add_row, add_rows, backward_step, bias_sums,
                    copy_row_summed, keep_direction, keep_lean_direction, lean_arrays,
                    lean_start_into, mask_into, or_empty, output_grad, row_added, scratch_row,
                    settle_sums, stack_lean, state_row, state_rows, step_at, zone_arrays,
                    zone_states, unzone_grads, into_previous)
from ._windows import planes
from ._block import backward_block, forward_block
from ._math import sigmoid, tanh

__all__ = ["forward", "forward_lean", "forward_stack_lean", "forward_stack_pair",
           "forward_stack_pipe", "forward_stack_rows", "forward_pair",
           "pairs", "backward"]


@njit(**JIT)
def _forward(GX, bias, W_hh_T, S, plane, HN, gh, b_hn, schedule, mask, zh):
    """GX (T, N, 3H) input projections, overwritten with [r, z, n]; bias (3H,) the input-side
    biases (b_ih, plus b_hh for r and z); HN (T, N, H) keeps W_hn h_prev + b_hn; the states
    S (T+1, N, H), or plane ``plane`` of a shared (T+1, N, D, H) array (``shares_states``;
    :func:`_loop.state_rows`). ``zh`` (T, N, H) or empty (``_loop.absent``): zoneout, S receives
    zh h_prev + (1 - zh) h_t (backward needs only the gates and h_prev, which S keeps)."""
    H = S.shape[-1]
    hm = np.empty((S.shape[1], H), S.dtype)    # h_prev * mask (recurrent dropout)
    for s in range(schedule.shape[0]):
        t, p, q, n = step_at(schedule, s)
        if absent(mask):
            gemm(state_rows(S, p, n, plane), W_hh_T, gh[:n])
        else:                                  # z * h_prev below keeps the unmasked state
            mask_into(state_rows(S, p, n, plane), mask, hm)
            gemm(hm[:n], W_hh_T, gh[:n])
        for b in range(n):
            g, r, hn, h_prev, h = GX[t, b], gh[b], HN[t, b], state_row(S, p, b, plane), state_row(S, q, b, plane)
            rz, rt, z, nn = g[:2 * H], g[:H], g[H:2 * H], g[2 * H:]   # views indexed from 0:
            grz, ghn, bn = r[:2 * H], r[2 * H:], bias[2 * H:]         # see lstm._forward
            for k in range(2 * H):                                    # r, z
                rz[k] = sigmoid((rz[k] + bias[k]) + grz[k])
            for j in range(H):
                a = ghn[j] + b_hn[j]
                hn[j] = a
                nj = tanh(nn[j] + bn[j] + rt[j] * a)   # n = tanh(.. + r (W_hn h + b_hn))
                nn[j] = nj
                h[j] = (h_prev[j] - nj) * z[j] + nj    # h = n + z (h_prev - n)
        zone_states(S, None, None, zh, None, t, p, q, n, plane)


@njit(**JIT)
def _forward_lean(X, W_ih, h0, bias, W_hh_T, b_hn, schedule):
    """:func:`_forward` of a call that keeps nothing, with its projection and arrays, as one
    compiled call (``forward_lean``). Returns S."""
    GX, S = lean_arrays(X, bias.shape[0], h0.shape[1])
    T, N, GH = GX.shape
    _lean_into(X, W_ih, h0, bias, W_hh_T, b_hn, schedule, GX, S,
               np.empty((T, N, GH // 3), X.dtype), np.empty((N, GH), X.dtype))
    return S


@njit(inline="always")
def _lean_into(X, W_ih, h0, bias, W_hh_T, b_hn, schedule, GX, S, HN, gh):
    """:func:`_forward_lean`'s work in the caller's arrays (its own, or a row block's kept
    ones: :func:`_direction_rows`)."""
    lean_start_into(X, W_ih, h0, schedule, GX, S)
    _forward(GX, bias, W_hh_T, S, 0, HN, gh,
             b_hn, schedule, np.empty((0, 0), X.dtype),
             np.empty((0, 0, 0), X.dtype))                 # (no mask, no zoneout: absent)


@njit(inline="always")
def _units(operands, t, lo, hi):
    """Hidden units ``lo:hi`` of step ``t`` of one sequence (reset_after), for
    :func:`_pair.pair_steps`: :func:`_forward`'s arithmetic for them, after their input
    projection for the whole sequence at step 0 (as in :func:`elman.fast.lstm._units`, which
    says why). X (T, I), GX (T, 3H), S (T + 1, H); ``gh`` (3H,) the step's recurrent
    pre-activations."""
    X, W_ih, bias, W_hh, panels, ih_panels, compute, b_hn, GX, gh, S = operands
    H = S.shape[1]
    n = hi - lo
    if t == 0:
        project_units(X, W_ih, ih_panels, compute, GX, H, lo, hi)
    g, h_prev = GX[t], S[t]
    for k in range(3):
        unit_rows(W_hh, panels, compute, h_prev, gh[k * H + lo:k * H + hi], k * H + lo,
                  k * H + hi, False)
    for k in range(2):                                            # r, z
        a, b = k * H + lo, k * H + hi
        gk, bk, hk = g[a:b], bias[a:b], gh[a:b]
        for j in range(n):
            gk[j] = sigmoid((gk[j] + bk[j]) + hk[j])
    r, z, nn = g[lo:hi], g[H + lo:H + hi], g[2 * H + lo:2 * H + hi]
    ghn, bn, bhn = gh[2 * H + lo:2 * H + hi], bias[2 * H + lo:2 * H + hi], b_hn[lo:hi]
    hp, h = h_prev[lo:hi], S[t + 1, lo:hi]
    for j in range(n):
        nj = tanh(nn[j] + bn[j] + r[j] * (ghn[j] + bhn[j]))     # n = tanh(.. + r (W_hn h + b_hn))
        h[j] = (hp[j] - nj) * z[j] + nj                          # h = n + z (h_prev - n)


@njit(**JIT)
def _forward_pair(X, W_ih, bias, W_hh, panels, ih_panels, compute, b_hn, GX, gh, S, sync, bell,
                  gen, me, split, patience, spins):
    return pair_steps(_units, (X, W_ih, bias, W_hh, panels, ih_panels, compute, b_hn, GX, gh, S),
                      X.shape[0], S.shape[1], sync, bell, gen, me, split, patience, spins)


@njit(**JIT)
def _backward(gates, HN, S, plane, dY, dY_at, dh, dGX, dGHn, W_hh, schedule, mask, zh, sums,
              part, rows):
    """dGX (T, N, 3H) receives the input-side pre-activation gradients (it may be ``gates``
    itself, consumed: each step reads its gates before their gradients replace them); dGHn
    (T, N, H) the recurrent side's candidate block, dn_pre * r (its r and z blocks are dGX's:
    not stored twice); dh (N, H) enters as the gradient wrt the final state and leaves as that
    wrt h0. ``sums`` (4H,) float64 receives the sums of every row of dGX (its first 3H) and of
    dGHn (its last H): the biases' gradients (``part``, ``rows``: :func:`_loop.bias_sums`)."""
    N, H = dh.shape
    row = scratch_row(gates)
    dgh = np.empty((N, 3 * H), gates.dtype)    # this step's recurrent-side rows, for its GEMM
    direct = np.empty((N, H), gates.dtype)     # h_prev's own path, dh * z
    keep = np.empty((N, H), gates.dtype)       # zoneout: dh's share that goes to h_prev
    for s in range(schedule.shape[0] - 1, -1, -1):
        t, p, q, n = backward_step(schedule, s, dh, dY, dY_at)
        unzone_grads(dh, None, zh, None, keep, None, t, n)
        for b in range(n):
            g, hn, h_prev = gates[t, b], HN[t, b], state_row(S, p, b, plane)
            dh_b, direct_b = dh[b], direct[b]
            r, z, nn = g[:H], g[H:2 * H], g[2 * H:]
            dr, dz, dn = row[:H], row[H:2 * H], row[2 * H:]
            for j in range(H):
                rj, zj, nj, dhj = r[j], z[j], nn[j], dh_b[j]
                dnj = ((ONE - nj * nj) * (ONE - zj)) * dhj
                dz[j] = ((ONE - zj) * zj) * ((h_prev[j] - nj) * dhj)
                dr[j] = ((ONE - rj) * rj) * (dnj * hn[j])
                dn[j] = dnj
                direct_b[j] = dhj * zj                 # h_prev's path through z h_prev
            # the recurrent side: [dr, dz] as on the input side, the candidate's times r
            dgh_b, dghn, part_n = dgh[b], dGHn[t, b], part[3 * H:]
            for k in range(2 * H):
                dgh_b[k] = row[k]
            for j in range(H):
                d = dn[j] * r[j]
                dgh_b[2 * H + j] = d
                dghn[j] = d
                part_n[j] += d
            copy_row_summed(row, dGX[t, b], part[:3 * H])  # last: dGX may be the gates just read
            row_added(sums, part, rows)
        into_previous(dgh[:n], W_hh, dh, None, mask, zh, keep, None, n)  # (h_prev * mask)
        add_rows(dh, direct, n)
    settle_sums(sums, part, rows)


@njit(**JIT)
def _forward_classic(GX, bias, W_rz_T, W_hn_T, S, plane, RH, grz, schedule, zh):
    """reset_after=False. GX (T, N, 3H) input projections, overwritten with [r, z, n]; bias
    (3H,) every bias; W_rz_T (H, 2H) and W_hn_T (H, H) the recurrent weights of r, z and of
    the candidate; RH (T, N, H) keeps r * h_prev (the candidate's input, for dW_hn); the
    states S as in :func:`_forward`."""
    H = S.shape[-1]
    for s in range(schedule.shape[0]):
        t, p, q, n = step_at(schedule, s)
        gemm(state_rows(S, p, n, plane), W_rz_T, grz[:n])
        for b in range(n):
            g, gh, h_prev, rh = GX[t, b], grz[b], state_row(S, p, b, plane), RH[t, b]
            r, nn, bn = g[:H], g[2 * H:], bias[2 * H:]
            for k in range(2 * H):                                    # r, z
                g[k] = sigmoid((g[k] + bias[k]) + gh[k])
            for j in range(H):
                rh[j] = r[j] * h_prev[j]
                nn[j] += bn[j]
        gemm_acc(RH[t, :n], W_hn_T, GX[t, :n, 2 * H:])  # n_pre += (r h_prev) W_hn^T
        for b in range(n):
            g, h_prev, h = GX[t, b], state_row(S, p, b, plane), state_row(S, q, b, plane)
            z, nn = g[H:2 * H], g[2 * H:]
            for j in range(H):
                nj = tanh(nn[j])
                nn[j] = nj
                h[j] = (h_prev[j] - nj) * z[j] + nj    # h = n + z (h_prev - n)
        zone_states(S, None, None, zh, None, t, p, q, n, plane)


@njit(**JIT)
def _forward_classic_lean(X, W_ih, h0, bias, W_rz_T, W_hn_T, schedule):
    """:func:`_forward_classic` of a call that keeps nothing, with its projection and arrays,
    as one compiled call (``forward_lean``). Returns S."""
    GX, S = lean_arrays(X, bias.shape[0], h0.shape[1])
    T, N, GH = GX.shape
    H = GH // 3
    _classic_lean_into(X, W_ih, h0, bias, W_rz_T, W_hn_T, schedule, GX, S,
                       np.empty((T, N, H), X.dtype), np.empty((N, 2 * H), X.dtype))
    return S


@njit(inline="always")
def _classic_lean_into(X, W_ih, h0, bias, W_rz_T, W_hn_T, schedule, GX, S, RH, grz):
    """:func:`_forward_classic_lean`'s work in the caller's arrays (its own, or a row
    block's kept ones: :func:`_direction_classic_rows`)."""
    lean_start_into(X, W_ih, h0, schedule, GX, S)
    _forward_classic(GX, bias, W_rz_T, W_hn_T,
                     S, 0, RH, grz, schedule,
                     np.empty((0, 0, 0), X.dtype))


@njit(**JIT)
def _stack_lean(X, h0, h_n, operands, schedules):
    return stack_lean(keep_lean_direction, _forward_lean, X, h0, None, h_n, None, operands,
                      schedules)


@njit(**JIT)
def _stack_classic_lean(X, h0, h_n, operands, schedules):
    return stack_lean(keep_lean_direction, _forward_classic_lean, X, h0, None, h_n, None,
                      operands, schedules)


@njit(**JIT)
def _stack_pair(X, h0, h_n, operands, schedules, outs, sync, bell, gen, me, spins):
    return pair_stack(keep_lean_direction, _forward_lean, X, h0, None, h_n, None, operands,
                      schedules, outs, sync, bell, gen, me, spins)


@njit(**JIT)
def _stack_classic_pair(X, h0, h_n, operands, schedules, outs, sync, bell, gen, me, spins):
    return pair_stack(keep_lean_direction, _forward_classic_lean, X, h0, None, h_n, None,
                      operands, schedules, outs, sync, bell, gen, me, spins)


@njit(inline="always")
def _direction_rows(layer_in, out, k, d, h0, c0, h_n, c_n, operands, schedule, arrays):
    """Layer-direction ``k`` of :func:`_pair.rows_stack`: :func:`_forward_lean`'s work on the
    block's arrays (``GX``, ``S``, ``E`` for ``HN``, ``g`` for the step's ``gh``:
    :func:`_pair.rows_arrays`)."""
    W_ih, bias, W_hh_T, b_hn = operands
    S = arrays[4]
    _lean_into(layer_in, W_ih[k], h0[k], bias[k], W_hh_T[k], b_hn[k], schedule, arrays[3], S,
               arrays[6], arrays[7])
    keep_direction(S, out, h_n, k, d)


@njit(inline="always")
def _direction_classic_rows(layer_in, out, k, d, h0, c0, h_n, c_n, operands, schedule,
                            arrays):
    """:func:`_direction_rows` of the classic GRU (:func:`_forward_classic_lean`'s work; its
    (n, 2H) scratch carved from ``g``'s memory)."""
    W_ih, bias, W_rz_T, W_hn_T = operands
    S, g = arrays[4], arrays[7]
    n, H = g.shape[0], arrays[6].shape[2]
    _classic_lean_into(layer_in, W_ih[k], h0[k], bias[k], W_rz_T[k], W_hn_T[k], schedule,
                       arrays[3], S, arrays[6],
                       g.reshape(g.size)[:n * 2 * H].reshape((n, 2 * H)))
    keep_direction(S, out, h_n, k, d)


@njit(**JIT)
def _stack_rows(X, h0, h_n, operands, schedules, first, out, work, sync, bell, gen, me, spins):
    return rows_stack(_direction_rows, X, h0, None, h_n, None, operands, schedules, first, out,
                      work, sync, bell, gen, me, spins)


@njit(**JIT)
def _stack_classic_rows(X, h0, h_n, operands, schedules, first, out, work, sync, bell, gen, me,
                        spins):
    return rows_stack(_direction_classic_rows, X, h0, None, h_n, None, operands, schedules,
                      first, out, work, sync, bell, gen, me, spins)


@njit(**JIT)
def _stack_pipe(X, h0, h_n, operands, schedule, last, outs, sync, bell, gen, me, spins):
    return pipe_stack(keep_lean_direction, _forward_lean, X, h0, None, h_n, None, operands,
                      schedule, last, outs, sync, bell, gen, me, spins)


@njit(**JIT)
def _stack_classic_pipe(X, h0, h_n, operands, schedule, last, outs, sync, bell, gen, me, spins):
    return pipe_stack(keep_lean_direction, _forward_classic_lean, X, h0, None, h_n, None,
                      operands, schedule, last, outs, sync, bell, gen, me, spins)


@njit(**JIT)
def _backward_classic(gates, RH, S, plane, dY, dY_at, dh, dG, W_rz, W_hn, schedule, zh, sums,
                      part, rows):
    """reset_after=False. dG (T, N, 3H), which may be ``gates`` itself, receives the
    pre-activation gradients (input and recurrent side alike); dh (N, H) enters as the
    gradient wrt the final state and leaves as that wrt h0. ``sums`` (3H,) float64 receives
    the sum of every row of dG (the biases' gradient; ``part``, ``rows``:
    :func:`_loop.bias_sums`)."""
    N, H = dh.shape
    row = scratch_row(gates)
    d_rh = np.empty((N, H), gates.dtype)       # gradient wrt r * h_prev, the candidate's input
    direct = np.empty((N, H), gates.dtype)     # h_prev's own paths, dh * z + d(r h) * r
    keep = np.empty((N, H), gates.dtype)       # zoneout: dh's share that goes to h_prev
    no_mask = np.empty((0, 0), gates.dtype)    # (no recurrent dropout here: absent)
    for s in range(schedule.shape[0] - 1, -1, -1):
        t, p, q, n = backward_step(schedule, s, dh, dY, dY_at)
        unzone_grads(dh, None, zh, None, keep, None, t, n)
        for b in range(n):                     # z and n first: dr needs d(r h_prev) below
            g, h_prev, dh_b = gates[t, b], state_row(S, p, b, plane), dh[b]
            direct_b, d = direct[b], dG[t, b]
            z, nn, dz, dn = g[H:2 * H], g[2 * H:], row[H:2 * H], row[2 * H:]
            for j in range(H):
                zj, nj, dhj = z[j], nn[j], dh_b[j]
                dn[j] = ((ONE - nj * nj) * (ONE - zj)) * dhj
                dz[j] = ((ONE - zj) * zj) * ((h_prev[j] - nj) * dhj)
                direct_b[j] = dhj * zj                 # h_prev's path through z h_prev
            for k in range(H, 3 * H):          # r stays: its gradient overwrites it below
                d[k] = row[k]
        gemm(dG[t, :n, 2 * H:], W_hn, d_rh[:n])        # d(r h_prev) = dn_pre W_hn
        for b in range(n):
            g, h_prev, direct_b = gates[t, b], state_row(S, p, b, plane), direct[b]
            d_rh_b, d = d_rh[b], dG[t, b]
            dr = row[:H]
            for j in range(H):
                rj, dj = g[j], d_rh_b[j]
                dr[j] = ((ONE - rj) * rj) * (dj * h_prev[j])
                direct_b[j] += dj * rj                 # h_prev's path through r h_prev
            for j in range(H):
                d[j] = dr[j]
            add_row(d, part)
            row_added(sums, part, rows)
        into_previous(dG[t, :n, :2 * H], W_rz, dh, None, no_mask, zh, keep, None, n)
        add_rows(dh, direct, n)
    settle_sums(sums, part, rows)


saved_width = 1        # reset_after: W_hn h_prev + b_hn (for dr); classic: r * h_prev
dgh_blocks = 1         # reset_after: dGH keeps only the candidate block (see _backward)
#: the loops take their states as a plane of a shared array (:func:`_forward`), so a
#: bidirectional layer's directions may write theirs into the layer's output
shares_states = True


def forward(eq, loop):
    dt = loop.GX.dtype
    zh, _, _ = zone_arrays(loop.zone, dt)
    if not eq.reset_after:         # W_hh_T covers r, z; consts = (W_hn, W_hn^T)
        loop.run(_forward_classic, loop.GX, loop.bias, loop.W_hh_T, loop.consts[1],
                 *planes(loop.S), loop.saved, loop.gh, loop.schedule, zh)
        return
    loop.run(_forward, loop.GX, loop.bias, loop.W_hh_T, *planes(loop.S), loop.saved, loop.gh,
             _b_hn(loop.consts, loop.S.shape[2], dt), loop.schedule,
             or_empty(loop.h_mask, dt, 2), zh)


def forward_lean(eq, X, h0, c0, W_ih, bias, W_hh_T, consts, schedule):
    if not eq.reset_after:
        return _forward_classic_lean(X, W_ih, h0, bias, W_hh_T, consts[1], schedule), None
    return _forward_lean(X, W_ih, h0, bias, W_hh_T, _b_hn(consts, h0.shape[1], X.dtype),
                         schedule), None


def _stack_operands(eq, h0, W_ih, bias, W_hh_T, consts) -> tuple:
    if eq.reset_after:
        H, dtype = h0.shape[2], h0.dtype
        return W_ih, bias, W_hh_T, tuple(_b_hn(c, H, dtype) for c in consts)
    return W_ih, bias, W_hh_T, tuple(c[1] for c in consts)      # consts = (W_hn, W_hn^T)


def forward_stack_lean(eq, X, h0, c0, W_ih, bias, W_hh_T, consts, schedules):
    h_n = np.empty_like(h0)
    stack = _stack_lean if eq.reset_after else _stack_classic_lean
    return stack(X, h0, h_n, _stack_operands(eq, h0, W_ih, bias, W_hh_T, consts), schedules), \
        h_n, None


def forward_stack_pair(eq, X, h0, c0, W_ih, bias, W_hh_T, consts, schedules, outs, h_n, c_n,
                       sync, bell, gen, me, spins):
    """One thread's share of :func:`elman.timeloop.stack_forward_pair`."""
    stack = _stack_pair if eq.reset_after else _stack_classic_pair
    return stack(X, h0, h_n, _stack_operands(eq, h0, W_ih, bias, W_hh_T, consts), schedules,
                 outs, sync, bell, gen, me, spins)


def forward_stack_rows(eq, X, h0, c0, W_ih, bias, W_hh_T, consts, schedules, first, out, h_n,
                       c_n, work, sync, bell, gen, me, spins):
    """One thread's share of :func:`elman.timeloop.stack_forward_rows`."""
    stack = _stack_rows if eq.reset_after else _stack_classic_rows
    return stack(X, h0, h_n, _stack_operands(eq, h0, W_ih, bias, W_hh_T, consts), schedules,
                 first, out, work, sync, bell, gen, me, spins)


def forward_stack_pipe(eq, X, h0, c0, W_ih, bias, W_hh_T, consts, schedule, last, outs, h_n, c_n,
                       sync, bell, gen, me, spins):
    """One thread's share of :func:`elman.timeloop.stack_forward_pipe`."""
    stack = _stack_pipe if eq.reset_after else _stack_classic_pipe
    return stack(X, h0, h_n, _stack_operands(eq, h0, W_ih, bias, W_hh_T, consts), schedule, last,
                 outs, sync, bell, gen, me, spins)


def pairs(eq) -> bool:
    """Whether :func:`forward_pair` runs this GRU: reset_after only (the classic candidate
    needs all of ``r * h_prev`` before its second product, a second meeting a step)."""
    return eq.reset_after


def forward_pair(eq, X, W_ih, bias, W_hh, panels, ih_panels, compute, consts, GX, g, S, C, sync,
                 bell, gen, me, split, patience, spins):
    """One thread's share of :func:`elman.timeloop.sequence_forward_pair`."""
    return _forward_pair(X, W_ih, bias, W_hh, panels, ih_panels, compute,
                         _b_hn(consts, S.shape[1], X.dtype), GX, g, S, sync, bell, gen, me,
                         split, patience, spins)


def _b_hn(consts, H: int, dtype) -> np.ndarray:
    """reset_after's step constant, b_hn (zeros for a GRU without biases)."""
    return np.zeros(H, dtype) if consts is None else consts


def backward(eq, loop):
    cache, W_hh = loop.cache, loop.W_step          # W_hh[:K], K = 3H (classic: 2H)
    dt = loop.dh.dtype
    zh, _, _ = zone_arrays(loop.zone, dt)
    dY, dY_at = output_grad(loop, dt)
    H = loop.dh.shape[1]
    if not eq.reset_after:
        sums = bias_sums(3 * H, dt)
        loop.run(_backward_classic, cache.gates, cache.saved, *planes(cache.S), dY, dY_at,
                 loop.dh, loop.dGX, W_hh, cache.consts[0], loop.schedule, zh, *sums)
        loop.bias_sums = (sums[0], None)
        return
    sums = bias_sums(4 * H, dt)                    # dGX's 3H columns, then dGH's H
    loop.run(_backward, cache.gates, cache.saved, *planes(cache.S), dY, dY_at, loop.dh,
             loop.dGX, loop.dGH, W_hh, loop.schedule, or_empty(loop.h_mask, dt, 2), zh, *sums)
    loop.bias_sums = (sums[0][:3 * H], sums[0][3 * H:])


@njit(**JIT)
def _forward_fused(block, args):
    forward_block(block, _forward, args)


@njit(**JIT)
def _forward_classic_fused(block, args):
    forward_block(block, _forward_classic, args)


@njit(**JIT)
def _backward_fused(block, args):
    backward_block(block, _backward, args)


@njit(**JIT)
def _backward_classic_fused(block, args):
    backward_block(block, _backward_classic, args)


#: forward and backward call their compiled loop once, through ``loop.run``, so that a row
#: block's pass may run it in one compiled call with its GEMMs: each loop function's fused
#: call (:mod:`._block`)
fused_calls = {
    _forward: _forward_fused,
    _forward_classic: _forward_classic_fused,
    _backward: _backward_fused,
    _backward_classic: _backward_classic_fused,
}
