"""Forecast a time series with a recurrent network, and compare it with honest baselines.

Default: tomorrow's maximum temperature in Seattle (bundled NOAA daily weather, 2012-2015,
1,461 days) from the previous 14 days of every numeric column (precipitation, temp_max,
temp_min, wind) plus the time of year (cos/sin of the day of the year). The days are split in
time order: the targets of the first 70 % of the days train, the next 15 % validate (they pick
the best epoch and the baselines' settings), the last 15 % test. The scaler is fit on the
training days only, and every test window reads only days before its target.

Model: a recurrent layer (--cell, default LSTM: a lower validation loss than GRU over seeds)
-> the last step -> Dense(horizon), trained with Adam on the mean squared error of the
standardised target; the epoch with the lowest validation loss is kept. With --horizon H > 1
it predicts the next H values at once (direct multi-output), and the metrics are given per step
and over all steps (RMSE pooled over the steps).

Baselines, on the same test targets: persistence (tomorrow = today); climatology (a smooth
day-of-year mean of the training years, number of harmonics chosen on validation; the training
mean when the data has no dates); ridge autoregression on the same inputs as the network (the
flattened window, penalty chosen on validation). RMSE and MAE are in the data's units.

Your own data: --csv FILE --target COL [--features COL ...] [--date COL]. The rows must be in
time order, one per time step; the inputs are the target and the --features (default: every
numeric column); with --date, the time of year is an input too and the climatology baseline
uses it.

Writes into --out (default runs/forecast): model.npz (the best epoch, with the scaler and
the settings, ForecastSettings: `elman forecast --predict` reads it), last.npz (for --resume),
history.csv, metrics.json ({"model": {"rmse", "mae"}, "baselines": {"persistence",
"climatology", "ridge"}, "config": {"settings", ...}}), curves.png (training vs validation loss) and forecast.png (forecast vs actual on the
test period, for the model and the best baseline).

Examples:
  elman forecast                                   # Seattle, next-day temp_max
  elman forecast --horizon 7 --epochs 40           # the next 7 days at once
  elman forecast --csv airline.csv --date month --target passengers --lookback 12 \\
                 --target-mode change                # a monthly series with a trend
  elman forecast --predict --out runs/forecast     # forecast after the last 14 days
"""
from __future__ import annotations

import argparse
import csv
import dataclasses
import math
import os
import re
import sys
import time

import numpy as np

from .. import baselines as bl
from .. import distributed, plots
from .._validate import CommandError
from ..cli import main as cli_main
from ..layers import Dense, Last, LastBidirectional
from ..model import Sequential
from ..optim import Adam
from ..data import StandardScaler, chronological_split, sliding_windows
from ..data.datasets import MISSING_MARKERS, MISSING_MODES, load_seattle_weather, read_csv
from . import common

HELP = "forecast a time series (default: next-day Seattle temp_max) vs persistence, " \
       "climatology and ridge"

BUNDLED = "seattle-weather"      # the name of the bundled data in the checkpoint's extra
BUNDLED_UNITS = {"temp_max": "degC", "temp_min": "degC", "precipitation": "mm", "wind": "m/s"}
DEFAULT_TARGET = "temp_max"


def add_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("data")
    g.add_argument("--csv", metavar="FILE", help="your own CSV file with a header row "
                   "(default: the bundled Seattle daily weather)")
    g.add_argument("--target", default=None, metavar="COL",
                   help=f"the column to forecast (default: {DEFAULT_TARGET} for the bundled "
                   "data; required with --csv)")
    g.add_argument("--features", nargs="+", metavar="COL", help="input columns besides the "
                   "target (default: every numeric column)")
    g.add_argument("--date", metavar="COL", help="a column of ISO dates (e.g. 2012-01-31 or "
                   "1949-01): adds the time of year as an input and to the climatology "
                   "(the bundled data uses its 'date' column)")
    g.add_argument("--missing", choices=MISSING_MODES, default="error",
                   help="what to do with empty/NA cells: stop with an error, drop the rows, or "
                   "carry the last value forward (default: %(default)s)")
    g.add_argument("--lookback", type=int, default=14, metavar="K",
                   help="time steps of history per forecast (default: %(default)s)")
    g.add_argument("--horizon", type=int, default=1, metavar="H",
                   help="forecast the next H steps at once (default: %(default)s)")
    g.add_argument("--target-mode", choices=("level", "change"), default="level",
                   help="what the network (and ridge) learns: the target's level, or its change "
                   "from the last observed value, which suits a series with a trend "
                   "(default: %(default)s)")
    g.add_argument("--no-season", action="store_true",
                   help="leave the time-of-year inputs out (model and ridge alike)")
    g.add_argument("--val-fraction", type=float, default=0.15, metavar="F",
                   help="share of the rows whose targets validate (default: %(default)s)")
    g.add_argument("--test-fraction", type=float, default=0.15, metavar="F",
                   help="share of the last rows whose targets test (default: %(default)s)")
    common.add_common_arguments(p, cell="lstm", hidden=32, layers=1, epochs=30, batch_size=32,
                                lr=3e-3, out="runs/forecast")
    for action in p._actions:          # show every default in --help
        if action.dest == "batch_size" and not action.help:
            action.help = "training windows per step"
        shown = action.default is not None and not isinstance(action.default, bool) \
            and action.default != argparse.SUPPRESS
        if shown and "default" not in (action.help or ""):
            action.help = f"{action.help or ''} (default: %(default)s)".strip()
    p.add_argument("--predict", action="store_true", help="do not train: load OUT/model.npz "
                   "and forecast the next H values from the last K rows of --csv (default: the "
                   "data the model was trained on)")


@dataclasses.dataclass(frozen=True, kw_only=True)
class ForecastSettings(common.TrainingSettings):
    """``elman forecast``'s options (see :func:`add_arguments`), checked when made."""

    TASK = "forecast"
    csv: str | None = None
    target: str | None = None
    features: tuple[str, ...] | None = None
    date: str | None = None
    missing: str = "error"
    lookback: int = 14
    horizon: int = 1
    target_mode: str = "level"
    no_season: bool = False
    val_fraction: float = 0.15
    test_fraction: float = 0.15
    predict: bool = False

    MAY_CHANGE_ON_RESUME = (*common.TrainingSettings.MAY_CHANGE_ON_RESUME, "predict")

    def validate(self) -> None:
        super().validate()
        if self.missing not in MISSING_MODES:
            raise CommandError(f"error: --missing must be one of {list(MISSING_MODES)}, got "
                               f"{self.missing!r}")
        if self.target_mode not in ("level", "change"):
            raise CommandError(f"error: --target-mode must be 'level' or 'change', got "
                               f"{self.target_mode!r}")
        common.positive("lookback", self.lookback)
        common.positive("horizon", self.horizon)
        for name in ("val_fraction", "test_fraction"):
            v = getattr(self, name)
            if not 0 < v < 1:
                raise CommandError(f"error: --{name.replace('_', '-')} must be between 0 and 1, "
                                   f"got {v}")
        if 1.0 - self.val_fraction - self.test_fraction <= 0:
            raise CommandError(f"error: --val-fraction + --test-fraction must be below 1, got "
                               f"{self.val_fraction} + {self.test_fraction}")


ForecastSettings.ARGUMENTS = add_arguments


# -- data ----------------------------------------------------------------------------------------

class Series:
    """The data of one run: ``values`` (rows, F) float64 with the target in column
    ``target_index``, the column names, the dates (or None) and where it came from."""

    def __init__(self, values, columns, target, dates, source, label):
        self.values = values
        self.columns = list(columns)
        self.target = target
        self.target_index = self.columns.index(target)
        self.dates = dates
        self.source = source           # BUNDLED or the CSV path
        self.label = label             # for messages and titles


def _read_user_csv(path: str, **kwargs):
    """``read_csv`` on the user's ``--csv`` file: its errors (they name the file, line and
    column) become one ``error:`` line, in the command's words (``--missing drop``)."""
    try:
        return read_csv(path, **kwargs)
    except (ValueError, OSError) as e:
        message = re.sub(r"missing='(\w+)'", r"--missing \1", str(e))
        raise CommandError(f"error: --csv: {message}") from None


def _csv_header(path: str) -> list[str]:
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            for row in csv.reader(f):
                if any(cell.strip() for cell in row):
                    return [c.strip() for c in row]
    except UnicodeDecodeError:
        pass                 # read_csv gives the detailed message
    return []


def _numeric_columns(path: str, date: str | None, missing: str) -> tuple[list, list]:
    """(numeric, other) column names: a column is numeric when every present cell is a number."""
    header = _csv_header(path)
    names = [h for h in header if h and h != date]
    table = _read_user_csv(path, columns=[], text_columns=names, missing=missing)
    numeric, other = [], []
    for name in names:
        cells = [c.strip() for c in table.text[name] if c.strip().lower() not in MISSING_MARKERS]
        try:
            [float(c) for c in cells]
            ok = bool(cells)
        except ValueError:
            ok = False
        (numeric if ok else other).append(name)
    return numeric, other


def load_series(settings: ForecastSettings) -> Series:
    """The bundled weather or the user's CSV, with the columns the options ask for."""
    if settings.csv is None:
        table = load_seattle_weather()
        target = settings.target or DEFAULT_TARGET
        if settings.date not in (None, "date"):
            raise CommandError(f"error: --date: the bundled data's date column is 'date', got "
                               f"{settings.date!r} (--date is for --csv files)")
        available, source, label, date = table.columns, BUNDLED, "Seattle weather", "date"
    else:
        if not os.path.exists(settings.csv):
            raise CommandError(f"error: --csv: no such file: {settings.csv}")
        if not os.path.isfile(settings.csv):
            raise CommandError(f"error: --csv: {settings.csv} is not a regular file (a directory, "
                               f"FIFO or device)")
        if settings.target is None:
            raise CommandError(f"error: --target: name the column of {settings.csv} to forecast "
                               f"(its columns: {', '.join(_csv_header(settings.csv)) or 'none'})")
        target, source, date = settings.target, os.path.abspath(settings.csv), settings.date
        label = os.path.basename(settings.csv)
        header = _csv_header(settings.csv)
        for opt, names in (("--target", [target]), ("--date", [date] if date else []),
                           ("--features", settings.features or [])):
            for name in names:
                if header and name not in header:
                    raise CommandError(f"error: {opt}: {settings.csv} has no column {name!r}; its "
                                       f"columns are: {', '.join(header)}")
        if settings.features is None:
            available, skipped = _numeric_columns(settings.csv, date, settings.missing)
            if target not in available:
                raise CommandError(f"error: --target: column {target!r} of {settings.csv} is not "
                                   f"numeric")
            if skipped:
                print(f"note: leaving out the non-numeric column(s) {', '.join(skipped)}"
                      + ("" if date else " (pass --date COL to use a date column)"))
        else:
            available = list(settings.features)
    features = list(settings.features) if settings.features is not None else list(available)
    if target == date:
        raise CommandError(f"error: --target: {target!r} is the date column")
    if date is not None and date in features:
        raise CommandError(f"error: --features: {date!r} is the date column")
    if len(set(features)) != len(features):
        raise CommandError(f"error: --features names a column twice: {features}")
    columns = [target] + [c for c in features if c != target]   # the target is always an input
    if settings.csv is None:
        for name in columns:
            if name not in table.columns:
                opt = "--target" if name == target else "--features"
                raise CommandError(f"error: {opt}: the bundled data has no numeric column "
                                   f"{name!r}; its numeric columns are: {', '.join(table.columns)}")
        values = table.values[:, [table.columns.index(c) for c in columns]]
        dates = table.dates
    else:
        table = _read_user_csv(settings.csv, columns=columns, date_column=date,
                               missing=settings.missing)
        values, dates = table.values, table.dates
    if dates is not None and len(dates) > 1 and np.any(np.diff(dates) <= np.timedelta64(0)):
        k = int(np.argmax(np.diff(dates) <= np.timedelta64(0)))
        raise CommandError(f"error: --date: the rows must be in time order, one per time step; "
                           f"{dates[k + 1]} follows {dates[k]}")
    return Series(values, columns, target, dates, source, label)


def season_inputs(dates, use: bool) -> np.ndarray | None:
    """cos/sin of the time of year per row, or None (no dates, or --no-season)."""
    if not use or dates is None:
        return None
    return bl.season_features(dates, harmonics=1)


def make_inputs(values, scaler, season) -> np.ndarray:
    """The network's (and ridge's) input rows: scaled columns, then the season columns."""
    x = scaler.transform(values)
    if season is not None:
        x = np.concatenate([x, season], axis=1)
    return x.astype(np.float32)


def future_dates(dates, horizon: int):
    """The dates of the next ``horizon`` rows: the last date plus multiples of the usual step
    (the median spacing of the rows)."""
    if dates is None or len(dates) < 2:
        return None
    step = np.median(np.diff(dates).astype(np.int64)).astype(np.int64)
    return dates[-1] + np.arange(1, horizon + 1) * np.timedelta64(int(step), np.datetime_data(
        dates.dtype)[0])


class Prepared:
    """Windows, splits and the scaled arrays of one run."""


def prepare(series: Series, settings: ForecastSettings) -> Prepared:
    """Windows of ``lookback`` rows -> the next ``horizon`` target values, split in time order,
    scaled with statistics of the training rows only."""
    train_fraction = 1.0 - settings.val_fraction - settings.test_fraction
    n, K, H, t = len(series.values), settings.lookback, settings.horizon, series.target_index
    if n < K + H:
        raise CommandError(f"error: --lookback/--horizon: {series.label} has {n} rows, too few for "
                           f"--lookback {K} and --horizon {H} (needs at least {K + H})")
    p = Prepared()
    p.train_end = int(round(train_fraction * n))
    p.scaler = StandardScaler().fit(series.values[:p.train_end])
    p.season = season_inputs(series.dates, not settings.no_season)
    p.inputs = make_inputs(series.values, p.scaler, p.season)
    x, _, last_rows = sliding_windows(p.inputs, K, H, targets=[t], multi_output=True)
    starts = np.arange(len(x))
    rows = starts[:, None] + K + np.arange(H)[None, :]               # (N, H) target rows
    target = series.values[:, t]
    y = target[rows]                                                  # data units
    masks = chronological_split(last_rows, n, (train_fraction, settings.val_fraction,
                                               settings.test_fraction))
    for mask, what in zip(masks, ("training", "validation", "test")):
        if not mask.any():
            raise CommandError(f"error: {series.label}: {n} rows leave no {what} windows with "
                               f"--lookback {K}, --horizon {H}, --val-fraction "
                               f"{settings.val_fraction} and --test-fraction "
                               f"{settings.test_fraction}; use a longer series or a shorter "
                               "--lookback")
    mean_t, scale_t = p.scaler.shift[t], p.scaler.scale[t]
    p.x, p.y, p.rows, p.last = x, y, rows, target[starts + K - 1]
    # The network learns (y - offset) / y_scale: the standardised level, or the change from
    # the last value scaled by the training changes' standard deviation.
    p.train, p.val, p.test = masks
    if settings.target_mode == "change":
        p.offset = p.last[:, None]
        p.y_scale = float(np.std(y[p.train] - p.offset[p.train])) or 1.0
    else:
        p.offset, p.y_scale = np.full((len(x), 1), mean_t), float(scale_t)
    p.y_scaled = ((y - p.offset) / p.y_scale).astype(np.float32)
    return p


# -- model ---------------------------------------------------------------------------------------

def build_model(n_inputs: int, settings: ForecastSettings):
    D = 2 if settings.bidirectional else 1
    recurrent = common.recurrent_layer(
        settings.cell, n_inputs, settings.hidden, num_layers=settings.layers, batch_first=True,
        bidirectional=settings.bidirectional, seed=settings.seed,
        recurrent_dropout=settings.recurrent_dropout, layer_norm=settings.layer_norm,
        zoneout=settings.zoneout)
    pick = LastBidirectional(settings.hidden, batch_first=True) if settings.bidirectional \
        else Last(batch_first=True)
    head = Dense(D * settings.hidden, settings.horizon, seed=settings.seed + 1)
    model = Sequential([recurrent, pick, head], seed=settings.seed)
    model.compile(Adam(model.parameters(), lr=settings.lr), "mse", metrics=["mae"],
                  global_clipnorm=1.0)
    return model


# -- baselines -----------------------------------------------------------------------------------

def run_baselines(series: Series, p: Prepared):
    """Test forecasts (data units, (N_test, H)) of the three baselines and their chosen
    settings; every knob is chosen on the validation windows."""
    H = p.y.shape[1]
    preds, chosen = {}, {}
    preds["persistence"] = bl.persistence(p.last[p.test], H)
    target = series.values[:, series.target_index]
    if series.dates is not None:
        phase = bl.year_phase(series.dates)
        clim, scores = bl.fit_climatology(phase[:p.train_end], target[:p.train_end],
                                          phase[p.rows[p.val]], p.y[p.val])
        preds["climatology"] = clim.predict(phase[p.rows[p.test]])
    else:                                         # no dates: no seasons to follow
        clim = bl.Climatology(0).fit(np.zeros(p.train_end), target[:p.train_end])
        preds["climatology"] = clim.predict(np.zeros(p.rows[p.test].shape))
    chosen["climatology_harmonics"] = clim.harmonics
    ridge, scores = bl.fit_ridge(p.x[p.train], p.y_scaled[p.train], p.x[p.val],
                                 p.y_scaled[p.val])
    preds["ridge"] = ridge.predict(p.x[p.test]) * p.y_scale + p.offset[p.test]
    chosen["ridge_alpha"] = ridge.alpha if np.ndim(ridge.alpha) == 0 else ridge.alpha.tolist()
    return preds, chosen


def score(y, pred) -> dict:
    """RMSE and MAE over all steps; with several steps also per step."""
    out = bl.regression_metrics(y, pred)
    if y.shape[1] > 1:
        out["per_step"] = [bl.regression_metrics(y[:, h], pred[:, h]) for h in range(y.shape[1])]
    return out


# -- the command ---------------------------------------------------------------------------------

def run(args) -> int:
    settings = ForecastSettings.from_args(args)
    comm = common.setup_run(settings)
    if settings.predict:
        return predict(settings)
    with distributed.abort_on_error(comm):
        return _run(settings, comm)


def _run(settings: ForecastSettings, comm=None) -> int:
    root = comm is None or comm.is_root
    started = time.perf_counter()
    series = load_series(settings)
    target = series.values[:, series.target_index]
    if np.all(target == target[0]):
        raise CommandError(f"error: --target: the column {series.target!r} holds the same value "
                           f"({target[0]:g}) in every row: there is nothing to forecast")
    p = prepare(series, settings)
    out = common.prepare_out_dir(settings.out, settings.resume, writer=root)
    H = settings.horizon
    n_tr, n_va, n_te = (int(m.sum()) for m in (p.train, p.val, p.test))
    what = f"the next {H} values" if H > 1 else "the next value"
    print(f"{series.label}: {len(series.values)} rows; forecasting {what} of {series.target!r} "
          f"from {settings.lookback} rows of {', '.join(series.columns)}"
          f"{' + time of year' if p.season is not None else ''}")
    print(f"windows: train {n_tr}, validation {n_va}, test {n_te} (split in time order)")

    # the network first: sizes the machine cannot hold end the run before the baselines
    model = common.build(lambda: build_model(p.x.shape[2], settings), "--hidden/--layers")
    preds, chosen = run_baselines(series, p) if root else ({}, {})

    # the settings, and what the data taught (resolved columns, scaler) for --predict
    extra = {"task": "forecast", "settings": settings.to_dict(invocation=False),
             "data": series.source, "columns": series.columns, "target": series.target,
             "date": None if series.dates is None else (settings.date or "date"),
             "season": p.season is not None, "target_scale": p.y_scale,
             "scaler": p.scaler.state_dict()}
    model, history = common.train(model, p.x[p.train], p.y_scaled[p.train],
                                  (p.x[p.val], p.y_scaled[p.val]), settings, out, extra=extra,
                                  comm=comm, budget=common.time_budget(settings))
    if not root:                # the other MPI ranks only train: rank 0 scores and reports
        return 0
    best, _ = common.load_best(out)
    best.eval()
    y_model = (best.predict(p.x[p.test], batch_size=256).astype(np.float64) * p.y_scale
               + p.offset[p.test])

    y_test = p.y[p.test]
    metrics = {"model": score(y_test, y_model),
               "baselines": {name: score(y_test, v) for name, v in preds.items()}}
    val_loss = history.get("val_loss") or [np.nan]
    metrics["config"] = {
        "settings": settings.to_dict(), "data": series.source, "target": series.target,
        "inputs": series.columns,
        "season_inputs": p.season is not None, "lookback": settings.lookback, "horizon": H,
        "target_mode": settings.target_mode,
        "rows": len(series.values), "windows": {"train": n_tr, "validation": n_va,
                                                "test": n_te},
        "cell": settings.cell, "hidden": settings.hidden, "layers": settings.layers,
        "bidirectional": settings.bidirectional, "best_epoch": int(best.epoch or 0),
        "epochs_run": len(history.get("loss", [])), "batch_size": settings.batch_size,
        "lr": settings.lr, "seed": settings.seed, "best_val_loss": float(np.nanmin(val_loss)),
        "units": "data units of the target", **chosen,
        "train_seconds": round(history.get("seconds", 0.0), 2),
        "seconds": round(time.perf_counter() - started, 2)}
    common.write_metrics(out, metrics)

    rows = [(f"{settings.cell} (model)", metrics["model"])] + list(metrics["baselines"].items())
    common.print_results(f"test set, {n_te} windows, {series.target} (data units)"
                         + (f", over all {H} steps" if H > 1 else ""), rows, ["rmse", "mae"],
                         file=sys.stdout)
    if H > 1:
        steps = [(name, {f"h{h + 1}": s["rmse"] for h, s in enumerate(m["per_step"])})
                 for name, m in rows]
        common.print_results("test RMSE per step ahead", steps, [f"h{h + 1}" for h in range(H)],
                             file=sys.stdout)
    persist = metrics["baselines"]["persistence"]["rmse"]
    if persist > 0:
        print(f"\nmodel vs persistence: {100 * (1 - metrics['model']['rmse'] / persist):+.1f} % "
              f"RMSE (positive = better); best epoch {best.epoch}")
    else:                       # the test period repeats its last value: nothing to beat
        print(f"\npersistence is exact on the test period; best epoch {best.epoch}")

    history.pop("seconds", None)
    common.plot_curves(history, out, f"forecast {series.target}",
                       {"loss": "MSE (standardised target units)",
                        "mae": "MAE (standardised target units)"})
    _plot(series, p, y_test, y_model, preds, metrics, out)
    print(f"wrote {out}/: model.npz, last.npz, history.csv, metrics.json, curves.png, "
          f"forecast.png")
    return 0


def _plot(series, p, y_test, y_model, preds, metrics, out):
    if not plots.have_matplotlib():
        return None
    best_name = min(metrics["baselines"], key=lambda k: metrics["baselines"][k]["rmse"])
    rows = p.rows[p.test][:, 0]
    x = series.dates[rows] if series.dates is not None else rows
    step = " (1 step ahead)" if y_test.shape[1] > 1 else ""
    title = (f"{series.label}: {series.target} on the test period{step}; RMSE model "
             f"{metrics['model']['rmse']:.3f}, {best_name} "
             f"{metrics['baselines'][best_name]['rmse']:.3f}")
    return plots.plot_forecast(x, y_test[:, 0], {"model": y_model[:, 0],
                                                  best_name: preds[best_name][:, 0]},
                               os.path.join(out, "forecast.png"), title=title,
                               ylabel=f"{series.target} ({BUNDLED_UNITS[series.target]})"
                               if series.source == BUNDLED and series.target in BUNDLED_UNITS
                               else series.target)


# -- forecasting with a saved model ----------------------------------------------------------------

# what --predict reads back from model.npz's extra besides the settings (what the data taught),
# checked before use (common.check_saved)
SAVED_DATA = {
    "data": (lambda v: isinstance(v, str) and v, "the bundled data's name or a file name"),
    "columns": (common.is_name_list, "a list of distinct column names"),
    "target": (lambda v: isinstance(v, str), "a column name"),
    "date": (lambda v: v is None or isinstance(v, str) and v, "null or a column name"),
    "season": (lambda v: isinstance(v, bool), "true or false"),
    "target_scale": (lambda v: isinstance(v, (int, float)) and not isinstance(v, bool)
                     and math.isfinite(v) and v > 0, "a positive number"),
}


def predict(settings: ForecastSettings) -> int:
    """Load OUT/model.npz and forecast the next H values after the last K rows of the data."""
    ck, extra = common.load_saved(settings.out, "forecast", "--predict")
    path = os.path.join(settings.out, "model.npz")
    common.check_saved(extra, path, "--predict", SAVED_DATA)
    # (a file saved before the settings were saved whole kept these four in extra itself)
    saved = common.saved_settings(ForecastSettings, extra, path, "--predict",
                                  legacy=("lookback", "horizon", "missing", "target_mode"))
    columns, target, date = extra["columns"], extra["target"], extra["date"]
    K, H = saved.lookback, saved.horizon
    if target not in columns:
        raise CommandError(f"error: --predict: {path} is damaged: its target {target!r} is not "
                           f"one of its columns {columns}")
    source = settings.csv or extra["data"]
    if source == BUNDLED:
        table = load_seattle_weather()
        missing = [c for c in columns if c not in table.columns]
        if missing:
            raise CommandError(f"error: --csv: the model reads the columns {columns}; the bundled "
                               f"data lacks {missing}: pass the CSV it was trained on")
        values = table.values[:, [table.columns.index(c) for c in columns]]
        dates, label = table.dates, "the bundled Seattle weather"
    else:
        if not os.path.exists(source):
            raise CommandError(f"error: --csv: no such file: {source}")
        header = _csv_header(source)
        lacking = [c for c in columns + ([date] if date else []) if c not in header]
        if lacking:
            raise CommandError(f"error: --csv: {source} lacks the column(s) {lacking} the model "
                               f"reads (it was trained on {columns}"
                               f"{f' with dates in {date!r}' if date else ''})")
        table = _read_user_csv(source, columns=columns, date_column=date,
                               missing=settings.missing if settings.csv else saved.missing)
        values, dates, label = table.values, table.dates, source
    if len(values) < K:
        raise CommandError(f"error: --predict: {label} has {len(values)} rows; the model reads the "
                           f"last {K}")
    scaler = common.restore("--predict", path, "scaler",
                            lambda: StandardScaler().load_state_dict(extra["scaler"]))
    if scaler.shift.shape != (len(columns),):
        raise CommandError(f"error: --predict: {path} is damaged: its scaler has "
                           f"{scaler.shift.size} columns, its settings name {len(columns)}")
    window_dates = None if dates is None else dates[-K:]
    season = season_inputs(window_dates, extra["season"])
    x = make_inputs(values[-K:], scaler, season)[None]                # (1, K, F)
    model = ck.model
    model.eval()
    try:
        scaled = model.predict(x)
    except ValueError as e:
        raise CommandError(f"error: --predict: {path} is damaged: its network does not read "
                           f"the inputs its settings describe: {e}") from None
    if scaled.shape != (1, H):
        raise CommandError(f"error: --predict: {path} is damaged: its network forecasts "
                           f"{scaled.shape[1:]} values, its settings say --horizon {H}")
    t = columns.index(target)
    offset = values[-1, t] if saved.target_mode == "change" else scaler.shift[t]
    forecast = scaled[0].astype(np.float64) * extra["target_scale"] + offset
    when = future_dates(dates, H) if dates is not None else None
    last = f" after {dates[-1]}" if dates is not None else ""
    print(f"forecast of {target!r} for the next {H} step{'s' if H > 1 else ''}{last}, from the "
          f"last {K} rows of {label} (model {os.path.join(settings.out, 'model.npz')}, "
          f"epoch {ck.epoch}):")
    for h in range(H):
        name = str(when[h]) if when is not None else f"t+{h + 1}"
        print(f"  {name}  {forecast[h]:.4f}")
    return 0


if __name__ == "__main__":      # python -m elman.tasks.forecast ...
    sys.exit(cli_main(["forecast", *sys.argv[1:]]))
