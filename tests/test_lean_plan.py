"""elman.lean_plan: the answers a layer keeps for its small no-grad calls. A call that matches
the plan skips the layer's checks and choices; everything that may change between calls is
still seen (the input, the states, the mode, the weights, the fast path's switch, any public
attribute), and whatever the plan does not match runs the whole way, errors included."""
import numpy as np
import pytest

import elman
from elman import recurrent, threads
from elman.lean_plan import LeanPlan
from elman.module import Param
from _torch import require

LAYERS = {
    "rnn": lambda: elman.RNN(3, 5, seed=0),
    "gru": lambda: elman.GRU(3, 5, seed=0),
    "lstm": lambda: elman.LSTM(3, 5, seed=0),
    "lstm-2layers-bi": lambda: elman.LSTM(3, 5, num_layers=2, bidirectional=True, seed=0),
    "gru-batch-first": lambda: elman.GRU(3, 5, batch_first=True, seed=0),
}


def _twins(name):
    """The layer and an identical twin that never keeps a plan (its calls take the layer's
    whole forward every time: the reference)."""
    layer, twin = LAYERS[name](), LAYERS[name]()
    rng = np.random.default_rng(1)
    for p, q in zip(layer.parameters(), twin.parameters()):
        p.data[...] = q.data[...] = rng.uniform(-0.6, 0.6, p.data.shape)
    return layer.eval(), twin.eval()


def _unplanned(twin, *args):
    twin._plan = None
    out = twin(*args)
    twin._plan = None
    return out


def _flat(result):
    out, state = result
    return [out] + (list(state) if isinstance(state, tuple) else [state])


def _assert_same(got, expected):
    got, expected = _flat(got), _flat(expected)
    assert len(got) == len(expected)
    for a, b in zip(got, expected):
        np.testing.assert_array_equal(a, b)


def _spy(monkeypatch):
    """Count the plan's calls that went through (returned a result)."""
    used, original = [], LeanPlan.__call__

    def counted(self, *args):
        result = original(self, *args)
        used.append(result is not None)
        return result
    monkeypatch.setattr(LeanPlan, "__call__", counted)
    return used


@pytest.mark.parametrize("name", sorted(LAYERS))
def test_a_stream_of_calls_runs_through_the_plan_exactly(name, monkeypatch):
    """The first call makes the plan, the next ones of the same signature use it, and every
    result equals the whole forward's: states carried, batched and unbatched, with and
    without initial states."""
    require("numba")
    layer, twin = _twins(name)
    used = _spy(monkeypatch)
    rng = np.random.default_rng(2)
    shape = (2, 1, 3) if layer.batch_first else (1, 2, 3)
    with elman.no_grad():
        for inputs in ([rng.standard_normal(shape).astype(np.float32) for _ in range(4)],
                       [rng.standard_normal((2, 3)).astype(np.float32) for _ in range(3)]):
            state = expected_state = None
            for x in inputs:
                got = layer(x, state)
                expected = _unplanned(twin, x, expected_state)
                _assert_same(got, expected)
                state, expected_state = got[1], expected[1]
            assert layer._plan is not None
    # per signature: a first call without states (a plan made), one with states (not that
    # plan's: a new one made), then used
    assert used == [False, True, True, False, False, True]


def test_weights_changed_in_place_are_seen():
    """An optimizer step or load_state_dict writes into the parameters' arrays: the next
    planned call computes with the new values."""
    layer, twin = _twins("lstm")
    x = np.ones((1, 1, 3), np.float32)
    with elman.no_grad():
        layer(x)
        layer(x)
        for p, q in zip(layer.parameters(), twin.parameters()):
            p.data *= 0.5
            q.data *= 0.5
        _assert_same(layer(x), _unplanned(twin, x))
        layer.load_state_dict({k: v + 0.25 for k, v in layer.state_dict().items()})
        twin.load_state_dict({k: v + 0.25 for k, v in twin.state_dict().items()})
        _assert_same(layer(x), _unplanned(twin, x))


KEPT = {
    "rnn-2layers": lambda: elman.RNN(3, 16, num_layers=2, seed=0),
    "gru-bi": lambda: elman.GRU(3, 16, bidirectional=True, seed=0),
    "lstm-2layers-bi": lambda: elman.LSTM(3, 16, num_layers=2, bidirectional=True, seed=0),
    "lstm": lambda: elman.LSTM(3, 16, seed=0),
    "gru-classic": lambda: elman.GRU(3, 16, num_layers=2, reset_after=False, seed=0),
    "lstm-peephole": lambda: elman.LSTM(3, 16, peephole=True, seed=0),
    "rnn-no-bias": lambda: elman.RNN(3, 16, num_layers=2, bias=False, seed=0),
}


@pytest.mark.parametrize("name", sorted(KEPT))
def test_kept_operands_see_every_change_to_the_parameters(name, monkeypatch):
    """A batch of one's short calls keep their compiled call's operands (LeanPlan.
    _kept_operands: views of the parameters, the biases' sum remade into its kept array at
    every call) where the cell says they keep (RNN, LSTM, GRU with reset_after), and make
    them afresh otherwise (the classic GRU's hold a copy of W_hn^T; a peephole LSTM's class
    does not say). Either way every change is seen: weights and biases written in place, a
    parameter given a new array, an array made read-only (a mixed stack then runs its layers
    one by one)."""
    require("numba")
    from elman import timeloop
    layer, twin = KEPT[name]().eval(), KEPT[name]().eval()
    made = []
    for function in ("lean_operands", "stack_operands"):
        real = getattr(timeloop, function)
        monkeypatch.setattr(timeloop, function,
                            lambda *args, real=real, **kw: made.append(1) or real(*args, **kw))
    rng = np.random.default_rng(3)
    x = rng.standard_normal((3, 1, 3)).astype(np.float32)

    def check():
        with elman.no_grad():
            expected = _unplanned(twin, x)
            made.clear()
            _assert_same(layer(x), expected)

    for _ in range(4):
        check()
    keeps = name in ("rnn-2layers", "gru-bi", "lstm-2layers-bi", "lstm", "rnn-no-bias")
    assert layer._plan is not None and (made == []) == keeps, made
    named = dict(layer.named_parameters())
    twins = dict(twin.named_parameters())
    for key in named:                                   # every parameter, written in place
        change = rng.uniform(-0.3, 0.3, named[key].data.shape).astype(np.float32)
        named[key].data += change
        twins[key].data += change
        check()
    key = sorted(named)[-1]                             # a new array
    named[key].data = named[key].data * np.float32(0.5)
    twins[key].data = twins[key].data * np.float32(0.5)
    check()
    check()
    named["weight_ih_l0"].data.flags.writeable = False   # read-only, the others not
    check()
    check()


def test_a_public_attribute_assigned_drops_the_plan():
    """A replaced parameter, batch_first, a dropout rate: any public assignment drops the plan
    (the next call plans afresh); the layer's private bookkeeping does not."""
    layer, twin = _twins("gru")
    x = np.random.default_rng(3).standard_normal((1, 2, 3)).astype(np.float32)
    with elman.no_grad():
        layer(x)
        assert layer._plan is not None
        layer._cache = None                                   # private: kept
        assert layer._plan is not None
        new = Param(np.full_like(layer.weight_hh_l0.data, 0.1))
        layer.weight_hh_l0 = new
        twin.weight_hh_l0 = Param(new.data.copy())
        assert layer._plan is None
        _assert_same(layer(x), _unplanned(twin, x))
        layer(x)
        layer.batch_first = True                             # (1, 2, 3) now reads as N = 1
        assert layer._plan is None
        twin.batch_first = True
        _assert_same(layer(x), _unplanned(twin, x))


def test_the_mode_the_switch_and_the_grad_mode_are_checked_at_every_call(monkeypatch):
    """train() sets the mode without __setattr__: a layer with recurrent dropout then masks
    its state (the plan, made in evaluation, is not used); with the fast path switched off
    or gradients on, the plan steps aside too."""
    require("numba")
    layer = elman.LSTM(3, 5, recurrent_dropout=0.5, seed=0).eval()
    x = np.ones((3, 2, 3), np.float32)          # (steps after the first: h_prev is not 0)
    used = _spy(monkeypatch)
    with elman.no_grad():
        evaluated = layer(x)
        layer(x)
        assert used == [True]
        layer.train()
        trained = layer(x)
        assert used == [True, False]
        assert not np.array_equal(trained[0], evaluated[0])     # masked
        layer.eval()
        with elman.fast.use(False):                    # (the NumPy steps: rounding apart)
            for a, b in zip(_flat(layer(x)), _flat(evaluated)):
                np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
        assert used[-1] is False
        _assert_same(layer(x), evaluated)
        assert used[-1] is True
    used.clear()
    out, _ = layer(x)                    # grad mode on: the whole forward, a cache kept
    assert used == [] and layer._cache is not None
    layer.backward(np.ones_like(out))


def test_calls_the_plan_does_not_match_run_the_whole_way_errors_included(monkeypatch):
    """Another shape, dtype, a list, a transposed view, states of the wrong kind: each goes
    through the layer's checks (converted where they convert, refused with their errors)."""
    layer, twin = _twins("lstm")
    x = np.random.default_rng(4).standard_normal((1, 2, 3)).astype(np.float32)
    h = np.zeros((1, 2, 5), np.float32)
    used = _spy(monkeypatch)
    with elman.no_grad():
        layer(x, (h, h))
        for args in [(x.astype(np.float64), (h, h)), (x.tolist(), (h, h)),
                     (np.asfortranarray(x.repeat(3, axis=0))[:1], (h, h)),
                     (x, (h, h.astype(np.float64))), (x, (h, h[:, ::-1]))]:
            _assert_same(layer(*args), _unplanned(twin, *args))
        assert used == [False] * 5 and layer._plan is not None     # (kept: not theirs)
        _assert_same(layer(x, [h, h]), _unplanned(twin, x, [h, h]))  # (a list: as a tuple)
        assert used[-1] is True
        _assert_same(layer(x), _unplanned(twin, x))                  # (no states: not its)
        assert used[-1] is False
        with pytest.raises(ValueError, match="input_size"):
            layer(np.ones((1, 2, 4), np.float32), (h, h))
        with pytest.raises(ValueError, match="c_0"):
            layer(x, (h, np.zeros((1, 3, 5), np.float32)))
        with pytest.raises(TypeError, match="tuple"):
            layer(x, h)


def test_a_stateful_layer_carries_its_state_through_planned_calls():
    rng = np.random.default_rng(5)
    steps = [rng.standard_normal((1, 1, 3)).astype(np.float32) for _ in range(5)]
    stateful = elman.LSTM(3, 4, stateful=True, seed=0).eval()
    whole = elman.LSTM(3, 4, seed=0).eval()
    with elman.no_grad():
        outs = [stateful(x)[0] for x in steps]
        expected, (h, c) = whole(np.concatenate(steps))
    np.testing.assert_allclose(np.concatenate(outs), expected, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(stateful.states[0], h, rtol=1e-6, atol=1e-7)


def test_no_plan_inside_concurrently(monkeypatch):
    """Calls inside threads.concurrently (BLAS pinned: the products' thread counts answer
    otherwise there) are never planned."""
    assert LeanPlan.applies()
    monkeypatch.setattr(threads, "pinned", lambda: True)
    assert not LeanPlan.applies()
    layer = elman.GRU(3, 4, seed=0).eval()
    with elman.no_grad():
        layer(np.ones((1, 1, 3), np.float32))
    assert layer._plan is None


@pytest.mark.skipif(not elman.fast.pair_supported(), reason="two threads a step: x86-64")
@pytest.mark.parametrize("name", ["LSTM", "GRU"])
def test_a_batch_of_one_asks_the_moment_at_every_planned_call(name, monkeypatch):
    """A batch of one long enough for two threads is planned too, and each planned call asks
    what depends on the moment: whether two threads are free (else one thread), and where
    either way may win, the layer's measured choice (which goes on learning from the planned
    calls' times). Every call equals the unplanned twin's (the pair's projection in column
    blocks: float32 rounding apart)."""
    require("numba")
    monkeypatch.setattr(recurrent.timeloop, "PAIR_MIN_BYTES", 1 << 40)    # all "measure"
    monkeypatch.setattr(recurrent.timeloop, "PAIR_MEASURED_MIN_BYTES", 0)
    free = [True]
    monkeypatch.setattr(threads, "two_threads_free", lambda: free[0])
    layer, twin = (getattr(elman, name)(3, 32, seed=0).eval() for _ in range(2))
    rng = np.random.default_rng(6)
    for p, q in zip(layer.parameters(), twin.parameters()):
        p.data[...] = q.data[...] = rng.uniform(-0.6, 0.6, p.data.shape)
    T = recurrent.timeloop.PAIR_MIN_STEPS
    used, pairs = _spy(monkeypatch), []
    original = recurrent.RecurrentLayer._forward_pair

    def counted(self, *args):
        pairs.append(self is layer)
        return original(self, *args)
    monkeypatch.setattr(recurrent.RecurrentLayer, "_forward_pair", counted)
    with elman.no_grad():
        for call in range(24):
            free[0] = call < 16
            x = rng.standard_normal((T, 1, 3)).astype(np.float32)
            got = layer(x)
            expected = _unplanned(twin, x)
            for a, b in zip(_flat(got), _flat(expected)):
                np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    assert layer._plan is not None and used == [True] * 23
    # the planned calls took both ways while two threads were free, one after; the choice
    # has times of both ways (the only unplanned call, the first, records none: no way before)
    mine = [p for p in pairs if p]
    assert 0 < len(mine) < 16
    times = layer._pair_choice._times
    assert len(times[0]) > 0 and len(times[1]) > 0
    free[0] = False
    pairs.clear()
    with elman.no_grad():
        layer(x)
    assert pairs == []
