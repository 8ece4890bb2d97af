"""MinGRU/MinLSTM inside Sequential (compile, fit, evaluate, predict, lengths, per-step
outputs, save/load and resume) and as --cell mingru|minlstm of the task commands."""
import json
import os

import numpy as np
import pytest

import elman
from elman._validate import CommandError
from elman.cli import main
from elman.tasks import common
from _torch import require

RNG = np.random.default_rng(0)


@pytest.mark.parametrize("cls", [elman.MinGRU, elman.MinLSTM])
@pytest.mark.parametrize("batch_first", [True, False])
def test_sequential_gradients_match_finite_differences(cls, batch_first):
    model = elman.Sequential([cls(3, 4, batch_first=batch_first, bidirectional=True,
                                  dtype=np.float64, seed=1),
                              elman.LastBidirectional(4, batch_first=batch_first),
                              elman.Dense(8, 2, dtype=np.float64, seed=2)])
    x = RNG.standard_normal((3, 5, 3))                  # samples first, whatever the layer's
    W = RNG.standard_normal((3, 2))
    pred = model.forward(x)
    model.zero_grad()
    dx = model.backward(W)                              # L = sum(W * prediction)
    assert pred.shape == (3, 2)
    for name, array, grad in [("x", x, dx)] + [(n, p.data, p.grad)
                                               for n, p in model.named_parameters()]:
        numeric = np.zeros_like(array)
        for i in np.ndindex(array.shape):
            keep = array[i]
            array[i] = keep + 1e-6
            up = float((W * model.forward(x)).sum())
            array[i] = keep - 1e-6
            down = float((W * model.forward(x)).sum())
            array[i] = keep
            numeric[i] = (up - down) / 2e-6
        np.testing.assert_allclose(grad, numeric, rtol=1e-6, atol=1e-9, err_msg=name)


def test_sequential_time_major_layer_matches_the_layer_alone():
    layer = elman.MinLSTM(2, 3, seed=0)                  # time-major (T, N, I)
    model = elman.Sequential([layer, elman.Dense(3, 1, seed=1)])
    x = RNG.standard_normal((4, 6, 2)).astype(np.float32)   # (N, T, F)
    lengths = [6, 2, 5, 1]
    got = model.forward(x, lengths=lengths)
    out, _ = layer(x.transpose(1, 0, 2), lengths=lengths)
    want = (out @ model[1].weight.data.T + model[1].bias.data).transpose(1, 0, 2)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    assert got.shape == (4, 6, 1)


@pytest.mark.parametrize("cls", [elman.MinGRU, elman.MinLSTM])
def test_compile_fit_evaluate_predict_save_load_resume(cls, tmp_path):
    # a target the model can learn: the mean of the first feature over each sequence's steps
    x = RNG.standard_normal((96, 8, 2)).astype(np.float32)
    lengths = RNG.integers(3, 9, 96)
    y = np.array([x[i, :n, 0].mean() for i, n in enumerate(lengths)], np.float32)[:, None]

    def make():
        m = elman.Sequential([cls(2, 8, batch_first=True, seed=3), elman.Last(batch_first=True),
                              elman.Dense(8, 1, seed=4)], seed=5)
        m.compile("adam", "mse", metrics=["mae"])
        return m
    model = make()
    before = model.evaluate(x, y, lengths=lengths)
    history = model.fit(x, y, epochs=6, batch_size=16, lengths=lengths, verbose=0,
                        validation_split=0.25)
    assert history.history["loss"][-1] < history.history["loss"][0]
    after = model.evaluate(x, y, lengths=lengths, return_dict=True)
    assert after["loss"] < before[0] and set(after) == {"loss", "mae"}
    pred = model.predict(x, lengths=lengths)
    assert pred.shape == (96, 1)

    path = tmp_path / "model.npz"
    elman.save(model, path)
    loaded = elman.load(path)
    assert type(loaded[0]) is cls and loaded[0].config() == model[0].config()
    np.testing.assert_array_equal(loaded.predict(x, lengths=lengths), pred)
    # training resumes exactly: optimizer state, epoch and shuffling generator come back
    model.fit(x, y, epochs=7, initial_epoch=6, batch_size=16, lengths=lengths, verbose=0)
    loaded.fit(x, y, epochs=7, initial_epoch=6, batch_size=16, lengths=lengths, verbose=0)
    for (n, p), (_, q) in zip(model.named_parameters(), loaded.named_parameters()):
        np.testing.assert_array_equal(p.data, q.data, err_msg=n)


def test_recurrent_layer_helper_passes_cell_options_only_when_set():
    layer = common.recurrent_layer("minlstm", 3, 4, num_layers=2, seed=0, layer_norm=False,
                                   recurrent_dropout=0.0)
    assert type(layer) is elman.MinLSTM and layer.num_layers == 2
    lstm = common.recurrent_layer("lstm", 3, 4, layer_norm=True, recurrent_dropout=0.25)
    assert lstm.layer_norm and lstm.recurrent_dropout == 0.25
    with pytest.raises(CommandError, match="--recurrent-dropout is not available for --cell "
                                           "mingru"):
        common.recurrent_layer("mingru", 3, 4, recurrent_dropout=0.1)
    with pytest.raises(CommandError, match="--cell must be one of"):
        common.recurrent_layer("transformer", 3, 4)


@pytest.mark.parametrize("argv", [
    ["forecast", "--epochs", "1", "--hidden", "6", "--quiet", "--cell", "mingru"],
    ["classify", "--limit", "200", "--epochs", "1", "--hidden", "6", "--embed-dim", "6",
     "--max-words", "300", "--quiet", "--ensemble", "1", "--cell", "minlstm", "--bidirectional"],
    ["generate", "--max-chars", "2000", "--hidden", "8", "--embedding", "6", "--batch-size", "4",
     "--bptt", "12", "--length", "20", "--epochs", "1", "--quiet", "--cell", "mingru"],
])
def test_commands_take_the_minimal_cells(argv, tmp_path):
    out = str(tmp_path / "run")
    assert main(argv + ["--out", out]) == 0
    with open(os.path.join(out, "metrics.json")) as f:
        assert json.load(f)["config"]["settings"]["cell"] == argv[argv.index("--cell") + 1]
    model = elman.load(os.path.join(out, "model.npz"))
    wanted = {"mingru": elman.MinGRU, "minlstm": elman.MinLSTM}[argv[argv.index("--cell") + 1]]
    assert any(type(layer) is wanted for _, layer in model.named_modules())


def test_commands_refuse_an_option_the_cell_lacks(tmp_path, capsys):
    with pytest.raises(CommandError):
        main(["forecast", "--epochs", "1", "--cell", "mingru", "--layer-norm",
              "--out", str(tmp_path / "x")])
    assert "--layer-norm is not available for --cell mingru" in capsys.readouterr().err


@pytest.mark.parametrize("cls", [elman.MinGRU, elman.MinLSTM])
@pytest.mark.parametrize("batch_first,bidirectional,head", [(True, False, "last"),
                                                             (False, True, "last"),
                                                             (True, True, "per-step")])
def test_sequential_exports_to_onnx(cls, batch_first, bidirectional, head, tmp_path):
    require("onnx")
    ort = require("onnxruntime")
    rnn = cls(2, 4, batch_first=batch_first, bidirectional=bidirectional, num_layers=2, seed=0)
    D = 2 if bidirectional else 1
    layers = [rnn]
    if head == "last":
        layers.append(elman.LastBidirectional(4, batch_first=batch_first) if bidirectional
                      else elman.Last(batch_first=batch_first))
    model = elman.Sequential(layers + [elman.Dense(4 * D, 3, seed=1)])
    path = str(tmp_path / "model.onnx")
    elman.export_onnx(model, path, lengths=True)
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    x = RNG.standard_normal((3, 7, 2)).astype(np.float32)
    lengths = np.array([7, 3, 5])
    got = session.run(None, {"input": x, "lengths": lengths})[0]
    want = model.predict(x, lengths=lengths)
    if head == "per-step":                 # padded steps of per-step outputs mean nothing
        valid = np.arange(7)[None, :] < lengths[:, None]
        got, want = got[valid], want[valid]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
