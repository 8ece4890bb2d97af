"""Data preparation: sliding windows over time series, scalers fit on training data only, and a
synthetic weather series for demos and tests."""
from .scaling import MinMaxScaler, StandardScaler
from .synthetic import synthetic_weather
from .windows import chronological_split, sliding_windows

__all__ = ["StandardScaler", "MinMaxScaler", "sliding_windows", "chronological_split",
           "synthetic_weather"]
