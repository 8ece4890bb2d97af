"""Initializers. Each fills a parameter array in place from a NumPy Generator.

The recurrent layers default to PyTorch's rule, every weight and bias uniform in
``[-1/sqrt(hidden_size), 1/sqrt(hidden_size)]``, so a freshly built elman layer is distributed
exactly like its PyTorch twin.
"""
from __future__ import annotations

import numpy as np

__all__ = ["uniform_", "zeros_", "glorot_uniform_", "orthogonal_"]


def uniform_(array: np.ndarray, bound: float, rng: np.random.Generator) -> np.ndarray:
    """U(-bound, bound), drawn in float64 and cast (so float32 and float64 layers built with the
    same seed hold the same values up to rounding)."""
    array[...] = rng.uniform(-bound, bound, size=array.shape)
    return array


def zeros_(array: np.ndarray, rng: np.random.Generator | None = None) -> np.ndarray:
    array[...] = 0
    return array


def glorot_uniform_(array: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Glorot/Xavier uniform for a (fan_out, fan_in) matrix: U(+-sqrt(6 / (fan_in + fan_out)))."""
    fan_out, fan_in = array.shape
    return uniform_(array, np.sqrt(6.0 / (fan_in + fan_out)), rng)


def orthogonal_(array: np.ndarray, rng: np.random.Generator, gain: float = 1.0) -> np.ndarray:
    """A (semi-)orthogonal matrix from the QR decomposition of a Gaussian one (Saxe et al. 2014),
    sign-corrected so the result is uniformly distributed. For recurrent weights made of gate
    blocks (4H x H), apply it per block."""
    rows, cols = array.shape
    a = rng.standard_normal((max(rows, cols), min(rows, cols)))
    q, r = np.linalg.qr(a)
    q *= np.sign(np.diag(r))
    array[...] = gain * (q if rows >= cols else q.T)
    return array
