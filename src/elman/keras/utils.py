"""``elman.keras.utils``: ``pad_sequences`` (Keras' defaults: pre-padding, pre-truncation, id 0),
``to_categorical``, ``set_random_seed`` and ``clear_session``."""
import numpy as np

from .. import _validate
from ..data.text import pad_sequences
from ._base import clear_session, set_random_seed

__all__ = ["pad_sequences", "to_categorical", "set_random_seed", "clear_session"]


def to_categorical(x, num_classes=None) -> np.ndarray:
    """Integer labels (any shape) -> one-hot float32 of shape ``x.shape + (num_classes,)``
    (Keras' ``to_categorical``; a trailing axis of size 1 is dropped first).

    >>> to_categorical([0, 2], num_classes=3).tolist()
    [[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]]
    """
    labels = np.asarray(x)
    if labels.ndim and labels.shape[-1] == 1:
        labels = labels[..., 0]
    if labels.dtype.kind == "f" and np.all(labels == np.round(labels)):
        labels = labels.astype(np.int64)
    if labels.dtype.kind not in "iu" or (labels.size and labels.min() < 0):
        raise ValueError(f"to_categorical: x must hold class indices (integers >= 0), got "
                         f"{labels.ravel()[:5].tolist()}")
    top = int(labels.max()) + 1 if labels.size else 0
    num_classes = top if num_classes is None else _validate.positive_int("num_classes",
                                                                         num_classes)
    if top > num_classes:
        raise ValueError(f"to_categorical: a label is {top - 1}, which needs num_classes >= "
                         f"{top}, got num_classes={num_classes}")
    return np.eye(num_classes, dtype=np.float32)[labels]
