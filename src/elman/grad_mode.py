"""Whether forward passes keep what backward needs: ``elman.no_grad()``, as in PyTorch.

Every layer's forward keeps what its backward will read (an LSTM: the activated gates and the
states of every step; a Linear: its input). Inference needs none of it::

    with elman.no_grad():
        out, (h, c) = lstm(x)

runs the same arithmetic, so the outputs are identical, but keeps nothing: a recurrent layer gives
its internal arrays back to its workspace as soon as the call returns (the next call reuses
them), no layer holds on to its input, and a ``backward`` afterwards is an error that says why.

As in PyTorch the setting is per thread, the contexts nest, and each also works as a decorator
(``@elman.no_grad()``). It is not the evaluation mode: dropout follows ``.train()``/``.eval()``,
as in PyTorch; ``Sequential.predict``/``evaluate`` and the decoders use both.
``inference_mode`` is the same switch under PyTorch's other name (elman keeps no tensor version
counters, so the two differ in nothing).

>>> import elman
>>> elman.is_grad_enabled()
True
>>> with elman.no_grad():
...     elman.is_grad_enabled()
False
"""
from __future__ import annotations

import contextlib
import threading

__all__ = ["no_grad", "enable_grad", "set_grad_enabled", "inference_mode", "is_grad_enabled"]

class _State(threading.local):
    """Per thread, as PyTorch's grad mode. The default is a class attribute, so a thread that
    never set the mode reads it without a failed lookup (``getattr`` with a default took 1 us
    there, which every layer call paid)."""
    enabled = True


_state = _State()


def is_grad_enabled() -> bool:
    """Whether forward passes in this thread keep what backward needs (the default)."""
    return _state.enabled


def _set(mode: bool) -> None:
    _state.enabled = mode


class set_grad_enabled(contextlib.ContextDecorator):
    """``set_grad_enabled(False)`` switches the saving off for this thread, at once; as a
    context (``with set_grad_enabled(flag):``) or a decorator it restores the previous setting
    afterwards. ``mode`` must be a bool."""

    def __init__(self, mode: bool):
        if not isinstance(mode, bool):
            raise TypeError(f"set_grad_enabled: mode must be a bool, got {mode!r}")
        self.previous = is_grad_enabled()
        self.mode = mode
        _set(mode)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        _set(self.previous)
        return False


class no_grad(contextlib.ContextDecorator):
    """Forward passes inside keep nothing for backward (see the module docstring)."""

    _mode = False

    def __enter__(self):
        self.previous = is_grad_enabled()
        _set(self._mode)
        return self

    def __exit__(self, *exc):
        _set(self.previous)
        return False


class enable_grad(no_grad):
    """Saving for backward switched back on inside a ``no_grad`` block."""

    _mode = True


class inference_mode(no_grad):
    """PyTorch's name for :class:`no_grad` (elman has no tensor versions to skip as well);
    ``inference_mode(False)`` leaves the setting as it is, as in PyTorch."""

    def __init__(self, mode: bool = True):
        if not isinstance(mode, bool):
            raise TypeError(f"inference_mode: mode must be a bool, got {mode!r}")
        self.mode = mode

    def __enter__(self):
        self.previous = is_grad_enabled()
        if self.mode:
            _set(False)
        return self
