"""Losses: values and gradients against PyTorch, finite differences, and argument errors."""
import math

import numpy as np
import pytest

import elman
from elman.losses import (LOSSES, BCELoss, BCEWithLogitsLoss, CrossEntropyLoss, HuberLoss,
                          L1Loss, Loss, MSELoss, get_loss)

from _torch import require_torch

REDUCTIONS = ("mean", "sum", "none")
DTYPES = (np.float64, np.float32)
RTOL = {np.float64: 1e-10, np.float32: 1e-5}
SHAPES = [(7,), (3, 5), (4, 2, 3)]


def assert_close(ours, ref, dtype, what=""):
    """Relative to the reference's scale (elements near zero are judged against the largest)."""
    ours, ref = np.asarray(ours, dtype=np.float64), np.asarray(ref, dtype=np.float64)
    assert ours.shape == ref.shape, f"{what}: shape {ours.shape} != {ref.shape}"
    scale = max(float(np.max(np.abs(ref), initial=0.0)), 1e-30)
    np.testing.assert_allclose(ours, ref, rtol=RTOL[dtype], atol=RTOL[dtype] * scale,
                               err_msg=what)


def torch_value_and_grad(torch, fn, pred, *args):
    """Value of ``fn(pred_tensor, *args)`` and its gradient (upstream ones for 'none')."""
    x = torch.tensor(pred, requires_grad=True)
    out = fn(x, *args)
    out.sum().backward() if out.ndim else out.backward()
    return out.detach().numpy(), x.grad.numpy()


def check_against_torch(torch, ours_loss, torch_fn, pred, target, what):
    dtype = pred.dtype.type
    value, grad = ours_loss(pred, target)
    ref_value, ref_grad = torch_value_and_grad(torch, torch_fn, pred)
    if ours_loss.reduction == "none":
        assert isinstance(value, np.ndarray) and value.dtype == pred.dtype
    else:
        assert isinstance(value, float)
    assert grad.dtype == pred.dtype and grad.shape == pred.shape
    assert_close(value, ref_value, dtype, f"{what}: value")
    assert_close(grad, ref_grad, dtype, f"{what}: grad")


# -- element-wise regression losses ---------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_regression_losses_match_torch(dtype, reduction):
    torch = require_torch()
    F = torch.nn.functional
    rng = np.random.default_rng(0)
    for shape in SHAPES:
        pred = rng.standard_normal(shape).astype(dtype)
        target = (2 * rng.standard_normal(shape)).astype(dtype)
        t = torch.tensor(target)
        cases = [(MSELoss(reduction=reduction), lambda x: F.mse_loss(x, t, reduction=reduction)),
                 (L1Loss(reduction=reduction), lambda x: F.l1_loss(x, t, reduction=reduction))]
        for delta in (0.5, 1.0, 2.5):
            cases.append((HuberLoss(reduction=reduction, delta=delta),
                          lambda x, d=delta: F.huber_loss(x, t, reduction=reduction, delta=d)))
        for loss, fn in cases:
            check_against_torch(torch, loss, fn, pred, target, f"{loss!r} {shape}")


def test_l1_subgradient_is_zero_at_equality_like_torch():
    torch = require_torch()
    pred = np.array([1.0, 2.0, 3.0])
    target = np.array([1.0, 0.0, 3.0])
    _, grad = L1Loss(reduction="sum")(pred, target)
    _, ref = torch_value_and_grad(torch, lambda x: torch.nn.functional.l1_loss(
        x, torch.tensor(target), reduction="sum"), pred)
    np.testing.assert_array_equal(grad, ref)
    np.testing.assert_array_equal(grad, [0.0, 1.0, 0.0])


# -- binary cross-entropy -----------------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_bce_with_logits_matches_torch(dtype, reduction):
    torch = require_torch()
    F = torch.nn.functional
    rng = np.random.default_rng(1)
    for shape in SHAPES:
        logits = (3 * rng.standard_normal(shape)).astype(dtype)
        target = rng.integers(0, 2, shape).astype(dtype)
        soft = rng.uniform(0, 1, shape).astype(dtype)
        pos_weight = rng.uniform(0.2, 3.0, shape[-1:]).astype(dtype)
        weight = rng.uniform(0.5, 2.0, shape).astype(dtype)
        for y in (target, soft):
            t = torch.tensor(y)
            check_against_torch(
                torch, BCEWithLogitsLoss(reduction=reduction),
                lambda x: F.binary_cross_entropy_with_logits(x, t, reduction=reduction),
                logits, y, f"plain {shape}")
            check_against_torch(
                torch, BCEWithLogitsLoss(reduction=reduction, pos_weight=pos_weight),
                lambda x: F.binary_cross_entropy_with_logits(
                    x, t, reduction=reduction, pos_weight=torch.tensor(pos_weight)),
                logits, y, f"pos_weight {shape}")
            check_against_torch(
                torch, BCEWithLogitsLoss(weight=weight, reduction=reduction),
                lambda x: F.binary_cross_entropy_with_logits(
                    x, t, reduction=reduction, weight=torch.tensor(weight)),
                logits, y, f"weight {shape}")


@pytest.mark.parametrize("dtype", DTYPES)
def test_bce_with_logits_is_stable_at_huge_logits(dtype):
    torch = require_torch()
    F = torch.nn.functional
    big = 80.0 if dtype is np.float32 else 800.0        # exp(800) overflows float64
    logits = np.array([-big, -40.0, -1e-3, 0.0, 1e-3, 40.0, big] * 2, dtype=dtype)
    target = np.array([0.0] * 7 + [1.0] * 7, dtype=dtype)
    loss = BCEWithLogitsLoss(reduction="none")
    with np.errstate(over="raise", invalid="raise", divide="raise"):  # underflow is fine
        value, grad = loss(logits, target)
    assert np.all(np.isfinite(value)) and np.all(np.isfinite(grad))
    # a confident wrong answer costs |logit|, exactly
    assert value[0 + 7] == pytest.approx(big, rel=1e-6) and value[6] == pytest.approx(big)
    for pw in (None, 2.5):
        loss = BCEWithLogitsLoss(reduction="none", pos_weight=pw)
        kw = {} if pw is None else {"pos_weight": torch.tensor(pw, dtype=torch.float64
                                                               if dtype is np.float64
                                                               else torch.float32)}
        check_against_torch(torch, loss, lambda x: F.binary_cross_entropy_with_logits(
            x, torch.tensor(target), reduction="none", **kw), logits, target, f"huge pw={pw}")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_bce_matches_torch_including_exact_zero_and_one(dtype, reduction):
    torch = require_torch()
    F = torch.nn.functional
    rng = np.random.default_rng(2)
    for shape in SHAPES:
        probs = rng.uniform(0.01, 0.99, shape).astype(dtype)
        target = rng.integers(0, 2, shape).astype(dtype)
        weight = rng.uniform(0.5, 2.0, shape).astype(dtype)
        for y in (target, rng.uniform(0, 1, shape).astype(dtype)):
            t = torch.tensor(y)
            check_against_torch(torch, BCELoss(reduction=reduction),
                                lambda x: F.binary_cross_entropy(x, t, reduction=reduction),
                                probs, y, f"{shape}")
            check_against_torch(torch, BCELoss(weight=weight, reduction=reduction),
                                lambda x: F.binary_cross_entropy(
                                    x, t, weight=torch.tensor(weight), reduction=reduction),
                                probs, y, f"weight {shape}")
    # every combination of p in {0, 1, interior} with y in {0, 1, soft}
    probs = np.array([0.0, 0.0, 0.0, 1.0, 1.0, 1.0, 0.3, 0.3, 0.3], dtype=dtype)
    target = np.array([0.0, 1.0, 0.4, 0.0, 1.0, 0.4, 0.0, 1.0, 0.4], dtype=dtype)
    with np.errstate(all="raise"):
        value, grad = BCELoss(reduction="none")(probs, target)
    assert np.all(np.isfinite(value)) and np.all(np.isfinite(grad))
    assert value[1] == 100.0 and value[3] == 100.0 and value[0] == 0.0 and value[4] == 0.0
    check_against_torch(torch, BCELoss(reduction=reduction),
                        lambda x: F.binary_cross_entropy(x, torch.tensor(target),
                                                         reduction=reduction),
                        probs, target, "exact 0/1")


# -- cross-entropy --------------------------------------------------------------------------------

def torch_cross_entropy(torch, x, target, weight, ignore_index, reduction, label_smoothing):
    """PyTorch's cross-entropy with the class axis moved from last to PyTorch's position 1."""
    if x.ndim >= 3:
        x = x.movedim(-1, 1)             # (T, N, C) -> (T, C, N): PyTorch's (N, C, d1) layout
    return torch.nn.functional.cross_entropy(
        x, torch.tensor(target), weight=None if weight is None else torch.tensor(weight),
        ignore_index=ignore_index, reduction=reduction, label_smoothing=label_smoothing)


CE_SHAPES = [(6,), (5, 4), (3, 4, 6), (2, 2, 3, 5)]       # (C,) means one sample


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("label_smoothing", (0.0, 0.1, 0.35))
@pytest.mark.parametrize("weighted", (False, True))
def test_cross_entropy_matches_torch(dtype, reduction, label_smoothing, weighted):
    torch = require_torch()
    rng = np.random.default_rng(3)
    for shape in CE_SHAPES:
        C = shape[-1]
        logits = (2 * rng.standard_normal(shape)).astype(dtype)
        weight = rng.uniform(0.2, 2.0, C).astype(dtype) if weighted else None
        for ignore_index in (-100, 1):
            target = rng.integers(0, C, shape[:-1])
            if target.ndim:                        # mask some positions (never all of them)
                drop = rng.random(target.shape) < 0.3
                drop.flat[0], drop.flat[-1] = False, True
                target = np.where(drop, ignore_index, target)
            loss = CrossEntropyLoss(weight=weight, ignore_index=ignore_index, reduction=reduction,
                                    label_smoothing=label_smoothing)
            check_against_torch(
                torch, loss, lambda x: torch_cross_entropy(torch, x, target, weight, ignore_index,
                                                           reduction, label_smoothing),
                logits, target, f"{shape} ignore={ignore_index}")


def test_cross_entropy_ignored_positions_have_no_effect():
    rng = np.random.default_rng(4)
    logits = rng.standard_normal((5, 3, 4))
    target = rng.integers(0, 4, (5, 3))
    target[3:] = -100                         # padding: the last two time steps
    for reduction in REDUCTIONS:
        loss = CrossEntropyLoss(reduction=reduction, label_smoothing=0.2)
        value, grad = loss(logits, target)
        assert np.all(grad[3:] == 0)
        short_value, short_grad = loss(logits[:3], target[:3])
        np.testing.assert_allclose(grad[:3], short_grad, rtol=1e-14, atol=1e-17)
        np.testing.assert_allclose(value if reduction != "none" else value[:3], short_value,
                                   rtol=1e-14)
        if reduction == "none":
            assert np.all(value[3:] == 0)


def test_cross_entropy_all_ignored_mean_is_nan_with_zero_grad_like_torch():
    torch = require_torch()
    logits = np.random.default_rng(5).standard_normal((3, 4))
    target = np.full(3, -100)
    for ls in (0.0, 0.2):
        value, grad = CrossEntropyLoss(label_smoothing=ls)(logits, target)
        ref_value, ref_grad = torch_value_and_grad(
            torch, lambda x: torch_cross_entropy(torch, x, target, None, -100, "mean", ls), logits)
        assert math.isnan(value) and math.isnan(float(ref_value))
        np.testing.assert_array_equal(grad, ref_grad)
        assert np.all(grad == 0)


def test_cross_entropy_accepts_integral_float_targets_and_scalar_target():
    logits = np.array([[1.0, 2.0, 0.5], [0.0, -1.0, 3.0]])
    a = CrossEntropyLoss()(logits, np.array([1, 2]))
    b = CrossEntropyLoss()(logits, np.array([1.0, 2.0]))
    assert a[0] == b[0]
    np.testing.assert_array_equal(a[1], b[1])
    one_value, one_grad = CrossEntropyLoss()(logits[1], 2)
    assert one_value == pytest.approx(CrossEntropyLoss(reduction="none")(logits, [1, 2])[0][1])
    assert one_grad.shape == (3,)


# -- finite differences ---------------------------------------------------------------------------

def gradcheck_loss(loss, pred, target, rng):
    """Finite-difference check of a loss; 'none' is wrapped in a random weighted sum."""
    if loss.reduction == "none":
        value, _ = loss(pred, target)
        w = rng.standard_normal(value.shape)

        def fn(p):
            v, g = loss(p, target)
            return float(np.sum(v * w)), g * (w[..., None] if g.ndim > w.ndim else w)
    else:
        def fn(p):
            return loss(p, target)
    errors = elman.gradcheck(fn, (pred,))
    assert errors["input[0]"] < 1e-7, f"{loss!r}: {errors}"


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_every_loss_passes_gradcheck(reduction):
    rng = np.random.default_rng(6)
    shape = (3, 4)
    target = rng.standard_normal(shape)
    # regression: keep p - y away from the kinks at 0 (L1, Huber) and +-delta (Huber)
    magnitude = np.where(rng.random(shape) < 0.5, rng.uniform(0.1, 0.4, shape),
                         rng.uniform(1.3, 2.5, shape))
    pred = target + magnitude * rng.choice([-1.0, 1.0], shape)
    for loss in (MSELoss(reduction=reduction), L1Loss(reduction=reduction),
                 HuberLoss(reduction=reduction), HuberLoss(reduction=reduction, delta=0.7)):
        gradcheck_loss(loss, pred, target, rng)
    logits = 3 * rng.standard_normal(shape)
    labels = rng.integers(0, 2, shape).astype(float)
    soft = rng.uniform(0, 1, shape)
    for y in (labels, soft):
        gradcheck_loss(BCEWithLogitsLoss(reduction=reduction), logits, y, rng)
        gradcheck_loss(BCEWithLogitsLoss(reduction=reduction, pos_weight=rng.uniform(0.5, 2, 4),
                                         weight=rng.uniform(0.5, 2, shape)), logits, y, rng)
        gradcheck_loss(BCELoss(reduction=reduction), rng.uniform(0.05, 0.95, shape), y, rng)
        gradcheck_loss(BCELoss(reduction=reduction, weight=rng.uniform(0.5, 2, shape)),
                       rng.uniform(0.05, 0.95, shape), y, rng)
    ce_logits = rng.standard_normal((4, 3, 5))
    ce_target = rng.integers(0, 5, (4, 3))
    ce_target[0, 1] = ce_target[2, 2] = -100
    for ls in (0.0, 0.25):
        for weight in (None, rng.uniform(0.3, 2.0, 5)):
            gradcheck_loss(CrossEntropyLoss(weight=weight, reduction=reduction,
                                            label_smoothing=ls), ce_logits, ce_target, rng)


# -- dtypes, names and errors ---------------------------------------------------------------------

def test_float32_is_kept_and_inputs_are_not_modified():
    rng = np.random.default_rng(7)
    pred = rng.standard_normal((4, 3)).astype(np.float32)
    target = rng.standard_normal((4, 3))                # float64 target: cast to the prediction's
    before = pred.copy(), target.copy()
    for loss in (MSELoss(), L1Loss(), HuberLoss(), BCEWithLogitsLoss()):
        value, grad = loss(pred, (target > 0).astype(np.float64))
        assert grad.dtype == np.float32
    value, grad = CrossEntropyLoss(label_smoothing=0.1)(pred, np.array([0, 1, 2, 0]))
    assert grad.dtype == np.float32
    np.testing.assert_array_equal(pred, before[0])
    np.testing.assert_array_equal(target, before[1])
    value, grad = MSELoss()([[1, 2]], [[0, 0]])          # integers and lists become float64
    assert grad.dtype == np.float64 and value == 2.5


def test_bad_reduction_names_argument_expected_and_received():
    for cls in (MSELoss, L1Loss, HuberLoss, BCELoss, BCEWithLogitsLoss, CrossEntropyLoss):
        with pytest.raises(ValueError, match=r"reduction must be one of \['mean', 'sum', "
                                             r"'none'\], got 'avg'"):
            cls(reduction="avg")


def test_shape_mismatch_quotes_both_shapes():
    with pytest.raises(ValueError, match=r"MSELoss: .*prediction \(3, 4\) and target \(3, 5\)"):
        MSELoss()(np.zeros((3, 4)), np.zeros((3, 5)))
    with pytest.raises(ValueError, match=r"BCEWithLogitsLoss: .*\(2,\) .*\(2, 1\)"):
        BCEWithLogitsLoss()(np.zeros(2), np.zeros((2, 1)))
    with pytest.raises(ValueError, match=r"logits of shape \(5, 3, 4\) .* target of shape "
                                         r"\(5, 3\), got target shape \(3, 5\)"):
        CrossEntropyLoss()(np.zeros((5, 3, 4)), np.zeros((3, 5), dtype=int))


def test_argument_errors():
    with pytest.raises(ValueError, match=r"class indices must be in \[0, 4\).*\[4\]"):
        CrossEntropyLoss()(np.zeros((2, 4)), np.array([0, 4]))
    with pytest.raises(ValueError, match=r"class indices must be in \[0, 4\).*\[-1\]"):
        CrossEntropyLoss()(np.zeros((2, 4)), np.array([-1, 0]))
    with pytest.raises(ValueError, match="non-integral"):
        CrossEntropyLoss()(np.zeros((2, 4)), np.array([0.5, 1.0]))
    with pytest.raises(ValueError, match=r"label_smoothing must be a number in \[0, 1\], got 1.5"):
        CrossEntropyLoss(label_smoothing=1.5)
    with pytest.raises(ValueError, match=r"weight must have one entry per class, shape \(4,\), "
                                         r"got \(3,\)"):
        CrossEntropyLoss(weight=np.ones(3))(np.zeros((2, 4)), np.array([0, 1]))
    with pytest.raises(ValueError, match="delta must be a number > 0, got 0"):
        HuberLoss(delta=0)
    with pytest.raises(ValueError, match=r"probabilities in \[0, 1\].*BCEWithLogitsLoss"):
        BCELoss()(np.array([0.5, 1.5]), np.array([0.0, 1.0]))
    with pytest.raises(ValueError, match=r"pos_weight of shape \(3,\) does not broadcast to "
                                         r"the prediction's shape \(2, 4\)"):
        BCEWithLogitsLoss(pos_weight=np.ones(3))(np.zeros((2, 4)), np.zeros((2, 4)))
    with pytest.raises(ValueError, match=r"weight of shape \(3, 2\) does not broadcast"):
        BCELoss(weight=np.ones((3, 2)))(np.full(2, 0.5), np.zeros(2))
    with pytest.raises(TypeError, match="target must hold real numbers"):
        MSELoss()(np.zeros(2), np.array(["a", "b"]))


def test_get_loss_and_keras_names():
    assert isinstance(get_loss("mse"), MSELoss)
    assert isinstance(get_loss("Mean_Squared_Error"), MSELoss)
    assert isinstance(get_loss("mae"), L1Loss) and isinstance(get_loss("mean_absolute_error"),
                                                              L1Loss)
    assert isinstance(get_loss("huber"), HuberLoss)
    assert isinstance(get_loss("binary_crossentropy"), BCELoss)
    assert isinstance(get_loss("sparse_categorical_crossentropy"), CrossEntropyLoss)
    assert set(LOSSES) == {"mse", "mean_squared_error", "mae", "mean_absolute_error", "huber",
                           "binary_crossentropy", "sparse_categorical_crossentropy"}
    obj = HuberLoss(delta=2.0)
    assert get_loss(obj) is obj
    assert isinstance(get_loss(L1Loss), L1Loss)
    assert all(issubclass(cls, Loss) for cls in LOSSES.values())
    with pytest.raises(ValueError, match=r"unknown loss 'categorical_crossentropy'; known names: "
                                         r"\['binary_crossentropy', 'huber', 'mae'"):
        get_loss("categorical_crossentropy")
    with pytest.raises(TypeError, match="loss must be a name"):
        get_loss(3)
