"""LSTM(peephole=True) and LSTMCell(peephole=True): exact gradients (float64 central
differences), the compiled kernel against the NumPy steps, zero peepholes equal the plain LSTM,
checkpoints, onnxruntime's LSTM operator (its ``P`` input) and, for the one-step cell, a
torch.autograd reference as independent oracles; what torch cannot express is refused."""
import os

import numpy as np
import pytest

import elman
from elman.cells import PeepholeLSTMEquations
from elman.interop import ConversionError

from _torch import require


def peephole_lstm(I, H, rng, scale=0.5, **kwargs):
    """An LSTM(peephole=True) with random nonzero peephole weights (they start at zero)."""
    layer = elman.LSTM(I, H, peephole=True, **kwargs)
    for name, p in layer.named_parameters():
        if name.startswith("weight_c"):
            p.data[...] = rng.uniform(-scale, scale, p.data.shape)
    return layer


# -- parameters, arguments, description --------------------------------------------------------

def test_parameters_names_shapes_and_zero_initialisation():
    layer = elman.LSTM(3, 5, num_layers=2, bidirectional=True, proj_size=2, peephole=True)
    names = [n for n, _ in layer.named_parameters()]
    for k in range(2):
        for sfx in ("", "_reverse"):
            s = f"_l{k}{sfx}"
            # the standard ones first (same random draws as the plain LSTM), then the peepholes
            assert names[names.index("weight_hr" + s) + 1:names.index("weight_hr" + s) + 4] == [
                "weight_ci" + s, "weight_cf" + s, "weight_co" + s]
            for gate in "ifo":
                p = getattr(layer, f"weight_c{gate}" + s)
                assert p.data.shape == (5,) and not p.data.any()
    assert isinstance(layer.eq, PeepholeLSTMEquations)
    assert elman.fast.kernels_for(layer.eq, np.float32).__name__ == "elman.fast.peephole_lstm"


def test_flag_config_and_repr():
    plain, peep = elman.LSTM(3, 4), elman.LSTM(3, 4, peephole=True)
    assert "peephole" not in plain.config() and "peephole" not in repr(plain)
    assert peep.config()["peephole"] is True and repr(peep) == "LSTM(3, 4, peephole=True)"
    assert plain.peephole is False
    with pytest.raises(TypeError, match=r"peephole must be True or False, got 'yes'"):
        elman.LSTM(3, 4, peephole="yes")


@pytest.mark.parametrize("proj_size", [0, 2])
@pytest.mark.parametrize("fast", [False, True], ids=["numpy", "fast"])
def test_zero_peepholes_equal_the_plain_lstm_exactly(fast, proj_size):
    kw = dict(num_layers=2, bidirectional=True, proj_size=proj_size, seed=7)
    plain, peep = elman.LSTM(3, 5, **kw), elman.LSTM(3, 5, peephole=True, **kw)
    x = np.random.default_rng(0).standard_normal((6, 4, 3)).astype(np.float32)
    lengths = [6, 2, 5, 3]
    with elman.fast.use(fast):
        a, (ha, ca) = plain(x, lengths=lengths)
        b, (hb, cb) = peep(x, lengths=lengths)
        dout = np.random.default_rng(1).standard_normal(a.shape).astype(np.float32)
        dxa, (dha, dca) = plain.backward(dout, (ha, ca))
        dxb, (dhb, dcb) = peep.backward(dout, (hb, cb))
    for u, v in ((a, b), (ha, hb), (ca, cb), (dxa, dxb), (dha, dhb), (dca, dcb)):
        np.testing.assert_array_equal(u, v)
    for name, p in plain.named_parameters():
        np.testing.assert_array_equal(p.data, getattr(peep, name).data)
        np.testing.assert_array_equal(p.grad, getattr(peep, name).grad, err_msg=name)


# -- exactness ---------------------------------------------------------------------------------

# (num_layers, bidirectional, bias, batch_first, proj_size, unbatched, lengths)
GRID = [
    (1, False, True, False, 0, False, None),
    (2, True, True, False, 0, False, [4, 2, 1]),
    (1, True, False, True, 0, False, [3, 4, 2]),
    (2, False, True, True, 2, False, [4, 1, 3]),
    (1, True, True, False, 2, False, None),
    (2, True, True, False, 2, False, [2, 4, 3]),
    (1, False, True, False, 0, True, None),
]


@pytest.mark.parametrize("fast", [False, True], ids=["numpy", "fast"])
@pytest.mark.parametrize("config", GRID, ids=lambda c: "L{}-{}-{}-{}-P{}-{}-{}".format(
    c[0], "bi" if c[1] else "uni", "bias" if c[2] else "nobias", "bf" if c[3] else "tf", c[4],
    "unbatched" if c[5] else "batched", "len" if c[6] else "full"))
def test_gradcheck_every_parameter_input_and_initial_state(config, fast):
    layers, bi, bias, batch_first, proj, unbatched, lengths = config
    rng = np.random.default_rng(GRID.index(config))
    T, N, I, H = 4, 3, 2, 3
    layer = peephole_lstm(I, H, rng, num_layers=layers, bidirectional=bi, bias=bias,
                          batch_first=batch_first, proj_size=proj, dtype=np.float64, seed=0)
    D, P = 2 if bi else 1, proj or H
    lead = () if unbatched else (N,)
    x = rng.standard_normal((T, I) if unbatched else (N, T, I) if batch_first else (T, N, I))
    h0 = rng.standard_normal((D * layers,) + lead + (P,))
    c0 = rng.standard_normal((D * layers,) + lead + (H,))
    with elman.fast.use(fast):
        errors = elman.gradcheck(layer, (x, (h0, c0)),
                                 kwargs={} if lengths is None else {"lengths": lengths})
    names = {n for n, _ in layer.named_parameters()}
    assert {n for n in names if n.startswith("weight_c")} == {
        f"weight_c{g}_l{k}{s}" for g in "ifo" for k in range(layers)
        for s in ("", "_reverse")[:D]}
    assert set(errors) == names | {"input[0]", "input[1][0]", "input[1][1]"}
    assert max(errors.values()) < 1e-7, errors


def test_peepholes_change_the_result():
    """Nonzero peepholes act (so the checks above test them), each on its own gate."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((5, 2, 3))
    c0 = (np.zeros((1, 2, 4)), rng.standard_normal((1, 2, 4)))
    base = elman.LSTM(3, 4, peephole=True, dtype=np.float64, seed=0)
    out0 = base(x, c0)[0]
    for gate in "ifo":
        layer = elman.LSTM(3, 4, peephole=True, dtype=np.float64, seed=0)
        getattr(layer, f"weight_c{gate}_l0").data[...] = 0.7
        assert np.abs(layer(x, c0)[0] - out0).max() > 1e-3, gate


@pytest.mark.parametrize("dtype, tol", [(np.float32, 1e-5), (np.float64, 1e-12)],
                         ids=["f32", "f64"])
def test_saturated_long_sequences_fast_agrees_with_reference(dtype, tol):
    """As test_fast's saturated case (the input side scaled up, gates at 0 or 1), with
    peepholes of moderate size: like a large W_hh, large peepholes make the recurrence (here
    through c, which grows over 300 steps) chaotic, where two float32 computations part ways."""
    from test_fast import TOLERANCE, assert_agree, both_paths
    rng = np.random.default_rng(3)
    layer = peephole_lstm(8, 16, rng, scale=0.5, proj_size=5, dtype=dtype, seed=3)
    layer.weight_ih_l0.data *= 6
    x = rng.standard_normal((300, 4, 8)).astype(dtype)
    reference, fast = both_paths(layer, x, seed=3)
    assert_agree(reference, fast, dtype, context=repr(layer))
    assert tol == TOLERANCE[dtype]


# -- checkpoints -------------------------------------------------------------------------------

def test_checkpoint_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    layer = peephole_lstm(3, 4, rng, num_layers=2, bidirectional=True, seed=0)
    path = os.path.join(tmp_path, "peephole.npz")
    elman.save(layer, path)
    again = elman.load(path)
    assert type(again) is elman.LSTM and again.peephole is True
    for name, p in layer.named_parameters():
        np.testing.assert_array_equal(getattr(again, name).data, p.data)
    x = rng.standard_normal((5, 2, 3)).astype(np.float32)
    np.testing.assert_array_equal(again(x)[0], layer(x)[0])
    # a plain LSTM's checkpoint holds no peephole key and loads as before
    plain = os.path.join(tmp_path, "plain.npz")
    elman.save(elman.LSTM(3, 4, seed=0), plain)
    assert elman.load(plain).peephole is False


def test_state_dict_needs_the_peephole_weights():
    peep = elman.LSTM(3, 4, peephole=True, seed=0)
    with pytest.raises(RuntimeError, match="weight_ci_l0"):
        peep.load_state_dict(elman.LSTM(3, 4, seed=0).state_dict())


# -- interop -----------------------------------------------------------------------------------

def test_to_torch_refuses_peepholes():
    require("torch")
    from elman.interop import to_torch
    with pytest.raises(ConversionError, match=r"LSTM\(peephole=True\) has no torch.nn"):
        to_torch(elman.LSTM(3, 4, peephole=True))
    with pytest.raises(ConversionError, match=r"layer 0: LSTM\(peephole=True\)"):
        to_torch(elman.Sequential([elman.LSTM(3, 4, peephole=True), elman.Last()]))


@pytest.mark.parametrize("bidirectional, layers, batch_first", [
    (False, 1, False), (True, 2, False), (True, 1, True), (False, 2, True)])
def test_onnxruntime_computes_what_elman_computes(tmp_path, bidirectional, layers, batch_first):
    """onnxruntime's LSTM with P as the oracle: outputs and final states, with lengths and
    initial states, against elman with random nonzero peepholes."""
    require("onnx")
    ort = require("onnxruntime")
    from elman.interop import export_onnx
    from test_interop_onnx import assert_close
    rng = np.random.default_rng(layers + 2 * bidirectional)
    I, H, D = 3, 5, 2 if bidirectional else 1
    layer = peephole_lstm(I, H, rng, scale=1.0, num_layers=layers, bidirectional=bidirectional,
                          batch_first=batch_first, seed=1).eval()
    path = tmp_path / "peephole.onnx"
    proto = export_onnx(layer, path, lengths=True, initial_states=True)
    nodes = [n for n in proto.graph.node if n.op_type == "LSTM"]
    assert len(nodes) == layers and all(len(n.input) == 8 for n in nodes)   # ... P
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for T, N in ((6, 4), (3, 1)):
        x = rng.standard_normal((N, T, I) if batch_first else (T, N, I)).astype(np.float32)
        h0 = rng.standard_normal((layers * D, N, H)).astype(np.float32)
        c0 = rng.standard_normal((layers * D, N, H)).astype(np.float32)
        lengths = rng.integers(1, T + 1, size=N)
        out, (h_n, c_n) = layer(x, (h0, c0), lengths=lengths)
        theirs = sess.run(None, {"input": x, "h0": h0, "c0": c0, "lengths": lengths})
        for what, ours, t in zip(("output", "h_n", "c_n"), (out, h_n, c_n), theirs):
            assert_close(ours, t, f"{what} T={T} N={N}")
        # the peepholes matter here: without them onnxruntime would disagree
        assert np.abs(out - elman.LSTM(I, H, num_layers=layers, bidirectional=bidirectional,
                                       batch_first=batch_first, seed=1)(
            x, (h0, c0), lengths=lengths)[0]).max() > 1e-3


def test_onnx_peephole_layout_is_input_output_forget():
    require("onnx")
    from onnx import numpy_helper
    from elman.interop.onnx import to_onnx
    layer = elman.LSTM(2, 3, bidirectional=True, peephole=True)
    for k, (name, p) in enumerate(n for n in layer.named_parameters() if n[0][:8] == "weight_c"):
        p.data[...] = np.arange(3) + 10 * k          # ci, cf, co, then the reverse direction's
    proto = to_onnx(layer)
    P = next(numpy_helper.to_array(t) for t in proto.graph.initializer if t.name.endswith("_P"))
    np.testing.assert_array_equal(P, [[0, 1, 2, 20, 21, 22, 10, 11, 12],
                                      [30, 31, 32, 50, 51, 52, 40, 41, 42]])


def test_peepholes_combine_with_recurrent_dropout_and_forget_bias():
    """The compiled loop applies the recurrent dropout mask as the NumPy steps do; forget_bias
    starts the forget gate as in the plain LSTM; layer_norm is refused in combination."""
    results = []
    for fast in (False, True):
        layer = elman.LSTM(3, 4, peephole=True, recurrent_dropout=0.4, forget_bias=1.0,
                           bidirectional=True, dtype=np.float64, seed=0)
        for name in ("weight_ci_l0", "weight_cf_l0", "weight_co_l0_reverse"):
            getattr(layer, name).data[:] = 0.3
        x = np.random.default_rng(1).standard_normal((6, 3, 3))
        with elman.fast.use(fast):
            out, _ = layer(x, lengths=[6, 2, 4])
            dx, _ = layer.backward(np.ones_like(out), None)
        results.append((out, dx, layer.weight_hh_l0.grad.copy(), layer.weight_co_l0.grad.copy()))
    for a, b in zip(*results):
        np.testing.assert_allclose(b, a, rtol=1e-12, atol=1e-12)
    assert (layer.bias_ih_l0.data[4:8] == 1.0).all()
    errors = elman.gradcheck(layer, (x,), kwargs={"lengths": [6, 2, 4]})
    assert max(errors.values()) < 1e-6, errors
    with pytest.raises(ValueError, match="layer_norm=True and peephole=True cannot be combined"):
        elman.LSTM(3, 4, peephole=True, layer_norm=True)


# -- the one-step cell: LSTMCell(peephole=True) ------------------------------------------------

def peephole_cell(I, H, rng, scale=0.5, **kwargs):
    """An LSTMCell(peephole=True) with random nonzero peephole weights."""
    cell = elman.LSTMCell(I, H, peephole=True, **kwargs)
    for name in ("weight_ci", "weight_cf", "weight_co"):
        getattr(cell, name).data[...] = rng.uniform(-scale, scale, H)
    return cell


def torch_peephole_step(torch, cell, x, h0, c0, a=None, b=None):
    """The peephole step written out in torch (the equations of elman.cells.peephole_lstm),
    with zoneout's weights ``a`` (h) and ``b`` (c) if given: ``(h, c, {name: tensor})``."""
    w = {name: torch.tensor(p.data, requires_grad=True) for name, p in cell.named_parameters()}
    gates = x @ w["weight_ih"].T + h0 @ w["weight_hh"].T
    if "bias_ih" in w:
        gates = gates + w["bias_ih"] + w["bias_hh"]
    i_pre, f_pre, g_pre, o_pre = gates.chunk(4, dim=-1)
    i = torch.sigmoid(i_pre + w["weight_ci"] * c0)
    f = torch.sigmoid(f_pre + w["weight_cf"] * c0)
    c = f * c0 + i * torch.tanh(g_pre)
    h = torch.sigmoid(o_pre + w["weight_co"] * c) * torch.tanh(c)
    if a is not None:                  # zoneout mixes after the step: h came from the new c
        h, c = a * h0 + (1 - a) * h, b * c0 + (1 - b) * c
    return h, c, w


CELL_GRID = [  # (batched, bias, zoneout, forget_bias)
    (True, True, 0.0, None), (True, False, 0.0, None), (False, True, 0.0, 1.0),
    (True, True, 0.4, None), (False, True, 0.4, 1.0)]


@pytest.mark.parametrize("fast", [False, True], ids=["numpy", "fast"])
@pytest.mark.parametrize("config", CELL_GRID, ids=lambda c: "{}-{}-z{}-fb{}".format(
    "batched" if c[0] else "unbatched", "bias" if c[1] else "nobias", c[2], c[3]))
def test_cell_gradcheck_every_parameter_input_and_both_states(config, fast):
    batched, bias, zoneout, forget_bias = config
    rng = np.random.default_rng(CELL_GRID.index(config))
    lead = (3,) if batched else ()
    cell = peephole_cell(2, 4, rng, bias=bias, zoneout=zoneout, forget_bias=forget_bias,
                         dtype=np.float64, seed=0)
    x, h0, c0 = (rng.standard_normal(lead + (n,)) for n in (2, 4, 4))
    with elman.fast.use(fast):
        errors = elman.gradcheck(cell, (x, (h0, c0)))      # zoneout's mask held fixed
    names = {n for n, _ in cell.named_parameters()}
    assert {"weight_ci", "weight_cf", "weight_co"} <= names
    assert set(errors) == names | {"input[0]", "input[1][0]", "input[1][1]"}
    assert max(errors.values()) < 1e-7, errors


@pytest.mark.parametrize("fast", [False, True], ids=["numpy", "fast"])
@pytest.mark.parametrize("zoneout", [0.0, 0.4], ids=["plain", "zoneout"])
def test_cell_agrees_with_a_torch_autograd_reference(zoneout, fast):
    """Outputs and every gradient (parameters, input, both states) against the equations
    written in torch; with zoneout, the masks the cell drew are given to the reference."""
    torch = require("torch")
    rng = np.random.default_rng(5)
    cell = peephole_cell(3, 5, rng, scale=1.0, zoneout=zoneout, dtype=np.float64, seed=1)
    x, h0, c0 = rng.standard_normal((4, 3)), rng.standard_normal((4, 5)), \
        rng.standard_normal((4, 5))
    dh, dc = rng.standard_normal((4, 5)), rng.standard_normal((4, 5))
    with elman.fast.use(fast):
        h, c = cell(x, (h0, c0))
        zone = cell._cache[0].zone
        dx, (dh0, dc0) = cell.backward(dh, dc)
    tx, th0, tc0 = (torch.tensor(v, requires_grad=True) for v in (x, h0, c0))
    masks = () if zone is None else (torch.tensor(zone.h[0]), torch.tensor(zone.c[0]))
    if zone is not None:
        assert set(np.unique(zone.h)) == {0.0, 1.0}   # training: a real 0/1 mask, both values
    th, tc, w = torch_peephole_step(torch, cell, tx, th0, tc0, *masks)
    ((th * torch.tensor(dh)).sum() + (tc * torch.tensor(dc)).sum()).backward()
    pairs = [("h", h, th), ("c", c, tc), ("dx", dx, tx.grad), ("dh0", dh0, th0.grad),
             ("dc0", dc0, tc0.grad)]
    pairs += [(name, p.grad, w[name].grad) for name, p in cell.named_parameters()]
    for what, ours, theirs in pairs:
        np.testing.assert_allclose(ours, theirs.detach().numpy(), rtol=1e-11, atol=1e-13,
                                   err_msg=what)


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("fast", [False, True], ids=["numpy", "fast"])
def test_cell_is_the_layer_run_for_one_step(fast, dtype):
    """LSTMCell(peephole=True) and LSTM(peephole=True) on T = 1 with the same weights: the same
    numbers, forward and backward."""
    rng = np.random.default_rng(2)
    cell = peephole_cell(3, 4, rng, dtype=dtype, seed=0)
    layer = elman.LSTM(3, 4, peephole=True, dtype=dtype, seed=9)
    for name, p in cell.named_parameters():
        getattr(layer, name + "_l0").data[...] = p.data
    x, h0, c0, dh, dc = (rng.standard_normal((2, n)).astype(dtype) for n in (3, 4, 4, 4, 4))
    with elman.fast.use(fast):
        h, c = cell(x, (h0, c0))
        out, (h_n, c_n) = layer(x[None], (h0[None], c0[None]))
        dx, (dh0, dc0) = cell.backward(dh, dc)
        dX, (dH0, dC0) = layer.backward(dh[None], (np.zeros_like(h_n), dc[None]))
    for ours, theirs in ((h, out[0]), (h, h_n[0]), (c, c_n[0]), (dx, dX[0]), (dh0, dH0[0]),
                         (dc0, dC0[0])):
        np.testing.assert_array_equal(ours, theirs)
    for name, p in cell.named_parameters():
        np.testing.assert_array_equal(p.grad, getattr(layer, name + "_l0").grad, err_msg=name)


def test_cell_zero_peepholes_equal_the_plain_cell_and_nonzero_ones_act():
    rng = np.random.default_rng(0)
    x, h0, c0 = rng.standard_normal((2, 3)), rng.standard_normal((2, 4)), \
        rng.standard_normal((2, 4))
    plain = elman.LSTMCell(3, 4, dtype=np.float64, seed=3)
    peep = elman.LSTMCell(3, 4, peephole=True, dtype=np.float64, seed=3)
    for name, p in plain.named_parameters():            # the same draws: the same weights
        np.testing.assert_array_equal(getattr(peep, name).data, p.data)
    for gate in "ifo":
        assert not getattr(peep, f"weight_c{gate}").data.any()
        assert getattr(peep, f"weight_c{gate}").data.shape == (4,)
    for u, v in zip(plain(x, (h0, c0)), peep(x, (h0, c0))):
        np.testing.assert_array_equal(u, v)
    for gate in "ifo":                                   # each peephole changes the step
        cell = elman.LSTMCell(3, 4, peephole=True, dtype=np.float64, seed=3)
        getattr(cell, f"weight_c{gate}").data[...] = 0.7
        assert np.abs(cell(x, (h0, c0))[0] - plain(x, (h0, c0))[0]).max() > 1e-3, gate


def test_cell_evaluation_zoneout_is_the_expectation_of_the_peephole_step():
    p = 0.3
    rng = np.random.default_rng(4)
    x, h0, c0 = rng.standard_normal((2, 3)), rng.standard_normal((2, 4)), \
        rng.standard_normal((2, 4))
    zoned = peephole_cell(3, 4, np.random.default_rng(1), zoneout=p, dtype=np.float64,
                          seed=2).eval()
    plain = peephole_cell(3, 4, np.random.default_rng(1), dtype=np.float64, seed=2).eval()
    (h, c), (h_new, c_new) = zoned(x, (h0, c0)), plain(x, (h0, c0))
    np.testing.assert_allclose(h, p * h0 + (1 - p) * h_new, rtol=1e-13)
    np.testing.assert_allclose(c, p * c0 + (1 - p) * c_new, rtol=1e-13)


def test_cell_repr_config_and_checkpoint(tmp_path):
    plain, peep = elman.LSTMCell(3, 4), elman.LSTMCell(3, 4, peephole=True, zoneout=0.2)
    assert plain.peephole is False and "peephole" not in plain.config()
    assert "peephole" not in repr(plain)
    assert repr(peep) == "LSTMCell(3, 4, zoneout=0.2, peephole=True)"
    assert peep.config()["peephole"] is True
    cell = peephole_cell(3, 4, np.random.default_rng(0), forget_bias=1.0, seed=0).eval()
    elman.save(cell, tmp_path / "cell.npz")
    again = elman.load(tmp_path / "cell.npz")
    assert type(again) is elman.LSTMCell and again.peephole is True
    assert again.forget_bias == 1.0
    for name, p in cell.named_parameters():
        np.testing.assert_array_equal(getattr(again, name).data, p.data)
    x = np.random.default_rng(1).standard_normal((2, 3)).astype(np.float32)
    for u, v in zip(again(x), cell(x)):
        np.testing.assert_array_equal(u, v)
    elman.save(elman.LSTMCell(3, 4, seed=0), tmp_path / "plain.npz")
    assert elman.load(tmp_path / "plain.npz").peephole is False


@pytest.mark.parametrize("value", ["yes", 1, None, 0.0])
def test_cell_peephole_argument_is_checked(value):
    with pytest.raises(TypeError, match=rf"peephole must be True or False, got {value!r}"):
        elman.LSTMCell(3, 4, peephole=value)


def test_cell_state_dict_needs_the_peephole_weights():
    peep = elman.LSTMCell(3, 4, peephole=True, seed=0)
    with pytest.raises(RuntimeError, match="weight_ci"):
        peep.load_state_dict(elman.LSTMCell(3, 4, seed=0).state_dict())


def test_to_torch_refuses_the_peephole_cell():
    torch = require("torch")
    from elman.interop import from_torch, to_torch
    with pytest.raises(ConversionError, match=r"LSTMCell\(peephole=True\) has no torch.nn "
                                              r"counterpart \(torch.nn.LSTMCell has no peephole"):
        to_torch(elman.LSTMCell(3, 4, peephole=True))
    assert from_torch(torch.nn.LSTMCell(3, 4)).peephole is False
