"""A character n-gram language model with interpolated absolute discounting (Kneser-Ney style):
the baseline that ``elman generate`` compares its recurrent model with.

The probability of the next id ``c`` after a history ``h`` is built up from the uniform
distribution over the ``V`` ids of the vocabulary through contexts of length 0, 1, ..., n-1
(the last ``m`` ids of ``h``), each level mixing its own discounted counts with the level
below::

    p_0(c)     = 1 / V
    p_m(c | h) = (max(N_m(h c) - D, 0) + D * T_m(h) * p_(m-1)(c | h)) / N_m(h)

where ``N_m(h c)`` is the count of context ``h`` (the last ``m`` ids) followed by ``c``,
``N_m(h) = sum_c N_m(h c)`` and ``T_m(h)`` the number of distinct ``c`` with ``N_m(h c) > 0``.
A level whose context was never seen passes ``p_(m-1)`` through unchanged. With integer counts
and ``0 < D <= 1`` every level sums to one over the vocabulary, so ``p`` is a proper
distribution over all ``V`` ids, including ids the training text never had (the vocabulary's
unknown id gets its share of the uniform level).

Kneser-Ney's idea: the top level (``m = n-1``) counts occurrences, every lower level counts
*continuations*: ``N_m(h c)`` is the number of distinct ids seen **before** ``h c``. A character
that follows many different contexts ("e") gets more of the back-off mass than one that is
frequent only after one context (the "k" after "'ta"). One discount ``D`` serves all levels;
``order`` and ``D`` are chosen on validation text by :func:`select` (a grid, scored in bits per
character).

Counts live in plain dicts keyed by strings (an id ``i`` is the character ``chr(i)``, so any
vocabulary size works and a context is a string slice); scoring a text looks the counts up
once per position and order, and then evaluates every discount with NumPy.

>>> import numpy as np
>>> ids = np.array([1, 2, 1, 2, 1, 2, 1, 3])        # "abababac" with a=1, b=2, c=3
>>> lm = CharNGram(order=2, discount=0.5).fit(ids, vocab_size=4)
>>> p = lm.distribution([1])                          # after "a"
>>> round(float(p.sum()), 12), int(p.argmax())     # "b" is the likeliest
(1.0, 2)
>>> lm.bits_per_char(np.array([1, 2]))     # -(log2 p(a) + log2 p(b | a)) / 2  # doctest: +ELLIPSIS
1.148...
"""
from __future__ import annotations

import math
from collections import Counter

import numpy as np

__all__ = ["CharNGram", "select"]

MAX_ORDER = 16


def _as_ids(ids, vocab_size: int | None, what: str) -> np.ndarray:
    arr = np.asarray(ids)
    if arr.ndim != 1 or (arr.size and arr.dtype.kind not in "iu"):
        raise TypeError(f"{what} must be a 1-D sequence of integer ids, got shape {arr.shape} "
                        f"and dtype {arr.dtype}")
    arr = arr.astype(np.int64, copy=False)
    if arr.size and arr.min() < 0:
        raise ValueError(f"{what} holds a negative id {int(arr.min())}")
    if vocab_size is not None and arr.size and arr.max() >= vocab_size:
        raise ValueError(f"{what} holds id {int(arr.max())}, outside the vocabulary "
                         f"0..{vocab_size - 1}")
    return arr


def _key(ids) -> str:
    """Ids as a string, one character per id: contexts are slices of it, hashable and fast."""
    return "".join(map(chr, np.asarray(ids, dtype=np.int64).tolist()))


def _check_order(order) -> int:
    if isinstance(order, bool) or not isinstance(order, (int, np.integer)) \
            or not 1 <= order <= MAX_ORDER:
        raise ValueError(f"order must be an integer in 1..{MAX_ORDER}, got {order!r}")
    return int(order)


def _check_discount(discount) -> float:
    try:
        d = float(discount)
    except (TypeError, ValueError):
        raise ValueError(f"discount must be a number in (0, 1], got {discount!r}") from None
    if not 0.0 < d <= 1.0:
        raise ValueError(f"discount must be a number in (0, 1], got {discount!r}")
    return d


class CharNGram:
    """Interpolated absolute-discount (Kneser-Ney style) n-gram model over integer ids.

    ``order``: n (the context is the last n-1 ids); ``discount``: ``D`` in (0, 1].
    :meth:`fit` counts up to ``max_order`` (default ``order``), so the same counts serve any
    ``order <= max_order`` (what :func:`select` uses): set ``lm.order`` to switch.
    """

    def __init__(self, order: int = 4, discount: float = 0.75):
        self.order = _check_order(order)
        self.discount = _check_discount(discount)
        self.vocab_size = None
        self.max_order = None
        # raw[m] / cont[m]: context (str of m ids) -> (total, distinct followers, {id: count})
        self._raw: list[dict] = []
        self._cont: list[dict] = []

    # -- counting --------------------------------------------------------------------------
    def fit(self, ids, vocab_size: int, max_order: int | None = None) -> "CharNGram":
        """Count the n-grams of ``ids`` (1-D ints in ``0..vocab_size-1``). Returns self."""
        if isinstance(vocab_size, bool) or not isinstance(vocab_size, (int, np.integer)) \
                or vocab_size < 1:
            raise ValueError(f"vocab_size must be a positive integer, got {vocab_size!r}")
        max_order = self.order if max_order is None else _check_order(max_order)
        if max_order < self.order:
            raise ValueError(f"max_order ({max_order}) must be at least order ({self.order})")
        ids = _as_ids(ids, int(vocab_size), "ids")
        if ids.size == 0:
            raise ValueError("cannot fit an n-gram model on an empty text")
        text = _key(ids)
        self.vocab_size, self.max_order = int(vocab_size), max_order
        self._raw, self._cont = [], []
        for m in range(max_order):
            grams = Counter(text[i:i + m + 1] for i in range(len(text) - m))
            self._raw.append(_table(grams.items()))
            if m < max_order - 1:
                # continuation count of (context, c): the number of distinct ids seen before
                # it, i.e. of distinct (m+2)-grams ending in it
                longer = {text[i:i + m + 2] for i in range(len(text) - m - 1)}
                cont = Counter(g[1:] for g in longer)
                # a gram seen only at the very start has no left neighbour: count it once, as
                # if preceded by a boundary, so the levels see the same grams
                if text[:m + 1] not in cont:
                    cont[text[:m + 1]] = 1
                self._cont.append(_table(cont.items()))
        return self

    def _check_fitted(self) -> None:
        if self.vocab_size is None:
            raise RuntimeError("this CharNGram is not fitted: call fit(ids, vocab_size) first")
        if self.order > self.max_order:
            raise ValueError(f"order {self.order} is above the max_order {self.max_order} it "
                             f"was fitted with")

    def _tables(self) -> list:
        """The table of each level m = 0..order-1: continuations below the top, counts on it."""
        n = self.order
        return [self._cont[m] if m < n - 1 else self._raw[m] for m in range(n)]

    # -- probabilities ---------------------------------------------------------------------
    def distribution(self, history) -> np.ndarray:
        """p(next id | history) over all ``vocab_size`` ids (float64, sums to 1)."""
        self._check_fitted()
        hist = _as_ids(history, None, "history")
        hist = _key(hist[max(len(hist) - (self.order - 1), 0):])
        V, D = self.vocab_size, self.discount
        p = np.full(V, 1.0 / V)
        for m, table in enumerate(self._tables()):
            if m > len(hist):
                break
            entry = table.get(hist[len(hist) - m:] if m else "")
            if entry is None:
                continue
            total, types, followers = entry
            counts = np.zeros(V)
            counts[np.fromiter(map(ord, followers), np.int64, len(followers))] = \
                np.fromiter(followers.values(), np.float64, len(followers))
            p = (np.maximum(counts - D, 0.0) + D * types * p) / total
        return p

    def _lookups(self, ids: np.ndarray, history: np.ndarray | None = None) -> tuple:
        """Per position t and level m: (count of the target, context total, distinct
        followers), all (len(ids), order); total 0 where the context was never seen."""
        self._check_fitted()
        n = self.order
        prefix = np.zeros(0, np.int64) if history is None \
            else history[max(len(history) - (n - 1), 0):]
        text = _key(np.concatenate([prefix, ids]))
        start = len(prefix)
        T = len(ids)
        cnt = np.zeros((T, n))
        tot = np.zeros((T, n))
        typ = np.zeros((T, n))
        for m, table in enumerate(self._tables()):
            for t in range(T):
                pos = start + t
                if m > pos:
                    continue
                entry = table.get(text[pos - m:pos])
                if entry is None:
                    continue
                total, types, followers = entry
                cnt[t, m] = followers.get(text[pos], 0)
                tot[t, m] = total
                typ[t, m] = types
        return cnt, tot, typ

    def log2_probs(self, ids, history=None) -> np.ndarray:
        """log2 p(ids[t] | history + ids[:t]) for every position t (float64 array)."""
        ids = _as_ids(ids, self.vocab_size, "ids")
        history = None if history is None else _as_ids(history, self.vocab_size, "history")
        return _score(*self._lookups(ids, history), self.vocab_size, self.discount)

    def bits_per_char(self, ids, history=None) -> float:
        """Mean negative log2 probability per id of ``ids`` (cross-entropy in bits/char)."""
        ids = _as_ids(ids, self.vocab_size, "ids")
        if ids.size == 0:
            raise ValueError("cannot score an empty text")
        return float(-self.log2_probs(ids, history).mean())

    def __repr__(self) -> str:
        state = "unfitted" if self.vocab_size is None else f"V={self.vocab_size}"
        return f"CharNGram(order={self.order}, discount={self.discount}, {state})"


def _table(items) -> dict:
    """{context: (total, distinct followers, {follower: count})} from (gram, count) pairs."""
    table: dict = {}
    for gram, n in items:
        ctx, c = gram[:-1], gram[-1]
        entry = table.get(ctx)
        if entry is None:
            entry = table[ctx] = [0, 0, {}]
        entry[0] += n
        entry[1] += 1
        entry[2][c] = n
    return {k: tuple(v) for k, v in table.items()}


def _score(cnt, tot, typ, V: int, discounts) -> np.ndarray:
    """log2 probabilities of the targets from :meth:`CharNGram._lookups`; ``discounts`` a
    number (returns (T,)) or a 1-D array of them (returns (len(discounts), T))."""
    D = np.asarray(discounts, dtype=np.float64)
    scalar = D.ndim == 0
    D = D.reshape(-1, 1)
    p = np.full((D.shape[0], cnt.shape[0]), 1.0 / V)
    for m in range(cnt.shape[1]):
        seen = tot[:, m] > 0
        safe = np.where(seen, tot[:, m], 1.0)
        level = (np.maximum(cnt[:, m] - D, 0.0) + D * typ[:, m] * p) / safe
        p = np.where(seen, level, p)
    out = np.log2(p)
    return out[0] if scalar else out


def select(train_ids, valid_ids, vocab_size: int, orders=range(1, 9),
           discounts=(0.3, 0.4, 0.5, 0.6, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95, 1.0)):
    """Fit on ``train_ids`` and choose ``order`` and ``discount`` by bits/char on
    ``valid_ids``, read on its own: every position after the first is scored given the ones
    before it (as a recurrent model started on the text's first character is).

    Returns ``(model, table)``: the model set to the best (order, discount), and
    ``{order: {discount: bits_per_char}}`` for every pair tried.
    """
    orders = [_check_order(o) for o in orders]
    discounts = [_check_discount(d) for d in discounts]
    if not orders or not discounts:
        raise ValueError("select needs at least one order and one discount")
    train_ids = _as_ids(train_ids, vocab_size, "train_ids")
    valid_ids = _as_ids(valid_ids, vocab_size, "valid_ids")
    if valid_ids.size < 2:
        raise ValueError("select needs a validation text of at least 2 ids")
    lm = CharNGram(order=min(orders), discount=discounts[0]).fit(
        train_ids, vocab_size, max_order=max(orders))
    table, best = {}, (math.inf, None, None)
    for order in orders:
        lm.order = order
        bpc = -_score(*lm._lookups(valid_ids[1:], valid_ids[:1]), lm.vocab_size,
                      np.asarray(discounts)).mean(axis=1)
        table[order] = {d: float(b) for d, b in zip(discounts, bpc)}
        k = int(np.argmin(bpc))
        if bpc[k] < best[0]:
            best = (float(bpc[k]), order, discounts[k])
    lm.order, lm.discount = best[1], best[2]
    return lm, table
