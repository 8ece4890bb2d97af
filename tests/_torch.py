"""Import torch for the parity tests: skip if absent, but fail when ELMAN_REQUIRE_TORCH=1 (CI)."""
import os
import pytest

def require_torch():
    if os.environ.get("ELMAN_REQUIRE_TORCH") == "1":
        import torch  # noqa: F401  (CI must run the parity tests, never skip them)
        return torch
    return pytest.importorskip("torch")
