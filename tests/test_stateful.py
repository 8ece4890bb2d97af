"""Stateful recurrent layers (elman.stateful), stream batching (elman.data.stream_windows) and
a stateful ``fit``: truncated BPTT over contiguous streams, against a hand-written PyTorch loop
with ``h.detach()`` step for step."""
import copy

import numpy as np
import pytest

import elman
from _torch import require_torch
from elman.data import stream_windows

LAYERS = {
    "rnn": lambda **kw: elman.RNN(3, 5, num_layers=2, **kw),
    "gru": lambda **kw: elman.GRU(3, 5, bidirectional=True, **kw),
    "lstm": lambda **kw: elman.LSTM(3, 5, proj_size=2, **kw),
    "mingru": lambda **kw: elman.MinGRU(3, 5, num_layers=2, **kw),
    "minlstm": lambda **kw: elman.MinLSTM(3, 5, **kw),
}


def _state(layer_out):
    return layer_out[1]


def _flat(state):
    return state if isinstance(state, tuple) else (state,)


# -- the layers -------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["rnn", "gru", "lstm", "mingru", "minlstm"])
def test_stateful_calls_continue_like_one_long_call(kind):
    x = np.random.default_rng(0).standard_normal((12, 4, 3)).astype(np.float32)
    plain = LAYERS[kind](seed=0)
    layer = LAYERS[kind](seed=0, stateful=True)
    D = 2 if kind == "gru" else 1
    if D == 1:     # a bidirectional layer reads each window backwards: no long-call identity
        whole, final = plain(x)
        first, _ = layer(x[:5])
        second, carried = layer(x[5:])
        np.testing.assert_allclose(np.concatenate([first, second]), whole, rtol=1e-5, atol=1e-6)
        for a, b in zip(_flat(carried), _flat(final)):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    # in general: each call starts from the previous call's final states, given explicitly
    layer.reset_states()
    _, s1 = layer(x[:5])
    out2, _ = layer(x[5:])
    expected, _ = plain(x[5:], s1)
    np.testing.assert_array_equal(out2, expected)
    # a state given explicitly wins over the carried one
    out3, _ = layer(x[5:], s1)
    np.testing.assert_array_equal(out3, expected)
    # reset_states: zeros again, the same as a fresh layer
    layer.reset_states()
    assert layer.states is None
    np.testing.assert_array_equal(layer(x[:5])[0], plain(x[:5])[0])


@pytest.mark.parametrize("kind", ["gru", "lstm", "minlstm"])
def test_with_lengths_the_carried_state_is_the_last_valid_step(kind):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((6, 3, 3)).astype(np.float32)
    lengths = [6, 2, 4]
    plain = LAYERS[kind](seed=2)
    layer = LAYERS[kind](seed=2, stateful=True)
    _, final = plain(x, lengths=lengths)
    _, carried = layer(x, lengths=lengths)
    for a, b in zip(_flat(layer.states), _flat(final)):
        np.testing.assert_array_equal(a, b)
    # and the next call starts there, row by row
    nxt = rng.standard_normal((4, 3, 3)).astype(np.float32)
    np.testing.assert_array_equal(layer(nxt)[0], plain(nxt, final)[0])


def test_a_changed_batch_size_is_an_error_until_reset():
    layer = elman.LSTM(3, 4, stateful=True, batch_first=True, seed=0)
    x = np.zeros((5, 7, 3), np.float32)
    layer(x)
    with pytest.raises(ValueError, match=r"stateful .* batch of 5, but this input has a batch "
                                         r"of 4.*reset_states\(\)"):
        layer(x[:4])
    with pytest.raises(ValueError, match="unbatched input"):
        layer(x[0])
    layer.reset_states()
    assert layer(x[:4])[0].shape == (4, 7, 4)


def test_gradient_stops_at_the_call_boundary():
    # backward differentiates the last call only: the same as from a detached copy of the
    # carried state (what torch's h.detach() gives)
    rng = np.random.default_rng(3)
    x = rng.standard_normal((8, 2, 3))
    layer = elman.GRU(3, 4, stateful=True, dtype=np.float64, seed=0)
    plain = elman.GRU(3, 4, dtype=np.float64, seed=0)
    layer(x[:4])
    start = layer.states.copy()
    out, _ = layer(x[4:])
    dout = rng.standard_normal(out.shape)
    dx, dh0 = layer.backward(dout, None)
    plain(x[4:], start)
    dx_ref, dh0_ref = plain.backward(dout, None)
    np.testing.assert_array_equal(dx, dx_ref)
    for (name, p), q in zip(layer.named_parameters(), plain.parameters()):
        np.testing.assert_array_equal(p.grad, q.grad, err_msg=name)


def test_stateful_is_saved_with_the_model_but_not_the_carried_states(tmp_path):
    model = elman.Sequential([elman.Embedding(9, 4, seed=0),
                              elman.LSTM(4, 6, batch_first=True, stateful=True, seed=1),
                              elman.Linear(6, 9, seed=2)])
    assert model.stateful
    x = np.random.default_rng(0).integers(0, 9, size=(3, 5))
    model(x)
    assert model[1].states is not None
    path = str(tmp_path / "m.npz")
    elman.save(model, path)
    loaded = elman.load(path)
    assert loaded[1].stateful and loaded[1].states is None
    assert "stateful=True" in repr(loaded)
    # a deep copy carries on where the original is
    twin = copy.deepcopy(model)
    np.testing.assert_array_equal(twin(x), model(x))
    model.reset_states()
    assert model[1].states is None and twin[1].states is not None
    np.testing.assert_array_equal(model(x), loaded(x))
    # summary() probes the model with a dummy batch: the carried states stay as they were
    carried = model[1].states
    assert "Total params" in model.summary(print_fn=None)
    np.testing.assert_array_equal(model[1].states[0], carried[0])
    model(x)                                             # the batch size is still 3's
    with pytest.raises(TypeError, match="stateful must be True or False"):
        elman.GRU(3, 4, stateful="yes")
    assert not elman.Sequential([elman.Linear(2, 2)]).stateful


# -- stream_windows ---------------------------------------------------------------------------

def test_stream_windows_cut_contiguous_streams():
    ids = np.arange(100)
    x, y, lengths = stream_windows(ids, streams=3, window=7, offset=2)
    length = (100 - 2 - 1) // 3                          # 32 steps per stream: 5 windows
    assert x.shape == y.shape == (5 * 3, 7)
    assert lengths.tolist() == [7] * 12 + [4] * 3
    for s in range(3):                                   # stream s: one contiguous piece
        rows = x[s::3]
        steps = np.concatenate([r[:n] for r, n in zip(rows, lengths[s::3])])
        start = 2 + s * length
        np.testing.assert_array_equal(steps, np.arange(start, start + length))
        ys = np.concatenate([r[:n] for r, n in zip(y[s::3], lengths[s::3])])
        np.testing.assert_array_equal(ys, steps + 1)      # targets: the next step
    assert (x[-3:, 4:] == 0).all()                       # padding after the short windows
    # whole windows: no lengths; a series with features and its own targets
    series = np.arange(40.0).reshape(20, 2)
    x, y, lengths = stream_windows(series, streams=2, window=3, targets=series[:, 1] * 10)
    assert lengths is None and x.shape == (6, 3, 2) and y.shape == (6, 3)
    np.testing.assert_array_equal(x[1, 0], series[9])    # stream 1 starts at row 9
    assert y[1, 0] == series[10, 1] * 10
    with pytest.raises(ValueError, match="8 streams need at least 9 steps"):
        stream_windows(np.arange(5), streams=8, window=4)
    with pytest.raises(ValueError, match="window must be an integer >= 1"):
        stream_windows(np.arange(5), streams=1, window=0)
    with pytest.raises(ValueError, match="targets must have one row per step"):
        stream_windows(np.arange(5), 1, 2, targets=np.arange(4))


# -- fit ----------------------------------------------------------------------------------------

def _char_model(kind, V, E, H, stateful=True):
    return elman.Sequential([
        elman.Embedding(V, E, dtype=np.float64, seed=0),
        getattr(elman, kind)(E, H, batch_first=True, stateful=stateful, dtype=np.float64, seed=1),
        elman.Linear(H, V, dtype=np.float64, seed=2)], seed=0)


def test_fit_refuses_what_would_break_the_streams():
    model = _char_model("GRU", 5, 3, 4)
    model.compile("adam", "sparse_categorical_crossentropy")
    x, y, lengths = stream_windows(np.arange(50) % 5, streams=4, window=6)
    with pytest.raises(ValueError, match="shuffle=False"):
        model.fit(x, y, batch_size=4, lengths=lengths, verbose=0)
    with pytest.raises(ValueError, match="not a whole number of batches of batch_size=3"):
        model.fit(x, y, batch_size=3, shuffle=False, lengths=lengths, verbose=0)
    with pytest.raises(ValueError, match="validation_batch_size=5"):
        model.fit(x, y, batch_size=4, shuffle=False, lengths=lengths, verbose=0,
                  validation_data=(x, y, lengths), validation_batch_size=5)


class _Losses(elman.Callback):
    def on_train_begin(self, logs=None):
        self.losses = []

    def on_batch_end(self, batch, logs=None):
        self.losses.append(logs["loss"])


@pytest.mark.parametrize("kind", ["LSTM", "GRU"])
def test_stateful_fit_equals_a_torch_truncated_bptt_loop(kind):
    torch = require_torch()
    V, E, H, streams, K, epochs = 7, 4, 6, 3, 5, 3
    ids = np.random.default_rng(0).integers(0, V, size=80)
    x, y, lengths = stream_windows(ids, streams=streams, window=K)
    assert lengths is not None                           # a short last window is covered too
    model = _char_model(kind, V, E, H)
    model.compile(elman.Adam(model.parameters(), lr=0.01), "sparse_categorical_crossentropy",
                  global_clipnorm=0.5)
    # torch, from the same weights: the loop a PyTorch user writes by hand
    emb = torch.nn.Embedding(V, E).double()
    rnn = getattr(torch.nn, kind)(E, H, batch_first=True).double()
    head = torch.nn.Linear(H, V).double()
    for tm, em in zip((emb, rnn, head), model.layers):
        tm.load_state_dict({k: torch.from_numpy(v) for k, v in em.state_dict().items()})
    params = [*emb.parameters(), *rnn.parameters(), *head.parameters()]
    opt = torch.optim.Adam(params, lr=0.01)
    torch_losses = []
    for _ in range(epochs):
        h = None                                         # every epoch from zero states
        for j in range(len(x) // streams):
            rows = slice(j * streams, (j + 1) * streams)
            n = int(lengths[rows][0])                    # all streams' windows are as long
            xb = torch.from_numpy(x[rows, :n])
            yb = torch.from_numpy(y[rows, :n])
            opt.zero_grad()
            out, h = rnn(emb(xb), h)
            h = tuple(s.detach() for s in h) if kind == "LSTM" else h.detach()   # truncation
            loss = torch.nn.functional.cross_entropy(head(out).reshape(-1, V), yb.reshape(-1))
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 0.5)
            opt.step()
            torch_losses.append(loss.item())
    recorder = _Losses()
    model.fit(x, y, epochs=epochs, batch_size=streams, shuffle=False, lengths=lengths,
              callbacks=[recorder], verbose=0)
    np.testing.assert_allclose(recorder.losses, torch_losses, rtol=1e-10)
    for tm, em in zip((emb, rnn, head), model.layers):
        for name, tp in tm.named_parameters():
            np.testing.assert_allclose(getattr(em, name).data, tp.detach().numpy(),
                                       rtol=1e-9, atol=1e-12, err_msg=name)
    # without stateful=True the same fit differs (each window from zeros): the test can fail
    other = _char_model(kind, V, E, H, stateful=False)
    other.compile(elman.Adam(other.parameters(), lr=0.01), "sparse_categorical_crossentropy",
                  global_clipnorm=0.5)
    rec2 = _Losses()
    other.fit(x, y, epochs=1, batch_size=streams, shuffle=False, lengths=lengths,
              callbacks=[rec2], verbose=0)
    assert not np.allclose(rec2.losses, torch_losses[:len(rec2.losses)], rtol=1e-6)


def test_validation_reads_its_own_streams_from_zero_states():
    V = 5
    ids = np.random.default_rng(4).integers(0, V, size=120)
    x, y, lengths = stream_windows(ids[:80], streams=4, window=6)
    vx, vy, vl = stream_windows(ids[80:], streams=1, window=8)
    model = _char_model("LSTM", V, 3, 4)
    model.compile("adam", "sparse_categorical_crossentropy")
    history = model.fit(x, y, batch_size=4, shuffle=False, lengths=lengths, verbose=0,
                        validation_data=(vx, vy, vl), validation_batch_size=1)
    # the same score by hand: one stream from zeros, window after window
    model.reset_states()
    model.eval()
    total = count = 0.0
    for k in range(len(vx)):
        n = int(vl[k]) if vl is not None else vx.shape[1]
        logits = model(vx[k:k + 1, :n])
        value, _ = elman.CrossEntropyLoss()(logits[0], vy[k, :n])
        total += value
        count += 1
    assert history.history["val_loss"][0] == pytest.approx(total / count, rel=1e-12)
