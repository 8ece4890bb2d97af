"""Cell options beyond PyTorch's: forget_bias (Jozefowicz et al. 2015; Keras' unit_forget_bias)."""
import numpy as np
import pytest

import elman
from _torch import require


@pytest.mark.parametrize("build", [
    lambda **k: elman.LSTM(3, 4, num_layers=2, bidirectional=True, seed=7, **k),
    lambda **k: elman.LSTMCell(3, 4, seed=7, **k)])
def test_forget_bias_sets_the_forget_blocks_and_keeps_every_other_draw(build):
    plain, biased = build(), build(forget_bias=1.0)
    H = 4
    for (name, a), (_, b) in zip(plain.named_parameters(), biased.named_parameters()):
        if name.startswith("bias_ih"):
            assert (b.data[H:2 * H] == 1.0).all()
        elif name.startswith("bias_hh"):
            assert (b.data[H:2 * H] == 0.0).all()
        else:
            np.testing.assert_array_equal(a.data, b.data)
            continue
        # the other blocks are PyTorch's draws, the same ones as without the option
        keep = np.r_[0:H, 2 * H:4 * H]
        np.testing.assert_array_equal(a.data[keep], b.data[keep])
    assert biased.config()["forget_bias"] == 1.0 and "forget_bias" not in plain.config()
    assert "forget_bias=1.0" in repr(biased) and "forget_bias" not in repr(plain)


def test_forget_bias_starts_the_forget_gate_near_sigmoid_b():
    lstm = elman.LSTM(3, 4, forget_bias=3.0, seed=0)
    assert "forget_bias=3.0" in repr(lstm)
    b = lstm.bias_ih_l0.data + lstm.bias_hh_l0.data
    np.testing.assert_allclose(b[4:8], 3.0)


def test_forget_bias_is_only_an_initialisation_so_torch_takes_the_weights():
    torch = require("torch")
    lstm = elman.LSTM(3, 4, forget_bias=1.0, seed=0, dtype=np.float64)
    twin = elman.to_torch(lstm)
    x = np.random.default_rng(0).standard_normal((5, 2, 3))
    np.testing.assert_allclose(twin(torch.from_numpy(x))[0].detach().numpy(), lstm(x)[0],
                               rtol=1e-12, atol=1e-12)


def test_forget_bias_survives_a_checkpoint(tmp_path):
    lstm = elman.LSTM(3, 4, forget_bias=2.0, seed=0)
    elman.save(lstm, tmp_path / "m.npz")
    again = elman.load(tmp_path / "m.npz")
    assert again.forget_bias == 2.0
    for a, b in zip(lstm.parameters(), again.parameters()):
        np.testing.assert_array_equal(a.data, b.data)


@pytest.mark.parametrize("value, error, message", [
    ("1", TypeError, "forget_bias must be None .* or a finite number, got '1'"),
    (float("nan"), TypeError, "finite number, got nan"),
    (True, TypeError, "got True")])
def test_forget_bias_is_checked(value, error, message):
    with pytest.raises(error, match=message):
        elman.LSTM(3, 4, forget_bias=value)


def test_forget_bias_needs_a_bias():
    with pytest.raises(ValueError, match="forget_bias needs bias=True"):
        elman.LSTM(3, 4, bias=False, forget_bias=1.0)
    with pytest.raises(ValueError, match="forget_bias needs bias=True"):
        elman.LSTMCell(3, 4, bias=False, forget_bias=1.0)


# -- recurrent_dropout and input_dropout: Keras' variational dropout --------------------------

def _torch_layer(torch, kind, layer, x, in_masks, h_masks):
    """A torch.autograd re-implementation of one layer (both directions) with the given masks:
    input_dropout multiplies the layer's input, recurrent_dropout h_prev where it enters
    W_hh (the GRU's z * h_prev keeps the unmasked state). Returns (out, params)."""
    H = layer.hidden_size
    params = {n: torch.tensor(p.data, requires_grad=True) for n, p in layer.named_parameters()}
    outs = []
    for d, sfx in enumerate(["_l0", "_l0_reverse"][:2 if layer.bidirectional else 1]):
        W_ih, W_hh = params["weight_ih" + sfx], params["weight_hh" + sfx]
        b_ih, b_hh = params["bias_ih" + sfx], params["bias_hh" + sfx]
        xm = x * torch.from_numpy(in_masks[d]) if in_masks[d] is not None else x
        hm = torch.from_numpy(h_masks[d])
        h = torch.zeros(x.shape[1], H, dtype=x.dtype)
        c = torch.zeros_like(h)
        steps = range(x.shape[0] - 1, -1, -1) if d else range(x.shape[0])
        seq = [None] * x.shape[0]
        for t in steps:
            gx = xm[t] @ W_ih.T + b_ih
            gh = (h * hm) @ W_hh.T + b_hh
            if kind == "RNN":
                h = torch.tanh(gx + gh)
            elif kind == "GRU":
                r = torch.sigmoid(gx[:, :H] + gh[:, :H])
                z = torch.sigmoid(gx[:, H:2 * H] + gh[:, H:2 * H])
                n = torch.tanh(gx[:, 2 * H:] + r * gh[:, 2 * H:])
                h = (1 - z) * n + z * h
            else:
                a = gx + gh
                i, f = torch.sigmoid(a[:, :H]), torch.sigmoid(a[:, H:2 * H])
                g, o = torch.tanh(a[:, 2 * H:3 * H]), torch.sigmoid(a[:, 3 * H:])
                c = f * c + i * g
                h = o * torch.tanh(c)
            seq[t] = h
        outs.append(torch.stack(seq))
    return torch.cat(outs, dim=2), params


@pytest.mark.parametrize("fast", [False, True])
@pytest.mark.parametrize("kind", ["RNN", "GRU", "LSTM"])
def test_variational_dropout_matches_a_torch_autograd_reference(kind, fast):
    torch = require("torch")
    layer = getattr(elman, kind)(3, 4, bidirectional=True, recurrent_dropout=0.4,
                                 input_dropout=0.3, dtype=np.float64, seed=1)
    x = np.random.default_rng(0).standard_normal((6, 5, 3))
    dout = np.random.default_rng(1).standard_normal((6, 5, 8))
    with elman.fast.use(fast):
        out, _ = layer(x)
        in_masks, h_masks = layer._cache["in_masks"], layer._cache["h_masks"]
        dx, _ = layer.backward(dout, None)
    # one mask per sequence, the same at every step, inverted-dropout scaled
    for m, p in [(in_masks[0], 0.3), (h_masks[1], 0.4)]:
        assert set(np.unique(m)) <= {0.0, 1 / (1 - p)}
    xt = torch.tensor(x, requires_grad=True)
    ref, params = _torch_layer(torch, kind, layer, xt, in_masks, h_masks)
    (ref * torch.from_numpy(dout)).sum().backward()
    np.testing.assert_allclose(out, ref.detach().numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(dx, xt.grad.numpy(), rtol=1e-10, atol=1e-12)
    for name, p in layer.named_parameters():
        np.testing.assert_allclose(p.grad, params[name].grad.numpy(), rtol=1e-10, atol=1e-12,
                                   err_msg=name)


@pytest.mark.parametrize("kind, kwargs", [
    ("RNN", {"num_layers": 2, "bidirectional": True}),
    ("GRU", {"batch_first": True, "num_layers": 2}),
    ("LSTM", {"bidirectional": True, "proj_size": 2}),
    ("LSTM", {"num_layers": 2, "dropout": 0.3, "forget_bias": 1.0}),
])
def test_variational_dropout_gradients_are_exact(kind, kwargs):
    """Finite differences in float64, training mode, lengths; gradcheck replays the layer's
    generator so every evaluation sees the same masks."""
    layer = getattr(elman, kind)(3, 4, recurrent_dropout=0.3, input_dropout=0.2,
                                 dtype=np.float64, seed=2, **kwargs)
    shape = (4, 6, 3) if kwargs.get("batch_first") else (6, 4, 3)
    x = np.random.default_rng(3).standard_normal(shape)
    errors = elman.gradcheck(layer, (x,), kwargs={"lengths": [6, 3, 5, 1]})
    assert max(errors.values()) < 1e-6, errors


def test_variational_dropout_is_off_in_evaluation_and_reproducible_with_a_seed():
    x = np.random.default_rng(0).standard_normal((5, 2, 3)).astype(np.float32)
    a = elman.LSTM(3, 4, recurrent_dropout=0.5, input_dropout=0.5, seed=3)
    b = elman.LSTM(3, 4, recurrent_dropout=0.5, input_dropout=0.5, seed=3)
    plain = elman.LSTM(3, 4, seed=3)
    np.testing.assert_array_equal(a(x)[0], b(x)[0])              # same seed, same masks
    assert not np.allclose(a(x)[0], plain(x)[0])                  # training: masks apply
    a.eval()
    np.testing.assert_array_equal(a(x)[0], plain.eval()(x)[0])   # evaluation: none


def test_variational_dropout_arguments_are_checked_and_saved(tmp_path):
    with pytest.raises(ValueError, match=r"recurrent_dropout must be in \[0, 1\), got 1.0"):
        elman.GRU(3, 4, recurrent_dropout=1.0)
    with pytest.raises(ValueError, match="input_dropout must be a number in"):
        elman.RNN(3, 4, input_dropout=-0.1)
    with pytest.raises(ValueError, match="recurrent_dropout is not available for GRU with "
                       "reset_after=False"):
        elman.GRU(3, 4, reset_after=False, recurrent_dropout=0.2)
    layer = elman.GRU(3, 4, recurrent_dropout=0.25, input_dropout=0.1)
    assert "recurrent_dropout=0.25" in repr(layer)
    elman.save(layer, tmp_path / "g.npz")
    again = elman.load(tmp_path / "g.npz")
    assert (again.recurrent_dropout, again.input_dropout) == (0.25, 0.1)
    assert "recurrent_dropout" not in elman.GRU(3, 4).config()


@pytest.mark.parametrize("option", ["recurrent_dropout", "input_dropout"])
def test_to_torch_refuses_what_torch_lacks_by_name(option):
    require("torch")
    with pytest.raises(elman.ConversionError, match=f"{option}=0.2\\) has no torch.nn "
                       "counterpart"):
        elman.to_torch(elman.LSTM(3, 4, **{option: 0.2}))
