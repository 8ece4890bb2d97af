"""Tokenizer, vocabularies, Keras-exact pad_sequences and stratified splits."""
import itertools
import json

import numpy as np
import pytest

from elman.data import (CharVocabulary, Vocabulary, load_hamlet, pad_sequences,
                        stratified_split, tokenize)


# --------------------------------------------------------------------------- tokenize

def test_tokenize_lowercases_and_splits_punctuation():
    assert tokenize("Hello, World!") == ["hello", ",", "world", "!"]
    assert tokenize("It's 2 o'clock... isn't it?") == [
        "it's", "2", "o'clock", ".", ".", ".", "isn't", "it", "?"]
    assert tokenize("We\u2019ve seen co writer/director") == [
        "we\u2019ve", "seen", "co", "writer", "/", "director"]
    assert tokenize("Café  déjà-vu\tnaïve\n") == ["café", "déjà", "-", "vu", "naïve"]
    assert tokenize("") == [] and tokenize(" \n ") == []


def test_tokenize_options():
    assert tokenize("Hello, World!", lower=False) == ["Hello", ",", "World", "!"]
    assert tokenize("a 'quoted' word_x!", keep_punctuation=False) == ["a", "quoted", "word_x"]
    with pytest.raises(TypeError, match="text must be a str, got list"):
        tokenize(["a list"])


# --------------------------------------------------------------------------- Vocabulary

TEXTS = ["the cat sat on the mat", "the dog sat", "a cat!", "the end"]


def test_vocabulary_ids_frequency_and_reserved():
    v = Vocabulary().fit(TEXTS)
    # the 4, cat 2, sat 2, then count-1 words alphabetically ('!' sorts first)
    assert v.words == ["<pad>", "<oov>", "the", "cat", "sat", "!", "a", "dog", "end", "mat", "on"]
    assert len(v) == 11
    assert v.encode(["The cat ate the mat."]) == [[2, 3, 1, 2, 9, 1]]
    assert v.decode([[0, 0, 2, 3, 1]]) == ["the cat <oov>"]
    assert v.decode(np.array([[0, 2]]), skip_padding=False) == ["<pad> the"]


def test_vocabulary_does_not_depend_on_text_order():
    words = Vocabulary().fit(TEXTS).words
    for perm in itertools.permutations(TEXTS):
        assert Vocabulary().fit(list(perm)).words == words


def test_vocabulary_max_words_and_min_count():
    v = Vocabulary(max_words=2).fit(TEXTS)
    assert v.words == ["<pad>", "<oov>", "the", "cat"] and len(v) == 4
    assert v.encode(["the sat"]) == [[2, 1]]
    assert Vocabulary(min_count=2).fit(TEXTS).words[2:] == ["the", "cat", "sat"]
    assert Vocabulary(keep_punctuation=False).fit(["a cat!"]).words[2:] == ["a", "cat"]
    with pytest.raises(ValueError, match="max_words must be an integer >= 1, got 0"):
        Vocabulary(max_words=0)


def test_vocabulary_state_dict_round_trip_through_json():
    v = Vocabulary(max_words=5, lower=False).fit(TEXTS + ["The"])
    state = json.loads(json.dumps(v.state_dict()))
    w = Vocabulary().load_state_dict(state)
    assert w.words == v.words and w.lower is False and w.max_words == 5
    assert w.encode(["The the"]) == v.encode(["The the"])


def test_vocabulary_errors():
    with pytest.raises(RuntimeError, match="not fitted"):
        Vocabulary().encode(["x"])
    with pytest.raises(TypeError, match="must be a list of strings, got one string"):
        Vocabulary().fit("the cat")
    v = Vocabulary().fit(TEXTS)
    with pytest.raises(TypeError, match=r"texts\[1\] must be a str, got int"):
        v.encode(["ok", 3])
    with pytest.raises(ValueError, match="holds id 99, outside 0..10"):
        v.decode([[2, 99]])
    with pytest.raises(ValueError, match="repeats a word"):
        Vocabulary().load_state_dict({"words": ["a", "a"]})
    with pytest.raises(ValueError, match="reserved"):
        Vocabulary().load_state_dict({"words": ["<oov>"]})
    with pytest.raises(ValueError, match="'words' list"):
        Vocabulary().load_state_dict(["a"])


# --------------------------------------------------------------------------- pad_sequences

SEQ = [[1], [2, 3], [4, 5, 6]]


def test_pad_sequences_keras_documentation_examples():
    # the examples of keras.utils.pad_sequences' docstring, outputs copied from there
    assert pad_sequences(SEQ).tolist() == [[0, 0, 1], [0, 2, 3], [4, 5, 6]]
    assert pad_sequences(SEQ).dtype == np.int32
    assert pad_sequences(SEQ, value=-1).tolist() == [[-1, -1, 1], [-1, 2, 3], [4, 5, 6]]
    assert pad_sequences(SEQ, padding="post").tolist() == [[1, 0, 0], [2, 3, 0], [4, 5, 6]]
    assert pad_sequences(SEQ, maxlen=2).tolist() == [[0, 1], [2, 3], [5, 6]]


def test_pad_sequences_truncation_and_padding_combinations():
    seqs = [[1, 2, 3, 4, 5], [6, 7]]
    assert pad_sequences(seqs, maxlen=3, truncating="pre").tolist() == [[3, 4, 5], [0, 6, 7]]
    assert pad_sequences(seqs, maxlen=3, truncating="post").tolist() == [[1, 2, 3], [0, 6, 7]]
    assert pad_sequences(seqs, maxlen=3, padding="post", truncating="post").tolist() == [
        [1, 2, 3], [6, 7, 0]]
    assert pad_sequences(seqs, maxlen=6, padding="post").tolist() == [
        [1, 2, 3, 4, 5, 0], [6, 7, 0, 0, 0, 0]]


def _reference(seqs, maxlen, padding, truncating, value):
    """The documented rule, written with plain lists."""
    if maxlen is None:
        maxlen = max((len(s) for s in seqs), default=0)
    out = []
    for s in seqs:
        s = list(s)
        if len(s) > maxlen:
            s = s[len(s) - maxlen:] if truncating == "pre" else s[:maxlen]
        fill = [value] * (maxlen - len(s))
        out.append(fill + s if padding == "pre" else s + fill)
    return out


def test_pad_sequences_matches_the_rule_on_random_cases():
    rng = np.random.default_rng(0)
    for _ in range(200):
        seqs = [rng.integers(1, 50, rng.integers(0, 8)).tolist() for _ in range(rng.integers(1, 5))]
        maxlen = None if rng.random() < 0.3 else int(rng.integers(1, 9))
        padding, truncating = rng.choice(["pre", "post"], 2)
        got = pad_sequences(seqs, maxlen=maxlen, padding=padding, truncating=truncating, value=-7)
        assert got.tolist() == _reference(seqs, maxlen, padding, truncating, -7)


def test_pad_sequences_edge_cases():
    assert pad_sequences([[], [1, 2]]).tolist() == [[0, 0], [1, 2]]
    assert pad_sequences([]).shape == (0, 0)
    assert pad_sequences([[], []], maxlen=2).tolist() == [[0, 0], [0, 0]]
    arrays = [np.array([1, 2, 3]), np.array([4])]
    assert pad_sequences(arrays, maxlen=2).tolist() == [[2, 3], [0, 4]]
    floats = pad_sequences([[0.5, 1.5], [2.5]], dtype="float32", value=np.nan)
    assert floats.dtype == np.float32 and np.isnan(floats[1, 0]) and floats[1, 1] == 2.5
    vectors = pad_sequences([[[1, 1], [2, 2]], [[3, 3]]], dtype="float64", padding="post")
    assert vectors.shape == (2, 2, 2) and vectors[1].tolist() == [[3, 3], [0, 0]]
    words = pad_sequences([["a", "b"], ["c"]], dtype=object, value="<pad>")
    assert words.tolist() == [["a", "b"], ["<pad>", "c"]]


def test_pad_sequences_errors():
    with pytest.raises(ValueError, match='padding must be "pre" or "post", got \'left\''):
        pad_sequences(SEQ, padding="left")
    with pytest.raises(ValueError, match="truncating must be"):
        pad_sequences(SEQ, truncating="middle")
    with pytest.raises(ValueError, match="maxlen must be an integer >= 1, got 0"):
        pad_sequences(SEQ, maxlen=0)
    with pytest.raises(ValueError, match=r"sequences\[1\] is 5"):
        pad_sequences([[1], 5])
    with pytest.raises(ValueError, match="value is a string"):
        pad_sequences(SEQ, value="x")
    with pytest.raises(ValueError, match=r"sequences\[1\] has elements of shape \(3,\)"):
        pad_sequences([[[1, 1]], [[1, 2, 3]]])
    with pytest.raises(TypeError, match="sequences must be a list of sequences"):
        pad_sequences("abc")


# --------------------------------------------------------------------------- CharVocabulary

def test_char_vocabulary_ids_and_unseen_characters():
    cv = CharVocabulary().fit("banana bread")
    assert cv.chars == [" ", "a", "b", "d", "e", "n", "r"] and len(cv) == 8
    ids = cv.encode("bad zebra")
    assert ids.dtype == np.int64
    assert ids.tolist() == [3, 2, 4, 1, 0, 5, 3, 7, 2]           # 'z' unseen -> 0
    assert cv.decode(ids) == "bad \ufffdebra"
    assert CharVocabulary(unknown_char="?").fit("ab").decode(
        CharVocabulary().fit("ab").encode("abc")) == "ab?"
    with pytest.raises(ValueError, match=r"2 characters not in the vocabulary, first at "
                                         r"position 4: 'Z', 'z'"):
        cv.encode("bad zeZbra", strict=True)


def test_char_vocabulary_round_trip_on_hamlet_and_state():
    text = load_hamlet()
    cut = int(0.9 * len(text))
    cv = CharVocabulary().fit(text[:cut])
    assert cv.decode(cv.encode(text[:cut])) == text[:cut]
    ids = cv.encode(text[cut:])
    unseen = {c for c in text[cut:] if c not in cv.chars}
    assert (ids == 0).sum() == sum(c in unseen for c in text[cut:])
    state = json.loads(json.dumps(cv.state_dict()))
    again = CharVocabulary().load_state_dict(state)
    np.testing.assert_array_equal(again.encode(text[cut:]), ids)


def test_char_vocabulary_errors():
    with pytest.raises(RuntimeError, match="not fitted"):
        CharVocabulary().encode("a")
    with pytest.raises(ValueError, match="empty text"):
        CharVocabulary().fit("")
    with pytest.raises(TypeError, match="text must be a str"):
        CharVocabulary().fit(["a"])
    cv = CharVocabulary().fit("ab")
    with pytest.raises(ValueError, match="id 3 is outside 0..2"):
        cv.decode([1, 3])
    with pytest.raises(TypeError, match="1-D sequence of integer ids"):
        cv.decode([[1]])
    with pytest.raises(ValueError, match="one character"):
        CharVocabulary(unknown_char="??")
    with pytest.raises(ValueError, match="repeats a character"):
        CharVocabulary().load_state_dict({"chars": ["a", "a"]})


# --------------------------------------------------------------------------- stratified_split

def test_stratified_split_keeps_class_proportions():
    rng = np.random.default_rng(1)
    labels = rng.choice(["neg", "pos", "mixed"], size=1003, p=[0.6, 0.3, 0.1])
    parts = stratified_split(labels, (0.8, 0.1, 0.1), seed=3)
    joined = np.concatenate(parts)
    assert sorted(joined.tolist()) == list(range(1003))             # a partition
    for part in parts:
        assert part.dtype == np.int64 and (np.diff(part) > 0).all()  # sorted, no repeats
    for cls in ("neg", "pos", "mixed"):
        n = (labels == cls).sum()
        for part, frac in zip(parts, (0.8, 0.1, 0.1)):
            assert abs((labels[part] == cls).sum() - frac * n) < 1
    assert [len(p) for p in parts] == pytest.approx([802, 100, 100], abs=3)


def test_stratified_split_is_seeded():
    labels = np.repeat([0, 1], [70, 30])
    a = stratified_split(labels, seed=0)
    b = stratified_split(labels, seed=0)
    c = stratified_split(labels, seed=1)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not np.array_equal(a[2], c[2])
    train, test = stratified_split(labels, (0.75, 0.25))
    assert len(train) == 75 and (labels[test] == 1).sum() == 8       # 7.5 -> 8 (largest remainder)


def test_stratified_split_errors():
    with pytest.raises(ValueError, match="must sum to 1"):
        stratified_split([0, 1] * 10, (0.8, 0.1))
    with pytest.raises(ValueError, match="two or more positive numbers"):
        stratified_split([0, 1] * 10, (1.1, -0.1))
    with pytest.raises(ValueError, match="two or more positive numbers"):
        stratified_split([0, 1] * 10, (1.0,))
    with pytest.raises(ValueError, match="labels must be 1-D"):
        stratified_split([[0, 1]])
    with pytest.raises(ValueError, match=r"fractions\[1\] = 0.1 gives an empty part with 4 "):
        stratified_split([0, 0, 1, 1], (0.8, 0.1, 0.1))
