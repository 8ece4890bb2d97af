"""A bidirectional stack's two directions at once on the pair's two threads
(timeloop.stack_forward_pair, elman.fast._pair.pair_stack): the same results as the directions
in turn, whoever runs the reverse direction, through the layer and its kept plan, and the rule
that decides when it runs."""
import numpy as np
import pytest

import elman
from elman import fast, threads, timeloop
from elman.fast import _pair
from _callers import (agree_from_threads, counted, flat, spread_layer,
                      taken_with_two_threads)

pytestmark = pytest.mark.skipif(not fast.pair_supported(),
                                reason="two threads: x86-64 CPUs with the fast path")

LAYERS = {
    "rnn-relu-2bi": lambda dt: elman.RNN(5, 16, num_layers=2, nonlinearity="relu",
                                         bidirectional=True, dtype=dt),
    "gru-1bi": lambda dt: elman.GRU(5, 16, bidirectional=True, dtype=dt),
    "gru-classic-no-bias-2bi": lambda dt: elman.GRU(5, 16, num_layers=2, bias=False,
                                                    reset_after=False, bidirectional=True,
                                                    dtype=dt),
    "lstm-2bi-batch-first": lambda dt: elman.LSTM(5, 16, num_layers=2, bidirectional=True,
                                                  batch_first=True, dtype=dt),
    "lstm-3bi": lambda dt: elman.LSTM(5, 16, num_layers=3, bidirectional=True, dtype=dt),
}


def _layer(name, dtype):
    return spread_layer(LAYERS[name], dtype)


@pytest.fixture
def paired(monkeypatch):
    """Every bidirectional lean call runs its directions at once, whatever its size and the
    CPUs free; the calls that do are counted."""
    monkeypatch.setattr(timeloop, "PAIR_DIRECTIONS_MIN_FLOPS", 0.0)
    monkeypatch.setattr(threads, "two_threads_free", lambda: True)
    return counted(monkeypatch, "stack_forward_pair", timeloop)      # (the plan's too)




def _inputs(layer, dtype, rng, every: bool):
    """(x, hx) cases: batched with and without states; ``every``: also three sequences and
    unbatched input (other array types: kernels compiled anew, seconds each)."""
    D = 2 * layer.num_layers
    cases = []
    for N in (1, 3) if every else (1,):
        shape = (N, 7, 5) if layer.batch_first else (7, N, 5)
        h = rng.standard_normal((D, N, 16)).astype(dtype)
        hx = (h, rng.standard_normal((D, N, 16)).astype(dtype)) if layer.eq.has_cell else h
        cases += [(rng.standard_normal(shape).astype(dtype), None),
                  (rng.standard_normal(shape).astype(dtype), hx)]
    if every:
        cases.append((rng.standard_normal((6, 5)).astype(dtype), None))
    return cases


@pytest.mark.parametrize("name, dtype", [(name, np.float32) for name in sorted(LAYERS)]
                         + [("lstm-2bi-batch-first", np.float64)])
def test_directions_at_once_equal_directions_in_turn(paired, name, dtype, monkeypatch):
    """Bit for bit: the same kernels run each direction, only on another thread. (float64
    for one layer only: each dtype and cell compiles the kernels anew, seconds each.)"""
    layer = _layer(name, dtype)
    cases = _inputs(layer, dtype, np.random.default_rng(1),
                    every=name == "lstm-2bi-batch-first" and dtype == np.float32)
    with elman.no_grad():
        got = [flat(layer(x, hx)) for x, hx in cases for _ in range(2)]    # (planned too)
        assert len(paired) == 2 * len(cases)
        monkeypatch.setattr(timeloop, "PAIR_DIRECTIONS_MIN_FLOPS", float("inf"))
        layer._plan = None
        want = [flat(layer(x, hx)) for x, hx in cases for _ in range(2)]
        assert len(paired) == 2 * len(cases)
    for g, w in zip(got, want):
        for a, b in zip(g, w):
            assert a.dtype == dtype
            np.testing.assert_array_equal(a, b)


def test_many_calls_back_to_back_stay_exact(paired):
    """The partner stays awake between calls (a fresh sync each call): a stream of calls,
    some of them with other lengths, each equal to the reference path."""
    layer = _layer("lstm-2bi-batch-first", np.float32)
    rng = np.random.default_rng(2)
    xs = [rng.standard_normal((1, T, 5)).astype(np.float32) for T in [4, 9, 4, 1, 12] * 8]
    with elman.no_grad():
        got = [flat(layer(x)) for x in xs]
        with fast.use(False):
            want = [flat(layer(x)) for x in xs]
    assert len(paired) == len(xs)
    for g, w in zip(got, want):
        for a, b in zip(g, w):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def _stack_call(layer, x):
    """The arguments of a kernel module's forward_stack_pair for ``layer`` on ``x``."""
    kernels = fast.kernels_for(layer.eq, layer.dtype)
    T, N, _ = x.shape
    L, H = layer.num_layers, layer.hidden_size
    h0 = np.zeros((2 * L, N, H), layer.dtype)
    c0 = h0.copy() if layer.eq.has_cell else None
    weights = [layer._weights(k) for k in range(2 * L)]
    operands = timeloop.stack_operands(layer.eq, kernels, weights, T, N)
    outs = np.empty((L, T, N, 2 * H), layer.dtype)
    h_n = np.empty_like(h0)
    c_n = None if c0 is None else np.empty_like(c0)
    sync = np.zeros(L * _pair.ROW, np.int64)
    bell = np.zeros(_pair.ROW, np.int64)
    args = (layer.eq, x, h0, c0, *operands, timeloop._schedules(T, N, 2), outs, h_n, c_n, sync,
            bell)
    expected = timeloop.stack_forward_lean(layer.eq, kernels, x, h0, c0, weights, 2,
                                           kernels.forward_stack_lean)
    return kernels, args, (outs, h_n, c_n, sync, bell), expected


def test_a_caller_without_partner_runs_every_direction():
    layer = _layer("lstm-3bi", np.float32)
    x = np.random.default_rng(3).standard_normal((6, 2, 5)).astype(np.float32)
    kernels, args, (outs, h_n, c_n, sync, bell), expected = _stack_call(layer, x)
    assert kernels.forward_stack_pair(*args, 5, 0, 1) == 5
    assert bell[0] == 5                                    # (it rang for the partner)
    for got, want in zip((outs[-1], h_n, c_n), expected):
        np.testing.assert_array_equal(got, want)
    assert list(sync[_pair.CLAIM::_pair.ROW]) == [1, 1, 1]  # every reverse direction claimed
    assert list(sync[_pair.DONE::_pair.ROW]) == [2, 2, 2]   # and both directions done


def test_a_late_partner_finds_the_directions_done_and_computes_nothing():
    layer = _layer("gru-classic-no-bias-2bi", np.float32)
    x = np.random.default_rng(4).standard_normal((5, 1, 5)).astype(np.float32)
    kernels, args, (outs, h_n, c_n, sync, bell), expected = _stack_call(layer, x)
    kernels.forward_stack_pair(*args, 1, 0, 1)
    before = outs.copy(), h_n.copy()
    outs[...] = np.nan                       # a partner that wrote anything would show here
    h_n[...] = np.nan
    assert kernels.forward_stack_pair(*args, 1, 1, 1) == 1  # (no next sequence: the bell)
    assert np.isnan(outs).all() and np.isnan(h_n).all()
    np.testing.assert_array_equal(before[0][-1], expected[0])


def test_the_rule(monkeypatch):
    """From PAIR_DIRECTIONS_MIN_FLOPS to PAIR_DIRECTIONS_MAX_FLOPS of recurrent work a
    direction, with a kernel that has forward_stack_pair; through the layer only where two
    threads are free."""
    lstm = fast.kernels_for(elman.LSTM(3, 4).eq, np.float32)
    K, P = 4 * 128, 128
    flops = lambda T, N: 2.0 * T * N * K * P                               # noqa: E731
    assert flops(10, 1) >= timeloop.PAIR_DIRECTIONS_MIN_FLOPS
    assert timeloop.pairs_directions(lstm, 10, 1, K, P)
    assert timeloop.pairs_directions(lstm, 50, 1, K, P)
    assert not timeloop.pairs_directions(lstm, 3, 1, K, P)                  # too small
    assert timeloop.pairs_directions(lstm, 200, 1, K, P)                    # 26 MFLOP
    assert flops(1000, 2) >= timeloop.PAIR_DIRECTIONS_MAX_FLOPS
    assert not timeloop.pairs_directions(lstm, 1000, 2, K, P)               # the general path's
    assert not timeloop.pairs_directions(None, 50, 1, K, P)
    layer = elman.LSTM(32, 128, bidirectional=True, seed=0).eval()
    x = np.ones((50, 1, 32), np.float32)
    alone, both = taken_with_two_threads(monkeypatch, "stack_forward_pair", layer, x)
    for a, b in zip(alone, both):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


def test_two_callers_share_one_partner(paired):
    """Bidirectional layers called from two threads at once: each call claims its own
    directions, whichever call the partner joins; nobody hangs."""
    layers = [_layer("lstm-2bi-batch-first", np.float32), _layer("gru-1bi", np.float32)]
    rng = np.random.default_rng(6)
    inputs = [rng.standard_normal((1, 9, 5)).astype(np.float32),
              rng.standard_normal((9, 2, 5)).astype(np.float32)]
    agree_from_threads(layers, inputs)
    assert len(paired) == 120
