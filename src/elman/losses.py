"""Loss functions: each returns ``(value, gradient wrt the prediction)``.

Every loss is a small class configured at construction and called as ``loss(prediction,
target)``. The semantics (formulas, reductions, defaults, clamping) are PyTorch's, so
``elman.MSELoss()(p, t)[0]`` equals ``torch.nn.MSELoss()(torch.tensor(p), torch.tensor(t))``.

``reduction`` is one of

* ``'mean'`` (default): the value is a Python float, the mean of the per-element losses (for
  :class:`CrossEntropyLoss`, a weighted mean over the positions that are not ignored);
* ``'sum'``: a Python float, their sum;
* ``'none'``: an array of per-element losses (shape of the target). The returned gradient is then
  the gradient of ``value.sum()``, i.e. for an upstream gradient of ones; for another upstream
  gradient ``u`` multiply: ``grad * u`` (:class:`CrossEntropyLoss`: ``grad * u[..., None]``).

The gradient is a new array of the prediction's shape and dtype. Computation happens in the
prediction's dtype: float32 and float64 are kept, anything else (ints, lists) becomes float64.

>>> import numpy as np
>>> value, grad = MSELoss()(np.array([1.0, 2.0]), np.array([0.0, 0.0]))
>>> value, grad.tolist()
(2.5, [1.0, 2.0])
"""
from __future__ import annotations

import numbers

import numpy as np

from . import registry
from ._validate import FLOAT_DTYPES

__all__ = ["Loss", "MSELoss", "L1Loss", "HuberLoss", "BCELoss", "BCEWithLogitsLoss",
           "CrossEntropyLoss", "LOSSES", "get_loss"]

_REDUCTIONS = ("mean", "sum", "none")
# PyTorch's BCE backward floor for p (1 - p): 1e-12 stored as a C float (so 9.999999960e-13)
_BCE_EPSILON = float(np.float32(1e-12))


def _prediction_array(name: str, value) -> np.ndarray:
    """``value`` as a float32/float64 array (other numeric input becomes float64)."""
    arr = np.asarray(value)
    if arr.dtype.kind not in "fiub":
        raise TypeError(f"{name}: prediction must hold real numbers, got an array of dtype "
                        f"{arr.dtype}")
    if arr.dtype not in FLOAT_DTYPES:
        arr = arr.astype(np.float64)
    return arr


class Loss:
    """Base class: stores and validates ``reduction``; sub-classes implement ``__call__``."""

    def __init__(self, reduction: str = "mean"):
        if not isinstance(reduction, str) or reduction not in _REDUCTIONS:
            raise ValueError(f"{type(self).__name__}: reduction must be one of "
                             f"{list(_REDUCTIONS)}, got {reduction!r}")
        self.reduction = reduction

    def __call__(self, prediction, target):
        raise NotImplementedError

    def mean_denominator(self, prediction, target) -> float:
        """What ``reduction='mean'`` divides the summed loss by for this batch: the number of
        elements here (:class:`CrossEntropyLoss`: the summed weight of the positions it does
        not ignore). A distributed ``fit`` uses it to weight each rank's share of a batch, so
        that the ranks together average exactly as one process would."""
        return float(np.size(prediction))

    # -- helpers shared by the element-wise losses ---------------------------------------------
    def _pair(self, prediction, target) -> tuple[np.ndarray, np.ndarray]:
        """Prediction and target as arrays of the prediction's float dtype and the same shape."""
        name = type(self).__name__
        pred = _prediction_array(name, prediction)
        tgt = np.asarray(target)
        if tgt.dtype.kind not in "fiub":
            raise TypeError(f"{name}: target must hold real numbers, got an array of dtype "
                            f"{tgt.dtype}")
        if pred.shape != tgt.shape:
            raise ValueError(f"{name}: prediction and target must have the same shape, got "
                             f"prediction {pred.shape} and target {tgt.shape}")
        return pred, tgt.astype(pred.dtype, copy=False)

    def _check_binary_target(self, tgt: np.ndarray) -> None:
        """Binary targets are probabilities: values in [0, 1] (labels 0/1, or soft labels)."""
        if tgt.size and not (np.all(tgt >= 0) and np.all(tgt <= 1)):
            bad = tgt[~((tgt >= 0) & (tgt <= 1))].ravel()[:5].tolist()
            raise ValueError(f"{type(self).__name__}: target must hold values in [0, 1] (labels "
                             f"0 and 1, or probabilities), got {bad}")

    def _reduce(self, losses: np.ndarray, grad: np.ndarray):
        """Apply the reduction to per-element ``losses`` and scale ``grad`` (in place) to match."""
        if self.reduction == "none":
            return losses, grad
        if self.reduction == "sum":
            return float(losses.sum()), grad
        if losses.size == 0:        # PyTorch: the mean of nothing is nan
            return float("nan"), grad
        grad /= losses.size
        return float(losses.mean()), grad

    def __repr__(self) -> str:
        return f"{type(self).__name__}(reduction={self.reduction!r})"

    def config(self) -> dict:
        """The constructor arguments, as plain JSON-able values (arrays become lists), so that
        ``type(loss)(**loss.config())`` is the same loss."""
        return {"reduction": self.reduction}


@registry.register("loss")
class MSELoss(Loss):
    """Mean squared error: ``l = (p - y)**2``, ``dl/dp = 2 (p - y)``.

    Shapes: prediction and target identical, any shape.

    >>> float(MSELoss(reduction="sum")(np.array([0.0, 3.0]), np.array([1.0, 1.0]))[0])
    5.0
    """

    def __call__(self, prediction, target):
        pred, tgt = self._pair(prediction, target)
        diff = pred - tgt
        grad = diff * 2
        np.square(diff, out=diff)
        return self._reduce(diff, grad)


@registry.register("loss")
class L1Loss(Loss):
    """Mean absolute error: ``l = |p - y|``, ``dl/dp = sign(p - y)`` (0 where ``p == y``, as
    PyTorch's subgradient).

    Shapes: prediction and target identical, any shape.
    """

    def __call__(self, prediction, target):
        pred, tgt = self._pair(prediction, target)
        diff = pred - tgt
        grad = np.sign(diff)
        np.abs(diff, out=diff)
        return self._reduce(diff, grad)


@registry.register("loss")
class HuberLoss(Loss):
    """Huber loss with threshold ``delta`` > 0 (PyTorch's ``HuberLoss``)::

        d = p - y
        l = 0.5 d**2                    if |d| < delta
            delta (|d| - 0.5 delta)     otherwise
        dl/dp = clip(d, -delta, delta)

    Shapes: prediction and target identical, any shape.
    """

    def __init__(self, reduction: str = "mean", delta: float = 1.0):
        super().__init__(reduction)
        if isinstance(delta, bool) or not isinstance(delta, numbers.Real) or not delta > 0:
            raise ValueError(f"HuberLoss: delta must be a number > 0, got {delta!r}")
        self.delta = float(delta)

    def __call__(self, prediction, target):
        pred, tgt = self._pair(prediction, target)
        delta = self.delta
        diff = pred - tgt
        grad = np.clip(diff, -delta, delta)
        absd = np.abs(diff, out=diff)
        losses = np.where(absd < delta, 0.5 * absd * absd, delta * (absd - 0.5 * delta))
        return self._reduce(losses.astype(pred.dtype, copy=False), grad)

    def __repr__(self) -> str:
        return f"HuberLoss(reduction={self.reduction!r}, delta={self.delta})"

    def config(self) -> dict:
        return {"reduction": self.reduction, "delta": self.delta}


def _optional_weight(name: str, what: str, weight, pred: np.ndarray) -> np.ndarray | None:
    """``weight`` in the prediction's dtype, checked to broadcast against it without growing it."""
    if weight is None:
        return None
    w = np.asarray(weight)
    if w.dtype.kind not in "fiub":
        raise TypeError(f"{name}: {what} must hold real numbers, got an array of dtype {w.dtype}")
    try:
        fits = np.broadcast_shapes(w.shape, pred.shape) == pred.shape
    except ValueError:
        fits = False
    if not fits:
        raise ValueError(f"{name}: {what} of shape {w.shape} does not broadcast to the "
                         f"prediction's shape {pred.shape}")
    return w.astype(pred.dtype)


@registry.register("loss")
class BCELoss(Loss):
    """Binary cross-entropy on probabilities ``p`` in [0, 1] (PyTorch's ``BCELoss``)::

        l = -w [y log(p) + (1 - y) log(1 - p)],   each log clamped to >= -100
        dl/dp = w (p - y) / max(p (1 - p), 1e-12)   (1e-12 rounded to float32, as PyTorch)

    The clamping (as in PyTorch) keeps value and gradient finite at p = 0 and p = 1. Prefer
    :class:`BCEWithLogitsLoss` on logits, which is exact and stable everywhere.

    Shapes: prediction and target identical, any shape; target values in [0, 1] (soft labels
    allowed). ``weight`` (optional) is broadcast against the prediction and rescales each
    element's loss.
    """

    def __init__(self, weight=None, reduction: str = "mean"):
        super().__init__(reduction)
        self.weight = None if weight is None else np.asarray(weight)

    def config(self) -> dict:
        weight = None if self.weight is None else self.weight.tolist()
        return {"weight": weight, "reduction": self.reduction}

    def __call__(self, prediction, target):
        pred, tgt = self._pair(prediction, target)
        self._check_binary_target(tgt)
        if pred.size and not (np.all(pred >= 0) and np.all(pred <= 1)):
            raise ValueError(f"BCELoss: prediction must be probabilities in [0, 1] (use "
                             f"BCEWithLogitsLoss for logits), got values in "
                             f"[{pred.min()}, {pred.max()}]")
        with np.errstate(divide="ignore"):
            log_p = np.maximum(np.log(pred), -100)
            log_1mp = np.maximum(np.log1p(-pred), -100)
        # -(y log p + (1 - y) log(1 - p)), in PyTorch's order of operations
        losses = (tgt - 1) * log_1mp
        log_p *= tgt
        losses -= log_p
        # PyTorch's backward: (p - y) / max(p (1 - p), eps)
        denom = np.maximum((1 - pred) * pred, pred.dtype.type(_BCE_EPSILON))
        grad = pred - tgt
        grad /= denom
        weight = _optional_weight("BCELoss", "weight", self.weight, pred)
        if weight is not None:
            losses = losses * weight
            grad = grad * weight
        return self._reduce(losses, grad)


@registry.register("loss")
class BCEWithLogitsLoss(Loss):
    """Binary cross-entropy on logits ``x`` (sigmoid folded in; PyTorch's
    ``BCEWithLogitsLoss``)::

        lw = 1 + (pos_weight - 1) y
        l  = w [(1 - y) x + lw softplus(-x)],    softplus(z) = log(1 + exp(z))
        dl/dx = w [(1 - y) - lw sigmoid(-x)]      (= w (sigmoid(x) - y) without pos_weight)

    Both terms are evaluated from ``exp(-|x|)``, so they are exact and overflow-free for any logit.

    Shapes: prediction (logits) and target identical, any shape; targets in [0, 1].
    ``pos_weight`` (optional) is broadcast along the last axis (one weight per class/output, as
    PyTorch), weighting the positive term; ``weight`` (optional) is broadcast against the
    prediction and rescales each element's loss.
    """

    def __init__(self, weight=None, reduction: str = "mean", pos_weight=None):
        super().__init__(reduction)
        self.weight = None if weight is None else np.asarray(weight)
        self.pos_weight = None if pos_weight is None else np.asarray(pos_weight)

    def config(self) -> dict:
        weight = None if self.weight is None else self.weight.tolist()
        pos_weight = None if self.pos_weight is None else self.pos_weight.tolist()
        return {"weight": weight, "reduction": self.reduction, "pos_weight": pos_weight}

    def __call__(self, prediction, target):
        x, y = self._pair(prediction, target)
        self._check_binary_target(y)
        z = np.exp(-np.abs(x))                           # in (0, 1]: never overflows
        # softplus(-x) = -log sigmoid(x) = max(-x, 0) + log1p(exp(-|x|))  (PyTorch's log_sigmoid)
        neg_log_sigmoid = np.maximum(-x, 0)
        neg_log_sigmoid += np.log1p(z)
        # sigmoid(-x) = 1 - sigmoid(x), from exp(-|x|) on both sides of 0 without cancellation
        sigmoid_neg = np.where(x >= 0, z, x.dtype.type(1))
        sigmoid_neg /= z + 1
        one_minus_y = 1 - y
        pos_weight = _optional_weight("BCEWithLogitsLoss", "pos_weight", self.pos_weight, x)
        if pos_weight is not None:
            lw = (pos_weight - 1) * y + 1
            neg_log_sigmoid = neg_log_sigmoid * lw
            sigmoid_neg = sigmoid_neg * lw
        losses = one_minus_y * x
        losses += neg_log_sigmoid
        grad = np.subtract(one_minus_y, sigmoid_neg, out=one_minus_y)
        weight = _optional_weight("BCEWithLogitsLoss", "weight", self.weight, x)
        if weight is not None:
            losses = losses * weight
            grad = grad * weight
        return self._reduce(losses, grad)


@registry.register("loss")
class CrossEntropyLoss(Loss):
    """Softmax cross-entropy on logits with integer class targets (PyTorch's
    ``CrossEntropyLoss`` with class-index targets).

    Shapes: logits ``(..., C)`` with the **class axis last**, targets ``(...)`` of integer class
    indices in ``[0, C)``: ``(N, C)`` with ``(N,)``, per-time-step ``(T, N, C)`` with ``(T, N)``,
    or one sample ``(C,)`` with a scalar target. (PyTorch puts the class axis second for
    ``(N, C, d1, ...)``; ours equals ``F.cross_entropy(x.reshape(-1, C), y.reshape(-1))``, the
    natural layout for a recurrent layer's output.) With ``reduction='none'`` the value has the
    target's shape.

    With ``logp = log_softmax(x)``, class weights ``w`` (ones if not given), label smoothing
    ``eps`` and ``C`` classes, each position ``n`` whose target is not ``ignore_index`` has::

        l_n = (1 - eps) * (-w[y_n] logp[n, y_n]) + eps / C * sum_c (-w[c] logp[n, c])

    Ignored positions have loss 0 and gradient 0. ``'mean'`` divides the sum of ``l_n`` by
    ``sum_n w[y_n]`` over non-ignored positions (the number of such positions without weights),
    exactly PyTorch's weighted mean (nan, with a zero gradient, if every position is ignored).
    The gradient is ``dl_n/dx[n, k] = p[n, k] sum_j q[n, j] - q[n, k]`` with ``p = softmax(x)`` and
    the weighted target distribution ``q[n, k] = (1 - eps) w[y_n] [k == y_n] + eps / C w[k]``.

    Targets may be an integer array, or a float array holding whole numbers (Keras-style labels).
    """

    def __init__(self, weight=None, ignore_index: int = -100, reduction: str = "mean",
                 label_smoothing: float = 0.0):
        super().__init__(reduction)
        if isinstance(ignore_index, bool) or not isinstance(ignore_index, numbers.Integral):
            raise ValueError(f"CrossEntropyLoss: ignore_index must be an integer, got "
                             f"{ignore_index!r}")
        if (isinstance(label_smoothing, bool) or not isinstance(label_smoothing, numbers.Real)
                or not 0.0 <= label_smoothing <= 1.0):
            raise ValueError(f"CrossEntropyLoss: label_smoothing must be a number in [0, 1], got "
                             f"{label_smoothing!r}")
        if weight is not None:
            weight = np.asarray(weight)
            if weight.ndim != 1 or weight.dtype.kind not in "fiu":
                raise ValueError(f"CrossEntropyLoss: weight must be a 1-D array of real numbers "
                                 f"(one per class), got shape {weight.shape} and dtype "
                                 f"{weight.dtype}")
        self.weight = weight
        self.ignore_index = int(ignore_index)
        self.label_smoothing = float(label_smoothing)

    def _targets(self, logits: np.ndarray, target) -> np.ndarray:
        tgt = np.asarray(target)
        if logits.ndim == 0:
            raise ValueError("CrossEntropyLoss: logits must have at least one axis (classes "
                             "last), got a scalar")
        if tgt.shape != logits.shape[:-1]:
            raise ValueError(f"CrossEntropyLoss: logits of shape {logits.shape} (classes last) "
                             f"need a target of shape {logits.shape[:-1]}, got target shape "
                             f"{tgt.shape}")
        if tgt.dtype.kind == "f":
            if not np.all(np.isfinite(tgt)) or not np.all(tgt == np.round(tgt)):
                raise ValueError("CrossEntropyLoss: target must hold integer class indices; got "
                                 "a float array with non-integral values")
            tgt = tgt.astype(np.int64)
        elif tgt.dtype.kind not in "iu":
            raise TypeError(f"CrossEntropyLoss: target must hold integer class indices, got an "
                            f"array of dtype {tgt.dtype}")
        return tgt.astype(np.int64, copy=False)

    def mean_denominator(self, prediction, target) -> float:
        """``sum_n w[y_n]`` over the positions not ignored (their number without weights)."""
        x = _prediction_array("CrossEntropyLoss", prediction)
        tgt = self._targets(x, target)
        keep = tgt != self.ignore_index
        if self.weight is None:
            return float(np.count_nonzero(keep))
        return float(np.asarray(self.weight, dtype=np.float64)[tgt[keep]].sum())

    def __call__(self, prediction, target):
        x = _prediction_array("CrossEntropyLoss", prediction)
        tgt = self._targets(x, target)
        C = x.shape[-1]
        keep = tgt != self.ignore_index
        bad = keep & ((tgt < 0) | (tgt >= C))
        if np.any(bad):
            raise ValueError(f"CrossEntropyLoss: target class indices must be in [0, {C}) (or "
                             f"ignore_index={self.ignore_index}), got "
                             f"{tgt[bad].ravel()[:5].tolist()}")
        weight = None
        if self.weight is not None:
            if self.weight.shape != (C,):
                raise ValueError(f"CrossEntropyLoss: weight must have one entry per class, shape "
                                 f"({C},), got {self.weight.shape}")
            weight = self.weight.astype(x.dtype)

        safe = np.where(keep, tgt, 0)[..., None]          # any valid index at ignored positions
        # log-softmax over the class axis
        shifted = x - x.max(axis=-1, keepdims=True)
        probs = np.exp(shifted)
        sum_exp = probs.sum(axis=-1, keepdims=True)
        probs /= sum_exp
        logp = np.subtract(shifted, np.log(sum_exp), out=shifted)

        eps = self.label_smoothing
        w_y = np.ones(tgt.shape + (1,), x.dtype) if weight is None else weight[safe]
        w_y *= keep[..., None]                                  # 0 at ignored positions
        # nll_n = -w[y_n] logp[n, y_n];  smooth_n = -sum_c w[c] logp[n, c]
        nll = -np.take_along_axis(logp, safe, axis=-1)
        nll *= w_y
        losses = nll if eps == 0 else (1 - eps) * nll
        if eps != 0:
            wlogp = logp if weight is None else logp * weight
            smooth = -wlogp.sum(axis=-1, keepdims=True)
            smooth *= keep[..., None]
            losses += (eps / C) * smooth
        losses = losses[..., 0]

        # q[n, k] = (1 - eps) w[y_n] [k == y_n] + eps/C w[k];  grad = p sum_k q - q
        q_y = (1 - eps) * w_y                                  # target-class part of q
        q_sum = q_y.copy()
        if eps != 0:
            w_sum = C if weight is None else weight.sum()
            q_sum += (eps / C) * w_sum * keep[..., None]
        grad = np.multiply(probs, q_sum, out=probs)
        if eps != 0:
            smooth_q = (eps / C) * (np.ones(C, x.dtype) if weight is None else weight)
            grad -= smooth_q * keep[..., None]
        np.put_along_axis(grad, safe, np.take_along_axis(grad, safe, axis=-1) - q_y, axis=-1)

        if self.reduction == "none":
            return losses, grad
        if self.reduction == "sum":
            return float(losses.sum()), grad
        total_weight = w_y.sum()
        if total_weight == 0:           # every position ignored: PyTorch gives nan and zero grads
            return float("nan"), np.zeros_like(grad)
        grad /= total_weight
        return float(losses.sum() / total_weight), grad

    def __repr__(self) -> str:
        return (f"CrossEntropyLoss(ignore_index={self.ignore_index}, reduction="
                f"{self.reduction!r}, label_smoothing={self.label_smoothing})")

    def config(self) -> dict:
        weight = None if self.weight is None else self.weight.tolist()
        return {"weight": weight, "ignore_index": self.ignore_index,
                "reduction": self.reduction, "label_smoothing": self.label_smoothing}


#: Keras-style names accepted by :func:`get_loss` (and ``Sequential.compile``).
#: ``"binary_crossentropy"`` is :class:`BCELoss` on probabilities (a sigmoid output layer);
#: ``"sparse_categorical_crossentropy"`` is :class:`CrossEntropyLoss` on **logits** (no softmax
#: layer: the loss applies log-softmax itself, like Keras' ``from_logits=True``).
LOSSES: dict[str, type] = {
    "mse": MSELoss,
    "mean_squared_error": MSELoss,
    "mae": L1Loss,
    "mean_absolute_error": L1Loss,
    "huber": HuberLoss,
    "binary_crossentropy": BCELoss,
    "sparse_categorical_crossentropy": CrossEntropyLoss,
}


def get_loss(name_or_obj):
    """A loss object from a Keras-style name (see :data:`LOSSES`), a loss class, or a loss object
    (returned as is).

    >>> get_loss("mse")
    MSELoss(reduction='mean')
    """
    if isinstance(name_or_obj, str):
        key = name_or_obj.lower()
        if key not in LOSSES:
            raise ValueError(f"unknown loss {name_or_obj!r}; known names: {sorted(LOSSES)}")
        return LOSSES[key]()
    if isinstance(name_or_obj, type) and issubclass(name_or_obj, Loss):
        return name_or_obj()
    if isinstance(name_or_obj, Loss) or callable(name_or_obj):
        return name_or_obj
    raise TypeError(f"loss must be a name ({sorted(LOSSES)}), a Loss class or a callable "
                    f"returning (value, grad), got {type(name_or_obj).__name__}")
