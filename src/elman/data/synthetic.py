"""A synthetic but realistic daily weather series, for demos and tests that must not download."""
from __future__ import annotations

import numpy as np

__all__ = ["synthetic_weather"]


def synthetic_weather(days: int = 4 * 365, seed=0) -> np.ndarray:
    """(days, 3): temperature (degC), relative humidity (%), wind (m/s).

    A yearly cycle plus AR(1) "weather systems" (coefficient 0.75, so anomalies last a few days)
    that also drive humidity and wind: tomorrow's temperature is predictable from the last days
    of all three columns, better than by persistence, but not perfectly.
    """
    rng = np.random.default_rng(seed)
    t = np.arange(days)
    season = np.sin(2 * np.pi * (t - 105) / 365.25)
    shocks = rng.normal(0, 1.6, days)
    anomaly = np.zeros(days)
    for d in range(1, days):          # a recurrence over days, not a per-sample loop
        anomaly[d] = 0.75 * anomaly[d - 1] + shocks[d]
    wind = np.abs(3 + 1.5 * rng.standard_normal(days) - 0.3 * anomaly)
    temp = 12 + 8 * season + anomaly - 0.25 * (wind - 3)
    humidity = np.clip(70 - 12 * season - 2.5 * anomaly + rng.normal(0, 4, days), 20, 100)
    return np.stack([temp, humidity, wind], axis=1)
