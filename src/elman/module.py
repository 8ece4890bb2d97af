"""Parameters and the module base class.

A :class:`Param` is an array with its gradient beside it. A :class:`Module` finds its parameters
and sub-modules by the attributes they are stored in (as PyTorch does), so names in
``named_parameters()`` and ``state_dict()`` are the attribute paths: ``weight_ih_l0``,
``0.weight``, ...

Gradients *accumulate*: every ``backward`` adds into ``Param.grad`` because one weight is shared
by all time steps and possibly by several places in a model; clearing them is the caller's job
(``zero_grad()``), exactly as in PyTorch.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Iterator, Mapping

import numpy as np

from .grad_mode import is_grad_enabled

__all__ = ["Param", "Module"]


class Param:
    """A trainable array and its accumulated gradient.

    >>> p = Param(np.ones((2, 3), dtype=np.float32))
    >>> p.grad.shape, p.grad.dtype, float(p.grad.sum())
    ((2, 3), dtype('float32'), 0.0)
    """

    __slots__ = ("data", "grad")

    def __init__(self, data):
        object.__setattr__(self, "data", np.ascontiguousarray(data))
        object.__setattr__(self, "grad", np.zeros_like(self.data))

    def __setattr__(self, name, value):
        """``p.data = a`` / ``p.grad = a`` replace the array by another of the same shape and
        dtype (C-contiguous: a strided one is copied, as at creation). Anything else is refused
        with the expected and the received shape and dtype: the compiled kernels take the
        arrays as they are, and a layer's sizes come from its constructor, so an array of
        another shape would be read out of its bounds, and one of another dtype fail inside
        numba's typing. (To change a layer's sizes or dtype, build a new layer and
        ``load_state_dict`` into it.) Reading stays a plain slot access."""
        current = getattr(self, name, None) if name in Param.__slots__ else None
        if current is not None:              # (None: being made, e.g. by copy.deepcopy)
            if not isinstance(value, np.ndarray) or value.shape != current.shape \
                    or value.dtype != current.dtype:
                got = (f"shape {value.shape} and dtype {value.dtype}"
                       if isinstance(value, np.ndarray) else f"a {type(value).__name__}")
                raise ValueError(
                    f"Param.{name}: expected a NumPy array of shape {current.shape} and dtype "
                    f"{current.dtype} (the parameter's own), got {got}")
            value = np.ascontiguousarray(value)
        object.__setattr__(self, name, value)

    @property
    def shape(self):
        return self.data.shape

    @property
    def dtype(self):
        return self.data.dtype

    def zero_grad(self) -> None:
        self.grad[...] = 0

    def __repr__(self) -> str:
        return f"Param(shape={self.data.shape}, dtype={self.data.dtype})"


class Module:
    """Base class: parameter discovery, state dicts, gradient clearing and train/eval mode.

    Sub-classes assign :class:`Param` and :class:`Module` objects to attributes; the base class
    records them in assignment order.
    """

    training: bool

    def __init__(self):
        object.__setattr__(self, "_params", OrderedDict())
        object.__setattr__(self, "_modules", OrderedDict())
        object.__setattr__(self, "training", True)

    def __setattr__(self, name, value):
        if "_params" not in self.__dict__:
            raise RuntimeError(
                f"{type(self).__name__}.__init__ must call super().__init__() before assigning "
                f"attribute {name!r}")
        self._params.pop(name, None)
        self._modules.pop(name, None)
        if isinstance(value, Param):
            self._params[name] = value
        elif isinstance(value, Module):
            self._modules[name] = value
        object.__setattr__(self, name, value)

    def __delattr__(self, name):
        self._params.pop(name, None)
        self._modules.pop(name, None)
        object.__delattr__(self, name)

    # -- traversal -------------------------------------------------------------------------
    def named_modules(self, prefix: str = "") -> Iterator[tuple[str, "Module"]]:
        yield prefix, self
        for name, module in self._modules.items():
            yield from module.named_modules(f"{prefix}.{name}" if prefix else name)

    def children(self) -> Iterator["Module"]:
        return iter(self._modules.values())

    def named_parameters(self, prefix: str = "") -> Iterator[tuple[str, Param]]:
        """Yield ``(name, Param)`` for this module's parameters, then its sub-modules'."""
        for name, param in self._params.items():
            yield (f"{prefix}.{name}" if prefix else name), param
        for name, module in self._modules.items():
            yield from module.named_parameters(f"{prefix}.{name}" if prefix else name)

    def parameters(self) -> list[Param]:
        return [p for _, p in self.named_parameters()]

    def zero_grad(self) -> None:
        for p in self.parameters():
            p.zero_grad()

    def _save_for_backward(self, saved) -> None:
        """Keep ``saved`` (what this module's backward reads) in ``self._cache``; under
        :func:`elman.no_grad` keep nothing (the backward then says why it cannot run)."""
        self._cache = saved if is_grad_enabled() else None

    # -- mode ------------------------------------------------------------------------------
    def train(self, mode: bool = True) -> "Module":
        """Training mode (dropout active). Returns ``self`` so calls chain, as in PyTorch."""
        for _, module in self.named_modules():
            object.__setattr__(module, "training", bool(mode))
        return self

    def eval(self) -> "Module":
        return self.train(False)

    # -- state -----------------------------------------------------------------------------
    def state_dict(self) -> "OrderedDict[str, np.ndarray]":
        """Copies of every parameter as NumPy arrays, keyed by PyTorch-style names."""
        return OrderedDict((name, p.data.copy()) for name, p in self.named_parameters())

    def load_state_dict(self, state: Mapping, strict: bool = True) -> None:
        """Copy arrays into the parameters, after checking every name, shape and dtype.

        ``state`` maps names to array-likes (NumPy arrays, lists, or anything with
        ``__array__``; for a torch tensor pass ``t.numpy()``). Nothing is written unless every
        entry is valid, so a failed load leaves the module as it was. A float array of lower
        precision is cast up (float32 into a float64 module); anything else that would lose
        information or is not floating point is refused. Every problem (missing and unexpected
        names with ``strict``, wrong shapes and dtypes, NaN or infinity) is reported at once,
        in one ``RuntimeError``, as PyTorch does.
        """
        if not isinstance(state, Mapping):
            raise TypeError(
                f"load_state_dict: expected a mapping of parameter names to arrays, got "
                f"{type(state).__name__}")
        params = OrderedDict(self.named_parameters())
        problems = []                  # every problem, reported at once (as PyTorch does)
        missing = [k for k in params if k not in state]
        unexpected = [k for k in state if k not in params]
        if strict and missing:
            problems.append(f"missing keys: {missing}")
        if strict and unexpected:
            problems.append(f"unexpected keys: {unexpected}")
        staged = []
        for name, param in params.items():
            if name not in state:
                continue
            value = np.asarray(state[name])
            if value.shape != param.data.shape:
                problems.append(f"{name!r} has the wrong shape: expected "
                                f"{param.data.shape}, got {value.shape}")
            elif value.dtype != param.data.dtype and not (
                    value.dtype.kind == "f" and np.can_cast(value.dtype, param.data.dtype, "safe")):
                problems.append(f"{name!r} has the wrong dtype: expected {param.data.dtype}, got "
                                f"{value.dtype} (cast it with .astype(np.{param.data.dtype}) or "
                                f"build the module with dtype=np.{value.dtype})")
            elif not np.all(np.isfinite(value)):
                problems.append(f"{name!r} contains NaN or infinite values")
            elif not param.data.flags.writeable:
                problems.append(f"{name!r} is read-only (a module made by elman.freeze: load "
                                f"into the module it was frozen from, and freeze that again)")
            else:
                staged.append((param, value))
        if problems:
            expected = f" (expected exactly: {list(params)})" if missing or unexpected else ""
            raise RuntimeError(f"load_state_dict for {type(self).__name__}: "
                               + "; ".join(problems) + expected)
        for param, value in staged:
            param.data[...] = value

    # -- calling ---------------------------------------------------------------------------
    def __call__(self, *args, **kwargs):
        return self.forward(*args, **kwargs)

    def forward(self, *args, **kwargs):
        raise NotImplementedError(f"{type(self).__name__} does not define forward()")

    def backward(self, *grads):
        raise NotImplementedError(f"{type(self).__name__} does not define backward()")

    def extra_repr(self) -> str:
        return ""

    def __repr__(self) -> str:
        lines = [f"{type(self).__name__}({self.extra_repr()}"]
        for name, module in self._modules.items():
            child = repr(module).replace("\n", "\n  ")
            lines.append(f"  ({name}): {child}")
        return lines[0] + ")" if len(lines) == 1 else "\n".join(lines) + "\n)"
