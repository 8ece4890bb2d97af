"""elman.gradient_flow: ||dL/dh_t|| per step against a torch.autograd step loop (retain_grad on
every step's state) for RNN/GRU/LSTM, stacked, bidirectional, with lengths, in a Sequential
with a loss; against float64 finite differences of the loss wrt an additive change of h_t for
MinGRU/MinLSTM and the LSTM/GRU/RNN options; and that the model is left as it was."""
import copy

import numpy as np
import pytest

import elman
from _torch import require

RNG = np.random.default_rng(0)


# -- the torch oracle: one step loop per layer-direction, every state kept with retain_grad ----

def _torch_step(torch, kind, w, x_t, h, c, nonlinearity="tanh"):
    gx = x_t @ w["weight_ih"].T + w["bias_ih"]
    gh = h @ w["weight_hh"].T + w["bias_hh"]
    if kind == "rnn":
        return (torch.tanh if nonlinearity == "tanh" else torch.relu)(gx + gh), None
    if kind == "gru":
        H = h.shape[1]
        r = torch.sigmoid(gx[:, :H] + gh[:, :H])
        z = torch.sigmoid(gx[:, H:2 * H] + gh[:, H:2 * H])
        n = torch.tanh(gx[:, 2 * H:] + r * gh[:, 2 * H:])
        return (1 - z) * n + z * h, None
    H = c.shape[1]
    g = gx + gh
    i, f = torch.sigmoid(g[:, :H]), torch.sigmoid(g[:, H:2 * H])
    gg, o = torch.tanh(g[:, 2 * H:3 * H]), torch.sigmoid(g[:, 3 * H:])
    c = f * c + i * gg
    h = o * torch.tanh(c)
    if "weight_hr" in w:
        h = h @ w["weight_hr"].T
    return h, c


def _torch_layer(torch, layer, kind, x, lengths):
    """x (T, N, I) float64 tensor -> (out (T, N, D*P), {k: [h_t tensors]}) with the states of
    every layer-direction k kept (retain_grad), padded steps frozen as pack_padded_sequence."""
    T, N, _ = x.shape
    D = 2 if layer.bidirectional else 1
    H = layer.hidden_size
    P = getattr(layer, "proj_size", 0) or H
    valid = torch.ones(T, N, 1, dtype=torch.bool) if lengths is None else \
        torch.as_tensor(np.arange(T)[:, None, None] < np.asarray(lengths)[None, :, None])
    sd = {k: torch.tensor(v, requires_grad=True) for k, v in layer.state_dict().items()}
    states, inp = {}, x
    for l in range(layer.num_layers):
        outs = []
        for d in range(D):
            sfx = f"_l{l}" + ("_reverse" if d else "")
            w = {name: sd[name + sfx] for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh",
                                                      "weight_hr") if name + sfx in sd}
            h = torch.zeros(N, P, dtype=x.dtype)
            c = torch.zeros(N, H, dtype=x.dtype) if kind == "lstm" else None
            kept = [None] * T
            for t in (reversed(range(T)) if d else range(T)):
                h_new, c_new = _torch_step(torch, kind, w, inp[t], h, c,
                                           getattr(layer, "nonlinearity", "tanh"))
                h = torch.where(valid[t], h_new, h)
                c = None if c is None else torch.where(valid[t], c_new, c)
                h.retain_grad()
                kept[t] = h
            states[l * D + d] = kept
            outs.append(torch.stack(kept) * valid)
        inp = torch.cat(outs, dim=2)
    return inp, states


def _norms(states, lengths):
    """{k: (T,) mean over the batch of ||grad h_t||} from the retained gradients; a sequence
    counts 0 past its end (the reverse direction's state there is its initial state, whose
    gradient gradient_flow does not report)."""
    out = {}
    for k, kept in states.items():
        T = len(kept)
        norms = np.array([np.zeros(kept[0].shape[0]) if h.grad is None
                          else h.grad.norm(dim=1).numpy() for h in kept])      # (T, N)
        if lengths is not None:
            norms[np.arange(T)[:, None] >= np.asarray(lengths)[None, :]] = 0
        out[k] = norms.mean(axis=1)
    return out


def _as_elman(flows, name, layer):
    """{layer-direction k: (T,)} from gradient_flow's entries."""
    D = 2 if layer.bidirectional else 1
    out = {}
    for l in range(layer.num_layers):
        entry = flows[name if layer.num_layers == 1 else f"{name}/l{l}"]
        for d in range(D):
            out[l * D + d] = entry if D == 1 else entry[d]
    return out


CASES = [
    ("rnn", dict(num_layers=2, bidirectional=True), [7, 3, 5]),
    ("rnn", dict(nonlinearity="relu"), None),
    ("gru", dict(bidirectional=True), [4, 7, 1]),
    ("gru", dict(num_layers=2), None),
    ("lstm", dict(num_layers=2, bidirectional=True), [7, 2, 6]),
    ("lstm", dict(proj_size=3), [5, 7, 7]),
]


@pytest.mark.parametrize("kind,options,lengths", CASES)
def test_layer_alone_matches_torch(kind, options, lengths):
    torch = require("torch")
    T, N, I, H = 7, 3, 4, 5
    layer = elman.registry.get("recurrent", kind)(I, H, dtype=np.float64, seed=1, **options)
    x = RNG.standard_normal((T, N, I))
    flows = elman.gradient_flow(layer, x, lengths=lengths)
    xt = torch.tensor(x)
    out, states = _torch_layer(torch, layer, kind, xt, lengths)
    last = np.full(N, T - 1) if lengths is None else np.asarray(lengths) - 1
    out[last, np.arange(N)].sum().backward()     # the default loss: outputs at the last step
    want = _norms(states, lengths)
    got = _as_elman(flows, type(layer).__name__, layer)
    assert set(got) == set(want)
    for k in want:
        np.testing.assert_allclose(got[k], want[k], rtol=1e-9, atol=1e-13, err_msg=f"k={k}")
    # the reverse direction and a deeper layer do get gradient somewhere
    assert all(np.any(v > 0) for v in got.values())


def test_sequential_with_head_and_loss_matches_torch():
    torch = require("torch")
    N, T, I, H = 4, 9, 3, 6
    gru = elman.GRU(I, H, bidirectional=True, batch_first=True, dtype=np.float64, seed=2)
    head = elman.Dense(2 * H, 2, dtype=np.float64, seed=3)
    model = elman.Sequential([gru, elman.LastBidirectional(H, batch_first=True), head])
    x = RNG.standard_normal((N, T, I))
    y = RNG.standard_normal((N, 2))
    lengths = [9, 4, 6, 9]
    flows = elman.gradient_flow(model, x, y, loss="mse", lengths=lengths)
    assert list(flows) == ["0:GRU"] and flows["0:GRU"].shape == (2, T)

    out, states = _torch_layer(torch, gru, "gru", torch.tensor(x.transpose(1, 0, 2)), lengths)
    last = np.asarray(lengths) - 1
    feat = torch.cat([out[last, np.arange(N), :H], out[0, :, H:]], dim=1)   # LastBidirectional
    sd = head.state_dict()
    pred = feat @ torch.tensor(sd["weight"]).T + torch.tensor(sd["bias"])
    torch.nn.functional.mse_loss(pred, torch.tensor(y)).backward()
    want = _norms(states, lengths)
    np.testing.assert_allclose(flows["0:GRU"][0], want[0], rtol=1e-9, atol=1e-14)
    np.testing.assert_allclose(flows["0:GRU"][1], want[1], rtol=1e-9, atol=1e-14)


# -- finite differences: L(h_t + e) through the output at t and a suffix run from h_t + e ------

def _readout(layer, x, W, hx=None):
    """sum_t <W_t, out_t> of a unidirectional one-layer ``layer`` run on x (T, N, I)."""
    out, state = layer(x, hx)
    return float((W[:len(out)] * out).sum()), out, state


def _fd_flow(layer, x, W, eps=1e-6):
    """(T,) mean over the batch of ||dL/dh_t|| by central differences, L = sum_t <W_t, out_t>,
    h_t changed by e: the output at t moves by e, the steps after t restart from h_t + e."""
    T, N, _ = x.shape
    P = W.shape[2]
    result = np.zeros(T)
    for t in range(T):
        _, out, state = _readout(layer, x[:t + 1], W)     # prefix: h_t (and c_t) at the end
        grad = np.zeros((N, P))
        for n in range(N):
            for j in range(P):
                vals = []
                for s in (1, -1):
                    if isinstance(state, tuple):
                        h = state[0].copy()
                        h[0, n, j] += s * eps
                        hx = (h, state[1])
                    else:
                        hx = state.copy()
                        hx[0, n, j] += s * eps
                    value = W[t, n, j] * s * eps         # the output at t moved by e
                    if t + 1 < T:
                        value += _readout(layer, x[t + 1:], W[t + 1:], hx)[0]
                    vals.append(value)
                grad[n, j] = (vals[0] - vals[1]) / (2 * eps)
        result[t] = np.linalg.norm(grad, axis=1).mean()
    return result


FD_LAYERS = [
    ("MinGRU", lambda: elman.MinGRU(3, 4, dtype=np.float64, seed=4)),
    ("MinGRU", lambda: elman.MinGRU(3, 4, dtype=np.float64, seed=4, mode="sequential")),
    ("MinLSTM", lambda: elman.MinLSTM(3, 4, dtype=np.float64, seed=5)),
    ("LSTM", lambda: elman.LSTM(3, 4, dtype=np.float64, seed=6, proj_size=2, peephole=True,
                                forget_bias=1.0)),
    ("LSTM", lambda: elman.LSTM(3, 4, dtype=np.float64, seed=6, layer_norm=True)),
    ("GRU", lambda: elman.GRU(3, 4, dtype=np.float64, seed=7, reset_after=False)),
    ("RNN", lambda: elman.RNN(3, 4, dtype=np.float64, seed=8, layer_norm=True)),
]


@pytest.mark.parametrize("name,make", FD_LAYERS)
def test_matches_finite_differences(name, make):
    layer = make()
    T, N = 6, 2
    x = RNG.standard_normal((T, N, 3))
    P = getattr(layer, "proj_size", 0) or layer.hidden_size
    W = RNG.standard_normal((T, N, P))
    flows = elman.gradient_flow(layer, x, y=W, loss=lambda pred, y: (float((pred * y).sum()), y))
    np.testing.assert_allclose(flows[name], _fd_flow(layer, x, W), rtol=1e-6, atol=1e-9)


def test_minimal_bidirectional_lengths_match_the_scan_modes_and_a_reversed_run():
    """The reverse direction's record is indexed by time: it equals a forward-only layer with
    the reverse weights run on each sequence reversed (its valid part), read back reversed."""
    T, N, I, H = 8, 3, 2, 3
    lengths = [8, 3, 5]
    bi = elman.MinLSTM(I, H, bidirectional=True, dtype=np.float64, seed=9)
    uni = elman.MinLSTM(I, H, dtype=np.float64, seed=0)
    uni.load_state_dict({k.replace("_reverse", ""): v for k, v in bi.state_dict().items()
                         if k.endswith("_reverse")})
    x = RNG.standard_normal((T, N, I))
    W = RNG.standard_normal((T, N, 2 * H))
    loss = lambda pred, y: (float((pred * y).sum()), y)          # noqa: E731
    got = elman.gradient_flow(bi, x, W, loss, lengths=lengths)["MinLSTM"][1]
    rows = []
    for n, length in enumerate(lengths):
        g = elman.gradient_flow(uni, x[:length, n:n + 1][::-1].copy(),
                                W[:length, n:n + 1, H:][::-1].copy(), loss)["MinLSTM"][::-1]
        rows.append(np.concatenate([g, np.zeros(T - length)]))
    np.testing.assert_allclose(got, np.mean(rows, axis=0), rtol=1e-10, atol=1e-14)
    bi.mode = "sequential"
    np.testing.assert_allclose(elman.gradient_flow(bi, x, W, loss, lengths=lengths)["MinLSTM"][1],
                               got, rtol=1e-10, atol=1e-14)


# -- the model is left as it was ------------------------------------------------------------

def test_leaves_grads_mode_rng_and_a_pending_backward_alone():
    N, T = 5, 6
    model = elman.Sequential([elman.LSTM(2, 4, num_layers=2, dropout=0.3, batch_first=True,
                                         seed=1),
                              elman.MinGRU(4, 3, batch_first=True, seed=2),
                              elman.Last(batch_first=True), elman.Dropout(0.5, seed=3),
                              elman.Dense(3, 1, seed=4)], seed=0)
    model.compile("adam", "mse")
    x = RNG.standard_normal((N, T, 2)).astype(np.float32)
    y = RNG.standard_normal((N, 1)).astype(np.float32)
    model.fit(x, y, epochs=1, batch_size=5, verbose=0)      # optimizer state, nonzero grads
    model.train()
    pred = model.forward(x)                                  # a forward awaiting its backward
    twin = copy.deepcopy(model)                              # what that backward should give
    grads = {n: (p.grad, p.grad.copy()) for n, p in model.named_parameters()}
    assert any(np.any(g != 0) for _, g in grads.values())
    states = [m._rng.bit_generator.state for _, m in model.named_modules() if hasattr(m, "_rng")]
    opt_state = model.optimizer.state_dict()

    flows = elman.gradient_flow(model, x, y)
    assert list(flows) == ["0:LSTM/l0", "0:LSTM/l1", "1:MinGRU"]
    assert all(f.shape == (T,) and np.all(f > 0) for f in flows.values())
    for n, p in model.named_parameters():
        assert p.grad is grads[n][0], n
        np.testing.assert_array_equal(p.grad, grads[n][1], err_msg=n)
    assert all(m.training for _, m in model.named_modules())
    assert states == [m._rng.bit_generator.state for _, m in model.named_modules()
                      if hasattr(m, "_rng")]
    opt_after = model.optimizer.state_dict()
    assert opt_after["step"] == opt_state["step"] > 0
    for name, arrays in opt_state["state"].items():
        for a, b in zip(arrays, opt_after["state"][name]):
            np.testing.assert_array_equal(a, b)
    # the pending backward of the caller's forward still works and gives what it would have
    model.backward(np.ones_like(pred))
    twin.backward(np.ones_like(pred))
    for (n, p), (_, q) in zip(model.named_parameters(), twin.named_parameters()):
        np.testing.assert_array_equal(p.grad, q.grad, err_msg=n)


def test_evaluation_mode_is_deterministic_and_dropout_free():
    model = elman.Sequential([elman.GRU(2, 4, batch_first=True, seed=1),
                              elman.Last(batch_first=True), elman.Dropout(0.9, seed=2),
                              elman.Dense(4, 1, seed=3)])
    x = RNG.standard_normal((3, 5, 2)).astype(np.float32)
    a, b = elman.gradient_flow(model, x), elman.gradient_flow(model, x)
    np.testing.assert_array_equal(a["0:GRU"], b["0:GRU"])
    model.eval()
    np.testing.assert_array_equal(elman.gradient_flow(model, x)["0:GRU"], a["0:GRU"])


def test_errors_name_the_problem():
    with pytest.raises(ValueError, match="no recurrent layer"):
        elman.gradient_flow(elman.Sequential([elman.Dense(2, 1)]), np.zeros((2, 2)))
    with pytest.raises(TypeError, match="model must be"):
        elman.gradient_flow(np.zeros(3), np.zeros((2, 2)))
    model = elman.Sequential([elman.RNN(2, 3, batch_first=True), elman.Last(batch_first=True)])
    with pytest.raises(ValueError, match="no loss"):
        elman.gradient_flow(model, np.zeros((2, 4, 2)), y=np.zeros((2, 3)))
    with pytest.raises(ValueError, match="needs targets y"):
        elman.gradient_flow(model, np.zeros((2, 4, 2)), loss="mse")


def test_plot(tmp_path):
    require("matplotlib")
    import elman.plots
    x = RNG.standard_normal((6, 2, 3)).astype(np.float32)
    flows = {**elman.gradient_flow(elman.GRU(3, 4, bidirectional=True, seed=0), x),
             **elman.gradient_flow(elman.MinLSTM(3, 4, seed=0), x)}
    path = elman.plots.gradient_flow({"at initialisation": flows, "again": flows},
                                     tmp_path / "flow.png")
    assert (tmp_path / "flow.png").stat().st_size > 1000 and path.endswith("flow.png")
    with pytest.raises(ValueError, match=r"\(T,\) or \(2, T\)"):
        elman.plots.gradient_flow({"x": np.ones((3, 4))}, tmp_path / "bad.png")
