"""A batch of one multiplies by W_hh's panels (and projects its input by W_ih's), kept from call
to call (elman.fast._packed.KeptPack, timeloop.kept_packs): they are packed again whenever the
matrix is no longer bit for bit the one packed (any write into the parameter's array between
calls is seen), the one-thread, stack and two-threads-a-step paths give the reference's results
with them, and the rule says where they are used. (No timing asserts: benchmarks/bench_infer.py
measures.)"""
import numpy as np
import pytest

import elman
from elman import fast, recurrent, threads, timeloop
from elman.fast import _packed

pytestmark = pytest.mark.skipif(not _packed.available,
                                reason="needs numba and a CPU with AVX-512")


def _matrix(rows=96, cols=64, seed=0):
    return np.random.default_rng(seed).standard_normal((rows, cols)).astype(np.float32)


def test_the_panels_are_the_matrix_packed_and_kept_while_it_is_unchanged(monkeypatch):
    W = _matrix()
    kept = _packed.KeptPack()
    packs = []
    original = _packed.pack
    monkeypatch.setattr(_packed, "pack", lambda *args: packs.append(1) or original(*args))
    first = kept.panels(W)
    np.testing.assert_array_equal(first, original(W, True))
    assert kept.panels(W) is first and kept.panels(W.copy()) is first
    assert len(packs) == 1
    # any change of a bit packs anew, into the same panels: a value, a zero's sign, a NaN
    W[0, 0] = 0.0
    kept.panels(W)
    for count, (at, value) in enumerate([((95, 63), W[95, 63] + 1), ((0, 0), -0.0),
                                         ((40, 7), np.nan)], start=3):
        W[at] = value
        again = kept.panels(W)
        assert again is first and len(packs) == count         # (into the same panels)
        np.testing.assert_array_equal(again, original(W, True))
    count = len(packs)
    assert kept.panels(W) is first                      # (a NaN equals its own copy's
    assert len(packs) == count                                # bits)
    # another shape: packed anew (rows a panel's edge apart, and columns short of a block)
    for other in (_matrix(64, 64), _matrix(80, 64), _matrix(80, 60)):
        np.testing.assert_array_equal(kept.panels(other), original(other, True))
    assert len(packs) == count + 3


@pytest.mark.parametrize("rows, cols", [(16, 16), (64, 32), (96, 40), (48, 20), (40, 7),
                                        (8, 33), (1024, 256)])
def test_the_check_against_the_panels_finds_a_change_of_any_bit_anywhere(rows, cols):
    """same_as_panels(W, pack(W, True)) in words: every element of W (all of them, or a sample
    of a large W), one bit flipped (a sign: -0.0 against 0.0 too), is seen, in the blocks of
    16 x 16, the columns beyond them and the rows short of one; the panels' padding is not
    read."""
    from elman.fast._panel_check import same_as_panels
    rng = np.random.default_rng(rows + cols)
    W = _matrix(rows, cols, seed=rows)
    W[0, 0] = 0.0
    panels = _packed.pack(W, True).view(np.uint32)
    words = W.view(np.uint32)
    assert same_as_panels(words, panels)
    everything = [(i, j) for i in range(rows) for j in range(cols)]
    if len(everything) > 4096:
        everything = [everything[k] for k in rng.choice(len(everything), 4096, replace=False)]
    for i, j in everything + [(rows - 1, cols - 1)]:
        bit = np.uint32(1 << int(rng.integers(32)))
        words[i, j] ^= bit
        assert not same_as_panels(words, panels), (i, j)
        words[i, j] ^= bit
    words[0, 0] ^= np.uint32(1 << 31)                     # 0.0 -> -0.0
    assert not same_as_panels(words, panels)
    words[0, 0] ^= np.uint32(1 << 31)
    used = rows % _packed.NR
    if used:                                  # the last panel's padding: garbage is not read
        panels[-1, :, used:] = 7
        assert same_as_panels(words, panels)
        panels[-1, -1, used - 1] ^= 1         # (but its last used column is)
        assert not same_as_panels(words, panels)


def test_the_check_against_the_panels_takes_rows_that_are_not_contiguous():
    from elman.fast._panel_check import same_as_panels
    W = _matrix(64, 96)[:, ::2]                           # (a column stride of two words)
    panels = _packed.pack(np.ascontiguousarray(W), True).view(np.uint32)
    assert same_as_panels(W.view(np.uint32), panels)
    W[40, 17] = -W[40, 17]
    assert not same_as_panels(W.view(np.uint32), panels)


def test_the_rule():
    f32, f64 = np.float32, np.float64
    steps = _packed.ONE_ROW_MIN_STEPS
    assert _packed.one_row_worth(steps, 128, 512, f32)
    assert not _packed.one_row_worth(steps - 1, 128, 512, f32)       # too few steps
    assert not _packed.one_row_worth(steps, 32, 128, f32)            # small: (32 x 128)
    assert not _packed.one_row_worth(steps, 128, 520, f32)           # columns not whole vectors
    assert not _packed.one_row_worth(steps, 128, 512, f64)
    with _packed.use(False):
        assert not _packed.one_row_worth(steps, 128, 512, f32)


def _twins(name, layers=1, bidirectional=False, H=64):
    """A layer and its twin with the same weights (the twin on the NumPy steps: the
    reference), scaled with H so that the recurrence stays contracting (a chaotic one would
    grow float32's rounding differences step by step)."""
    make = getattr(elman, name)
    layer = make(5, H, num_layers=layers, bidirectional=bidirectional, seed=0).eval()
    twin = make(5, H, num_layers=layers, bidirectional=bidirectional, seed=0).eval()
    rng = np.random.default_rng(1)
    scale = 0.2 * np.sqrt(64 / H)
    for p, q in zip(layer.parameters(), twin.parameters()):
        p.data[...] = q.data[...] = rng.uniform(-scale, scale, p.data.shape)
    return layer, twin


def _reference(twin, x):
    with fast.use(False):
        return twin(x)


def _flat(result):
    out, state = result
    return [out] + (list(state) if isinstance(state, tuple) else [state])


def _assert_close(got, want):
    for g, w in zip(_flat(got), _flat(want)):
        np.testing.assert_allclose(g, w, rtol=2e-5, atol=2e-6)


@pytest.fixture
def counted(monkeypatch):
    """The calls that multiplied by kept panels (KeptPack.panels), and the packings made."""
    calls = {"panels": 0, "packs": 0}
    panels, pack = _packed.KeptPack.panels, _packed.pack

    def counted_panels(self, *args):
        calls["panels"] += 1
        return panels(self, *args)

    def counted_pack(*args):
        calls["packs"] += 1
        return pack(*args)
    monkeypatch.setattr(_packed.KeptPack, "panels", counted_panels)
    monkeypatch.setattr(_packed, "pack", counted_pack)
    return calls


@pytest.mark.parametrize("name, layers, bidirectional",
                         [("LSTM", 1, False), ("GRU", 1, False), ("RNN", 1, False),
                          ("GRU", 2, False), ("LSTM", 1, True), ("LSTM", 2, True)])
def test_one_thread_paths_multiply_by_kept_panels_and_see_every_change(
        name, layers, bidirectional, counted, monkeypatch):
    """Calls of one sequence on one thread (the lean path and its plan, a stack as one
    compiled call, a bidirectional one's directions at once or in turn) pack each
    layer-direction's W_hh and W_ih once (two packings each), give the reference's results,
    and see a weight changed in place (W_ih alone: only it packed again), an optimizer's step
    and load_state_dict at the next call."""
    monkeypatch.setattr(threads, "two_threads_free", lambda: False)   # (no pair steps here)
    H = 128 if name == "RNN" else 64                 # (the RNN's W_hh: 128 x 128)
    layer, twin = _twins(name, layers, bidirectional, H)
    x = np.random.default_rng(2).standard_normal((24, 1, 5)).astype(np.float32)
    directions = layers * (2 if bidirectional else 1)
    with elman.no_grad():
        for _ in range(3):
            _assert_close(layer(x), _reference(twin, x))
        assert counted["panels"] == 3 * 2 * directions and counted["packs"] == 2 * directions
        layer.weight_ih_l0.data[1] *= -1
        twin.weight_ih_l0.data[1] *= -1
        _assert_close(layer(x), _reference(twin, x))
        assert counted["packs"] == 2 * directions + 1
        for p, q in zip(layer.parameters(), twin.parameters()):
            p.data *= 0.75                           # written in place
            q.data *= 0.75
        _assert_close(layer(x), _reference(twin, x))
        assert counted["packs"] == 4 * directions + 1
        state = {k: v + 0.01 for k, v in layer.state_dict().items()}
        layer.load_state_dict(state)
        twin.load_state_dict(state)
        _assert_close(layer(x), _reference(twin, x))
        assert counted["packs"] == 6 * directions + 1
    # an optimizer's step (outside no_grad: a training call, which packs afresh, never keeps)
    layer.train()
    opt = elman.SGD(layer.parameters(), lr=1e-3)
    out, _ = layer(x)
    layer.backward(np.full_like(out, 0.1))
    opt.step()
    layer.eval()
    for p, q in zip(layer.parameters(), twin.parameters()):
        q.data[...] = p.data
    with elman.no_grad():
        _assert_close(layer(x), _reference(twin, x))


def test_short_calls_and_batches_keep_nothing(counted):
    """One-step calls (a streaming caller's) and batches never use the kept panels, nor take
    a place for them in the workspace (a cost at every one-step call)."""
    layer, _ = _twins("LSTM")
    with elman.no_grad():
        for _ in range(3):                       # (the second and third through the plan)
            layer(np.ones((1, 1, 5), np.float32))
            layer(np.ones((_packed.ONE_ROW_MIN_STEPS - 1, 1, 5), np.float32))
            layer(np.ones((30, 2, 5), np.float32))
    assert counted["panels"] == 0
    assert "kept_packs" not in layer._workspaces[0]._free


@pytest.mark.skipif(not fast.pair_supported(), reason="two threads a step: x86-64")
@pytest.mark.parametrize("name", ["LSTM", "GRU", "RNN"])
def test_two_threads_a_step_multiply_by_kept_panels(name, counted, monkeypatch):
    """The pair path (every step's hidden units split between two threads) multiplies by its
    threads' whole panels where the split falls on a panel's edge, W_hh's in the steps and
    W_ih's in the projection: the reference's results, each packed once, a change in place
    seen; where it does not (H = 48: a split at 16), the GEMV on W_hh's rows and BLAS's
    projection."""
    monkeypatch.setattr(timeloop, "PAIR_MIN_BYTES", 0)
    monkeypatch.setattr(timeloop, "PAIR_MAX_BYTES", 1 << 40)
    monkeypatch.setattr(threads, "two_threads_free", lambda: True)
    pairs = []
    original = recurrent.sequence_forward_pair
    monkeypatch.setattr(recurrent, "sequence_forward_pair",
                        lambda *args, **kwargs: pairs.append(1) or original(*args, **kwargs))
    H = 128 if name == "RNN" else 64                 # (split at 64, 32: a panel's edge)
    layer, twin = _twins(name, H=H)
    x = np.random.default_rng(3).standard_normal((30, 1, 5)).astype(np.float32)
    with elman.no_grad():
        for _ in range(3):
            _assert_close(layer(x), _reference(twin, x))
        assert len(pairs) == 3 and counted["panels"] == 6 and counted["packs"] == 2
        for packs, matrix in ((3, "weight_hh_l0"), (4, "weight_ih_l0")):
            for model in (layer, twin):
                getattr(model, matrix).data[0, 0] += 0.5
            _assert_close(layer(x), _reference(twin, x))
            assert counted["packs"] == packs                # (only the changed one again)
        narrow, narrow_twin = _twins(name, H=48)
        _assert_close(narrow(x), _reference(narrow_twin, x))
        assert len(pairs) == 6 and counted["panels"] == 10


def test_short_calls_hand_the_loops_w_ih_itself():
    """Without kept packings (short calls, batches) the lean loops get W_ih itself, an array
    numba types faster than an operand tuple at every call; with them, W_ih^T's panels."""
    layer, _ = _twins("GRU")
    eq, w = layer.eq, layer._weights(0)
    kernels = fast.kernels_for(eq, layer.dtype)
    W_ih = timeloop.lean_operands(eq, kernels, w, 1, 1)[0]
    assert W_ih is w["weight_ih"]
    assert timeloop.lean_operands(eq, kernels, w, 50, 4)[0] is w["weight_ih"]
    kept = (_packed.KeptPack(), _packed.KeptPack())
    operand = timeloop.lean_operands(eq, kernels, w, 50, 1, kept)[0]
    assert isinstance(operand, tuple) and operand[3] == fast.PACKED
    np.testing.assert_array_equal(operand[2], _packed.pack(w["weight_ih"], True).reshape(-1))
