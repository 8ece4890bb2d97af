"""Optimizers, gradient clipping and learning-rate schedules, with PyTorch's names and rules.

Each optimizer takes an iterable of :class:`~elman.Param` (``model.parameters()``), reads
``param.grad`` and updates ``param.data`` in place, in the parameter's own dtype. The update
rules, argument names, defaults and argument checks are those of ``torch.optim`` (the
single-tensor "for-loop" implementations), so the same gradients give the same parameters.
Unlike PyTorch there are no parameter groups: one learning rate, the ``lr`` attribute, which the
schedules below (or you) may change between steps.

``state_dict()`` holds only plain data, so a checkpoint is ``.npz`` + JSON, never pickle::

    {"optimizer": "Adam",                      # the class name
     "hyperparams": {"lr": 0.001, "betas": [0.9, 0.999], ...},
     "step": 12,                               # steps taken
     "state": {"exp_avg": [array, ...],        # one array per parameter, in parameter order
               "exp_avg_sq": [array, ...]}}    # (empty before the first step)

Arrays appear only in the lists under ``"state"``; everything else is JSON.
``load_state_dict`` checks the class, the hyper-parameters, the number of parameters and every
shape before changing anything, and restores the hyper-parameters (``lr`` included, as PyTorch
does), so training resumes bit for bit.

>>> import numpy as np, elman
>>> p = elman.Param(np.array([1.0, -2.0]))
>>> opt = SGD([p], lr=0.1)
>>> p.grad[...] = [0.5, 0.5]
>>> opt.step()
>>> p.data.tolist()
[0.95, -2.05]
"""
from __future__ import annotations

import math
import numbers
from typing import Iterable

import numpy as np

from . import _validate, fast, registry

__all__ = [
    "Optimizer", "SGD", "RMSprop", "Adagrad", "Adam", "AdamW", "OPTIMIZERS", "get_optimizer",
    "clip_grad_norm_", "clip_grad_value_",
    "LRScheduler", "StepLR", "CosineAnnealingLR", "LinearLR", "ReduceLROnPlateau",
]


def _is_real(value) -> bool:
    return not isinstance(value, bool) and isinstance(value, numbers.Real)


def _nonneg(owner: str, name: str, value, label: str | None = None) -> float:
    """A real number >= 0, in PyTorch's words ("Invalid learning rate: -1")."""
    if not _is_real(value) or not value >= 0.0:           # `not >=` also catches nan
        raise ValueError(f"{owner}: Invalid {label or name} value: {value!r} ({name} must be a "
                         f"number >= 0)")
    return float(value)


def _flag(owner: str, hyper: dict, name: str) -> bool:
    """``hyper[name]`` as a bool: strings such as "False", numbers and None are refused."""
    return _validate.flag(f"{owner}: {name}", hyper[name])


def _params_list(owner: str, params) -> list:
    if hasattr(params, "named_parameters") and not isinstance(params, (list, tuple)):
        raise TypeError(f"{owner}: params must be an iterable of Param; pass "
                        f"model.parameters(), got a {type(params).__name__}")
    try:
        params = list(params)
    except TypeError:
        raise TypeError(f"{owner}: params must be an iterable of Param, got "
                        f"{type(params).__name__}") from None
    if not params:
        raise ValueError(f"{owner}: optimizer got an empty parameter list")
    seen = set()
    for i, p in enumerate(params):
        data, grad = getattr(p, "data", None), getattr(p, "grad", None)
        if not isinstance(data, np.ndarray) or not isinstance(grad, np.ndarray):
            raise TypeError(f"{owner}: params[{i}] must be a Param (with .data and .grad "
                            f"arrays), got {type(p).__name__}")
        if data.dtype.kind != "f":
            raise TypeError(f"{owner}: params[{i}] must be floating point, got {data.dtype}")
        if not data.flags.writeable:
            raise ValueError(f"{owner}: params[{i}] is read-only (a module made by elman.freeze "
                             f"is for inference: optimise the module it was frozen from)")
        if id(p) in seen:
            raise ValueError(f"{owner}: params[{i}] appears more than once in the parameter "
                             f"list (it would be updated twice per step)")
        seen.add(id(p))
    return params


class Optimizer:
    """Base class: parameter list, ``lr``, step counter, ``zero_grad`` and plain-data state.

    Sub-classes list their hyper-parameters in ``_HYPER`` (constructor keywords, in order),
    check them in ``_check`` and update one parameter in ``_update``; per-parameter state
    arrays live in ``self.state[name][i]``, created at the first step.
    """

    _HYPER: tuple[str, ...] = ("lr",)

    def __init__(self, params: Iterable, **hyper):
        self.params = _params_list(type(self).__name__, params)
        self._set_hyper(hyper)
        self.step_count = 0                          # steps taken (PyTorch's state["step"])
        self.state: dict[str, list[np.ndarray]] = {}
        self._created: set[str] = set()              # state names created by the current step

    # -- hyper-parameters ------------------------------------------------------------------
    @property
    def lr(self) -> float:
        """The learning rate of the next step (schedules set it)."""
        return self._lr

    @lr.setter
    def lr(self, value) -> None:
        self._lr = _nonneg(type(self).__name__, "lr", value, "learning rate")

    def _check(self, hyper: dict) -> dict:
        """Validated copy of ``hyper`` (all of ``_HYPER``); raise ValueError naming the bad one."""
        raise NotImplementedError

    def _set_hyper(self, hyper: dict) -> None:
        hyper = self._check(dict(hyper))
        for name in self._HYPER:
            if name != "lr":
                setattr(self, name, hyper[name])
        self.lr = hyper["lr"]

    def hyperparams(self) -> dict:
        """The constructor's keyword arguments as plain data (tuples become lists)."""
        out = {}
        for name in self._HYPER:
            value = getattr(self, name)
            out[name] = list(value) if isinstance(value, tuple) else value
        return out

    # state arrays that accumulate squares: a negative value would put NaN into the next step
    _NONNEGATIVE_STATE: tuple[str, ...] = ()

    def _state_names(self) -> tuple[str, ...]:
        """Names of the per-parameter state arrays for the current hyper-parameters."""
        raise NotImplementedError

    def _init_state(self, name: str, p) -> np.ndarray:
        return np.zeros_like(p.data)

    # -- the public API ----------------------------------------------------------------------
    def zero_grad(self) -> None:
        """Set every parameter's gradient to zero (gradients accumulate otherwise)."""
        for p in self.params:
            p.grad[...] = 0

    def step(self) -> None:
        """Update every parameter from its ``.grad``, in place."""
        # State arrays appear at the first step that needs them (as in PyTorch).
        self._created = set()
        for name in self._state_names():
            if name not in self.state:
                self.state[name] = [self._init_state(name, p) for p in self.params]
                self._created.add(name)
        self.step_count += 1
        for i, p in enumerate(self.params):
            self._update(i, p)

    def _update(self, i: int, p) -> None:
        raise NotImplementedError

    def _grad(self, p, weight_decay: float, maximize: bool) -> np.ndarray:
        """``+-grad + weight_decay * param`` (PyTorch's coupled L2 term); never writes p.grad.

        Returns ``p.grad`` itself when there is nothing to add, else one new array.
        """
        if weight_decay == 0:
            return np.negative(p.grad) if maximize else p.grad
        g = np.multiply(p.data, weight_decay)
        if maximize:
            g -= p.grad
        else:
            g += p.grad
        return g

    def state_dict(self) -> dict:
        """Copies of everything needed to resume: see the module docstring for the layout."""
        return {"optimizer": type(self).__name__,
                "hyperparams": self.hyperparams(),
                "step": int(self.step_count),
                "state": {name: [a.copy() for a in arrays] for name, arrays in self.state.items()}}

    def load_state_dict(self, state_dict: dict) -> None:
        """Restore :meth:`state_dict` output, after checking it fits these parameters.

        Nothing changes unless everything checks out.
        """
        owner = f"{type(self).__name__}.load_state_dict"
        if not isinstance(state_dict, dict):
            raise TypeError(f"{owner}: expected a dict from state_dict(), got "
                            f"{type(state_dict).__name__}")
        expected_keys = {"optimizer", "hyperparams", "step", "state"}
        if set(state_dict) != expected_keys:
            raise ValueError(f"{owner}: expected keys {sorted(expected_keys)}, got "
                             f"{sorted(state_dict)}")
        if state_dict["optimizer"] != type(self).__name__:
            raise ValueError(f"{owner}: the state is for a {state_dict['optimizer']!r} optimizer, "
                             f"not {type(self).__name__!r}")
        hyper = dict(state_dict["hyperparams"])
        if set(hyper) != set(self._HYPER):
            raise ValueError(f"{owner}: expected hyper-parameters {sorted(self._HYPER)}, got "
                             f"{sorted(hyper)}")
        hyper = self._check(hyper)
        step = state_dict["step"]
        if isinstance(step, bool) or not isinstance(step, numbers.Integral) or step < 0:
            raise ValueError(f"{owner}: step must be an integer >= 0, got {step!r}")

        # Check the state arrays against the hyper-parameters being loaded.
        saved_hyper = {n: getattr(self, n) for n in self._HYPER}
        self._set_hyper(hyper)
        try:
            names = set(self._state_names()) if step > 0 else set()
        finally:
            self._set_hyper(saved_hyper)
        state = state_dict["state"]
        if not isinstance(state, dict) or set(state) != names:
            got = sorted(state) if isinstance(state, dict) else type(state).__name__
            raise ValueError(f"{owner}: expected state arrays {sorted(names)} after {step} "
                             f"step(s), got {got}")
        staged = {}
        for name in sorted(names):
            arrays = list(state[name])
            if len(arrays) != len(self.params):
                raise ValueError(f"{owner}: state {name!r} has {len(arrays)} arrays but the "
                                 f"optimizer has {len(self.params)} parameters")
            copies = []
            for i, (a, p) in enumerate(zip(arrays, self.params)):
                a = np.asarray(a)
                if a.shape != p.data.shape:
                    raise ValueError(f"{owner}: state {name!r}[{i}] has shape {a.shape}, but "
                                     f"parameter {i} has shape {p.data.shape}")
                if a.dtype.kind != "f" or not np.can_cast(a.dtype, p.data.dtype, "safe"):
                    raise TypeError(f"{owner}: state {name!r}[{i}] has dtype {a.dtype}, "
                                    f"parameter {i} is {p.data.dtype}")
                if not np.all(np.isfinite(a)):
                    raise ValueError(f"{owner}: state {name!r}[{i}] holds NaN or infinite "
                                     f"values")
                if name in self._NONNEGATIVE_STATE and np.any(a < 0):
                    raise ValueError(f"{owner}: state {name!r}[{i}] holds negative values "
                                     f"(min {a.min()!r}); it is a sum or running average of "
                                     f"squares, so it is >= 0")
                copies.append(np.array(a, dtype=p.data.dtype, copy=True))
            staged[name] = copies
        self._set_hyper(hyper)
        self.step_count = int(step)
        self.state = staged

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.hyperparams().items())
        return f"{type(self).__name__}({args})"


@registry.register("optimizer")
class SGD(Optimizer):
    """Stochastic gradient descent with optional (Nesterov) momentum, as ``torch.optim.SGD``::

        g = grad + weight_decay * param                 (-grad if maximize)
        b = g  (first step);  b = momentum * b + (1 - dampening) * g   (later steps)
        g = g + momentum * b  if nesterov  else  b       (when momentum != 0)
        param -= lr * g

    State: ``momentum_buffer`` (when momentum != 0).
    """

    _HYPER = ("lr", "momentum", "dampening", "weight_decay", "nesterov", "maximize")

    def __init__(self, params, lr: float = 1e-3, momentum: float = 0, dampening: float = 0,
                 weight_decay: float = 0, nesterov: bool = False, *, maximize: bool = False):
        super().__init__(params, lr=lr, momentum=momentum, dampening=dampening,
                         weight_decay=weight_decay, nesterov=nesterov, maximize=maximize)

    def _check(self, h):
        o = "SGD"
        h["lr"] = _nonneg(o, "lr", h["lr"], "learning rate")
        h["momentum"] = _nonneg(o, "momentum", h["momentum"])
        if not _is_real(h["dampening"]):
            raise ValueError(f"{o}: dampening must be a number, got {h['dampening']!r}")
        h["dampening"] = float(h["dampening"])
        h["weight_decay"] = _nonneg(o, "weight_decay", h["weight_decay"])
        h["nesterov"], h["maximize"] = _flag(o, h, "nesterov"), _flag(o, h, "maximize")
        if h["nesterov"] and (h["momentum"] <= 0 or h["dampening"] != 0):
            raise ValueError(f"{o}: Nesterov momentum requires a momentum and zero dampening "
                             f"(got momentum={h['momentum']}, dampening={h['dampening']})")
        return h

    def _state_names(self):
        return ("momentum_buffer",) if self.momentum != 0 else ()

    def _update(self, i, p):
        g = self._grad(p, self.weight_decay, self.maximize)
        owned = g is not p.grad
        if self.momentum != 0:
            buf = self.state["momentum_buffer"][i]
            if "momentum_buffer" in self._created:        # PyTorch: the first buffer is g
                buf[...] = g
            else:
                buf *= self.momentum
                if self.dampening == 0:
                    buf += g
                else:
                    buf += g * (1 - self.dampening)
            if self.nesterov:
                step = self.momentum * buf
                step += g
                g, owned = step, True
            else:
                g, owned = buf, False
        if owned:
            g *= self.lr
            p.data -= g
        else:
            p.data -= self.lr * g


@registry.register("optimizer")
class RMSprop(Optimizer):
    """RMSprop, as ``torch.optim.RMSprop``::

        g = grad + weight_decay * param                 (-grad if maximize)
        v = alpha * v + (1 - alpha) * g**2
        centered:  a = lerp(a, g, 1 - alpha);  d = sqrt(v - a**2) + eps   else  d = sqrt(v) + eps
        momentum > 0:  b = momentum * b + g / d;  param -= lr * b
        else:          param -= lr * g / d

    Note ``eps`` is added *outside* the square root (Keras adds it inside).
    State: ``square_avg``, plus ``momentum_buffer`` (momentum > 0) and ``grad_avg`` (centered).
    """

    _HYPER = ("lr", "alpha", "eps", "weight_decay", "momentum", "centered", "maximize")

    def __init__(self, params, lr: float = 1e-2, alpha: float = 0.99, eps: float = 1e-8,
                 weight_decay: float = 0, momentum: float = 0, centered: bool = False, *,
                 maximize: bool = False):
        super().__init__(params, lr=lr, alpha=alpha, eps=eps, weight_decay=weight_decay,
                         momentum=momentum, centered=centered, maximize=maximize)

    def _check(self, h):
        o = "RMSprop"
        h["lr"] = _nonneg(o, "lr", h["lr"], "learning rate")
        h["eps"] = _nonneg(o, "eps", h["eps"], "epsilon")
        h["momentum"] = _nonneg(o, "momentum", h["momentum"])
        h["weight_decay"] = _nonneg(o, "weight_decay", h["weight_decay"])
        h["alpha"] = _nonneg(o, "alpha", h["alpha"])
        h["centered"], h["maximize"] = _flag(o, h, "centered"), _flag(o, h, "maximize")
        return h

    _NONNEGATIVE_STATE = ("square_avg",)

    def _state_names(self):
        return (("square_avg",) + (("momentum_buffer",) if self.momentum > 0 else ())
                + (("grad_avg",) if self.centered else ()))

    def _update(self, i, p):
        g = self._grad(p, self.weight_decay, self.maximize)
        alpha = self.alpha
        v = self.state["square_avg"][i]
        v *= alpha
        tmp = np.multiply(g, g)
        tmp *= 1 - alpha
        v += tmp                                             # v = alpha v + (1 - alpha) g^2
        if self.centered:
            a = self.state["grad_avg"][i]
            _lerp_(a, g, 1 - alpha, tmp)
            np.multiply(a, a, out=tmp)
            np.subtract(v, tmp, out=tmp)
            avg = np.sqrt(tmp, out=tmp)                      # sqrt(v - a^2)
        else:
            avg = np.sqrt(v, out=tmp)
        avg += self.eps
        if self.momentum > 0:
            buf = self.state["momentum_buffer"][i]
            buf *= self.momentum
            buf += np.divide(g, avg, out=avg)
            p.data -= self.lr * buf
        else:
            q = np.divide(g, avg, out=avg)
            q *= self.lr
            p.data -= q


def _lerp_(a: np.ndarray, end: np.ndarray, weight: float, tmp: np.ndarray) -> None:
    """``a = a + weight * (end - a)`` in place, with PyTorch's two-sided formula (exact at
    weight 1); ``tmp`` is scratch of ``a``'s shape."""
    np.subtract(end, a, out=tmp)
    if abs(weight) < 0.5:
        tmp *= weight
        a += tmp
    else:
        tmp *= 1 - weight
        np.subtract(end, tmp, out=a)


@registry.register("optimizer")
class Adagrad(Optimizer):
    """Adagrad, as ``torch.optim.Adagrad``::

        g = grad + weight_decay * param                 (-grad if maximize)
        clr = lr / (1 + (t - 1) * lr_decay)             (t = 1, 2, ... the step number)
        s = s + g**2                                    (s starts at initial_accumulator_value)
        param -= clr * g / (sqrt(s) + eps)

    State: ``sum``.
    """

    _HYPER = ("lr", "lr_decay", "weight_decay", "initial_accumulator_value", "eps", "maximize")

    def __init__(self, params, lr: float = 1e-2, lr_decay: float = 0, weight_decay: float = 0,
                 initial_accumulator_value: float = 0, eps: float = 1e-10, *,
                 maximize: bool = False):
        super().__init__(params, lr=lr, lr_decay=lr_decay, weight_decay=weight_decay,
                         initial_accumulator_value=initial_accumulator_value, eps=eps,
                         maximize=maximize)

    def _check(self, h):
        o = "Adagrad"
        h["lr"] = _nonneg(o, "lr", h["lr"], "learning rate")
        h["lr_decay"] = _nonneg(o, "lr_decay", h["lr_decay"])
        h["weight_decay"] = _nonneg(o, "weight_decay", h["weight_decay"])
        h["initial_accumulator_value"] = _nonneg(o, "initial_accumulator_value",
                                                 h["initial_accumulator_value"])
        h["eps"] = _nonneg(o, "eps", h["eps"], "epsilon")
        h["maximize"] = _flag(o, h, "maximize")
        return h

    _NONNEGATIVE_STATE = ("sum",)

    def _state_names(self):
        return ("sum",)

    def _init_state(self, name, p):
        return np.full_like(p.data, self.initial_accumulator_value)

    def _update(self, i, p):
        g = self._grad(p, self.weight_decay, self.maximize)
        clr = self.lr / (1 + (float(self.step_count) - 1) * self.lr_decay)
        s = self.state["sum"][i]
        tmp = np.multiply(g, g)
        s += tmp
        std = np.sqrt(s, out=tmp)
        std += self.eps
        q = np.divide(g, std, out=std)
        q *= clr
        p.data -= q


@registry.register("optimizer")
class Adam(Optimizer):
    """Adam (and AMSGrad), as ``torch.optim.Adam``::

        g = grad (-grad if maximize)
        weight decay: g += weight_decay * param  (L2, coupled), or with decoupled_weight_decay
                      param *= 1 - lr * weight_decay  (AdamW)
        m = lerp(m, g, 1 - beta1);   v = beta2 * v + (1 - beta2) * g**2
        amsgrad: v_max = max(v_max, v) and use v_max for v below
        param -= lr / (1 - beta1**t) * m / (sqrt(v) / sqrt(1 - beta2**t) + eps)

    (Keras adds ``eps`` before the bias correction of ``sqrt(v)``; this is PyTorch's rule.)
    State: ``exp_avg``, ``exp_avg_sq``, plus ``max_exp_avg_sq`` with amsgrad.
    """

    _HYPER = ("lr", "betas", "eps", "weight_decay", "amsgrad", "maximize",
              "decoupled_weight_decay")

    def __init__(self, params, lr: float = 1e-3, betas: tuple = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0, amsgrad: bool = False, *, maximize: bool = False,
                 decoupled_weight_decay: bool = False):
        super().__init__(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                         amsgrad=amsgrad, maximize=maximize,
                         decoupled_weight_decay=decoupled_weight_decay)

    def _check(self, h):
        o = type(self).__name__
        h["lr"] = _nonneg(o, "lr", h["lr"], "learning rate")
        h["eps"] = _nonneg(o, "eps", h["eps"], "epsilon")
        betas = h["betas"]
        if not isinstance(betas, (tuple, list)) or len(betas) != 2:
            raise ValueError(f"{o}: betas must be a pair (beta1, beta2), got {betas!r}")
        for k, b in enumerate(betas):
            if not _is_real(b) or not 0.0 <= b < 1.0:
                raise ValueError(f"{o}: Invalid beta parameter at index {k}: {b!r} (betas must "
                                 f"be in [0, 1))")
        h["betas"] = (float(betas[0]), float(betas[1]))
        h["weight_decay"] = _nonneg(o, "weight_decay", h["weight_decay"])
        for name in ("amsgrad", "maximize", "decoupled_weight_decay"):
            h[name] = _flag(o, h, name)
        return h

    _NONNEGATIVE_STATE = ("exp_avg_sq", "max_exp_avg_sq")

    def _state_names(self):
        return ("exp_avg", "exp_avg_sq") + (("max_exp_avg_sq",) if self.amsgrad else ())

    def _update(self, i, p):
        beta1, beta2 = self.betas
        lr, wd = self.lr, self.weight_decay
        if wd != 0 and self.decoupled_weight_decay:
            p.data *= 1 - lr * wd
            wd = 0.0
        m, v = self.state["exp_avg"][i], self.state["exp_avg_sq"][i]
        t = float(self.step_count)
        bias_correction1 = 1 - beta1 ** t
        bias_correction2 = 1 - beta2 ** t
        step_size = lr / bias_correction1
        bias_correction2_sqrt = bias_correction2 ** 0.5
        # the whole update in one compiled pass where it applies (elman.fast.adam: the same
        # operations as below, element by element, bit for bit); else NumPy's passes
        if not self.amsgrad and fast.enabled() and fast.kernels_named(_ADAM_KERNEL).step(
                p.data, p.grad, m, v, beta1=beta1, beta2=beta2, eps=self.eps,
                weight_decay=wd, maximize=self.maximize, step_size=step_size,
                bias_correction2_sqrt=bias_correction2_sqrt):
            return
        g = self._grad(p, wd, self.maximize)
        tmp = np.empty_like(m)
        _lerp_(m, g, 1 - beta1, tmp)                          # m = beta1 m + (1 - beta1) g
        v *= beta2
        np.multiply(g, g, out=tmp)
        tmp *= 1 - beta2
        v += tmp                                              # v = beta2 v + (1 - beta2) g^2
        if self.amsgrad:
            v_max = self.state["max_exp_avg_sq"][i]
            np.maximum(v_max, v, out=v_max)
            v = v_max
        denom = np.sqrt(v, out=tmp)
        denom /= bias_correction2_sqrt
        denom += self.eps
        q = np.divide(m, denom, out=denom)
        q *= step_size
        p.data -= q


#: the compiled Adam update (:mod:`elman.fast.adam`, found by :func:`elman.fast.kernels_named`)
_ADAM_KERNEL = "elman.fast.adam"


@registry.register("optimizer")
class AdamW(Adam):
    """Adam with decoupled weight decay, as ``torch.optim.AdamW``: each step first shrinks
    ``param *= 1 - lr * weight_decay``, then applies the Adam update (see :class:`Adam`)."""

    _HYPER = ("lr", "betas", "eps", "weight_decay", "amsgrad", "maximize")

    def __init__(self, params, lr: float = 1e-3, betas: tuple = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 1e-2, amsgrad: bool = False, *, maximize: bool = False):
        Optimizer.__init__(self, params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                           amsgrad=amsgrad, maximize=maximize)

    def _check(self, h):
        h = super()._check({**h, "decoupled_weight_decay": True})
        del h["decoupled_weight_decay"]
        return h

    decoupled_weight_decay = True


# -- Keras-style names ----------------------------------------------------------------------------

#: Optimizer classes by Keras name, with the hyper-parameter defaults :func:`get_optimizer` gives
#: a bare name: Keras' defaults where they differ from PyTorch's (the update rule stays PyTorch's).
OPTIMIZERS: dict[str, tuple[type, dict]] = {
    "sgd": (SGD, {"lr": 0.01}),
    "rmsprop": (RMSprop, {"lr": 0.001, "alpha": 0.9, "eps": 1e-7}),
    "adagrad": (Adagrad, {"lr": 0.001, "initial_accumulator_value": 0.1, "eps": 1e-7}),
    "adam": (Adam, {"lr": 0.001, "eps": 1e-7}),
    "adamw": (AdamW, {"lr": 0.001, "eps": 1e-7, "weight_decay": 0.004}),
}


def get_optimizer(name_or_obj, params=None, **kwargs) -> Optimizer:
    """An optimizer from a Keras-style name, an :class:`Optimizer` class, or an instance.

    A name (case-insensitive) builds the class with **Keras' defaults**, so
    ``compile(optimizer="rmsprop")`` behaves like Keras' rather than PyTorch's defaults:

    =========  =====================================================================
    "sgd"      SGD(lr=0.01)                          (PyTorch's default lr is 1e-3)
    "rmsprop"  RMSprop(lr=0.001, alpha=0.9, eps=1e-7) (Keras' rho=0.9; PyTorch: 1e-2, 0.99, 1e-8)
    "adagrad"  Adagrad(lr=0.001, initial_accumulator_value=0.1, eps=1e-7)
    "adam"     Adam(lr=0.001, eps=1e-7)              (PyTorch's eps is 1e-8)
    "adamw"    AdamW(lr=0.001, eps=1e-7, weight_decay=0.004)  (PyTorch's weight_decay is 1e-2)
    =========  =====================================================================

    The update rules stay PyTorch's (e.g. ``eps`` outside the square root), so trajectories are
    close to, not identical with, Keras'. ``kwargs`` override these defaults. An instance is
    returned as is (after checking it optimizes exactly ``params``, when they are given).
    """
    if isinstance(name_or_obj, Optimizer):
        if kwargs:
            raise TypeError(f"get_optimizer: keyword arguments {sorted(kwargs)} cannot be applied "
                            f"to an existing optimizer")
        if params is not None:
            ids = [id(p) for p in params]
            if ids != [id(p) for p in name_or_obj.params]:
                raise ValueError("get_optimizer: the optimizer was built for other parameters "
                                 "than the ones given (build it with model.parameters())")
        return name_or_obj
    if params is None:
        raise TypeError("get_optimizer: params are needed to build an optimizer from a name or "
                        "class")
    if isinstance(name_or_obj, str):
        key = name_or_obj.lower()
        if key not in OPTIMIZERS:
            raise ValueError(f"unknown optimizer {name_or_obj!r}; known names: "
                             f"{sorted(OPTIMIZERS)}")
        cls, defaults = OPTIMIZERS[key]
        return cls(params, **{**defaults, **kwargs})
    if isinstance(name_or_obj, type) and issubclass(name_or_obj, Optimizer):
        return name_or_obj(params, **kwargs)
    raise TypeError(f"optimizer must be a name ({sorted(OPTIMIZERS)}), an Optimizer class or "
                    f"instance, got {type(name_or_obj).__name__}")


# -- gradient clipping ----------------------------------------------------------------------------

def _grads(params) -> list[np.ndarray]:
    if hasattr(params, "grad") and isinstance(getattr(params, "grad"), np.ndarray):
        params = [params]                                 # a single Param, as torch allows
    return [p.grad for p in params if getattr(p, "grad", None) is not None]


def clip_grad_norm_(params, max_norm: float, norm_type: float = 2.0,
                    error_if_nonfinite: bool = False) -> float:
    """Scale all gradients together so their joint norm is at most ``max_norm``; return the
    norm before clipping (``torch.nn.utils.clip_grad_norm_``).

    The total norm is the ``norm_type``-norm of all gradient elements viewed as one vector
    (``norm_type`` > 0, ``inf`` or ``"inf"`` for the largest magnitude). Every gradient is
    multiplied in place by ``min(max_norm / (total + 1e-6), 1)``. A nan/inf total is returned
    (and propagates into the gradients, as in PyTorch) unless ``error_if_nonfinite`` is set,
    which raises ``RuntimeError`` instead.
    """
    try:
        p = float(norm_type)
    except (TypeError, ValueError):
        raise ValueError(f"clip_grad_norm_: norm_type must be a number > 0 or 'inf', got "
                         f"{norm_type!r}") from None
    if not p > 0:
        raise ValueError(f"clip_grad_norm_: norm_type must be a number > 0 or 'inf', got "
                         f"{norm_type!r}")
    max_norm = _nonneg("clip_grad_norm_", "max_norm", max_norm)
    grads = _grads(params)
    if not grads:
        return 0.0
    if math.isinf(p):
        total = max((float(np.max(np.abs(g))) if g.size else 0.0) for g in grads)
        if any(np.isnan(g).any() for g in grads):
            total = float("nan")
    elif p == 2.0:
        total = math.sqrt(sum(float(np.dot(v, v)) for v in
                              (np.asarray(g, dtype=np.float64).ravel() for g in grads)))
    else:
        total = sum(float(np.sum(np.abs(g, dtype=np.float64) ** p)) for g in grads) ** (1.0 / p)
    if error_if_nonfinite and not math.isfinite(total):
        raise RuntimeError(f"clip_grad_norm_: the total norm of order {p} of the gradients is "
                           f"non-finite ({total}), so it cannot be clipped; pass "
                           f"error_if_nonfinite=False to scale by it anyway")
    coef = max_norm / (total + 1e-6)
    if not coef >= 1.0:                   # clamp to 1, letting nan through as PyTorch does
        for g in grads:
            g *= coef
    return total


def clip_grad_value_(params, clip_value: float) -> None:
    """Clip every gradient element into ``[-clip_value, clip_value]`` in place
    (``torch.nn.utils.clip_grad_value_``)."""
    clip_value = _nonneg("clip_grad_value_", "clip_value", clip_value)
    for g in _grads(params):
        np.clip(g, -clip_value, clip_value, out=g)


# -- learning-rate schedules ----------------------------------------------------------------------

class LRScheduler:
    """Base class of the schedules: they set ``optimizer.lr`` at construction and at each
    :meth:`step` (call it after ``optimizer.step()``, once per epoch or per batch).

    The new lr is computed from the optimizer's current one by PyTorch's own recursive
    ("chainable") formulas, so the sequences are PyTorch's to the last bit, and a schedule
    composes with other changes of ``lr`` as in PyTorch. ``state_dict()`` is plain data;
    ``load_state_dict()`` also sets ``optimizer.lr`` to the schedule's last lr, so restoring the
    schedule alone resumes it exactly.
    """

    _FIELDS: tuple[str, ...] = ()                 # constructor arguments kept in state_dict

    def __init__(self, optimizer: Optimizer):
        if not isinstance(optimizer, Optimizer):
            raise TypeError(f"{type(self).__name__}: expected an elman Optimizer, got "
                            f"{type(optimizer).__name__}")
        self.optimizer = optimizer
        self.base_lr = float(optimizer.lr)
        self.last_epoch = -1
        self._step_count = 0
        self._is_initial = True
        self.step()                               # PyTorch's initial step: epoch 0's lr
        self._is_initial = False

    def get_last_lr(self) -> list[float]:
        """The lr set by the latest step, as a one-element list (PyTorch's per-group list)."""
        return list(self._last_lr)

    def _get_lr(self) -> float:
        raise NotImplementedError

    def step(self) -> None:
        self._step_count += 1
        self.last_epoch += 1
        self.optimizer.lr = self._get_lr()
        self._last_lr = [self.optimizer.lr]

    def _state(self) -> dict:
        return {"base_lr": self.base_lr, "last_epoch": self.last_epoch,
                "step_count": self._step_count}

    def state_dict(self) -> dict:
        """Plain data: the class name, its arguments and its counters."""
        return {"scheduler": type(self).__name__,
                **{name: getattr(self, name) for name in self._FIELDS},
                **self._state(), "last_lr": list(self._last_lr)}

    def _check(self, args: dict) -> None:
        """Raise ValueError for invalid constructor arguments (shared with load_state_dict)."""

    def load_state_dict(self, state_dict: dict) -> None:
        owner = f"{type(self).__name__}.load_state_dict"
        if not isinstance(state_dict, dict):
            raise TypeError(f"{owner}: expected a dict from state_dict(), got "
                            f"{type(state_dict).__name__}")
        expected = set(self.state_dict())
        if set(state_dict) != expected:
            raise ValueError(f"{owner}: expected keys {sorted(expected)}, got "
                             f"{sorted(state_dict)}")
        if state_dict["scheduler"] != type(self).__name__:
            raise ValueError(f"{owner}: the state is for a {state_dict['scheduler']!r} "
                             f"scheduler, not {type(self).__name__!r}")
        self._check({name: state_dict[name] for name in self._FIELDS})
        last_lr = state_dict["last_lr"]
        if not isinstance(last_lr, (list, tuple)) or len(last_lr) != 1:
            raise ValueError(f"{owner}: last_lr must be a one-element list, got {last_lr!r}")
        lr = _nonneg(owner, "last_lr", last_lr[0])
        for name in self._FIELDS:
            setattr(self, name, state_dict[name])
        self._load_state(state_dict)
        self._last_lr = [lr]
        self.optimizer.lr = lr

    def _load_state(self, s: dict) -> None:
        self.base_lr = float(s["base_lr"])
        self.last_epoch = int(s["last_epoch"])
        self._step_count = int(s["step_count"])

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={getattr(self, k)!r}" for k in self._FIELDS)
        return f"{type(self).__name__}({args})"


def _pos_int(owner: str, name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{owner}: {name} must be an integer >= 1, got {value!r}")
    return int(value)


class StepLR(LRScheduler):
    """Multiply the lr by ``gamma`` every ``step_size`` steps (``torch.optim.lr_scheduler.StepLR``):
    ``lr_e = base_lr * gamma ** (e // step_size)`` at epoch ``e``.

    >>> import numpy as np, elman
    >>> opt = SGD([elman.Param(np.zeros(1))], lr=1.0)
    >>> sched = StepLR(opt, step_size=2, gamma=0.5)
    >>> lrs = []
    >>> for _ in range(5):
    ...     lrs.append(opt.lr); opt.step(); sched.step()
    >>> lrs
    [1.0, 1.0, 0.5, 0.5, 0.25]
    """

    _FIELDS = ("step_size", "gamma")

    def __init__(self, optimizer: Optimizer, step_size: int, gamma: float = 0.1):
        self._check({"step_size": step_size, "gamma": gamma})
        self.step_size, self.gamma = int(step_size), float(gamma)
        super().__init__(optimizer)

    def _check(self, a):
        _pos_int("StepLR", "step_size", a["step_size"])
        _nonneg("StepLR", "gamma", a["gamma"])

    def _get_lr(self):
        lr = self.optimizer.lr
        if self.last_epoch == 0 or self.last_epoch % self.step_size != 0:
            return lr
        return lr * self.gamma


class CosineAnnealingLR(LRScheduler):
    """Cosine annealing from the initial lr down to ``eta_min`` over ``T_max`` steps
    (``torch.optim.lr_scheduler.CosineAnnealingLR``, without restarts)::

        lr_e = eta_min + (base_lr - eta_min) * (1 + cos(pi * e / T_max)) / 2

    computed, as PyTorch does, by the equivalent recursion from the previous lr (past
    ``T_max`` the lr rises again along the cosine, as in PyTorch).
    """

    _FIELDS = ("T_max", "eta_min")

    def __init__(self, optimizer: Optimizer, T_max: int, eta_min: float = 0.0):
        self._check({"T_max": T_max, "eta_min": eta_min})
        self.T_max, self.eta_min = int(T_max), float(eta_min)
        super().__init__(optimizer)

    def _check(self, a):
        _pos_int("CosineAnnealingLR", "T_max", a["T_max"])
        _nonneg("CosineAnnealingLR", "eta_min", a["eta_min"])

    def _get_lr(self):
        lr, e, T, eta_min = self.optimizer.lr, self.last_epoch, self.T_max, self.eta_min
        if self._is_initial:
            return lr
        if (e - 1 - T) % (2 * T) == 0:
            return lr + (self.base_lr - eta_min) * (1 - math.cos(math.pi / T)) / 2
        return ((1 + math.cos(math.pi * e / T)) / (1 + math.cos(math.pi * (e - 1) / T))
                * (lr - eta_min) + eta_min)


class LinearLR(LRScheduler):
    """Scale the lr by a factor going linearly from ``start_factor`` to ``end_factor`` over
    ``total_iters`` steps, then keep it (``torch.optim.lr_scheduler.LinearLR``): a linear
    warm-up with the defaults' direction. At epoch ``e``::

        lr_e = base_lr * (start_factor + (end_factor - start_factor) * min(e, total_iters)
                          / total_iters)
    """

    _FIELDS = ("start_factor", "end_factor", "total_iters")

    def __init__(self, optimizer: Optimizer, start_factor: float = 1.0 / 3,
                 end_factor: float = 1.0, total_iters: int = 5):
        self._check({"start_factor": start_factor, "end_factor": end_factor,
                     "total_iters": total_iters})
        self.start_factor, self.end_factor = float(start_factor), float(end_factor)
        self.total_iters = int(total_iters)
        super().__init__(optimizer)

    def _check(self, a):
        sf, ef = a["start_factor"], a["end_factor"]
        if not _is_real(sf) or not 0 < sf <= 1.0:
            raise ValueError(f"LinearLR: Starting multiplicative factor expected to be greater "
                             f"than 0 and less or equal to 1, got start_factor={sf!r}")
        if not _is_real(ef) or not 0 <= ef <= 1.0:
            raise ValueError(f"LinearLR: Ending multiplicative factor expected to be between 0 "
                             f"and 1, got end_factor={ef!r}")
        _pos_int("LinearLR", "total_iters", a["total_iters"])

    def _get_lr(self):
        lr, e = self.optimizer.lr, self.last_epoch
        sf, ef, n = self.start_factor, self.end_factor, self.total_iters
        if e == 0:
            return lr * sf
        if self._is_initial or e > n:
            return lr
        return lr * (1.0 + (ef - sf) / (n * sf + (e - 1) * (ef - sf)))


class ReduceLROnPlateau(LRScheduler):
    """Multiply the lr by ``factor`` when a metric has stopped improving
    (``torch.optim.lr_scheduler.ReduceLROnPlateau``); call ``step(metric)`` once per epoch.

    A metric is an improvement when it beats the best so far by the threshold: in ``'min'`` mode
    ``metric < best * (1 - threshold)`` (``threshold_mode='rel'``) or ``metric < best -
    threshold`` (``'abs'``), mirrored for ``'max'``. After more than ``patience`` epochs without
    improvement the lr becomes ``max(lr * factor, min_lr)`` (ignored if that changes it by no
    more than ``eps``), then ``cooldown`` epochs pass before bad epochs count again.
    """

    _FIELDS = ("mode", "factor", "patience", "threshold", "threshold_mode", "cooldown",
               "min_lr", "eps")

    def __init__(self, optimizer: Optimizer, mode: str = "min", factor: float = 0.1,
                 patience: int = 10, threshold: float = 1e-4, threshold_mode: str = "rel",
                 cooldown: int = 0, min_lr: float = 0, eps: float = 1e-8):
        if not isinstance(optimizer, Optimizer):
            raise TypeError(f"ReduceLROnPlateau: expected an elman Optimizer, got "
                            f"{type(optimizer).__name__}")
        args = dict(mode=mode, factor=factor, patience=patience, threshold=threshold,
                    threshold_mode=threshold_mode, cooldown=cooldown, min_lr=min_lr, eps=eps)
        self._check(args)
        for name in self._FIELDS:
            value = args[name]
            setattr(self, name, value if isinstance(value, str) else
                    (int(value) if name in ("patience", "cooldown") else float(value)))
        self.optimizer = optimizer
        self.last_epoch = 0
        self._last_lr = [optimizer.lr]
        self.best = math.inf if mode == "min" else -math.inf
        self.num_bad_epochs = 0
        self.cooldown_counter = 0

    def _check(self, a):
        o = "ReduceLROnPlateau"
        if a["mode"] not in ("min", "max"):
            raise ValueError(f"{o}: mode must be 'min' or 'max', got {a['mode']!r}")
        if a["threshold_mode"] not in ("rel", "abs"):
            raise ValueError(f"{o}: threshold_mode must be 'rel' or 'abs', got "
                             f"{a['threshold_mode']!r}")
        if not _is_real(a["factor"]) or not 0 <= a["factor"] < 1.0:
            raise ValueError(f"{o}: Factor should be < 1.0 (and >= 0), got factor="
                             f"{a['factor']!r}")
        for name in ("patience", "cooldown"):
            v = a[name]
            if isinstance(v, bool) or not isinstance(v, numbers.Integral) or v < 0:
                raise ValueError(f"{o}: {name} must be an integer >= 0, got {v!r}")
        for name in ("threshold", "min_lr", "eps"):
            _nonneg(o, name, a[name])

    def _is_better(self, a: float, best: float) -> bool:
        if self.mode == "min" and self.threshold_mode == "rel":
            return a < best * (1.0 - self.threshold)
        if self.mode == "min":
            return a < best - self.threshold
        if self.threshold_mode == "rel":
            return a > best * (self.threshold + 1.0)
        return a > best + self.threshold

    def step(self, metric) -> None:      # type: ignore[override]
        """Record this epoch's ``metric`` (a number) and reduce the lr if it has plateaued."""
        current = float(metric)
        self.last_epoch += 1
        if self._is_better(current, self.best):
            self.best = current
            self.num_bad_epochs = 0
        else:
            self.num_bad_epochs += 1
        if self.cooldown_counter > 0:
            self.cooldown_counter -= 1
            self.num_bad_epochs = 0                 # bad epochs in cooldown do not count
        if self.num_bad_epochs > self.patience:
            old_lr = float(self.optimizer.lr)
            new_lr = max(old_lr * self.factor, self.min_lr)
            if old_lr - new_lr > self.eps:
                self.optimizer.lr = new_lr
            self.cooldown_counter = self.cooldown
            self.num_bad_epochs = 0
        self._last_lr = [self.optimizer.lr]

    def _state(self) -> dict:
        # `best` is None until a first metric arrives (JSON has no infinity)
        best = None if math.isinf(self.best) else self.best
        return {"best": best, "num_bad_epochs": self.num_bad_epochs,
                "cooldown_counter": self.cooldown_counter, "last_epoch": self.last_epoch}

    def _load_state(self, s: dict) -> None:
        self.best = (math.inf if self.mode == "min" else -math.inf) if s["best"] is None \
            else float(s["best"])
        self.num_bad_epochs = int(s["num_bad_epochs"])
        self.cooldown_counter = int(s["cooldown_counter"])
        self.last_epoch = int(s["last_epoch"])
