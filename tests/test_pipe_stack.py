"""A unidirectional stack of one sequence with its layers in a pipeline on two threads
(elman.fast._pair.pipe_stack, timeloop.stack_forward_pipe): each layer runs a chunk of steps as
soon as the layer below has finished it. The same results as the reference, whoever runs which
layer (a partner that never comes, or comes late), every change of a weight seen, and the rule
that decides when it runs."""
import numpy as np
import pytest

import elman
from elman import fast, recurrent, threads, timeloop

pytestmark = pytest.mark.skipif(not fast.pair_supported(),
                                reason="two threads: x86-64 CPUs with the fast path")

TOLERANCE = {np.float32: 2e-5, np.float64: 1e-12}


def _twins(name, layers, dtype, H=32, I=5, **options):
    """A layer and its twin with the same weights, small enough to keep the recurrence
    contracting (so float32 rounding does not grow step by step)."""
    make = getattr(elman, name)
    layer = make(I, H, num_layers=layers, dtype=dtype, seed=0, **options).eval()
    twin = make(I, H, num_layers=layers, dtype=dtype, seed=0, **options).eval()
    rng = np.random.default_rng(1)
    for p, q in zip(layer.parameters(), twin.parameters()):
        p.data[...] = q.data[...] = rng.uniform(-0.25, 0.25, p.data.shape)
    return layer, twin


def _flat(result):
    out, state = result
    return [out] + (list(state) if isinstance(state, tuple) else [state])


def _assert_close(got, want, dtype):
    for g, w in zip(_flat(got), _flat(want)):
        assert g.dtype == dtype and g.shape == w.shape
        np.testing.assert_allclose(g, w, rtol=TOLERANCE[dtype], atol=TOLERANCE[dtype])


@pytest.fixture
def piped(monkeypatch):
    """Every eligible call takes the pipeline (two threads said free, whatever this machine
    has: the protocol needs none free to be right), and its calls are counted."""
    monkeypatch.setattr(threads, "two_threads_free", lambda: True)
    calls = []
    original = recurrent.stack_forward_pipe

    def counted(*args, **kwargs):
        result = original(*args, **kwargs)
        calls.append(result is not None)
        return result
    monkeypatch.setattr(recurrent, "stack_forward_pipe", counted)
    monkeypatch.setattr(timeloop, "stack_forward_pipe", counted)
    return calls


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name, options", [("LSTM", {}), ("GRU", {}), ("RNN", {}),
                                           ("GRU", {"reset_after": False}),
                                           ("RNN", {"nonlinearity": "relu"})])
@pytest.mark.parametrize("layers", [2, 3])
def test_pipelined_stacks_equal_the_reference(piped, name, options, layers, dtype):
    """Chunks that divide the sequence or not (a last chunk of 5 steps), initial states given
    or not, a stream of calls through the layer's plan: each call the reference's results."""
    layer, twin = _twins(name, layers, dtype, **options)
    rng = np.random.default_rng(layers)
    with elman.no_grad():
        for T, with_states in [(2 * timeloop.PIPE_CHUNK + 5, True), (24, False), (24, False)]:
            x = rng.standard_normal((T, 1, 5)).astype(dtype)
            h = rng.standard_normal((layers, 1, 32)).astype(dtype)
            hx = None if not with_states else (h, h[::-1].copy()) if name == "LSTM" else h
            got = layer(x, hx)
            with fast.use(False):
                want = twin(x, hx)
            _assert_close(got, want, dtype)
    assert piped == [True] * 3 and layer._plan is not None and layer._plan.pipes


def test_unbatched_and_batch_first_input(piped):
    layer, twin = _twins("LSTM", 2, np.float32, batch_first=True)
    x = np.random.default_rng(5).standard_normal((30, 5)).astype(np.float32)
    with elman.no_grad():
        unbatched = layer(x)
        batched = layer(x[None])
        with fast.use(False):
            want = twin(x)
    _assert_close(unbatched, want, np.float32)
    np.testing.assert_array_equal(batched[0][0], unbatched[0])
    assert piped == [True, True]


def test_every_change_of_a_weight_is_seen(piped):
    """The layers' W_ih and W_hh panels are kept between calls (elman.fast._packed.KeptPack):
    a write into either, or load_state_dict, shows at the next call."""
    layer, twin = _twins("GRU", 2, np.float32, H=64)
    x = np.random.default_rng(6).standard_normal((40, 1, 5)).astype(np.float32)
    with elman.no_grad():
        layer(x)
        for name in ("weight_ih_l1", "weight_hh_l0", "weight_hh_l1"):
            getattr(layer, name).data[3] *= -1
            getattr(twin, name).data[3] *= -1
            with fast.use(False):
                want = twin(x)
            _assert_close(layer(x), want, np.float32)
        state = {k: v * 0.9 for k, v in layer.state_dict().items()}
        layer.load_state_dict(state)
        twin.load_state_dict(state)
        with fast.use(False):
            want = twin(x)
        _assert_close(layer(x), want, np.float32)
    assert all(piped)


def _pipe_arguments(layers=3, T=21, H=32, seed=0):
    """A stack's stack_forward_pipe arguments but for the threads: (kernels, model, arguments
    before ``gen``, sync, outs, h_n)."""
    model, _ = _twins("GRU", layers, np.float64, H=H)
    kernels = fast.kernels_for(model.eq, model.dtype)
    x = np.random.default_rng(seed).standard_normal((T, 1, 5))
    h0 = np.zeros((layers, 1, H))
    operands = timeloop.stack_operands(model.eq, kernels,
                                        [model._weights(k) for k in range(layers)], T, 1)
    size = timeloop.PIPE_CHUNK
    pair = fast.pair()
    outs = np.empty((layers, T, 1, H))
    h_n = np.empty_like(h0)
    sync = np.zeros((layers + 1) * pair.ROW, np.int64)
    bell = np.zeros(pair.ROW, np.int64)
    arguments = (model.eq, x, h0, None, *operands, timeloop.full_schedule(size, 1, False),
                 timeloop.full_schedule(T - 2 * size, 1, False), outs, h_n, None, sync, bell)
    return kernels, model, x, arguments, sync, outs, h_n


def test_a_caller_without_partner_runs_every_layer():
    """The partner never comes: the caller claims and runs every layer, chunk after chunk,
    and the stack equals the reference."""
    kernels, model, x, arguments, sync, outs, h_n = _pipe_arguments()
    pair = fast.pair()
    with threads.one_blas_thread():
        assert kernels.forward_stack_pipe(*arguments, 1, 0, 1) == 1
    assert list(sync[:3]) == [1, 1, 1]                       # each layer claimed once
    assert [sync[(k + 1) * pair.ROW] for k in range(3)] == [3, 3, 3]   # its 3 chunks done
    with elman.no_grad(), fast.use(False):
        out, h = model(x[:, :, :])
    np.testing.assert_allclose(outs[-1], out, atol=1e-12)
    np.testing.assert_allclose(h_n, h, atol=1e-12)


def test_a_late_partner_finds_every_layer_claimed_and_writes_nothing():
    kernels, model, x, arguments, sync, outs, h_n = _pipe_arguments(layers=2)
    with threads.one_blas_thread():
        kernels.forward_stack_pipe(*arguments, 1, 0, 1)
        before = outs.copy(), h_n.copy(), sync.copy()
        assert kernels.forward_stack_pipe(*arguments, 1, 1, 5) == 1   # (no new bell)
    np.testing.assert_array_equal(outs, before[0])
    np.testing.assert_array_equal(h_n, before[1])
    assert sync[1] == before[2][1] + 1 and sync[0] == before[2][0]     # its one claim lost


def test_the_rule():
    lstm = fast.kernels_named("elman.fast.lstm")
    eq = elman.LSTM(32, 128).eq
    rule = timeloop.pipes_layers
    T, f32 = 2 * timeloop.PIPE_CHUNK, np.float32
    assert rule(eq, lstm, T, 1, 2, 1, 128, f32)
    assert not rule(eq, lstm, T - 1, 1, 2, 1, 128, f32)             # less than two chunks
    assert not rule(eq, lstm, T, 2, 2, 1, 128, f32)                 # a batch
    assert not rule(eq, lstm, T, 1, 1, 1, 128, f32)                 # one layer
    assert not rule(eq, lstm, T, 1, 2, 2, 128, f32)                 # bidirectional
    assert not rule(eq, lstm, T, 1, timeloop.STACK_MAX + 1, 1, 128, f32)
    assert not rule(eq, None, T, 1, 2, 1, 128, f32)                 # the NumPy steps
    too_large = int(np.sqrt(timeloop.pipe_max_bytes() / (2 * 4 * 4))) + 16
    assert not rule(eq, lstm, T, 1, 2, 1, too_large, f32)           # beyond the cache
    ln = elman.LSTM(32, 64, layer_norm=True)
    assert not rule(ln.eq, fast.kernels_for(ln.eq, ln.dtype), T, 1, 2, 1, 64, f32)


def test_no_pipeline_without_two_free_threads_or_with_masks(monkeypatch):
    """Two threads not free now (asked at every call, planned or not), dropout in training,
    gradients on: the layers one after the other, as before."""
    free = [False]
    monkeypatch.setattr(threads, "two_threads_free", lambda: free[0])
    used = []
    original = recurrent.stack_forward_pipe
    monkeypatch.setattr(recurrent, "stack_forward_pipe",
                        lambda *a, **k: used.append(1) or original(*a, **k))
    monkeypatch.setattr(timeloop, "stack_forward_pipe",
                        lambda *a, **k: used.append(1) or original(*a, **k))
    layer, twin = _twins("GRU", 2, np.float64, dropout=0.5)
    x = np.random.default_rng(7).standard_normal((20, 1, 5))
    with elman.no_grad():
        for _ in range(2):
            layer(x)
        assert used == []
        free[0] = True
        got = layer(x)                                      # (the plan asks the moment)
        assert used == [1]
        with fast.use(False):
            _assert_close(got, twin(x), np.float64)
        layer.train()
        layer(x)
        assert used == [1]
    layer.eval()
    out, _ = layer(x)                                       # gradients on
    assert used == [1]
    layer.backward(np.ones_like(out))
