"""Scores of output sequences against references: edit distance, word and token error rates
(the grapheme-to-phoneme measures) and corpus BLEU (the translation measure).

Every function takes sequences as lists (or tuples) of hashable tokens: phoneme strings, word
strings or ids. A source may have several correct references (a word with two pronunciations):
``references[i]`` is then a list of reference sequences, and the closest one counts, the
standard rule for CMUdict.

>>> edit_distance("kitten", "sitting")
3
>>> error_rates([["K", "AE", "T"], ["D", "AO", "G"]], [[["K", "AE", "T"]], [["D", "AA", "G"]]])
{'wer': 0.5, 'per': 0.16666666666666666}
"""
from __future__ import annotations

import math
from collections import Counter

__all__ = ["edit_distance", "error_rates", "corpus_bleu"]


def edit_distance(a, b) -> int:
    """Levenshtein distance: the fewest insertions, deletions and substitutions turning ``a``
    into ``b`` (dynamic programming, one row at a time)."""
    a, b = list(a), list(b)
    previous = list(range(len(b) + 1))
    for i, x in enumerate(a, start=1):
        current = [i]
        for j, y in enumerate(b, start=1):
            current.append(min(previous[j] + 1,              # delete x
                               current[j - 1] + 1,           # insert y
                               previous[j - 1] + (x != y)))  # substitute (or keep)
        previous = current
    return previous[-1]


def _check_pairs(hypotheses, references) -> None:
    if len(hypotheses) != len(references):
        raise ValueError(f"hypotheses and references must be as many, got {len(hypotheses)} "
                         f"and {len(references)}")
    if not hypotheses:
        raise ValueError("no sequences to score (hypotheses and references are empty)")
    for i, refs in enumerate(references):
        if not refs:
            raise ValueError(f"references[{i}] holds no reference sequence")


def error_rates(hypotheses, references) -> dict:
    """Word error rate and token (phoneme) error rate.

    ``hypotheses[i]`` is one output sequence, ``references[i]`` a list of correct sequences.
    ``wer``: the share of outputs equal to none of their references (a word is wrong unless
    every phoneme is right). ``per``: the summed edit distance to the closest reference over
    the summed length of those references (the usual phoneme error rate)."""
    _check_pairs(hypotheses, references)
    wrong = errors = length = 0
    for hyp, refs in zip(hypotheses, references):
        hyp = list(hyp)
        distances = [(edit_distance(hyp, ref), len(ref)) for ref in refs]
        best, ref_len = min(distances)
        wrong += best > 0                         # equal to no reference
        errors += best
        length += ref_len
    return {"wer": wrong / len(hypotheses), "per": errors / max(length, 1)}


def _ngrams(tokens, n: int) -> Counter:
    return Counter(tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1))


def corpus_bleu(hypotheses, references, max_n: int = 4) -> float:
    """Corpus BLEU (Papineni et al. 2002) in [0, 1]: the geometric mean of the modified n-gram
    precisions for n = 1..``max_n`` (counts clipped by the most any one reference holds, summed
    over the corpus before dividing) times the brevity penalty ``exp(1 - r/c)`` when the total
    hypothesis length c is below the total closest-reference length r (ties: the shorter one).
    No smoothing: 0 when some order has no match, as in the original definition.

    >>> corpus_bleu([["the", "cat", "sat", "on", "the", "mat"]],
    ...             [[["the", "cat", "sat", "on", "the", "mat"]]])
    1.0
    """
    _check_pairs(hypotheses, references)
    matches, totals = [0] * max_n, [0] * max_n
    hyp_len = ref_len = 0
    for hyp, refs in zip(hypotheses, references):
        hyp = list(hyp)
        refs = [list(r) for r in refs]
        hyp_len += len(hyp)
        ref_len += min((abs(len(r) - len(hyp)), len(r)) for r in refs)[1]
        for n in range(1, max_n + 1):
            counts = _ngrams(hyp, n)
            most = Counter()
            for r in refs:
                most |= _ngrams(r, n)             # the largest count of each n-gram in one ref
            matches[n - 1] += sum(min(c, most[g]) for g, c in counts.items())
            totals[n - 1] += max(len(hyp) - n + 1, 0)
    if min(matches) == 0:
        return 0.0
    log_precision = sum(math.log(m / t) for m, t in zip(matches, totals)) / max_n
    brevity = 1.0 if hyp_len > ref_len else math.exp(1 - ref_len / max(hyp_len, 1))
    return brevity * math.exp(log_precision)
