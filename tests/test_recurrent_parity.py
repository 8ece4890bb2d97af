"""PyTorch parity of the recurrent layers over randomised configurations.

Each case draws a configuration from its own seed (cell, layers, directions, bias, layout,
unbatched, initial states, lengths, proj_size, nonlinearity, dtype, sizes) and compares with
torch.nn on outputs, final states, dx, d(initial states) and every parameter gradient:
float64 to 1e-9 relative, float32 to 1e-4. Variable lengths are compared against
pack_padded_sequence(enforce_sorted=False) / pad_packed_sequence(total_length=T).
Every test runs twice: on the compiled fast path (elman.fast) and on the NumPy reference path.
"""
import warnings

import numpy as np
import pytest

import elman
from _parity import assert_match, run_both
from _torch import require

CASES_PER_CELL = 100


@pytest.fixture(params=["fast", "reference"], autouse=True)
def path(request):
    """Run the test on the compiled loops, then on the NumPy reference."""
    if request.param == "fast":
        require("numba")
    with elman.fast.use(request.param == "fast"):
        yield request.param


def random_case(kind, seed):
    rng = np.random.default_rng([seed, ["RNN", "GRU", "LSTM"].index(kind)])
    dtype = np.float64 if rng.random() < 0.5 else np.float32
    I, H = int(rng.integers(1, 6)), int(rng.integers(1, 7))
    kwargs = dict(num_layers=int(rng.integers(1, 4)), bias=bool(rng.random() < 0.8),
                  batch_first=bool(rng.random() < 0.3), bidirectional=bool(rng.random() < 0.5),
                  dropout=float(rng.choice([0.0, 0.3])), dtype=dtype, seed=seed)
    if kind == "RNN":
        kwargs["nonlinearity"] = str(rng.choice(["tanh", "relu"]))
    if kind == "LSTM" and H > 1 and rng.random() < 0.4:
        kwargs["proj_size"] = int(rng.integers(1, H))
    layer = getattr(elman, kind)(I, H, **kwargs)
    layer.eval()                       # inter-layer dropout is random: compare in eval mode
    T, N = int(rng.integers(1, 8)), int(rng.integers(1, 6))
    unbatched = rng.random() < 0.15
    lengths = None
    if unbatched:
        x = rng.standard_normal((T, I))
    else:
        x = rng.standard_normal((N, T, I) if layer.batch_first else (T, N, I))
        if rng.random() < 0.5:
            lengths = rng.integers(1, T + 1, size=N)
            lengths[rng.integers(N)] = T          # torch pads to total_length; keep one full
            lengths = lengths.tolist()
    hx = None
    if rng.random() < 0.6:
        D = 2 if layer.bidirectional else 1
        lead = (D * layer.num_layers,) if unbatched else (D * layer.num_layers, N)
        P = kwargs.get("proj_size", 0) or H
        h0 = rng.standard_normal(lead + (P,))
        hx = (h0, rng.standard_normal(lead + (H,))) if kind == "LSTM" else h0
    return layer, x, hx, lengths


@pytest.mark.parametrize("seed", range(CASES_PER_CELL))
@pytest.mark.parametrize("kind", ["RNN", "GRU", "LSTM"])
def test_matches_torch(kind, seed):
    layer, x, hx, lengths = random_case(kind, seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")        # torch: dropout with 1 layer, proj without oneDNN
        ours, theirs = run_both(layer, x, hx, lengths, seed=seed)
    assert_match(ours, theirs, layer.dtype, context=f"{layer!r} x{np.shape(x)} "
                                                    f"lengths={lengths} h0={hx is not None}")


@pytest.mark.parametrize("kind", ["RNN", "GRU", "LSTM"])
def test_unsorted_lengths_with_padding_garbage(kind):
    """Values past a sequence's end must not leak into anything: fill them with garbage."""
    rng = np.random.default_rng(7)
    layer = getattr(elman, kind)(3, 4, num_layers=2, bidirectional=True, dtype=np.float64, seed=1)
    lengths = [2, 5, 1, 4]
    x = rng.standard_normal((5, 4, 3))
    ours, theirs = run_both(layer, x, None, lengths)
    assert_match(ours, theirs, np.float64)
    for garbage in (1e3, np.nan, np.inf):
        x2 = x.copy()
        for b, n in enumerate(lengths):
            x2[n:, b] = garbage
        layer.zero_grad()
        out2, _ = layer(x2, lengths=lengths)
        np.testing.assert_array_equal(out2, ours["out"])
        assert not out2[2:, 0].any() and not out2[1:, 2].any()     # padding is exactly zero
        dx2, _ = layer.backward(np.ones_like(out2))
        assert all(np.isfinite(p.grad).all() for p in layer.parameters())
        assert np.isfinite(dx2).all() and not dx2[2:, 0].any()


def test_default_initialisation_matches_torch_distribution():
    """Every parameter is U(-1/sqrt(H), 1/sqrt(H)), as torch.nn.LSTM's reset_parameters."""
    layer = elman.LSTM(7, 64, num_layers=2, bidirectional=True, seed=0)
    bound = 1 / np.sqrt(64)
    values = np.concatenate([p.data.ravel() for p in layer.parameters()])
    assert values.min() >= -bound and values.max() <= bound
    assert abs(values.mean()) < 0.01 * bound * 10
    assert abs(values.std() - bound / np.sqrt(3)) < 0.02 * bound    # std of U(-b, b)
    again = elman.LSTM(7, 64, num_layers=2, bidirectional=True, seed=0)
    np.testing.assert_array_equal(again.weight_hh_l1_reverse.data,
                                  layer.weight_hh_l1_reverse.data)
