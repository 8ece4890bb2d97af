"""elman.keras against real Keras: the same layers and models, given the same weights through
get_weights/set_weights (Keras' layout on both sides), compute the same outputs (float32,
1e-5 relative) -- recurrent layers alone (return_sequences, return_state, go_backwards, masks),
Bidirectional with every merge mode, whole Sequential models with masking and pre-padding --
and one SGD step of fit ends at the same weights.

Keras runs on its torch backend (the CPU wheel the test extra installs)."""
import os

import numpy as np
import pytest

os.environ["KERAS_BACKEND"] = "torch"       # before keras is imported; numpy's needs scipy

from _torch import require  # noqa: E402

require("torch")
keras = require("keras")

import elman  # noqa: E402
from elman import keras as face  # noqa: E402
from _tiny_imdb import run_seed001_example  # noqa: E402

pytestmark = pytest.mark.filterwarnings(
    "ignore:__array__ implementation doesn't accept a copy keyword")   # Keras' variables

KINDS = [("SimpleRNN", {}), ("SimpleRNN", {"activation": "relu"}), ("GRU", {}),
         ("GRU", {"reset_after": False}), ("LSTM", {})]


def numpy(a):
    return np.asarray(keras.ops.convert_to_numpy(a))


def assert_close(ours, theirs, tol=1e-5, what=""):
    """|ours - theirs| <= tol * max(1, max |theirs|), element-wise."""
    theirs = numpy(theirs)
    scale = max(1.0, float(np.max(np.abs(theirs), initial=0.0)))
    np.testing.assert_allclose(np.asarray(ours), theirs, rtol=0, atol=tol * scale, err_msg=what)


def random_weights(keras_thing, rng):
    """Non-trivial weights everywhere (Keras starts biases at zero)."""
    weights = [rng.uniform(-0.6, 0.6, w.shape).astype(w.dtype)
               for w in keras_thing.get_weights()]
    keras_thing.set_weights(weights)
    return weights


def both(kind, kwargs, **extra):
    return (getattr(keras.layers, kind)(5, **kwargs, **extra),
            getattr(face.layers, kind)(5, **kwargs, **extra))


def right_padded_mask(rng, n, t):
    lengths = rng.integers(1, t + 1, size=n)
    lengths[0] = t
    return np.arange(t)[None, :] < lengths[:, None]


# -- single layers --------------------------------------------------------------------------

# go_backwards with return_sequences on masked input is refused (Keras' mask does not follow the
# reversed outputs; test_keras_face.py checks the refusal)
FLAGS = [(seq, back, masked) for seq in (False, True) for back in (False, True)
         for masked in (False, True) if not (seq and back and masked)]


@pytest.mark.parametrize("kind,kwargs", KINDS)
@pytest.mark.parametrize("return_sequences,go_backwards,masked", FLAGS)
def test_recurrent_layer_matches_keras(kind, kwargs, return_sequences, go_backwards, masked):
    rng = np.random.default_rng(len(kind) + 3 * return_sequences + 5 * go_backwards)
    theirs, ours = both(kind, kwargs, return_sequences=return_sequences, return_state=True,
                        go_backwards=go_backwards)
    x = rng.standard_normal((4, 6, 3)).astype(np.float32)
    mask = right_padded_mask(rng, 4, 6) if masked else None
    theirs(x)
    ours.build((None, None, 3))
    ours.set_weights(random_weights(theirs, rng))
    expected = theirs(x, mask=mask)
    got = ours(x, mask=mask)
    assert len(got) == len(expected)
    output, states = got[0], got[1:]
    if masked and return_sequences:       # Keras carries the last output over padded steps
        keep = mask[:, :, None]
        assert_close(np.where(keep, output, 0), np.where(keep, numpy(expected[0]), 0),
                     what="output")
    else:
        assert_close(output, expected[0], what="output")
    for k, (a, b) in enumerate(zip(states, expected[1:])):
        assert_close(a, b, what=f"state {k}")


@pytest.mark.parametrize("kind,kwargs", KINDS)
@pytest.mark.parametrize("merge_mode", ["concat", "sum", "mul", "ave"])
def test_bidirectional_matches_keras(kind, kwargs, merge_mode):
    rng = np.random.default_rng(len(merge_mode))
    for return_sequences, masked in ((False, False), (True, False), (False, True),
                                     (True, True)):
        inner_k, inner_f = both(kind, kwargs, return_sequences=return_sequences)
        theirs = keras.layers.Bidirectional(inner_k, merge_mode=merge_mode)
        ours = face.layers.Bidirectional(inner_f, merge_mode=merge_mode)
        x = rng.standard_normal((4, 6, 3)).astype(np.float32)
        mask = right_padded_mask(rng, 4, 6) if masked else None
        theirs(x)
        ours.build((None, None, 3))
        ours.set_weights(random_weights(theirs, rng))
        expected, got = numpy(theirs(x, mask=mask)), ours(x, mask=mask)
        if masked and return_sequences:
            keep = mask[:, :, None]
            got, expected = np.where(keep, got, 0), np.where(keep, expected, 0)
        assert_close(got, expected, what=f"{return_sequences=}, {masked=}")


def test_bidirectional_return_state_matches_keras():
    rng = np.random.default_rng(7)
    theirs = keras.layers.Bidirectional(keras.layers.LSTM(4, return_state=True))
    ours = face.layers.Bidirectional(face.layers.LSTM(4, return_state=True))
    x = rng.standard_normal((3, 5, 2)).astype(np.float32)
    theirs(x)
    ours.build((None, None, 2))
    ours.set_weights(random_weights(theirs, rng))
    expected, got = theirs(x), ours(x)
    assert len(got) == len(expected) == 5          # output, forward h, c, backward h, c
    for a, b in zip(got, expected):
        assert_close(a, b)


def test_default_initialisation_follows_keras_rules():
    """Same shapes, glorot/orthogonal/zeros (+1 forget bias) as Keras' defaults."""
    ours = face.layers.LSTM(8)
    ours.build((None, None, 3))
    kernel, recurrent, bias = ours.get_weights()
    theirs = keras.layers.LSTM(8)
    theirs(np.zeros((1, 2, 3), np.float32))
    assert [w.shape for w in theirs.get_weights()] == [kernel.shape, recurrent.shape, bias.shape]
    np.testing.assert_array_equal(bias, theirs.get_weights()[2])       # 0 | 1 | 0 | 0
    assert np.abs(kernel).max() <= np.sqrt(6 / (3 + 32))
    np.testing.assert_allclose(recurrent @ recurrent.T, np.eye(8), atol=1e-5)


# -- whole models ---------------------------------------------------------------------------

def seed_models(mask_zero=False):
    """Seed 001's stack, in Keras and in elman.keras."""
    def stack(lib):
        L = lib.layers
        return [L.Embedding(30, 8, mask_zero=mask_zero), L.SimpleRNN(6, return_sequences=True),
                L.SimpleRNN(6), L.Dense(1, activation="sigmoid")]
    theirs = keras.Sequential([keras.Input((None,), dtype="int32")] + stack(keras))
    return theirs, face.Sequential(stack(face))


def pre_padded_tokens(rng, n=6, t=9):
    x = rng.integers(1, 30, size=(n, t))
    for i, length in enumerate(rng.integers(2, t + 1, size=n)):
        x[i, :t - length] = 0                                  # Keras' default: pre-padding
    return x


@pytest.mark.parametrize("mask_zero", [False, True])
def test_seed_model_weights_load_into_keras(mask_zero):
    rng = np.random.default_rng(1)
    theirs, ours = seed_models(mask_zero)
    for w, p in zip(ours.get_weights(), ours.parameters()):     # non-zero biases too
        p.data[...] = rng.uniform(-0.5, 0.5, w.shape)
    theirs.set_weights(ours.get_weights())
    x = pre_padded_tokens(rng)
    assert_close(ours.predict(x), theirs.predict(x, verbose=0))
    assert_close(ours(x), theirs(x))
    converted = elman.from_keras(theirs)                      # and back through the interop
    assert_close(converted.predict(x, mask_value=0 if mask_zero else None), ours.predict(x))


MODELS = {
    "bidirectional_lstm_mask_zero": lambda L, k: [
        k.Input((None,), dtype="int32"), L.Embedding(30, 6, mask_zero=True),
        L.Bidirectional(L.LSTM(5)), L.Dense(2, activation="softmax")],
    "masking_gru_timedistributed": lambda L, k: [
        k.Input((None, 3)), L.Masking(0.0), L.GRU(4, return_sequences=True),
        L.TimeDistributed(L.Dense(2))],
    "stacked_bidirectional_sum": lambda L, k: [
        k.Input((None,), dtype="int32"), L.Embedding(30, 6, mask_zero=True),
        L.Bidirectional(L.GRU(4, return_sequences=True, reset_after=False), merge_mode="sum"),
        L.LSTM(3), L.Dense(1)],
    "go_backwards_dense_per_step": lambda L, k: [
        k.Input((None, 3)), L.SimpleRNN(4, go_backwards=True, return_sequences=True),
        L.Dense(2, activation="tanh"), L.LSTM(3), L.Dense(2), L.Activation("softmax")],
}


def model_pair(name):
    build = MODELS[name]
    return (keras.Sequential(build(keras.layers, keras)),
            face.Sequential(build(face.layers, face)))


def model_input(name, rng):
    if "mask_zero" in name or "sum" in name:
        return pre_padded_tokens(rng)
    x = rng.standard_normal((6, 7, 3)).astype(np.float32)
    if name.startswith("masking"):
        x[1, :3] = 0                                     # pre-padded
        x[2, 5:] = 0                                     # post-padded
    return x


@pytest.mark.parametrize("name", sorted(MODELS))
def test_models_match_keras(name):
    rng = np.random.default_rng(len(name))
    theirs, ours = model_pair(name)
    ours.set_weights(random_weights(theirs, rng))
    x = model_input(name, rng)
    expected, got = theirs.predict(x, verbose=0), ours.predict(x)
    if name.startswith("masking"):                  # per-step outputs: compare the real steps
        keep = np.any(x != 0, axis=-1)[:, :, None]
        expected, got = np.where(keep, expected, 0), np.where(keep, got, 0)
    assert_close(got, expected)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_one_sgd_step_matches_keras(name):
    """fit: one full-batch SGD step from the same weights ends at the same weights (the
    gradients, masks and pre-padding included, agree with Keras' autodiff; a masked per-step
    loss is averaged over the real steps in both)."""
    rng = np.random.default_rng(11)
    theirs, ours = model_pair(name)
    ours.set_weights(random_weights(theirs, rng))
    x = model_input(name, rng)
    out_shape = theirs.predict(x[:1], verbose=0).shape[1:]
    y = rng.uniform(0, 1, (len(x),) + out_shape).astype(np.float32)
    theirs.compile(optimizer=keras.optimizers.SGD(learning_rate=0.5), loss="mse")
    ours.compile(optimizer=face.optimizers.SGD(learning_rate=0.5), loss="mse")
    h_theirs = theirs.fit(x, y, batch_size=len(x), epochs=1, shuffle=False, verbose=0)
    h_ours = ours.fit(x, y, batch_size=len(x), epochs=1, shuffle=False, verbose=0)
    assert h_ours.history["loss"][0] == pytest.approx(h_theirs.history["loss"][0], rel=1e-5)
    for k, (a, b) in enumerate(zip(ours.get_weights(), theirs.get_weights())):
        assert_close(a, b, what=f"weight {k} after the step")


def test_seed001_example_model_loads_into_keras(monkeypatch, tmp_path):
    """The model examples/seed001_keras.py trains, its weights set into the same Keras model,
    predicts the same; so does its conversion back by elman.from_keras."""
    result = run_seed001_example(monkeypatch, tmp_path, ["--no-plots"])
    ours, (x_test, _) = result["model"], result["test"]
    L = keras.layers
    theirs = keras.Sequential([keras.Input((None,), dtype="int32"), L.Embedding(10000, 32),
                               L.SimpleRNN(32), L.Dense(1, activation="sigmoid")])
    theirs.set_weights(ours.get_weights())
    expected = theirs.predict(x_test, verbose=0)
    assert_close(ours.predict(x_test), expected)
    assert_close(elman.from_keras(theirs).predict(x_test), expected)


@pytest.mark.parametrize("kind,kwargs", KINDS[::2])
def test_stateful_layer_matches_keras(kind, kwargs):
    """Final states carry over to the next batch, row by row, until reset_states()."""
    rng = np.random.default_rng(5)
    theirs, ours = both(kind, kwargs, stateful=True, return_sequences=True)
    x = rng.standard_normal((3, 8, 2)).astype(np.float32)
    theirs(x[:, :4])
    theirs.reset_states()
    ours.build((None, None, 2))
    ours.set_weights(random_weights(theirs, rng))
    for part in (x[:, :4], x[:, 4:]):
        assert_close(ours(part), theirs(part))
    theirs.reset_states()
    ours.reset_states()
    assert_close(ours(x[:, 2:]), theirs(x[:, 2:]))


@pytest.mark.parametrize("loss", ["sparse_categorical_crossentropy", "categorical_crossentropy"])
def test_categorical_losses_on_softmax_match_keras(loss):
    """Keras' cross-entropies take probabilities: a softmax model trains as in Keras (loss,
    accuracy and one SGD step), per time step and masked too."""
    rng = np.random.default_rng(3)

    def build(lib):
        L = lib.layers
        return lib.Sequential([lib.Input((None, 3)), L.Masking(0.0),
                               L.GRU(4, return_sequences=True),
                               L.TimeDistributed(L.Dense(3, activation="softmax"))])
    theirs, ours = build(keras), build(face)
    ours.set_weights(random_weights(theirs, rng))
    x = rng.standard_normal((6, 5, 3)).astype(np.float32)
    x[1, :2] = 0
    labels = rng.integers(0, 3, (6, 5))
    y = labels if loss.startswith("sparse") else face.utils.to_categorical(labels, 3)
    if not loss.startswith("sparse"):
        np.testing.assert_array_equal(y, keras.utils.to_categorical(labels, 3))
    theirs.compile(optimizer=keras.optimizers.SGD(learning_rate=0.5), loss=loss,
                   metrics=["acc"])
    ours.compile(optimizer=face.optimizers.SGD(learning_rate=0.5), loss=loss, metrics=["acc"])
    for got, expected in zip(ours.evaluate(x, y, verbose=0), theirs.evaluate(x, y, verbose=0)):
        assert got == pytest.approx(expected, rel=1e-5)
    theirs.fit(x, y, batch_size=6, epochs=1, shuffle=False, verbose=0)
    ours.fit(x, y, batch_size=6, epochs=1, shuffle=False, verbose=0)
    for a, b in zip(ours.get_weights(), theirs.get_weights()):
        assert_close(a, b)


@pytest.mark.parametrize("kind,kwargs", KINDS)
def test_layers_without_bias_match_keras(kind, kwargs):
    rng = np.random.default_rng(9)
    theirs, ours = both(kind, kwargs, use_bias=False, return_sequences=True)
    dense_k, dense_f = keras.layers.Dense(2, use_bias=False), face.layers.Dense(2, use_bias=False)
    x = rng.standard_normal((3, 4, 2)).astype(np.float32)
    dense_k(theirs(x))
    ours.build((None, None, 2))
    dense_f.build((None, None, 5))
    ours.set_weights(random_weights(theirs, rng))
    dense_f.set_weights(random_weights(dense_k, rng))
    assert [w.shape for w in ours.get_weights()] == [w.shape for w in theirs.get_weights()]
    assert_close(dense_f(ours(x)), dense_k(theirs(x)))
