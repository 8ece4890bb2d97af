"""Tests for elman.layers: gradient checks, PyTorch parity, dropout statistics, bad input."""
import numpy as np
import pytest

from elman.gradcheck import gradcheck
from elman.layers import (Dense, Dropout, Embedding, LastBidirectional, Last, LayerNorm, Linear,
                          LogSoftmax, MeanPool, ReLU, Sigmoid, Softmax, Tanh)

from _torch import require_torch

GRAD_TOL = 1e-7         # a correct float64 backward gives ~1e-9; a wrong one ~1e-2
ACTIVATIONS = [None, "linear", "tanh", "sigmoid", "relu", "softmax", "log_softmax"]
TOL = {np.float64: 1e-10, np.float32: 1e-5}


def rng(seed=0):
    return np.random.default_rng(seed)


def assert_gradcheck(module, inputs, kwargs=None, expected_keys=None):
    errors = gradcheck(module, inputs, kwargs=kwargs)
    if expected_keys is not None:
        assert sorted(errors) == sorted(expected_keys)
    assert max(errors.values()) < GRAD_TOL, errors


# -- gradient checks -------------------------------------------------------------------------

@pytest.mark.parametrize("shape", [(5,), (4, 5), (3, 4, 5)], ids=["1d", "2d", "3d"])
@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("bias", [True, False])
def test_linear_gradcheck(shape, activation, bias):
    layer = Linear(5, 3, bias=bias, activation=activation, dtype=np.float64, seed=1)
    keys = ["weight", "input[0]"] + (["bias"] if bias else [])
    assert_gradcheck(layer, (rng().standard_normal(shape),), expected_keys=keys)


def test_embedding_gradcheck_with_repeated_indices():
    idx = np.array([[0, 4, 5], [5, 5, 1], [3, 0, 3], [4, 1, 1]])    # (T, N), repeats
    for padding_idx in (None, 2):
        # with padding_idx the padding row is unused here: a finite difference would see it
        # move the output, but by definition (PyTorch's) it gets no gradient
        emb = Embedding(6, 3, padding_idx=padding_idx, dtype=np.float64, seed=0)
        errors = gradcheck(emb, (idx,))
        assert list(errors) == ["weight"] and errors["weight"] < GRAD_TOL


def test_embedding_padding_row_gets_no_gradient():
    emb = Embedding(6, 3, padding_idx=2, dtype=np.float64, seed=0)
    idx = np.array([[0, 2, 5], [5, 5, 1], [2, 0, 3], [4, 1, 2]])    # (T, N), repeats, padding
    emb(idx)
    emb.backward(np.ones(idx.shape + (3,)))
    counts = np.bincount(idx.ravel(), minlength=6).astype(float)
    counts[2] = 0                                                    # the padding row
    np.testing.assert_array_equal(emb.weight.grad, np.repeat(counts[:, None], 3, axis=1))


@pytest.mark.parametrize("p", [0.3, 1.0])
def test_dropout_gradcheck_train_mode(p):
    drop = Dropout(p, seed=3)
    assert_gradcheck(drop, (rng().standard_normal((4, 3, 5)),), expected_keys=["input[0]"])


@pytest.mark.parametrize("affine,bias", [(True, True), (True, False), (False, True)])
@pytest.mark.parametrize("normalized_shape", [4, (3, 4)])
def test_layernorm_gradcheck(affine, bias, normalized_shape):
    ln = LayerNorm(normalized_shape, elementwise_affine=affine, bias=bias, dtype=np.float64)
    r = rng(1)
    for p in ln.parameters():                 # move off ones/zeros so their gradients matter
        p.data[...] = r.standard_normal(p.shape)
    keys = ["input[0]"] + (["weight"] if affine else []) + (["bias"] if affine and bias else [])
    assert_gradcheck(ln, (r.standard_normal((2, 3, 4)) * 3 + 1,), expected_keys=keys)


@pytest.mark.parametrize("module", [Tanh(), Sigmoid(), ReLU(), Softmax(), Softmax(dim=0),
                                    LogSoftmax(), LogSoftmax(dim=1)], ids=repr)
def test_activation_gradcheck(module):
    assert_gradcheck(module, (rng().standard_normal((3, 4, 5)) * 2,), expected_keys=["input[0]"])


@pytest.mark.parametrize("picker", [Last, MeanPool, lambda batch_first: LastBidirectional(
    2, batch_first=batch_first)], ids=["Last", "MeanPool", "LastBidirectional"])
@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize("lengths", [None, np.array([4, 1, 3])])
def test_sequence_picker_gradcheck(picker, batch_first, lengths):
    x = rng().standard_normal((3, 4, 4) if batch_first else (4, 3, 4))
    assert_gradcheck(picker(batch_first=batch_first), (x,), kwargs={"lengths": lengths},
                     expected_keys=["input[0]"])


@pytest.mark.parametrize("picker", [Last(), MeanPool(), LastBidirectional(2)], ids=repr)
def test_sequence_picker_gradcheck_unbatched(picker):
    assert_gradcheck(picker, (rng().standard_normal((5, 4)),), expected_keys=["input[0]"])


# -- semantics of the pickers ----------------------------------------------------------------

def test_last_and_meanpool_pick_valid_steps():
    T, N, F = 5, 3, 2
    x = rng().standard_normal((T, N, F))
    lengths = np.array([5, 2, 1])
    np.testing.assert_array_equal(Last()(x, lengths), x[lengths - 1, np.arange(N)])
    np.testing.assert_array_equal(Last()(x), x[-1])
    np.testing.assert_array_equal(Last(batch_first=True)(x.transpose(1, 0, 2), lengths),
                                  x[lengths - 1, np.arange(N)])
    expected = np.stack([x[:n, i].mean(0) for i, n in enumerate(lengths)])
    np.testing.assert_allclose(MeanPool()(x, lengths), expected, rtol=1e-12)
    np.testing.assert_allclose(MeanPool(batch_first=True)(x.transpose(1, 0, 2), lengths),
                               expected, rtol=1e-12)
    np.testing.assert_allclose(MeanPool()(x), x.mean(0), rtol=1e-12)
    # padding beyond each length has no influence and gets no gradient
    x2 = x.copy()
    x2[2:, 1] = 1e6
    x2[1:, 2] = -1e6
    np.testing.assert_array_equal(Last()(x2, lengths), Last()(x, lengths))
    pool = MeanPool()
    np.testing.assert_allclose(pool(x2, lengths), expected, rtol=1e-12)
    dx = pool.backward(np.ones((N, F)))
    assert np.all(dx[2:, 1] == 0) and np.all(dx[1:, 2] == 0)
    np.testing.assert_allclose(dx[:2, 1], 0.5)


def test_pickers_match_torch_rnn_final_states():
    """Last gives h_n of a unidirectional RNN, LastBidirectional the concatenated h_n of a
    bidirectional one, on a packed variable-length batch (what Keras' Bidirectional returns)."""
    torch = require_torch()
    T, N, I, H = 6, 4, 3, 5
    lengths = np.array([6, 2, 4, 1])
    x = rng().standard_normal((N, T, I))
    torch.manual_seed(0)
    for bidirectional in (False, True):
        rnn = torch.nn.RNN(I, H, batch_first=True, bidirectional=bidirectional).double()
        packed = torch.nn.utils.rnn.pack_padded_sequence(
            torch.from_numpy(x), torch.from_numpy(lengths), batch_first=True,
            enforce_sorted=False)
        with torch.no_grad():
            out, h_n = rnn(packed)
        out, _ = torch.nn.utils.rnn.pad_packed_sequence(out, batch_first=True, total_length=T)
        out, h_n = out.numpy(), h_n.numpy()
        if bidirectional:
            got = LastBidirectional(H, batch_first=True)(out, lengths)
            np.testing.assert_allclose(got, np.concatenate([h_n[0], h_n[1]], axis=1), atol=1e-12)
        else:
            np.testing.assert_allclose(Last(batch_first=True)(out, lengths), h_n[0], atol=1e-12)


# -- PyTorch parity --------------------------------------------------------------------------

def _torch_functional(torch, activation):
    return {None: lambda z: z, "linear": lambda z: z, "tanh": torch.tanh,
            "sigmoid": torch.sigmoid, "relu": torch.relu,
            "softmax": lambda z: torch.softmax(z, -1),
            "log_softmax": lambda z: torch.log_softmax(z, -1)}[activation]


def _torch_dtype(torch, dtype):
    return torch.float64 if dtype == np.float64 else torch.float32


def _load_from_torch(module, torch_module):
    module.load_state_dict({k: v.detach().numpy() for k, v in torch_module.state_dict().items()})


def _assert_close(actual, expected, dtype):
    tol = TOL[dtype]
    assert actual.dtype == dtype
    np.testing.assert_allclose(actual, expected, rtol=tol, atol=tol)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("bias", [True, False])
def test_linear_matches_torch(dtype, activation, bias):
    torch = require_torch()
    torch.manual_seed(0)
    ref = torch.nn.Linear(7, 4, bias=bias).to(_torch_dtype(torch, dtype))
    layer = Linear(7, 4, bias=bias, activation=activation, dtype=dtype)
    _load_from_torch(layer, ref)
    r = rng(2)
    x = r.standard_normal((3, 5, 7)).astype(dtype)
    dy = r.standard_normal((3, 5, 4)).astype(dtype)
    xt = torch.from_numpy(x).requires_grad_()
    yt = _torch_functional(torch, activation)(ref(xt))
    yt.backward(torch.from_numpy(dy))
    y = layer(x)
    dx = layer.backward(dy)
    _assert_close(y, yt.detach().numpy(), dtype)
    _assert_close(dx, xt.grad.numpy(), dtype)
    _assert_close(layer.weight.grad, ref.weight.grad.numpy(), dtype)
    if bias:
        _assert_close(layer.bias.grad, ref.bias.grad.numpy(), dtype)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("padding_idx", [None, 0, -1])
def test_embedding_matches_torch(dtype, padding_idx):
    torch = require_torch()
    torch.manual_seed(0)
    ref = torch.nn.Embedding(9, 4, padding_idx=padding_idx).to(_torch_dtype(torch, dtype))
    emb = Embedding(9, 4, padding_idx=padding_idx, dtype=dtype)
    _load_from_torch(emb, ref)
    r = rng(3)
    idx = r.integers(0, 9, size=(6, 5))                  # (T, N) with repeats
    idx[0, :] = 0
    idx[-1, :] = 8
    dy = r.standard_normal((6, 5, 4)).astype(dtype)
    yt = ref(torch.from_numpy(idx))
    yt.backward(torch.from_numpy(dy))
    y = emb(idx)
    assert emb.backward(dy) is None
    _assert_close(y, yt.detach().numpy(), dtype)
    _assert_close(emb.weight.grad, ref.weight.grad.numpy(), dtype)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("normalized_shape,affine,bias",
                         [(6, True, True), ((4, 6), True, True), (6, False, True),
                          (6, True, False)])
def test_layernorm_matches_torch(dtype, normalized_shape, affine, bias):
    torch = require_torch()
    tdtype = _torch_dtype(torch, dtype)
    ref = torch.nn.LayerNorm(normalized_shape, elementwise_affine=affine, bias=bias, dtype=tdtype)
    with torch.no_grad():
        for p in ref.parameters():
            p.normal_()
    ln = LayerNorm(normalized_shape, elementwise_affine=affine, bias=bias, dtype=dtype)
    _load_from_torch(ln, ref)
    r = rng(4)
    x = (r.standard_normal((3, 4, 6)) * 5 + 2).astype(dtype)
    dy = r.standard_normal((3, 4, 6)).astype(dtype)
    xt = torch.from_numpy(x).requires_grad_()
    yt = ref(xt)
    yt.backward(torch.from_numpy(dy))
    y = ln(x)
    dx = ln.backward(dy)
    _assert_close(y, yt.detach().numpy(), dtype)
    _assert_close(dx, xt.grad.numpy(), dtype)
    for (name, p), (tname, tp) in zip(ln.named_parameters(), ref.named_parameters()):
        assert name == tname
        _assert_close(p.grad, tp.grad.numpy(), dtype)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("name,dim", [("Tanh", None), ("Sigmoid", None), ("ReLU", None),
                                      ("Softmax", -1), ("Softmax", 1), ("LogSoftmax", -1),
                                      ("LogSoftmax", 0)])
def test_activations_match_torch(dtype, name, dim):
    torch = require_torch()
    import elman.layers as layers
    module = getattr(layers, name)() if dim is None else getattr(layers, name)(dim=dim)
    ref = getattr(torch.nn, name)() if dim is None else getattr(torch.nn, name)(dim=dim)
    r = rng(5)
    x = (r.standard_normal((3, 4, 5)) * 4).astype(dtype)
    x[0, 0, :2] = [60.0, -60.0]                         # saturated regions stay accurate
    dy = r.standard_normal((3, 4, 5)).astype(dtype)
    xt = torch.from_numpy(x).requires_grad_()
    yt = ref(xt)
    yt.backward(torch.from_numpy(dy))
    _assert_close(module(x), yt.detach().numpy(), dtype)
    _assert_close(module.backward(dy), xt.grad.numpy(), dtype)


def test_sigmoid_and_log_softmax_are_stable_for_huge_inputs():
    with np.errstate(over="raise", invalid="raise", divide="raise"):   # underflow is fine
        y = Sigmoid()(np.array([-1e4, -50.0, 0.0, 50.0, 1e4]))
        ls = LogSoftmax()(np.array([[1e4, 0.0, -1e4]]))
        s = Softmax()(np.array([[1e4, 1e4 - 1.0]], dtype=np.float32))
    np.testing.assert_allclose(y, [0.0, 1.9287498479639178e-22, 0.5, 1.0, 1.0], rtol=1e-14)
    np.testing.assert_allclose(ls, [[0.0, -1e4, -2e4]])
    np.testing.assert_allclose(s, [[1 / (1 + np.exp(-1.0)), 1 / (1 + np.exp(1.0))]], rtol=1e-6)


# -- Linear details --------------------------------------------------------------------------

def test_linear_init_matches_torch_bounds_and_is_seeded():
    layer = Linear(64, 300, seed=0)
    bound = 1 / np.sqrt(64)
    for p in (layer.weight.data, layer.bias.data):
        assert np.abs(p).max() <= bound and np.abs(p).max() > 0.95 * bound
    np.testing.assert_array_equal(Linear(64, 300, seed=0).weight.data, layer.weight.data)
    assert not np.array_equal(Linear(64, 300, seed=1).weight.data, layer.weight.data)
    assert Dense is Linear
    assert layer.weight.shape == (300, 64) and layer.weight.dtype == np.float32


def test_linear_uses_views_and_accumulates_gradients():
    layer = Linear(5, 2, dtype=np.float64, seed=0)
    x = rng().standard_normal((4, 3, 5))
    y = layer(x)
    assert np.shares_memory(layer._cache[0], x)          # no copy of a contiguous input
    layer.backward(np.ones_like(y))
    g1 = layer.weight.grad.copy()
    layer(x)
    layer.backward(np.ones_like(y))
    np.testing.assert_allclose(layer.weight.grad, 2 * g1)
    # sequences in either layout give the same per-step results as a 2-D batch
    np.testing.assert_allclose(layer(x.transpose(1, 0, 2)), y.transpose(1, 0, 2))
    np.testing.assert_allclose(layer(x[0, 0]), y[0, 0])


def test_state_dict_round_trip_and_repr():
    a, b = Linear(3, 2, activation="tanh", seed=0), Linear(3, 2, activation="tanh", seed=1)
    b.load_state_dict(a.state_dict())
    x = rng().standard_normal((4, 3)).astype(np.float32)
    np.testing.assert_array_equal(a(x), b(x))
    assert repr(a) == ("Linear(in_features=3, out_features=2, bias=True, activation='tanh', "
                       "dtype=float32)")
    assert list(Linear(3, 2, bias=False).state_dict()) == ["weight"]
    assert repr(Embedding(10, 4, padding_idx=0)) == \
        "Embedding(10, 4, padding_idx=0, dtype=float32)"
    assert repr(Dropout(0.2)) == "Dropout(p=0.2)"
    assert "elementwise_affine=True" in repr(LayerNorm(4))
    assert repr(Softmax(dim=0)) == "Softmax(dim=0)" and repr(Tanh()) == "Tanh()"
    assert repr(LastBidirectional(8, batch_first=True)) == \
        "LastBidirectional(hidden_size=8, batch_first=True)"
    assert repr(Last()) == "Last(batch_first=False)"


# -- Embedding details -----------------------------------------------------------------------

def test_embedding_init_and_padding_row():
    emb = Embedding(2000, 50, padding_idx=-1, seed=0)
    assert emb.padding_idx == 1999
    assert np.all(emb.weight.data[1999] == 0)
    w = emb.weight.data[:1999].astype(np.float64)
    assert abs(w.mean()) < 0.01 and abs(w.std() - 1) < 0.01      # N(0, 1)
    y = emb(np.array([[1999, 3]]))
    assert y.shape == (1, 2, 50) and np.all(y[0, 0] == 0)


# -- Dropout ---------------------------------------------------------------------------------

def test_dropout_eval_is_identity_and_train_preserves_mean():
    x = rng().standard_normal((200, 500)) + 3.0
    drop = Dropout(0.4, seed=0)
    y = drop(x)
    zero = y == 0
    assert abs(zero.mean() - 0.4) < 0.01
    np.testing.assert_allclose(y[~zero], x[~zero] / 0.6)
    assert abs(y.mean() - x.mean()) < 0.05
    drop.eval()
    assert not drop.training
    np.testing.assert_array_equal(drop(x), x)
    np.testing.assert_array_equal(drop.backward(np.full_like(x, 2.0)), 2.0)
    drop.train()
    assert drop.training and np.any(drop(x) == 0)


def test_dropout_p0_identity_p1_zeros_and_dtype():
    x = rng().standard_normal((3, 4)).astype(np.float32)
    np.testing.assert_array_equal(Dropout(0.0)(x), x)
    drop = Dropout(1.0)
    assert np.all(drop(x) == 0) and np.all(drop.backward(np.ones_like(x)) == 0)
    assert Dropout(0.5, seed=0)(x).dtype == np.float32


def test_dropout_backward_reuses_the_forward_mask():
    drop = Dropout(0.5, seed=7)
    x = rng().standard_normal((50, 40)) + 5.0          # nonzero everywhere
    y = drop(x)
    dx = drop.backward(np.ones_like(x))
    np.testing.assert_array_equal(dx == 0, y == 0)
    np.testing.assert_allclose(dx[y != 0], 2.0)
    # the same mask again, even after another random draw elsewhere would differ
    np.testing.assert_array_equal(drop.backward(np.full_like(x, 3.0)), 3 * dx)
    assert not np.array_equal(drop(x) == 0, y == 0)      # a new forward draws a new mask
    np.testing.assert_array_equal(Dropout(0.5, seed=7)(x), y)   # seeded


# -- bad input -------------------------------------------------------------------------------

def test_linear_bad_input():
    layer = Linear(8, 3)
    with pytest.raises(ValueError, match=r"expected input with last dimension 8 "
                                         r"\(in_features\), got 5"):
        layer(np.zeros((4, 5)))
    with pytest.raises(ValueError, match=r"in_features must be an integer >= 1, got 0"):
        Linear(0, 3)
    with pytest.raises(ValueError, match=r"activation must be one of .* got 'gelu'"):
        Linear(8, 3, activation="gelu")
    with pytest.raises(TypeError, match=r"dtype must be np.float32 or np.float64, got int64"):
        Linear(8, 3, dtype=np.int64)
    layer(np.zeros((4, 8)))
    with pytest.raises(ValueError, match=r"expected grad_out of shape \(4, 3\).*got \(4, 2\)"):
        layer.backward(np.zeros((4, 2)))


@pytest.mark.parametrize("module", [
    Linear(3, 2), Embedding(5, 2), Dropout(0.5), LayerNorm(3), Tanh(), Softmax(), Last(),
    MeanPool(), LastBidirectional(1)], ids=lambda m: type(m).__name__)
def test_backward_before_forward(module):
    with pytest.raises(RuntimeError, match=rf"{type(module).__name__}\.backward called before "
                                           r"forward"):
        module.backward(np.zeros(3))


def test_embedding_bad_input():
    emb = Embedding(10, 4)
    with pytest.raises(IndexError, match=r"expected indices in \[0, 9\] \(num_embeddings=10\), "
                                         r"got 10 at position \(1, 0\)"):
        emb(np.array([[1, 2], [10, 3]]))
    with pytest.raises(IndexError, match=r"got -1 at position \(0,\)"):
        emb(np.array([-1, 3]))
    with pytest.raises(TypeError, match=r"integer indices, got an array of dtype float64"):
        emb(np.array([1.0, 2.0]))
    with pytest.raises(ValueError, match=r"padding_idx must be None or an integer in "
                                         r"\[-10, 9\].*got 10"):
        Embedding(10, 4, padding_idx=10)


def test_sequence_picker_bad_input():
    x = np.zeros((5, 3, 2))                              # (T=5, N=3, F=2)
    with pytest.raises(ValueError, match=r"lengths must be in \[1, 5\].*got 6 at index 1"):
        Last()(x, lengths=[5, 6, 1])
    with pytest.raises(ValueError, match=r"lengths must be in \[1, 5\].*got 0 at index 2"):
        MeanPool()(x, lengths=[5, 2, 0])
    with pytest.raises(ValueError, match=r"lengths must have shape \(3,\).*got shape \(2,\)"):
        Last()(x, lengths=[5, 2])
    with pytest.raises(TypeError, match=r"lengths must hold integers"):
        Last()(x, lengths=[5.0, 2.0, 1.0])
    with pytest.raises(ValueError, match=r"lengths must be in \[1, 3\].*got 5 at index 2"):
        Last(batch_first=True)(x, lengths=[3, 3, 5, 1, 1])    # batch_first: N=5, T=3
    with pytest.raises(ValueError, match=r"expected a sequence of shape \(T, N, F\)"):
        Last()(np.zeros(4))
    with pytest.raises(ValueError, match=r"expected input with last dimension 4 "
                                         r"\(2 \* hidden_size"):
        LastBidirectional(2)(x)


def test_layernorm_and_softmax_bad_input():
    with pytest.raises(ValueError, match=r"last dimension\(s\) are \(4,\) \(normalized_shape\), "
                                         r"got input of shape \(2, 5\)"):
        LayerNorm(4)(np.zeros((2, 5)))
    with pytest.raises(ValueError, match=r"normalized_shape must be .* got 0"):
        LayerNorm(0)
    with pytest.raises(ValueError, match=r"dim=2 is out of range for an input with 2 dim"):
        Softmax(dim=2)(np.zeros((2, 3)))
    with pytest.raises(ValueError, match=r"p must be a number in \[0, 1\], got 1.5"):
        Dropout(1.5)
