"""Feature scaling whose statistics come from the training data only.

Seed 000 normalised its test set with the test set's own mean and standard deviation, which
leaks the future into the inputs and shifts them relative to what the model was trained on.
Here a scaler is ``fit`` once, on the training rows, and then applied unchanged to validation,
test and new data; ``state_dict()`` is plain data so it travels inside a checkpoint.
"""
from __future__ import annotations

import numpy as np

__all__ = ["StandardScaler", "MinMaxScaler"]


class _Scaler:
    """Per-column affine map ``z = (x - shift) / scale`` over the last axis."""

    _fields = ("shift", "scale")

    def __init__(self):
        self.shift = None
        self.scale = None

    def _check_fitted(self):
        if self.shift is None:
            raise RuntimeError(f"{type(self).__name__} is not fitted: call fit(train_data) "
                               "first")

    @staticmethod
    def _as_2d(name, x) -> np.ndarray:
        arr = np.asarray(x, dtype=np.float64)
        if arr.ndim not in (1, 2) or arr.size == 0:
            raise ValueError(f"{name} must be a non-empty 1-D or 2-D array (rows, features), "
                             f"got shape {arr.shape}")
        if not np.all(np.isfinite(arr)):
            row = int(np.argwhere(~np.isfinite(arr))[0][0])
            raise ValueError(f"{name} contains NaN or infinite values (first at row {row})")
        return arr.reshape(len(arr), -1)

    def transform(self, x, columns=None) -> np.ndarray:
        """Scale ``x`` (..., features) with the fitted statistics; keeps float32 inputs float32.
        ``columns`` (indices) when ``x`` holds only some features, e.g. the forecast target."""
        return self._apply(x, columns, inverse=False)

    def inverse_transform(self, z, columns=None) -> np.ndarray:
        """Back to the data's units (``columns`` as in :meth:`transform`)."""
        return self._apply(z, columns, inverse=True)

    def _apply(self, x, columns, inverse: bool) -> np.ndarray:
        self._check_fitted()
        shift, scale = self.shift, self.scale
        if columns is not None:
            idx = np.atleast_1d(np.asarray(columns))
            if idx.dtype.kind not in "iu" or np.any(idx < 0) or np.any(idx >= shift.size):
                raise ValueError(f"columns must be indices in [0, {shift.size - 1}], got "
                                 f"{idx.tolist()}")
            shift, scale = shift[idx], scale[idx]
        arr = np.asarray(x)
        if arr.shape[-1:] != shift.shape:
            raise ValueError(f"{type(self).__name__}: expected {shift.size} features (last "
                             f"axis), got shape {arr.shape}")
        dtype = arr.dtype if arr.dtype.kind == "f" else np.float64
        out = arr * scale + shift if inverse else (arr - shift) / scale
        return out.astype(dtype, copy=False)

    def fit_transform(self, x) -> np.ndarray:
        return self.fit(x).transform(x)

    def state_dict(self) -> dict:
        self._check_fitted()
        return {"class": type(self).__name__, "shift": self.shift.tolist(),
                "scale": self.scale.tolist()}

    def load_state_dict(self, state: dict) -> "_Scaler":
        if state.get("class") != type(self).__name__:
            raise ValueError(f"state is for {state.get('class')!r}, not {type(self).__name__}")
        shift, scale = np.asarray(state["shift"], float), np.asarray(state["scale"], float)
        if shift.shape != scale.shape or shift.ndim != 1 or not np.all(scale > 0) \
                or not np.all(np.isfinite(shift)) or not np.all(np.isfinite(scale)):
            raise ValueError(f"invalid scaler state: shift {shift.shape}, scale {scale.shape} "
                             "(both finite, scale positive)")
        self.shift, self.scale = shift, scale
        return self


class StandardScaler(_Scaler):
    """``z = (x - mean) / std`` per column, mean and (population) std from ``fit``'s data.

    A constant column gets std 1 instead of 0, so it maps to zeros instead of NaN.

    >>> s = StandardScaler().fit([[1.0, 10.0], [3.0, 10.0]])
    >>> s.transform([[2.0, 10.0]]).tolist()
    [[0.0, 0.0]]
    >>> s.inverse_transform([[1.0]], columns=[0]).tolist()
    [[3.0]]
    """

    def fit(self, x) -> "StandardScaler":
        arr = self._as_2d("x", x)
        std = arr.std(axis=0)
        self.shift, self.scale = arr.mean(axis=0), np.where(std > 0, std, 1.0)
        return self


class MinMaxScaler(_Scaler):
    """``z = (x - min) / (max - min)`` per column: the training range maps to [0, 1]."""

    def fit(self, x) -> "MinMaxScaler":
        arr = self._as_2d("x", x)
        lo, hi = arr.min(axis=0), arr.max(axis=0)
        self.shift, self.scale = lo, np.where(hi > lo, hi - lo, 1.0)
        return self
