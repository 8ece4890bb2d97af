"""Argument checks shared by every module: each error names the argument, what was expected and
what was received, so a user can fix the call without reading our source."""
from __future__ import annotations

import contextlib
import contextvars
import numbers
import os

import numpy as np

FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


class CommandError(SystemExit):
    """A user mistake on an ``elman`` command line: one ``error: ...`` line naming the flag or
    the file, and exit status 2 (argparse's status for a usage error).

    ``str(e)`` is the message. ``elman.cli.main`` prints it and re-raises, so the interpreter
    exits with ``e.code == 2`` and no traceback; code that calls a command's ``main`` catches it
    as the ``SystemExit`` it is."""

    def __init__(self, message: str):
        super().__init__(message)
        self.code = 2


def positive_int(name: str, value, minimum: int = 1) -> int:
    """``value`` as an int >= ``minimum``; bools and non-integral numbers are refused."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def flag(name: str, value) -> bool:
    """A bool (or NumPy bool): strings such as ``"False"`` and numbers are refused, as PyTorch
    refuses them, rather than read by truthiness (``bool("False")`` is True)."""
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be True or False, got {value!r} "
                        f"({type(value).__name__})")
    return bool(value)


def physical_memory() -> int | None:
    """This machine's memory in bytes, where the OS tells."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        return None


# parameter values the modules being built may still allocate (None: no limit); set while a
# checkpoint is rebuilt, to the number of parameter values the file actually holds
_budget: contextvars.ContextVar = contextvars.ContextVar("elman_parameter_budget", default=None)


@contextlib.contextmanager
def parameter_budget(values: int):
    """Within the block, modules may create at most ``values`` parameter values in all."""
    token = _budget.set([int(values)])
    try:
        yield
    finally:
        _budget.reset(token)


def affordable(owner: str, elements: int, dtype, sizes: dict) -> None:
    """Refuse, before allocating, parameters that need more memory than the machine has (a
    parameter and its gradient: 2 arrays), or more values than a :func:`parameter_budget`
    allows; ``sizes`` names the arguments that decide it."""
    args = ", ".join(f"{k}={v}" for k, v in sizes.items())
    budget = _budget.get()
    if budget is not None:
        if elements > budget[0]:
            raise ValueError(f"{owner}: {args} needs {int(elements):,} parameter values, but "
                             f"the file holds only {budget[0]:,} more")
        budget[0] -= int(elements)
    need = 2 * int(elements) * np.dtype(dtype).itemsize
    have = physical_memory()
    if have is not None and need > have:
        raise ValueError(f"{owner}: {args} needs {need / 2**30:,.1f} GiB for its parameters "
                         f"and their gradients, more than this machine's "
                         f"{have / 2**30:,.1f} GiB of memory; use smaller sizes")


def probability(name: str, value) -> float:
    """A float in [0, 1] (dropout rates)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be a number in [0, 1], got {value!r}")
    return float(value)


def rate_below_one(name: str, value) -> float:
    """A rate in [0, 1) (variational dropout, zoneout): a rate of 1 would drop (or freeze)
    every unit, and dropout would scale by 1/0."""
    p = probability(name, value)
    if p >= 1.0:
        raise ValueError(f"{name} must be in [0, 1), got {p!r}")
    return p


def float_dtype(dtype) -> np.dtype:
    """The floating dtype a module computes in: float32 or float64."""
    if dtype is None:               # np.dtype(None) would quietly be float64
        raise TypeError("dtype must be np.float32 or np.float64, got None")
    try:
        dt = np.dtype(dtype)
    except TypeError:
        raise TypeError(f"dtype must be np.float32 or np.float64, got {dtype!r}") from None
    if dt not in FLOAT_DTYPES:
        raise TypeError(f"dtype must be np.float32 or np.float64, got {dt}")
    return dt


def float_array(name: str, value, dtype: np.dtype) -> np.ndarray:
    """``value`` as a C-contiguous array of ``dtype``; non-numeric data is a TypeError."""
    if type(value) is np.ndarray and value.dtype == dtype and value.flags.c_contiguous:
        return value        # the usual case, first: a streaming caller pays this at every call
    try:
        arr = np.asarray(value)
    except ValueError as e:          # ragged nested lists: NumPy's words do not name the culprit
        raise ValueError(f"{name} must be a rectangular array (nested lists of equal lengths), "
                         f"got {type(value).__name__}: {e}") from None
    if arr.dtype.kind not in "fiub":
        raise TypeError(f"{name} must hold real numbers, got an array of dtype {arr.dtype}")
    if arr.dtype.kind != "f" or arr.dtype.itemsize <= np.dtype(dtype).itemsize:
        return np.ascontiguousarray(arr, dtype=dtype)
    # a narrowing cast (float64 data, float32 module): finite values beyond the smaller type's
    # range would become inf, then NaN downstream; refuse them instead
    with np.errstate(over="ignore"):
        out = np.ascontiguousarray(arr, dtype=dtype)
    overflow = np.isinf(out) & np.isfinite(arr)
    if overflow.any():
        first = arr[overflow].ravel()[0]
        raise ValueError(f"{name} holds {int(overflow.sum())} finite value(s) beyond the range "
                         f"of {np.dtype(dtype)} (largest {np.finfo(dtype).max:.4g}), e.g. "
                         f"{first!r}: scale the data or build the module with "
                         f"dtype=np.{arr.dtype}")
    return out


def rng(seed) -> np.random.Generator:
    """A NumPy Generator from an int seed, None (fresh entropy) or an existing Generator."""
    if isinstance(seed, np.random.Generator):
        return seed
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, numbers.Integral)):
        raise TypeError(f"seed must be an int, a numpy Generator or None, got {seed!r}")
    if seed is not None and seed < 0:
        raise ValueError(f"seed must be a non-negative integer (or None), got {seed!r}")
    return np.random.default_rng(seed)


def lengths(value, batch: int, steps: int, owner: str = "") -> np.ndarray:
    """Sequence lengths: one integer in [1, steps] per batch element, as an intp array.

    ``owner`` (a class name) prefixes the message so the user knows which layer complained."""
    prefix = f"{owner}: " if owner else ""
    arr = np.asarray(value)
    if arr.dtype.kind not in "iu":
        raise TypeError(f"{prefix}lengths must hold integers (one length per sequence), got an "
                        f"array of dtype {arr.dtype}")
    if arr.shape != (batch,):
        raise ValueError(f"{prefix}lengths must have shape ({batch},) (one length per sequence "
                         f"in the batch), got shape {arr.shape}")
    bad = np.flatnonzero((arr < 1) | (arr > steps))
    if bad.size:
        i = int(bad[0])
        raise ValueError(f"{prefix}lengths must be in [1, {steps}] (1..T, T = number of time "
                         f"steps), got {int(arr[i])} at index {i}")
    return arr.astype(np.intp)
