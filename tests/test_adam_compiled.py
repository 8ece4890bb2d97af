"""The compiled Adam update (elman.fast.adam) against the NumPy one it replaces: bit for bit,
every option it takes, float32 and float64; and the cases it leaves to NumPy."""
import numpy as np
import pytest

import elman
from elman.optim import Adam, AdamW

from _torch import require

require("numba")          # CI installs the fast extra: there a missing numba is an error

SHAPES = [(3, 4), (5,), (2, 3, 2), (300, 7)]
OPTIONS = [
    (Adam, dict()),
    (Adam, dict(lr=0.01, weight_decay=0.1)),
    (Adam, dict(lr=0.01, weight_decay=0.1, maximize=True)),
    (Adam, dict(lr=0.01, maximize=True)),
    (Adam, dict(lr=0.01, betas=(0.3, 0.5), eps=1e-4)),      # 1 - beta1 >= 0.5: lerp's other side
    (Adam, dict(lr=0.01, weight_decay=0.1, decoupled_weight_decay=True)),
    (AdamW, dict(lr=0.01, weight_decay=0.3, betas=(0.8, 0.9))),
    (Adam, dict(lr=0.01, amsgrad=True)),                      # (NumPy's path on both sides)
]


def _trajectory(cls, options, dtype, fast, steps=12):
    """Parameters and state after ``steps`` updates on a noisy quadratic, with the compiled
    update (``fast``) or NumPy's."""
    rng = np.random.default_rng(0)
    params = [elman.Param(rng.standard_normal(s).astype(dtype)) for s in SHAPES]
    centres = [rng.standard_normal(s).astype(dtype) for s in SHAPES]
    opt = cls(params, **options)
    with elman.fast.use(fast):
        for _ in range(steps):
            for p, c in zip(params, centres):
                p.grad[...] = (0.8 * (p.data - c)
                               + 0.3 * rng.standard_normal(p.shape)).astype(dtype)
            opt.step()
    return [p.data for p in params], opt.state


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("cls, options", OPTIONS,
                         ids=[f"{c.__name__}-{o}" for c, o in OPTIONS])
def test_compiled_update_equals_numpys_bit_for_bit(cls, options, dtype, monkeypatch):
    from elman.fast import adam
    done = []
    step = adam.step
    monkeypatch.setattr(adam, "step", lambda *a, **k: done.append(step(*a, **k)) or done[-1])
    compiled, compiled_state = _trajectory(cls, options, dtype, fast=True)
    # every update ran compiled, except AMSGrad's, which NumPy runs
    assert done == ([] if options.get("amsgrad") else [True] * 12 * len(SHAPES))
    reference, reference_state = _trajectory(cls, options, dtype, fast=False)
    for a, b in zip(compiled, reference):
        assert a.dtype == dtype
        np.testing.assert_array_equal(a, b)
    assert compiled_state.keys() == reference_state.keys()
    for name in reference_state:
        for a, b in zip(compiled_state[name], reference_state[name]):
            np.testing.assert_array_equal(a, b)


def test_the_kernel_runs_and_declines_what_it_does_not_take():
    """``step`` updates in place and says so; False and nothing written for arrays it cannot
    take (mixed dtypes or shapes, a strided array, no gradient)."""
    from elman.fast import adam
    rng = np.random.default_rng(1)
    param, grad = rng.standard_normal((2, 6)).astype(np.float32)
    m, v = np.zeros(6, np.float32), np.zeros(6, np.float32)
    kw = dict(beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.0, maximize=False,
              step_size=0.01, bias_correction2_sqrt=0.1)
    before = param.copy()
    declined = [(param, grad.astype(np.float64), m, v), (param, grad, m[:5], v),
                (param, grad, np.zeros(12, np.float32)[::2], v), (param, None, m, v),
                (param.astype(np.float16), grad, m, v)]
    for args in declined:
        assert not adam.step(*args, **kw)
    assert not m.any() and not v.any() and np.array_equal(param, before)
    assert adam.step(param, grad, m, v, **kw)
    assert m.any() and v.any() and not np.array_equal(param, before)
