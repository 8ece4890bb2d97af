"""Edit distance, WER/PER with several references, corpus BLEU; the letters-in-context
baseline; the pair-data helpers (vocabulary, split by source, batches)."""
import itertools
import math

import numpy as np
import pytest

from elman.data.pairs import (SymbolVocabulary, bucket_batches, group_pairs, make_batch,
                              read_pairs, split_by_source)
from elman.lettercontext import LetterContext, select_width
from elman.seqscores import corpus_bleu, edit_distance, error_rates


def _brute_distance(a, b):
    """The edit distance by exhaustive recursion (tiny inputs only)."""
    if not a:
        return len(b)
    if not b:
        return len(a)
    return min(_brute_distance(a[1:], b) + 1, _brute_distance(a, b[1:]) + 1,
               _brute_distance(a[1:], b[1:]) + (a[0] != b[0]))


def test_edit_distance_against_exhaustive_recursion():
    rng = np.random.default_rng(0)
    for _ in range(200):
        a = rng.integers(0, 3, rng.integers(0, 6)).tolist()
        b = rng.integers(0, 3, rng.integers(0, 6)).tolist()
        assert edit_distance(a, b) == _brute_distance(a, b)


def test_error_rates_use_the_closest_reference():
    hyps = [("R", "IY", "D"), ("R", "EH", "D", "Z"), ("K", "AE")]
    refs = [[("R", "EH", "D"), ("R", "IY", "D")], [("R", "EH", "D")], [("K", "AE", "T")]]
    out = error_rates(hyps, refs)
    assert out["wer"] == pytest.approx(2 / 3)
    assert out["per"] == pytest.approx((0 + 1 + 1) / (3 + 3 + 3))
    with pytest.raises(ValueError, match="as many"):
        error_rates(hyps, refs[:2])
    with pytest.raises(ValueError, match=r"references\[0\] holds no reference"):
        error_rates(hyps[:1], [[]])


def test_corpus_bleu_by_hand():
    hyp = "the the cat sat on mat".split()
    ref = "the cat sat on the mat".split()
    # clipped n-gram matches by hand: 1-grams 6/6 (the x2, cat, sat, on, mat), 2-grams 3/5
    # (the cat, cat sat, sat on), 3-grams 2/4, 4-grams 1/3; equal lengths: no brevity penalty
    expected = math.exp((math.log(6 / 6) + math.log(3 / 5) + math.log(2 / 4)
                         + math.log(1 / 3)) / 4)
    assert corpus_bleu([hyp], [[ref]]) == pytest.approx(expected)
    # a short hypothesis: brevity penalty exp(1 - 6/4), precisions 4/4, 3/3, 2/2, 1/1
    assert corpus_bleu([ref[:4]], [[ref]]) == pytest.approx(math.exp(1 - 6 / 4))
    # corpus-level: counts are summed before dividing, not averaged per sentence
    two = corpus_bleu([hyp, ref], [[ref], [ref]])
    both = math.exp((math.log(12 / 12) + math.log(8 / 10) + math.log(6 / 8)
                     + math.log(4 / 6)) / 4)
    assert two == pytest.approx(both)
    assert corpus_bleu([["a", "b"]], [[["c", "d"]]]) == 0.0


def test_symbol_vocabulary_round_trip_and_unknowns():
    v = SymbolVocabulary().fit([("b", "a"), ("c",)])
    assert v.symbols == ["<pad>", "<s>", "</s>", "<unk>", "a", "b", "c"]
    assert v.encode(("a", "z")) == [4, SymbolVocabulary.UNK]
    assert v.decode([1, 5, 4, 2, 6]) == ("b", "a")
    again = SymbolVocabulary().load_state_dict(v.state_dict())
    assert again.symbols == v.symbols
    with pytest.raises(ValueError, match="reserved"):
        SymbolVocabulary().fit([("<s>",)])
    with pytest.raises(RuntimeError, match="not fitted"):
        SymbolVocabulary().encode(("a",))


def test_split_keeps_each_source_on_one_side_and_is_seeded():
    data = group_pairs([((str(i),), (str(i % 7),)) for i in range(100)]
                       + [(("3",), ("x",)), (("50",), ("y",))])
    tr, va, te = split_by_source(data, (0.8, 0.1, 0.1), seed=1)
    assert (len(tr), len(va), len(te)) == (80, 10, 10)
    sources = [s for part in (tr, va, te) for s, _ in part]
    assert len(set(sources)) == 100
    assert dict(tr + va + te)[("3",)] == [("3",), ("x",)]
    assert split_by_source(data, (0.8, 0.1, 0.1), seed=1) == (tr, va, te)
    assert split_by_source(data, (0.8, 0.1, 0.1), seed=2) != (tr, va, te)


def test_make_batch_and_buckets():
    b = make_batch([[5, 6, 7], [8]], [[9], [10, 11]])
    np.testing.assert_array_equal(b["src"], [[5, 6, 7], [8, 0, 0]])
    np.testing.assert_array_equal(b["tgt_in"], [[1, 9, 0], [1, 10, 11]])
    np.testing.assert_array_equal(b["tgt_out"], [[9, 2, 0], [10, 11, 2]])
    np.testing.assert_array_equal(b["tgt_lengths"], [2, 3])
    lengths = np.random.default_rng(0).integers(1, 9, 50)
    batches = bucket_batches(lengths, 8, np.random.default_rng(1))
    assert sorted(np.concatenate(batches).tolist()) == list(range(50))
    assert all(len(b) <= 8 for b in batches)
    spans = [np.ptp(lengths[b]) for b in bucket_batches(lengths, 8)]
    assert max(spans) <= 2                 # sorted: similar lengths share a batch


def test_read_pairs_levels_and_errors(tmp_path):
    path = tmp_path / "p.txt"
    path.write_text("Go.\tVa !\tCC-BY 2.0\n\nGo.\tMarche.\nHi.\tSalut !\n", encoding="utf-8")
    words = read_pairs(str(path), level="word")
    assert words == [(("Go.",), [("Va", "!"), ("Marche.",)]), (("Hi.",), [("Salut", "!")])]
    chars = read_pairs(str(path), level="char", lower=True)
    assert chars[1] == (tuple("hi."), [tuple("salut !")])
    path.write_text("no tab here\n", encoding="utf-8")
    with pytest.raises(ValueError, match="line 1"):
        read_pairs(str(path))


def test_letter_context_learns_a_consistent_rule_and_selects_on_validation():
    # a toy orthography: 'x' -> K S, 'e' at the end is silent, 'c' before 'i' is S else K
    def pron(word):
        out = []
        for i, ch in enumerate(word):
            if ch == "x":
                out += ["K", "S"]
            elif ch == "e" and i == len(word) - 1:
                continue
            elif ch == "c":
                out.append("S" if word[i + 1:i + 2] == "i" else "K")
            else:
                out.append(ch.upper())
        return tuple(out)
    letters = "acixe"
    words = ["".join(p) for n in (2, 3, 4) for p in itertools.product(letters, repeat=n)]
    rng = np.random.default_rng(0)
    rng.shuffle(words)
    data = [(tuple(w), [pron(w)]) for w in words]
    train, val, test = data[:400], data[400:500], data[500:]
    model = LetterContext(max_width=2).fit([(s, t[0]) for s, t in train])
    width, table = select_width(model, val)
    assert width >= 1 and table[width]["wer"] <= table[0]["wer"]
    hyps = [model.predict(s, width) for s, _ in test]
    assert error_rates(hyps, [t for _, t in test])["wer"] < 0.05
    assert model.predict(tuple("xe")) == ("K", "S")
