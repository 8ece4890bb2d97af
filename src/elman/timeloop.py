"""The engine: one recurrent layer, one direction, over a whole sequence, forward and backward.

Every cell (Elman RNN, GRU, LSTM) runs through these two functions; a cell contributes only its
element-wise step equations (``elman.cells``). The work is laid out for BLAS:

forward
    1. ``GX = X @ W_ih.T + b``        one GEMM over all (T*N) rows, before the loop
    2. per step ``gh = h_prev @ W_hh.T``  one small GEMM, then the cell's gate math, which
       overwrites ``GX[t]`` with the activated gates that backward needs
    3. LSTM with projection: ``h = r @ W_hr.T`` per step
backward (time reversed)
    4. per step the cell turns ``dh`` (and ``dc``) into ``dGX[t]`` and ``dGH[t]`` (the gradients of
       the pre-activations on the input and the recurrent side; equal except for GRU's
       candidate gate), and ``dh_prev = dGH[t] @ W_hh`` (+ the cell's direct term)
    5. ``dW_ih += dGX.T @ X``, ``dW_hh += dGH.T @ H_prev``, biases by sums, ``dX = dGX @ W_ih``:
       whole-sequence GEMMs after the loop (the weight gradients each in the form of product
       that runs fastest: :mod:`elman.weight_grads`)

Variable lengths use the layout of ``torch.nn.utils.rnn.pack_padded_sequence``: the batch is
sorted by length, longest first, so at time ``t`` the sequences still running are the first
``active[t]`` rows and every step works on the prefix ``[:n]``. Rows past their length are never
touched: their state stays frozen (forward direction: the final state; reverse direction: the
initial state, until the sequence starts), and their pre-activation gradients stay zero.

States are kept in one buffer ``S`` of shape (T+1, N, P) indexed so that both directions read
the same way: forward ``S[0] = h0, S[t+1] = h_t``; reverse ``S[T] = h0, S[t] = h_t``. So the
output sequence and the ``H_prev`` of the weight-gradient GEMM are two views of one array.
"""
from __future__ import annotations

import contextlib
import functools
from dataclasses import dataclass

import numpy as np

from . import fast, threads, weight_grads
from .masks import bernoulli
from .fast import _cpu as fast_cpu
from .fast import _mkl as fast_mkl
from .fast import _packed as fast_packed
from .fast._pass_packing import PassPacking
from .fast._windows import window as _output_window

__all__ = ["Weights", "Zoneout", "SequenceCache", "RowSplit", "RowBlocks", "InputGradient",
           "ForwardLoop", "BackwardLoop", "Workspace", "release", "sequence_forward",
           "sequence_forward_rows", "split_rows", "sequence_backward", "run_directions",
           "forward_directions", "backward_directions", "directions_on_partner",
           "forward_into", "shares_states", "shared_directions"]

#: The parameters of one layer in one direction, by the names the cell declares
#: (:meth:`elman.cells.base.CellEquations.parameters`), as arrays (``Param.data`` or
#: ``Param.grad``). Every cell has ``weight_ih`` (G*H, I) and ``weight_hh`` (G*H, P); with
#: biases ``bias_ih`` and ``bias_hh`` (G*H,); an LSTM with a projection ``weight_hr`` (P, H);
#: G is the cell's number of gates and P the state size (H, or proj_size). Absent parameters
#: are absent keys.
Weights = dict


@dataclass
class Zoneout:
    """Zoneout (Krueger et al. 2017) of one layer-direction: after each step the engine mixes
    the cell's new states with the previous ones,

        h_t = a_t * h_{t-1} + (1 - a_t) * h_new        c_t = b_t * c_{t-1} + (1 - b_t) * c_new

    where ``h_new``/``c_new`` are what the cell computed from ``(h_{t-1}, c_{t-1})``. In
    training ``a``/``b`` are 0/1 masks drawn afresh for every step and unit (1: the unit keeps
    its previous value, with probability p); in evaluation they hold p itself (the
    expectation). The states in ``S``/``C`` are the mixed ones, so a cell's backward must take
    its new values from what it saved (gates, ``saved``), never from ``S[new]``/``C[new]``;
    the new cell state before mixing is kept here for the cells that need it (peepholes).

    Backward, from ``dh``/``dc`` wrt the mixed states::

        dh_new = dh * (1 - a)      dh_prev += dh * a       (and the same for c with b)
    """
    h: np.ndarray                  # (T, N, P) a: weight of h_{t-1}
    c: np.ndarray | None = None    # (T, N, H) b: weight of c_{t-1} (cells with a c)
    c_new: np.ndarray | None = None   # (T, N, H) c_new before mixing, filled by the forward

    @classmethod
    def draw(cls, p: float, training: bool, rng: np.random.Generator, shape: tuple,
             c_width: int | None, dtype, order: np.ndarray | None = None) -> "Zoneout | None":
        """The weights for ``shape`` (T, N, P) (and (T, N, c_width) for a cell state; None:
        none): in training 0/1 masks, 1 with probability ``p``, h's drawn before c's, rows
        then sorted by ``order`` (the batch's processing order); in evaluation ``p`` itself.
        None when ``p`` is 0."""
        if not p:
            return None
        shapes = [shape] + ([shape[:2] + (c_width,)] if c_width is not None else [])
        if not training:
            return cls(*[np.full(s, p, dtype) for s in shapes])
        masks = [bernoulli(rng, p, s, dtype) for s in shapes]
        return cls(*[m if order is None else m[:, order] for m in masks])

    def rows(self, rows: slice) -> "Zoneout":
        """The weights of a block of the batch's rows (C-contiguous copies, as the compiled
        loops take them), for :func:`sequence_forward_rows`."""
        return Zoneout(np.ascontiguousarray(self.h[:, rows]),
                       None if self.c is None else np.ascontiguousarray(self.c[:, rows]))


@dataclass
class SequenceCache:
    """What the forward pass of one layer-direction keeps for its backward pass."""
    X: np.ndarray              # (T, N, I) layer input
    gates: np.ndarray          # (T, N, G*H) activated gates, written by the cell
    saved: np.ndarray | None   # (T, N, k*H) whatever else the cell keeps (tanh(c), W_hn h + b_hn)
    S: np.ndarray              # (T+1, N, P) hidden states, layout in the module docstring
    C: np.ndarray | None       # (T+1, N, H) LSTM cell states, same layout
    R: np.ndarray | None       # (T, N, H) LSTM outputs before the projection
    active: np.ndarray | None  # (T,) rows still running at each step; None = all
    reverse: bool
    consts: object = None      # the cell's step constants (prepare_forward), for backward too
    # the name of the elman.fast module that ran the loop (None: the NumPy steps); a name, not
    # the module, so that a layer holding a cache can be pickled and deep-copied
    kernel_module: str | None = None
    workspace: Workspace | None = None   # where the internal arrays go back (release)
    # (N, P) recurrent dropout mask on h_prev where it enters W_hh, the same at every step
    h_mask: np.ndarray | None = None
    # what the cell's transform_input kept for its backward (layer norm: the normalised values)
    input_state: object = None
    zone: Zoneout | None = None    # zoneout's weights and the un-mixed c (see Zoneout)
    # (T, N, P) zeros, or None: when set, backward writes dL/dh_t there at every step, the total
    # derivative that BPTT carries into step t (through the output at t and every later step);
    # elman.gradient_flow sets it (the NumPy steps only: the compiled loops do not record)
    dh_steps: np.ndarray | None = None
    # S never reaches the caller (its output was copied out, :func:`forward_into`, or it is an
    # inner layer's output): an internal array like the gates, given back by release
    states_internal: bool = False
    # X is the pass's own copy of its rows of the layer input (a row block's, ``X_from``), not
    # the caller's array: internal too
    input_internal: bool = False

    @property
    def kernels(self):
        """The kernel module that ran the forward loop, or None (the NumPy reference)."""
        return None if self.kernel_module is None else fast.kernels_named(self.kernel_module)


@dataclass
class ForwardLoop:
    """What a compiled forward loop (``kernel.forward(eq, loop)``) gets: the arrays of one
    layer-direction, shaped as in :class:`SequenceCache`. It overwrites ``GX`` with the gates and
    fills ``S`` (and ``C``, ``saved``, ``R``) step by step, in ``schedule``'s order."""
    GX: np.ndarray             # (T, N, G*H) input projections, the bias not yet added
    bias: np.ndarray           # (G*H,) to add to each step's projection
    W_hh_T: tuple              # (P, K) the recurrent GEMM's matrix, K = recurrent_gates * H,
    #                            as fast.matrix_operand makes it (or packed: _step_operand)
    S: np.ndarray              # (T+1, N, P) states, the initial one in place
    C: np.ndarray | None       # (T+1, N, H) cell states (LSTM)
    saved: np.ndarray | None   # (T, N, width) the kernel's own saved values (_saved_elements)
    gh: np.ndarray             # (N, K) scratch for the recurrent GEMM
    consts: object             # the cell's step constants (prepare_forward)
    schedule: np.ndarray       # (steps, 4) rows (t, prev, new, n), see _schedule
    R: np.ndarray | None       # (T, N, H) outputs before the projection (proj_size)
    W_hr_T: tuple | None       # (H, P) the projection's matrix, transposed, as
    #                            fast.matrix_operand makes it
    h_mask: np.ndarray | None = None   # (N, P) recurrent dropout: the GEMM reads h_prev * mask
    zone: Zoneout | None = None        # zoneout: mix each step's new states with the previous
    # how run() calls the compiled loop: None, directly; else runner(loop_function, args)
    runner: object = None

    def run(self, loop_function, *args):
        """``loop_function(*args)``: how a kernel module with ``fused_calls`` calls its
        compiled loop (forward and backward), once a pass, so that a row block's pass may run
        the loop inside one compiled call with its GEMMs (:mod:`elman.fast._block`,
        ``runner``)."""
        if self.runner is None:
            return loop_function(*args)
        return self.runner(loop_function, args)


@dataclass
class BackwardLoop:
    """What a compiled backward loop (``kernel.backward(eq, loop)``) gets: it turns ``dh``/``dc``
    (gradients wrt the final states, left holding those wrt the initial states) and ``dY`` into
    the pre-activation gradients ``dGX``/``dGH``, walking ``schedule`` backwards."""
    cache: SequenceCache
    dY: np.ndarray | None      # gradient wrt the outputs: a C-contiguous array whose (T, N, P)
    #                            window from row dY_at[0] and column dY_at[1] it is, or None
    dh: np.ndarray             # (N, P)
    dc: np.ndarray | None      # (N, H)
    dGX: np.ndarray            # (T, N, G*H); may be cache.gates itself (consumed)
    dGH: np.ndarray            # dGX, or (T, N, dgh_blocks*H) for the recurrent side
    w: Weights
    W_step: tuple              # (K, P) the per-step GEMM's matrix W_hh[:K] (dh_prev = dG W),
    #                            as fast.matrix_operand makes it (or packed: _step_operand)
    schedule: np.ndarray
    dHs: np.ndarray | None     # (T, N, P) receives dh at every step (for dW_hr), proj_size only
    h_mask: np.ndarray | None = None   # (N, P) recurrent dropout: the GEMM's dh times mask
    zone: Zoneout | None = None        # zoneout (cache.zone): split dh/dc between new and prev
    dY_at: tuple = (0, 0)              # dY's window: its first row and column (_output_window)
    # set by a loop that summed the biases' gradients as it wrote the rows (elman.fast's
    # plain cells): (the sums of dGX's rows, those of dGH's rows or None where dGH is dGX),
    # float64, for CellEquations.add_bias_sums; None: the engine sums them after the loop
    bias_sums: tuple | None = None
    # how run() calls the compiled loop: None, directly; else runner(loop_function, args)
    runner: object = None

    run = ForwardLoop.run


class Workspace:
    """The large internal arrays of one layer-direction, kept from one call to the next.

    A fresh multi-megabyte array costs a page fault per 4 KiB page at first touch, and on
    virtual machines those are slow and erratic (measured here: writing a fresh 105 MB array
    took 27 to 240 ms, an already-touched one 27 ms). Gates, cell states and their gradients
    never leave the layer, so once a backward pass is done with them (or a new forward replaces
    a cache nobody differentiated) they come back here and the next call reuses them when the
    shape and dtype match; the hidden states are the layer's output and are never reused,
    unless the output is a copy of them (:func:`forward_into`: row blocks, two directions) or
    an inner layer's, which only the next layer reads. Like
    PyTorch's caching allocator this keeps memory between steps: ``clear()`` gives it back.

    It is also the one place where the engine creates arrays (``take`` for reusable ones,
    ``new`` for fresh ones): a GPU path would allocate here from its own array module.
    """

    def __init__(self):
        self._free = {}

    @staticmethod
    def new(shape: tuple, dtype, zero: bool = False) -> np.ndarray:
        """A fresh array (zeros when ``zero``; otherwise uninitialised)."""
        return (np.zeros if zero else np.empty)(shape, dtype=dtype)

    def take(self, name: str, shape: tuple, dtype, zero: bool = False) -> np.ndarray:
        """The array last given back under ``name`` if its shape and dtype fit, else a new one."""
        a = self._free.pop(name, None)
        if a is None or a.shape != tuple(shape) or a.dtype != dtype:
            return self.new(shape, dtype, zero)
        if zero:
            a.fill(0)
        return a

    def take_any(self, name: str):
        """What was last given back under ``name``, whatever it is (None if nothing): for a
        caller that keeps arrays of its own making (:func:`sequence_forward_pair`)."""
        return self._free.pop(name, None)

    def give(self, **arrays) -> None:
        for name, a in arrays.items():
            if a is not None:
                self._free[name] = a

    def clear(self) -> None:
        self._free.clear()
        if self._second is not None:
            self._second.clear()

    _second = None

    def second(self) -> "Workspace":
        """The workspace of the second row block when a pass splits its rows
        (:func:`sequence_forward_rows`): a sibling kept with this one."""
        if self._second is None:
            self._second = Workspace()
        return self._second


def release(cache: "SequenceCache | RowSplit") -> None:
    """Return a cache's internal arrays to its workspace (after its backward, or when a new
    forward replaces it): nothing may use the cache afterwards."""
    if isinstance(cache, RowSplit):
        for part in cache.parts:
            release(part)
        return
    if cache.workspace is not None:
        cache.workspace.give(GX=cache.gates, C=cache.C, saved=cache.saved,
                             S=cache.S if cache.states_internal else None,
                             X=cache.X if cache.input_internal else None)
        cache.gates = cache.C = cache.saved = None
        if cache.states_internal:
            cache.S = None
        if cache.input_internal:
            cache.X = None


def _schedule(T: int, N: int, active: np.ndarray | None, reverse: bool) -> np.ndarray:
    """The steps in processing order as an int64 array of rows (t, prev, new, rows): prev/new
    index the state buffers, rows is how many sequences (a prefix of the batch, sorted longest
    first) run at time t. Steps where none runs are left out. Both paths walk it, backward from
    its end. Only read, never written: full-length batches share one per (T, N, direction)."""
    if active is None:
        return full_schedule(T, N, reverse)
    return _make_schedule(T, N, active, reverse)


@functools.lru_cache(maxsize=64)
def full_schedule(T: int, N: int, reverse: bool) -> np.ndarray:
    """:func:`_schedule` without lengths, built once per shape (a streaming caller asks for
    the same one at every call, and building it cost more than running a small step)."""
    return _make_schedule(T, N, None, reverse)


def _make_schedule(T: int, N: int, active: np.ndarray | None, reverse: bool) -> np.ndarray:
    t = np.arange(T - 1, -1, -1) if reverse else np.arange(T)
    rows = np.full(T, N) if active is None else np.asarray(active)[t]
    steps = np.stack([t, t + 1, t] if reverse else [t, t, t + 1], axis=1)
    return np.ascontiguousarray(np.column_stack([steps, rows])[rows > 0], dtype=np.int64)


def _kernel_attribute(kernels, name: str):
    """What a kernel module (or None, the NumPy steps) defines under ``name``, else None.
    (``getattr`` with a default costs microseconds on a miss, which is the usual case.)"""
    return None if kernels is None else vars(kernels).get(name)


def _step_matrix(W_T: np.ndarray, T: int, N: int) -> np.ndarray:
    """The matrix of the per-step GEMM ``h @ W_T``: a contiguous transposed copy of ``W``, or
    the transposed view itself (BLAS reads it through its transpose flag). With a batch, OpenBLAS
    runs ``h @ W_T`` on the copy up to twice as fast as on the view (measured: 3.4 vs 6.0 us at
    N=32, H=32), and the copy, one pass over ``W``, is paid back within a few steps. For one
    sequence (N = 1: a matrix-vector product either way) or a step or two (a streaming caller)
    it is never paid back: at H=128 the copy alone took longer than a whole step."""
    return W_T if N == 1 or T <= 2 else np.ascontiguousarray(W_T)


def _step_operand(W: np.ndarray, transpose: bool, T: int, N: int, kernels,
                  one_thread: bool, kept: PassPacking | None = None) -> tuple:
    """The per-step GEMM's matrix, ``W.T`` (forward: ``gh = h W_hh[:K]^T``) or ``W``
    (backward: ``dh = dG W_hh[:K]``), packed when the compiled loops run their GEMMs on one
    thread (``one_thread``) and the pass is long enough to pay for the packing: by MKL where it
    is on (:mod:`elman.fast._mkl`), else into the kernels' own panels (:mod:`elman.fast._packed`)
    where their micro-kernel runs; otherwise the matrix itself (forward: :func:`_step_matrix`).
    For the compiled loops (``kernels``) always in the one form
    :func:`elman.fast.matrix_operand` and :func:`elman.fast.packed_operand` make; for the
    NumPy steps the matrix. Packed anew for every pass (weights changed in place between
    calls are always seen), but for a frozen matrix already packed so (:mod:`elman.fast.
    _pass_packing`). Returns ``(operand, packing)``: ``packing`` the
    :class:`~elman.fast._pass_packing.PassPacking` that holds the packed buffer (``kept``, an
    earlier pass's, or a new one; None where it did not pack), for the caller to keep for its
    next pass (:data:`PACKINGS`: a fresh multi-megabyte buffer at every pass stalled on its
    huge pages, :func:`elman.fast._mkl.pack`).

    Why: OpenBLAS packs both operands at every call, so the same ``W_hh`` is repacked at each of
    the T steps; on one thread MKL's packed product ran the per-step GEMM 1.2-1.5x as fast on
    an Intel Xeon (``benchmarks/bench_step_gemm.py``), the kernels' own 1.35-2.05x on an AMD
    EPYC (:mod:`elman.fast._packed`). On two threads OpenBLAS splitting one GEMM still wins."""
    if kernels is not None and one_thread:
        if fast_mkl.worth(T, N, W.size):
            kept = kept or PassPacking()
            return _mkl_operand(W, transpose, N, kept), kept
        if fast_packed.worth(T, N, *(W.shape[::-1] if transpose else W.shape), W.dtype):
            kept = kept or PassPacking()
            packed = kept.packed(W, ("panels", transpose),
                                 lambda into: fast_packed.pack(W, transpose, into))
            return fast.packed_operand(packed, fast_packed.compute_address(), W), kept
    B = _step_matrix(W.T, T, N) if transpose else W
    return (B if kernels is None else fast.matrix_operand(B)), None


def _mkl_operand(W: np.ndarray, transpose: bool, rows: int, packing: PassPacking) -> tuple:
    """MKL's packed form of ``W.T`` (``transpose``) or ``W`` for products of up to ``rows``
    rows (:func:`elman.fast._mkl.pack`), as :func:`elman.fast.packed_operand` makes it, packed
    into ``packing``'s buffer (or taken as it is where that already holds it, ``W`` frozen:
    :class:`~elman.fast._pass_packing.PassPacking`)."""
    packed = packing.packed(W, ("mkl", transpose, rows),
                            lambda into: fast_mkl.pack(W, transpose, rows, into))
    return fast.packed_operand(packed, fast_mkl.compute_address(W.dtype), W)


#: the workspace's names for the packings (:class:`~elman.fast._pass_packing.PassPacking`) a
#: pass packs its per-step matrix into (forward: ``W_hh^T``; backward: ``W_hh``), taken for the
#: pass and given back after it, as the arrays a workspace lends (a call on another thread
#: meanwhile packs into one of its own)
PACKINGS = {True: "packed_W_hh_T", False: "packed_W_hh"}


def project_input(X: np.ndarray, W_ih: np.ndarray, GX: np.ndarray, kernels) -> None:
    """``GX = X @ W_ih^T``, (T, N, I) into (T, N, G*H): the input projection of one
    layer-direction, all steps at once. On a thread of its own (a row block, a direction) or
    small: MKL's GEMM where it takes the product (:func:`elman.threads.one_thread_matmul`), else,
    with compiled loops, the kernels' own binding of NumPy's BLAS (the same call, minus NumPy's
    few microseconds of dispatch, which a streaming caller's every call paid); otherwise on the
    threads :func:`elman.threads.matmul` gives it."""
    T, N, I = X.shape
    X2, GX2 = X.reshape(T * N, I), GX.reshape(T * N, GX.shape[2])
    if not threads.one_thread_product(T * N, GX2.shape[1], I):
        threads.matmul(X2, W_ih.T, out=GX2)
    elif kernels is not None and T * N * GX2.shape[1] * I < fast_mkl.MIN_PRODUCT_MNK:
        fast.project_input(X2, W_ih, GX2)
    else:
        threads.one_thread_matmul(X2, W_ih.T, GX2)


#: the least work per direction (floating-point operations of its recurrent GEMMs, T * 2 N K P)
#: for which the two directions of a bidirectional layer run at once (:func:`run_directions`).
#: Measured on an AMD EPYC (2 cores) in steady use (calls back to back for 0.25 s after 0.12 s
#: untimed, the thresholds alternating, medians of 7; batch 1, T = 50, I = 32, H = 128): at
#: 4 MFLOP against 10, the LSTM (6.6 MFLOP a direction) 1.24x / 1.46x as fast in inference with
#: one / two bidirectional layers and 1.21x / 1.34x in training, the GRU (4.9 MFLOP) 1.15x /
#: 1.39x and 1.17x / 1.25x; at 1-2 MFLOP the RNN (1.6 MFLOP) and the GRU at (2, 20, 32, 128)
#: (2.0 MFLOP) lost (0.64-0.89x). The 10 MFLOP of earlier rounds came from calls each timed
#: right after a pause, which a second thread pays on this machine (see
#: :func:`one_thread_loops_pay`).
OVERLAP_MIN_FLOPS = 4e6

#: the least recurrent GEMM work of a whole unidirectional pass (T * 2 N K P) for which it runs
#: as two row blocks (:func:`split_rows`): as much per block as two directions need to run at
#: once in the earlier rounds' measurements
SPLIT_MIN_FLOPS = 2e7

#: the most recurrent GEMM work of a unidirectional layer's pass (T * 2 N K P) that a call
#: keeping nothing runs on the lean path (:func:`runs_lean`)
LEAN_MAX_FLOPS = 1e7

#: from this much recurrent work a direction (2 T N K P) up to
#: :data:`PAIR_DIRECTIONS_MAX_FLOPS`, a bidirectional call that keeps nothing runs its
#: directions at once on the pair's two threads
#: (:func:`stack_forward_pair`, :func:`pairs_directions`). Measured (no-grad, I = 32, in one
#: process against the same call in turn, medians of 7): at once 1.50x (LSTM, (1, 10, 32,
#: 128), 1.3 MFLOP), 1.84x (LSTM, (1, 50, 32, 128), 6.6 MFLOP), 1.49x (GRU, 4.9 MFLOP), 1.38x
#: (RNN, 1.6 MFLOP), 1.48x (LSTM, (4, 20, 32, 128), 10.5 MFLOP); about even at 0.5-1 MFLOP (GRU
#: 1.01-1.06x, LSTM at H = 64 1.13x), and below that the partner's start (its Python, a few
#: microseconds) cost more than a direction (RNN, 0.33 MFLOP: 0.84x; tiny calls 0.62x).
PAIR_DIRECTIONS_MIN_FLOPS = 1e6
#: ... up to this much a direction (beyond :data:`LEAN_MAX_FLOPS`: from there the lean path's
#: one-thread products still won, at once, against the general path, which runs the
#: directions at once through :func:`elman.threads.concurrently`). Measured against the layer
#: as it was (in one process, medians of 7): GRU and LSTM at (1, 50, 32, 256), one and two
#: bidirectional layers, 1.07-1.25x (20-26 MFLOP); LSTM (8, 50, 32, 128) 1.15x (52 MFLOP), GRU
#: (32, 50, 16, 64) 1.15x (39 MFLOP); RNN and GRU at (64, 100, 32, 128) 1.05x and 1.04x (210 and
#: 629 MFLOP), the LSTM there 0.95x (839 MFLOP), at (64, 100, 128, 256) 0.94-0.97x.
PAIR_DIRECTIONS_MAX_FLOPS = 2e8

#: the range of sizes (bytes) of a layer's ``W_hh`` for which a batch of one sequence runs
#: each step on two threads (:func:`pair_rule`). Measured (no-grad, 50 steps, I = 32, A/B in one
#: process, alternating, medians of 11; AMD EPYC, 2 cores): LSTM H = 96 (144 KB) 0.70-1.04x,
#: GRU H = 128 (192 KB) 1.05-1.09x, LSTM H = 128 (256 KB) 1.2-1.3x, GRU H = 160 (300 KB) 1.28x,
#: LSTM H = 192 (576 KB) 1.42-1.44x, LSTM H = 256 (1 MB) 1.4-1.9x (two layers 1.3x), GRU H = 256
#: (two layers) 1.2-1.3x, LSTM H = 320 and GRU H = 384 (1.6-1.8 MB) ~1.9x; beyond, where a
#: thread's half no longer fits its core's 1 MB cache, nothing: LSTM H = 384 and GRU H = 448
#: (2.3-2.4 MB) 0.97x, LSTM and GRU H = 512 0.97-1.00x; the RNN at H = 384 (576 KB) 1.17x,
#: at H = 512 (1 MB) 1.47x, with two layers 1.69x. But on this virtual machine two
#: threads often run slower together than apart, for seconds or minutes at a time (the host's
#: doing: two independent loops, one per core, each took 1.6 us instead of 1.35 then), and
#: the LSTM at H = 128 then ran at 0.74-0.86x (in four of the day's ten measurements), H = 256
#: with two layers still at 1.28x: so the pair started above the small sizes' break-even.
#: Since then a one-thread call's kept packings are checked on the partner's core beside it
#: (:class:`elman.fast._pair.CheckAside`), and on the Intel Xeon of 2026-12-06 (2 MB of L2 a
#: core: one thread keeps a 1 MB ``W_hh`` in its own) one thread so ran as fast as the pair or
#: faster (batch 1, 50 steps, one process, alternating, medians of 60, in two phases of the
#: machine: LSTM H = 256 818 and 1318 us against the pair's 1514 and 1242, GRU H = 256 653 and
#: 1001 against 677 and 1010, RNN H = 512 1125 against 1180, LSTM H = 192 495 against 609;
#: two layers: the pair's 2887 against 3476): so one direction measures up to
#: :data:`PAIR_MAX_BYTES` (the EPYC's 1.4-1.9x for the pair are found that way there), and
#: this bound, from which the pair ran without measuring, is now beyond it.
PAIR_MIN_BYTES = 1 << 62
PAIR_MAX_BYTES = 2 * 1024 * 1024
#: from this size up to :data:`PAIR_MAX_BYTES` (one direction: :func:`pair_rule`), where the
#: pair's gain depends on the machine and the moment, the layer times both ways as its calls
#: run and takes the faster (:class:`elman.measured_choice.MeasuredChoice`, one per layer).
#: Measured (no-grad,
#: batch 1, 50 steps, I = 32, alternating with onnxruntime in one process, three runs): GRU
#: H = 128 (192 KB) 126-130 us on two threads against 142-148 on one, LSTM H = 128 (256 KB)
#: 161-168 against 189-190; in a slow-together phase the LSTM's two threads took 276 us.
PAIR_MEASURED_MIN_BYTES = 192 * 1024
#: the least for a bidirectional layer, whose directions otherwise run at once, one thread each
#: (:func:`run_directions`), here in turn, each on both threads. Measured as above: in turn
#: against at once, LSTM H = 128 0.87x, GRU H = 128 0.97x, LSTM H = 192 and GRU H = 256 (576-768
#: KB) 1.00-1.02x, LSTM H = 256 (1 MB) 1.14x
PAIR_BIDIRECTIONAL_MIN_BYTES = 1024 * 1024
#: the fewest steps worth a partner, which joins a few microseconds after the caller starts
#: (LSTM H = 128: 1.17x at 24 steps, 1.19x at 32)
PAIR_MIN_STEPS = 16


def run_directions(eq, dtype, flops: float, calls: list) -> list:
    """``[call() for call in calls]``, the passes (:func:`sequence_forward` or
    :func:`sequence_backward`) of a layer's directions: for the two directions of a
    bidirectional layer, at once on two threads with one BLAS thread each
    (:func:`elman.threads.concurrently`) when :func:`overlap_directions` says so, else one
    after the other. ``flops``: the work of one direction's recurrent GEMMs, T * 2 N K P.

    Why: one direction's per-step GEMM is small for two BLAS threads, which meet at every
    step, and the gate math between GEMMs runs on one thread; two independent passes keep both
    CPUs busy (``benchmarks/bench_bidirectional.py`` measures both ways side by side)."""
    if len(calls) == 2 and overlap_directions(eq, dtype, flops):
        return list(threads.concurrently(*calls, flops=flops))
    return [call() for call in calls]


def forward_directions(eq, dtype, flops: float, passes: list) -> list:
    """The forward passes of a layer's directions, each given as :func:`sequence_forward`'s
    keyword arguments (or as a call of its own): as :func:`run_directions` runs them, except
    that two directions which write their states into one shared array (``states``:
    :func:`shared_directions`) and go to the partner (:func:`directions_on_partner`) are set
    up on this thread and each runs as one compiled call (:func:`_run_blocks`, as a row
    block's pass: :mod:`elman.fast._block`; each direction packs its own ``W_hh``).

    Why: a small bidirectional layer's directions were each a few Python calls between calls
    that release the GIL, and the two threads handed the GIL to each other at each one, as the
    row blocks did (:func:`prepare_forward`)."""
    return _directions(eq, dtype, flops, passes, prepare_forward, sequence_forward,
                       _fuses_direction, "out")


def backward_directions(eq, dtype, flops: float, passes: list) -> list:
    """The backward passes of a layer's directions, each given as :func:`sequence_backward`'s
    keyword arguments (or as a call of its own): as :func:`forward_directions`, for passes of
    a :class:`SequenceCache` that may each be one compiled call (:func:`_backward_fuses`; set
    up on this thread without being fused, the passes of two bidirectional LSTM layers at
    (32, 50, 16, 64) ran 0.97x as fast)."""
    return _directions(eq, dtype, flops, passes, prepare_backward, sequence_backward,
                       _fuses_direction_backward, "dX_rows")


def directions_on_partner(eq, dtype, flops: float) -> bool:
    """Whether a bidirectional layer's two directions of ``flops`` recurrent work each run at
    once (:func:`overlap_directions`) on the partner (:func:`elman.threads.on_partner`), where
    :func:`forward_directions` and :func:`backward_directions` may run each as one compiled
    call."""
    return threads.on_partner(flops) and overlap_directions(eq, dtype, flops)


def _directions(eq, dtype, flops: float, passes: list, prepare, whole, fuses,
                nowhere: str) -> list:
    """:func:`forward_directions` (``prepare_forward``, ``sequence_forward``) or
    :func:`backward_directions`: two passes given as keyword arguments that ``fuses`` (and
    :func:`directions_on_partner`) let through go to :func:`_run_blocks` with ``nowhere``
    (their output rows: none) empty; any other passes to :func:`run_directions`."""
    if len(passes) == 2 and directions_on_partner(eq, dtype, flops) \
            and all(isinstance(p, dict) and fuses(eq, p) for p in passes):
        empty = _NOWHERE[np.dtype(dtype).type][3]
        return list(_run_blocks(prepare, [dict(p, **{nowhere: empty}) for p in passes],
                                flops, share_operand=False))
    return run_directions(eq, dtype, flops, [
        functools.partial(whole, **p) if isinstance(p, dict) else p for p in passes])


def _fuses_direction(eq, kwargs: dict) -> bool:
    """Whether a direction's forward pass (:func:`sequence_forward`'s keyword arguments) may
    run as one compiled call (:func:`forward_directions`): its states a plane of a shared
    array, its input contiguous (the projection reads it as (T N, I)), no projection."""
    return (kwargs.get("states") is not None and kwargs["X"].flags.c_contiguous
            and fuses_block(eq, fast.kernels_for(eq, kwargs["X"].dtype),
                            "weight_hr" in kwargs["w"]))


def _fuses_direction_backward(eq, kwargs: dict) -> bool:
    """Whether a direction's backward pass (:func:`sequence_backward`'s keyword arguments) may
    run as one compiled call (:func:`backward_directions`): of a :class:`SequenceCache`, its
    output gradient an array (or None), an array for its input gradient where it has one, and
    :func:`_backward_fuses`."""
    dY, cache = kwargs["dY"], kwargs["cache"]
    return (isinstance(cache, SequenceCache) and (dY is None or isinstance(dY, np.ndarray))
            and (not kwargs["input_grad"] or kwargs["dX_out"] is not None)
            and _backward_fuses(eq, cache, kwargs["defer_input_grad"]))


def overlap_directions(eq, dtype, flops: float) -> bool:
    """Whether :func:`run_directions` runs two directions at once: the compiled loops run (they
    release the GIL; the NumPy steps would hold it), the cell's kernel keeps no state of its
    own that the directions share (``reentrant``), the policy grants two threads or more, and
    each direction has at least :data:`OVERLAP_MIN_FLOPS` of work. Handing a direction to the
    other thread costs about 0.1 ms (measured on 2 cores, ``benchmarks/results/
    bidirectional*.md``: up to 6.6 MFLOP per direction at once ran 0.14-1.05x as fast as in
    turn; from 13 MFLOP a median of 1.19x in one run, and 1.03x, 0.66-1.72x, in a run while the
    machine ran at half speed)."""
    if flops < OVERLAP_MIN_FLOPS:
        return False
    kernels = fast.kernels_for(eq, dtype)
    return (kernels is not None and _kernel_attribute(kernels, "reentrant") is not False
            and threads.granted() >= 2)


#: the fewest rows a block of :func:`sequence_forward_rows` gets
SPLIT_MIN_ROWS = 16


@dataclass
class RowSplit:
    """One layer-direction's pass run as two blocks of the batch's rows at once
    (:func:`sequence_forward_rows`): the caches of rows ``[:rows]`` and ``[rows:]``, and the
    (T, N, P) output both blocks wrote their rows into. The engine's other functions
    (:func:`output_view`, :func:`final_states`, :func:`sequence_backward`, :func:`release`)
    take it in place of a :class:`SequenceCache`."""
    parts: tuple
    rows: int
    out: np.ndarray

    def blocks(self) -> tuple:
        return slice(0, self.rows), slice(self.rows, None)


@dataclass
class InputGradient:
    """One direction's input gradient ``dX = dG @ W`` (T, N, I) with the product not yet
    taken (:func:`sequence_backward`'s ``defer_input_grad``): ``dG`` (T*N, G*H) the gradients
    wrt its input projection, ``W`` its ``weight_ih`` (G*H, I); :meth:`give_back` once the
    layer below has read it (``dG`` may be an array of the pass's workspace).

    Why: a bidirectional layer's input gradient is the sum of its two directions', and a
    direction of the bidirectional layer below reads only its own half of the columns. Taking
    that half straight from both products (:meth:`columns_into`, the second added by the
    GEMM itself) writes it once, where each direction writing its whole (T, N, I) product and
    the direction below summing its halves of both made three more trips through arrays of
    that size. Measured (training steps of two bidirectional layers, old and new code in
    alternating processes, medians of 5-7 pairs): RNN, GRU and LSTM at (64, 100, 128, 256)
    1.022x, 1.025x and 1.018x as fast, the RNN at (128, 200, 256, 512) 1.005x."""
    dG: np.ndarray
    W: np.ndarray
    give_back: object            # a callable of no arguments

    def columns_into(self, cols: slice, out: np.ndarray, accumulate: bool) -> None:
        """``out`` (T*N, width of ``cols``) = ``dX[:, cols]`` (``accumulate``: ``+=``)."""
        threads.matmul(self.dG, self.W[:, cols], out, accumulate=accumulate)


@dataclass
class RowBlocks:
    """A row-split layer's input gradient left in its blocks' arrays, ``arrays`` ((T, rows, I)
    each, from ``workspaces``), for the layer below's blocks, which hold the same rows
    (:func:`sequence_backward`'s ``keep_blocks``); :meth:`give_back` once they have read it."""
    arrays: tuple
    workspaces: tuple

    def give_back(self) -> None:
        for workspace, array in zip(self.workspaces, self.arrays):
            workspace.give(dX=array)


def one_thread_loops_pay(T: int, N: int, K: int, P: int, dtype=np.float32) -> bool:
    """Whether a time loop of T steps whose per-step GEMM ``(N x P) @ (P x K)`` runs on one
    thread runs it well enough to give each thread a loop of its own (:func:`split_rows`):

    - float32, on every CPU, MKL on or off: always, given :data:`elman.fast._mkl.MIN_STEPS`
      steps (the blocks multiply by MKL's packed matrix where :func:`elman.fast._mkl.worth`,
      else by the kernels' panels or with OpenBLAS's one-thread GEMM). With MKL switched off
      on the Intel Xeon of 2026-12-07 the rule below had kept the whole batch where it
      differs (one process, the two rules alternating, medians of 7): training the RNN at
      (64, 100, 32, 128) 1.70x as fast with the blocks (two layers 1.62x), (32, 100, 32, 64)
      1.12x, (64, 100, 128, 256) 1.38x, (32, 500, 32, 32) 1.38x, the LSTM at (128, 100, 32,
      64) 1.42x, the GRU at (256, 100, 32, 64) 1.52x; inference 1.31-1.84x for those, the RNN
      at (32, 500, 32, 32) 1.00x. With MKL on, measured on that Xeon (one process,
      the blocks against the whole batch alternating, calls back to back for 0.3 s after a
      0.1 s pause, medians of 9), where the earlier rule below kept the whole batch: the RNN
      at (64, 100, 32, 128) 1.79x in inference, 1.66x in training (two layers 1.82x and
      1.65x), at (32 and 128, 100, 32, 128) 1.82x and 1.57x in inference (training at N =
      128 1.67x), (64, 100, 32, 96) 1.48x, (64, 100, 128, 160) 1.44x, (64 and 128, 100, 32,
      64) 1.33x and 1.27x (training at N = 64 1.26x), (64, 200, 16, 32) 1.15x, (32, 500, 32,
      32) 1.00x (training 1.27x); the LSTM at (128, 100, 32, 64) 1.68x and 1.51x, the GRU at
      (256, 100, 32, 64) 1.83x; the results within float32's rounding of the whole batch's
      (the same bits where neither packs). On a CPU where MKL is off by default (not an
      Intel one, :data:`elman.fast._mkl.DEFAULT_ON`) float32 had split so since an earlier
      round (the AMD EPYC's measurements below);
    - float64, MKL on: its packed GEMM is worth it for this matrix
      (:func:`elman.fast._mkl.worth`);
    - float64 otherwise (OpenBLAS's one-thread GEMM: the kernels pack float32 only), as
      measured on the Intel Xeon of earlier rounds: a gated cell (K >= 2P) with a matrix as
      large as packing would need (:func:`elman.fast._mkl.large_enough`) on a CPU where MKL
      is off by default; not the RNN;
    - and before the float64 rules, a gated cell whose whole batch's step GEMM gets one
      thread anyway (less than :data:`elman.threads.MIN_FLOPS_PER_THREAD`): the blocks bring
      in the second core, for the GEMMs and the gate math. Measured on an Intel Xeon (Emerald
      Rapids) with
      MKL on (its packing not worth such a matrix), in steady use (calls back to back for
      0.25 s after a 0.15 s pause, alternating with the rule as it was, medians of 10): LSTM
      (32, 50, 16, 64), (32, 500, 32, 32) and (64, 200, 16, 32) inference 1.23-1.34x,
      training 1.06-1.35x; GRU inference 1.18-1.41x, training 1.32-1.44x; MKL off, inference
      1.04-1.41x; float64 1.68-1.85x. Not the RNN, a GEMM and a tanh a step: 0.82-1.00x.

    Why: on the Intel Xeon of earlier rounds a block on OpenBLAS's one-thread GEMM, which
    repacks ``W_hh`` at every step, lost to the whole batch on two threads. On an AMD EPYC the
    blocks win wherever :func:`split_rows`'s sizes let them run, measured in steady use
    (calls back to back for 0.25 s, alternating with the whole batch, after 0.12 s of calls
    untimed, medians of 7): (32, 50, 16, 64), (32, 500, 32, 32) and (64, 200, 16, 32), RNN,
    GRU and LSTM, one and two layers, 1.20-1.54x in inference and 1.27-1.56x in training
    (0.76-0.94x when each group of 5 calls was timed right after a 0.25 s pause: see below);
    the RNN at (64, 100, 32, 128) 1.87x in inference and 2.02x in training, at
    (64, 100, 128, 256) 1.18x and 1.59x (1.12x with two layers). The GRU and the LSTM from
    H = 128 ran blocks already (``benchmarks/results/packed-epyc.md``: 1.19-2.08x as fast as
    the whole batch).

    The pause: on this project's virtual machine a second thread that starts after the
    process was idle for a while (0.05-0.15 s) runs at half speed for its first few
    milliseconds (two busy threads at once took 16 ms where one took 10, after a 0.15 s pause;
    10 ms back to back, and 50 ms either way), so a call of a few milliseconds timed right
    after a pause loses on any two-thread plan; the whole batch of a small layer, whose
    per-step GEMMs OpenBLAS keeps on one thread, does not pay it. (The last rule above, one
    call right after 0.15 s idle, against the rule as it was, medians of 30 alternating: LSTM
    (32, 50, 16, 64) 0.92x, the GRU there 1.03x; at (32, 500, 32, 32), 5 ms calls, 1.28-1.29x.)"""
    if np.dtype(dtype) == np.float32:
        return T >= fast_mkl.MIN_STEPS
    if K >= 2 * P and 2.0 * N * K * P < threads.MIN_FLOPS_PER_THREAD \
            and T >= fast_mkl.MIN_STEPS:
        return True
    if fast_mkl.enabled():
        return fast_mkl.worth(T, N, K * P)
    # (float64 without MKL: the kernels pack float32 only, so OpenBLAS's one-thread GEMM)
    return K >= 2 * P and not fast_mkl.DEFAULT_ON and fast_mkl.large_enough(T, N, K * P)


def split_rows(eq, dtype, T: int, N: int, K: int, P: int) -> bool:
    """Whether a unidirectional layer's pass over T steps of (N x P) @ (P x K) runs as two row
    blocks at once (:func:`sequence_forward_rows`): each block's loop runs its GEMM on one
    thread well (:func:`one_thread_loops_pay`: MKL's packed GEMM, or OpenBLAS's where it is
    the faster), the compiled loops run and are ``reentrant``, the policy grants two threads
    or more, each block gets :data:`SPLIT_MIN_ROWS` rows and as much recurrent GEMM work as
    :data:`SPLIT_MIN_FLOPS` of recurrent GEMM work.

    Measured (float32, one layer, the two blocks at once against the whole batch on two BLAS
    threads, each run after a 0.2 s pause, medians of 7): at (64, 100, 32, 128), (32 and 64,
    100, 128, 256) and (128, 100, 256, 512), every cell, the blocks trained 1.22-1.75x and
    inferred 1.04-1.91x as fast; through the layer (``benchmarks/bench_mkl.py``, MKL on / off)
    1.17-1.54x and 1.10-1.36x. (Without the pause the whole batch's last two-thread GEMM left
    OpenBLAS's worker spinning into the blocks' run, and the blocks seemed to lose at
    H = 256.)"""
    if N < 2 * SPLIT_MIN_ROWS or 2.0 * T * N * K * P < SPLIT_MIN_FLOPS or \
            not one_thread_loops_pay(T, N, K, P, dtype):
        return False
    kernels = fast.kernels_for(eq, dtype)
    return (kernels is not None and _kernel_attribute(kernels, "reentrant") is not False
            and threads.granted() >= 2)


def sequence_forward_rows(eq, X: np.ndarray, h0: np.ndarray, c0: np.ndarray | None,
                          w: Weights, lengths: np.ndarray | None = None,
                          active: np.ndarray | None = None, reverse: bool = False,
                          workspace: Workspace | None = None, h_mask: np.ndarray | None = None,
                          zone: Zoneout | None = None, out: np.ndarray | None = None,
                          keep_blocks: bool = False) -> RowSplit:
    """:func:`sequence_forward` (same arguments) as two blocks of the batch's rows, the first
    ``ceil(N/2)`` and the rest, each a whole pass of its own on a thread of its own with
    one BLAS thread (:func:`elman.threads.concurrently`), so that each loop's GEMM runs on one
    thread (packed by MKL where it is on, :func:`_step_operand`) and the gate math of the two
    blocks runs in parallel. Rows are independent in a recurrent layer, so this is the same
    computation; with lengths the batch is sorted longest first, and each block's ``active``
    is its share of the running rows. ``out`` (T, N, P): where the output goes (a new array
    when None).

    A stack of such layers passes its row blocks on: ``X`` may be the :class:`RowSplit` of the
    layer below (the same rows in the same blocks), whose blocks' outputs each block here
    reads as they are, and ``keep_blocks`` leaves this layer's output in its blocks' states
    (``RowSplit.out`` None; internal arrays, given back by :func:`release`) for the layer
    above to read so. Without, an inner layer's blocks copied their outputs into one array
    and the next layer's blocks copied their rows out of it again (two training steps of a
    two-layer RNN at (64, 100, 128, 256): 0.4-0.6 ms each way a block, of 33 ms)."""
    below = X if isinstance(X, RowSplit) else None
    if below is None:
        T, N, _ = X.shape
        first = (N + 1) // 2
        inputs = (X[:, :first], X[:, first:])
    else:
        inputs = tuple(output_view(part) for part in below.parts)
        T, N = inputs[0].shape[0], inputs[0].shape[1] + inputs[1].shape[1]
        first = inputs[0].shape[1]
    ws = Workspace() if workspace is None else workspace
    # (each block copies its rows of the output on its own thread, as its pass ends)
    if out is None and not keep_blocks:
        out = np.empty((T, N, w["weight_hh"].shape[1]), inputs[0].dtype)
    nowhere = _NOWHERE[inputs[0].dtype.type][3]
    blocks = []
    for rows, X_rows, part_ws in zip((slice(0, first), slice(first, N)), inputs,
                                     (ws, ws.second())):
        part_active = None if active is None else \
            np.clip(active - rows.start, 0, rows.stop - rows.start)
        # (a block's rows of X, a strided view, are copied by its own thread as its pass
        # starts: on the caller both copies took 70 us each at (32, 500, 32, 32); into an
        # array of its workspace: a fresh one cost its page faults at every call, 25 MB a
        # pass at (128, 200, 256, 512))
        contiguous = X_rows.flags.c_contiguous
        blocks.append(dict(
            eq=eq, X=X_rows if contiguous else part_ws.take("X", X_rows.shape, X_rows.dtype),
            h0=h0[rows], c0=None if c0 is None else c0[rows], w=w,
            lengths=None if lengths is None else lengths[rows], active=part_active,
            reverse=reverse, workspace=part_ws, h_mask=None if h_mask is None else h_mask[rows],
            zone=None if zone is None else zone.rows(rows), states_internal=True,
            out=nowhere if keep_blocks else out[:, rows], X_from=None if contiguous else X_rows))
    return RowSplit(_run_blocks(prepare_forward, blocks, _block_flops(w, T, first)), first, out)


def _run_blocks(prepare, blocks: list, flops: float, share_operand: bool = True) -> tuple:
    """Two row blocks' passes at once (:func:`elman.threads.concurrently`), ``prepare``
    (:func:`prepare_forward` or :func:`prepare_backward`) called with each block's keyword
    arguments; the passes' results. Where the partner takes the first block (a task of up to
    :data:`elman.threads.PARTNER_MAX_FLOPS`), this thread sets both up before either runs,
    the first block's packed matrix serving the second (``step_operand``), and finishes both
    after (:func:`prepare_forward` says why); there the caller's pass rings the partner's bell
    from its compiled call. A larger task goes to a thread pool's worker and each block sets
    itself up on its own thread: at (64, 100, 128, 256) the setup on the caller (the packing
    of ``W_hh`` above all, ~0.3 ms a pass) made a GRU's training steps 0.96x as fast, the
    GIL's hand-offs being a small part of passes of 10-20 ms. ``share_operand`` False: each
    pass packs its own matrix (two directions, whose weights differ). Row blocks (sharing
    the operand) go to the partner up to :data:`elman.threads.ROW_BLOCKS_PARTNER_MAX_FLOPS`,
    directions up to :data:`elman.threads.PARTNER_MAX_FLOPS`."""
    limit = threads.ROW_BLOCKS_PARTNER_MAX_FLOPS if share_operand else None
    with threads.one_blas_thread():     # (the blocks' setup as their runs: one BLAS thread)
        if not threads.on_partner(flops, limit):
            return threads.concurrently(*(functools.partial(_prepared, prepare, block)
                                          for block in blocks), flops=flops)
        runs, finishes = [], []
        operand = None
        for block in blocks:
            run, finish, operand = prepare(**block, step_operand=operand)
            runs.append(run)
            finishes.append(finish)
            if not share_operand:
                operand = None
        threads.concurrently(*runs, flops=flops, ring=True, partner_max=limit)
        return tuple(finish() for finish in finishes)


def _prepared(prepare, block: dict):
    """One row block's pass, set up, run and finished here (:func:`_run_blocks`)."""
    run, finish, _ = prepare(**block)
    run()
    return finish()


def _block_flops(w: Weights, T: int, rows: int) -> float:
    """The recurrent GEMM work of a row block of ``rows`` rows over T steps, ``T * 2 rows K P``
    (one pass), for :func:`elman.threads.concurrently`."""
    return 2.0 * T * rows * w["weight_hh"].size


def shares_states(eq, dtype) -> bool:
    """Whether a bidirectional layer of this cell may have its two directions write their
    states into one array, (T+2, N, 2, P), whose steps 1..T are the layer's output
    (:func:`sequence_forward`'s ``states``, :func:`shared_directions`): the compiled loops
    run, and take their states as a plane of such an array (the kernel module's
    ``shares_states``; the RNN's, the LSTM's and the GRU's).

    Why: each direction otherwise wrote its states into an array of its own and then copied
    them into its columns of the output: at (128, 200, 256, 512) the RNN's directions spent
    19-23 ms each on that copy into the fresh output (and 12.8 into an inner layer's), of a
    training step of about 405 ms with one bidirectional layer."""
    kernels = fast.kernels_for(eq, dtype)
    return kernels is not None and _kernel_attribute(kernels, "shares_states") is True


def shared_directions(states: np.ndarray) -> tuple:
    """``(forward, reverse, out)`` of a bidirectional layer's shared states ``states``
    (T+2, N, 2, P): the forward direction's states (T+1, N, P), its initial one first, the
    reverse direction's, its initial one last (:func:`_schedule`'s slots), and the layer's
    output (T, N, 2P), steps 1..T, which both write as they run."""
    T2, N, _, P = states.shape
    return states[:-1, :, 0], states[1:, :, 1], states[1:-1].reshape(T2 - 2, N, 2 * P)


def forward_into(out: np.ndarray, forward, *args, **kwargs):
    """``forward(*args, **kwargs)`` (:func:`sequence_forward`), its output sequence copied into
    ``out`` (a direction's columns of a bidirectional layer's output; a row block's rows are
    copied so by its pass itself, :func:`prepare_forward`'s ``out``) on the calling thread, as
    soon as the pass is done. Returns its cache, whose hidden states are then internal arrays
    like the gates (``states_internal``: taken from the workspace, given back by
    :func:`release`; a fresh 52 MB array for them at (128, 200, 256, 512) cost its page
    faults at every call).

    Why: passes that run at once (row blocks, two directions) then copy in parallel, while the
    other may still run; joining them after both had finished (``np.concatenate``) ran on one
    thread: 0.48 ms of a 9 ms forward at (64, 100, 32, 128) for row blocks, 29 ms a layer for
    a bidirectional one at (128, 200, 256, 512) (two halves copied at once: 11 ms each)."""
    cache = forward(*args, states_internal=True, **kwargs)
    out[...] = output_view(cache)
    return cache


def _backward_rows(eq, split: RowSplit, dY, dh_n, dc_n, w: Weights, g: Weights,
                   input_grad: bool, consume: bool, dX_out: np.ndarray | None,
                   keep_blocks: bool = False):
    """:func:`sequence_backward` of a :class:`RowSplit`: both blocks at once, the second
    block's parameter gradients into zeros of their own, added into ``g`` after; each block
    copies its rows of the input gradient into ``dX`` on its own thread (as
    :func:`forward_into` does for the output), or, ``keep_blocks``, leaves them in an array
    of its workspace (the returned ``dX`` a :class:`RowBlocks`). ``dY`` may be the
    :class:`RowBlocks` of the layer above: each block reads its own rows as they are."""
    g_second = {name: np.zeros_like(a) for name, a in g.items()}
    T, _, I = split.parts[0].X.shape
    N = sum(part.X.shape[1] for part in split.parts)
    blocks = split.blocks()
    dYs = dY.arrays if isinstance(dY, RowBlocks) else (None, None) if dY is None else \
        tuple(dY[:, rows] for rows in blocks)
    workspaces = tuple(Workspace() if part.workspace is None else part.workspace
                       for part in split.parts)
    dX = None
    if input_grad and not keep_blocks:
        dX = np.empty((T, N, I), split.parts[0].X.dtype) if dX_out is None else dX_out
    passes, outs = [], []
    for part, rows, dY_b, grads, ws in zip(split.parts, blocks, dYs, (g, g_second),
                                           workspaces):
        # each block's input gradient into an array of its workspace: kept there
        # (keep_blocks) or copied into its rows of dX by its own thread as its pass ends
        # (joining the blocks' afterwards with np.concatenate ran on one thread: 52 MB at
        # (128, 200, 256, 512))
        out = ws.take("dX", part.X.shape, part.X.dtype) if input_grad else None
        passes.append(dict(
            eq=eq, cache=part, dY=dY_b, dh_n=None if dh_n is None else dh_n[rows],
            dc_n=None if dc_n is None else dc_n[rows], w=w, g=grads, input_grad=input_grad,
            consume=consume, dX_out=out,
            dX_rows=dX[:, rows] if dX is not None else _NOWHERE[part.X.dtype.type][3]))
        outs.append(out)
    (dX1, dh1, dc1), (dX2, dh2, dc2) = _run_blocks(prepare_backward, passes,
                                                   _block_flops(w, T, split.rows))
    if keep_blocks:
        dX = RowBlocks((dX1, dX2), workspaces) if input_grad else None
    elif input_grad:
        for ws, out in zip(workspaces, outs):
            ws.give(dX=out)
    for name, a in g_second.items():
        g[name] += a
    return (dX, np.concatenate([dh1, dh2]),
            None if dc1 is None else np.concatenate([dc1, dc2]))


def sequence_forward(eq, X: np.ndarray, h0: np.ndarray, c0: np.ndarray | None, w: Weights,
                     lengths: np.ndarray | None = None, active: np.ndarray | None = None,
                     reverse: bool = False, workspace: Workspace | None = None,
                     h_mask: np.ndarray | None = None, zone: Zoneout | None = None,
                     states_internal: bool = False,
                     states: np.ndarray | None = None) -> SequenceCache:
    """Run one direction of one layer. ``X`` (T, N, I) C-contiguous; ``h0`` (N, P); ``c0``
    (N, H) for an LSTM. With variable lengths the batch must be sorted longest first and
    ``lengths`` (N,) / ``active`` (T,) given (``active[t] = #{b : lengths[b] > t}``).
    ``h_mask`` (N, P), recurrent (variational) dropout: every step's recurrent GEMM reads
    ``h_prev * h_mask`` instead of ``h_prev`` (a cell's direct use of ``h_prev``, as the GRU's
    ``z * h_prev``, is not masked). ``zone``: zoneout, see :class:`Zoneout` (its ``c_new`` is
    filled here).

    The output sequence is ``output_view(cache)``; the final states ``final_states(cache,
    lengths, h_n, c_n)``. ``workspace`` lends the internal arrays (see :class:`Workspace`);
    ``states_internal``: the hidden states never reach the caller (it copies the output out,
    :func:`forward_into`, or the layer is an inner one), so they are internal arrays too.
    ``states`` (T+1, N, P): where the states go, the caller's (a direction's columns of the
    array a bidirectional layer's directions share, :func:`shares_states`; zeros where a
    step skips rows), in place of an array of the pass's own.
    """
    run, finish, _ = prepare_forward(eq, X, h0, c0, w, lengths, active, reverse, workspace,
                                     h_mask, zone, states_internal, states)
    run()
    return finish()


def prepare_forward(eq, X: np.ndarray, h0: np.ndarray, c0: np.ndarray | None, w: Weights,
                    lengths: np.ndarray | None = None, active: np.ndarray | None = None,
                    reverse: bool = False, workspace: Workspace | None = None,
                    h_mask: np.ndarray | None = None, zone: Zoneout | None = None,
                    states_internal: bool = False, states: np.ndarray | None = None,
                    step_operand=None, out: np.ndarray | None = None,
                    X_from: np.ndarray | None = None) -> tuple:
    """:func:`sequence_forward` (same arguments) in three parts: this call's Python setup (the
    workspace's arrays, the initial states, the schedule, the per-step matrix packed), and
    ``(run, finish, operand)``: ``run()`` projects the input and runs the loop, ``finish()``
    returns the :class:`SequenceCache`; ``operand`` is the per-step matrix in the form the
    loop takes, which another pass over no more rows, with the same weights, may take as its
    ``step_operand`` instead of packing its own (a row block's second block:
    :func:`sequence_forward_rows`). For a row block: ``X_from`` (T, N, I), its rows of the
    layer's input, which the pass copies into ``X`` (an array to fill) first; ``out``
    (T, N, P), its rows of the layer's output, where the pass copies its output sequence (an
    empty array: nowhere); and where :func:`fuses_block` says so, all of ``run`` is one
    compiled call (:mod:`elman.fast._block`).

    Why: two passes that run at once on two threads (row blocks) each need the GIL for their
    Python, and on a virtual machine whose idle cores halt each hand-off of the GIL to a
    thread that waits for it costs that thread ~30 us of wake-up; with the setup of both
    blocks done by the caller before either runs, and the bookkeeping after both, each
    thread's part is calls that release the GIL."""
    ws = Workspace() if workspace is None else workspace
    T, N, _ = X.shape
    W_ih, W_hh, W_hr = w["weight_ih"], w["weight_hh"], w.get("weight_hr")
    GH = W_ih.shape[0]
    H = GH // eq.gates
    P = W_hh.shape[1]
    dtype = X.dtype
    # 1. input projection for every step at once
    # the cell folds what it can of b_hh into GX; `consts` is whatever else its steps need
    gx_bias, consts = eq.prepare_forward(w, H, dtype)
    # The loop's GEMM covers the gate rows that take h_prev itself (all of them, except the
    # candidate of the classic GRU, which takes r * h_prev and is the cell's own GEMM).
    K = eq.recurrent_gates * H
    kernels = fast.kernels_for(eq, dtype)         # the compiled loops, or None: NumPy steps
    # (the per-step GEMMs get the threads their size earns: elman.threads)
    step_threads = threads.for_gemm(N, K, P)
    if step_operand is None:
        kept = ws.take_any(PACKINGS[True])
        W_hh_T, packing = _step_operand(W_hh[:K], True, T, N, kernels,
                                        step_threads.one_thread, kept)
    else:                       # (another pass's, which gives its packing back itself)
        W_hh_T, kept, packing = step_operand, None, None
    W_hr_T = None if W_hr is None else _step_matrix(W_hr.T, T, N)
    if kernels is not None and W_hr_T is not None:
        W_hr_T = fast.matrix_operand(W_hr_T)     # (the form the compiled loops take)
    GX = ws.take("GX", (T, N, GH), dtype)
    # States: rows that a step skips must read as zeros (padding) or as the initial state.
    zero = active is not None
    # (the hidden states are the output: fresh, unless they never reach the caller)
    S = states if states is not None else ws.take("S", (T + 1, N, P), dtype, zero) \
        if states_internal else ws.new((T + 1, N, P), dtype, zero)
    C = ws.take("C", (T + 1, N, H), dtype, zero) if eq.has_cell else None
    R = ws.new((T, N, H), dtype, zero) if W_hr is not None else None  # read by dW_hr GEMM
    saved_row = _saved_elements(eq, kernels, H)
    saved = ws.take("saved", (T, N, saved_row), dtype, zero) if saved_row else None
    _plant_initial(S, C, h0, c0, reverse)
    if reverse and lengths is not None:
        # The reverse pass of sequence b starts at its own last step, t = lengths[b]-1, whose
        # "previous" slot is S[lengths[b]]: plant the initial state there.
        cols = np.arange(N)
        S[lengths, cols] = h0
        if C is not None:
            C[lengths, cols] = c0
    gh = ws.new((N, K), dtype)
    if zone is not None and C is not None:
        zone.c_new = ws.new((T, N, H), dtype, zero)
    schedule = _schedule(T, N, active, reverse)
    gemm_address = fast_mkl.gemm_address(dtype) if out is not None and \
        X.flags.c_contiguous and fuses_block(eq, kernels, R is not None) else 0

    kept_by_run = {}            # (what the input's transform kept for its backward)
    loop = ForwardLoop(GX, _loop_bias(gx_bias, GH, dtype), W_hh_T, S, C, saved, gh, consts,
                       schedule, R, W_hr_T, h_mask, zone) if kernels is not None else None

    def run(ring=None) -> None:
        if gemm_address:
            loop.runner = _fused_runner(kernels, (
                _NO_BELL if ring is None else ring.bell, 0 if ring is None else ring.gen,
                gemm_address, _NOWHERE[dtype.type][3] if X_from is None else X_from, X,
                W_ih.T, GX.reshape(T * N, GH), S[:-1] if reverse else S[1:], out))
            with step_threads:
                kernels.forward(eq, loop)
            return
        if ring is not None:
            ring()
        if X_from is not None:
            X[...] = X_from
        kept_by_run["input_state"] = _project(eq, kernels, X, w, GX)
        if kernels is None and gx_bias is not None:
            np.add(GX, gx_bias, out=GX)   # (the compiled loops add it as they read GX)
        with step_threads:
            if kernels is not None:
                kernels.forward(eq, loop)
            else:
                _reference_forward(eq, GX, W_hh_T, W_hr_T, S, C, R, saved, gh, consts,
                                   schedule, h_mask, zone)
        if out is not None and out.size:
            out[...] = S[:-1] if reverse else S[1:]

    def finish() -> SequenceCache:
        if step_operand is None:
            ws.give(**{PACKINGS[True]: kept if packing is None else packing})
        return SequenceCache(X, GX, saved, S, C, R, active, reverse, consts,
                             None if kernels is None else kernels.__name__, workspace, h_mask,
                             kept_by_run.get("input_state"), zone,
                             states_internal=states_internal,
                             input_internal=X_from is not None)
    return run, finish, W_hh_T


_NO_BELL = np.zeros(8, np.int64)     # (a fused pass with no partner's bell to ring)
#: empty arrays of each float dtype by dimension: a fused pass's arguments it does not use
_NOWHERE = {t: {d: np.empty((0,) * d, t) for d in (2, 3)} for t in (np.float32, np.float64)}


def fuses_block(eq, kernels, projected: bool) -> bool:
    """Whether a row block's pass runs its input projection, its loop and its output copy as
    one compiled call (:mod:`elman.fast._block`, which says why): a kernel module that calls
    its loop once through :meth:`ForwardLoop.run` (its ``fused_calls``), whose loops take the
    plain projection ``X W_ih^T`` (:func:`_loops_take_plain_projection`), no ``proj_size``
    and MKL on (its GEMM is called through its address; :func:`elman.fast._mkl.gemm_address`)."""
    return (kernels is not None and _kernel_attribute(kernels, "fused_calls") is not None
            and _loops_take_plain_projection(eq, kernels) and not projected
            and fast_mkl.enabled())


def _loops_take_plain_projection(eq, kernels) -> bool:
    """Whether the compiled loops of ``kernels`` take ``X W_ih^T`` as it comes from the GEMM,
    nothing done to it before or after them: the cell transforms nothing (neither it nor the
    kernel module has a ``transform_input``), or the kernel module's loops do the cell's
    transform themselves (``transforms_in_loop``: the layer norm's, whose twins of
    ``transform_input`` and ``transform_input_backward`` then do nothing)."""
    if _kernel_attribute(kernels, "transforms_in_loop"):
        return True
    return (_kernel_attribute(kernels, "transform_input") is None
            and not _overrides(type(eq), "transform_input"))


def _fused_runner(kernels, block: tuple):
    """:attr:`ForwardLoop.runner` (:attr:`BackwardLoop.runner`) for a fused pass: the kernel
    module's fused call of the loop function it runs (``fused_calls``), on ``block``."""
    calls = kernels.fused_calls
    return lambda loop_function, args: calls[loop_function](block, args)


@functools.lru_cache(maxsize=None)
def _overrides(cell: type, method: str) -> bool:
    """Whether a cell class overrides the base class's ``method`` (``transform_input`` and
    the like, which do nothing there): more than one class in its MRO defines it."""
    return sum(method in vars(c) for c in cell.__mro__) > 1


def _reference_forward(eq, GX, W_hh_T, W_hr_T, S, C, R, saved, gh, consts, schedule, h_mask,
                       zone) -> None:
    """Step 2 of :func:`sequence_forward` with the cell's NumPy equations (the reference for
    the compiled loops): the recurrence, one GEMM and the cell's element-wise math per step."""
    for t, p, q, n in schedule:
        h_prev = S[p, :n]
        np.matmul(h_prev if h_mask is None else h_prev * h_mask[:n], W_hh_T, out=gh[:n])
        h_new = R[t, :n] if R is not None else S[q, :n]
        eq.forward(GX[t, :n], gh[:n], consts, h_prev,
                   None if C is None else C[p, :n], h_new, None if C is None else C[q, :n],
                   None if saved is None else saved[t, :n])
        if R is not None:
            # 3. LSTM projection h = W_hr r
            np.matmul(R[t, :n], W_hr_T, out=S[q, :n])
        if zone is not None:
            _zone_step(zone, t, n, S[p, :n], S[q, :n],
                       None if C is None else C[p, :n], None if C is None else C[q, :n])


def runs_lean(kernels, T: int, N: int, K: int, P: int, directions: int = 1) -> bool:
    """Whether a call that keeps and masks nothing (the caller checks that) of a layer with
    ``directions`` directions may run :func:`sequence_forward_lean`: compiled loops, less
    recurrent work per direction than :data:`LEAN_MAX_FLOPS` (so no row blocks; any amount for
    one sequence of one direction, which has no rows to split) and, with two directions, than
    :data:`OVERLAP_MIN_FLOPS` (so the directions would not run at once), and a per-step GEMM
    that OpenBLAS keeps on one thread by itself (so no thread count to set).

    Why any amount for one sequence: its general path runs the same loop on one thread too
    (the step's matrix-vector product is one thread's), with the workspaces' bookkeeping and
    BLAS's GEMV where the lean path multiplies by kept panels. It is the way of a batch of one
    whose steps do not run on two threads (a neighbour busy, or the pair rule's sizes not
    met): beside a process spinning on one of the two cores (the Intel Xeon, 50 steps, one
    process, alternating, medians of 30; the same results bit for bit) LSTM H = 256 1942 ->
    1337 us, two layers 3260 -> 2807, GRU H = 256 1547 -> 991, RNN H = 512 1151 -> 770."""
    flops = 2.0 * T * N * K * P
    return (kernels is not None
            and (flops < LEAN_MAX_FLOPS or (N == 1 and directions == 1))
            and (directions == 1 or flops < OVERLAP_MIN_FLOPS)
            and threads.one_thread_product(N, K, P))


def pairs_directions(kernels, T: int, N: int, K: int, P: int) -> bool:
    """Whether a bidirectional call that keeps and masks nothing (the caller checks that; and,
    at the moment of the call, :func:`elman.threads.two_threads_free`) may run each layer's
    two directions at once (:func:`stack_forward_pair`): recurrent work a direction (T steps
    of ``(N x P) @ (P x K)``) from :data:`PAIR_DIRECTIONS_MIN_FLOPS` to
    :data:`PAIR_DIRECTIONS_MAX_FLOPS`, a kernel module with a ``forward_stack_pair`` and no
    ``transform_input``, and a machine where the pair runs (:func:`elman.fast.pair_supported`)."""
    flops = 2.0 * T * N * K * P
    if kernels is None or not PAIR_DIRECTIONS_MIN_FLOPS <= flops < PAIR_DIRECTIONS_MAX_FLOPS:
        return False
    attributes = vars(kernels)
    return (attributes.get("forward_stack_pair") is not None
            and attributes.get("transform_input") is None and fast.pair_supported())


def pair_rule(eq, kernels, T: int, N: int, H: int, dtype, directions: int = 1) -> str | None:
    """Whether a call that keeps and masks nothing (the caller checks that) runs each step of
    its sequence on two threads (:func:`sequence_forward_pair`): ``"pair"`` (yes), ``"measure"``
    (either way may be faster: the caller times both as its calls run and takes the faster,
    :data:`PAIR_MEASURED_MIN_BYTES`) or None (no). Never for less than one sequence (N = 1),
    a cell whose kernel module has no ``forward_pair`` (or whose ``pairs(eq)`` says no to this
    cell's options), fewer than :data:`PAIR_MIN_STEPS` steps, H not a multiple of
    :data:`elman.fast._pair.ALIGN` (the split on a cache line), where
    :func:`elman.fast.pair_supported` says no (not x86-64, or NumPy's BLAS not found;
    measured on an AMD EPYC and an Intel Xeon), or without two threads free
    (:func:`elman.threads.two_threads_free`). ``"pair"`` for a ``W_hh`` of
    :data:`PAIR_MIN_BYTES` to :data:`PAIR_MAX_BYTES` (two directions: from
    :data:`PAIR_BIDIRECTIONAL_MIN_BYTES`, and only where the directions do not run at once
    instead, :func:`pairs_directions`: measured, the directions at once 1.07-1.5x as fast
    as each on both threads in turn at H = 256, even at H = 384-512), ``"measure"`` from
    :data:`PAIR_MEASURED_MIN_BYTES` to there (one direction; :data:`PAIR_MIN_BYTES` is beyond
    :data:`PAIR_MAX_BYTES`: every size measures)."""
    rule = pair_size_rule(eq, kernels, T, N, H, dtype, directions)
    return rule if rule is not None and threads.two_threads_free() else None


def pair_size_rule(eq, kernels, T: int, N: int, H: int, dtype,
                   directions: int = 1) -> str | None:
    """:func:`pair_rule` but for its one question about the moment (whether two threads are
    free): what a call of these sizes would take if they were. A plan of such calls
    (:class:`elman.lean_plan.LeanPlan`) keeps it and asks the moment at each call."""
    if kernels is None or N != 1 or T < PAIR_MIN_STEPS \
            or not fast.pair_supported() or H % fast.pair().ALIGN:
        return None
    if directions == 2 and pairs_directions(kernels, T, N, eq.recurrent_gates * H, H):
        return None
    attributes = vars(kernels)
    pairs = attributes.get("pairs")
    if attributes.get("forward_pair") is None or (pairs is not None and not pairs(eq)):
        return None
    size = eq.gates * H * H * np.dtype(dtype).itemsize
    if size > PAIR_MAX_BYTES:
        return None
    if size >= (PAIR_MIN_BYTES if directions == 1 else PAIR_BIDIRECTIONAL_MIN_BYTES):
        rule = "pair"
    elif directions == 1 and size >= PAIR_MEASURED_MIN_BYTES:
        rule = "measure"
    else:
        return None
    return rule


def sequence_forward_pair(eq, kernels, X: np.ndarray, h0: np.ndarray, c0: np.ndarray | None,
                          w: Weights, workspace: Workspace | None = None,
                          aside: bool = True) -> tuple:
    """``(S, c_n)`` for one sequence (``X`` (T, 1, I)): the states ``S`` (T + 1, 1, P) of
    :func:`sequence_forward_lean` and the final cell state (1, 1, H) (None without one), each
    step's hidden units split between this thread and elman's partner thread
    (:mod:`elman.fast._pair`: the protocol, and why). The lean path's equations and order of
    operations (the input projection in column blocks: float32 results may differ from the
    lean path's in the last bits).

    Why: a batch of one reads all of ``W_hh`` at every step, and one core's cache bandwidth
    bounds it (an LSTM at H = 256: 1 MB a step, 17 us); two cores each keep half of it in
    their own cache. Each thread also projects the input for its units, over the whole
    sequence, as the first thing its first step does (products of T rows: by ``W_ih``'s kept
    panels where ``W_hh``'s are kept, :func:`elman.fast._pair.project_units`; else BLAS, held
    to one thread: its own pool's worker would spin beside the two threads). Measured: see
    :data:`PAIR_MIN_BYTES`. The arrays that never leave the call (the gates, the cell
    states) come from ``workspace`` (:func:`elman.fast._pair.sequence_arrays`).

    ``aside``: where :func:`check_aside` allows, ``W_hh``'s kept panels, if steady, are
    trusted while the partner checks them before it joins the steps (it arrives tens of
    microseconds after the caller, which starts alone either way; the check in line cost the
    caller ~100 us at H = 256 and evicted the first steps' panels), and the call runs again
    with the check in line if ``W_hh`` had changed."""
    pair = fast.pair()
    T, N, I = X.shape
    W_ih, W_hh = np.ascontiguousarray(w["weight_ih"]), np.ascontiguousarray(w["weight_hh"])
    GH, dtype = W_ih.shape[0], X.dtype
    H = GH // eq.gates
    gx_bias, consts = eq.prepare_forward(w, H, dtype)
    bias = _loop_bias(gx_bias, GH, dtype)      # (pair_rule told the load monitor work starts)
    X2 = np.ascontiguousarray(X.reshape(T, I))
    ws = workspace if workspace is not None else Workspace()
    GX, g, S, C, sync, kept = pair.sequence_arrays(T, GH, H, eq.has_cell, dtype,  # (g: the
                                                   ws.take_any("pair"))     # kernel's scratch)
    S[0] = h0[0]
    if C is not None:
        C[0] = c0[0]
    split = pair.split_point(H)
    partner = pair.partner()
    pair_forward = kernels.forward_pair
    packs = kept_packs([ws], T, 1) if _pair_panels(T, W_hh, split) else None
    panels = ih_panels = fast.empty(dtype, 1)
    compute, check = 0, None
    if packs is not None:
        check = check_aside(T, 1, W_hh.nbytes + W_ih.nbytes) if aside else None
        panels = packs[0][0].panels(W_hh, check).reshape(-1)
        if W_ih.dtype == np.float32:       # (the projection's panels too: fast._pair.project_units)
            ih_panels = packs[0][1].panels(W_ih, check).reshape(-1)
        compute = fast_packed.compute_address()
        if check is not None and not check.prepare():
            check = None

    def steps(gen, me):
        if me == 1 and check is not None:
            check.run_here()
        return pair_forward(eq, X2, W_ih, bias, W_hh, panels, ih_panels, compute, consts, GX, g,
                            S, C, sync, partner.bell, gen, me, split, partner.patience,
                            partner.spins)

    try:
        if ih_panels.shape[0] or threads.one_thread_product(T, H - split, I):
            partner.share(steps)       # (no BLAS in the projections, or BLAS keeps them to one
        else:                          # thread by itself)
            with threads.one_blas_thread():                # (else it would use its pool's)
                partner.share(steps)
        # (before the panels go back: their source must stay as checked)
        stale = check is not None and not check.holds()
    finally:               # (a partner that comes late reads nothing of them: fast._pair)
        give_packs([ws], packs)
    ws.give(pair=kept)
    if stale:
        return sequence_forward_pair(eq, kernels, X, h0, c0, w, workspace, False)
    c_n = None if C is None else C[T].reshape(1, 1, H).copy()
    return S.reshape(T + 1, 1, H), c_n


def _pair_panels(T: int, W_hh: np.ndarray, split: int) -> bool:
    """Whether a pair call's threads multiply by ``W_hh``'s kept panels
    (:func:`elman.fast._pair.unit_rows`): where a batch of one's would pay
    (:func:`elman.fast._packed.one_row_worth`), and each thread's rows of each gate block are
    whole panels (H and the split point multiples of :data:`elman.fast._packed.NR`)."""
    GH, P = W_hh.shape
    H = P                                # (no projection on this path: the state is h)
    NR = fast_packed.NR
    return H % NR == 0 and split % NR == 0 and fast_packed.one_row_worth(T, P, GH, W_hh.dtype)


def lean_operands(eq, kernels, w: Weights, T: int, N: int, kept=None, aside=None,
                  blocks: bool = False, packings: tuple | None = None) -> tuple:
    """``(W_ih, bias, W_hh_T, consts)`` of one layer-direction for the lean path's compiled
    loop: the input projection's matrix (``W_ih`` itself; with ``kept``, ``W_ih^T`` in
    :func:`elman.fast.matrix_operand`'s form or its panels, :func:`_input_operand`: the loops
    take either, :func:`elman.fast._loop.project_by`), the cell's step constants
    (``eq.prepare_forward``), the (G*H,) bias each step adds, and the per-step GEMM's matrix
    (one row: :func:`_one_row_operand` with ``kept``, else ``W_hh^T`` itself,
    :func:`_plain_operand`; more rows: :func:`_step_operand` on one thread); ``kept``:
    the layer-direction's kept packings of ``W_hh`` and ``W_ih`` (:func:`kept_packs`), for
    more rows its forward packing (:class:`~elman.fast._pass_packing.PassPacking`,
    :func:`holding_packs`), or None. Made afresh at every call, like the general path's (a
    kept packing only where its matrix is bit for bit the one packed, or frozen): weights
    changed in place between calls are always seen. ``aside``: where the packings' checks run
    beside the call (:func:`lean_call`); ``blocks``: for the row blocks of
    :func:`stack_forward_rows` (:func:`_rows_operand`, :func:`_rows_input_operand`; with
    ``kept``, the panels they pack kept there; with ``packings``, the pair of
    :class:`~elman.fast._pass_packing.PassPacking` their MKL forms pack into)."""
    W_ih, W_hh = w["weight_ih"], w["weight_hh"]
    GH = W_ih.shape[0]
    H = GH // eq.gates
    K = eq.recurrent_gates * H
    gx_bias, consts = eq.prepare_forward(w, H, W_ih.dtype)
    W_step = W_hh if K == W_hh.shape[0] else W_hh[:K]      # (a classic GRU's: the r, z rows)
    bias = _loop_bias(gx_bias, GH, W_ih.dtype)
    if blocks:
        step, projection = (None, None) if packings is None else packings
        return (_rows_input_operand(W_ih, kept and kept[1], projection, T * N), bias,
                _rows_operand(W_step, T, N, kept and kept[0], step), consts)
    if N != 1:           # (kept: a batch's packing, holding_packs, or None)
        return W_ih, bias, _step_operand(W_step, True, T, N, kernels, True, kept)[0], consts
    if kept is None:      # (a streaming caller's one-step calls: W_ih and W_hh^T themselves,
        return W_ih, bias, _plain_operand(W_step), consts  # no more to type: fast._loop.project_by)
    return (_input_operand(W_ih, kept[1], aside), bias,
            _one_row_operand(W_step, T, kept[0], aside), consts)


#: the fewest bytes of matrices (``W_hh`` and ``W_ih`` together) a call's kept packings check
#: for the check to run beside it (:func:`check_aside`): handing it over costs some Python, and
#: below this the check in line cost no more. Measured through the layer (batch 1, 50 steps,
#: one process, alternating, medians of 40), once the hand-over's arrays came from one compiled
#: call: LSTM H = 128 (320 KB) 1.04-1.06x with the check aside, GRU H = 128 (240 KB)
#: 0.99-1.01x, GRU H = 96 (138 KB) 0.89x (before that change, from 512 KB: GRU H = 128 0.89x,
#: LSTM H = 128 1.01x, LSTM H = 192 (576 KB + 96 KB) 1.22x, LSTM H = 256 (1.1 MB) 1.03-1.27x)
ASIDE_MIN_BYTES = 256 * 1024


def check_aside(T: int, N: int, nbytes: int):
    """A :class:`elman.fast._pair.CheckAside` for a lean call of ``T`` steps of ``N`` rows
    whose kept packings (:func:`kept_packs`) of ``nbytes`` of matrices the partner thread may
    check while the call runs (:func:`lean_call`): a batch of one long enough to keep them,
    :data:`ASIDE_MIN_BYTES` or more, the pair's machine and a core free for it now
    (:func:`elman.threads.partner_core_free`). Else None (the checks in line)."""
    if N != 1 or T < fast_packed.ONE_ROW_MIN_STEPS or nbytes < ASIDE_MIN_BYTES \
            or not fast.pair_supported() or not threads.partner_core_free():
        return None
    return fast.pair().CheckAside()


def lean_call(run, eq, kernels, w: Weights, T: int, N: int, kept):
    """``run(W_ih, bias, W_hh_T, consts)``, a lean compiled call on :func:`lean_operands` of
    one layer-direction with the kept packings ``kept`` (or None): where the partner may
    (:func:`check_aside`), with the packings trusted while the partner compares their matrices
    with the copies they were packed from (:class:`elman.fast._pair.CheckAside`: why), and
    made again with the checks in line (which pack anew) if a matrix had changed."""
    aside = None if kept is None else \
        check_aside(T, N, w["weight_hh"].nbytes + w["weight_ih"].nbytes)
    operands = lean_operands(eq, kernels, w, T, N, kept, aside)
    if aside is None:
        return run(*operands)
    aside.start()
    result = run(*operands)
    if aside.holds():
        return result
    return run(*lean_operands(eq, kernels, w, T, N, kept))


def _plain_operand(W: np.ndarray):
    """A batch of one's per-step matrix where no panels are kept (short calls): ``W.T``
    itself, a transposed view that the kernels' ``gemm`` multiplies as it does the operand
    tuple's (:func:`elman.fast.matrix_operand`) matrix, where ``W`` is C-contiguous; else that
    tuple. Why: numba types an array at each call faster than a tuple of five (a streaming
    caller's one-step calls ran 1.06-1.11x as fast with it, RNN, GRU and LSTM at H = 64-128,
    bit for bit the same; in-process A/B, medians of 40)."""
    return W.T if W.flags.c_contiguous else fast.matrix_operand(W.T)


def _input_operand(W_ih: np.ndarray, kept, aside=None) -> tuple:
    """The lean loops' input projection matrix, ``W_ih^T``: its panels kept in ``kept`` (a
    :class:`elman.fast._packed.KeptPack`, for a batch of one: :func:`kept_packs`) where the
    micro-kernel takes them (float32, G*H a multiple of its vectors) and they fit half a
    core's L2 (:func:`pipe_max_bytes`), else ``W_ih^T`` itself (BLAS's GEMM). Why: OpenBLAS
    packs ``W_ih`` at every call, and a batch of one's projection of T rows (K = I, often
    small) ran faster by the panels: GRU, H = 128, I = 32, a compiled lean call of 50 steps,
    201 against 186 us, of 8 steps 47 against 36 (the projection of a pipeline's chunk of
    8 steps: :func:`stack_forward_pipe`)."""
    if kept is not None and _projection_panels_apply(W_ih) \
            and W_ih.nbytes <= pipe_max_bytes():
        return fast.packed_operand(kept.panels(W_ih, aside),
                                   fast_packed.compute_address(), W_ih)
    return fast.matrix_operand(W_ih.T)


def _projection_panels_apply(W_ih: np.ndarray) -> bool:
    """Whether the micro-kernel can project by ``W_ih^T``'s panels: float32, C-contiguous,
    G*H a multiple of its vectors, the panels on (:func:`_input_operand`,
    :func:`_rows_input_operand`)."""
    return W_ih.dtype == np.float32 and W_ih.flags.c_contiguous \
        and W_ih.shape[0] % fast_packed.VW == 0 and fast_packed.enabled()


def _one_row_operand(W: np.ndarray, T: int, kept, aside=None) -> tuple:
    """A batch of one's per-step matrix (``h W^T``, a matrix-vector product a step): ``W``'s
    panels where they pay (:func:`elman.fast._packed.one_row_worth`), kept from call to call in
    ``kept`` (:class:`elman.fast._packed.KeptPack`, repacked only when ``W`` changed); else
    ``W.T`` itself, never copied (:func:`elman.fast._blas.gemm`'s GEMV on ``W``)."""
    if kept is not None and W.flags.c_contiguous \
            and fast_packed.one_row_worth(T, W.shape[1], W.shape[0], W.dtype):
        return fast.packed_operand(kept.panels(W, aside), fast_packed.compute_address(), W)
    return fast.matrix_operand(W.T)


def kept_packs(workspaces: list, T: int, N: int) -> list | None:
    """The layer-directions' kept packings (:class:`elman.fast._packed.KeptPack`), a pair each:
    ``W_hh``'s and ``W_ih``'s, for a call of ``T`` steps of ``N`` rows, taken from their
    workspaces for the call (new ones where none were kept, or another thread holds them); None
    for a batch (its passes pack afresh: :func:`_step_operand`) and for fewer steps than the
    panels pay for (:data:`elman.fast._packed.ONE_ROW_MIN_STEPS`: a streaming caller's one-step
    calls skip even the taking). Hand them back with :func:`give_packs` once the compiled call
    is done."""
    if not _keeps_packs(T, N):
        return None
    return _take_packs(workspaces)


def _take_packs(workspaces: list) -> list:
    """:func:`kept_packs` for any call: the layer-directions' pairs of kept packings, taken
    from their workspaces (new ones where none were kept, or another thread holds them)."""
    return [ws.take_any("kept_packs") or (fast_packed.KeptPack(), fast_packed.KeptPack())
            for ws in workspaces]


def _keeps_packs(T: int, N: int) -> bool:
    """Whether a call of ``T`` steps of ``N`` rows keeps packings (:func:`kept_packs`)."""
    return N == 1 and T >= fast_packed.ONE_ROW_MIN_STEPS


def give_packs(workspaces: list, packs: list | None) -> None:
    """:func:`kept_packs`' packings (or a batch's, :func:`holding_packs`) back into their
    workspaces, for the next call."""
    if packs is not None:
        for ws, kept in zip(workspaces, packs):
            if isinstance(kept, PassPacking):
                ws.give(**{PACKINGS[True]: kept})
            else:
                ws.give(kept_packs=kept)


#: the fewest steps for which a lean call of a batch may pack its per-step matrix
#: (:func:`_step_operand`: MKL's and the kernels' own rules both ask at least this many)
BATCH_PACK_MIN_STEPS = min(fast_mkl.MIN_STEPS, fast_packed.MIN_STEPS)


def holding_packs(workspaces: list | None, T: int, N: int):
    """``with holding_packs(workspaces, T, N) as packs:`` :func:`kept_packs` for the block
    (None without workspaces), given back (:func:`give_packs`) when it ends, however it ends.
    The block's compiled call must be done with them by then (a partner that comes late to a
    pair call reads nothing: :mod:`elman.fast._pair`). For a batch (``N`` > 1) of enough steps
    to pack (:data:`BATCH_PACK_MIN_STEPS`), the layer-directions' packings of the general
    path's forward instead (:data:`PACKINGS`, :class:`~elman.fast._pass_packing.PassPacking`),
    which a lean pass packs into as that path's passes do (:func:`lean_operands`). Where
    nothing is kept (a short call) a context that holds nothing (a streaming caller's short
    calls paid ~1 us for a generator's context they did not use).

    Why a batch's: its lean call packed into a new buffer at every call (MKL asks 9-16 MB,
    :func:`elman.fast._mkl.pack`), and a frozen model's packing was never kept. Measured (the
    code before and after in alternating processes, medians of 9): a bidirectional LSTM at
    (4, 16, 32, 128) 2.12x as fast, two bidirectional GRU layers there 1.90x (their two
    directions at once on two threads, each with a new buffer at every call); one direction
    0.98-1.00x (15 pairs). The frozen LSTM at (4, 16, 32, 128) took 215 us a call packing
    and 171 with its packing kept (one process, alternating, medians of 25); the GRU there
    197 and 161."""
    if not workspaces:
        return _HOLDING_NOTHING
    if _keeps_packs(T, N):
        return _holding(workspaces, kept_packs, T, N)
    if N > 1 and T >= BATCH_PACK_MIN_STEPS:
        return _holding(workspaces, _batch_packs, T, N)
    return _HOLDING_NOTHING


_HOLDING_NOTHING = contextlib.nullcontext(None)


def _batch_packs(workspaces: list, T: int, N: int) -> list:
    """The layer-directions' forward packings (:data:`PACKINGS`), taken from their workspaces
    (new ones where none were kept, or another thread holds them)."""
    return [ws.take_any(PACKINGS[True]) or PassPacking() for ws in workspaces]


@contextlib.contextmanager
def _holding(workspaces: list, take, T: int, N: int):
    packs = take(workspaces, T, N)
    try:
        yield packs
    finally:
        give_packs(workspaces, packs)


def lean_stack(kernels, T: int, N: int, GH: int, I: int, D: int, H: int):
    """The kernel module's ``forward_stack_lean`` where it may run a lean call of ``T`` x
    ``N`` through a stack of ``D`` directions (first input width ``I``, ``GH`` gate rows, ``H``
    units) as one compiled call (:func:`stack_forward_lean`): it has one, no
    ``transform_input``, and every projection stays on one BLAS thread by itself. Else None."""
    attributes = vars(kernels)
    stack = attributes.get("forward_stack_lean")
    if stack is None or attributes.get("transform_input") is not None \
            or not threads.one_thread_product(T * N, GH, max(I, D * H)):
        return None
    return stack


def stack_forward_lean(eq, kernels, X: np.ndarray, h0: np.ndarray, c0: np.ndarray | None,
                       weights: list, D: int, stack=None,
                       workspaces: list | None = None, operands=None) -> tuple | None:
    """``(out, h_n, c_n)`` of a whole stack (``weights[k]`` of layer-direction ``k = layer *
    D + direction``, ``h0``/``c0`` (L*D, N, H)) for a small call that keeps nothing, as one
    compiled call: the kernel module's ``forward_stack_lean``, which runs each
    layer-direction's :func:`sequence_forward_lean` loop and writes the outputs of a layer's
    directions side by side into the next layer's input. None where that does not apply (no
    such kernel, a ``transform_input``, a projection OpenBLAS would thread: :func:`lean_stack`,
    whose answer a caller that has it passes as ``stack``; or parameters that are not
    C-contiguous, or writeable and read-only ones mixed, which the compiled call's tuples of
    one array type cannot hold (:func:`_one_array_type`); more than :data:`STACK_MAX`
    layer-directions): the caller then runs the
    layer-directions one by one. ``workspaces``: the layer-directions', where a batch of one
    keeps its packed matrices (:func:`kept_packs`). ``operands``: what :func:`stack_operands`
    returned for these weights, where the caller kept it (short calls of a frozen module or a
    batch of one: :meth:`elman.lean_plan.LeanPlan._kept_operands`); ``weights`` and
    ``workspaces`` are then not read.

    Why: each extra layer-direction of a small call cost about 8 us (RNN, (1, 3, 3, 64): 11 us
    for one layer, 34 us for two bidirectional ones), most of it Python around a compiled loop
    of 2-3 us (operands, a dispatch, outputs, ``np.concatenate``); onnxruntime's cost about 6.
    As one call: 27 us (A/B in one process, medians of 11; two bidirectional layers: RNN
    1.30x, GRU 1.17x, LSTM 1.14x as fast; one bidirectional layer 1.03-1.27x)."""
    T, N, I = X.shape
    if stack is None:
        stack = lean_stack(kernels, T, N, eq.gates * h0.shape[2], I, D, h0.shape[2])
        if stack is None:
            return None
    if operands is not None:
        threads.small_work_starts()
        return stack(eq, X, h0, c0, *operands, _schedules(T, N, D))
    with holding_packs(workspaces, T, N) as packs:
        operands = stack_operands(eq, kernels, weights, T, N, packs)
        if operands is None:
            return None
        return stack(eq, X, h0, c0, *operands, _schedules(T, N, D))


def stack_forward_pair(eq, kernels, X: np.ndarray, h0: np.ndarray, c0: np.ndarray | None,
                       weights: list, workspaces: list | None = None,
                       operands=None) -> tuple | None:
    """:func:`stack_forward_lean` of a bidirectional stack with the two directions of each
    layer at once, one on the caller's thread and one on the pair's partner thread
    (:func:`elman.fast._pair.pair_stack`, the kernel module's ``forward_stack_pair``): they
    meet once a layer, and BLAS stays at one thread inside. The caller checks
    :func:`pairs_directions` and that two threads are free; None where a parameter array is
    unusual (see :func:`stack_forward_lean`; ``workspaces`` and ``operands`` as there).

    Why: a bidirectional layer's directions share nothing but their input. Run at once by
    :func:`elman.threads.concurrently` (the general path) a call paid a Python thread's
    hand-over, tens of microseconds on this virtual machine, more than a batch-1 direction's
    whole time at the tiny sizes; in turn (the lean path) it paid both directions' time."""
    if operands is not None:
        threads.small_work_starts()
        return _stack_pair(eq, kernels, X, h0, c0, operands)
    with holding_packs(workspaces, *X.shape[:2]) as packs:
        operands = stack_operands(eq, kernels, weights, *X.shape[:2], packs)
        if operands is None:
            return None
        return _stack_pair(eq, kernels, X, h0, c0, operands)


def _stack_pair(eq, kernels, X, h0, c0, operands: tuple) -> tuple:
    """:func:`stack_forward_pair` on the layer-directions' operands (:func:`stack_operands`)."""
    T, N, _ = X.shape
    layers, H = h0.shape[0] // 2, h0.shape[2]
    outs = np.empty((layers, T, N, 2 * H), X.dtype)
    h_n = np.empty_like(h0)
    c_n = None if c0 is None else np.empty_like(c0)
    sync = np.zeros(layers * fast.pair().ROW, np.int64)   # (fresh: see pair_stack)
    _share_stack(kernels.forward_stack_pair,
                 (eq, X, h0, c0, *operands, _schedules(T, N, 2), outs, h_n, c_n, sync),
                 T * N, max(X.shape[2], 2 * H), eq, N, H)
    return outs[-1], h_n, c_n


#: the most recurrent GEMM work (flops of the T steps) for which a batch runs its stack as
#: row blocks on the pair (:func:`rows_rule`); above it, the general path's blocks (whose
#: projections run on MKL, and whose per-step matrices MKL packs for each block). Measured on
#: the Intel Xeon of 2026-12-06 (one process, the two ways alternating, calls back to back for
#: 0.3 s after a 0.15 s pause, medians of 5): LSTM and GRU, one and two layers, at
#: (32, 50, 16, 64) and (32, 60, 16, 64) (39-63 MFLOP) 1.54-1.74x as fast, (32, 100, 32, 64),
#: (64, 100, 32, 64) and (32, 200, 16, 64) (78-210) 1.10-1.31x, (32, 500, 32, 32) (98-131)
#: 0.98-1.14x; above it, at (64, 100, 32, 128) and (128, 100, 32, 64) (315-839), 0.90-1.02x
ROWS_MAX_FLOPS = float(1 << 28)
#: with MKL on (:mod:`elman.fast._mkl`), the most recurrent GEMM work for which a batch whose
#: state has at most :data:`ROWS_MKL_MAX_STATE` units runs its stack as row blocks on the pair:
#: there the blocks' large matrices are MKL's packed forms (:func:`_rows_operand`,
#: :func:`_rows_input_operand`), as the general path's. Measured on the Intel Xeon of
#: 2026-12-07 (Emerald Rapids; one process, the general path and the rows alternating, calls
#: back to back for 0.3 s after a 0.1 s pause, medians of 11): at P = 128 the rows 1.05-1.14x
#: as fast at (64, 100, 32, 128) (LSTM and GRU, one and two layers), 1.01-1.04x at (64, 100,
#: 128, 128), (64, 200, 32, 128), (128, 100, 32, 128), (256, 100, 32, 128) and (128, 200,
#: 128, 128) (LSTM, GRU, RNN; up to 1.7 GFLOP); at P = 192 1.007x; at P = 256 0.91-0.99x
#: (RNN at (128, 100, 32, 256), LSTM and GRU at (64, 100, 128, 256)): the general path's there
ROWS_MKL_MAX_FLOPS = float(1 << 31)
#: the largest state (P) for :data:`ROWS_MKL_MAX_FLOPS`
ROWS_MKL_MAX_STATE = 128


def rows_rule(eq, kernels, dtype, T: int, N: int, K: int, P: int, directions: int) -> bool:
    """Whether a batched call that keeps and masks nothing (the caller checks that; and, at
    the moment of the call, :func:`elman.threads.two_threads_free`) runs its whole stack as
    two row blocks at once, one on the caller's thread and one on the pair's partner
    (:func:`stack_forward_rows`): one direction (a bidirectional layer runs its directions
    at once instead: the rows measured 0.94-1.01x as fast as that at (64, 100, 32, 64)), less
    recurrent work than :data:`ROWS_MAX_FLOPS` (with MKL on and a state of at most
    :data:`ROWS_MKL_MAX_STATE`, :data:`ROWS_MKL_MAX_FLOPS`), where a layer's pass would run
    as row blocks on the general path (:func:`split_rows`: T steps of ``(N x P) @ (P x K)``),
    a kernel module with a ``forward_stack_rows`` and no ``transform_input``, and a machine
    where the pair runs (:func:`elman.fast.pair_supported`)."""
    most = ROWS_MKL_MAX_FLOPS if P <= ROWS_MKL_MAX_STATE and fast_mkl.enabled() \
        else ROWS_MAX_FLOPS
    if kernels is None or directions != 1 or 2.0 * T * N * K * P >= most \
            or not split_rows(eq, dtype, T, N, K, P):
        return False
    attributes = vars(kernels)
    return (attributes.get("forward_stack_rows") is not None
            and attributes.get("transform_input") is None and fast.pair_supported())


def stack_forward_rows(eq, kernels, X: np.ndarray, h0: np.ndarray, c0: np.ndarray | None,
                       weights: list, D: int, workspaces: list | None = None
                       ) -> tuple | None:
    """``(out, h_n, c_n)`` of a whole stack (as :func:`stack_forward_lean`) for a batch that
    keeps nothing, its rows in two blocks at once: the first ``ceil(N/2)`` through every
    layer and direction on the caller's thread, the rest on the pair's partner
    (:func:`elman.fast._pair.rows_stack`, the kernel module's ``forward_stack_rows``), BLAS at
    one thread inside; the blocks meet only at the end. The caller checks :func:`rows_rule`
    and that two threads are free; None where a parameter array is unusual or the stack has
    more than :data:`STACK_MAX` layer-directions (:func:`stack_operands`). ``workspaces``: the
    layer-directions' (``weights``' order), where the blocks' arrays (the first's) and each
    matrix's panels (:func:`_rows_operand`, :func:`_rows_input_operand`) are kept from call to
    call; without them, new ones at each call.

    Why: the general path runs a layer's row blocks through :func:`sequence_forward_rows`, a
    Python thread's hand-over and each block's bookkeeping (workspaces, caches, the
    projection's call) under one GIL, at every layer: a small batch's blocks started 100-300
    us into a call whose loops took 270-330 (LSTM (32, 50, 16, 64), one layer). The same
    loops; the per-step matrix as :func:`_rows_operand` says (the kernels' panels from a
    smaller size than the general path's, where the results differ from its by a sum's order).
    The blocks' arrays are one array kept in ``workspace`` (see
    :func:`elman.fast._pair.rows_stack`)."""
    T, N, I = X.shape
    first = (N + 1) // 2
    packs = None if workspaces is None else _take_packs(workspaces)
    packings = None if workspaces is None else _take_row_packings(workspaces)
    try:
        operands = stack_operands(eq, kernels, weights, T, first, packs, blocks=True,
                                  packings=packings)
        if operands is None:
            return None
        return _rows_stack(eq, kernels, X, h0, c0, D, workspaces, operands)
    finally:
        if packs is not None:
            give_packs(workspaces, packs)
            _give_row_packings(workspaces, packings)


#: the workspace's name for the packing (:class:`~elman.fast._pass_packing.PassPacking`) of
#: ``W_ih^T`` by MKL for :func:`stack_forward_rows`' projections (:func:`_rows_input_operand`)
INPUT_PACKING = "packed_W_ih_T"


def _take_row_packings(workspaces: list) -> list:
    """The layer-directions' MKL packings for :func:`stack_forward_rows` (``W_hh^T``'s, the
    general path's forward one, :data:`PACKINGS`, and ``W_ih^T``'s, :data:`INPUT_PACKING`),
    a pair each, taken from their workspaces (new ones where none were kept, or another thread
    holds them)."""
    return [(ws.take_any(PACKINGS[True]) or PassPacking(),
             ws.take_any(INPUT_PACKING) or PassPacking()) for ws in workspaces]


def _give_row_packings(workspaces: list, packings: list) -> None:
    """:func:`_take_row_packings`' packings back into their workspaces."""
    for ws, (step, projection) in zip(workspaces, packings):
        ws.give(**{PACKINGS[True]: step, INPUT_PACKING: projection})


def _rows_stack(eq, kernels, X, h0, c0, D: int, workspaces: list | None,
                operands: tuple) -> tuple:
    """:func:`stack_forward_rows` on the layer-directions' operands (:func:`stack_operands`)."""
    T, N, I = X.shape
    first = (N + 1) // 2
    H = h0.shape[2]
    out = np.empty((T, N, D * H), X.dtype)
    h_n = np.empty_like(h0)
    c_n = None if c0 is None else np.empty_like(c0)
    pair = fast.pair()
    sync = np.zeros(pair.ROW, np.int64)                  # (fresh: see rows_stack)
    size = pair.rows_work_size(T, first, I, operands[1][0].shape[0], H, H, D)
    ws = Workspace() if workspaces is None else workspaces[0]
    work = ws.take_any("rows_work")          # (each block's row 64-byte aligned: size is
    if work is None or work.shape[1] < size or work.dtype != X.dtype:   # whole lines)
        work = pair.aligned_empty((2, size), X.dtype)
    try:
        _share_stack(kernels.forward_stack_rows,
                     (eq, X, h0, c0, *operands, _row_schedules(T, N, D), first, out, h_n, c_n,
                      work, sync), T * first, max(I, D * H), eq, first, H)
    finally:
        ws.give(rows_work=work)
    return out, h_n, c_n


def _rows_input_operand(W_ih: np.ndarray, kept=None, packing=None, rows: int = 0) -> tuple:
    """The input projection's matrix ``W_ih^T`` of :func:`stack_forward_rows`'s blocks (the
    lean loops take either form, :func:`elman.fast._loop.project_by`): with ``packing`` (a
    :class:`~elman.fast._pass_packing.PassPacking`), MKL's packed form for products of up to
    ``rows`` rows where MKL is on and the product is at least
    :data:`ROWS_MKL_PROJECTION_MIN` (``rows`` times ``W_ih``'s elements), as the general
    path's projection runs on MKL's GEMM; else the kernels' own panels where the micro-kernel
    takes them (float32, G*H a multiple of its vectors), packed at each call (a pass over
    ``W_ih``), else ``W_ih^T`` itself (BLAS's GEMM).

    Measured (the Intel Xeon of 2026-12-06, one process, alternating, medians of 7): the
    panels against OpenBLAS's GEMM, LSTM and GRU, one and two layers, at (32, 50, 16, 64)
    1.00-1.05x as fast, at (64, 100, 32, 64) 1.06-1.09x, at (32, 500, 32, 32) 1.11-1.14x, the
    same results bit for bit there (MKL's packed form, then packed into a fresh buffer at each
    call, ran two layers 0.56-0.79x as fast; see :data:`ROWS_MKL_PROJECTION_MIN` for MKL's
    kept one). ``kept``: as :func:`_rows_operand`'s."""
    if packing is not None and rows * W_ih.size >= ROWS_MKL_PROJECTION_MIN \
            and W_ih.flags.c_contiguous and fast_mkl.enabled():
        return _mkl_operand(W_ih, True, rows, packing)
    if _projection_panels_apply(W_ih):
        return fast.packed_operand(_row_panels(W_ih, kept), fast_packed.compute_address(), W_ih)
    return fast.matrix_operand(W_ih.T)


#: the smallest projection (a block's rows times ``W_ih``'s elements) that
#: :func:`_rows_input_operand` hands to MKL's packed form. Measured (the Intel Xeon of
#: 2026-12-07, one process, alternating, medians of 15, the per-step matrices MKL's,
#: :data:`ROWS_MKL_MAX_FLOPS`): at (64, 100, 32, 128) (3,200 rows) MKL's form 1.03-1.04x as
#: fast as the panels (LSTM, 16,384 elements) and 1.05x (GRU, 12,288); at (64, 100, 128, 128)
#: the rows 1.03x as fast as the general path with it, 0.98x with the panels; at (32, 50, 16,
#: 64) (800 rows) 0.94x as fast as the panels, in the first layer (4,096 elements, alternating
#: in one process) and in the second (16,384, old and new code in alternating processes)
ROWS_MKL_PROJECTION_MIN = 1 << 24


#: the smallest per-step matrix (elements) the row blocks of :func:`stack_forward_rows` pack
#: into the kernels' panels (:func:`_rows_operand`)
ROWS_PACK_MIN_ELEMENTS = 16384


def _rows_operand(W: np.ndarray, T: int, N: int, kept=None, packing=None) -> tuple:
    """The per-step matrix ``W^T`` of :func:`stack_forward_rows`'s blocks of up to ``N`` rows,
    which both blocks share: with ``packing`` (a :class:`~elman.fast._pass_packing.
    PassPacking`: the general path's forward one, :data:`PACKINGS`), MKL's packed form where
    the general path's block would pack it so (:func:`elman.fast._mkl.worth`; measured: see
    :data:`ROWS_MKL_MAX_FLOPS`); else the kernels' own panels (:func:`elman.fast._packed.pack`)
    where they pay for such a block, from :data:`ROWS_PACK_MIN_ELEMENTS` (half the general
    path's :data:`elman.fast._packed.MIN_ELEMENTS`), else the contiguous copy OpenBLAS
    multiplies by (:func:`_step_matrix`).

    Measured (the Intel Xeon of 2026-12-06, one process, alternating, medians of 7): with the
    panels, the LSTM at (32, 50, 16, 64) (a 64 x 256 matrix) 1.11x as fast with one and two
    layers, at (32, 500, 32, 32) (32 x 128) 0.98-0.99x, the GRU 0.99-1.03x at both; with MKL's
    packed form shared by the two blocks, then packed into a fresh buffer at each call (its
    huge pages faulted in: :func:`elman.fast._mkl.pack`), one layer 0.96-1.09x, two layers
    0.75x at both sizes (these matrices are below MKL's :data:`elman.fast._mkl.MIN_ELEMENTS`
    now: panels).

    ``kept`` (an :class:`elman.fast._packed.KeptPack`, or None): where the panels are kept from
    call to call, packed anew only when ``W`` is no longer the matrix they hold (compared with
    the panels; a frozen matrix not even that), as a batch of one keeps its own
    (:func:`kept_packs`). Measured (the Intel Xeon of 2026-12-07, one process, alternating,
    medians of 25, the whole call): the LSTM at (32, 50, 16, 64), one and two layers, 1.038x
    and 1.033x as fast, frozen 1.062x and 1.054x; the GRU there (only ``W_ih``'s panels: its
    ``W_hh`` is below :data:`ROWS_PACK_MIN_ELEMENTS`) 1.012x, frozen 1.022x."""
    if packing is not None and W.flags.c_contiguous and fast_mkl.worth(T, N, W.size):
        return _mkl_operand(W, True, N, packing)
    if fast_packed.worth(T, N, *W.T.shape, W.dtype, ROWS_PACK_MIN_ELEMENTS):
        return fast.packed_operand(_row_panels(W, kept), fast_packed.compute_address(), W)
    return fast.matrix_operand(_step_matrix(W.T, T, N))


def _row_panels(W: np.ndarray, kept) -> np.ndarray:
    """The panels of ``W.T``: ``kept``'s (:class:`elman.fast._packed.KeptPack`), or packed
    anew where there is none."""
    return fast_packed.pack(W, True) if kept is None else kept.panels(W)


@functools.lru_cache(maxsize=64)
def _row_schedules(T: int, N: int, D: int) -> np.ndarray:
    """(2, D, T, 4): :func:`_schedules` of the two row blocks of :func:`stack_forward_rows`."""
    first = (N + 1) // 2
    return np.ascontiguousarray(np.stack([_schedules(T, first, D), _schedules(T, N - first, D)]))


def _share_stack(kernel, arguments: tuple, rows: int, width: int, eq, N: int, H: int) -> None:
    """``kernel(*arguments, bell, gen, me, spins)`` on this thread and the pair's partner
    (:meth:`elman.fast._pair.Partner.share`) with BLAS at one thread: by itself where every
    product is small enough for OpenBLAS to keep it there (a projection of ``rows`` rows of
    ``width`` into the G*H columns, the per-step (N x H) @ (H x K)), else held there for the
    call (else it would use its pool's threads)."""
    partner = fast.pair().partner()
    bell, spins = partner.bell, partner.spins

    def steps(gen, me):
        return kernel(*arguments, bell, gen, me, spins)

    if threads.one_thread_product(rows, eq.gates * H, width) and \
            threads.one_thread_product(N, eq.recurrent_gates * H, H):
        partner.share(steps)
    else:
        with threads.one_blas_thread():
            partner.share(steps)


#: the steps of a chunk in :func:`stack_forward_pipe`: a layer runs a chunk once the layer below
#: has finished it, so the stack takes its bottom layer's time plus a chunk per layer above
PIPE_CHUNK = 8


def pipes_layers(eq, kernels, T: int, N: int, L: int, D: int, H: int, dtype) -> bool:
    """Whether a call that keeps and masks nothing (the caller checks that; and, at the moment
    of the call, :func:`elman.threads.two_threads_free`) runs its stack's layers in a pipeline
    on two threads (:func:`stack_forward_pipe`): one sequence (N = 1), one direction, two
    layers or more (at most :data:`STACK_MAX`), at least two chunks of :data:`PIPE_CHUNK`
    steps, an upper layer's two matrices (``W_ih`` and ``W_hh``, G*H x H each) within
    :func:`pipe_max_bytes` (each thread keeps its layers' in its core's cache), a kernel module
    with a ``forward_stack_pipe`` and no ``transform_input``, and a machine where the pair
    runs (:func:`elman.fast.pair_supported`)."""
    if kernels is None or N != 1 or D != 1 or not 2 <= L <= STACK_MAX or T < 2 * PIPE_CHUNK \
            or 2 * eq.gates * H * H * np.dtype(dtype).itemsize > pipe_max_bytes():
        return False
    attributes = vars(kernels)
    return (attributes.get("forward_stack_pipe") is not None
            and attributes.get("transform_input") is None and fast.pair_supported())


def pipe_max_bytes() -> int:
    """The most bytes of an upper layer's matrices that :func:`stack_forward_pipe` takes: half
    a core's L2 cache, at least 512 KB (as :data:`elman.fast._blas.GEMV_ROWS_MAX_BYTES`).
    Measured (``bench_infer.py``, two layers, batch 1, T = 50, on an Intel Xeon with 2 MB of
    L2 a core): at H = 128 (GRU 384 KB, LSTM 512 KB) the pipeline took onnxruntime/elman from
    0.81-0.83x to 0.93-1.26x (GRU) and from 0.84-0.89x to 1.18-1.20x (LSTM); at H = 256 (GRU
    1.5 MB, LSTM 2 MB, which leave the thread running the upper layer reading from L3) from
    1.10-1.15x to 1.04x and from 0.77x to 0.74x."""
    return max(1 << 19, fast_cpu.L2_BYTES // 2)


def stack_forward_pipe(eq, kernels, X: np.ndarray, h0: np.ndarray, c0: np.ndarray | None,
                       weights: list, workspaces: list | None = None) -> tuple | None:
    """``(out, h_n, c_n)`` of a unidirectional stack (``weights[k]`` of layer ``k``, ``h0``/``c0``
    (L, N, H)) for a call that keeps nothing, its layers in a pipeline on the caller's thread
    and the pair's partner thread (:func:`elman.fast._pair.pipe_stack`, the kernel module's
    ``forward_stack_pipe``): each layer runs :data:`PIPE_CHUNK` steps at a time through its
    lean loop, as soon as the layer below has finished them. The caller checks
    :func:`pipes_layers` and that two threads are free; None where a parameter array is unusual
    (see :func:`stack_forward_lean`; ``workspaces`` as there).

    Why: a batch of one's step is a matrix-vector product and some gate math, a few
    microseconds; two threads sharing each step (:func:`sequence_forward_pair`) meet at every
    one of them, and a stack's layers ran one after the other. In a pipeline each core keeps
    one layer's weights in its cache, and the threads meet once a chunk."""
    T, N, _ = X.shape
    # (each chunk's projection multiplies by W_ih's kept panels: a BLAS GEMM would pack W_ih
    # again at every chunk, measured at 16-360 us a call at H = 128-256)
    with holding_packs(workspaces, T, N) as packs:
        operands = stack_operands(eq, kernels, weights, T, N, packs)
        if operands is None:
            return None
        layers, H = len(weights), h0.shape[2]
        size = min(PIPE_CHUNK, T)
        outs = np.empty((layers, T, N, H), X.dtype)
        h_n = np.empty_like(h0)
        c_n = None if c0 is None else np.empty_like(c0)
        sync = np.zeros((layers + 1) * fast.pair().ROW, np.int64)   # (fresh: pipe_stack)
        _share_stack(kernels.forward_stack_pipe,
                     (eq, X, h0, c0, *operands, full_schedule(size, N, False),
                      full_schedule(T - (-(-T // size) - 1) * size, N, False), outs, h_n, c_n,
                      sync), size * N, max(X.shape[2], H), eq, N, H)
        return outs[-1], h_n, c_n


#: the most layer-directions a stack runs as one compiled call (:func:`stack_forward_lean`).
#: Its operands are tuples of a power of two entries (2, 4 or 8; the unused ones repeat the
#: last, never read): numba compiles a function once per tuple length, and it was once per
#: depth (5-6 specializations of the LSTM's stack in one run of the tests, 5-6 s each). Not
#: one length for all: numba types a tuple's every item at every call, and 8 entries for a
#: stack of 4 cost 11 us a call more than 4 (LSTM, two bidirectional layers, batch 1:
#: 64 -> 75 us, medians of 7).
STACK_MAX = 8


def stack_operands(eq, kernels, weights: list, T: int, N: int,
                    packs: list | None = None, blocks: bool = False,
                    packings: list | None = None) -> tuple | None:
    """The layer-directions' :func:`lean_operands` (with their kept packings ``packs``,
    :func:`kept_packs`, or none; ``blocks`` and ``packings``, a row block's MKL packings,
    :func:`_take_row_packings`, as there), as a tuple of tuples by operand, each
    of 2, 4 or 8 entries (see :data:`STACK_MAX`); None for more layer-directions than that or
    where a parameter array is unusual (:func:`_one_array_type`; see
    :func:`stack_forward_lean`)."""
    if len(weights) > STACK_MAX or not _one_array_type(weights):
        return None
    threads.small_work_starts()               # (runs_lean: every GEMM here is on one thread)
    operands = [lean_operands(eq, kernels, w, T, N, None if packs is None else packs[k],
                              blocks=blocks, packings=None if packings is None else packings[k])
                for k, w in enumerate(weights)]
    operands += operands[-1:] * ((1 << (len(operands) - 1).bit_length()) - len(operands))
    return tuple(zip(*operands))


def _one_array_type(weights: list) -> bool:
    """Whether every parameter array of ``weights`` is C-contiguous and aligned, and either all
    are writeable or none is (a module of :func:`elman.freeze`, whose arrays are read-only):
    numba types a read-only array apart from a writeable one, and the compiled stack's tuples
    hold one array type each."""
    for w in weights:                     # (a plain loop: every small call of a stack asks)
        for array in w.values():
            if not array.flags.carray:
                return all(a.flags.c_contiguous and a.flags.aligned and not a.flags.writeable
                           for w in weights for a in w.values())
    return True


@functools.lru_cache(maxsize=64)
def _schedules(T: int, N: int, D: int) -> np.ndarray:
    """(D, T, 4): :func:`full_schedule` forward, and in reverse for a second direction."""
    return np.ascontiguousarray(np.stack([full_schedule(T, N, bool(d)) for d in range(D)]))


def lean_outputs(S: np.ndarray, C: np.ndarray | None) -> tuple:
    """``(out, h_n, c_n)`` of one forward layer-direction from :func:`sequence_forward_lean`'s
    ``(S, C)``: the outputs (a view), the final states (copies: the caller may change one
    without the other, as with PyTorch's separate tensors) with their layer axis."""
    return S[1:], S[-1:].copy(), None if C is None else C[-1:].copy()


def lean_whole(kernels, T: int, N: int, GH: int, I: int, pinned: bool = False):
    """The kernel module's ``forward_lean`` where it runs a lean call of ``T`` x ``N`` (input
    width ``I``, ``GH`` gate rows) as one compiled call, projection included: it has one, no
    ``transform_input`` (its projection is not the plain one) and the projection stays on one
    BLAS thread by itself (``pinned``: the caller holds BLAS to one thread, as
    :class:`elman.threads.one_blas_thread` does, for the call). Else None
    (:func:`sequence_forward_lean` then runs the pieces)."""
    attributes = vars(kernels)
    whole = attributes.get("forward_lean")
    if whole is not None and (pinned or threads.one_thread_product(T * N, GH, I)) \
            and attributes.get("transform_input") is None:
        return whole
    return None


def sequence_forward_lean(eq, kernels, X: np.ndarray, h0: np.ndarray, c0: np.ndarray | None,
                          w: Weights, reverse: bool = False,
                          workspace: Workspace | None = None) -> tuple:
    """``(S, C)`` of :func:`sequence_forward` (same arguments, ``kernels`` the cell's compiled
    loops) for a small call that keeps nothing for a backward: no lengths, masks, zoneout or
    projection, arrays of its own instead of a workspace, no :class:`SequenceCache`. A kernel
    module with a ``forward_lean`` runs the projection, the arrays and the loop as one compiled
    call (when its projection, too, runs on one thread by itself: the same BLAS call as here).

    Why: a streaming caller's one-step call (batch 1, H = 128) runs 10-20 us of compiled work,
    and the general path's bookkeeping around it (workspace, caches, lengths, thread policy,
    row blocks) cost about as much again (measured: 37 us a call through
    :func:`sequence_forward`, 20 us for the projection and the loop with their arrays alone).
    Through the layer, one-step calls ran 1.3-1.4x as fast on this path (A/B in one process);
    one compiled call instead of the projection's and the loop's, with the arrays made inside
    it, took 2.5x less time than the pieces below (LSTM, H = 128, one step, batch 1).
    ``workspace``: the layer-direction's, where a batch of one keeps its packed ``W_hh``
    (:func:`kept_packs`)."""
    with holding_packs(None if workspace is None else [workspace], *X.shape[:2]) as packs:
        return _forward_lean(eq, kernels, X, h0, c0, w, reverse, packs and packs[0])


def _forward_lean(eq, kernels, X, h0, c0, w: Weights, reverse: bool, kept) -> tuple:
    """:func:`sequence_forward_lean` with the batch of one's kept packing ``kept`` (or None)."""
    return lean_call(lambda *operands: _forward_lean_with(eq, kernels, X, h0, c0, w, reverse,
                                                          *operands),
                     eq, kernels, w, *X.shape[:2], kept)


def _forward_lean_with(eq, kernels, X, h0, c0, w: Weights, reverse: bool, W_ih, bias, W_hh_T,
                       consts) -> tuple:
    """:func:`_forward_lean` on its operands (:func:`lean_operands`)."""
    T, N, I = X.shape
    GH = bias.shape[0]
    schedule = full_schedule(T, N, reverse)
    threads.small_work_starts()               # (runs_lean: every GEMM here is on one thread)
    # (a projection by W_ih's panels is the micro-kernel's, on this thread: never BLAS's pool)
    whole = lean_whole(kernels, T, N, GH, I,
                       isinstance(W_ih, tuple) and W_ih[3] == fast.PACKED)
    if whole is not None:
        return whole(eq, X, h0, c0, W_ih, bias, W_hh_T, consts, schedule)
    P, H, dtype = w["weight_hh"].shape[1], GH // eq.gates, X.dtype
    K = eq.recurrent_gates * H
    GX = np.empty((T, N, GH), dtype)
    _project(eq, kernels, X, w, GX)
    S = np.empty((T + 1, N, P), dtype)
    C = np.empty((T + 1, N, H), dtype) if eq.has_cell else None
    saved_row = _saved_elements(eq, kernels, H)
    saved = np.empty((T, N, saved_row), dtype) if saved_row else None
    _plant_initial(S, C, h0, c0, reverse)
    kernels.forward(eq, ForwardLoop(GX, bias, W_hh_T, S, C, saved, np.empty((N, K), dtype),
                                    consts, schedule, None, None))
    return S, C


# -- what both forward paths share ----------------------------------------------------------

def _project(eq, kernels, X: np.ndarray, w: Weights, GX: np.ndarray):
    """Step 1: ``GX = X W_ih^T`` (:func:`project_input`), then the cell's transform of it in
    place (a layer-normalised cell normalises it; its kernel module may have a compiled twin).
    Returns what the transform keeps for its backward."""
    project_input(X, w["weight_ih"], GX, kernels)
    transform = _kernel_attribute(kernels, "transform_input")
    return eq.transform_input(GX, w) if transform is None else transform(eq, GX, w)


def _saved_elements(eq, kernels, H: int) -> int:
    """Elements a step keeps per row for backward: the kernel's own layout, in elements
    (``saved_elements(eq, H)``, where it is not whole blocks of H) or in blocks of H
    (``saved_width``: a number, or a function of the cell and H), or (neither there, or the
    NumPy steps) the cell's ``saved_width`` blocks."""
    elements = _kernel_attribute(kernels, "saved_elements")
    if elements is not None:
        return elements(eq, H)
    width = _kernel_attribute(kernels, "saved_width")
    return H * (eq.saved_width if width is None else width(eq, H) if callable(width) else width)


def _plant_initial(S: np.ndarray, C: np.ndarray | None, h0, c0, reverse: bool) -> None:
    """The initial states into the slot the first step reads: 0 forward, T in reverse."""
    first = S.shape[0] - 1 if reverse else 0
    S[first] = h0
    if C is not None:
        C[first] = c0


def _loop_bias(gx_bias: np.ndarray | None, GH: int, dtype) -> np.ndarray:
    """The (G*H,) bias a compiled loop adds to each step's projection (zeros without one)."""
    return Workspace.new(GH, dtype, zero=True) if gx_bias is None \
        else gx_bias.astype(dtype, copy=False)


def _zone_step(zone: Zoneout, t, n, h_prev, h, c_prev, c) -> None:
    """Zoneout after step ``t`` (rows ``:n``): ``h = a h_prev + (1 - a) h_new`` in place, and
    the same for ``c``, keeping ``c_new`` first."""
    a = zone.h[t, :n]
    h[...] = a * h_prev + (1 - a) * h
    if c is not None:
        b = zone.c[t, :n]
        zone.c_new[t, :n] = c
        c[...] = b * c_prev + (1 - b) * c


def _zone_split(d: np.ndarray, a: np.ndarray) -> np.ndarray:
    """Zoneout backward: ``d`` (wrt the mixed state) becomes ``d * (1 - a)`` (wrt the cell's
    new value) in place; returns ``d * a``, what goes straight to the previous state."""
    keep = d * a
    d *= 1 - a
    return keep


def output_view(cache: "SequenceCache | RowSplit") -> np.ndarray:
    """(T, N, P) the hidden state at every step (zeros past a sequence's end in the forward
    direction; in the reverse direction padded rows may hold the planted initial state and must
    be masked by the caller). A view of the states, except for a :class:`RowSplit` (an array
    of its own that its row blocks wrote into)."""
    if isinstance(cache, RowSplit):
        if cache.out is None:
            raise RuntimeError("a RowSplit kept in its blocks (sequence_forward_rows' "
                               "keep_blocks) has no output array: read its parts' outputs")
        return cache.out
    return cache.S[:-1] if cache.reverse else cache.S[1:]


def final_states(cache: "SequenceCache | RowSplit", lengths: np.ndarray | None,
                 h_out: np.ndarray, c_out: np.ndarray | None) -> None:
    """The state after each sequence's last valid step into ``h_out`` (N, P) and, for a cell
    with a cell state, ``c_out`` (N, H) (rows of the layer's ``h_n``/``c_n``: written in place,
    no copy of their own and no stacking after)."""
    if isinstance(cache, RowSplit):
        for part, rows in zip(cache.parts, cache.blocks()):
            final_states(part, None if lengths is None else lengths[rows], h_out[rows],
                         None if c_out is None else c_out[rows])
        return
    _final_state(cache.S, cache.reverse, lengths, h_out)
    if cache.C is not None:
        _final_state(cache.C, cache.reverse, lengths, c_out)


def _final_state(B: np.ndarray, reverse: bool, lengths: np.ndarray | None, out: np.ndarray):
    if reverse:
        out[...] = B[0]
    elif lengths is None:
        out[...] = B[-1]
    else:
        out[...] = B[lengths, np.arange(B.shape[1])]


def sequence_backward(eq, cache: SequenceCache, dY: np.ndarray | None, dh_n: np.ndarray | None,
                      dc_n: np.ndarray | None, w: Weights, g: Weights, input_grad: bool = True,
                      consume: bool = False, dX_out: np.ndarray | None = None,
                      keep_blocks: bool = False, defer_input_grad: bool = False):
    """Backpropagate through one direction of one layer.

    ``dY`` (T, N, P) gradient wrt the output sequence (may be a strided view, or None);
    ``dh_n``/``dc_n`` gradients wrt the final states (or None). Parameter gradients are
    **added** into the arrays of ``g``. Returns ``(dX, dh0, dc0)`` with ``dX`` (T, N, I), or None
    when ``input_grad`` is False (the input is data: its GEMM would be wasted work).
    ``consume=True`` (no second backward will follow) lets the compiled loops write the gate
    gradients over the saved gates, which saves a (T, N, G*H) array; the cache is spent.
    ``dX_out`` (T, N, I) C-contiguous: where ``dX`` goes (a new array when None). For a
    :class:`RowSplit` whose input was the blocks of the layer below
    (:func:`sequence_forward_rows`' ``keep_blocks``), ``keep_blocks`` leaves ``dX`` in the
    blocks (a :class:`RowBlocks`), and ``dY`` may be such blocks from the layer above.
    ``defer_input_grad`` (a :class:`SequenceCache` only): ``dX`` is an :class:`InputGradient`,
    its product left to the layer below.
    """
    if isinstance(cache, RowSplit):
        return _backward_rows(eq, cache, dY, dh_n, dc_n, w, g, input_grad, consume, dX_out,
                              keep_blocks)
    run, finish, _ = prepare_backward(eq, cache, dY, dh_n, dc_n, w, g, input_grad, consume,
                                      dX_out, defer_input_grad)
    run()
    return finish()


def prepare_backward(eq, cache: SequenceCache, dY: np.ndarray | None,
                     dh_n: np.ndarray | None, dc_n: np.ndarray | None, w: Weights, g: Weights,
                     input_grad: bool = True, consume: bool = False,
                     dX_out: np.ndarray | None = None, defer_input_grad: bool = False,
                     step_operand=None, dX_rows: np.ndarray | None = None) -> tuple:
    """:func:`sequence_backward` of a :class:`SequenceCache` (same arguments) in three parts,
    as :func:`prepare_forward` (which says why): this call's Python setup, and ``(run,
    finish, operand)``: ``run()`` runs the loop and the whole-sequence GEMMs, ``finish()``
    returns ``(dX, dh0, dc0)``; ``operand``, the per-step matrix as the loop takes it, may
    serve another pass over no more rows with the same weights (``step_operand``).
    ``dX_rows`` (T, N, I), a row block's rows of the layer's input gradient: the pass copies
    its ``dX`` there (an empty array: nowhere), and where :func:`fuses_block` and the pass's
    own conditions (:func:`_fused_products`) say so, its loop, weight gradients, input
    gradient and copy are one compiled call (:mod:`elman.fast._block`)."""
    X, GX, S, R, active = cache.X, cache.gates, cache.S, cache.R, cache.active
    T, N, _ = X.shape
    GH = GX.shape[2]
    H = GH // eq.gates
    P = S.shape[2]
    dtype = X.dtype
    ws = Workspace() if cache.workspace is None else cache.workspace
    in_place = consume and cache.kernels is not None
    dGX = GX if in_place else ws.take("dGX", (T, N, GH), dtype)
    # dGH: the recurrent side's pre-activation gradients where they differ from dGX's, i.e.
    # for its last dGH.shape[2] gate columns (the compiled GRU keeps only the candidate's)
    dGH = dGX
    if eq.separate_dgh:
        blocks = _kernel_attribute(cache.kernels, "dgh_blocks") or eq.gates
        dGH = ws.take("dGH", (T, N, blocks * H), dtype)
    dHs = ws.new((T, N, P), dtype, zero=True) if R is not None else None
    K = eq.recurrent_gates * H
    work = None                    # the reference's per-step scratch (the compiled loops own theirs)
    if eq.work_width and cache.kernels is None:
        work = ws.new((N, eq.work_width * H), dtype)
    dh = ws.new((N, P), dtype, zero=True) if dh_n is None else np.array(dh_n, dtype=dtype)
    dc = None
    if eq.has_cell:
        dc = ws.new((N, H), dtype, zero=True) if dc_n is None else np.array(dc_n, dtype=dtype)
    # 4. time reversed: the cell's derivative, then one GEMM into the previous state
    kernels = cache.kernels        # the path that ran forward (what it saved is its own)
    if kernels is not None and cache.dh_steps is not None:
        raise RuntimeError("recording dL/dh_t at every step (SequenceCache.dh_steps) needs the "
                           "NumPy steps: run forward and backward under elman.fast.use(False)")
    schedule = _schedule(T, N, active, cache.reverse)
    step_threads = threads.for_gemm(N, P, K)
    if step_operand is None:
        kept = ws.take_any(PACKINGS[False])
        W_step, packing = _step_operand(w["weight_hh"][:K], False, T, N, kernels,
                                        step_threads.one_thread, kept)
    else:                       # (another pass's, which gives its packing back itself)
        W_step, kept, packing = step_operand, None, None
    dY_copy = None
    dY_at = (0, 0)
    if kernels is not None and dY is not None and not dY.flags.c_contiguous:
        # one direction's columns of a bidirectional output gradient, or a row block's rows:
        # the compiled loops take C-contiguous arrays (one specialisation each), so they read
        # the window in the array it is part of where that is one, else a copy, into a reused
        # buffer (a fresh 50 MB array costs more in page faults than the copy itself); the
        # copy took 9.8 ms of a direction's backward at (128, 200, 256, 512)
        window = _output_window(dY)
        if window is not None:
            dY, dY_at = window
        else:
            dY_copy = ws.take("dY", dY.shape, dtype)
            np.copyto(dY_copy, dY)
            dY = dY_copy
    products = None if dX_rows is None or (input_grad and dX_out is None) else \
        _fused_products(eq, cache, dGX, dGH, g, defer_input_grad)
    gemm_address = 0 if products is None else fast_mkl.gemm_address(dtype)

    done = {}                   # (the unfused pass's result, for finish; the fused one's loop)

    def run(ring=None) -> None:
        if gemm_address:
            run_fused(ring)
            return
        if ring is not None:
            ring()
        loop = None
        with step_threads:
            if kernels is not None:
                loop = BackwardLoop(cache, dY, dh, dc, dGX, dGH, w, W_step, schedule, dHs,
                                    cache.h_mask, cache.zone, dY_at)
                kernels.backward(eq, loop)
            else:
                _reference_backward(eq, cache, schedule, dY, dh, dc, dGX, dGH, dHs, w, work)
        if step_operand is None:
            ws.give(**{PACKINGS[False]: kept if packing is None else packing})
        if active is not None:
            # Padded (t, b) slots hold derivative factors but no gradient: clear them before the
            # GEMMs below sum over every slot.
            padded = np.arange(N)[None, :] >= active[:, None]
            dGX[padded] = 0
            if dGH is not dGX:
                dGH[padded] = 0
        # 5. weight gradients and the input gradient as whole-sequence GEMMs; first the biases,
        # from the gradients wrt what the cell added them to, then (a layer-normalised cell) the
        # input side back through its normalisation to the raw projection X W_ih^T (a kernel
        # module's twins of these two may find both done: its loop did them as it went)
        split = GH - dGH.shape[2]      # gate columns whose recurrent-side gradient is dGX's own
        _bias_grads(eq, cache, loop, dGX, dGH, g)
        back = _kernel_attribute(cache.kernels, "transform_input_backward")
        dG_in = (eq.transform_input_backward(dGX, cache, g) if back is None
                 else back(eq, dGX, cache, g))      # (the raw projection's gradient)
        X2 = X.reshape(T * N, X.shape[2])
        dGX2 = dG_in.reshape(T * N, GH)
        dGH2 = dGH.reshape(T * N, dGH.shape[2])
        H_prev = S[1:] if cache.reverse else S[:-1]
        if cache.h_mask is not None:           # the recurrent GEMM read h_prev * mask
            H_prev = H_prev * cache.h_mask
        H_prev2 = H_prev.reshape(T * N, P)
        # each in the form of product that runs fastest (weight_grads; threads.matmul: on elman's
        # two threads, or BLAS's pool while it spins from this pass's per-step GEMMs, never both
        # at once; accumulate: added into the gradient by the GEMM)
        if dGH is dG_in and K == GH and weight_grads.joins(GH, P, dtype):
            weight_grads.add_joined(dGX2, X2, H_prev2, g["weight_ih"], g["weight_hh"])
        else:
            weight_grads.add_product(dGX2, X2, g["weight_ih"])
            if split:
                weight_grads.add_product(dGX2[:, :split], H_prev2, g["weight_hh"][:split])
            if split < K:
                weight_grads.add_product(dGH2[:, :K - split], H_prev2, g["weight_hh"][split:K])
        if K < GH:                     # rows whose recurrent input is not h_prev: the cell's GEMM
            eq.other_recurrent_grads(cache, dGH, g)
        if R is not None:
            threads.matmul(dHs.reshape(T * N, P).T, R.reshape(T * N, H), g["weight_hr"],
                           accumulate=True)
        eq.parameter_grads(cache, dG_in, dGH, g)     # the cell's own parameters, if it has any
        dX = None
        own_dGX = None if in_place else dG_in
        if input_grad and defer_input_grad:
            dX = InputGradient(dGX2, w["weight_ih"], functools.partial(ws.give, dGX=own_dGX))
            own_dGX = None                                   # (given back by dX.give_back)
        elif input_grad:
            dX = threads.matmul(dGX2, w["weight_ih"], None if dX_out is None
                                else dX_out.reshape(T * N, X.shape[2])).reshape(T, N, X.shape[2])
        ws.give(dGX=own_dGX, dGH=dGH if dGH is not dG_in else None, dY=dY_copy)
        if dX is not None and dX_rows is not None and dX_rows.size:
            dX_rows[...] = dX
        done["result"] = dX, dh, dc

    def run_fused(ring) -> None:
        M, I = T * N, X.shape[2]
        runner = _fused_runner(kernels, (
            _NO_BELL if ring is None else ring.bell, 0 if ring is None else ring.gen,
            gemm_address, products, dGX.reshape(M, GH), w["weight_ih"],
            dX_out.reshape(M, I) if input_grad else _NOWHERE[dtype.type][2], dX_rows))
        loop = BackwardLoop(cache, dY, dh, dc, dGX, dGH, w, W_step, schedule, dHs,
                            cache.h_mask, cache.zone, dY_at, runner=runner)
        with step_threads:
            kernels.backward(eq, loop)
        done["loop"] = loop

    def finish() -> tuple:
        if not gemm_address:
            return done["result"]
        if step_operand is None:
            ws.give(**{PACKINGS[False]: kept if packing is None else packing})
        _bias_grads(eq, cache, done["loop"], dGX, dGH, g)
        eq.parameter_grads(cache, dGX, dGH, g)   # (the layer norm's: the sums its loop kept)
        ws.give(dGX=None if in_place else dGX, dGH=dGH if dGH is not dGX else None,
                dY=dY_copy)
        return (dX_out if input_grad else None), dh, dc
    return run, finish, W_step


def _fused_products(eq, cache: SequenceCache, dGX, dGH, g: Weights,
                    defer_input_grad: bool) -> tuple | None:
    """The weight gradients of a row block's fused backward pass (:mod:`elman.fast._block`'s
    ``backward_block``: ``(dG, lo, hi, B, g, transposed)`` each), or None where the pass is
    not fused: :func:`fuses_block` says no, lengths (padded slots to clear after the loop),
    the input gradient deferred to the layer below, gate blocks the loop's GEMM does not
    cover, a cell with parameters of its own, or the joined form of the products
    (:func:`elman.weight_grads.joins`), which stays in Python. (A cell whose kernel module's
    loops transform the input themselves, ``transforms_in_loop``, may have parameters of its
    own: their gradients, which the loop summed, reach them after it, in Python.)"""
    if not _backward_fuses(eq, cache, defer_input_grad):
        return None
    X, S = cache.X, cache.S
    T, N, I = X.shape
    GH, P = dGX.shape[2], S.shape[2]
    K = eq.recurrent_gates * (GH // eq.gates)
    M = T * N
    split = GH - dGH.shape[2]      # gate columns whose recurrent-side gradient is dGX's own
    H_prev = S[1:] if cache.reverse else S[:-1]
    if cache.h_mask is not None:           # the recurrent GEMM read h_prev * mask
        H_prev = H_prev * cache.h_mask
    # (H_prev as it is where it is a plane of a bidirectional layer's shared states: rows
    # 2P apart, which the GEMM reads through its leading dimension; a copy here, on the
    # caller, made the RNN's directions at (32, 500, 32, 32) 0.85x as fast)
    X2, H_prev2 = np.ascontiguousarray(X.reshape(M, I)), H_prev.reshape(M, P)
    dGX2, dGH2 = dGX.reshape(M, GH), dGH.reshape(M, dGH.shape[2])
    products = [(dGX2, 0, GH, X2, g["weight_ih"], weight_grads.transposes(GH, I))]
    if split:
        products.append((dGX2, 0, split, H_prev2, g["weight_hh"][:split],
                         weight_grads.transposes(split, P)))
    if split < K:
        products.append((dGH2, 0, K - split, H_prev2, g["weight_hh"][split:K],
                         weight_grads.transposes(K - split, P)))
    return tuple(products)


def _backward_fuses(eq, cache: SequenceCache, defer_input_grad: bool) -> bool:
    """:func:`_fused_products`' conditions: whether a backward pass of ``cache`` may be one
    compiled call (an input gradient, where asked for, needs an array to go to as well)."""
    GH, P = cache.gates.shape[2], cache.S.shape[2]
    in_loop = _kernel_attribute(cache.kernels, "transforms_in_loop")
    return (fuses_block(eq, cache.kernels, cache.R is not None) and cache.active is None
            and not defer_input_grad and eq.recurrent_gates == eq.gates
            and (in_loop or not _overrides(type(eq), "parameter_grads"))
            and (in_loop or not _overrides(type(eq), "transform_input_backward"))
            and (eq.separate_dgh or not weight_grads.joins(GH, P, cache.X.dtype)))


def _bias_grads(eq, cache: SequenceCache, loop, dGX, dGH, g: Weights) -> None:
    """The biases' gradients after a backward loop: from the sums its compiled loop kept
    (``loop.bias_sums``), else from the pre-activation gradients."""
    if "bias_ih" not in g:
        return
    split = dGX.shape[2] - dGH.shape[2]
    if loop is not None and loop.bias_sums is not None:
        eq.add_bias_sums(*loop.bias_sums, g, split)   # (padded slots: the loop skipped them)
        return
    twin = _kernel_attribute(cache.kernels, "bias_grads")
    if twin is None:
        eq.bias_grads(dGX, dGH, g, split)
    else:
        twin(eq, dGX, dGH, g, split)


def _reference_backward(eq, cache, schedule, dY, dh, dc, dGX, dGH, dHs, w, work):
    """Step 4 with the cell's NumPy equations: the reference for the compiled loops."""
    GX, S, C, R = cache.gates, cache.S, cache.C, cache.R
    H = dGX.shape[2] // eq.gates
    K = eq.recurrent_gates * H
    W_hh_K = w["weight_hh"][:K]
    zone = cache.zone
    # Whole-sequence derivative factors (activation slopes) go into dGX/dGH in a few large
    # NumPy calls; each step then only multiplies in what depends on dh.
    aux = eq.prepare_backward(cache, dGX, dGH)
    for t, p, q, n in schedule[::-1]:
        dh_t = dh[:n]
        if dY is not None:
            dh_t += dY[t, :n]
        if cache.dh_steps is not None:    # the total dL/dh_t: the output's and the later steps'
            cache.dh_steps[t, :n] = dh_t
        if zone is not None:               # the mixed states' gradients: new and prev parts
            keep_h = _zone_split(dh_t, zone.h[t, :n])
            keep_c = None if dc is None else _zone_split(dc[:n], zone.c[t, :n])
        if R is not None:
            dHs[t, :n] = dh_t
            d_out = dh_t @ w["weight_hr"]  # back through the projection: dr = dh W_hr
        else:
            d_out = dh_t
        direct = eq.backward(d_out, None if dc is None else dc[:n], GX[t, :n],
                             None if cache.saved is None else cache.saved[t, :n],
                             None if aux is None else aux[t, :n],
                             S[p, :n], None if C is None else C[p, :n], dGX[t, :n], dGH[t, :n],
                             None if work is None else work[:n], cache.consts)
        np.matmul(dGH[t, :n, :K], W_hh_K, out=dh_t)
        if cache.h_mask is not None:       # the recurrent GEMM read h_prev * mask
            dh_t *= cache.h_mask[:n]
        if direct is not None:
            dh_t += direct
        if zone is not None:
            dh_t += keep_h
            if keep_c is not None:
                dc[:n] += keep_c
