"""Tests for elman.model.Sequential: layouts, compile strings, fit/evaluate/predict, variable
lengths, errors with their messages, gradient checks, and exact resume from a checkpoint."""
import math
import os

import numpy as np
import pytest

import elman
from elman.callbacks import Callback, ModelCheckpoint
from elman.gradcheck import gradcheck
from elman.losses import LOSSES
from elman.model import METRICS, Sequential
from _torch import require
from elman.optim import OPTIMIZERS

GRAD_TOL = 1e-7


def rng(seed=0):
    return np.random.default_rng(seed)


def sign_of_sum_data(n=600, steps=12, seed=0):
    """x (N, T, 1) Gaussian; y = 1 if the sequence sums to > 0."""
    x = rng(seed).standard_normal((n, steps, 1)).astype(np.float32)
    return x, (x.sum(axis=(1, 2)) > 0).astype(np.float32)


def sentiment_tokens(n=1600, steps=12, vocab=30, seed=0):
    """Seed 001 in miniature: tokens 1..5 are 'positive' words, 6..10 'negative', 11.. neutral;
    the label says whether a review has more positive than negative words (ties dropped)."""
    g = rng(seed)
    x = g.integers(11, vocab, size=(n, steps))
    sentiment = g.random((n, steps)) < 0.2
    x[sentiment] = g.integers(1, 11, size=int(sentiment.sum()))
    score = ((x >= 1) & (x <= 5)).sum(1) - ((x >= 6) & (x <= 10)).sum(1)
    keep = score != 0
    return x[keep], (score[keep] > 0).astype(np.float32)


def binary_model(seed=0, cell=elman.LSTM, **kw):
    return Sequential([cell(1, 16, seed=seed + 1, **kw), elman.Last(),
                       elman.Dense(16, 1, activation="sigmoid", seed=seed + 2)], seed=seed)


# -- structure and layout ------------------------------------------------------------------------

def test_parameter_names_follow_torch_sequential():
    model = Sequential([elman.Embedding(10, 4, seed=0), elman.GRU(4, 5, seed=1), elman.Last(),
                        elman.Dense(5, 2, seed=2)])
    assert [n for n, _ in model.named_parameters()] == [
        "0.weight", "1.weight_ih_l0", "1.weight_hh_l0", "1.bias_ih_l0", "1.bias_hh_l0",
        "3.weight", "3.bias"]
    assert len(model) == 4 and isinstance(model[1], elman.GRU)
    assert model.config() == {"layers": [
        {"class": type(layer).__name__, "config": layer.config()} for layer in model.layers]}


def test_layout_batch_first_and_time_major_layers_give_the_same_model():
    """Sequential takes samples-first data whatever the layers' batch_first; the result is
    the same as composing the layers by hand in time-major layout."""
    x = rng().standard_normal((5, 7, 3))
    lengths = np.array([7, 3, 5, 1, 6])

    def build(bf):
        return Sequential([elman.GRU(3, 4, dtype=np.float64, seed=1, batch_first=bf[0]),
                           elman.Dense(4, 4, activation="tanh", dtype=np.float64, seed=2),
                           elman.LSTM(4, 3, dtype=np.float64, seed=3, batch_first=bf[1]),
                           elman.Last(batch_first=bf[2]),
                           elman.Dense(3, 2, dtype=np.float64, seed=4)])

    outs = [build(bf)(x, lengths=lengths) for bf in
            [(False, False, False), (True, True, True), (True, False, True), (False, True, False)]]
    for out in outs[1:]:
        np.testing.assert_allclose(out, outs[0], rtol=0, atol=1e-12)
    # by hand, time-major
    m = build((False, False, False))
    h, _ = m[0](x.swapaxes(0, 1), lengths=lengths)
    h, _ = m[2](m[1](h), lengths=lengths)
    np.testing.assert_allclose(outs[0], m[4](m[3](h, lengths=lengths)), rtol=0, atol=1e-12)
    # per-step output comes back samples first
    seq = Sequential([elman.RNN(3, 4, dtype=np.float64, seed=1), elman.Dense(4, 2, seed=2,
                                                                             dtype=np.float64)])
    assert seq(x).shape == (5, 7, 2)


def test_misplaced_sequence_layer_is_reported():
    model = Sequential([elman.RNN(3, 4), elman.Last(), elman.RNN(4, 4)])
    with pytest.raises(ValueError, match=r"layer 2 \(RNN\) needs a batch of sequences \(N, T, F\)"
                                         r".*cannot follow a sequence picker"):
        model(np.zeros((2, 5, 3), np.float32))
    with pytest.raises(ValueError, match=r"layer 0 \(RNN\) needs a batch of sequences"):
        Sequential([elman.RNN(3, 4)])(np.zeros((2, 3), np.float32))
    with pytest.raises(TypeError, match="layer 0 must be an elman Module"):
        Sequential(["dense"])


# -- learning ------------------------------------------------------------------------------------

def test_fit_learns_sign_of_sum_with_lstm():
    """LSTM -> Last -> Dense(sigmoid) reaches >= 90 % validation accuracy in 15 epochs."""
    x, y = sign_of_sum_data()
    model = binary_model()
    model.compile(elman.Adam(model.parameters(), lr=0.01), "binary_crossentropy", ["accuracy"])
    history = model.fit(x, y, epochs=15, batch_size=32, validation_split=0.2, verbose=0)
    assert max(history.history["val_accuracy"][-3:]) >= 0.9
    assert history.history["loss"][-1] < history.history["loss"][0] / 3


def test_seed001_embedding_simplernn_dense_sigmoid():
    """The seed-001 Keras model: Embedding -> SimpleRNN -> Dense(1, sigmoid), compiled with
    ("rmsprop", "binary_crossentropy", ["accuracy"]), on a tiny synthetic sentiment task."""
    x, y = sentiment_tokens()
    model = Sequential([elman.Embedding(30, 16, seed=0), elman.RNN(16, 16, seed=1), elman.Last(),
                        elman.Dense(16, 1, activation="sigmoid", seed=2)], seed=0)
    model.compile("rmsprop", "binary_crossentropy", ["accuracy"])
    history = model.fit(x, y, epochs=25, batch_size=32, validation_split=0.2, verbose=0)
    assert history.history["val_accuracy"][-1] >= 0.88, history.history["val_accuracy"]
    loss, acc = model.evaluate(x, y)
    assert acc >= 0.88 and loss < 0.35


def test_many_to_many_per_step_regression():
    """GRU -> Dense on every step learns y_t = x_t + 0.5 x_{t-1} (loss at every step)."""
    g = rng(1)
    x = g.standard_normal((400, 10, 1)).astype(np.float32)
    y = x.copy()
    y[:, 1:] += 0.5 * x[:, :-1]
    model = Sequential([elman.GRU(1, 16, seed=1), elman.Dense(16, 1, seed=2)], seed=0)
    model.compile(elman.Adam(model.parameters(), lr=0.01), "mse", ["mae"])
    history = model.fit(x, y, epochs=20, batch_size=32, validation_split=0.25, verbose=0)
    assert model.predict(x[:3]).shape == (3, 10, 1)
    assert history.history["val_loss"][-1] < 0.02 * np.var(y)
    assert history.history["val_mae"][-1] < 0.1


def test_stacked_recurrent_layers_learn():
    """Seed 002's deep RNN: stacked layers, each feeding its output sequence to the next."""
    x, y = sign_of_sum_data(n=400)
    model = Sequential([elman.RNN(1, 12, seed=1), elman.GRU(12, 12, seed=2, batch_first=True),
                        elman.LSTM(12, 12, num_layers=2, seed=3), elman.Last(),
                        elman.Dense(12, 1, activation="sigmoid", seed=4)], seed=0)
    model.compile(elman.Adam(model.parameters(), lr=0.01), "binary_crossentropy", ["acc"])
    history = model.fit(x, y, epochs=12, batch_size=32, validation_split=0.25, verbose=0)
    assert history.history["val_acc"][-1] >= 0.85


@pytest.mark.parametrize("optimizer", sorted(OPTIMIZERS))
def test_every_keras_optimizer_string(optimizer):
    x, y = sign_of_sum_data(n=64, steps=5)
    model = binary_model(cell=elman.RNN)
    before = model.get_weights()
    model.compile(optimizer, "binary_crossentropy", ["accuracy"])
    assert type(model.optimizer).__name__.lower() == optimizer
    history = model.fit(x, y, epochs=2, batch_size=16, verbose=0)
    assert all(math.isfinite(v) for v in history.history["loss"])
    assert any(not np.array_equal(a, b) for a, b in zip(before, model.get_weights()))


@pytest.mark.parametrize("loss", sorted(LOSSES))
def test_every_keras_loss_string(loss):
    x, y = sign_of_sum_data(n=64, steps=5)
    if loss == "sparse_categorical_crossentropy":        # logits for 2 classes, integer labels
        head, y = elman.Dense(8, 2, seed=2), y.astype(np.int64)
    elif loss == "binary_crossentropy":                  # probabilities
        head = elman.Dense(8, 1, activation="sigmoid", seed=2)
    else:
        head = elman.Dense(8, 1, seed=2)
    model = Sequential([elman.GRU(1, 8, seed=1), elman.Last(), head], seed=0)
    model.compile("adam", loss, metrics=["accuracy"] if "crossentropy" in loss else ["mae"])
    history = model.fit(x, y, epochs=3, batch_size=16, verbose=0)
    assert history.history["loss"][-1] < history.history["loss"][0]


@pytest.mark.parametrize("metric", sorted(METRICS))
def test_every_metric_string(metric):
    x, y = sign_of_sum_data(n=40, steps=4)
    model = binary_model(cell=elman.RNN)
    model.compile("sgd", "binary_crossentropy", [metric])
    history = model.fit(x, y, epochs=1, batch_size=8, validation_split=0.25, verbose=0)
    assert metric in history.history and "val_" + metric in history.history
    pred = model.predict(x[30:])
    err = pred[:, 0] - y[30:]
    expected = {"mae": np.mean(np.abs(err)), "mse": np.mean(err ** 2),
                "rmse": np.sqrt(np.mean(err ** 2)),
                "acc": np.mean((pred[:, 0] > 0.5) == (y[30:] > 0.5))}
    key = {"mean_absolute_error": "mae", "mean_squared_error": "mse",
           "root_mean_squared_error": "rmse", "accuracy": "acc", "binary_accuracy": "acc",
           "sparse_categorical_accuracy": None}[metric] if metric not in expected else metric
    if key is not None:
        assert history.history["val_" + metric][0] == pytest.approx(expected[key], rel=1e-5)


def test_accuracy_is_sparse_categorical_for_cross_entropy():
    x = rng().standard_normal((90, 4, 2)).astype(np.float32)
    y = np.argmax(x.sum(axis=1), axis=1)                 # class = the larger feature sum
    model = Sequential([elman.GRU(2, 8, seed=1), elman.Last(), elman.Dense(8, 2, seed=2)])
    model.compile("adam", "sparse_categorical_crossentropy", ["accuracy"])
    model.fit(x, y, epochs=1, verbose=0)
    _, acc = model.evaluate(x, y)
    assert acc == pytest.approx(np.mean(np.argmax(model.predict(x), axis=1) == y))


def test_history_and_logs():
    x, y = sign_of_sum_data(n=50, steps=4)
    model = binary_model(cell=elman.RNN)
    model.compile("sgd", "binary_crossentropy", ["accuracy", "mse"])
    h = model.fit(x, y, epochs=3, batch_size=10, validation_split=0.2, verbose=0)
    assert h is model.history
    assert h.epoch == [0, 1, 2] and model.epoch == 3
    assert sorted(h.history) == ["accuracy", "loss", "lr", "mse", "val_accuracy", "val_loss",
                                 "val_mse"]
    assert all(len(v) == 3 for v in h.history.values())
    assert h.history["lr"] == [0.01] * 3
    # resuming continues the epoch count
    h2 = model.fit(x, y, epochs=5, initial_epoch=3, batch_size=10, verbose=0)
    assert h2.epoch == [3, 4] and model.epoch == 5
    assert model.fit(x, y, epochs=5, initial_epoch=5, verbose=0).epoch == []


def test_validation_split_holds_out_the_last_samples():
    x, y = sign_of_sum_data(n=10, steps=3)
    seen = []

    class Spy(Callback):
        def on_train_begin(self, logs=None):
            seen.append(self.params["samples"])

    model = binary_model(cell=elman.RNN)
    model.compile("sgd", "binary_crossentropy")
    h = model.fit(x, y, epochs=1, batch_size=4, validation_split=0.25, callbacks=[Spy()],
                  verbose=0)
    assert seen == [7]                                   # floor(10 * 0.75) for training
    assert h.history["val_loss"][0] == model.evaluate(x[7:], y[7:])
    # the held-out samples are never trained on: changing them changes nothing but val_loss
    x2, y2 = x.copy(), y.copy()
    x2[7:] *= -3
    y2[7:] = 1 - y2[7:]
    model2 = binary_model(cell=elman.RNN)
    model2.compile("sgd", "binary_crossentropy")
    model2.fit(x2, y2, epochs=1, batch_size=4, validation_split=0.25, verbose=0)
    assert all(np.array_equal(a, b) for a, b in zip(model.get_weights(), model2.get_weights()))


def test_validation_data_and_modes():
    """Training mode during the batches, evaluation mode (no dropout) for validation and
    predict; the mode from before fit is restored."""
    x, y = sign_of_sum_data(n=40, steps=4)
    model = Sequential([elman.LSTM(1, 8, seed=1), elman.Last(), elman.Dropout(0.5, seed=3),
                        elman.Dense(8, 1, activation="sigmoid", seed=2)], seed=0)
    model.compile("adam", "binary_crossentropy", ["accuracy"])
    modes = []

    class Spy(Callback):
        def on_batch_end(self, batch, logs=None):
            modes.append(self.model.training)

    model.eval()
    h = model.fit(x[:30], y[:30], epochs=1, batch_size=10, callbacks=[Spy()],
                  validation_data=(x[30:], y[30:]), verbose=0)
    assert modes == [True] * 3 and model.training is False
    assert h.history["val_loss"][0] == model.evaluate(x[30:], y[30:], return_dict=True)["loss"]
    np.testing.assert_array_equal(model.predict(x), model.predict(x))    # no dropout


def test_predict_is_batched_and_matches_forward():
    x, _ = sign_of_sum_data(n=23, steps=5)
    model = binary_model()
    whole = model.eval()(x)
    np.testing.assert_allclose(model.predict(x, batch_size=4), whole, rtol=1e-6, atol=1e-7)


def test_labels_of_shape_n_fit_an_output_of_shape_n_1():
    x, y = sign_of_sum_data(n=32, steps=4)
    model = binary_model(cell=elman.RNN)
    model.compile("sgd", "binary_crossentropy", ["accuracy"])
    a = model.evaluate(x, y)
    b = model.evaluate(x, y[:, None])
    assert a == b


def test_fit_is_reproducible_from_the_model_seed_and_fit_seed():
    x, y = sign_of_sum_data(n=60, steps=4)

    def run(model_seed, fit_seed=None):
        model = Sequential([elman.RNN(1, 6, seed=1), elman.Last(), elman.Dropout(0.3, seed=7),
                            elman.Dense(6, 1, activation="sigmoid", seed=2)], seed=model_seed)
        model.compile("adam", "binary_crossentropy")
        model.fit(x, y, epochs=2, batch_size=8, verbose=0, seed=fit_seed)
        return model.get_weights()

    same = run(3), run(3)
    assert all(np.array_equal(a, b) for a, b in zip(*same))
    assert all(np.array_equal(a, b) for a, b in zip(run(3, fit_seed=5), run(4, fit_seed=5)))
    assert not all(np.array_equal(a, b) for a, b in zip(run(3), run(4)))


def test_gradient_clipping_from_compile():
    x, y = sign_of_sum_data(n=16, steps=4)
    for kw, bound in (({"clipvalue": 1e-3}, 1e-3), ({"clipnorm": 1e-3}, 1e-3),
                      ({"global_clipnorm": 1e-3}, 1e-3)):
        model = binary_model(cell=elman.RNN)
        before = model.get_weights()
        model.compile(elman.SGD(model.parameters(), lr=1.0), "binary_crossentropy", **kw)
        model.fit(x, y, epochs=1, batch_size=16, shuffle=False, verbose=0)
        steps = [a - b for a, b in zip(model.get_weights(), before)]
        if "clipvalue" in kw:
            assert max(np.abs(s).max() for s in steps) <= bound * (1 + 1e-4)    # float32 rounding
        elif "clipnorm" in kw:
            assert max(np.linalg.norm(s) for s in steps) <= bound * (1 + 1e-3)
        else:
            assert math.sqrt(sum(np.sum(s ** 2) for s in steps)) <= bound * (1 + 1e-3)


def test_summary_table():
    model = Sequential([elman.Embedding(100, 8, seed=0), elman.LSTM(8, 16, seed=1), elman.Last(),
                        elman.Dense(16, 1, activation="sigmoid", seed=2)])
    text = model.summary(print_fn=None)
    lines = text.splitlines()
    assert lines[0] == 'Model: "Sequential"'
    rows = {line.split()[0]: line for line in lines if line[:1].isdigit()}
    assert rows["0"].split()[1:] == ["(Embedding)", "(None,", "None,", "8)", "800"]
    assert rows["1"].split()[1:] == ["(LSTM)", "(None,", "None,", "16)", "1,664"]
    assert rows["2"].split()[1:] == ["(Last)", "(None,", "16)", "0"]
    assert rows["3"].split()[1:] == ["(Linear)", "(None,", "1)", "17"]
    assert "Total params: 2,481" in text
    with_shape = model.summary(input_shape=(20,), print_fn=None)
    assert "(None, 20, 16)" in with_shape
    printed = []
    assert model.summary(print_fn=printed.append) is None and printed == [text]
    mlp = Sequential([elman.Dense(3, 4), elman.ReLU(), elman.Dense(4, 2)])
    assert "(None, 4)" in mlp.summary(print_fn=None)


# -- variable lengths ----------------------------------------------------------------------------

def _ragged_tokens(seed=0):
    g = rng(seed)
    lengths = np.array([6, 2, 4, 1, 5])
    seqs = [g.integers(1, 20, size=n) for n in lengths]
    return seqs, lengths


def _token_model(bidirectional=False):
    layers = [elman.Embedding(20, 4, seed=0, dtype=np.float64),
              elman.GRU(4, 5, seed=1, bidirectional=bidirectional, dtype=np.float64)]
    layers.append(elman.LastBidirectional(5) if bidirectional else elman.Last())
    layers.append(elman.Dense(10 if bidirectional else 5, 1, seed=2, dtype=np.float64))
    return Sequential(layers, seed=0)


@pytest.mark.parametrize("bidirectional", [False, True])
def test_lengths_and_mask_value_match_each_sample_alone(bidirectional):
    seqs, lengths = _ragged_tokens()
    T = lengths.max()
    model = _token_model(bidirectional)
    alone = np.concatenate([model.predict(s[None, :]) for s in seqs])
    post = np.zeros((len(seqs), T), np.int64)
    pre = np.zeros((len(seqs), T), np.int64)
    for n, s in enumerate(seqs):
        post[n, :len(s)] = s
        pre[n, T - len(s):] = s
    np.testing.assert_allclose(model.predict(post, lengths=lengths), alone, atol=1e-12)
    np.testing.assert_allclose(model.predict(post, mask_value=0), alone, atol=1e-12)
    np.testing.assert_allclose(model.predict(pre, mask_value=0), alone, atol=1e-12)
    np.testing.assert_allclose(model.predict(pre, mask_value=0, batch_size=2), alone, atol=1e-12)
    # without lengths the padding is read as data
    assert not np.allclose(model.predict(post), alone)


def test_mask_value_on_float_sequences_and_per_step_outputs():
    g = rng(3)
    lengths = np.array([3, 5, 1, 4])
    seqs = [g.standard_normal((n, 2)) for n in lengths]
    model = Sequential([elman.LSTM(2, 4, seed=1, dtype=np.float64),
                        elman.Dense(4, 3, seed=2, dtype=np.float64)])
    T = 5
    pre = np.full((4, T, 2), np.nan)
    post = np.full((4, T, 2), -1.0)
    for n, s in enumerate(seqs):
        pre[n, T - len(s):] = s
        post[n, :len(s)] = s
    out_pre = model.predict(pre, mask_value=np.nan)
    out_post = model.predict(post, mask_value=-1.0)
    for n, s in enumerate(seqs):
        alone = model.predict(s[None])[0]
        np.testing.assert_allclose(out_pre[n, T - len(s):], alone, atol=1e-12)
        np.testing.assert_allclose(out_post[n, :len(s)], alone, atol=1e-12)


def test_fit_with_lengths_ignores_padding():
    """Padding (even NaN) neither trains the model nor counts in the per-step loss."""
    g = rng(4)
    lengths = np.array([4, 2, 3, 1, 4, 2])
    x = g.standard_normal((6, 4, 1))
    y = g.standard_normal((6, 4, 1))
    pad = np.arange(4)[None, :] >= lengths[:, None]
    x2, y2 = x.copy(), y.copy()
    x2[pad], y2[pad] = np.nan, 100.0

    def trained(xx, yy):
        model = Sequential([elman.RNN(1, 3, seed=1, dtype=np.float64),
                            elman.Dense(3, 1, seed=2, dtype=np.float64)], seed=0)
        model.compile("adam", "mse", ["mae"])
        h = model.fit(xx, yy, epochs=2, batch_size=3, lengths=lengths, verbose=0)
        return model, h

    (m1, h1), (m2, h2) = trained(x, y), trained(x2, y2)
    assert h1.history == h2.history
    assert all(np.array_equal(a, b) for a, b in zip(m1.get_weights(), m2.get_weights()))
    # the masked loss is the mean over valid steps only
    pred = m1.predict(x, lengths=lengths)
    expected = np.mean((pred - y)[~pad] ** 2)
    assert m1.evaluate(x2, y2, lengths=lengths, batch_size=6)[0] == pytest.approx(expected)


def test_fit_with_mask_value_on_tokens():
    x, y = sentiment_tokens(n=300, steps=10, vocab=20)
    g = rng(5)
    cut = g.integers(3, 11, size=len(x))
    padded = np.where(np.arange(10)[None, :] < cut[:, None], x, 0)        # post-padding
    model = _token_model()                               # a logit output
    model.compile("adam", elman.BCEWithLogitsLoss(), ["accuracy"])
    h = model.fit(padded, y, epochs=2, batch_size=32, mask_value=0, validation_split=0.2,
                  verbose=0)
    assert math.isfinite(h.history["val_loss"][-1])
    split = int(len(x) * 0.8)
    logits = model.predict(padded[split:], mask_value=0)
    assert h.history["val_accuracy"][-1] == pytest.approx(np.mean((logits[:, 0] > 0) == y[split:]))
    same = _token_model()
    same.compile("adam", elman.BCEWithLogitsLoss(), ["accuracy"])
    same.fit(padded, y, epochs=2, batch_size=32, lengths=cut, validation_split=0.2, verbose=0)
    assert all(np.array_equal(a, b) for a, b in zip(model.get_weights(), same.get_weights()))


# -- gradient checks -----------------------------------------------------------------------------

def test_gradcheck_sequential_float64():
    x = rng().standard_normal((3, 4, 2))
    model = Sequential([elman.LSTM(2, 3, dtype=np.float64, seed=1),
                        elman.LayerNorm(3, dtype=np.float64),
                        elman.GRU(3, 3, dtype=np.float64, seed=2, batch_first=True),
                        elman.Dropout(0.3, seed=4),
                        elman.MeanPool(),
                        elman.Dense(3, 2, activation="tanh", dtype=np.float64, seed=3)])
    for lengths in (None, np.array([4, 2, 3])):
        errors = gradcheck(model, (x,), kwargs={"lengths": lengths})
        assert "input[0]" in errors and "0.weight_ih_l0" in errors
        assert max(errors.values()) < GRAD_TOL, errors


def test_gradcheck_sequential_with_embedding_and_per_step_output():
    tokens = rng().integers(0, 6, size=(3, 5))
    model = Sequential([elman.Embedding(6, 3, dtype=np.float64, seed=0),
                        elman.RNN(3, 4, dtype=np.float64, seed=1, bidirectional=True),
                        elman.Dense(8, 2, dtype=np.float64, seed=2)])
    assert model.backward(np.ones_like(model(tokens))) is None
    errors = gradcheck(model, (tokens,), kwargs={"lengths": np.array([5, 1, 3])})
    assert sorted(errors)[0] == "0.weight" and "input[0]" not in errors
    assert max(errors.values()) < GRAD_TOL, errors


# -- errors --------------------------------------------------------------------------------------

def test_compile_errors():
    model = binary_model()
    with pytest.raises(ValueError, match=r"unknown loss 'cross_entropy'; known names: \["):
        model.compile("adam", "cross_entropy")
    with pytest.raises(ValueError, match=r"unknown optimizer 'adamax'; known names: \['adagrad'"):
        model.compile("adamax", "mse")
    with pytest.raises(ValueError, match=r"unknown metric 'f1'; known names: \['acc', 'accuracy'"):
        model.compile("adam", "mse", ["f1"])
    with pytest.raises(ValueError, match="a loss is required"):
        model.compile("adam")
    with pytest.raises(ValueError, match="clipnorm must be a number > 0"):
        model.compile("adam", "mse", clipnorm=0)
    with pytest.raises(ValueError, match="metric names must be unique"):
        model.compile("adam", "mse", ["mae", "mae"])


def test_fit_argument_errors():
    x, y = sign_of_sum_data(n=100, steps=3)
    model = binary_model(cell=elman.RNN)
    with pytest.raises(RuntimeError, match=r"You must compile the model before calling fit\(\)"):
        model.fit(x, y)
    model.compile("sgd", "binary_crossentropy")
    with pytest.raises(ValueError, match="x has 100 samples but y has 99"):
        model.fit(x, y[:99])
    with pytest.raises(ValueError, match="validation_data: x has 100 samples but "
                                         "validation_data: y has 3"):
        model.fit(x, y, validation_data=(x, y[:3]), verbose=0)
    for bs in (0, -4, 2.5):
        with pytest.raises(ValueError, match=f"batch_size must be a positive integer, got "
                                             f"{bs}"):
            model.fit(x, y, batch_size=bs)
    for split in (1.0, -0.1, 1.5):
        with pytest.raises(ValueError, match=r"validation_split must be a number in \[0, 1\), "
                                             f"got {split}"):
            model.fit(x, y, validation_split=split)
    with pytest.raises(ValueError, match="validation_split=0.995 leaves 0 training and 100 "
                                         "validation samples"):
        model.fit(x, y, validation_split=0.995)
    with pytest.raises(ValueError, match="give lengths or mask_value, not both"):
        model.fit(x, y, lengths=np.full(100, 3), mask_value=0.0)
    with pytest.raises(ValueError, match=r"Sequential: lengths must be in \[1, 3\]"):
        model.fit(x, y, lengths=np.full(100, 4))
    padded = x.copy()
    padded[17] = 0.0
    with pytest.raises(ValueError, match="sample 17 is all padding"):
        model.fit(padded, y, mask_value=0.0)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_data_is_refused_before_training(bad):
    x, y = sign_of_sum_data(n=40, steps=3)
    model = binary_model(cell=elman.RNN)
    model.compile("sgd", "binary_crossentropy")
    before = model.get_weights()
    x_bad = x.copy()
    x_bad[23, 1, 0] = bad
    with pytest.raises(ValueError, match=r"x contains NaN or infinite values: the first bad "
                                         r"sample is index 23 \(of 40\)"):
        model.fit(x_bad, y, verbose=0)
    y_bad = y.copy()
    y_bad[[31, 35]] = bad
    with pytest.raises(ValueError, match="y contains NaN or infinite values: the first bad "
                                         "sample is index 31"):
        model.fit(x, y_bad, verbose=0)
    with pytest.raises(ValueError, match="validation_data: x contains NaN .* index 23"):
        model.fit(x, y, validation_data=(x_bad, y), verbose=0)
    assert all(np.array_equal(a, b) for a, b in zip(before, model.get_weights()))
    assert model.epoch == 0


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path):
    x, y = sign_of_sum_data(n=40, steps=3)
    model = binary_model(cell=elman.RNN)
    model.compile("adam", "binary_crossentropy")
    path = tmp_path / "last.npz"

    class Poison(Callback):
        """Breaks the weights at the start of the third epoch."""
        def on_epoch_begin(self, epoch, logs=None):
            if epoch == 2:
                self.good = self.model.get_weights()
                self.model.parameters()[0].data[...] = np.nan

    poison = Poison()
    with pytest.raises(FloatingPointError, match=r"non-finite loss \(nan\) in epoch 3/5, "
                                                 r"batch 1/2"):
        model.fit(x, y, epochs=5, batch_size=32, callbacks=[poison, ModelCheckpoint(path)],
                  verbose=0)
    assert model.epoch == 2
    saved = elman.checkpoint.load(path)
    assert saved.epoch == 2
    assert all(np.array_equal(a, b) for a, b in zip(saved.get_weights(), poison.good))


def test_weights_broken_by_the_last_step_of_an_epoch_are_never_checkpointed(tmp_path):
    x, y = sign_of_sum_data(n=40, steps=3)
    model = binary_model(cell=elman.RNN)
    model.compile("adam", "binary_crossentropy")
    path = tmp_path / "ckpt-{epoch}.npz"

    class BreakAfterLastBatch(Callback):
        def on_batch_end(self, batch, logs=None):
            if self.model.epoch == 1 and batch == self.params["steps"] - 1:
                self.model.parameters()[1].data[0, 0] = np.inf

    with pytest.raises(FloatingPointError, match=r"training diverged in epoch 2/3: parameters "
                                                 r"\['0.weight_hh_l0'\]"):
        model.fit(x, y, epochs=3, batch_size=16,
                  callbacks=[BreakAfterLastBatch(), ModelCheckpoint(path)], verbose=0)
    assert sorted(os.listdir(tmp_path)) == ["ckpt-1.npz"]


# -- progress output -----------------------------------------------------------------------------

def test_verbose_lines_and_silence(capsys):
    x, y = sign_of_sum_data(n=20, steps=3)
    model = binary_model(cell=elman.RNN)
    model.compile("sgd", "binary_crossentropy", ["accuracy"])
    model.fit(x, y, epochs=2, batch_size=8, verbose=0)
    assert capsys.readouterr().out == ""
    model.fit(x, y, epochs=2, batch_size=8, validation_split=0.2, verbose=1)
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 2
    assert lines[0].startswith("Epoch 1/2 - ") and lines[1].startswith("Epoch 2/2 - ")
    assert all(k in lines[1] for k in ("loss: ", "accuracy: ", "val_loss: ", "val_accuracy: "))


def test_tqdm_bar_on_a_terminal_fits_80_columns(monkeypatch):
    tqdm = require("tqdm")
    import io
    import re
    import sys

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    out = Terminal()
    monkeypatch.setattr(sys, "stdout", out)
    monkeypatch.setenv("COLUMNS", "80")
    x, y = sign_of_sum_data(n=40, steps=3)
    model = binary_model(cell=elman.RNN)
    model.compile("sgd", "binary_crossentropy", metrics=["accuracy", "mae"])
    model.fit(x, y, epochs=2, batch_size=8, validation_split=0.2, verbose=1)
    # what the terminal shows: each \r redraws the line; the last drawing of each line stays
    lines = [re.sub(r"\x1b\[[0-9;]*[A-Za-z]", "", ln.split("\r")[-1])
             for ln in out.getvalue().split("\n") if ln.strip("\r ")]
    assert len(lines) == 2 and lines[0].startswith("Epoch 1/2 4/4")
    for line in lines:
        assert len(line) <= 80, line
        # the training and validation scores of the epoch, shortened to fit
        assert all(k in line for k in ("loss ", "val_loss ", "acc", "val_acc")), line
    drawn = [ln for chunk in out.getvalue().split("\n") for ln in chunk.split("\r") if ln]
    assert all(len(ln) <= 80 for ln in drawn)         # the running bar, too
    assert tqdm is not None


def test_progress_lines_inside_long_epochs_when_not_on_a_terminal(monkeypatch, capsys):
    from elman import model as model_module
    monkeypatch.setattr(model_module._ProgressLogger, "every", 0.0)   # every batch is "long"
    x, y = sign_of_sum_data(n=20, steps=3)
    model = binary_model(cell=elman.RNN)
    model.compile("sgd", "binary_crossentropy")
    model.fit(x, y, epochs=1, batch_size=8, validation_split=0.2, verbose=1)
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].startswith("Epoch 1/1 - batch 1/2 - loss: ")
    assert any("validation batch 1/1" in ln for ln in lines)
    assert lines[-1].startswith("Epoch 1/1 - ") and "val_loss: " in lines[-1]


# -- checkpoints and resuming --------------------------------------------------------------------

def _resume_model():
    model = Sequential([elman.LSTM(2, 8, num_layers=2, dropout=0.3, seed=1), elman.Last(),
                        elman.Dropout(0.2, seed=5),
                        elman.Dense(8, 1, activation="sigmoid", seed=2)], seed=0)
    model.compile(elman.Adam(model.parameters(), lr=0.01), "binary_crossentropy", ["accuracy"])
    return model


def test_resume_2_plus_2_equals_4_bit_exact(tmp_path):
    """2 epochs, save, load into a fresh object, 2 more with initial_epoch=2 == 4 epochs straight
    (shuffling, dropout in and after the LSTM, Adam's moments and step count, validation)."""
    g = rng(7)
    x = g.standard_normal((90, 6, 2)).astype(np.float32)
    y = (x.sum(axis=(1, 2)) > 0).astype(np.float32)
    kw = dict(batch_size=16, validation_split=0.2, shuffle=True, verbose=0)

    straight = _resume_model()
    h4 = straight.fit(x, y, epochs=4, **kw)

    first = _resume_model()
    first.fit(x, y, epochs=2, **kw)
    path = tmp_path / "run.npz"
    elman.checkpoint.save(first, path)
    del first
    resumed = elman.checkpoint.load(path)
    assert isinstance(resumed, Sequential) and resumed.epoch == 2
    assert resumed.compile_config() == straight.compile_config()
    h2 = resumed.fit(x, y, epochs=4, initial_epoch=resumed.epoch, **kw)

    assert resumed.epoch == 4
    for (name, a), (_, b) in zip(straight.named_parameters(), resumed.named_parameters()):
        assert np.array_equal(a.data, b.data), name
    for key in h4.history:
        assert h4.history[key][2:] == h2.history[key], key
    # and the optimizers agree to the bit as well
    sa, sb = straight.optimizer.state_dict(), resumed.optimizer.state_dict()
    assert sa["step"] == sb["step"]
    assert all(np.array_equal(a, b) for k in sa["state"] for a, b in zip(sa["state"][k],
                                                                         sb["state"][k]))


def test_save_load_round_trip_predictions_and_compile_config(tmp_path):
    model = Sequential([elman.Embedding(20, 4, seed=0, padding_idx=0), elman.GRU(4, 6, seed=1),
                        elman.MeanPool(), elman.Dense(6, 3, seed=2)], seed=0)
    model.compile("rmsprop", elman.CrossEntropyLoss(label_smoothing=0.1), ["accuracy"],
                  clipnorm=1.0)
    tokens = rng().integers(0, 20, size=(8, 5))
    labels = rng().integers(0, 3, size=8)
    model.fit(tokens, labels, epochs=1, verbose=0)
    path = tmp_path / "m.npz"
    elman.save(model, path) if hasattr(elman, "save") else elman.checkpoint.save(model, path)
    loaded = elman.checkpoint.load(path)
    np.testing.assert_array_equal(loaded.predict(tokens), model.predict(tokens))
    assert loaded.compile_config() == model.compile_config()
    assert loaded.compile_config()["loss"] == {
        "class": "CrossEntropyLoss",
        "config": {"weight": None, "ignore_index": -100, "reduction": "mean",
                   "label_smoothing": 0.1}}
    assert loaded.loss.label_smoothing == 0.1
    assert loaded.evaluate(tokens, labels) == model.evaluate(tokens, labels)


def test_nested_sequential_and_config_round_trip(tmp_path):
    x = rng().standard_normal((4, 5, 2))
    lengths = np.array([5, 2, 4, 3])
    inner = Sequential([elman.GRU(3, 3, dtype=np.float64, seed=2, batch_first=True),
                        elman.Last(batch_first=True)])
    model = Sequential([elman.LSTM(2, 3, dtype=np.float64, seed=1), inner,
                        elman.Dense(3, 1, dtype=np.float64, seed=3)])
    assert [n for n, _ in model.named_parameters()][4] == "1.0.weight_ih_l0"
    flat = Sequential([model[0], inner[0], inner[1], model[2]])
    np.testing.assert_allclose(model(x, lengths=lengths), flat(x, lengths=lengths), atol=1e-13)
    errors = gradcheck(model, (x,), kwargs={"lengths": lengths})
    assert max(errors.values()) < GRAD_TOL, errors
    path = tmp_path / "nested.npz"
    elman.checkpoint.save(model, path)
    np.testing.assert_array_equal(elman.checkpoint.load(path)(x, lengths=lengths),
                                  model(x, lengths=lengths))


def test_nested_model_without_sequence_layers_gets_no_lengths():
    """A nested Sequential of step-wise layers after a picker must not receive lengths."""
    rng = np.random.default_rng(0)
    head = Sequential([elman.Dense(4, 3, activation="relu"), elman.Dense(3, 1)])
    model = Sequential([elman.GRU(2, 4), elman.Last(), head], seed=0)
    model.compile("adam", "mse")
    x = rng.standard_normal((6, 5, 2)).astype(np.float32)
    lengths = np.array([5, 2, 3, 1, 4, 5])
    pred = model.predict(x, lengths=lengths)
    alone = [model.predict(x[i:i + 1, :n]) for i, n in enumerate(lengths)]
    np.testing.assert_allclose(pred, np.concatenate(alone), rtol=1e-5, atol=1e-6)
    model.fit(x, rng.standard_normal((6, 1)), epochs=1, lengths=lengths, verbose=0)
