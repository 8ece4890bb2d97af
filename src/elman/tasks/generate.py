"""Train a character-level language model, score it in bits per character against an n-gram
baseline, and generate text from it.

Default data: Shakespeare's Hamlet (bundled, about 175k characters). The text is split in
order: the last 10 % is the test text, the 10 % before it validates (it picks the best epoch and
the n-gram's order and discount), the rest trains. The character vocabulary is fit on the
training text; characters it lacks map to a reserved unknown id.

Model: Embedding -> Dropout (--input-dropout) -> LSTM (--cell, --layers, --hidden) -> Dropout
(--dropout) -> Linear to one logit per character, at every step, trained on the cross-entropy
of the next character with Adam (AdamW with --weight-decay) and gradient-norm clipping (--clip).
Truncated backpropagation through time over contiguous, stateful batches: the training text is
cut into --batch-size parallel streams, each batch is the next --bptt characters of every
stream, and the final state of one batch is the initial state of the next (the gradient stops
at the batch boundary). Every epoch starts the streams at a new random offset. The learning
rate halves when the validation score has not improved for two epochs. Training ends after
--epochs, after --patience epochs without a better validation score, or before an epoch that
would end after the --minutes budget, whichever comes first. With --ema the moving average of
the weights is what is scored and saved.

Scores: bits per character (the mean of -log2 p(next character)) on the validation and test
texts, each read from its start as one stream with the state carried through it (the n-gram
scores the same positions from the same empty history).

Baseline: a character n-gram model with interpolated absolute discounting and Kneser-Ney
continuation counts (elman.ngram), order 1-8 and discount chosen on the validation text.

Sampling: after training, and with --sample from a saved model (no training), the model reads
--prime and continues it for --length characters, each drawn from the softmax of the logits
divided by --temperature, restricted to the --top-k likeliest characters and to the smallest
set holding --top-p of the probability (nucleus sampling).

Writes into --out (default runs/generate): model.npz (the epoch with the best validation
score; elman.load reads it, and its extra holds the vocabulary and options), last.npz (for
--resume), history.csv (per epoch: loss and val_loss in bits per character, lr, seconds),
metrics.json ({"model": {"bits_per_char"}, "baselines": {"ngram": {"bits_per_char", "order"}},
"config", "sample"}), curves.png (training vs validation bits/char) and generate.png
(validation bits/char per epoch against the n-gram baseline).

Speed: elman's thread policy uses every CPU on an idle machine and fewer while other programs
keep CPUs busy (--threads caps it). The defaults stop early after about 24 epochs on Hamlet,
6-8 minutes on 2 cores. With --distributed under mpiexec each rank trains on its share of the
streams (the global batch stays --batch-size streams) and rank 0 writes everything.

Examples:
  elman generate                                 # Hamlet, at most 10 minutes of training
  elman generate --minutes 30 --epochs 200 --hidden 512
  elman generate --text my_book.txt --out runs/book
  elman generate --sample --prime "HAMLET" --temperature 0.7 --top-p 0.9
"""
from __future__ import annotations

import argparse
import contextlib
import csv
import math
import os
import time

import numpy as np

from .. import checkpoint, distributed, ngram, plots, registry, threads
from .._validate import CommandError
from ..data.datasets import load_hamlet, read_text
from ..distributed import GradientReducer, broadcast_parameters, sync_generators
from ..data.text import CharVocabulary
from ..layers import Dropout, Embedding, Linear
from ..losses import CrossEntropyLoss
from ..model import Sequential
from ..optim import Adam, AdamW, ReduceLROnPlateau, clip_grad_norm_
from ..recurrent import RecurrentLayer
from . import common

HELP = "train a character-level language model (default: Hamlet) vs an n-gram, and sample " \
       "text from it"

BUNDLED = "hamlet"              # the name of the bundled text in the checkpoint's extra
MAX_LENGTH = 10_000_000         # characters per sample (about five minutes of sampling)
LN2 = math.log(2.0)
HISTORY_FIELDS = ("epoch", "loss", "val_loss", "lr", "seconds")


def add_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("data")
    g.add_argument("--text", metavar="FILE", help="your own text file, to use instead of the "
                   "bundled Hamlet")
    g.add_argument("--encoding", default="utf-8", help="the encoding of --text "
                   "(default: %(default)s)")
    g.add_argument("--max-chars", type=int, metavar="N",
                   help="use only the first N characters of the text, for quick trials "
                   "(None: all)")
    g.add_argument("--val-fraction", type=float, default=0.1,
                   help="share of the text, before the test part, that validates "
                   "(default: %(default)s)")
    g.add_argument("--test-fraction", type=float, default=0.1,
                   help="share at the end of the text that tests (default: %(default)s)")
    common.add_common_arguments(p, cell="lstm", hidden=512, layers=1, epochs=100,
                                batch_size=32, lr=3e-3, out="runs/generate",
                                bidirectional=False)
    for action in p._actions:          # the shared options, in this task's words
        if action.dest == "batch_size":
            action.help = "parallel streams of the training text in each batch"
        elif action.dest == "seed":
            action.help = "seed for the weights, the epochs' stream offsets, dropout and sampling"
    g = p.add_argument_group("language model")
    g.add_argument("--embedding", type=int, default=32, metavar="E",
                   help="character embedding size (default: %(default)s)")
    g.add_argument("--bptt", type=int, default=64, metavar="K",
                   help="characters per batch and stream: the truncation length of "
                   "backpropagation through time (default: %(default)s)")
    g.add_argument("--dropout", type=float, default=0.5,
                   help="dropout on the recurrent output (and between layers) "
                   "(default: %(default)s)")
    g.add_argument("--input-dropout", type=float, default=0.1,
                   help="dropout on the character embeddings (default: %(default)s)")
    g.add_argument("--weight-decay", type=float, default=0.0,
                   help="decoupled weight decay (AdamW); 0: plain Adam (default: %(default)s)")
    g.add_argument("--ema", type=float, default=0.0, metavar="DECAY",
                   help="score and save an exponential moving average of the weights with "
                   "this decay per batch (e.g. 0.995); 0: the weights themselves "
                   "(default: %(default)s)")
    g.add_argument("--clip", type=float, default=5.0,
                   help="clip the gradient norm of each batch to this (0: no clipping) "
                   "(default: %(default)s)")
    g.add_argument("--patience", type=int, default=6,
                   help="stop when the validation score has not improved for this many "
                   "epochs; 0: never (default: %(default)s)")
    g.add_argument("--minutes", type=float, default=10.0,
                   help="training time budget: no epoch starts that would end after it; "
                   "0 means no limit (default: %(default)s)")
    g = p.add_argument_group("sampling")
    g.add_argument("--sample", action="store_true", help="do not train: load OUT/model.npz "
                   "and print a sample")
    g.add_argument("--prime", default="\n", help="text the sample continues (default: "
                   "%(default)r)")
    g.add_argument("--length", type=int, default=600,
                   help="characters to generate; 0: no sample (default: %(default)s)")
    g.add_argument("--temperature", type=float, default=0.8,
                   help="divide the logits by this: <1 safer, >1 wilder (default: %(default)s)")
    g.add_argument("--top-k", type=int, default=0, metavar="K",
                   help="sample only among the K likeliest characters; 0: all "
                   "(default: %(default)s)")
    g.add_argument("--top-p", type=float, default=1.0, metavar="P",
                   help="nucleus sampling: only among the likeliest characters that together "
                   "hold probability P; 1: all (default: %(default)s)")


# -- options -------------------------------------------------------------------------------------

def check_sampling(args) -> None:
    if not args.temperature > 0 or not math.isfinite(args.temperature):
        raise CommandError(f"error: --temperature must be a positive number, got "
                           f"{args.temperature}")
    if args.top_k < 0:
        raise CommandError(f"error: --top-k must be 0 (off) or a positive integer, got "
                           f"{args.top_k}")
    if not 0 < args.top_p <= 1:
        raise CommandError(f"error: --top-p must be in (0, 1], got {args.top_p}")
    if not 0 <= args.length <= MAX_LENGTH:
        raise CommandError(f"error: --length must be from 0 to {MAX_LENGTH:_}, got "
                           f"{args.length}")
    if not args.prime:
        raise CommandError("error: --prime must not be empty: the sample continues it")


def check_training(args) -> None:
    common.check_positive(args, "hidden", "layers", "epochs", "batch_size", "embedding", "bptt")
    if args.max_chars is not None and args.max_chars < 1:
        raise CommandError(f"error: --max-chars must be a positive integer, got {args.max_chars}")
    for name in ("val_fraction", "test_fraction"):
        v = getattr(args, name)
        if not 0 < v < 1:
            raise CommandError(f"error: --{name.replace('_', '-')} must be between 0 and 1, "
                               f"got {v}")
    if args.val_fraction + args.test_fraction >= 1:
        raise CommandError(f"error: --val-fraction + --test-fraction must be below 1, got "
                           f"{args.val_fraction} + {args.test_fraction}")
    for name in ("dropout", "input_dropout", "ema"):
        v = getattr(args, name)
        if not 0 <= v < 1:
            raise CommandError(f"error: --{name.replace('_', '-')} must be in [0, 1), got {v}")
    if not args.weight_decay >= 0:
        raise CommandError(f"error: --weight-decay must be 0 or positive, got "
                           f"{args.weight_decay}")
    if not args.clip >= 0:
        raise CommandError(f"error: --clip must be 0 (off) or positive, got {args.clip}")
    if args.patience < 0:
        raise CommandError(f"error: --patience must be 0 (never stop early) or positive, got "
                           f"{args.patience}")
    if not args.minutes >= 0:
        raise CommandError(f"error: --minutes must be 0 (no limit) or positive, got "
                           f"{args.minutes}")
    check_sampling(args)


# -- data ----------------------------------------------------------------------------------------

def load_text(args) -> tuple[str, str, str]:
    """(text, source, label): the bundled Hamlet or the user's file, cut to --max-chars."""
    if args.text is None:
        text, source, label = load_hamlet(), BUNDLED, "Hamlet"
    else:
        if not os.path.exists(args.text):
            raise CommandError(f"error: --text: no such file: {args.text}")
        if not os.path.isfile(args.text):
            raise CommandError(f"error: --text: {args.text} is not a regular file (a directory, "
                               f"FIFO or device)")
        try:
            text = read_text(args.text, encoding=args.encoding)
        except ValueError as e:
            raise CommandError(f"error: --text: {e}") from None
        source, label = os.path.abspath(args.text), os.path.basename(args.text)
    if args.max_chars is not None:
        text = text[:args.max_chars]
    return text, source, label


def split_text(text: str, val_fraction: float, test_fraction: float) -> tuple[str, str, str]:
    """Contiguous (train, validation, test): the test text is the last ``test_fraction`` of
    the characters, validation the ``val_fraction`` before it.

    >>> split_text("abcdefghijklmnopqrst", 0.2, 0.1)
    ('abcdefghijklmn', 'opqr', 'st')
    """
    n = len(text)
    n_test, n_val = int(n * test_fraction), int(n * val_fraction)
    n_train = n - n_val - n_test
    for what, size in (("test", n_test), ("validation", n_val), ("training", n_train)):
        if size < 2:
            raise CommandError(f"error: the text has {n} characters, which leaves {size} for "
                               f"the {what} part; it needs at least 2 (use a longer text or "
                               f"other --val-fraction / --test-fraction)")
    return text[:n_train], text[n_train:n_train + n_val], text[n_train + n_val:]


def stream_batches(ids: np.ndarray, streams: int, bptt: int, offset: int = 0):
    """Truncated-BPTT batches over ``streams`` contiguous parallel streams of ``ids``.

    The text from ``offset`` is cut into ``streams`` equal consecutive pieces (the remainder is
    dropped); batch j holds characters ``j*bptt .. (j+1)*bptt`` of every piece as inputs and
    the characters one further as targets, both (steps, streams) (time-major), so the final
    state of batch j is the right initial state of batch j + 1. Returns a list of (x, y).

    >>> [(x.T.tolist(), y.T.tolist()) for x, y in stream_batches(np.arange(9), 2, 3)]
    [([[0, 1, 2], [4, 5, 6]], [[1, 2, 3], [5, 6, 7]]), ([[3], [7]], [[4], [8]])]
    """
    usable = len(ids) - offset - 1                 # every input needs a next character
    length = usable // streams
    if length < 1:
        raise CommandError(f"error: --batch-size: {streams} streams need at least {streams + 1} "
                           f"training characters, got {len(ids) - offset}; use a smaller "
                           f"--batch-size or a longer text")
    x = ids[offset:offset + streams * length].reshape(streams, length)
    y = ids[offset + 1:offset + 1 + streams * length].reshape(streams, length)
    return [(np.ascontiguousarray(x[:, j:j + bptt].T), np.ascontiguousarray(y[:, j:j + bptt].T))
            for j in range(0, length, bptt)]


# -- the model ----------------------------------------------------------------------------------

def build_model(vocab_size: int, args) -> Sequential:
    """Embedding -> [Dropout] -> recurrent stack -> [Dropout] -> Linear(vocab) as a
    Sequential, so that ``elman.load`` rebuilds it; the stateful loop below calls its layers
    directly."""
    s = args.seed
    rnn = registry.get("recurrent", args.cell)(
        args.embedding, args.hidden, num_layers=args.layers,
        dropout=args.dropout if args.layers > 1 else 0.0, seed=s + 1,
        recurrent_dropout=getattr(args, "recurrent_dropout", 0.0),
        layer_norm=getattr(args, "layer_norm", False), zoneout=getattr(args, "zoneout", 0.0))
    layers = [Embedding(vocab_size, args.embedding, seed=s)]
    if getattr(args, "input_dropout", 0) > 0:
        layers.append(Dropout(args.input_dropout, seed=s + 4))
    layers.append(rnn)
    if args.dropout > 0:
        layers.append(Dropout(args.dropout, seed=s + 2))
    layers.append(Linear(args.hidden, vocab_size, seed=s + 3))
    return Sequential(layers, seed=s)


def _split_layers(model: Sequential):
    """(layers before the recurrent one, the recurrent layer, layers after it)."""
    if not isinstance(model, Sequential):
        raise TypeError(f"the model must be a Sequential, got {type(model).__name__}")
    layers = model.layers
    k = next((i for i, layer in enumerate(layers) if isinstance(layer, RecurrentLayer)), None)
    if k is None:
        raise ValueError("the model has no recurrent layer")
    return layers[:k], layers[k], layers[k + 1:]


def forward(model: Sequential, x: np.ndarray, state=None):
    """Time-major ids ``x`` (T, B) -> logits (T, B, V) and the recurrent layer's final state
    (``(h, c)`` for an LSTM), starting from ``state`` (zeros when None)."""
    pre, rnn, head = _split_layers(model)
    h = x
    for layer in pre:
        h = layer(h)
    h, state = rnn(h, state)
    for layer in head:
        h = layer(h)
    return h, state


def backward(model: Sequential, dlogits: np.ndarray) -> None:
    """Backpropagate the last :func:`forward` into the parameters' ``grad``. No gradient
    flows into the initial state's producer: that is the truncation."""
    pre, rnn, head = _split_layers(model)
    g = dlogits
    for layer in reversed(head):
        g = layer.backward(g)
    g, _ = rnn.backward(g, None)
    for layer in reversed(pre):
        g = layer.backward(g)


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    z = logits.astype(np.float64)
    z -= z.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


def bits_per_char(model: Sequential, ids: np.ndarray, chunk: int = 2048) -> float:
    """Mean -log2 p(ids[t] | ids[:t]) over t = 1..n-1: the text is read as one stream from a
    zero state, in chunks with the state carried across them."""
    if len(ids) < 2:
        raise ValueError("bits_per_char needs at least 2 characters")
    was_training = model.training
    model.eval()
    x, y = ids[:-1], ids[1:]
    total, state = 0.0, None
    for s in range(0, len(x), chunk):
        logits, state = forward(model, x[s:s + chunk, None], state)
        logp = _log_softmax(logits[:, 0])
        total -= float(np.take_along_axis(logp, y[s:s + chunk, None], axis=1).sum())
    model.train(was_training)
    return total / len(x) / LN2


# -- sampling ----------------------------------------------------------------------------------

def next_char_distribution(logits: np.ndarray, temperature: float = 1.0, top_k: int = 0,
                           top_p: float = 1.0, banned=(CharVocabulary.UNK,)) -> np.ndarray:
    """The sampling distribution for one step (float64, sums to 1): softmax(logits /
    temperature) with the ``banned`` ids (the unknown character) removed, then only the
    ``top_k`` likeliest ids (0: all), then only the smallest set of likeliest ids whose
    probability reaches ``top_p`` (nucleus), renormalised.

    >>> p = next_char_distribution(np.log([0.1, 0.2, 0.3, 0.4]), top_p=0.6, banned=())
    >>> p.round(3).tolist()
    [0.0, 0.0, 0.429, 0.571]
    """
    z = np.asarray(logits, dtype=np.float64) / temperature
    z = z - z.max()
    p = np.exp(z)
    p[list(banned)] = 0.0
    if p.sum() == 0:                     # only banned ids had mass: fall back to the rest
        p = np.ones_like(p)
        p[list(banned)] = 0.0
    p /= p.sum()
    order = np.argsort(-p, kind="stable")
    keep = np.zeros(p.shape, bool)
    if top_k and top_k < p.size:
        keep[order[:top_k]] = True
    else:
        keep[:] = True
    if top_p < 1.0:
        cum = np.cumsum(p[order])
        # the smallest prefix whose mass reaches top_p (always at least one id)
        n = int(np.searchsorted(cum, top_p - 1e-12)) + 1
        nucleus = np.zeros(p.shape, bool)
        nucleus[order[:n]] = True
        keep &= nucleus
    p = np.where(keep, p, 0.0)
    return p / p.sum()


def sample(model: Sequential, vocab: CharVocabulary, prime: str, length: int,
           temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0, seed=0) -> str:
    """Read ``prime`` and continue it by ``length`` sampled characters (returned without the
    prime). Characters of the prime that the vocabulary lacks are read as the unknown id."""
    rng = np.random.default_rng(seed)
    was_training = model.training
    model.eval()
    logits, state = forward(model, vocab.encode(prime)[:, None], None)
    last = logits[-1, 0]
    out = []
    for _ in range(length):
        p = next_char_distribution(last, temperature, top_k, top_p)
        c = int(rng.choice(p.size, p=p))
        out.append(c)
        logits, state = forward(model, np.array([[c]]), state)
        last = logits[0, 0]
    model.train(was_training)
    return vocab.decode(np.array(out, dtype=np.int64))


# -- training ----------------------------------------------------------------------------------

def _options(args, vocab_size: int) -> dict:
    keys = ("cell", "hidden", "layers", "embedding", "dropout", "input_dropout", "bptt",
            "batch_size", "lr", "weight_decay", "clip", "ema", "seed", "recurrent_dropout",
            "layer_norm")
    return {**{k: getattr(args, k) for k in keys}, "vocab_size": vocab_size}


def _write_history(path: str, rows: list[dict]) -> None:
    with common.atomic_text(path) as f:
        w = csv.DictWriter(f, fieldnames=HISTORY_FIELDS)
        w.writeheader()
        for r in rows:
            w.writerow({k: (f"{r[k]:.6g}" if isinstance(r[k], float) else r[k])
                        for k in HISTORY_FIELDS})


def _read_history(path: str, epochs: int) -> list[dict]:
    """The rows of history.csv for the first ``epochs`` epochs (a row written after the last
    checkpoint, by a run that then crashed, is dropped)."""
    if not os.path.exists(path):
        return []
    with open(path, newline="") as f:
        rows = [{k: (int(r[k]) if k == "epoch" else float(r[k])) for k in HISTORY_FIELDS}
                for r in csv.DictReader(f)]
    return [r for r in rows if r["epoch"] <= epochs]


class WeightAverage:
    """An exponential moving average of the parameters, ``avg = decay * avg + (1 - decay) *
    w`` after every step, debiased as Adam's moments are (so the first steps do not lean on
    the initial weights). Averaged weights often generalise better than the last ones."""

    def __init__(self, params, decay: float):
        self.params, self.decay, self.steps = list(params), float(decay), 0
        self.avg = [np.zeros_like(p.data) for p in self.params]

    def update(self) -> None:
        self.steps += 1
        for a, p in zip(self.avg, self.params):
            a *= self.decay
            a += (1.0 - self.decay) * p.data

    @contextlib.contextmanager
    def swapped_in(self):
        """Within the block the parameters hold the average; afterwards their own values."""
        if not self.steps:
            yield
            return
        saved = [p.data.copy() for p in self.params]
        correction = 1.0 - self.decay ** self.steps
        for a, p in zip(self.avg, self.params):
            np.divide(a, correction, out=p.data)
        try:
            yield
        finally:
            for w, p in zip(saved, self.params):
                p.data[...] = w

    def state_dict(self) -> dict:
        return {"decay": self.decay, "steps": self.steps, "avg": [a.copy() for a in self.avg]}

    def load_state_dict(self, state: dict) -> None:
        self.decay, self.steps = float(state["decay"]), int(state["steps"])
        for a, saved in zip(self.avg, state["avg"]):
            a[...] = saved


class Trainer:
    """The explicit training loop: state (model, optimizer, schedule, data order, best score,
    history) and one method per epoch."""

    def __init__(self, model, optimizer, scheduler, rng, args, train_ids, val_ids, out_dir,
                 extra, comm=None):
        self.model, self.optimizer, self.scheduler, self.rng = model, optimizer, scheduler, rng
        # data-parallel: each MPI rank runs its share of the streams (elman.distributed)
        self.comm = comm
        self.root = comm is None or comm.is_root
        self.reducer = None if comm is None else GradientReducer(comm, model.parameters())
        self.args, self.train_ids, self.val_ids = args, train_ids, val_ids
        self.best_path = os.path.join(out_dir, "model.npz")
        self.last_path = os.path.join(out_dir, "last.npz")
        self.history_path = os.path.join(out_dir, "history.csv")
        self.extra = extra                     # what prediction needs: vocab, options, data
        self.loss_fn = CrossEntropyLoss()
        self.average = WeightAverage(model.parameters(), args.ema) if args.ema > 0 else None
        self.best = math.inf                   # the best validation bits/char so far
        self.history: list[dict] = []

    def scored_weights(self):
        """A context in which the model holds the weights that are scored and saved as best."""
        return self.average.swapped_in() if self.average else contextlib.nullcontext()

    def state(self) -> dict:
        """The training state that the model and optimizer do not hold, for last.npz."""
        return {"rng": self.rng.bit_generator.state, "scheduler": self.scheduler.state_dict(),
                "best_val_bits_per_char": self.best if math.isfinite(self.best) else None,
                "average": self.average.state_dict() if self.average else None}

    def load_state(self, state: dict) -> None:
        self.rng.bit_generator.state = state["rng"]
        self.scheduler.load_state_dict(state["scheduler"])
        best = state["best_val_bits_per_char"]
        self.best = math.inf if best is None else float(best)
        if self.average:
            self.average.load_state_dict(state["average"])

    def epoch(self) -> dict:
        args, model, opt = self.args, self.model, self.optimizer
        params = model.parameters()
        start = time.perf_counter()
        model.train()
        # a new offset each epoch moves the truncation boundaries through the text
        room = min(args.bptt, len(self.train_ids) - args.batch_size - 1)
        offset = int(self.rng.integers(0, room)) if room > 0 else 0
        if self.comm is not None:
            sync_generators(self.comm, model)
        state, total, count = None, 0.0, 0
        for x, y in stream_batches(self.train_ids, args.batch_size, args.bptt, offset):
            size = y.size                       # characters in the (global) batch
            if self.comm is not None:           # this rank's streams
                streams = self.comm.shard(np.arange(x.shape[1]))
                x, y = x[:, streams], y[:, streams]
            opt.zero_grad()
            # forward: from the state the previous batch ended in
            logits, state = forward(model, x, state)
            # loss: mean cross-entropy of the next character over all steps and streams
            loss, dlogits = self.loss_fn(logits, y)
            # backward: through this batch only (truncated BPTT)
            if math.isfinite(loss):
                backward(model, dlogits)
            if self.reducer is not None:        # the global batch's gradient and loss
                loss = self.reducer.reduce(loss, y.size)
            if not math.isfinite(loss):
                raise CommandError(f"error: the training loss became {loss} at epoch "
                                   f"{model.epoch + 1}; try a smaller --lr or --clip")
            # clip: the joint gradient norm, against the rare exploding batch
            if args.clip > 0:
                clip_grad_norm_(params, args.clip)
            # step
            opt.step()
            if self.average:
                self.average.update()
            total += loss * size
            count += size
        # evaluate: the validation text as one stream
        with self.scored_weights():
            val = bits_per_char(model, self.val_ids)
        model.epoch += 1
        self.scheduler.step(val)
        improved = val < self.best
        if improved:
            self.best = val
        row = {"epoch": model.epoch, "loss": total / count / LN2, "val_loss": val,
               "lr": float(opt.lr), "seconds": time.perf_counter() - start}
        # checkpoint: best model, then the state to resume from, then the history row
        self.history.append(row)
        if self.root:
            if improved:
                with self.scored_weights():
                    checkpoint.save(model, self.best_path, extra=self.extra)
            checkpoint.save(model, self.last_path, optimizer=opt,
                            extra={**self.extra, "training": self.state()})
            _write_history(self.history_path, self.history)
        row["improved"] = improved
        return row


def train(model, args, train_ids, val_ids, out_dir, extra, comm=None):
    """Train from scratch or resume OUT/last.npz, up to --epochs epochs in total and within the
    --minutes budget. Returns (model with the last weights, history rows, seconds, why it
    stopped)."""
    last_path = os.path.join(out_dir, "last.npz")
    rng = np.random.default_rng([args.seed, 4])
    if args.resume:
        ck = common.read_checkpoint(last_path, "--resume")
        if ck.model.config() != model.config():
            raise CommandError(f"error: --resume: {last_path} holds a different architecture "
                               f"than these options build; use the same options as the first run")
        if ck.extra.get("vocab") != extra["vocab"]:
            raise CommandError(f"error: --resume: {last_path} was trained on a text with another "
                               f"character set; use the same --text / --max-chars")
        model, optimizer = ck.model, ck.optimizer
        saved = ck.extra.get("training") or {}
        if optimizer is None or "rng" not in saved:
            raise CommandError(f"error: --resume: {last_path} holds no training state")
        if (saved.get("average") is None) != (args.ema == 0):
            raise CommandError(f"error: --resume: {last_path} was trained "
                               f"{'without' if saved.get('average') is None else 'with'} --ema; "
                               f"use the same --ema as the first run")
    elif args.weight_decay > 0:
        optimizer = AdamW(model.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    else:
        optimizer = Adam(model.parameters(), lr=args.lr)
        model.epoch = 0
    scheduler = ReduceLROnPlateau(optimizer, factor=0.5, patience=1, threshold=1e-3)
    root = comm is None or comm.is_root
    if comm is not None:
        broadcast_parameters(comm, model.parameters())
        threads.share_cpus(comm.local_size)
    trainer = Trainer(model, optimizer, scheduler, rng, args, train_ids, val_ids, out_dir, extra,
                      comm)
    if args.resume:
        trainer.load_state(ck.extra["training"])
        trainer.history = _read_history(trainer.history_path, model.epoch)
        if model.epoch >= args.epochs and root:
            print(f"{last_path} has already trained {model.epoch} epochs (--epochs "
                  f"{args.epochs}): nothing to do")
    elif root and os.path.exists(trainer.history_path):
        os.remove(trainer.history_path)

    budget = args.minutes * 60 if args.minutes > 0 else math.inf
    start, durations, stopped = time.perf_counter(), [], "epochs"
    while model.epoch < args.epochs:
        elapsed = time.perf_counter() - start
        why = None
        if durations and elapsed + float(np.mean(durations)) > budget:
            why = ("minutes", f"stopping after epoch {model.epoch}: another epoch (about "
                   f"{np.mean(durations):.0f}s) would end after the --minutes "
                   f"{args.minutes:g} budget ({elapsed:.0f}s used)")
        elif args.patience and trainer.history:
            best_epoch = min(trainer.history, key=lambda r: r["val_loss"])["epoch"]
            if model.epoch - best_epoch >= args.patience:
                why = ("patience", f"stopping after epoch {model.epoch}: no better validation "
                       f"score for {args.patience} epochs (--patience)")
        if comm is not None:            # rank 0's clock decides for all: no rank left waiting
            why = comm.bcast_object(why)
        if why is not None:
            stopped = why[0]
            if root:
                print(why[1])
            break
        row = trainer.epoch()
        durations.append(row["seconds"])
        # log
        if not args.quiet and root:
            print(f"epoch {row['epoch']:3d}/{args.epochs}  loss {row['loss']:.4f}  val_loss "
                  f"{row['val_loss']:.4f} bits/char  lr {row['lr']:.2g}  {row['seconds']:.1f}s"
                  + ("  *best" if row["improved"] else ""), flush=True)
    return model, trainer.history, time.perf_counter() - start, stopped


# -- the command -------------------------------------------------------------------------------

def run_sample(args) -> int:
    check_sampling(args)
    if args.resume:
        raise CommandError("error: --sample does not train; leave out --resume")
    if args.length < 1:
        raise CommandError(f"error: --length must be positive with --sample, got {args.length}")
    ck, extra = common.load_saved(args.out, "generate", "--sample")
    path = os.path.join(args.out, "model.npz")
    if "vocab" not in extra:
        raise CommandError(f"error: --sample: {path} holds no vocabulary")
    vocab = common.restore("--sample", path, "vocabulary",
                           lambda: CharVocabulary().load_state_dict(extra["vocab"]))
    try:                                  # the network must be the one `elman generate` builds
        logits, _ = forward(ck.model, np.zeros((1, 1), np.int64))
    except (ValueError, TypeError) as e:
        raise CommandError(f"error: --sample: {path} is damaged: its network is not a "
                           f"character model: {e}") from None
    if logits.shape[-1] != len(vocab):
        raise CommandError(f"error: --sample: {path} is damaged: its network scores "
                           f"{logits.shape[-1]} characters, its vocabulary has {len(vocab)}")
    text = sample(ck.model, vocab, args.prime, args.length, args.temperature, args.top_k,
                  args.top_p, seed=args.seed)
    print(args.prime + text)
    return 0


def run(args) -> int:
    comm = common.setup_run(args)
    if args.sample:
        return run_sample(args)
    check_training(args)
    with distributed.abort_on_error(comm):
        return _run(args, comm)


def _run(args, comm=None) -> int:
    root = comm is None or comm.is_root
    out = common.prepare_out_dir(args.out, args.resume, writer=root)

    # data: a contiguous split, the vocabulary from the training text only
    text, source, label = load_text(args)
    train_text, val_text, test_text = split_text(text, args.val_fraction, args.test_fraction)
    vocab = CharVocabulary().fit(train_text)
    train_ids, val_ids, test_ids = (vocab.encode(t) for t in (train_text, val_text, test_text))
    V = len(vocab)
    sizes = {"train_chars": len(train_text), "val_chars": len(val_text),
             "test_chars": len(test_text), "vocab_size": V,
             "unseen_test_chars": int((test_ids == CharVocabulary.UNK).sum())}
    # the network first: sizes the machine cannot hold end the run before the baseline
    model = common.build(lambda: build_model(V, args), "--embedding/--hidden/--layers")
    if not root:                # the other ranks only train: rank 0 scores and reports
        extra = {"task": "generate", "vocab": vocab.state_dict(),
                 "options": _options(args, V)}
        train(model, args, train_ids, val_ids, out, extra, comm)
        return 0
    print(f"{label}: {len(text):,} characters ({len(train_text):,} train, {len(val_text):,} "
          f"validation, {len(test_text):,} test), {V} character ids"
          + ("" if comm is None else f"; training on {comm.size} MPI ranks"))

    # baseline: the n-gram model, order and discount chosen on validation
    t0 = time.perf_counter()
    lm, table = ngram.select(train_ids, val_ids, V)
    ngram_test = lm.bits_per_char(test_ids[1:], history=test_ids[:1])
    ngram_val = table[lm.order][lm.discount]
    print(f"n-gram baseline: order {lm.order}, discount {lm.discount:g}: validation "
          f"{ngram_val:.4f}, test {ngram_test:.4f} bits/char ({time.perf_counter() - t0:.1f}s)")

    # model and training
    extra = {"task": "generate", "vocab": vocab.state_dict(), "options": _options(args, V),
             "data": {"source": source, "max_chars": args.max_chars, **sizes}}
    model, history, seconds, stopped = train(model, args, train_ids, val_ids, out, extra, comm)

    # evaluate the best epoch on the test text
    best, _ = common.load_best(out)
    test_bpc = bits_per_char(best, test_ids)
    val_bpc = min((r["val_loss"] for r in history), default=math.nan)
    best_epoch = int(best.epoch)
    sample_text = ""
    if args.length > 0:
        sample_text = sample(best, vocab, args.prime, args.length, args.temperature,
                             args.top_k, args.top_p, seed=args.seed)

    name = f"{args.cell}" + (f"x{args.layers}" if args.layers > 1 else "") + f"({args.hidden})"
    metrics = {
        "model": {"bits_per_char": test_bpc, "val_bits_per_char": val_bpc,
                  "best_epoch": best_epoch},
        "baselines": {"ngram": {"bits_per_char": ngram_test, "order": lm.order,
                                "discount": lm.discount, "val_bits_per_char": ngram_val}},
        "config": {**_options(args, V), **sizes, "source": source, "max_chars": args.max_chars,
                   "epochs_trained": int(model.epoch), "train_seconds": seconds,
                   "stopped_by": stopped, "minutes": args.minutes,
                   "history_units": "bits per character"},
        "sample": {"prime": args.prime, "text": sample_text, "temperature": args.temperature,
                   "top_k": args.top_k, "top_p": args.top_p},
    }
    common.write_metrics(out, metrics)

    if sample_text:
        print(f"\nsample (best epoch {best_epoch}, temperature {args.temperature:g}):")
        print(args.prime + sample_text)
    common.print_results(
        f"{label}, bits per character (lower is better), test = last {len(test_text):,} chars",
        [(f"{name} epoch {best_epoch}", {"test": test_bpc, "validation": val_bpc}),
         (f"n-gram (order {lm.order}, D={lm.discount:g})",
          {"test": ngram_test, "validation": ngram_val})],
        ["test", "validation"])
    # figures
    if history:
        curves = {"loss": [r["loss"] for r in history],
                  "val_loss": [r["val_loss"] for r in history]}
        common.plot_curves(curves, out, f"{label}: bits per character",
                           {"loss": "bits per character"})
        if plots.have_matplotlib():
            epochs = np.arange(1, len(history) + 1)
            plots.plot_series(
                epochs, {f"{name} validation": curves["val_loss"],
                         f"{name} training (dropout on)": curves["loss"]},
                os.path.join(out, "generate.png"),
                title=f"{label}: bits per character by epoch", xlabel="epoch",
                ylabel="bits per character",
                hlines={f"n-gram order {lm.order} (validation)": ngram_val})
    print(f"\ntrained {int(model.epoch)} epochs in {seconds:.0f}s (stopped by --{stopped}); "
          f"wrote {out}/: model.npz, last.npz, history.csv, metrics.json, curves.png, "
          f"generate.png")
    return 0
