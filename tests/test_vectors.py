"""The kernels' sixteen-float vectors (:mod:`elman.fast._vectors`): the function attribute reaches
the compiled code of the functions that ask for it, and of the time loops through
``_loop.step_at``, where the CPU has AVX-512, and nowhere else."""
import numpy as np
import pytest

pytest.importorskip("numba")

from numba import njit  # noqa: E402

from elman.fast import _cpu, _loop, _vectors  # noqa: E402
from elman.fast._vectors import ATTRIBUTE, wide_vectors  # noqa: E402


@njit(inline="always")
def _scale(a, b):
    """a = a * b + 1, inlined into its callers (the loop is theirs)."""
    for k in range(a.shape[0]):
        a[k] = a[k] * b[k] + 1.0


def _compiled(asks: bool):
    """A fresh compiled ``a = a * b + 1`` (compiled at its first call, so after any
    monkeypatch), calling ``wide_vectors()`` first if ``asks``; called once on float32 ones
    and twos, checked, and returned."""
    if asks:
        def scale(a, b):
            wide_vectors()
            _scale(a, b)
    else:
        def scale(a, b):
            _scale(a, b)
    function = njit(scale)
    a = np.ones(64, np.float32)
    function(a, np.full(64, 2.0, np.float32))
    np.testing.assert_array_equal(a, np.full(64, 3.0, np.float32))
    return function


def _llvm(function) -> str:
    """The LLVM IR of ``function``'s one compiled signature."""
    (ir,) = function.inspect_llvm().values()
    return ir


def test_the_attribute_reaches_the_function_that_asks_for_it():
    assert (ATTRIBUTE in _llvm(_compiled(asks=True))) == _cpu.AVX512
    assert ATTRIBUTE not in _llvm(_compiled(asks=False))


def test_a_time_loop_gets_it_through_step_at():
    """Every compiled time loop reads its steps with ``step_at``, an ``inline="always"``
    helper: the attribute lands on the loop that inlines it, not on a helper of its own."""
    @njit
    def loop(schedule, out):
        for s in range(schedule.shape[0]):
            t, p, q, n = _loop.step_at(schedule, s)
            out[t] = p + q + n

    schedule = np.array([[0, 0, 1, 2], [1, 1, 0, 2]], np.int64)
    out = np.zeros(2, np.int64)
    loop(schedule, out)
    np.testing.assert_array_equal(out, [3, 3])
    assert (ATTRIBUTE in _llvm(loop)) == _cpu.AVX512


@pytest.mark.skipif(not _cpu.AVX512, reason="the CPU has no AVX-512")
def test_sixteen_float_vectors_in_the_code():
    """Where the CPU has AVX-512, the element-wise loop that asks runs on zmm registers, more
    than the same loop that does not."""
    (wide,) = _compiled(asks=True).inspect_asm().values()
    (narrow,) = _compiled(asks=False).inspect_asm().values()
    assert wide.count("zmm") > narrow.count("zmm")


def test_no_attribute_where_the_cpu_has_no_avx512(monkeypatch):
    """The codegen reads :data:`_vectors.AVX512` when it compiles a caller: on a CPU without
    AVX-512 the function stays as LLVM would make it (checked here on any CPU)."""
    monkeypatch.setattr(_vectors, "AVX512", False)
    assert ATTRIBUTE not in _llvm(_compiled(asks=True))
    monkeypatch.setattr(_vectors, "AVX512", True)
    assert ATTRIBUTE in _llvm(_compiled(asks=True))
