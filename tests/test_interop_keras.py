"""elman.interop.keras: from_keras gives the outputs Keras itself computes (float32 1e-5 relative,
float64 1e-10) over a grid of models, from live models and from the files Keras saves, and
refuses what it cannot reproduce with an error naming the layer.

Keras runs on its torch backend (the CPU wheel the test extra installs)."""
import json
import os
import re
import subprocess
import sys
import warnings

import numpy as np
import pytest

os.environ["KERAS_BACKEND"] = "torch"       # before keras is imported; numpy's needs scipy

from _torch import require  # noqa: E402

require("torch")
require("h5py")
keras = require("keras")

from elman.interop import ConversionError  # noqa: E402
from elman.interop.keras import TrainingOnlyWarning, from_keras  # noqa: E402

L = keras.layers
DOCS = os.path.join(os.path.dirname(__file__), os.pardir, "docs", "keras.md")

pytestmark = [
    # Keras' own variables under NumPy 2 (not ours to fix)
    pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy keyword"),
    # test_refused_live_layers serializes a lambda activation on purpose
    pytest.mark.filterwarnings("ignore:The object being serialized includes a `lambda`"),
]


# -- helpers ----------------------------------------------------------------------------------

def assert_close(ours, theirs, tol=1e-5, what=""):
    """max |ours - theirs| <= tol * max(1, max |theirs|)."""
    theirs = np.asarray(theirs)
    assert ours.shape == theirs.shape, f"{what}: shape {ours.shape} != keras {theirs.shape}"
    scale = max(1.0, float(np.max(np.abs(theirs), initial=0.0)))
    err = float(np.max(np.abs(ours.astype(np.float64) - theirs), initial=0.0)) / scale
    assert err <= tol, f"{what}: relative error {err:.3g} > {tol}"


def keras_predict(model, x):
    return model.predict(x, verbose=0)


def randomize(model, rng):
    """Non-trivial weights everywhere, biases included (Keras initialises them to zero)."""
    for layer in model.layers:
        layer.set_weights([rng.uniform(-0.6, 0.6, w.shape).astype(w.dtype)
                           for w in layer.get_weights()])
    return model


def recurrent(kind, units, rng, return_sequences, use_bias=True, **kw):
    if kind.startswith("simple"):
        return L.SimpleRNN(units, activation=kind.split("_")[1], use_bias=use_bias,
                           return_sequences=return_sequences, **kw)
    if kind.startswith("gru"):
        return L.GRU(units, reset_after=kind == "gru", use_bias=use_bias,
                     return_sequences=return_sequences, **kw)
    return L.LSTM(units, use_bias=use_bias, return_sequences=return_sequences, **kw)


KINDS = ("simple_tanh", "simple_relu", "gru", "gru_classic", "lstm")
GRID = [(kind, bi, ret) for kind in KINDS for bi in (False, True) for ret in (False, True)]


def build(case: int, kind: str, bi: bool, ret: bool, rng):
    """A Keras model around one recurrent layer of the grid: token or float input, sometimes a
    recurrent layer of another kind below it, a Dense (random activation) or Dropout after it."""
    use_bias = case % 3 != 2
    tokens = case % 2 == 0
    layers = [keras.Input((None,), dtype="int32") if tokens else keras.Input((None, 3))]
    if tokens:
        layers.append(L.Embedding(30, 4))
    if case % 4 == 1:                                  # stacked: another kind underneath
        below = KINDS[(KINDS.index(kind) + 2) % len(KINDS)]
        layers.append(L.Bidirectional(recurrent(below, 3, rng, True)) if case % 8 == 1
                      else recurrent(below, 3, rng, True))
    layer = recurrent(kind, 5, rng, ret, use_bias=use_bias)
    layers.append(L.Bidirectional(layer) if bi else layer)
    if case % 5 != 4:
        layers.append(L.Dropout(0.3))
    act = ("linear", "tanh", "sigmoid", "relu", "softmax", "log_softmax")[case % 6]
    layers.append(L.Dense(2 + case % 3, activation=act, use_bias=case % 7 != 3))
    model = randomize(keras.Sequential(layers), rng)
    x = rng.integers(0, 30, (4, 6)) if tokens else rng.standard_normal((4, 6, 3)).astype("f4")
    return model, x


# -- parity over the grid ---------------------------------------------------------------------

@pytest.mark.parametrize("case", range(len(GRID)),
                         ids=[f"{k}-{'bi' if b else 'uni'}-{'seq' if r else 'last'}"
                              for k, b, r in GRID])
def test_grid_matches_keras(case):
    kind, bi, ret = GRID[case]
    rng = np.random.default_rng(case)
    model, x = build(case, kind, bi, ret, rng)
    ours = from_keras(model)
    assert not ours.training                   # Keras' model(x) is inference: no dropout
    assert_close(ours.predict(x), keras_predict(model, x), what=f"case {case}")
    assert_close(ours(x), keras_predict(model, x), what=f"case {case}, model(x)")


def test_layers_and_layouts():
    rng = np.random.default_rng(0)
    model = randomize(keras.Sequential([
        keras.Input((None,), dtype="int32"), L.Embedding(20, 4),
        L.Bidirectional(L.GRU(5, return_sequences=True)), L.LSTM(3), L.Dropout(0.2),
        L.Dense(2), L.Activation("softmax")]), rng)
    ours = from_keras(model)
    names = [type(m).__name__ for m in ours.layers]
    assert names == ["Embedding", "GRU", "LSTM", "Last", "Dropout", "Linear", "Softmax"]
    gru = ours.layers[1]
    assert gru.bidirectional and gru.batch_first and gru.hidden_size == 5
    # Keras' GRU columns [z|r|h] become rows [r|z|n]; the (2, 3U) bias is [b_ih; b_hh]
    k, rk, b = model.layers[1].forward_layer.get_weights()
    U = 5
    assert np.array_equal(gru.weight_ih_l0.data[:U], k[:, U:2 * U].T)
    assert np.array_equal(gru.weight_ih_l0.data[U:2 * U], k[:, :U].T)
    assert np.array_equal(gru.weight_hh_l0.data[2 * U:], rk[:, 2 * U:].T)
    assert np.array_equal(gru.bias_hh_l0.data[:U], b[1, U:2 * U])
    # Keras' LSTM [i|f|c|o] is PyTorch's [i|f|g|o]; its one bias goes to b_ih
    k, rk, b = model.layers[2].get_weights()
    lstm = ours.layers[2]
    assert np.array_equal(lstm.weight_ih_l0.data, k.T)
    assert np.array_equal(lstm.bias_ih_l0.data, b) and not lstm.bias_hh_l0.data.any()
    x = rng.integers(0, 20, (3, 7))
    assert_close(ours.predict(x), keras_predict(model, x))


def test_float64_model():
    rng = np.random.default_rng(1)
    model = randomize(keras.Sequential([
        keras.Input((None, 3), dtype="float64"),
        L.Bidirectional(L.LSTM(4, return_sequences=True, dtype="float64"), dtype="float64"),
        L.GRU(3, reset_after=False, dtype="float64"), L.Dense(2, dtype="float64")]), rng)
    ours = from_keras(model)
    assert all(p.data.dtype == np.float64 for p in ours.parameters())
    x = rng.standard_normal((3, 5, 3))
    # model.predict would cast the input to float32 (its data adapter uses floatx): call it
    want = keras.ops.convert_to_numpy(model(keras.ops.convert_to_tensor(x), training=False))
    assert want.dtype == np.float64
    # Keras 3.15's torch backend rounds float64 matmuls through float32 (keras.ops.matmul asks
    # dtypes.result_type, which answers "float32" for torch.float64): its own error is ~1e-7
    assert_close(ours.predict(x), want, tol=1e-6)


# -- masking ----------------------------------------------------------------------------------

def test_mask_zero_matches_keras_masking():
    """Pre-, post- and mid-sequence padding: Keras skips masked steps; elman does the same
    with mask_value=0, on the valid steps of per-step outputs and on the last-step summary."""
    rng = np.random.default_rng(2)
    x = rng.integers(1, 20, (4, 7))
    x[0, :3] = 0                                   # pre-padded
    x[1, 5:] = 0                                   # post-padded
    x[2, [1, 4]] = 0                               # holes
    for ret in (True, False):
        model = randomize(keras.Sequential([
            keras.Input((None,), dtype="int32"), L.Embedding(20, 4, mask_zero=True),
            L.Bidirectional(L.GRU(5, return_sequences=True)),
            L.Bidirectional(L.LSTM(3, return_sequences=ret)), L.Dense(2)]), rng)
        ours = from_keras(model).predict(x, mask_value=0)
        want = keras_predict(model, x)
        if ret:
            valid = x != 0
            assert_close(ours[valid], want[valid], what="valid steps")
        else:
            assert_close(ours, want)


def test_masking_layer():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((3, 6, 2)).astype("f4")
    x[0, 4:] = -1.0
    x[2, :2] = -1.0
    model = randomize(keras.Sequential([keras.Input((None, 2)), L.Masking(-1.0),
                                        L.SimpleRNN(4), L.Dense(1)]), rng)
    ours = from_keras(model)
    assert [type(m).__name__ for m in ours.layers] == ["RNN", "Last", "Linear"]
    assert_close(ours.predict(x, mask_value=-1.0), keras_predict(model, x))


# -- files ------------------------------------------------------------------------------------

def test_keras_file_round_trip(tmp_path):
    rng = np.random.default_rng(4)
    model = randomize(keras.Sequential([
        keras.Input((None,), dtype="int32"), L.Embedding(30, 6, mask_zero=True),
        L.Bidirectional(L.GRU(4, reset_after=False, return_sequences=True)),
        L.SimpleRNN(3, activation="relu", return_sequences=True), L.LSTM(5, use_bias=False),
        L.Dropout(0.1), L.Dense(8, activation="relu"), L.Dense(3, activation="log_softmax")]),
        rng)
    model.layers[3].trainable = False        # stored in the same order: kernel, recurrent, bias
    path = tmp_path / "model.keras"
    model.save(path)
    x = rng.integers(0, 30, (5, 8))
    want = keras_predict(keras.saving.load_model(path), x)
    ours = from_keras(path)                        # a pathlib.Path works, as a str does
    assert_close(ours.predict(x, mask_value=0), want)
    live = from_keras(model)
    for (n1, p1), (n2, p2) in zip(ours.named_parameters(), live.named_parameters()):
        assert n1 == n2 and np.array_equal(p1.data, p2.data), n1


def test_keras_file_is_read_without_keras(tmp_path):
    rng = np.random.default_rng(5)
    model = randomize(keras.Sequential([keras.Input((None, 3)), L.LSTM(4), L.Dense(2)]), rng)
    path = tmp_path / "m.keras"
    model.save(path)
    x = rng.standard_normal((2, 5, 3)).astype("f4")
    np.save(tmp_path / "x.npy", x)
    code = ("import sys, numpy as np\n"
            "sys.modules['keras'] = None            # any import of keras now fails\n"
            "from elman.interop.keras import from_keras\n"
            f"m = from_keras({str(path)!r})\n"
            f"x = np.load({str(tmp_path / 'x.npy')!r})\n"
            f"np.save({str(tmp_path / 'y.npy')!r}, m.predict(x))\n")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
    assert_close(np.load(tmp_path / "y.npy"), keras_predict(model, x))


def test_weights_file_with_live_model_json_and_keras_file(tmp_path):
    """A .weights.h5 holds no architecture: it goes with a live model, a model.to_json() file
    or dict, or a .keras file, and its values win."""
    rng = np.random.default_rng(6)

    def build():
        return keras.Sequential([keras.Input((None, 3)),
                                 L.Bidirectional(L.LSTM(4, return_sequences=True)),
                                 L.GRU(3), L.Dense(2, activation="sigmoid")])

    trained = randomize(build(), rng)
    weights = tmp_path / "trained.weights.h5"
    trained.save_weights(weights)
    other = randomize(build(), rng)                 # same architecture, other values
    (tmp_path / "arch.json").write_text(other.to_json())
    other.save(tmp_path / "other.keras")
    x = rng.standard_normal((3, 6, 3)).astype("f4")
    want = keras_predict(trained, x)
    for arch in (other, str(tmp_path / "arch.json"), json.loads(other.to_json()),
                 tmp_path / "other.keras"):
        assert_close(from_keras(arch, weights=weights).predict(x), want, what=str(type(arch)))
    assert not np.allclose(from_keras(other).predict(x), want)
    with pytest.raises(ConversionError, match=r"holds weights but no architecture.*weights="):
        from_keras(weights)
    with pytest.raises(ConversionError, match="no weights: pass weights="):
        from_keras(str(tmp_path / "arch.json"))
    with pytest.raises(ConversionError, match="holds no weights"):
        from_keras(json.loads(other.to_json()))
    # a weights file of another architecture
    small = keras.Sequential([keras.Input((None, 3)), L.LSTM(2), L.Dense(2)])
    small.save_weights(tmp_path / "small.weights.h5")
    with pytest.raises(ConversionError, match=r"layer 0 'bidirectional.*no group|different"):
        from_keras(other, weights=tmp_path / "small.weights.h5")
    wide = keras.Sequential([keras.Input((None, 3)),
                             L.Bidirectional(L.LSTM(4, return_sequences=True)),
                             L.GRU(5), L.Dense(2)])
    wide.save_weights(tmp_path / "wide.weights.h5")
    with pytest.raises(ConversionError, match=r"layer 1 'gru.*kernel has shape \(8, 15\)"):
        from_keras(other, weights=tmp_path / "wide.weights.h5")


def test_legacy_h5_refused(tmp_path):
    model = keras.Sequential([keras.Input((None, 3)), L.LSTM(2)])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.save(tmp_path / "old.h5")                # Keras 2's HDF5 format
    with pytest.raises(ConversionError, match="legacy Keras 2 HDF5.*load_model"):
        from_keras(tmp_path / "old.h5")


# -- what is accepted with a warning, and what is refused -------------------------------------

def test_training_only_settings_warn_and_predict_the_same():
    rng = np.random.default_rng(7)
    model = randomize(keras.Sequential([
        keras.Input((None, 3)), L.LSTM(4, dropout=0.2, recurrent_dropout=0.1,
                                       return_sequences=True, trainable=False),
        L.GRU(3, kernel_regularizer="l2"), L.Dropout(0.5, noise_shape=(None, 1)), L.Dense(1)]),
        rng)
    with pytest.warns(TrainingOnlyWarning) as record:
        ours = from_keras(model)
    ours_ = [w for w in record if w.category is TrainingOnlyWarning]
    assert len(ours_) == 2 and all(w.filename == __file__ for w in ours_)   # at the caller
    text = " ".join(str(w.message) for w in ours_)
    assert "kernel_regularizer" in text and "noise_shape" in text
    # the recurrent layer's dropouts are elman's variational dropouts, not warnings
    assert "lstm" not in text
    lstm = ours.layers[0]
    assert (lstm.input_dropout, lstm.recurrent_dropout) == (0.2, 0.1)
    x = rng.standard_normal((3, 5, 3)).astype("f4")
    assert_close(ours.predict(x), keras_predict(model, x))


def test_a_classic_gru_keeps_its_recurrent_dropout_as_a_warning():
    model = keras.Sequential([keras.Input((None, 3)),
                              L.GRU(4, reset_after=False, dropout=0.1, recurrent_dropout=0.2)])
    with pytest.warns(TrainingOnlyWarning, match="recurrent_dropout=0.2"):
        ours = from_keras(model)
    assert (ours.layers[0].input_dropout, ours.layers[0].recurrent_dropout) == (0.1, 0.0)


def test_mixed_precision_needs_a_dtype():
    rng = np.random.default_rng(8)
    model = randomize(keras.Sequential([keras.Input((None, 3)), L.GRU(3),
                                        L.Dense(2, dtype="mixed_bfloat16")]), rng)
    with pytest.raises(ConversionError, match=r"layer 1 'dense.*'mixed_bfloat16'.*np.float32"):
        from_keras(model)
    ours = from_keras(model, dtype=np.float32)
    assert ours.layers[-1].dtype == np.float32


def config_with(model, index, inner=False, **changes):
    """model.to_json() with changes to the config of layer ``index`` (0 = after the input)."""
    cfg = json.loads(model.to_json())
    entry = cfg["config"]["layers"][index + 1]
    targets = [entry["config"]["layer"], entry["config"]["backward_layer"]] if inner else [entry]
    for t in targets:
        for k, v in changes.items():
            if k in ("class_name", "module", "registered_name"):
                t[k] = v
            else:
                t["config"][k] = v
    return cfg


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A model, its weights file, and a function giving modified configs of it."""
    path = tmp_path_factory.mktemp("keras") / "m.weights.h5"
    model = keras.Sequential([keras.Input((None, 3)), L.LSTM(4, return_sequences=True),
                              L.Bidirectional(L.GRU(3)), L.Dense(2)])
    model.save_weights(path)
    return model, path


@pytest.mark.parametrize("index, inner, changes, match", [
    (0, False, dict(recurrent_activation="hard_sigmoid"),
     r"layer 0 'lstm.*recurrent_activation='hard_sigmoid'.*tanh and sigmoid only"),
    (0, False, dict(activation="relu"), r"layer 0 'lstm.*activation='relu'"),
    (0, False, dict(activation={"module": "builtins", "class_name": "function",
                                "config": "my_act", "registered_name": "my_act"}),
     r"layer 0 'lstm.*activation='my_act'"),
    (0, False, dict(stateful=True), r"layer 0 'lstm.*stateful=True"),
    (0, False, dict(go_backwards=True), r"layer 0 'lstm.*go_backwards=True.*Bidirectional"),
    (0, False, dict(return_state=True), r"layer 0 'lstm.*return_state=True"),
    (1, False, dict(merge_mode="sum"), r"layer 1 'bidirectional.*merge_mode='sum'.*concat"),
    (1, False, dict(merge_mode=None), r"merge_mode=None"),
    (1, True, dict(recurrent_activation="hard_sigmoid"), r"layer 1 'bidirectional.*hard_sigmo"),
    (2, False, dict(activation="gelu"), r"layer 2 'dense.*activation='gelu'"),
    (2, False, dict(lora_rank=2), r"layer 2 'dense.*LoRA"),
    (2, False, dict(dtype={"module": "keras", "class_name": "QuantizedDTypePolicy",
                           "config": {"name": "int8_from_float32", "source_name": "float32"}}),
     r"layer 2 'dense.*quantized"),
    (2, False, dict(module="my_package.layers", class_name="MyDense",
                    registered_name="Custom>MyDense"),
     r"layer 2 'dense.* is a custom layer 'Custom>MyDense'"),
    (1, True, dict(module="my_package", class_name="MyGRU", registered_name="Custom>MyGRU"),
     r"layer 1 'bidirectional.*wrapped layer .* is a custom layer 'Custom>MyGRU'"),
    (2, False, dict(class_name="Conv1D"), r"layer 2 'dense.* is a keras.layers.Conv1D.*Supported"),
])
def test_refused_configs(saved, index, inner, changes, match):
    model, weights = saved
    with pytest.raises(ConversionError, match=match):
        from_keras(config_with(model, index, inner, **changes), weights=weights)


def test_refused_live_layers():
    x3 = keras.Input((None, 3))

    class MyLayer(L.Layer):
        def call(self, x):
            return x * 2

    class MyLSTM(L.LSTM):
        pass

    cases = [
        ([x3, L.Conv1D(4, 2)], r"layer 0 'conv1d.* is a keras.layers.Conv1D: not a layer type"
                               r".*Supported: keras.layers.InputLayer.*keras.layers.LSTM"),
        ([x3, L.LSTM(2, return_sequences=True), MyLayer()],
         r"layer 1 'my_layer.*test_interop_keras.*MyLayer: not a layer type"),
        ([x3, L.Lambda(lambda t: t * 2)], r"layer 0 'lambda.*Lambda layer runs arbitrary"),
        ([x3, MyLSTM(2)], r"layer 0 'my_lstm.*subclass of keras.layers.LSTM"),
        ([x3, L.Bidirectional(L.LSTM(2), merge_mode="mul")], r"merge_mode='mul'"),
        ([x3, L.LSTM(2, recurrent_activation="hard_sigmoid")], r"hard_sigmoid"),
        ([x3, L.GRU(2, activation=lambda t: t)], r"layer 0 'gru.*activation="),
        ([x3, L.SimpleRNN(2, activation="sigmoid")], r"layer 0 'simple_rnn.*tanh or relu"),
        ([x3, L.Dense(2), L.Masking(0.0), L.LSTM(2)], r"layer 1 'masking.*not the first"),
        ([x3, keras.Sequential([L.Dense(2)])], r"layer 0 .*nested model"),
    ]
    for layers, match in cases:
        with pytest.raises(ConversionError, match=match):
            from_keras(keras.Sequential(layers))


def test_refused_models():
    inp = keras.Input((None, 3))
    functional = keras.Model(inp, L.Dense(2)(L.LSTM(2)(inp)))
    with pytest.raises(ConversionError, match="functional model.*keras.Sequential"):
        from_keras(functional)
    with pytest.raises(ConversionError, match="not been built"):
        from_keras(keras.Sequential([L.LSTM(2), L.Dense(1)]))
    with pytest.raises(TypeError, match="keras.Sequential"):
        from_keras(object())


# -- the documentation ------------------------------------------------------------------------

def test_docs_examples_run(tmp_path, monkeypatch):
    with open(DOCS, encoding="utf-8") as f:
        blocks = re.findall(r"```python\n(.*?)```", f.read(), flags=re.S)
    assert len(blocks) >= 2
    monkeypatch.chdir(tmp_path)
    for block in blocks:
        exec(compile(block, DOCS, "exec"), {"__name__": "__docs__"})
