"""zoneout=p (Krueger et al. 2017) on RNN, GRU, LSTM and the one-step cells: a torch.autograd
reference with the same masks (outputs and every gradient), float64 finite differences of every
parameter, the input and the initial states in training mode (masks held fixed), the compiled
kernels against the NumPy steps, the evaluation-mode expectation, padding, seeds, arguments,
checkpoints and the converters' refusals."""
import numpy as np
import pytest

import elman
from elman.interop import ConversionError

from _torch import require
from test_fast import assert_agree, run


def _randomise_zeros(layer, rng):
    """Peephole weights start at zero: give them values so that they count."""
    for p in layer.parameters():
        if not p.data.any():
            p.data[...] = rng.uniform(-0.5, 0.5, p.data.shape)


def _torch_reference(torch, kind, layer, x, h0, c0, zones):
    """torch.autograd re-implementation of a one-layer (both directions) RNN/GRU/LSTM with
    zoneout weights ``zones[d] = (a, b)`` ((T, N, P) for h, (T, N, H) for c or None): after
    each step h = a h_prev + (1 - a) h~ and c = b c_prev + (1 - b) c~, the LSTM's h~ from the
    un-zoned c~. Returns (out, h_n, c_n, params)."""
    H = layer.hidden_size
    params = {n: torch.tensor(p.data, requires_grad=True) for n, p in layer.named_parameters()}
    outs, h_n, c_n = [], [], []
    for d, sfx in enumerate(["_l0", "_l0_reverse"][:2 if layer.bidirectional else 1]):
        W_ih, W_hh = params["weight_ih" + sfx], params["weight_hh" + sfx]
        b = params["bias_ih" + sfx] + params["bias_hh" + sfx]
        a_h, a_c = (torch.from_numpy(z) if z is not None else None for z in zones[d])
        h, c = h0[d], (c0[d] if c0 is not None else None)
        seq = [None] * x.shape[0]
        for t in (range(x.shape[0] - 1, -1, -1) if d else range(x.shape[0])):
            gx = x[t] @ W_ih.T + params["bias_ih" + sfx]
            gh = h @ W_hh.T + params["bias_hh" + sfx]
            if kind == "RNN":
                new = torch.tanh(gx + gh)
            elif kind == "GRU":
                r = torch.sigmoid(gx[:, :H] + gh[:, :H])
                z = torch.sigmoid(gx[:, H:2 * H] + gh[:, H:2 * H])
                n = torch.tanh(gx[:, 2 * H:] + r * gh[:, 2 * H:])
                new = (1 - z) * n + z * h
            else:
                pre = x[t] @ W_ih.T + h @ W_hh.T + b
                i, f = torch.sigmoid(pre[:, :H]), torch.sigmoid(pre[:, H:2 * H])
                g, o = torch.tanh(pre[:, 2 * H:3 * H]), torch.sigmoid(pre[:, 3 * H:])
                c_new = f * c + i * g
                new = o * torch.tanh(c_new)                    # from the un-zoned c
                if "weight_hr" + sfx in params:
                    new = new @ params["weight_hr" + sfx].T
                c = a_c[t] * c + (1 - a_c[t]) * c_new
            h = a_h[t] * h + (1 - a_h[t]) * new
            seq[t] = h
        outs.append(torch.stack(seq))
        h_n.append(h)
        c_n.append(c)
    return (torch.cat(outs, dim=2), torch.stack(h_n),
            torch.stack(c_n) if c0 is not None else None, params)


# every kind in both modes on the NumPy steps; the compiled kernels (each one a numba compile of
# several seconds) once per kind, training and evaluation alternating: they are held to the NumPy
# steps in both modes and both dtypes by test_compiled_kernels_agree_with_the_numpy_steps
REFERENCE_CASES = [(kind, kwargs, False, training)
                   for kind, kwargs in [("RNN", {}), ("GRU", {}), ("LSTM", {}),
                                        ("LSTM", {"proj_size": 2})]
                   for training in (True, False)] + [
    ("RNN", {}, True, True), ("GRU", {}, True, False), ("LSTM", {}, True, True),
    ("LSTM", {"proj_size": 2}, True, False)]


@pytest.mark.parametrize("kind, kwargs, fast, training", REFERENCE_CASES,
                         ids=[f"{k}{'-proj' if w else ''}-{'fast' if f else 'numpy'}-"
                              f"{'train' if t else 'eval'}" for k, w, f, t in REFERENCE_CASES])
def test_zoneout_matches_a_torch_autograd_reference(kind, kwargs, fast, training):
    torch = require("torch")
    T, N, I, H = 6, 4, 3, 4
    layer = getattr(elman, kind)(I, H, bidirectional=True, zoneout=0.4, dtype=np.float64,
                                 seed=1, **kwargs)
    layer.train(training)
    P = kwargs.get("proj_size") or H
    rng = np.random.default_rng(0)
    x = rng.standard_normal((T, N, I))
    h0, c0 = rng.standard_normal((2, N, P)), rng.standard_normal((2, N, H))
    dout, dh_n, dc_n = (rng.standard_normal(s) for s in [(T, N, 2 * P), (2, N, P), (2, N, H)])
    lstm = kind == "LSTM"
    with elman.fast.use(fast):
        out, state = layer(x, (h0, c0) if lstm else h0)
        zones = [(c.zone.h, c.zone.c) for c in layer._cache["caches"]]
        dx, dstate0 = layer.backward(dout, (dh_n, dc_n) if lstm else dh_n)
    for a_h, a_c in zones:
        if training:               # fresh 0/1 masks: per step, unit and sequence; h and c apart
            assert set(np.unique(a_h)) == {0.0, 1.0}
            assert not np.array_equal(a_h[0], a_h[1])
            assert a_c is None or not np.array_equal(a_c[:, :, :P], a_h)
        else:                      # evaluation: the expectation
            assert (a_h == 0.4).all() and (a_c is None or (a_c == 0.4).all())
    xt, h0t, c0t = (torch.tensor(a, requires_grad=True) for a in (x, h0, c0))
    ref, ref_h, ref_c, params = _torch_reference(torch, kind, layer, xt, h0t,
                                                 c0t if lstm else None, zones)
    loss = (ref * torch.from_numpy(dout)).sum() + (ref_h * torch.from_numpy(dh_n)).sum()
    if lstm:
        loss = loss + (ref_c * torch.from_numpy(dc_n)).sum()
    loss.backward()
    close = dict(rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(out, ref.detach().numpy(), **close)
    np.testing.assert_allclose(state[0] if lstm else state, ref_h.detach().numpy(), **close)
    np.testing.assert_allclose(dx, xt.grad.numpy(), **close)
    np.testing.assert_allclose(dstate0[0] if lstm else dstate0, h0t.grad.numpy(), **close)
    if lstm:
        np.testing.assert_allclose(state[1], ref_c.detach().numpy(), **close)
        np.testing.assert_allclose(dstate0[1], c0t.grad.numpy(), **close)
    for name, p in layer.named_parameters():
        np.testing.assert_allclose(p.grad, params[name].grad.numpy(), err_msg=name, **close)


GRAD_CASES = [
    ("RNN", {"num_layers": 2, "bidirectional": True}),
    ("RNN", {"nonlinearity": "relu", "batch_first": True, "recurrent_dropout": 0.3}),
    ("GRU", {"bidirectional": True, "batch_first": True}),
    ("GRU", {"reset_after": False, "num_layers": 2}),
    ("GRU", {"layer_norm": True, "bidirectional": True, "recurrent_dropout": 0.3}),
    ("LSTM", {"num_layers": 2, "bidirectional": True, "dropout": 0.3}),
    ("LSTM", {"proj_size": 2, "bidirectional": True, "recurrent_dropout": 0.3}),
    ("LSTM", {"peephole": True, "proj_size": 2, "batch_first": True}),
    ("LSTM", {"layer_norm": True, "bidirectional": True}),
    ("RNN", {"layer_norm": True}),
]


# Finite differences of the NumPy steps for every case; of the compiled kernels only where
# test_compiled_kernels_agree_with_the_numpy_steps (forward and every gradient, training mode)
# has no case of the same shape: recurrent dropout on the RNN and layer norm. Elsewhere the
# compiled gradients equal the NumPy ones, which these checks hold to finite differences.
FAST_GRADCHECK = {1, 4, 8, 9}
GRAD_RUNS = [(case, False) for case in range(len(GRAD_CASES))] + [
    (case, True) for case in sorted(FAST_GRADCHECK)]


@pytest.mark.parametrize("case, fast", GRAD_RUNS,
                         ids=[f"{GRAD_CASES[c][0]}-{'-'.join(GRAD_CASES[c][1])}-"
                              f"{'fast' if f else 'numpy'}" for c, f in GRAD_RUNS])
def test_zoneout_gradients_are_exact(case, fast):
    """Central differences in float64, training mode (gradcheck replays the layer's generator:
    every evaluation sees the same masks), with lengths and initial states."""
    kind, kwargs = GRAD_CASES[case]
    rng = np.random.default_rng(case)
    T, N, I, H = 4, 3, 2, 3
    layer = getattr(elman, kind)(I, H, zoneout=0.3, dtype=np.float64, seed=case, **kwargs)
    _randomise_zeros(layer, rng)
    D, L = 2 if kwargs.get("bidirectional") else 1, kwargs.get("num_layers", 1)
    P = kwargs.get("proj_size") or H
    x = rng.standard_normal((N, T, I) if kwargs.get("batch_first") else (T, N, I))
    h0 = rng.standard_normal((D * L, N, P))
    hx = (h0, rng.standard_normal((D * L, N, H))) if kind == "LSTM" else h0
    with elman.fast.use(fast):
        errors = elman.gradcheck(layer, (x, hx), kwargs={"lengths": [4, 1, 3]})
    names = {n for n, _ in layer.named_parameters()}
    assert names <= set(errors) and "input[0]" in errors
    assert max(errors.values()) < 1e-6, errors


def test_zoneout_gradients_are_exact_in_evaluation():
    layer = elman.LSTM(2, 3, bidirectional=True, proj_size=2, zoneout=0.3, dtype=np.float64,
                       seed=0).eval()
    x = np.random.default_rng(0).standard_normal((4, 3, 2))
    errors = elman.gradcheck(layer, (x,), kwargs={"lengths": [4, 2, 3]})
    assert max(errors.values()) < 1e-6, errors


FAST_CASES = [
    ("RNN", {}, None),
    ("RNN", {"nonlinearity": "relu", "num_layers": 2, "bidirectional": True}, [6, 2, 5, 3]),
    ("GRU", {"bidirectional": True, "recurrent_dropout": 0.2}, [6, 2, 5, 3]),
    ("GRU", {"reset_after": False, "batch_first": True}, [6, 1, 4, 3]),
    ("LSTM", {"num_layers": 2, "bidirectional": True}, [6, 2, 5, 3]),
    ("LSTM", {"proj_size": 3, "bidirectional": True, "recurrent_dropout": 0.3}, [6, 2, 5, 3]),
    ("LSTM", {"peephole": True, "proj_size": 2, "num_layers": 2}, [6, 6, 1, 4]),
]


# Not all four (dtype, mode) pairs of every case: each kernel runs in both dtypes and both modes
# (RNN: cases 0 and 1; GRU: 2; the classic GRU, its own kernel: 3; LSTM: 4 and 5; peephole: 6),
# the cases with recurrent dropout at least once in training (where its mask is on). Training and
# evaluation run the same branches (evaluation's weights are p instead of 0/1), float32 and
# float64 the same code; each run costs a numba compile of seconds.
COMPILED_RUNS = [(0, np.float32, True), (1, np.float64, False), (2, np.float64, True),
                 (2, np.float32, False), (3, np.float32, False), (3, np.float64, True),
                 (4, np.float32, False), (5, np.float64, True), (6, np.float32, True),
                 (6, np.float64, False)]


@pytest.mark.parametrize("case, dtype, training", COMPILED_RUNS,
                         ids=[f"{c}-{np.dtype(d).name}-{'train' if t else 'eval'}"
                              for c, d, t in COMPILED_RUNS])
def test_compiled_kernels_agree_with_the_numpy_steps(case, dtype, training):
    require("numba")
    kind, kwargs, lengths = FAST_CASES[case]
    layer = getattr(elman, kind)(3, 5, zoneout=0.35, dtype=dtype, seed=case, **kwargs)
    layer.train(training)
    rng = np.random.default_rng(case)
    _randomise_zeros(layer, rng)
    x = rng.standard_normal((4, 6, 3) if kwargs.get("batch_first") else (6, 4, 3)).astype(dtype)
    assert elman.fast.kernels_for(layer.eq, dtype) is not None
    state = layer._rng.bit_generator.state
    with elman.fast.use(False):
        reference = run(layer, x, None, lengths, case)
    layer._rng.bit_generator.state = state         # the same masks for the compiled run
    with elman.fast.use(True):
        compiled = run(layer, x, None, lengths, case)
    assert_agree(reference, compiled, dtype, context=repr(layer))


# -- evaluation, padding, seeds -----------------------------------------------------------

@pytest.mark.parametrize("kind", ["RNN", "GRU", "LSTM"])
def test_evaluation_is_the_expectation_of_one_step(kind):
    """One step from (h0, c0): the zoned layer in evaluation gives p h0 + (1 - p) h~, where h~
    is the plain layer's step (same seed, same weights)."""
    p = 0.3
    rng = np.random.default_rng(0)
    x, h0, c0 = rng.standard_normal((1, 2, 3)), rng.standard_normal((1, 2, 4)), \
        rng.standard_normal((1, 2, 4))
    zoned = getattr(elman, kind)(3, 4, zoneout=p, dtype=np.float64, seed=5).eval()
    plain = getattr(elman, kind)(3, 4, dtype=np.float64, seed=5).eval()
    hx = (h0, c0) if kind == "LSTM" else h0
    out, state = zoned(x, hx)
    out_plain, state_plain = plain(x, hx)
    np.testing.assert_allclose(out[0], p * h0[0] + (1 - p) * out_plain[0], rtol=1e-13)
    if kind == "LSTM":           # c too, and h from the un-zoned c (not from the zoned one)
        np.testing.assert_allclose(state[1], p * c0 + (1 - p) * state_plain[1], rtol=1e-13)


def test_the_one_step_cells_zone_out_like_the_layers():
    p = 0.25
    rng = np.random.default_rng(1)
    x, h0, c0 = rng.standard_normal((2, 3)), rng.standard_normal((2, 4)), rng.standard_normal((2, 4))
    zoned = elman.LSTMCell(3, 4, zoneout=p, dtype=np.float64, seed=2)
    plain = elman.LSTMCell(3, 4, dtype=np.float64, seed=2)
    h_plain, c_plain = plain(x, (h0, c0))
    h, c = zoned(x, (h0, c0))                       # training: each unit new or kept
    assert np.all((h == h0) | np.isclose(h, h_plain, rtol=1e-14))
    assert np.all((c == c0) | np.isclose(c, c_plain, rtol=1e-14))
    assert (h == h0).any() and (h != h0).any()
    errors = elman.gradcheck(zoned, (x, (h0, c0)))  # the mask held fixed
    assert max(errors.values()) < 1e-6, errors
    zoned.eval()
    h, c = zoned(x, (h0, c0))
    np.testing.assert_allclose(h, p * h0 + (1 - p) * h_plain, rtol=1e-13)
    np.testing.assert_allclose(c, p * c0 + (1 - p) * c_plain, rtol=1e-13)
    for cell in (elman.RNNCell(3, 4, zoneout=p, dtype=np.float64, seed=3),
                 elman.GRUCell(3, 4, zoneout=p, dtype=np.float64, seed=3)):
        errors = elman.gradcheck(cell, (x, h0))
        assert max(errors.values()) < 1e-6, (cell, errors)
        plain = type(cell)(3, 4, dtype=np.float64, seed=3)
        np.testing.assert_allclose(cell.eval()(x, h0), p * h0 + (1 - p) * plain(x, h0),
                                   rtol=1e-13)


@pytest.mark.parametrize("fast", [False, True], ids=["numpy", "fast"])
def test_padding_steps_carry_the_state_as_without_zoneout(fast):
    """Evaluation (deterministic weights): a padded sequence ends as it would alone."""
    layer = elman.LSTM(3, 4, bidirectional=True, zoneout=0.4, dtype=np.float64, seed=0).eval()
    x = np.random.default_rng(0).standard_normal((6, 2, 3))
    with elman.fast.use(fast):
        out, (h_n, c_n) = layer(x, lengths=[6, 3])
        alone, (h_a, c_a) = layer(x[:3, 1:2])
    np.testing.assert_allclose(out[:3, 1:2], alone, rtol=1e-13)
    assert not out[3:, 1].any()                     # zeros past the end, as without zoneout
    np.testing.assert_allclose(h_n[:, 1:2], h_a, rtol=1e-13)
    np.testing.assert_allclose(c_n[:, 1:2], c_a, rtol=1e-13)


def test_masks_come_from_the_seed_fresh_at_every_call():
    x = np.random.default_rng(0).standard_normal((30, 8, 3)).astype(np.float32)
    a = elman.GRU(3, 16, zoneout=0.3, seed=4)
    b = elman.GRU(3, 16, zoneout=0.3, seed=4)
    first = a(x)[0]
    np.testing.assert_array_equal(first, b(x)[0])                 # same seed, same masks
    assert not np.array_equal(first, a(x)[0])                      # a new draw every call
    kept = a._cache["caches"][0].zone.h
    assert abs(kept.mean() - 0.3) < 0.02                           # P(keep) = p (3840 draws)
    a.eval()
    np.testing.assert_array_equal(a(x)[0], a(x)[0])                # evaluation: no draw
    assert not np.allclose(a(x)[0], elman.GRU(3, 16, seed=4).eval()(x)[0])


# -- arguments, checkpoints, converters ----------------------------------------------------

@pytest.mark.parametrize("value, message", [
    (1.0, r"zoneout must be in \[0, 1\), got 1.0"),
    (-0.1, r"zoneout must be a number in \[0, 1\], got -0.1"),
    ("0.2", r"zoneout must be a number in \[0, 1\], got '0.2'"),
    (True, r"zoneout must be a number in \[0, 1\], got True")])
@pytest.mark.parametrize("build", [elman.RNN, elman.GRU, elman.LSTM, elman.RNNCell,
                                   elman.GRUCell, elman.LSTMCell])
def test_zoneout_argument_is_checked(build, value, message):
    with pytest.raises(ValueError, match=message):
        build(3, 4, zoneout=value)


def test_zoneout_is_described_and_survives_a_checkpoint(tmp_path):
    for layer in (elman.LSTM(3, 4, zoneout=0.15, proj_size=2, seed=0),
                  elman.GRUCell(3, 4, zoneout=0.15, seed=0)):
        assert "zoneout=0.15" in repr(layer) and layer.config()["zoneout"] == 0.15
        elman.save(layer, tmp_path / "m.npz")
        again = elman.load(tmp_path / "m.npz")
        assert type(again) is type(layer) and again.zoneout == 0.15
        x = np.random.default_rng(0).standard_normal((5, 2, 3)).astype(np.float32)
        x = x if isinstance(layer, elman.LSTM) else x[0]
        layer.eval(), again.eval()
        np.testing.assert_array_equal(np.asarray(again(x)[0]), np.asarray(layer(x)[0]))
    assert "zoneout" not in elman.LSTM(3, 4).config()
    assert "zoneout" not in elman.LSTMCell(3, 4).config()


def test_converters_refuse_zoneout_by_name(tmp_path):
    require("torch")
    for m in (elman.GRU(3, 4, zoneout=0.2), elman.LSTMCell(3, 4, zoneout=0.2)):
        with pytest.raises(ConversionError, match=r"zoneout=0.2\) has no torch.nn counterpart"):
            elman.to_torch(m)
    require("onnx")
    with pytest.raises(ConversionError, match="has zoneout=0.2: ONNX's LSTM operator"):
        elman.export_onnx(elman.LSTM(3, 4, zoneout=0.2), tmp_path / "m.onnx")
    assert not (tmp_path / "m.onnx").exists()
