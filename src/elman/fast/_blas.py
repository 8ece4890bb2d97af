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
from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic, overload
from numba.np.numpy_support import as_dtype

from . import _cache  # noqa: F401  (before the decorators: the cache keyed by the package)
from . import MATRIX, _cpu
from ._vectors import wide_vectors

__all__ = ["gemm", "gemm_acc", "gemm_at", "source"]

# (symbol prefix, suffix, integer width) of the CBLAS names NumPy's wheels have shipped with:
# scipy-openblas64 (NumPy >= 2), openblas64_ (NumPy 1.22-1.26), plain 32-bit-integer CBLAS.
_NAMINGS = (("scipy_cblas_", "64_", 64), ("cblas_", "64_", 64), ("scipy_cblas_", "", 32),
            ("cblas_", "", 32))
_ROW_MAJOR, _NO_TRANS, _TRANS, _PACKED = 101, 111, 112, 151    # CBLAS's enum values


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
    stride of their own is fine: column blocks of a wider array), in compiled code only.
    ``B`` may also be the transpose of such an array (numba's 'F' layout, e.g. ``W[:K].T``):
    BLAS then reads it through its transpose flag, and nobody makes a transposed copy (which,
    for a short sequence, costs more than all its steps); or a per-step matrix in the one
    form :func:`elman.fast.matrix_operand` and :func:`elman.fast.packed_operand` make, whose
    kind is read at run time: the matrix (BLAS's transpose flag chosen then) or a packed form
    of it, multiplied by the function whose address it carries (MKL's
    ``cblas_?gemm_compute``, or, float32, the kernels' own micro-kernel,
    :func:`elman.fast._microkernel.compute`)."""
    np.matmul(A, B, out=C)


def gemm_acc(A, B, C):
    """``C += A @ B`` (BLAS with beta = 1: no temporary, C is read once, in the GEMM)."""
    C += A @ B


@intrinsic
def _compute_at(typingctx, address, m, n, k, a, lda, b, beta, c, ldc):
    """``C = A @ B + beta C`` by the function at ``address`` (an integer), which has the
    signature of MKL's ``cblas_?gemm_compute`` (MKL's own, or the micro-kernel's:
    :func:`elman.fast.packed_operand`): ``B`` the packed (k x n) matrix at ``b``, row-major
    ``A`` at ``a`` and ``C`` at ``c`` (addresses, leading dimensions ``lda``, ``ldc``). A call
    through a run-time address, not a symbol the linker resolves: a kernel compiles, and
    loads from numba's cache, without MKL, holds no address of its own, and does not carry
    the micro-kernel's code."""
    sig = types.void(address, m, n, k, a, lda, b, beta, c, ldc)

    def codegen(context, builder, signature, args):
        address, m, n, k, a, lda, b, beta, c, ldc = args
        i32 = ir.IntType(32)
        real = context.get_value_type(signature.args[7])
        ptr = real.as_pointer()
        ftype = ir.FunctionType(ir.VoidType(), [i32] * 6 + [ptr, i32, ptr, i32, real, ptr, i32])

        def mkl_int(v):                   # MKL_INT: 32-bit (the LP64 interface, libmkl_rt's)
            return builder.trunc(v, i32) if v.type.width > 32 else builder.sext(v, i32)

        def pointer(v):
            return builder.inttoptr(v, ptr)

        const = [ir.Constant(i32, v) for v in (_ROW_MAJOR, _NO_TRANS, _PACKED)]
        builder.call(builder.inttoptr(address, ftype.as_pointer()),
                     const + [mkl_int(m), mkl_int(n), mkl_int(k), pointer(a), mkl_int(lda),
                              pointer(b), mkl_int(n), beta, pointer(c), mkl_int(ldc)])
        return context.get_dummy_value()
    return sig, codegen


@intrinsic
def _gemm_at(typingctx, address, transa, transb, m, n, k, a, lda, b, ldb, beta, c, ldc):
    """``C = op(A) @ op(B) + beta C`` by the function at ``address`` (an integer), which has
    the signature of CBLAS's ``cblas_?gemm`` with 32-bit integers (MKL's, the LP64 interface
    of libmkl_rt: :func:`elman.fast._mkl.gemm_address`), row-major, ``op`` chosen by the
    CBLAS flags ``transa``/``transb``, the matrices at the addresses ``a``, ``b``, ``c``. A
    call through a run-time address, as :func:`_compute_at`'s."""
    sig = types.void(address, transa, transb, m, n, k, a, lda, b, ldb, beta, c, ldc)

    def codegen(context, builder, signature, args):
        address, transa, transb, m, n, k, a, lda, b, ldb, beta, c, ldc = args
        i32 = ir.IntType(32)
        real = context.get_value_type(signature.args[10])
        ptr = real.as_pointer()
        ftype = ir.FunctionType(ir.VoidType(), [i32] * 6 + [real, ptr, i32, ptr, i32, real, ptr,
                                                             i32])

        def mkl_int(v):
            return builder.trunc(v, i32) if v.type.width > 32 else builder.sext(v, i32)

        def pointer(v):
            return builder.inttoptr(v, ptr)

        builder.call(builder.inttoptr(address, ftype.as_pointer()),
                     [ir.Constant(i32, _ROW_MAJOR), mkl_int(transa), mkl_int(transb), mkl_int(m),
                      mkl_int(n), mkl_int(k), ir.Constant(real, 1.0), pointer(a), mkl_int(lda),
                      pointer(b), mkl_int(ldb), beta, pointer(c), mkl_int(ldc)])
        return context.get_dummy_value()
    return sig, codegen


@njit(inline="always")
def _flag_and_ld(X):
    """``(CBLAS transpose flag, leading dimension)`` of a 2-D operand read in row-major order:
    rows of contiguous elements (no transpose), or the transpose of such an array (``W.T``,
    ``dG[:, :k].T``)."""
    rows, cols = X.shape
    item = X.itemsize
    if cols == 1 or X.strides[1] == item:
        return _NO_TRANS, max(cols, X.strides[0] // item if rows > 1 else cols)
    assert rows == 1 or X.strides[0] == item, "gemm_at: rows or columns must be contiguous"
    return _TRANS, max(rows, X.strides[1] // item)


@njit(inline="always")
def gemm_at(address, A, B, C, accumulate):
    """``C (+)= A @ B`` (``accumulate``: BLAS's beta = 1) by the ``cblas_?gemm`` at ``address``
    (:func:`_gemm_at`), in compiled code; ``A`` and ``B`` each either rows of contiguous
    elements or the transpose of such an array, ``C`` rows of contiguous elements."""
    m, k = A.shape
    n = B.shape[1]
    if m == 0 or n == 0:
        return
    transa, lda = _flag_and_ld(A)
    transb, ldb = _flag_and_ld(B)
    beta = C.dtype.type(1 if accumulate else 0)
    _gemm_at(address, transa, transb, m, n, k, A.ctypes.data, lda, B.ctypes.data, ldb, beta,
             C.ctypes.data, _ld(C))


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


def _named(impl, name: str):
    """``impl`` under a name of its own. numba names a compiled function by its qualified
    name, its argument types and a counter of the process that compiled it. Two closures of
    one ``def`` that differ only in what they capture (gemm's beta 0 and gemm_acc's 1) share
    the first two, and another process's counter may give the other body the same name:
    kernels cached by two processes and loaded into a third then both call whichever body the
    linker met first (numba issue #10486; seen here as a float64 LSTM whose steps lost their
    input projections, after an RNN's kernel had been loaded). With a name for each variant,
    one name is one body. (``tests/test_fast.py`` checks the compiled code for such pairs.)"""
    impl.__name__ = impl.__qualname__ = name
    return impl


def _operand_dispatch(target, accumulate, A):
    """The implementation of ``target(A, B, C)`` (``gemm`` or ``gemm_acc``) for ``B`` a
    per-step matrix in :func:`elman.fast.matrix_operand`'s form: ``target(A, M.T, C)`` or
    ``target(A, M, C)``, or the packed product through its function's address, chosen at run
    time by the operand's kind."""
    beta = as_dtype(A.dtype).type(1 if accumulate else 0)

    def impl(A, B, C):
        M, transposed, packed, kind, compute = B
        if kind == MATRIX:
            if transposed:
                target(A, M.T, C)
            else:
                target(A, M, C)
        else:
            m, k = A.shape
            n = C.shape[1]
            if m > 0 and n > 0:
                _compute_at(compute, m, n, k, A.ctypes.data, _ld(A), packed.ctypes.data, beta,
                            C.ctypes.data, _ld(C))
    return _named(impl, f"{target.__name__}_operand")


def gemv_rows_max_bytes(l2_bytes: int) -> int:
    """:data:`GEMV_ROWS_MAX_BYTES` for a core with ``l2_bytes`` of L2 cache (0: unknown): half
    of it, and at least 512 KB (measured on 1 MB of L2)."""
    return max(1 << 19, l2_bytes // 2)


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

    def _external_gemv(t, ftype):
        ptr = types.CPointer(ftype)
        sig = types.void(types.int32, types.int32, _int, _int, ftype, ptr, _int, ptr, _int,
                         ftype, ptr, _int)
        return types.ExternalFunction(f"{_prefix}{t}gemv{_suffix}", sig)

    _sgemv = _external_gemv("s", types.float32)
    _dgemv = _external_gemv("d", types.float64)

    #: the largest matrix (bytes) whose matrix-vector products :func:`_gemv_rows` runs instead
    #: of BLAS: one that stays in a core's L2 cache from one step to the next (OpenBLAS's GEMV
    #: wins beyond: at (1536 x 512), 3 MB, it ran twice as fast, on two threads), so half the
    #: L2 where that is more than 512 KB (:data:`._cpu.L2_BYTES`). On the Intel Xeon (Emerald
    #: Rapids, 2 MB of L2 a core) of 2026-12-06, in one process, alternating, medians of 9:
    #: the GRU's and the LSTM's W_hh at H = 256, (768 x 256) and (1024 x 256), 12.8-15.8 and
    #: 12.8-17.2 us here against OpenBLAS's 13.6-17.6 and 15.2-20.8 on one thread (two runs:
    #: 1.06-1.11x and 1.18-1.21x), 12.2 and 16.9 against 12.9 and 17.5 us with two (OpenBLAS
    #: keeps them on one); (1536 x 512), 3 MB, equal on one thread, 3.3x slower than
    #: OpenBLAS's on two. Used there by each thread of a bidirectional layer at batch 1 (its
    #: directions run at once), and by the one-step calls of a layer at H = 256. Measured on
    #: an AMD EPYC, and on the Intel Xeon (Sapphire Rapids) of 2026-12-06: there, one thread,
    #: the LSTM's (512 x 128) product 3.3 us against OpenBLAS's 4.4 (a loop of its steps, gate
    #: math included: 5.9 us against 7.1), and through the layers, batch 1 (1, 50, 32, 128),
    #: no-grad, three alternating runs each way against onnxruntime in the same runs: the RNN
    #: 1.59-1.72x -> 1.78-1.89x onnxruntime with one layer, 1.20-1.41x -> 1.69-1.86x with two;
    #: the GRU and the LSTM (whose layers there mostly run the two-threads-a-step path, which
    #: uses it anyway) within the runs' noise. (An earlier round's hand-written GEMVs, one
    #: row at a time and AXPYs over eight rows, ran 0.4-0.95x OpenBLAS's on an older Xeon:
    #: this one was kept off Intel CPUs until measured there.)
    GEMV_ROWS_MAX_BYTES = gemv_rows_max_bytes(_cpu.L2_BYTES)

    @njit(cache=True, nogil=True, error_model="numpy",
          fastmath={"contract", "reassoc", "nsz"})
    def _gemv_rows(W, x, y, accumulate):
        """``y (+)= W x`` for ``W`` (n, k) with contiguous rows, four rows at a time: each
        element of ``x`` is loaded once for four rows, and each row's dot product is summed in
        SIMD lanes (``reassoc``: a different order of the same sum than BLAS's; this function
        alone is compiled with it). Why: a batch of one sequence multiplies the step's state by
        ``W_hh`` (a few hundred KB) at every step, and OpenBLAS's GEMV, call included, took
        longer: LSTM/GRU at H = 128 (512 and 384 x 128), 2.9-3.3 and 2.1-2.2 us a step through
        OpenBLAS, 2.7-2.8 and 1.8-2.1 here (one thread, medians of 5, two runs, an AMD EPYC:
        see :data:`GEMV_ROWS_MAX_BYTES` for where it is used); eight rows at a time ran
        slower (3.1 and 2.4 us). Through a layer, no-grad, A/B in one process (medians of 11
        or 15, three runs: OpenBLAS's time moved by 30 % between them): batch 1 at
        (1, 50, 32, 128) LSTM 1.14-1.41x, GRU 1.04-1.44x, RNN 1.07x, two layers 1.05-1.06x,
        one step 1.08x as fast."""
        wide_vectors()
        n, k = W.shape
        zero = W.dtype.type(0)
        r = 0
        while r + 4 <= n:
            s0 = s1 = s2 = s3 = zero
            w0, w1, w2, w3 = W[r], W[r + 1], W[r + 2], W[r + 3]
            for j in range(k):
                xj = x[j]
                s0 += w0[j] * xj
                s1 += w1[j] * xj
                s2 += w2[j] * xj
                s3 += w3[j] * xj
            if accumulate:
                y[r] += s0
                y[r + 1] += s1
                y[r + 2] += s2
                y[r + 3] += s3
            else:
                y[r], y[r + 1], y[r + 2], y[r + 3] = s0, s1, s2, s3
            r += 4
        while r < n:
            s = zero
            for j in range(k):
                s += W[r, j] * x[j]
            y[r] = y[r] + s if accumulate else s
            r += 1

    @njit(inline="always")
    def _inc(X):
        """Element stride of the one row of ``X`` (1, k): a GEMV's increment."""
        return 1 if X.shape[1] < 2 else X.strides[1] // X.itemsize

    @njit(inline="always")
    def _clear(C):
        """C[0, :] = 0 before a GEMV with beta = 0: BLAS may scale what is there by 0, and
        0 * NaN (an uninitialised scratch row) would be NaN."""
        for j in range(C.shape[1]):
            C[0, j] = 0

    @njit(inline="always")
    def _ld_t(X):
        """Leading dimension of ``X`` read as the transpose of a row-major array (columns
        contiguous): the column stride, in elements."""
        rows, cols = X.shape
        if cols == 1:
            return max(1, rows)
        assert rows == 1 or X.strides[0] == X.itemsize, "gemm: columns must be contiguous"
        return X.strides[1] // X.itemsize

    def _bind(beta):
        # One row (m = 1: a batch of one sequence) goes to GEMV: OpenBLAS's GEMM packs both
        # operands even then, and ran (1 x 512) @ (512 x 2048) 3.5x slower than its GEMV
        # (measured, one thread: 636 vs 179 us; 1.2x at H=128)
        name = "gemm_acc" if beta else "gemm"

        def typer(A, B, C):
            if isinstance(B, types.BaseTuple):    # (M, transposed, packed, kind, compute)
                return _operand_dispatch(gemm_acc if beta else gemm, beta != 0, A)
            f32 = A.dtype == types.float32
            call, vcall = (_sgemm, _sgemv) if f32 else (_dgemm, _dgemv)
            one, b = (np.float32(1), np.float32(beta)) if f32 else (1.0, float(beta))
            if B.layout == "F":                   # a transposed view: BLAS's transpose flag
                # the kernels' own GEMV only for operands numba knows are contiguous: with a
                # row of unknown stride (layout "A", e.g. a column block GX[t, :n, 2H:]) its
                # loops do not vectorize (measured: 16.7 us a step at 512 x 128, BLAS 2.9)
                own_gemv = A.layout == "C" and C.layout == "C" and GEMV_ROWS_MAX_BYTES > 0
                def impl(A, B, C):
                    m, k = A.shape
                    n = B.shape[1]
                    if m == 0 or n == 0:
                        return
                    if m == 1:                    # c = W a, W = B^T (n x k) row-major
                        if own_gemv and n * k * B.itemsize <= GEMV_ROWS_MAX_BYTES:
                            _gemv_rows(B.T, A[0], C[0], beta != 0)
                            return
                        if beta == 0:
                            _clear(C)
                        vcall(_ROW_MAJOR, _NO_TRANS, n, k, one, B.ctypes, _ld_t(B), A.ctypes,
                              _inc(A), b, C.ctypes, _inc(C))
                        return
                    call(_ROW_MAJOR, _NO_TRANS, _TRANS, m, n, k, one, A.ctypes, _ld(A),
                         B.ctypes, _ld_t(B), b, C.ctypes, _ld(C))
                return _named(impl, f"{name}_transposed_b")

            def impl(A, B, C):
                m, k = A.shape
                n = B.shape[1]
                if m == 0 or n == 0:
                    return
                if m == 1:                        # c = B^T a, B (k x n) row-major
                    if beta == 0:
                        _clear(C)
                    vcall(_ROW_MAJOR, _TRANS, k, n, one, B.ctypes, _ld(B), A.ctypes, _inc(A),
                          b, C.ctypes, _inc(C))
                    return
                call(_ROW_MAJOR, _NO_TRANS, _NO_TRANS, m, n, k, one, A.ctypes, _ld(A),
                     B.ctypes, _ld(B), b, C.ctypes, _ld(C))
            return _named(impl, name)
        return typer

    overload(gemm)(_bind(0))
    overload(gemm_acc)(_bind(1))
else:
    def _fallback(accumulate):
        def typer(A, B, C):
            if isinstance(B, types.BaseTuple):
                return _operand_dispatch(gemm_acc if accumulate else gemm, accumulate, A)

            def impl(A, B, C):
                if A.shape[0] > 0:
                    product = np.dot(np.ascontiguousarray(A), np.ascontiguousarray(B))
                    if accumulate:
                        C[:, :] += product
                    else:
                        C[:, :] = product
            return _named(impl, "gemm_acc_fallback" if accumulate else "gemm_fallback")
        return typer

    overload(gemm)(_fallback(False))
    overload(gemm_acc)(_fallback(True))


@njit
def _check(A, B, C, accumulate):
    """Used by the tests: ``gemm``/``gemm_acc`` through the compiled binding."""
    if accumulate:
        gemm_acc(A, B, C)
    else:
        gemm(A, B, C)
