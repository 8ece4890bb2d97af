"""Run an elman recurrent layer and its torch.nn twin on the same weights and inputs, and return
both sets of outputs and gradients. Used by the parity tests."""
import numpy as np

from _torch import require_torch


def torch_twin(layer):
    """A torch.nn.RNN/GRU/LSTM with the same configuration and the same weights."""
    torch = require_torch()
    kind = type(layer).__name__
    kwargs = dict(num_layers=layer.num_layers, bias=layer.bias, batch_first=layer.batch_first,
                  dropout=layer.dropout, bidirectional=layer.bidirectional)
    if kind == "RNN":
        kwargs["nonlinearity"] = layer.nonlinearity
    if kind == "LSTM":
        kwargs["proj_size"] = layer.proj_size
    tdtype = torch.float64 if layer.dtype == np.float64 else torch.float32
    twin = getattr(torch.nn, kind)(layer.input_size, layer.hidden_size, **kwargs).to(tdtype)
    twin.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in layer.state_dict().items()})
    twin.train(layer.training)
    return twin


def run_both(layer, x, hx=None, lengths=None, seed=0):
    """Forward both, backward both with the same random upstream gradients.

    Returns two dicts with keys out, h_n, (c_n), dx, dh0, (dc0), and every parameter name
    (its gradient)."""
    torch = require_torch()
    rng = np.random.default_rng(seed)
    is_lstm = type(layer).__name__ == "LSTM"
    twin = torch_twin(layer)
    tdtype = twin.weight_ih_l0.dtype

    # elman
    layer.zero_grad()
    out, state = layer(x, hx, lengths=lengths)
    h_n, c_n = state if is_lstm else (state, None)
    dout = rng.standard_normal(out.shape).astype(layer.dtype)
    dh_n = rng.standard_normal(h_n.shape).astype(layer.dtype)
    dc_n = rng.standard_normal(c_n.shape).astype(layer.dtype) if is_lstm else None
    dx, dstate0 = layer.backward(dout, (dh_n, dc_n) if is_lstm else dh_n)
    dh0, dc0 = dstate0 if is_lstm else (dstate0, None)
    ours = dict(out=out, h_n=h_n, dx=dx, dh0=dh0)
    if is_lstm:
        ours.update(c_n=c_n, dc0=dc0)
    ours.update({name: p.grad.copy() for name, p in layer.named_parameters()})

    # torch
    tx = torch.tensor(np.asarray(x), dtype=tdtype, requires_grad=True)
    P = layer.proj_size if is_lstm and layer.proj_size else layer.hidden_size
    D = 2 if layer.bidirectional else 1
    batched = np.asarray(x).ndim == 3
    if hx is None:
        N = (x.shape[0] if layer.batch_first else x.shape[1]) if batched else None
        shape_h = (D * layer.num_layers, N, P) if batched else (D * layer.num_layers, P)
        shape_c = (D * layer.num_layers, N, layer.hidden_size) if batched else \
            (D * layer.num_layers, layer.hidden_size)
        hx = (np.zeros(shape_h), np.zeros(shape_c)) if is_lstm else np.zeros(shape_h)
    if is_lstm:
        th0 = torch.tensor(hx[0], dtype=tdtype, requires_grad=True)
        tc0 = torch.tensor(hx[1], dtype=tdtype, requires_grad=True)
        thx = (th0, tc0)
    else:
        th0 = torch.tensor(hx, dtype=tdtype, requires_grad=True)
        thx = th0
    if lengths is not None:
        from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence
        T = x.shape[1] if layer.batch_first else x.shape[0]
        packed = pack_padded_sequence(tx, torch.tensor(lengths), batch_first=layer.batch_first,
                                      enforce_sorted=False)
        tout, tstate = twin(packed, thx)
        tout, _ = pad_packed_sequence(tout, batch_first=layer.batch_first, total_length=T)
    else:
        tout, tstate = twin(tx, thx)
    th_n, tc_n = tstate if is_lstm else (tstate, None)
    loss = (tout * torch.from_numpy(dout).to(tdtype)).sum() + \
        (th_n * torch.from_numpy(dh_n).to(tdtype)).sum()
    if is_lstm:
        loss = loss + (tc_n * torch.from_numpy(dc_n).to(tdtype)).sum()
    loss.backward()
    theirs = dict(out=tout.detach().numpy(), h_n=th_n.detach().numpy(), dx=tx.grad.numpy(),
                  dh0=th0.grad.numpy())
    if is_lstm:
        theirs.update(c_n=tc_n.detach().numpy(), dc0=tc0.grad.numpy())
    theirs.update({name: p.grad.numpy() for name, p in twin.named_parameters()})
    return ours, theirs


def assert_match(ours, theirs, dtype, context=""):
    """Every entry equal to float precision: float64 1e-9 relative, float32 1e-4 relative,
    each relative to the largest magnitude of that array (so tiny entries don't dominate).

    The scale is floored (float64 1e-3, float32 1e-2): a bias gradient that is a sum of T*N
    terms of size ~1 cancelling to ~1e-3 carries float32 rounding of ~1e-7 absolute, i.e. 1e-4
    relative, in torch as in elman (seen on RNN seed 72: elman 3.7e-5 and torch 1.6e-4 from
    the float64 answer); below the floor the comparison is absolute."""
    rtol = 1e-9 if dtype == np.float64 else 1e-4
    floor = 1e-3 if dtype == np.float64 else 1e-2
    assert set(ours) == set(theirs), (set(ours) ^ set(theirs), context)
    for key in theirs:
        a, b = np.asarray(ours[key], dtype=np.float64), np.asarray(theirs[key], dtype=np.float64)
        assert a.shape == b.shape, f"{key}: shape {a.shape} != torch {b.shape} {context}"
        scale = max(np.max(np.abs(b), initial=0.0), floor)
        err = np.max(np.abs(a - b), initial=0.0) / scale
        assert err <= rtol, f"{key}: relative error {err:.3g} > {rtol} {context}"
