"""A one-thread call of one sequence trusts its kept panels while the partner thread checks them
(elman.fast._pair.CheckAside, timeloop.lean_call): the check runs once, on whichever thread
claims it (a partner that never comes, or claims it and stalls, leaves it to the caller); a
matrix changed in place since its panels were packed makes the call run again with the checks
in line, so no result ever rests on stale panels; a pack that changed at its last check is
checked in line next time. (No timing asserts: benchmarks/bench_infer.py measures.)"""
import numpy as np
import pytest

import elman
from elman import fast, threads, timeloop
from elman.fast import _packed

pytestmark = [pytest.mark.skipif(not _packed.available,
                                 reason="needs numba and a CPU with AVX-512"),
              pytest.mark.skipif(not fast.pair_supported(), reason="the partner: x86-64")]


def _matrix_and_panels(rows, cols, seed):
    """A float32 matrix's words and those of its panels (KeptPack's check compares the two)."""
    W = np.random.default_rng(seed).standard_normal((rows, cols)).astype(np.float32)
    return W.view(np.uint32), _packed.pack(W, True).view(np.uint32)


def _state():
    pair = fast.pair()
    (state,) = pair.aligned_arrays((pair.ROW, np.int64))
    state[:] = 0
    return state


@pytest.mark.parametrize("differs", [None, "a", "b"])
def test_the_check_runs_once_wherever_it_is_claimed(differs):
    pair = fast.pair()
    (a, a_panels), (b, b_panels) = _matrix_and_panels(96, 40, 0), _matrix_and_panels(64, 16, 1)
    if differs == "a":
        a[95, 39] ^= 1
    elif differs == "b":
        b[0, 0] ^= 1 << 31
    same = differs is None
    # the partner first: it runs the check, the caller takes its verdict
    state = _state()
    assert pair.claim_check(state, a, a_panels, b, b_panels)
    assert not pair.claim_check(state, a, a_panels, b, b_panels)     # (claimed: not again)
    assert pair.check_verdict(state, a, a_panels, b, b_panels, 10) == same
    # the caller first (a partner late or absent): it claims and runs the check itself
    state = _state()
    assert pair.check_verdict(state, a, a_panels, b, b_panels, 10) == same
    assert not pair.claim_check(state, a, a_panels, b, b_panels)
    # claimed by a partner that never finishes: after its spins the caller checks itself
    state = _state()
    state[pair.CHECK_CLAIM] = 1
    assert pair.check_verdict(state, a, a_panels, b, b_panels, 100) == same


def test_panels_are_trusted_only_while_steady():
    """KeptPack.panels(W, aside): panels packed at the last call are not trusted
    (checked in line); once a check in line found them unchanged, they are returned unchecked
    and the check added to ``aside``; a check that fails makes the caller run again without
    ``aside``, which packs anew and is not trusted at the next call."""
    W = np.random.default_rng(0).standard_normal((96, 64)).astype(np.float32)
    kept = _packed.KeptPack()
    aside = fast.pair().CheckAside()
    first = kept.panels(W, aside)
    assert aside.pairs == [] and not kept.steady                   # (just packed)
    assert kept.panels(W, aside) is first and aside.pairs == [] and kept.steady
    assert kept.panels(W, aside) is first and len(aside.pairs) == 1
    words, panels = aside.pairs[0]
    assert np.shares_memory(words, W) and np.shares_memory(panels, first)
    W[3, 5] += 1                                  # changed: this call's check fails ...
    aside.start()
    assert not aside.holds()
    again = kept.panels(W)                  # ... and the call is made in line: repacked
    np.testing.assert_array_equal(again, _packed.pack(W, True))
    assert not kept.steady
    second = fast.pair().CheckAside()
    kept.panels(W, second)                  # (checked in line, found unchanged)
    assert second.pairs == [] and kept.steady
    with pytest.raises(ValueError, match="at most two"):
        for _ in range(3):
            second.add(words, panels)
    assert fast.pair().CheckAside().holds()       # (nothing added: nothing to check)


def _twins(name, H=64):
    make = getattr(elman, name)
    layer, twin = make(5, H, seed=0).eval(), make(5, H, seed=0).eval()
    rng = np.random.default_rng(1)
    for p, q in zip(layer.parameters(), twin.parameters()):
        p.data[...] = q.data[...] = rng.uniform(-0.2, 0.2, p.data.shape)
    return layer, twin


def _assert_close(got, want):
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, rtol=2e-5, atol=2e-6)


def _as_the_reference(layer, twin, x):
    """``layer(x)`` (under no_grad) equals its twin's on the NumPy steps."""
    got = _flat(layer(x))
    with fast.use(False):
        _assert_close(got, _flat(twin(x)))


def _flat(result):
    out, state = result
    return [out] + (list(state) if isinstance(state, tuple) else [state])


@pytest.fixture
def asides(monkeypatch):
    """The partner's core free at every call, every size checked aside; the calls'
    CheckAsides, with the matrices each one checked and its verdict."""
    monkeypatch.setattr(threads, "partner_core_free", lambda: True)
    monkeypatch.setattr(timeloop, "ASIDE_MIN_BYTES", 0)
    made = []
    CheckAside = fast.pair().CheckAside
    prepare, holds = CheckAside.prepare, CheckAside.holds

    def counted_prepare(self):
        made.append({"matrices": len(self.pairs), "holds": None})
        return prepare(self)

    def counted_holds(self):
        verdict = holds(self)
        if made:
            made[-1]["holds"] = verdict
        return verdict
    monkeypatch.setattr(CheckAside, "prepare", counted_prepare)
    monkeypatch.setattr(CheckAside, "holds", counted_holds)
    return made


def _each_change_is_seen(layer, twin, x, asides, change):
    """``change`` W_hh, then W_ih, in place in both models: the next call's check aside fails
    and its result is still the reference's; the call after checks that matrix in line (the
    other aside), the one after that both aside again."""
    for matrix in ("weight_hh_l0", "weight_ih_l0"):
        for model in (layer, twin):
            change(getattr(model, matrix).data)
        _as_the_reference(layer, twin, x)
        assert asides[-1] == {"matrices": 2, "holds": False}
        _as_the_reference(layer, twin, x)
        assert asides[-1] == {"matrices": 1, "holds": True}
        _as_the_reference(layer, twin, x)
        assert asides[-1] == {"matrices": 2, "holds": True}


@pytest.mark.parametrize("name", ["LSTM", "GRU", "RNN"])
@pytest.mark.parametrize("planned", [True, False])
def test_changed_weights_are_never_used_stale(name, planned, asides, monkeypatch):
    """Through the layer (its plan, or the lean path itself), calls with both matrices checked
    aside give the reference's results; a weight written in place (W_hh, then W_ih) between
    calls fails the check aside, and the call's result is still the reference's; the next
    call checks that matrix in line (the other aside), the one after both aside again."""
    monkeypatch.setattr(threads, "two_threads_free", lambda: False)   # (one thread a step)
    if not planned:
        monkeypatch.setattr(elman.lean_plan.LeanPlan, "applies", classmethod(lambda c: False))
    layer, twin = _twins(name, 128 if name == "RNN" else 64)
    x = np.random.default_rng(2).standard_normal((24, 1, 5)).astype(np.float32)
    with elman.no_grad():
        for _ in range(4):
            _as_the_reference(layer, twin, x)
        assert [a["matrices"] for a in asides] == [0, 0, 2, 2]      # (packed, checked in line,
        assert [a["holds"] for a in asides[2:]] == [True, True]     # then aside)
        _each_change_is_seen(layer, twin, x, asides, lambda W: np.multiply(W[0, :3], -1.5, out=W[0, :3]))


@pytest.mark.parametrize("name", ["LSTM", "GRU", "RNN"])
def test_a_pair_call_has_its_partner_check_first(name, asides, monkeypatch):
    """Every step on two threads (timeloop.sequence_forward_pair): the steady panels of W_hh
    and of W_ih (the projection's) are checked by the partner before it joins the steps; either
    matrix changed in place makes the call run again with the checks in line; results always
    the reference's."""
    monkeypatch.setattr(threads, "two_threads_free", lambda: True)
    monkeypatch.setattr(timeloop, "PAIR_MIN_BYTES", 0)               # ("pair" at any size)
    monkeypatch.setattr(timeloop, "ASIDE_MIN_BYTES", 0)              # (aside at any size)
    layer, twin = _twins(name, 128 if name == "RNN" else 64)
    x = np.random.default_rng(2).standard_normal((24, 1, 5)).astype(np.float32)
    again = []                      # (the layer calls it by its own name: only the call made
    pair_call = timeloop.sequence_forward_pair      # again from within is seen here)
    monkeypatch.setattr(timeloop, "sequence_forward_pair",
                        lambda *a, **k: again.append(a[-1] if len(a) > 7 else k.get("aside"))
                        or pair_call(*a, **k))
    with elman.no_grad():
        for _ in range(3):
            _as_the_reference(layer, twin, x)
        assert asides == [{"matrices": 0, "holds": None}, {"matrices": 0, "holds": None},
                          {"matrices": 2, "holds": True}]
        _each_change_is_seen(layer, twin, x, asides, lambda W: np.multiply(W[2], 0.5, out=W[2]))
    assert again == [False, False]            # (once for each change: in line)


def test_a_partner_that_never_comes_leaves_the_check_to_the_caller(asides, monkeypatch):
    monkeypatch.setattr(threads, "two_threads_free", lambda: False)
    monkeypatch.setattr(fast.pair().Partner, "offer", lambda self, task: None)
    layer, twin = _twins("LSTM")
    x = np.random.default_rng(2).standard_normal((24, 1, 5)).astype(np.float32)
    with elman.no_grad():
        for _ in range(3):
            layer(x)
        layer.weight_hh_l0.data[5, 5] += 0.25
        twin.weight_hh_l0.data[5, 5] += 0.25
        with fast.use(False):
            want = _flat(twin(x))
        _assert_close(_flat(layer(x)), want)
    assert asides[-1] == {"matrices": 2, "holds": False}


def test_no_check_aside_where_the_partner_has_no_core(monkeypatch):
    """For batches, short calls and small matrices, and where the partner has no core (inside
    concurrently, or the policy granting one thread): the checks stay in line."""
    monkeypatch.setattr(fast, "pair_supported", lambda: True)
    T = _packed.ONE_ROW_MIN_STEPS
    size = timeloop.ASIDE_MIN_BYTES
    monkeypatch.setattr(threads, "partner_core_free", lambda: True)
    assert timeloop.check_aside(T, 1, size) is not None
    assert timeloop.check_aside(T - 1, 1, size) is None
    assert timeloop.check_aside(T, 2, size) is None
    assert timeloop.check_aside(T, 1, size - 1) is None           # (small: the check in line)
    monkeypatch.setattr(threads, "partner_core_free", lambda: False)
    assert timeloop.check_aside(T, 1, size) is None


def test_partner_core_free(monkeypatch):
    """One thread held for BLAS leaves the partner's core free; concurrently's two threads do
    not; nor a policy that grants one thread."""
    monkeypatch.setattr(threads, "granted", lambda: 2)
    with threads.one_blas_thread():
        assert threads.partner_core_free() and not threads.two_threads_free()
    inside = threads.concurrently(threads.partner_core_free, threads.partner_core_free)
    assert inside == (False, False)
    assert threads.partner_core_free()
    monkeypatch.setattr(threads, "granted", lambda: 1)
    assert not threads.partner_core_free()
