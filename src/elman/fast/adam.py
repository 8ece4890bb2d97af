"""Compiled Adam step (the update of :class:`elman.optim.Adam`, one pass over each parameter).

The NumPy update in :meth:`elman.optim.Adam._update` is the reference: about a dozen whole-array
passes per parameter (``m``, ``v``, ``g**2``, ``sqrt``, the quotient, the update), each a
ufunc call with its own trip through memory. Here each element goes through the same
operations, in the same order and the same dtype, once::

    g = +-grad (+ weight_decay * param, coupled L2)
    m = m + (1 - beta1) * (g - m)            (PyTorch's lerp; g - beta1 * (g - m) from weight 0.5)
    v = beta2 * v + (1 - beta2) * g * g
    param -= step_size * m / (sqrt(v) / bias_correction2_sqrt + eps)

with every scalar rounded to the arrays' dtype as NumPy rounds a Python float it combines
with an array (NEP 50), and no fused multiply-adds: the result equals the reference bit for
bit (the tests compare them). AMSGrad keeps the reference path (``np.maximum``'s NaN rule is
not reproduced here); decoupled weight decay (AdamW) shrinks ``param`` in NumPy first, then
runs this with ``weight_decay = 0``, as the reference does.
Shapes: 1-D views of C-contiguous arrays, all of one length and dtype.
"""
import numpy as np
from numba import njit

from . import _cache  # noqa: F401  (before the decorators: the cache keyed by the package)
from ._vectors import wide_vectors

__all__ = ["step"]


@njit(cache=True, nogil=True, error_model="numpy")
def _step(param, grad, m, v, coupled, weight_decay, maximize, lerp_weight, lerp_low, beta2,
          one_minus_beta2, bias_correction2_sqrt, eps, step_size):
    wide_vectors()                                    # (element by element: same results)
    for j in range(param.shape[0]):
        if coupled:                                   # Optimizer._grad's order of operations
            g = param[j] * weight_decay
            g = g - grad[j] if maximize else g + grad[j]
        else:
            g = -grad[j] if maximize else grad[j]
        d = g - m[j]                                  # _lerp_: end - a, then one of two sides
        if lerp_low:
            m[j] = m[j] + d * lerp_weight
        else:
            m[j] = g - d * lerp_weight
        vj = v[j] * beta2 + (g * g) * one_minus_beta2
        v[j] = vj
        denom = np.sqrt(vj) / bias_correction2_sqrt + eps
        param[j] = param[j] - (m[j] / denom) * step_size


def step(param: np.ndarray, grad: np.ndarray, m: np.ndarray, v: np.ndarray, *, beta1: float,
         beta2: float, eps: float, weight_decay: float, maximize: bool, step_size: float,
         bias_correction2_sqrt: float) -> bool:
    """One Adam update of ``param`` (and of its state ``m``, ``v``) in place from ``grad``;
    True if done, False (nothing touched) where it does not apply: no gradient, or arrays not
    all C-contiguous float32/float64 of one dtype and shape. The scalars are the reference's,
    as Python floats."""
    dtype = param.dtype
    if grad is None or dtype not in (np.float32, np.float64) or any(
            a.dtype != dtype or a.shape != param.shape or not a.flags.c_contiguous
            for a in (param, grad, m, v)):
        return False
    weight = 1 - beta1
    low = abs(weight) < 0.5               # _lerp_'s two sides: a + w (b - a), b - (1 - w) (b - a)
    scalar = dtype.type
    _step(param.reshape(-1), grad.reshape(-1), m.reshape(-1), v.reshape(-1),
          weight_decay != 0, scalar(weight_decay), maximize,
          scalar(weight if low else 1 - weight), low,
          scalar(beta2), scalar(1 - beta2), scalar(bias_correction2_sqrt), scalar(eps),
          scalar(step_size))
    return True
