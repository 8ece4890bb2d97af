"""The kernels' own packed per-step GEMM (elman.fast._packed, elman.fast._microkernel): the
panels hold the matrix, the micro-kernel's product equals a float64 one for every tile height
and panel width, layers give the same results packed as on BLAS (every cell and option,
lengths, row blocks), packing follows its rule, and a pass always packs the weights as they are
now. (No timing asserts: ``benchmarks/bench_mkl.py`` measures.)"""
import os

import numpy as np
import pytest

import elman
from elman import threads, timeloop
from elman.fast import _cpu, _mkl, _packed

from _packing import (Packings, assert_close, check_frozen_passes_pack_once, layer_cases,
                      printed_in_fresh_process, train_step)

pytestmark = pytest.mark.skipif(not _packed.available,
                                reason="needs numba and a CPU with AVX-512")


@pytest.mark.parametrize("transpose", [False, True])
@pytest.mark.parametrize("n", [16, 32, 48, 80])
def test_panels_hold_the_matrix(transpose, n):
    """Bp[p, k, :] = B[k, p*NR:(p+1)*NR], zeros past the last column, 64-byte aligned, and a
    copy (W changed later is not seen)."""
    k = 7
    W = np.random.default_rng(0).standard_normal((n, k) if transpose else (k, n))
    W = W.astype(np.float32)
    B = W.T if transpose else W
    Bp = _packed.pack(W, transpose)
    panels = -(-n // _packed.NR)
    assert Bp.shape == (panels, k, _packed.NR) and Bp.dtype == np.float32
    assert Bp.ctypes.data % 64 == 0
    wide = np.concatenate([B, np.zeros((k, panels * _packed.NR - n), np.float32)], axis=1)
    np.testing.assert_array_equal(Bp, wide.reshape(k, panels, _packed.NR).transpose(1, 0, 2))
    W[...] = 0
    assert Bp.any()


def test_pack_refuses_what_it_cannot_multiply():
    with pytest.raises(ValueError, match="float32"):
        _packed.pack(np.zeros((16, 4)), True)
    with pytest.raises(ValueError, match="2-D"):
        _packed.pack(np.zeros(16, np.float32), True)


@pytest.mark.parametrize("accumulate", [False, True])
@pytest.mark.parametrize("transpose", [False, True])
@pytest.mark.parametrize("k, n", [(1, 16), (7, 48), (33, 64), (128, 400)])
def test_packed_product_equals_a_float64_one(k, n, transpose, accumulate):
    """gemm/gemm_acc with the panels as B: every tile height (1 to MR rows, and more than one
    tile), a last panel half used (n % NR = 16), A and C column blocks of wider arrays, C's
    other columns untouched."""
    from elman.fast import _blas
    rng = np.random.default_rng(k + n)
    W = rng.standard_normal((n, k) if transpose else (k, n)).astype(np.float32)
    B = (W.T if transpose else W).astype(np.float64)
    Bp = _packed.pack(W, transpose)
    for m in (*range(1, _packed.MR + 1), 2 * _packed.MR + 3):
        wide_a = rng.standard_normal((m, k + 5)).astype(np.float32)
        wide_c = rng.standard_normal((m, n + 19)).astype(np.float32)
        A, C = wide_a[:, 2:2 + k], wide_c[:, 3:3 + n]
        expected = wide_c.astype(np.float64)
        expected[:, 3:3 + n] = (C if accumulate else 0) + A @ B
        _blas._check(A, elman.fast.packed_operand(Bp, _packed.compute_address()), C, accumulate)
        assert_close(wide_c, expected, 1e-6)


@pytest.mark.parametrize("accumulate", [False, True])
def test_one_row_is_bit_for_bit_a_row_of_the_tiles(accumulate):
    """A vector times the panels runs its own loop (several panels' sums side by side, in
    groups of ROW_PANELS, then 2, then one, then a half panel): each column's sum runs over k
    in the tiles' order, so the vector's product is bit for bit the first row of a two-row
    tile's, for every count of whole panels and with a half one."""
    from elman.fast import _blas, _microkernel
    assert _microkernel.ROW_PANELS == 4
    rng = np.random.default_rng(7)
    k = 37
    for n in [16 + 32 * p for p in range(12)] + [32 * p for p in range(1, 12)]:
        Bp = _packed.pack(rng.standard_normal((n, k)).astype(np.float32), True)
        operand = elman.fast.packed_operand(Bp, _packed.compute_address())
        A = rng.standard_normal((2, k)).astype(np.float32)
        start = rng.standard_normal((2, n + 16)).astype(np.float32)
        two, one = start.copy(), start[:1].copy()
        _blas._check(A, operand, two[:, :n], accumulate)
        _blas._check(A[:1], operand, one[:, :n], accumulate)
        np.testing.assert_array_equal(one.view(np.uint32), two[:1].view(np.uint32),
                                      err_msg=f"n = {n}")
        np.testing.assert_array_equal(one[:, n:], start[:1, n:])   # (past n: untouched)


def test_the_rule():
    big, nr = _packed.MIN_ELEMENTS, _packed.VW
    k = big // nr
    assert _packed.worth(_packed.MIN_STEPS, 2, k, nr, np.float32)
    assert not _packed.worth(_packed.MIN_STEPS - 1, 2, k, nr, np.float32)   # streaming
    assert not _packed.worth(100, 1, k, nr, np.float32)          # one row: GEMV on W itself
    assert not _packed.worth(100, 64, k - 1, nr, np.float32)     # a small matrix
    assert not _packed.worth(100, 64, k * 2, nr // 2, np.float32)   # no whole vectors
    assert not _packed.worth(100, 64, k, nr, np.float64)         # float64: BLAS
    with _packed.use(False):
        assert not _packed.worth(100, 64, k, nr, np.float32)
    assert _packed.enabled()


def test_available_with_avx512_only():
    assert _packed.available == (_cpu.AVX512 and elman.fast.available
                                 and os.environ.get("NUMBA_CPU_NAME", "host") == "host")
    with open("/proc/cpuinfo") as f:
        flags = next(line for line in f if line.startswith("flags")).split()
    assert _cpu.AVX512 == ("avx512f" in flags and "fma" in flags)


def test_not_available_when_numba_compiles_for_another_cpu():
    code = "from elman.fast import _packed; print(_packed.available, _packed.enabled())"
    assert printed_in_fresh_process(code, NUMBA_CPU_NAME="generic") == "False False"


@pytest.mark.parametrize("value, expected", [("0", "False"), ("off", "False"), ("1", "True"),
                                             ("", "True"), (None, "True")])
def test_environment_switch(value, expected):
    """ELMAN_PACKED=0 off; on by default where it can run."""
    code = "from elman.fast import _packed; print(_packed.enabled())"
    assert printed_in_fresh_process(code, ELMAN_PACKED=value) == expected


@pytest.fixture
def packs(monkeypatch):
    """MKL off (the kernels' own packing is what runs where MKL does not); pack whatever the
    matrix's size; record each packing's (transpose, k, n)."""
    monkeypatch.setattr(_packed, "MIN_ELEMENTS", 0)
    original = _packed.pack

    def counting(W, transpose, into=None):
        calls.append((transpose, *(W.T if transpose else W).shape))
        packed = original(W, transpose, into)
        calls.buffers.append((into, packed))
        return packed
    calls = Packings()
    monkeypatch.setattr(_packed, "pack", counting)
    with _mkl.use(False):
        yield calls


# H = 16 (32 with a projection to 16): B's columns (4H, 3H, 2H, H, P) are all whole vectors;
# 3H = 48 leaves the last panel half used
CASES = layer_cases(16, 32, 16)


@pytest.mark.parametrize("with_lengths", [False, True])
@pytest.mark.parametrize("case", sorted(CASES))
def test_packed_layers_give_the_same_results(case, with_lengths, packs):
    """Outputs, final states, input and state gradients and every parameter gradient as on
    BLAS (float32 to 1e-5); N = 11: a whole tile of rows and a part one."""
    x = np.random.default_rng(0).standard_normal((7, 11, 5)).astype(np.float32)
    lengths = np.array([7, 3, 5, 1, 2, 7, 6, 4, 1, 3, 5]) if with_lengths else None
    with _packed.use(False):
        plain = train_step(CASES[case](np.float32), x, lengths)
    assert packs == []
    packed = train_step(CASES[case](np.float32), x, lengths)
    layer = CASES[case](np.float32)
    # every layer-direction packed B = W_hh^T (P x K) for its forward, W_hh (K x P) backward
    K = layer.eq.recurrent_gates * layer.hidden_size
    P = layer.proj_size or layer.hidden_size
    passes = layer.num_layers * (2 if layer.bidirectional else 1)
    assert sorted(packs) == [(False, K, P)] * passes + [(True, P, K)] * passes
    for a, b in zip(plain, packed):
        assert_close(b, a, 1e-5)


def test_float64_stays_on_blas(packs):
    x = np.random.default_rng(0).standard_normal((7, 11, 5))
    train_step(CASES["lstm-bi"](np.float64), x, None)
    assert packs == []


def test_a_pass_packs_the_weights_as_they_are_now(packs):
    """Nothing packed is kept between calls: weights changed in place are seen at once."""
    x = np.random.default_rng(0).standard_normal((6, 3, 5)).astype(np.float32)
    layer = elman.LSTM(5, 16, seed=1)
    layer(x)
    layer.weight_hh_l0.data *= 0.5                 # in place, as an optimizer step does
    out, _ = layer(x)
    with _packed.use(False):
        expected, _ = layer(x)
    assert_close(out, expected, 1e-6)
    assert len(packs) == 2
    # (packed anew, into the panels of the pass before: its workspace keeps them)
    (first_into, first), (second_into, second) = packs.buffers
    assert first_into is None and second_into is first and second is first


def test_a_frozen_layer_packs_once(packs):
    """A frozen matrix is packed into panels at the first pass and taken as it is after."""
    check_frozen_passes_pack_once(packs, np.float32, lambda: _packed.use(False), 1e-5)


def test_row_blocks_pack_and_give_the_same_results(packs, monkeypatch):
    """A unidirectional layer's two row blocks (one GEMM thread each) pack their matrix on
    an Intel CPU with MKL off (``_mkl.DEFAULT_ON``), every cell (the RNN too, since the rule
    of 2026-12-07: float32 splits whatever its matrix), once a pass for both blocks (the
    first block's packing serves the second), with the whole batch's results."""
    monkeypatch.setattr(_mkl, "DEFAULT_ON", True)
    monkeypatch.setattr(timeloop, "OVERLAP_MIN_FLOPS", 0.0)
    monkeypatch.setattr(timeloop, "LEAN_MAX_FLOPS", 0.0)   # (no lean path either)
    monkeypatch.setattr(timeloop, "SPLIT_MIN_FLOPS", 0.0)
    monkeypatch.setattr(timeloop, "SPLIT_MIN_ROWS", 1)
    monkeypatch.setattr(threads, "granted", lambda: 2)
    monkeypatch.setattr(_mkl, "MIN_ELEMENTS", 0)
    x = np.random.default_rng(0).standard_normal((7, 11, 5)).astype(np.float32)
    lengths = np.array([7, 3, 5, 1, 2, 7, 6, 4, 1, 3, 5])
    for case in ("gru-classic", "lstm-regularised", "lstm-layer-norm", "rnn"):
        with _packed.use(False), monkeypatch.context() as m:
            m.setattr(timeloop, "SPLIT_MIN_ROWS", 1000)
            whole = train_step(CASES[case](np.float32), x, lengths)
        del packs[:]
        layer = CASES[case](np.float32)
        layer(x, lengths=lengths)
        assert all(isinstance(c, timeloop.RowSplit) for c in layer._cache["caches"])
        assert len(packs) == 1                              # one packing, both blocks
        blocks = train_step(CASES[case](np.float32), x, lengths)
        for a, b in zip(whole, blocks):
            assert_close(b, a, 1e-5)


def test_row_blocks_rule_with_mkl_off(monkeypatch):
    """Where MKL is off, also on an Intel CPU (``_mkl.DEFAULT_ON``): float32 gets row blocks
    whatever the cell and the matrix, the kernels packing it or not; float64 (no packing:
    OpenBLAS's one-thread GEMM) only for gated cells where MKL is off by default."""
    lstm = elman.LSTM(8, 512, seed=0).eq
    rnn = elman.RNN(8, 512).eq
    K, P = 4 * 512, 512
    monkeypatch.setattr(threads, "granted", lambda: 2)
    with _mkl.use(False):
        for intel in (True, False):
            monkeypatch.setattr(_mkl, "DEFAULT_ON", intel)
            for packing in (True, False):
                with _packed.use(packing):
                    for eq, k, p in [(lstm, K, P), (lstm, 256, 64), (rnn, P, P),
                                     (rnn, 256, 256), (rnn, 64, 64)]:
                        assert timeloop.split_rows(eq, np.float32, 50, 64, k, p)
                    assert not timeloop.split_rows(lstm, np.float32, 3, 64, K, P)
            assert timeloop.split_rows(lstm, np.float64, 50, 64, K, P) == (not intel)
            assert not timeloop.split_rows(rnn, np.float64, 50, 64, P, P)


@pytest.mark.parametrize("T, N", [(6, 3), (40, 24)])
@pytest.mark.parametrize("case", ["gru-2layers", "lstm-bi", "lstm-proj", "rnn-layer-norm"])
def test_inference_packs_and_gives_the_same_results(case, T, N, packs):
    """Under no_grad: a small call (the lean path, stacks as one compiled call) and a larger
    one, outputs and final states as on BLAS."""
    x = np.random.default_rng(0).standard_normal((T, N, 5)).astype(np.float32)
    layer = CASES[case](np.float32)
    with elman.no_grad():
        with _packed.use(False):
            plain = layer(x)
        assert packs == []
        packed = layer(x)
    assert len(packs) == layer.num_layers * (2 if layer.bidirectional else 1)
    for a, b in zip(_arrays(plain), _arrays(packed)):
        assert_close(b, a, 1e-5)


def _arrays(result):
    """``(out, h_n)`` or ``(out, (h_n, c_n))`` as a flat list."""
    out, state = result
    return [out, *(state if isinstance(state, tuple) else (state,))]


@pytest.mark.parametrize("b_transposed", [False, True])
def test_one_thread_product(b_transposed):
    """_packed.product (and threads.one_thread_matmul, which takes it where MKL is off)
    against a float64 product: ``b`` plain or a weight's transpose; it declines (False,
    nothing written) a small product, few rows, float64, columns not whole vectors, a
    strided ``a``, and with the packing or the compiled loops switched off."""
    rng = np.random.default_rng(3)
    m, k, n = 700, 48, 48                  # m * n * k >= MIN_PRODUCT_MNK
    assert m * n * k >= _packed.MIN_PRODUCT_MNK
    a = rng.standard_normal((m, k)).astype(np.float32)
    b = rng.standard_normal((n, k)).astype(np.float32).T if b_transposed else \
        rng.standard_normal((k, n)).astype(np.float32)
    expected = a.astype(np.float64) @ b
    out = np.full((m, n), np.nan, np.float32)
    assert _packed.product(a, b, out)
    assert_close(out, expected, 1e-6)
    with _mkl.use(False):
        assert_close(threads.one_thread_matmul(a, b), expected, 1e-6)
    out[...] = 0
    wide = np.zeros((m, 2 * k), np.float32)
    declined = [(a[:10], b, out[:10]), (a[:60], b, out[:60]),
                (a.astype(np.float64), b.astype(np.float64), out.astype(np.float64)),
                (a, b[:, :40], out[:, :40]), (wide[:, ::2], b, out)]
    for args in declined:
        assert not _packed.product(*args)
    with _packed.use(False):
        assert not _packed.product(a, b, out)
    with elman.fast.use(False):
        assert not _packed.product(a, b, out)
    assert not out.any()
