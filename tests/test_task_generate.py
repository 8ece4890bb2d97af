"""`elman generate`: scoring, sampling, and the command end to end on a tiny setting (files
written, metrics schema, --sample, --resume, the time budget, the user's text). The stateful
truncated-BPTT training itself is the library's: tests/test_stateful.py."""
import csv
import json
import math
import os
import time

import numpy as np
import pytest

import elman
from _checkpoint_files import with_extra
from elman.cli import main
from elman.data.text import CharVocabulary
from elman.tasks import generate as gen

TINY = ["generate", "--max-chars", "3000", "--hidden", "12", "--embedding", "8",
        "--batch-size", "4", "--bptt", "16", "--length", "30", "--quiet"]


def _run(tmp_path, *extra, name="run"):
    out = str(tmp_path / name)
    assert main(TINY + ["--out", out, *extra]) == 0
    return out


def _history(out):
    with open(os.path.join(out, "history.csv"), newline="") as f:
        return list(csv.DictReader(f))


def _tiny_model(V=7, cell="lstm", dropout=0.0, input_dropout=0.0, layers=1):
    settings = gen.GenerateSettings(cell=cell, embedding=5, hidden=6, layers=layers,
                                    dropout=dropout, input_dropout=input_dropout, seed=0)
    return gen.build_model(V, settings)


# -- pieces ----------------------------------------------------------------------------------

def test_split_is_contiguous_and_in_order():
    text = "".join(chr(65 + i % 26) for i in range(1000))
    train, val, test = gen.split_text(text, 0.1, 0.1)
    assert (len(train), len(val), len(test)) == (800, 100, 100)
    assert train + val + test == text
    with pytest.raises(SystemExit, match="at least 2"):
        gen.split_text("abcdefghij", 0.1, 0.1)


def test_reading_streams_carries_the_state_across_chunks():
    model = _tiny_model(dropout=0.3)
    ids = np.random.default_rng(2).integers(0, 7, size=300)
    a = gen.bits_per_char(model, ids, chunk=1000)
    b = gen.bits_per_char(model, ids, chunk=17)
    assert a == pytest.approx(b, rel=1e-5)
    assert model.training and model.stateful                # modes restored
    # one call over the whole text, in evaluation mode: the same score
    model.eval()
    logits = model(ids[None, :-1])
    nats, _ = elman.CrossEntropyLoss()(logits[0], ids[1:])
    assert a == pytest.approx(nats / math.log(2), rel=1e-5)
    with gen.reading_streams(model):                        # without the state it differs
        fresh = model(ids[None, 150:160])
    assert not np.allclose(fresh[0], logits[0, 150:160], atol=1e-6)


def test_next_char_distribution_filters():
    logits = np.log(np.array([0.05, 0.1, 0.15, 0.3, 0.4]))
    p = gen.next_char_distribution(logits, banned=())
    np.testing.assert_allclose(p, [0.05, 0.1, 0.15, 0.3, 0.4])
    p = gen.next_char_distribution(logits)                  # id 0 (unknown) never drawn
    assert p[0] == 0 and p.sum() == pytest.approx(1)
    p = gen.next_char_distribution(logits, top_k=2, banned=())
    np.testing.assert_allclose(p, [0, 0, 0, 3 / 7, 4 / 7])
    p = gen.next_char_distribution(logits, top_p=0.65, banned=())     # 0.4 + 0.3 >= 0.65
    np.testing.assert_allclose(p, [0, 0, 0, 3 / 7, 4 / 7])
    p = gen.next_char_distribution(logits, top_p=0.4, banned=())      # the top one is enough
    np.testing.assert_allclose(p, [0, 0, 0, 0, 1])
    cold = gen.next_char_distribution(logits, temperature=0.25, banned=())
    hot = gen.next_char_distribution(logits, temperature=4.0, banned=())
    assert cold[4] > 0.4 > hot[4] > 0.2


def test_weight_average_is_debiased_and_swaps_back():
    p = elman.Param(np.zeros(3, np.float32))
    avg = gen.WeightAverage([p], decay=0.5)
    for value in (1.0, 2.0, 4.0):
        p.data[...] = value
        avg.update()
    # weights 1, 2, 4 with EMA weights 0.25, 0.5, 1 (before debiasing by 1 - 0.5**3)
    expected = (0.25 * 1 + 0.5 * 2 + 1.0 * 4) * 0.5 / (1 - 0.5 ** 3)
    with avg.swapped_in():
        np.testing.assert_allclose(p.data, expected, rtol=1e-6)
    np.testing.assert_array_equal(p.data, 4.0)
    again = gen.WeightAverage([p], decay=0.9)
    again.load_state_dict(avg.state_dict())
    with again.swapped_in():
        np.testing.assert_allclose(p.data, expected, rtol=1e-6)


def test_sample_continues_the_prime_deterministically():
    model = _tiny_model(V=5)
    vocab = CharVocabulary().fit("abcd")
    s1 = gen.sample(model, vocab, "ab?", 40, seed=3)       # "?" is unseen: read as unknown
    s2 = gen.sample(model, vocab, "ab?", 40, seed=3)
    assert s1 == s2 and len(s1) == 40 and set(s1) <= set("abcd")
    assert gen.sample(model, vocab, "ab", 40, top_k=1) == gen.sample(model, vocab, "ab", 40,
                                                                      top_k=1, seed=9)


# -- the command -------------------------------------------------------------------------------

def test_end_to_end_files_metrics_and_model(tmp_path, capsys):
    out = _run(tmp_path, "--epochs", "2")
    printed = capsys.readouterr().out
    assert "bits per character" in printed and "n-gram" in printed
    for name in ("model.npz", "last.npz", "history.csv", "metrics.json", "curves.png",
                 "generate.png"):
        assert os.path.getsize(os.path.join(out, name)) > 0, name
    with open(os.path.join(out, "metrics.json")) as f:
        m = json.load(f)
    assert math.isfinite(m["model"]["bits_per_char"])
    ng = m["baselines"]["ngram"]
    assert math.isfinite(ng["bits_per_char"]) and ng["order"] in range(1, 9)
    assert 0 < ng["discount"] <= 1
    assert m["config"]["train_chars"] == 2400 and m["config"]["test_chars"] == 300
    assert len(m["sample"]["text"]) == 30
    rows = _history(out)
    assert [r["epoch"] for r in rows] == ["1", "2"]
    assert all(math.isfinite(float(r[k])) for r in rows
               for k in ("loss", "val_loss", "bits_per_char", "val_bits_per_char"))
    for r in rows:                    # the same cross-entropy in nats and in bits
        assert float(r["val_bits_per_char"]) * math.log(2) == pytest.approx(
            float(r["val_loss"]), rel=0.05)
    # the best model loads alone and carries what sampling needs
    model = elman.load(os.path.join(out, "model.npz"))
    assert isinstance(model, elman.Sequential) and model.epoch in (1, 2)
    ck = elman.load_checkpoint(os.path.join(out, "model.npz"))
    vocab = CharVocabulary().load_state_dict(ck.extra["vocab"])
    assert len(vocab) == model[0].num_embeddings == model[-1].out_features
    assert min(float(r["val_bits_per_char"]) for r in rows) == pytest.approx(
        m["model"]["val_bits_per_char"], rel=1e-5)
    # the best model's own score on the validation text is the one history.csv holds
    best = float(rows[model.epoch - 1]["val_bits_per_char"])
    text = elman.data.load_hamlet()[:3000]
    ids = vocab.encode(gen.split_text(text, 0.1, 0.1)[1])
    assert gen.bits_per_char(model, ids) == pytest.approx(best, rel=1e-5)


def test_help_shows_the_defaults(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["generate", "--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for option in ("--text", "--bptt", "--temperature", "--top-k", "--top-p", "--prime",
                   "--minutes", "--sample", "--resume", "--max-chars"):
        assert option in text
    assert "default: 512" in text and "runs/generate" in text


def test_sample_from_saved_model(tmp_path, capsys):
    out = _run(tmp_path, "--epochs", "1", "--length", "0")
    capsys.readouterr()
    assert main(["generate", "--sample", "--out", out, "--prime", "HAM", "--length", "25",
                 "--temperature", "0.5", "--top-k", "5", "--top-p", "0.9"]) == 0
    text = capsys.readouterr().out.rstrip("\n")
    assert text.startswith("HAM") and len(text) == 3 + 25
    with pytest.raises(SystemExit, match="no model"):
        main(["generate", "--sample", "--out", str(tmp_path / "nothing")])
    with pytest.raises(SystemExit, match="--temperature"):
        main(["generate", "--sample", "--out", out, "--temperature", "0"])
    # the model file is checked as a stranger's: its vocabulary against its network
    damaged = tmp_path / "damaged"
    damaged.mkdir()
    chars = elman.load_checkpoint(os.path.join(out, "model.npz")).extra["vocab"]["chars"]
    for changes, message in [({"vocab": {"chars": chars[:-1]}}, "its network scores "
                              f"{len(chars) + 1} characters, its vocabulary has {len(chars)}"),
                             ({"vocab": {"chars": ["ab"]}}, "its vocabulary: ")]:
        with_extra(os.path.join(out, "model.npz"), damaged / "model.npz", **changes)
        with pytest.raises(SystemExit, match="error: --sample: .*is damaged: " + message) as e:
            main(["generate", "--sample", "--out", str(damaged)])
        assert e.value.code == 2


def test_resume_continues_exactly(tmp_path):
    opts = ["--length", "0", "--ema", "0.9", "--weight-decay", "0.01"]
    straight = _run(tmp_path, "--epochs", "2", *opts, name="straight")
    resumed = _run(tmp_path, "--epochs", "1", *opts, name="resumed")
    assert len(_history(resumed)) == 1
    _run(tmp_path, "--epochs", "2", "--resume", *opts, name="resumed")
    rows = _history(resumed)
    assert [r["epoch"] for r in rows] == ["1", "2"]
    assert elman.load(os.path.join(resumed, "last.npz")).epoch == 2
    assert rows == _history(straight)                     # bit for bit the same run
    for name in ("last.npz", "model.npz"):
        w1 = elman.load(os.path.join(resumed, name)).get_weights()
        w2 = elman.load(os.path.join(straight, name)).get_weights()
        for a, b in zip(w1, w2):
            np.testing.assert_array_equal(a, b)
    with pytest.raises(SystemExit, match="different architecture"):
        _run(tmp_path, "--epochs", "3", "--resume", "--hidden", "13", name="resumed")
    with pytest.raises(SystemExit, match=r"callbacks .*WeightAverage.*--ema"):
        _run(tmp_path, "--epochs", "3", "--resume", "--length", "0", name="resumed")
    with pytest.raises(SystemExit, match="--resume"):
        _run(tmp_path, "--resume", name="fresh")


def test_time_budget_stops_cleanly(tmp_path, capsys):
    out = _run(tmp_path, "--epochs", "50", "--minutes", "0.00001", "--length", "0")
    assert "--minutes" in capsys.readouterr().out
    with open(os.path.join(out, "metrics.json")) as f:
        m = json.load(f)
    # stopped inside the first epoch, after one batch, which was validated and saved
    assert m["config"]["stopped_by"] == "minutes" and m["config"]["epochs_trained"] == 1
    assert len(_history(out)) == 1
    assert math.isfinite(m["model"]["bits_per_char"])


def test_time_budget_holds_within_five_percent(tmp_path):
    # a budget that ends inside training: the whole run (data, baseline, training, validation,
    # test score) ends within 5 % of it, and the best epoch's model is kept
    budget = 15.0
    start = time.perf_counter()
    out = _run(tmp_path, "--epochs", "1000", "--minutes", str(budget / 60), "--length", "0",
               "--max-chars", "20000", "--patience", "0", "--threads", "1")
    took = time.perf_counter() - start
    with open(os.path.join(out, "metrics.json")) as f:
        m = json.load(f)
    assert m["config"]["stopped_by"] == "minutes"
    assert took <= budget * 1.05, took
    rows = _history(out)
    best = min(range(len(rows)), key=lambda i: float(rows[i]["val_bits_per_char"]))
    assert elman.load(os.path.join(out, "model.npz")).epoch == best + 1


def test_patience_stops_when_validation_stalls(tmp_path, capsys):
    # a learning rate this small cannot improve the validation score after the first epoch
    # by much; with patience 1 the run stops at the first epoch that is not better
    out = _run(tmp_path, "--epochs", "30", "--patience", "1", "--lr", "3", "--clip", "0.01",
               "--length", "0")
    with open(os.path.join(out, "metrics.json")) as f:
        m = json.load(f)
    rows = _history(out)
    best = min(range(len(rows)), key=lambda i: float(rows[i]["val_bits_per_char"]))
    assert m["config"]["stopped_by"] == "patience"
    assert len(rows) == best + 2                          # one epoch without improvement
    assert "--patience" in capsys.readouterr().out


def test_users_text_file_with_unseen_characters(tmp_path):
    path = tmp_path / "mine.txt"
    body = "the cat sat on the mat. " * 60
    path.write_text(body + "Zebras! " * 5, encoding="utf-8")     # Z, b, r, ! only at the end
    out = _run(tmp_path, "--text", str(path), "--epochs", "1", "--max-chars", "100000",
               "--cell", "gru")
    with open(os.path.join(out, "metrics.json")) as f:
        m = json.load(f)
    assert m["config"]["unseen_test_chars"] > 0
    assert math.isfinite(m["model"]["bits_per_char"])
    assert math.isfinite(m["baselines"]["ngram"]["bits_per_char"])
    assert m["config"]["source"].endswith("mine.txt")


@pytest.mark.parametrize("setup, args, message", [
    (None, ["--text", "missing.txt"], "no such file"),
    ("", ["--text", "{path}"], "empty"),
    (b"caf\xe9 au lait " * 50, ["--text", "{path}"], "not valid utf-8"),
    ("short", ["--text", "{path}"], "at least 2"),
    (None, ["--temperature", "-1"], "--temperature"),
    (None, ["--top-p", "0"], "--top-p"),
    (None, ["--top-k", "-2"], "--top-k"),
    (None, ["--dropout", "1"], "--dropout"),
    (None, ["--bptt", "0"], "--bptt"),
    (None, ["--max-chars", "0"], "--max-chars"),
    (None, ["--val-fraction", "0.6", "--test-fraction", "0.5"], "below 1"),
    (None, ["--batch-size", "5000"], "--batch-size"),
])
def test_bad_options_and_files(tmp_path, setup, args, message):
    path = tmp_path / "t.txt"
    if isinstance(setup, bytes):
        path.write_bytes(setup)
    elif setup is not None:
        path.write_text(setup, encoding="utf-8")
    args = [a.replace("{path}", str(path)) for a in args]
    if "missing.txt" in args:
        args[args.index("missing.txt")] = str(tmp_path / "missing.txt")
    with pytest.raises(SystemExit, match=message):
        main(TINY + ["--out", str(tmp_path / "o"), "--epochs", "1", *args])


def test_long_scoring_reports_progress(capsys):
    from elman.tasks import common
    model = _tiny_model()
    ids = np.random.default_rng(3).integers(0, 7, size=100)
    ticker = common.Ticker("scoring", every=0.0)        # every window counts as long
    gen.bits_per_char(model, ids, chunk=30, progress=ticker.tick)
    lines = capsys.readouterr().out.splitlines()
    assert [ln.split(" (")[0] for ln in lines] == [f"scoring: {k}/4" for k in range(1, 5)]
    gen.bits_per_char(model, ids, chunk=30, progress=common.Ticker("quiet", quiet=True).tick)
    assert capsys.readouterr().out == ""
