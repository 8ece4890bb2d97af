"""Text to integers: a tokenizer, word and character vocabularies, padding, stratified splits.

Word pipeline (``elman classify``)::

    vocab = Vocabulary(max_words=10_000).fit(train_texts)      # training texts only
    x = pad_sequences(vocab.encode(texts), maxlen=60)           # (N, 60) int32, 0 = padding

Ids 0 and 1 are reserved in :class:`Vocabulary`: 0 is padding, 1 is out-of-vocabulary; words
start at 2, so an ``Embedding(len(vocab), dim)`` covers every id. :class:`CharVocabulary`
(``elman generate``) reserves 0 for unknown characters. Both save as plain lists of strings
(``state_dict()``), which a JSON checkpoint stores as is.
"""
from __future__ import annotations

import re
from collections import Counter

import numpy as np

from .. import _validate

__all__ = ["tokenize", "Vocabulary", "CharVocabulary", "pad_sequences", "stratified_split"]

# A word is a run of letters/digits/underscores, with inner apostrophes kept (don't, rock's,
# we’ve); every other non-space character is a token of its own.
_TOKEN = re.compile(r"\w+(?:['’]\w+)*|[^\w\s]")


def tokenize(text: str, lower: bool = True, keep_punctuation: bool = True) -> list:
    """Split ``text`` into words and punctuation marks.

    Like Keras' ``Tokenizer`` (lower-case, split on whitespace, punctuation separated from
    words), except that punctuation marks are kept as tokens of their own (``"!"`` carries
    sentiment) unless ``keep_punctuation=False``, which drops them as Keras' filters do.
    Apostrophes inside a word stay in it, as in Keras.

    >>> tokenize("The Rock's new ''Conan'' -- great!")
    ['the', "rock's", 'new', "'", "'", 'conan', "'", "'", '-', '-', 'great', '!']
    >>> tokenize("Don't stop, NOW.", keep_punctuation=False)
    ["don't", 'stop', 'now']
    """
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, got {type(text).__name__}")
    if lower:
        text = text.lower()
    tokens = _TOKEN.findall(text)
    if not keep_punctuation:
        tokens = [t for t in tokens if t[0].isalnum() or t[0] == "_"]
    return tokens


def _texts(texts, what: str = "texts") -> list:
    """A list of str; one bare string is refused (it would be read as a list of characters)."""
    if isinstance(texts, str):
        raise TypeError(f"{what} must be a list of strings, got one string; wrap it: [text]")
    texts = list(texts)
    for k, t in enumerate(texts):
        if not isinstance(t, str):
            raise TypeError(f"{what}[{k}] must be a str, got {type(t).__name__}")
    return texts


class Vocabulary:
    """Word ids for the ``max_words`` most frequent tokens of the training texts.

    Id 0 is padding (``"<pad>"``), 1 is out-of-vocabulary (``"<oov>"``), the kept words follow
    from 2 in order of decreasing count; ties are broken alphabetically, so the ids depend only
    on the token counts, not on the order of the texts. ``len(vocab)`` is the number of ids
    (words + 2). ``min_count`` drops rarer words. The tokenizer's settings are part of the
    vocabulary and are saved with it.

    >>> vocab = Vocabulary(max_words=3).fit(["a cat, a dog", "a dog"])
    >>> vocab.words                       # counts: a 3, dog 2, ',' 1, cat 1 (',' < 'cat')
    ['<pad>', '<oov>', 'a', 'dog', ',']
    >>> vocab.encode(["a bird, a cat"])
    [[2, 1, 4, 2, 1]]
    >>> vocab.decode([[0, 0, 2, 3]])
    ['a dog']
    """
    PAD, OOV = 0, 1
    PAD_TOKEN, OOV_TOKEN = "<pad>", "<oov>"

    def __init__(self, max_words: int | None = None, min_count: int = 1, lower: bool = True,
                 keep_punctuation: bool = True):
        self.max_words = None if max_words is None else _validate.positive_int("max_words",
                                                                               max_words)
        self.min_count = _validate.positive_int("min_count", min_count)
        self.lower = bool(lower)
        self.keep_punctuation = bool(keep_punctuation)
        self._words = None           # ids 2.. once fitted
        self._index = None

    def tokenize(self, text: str) -> list:
        """:func:`tokenize` with this vocabulary's settings."""
        return tokenize(text, lower=self.lower, keep_punctuation=self.keep_punctuation)

    def fit(self, texts) -> "Vocabulary":
        """Count tokens in ``texts`` (a list of str; the training part only) and keep the top
        ``max_words``. Returns self."""
        counts = Counter()
        for text in _texts(texts):
            counts.update(self.tokenize(text))
        ranked = sorted((w for w, n in counts.items() if n >= self.min_count),
                        key=lambda w: (-counts[w], w))
        self._set_words(ranked[:self.max_words])
        return self

    def _set_words(self, words) -> None:
        self._words = list(words)
        self._index = {w: i for i, w in enumerate(self._words, start=2)}

    def _check_fitted(self) -> None:
        if self._words is None:
            raise RuntimeError("this Vocabulary is not fitted: call fit(train_texts) or "
                               "load_state_dict(state) first")

    @property
    def words(self) -> list:
        """Every token by id: ``['<pad>', '<oov>', most frequent word, ...]``."""
        self._check_fitted()
        return [self.PAD_TOKEN, self.OOV_TOKEN] + self._words

    def __len__(self) -> int:
        self._check_fitted()
        return len(self._words) + 2

    def encode(self, texts) -> list:
        """A list of id lists, one per text; unknown words become 1 (OOV)."""
        self._check_fitted()
        return [[self._index.get(t, self.OOV) for t in self.tokenize(text)]
                for text in _texts(texts)]

    def decode(self, sequences, skip_padding: bool = True) -> list:
        """Id sequences (lists or a 2-D array) back to space-joined token strings; padding (0)
        is left out unless ``skip_padding=False``, OOV shows as ``<oov>``."""
        words = self.words
        out = []
        for k, seq in enumerate(sequences):
            ids = np.asarray(seq)
            if ids.ndim != 1 or (ids.size and ids.dtype.kind not in "iu"):
                raise TypeError(f"sequences[{k}] must be a 1-D sequence of integer ids, got "
                                f"{seq!r}")
            bad = ids[(ids < 0) | (ids >= len(words))]
            if bad.size:
                raise ValueError(f"sequences[{k}] holds id {int(bad[0])}, outside "
                                 f"0..{len(words) - 1}")
            out.append(" ".join(words[i] for i in ids.tolist()
                                if not (skip_padding and i == self.PAD)))
        return out

    def state_dict(self) -> dict:
        """Plain data (str, int, bool, list of str) that rebuilds this vocabulary exactly."""
        self._check_fitted()
        return {"words": list(self._words), "max_words": self.max_words,
                "min_count": self.min_count, "lower": self.lower,
                "keep_punctuation": self.keep_punctuation}

    def load_state_dict(self, state) -> "Vocabulary":
        """Restore from :meth:`state_dict`'s output. Returns self."""
        if not isinstance(state, dict) or "words" not in state:
            raise ValueError("a Vocabulary state must be a dict with a 'words' list, got "
                             f"{type(state).__name__}")
        words = _texts(state["words"], "state['words']")
        if len(set(words)) != len(words):
            raise ValueError("state['words'] repeats a word")
        if self.PAD_TOKEN in words or self.OOV_TOKEN in words:
            raise ValueError("state['words'] must not contain the reserved '<pad>' or '<oov>'")
        self.__init__(max_words=state.get("max_words"), min_count=state.get("min_count", 1),
                      lower=state.get("lower", True),
                      keep_punctuation=state.get("keep_punctuation", True))
        self._set_words(words)
        return self

    def __repr__(self) -> str:
        size = "unfitted" if self._words is None else f"{len(self)} ids"
        return f"Vocabulary({size}, max_words={self.max_words})"


class CharVocabulary:
    """Character ids for a character-level model: the characters of the training text, sorted
    by code point, from id 1; id 0 is reserved for characters the training text did not have.

    ``encode`` maps an unseen character to 0 (so a user's prime text never fails), or raises
    with ``strict=True``; ``decode`` shows 0 as ``unknown_char`` (U+FFFD by default). The model
    never sees id 0 as a target, so it learns to give it almost no probability.

    >>> cv = CharVocabulary().fit("hello")
    >>> cv.chars, len(cv)
    (['e', 'h', 'l', 'o'], 5)
    >>> cv.encode("hole!").tolist(), cv.decode(cv.encode("hello"))
    ([2, 4, 3, 1, 0], 'hello')
    """
    UNK = 0

    def __init__(self, unknown_char: str = "\ufffd"):
        if not isinstance(unknown_char, str) or len(unknown_char) != 1:
            raise ValueError(f"unknown_char must be one character, got {unknown_char!r}")
        self.unknown_char = unknown_char
        self._chars = None
        self._index = None

    def fit(self, text: str) -> "CharVocabulary":
        """Learn the characters of ``text`` (one str, the training part). Returns self."""
        if not isinstance(text, str):
            raise TypeError(f"text must be a str, got {type(text).__name__}")
        if not text:
            raise ValueError("cannot fit a CharVocabulary on empty text")
        self._set_chars(sorted(set(text)))
        return self

    def _set_chars(self, chars) -> None:
        self._chars = list(chars)
        self._index = {c: i for i, c in enumerate(self._chars, start=1)}

    def _check_fitted(self) -> None:
        if self._chars is None:
            raise RuntimeError("this CharVocabulary is not fitted: call fit(train_text) or "
                               "load_state_dict(state) first")

    @property
    def chars(self) -> list:
        """The known characters; ``chars[i]`` has id ``i + 1``."""
        self._check_fitted()
        return list(self._chars)

    def __len__(self) -> int:
        self._check_fitted()
        return len(self._chars) + 1

    def encode(self, text: str, strict: bool = False) -> np.ndarray:
        """``text`` as an int64 array of ids, unseen characters 0 (or ValueError if strict)."""
        self._check_fitted()
        if not isinstance(text, str):
            raise TypeError(f"text must be a str, got {type(text).__name__}")
        ids = np.fromiter((self._index.get(c, self.UNK) for c in text), dtype=np.int64,
                          count=len(text))
        if strict and (ids == self.UNK).any():
            at = np.flatnonzero(ids == self.UNK)
            unseen = sorted({text[i] for i in at.tolist()})
            raise ValueError(f"{len(at)} character{'s' if len(at) > 1 else ''} not in the "
                             f"vocabulary, first at position {int(at[0])}: "
                             f"{', '.join(map(repr, unseen))}")
        return ids

    def decode(self, ids) -> str:
        """Ids (a 1-D sequence) back to text; 0 becomes ``unknown_char``."""
        self._check_fitted()
        ids = np.asarray(ids)
        if ids.ndim != 1 or (ids.size and ids.dtype.kind not in "iu"):
            raise TypeError(f"ids must be a 1-D sequence of integer ids, got shape {ids.shape} "
                            f"dtype {ids.dtype}")
        bad = ids[(ids < 0) | (ids > len(self._chars))]
        if bad.size:
            raise ValueError(f"id {int(bad[0])} is outside 0..{len(self._chars)}")
        table = [self.unknown_char] + self._chars
        return "".join(table[i] for i in ids.tolist())

    def state_dict(self) -> dict:
        """Plain data: ``{"chars": [...], "unknown_char": ...}``."""
        self._check_fitted()
        return {"chars": list(self._chars), "unknown_char": self.unknown_char}

    def load_state_dict(self, state) -> "CharVocabulary":
        """Restore from :meth:`state_dict`'s output. Returns self."""
        if not isinstance(state, dict) or "chars" not in state:
            raise ValueError("a CharVocabulary state must be a dict with a 'chars' list")
        chars = list(state["chars"])
        if any(not isinstance(c, str) or len(c) != 1 for c in chars):
            raise ValueError("state['chars'] must hold single characters")
        if len(set(chars)) != len(chars):
            raise ValueError("state['chars'] repeats a character")
        self.__init__(unknown_char=state.get("unknown_char", "\ufffd"))
        self._set_chars(chars)
        return self

    def __repr__(self) -> str:
        size = "unfitted" if self._chars is None else f"{len(self)} ids"
        return f"CharVocabulary({size})"


def pad_sequences(sequences, maxlen: int | None = None, dtype="int32", padding: str = "pre",
                  truncating: str = "pre", value=0) -> np.ndarray:
    """Pad (and cut) sequences to one length: Keras' ``pad_sequences``, same defaults.

    Returns (len(sequences), maxlen) of ``dtype`` (more trailing axes if the elements are
    vectors). ``maxlen=None`` uses the longest sequence. Longer sequences lose values at the
    start (``truncating="pre"``) or the end (``"post"``); shorter ones get ``value`` before
    (``padding="pre"``) or after (``"post"``). Empty sequences become all ``value``.

    >>> pad_sequences([[1], [2, 3], [4, 5, 6]]).tolist()
    [[0, 0, 1], [0, 2, 3], [4, 5, 6]]
    >>> pad_sequences([[1, 2, 3, 4], [5]], maxlen=2, padding="post", truncating="post").tolist()
    [[1, 2], [5, 0]]
    """
    if padding not in ("pre", "post"):
        raise ValueError(f'padding must be "pre" or "post", got {padding!r}')
    if truncating not in ("pre", "post"):
        raise ValueError(f'truncating must be "pre" or "post", got {truncating!r}')
    if isinstance(sequences, (str, bytes)) or not hasattr(sequences, "__len__"):
        raise TypeError(f"sequences must be a list of sequences, got {type(sequences).__name__}")
    lengths, sample_shape = [], None
    for k, seq in enumerate(sequences):
        if isinstance(seq, (str, bytes)) or not hasattr(seq, "__len__"):
            raise ValueError(f"sequences must be a list of sequences; sequences[{k}] is "
                             f"{seq!r}")
        lengths.append(len(seq))
        if sample_shape is None and len(seq):
            sample_shape = np.asarray(seq).shape[1:]
    sample_shape = sample_shape or ()
    if maxlen is None:
        maxlen = max(lengths, default=0)
    else:
        maxlen = _validate.positive_int("maxlen", maxlen)
    dtype = np.dtype(dtype)
    if isinstance(value, str) and dtype.kind not in "OUS":
        raise ValueError(f"value is a string ({value!r}) but dtype is {dtype}; use a string "
                         f"or object dtype")
    out = np.full((len(lengths), maxlen) + tuple(sample_shape), value, dtype=dtype)
    for k, seq in enumerate(sequences):
        if not len(seq):
            continue
        kept = seq[-maxlen:] if truncating == "pre" else seq[:maxlen]
        kept = np.asarray(kept, dtype=dtype)
        if kept.shape[1:] != tuple(sample_shape):
            raise ValueError(f"sequences[{k}] has elements of shape {kept.shape[1:]}, but the "
                             f"first non-empty sequence has {tuple(sample_shape)}")
        if padding == "post":
            out[k, :len(kept)] = kept
        else:
            out[k, maxlen - len(kept):] = kept
    return out


def stratified_split(labels, fractions=(0.8, 0.1, 0.1), seed=0) -> tuple:
    """Index arrays that split the samples in ``fractions``, keeping each class's proportion.

    Each class is shuffled (``seed``) and cut in the given fractions, rounded by largest
    remainder so the class is used up exactly (equal remainders go to the part that is furthest
    behind its share so far); so every part's class proportions match the whole's to within one
    sample per class, and its size is close to ``fraction * len(labels)``. Returns one sorted
    int64 index array per fraction (together a partition of ``range(len(labels))``).
    ``fractions`` are positive and sum to 1; a part that would come out empty is an error.

    >>> labels = [0] * 80 + [1] * 20
    >>> train, val, test = stratified_split(labels, (0.8, 0.1, 0.1), seed=0)
    >>> len(train), len(val), len(test), int(sum(labels[i] for i in test))
    (80, 10, 10, 2)
    """
    labels = np.asarray(labels)
    if labels.ndim != 1:
        raise ValueError(f"labels must be 1-D (one label per sample), got shape {labels.shape}")
    fractions = np.asarray(fractions, dtype=np.float64)
    if fractions.ndim != 1 or fractions.size < 2 or np.any(~(fractions > 0)):
        raise ValueError(f"fractions must be two or more positive numbers, got "
                         f"{np.asarray(fractions).tolist()}")
    if abs(fractions.sum() - 1.0) > 1e-6:
        raise ValueError(f"fractions must sum to 1, got {fractions.tolist()} (sum "
                         f"{fractions.sum():g})")
    rng = _validate.rng(seed)
    parts = [[] for _ in fractions]
    surplus = np.zeros(fractions.size)          # samples each part has beyond its exact share
    for cls in np.unique(labels):
        members = np.flatnonzero(labels == cls)
        members = members[rng.permutation(members.size)]
        exact = fractions * members.size
        counts = np.floor(exact).astype(np.int64)
        short = members.size - counts.sum()
        # the leftover samples go to the largest remainders; equal remainders (common: 0.1 and
        # 0.1) go to the part furthest behind its share so far, so no part is always favoured
        order = np.lexsort((np.arange(fractions.size), surplus,
                            -np.round(exact - counts, 9)))
        counts[order[:short]] += 1
        surplus += counts - exact
        for part, piece in zip(parts, np.split(members, np.cumsum(counts)[:-1])):
            part.append(piece)
    out = tuple(np.sort(np.concatenate(p)).astype(np.int64) if p else np.zeros(0, np.int64)
                for p in parts)
    for k, part in enumerate(out):
        if part.size == 0:
            raise ValueError(f"fractions[{k}] = {fractions[k]:g} gives an empty part with "
                             f"{labels.size} samples; use more data or a larger fraction")
    return out
