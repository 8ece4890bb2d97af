"""Forecasting baselines, so that a recurrent model's error means something.

Each baseline forecasts the same target values as the model, on the same windows, and each one
that has a knob has it chosen on the validation split (never on the test split):

- :func:`persistence` -- tomorrow equals today: the last observed value, repeated for every
  step of the horizon. It has no knob. For weather, it is the forecast to beat.
- :class:`Climatology` -- the seasonal mean: a smooth function of the time of year fitted to the
  training years by least squares on ``K`` harmonics (``1, cos 2 pi k phi, sin 2 pi k phi`` for
  ``k = 1..K``, ``phi`` the fraction of the year gone). That is the day-of-year mean of the
  training years, smoothed; ``K = 0`` is the plain training mean. :func:`fit_climatology`
  picks ``K`` on validation.
- :class:`Ridge` -- linear autoregression: least squares on the flattened input window with an
  L2 penalty ``alpha`` (the intercept is not penalised), solved with one SVD for all penalties.
  :func:`fit_ridge` picks ``alpha`` on validation.

:func:`regression_metrics` gives the RMSE and MAE in the data's units, and :func:`year_phase`
/ :func:`season_features` turn dates into the time of year.

>>> import numpy as np
>>> x = np.array([[1.0], [2.0], [3.0], [4.0]])
>>> Ridge(alpha=0.0).fit(x, 2 * x + 1).predict(np.array([[10.0]])).round(6).tolist()
[[21.0]]
>>> persistence(np.array([3.0, 5.0]), horizon=2).tolist()
[[3.0, 3.0], [5.0, 5.0]]
"""
from __future__ import annotations

import numpy as np

__all__ = ["persistence", "Climatology", "fit_climatology", "Ridge", "fit_ridge",
           "regression_metrics", "year_phase", "season_features", "RIDGE_ALPHAS"]

#: The penalties :func:`fit_ridge` tries by default (on standardised inputs).
RIDGE_ALPHAS = tuple(float(a) for a in np.logspace(-3, 4, 29))


def regression_metrics(y_true, y_pred) -> dict:
    """``{"rmse": ..., "mae": ...}`` over all elements, in the units of the data.

    >>> regression_metrics([1.0, 2.0], [2.0, 4.0])
    {'rmse': 1.5811388300841898, 'mae': 1.5}
    """
    t = np.asarray(y_true, dtype=np.float64)
    p = np.asarray(y_pred, dtype=np.float64)
    if t.shape != p.shape:
        raise ValueError(f"y_true and y_pred must have the same shape, got {t.shape} and "
                         f"{p.shape}")
    if t.size == 0:
        raise ValueError("regression_metrics: no values to score")
    d = p - t
    return {"rmse": float(np.sqrt(np.mean(d * d))), "mae": float(np.mean(np.abs(d)))}


# -- persistence ---------------------------------------------------------------------------------

def persistence(last_values, horizon: int = 1) -> np.ndarray:
    """The naive forecast: every one of the next ``horizon`` values equals the last observed
    one. ``last_values`` (N,) -> (N, horizon)."""
    last = np.asarray(last_values, dtype=np.float64).reshape(-1)
    if horizon < 1:
        raise ValueError(f"horizon must be a positive integer, got {horizon}")
    return np.repeat(last[:, None], horizon, axis=1)


# -- time of year --------------------------------------------------------------------------------

def year_phase(dates) -> np.ndarray:
    """The fraction of the calendar year gone at each date, in [0, 1): 1 January is 0, 2 July
    about 0.5. Works for any ``np.datetime64`` unit (days, months, hours, ...): a monthly series
    gets one phase per month.

    >>> year_phase(np.array(["2021-01-01", "2021-07-02", "2020-12-31"], "datetime64[D]")).round(3)
    array([0.   , 0.499, 0.997])
    """
    d = np.asarray(dates)
    if d.dtype.kind != "M":
        raise TypeError(f"dates must be a numpy datetime64 array, got dtype {d.dtype}")
    start = d.astype("datetime64[Y]")
    seconds = d.astype("datetime64[s]")
    begin = start.astype("datetime64[s]")
    end = (start + 1).astype("datetime64[s]")
    return ((seconds - begin).astype(np.float64) / (end - begin).astype(np.float64))


def season_features(dates, harmonics: int = 1) -> np.ndarray:
    """``[cos 2 pi k phi, sin 2 pi k phi for k = 1..harmonics]`` at each date (n, 2*harmonics):
    the time of year as smooth, periodic inputs (31 December sits next to 1 January)."""
    phase = year_phase(dates)
    cols = []
    for k in range(1, harmonics + 1):
        cols += [np.cos(2 * np.pi * k * phase), np.sin(2 * np.pi * k * phase)]
    return np.stack(cols, axis=1) if cols else np.zeros((len(phase), 0))


# -- climatology ---------------------------------------------------------------------------------

class Climatology:
    """The seasonal mean as a function of the time of year: least squares on ``harmonics``
    Fourier pairs of the year phase, plus a constant. ``harmonics=0`` is the training mean.

    ``fit(phase, y)`` with ``phase`` (n,) in [0, 1) (see :func:`year_phase`) and ``y`` (n,);
    ``predict(phase)`` -> the same shape as ``phase`` (any shape).

    >>> phase = np.arange(365) / 365
    >>> y = 10 + 5 * np.cos(2 * np.pi * phase)
    >>> clim = Climatology(harmonics=1).fit(phase, y)
    >>> round(float(clim.predict(np.array([0.0]))[0]), 6), round(float(clim.predict(0.5)), 6)
    (15.0, 5.0)
    """

    def __init__(self, harmonics: int = 2):
        if isinstance(harmonics, bool) or not isinstance(harmonics, (int, np.integer)) \
                or harmonics < 0:
            raise ValueError(f"harmonics must be an integer >= 0, got {harmonics!r}")
        self.harmonics = int(harmonics)
        self.coef = None

    def _design(self, phase) -> np.ndarray:
        p = np.asarray(phase, dtype=np.float64).reshape(-1)
        cols = [np.ones_like(p)]
        for k in range(1, self.harmonics + 1):
            cols += [np.cos(2 * np.pi * k * p), np.sin(2 * np.pi * k * p)]
        return np.stack(cols, axis=1)

    def fit(self, phase, y) -> "Climatology":
        y = np.asarray(y, dtype=np.float64).reshape(-1)
        a = self._design(phase)
        if len(a) != len(y):
            raise ValueError(f"phase and y must have the same length, got {len(a)} and {len(y)}")
        if len(y) == 0:
            raise ValueError("Climatology.fit: no training values")
        self.coef = np.linalg.lstsq(a, y, rcond=None)[0]
        return self

    def predict(self, phase) -> np.ndarray:
        if self.coef is None:
            raise RuntimeError("Climatology is not fitted: call fit(phase, y) first")
        shape = np.shape(phase)
        return (self._design(phase) @ self.coef).reshape(shape)

    def state_dict(self) -> dict:
        return {"harmonics": self.harmonics, "coef": None if self.coef is None
                else self.coef.tolist()}


def fit_climatology(phase_train, y_train, phase_val, y_val, max_harmonics: int = 6):
    """Fit :class:`Climatology` for ``K = 0..max_harmonics`` on the training values, keep the
    ``K`` with the lowest validation MSE. ``phase_val`` may have more axes than ``y_val`` needs:
    both are compared element-wise (e.g. (N, H) target phases against (N, H) targets).

    Returns ``(climatology, scores)``, ``scores`` = ``{K: validation MSE}``.
    """
    best, scores = None, {}
    y_val = np.asarray(y_val, dtype=np.float64)
    for k in range(max_harmonics + 1):
        clim = Climatology(k).fit(phase_train, y_train)
        mse = float(np.mean((clim.predict(phase_val) - y_val) ** 2))
        scores[k] = mse
        if best is None or mse < scores[best.harmonics] - 1e-12:
            best = clim
    return best, scores


# -- ridge autoregression ------------------------------------------------------------------------

def _flatten(x) -> np.ndarray:
    a = np.asarray(x, dtype=np.float64)
    return a.reshape(len(a), -1)


class Ridge:
    """Linear least squares with an L2 penalty on the weights (not on the intercept).

    ``fit(x, y)``: ``x`` (N, ...) is flattened to (N, D) (a (N, T, F) window becomes its T*F
    values), ``y`` (N,) or (N, H). Minimises ``|y - x w - b|^2 + alpha |w|^2`` for each output:
    centre ``x`` and ``y`` on their training means, then ``w = V diag(s / (s^2 + alpha)) U^T y``
    from the SVD ``x = U diag(s) V^T``, and ``b = mean(y) - mean(x) w``. ``alpha`` is one number
    or one per output (H,). ``predict(x)`` -> (N, H) (or (N,) for a 1-D ``y``).
    """

    def __init__(self, alpha=1.0):
        a = np.asarray(alpha, dtype=np.float64)
        if a.ndim > 1 or a.size == 0 or not np.all(np.isfinite(a)) or np.any(a < 0):
            raise ValueError(f"alpha must be a finite number >= 0 (or one per output), got "
                             f"{alpha!r}")
        self.alpha = float(a) if a.ndim == 0 else a.copy()
        self.coef = None          # (D, H)
        self.intercept = None     # (H,)
        self._vector = False

    @staticmethod
    def _svd(x, y):
        xm, ym = x.mean(axis=0), y.mean(axis=0)
        u, s, vt = np.linalg.svd(x - xm, full_matrices=False)
        return xm, ym, u, s, vt, u.T @ (y - ym)

    @staticmethod
    def _solve(s, vt, uty, alpha):
        """The weights (D, H) for a penalty ``alpha`` (a number, or (H,) one per output)."""
        s = s[:, None]
        alpha = np.broadcast_to(np.asarray(alpha, dtype=np.float64), (uty.shape[1],))[None, :]
        # a zero singular value with alpha = 0 is the min-norm solution's 0, not a division
        keep = s > 1e-12 * max(float(s.max(initial=0.0)), 1e-300)
        with np.errstate(divide="ignore", invalid="ignore"):
            d = np.where(keep, s / (s * s + alpha), 0.0)
        return vt.T @ (d * uty)

    def _set(self, xm, ym, coef):
        self.coef = coef
        self.intercept = ym - xm @ coef
        return self

    def fit(self, x, y) -> "Ridge":
        x = _flatten(x)
        y = np.asarray(y, dtype=np.float64)
        self._vector = y.ndim == 1
        y = y.reshape(len(y), -1)
        if len(x) != len(y):
            raise ValueError(f"x and y must have the same number of samples, got {len(x)} and "
                             f"{len(y)}")
        if np.ndim(self.alpha) and len(self.alpha) != y.shape[1]:
            raise ValueError(f"alpha has {len(self.alpha)} values for {y.shape[1]} outputs")
        xm, ym, _, s, vt, uty = self._svd(x, y)
        return self._set(xm, ym, self._solve(s, vt, uty, self.alpha))

    def predict(self, x) -> np.ndarray:
        if self.coef is None:
            raise RuntimeError("Ridge is not fitted: call fit(x, y) first")
        out = _flatten(x) @ self.coef + self.intercept
        return out[:, 0] if self._vector else out


def fit_ridge(x_train, y_train, x_val, y_val, alphas=RIDGE_ALPHAS):
    """Fit :class:`Ridge` on the training windows for every ``alpha`` (one SVD for all), and
    keep for each output (each step of a multi-step forecast) the ``alpha`` with the lowest
    validation MSE.

    Returns ``(ridge, scores)``: ``ridge.alpha`` is a number for one output and an (H,) array
    for several; ``scores`` = ``{alpha: validation MSE per output (H,)}``.
    """
    alphas = [float(a) for a in alphas]
    if not alphas:
        raise ValueError("fit_ridge: alphas is empty")
    x = _flatten(x_train)
    y = np.asarray(y_train, dtype=np.float64)
    vector = y.ndim == 1
    y = y.reshape(len(y), -1)
    xv = _flatten(x_val)
    yv = np.asarray(y_val, dtype=np.float64).reshape(len(xv), -1)
    xm, ym, _, s, vt, uty = Ridge._svd(x, y)
    scores = {}
    for alpha in alphas:
        pred = (xv - xm) @ Ridge._solve(s, vt, uty, alpha) + ym
        scores[alpha] = np.mean((pred - yv) ** 2, axis=0)
    table = np.stack([scores[a] for a in alphas])                  # (alphas, H)
    best = np.asarray(alphas)[np.argmin(table, axis=0)]            # first (smallest) on ties
    ridge = Ridge(best[0] if len(best) == 1 else best)
    ridge._set(xm, ym, Ridge._solve(s, vt, uty, best))
    ridge._vector = vector
    return ridge, scores
