"""elman.joined_grads: a pass's two weight gradients as products of chunks of [X | H_prev],
the same sums as the two products, taken only where they apply (no timing asserts: the module
docstring says what was measured)."""
import numpy as np
import pytest

import elman
from elman import joined_grads, threads, timeloop
from elman.fast import _mkl


@pytest.mark.parametrize("rows", [1, joined_grads.ROWS - 1, joined_grads.ROWS,
                                  joined_grads.ROWS + 1, 3 * joined_grads.ROWS + 17])
def test_the_chunks_add_the_two_products(rows):
    rng = np.random.default_rng(rows)
    G, I, P = 12, 3, 5
    dG = rng.standard_normal((rows, G))
    X = rng.standard_normal((rows, I))
    # H_prev as the engine passes it: a view of the states, one row block of them
    S = rng.standard_normal((rows + 1, P))
    g_ih, g_hh = rng.standard_normal((G, I)), rng.standard_normal((G, P))
    want_ih, want_hh = g_ih + dG.T @ X, g_hh + dG.T @ S[:-1]
    joined_grads.add_weight_grads(dG, X, S[:-1], g_ih, g_hh)      # (added, not assigned)
    np.testing.assert_allclose(g_ih, want_ih, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(g_hh, want_hh, rtol=1e-12, atol=1e-12)


def _joins_here(G, P, dtype):
    """joins() asked on one of concurrently()'s two threads, as a direction's pass asks."""
    return threads.concurrently(lambda: joined_grads.joins(G, P, dtype), lambda: None)[0]


def test_joins_only_for_lstm_shapes_on_one_thread_with_mkl():
    P = joined_grads.MIN_STATE
    assert not joined_grads.joins(4 * P, P, np.float32)          # not on one thread
    if not _mkl.enabled():
        assert not _joins_here(4 * P, P, np.float32)
        pytest.skip("MKL is not installed here: the joined products are off")
    assert _joins_here(4 * P, P, np.float32) and _joins_here(4 * P, P, np.float64)
    assert not _joins_here(P, P, np.float32)                     # the RNN's shapes
    assert not _joins_here(4 * (P // 2), P // 2, np.float32)     # below MIN_STATE
    assert not _joins_here(4 * P, P, np.float16)


@pytest.mark.skipif(not elman.fast.available, reason="the directions overlap on the compiled loops")
@pytest.mark.parametrize("dtype, tol", [(np.float64, 1e-12), (np.float32, 1e-5)])
def test_an_overlapped_lstm_takes_them_and_gets_the_same_gradients(dtype, tol, monkeypatch):
    """A bidirectional LSTM with P = MIN_STATE, its directions at once (their products on one
    thread each: joined) against one after the other (the two products)."""
    if not _mkl.enabled():
        pytest.skip("MKL is not installed here: the joined products are off")
    monkeypatch.setattr(timeloop, "LEAN_MAX_FLOPS", 0.0)
    monkeypatch.setattr(threads, "granted", lambda: 2)
    taken = []
    add = joined_grads.add_weight_grads
    monkeypatch.setattr(joined_grads, "add_weight_grads",
                        lambda *a: (taken.append(1), add(*a)))
    rng = np.random.default_rng(0)
    T, N, I = 5, 3, 4
    x = rng.standard_normal((T, N, I)).astype(dtype)
    grads = {}
    for mode, threshold in (("at once", 0.0), ("in turn", float("inf"))):
        monkeypatch.setattr(timeloop, "OVERLAP_MIN_FLOPS", threshold)
        layer = elman.LSTM(I, joined_grads.MIN_STATE, bidirectional=True, dtype=dtype, seed=3)
        out, _ = layer(x, lengths=[5, 2, 4])
        dout = np.random.default_rng(1).standard_normal(out.shape).astype(dtype)
        taken.clear()
        dx, _ = layer.backward(dout)
        assert len(taken) == (2 if mode == "at once" else 0)
        grads[mode] = [dx] + [p.grad for p in layer.parameters()]
    for a, b in zip(grads["at once"], grads["in turn"]):
        np.testing.assert_allclose(a, b, rtol=tol, atol=tol)
