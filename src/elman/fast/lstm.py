"""Compiled LSTM time loops (equations in :mod:`elman.cells.lstm`), the fast twin of
``LSTMEquations.forward``/``backward`` driven by :mod:`elman.timeloop`.

Per step: one GEMM that adds ``h_prev @ W_hh^T`` onto the step's input projection in place
(NumPy's BLAS with beta = 1, :mod:`._blas`), then short passes over each row that activate the
gates and update ``c`` and ``h``, instead of
~12 NumPy calls with temporaries. Unlike the reference, the forward pass keeps no ``tanh(c)``:
backward recomputes it from ``c`` (0.3 ns per element against T*N*H floats of memory).
Shapes as in :class:`elman.timeloop.SequenceCache`.
"""
import numpy as np
from numba import njit

from . import _cache  # noqa: F401  (before the decorators: the cache keyed by the package)
from ._blas import gemm, gemm_acc
from ._pair import pair_stack, pair_steps, pipe_stack, project_units, rows_stack, unit_rows
from ._loop import (JIT, ONE, absent, backward_step, bias_sums, copy_row_summed,
                    keep_direction, lean_arrays, lean_start_into, mask_into, no_matrix, or_empty,
                    or_no_matrix, output_grad, project_back, row_added, scratch_row,
                    settle_sums, stack_lean, state_row, state_rows, step_at, zone_arrays,
                    zone_states, unzone_grads, into_previous)
from ._math import tanh
from ._windows import planes
from ._block import backward_block, forward_block

__all__ = ["forward", "forward_lean", "forward_stack_lean", "forward_stack_pair",
           "forward_stack_pipe", "forward_stack_rows", "forward_pair",
           "backward"]


@njit(**JIT)
def _forward(GX, bias, scale, shift, W_hh_T, S, plane, C, R, W_hr_T, schedule, mask, zh, zc,
             Cn):
    """GX (T, N, 4H) input projections (bias (4H,) not included), overwritten with the gates
    [i, f, g, o]; scale/shift (4H,) the one-tanh-for-all-gates constants of
    ``LSTMEquations.prepare_forward``; S (T+1, N, P), or plane ``plane`` of the (T+1, N, D, P)
    array a bidirectional layer's directions share (``shares_states``; :func:`_loop.
    state_rows`), and C (T+1, N, H) the states. With a
    projection (proj_size, R and W_hr_T (H, P) given; empty otherwise, see ``_loop.absent``):
    R (T, N, H) receives o * tanh(c) and the state is h = R[t] W_hr^T. ``mask`` (N, P):
    recurrent dropout. Zoneout (zh (T, N, P), zc (T, N, H), Cn (T, N, H); empty without):
    after the step the states are mixed with the previous ones, Cn keeping the new c before
    mixing."""
    H = C.shape[2]
    hm = np.empty((S.shape[1], S.shape[-1]), S.dtype)       # h_prev * mask (recurrent dropout)
    for s in range(schedule.shape[0]):
        t, p, q, n = step_at(schedule, s)
        # GX[t] += h_prev W_hh^T inside the GEMM (beta = 1): the step's pre-activations are
        # read once, by the GEMM, instead of a GEMM output plus GX in the pass below
        if absent(mask):
            gemm_acc(state_rows(S, p, n, plane), W_hh_T, GX[t, :n])
        else:
            mask_into(state_rows(S, p, n, plane), mask, hm)
            gemm_acc(hm[:n], W_hh_T, GX[t, :n])
        for b in range(n):
            # one loop over the row's 4H gates (sigmoid(x) = 0.5 tanh(0.5 x) + 0.5 on i, f, o;
            # tanh on g): fewer, longer loops than one per gate, which matters at small H. The
            # bias comes in here, after the GEMM, not in a pass of its own before it
            # (_loop.add_bias): (x W_ih^T + h W_hh^T) + b, a rounding apart from the
            # reference's (x W_ih^T + b) + h W_hh^T. Measured (alternating, medians): the loop
            # alone 1.02-1.14x as fast at (64, 100, 32, 128) and (64, 100, 128, 256); through
            # the layer, inference 0.99-1.12x, training within its noise (0.87-1.16x)
            g = GX[t, b]
            for k in range(4 * H):
                g[k] = scale[k] * tanh(scale[k] * (g[k] + bias[k])) + shift[k]
            c_prev, c = C[p, b], C[q, b]
            if absent(R):
                h = state_row(S, q, b, plane)
            else:
                h = R[t, b]
            for j in range(H):
                cj = g[H + j] * c_prev[j] + g[j] * g[2 * H + j]   # c = f c_prev + i g
                c[j] = cj
                h[j] = g[3 * H + j] * tanh(cj)                     # h = o tanh(c)
        if not absent(R):
            gemm(R[t, :n], W_hr_T, state_rows(S, q, n, plane))                # h = W_hr r
        zone_states(S, C, Cn, zh, zc, t, p, q, n, plane)


@njit(**JIT)
def _forward_lean(X, W_ih, h0, c0, bias, scale, shift, W_hh_T, schedule):
    """:func:`_forward` of a call that keeps nothing and has no projection, with its input
    projection and arrays, as one compiled call (``forward_lean``). Returns (S, C)."""
    GX, S = lean_arrays(X, bias.shape[0], h0.shape[1])
    C = np.empty((S.shape[0], S.shape[1], c0.shape[1]), S.dtype)
    _lean_into(X, W_ih, h0, c0, bias, scale, shift, W_hh_T, schedule, GX, S, C)
    return S, C


@njit(inline="always")
def _lean_into(X, W_ih, h0, c0, bias, scale, shift, W_hh_T, schedule, GX, S, C):
    """:func:`_forward_lean`'s work in the caller's arrays (its own, or a row block's kept
    ones: :func:`_direction_rows`)."""
    lean_start_into(X, W_ih, h0, schedule, GX, S)
    C[schedule[0, 1]] = c0
    none2, none3 = np.empty((0, 0), X.dtype), np.empty((0, 0, 0), X.dtype)    # (absent)
    _forward(GX, bias, scale, shift, W_hh_T, S, 0, C, none3, no_matrix(X), schedule, none2, none3, none3, none3)


@njit(inline="always")
def _direction_lean(forward_lean, layer_in, out, k, d, h0, c0, h_n, c_n, operands, schedule):
    """Layer-direction ``k`` of :func:`_loop.stack_lean`: :func:`_forward_lean`, kept, its
    final cell state too."""
    W_ih, bias, scale, shift, W_hh_T = operands
    S, C = forward_lean(layer_in, W_ih[k], h0[k], c0[k], bias[k], scale[k], shift[k],
                        W_hh_T[k], schedule)
    keep_direction(S, out, h_n, k, d)
    c_n[k] = C[0] if d else C[C.shape[0] - 1]


@njit(**JIT)
def _stack_lean(X, h0, c0, h_n, c_n, operands, schedules):
    return stack_lean(_direction_lean, _forward_lean, X, h0, c0, h_n, c_n, operands,
                      schedules)


@njit(**JIT)
def _stack_pair(X, h0, c0, h_n, c_n, operands, schedules, outs, sync, bell, gen, me, spins):
    return pair_stack(_direction_lean, _forward_lean, X, h0, c0, h_n, c_n, operands, schedules,
                      outs, sync, bell, gen, me, spins)


@njit(inline="always")
def _direction_rows(layer_in, out, k, d, h0, c0, h_n, c_n, operands, schedule, arrays):
    """Layer-direction ``k`` of :func:`_pair.rows_stack`: :func:`_forward_lean`'s work on the
    block's arrays (``GX``, ``S``, ``C``: :func:`_pair.rows_arrays`), kept as
    :func:`_direction_lean` keeps it."""
    W_ih, bias, scale, shift, W_hh_T = operands
    S, C = arrays[4], arrays[5]
    _lean_into(layer_in, W_ih[k], h0[k], c0[k], bias[k], scale[k], shift[k], W_hh_T[k],
               schedule, arrays[3], S, C)
    keep_direction(S, out, h_n, k, d)
    c_n[k] = C[0] if d else C[C.shape[0] - 1]


@njit(**JIT)
def _stack_rows(X, h0, c0, h_n, c_n, operands, schedules, first, out, work, sync, bell, gen, me,
                spins):
    return rows_stack(_direction_rows, X, h0, c0, h_n, c_n, operands, schedules, first, out,
                      work, sync, bell, gen, me, spins)


@njit(**JIT)
def _stack_pipe(X, h0, c0, h_n, c_n, operands, schedule, last, outs, sync, bell, gen, me,
                spins):
    return pipe_stack(_direction_lean, _forward_lean, X, h0, c0, h_n, c_n, operands, schedule,
                      last, outs, sync, bell, gen, me, spins)


@njit(inline="always")
def _units(operands, t, lo, hi):
    """Hidden units ``lo:hi`` of step ``t`` of one sequence, for :func:`_pair.pair_steps`:
    :func:`_forward`'s arithmetic for them (bias, their rows of ``W_hh`` times ``h_prev``,
    gates, ``c`` and ``h``). At step 0 their input projection for the whole sequence first,
    ``GX[:, units] = X W_ih[units]^T`` (GEMMs of T rows: every later step of these units
    needs step 0 done, so it is there when they run, whoever runs them). X (T, I), GX
    (T, 4H), S and C (T + 1, H): one sequence, no batch axis. Every loop runs over views that
    start at 0 (numba then knows no index is negative, and the loops compile to SIMD code:
    over ``range(lo, hi)`` they took 7x as long)."""
    X, W_ih, bias, scale, shift, W_hh, panels, ih_panels, compute, GX, S, C = operands
    H = C.shape[1]
    n = hi - lo
    if t == 0:
        project_units(X, W_ih, ih_panels, compute, GX, H, lo, hi)
    g, h_prev = GX[t], S[t]
    for k in range(4):
        a, b = k * H + lo, k * H + hi
        gk, bk = g[a:b], bias[a:b]
        for j in range(n):
            gk[j] += bk[j]
        unit_rows(W_hh, panels, compute, h_prev, gk, a, b, True)
        sk, fk = scale[a:b], shift[a:b]
        for j in range(n):
            gk[j] = sk[j] * tanh(sk[j] * gk[j]) + fk[j]
    i, f, gg, o = g[lo:hi], g[H + lo:H + hi], g[2 * H + lo:2 * H + hi], g[3 * H + lo:3 * H + hi]
    c_prev, c, h = C[t, lo:hi], C[t + 1, lo:hi], S[t + 1, lo:hi]
    for j in range(n):
        cj = f[j] * c_prev[j] + i[j] * gg[j]                  # c = f c_prev + i g
        c[j] = cj
        h[j] = o[j] * tanh(cj)                                # h = o tanh(c)


@njit(**JIT)
def _forward_pair(X, W_ih, bias, scale, shift, W_hh, panels, ih_panels, compute, GX, S, C, sync,
                  bell, gen, me, split, patience, spins):
    return pair_steps(_units, (X, W_ih, bias, scale, shift, W_hh, panels, ih_panels, compute, GX,
                               S, C), X.shape[0], C.shape[1], sync, bell, gen, me, split,
                      patience, spins)


@njit(**JIT)
def _backward(gates, C, dY, dY_at, dh, dc, dG, W_hh, W_hr, dHs, dR, schedule, mask, zh, zc, Cn, sums,
              part, rows):
    """tanh(c) is recomputed from C rather than stored (a fast tanh costs less than the memory).
    dG (T, N, 4H), which may be ``gates`` itself (consumed: each step reads its gates before
    their gradients replace them), receives the pre-activation gradients; dh (N, P) and dc
    (N, H) enter as the gradients wrt the final states and leave as those wrt the initial
    states. With a projection (W_hr (P, H); empty otherwise): dHs (T, N, P) receives dh at
    every step (for dW_hr) and dR (N, H) is scratch for dr = dh W_hr. Zoneout (zh, zc, Cn):
    dh and dc split between the new states and the previous ones; c is read from Cn.
    ``sums`` (4H,) float64 receives the sum of every row of dG (the biases' gradient;
    ``part``, ``rows``: :func:`_loop.bias_sums`)."""
    N, H = dc.shape
    row = scratch_row(gates)
    keep_h = np.empty((N, dh.shape[1]), dh.dtype)    # zoneout: the shares that go straight
    keep_c = np.empty((N, H), dh.dtype)              # to h_prev and c_prev
    for s in range(schedule.shape[0] - 1, -1, -1):
        t, p, q, n = backward_step(schedule, s, dh, dY, dY_at)
        unzone_grads(dh, dc, zh, zc, keep_h, keep_c, t, n)
        d_out = project_back(dh, dHs, W_hr, dR, t, n)     # what reaches o * tanh(c)
        for b in range(n):
            c = C[q, b] if absent(zh) else Cn[t, b]
            g, c_prev, dh_b, dc_b = gates[t, b], C[p, b], d_out[b], dc[b]
            i, f, gg, o = g[:H], g[H:2 * H], g[2 * H:3 * H], g[3 * H:]
            di, df, dg, do = row[:H], row[H:2 * H], row[2 * H:3 * H], row[3 * H:]
            for j in range(H):
                ij, fj, gj, oj = i[j], f[j], gg[j], o[j]
                y, dhj = tanh(c[j]), dh_b[j]
                dcj = dc_b[j] + dhj * ((ONE - y * y) * oj)
                di[j] = ((ONE - ij) * ij) * (dcj * gj)
                df[j] = ((ONE - fj) * fj) * (dcj * c_prev[j])
                dg[j] = (ONE - gj * gj) * (dcj * ij)
                do[j] = ((ONE - oj) * oj) * (dhj * y)
                dc_b[j] = dcj * fj
            copy_row_summed(row, dG[t, b], part)
            row_added(sums, part, rows)
        into_previous(dG[t, :n], W_hh, dh, dc, mask, zh, keep_h, keep_c, n)  # dG W_hh, ...
    settle_sums(sums, part, rows)


saved_width = 0        # the reference keeps tanh(c); backward here recomputes it from c
#: forward takes its states as a plane of a shared array (:func:`_forward`; backward does not
#: read them), so a bidirectional layer's directions may write theirs into the layer's output
shares_states = True


def forward(eq, loop):
    scale, shift = loop.consts
    dt = loop.GX.dtype
    loop.run(_forward, loop.GX, loop.bias, scale, shift, loop.W_hh_T, *planes(loop.S), loop.C,
             or_empty(loop.R, dt, 3), or_no_matrix(loop.W_hr_T, dt), loop.schedule,
             or_empty(loop.h_mask, dt, 2), *zone_arrays(loop.zone, dt))


def forward_lean(eq, X, h0, c0, W_ih, bias, W_hh_T, consts, schedule):
    scale, shift = consts
    return _forward_lean(X, W_ih, h0, c0, bias, scale, shift, W_hh_T, schedule)


def _stack_operands(W_ih, bias, W_hh_T, consts) -> tuple:
    scale, shift = zip(*consts)
    return W_ih, bias, scale, shift, W_hh_T


def forward_stack_lean(eq, X, h0, c0, W_ih, bias, W_hh_T, consts, schedules):
    h_n, c_n = np.empty_like(h0), np.empty_like(c0)
    return _stack_lean(X, h0, c0, h_n, c_n, _stack_operands(W_ih, bias, W_hh_T, consts),
                       schedules), h_n, c_n


def forward_stack_pair(eq, X, h0, c0, W_ih, bias, W_hh_T, consts, schedules, outs, h_n, c_n,
                       sync, bell, gen, me, spins):
    """One thread's share of :func:`elman.timeloop.stack_forward_pair`."""
    return _stack_pair(X, h0, c0, h_n, c_n, _stack_operands(W_ih, bias, W_hh_T, consts),
                       schedules, outs, sync, bell, gen, me, spins)


def forward_stack_rows(eq, X, h0, c0, W_ih, bias, W_hh_T, consts, schedules, first, out, h_n,
                       c_n, work, sync, bell, gen, me, spins):
    """One thread's share of :func:`elman.timeloop.stack_forward_rows`."""
    return _stack_rows(X, h0, c0, h_n, c_n, _stack_operands(W_ih, bias, W_hh_T, consts),
                       schedules, first, out, work, sync, bell, gen, me, spins)


def forward_stack_pipe(eq, X, h0, c0, W_ih, bias, W_hh_T, consts, schedule, last, outs, h_n, c_n,
                       sync, bell, gen, me, spins):
    """One thread's share of :func:`elman.timeloop.stack_forward_pipe`."""
    return _stack_pipe(X, h0, c0, h_n, c_n, _stack_operands(W_ih, bias, W_hh_T, consts),
                       schedule, last, outs, sync, bell, gen, me, spins)


def forward_pair(eq, X, W_ih, bias, W_hh, panels, ih_panels, compute, consts, GX, g, S, C, sync,
                 bell, gen, me, split, patience, spins):
    """One thread's share of :func:`elman.timeloop.sequence_forward_pair`."""
    scale, shift = consts
    return _forward_pair(X, W_ih, bias, scale, shift, W_hh, panels, ih_panels, compute, GX, S, C,
                         sync, bell, gen, me, split, patience, spins)


def backward(eq, loop):
    dt = loop.dh.dtype
    W_hr = loop.w.get("weight_hr")
    dR = None if W_hr is None else np.empty(loop.dc.shape, dt)
    sums = bias_sums(loop.dGX.shape[2], dt)
    loop.run(_backward, loop.cache.gates, loop.cache.C, *output_grad(loop, dt), loop.dh,
             loop.dc, loop.dGX, loop.W_step, or_empty(W_hr, dt, 2), or_empty(loop.dHs, dt, 3),
             or_empty(dR, dt, 2), loop.schedule, or_empty(loop.h_mask, dt, 2),
             *zone_arrays(loop.zone, dt), *sums)
    loop.bias_sums = (sums[0], None)


@njit(**JIT)
def _forward_fused(block, args):
    forward_block(block, _forward, args)


@njit(**JIT)
def _backward_fused(block, args):
    backward_block(block, _backward, args)


#: forward and backward call their compiled loop once, through ``loop.run``, so that a row
#: block's pass may run it in one compiled call with its GEMMs: each loop function's fused
#: call (:mod:`._block`)
fused_calls = {
    _forward: _forward_fused,
    _backward: _backward_fused,
}
