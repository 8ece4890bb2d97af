"""Behaviour of the recurrent layers beyond the numbers: shapes and layouts, accumulation,
dropout and modes, and the errors a user gets for bad input (messages asserted)."""
import numpy as np
import pytest

import elman


@pytest.mark.parametrize("cls", [elman.RNN, elman.GRU, elman.LSTM])
def test_shapes_for_every_layout(cls):
    layer = cls(3, 5, num_layers=2, bidirectional=True, seed=0)
    out, state = layer(np.zeros((7, 4, 3)))
    h_n = state[0] if cls is elman.LSTM else state
    assert out.shape == (7, 4, 10) and h_n.shape == (4, 4, 5) and out.dtype == np.float32
    out, state = layer(np.zeros((7, 3)))                        # unbatched
    h_n = state[0] if cls is elman.LSTM else state
    assert out.shape == (7, 10) and h_n.shape == (4, 5)
    dx, _ = layer.backward(np.ones_like(out))
    assert dx.shape == (7, 3)
    bf = cls(3, 5, batch_first=True, seed=0)
    out, _ = bf(np.zeros((4, 7, 3)))
    assert out.shape == (4, 7, 5)
    dx, _ = bf.backward(np.ones_like(out))
    assert dx.shape == (4, 7, 3)


def test_batch_first_equals_transposed_time_first():
    rng = np.random.default_rng(0)
    a = elman.GRU(3, 4, num_layers=2, bidirectional=True, dtype=np.float64, seed=1)
    b = elman.GRU(3, 4, num_layers=2, bidirectional=True, batch_first=True, dtype=np.float64)
    b.load_state_dict(a.state_dict())
    x = rng.standard_normal((6, 2, 3))
    out_a, h_a = a(x, lengths=[6, 3])
    out_b, h_b = b(x.transpose(1, 0, 2), lengths=[6, 3])
    np.testing.assert_array_equal(out_b, out_a.transpose(1, 0, 2))
    np.testing.assert_array_equal(h_b, h_a)
    dout = rng.standard_normal(out_a.shape)
    dx_a, dh_a = a.backward(dout)
    dx_b, dh_b = b.backward(dout.transpose(1, 0, 2))
    np.testing.assert_allclose(dx_b, dx_a.transpose(1, 0, 2), rtol=1e-12)
    for (n, p), (_, q) in zip(a.named_parameters(), b.named_parameters()):
        np.testing.assert_allclose(p.grad, q.grad, rtol=1e-12, err_msg=n)


def test_lengths_equal_running_each_sequence_alone():
    rng = np.random.default_rng(1)
    lstm = elman.LSTM(2, 3, bidirectional=True, dtype=np.float64, seed=0)
    x = rng.standard_normal((5, 3, 2))
    h0, c0 = rng.standard_normal((2, 3, 3)), rng.standard_normal((2, 3, 3))
    lengths = [2, 5, 3]
    out, (h_n, c_n) = lstm(x, (h0, c0), lengths=lengths)
    for b, n in enumerate(lengths):
        o, (h, c) = lstm(x[:n, b], (h0[:, b], c0[:, b]))
        np.testing.assert_allclose(out[:n, b], o, rtol=1e-12)
        np.testing.assert_array_equal(out[n:, b], 0)
        np.testing.assert_allclose(h_n[:, b], h, rtol=1e-12)
        np.testing.assert_allclose(c_n[:, b], c, rtol=1e-12)


def test_parameter_gradients_accumulate_until_zero_grad():
    rng = np.random.default_rng(2)
    rnn = elman.RNN(2, 3, dtype=np.float64, seed=0)
    x = rng.standard_normal((4, 2, 2))
    out, _ = rnn(x)
    rnn.backward(np.ones_like(out), retain_graph=True)
    once = rnn.weight_hh_l0.grad.copy()
    rnn.backward(np.ones_like(out))
    np.testing.assert_allclose(rnn.weight_hh_l0.grad, 2 * once)
    rnn.zero_grad()
    assert not rnn.weight_hh_l0.grad.any()


def test_backward_with_only_state_gradients():
    rng = np.random.default_rng(3)
    lstm = elman.LSTM(2, 3, num_layers=2, dtype=np.float64, seed=0)
    x = rng.standard_normal((4, 2, 2))
    lstm(x)
    dx, (dh0, dc0) = lstm.backward(None, (None, np.ones((2, 2, 3))), retain_graph=True)
    assert np.abs(dx).sum() > 0 and dh0.shape == (2, 2, 3) and dc0.shape == (2, 2, 3)
    dx, (dh0, dc0) = lstm.backward(None, None)
    assert not dx.any() and not dh0.any() and not dc0.any()


def test_float64_input_to_float32_layer_is_cast():
    rnn = elman.RNN(2, 3, seed=0)
    out, h = rnn(np.ones((3, 1, 2), np.float64))
    assert out.dtype == np.float32 and h.dtype == np.float32


def test_dropout_only_in_training_mode():
    rng = np.random.default_rng(4)
    x = rng.standard_normal((5, 3, 2))
    layer = elman.GRU(2, 8, num_layers=3, dropout=0.5, seed=0)
    ref = elman.GRU(2, 8, num_layers=3, dropout=0.0)
    ref.load_state_dict(layer.state_dict())
    train_a, _ = layer(x)
    train_b, _ = layer(x)
    assert not np.allclose(train_a, train_b)          # fresh masks every call
    layer.eval()
    np.testing.assert_array_equal(layer(x)[0], ref(x)[0])
    np.testing.assert_array_equal(layer(x)[0], layer(x)[0])
    single = elman.GRU(2, 8, num_layers=1, dropout=0.5, seed=0)   # dropout after the last
    np.testing.assert_array_equal(single(x)[0], single(x)[0])     # layer: never applied


def test_seed_makes_initialisation_reproducible_and_dtype_independent():
    a = elman.LSTM(3, 4, seed=7)
    b = elman.LSTM(3, 4, seed=7, dtype=np.float64)
    np.testing.assert_allclose(a.weight_ih_l0.data, b.weight_ih_l0.data, rtol=1e-7)
    assert not np.array_equal(a.weight_ih_l0.data, elman.LSTM(3, 4, seed=8).weight_ih_l0.data)


@pytest.mark.parametrize("kwargs,exc,message", [
    (dict(input_size=0), ValueError, r"input_size must be an integer >= 1, got 0"),
    (dict(hidden_size=2.5), ValueError, r"hidden_size must be an integer >= 1, got 2.5"),
    (dict(num_layers=0), ValueError, r"num_layers must be an integer >= 1, got 0"),
    (dict(dropout=1.5), ValueError, r"dropout must be a number in \[0, 1\], got 1.5"),
    (dict(proj_size=4), ValueError, r"proj_size must be smaller than hidden_size \(4\), got 4"),
    (dict(proj_size=-1), ValueError, r"proj_size must be an integer >= 0, got -1"),
    (dict(dtype=np.int32), TypeError, r"dtype must be np.float32 or np.float64, got int32"),
    (dict(seed="x"), TypeError, r"seed must be an int, a numpy Generator or None, got 'x'"),
])
def test_constructor_errors(kwargs, exc, message):
    args = dict(input_size=3, hidden_size=4)
    args.update(kwargs)
    with pytest.raises(exc, match=message):
        elman.LSTM(**args)


def test_input_errors_name_argument_expected_and_received():
    gru = elman.GRU(3, 4, num_layers=2)
    with pytest.raises(ValueError, match=r"input.shape\[-1\] must be equal to input_size. "
                                         r"Expected 3, got 5"):
        gru(np.zeros((6, 2, 5)))
    with pytest.raises(ValueError, match=r"input must have 2 \(unbatched\) or 3 \(batched\) "
                                         r"dimensions, got 4 with shape \(1, 6, 2, 3\)"):
        gru(np.zeros((1, 6, 2, 3)))
    with pytest.raises(ValueError, match=r"Expected h_0 of shape \(2, 2, 4\), got \(1, 2, 4\)"):
        gru(np.zeros((6, 2, 3)), np.zeros((1, 2, 4)))
    with pytest.raises(TypeError, match=r"input must hold real numbers, got an array of dtype"):
        gru(np.array([["a"]]))
    with pytest.raises(TypeError, match=r"hx of GRU must be one array h_0"):
        gru(np.zeros((6, 2, 3)), (np.zeros((2, 2, 4)), np.zeros((2, 2, 4))))
    lstm = elman.LSTM(3, 4)
    with pytest.raises(TypeError, match=r"hx of LSTM must be a tuple \(h_0, c_0\)"):
        lstm(np.zeros((6, 2, 3)), np.zeros((1, 2, 4)))
    with pytest.raises(ValueError, match=r"Expected c_0 of shape \(1, 2, 4\), got \(1, 2, 3\)"):
        lstm(np.zeros((6, 2, 3)), (np.zeros((1, 2, 4)), np.zeros((1, 2, 3))))


def test_lengths_errors():
    rnn = elman.RNN(3, 4)
    x = np.zeros((5, 3, 3))
    with pytest.raises(ValueError, match=r"RNN: lengths must be in \[1, 5\].*got 6 at index 1"):
        rnn(x, lengths=[5, 6, 1])
    with pytest.raises(ValueError, match=r"lengths must be in \[1, 5\].*got 0 at index 2"):
        rnn(x, lengths=[5, 2, 0])
    with pytest.raises(ValueError, match=r"lengths must have shape \(3,\).*got shape \(2,\)"):
        rnn(x, lengths=[5, 2])
    with pytest.raises(TypeError, match=r"lengths must hold integers.*dtype float64"):
        rnn(x, lengths=[5.0, 2.5, 1.0])
    with pytest.raises(ValueError, match=r"lengths is only supported for batched input"):
        rnn(np.zeros((5, 3)), lengths=[5])


def test_backward_frees_the_saved_sequence():
    """One backward per forward (PyTorch's default): the second fails clearly, a failed one (bad
    dout) keeps the saved sequence, and a new forward makes backward possible again."""
    gru = elman.GRU(3, 4, seed=0)
    out, _ = gru(np.zeros((5, 2, 3)))
    with pytest.raises(ValueError, match=r"Expected dout"):
        gru.backward(np.zeros((5, 2, 3)))
    gru.backward(np.ones_like(out))
    assert gru._cache is None
    with pytest.raises(RuntimeError, match=r"one backward per forward"):
        gru.backward(np.ones_like(out))
    out, _ = gru(np.zeros((5, 2, 3)))
    gru.backward(np.ones_like(out), retain_graph=True)            # kept: a second backward works
    gru.backward(np.ones_like(out))


def test_backward_errors():
    lstm = elman.LSTM(3, 4)
    with pytest.raises(RuntimeError, match=r"LSTM.backward\(\) needs a forward\(\) first"):
        lstm.backward(np.zeros((5, 2, 4)))
    out, _ = lstm(np.zeros((5, 2, 3)))
    with pytest.raises(ValueError, match=r"Expected dout of shape \(5, 2, 4\), got \(5, 2, 3\)"):
        lstm.backward(np.zeros((5, 2, 3)))
    with pytest.raises(TypeError, match=r"dhx of LSTM must be a tuple \(dh_n, dc_n\)"):
        lstm.backward(None, np.zeros((1, 2, 4)))
    with pytest.raises(ValueError, match=r"Expected dc_n of shape \(1, 2, 4\), got \(2, 4\)"):
        lstm.backward(None, (None, np.zeros((2, 4))))


@pytest.mark.parametrize("cls", [elman.RNN, elman.GRU, elman.LSTM])
def test_input_grad_false_skips_dx_and_changes_nothing_else(cls):
    rng = np.random.default_rng(6)
    layer = cls(3, 4, num_layers=2, bidirectional=True, batch_first=True, dtype=np.float64,
                seed=0)
    x = rng.standard_normal((3, 5, 3))
    out, _ = layer(x, lengths=[2, 5, 4])
    dout = rng.standard_normal(out.shape)
    dx, full_state = layer.backward(dout, retain_graph=True)
    full = {n: p.grad.copy() for n, p in layer.named_parameters()}
    layer.zero_grad()
    none, state = layer.backward(dout, input_grad=False)
    assert none is None and dx.shape == x.shape
    for a, b in zip(np.atleast_1d(state), np.atleast_1d(full_state)):
        np.testing.assert_array_equal(a, b)
    for n, p in layer.named_parameters():
        np.testing.assert_array_equal(p.grad, full[n], err_msg=n)


@pytest.mark.parametrize("kind", ["RNN", "GRU", "LSTM"])
def test_workspace_reuses_internal_arrays_and_never_what_it_returned(kind):
    """Gates, cell states and their gradients are reused from step to step; outputs, final
    states and input gradients handed to the caller are never written again."""
    rng = np.random.default_rng(11)
    layer = getattr(elman, kind)(3, 4, num_layers=2, bidirectional=True, seed=0)
    fresh = getattr(elman, kind)(3, 4, num_layers=2, bidirectional=True, seed=0)
    kept = []
    for step in range(3):
        T = 5 if step < 2 else 6                        # the last step changes the shape
        x = rng.standard_normal((T, 2, 3)).astype(np.float32)
        dout = rng.standard_normal((T, 2, 8)).astype(np.float32)
        out, state = layer(x, lengths=[T, 2])
        gates = layer._cache["caches"][0].gates
        dx, dstate = layer.backward(dout)
        kept.append([a.copy() for a in (out, dx)] + [(out, dx)])
        fresh.zero_grad()
        fresh._workspaces = [elman.timeloop.Workspace() for _ in fresh._workspaces]
        out2, _ = fresh(x, lengths=[T, 2])
        dx2, _ = fresh.backward(dout)
        np.testing.assert_array_equal(out, out2)
        np.testing.assert_array_equal(dx, dx2)
        if step == 1:
            assert gates is previous_gates                    # same shape: reused
        if step == 2:
            assert gates.shape[0] == 6                        # new shape: a new array
        previous_gates = gates
        layer.zero_grad()
    for copies_and_views in kept:                             # nothing handed out changed
        *copies, (out, dx) = copies_and_views
        np.testing.assert_array_equal(copies[0], out)
        np.testing.assert_array_equal(copies[1], dx)
    layer.clear_workspace()
    assert all(not ws._free for ws in layer._workspaces)


def test_workspace_in_an_inference_loop():
    """Forward after forward (no backward): the previous, never differentiated cache's arrays
    are reused, and earlier outputs stay as they were."""
    lstm = elman.LSTM(3, 4, seed=0)
    lstm.eval()
    x1, x2 = (np.random.default_rng(s).standard_normal((5, 2, 3)) for s in (1, 2))
    out1, (h1, c1) = lstm(x1)
    saved = [a.copy() for a in (out1, h1, c1)]
    gates1 = lstm._cache["caches"][0].gates
    lstm(x2)
    assert lstm._cache["caches"][0].gates is gates1
    for a, b in zip(saved, (out1, h1, c1)):
        np.testing.assert_array_equal(a, b)


def test_schedule_lists_running_steps_in_processing_order():
    """timeloop._schedule, walked by both paths: (t, prev, new, rows); steps without a running
    sequence are left out; the reverse direction reads slot t+1 and writes slot t."""
    from elman.timeloop import _schedule
    active = np.array([3, 2, 0, 0])                       # lengths [2, 2, 1] padded to T = 4
    np.testing.assert_array_equal(_schedule(4, 3, active, False), [[0, 0, 1, 3], [1, 1, 2, 2]])
    np.testing.assert_array_equal(_schedule(4, 3, active, True), [[1, 2, 1, 2], [0, 1, 0, 3]])
    full = _schedule(2, 5, None, False)
    assert full.dtype == np.int64 and full.flags.c_contiguous
    np.testing.assert_array_equal(full, [[0, 0, 1, 5], [1, 1, 2, 5]])
