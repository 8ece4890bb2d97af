"""A small batch's whole stack as two row blocks at once on the pair's two threads
(timeloop.stack_forward_rows, elman.fast._pair.rows_stack): the same results as the general
path's row blocks and as the whole batch in one lean call, whoever runs the second block,
through the layer, and the rule that decides when it runs."""
import types

import numpy as np
import pytest

import elman
from elman import fast, threads, timeloop
from elman.fast import _mkl, _pair
from _callers import (agree_from_threads, counted, flat, spread_layer,
                      taken_with_two_threads)

pytestmark = pytest.mark.skipif(not fast.pair_supported(),
                                reason="two threads: x86-64 CPUs with the fast path")

LAYERS = {
    "rnn-tanh": lambda dt: elman.RNN(5, 16, dtype=dt),
    "rnn-relu-2": lambda dt: elman.RNN(5, 16, num_layers=2, nonlinearity="relu", dtype=dt),
    "gru-2": lambda dt: elman.GRU(5, 16, num_layers=2, dtype=dt),
    "gru-classic-no-bias": lambda dt: elman.GRU(5, 16, bias=False, reset_after=False,
                                                dtype=dt),
    "lstm-batch-first": lambda dt: elman.LSTM(5, 16, batch_first=True, dtype=dt),
    "lstm-3": lambda dt: elman.LSTM(5, 16, num_layers=3, dtype=dt),
}


def _layer(name, dtype):
    return spread_layer(LAYERS[name], dtype)


@pytest.fixture
def rows(monkeypatch):
    """Every batched no-grad call of a unidirectional stack runs as row blocks on the pair,
    whatever its size and the CPUs free (not the whole batch's lean call, which takes the
    smallest); the calls that do are counted."""
    monkeypatch.setattr(timeloop, "LEAN_MAX_FLOPS", 0.0)
    monkeypatch.setattr(timeloop, "split_rows", lambda *args: True)
    monkeypatch.setattr(threads, "two_threads_free", lambda: True)
    return counted(monkeypatch, "stack_forward_rows")




def _cases(layer, dtype, rng):
    """(x, hx): an even and an odd batch, with and without initial states."""
    L = layer.num_layers
    cases = []
    for N in (4, 7):
        shape = (N, 6, 5) if layer.batch_first else (6, N, 5)
        h = rng.standard_normal((L, N, 16)).astype(dtype)
        hx = (h, rng.standard_normal((L, N, 16)).astype(dtype)) if layer.eq.has_cell else h
        cases += [(rng.standard_normal(shape).astype(dtype), None),
                  (rng.standard_normal(shape).astype(dtype), hx)]
    return cases


@pytest.mark.parametrize("name, dtype", [(name, np.float32) for name in sorted(LAYERS)]
                         + [("lstm-3", np.float64)])
def test_row_blocks_on_the_pair_equal_the_general_paths(rows, name, dtype, monkeypatch):
    """Bit for bit: the same kernels run each row, only in a block of its own (a GEMM's rows
    do not change each other's sums). The reference is the general path's blocks (the
    rows rule refused)."""
    layer = _layer(name, dtype)
    cases = _cases(layer, dtype, np.random.default_rng(1))
    with elman.no_grad():
        got = [flat(layer(x, hx)) for x, hx in cases]
        assert len(rows) == len(cases)
        monkeypatch.setattr(timeloop, "ROWS_MAX_FLOPS", 0.0)
        monkeypatch.setattr(timeloop, "ROWS_MKL_MAX_FLOPS", 0.0)
        want = [flat(layer(x, hx)) for x, hx in cases]
        assert len(rows) == len(cases)
    for g, w in zip(got, want):
        for a, b in zip(g, w):
            assert a.dtype == dtype
            np.testing.assert_array_equal(a, b)


@pytest.fixture
def panel_packs(monkeypatch):
    """The row blocks pack every per-step matrix into panels (the kernels' own packing, MKL
    or not); records each packing (its matrix's shape, in ``shapes``) and counts each
    compare of a kept packing with its matrix (``compares``)."""
    from elman.fast import _packed
    if not _packed.available:
        pytest.skip("the kernels' own panels need numba and a CPU with AVX-512")
    from elman.fast._panel_check import same_as_panels
    monkeypatch.setattr(timeloop, "ROWS_PACK_MIN_ELEMENTS", 0)
    record = types.SimpleNamespace(shapes=[], compares=0)
    original = _packed.pack

    def pack(W, transpose, into=None):
        record.shapes.append(W.shape)
        return original(W, transpose, into)

    def compare(W, Bp):
        record.compares += 1
        return same_as_panels(W, Bp)
    monkeypatch.setattr(_packed, "pack", pack)
    monkeypatch.setattr(_packed, "_same_as_panels", compare)
    return record


def test_the_blocks_keep_each_matrix_panels(rows, panel_packs):
    """Each layer-direction's ``W_hh`` and ``W_ih`` panels are kept from call to call in its
    workspace (compared with the matrix, packed anew only where it changed): the same
    results as panels packed afresh, bit for bit, and a write into a weight is seen."""
    layer = elman.LSTM(5, 16, num_layers=2, seed=4).eval()
    x = np.random.default_rng(11).standard_normal((6, 4, 5)).astype(np.float32)
    with elman.no_grad():
        first = flat(layer(x))
        assert len(panel_packs.shapes) == 4           # two layers' W_hh and W_ih
        again = flat(layer(x))
        assert len(panel_packs.shapes) == 4 and panel_packs.compares == 4
        layer.weight_hh_l1.data[3, 2] += 0.25         # in place, one element
        changed = flat(layer(x))
        assert panel_packs.shapes[4:] == [(64, 16)]
        layer.clear_workspace()                       # (every panel packed afresh)
        fresh = flat(layer(x))
    assert len(rows) == 4
    for a, b in zip(first, again):
        np.testing.assert_array_equal(b, a)
    for a, b in zip(fresh, changed):
        np.testing.assert_array_equal(b, a)
    assert not np.array_equal(changed[0], first[0])


def test_a_frozen_stacks_blocks_trust_their_kept_panels(rows, panel_packs):
    """A frozen layer's panels are packed at its first call and neither packed nor compared
    after (no write can reach its weights)."""
    frozen = elman.freeze(elman.GRU(5, 16, num_layers=2, seed=5))
    x = np.random.default_rng(12).standard_normal((6, 4, 5)).astype(np.float32)
    with elman.no_grad():
        first = flat(frozen(x))
        packed = len(panel_packs.shapes)
        again = flat(frozen(x))
    assert packed == 4 and len(panel_packs.shapes) == 4 and panel_packs.compares == 0
    for a, b in zip(first, again):
        np.testing.assert_array_equal(b, a)


def test_a_stateful_layer_carries_its_state_through_the_rows(rows):
    """The final states the row blocks write (each its rows) are the next call's start."""
    layer = elman.LSTM(5, 16, num_layers=2, stateful=True, seed=3).eval()
    reference = elman.LSTM(5, 16, num_layers=2, stateful=True, seed=3).eval()
    rng = np.random.default_rng(5)
    xs = [rng.standard_normal((4, 5, 5)).astype(np.float32) for _ in range(3)]
    with elman.no_grad():
        got = [layer(x)[0] for x in xs]
        with fast.use(False):
            want = [reference(x)[0] for x in xs]
    assert len(rows) == len(xs)
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-6)


def _rows_call(layer, x):
    """The arguments of a kernel module's forward_stack_rows for ``layer`` on ``x``, its
    outputs, and the whole batch's lean stack (the expected results)."""
    kernels = fast.kernels_for(layer.eq, layer.dtype)
    T, N, _ = x.shape
    L, H = layer.num_layers, layer.hidden_size
    rng = np.random.default_rng(9)
    h0 = rng.standard_normal((L, N, H)).astype(layer.dtype)
    c0 = rng.standard_normal((L, N, H)).astype(layer.dtype) if layer.eq.has_cell else None
    weights = [layer._weights(k) for k in range(L)]
    first = (N + 1) // 2
    operands = timeloop.stack_operands(layer.eq, kernels, weights, T, first, blocks=True)
    work = _pair.aligned_empty((2, _pair.rows_work_size(T, first, x.shape[2], H * layer.eq.gates,
                                                          H, H, 1)), layer.dtype)
    out = np.full((T, N, H), np.nan, layer.dtype)
    h_n = np.full_like(h0, np.nan)
    c_n = None if c0 is None else np.full_like(c0, np.nan)
    sync = np.zeros(_pair.ROW, np.int64)
    bell = np.zeros(_pair.ROW, np.int64)
    args = (layer.eq, x, h0, c0, *operands, timeloop._row_schedules(T, N, 1), first, out, h_n,
            c_n, work, sync, bell)
    expected = timeloop.stack_forward_lean(layer.eq, kernels, x, h0, c0, weights, 1,
                                           kernels.forward_stack_lean)
    return kernels, args, (out, h_n, c_n, sync, bell), expected


@pytest.mark.parametrize("name", ["lstm-3", "gru-classic-no-bias", "rnn-relu-2"])
def test_a_caller_without_partner_runs_both_blocks(name):
    layer = _layer(name, np.float32)
    x = np.random.default_rng(3).standard_normal((6, 5, 5)).astype(np.float32)
    kernels, args, (out, h_n, c_n, sync, bell), expected = _rows_call(layer, x)
    assert kernels.forward_stack_rows(*args, 5, 0, 1) == 5
    assert bell[0] == 5                                    # (it rang for the partner)
    for got, want in zip((out, h_n, c_n), expected):
        if want is not None:
            np.testing.assert_array_equal(got, want)       # every row written, exactly
    assert sync[_pair.CLAIM] == 1 and sync[_pair.DONE] == 2


def test_a_late_partner_finds_the_block_done_and_computes_nothing():
    layer = _layer("lstm-batch-first", np.float32)
    x = np.random.default_rng(4).standard_normal((5, 3, 5)).astype(np.float32)
    kernels, args, (out, h_n, c_n, sync, bell), expected = _rows_call(layer, x)
    kernels.forward_stack_rows(*args, 1, 0, 1)
    before = out.copy()
    out[...] = np.nan                        # a partner that wrote anything would show here
    h_n[...] = np.nan
    assert kernels.forward_stack_rows(*args, 1, 1, 1) == 1  # (no next sequence: the bell)
    assert np.isnan(out).all() and np.isnan(h_n).all()
    np.testing.assert_array_equal(before, expected[0])


def test_a_partner_that_claims_the_block_writes_only_its_rows():
    """The partner's side alone: it claims the second block and writes rows first: only,
    exactly as the whole batch's call does."""
    layer = _layer("gru-2", np.float32)
    x = np.random.default_rng(8).standard_normal((6, 5, 5)).astype(np.float32)
    kernels, args, (out, h_n, c_n, sync, bell), expected = _rows_call(layer, x)
    first = (x.shape[1] + 1) // 2
    kernels.forward_stack_rows(*args, 1, 1, 1)
    assert sync[_pair.CLAIM] == 1 and sync[_pair.DONE] == 1
    assert np.isnan(out[:, :first]).all() and np.isnan(h_n[:, :first]).all()
    np.testing.assert_array_equal(out[:, first:], expected[0][:, first:])
    np.testing.assert_array_equal(h_n[:, first:], expected[1][:, first:])


def test_the_rule(monkeypatch):
    """Below ROWS_MAX_FLOPS of recurrent work, where the general path would split the rows,
    one direction, a kernel that has forward_stack_rows and no transform_input; through the
    layer only where two threads are free."""
    lstm = elman.LSTM(16, 64, seed=0)
    kernels = fast.kernels_for(lstm.eq, np.float32)
    K, P = 4 * 64, 64
    monkeypatch.setattr(timeloop, "split_rows", lambda *args: True)
    assert timeloop.rows_rule(lstm.eq, kernels, np.float32, 50, 32, K, P, 1)
    assert not timeloop.rows_rule(lstm.eq, kernels, np.float32, 50, 32, K, P, 2)
    assert 2.0 * 5000 * 32 * K * P >= timeloop.ROWS_MAX_FLOPS
    assert not timeloop.rows_rule(lstm.eq, kernels, np.float32, 5000, 32, K, P, 1)
    assert not timeloop.rows_rule(lstm.eq, None, np.float32, 50, 32, K, P, 1)
    ln = elman.LSTM(16, 64, layer_norm=True)
    assert not timeloop.rows_rule(ln.eq, fast.kernels_for(ln.eq, np.float32), np.float32,
                                  50, 32, K, P, 1)                 # (its own input transform)
    monkeypatch.setattr(timeloop, "split_rows", lambda *args: False)
    assert not timeloop.rows_rule(lstm.eq, kernels, np.float32, 50, 32, K, P, 1)
    monkeypatch.setattr(timeloop, "split_rows", lambda *args: True)
    lstm.eval()
    x = np.random.default_rng(2).standard_normal((50, 32, 16)).astype(np.float32)
    alone, both = taken_with_two_threads(monkeypatch, "stack_forward_rows", lstm, x)
    for a, b in zip(alone, both):        # (the blocks multiply by W_hh's panels: a sum's
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)    # order apart)
    seen = counted(monkeypatch, "stack_forward_rows")
    stack = elman.LSTM(16, 64, num_layers=2, dropout=0.5, seed=0).train()
    with elman.no_grad():
        stack(x)                          # (training: dropout masks between the layers)
        assert seen == []
        stack.eval()
        stack(x)
        assert len(seen) == 1


def test_the_blocks_arrays_are_kept_from_call_to_call(rows):
    """One array for both blocks' work, taken from the layer's workspace and given back: the
    next call of the same shape reuses it (made at every call, such arrays cost page faults
    wherever the C library had given the memory back to the system), a larger call makes a
    larger one."""
    layer = _layer("gru-classic-no-bias", np.float32)
    rng = np.random.default_rng(10)
    x = rng.standard_normal((6, 7, 5)).astype(np.float32)
    with elman.no_grad():
        first = flat(layer(x))
        kept = layer._workspaces[0].take_any("rows_work")
        assert kept is not None and kept.shape[0] == 2
        assert kept.ctypes.data % 64 == 0 and kept.strides[0] % 64 == 0
        layer._workspaces[0].give(rows_work=kept)
        again = flat(layer(x))
        assert layer._workspaces[0].take_any("rows_work") is kept
        longer = rng.standard_normal((9, 7, 5)).astype(np.float32)
        layer(longer)
        assert layer._workspaces[0].take_any("rows_work").shape[1] > kept.shape[1]
    assert len(rows) == 3
    for a, b in zip(first, again):
        np.testing.assert_array_equal(a, b)


def test_two_callers_share_one_partner(rows):
    """Layers called from two threads at once, one of them from both: each call claims its
    own second block, whichever call the partner joins, and works in arrays of its own;
    nobody hangs."""
    lstm = _layer("lstm-3", np.float32)
    layers = [lstm, _layer("gru-2", np.float32), lstm]
    rng = np.random.default_rng(6)
    inputs = [rng.standard_normal((9, 4, 5)).astype(np.float32),
              rng.standard_normal((9, 5, 5)).astype(np.float32),
              rng.standard_normal((9, 6, 5)).astype(np.float32)]
    agree_from_threads(layers, inputs, repeats=40)


def test_the_rule_with_mkl(monkeypatch):
    """With MKL on, a state of up to ROWS_MKL_MAX_STATE units runs as row blocks up to
    ROWS_MKL_MAX_FLOPS of recurrent work; a larger state, or MKL off, up to ROWS_MAX_FLOPS."""
    lstm = elman.LSTM(32, 128, seed=0)
    kernels = fast.kernels_for(lstm.eq, np.float32)
    monkeypatch.setattr(timeloop, "split_rows", lambda *args: True)
    K, P, T, N = 4 * 128, 128, 100, 64
    flops = 2.0 * T * N * K * P
    assert timeloop.ROWS_MAX_FLOPS <= flops < timeloop.ROWS_MKL_MAX_FLOPS
    assert P == timeloop.ROWS_MKL_MAX_STATE
    with _mkl.use(True):
        assert timeloop.rows_rule(lstm.eq, kernels, np.float32, T, N, K, P, 1)
        assert not timeloop.rows_rule(lstm.eq, kernels, np.float32, T, N, K, P, 2)
        wide = 192                               # (less work, but a larger state)
        assert not timeloop.rows_rule(lstm.eq, kernels, np.float32, T // 4, N, 4 * wide,
                                      wide, 1)
        assert not timeloop.rows_rule(lstm.eq, kernels, np.float32, 3 * T, N, K, P, 1)
    with _mkl.use(False):
        assert not timeloop.rows_rule(lstm.eq, kernels, np.float32, T, N, K, P, 1)


MKL_LAYERS = {
    "lstm-2": lambda: elman.LSTM(32, 128, num_layers=2, seed=3),
    "gru": lambda: elman.GRU(32, 128, seed=4),
    "rnn-2": lambda: elman.RNN(64, 128, num_layers=2, seed=5),
}


@pytest.mark.skipif(not _mkl.available, reason="needs the mkl wheel (elman[mkl])")
@pytest.mark.parametrize("name", sorted(MKL_LAYERS))
def test_row_blocks_multiply_by_mkls_packed_forms(rows, name, monkeypatch):
    """Where MKL is on, the blocks' per-step matrix (where MKL packs a matrix that large) and
    their projection's (from ROWS_MKL_PROJECTION_MIN) are MKL's packed forms, packed
    into buffers the layer-directions keep from
    call to call (packed anew at each call: an in-place change of a weight is seen), and not
    packed again at all for a frozen layer; the results are the general path's (MKL there
    too; the projection's sums may run in another order)."""
    monkeypatch.setattr(timeloop, "ROWS_MKL_PROJECTION_MIN", 0)   # (a small pass here)
    packed = []
    original = _mkl.pack

    def counting(W, transpose, rows, into=None):
        packed.append((W.shape, rows))
        return original(W, transpose, rows, into)
    monkeypatch.setattr(_mkl, "pack", counting)
    layer = MKL_LAYERS[name]().eval()
    G, L, I = layer.eq.gates, layer.num_layers, layer.input_size
    x = np.random.default_rng(7).standard_normal((20, 6, I)).astype(np.float32)
    with _mkl.use(True), elman.no_grad():
        first = flat(layer(x))
        assert len(rows) == 1
        # each layer's W_ih, for a pass of T * 3 rows (the first block's 3), and its W_hh for
        # 3 rows, where MKL packs a matrix that large (the RNN's 128 x 128 not: panels)
        step = [((G * 128, 128), 3)] if _mkl.large_enough(20, 3, G * 128 * 128) else []
        want = sorted(step * L + [((G * 128, I if k == 0 else 128), 20 * 3) for k in range(L)])
        assert len(want) == {"lstm-2": 4, "gru": 2, "rnn-2": 2}[name]
        assert sorted(packed) == want
        buffers = [(ws.take_any(timeloop.PACKINGS[True]), ws.take_any(timeloop.INPUT_PACKING))
                   for ws in layer._workspaces]
        for ws, (step, projection) in zip(layer._workspaces, buffers):
            ws.give(**{timeloop.PACKINGS[True]: step, timeloop.INPUT_PACKING: projection})
        packed.clear()
        again = flat(layer(x))
        assert sorted(packed) == want                 # (packed anew: the weights may change)
        for ws, (step, projection) in zip(layer._workspaces, buffers):
            assert ws.take_any(timeloop.PACKINGS[True]).buffer is step.buffer
            assert ws.take_any(timeloop.INPUT_PACKING).buffer is projection.buffer
        for a, b in zip(first, again):
            np.testing.assert_array_equal(a, b)
        with monkeypatch.context() as general:
            general.setattr(timeloop, "ROWS_MAX_FLOPS", 0.0)
            general.setattr(timeloop, "ROWS_MKL_MAX_FLOPS", 0.0)
            reference = flat(layer(x))
        assert len(rows) == 2
        for a, b in zip(first, reference):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
        layer.weight_hh_l0.data[:5] *= -1.0                     # (in place)
        changed = flat(layer(x))
        general_changed = MKL_LAYERS[name]().eval()
        general_changed.load_state_dict(layer.state_dict())
        for a, b in zip(changed, flat(general_changed(x))):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
        assert not np.allclose(changed[0], first[0])
        frozen = elman.freeze(layer)
        frozen(x)
        packed.clear()
        for a, b in zip(flat(frozen(x)), changed):
            np.testing.assert_array_equal(a, b)
        assert packed == []                           # (frozen: its packings taken as they are)
