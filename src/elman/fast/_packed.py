"""The kernels' own packed form of the per-step GEMM's matrix, and when to use it.

A time loop multiplies the same ``W_hh`` at every step. OpenBLAS packs both operands of each
GEMM call (copies them into the blocked order its inner loop reads), so it repacks ``W_hh`` at
each of the T steps. Here ``B`` (``W_hh^T`` forward, ``W_hh`` backward) is packed once per pass
into column panels of ``NR`` floats, ``Bp[p, k, :] = B[k, p*NR : (p+1)*NR]`` (the last panel
padded with zeros), and the compiled loops multiply by it with their own micro-kernel
(:mod:`elman.fast._microkernel`). Measured on one thread (an AMD EPYC with AVX-512, medians of
7): 105-115 GFLOP/s at the per-step shapes of (32 x 128) @ (128 x 512) to (64 x 256) @
(256 x 1024), where OpenBLAS's SGEMM ran 56-78 (and 98 on large squares).

This module needs no numba (:mod:`elman.timeloop` decides with it before any kernel is
imported). ``ELMAN_PACKED=0`` switches the packed GEMM off for the process.
"""
from __future__ import annotations

import importlib
import importlib.util
import os

import numpy as np

from .._switch import Switch
from ..frozen import immutable_key
from . import _cpu
from . import enabled as _fast_enabled

__all__ = ["available", "enabled", "set_enabled", "use", "worth", "one_row_worth", "pack",
           "KeptPack", "compute_address", "MR", "NR", "VW", "ONE_ROW_MIN_STEPS",
           "ONE_ROW_MIN_ELEMENTS"]

VW = 16                  # floats per vector register (AVX-512)
NR = 2 * VW              # columns per panel: two vector registers
MR = 8                   # rows per tile: 8 x 2 registers of sums (of 32)
_ALIGN = 64              # bytes: each panel row starts on a cache line

#: the fewest steps for which packing pays: packing is a pass over ``W``, about as long as
#: one step's product
MIN_STEPS = 4
#: the smallest matrix (k x n elements) worth packing: below it OpenBLAS's own small-matrix
#: path does as well. Measured through a layer (one process, alternating, medians of 7), GRU
#: and LSTM at (32, 50, 16, 64) and (32, 500, 32, 32) (at most 16,384 elements), one layer and
#: bidirectional: 0.83-1.10x, mostly slower, with packing
MIN_ELEMENTS = 32768

#: whether the packed GEMM can run here: numba, a CPU with AVX-512 (the only kind its
#: micro-kernel was written and measured for), and numba compiling for this CPU (not for a
#: ``NUMBA_CPU_NAME`` of its own, e.g. "generic" for a cache shared between machines: without
#: FMA in the target, each vector FMA would become calls to ``fmaf``)
available = (_cpu.AVX512 and importlib.util.find_spec("numba") is not None
             and os.environ.get("NUMBA_CPU_NAME", "host").strip().lower() in ("host", ""))
_switch = Switch("ELMAN_PACKED", available)

#: ``enabled()``: whether the compiled loops may pack their per-step GEMM's matrix;
#: ``set_enabled(flag)`` for the process (returns the previous setting); ``with use(False):``
#: for a block (BLAS's GEMM at every step)
enabled, set_enabled, use = _switch.enabled, _switch.set_enabled, _switch.use


def worth(steps: int, rows: int, k: int, n: int, dtype, min_elements: int | None = None) -> bool:
    """Whether a pass of ``steps`` steps of ``rows`` rows through a (k x n) matrix ``B`` of
    ``dtype`` should pack it: on, float32, a batch (one row is a matrix-vector product, which
    the loops run on ``W`` itself), enough steps (:data:`MIN_STEPS`), a matrix large enough
    (``min_elements``, by default :data:`MIN_ELEMENTS`) and ``n`` a multiple of :data:`VW`
    (the micro-kernel's stores are whole vectors)."""
    # (the sizes first: a streaming call stops at them)
    least = MIN_ELEMENTS if min_elements is None else min_elements
    return (rows > 1 and steps >= MIN_STEPS and k * n >= least and n % VW == 0
            and np.dtype(dtype) == np.float32 and _switch.enabled())


def pack(W: np.ndarray, transpose: bool, into: np.ndarray | None = None) -> np.ndarray:
    """``B = W.T`` (``transpose``) or ``W``, (k x n), as panels ``(ceil(n / NR), k, NR)``,
    64-byte aligned, zeros beyond column n: the form :func:`elman.fast._blas.gemm` multiplies
    with the micro-kernel; written into ``into`` (what an earlier call returned for a matrix
    of W's shape) or a new array. A copy: ``W`` changed later is not seen."""
    if W.dtype != np.float32 or W.ndim != 2:
        raise ValueError(f"pack: W must be a 2-D float32 array, got {W.dtype} {W.shape}")
    B = W.T if transpose else W
    k, n = B.shape
    panels = -(-n // NR)
    if into is not None and into.shape == (panels, k, NR):
        Bp = into
    else:
        raw = np.empty(panels * k * NR * 4 + _ALIGN, np.uint8)
        start = -raw.ctypes.data % _ALIGN
        Bp = raw[start:start + panels * k * NR * 4].view(np.float32).reshape(panels, k, NR)
    full = n // NR
    # (the transposed view of W read as (panels, NR, k): each panel's rows of W, transposed)
    if transpose:
        Bp[:full] = W[:full * NR].reshape(full, NR, k).transpose(0, 2, 1)
    else:
        Bp[:full] = W[:, :full * NR].reshape(k, full, NR).transpose(1, 0, 2)
    if full < panels:
        Bp[full, :, :n - full * NR] = B[:, full * NR:]
        Bp[full, :, n - full * NR:] = 0
    return Bp


#: the fewest steps for which a batch of one (a matrix-vector product a step) packs its matrix:
#: the micro-kernel on one row of panels ran 1.5-1.65x as fast as the kernels' own GEMV on the
#: matrix itself (:func:`elman.fast._blas._gemv_rows`: at (384 x 128) 2.6 against 4.1 us, at
#: (1024 x 256) 12.9 against 20.3; one thread, an Intel Xeon (Emerald Rapids), medians of 30),
#: and packing (256 KB: 28-34 us) or checking a kept packing (:class:`KeptPack`: 10-11 us)
#: costs a few steps' gain
ONE_ROW_MIN_STEPS = 16
#: the smallest matrix (k x n elements) a batch of one packs: at (64 x 64) the two products
#: ran alike (0.22 and 0.24 us), from (192 x 64) the packed one 1.4x as fast
ONE_ROW_MIN_ELEMENTS = 8192


def one_row_worth(steps: int, k: int, n: int, dtype) -> bool:
    """Whether a pass of ``steps`` steps of one row through a (k x n) matrix of ``dtype`` should
    multiply by its panels (kept between calls, :class:`KeptPack`) rather than by the matrix
    itself: on, float32, :data:`ONE_ROW_MIN_STEPS` and :data:`ONE_ROW_MIN_ELEMENTS`, ``n`` a
    multiple of :data:`VW`."""
    return (steps >= ONE_ROW_MIN_STEPS and k * n >= ONE_ROW_MIN_ELEMENTS and n % VW == 0
            and np.dtype(dtype) == np.float32 and _switch.enabled())


class KeptPack:
    """A matrix's panels (:func:`pack` of ``W.T``) kept from one call to the next:
    :meth:`panels` packs anew only when the matrix is no longer bit for bit the one the panels
    hold (an optimizer step, ``load_state_dict``, any write into the parameter's array is seen
    at the next call), compared with the panels themselves
    (:func:`elman.fast._panel_check.same_as_panels`). A batch of one keeps them in the
    layer-direction's workspace (:func:`elman.timeloop.lean_operands`).

    Why: a streaming caller's batch of one reads all of ``W_hh`` at every step, and the
    micro-kernel reads panels 1.5-1.65x as fast as the GEMV reads the matrix
    (:data:`ONE_ROW_MIN_STEPS`); packing at every call cost as much as 10-40 steps' gain
    (the transposing copy runs at 7-9 GB/s here: 256 KB in 28-34 us, 1 MB in 125-150). The
    check reads ``W`` and the panels the steps read next (against a kept copy of ``W``, it
    read the copy too, from L3, and evicted the panels: 1 MB, 80-82 against 63 us). A matrix
    of a frozen module (:func:`elman.freeze`: read-only, on immutable memory) is not compared
    at all. Not thread-safe: a caller takes it from its workspace for the call and gives it
    back after."""

    __slots__ = ("packed", "shape", "steady", "frozen", "frozen_array")

    def __init__(self):
        self.packed = self.shape = None
        #: :func:`elman.frozen.immutable_key` of the matrix packed, where it is frozen (no
        #: write can reach it: its panels are trusted with no compare while the key matches)
        self.frozen = None
        #: that frozen matrix's array itself: the same array object again (its shape and
        #: strides too) is the same matrix, known without the key, whose address costs ~1.4 us
        #: (``__array_interface__``): frozen calls of a batch of one at (1, 50, 32, 128) ran
        #: 1.060x (GRU), 1.044x (LSTM), 1.043x (two LSTM layers) as fast, at H = 256 1.026x
        #: (GRU; one process, alternating, medians of 30)
        self.frozen_array = None
        #: whether the last check found the matrix unchanged (a check set aside is tried only
        #: then: a matrix that changed at the last call, e.g. between optimizer steps, is
        #: likely to change again, and a failed check aside costs the call twice)
        self.steady = False

    def panels(self, W: np.ndarray, aside=None) -> np.ndarray:
        """The panels of ``W.T`` (the loops multiply by ``W_hh^T`` and ``W_ih^T``), as
        ``pack(W, True)`` makes them; ``W`` float32 with contiguous rows. ``aside`` (an
        :class:`elman.fast._pair.CheckAside`, or None): where the panels were steady, returned
        unchecked and the check added to ``aside``, whose caller must run it and, should it
        fail, make the call again without ``aside`` (the panels are then packed anew here)."""
        packed = self.packed
        if W is self.frozen_array and W.shape == self.shape and W.strides == self.frozen[3]:
            return packed                     # (the frozen array packed: see frozen_array)
        fits = packed is not None and self.shape == W.shape
        frozen = immutable_key(W)
        if fits and frozen is not None and self.frozen is not None \
                and frozen[0] is self.frozen[0] and frozen[1:] == self.frozen[1:]:
            return packed                     # (elman.freeze: nothing can have changed)
        if fits and aside is not None and self.steady:
            aside.add(W.view(np.uint32), packed.view(np.uint32))
            return packed
        if fits and _same_as_panels(W.view(np.uint32), packed.view(np.uint32)):
            self.steady = True
            return packed
        self.packed, self.shape, self.frozen = pack(W, True, packed), W.shape, frozen
        self.frozen_array = None if frozen is None else W
        self.steady = False
        return self.packed


def _same_as_panels(W, Bp):
    """:func:`elman.fast._panel_check.same_as_panels` (numba is imported at the first call, not
    with elman; from then on this name is the compiled function itself)."""
    global _same_as_panels
    _same_as_panels = importlib.import_module(f"{__package__}._panel_check").same_as_panels
    return _same_as_panels(W, Bp)


#: the smallest one-thread product (m * n * k) :func:`product` takes, and the fewest rows: below
#: them packing ``b`` costs more than the micro-kernel saves over OpenBLAS's small-matrix path
MIN_PRODUCT_MNK = 1 << 20
MIN_PRODUCT_ROWS = 64


def product(a: np.ndarray, b: np.ndarray, out: np.ndarray) -> bool:
    """``out[...] = a @ b`` with ``b`` packed (:func:`pack`) and the micro-kernel, for a caller
    whose product runs on one thread; True if done, False (nothing written) where it does not
    apply: off (or the compiled loops off: the NumPy path stays NumPy), float32 only, a
    product below :data:`MIN_PRODUCT_MNK` or :data:`MIN_PRODUCT_ROWS`, ``b``'s columns not a
    multiple of :data:`VW`, ``a`` or ``out`` without contiguous rows.

    Why: the input projection of a row block or of one direction of a bidirectional layer
    ((T N x I) @ (I x G H)) runs on one thread; OpenBLAS's one-thread SGEMM ran it at 80-99
    GFLOP/s, this at 107-112 (an AMD EPYC, (3200 x 32) @ (32 x 512) to (6400 x 256) @
    (256 x 2048), medians of 7; packing ``b`` took 0.2 % of the product)."""
    m, k = a.shape
    n = b.shape[1]
    if m * n * k < MIN_PRODUCT_MNK or m < MIN_PRODUCT_ROWS or n % VW or not _switch.enabled() \
            or not _fast_enabled() \
            or not a.dtype == b.dtype == out.dtype == np.float32 \
            or a.strides[1] != 4 or out.strides[1] != 4 or out.shape != (m, n):
        return False
    _compiled_product(a, pack(b.T, True) if b.flags.f_contiguous else pack(b, False), out)
    return True


def compute_address() -> int:
    """The address of the micro-kernel's product with packed panels as a C function
    (:func:`elman.fast._microkernel.compute`), which the compiled loops call with the panels
    (:func:`elman.fast.packed_operand`); numba is imported and the function compiled (or
    loaded from its cache) at the first call, and the address kept from then on (a batch of
    one asks at every call: the import's lookup cost 6-7 us of it there, measured inside an LSTM
    call at H = 256)."""
    global _compute
    if _compute is None:
        _compute = importlib.import_module(f"{__package__}._microkernel").compute_address()
    return _compute


_compute = None            # (the address, once known: :func:`compute_address`)


def _compiled_product(a, Bp, out):
    """:func:`elman.fast._microkernel.product` (numba is imported at the first call, not with
    elman; from then on this name is the compiled function itself)."""
    global _compiled_product
    _compiled_product = importlib.import_module(f"{__package__}._microkernel").product
    _compiled_product(a, Bp, out)
