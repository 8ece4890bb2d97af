"""elman.masks.bernoulli: the zoneout masks' draw (32 random bits an element)."""
import numpy as np
import pytest

from elman.masks import bernoulli


@pytest.mark.parametrize("make", [np.random.default_rng,
                                  lambda s: np.random.Generator(np.random.MT19937(s)),
                                  lambda s: np.random.Generator(np.random.Philox(s))],
                         ids=["pcg64", "mt19937", "philox"])
@pytest.mark.parametrize("p", [0.1, 0.5, 0.9])
def test_frequency_matches_p_for_every_bit_generator(make, p):
    mask = bernoulli(make(0), p, (1001, 999), np.float32)        # an odd count of elements
    assert mask.shape == (1001, 999) and mask.dtype == np.float32
    assert set(np.unique(mask)) <= {0.0, 1.0}
    # binomial standard error sqrt(p (1 - p) / n) <= 5e-4: four of them
    assert abs(mask.mean() - p) < 2e-3
    # neighbours independent: the pairs share one 64-bit raw value (PCG64, Philox)
    flat = mask.ravel()
    both = (flat[:-1:2] * flat[1::2]).mean()
    assert abs(both - p * p) < 3e-3


def test_ends_shapes_and_dtypes():
    rng = np.random.default_rng(0)
    assert not bernoulli(rng, 0.0, (3, 4), np.float64).any()
    assert bernoulli(rng, 1.0, (3, 4), np.float64).all()
    assert bernoulli(rng, 0.5, (0, 4), np.float32).shape == (0, 4)
    assert bernoulli(rng, 0.5, (5,), np.float64).dtype == np.float64
    assert bernoulli(rng, 1 - 1e-12, (1000,), np.float32).all()   # (the threshold's cap)
    assert not bernoulli(rng, 1e-12, (1000,), np.float32).any()


def test_reproducible_from_the_seed_and_fresh_at_each_draw():
    a, b = np.random.default_rng(7), np.random.default_rng(7)
    first = bernoulli(a, 0.3, (50, 40), np.float32)
    np.testing.assert_array_equal(first, bernoulli(b, 0.3, (50, 40), np.float32))
    assert not np.array_equal(first, bernoulli(a, 0.3, (50, 40), np.float32))
