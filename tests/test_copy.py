"""Layers and models pickle and deep-copy at any moment, also between a compiled forward and
its backward (the cache names its kernel module rather than holding it), and the copy goes on
exactly like the original."""
import copy
import pickle

import numpy as np
import pytest

import elman


@pytest.mark.parametrize("fast", [True, False])
@pytest.mark.parametrize("make", [
    lambda: elman.RNN(3, 5, num_layers=2, seed=0),
    lambda: elman.GRU(3, 5, bidirectional=True, seed=0),
    lambda: elman.LSTM(3, 5, proj_size=2, seed=0),
], ids=["rnn", "gru-bi", "lstm-proj"])
@pytest.mark.parametrize("how", ["deepcopy", "pickle"])
def test_copy_between_forward_and_backward(fast, make, how):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((6, 4, 3)).astype(np.float32)
    with elman.fast.use(fast):
        layer = make()
        out, _ = layer(x, lengths=[6, 5, 3, 2])
        twin = copy.deepcopy(layer) if how == "deepcopy" else pickle.loads(pickle.dumps(layer))
        dout = rng.standard_normal(out.shape).astype(np.float32)
        dx, _ = layer.backward(dout, None)
        dx_twin, _ = twin.backward(dout, None)
    np.testing.assert_array_equal(dx, dx_twin)
    for (name, p), (_, q) in zip(layer.named_parameters(), twin.named_parameters()):
        np.testing.assert_array_equal(p.grad, q.grad, err_msg=name)


def test_a_copied_model_trains_on_exactly_like_the_original():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((40, 7, 3)).astype(np.float32)
    y = x.sum(axis=(1, 2))[:, None]
    model = elman.Sequential([elman.LSTM(3, 8, seed=0), elman.Last(), elman.Dropout(0.2, seed=3),
                              elman.Dense(8, 1, seed=1)], seed=2)
    model.compile("adam", "mse")
    model.fit(x, y, epochs=1, batch_size=8, verbose=0)
    best = copy.deepcopy(model)                       # the habit: keep the best weights
    for m in (model, best):
        m.fit(x, y, epochs=3, initial_epoch=1, batch_size=8, verbose=0)
    for a, b in zip(model.get_weights(), best.get_weights()):
        np.testing.assert_array_equal(a, b)
