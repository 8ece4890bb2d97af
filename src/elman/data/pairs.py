"""Parallel sequence data for sequence-to-sequence models: reading pairs, a symbol vocabulary
with the special ids an encoder-decoder needs, a split that keeps every source on one side, and
padded, length-bucketed batches for teacher forcing.

A data set is a list of ``(source, targets)`` entries: ``source`` a tuple of symbols (letters,
words) and ``targets`` a list of the correct target tuples (several for a word with several
pronunciations, or a sentence with several translations).

>>> data = group_pairs([(("c", "a", "t"), ("K", "AE", "T")), (("a",), ("AH",)),
...                     (("a",), ("EY",))])
>>> data[1]
(('a',), [('AH',), ('EY',)])
>>> vocab = SymbolVocabulary().fit(t for _, ts in data for t in ts)
>>> vocab.symbols[:6], vocab.encode(("K", "X"))
(['<pad>', '<s>', '</s>', '<unk>', 'AE', 'AH'], [7, 3])
"""
from __future__ import annotations

import os

import numpy as np

from .. import _validate

__all__ = ["SymbolVocabulary", "group_pairs", "read_pairs", "split_by_source", "make_batch",
           "bucket_batches"]


class SymbolVocabulary:
    """Ids for the symbols of one side: 0 padding ``<pad>``, 1 begin ``<s>``, 2 end ``</s>``,
    3 unknown ``<unk>``, then the symbols seen in training, sorted (so the ids depend only on
    the set of symbols)."""
    PAD, BOS, EOS, UNK = 0, 1, 2, 3
    SPECIALS = ["<pad>", "<s>", "</s>", "<unk>"]

    def __init__(self):
        self._symbols = None
        self._index = None

    def fit(self, sequences) -> "SymbolVocabulary":
        seen = set()
        for seq in sequences:
            seen.update(seq)
        clash = seen & set(self.SPECIALS)
        if clash:
            raise ValueError(f"the data use the reserved symbols {sorted(clash)}")
        self._set(sorted(seen))
        return self

    def _set(self, symbols) -> None:
        self._symbols = list(symbols)
        self._index = {s: i for i, s in enumerate(self.symbols)}

    @property
    def symbols(self) -> list:
        if self._symbols is None:
            raise RuntimeError("this SymbolVocabulary is not fitted: call fit() or "
                               "load_state_dict() first")
        return self.SPECIALS + self._symbols

    def __len__(self) -> int:
        return len(self.symbols)

    def encode(self, sequence) -> list:
        """Ids of one sequence; unseen symbols become ``UNK``."""
        self.symbols                     # a clear error when not fitted
        return [self._index.get(s, self.UNK) for s in sequence]

    def decode(self, ids) -> tuple:
        """Symbols of one id sequence, stopping at the first ``</s>``, without padding."""
        symbols = self.symbols
        out = []
        for i in ids:
            i = int(i)
            if i == self.EOS:
                break
            if i != self.PAD and i != self.BOS:
                out.append(symbols[i] if 0 <= i < len(symbols) else "<unk>")
        return tuple(out)

    def state_dict(self) -> dict:
        return {"symbols": list(self.symbols[len(self.SPECIALS):])}

    def load_state_dict(self, state) -> "SymbolVocabulary":
        if not isinstance(state, dict) or not isinstance(state.get("symbols"), list) or not \
                all(isinstance(s, str) and s for s in state["symbols"]):
            raise ValueError("a SymbolVocabulary state must be {'symbols': [non-empty str, "
                             "...]}")
        symbols = state["symbols"]
        if len(set(symbols)) != len(symbols) or set(symbols) & set(self.SPECIALS):
            raise ValueError("state['symbols'] repeats a symbol or holds a reserved one")
        self._set(symbols)
        return self


def group_pairs(pairs) -> list:
    """``[(source, target), ...]`` -> ``[(source, [target, ...]), ...]``: each distinct source
    once (in order of first appearance) with its distinct targets."""
    grouped: dict = {}
    for source, target in pairs:
        targets = grouped.setdefault(tuple(source), [])
        if tuple(target) not in targets:
            targets.append(tuple(target))
    return list(grouped.items())


def read_pairs(path: str, level: str = "char", lower: bool = False) -> list:
    """A tab-separated file of ``source<TAB>target`` lines (the Tatoeba/ManyThings layout;
    columns after the second, such as attributions, are ignored), grouped by source.

    ``level="char"``: sequences of characters; ``"word"``: of whitespace-separated words.
    Empty lines are skipped; a line without a tab, or with an empty side, is an error naming
    the line."""
    if level not in ("char", "word"):
        raise ValueError(f"level must be 'char' or 'word', got {level!r}")
    with open(path, encoding="utf-8") as f:
        lines = f.read().splitlines()
    pairs = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) < 2 or not fields[0].strip() or not fields[1].strip():
            raise ValueError(f"{os.path.basename(path)} line {number}: expected "
                             f"'source<TAB>target', got {line[:60]!r}")
        source, target = fields[0].strip(), fields[1].strip()
        if lower:
            source, target = source.lower(), target.lower()
        if level == "char":
            pairs.append((tuple(source), tuple(target)))
        else:
            pairs.append((tuple(source.split()), tuple(target.split())))
    if not pairs:
        raise ValueError(f"{os.path.basename(path)} holds no pairs")
    return group_pairs(pairs)


def split_by_source(data: list, fractions=(0.8, 0.1, 0.1), seed: int = 0) -> tuple:
    """Shuffle the entries with ``seed`` and cut them into train/validation/test by
    ``fractions``: every source (with all its targets) lands on exactly one side."""
    if len(fractions) != 3 or any(f <= 0 for f in fractions) or abs(sum(fractions) - 1) > 1e-9:
        raise ValueError(f"fractions must be three positive shares summing to 1, got "
                         f"{fractions}")
    order = np.random.default_rng(seed).permutation(len(data))
    n_val = int(round(fractions[1] * len(data)))
    n_test = int(round(fractions[2] * len(data)))
    n_train = len(data) - n_val - n_test
    parts = (order[:n_train], order[n_train:n_train + n_val], order[n_train + n_val:])
    return tuple([data[i] for i in sorted(p)] for p in parts)


def make_batch(sources, targets=None, pad: int = SymbolVocabulary.PAD,
               bos: int = SymbolVocabulary.BOS, eos: int = SymbolVocabulary.EOS) -> dict:
    """Padded arrays from id lists: ``src`` (N, S), ``src_lengths``; with ``targets`` also
    ``tgt_in`` = [BOS y..] and ``tgt_out`` = [y.. EOS] (N, T) and ``tgt_lengths`` (len(y)+1)."""
    N = len(sources)
    src_len = np.array([max(len(s), 1) for s in sources], np.int64)
    src = np.full((N, int(src_len.max())), pad, np.int64)
    for n, s in enumerate(sources):
        src[n, :len(s)] = s
    batch = {"src": src, "src_lengths": src_len}
    if targets is not None:
        tgt_len = np.array([len(t) + 1 for t in targets], np.int64)
        tgt_in = np.full((N, int(tgt_len.max())), pad, np.int64)
        tgt_out = tgt_in.copy()
        for n, t in enumerate(targets):
            tgt_in[n, :len(t) + 1] = [bos, *t]
            tgt_out[n, :len(t) + 1] = [*t, eos]
        batch.update(tgt_in=tgt_in, tgt_out=tgt_out, tgt_lengths=tgt_len)
    return batch


def bucket_batches(lengths, batch_size: int, rng=None) -> list:
    """Index batches of similar lengths (less padding): sort by length (ties in random order
    with ``rng``), cut into batches of ``batch_size``, and shuffle the batches with ``rng``
    (None: in order, for evaluation)."""
    batch_size = _validate.positive_int("batch_size", batch_size)
    lengths = np.asarray(lengths)
    ties = rng.random(len(lengths)) if rng is not None else np.arange(len(lengths))
    order = np.lexsort((ties, lengths))
    batches = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    if rng is not None:
        batches = [batches[i] for i in rng.permutation(len(batches))]
    return batches

