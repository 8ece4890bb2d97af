"""Settings as data: each command's options are one frozen dataclass, checked when made, saved
whole (metrics.json) or less how the run ran (checkpoints), and read back with the same checks
as a stranger's file."""
import dataclasses
import json
import os
import shutil

import numpy as np
import pytest

import elman
from _checkpoint_files import members, rewrite
from elman._validate import CommandError
from elman.cli import build_parser, main
from elman.tasks import classify, common, forecast, generate, longmemory, translate

# per command: its settings class, and options that differ from every default
COMMANDS = {
    "forecast": (forecast.ForecastSettings,
                 ["--lookback", "5", "--horizon", "2", "--features", "wind", "temp_min",
                  "--target-mode", "change", "--no-season", "--cell", "gru", "--hidden", "7",
                  "--lr", "0.01", "--recurrent-dropout", "0.25", "--seed", "4", "--minutes",
                  "1.5", "--threads", "1", "--out", "runs/x"]),
    "classify": (classify.ClassifySettings,
                 ["--maxlen", "30", "--padding", "pre", "--limit", "100", "--pool", "mean",
                  "--ensemble", "2", "--bidirectional", "--layer-norm", "--embed-dropout",
                  "0.1", "--weight-decay", "0", "--quiet"]),
    "generate": (generate.GenerateSettings,
                 ["--max-chars", "900", "--bptt", "9", "--ema", "0.99", "--prime", "ab",
                  "--top-k", "3", "--top-p", "0.5", "--patience", "0", "--cell", "rnn"]),
    "longmemory": (longmemory.LongMemorySettings,
                   ["--tasks", "adding", "--lengths", "5,9", "--models", "gru,lstm",
                    "--seconds", "0.5", "--max-steps", "3"]),
    "translate": (translate.TranslateSettings,
                  ["--max-pairs", "50", "--no-bidirectional", "--attention", "additive",
                   "--decoder-layers", "2", "--schedule", "plateau", "--beam", "3",
                   "--length-penalty", "0.5", "--embedding", "12", "--val-fraction", "0.2"]),
}


def _settings(command):
    cls, argv = COMMANDS[command]
    return cls.from_args(build_parser().parse_args([command, *argv]))


@pytest.mark.parametrize("command", list(COMMANDS))
def test_every_option_is_a_field_and_every_field_an_option(command):
    """No option is left in the namespace unread, and no field silently keeps its default."""
    cls, _ = COMMANDS[command]
    args = build_parser().parse_args([command])
    options = set(vars(args)) - {"run", "command"}
    assert set(cls.names()) == options


@pytest.mark.parametrize("command", list(COMMANDS))
def test_settings_are_frozen_and_hold_the_command_line(command):
    s = _settings(command)
    cls, argv = COMMANDS[command]
    assert type(s) is cls and s.TASK == command
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.seed = 5
    args = build_parser().parse_args([command, *argv])
    for name in cls.names():        # lists (nargs) become tuples: the settings are hashable
        given = getattr(args, name)
        assert getattr(s, name) == (tuple(given) if isinstance(given, list) else given), name
    hash(s)
    # the options given differ from the defaults: each is really read
    defaults = cls.from_args(build_parser().parse_args([command]))
    assert s != defaults


@pytest.mark.parametrize("command", list(COMMANDS))
def test_round_trip_through_json_and_a_checkpoint(command, tmp_path):
    s = _settings(command)
    # metrics.json: all of it
    back = type(s).from_saved(json.loads(json.dumps(s.to_dict())), "metrics.json", "--x")
    assert back == s and back.to_dict() == s.to_dict()
    # a checkpoint's extra: all but how the run ran, which a reader takes from its own options
    path = str(tmp_path / "m.npz")
    elman.save(elman.GRU(2, 3), path, extra={"settings": s.to_dict(invocation=False)})
    saved = elman.load_checkpoint(path).extra["settings"]
    assert set(saved) == set(s.names()) - set(s.INVOCATION)
    back = type(s).from_saved(saved, path, "--predict")
    defaults = type(s).defaults()
    assert back == dataclasses.replace(s, **{k: defaults[k] for k in s.INVOCATION
                                             if k in s.names()})


@pytest.mark.parametrize("command, name, value, message", [
    ("forecast", "lookback", 0, "its settings: --lookback must be a positive integer, got 0"),
    ("forecast", "val_fraction", 0.9, "its settings: --val-fraction \\+ --test-fraction must be"),
    ("forecast", "hidden", True, "its setting 'hidden' must be int, got True"),
    ("forecast", "features", ["a", 3], "its setting 'features' must be tuple"),
    ("classify", "maxlen", 10 ** 12, "its settings: --maxlen must be at most 100_000"),
    ("classify", "dropout", 1.0, "its settings: --dropout must be in \\[0, 1\\), got 1.0"),
    ("classify", "cell", "transformer", "its settings: --cell must be one of"),
    ("generate", "top_p", 0.0, "its settings: --top-p must be in \\(0, 1\\]"),
    ("generate", "prime", "", "its settings: --prime must not be empty"),
    ("generate", "seed", -1, "its settings: --seed must be a non-negative integer"),
    ("longmemory", "models", "gru,cnn", "its settings: --models must be a comma-separated"),
])
def test_a_damaged_saved_setting_is_refused_naming_the_file(command, name, value, message):
    s = _settings(command)
    saved = {**s.to_dict(), name: value}
    with pytest.raises(CommandError, match="^error: --predict: dir/model.npz is damaged: "
                       + message):
        type(s).from_saved(saved, "dir/model.npz", "--predict")


def test_unknown_or_missing_saved_settings():
    s = _settings("forecast")
    with pytest.raises(CommandError, match="its settings hold \\['warp_drive'\\], which "
                       "ForecastSettings does not know"):
        forecast.ForecastSettings.from_saved({**s.to_dict(), "warp_drive": 0.1}, "f",
                                               "--predict")
    # a file written before a setting existed: that setting's command-line default
    saved = s.to_dict()
    del saved["horizon"]
    assert forecast.ForecastSettings.from_saved(saved, "f", "--predict").horizon == 1


def test_construction_validates_like_the_command_line():
    with pytest.raises(CommandError, match="--hidden must be a positive integer, got 0"):
        forecast.ForecastSettings(hidden=0)
    with pytest.raises(CommandError, match="--recurrent-dropout must be in \\[0, 1\\)"):
        common.TrainingSettings(recurrent_dropout=1.0)
    with pytest.raises(SystemExit):
        main(["generate", "--top-k", "-1"])


MODEL = ["forecast", "--hidden", "4", "--lookback", "5"]
FORECAST = [*MODEL, "--epochs", "1", "--quiet", "--threads", "1"]


@pytest.fixture(scope="module")
def forecast_run(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("forecast"))
    assert main(FORECAST + ["--out", out]) == 0
    return out


def test_a_run_saves_its_settings_in_metrics_and_checkpoints(forecast_run):
    s = forecast.ForecastSettings.from_args(build_parser().parse_args(
        FORECAST + ["--out", forecast_run]))
    with open(os.path.join(forecast_run, "metrics.json")) as f:
        config = json.load(f)["config"]
    assert forecast.ForecastSettings.from_saved(config["settings"], "m", "--x") == s
    for name in ("model.npz", "last.npz"):
        extra = elman.load_checkpoint(os.path.join(forecast_run, name)).extra
        assert extra["settings"] == s.to_dict(invocation=False)


def test_predict_reads_a_file_saved_before_settings_were_saved_whole(forecast_run, tmp_path,
                                                                       capsys):
    """A model.npz of the previous layout (lookback, horizon, missing, target_mode as keys of
    extra, no "settings") still forecasts, the same values."""
    capsys.readouterr()
    assert main(["forecast", "--predict", "--out", forecast_run]) == 0
    new = capsys.readouterr().out.splitlines()[1:]
    doc = members(os.path.join(forecast_run, "model.npz"))["doc"]
    settings = doc["extra"].pop("settings")
    doc["extra"].update({k: settings[k] for k in ("lookback", "horizon", "missing",
                                                  "target_mode")})
    rewrite(os.path.join(forecast_run, "model.npz"), tmp_path / "model.npz", doc=doc)
    assert main(["forecast", "--predict", "--out", str(tmp_path)]) == 0
    old = capsys.readouterr().out.splitlines()[1:]
    assert old == new and len(new) == 1
    # and its saved values are checked as the new layout's are
    doc["extra"]["lookback"] = 0
    rewrite(os.path.join(forecast_run, "model.npz"), tmp_path / "model.npz", doc=doc)
    with pytest.raises(SystemExit, match="is damaged: its settings: --lookback must be a "
                       "positive integer, got 0"):
        main(["forecast", "--predict", "--out", str(tmp_path)])


def test_resume_refuses_other_settings_but_more_epochs(forecast_run, tmp_path):
    out = str(tmp_path / "run")
    shutil.copytree(forecast_run, out)
    with pytest.raises(SystemExit, match="^error: --resume: .*last.npz was trained with --lr "
                       "0.003, these options say --lr 0.01; use the same options"):
        main(MODEL + ["--epochs", "2", "--lr", "0.01", "--resume", "--out", out, "--quiet"])
    # more epochs, another --out, --threads, --minutes: the same run, continued
    assert main(MODEL + ["--epochs", "2", "--minutes", "5", "--resume", "--out", out,
                         "--quiet"]) == 0
    assert elman.load(os.path.join(out, "last.npz")).epoch == 2
    assert np.isfinite(json.load(open(os.path.join(out, "metrics.json")))["model"]["rmse"])
