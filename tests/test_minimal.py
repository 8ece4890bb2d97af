"""MinGRU and MinLSTM (elman.minimal) and their scan (elman.scan): float64 finite differences in
both modes, the scan against the sequential loop at T = 4096 where the closed form breaks, an
independent torch.autograd oracle, lengths against sequences run alone, step-wise generation,
checkpoints and argument errors."""
import zlib

import numpy as np
import pytest

import elman
from elman import registry
from elman.scan import scan, scan_backward, scan_sequential
from _torch import require_torch

KINDS = {"mingru": elman.MinGRU, "minlstm": elman.MinLSTM}
MODES = ("scan", "sequential")
# T > 16 so that mode="scan" runs the blocked scan, not its short sequential base case
T, N, I, H = 20, 3, 2, 3
LENGTHS = [T, 7, 1]


def _rng(*key):
    return np.random.default_rng(zlib.crc32(repr(key).encode()))


# (num_layers, bidirectional, bias, batch_first, unbatched, h0, lengths)
GRID = [
    (1, False, True, False, False, False, False),
    (2, True, True, True, False, True, True),
    (1, True, False, False, True, True, False),
    (2, False, True, False, False, True, True),
]


@pytest.mark.parametrize("kind", list(KINDS))
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("config", GRID, ids=lambda c: "L{}-{}-{}-{}-{}-{}-{}".format(
    c[0], "bi" if c[1] else "uni", "bias" if c[2] else "nobias", "bf" if c[3] else "tf",
    "unbatched" if c[4] else "batched", "h0" if c[5] else "noh0", "len" if c[6] else "full"))
def test_gradcheck(kind, mode, config):
    layers, bi, bias, batch_first, unbatched, with_h0, with_lengths = config
    rng = _rng(kind, mode, config)
    layer = KINDS[kind](I, H, num_layers=layers, bidirectional=bi, bias=bias,
                        batch_first=batch_first, dtype=np.float64, seed=0, mode=mode)
    D = 2 if bi else 1
    lead = () if unbatched else ((N, T) if batch_first else (T, N))
    x = rng.standard_normal((T,) + (I,) if unbatched else lead + (I,))
    inputs = (x,)
    if with_h0:
        inputs += (rng.standard_normal((D * layers,) + (() if unbatched else (N,)) + (H,)),)
    kwargs = {"lengths": LENGTHS} if with_lengths else {}
    errors = elman.gradcheck(layer, inputs, kwargs=kwargs)
    expected = {n for n, _ in layer.named_parameters()} | {"input[0]"}
    if with_h0:
        expected.add("input[1]")
    assert set(errors) == expected
    assert max(errors.values()) < 1e-7, errors


@pytest.mark.parametrize("kind", list(KINDS))
@pytest.mark.parametrize("mode", MODES)
def test_gradcheck_with_dropout_in_training_mode(kind, mode):
    """Inter-layer dropout is in the graph; gradcheck replays the layer's generator."""
    layer = KINDS[kind](I, H, num_layers=3, bidirectional=True, dropout=0.4, dtype=np.float64,
                        seed=0, mode=mode)
    x = _rng(kind, mode).standard_normal((T, N, I))
    out, _ = layer(x, lengths=LENGTHS)
    layer.eval()
    assert not np.allclose(out, layer(x, lengths=LENGTHS)[0])      # dropout did act
    layer.train()
    errors = elman.gradcheck(layer, (x,), kwargs={"lengths": LENGTHS})
    assert max(errors.values()) < 1e-7, errors


# -- the scan -----------------------------------------------------------------------------------

def _hard_coefficients(dtype, T=4096, width=(4, 8)):
    """a in (0, 1) whose running product underflows (some rows strongly decaying, some close to
    1: long memory), b of both signs."""
    rng = np.random.default_rng(0)
    pre = rng.standard_normal((T,) + width) * 3
    pre[:, :, :2] -= 6                             # z ~ 0: a ~ 1, long memory
    pre[:, :, 6:] += 8                             # z ~ 1: a ~ e-8, forgets at once
    z = 1 / (1 + np.exp(-pre))
    a = (1 - z).astype(dtype)
    b = (z * rng.standard_normal((T,) + width) * 5).astype(dtype)
    h0 = rng.standard_normal(width).astype(dtype)
    return a, b, h0


def _naive(a, b, h0):
    """The closed form h_t = A_t (h0 + sum_{s<=t} b_s / A_s) with cumprod/cumsum."""
    A = np.cumprod(a, axis=0)
    with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
        return A * (h0 + np.cumsum(b / A, axis=0))


def test_the_naive_closed_form_breaks_at_t_4096():
    """What the long-sequence tests guard against: the cumulative product underflows to 0, and
    b / A becomes inf, then NaN, in float64 as in float32."""
    for dtype in (np.float64, np.float32):
        a, b, h0 = _hard_coefficients(dtype)
        assert np.cumprod(a, axis=0)[-1].min() == 0
        naive = _naive(a, b, h0)
        assert not np.isfinite(naive).all()
        exact = scan_sequential(a, b, h0)
        assert np.isfinite(exact).all()
        assert np.abs(exact).max() > 1                     # not a trivially vanished state
        # at the start, before the product is tiny, it agrees
        np.testing.assert_allclose(naive[:3], exact[:3], rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("dtype, tol", [(np.float64, 1e-12), (np.float32, 1e-5)])
def test_scan_matches_the_sequential_loop_at_t_4096(dtype, tol):
    a, b, h0 = _hard_coefficients(dtype)
    ref = scan_sequential(a.astype(np.float64), b.astype(np.float64), h0.astype(np.float64))
    for block in (None, 7, 64, 4096):
        h = scan(a, b, h0, block=block)
        assert h.dtype == dtype and np.isfinite(h).all()
        scale = np.abs(ref).max()
        assert np.abs(h - ref).max() / scale < tol, block
    # the backward: the reverse scan against the reverse loop
    rng = np.random.default_rng(1)
    dh = rng.standard_normal(a.shape).astype(dtype)
    dh_n = rng.standard_normal(h0.shape).astype(dtype)
    h = scan(a, b, h0)
    fast = scan_backward(a, h0, h, dh, dh_n, scan)
    slow = scan_backward(*(v.astype(np.float64) for v in (a, h0, ref, dh, dh_n)),
                         run=scan_sequential)
    for got, want in zip(fast, slow):
        assert np.isfinite(got).all()
        assert np.abs(got - want).max() / np.abs(want).max() < tol


def test_scan_backward_against_finite_differences():
    rng = np.random.default_rng(2)
    a, b, h0 = rng.uniform(0.05, 1, (37, 2)), rng.standard_normal((37, 2)), rng.standard_normal(2)
    dh, dh_n = rng.standard_normal((37, 2)), rng.standard_normal(2)

    def loss(a, b, h0):
        h = scan(a, b, h0, block=5)
        return np.sum(h * dh) + np.sum(h[-1] * dh_n)

    da, db, dh0 = scan_backward(a, h0, scan(a, b, h0, block=5), dh, dh_n)
    errors = elman.gradcheck(lambda a, b, h0: (loss(a, b, h0), (da, db, dh0)), (a, b, h0))
    assert max(errors.values()) < 1e-8, errors


@pytest.mark.parametrize("kind", list(KINDS))
@pytest.mark.parametrize("dtype, tol", [(np.float64, 1e-11), (np.float32, 2e-4)])
def test_layer_modes_agree_at_t_4096(kind, dtype, tol):
    """Whole layers, bidirectional with lengths, at T = 4096 with large pre-activations (a
    product of the a's underflows): the scan and the loop agree forward and backward."""
    Tl = 4096
    rng = np.random.default_rng(3)
    layer = KINDS[kind](2, 4, bidirectional=True, dtype=dtype, seed=0)
    sd = {k: v * 6 for k, v in layer.state_dict().items()}          # saturating gates
    layer.load_state_dict(sd)
    x = rng.standard_normal((Tl, 2, 2))
    lengths = [Tl, 3000]
    results = {}
    dout = rng.standard_normal((Tl, 2, 8))
    for mode in MODES:
        layer.mode = mode
        layer.zero_grad()
        out, h_n = layer(x, lengths=lengths)
        a = layer._cache["caches"][0][1]             # the scan's factors a_t
        assert np.cumprod(a, axis=0)[-1].min() == 0   # the closed form would divide by 0
        dx, dh0 = layer.backward(dout, np.ones_like(h_n))
        results[mode] = [out, h_n, dx, dh0] + [p.grad.copy() for p in layer.parameters()]
    for got, want in zip(results["scan"], results["sequential"]):
        assert np.isfinite(got).all()
        assert np.abs(got - want).max() <= tol * np.abs(want).max()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_saturated_gates_stay_finite(dtype):
    """MinLSTM with both gates shut (f = i = 0 in floating point: f / (f + i) would be 0 / 0)
    gives f' = i' = 1/2; MinGRU with z = 1 exactly gives a = 0, h = h~."""
    x = np.ones((30, 1, 1))
    lstm = elman.MinLSTM(1, 1, dtype=dtype, seed=0)
    lstm.load_state_dict({"weight_ih_l0": np.zeros((3, 1), dtype),
                          "bias_ih_l0": np.array([-200.0, -200.0, 1.0], dtype)})
    out, h_n = lstm(x)
    dx, dh0 = lstm.backward(np.ones_like(out))
    np.testing.assert_allclose(out[:, 0, 0], 1 - 0.5 ** np.arange(1, 31), rtol=1e-6)
    assert np.isfinite(dx).all() and np.isfinite(lstm.bias_ih_l0.grad).all()
    gru = elman.MinGRU(1, 1, dtype=dtype, seed=0)
    gru.load_state_dict({"weight_ih_l0": np.zeros((2, 1), dtype),
                         "bias_ih_l0": np.array([200.0, 3], dtype)})
    out, _ = gru(x, np.full((1, 1, 1), 5.0))
    gru.backward(np.ones_like(out))
    np.testing.assert_array_equal(out, 3)
    assert np.isfinite(gru.bias_ih_l0.grad).all()


# -- an independent oracle: torch.autograd through the step-by-step recurrence -------------------

def _torch_sequence(torch, kind, params, x, h0, L, D):
    """One sequence (t, I) without padding through the stack, one step at a time in torch."""
    layer_in = x
    h_n = []
    for layer in range(L):
        outs = []
        for direction in range(D):
            sfx = f"_l{layer}" + ("_reverse" if direction else "")
            W, b = params["weight_ih" + sfx], params["bias_ih" + sfx]
            h = h0[layer * D + direction]
            steps = range(layer_in.shape[0])
            states = [None] * layer_in.shape[0]
            for t in (reversed(steps) if direction else steps):
                g = layer_in[t] @ W.T + b
                if kind == "mingru":
                    z, h_tilde = torch.sigmoid(g[:H]), g[H:]
                    h = (1 - z) * h + z * h_tilde
                else:
                    f, i, h_tilde = torch.sigmoid(g[:H]), torch.sigmoid(g[H:2 * H]), g[2 * H:]
                    h = f / (f + i) * h + i / (f + i) * h_tilde
                states[t] = h
            outs.append(torch.stack(states))
            h_n.append(h)
        layer_in = torch.cat(outs, dim=1)
    return layer_in, torch.stack(h_n)


@pytest.mark.parametrize("kind", list(KINDS))
def test_against_a_torch_autograd_oracle(kind):
    torch = require_torch()
    L, D = 2, 2
    rng = np.random.default_rng(4)
    layer = KINDS[kind](I, H, num_layers=L, bidirectional=True, dtype=np.float64, seed=1)
    x = rng.standard_normal((T, N, I))
    h0 = rng.standard_normal((L * D, N, H))
    dout = rng.standard_normal((T, N, D * H))
    dh_n = rng.standard_normal((L * D, N, H))
    out, h_n = layer(x, h0, lengths=LENGTHS)
    dx, dh0 = layer.backward(dout, dh_n)

    params = {k: torch.tensor(v, requires_grad=True) for k, v in layer.state_dict().items()}
    tx = torch.tensor(x, requires_grad=True)
    th0 = torch.tensor(h0, requires_grad=True)
    loss = 0
    for n, length in enumerate(LENGTHS):
        o, hn = _torch_sequence(torch, kind, params, tx[:length, n], th0[:, n], L, D)
        np.testing.assert_allclose(out[:length, n], o.detach().numpy(), rtol=1e-12, atol=1e-12)
        assert not out[length:, n].any()
        np.testing.assert_allclose(h_n[:, n], hn.detach().numpy(), rtol=1e-12, atol=1e-12)
        loss = loss + (o * torch.tensor(dout[:length, n])).sum() + \
            (hn * torch.tensor(dh_n[:, n])).sum()
    loss.backward()
    np.testing.assert_allclose(dx, tx.grad.numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(dh0, th0.grad.numpy(), rtol=1e-10, atol=1e-12)
    for name, p in layer.named_parameters():
        np.testing.assert_allclose(p.grad, params[name].grad.numpy(), rtol=1e-10, atol=1e-12,
                                   err_msg=name)


# -- lengths, step-wise generation --------------------------------------------------------------

@pytest.mark.parametrize("kind", list(KINDS))
def test_lengths_equal_each_sequence_run_alone(kind):
    rng = np.random.default_rng(5)
    layer = KINDS[kind](I, H, num_layers=2, bidirectional=True, dtype=np.float64, seed=0)
    x = rng.standard_normal((T, N, I))
    x[7:, 1] = np.nan                                 # padding is never read
    out, h_n = layer(x, lengths=LENGTHS)
    dx, _ = layer.backward(np.ones_like(out))
    assert np.isfinite(out).all() and np.isfinite(dx).all()
    for n, length in enumerate(LENGTHS):
        o, hn = layer(x[:length, n:n + 1])
        d, _ = layer.backward(np.ones_like(o))
        np.testing.assert_allclose(out[:length, n], o[:, 0], rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(h_n[:, n], hn[:, 0], rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(dx[:length, n], d[:, 0], rtol=1e-12, atol=1e-14)
        assert not out[length:, n].any() and not dx[length:, n].any()


@pytest.mark.parametrize("kind", list(KINDS))
@pytest.mark.parametrize("batch_first", [False, True])
def test_step_by_step_generation_equals_the_whole_sequence(kind, batch_first):
    rng = np.random.default_rng(6)
    layer = KINDS[kind](I, H, num_layers=2, batch_first=batch_first, dtype=np.float64, seed=0)
    x = rng.standard_normal((N, 40, I) if batch_first else (40, N, I))
    h0 = rng.standard_normal((2, N, H))
    out, h_n = layer(x, h0)
    h = h0
    for t in range(40):
        y, h = layer.step(x[:, t] if batch_first else x[t], h)
        np.testing.assert_allclose(y, out[:, t] if batch_first else out[t], rtol=1e-12)
    np.testing.assert_allclose(h, h_n, rtol=1e-12)
    y, h = layer.step(x[0, 0])                       # unbatched, from zeros
    assert y.shape == (H,) and h.shape == (2, H)
    with pytest.raises(ValueError, match="unidirectional"):
        KINDS[kind](I, H, bidirectional=True).step(x[0])


# -- the module contract ------------------------------------------------------------------------

@pytest.mark.parametrize("kind, gates", [("mingru", 2), ("minlstm", 3)])
def test_parameters_shapes_and_dtype(kind, gates):
    layer = KINDS[kind](4, 5, num_layers=2, bidirectional=True, seed=0)
    shapes = {n: p.shape for n, p in layer.named_parameters()}
    assert shapes == {"weight_ih_l0": (gates * 5, 4), "bias_ih_l0": (gates * 5,),
                      "weight_ih_l0_reverse": (gates * 5, 4), "bias_ih_l0_reverse": (gates * 5,),
                      "weight_ih_l1": (gates * 5, 10), "bias_ih_l1": (gates * 5,),
                      "weight_ih_l1_reverse": (gates * 5, 10),
                      "bias_ih_l1_reverse": (gates * 5,)}
    bound = 1 / np.sqrt(5)
    assert all(np.abs(p.data).max() <= bound for p in layer.parameters())
    out, h_n = layer(np.zeros((3, 2, 4)))
    assert out.dtype == h_n.dtype == np.float32
    assert out.shape == (3, 2, 10) and h_n.shape == (4, 2, 5)
    empty, h_empty = layer(np.zeros((3, 0, 4)), lengths=np.zeros(0, int))   # N = 0, as torch
    assert empty.shape == (3, 0, 10) and h_empty.shape == (4, 0, 5)
    assert layer.backward(empty)[0].shape == (3, 0, 4)
    assert "bias" not in dict(KINDS[kind](4, 5, bias=False).named_parameters())
    assert registry.get("module", type(layer).__name__) is type(layer)
    assert repr(KINDS[kind](4, 5, mode="sequential")).endswith("(4, 5, mode='sequential')")


@pytest.mark.parametrize("kind", list(KINDS))
def test_save_and_load_round_trip(kind, tmp_path):
    layer = KINDS[kind](I, H, num_layers=2, bidirectional=True, batch_first=True, dropout=0.25,
                        dtype=np.float64, seed=3, mode="sequential")
    elman.save(layer, tmp_path / "min.npz")
    loaded = elman.load(tmp_path / "min.npz")
    assert type(loaded) is type(layer) and loaded.config() == layer.config()
    x = np.random.default_rng(7).standard_normal((N, 5, I))
    layer.eval()
    loaded.eval()
    for a, b in zip(layer(x), loaded(x)):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("kind", list(KINDS))
def test_bad_arguments_name_the_argument(kind):
    cls = KINDS[kind]
    for kwargs, error, match in [
            (dict(hidden_size=0), ValueError, "hidden_size"),
            (dict(num_layers=1.5), ValueError, "num_layers"),
            (dict(bidirectional="yes"), TypeError, "bidirectional"),
            (dict(dropout=2), ValueError, "dropout"),
            (dict(dtype=np.int32), TypeError, "dtype"),
            (dict(mode="parallel"), ValueError, "mode"),
            (dict(seed=-1), ValueError, "seed")]:
        args = dict(input_size=I, hidden_size=H) | kwargs
        with pytest.raises(error, match=match):
            cls(**args)
    layer = cls(I, H, seed=0)
    x = np.zeros((T, N, I))
    with pytest.raises(ValueError, match="input_size"):
        layer(np.zeros((T, N, I + 1)))
    with pytest.raises(ValueError, match="lengths"):
        layer(x, lengths=[T, 0, 1])
    with pytest.raises(ValueError, match="h_0"):
        layer(x, np.zeros((2, N, H)))
    with pytest.raises(TypeError, match="h_0"):
        layer(x, (np.zeros((1, N, H)), np.zeros((1, N, H))))
    with pytest.raises(RuntimeError, match="forward"):
        cls(I, H).backward(np.zeros((T, N, H)))
    out, _ = layer(x)
    with pytest.raises(ValueError, match="dout"):
        layer.backward(np.zeros((T, N, H + 1)))
