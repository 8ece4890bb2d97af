"""The fast path (elman.fast, compiled with numba) against the NumPy reference path.

Both paths run the same layers on the same inputs; outputs, final states, dx, d(initial states)
and every parameter gradient must agree to 1e-5 (float32) and 1e-12 (float64), relative to the
largest magnitude of each array. PyTorch parity of both paths is in test_recurrent_parity.py.
"""
import os
import subprocess
import sys
import warnings

import numpy as np
import pytest

import elman
from _torch import require

require("numba")          # CI installs the fast extra: there a missing numba is an error
from elman.fast import _math  # noqa: E402  (imports numba)

TOLERANCE = {np.float32: 1e-5, np.float64: 1e-12}


def run(layer, x, hx, lengths, seed):
    """Forward and backward with random upstream gradients; every result in one dict."""
    rng = np.random.default_rng(seed)
    layer.zero_grad()
    out, state = layer(x, hx, lengths=lengths)
    is_lstm = isinstance(state, tuple)
    states = state if is_lstm else (state,)
    dout = rng.standard_normal(out.shape).astype(layer.dtype)
    dstates = [rng.standard_normal(s.shape).astype(layer.dtype) for s in states]
    dx, dstate0 = layer.backward(dout, tuple(dstates) if is_lstm else dstates[0])
    result = dict(out=out, dx=dx)
    for k, (s, d) in enumerate(zip(states, dstate0 if is_lstm else (dstate0,))):
        result[f"state{k}"], result[f"dstate{k}"] = s, d
    result.update({name: p.grad.copy() for name, p in layer.named_parameters()})
    return result


def both_paths(layer, x, hx=None, lengths=None, seed=0):
    with elman.fast.use(False):
        reference = run(layer, x, hx, lengths, seed)
    with elman.fast.use(True):
        fast = run(layer, x, hx, lengths, seed)
    return reference, fast


def assert_agree(reference, fast, dtype, context=""):
    tol = TOLERANCE[np.dtype(dtype).type]
    for key, ref in reference.items():
        got = fast[key]
        scale = max(1.0, float(np.max(np.abs(ref))))
        err = float(np.max(np.abs(got - ref))) / scale
        assert err <= tol, f"{key}: relative difference {err:.2e} > {tol:g} ({context})"


CASES = [
    # kind, kwargs, (T, N, I, H), lengths
    ("RNN", {}, (6, 4, 3, 5), None),
    ("RNN", {"nonlinearity": "relu"}, (6, 4, 3, 5), [6, 2, 5, 1]),
    ("RNN", {"num_layers": 2, "bidirectional": True}, (5, 3, 4, 6), [3, 5, 2]),
    ("GRU", {}, (7, 3, 4, 5), None),
    ("GRU", {"bias": False}, (4, 2, 3, 3), None),
    ("GRU", {"num_layers": 2, "bidirectional": True, "batch_first": True}, (6, 4, 3, 5),
     [6, 1, 4, 3]),
    ("LSTM", {}, (7, 3, 4, 5), None),
    ("LSTM", {"bias": False, "bidirectional": True}, (5, 2, 3, 4), None),
    ("LSTM", {"num_layers": 3, "bidirectional": True}, (6, 5, 2, 7), [6, 2, 3, 1, 5]),
    ("LSTM", {"num_layers": 2}, (40, 8, 16, 33), [40, 17, 39, 2, 40, 11, 25, 30]),
    # the variants with loops of their own: the classic GRU candidate, the LSTM projection
    ("GRU", {"reset_after": False}, (7, 3, 4, 5), None),
    ("GRU", {"reset_after": False, "bias": False}, (4, 2, 3, 3), None),
    ("GRU", {"reset_after": False, "num_layers": 2, "bidirectional": True}, (6, 4, 3, 5),
     [6, 1, 4, 3]),
    ("LSTM", {"proj_size": 3}, (7, 3, 4, 5), None),
    ("LSTM", {"proj_size": 2, "bias": False}, (4, 2, 3, 4), None),
    ("LSTM", {"proj_size": 4, "num_layers": 2, "bidirectional": True, "batch_first": True},
     (6, 5, 2, 7), [6, 2, 3, 1, 5]),
    # peepholes (their weights start at zero: the test gives them random values)
    ("LSTM", {"peephole": True}, (7, 3, 4, 5), None),
    ("LSTM", {"peephole": True, "bias": False, "num_layers": 2, "bidirectional": True},
     (6, 5, 2, 7), [6, 2, 3, 1, 5]),
    ("LSTM", {"peephole": True, "proj_size": 3, "batch_first": True}, (7, 4, 4, 5),
     [7, 3, 5, 1]),
    ("LSTM", {"peephole": True, "proj_size": 4, "num_layers": 2, "bidirectional": True},
     (40, 8, 16, 33), [40, 17, 39, 2, 40, 11, 25, 30]),
]


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("case", range(len(CASES)))
def test_fast_path_agrees_with_reference(case, dtype):
    kind, kwargs, (T, N, I, H), lengths = CASES[case]
    layer = getattr(elman, kind)(I, H, dtype=dtype, seed=case, **kwargs)
    rng = np.random.default_rng(case)
    for p in layer.parameters():
        if not p.data.any():               # zero-initialised (peepholes): make them count
            p.data[...] = rng.uniform(-0.5, 0.5, p.data.shape)
    shape = (N, T, I) if kwargs.get("batch_first") else (T, N, I)
    x = rng.standard_normal(shape).astype(dtype)
    D = 2 if kwargs.get("bidirectional") else 1
    L = kwargs.get("num_layers", 1)
    h0 = rng.standard_normal((D * L, N, kwargs.get("proj_size", H))).astype(dtype)
    hx = (h0, rng.standard_normal((D * L, N, H)).astype(dtype)) if kind == "LSTM" else h0
    assert elman.fast.kernels_for(layer.eq, dtype) is not None
    reference, fast = both_paths(layer, x, hx, lengths, seed=case)
    assert_agree(reference, fast, dtype, context=repr(layer))


@pytest.mark.parametrize("kind, kwargs", [("RNN", {}), ("GRU", {}), ("LSTM", {}),
                                          ("GRU", {"reset_after": False}),
                                          ("LSTM", {"proj_size": 6})])
def test_fast_path_on_saturated_gates_and_long_sequences(kind, kwargs):
    """Large pre-activations (gates at 0 or 1 in float32) over 300 steps stay in agreement.
    Only the input side is scaled up: a large W_hh makes the recurrence chaotic, where any two
    float32 computations part ways (PyTorch's included)."""
    layer = getattr(elman, kind)(8, 16, seed=3, **kwargs)
    for name, p in layer.named_parameters():
        if "hh" not in name and "hr" not in name:
            p.data *= 6                              # |pre-activations| up to ~10
    x = np.random.default_rng(3).standard_normal((300, 4, 8)).astype(np.float32)
    reference, fast = both_paths(layer, x, seed=3)
    assert np.abs(x @ layer.weight_ih_l0.data.T).max() > 9     # tanh(9) = 1 in float32
    assert_agree(reference, fast, np.float32, context=f"{kind} {kwargs}")


def test_cells_run_through_the_fast_path():
    for cell in (elman.RNNCell(3, 4, seed=0), elman.GRUCell(3, 4, seed=0),
                 elman.GRUCell(3, 4, seed=0, reset_after=False),
                 elman.LSTMCell(3, 4, seed=0)):
        x = np.random.default_rng(0).standard_normal((2, 3)).astype(np.float32)
        results = []
        for flag in (False, True):
            with elman.fast.use(flag):
                cell.zero_grad()
                out = cell(x)
                h = out[0] if isinstance(out, tuple) else out
                dx, _ = cell.backward(np.ones_like(h))
                results.append((h, dx, cell.weight_hh.grad.copy()))
        for a, b in zip(*results):
            np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-6)


def test_every_variant_has_kernels_except_unknown_equations_and_dtypes():
    for layer in (elman.RNN(3, 5, nonlinearity="relu"), elman.GRU(3, 5, reset_after=False),
                  elman.LSTM(3, 5, proj_size=2), elman.LSTM(3, 5, peephole=True, proj_size=2)):
        assert elman.fast.kernels_for(layer.eq, np.float32) is not None
    lstm = elman.LSTM(3, 5)
    assert elman.fast.kernels_for(lstm.eq, np.float16) is None


def test_a_cell_without_a_kernel_runs_its_numpy_steps_and_says_so():
    """The fallback to the reference steps is explicit: a FastPathWarning, once per cell class,
    and the same numbers as the NumPy path."""
    from elman.cells.lstm import LSTMEquations

    class NoKernel(LSTMEquations):
        kernel = None

    lstm = elman.LSTM(3, 5, seed=0)
    x = np.random.default_rng(0).standard_normal((4, 2, 3)).astype(np.float32)
    with elman.fast.use(False):
        expected = lstm(x)[0]
    lstm.eq = NoKernel()
    with pytest.warns(elman.fast.FastPathWarning, match="NoKernel has no compiled kernel"):
        got = lstm(x)[0]
    np.testing.assert_array_equal(got, expected)
    with warnings.catch_warnings():
        warnings.simplefilter("error")                 # once per class: no second warning
        lstm(x)
    with pytest.raises(ValueError, match="no elman.fast kernel module named 'os.path'"):
        elman.fast.kernels_named("os.path")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("accumulate", [False, True])
def test_compiled_gemm_on_column_blocks(dtype, accumulate):
    """The kernels' GEMM binding passes each operand's own row stride to BLAS: column blocks of
    wider arrays (GX[t, :n, 2H:]) work in place, and nothing outside the block is touched."""
    from elman.fast import _blas
    rng = np.random.default_rng(0)
    wide_a = rng.standard_normal((5, 9)).astype(dtype)
    wide_b = rng.standard_normal((4, 11)).astype(dtype)
    wide_c = rng.standard_normal((5, 12)).astype(dtype)
    A, B, C = wide_a[:, 2:6], wide_b[:, 3:10], wide_c[:, 4:11]
    expected_c = wide_c.copy()
    expected_c[:, 4:11] = (C if accumulate else 0) + A.astype(np.float64) @ B
    _blas._check(A, B, C, accumulate)
    np.testing.assert_allclose(wide_c, expected_c, rtol=1e-5 if dtype == np.float32 else 1e-12)
    # length-1 axes may carry any stride in NumPy (here a row stride of one element)
    row = np.lib.stride_tricks.as_strided(wide_a[:1, :4].copy(), (1, 4), (A.itemsize, A.itemsize))
    col = np.ascontiguousarray(wide_b[:, :1])
    out = np.zeros((1, 1), dtype)
    _blas._check(row, col, out, accumulate)
    np.testing.assert_allclose(out, row.astype(np.float64) @ col, rtol=1e-5)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("accumulate", [False, True])
def test_compiled_gemm_reads_a_transposed_view(dtype, accumulate):
    """``B`` given as the transpose of a row block (W[:K].T, numba's 'F' layout) goes to BLAS
    through its transpose flag: the result is A @ B, with no copy of W made."""
    from elman.fast import _blas
    rng = np.random.default_rng(1)
    W = rng.standard_normal((10, 6)).astype(dtype)
    A = rng.standard_normal((3, 6)).astype(dtype)
    B = W[2:9].T                                  # (6, 7), columns contiguous
    assert B.flags.f_contiguous and not B.flags.c_contiguous
    C = rng.standard_normal((3, 7)).astype(dtype)
    expected = (C if accumulate else 0) + A.astype(np.float64) @ B
    _blas._check(A, B, C, accumulate)
    np.testing.assert_allclose(C, expected, rtol=1e-5 if dtype == np.float32 else 1e-12)
    one = W[4:5].T                                # (6, 1): a single column
    out = np.zeros((3, 1), dtype)
    _blas._check(A, one, out, accumulate)
    np.testing.assert_allclose(out, A.astype(np.float64) @ one, rtol=1e-5)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("accumulate", [False, True])
@pytest.mark.parametrize("transposed", [False, True])
@pytest.mark.parametrize("rows, cols", [(7, 5), (1, 5), (4, 3), (9, 130), (1030, 140)])
def test_compiled_gemm_of_one_row_goes_to_gemv(dtype, accumulate, transposed, rows, cols):
    """A batch of one (m = 1) goes to a matrix-vector product, in both layouts of B: the
    kernels' own four-rows-at-a-time one (``_gemv_rows``) for a transposed view of a matrix
    that stays in cache (any row count: the four-row blocks and the rest), BLAS's GEMV
    otherwise (1030 x 140 in float64: above ``GEMV_ROWS_MAX_BYTES``);
    without accumulation whatever the output held before (NaN from an uninitialised scratch)
    is not read."""
    from elman.fast import _blas
    rng = np.random.default_rng(2)
    W = rng.standard_normal((rows + 2, cols)).astype(dtype)
    B = W[1:1 + rows].T if transposed else rng.standard_normal((cols, rows)).astype(dtype)
    wide_a = rng.standard_normal((2, B.shape[0] + 5)).astype(dtype)
    A = wide_a[1:, 3:3 + B.shape[0]]              # one row, a view into a wider array
    C = np.full((1, B.shape[1]), 7 if accumulate else np.nan, dtype)
    expected = (7 if accumulate else 0) + A.astype(np.float64) @ B
    _blas._check(A, B, C, accumulate)
    np.testing.assert_allclose(C, expected, rtol=1e-5 if dtype == np.float32 else 1e-12,
                               atol=1e-5 if dtype == np.float32 else 1e-12)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("accumulate", [False, True])
def test_kernels_own_gemv(dtype, accumulate):
    """``_gemv_rows`` (the kernels' matrix-vector product for a batch of one, used where
    ``GEMV_ROWS_MAX_BYTES`` allows) on its own: every
    row count modulo 4, rows of a wider array, a NaN output not read without accumulation."""
    from elman.fast import _blas
    rng = np.random.default_rng(3)
    for rows in (1, 2, 3, 4, 5, 8, 11):
        wide = rng.standard_normal((rows + 1, 40)).astype(dtype)
        W = wide[1:, 3:36]                          # (rows, 33), a row stride of 40
        x = rng.standard_normal(33).astype(dtype)
        y = np.full(rows, 2.0 if accumulate else np.nan, dtype)
        expected = (2.0 if accumulate else 0.0) + W.astype(np.float64) @ x
        _blas._gemv_rows(W, x, y, accumulate)
        np.testing.assert_allclose(y, expected, rtol=1e-5 if dtype == np.float32 else 1e-12,
                                   atol=1e-5 if dtype == np.float32 else 1e-12)


def test_switches():
    assert elman.fast.available
    lstm = elman.LSTM(2, 3)
    assert elman.fast.kernels_for(lstm.eq, np.float32) is not None
    with elman.fast.use(False):
        assert not elman.fast.enabled()
        assert elman.fast.kernels_for(lstm.eq, np.float32) is None
        with elman.fast.use(True):
            assert elman.fast.enabled()
        assert not elman.fast.enabled()
    assert elman.fast.enabled()
    previous = elman.fast.set_enabled(False)
    try:
        assert previous is True and not elman.fast.enabled()
    finally:
        elman.fast.set_enabled(previous)


def test_environment_variable_switches_off():
    code = "import elman; print(elman.fast.enabled())"
    for value, expected in (("0", "False"), ("off", "False"), ("1", "True")):
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                             env={"ELMAN_FAST": value, "PATH": ""}, check=True)
        assert out.stdout.strip() == expected


def test_fast_tanh_accuracy():
    """The float32 rational tanh: within 5e-7 of the exact value, odd, bounded by 1; float64 is
    libm's tanh."""
    numba = require("numba")

    @numba.njit
    def apply(x, out):
        for k in range(x.size):
            out[k] = _math.tanh(x[k])

    x = np.concatenate([np.linspace(-12, 12, 400_001), [0.0, 1e-30, 50.0, -50.0, 1e30]])
    x32 = x.astype(np.float32)
    y32 = np.empty_like(x32)
    apply(x32, y32)
    exact = np.tanh(x32.astype(np.float64))
    assert np.max(np.abs(y32 - exact)) < 5e-7
    grid = y32[:400_001]                                 # x is symmetric: tanh is odd
    np.testing.assert_array_equal(grid, -grid[::-1])
    assert np.all(np.abs(y32) <= 1)
    assert y32[-3] == 1 and y32[-2] == -1 and y32[-1] == 1
    y64 = np.empty_like(x)
    apply(x, y64)
    np.testing.assert_allclose(y64, np.tanh(x), rtol=1e-15, atol=0)


@pytest.mark.parametrize("kind", ["RNN", "GRU", "LSTM"])
def test_backward_follows_the_path_that_ran_forward(kind):
    """What a forward pass keeps differs between the paths (the compiled LSTM recomputes tanh(c)
    instead of storing it): switching paths between forward and backward must not matter."""
    layer = getattr(elman, kind)(3, 4, num_layers=2, seed=0)
    x = np.random.default_rng(0).standard_normal((5, 2, 3)).astype(np.float32)
    grads = []
    for forward_fast in (True, False):
        layer.zero_grad()
        with elman.fast.use(forward_fast):
            out, _ = layer(x)
        with elman.fast.use(not forward_fast):
            dx, _ = layer.backward(np.ones_like(out))
        grads.append([dx] + [p.grad.copy() for p in layer.parameters()])
    for a, b in zip(*grads):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_output_window_finds_rows_and_columns_of_a_c_contiguous_array():
    """timeloop._output_window: a row block, a direction's columns, or both, of a C-contiguous
    (T, N, W) array are read in place (the array and the window's first row and column);
    every other layout (a transpose, reversed rows or steps, every second column, a copy, a
    view of another dtype's memory, no columns) is not."""
    from elman.timeloop import _output_window
    base = np.arange(5 * 6 * 8, dtype=np.float32).reshape(5, 6, 8)
    bigger = np.arange(9 * 6 * 8, dtype=np.float32)       # (T, N, W) planes 2-6 of a buffer
    for window, at in ((base[:, :, 4:], (0, 4)), (base[:, 2:5], (2, 0)),
                       (base[:, 3:, 2:6], (3, 2)), (base[:, :, :4], (0, 0)),
                       (bigger.reshape(9, 6, 8)[2:7, 1:, 3:], (1, 3))):
        array, found = _output_window(window)
        assert array.flags.c_contiguous and array.shape == (5, 6, 8) and found == at
        assert np.shares_memory(array, window)
        r, c = found
        view = array[:, r:r + window.shape[1], c:c + window.shape[2]]
        assert view.__array_interface__["data"][0] == window.__array_interface__["data"][0]
        assert view.strides == window.strides
        np.testing.assert_array_equal(view, window)
    other_memory = np.zeros(960, np.uint8).view(np.float32).reshape(5, 6, 8)
    for other in (base.transpose(1, 0, 2)[:, :, :4], base[:, ::-1, :4],
                  base[:, :, :4].copy(), other_memory[:, :, :4],
                  base[:, :, ::2], base[::-1, :, :4], np.zeros((5, 6, 0), np.float32)):
        assert _output_window(other) is None


@pytest.mark.parametrize("kind", ["RNN", "GRU", "LSTM"])
def test_compiled_backward_reads_an_output_gradients_window_in_place(kind, monkeypatch):
    """A bidirectional layer's compiled backward reads each direction's columns of ``dout`` where
    they are, without a copy (timeloop._output_window), and gives the gradients of a copy."""
    layer = getattr(elman, kind)(3, 8, num_layers=2, bidirectional=True, seed=0)
    x = np.random.default_rng(0).standard_normal((6, 4, 3)).astype(np.float32)
    dout = np.random.default_rng(1).standard_normal((6, 4, 16)).astype(np.float32)
    results = []
    for in_place in (True, False):
        if not in_place:
            monkeypatch.setattr(elman.timeloop, "_output_window", lambda dY: None)
        layer.zero_grad()
        layer(x)
        dx, _ = layer.backward(dout)
        results.append([dx] + [p.grad.copy() for p in layer.parameters()])
    for a, b in zip(*results):
        np.testing.assert_array_equal(a, b)


def test_planes_of_states_own_or_shared():
    """fast._windows.planes: C-contiguous states go to the kernels as they are; a direction's
    states in the array a bidirectional layer shares (timeloop.shared_directions) as its
    plane of that array; any other layout is refused."""
    from elman.fast._windows import planes
    from elman.timeloop import shared_directions
    S = np.zeros((6, 3, 4), np.float32)
    array, plane = planes(S)
    assert array is S and plane == 0
    states = np.arange(7 * 3 * 2 * 4, dtype=np.float64).reshape(7, 3, 2, 4)
    forward, reverse, out = shared_directions(states)
    assert out.shape == (5, 3, 8) and out.flags.c_contiguous and np.shares_memory(out, states)
    for d, view in enumerate((forward, reverse)):
        array, plane = planes(view)
        assert plane == d and array.shape == (6, 3, 2, 4)
        np.testing.assert_array_equal(array[:, :, plane], view)
        assert array[:, :, plane].__array_interface__["data"][0] == \
            view.__array_interface__["data"][0]
    np.testing.assert_array_equal(out[:, :, :4], forward[1:])      # steps 1..T of each
    np.testing.assert_array_equal(out[:, :, 4:], reverse[:-1])
    with pytest.raises(ValueError, match="states of shape"):
        planes(S[:, :, ::2])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("kind, options", [
    ("RNN", {}), ("RNN", {"recurrent_dropout": 0.3, "zoneout": 0.2}),
    ("RNN", {"nonlinearity": "relu", "num_layers": 2}),
    ("LSTM", {}), ("LSTM", {"recurrent_dropout": 0.3, "zoneout": 0.2}),
    ("LSTM", {"proj_size": 4, "num_layers": 2}),
    ("GRU", {}), ("GRU", {"recurrent_dropout": 0.3, "zoneout": 0.2, "num_layers": 2}),
    ("GRU", {"reset_after": False}), ("GRU", {"reset_after": False, "zoneout": 0.2})])
def test_bidirectional_layer_shares_its_directions_states_exactly(kind, options, dtype,
                                                                  monkeypatch):
    """A bidirectional RNN's, LSTM's or GRU's (both variants) directions write their states
    into one array, whose steps are the layer's output (timeloop.shares_states): outputs,
    final states and every
    gradient equal the path with an array a direction and the copy, bit for bit, in training
    (masks and zoneout drawn alike) and under no_grad; with lengths the layer keeps the copy."""
    L, P = options.get("num_layers", 1), options.get("proj_size") or 6
    rng = np.random.default_rng(0)
    x = rng.standard_normal((7, 5, 3)).astype(dtype)
    hx = rng.standard_normal((2 * L, 5, P)).astype(dtype)
    if kind == "LSTM":
        hx = (hx, rng.standard_normal((2 * L, 5, 6)).astype(dtype))
    dout = rng.standard_normal((7, 5, 2 * P)).astype(dtype)
    calls = []
    original, original_rule = elman.recurrent.shared_directions, elman.recurrent.shares_states
    monkeypatch.setattr(elman.recurrent, "shared_directions",
                        lambda states: calls.append(states) or original(states))
    results = []
    for shared in (True, False):
        if not shared:
            monkeypatch.setattr(elman.recurrent, "shares_states", lambda eq, dt: False)
        layer = getattr(elman, kind)(3, 6, bidirectional=True, dtype=dtype, seed=0, **options)
        calls.clear()
        out, h_n = layer(x, hx)
        assert len(calls) == (L if shared else 0)          # which way ran
        if shared:                               # the output: the last layer's states array
            assert np.shares_memory(out, calls[-1])
        dx, dh0 = layer.backward(dout)
        with elman.no_grad():
            inferred, _ = layer.eval()(x, hx)
        results.append([out, h_n, dx, dh0, inferred] + [p.grad for p in layer.parameters()])
    for a, b in zip(*results):
        np.testing.assert_equal(a, b)
    monkeypatch.setattr(elman.recurrent, "shares_states", original_rule)
    layer = getattr(elman, kind)(3, 6, bidirectional=True, dtype=dtype, seed=0, **options)
    calls.clear()
    out, _ = layer(x, lengths=[7, 5, 7, 2, 6])
    assert calls == [] and np.all(out[5:, 1] == 0)          # zero past its end: a copy


@pytest.mark.parametrize("kind", ["RNN", "GRU", "LSTM"])
def test_retain_graph_keeps_the_gates_that_a_normal_backward_overwrites(kind):
    """Without retain_graph the compiled backward writes gate gradients over the saved gates;
    with it the gates stay, and a second backward gives the same gradients again."""
    layer = getattr(elman, kind)(3, 4, bidirectional=True, seed=0)
    x = np.random.default_rng(0).standard_normal((6, 2, 3)).astype(np.float32)
    out, _ = layer(x)
    dout = np.random.default_rng(1).standard_normal(out.shape).astype(np.float32)
    dx1, _ = layer.backward(dout, retain_graph=True)
    first = [p.grad.copy() for p in layer.parameters()]
    layer.zero_grad()
    dx2, _ = layer.backward(dout)
    np.testing.assert_array_equal(dx1, dx2)
    for a, p in zip(first, layer.parameters()):
        np.testing.assert_array_equal(a, p.grad)


@pytest.mark.parametrize("kind", ["RNN", "GRU", "LSTM"])
def test_layer_norm_kernels_carry_nan_and_inf_as_the_reference_does(kind):
    """The layer-norm kernels' row sums may be reassociated (vectorised), nothing more: a NaN
    or an inf in one sequence gives NaN exactly where the NumPy steps give it, and the other
    sequences' numbers agree."""
    layer = getattr(elman, kind)(3, 4, layer_norm=True, dtype=np.float64, seed=0)
    x = np.random.default_rng(0).standard_normal((5, 3, 3))
    x[2, 0, 1], x[3, 2, 0] = np.nan, np.inf
    with np.errstate(invalid="ignore"):          # inf - inf, NaN in sums: expected here
        reference, fast = both_paths(layer, x)
    assert np.isnan(reference["out"][2:, 0]).all() and np.isfinite(reference["out"][:, 1]).all()
    for key, ref in reference.items():
        np.testing.assert_array_equal(np.isnan(fast[key]), np.isnan(ref), err_msg=key)
        np.testing.assert_allclose(fast[key], ref, rtol=1e-12, atol=1e-12, err_msg=key)


def test_each_kernel_compiles_once_per_dtype_whatever_the_matrix_form():
    """The per-step matrix as it is, MKL-packed or in the kernels' own panels runs one
    compiled specialization of each kernel per dtype (the forms are one type, read at run
    time), and stacks of 2-4 layer-directions two of the stack's (its operand tuples hold 2 or
    4 entries, ``timeloop.STACK_MAX``): in a fresh process, so that only these calls count."""
    code = """
import numpy as np
import elman
from elman.fast import _mkl, _packed, lstm
elman.set_num_threads(1)                       # (the packed forms are for one-thread loops)
_mkl.MIN_ELEMENTS = _packed.MIN_ELEMENTS = 0
packs = []
for module in (_mkl, _packed):
    def counting(*args, pack=module.pack, name=module.__name__):
        packs.append(name)
        return pack(*args)
    module.pack = counting
x = np.random.default_rng(0).standard_normal((6, 4, 5)).astype(np.float32)
for mkl, panels in [(False, False), (True, False), (False, _packed.available)]:
    with _mkl.use(mkl), _packed.use(panels):
        layer = elman.LSTM(5, 16, seed=1)
        out, _ = layer(x)
        layer.backward(np.ones_like(out))
with elman.no_grad():
    for layers, bidirectional in [(1, True), (2, False), (3, False), (2, True)]:
        elman.LSTM(5, 16, num_layers=layers, bidirectional=bidirectional, seed=1).eval()(x[:, :1])
# (a batch of one's lean loop multiplies by W_hh^T itself, a transposed view: fast._loop.
# project_by; compiled inside a freshly compiled lean stack, that form joins _forward's list,
# loaded from numba's cache it does not: the batch's forms are the tuple's)
counts = [sum(str(s[0].dtype) == "float32" and getattr(s[4], "layout", "") != "F"
              for s in f.signatures)
          for f in (lstm._forward, lstm._backward, lstm._stack_lean)]
print(*counts, packs.count(_mkl.__name__) > 0, packs.count(_packed.__name__) > 0)
"""
    from _packing import printed_in_fresh_process
    from elman.fast import _mkl, _packed
    printed = printed_in_fresh_process(code, ELMAN_FAST="1").split()
    assert printed[:3] == ["1", "1", "2"], printed
    assert printed[3] == str(_mkl.available) and printed[4] == str(_packed.available), printed


def test_no_two_compiled_bodies_share_a_name_but_for_the_process_counter(tmp_path):
    """numba names a compiled function by its qualified name, its argument types and a
    counter of the process that compiled it (the ``v<N>`` ABI tag). Two functions whose names
    differ only in that counter can get the same name in two other processes while their
    bodies differ (closures of one ``def`` capturing different values: gemm's beta 0 and
    gemm_acc's 1); kernels cached by those processes and loaded into a third then call the
    wrong body (numba issue #10486: a float64 LSTM gave outputs off by 0.36 here). So no
    compiled kernel may hold two such functions: checked on the GEMM binding, every form of
    its matrix operand, and an RNN's loops, compiled afresh in a new process (a cache of its
    own: code loaded from a cache cannot be inspected). Without the names of their own it
    found 5 such pairs here."""
    code = """
import re
import numpy as np
import elman
from elman.fast import _blas, rnn
A, C = np.ones((3, 4)), np.zeros((3, 5))
for B in (np.ones((4, 5)), np.ones((5, 4)).T, elman.fast.matrix_operand(np.ones((4, 5)))):
    for accumulate in (False, True):
        _blas._check(A, B, C, accumulate)
layer = elman.RNN(3, 4, dtype=np.float64, seed=0)
out, _ = layer(np.ones((5, 2, 3)))
layer.backward(np.ones_like(out))
clashes, functions = [], 0
for kernel in (_blas._check, rnn._forward, rnn._backward):
    for ir in kernel.inspect_llvm().values():
        names = set(re.findall(r'^define .*?@"?([^"( ]+)', ir, re.M))
        functions += len(names)
        seen = {}
        for name in names:
            other = seen.setdefault(re.sub(r"B\\d+v\\d+", "", name), name)
            if other != name:
                clashes.append((other, name))
print(functions, len(clashes))
for pair in clashes[:3]:
    print(*pair)
"""
    from _packing import printed_in_fresh_process
    printed = printed_in_fresh_process(code, NUMBA_CACHE_DIR=str(tmp_path)).split("\n")
    functions, clashes = map(int, printed[0].split())
    assert functions > 20 and clashes == 0, printed


def test_every_cached_kernel_is_keyed_by_the_whole_package():
    """numba stamps a cached function with its own file only; every kernel of elman.fast
    (each ``cache=True`` function and cfunc, of every module) has the package's locator,
    whose stamp adds a hash of all the package's modules and of what they import from
    elsewhere in elman (the LayerNorm kernels compile ``cells.layer_norm.EPS`` in)."""
    import importlib
    from elman.fast import _cache
    names = [n[:-3] for n in os.listdir(os.path.dirname(_cache.__file__))
             if n.endswith(".py") and n != "__init__.py"]
    cached = {}
    for name in names:
        module = importlib.import_module(f"elman.fast.{name}")
        for attr, value in vars(module).items():
            cache = getattr(value, "_cache", None)          # a dispatcher's or a cfunc's
            py_func = getattr(value, "py_func", None) or getattr(value, "_pyfunc", None)
            if getattr(py_func, "__module__", None) == module.__name__ \
                    and hasattr(cache, "_impl"):
                cached[f"{name}.{attr}"] = type(cache._impl.locator)
    assert {"lstm._forward", "_microkernel.compute", "adam._step", "_blas._gemv_rows",
            "_loop.project_input", "layer_norm._forward_lstm"} <= set(cached), sorted(cached)
    assert {k: v for k, v in cached.items() if v is not _cache.PackageLocator} == {}
    stamp = elman.fast.lstm._forward._cache._impl.locator.get_source_stamp()
    assert stamp[1] == _cache.package_stamp()
    relative = {os.path.relpath(p, os.path.dirname(elman.__file__)) for p in _cache.stamped_files()}
    assert {"fast/_blas.py", "fast/_loop.py", "cells/layer_norm.py"} <= relative, relative


def test_a_changed_helper_file_compiles_the_kernels_afresh(tmp_path):
    """With a copy of elman, each run in a fresh process: the first compiles a kernel, the
    second loads it from the cache, and after a comment is added to another file of the
    package (numba's own stamp of the kernel's file is unchanged) the third compiles it again
    instead of loading code compiled from the old sources."""
    import shutil
    shutil.copytree(os.path.dirname(elman.__file__), tmp_path / "elman",
                    ignore=shutil.ignore_patterns("__pycache__"))
    code = """
import numpy as np
from elman.fast import adam
x = np.ones(3)
adam._step(x, x.copy(), x.copy(), x.copy(), False, 0.0, False, 0.1, True, 0.999, 0.001, 1.0,
           1e-8, 0.001)
stats = adam._step.stats
print(stats.cache_hits.get(adam._step.signatures[0], 0),
      stats.cache_misses.get(adam._step.signatures[0], 0))
"""
    from _packing import printed_in_fresh_process
    env = dict(PYTHONPATH=str(tmp_path), NUMBA_CACHE_DIR=str(tmp_path / "cache"))

    def hits_misses():
        return printed_in_fresh_process(code, **env).split()

    assert hits_misses() == ["0", "1"]               # compiled (and cached)
    assert hits_misses() == ["1", "0"]               # loaded
    with open(tmp_path / "elman" / "fast" / "_math.py", "a") as f:
        f.write("# a change elsewhere in the package\n")
    assert hits_misses() == ["0", "1"]               # compiled again


def test_unreadable_package_sources_leave_numba_its_own_stamp(monkeypatch):
    """Where the package's files cannot be read as files (elman imported from a zip), the
    locator declines and numba's own locators take the kernel, instead of an error at the
    kernel's definition."""
    from elman.fast import _cache, adam

    def unreadable():
        raise FileNotFoundError("no such directory")
    monkeypatch.setattr(_cache, "stamped_files", unreadable)
    _cache.package_stamp.cache_clear()
    try:
        assert _cache.PackageLocator.from_function(adam._step.py_func, adam.__file__) is None
    finally:
        monkeypatch.undo()
        _cache.package_stamp.cache_clear()
    assert _cache.PackageLocator.from_function(adam._step.py_func, adam.__file__) is not None


def _cache_entry(root, name, level, kind, size):
    entry = root / name
    entry.mkdir()
    for field, value in (("level", level), ("type", kind), ("size", size)):
        (entry / field).write_text(f"{value}\n")


def test_l2_size_read_from_linux_cache_description(tmp_path):
    """``_cpu.l2_bytes`` finds the level-2 data or unified cache among CPU 0's caches as Linux
    lists them, and answers 0 where it cannot tell."""
    from elman.fast import _cpu
    _cache_entry(tmp_path, "index0", 1, "Data", "48K")
    _cache_entry(tmp_path, "index1", 1, "Instruction", "32K")
    _cache_entry(tmp_path, "index2", 2, "Unified", "2048K")
    _cache_entry(tmp_path, "index3", 3, "Unified", "307200K")
    assert _cpu.l2_bytes(str(tmp_path)) == 2 * 1024 * 1024
    other = tmp_path / "other"
    other.mkdir()
    _cache_entry(other, "index0", 2, "Unified", "1M")
    assert _cpu.l2_bytes(str(other)) == 1024 * 1024
    odd = tmp_path / "odd"
    odd.mkdir()
    _cache_entry(odd, "index0", 2, "Unified", "lots")
    assert _cpu.l2_bytes(str(odd)) == 0
    assert _cpu.l2_bytes(str(tmp_path / "missing")) == 0


def test_own_matrix_vector_product_up_to_half_the_l2():
    """The kernels' own GEMV takes matrices up to half a core's L2 cache, never less than the
    512 KB measured on 1 MB of L2 (an unknown L2 keeps that)."""
    from elman.fast import _blas
    mb = 1024 * 1024
    assert [_blas.gemv_rows_max_bytes(l2) for l2 in (0, mb // 4, mb, 2 * mb, 3 * mb)] == \
        [mb // 2, mb // 2, mb // 2, mb, 3 * mb // 2]
