"""elman.weight_grads: a pass's weight gradients as the joined product of chunks of
[X | H_prev], or as the transposed product, the same sums as the plain products, each form
taken only where it applies (no timing asserts: the module docstring says what was measured)."""
import numpy as np
import pytest

import elman
from elman import threads, timeloop, weight_grads
from elman.fast import _mkl

from _torch import _strict

#: the joined and the transposed forms run on MKL (switched on for these tests whatever the
#: CPU's default); without it they are off: a skip locally, an error in CI, which installs it
needs_mkl = pytest.mark.skipif(not (_mkl.available or _strict()),
                               reason="MKL is not installed here: the product forms are off")


def _on_one_thread(call):
    """``call()`` on one of concurrently()'s two threads, as a direction's pass runs."""
    return threads.concurrently(call, lambda: None)[0]


@pytest.mark.parametrize("rows", [1, weight_grads.ROWS - 1, weight_grads.ROWS,
                                  weight_grads.ROWS + 1, 3 * weight_grads.ROWS + 17])
def test_the_joined_chunks_add_the_two_products(rows):
    rng = np.random.default_rng(rows)
    G, I, P = 12, 3, 5
    dG = rng.standard_normal((rows, G))
    X = rng.standard_normal((rows, I))
    # H_prev as the engine passes it: a view of the states
    S = rng.standard_normal((rows + 1, P))
    g_ih, g_hh = rng.standard_normal((G, I)), rng.standard_normal((G, P))
    want_ih, want_hh = g_ih + dG.T @ X, g_hh + dG.T @ S[:-1]
    weight_grads.add_joined(dG, X, S[:-1], g_ih, g_hh)      # (added, not assigned)
    np.testing.assert_allclose(g_ih, want_ih, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(g_hh, want_hh, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("G, C", [(512, 32), (384, 128), (24, 5), (128, 128), (512, 256)])
@pytest.mark.parametrize("pinned", [False, True])
@pytest.mark.parametrize("mkl", [False, pytest.param(True, marks=needs_mkl)])
def test_add_product_adds_dG_transposed_times_B_in_either_form(G, C, pinned, mkl, monkeypatch):
    rng = np.random.default_rng(G + C)
    M = 300
    dG = rng.standard_normal((M, G + 7))[:, :G]          # a block of columns, as GRU's split
    B = rng.standard_normal((M, C))
    g = rng.standard_normal((G, C))
    want = g + dG.T @ B
    forms = []
    original = threads.one_thread_matmul
    monkeypatch.setattr(threads, "one_thread_matmul",
                        lambda a, b, *rest, **kw: (forms.append(b is dG),
                                                   original(a, b, *rest, **kw))[1])

    def add():
        weight_grads.add_product(dG, B, g)
    with _mkl.use(mkl):
        _on_one_thread(add) if pinned else add()
    np.testing.assert_allclose(g, want, rtol=1e-12, atol=1e-12)
    transposed = pinned and mkl and C <= weight_grads.TRANSPOSED_MAX_COLUMNS and G >= 3 * C
    assert (True in forms) == transposed, forms      # (B^T dG: its second operand is dG)


def test_joins_nothing_without_mkl():
    P = weight_grads.MIN_STATE
    with _mkl.use(False):
        assert not _on_one_thread(lambda: weight_grads.joins(4 * P, P, np.float32))


@needs_mkl
def test_joins_only_for_lstm_shapes_on_one_thread():
    P = weight_grads.MIN_STATE
    with _mkl.use(True):                          # (whatever this CPU's default)
        assert not weight_grads.joins(4 * P, P, np.float32)          # not on one thread
        for G, P_, dtype, joins in [(4 * P, P, np.float32, True), (4 * P, P, np.float64, True),
                                    (P, P, np.float32, False),          # the RNN's shapes
                                    (2 * P, P // 2, np.float32, False),  # below MIN_STATE
                                    (4 * P, P, np.float16, False)]:
            assert _on_one_thread(lambda: weight_grads.joins(G, P_, dtype)) == joins, (G, P_)


@pytest.mark.skipif(not elman.fast.available, reason="the directions overlap on the compiled loops")
@needs_mkl
@pytest.mark.parametrize("dtype, tol", [(np.float64, 1e-12), (np.float32, 1e-5)])
def test_an_overlapped_lstm_takes_the_joined_products_and_gets_the_same_gradients(
        dtype, tol, monkeypatch):
    """A bidirectional LSTM with P = MIN_STATE, its directions at once (their products on one
    thread each: joined) against one after the other (the plain products)."""
    monkeypatch.setattr(timeloop, "LEAN_MAX_FLOPS", 0.0)
    monkeypatch.setattr(threads, "granted", lambda: 2)
    taken = []
    add = weight_grads.add_joined
    monkeypatch.setattr(weight_grads, "add_joined", lambda *a: (taken.append(1), add(*a)))
    rng = np.random.default_rng(0)
    T, N, I = 5, 3, 4
    x = rng.standard_normal((T, N, I)).astype(dtype)
    grads = {}
    for mode, threshold in (("at once", 0.0), ("in turn", float("inf"))):
        monkeypatch.setattr(timeloop, "OVERLAP_MIN_FLOPS", threshold)
        layer = elman.LSTM(I, weight_grads.MIN_STATE, bidirectional=True, dtype=dtype, seed=3)
        with _mkl.use(True):                      # (whatever this CPU's default)
            out, _ = layer(x, lengths=[5, 2, 4])
            dout = np.random.default_rng(1).standard_normal(out.shape).astype(dtype)
            taken.clear()
            dx, _ = layer.backward(dout)
        assert len(taken) == (2 if mode == "at once" else 0)
        grads[mode] = [dx] + [p.grad for p in layer.parameters()]
    for a, b in zip(grads["at once"], grads["in turn"]):
        np.testing.assert_allclose(a, b, rtol=tol, atol=tol)
