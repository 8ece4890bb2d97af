"""The two directions of a bidirectional layer at once (elman.timeloop.run_directions, on
elman.threads.concurrently): the same results as one after the other, for every cell and option,
and the switch that decides. (No timing asserts: benchmarks/bench_bidirectional.py measures.)"""
import threading

import numpy as np
import pytest
from threadpoolctl import threadpool_info

import elman
from elman import threads, timeloop

from _torch import _strict


def _numpys_blas_threads():
    return [i["num_threads"] for i in threadpool_info()
            if i["user_api"] == "blas" and threads._is_numpys(i["filepath"])]


@pytest.fixture
def always_overlap(monkeypatch):
    """Overlap whatever the size and the machine's load; count the overlapped calls."""
    monkeypatch.setattr(timeloop, "OVERLAP_MIN_FLOPS", 0.0)
    monkeypatch.setattr(timeloop, "LEAN_MAX_FLOPS", 0.0)   # (no lean path either)
    monkeypatch.setattr(threads, "granted", lambda: 2)
    calls = []
    original = threads.concurrently

    def counting(first, second, **options):
        calls.append(1)
        return original(first, second, **options)
    monkeypatch.setattr(threads, "concurrently", counting)
    return calls


# -- elman.threads.concurrently ------------------------------------------------------------

#: concurrently's two ways: a task of unknown size on a thread pool's worker, a small one on
#: the pair's spinning partner (where it runs: x86-64, the fast path; else the pool again)
WAYS = pytest.mark.parametrize("flops", [None, 1.0], ids=["pool", "partner"])


@WAYS
def test_concurrently_runs_both_at_once_and_returns_both_results(flops):
    started = [threading.Event(), threading.Event()]

    def task(i):
        def run():
            started[i].set()
            # only returns True if the other task is running at the same time
            return started[1 - i].wait(timeout=30), threading.get_ident()
        return run
    (met0, ident0), (met1, ident1) = threads.concurrently(task(0), task(1), flops=flops)
    assert met0 and met1
    assert ident1 == threading.get_ident() and ident0 != ident1


@WAYS
def test_concurrently_pins_blas_to_one_thread_and_restores_it(flops):
    if not _numpys_blas_threads():
        if _strict():      # CI: NumPy's wheel brings an OpenBLAS threadpoolctl sees
            pytest.fail("NumPy's BLAS is not visible to threadpoolctl")
        pytest.skip("NumPy's BLAS is not visible to threadpoolctl here")
    elman.set_num_threads(2)
    with threads.for_gemm(512, 512, 512):
        pass                                    # BLAS now at the granted count
    seen = threads.concurrently(_numpys_blas_threads, _numpys_blas_threads, flops=flops)
    assert seen == ([1], [1])

    def with_a_large_gemm():                    # for_gemm inside leaves it at one thread
        with threads.for_gemm(4096, 4096, 4096):
            return _numpys_blas_threads()
    assert threads.concurrently(with_a_large_gemm, with_a_large_gemm, flops=flops) == ([1], [1])
    assert _numpys_blas_threads() == [threads.granted()]


@WAYS
@pytest.mark.parametrize("failing", ["first", "second", "both"])
def test_concurrently_raises_after_both_stopped(failing, flops):
    stopped = []
    first_started = threading.Event()

    def task(name):
        def run():
            if name == "first":
                first_started.set()
            else:                   # (so that both run: the partner takes first meanwhile)
                assert first_started.wait(timeout=30)
            stopped.append(name)
            if failing in (name, "both"):
                raise ValueError(name)
            return name
        return run
    with pytest.raises(ValueError, match="first" if failing == "first" else "second"):
        threads.concurrently(task("first"), task("second"), flops=flops)
    assert sorted(stopped) == ["first", "second"]        # neither was left running
    assert threads._pinned == 0
    assert threads.concurrently(lambda: 1, lambda: 2, flops=flops) == (1, 2)   # still works


@WAYS
def test_concurrently_from_several_caller_threads_at_once(flops):
    results = {}

    def caller(name):            # (25 calls each: callers race each other for the partner)
        results[name] = [threads.concurrently(lambda: (name, i, 1), lambda: (name, i, 2),
                                              flops=flops) for i in range(25)]
    callers = [threading.Thread(target=caller, args=(i,)) for i in range(4)]
    for t in callers:
        t.start()
    for t in callers:
        t.join(timeout=60)
    assert results == {n: [((n, i, 1), (n, i, 2)) for i in range(25)] for n in range(4)}
    assert threads._pinned == 0


# -- the switch -----------------------------------------------------------------------------

def test_overlap_only_for_compiled_reentrant_large_work(monkeypatch):
    monkeypatch.setattr(threads, "granted", lambda: 2)
    big = 10 * timeloop.OVERLAP_MIN_FLOPS
    lstm = elman.LSTM(4, 8).eq
    ln = elman.LSTM(4, 8, layer_norm=True).eq
    if elman.fast.available:
        assert timeloop.overlap_directions(lstm, np.float32, big)
        assert timeloop.overlap_directions(ln, np.float32, big)   # its sums: the pass's own
        # a kernel module that keeps state on the shared cell says so, and runs in turn
        monkeypatch.setattr(elman.fast.kernels_for(ln, np.float32), "reentrant", False,
                            raising=False)
        assert not timeloop.overlap_directions(ln, np.float32, big)
    assert not timeloop.overlap_directions(lstm, np.float32, timeloop.OVERLAP_MIN_FLOPS / 2)
    with elman.fast.use(False):                 # the NumPy steps hold the GIL
        assert not timeloop.overlap_directions(lstm, np.float32, big)
    monkeypatch.setattr(threads, "granted", lambda: 1)    # the policy grants one CPU
    assert not timeloop.overlap_directions(lstm, np.float32, big)


# -- the same results -----------------------------------------------------------------------

CASES = {
    "rnn-tanh": lambda dt: elman.RNN(5, 6, bidirectional=True, dtype=dt, seed=1),
    "rnn-relu-2layers": lambda dt: elman.RNN(5, 6, num_layers=2, nonlinearity="relu",
                                             bidirectional=True, dtype=dt, seed=1),
    "gru": lambda dt: elman.GRU(5, 6, bidirectional=True, dtype=dt, seed=1),
    "gru-classic": lambda dt: elman.GRU(5, 6, bidirectional=True, reset_after=False, dtype=dt,
                                        seed=1),
    "lstm-2layers": lambda dt: elman.LSTM(5, 6, num_layers=2, bidirectional=True, dtype=dt,
                                          seed=1),
    "lstm-proj": lambda dt: elman.LSTM(5, 6, proj_size=3, bidirectional=True, dtype=dt, seed=1),
    "lstm-peephole": lambda dt: elman.LSTM(5, 6, peephole=True, bidirectional=True, dtype=dt,
                                           seed=1),
    "lstm-regularised": lambda dt: elman.LSTM(5, 6, bidirectional=True, recurrent_dropout=0.3,
                                              input_dropout=0.2, zoneout=0.2, dtype=dt, seed=1),
    "gru-layer-norm": lambda dt: elman.GRU(5, 6, layer_norm=True, bidirectional=True, dtype=dt,
                                           seed=1),
    "lstm-layer-norm-2layers": lambda dt: elman.LSTM(5, 6, num_layers=2, layer_norm=True,
                                                     bidirectional=True, zoneout=0.2,
                                                     dtype=dt, seed=1),
    "rnn-layer-norm": lambda dt: elman.RNN(5, 6, layer_norm=True, bidirectional=True,
                                           recurrent_dropout=0.3, dtype=dt, seed=1),
}


def _run(layer, x, lengths, dout, dh):
    layer.zero_grad()
    for a in layer._workspaces:                 # start each run from the same (empty) buffers
        a.clear()
    out, state = layer(x, lengths=lengths)
    dx, dstate = layer.backward(dout, dh)
    return [out, *(state if isinstance(state, tuple) else (state,)), dx,
            *(dstate if isinstance(dstate, tuple) else (dstate,)),
            *(p.grad.copy() for _, p in layer.named_parameters())]


@pytest.mark.skipif(not elman.fast.available, reason="the overlap runs the compiled loops")
@pytest.mark.parametrize("dtype, tol", [(np.float64, 1e-12), (np.float32, 1e-5)])
@pytest.mark.parametrize("with_lengths", [False, True])
@pytest.mark.parametrize("case", sorted(CASES))
def test_overlapped_directions_give_the_same_results(case, with_lengths, dtype, tol,
                                                     always_overlap, monkeypatch):
    rng = np.random.default_rng(0)
    T, N = 7, 4
    x = rng.standard_normal((T, N, 5)).astype(dtype)
    lengths = np.array([7, 3, 5, 1]) if with_lengths else None
    results = {}
    for mode, threshold in (("at once", 0.0), ("in turn", float("inf"))):
        monkeypatch.setattr(timeloop, "OVERLAP_MIN_FLOPS", threshold)
        layer = CASES[case](dtype)              # same seed: same weights, same masks
        out, state = layer(x, lengths=lengths)
        dout = np.random.default_rng(1).standard_normal(out.shape).astype(dtype)
        shapes = state if isinstance(state, tuple) else (state,)
        dh = tuple(np.random.default_rng(2).standard_normal(s.shape).astype(dtype)
                   for s in shapes)
        layer = CASES[case](dtype)
        always_overlap.clear()
        results[mode] = _run(layer, x, lengths, dout, dh if len(dh) == 2 else dh[0])
        overlapped = len(always_overlap)
        if mode == "at once":
            layers = layer.num_layers
            # forward and backward of each layer
            assert overlapped == 2 * layers
    for a, b in zip(results["at once"], results["in turn"]):
        np.testing.assert_allclose(a, b, rtol=tol, atol=tol)
