"""The character n-gram baseline (elman.ngram): normalisation, hand-computed values, the
Kneser-Ney continuation counts, unseen characters, and the choice of order and discount."""
import math

import numpy as np
import pytest

from elman import ngram
from elman.ngram import CharNGram


def _markov_text(n, seed=0):
    """ids 1..4 from a first-order Markov chain; returns (ids, entropy rate in bits)."""
    P = np.array([[0.7, 0.1, 0.1, 0.1],
                  [0.1, 0.1, 0.7, 0.1],
                  [0.05, 0.05, 0.1, 0.8],
                  [0.6, 0.2, 0.1, 0.1]])
    rng = np.random.default_rng(seed)
    ids = np.empty(n, np.int64)
    s = 0
    for t in range(n):
        s = rng.choice(4, p=P[s])
        ids[t] = s + 1
    # stationary distribution -> entropy rate
    w, v = np.linalg.eig(P.T)
    pi = np.real(v[:, np.argmin(abs(w - 1))])
    pi /= pi.sum()
    rate = -float(sum(pi[i] * P[i, j] * math.log2(P[i, j]) for i in range(4) for j in range(4)))
    return ids, rate


@pytest.mark.parametrize("order", [1, 2, 3, 5])
@pytest.mark.parametrize("discount", [0.1, 0.75, 1.0])
def test_distribution_sums_to_one_for_random_contexts(order, discount):
    ids, _ = _markov_text(2000)
    lm = CharNGram(order=order, discount=discount).fit(ids, vocab_size=6)   # ids 0 and 5 unseen
    rng = np.random.default_rng(1)
    for _ in range(30):
        history = rng.integers(0, 6, size=rng.integers(0, 7))             # seen and unseen
        p = lm.distribution(history)
        assert p.shape == (6,)
        assert np.all(p > 0)
        assert abs(p.sum() - 1.0) < 1e-12


def test_unigram_by_hand():
    # "aab" with a=1, b=2; id 0 (unknown) never seen; V=3, D=0.5:
    # p(c) = (max(N(c) - D, 0) + D * T / V) / N with N=3 tokens, T=2 types
    lm = CharNGram(order=1, discount=0.5).fit([1, 1, 2], vocab_size=3)
    expected = np.array([0.5 * 2 / 3, 1.5 + 0.5 * 2 / 3, 0.5 + 0.5 * 2 / 3]) / 3
    np.testing.assert_allclose(lm.distribution([]), expected, rtol=1e-12)
    np.testing.assert_allclose(lm.distribution([2, 1]), expected, rtol=1e-12)  # no context


def test_bigram_by_hand():
    # "abababac": continuation counts of the unigrams: b after {a}, a after {b}, c after {a}
    lm = CharNGram(order=2, discount=0.5).fit([1, 2, 1, 2, 1, 2, 1, 3], vocab_size=4)
    p1 = (1 - 0.5 + 0.5 * 3 * 0.25) / 3          # each of a, b, c at the continuation level
    # after "a": counts b:3, c:1 (total 4, 2 types)
    p_b = (3 - 0.5 + 0.5 * 2 * p1) / 4
    assert lm.distribution([1])[2] == pytest.approx(p_b, rel=1e-12)
    assert lm.bits_per_char([1, 2]) == pytest.approx(-(math.log2(p1) + math.log2(p_b)) / 2)


def test_lower_orders_use_continuation_counts():
    # id 2 is frequent but always after id 1; id 4 is rarer but follows three different ids.
    ids = [1, 2] * 6 + [3, 4, 5, 4, 6, 4]
    lm = CharNGram(order=2, discount=0.75).fit(ids, vocab_size=8)
    p = lm.distribution([7])                      # a context never seen: the lower level
    assert p[4] > p[2]                            # Kneser-Ney: more contexts, more mass
    raw = CharNGram(order=1, discount=0.75).fit(ids, vocab_size=8).distribution([])
    assert raw[2] > raw[4]                        # plain counts say the opposite


def test_log2_probs_match_distribution():
    ids, _ = _markov_text(1500, seed=2)
    lm = CharNGram(order=4, discount=0.8).fit(ids[:1000], vocab_size=6)
    text = np.concatenate([ids[1000:1100], [0, 5, 1]])        # with ids never seen
    history = ids[990:1000]
    fast = lm.log2_probs(text, history=history)
    full = np.concatenate([history, text])
    slow = [math.log2(lm.distribution(full[:10 + t])[text[t]]) for t in range(len(text))]
    np.testing.assert_allclose(fast, slow, rtol=1e-10, atol=1e-12)
    assert np.all(np.isfinite(fast))


def test_unseen_characters_get_probability():
    lm = CharNGram(order=3, discount=0.7).fit([1, 2, 3, 1, 2, 3], vocab_size=5)
    bits = lm.log2_probs([1, 2, 0, 4])
    assert np.all(np.isfinite(bits))
    assert bits[2] < bits[1]                      # the unknown id is unlikely, not impossible


def test_select_finds_the_chain_and_its_entropy():
    ids, rate = _markov_text(30000, seed=3)
    lm, table = ngram.select(ids[:25000], ids[25000:], vocab_size=6, orders=[1, 2, 3, 4])
    assert set(table) == {1, 2, 3, 4}
    best = min((b, o, d) for o, row in table.items() for d, b in row.items())
    assert (lm.order, lm.discount) == (best[1], best[2])
    assert lm.order >= 2                          # the chain has memory
    assert table[1][lm.discount] > best[0] + 0.2  # which a unigram model misses
    assert best[0] == pytest.approx(rate, abs=0.03)


def test_errors():
    with pytest.raises(ValueError, match="order"):
        CharNGram(order=0)
    with pytest.raises(ValueError, match="discount"):
        CharNGram(discount=1.5)
    with pytest.raises(RuntimeError, match="not fitted"):
        CharNGram().distribution([1])
    with pytest.raises(ValueError, match="outside the vocabulary"):
        CharNGram().fit([1, 2, 9], vocab_size=4)
    with pytest.raises(ValueError, match="empty"):
        CharNGram().fit([], vocab_size=4)
    with pytest.raises(TypeError, match="integer ids"):
        CharNGram().fit([0.5, 1.0], vocab_size=4)
    lm = CharNGram(order=2).fit([1, 2, 1], vocab_size=3)
    lm.order = 3
    with pytest.raises(ValueError, match="max_order"):
        lm.distribution([1])
