"""layer_norm=True on RNN, GRU and LSTM (Ba, Kiros & Hinton 2016): exact gradients in float64,
a torch.autograd re-implementation as the oracle, the scale invariance the normalisation
promises, and the compiled kernels (elman.fast.layer_norm) against the NumPy steps."""
import warnings

import numpy as np
import pytest

import elman
from elman.interop import ConversionError
from _torch import require
from test_fast import assert_agree, run


@pytest.fixture(autouse=True)
def _compiled():
    """The cells have their kernels: no fallback to the NumPy steps may happen silently."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", elman.fast.FastPathWarning)
        yield


@pytest.mark.parametrize("fast", [False, True], ids=["numpy", "fast"])
@pytest.mark.parametrize("kind, kwargs", [
    ("RNN", {"num_layers": 2, "bidirectional": True}),
    ("RNN", {"nonlinearity": "relu", "batch_first": True}),
    ("GRU", {"num_layers": 2, "bidirectional": True}),
    ("GRU", {"bias": False, "recurrent_dropout": 0.3}),
    ("LSTM", {"num_layers": 2, "bidirectional": True, "forget_bias": 1.0}),
    ("LSTM", {"proj_size": 3, "input_dropout": 0.2, "batch_first": True}),
])
def test_layer_norm_gradients_are_exact(kind, kwargs, fast):
    layer = getattr(elman, kind)(3, 6, layer_norm=True, dtype=np.float64, seed=4, **kwargs)
    for p in layer.parameters():              # gains and shifts away from their 1 and 0
        p.data += np.random.default_rng(5).normal(0, 0.1, p.data.shape)
    shape = (4, 5, 3) if kwargs.get("batch_first") else (5, 4, 3)
    x = np.random.default_rng(6).standard_normal(shape)
    with elman.fast.use(fast):
        errors = elman.gradcheck(layer, (x,), kwargs={"lengths": [5, 2, 4, 1]})
    assert any(name.startswith("ln_hh_weight") for name in errors)
    assert max(errors.values()) < 1e-6, errors


def _torch_reference(torch, kind, layer, x):
    """One layer, both directions, in torch with F.layer_norm, the same weights."""
    F = torch.nn.functional
    H = layer.hidden_size
    params = {n: torch.tensor(p.data, requires_grad=True) for n, p in layer.named_parameters()}
    outs = []
    for d, sfx in enumerate(["_l0", "_l0_reverse"]):
        P = {k[:-len(sfx)]: v for k, v in params.items() if k.endswith(sfx)}

        def ln(v, name):
            return F.layer_norm(v, v.shape[-1:], P[name + "_weight"], P[name + "_bias"], 1e-5)
        h = torch.zeros(x.shape[1], H, dtype=x.dtype)
        c = torch.zeros_like(h)
        seq = [None] * x.shape[0]
        for t in (range(x.shape[0] - 1, -1, -1) if d else range(x.shape[0])):
            gx = ln(x[t] @ P["weight_ih"].T, "ln_ih")
            gh = ln(h @ P["weight_hh"].T, "ln_hh")
            if kind == "RNN":
                h = torch.tanh(gx + gh + P["bias_ih"] + P["bias_hh"])
            elif kind == "LSTM":
                a = gx + gh + P["bias_ih"] + P["bias_hh"]
                i, f = torch.sigmoid(a[:, :H]), torch.sigmoid(a[:, H:2 * H])
                g, o = torch.tanh(a[:, 2 * H:3 * H]), torch.sigmoid(a[:, 3 * H:])
                c = f * c + i * g
                h = o * torch.tanh(ln(c, "ln_c"))
            else:
                b_ih, b_hh = P["bias_ih"], P["bias_hh"]
                r = torch.sigmoid(gx[:, :H] + b_ih[:H] + gh[:, :H] + b_hh[:H])
                z = torch.sigmoid(gx[:, H:2 * H] + b_ih[H:2 * H] + gh[:, H:2 * H] + b_hh[H:2 * H])
                n = torch.tanh(gx[:, 2 * H:] + b_ih[2 * H:] + r * (gh[:, 2 * H:] + b_hh[2 * H:]))
                h = (1 - z) * n + z * h
            seq[t] = h
        outs.append(torch.stack(seq))
    return torch.cat(outs, dim=2), params


@pytest.mark.parametrize("fast", [False, True], ids=["numpy", "fast"])
@pytest.mark.parametrize("kind", ["RNN", "GRU", "LSTM"])
def test_layer_norm_matches_a_torch_autograd_reference(kind, fast):
    torch = require("torch")
    layer = elman.__dict__[kind](3, 5, bidirectional=True, layer_norm=True, dtype=np.float64,
                                 seed=1)
    for p in layer.parameters():
        p.data += np.random.default_rng(2).normal(0, 0.2, p.data.shape)
    x = np.random.default_rng(3).standard_normal((6, 4, 3))
    dout = np.random.default_rng(4).standard_normal((6, 4, 10))
    with elman.fast.use(fast):
        out, _ = layer(x)
        dx, _ = layer.backward(dout, None)
    xt = torch.tensor(x, requires_grad=True)
    ref, params = _torch_reference(torch, kind, layer, xt)
    (ref * torch.from_numpy(dout)).sum().backward()
    np.testing.assert_allclose(out, ref.detach().numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(dx, xt.grad.numpy(), rtol=1e-9, atol=1e-11)
    for name, p in layer.named_parameters():
        np.testing.assert_allclose(p.grad, params[name].grad.numpy(), rtol=1e-9, atol=1e-11,
                                   err_msg=name)


@pytest.mark.parametrize("kind", ["RNN", "GRU", "LSTM"])
def test_scaling_the_input_weights_leaves_the_output_unchanged(kind):
    """The input side is normalised: W_ih -> 3 W_ih (biases zero) changes nothing (up to the
    normalisation's eps)."""
    layer = elman.__dict__[kind](3, 6, layer_norm=True, bias=False, dtype=np.float64, seed=0)
    # inputs of some size: eps = 1e-5 against the projection's variance is the only difference
    x = 10 * np.random.default_rng(1).standard_normal((7, 2, 3))
    before = layer(x)[0]
    layer.weight_ih_l0.data *= 3.0
    np.testing.assert_allclose(layer(x)[0], before, rtol=0, atol=1e-4)
    # without the normalisation, the same scaling moves the output
    plain = elman.__dict__[kind](3, 6, bias=False, dtype=np.float64, seed=0)
    was = plain(x)[0]
    plain.weight_ih_l0.data *= 3.0
    assert np.abs(plain(x)[0] - was).max() > 1e-2


FAST_CASES = [
    ("RNN", {}, None),
    ("RNN", {"nonlinearity": "relu", "recurrent_dropout": 0.3, "zoneout": 0.2}, [6, 2, 5, 3]),
    ("GRU", {"num_layers": 2, "bidirectional": True}, [6, 2, 5, 3]),
    ("GRU", {"bias": False, "zoneout": 0.3, "batch_first": True}, [6, 1, 4, 3]),
    ("LSTM", {}, None),
    ("LSTM", {"proj_size": 3, "bidirectional": True, "zoneout": 0.3}, [6, 2, 5, 3]),
    ("LSTM", {"recurrent_dropout": 0.2, "bias": False, "num_layers": 2}, [6, 6, 1, 4]),
    ("LSTM", {"num_layers": 2}, [40, 17, 39, 2, 40, 11, 25, 30]),
]


def _both_paths(case, dtype, spec=None, hidden=5):
    """The NumPy steps and the compiled loops on the same layer, input and masks: FAST_CASES'
    ``case``, or ``spec`` (seeded with ``case``) with ``hidden`` units."""
    kind, kwargs, lengths = FAST_CASES[case] if spec is None else spec
    T, N = (40, 8) if lengths and len(lengths) == 8 else (6, 4)
    layer = getattr(elman, kind)(3, hidden, layer_norm=True, dtype=np.float64, seed=case,
                                 **kwargs)
    rng = np.random.default_rng(case)
    for name, p in layer.named_parameters():       # gains and shifts away from 1 and 0
        if name.startswith("ln_"):
            p.data += rng.uniform(-0.5, 0.5, p.data.shape)
    x = rng.standard_normal((N, T, 3) if kwargs.get("batch_first") else (T, N, 3))
    if dtype != np.float64:                         # the same values, rounded
        twin = getattr(elman, kind)(3, hidden, layer_norm=True, dtype=dtype, seed=case,
                                    **kwargs)
        for a, b in zip(twin.parameters(), layer.parameters()):
            a.data[...] = b.data
        layer = twin
    assert elman.fast.kernels_for(layer.eq, dtype) is not None
    state = layer._rng.bit_generator.state
    results = []
    for fast in (False, True):
        layer._rng.bit_generator.state = state     # the same masks for both runs
        with elman.fast.use(fast):
            results.append(run(layer, x.astype(dtype), None, lengths, case))
    return results


@pytest.mark.parametrize("case", range(len(FAST_CASES)))
def test_compiled_kernels_agree_with_the_numpy_steps_in_float64(case):
    require("numba")
    reference, compiled = _both_paths(case, np.float64)
    assert_agree(reference, compiled, np.float64, context=str(FAST_CASES[case]))


@pytest.mark.parametrize("kind", ["RNN", "GRU", "LSTM"])
@pytest.mark.parametrize("hidden", [1, 2, 3])
def test_compiled_kernels_agree_at_the_smallest_hidden_sizes(kind, hidden):
    """The compiled loops keep each row's three 1/std values (recurrent, input, the LSTM's c)
    in columns of their own after the normalised rows: one block of H from H = 3 on, three
    below (a bug there would overwrite a neighbour's value and show here)."""
    require("numba")
    spec = (kind, {"num_layers": 2, "bidirectional": True}, [6, 2, 5, 3])
    reference, compiled = _both_paths(0, np.float64, spec, hidden)
    assert_agree(reference, compiled, np.float64, context=f"{kind}, H = {hidden}")


@pytest.mark.parametrize("case", range(len(FAST_CASES)))
def test_compiled_kernels_in_float32_agree_with_the_numpy_steps(case):
    """float32: the compiled loops agree with the NumPy steps to 1e-5 (relative to each array's
    largest value), except where float32 itself is not that precise: a normalisation over a
    few values (H = 5), stacked, over 40 steps (case 7) puts the compiled path up to 5.4e-5
    from the float64 result, the NumPy steps 4.8e-6 (measured, gradient of ln_c_bias; the
    forward 6e-7 vs 3e-6). There both must stay within 1e-4 of the float64 result, where a
    wrong equation is off by 1e-2 (float64: both paths agree to 1e-12, test above)."""
    require("numba")
    reference, compiled = _both_paths(case, np.float32)
    exact, _ = _both_paths(case, np.float64)
    for key, ref in reference.items():
        scale = max(1.0, float(np.abs(exact[key]).max()))
        apart = float(np.abs(compiled[key] - ref).max()) / scale
        errors = [float(np.abs(a[key] - exact[key]).max()) / scale for a in (compiled, reference)]
        assert apart <= 1e-5 or max(errors) <= 1e-4, (key, apart, errors)


def test_layer_norm_parameters_options_and_refusals(tmp_path):
    lstm = elman.LSTM(3, 4, layer_norm=True, bidirectional=True)
    names = [n for n, _ in lstm.named_parameters()]
    assert names[4:10] == ["ln_ih_weight_l0", "ln_ih_bias_l0", "ln_hh_weight_l0",
                           "ln_hh_bias_l0", "ln_c_weight_l0", "ln_c_bias_l0"]
    assert (lstm.ln_hh_weight_l0_reverse.data == 1).all() and not lstm.ln_c_bias_l0.data.any()
    assert "layer_norm=True" in repr(lstm)
    elman.save(lstm, tmp_path / "m.npz")
    again = elman.load(tmp_path / "m.npz")
    x = np.random.default_rng(0).standard_normal((4, 2, 3)).astype(np.float32)
    np.testing.assert_array_equal(again(x)[0], lstm(x)[0])
    with pytest.raises(TypeError, match="layer_norm must be True or False"):
        elman.GRU(3, 4, layer_norm="yes")
    with pytest.raises(ValueError, match="layer_norm=True needs reset_after=True"):
        elman.GRU(3, 4, layer_norm=True, reset_after=False)
    with pytest.raises(ConversionError, match="layer_norm=True\\) has no torch.nn"):
        require("torch")
        elman.to_torch(lstm)
    require("onnx")
    with pytest.raises(ConversionError, match="has layer_norm=True: ONNX's LSTM operator"):
        elman.export_onnx(lstm, tmp_path / "m.onnx")


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("kind", ["RNN", "GRU", "LSTM"])
def test_compiled_normalisation_keeps_a_mean_far_larger_than_the_spread(kind, dtype):
    """Input projections 2^14 above zero with a spread of a few units (a constant input
    feature whose weight is 1 in every row of W_ih; every weight and input a multiple of 1/8,
    so that the projections are exact in float32 too): the compiled loops' means and
    variances (one pass around each row's first element) and normalised rows keep the
    results as close to the NumPy steps in float64 as elsewhere. Summed around zero, the
    squares would lose 1e8 times float64's rounding here, and rows normalised about their
    float32 mean alone would be off by 1e-3."""
    require("numba")
    T, N, I, H = 9, 4, 4, 6
    rng = np.random.default_rng(3)
    exact = getattr(elman, kind)(I, H, layer_norm=True, dtype=np.float64, seed=3)
    W = exact.weight_ih_l0.data
    W[...] = rng.integers(-4, 5, W.shape) / 8.0
    W[:, 0] = 1.0
    x = rng.integers(-3, 4, (T, N, I)).astype(np.float64)
    x[..., 0] = 2.0 ** 14
    with elman.fast.use(False):
        reference = run(exact, x, None, None, 3)
    layer = getattr(elman, kind)(I, H, layer_norm=True, dtype=dtype, seed=3)
    for a, b in zip(layer.parameters(), exact.parameters()):
        a.data[...] = b.data
    with elman.fast.use(True):
        compiled = run(layer, x.astype(dtype), None, None, 3)
    tol = 1e-12 if dtype == np.float64 else 1e-4     # (float32: as the float32 test above)
    for key, ref in reference.items():
        scale = max(1.0, float(np.abs(ref).max()))
        err = float(np.abs(compiled[key] - ref).max()) / scale
        assert err <= tol, (key, err)
