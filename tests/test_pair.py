"""A batch of one sequence with every step on two threads (elman.fast._pair,
timeloop.sequence_forward_pair): the same results as the other paths, whoever computes which
half of a step, and the rule that decides when it runs."""
import os
import threading
import time

import numpy as np
import pytest

import elman
from elman import fast, recurrent, threads, timeloop
from _callers import from_threads

pytestmark = pytest.mark.skipif(not fast.pair_supported(),
                                reason="two threads a step: x86-64 CPUs with the fast path")


@pytest.fixture
def pair_everywhere(monkeypatch):
    """Every eligible batch-of-one call takes the pair path, whatever its size and however
    many CPUs this machine has (the protocol needs none free to be right), and the calls that
    do are counted."""
    monkeypatch.setattr(timeloop, "PAIR_MIN_BYTES", 0)
    monkeypatch.setattr(timeloop, "PAIR_BIDIRECTIONAL_MIN_BYTES", 0)
    monkeypatch.setattr(timeloop, "PAIR_MAX_BYTES", 1 << 40)
    monkeypatch.setattr(timeloop, "PAIR_MIN_STEPS", 1)
    monkeypatch.setattr(timeloop, "PIPE_CHUNK", 1 << 30)     # (stacks: not in a pipeline)
    monkeypatch.setattr(threads, "two_threads_free", lambda: True)
    calls = []
    original = recurrent.sequence_forward_pair

    def counted(*args, **kwargs):
        calls.append(args[2].shape)
        return original(*args, **kwargs)

    monkeypatch.setattr(recurrent, "sequence_forward_pair", counted)
    return calls


def _model(name, dtype, layers=1, H=32, I=5, **options):
    model = getattr(elman, name)(I, H, num_layers=layers, dtype=dtype, **options)
    rng = np.random.default_rng(7)
    for p in model.parameters():
        p.data[...] = rng.uniform(-0.4, 0.4, p.data.shape)
    return model.eval()


def _states(name, rng, layers, H, dtype):
    h0 = rng.standard_normal((layers, 1, H)).astype(dtype)
    if name == "LSTM":
        return h0, rng.standard_normal((layers, 1, H)).astype(dtype)
    return h0


def _flat(result):
    out, state = result
    return [out] + (list(state) if isinstance(state, tuple) else [state])


TOLERANCE = {np.float32: 1e-5, np.float64: 1e-12}


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", ["LSTM", "GRU", "RNN"])
@pytest.mark.parametrize("layers", [1, 2])
@pytest.mark.parametrize("directions", [1, 2])
def test_pair_calls_equal_the_reference_path(pair_everywhere, name, dtype, layers, directions):
    rng = np.random.default_rng(layers)
    H = 48                                     # splits at 16: halves of 16 and 32 units
    model = _model(name, dtype, layers, H, bidirectional=directions == 2)
    x = rng.standard_normal((23, 1, 5)).astype(dtype)
    hx = _states(name, rng, layers * directions, H, dtype)
    with elman.no_grad():
        got = _flat(model(x, hx))
        assert len(pair_everywhere) == layers * directions
        with fast.use(False):
            want = _flat(model(x, hx))
    for g, w in zip(got, want):
        assert g.dtype == dtype and g.shape == w.shape
        np.testing.assert_allclose(g, w, rtol=TOLERANCE[dtype], atol=TOLERANCE[dtype])


def test_pair_path_of_a_relu_rnn(pair_everywhere):
    model = _model("RNN", np.float64, 2, 32, nonlinearity="relu")
    x = np.random.default_rng(4).standard_normal((19, 1, 5))
    with elman.no_grad():
        got = _flat(model(x))
        with fast.use(False):
            want = _flat(model(x))
    assert len(pair_everywhere) == 2
    assert (got[0] == 0).any() and (got[0] > 0).any()      # both sides of the relu seen
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, atol=1e-12)


def test_pair_path_with_batch_first_and_unbatched_input(pair_everywhere):
    model = _model("LSTM", np.float64, 1, 32)
    model_bf = _model("LSTM", np.float64, 1, 32, batch_first=True)
    x = np.random.default_rng(0).standard_normal((17, 5))
    with elman.no_grad():
        out, (h, c) = model(x)                              # unbatched (T, I)
        out_bf, (h_bf, c_bf) = model_bf(x[None])            # (1, T, I)
        with fast.use(False):
            ref, (h_ref, c_ref) = model(x)
    assert len(pair_everywhere) == 2
    assert out.shape == (17, 32) and h.shape == (1, 32) and out_bf.shape == (1, 17, 32)
    np.testing.assert_allclose(out, ref, atol=1e-12)
    np.testing.assert_allclose(out_bf[0], ref, atol=1e-12)
    np.testing.assert_allclose(c_bf[:, 0], c_ref, atol=1e-12)


def test_many_calls_back_to_back_stay_exact(pair_everywhere):
    """Calls of every length in a row, each racing the partner from the last one (and
    reusing the last one's gates, up and down in length): any lost or doubled half of a step
    would change a result."""
    rng = np.random.default_rng(3)
    model = _model("GRU", np.float64, 1, 64)
    blocks = []                                    # (kept alive: no id reused)
    for T in list(range(1, 40)) + [200] + list(range(39, 0, -1)):
        x = rng.standard_normal((T, 1, 5))
        with elman.no_grad():
            got = model(x)[0]
            block = model._workspaces[0]._free["pair"][1]
            if not any(b is block for b in blocks):
                blocks.append(block)
            with fast.use(False):
                want = model(x)[0]
        np.testing.assert_allclose(got, want, atol=1e-12)
    assert len(pair_everywhere) == 79
    assert len(blocks) == 40           # grown while the calls grow, then kept for the shorter ones


def test_two_callers_share_one_partner(pair_everywhere):
    """Layers called from two threads at once: each call claims its own halves, whichever
    sequence the partner joins."""
    models = [_model("LSTM", np.float64, 1, 32), _model("GRU", np.float64, 2, 48)]
    rng = np.random.default_rng(5)
    inputs = [rng.standard_normal((30, 1, 5)) for _ in models]
    with elman.no_grad(), fast.use(False):
        want = [m(x)[0] for m, x in zip(models, inputs)]

    def caller(k):
        def call():
            with elman.no_grad():
                np.testing.assert_allclose(models[k](inputs[k])[0], want[k], atol=1e-12)
        return call

    from_threads([caller(0), caller(1)])


def _lstm_step_arrays(T, H, I, seed=0):
    rng = np.random.default_rng(seed)
    kernels = fast.kernels_named("elman.fast.lstm")
    model = _model("LSTM", np.float64, 1, H, I)
    w = model._weights(0)
    gx_bias, consts = model.eq.prepare_forward(w, H, np.float64)
    pair = fast.pair()
    X = rng.standard_normal((T, I))
    S, C = pair.aligned_empty((T + 1, H), np.float64), pair.aligned_empty((T + 1, H), np.float64)
    S[0], C[0] = 0.3, -0.2
    GX, g = pair.aligned_empty((T, 4 * H), np.float64), pair.aligned_empty(4 * H, np.float64)
    return kernels, model, (X, w["weight_ih"], gx_bias, w["weight_hh"], consts, GX, g, S, C)


def test_a_caller_without_partner_computes_every_half():
    """The partner never comes (a busy machine, a sleeping thread): the caller claims both
    halves of every step after its own, and the sequence equals the reference."""
    T, H = 12, 32
    kernels, model, (X, W_ih, bias, W_hh, consts, GX, g, S, C) = _lstm_step_arrays(T, H, 5)
    pair = fast.pair()
    sync, bell = pair.sync_array(T), np.zeros(pair.ROW, np.int64)
    with threads.one_blas_thread():
        none = fast.empty(X.dtype, 1)                  # (no panels: BLAS's products)
        kernels.forward_pair(model.eq, X, W_ih, bias, W_hh, none, none, 0, consts, GX, g, S, C,
                             sync, bell, 1, 0, pair.split_point(H), 1000, 1)
    rows = sync.reshape(T + 1, pair.ROW)
    assert (rows[:T, pair.CLAIM] == 1).all() and (rows[:T, pair.CLAIM + 1] == 1).all()
    assert (rows[:T, pair.DONE] == 2).all()
    assert rows[T, 0] == 1 and rows[T, 1] == 0              # the caller came, nobody else
    assert bell[0] == 1                                     # it rang
    with elman.no_grad(), fast.use(False):
        out, (h, c) = model(X[:, None], (S[0][None, None].copy(), C[0][None, None].copy()))
    np.testing.assert_allclose(S[1:], out[:, 0], atol=1e-12)
    np.testing.assert_allclose(C[-1], c[0, 0], atol=1e-12)


def test_a_late_partner_finds_the_steps_done_and_computes_nothing():
    """A partner that arrives after the caller finished (the bell rang long ago) claims no
    half, writes nothing, and goes back to waiting for the next bell."""
    T, H = 6, 32
    kernels, model, (X, W_ih, bias, W_hh, consts, GX, g, S, C) = _lstm_step_arrays(T, H, 4)
    pair = fast.pair()
    sync, bell = pair.sync_array(T), np.zeros(pair.ROW, np.int64)
    none = fast.empty(X.dtype, 1)
    args = (model.eq, X, W_ih, bias, W_hh, none, none, 0, consts, GX, g, S, C, sync, bell, 1)
    kernels.forward_pair(*args, 0, pair.split_point(H), 10, 1)
    before = S.copy(), C.copy(), sync.copy(), GX.copy()
    rung = kernels.forward_pair(*args, 1, pair.split_point(H), 10, 5)
    assert rung == 1                                        # no new bell within its spins
    np.testing.assert_array_equal(S, before[0])
    np.testing.assert_array_equal(C, before[1])
    np.testing.assert_array_equal(GX, before[3])
    rows, old = sync.reshape(T + 1, pair.ROW), before[2].reshape(T + 1, pair.ROW)
    assert (rows[:T, pair.DONE] == 2).all()                 # no half counted twice
    assert (rows[:T, :2] == old[:T, :2] + 1).all()          # each claim attempt lost
    assert rows[T, 1] == 1


def test_split_point_and_alignment():
    pair = fast.pair()
    for H in (16, 32, 48, 64, 96, 128, 160, 512):
        split = pair.split_point(H)
        assert split % pair.ALIGN == 0 and 0 < split < H or H == pair.ALIGN
        assert abs(2 * split - H) <= pair.ALIGN
    for shape in ((3,), (5, 7), (2, 3, 4)):
        for dtype in (np.float32, np.float64):
            a = pair.aligned_empty(shape, dtype)
            assert a.shape == shape and a.dtype == dtype and a.ctypes.data % 64 == 0
            assert a.flags.c_contiguous and a.flags.writeable
    sync = pair.sync_array(9)
    assert sync.shape == (10 * pair.ROW,) and not sync.any() and sync.ctypes.data % 64 == 0


@pytest.mark.parametrize("cell", [False, True])
def test_sequence_arrays_share_no_cache_line(cell):
    """A pair call's arrays: each on lines of its own (a line shared by two would travel
    between the cores), the right shapes, the counters zeroed; the ones that never leave the
    call (GX, g, C) in a block the next call reuses, S and sync fresh every time."""
    pair = fast.pair()
    T, GH, H = 7, 3 * 48, 48
    GX, g, S, C, sync, kept = arrays = pair.sequence_arrays(T, GH, H, cell, np.float32)
    block = kept[1]
    assert GX.shape == (T, GH) and g.shape == (GH,) and S.shape == (T + 1, H)
    assert (C is None) != cell and (not cell or C.shape == (T + 1, H))
    assert sync.shape == ((T + 1) * pair.ROW,) and sync.dtype == np.int64 and not sync.any()
    carved = [a for a in arrays[:5] if a is not None]
    spans = sorted((a.ctypes.data, a.ctypes.data + a.nbytes) for a in carved)
    for (start, end), (next_start, _) in zip(spans, spans[1:]):
        assert start % 64 == 0 and -(-end // 64) * 64 <= next_start
    for a in carved:
        a[...] = 1                                  # writable, and each write stays its own
    assert all((a == 1).all() for a in carved)
    inside = [a for a in (GX, g, C) if a is not None]
    assert all(np.shares_memory(a, block) for a in inside)
    assert not np.shares_memory(S, block) and not np.shares_memory(sync, block)
    again = pair.sequence_arrays(T, GH, H, cell, np.float32, reuse=kept)
    assert again[5] is kept and again[0] is GX                          # the same arrays
    assert not again[4].any() and not np.shares_memory(again[2], S)     # fresh S and sync
    shorter = pair.sequence_arrays(T - 2, GH, H, cell, np.float32, reuse=kept)
    assert shorter[5][1] is block and shorter[0].shape == (T - 2, GH)   # carved anew from it
    assert np.shares_memory(shorter[0], block) and shorter[0].ctypes.data % 64 == 0
    longer = pair.sequence_arrays(3 * T, GH, H, cell, np.float32, reuse=kept)
    assert longer[5][1] is not block and longer[0].shape == (3 * T, GH)  # too small: new


def test_pair_rule(monkeypatch):
    """When a call takes the pair path, from the thresholds and the cell: "pair" always,
    "measure" where the layer times both ways (one direction: every size up to
    PAIR_MAX_BYTES), None never."""
    monkeypatch.setattr(threads, "two_threads_free", lambda: True)
    lstm = fast.kernels_named("elman.fast.lstm")
    gru = fast.kernels_named("elman.fast.gru")
    rnn = fast.kernels_named("elman.fast.rnn")
    eq_lstm = elman.LSTM(32, 192).eq
    f32 = np.float32
    rule = timeloop.pair_rule
    assert rule(eq_lstm, lstm, 50, 1, 192, f32) == "measure"           # 576 KB
    assert rule(eq_lstm, lstm, 50, 2, 192, f32) is None                # two sequences
    assert rule(eq_lstm, lstm, 50, 1, 192, f32, 2) is None             # bidirectional:
    assert rule(eq_lstm, lstm, 500, 1, 256, f32, 2) == "pair"          # from 1 MB, where
    assert rule(eq_lstm, lstm, 50, 1, 256, f32, 2) is None             # the directions do
    assert timeloop.pairs_directions(lstm, 50, 1, 4 * 256, 256)        # not run at once
    assert rule(eq_lstm, lstm, timeloop.PAIR_MIN_STEPS - 1, 1, 192, f32) is None
    assert rule(eq_lstm, lstm, 50, 1, 200, f32) is None                # 200 % 16
    assert rule(eq_lstm, lstm, 50, 1, 128, f32) == "measure"           # 256 KB
    assert rule(eq_lstm, lstm, 50, 1, 128, f32, 2) is None             # (not two directions)
    assert rule(eq_lstm, lstm, 50, 1, 96, f32) is None                 # too small
    assert rule(eq_lstm, lstm, 50, 1, 512, f32) is None                # too large
    assert rule(eq_lstm, None, 50, 1, 192, f32) is None                # NumPy path
    assert rule(elman.GRU(32, 192).eq, gru, 50, 1, 192, f32) == "measure"
    assert rule(elman.GRU(32, 128).eq, gru, 50, 1, 128, f32) == "measure"  # 192 KB
    assert rule(elman.GRU(32, 192, reset_after=False).eq, gru, 50, 1, 192, f32) is None
    assert rule(elman.RNN(32, 512).eq, rnn, 50, 1, 512, f32) == "measure"  # 1 MB
    assert rule(eq_lstm, lstm, 50, 1, 256, f32) == "measure"           # 1 MB
    assert rule(eq_lstm, lstm, 50, 1, 368, f32) is None                # 2.07 MB: too large
    monkeypatch.setattr(timeloop, "PAIR_MIN_BYTES", 384 * 1024)       # (a bound of its own:
    assert rule(eq_lstm, lstm, 50, 1, 192, f32) == "pair"              # "pair" from there)
    assert rule(eq_lstm, lstm, 50, 1, 128, f32) == "measure"
    monkeypatch.setattr(threads, "two_threads_free", lambda: False)
    assert rule(eq_lstm, lstm, 50, 1, 192, f32) is None
    assert rule(eq_lstm, lstm, 50, 1, 128, f32) is None


def test_layers_time_both_ways_where_either_may_win(pair_everywhere, monkeypatch):
    """In the "measure" band a layer's calls take one thread and two in turn, then the way
    whose recent calls ran faster, the other every EXPLORE_EVERY-th call; every call exact;
    outside the band nothing is timed."""
    from elman import measured_choice
    monkeypatch.setattr(timeloop, "PAIR_MIN_BYTES", 1 << 40)        # all sizes "measure"
    monkeypatch.setattr(timeloop, "PAIR_MEASURED_MIN_BYTES", 0)
    model = _model("GRU", np.float64, 1, 32)
    x = np.random.default_rng(3).standard_normal((20, 1, 5))
    with elman.no_grad(), fast.use(False):
        want = _flat(model(x))
    first = 4 * measured_choice.FIRST_SAMPLES       # runs of two, in turn, each one sample
    with elman.no_grad():
        for _ in range(first):
            for g, w in zip(_flat(model(x)), want):
                np.testing.assert_allclose(g, w, atol=1e-12)
    assert len(pair_everywhere) == first // 2
    times = model._pair_choice._times
    assert len(times[0]) == len(times[1]) == first // 4 and min(times[0] + times[1]) > 0
    # two threads made slow: from now on one thread, but for the explorations
    slow = [t * 1e3 for t in times[1]]
    times[1][:] = slow
    pair_everywhere.clear()
    calls = 3 * measured_choice.EXPLORE_EVERY
    with elman.no_grad():
        for _ in range(calls):
            model(x)
            times[1][:] = slow                                       # (stays slow)
    assert len(pair_everywhere) == 2 * 3                             # explorations, in twos
    # a stack, and a length beyond the lean path's own limit: both ways exact, the one-thread
    # way on the lean path with BLAS held to one thread
    monkeypatch.setattr(timeloop, "LEAN_MAX_FLOPS", 0)
    pinned = []
    original = recurrent.RecurrentLayer._forward_lean

    def lean(self, *args):
        pinned.append(threads._pinned)
        return original(self, *args)
    monkeypatch.setattr(recurrent.RecurrentLayer, "_forward_lean", lean)
    stack = _model("GRU", np.float64, 2, 32)
    with elman.no_grad(), fast.use(False):
        want = _flat(stack(x))
    pair_everywhere.clear()
    with elman.no_grad():
        for _ in range(first):
            for g, w in zip(_flat(stack(x)), want):
                np.testing.assert_allclose(g, w, atol=1e-12)
    assert len(pair_everywhere) == 2 * first // 2                  # two layers a pair call
    assert len(pinned) == first // 2 and min(pinned) > 0
    # a layer of a size that always pairs, or never, times nothing
    monkeypatch.setattr(timeloop, "PAIR_MIN_BYTES", 0)
    other = _model("GRU", np.float64, 1, 32)
    with elman.no_grad():
        other(x)
    assert other._pair_choice.medians() == (None, None)


def test_the_partner_rests_only_when_one_thread_is_chosen(pair_everywhere, monkeypatch):
    """Through the first turns and the explorations of one thread (trials) the partner spins
    on, ready for the two threads chosen; a call of one thread chosen sends it to sleep."""
    from elman import measured_choice
    monkeypatch.setattr(timeloop, "PAIR_MIN_BYTES", 1 << 40)        # all sizes "measure"
    monkeypatch.setattr(timeloop, "PAIR_MEASURED_MIN_BYTES", 0)
    rests = []
    monkeypatch.setattr(fast.pair(), "rest_partner", lambda: rests.append(1))
    model = _model("GRU", np.float64, 1, 32)
    x = np.random.default_rng(4).standard_normal((20, 1, 5))
    times = model._pair_choice._times
    with elman.no_grad():
        for _ in range(4 * measured_choice.FIRST_SAMPLES):
            model(x)
        assert rests == []                                           # the first turns
        for _ in range(3 * measured_choice.EXPLORE_EVERY):
            times[0][:], times[1][:] = [2.0] * len(times[0]), [1.0] * len(times[1])
            model(x)                                                 # two threads faster
        assert rests == [] and len(pair_everywhere) > 3 * measured_choice.EXPLORE_EVERY - 7
        for _ in range(10):
            times[0][:], times[1][:] = [1.0] * len(times[0]), [2.0] * len(times[1])
            model(x)                                                 # one thread faster
    assert len(rests) >= 8


def test_a_resting_partner_sleeps_and_joins_the_next_sequence(pair_everywhere):
    """rest_partner(): an awake partner stops spinning at once (not after SPIN_SECONDS), and
    a later pair call wakes it again; every call exact."""
    import time
    pair = fast.pair()
    model = _model("LSTM", np.float64, 1, 32)
    x = np.random.default_rng(8).standard_normal((300, 1, 5))
    made = []
    original = pair.sequence_arrays

    def capture(*args):                        # each call's sync: who arrived
        arrays = original(*args)
        made.append(arrays[4])
        return arrays

    def joined():
        return int(made[-1][300 * pair.ROW + 1]) == 1

    pair.sequence_arrays = capture
    try:
        with elman.no_grad():
            with fast.use(False):
                want = _flat(model(x))
            got = [_flat(model(x))]
            while not joined() and len(made) < 50:           # until the partner is awake
                got.append(_flat(model(x)))
            partner = pair.partner()
            awake = not partner.sleeping
            pair.rest_partner()
            deadline = time.perf_counter() + 1.0
            while not partner.sleeping and time.perf_counter() < deadline:
                time.sleep(1e-4)
            assert partner.sleeping
            assert partner.task is None or not awake               # rest() cleared it
            pair.rest_partner()                                    # asleep: nothing to do
            del made[:]
            got.append(_flat(model(x)))
            while not joined() and len(made) < 50:                 # it wakes and joins
                got.append(_flat(model(x)))
    finally:
        pair.sequence_arrays = original
    assert joined()
    for result in got:
        for g, w in zip(result, want):
            np.testing.assert_allclose(g, w, atol=1e-12)


def test_two_threads_free_follows_the_policy(monkeypatch):
    monkeypatch.setattr(threads, "granted", lambda: 2)
    assert threads.two_threads_free()
    monkeypatch.setattr(threads, "granted", lambda: 1)                     # a busy machine
    assert not threads.two_threads_free()
    monkeypatch.setattr(threads, "granted", lambda: 2)
    inside = threads.concurrently(threads.two_threads_free, threads.two_threads_free,
                                  layer=False)
    assert inside == (False, False)                                        # both threads busy
    with threads.one_blas_thread():                                        # another pair call
        assert not threads.two_threads_free()
    assert threads.two_threads_free()


@pytest.mark.parametrize("options", [dict(zoneout=0.1), dict(proj_size=16)])
def test_options_the_pair_path_does_not_take(pair_everywhere, options):
    model = _model("LSTM", np.float64, 1, 32, **options)
    x = np.random.default_rng(1).standard_normal((20, 1, 5))
    with elman.no_grad():
        got = _flat(model(x))
        with fast.use(False):
            want = _flat(model(x))
    assert pair_everywhere == []
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, atol=1e-12)


def test_training_mode_with_dropout_and_gradients_do_not_take_it(pair_everywhere):
    model = _model("LSTM", np.float64, 2, 32, dropout=0.5).train()
    x = np.random.default_rng(2).standard_normal((20, 1, 5))
    with elman.no_grad():
        model(x)                                  # dropout between the layers: masks
    model.eval()
    model(x)                                      # gradients on: the cache is kept
    assert pair_everywhere == []
    with elman.no_grad():
        model(x)
    assert len(pair_everywhere) == 2


def _child_pair_call(queue):
    pair = fast.pair()
    model = _model("LSTM", np.float64, 1, 32)
    x = np.random.default_rng(6).standard_normal((200, 1, 5))
    timeloop.PAIR_MIN_BYTES, timeloop.PAIR_MIN_STEPS = 0, 1
    threads.two_threads_free = lambda: True
    made = []
    original = pair.sequence_arrays

    def capture(*args):                  # (each call's sync: who arrived)
        arrays = original(*args)
        made.append(arrays[4])
        return arrays
    pair.sequence_arrays = capture
    with elman.no_grad():
        got = [model(x)[0] for _ in range(20)]
        with fast.use(False):
            want = model(x)[0]
    joined = sum(int(sync[200 * pair.ROW + 1]) for sync in made)   # the partner's arrivals
    queue.put((max(float(np.abs(g - want).max()) for g in got), joined,
               pair._partner_pid == os.getpid()))


def test_a_forked_child_gets_a_partner_of_its_own(pair_everywhere):
    """A child forked after the parent's partner started (a data loader, a launcher) inherits
    the partner object but not its thread: it starts its own, and its calls stay right."""
    import multiprocessing
    model = _model("GRU", np.float64, 1, 32)
    with elman.no_grad():
        model(np.zeros((20, 1, 5)))
    assert len(pair_everywhere) == 1                  # the parent's partner is running
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    child = context.Process(target=_child_pair_call, args=(queue,))
    child.start()
    error, joined, own = queue.get(timeout=120)
    child.join(timeout=30)
    assert child.exitcode == 0 and own
    assert joined > 0                                 # a partner thread worked in the child
    assert error < 1e-12


# --- Partner.beside: two tasks at once (elman.threads.concurrently's small tasks) ---------


def _until(condition, seconds=10.0):
    """Wait (sleeping, the GIL free) until ``condition()`` or ``seconds``; whether it held."""
    deadline = time.perf_counter() + seconds
    while not condition():
        if time.perf_counter() > deadline:
            return False
        time.sleep(1e-4)
    return True


def test_beside_runs_first_on_the_partner_while_second_runs_here():
    """``second`` waits until ``first`` has started: only a partner running it at the same
    time lets both finish, and each result comes back in its place."""
    partner = fast.pair().partner()
    started, ran_on = [], []

    def first():
        ran_on.append(threading.get_ident())
        started.append(1)
        return "first"

    def second():
        assert _until(lambda: started), "the partner never started first"
        return "second"

    for _ in range(20):
        started.clear()
        assert partner.beside(first, second) == ("first", "second")
    assert threading.get_ident() not in ran_on             # the partner, every time


def test_beside_runs_first_here_when_the_partner_does_not_take_it(monkeypatch):
    """A partner that never comes (asleep, descheduled, busy): the caller runs ``first``
    itself once ``second`` is done."""
    partner = fast.pair().partner()
    monkeypatch.setattr(type(partner), "offer", lambda self, task: None)
    order = []
    result = partner.beside(lambda: order.append(("first", threading.get_ident())) or 1,
                            lambda: order.append(("second", threading.get_ident())) or 2)
    me = threading.get_ident()
    assert result == (1, 2) and order == [("second", me), ("first", me)]


def test_beside_runs_each_task_once_whoever_claims_it():
    """Short tasks race the partner: whoever claims ``first`` runs it, exactly once, and the
    call returns only after it has run."""
    partner = fast.pair().partner()
    runs = []
    for i in range(400):
        box = []

        def first(i=i):
            box.append(i)
            runs.append(i)
            return i

        assert partner.beside(first, lambda: -i) == (i, -i)
        assert box == [i]
    assert runs == list(range(400))


def test_beside_raises_after_both_tasks_stop():
    """``first``'s exception (on the partner) is raised here; ``second``'s is raised only once
    the partner has finished ``first``; both failing raises ``second``'s."""
    partner = fast.pair().partner()
    started, finished = [], []

    def failing_first():
        started.append(1)
        raise KeyError("first")

    def slow_first():
        started.append(1)
        time.sleep(0.05)
        finished.append(1)

    def waiting(error=None):
        def second():
            assert _until(lambda: started)
            if error is not None:
                raise error
            return 2
        return second

    with pytest.raises(KeyError, match="first"):
        partner.beside(failing_first, waiting())
    started.clear()
    with pytest.raises(ValueError, match="second"):
        partner.beside(slow_first, waiting(ValueError("second")))
    assert finished == [1]                        # raised after first had finished
    started.clear()
    with pytest.raises(ValueError, match="second"):
        partner.beside(failing_first, waiting(ValueError("second")))


def test_beside_does_not_start_first_after_second_failed(monkeypatch):
    partner = fast.pair().partner()
    monkeypatch.setattr(type(partner), "offer", lambda self, task: None)
    ran = []
    with pytest.raises(RuntimeError):
        partner.beside(lambda: ran.append(1), lambda: (_ for _ in ()).throw(RuntimeError()))
    assert ran == []
