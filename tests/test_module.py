"""Param and Module: discovery, state dicts with their checks, modes and gradient clearing."""
import numpy as np
import pytest

import elman
from elman import Module, Param


class Tiny(Module):
    def __init__(self):
        super().__init__()
        self.weight = Param(np.arange(6, dtype=np.float32).reshape(2, 3))
        self.inner = elman.RNNCell(3, 2, seed=0)


def test_param_has_matching_zero_grad():
    p = Param(np.ones((2, 3), np.float64))
    assert p.grad.shape == (2, 3) and p.grad.dtype == np.float64 and not p.grad.any()
    p.grad += 1
    p.zero_grad()
    assert not p.grad.any()


def test_param_arrays_may_be_replaced_by_arrays_of_their_shape_and_dtype():
    p = Param(np.ones((2, 3), np.float32))
    strided = np.arange(12, dtype=np.float32).reshape(2, 6)[:, ::2]
    p.data = strided
    assert p.data.flags.c_contiguous and np.array_equal(p.data, strided)
    g = np.full((2, 3), 2, np.float32)
    p.grad = g
    assert p.grad is g


@pytest.mark.parametrize("which", ["data", "grad"])
@pytest.mark.parametrize("value, got", [
    (np.zeros((3, 2), np.float32), "shape (3, 2) and dtype float32"),
    (np.zeros((2, 3), np.float64), "shape (2, 3) and dtype float64"),
    ([[0.0] * 3] * 2, "a list"),
])
def test_param_refuses_arrays_of_another_shape_or_dtype(which, value, got):
    p = Param(np.ones((2, 3), np.float32))
    before = getattr(p, which).copy()
    with pytest.raises(ValueError) as error:
        setattr(p, which, value)
    message = str(error.value)
    assert f"Param.{which}" in message and "shape (2, 3) and dtype float32" in message
    assert got in message
    assert np.array_equal(getattr(p, which), before)       # nothing lost


def test_a_layer_refuses_a_weight_of_another_size_and_runs_on():
    """The compiled kernels take the weights as they are: a smaller ``W_hh`` would be read out
    of its bounds, a float64 one in a float32 layer fail in numba's typing."""
    layer = elman.LSTM(3, 4, seed=0)
    layer.eval()
    x = np.random.default_rng(0).standard_normal((5, 1, 3)).astype(np.float32)
    with elman.no_grad():
        expected, _ = layer(x)
    for bad in (np.zeros((4, 4), np.float32), layer.weight_hh_l0.data.astype(np.float64)):
        with pytest.raises(ValueError, match="Param.data: expected a NumPy array of shape "
                                             r"\(16, 4\) and dtype float32"):
            layer.weight_hh_l0.data = bad
    with elman.no_grad():
        out, _ = layer(x)
    assert np.array_equal(out, expected)


def test_named_parameters_follow_attribute_paths_in_order():
    names = [n for n, _ in Tiny().named_parameters()]
    assert names == ["weight", "inner.weight_ih", "inner.weight_hh", "inner.bias_ih",
                     "inner.bias_hh"]


def test_state_dict_returns_copies():
    m = Tiny()
    sd = m.state_dict()
    sd["weight"][...] = 100
    assert m.weight.data[0, 0] == 0


def test_load_state_dict_round_trip_and_upcast():
    a, b = elman.LSTM(3, 4, num_layers=2, seed=0), elman.LSTM(3, 4, num_layers=2, seed=1)
    b.load_state_dict(a.state_dict())
    for (n, p), (_, q) in zip(a.named_parameters(), b.named_parameters()):
        np.testing.assert_array_equal(p.data, q.data, err_msg=n)
    c = elman.LSTM(3, 4, num_layers=2, dtype=np.float64, seed=2)
    c.load_state_dict(a.state_dict())          # float32 -> float64 loses nothing: accepted
    np.testing.assert_array_equal(c.weight_ih_l1.data, a.weight_ih_l1.data.astype(np.float64))


def test_load_state_dict_reports_missing_and_unexpected_keys():
    m = elman.GRU(3, 4, seed=0)
    sd = m.state_dict()
    del sd["bias_hh_l0"]
    sd["bias_hh_l7"] = np.zeros(12, np.float32)
    with pytest.raises(RuntimeError, match=r"missing keys: \['bias_hh_l0'\].*unexpected keys: "
                                       r"\['bias_hh_l7'\]"):
        m.load_state_dict(sd)


def test_load_state_dict_reports_every_problem_at_once():
    m = elman.LSTM(3, 4, seed=0)
    sd = m.state_dict()
    del sd["bias_ih_l0"]
    sd["extra"] = np.zeros(3)
    sd["weight_ih_l0"] = np.zeros((16, 2), np.float32)
    sd["weight_hh_l0"] = np.full((16, 4), np.nan, np.float32)
    sd["bias_hh_l0"] = np.zeros(16, np.int32)
    with pytest.raises(RuntimeError) as e:
        m.load_state_dict(sd)
    msg = str(e.value)
    for part in ("missing keys: ['bias_ih_l0']", "unexpected keys: ['extra']",
                 "'weight_ih_l0' has the wrong shape", "'weight_hh_l0' contains NaN",
                 "'bias_hh_l0' has the wrong dtype"):
        assert part in msg


def test_load_state_dict_wrong_shape_and_dtype_and_leaves_module_untouched():
    m = elman.RNN(3, 4, seed=0)
    before = m.state_dict()
    sd = m.state_dict()
    sd["weight_ih_l0"] = np.zeros((4, 5), np.float32)
    with pytest.raises(RuntimeError, match=r"'weight_ih_l0' has the wrong shape: expected "
                                         r"\(4, 3\), got \(4, 5\)"):
        m.load_state_dict(sd)
    sd = m.state_dict()
    sd["weight_hh_l0"] = np.zeros((4, 4), np.float64)      # would lose precision
    sd["weight_ih_l0"] = np.full((4, 3), 7, np.float32)    # valid, must not be written
    with pytest.raises(RuntimeError, match=r"'weight_hh_l0' has the wrong dtype: expected "
                                        r"float32, got float64"):
        m.load_state_dict(sd)
    sd["weight_hh_l0"] = np.zeros((4, 4), np.int64)
    with pytest.raises(RuntimeError, match="expected float32, got int64"):
        m.load_state_dict(sd)
    for k, v in m.state_dict().items():
        np.testing.assert_array_equal(v, before[k])


def test_load_state_dict_refuses_non_finite_and_non_mapping():
    m = elman.RNN(2, 2, seed=0)
    sd = m.state_dict()
    sd["bias_ih_l0"] = np.array([np.nan, 0], np.float32)
    with pytest.raises(RuntimeError, match="'bias_ih_l0' contains NaN"):
        m.load_state_dict(sd)
    with pytest.raises(TypeError, match="expected a mapping"):
        m.load_state_dict([1, 2])


def test_non_strict_load_ignores_extra_and_missing():
    m = elman.RNN(2, 2, seed=0)
    m.load_state_dict({"bias_ih_l0": np.ones(2, np.float32), "extra": 1}, strict=False)
    np.testing.assert_array_equal(m.bias_ih_l0.data, 1)


def test_train_eval_propagate_and_chain():
    m = Tiny()
    assert m.eval() is m
    assert not m.training and not m.inner.training
    m.train()
    assert m.training and m.inner.training


def test_zero_grad_clears_all():
    m = Tiny()
    for p in m.parameters():
        p.grad += 3
    m.zero_grad()
    assert all(not p.grad.any() for p in m.parameters())


def test_forgetting_super_init_is_a_clear_error():
    class Broken(Module):
        def __init__(self):
            self.w = Param(np.zeros(1))

    with pytest.raises(RuntimeError, match=r"must call super\(\).__init__\(\)"):
        Broken()


def test_repr_shows_configuration():
    assert repr(elman.LSTM(3, 4, num_layers=2, bidirectional=True)) == \
        "LSTM(3, 4, num_layers=2, bidirectional=True)"
