"""A row block's pass as one compiled call (elman.fast._block, timeloop.fuses_block): MKL's
GEMM through its address equals NumPy's product in every layout, the fused passes give the
whole batch's results (every cell and option they take, float32 and float64, with and
without the input gradient, stacked layers whose blocks pass on their rows), they run
exactly where the rule says, and the caller's task rings the partner's bell itself
(Partner.beside with ``ring``). (No timing asserts: benchmarks measure.)"""
import threading

import numpy as np
import pytest

import elman
from elman import fast, recurrent, threads, timeloop, weight_grads
from elman.fast import _mkl

from _packing import FORMS, assert_close, operand
from _torch import _strict

pytestmark = pytest.mark.skipif(not (fast.available and (_mkl.available or _strict())),
                                reason="needs numba and the mkl wheel (elman[mkl])")

@pytest.fixture(scope="module")
def gemm_at():
    from numba import njit
    from elman.fast._blas import gemm_at as compiled

    @njit
    def call(address, A, B, C, accumulate):
        compiled(address, A, B, C, accumulate)
    return call


@pytest.mark.parametrize("dtype, tol", [(np.float32, 1e-5), (np.float64, 1e-12)])
@pytest.mark.parametrize("a_form", FORMS)
@pytest.mark.parametrize("b_form", FORMS)
@pytest.mark.parametrize("accumulate", [False, True])
def test_gemm_at_equals_a_float64_product(gemm_at, dtype, tol, a_form, b_form, accumulate):
    """``C (+)= A @ B`` by MKL's ``cblas_?gemm`` at its address, every layout of A and B the
    fused passes give it, into a block of a wider array's columns (and one row, one column)."""
    rng = np.random.default_rng(3)
    with _mkl.use(True):
        address = _mkl.gemm_address(dtype)
    assert address
    for m, k, n in ((37, 11, 23), (1, 5, 9), (8, 1, 1)):
        A = operand(rng, (m, k), dtype, a_form)
        B = operand(rng, (k, n), dtype, b_form)
        wide = rng.standard_normal((m, n + 4)).astype(dtype)
        expected = wide.copy()
        expected[:, 2:2 + n] = (wide[:, 2:2 + n] if accumulate else 0) + \
            A.astype(np.float64) @ B.astype(np.float64)
        gemm_at(address, A, B, wide[:, 2:2 + n], accumulate)
        np.testing.assert_allclose(wide, expected, rtol=tol, atol=tol)


def test_gemm_address_is_zero_where_mkl_is_off_or_the_dtype_is_not_a_float():
    with _mkl.use(False):
        assert _mkl.gemm_address(np.float32) == 0
    with _mkl.use(True):
        assert _mkl.gemm_address(np.float16) == 0 and _mkl.gemm_address(np.int64) == 0
        assert _mkl.gemm_address(np.float32) != _mkl.gemm_address(np.float64)


@pytest.fixture
def blocks(monkeypatch):
    """Every unidirectional layer here runs as two row blocks on MKL, and the fused calls
    (forward and backward) are counted."""
    monkeypatch.setattr(timeloop, "OVERLAP_MIN_FLOPS", 0.0)
    monkeypatch.setattr(timeloop, "LEAN_MAX_FLOPS", 0.0)
    monkeypatch.setattr(timeloop, "SPLIT_MIN_FLOPS", 0.0)
    monkeypatch.setattr(timeloop, "SPLIT_MIN_ROWS", 1)
    monkeypatch.setattr(threads, "granted", lambda: 2)
    monkeypatch.setattr(_mkl, "MIN_ELEMENTS", 0)
    counts = {"forward_block": 0, "backward_block": 0}
    for module in ("rnn", "gru", "lstm", "layer_norm"):
        kernels = fast.kernels_named(f"elman.fast.{module}")
        calls = dict(kernels.fused_calls)
        for loop_function, fused in calls.items():
            def counted(block, args, _fused=fused,
                        _name="backward_block" if "backward" in loop_function.__name__
                        else "forward_block"):
                counts[_name] += 1
                return _fused(block, args)
            calls[loop_function] = counted
        monkeypatch.setattr(kernels, "fused_calls", calls)
    with _mkl.use(True):
        yield counts


CASES = {
    "rnn": lambda dt, **kw: elman.RNN(5, 16, dtype=dt, seed=1, **kw),
    "rnn-relu-2layers": lambda dt, **kw: elman.RNN(5, 16, nonlinearity="relu", num_layers=2,
                                                   dtype=dt, seed=1, **kw),
    "gru": lambda dt, **kw: elman.GRU(5, 16, dtype=dt, seed=1, **kw),
    "gru-classic": lambda dt, **kw: elman.GRU(5, 16, reset_after=False, dtype=dt, seed=1, **kw),
    "lstm": lambda dt, **kw: elman.LSTM(5, 16, dtype=dt, seed=1, **kw),
    "lstm-2layers": lambda dt, **kw: elman.LSTM(5, 16, num_layers=2, dtype=dt, seed=1, **kw),
    "lstm-regularised": lambda dt, **kw: elman.LSTM(5, 16, recurrent_dropout=0.3,
                                                    input_dropout=0.2, zoneout=0.2, dtype=dt,
                                                    seed=1, **kw),
    "lstm-layer-norm": lambda dt, **kw: elman.LSTM(5, 16, layer_norm=True, dtype=dt, seed=1, **kw),
    "gru-layer-norm": lambda dt, **kw: elman.GRU(5, 16, layer_norm=True, dtype=dt, seed=1, **kw),
    "rnn-layer-norm-2layers": lambda dt, **kw: elman.RNN(5, 16, layer_norm=True, num_layers=2,
                                                         dtype=dt, seed=1, **kw),
    "lstm-proj": lambda dt, **kw: elman.LSTM(5, 32, proj_size=16, dtype=dt, seed=1, **kw),
    "lstm-peephole": lambda dt, **kw: elman.LSTM(5, 16, peephole=True, dtype=dt, seed=1, **kw),
}
#: the cases' fused passes per layer call: (forward, backward) of each of a layer's blocks
FUSED = {"rnn": (2, 2), "rnn-relu-2layers": (4, 4), "gru": (2, 2), "gru-classic": (2, 0),
         "lstm": (2, 2), "lstm-2layers": (4, 4), "lstm-regularised": (2, 2),
         "lstm-layer-norm": (2, 2), "gru-layer-norm": (2, 2), "rnn-layer-norm-2layers": (4, 4),
         "lstm-proj": (0, 0), "lstm-peephole": (0, 0)}


def _step(layer, x, lengths, input_grad):
    """Outputs, final states, the state gradients, the input gradient (or None) and every
    parameter gradient of one forward and backward (fixed random output and state gradients)."""
    out, state = layer(x, lengths=lengths)
    dout = np.random.default_rng(1).standard_normal(out.shape).astype(out.dtype)
    states = state if isinstance(state, tuple) else (state,)
    dh = [np.random.default_rng(2).standard_normal(s.shape).astype(out.dtype) for s in states]
    dx, dstate = layer.backward(dout, tuple(dh) if len(dh) == 2 else dh[0],
                                input_grad=input_grad)
    return [out, *states, dx, *(dstate if isinstance(dstate, tuple) else (dstate,)),
            *(p.grad.copy() for _, p in layer.named_parameters())]


@pytest.mark.parametrize("dtype, tol", [(np.float32, 1e-5), (np.float64, 1e-12)])
@pytest.mark.parametrize("input_grad", [True, False])
@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("way", ["partner", "pool"])
def test_fused_blocks_give_the_whole_batchs_results(case, input_grad, dtype, tol, way, blocks,
                                                    monkeypatch):
    """Two row blocks, each pass one compiled call where the rule takes it, against the whole
    batch in one block (the same weights, masks and zoneout draws: the layers' seeds); the
    blocks on the partner (set up by the caller, one packing for both) and, as larger blocks
    go, on a pool's worker (each set up on its own thread)."""
    if way == "pool":
        monkeypatch.setattr(threads, "PARTNER_MAX_FLOPS", 0.0)
        monkeypatch.setattr(threads, "ROW_BLOCKS_PARTNER_MAX_FLOPS", 0.0)
    x = np.random.default_rng(0).standard_normal((9, 11, 5)).astype(dtype)
    with monkeypatch.context() as m:
        m.setattr(timeloop, "SPLIT_MIN_ROWS", 1000)
        whole = _step(CASES[case](dtype), x, None, input_grad)
    assert blocks == {"forward_block": 0, "backward_block": 0}
    layer = CASES[case](dtype)
    split = _step(layer, x, None, input_grad)
    forward, backward = FUSED[case]
    assert blocks == {"forward_block": forward, "backward_block": backward}
    for a, b in zip(whole, split):
        if a is None:
            assert b is None and not input_grad
        else:
            assert_close(b, a, tol)


@pytest.mark.parametrize("case", ["gru", "lstm-2layers", "rnn"])
def test_with_lengths_only_the_forward_is_fused(case, blocks, monkeypatch):
    """Variable lengths: the backward clears padded slots in Python between the loop and the
    weight gradients, so only the forward pass is one call; the results are the whole
    batch's."""
    x = np.random.default_rng(0).standard_normal((9, 11, 5)).astype(np.float32)
    lengths = np.array([9, 3, 5, 1, 2, 9, 6, 4, 1, 3, 5])
    with monkeypatch.context() as m:
        m.setattr(timeloop, "SPLIT_MIN_ROWS", 1000)
        whole = _step(CASES[case](np.float32), x, lengths, True)
    split = _step(CASES[case](np.float32), x, lengths, True)
    assert blocks == {"forward_block": FUSED[case][0], "backward_block": 0}
    for a, b in zip(whole, split):
        assert_close(b, a, 1e-5)


def test_nothing_is_fused_with_mkl_off(blocks):
    x = np.random.default_rng(0).standard_normal((9, 11, 5)).astype(np.float32)
    with _mkl.use(False):
        layer = CASES["lstm"](np.float32)
        layer(x)
        assert all(isinstance(c, timeloop.RowSplit) for c in layer._cache["caches"])
        _step(layer, x, None, True)
    assert blocks == {"forward_block": 0, "backward_block": 0}


def test_the_joined_weight_gradients_stay_in_python(blocks, monkeypatch):
    """Where the two weight gradients are one product a chunk of rows
    (:func:`elman.weight_grads.joins`), the backward is not fused."""
    monkeypatch.setattr(weight_grads, "MIN_STATE", 1)
    x = np.random.default_rng(0).standard_normal((9, 11, 5)).astype(np.float32)
    _step(CASES["lstm"](np.float32), x, None, True)
    assert blocks == {"forward_block": 2, "backward_block": 0}


@pytest.mark.parametrize("mkl", [True, False])
def test_a_blocks_copy_of_its_input_rows_is_reused_never_the_callers_input(blocks, mkl):
    """Each row block copies its rows of the layer input (a strided view) into an array of
    its workspace, given back after the backward like the gates and taken again by the next
    call (a fresh one cost its page faults at every call); a block whose rows are already
    contiguous reads the caller's array, which never goes to the workspace. Results as a
    layer without reuse gives."""
    rng = np.random.default_rng(3)
    with _mkl.use(mkl):
        layer, fresh = CASES["lstm-2layers"](np.float32), CASES["lstm-2layers"](np.float32)
        copies = []
        for step in range(3):
            x = rng.standard_normal((9, 11, 5)).astype(np.float32)
            got = _step(layer, x, None, True)
            fresh.clear_workspace()
            fresh.zero_grad()
            assert all(np.array_equal(a, b) for a, b in zip(got, _step(fresh, x, None, True)))
            layer.zero_grad()
            first = layer._workspaces[0]
            copies.append((first._free["X"], first.second()._free["X"]))
            assert [c.shape for c in copies[-1]] == [(9, 6, 5), (9, 5, 5)]
            assert not any(np.shares_memory(c, x) for c in copies[-1])
        assert copies[0][0] is copies[1][0] and copies[0][1] is copies[1][1]
        one_step = rng.standard_normal((1, 11, 5)).astype(np.float32)  # rows contiguous
        layer(one_step)
        assert all(not np.shares_memory(a, one_step) for ws in (first, first.second())
                   for a in ws._free.values() if isinstance(a, np.ndarray))
        layer.backward(np.ones((1, 11, 16), np.float32))
        assert all(not np.shares_memory(a, one_step) for ws in (first, first.second())
                   for a in ws._free.values() if isinstance(a, np.ndarray))


#: the cases' fused passes per bidirectional layer call, (forward, backward): each direction
#: of each layer where the cell fuses (a second layer's input gradient whole, the sum of its
#: directions' added up by the caller: recurrent.FUSED_SUM_MAX_ELEMENTS)
FUSED_DIRECTIONS = {
    "rnn": (2, 2), "rnn-relu-2layers": (4, 4), "gru": (2, 2), "gru-classic": (2, 0),
    "lstm": (2, 2), "lstm-2layers": (4, 4), "lstm-regularised": (2, 2),
    "lstm-layer-norm": (0, 2), "gru-layer-norm": (0, 2), "rnn-layer-norm-2layers": (0, 4),
    "lstm-proj": (0, 0), "lstm-peephole": (0, 0)}


@pytest.mark.parametrize("dtype, tol", [(np.float32, 1e-5), (np.float64, 1e-12)])
@pytest.mark.parametrize("input_grad", [True, False])
@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("way", ["partner", "pool"])
def test_fused_directions_give_the_results_of_directions_in_turn(case, input_grad, dtype, tol,
                                                                 way, blocks, monkeypatch):
    """A bidirectional layer's two directions at once, each set up by the caller and run as
    one compiled call where the cell allows (on the partner; on a pool's worker as before),
    against the same layer with its directions one after the other: the same results, at two
    training steps (the second on the arrays the first gave back to the workspaces)."""
    if way == "pool":
        monkeypatch.setattr(threads, "PARTNER_MAX_FLOPS", 0.0)
        monkeypatch.setattr(threads, "ROW_BLOCKS_PARTNER_MAX_FLOPS", 0.0)
    rng = np.random.default_rng(0)
    xs = [rng.standard_normal((9, 11, 5)).astype(dtype) for _ in range(2)]
    with monkeypatch.context() as m:
        m.setattr(timeloop, "OVERLAP_MIN_FLOPS", float("inf"))
        layer = CASES[case](dtype, bidirectional=True)
        in_turn = [_step(layer, x, None, input_grad) for x in xs]
    assert blocks == {"forward_block": 0, "backward_block": 0}
    layer = CASES[case](dtype, bidirectional=True)
    at_once = [_step(layer, x, None, input_grad) for x in xs]
    forward, backward = FUSED_DIRECTIONS[case] if way == "partner" else (0, 0)
    assert blocks == {"forward_block": 2 * forward, "backward_block": 2 * backward}
    for a, b in zip(sum(in_turn, []), sum(at_once, [])):
        if a is None:
            assert b is None and not input_grad
        else:
            assert_close(b, a, tol)


@pytest.mark.parametrize("case", ["rnn-relu-2layers", "lstm-2layers"])
def test_a_large_sum_of_an_upper_layers_input_gradients_stays_with_the_directions(
        case, blocks, monkeypatch):
    """Above :data:`elman.recurrent.FUSED_SUM_MAX_ELEMENTS` the upper bidirectional layer
    leaves its input gradient to the directions below (each sums its own columns on its own
    thread), whose passes then are not fused; the results are the same."""
    x = np.random.default_rng(0).standard_normal((9, 11, 5)).astype(np.float32)
    fused = _step(CASES[case](np.float32, bidirectional=True), x, None, False)
    assert blocks == {"forward_block": 4, "backward_block": 4}
    monkeypatch.setattr(recurrent, "FUSED_SUM_MAX_ELEMENTS", 9 * 11 * 32 - 1)
    summed_below = _step(CASES[case](np.float32, bidirectional=True), x, None, False)
    assert blocks == {"forward_block": 8, "backward_block": 4}
    for a, b in zip(fused, summed_below):
        if a is None:                                    # (no input gradient asked for)
            assert b is None
        else:
            assert_close(b, a, 1e-5)


# --- Partner.beside with ring: the caller's task rings the partner's bell -------------------

pair_only = pytest.mark.skipif(not fast.pair_supported(),
                               reason="elman's second thread: x86-64 CPUs with the fast path")


@pytest.fixture(scope="module")
def ring_from_compiled():
    from numba import njit
    from elman.fast._pair import ring_bell

    @njit(nogil=True)
    def ring(bell, gen):
        ring_bell(bell, gen)
    # compiled now: a bell rung more than SPIN_SECONDS after its post (a compilation between
    # them) finds the partner asleep, and the caller runs both tasks (a correct, slower call)
    ring(np.zeros(8, np.int64), 0)
    return ring


@pair_only
def test_a_task_that_rings_from_compiled_code_has_its_partner_run_first(ring_from_compiled):
    """``second`` rings the bell from compiled code, then waits (up to 2 s) until ``first``
    has started: only the partner, woken by that bell, can start it meanwhile. (A bell rung
    more than SPIN_SECONDS after its post, the caller descheduled between them on a busy
    machine, finds the partner asleep, and the caller runs ``first`` itself afterwards: so
    every call must be right, and the partner must have run ``first`` in most.)"""
    partner = fast.pair().partner()
    started, ran_on = threading.Event(), []

    def first():
        ran_on.append(threading.get_ident())
        started.set()
        return "first"

    def second(ring):
        ring_from_compiled(ring.bell, ring.gen)
        started.wait(2)
        return "second"

    for _ in range(20):
        started.clear()
        assert partner.beside(first, second, ring=True) == ("first", "second")
    assert len(ran_on) == 20
    assert sum(thread != threading.get_ident() for thread in ran_on) >= 10


@pair_only
def test_a_task_that_does_not_ring_still_gets_both_run_once():
    """A ``second`` that never rings: the bell is rung after it, and ``first`` runs once,
    here or on the partner, before the call returns."""
    partner = fast.pair().partner()
    for i in range(50):
        runs = []
        result = partner.beside(lambda: runs.append(i) or i, lambda ring: -i, ring=True)
        assert result == (i, -i) and runs == [i]


@pair_only
def test_ring_in_python_and_the_pool_path(monkeypatch):
    """``Ring()`` rings from Python (once: a second call does nothing), and
    :func:`elman.threads.concurrently` passes ``ring=None`` where the task goes to the pool."""
    partner = fast.pair().partner()
    seen = []

    def second(ring):
        ring()
        ring()
        seen.append(int(ring.bell[0]) == ring.gen)
        return 2
    assert partner.beside(lambda: 1, second, ring=True) == (1, 2) and seen == [True]
    got = []
    assert threads.concurrently(lambda: 1, lambda ring: got.append(ring) or 2, flops=None,
                                ring=True) == (1, 2)
    assert got == [None]


@pair_only
def test_an_exception_in_a_ringing_task_is_raised_after_both_stop():
    partner = fast.pair().partner()
    done = []

    def second(ring):
        raise ValueError("second")
    with pytest.raises(ValueError, match="second"):
        partner.beside(lambda: done.append(1), second, ring=True)
    assert done in ([], [1])           # (first claimed by the partner, or never started)
    assert partner.beside(lambda: 3, lambda ring: 4, ring=True) == (3, 4)   # still serves
