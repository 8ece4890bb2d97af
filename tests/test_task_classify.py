"""`elman classify`: end to end on tiny settings (bundled snippets and a user's CSV), prediction
from the saved model, --resume, error messages, and the bag-of-words baseline on known answers."""
import csv
import json
import math
import os

import numpy as np
import pytest

import elman
from _checkpoint_files import with_extra, with_settings
from elman.cli import build_parser, main
from elman.tasks import classify

TINY = ["--limit", "300", "--epochs", "2", "--hidden", "8", "--embed-dim", "8",
        "--max-words", "400", "--batch-size", "32", "--quiet", "--ensemble", "1"]


def _finite_metrics(m, n_classes, n_test):
    assert set(m) >= {"accuracy", "f1", "confusion_matrix"}
    assert 0.0 <= m["accuracy"] <= 1.0 and math.isfinite(m["accuracy"])
    assert 0.0 <= m["f1"] <= 1.0 and math.isfinite(m["f1"])
    cm = np.array(m["confusion_matrix"])
    assert cm.shape == (n_classes, n_classes) and cm.sum() == n_test
    assert m["accuracy"] == pytest.approx(np.trace(cm) / n_test)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("classify")
    assert main(["classify", *TINY, "--cell", "rnn", "--out", str(out)]) == 0
    return out


def test_default_data_end_to_end(tiny_run):
    for name in ("model.npz", "last.npz", "history.csv", "metrics.json", "curves.png",
                 "classify.png"):
        assert (tiny_run / name).stat().st_size > 0, name
    metrics = json.loads((tiny_run / "metrics.json").read_text())
    assert set(metrics) == {"model", "baselines", "config"}
    assert set(metrics["baselines"]) == {"bow_logreg"}
    cfg = metrics["config"]
    assert cfg["train"] + cfg["validation"] + cfg["test"] == cfg["samples"] == 300
    assert cfg["classes"] == ["negative", "positive"] and cfg["cell"] == "rnn"
    _finite_metrics(metrics["model"], 2, cfg["test"])
    _finite_metrics(metrics["baselines"]["bow_logreg"], 2, cfg["test"])
    assert metrics["baselines"]["bow_logreg"]["l2"] in classify.BOW_L2_GRID
    with open(tiny_run / "history.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 2 and "val_accuracy" in rows[0]


def test_checkpoint_predicts_on_its_own(tiny_run, capsys):
    ck = elman.load_checkpoint(str(tiny_run / "model.npz"))
    extra = ck.extra
    assert extra["task"] == "classify" and extra["settings"]["maxlen"] == 50
    assert extra["classes"] == ["negative", "positive"]
    vocab = elman.data.text.Vocabulary().load_state_dict(extra["vocabulary"])
    assert len(vocab) == ck.model[0].num_embeddings <= 402
    texts = ["a gorgeous, witty and moving film", "dull , lifeless and far too long"]
    assert main(["classify", "--predict", *texts, "--out", str(tiny_run)]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].startswith("P(positive)") and len(lines) == 3
    printed = [float(line.split()[0]) for line in lines[1:]]
    x = elman.data.text.pad_sequences(vocab.encode(texts), maxlen=50, padding="post")
    expected = ck.model.predict(x, mask_value=0)[:, 0]
    np.testing.assert_allclose(printed, expected, atol=1e-4)
    assert all(0.0 < p < 1.0 for p in printed)


def test_padding_never_changes_a_prediction(tiny_run):
    """pre and post padding give the same probabilities: padding is masked."""
    model = elman.load(str(tiny_run / "model.npz"))
    ids = [[5, 9, 3, 7], [4, 2]]
    post = elman.data.text.pad_sequences(ids, maxlen=10, padding="post")
    pre = elman.data.text.pad_sequences(ids, maxlen=10, padding="pre")
    np.testing.assert_allclose(model.predict(post, mask_value=0), model.predict(pre, mask_value=0),
                               rtol=1e-5)


def test_predict_errors(tmp_path, tiny_run):
    with pytest.raises(SystemExit, match="no model"):
        main(["classify", "--predict", "good", "--out", str(tmp_path)])
    with pytest.raises(SystemExit, match="no words"):
        main(["classify", "--predict", "   ", "--out", str(tiny_run)])


def test_resume_continues(tmp_path):
    out = str(tmp_path / "run")
    args = ["classify", *TINY, "--out", out]
    args[args.index("--epochs") + 1] = "1"
    assert main(args) == 0
    args[args.index("--epochs") + 1] = "2"
    assert main(args + ["--resume"]) == 0
    with open(os.path.join(out, "history.csv")) as f:
        assert len(list(csv.DictReader(f))) == 2
    assert elman.load(os.path.join(out, "last.npz")).epoch == 2
    # another vocabulary (other data options) cannot resume this run
    other = list(args)
    other[other.index("--max-words") + 1] = "300"
    other[other.index("--epochs") + 1] = "3"
    with pytest.raises(SystemExit, match="--resume"):
        main(other + ["--resume"])


def test_resume_needs_a_checkpoint(tmp_path):
    with pytest.raises(SystemExit, match="no checkpoint"):
        main(["classify", *TINY, "--out", str(tmp_path), "--resume"])


def _tiny(**edits):
    argv = list(TINY)
    for key, value in edits.items():
        argv[argv.index(f"--{key}") + 1] = str(value)
    return argv


@pytest.mark.parametrize("changes, message", [
    ({"settings": {"maxlen": 0}}, "its settings: --maxlen must be a positive integer, got 0"),
    ({"settings": {"maxlen": 10 ** 12}},                                     # 8 TB of ids
     "its settings: --maxlen must be at most 100_000"),
    ({"settings": {"padding": "middle"}}, "its settings: --padding must be 'pre' or 'post'"),
    ({"classes": ["pos"]}, "'classes' must be a list of two or more distinct class names"),
    ({"classes": ["a", "b", "c"]}, "its network scores 2 classes, its settings name 3"),
    ({"settings": {"ensemble": 10 ** 9}}, "its settings: --ensemble must be at most 100"),
    ({"settings": {"ensemble": None}}, "its setting 'ensemble' must be int, got None"),
    ({"vocabulary": {"words": "film"}}, "its vocabulary: "),
])
def test_predict_refuses_a_damaged_model_file(tiny_run, tmp_path, changes, message):
    if "settings" in changes:           # an edit of the saved settings, the rest as they were
        with_settings(tiny_run / "model.npz", tmp_path / "model.npz", **changes["settings"])
    else:
        with_extra(tiny_run / "model.npz", tmp_path / "model.npz", **changes)
    with pytest.raises(SystemExit, match="error: --predict: .*model.npz is damaged: .*"
                       + message) as e:
        main(["classify", "--predict", "a witty film", "--out", str(tmp_path)])
    assert e.value.code == 2


@pytest.fixture(scope="module")
def ensemble_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("classify_ensemble")
    assert main(["classify", *_tiny(ensemble=2), "--out", str(out)]) == 0
    return out


def test_ensemble_writes_every_member(ensemble_run):
    for name in ("model.npz", "last.npz", "history.csv", "curves.png"):
        assert (ensemble_run / name).stat().st_size > 0, name
        assert (ensemble_run / "member2" / name).stat().st_size > 0, name
    assert not (ensemble_run / "member3").exists()
    metrics = json.loads((ensemble_run / "metrics.json").read_text())
    assert metrics["config"]["ensemble"] == 2
    members = metrics["model"]["members"]
    assert len(members) == 2 and members[0]["seed"] == 0 and members[1]["seed"] != 0
    assert members[0]["best_epoch"] == metrics["config"]["best_epoch"]
    _finite_metrics(metrics["model"], 2, metrics["config"]["test"])
    first = elman.load_checkpoint(str(ensemble_run / "model.npz"))
    second = elman.load_checkpoint(str(ensemble_run / "member2" / "model.npz"))
    assert first.extra["settings"]["ensemble"] == second.extra["settings"]["ensemble"] == 2
    assert first.extra["vocabulary"] == second.extra["vocabulary"]
    # differently seeded: other initial weights, so other trained weights
    assert not np.array_equal(first.model[0].weight.data, second.model[0].weight.data)


def test_ensemble_averages_the_members(ensemble_run, capsys):
    """The reported test accuracy and --predict use the mean of the members' probabilities."""
    first = elman.load_checkpoint(str(ensemble_run / "model.npz"))
    second = elman.load(str(ensemble_run / "member2" / "model.npz"))
    vocab = elman.data.text.Vocabulary().load_state_dict(first.extra["vocabulary"])
    texts = ["a gorgeous, witty and moving film", "dull , lifeless and far too long"]
    x = elman.data.text.pad_sequences(vocab.encode(texts), maxlen=50, padding="post")
    p1 = first.model.predict(x, mask_value=0)[:, 0]
    p2 = second.predict(x, mask_value=0)[:, 0]
    assert not np.allclose(p1, p2)
    capsys.readouterr()
    assert main(["classify", "--predict", *texts, "--out", str(ensemble_run)]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    printed = [float(line.split()[0]) for line in lines[1:]]
    np.testing.assert_allclose(printed, (p1 + p2) / 2, atol=1e-4)


def test_ensemble_metrics_match_the_members():
    """classify's own pieces: the ensemble probability is the members' mean."""
    models = [classify.build_model(50, 2, cell="rnn", embed_dim=4, hidden=3,
                                   seed=classify.member_seed(0, k)) for k in range(3)]
    x = np.array([[5, 6, 7, 0], [8, 9, 0, 0]])
    each = [classify._probabilities(m, x) for m in models]
    np.testing.assert_allclose(classify._ensemble_probabilities(models, x),
                               np.mean(each, axis=0), rtol=1e-12)
    assert classify.member_seed(7, 0) == 7
    assert len({classify.member_seed(7, k) for k in range(5)}) == 5
    assert classify.member_seed(7, 1) != classify.member_seed(8, 1)


def test_ensemble_predict_needs_every_member(tmp_path, ensemble_run):
    import shutil
    out = tmp_path / "copy"
    shutil.copytree(ensemble_run, out)
    os.remove(out / "member2" / "model.npz")
    with pytest.raises(SystemExit, match="ensemble of 2 models.*missing"):
        main(["classify", "--predict", "good", "--out", str(out)])


def test_ensemble_resume(tmp_path):
    out = str(tmp_path / "run")
    args = ["classify", *_tiny(ensemble=2, epochs=1), "--out", out]
    assert main(args) == 0
    with pytest.raises(SystemExit, match="--ensemble 2"):
        main(["classify", *_tiny(ensemble=3, epochs=2), "--out", out, "--resume"])
    assert main(["classify", *_tiny(ensemble=2, epochs=2), "--out", out, "--resume"]) == 0
    for member in (out, os.path.join(out, "member2")):
        with open(os.path.join(member, "history.csv")) as f:
            assert len(list(csv.DictReader(f))) == 2
        assert elman.load(os.path.join(member, "last.npz")).epoch == 2
    os.remove(os.path.join(out, "member2", "last.npz"))
    with pytest.raises(SystemExit, match="no checkpoint"):
        main(["classify", *_tiny(ensemble=2, epochs=3), "--out", out, "--resume"])


def _write_csv(path, rows, header=("review", "sentiment", "stars")):
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)


def _toy_rows(n=120, labels=("neg", "pos"), seed=0):
    rng = np.random.default_rng(seed)
    words = {"neg": ["awful", "boring", "bad"], "pos": ["great", "lovely", "good"],
             "mid": ["fine", "okay", "average"]}
    filler = ["the", "film", "plot", "actors", "a", "was", "is"]
    rows = []
    for k in range(n):
        label = labels[k % len(labels)]
        text = " ".join(rng.choice(filler, 4).tolist() + [rng.choice(words[label])])
        rows.append((text, label, str(k % 5)))
    return rows


def test_users_csv_with_string_labels(tmp_path, capsys):
    path = tmp_path / "reviews.csv"
    rows = _toy_rows()
    rows[3] = ("  ", "pos", "1")                       # an empty text is skipped with a note
    _write_csv(path, rows)
    out = tmp_path / "out"
    assert main(["classify", "--csv", str(path), "--text-col", "review", "--label-col",
                 "sentiment", "--epochs", "2", "--hidden", "8", "--embed-dim", "8", "--quiet",
                 "--ensemble", "1", "--out", str(out)]) == 0
    assert "skipped 1 rows with an empty text (first at line 5)" in capsys.readouterr().err
    metrics = json.loads((out / "metrics.json").read_text())
    cfg = metrics["config"]
    assert cfg["classes"] == ["neg", "pos"] and cfg["samples"] == 119
    assert cfg["data"] == "reviews.csv"
    _finite_metrics(metrics["model"], 2, cfg["test"])
    # the words decide the label, so the baseline is perfect on held-out rows
    assert metrics["baselines"]["bow_logreg"]["accuracy"] == 1.0
    assert main(["classify", "--predict", "a great and lovely film", "--out", str(out)]) == 0
    assert capsys.readouterr().out.splitlines()[0].startswith("P(pos)")


def test_users_csv_with_three_classes(tmp_path, capsys):
    path = tmp_path / "three.csv"
    _write_csv(path, _toy_rows(150, labels=("neg", "mid", "pos")))
    out = tmp_path / "out"
    assert main(["classify", "--csv", str(path), "--text-col", "review", "--label-col",
                 "sentiment", "--epochs", "1", "--hidden", "8", "--embed-dim", "8", "--quiet",
                 "--ensemble", "2", "--out", str(out)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["config"]["classes"] == ["mid", "neg", "pos"]
    _finite_metrics(metrics["model"], 3, metrics["config"]["test"])
    _finite_metrics(metrics["baselines"]["bow_logreg"], 3, metrics["config"]["test"])
    assert metrics["baselines"]["bow_logreg"]["accuracy"] == 1.0
    assert elman.load(str(out / "model.npz"))[-1].out_features == 3
    capsys.readouterr()
    assert main(["classify", "--predict", "a boring film", "--out", str(out)]) == 0
    line = capsys.readouterr().out.splitlines()[1]
    assert line.split()[0] in ("mid", "neg", "pos") and 0 < float(line.split()[1]) <= 1


@pytest.mark.parametrize("edit, message", [
    (dict(label_col="nope"), "nope"),
    (dict(text_col="nope"), "nope"),
    (dict(label_col=None), "--label-col"),
    (dict(csv="missing.csv"), "no such file"),
    (dict(label_col="single"), "at least two classes"),
    (dict(label_col="holey"), "line 4: empty label"),
    (dict(label_col="review"), "the same column"),
])
def test_users_csv_errors(tmp_path, edit, message):
    path = tmp_path / "data.csv"
    rows = [(t, s, "x", "1" if k != 2 else "") for k, (t, s, _) in enumerate(_toy_rows(40))]
    _write_csv(path, rows, header=("review", "sentiment", "single", "holey"))
    opts = dict(csv=str(path), text_col="review", label_col="sentiment")
    opts.update(edit)
    if opts["csv"] == "missing.csv":
        opts["csv"] = str(tmp_path / "missing.csv")
    argv = ["classify", "--epochs", "1", "--out", str(tmp_path / "out"), "--quiet"]
    for key, value in opts.items():
        if value is not None:
            argv += [f"--{key.replace('_', '-')}", value]
    with pytest.raises(SystemExit, match=message):
        main(argv)


def test_users_csv_without_rows(tmp_path):
    path = tmp_path / "empty.csv"
    path.write_text("review,sentiment\n")
    with pytest.raises(SystemExit, match="no data rows"):
        main(["classify", "--csv", str(path), "--text-col", "review", "--label-col",
              "sentiment", "--out", str(tmp_path / "out")])
    path.write_text("review,sentiment\n ,pos\n,neg\n")
    with pytest.raises(SystemExit, match="no rows with a text"):
        main(["classify", "--csv", str(path), "--text-col", "review", "--label-col",
              "sentiment", "--out", str(tmp_path / "out")])
    path.write_text("")
    with pytest.raises(SystemExit, match="empty"):
        main(["classify", "--csv", str(path), "--text-col", "review", "--label-col",
              "sentiment", "--out", str(tmp_path / "out")])


@pytest.mark.parametrize("argv, message", [
    (["--maxlen", "0"], "--maxlen"),
    (["--dropout", "1.5"], "--dropout"),
    (["--test-fraction", "0"], "--test-fraction"),
    (["--text-col", "x"], "go with --csv"),
    (["--lr", "-1"], "--lr"),
    (["--ensemble", "0"], "--ensemble"),
])
def test_bad_options(tmp_path, argv, message):
    with pytest.raises(SystemExit, match=message):
        main(["classify", *argv, "--out", str(tmp_path)])


def test_help_shows_defaults(capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["classify", "--help"])
    text = capsys.readouterr().out
    for option in ("--csv", "--text-col", "--label-col", "--maxlen", "--padding", "--cell",
                   "--bidirectional", "--predict", "--resume", "--ensemble",
                   "default: runs/classify"):
        assert option in text


# -- the baseline and the metrics ------------------------------------------------------------

def test_bow_matrix():
    x = np.array([[3, 3, 1, 0], [0, 0, 0, 2]])
    np.testing.assert_array_equal(classify.bow_matrix(x, 5),
                                  [[0, 1, 0, 1, 0], [0, 0, 1, 0, 0]])


def test_logreg_recovers_the_known_optimum():
    """One word present in 80 % of positives and 20 % of negatives: the maximum-likelihood
    logistic regression has P(y=1 | word) = 0.8, P(y=1 | no word) = 0.2, so weight
    log(16) = 2.77 and bias -log(4) = -1.39."""
    n = 1000
    y = np.zeros(n, np.int64)
    y[:500] = 1
    word = np.zeros(n, bool)
    word[:400] = True                     # 400 of the 500 positives
    word[500:600] = True                  # 100 of the 500 negatives
    x = np.where(word, 2, 1)[:, None]     # id 2 = the word, id 1 = another token
    model = classify.fit_bow_logreg(x, y, x, y, n_features=3, l2_grid=[1e-6], epochs=40,
                                    batch_size=100, lr=0.05)
    w, b = model.linear.weight.data[0], model.linear.bias.data[0]
    assert w[2] - w[1] == pytest.approx(math.log(16), abs=0.05)
    assert b + w[1] == pytest.approx(-math.log(4), abs=0.05)
    proba = model.predict_proba(np.array([[2], [1]]))[:, 1]
    np.testing.assert_allclose(proba, [0.8, 0.2], atol=0.01)


def test_logreg_chooses_l2_on_validation():
    """Many noise words and one weakly informative word: an unpenalised fit memorises the noise
    and a huge penalty predicts one class; the chosen penalty is the one with the best
    validation accuracy of the grid."""
    rng = np.random.default_rng(0)
    n, vocab = 400, 300

    def data(n):
        y = rng.integers(0, 2, n)
        signal = np.where(rng.random(n) < 0.8, y, 1 - y) + 2        # id 2 or 3, 80 % right
        noise = rng.integers(4, vocab, size=(n, 6))
        return np.column_stack([signal, noise]), y

    (xt, yt), (xv, yv) = data(n), data(n)
    grid = [1e-6, 3e-2, 100.0]
    model = classify.fit_bow_logreg(xt, yt, xv, yv, vocab, l2_grid=grid, epochs=30, lr=0.05)
    accs = {l2: r["val_accuracy"] for l2, r in model.grid.items()}
    assert sorted(accs) == grid
    assert model.l2 == max(grid, key=lambda l2: (accs[l2], -model.grid[l2]["val_loss"]))
    assert model.l2 == 3e-2
    assert accs[3e-2] > accs[1e-6] and accs[3e-2] > 0.7
    # so strong a penalty leaves only the (unpenalised) bias: the training majority class
    majority = int(np.mean(yt) > 0.5)
    assert accs[100.0] == pytest.approx(np.mean(yv == majority), abs=0.01)


def test_multinomial_logreg():
    x = np.array([[2], [3], [4]] * 30)
    y = np.array([0, 1, 2] * 30)
    model = classify.fit_bow_logreg(x, y, x, y, 5, n_classes=3, l2_grid=[1e-4], epochs=20)
    np.testing.assert_array_equal(model.predict(np.array([[4], [2], [3]])), [2, 0, 1])
    np.testing.assert_allclose(model.predict_proba(x).sum(axis=1), 1.0, rtol=1e-6)


def test_classification_metrics():
    m = classify.classification_metrics([0, 0, 0, 1, 1, 1, 1], [0, 1, 1, 1, 1, 1, 0])
    assert m["confusion_matrix"] == [[1, 2], [1, 3]]            # [[tn, fp], [fn, tp]]
    assert m["accuracy"] == pytest.approx(4 / 7)
    assert m["f1"] == pytest.approx(2 * 3 / (2 * 3 + 2 + 1))     # 2tp / (2tp + fp + fn)
    m3 = classify.classification_metrics([0, 1, 2, 2], [0, 2, 2, 2], n_classes=3)
    assert m3["confusion_matrix"] == [[1, 0, 0], [0, 0, 1], [0, 0, 2]]
    assert m3["f1"] == pytest.approx((1 + 0 + 0.8) / 3)          # macro F1


def test_labels_to_ids():
    ids, names = classify.labels_to_ids(["1", "0", "1", " 0"])
    assert names == ["0", "1"] and ids.tolist() == [1, 0, 1, 0]
    ids, names = classify.labels_to_ids(["b", "a", "10", "b"])
    assert names == ["10", "a", "b"] and ids.tolist() == [2, 1, 0, 2]
