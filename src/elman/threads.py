"""How many BLAS threads elman's work gets: a thread policy that holds on a busy machine.

Why: a recurrent layer runs one small GEMM per time step. BLAS hands each GEMM to all its
threads, and a thread that does not get a core stalls the others at every step: beside two
CPU-bound processes on 2 cores, a layer that took 10 ms with one thread took 177 ms with two.
So elman decides, per piece of work:

1. **a cap**: :func:`set_num_threads` (or ``ELMAN_NUM_THREADS``, or every command's
   ``--threads``); by default the CPUs this process may run on (``os.sched_getaffinity``);
2. **the cores that are free now** (adaptive, on by default): the CPU time that *other*
   processes used on our CPUs over the last fraction of a second (``/proc/stat`` minus this
   process's own CPU time; the load average elsewhere) is not ours to take, so the policy grants
   ``round(cpus - busy_elsewhere)`` threads, at least 1 and at most the cap; re-measured at most
   every :data:`SAMPLE_SECONDS` when a layer runs, so it follows neighbours that come and go;
3. **the size of the GEMM**: one below :data:`MIN_FLOPS_PER_THREAD` floating-point operations
   per extra thread runs on one thread whatever is free (on 2 idle cores, 2 threads gave nothing
   below about 4 MFLOP per GEMM and up to 2.4x above 16 MFLOP; the per-step GEMMs of small
   layers sit far below, the whole-sequence GEMMs far above). A product of one row (a batch of
   one sequence: BLAS's GEMV) reads its matrix once and is bound by memory, not arithmetic: it
   gets one more thread per :data:`MIN_GEMV_ELEMENTS_PER_THREAD` matrix elements instead (each
   core then streams its part from its own cache; measured on 2 idle cores, a 50-step LSTM of
   one sequence at H=512 ran in 5.3 ms with 2 threads, 12.2 ms with 1).

The policy acts on the BLAS that NumPy is linked with (found with threadpoolctl, the standard
tool), which serves both NumPy's GEMMs and the compiled loops' per-step GEMMs
(:mod:`elman.fast._blas`); it leaves every other library's pool (PyTorch's, say) alone. The
compiled loops use no thread pool of their own (numba's ``parallel`` is not used). BLAS's
thread count is a per-process setting, so plain NumPy code that runs after an elman layer
runs with the count elman last set.

>>> import elman
>>> elman.set_num_threads(1)
>>> elman.get_num_threads()
1
>>> elman.set_num_threads(None)           # back to the default: every CPU we may use
"""
from __future__ import annotations

import math
import numbers
import os
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor, wait

import numpy as np

from . import _validate
from . import fast
from .fast import _mkl, _packed

__all__ = ["set_num_threads", "get_num_threads", "share_cpus", "available_cpus", "granted",
           "for_gemm", "gemm_threads", "matmul", "one_thread_product", "two_threads_free",
           "partner_core_free", "one_blas_thread",
           "busy_elsewhere", "info",
           "MIN_FLOPS_PER_THREAD", "MIN_GEMV_ELEMENTS_PER_THREAD", "SPLIT_MATMUL_MIN_FLOPS",
           "POOL_SPIN_SECONDS", "LAYER_CONCURRENCY_SECONDS", "PARTNER_MAX_FLOPS",
           "ROW_BLOCKS_PARTNER_MAX_FLOPS",
           "SAMPLE_SECONDS", "IDLE_GAP_SECONDS", "FIRST_WINDOW_SECONDS"]

#: a GEMM needs this many floating-point operations (2*m*n*k) per thread beyond the first to be
#: given that thread (measured on 2 idle cores: 2 threads were 0.9-1.0x below 4 MFLOP, 1.2-1.3x
#: at 4-8 MFLOP, 1.5-2.4x from 16 MFLOP)
MIN_FLOPS_PER_THREAD = 4e6
#: a product of one row gets one more thread per this many matrix elements (k*n): 2 threads
#: were 1.0x at 16K elements (RNN, H=128), 1.1-1.3x at 48-64K (GRU, LSTM at H=128), 2.3x at 1M
MIN_GEMV_ELEMENTS_PER_THREAD = 32768
#: how often (seconds) the policy re-measures what other processes use, at most
SAMPLE_SECONDS = 0.25
#: no layer ran for this long (seconds): the process was idle, the next layer opens a new window
IDLE_GAP_SECONDS = 0.1
#: the first window after an idle gap closes after this many seconds
FIRST_WINDOW_SECONDS = 0.1
_BLAS_OWN_SINGLE_THREAD_MNK = 4 * 65536
#: a product of at least this many floating-point operations (2*m*n*k) runs in :func:`matmul`
#: as two row halves at once on elman's two threads; a smaller one on one BLAS thread. Waking
#: elman's worker thread costs 0.05 ms when it ran just before, 0.2-0.5 ms after it slept 1-10
#: ms (measured on this project's virtual machine), and the second half saves half a one-thread
#: product's time (about 90 GFLOP/s here): the split pays from about 70 MFLOP. (Measured
#: through a model, bench_model.py, when every product split: with 16 MFLOP the RNN at
#: (64, 100, 32, 128), whose products are 50-200 MFLOP, ran at 0.75-0.80x of all its products
#: on OpenBLAS's pool; with 64 MFLOP at 0.92-0.95x.)
SPLIT_MATMUL_MIN_FLOPS = 64e6
#: how long OpenBLAS's worker threads spin, waiting for more, after a GEMM on several threads
#: (2^28 cycles, its default OPENBLAS_THREAD_TIMEOUT: about 0.1 s at 2-3 GHz)
POOL_SPIN_SECONDS = 0.1
_pool_spins_until = 0.0        # when the workers of elman's last multi-thread BLAS call go idle
#: a recurrent layer that ran its row blocks or directions on elman's two threads this recently
#: (seconds) will likely run its next ones soon (the same training step, or the next): until
#: then :func:`matmul` keeps off OpenBLAS's pool, whose spinning worker would meet them
LAYER_CONCURRENCY_SECONDS = 1.0
_layers_concurrent_until = 0.0


def _pool_used() -> None:
    """elman just ran a GEMM on BLAS's own pool with several threads: its workers spin now."""
    global _pool_spins_until
    _pool_spins_until = time.perf_counter() + POOL_SPIN_SECONDS

_ENV = "ELMAN_NUM_THREADS"


def available_cpus() -> int:
    """The number of CPUs this process may run on (its affinity mask where the OS has one)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def _parse_env(value: str | None):
    """``ELMAN_NUM_THREADS``: unset/empty/"auto"/"0" -> None (every CPU), else a positive int."""
    if value is None or value.strip().lower() in ("", "auto", "0"):
        return None
    try:
        n = int(value)
    except ValueError:
        n = -1
    if n < 1:
        raise ValueError(f"{_ENV} must be a positive integer, 0 or 'auto', got {value!r}")
    return n


_cap: int | None = _parse_env(os.environ.get(_ENV))
_adaptive = True


def set_num_threads(n: int | None = None, adaptive: bool = True) -> None:
    """Let elman's BLAS calls use at most ``n`` threads (``None`` or 0: every CPU this process
    may use, the default; ``ELMAN_NUM_THREADS`` sets the same from the environment).

    ``adaptive`` (default True): use fewer when other processes keep CPUs busy, and one for
    GEMMs too small to gain from more. ``adaptive=False`` gives GEMMs large enough to profit
    exactly ``n`` threads whatever else runs (benchmarks on an idle machine want that).
    Without a cap, MPI ranks sharing a host each take their share of its CPUs
    (:func:`share_cpus`, applied by a distributed ``fit``).
    """
    global _cap, _adaptive
    if n is not None and (isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 0):
        raise ValueError(f"set_num_threads: n must be a positive integer, 0 or None (every "
                         f"CPU), got {n!r}")
    _adaptive = _validate.flag("set_num_threads: adaptive", adaptive)
    _cap = int(n) if n else None
    _monitor.grant = None
    _apply(granted())


def share_cpus(processes: int) -> None:
    """Unless a cap was set (:func:`set_num_threads`, ``ELMAN_NUM_THREADS``), cap this process
    at its share of the CPUs when ``processes`` processes of one job share them (MPI ranks on
    one host): ranks, not threads, then share the cores."""
    global _cap
    if _cap is None and processes > 1:
        _cap = max(1, available_cpus() // processes)
        _monitor.grant = None


def get_num_threads() -> int:
    """The most BLAS threads elman gives one GEMM (the cap of :func:`set_num_threads`)."""
    return _cap if _cap is not None else available_cpus()


# -- what other processes use -------------------------------------------------------------------

class _LoadMonitor:
    """CPU time used on our CPUs by everything except this process, over a recent window.

    Linux: the busy jiffies of our CPUs in ``/proc/stat`` (user, nice, system, irq, softirq and
    steal: a hypervisor's steal is a neighbour too) minus this process's CPU time
    (``time.process_time``, all its threads). Elsewhere: the 1-minute load average minus one
    (ourselves), a slower but still honest signal.

    A window opens at one reading and closes at the next, and covers only a stretch of our own
    work: when no layer has run for :data:`IDLE_GAP_SECONDS` (a pause, a data load, another
    program's turn), what the CPUs did meanwhile says nothing about the contention our work
    meets, so a new window opens at the next layer and the last decision stands until it
    closes, :data:`FIRST_WINDOW_SECONDS` later. A window in which this process used less than
    a quarter of a CPU is dropped for the same reason.
    """

    def __init__(self):
        self.tick = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
        self.linux = self._read() is not None
        self.sample = None              # the reading that opened the current window
        self.busy = 0.0                 # CPUs kept busy by others in the last closed window
        self.grant = None               # (valid until, threads): the policy's last decision
        self.seen = -math.inf           # when a layer last asked

    def restart(self) -> None:
        """Open a new window now (the old one spans time we were not computing)."""
        self.sample = self._read() if self.linux else None

    def _read(self):
        """(wall seconds, busy seconds on our CPUs, our own CPU seconds) or None."""
        try:
            cpus = {f"cpu{c}".encode() for c in os.sched_getaffinity(0)}
            busy = 0
            with open("/proc/stat", "rb") as f:
                for line in f:
                    fields = line.split()
                    if fields and fields[0] in cpus:
                        v = [int(x) for x in fields[1:9]]
                        busy += v[0] + v[1] + v[2] + v[5] + v[6] + v[7]  # not idle, not iowait
            return time.monotonic(), busy / self.tick, time.process_time()
        except (OSError, AttributeError, ValueError, IndexError):
            return None

    def measure(self):
        """Close the current window and open the next: CPUs busy elsewhere, or None when the
        window was unusable (the first one, or one in which we hardly computed)."""
        if not self.linux:
            try:
                self.busy = max(0.0, os.getloadavg()[0] - 1.0)
            except (AttributeError, OSError):
                self.busy = 0.0
            return self.busy
        old, new = self.sample, self._read()
        self.sample = new
        if old is None or new is None or new[0] <= old[0]:
            return None
        wall, own = new[0] - old[0], new[2] - old[2]
        if own < 0.25 * wall:
            return None                      # we were mostly idle: not a window of our work
        others = (new[1] - old[1]) - own
        self.busy = min(max(others / wall, 0.0), float(available_cpus()))
        return self.busy


_monitor = _LoadMonitor()


def granted() -> int:
    """The threads the policy gives a large GEMM now: the cap, less the CPUs that others kept
    busy in the last window (decided at most every :data:`SAMPLE_SECONDS`: layers ask at every
    call)."""
    now = time.monotonic()
    last = _monitor.grant
    _monitor.seen = now
    if last is not None and now < last[0]:
        return last[1]
    cap = get_num_threads()
    until = now + SAMPLE_SECONDS
    if not _adaptive or cap == 1:
        threads = cap
    else:
        busy = _monitor.measure()
        if busy is None:                     # a new window: the last decision stands a moment
            threads = cap if last is None else last[1]
            until = now + FIRST_WINDOW_SECONDS
        else:
            threads = max(1, min(cap, int(math.floor(available_cpus() - busy + 0.5))))
    _monitor.grant = (until, threads)
    return threads


def busy_elsewhere() -> float:
    """CPUs (of those we may use) that other processes kept busy in the last measured window."""
    granted()
    return _monitor.busy


def _work_starts() -> None:
    """A layer starts: after an idle gap, open a new window (see :class:`_LoadMonitor`).

    It counts as the layer asking (``seen``), as :func:`granted` does: calls whose GEMMs all
    run on one thread by themselves (a streaming caller's) never ask :func:`granted`, and
    without this each of them found an "idle gap" since the last large call and reopened the
    window, a read of ``/proc/stat`` (measured: 30 us calls became 85 us after
    ``set_num_threads(2)`` or any large call)."""
    now = time.monotonic()
    last = _monitor.grant
    if _adaptive and last is not None and now - _monitor.seen > IDLE_GAP_SECONDS:
        _monitor.restart()                   # the last decision stands a moment
        _monitor.grant = (now + FIRST_WINDOW_SECONDS, last[1])
    _monitor.seen = now


def gemm_threads(m: int, n: int, k: int) -> int:
    """Threads for an ``(m x k) @ (k x n)`` GEMM: :func:`granted`, but one more thread only per
    :data:`MIN_FLOPS_PER_THREAD` operations, or for one row (m = 1, a GEMV) per
    :data:`MIN_GEMV_ELEMENTS_PER_THREAD` elements of the matrix (adaptive policy only)."""
    _work_starts()
    threads = granted()
    if _adaptive and threads > 1:
        if m == 1:
            more = n * k // MIN_GEMV_ELEMENTS_PER_THREAD
        else:
            more = int(2.0 * m * n * k // MIN_FLOPS_PER_THREAD)
        threads = min(threads, 1 + more)
    return threads


# -- acting on the BLAS ---------------------------------------------------------------------

class _Blas:
    """The thread control of NumPy's own BLAS library (through threadpoolctl)."""

    def __init__(self):
        self.controllers = []
        try:
            from threadpoolctl import ThreadpoolController
        except ImportError:          # a core dependency; still, never fail a computation on it
            return
        libs = ThreadpoolController().select(user_api="blas").lib_controllers
        mine = [c for c in libs if _is_numpys(c.filepath)]
        self.controllers = mine or libs

    def set(self, n: int) -> None:
        # every time (about 0.2 us): other code (a threadpoolctl context) may have changed it
        for c in self.controllers:
            c.set_num_threads(n)


def _is_numpys(path: str | None) -> bool:
    """Whether a shared library ships inside NumPy's wheel (numpy.libs, .dylibs, .libs)."""
    if not path:
        return False
    root = os.path.dirname(os.path.dirname(os.path.realpath(np.__file__)))
    real = os.path.realpath(path)
    return real.startswith(os.path.join(root, "numpy")) and "blas" in os.path.basename(real).lower()


_blas: _Blas | None = None


def _apply(n: int) -> None:
    global _blas
    if _blas is None:
        _blas = _Blas()
    _blas.set(n)


class for_gemm:
    """``with for_gemm(m, n, k):`` runs the block's GEMMs of shape ``(m x k) @ (k x n)`` on
    :func:`gemm_threads` threads, then leaves BLAS at :func:`granted` for the whole-array GEMMs
    around it. (A class, not a generator: a layer enters one per call, and it must cost next
    to nothing beside a small layer's 0.2 ms step.)"""

    __slots__ = ("threads",)

    def __init__(self, m: int, n: int, k: int):
        # OpenBLAS runs a GEMM of m*n*k <= 4 * 65536 on one thread by itself
        # (GEMM_MULTITHREAD_THRESHOLD): leave the setting alone for those, switching costs more
        if _pinned:                   # inside concurrently(): BLAS stays at one thread
            self.threads = 0
        elif m * n * k <= _BLAS_OWN_SINGLE_THREAD_MNK:
            _work_starts()
            self.threads = None
        else:
            self.threads = gemm_threads(m, n, k)

    @property
    def one_thread(self) -> bool:
        """Whether the block's GEMMs run on one thread (pinned by :func:`concurrently`, small
        enough for OpenBLAS to keep to one, or granted one)."""
        return not self.threads or self.threads == 1

    def __enter__(self):
        if self.threads:
            if self.threads > 1:
                _rest_partner()
            _apply(self.threads)
        return self

    def __exit__(self, *exc):
        if self.threads:
            if self.threads > 1:
                _pool_used()
            _apply(granted())
        elif self.threads is None:
            _apply_new_grant()
        return False


def _apply_new_grant() -> None:
    """Leave BLAS at :func:`granted` after a block that did not change it: applied only when
    the policy has decided anew since it was last applied (at most every
    :data:`SAMPLE_SECONDS`). A streaming caller's one-step layer calls are each a few
    microseconds of GEMM; a BLAS call per call to re-set an unchanged count was a fair part of
    them."""
    global _applied_grant
    n = granted()
    if _blas is None or _monitor.grant is not _applied_grant:
        _apply(n)
        _applied_grant = _monitor.grant


_applied_grant = None          # the policy's decision (_monitor.grant) that _apply_new_grant set


#: the largest task :func:`concurrently` gives elman's spinning second thread (the pair's
#: partner), in floating-point operations of its GEMMs (a recurrent pass: its T steps'
#: ``2 rows K P``); a larger one goes to a thread pool's worker. Measured on the Intel Xeon
#: (training steps, float32, in one process, the two ways alternating, medians of 9, two
#: runs): where a task does 13-105 MFLOP the partner made the steps 1.01-1.07x as fast (LSTM
#: and GRU at (32, 50, 16, 64) 1.03-1.06x and 1.07x, two layers 1.05x and 1.04x, one
#: bidirectional layer 1.01-1.05x and 1.02x, the bidirectional RNN there 1.04-1.06x; the
#: RNN's row blocks at (64, 100, 32, 128) 1.02-1.05x (two layers 1.02x), at (32, 500, 32, 32)
#: 1.05x): the pool's two wake-ups, ~30 us each on this virtual machine, are a fair part of a
#: task of a millisecond or two. From ~200 MFLOP
#: they are 1-2 % of a task, and the partner lost where both directions of a bidirectional
#: layer write the halves of one array's rows (``timeloop.shares_states``): the RNN at (64,
#: 100, 32, 128) and (64, 100, 128, 256) 0.95-0.98x, GRU at (64, 100, 32, 128) 0.97-1.00x,
#: their loops 12-15 % slower in a forward pass right after a backward pass (not after a
#: forward, not with the pool, not with separate arrays; 64- and 4096-byte alignment of the
#: shared array did not help; cause not found). LSTM (64, 100, 32, 128) 1.00-1.01x either way.
PARTNER_MAX_FLOPS = 1.5e8


#: the largest task :func:`concurrently` gives the partner where the tasks are two row blocks'
#: passes of a layer (``timeloop._run_blocks``), each one compiled call where the cell fuses
#: (:mod:`elman.fast._block`), the blocks' rows apart (not the shared rows of two directions,
#: which lost above). Measured on the Intel Xeon, training steps at (64, 100, 32, 128), 310-420
#: MFLOP a block (float32, the same code with this limit at 1.5e8 and at 5e8 in alternating
#: processes, medians of 9-11 pairs): the LSTM 1.043x as fast on the partner, the
#: layer-normalised LSTM 1.035x, the GRU 1.056x, the LN-GRU 1.043x, two LSTM layers 1.022x
#: (nothing switched: 1.007x); at (64, 100, 128, 256), 1.7 GFLOP a block, the LSTM 0.996x
#: (two layers 1.001x), the GRU 0.987x (no limit at all against 1.5e8): the pool's hand-offs,
#: two wake-ups of ~30 us, and each block's setup on its own thread, under the GIL, cost a
#: few % of a pass of a few ms, and nothing of one of 10 or more.
ROW_BLOCKS_PARTNER_MAX_FLOPS = 5e8


def on_partner(flops: float | None, limit: float | None = None) -> bool:
    """Whether :func:`concurrently` gives a task of ``flops`` to the pair's partner (elman's
    second thread, which spins) rather than a thread pool's worker: up to ``limit`` floating-
    point operations (None: :data:`PARTNER_MAX_FLOPS`)."""
    limit = PARTNER_MAX_FLOPS if limit is None else limit
    return flops is not None and flops <= limit and fast.pair_supported()


def concurrently(first, second, *, layer: bool = True, flops: float | None = None,
                 ring: bool = False, partner_max: float | None = None) -> tuple:
    """``(first(), second())``, run at once: ``first`` on elman's second thread (the pair's
    partner, which spins for tasks: :meth:`elman.fast._pair.Partner.beside`, which says why;
    where it cannot run, a thread pool's worker), ``second`` on this one, with NumPy's BLAS at
    one thread (each caller's BLAS calls then run on the caller's own thread) and
    :class:`for_gemm` leaving it there; afterwards BLAS goes back to :func:`granted`. A
    ``first`` the partner has not claimed by the time ``second`` is done runs on this thread
    too. Both must spend their time in code that releases the GIL (compiled ``nogil`` loops,
    BLAS) or nothing is gained. An exception in either is raised here, after both have stopped
    (``second``'s if both fail).

    The whole of each task runs on one BLAS thread, not only its loops: a BLAS call on two
    threads just before would leave OpenBLAS's own worker thread spinning, waiting for more
    work, for about 0.1 s (2^28 cycles, its default ``OPENBLAS_THREAD_TIMEOUT``), and beside the
    two tasks on two cores it took a core's worth of time from them (measured: two directions'
    forward took 94 ms after a two-thread GEMM, 59 ms without it, 77 ms one after the other).
    ``layer``: a recurrent layer's blocks or directions, which :func:`matmul` then keeps clear
    of OpenBLAS's pool for :data:`LAYER_CONCURRENCY_SECONDS` (its own halves pass False).
    ``flops``: the GEMM work of the larger task; up to :data:`PARTNER_MAX_FLOPS` (or
    ``partner_max``: :func:`on_partner`) it goes to the partner (None: the pool). ``ring``:
    ``second`` takes a ``ring`` keyword, the partner's :class:`elman.fast._pair.Ring` for it to
    ring from compiled code (or None: nothing to ring), as
    :meth:`elman.fast._pair.Partner.beside` says."""
    global _layers_concurrent_until, _concurrent, _partner_spins_until
    if layer:
        _layers_concurrent_until = time.perf_counter() + LAYER_CONCURRENCY_SECONDS
    with one_blas_thread():
        with _pin_lock:
            _concurrent += 1
        try:
            if fast.pair_supported():
                pair = fast.pair()
                if on_partner(flops, partner_max):
                    try:                       # (elman's second thread, which spins)
                        return pair.partner().beside(first, second, ring)
                    finally:
                        _partner_spins_until = time.perf_counter() + pair.SPIN_SECONDS
                # a partner that spins from its last task would take the pool worker's core
                pair.rest_partner()
            future = _worker().submit(first)
            try:
                result = second(ring=None) if ring else second()
            except BaseException:
                wait([future])
                raise
            return future.result(), result
        finally:
            with _pin_lock:
                _concurrent -= 1


class one_blas_thread:
    """``with one_blas_thread():`` NumPy's BLAS at one thread for the block, whose own threads
    (:func:`concurrently`'s, the pair path's) share the cores; afterwards, once no such block
    is left on any thread, back to :func:`granted`. :func:`for_gemm` and :func:`matmul` leave
    it there meanwhile."""

    __slots__ = ()

    def __enter__(self):
        global _pinned
        with _pin_lock:             # (callers on several threads of their own: count exactly)
            _pinned += 1
            _apply(1)
        return self

    def __exit__(self, *exc):
        global _pinned
        with _pin_lock:
            _pinned -= 1
            if not _pinned:
                _apply(granted())
        return False


def matmul(a: np.ndarray, b: np.ndarray, out: np.ndarray | None = None,
           accumulate: bool = False) -> np.ndarray:
    """``a @ b`` for 2-D arrays (into ``out``, or a new array; ``accumulate``: added into
    ``out``, as :func:`one_thread_matmul` says) on the threads the policy grants,
    but on one thread pool at a time. While recurrent layers run their row blocks or
    directions on elman's two threads (:func:`concurrently` in the last
    :data:`LAYER_CONCURRENCY_SECONDS`), a product of :data:`SPLIT_MATMUL_MIN_FLOPS` or more
    runs as two halves of ``a``'s rows at once, one BLAS thread each, and a smaller one on one
    BLAS thread; otherwise, and while BLAS's workers still spin from elman's last multi-thread
    BLAS call (a time loop's per-step GEMMs on two threads, :class:`for_gemm`), on BLAS's own
    pool, which is then the cheaper choice. The whole-sequence GEMMs of the recurrent layers
    and elman's dense layers use it.

    Why: after a GEMM on two threads OpenBLAS's worker thread spins for about 0.1 s
    (:data:`POOL_SPIN_SECONDS`), and work that runs next on elman's two threads (a recurrent
    layer's row blocks or directions, the halves here) shares the two cores with it.
    Measured (LSTM (64, 100, 128, 256), one training step, a dense head of 64 units between
    forward and backward, 2 cores): 169 ms with the head on OpenBLAS's two threads, 120 ms
    with it as two halves here (the layer alone: 107 ms; the head alone took 7.5 and 9.1 ms).
    elman's worker thread waits on a lock, not spinning."""
    m, k = a.shape
    n = b.shape[1]
    if _pinned or m * n * k <= _BLAS_OWN_SINGLE_THREAD_MNK:     # one thread already
        return one_thread_matmul(a, b, out, accumulate)
    threads = gemm_threads(m, n, k)
    now = time.perf_counter()
    if threads > 1 and (m < 2 or now < _pool_spins_until or now >= _layers_concurrent_until):
        # BLAS's pool: no layer's threads to meet, or spinning anyway (or one row: a GEMV)
        _rest_partner()
        if accumulate:
            out += np.matmul(a, b)
        else:
            out = np.matmul(a, b, out=out)
        _pool_used()
        return out
    if threads < 2 or 2.0 * m * n * k < SPLIT_MATMUL_MIN_FLOPS:
        _apply(1)
        try:
            return one_thread_matmul(a, b, out, accumulate)
        finally:
            _apply(granted())
    if out is None:
        out = np.empty((m, n), np.result_type(a, b))
    half = (m + 1) // 2
    concurrently(lambda: one_thread_matmul(a[:half], b, out[:half], accumulate),
                 lambda: one_thread_matmul(a[half:], b, out[half:], accumulate), layer=False,
                 flops=2.0 * half * n * k)
    return out


def one_thread_matmul(a: np.ndarray, b: np.ndarray, out: np.ndarray | None = None,
                      accumulate: bool = False) -> np.ndarray:
    """``a @ b`` for a product that runs on the calling thread alone: on MKL's sequential GEMM
    where it takes it (``elman[mkl]`` installed, a large enough product, plain or transposed
    operands: :func:`elman.fast._mkl.product`, which says why), else on the compiled kernels' packed
    GEMM where it takes it (:func:`elman.fast._packed.product`), else NumPy's.

    ``accumulate=True``: ``out += a @ b`` (``out`` given), on MKL's GEMM with beta = 1 where it
    takes the product, else through a temporary. Why: a weight gradient is added into its
    ``Param.grad``; with beta = 1 the GEMM reads ``out`` once, as it writes it, and neither the
    temporary (a fresh array a product) nor the pass that adds it is needed (measured on one
    thread, an LSTM's ``dG^T X`` at (3200 x 1024)^T @ (3200 x 128): 6.54 ms with the temporary,
    6.24 with beta = 1, the product alone 6.22)."""
    if accumulate:
        if _mkl.enabled() and _mkl.product(a, b, out, accumulate=True):   # (it checks sizes)
            return out
        out += one_thread_matmul(a, b)
        return out
    if a.shape[0] * b.shape[1] * a.shape[1] >= _mkl.MIN_PRODUCT_MNK and a.dtype == b.dtype:
        target = np.empty((a.shape[0], b.shape[1]), a.dtype) if out is None else out
        if _mkl.enabled() and _mkl.product(a, b, target):
            return target
        if _packed.product(a, b, target):
            return target
        out = target
    return np.matmul(a, b, out=out)


def small_work_starts() -> None:
    """What :class:`for_gemm` does for GEMMs OpenBLAS keeps on one thread by itself (every
    GEMM of a call the caller has checked with :func:`one_thread_product`): no thread count to
    set, only the load monitor told that work starts. Without the object and the ``with``
    (a streaming caller's one-step call pays this at every call)."""
    if not _pinned:
        _work_starts()


def two_threads_free() -> bool:
    """Whether elman may run a sequence's steps on two threads of its own now
    (:mod:`elman.fast._pair`, whose threads spin and so must each have a core): not inside
    :func:`concurrently` (its two threads are busy) and the policy grants two or more (no
    neighbour keeps a CPU busy). BLAS's workers may still spin from elman's last
    multi-thread BLAS call (:data:`POOL_SPIN_SECONDS`, at most); waiting for them is no
    answer: the path taken meanwhile, the general one, would use them again and keep them
    spinning for as long as the calls come."""
    _work_starts()
    return not _pinned and granted() >= 2


def partner_core_free() -> bool:
    """Whether the pair's partner thread may use the second core now for work beside a
    caller's one-thread call (:class:`elman.fast._pair.CheckAside`): not inside
    :func:`concurrently` (both its threads are busy) and the policy grants two or more. Unlike
    :func:`two_threads_free`, a caller that holds BLAS to its own thread
    (:class:`one_blas_thread`, as the one-thread way of a batch of one does) leaves it free."""
    _work_starts()
    return not _concurrent and granted() >= 2


def pinned() -> bool:
    """Whether this moment is inside :func:`concurrently` (BLAS held to one thread)."""
    return bool(_pinned)


def one_thread_product(m: int, n: int, k: int) -> bool:
    """Whether an ``(m x k) @ (k x n)`` product runs on one BLAS thread whatever :func:`matmul`
    would decide (inside :func:`concurrently`, or small enough for OpenBLAS to keep to one):
    a caller may then use a cheaper binding of its own."""
    return bool(_pinned) or m * n * k <= _BLAS_OWN_SINGLE_THREAD_MNK


_pinned = 0                    # > 0 inside concurrently(): BLAS stays at one thread
_concurrent = 0                # > 0 inside concurrently() itself (not one_blas_thread alone)
_pin_lock = threading.Lock()


def _rest_partner() -> None:
    """Before a GEMM on BLAS's own pool with several threads: the partner that
    :func:`concurrently` ran a task on stops spinning for the next one (else one of BLAS's
    threads would share a core with it for up to its :data:`elman.fast._pair.SPIN_SECONDS`;
    the next :func:`concurrently` wakes it)."""
    global _partner_spins_until
    if _partner_spins_until and time.perf_counter() < _partner_spins_until:
        fast.pair().rest_partner()
    _partner_spins_until = 0.0


_partner_spins_until = 0.0     # until when the partner spins after concurrently's last task


def _worker():
    """The worker thread of :func:`concurrently` where elman's second thread cannot run
    (:func:`elman.fast.pair_supported`: no compiled path, or not an x86-64 CPU), started at its
    first use (and again in a forked child process, which inherits the executor but not its
    thread)."""
    global _executor, _executor_pid
    if _executor is None or _executor_pid != os.getpid():
        _executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="elman-loop")
        _executor_pid = os.getpid()
    return _executor


_executor: ThreadPoolExecutor | None = None
_executor_pid = None


def info() -> dict:
    """What the policy sees and does now (benchmarks print it)."""
    if _blas is None:
        _apply(granted())
    libs = [{"filepath": c.filepath, "internal_api": c.internal_api, "version": c.version,
             "architecture": getattr(c, "architecture", None), "num_threads": c.num_threads}
            for c in _blas.controllers]
    return {"cap": get_num_threads(), "adaptive": _adaptive, "available_cpus": available_cpus(),
            "busy_elsewhere": round(busy_elsewhere(), 2), "granted": granted(),
            "blas": libs, "platform": sys.platform}
