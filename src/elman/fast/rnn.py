"""Compiled Elman RNN time loops (equations in :mod:`elman.cells.rnn`), the fast twin of
``RNNEquations.forward``/``backward``."""
import numpy as np
from numba import njit

from . import _cache  # noqa: F401  (before the decorators: the cache keyed by the package)
from ._blas import gemm_acc
from ._loop import (JIT, ONE, ZERO, absent, add_bias, add_row, backward_step, bias_sums,
                    keep_direction, output_grad, row_added, settle_sums,
                    keep_lean_direction, lean_arrays, lean_start_into, mask_into, or_empty,
                    stack_lean, state_row, state_rows, step_at, zone_arrays, zone_states,
                    unzone_grads, into_previous)
from ._math import tanh
from ._windows import planes
from ._block import backward_block, forward_block
from ._pair import pair_stack, pair_steps, pipe_stack, project_units, rows_stack, unit_rows

__all__ = ["forward", "forward_lean", "forward_stack_lean", "forward_stack_pair",
           "forward_stack_pipe", "forward_stack_rows", "forward_pair",
           "backward"]


@njit(**JIT)
def _forward(GX, bias, W_hh_T, S, plane, relu, schedule, mask, zh):
    """h_t = tanh((GX[t] + bias) + h_prev W_hh^T) (or relu) into the states ``S``: (T+1, N, H),
    or plane ``plane`` of the (T+1, N, D, H) array a bidirectional layer's two directions
    share, whose steps are then the layer's output (``shares_states``; :func:`_loop.
    state_rows`). GX, the input projection without its bias, receives
    both terms, then h_t itself. ``mask`` (N, H) or empty (``_loop.absent``): recurrent
    dropout, the GEMM reads h_prev * mask. ``zh`` (T, N, H) or empty: zoneout, S receives
    zh h_prev + (1 - zh) h_t (GX keeps h_t, for backward)."""
    H = S.shape[-1]
    hm = np.empty((S.shape[1], H), S.dtype)
    for s in range(schedule.shape[0]):
        t, p, q, n = step_at(schedule, s)
        add_bias(GX[t, :n], bias)
        if absent(mask):
            gemm_acc(state_rows(S, p, n, plane), W_hh_T, GX[t, :n])   # GX[t] += h_prev W_hh^T (beta 1)
        else:
            mask_into(state_rows(S, p, n, plane), mask, hm)
            gemm_acc(hm[:n], W_hh_T, GX[t, :n])
        for b in range(n):
            g, h_b = GX[t, b], state_row(S, q, b, plane)
            if relu:
                for j in range(H):
                    a = g[j]
                    a = a if a > ZERO else ZERO
                    g[j] = a
                    h_b[j] = a
            else:
                for j in range(H):
                    a = tanh(g[j])
                    g[j] = a
                    h_b[j] = a
        zone_states(S, None, None, zh, None, t, p, q, n, plane)


@njit(**JIT)
def _forward_lean(X, W_ih, h0, bias, W_hh_T, relu, schedule):
    """:func:`_forward` of a call that keeps nothing, with its projection and arrays, as one
    compiled call (``forward_lean``). Returns S."""
    GX, S = lean_arrays(X, bias.shape[0], h0.shape[1])
    _lean_into(X, W_ih, h0, bias, W_hh_T, relu, schedule, GX, S)
    return S


@njit(inline="always")
def _lean_into(X, W_ih, h0, bias, W_hh_T, relu, schedule, GX, S):
    """:func:`_forward_lean`'s work in the caller's arrays (its own, or a row block's kept
    ones: :func:`_direction_rows`)."""
    lean_start_into(X, W_ih, h0, schedule, GX, S)
    _forward(GX, bias, W_hh_T, S, 0, relu,
             schedule, np.empty((0, 0), X.dtype),
             np.empty((0, 0, 0), X.dtype))                 # (no mask, no zoneout: absent)


@njit(inline="always")
def _units(operands, t, lo, hi):
    """Hidden units ``lo:hi`` of step ``t`` of one sequence, for :func:`_pair.pair_steps`:
    :func:`_forward`'s arithmetic for them, after their input projection for the whole
    sequence at step 0 (as in :func:`elman.fast.lstm._units`, which says why). X (T, I),
    GX (T, H), S (T + 1, H)."""
    X, W_ih, bias, W_hh, panels, ih_panels, compute, relu, GX, S = operands
    if t == 0:
        project_units(X, W_ih, ih_panels, compute, GX, S.shape[1], lo, hi)
    n = hi - lo
    g, bk, h = GX[t, lo:hi], bias[lo:hi], S[t + 1, lo:hi]
    for j in range(n):
        g[j] += bk[j]
    unit_rows(W_hh, panels, compute, S[t], g, lo, hi, True)
    if relu:
        for j in range(n):
            a = g[j]
            h[j] = a if a > ZERO else ZERO
    else:
        for j in range(n):
            h[j] = tanh(g[j])


@njit(**JIT)
def _forward_pair(X, W_ih, bias, W_hh, panels, ih_panels, compute, relu, GX, S, sync, bell, gen,
                  me, split, patience, spins):
    return pair_steps(_units, (X, W_ih, bias, W_hh, panels, ih_panels, compute, relu, GX, S),
                      X.shape[0], S.shape[1], sync, bell, gen, me, split, patience, spins)


@njit(**JIT)
def _stack_lean(X, h0, h_n, operands, schedules):
    return stack_lean(keep_lean_direction, _forward_lean, X, h0, None, h_n, None, operands,
                      schedules)


@njit(**JIT)
def _stack_pair(X, h0, h_n, operands, schedules, outs, sync, bell, gen, me, spins):
    return pair_stack(keep_lean_direction, _forward_lean, X, h0, None, h_n, None, operands,
                      schedules, outs, sync, bell, gen, me, spins)


@njit(inline="always")
def _direction_rows(layer_in, out, k, d, h0, c0, h_n, c_n, operands, schedule, arrays):
    """Layer-direction ``k`` of :func:`_pair.rows_stack`: :func:`_forward_lean`'s work on the
    block's arrays (``GX``, ``S``: :func:`_pair.rows_arrays`)."""
    W_ih, bias, W_hh_T, relu = operands
    S = arrays[4]
    _lean_into(layer_in, W_ih[k], h0[k], bias[k], W_hh_T[k], relu[k], schedule, arrays[3], S)
    keep_direction(S, out, h_n, k, d)


@njit(**JIT)
def _stack_rows(X, h0, h_n, operands, schedules, first, out, work, sync, bell, gen, me, spins):
    return rows_stack(_direction_rows, X, h0, None, h_n, None, operands, schedules, first, out,
                      work, sync, bell, gen, me, spins)


@njit(**JIT)
def _stack_pipe(X, h0, h_n, operands, schedule, last, outs, sync, bell, gen, me, spins):
    return pipe_stack(keep_lean_direction, _forward_lean, X, h0, None, h_n, None, operands,
                      schedule, last, outs, sync, bell, gen, me, spins)


@njit(**JIT)
def _backward(gates, S, plane, dY, dY_at, dh, dG, W_hh, relu, schedule, mask, zh, sums, part,
              rows):
    """dG (T, N, H) receives the pre-activation gradients; dh (N, H) enters as the gradient wrt
    the final state and leaves as that wrt h0. h_t is read from the states ``S`` (as
    :func:`_forward` wrote them), or with zoneout (``zh``) from the gates (S holds the mixed
    states). ``sums`` (H,) float64 receives the sum of every
    row of dG (the biases' gradient; ``part``, ``rows``: :func:`_loop.bias_sums`)."""
    N, H = dh.shape
    keep = np.empty((N, H), dh.dtype)          # zoneout: dh's share that goes to h_prev
    for s in range(schedule.shape[0] - 1, -1, -1):
        t, p, q, n = backward_step(schedule, s, dh, dY, dY_at)
        unzone_grads(dh, None, zh, None, keep, None, t, n)
        for b in range(n):
            h = state_row(S, q, b, plane) if absent(zh) else gates[t, b]
            d, dh_b = dG[t, b], dh[b]
            if relu:
                for j in range(H):
                    d[j] = dh_b[j] if h[j] > ZERO else ZERO
            else:
                for j in range(H):
                    d[j] = (ONE - h[j] * h[j]) * dh_b[j]
            add_row(d, part)
            row_added(sums, part, rows)
        into_previous(dG[t, :n], W_hh, dh, None, mask, zh, keep, None, n)
    settle_sums(sums, part, rows)


saved_width = 0        # backward needs only h
#: the loops take their states as a plane of a shared array (:func:`_forward`), so a
#: bidirectional layer's two directions may write theirs into one array, the layer's output
shares_states = True


def forward(eq, loop):
    dt = loop.GX.dtype
    zh, _, _ = zone_arrays(loop.zone, dt)
    loop.run(_forward, loop.GX, loop.bias, loop.W_hh_T, *planes(loop.S),
             eq.nonlinearity == "relu", loop.schedule, or_empty(loop.h_mask, dt, 2), zh)


def forward_lean(eq, X, h0, c0, W_ih, bias, W_hh_T, consts, schedule):
    return _forward_lean(X, W_ih, h0, bias, W_hh_T, eq.nonlinearity == "relu", schedule), None


def _stack_operands(eq, W_ih, bias, W_hh_T) -> tuple:
    relu = (eq.nonlinearity == "relu",) * len(W_ih)           # (one per layer-direction)
    return W_ih, bias, W_hh_T, relu


def forward_stack_lean(eq, X, h0, c0, W_ih, bias, W_hh_T, consts, schedules):
    h_n = np.empty_like(h0)
    out = _stack_lean(X, h0, h_n, _stack_operands(eq, W_ih, bias, W_hh_T), schedules)
    return out, h_n, None


def forward_stack_pair(eq, X, h0, c0, W_ih, bias, W_hh_T, consts, schedules, outs, h_n, c_n,
                       sync, bell, gen, me, spins):
    """One thread's share of :func:`elman.timeloop.stack_forward_pair`."""
    return _stack_pair(X, h0, h_n, _stack_operands(eq, W_ih, bias, W_hh_T), schedules, outs,
                       sync, bell, gen, me, spins)


def forward_stack_rows(eq, X, h0, c0, W_ih, bias, W_hh_T, consts, schedules, first, out, h_n,
                       c_n, work, sync, bell, gen, me, spins):
    """One thread's share of :func:`elman.timeloop.stack_forward_rows`."""
    return _stack_rows(X, h0, h_n, _stack_operands(eq, W_ih, bias, W_hh_T), schedules, first,
                       out, work, sync, bell, gen, me, spins)


def forward_stack_pipe(eq, X, h0, c0, W_ih, bias, W_hh_T, consts, schedule, last, outs, h_n, c_n,
                       sync, bell, gen, me, spins):
    """One thread's share of :func:`elman.timeloop.stack_forward_pipe`."""
    return _stack_pipe(X, h0, h_n, _stack_operands(eq, W_ih, bias, W_hh_T), schedule, last, outs,
                       sync, bell, gen, me, spins)


def forward_pair(eq, X, W_ih, bias, W_hh, panels, ih_panels, compute, consts, GX, g, S, C, sync,
                 bell, gen, me, split, patience, spins):
    """One thread's share of :func:`elman.timeloop.sequence_forward_pair`."""
    return _forward_pair(X, W_ih, bias, W_hh, panels, ih_panels, compute,
                         eq.nonlinearity == "relu", GX, S, sync, bell, gen, me, split, patience,
                         spins)


def backward(eq, loop):
    dt = loop.dh.dtype
    zh, _, _ = zone_arrays(loop.zone, dt)
    sums = bias_sums(loop.dGX.shape[2], dt)
    loop.run(_backward, loop.cache.gates, *planes(loop.cache.S), *output_grad(loop, dt),
             loop.dh, loop.dGX, loop.W_step, eq.nonlinearity == "relu", loop.schedule,
             or_empty(loop.h_mask, dt, 2), zh, *sums)
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
