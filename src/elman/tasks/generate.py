"""Train a character-level language model, score it in bits per character against an n-gram
baseline, and generate text from it.

Default data: Shakespeare's Hamlet (bundled, about 175k characters). The text is split in
order: the last 10 % is the test text, the 10 % before it validates (it picks the best epoch and
the n-gram's order and discount), the rest trains. The character vocabulary is fit on the
training text; characters it lacks map to a reserved unknown id.

Model: Embedding -> Dropout (--input-dropout) -> LSTM (--cell, --layers, --hidden) -> Dropout
(--dropout) -> Linear to one logit per character, at every step, trained on the cross-entropy
of the next character with Adam (AdamW with --weight-decay) and gradient-norm clipping (--clip).
Trained by ``Sequential.fit`` with truncated backpropagation through time over contiguous
streams: the recurrent layer is stateful (elman.stateful), the training text is cut into
--batch-size parallel streams (elman.data.stream_windows), each batch is the next --bptt
characters of every stream, and the final state of one batch is the initial state of the next
(the gradient stops at the batch boundary); every epoch starts the streams from zero states.
The learning rate halves when the validation score has not improved for two epochs
(ReduceLROnPlateau). Training ends after --epochs, after --patience epochs without a better
validation score (EarlyStopping), or when the --minutes budget of the whole run is about to
run out (TimeBudget, checked between batches, keeping time for validation and the test
score), whichever comes first. With --ema the moving average of the weights is what is scored
and saved.

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
score; elman.load reads it, and its extra holds the vocabulary and the settings, GenerateSettings), last.npz (for
--resume), history.csv (per epoch, numbered from 1: bits_per_char and val_bits_per_char,
loss and val_loss, the cross-entropy in nats, and lr),
metrics.json ({"model": {"bits_per_char"}, "baselines": {"ngram": {"bits_per_char", "order"}},
"config", "sample"}), curves.png (training vs validation bits/char) and generate.png
(validation bits/char per epoch against the n-gram baseline).

Speed: elman's thread policy uses every CPU on an idle machine and fewer while other programs
keep CPUs busy (--threads caps it). The defaults stop early after about 25 epochs on Hamlet,
6-8 minutes on 2 quiet cores (--minutes 10 stops earlier on a busy machine). With --distributed under mpiexec each rank trains on its share of the
streams (the global batch stays --batch-size streams) and rank 0 writes everything.

Examples:
  elman generate                                 # Hamlet, at most 10 minutes in all
  elman generate --minutes 30 --epochs 200 --hidden 512
  elman generate --text my_book.txt --out runs/book
  elman generate --sample --prime "HAMLET" --temperature 0.7 --top-p 0.9
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import math
import os
import time

import numpy as np

from .. import distributed, ngram, plots
from .._validate import CommandError
from ..callbacks import Callback, EarlyStopping, LearningRateScheduler
from ..data.datasets import load_hamlet, read_text
from ..data.streams import stream_windows
from ..data.text import CharVocabulary
from ..grad_mode import no_grad
from ..layers import Dropout, Embedding, Linear
from ..losses import CrossEntropyLoss
from ..metrics import SparseCategoricalCrossentropy
from ..model import Sequential
from ..optim import Adam, AdamW, ReduceLROnPlateau
from ..stateful import StatefulMixin
from . import common

HELP = "train a character-level language model (default: Hamlet) vs an n-gram, and sample " \
       "text from it"

BUNDLED = "hamlet"              # the name of the bundled text in the checkpoint's extra
MAX_LENGTH = 10_000_000         # characters per sample (about five minutes of sampling)
MONITOR = "val_bits_per_char"   # what picks the best epoch, the schedule and early stopping


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
                                bidirectional=False, minutes=10.0)
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

@dataclasses.dataclass(frozen=True, kw_only=True)
class GenerateSettings(common.TrainingSettings):
    """``elman generate``'s options (see :func:`add_arguments`), checked when made."""

    TASK = "generate"
    text: str | None = None
    encoding: str = "utf-8"
    max_chars: int | None = None
    val_fraction: float = 0.1
    test_fraction: float = 0.1
    embedding: int = 32
    bptt: int = 64
    dropout: float = 0.5
    input_dropout: float = 0.1
    weight_decay: float = 0.0
    ema: float = 0.0
    clip: float = 5.0
    patience: int = 6
    sample: bool = False
    prime: str = "\n"
    length: int = 600
    temperature: float = 0.8
    top_k: int = 0
    top_p: float = 1.0

    MAY_CHANGE_ON_RESUME = (*common.TrainingSettings.MAY_CHANGE_ON_RESUME, "patience", "sample",
                            "prime", "length", "temperature", "top_k", "top_p")

    def validate(self) -> None:
        super().validate()
        common.positive("embedding", self.embedding)
        common.positive("bptt", self.bptt)
        if self.max_chars is not None and self.max_chars < 1:
            raise CommandError(f"error: --max-chars must be a positive integer, got "
                               f"{self.max_chars}")
        common.fractions(self, "val_fraction", "test_fraction")
        for name in ("dropout", "input_dropout", "ema"):
            common.fraction(name, getattr(self, name), low_open=False)
        if not self.weight_decay >= 0:
            raise CommandError(f"error: --weight-decay must be 0 or positive, got "
                               f"{self.weight_decay}")
        if not self.clip >= 0:
            raise CommandError(f"error: --clip must be 0 (off) or positive, got {self.clip}")
        if self.patience < 0:
            raise CommandError(f"error: --patience must be 0 (never stop early) or positive, "
                               f"got {self.patience}")
        if not self.temperature > 0 or not math.isfinite(self.temperature):
            raise CommandError(f"error: --temperature must be a positive number, got "
                               f"{self.temperature}")
        if self.top_k < 0:
            raise CommandError(f"error: --top-k must be 0 (off) or a positive integer, got "
                               f"{self.top_k}")
        if not 0 < self.top_p <= 1:
            raise CommandError(f"error: --top-p must be in (0, 1], got {self.top_p}")
        if not 0 <= self.length <= MAX_LENGTH:
            raise CommandError(f"error: --length must be from 0 to {MAX_LENGTH:_}, got "
                               f"{self.length}")
        if not self.prime:
            raise CommandError("error: --prime must not be empty: the sample continues it")


GenerateSettings.ARGUMENTS = add_arguments


# -- data ----------------------------------------------------------------------------------------

def load_text(settings: GenerateSettings) -> tuple[str, str, str]:
    """(text, source, label): the bundled Hamlet or the user's file, cut to --max-chars."""
    if settings.text is None:
        text, source, label = load_hamlet(), BUNDLED, "Hamlet"
    else:
        if not os.path.exists(settings.text):
            raise CommandError(f"error: --text: no such file: {settings.text}")
        if not os.path.isfile(settings.text):
            raise CommandError(f"error: --text: {settings.text} is not a regular file (a "
                               f"directory, FIFO or device)")
        try:
            text = read_text(settings.text, encoding=settings.encoding)
        except ValueError as e:
            raise CommandError(f"error: --text: {e}") from None
        source, label = os.path.abspath(settings.text), os.path.basename(settings.text)
    if settings.max_chars is not None:
        text = text[:settings.max_chars]
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


# -- the model ----------------------------------------------------------------------------------

EVAL_WINDOW = 2048              # characters per forward call when scoring a text as one stream


def build_model(vocab_size: int, settings: GenerateSettings) -> Sequential:
    """Embedding -> [Dropout] -> stateful recurrent stack -> [Dropout] -> Linear(vocab) as a
    Sequential (samples first), which ``fit`` trains on contiguous streams and ``elman.load``
    rebuilds."""
    s = settings.seed
    rnn = common.recurrent_layer(
        settings.cell, settings.embedding, settings.hidden, num_layers=settings.layers,
        dropout=settings.dropout if settings.layers > 1 else 0.0, seed=s + 1,
        recurrent_dropout=settings.recurrent_dropout, layer_norm=settings.layer_norm,
        zoneout=settings.zoneout, batch_first=True, stateful=True)
    layers = [Embedding(vocab_size, settings.embedding, seed=s)]
    if settings.input_dropout > 0:
        layers.append(Dropout(settings.input_dropout, seed=s + 4))
    layers.append(rnn)
    if settings.dropout > 0:
        layers.append(Dropout(settings.dropout, seed=s + 2))
    layers.append(Linear(settings.hidden, vocab_size, seed=s + 3))
    return Sequential(layers, seed=s)


@contextlib.contextmanager
def reading_streams(model: Sequential):
    """A block in which ``model`` is in evaluation mode and its recurrent layers carry their
    states from call to call, starting from zeros (a model saved before the layers were
    stateful included); afterwards everything is as it was."""
    if not isinstance(model, Sequential):
        raise TypeError(f"the model must be a Sequential, got {type(model).__name__}")
    layers = [m for _, m in model.named_modules() if isinstance(m, StatefulMixin)]
    if not layers:
        raise ValueError("the model has no recurrent layer")
    was_training, flags = model.training, [m.stateful for m in layers]
    model.eval()
    for m in layers:
        m.stateful = True
    model.reset_states()
    try:
        yield model
    finally:
        model.reset_states()
        for m, flag in zip(layers, flags):
            m.stateful = flag
        model.train(was_training)


def bits_per_char(model: Sequential, ids: np.ndarray, chunk: int = EVAL_WINDOW,
                  progress=None) -> float:
    """Mean -log2 p(ids[t] | ids[:t]) over t = 1..n-1: the text is read as one stream from a
    zero state, in chunks with the state carried across them; ``progress(done, total)`` hears
    of every chunk."""
    if len(ids) < 2:
        raise ValueError("bits_per_char needs at least 2 characters")
    x, y, lengths = stream_windows(ids, 1, chunk)
    bits = SparseCategoricalCrossentropy(log_base=2)
    with reading_streams(model):
        for k in range(len(x)):
            n = chunk if lengths is None else int(lengths[k])
            bits.update(model(x[k:k + 1, :n]), y[k:k + 1, :n])
            if progress is not None:
                progress(k + 1, len(x))
    return bits.result()


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


@no_grad()                           # one step at a time, nothing to differentiate
def sample(model: Sequential, vocab: CharVocabulary, prime: str, length: int,
           temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0, seed=0) -> str:
    """Read ``prime`` and continue it by ``length`` sampled characters (returned without the
    prime). Characters of the prime that the vocabulary lacks are read as the unknown id."""
    rng = np.random.default_rng(seed)
    out = []
    with reading_streams(model):
        last = model(vocab.encode(prime)[None, :])[0, -1]
        for _ in range(length):
            p = next_char_distribution(last, temperature, top_k, top_p)
            c = int(rng.choice(p.size, p=p))
            out.append(c)
            last = model(np.array([[c]]))[0, 0]
    return vocab.decode(np.array(out, dtype=np.int64))


# -- training ----------------------------------------------------------------------------------

class WeightAverage(Callback):
    """An exponential moving average of the parameters, ``avg = decay * avg + (1 - decay) *
    w`` after every step, debiased as Adam's moments are (so the first steps do not lean on
    the initial weights). Averaged weights often generalise better than the last ones.

    As a callback of ``fit`` (placed after the best-model checkpoint, before last.npz): the
    average is swapped in for validation and stays in while the best model is saved; the
    epoch's end swaps the trained weights back before last.npz is written."""

    def __init__(self, params, decay: float):
        super().__init__()
        self.weights, self.decay, self.steps = list(params), float(decay), 0
        self.avg = [np.zeros_like(p.data) for p in self.weights]
        self._saved = None

    def update(self) -> None:
        self.steps += 1
        for a, p in zip(self.avg, self.weights):
            a *= self.decay
            a += (1.0 - self.decay) * p.data

    def swap_in(self) -> None:
        """The parameters hold the average until :meth:`swap_back`."""
        if not self.steps or self._saved is not None:
            return
        self._saved = [p.data.copy() for p in self.weights]
        correction = 1.0 - self.decay ** self.steps
        for a, p in zip(self.avg, self.weights):
            np.divide(a, correction, out=p.data)

    def swap_back(self) -> None:
        if self._saved is not None:
            for w, p in zip(self._saved, self.weights):
                p.data[...] = w
            self._saved = None

    @contextlib.contextmanager
    def swapped_in(self):
        """Within the block the parameters hold the average; afterwards their own values."""
        self.swap_in()
        try:
            yield
        finally:
            self.swap_back()

    def on_batch_end(self, batch, logs=None):
        self.update()

    def on_test_begin(self, logs=None):
        self.swap_in()

    def on_epoch_end(self, epoch, logs=None):
        self.swap_back()

    def on_train_end(self, logs=None):
        self.swap_back()

    def state_dict(self) -> dict:
        return {"decay": self.decay, "steps": self.steps, "avg": [a.copy() for a in self.avg]}

    def load_state_dict(self, state: dict) -> None:
        self.decay, self.steps = float(state["decay"]), int(state["steps"])
        for a, saved in zip(self.avg, state["avg"]):
            a[...] = saved


def train(model, settings: GenerateSettings, train_ids, val_ids, out_dir, extra, comm=None,
          budget=None):
    """Train from scratch or resume OUT/last.npz with ``fit``: truncated BPTT over
    --batch-size contiguous streams in windows of --bptt characters, validated on the
    validation text read as one stream, up to --epochs epochs in total, --patience and the
    --minutes ``budget``. Returns (model with the last weights, history, seconds, why it
    stopped)."""
    if settings.resume:
        last_path = os.path.join(out_dir, "last.npz")
        if (common.read_checkpoint(last_path, "--resume").extra or {}).get("vocab") \
                != extra["vocab"]:
            raise CommandError(f"error: --resume: {last_path} was trained on a text with "
                               f"another character set; use the same --text / --max-chars")
    try:
        x, y, lengths = stream_windows(train_ids, settings.batch_size, settings.bptt)
    except ValueError as e:
        raise CommandError(f"error: --batch-size: {e}") from None
    vx, vy, vl = stream_windows(val_ids, 1, EVAL_WINDOW)
    stopping = {}

    def prepare(model):
        """Compile (keeping a resumed optimizer and its state) and the task's callbacks."""
        if model.optimizer is not None:
            optimizer = model.optimizer
        elif settings.weight_decay > 0:
            optimizer = AdamW(model.parameters(), lr=settings.lr,
                              weight_decay=settings.weight_decay)
        else:
            optimizer = Adam(model.parameters(), lr=settings.lr)
        model.compile(optimizer, CrossEntropyLoss(),
                      metrics=[SparseCategoricalCrossentropy("bits_per_char", log_base=2)],
                      global_clipnorm=settings.clip if settings.clip > 0 else None)
        schedule = ReduceLROnPlateau(model.optimizer, factor=0.5, patience=1, threshold=1e-3)
        own = [LearningRateScheduler(schedule, monitor=MONITOR)]
        if settings.patience:
            stopping["patience"] = EarlyStopping(MONITOR, patience=settings.patience)
            own.append(stopping["patience"])
        if settings.ema > 0:
            own.append(WeightAverage(model.parameters(), settings.ema))
        return own

    start = time.perf_counter()
    try:
        model, history = common.train(
            model, x, y, dict(validation_data=(vx, vy, vl), validation_batch_size=1), settings,
            out_dir, extra, fit_kwargs=dict(shuffle=False, lengths=lengths), comm=comm,
            monitor=MONITOR, prepare=prepare, budget=budget)
    except FloatingPointError as e:
        raise CommandError(f"error: {e}; try a smaller --lr or --clip") from None
    stopped = "epochs"
    if budget is not None and budget.stopped:
        stopped = "minutes"
    elif "patience" in stopping and stopping["patience"].stopped_epoch:
        stopped = "patience"
    return model, history, time.perf_counter() - start, stopped


# -- the command -------------------------------------------------------------------------------

def run_sample(settings: GenerateSettings) -> int:
    if settings.resume:
        raise CommandError("error: --sample does not train; leave out --resume")
    if settings.length < 1:
        raise CommandError(f"error: --length must be positive with --sample, got {settings.length}")
    ck, extra = common.load_saved(settings.out, "generate", "--sample")
    path = os.path.join(settings.out, "model.npz")
    # what it was trained with (checked; the sampling options are this command's own)
    common.saved_settings(GenerateSettings, extra, path, "--sample")
    if "vocab" not in extra:
        raise CommandError(f"error: --sample: {path} holds no vocabulary")
    vocab = common.restore("--sample", path, "vocabulary",
                           lambda: CharVocabulary().load_state_dict(extra["vocab"]))
    try:                                  # the network must be the one `elman generate` builds
        with reading_streams(ck.model):
            logits = ck.model(np.zeros((1, 1), np.int64))
    except (ValueError, TypeError) as e:
        raise CommandError(f"error: --sample: {path} is damaged: its network is not a "
                           f"character model: {e}") from None
    if logits.shape[-1] != len(vocab):
        raise CommandError(f"error: --sample: {path} is damaged: its network scores "
                           f"{logits.shape[-1]} characters, its vocabulary has {len(vocab)}")
    text = sample(ck.model, vocab, settings.prime, settings.length, settings.temperature,
                  settings.top_k, settings.top_p, seed=settings.seed)
    print(settings.prime + text)
    return 0


def run(args) -> int:
    settings = GenerateSettings.from_args(args)
    comm = common.setup_run(settings)
    if settings.sample:
        return run_sample(settings)
    with distributed.abort_on_error(comm):
        return _run(settings, comm)


def _run(settings: GenerateSettings, comm=None) -> int:
    root = comm is None or comm.is_root
    out = common.prepare_out_dir(settings.out, settings.resume, writer=root)

    # data: a contiguous split, the vocabulary from the training text only
    text, source, label = load_text(settings)
    train_text, val_text, test_text = split_text(text, settings.val_fraction,
                                                 settings.test_fraction)
    vocab = CharVocabulary().fit(train_text)
    train_ids, val_ids, test_ids = (vocab.encode(t) for t in (train_text, val_text, test_text))
    V = len(vocab)
    sizes = {"train_chars": len(train_text), "val_chars": len(val_text),
             "test_chars": len(test_text), "vocab_size": V,
             "unseen_test_chars": int((test_ids == CharVocabulary.UNK).sum())}
    # the network first: sizes the machine cannot hold end the run before the baseline
    model = common.build(lambda: build_model(V, settings), "--embedding/--hidden/--layers")
    if not root:                # the other ranks only train: rank 0 scores and reports
        extra = {"task": "generate", "settings": settings.to_dict(invocation=False),
                 "vocab": vocab.state_dict()}
        train(model, settings, train_ids, val_ids, out, extra, comm, common.time_budget(settings))
        return 0
    print(f"{label}: {len(text):,} characters ({len(train_text):,} train, {len(val_text):,} "
          f"validation, {len(test_text):,} test), {V} character ids"
          + ("" if comm is None else f"; training on {comm.size} MPI ranks"))

    # baseline: the n-gram model, order and discount chosen on validation
    print("n-gram baseline: choosing its order and discount on the validation text ...",
          flush=True)
    t0 = time.perf_counter()
    lm, table = ngram.select(train_ids, val_ids, V)
    ngram_test = lm.bits_per_char(test_ids[1:], history=test_ids[:1])
    ngram_val = table[lm.order][lm.discount]
    print(f"n-gram baseline: order {lm.order}, discount {lm.discount:g}: validation "
          f"{ngram_val:.4f}, test {ngram_test:.4f} bits/char ({time.perf_counter() - t0:.1f}s)")

    # model and training
    extra = {"task": "generate", "settings": settings.to_dict(invocation=False),
             "vocab": vocab.state_dict(),
             "data": {"source": source, "max_chars": settings.max_chars, **sizes}}
    # the budget keeps time for scoring the test text after training (about one validation)
    budget = common.time_budget(settings, after=len(test_ids) / max(len(val_ids), 1))
    model, history, seconds, stopped = train(model, settings, train_ids, val_ids, out, extra, comm,
                                             budget)

    # evaluate the best epoch on the test text
    print(f"scoring the best epoch on the {len(test_ids):,} test characters ...", flush=True)
    best, _ = common.load_best(out)
    test_bpc = bits_per_char(best, test_ids, progress=common.Ticker(
        f"scoring, windows of {EVAL_WINDOW} characters", quiet=settings.quiet).tick)
    val_bpc = min(history.get(MONITOR, []), default=math.nan)
    best_epoch = int(best.epoch)
    sample_text = ""
    if settings.length > 0:
        sample_text = sample(best, vocab, settings.prime, settings.length, settings.temperature,
                             settings.top_k, settings.top_p, seed=settings.seed)

    name = (f"{settings.cell}" + (f"x{settings.layers}" if settings.layers > 1 else "")
            + f"({settings.hidden})")
    metrics = {
        "model": {"bits_per_char": test_bpc, "val_bits_per_char": val_bpc,
                  "best_epoch": best_epoch},
        "baselines": {"ngram": {"bits_per_char": ngram_test, "order": lm.order,
                                "discount": lm.discount, "val_bits_per_char": ngram_val}},
        "config": {"settings": settings.to_dict(), **sizes, "source": source,
                   "max_chars": settings.max_chars,
                   "epochs_trained": int(model.epoch), "train_seconds": seconds,
                   "stopped_by": stopped, "minutes": settings.minutes,
                   "history_units": "bits per character"},
        "sample": {"prime": settings.prime, "text": sample_text,
                   "temperature": settings.temperature, "top_k": settings.top_k,
                   "top_p": settings.top_p},
    }
    common.write_metrics(out, metrics)

    if sample_text:
        print(f"\nsample (best epoch {best_epoch}, temperature {settings.temperature:g}):")
        print(settings.prime + sample_text)
    common.print_results(
        f"{label}, bits per character (lower is better), test = last {len(test_text):,} chars",
        [(f"{name} epoch {best_epoch}", {"test": test_bpc, "validation": val_bpc}),
         (f"n-gram (order {lm.order}, D={lm.discount:g})",
          {"test": ngram_test, "validation": ngram_val})],
        ["test", "validation"])
    # figures
    if history.get(MONITOR):
        curves = {"loss": history["bits_per_char"], "val_loss": history[MONITOR]}
        common.plot_curves(curves, out, label,
                           {"loss": "bits per character"})
        if plots.have_matplotlib():
            epochs = np.arange(1, len(curves["loss"]) + 1)
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
