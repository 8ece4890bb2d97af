"""Checkpoints: config() rebuilds every class, save/load round trips are exact (weights,
predictions, optimizer state, generator state, extra), writes are atomic, and every kind of bad
file is refused with a clear error, pickles without ever being unpickled."""
import json
import os
import pickle
import tracemalloc
import zipfile

import numpy as np
import pytest

import elman
from _checkpoint_files import members, rewrite, write_zip
from elman import layers, losses
from elman.checkpoint import (FORMAT_VERSION, Checkpoint, CheckpointError, load,
                              load_checkpoint, save)
from elman.module import Module


# -- helpers ------------------------------------------------------------------------------------

class Regressor(Module):
    """LSTM -> Last -> Linear: a user's own container, trained with an explicit loop."""

    def __init__(self, input_size, hidden_size, dtype="float32", seed=None):
        super().__init__()
        rng = np.random.default_rng(seed)
        self.input_size, self.hidden_size, self.dtype = input_size, hidden_size, dtype
        self.rnn = elman.LSTM(input_size, hidden_size, dtype=dtype, seed=rng)
        self.last = elman.Last()
        self.head = elman.Linear(hidden_size, 1, dtype=dtype, seed=rng)

    def config(self):
        return {"input_size": self.input_size, "hidden_size": self.hidden_size,
                "dtype": self.dtype}

    def forward(self, x):
        out, _ = self.rnn(x)
        return self.head(self.last(out))

    def backward(self, dy):
        dx, _ = self.rnn.backward(self.last.backward(self.head.backward(dy)))
        return dx


class TwoDropouts(Module):
    """Two dropout layers sharing one generator."""

    def __init__(self, p=0.5, seed=None):
        super().__init__()
        gen = np.random.default_rng(seed)
        self.p = p
        self.a = elman.Dropout(p, seed=gen)
        self.b = elman.Dropout(p, seed=gen)

    def config(self):
        return {"p": self.p}

    def forward(self, x):
        return self.b(self.a(x))


CUSTOM = {"Regressor": Regressor, "TwoDropouts": TwoDropouts}


def _same_state(a: Module, b: Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert list(sa) == list(sb)
    for name in sa:
        assert sa[name].dtype == sb[name].dtype, name
        np.testing.assert_array_equal(sa[name], sb[name], err_msg=name)


def _outputs(out):
    """Flatten a layer's output (array, (out, h), (out, (h, c))) into a list of arrays."""
    if isinstance(out, (tuple, list)):
        return [a for o in out for a in _outputs(o)]
    return [] if out is None else [np.asarray(out)]


# A pickle payload that records being unpickled: the refusal tests assert it never is.
UNPICKLED = []


def _mark_unpickled():
    UNPICKLED.append(True)
    return "unpickled!"


class Sentinel:
    def __reduce__(self):
        return (_mark_unpickled, ())


@pytest.fixture
def sentinel_payload():
    payload = pickle.dumps(Sentinel())
    pickle.loads(payload)                     # the sentinel works: unpickling marks it ...
    assert UNPICKLED == [True]
    UNPICKLED.clear()
    yield payload
    assert UNPICKLED == [], "the checkpoint loader unpickled data"     # ... and load never did


@pytest.fixture
def lstm_file(tmp_path):
    path = tmp_path / "lstm.npz"
    save(elman.LSTM(3, 4, seed=0), path)
    return path


# -- config() -----------------------------------------------------------------------------------

MODULES = [
    lambda: elman.RNN(3, 5, num_layers=2, nonlinearity="relu", bias=False, batch_first=True,
                      dropout=0.25, bidirectional=True, dtype=np.float64, seed=0),
    lambda: elman.GRU(3, 5, num_layers=3, bidirectional=True, seed=0),
    lambda: elman.LSTM(3, 5, num_layers=2, proj_size=2, bidirectional=True, seed=0),
    lambda: elman.LSTM(4, 6, bias=False, batch_first=True, dtype=np.float64, seed=0),
    lambda: elman.RNNCell(3, 4, bias=False, nonlinearity="relu", dtype=np.float64, seed=0),
    lambda: elman.GRUCell(3, 4, seed=0),
    lambda: elman.LSTMCell(3, 4, bias=False, seed=0),
    lambda: elman.Linear(4, 3, seed=0),
    lambda: elman.Dense(4, 3, bias=False, activation="softmax", dtype=np.float64, seed=0),
    lambda: elman.Embedding(10, 4, padding_idx=-1, dtype=np.float64, seed=0),
    lambda: elman.Dropout(0.3, seed=0),
    lambda: elman.LayerNorm((2, 3), eps=1e-3, dtype=np.float64),
    lambda: elman.LayerNorm(4, bias=False),
    lambda: elman.LayerNorm(4, elementwise_affine=False),
    lambda: elman.Tanh(),
    lambda: elman.Sigmoid(),
    lambda: elman.ReLU(),
    lambda: elman.Softmax(dim=0),
    lambda: elman.LogSoftmax(),
    lambda: elman.Last(batch_first=True),
    lambda: elman.LastBidirectional(3, batch_first=True),
    lambda: elman.MeanPool(),
]


@pytest.mark.parametrize("make", MODULES, ids=lambda f: type(f()).__name__)
def test_config_rebuilds_the_same_architecture(make):
    m = make()
    config = m.config()
    assert json.loads(json.dumps(config)) == config          # plain JSON, no NumPy types
    rebuilt = type(m)(**config)
    assert rebuilt.config() == config
    assert repr(rebuilt) == repr(m)
    assert [(n, p.shape, p.dtype) for n, p in rebuilt.named_parameters()] == \
        [(n, p.shape, p.dtype) for n, p in m.named_parameters()]


def test_every_layer_class_has_config():
    module_classes = [c for c in vars(layers).values()
                      if isinstance(c, type) and issubclass(c, Module) and c.__module__ ==
                      layers.__name__ and not c.__name__.startswith("_")]
    built = {type(make()) for make in MODULES}
    assert set(module_classes) <= built


LOSSES = [
    losses.MSELoss(reduction="sum"),
    losses.L1Loss(reduction="none"),
    losses.HuberLoss(delta=0.5),
    losses.BCELoss(weight=np.array([1.0, 2.0], np.float32), reduction="sum"),
    losses.BCEWithLogitsLoss(weight=[0.5, 1.0], pos_weight=np.array([3.0, 1.0])),
    losses.CrossEntropyLoss(weight=np.array([1.0, 2.0, 0.5]), ignore_index=0,
                            label_smoothing=0.1),
    losses.CrossEntropyLoss(),
]


@pytest.mark.parametrize("loss", LOSSES, ids=lambda l: type(l).__name__)
def test_loss_config_rebuilds_the_same_loss(loss):
    config = loss.config()
    assert json.loads(json.dumps(config)) == config
    rebuilt = type(loss)(**config)
    assert rebuilt.config() == config and repr(rebuilt) == repr(loss)
    rng = np.random.default_rng(0)
    if isinstance(loss, losses.CrossEntropyLoss):
        pred, target = rng.standard_normal((4, 3)), np.array([0, 1, 2, 1])
    else:
        pred, target = rng.uniform(0.1, 0.9, (3, 2)), rng.uniform(0, 1, (3, 2))
    for a, b in zip(loss(pred, target), rebuilt(pred, target)):
        np.testing.assert_array_equal(a, b)


# -- round trips --------------------------------------------------------------------------------

RECURRENT = {
    "lstm": lambda: elman.LSTM(3, 5, seed=1),
    "lstm-bidir-proj-2layers": lambda: elman.LSTM(3, 5, num_layers=2, bidirectional=True,
                                                  proj_size=2, seed=1),
    "gru-bidir-batch-first": lambda: elman.GRU(3, 5, bidirectional=True, batch_first=True, seed=1),
    "rnn-relu-float64": lambda: elman.RNN(3, 5, num_layers=2, nonlinearity="relu",
                                          dtype=np.float64, seed=1),
    "lstm-float64-nobias": lambda: elman.LSTM(3, 5, bias=False, dtype=np.float64, seed=1),
}


@pytest.mark.parametrize("name", list(RECURRENT))
def test_recurrent_layer_round_trip(tmp_path, name):
    m = RECURRENT[name]()
    path = tmp_path / "m.npz"
    save(m, path)
    back = load(path)
    assert type(back) is type(m) and back.config() == m.config()
    _same_state(m, back)
    x = np.random.default_rng(2).standard_normal((4, 2, 3)).astype(m.dtype)    # (T, N, I)
    if m.batch_first:
        x = x.transpose(1, 0, 2)
    for a, b in zip(_outputs(m(x, lengths=[4, 2])), _outputs(back(x, lengths=[4, 2]))):
        assert a.dtype == b.dtype
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("make", [lambda: elman.LSTMCell(3, 4, seed=0),
                                  lambda: elman.GRUCell(3, 4, dtype=np.float64, seed=0),
                                  lambda: elman.RNNCell(3, 4, nonlinearity="relu", seed=0)],
                         ids=["LSTMCell", "GRUCell", "RNNCell"])
def test_cell_round_trip(tmp_path, make):
    cell = make()
    save(cell, tmp_path / "cell.npz")
    back = load(tmp_path / "cell.npz")
    _same_state(cell, back)
    x = np.random.default_rng(0).standard_normal((2, 3))
    for a, b in zip(_outputs(cell(x)), _outputs(back(x))):
        np.testing.assert_array_equal(a, b)


def test_stack_of_layers_round_trip(tmp_path):
    model = Regressor(3, 6, seed=0)
    save(model, tmp_path / "reg.npz")
    back = load(tmp_path / "reg.npz", custom_objects=CUSTOM)
    assert isinstance(back, Regressor)
    _same_state(model, back)
    x = np.random.default_rng(0).standard_normal((5, 4, 3)).astype(np.float32)
    np.testing.assert_array_equal(model(x), back(x))


def test_file_layout_is_plain_npz_with_json(tmp_path):
    m = elman.LSTM(3, 4, num_layers=2, seed=0)
    path = tmp_path / "m.npz"
    save(m, path, extra={"mean": np.zeros(3)})
    with np.load(path, allow_pickle=False) as npz:         # readable by NumPy alone
        meta = npz["__elman__"]
        names = set(npz.files)
    assert meta.shape == () and meta.dtype.kind == "U"       # not an object array
    doc = json.loads(str(meta[()]))
    assert doc["format"] == "elman.checkpoint" and doc["format_version"] == FORMAT_VERSION
    assert doc["elman_version"] == elman.__version__
    assert doc["model"] == {"class": "LSTM", "config": m.config()}
    assert [p["name"] for p in doc["params"]] == list(m.state_dict())
    assert doc["params"][0] == {"name": "weight_ih_l0", "shape": [16, 3], "dtype": "float32"}
    assert names == {"__elman__", "extra/0"} | {f"param/{n}" for n in m.state_dict()}
    assert doc["extra"] == {"mean": {"__ndarray__": "extra/0", "shape": [3], "dtype": "<f8"}}


def test_path_is_used_exactly(tmp_path):
    save(elman.GRU(2, 3), tmp_path / "model.ckpt")
    assert os.listdir(tmp_path) == ["model.ckpt"]
    assert isinstance(load(str(tmp_path / "model.ckpt")), elman.GRU)


def test_train_eval_mode_is_restored(tmp_path):
    m = elman.LSTM(2, 3, num_layers=2, dropout=0.5).eval()
    save(m, tmp_path / "m.npz")
    assert load(tmp_path / "m.npz").training is False
    save(m.train(), tmp_path / "m.npz")
    assert load(tmp_path / "m.npz").training is True


# -- optimizer state ----------------------------------------------------------------------------

OPTIMIZERS = {
    "adam": lambda ps: elman.Adam(ps, lr=0.01, amsgrad=True, weight_decay=1e-3),
    "adamw": lambda ps: elman.AdamW(ps, lr=0.01),
    "sgd-nesterov": lambda ps: elman.SGD(ps, lr=0.05, momentum=0.9, nesterov=True),
    "rmsprop-centered": lambda ps: elman.RMSprop(ps, lr=0.01, momentum=0.5, centered=True),
    "adagrad": lambda ps: elman.Adagrad(ps, lr=0.05, lr_decay=0.01),
}


def _train(model, opt, batches):
    loss_fn = elman.MSELoss()
    for x, y in batches:
        opt.zero_grad()
        _, grad = loss_fn(model(x), y)
        model.backward(grad)
        elman.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()


@pytest.mark.parametrize("opt_name", list(OPTIMIZERS))
def test_explicit_loop_resumes_bit_exact(tmp_path, opt_name):
    rng = np.random.default_rng(0)
    batches = [(rng.standard_normal((5, 4, 3)).astype(np.float32),
                rng.standard_normal((4, 1)).astype(np.float32)) for _ in range(6)]
    straight = Regressor(3, 6, seed=0)
    opt = OPTIMIZERS[opt_name](straight.parameters())
    _train(straight, opt, batches)                       # 6 steps in one go

    first = Regressor(3, 6, seed=0)
    opt1 = OPTIMIZERS[opt_name](first.parameters())
    _train(first, opt1, batches[:3])
    save(first, tmp_path / "run.npz", optimizer=opt1, extra={"step": 3})
    ckpt = load_checkpoint(tmp_path / "run.npz", custom_objects=CUSTOM)
    assert isinstance(ckpt, Checkpoint) and ckpt.extra == {"step": 3} and ckpt.epoch is None
    assert type(ckpt.optimizer) is type(opt1)
    assert [id(p) for p in ckpt.optimizer.params] == [id(p) for p in ckpt.model.parameters()]
    _train(ckpt.model, ckpt.optimizer, batches[3:])      # 3 more steps after the reload

    _same_state(straight, ckpt.model)                    # bit for bit
    a, b = opt.state_dict(), ckpt.optimizer.state_dict()
    assert a["hyperparams"] == b["hyperparams"] and a["step"] == b["step"] == 6
    for name in a["state"]:
        for u, v in zip(a["state"][name], b["state"][name]):
            np.testing.assert_array_equal(u, v)


def test_optimizer_before_first_step_round_trips(tmp_path):
    m = elman.GRU(2, 3, seed=0)
    save(m, tmp_path / "m.npz", optimizer=elman.Adam(m.parameters(), lr=0.5))
    opt = load_checkpoint(tmp_path / "m.npz").optimizer
    assert opt.lr == 0.5 and opt.step_count == 0 and opt.state == {}


def test_model_optimizer_attribute_is_saved_by_default(tmp_path):
    m = Regressor(2, 3, seed=0)
    m.optimizer = elman.SGD(m.parameters(), lr=0.1, momentum=0.9)
    save(m, tmp_path / "m.npz")
    opt = load_checkpoint(tmp_path / "m.npz", custom_objects=CUSTOM).optimizer
    assert isinstance(opt, elman.SGD) and opt.momentum == 0.9


def test_optimizer_over_a_subset_keeps_its_order(tmp_path):
    m = Regressor(2, 3, seed=0)
    params = dict(m.named_parameters())
    opt = elman.SGD([params["head.bias"], params["rnn.weight_hh_l0"]], lr=0.1)
    save(m, tmp_path / "m.npz", optimizer=opt)
    ckpt = load_checkpoint(tmp_path / "m.npz", custom_objects=CUSTOM)
    back = dict(ckpt.model.named_parameters())
    assert ckpt.optimizer.params == [back["head.bias"], back["rnn.weight_hh_l0"]]


def test_optimizer_of_another_model_is_refused(tmp_path):
    m, other = elman.GRU(2, 3), elman.GRU(2, 3)
    with pytest.raises(ValueError, match="not part of the GRU"):
        save(m, tmp_path / "m.npz", optimizer=elman.SGD(other.parameters()))
    assert not os.listdir(tmp_path)


# -- generator state ----------------------------------------------------------------------------

def test_dropout_generator_is_restored(tmp_path):
    drop = elman.Dropout(0.5, seed=0)
    x = np.ones((4, 6))
    drop(x), drop(x)                                     # move the generator along
    save(drop, tmp_path / "d.npz")
    expected = drop(x)
    back = load(tmp_path / "d.npz")
    np.testing.assert_array_equal(back(x), expected)
    np.testing.assert_array_equal(back(x), drop(x))      # and it keeps following


def test_recurrent_dropout_generator_is_restored(tmp_path):
    m = elman.LSTM(2, 4, num_layers=3, dropout=0.5, seed=0)
    x = np.random.default_rng(1).standard_normal((5, 3, 2)).astype(np.float32)
    m(x)
    save(m, tmp_path / "m.npz")
    expected = m(x)[0]
    np.testing.assert_array_equal(load(tmp_path / "m.npz")(x)[0], expected)


def test_shared_generator_stays_shared(tmp_path):
    m = TwoDropouts(seed=3)
    x = np.ones(16)
    save(m, tmp_path / "m.npz")
    expected = [m(x), m(x)]
    back = load(tmp_path / "m.npz", custom_objects=CUSTOM)
    assert back.a._rng is back.b._rng
    for e in expected:
        np.testing.assert_array_equal(back(x), e)


def test_other_bit_generators_are_restored(tmp_path):
    drop = elman.Dropout(0.5, seed=np.random.Generator(np.random.MT19937(5)))
    save(drop, tmp_path / "d.npz")                       # MT19937's state holds an array
    expected = drop(np.ones(50))
    back = load(tmp_path / "d.npz")
    assert isinstance(back._rng.bit_generator, np.random.MT19937)
    np.testing.assert_array_equal(back(np.ones(50)), expected)


def test_epoch_is_restored(tmp_path):
    m = Regressor(2, 3)
    m.epoch = 7
    save(m, tmp_path / "m.npz")
    ckpt = load_checkpoint(tmp_path / "m.npz", custom_objects=CUSTOM)
    assert ckpt.epoch == 7 and ckpt.model.epoch == 7


# -- extra ----------------------------------------------------------------------------------------

def test_extra_round_trip(tmp_path):
    extra = {"vocab": ["<pad>", "the", "cat", "é"],
             "scaler": {"mean": np.array([1.5, -2.0, 3.25]), "std": np.array([[1, 2]], np.float32)},
             "tokens": np.array(["a", "bb"]), "best_val_loss": 0.125, "steps": 2 ** 70,
             "flags": [True, None, np.float32(0.5), np.int64(3)], "pair": (1, 2)}
    save(elman.GRU(2, 3), tmp_path / "m.npz", extra=extra)
    back = load_checkpoint(tmp_path / "m.npz").extra
    assert back["vocab"] == extra["vocab"]
    for key in ("mean", "std"):
        assert back["scaler"][key].dtype == extra["scaler"][key].dtype
        np.testing.assert_array_equal(back["scaler"][key], extra["scaler"][key])
    np.testing.assert_array_equal(back["tokens"], extra["tokens"])
    assert back["best_val_loss"] == 0.125 and back["steps"] == 2 ** 70
    assert back["flags"] == [True, None, 0.5, 3] and back["pair"] == [1, 2]


@pytest.mark.parametrize("extra, error, message", [
    ({"f": object()}, TypeError, r"extra\['f'\] is a object"),
    ({1: "x"}, TypeError, "keys must be strings"),
    ({"loss": float("nan")}, ValueError, r"JSON has no NaN.*np.array\(nan\)"),
    ({"a": np.array([None])}, TypeError, "cannot be stored without pickle"),
    ({"__ndarray__": 1}, ValueError, "reserves"),
])
def test_extra_that_cannot_be_stored_is_refused(tmp_path, extra, error, message):
    with pytest.raises(error, match=message):
        save(elman.GRU(2, 3), tmp_path / "m.npz", extra=extra)


# -- atomic writes --------------------------------------------------------------------------------

def test_failed_save_leaves_the_old_checkpoint(tmp_path):
    path = tmp_path / "m.npz"
    save(elman.LSTM(2, 3, seed=0), path)
    old = path.read_bytes()
    with pytest.raises(TypeError):
        save(elman.LSTM(2, 3, seed=1), path, extra={"bad": {1, 2}})
    assert path.read_bytes() == old and os.listdir(tmp_path) == ["m.npz"]


def test_failure_midway_through_the_write_leaves_the_old_checkpoint(tmp_path, monkeypatch):
    import elman.checkpoint as ckpt_module

    path = tmp_path / "m.npz"
    save(elman.LSTM(2, 3, seed=0), path)
    old = path.read_bytes()
    real, calls = ckpt_module._write_array, []

    def failing(zf, key, arr):            # write a few members, then the disk "fills up"
        calls.append(key)
        if len(calls) == 3:
            raise OSError(28, "No space left on device")
        real(zf, key, arr)

    monkeypatch.setattr(ckpt_module, "_write_array", failing)
    with pytest.raises(OSError, match="No space"):
        save(elman.LSTM(2, 3, seed=1), path)
    assert len(calls) == 3
    assert path.read_bytes() == old and os.listdir(tmp_path) == ["m.npz"]
    monkeypatch.undo()
    assert load(path).config() == elman.LSTM(2, 3).config()


def test_interrupted_write_leaves_no_temporary_file(tmp_path, monkeypatch):
    import elman.checkpoint as ckpt_module

    def interrupted(*args):
        raise KeyboardInterrupt

    monkeypatch.setattr(ckpt_module.os, "replace", interrupted)
    with pytest.raises(KeyboardInterrupt):
        save(elman.GRU(2, 3), tmp_path / "m.npz")
    assert os.listdir(tmp_path) == []


def test_non_finite_weights_never_overwrite_a_checkpoint(tmp_path):
    path = tmp_path / "m.npz"
    m = elman.LSTM(2, 3, seed=0)
    save(m, path)
    old = path.read_bytes()
    m.weight_hh_l0.data[1, 2] = np.nan
    with pytest.raises(ValueError, match="'weight_hh_l0' of the LSTM holds NaN or infinite"):
        save(m, path)
    m.weight_hh_l0.data[1, 2] = np.inf
    with pytest.raises(ValueError, match="NaN or infinite"):
        save(m, path)
    assert path.read_bytes() == old and os.listdir(tmp_path) == ["m.npz"]


def test_non_finite_optimizer_state_is_refused(tmp_path):
    m = elman.GRU(2, 3)
    opt = elman.Adam(m.parameters())
    opt.step()
    opt.state["exp_avg"][0][0, 0] = np.inf
    with pytest.raises(ValueError, match="optimizer state 'exp_avg' of parameter "
                                         "'weight_ih_l0' holds NaN"):
        save(m, tmp_path / "m.npz", optimizer=opt)


def test_overwrite_keeps_the_file_mode(tmp_path):
    path = tmp_path / "m.npz"
    save(elman.GRU(2, 3), path)
    os.chmod(path, 0o640)
    save(elman.GRU(2, 3), path)
    assert os.stat(path).st_mode & 0o777 == 0o640


def test_bad_save_targets(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        save(elman.GRU(2, 3), tmp_path / "missing" / "m.npz")
    with pytest.raises(IsADirectoryError, match="is a directory"):
        save(elman.GRU(2, 3), tmp_path)
    with pytest.raises(TypeError, match="must be an elman Module"):
        save({"w": np.zeros(2)}, tmp_path / "m.npz")
    with pytest.raises(TypeError, match="optimizer must be an elman Optimizer"):
        save(elman.GRU(2, 3), tmp_path / "m.npz", optimizer="adam")


def test_module_without_config_is_refused(tmp_path):
    class Bare(Module):
        pass

    with pytest.raises(TypeError, match="Bare has no config"):
        save(Bare(), tmp_path / "m.npz")


# -- refused files --------------------------------------------------------------------------------

def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.npz"):
        load(tmp_path / "nope.npz")


def test_truncated_file(tmp_path, lstm_file):
    data = lstm_file.read_bytes()
    for cut in (len(data) // 2, len(data) - 10, 100):
        bad = tmp_path / f"cut{cut}.npz"
        bad.write_bytes(data[:cut])
        with pytest.raises(CheckpointError, match=rf"cut{cut}.npz: the archive is corrupted "
                                                  r"or truncated"):
            load(bad)


def test_corrupted_bytes(tmp_path, lstm_file):
    data = bytearray(lstm_file.read_bytes())
    offset = data.index(b"\x93NUMPY", 200) + 200       # inside an array's data
    data[offset] ^= 0xFF
    bad = tmp_path / "flipped.npz"
    bad.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="flipped.npz: the archive is corrupted"):
        load(bad)


def test_not_a_zip_file(tmp_path):
    bad = tmp_path / "text.npz"
    bad.write_text("hello")
    with pytest.raises(ValueError, match=r"text.npz: not an elman checkpoint .*starts with"):
        load(bad)
    (tmp_path / "empty.npz").write_bytes(b"")
    with pytest.raises(ValueError, match="an empty file"):
        load(tmp_path / "empty.npz")


def test_a_whole_file_pickle_is_refused_unread(tmp_path, sentinel_payload):
    bad = tmp_path / "evil.npz"
    bad.write_bytes(sentinel_payload)
    with pytest.raises(ValueError, match="evil.npz: .*a pickle, which elman never loads"):
        load(bad)


@pytest.mark.parametrize("member, message", [
    ("param/weight_ih_l0", "the member 'param/weight_ih_l0' holds pickled Python objects"),
    ("__elman__", "the member '__elman__' holds pickled Python objects"),
    # a member the document does not describe is refused by name, never even decompressed
    ("extra/0", r"the archive holds arrays that the JSON document does not describe: "
                r"\['extra/0'\]")])
def test_an_object_array_is_refused_unpickled(tmp_path, lstm_file, sentinel_payload, member,
                                              message):
    m = members(lstm_file)
    arrays = {"__elman__": np.array(json.dumps(m["doc"])), **m["arrays"]}
    arrays[member] = np.array([Sentinel(), 1], dtype=object)     # written with pickle inside
    bad = tmp_path / "evil.npz"
    write_zip(bad, arrays, allow_pickle=True)
    with pytest.raises(ValueError, match=f"evil.npz: {message}"):
        load(bad)


def test_raw_pickle_bytes_as_a_member_are_refused_unpickled(tmp_path, lstm_file,
                                                            sentinel_payload):
    m = members(lstm_file)
    arrays = {"__elman__": np.array(json.dumps(m["doc"])), **m["arrays"]}
    arrays["param/weight_ih_l0"] = sentinel_payload
    bad = tmp_path / "evil.npz"
    write_zip(bad, arrays)
    with pytest.raises(ValueError, match="'param/weight_ih_l0' is not a NumPy .npy array"):
        load(bad)


def test_bad_json(tmp_path, lstm_file):
    m = members(lstm_file)
    bad = tmp_path / "bad.npz"
    write_zip(bad, {"__elman__": np.array('{"format": "elman.checkpoint", '), **m["arrays"]})
    with pytest.raises(ValueError, match="bad.npz: the JSON document in '__elman__' is invalid"):
        load(bad)
    write_zip(bad, {"__elman__": np.array([1, 2]), **m["arrays"]})
    with pytest.raises(ValueError, match="must be a 0-d unicode array"):
        load(bad)


def test_a_plain_npz_is_not_a_checkpoint(tmp_path):
    np.savez(tmp_path / "plain.npz", w=np.zeros(3))
    with pytest.raises(ValueError, match="plain.npz: not an elman checkpoint: the archive has "
                                         "no '__elman__' member"):
        load(tmp_path / "plain.npz")


@pytest.mark.parametrize("version, message", [
    (2, "format version 2 is not supported: elman .* reads version 1 .*newer elman"),
    (0, "format version 0 is not supported"),
    ("1", "format version '1' is not supported"),
])
def test_wrong_format_version(tmp_path, lstm_file, version, message):
    doc = members(lstm_file)["doc"]
    doc["format_version"] = version
    rewrite(lstm_file, tmp_path / "v.npz", doc=doc)
    with pytest.raises(ValueError, match="v.npz: " + message):
        load(tmp_path / "v.npz")


def test_missing_array(tmp_path, lstm_file):
    arrays = members(lstm_file)["arrays"]
    del arrays["param/bias_hh_l0"]
    rewrite(lstm_file, tmp_path / "m.npz", arrays=arrays)
    with pytest.raises(ValueError, match=r"the array 'param/bias_hh_l0' \(parameter "
                                         r"'bias_hh_l0'\) is missing"):
        load(tmp_path / "m.npz")


def test_array_shape_or_dtype_differs_from_the_json(tmp_path, lstm_file):
    arrays = members(lstm_file)["arrays"]
    arrays["param/weight_hh_l0"] = arrays["param/weight_hh_l0"][:, :2]
    rewrite(lstm_file, tmp_path / "m.npz", arrays=arrays)
    with pytest.raises(ValueError, match=r"'param/weight_hh_l0' .* has shape \[16, 2\] but the "
                                         r"JSON document records \[16, 4\]"):
        load(tmp_path / "m.npz")
    arrays = members(lstm_file)["arrays"]
    arrays["param/weight_hh_l0"] = arrays["param/weight_hh_l0"].astype(np.float64)
    rewrite(lstm_file, tmp_path / "m.npz", arrays=arrays)
    with pytest.raises(ValueError, match="has dtype float64 but the JSON document records "
                                         "float32"):
        load(tmp_path / "m.npz")


def test_json_and_architecture_disagree(tmp_path, lstm_file):
    doc = members(lstm_file)["doc"]
    doc["model"]["config"]["hidden_size"] = 5                # arrays are for hidden_size 4
    rewrite(lstm_file, tmp_path / "m.npz", doc=doc)
    with pytest.raises(ValueError, match="the saved parameters do not fit the rebuilt LSTM: "
                                         ".*'weight_ih_l0' has the wrong shape"):
        load(tmp_path / "m.npz")


def test_unexpected_array(tmp_path, lstm_file):
    arrays = members(lstm_file)["arrays"]
    arrays["extra/9"] = np.zeros(2)
    rewrite(lstm_file, tmp_path / "m.npz", arrays=arrays)
    with pytest.raises(ValueError, match=r"does not describe: \['extra/9'\]"):
        load(tmp_path / "m.npz")


def test_unknown_class_is_named(tmp_path, lstm_file):
    doc = members(lstm_file)["doc"]
    doc["model"]["class"] = "os.system"
    rewrite(lstm_file, tmp_path / "m.npz", doc=doc)
    with pytest.raises(ValueError, match=r"unknown class 'os.system' at model .*custom_objects"):
        load(tmp_path / "m.npz")


def test_custom_class_needs_custom_objects(tmp_path):
    save(Regressor(2, 3), tmp_path / "m.npz")
    with pytest.raises(ValueError, match="unknown class 'Regressor'"):
        load(tmp_path / "m.npz")
    with pytest.raises(TypeError, match="custom_objects must map class names to classes"):
        load(tmp_path / "m.npz", custom_objects={"Regressor": "Regressor"})


def test_bad_config_is_reported(tmp_path, lstm_file):
    doc = members(lstm_file)["doc"]
    doc["model"]["config"]["hidden_size"] = "four"
    rewrite(lstm_file, tmp_path / "m.npz", doc=doc)
    with pytest.raises(ValueError, match="cannot rebuild LSTM .*hidden_size must be an integer"):
        load(tmp_path / "m.npz")
    doc["model"]["config"] = {"hidden_size": 4, "nonsense": 1}
    rewrite(lstm_file, tmp_path / "m.npz", doc=doc)
    with pytest.raises(ValueError, match="cannot rebuild LSTM"):
        load(tmp_path / "m.npz")


def test_malformed_document(tmp_path, lstm_file):
    doc = members(lstm_file)["doc"]
    del doc["rng"]
    rewrite(lstm_file, tmp_path / "m.npz", doc=doc)
    with pytest.raises(ValueError, match=r"malformed JSON document: missing \['rng'\]"):
        load(tmp_path / "m.npz")


def test_unknown_optimizer_is_named(tmp_path):
    m = elman.GRU(2, 3)
    save(m, tmp_path / "m.npz", optimizer=elman.SGD(m.parameters()))
    doc = members(tmp_path / "m.npz")["doc"]
    doc["optimizer"]["class"] = "Lion"
    rewrite(tmp_path / "m.npz", tmp_path / "bad.npz", doc=doc)
    with pytest.raises(ValueError, match="unknown optimizer class 'Lion'"):
        load_checkpoint(tmp_path / "bad.npz")


# -- Sequential -----------------------------------------------------------------------------------

def _sequential_data(n=24):
    rng = np.random.default_rng(0)
    return (rng.standard_normal((n, 6, 3)).astype(np.float32),
            rng.standard_normal((n, 1)).astype(np.float32))


def test_compiled_sequential_round_trip(tmp_path):
    from elman.model import Sequential

    x, y = _sequential_data()
    model = Sequential([elman.LSTM(3, 8, num_layers=2, dropout=0.3, batch_first=True, seed=0),
                        elman.Last(batch_first=True), elman.Dropout(0.2, seed=1),
                        elman.Dense(8, 1, seed=2)], seed=0)
    model.compile(elman.Adam, loss=elman.HuberLoss(delta=0.5), metrics=["mae"],
                  global_clipnorm=1.0)
    model.fit(x, y, epochs=1, batch_size=8, verbose=0)
    save(model, tmp_path / "seq.npz")
    back = load(tmp_path / "seq.npz")

    assert isinstance(back, Sequential) and back.config() == model.config()
    _same_state(model, back)
    np.testing.assert_array_equal(back.predict(x), model.predict(x))
    assert back.epoch == model.epoch == 1
    assert back.compile_config() == model.compile_config()
    assert isinstance(back.loss, elman.HuberLoss) and back.loss.delta == 0.5
    assert [m.name for m in back.metrics] == ["mae"]
    a, b = model.optimizer.state_dict(), back.optimizer.state_dict()
    assert type(back.optimizer) is elman.Adam and back.optimizer.params == back.parameters()
    assert a["hyperparams"] == b["hyperparams"] and a["step"] == b["step"] == 3
    for name in a["state"]:
        for u, v in zip(a["state"][name], b["state"][name]):
            np.testing.assert_array_equal(u, v)
    for (path_a, m_a), (path_b, m_b) in zip(model.named_modules(), back.named_modules()):
        assert path_a == path_b
        if hasattr(m_a, "_rng"):                  # shuffling and every dropout continue alike
            assert m_b._rng.bit_generator.state == m_a._rng.bit_generator.state, path_a


def test_sequential_loss_with_array_arguments_round_trips(tmp_path):
    from elman.model import Sequential

    rng = np.random.default_rng(1)
    x = rng.integers(1, 20, size=(16, 5))
    y = (x[:, -1] > 10).astype(np.float32)[:, None]
    model = Sequential([elman.Embedding(20, 4, seed=0), elman.GRU(4, 6, seed=1), elman.Last(),
                        elman.Dense(6, 1, seed=2)], seed=0)
    model.compile("rmsprop", loss=elman.BCEWithLogitsLoss(pos_weight=np.array([2.0])),
                  metrics=["binary_accuracy"])
    model.fit(x, y, epochs=1, batch_size=8, verbose=0)
    save(model, tmp_path / "seq.npz", extra={"vocab": [f"w{i}" for i in range(20)]})
    ckpt = load_checkpoint(tmp_path / "seq.npz")
    back = ckpt.model
    assert ckpt.optimizer is back.optimizer and ckpt.epoch == 1 and len(ckpt.extra["vocab"]) == 20
    np.testing.assert_array_equal(back.loss.pos_weight, [2.0])
    np.testing.assert_array_equal(back.predict(x), model.predict(x))
    assert back.evaluate(x, y) == model.evaluate(x, y)


def test_uncompiled_and_nested_sequential_round_trip(tmp_path):
    from elman.model import Sequential

    inner = Sequential([elman.Dense(3, 4, activation="tanh", seed=0), elman.LayerNorm(4)])
    model = Sequential([inner, elman.Dense(4, 2, seed=1)])
    save(model, tmp_path / "seq.npz")
    back = load(tmp_path / "seq.npz")
    assert back.optimizer is None and isinstance(back[0], Sequential)
    assert back.config() == model.config()
    x = np.random.default_rng(0).standard_normal((5, 3)).astype(np.float32)
    np.testing.assert_array_equal(back.predict(x), model.predict(x))


def test_classic_gru_round_trip(tmp_path):
    layer = elman.GRU(3, 4, num_layers=2, reset_after=False, seed=0)
    x = np.random.default_rng(0).standard_normal((5, 2, 3)).astype(np.float32)
    elman.save(layer, tmp_path / "gru.npz")
    loaded = elman.load(tmp_path / "gru.npz")
    assert loaded.reset_after is False
    np.testing.assert_array_equal(loaded(x)[0], layer(x)[0])


# -- hostile files: limits before allocation ----------------------------------------------------

def test_a_fifo_is_refused_without_blocking(tmp_path):
    fifo = tmp_path / "pipe.npz"
    os.mkfifo(fifo)
    with pytest.raises(ValueError, match="pipe.npz: not a regular file"):
        load(fifo)                       # opening it for reading would block forever


def test_duplicated_member_names_are_refused(tmp_path, lstm_file):
    m = members(lstm_file)
    bad = tmp_path / "dup.npz"
    rewrite(lstm_file, bad)
    with zipfile.ZipFile(bad, "a") as zf, pytest.warns(UserWarning, match="Duplicate name"):
        with zf.open("param/weight_ih_l0.npy", "w") as f:
            np.lib.format.write_array(f, m["arrays"]["param/weight_ih_l0"] + 1)
    with pytest.raises(ValueError, match=r"several members named \['param/weight_ih_l0.npy'\]"):
        load(bad)


def test_a_small_file_describing_a_huge_model_fails_before_allocating(tmp_path, lstm_file):
    doc = members(lstm_file)["doc"]
    doc["model"]["config"]["hidden_size"] = 8000    # 4H(I + H) + 8H = 256,160,000 weights, 1 GB
    rewrite(lstm_file, tmp_path / "huge.npz", doc=doc)
    tracemalloc.start()
    try:
        with pytest.raises(ValueError, match="needs 256,160,000 parameter values, but the file "
                                             "holds only"):
            load(tmp_path / "huge.npz")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 50 * 2**20


def test_declared_member_sizes_beyond_memory_are_refused_unread(tmp_path, lstm_file,
                                                                monkeypatch):
    monkeypatch.setattr(elman.checkpoint._validate, "physical_memory", lambda: 1000)
    with pytest.raises(ValueError, match=r"would take 0\.0 GiB once decompressed, more than "
                                         r"this machine's"):
        load(lstm_file)


def test_an_oversized_json_document_is_refused_unread(lstm_file, monkeypatch):
    monkeypatch.setattr(elman.checkpoint, "MAX_DOCUMENT_BYTES", 100)
    with pytest.raises(ValueError, match="the JSON document takes .* bytes; a checkpoint's is "
                                         "at most 100"):
        load(lstm_file)


def test_an_undescribed_member_is_never_decompressed(tmp_path, lstm_file):
    bad = tmp_path / "extra.npz"
    rewrite(lstm_file, bad)
    with zipfile.ZipFile(bad, "a", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("junk.npy", b"\x93NUMPY" + os.urandom(4096))
    with open(bad, "r+b") as f:              # corrupt the junk member's compressed bytes
        data = f.read()
        at = data.rindex(b"junk.npy", 0, len(data) - 200) + len(b"junk.npy") + 20
        f.seek(at)
        f.write(os.urandom(64))
    with pytest.raises(ValueError, match=r"does not describe: \['junk'\]"):
        load(bad)                            # not "corrupted": it was never inflated


@pytest.mark.parametrize("epoch", [-5, 10**30])
def test_an_absurd_epoch_is_refused(tmp_path, lstm_file, epoch):
    doc = members(lstm_file)["doc"]
    doc["epoch"] = epoch
    rewrite(lstm_file, tmp_path / "e.npz", doc=doc)
    with pytest.raises(ValueError, match=r"epoch must be an integer in \[0, 1000000000\]"):
        load(tmp_path / "e.npz")


def test_a_file_with_non_finite_optimizer_state_is_refused_on_load(tmp_path):
    model = elman.Sequential([elman.Dense(2, 1, seed=0)])
    model.compile("adam", "mse")
    model.fit(np.ones((4, 2)), np.ones((4, 1)), verbose=0)
    path = tmp_path / "m.npz"
    save(model, path)
    m = members(path)
    key = next(k for k in m["arrays"] if k.startswith("optim/") and
               m["arrays"][k].dtype.kind == "f")
    m["arrays"][key] = np.full_like(m["arrays"][key], np.nan)
    rewrite(path, tmp_path / "nan.npz", arrays=m["arrays"])
    with pytest.raises(ValueError, match="the optimizer state holds NaN or infinity"):
        load(tmp_path / "nan.npz")


@pytest.mark.parametrize("optimizer, state", [("adam", "exp_avg_sq"), ("rmsprop", "square_avg"),
                                              ("adagrad", "sum")])
def test_a_file_with_negative_squares_in_the_optimizer_is_refused(tmp_path, optimizer, state):
    """Adam's exp_avg_sq, RMSprop's square_avg and Adagrad's sum are >= 0; a negative value
    would turn the next step's sqrt into NaN."""
    model = elman.Sequential([elman.Dense(2, 1, seed=0)])
    model.compile(optimizer, "mse")
    model.fit(np.ones((4, 2)), np.ones((4, 1)), verbose=0)
    path = tmp_path / "m.npz"
    save(model, path)
    m = members(path)
    opt = m["doc"]["optimizer"]["state"]["state"]
    key = opt[state][0]["__ndarray__"]
    m["arrays"][key] = -np.abs(m["arrays"][key]) - 1.0
    rewrite(path, tmp_path / "neg.npz", arrays=m["arrays"])
    with pytest.raises(ValueError, match=f"state '{state}'\\[0\\] holds negative values"):
        load(tmp_path / "neg.npz")


def test_a_killed_saves_temporary_is_removed_by_the_next_save(tmp_path):
    import subprocess
    import sys
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()                                        # a pid that no longer runs
    stale = tmp_path / f".m.npz.{gone.pid}.abc123.tmp"
    stale.write_bytes(b"half a checkpoint")
    alive = tmp_path / f".m.npz.{os.getppid()}.def456.tmp"      # a writer still running
    alive.write_bytes(b"being written")
    other = tmp_path / f".other.npz.{gone.pid}.x.tmp"           # another file's: not ours
    other.write_bytes(b"x")
    save(elman.GRU(2, 3, seed=0), tmp_path / "m.npz")
    assert not stale.exists()
    assert alive.exists() and other.exists()
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")) == \
        sorted([alive.name, other.name])
