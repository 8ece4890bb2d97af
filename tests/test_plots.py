"""Figures are written as real PNG files (matplotlib is part of the test extra, so these tests
run, never skip, wherever the suite is installed as the README says)."""
import numpy as np
import pytest

from elman import plots

PNG = b"\x89PNG\r\n\x1a\n"


def _is_png(path):
    with open(path, "rb") as f:
        return f.read(8) == PNG


def test_history_forecast_and_series_figures(tmp_path):
    h = {"loss": [1.0, 0.5, 0.3], "val_loss": [1.1, 0.7, 0.6], "accuracy": [0.5, 0.7, 0.8],
         "val_accuracy": [0.5, 0.6, 0.7], "lr": [0.1, 0.1, 0.1]}
    assert _is_png(plots.plot_history(h, tmp_path / "curves.png", title="test"))
    x = np.arange("2015-01-01", "2015-01-11", dtype="datetime64[D]")
    assert _is_png(plots.plot_forecast(x, np.arange(10.0), {"model": np.arange(10.0) + 1},
                                       tmp_path / "f.png"))
    assert _is_png(plots.plot_series(np.arange(5), {"a": np.exp(np.arange(5.0))},
                                     tmp_path / "s.png", logy=True, hlines={"baseline": 2.0}))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["curves.png", "f.png", "s.png"]


def test_empty_history_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="nothing to plot"):
        plots.plot_history({"lr": [0.1]}, tmp_path / "x.png")
