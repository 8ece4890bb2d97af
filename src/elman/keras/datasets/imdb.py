"""``imdb.load_data``: the IMDB reviews as word-id lists, with Keras' arguments and conventions.

The reviews come from the Stanford archive (aclImdb v1), downloaded once into elman's cache
with a SHA-256 check by :func:`elman.data.download_imdb`; ``URL`` and ``SHA256`` below say
where from and what it must hash to (a test points them at a small archive of its own).

Word ids follow Keras: a word's id is its frequency rank (1 = most frequent) plus
``index_from``; 0 is padding, ``start_char`` (1) opens every review, ``oov_char`` (2) stands for
a word outside ``[skip_top, num_words)``. Keras ships reviews tokenised by its authors; here
they are tokenised with :func:`elman.data.tokenize` (lower case, punctuation dropped) and ranked
by their counts in the **training** reviews only, so the test set does not shape the vocabulary
(a test word never seen in training is out of vocabulary). The ids therefore differ from
Keras' file, the meaning of every argument does not.
"""
from __future__ import annotations

from collections import Counter

import numpy as np

from ... import _validate
from ...data import download as _download
from ...data.text import tokenize

__all__ = ["load_data", "get_word_index", "URL", "SHA256"]

URL = _download.IMDB_URL
SHA256 = _download.IMDB_SHA256


def _reviews(path):
    return _download.download_imdb(path, url=URL, sha256=SHA256)


def _words(texts) -> list:
    return [tokenize(text, keep_punctuation=False) for text in texts]


def _ranks(documents) -> dict:
    """word -> frequency rank (1 = most frequent; ties alphabetical) over lists of words."""
    counts = Counter()
    for words in documents:
        counts.update(words)
    ranked = sorted(counts, key=lambda w: (-counts[w], w))
    return {w: k for k, w in enumerate(ranked, start=1)}


def get_word_index(path=None) -> dict:
    """``{word: rank}`` (1 = most frequent in the training reviews), as Keras'; a word's id in
    :func:`load_data` is its rank + ``index_from``. ``path``: the cache directory."""
    return _ranks(_words(_reviews(path)[0]))


def _object_array(lists) -> np.ndarray:
    out = np.empty(len(lists), dtype=object)
    out[:] = lists
    return out


def load_data(path=None, num_words=None, skip_top=0, maxlen=None, seed=113, start_char=1,
              oov_char=2, index_from=3):
    """``(x_train, y_train), (x_test, y_test)``: 25,000 reviews each as lists of word ids
    (object arrays; pad them with ``pad_sequences``), labels 1 positive / 0 negative (int64),
    each split shuffled with ``seed``.

    ``num_words``: keep the ids below it (the ``num_words - index_from`` most frequent words);
    ``skip_top``: ids below it become ``oov_char`` too; ``maxlen``: drop reviews of ``maxlen``
    words or more; ``oov_char=None`` drops out-of-vocabulary words instead. ``path``: the cache
    directory (default: :func:`elman.data.default_cache_dir`).
    """
    for name, value in (("num_words", num_words), ("maxlen", maxlen)):
        if value is not None:
            _validate.positive_int(name, value)
    skip_top = _validate.positive_int("skip_top", skip_top, minimum=0)
    index_from = _validate.positive_int("index_from", index_from, minimum=0)
    train_texts, train_labels, test_texts, test_labels = _reviews(path)
    train_words, test_words = _words(train_texts), _words(test_texts)
    ranks = _ranks(train_words)
    unknown = -1                                  # a test word never seen in training

    def encode(words):
        ids = [ranks.get(w, unknown) for w in words]
        return [w if w == unknown else w + index_from for w in ids]

    rng = np.random.RandomState(seed)             # Keras' shuffle, split by split
    splits = []
    for texts, labels in ((train_words, train_labels), (test_words, test_labels)):
        order = np.arange(len(texts))
        rng.shuffle(order)
        xs = [encode(texts[i]) for i in order]
        if start_char is not None:
            xs = [[start_char] + x for x in xs]
        ys = np.asarray(labels)[order]
        if maxlen:
            keep = [k for k, x in enumerate(xs) if len(x) < maxlen]
            if not keep:
                raise ValueError(f"maxlen={maxlen} leaves no review; increase it")
            xs, ys = [xs[k] for k in keep], ys[keep]
        splits.append((xs, ys))
    limit = num_words if num_words else max(max(x, default=0) for xs, _ in splits for x in xs) + 1
    out = []
    for xs, ys in splits:
        if oov_char is not None:
            xs = [[w if skip_top <= w < limit else oov_char for w in x] for x in xs]
        else:
            xs = [[w for w in x if skip_top <= w < limit] for x in xs]
        out.append((_object_array(xs), ys.astype(np.int64)))
    return tuple(out)
