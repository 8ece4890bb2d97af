"""What the tests of the packed per-step GEMMs share (tests/test_mkl_packed.py for MKL's,
tests/test_packed_gemm.py for the kernels' own): one layer of every cell and option, a training
step that returns everything it computes, and a comparison scaled to each array."""
import numpy as np

import elman


def layer_cases(hidden: int, proj_hidden: int, proj: int) -> dict:
    """``{name: make(dtype)}``: every cell and option with 5 inputs and ``hidden`` units; the
    projected LSTM with ``proj_hidden`` units projected to ``proj``."""
    H = hidden
    return {
        "rnn": lambda dt: elman.RNN(5, H, dtype=dt, seed=1),
        "rnn-relu-bi": lambda dt: elman.RNN(5, H, nonlinearity="relu", bidirectional=True,
                                            dtype=dt, seed=1),
        "gru-2layers": lambda dt: elman.GRU(5, H, num_layers=2, dtype=dt, seed=1),
        "gru-classic": lambda dt: elman.GRU(5, H, reset_after=False, dtype=dt, seed=1),
        "lstm-bi": lambda dt: elman.LSTM(5, H, bidirectional=True, dtype=dt, seed=1),
        "lstm-proj": lambda dt: elman.LSTM(5, proj_hidden, proj_size=proj, dtype=dt, seed=1),
        "lstm-peephole": lambda dt: elman.LSTM(5, H, peephole=True, dtype=dt, seed=1),
        "lstm-regularised": lambda dt: elman.LSTM(5, H, recurrent_dropout=0.3,
                                                  input_dropout=0.2, zoneout=0.2, dtype=dt,
                                                  seed=1),
        "rnn-layer-norm": lambda dt: elman.RNN(5, H, layer_norm=True, dtype=dt, seed=1),
        "gru-layer-norm": lambda dt: elman.GRU(5, H, layer_norm=True, dtype=dt, seed=1),
        "lstm-layer-norm": lambda dt: elman.LSTM(5, H, layer_norm=True, dtype=dt, seed=1),
    }


def train_step(layer, x, lengths):
    """Outputs, final states, the input and state gradients and every parameter gradient of
    one forward and backward (fixed random output and state gradients)."""
    out, state = layer(x, lengths=lengths)
    dout = np.random.default_rng(1).standard_normal(out.shape).astype(out.dtype)
    states = state if isinstance(state, tuple) else (state,)
    dh = [np.random.default_rng(2).standard_normal(s.shape).astype(out.dtype) for s in states]
    dx, dstate = layer.backward(dout, tuple(dh) if len(dh) == 2 else dh[0])
    return [out, *states, dx, *(dstate if isinstance(dstate, tuple) else (dstate,)),
            *(p.grad.copy() for _, p in layer.named_parameters())]


def assert_close(got, expected, tol):
    """Equal up to ``tol`` relative to each array's largest magnitude, the scale of a float
    computation's rounding errors: the GEMMs compared sum in different orders, and where a
    layer norm's gradients reach hundreds one element of 0.398 differed by 2.7e-5 in float32
    (an AMD EPYC; the same test passed on an Intel Xeon)."""
    np.testing.assert_allclose(got, expected, rtol=tol,
                               atol=tol * max(1.0, float(np.abs(expected).max())))


def printed_in_fresh_process(code: str, **env: str | None) -> str:
    """What ``python -c code`` prints, in a new process whose environment is this one's with
    ``env`` applied (None: the variable removed): a switch read at import."""
    import os
    import subprocess
    import sys
    full = {k: v for k, v in os.environ.items() if k not in env}
    full.update({k: v for k, v in env.items() if v is not None})
    out = subprocess.run([sys.executable, "-c", code], env=full, capture_output=True, text=True,
                         timeout=120, check=True)
    return out.stdout.strip()


class Packings(list):
    """What a counting wrapper of a ``pack`` function records: one entry a call (the test's
    own), and in ``buffers`` each call's ``(into, packed)``: the buffer it was given and the
    one it packed into."""

    def __init__(self):
        super().__init__()
        self.buffers = []


def check_frozen_passes_pack_once(packs, dtype, unpacked, tol):
    """A frozen layer's passes (:func:`elman.freeze`) pack ``W_hh^T`` (forward) and ``W_hh``
    (backward) at the first call only, and later calls take those packings as they are: the
    same results bit for bit, and as without packing (``unpacked()``: a context with the
    packing off); a parameter's array replaced (writable again) is packed anew. ``packs``: the
    packing function's recorder (:class:`Packings`)."""
    x = np.random.default_rng(0).standard_normal((6, 3, 5)).astype(dtype)
    frozen = elman.freeze(elman.LSTM(5, 16, dtype=dtype, seed=1))

    def call():
        out, (h_n, c_n) = frozen(x)
        dx, (dh0, dc0) = frozen.backward(np.cos(out), None)
        return out, h_n, c_n, dx, dh0, dc0
    first = call()
    assert len(packs) == 2
    again = call()
    assert len(packs) == 2                               # (nothing packed)
    for a, b in zip(first, again):
        np.testing.assert_array_equal(b, a)
    with unpacked():
        expected = call()
    for a, b in zip(expected, first):
        assert_close(b, a, tol)
    frozen.weight_hh_l0.data = frozen.weight_hh_l0.data * 0.5      # a writable array again
    changed = call()
    assert len(packs) == 4
    with unpacked():
        expected = call()
    for a, b in zip(expected, changed):
        assert_close(b, a, tol)
    assert not np.allclose(changed[0], first[0])


def operand(rng, shape, dtype, form):
    """A 2-D operand of ``shape`` in one of the layouts MKL's products read
    (:func:`elman.fast._mkl.product`, :func:`elman.fast._blas.gemm_at`): ``plain``
    (C-contiguous), ``transposed`` (a C-contiguous array's ``.T``, a weight's ``W.T`` or the
    weight gradients' ``dG^T``), ``columns`` (a block of a wider array's columns) and
    ``transposed columns`` (``dG[:, :k].T``, the GRU's split weight gradient)."""
    rows, cols = shape
    if form == "plain":
        return rng.standard_normal(shape).astype(dtype)
    if form == "transposed":
        return rng.standard_normal((cols, rows)).astype(dtype).T
    if form == "columns":
        return rng.standard_normal((rows, cols + 7)).astype(dtype)[:, 3:3 + cols]
    return rng.standard_normal((cols, rows + 5)).astype(dtype)[:, 2:2 + rows].T


FORMS = ("plain", "transposed", "columns", "transposed columns")
