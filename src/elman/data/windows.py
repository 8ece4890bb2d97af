"""Sliding windows over a multivariate time series, for many-to-one forecasting.

A series of R rows (time steps) and F columns becomes samples ``x[k] = series[k : k+lookback]``
with targets ``y[k] = series[k+lookback+horizon-1, targets]`` (the value ``horizon`` steps after
the window's last row), or with ``multi_output`` all of steps 1..horizon.
"""
from __future__ import annotations

import numpy as np

from .. import _validate

__all__ = ["sliding_windows", "chronological_split"]


def sliding_windows(series, lookback: int, horizon: int = 1, targets=(0,),
                    multi_output: bool = False, batch_first: bool = True):
    """Windows of ``lookback`` rows and the target values ``horizon`` rows later.

    Returns ``(x, y, target_rows)``: ``x`` (K, lookback, F) (or (lookback, K, F) with
    ``batch_first=False``, the layout of a time-major RNN), ``y`` (K, len(targets)) or with
    ``multi_output`` (K, horizon * len(targets)) ordered step-major, and ``target_rows`` (K,) the
    row index of each sample's (last) target, which is what a chronological split must use.

    >>> import numpy as np
    >>> series = np.arange(10.0)[:, None]          # one column: 0, 1, ..., 9
    >>> x, y, rows = sliding_windows(series, lookback=3, horizon=2)
    >>> x[0, :, 0].tolist(), y[0].tolist(), int(rows[0])   # rows 0-2 predict row 4
    ([0.0, 1.0, 2.0], [4.0], 4)
    >>> x.shape, y.shape
    ((6, 3, 1), (6, 1))
    """
    arr = np.asarray(series)
    if arr.ndim == 1:
        arr = arr[:, None]
    if arr.ndim != 2:
        raise ValueError(f"series must be 1-D or 2-D (rows, features), got shape {arr.shape}")
    lookback = _validate.positive_int("lookback", lookback)
    horizon = _validate.positive_int("horizon", horizon)
    targets = np.atleast_1d(np.asarray(targets))
    if targets.dtype.kind not in "iu" or np.any(targets < 0) or np.any(targets >= arr.shape[1]):
        raise ValueError(f"targets must be column indices in [0, {arr.shape[1] - 1}], got "
                         f"{targets.tolist()}")
    count = len(arr) - lookback - horizon + 1
    if count < 1:
        raise ValueError(f"series has {len(arr)} rows: too short for lookback={lookback} and "
                         f"horizon={horizon} (needs at least {lookback + horizon})")
    starts = np.arange(count)
    x = arr[starts[:, None] + np.arange(lookback)[None, :]]            # (K, lookback, F)
    if multi_output:
        steps = lookback + np.arange(horizon)                           # 1..horizon ahead
        y = arr[starts[:, None] + steps[None, :]][:, :, targets].reshape(count, -1)
    else:
        y = arr[starts + lookback + horizon - 1][:, targets]
    target_rows = starts + lookback + horizon - 1
    if not batch_first:
        x = np.ascontiguousarray(x.transpose(1, 0, 2))
    return x, y, target_rows


def chronological_split(target_rows, n_rows: int, fractions=(0.7, 0.15, 0.15)):
    """Boolean masks (train, validation, test) over samples, by the row each sample predicts:
    train predicts the first ``fractions[0]`` of the rows, test the last ``fractions[2]``.
    Inputs always precede targets, so a test window may read the last validation days as
    inputs (as a real forecast would), but no target is in two splits."""
    f = np.asarray(fractions, dtype=float)
    if f.shape != (3,) or np.any(f < 0) or not np.isclose(f.sum(), 1.0):
        raise ValueError(f"fractions must be three non-negative numbers summing to 1, got "
                         f"{list(fractions)}")
    rows = np.asarray(target_rows)
    train_end = int(round(f[0] * n_rows))
    val_end = int(round((f[0] + f[1]) * n_rows))
    return rows < train_end, (rows >= train_end) & (rows < val_end), rows >= val_end
