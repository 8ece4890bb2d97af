"""Data-parallel training on MPI (mpi4py): every rank holds the whole model and a slice of
every batch; one ``Allreduce`` per step sums the gradients.

This is the scheme of Horovod and of PyTorch's DistributedDataParallel, on the field's
standard engine (MPI), so the same code runs on the cores of one machine and across hosts::

    mpiexec -n 4 python train.py                # model.fit(..., distributed="mpi")
    mpiexec -n 2 elman generate --distributed

What makes ``n`` ranks equal one process training on the same global batches:

* ``batch_size`` stays the global batch; every rank draws the same shuffled order (the model's
  generator is broadcast from rank 0 at the start) and takes its own contiguous slice of each
  batch (:meth:`Communicator.shard`); the parameters are broadcast from rank 0 first, so a
  model built without a seed starts the same everywhere;
* a loss that averages over ``D`` elements (samples, valid steps, non-ignored tokens, class
  weights) is the global mean ``sum_r S_r / sum_r D_r``, not a mean of rank means: each rank
  packs its gradients scaled by its own ``D_r``, its loss sum and ``D_r`` into one contiguous
  buffer, one ``Allreduce`` sums them, and the result is divided by ``sum_r D_r``
  (:class:`GradientReducer`). Clipping and the optimizer step then run on identical gradients
  on every rank, so the weights stay identical without being sent again;
* metrics keep sums and counts, which are summed across ranks at the end of an epoch; the
  validation set is split across ranks the same way.

Dropout: each rank's layers draw their masks from a stream of their own (rank 0's generator
state, jumped ahead ``rank`` times at the start of every epoch), so the masks are independent
across ranks and a resumed run repeats an uninterrupted one exactly; the run then equals a
single process in distribution rather than bit for bit (without dropout: bit for bit, up to
the order of floating-point sums).

Rank 0 alone prints, writes checkpoints, logs and figures (callbacks with ``root_only =
True``). An exception on any rank prints its traceback and aborts the whole job
(``MPI_Abort``) instead of leaving the other ranks waiting forever in the next collective.
"""
from __future__ import annotations

import contextlib
import sys
import traceback

import numpy as np

__all__ = ["Communicator", "GradientReducer", "resolve", "world", "abort_on_error",
           "sync_generators", "broadcast_parameters"]


class Communicator:
    """The collectives elman needs, over an mpi4py communicator (``MPI.COMM_WORLD`` by
    default). A one-process communicator works too: every collective is then a no-op copy."""

    def __init__(self, comm=None):
        if comm is None:
            comm = _mpi().COMM_WORLD
        self.comm = comm
        self.rank = comm.Get_rank()
        self.size = comm.Get_size()
        # the ranks on this host, which share its CPUs
        self.local_size = comm.Split_type(_mpi().COMM_TYPE_SHARED).Get_size() \
            if self.size > 1 else 1

    @property
    def is_root(self) -> bool:
        return self.rank == 0

    def shard(self, indices: np.ndarray) -> np.ndarray:
        """This rank's contiguous part of ``indices`` (sizes differ by at most one; ranks past
        the end get an empty part)."""
        return np.array_split(np.asarray(indices), self.size)[self.rank]

    def allreduce_(self, buffer: np.ndarray) -> np.ndarray:
        """Sum ``buffer`` (contiguous) over all ranks, in place."""
        if self.size > 1:
            self.comm.Allreduce(_mpi().IN_PLACE, buffer, op=_mpi().SUM)
        return buffer

    def bcast_(self, buffer: np.ndarray) -> np.ndarray:
        """Rank 0's ``buffer`` (contiguous) on every rank, in place."""
        if self.size > 1:
            self.comm.Bcast(buffer, root=0)
        return buffer

    def bcast_object(self, obj):
        """Rank 0's plain Python value (generator states, numbers) on every rank."""
        return self.comm.bcast(obj, root=0) if self.size > 1 else obj

    def barrier(self) -> None:
        if self.size > 1:
            self.comm.Barrier()

    def abort(self, code: int = 1) -> None:
        self.comm.Abort(code)


def _mpi():
    try:
        from mpi4py import MPI
    except ImportError as e:
        raise ImportError("distributed='mpi' needs mpi4py and an MPI library: pip install "
                          "\"elman[mpi]\" (mpi4py and the mpich wheel), or mpi4py built "
                          f"against your cluster's MPI ({e})") from None
    return MPI


def world() -> Communicator:
    """All ranks of the job (``MPI.COMM_WORLD``)."""
    return Communicator()


def resolve(distributed) -> Communicator | None:
    """``fit``'s ``distributed`` argument: None/False (one process), ``"mpi"`` (every rank of
    ``MPI.COMM_WORLD``) or a :class:`Communicator`."""
    if distributed is None or distributed is False:
        return None
    if isinstance(distributed, Communicator):
        return distributed
    if distributed == "mpi" or distributed is True:
        return world()
    raise ValueError(f"distributed must be None, 'mpi' or an elman.distributed.Communicator, "
                     f"got {distributed!r}")


@contextlib.contextmanager
def abort_on_error(comm: Communicator | None):
    """Within the block, an exception on one rank aborts every rank of the job (after printing
    its traceback) rather than leaving the others blocked in a collective. A clean
    ``SystemExit(0)`` passes through."""
    try:
        yield
    except SystemExit as e:
        if comm is None or comm.size == 1 or e.code in (0, None):
            raise
        # a CommandError's message is its first argument, its code the exit status (2)
        print(f"[rank {comm.rank}] {e.args[0] if e.args else e.code}", file=sys.stderr,
              flush=True)
        comm.abort(e.code if isinstance(e.code, int) else 1)
    except BaseException:
        if comm is None or comm.size == 1:
            raise
        print(f"[rank {comm.rank}] aborting the MPI job:\n" + traceback.format_exc(),
              file=sys.stderr, flush=True)
        comm.abort(1)


def broadcast_parameters(comm: Communicator, params) -> None:
    """Every rank starts from rank 0's weights (one Bcast over one contiguous buffer)."""
    params = list(params)
    if comm.size == 1 or not params:
        return
    flat = _Flat(params, "data")
    comm.bcast_(flat.pack())
    flat.unpack()


def sync_generators(comm: Communicator, model) -> None:
    """Rank 0's random generators on every rank: the model's own (shuffling) as is, so every
    rank draws the same batch order; every other module's (dropout masks) jumped ahead
    ``rank`` times, so the ranks draw independent masks. Called at the start of each epoch."""
    if comm.size == 1:
        return
    modules = [(name, m) for name, m in model.named_modules()
               if isinstance(getattr(m, "_rng", None), np.random.Generator)]
    states = comm.bcast_object([m._rng.bit_generator.state for _, m in modules])
    for (name, m), state in zip(modules, states):
        bit_generator = type(m._rng.bit_generator)()
        bit_generator.state = state
        if m is not model and comm.rank and hasattr(bit_generator, "jumped"):
            bit_generator = bit_generator.jumped(comm.rank)
        m._rng = np.random.Generator(bit_generator)


class _Flat:
    """One contiguous buffer for the ``attr`` arrays (``data`` or ``grad``) of ``params``,
    with ``extra`` slots at its end (the reducer's loss sum and denominator)."""

    def __init__(self, params, attr: str, extra: int = 0):
        self.params, self.attr = list(params), attr
        # the parameters' own dtype (float32 models send 4 bytes a weight), float64 if mixed
        self.dtype = np.result_type(*[getattr(p, attr).dtype for p in self.params])
        self.sizes = [getattr(p, attr).size for p in self.params]
        self.offsets = np.concatenate([[0], np.cumsum(self.sizes)]).astype(int)
        self.buffer = np.empty(int(self.offsets[-1]) + extra, dtype=self.dtype)

    def pack(self, scale: float = 1.0) -> np.ndarray:
        for p, a, b in zip(self.params, self.offsets[:-1], self.offsets[1:]):
            np.multiply(getattr(p, self.attr).ravel(), scale, out=self.buffer[a:b])
        return self.buffer

    def unpack(self, scale: float = 1.0) -> None:
        for p, a, b in zip(self.params, self.offsets[:-1], self.offsets[1:]):
            arr = getattr(p, self.attr)
            np.multiply(self.buffer[a:b], scale, out=arr.reshape(-1), casting="unsafe")


class GradientReducer:
    """Sums the gradients of all ranks, weighted by each rank's share of the global loss, in one
    ``Allreduce`` per step over one contiguous buffer (gradients, then the loss sum and the
    denominator).

    ``reduce(value, denominator)``: ``value`` is this rank's loss as its loss function returned
    it and its gradients are in ``p.grad``; for a loss that averages (``mean``) ``denominator``
    is the number it divided by (0 when this rank had no samples in this batch), for a summed
    loss pass ``denominator=None``. Afterwards every rank's ``p.grad`` holds the gradient of the
    global loss, which is returned.
    """

    def __init__(self, comm: Communicator, params):
        self.comm = comm
        self.flat = _Flat(params, "grad", extra=2)
        self.bytes_per_step = self.flat.buffer.nbytes

    def reduce(self, value: float, denominator: float | None) -> float:
        summed = denominator is None
        d = 1.0 if summed else float(denominator)
        buf = self.flat.pack(d)                 # this rank's gradient of its loss *sum*
        buf[-2] = value * d if d else 0.0       # its loss sum (a rank without samples: 0)
        buf[-1] = d
        self.comm.allreduce_(buf)
        total = 1.0 if summed else float(buf[-1])
        if total == 0:                          # every position of the global batch ignored
            self.flat.unpack(0.0)
            return float("nan")
        self.flat.unpack(1.0 / total)
        return float(buf[-2] / total)
