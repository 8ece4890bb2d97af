"""MKL's packed GEMM for the per-step recurrent GEMM (``pip install "elman[mkl]"``, optional).

At every step the time loops multiply the batch's states by the same matrix, ``h @ W_hh^T``.
A BLAS GEMM first copies ("packs") both operands into the blocked layout its inner kernel
reads; OpenBLAS repacks ``W_hh`` at every one of the T steps. MKL can pack a matrix once
(``cblas_?gemm_pack``) and then multiply by it any number of times (``cblas_?gemm_compute``
with ``CblasPacked``). Measured on one thread (``benchmarks/bench_step_gemm.py``): the per-step
GEMM of an LSTM at H = 512 ran at 81 GFLOP/s per thread packed, 56 with OpenBLAS.

Used only where the per-step GEMM runs on one thread (a direction of a bidirectional layer
beside the other, a block of a unidirectional layer's rows beside the other,
:func:`elman.timeloop.split_rows`, or a GEMM the thread policy gives one thread): on two
threads, OpenBLAS splitting one GEMM still wins over one packed thread. MKL is loaded with its sequential
threading layer, so it brings no thread pool of its own (two pools on two cores slowed each
other down up to 5x here, see :mod:`._blas`).

:func:`pack` returns the packed matrix as a 1-D array of the weights' dtype; the kernels'
``gemm``/``gemm_acc`` (:mod:`._blas`) take it, with :func:`compute_address`, in the form
:func:`elman.fast.packed_operand` makes, and call ``cblas_?gemm_compute`` through that
address. The packed form is a copy: it is made afresh for every pass (a forward
or a backward; into the buffer of the pass before where one is kept, see :func:`pack`), so
weights changed in place between calls are always seen.

On by default on Intel CPUs only (:data:`DEFAULT_ON`: on an AMD EPYC OpenBLAS's own GEMM
was the faster one). ``ELMAN_MKL=0``/``1`` in the environment switches it off/on for the
process; :func:`use` for a block.
"""
from __future__ import annotations

import ctypes
import glob
import os
import sys

import numpy as np

from .._switch import Switch
from . import _cpu

__all__ = ["library", "available", "DEFAULT_ON", "enabled", "use", "set_enabled",
           "large_enough", "pack", "compute_address", "gemm_address", "worth", "product"]

_ROW_MAJOR, _NO_TRANS, _TRANS, _B_MATRIX = 101, 111, 112, 162
_SEQUENTIAL = 1                # MKL_THREADING_SEQUENTIAL for MKL_Set_Threading_Layer
_ALIGN = 64                    # bytes: the packed buffer starts on a cache line

#: the least number of steps for which packing pays: packing is one pass over ``W_hh``, like
#: one step's GEMM reading it, so a one- or two-step call (a streaming caller) gains nothing
MIN_STEPS = 4
#: the smallest matrix (K x P elements) worth packing. Measured on one thread, a layer's
#: training step with the packed GEMM against OpenBLAS's (medians of 15): H = 32 and 64 (at
#: most 16,384 elements for an LSTM) 0.59-1.04x, mostly slower: MKL's call costs more than
#: OpenBLAS's small-matrix path saves; from 49,152 (GRU, H = 128) 1.0-1.34x
MIN_ELEMENTS = 32768


def library() -> str | None:
    """The path of ``libmkl_rt`` (the ``mkl`` wheel puts it in ``<prefix>/lib``), or None."""
    for prefix in dict.fromkeys((sys.prefix, sys.base_prefix)):
        found = sorted(glob.glob(os.path.join(prefix, "lib", "libmkl_rt.so*")))
        if found:
            return found[0]
    return None


_path = library()
#: True when MKL's runtime library is installed (it is loaded at the first :func:`pack`)
available = _path is not None
#: whether MKL is on by default here: on an Intel CPU (or one whose vendor cannot be read), not
#: on others. Measured on an AMD EPYC (OpenBLAS running its SkylakeX kernels), one thread: the
#: per-step GEMM packed by MKL ran 0.75-0.83x as fast as OpenBLAS's own at H = 512 (0.77-1.18x
#: at H = 64-256), the input projections 0.76-0.95x; through a layer
#: (``benchmarks/results/mkl-epyc.md``, one process, medians of 5), MKL's way against
#: OpenBLAS's at (64, 100, 32, 128), (64, 100, 128, 256) and (128, 200, 256, 512), every cell,
#: one layer and bidirectional: 0.85-1.00x in training, 0.73-1.01x in inference. On the Intel
#: Xeon of earlier rounds MKL's packed GEMM ran 81 GFLOP/s against OpenBLAS's 56.
#: ``ELMAN_MKL=1`` switches it on anywhere, ``ELMAN_MKL=0`` off.
DEFAULT_ON = _cpu.INTEL
_switch = Switch("ELMAN_MKL", available, default=DEFAULT_ON)
_lib = None

#: ``enabled()``: whether the loops may use MKL's packed GEMM (installed and not switched off);
#: ``set_enabled(flag)`` for the process (returns the previous setting); ``with use(False):``
#: for a block (OpenBLAS's GEMM only)
enabled, set_enabled, use = _switch.enabled, _switch.set_enabled, _switch.use


def large_enough(steps: int, rows: int, elements: int) -> bool:
    """Whether a pass of ``steps`` steps of ``rows`` rows through a matrix of ``elements`` is
    large enough to pack it: enough steps to pay for the packing, a batch (one row is a
    matrix-vector product, which OpenBLAS's GEMV runs well) and a matrix large enough
    (:data:`MIN_ELEMENTS`)."""
    return rows > 1 and steps >= MIN_STEPS and elements >= MIN_ELEMENTS


def worth(steps: int, rows: int, elements: int) -> bool:
    """Whether such a pass should pack its matrix (the caller has checked that its GEMM runs
    on one thread): :func:`large_enough`, and MKL on."""
    # (the sizes first: a streaming call stops at them)
    return large_enough(steps, rows, elements) and _switch.enabled()


def _load():
    """libmkl_rt, sequential, with the pack and GEMM functions typed (the compiled kernels
    call its compute functions through their addresses, :func:`compute_address`)."""
    global _lib
    if _lib is None:
        lib = ctypes.CDLL(_path)
        lib.MKL_Set_Threading_Layer.argtypes = [ctypes.c_int]
        lib.MKL_Set_Threading_Layer(_SEQUENTIAL)      # before any computation: no thread pool
        for t, c_float in (("s", ctypes.c_float), ("d", ctypes.c_double)):
            size = getattr(lib, f"cblas_{t}gemm_pack_get_size")
            size.restype, size.argtypes = ctypes.c_size_t, [ctypes.c_int] * 4
            pack_fn = getattr(lib, f"cblas_{t}gemm_pack")
            pack_fn.restype = None
            pack_fn.argtypes = [ctypes.c_int] * 6 + [c_float, ctypes.c_void_p, ctypes.c_int,
                                                     ctypes.c_void_p]
        for t, c_float in (("s", ctypes.c_float), ("d", ctypes.c_double)):
            gemm_fn = getattr(lib, f"cblas_{t}gemm")
            gemm_fn.restype = None
            gemm_fn.argtypes = [ctypes.c_int] * 6 + [c_float, ctypes.c_void_p, ctypes.c_int,
                                                     ctypes.c_void_p, ctypes.c_int, c_float,
                                                     ctypes.c_void_p, ctypes.c_int]
        _lib = lib
    return _lib


def pack(W: np.ndarray, transpose: bool, rows: int,
         into: np.ndarray | None = None) -> np.ndarray:
    """MKL's packed form of the GEMM operand ``B = W.T`` (``transpose``) or ``B = W``, for
    products ``A @ B`` with up to ``rows`` rows of ``A``: a 1-D array of ``W``'s dtype that
    :func:`elman.fast._blas.gemm` accepts in place of ``B``. ``W`` is a 2-D float32/float64
    array with contiguous rows (a row block of a weight matrix is fine). Written into ``into``
    (what an earlier call returned, for the same shapes) where it is of the size this one
    needs, else into a new array.

    Why ``into``: MKL asks for far more room than the matrix (10.5 MB for a 1024 x 256
    ``W_hh^T`` and 32 rows), and NumPy gives an array of 4 MB or more transparent huge pages
    (``madvise``); a fresh one at every pass then faulted its huge pages in at first touch,
    and where the kernel had to compact memory for them the pass stalled: 5.6-6.8 ms a pack,
    in some processes at most steps, against 0.1-0.6 (two LSTM layers at (64, 100, 128,
    256), training, measured per call)."""
    lib = _load()
    t = "s" if W.dtype == np.float32 else "d"
    if W.dtype not in (np.float32, np.float64) or W.ndim != 2 or \
            (W.shape[1] > 1 and W.strides[1] != W.itemsize):
        raise ValueError(f"pack: W must be a 2-D float32/float64 array with contiguous rows, "
                         f"got {W.dtype} {W.shape} strides {W.strides}")
    k, n = (W.shape[1], W.shape[0]) if transpose else W.shape
    size = getattr(lib, f"cblas_{t}gemm_pack_get_size")(_B_MATRIX, rows, n, k)
    size = -(-size // W.itemsize) * W.itemsize           # whole elements
    if into is not None and into.dtype == W.dtype and into.nbytes == size:
        packed = into
    else:
        raw = np.empty(size + _ALIGN, np.uint8)
        start = -raw.ctypes.data % _ALIGN
        packed = raw[start:start + size].view(W.dtype)
    ld = max(1, W.strides[0] // W.itemsize if W.shape[0] > 1 else W.shape[1])
    getattr(lib, f"cblas_{t}gemm_pack")(_ROW_MAJOR, _B_MATRIX, _TRANS if transpose else _NO_TRANS,
                                        rows, n, k, 1.0, W.ctypes.data, ld, packed.ctypes.data)
    return packed


def gemm_address(dtype) -> int:
    """The address of MKL's ``cblas_sgemm`` (float32) or ``cblas_dgemm`` (float64), for
    compiled code (:func:`elman.fast._blas.gemm_at`); 0 where MKL is off or missing, or for
    another dtype."""
    name = {np.dtype(np.float32): "cblas_sgemm",
            np.dtype(np.float64): "cblas_dgemm"}.get(np.dtype(dtype))
    if name is None or not _switch.enabled():
        return 0
    return ctypes.cast(getattr(_load(), name), ctypes.c_void_p).value


def compute_address(dtype) -> int:
    """The address of MKL's ``cblas_sgemm_compute`` (float32) or ``cblas_dgemm_compute``
    (float64): the compiled GEMM (:mod:`._blas`) calls it through this address, which it takes
    at run time with the packed matrix (:func:`elman.fast.packed_operand`)."""
    name = {np.dtype(np.float32): "cblas_sgemm_compute",
            np.dtype(np.float64): "cblas_dgemm_compute"}.get(np.dtype(dtype))
    if name is None:
        raise ValueError(f"compute_address: dtype must be float32 or float64, got {dtype}")
    return ctypes.cast(getattr(_load(), name), ctypes.c_void_p).value


#: the smallest one-thread product (m * n * k) :func:`product` takes: below it the ctypes call
#: (a few microseconds) costs more than MKL saves
MIN_PRODUCT_MNK = 1 << 20


def _layout(x: np.ndarray) -> tuple | None:
    """``(transpose flag, leading dimension)`` of a 2-D operand as CBLAS reads it in row-major
    order: rows of contiguous elements (a C-contiguous array or a block of its columns), or the
    transpose of such an array (``W.T``, ``dG[:, :k].T``); None for any other layout."""
    item = x.itemsize
    (rows, cols), (s0, s1) = x.shape, x.strides
    if s1 == item and s0 % item == 0 and s0 >= cols * item:
        return _NO_TRANS, max(1, s0 // item)
    if s0 == item and s1 % item == 0 and s1 >= rows * item:
        return _TRANS, max(1, s1 // item)
    return None


def product(a: np.ndarray, b: np.ndarray, out: np.ndarray, accumulate: bool = False) -> bool:
    """``out[...] = a @ b`` (``accumulate``: ``out += a @ b``, BLAS's beta = 1) on MKL's
    (sequential) GEMM, for a caller whose product runs on one
    thread; True if done, False (nothing written) where it does not apply: MKL off or
    missing, a product below :data:`MIN_PRODUCT_MNK`, dtypes other than one float32/float64,
    ``out`` not in rows of contiguous elements, or ``a`` or ``b`` neither that nor the
    transpose of such an array (:func:`_layout`).

    Why: on one thread MKL ran the products with a plain ``a`` 1.0-1.6x as fast as OpenBLAS
    (the input projection ``X @ W_ih^T`` at (3200 x 32) @ (32 x 512): 91 against 58 GFLOP/s;
    ``dX = dG @ W_ih`` at (3200 x 512) @ (512 x 32): 85 against 59). Those whose ``a`` is a
    transpose (the weight gradients ``dG^T @ X``) ran at 0.87-1.12x on the Intel Xeon of
    earlier rounds (a median of 0.93x), and were left to OpenBLAS there; on the Intel Xeon
    (Sapphire Rapids) of 2026-12-06 they ran at 1.00-1.23x (two threads at once, one product
    each, as two row blocks run them: ``(dG^T @ X, dG^T @ H)`` of a block at H = 64-512, RNN,
    GRU and LSTM shapes, medians of 11 alternating repeats; 1.11x at the LSTM's (3200 x 1024)^T
    @ (3200 x 128 and 256)), so MKL takes them too. Through a layer's row blocks, RNN, GRU
    and LSTM at (64, 100, 32, 128) and (64, 100, 128, 256), plain ``a`` only: inference
    1.01-1.11x, training 0.96-1.06x (A/B in one process, medians of 7)."""
    if not _switch.enabled():
        return False
    (m, k), n = a.shape, b.shape[1]
    dtype = a.dtype
    if m * n * k < MIN_PRODUCT_MNK or dtype not in (np.float32, np.float64) or \
            b.dtype != dtype or out.dtype != dtype or out.shape != (m, n):
        return False
    layouts = _layout(a), _layout(b), _layout(out)
    if None in layouts or layouts[2][0] != _NO_TRANS:
        return False
    (transpose_a, ld_a), (transpose_b, ld_b), (_, ld_out) = layouts
    lib = _load()
    getattr(lib, "cblas_sgemm" if dtype == np.float32 else "cblas_dgemm")(
        _ROW_MAJOR, transpose_a, transpose_b, m, n, k, 1.0, a.ctypes.data, ld_a,
        b.ctypes.data, ld_b, 1.0 if accumulate else 0.0, out.ctypes.data, ld_out)
    return True
