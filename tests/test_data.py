"""Windows, splits and scalers: alignment, no leakage, round trips and clear errors."""
import numpy as np
import pytest

from elman.data import (MinMaxScaler, StandardScaler, chronological_split, sliding_windows,
                        synthetic_weather)


def test_windows_align_inputs_with_the_value_horizon_steps_later():
    series = np.stack([np.arange(20.0), 100 + np.arange(20.0)], axis=1)
    x, y, rows = sliding_windows(series, lookback=4, horizon=3, targets=[1])
    assert x.shape == (14, 4, 2) and y.shape == (14, 1)
    for k in (0, 7, 13):
        np.testing.assert_array_equal(x[k], series[k:k + 4])
        assert y[k, 0] == series[k + 4 + 2, 1] and rows[k] == k + 6


def test_multi_output_and_time_major_layout():
    series = np.arange(12.0)
    x, y, rows = sliding_windows(series, lookback=3, horizon=2, multi_output=True,
                                 batch_first=False)
    assert x.shape == (3, 8, 1) and y.shape == (8, 2)
    np.testing.assert_array_equal(x[:, 5, 0], [5, 6, 7])
    np.testing.assert_array_equal(y[5], [8, 9])
    assert rows[5] == 9


def test_window_errors():
    with pytest.raises(ValueError, match=r"too short for lookback=8 and horizon=3 \(needs at "
                                         r"least 11\)"):
        sliding_windows(np.zeros((10, 2)), 8, 3)
    with pytest.raises(ValueError, match=r"targets must be column indices in \[0, 1\], got \[2\]"):
        sliding_windows(np.zeros((10, 2)), 3, targets=[2])
    with pytest.raises(ValueError, match="lookback must be an integer >= 1, got 0"):
        sliding_windows(np.zeros((10, 2)), 0)


def test_chronological_split_is_ordered_and_disjoint():
    _, _, rows = sliding_windows(np.zeros((100, 1)), 5)
    train, val, test = chronological_split(rows, 100, (0.6, 0.2, 0.2))
    assert not (train & val).any() and not (val & test).any() and (train | val | test).all()
    assert rows[train].max() < rows[val].min() and rows[val].max() < rows[test].min()
    assert rows[test].min() == 80
    with pytest.raises(ValueError, match="three non-negative numbers summing to 1"):
        chronological_split(rows, 100, (0.5, 0.2, 0.2))


def test_standard_scaler_uses_training_statistics_only():
    train = np.array([[0.0, 5.0], [2.0, 5.0], [4.0, 5.0]])
    test = np.array([[100.0, 5.0]])
    s = StandardScaler().fit(train)
    np.testing.assert_allclose(s.shift, [2.0, 5.0])
    np.testing.assert_allclose(s.scale, [np.sqrt(8 / 3), 1.0])     # constant column: std 1
    z = s.transform(test)
    np.testing.assert_allclose(z, [[98 / np.sqrt(8 / 3), 0.0]])     # not re-centred on test
    np.testing.assert_allclose(s.inverse_transform(z), test)
    np.testing.assert_allclose(s.inverse_transform(z[:, :1], columns=[0]), test[:, :1])
    assert s.transform(train.astype(np.float32)).dtype == np.float32


def test_scalers_round_trip_state_and_errors():
    data = synthetic_weather(200, seed=1)
    for cls in (StandardScaler, MinMaxScaler):
        s = cls().fit(data)
        t = cls().load_state_dict(s.state_dict())
        np.testing.assert_array_equal(t.transform(data), s.transform(data))
    mm = MinMaxScaler().fit(data)
    z = mm.transform(data)
    assert np.isclose(z.min(), 0) and np.isclose(z.max(), 1)
    with pytest.raises(RuntimeError, match="StandardScaler is not fitted"):
        StandardScaler().transform(data)
    with pytest.raises(ValueError, match=r"contains NaN or infinite values \(first at row 1\)"):
        StandardScaler().fit([[1.0], [np.nan]])
    with pytest.raises(ValueError, match=r"expected 3 features \(last axis\), got shape \(4, 2\)"):
        mm.transform(np.zeros((4, 2)))
    with pytest.raises(ValueError, match="state is for 'MinMaxScaler', not StandardScaler"):
        StandardScaler().load_state_dict(mm.state_dict())


def test_synthetic_weather_is_reproducible_and_plausible():
    a, b = synthetic_weather(730, seed=3), synthetic_weather(730, seed=3)
    np.testing.assert_array_equal(a, b)
    assert a.shape == (730, 3)
    assert 0 < a[:, 0].mean() < 25 and (a[:, 1] >= 20).all() and (a[:, 2] >= 0).all()
    # autocorrelated: yesterday says something about today
    assert np.corrcoef(a[1:, 0], a[:-1, 0])[0, 1] > 0.8


@pytest.mark.parametrize("shift, scale", [([np.nan], [1.0]), ([0.0], [np.inf]), ([0.0], [0.0])])
def test_scaler_state_must_be_finite_with_positive_scale(shift, scale):
    from elman.data import StandardScaler
    state = StandardScaler().fit([[1.0], [3.0]]).state_dict()
    state.update(shift=shift, scale=scale)
    with pytest.raises(ValueError, match="invalid scaler state"):
        StandardScaler().load_state_dict(state)
