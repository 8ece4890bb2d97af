"""Classify short texts (default: the sentiment of movie-review snippets) with a recurrent network,
and compare it with a tuned bag-of-words logistic regression on the same split.

Default data: the 10,568 movie-review snippets bundled with elman (Hutto & Gilbert 2014, from
the vaderSentiment sources; one sentence each, 21 tokens on the median), labelled positive or
negative by the sign of their mean human rating. They are split 80/10/10 into training,
validation and test parts, stratified by label (--seed). The tokenizer (lower-case, punctuation
as tokens of their own) and the vocabulary (the --max-words most frequent tokens; id 0 padding,
id 1 out-of-vocabulary) are fit on the training part only. Token ids are padded or cut to
--maxlen (--padding, --truncating: "pre" or "post"); padding is masked, so it never reaches the
recurrent layer (each sequence is read only up to its own last word).

Model: Embedding(--embed-dim) -> Dropout(--embed-dropout) -> RNN/GRU/LSTM (--cell, --hidden,
--layers, --bidirectional) -> each sequence's last step (LastBidirectional when bidirectional)
-> Dropout(--dropout) -> Dense(1, sigmoid), trained with Adam (--lr, L2 --weight-decay) on binary
cross-entropy; the epoch with the lowest validation loss is kept. (The seed tutorial's Keras model
is `--cell rnn --ensemble 1`.) Without pre-trained embeddings the data is small for a network: the defaults
keep the model small and regularise it (dropout on words and features, L2 on every weight), and
the number of epochs is picked on validation.

Ensemble (--ensemble N, default 5): N such models are trained on the same split with different
seeds (initial weights, shuffling, dropout masks; model 1 has --seed itself, so --ensemble 1 is
the single model), each keeps its own epoch of lowest validation loss, and the reported model
is the mean of their predicted probabilities (--predict averages them too). One model trails
the baseline on validation (76.4 % vs 77.7 % with --seed 0); averaging five reduces the
variance of a network trained on so few texts. It was chosen on validation accuracy and loss
only, over 1-4 models (7 were marginally better on validation, for 40 % more time), LSTMs,
smaller or bidirectional networks, mean/max pooling, smaller vocabularies and a smaller
embedding initialisation. On three splits (--seed 0, 1, 2) it
reached 79.3, 80.4 and 78.5 % test accuracy, the baseline 79.1, 79.4 and 78.6 % (1,056 test
texts: +-1.3 %); one model alone reached 78.8 % on average.

Baseline: bag-of-words logistic regression (which words occur, over the same vocabulary and the
same padded/cut token ids) written with elman's own Linear and BCEWithLogitsLoss, trained with
Adam; its L2 strength is chosen on the validation part from a grid.

Metrics on the test part: accuracy, F1 of the positive class (class 1) and the confusion matrix
[[tn, fp], [fn, tp]] (rows: true class, columns: predicted).

Your own data: --csv FILE --text-col COL --label-col COL. Labels 0/1, or any two distinct strings
(mapped in sorted order: numbers numerically, other strings alphabetically, e.g. neg -> 0,
pos -> 1; the second one is the "positive" class). With more than two labels the model ends in
Dense(C) with a softmax cross-entropy and the baseline is a multinomial logistic regression; F1
is then the macro average and the confusion matrix is C x C. Rows with an empty text are skipped
(with a note); an empty label is an error.

Writes into --out (default runs/classify): model.npz (the best epoch, with the vocabulary, class
names and the settings (ClassifySettings: maxlen, padding, ensemble size, ...) in its extra:
`--predict` reads them), last.npz (for --resume, which refuses other settings than the first
run's but --epochs, --minutes and the like), history.csv, metrics.json ({"model": {"accuracy", "f1", "confusion_matrix",
"val_accuracy", "val_loss", "members": [...]}, "baselines": {"bow_logreg": {...}},
"config": {...}}), curves.png (training vs validation loss and accuracy) and classify.png
(validation accuracy per epoch against the baseline's, and the test confusion matrices).
With --ensemble N > 1, these are model 1's; model k writes its model.npz, last.npz,
history.csv and curves.png into OUT/memberk, and the metrics are those of the average.

Examples:
  elman classify                                         # movie-review snippets, 5 GRUs
  elman classify --ensemble 1                            # one GRU (about 5 times faster)
  elman classify --cell rnn --ensemble 1                 # the seed tutorial's SimpleRNN
  elman classify --cell lstm --bidirectional --hidden 64
  elman classify --csv reviews.csv --text-col review --label-col sentiment
  elman classify --predict "a gorgeous, witty film" "dull and far too long"
"""
from __future__ import annotations

import argparse
import dataclasses
import math
import os
import sys
import time

import numpy as np

from .. import distributed, plots
from .._validate import CommandError
from ..data.datasets import load_movie_reviews, read_csv
from ..data.text import Vocabulary, pad_sequences, stratified_split
from ..layers import Dense, Dropout, Embedding, Last, LastBidirectional, Linear, MeanPool
from ..losses import BCEWithLogitsLoss, CrossEntropyLoss
from ..model import Sequential
from ..optim import Adam
from . import common

__all__ = ["HELP", "add_arguments", "run", "build_model", "bow_matrix", "BowLogReg",
           "fit_bow_logreg", "classification_metrics", "labels_to_ids", "member_dir",
           "member_seed", "ENSEMBLE"]

HELP = "classify texts (default: movie-review sentiment) with an RNN vs bag-of-words logreg"

BUNDLED = "movie-reviews"                    # the name of the bundled data in metrics/extra
BUNDLED_CLASSES = ["negative", "positive"]
MASK = 0                                     # the padding id (Vocabulary.PAD)

# The baseline's L2 grid (penalty lambda/2 * ||W||^2 added to the mean loss) and its training.
BOW_L2_GRID = (1e-5, 3e-5, 1e-4, 3e-4, 1e-3, 3e-3)
BOW_EPOCHS = 8
BOW_BATCH = 128
BOW_LR = 1e-2
BOW_MIN_STEPS = 500

# Models averaged by default (--ensemble): chosen on the validation part (see the docstring).
ENSEMBLE = 5
MAX_ENSEMBLE = 100          # members of one ensemble (each is trained in full)
MAX_MAXLEN = 100_000        # tokens per text: a book; more is a typo (or a hostile model file)


# ----------------------------------------------------------------------------- options

def add_arguments(p: argparse.ArgumentParser) -> None:
    d = p.add_argument_group("data")
    d.add_argument("--csv", metavar="FILE", help="your own CSV with a header row; without it, "
                   "the bundled movie-review snippets")
    d.add_argument("--text-col", metavar="COL", help="with --csv: the column of texts")
    d.add_argument("--label-col", metavar="COL", help="with --csv: the column of labels (0/1, "
                   "or two or more distinct strings, mapped in sorted order)")
    d.add_argument("--max-words", type=int, default=10_000, help="vocabulary size: the most "
                   "frequent training tokens")
    d.add_argument("--maxlen", type=int, default=50, help="tokens kept per text (99%% of "
                   "the snippets are shorter than 50)")
    d.add_argument("--padding", choices=("pre", "post"), default="post",
                   help="where padding goes (it is masked either way)")
    d.add_argument("--truncating", choices=("pre", "post"), default="pre",
                   help="which end of a long text is cut (pre keeps "
                   "its end)")
    d.add_argument("--val-fraction", type=float, default=0.1,
                   help="fraction of the texts for validation")
    d.add_argument("--test-fraction", type=float, default=0.1,
                   help="fraction of the texts for the test")
    d.add_argument("--limit", type=int, metavar="N", help="use only N texts, a random "
                   "stratified subset (for quick trials)")
    common.add_common_arguments(p, cell="gru", hidden=64, layers=1, epochs=10, batch_size=64,
                                lr=3e-3, out="runs/classify", bidirectional=True)
    m = p.add_argument_group("regularisation and embedding")
    m.add_argument("--pool", choices=("last", "mean"), default="last", help="what the output "
                   "layer reads: each text's last step (LastBidirectional when bidirectional), "
                   "or the mean over its steps")
    m.add_argument("--embed-dim", type=int, default=64, help="embedding size")
    m.add_argument("--embed-dropout", type=float, default=0.5, help="dropout on the word "
                   "vectors")
    m.add_argument("--dropout", type=float, default=0.5, help="dropout before the output layer "
                   "and between stacked recurrent layers")
    m.add_argument("--weight-decay", type=float, default=3e-4, help="L2 penalty on every weight "
                   "(Adam's coupled weight decay)")
    m.add_argument("--clipnorm", type=float, default=5.0, help="clip the global gradient norm")
    m.add_argument("--ensemble", type=int, default=ENSEMBLE, metavar="N", help="train N models "
                   "with different seeds (weights, shuffling, dropout; the same split) and "
                   "average their predicted probabilities; model 1 goes in OUT, model k in "
                   "OUT/memberk")
    q = p.add_argument_group("prediction")
    q.add_argument("--predict", nargs="+", metavar="TEXT", help="print the probability of the "
                   "positive class for each TEXT with the model saved in --out, and exit")


@dataclasses.dataclass(frozen=True, kw_only=True)
class ClassifySettings(common.TrainingSettings):
    """``elman classify``'s options (see :func:`add_arguments`), checked when made."""

    TASK = "classify"
    csv: str | None = None
    text_col: str | None = None
    label_col: str | None = None
    max_words: int = 10_000
    maxlen: int = 50
    padding: str = "post"
    truncating: str = "pre"
    val_fraction: float = 0.1
    test_fraction: float = 0.1
    limit: int | None = None
    pool: str = "last"
    embed_dim: int = 64
    embed_dropout: float = 0.5
    dropout: float = 0.5
    weight_decay: float = 3e-4
    clipnorm: float = 5.0
    ensemble: int = ENSEMBLE
    predict: tuple[str, ...] | None = None

    MAY_CHANGE_ON_RESUME = (*common.TrainingSettings.MAY_CHANGE_ON_RESUME, "predict")

    def validate(self) -> None:
        super().validate()
        for name in ("max_words", "maxlen", "embed_dim", "ensemble"):
            common.positive(name, getattr(self, name))
        if self.maxlen > MAX_MAXLEN:
            raise CommandError(f"error: --maxlen must be at most {MAX_MAXLEN:_}, got "
                               f"{self.maxlen}")
        if self.ensemble > MAX_ENSEMBLE:
            raise CommandError(f"error: --ensemble must be at most {MAX_ENSEMBLE}, got "
                               f"{self.ensemble}")
        for name in ("padding", "truncating"):
            if getattr(self, name) not in ("pre", "post"):
                raise CommandError(f"error: --{name} must be 'pre' or 'post', got "
                                   f"{getattr(self, name)!r}")
        if self.pool not in ("last", "mean"):
            raise CommandError(f"error: --pool must be 'last' or 'mean', got {self.pool!r}")
        if self.limit is not None and self.limit < 10:
            raise CommandError(f"error: --limit must be an integer >= 10, got {self.limit}")
        for name in ("embed_dropout", "dropout"):
            common.fraction(name, getattr(self, name), low_open=False)
        if not self.weight_decay >= 0:                  # (nan too)
            raise CommandError(f"error: --weight-decay must be >= 0, got {self.weight_decay}")
        if not self.clipnorm > 0:
            raise CommandError(f"error: --clipnorm must be positive, got {self.clipnorm}")
        for name in ("val_fraction", "test_fraction"):
            common.fraction(name, getattr(self, name))
        if self.val_fraction + self.test_fraction >= 0.9:
            raise CommandError(f"error: --val-fraction + --test-fraction must leave at least "
                               f"10 % for training, got {self.val_fraction} + "
                               f"{self.test_fraction}")
        if self.csv is None and (self.text_col or self.label_col):
            raise CommandError("error: --text-col and --label-col go with --csv FILE")
        if self.csv is not None and not (self.text_col and self.label_col):
            raise CommandError("error: --csv needs --text-col COL and --label-col COL")
        if self.csv is not None and self.text_col == self.label_col:
            raise CommandError(f"error: --text-col and --label-col name the same column "
                               f"{self.text_col!r}")


ClassifySettings.ARGUMENTS = add_arguments


# ----------------------------------------------------------------------------- data

def labels_to_ids(labels) -> tuple[np.ndarray, list]:
    """Label strings -> (int64 ids, class names), classes in sorted order: numerically when
    every label is a number ("0"/"1", "1".."5"), else alphabetically.

    >>> labels_to_ids(["pos", "neg", "pos"])
    (array([1, 0, 1]), ['neg', 'pos'])
    >>> labels_to_ids(["10", "9", "10"])[1]
    ['9', '10']
    """
    labels = [str(v).strip() for v in labels]
    names = sorted(set(labels))
    try:
        names.sort(key=float)
    except ValueError:
        pass                                   # not all numbers: alphabetical order
    index = {name: k for k, name in enumerate(names)}
    return np.array([index[v] for v in labels], dtype=np.int64), names


def _load_data(settings: ClassifySettings):
    """(texts, labels as 0..C-1, class names, source name)."""
    if settings.csv is None:
        texts, labels, _ = load_movie_reviews()
        return list(texts), labels.astype(np.int64), list(BUNDLED_CLASSES), BUNDLED
    try:
        table = read_csv(settings.csv, columns=[],
                         text_columns=[settings.text_col, settings.label_col])
    except FileNotFoundError:
        raise CommandError(f"error: --csv: no such file: {settings.csv}") from None
    except (ValueError, TypeError, IsADirectoryError) as e:
        raise CommandError(f"error: --csv: {e}") from None
    texts, raw_labels = table.text[settings.text_col], table.text[settings.label_col]
    lines = table.line_numbers
    for k, label in enumerate(raw_labels):
        if not label.strip():
            raise CommandError(f"error: --csv: {settings.csv}, line {int(lines[k])}: empty "
                               f"label in column {settings.label_col!r}")
    keep = [k for k, t in enumerate(texts) if t.strip()]
    if len(keep) < len(texts):
        print(f"note: skipped {len(texts) - len(keep)} rows with an empty text (first at line "
              f"{int(lines[next(k for k, t in enumerate(texts) if not t.strip())])})",
              file=sys.stderr)
    texts = [texts[k] for k in keep]
    if not texts:
        raise CommandError(f"error: --csv: {settings.csv} has no rows with a text in column "
                           f"{settings.text_col!r}")
    labels, names = labels_to_ids([raw_labels[k] for k in keep])
    if len(names) < 2:
        raise CommandError(f"error: --label-col {settings.label_col!r}: every row has the label "
                           f"{names[0]!r}; a classifier needs at least two classes")
    return texts, labels, names, os.path.basename(settings.csv)


def _subset(labels, limit, seed):
    """Indices of a stratified random subset of ``limit`` samples (all when limit is None)."""
    n = len(labels)
    if limit is None or limit >= n:
        return np.arange(n)
    keep, _ = stratified_split(labels, (limit / n, 1 - limit / n), seed=seed)
    return keep


def _pad(seqs, maxlen, padding, truncating) -> np.ndarray:
    """(N, maxlen) int64 ids; a text with no tokens becomes one OOV token, so no row is all
    padding (the mask would have nothing to read)."""
    seqs = [s if s else [Vocabulary.OOV] for s in seqs]
    return pad_sequences(seqs, maxlen=maxlen, dtype="int64", padding=padding,
                         truncating=truncating, value=MASK)


def _encode(vocab, texts, maxlen, padding, truncating) -> np.ndarray:
    return _pad(vocab.encode(texts), maxlen, padding, truncating)


# ----------------------------------------------------------------------------- model

def _seeds(seed: int, n: int) -> list[int]:
    return [int(s.generate_state(1)[0]) for s in np.random.SeedSequence(seed).spawn(n)]


def build_model(vocab_size: int, n_classes: int, cell: str = "gru", embed_dim: int = 64,
                hidden: int = 64, layers: int = 1, bidirectional: bool = False,
                embed_dropout: float = 0.5, dropout: float = 0.5, pool: str = "last",
                seed: int = 0, recurrent_dropout: float = 0.0,
                layer_norm: bool = False, zoneout: float = 0.0) -> Sequential:
    """``Embedding -> [Dropout] -> RNN/GRU/LSTM -> Last(Bidirectional) -> [Dropout] -> Dense``.

    ``pool="mean"`` replaces the last step by the mean over each text's steps (``MeanPool``).

    Binary (``n_classes == 2``): ``Dense(1, sigmoid)``, the probability of class 1; otherwise
    ``Dense(n_classes)`` logits. The embedding's row 0 is padding (always zero).

    >>> build_model(100, 2, cell="rnn", embed_dim=8, hidden=4).predict(np.array([[5, 6, 0]]),
    ...                                                             mask_value=0).shape
    (1, 1)
    """
    s = _seeds(seed, 6)
    directions = 2 if bidirectional else 1
    out = [Embedding(vocab_size, embed_dim, padding_idx=MASK, seed=s[0])]
    if embed_dropout:
        out.append(Dropout(embed_dropout, seed=s[1]))
    out.append(common.recurrent_layer(
        cell, embed_dim, hidden, num_layers=layers, bidirectional=bidirectional,
        dropout=dropout if layers > 1 else 0.0, seed=s[2],
        recurrent_dropout=recurrent_dropout, layer_norm=layer_norm, zoneout=zoneout))
    if pool == "mean":
        out.append(MeanPool())
    else:
        out.append(LastBidirectional(hidden) if bidirectional else Last())
    if dropout:
        out.append(Dropout(dropout, seed=s[3]))
    if n_classes == 2:
        out.append(Dense(directions * hidden, 1, activation="sigmoid", seed=s[4]))
    else:
        out.append(Dense(directions * hidden, n_classes, seed=s[4]))
    return Sequential(out, seed=s[5])


def _compile(model: Sequential, n_classes: int, settings: ClassifySettings) -> None:
    loss = "binary_crossentropy" if n_classes == 2 else "sparse_categorical_crossentropy"
    model.compile(Adam(model.parameters(), lr=settings.lr, weight_decay=settings.weight_decay),
                  loss, metrics=["accuracy"], global_clipnorm=settings.clipnorm)


def _probabilities(model, x, batch_size=256) -> np.ndarray:
    """(N, C) class probabilities (binary: [1 - p, p])."""
    out = model.predict(x, batch_size=batch_size, mask_value=MASK).astype(np.float64)
    if out.shape[1] == 1:
        p = out[:, 0]
        return np.stack([1 - p, p], axis=1)
    out -= out.max(axis=1, keepdims=True)
    e = np.exp(out)
    return e / e.sum(axis=1, keepdims=True)


def member_dir(out_dir: str, k: int) -> str:
    """Where ensemble member ``k`` (0-based) is written: OUT itself for the first, else
    OUT/member{k+1}.

    >>> member_dir("runs/classify", 0), member_dir("runs/classify", 2)
    ('runs/classify', 'runs/classify/member3')
    """
    return out_dir if k == 0 else os.path.join(out_dir, f"member{k + 1}")


def member_seed(seed: int, k: int) -> int:
    """The seed of ensemble member ``k`` (0-based): ``seed`` itself for the first (so
    ``--ensemble 1`` is the single model of the same ``--seed``), independent streams after."""
    return int(seed) if k == 0 else int(np.random.SeedSequence([int(seed), k])
                                        .generate_state(1)[0])


def _ensemble_probabilities(models, x) -> np.ndarray:
    """(N, C): the mean of the models' class probabilities."""
    return np.mean([_probabilities(m, x) for m in models], axis=0)


def _load_members(out_dir: str, extra: dict, n: int, first, option: str) -> list:
    """The ``n`` models of a saved ensemble: ``first`` (OUT/model.npz) and
    OUT/member{k}/model.npz, each checked to come from the same run (task, vocabulary, classes,
    settings)."""
    models = [first]
    for k in range(1, n):
        path = os.path.join(member_dir(out_dir, k), "model.npz")
        if not os.path.exists(path):
            raise CommandError(f"error: {option}: {os.path.join(out_dir, 'model.npz')} is the "
                               f"first of an ensemble of {n} models, but {path} is missing; "
                               f"train again with `elman classify --out {out_dir}`")
        ck = common.read_checkpoint(path, option)
        other = ck.extra if isinstance(ck.extra, dict) else {}
        if any(other.get(key) != extra.get(key) for key in ("task", "vocabulary", "classes",
                                                             "settings", *LEGACY_SETTINGS)):
            raise CommandError(f"error: {option}: {path} was not trained in the same run as "
                               f"{os.path.join(out_dir, 'model.npz')} (another vocabulary, "
                               f"classes or --ensemble); train again")
        models.append(ck.model)
    return models


# ----------------------------------------------------------------------------- baseline

def bow_matrix(x, n_features: int) -> np.ndarray:
    """Bag of words: (N, T) token ids -> (N, n_features) float32, 1 where the id occurs in the
    row (padding id 0 never counts).

    >>> bow_matrix(np.array([[2, 3, 2, 0], [1, 0, 0, 0]]), 5).tolist()
    [[0.0, 0.0, 1.0, 1.0, 0.0], [0.0, 1.0, 0.0, 0.0, 0.0]]
    """
    x = np.asarray(x)
    out = np.zeros((len(x), n_features), np.float32)
    out[np.arange(len(x))[:, None], x] = 1.0
    out[:, MASK] = 0.0
    return out


class BowLogReg:
    """A fitted bag-of-words logistic regression (binary: one logit; else C logits, softmax).

    ``linear`` is the elman ``Linear`` layer, ``l2`` the chosen penalty, ``grid`` the
    validation accuracy and loss of every penalty tried."""

    def __init__(self, linear: Linear, n_features: int, n_classes: int, l2: float, grid: dict):
        self.linear, self.n_features, self.n_classes = linear, n_features, n_classes
        self.l2, self.grid = l2, grid

    def logits(self, x, batch_size: int = 1024) -> np.ndarray:
        return np.concatenate([self.linear(bow_matrix(x[k:k + batch_size], self.n_features))
                               for k in range(0, len(x), batch_size)]).astype(np.float64)

    def predict_proba(self, x) -> np.ndarray:
        """(N, C) class probabilities."""
        z = self.logits(x)
        if self.n_classes == 2:
            p = 1.0 / (1.0 + np.exp(-z[:, 0]))
            return np.stack([1 - p, p], axis=1)
        z -= z.max(axis=1, keepdims=True)
        e = np.exp(z)
        return e / e.sum(axis=1, keepdims=True)

    def predict(self, x) -> np.ndarray:
        return self.predict_proba(x).argmax(axis=1)


def _train_logreg(x, y, n_features, n_classes, l2, epochs, batch_size, lr, seed) -> Linear:
    """Minimise mean cross-entropy + l2/2 ||W||^2 (bias not penalised) with Adam over shuffled
    mini-batches for ``epochs`` epochs (more on small data: at least BOW_MIN_STEPS steps); the
    learning rate decays to 0 (cosine) so the last epochs settle."""
    rng = np.random.default_rng(seed)
    binary = n_classes == 2
    linear = Linear(n_features, 1 if binary else n_classes, seed=seed)
    linear.weight.data[...] = 0.0                  # a convex problem: start from zero
    linear.bias.data[...] = 0.0
    loss = BCEWithLogitsLoss() if binary else CrossEntropyLoss()
    opt = Adam(linear.parameters(), lr=lr)
    steps = math.ceil(len(x) / batch_size)
    # at least BOW_MIN_STEPS updates, so small data sets are fitted too
    schedule_steps = max(epochs, math.ceil(BOW_MIN_STEPS / steps)) * steps
    for step in range(schedule_steps):
        if step % steps == 0:
            order = rng.permutation(len(x))
        opt.lr = lr * 0.5 * (1 + math.cos(math.pi * step / schedule_steps))
        idx = order[(step % steps) * batch_size:(step % steps + 1) * batch_size]
        opt.zero_grad()
        z = linear(bow_matrix(x[idx], n_features))
        target = y[idx].astype(np.float32)[:, None] if binary else y[idx]
        _, grad = loss(z, target)
        linear.backward(grad)
        linear.weight.grad += l2 * linear.weight.data     # d/dW of l2/2 ||W||^2
        opt.step()
    return linear


def _log_loss(proba, y) -> float:
    return float(-np.mean(np.log(np.clip(proba[np.arange(len(y)), y], 1e-12, None))))


def fit_bow_logreg(x_train, y_train, x_val, y_val, n_features: int, n_classes: int = 2,
                   l2_grid=BOW_L2_GRID, epochs: int = BOW_EPOCHS, batch_size: int = BOW_BATCH,
                   lr: float = BOW_LR, seed: int = 0) -> BowLogReg:
    """Fit one logistic regression per L2 strength in ``l2_grid`` on the training rows and keep
    the one with the best validation accuracy (ties: lower validation log-loss).

    ``x_*`` are (N, T) token-id matrices (0 = padding), ``y_*`` class ids 0..C-1."""
    x_train, x_val = np.asarray(x_train), np.asarray(x_val)
    y_train, y_val = np.asarray(y_train, np.int64), np.asarray(y_val, np.int64)
    best, grid = None, {}
    for l2 in l2_grid:
        linear = _train_logreg(x_train, y_train, n_features, n_classes, float(l2), epochs,
                               batch_size, lr, seed)
        fitted = BowLogReg(linear, n_features, n_classes, float(l2), grid)
        proba = fitted.predict_proba(x_val)
        acc = float(np.mean(proba.argmax(axis=1) == y_val))
        loss = _log_loss(proba, y_val)
        grid[float(l2)] = {"val_accuracy": acc, "val_loss": loss}
        if best is None or (acc, -loss) > (best[0], -best[1]):
            best = (acc, loss, fitted)
    return best[2]


# ----------------------------------------------------------------------------- metrics

def classification_metrics(y_true, y_pred, n_classes: int = 2) -> dict:
    """Accuracy, F1 (binary: of class 1; else the macro average over classes) and the
    confusion matrix (rows: true class, columns: predicted; binary [[tn, fp], [fn, tp]]).

    >>> m = classification_metrics([0, 0, 1, 1], [0, 1, 1, 1])
    >>> m["accuracy"], round(m["f1"], 4), m["confusion_matrix"]
    (0.75, 0.8, [[1, 1], [0, 2]])
    """
    y_true = np.asarray(y_true, np.int64)
    y_pred = np.asarray(y_pred, np.int64)
    cm = np.zeros((n_classes, n_classes), np.int64)
    np.add.at(cm, (y_true, y_pred), 1)
    tp = np.diag(cm).astype(np.float64)
    predicted, actual = cm.sum(axis=0), cm.sum(axis=1)
    denom = predicted + actual
    f1 = np.divide(2 * tp, denom, out=np.zeros_like(tp), where=denom > 0)
    return {"accuracy": float(tp.sum() / max(len(y_true), 1)),
            "f1": float(f1[1] if n_classes == 2 else f1.mean()),
            "confusion_matrix": cm.tolist()}


# ----------------------------------------------------------------------------- figure

def _plot_task(path, history, baseline_val_acc, metrics, class_names, title, ensemble=None):
    """Validation accuracy per epoch vs the baseline's, and the two test confusion matrices.
    ``ensemble``: ``(n, validation accuracy)`` of the averaged models, drawn as a line (the
    curves are the first model's)."""
    plt = plots._pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2),
                             gridspec_kw={"width_ratios": [1.6, 1, 1]})
    ax = axes[0]
    acc = history.get("val_accuracy") or []
    epochs = np.arange(1, len(acc) + 1)
    if len(acc):
        ax.plot(epochs, acc, "s-", ms=3,
                label="model (validation)" if ensemble is None else "model 1 (validation)")
        train_acc = history.get("accuracy") or []
        ax.plot(epochs[:len(train_acc)], train_acc, "o-", ms=3, alpha=0.5,
                label="model (training)" if ensemble is None else "model 1 (training)")
        losses = history.get("val_loss") or []
        if losses and np.isfinite(losses).any():
            best = int(np.nanargmin(losses))
            ax.plot([best + 1], [acc[best]], "*", ms=12, color="C3",
                    label=f"kept: epoch {best + 1}")
    ax.axhline(baseline_val_acc, ls="--", color="gray", lw=1.0,
               label="bag-of-words logreg (validation)")
    if ensemble is not None:
        ax.axhline(ensemble[1], ls="-", color="C2", lw=1.0,
                   label=f"{ensemble[0]} models averaged (validation)")
    ax.set_xlabel("epoch")
    if len(acc):
        plots.epoch_axis(ax, len(acc))
    ax.set_ylabel("accuracy (fraction correct)")
    ax.set_title(f"{title}: accuracy per epoch")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    for ax, (name, m) in zip(axes[1:], metrics):
        cm = np.asarray(m["confusion_matrix"])
        ax.imshow(cm, cmap="Blues")
        for (i, j), v in np.ndenumerate(cm):
            ax.text(j, i, str(v), ha="center", va="center",
                    color="white" if v > cm.max() / 2 else "black")
        ticks = np.arange(len(class_names))
        ax.set_xticks(ticks, class_names, rotation=30 if len(class_names) > 2 else 0)
        ax.set_yticks(ticks, class_names)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        ax.set_title(f"{name}: test accuracy {m['accuracy']:.3f}")
    fig.tight_layout()
    return plots._save(fig, path)


# ----------------------------------------------------------------------------- run

# what --predict reads back from model.npz's extra besides the settings (what the data taught),
# checked before use (common.check_saved)
SAVED_DATA = {
    "classes": (lambda v: common.is_name_list(v) and len(v) >= 2,
                "a list of two or more distinct class names"),
}
#: what a file saved before the settings were saved whole kept of them in ``extra`` itself
LEGACY_SETTINGS = ("maxlen", "padding", "truncating", "ensemble")


def _predict(settings: ClassifySettings) -> int:
    ck, extra = common.load_saved(settings.out, "classify", "--predict")
    path = os.path.join(settings.out, "model.npz")
    common.check_saved(extra, path, "--predict", SAVED_DATA)
    saved = common.saved_settings(ClassifySettings, extra, path, "--predict", LEGACY_SETTINGS)
    vocab = common.restore("--predict", path, "vocabulary",
                           lambda: Vocabulary().load_state_dict(extra["vocabulary"]))
    texts = list(settings.predict)
    for t in texts:
        if not vocab.tokenize(t):
            raise CommandError(f"error: --predict: the text {t!r} has no words")
    x = _encode(vocab, texts, saved.maxlen, saved.padding, saved.truncating)
    names = extra["classes"]
    members = _load_members(settings.out, extra, saved.ensemble, ck.model, "--predict")
    try:
        proba = _ensemble_probabilities(members, x)
    except ValueError as e:                       # e.g. word ids beyond its embedding
        raise CommandError(f"error: --predict: {path} is damaged: its network does not read "
                           f"its vocabulary's ids: {e}") from None
    if proba.shape[1] != len(names):
        raise CommandError(f"error: --predict: {path} is damaged: its network scores "
                           f"{proba.shape[1]} classes, its settings name {len(names)}")
    if len(names) == 2:
        print(f"P({names[1]})  text")
        for t, p in zip(texts, proba[:, 1]):
            print(f"{p:.4f}  {t}")
    else:
        print("class  probability  text")
        for t, p in zip(texts, proba):
            k = int(p.argmax())
            print(f"{names[k]}  {p[k]:.4f}  {t}")
    return 0


def run(args) -> int:
    settings = ClassifySettings.from_args(args)
    comm = common.setup_run(settings)
    if settings.predict:
        return _predict(settings)
    with distributed.abort_on_error(comm):
        return _run(settings, comm)


def _run(settings: ClassifySettings, comm=None) -> int:
    root = comm is None or comm.is_root
    start = time.perf_counter()
    out_dir = common.prepare_out_dir(settings.out, settings.resume, writer=root)

    # data: load, subset, stratified split; the vocabulary sees the training texts only
    texts, labels, class_names, source = _load_data(settings)
    n_classes = len(class_names)
    keep = _subset(labels, settings.limit, settings.seed)
    texts, labels = [texts[k] for k in keep], labels[keep]
    train_frac = 1.0 - settings.val_fraction - settings.test_fraction
    try:
        tr, va, te = stratified_split(labels, (train_frac, settings.val_fraction,
                                               settings.test_fraction), seed=settings.seed)
    except ValueError as e:
        raise CommandError(f"error: cannot split {len(labels)} texts by label: {e}") from None
    vocab = Vocabulary(max_words=settings.max_words).fit([texts[k] for k in tr])
    seqs = vocab.encode(texts)
    x = _pad(seqs, settings.maxlen, settings.padding, settings.truncating)
    y = labels.astype(np.float32) if n_classes == 2 else labels
    V = len(vocab)
    lengths = np.array([len(s) for s in seqs])
    print(f"{source}: {len(texts)} texts, {n_classes} classes ({', '.join(class_names)}); "
          f"train {len(tr)}, validation {len(va)}, test {len(te)}; vocabulary {V} ids; "
          f"{np.mean(lengths):.1f} tokens per text on average, "
          f"{np.mean(lengths > settings.maxlen):.1%} cut at --maxlen {settings.maxlen}")

    # models, training (each: best by validation loss, checkpoints, --resume); the ensemble
    # averages the members' probabilities
    extra = {"task": "classify", "settings": settings.to_dict(invocation=False),
             "data": source, "classes": class_names, "vocabulary": vocab.state_dict(),
             "mask_value": MASK}
    if settings.resume:
        last = os.path.join(out_dir, "last.npz")
        saved = common.read_checkpoint(last, "--resume").extra or {}
        if saved.get("vocabulary") != extra["vocabulary"] or saved.get("classes") != class_names:
            raise CommandError(f"error: --resume: {last} was trained "
                               f"on other data or another vocabulary; use the same data options "
                               f"(--csv, --max-words, --limit, --seed, fractions) as the first run")
        first = common.saved_settings(ClassifySettings, saved, last, "--resume",
                                      LEGACY_SETTINGS)
        if first.ensemble != settings.ensemble:
            raise CommandError(f"error: --resume: {last} was trained with --ensemble "
                               f"{first.ensemble}; use the same --ensemble as the first run")
        for k in range(1, settings.ensemble):
            path = os.path.join(member_dir(out_dir, k), "last.npz")
            if not os.path.exists(path):
                raise CommandError(f"error: --resume: no checkpoint {path} to resume from")
    members, histories, seeds = [], [], []
    for k in range(settings.ensemble):
        mdir = member_dir(out_dir, k)
        os.makedirs(mdir, exist_ok=True)
        seeds.append(member_seed(settings.seed, k))
        if settings.ensemble > 1 and not settings.quiet:
            print(f"model {k + 1} of {settings.ensemble} (seed {seeds[k]}, writes to {mdir}/)")
        model = common.build(lambda: build_model(
            V, n_classes, settings.cell, settings.embed_dim, settings.hidden, settings.layers,
            settings.bidirectional, settings.embed_dropout, settings.dropout, settings.pool,
            seeds[k], settings.recurrent_dropout, settings.layer_norm,
            settings.zoneout),
            "--embed-dim/--hidden/--layers")
        _compile(model, n_classes, settings)
        # --minutes: the members share the budget, each ending by its share of it
        budget = common.time_budget(settings, share=(k + 1) / settings.ensemble)
        model, history = common.train(model, x[tr], y[tr], (x[va], y[va]), settings, mdir,
                                      extra=extra, fit_kwargs={"mask_value": MASK}, comm=comm,
                                      budget=budget)
        if root:
            members.append(common.load_best(mdir)[0])
        histories.append(history)
    if not root:                # the other MPI ranks only train: rank 0 scores and reports
        return 0
    history = histories[0]
    p_val = _ensemble_probabilities(members, x[va])
    model_metrics = classification_metrics(labels[te], _ensemble_probabilities(members, x[te])
                                           .argmax(1), n_classes)
    model_metrics["val_accuracy"] = float(np.mean(p_val.argmax(1) == labels[va]))
    model_metrics["val_loss"] = _log_loss(p_val, labels[va])
    member_metrics = []
    for k, (member, h) in enumerate(zip(members, histories)):
        losses = h.get("val_loss") or [math.nan]
        epoch = int(np.nanargmin(losses)) + 1 if np.isfinite(losses).any() else None
        test = classification_metrics(labels[te], _probabilities(member, x[te]).argmax(1),
                                      n_classes)
        member_metrics.append({"seed": seeds[k], "best_epoch": epoch,
                               "val_accuracy": h["val_accuracy"][epoch - 1] if epoch else None,
                               "val_loss": losses[epoch - 1] if epoch else None,
                               "accuracy": test["accuracy"], "f1": test["f1"],
                               "train_seconds": round(h.get("seconds", 0.0), 2)})
    model_metrics["members"] = member_metrics

    # baseline on the same split and token ids, L2 chosen on validation
    print("bag-of-words baseline: choosing its L2 penalty on the validation texts ...",
          flush=True)
    t0 = time.perf_counter()
    bow = fit_bow_logreg(x[tr], labels[tr], x[va], labels[va], V, n_classes, seed=settings.seed)
    bow_seconds = time.perf_counter() - t0
    bow_metrics = classification_metrics(labels[te], bow.predict(x[te]), n_classes)
    bow_metrics["l2"] = bow.l2
    bow_metrics["val_accuracy"] = bow.grid[bow.l2]["val_accuracy"]

    val_losses = history.get("val_loss") or [math.nan]
    best_epoch = member_metrics[0]["best_epoch"]
    metrics = {
        "model": model_metrics,
        "baselines": {"bow_logreg": bow_metrics},
        "config": {"settings": settings.to_dict(), "data": source, "classes": class_names,
                   "samples": len(texts),
                   "train": len(tr), "validation": len(va), "test": len(te),
                   "vocabulary": V, "maxlen": settings.maxlen, "padding": settings.padding,
                   "truncating": settings.truncating, "cell": settings.cell, "pool": settings.pool,
                   "hidden": settings.hidden, "layers": settings.layers,
                   "bidirectional": settings.bidirectional, "embed_dim": settings.embed_dim,
                   "embed_dropout": settings.embed_dropout, "dropout": settings.dropout,
                   "weight_decay": settings.weight_decay, "ensemble": settings.ensemble,
                   "epochs": settings.epochs, "best_epoch": best_epoch,
                   "batch_size": settings.batch_size, "lr": settings.lr, "seed": settings.seed,
                   "parameters": int(sum(p.data.size for p in model.parameters())),
                   "train_seconds": round(sum(h.get("seconds", 0.0) for h in histories), 2),
                   "bow_l2_grid": {str(k): v for k, v in bow.grid.items()},
                   "bow_seconds": round(bow_seconds, 2)},
    }
    common.write_metrics(out_dir, metrics)

    title = f"classify ({source}, {settings.cell}{' bi' if settings.bidirectional else ''})"
    n = settings.ensemble
    if n == 1:
        heading = f"model: epoch {best_epoch} of {len(val_losses)}, lowest validation loss"
        name = f"{settings.cell} model"
    else:
        heading = (f"model: the mean probability of {n} models, each at its epoch of lowest "
                   f"validation loss: {', '.join(str(m['best_epoch']) for m in member_metrics)}")
        name = f"{settings.cell} model, {n} averaged"
    common.print_results(f"Test set: {len(te)} texts ({heading})",
                         [(name, model_metrics),
                          (f"bag-of-words logreg (l2={bow.l2:g})", bow_metrics)],
                         ["accuracy", "f1"])
    for k, h in enumerate(histories):
        common.plot_curves(h, member_dir(out_dir, k),
                           title if n == 1 else f"{title}, model {k + 1} of {n}",
                           {"loss": "cross-entropy (nats per text)",
                            "accuracy": "accuracy (fraction correct)"})
    if plots.have_matplotlib():
        _plot_task(os.path.join(out_dir, "classify.png"), history,
                   bow.grid[bow.l2]["val_accuracy"],
                   [("model" if n == 1 else f"{n} models averaged", model_metrics),
                    ("bag-of-words logreg", bow_metrics)],
                   class_names, title,
                   ensemble=(n, model_metrics["val_accuracy"]) if n > 1 else None)
    members_note = "" if n == 1 else (f"; member2/ .. member{n}/" if n > 2 else "; member2/")
    print(f"wrote {out_dir}/: model.npz, last.npz, history.csv, metrics.json, curves.png, "
          f"classify.png{members_note} ({time.perf_counter() - start:.0f}s)")
    return 0
