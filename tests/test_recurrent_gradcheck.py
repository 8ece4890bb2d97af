"""Float64 finite-difference checks of the recurrent layers over a covering grid of options:
every option appears with every cell, and together with the others it interacts with."""
import zlib

import numpy as np
import pytest

import elman

KINDS = {
    "rnn_tanh": lambda **k: elman.RNN(2, 3, **k),
    "rnn_relu": lambda **k: elman.RNN(2, 3, nonlinearity="relu", **k),
    "gru": lambda **k: elman.GRU(2, 3, **k),
    "gru_classic": lambda **k: elman.GRU(2, 3, reset_after=False, **k),
    "lstm": lambda **k: elman.LSTM(2, 3, **k),
    "lstm_proj": lambda **k: elman.LSTM(2, 3, proj_size=2, **k),
}
# (num_layers, bidirectional, bias, batch_first, unbatched, initial states, lengths)
GRID = [
    (1, False, True, False, False, False, False),
    (2, True, True, True, False, True, True),
    (3, False, False, False, False, True, True),
    (1, True, True, False, True, True, False),
    (2, False, True, True, False, False, True),
    (1, True, False, True, False, True, False),
    (3, True, True, False, False, False, True),
]
T, N = 4, 3


def _inputs(layer, rng, unbatched, with_state, batch_first):
    D = 2 if layer.bidirectional else 1
    P = getattr(layer, "proj_size", 0) or layer.hidden_size
    lead = () if unbatched else (N,)
    x = rng.standard_normal(((N, T) if batch_first else (T,) + lead) + (2,)) if not unbatched \
        else rng.standard_normal((T, 2))
    if not with_state:
        return (x,)
    h0 = rng.standard_normal((D * layer.num_layers,) + lead + (P,))
    if isinstance(layer, elman.LSTM):
        c0 = rng.standard_normal((D * layer.num_layers,) + lead + (layer.hidden_size,))
        return (x, (h0, c0))
    return (x, h0)


@pytest.mark.parametrize("kind", list(KINDS))
@pytest.mark.parametrize("config", GRID, ids=lambda c: "L{}-{}-{}-{}-{}-{}-{}".format(
    c[0], "bi" if c[1] else "uni", "bias" if c[2] else "nobias", "bf" if c[3] else "tf",
    "unbatched" if c[4] else "batched", "h0" if c[5] else "noh0", "len" if c[6] else "full"))
def test_layer_gradcheck(kind, config):
    layers, bi, bias, batch_first, unbatched, with_state, with_lengths = config
    rng = np.random.default_rng(zlib.crc32(repr((kind, config)).encode()))
    layer = KINDS[kind](num_layers=layers, bidirectional=bi, bias=bias, batch_first=batch_first,
                        dtype=np.float64, seed=0)
    inputs = _inputs(layer, rng, unbatched, with_state, batch_first)
    kwargs = {"lengths": [T, 2, 1]} if with_lengths else {}
    errors = elman.gradcheck(layer, inputs, kwargs=kwargs)
    expected = {n for n, _ in layer.named_parameters()} | {"input[0]"}
    if with_state:
        expected |= {"input[1][0]", "input[1][1]"} if isinstance(layer, elman.LSTM) \
            else {"input[1]"}
    assert set(errors) == expected
    assert max(errors.values()) < 1e-7, errors


@pytest.mark.parametrize("kind", list(KINDS))
def test_layer_gradcheck_with_dropout_in_training_mode(kind):
    """Inter-layer dropout is part of the graph: its masks are replayed by gradcheck."""
    rng = np.random.default_rng(5)
    layer = KINDS[kind](num_layers=3, bidirectional=True, dropout=0.4, dtype=np.float64, seed=0)
    x = rng.standard_normal((T, N, 2))
    errors = elman.gradcheck(layer, (x,), kwargs={"lengths": [3, T, 1]})
    assert max(errors.values()) < 1e-7, errors


def test_gradcheck_detects_a_wrong_gradient():
    """The checker itself can fail: break one parameter gradient and it reports it."""
    layer = elman.GRU(2, 3, dtype=np.float64, seed=0)
    original = layer.backward

    def broken_backward(*grads):
        result = original(*grads)
        layer.weight_hh_l0.grad[0, 0] += 0.1
        return result

    layer.backward = broken_backward
    errors = elman.gradcheck(layer, (np.random.default_rng(0).standard_normal((T, N, 2)),))
    assert errors["weight_hh_l0"] > 1e-3
    assert errors["weight_ih_l0"] < 1e-7


def test_gradcheck_refuses_float32_modules():
    with pytest.raises(TypeError, match="gradcheck needs a float64 module"):
        elman.gradcheck(elman.RNN(2, 3), (np.zeros((T, N, 2)),))
