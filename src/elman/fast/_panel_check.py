"""Whether a matrix is still, bit for bit, the one its kept panels were packed from: ``W`` (n, K)
compared with ``Bp = pack(W, transpose=True)`` (:func:`elman.fast._packed.pack`) itself, no
copy of ``W`` kept beside the panels.

The panels hold ``W`` transposed, ``NR`` (32) of its rows a panel::

    Bp[p, k, j] = W[p*NR + j, k]        j < NR, k < K

so a row of ``W`` runs down a column of its panel. The compare takes ``W`` in blocks of 16 x 16
(sixteen rows, sixteen columns: sixteen vector loads), transposes the block in registers
(four stages of two-source shuffles, sixty-four in all) and XORs each of its columns with the
panel row it must equal, ORing the differences; all in words (``uint32``), so that -0.0 and
0.0 differ and a NaN equals only its own bits. Written in LLVM IR with explicit
``<16 x float>`` vectors (as :mod:`elman.fast._microkernel`): numba's own loops vectorised the
transposed compare poorly (2.6-3x the time of a plain compare, measured).

Why: a batch of one keeps ``W_hh``'s and ``W_ih``'s panels from call to call
(:class:`elman.fast._packed.KeptPack`) and must see any write into the parameters between
calls. Compared with a kept copy of ``W``, the check read both ``W`` and the copy from L3 (the
copy in no cache the call needs) and evicted the panels from L2 on its way; compared with the
panels, it reads ``W`` and the panels the steps read next, and no copy is kept. Measured
(one thread, an Intel Xeon, Emerald Rapids; ``W`` in L3, the panels in cache, medians of 15,
two runs): (1024 x 256) 63 us against 80-82 for the copy's compare, (1024 x 128) 29-37
against 39-46, (512 x 128) 15 against 20-21, (1024 x 32) 8.5 against 11. Through the layers
(batch 1, T = 50, the old and the new code in one process, alternating, medians of 30-40,
two rounds): 1.00-1.07x as fast with the check aside (GRU and LSTM, H = 128 and 256, one and
two layers; the two-layer LSTM at H = 256 0.99-1.06x in five runs), 1.01-1.05x with it in
line (that LSTM 0.96-1.00x in three runs).
"""
from __future__ import annotations

from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

from . import _cache  # noqa: F401  (before the decorators: the cache keyed by the package)
from ._packed import NR

__all__ = ["same_as_panels"]

_B = 16                 # rows and columns of a block: one <16 x i32> vector a row
#: blocks ahead whose rows of ``W`` each block prefetches (``W`` at 256 KB: 27 ns a block with
#: it, 42 without; 2, 4 and 8 alike; at 1 MB, where ``W`` and the panels no longer both fit
#: L2, 48-50 ns either way; one thread, medians of 11)
_AHEAD = 4


def _transpose(builder, rows: list) -> list:
    """The 16 x 16 block of ``rows`` (16 vectors) transposed: at block size b = 8, 4, 2, 1,
    the off-diagonal b x b blocks of each 2b x 2b block swap (two shuffles a pair of rows)."""
    i32 = ir.IntType(32)
    rows = list(rows)
    b = _B // 2
    while b:
        low = ir.Constant(ir.VectorType(i32, _B),
                          [lane if lane & b == 0 else _B + lane - b for lane in range(_B)])
        high = ir.Constant(ir.VectorType(i32, _B),
                           [lane + b if lane & b == 0 else _B + lane for lane in range(_B)])
        for i in range(_B):
            if i & b == 0:
                upper, lower = rows[i], rows[i + b]
                rows[i] = builder.shuffle_vector(upper, lower, low)
                rows[i + b] = builder.shuffle_vector(upper, lower, high)
        b //= 2
    return rows


def _differs_codegen(context, builder, signature, args):
    """LLVM IR: OR over ``blocks`` blocks of 16 columns of ``transpose(W[r:r+16, c:c+16]) XOR
    Bp[c:c+16, panel half]``, 16 rows of ``W`` at ``w`` (row stride ``ldw`` words) against the
    half panel at ``bp`` (rows NR words apart); the OR of all lanes (nonzero: they differ).
    Each block prefetches its rows :data:`_AHEAD` blocks on (a prefetch past the row's end
    reads the next row's start, or nothing: prefetches never fault)."""
    w, ldw, bp, blocks = args
    i64, i32 = ir.IntType(64), ir.IntType(32)
    vec = ir.VectorType(i32, _B)
    word = i32.as_pointer()
    w, bp = builder.inttoptr(w, word), builder.inttoptr(bp, word)
    ldw, blocks = (builder.sext(v, i64) if v.type.width < 64 else v for v in (ldw, blocks))

    def load(base, at):
        return builder.load(builder.bitcast(builder.gep(base, [at]), vec.as_pointer()), align=4)

    fn = builder.function
    start = builder.block
    head, body, done = (fn.append_basic_block(f"check.{name}") for name in ("head", "body",
                                                                             "done"))
    builder.branch(head)
    builder.position_at_end(head)
    block = builder.phi(i64)
    block.add_incoming(ir.Constant(i64, 0), start)
    acc = builder.phi(vec)
    acc.add_incoming(ir.Constant(vec, [0] * _B), start)
    builder.cbranch(builder.icmp_signed("<", block, blocks), body, done)
    builder.position_at_end(body)
    column = builder.mul(block, ir.Constant(i64, _B))
    i8p = ir.IntType(8).as_pointer()
    prefetch = cgutils.get_or_insert_function(builder.module, ir.FunctionType(
        ir.VoidType(), [i8p, i32, i32, i32]), "llvm.prefetch.p0i8")
    ahead = builder.add(column, ir.Constant(i64, _B * _AHEAD))
    for r in range(_B):            # (read, keep in all levels, data: llvm.prefetch's codes)
        at = builder.gep(w, [builder.add(builder.mul(ldw, ir.Constant(i64, r)), ahead)])
        builder.call(prefetch, [builder.bitcast(at, i8p), ir.Constant(i32, 0),
                                ir.Constant(i32, 3), ir.Constant(i32, 1)])
    rows = [load(w, builder.add(builder.mul(ldw, ir.Constant(i64, r)), column))
            for r in range(_B)]
    differences = acc
    for c, values in enumerate(_transpose(builder, rows)):
        panel_row = load(bp, builder.mul(builder.add(column, ir.Constant(i64, c)),
                                         ir.Constant(i64, NR)))
        differences = builder.or_(differences, builder.xor(values, panel_row))
    block.add_incoming(builder.add(block, ir.Constant(i64, 1)), builder.block)
    acc.add_incoming(differences, builder.block)
    builder.branch(head)
    builder.position_at_end(done)
    lanes = _B
    folded = acc
    while lanes > 1:                      # (the lanes ORed into lane 0)
        lanes //= 2
        folded = builder.or_(folded, builder.shuffle_vector(folded, folded, ir.Constant(
            vec, [lane + lanes if lane < lanes else lane for lane in range(_B)])))
    return builder.extract_element(folded, ir.Constant(i32, 0))


@intrinsic
def _half_panel_differs(typingctx, w, ldw, bp, blocks):
    return types.uint32(w, ldw, bp, blocks), _differs_codegen


@njit(cache=True, nogil=True)
def same_as_panels(W, Bp):
    """Whether ``W`` (n, K) is the matrix ``Bp`` (ceil(n / NR), K, NR) was packed from
    (``Bp[p, k, j] == W[p*NR + j, k]`` for every row of ``W``), both as ``uint32`` words
    (views of float32 arrays; each panel C-contiguous, as :func:`elman.fast._packed.pack`
    makes them; ``W`` in blocks where its rows are contiguous, any row stride, else word by
    word). Sixteen rows and
    sixteen columns at a time (:func:`_half_panel_differs`); the columns beyond the last
    whole block of 16, and rows short of one, word by word. Stops at the first half panel
    that differs. The panels' zero padding (rows beyond n) is not read."""
    n, K = W.shape
    ld = W.strides[0] // 4
    blocks = K // _B if W.strides[1] == 4 else 0     # (rows not contiguous: word by word)
    for p in range(Bp.shape[0]):
        for half in range(NR // _B):
            r0 = p * NR + half * _B
            if r0 >= n:
                return True
            rows = min(_B, n - r0)
            first = 0
            if rows == _B and blocks > 0:
                if _half_panel_differs(W.ctypes.data + r0 * ld * 4, ld,
                                       Bp.ctypes.data + p * Bp.strides[0] + half * _B * 4,
                                       blocks):
                    return False
                first = blocks * _B
            for r in range(rows):
                for k in range(first, K):
                    if W[r0 + r, k] != Bp[p, k, half * _B + r]:
                        return False
    return True
