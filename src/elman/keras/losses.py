"""Keras' cross-entropies, with Keras' meaning: ``"sparse_categorical_crossentropy"`` and
``"categorical_crossentropy"`` take **probabilities** (a softmax ``Dense``) unless
``from_logits=True``, where elman's own ``CrossEntropyLoss`` (PyTorch's) takes logits. A Keras
model ending in ``Dense(C, activation="softmax")`` therefore trains as in Keras.

On probabilities ``p`` (..., C), as Keras computes them: ``q = p / sum(p)``, clipped to
``[eps, 1 - eps]`` (``eps = 1e-7``), ``l = -sum_k t_k log q_k`` per position, with ``t`` the
one-hot of an integer label (sparse) or the given target distribution; the mean over positions.
On logits: ``l = -sum_k t_k log_softmax(x)_k``.
"""
from __future__ import annotations

import numpy as np

from .. import losses as _losses
from .. import metrics as _metrics

__all__ = ["SparseCategoricalCrossentropy", "CategoricalCrossentropy", "CategoricalAccuracy",
           "get", "LOSSES"]

EPSILON = 1e-7


class _Crossentropy(_losses.Loss):
    """Shared by the two: ``_targets`` gives the (..., C) target distribution."""

    def __init__(self, from_logits: bool = False, reduction: str = "mean"):
        super().__init__(reduction)
        if not isinstance(from_logits, (bool, np.bool_)):
            raise TypeError(f"from_logits must be True or False, got {from_logits!r}")
        self.from_logits = bool(from_logits)

    def mean_denominator(self, prediction, target) -> float:
        return float(np.prod(np.shape(prediction)[:-1]))

    def __call__(self, prediction, target):
        p = _losses._prediction_array(type(self).__name__, prediction)
        if p.ndim == 0:
            raise ValueError(f"{type(self).__name__}: predictions need a class axis (last), "
                             f"got a scalar")
        t = self._targets(p, np.asarray(target))
        if self.from_logits:
            z = p - p.max(axis=-1, keepdims=True)
            logq = z - np.log(np.exp(z).sum(axis=-1, keepdims=True))
            losses = -(t * logq).sum(axis=-1)
            # d/dx of -sum t log_softmax(x) = softmax(x) sum(t) - t
            grad = np.exp(logq) * t.sum(axis=-1, keepdims=True) - t
        else:
            s = p.sum(axis=-1, keepdims=True)
            q = p / s
            inside = (q > EPSILON) & (q < 1 - EPSILON)
            qc = np.clip(q, EPSILON, 1 - EPSILON)
            losses = -(t * np.log(qc)).sum(axis=-1)
            g = np.where(inside, -t / qc, 0)                     # dl/dq
            # through q = p / s: dl/dp_j = g_j / s - sum_k g_k p_k / s^2
            grad = g / s - (g * p).sum(axis=-1, keepdims=True) / (s * s)
        return self._reduce(losses.astype(p.dtype), grad.astype(p.dtype))

    def config(self) -> dict:
        return {"from_logits": self.from_logits, "reduction": self.reduction}

    def __repr__(self) -> str:
        return f"{type(self).__name__}(from_logits={self.from_logits})"


class SparseCategoricalCrossentropy(_Crossentropy):
    """Integer class labels (...) or (..., 1) against predictions (..., C)."""

    def _targets(self, p, labels):
        if labels.shape == p.shape[:-1] + (1,):
            labels = labels[..., 0]
        if labels.shape != p.shape[:-1]:
            raise ValueError(f"sparse_categorical_crossentropy: predictions of shape {p.shape} "
                             f"(classes last) need labels of shape {p.shape[:-1]}, got "
                             f"{labels.shape}")
        if labels.dtype.kind == "f" and np.all(labels == np.round(labels)):
            labels = labels.astype(np.int64)
        classes = p.shape[-1]
        if labels.dtype.kind not in "iu" or labels.size and (labels.min() < 0
                                                             or labels.max() >= classes):
            raise ValueError(f"sparse_categorical_crossentropy: labels must be integers in "
                             f"[0, {classes}), got values {np.unique(labels)[:5].tolist()}")
        return np.eye(classes, dtype=p.dtype)[labels]


class CategoricalCrossentropy(_Crossentropy):
    """One-hot (or probability) targets of the predictions' shape (..., C)."""

    def _targets(self, p, target):
        if target.shape != p.shape:
            raise ValueError(f"categorical_crossentropy: targets must have the predictions' "
                             f"shape {p.shape} (one-hot), got {target.shape}; integer labels "
                             f"go with sparse_categorical_crossentropy")
        return target.astype(p.dtype, copy=False)


class CategoricalAccuracy(_metrics.Metric):
    """Keras' accuracy for one-hot targets: ``argmax(pred) == argmax(y)``."""

    name = "categorical_accuracy"

    def update(self, pred, y, mask=None):
        self._add(np.argmax(pred, axis=-1) == np.argmax(np.asarray(y), axis=-1), mask)


#: Keras' loss names whose meaning differs from elman's name table, and their classes
LOSSES = {"sparse_categorical_crossentropy": SparseCategoricalCrossentropy,
          "categorical_crossentropy": CategoricalCrossentropy}


def get(loss):
    """``loss`` with Keras' meaning: the names above become these classes; anything else is
    left to elman (:func:`elman.losses.get_loss`)."""
    if isinstance(loss, str) and loss.lower() in LOSSES:
        return LOSSES[loss.lower()]()
    return loss
