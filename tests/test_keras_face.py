"""elman.keras without Keras: seed 001's code runs as written (summary, fit, history keys), layers
build when their input size is known, gradients are exact (float64 finite differences through
the Keras-layout weights), stateful layers carry their states, what cannot be honoured is
refused by name, and the IMDB loader follows Keras' conventions on an archive made here.
(Agreement with real Keras itself is in test_keras_face_parity.py.)"""
import os
import re

import numpy as np
import pytest

import elman
from elman import keras as face
from elman.keras import layers as L
from elman.keras.models import Sequential

from _tiny_imdb import run_seed001_example, use_tiny_imdb
from _torch import require

ROOT = os.path.join(os.path.dirname(__file__), os.pardir)


@pytest.fixture(autouse=True)
def fresh_names():
    face.backend.clear_session()
    face.utils.set_random_seed(0)


def seed_model():
    model = Sequential()
    model.add(L.Embedding(10000, 32))
    model.add(L.SimpleRNN(32, return_sequences=True))
    model.add(L.SimpleRNN(32))
    model.add(L.Dense(1, activation="sigmoid"))
    return model


# -- seed 001's code ------------------------------------------------------------------------

def test_seed_summary_has_keras_names_shapes_and_counts():
    lines = []
    seed_model().summary(print_fn=lines.append)
    text = "\n".join(lines)
    assert lines[0] == 'Model: "sequential"'
    rows = [re.split(r"\s{2,}", line.strip()) for line in lines if "(" in line and ")" in line
            and not line.startswith("Model")]
    assert rows[1:] == [["embedding (Embedding)", "(None, None, 32)", "320000"],
                        ["simple_rnn (SimpleRNN)", "(None, None, 32)", "2080"],
                        ["simple_rnn_1 (SimpleRNN)", "(None, 32)", "2080"],
                        ["dense (Dense)", "(None, 1)", "33"]]
    assert "Total params: 324,193" in text and "Non-trainable params: 0" in text


@pytest.mark.parametrize("metric", ["acc", "accuracy"])
def test_seed_fit_history_keys_and_predict(metric):
    model = seed_model()
    model.compile(optimizer="rmsprop", loss="binary_crossentropy", metrics=[metric])
    rng = np.random.default_rng(0)
    x = elman.data.pad_sequences([rng.integers(1, 10000, rng.integers(3, 12)).tolist()
                                  for _ in range(40)], maxlen=10)
    y = rng.integers(0, 2, 40)
    history = model.fit(x, y, epochs=2, batch_size=16, validation_split=0.2, verbose=0)
    assert sorted(history.history) == sorted([metric, "loss", f"val_{metric}", "val_loss"])
    assert all(len(v) == 2 for v in history.history.values())
    assert model.history is history
    assert model.predict(x[:3]).shape == (3, 1)
    loss, acc = model.evaluate(x, y, verbose=0)
    assert 0 <= acc <= 1 and loss > 0


def test_get_weights_are_keras_shapes_and_round_trip():
    model = seed_model()
    shapes = [w.shape for w in model.get_weights()]
    assert shapes == [(10000, 32), (32, 32), (32, 32), (32,), (32, 32), (32, 32), (32,),
                      (32, 1), (1,)]
    weights = [np.full(s, 0.01 * k, np.float32) for k, s in enumerate(shapes)]
    model.set_weights(weights)
    for a, b in zip(model.get_weights(), weights):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="expected 9 arrays"):
        model.set_weights(weights[:-1])


# -- building -------------------------------------------------------------------------------

def test_input_sizes_are_inferred_from_the_first_data():
    model = Sequential([L.LSTM(4, return_sequences=True), L.TimeDistributed(L.Dense(2))])
    assert not model.built and model.count_params() == 0
    lines = []
    model.summary(print_fn=lines.append)
    assert "0 (unbuilt)" in "\n".join(lines)
    model.compile("adam", "mse")                       # carried out once the model is built
    x = np.zeros((5, 7, 3), np.float32)
    history = model.fit(x, np.zeros((5, 7, 2), np.float32), epochs=1, verbose=0)
    assert model.built and model.optimizer is not None and list(history.history) == ["loss"]
    assert [w.shape for w in model.get_weights()] == [(3, 16), (4, 16), (16,), (4, 2), (2,)]
    assert model.predict(x).shape == (5, 7, 2)


def test_input_and_input_shape_build_at_once():
    a = Sequential([face.Input(shape=(None, 3)), L.GRU(4), L.Dense(1)])
    b = Sequential([L.GRU(4, input_shape=(None, 3)), L.Dense(1)])
    for model in (a, b):
        assert model.built and model._shapes == [(None, 4), (None, 1)]
        assert [w.shape for w in model.get_weights()] == [(3, 12), (4, 12), (2, 12), (4, 1),
                                                          (1,)]


def test_get_layer_by_name_or_index():
    model = seed_model()
    assert model.get_layer("simple_rnn_1") is model.layers[2] is model.get_layer(index=2)
    with pytest.raises(ValueError, match="no layer named 'lstm'"):
        model.get_layer("lstm")


def test_set_random_seed_makes_runs_repeat():
    runs = []
    for _ in range(2):
        face.utils.set_random_seed(42)
        model = Sequential([L.Embedding(20, 4), L.LSTM(3, dropout=0.3), L.Dropout(0.5),
                            L.Dense(1)])
        model.compile("adam", "mse")
        x = np.arange(40).reshape(8, 5) % 20
        model.fit(x, np.linspace(0, 1, 8), epochs=2, batch_size=4, verbose=0)
        runs.append(model.get_weights())
    for a, b in zip(*runs):
        np.testing.assert_array_equal(a, b)


def test_layer_names_count_per_session():
    assert [L.SimpleRNN(2).name, L.SimpleRNN(2).name, L.GRU(2).name,
            L.TimeDistributed(L.Dense(1)).name] == ["simple_rnn", "simple_rnn_1", "gru",
                                                    "time_distributed"]
    bi = L.Bidirectional(L.LSTM(3, name="enc"))
    assert (bi.name, bi.forward_layer.name, bi.backward_layer.name) == \
        ("bidirectional", "forward_enc", "backward_enc")


# -- gradients: float64 finite differences through the Keras-layout weights ---------------------

def _built(layer, features=3):
    layer.build((None, None, features))
    rng = np.random.default_rng(1)
    for p in layer.parameters():
        p.data[...] = rng.uniform(-0.5, 0.5, p.data.shape)
    return layer


@pytest.mark.parametrize("make", [
    lambda: L.SimpleRNN(3, dtype="float64", return_sequences=True),
    lambda: L.GRU(3, dtype="float64", return_state=True),
    lambda: L.GRU(3, dtype="float64", reset_after=False, go_backwards=True),
    lambda: L.LSTM(3, dtype="float64", return_sequences=True, return_state=True),
    lambda: L.Bidirectional(L.LSTM(2, dtype="float64", return_sequences=True),
                            merge_mode="mul"),
    lambda: L.Bidirectional(L.GRU(2, dtype="float64"), merge_mode="ave"),
])
@pytest.mark.parametrize("lengths", [None, [4, 2, 3]])
def test_recurrent_gradients_are_exact(make, lengths):
    layer = _built(make())
    x = np.random.default_rng(2).standard_normal((3, 4, 3))
    errors = elman.gradcheck(layer, (x,), kwargs={"lengths": lengths})
    assert set(errors) >= {"kernel", "recurrent_kernel", "input[0]"} or \
        set(errors) >= {"forward_layer.kernel", "backward_layer.bias"}
    assert max(errors.values()) < 1e-7, errors


def test_dense_and_time_distributed_gradients_are_exact():
    for layer in (L.Dense(2, activation="tanh", dtype="float64"),
                  L.TimeDistributed(L.Dense(2, activation="softmax", dtype="float64"))):
        x = np.random.default_rng(3).standard_normal((2, 4, 3))
        layer.build((None, 4, 3))
        errors = elman.gradcheck(layer, (x,))
        assert max(errors.values()) < 1e-7, errors


def test_input_dropout_masks_every_step_alike_in_training_only():
    layer = _built(L.SimpleRNN(4, dropout=0.5, return_sequences=True, seed=3, dtype="float64"))
    x = np.random.default_rng(4).standard_normal((2, 5, 3))
    inference = layer(x)
    np.testing.assert_array_equal(inference, layer(x))
    trained = layer(x, training=True)
    assert not np.allclose(trained, inference)
    mask, _ = layer._cache
    assert mask.shape == (2, 1, 3) and set(np.unique(mask)) <= {0.0, 2.0}
    layer.train()
    errors = elman.gradcheck(layer, (x,))            # gradcheck replays the layer's generator
    assert max(errors.values()) < 1e-7, errors


@pytest.mark.parametrize("make", [
    lambda: L.LSTM(4, dropout=0.3, recurrent_dropout=0.4, return_sequences=True, seed=3,
                   dtype="float64"),
    lambda: L.GRU(4, recurrent_dropout=0.4, seed=3, dtype="float64"),
    lambda: L.Bidirectional(L.SimpleRNN(3, recurrent_dropout=0.5, seed=3, dtype="float64"))])
def test_recurrent_dropout_in_training_only_with_exact_gradients(make):
    """Keras' recurrent_dropout runs on the engine's variational dropout: masks on h_{t-1} in
    training only, drawn from the layer's own seeded generator, gradients exact."""
    layer = _built(make())
    x = np.random.default_rng(4).standard_normal((2, 5, 3))
    inference = layer(x)
    np.testing.assert_array_equal(inference, layer(x))
    assert not np.allclose(layer(x, training=True), inference)
    layer.train()
    errors = elman.gradcheck(layer, (x,), kwargs={"lengths": [5, 3]})
    assert max(errors.values()) < 1e-7, errors


@pytest.mark.parametrize("from_logits", [False, True])
def test_keras_crossentropies_have_exact_gradients(from_logits):
    rng = np.random.default_rng(6)
    z = rng.standard_normal((4, 3, 5))
    p = z if from_logits else np.exp(z) / np.exp(z).sum(axis=-1, keepdims=True)
    labels = rng.integers(0, 5, (4, 3))
    sparse = face.losses.SparseCategoricalCrossentropy(from_logits=from_logits)
    dense = face.losses.CategoricalCrossentropy(from_logits=from_logits)
    errors = elman.gradcheck(lambda q: sparse(q, labels), (p,))
    assert errors["input[0]"] < 1e-7
    assert dense(p, np.eye(5)[labels])[0] == pytest.approx(sparse(p, labels)[0], rel=1e-12)
    if from_logits:                       # the same as elman's (PyTorch's) loss on logits
        assert sparse(p, labels)[0] == pytest.approx(elman.CrossEntropyLoss()(p, labels)[0])
    with pytest.raises(ValueError, match=r"labels must be integers in \[0, 5\)"):
        sparse(p, labels + 5)


# -- stateful -------------------------------------------------------------------------------

def test_stateful_layer_carries_each_row_state_to_the_next_batch():
    x = np.random.default_rng(5).standard_normal((3, 8, 2)).astype(np.float32)
    whole = L.LSTM(4, return_sequences=True)
    whole.build((None, None, 2))
    stateful = L.LSTM(4, return_sequences=True, stateful=True)
    stateful.build((None, None, 2))
    stateful.set_weights(whole.get_weights())
    parts = np.concatenate([stateful(x[:, :3]), stateful(x[:, 3:])], axis=1)
    np.testing.assert_allclose(parts, whole(x), atol=1e-6)
    stateful.reset_states()
    np.testing.assert_allclose(stateful(x[:, :3]), whole(x[:, :3]), atol=1e-6)
    with pytest.raises(ValueError, match="batch of 3 but the input has 2 samples"):
        stateful(x[:2])


# -- masks ----------------------------------------------------------------------------------

def test_mask_zero_skips_padding_wherever_it_is():
    model = Sequential([L.Embedding(20, 4, mask_zero=True), L.Bidirectional(L.GRU(3)),
                        L.Dense(1)])
    plain = Sequential([L.Embedding(20, 4), L.Bidirectional(L.GRU(3)), L.Dense(1)])
    plain.set_weights(model.get_weights())
    tokens = np.array([[5, 6, 7]])
    expected = plain.predict(tokens)
    for padded in ([[0, 0, 5, 6, 7]], [[5, 6, 7, 0, 0]], [[0, 5, 6, 7, 0]]):
        np.testing.assert_allclose(model.predict(np.array(padded)), expected, atol=1e-6)


# -- saving ---------------------------------------------------------------------------------

def test_save_and_load_model_resume_training_exactly(tmp_path):
    def make():
        model = Sequential([
            L.Embedding(30, 4, mask_zero=True),
            L.Bidirectional(L.LSTM(3, return_sequences=True, dropout=0.2), merge_mode="ave"),
            L.Dropout(0.3), L.TimeDistributed(L.Dense(2)), L.GRU(3, reset_after=False),
            L.Dense(1, activation="sigmoid")])
        model.compile(face.optimizers.Adam(learning_rate=0.01), "binary_crossentropy",
                      metrics=["acc"])
        return model
    rng = np.random.default_rng(0)
    x = face.utils.pad_sequences([rng.integers(1, 30, rng.integers(2, 7)).tolist()
                                  for _ in range(24)])
    y = rng.integers(0, 2, 24)
    model = make()
    best = tmp_path / "best.npz"
    model.fit(x, y, epochs=2, batch_size=8, validation_split=0.25, verbose=0,
              callbacks=[face.callbacks.ModelCheckpoint(str(best), save_best_only=True)])
    model.save(tmp_path / "model.npz")
    loaded = face.models.load_model(tmp_path / "model.npz")
    assert [layer.name for layer in loaded.layers] == [layer.name for layer in model.layers]
    assert loaded.epoch == 2 and type(loaded.optimizer).__name__ == "Adam"
    np.testing.assert_array_equal(loaded.predict(x), model.predict(x))
    for m in (model, loaded):          # shuffling and dropout continue from the same states
        m.fit(x, y, epochs=4, batch_size=8, initial_epoch=2, verbose=0)
    for a, b in zip(model.get_weights(), loaded.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert face.models.load_model(best).predict(x).shape == (24, 1)


# -- refusals -------------------------------------------------------------------------------

@pytest.mark.parametrize("make,error,message", [
    (lambda: L.GRU(4, reset_after=False, recurrent_dropout=0.2)(np.zeros((1, 2, 3))),
     ValueError, "recurrent_dropout is not available for GRU with reset_after=False"),
    (lambda: L.SimpleRNN(4, activation="selu"), ValueError, r"activation must be one of"),
    (lambda: L.GRU(4, recurrent_activation="hard_sigmoid"), ValueError, "'sigmoid'"),
    (lambda: L.LSTM(0), ValueError, "units must be an integer >= 1, got 0"),
    (lambda: L.LSTM(4, return_sequences="yes"), TypeError, "return_sequences must be True or"),
    (lambda: L.Bidirectional(L.LSTM(4), merge_mode="max"), ValueError, "merge_mode must be"),
    (lambda: L.Bidirectional(L.Dense(4)), TypeError, "wraps an elman.keras SimpleRNN"),
    (lambda: L.Dense(4, kernel_initializer="he_normal"), ValueError, "kernel_initializer must"),
    (lambda: L.Dropout(0.5, noise_shape=(None, 1)), ValueError, "noise_shape is not supported"),
    (lambda: Sequential([L.Dense(4), L.Masking()]), ValueError, "must be the first layer"),
    (lambda: Sequential([L.LSTM(4, return_state=True)]), ValueError, "returns several arrays"),
    (lambda: Sequential([elman.Dense(3, 4)]), TypeError, "expected an elman.keras layer"),
])
def test_unsupported_arguments_are_refused_by_name(make, error, message):
    with pytest.raises(error, match=message):
        make()


def test_go_backwards_sequences_on_masked_input_are_refused():
    layer = L.SimpleRNN(3, go_backwards=True, return_sequences=True)
    x = np.zeros((2, 4, 2), np.float32)
    with pytest.raises(ValueError, match="go_backwards=True with return_sequences=True"):
        layer(x, mask=np.array([[1, 1, 1, 0], [1, 1, 1, 1]], bool))
    with pytest.raises(ValueError, match="right-padded masks only"):
        L.SimpleRNN(3)(x, mask=np.array([[0, 1, 1, 1], [1, 1, 1, 1]], bool))


def test_fit_refuses_sample_weights():
    model = Sequential([face.Input((2,)), L.Dense(1)])
    model.compile("sgd", "mse")
    with pytest.raises(ValueError, match="sample_weight are not supported"):
        model.fit(np.zeros((4, 2)), np.zeros(4), sample_weight=np.ones(4))


# -- data: pad_sequences and the IMDB loader --------------------------------------------------

def test_pad_sequences_is_kerass():
    from elman.keras.preprocessing.sequence import pad_sequences
    assert pad_sequences is face.utils.pad_sequences is elman.data.pad_sequences
    assert pad_sequences([[1, 2], [3]], maxlen=3).tolist() == [[0, 1, 2], [0, 0, 3]]


def test_imdb_load_data_follows_keras_conventions(monkeypatch, tmp_path):
    imdb = use_tiny_imdb(monkeypatch, tmp_path, n_per_class=10)
    (x_train, y_train), (x_test, y_test) = imdb.load_data()
    assert x_train.dtype == object and len(x_train) == len(y_train) == 20 == len(x_test)
    assert y_train.dtype == np.int64 and sorted(set(y_train.tolist())) == [0, 1]
    assert y_train[:10].tolist() != sorted(y_train[:10].tolist()) or \
        y_train[10:].tolist() != sorted(y_train[10:].tolist())       # shuffled
    assert all(x[0] == 1 for x in x_train)                          # start_char
    index = imdb.get_word_index()
    assert index["the"] >= 1 and min(index.values()) == 1
    first = x_train[0]
    # ids = rank + index_from (3); the words of the fixture are all in the vocabulary
    assert min(first[1:]) >= 4
    (small, _), (small_test, _) = imdb.load_data(num_words=8, skip_top=5)
    assert all(w == 2 or 5 <= w < 8 for x in small for w in x[1:])
    (kept, _), _ = imdb.load_data(maxlen=20)
    assert all(len(x) < 20 for x in kept) and len(kept) < 20
    (dropped, _), _ = imdb.load_data(num_words=8, oov_char=None)
    assert all(w < 8 for x in dropped for w in x)
    (again, labels_again), _ = imdb.load_data()
    assert [list(x) for x in again] == [list(x) for x in x_train]   # same seed, same order
    with pytest.raises(ValueError, match="num_words must be an integer >= 1"):
        imdb.load_data(num_words=0)


# -- the example and the README -------------------------------------------------------------

def test_seed001_example_runs_as_written(monkeypatch, tmp_path, capsys):
    require("matplotlib")
    import matplotlib
    matplotlib.use("Agg")
    result = run_seed001_example(monkeypatch, tmp_path, ["--plots", str(tmp_path)])
    out = capsys.readouterr().out
    assert "simple_rnn (SimpleRNN)" in out and "320000" in out and "2080" in out
    assert "input_train shape: (40, 500)" in out and "Epoch 10/10" in out
    history = result["history"].history
    assert sorted(history) == ["acc", "loss", "val_acc", "val_loss"]
    assert len(history["acc"]) == 10
    assert (tmp_path / "accuracy.png").is_file() and (tmp_path / "loss.png").is_file()


def test_readme_keras_block_runs(monkeypatch, tmp_path, capsys):
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as f:
        readme = f.read()
    section = readme.split("### Keras-style code", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    assert blocks, "the README's Keras-style section has no Python block"
    use_tiny_imdb(monkeypatch, tmp_path, n_per_class=10)
    for block in blocks:
        exec(compile(block, "README.md", "exec"), {})
    assert "simple_rnn (SimpleRNN)" in capsys.readouterr().out
