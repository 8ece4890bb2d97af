"""The fast path: the recurrent time loops compiled with numba (``pip install "elman[fast]"``).

The NumPy step functions in :mod:`elman.cells` are the reference. When numba is installed,
:mod:`elman.timeloop` runs each layer's
time loop as one compiled function instead: per step the same GEMM, then the gate math fused into
one pass over each row (no temporaries, a SIMD tanh), with no Python between steps. The input
projection and the weight-gradient GEMMs stay whole-sequence NumPy calls, shared by both paths.
The tests require both paths to agree (float32 to 1e-5, float64 to 1e-12) and both to match
PyTorch.

Covered: every cell variant (``RNN`` tanh/relu, ``GRU`` with either candidate, ``LSTM`` with
or without ``proj_size`` or peepholes, ``layer_norm=True`` on all three), with
``recurrent_dropout`` and ``zoneout``, float32 and float64, every layout, lengths and direction. A cell
names its kernel module itself (``CellEquations.kernel``); a cell without one runs its NumPy
steps even with the fast path on, and a :class:`FastPathWarning` says so (once per cell class).
Compiled code is cached on disk (numba's cache, ``__pycache__`` next to the sources), so only the
first run on a machine pays for compilation: 1-6 s per kernel (a cell's forward or backward
loop, a stack's lean call), once per dtype. Everything else is an argument tested at run
time and compiles nothing more: the options (recurrent dropout, zoneout, a projection:
``_loop.absent``), the form of the per-step matrix (as it is or transposed, MKL's packed
form, the kernels' own panels: :func:`matrix_operand`); a stack run as one call compiles once
for each of 2, 3-4 and 5-8 layer-directions (``timeloop.STACK_MAX``). A cached kernel is
keyed by the sources of this whole package (:mod:`._cache`), not only its own file: a change
to a helper (``_blas.py``, ``_loop.py``, ``_math.py``, ...) compiles every kernel afresh.

>>> import elman
>>> with elman.fast.use(False):           # the NumPy reference path, for this block only
...     elman.fast.enabled()
False

``ELMAN_FAST=0`` in the environment switches the fast path off for the whole process.
"""
from __future__ import annotations

import importlib
import importlib.util
import warnings

import numpy as np

from .._switch import Switch

__all__ = ["available", "enabled", "set_enabled", "use", "kernels_for", "kernels_named",
           "project_input", "matrix_operand", "packed_operand", "empty", "MATRIX", "PACKED",
           "FastPathWarning"]

#: True when numba can be imported (checked without importing it). The per-step GEMMs call the
#: BLAS NumPy is linked with (``_blas.source`` says which); where that cannot be found they go
#: through numba's ``np.dot``, which needs SciPy.
available = importlib.util.find_spec("numba") is not None

_switch = Switch("ELMAN_FAST", available)   # ELMAN_FAST=0: off for the process


_FLOATS = (np.dtype(np.float32), np.dtype(np.float64))


class FastPathWarning(UserWarning):
    """The fast path is on, but a cell has no compiled kernel: its layers run the NumPy steps."""


_warned: set = set()           # cell classes already reported


#: ``enabled()``: whether the recurrent layers use the compiled loops (needs :data:`available`);
#: ``set_enabled(flag)`` switches them on or off for the process (returns the previous
#: setting); ``with use(False): ...`` runs a block on the reference (NumPy) path
enabled, set_enabled, use = _switch.enabled, _switch.set_enabled, _switch.use


def kernels_for(eq, dtype):
    """The kernel module (``forward``/``backward``) the cell ``eq`` names in its ``kernel``, or
    None when the reference path must run: fast path off or unavailable, a dtype other than
    float32/float64, or a cell without a kernel (then with a :class:`FastPathWarning`, once
    per cell class: the fallback is deliberate but never silent)."""
    if not enabled() or np.dtype(dtype) not in _FLOATS:
        return None
    name = getattr(eq, "kernel", None)
    if name is None:
        if type(eq) not in _warned:
            _warned.add(type(eq))
            warnings.warn(f"{type(eq).__name__} has no compiled kernel (its ``kernel`` is None): "
                          f"its layers run the NumPy reference steps; elman.fast.use(False) "
                          f"asks for that explicitly", FastPathWarning, stacklevel=3)
        return None
    return kernels_named(name)


def project_input(X2, W, out):
    """``out[...] = X2 @ W.T`` in compiled code (:func:`elman.fast._loop.project_input`); only
    when :func:`enabled`. (numba is imported at the first call, not with elman; from then on
    this name is the compiled function itself, one Python call less per layer call.)"""
    global project_input
    project_input = kernels_named(f"{__name__}._loop").project_input
    project_input(X2, W, out)


#: the kinds of per-step matrix a kernel's GEMM takes (the fourth item of a
#: :func:`matrix_operand`): the matrix itself, or a packed form of it with the function that
#: multiplies by it (:func:`packed_operand`)
MATRIX, PACKED = 0, 1


def empty(dtype, ndim: int, writeable: bool = True) -> np.ndarray:
    """A shared empty ``ndim``-dimensional array of ``dtype``: what a kernel takes for an
    operand it does not use (tested at run time, :func:`elman.fast._loop.absent`). Writeable
    (numba types a read-only array apart: one compiled specialization more), and nothing can
    be written into it; read-only where it stands in for a read-only array (see
    :func:`packed_operand`)."""
    key = (np.dtype(dtype), ndim, writeable)
    array = _EMPTY.get(key)
    if array is None:
        array = np.empty((0,) * ndim, dtype)
        array.flags.writeable = writeable
        _EMPTY[key] = array
    return array


_EMPTY: dict = {}           # (dtype, ndim, writeable) -> the array empty() hands out


def matrix_operand(B: np.ndarray) -> tuple:
    """``B`` (2-D, C-contiguous or the transpose of such an array) in the one form the
    kernels' GEMM (:func:`elman.fast._blas.gemm`) takes for a per-step matrix, whatever it
    is: the tuple ``(M, transposed, packed, kind, compute)``, here ``kind`` :data:`MATRIX`,
    ``M`` C-contiguous, ``B = M.T`` where ``transposed`` (the GEMM's transpose flag, chosen at
    run time), ``packed`` empty and ``compute`` 0; :func:`packed_operand` makes the packed
    kind.

    Why one form: numba compiles a kernel once per type of each argument, and a per-step
    matrix comes as ``W_hh.T`` (a transposed view: one row, a short pass), a contiguous copy,
    MKL's packed buffer or the kernels' own panels (:func:`elman.timeloop._step_operand`);
    each was a compiled specialization of every kernel of its own (five of each loop in one run
    of the tests, 2-6 s each). As one type, each kernel compiles once per dtype, and which
    product runs is decided at run time (a test a step).

    >>> W = np.ones((4, 3), np.float32)
    >>> [(M.shape, transposed) for M, transposed, *_ in (matrix_operand(W), matrix_operand(W.T))]
    [((4, 3), False), ((4, 3), True)]
    """
    if B.flags.c_contiguous:
        M, transposed = B, False
    elif B.T.flags.c_contiguous:
        M, transposed = B.T, True
    else:
        raise ValueError(f"matrix_operand: B must be C-contiguous or the transpose of a "
                         f"C-contiguous array, got strides {B.strides} for shape {B.shape}")
    return M, transposed, empty(B.dtype, 1), MATRIX, 0


def packed_operand(packed: np.ndarray, compute: int, of: np.ndarray | None = None) -> tuple:
    """A packed per-step matrix in :func:`matrix_operand`'s form (``kind`` :data:`PACKED`):
    ``packed`` MKL's buffer (:func:`elman.fast._mkl.pack`) or the kernels' own panels
    (:func:`elman.fast._packed.pack`, flattened), ``compute`` the address of the C function,
    with the signature of MKL's ``cblas_?gemm_compute``, that multiplies by it (MKL's own,
    :func:`elman.fast._mkl.compute_address`; the micro-kernel's,
    :func:`elman.fast._packed.compute_address`). An address is a run-time value: the kernels
    stay cacheable, and compile without MKL. ``of``: the matrix packed; where it is read-only
    (:func:`elman.freeze`), so is the form's unused matrix slot, as a :func:`matrix_operand`
    of it would hold it: a stack's operands of one kind (packed for one layer, the matrix
    itself for another) then stay of one numba type."""
    if not isinstance(compute, int) or compute == 0:
        raise ValueError(f"packed_operand: compute must be the address of the function that "
                         f"multiplies by the packed matrix, got {compute!r}")
    writeable = of is None or of.flags.writeable
    return empty(packed.dtype, 2, writeable), False, packed.reshape(-1), PACKED, compute


def pair():
    """:mod:`elman.fast._pair`, imported at its first use (it imports numba); found once
    (:func:`kernels_named`), as every pair call asks for it."""
    return kernels_named(f"{__name__}._pair")


def pair_supported() -> bool:
    """Whether a sequence's steps may run on two threads here (:mod:`elman.fast._pair`; the
    rules in :mod:`elman.timeloop` decide which calls): the fast path on, an x86-64 CPU (the
    spin loops' ``pause``) and NumPy's BLAS found (the kernels' own matrix-vector products live
    beside its binding). Measured on an AMD EPYC and an Intel Xeon: on the Xeon, batch 1
    (1, 50, 32, 256), no-grad, the GRU ran 1.6-1.8x and the LSTM 1.1-1.8x as fast with it."""
    global _pair_machine
    if not enabled():                  # (first: without numba, _pair cannot be imported)
        return False
    if _pair_machine is None:
        _pair_machine = pair().SUPPORTED \
            and hasattr(kernels_named(f"{__name__}._blas"), "_gemv_rows")
    return _pair_machine


_pair_machine = None           # pair_supported's answer for this machine, found once


def kernels_named(name: str):
    """The kernel module ``name`` (``"elman.fast.lstm"``): a module of this package, as a cell's
    ``kernel`` names it; a forward pass records the name, its backward looks it up here."""
    module = _kernel_modules.get(name)
    if module is None:
        if not isinstance(name, str) or not name.startswith(f"{__name__}.") \
                or importlib.util.find_spec(name) is None:
            raise ValueError(f"no elman.fast kernel module named {name!r}")
        module = _kernel_modules[name] = importlib.import_module(name)
    return module


_kernel_modules: dict = {}     # name -> module, found once (layers look theirs up at every call)
