"""An on/off setting for the whole process, with its default from an environment variable:
what ``elman.fast`` (the compiled loops) and ``elman.fast._mkl`` (MKL's packed GEMM) each have.

>>> from elman._switch import Switch
>>> s = Switch("ELMAN_DOCTEST_SWITCH", available=True)
>>> with s.use(False):
...     s.enabled()
False
>>> s.enabled()
True
"""
from __future__ import annotations

import contextlib
import os

__all__ = ["Switch"]


class Switch:
    """On or off as the environment variable ``env`` says (0/false/no/off: off; any other
    value: on), ``default`` where it is unset or empty; :meth:`enabled` also needs
    ``available`` (the feature can run here at all)."""

    def __init__(self, env: str, available: bool, default: bool = True):
        self.available = bool(available)
        value = os.environ.get(env, "").strip().lower()
        self.on = bool(default) if not value else value not in ("0", "false", "no", "off")

    def enabled(self) -> bool:
        """Whether the feature is on and available."""
        return self.on and self.available

    def set_enabled(self, flag: bool) -> bool:
        """Switch it on or off for the process; returns the previous setting."""
        previous, self.on = self.on, bool(flag)
        return previous

    @contextlib.contextmanager
    def use(self, flag: bool):
        """``with switch.use(False): ...``: off (or on) for the block only."""
        previous = self.set_enabled(flag)
        try:
            yield
        finally:
            self.set_enabled(previous)
