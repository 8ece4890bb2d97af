"""``gemm(A, B, C)``: ``C = A @ B`` from compiled code, through NumPy's own BLAS.

The time loops call a GEMM per step. numba's ``np.dot`` would reach BLAS through SciPy, whose
wheels bring a second OpenBLAS with a thread pool of its own; with both pools at 2 threads on 2
cores, the whole-sequence GEMMs (NumPy's pool) and the per-step GEMMs (SciPy's pool) slowed each
other down up to 5x (measured: the idle threads of one pool keep spinning while the other works).
So the kernels call the ``cblas_?gemm`` of the library NumPy itself is linked with, found here by
its exported name, and fall back to ``np.dot`` (SciPy) only where it cannot be found.

Binding by name (numba's ``ExternalFunction`` after ``llvmlite``'s ``load_library_permanently``)
keeps the compiled kernels cacheable: no address is baked into them.
"""
from __future__ import annotations

import ctypes
import glob
import os

import numpy as np
from numba import njit, types
from numba.extending import overload

__all__ = ["gemm", "gemm_acc", "source"]

# (symbol prefix, suffix, integer width) of the CBLAS names NumPy's wheels have shipped with:
# scipy-openblas64 (NumPy >= 2), openblas64_ (NumPy 1.22-1.26), plain 32-bit-integer CBLAS.
_NAMINGS = (("scipy_cblas_", "64_", 64), ("cblas_", "64_", 64), ("scipy_cblas_", "", 32),
            ("cblas_", "", 32))
_ROW_MAJOR, _NO_TRANS = 101, 111


def _numpy_blas_libraries():
    """Shared libraries shipped inside NumPy's wheel (``numpy.libs``, ``.dylibs``, ``.libs``)."""
    root = os.path.dirname(np.__file__)
    patterns = [os.path.join(root, "..", "numpy.libs", "*"), os.path.join(root, ".dylibs", "*"),
                os.path.join(root, ".libs", "*")]
    paths = []
    for pattern in patterns:
        paths += [p for p in sorted(glob.glob(pattern)) if "blas" in os.path.basename(p).lower()]
    return list(dict.fromkeys(os.path.realpath(p) for p in paths))


def _find_cblas():
    """(library path, prefix, suffix, int width) of NumPy's CBLAS, or None."""
    for path in _numpy_blas_libraries():
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        for prefix, suffix, width in _NAMINGS:
            if all(hasattr(lib, f"{prefix}{t}gemm{suffix}") for t in "sd"):
                return path, prefix, suffix, width
    return None


_found = _find_cblas()
#: where the per-step GEMMs go: "numpy-blas: <library>" or "scipy (numba np.dot)"
source = "scipy (numba np.dot)" if _found is None else f"numpy-blas: {os.path.basename(_found[0])}"


def gemm(A, B, C):
    """``C[...] = A @ B`` for 2-D arrays of one float dtype whose rows are contiguous (a row
    stride of their own is fine: column blocks of a wider array), in compiled code only."""
    np.matmul(A, B, out=C)


def gemm_acc(A, B, C):
    """``C += A @ B`` (BLAS with beta = 1: no temporary, C is read once, in the GEMM)."""
    C += A @ B


if _found is not None:
    import llvmlite.binding as llvm

    _path, _prefix, _suffix, _width = _found
    llvm.load_library_permanently(_path)
    _int = types.int64 if _width == 64 else types.int32

    def _external(t, ftype):
        ptr = types.CPointer(ftype)
        sig = types.void(types.int32, types.int32, types.int32, _int, _int, _int, ftype, ptr,
                         _int, ptr, _int, ftype, ptr, _int)
        return types.ExternalFunction(f"{_prefix}{t}gemm{_suffix}", sig)

    _sgemm = _external("s", types.float32)
    _dgemm = _external("d", types.float64)

    @njit(inline="always")
    def _ld(X):
        """Row stride in elements (BLAS's leading dimension). Rows may be strided (a block of
        columns: GX[t, :n, 2H:]); elements within a row may not. A length-1 axis may carry any
        stride in NumPy (it is never stepped over), so it decides nothing."""
        rows, cols = X.shape
        if rows == 1:
            return max(1, cols)
        assert cols == 1 or X.strides[1] == X.itemsize, "gemm: rows must be contiguous"
        return X.strides[0] // X.itemsize

    def _bind(beta):
        def typer(A, B, C):
            call = _sgemm if A.dtype == types.float32 else _dgemm
            f32 = A.dtype == types.float32
            one, b = (np.float32(1), np.float32(beta)) if f32 else (1.0, float(beta))

            def impl(A, B, C):
                m, k = A.shape
                n = B.shape[1]
                if m == 0 or n == 0:
                    return
                call(_ROW_MAJOR, _NO_TRANS, _NO_TRANS, m, n, k, one, A.ctypes, _ld(A),
                     B.ctypes, _ld(B), b, C.ctypes, _ld(C))
            return impl
        return typer

    overload(gemm)(_bind(0))
    overload(gemm_acc)(_bind(1))
else:
    @overload(gemm)
    def _gemm_impl(A, B, C):
        def impl(A, B, C):
            if A.shape[0] > 0:
                C[:, :] = np.dot(np.ascontiguousarray(A), np.ascontiguousarray(B))
        return impl

    @overload(gemm_acc)
    def _gemm_acc_impl(A, B, C):
        def impl(A, B, C):
            if A.shape[0] > 0:
                C[:, :] += np.dot(np.ascontiguousarray(A), np.ascontiguousarray(B))
        return impl


@njit
def _check(A, B, C, accumulate):
    """Used by the tests: ``gemm``/``gemm_acc`` through the compiled binding."""
    if accumulate:
        gemm_acc(A, B, C)
    else:
        gemm(A, B, C)
