"""MKL's packed per-step GEMM (elman.fast._mkl, the optional ``elman[mkl]``): the packed product
equals NumPy's, layers give the same results packed as not (every cell and option, lengths,
float32/float64), packing follows the rule (one GEMM thread, long and large enough), and a pass
always packs the weights as they are now. (No timing asserts: benchmarks measure.)"""
import os

import numpy as np
import pytest

import elman
from elman import recurrent, threads, timeloop
from elman.fast import _mkl, _packed

from _packing import (FORMS, Packings, assert_close, check_frozen_passes_pack_once,
                      layer_cases, operand, printed_in_fresh_process, train_step)
from _torch import _strict

pytestmark = pytest.mark.skipif(not (elman.fast.available and (_mkl.available or _strict())),
                                reason="needs numba and the mkl wheel (elman[mkl])")


def test_mkl_is_installed_where_the_tests_must_run():
    # CI installs the test extra, which brings the mkl wheel: its path is tested there
    assert _mkl.available and _mkl.library().split(os.sep)[-1].startswith("libmkl_rt")


@pytest.mark.parametrize("dtype, tol", [(np.float32, 1e-5), (np.float64, 1e-12)])
@pytest.mark.parametrize("accumulate", [False, True])
@pytest.mark.parametrize("transpose", [False, True])
def test_packed_product_equals_numpys(dtype, tol, accumulate, transpose):
    """gemm/gemm_acc with MKL's packed B: for the rows it was packed for and fewer (variable
    lengths shrink the batch step by step), with A and C column blocks of wider arrays."""
    from elman.fast import _blas
    rng = np.random.default_rng(0)
    wide_w = rng.standard_normal((12, 9)).astype(dtype)
    W = wide_w[1:11]                                  # (10, 9), a row block: ld = 9
    B = W.T if transpose else W                       # (9, 10) or (10, 9)
    k, n = B.shape
    packed = _mkl.pack(W, transpose, rows=6)
    assert packed.ndim == 1 and packed.dtype == dtype
    for m in (6, 4, 1):
        wide_a = rng.standard_normal((m, k + 5)).astype(dtype)
        wide_c = rng.standard_normal((m, n + 3)).astype(dtype)
        A, C = wide_a[:, 2:2 + k], wide_c[:, 1:1 + n]
        expected = wide_c.copy()
        expected[:, 1:1 + n] = (C if accumulate else 0) + A.astype(np.float64) @ B
        _blas._check(A, elman.fast.packed_operand(packed, _mkl.compute_address(dtype)), C,
                     accumulate)
        np.testing.assert_allclose(wide_c, expected, rtol=tol, atol=tol)


@pytest.mark.parametrize("dtype, tol", [(np.float32, 1e-5), (np.float64, 1e-12)])
@pytest.mark.parametrize("a_form", FORMS)
@pytest.mark.parametrize("b_form", ("plain", "transposed", "transposed columns"))
def test_mkls_one_thread_product_equals_numpys(dtype, tol, a_form, b_form, mkl_on):
    """_mkl.product (and threads.one_thread_matmul, which uses it) against a float64 product,
    every layout it reads for ``a`` and ``b``; into a given array, a block of a wider array's
    columns, or a new one."""
    rng = np.random.default_rng(1)
    m, k, n = 700, 48, 40                  # m * n * k = 1,344,000 >= MIN_PRODUCT_MNK
    assert m * n * k >= _mkl.MIN_PRODUCT_MNK
    a = operand(rng, (m, k), dtype, a_form)
    b = operand(rng, (k, n), dtype, b_form)
    expected = a.astype(np.float64) @ b.astype(np.float64)
    for out in (np.full((m, n), np.nan, dtype), np.full((m, n + 9), np.nan, dtype)[:, 4:4 + n]):
        assert _mkl.product(a, b, out)
        np.testing.assert_allclose(out, expected, rtol=tol, atol=tol * 10)
    for got in (threads.one_thread_matmul(a, b), threads.one_thread_matmul(a, b, out)):
        assert got.dtype == dtype and got.shape == (m, n)
        np.testing.assert_allclose(got, expected, rtol=tol, atol=tol * 10)
    # accumulate (beta = 1): added into what ``out`` holds, a weight gradient's way; with MKL
    # off too (through a temporary)
    start = rng.standard_normal((m, n))
    for use_mkl in (True, False):
        for out in (np.empty((m, n), dtype), np.empty((m, n + 9), dtype)[:, 4:4 + n]):
            out[...] = start
            with _mkl.use(use_mkl):
                assert _mkl.product(a, b, out, accumulate=True) == use_mkl
            np.testing.assert_allclose(out, start + expected if use_mkl else start,
                                       rtol=tol, atol=tol * 10)
            out[...] = start
            with _mkl.use(use_mkl):
                assert threads.one_thread_matmul(a, b, out, accumulate=True) is out
            np.testing.assert_allclose(out, start + expected, rtol=tol, atol=tol * 10)


def test_mkls_product_declines_what_it_does_not_take(mkl_on):
    """False and nothing written: a small product, mixed dtypes, an operand strided both ways
    (every second column), an ``out`` that is a transpose or strided, MKL switched off;
    one_thread_matmul then gives NumPy's product."""
    rng = np.random.default_rng(2)
    a = rng.standard_normal((700, 48)).astype(np.float32)
    b = rng.standard_normal((48, 40)).astype(np.float32)
    out = np.zeros((700, 40), np.float32)
    declined = [(a[:10], b, out[:10]), (a, b.astype(np.float64), out),
                (a, np.zeros((48, 80), np.float32)[:, ::2], out),
                (np.zeros((700, 96), np.float32)[:, ::2], b, out),
                (a, b, np.zeros((700, 80), np.float32)[:, ::2]),
                (a, b, np.zeros((40, 700), np.float32).T)]
    for args in declined:
        assert not _mkl.product(*args)
        assert not args[2].any()
    with _mkl.use(False):
        assert not _mkl.product(a, b, out)
        np.testing.assert_allclose(threads.one_thread_matmul(a, b), a @ b, rtol=1e-6)
    assert not out.any()
    strided = np.zeros((700, 96), np.float32)[:, ::2]
    strided[...] = a
    np.testing.assert_allclose(threads.one_thread_matmul(strided, b), a @ b, rtol=1e-5,
                               atol=1e-5)


def test_pack_refuses_what_it_cannot_read():
    with pytest.raises(ValueError, match="contiguous rows"):
        _mkl.pack(np.zeros((4, 6), np.float32)[:, ::2], True, rows=3)
    with pytest.raises(ValueError, match="float32/float64"):
        _mkl.pack(np.zeros((4, 6), np.int32), True, rows=3)


@pytest.fixture
def mkl_on():
    """MKL switched on for the test, whatever this CPU's default (:data:`_mkl.DEFAULT_ON`)."""
    with _mkl.use(True):
        yield


def test_the_rule(mkl_on):
    big = _mkl.MIN_ELEMENTS
    assert _mkl.worth(_mkl.MIN_STEPS, 2, big)
    assert not _mkl.worth(_mkl.MIN_STEPS - 1, 2, big)       # a streaming call: not paid back
    assert not _mkl.worth(100, 1, big)                        # one row: GEMV
    assert not _mkl.worth(100, 64, big - 1)                   # a small matrix
    with _mkl.use(False):
        assert not _mkl.enabled() and not _mkl.worth(100, 64, big)
        assert _mkl.large_enough(100, 64, big)                # (the sizes alone)
    assert _mkl.enabled()


@pytest.mark.parametrize("value, expected", [("0", "False"), ("off", "False"), ("1", "True"),
                                             ("", str(_mkl.DEFAULT_ON)),
                                             (None, str(_mkl.DEFAULT_ON))])
def test_environment_switch(value, expected):
    """ELMAN_MKL=0 off, =1 on (on any CPU), unset or empty: this CPU's default."""
    code = "from elman.fast import _mkl; print(_mkl.enabled())"
    assert printed_in_fresh_process(code, ELMAN_MKL=value) == expected


def test_on_by_default_on_intel_cpus_only():
    from elman.fast import _cpu
    vendor = _cpu.vendor()
    assert isinstance(vendor, str)
    with open("/proc/cpuinfo") as f:               # (the mkl wheel: Linux x86-64 only)
        assert f"vendor_id\t: {vendor}" in f.read() or vendor == ""
    assert _mkl.DEFAULT_ON == _cpu.INTEL == (vendor in ("GenuineIntel", ""))


@pytest.fixture
def packs(monkeypatch, mkl_on):
    """MKL on; pack whatever the matrix's size; count the packings (their ``transpose``; the
    buffers given and made in ``packs.buffers``: (into, packed) a call)."""
    monkeypatch.setattr(_mkl, "MIN_ELEMENTS", 0)
    calls = Packings()
    original = _mkl.pack

    def counting(W, transpose, rows, into=None):
        calls.append(transpose)
        packed = original(W, transpose, rows, into)
        calls.buffers.append((into, packed))
        return packed
    monkeypatch.setattr(_mkl, "pack", counting)
    return calls


CASES = layer_cases(6, 6, 3)


@pytest.mark.parametrize("dtype, tol", [(np.float64, 1e-12), (np.float32, 1e-5)])
@pytest.mark.parametrize("with_lengths", [False, True])
@pytest.mark.parametrize("case", sorted(CASES))
def test_packed_layers_give_the_same_results(case, with_lengths, dtype, tol, packs):
    x = np.random.default_rng(0).standard_normal((7, 4, 5)).astype(dtype)
    lengths = np.array([7, 3, 5, 1]) if with_lengths else None
    with _mkl.use(False):
        plain = train_step(CASES[case](dtype), x, lengths)
    assert packs == []
    packed = train_step(CASES[case](dtype), x, lengths)
    layer = CASES[case](dtype)
    # every layer-direction packed W_hh^T for its forward and W_hh for its backward
    passes = layer.num_layers * (2 if layer.bidirectional else 1)
    assert sorted(packs) == [False] * passes + [True] * passes
    for a, b in zip(plain, packed):
        assert_close(b, a, tol)


def test_a_pass_packs_the_weights_as_they_are_now(packs):
    """Every pass packs anew, into the buffer of the pass before (its layer-direction's
    workspace keeps it): weights changed in place are seen at once."""
    x = np.random.default_rng(0).standard_normal((6, 3, 5))
    layer = elman.LSTM(5, 6, dtype=np.float64, seed=1)
    layer(x)
    layer.weight_hh_l0.data *= 0.5                 # in place, as an optimizer step does
    out, _ = layer(x)
    with _mkl.use(False):
        expected, _ = layer(x)
    np.testing.assert_allclose(out, expected, rtol=1e-12, atol=1e-12)
    assert len(packs) == 2
    (first_into, first), (second_into, second) = packs.buffers
    assert first_into is None and second_into is first and second is first


def test_training_steps_reuse_their_packing_buffers(packs):
    """Forward and backward each pack into a buffer of their own, the one of the step before;
    the steps' results are those of a run without MKL, step after step (an optimizer step
    between them changes every weight)."""
    x = np.random.default_rng(0).standard_normal((6, 3, 5))

    def three_steps():
        layer = elman.GRU(5, 6, dtype=np.float64, seed=2)
        opt = elman.Adam(layer.parameters(), lr=0.1)
        results = []
        for _ in range(3):
            opt.zero_grad()
            out, h_n = layer(x)
            layer.backward(np.cos(out), None)
            opt.step()
            results.append((out, h_n, *(p.grad.copy() for p in layer.parameters())))
        return results
    with _mkl.use(False):
        expected = three_steps()
    got = three_steps()
    for a, b in zip(expected, got):
        for u, v in zip(a, b):
            np.testing.assert_allclose(v, u, rtol=1e-12, atol=1e-12)
    assert packs == [True, False] * 3              # a forward's W_hh^T, a backward's W_hh
    forwards, backwards = packs.buffers[0::2], packs.buffers[1::2]
    for buffers in (forwards, backwards):
        assert buffers[0][0] is None
        assert all(into is buffers[0][1] and packed is into for into, packed in buffers[1:])
    assert not np.shares_memory(forwards[0][1], backwards[0][1])


def test_a_pass_has_its_packing_buffer_to_itself(monkeypatch, mkl_on):
    """The buffer is lent to a pass, not shared: a call of the same layer that starts while
    another packs (as from another thread) packs into a buffer of its own, and both are right."""
    monkeypatch.setattr(_mkl, "MIN_ELEMENTS", 0)
    monkeypatch.setattr(timeloop, "LEAN_MAX_FLOPS", 0.0)   # (the general path, which packs)
    rng = np.random.default_rng(0)
    x1, x2 = rng.standard_normal((6, 3, 5)), rng.standard_normal((6, 3, 5))
    layer = elman.LSTM(5, 6, dtype=np.float64, seed=1)
    with _mkl.use(False), elman.no_grad():
        expected1, expected2 = layer(x1)[0], layer(x2)[0]
    with elman.no_grad():
        layer(x1)                                   # (a buffer kept from this call)
    original, calls, inner = _mkl.pack, [], []

    def pack(W, transpose, rows, into=None):
        calls.append(into)
        packed = original(W, transpose, rows, into)
        if len(calls) == 2:                         # the second call packs; a third starts now
            inner.append(layer(x2)[0])
        return packed
    monkeypatch.setattr(_mkl, "pack", pack)
    with elman.no_grad():
        layer(x1)
        out1 = layer(x1)[0]
    assert calls[0] is not None and calls[1] is not None   # (the kept buffer, then again)
    assert calls[2] is None                          # the buffer was out: a new one
    np.testing.assert_allclose(out1, expected1, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(inner[0], expected2, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("dtype, tol", [(np.float64, 1e-12), (np.float32, 1e-5)])
def test_a_frozen_layer_packs_once(packs, dtype, tol):
    """A frozen matrix is packed at the first pass and its packing taken as it is after."""
    check_frozen_passes_pack_once(packs, dtype, lambda: _mkl.use(False), tol)


def test_a_batchs_lean_calls_pack_into_their_kept_buffer(packs):
    """A small batch's no-grad call (the lean path) packs into the buffer of the call before,
    as the general path's passes do, and sees weights changed in place."""
    x = np.random.default_rng(0).standard_normal((6, 3, 5))
    layer = elman.LSTM(5, 6, dtype=np.float64, seed=1).eval()
    with elman.no_grad():
        first = layer(x)[0]
        layer.weight_hh_l0.data *= 0.5               # in place, as an optimizer step does
        out = layer(x)[0]
        with _mkl.use(False):
            expected = layer(x)[0]
    np.testing.assert_allclose(out, expected, rtol=1e-12, atol=1e-12)
    assert not np.allclose(out, first)
    assert len(packs) == 2
    (first_into, first_packed), (second_into, second_packed) = packs.buffers
    assert first_into is None and second_into is first_packed and second_packed is first_packed


@pytest.mark.parametrize("dtype, tol", [(np.float64, 1e-12), (np.float32, 1e-5)])
def test_a_frozen_batchs_lean_calls_pack_once(packs, dtype, tol, monkeypatch):
    """A frozen layer's small-batch no-grad calls pack ``W_hh^T`` at the first call only, on
    the lean path's pieces (no one compiled call: a short call's plan would keep its
    operands, packed matrix included, anyway)."""
    monkeypatch.setattr(timeloop, "lean_whole", lambda *args, **kwargs: None)
    x = np.random.default_rng(0).standard_normal((6, 3, 5)).astype(dtype)
    frozen = elman.freeze(elman.LSTM(5, 6, dtype=dtype, seed=1))
    with elman.no_grad():
        outs = [frozen(x)[0] for _ in range(4)]
        with _mkl.use(False):
            expected = frozen(x)[0]
    assert len(packs) == 1
    for out in outs:
        np.testing.assert_array_equal(out, outs[0])
    assert_close(outs[0], expected, tol)


def test_clear_workspace_frees_the_packing_buffers(packs):
    x = np.random.default_rng(0).standard_normal((6, 3, 5))
    layer = elman.LSTM(5, 6, dtype=np.float64, seed=1)
    layer(x)
    layer(x)
    layer.clear_workspace()
    layer(x)
    assert [into is None for into, _ in packs.buffers] == [True, False, True]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("transpose", [False, True])
def test_pack_into_an_earlier_packing(dtype, transpose):
    """``into`` (what an earlier call returned for the same shapes) receives the packing: the
    products through it are a new packing's, bit for bit (MKL's buffer is not compared byte
    by byte: it leaves padding unwritten); one of another size than MKL asks for, or of another
    dtype, is left alone."""
    from elman.fast import _blas
    rng = np.random.default_rng(0)
    W1, W2 = (rng.standard_normal((24, 10)).astype(dtype) for _ in range(2))
    A = rng.standard_normal((6, 10 if transpose else 24)).astype(dtype)

    def product(packed):
        C = np.zeros((6, 24 if transpose else 10), dtype)
        _blas._check(A, elman.fast.packed_operand(packed, _mkl.compute_address(dtype)), C,
                     False)
        return C
    first = _mkl.pack(W1, transpose, 6)
    again = _mkl.pack(W2, transpose, 6, into=first)
    assert again is first
    expected = product(_mkl.pack(W2, transpose, 6))
    np.testing.assert_allclose(expected, A @ (W2.T if transpose else W2), rtol=1e-5)
    np.testing.assert_array_equal(product(again), expected)
    other = _mkl.pack(W1, transpose, 6, into=first[:first.size // 2])
    assert not np.shares_memory(other, first)
    np.testing.assert_array_equal(product(first), expected)       # untouched
    wrong_type = _mkl.pack(W1.astype(np.float32 if dtype == np.float64 else np.float64),
                           transpose, 6, into=first)
    assert not np.shares_memory(wrong_type, first)
    np.testing.assert_array_equal(product(first), expected)


def test_not_packed_where_the_gemm_gets_two_threads(packs, monkeypatch):
    """On two BLAS threads OpenBLAS splitting one GEMM wins: no packing there; a direction of an
    overlapped bidirectional layer (one thread each) packs."""
    monkeypatch.setattr(threads, "granted", lambda: 2)
    monkeypatch.setattr(timeloop, "SPLIT_MIN_ROWS", 1000)   # (no row blocks: the whole batch)
    x = np.random.default_rng(0).standard_normal((6, 128, 8)).astype(np.float32)
    elman.LSTM(8, 64, seed=1)(x)                   # (128 x 64) @ (64 x 256): two threads
    assert packs == []
    monkeypatch.setattr(timeloop, "OVERLAP_MIN_FLOPS", 0.0)
    elman.LSTM(8, 64, bidirectional=True, seed=1)(x)
    assert packs == [True, True]


# -- a unidirectional layer's batch as two row blocks at once (timeloop.sequence_forward_rows)

@pytest.fixture
def always_split(monkeypatch, packs):
    monkeypatch.setattr(timeloop, "OVERLAP_MIN_FLOPS", 0.0)
    monkeypatch.setattr(timeloop, "LEAN_MAX_FLOPS", 0.0)   # (no lean path either)
    monkeypatch.setattr(timeloop, "SPLIT_MIN_FLOPS", 0.0)
    monkeypatch.setattr(timeloop, "SPLIT_MIN_ROWS", 1)
    monkeypatch.setattr(threads, "granted", lambda: 2)


SPLIT_CASES = {name: make for name, make in CASES.items() if "-bi" not in name}
SPLIT_CASES["lstm-layer-norm-regularised"] = lambda dt: elman.LSTM(
    5, 6, layer_norm=True, recurrent_dropout=0.3, zoneout=0.2, proj_size=4, dtype=dt, seed=1)
# stacks whose inner layers hand their row blocks on (sequence_forward_rows' keep_blocks), and
# one whose dropout between the layers keeps them apart
SPLIT_CASES["lstm-3layers"] = lambda dt: elman.LSTM(5, 6, num_layers=3, dtype=dt, seed=1)
SPLIT_CASES["rnn-relu-2layers"] = lambda dt: elman.RNN(5, 6, num_layers=2, nonlinearity="relu",
                                                          dtype=dt, seed=1)
SPLIT_CASES["lstm-2layers-proj"] = lambda dt: elman.LSTM(5, 6, num_layers=2, proj_size=4,
                                                         dtype=dt, seed=1)
SPLIT_CASES["gru-2layers-dropout"] = lambda dt: elman.GRU(5, 6, num_layers=2, dropout=0.4,
                                                          dtype=dt, seed=1)


@pytest.mark.parametrize("dtype, tol", [(np.float64, 1e-12), (np.float32, 1e-5)])
@pytest.mark.parametrize("with_lengths", [False, True])
@pytest.mark.parametrize("case", sorted(SPLIT_CASES))
def test_row_blocks_give_the_same_results(case, with_lengths, dtype, tol, always_split, packs,
                                          monkeypatch):
    """Outputs, final states, input and state gradients and every parameter gradient are the
    whole batch's; with lengths the blocks get unequal shares of the running rows (N = 5: rows
    0-2 and 3-4, sorted longest first from the caller's order). Blocks with MKL's packed GEMM
    and, as on a CPU where MKL is off by default, with OpenBLAS's."""
    x = np.random.default_rng(0).standard_normal((7, 5, 5)).astype(dtype)
    lengths = np.array([2, 7, 3, 5, 1]) if with_lengths else None
    with _mkl.use(False):                          # no MKL, no blocks: the whole batch
        monkeypatch.setattr(timeloop, "SPLIT_MIN_ROWS", 1000)
        layer = SPLIT_CASES[case](dtype)
        layer(x, lengths=lengths)
        assert not any(isinstance(c, timeloop.RowSplit) for c in layer._cache["caches"])
        whole = train_step(SPLIT_CASES[case](dtype), x, lengths)
        monkeypatch.setattr(timeloop, "SPLIT_MIN_ROWS", 1)
    monkeypatch.setattr(_mkl, "DEFAULT_ON", False)
    for packed in (True, False):
        with _mkl.use(packed):
            del packs[:]
            layer = SPLIT_CASES[case](dtype)
            out, _ = layer(x, lengths=lengths)
            if not packed and layer.eq.recurrent_gates == 1 and dtype == np.float64:
                # the RNN in float64: the earlier rule keeps its whole batch
                assert not any(isinstance(c, timeloop.RowSplit)
                               for c in layer._cache["caches"])
                continue
            assert all(isinstance(c, timeloop.RowSplit) for c in layer._cache["caches"])
            assert bool(packs) == packed
            blocks = train_step(SPLIT_CASES[case](dtype), x, lengths)
        for a, b in zip(whole, blocks):
            assert_close(b, a, tol)


def test_row_blocks_rule(monkeypatch, mkl_on):
    lstm = elman.LSTM(8, 512, seed=0).eq
    K, P = 4 * 512, 512
    monkeypatch.setattr(threads, "granted", lambda: 2)
    assert timeloop.split_rows(lstm, np.float32, 50, 64, K, P)
    assert not timeloop.split_rows(lstm, np.float32, 50, 16, K, P)          # few rows
    assert not timeloop.split_rows(lstm, np.float32, 4, 32, 256, 128)       # little work
    assert not timeloop.split_rows(lstm, np.float32, 2, 64, K, P)           # a short call
    # float32 with MKL on: a matrix too small for MKL's packing too (the blocks on the
    # kernels' panels or OpenBLAS's one-thread GEMM), the RNN's and a gated cell's, whatever
    # the whole batch's step GEMM would get; float64 only from a matrix worth MKL's packing
    rnn_eq = elman.RNN(8, 64).eq
    for eq, n, k, p in [(lstm, 64, 64, 64), (lstm, 32, 256, 64), (lstm, 128, 256, 64),
                        (rnn_eq, 32, 64, 64), (rnn_eq, 64, 128, 128)]:
        assert k * p < _mkl.MIN_ELEMENTS
        assert timeloop.split_rows(eq, np.float32, 500, n, k, p)
        assert not timeloop.split_rows(eq, np.float32, _mkl.MIN_STEPS - 1, 4096, k, p)
        if k >= 2 * p and 2.0 * n * k * p >= threads.MIN_FLOPS_PER_THREAD or k < 2 * p:
            assert not timeloop.split_rows(eq, np.float64, 500, n, k, p)
    assert timeloop.split_rows(lstm, np.float64, 50, 64, K, P)
    ln = elman.LSTM(8, 512, layer_norm=True).eq
    assert timeloop.split_rows(ln, np.float32, 50, 64, K, P)    # its sums: each pass's own
    monkeypatch.setattr(elman.fast.kernels_for(ln, np.float32), "reentrant", False,
                        raising=False)                           # state on the shared cell
    assert not timeloop.split_rows(ln, np.float32, 50, 64, K, P)
    # no MKL and not the kernels' own packing (tests/test_packed_gemm.py): blocks on
    # OpenBLAS's GEMM, on Intel (MKL switched off) as on CPUs where it is off by default
    rnn = elman.RNN(8, 512).eq                                      # not gated: K = P
    for intel in (True, False):
        with _mkl.use(False), _packed.use(False):
            monkeypatch.setattr(_mkl, "DEFAULT_ON", intel)
            # float32: whatever the matrix, the cell, the packing, given the steps, the rows
            # and the work
            for eq, k, p in [(lstm, K, P), (lstm, 64, 64), (rnn, P, P), (rnn, 64, 64)]:
                assert timeloop.split_rows(eq, np.float32, 50, 64, k, p)
                assert not timeloop.split_rows(eq, np.float32, _mkl.MIN_STEPS - 1, 4096, k, p)
            assert not timeloop.split_rows(lstm, np.float32, 2, 64, K, P)
    with _mkl.use(False), _packed.use(False):
        # float64 keeps the earlier rule: gated cells from a matrix worth packing, no RNN
        assert timeloop.split_rows(lstm, np.float64, 50, 64, K, P)
        assert not timeloop.split_rows(lstm, np.float64, 50, 64, 64, 64)
        assert not timeloop.split_rows(rnn, np.float64, 50, 64, P, P)
        with _mkl.use(True):
            assert timeloop.split_rows(rnn, np.float32, 50, 64, P, P)
    with elman.fast.use(False):
        assert not timeloop.split_rows(lstm, np.float32, 50, 64, K, P)
    monkeypatch.setattr(threads, "granted", lambda: 1)
    assert not timeloop.split_rows(lstm, np.float32, 50, 64, K, P)


@pytest.mark.parametrize("dropout, chained", [(0.0, True), (0.3, False)])
def test_inner_layers_hand_their_row_blocks_on(always_split, monkeypatch, dropout, chained):
    """A split stack's inner layer keeps its output in its blocks (no array of its own) and the
    next layer's blocks read those outputs as they are, where nothing comes between them; with
    dropout between the layers (training) the output is one array, as before. Either way the
    results are the whole batch's (test above); here, which way ran, and that the blocks'
    arrays go back to the workspaces after a no_grad call."""
    monkeypatch.setattr(timeloop, "ROWS_MAX_FLOPS", 0.0)
    monkeypatch.setattr(timeloop, "ROWS_MKL_MAX_FLOPS", 0.0)
    layer = elman.LSTM(5, 6, num_layers=3, dropout=dropout, seed=1)
    x = np.random.default_rng(0).standard_normal((7, 6, 5)).astype(np.float32)
    out, _ = layer(x)
    caches = layer._cache["caches"]
    assert all(isinstance(c, timeloop.RowSplit) for c in caches)
    assert [c.out is None for c in caches] == [chained, chained, False]
    if chained:                          # each block read the block below as it was
        for below, above in zip(caches, caches[1:]):
            for low, high in zip(below.parts, above.parts):
                assert np.shares_memory(high.X, low.S)
        with pytest.raises(RuntimeError, match="keep_blocks"):
            timeloop.output_view(caches[0])
    handed = []                          # the input gradients handed down as blocks
    backward = timeloop.sequence_backward

    def recording(*args, **kwargs):
        result = backward(*args, **kwargs)
        handed.append(isinstance(result[0], timeloop.RowBlocks))
        return result
    monkeypatch.setattr(timeloop, "sequence_backward", recording)   # (backward_directions')
    layer.backward(np.ones_like(out))
    assert handed == [chained, chained, False]          # layers 2, 1, 0
    layer.eval()
    with elman.no_grad():
        first, _ = layer(x)
        second, _ = layer(x)
    np.testing.assert_array_equal(first, second)
    for ws in layer._workspaces:
        assert ws._free and ws.second()._free


def test_row_blocks_without_a_graph(always_split, monkeypatch):
    """Under no_grad the general path's blocks' arrays go back to the layer's workspaces (the
    second block's to the sibling workspace) and the next call reuses them. (The rows rule
    refused: a small call's blocks would run on the pair, tests/test_rows_stack.py.)"""
    monkeypatch.setattr(timeloop, "ROWS_MAX_FLOPS", 0.0)
    monkeypatch.setattr(timeloop, "ROWS_MKL_MAX_FLOPS", 0.0)
    layer = elman.GRU(5, 6, seed=1)
    x = np.random.default_rng(0).standard_normal((7, 6, 5)).astype(np.float32)
    with elman.no_grad():
        first, _ = layer(x)
        second, _ = layer(x)
    np.testing.assert_array_equal(first, second)
    assert layer._workspaces[0]._free and layer._workspaces[0].second()._free
