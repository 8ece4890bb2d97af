"""`elman forecast`: end to end on tiny settings, --predict, --resume, the user's own CSV (the
airline passengers), its error cases, and the baselines on data where the answer is known."""
import csv
import json
import math
import os
import re

import numpy as np
import pytest

import elman
from _checkpoint_files import with_extra, with_settings
from elman import baselines as bl
from elman.cli import main
from elman.data import load_airline_passengers
from elman.data.scaling import StandardScaler

TINY = ["--epochs", "2", "--hidden", "8", "--batch-size", "64", "--quiet"]


def _finite(m):
    return all(isinstance(m[k], float) and math.isfinite(m[k]) for k in ("rmse", "mae"))


def _history_rows(out):
    with open(os.path.join(out, "history.csv")) as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def weather_run(tmp_path_factory):
    """One tiny training run on the bundled weather, shared by the tests that read it."""
    out = str(tmp_path_factory.mktemp("forecast"))
    assert main(["forecast", "--out", out, *TINY]) == 0
    return out


def test_default_data_run_writes_files_and_metrics(weather_run, capsys):
    out = weather_run
    for name in ("model.npz", "last.npz", "history.csv", "metrics.json", "curves.png",
                 "forecast.png"):
        assert os.path.getsize(os.path.join(out, name)) > 0, name
    metrics = json.load(open(os.path.join(out, "metrics.json")))
    assert set(metrics) == {"model", "baselines", "config"}
    assert set(metrics["baselines"]) == {"persistence", "climatology", "ridge"}
    assert _finite(metrics["model"])
    assert all(_finite(m) for m in metrics["baselines"].values())
    cfg = metrics["config"]
    assert cfg["windows"] == {"train": 1009, "validation": 219, "test": 219}
    assert cfg["inputs"] == ["temp_max", "precipitation", "temp_min", "wind"]
    assert cfg["season_inputs"] is True and cfg["lookback"] == 14
    # the reference points of the issue: persistence about 2.95 degC, ridge about 2.73 degC
    assert 2.8 < metrics["baselines"]["persistence"]["rmse"] < 3.1
    assert metrics["baselines"]["ridge"]["rmse"] < metrics["baselines"]["persistence"]["rmse"]
    assert metrics["baselines"]["climatology"]["rmse"] > metrics["baselines"]["ridge"]["rmse"]
    assert len(_history_rows(out)) == 2
    model = elman.load(os.path.join(out, "model.npz"))
    assert model.predict(np.zeros((3, 14, 6), np.float32)).shape == (3, 1)


def test_predict_from_saved_model(weather_run, capsys):
    capsys.readouterr()
    assert main(["forecast", "--predict", "--out", weather_run]) == 0
    text = capsys.readouterr().out
    found = re.findall(r"^\s+(\d{4}-\d{2}-\d{2})\s+(-?[\d.]+)$", text, re.M)
    assert [d for d, _ in found] == ["2016-01-01"]       # the day after the bundled data ends
    value = float(found[0][1])
    # the same forecast by hand: checkpoint + its scaler + the last 14 days
    ck = elman.load_checkpoint(os.path.join(weather_run, "model.npz"))
    table = elman.data.load_seattle_weather()
    cols = ck.extra["columns"]
    scaler = StandardScaler().load_state_dict(ck.extra["scaler"])
    x = scaler.transform(table.values[-14:, [table.columns.index(c) for c in cols]])
    x = np.concatenate([x, bl.season_features(table.dates[-14:])], axis=1)[None]
    ck.model.eval()
    expect = ck.model.predict(x.astype(np.float32))[0, 0] * scaler.scale[0] + scaler.shift[0]
    assert value == pytest.approx(float(expect), abs=1e-3)
    assert -10 < value < 40


@pytest.mark.parametrize("changes, message", [
    ({"settings": {"lookback": 0}}, "its settings: --lookback must be a positive integer, got 0"),
    ({"settings": {"lookback": "14"}}, "its setting 'lookback' must be int, got '14'"),
    ({"settings": {"horizon": 3}},
     "its network forecasts \\(1,\\) values, its settings say --horizon 3"),
    ({"settings": {"missing": "guess"}}, "its settings: --missing must be one of"),
    ({"settings": {"cell": "transformer"}}, "its settings: --cell must be one of"),
    ({"settings": {"hidden_units": 3}}, "its settings hold \\['hidden_units'\\]"),
    ({"settings": []}, "its settings must be a mapping, got list"),
    ({"columns": []}, "'columns' must be a list of distinct column names"),
    ({"target": "snow"}, "its target 'snow' is not one of its columns"),
    ({"season": "yes"}, "'season' must be true or false"),
    ({"season": False}, "its network does not read the inputs its settings describe"),
    ({"target_scale": -1.0}, "'target_scale' must be a positive number"),
    ({"scaler": {"class": "StandardScaler"}}, "its scaler: "),
    ({"data": 7}, "'data' must be the bundled data's name or a file name"),
])
def test_predict_refuses_a_damaged_model_file(weather_run, tmp_path, changes, message):
    """A model file is a stranger's file: every setting --predict reads back is checked (an
    edited lookback of 0 used to forecast from the wrong window and exit 0)."""
    saved = changes.get("settings")
    if isinstance(saved, dict):         # an edit of the saved settings, the rest as they were
        with_settings(os.path.join(weather_run, "model.npz"), tmp_path / "model.npz", **saved)
    else:
        with_extra(os.path.join(weather_run, "model.npz"), tmp_path / "model.npz", **changes)
    with pytest.raises(SystemExit, match="error: --predict: .*model.npz is damaged: .*"
                       + message) as e:
        main(["forecast", "--predict", "--out", str(tmp_path)])
    assert e.value.code == 2


def test_predict_without_a_model_names_the_option(tmp_path):
    with pytest.raises(SystemExit, match="--predict: no model"):
        main(["forecast", "--predict", "--out", str(tmp_path)])


def test_resume_continues_from_checkpoint(tmp_path):
    out = str(tmp_path)
    args = ["forecast", "--out", out, "--hidden", "4", "--quiet", "--lookback", "7"]
    assert main(args + ["--epochs", "1"]) == 0
    assert len(_history_rows(out)) == 1
    assert main(args + ["--epochs", "2", "--resume"]) == 0
    rows = _history_rows(out)
    assert [r["epoch"] for r in rows] == ["1", "2"]            # finished epochs, from 1
    assert elman.load(os.path.join(out, "last.npz")).epoch == 2
    with pytest.raises(SystemExit, match="different architecture"):
        main(["forecast", "--out", out, "--hidden", "5", "--quiet", "--lookback", "7",
              "--epochs", "3", "--resume"])


def _airline_csv(path):
    months, values = load_airline_passengers()
    with open(path, "w") as f:
        f.write("month,passengers\n")
        for m, v in zip(months, values):
            f.write(f"{m},{v:g}\n")
    return str(path)


def test_user_csv_airline_passengers_multi_step(tmp_path, capsys):
    data = _airline_csv(tmp_path / "airline.csv")
    out = str(tmp_path / "run")
    assert main(["forecast", "--csv", data, "--date", "month", "--target", "passengers",
                 "--lookback", "12", "--horizon", "3", "--target-mode", "change", "--out", out,
                 *TINY]) == 0
    metrics = json.load(open(os.path.join(out, "metrics.json")))
    assert metrics["config"]["inputs"] == ["passengers"]
    assert metrics["config"]["rows"] == 144
    for m in [metrics["model"], *metrics["baselines"].values()]:
        assert _finite(m) and len(m["per_step"]) == 3
        # the average over steps is the pooled RMSE of the three steps
        assert m["rmse"] == pytest.approx(math.sqrt(np.mean([s["rmse"] ** 2
                                                             for s in m["per_step"]])))
    assert "test RMSE per step ahead" in capsys.readouterr().out
    assert main(["forecast", "--predict", "--out", out]) == 0     # reads the same file again
    text = capsys.readouterr().out
    found = re.findall(r"^\s+(\d{4}-\d{2})\s+(-?[\d.]+)$", text, re.M)
    assert [d for d, _ in found] == ["1961-01", "1961-02", "1961-03"]
    # change mode: the last value (432 in 1960-12) plus a small learned change
    assert all(300 < float(v) < 600 for _, v in found)


def test_user_csv_without_dates_and_auto_features(tmp_path, capsys):
    path = tmp_path / "s.csv"
    t = np.arange(120)
    with open(path, "w") as f:
        f.write("label,y,x\n")
        for k in t:
            f.write(f"{'ab'[k % 2]},{np.sin(k / 5):.5f},{np.cos(k / 5):.5f}\n")
    out = str(tmp_path / "run")
    assert main(["forecast", "--csv", str(path), "--target", "y", "--lookback", "5",
                 "--out", out, *TINY]) == 0
    assert "leaving out the non-numeric column(s) label" in capsys.readouterr().out
    metrics = json.load(open(os.path.join(out, "metrics.json")))
    assert metrics["config"]["inputs"] == ["y", "x"]
    assert metrics["config"]["season_inputs"] is False
    # a noiseless sine is linear in its past: ridge is nearly exact
    assert metrics["baselines"]["ridge"]["rmse"] < 0.01
    assert main(["forecast", "--predict", "--out", out]) == 0
    assert re.search(r"^\s+t\+1\s+-?[\d.]+$", capsys.readouterr().out, re.M)


@pytest.mark.parametrize("content, extra, message", [
    ("month,passengers\n1949-01,112\n", ["--target", "pax"], "--target: .*no column 'pax'"),
    ("month,passengers\n1949-01,112\n", ["--target", "passengers", "--features", "x"],
     "--features: .*no column 'x'"),
    ("month,passengers\n1949-01,112\n", [], "--target: name the column"),
    ("month,passengers\n1949-02,112\n1949-01,118\n" + "1950-01,1\n" * 40,
     ["--target", "passengers", "--date", "month"], "time order"),
    ("month,passengers\n" + "".join(f"{1949 + k // 12}-{k % 12 + 1:02d},{k}\n"
                                    for k in range(10)),
     ["--target", "passengers", "--lookback", "12"], "too few for --lookback 12"),
    ("month,passengers\n1949-01,112\n", ["--target", "month"], "not numeric"),
])
def test_user_csv_errors_name_the_option(tmp_path, content, extra, message):
    path = tmp_path / "bad.csv"
    path.write_text(content)
    with pytest.raises(SystemExit, match=message):
        main(["forecast", "--csv", str(path), "--out", str(tmp_path / "o"), *TINY, *extra])


def test_bundled_data_errors_name_the_option(tmp_path):
    out = ["--out", str(tmp_path / "o")]
    with pytest.raises(SystemExit, match="--target: the bundled data has no numeric column 'x'"):
        main(["forecast", "--target", "x", *out])
    with pytest.raises(SystemExit, match="--features: .*'weather'"):
        main(["forecast", "--features", "wind", "weather", *out])
    with pytest.raises(SystemExit, match="--val-fraction \\+ --test-fraction must be below 1"):
        main(["forecast", "--val-fraction", "0.5", "--test-fraction", "0.5", *out])
    assert not os.path.exists(tmp_path / "o" / "model.npz")


def test_user_csv_missing_values(tmp_path):
    rows = "".join(f"{k},{'NA' if k == 30 else k % 7}\n" for k in range(100))
    path = tmp_path / "gaps.csv"
    path.write_text("t,v\n" + rows)
    argv = ["forecast", "--csv", str(path), "--target", "v", "--features", "t",
            "--lookback", "4", "--out", str(tmp_path / "o"), *TINY]
    with pytest.raises(SystemExit, match=r"line 32, column 'v': missing value.*Pass --missing "
                                         r"drop"):
        main(argv)
    assert main(argv + ["--missing", "ffill"]) == 0
    with pytest.raises(SystemExit, match="no such file"):
        main(["forecast", "--csv", str(tmp_path / "nope.csv"), "--target", "v"])
    with pytest.raises(SystemExit):                      # argparse: a bad choice
        main(["forecast", "--cell", "transformer"])
    with pytest.raises(SystemExit, match="--horizon must be a positive integer"):
        main(["forecast", "--horizon", "0", "--out", str(tmp_path / "o")])


# -- the baselines on data where the answer is known ---------------------------------------------

def test_persistence_and_metrics():
    assert bl.persistence([1.0, 2.0], 3).tolist() == [[1, 1, 1], [2, 2, 2]]
    m = bl.regression_metrics(np.array([[0.0], [0.0]]), np.array([[3.0], [-1.0]]))
    assert m == {"rmse": pytest.approx(math.sqrt(5)), "mae": 2.0}


def test_ridge_recovers_a_linear_map_and_chooses_its_penalty():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 5, 2))                      # windows (N, T, F)
    w = rng.normal(size=(10, 2))
    y = x.reshape(200, -1) @ w + [1.0, -2.0]
    ridge = bl.Ridge(0.0).fit(x, y)
    np.testing.assert_allclose(ridge.coef, w, atol=1e-10)
    np.testing.assert_allclose(ridge.intercept, [1.0, -2.0], atol=1e-10)
    # noiseless: validation wants the smallest penalty
    best, scores = bl.fit_ridge(x[:150], y[:150], x[150:], y[150:])
    assert best.alpha.tolist() == [min(scores)] * 2 and np.all(scores[min(scores)] < 1e-8)
    # targets unrelated to the inputs: validation wants a large penalty (predict the mean)
    noise = rng.normal(size=(200,))
    best, _ = bl.fit_ridge(x[:150], noise[:150], x[150:], noise[150:])
    assert best.alpha >= 100 and best.predict(x[150:]).shape == (50,)
    # one penalty per output: a clean output and a pure-noise one get their own
    both = np.stack([y[:, 0], noise], axis=1)
    best, _ = bl.fit_ridge(x[:150], both[:150], x[150:], both[150:])
    assert best.alpha[0] == min(bl.RIDGE_ALPHAS) and best.alpha[1] >= 100
    single = bl.Ridge(best.alpha[1]).fit(x[:150], noise[:150])
    np.testing.assert_allclose(best.predict(x[150:])[:, 1], single.predict(x[150:]), atol=1e-10)


def test_climatology_recovers_a_seasonal_cycle():
    dates = np.arange("2001-01-01", "2005-01-01", dtype="datetime64[D]")
    phase = bl.year_phase(dates)
    assert phase.min() == 0.0 and phase.max() < 1.0
    truth = 12 + 8 * np.cos(2 * np.pi * phase) + 2 * np.sin(4 * np.pi * phase)
    noisy = truth + np.random.default_rng(1).normal(0, 1.0, size=truth.shape)
    train, val = slice(0, 1096), slice(1096, None)
    clim, scores = bl.fit_climatology(phase[train], noisy[train], phase[val], noisy[val])
    assert clim.harmonics >= 2 and scores[clim.harmonics] < scores[0] / 10
    assert np.max(np.abs(clim.predict(phase) - truth)) < 0.5
    assert bl.Climatology(0).fit(phase, noisy).predict(0.3) == pytest.approx(noisy.mean())
    # monthly dates: January to December map to 0, 1/12, ..., 11/12 (by days)
    months = np.arange("2001-01", "2002-01", dtype="datetime64[M]")
    np.testing.assert_allclose(bl.year_phase(months), np.arange(12) / 12, atol=0.01)


def test_user_mistakes_give_one_error_line_and_leave_no_empty_out(tmp_path):
    import subprocess
    import sys
    cli = [sys.executable, "-c", "import sys; from elman.cli import main; "
           "sys.exit(main(sys.argv[1:]))", "forecast", "--epochs", "1", "--quiet"]
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    constant = tmp_path / "constant.csv"
    constant.write_text("x,y\n" + "".join(f"{i % 7},5\n" for i in range(200)))
    gap = tmp_path / "gap.csv"
    gap.write_text("x,y\n1,2\n3,\n4,5\n")
    cases = [(["--csv", str(gap), "--target", "y", "--out", str(tmp_path / "g")],
              r"error: --csv: .*gap.csv, line 3, column 'y': missing value.* Pass --missing drop"),
             (["--csv", str(constant), "--target", "y", "--out", str(tmp_path / "c")],
              "the column 'y' holds the same value \\(5\\) in every row"),
             (["--out", str(a_file)], "--out: .* is a file, not a directory"),
             (["--seed", "-1", "--out", str(tmp_path / "s")], "--seed must be a non-negative"),
             (["--lr", "nan", "--out", str(tmp_path / "l")], "--lr must be a positive number"),
             (["--zoneout", "1", "--out", str(tmp_path / "z")],
              r"--zoneout must be in \[0, 1\), got 1.0"),
             (["--csv", str(tmp_path / "missing.csv"), "--out", str(tmp_path / "m")],
              "--csv: no such file"),
             (["--csv", str(tmp_path), "--target", "x", "--out", str(tmp_path / "d")],
              "--csv: .* is not a regular file"),
             # fails after creating --out: the empty directory goes again
             (["--resume", "--out", str(tmp_path / "r")], "--resume: no checkpoint")]
    for args, message in cases:
        proc = subprocess.run(cli + args, capture_output=True, text=True, timeout=120)
        assert proc.returncode == 2, (args, proc.returncode)
        assert "Traceback" not in proc.stderr, proc.stderr
        assert re.search(message, proc.stderr), proc.stderr
    # a run that failed before writing anything leaves no empty output directory behind
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_file", "constant.csv", "gap.csv"]


def test_recurrent_dropout_option_trains_and_is_saved(tmp_path, capsys):
    out = str(tmp_path / "rd")
    assert main(["forecast", "--out", out, *TINY, "--recurrent-dropout", "0.25"]) == 0
    model = elman.load(os.path.join(out, "model.npz"))
    assert model.layers[0].recurrent_dropout == 0.25
    capsys.readouterr()
    assert main(["forecast", "--predict", "--out", out]) == 0
    assert "forecast of 'temp_max'" in capsys.readouterr().out


def test_minutes_stops_inside_the_first_epoch_and_keeps_its_model(tmp_path):
    # --minutes is the whole run's budget, checked after every batch: a budget already spent
    # when training starts ends the first epoch after one batch, which is validated and saved
    out = str(tmp_path / "budget")
    assert main(["forecast", "--out", out, "--hidden", "8", "--batch-size", "8", "--epochs",
                 "50", "--minutes", "0.00001", "--quiet"]) == 0
    assert [r["epoch"] for r in _history_rows(out)] == ["1"]
    assert elman.load(os.path.join(out, "model.npz")).epoch == 1
    with open(os.path.join(out, "metrics.json")) as f:
        assert _finite(json.load(f)["model"])


def test_zoneout_option_trains_and_is_saved(tmp_path, capsys):
    out = str(tmp_path / "zo")
    assert main(["forecast", "--out", out, *TINY, "--zoneout", "0.1"]) == 0
    model = elman.load(os.path.join(out, "model.npz"))
    assert model.layers[0].zoneout == 0.1
    capsys.readouterr()
    assert main(["forecast", "--predict", "--out", out]) == 0
    assert "forecast of 'temp_max'" in capsys.readouterr().out
