"""Flags must be bools and dtype must be float32/float64, as in PyTorch: a string "False" or
dtype=None is refused with a message naming the argument, never read by truthiness."""
import re

import numpy as np
import pytest

import elman
from _torch import require


@pytest.mark.parametrize("build, name", [
    (lambda v: elman.LSTM(3, 4, batch_first=v), "batch_first"),
    (lambda v: elman.GRU(3, 4, bias=v), "bias"),
    (lambda v: elman.RNN(3, 4, bidirectional=v), "bidirectional"),
    (lambda v: elman.GRU(3, 4, reset_after=v), "reset_after"),
    (lambda v: elman.LSTM(3, 4, stateful=v), "stateful"),
    (lambda v: elman.MinGRU(3, 4, stateful=v), "stateful"),
    (lambda v: elman.LSTMCell(3, 4, bias=v), "bias"),
    (lambda v: elman.GRUCell(3, 4, reset_after=v), "reset_after"),
    (lambda v: elman.LayerNorm(4, elementwise_affine=v), "elementwise_affine"),
    (lambda v: elman.Last(batch_first=v), "batch_first"),
    (lambda v: elman.EarlyStopping(restore_best_weights=v), "restore_best_weights"),
    (lambda v: elman.ModelCheckpoint("m.npz", save_best_only=v), "save_best_only"),
    (lambda v: elman.CSVLogger("h.csv", append=v), "append"),
    (lambda v: elman.set_num_threads(None, adaptive=v), "adaptive"),
])
@pytest.mark.parametrize("value", ["False", 0, 1.0, None])
def test_flags_must_be_bools(build, name, value):
    with pytest.raises(TypeError, match=f"{name} must be True or False, got {value!r}"):
        build(value)


def test_numpy_bools_are_flags():
    assert elman.LSTM(3, 4, batch_first=np.bool_(True)).batch_first is True


@pytest.mark.parametrize("build", [lambda: elman.LSTM(3, 4, dtype=None),
                                   lambda: elman.Dense(3, 4, dtype=None),
                                   lambda: elman.GRUCell(3, 4, dtype=None)])
def test_dtype_none_is_refused(build):
    with pytest.raises(TypeError, match="dtype must be np.float32 or np.float64, got None"):
        build()


@pytest.mark.parametrize("build", [lambda: elman.LSTM(3, 4, seed=-1),
                                   lambda: elman.Dropout(0.5, seed=-3),
                                   lambda: elman.Sequential([], seed=-1)])
def test_negative_seed_names_the_argument(build):
    with pytest.raises(ValueError, match="seed must be a non-negative integer"):
        build()


def test_callbacks_must_be_a_list():
    model = elman.Sequential([elman.Dense(2, 1, seed=0)])
    model.compile("sgd", "mse")
    with pytest.raises(TypeError, match=r"callbacks must be a list of callbacks, got "
                                        r"EarlyStopping; write callbacks=\[EarlyStopping"):
        model.fit(np.zeros((4, 2)), np.zeros((4, 1)), callbacks=elman.EarlyStopping(),
                  verbose=0)


@pytest.mark.parametrize("loss, pred", [(elman.BCELoss(), np.full(3, 0.5)),
                                        (elman.BCEWithLogitsLoss(), np.zeros(3))])
def test_binary_losses_refuse_labels_outside_0_1(loss, pred):
    for bad in (np.array([0.0, 1.0, 2.0]), np.array([-1.0, 0.0, 1.0])):
        with pytest.raises(ValueError, match=r"target must hold values in \[0, 1\]"):
            loss(pred, bad)
    value, _ = loss(pred, np.array([0.0, 0.3, 1.0]))          # soft labels are fine
    assert np.isfinite(value)


def test_float64_input_beyond_float32_range_is_an_error_not_nan():
    lstm = elman.LSTM(3, 4, seed=0)                            # float32
    x = np.zeros((2, 1, 3))
    x[1, 0, 2] = 1e39
    with pytest.raises(ValueError, match=r"input holds 1 finite value\(s\) beyond the range of "
                                         r"float32.*1e\+39.*dtype=np.float64"):
        lstm(x)
    out, _ = lstm(np.full((2, 1, 3), 1e30))                    # within range: cast as before
    assert np.all(np.isfinite(out))
    with pytest.raises(ValueError, match="beyond the range of float32"):
        elman.Dense(3, 1, seed=0)(np.full((2, 3), -1e300))


@pytest.mark.parametrize("build, names", [
    (lambda: elman.LSTM(3, 10**12), "hidden_size=1000000000000"),
    (lambda: elman.GRU(8, 64, num_layers=10**9), "num_layers=1000000000"),
    (lambda: elman.LSTMCell(10**7, 10**5), "input_size=10000000"),
    (lambda: elman.Dense(10**6, 10**7), "in_features=1000000, out_features=10000000"),
    (lambda: elman.Embedding(10**10, 64), "num_embeddings=10000000000"),
])
def test_sizes_beyond_memory_are_refused_before_allocating(build, names):
    with pytest.raises(ValueError, match=f"{names}.* needs .* GiB .* more than this machine"):
        build()


# -- empty batches: as in PyTorch, N = 0 gives empty results, T = 0 is refused ------------------

@pytest.mark.parametrize("fast", [False, True])
@pytest.mark.parametrize("name, kwargs", [("RNN", {}), ("GRU", {}), ("LSTM", {}),
                                          ("LSTM", {"proj_size": 2}),
                                          ("GRU", {"batch_first": True})])
def test_an_empty_batch_gives_what_torch_gives(name, kwargs, fast):
    torch = require("torch")
    layer = getattr(elman, name)(3, 4, num_layers=2, bidirectional=True, dtype=np.float64,
                                 dropout=0.5, **kwargs)
    ref = getattr(torch.nn, name)(3, 4, num_layers=2, bidirectional=True, dtype=torch.float64,
                                  dropout=0.5, **kwargs)
    shape = (0, 5, 3) if kwargs.get("batch_first") else (5, 0, 3)
    x = torch.zeros(shape, dtype=torch.float64, requires_grad=True)
    out_ref, states_ref = ref(x)
    out_ref.sum().backward()
    states_ref = states_ref if isinstance(states_ref, tuple) else (states_ref,)
    with elman.fast.use(fast):
        for lengths in (None, np.zeros(0, np.int64)):
            out, states = layer(np.zeros(shape), lengths=lengths)
            states = states if isinstance(states, tuple) else (states,)
            assert out.shape == tuple(out_ref.shape)
            assert [s.shape for s in states] == [tuple(s.shape) for s in states_ref]
            dx, _ = layer.backward(np.ones_like(out), None)
            assert dx.shape == tuple(x.grad.shape)
    for p in layer.parameters():        # nothing flowed: the gradients stay (torch's) zeros
        assert not p.grad.any()


@pytest.mark.parametrize("cell", [elman.RNNCell, elman.GRUCell, elman.LSTMCell])
def test_a_cell_takes_an_empty_batch(cell):
    c = cell(3, 4)
    out = c(np.zeros((0, 3), np.float32))
    h = out[0] if isinstance(out, tuple) else out
    assert h.shape == (0, 4)
    grads = c.backward(np.zeros_like(h), np.zeros_like(h)) if isinstance(out, tuple) \
        else c.backward(np.zeros_like(h))
    assert grads[0].shape == (0, 3)


@pytest.mark.parametrize("batch_first, shape", [(False, (0, 2, 3)), (True, (2, 0, 3)),
                                                (False, (0, 3))])
def test_a_sequence_of_no_steps_is_refused(batch_first, shape):
    with pytest.raises(ValueError, match=r"input must have at least one time step .*got shape "
                       + re.escape(str(shape))):
        elman.GRU(3, 4, batch_first=batch_first)(np.zeros(shape, np.float32))


# -- the commands: every numeric flag refuses what no flag may take --------------------------------

def _numeric_flags():
    import argparse

    from elman.cli import build_parser
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    for command in ("forecast", "classify", "generate", "translate"):
        for action in sub.choices[command]._actions:
            if action.type in (int, float):
                values = ["-1"] if action.type is int else ["-1", "nan"]
                for value in values:
                    yield command, action.option_strings[-1], value


@pytest.mark.parametrize("command, flag, value", list(_numeric_flags()))
def test_every_numeric_flag_refuses_negative_and_nan(tmp_path, capsys, command, flag, value):
    """One ``error:`` line naming the flag and exit status 2, before any training, and no
    output directory left behind."""
    from elman.cli import main
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as e:
        main([command, flag, value, "--out", str(out), "--quiet"])
    assert e.value.code == 2
    assert re.search(f"^error: .*{flag}", capsys.readouterr().err, re.MULTILINE)


@pytest.mark.parametrize("argv, message", [
    (["forecast", "--hidden", "1000000000"], "--hidden/--layers: LSTM: .*more than this machine"),
    (["forecast", "--layers", "1000000000"], "--hidden/--layers: LSTM: .*num_layers=1000000000"),
    (["classify", "--embed-dim", "10000000000", "--limit", "300"],
     "--embed-dim/--hidden/--layers: Embedding: "),
    (["generate", "--hidden", "1000000000", "--max-chars", "3000"],
     "--embedding/--hidden/--layers: LSTM: "),
    (["translate", "--hidden", "1000000000", "--max-pairs", "300"],
     "--embedding/--hidden/--layers: Seq2Seq: "),
    (["classify", "--maxlen", "1000000000000"], "--maxlen must be at most 100_000"),
    (["generate", "--length", "100000000000"], "--length must be from 0 to 10_000_000"),
])
def test_commands_refuse_sizes_beyond_the_machine(tmp_path, capsys, argv, message):
    """Sizes no machine can hold are one error line, not a MemoryError after the baselines."""
    from elman.cli import main
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as e:
        main([*argv, "--out", str(out), "--quiet"])
    assert e.value.code == 2
    assert re.search("^error: " + message, capsys.readouterr().err, re.MULTILINE)


@pytest.mark.parametrize("command", ["forecast", "classify", "generate", "translate",
                                     "export-onnx"])
def test_help_shows_each_default_once(capsys, command):
    """No "(default: None)" or "(default: False)", no option saying its default twice; a real
    default such as 0 still shows."""
    import argparse

    from elman.cli import _HelpFormatter, build_parser, main
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    formatter = _HelpFormatter(command)
    for action in sub.choices[command]._actions:
        text = re.sub(r"%\(default\)\w", "", formatter._get_help_string(action) or "")
        assert text.count("default") <= 1, (action.option_strings, text)
    with pytest.raises(SystemExit) as e:
        main([command, "--help"])
    assert e.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "(default: None)" not in text and "(default: False)" not in text
    if command != "export-onnx":
        assert re.search(r"--seed SEED seed for [^()]* \(default: 0\)", text)
