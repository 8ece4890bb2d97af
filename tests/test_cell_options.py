"""Cell options beyond PyTorch's: forget_bias (Jozefowicz et al. 2015; Keras' unit_forget_bias)."""
import numpy as np
import pytest

import elman


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


def test_forget_bias_starts_the_forget_gate_near_sigmoid_b():
    lstm = elman.LSTM(3, 4, forget_bias=3.0, seed=0)
    assert "forget_bias=3.0" in repr(lstm)
    b = lstm.bias_ih_l0.data + lstm.bias_hh_l0.data
    np.testing.assert_allclose(b[4:8], 3.0)


def test_forget_bias_is_only_an_initialisation_so_torch_takes_the_weights():
    torch = pytest.importorskip("torch")
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
