"""elman.no_grad() and its relatives: the switch itself, and every layer under it (the same
outputs, nothing kept, a backward that says why it cannot run)."""
import threading

import numpy as np
import pytest

import elman
from elman import recurrent, threads, timeloop
from elman.lean_plan import LeanPlan
from _torch import require


def test_the_switch_nests_restores_and_decorates():
    assert elman.is_grad_enabled()
    with elman.no_grad():
        assert not elman.is_grad_enabled()
        with elman.enable_grad():
            assert elman.is_grad_enabled()
            with elman.inference_mode():
                assert not elman.is_grad_enabled()
            assert elman.is_grad_enabled()
        assert not elman.is_grad_enabled()
        with elman.inference_mode(False):           # leaves the setting as it is
            assert not elman.is_grad_enabled()
    assert elman.is_grad_enabled()

    @elman.no_grad()
    def inside():
        return elman.is_grad_enabled()
    assert inside() is False and elman.is_grad_enabled()

    previous = elman.set_grad_enabled(False)        # a plain call switches at once
    try:
        assert not elman.is_grad_enabled()
    finally:
        del previous
        elman.set_grad_enabled(True)
    with elman.set_grad_enabled(False):
        assert not elman.is_grad_enabled()
    assert elman.is_grad_enabled()


def test_the_switch_restores_after_an_error():
    with pytest.raises(ZeroDivisionError):
        with elman.no_grad():
            1 / 0
    assert elman.is_grad_enabled()


def test_the_switch_is_per_thread():
    seen = []
    with elman.no_grad():
        worker = threading.Thread(target=lambda: seen.append(elman.is_grad_enabled()))
        worker.start()
        worker.join()
        assert not elman.is_grad_enabled()
    assert seen == [True]


@pytest.mark.parametrize("call", [lambda: elman.set_grad_enabled(0),
                                  lambda: elman.inference_mode("yes")])
def test_bad_modes_are_refused(call):
    with pytest.raises(TypeError, match="must be a bool"):
        call()
    assert elman.is_grad_enabled()


def _run(layer, x, **kw):
    out = layer(x, **kw)
    return out[0] if isinstance(out, tuple) else out


LAYERS = {
    "lstm": lambda: (elman.LSTM(3, 5, num_layers=2, bidirectional=True, seed=0),
                     dict(lengths=np.array([4, 2, 3]))),
    "gru": lambda: (elman.GRU(3, 5, seed=0), {}),
    "rnn-numpy": lambda: (elman.RNN(3, 5, seed=0), {}),
    "ln-lstm-proj": lambda: (elman.LSTM(3, 5, layer_norm=True, proj_size=2, seed=0), {}),
    "mingru": lambda: (elman.MinGRU(3, 5, seed=0), {}),
    "lstmcell": lambda: (elman.LSTMCell(3, 5, seed=0), {}),
}


@pytest.mark.parametrize("name", sorted(LAYERS))
def test_recurrent_layers_compute_the_same_and_keep_nothing(name):
    layer, kw = LAYERS[name]()
    x = np.random.default_rng(1).standard_normal((3, 3) if name == "lstmcell" else (4, 3, 3))
    x = x.astype(np.float32)
    context = elman.fast.use(False) if name == "rnn-numpy" else elman.enable_grad()
    with context:
        expected = _run(layer, x, **kw)
        assert layer._cache is not None
        with elman.no_grad():
            got = _run(layer, x, **kw)
    np.testing.assert_array_equal(got, expected)
    assert layer._cache is None
    with pytest.raises(RuntimeError, match=r"elman\.no_grad\(\) saves nothing"):
        layer.backward(np.ones_like(got))


def test_a_layer_gives_its_arrays_back_for_the_next_call():
    lstm = elman.LSTM(3, 64)
    T, N = 40, 16                     # more recurrent work than a lean call has
    assert 2.0 * T * N * 256 * 64 >= timeloop.LEAN_MAX_FLOPS
    x = np.zeros((T, N, 3), np.float32)
    with elman.no_grad():
        lstm(x)
        kept = lstm._workspaces[0]._free.get("GX")
        assert kept is not None and kept.shape == (T, N, 256)
        lstm(x)                                         # reused, and given back again
        assert lstm._workspaces[0]._free.get("GX") is kept
        # the hidden states are the output of a unidirectional layer: never kept for reuse
        assert "S" not in lstm._workspaces[0]._free


@pytest.mark.parametrize("grad", [False, True])
@pytest.mark.parametrize("shared", [False, True])
def test_copied_out_hidden_states_are_reused_and_outputs_stay_intact(grad, shared, monkeypatch):
    """Where the output is a copy of the hidden states (a bidirectional layer's halves, its
    directions' states not shared), the states go back to the workspace like the gates; an
    output already returned is never touched by the next call, shared states (the output's
    own array, new at each call) included. (The general path's: not the directions at once
    on the pair's threads, which keep nothing.)"""
    monkeypatch.setattr(recurrent, "pairs_directions", lambda *args: False)
    if not shared:
        monkeypatch.setattr(recurrent, "shares_states", lambda eq, dtype: False)
    gru = elman.GRU(3, 64, bidirectional=True, seed=0)
    rng = np.random.default_rng(0)
    x1, x2 = (rng.standard_normal((40, 16, 3)).astype(np.float32) for _ in range(2))
    with elman.set_grad_enabled(grad):
        first, _ = gru(x1)
        if grad:
            gru.backward(np.ones_like(first))
        copy = first.copy()
        kept = gru._workspaces[0]._free.get("S")
        if shared:
            assert kept is None                          # the output's array holds them
        else:
            assert kept is not None and kept.shape == (41, 16, 64)
        second, _ = gru(x2)
        if grad:
            gru.backward(np.ones_like(second))
        assert gru._workspaces[0]._free.get("S") is kept            # reused
    np.testing.assert_array_equal(first, copy)
    with elman.no_grad():
        again, _ = gru(x2)
    np.testing.assert_array_equal(again, second)


# -- the lean path: small no-grad calls skip the general path's bookkeeping ----------------

LEAN_LAYERS = {
    "rnn": lambda dt: elman.RNN(3, 6, dtype=dt, seed=0),
    "rnn-relu-2layers-bi": lambda dt: elman.RNN(3, 6, num_layers=2, nonlinearity="relu",
                                                bidirectional=True, dtype=dt, seed=0),
    "gru": lambda dt: elman.GRU(3, 6, dtype=dt, seed=0),
    "gru-classic": lambda dt: elman.GRU(3, 6, reset_after=False, dtype=dt, seed=0),
    "gru-2layers-bi": lambda dt: elman.GRU(3, 6, num_layers=2, bidirectional=True, dtype=dt,
                                           seed=0),
    "gru-classic-3layers-bi-no-bias": lambda dt: elman.GRU(3, 6, num_layers=3, bias=False,
                                                           reset_after=False,
                                                           bidirectional=True, dtype=dt,
                                                           seed=0),
    "lstm-2layers-bi-batch-first": lambda dt: elman.LSTM(3, 6, num_layers=2, bidirectional=True,
                                                         batch_first=True, dtype=dt, seed=0),
    "lstm": lambda dt: elman.LSTM(3, 6, dtype=dt, seed=0),
    "lstm-2layers": lambda dt: elman.LSTM(3, 6, num_layers=2, dtype=dt, seed=0),
    "lstm-bi-batch-first": lambda dt: elman.LSTM(3, 6, bidirectional=True, batch_first=True,
                                                 dtype=dt, seed=0),
    "lstm-peephole": lambda dt: elman.LSTM(3, 6, peephole=True, dtype=dt, seed=0),
    "lstm-layer-norm": lambda dt: elman.LSTM(3, 6, layer_norm=True, dtype=dt, seed=0),
    "gru-layer-norm-2layers": lambda dt: elman.GRU(3, 6, num_layers=2, layer_norm=True,
                                                   dtype=dt, seed=0),
    # options that a call in evaluation mode ignores
    "lstm-dropouts-eval": lambda dt: elman.LSTM(3, 6, num_layers=2, dropout=0.5,
                                                recurrent_dropout=0.3, input_dropout=0.2,
                                                dtype=dt, seed=0).eval(),
}


def _perturb(layer, rng):
    """Non-zero values everywhere (peephole weights and layer-norm shifts start at zero)."""
    for p in layer.parameters():
        p.data[...] = rng.uniform(-0.6, 0.6, p.data.shape)


def _calls(layer, steps, state, **kw):
    """The outputs and final states of a stream of calls, state carried."""
    results = []
    for x in steps:
        out, state = layer(x, state, **kw)
        results.append(out)
    flat = [state] if not isinstance(state, tuple) else list(state)
    return results + flat


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", sorted(LEAN_LAYERS))
def test_lean_calls_equal_the_general_path(name, dtype, monkeypatch):
    """One-step calls with the state carried, a short sequence, an unbatched sequence: the
    lean path runs them (the general one is made to fail) and gives exactly what the
    general path gives."""
    layer = LEAN_LAYERS[name](dtype)
    _perturb(layer, np.random.default_rng(3))
    rng = np.random.default_rng(4)
    N = 2
    first = (N, 1, 3) if layer.batch_first else (1, N, 3)
    steps = [rng.standard_normal(first).astype(dtype) for _ in range(3)]
    sequence = [rng.standard_normal((5, N, 3)).astype(dtype).swapaxes(0, 1).copy()
                if layer.batch_first else rng.standard_normal((5, N, 3)).astype(dtype)]
    unbatched = [rng.standard_normal((4, 3)).astype(dtype)]
    cases = [(steps, None), (sequence, None), (unbatched, None)]

    def general_path_refused(*args, **kwargs):
        raise AssertionError("a lean call took the general path")

    with elman.no_grad():
        monkeypatch.setattr(recurrent, "sequence_forward", general_path_refused)
        monkeypatch.setattr(recurrent, "forward_directions", general_path_refused)
        planned = [_calls(layer, xs, state) for xs, state in cases]     # (plans kept: used)
        assert layer._plan is not None
        layer._plan = None
        monkeypatch.setattr(LeanPlan, "applies", classmethod(lambda cls, *args: False))
        lean = [_calls(layer, xs, state) for xs, state in cases]        # (no plan)
        assert layer._plan is None
        monkeypatch.undo()
        monkeypatch.setattr(LeanPlan, "applies", classmethod(lambda cls, *args: False))
        monkeypatch.setattr(recurrent, "runs_lean", lambda *args: False)
        general = [_calls(layer, xs, state) for xs, state in cases]
    for run in (planned, lean):
        for got, expected in zip(run, general):
            assert len(got) == len(expected)
            for a, b in zip(got, expected):
                assert a.dtype == dtype
                np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("name, kernel", [("rnn", "rnn"), ("gru", "gru"), ("gru-classic", "gru"),
                                          ("lstm", "lstm")])
def test_plain_cells_run_a_lean_call_as_one_compiled_call(name, kernel, monkeypatch):
    """The kernel's forward_lean (projection, arrays and loop in one compiled call) runs a lean
    call of one layer-direction, its separate forward none (the test above shows the results
    are the general path's)."""
    require("numba")
    module = elman.fast.kernels_named(f"elman.fast.{kernel}")
    whole, original = [], module.forward_lean
    monkeypatch.setattr(module, "forward_lean", lambda *a: whole.append(1) or original(*a))
    monkeypatch.setattr(module, "forward", lambda *a: pytest.fail("the loop ran on its own"))
    layer = LEAN_LAYERS[name](np.float32)
    with elman.no_grad():
        layer(np.ones((2, 1, 3), np.float32))
    assert len(whole) == 1


@pytest.mark.parametrize("name, kernel", [("rnn-relu-2layers-bi", "rnn"), ("lstm-2layers", "lstm"),
                                          ("gru-2layers-bi", "gru"),
                                          ("gru-classic-3layers-bi-no-bias", "gru"),
                                          ("lstm-bi-batch-first", "lstm"),
                                          ("lstm-2layers-bi-batch-first", "lstm")])
def test_plain_cells_run_a_lean_stack_as_one_compiled_call(name, kernel, monkeypatch):
    """A lean call of several layer-directions runs as one call of the kernel's
    forward_stack_lean (every layer and direction in one compiled call), neither its
    forward_lean nor its forward; the test above shows the results are the general path's."""
    require("numba")
    module = elman.fast.kernels_named(f"elman.fast.{kernel}")
    stacks, original = [], module.forward_stack_lean
    monkeypatch.setattr(module, "forward_stack_lean",
                        lambda *a: stacks.append(1) or original(*a))
    monkeypatch.setattr(module, "forward_lean", lambda *a: pytest.fail("a direction alone"))
    monkeypatch.setattr(module, "forward", lambda *a: pytest.fail("the loop ran on its own"))
    layer = LEAN_LAYERS[name](np.float32)
    with elman.no_grad():
        layer(np.ones((1, 2, 3), np.float32))
    assert stacks == [1]


def test_a_lean_stack_with_unusual_parameter_arrays_runs_direction_by_direction(monkeypatch):
    """A parameter array that is not C-contiguous and writeable (assigned by hand) cannot join
    the compiled stack call's tuples of one array type: that call runs each layer-direction on
    its own instead, with the same results as the general path."""
    require("numba")
    layer = elman.LSTM(3, 6, num_layers=2, bidirectional=True, seed=0)
    x = np.random.default_rng(0).standard_normal((4, 2, 3)).astype(np.float32)
    with elman.no_grad():
        expected = _calls(layer, [x], None)
    frozen = layer.weight_hh_l1_reverse.data.copy()
    frozen.flags.writeable = False
    layer.weight_hh_l1_reverse.data = frozen
    module = elman.fast.kernels_named("elman.fast.lstm")
    monkeypatch.setattr(module, "forward_stack_lean", lambda *a: pytest.fail("stack call"))
    with elman.no_grad():
        got = _calls(layer, [x], None)
    for a, b in zip(got, expected):
        np.testing.assert_array_equal(a, b)


def test_lean_calls_keep_what_the_general_path_keeps():
    """A stateful layer carries its state through lean calls; a cache kept by an earlier
    differentiable call is dropped (a later backward is refused), as by any forward."""
    rng = np.random.default_rng(5)
    steps = [rng.standard_normal((1, 1, 3)).astype(np.float32) for _ in range(4)]
    stateful = elman.GRU(3, 4, stateful=True, seed=0)
    carried = elman.GRU(3, 4, seed=0)
    with elman.no_grad():
        state = None
        for x in steps:
            got, _ = stateful(x)
            expected, state = carried(x, state)
            np.testing.assert_array_equal(got, expected)
    lstm = elman.LSTM(3, 4, seed=0)
    out, _ = lstm(steps[0])
    assert lstm._cache is not None
    with elman.no_grad():
        lstm(steps[1])
    assert lstm._cache is None
    with pytest.raises(RuntimeError, match="needs a forward"):
        lstm.backward(np.ones_like(out))


def test_lean_path_rule_per_direction_count(monkeypatch):
    """A unidirectional call is lean below LEAN_MAX_FLOPS of recurrent work (one sequence at
    any amount: it has no row blocks to split); a bidirectional one only below
    OVERLAP_MIN_FLOPS a direction too, since from there its directions run at once on the
    general path (a batch-1 LSTM at (T, I, H) = (50, 32, 128): 6.6 MFLOP)."""
    require("numba")
    monkeypatch.setattr(threads, "one_thread_product", lambda *args: True)
    kernels = elman.fast.kernels_for(elman.LSTM(3, 4).eq, np.float32)
    T, N, H = 50, 1, 128
    flops = 2.0 * T * N * 4 * H * H
    assert timeloop.OVERLAP_MIN_FLOPS <= flops < timeloop.LEAN_MAX_FLOPS
    assert timeloop.runs_lean(kernels, T, N, 4 * H, H, 1)
    assert not timeloop.runs_lean(kernels, T, N, 4 * H, H, 2)
    assert timeloop.runs_lean(kernels, 20, N, 4 * H, H, 2)            # 2.6 MFLOP a direction
    assert not timeloop.runs_lean(kernels, 100, 2, 4 * H, H, 1)       # 26 MFLOP
    assert timeloop.runs_lean(kernels, 200, N, 4 * H, H, 1)           # 26 MFLOP, batch 1
    assert not timeloop.runs_lean(kernels, 200, N, 4 * H, H, 2)       # (two directions)
    assert not timeloop.runs_lean(None, 1, 1, 4 * H, H, 1)            # no compiled loops
    monkeypatch.setattr(threads, "one_thread_product", lambda *args: False)
    assert not timeloop.runs_lean(kernels, 1, 1, 4 * H, H, 1)         # BLAS would thread it


@pytest.mark.parametrize("name", ["LSTM", "GRU", "RNN"])
def test_one_long_sequence_on_one_thread_takes_the_lean_path(name, monkeypatch):
    """A batch of one whose steps do not run on two threads (none free: a neighbour busy)
    takes the lean path however long, never the general one, with the reference's
    results."""
    require("numba")
    monkeypatch.setattr(threads, "two_threads_free", lambda: False)
    layer = getattr(elman, name)(5, 128, seed=0).eval()
    x = np.random.default_rng(0).standard_normal((200, 1, 5)).astype(np.float32)
    with elman.no_grad(), elman.fast.use(False):
        want = layer(x)

    def general(*args, **kwargs):
        raise AssertionError("the general path")
    monkeypatch.setattr(recurrent, "sequence_forward", general)
    monkeypatch.setattr(recurrent, "forward_directions", general)
    with elman.no_grad():
        for _ in range(2):                        # (the second through the layer's plan)
            got = layer(x)
            np.testing.assert_allclose(got[0], want[0], rtol=1e-4, atol=1e-5)


def test_a_batch_1_bidirectional_lstm_runs_its_directions_at_once(monkeypatch):
    """Through the layer: the batch-1 bidirectional LSTM above runs its two directions at
    once where two threads are granted: on the pair's two threads where the pair runs
    (timeloop.stack_forward_pair, a lean call), else on the general path's
    threads.concurrently."""
    require("numba")
    monkeypatch.setattr(threads, "granted", lambda: 2)
    layer = elman.LSTM(32, 128, bidirectional=True, seed=0).eval()
    seen, paired = [], []
    original = timeloop.threads.concurrently
    monkeypatch.setattr(timeloop.threads, "concurrently",
                        lambda *calls: seen.append(len(calls)) or original(*calls))
    pair = recurrent.stack_forward_pair
    monkeypatch.setattr(recurrent, "stack_forward_pair",
                        lambda *args: paired.append(1) or pair(*args))
    with elman.no_grad():
        layer(np.ones((50, 1, 32), np.float32))
    if elman.fast.pair_supported():
        assert paired == [1] and seen == []
    else:
        assert seen == [2] and paired == []


@pytest.mark.parametrize("layer_kwargs, training, reason", [
    (dict(zoneout=0.3), False, "zoneout (its expectation mixes the states)"),
    (dict(proj_size=2), False, "a projection"),
    (dict(recurrent_dropout=0.3), True, "dropout in training"),
])
def test_calls_the_lean_path_does_not_cover_take_the_general_one(layer_kwargs, training,
                                                                  reason, monkeypatch):
    layer = elman.LSTM(3, 4, seed=0, **layer_kwargs).train(training)
    calls = []
    monkeypatch.setattr(recurrent, "sequence_forward_lean",
                        lambda *args: calls.append(args) or pytest.fail(reason))
    with elman.no_grad():
        out, _ = layer(np.ones((2, 1, 3), np.float32))
    assert out.shape[0] == 2 and not calls


def test_a_training_step_after_no_grad_inference_is_unchanged():
    """Inference between two training steps does not disturb them: the gradients equal those
    of a twin that never ran it."""
    rng = np.random.default_rng(2)
    x = rng.standard_normal((5, 2, 3)).astype(np.float32)
    a, b = elman.GRU(3, 4, seed=0), elman.GRU(3, 4, seed=0)
    out_a, _ = a(x)
    with elman.no_grad():
        b(x + 1)
    out_b, _ = b(x)
    a.backward(np.ones_like(out_a))
    b.backward(np.ones_like(out_b))
    np.testing.assert_array_equal(a.weight_hh_l0.grad, b.weight_hh_l0.grad)


def _model():
    return elman.Sequential([elman.Embedding(7, 4, seed=0), elman.LSTM(4, 6, seed=0),
                             elman.LayerNorm(6), elman.Dropout(0.5, seed=0), elman.Last(),
                             elman.Linear(6, 3, seed=0)])


def test_a_model_under_no_grad_keeps_nothing_in_any_layer():
    model = _model().eval()
    x = np.random.default_rng(3).integers(0, 7, (2, 5))
    expected = model(x)
    with elman.no_grad():
        got = model(x)
    np.testing.assert_array_equal(got, expected)
    assert all(getattr(m, "_cache", None) is None for _, m in model.named_modules())
    with pytest.raises(RuntimeError, match=r"no_grad\(\) saves nothing"):
        model.backward(np.ones_like(got))


def test_predict_and_evaluate_run_under_no_grad():
    model = _model()
    model.compile(loss="sparse_categorical_crossentropy", optimizer="adam")
    x = np.random.default_rng(4).integers(0, 7, (6, 5))
    y = np.array([0, 1, 2, 0, 1, 2])
    model.predict(x, batch_size=4)
    assert all(getattr(m, "_cache", None) is None for _, m in model.named_modules())
    model(x)                                            # a training forward keeps its caches
    model.evaluate(x, y, batch_size=4)
    assert all(getattr(m, "_cache", None) is None for _, m in model.named_modules())
    assert model.training and elman.is_grad_enabled()   # both restored


def test_seq2seq_decoding_keeps_nothing():
    model = elman.Seq2Seq(6, 6, 4, 5, seed=0)
    src = np.array([[2, 3, 4, 0], [3, 3, 0, 0]])
    elman.greedy_decode(model, src, max_len=4)
    assert all(getattr(m, "_cache", None) is None for _, m in model.named_modules())
    assert elman.is_grad_enabled()


@pytest.mark.parametrize("make", [
    lambda: elman.GRU(3, 64, num_layers=3, bidirectional=True, seed=0),
    lambda: elman.LSTM(3, 64, num_layers=3, seed=0),
], ids=["gru-3-layers-bi", "lstm-3-layers"])
def test_inner_layer_arrays_are_reused_without_stale_values(make, monkeypatch):
    """Inner layers' outputs and input gradients (and, unidirectional, their hidden states)
    come from the workspaces and go back after use: a layer that ran other inputs before
    gives exactly what a fresh twin gives, forward and backward, with row blocks too."""
    require("numba")                              # (row blocks run the compiled loops)
    monkeypatch.setattr(threads, "granted", lambda: 2)
    monkeypatch.setattr(timeloop, "SPLIT_MIN_ROWS", 1)
    monkeypatch.setattr(timeloop, "SPLIT_MIN_FLOPS", 0.0)
    # row blocks on any CPU (on an Intel one they need MKL's packing, which sizes this small
    # don't get: the unidirectional layer then ran whole and kept no "layer_out")
    monkeypatch.setattr(timeloop, "one_thread_loops_pay", lambda *args, **kwargs: True)
    rng = np.random.default_rng(0)
    xs = [rng.standard_normal((12, 6, 3)).astype(np.float32) for _ in range(3)]
    used = make()
    for x in xs[:2]:                              # other calls first, of both kinds
        out, _ = used(x)
        used.backward(np.ones_like(out))
        with elman.no_grad():
            used(x * 2)
    for p in used.parameters():
        p.grad[...] = 0
    fresh = make()
    results = []
    for layer in (used, fresh):
        out, _ = layer(xs[2])
        dx, _ = layer.backward(np.cos(out))
        results.append([out, dx] + [p.grad.copy() for p in layer.parameters()])
    for a, b in zip(*results):
        np.testing.assert_array_equal(a, b)
    kept = {name for ws in used._workspaces for w in (ws, ws.second()) for name in w._free}
    # a split stack's inner layers leave their outputs in their row blocks' states, which the
    # next layer's blocks read (timeloop.sequence_forward_rows, keep_blocks), and their input
    # gradients in the blocks' "dX" arrays (timeloop.RowBlocks); a bidirectional layer's
    # directions each take their columns of the input gradient of the layer above into a
    # "dY_sum" array (recurrent._DirectionsSum)
    assert ({"layer_out", "dY_sum"} if used.bidirectional else {"S", "dX"}) <= kept
