"""A non-neural baseline for letter-to-sound style transduction: align, then look each letter up
in its context (the classic "letters in context" approach of NETtalk's data, Daelemans & van den
Bosch's IGTree and similar memory-based grapheme-to-phoneme converters).

1. **Alignment** (hard EM): every source symbol emits a chunk of 0, 1 or 2 target symbols
   (``x`` -> ``K S``, silent ``e`` -> nothing). Starting from a score that prefers one symbol
   per letter, each pair is aligned by Viterbi dynamic programming under the current
   ``log p(chunk | letter)``, the probabilities are re-estimated from the alignments' counts,
   and so on for ``iterations`` rounds. Pairs no such alignment can explain (a target more
   than twice as long as its source) are left out of training.
2. **Context tables**: for each aligned letter, its context of ``l`` letters to the left and
   ``r`` to the right (word boundaries padded with ``#``) for the widths ``(0,0), (1,0),
   (0,1), (1,1), (2,1), (1,2), (2,2), ...`` up to ``max_width``; each table keeps the most
   frequent chunk of each context, and only where it differs from what the next narrower
   context predicts (IGTree-style pruning, which keeps the tables small).
3. **Prediction**: each letter takes the chunk of its widest context seen in training; the
   output is the concatenation. ``max_width`` is chosen on validation data
   (:func:`select_width`).

>>> model = LetterContext(max_width=1).fit([(tuple("cat"), ("K", "AE", "T")),
...                                         (tuple("cab"), ("K", "AE", "B"))])
>>> model.predict(tuple("bat"))
('B', 'AE', 'T')
"""
from __future__ import annotations

import math
from collections import Counter, defaultdict

from . import _validate
from .seqscores import error_rates

__all__ = ["LetterContext", "select_width"]

_SEP = "\x1f"          # joins symbols into one string key (never inside a symbol of the data)
_PAD = "#"


def _levels(max_width: int) -> list:
    """(left, right) context widths from narrow to wide, each containing the one before (so a
    pruned entry means "as the narrower context says"): (0,0), (1,0), (1,1), (2,1), ..."""
    out = [(0, 0)]
    for w in range(1, max_width + 1):
        out += [(w, w - 1), (w, w)]
    return out


class LetterContext:
    """See the module docstring. ``fit(pairs)`` with ``(source, target)`` tuples of symbols;
    ``predict(source)`` returns a target tuple."""

    def __init__(self, max_width: int = 4, iterations: int = 3):
        self.max_width = _validate.positive_int("max_width", max_width, minimum=0)
        self.iterations = _validate.positive_int("iterations", iterations)
        self.tables: list = []
        self.aligned = 0

    # -- alignment ---------------------------------------------------------------------------
    @staticmethod
    def _viterbi(source, target, score):
        """The best split of ``target`` into len(source) chunks of 0-2 symbols, or None."""
        I, J = len(source), len(target)
        if J > 2 * I:
            return None
        best = [[-math.inf] * (J + 1) for _ in range(I + 1)]
        back = [[0] * (J + 1) for _ in range(I + 1)]
        best[0][0] = 0.0
        for i in range(1, I + 1):
            letter = source[i - 1]
            row, prev = best[i], best[i - 1]
            for j in range(max(0, J - 2 * (I - i)), min(J, 2 * i) + 1):
                for k in (0, 1, 2):
                    if j - k < 0 or prev[j - k] == -math.inf:
                        continue
                    s = prev[j - k] + score(letter, target[j - k:j])
                    if s > row[j]:
                        row[j], back[i][j] = s, k
        if best[I][J] == -math.inf:
            return None
        chunks, j = [], J
        for i in range(I, 0, -1):
            k = back[i][j]
            chunks.append(target[j - k:j])
            j -= k
        return chunks[::-1]

    def _align(self, pairs) -> list:
        # first round: one symbol per letter is likelier than none or two
        prior = {0: math.log(0.2), 1: 0.0, 2: math.log(0.2)}

        def score(letter, chunk):
            return prior[len(chunk)]

        alignments = []
        for _ in range(self.iterations):
            alignments = [(s, self._viterbi(s, t, score)) for s, t in pairs]
            counts: dict = defaultdict(Counter)
            for source, chunks in alignments:
                if chunks is not None:
                    for letter, chunk in zip(source, chunks):
                        counts[letter][chunk] += 1
            logp = {letter: {c: math.log(n / sum(cs.values())) for c, n in cs.items()}
                    for letter, cs in counts.items()}
            floor = math.log(1e-6)

            def score(letter, chunk, logp=logp, floor=floor):
                return logp.get(letter, {}).get(chunk, floor + len(chunk) * floor)
        return [(s, c) for s, c in alignments if c is not None]

    # -- tables ------------------------------------------------------------------------------
    @staticmethod
    def _key(padded, i: int, left: int, right: int, pad: int) -> str:
        return _SEP.join(padded[pad + i - left:pad + i + right + 1]) + f"|{left},{right}"

    def fit(self, pairs) -> "LetterContext":
        pairs = [(tuple(s), tuple(t)) for s, t in pairs]
        aligned = self._align(pairs)
        self.aligned = len(aligned)
        if not aligned:
            raise ValueError("no training pair could be aligned (each source symbol may stand "
                             "for at most two target symbols)")
        W = self.max_width
        self.tables = []
        previous = None                     # per (word, position): the narrower prediction
        for left, right in _levels(W):
            counts: Counter = Counter()
            for source, chunks in aligned:
                padded = (_PAD,) * W + source + (_PAD,) * W
                for i, chunk in enumerate(chunks):
                    counts[(self._key(padded, i, left, right, W), chunk)] += 1
            majority: dict = {}
            for (key, chunk), n in counts.items():
                if key not in majority or n > majority[key][1] or \
                        (n == majority[key][1] and chunk < majority[key][0]):
                    majority[key] = (chunk, n)
            del counts
            table = {}
            current = []
            for w, (source, chunks) in enumerate(aligned):
                padded = (_PAD,) * W + source + (_PAD,) * W
                row = []
                for i in range(len(source)):
                    key = self._key(padded, i, left, right, W)
                    chunk = majority[key][0]
                    if previous is None or previous[w][i] != chunk:
                        table[key] = chunk
                    row.append(chunk)
                current.append(row)
            previous = current
            self.tables.append(((left, right), table))
        return self

    def predict(self, source, max_width: int | None = None) -> tuple:
        """The target for ``source``, using contexts up to ``max_width`` (default: all)."""
        if not self.tables:
            raise RuntimeError("LetterContext is not fitted: call fit(pairs) first")
        W = self.max_width
        limit = W if max_width is None else min(max_width, W)
        source = tuple(source)
        padded = (_PAD,) * W + source + (_PAD,) * W
        out = []
        for i in range(len(source)):
            chunk = ()
            for (left, right), table in self.tables:
                if max(left, right) > limit:
                    break
                found = table.get(self._key(padded, i, left, right, W))
                if found is not None:
                    chunk = found
            out.extend(chunk)
        return tuple(out)


def select_width(model: LetterContext, validation) -> tuple:
    """The context width with the lowest validation word error rate (ties: the narrower), and
    ``{width: {"wer", "per"}}`` for every width tried. ``validation`` is a list of
    ``(source, [targets])``."""
    scores = {}
    for width in range(model.max_width + 1):
        hyps = [model.predict(s, width) for s, _ in validation]
        scores[width] = error_rates(hyps, [t for _, t in validation])
    best = min(scores, key=lambda w: (scores[w]["wer"], scores[w]["per"], w))
    return best, scores
