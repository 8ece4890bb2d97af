"""``C (+)= A @ B`` on a matrix ``B`` packed once per pass (:mod:`._packed`): the per-step
GEMM's own register-blocked micro-kernel, for compiled code.

The product runs tile by tile: ``MR`` rows of ``A`` against one panel of ``B`` (``NR = 32``
columns, stored ``K x 32`` contiguous, :func:`elman.fast._packed.pack`), summed over ``k`` in
``MR x 2`` sixteen-float vector registers:

    C[i, j:j+32] (+)= sum_k A[i, k] * Bp[panel, k, 0:32],   i in the tile's rows

one broadcast of ``A[i, k]`` and two fused multiply-adds per row and ``k``, the tile's sums
kept in registers from the first ``k`` to the last and ``C`` read and written once. numba's own
loops cannot say that (LLVM kept the sums in memory or vectorised over ``k`` with gathers:
2.6 GFLOP/s, measured), so the loop is written here in LLVM IR with explicit ``<16 x float>``
vectors (``llvm.fma``), one loop for each tile height 1..MR behind a ``switch``.

Why: OpenBLAS packs both operands at every call, so a time loop repacks ``W_hh`` at each of its
T steps, and at the per-step shapes (a row block of 32 rows) its one-thread SGEMM ran
56-78 GFLOP/s where this loop, ``B`` packed once, ran 105-115 (one thread, an AMD EPYC with
AVX-512, (32 x 128) @ (128 x 512) to (64 x 256) @ (256 x 1024), medians of 7).

AVX-512 only (:data:`elman.fast._cpu.AVX512`, the only kind measured; elsewhere ``B`` is never
packed this way) and float32 only (the float64 path stays on BLAS).
"""
from __future__ import annotations

from llvmlite import ir
from numba import cfunc, njit, types
from numba.core import cgutils
from numba.extending import intrinsic

from . import _cache  # noqa: F401  (before the decorators: the cache keyed by the package)
from ._packed import MR, NR, VW

__all__ = ["packed_product", "product", "compute", "compute_address"]

_NV = NR // VW                 # vectors per panel row


def _vectors(builder) -> tuple:
    """``(i64, vec, fma, broadcast)`` for both micro-kernels: the index type, ``<VW x float>``,
    ``llvm.fma`` on it and ``broadcast(x)``, a float splat into a vector."""
    i64, i32 = ir.IntType(64), ir.IntType(32)
    vec = ir.VectorType(ir.FloatType(), VW)
    fma = cgutils.get_or_insert_function(builder.module, ir.FunctionType(vec, [vec] * 3),
                                         f"llvm.fma.v{VW}f32")
    splat_mask = ir.Constant(ir.VectorType(i32, VW), [0] * VW)
    undef = ir.Constant(vec, ir.Undefined)

    def broadcast(x):
        return builder.shuffle_vector(builder.insert_element(undef, x, ir.Constant(i32, 0)),
                                      undef, splat_mask)
    return i64, vec, fma, broadcast


def _sum_over_k(builder, k, first, step, name: str) -> list:
    """``for kk in range(k): sums = step(kk, sums)`` in LLVM IR, the sums (lists of vectors,
    from ``first``) kept in registers (phi nodes) from the first ``kk`` to the last; returns
    the final sums, the builder placed after the loop (the loop of both micro-kernels)."""
    i64 = ir.IntType(64)
    fn = builder.function
    start = builder.block
    head = fn.append_basic_block(f"{name}.head")
    body = fn.append_basic_block(f"{name}.body")
    done = fn.append_basic_block(f"{name}.done")
    builder.branch(head)
    builder.position_at_end(head)
    kk = builder.phi(i64)
    kk.add_incoming(ir.Constant(i64, 0), start)
    sums = [[builder.phi(value.type) for value in values] for values in first]
    for phis, values in zip(sums, first):
        for phi, value in zip(phis, values):
            phi.add_incoming(value, start)
    builder.cbranch(builder.icmp_signed("<", kk, k), body, done)
    builder.position_at_end(body)
    new = step(kk, sums)
    for phis, values in zip(sums, new):
        for phi, value in zip(phis, values):
            phi.add_incoming(value, builder.block)
    kk.add_incoming(builder.add(kk, ir.Constant(i64, 1)), builder.block)
    builder.branch(head)
    builder.position_at_end(done)
    return sums


def _tile_codegen(nv: int, accumulate: bool):
    """LLVM IR of one tile call: ``rows`` (1..MR, a runtime value) rows of A at ``a`` (row
    stride ``lda`` floats) times a panel at ``b`` (``k`` rows of NR floats, of which the first
    ``nv * VW`` are used) into C at ``c`` (row stride ``ldc``)."""

    def codegen(context, builder, signature, args):
        a, lda, b, k, c, ldc, rows = args
        i64, vec, fma, broadcast = _vectors(builder)
        a, b, c = (builder.inttoptr(p, vec.element.as_pointer()) for p in (a, b, c))
        lda, ldc, k, rows = (builder.sext(v, i64) if v.type.width < 64 else v
                             for v in (lda, ldc, k, rows))

        def c_vector(i, v):
            at = builder.add(builder.mul(ir.Constant(i64, i), ldc), ir.Constant(i64, v * VW))
            return builder.bitcast(builder.gep(c, [at]), vec.as_pointer())

        fn = builder.function
        exit_block = fn.append_basic_block("tile.exit")
        switch = builder.switch(rows, exit_block)
        for mr in range(1, MR + 1):
            start = fn.append_basic_block(f"tile.{mr}")
            switch.add_case(ir.Constant(i64, mr), start)
            builder.position_at_end(start)
            first = [[builder.load(c_vector(i, v), align=4) if accumulate
                      else ir.Constant(vec, [0.0] * VW) for v in range(nv)] for i in range(mr)]

            def step(kk, sums, mr=mr):
                row = builder.mul(kk, ir.Constant(i64, NR))
                panel = [builder.load(builder.bitcast(builder.gep(
                    b, [builder.add(row, ir.Constant(i64, v * VW))]), vec.as_pointer()),
                    align=4) for v in range(nv)]
                new = []
                for i in range(mr):
                    x = builder.load(builder.gep(a, [builder.add(
                        builder.mul(ir.Constant(i64, i), lda), kk)]), align=4)
                    x = broadcast(x)
                    new.append([builder.call(fma, [x, panel[v], sums[i][v]])
                                for v in range(nv)])
                return new
            sums = _sum_over_k(builder, k, first, step, f"tile.{mr}")
            for i in range(mr):
                for v in range(nv):
                    builder.store(sums[i][v], c_vector(i, v), align=4)
            builder.branch(exit_block)
        builder.position_at_end(exit_block)
        return context.get_dummy_value()
    return codegen


def _row_codegen(panels: int, accumulate: bool):
    """LLVM IR of one row of A (at ``a``) times ``panels`` whole panels side by side (the
    first at ``b``, each ``k`` rows of NR floats) into C at ``c`` (``panels * NR`` floats):

        C[p*NR : (p+1)*NR] (+)= sum_k A[k] * Bp[p, k, 0:NR],   p < panels

    one broadcast of ``A[k]`` and ``2 panels`` fused multiply-adds per ``k``, in that many
    independent sums. Why not the tile loop at one row: there a panel's two sums each wait for
    the FMA before (4 cycles), so it reads 128 bytes of B per 4 cycles, whatever the cache
    could deliver; with the sums of several panels interleaved the load from the cache bounds
    it. Each column's sum runs over ``k`` in the same order as the tile's: the same bits."""

    def codegen(context, builder, signature, args):
        a, b, k, c = args
        i64, vec, fma, broadcast = _vectors(builder)
        a, b, c = (builder.inttoptr(p, vec.element.as_pointer()) for p in (a, b, c))
        k = builder.sext(k, i64) if k.type.width < 64 else k
        panel_floats = builder.mul(k, ir.Constant(i64, NR))

        def c_vector(p, v):
            at = ir.Constant(i64, p * NR + v * VW)
            return builder.bitcast(builder.gep(c, [at]), vec.as_pointer())

        first = [[builder.load(c_vector(p, v), align=4) if accumulate
                  else ir.Constant(vec, [0.0] * VW) for v in range(_NV)] for p in range(panels)]
        bases = [builder.gep(b, [builder.mul(panel_floats, ir.Constant(i64, p))])
                 for p in range(panels)]

        def step(kk, sums):
            row = builder.mul(kk, ir.Constant(i64, NR))
            x = builder.load(builder.gep(a, [kk]), align=4)
            x = broadcast(x)
            return [[builder.call(fma, [x, builder.load(builder.bitcast(builder.gep(
                bases[p], [builder.add(row, ir.Constant(i64, v * VW))]), vec.as_pointer()),
                align=4), sums[p][v]]) for v in range(_NV)] for p in range(panels)]
        sums = _sum_over_k(builder, k, first, step, "row")
        for p in range(panels):
            for v in range(_NV):
                builder.store(sums[p][v], c_vector(p, v), align=4)
        return context.get_dummy_value()
    return codegen


def _row_intrinsic(panels: int, accumulate: bool):
    @intrinsic
    def row(typingctx, a, b, k, c):
        return types.void(a, b, k, c), _row_codegen(panels, accumulate)
    return row


#: panels side by side in the one-row loop: 4 (8 sums) ran the (1024 x 256) product of a
#: vector in 10.6 us where the tile loop took 12.2, (512 x 128) in 2.5 against 3.0 (one
#: thread, the Intel Xeon of 2026-12-06, medians of 30; 2 and 8 panels alike)
ROW_PANELS = 4
_row_acc, _row_acc_pair = _row_intrinsic(ROW_PANELS, True), _row_intrinsic(2, True)
_row_set, _row_set_pair = _row_intrinsic(ROW_PANELS, False), _row_intrinsic(2, False)


def _tile_intrinsic(nv: int, accumulate: bool):
    @intrinsic
    def tile(typingctx, a, lda, b, k, c, ldc, rows):
        return types.void(a, lda, b, k, c, ldc, rows), _tile_codegen(nv, accumulate)
    return tile


_tile_acc, _tile_acc_half = _tile_intrinsic(_NV, True), _tile_intrinsic(1, True)
_tile_set, _tile_set_half = _tile_intrinsic(_NV, False), _tile_intrinsic(1, False)


@njit(inline="always")
def _ld(X):
    """Row stride in elements (rows of one element may carry any stride)."""
    return X.shape[1] if X.shape[0] == 1 else X.strides[0] // X.itemsize


@njit(inline="always")
def _tiles(a0, lda, b0, c0, ldc, m, n, k, accumulate):
    """``C (+)= A @ B``, ``A`` (m, k) at address ``a0`` (row stride ``lda`` floats), ``C`` (m,
    n) at ``c0`` (``ldc``), ``B`` packed at ``b0`` (see :func:`packed_product`)."""
    full, half = n // NR, n % NR != 0
    panel_bytes = k * NR * 4
    if m == 1:                          # (a vector: its panels side by side, see _row_codegen)
        p = 0
        while p + ROW_PANELS <= full:
            if accumulate:
                _row_acc(a0, b0 + p * panel_bytes, k, c0 + p * NR * 4)
            else:
                _row_set(a0, b0 + p * panel_bytes, k, c0 + p * NR * 4)
            p += ROW_PANELS
        if p + 2 <= full:
            if accumulate:
                _row_acc_pair(a0, b0 + p * panel_bytes, k, c0 + p * NR * 4)
            else:
                _row_set_pair(a0, b0 + p * panel_bytes, k, c0 + p * NR * 4)
            p += 2
        if p < full:
            if accumulate:
                _tile_acc(a0, lda, b0 + p * panel_bytes, k, c0 + p * NR * 4, ldc, 1)
            else:
                _tile_set(a0, lda, b0 + p * panel_bytes, k, c0 + p * NR * 4, ldc, 1)
        if half:
            if accumulate:
                _tile_acc_half(a0, lda, b0 + full * panel_bytes, k, c0 + full * NR * 4, ldc, 1)
            else:
                _tile_set_half(a0, lda, b0 + full * panel_bytes, k, c0 + full * NR * 4, ldc, 1)
        return
    for i in range(0, m, MR):
        rows = min(MR, m - i)
        a, c = a0 + i * lda * 4, c0 + i * ldc * 4
        for p in range(full):
            if accumulate:
                _tile_acc(a, lda, b0 + p * panel_bytes, k, c + p * NR * 4, ldc, rows)
            else:
                _tile_set(a, lda, b0 + p * panel_bytes, k, c + p * NR * 4, ldc, rows)
        if half:
            if accumulate:
                _tile_acc_half(a, lda, b0 + full * panel_bytes, k, c + full * NR * 4, ldc, rows)
            else:
                _tile_set_half(a, lda, b0 + full * panel_bytes, k, c + full * NR * 4, ldc, rows)


@njit(inline="always")
def packed_product(A, Bp, C, accumulate):
    """``C (+)= A @ B`` (``accumulate``: a compile-time constant) for float32 ``A`` (m, k) and
    ``C`` (m, n) with contiguous rows (any row stride) and ``Bp`` (ceil(n / NR), k, NR), ``B``
    packed by :func:`elman.fast._packed.pack` (n a multiple of VW: the last panel may be half
    used). Row tiles of MR outermost: a tile of A (MR x k) stays in L1 while the panels of B
    stream past it from L2."""
    m, k = A.shape
    _tiles(A.ctypes.data, _ld(A), Bp.ctypes.data, C.ctypes.data, _ld(C), m, C.shape[1], k,
           accumulate)


@njit(cache=True, nogil=True)
def product(A, Bp, C):
    """``C[...] = A @ B`` for Python callers (:func:`elman.fast._packed.product`)."""
    packed_product(A, Bp, C, False)


@intrinsic
def _address(typingctx, pointer):
    """The integer address a C pointer holds."""
    def codegen(context, builder, signature, args):
        return builder.ptrtoint(args[0], context.get_value_type(types.intp))
    return types.intp(pointer), codegen


_f32p = types.CPointer(types.float32)


@cfunc(types.void(*[types.int32] * 6, _f32p, types.int32, _f32p, types.int32, types.float32,
                  _f32p, types.int32), cache=True)
def compute(layout, transa, transb, m, n, k, a, lda, b, ldb, beta, c, ldc):
    """``C = A @ B + beta C`` (``beta`` 0 or 1) with ``B`` packed into panels, as a C function
    with the signature of MKL's ``cblas_sgemm_compute`` (row-major, ``A`` as it is, ``B``
    packed; ``layout``, ``transa``, ``transb`` and ``ldb`` are those constants and are not
    read): the kernels' GEMM calls either through an address it is given at run time
    (:func:`elman.fast.packed_operand`). Why not inlined there, as it once was: its eight tile
    heights were 60 % of the code of a kernel such as the LSTM's forward loop (0.9 MB of LLVM
    IR), compiled again for every kernel; through its address it is compiled once."""
    _tiles(_address(a), lda, _address(b), _address(c), ldc, m, n, k, beta != 0)


def compute_address() -> int:
    """The address of :func:`compute` in this process."""
    return compute.address
