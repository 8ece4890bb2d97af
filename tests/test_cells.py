"""The single-step cells: gradient checks, PyTorch parity, and step-by-step == whole sequence."""
import numpy as np
import pytest

import elman
from _torch import require_torch

CELLS = [("rnn_tanh", lambda **k: elman.RNNCell(3, 4, **k)),
         ("rnn_relu", lambda **k: elman.RNNCell(3, 4, nonlinearity="relu", **k)),
         ("gru", lambda **k: elman.GRUCell(3, 4, **k)),
         ("gru_classic", lambda **k: elman.GRUCell(3, 4, reset_after=False, **k)),
         ("lstm", lambda **k: elman.LSTMCell(3, 4, **k))]


def _state(cell, rng, batch):
    shape = (batch, 4) if batch else (4,)
    if isinstance(cell, elman.LSTMCell):
        return (rng.standard_normal(shape), rng.standard_normal(shape))
    return rng.standard_normal(shape)


@pytest.mark.parametrize("name,make", CELLS, ids=[c[0] for c in CELLS])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("batch", [0, 3])
@pytest.mark.parametrize("with_state", [True, False])
def test_cell_gradcheck(name, make, bias, batch, with_state):
    rng = np.random.default_rng(0)
    cell = make(bias=bias, dtype=np.float64, seed=1)
    x = rng.standard_normal((batch, 3) if batch else (3,))
    inputs = (x, _state(cell, rng, batch)) if with_state else (x,)
    errors = elman.gradcheck(cell, inputs)
    n_params = 4 if bias else 2
    assert len(errors) == n_params + (1 + (1 + isinstance(cell, elman.LSTMCell)) * with_state)
    assert max(errors.values()) < 1e-7, errors


TORCH_CELLS = [c for c in CELLS if c[0] != "gru_classic"]     # torch has no reset_after=False


@pytest.mark.parametrize("name,make", TORCH_CELLS, ids=[c[0] for c in TORCH_CELLS])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("batch", [0, 5])
def test_cell_matches_torch(name, make, dtype, batch):
    torch = require_torch()
    rng = np.random.default_rng(1)
    cell = make(dtype=dtype, seed=2)
    kind = type(cell).__name__
    kwargs = {"nonlinearity": cell.nonlinearity} if kind == "RNNCell" else {}
    tdt = torch.float64 if dtype == np.float64 else torch.float32
    twin = getattr(torch.nn, kind)(3, 4, **kwargs).to(tdt)
    twin.load_state_dict({k: torch.from_numpy(v) for k, v in cell.state_dict().items()})
    x = rng.standard_normal((batch, 3) if batch else (3,)).astype(dtype)
    state = _state(cell, rng, batch)
    lstm = kind == "LSTMCell"
    tx = torch.tensor(x, requires_grad=True)
    tstate = tuple(torch.tensor(s, dtype=tdt, requires_grad=True) for s in
                   (state if lstm else (state,)))
    tout = twin(tx, tstate if lstm else tstate[0])
    tout = tout if lstm else (tout,)
    out = cell(x, state)
    out = out if lstm else (out,)
    grads = [rng.standard_normal(o.shape).astype(dtype) for o in out]
    sum((t * torch.from_numpy(g)).sum() for t, g in zip(tout, grads)).backward()
    dx, dstate = cell.backward(*grads)
    dstate = dstate if lstm else (dstate,)
    tol = dict(rtol=1e-10, atol=1e-12) if dtype == np.float64 else dict(rtol=1e-5, atol=1e-6)
    for o, t in zip(out, tout):
        np.testing.assert_allclose(o, t.detach().numpy(), **tol)
    np.testing.assert_allclose(dx, tx.grad.numpy(), **tol)
    for d, t in zip(dstate, tstate):
        np.testing.assert_allclose(d, t.grad.numpy(), **tol)
    for n, p in cell.named_parameters():
        np.testing.assert_allclose(p.grad, getattr(twin, n).grad.numpy(), err_msg=n, **tol)


@pytest.mark.parametrize("layer_cls,cell_cls,kw", [
    (elman.RNN, elman.RNNCell, {}), (elman.RNN, elman.RNNCell, {"nonlinearity": "relu"}),
    (elman.GRU, elman.GRUCell, {}), (elman.GRU, elman.GRUCell, {"reset_after": False}),
    (elman.LSTM, elman.LSTMCell, {})])
def test_step_by_step_through_cells_equals_the_layer(layer_cls, cell_cls, kw):
    """Forward: T cell steps give the layer's outputs. Backward: BPTT by hand through T cells
    (one per step, sharing weights) gives the layer's input, state and weight gradients."""
    rng = np.random.default_rng(3)
    T, N, I, H = 6, 3, 2, 5
    layer = layer_cls(I, H, dtype=np.float64, seed=4, **kw)
    weights = {k.replace("_l0", ""): v for k, v in layer.state_dict().items()}
    cells = [cell_cls(I, H, dtype=np.float64, **kw) for _ in range(T)]
    for c in cells:
        c.load_state_dict(weights)
    lstm = layer_cls is elman.LSTM
    x = rng.standard_normal((T, N, I))
    h = rng.standard_normal((N, H))
    c = rng.standard_normal((N, H)) if lstm else None
    out, state = layer(x, (h[None], c[None]) if lstm else h[None])

    steps = []
    for t in range(T):
        h = cells[t](x[t], (h, c) if lstm else h)
        if lstm:
            h, c = h
        steps.append(h)
    np.testing.assert_allclose(np.stack(steps), out, rtol=1e-12, atol=1e-14)

    dout = rng.standard_normal(out.shape)
    dx_layer, _ = layer.backward(dout, None)
    dh = np.zeros((N, H))
    dc = np.zeros((N, H)) if lstm else None
    dxs = []
    for t in reversed(range(T)):            # backprop through time, one cell at a time
        dh = dh + dout[t]
        if lstm:
            dx, (dh, dc) = cells[t].backward(dh, dc)
        else:
            dx, dh = cells[t].backward(dh)
        dxs.append(dx)
    np.testing.assert_allclose(np.stack(dxs[::-1]), dx_layer, rtol=1e-11, atol=1e-13)
    for name, p in layer.named_parameters():
        total = sum(getattr(cell, name.replace("_l0", "")).grad for cell in cells)
        np.testing.assert_allclose(total, p.grad, rtol=1e-11, atol=1e-13, err_msg=name)


def test_cell_errors_name_the_argument():
    cell = elman.LSTMCell(3, 4)
    with pytest.raises(ValueError, match=r"input.shape\[-1\] must be equal to input_size. "
                                         r"Expected 3, got 5"):
        cell(np.zeros((2, 5)))
    with pytest.raises(ValueError, match=r"Expected h of shape \(2, 4\), got \(2, 3\)"):
        cell(np.zeros((2, 3)), (np.zeros((2, 3)), np.zeros((2, 4))))
    with pytest.raises(TypeError, match=r"must be a tuple \(h, c\)"):
        cell(np.zeros((2, 3)), np.zeros((2, 4)))
    with pytest.raises(RuntimeError, match=r"backward\(\) needs a forward\(\) first"):
        elman.GRUCell(3, 4).backward(np.zeros((2, 4)))
    with pytest.raises(ValueError, match="nonlinearity must be 'tanh' or 'relu', got 'gelu'"):
        elman.RNNCell(3, 4, nonlinearity="gelu")


def _classic_gru_reference(x, h, W_ih, W_hh, b_ih, b_hh):
    """Cho et al.'s GRU written plainly, one step and one sample-batch at a time:
    n = tanh(W_in x + b_in + W_hn (r * h) + b_hn)."""
    H = h.shape[1]
    out = []
    for x_t in x:
        r = 1 / (1 + np.exp(-(x_t @ W_ih[:H].T + b_ih[:H] + h @ W_hh[:H].T + b_hh[:H])))
        z = 1 / (1 + np.exp(-(x_t @ W_ih[H:2 * H].T + b_ih[H:2 * H] + h @ W_hh[H:2 * H].T
                              + b_hh[H:2 * H])))
        n = np.tanh(x_t @ W_ih[2 * H:].T + b_ih[2 * H:] + (r * h) @ W_hh[2 * H:].T + b_hh[2 * H:])
        h = (1 - z) * n + z * h
        out.append(h)
    return np.stack(out)


def test_classic_gru_matches_its_equations_and_differs_from_reset_after():
    rng = np.random.default_rng(8)
    classic = elman.GRU(3, 5, reset_after=False, dtype=np.float64, seed=0)
    modern = elman.GRU(3, 5, dtype=np.float64)
    modern.load_state_dict(classic.state_dict())
    x, h0 = rng.standard_normal((6, 4, 3)), rng.standard_normal((1, 4, 5))
    out, _ = classic(x, h0)
    sd = classic.state_dict()
    expected = _classic_gru_reference(x, h0[0], sd["weight_ih_l0"], sd["weight_hh_l0"],
                                      sd["bias_ih_l0"], sd["bias_hh_l0"])
    np.testing.assert_allclose(out, expected, rtol=1e-12, atol=1e-14)
    assert np.abs(modern(x, h0)[0] - out).max() > 1e-3     # the two variants really differ
    assert "reset_after=False" in repr(classic)
    assert elman.GRU(**classic.config()).reset_after is False
