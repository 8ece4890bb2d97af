"""elman.freeze(module): a copy for inference whose weights can never change (elman.frozen):
the same results as the module bit for bit, every write refused, the module itself untouched;
a batch of one trusts a frozen matrix's kept panels without comparing them; an optimizer and
load_state_dict refuse a frozen module with an error that says so. And a layer that ran
planned no-grad calls (elman.lean_plan) still copies and pickles, as a module must to be
frozen. (No timing asserts: benchmarks/bench_infer.py --frozen measures.)"""
import copy
import pickle

import numpy as np
import pytest

import elman
from elman import timeloop
from elman.fast import _packed
from elman.frozen import immutable, immutable_key

NAMES = ["RNN", "GRU", "LSTM"]


def _layer(name, H=64, layers=2):
    return getattr(elman, name)(8, H, num_layers=layers, seed=0)


def _flat(result):
    out, state = result
    return [out] + (list(state) if isinstance(state, tuple) else [state])


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("shape", [(50, 1, 8), (7, 3, 8)], ids=["batch-of-one", "batch"])
def test_the_frozen_copy_gives_the_same_results_and_refuses_writes(name, shape):
    layer = _layer(name)
    frozen = elman.freeze(layer)
    assert not frozen.training and layer.training           # (the module keeps its mode)
    layer.eval()
    x = np.random.default_rng(1).standard_normal(shape).astype(np.float32)
    with elman.no_grad():
        for _ in range(3):                                   # (kept panels from the 2nd call)
            for got, want in zip(_flat(frozen(x)), _flat(layer(x))):
                np.testing.assert_array_equal(got, want)
    # gradients too (a frozen module may still be differentiated, for saliency and the like)
    for module in (frozen, layer):
        module.zero_grad()
        out, _ = module(x)
        module.backward(np.ones_like(out), None)
    for (_, p), (_, q) in zip(frozen.named_parameters(), layer.named_parameters()):
        np.testing.assert_array_equal(p.grad, q.grad)
        assert not p.data.flags.writeable and q.data.flags.writeable
        assert not np.shares_memory(p.data, q.data)
        with pytest.raises(ValueError, match="read-only"):
            p.data[...] = 0
        with pytest.raises(ValueError, match="WRITEABLE"):
            p.data.flags.writeable = True


def test_an_optimizer_and_load_state_dict_refuse_a_frozen_module():
    layer = _layer("LSTM")
    frozen = elman.freeze(layer)
    for make in (elman.Adam, elman.SGD):
        with pytest.raises(ValueError, match=r"params\[0\] is read-only.*elman\.freeze"):
            make(frozen.parameters(), lr=0.1)
    before = [p.data.copy() for p in frozen.parameters()]
    with pytest.raises(RuntimeError, match="'weight_ih_l0' is read-only.*elman.freeze"):
        frozen.load_state_dict(layer.state_dict())
    for p, b in zip(frozen.parameters(), before):
        np.testing.assert_array_equal(p.data, b)
    elman.Adam(layer.parameters(), lr=0.1)                  # (the module itself: as before)
    layer.load_state_dict(frozen.state_dict())
    with pytest.raises(TypeError, match="freeze: expected an elman Module, got ndarray"):
        elman.freeze(np.ones(3))


def test_a_copy_of_a_frozen_module_is_an_ordinary_one():
    frozen = elman.freeze(_layer("GRU"))
    twin = copy.deepcopy(frozen)
    for p, q in zip(twin.parameters(), frozen.parameters()):
        assert p.data.flags.writeable
        np.testing.assert_array_equal(p.data, q.data)
    elman.Adam(twin.parameters(), lr=0.1)


@pytest.mark.skipif(not _packed.available, reason="needs numba and a CPU with AVX-512")
@pytest.mark.parametrize("name", ["GRU", "LSTM"])
def test_a_batch_of_one_trusts_a_frozen_matrix_without_comparing_it(name, monkeypatch):
    """The kept panels of a frozen W_hh and W_ih are never compared (elman.frozen: nothing can
    have changed them); the module's own are compared at every call (in line here); a frozen
    parameter given a new array is packed anew, and the call sees the new weights."""
    from elman.fast._panel_check import same_as_panels as compare    # (the compiled one:
    compares = []                       # _packed's own name rebinds itself at its first call)
    monkeypatch.setattr(_packed, "_same_as_panels",
                        lambda *args: compares.append(1) or compare(*args))
    monkeypatch.setattr(timeloop, "check_aside", lambda *args: None)   # (every check in line)
    layer = _layer(name, layers=1).eval()
    frozen = elman.freeze(layer)
    x = np.random.default_rng(2).standard_normal((50, 1, 8)).astype(np.float32)
    with elman.no_grad():
        for _ in range(4):
            frozen(x)
        assert compares == []
        for _ in range(4):
            layer(x)
        assert len(compares) >= 3                 # (W_hh's at every call after the first)
        # a new array for a frozen parameter: writable, packed anew, seen
        W = frozen.weight_hh_l0.data * np.float32(0.5)
        frozen.weight_hh_l0.data = W
        layer.weight_hh_l0.data[...] = W
        for got, want in zip(_flat(frozen(x)), _flat(layer(x))):
            np.testing.assert_array_equal(got, want)


@pytest.mark.skipif(not _packed.available, reason="needs numba and a CPU with AVX-512")
def test_a_batch_of_one_knows_its_frozen_array_again_and_sees_another(monkeypatch):
    """The frozen array a batch of one packed is known again by identity, without its key (the
    key's address costs ~1.4 us); another frozen array given to the parameter (immutable too,
    other memory) is told apart, packed anew and seen."""
    keys = []
    monkeypatch.setattr(_packed, "immutable_key",
                        lambda W: keys.append(W.shape) or immutable_key(W))
    monkeypatch.setattr(timeloop, "check_aside", lambda *args: None)
    layer = _layer("LSTM", layers=1).eval()
    frozen = elman.freeze(layer)
    x = np.random.default_rng(4).standard_normal((50, 1, 8)).astype(np.float32)
    with elman.no_grad():
        first = _flat(frozen(x))
        made = len(keys)                          # (W_hh's and W_ih's at the first call)
        again = _flat(frozen(x))
        assert made == 2 and len(keys) == made    # (known again: no key made)
        frozen.weight_hh_l0.data = immutable(frozen.weight_hh_l0.data * np.float32(0.5))
        layer.weight_hh_l0.data[...] = frozen.weight_hh_l0.data
        changed = _flat(frozen(x))
        want = _flat(layer(x))
    for a, b in zip(first, again):
        np.testing.assert_array_equal(b, a)
    for got, w in zip(changed, want):
        np.testing.assert_array_equal(got, w)
    assert not np.array_equal(changed[0], first[0])


def test_the_immutable_key_is_that_of_memory_nothing_can_write():
    a = immutable(np.arange(12, dtype=np.float32).reshape(3, 4))
    assert not a.flags.writeable and a.flags.c_contiguous and a.dtype == np.float32
    key = immutable_key(a)
    assert key is not None and isinstance(key[0], bytes)
    assert immutable_key(a[:2])[0] is key[0] and immutable_key(a[:2])[1:] != key[1:]
    assert immutable_key(a[1:])[1] != key[1]                 # (another offset)
    assert immutable_key(a.copy()) is None                   # (a copy is writable)
    owner = np.ones((3, 4), np.float32)
    view = owner.view()
    view.flags.writeable = False                             # (read-only, but its owner is not)
    assert immutable_key(view) is None


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("steps", [1, 50])
def test_a_layer_that_ran_planned_calls_copies_and_pickles(name, steps):
    """A layer's plan of small no-grad calls (elman.lean_plan) holds the kernel module, which
    neither copies nor pickles: a copy holds no plan and makes its own."""
    layer = _layer(name).eval()
    x = np.random.default_rng(3).standard_normal((steps, 1, 8)).astype(np.float32)
    with elman.no_grad():
        for _ in range(3):
            want = _flat(layer(x))
        for twin in (copy.deepcopy(layer), pickle.loads(pickle.dumps(layer)),
                     elman.freeze(layer)):
            for _ in range(2):
                for got, w in zip(_flat(twin(x)), want):
                    np.testing.assert_array_equal(got, w)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("layers, bidirectional", [(1, False), (2, False), (1, True),
                                                   (2, True)])
def test_a_frozen_stack_runs_as_one_compiled_call_on_operands_made_once(
        name, layers, bidirectional, monkeypatch):
    """A frozen module's short calls (elman.lean_plan: no packings kept) take the same
    compiled stack call as the module's (its read-only arrays, all of one kind, fit the
    call's tuples) and make its operands once: later calls reuse them, bit for bit the
    module's results; a parameter given a new array is seen at the next call."""
    layer = getattr(elman, name)(8, 64, num_layers=layers, bidirectional=bidirectional,
                                 seed=0).eval()
    frozen = elman.freeze(layer)
    made, stacks = [], []
    for function in ("lean_operands", "stack_operands"):
        real = getattr(timeloop, function)
        monkeypatch.setattr(timeloop, function,
                            lambda *args, real=real, **kw: made.append(1) or real(*args, **kw))
    for function in ("stack_forward_lean", "stack_forward_pair"):   # (directions in turn,
        real = getattr(timeloop, function)                            # or at once)
        monkeypatch.setattr(timeloop, function, lambda *args, real=real, **kw:
                            stacks.append(1) or real(*args, **kw))
    x = np.random.default_rng(4).standard_normal((3, 1, 8)).astype(np.float32)
    with elman.no_grad():
        want = [_flat(layer(x)) for _ in range(2)][-1]
        calls = []
        for _ in range(4):
            made.clear()
            for got, w in zip(_flat(frozen(x)), want):
                np.testing.assert_array_equal(got, w)
            calls.append(len(made))
        assert calls[1] > 0 and calls[2:] == [0, 0]   # (the plan's first call makes them)
        if layers * (2 if bidirectional else 1) > 1:
            assert len(stacks) >= 4                # (not refused: layer by layer otherwise)
        # a new (immutable) array for a parameter: the next call makes the operands anew
        W = immutable(np.asarray(frozen.bias_hh_l0.data) + np.float32(0.25))
        frozen.bias_hh_l0.data = W
        layer.bias_hh_l0.data[...] = W
        for _ in range(2):
            for got, w in zip(_flat(frozen(x)), _flat(layer(x))):
                np.testing.assert_array_equal(got, w)


def test_a_module_with_writeable_and_read_only_parameters_runs_layer_by_layer():
    """The compiled stack's tuples hold one array type: a module whose parameters mix
    writeable and read-only arrays is refused there (timeloop._one_array_type) and runs its
    layers one by one, with the same results."""
    layer = _layer("LSTM").eval()
    mixed = copy.deepcopy(layer)
    mixed.weight_hh_l1.data = immutable(mixed.weight_hh_l1.data)
    weights = [mixed._weights(k) for k in range(2)]
    assert not timeloop._one_array_type(weights)
    assert timeloop._one_array_type([layer._weights(k) for k in range(2)])
    assert timeloop._one_array_type([elman.freeze(layer)._weights(k) for k in range(2)])
    x = np.random.default_rng(5).standard_normal((3, 1, 8)).astype(np.float32)
    with elman.no_grad():
        for _ in range(2):
            for got, want in zip(_flat(mixed(x)), _flat(layer(x))):
                np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("name", ["GRU", "LSTM"])
@pytest.mark.parametrize("bidirectional", [False, True])
def test_a_frozen_stack_whose_layers_keep_panels_for_some_matrices_only(
        name, bidirectional, monkeypatch):
    """A batch of one keeps W_ih's panels where they fit (timeloop.pipe_max_bytes): here the
    first layer's (8 inputs) and not the second's (64 or 128). Frozen, the second layer's
    W_ih^T is a read-only matrix and the first's a packed form: both forms' matrix slot
    read-only (fast.packed_operand's ``of``), so the stack's operand tuples stay of one numba
    type (a mixed tuple failed to compile: "No implementation of function getitem")."""
    monkeypatch.setattr(timeloop, "pipe_max_bytes", lambda: 16 * 1024)
    layer = getattr(elman, name)(8, 64, num_layers=2, bidirectional=bidirectional,
                                 seed=0).eval()
    frozen = elman.freeze(layer)
    x = np.random.default_rng(6).standard_normal((20, 1, 8)).astype(np.float32)
    with elman.no_grad():
        for _ in range(3):
            for got, want in zip(_flat(frozen(x)), _flat(layer(x))):
                np.testing.assert_array_equal(got, want)
