"""Metrics for ``Sequential.compile(metrics=[...])``: each accumulates sums and counts over the
batches of an epoch, so the epoch's value is exact (not a mean of batch means), and honours a
mask of valid steps for per-step outputs."""
from __future__ import annotations

import math

import numpy as np

from . import losses as _losses

__all__ = ["Metric", "MeanAbsoluteError", "MeanSquaredError", "RootMeanSquaredError",
           "BinaryAccuracy", "SparseCategoricalAccuracy", "SparseCategoricalCrossentropy",
           "Accuracy", "METRICS", "get_metric"]


# A metric accumulates over the batches of an epoch (sums and counts, so the epoch value is exact,
# not a mean of batch means) and is read with result(). ``mask`` (N, T), when given, marks the
# valid steps of per-step outputs; padded steps do not count.

def _expand(mask, ndim: int):
    """``mask`` with trailing axes added so it broadcasts against an ``ndim``-array."""
    return mask.reshape(mask.shape + (1,) * (ndim - mask.ndim))


def _like(pred: np.ndarray, y: np.ndarray) -> np.ndarray:
    """``y`` in ``pred``'s shape when only a size-1 axis differs ((N,) labels, (N, 1) output)."""
    if y.shape != pred.shape and y.size == pred.size:
        return y.reshape(pred.shape)
    return y


class Metric:
    """Base class: ``reset()``, ``update(pred, y, mask=None)``, ``result() -> float``;
    ``name`` is the key in the logs and in ``History.history``."""

    name = "metric"

    def __init__(self, name: str | None = None):
        if name is not None:
            self.name = name
        self.reset()

    def reset(self) -> None:
        self._total = 0.0
        self._count = 0.0

    def _add(self, values: np.ndarray, mask) -> None:
        values = np.asarray(values, dtype=np.float64)
        if mask is None:
            self._total += float(values.sum())
            self._count += values.size
        else:
            m = np.broadcast_to(_expand(mask, values.ndim), values.shape)
            self._total += float(values[m].sum())
            self._count += float(np.count_nonzero(m))

    def update(self, pred, y, mask=None) -> None:
        raise NotImplementedError

    def result(self) -> float:
        return self._total / self._count if self._count else float("nan")

    def state(self) -> tuple[float, float]:
        """``(total, count)`` accumulated so far: summed over MPI ranks, they give the
        metric of the whole epoch (a distributed ``fit`` does that)."""
        return self._total, self._count

    def set_state(self, total: float, count: float) -> None:
        self._total, self._count = float(total), float(count)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"


class MeanAbsoluteError(Metric):
    """Mean of ``|pred - y|`` over all elements ("mae")."""

    name = "mae"

    def update(self, pred, y, mask=None):
        self._add(np.abs(pred - _like(pred, y)), mask)


class MeanSquaredError(Metric):
    """Mean of ``(pred - y)**2`` over all elements ("mse")."""

    name = "mse"

    def update(self, pred, y, mask=None):
        d = pred - _like(pred, y)
        self._add(d * d, mask)


class RootMeanSquaredError(MeanSquaredError):
    """Square root of the mean squared error over the whole epoch ("rmse")."""

    name = "rmse"

    def result(self):
        return math.sqrt(super().result())


class BinaryAccuracy(Metric):
    """Fraction of elements with ``(pred > threshold) == (y > 0.5)`` ("binary_accuracy").

    ``threshold`` is 0.5 for probabilities (a sigmoid output with "binary_crossentropy") and 0
    for logits (chosen automatically when the loss is ``BCEWithLogitsLoss``)."""

    name = "binary_accuracy"

    def __init__(self, name: str | None = None, threshold: float = 0.5):
        self.threshold = float(threshold)
        super().__init__(name)

    def update(self, pred, y, mask=None):
        self._add((pred > self.threshold) == (_like(pred, y) > 0.5), mask)


class SparseCategoricalAccuracy(Metric):
    """Fraction of positions whose arg-max class equals the integer label
    ("sparse_categorical_accuracy"): ``pred`` (..., C), ``y`` (...) or (..., 1)."""

    name = "sparse_categorical_accuracy"

    def update(self, pred, y, mask=None):
        self._add(np.argmax(pred, axis=-1) == _labels(self.name, pred, y), mask)


def _labels(name: str, pred, y) -> np.ndarray:
    """Integer labels ``y`` shaped like ``pred`` (..., C) without its class axis."""
    y = np.asarray(y)
    if y.shape == pred.shape[:-1] + (1,):
        y = y[..., 0]
    if y.shape != pred.shape[:-1]:
        raise ValueError(f"{name}: predictions of shape {pred.shape} (classes last) need labels "
                         f"of shape {pred.shape[:-1]}, got {y.shape}")
    return y


class SparseCategoricalCrossentropy(Metric):
    """Mean ``-log p(label)`` over all positions, from logits ``pred`` (..., C) and integer
    labels (...) (pass an instance to ``compile(metrics=[...])``); ``log_base=2`` gives bits
    (bits per character for a character model). Exact over the epoch: every valid position
    counts once, however the positions fall into batches and padded windows.

    >>> m = SparseCategoricalCrossentropy("bits", log_base=2)
    >>> m.update(np.log(np.array([[0.5, 0.25, 0.25]])), np.array([1]))
    >>> m.result()
    2.0
    """

    name = "sparse_categorical_crossentropy"

    def __init__(self, name: str | None = None, log_base: float | None = None):
        self.scale = 1.0 if log_base is None else 1.0 / math.log(log_base)
        super().__init__(name)

    def update(self, pred, y, mask=None):
        y = _labels(self.name, pred, y)
        z = np.asarray(pred, dtype=np.float64)
        z = z - z.max(axis=-1, keepdims=True)
        logp = np.take_along_axis(z, y[..., None].astype(np.intp), axis=-1)[..., 0] \
            - np.log(np.exp(z).sum(axis=-1))
        self._add(-logp * self.scale, mask)


class Accuracy(Metric):
    """Keras' "accuracy"/"acc": binary or sparse categorical, chosen as Keras does.

    With the loss "binary_crossentropy" (``BCELoss``) it is :class:`BinaryAccuracy` at 0.5, with
    ``BCEWithLogitsLoss`` binary at 0 (logits), with "sparse_categorical_crossentropy"
    (``CrossEntropyLoss``) :class:`SparseCategoricalAccuracy`; for any other loss it is decided
    by the first batch: binary when the model outputs one unit (last axis of size 1), sparse
    categorical otherwise."""

    name = "accuracy"

    def __init__(self, name: str | None = None, loss=None):
        self._impl = None
        if isinstance(loss, _losses.BCEWithLogitsLoss):
            self._impl = BinaryAccuracy(threshold=0.0)
        elif isinstance(loss, _losses.BCELoss):
            self._impl = BinaryAccuracy(threshold=0.5)
        elif isinstance(loss, _losses.CrossEntropyLoss):
            self._impl = SparseCategoricalAccuracy()
        super().__init__(name)

    def reset(self):
        if self._impl is not None:
            self._impl.reset()

    def update(self, pred, y, mask=None):
        if self._impl is None:
            self._impl = BinaryAccuracy() if pred.shape[-1:] == (1,) \
                else SparseCategoricalAccuracy()
        self._impl.update(pred, y, mask)

    def result(self):
        return float("nan") if self._impl is None else self._impl.result()

    def state(self):
        return (0.0, 0.0) if self._impl is None else self._impl.state()

    def set_state(self, total, count):
        if self._impl is not None:
            self._impl.set_state(total, count)


class _FunctionMetric(Metric):
    """A plain function ``fn(pred, y) -> float``, averaged over batches weighted by size."""

    def __init__(self, fn):
        self.fn = fn
        super().__init__(getattr(fn, "__name__", type(fn).__name__))

    def update(self, pred, y, mask=None):
        n = len(pred)
        self._total += float(self.fn(pred, y)) * n
        self._count += n


#: Metric names accepted by ``compile(metrics=[...])``.
METRICS: dict[str, type] = {
    "accuracy": Accuracy,
    "acc": Accuracy,
    "binary_accuracy": BinaryAccuracy,
    "sparse_categorical_accuracy": SparseCategoricalAccuracy,
    "mae": MeanAbsoluteError,
    "mean_absolute_error": MeanAbsoluteError,
    "mse": MeanSquaredError,
    "mean_squared_error": MeanSquaredError,
    "rmse": RootMeanSquaredError,
    "root_mean_squared_error": RootMeanSquaredError,
}


def get_metric(name_or_obj, loss=None) -> Metric:
    """A :class:`Metric` from a name in :data:`METRICS` (named as given, as Keras does), a
    Metric (returned as is) or a function ``fn(pred, y) -> float``. ``loss`` lets "accuracy"
    and "binary_accuracy" pick their kind and threshold.

    >>> get_metric("acc", _losses.BCELoss()).name
    'acc'
    """
    if isinstance(name_or_obj, str):
        key = name_or_obj.lower()
        if key not in METRICS:
            raise ValueError(f"unknown metric {name_or_obj!r}; known names: {sorted(METRICS)}")
        cls = METRICS[key]
        if cls is Accuracy:
            return Accuracy(name_or_obj, loss=loss)
        if cls is BinaryAccuracy:
            logits = isinstance(loss, _losses.BCEWithLogitsLoss)
            return BinaryAccuracy(name_or_obj, threshold=0.0 if logits else 0.5)
        return cls(name_or_obj)
    if isinstance(name_or_obj, Metric):
        return name_or_obj
    if callable(name_or_obj):
        return _FunctionMetric(name_or_obj)
    raise TypeError(f"a metric must be a name ({sorted(METRICS)}), an elman Metric or a "
                    f"function (pred, y) -> float, got {type(name_or_obj).__name__}")


