"""Finite-difference gradient checking, in float64.

For a module, the check builds the scalar ``L = sum_k <W_k, out_k>`` over every output array
``out_k`` (the output sequence and the final states, say) with fixed random weights ``W_k``,
runs ``backward(W...)`` for the analytic gradients, and compares them with central differences

    dL/dp ~= (L(p + eps) - L(p - eps)) / (2 eps)

for every element of every parameter and every floating-point input.

The error reported for one tensor is ``max|analytic - numeric| / max(max|analytic|,
max|numeric|, 1e-6)``: relative to that gradient's own scale, which is robust where single
elements are near zero (the floor makes an all-zero gradient count in absolute terms). A correct
float64 backward gives ~1e-9 or less; a wrong one gives ~1e-2 or more.

Modules that draw random numbers (dropout) keep their generator in ``self._rng``; the check
replays its state before every evaluation, so each forward sees the same masks.
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from .module import Module

__all__ = ["gradcheck"]

_SCALE_FLOOR = 1e-6


def _flatten(tree, prefix=""):
    """[(path, array)] for every floating-point array leaf of nested tuples/lists."""
    if isinstance(tree, (tuple, list)):
        out = []
        for i, sub in enumerate(tree):
            out += _flatten(sub, f"{prefix}[{i}]")
        return out
    if isinstance(tree, np.ndarray) and tree.dtype.kind == "f":
        return [(prefix, tree)]
    return []


def _map_leaves(tree, fn):
    if isinstance(tree, (tuple, list)):
        return type(tree)(_map_leaves(sub, fn) for sub in tree)
    if isinstance(tree, np.ndarray) and tree.dtype.kind == "f":
        return fn(tree)
    return tree


def _rel_error(analytic: np.ndarray, numeric: np.ndarray) -> float:
    scale = max(float(np.max(np.abs(analytic), initial=0.0)),
                float(np.max(np.abs(numeric), initial=0.0)), _SCALE_FLOOR)
    return float(np.max(np.abs(analytic - numeric), initial=0.0)) / scale


def _generators(module: Module):
    return [m._rng for _, m in module.named_modules() if isinstance(getattr(m, "_rng", None),
                                                                    np.random.Generator)]


def gradcheck(module_or_fn, inputs, *, kwargs: dict | None = None, eps: float = 1e-6,
              seed: int = 0, check_params: bool = True) -> dict[str, float]:
    """Worst relative error of the analytic gradient, per parameter and per input.

    Parameters
    ----------
    module_or_fn
        A :class:`~elman.Module` in float64: called as ``module(*inputs, **kwargs)``, its
        ``backward`` is given one gradient per output (same nesting as the output) and returns
        the gradients wrt its inputs (a tuple whose i-th entry matches ``inputs[i]``, or a single
        array for a one-input module).
        Or a function ``fn(*inputs) -> (value, grads)`` returning a scalar and its gradient wrt
        the inputs (the convention of elman's losses).
    inputs
        A tuple of inputs; nested tuples (LSTM states) are fine; non-float entries are passed
        through unchecked.
    eps
        Central-difference step.

    Returns
    -------
    dict mapping ``"weight_ih_l0"``-style parameter names and ``"input[0]"``-style input paths to
    the worst relative error (see the module docstring).

    >>> import elman, numpy as np
    >>> rnn = elman.RNN(2, 3, dtype=np.float64, seed=0)
    >>> x = np.random.default_rng(0).standard_normal((4, 2, 2))
    >>> errors = elman.gradcheck(rnn, (x,))
    >>> sorted(errors)
    ['bias_hh_l0', 'bias_ih_l0', 'input[0]', 'weight_hh_l0', 'weight_ih_l0']
    >>> max(errors.values()) < 1e-7
    True
    """
    kwargs = dict(kwargs or {})
    inputs = tuple(inputs) if isinstance(inputs, (tuple, list)) else (inputs,)
    # Work on float64 copies so perturbing an input never touches the caller's arrays.
    inputs = _map_leaves(inputs, lambda a: np.array(a, dtype=np.float64))
    input_leaves = _flatten(inputs, "input")

    if isinstance(module_or_fn, Module):
        module = module_or_fn
        params = list(module.named_parameters()) if check_params else []
        bad = [n for n, p in params if p.data.dtype != np.float64]
        if bad:
            raise TypeError(f"gradcheck needs a float64 module; parameters {bad} are "
                            f"{params[0][1].data.dtype} (build it with dtype=np.float64)")
        gens = _generators(module)
        rng_states = [g.bit_generator.state for g in gens]

        def replay():
            for g, s in zip(gens, rng_states):
                g.bit_generator.state = s

        replay()
        outputs = module(*inputs, **kwargs)
        weights_rng = np.random.default_rng(seed)
        weights = _map_leaves(outputs, lambda a: weights_rng.standard_normal(a.shape))
        weight_leaves = [w for _, w in _flatten(weights)]

        def loss() -> float:
            replay()
            outs = [o for _, o in _flatten(module(*inputs, **kwargs))]
            return float(sum(np.sum(o * w) for o, w in zip(outs, weight_leaves)))

        saved = {name: p.grad.copy() for name, p in params}
        for _, p in params:
            p.zero_grad()
        returned = module.backward(*weights) if isinstance(weights, tuple) else \
            module.backward(weights)
        analytic_params = {name: p.grad.copy() for name, p in params}
        for name, p in params:          # leave the caller's accumulated gradients as they were
            p.grad[...] = saved[name]
        if not isinstance(returned, tuple):     # a one-input module returns a bare array
            returned = (returned,)
        analytic_inputs = dict(_flatten(tuple(returned[:len(inputs)]), "input"))
    elif callable(module_or_fn):
        fn: Callable = module_or_fn
        params = []
        value, returned = fn(*inputs)
        if len(inputs) == 1:
            returned = (returned,)
        analytic_inputs = dict(_flatten(tuple(returned), "input"))
        analytic_params = {}

        def loss() -> float:
            return float(fn(*inputs)[0])
    else:
        raise TypeError(f"gradcheck expects an elman Module or a callable, got "
                        f"{type(module_or_fn).__name__}")

    def numeric(array: np.ndarray) -> np.ndarray:
        grad = np.zeros(array.shape)
        flat, gflat = array.reshape(-1), grad.reshape(-1)
        for i in range(flat.size):
            orig = flat[i]
            flat[i] = orig + eps
            plus = loss()
            flat[i] = orig - eps
            minus = loss()
            flat[i] = orig
            gflat[i] = (plus - minus) / (2 * eps)
        return grad

    errors: dict[str, float] = {}
    for name, p in params:
        errors[name] = _rel_error(analytic_params[name], numeric(p.data))
    for path, array in input_leaves:
        if path not in analytic_inputs or analytic_inputs[path] is None:
            raise ValueError(f"gradcheck: backward returned no gradient for {path}")
        analytic = np.asarray(analytic_inputs[path], dtype=np.float64)
        if analytic.shape != array.shape:
            raise ValueError(f"gradcheck: gradient for {path} has shape {analytic.shape}, "
                             f"expected {array.shape}")
        errors[path] = _rel_error(analytic, numeric(array))
    return errors

