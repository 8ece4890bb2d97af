"""The fast path: the recurrent time loops compiled with numba (``pip install "elman[fast]"``).

The NumPy step functions in :mod:`elman.cells` are the reference. When numba is installed,
:mod:`elman.timeloop` runs each layer's
time loop as one compiled function instead: per step the same GEMM, then the gate math fused into
one pass over each row (no temporaries, a SIMD tanh), with no Python between steps. The input
projection and the weight-gradient GEMMs stay whole-sequence NumPy calls, shared by both paths.
The tests require both paths to agree (float32 to 1e-5, float64 to 1e-12) and both to match
PyTorch.

Covered: every cell variant (``RNN`` tanh/relu, ``GRU`` with either candidate, ``LSTM`` with
or without ``proj_size``), float32 and float64, every layout, lengths and direction.
Compiled code is cached on disk (numba's cache, ``__pycache__`` next to the sources), so only the
first run on a machine pays for compilation (about 1 s per kernel). numba checks the timestamp of
a kernel's own file only: after editing ``_math.py`` or ``_loop.py``, delete that cache.

>>> import elman
>>> with elman.fast.use(False):           # the NumPy reference path, for this block only
...     elman.fast.enabled()
False

``ELMAN_FAST=0`` in the environment switches the fast path off for the whole process.
"""
from __future__ import annotations

import contextlib
import importlib
import importlib.util
import os

import numpy as np

__all__ = ["available", "enabled", "set_enabled", "use", "kernels_for", "kernels_named"]

#: True when numba can be imported (checked without importing it). The per-step GEMMs call the
#: BLAS NumPy is linked with (``_blas.source`` says which); where that cannot be found they go
#: through numba's ``np.dot``, which needs SciPy.
available = importlib.util.find_spec("numba") is not None

_enabled = os.environ.get("ELMAN_FAST", "1").strip().lower() not in ("0", "false", "no", "off")

# which kernel module serves a cell's equations (every variant: both GRU candidates, LSTM with
# or without proj_size, RNN tanh/relu)
_MODULES = {"RNNEquations": "rnn", "GRUEquations": "gru", "LSTMEquations": "lstm"}


def enabled() -> bool:
    """Whether the recurrent layers use the compiled loops (needs :data:`available`)."""
    return _enabled and available


def set_enabled(flag: bool) -> bool:
    """Switch the fast path on or off for the process; returns the previous setting."""
    global _enabled
    previous, _enabled = _enabled, bool(flag)
    return previous


@contextlib.contextmanager
def use(flag: bool):
    """``with elman.fast.use(False): ...`` runs the block on the reference (NumPy) path."""
    previous = set_enabled(flag)
    try:
        yield
    finally:
        set_enabled(previous)


def kernels_for(eq, w, dtype):
    """The kernel module (``forward``/``backward``) for these equations and weights ``w``, or
    None when the reference path must run (fast path off or unavailable, a dtype other than
    float32/float64, or equations of a cell this package does not know)."""
    if not enabled() or np.dtype(dtype) not in (np.float32, np.float64):
        return None
    name = _MODULES.get(type(eq).__name__)
    return None if name is None else importlib.import_module(f".{name}", __name__)


def kernels_named(name: str):
    """The kernel module ``name`` (``"elman.fast.lstm"``), one of those :func:`kernels_for`
    hands out; a forward pass records the name, its backward looks the module up here."""
    if name not in {f"{__name__}.{m}" for m in _MODULES.values()}:
        raise ValueError(f"no elman.fast kernel module named {name!r}")
    return importlib.import_module(name)
