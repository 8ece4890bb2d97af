"""elman.threads: the cap, the size rule, the load rule, what reaches NumPy's BLAS, and the
measurement of a real CPU-bound neighbour. (No timing asserts: speed under load is measured by
benchmarks/bench_load.py.)"""
import subprocess
import sys
import time

import numpy as np
import pytest

import elman
from elman import threads
from _torch import require


@pytest.fixture(autouse=True)
def restore_policy():
    cap, adaptive = threads._cap, threads._adaptive
    yield
    threads.set_num_threads(cap, adaptive=adaptive)


@pytest.mark.parametrize("bad", [-1, 1.5, "2", True])
def test_set_num_threads_checks_its_argument(bad):
    with pytest.raises(ValueError, match="set_num_threads: n must be a positive integer"):
        elman.set_num_threads(bad)
    with pytest.raises(TypeError, match="adaptive must be True or False"):
        elman.set_num_threads(1, adaptive="no")


def test_cap_and_default():
    elman.set_num_threads(3)
    assert elman.get_num_threads() == 3
    elman.set_num_threads(0)
    assert elman.get_num_threads() == threads.available_cpus()
    elman.set_num_threads(None)
    assert elman.get_num_threads() == threads.available_cpus()


@pytest.mark.parametrize("value, expected", [(None, None), ("", None), ("auto", None),
                                             ("0", None), ("4", 4)])
def test_environment_variable(value, expected):
    assert threads._parse_env(value) == expected


@pytest.mark.parametrize("value", ["-2", "two", "1.5"])
def test_bad_environment_variable_names_it(value):
    with pytest.raises(ValueError, match="ELMAN_NUM_THREADS must be a positive integer"):
        threads._parse_env(value)


def _fake_load(monkeypatch, busy, cpus=2):
    """The policy on ``cpus`` CPUs of which ``busy`` are kept busy by others."""
    monkeypatch.setattr(threads, "available_cpus", lambda: cpus)
    monkeypatch.setattr(threads._monitor, "measure", lambda: busy)
    threads._monitor.grant = None


@pytest.mark.parametrize("busy, expected", [(0.0, 2), (0.3, 2), (0.8, 1), (1.0, 1), (1.9, 1)])
def test_granted_leaves_the_cores_others_use(monkeypatch, busy, expected):
    _fake_load(monkeypatch, busy)
    elman.set_num_threads(None)
    assert threads.granted() == expected


def test_granted_never_exceeds_the_cap_and_fixed_ignores_load(monkeypatch):
    _fake_load(monkeypatch, 0.0, cpus=8)
    elman.set_num_threads(3)
    assert threads.granted() == 3
    _fake_load(monkeypatch, 7.5, cpus=8)
    elman.set_num_threads(3, adaptive=False)
    assert threads.granted() == 3


def test_small_gemms_get_one_thread(monkeypatch):
    _fake_load(monkeypatch, 0.0)
    elman.set_num_threads(None)
    assert threads.gemm_threads(32, 256, 64) == 1          # 1 MFLOP
    assert threads.gemm_threads(64, 1024, 256) == 2        # 34 MFLOP
    # one row (GEMV) is bound by memory: its matrix's size decides, not its 2 MFLOP
    assert threads.gemm_threads(1, 2048, 512) == 2
    assert threads.gemm_threads(1, 128, 128) == 1
    elman.set_num_threads(2, adaptive=False)
    assert threads.gemm_threads(32, 256, 64) == 2


def test_a_new_window_after_an_idle_gap_keeps_the_last_decision(monkeypatch):
    _fake_load(monkeypatch, 1.5)
    elman.set_num_threads(None)
    assert threads.granted() == 1
    threads._monitor.seen -= 10 * threads.IDLE_GAP_SECONDS      # we were idle meanwhile
    monkeypatch.setattr(threads._monitor, "measure", lambda: 0.0)
    threads._work_starts()
    assert threads.granted() == 1                              # stands for the first window
    threads._monitor.grant = (0.0, 1)                          # the window has closed
    assert threads.granted() == 2


def test_back_to_back_small_calls_do_not_reopen_the_window(monkeypatch):
    """A streaming caller's calls never ask granted() (their GEMMs run on one thread by
    themselves); each must still count as work seen, or every call after a large one found an
    idle gap and re-read /proc/stat."""
    _fake_load(monkeypatch, 0.0)
    clock = [1000.0]
    monkeypatch.setattr(threads.time, "monotonic", lambda: clock[0])
    elman.set_num_threads(2)                        # a decision stands (grant set)
    restarts = []
    monkeypatch.setattr(threads._monitor, "restart", lambda: restarts.append(clock[0]))
    for _ in range(20):       # a call every half idle gap: a second of work, never a pause
        clock[0] += 0.5 * threads.IDLE_GAP_SECONDS
        threads.small_work_starts()
    assert restarts == []
    clock[0] += 10 * threads.IDLE_GAP_SECONDS        # a real pause still opens a new window
    threads.small_work_starts()
    assert len(restarts) == 1


def test_streaming_layer_calls_ask_the_monitor_nothing_after_the_first(monkeypatch):
    """Through a layer: lean calls after set_num_threads(2) do not read the CPU counters."""
    reads = []
    original = threads._monitor._read
    monkeypatch.setattr(threads._monitor, "_read", lambda: reads.append(1) or original())
    elman.set_num_threads(2)
    layer = elman.RNN(3, 8, seed=0).eval()
    x = np.zeros((1, 1, 3), np.float32)
    with elman.no_grad():
        layer(x)
        reads.clear()
        for _ in range(20):
            layer(x)
    assert len(reads) <= 1      # (one at most: a window may close while they run)


def _numpy_blas_threads():
    threadpoolctl = require("threadpoolctl")
    return [d["num_threads"] for d in threadpoolctl.threadpool_info()
            if d["user_api"] == "blas" and threads._is_numpys(d["filepath"])]


def test_for_gemm_sets_numpys_blas_and_restores(monkeypatch):
    _fake_load(monkeypatch, 0.0)
    elman.set_num_threads(2, adaptive=False)
    with threads.for_gemm(256, 256, 256):
        assert set(_numpy_blas_threads()) == {2}
    elman.set_num_threads(None)
    with threads.for_gemm(64, 1024, 256):
        assert set(_numpy_blas_threads()) == {2}
    with threads.for_gemm(4, 1024, 256):                       # 2 MFLOP: one thread
        assert set(_numpy_blas_threads()) == {1}
    assert set(_numpy_blas_threads()) == {2}


@pytest.mark.parametrize("dtype, tol", [(np.float32, 1e-5), (np.float64, 1e-12)])
@pytest.mark.parametrize("m, k, n, transposed", [
    (6400, 256, 64, False),        # a dense head's forward: two row halves at once
    (64, 6400, 256, True),         # its weight gradient, dz^T x: a transposed view, split
    (301, 1024, 128, False),       # an odd row count
    (50, 100, 300, False),         # 3 MFLOP: one BLAS thread, not split
    (1, 4096, 4096, False),        # one row: never split
    (8, 8, 8, False)])             # OpenBLAS keeps it to one thread itself
def test_matmul_equals_numpys_split_or_not(monkeypatch, m, k, n, transposed, dtype, tol):
    _fake_load(monkeypatch, 0.0)
    monkeypatch.setattr(threads, "_pool_spins_until", 0.0)    # BLAS's workers asleep
    monkeypatch.setattr(threads, "_layers_concurrent_until", float("inf"))  # layers' threads
    elman.set_num_threads(2, adaptive=True)
    calls = []
    original = threads.concurrently
    monkeypatch.setattr(threads, "concurrently",
                        lambda *fns, **kw: calls.append(1) or original(*fns, **kw))
    rng = np.random.default_rng(0)
    a = rng.standard_normal((k, m) if transposed else (m, k)).astype(dtype)
    a = a.T if transposed else a
    b = rng.standard_normal((k, n)).astype(dtype)
    got = threads.matmul(a, b)
    assert got.dtype == dtype and got.shape == (m, n)
    np.testing.assert_allclose(got, a @ b, rtol=tol, atol=tol * k ** 0.5)
    assert len(calls) == (1 if 2.0 * m * n * k >= threads.SPLIT_MATMUL_MIN_FLOPS and m > 1
                          else 0)
    assert set(_numpy_blas_threads()) == {2}             # back at what the policy grants
    elman.set_num_threads(1, adaptive=False)            # one thread granted: never split
    calls.clear()
    np.testing.assert_allclose(threads.matmul(a, b), a @ b, rtol=tol, atol=tol * k ** 0.5)
    assert calls == []
    out = np.full((m, n), np.nan, dtype)                 # into a given array
    assert threads.matmul(a, b, out=out) is out
    np.testing.assert_allclose(out, a @ b, rtol=tol, atol=tol * k ** 0.5)
    for granted in (1, 2):                               # added into it (a weight gradient)
        elman.set_num_threads(granted, adaptive=granted == 2)
        start = rng.standard_normal((m, n)).astype(dtype)
        out = start.copy()
        assert threads.matmul(a, b, out, accumulate=True) is out
        np.testing.assert_allclose(out, start + a @ b, rtol=tol, atol=tol * k ** 0.5)


def test_matmul_uses_blas_pool_while_it_spins(monkeypatch):
    """Right after elman ran per-step GEMMs on BLAS's two threads, whose workers now spin,
    a large product goes to that pool too; once they would be idle, to elman's halves."""
    _fake_load(monkeypatch, 0.0)
    elman.set_num_threads(2, adaptive=True)
    calls = []
    original = threads.concurrently
    monkeypatch.setattr(threads, "concurrently",
                        lambda *fns, **kw: calls.append(1) or original(*fns, **kw))
    a = np.ones((6400, 256), np.float32)
    b = np.ones((256, 64), np.float32)
    clock = [100.0]
    monkeypatch.setattr(threads.time, "perf_counter", lambda: clock[0])
    monkeypatch.setattr(threads, "_layers_concurrent_until", float("inf"))
    with threads.for_gemm(64, 1024, 256) as step:          # 34 MFLOP per step: 2 threads
        assert not step.one_thread
    np.testing.assert_array_equal(threads.matmul(a, b), a @ b)
    assert calls == []                                      # BLAS's pool, spinning anyway
    clock[0] += threads.POOL_SPIN_SECONDS * 1.01            # its workers gone to sleep
    np.testing.assert_array_equal(threads.matmul(a, b), a @ b)
    assert calls == [1]


def test_matmul_keeps_to_blas_pool_unless_layers_run_concurrently(monkeypatch):
    """No recurrent layer ran its blocks or directions on elman's threads lately: a large
    product runs on BLAS's pool (nothing to meet there); after one did, as two halves, until
    LAYER_CONCURRENCY_SECONDS have passed. matmul's own halves do not count."""
    _fake_load(monkeypatch, 0.0)
    elman.set_num_threads(2, adaptive=True)
    clock = [100.0]
    monkeypatch.setattr(threads.time, "perf_counter", lambda: clock[0])
    monkeypatch.setattr(threads, "_pool_spins_until", 0.0)
    monkeypatch.setattr(threads, "_layers_concurrent_until", 0.0)
    calls = []
    original = threads.concurrently
    monkeypatch.setattr(threads, "concurrently",
                        lambda *fns, **kw: calls.append(kw.get("layer", True))
                        or original(*fns, **kw))
    a = np.ones((6400, 256), np.float32)
    b = np.ones((256, 64), np.float32)
    np.testing.assert_array_equal(threads.matmul(a, b), a @ b)
    assert calls == []                                      # BLAS's pool
    out = np.full((6400, 64), 2.0, np.float32)              # added into a given array there
    assert threads.matmul(a, b, out, accumulate=True) is out
    np.testing.assert_array_equal(out, 2.0 + a @ b)
    assert calls == []
    clock[0] += 1.0                                         # its workers asleep again
    threads.concurrently(lambda: None, lambda: None)       # a layer's row blocks
    np.testing.assert_array_equal(threads.matmul(a, b), a @ b)
    assert calls == [True, False]                          # then two halves, not a layer
    clock[0] += threads.LAYER_CONCURRENCY_SECONDS * 1.01
    np.testing.assert_array_equal(threads.matmul(a, b), a @ b)
    assert calls == [True, False]                          # BLAS's pool again


def test_layers_give_the_same_numbers_under_any_thread_count():
    x = np.random.default_rng(0).standard_normal((20, 64, 16))
    results = []
    for n in (1, 2):
        elman.set_num_threads(n, adaptive=False)
        lstm = elman.LSTM(16, 256, dtype=np.float64, seed=0)
        out, _ = lstm(x)
        lstm.backward(np.ones_like(out), None)
        results.append((out, lstm.weight_hh_l0.grad.copy()))
    np.testing.assert_allclose(results[0][0], results[1][0], rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(results[0][1], results[1][1], rtol=1e-10, atol=1e-10)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/stat")
def test_the_monitor_sees_a_cpu_bound_neighbour():
    if threads.available_cpus() < 2:
        pytest.skip("needs 2 CPUs")
    spinner = subprocess.Popen([sys.executable, "-c", "import time\nend = time.time() + 20\n"
                                "while time.time() < end:\n    pass\n"])
    try:
        time.sleep(0.3)
        elman.set_num_threads(None, adaptive=True)     # (earlier tests may have capped at 1)
        threads._monitor.restart()
        a = np.random.default_rng(0).standard_normal((200, 200))
        end = time.monotonic() + 1.0
        seen = []
        while time.monotonic() < end:            # our own work: a loop of small GEMMs
            for _ in range(20):
                a = np.tanh(a @ a.T / 200)
            seen.append(threads.busy_elsewhere())
        assert max(seen) > 0.5                   # the neighbour keeps about one CPU busy
    finally:
        spinner.kill()
        spinner.wait()


pair_only = pytest.mark.skipif(not elman.fast.pair_supported(),
                               reason="elman's spinning second thread: x86-64, fast path")


def _thread_name(results):
    """``first`` of concurrently records the name of the thread it ran on."""
    import threading

    def first():
        results.append(threading.current_thread().name)
    return first


@pair_only
def test_concurrently_gives_small_tasks_to_the_partner_large_ones_to_the_pool(monkeypatch):
    """Up to PARTNER_MAX_FLOPS the first task runs on the pair's partner (spinning for tasks:
    its hand-offs cost no wake-up), above it and where the size is not given on the pool's
    worker; before the pool, a partner still spinning from its last task is rested."""
    rests = []
    pair = elman.fast.pair()
    original_rest = pair.rest_partner
    monkeypatch.setattr(pair, "rest_partner", lambda: rests.append(1) or original_rest())
    names = []

    def second():                        # (long enough for the partner to claim first)
        deadline = time.perf_counter() + 5
        while len(names) < count + 1 and time.perf_counter() < deadline:
            time.sleep(1e-4)

    for count, flops in enumerate((1e6, threads.PARTNER_MAX_FLOPS)):
        threads.concurrently(_thread_name(names), second, flops=flops)
    assert names == ["elman-pair"] * 2 and rests == []
    for count, flops in enumerate((threads.PARTNER_MAX_FLOPS * 1.01, None), start=2):
        threads.concurrently(_thread_name(names), second, flops=flops)
    assert len(names) == 4 and all(name.startswith("elman-loop") for name in names[2:])
    assert len(rests) == 2
    # a limit of the caller's own (row blocks': ROW_BLOCKS_PARTNER_MAX_FLOPS) moves the bar
    limit = threads.ROW_BLOCKS_PARTNER_MAX_FLOPS
    assert limit > threads.PARTNER_MAX_FLOPS
    for count, flops in enumerate((limit, limit * 1.01), start=4):
        threads.concurrently(_thread_name(names), second, flops=flops, partner_max=limit)
    assert names[4] == "elman-pair" and names[5].startswith("elman-loop")


@pair_only
def test_a_gemm_on_blas_pool_rests_a_spinning_partner(monkeypatch):
    """After a task on the partner (which then spins for SPIN_SECONDS), a product on BLAS's
    own threads first tells the partner to rest (else one of BLAS's threads would share a core
    with it); once rested, or long after, nothing to tell."""
    _fake_load(monkeypatch, 0.0)
    elman.set_num_threads(2, adaptive=True)
    rests = []
    pair = elman.fast.pair()
    original_rest = pair.rest_partner
    monkeypatch.setattr(pair, "rest_partner", lambda: rests.append(1) or original_rest())
    monkeypatch.setattr(threads, "_layers_concurrent_until", 0.0)
    a, b = np.ones((3000, 256), np.float32), np.ones((256, 256), np.float32)
    threads.concurrently(lambda: None, lambda: None, layer=False, flops=1.0)
    assert threads._partner_spins_until > time.perf_counter() - 1.0   # it spins from now on
    # (a test's pace is no machine's: the product comes while the partner still spins)
    monkeypatch.setattr(threads, "_partner_spins_until", time.perf_counter() + 60.0)
    np.testing.assert_array_equal(threads.matmul(a, b), a @ b)     # on BLAS's pool
    assert rests == [1]
    np.testing.assert_array_equal(threads.matmul(a, b), a @ b)
    assert rests == [1]                                             # resting already
    monkeypatch.setattr(threads, "_partner_spins_until", time.perf_counter() + 60.0)
    with threads.for_gemm(256, 4 * 256, 256):                       # two threads a step
        pass
    assert rests == [1, 1]
    monkeypatch.setattr(threads, "_partner_spins_until", time.perf_counter() - 1.0)
    with threads.for_gemm(256, 4 * 256, 256):
        pass
    assert rests == [1, 1]                                          # stopped spinning by now
