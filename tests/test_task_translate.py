"""`elman translate` end to end on tiny settings: a CMUdict subset (files, metrics schema, the
word-level split rule, --predict, --resume), --pairs at word level with BLEU, and the errors."""
import csv
import json
import os

import numpy as np
import pytest

import elman
from elman.cli import main
from elman.data.datasets import load_cmudict
from elman.tasks import translate

TINY = ["translate", "--max-pairs", "240", "--hidden", "12", "--embedding", "8",
        "--batch-size", "32", "--beam", "3", "--quiet", "--val-fraction", "0.1",
        "--test-fraction", "0.1"]


def _run(tmp_path, *extra, name="run"):
    out = str(tmp_path / name)
    assert main(TINY + ["--out", out, *extra]) == 0
    return out


def test_cmudict_subset_end_to_end(tmp_path, capsys):
    out = _run(tmp_path, "--epochs", "2")
    for f in ("model.npz", "last.npz", "history.csv", "metrics.json", "curves.png",
              "translate_attention.png", "translate_length.png"):
        assert os.path.exists(os.path.join(out, f)), f
    with open(os.path.join(out, "metrics.json")) as f:
        m = json.load(f)
    assert set(m) == {"model", "baselines", "config"}
    for scores in (m["model"], m["model"]["greedy"], m["model"]["beam"],
                   m["baselines"]["letter_context"]):
        assert 0 <= scores["wer"] <= 1 and scores["per"] >= 0
    assert m["model"]["wer"] == m["model"]["beam"]["wer"]
    assert m["config"]["test_sources"] == 24 and m["config"]["epochs_trained"] == 2
    with open(os.path.join(out, "history.csv")) as f:
        assert [int(r["epoch"]) for r in csv.DictReader(f)] == [1, 2]
    # the saved model predicts on its own, with its vocabularies
    capsys.readouterr()
    assert main(["translate", "--out", out, "--predict", "gnocchi", "Elman"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert [line.split("\t")[0] for line in lines] == ["gnocchi", "Elman"]
    model = elman.load(os.path.join(out, "model.npz"))
    assert isinstance(model, elman.Seq2Seq)


@pytest.fixture(scope="module")
def tiny_pairs(tmp_path_factory):
    """200 CMUdict words as a --pairs file (character level): no dictionary to load."""
    lexicon = load_cmudict()
    words = [w for w in list(lexicon)[5000:5400] if w.isalpha()][:200]
    path = tmp_path_factory.mktemp("pairs") / "g2p.txt"
    path.write_text("".join(f"{w}\t{''.join(p[0] for p in lexicon[w][0])}\n" for w in words),
                    encoding="utf-8")
    return str(path)


def test_resume_continues_to_the_same_weights(tmp_path, tiny_pairs):
    def run(name, epochs, *extra):
        out = str(tmp_path / name)
        assert main(TINY + ["--pairs", tiny_pairs, "--out", out, "--epochs", epochs,
                            *extra]) == 0
        return out
    # the plateau schedule: the cosine one decays over --epochs (or --minutes), which differ
    # between a run of 2 epochs and one of 1 resumed to 2
    straight = run("straight", "2", "--schedule", "plateau")
    part = run("part", "1", "--schedule", "plateau")
    run("part", "2", "--resume", "--schedule", "plateau")
    a = elman.load(os.path.join(straight, "last.npz"))
    b = elman.load(os.path.join(part, "last.npz"))
    for (name, p), (_, q) in zip(a.named_parameters(), b.named_parameters()):
        np.testing.assert_array_equal(p.data, q.data, err_msg=name)
    with open(os.path.join(part, "history.csv")) as f:
        assert len(list(csv.DictReader(f))) == 2


def test_cosine_schedule_decays_over_the_epochs_without_a_budget(tmp_path, tiny_pairs):
    out = str(tmp_path / "cos")
    assert main(TINY + ["--pairs", tiny_pairs, "--out", out, "--epochs", "3", "--minutes", "0",
                        "--patience", "0", "--lr", "0.01"]) == 0
    with open(os.path.join(out, "history.csv")) as f:
        lrs = [float(r["lr"]) for r in csv.DictReader(f)]
    assert lrs[0] > lrs[1] > lrs[2] >= 0.01 * 0.02        # down to 2 % of --lr at the end
    assert lrs[2] < 0.01 * 0.1


def test_minutes_bounds_the_whole_run_and_resume_reads_the_baseline_back(tmp_path, tiny_pairs,
                                                                         capsys):
    """A budget already spent when training starts (data and baseline used it) stops after
    the first batch, and the run still ends with the test scores, a model and its files;
    --resume reads the baseline back instead of fitting it again."""
    out = str(tmp_path / "short")
    assert main(TINY + ["--pairs", tiny_pairs, "--out", out, "--epochs", "5",
                        "--minutes", "0.0001"]) == 0
    with open(os.path.join(out, "metrics.json")) as f:
        m = json.load(f)
    assert m["config"]["stopped_by"] == "minutes" and m["config"]["epochs_trained"] == 1
    assert os.path.exists(os.path.join(out, "model.npz"))
    with open(os.path.join(out, "history.csv")) as f:
        assert len(list(csv.DictReader(f))) == 1
    capsys.readouterr()
    assert main(TINY + ["--pairs", tiny_pairs, "--out", out, "--epochs", "2", "--minutes", "0",
                        "--resume"]) == 0
    assert "baselines read back" in capsys.readouterr().out
    with open(os.path.join(out, "metrics.json")) as f:
        again = json.load(f)
    assert again["baselines"] == m["baselines"]
    assert again["config"]["epochs_trained"] == 2


def test_split_keeps_all_pronunciations_of_a_word_together():
    class A:
        pairs, level, lower, max_pairs, seed = None, "char", False, None, 0
        val_fraction, test_fraction = 0.05, 0.1
    data, _, _ = translate.load_data(A())
    train, val, test = translate.split(data, A())
    words = [s for part in (train, val, test) for s, _ in part]
    assert len(words) == len(set(words)) == len(data)
    lexicon = load_cmudict()
    word = next(s for s, ts in test if len(ts) > 1)
    assert dict(test)[word] == lexicon["".join(word)]


def test_pairs_at_word_level_with_bleu(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "pairs.txt"
    words = ["red", "blue", "cat", "dog", "big", "small"]
    french = {"red": "rouge", "blue": "bleu", "cat": "chat", "dog": "chien", "big": "grand",
              "small": "petit"}
    lines = []
    for _ in range(120):
        s = [words[i] for i in rng.integers(0, 6, 3)]
        lines.append(" ".join(s) + "\t" + " ".join(french[w] for w in s) + "\tCC-BY 2.0")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    out = str(tmp_path / "fr")
    assert main(["translate", "--pairs", str(path), "--level", "word", "--hidden", "8",
                 "--embedding", "6", "--epochs", "1", "--quiet", "--out", out,
                 "--val-fraction", "0.2", "--test-fraction", "0.2"]) == 0
    with open(os.path.join(out, "metrics.json")) as f:
        m = json.load(f)
    assert 0 <= m["model"]["bleu"] <= 1
    assert "bleu" in m["baselines"]["lookup_or_copy"]


@pytest.mark.parametrize("argv,message", [
    (["--level", "word"], "--level word needs --pairs"),
    (["--max-pairs", "3"], "--max-pairs must be at least 10"),
    (["--val-fraction", "0.6", "--test-fraction", "0.5"], "must be below 1"),
    (["--beam", "0"], "--beam must be a positive integer"),
    (["--recurrent-dropout", "0.2"], "--recurrent-dropout is not available"),
    (["--pairs", "/no/such/file"], "--pairs: no such file"),
])
def test_bad_options_end_with_one_clear_error(tmp_path, argv, message):
    with pytest.raises(SystemExit, match=message):
        main(["translate", "--out", str(tmp_path / "x"), *argv])


def test_predict_without_a_model(tmp_path):
    with pytest.raises(SystemExit, match="no model at"):
        main(["translate", "--out", str(tmp_path / "none"), "--predict", "word"])
