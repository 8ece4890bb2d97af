"""elman longmemory: the task generators, a smoke run with a budget of a fraction of a second
and tiny sizes (metrics, table, figures, replot), the definition of "solved", and the errors."""
import dataclasses
import json

import numpy as np
import pytest

from elman._validate import CommandError
from elman.cli import main
from elman.tasks import longmemory
from _torch import require

TINY = ["--lengths", "6", "--hidden", "4", "--seconds", "0.5", "--max-steps", "3",
        "--eval-every", "2", "--val-size", "8", "--flow-batch", "4", "--quiet"]


def test_adding_problem_data():
    rng = np.random.default_rng(0)
    x, y = longmemory.TASKS["adding"].make(rng, 500, 40)
    assert x.shape == (500, 40, 2) and y.shape == (500, 1)
    marks = x[:, :, 1]
    assert np.all(marks.sum(axis=1) == 2)
    first, second = np.argmax(marks[:, :20], axis=1), 20 + np.argmax(marks[:, 20:], axis=1)
    assert np.all(marks[np.arange(500), first] == 1) and np.all(marks[np.arange(500), second] == 1)
    np.testing.assert_allclose(y[:, 0], (x[:, :, 0] * marks).sum(axis=1), rtol=1e-6)
    # the baseline: always answering the mean, 1, scores the variance of a sum of two U(0, 1)
    _, y_big = longmemory.TASKS["adding"].make(rng, 200_000, 10)
    assert abs(np.mean((y_big - 1) ** 2) - longmemory.TASKS["adding"].baseline) < 0.003


def test_recall_data():
    x, y = longmemory.TASKS["recall"].make(np.random.default_rng(1), 300, 50)
    K = longmemory.SYMBOLS
    assert x.shape == (300, 50, K + 1) and y.shape == (300,)
    assert np.all(x[:, :, :K].sum(axis=2) == 1)            # one symbol per step
    marked = np.argmax(x[:, :, K], axis=1)
    assert np.all(x[:, :, K].sum(axis=1) == 1) and marked.max() < 5
    np.testing.assert_array_equal(y, np.argmax(x[np.arange(300), marked, :K], axis=1))


def test_smoke_run(tmp_path):
    require("matplotlib")
    out = tmp_path / "lm"
    assert main(["longmemory", *TINY, "--models", "rnn,mingru,ln-lstm", "--out", str(out)]) == 0
    m = json.loads((out / "metrics.json").read_text())
    runs = m["runs"]
    assert [(r["task"], r["model"]) for r in runs] == [
        (t, k) for t in ("adding", "recall") for k in ("rnn", "mingru", "ln-lstm")]
    for r in runs:
        assert r["length"] == 6 and 1 <= r["steps"] <= 3 and not r["solved"]
        assert len(r["flow_init"]) == 6 and len(r["flow_trained"]) == 6
        assert all(v > 0 for v in r["flow_init"])
        assert r["curve"][0][0] == 0 and r["curve"][-1][0] == r["steps"]
        assert r["val_error"] == r["curve"][-1][2]
    assert m["config"]["settings"]["seconds"] == 0.5
    table = (out / "results.md").read_text()
    assert "| MinGRU |" in table and "| LN-LSTM |" in table and "T = 6" in table
    for name in ("flow_adding_T6.png", "flow_recall_T6.png", "errors_adding.png",
                 "errors_recall.png"):
        assert (out / name).stat().st_size > 1000, name
    (out / "results.md").unlink()
    assert main(["longmemory", "--replot", "--out", str(out)]) == 0
    assert (out / "results.md").read_text() == table


def test_solved_is_the_first_validation_at_or_below_the_threshold(tmp_path, monkeypatch):
    # a threshold every error meets: solved at the first validation after training began
    easy = dataclasses.replace(longmemory.TASKS["adding"], threshold=1e9)
    monkeypatch.setitem(longmemory.TASKS, "adding", easy)
    out = tmp_path / "lm"
    assert main(["longmemory", *TINY, "--tasks", "adding", "--models", "gru", "--max-steps",
                 "10", "--out", str(out)]) == 0
    (r,) = json.loads((out / "metrics.json").read_text())["runs"]
    assert r["solved"] and r["steps_to_solve"] == 2 == r["steps"]
    assert r["cpu_seconds_to_solve"] == r["cpu_seconds"] > 0
    assert "**2**" in (out / "results.md").read_text()


@pytest.mark.parametrize("argv,message", [
    (["--tasks", "adding,copy"], "--tasks must be"),
    (["--models", "transformer"], "--models must be"),
    (["--lengths", "0"], "--lengths must be"),
    (["--lengths", "a"], "--lengths must be"),
    (["--seconds", "0"], "--seconds must be"),
    (["--hidden", "0"], "--hidden must be"),
    (["--replot"], "--replot: no"),
])
def test_errors(argv, message, tmp_path, capsys):
    with pytest.raises(CommandError) as e:
        main(["longmemory", "--out", str(tmp_path / "x"), *argv])
    assert e.value.code == 2 and message in capsys.readouterr().err
