"""Import optional dependencies for tests: skip where absent, but fail when ELMAN_REQUIRE_TORCH=1.

CI (.ci/run) sets ELMAN_REQUIRE_TORCH=1 and installs the test extra, so the PyTorch parity tests
and the tests of optional features (TensorBoard files, tqdm bars) always run there, never skip.
"""
import importlib
import os

import pytest


def _strict() -> bool:
    return os.environ.get("ELMAN_REQUIRE_TORCH") == "1"


def require(name: str):
    """The imported module ``name``; a skip locally when it is missing, an error in CI."""
    if _strict():
        return importlib.import_module(name)
    return pytest.importorskip(name)


def require_torch():
    return require("torch")
