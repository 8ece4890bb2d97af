"""Train an encoder-decoder with attention to transduce sequences (default: English spelling to
pronunciation on the CMU Pronouncing Dictionary), score it against a non-neural baseline, and
translate new inputs with it.

Default data: the CMU Pronouncing Dictionary 0.7b (bundled; Carnegie Mellon University, BSD-
style licence): the words made of letters and apostrophes (124,926 of 126,052), each with its
pronunciations as ARPAbet phonemes without stress marks (39 phonemes, the usual
grapheme-to-phoneme benchmark; 134,860 word-pronunciation pairs). The words are shuffled with
--seed and split 85/5/10 into training, validation and test words; all pronunciations of a word
stay on its side. A word counts as correct when the output equals any of its pronunciations.

Your own data: --pairs FILE, one ``source<TAB>target`` pair per line (the Tatoeba/ManyThings
sentence-pair layout; further columns are ignored), at --level char (sequences of characters,
e.g. transliteration or spelling to sound) or word (whitespace-separated words: translation).
A source that occurs several times keeps all its targets (any of them counts as correct) and
stays on one side of the split.

Model (elman.Seq2Seq): source and target embeddings (--embedding), an encoder (--cell,
--layers, --hidden per direction, bidirectional unless --no-bidirectional), its final states
bridged to the decoder (copied when the widths agree, else projected), a decoder of
--decoder-layers layers of width 2*--hidden (--hidden without the bidirectional encoder), and
Luong attention after the decoder (--attention general, dot, additive (Bahdanau's score) or
none) feeding tanh(W [context; state]) and the output layer. Trained with teacher forcing on
the token-level cross entropy (padding ignored), Adam (--lr), gradient-norm clipping (--clip),
batches of similar source lengths (--batch-size pairs), and a learning rate that decays along
a cosine from --lr to 2 % of it over the training time the --minutes budget leaves (a
resumed run decays again, over its own budget; over --epochs with --minutes 0, and then also
across --resume; --schedule plateau halves it instead when the validation loss stops
improving). After each epoch the validation words are decoded greedily; the epoch with the
lowest validation WER is kept (model.npz). Training ends after --epochs, after --patience
epochs without a better validation WER, or within an epoch when the --minutes budget of the
whole run (data, baseline, training, test decoding; checked after every batch) would not
leave time for one more batch, the validation and the test decoding: that epoch is then
validated and checkpointed as usual.

Scores on the test part, for greedy decoding and for beam search (--beam, --length-penalty):
``wer`` (the share of sources whose output equals none of their references) and ``per``
(the edit distance to the closest reference over its length: phoneme error rate; token error
rate for --pairs), plus corpus BLEU-4 at --level word. The reported model scores are the beam
search's.

Baseline (--level char): letters in context (elman.lettercontext): EM-aligned letter-to-chunk
tables over left/right letter contexts with back-off, the widest context chosen on the
validation words. At --level word: the training target of a source seen in training, else the
source copied.

Writes into --out (default runs/translate): model.npz (best epoch, with both vocabularies and
the decoding settings in its extra: --predict reads it), last.npz (for --resume), history.csv
(per epoch: loss, val_loss, val_wer, lr, seconds), baseline.json (the baseline's test scores
and outputs: --resume on the same data reads them back instead of fitting it again),
metrics.json ({"model": {"wer", "per",
"greedy", "beam", ...}, "baselines": {...}, "config": {...}}), curves.png (loss and validation
WER), translate_attention.png (attention weights for a few test words) and
translate_length.png (test WER by source length, model and baseline).

Examples:
  elman translate                               # CMUdict, at most 15 minutes in all
  elman translate --predict gnocchi elman       # pronunciations from the saved model
  elman translate --pairs fra.txt --level word --out runs/fra
  elman translate --cell gru --attention additive --minutes 30 --epochs 60
"""
from __future__ import annotations

import argparse
import dataclasses
import csv
import json
import math
import os
import re
import sys
import time

import numpy as np

from .. import checkpoint, plots
from .._validate import CommandError
from ..beam import beam_search
from ..data.datasets import load_cmudict
from ..data.pairs import SymbolVocabulary, bucket_batches, make_batch, read_pairs, split_by_source
from ..lettercontext import LetterContext, select_width
from ..optim import Adam, ReduceLROnPlateau, clip_grad_norm_
from ..seq2seq import Seq2Seq
from ..seqscores import corpus_bleu, error_rates
from . import common

HELP = "train an encoder-decoder with attention (default: spelling to pronunciation, CMUdict) " \
       "vs a letters-in-context baseline, and translate with it"

BUNDLED = "cmudict"
WORD = re.compile(r"[a-z']+")
HISTORY_FIELDS = ("epoch", "loss", "val_loss", "val_wer", "lr", "seconds")
DEFAULT_BEAM = 5
BEAM_COST = 0.8       # beam search costs about this many greedy decodings per unit of width (53 s
                      # for beam 5 against 13 s greedy on the CMUdict test words)
BASELINE_FILE = "baseline.json"


def add_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("data")
    g.add_argument("--pairs", metavar="FILE", help="your own tab-separated source/target pairs, "
                   "instead of the bundled CMU Pronouncing Dictionary")
    g.add_argument("--level", choices=["char", "word"], default="char",
                   help="--pairs as sequences of characters or of words")
    g.add_argument("--lower", action="store_true", help="lower-case --pairs")
    g.add_argument("--max-pairs", type=int, metavar="N", help="use N sources only (drawn with "
                   "--seed), for quick trials (None: all)")
    g.add_argument("--val-fraction", type=float, default=0.05,
                   help="share of the sources that validates")
    g.add_argument("--test-fraction", type=float, default=0.1,
                   help="share of the sources that tests")
    common.add_common_arguments(p, cell="lstm", hidden=96, layers=1, epochs=40,
                                batch_size=256, lr=4e-3, out="runs/translate",
                                bidirectional=False, minutes=15.0)
    g = p.add_argument_group("encoder-decoder")
    g.add_argument("--bidirectional", action=argparse.BooleanOptionalAction, default=True,
                   help="a bidirectional encoder")
    g.add_argument("--embedding", type=int, default=64, metavar="E",
                   help="embedding size of source and target symbols")
    g.add_argument("--decoder-layers", type=int, metavar="L",
                   help="decoder layers (None: as --layers)")
    g.add_argument("--attention", choices=["general", "dot", "additive", "none"],
                   default="general", help="attention score (none: a plain encoder-decoder)")
    g.add_argument("--dropout", type=float, default=0.0,
                   help="dropout between stacked recurrent layers")
    g.add_argument("--clip", type=float, default=5.0,
                   help="clip each batch's gradient norm to this (0: no clipping)")
    g.add_argument("--schedule", choices=["cosine", "plateau"], default="cosine",
                   help="learning rate: cosine decay from --lr to 2%% of it over the --minutes "
                   "budget's training time (over --epochs with --minutes 0), or halved when the "
                   "validation loss stops improving")
    g.add_argument("--patience", type=int, default=4,
                   help="stop after this many epochs without a better validation WER "
                   "(0: never)")
    g = p.add_argument_group("decoding")
    g.add_argument("--beam", type=int, metavar="B", help="beam width (1: greedy; None: 5, or "
                   "with --predict the width the model was trained and scored with)")
    g.add_argument("--length-penalty", type=float, default=1.0, metavar="A",
                   help="rank finished hypotheses by log p / length**A")
    g.add_argument("--predict", nargs="+", metavar="TEXT", help="do not train: load "
                   "OUT/model.npz and print the output for each TEXT")


# -- options ---------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True, kw_only=True)
class TranslateSettings(common.TrainingSettings):
    """``elman translate``'s options (see :func:`add_arguments`), checked when made."""

    TASK = "translate"
    pairs: str | None = None
    level: str = "char"
    lower: bool = False
    max_pairs: int | None = None
    val_fraction: float = 0.05
    test_fraction: float = 0.1
    embedding: int = 64
    decoder_layers: int | None = None
    attention: str = "general"
    dropout: float = 0.0
    clip: float = 5.0
    schedule: str = "cosine"
    patience: int = 4
    beam: int | None = None
    length_penalty: float = 1.0
    predict: tuple[str, ...] | None = None

    MAY_CHANGE_ON_RESUME = (*common.TrainingSettings.MAY_CHANGE_ON_RESUME, "patience", "beam",
                            "length_penalty", "predict")

    def validate(self) -> None:
        super().validate()
        common.positive("embedding", self.embedding)
        if self.decoder_layers is not None:
            common.positive("decoder_layers", self.decoder_layers)
        if self.max_pairs is not None and self.max_pairs < 10:
            raise CommandError(f"error: --max-pairs must be at least 10, got {self.max_pairs}")
        common.fractions(self, "val_fraction", "test_fraction")
        common.fraction("dropout", self.dropout, low_open=False)
        for name in ("clip", "length_penalty"):
            value = getattr(self, name)
            if not (value >= 0 and math.isfinite(value)):
                raise CommandError(f"error: --{name.replace('_', '-')} must be 0 or positive, "
                                   f"got {value}")
        if self.patience < 0:
            raise CommandError(f"error: --patience must be 0 (never stop early) or positive, "
                               f"got {self.patience}")
        if self.beam is not None:
            common.positive("beam", self.beam)
        for flag, value in (("--recurrent-dropout", self.recurrent_dropout),
                            ("--zoneout", self.zoneout), ("--layer-norm", self.layer_norm),
                            ("--distributed", self.distributed)):
            if value:
                raise CommandError(f"error: {flag} is not available for translate (the "
                                   f"encoder-decoder does not offer it yet)")
        if self.pairs is None and self.level != "char":
            raise CommandError("error: --level word needs --pairs (the bundled dictionary is "
                               "character-level)")
        if self.predict is not None and self.resume:
            raise CommandError("error: --predict does not train; leave out --resume")


def options(settings) -> dict:
    """The settings that define the network and its decoding, saved with the model."""
    return {"cell": settings.cell, "hidden": settings.hidden, "layers": settings.layers,
            "decoder_layers": settings.decoder_layers or settings.layers,
            "bidirectional": settings.bidirectional, "embedding": settings.embedding,
            "attention": settings.attention, "dropout": settings.dropout, "beam": settings.beam,
            "length_penalty": settings.length_penalty, "level": settings.level, "lr": settings.lr,
            "batch_size": settings.batch_size, "clip": settings.clip, "seed": settings.seed,
            "schedule": settings.schedule}


TranslateSettings.ARGUMENTS = add_arguments


# -- data ------------------------------------------------------------------------------------

def load_data(settings) -> tuple[list, str, str]:
    """``([(source, [targets])], source name, label)``, cut to --max-pairs."""
    if settings.pairs is None:
        lexicon = load_cmudict()
        data = [(tuple(w), prons) for w, prons in lexicon.items() if WORD.fullmatch(w)]
        source, label = BUNDLED, "CMUdict"
    else:
        if not os.path.isfile(settings.pairs):
            raise CommandError(f"error: --pairs: no such file: {settings.pairs}")
        try:
            data = read_pairs(settings.pairs, level=settings.level, lower=settings.lower)
        except (ValueError, UnicodeDecodeError) as e:
            raise CommandError(f"error: --pairs: {e}") from None
        source, label = os.path.abspath(settings.pairs), os.path.basename(settings.pairs)
    if settings.max_pairs is not None and settings.max_pairs < len(data):
        keep = np.random.default_rng([settings.seed, 13]).choice(len(data), settings.max_pairs,
                                                             replace=False)
        data = [data[i] for i in sorted(keep)]
    if len(data) < 10:
        raise CommandError(f"error: {label} holds {len(data)} distinct sources; at least 10 "
                           f"are needed to split it")
    return data, source, label


def split(data: list, settings) -> tuple:
    train_fraction = 1 - settings.val_fraction - settings.test_fraction
    parts = split_by_source(data, (train_fraction, settings.val_fraction, settings.test_fraction),
                            seed=settings.seed)
    for name, part in zip(("training", "validation", "test"), parts):
        if not part:
            raise CommandError(f"error: the {name} part is empty ({len(data)} sources): use "
                               f"more data or other --val-fraction / --test-fraction")
    return parts


def flatten(part: list) -> tuple[list, list]:
    """One (source, target) training pair per pronunciation/translation."""
    sources, targets = [], []
    for s, ts in part:
        for t in ts:
            sources.append(s)
            targets.append(t)
    return sources, targets


def encode_part(part, src_vocab, tgt_vocab) -> tuple[list, list]:
    sources, targets = flatten(part)
    return ([src_vocab.encode(s) for s in sources], [tgt_vocab.encode(t) for t in targets])


# -- decoding and scores -----------------------------------------------------------------------

def decode(model, sources: list, src_vocab, tgt_vocab, beam: int, length_penalty: float,
           max_len: int, batch_size: int = 256) -> list:
    """Outputs (tuples of target symbols) for source symbol tuples, in order."""
    ids = [src_vocab.encode(s) for s in sources]
    out = [None] * len(ids)
    for index in bucket_batches([len(s) for s in ids], batch_size):
        b = make_batch([ids[i] for i in index])
        result = beam_search(model, b["src"], b["src_lengths"], beam_width=beam,
                             max_len=max_len, length_penalty=length_penalty)
        for i, seq in zip(index, result.sequences):
            out[i] = tgt_vocab.decode(seq)
    return out


def scores(hyps: list, part: list, level: str) -> dict:
    refs = [ts for _, ts in part]
    result = error_rates(hyps, refs)
    if level == "word":
        result["bleu"] = corpus_bleu(hyps, refs)
    return result


def mean_loss(model, sources, targets, batch_size: int) -> float:
    """Teacher-forced cross entropy per target token over a whole part (evaluation mode)."""
    total = count = 0.0
    model.eval()
    for index in bucket_batches([len(s) for s in sources], batch_size):
        b = make_batch([sources[i] for i in index], [targets[i] for i in index])
        value, _ = model.loss(b["src"], b["tgt_in"], b["tgt_out"], b["src_lengths"],
                              b["tgt_lengths"])
        tokens = int(b["tgt_lengths"].sum())
        total += value * tokens
        count += tokens
    model._cache = None
    return total / count


# -- baselines -------------------------------------------------------------------------------

def baselines(train, val, test, level: str) -> tuple[dict, dict]:
    """``({name: test scores + settings}, {name: per-test-source outputs})``."""
    t0 = time.perf_counter()
    if level == "char":
        sources, targets = flatten(train)
        lc = LetterContext(max_width=5).fit(zip(sources, targets))
        width, table = select_width(lc, val)
        hyps = [lc.predict(s, width) for s, _ in test]
        result = {**scores(hyps, test, level), "context_width": width,
                  "val_wer": table[width]["wer"], "aligned_pairs": lc.aligned,
                  "seconds": time.perf_counter() - t0}
        return {"letter_context": result}, {"letter_context": hyps}
    seen = {s: ts[0] for s, ts in train}
    hyps = [seen.get(s, s) for s, _ in test]
    result = {**scores(hyps, test, level), "seen_sources": sum(s in seen for s, _ in test),
              "seconds": time.perf_counter() - t0}
    return {"lookup_or_copy": result}, {"lookup_or_copy": hyps}


def write_baseline(out_dir: str, key: dict, scores_: dict, outputs: dict) -> None:
    """The baselines' test scores and outputs, with the data settings they hold for."""
    with common.atomic_text(os.path.join(out_dir, BASELINE_FILE)) as f:
        json.dump({"data": key, "scores": scores_,
                   "outputs": {k: [list(h) for h in v] for k, v in outputs.items()}}, f,
                  default=lambda v: v.item())       # (numpy scalars)


def read_baseline(out_dir: str, key: dict):
    """``(scores, outputs)`` written by an earlier run on the same data, else None (missing,
    unreadable, or for other data: then the baseline is fitted again)."""
    path = os.path.join(out_dir, BASELINE_FILE)
    try:
        with open(path, encoding="utf-8") as f:
            saved = json.load(f)
        if saved["data"] != json.loads(json.dumps(key)):
            return None
        outputs = {k: [tuple(h) for h in v] for k, v in saved["outputs"].items()}
        if set(outputs) != set(saved["scores"]) or any(
                len(v) != key["test_sources"] for v in outputs.values()):
            return None
        return saved["scores"], outputs
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


# -- training --------------------------------------------------------------------------------

def _write_history(path: str, rows: list) -> None:
    with common.atomic_text(path) as f:
        w = csv.DictWriter(f, fieldnames=HISTORY_FIELDS, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)


def _read_history(path: str, epochs: int) -> list:
    if not os.path.exists(path):
        return []
    with open(path, newline="") as f:
        rows = [{k: float(v) for k, v in r.items()} for r in csv.DictReader(f)]
    for r in rows:
        r["epoch"] = int(r["epoch"])
    return rows[:epochs]


class CosineDecay:
    """The learning rate along training: ``lr(p) = floor + (lr0 - floor) (1 + cos(pi p)) / 2``
    for the share ``p`` in [0, 1] of training done, from ``lr0`` down to ``floor = fraction *
    lr0``. Decaying to a small rate within the budget is what a short run needs: most of the
    gain of a plateau schedule comes after its first halving, which a 15-minute run rarely
    reaches.

    >>> class O: lr = 1.0
    >>> s = CosineDecay(O, 1.0, fraction=0.0)
    >>> [round(s.at(p), 3) for p in (0, 0.5, 1, 2)]
    [1.0, 0.5, 0.0, 0.0]
    """

    def __init__(self, optimizer, lr: float, fraction: float = 0.02):
        self.optimizer, self.lr0, self.floor = optimizer, float(lr), float(lr) * fraction

    def at(self, progress: float) -> float:
        p = min(max(progress, 0.0), 1.0)
        self.optimizer.lr = self.floor + (self.lr0 - self.floor) * 0.5 * (1 + math.cos(math.pi * p))
        return self.optimizer.lr


class _Stop:
    """What :class:`TimeBudget` sets ``stop_training`` on (Keras' ``model.stop_training``)."""
    stop_training = False


# decoding a validation word greedily costs about this many training pairs' time (forward
# and backward): the budget's estimate of the first validation pass, before it is measured
VALIDATION_COST = 1.5


class Trainer:
    """The loop, in labelled phases: forward, loss, backward, clip, step (the learning rate
    set by --schedule before each step, the --minutes budget checked after it); then evaluate
    (validation loss and greedy WER), schedule, checkpoint (best, last, history)."""

    def __init__(self, model, optimizer, scheduler, rng, settings, data, out_dir, extra,
                 budget=None):
        self.model, self.optimizer, self.scheduler, self.rng = model, optimizer, scheduler, rng
        self.settings, self.out_dir, self.extra, self.budget = settings, out_dir, extra, budget
        (self.train_src, self.train_tgt, self.val_src, self.val_tgt, self.val_part,
         self.vocabs, self.max_len) = data
        self.best = math.inf
        self.history: list = []
        self.best_path = os.path.join(out_dir, "model.npz")
        self.last_path = os.path.join(out_dir, "last.npz")
        self.history_path = os.path.join(out_dir, "history.csv")
        self.flag = _Stop()
        self.first_epoch = model.epoch          # (of this run: a resumed one starts later)
        if budget is not None:
            budget.set_model(self.flag)
            budget.set_params({"steps": None, "length": 1, "validation_length": 1,
                               "validation_samples": VALIDATION_COST * len(self.val_src)})
            budget.on_train_begin()
        self.train_start = time.perf_counter()

    def state(self) -> dict:
        return {"rng": self.rng.bit_generator.state, "scheduler": self.scheduler.state_dict()
                if isinstance(self.scheduler, ReduceLROnPlateau) else None,
                "best_val_wer": self.best if math.isfinite(self.best) else None}

    def load_state(self, state: dict) -> None:
        self.rng.bit_generator.state = state["rng"]
        if isinstance(self.scheduler, ReduceLROnPlateau) and state.get("scheduler"):
            self.scheduler.load_state_dict(state["scheduler"])
        self.best = math.inf if state.get("best_val_wer") is None else state["best_val_wer"]

    def progress(self, batch: int, batches: int, per_pair: float | None) -> float:
        """The share of training done, for the cosine schedule: of the time the --minutes
        budget leaves for training (what it keeps for validation and the test decoding left
        out; a resumed run decays over its own budget again), else of --epochs."""
        if self.budget is None:
            return (self.model.epoch + batch / batches) / self.settings.epochs
        used = time.perf_counter() - self.train_start
        b = self.budget
        validation = b.validation_seconds if b.validation_seconds is not None else \
            (per_pair or 0.0) * VALIDATION_COST * len(self.val_src)
        left = b.seconds_left() - validation * (1 + b.after) - b.reserve
        by_time = used / max(used + max(left, 0.0), 1e-9)
        # --epochs may end training before the budget does
        by_epochs = (self.model.epoch - self.first_epoch + batch / batches) / max(
            self.settings.epochs - self.first_epoch, 1)
        return max(by_time, by_epochs)

    def epoch(self) -> dict:
        settings, model, opt, budget = self.settings, self.model, self.optimizer, self.budget
        params = model.parameters()
        start = time.perf_counter()
        model.train()
        total = count = 0.0
        pairs = 0
        batches = bucket_batches([len(s) for s in self.train_src], settings.batch_size, self.rng)
        show = not settings.quiet and sys.stdout.isatty()
        # in a log (no terminal): a line every 10 s instead of the rewritten one
        ticker = common.Ticker(f"epoch {model.epoch + 1}: batch", quiet=settings.quiet or show)
        if budget is not None:
            budget.params["steps"] = len(batches)
            budget.on_epoch_begin(model.epoch)
        for k, index in enumerate(batches):
            if isinstance(self.scheduler, CosineDecay):
                self.scheduler.at(self.progress(k, len(batches), (time.perf_counter() - start)
                                                / pairs if pairs else None))
            if budget is not None:
                budget.on_batch_begin(k)
            b = make_batch([self.train_src[i] for i in index],
                           [self.train_tgt[i] for i in index])
            opt.zero_grad()
            # forward and loss: mean cross entropy per real target token (teacher forcing)
            value, dlogits = model.loss(b["src"], b["tgt_in"], b["tgt_out"], b["src_lengths"],
                                        b["tgt_lengths"])
            if not math.isfinite(value):
                raise CommandError(f"error: the training loss became {value} at epoch "
                                   f"{model.epoch + 1}; try a smaller --lr or --clip")
            # backward through the decoder, attention, bridge and encoder
            model.backward(dlogits)
            # clip the joint gradient norm, then step
            if settings.clip > 0:
                clip_grad_norm_(params, settings.clip)
            opt.step()
            tokens = int(b["tgt_lengths"].sum())
            total += value * tokens
            count += tokens
            pairs += len(index)
            ticker.tick(k + 1, len(batches))
            if show and k % 20 == 0:
                print(f"\\repoch {model.epoch + 1}: batch {k + 1}/{len(batches)}  loss "
                      f"{total / count:.4f}", end="", flush=True)
            # the budget: stop here when another batch, validation and the test decoding
            # would not fit (the epoch still ends: validated, checkpointed)
            if budget is not None:
                budget.on_batch_end(k, {"size": len(index)})
                if self.flag.stop_training:
                    break
        if show:
            print("\\r" + " " * 60 + "\\r", end="")
        # evaluate: teacher-forced loss and greedy WER on the validation sources
        if budget is not None:
            budget.on_test_begin()
        val_loss = mean_loss(model, self.val_src, self.val_tgt, 256)
        src_vocab, tgt_vocab = self.vocabs
        part = self.val_part
        hyps = decode(model, [s for s, _ in part], src_vocab, tgt_vocab, 1, 0.0, self.max_len)
        val_wer = error_rates(hyps, [t for _, t in part])["wer"]
        if budget is not None:
            budget.on_test_end()
        model.epoch += 1
        if isinstance(self.scheduler, ReduceLROnPlateau):
            self.scheduler.step(val_loss)
        improved = val_wer < self.best
        if improved:
            self.best = val_wer
        row = {"epoch": model.epoch, "loss": total / count, "val_loss": val_loss,
               "val_wer": val_wer, "lr": float(opt.lr), "seconds": time.perf_counter() - start}
        # checkpoint: the best model, the state to resume from, then the history row
        self.history.append(row)
        if improved:
            checkpoint.save(model, self.best_path, extra=self.extra)
        checkpoint.save(model, self.last_path, optimizer=opt,
                        extra={**self.extra, "training": self.state()})
        _write_history(self.history_path, self.history)
        row["improved"] = improved
        row["partial"] = self.flag.stop_training
        return row


def train(model, settings, data, out_dir: str, extra: dict, budget=None):
    """From scratch or from OUT/last.npz (--resume), up to --epochs in total, within the
    --minutes ``budget`` (a :class:`TimeBudget` counted from the command's start, checked
    after every batch). Returns (model, history rows, seconds, why it stopped)."""
    last_path = os.path.join(out_dir, "last.npz")
    rng = np.random.default_rng([settings.seed, 13, 1])
    if settings.resume:
        ck = common.read_checkpoint(last_path, "--resume")
        if ck.model.config() != model.config():
            raise CommandError(f"error: --resume: {last_path} holds a different architecture "
                               f"than these options build; use the same options as the first run")
        saved = ck.extra if isinstance(ck.extra, dict) else {}
        if "settings" in saved:            # the first run's settings, checked as a stranger's
            first = TranslateSettings.from_saved(saved["settings"], last_path, "--resume")
            settings.check_resume(first, last_path)
        if saved.get("vocabularies") != extra["vocabularies"]:
            raise CommandError(f"error: --resume: {last_path} was trained on other data; use "
                               f"the same data options as the first run")
        if ck.optimizer is None or "rng" not in (saved.get("training") or {}):
            raise CommandError(f"error: --resume: {last_path} holds no training state")
        model, optimizer = ck.model, ck.optimizer
    else:
        optimizer = Adam(model.parameters(), lr=settings.lr)
    if settings.schedule == "cosine":
        scheduler = CosineDecay(optimizer, settings.lr)
    else:
        scheduler = ReduceLROnPlateau(optimizer, factor=0.5, patience=1, threshold=1e-3)
    start, stopped = time.perf_counter(), "epochs"
    trainer = Trainer(model, optimizer, scheduler, rng, settings, data, out_dir, extra, budget)
    if settings.resume:
        trainer.load_state(saved["training"])
        trainer.history = _read_history(trainer.history_path, model.epoch)
        if model.epoch >= settings.epochs:
            print(f"{last_path} has already trained {model.epoch} epochs (--epochs "
                  f"{settings.epochs}): nothing to do")
    elif os.path.exists(trainer.history_path):
        os.remove(trainer.history_path)
    while model.epoch < settings.epochs:
        if settings.patience and trainer.history:
            best_epoch = min(trainer.history, key=lambda r: (r["val_wer"], r["epoch"]))["epoch"]
            if model.epoch - best_epoch >= settings.patience:
                stopped = "patience"
                print(f"stopping after epoch {model.epoch}: no better validation WER for "
                      f"{settings.patience} epochs (--patience)")
                break
        row = trainer.epoch()
        if not settings.quiet:
            print(f"epoch {row['epoch']:3d}/{settings.epochs}  loss {row['loss']:.4f}  val_loss "
                  f"{row['val_loss']:.4f}  val_wer {row['val_wer']:.4f} (greedy)  lr "
                  f"{row['lr']:.2g}  {row['seconds']:.1f}s" + ("  *best" if row["improved"]
                                                                else ""), flush=True)
        if row["partial"]:
            stopped = "minutes"
            break
    return model, trainer.history, time.perf_counter() - start, stopped


# -- figures ---------------------------------------------------------------------------------

def plot_attention(model, examples: list, src_vocab, tgt_vocab, path: str, label: str) -> str:
    """Attention weights (decoder steps x source symbols) for a few (source, output) pairs,
    read from a teacher-forced pass over the model's own output."""
    plt = plots._pyplot()
    fig, axes = plt.subplots(1, len(examples), figsize=(3.2 * len(examples), 3.4),
                             squeeze=False)
    model.eval()
    for ax, (source, output) in zip(axes[0], examples):
        b = make_batch([src_vocab.encode(source)], [tgt_vocab.encode(output)])
        model(b["src"], b["tgt_in"], b["src_lengths"], b["tgt_lengths"])
        weights = model.attention.weights[0]              # (T, S)
        ax.imshow(weights, cmap="viridis", vmin=0, vmax=1, aspect="auto")
        ax.set_xticks(range(len(source)))
        ax.set_xticklabels(list(source))
        ax.set_yticks(range(len(output) + 1))
        ax.set_yticklabels(list(output) + ["</s>"], fontsize="small")
        ax.set_title("".join(source) if len(source) < 20 else " ".join(source)[:20],
                     fontsize="small")
    model._cache = None
    fig.suptitle(f"{label}: attention (rows: output symbols, columns: input)")
    fig.tight_layout()
    return plots._save(fig, path)


def plot_by_length(test: list, outputs: dict, path: str, label: str) -> str:
    """Test WER against source length for each system."""
    plt = plots._pyplot()
    lengths = np.array([len(s) for s, _ in test])
    refs = [ts for _, ts in test]
    bins = sorted(set(np.minimum(lengths, 16).tolist()))
    fig, ax = plt.subplots(figsize=(7, 4))
    for name, hyps in outputs.items():
        wrong = np.array([tuple(h) not in [tuple(r) for r in rs] for h, rs in zip(hyps, refs)])
        wer = [wrong[np.minimum(lengths, 16) == b].mean() for b in bins]
        ax.plot(bins, wer, "o-", ms=3, label=name)
    counts = [int((np.minimum(lengths, 16) == b).sum()) for b in bins]
    ax.set_xticks(bins)
    ax.set_xticklabels([f"{b}" + ("+" if b == 16 else "") for b in bins], fontsize="small")
    ax.set_xlabel("source length (symbols)")
    ax.set_ylabel("word error rate (test)")
    ax.set_title(f"{label}: WER by length ({len(test)} test sources; fewest per length: "
                 f"{min(counts)})", fontsize="small")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    return plots._save(fig, path)


# -- the command -----------------------------------------------------------------------------

SAVED_SETTINGS = {
    "level": (lambda v: v in ("char", "word"), "'char' or 'word'"),
    "max_len": (lambda v: common.is_count(v) and v <= 10_000, "an integer from 1 to 10000"),
    "beam": (lambda v: common.is_count(v) and v <= 1000, "an integer from 1 to 1000"),
    "vocabularies": (lambda v: isinstance(v, dict) and set(v) == {"source", "target"},
                     "{'source': ..., 'target': ...}"),
}


def _predict(settings) -> int:
    ck, extra = common.load_saved(settings.out, "translate", "--predict")
    path = os.path.join(settings.out, "model.npz")
    common.check_saved(extra, path, "--predict", SAVED_SETTINGS)
    vocabs = extra["vocabularies"]
    src_vocab = common.restore("--predict", path, "source vocabulary",
                               lambda: SymbolVocabulary().load_state_dict(vocabs["source"]))
    tgt_vocab = common.restore("--predict", path, "target vocabulary",
                               lambda: SymbolVocabulary().load_state_dict(vocabs["target"]))
    model = ck.model
    if not isinstance(model, Seq2Seq) or model.source_vocab != len(src_vocab) \
            or model.target_vocab != len(tgt_vocab):
        raise CommandError(f"error: --predict: {path} is damaged: its network does not match "
                           f"its vocabularies")
    sources = []
    for text in settings.predict:
        text = text.lower() if extra.get("lower_input") else text
        symbols = tuple(text.split()) if extra["level"] == "word" else tuple(text.strip())
        if not symbols:
            raise CommandError(f"error: --predict: the text {text!r} is empty")
        sources.append(symbols)
    beam = extra["beam"] if settings.beam is None else settings.beam
    outputs = decode(model, sources, src_vocab, tgt_vocab, beam, settings.length_penalty,
                     extra["max_len"])
    for text, out in zip(settings.predict, outputs):
        print(f"{text}\t{' '.join(out)}")
    return 0


def run(args) -> int:
    settings = TranslateSettings.from_args(args)
    common.setup_run(settings)
    if settings.predict:
        return _predict(settings)
    if settings.beam is None:
        settings = dataclasses.replace(settings, beam=DEFAULT_BEAM)
    return _run(settings)


def _run(settings) -> int:
    out = common.prepare_out_dir(settings.out, settings.resume)
    t_start = settings.started                                       # (as --minutes)

    # data: split by source; vocabularies from the training part only
    data, source, label = load_data(settings)
    train_part, val_part, test_part = split(data, settings)
    src_vocab = SymbolVocabulary().fit(s for s, _ in train_part)
    tgt_vocab = SymbolVocabulary().fit(t for _, ts in train_part for t in ts)
    train_src, train_tgt = encode_part(train_part, src_vocab, tgt_vocab)
    val_src, val_tgt = encode_part(val_part, src_vocab, tgt_vocab)
    longest = max(len(t) for t in train_tgt)
    max_len = int(longest * 1.5) + 5
    sizes = {"sources": len(data), "train_sources": len(train_part),
             "val_sources": len(val_part), "test_sources": len(test_part),
             "train_pairs": len(train_src), "source_symbols": len(src_vocab) - 4,
             "target_symbols": len(tgt_vocab) - 4}
    print(f"{label}: {len(data):,} sources ({len(train_part):,} train, {len(val_part):,} "
          f"validation, {len(test_part):,} test; {len(train_src):,} training pairs), "
          f"{sizes['source_symbols']} source and {sizes['target_symbols']} target symbols")

    # the network first: sizes the machine cannot hold end the run before the baseline
    opts = options(settings)
    model = common.build(lambda: Seq2Seq(
        len(src_vocab), len(tgt_vocab), embedding_dim=settings.embedding,
        hidden_size=settings.hidden,
        cell=settings.cell, encoder_layers=settings.layers, decoder_layers=opts["decoder_layers"],
        bidirectional=settings.bidirectional, attention=settings.attention,
        dropout=settings.dropout,
        pad_id=SymbolVocabulary.PAD, bos_id=SymbolVocabulary.BOS, eos_id=SymbolVocabulary.EOS,
        seed=settings.seed), "--embedding/--hidden/--layers")

    # baseline on the same split (read back on --resume: the same data gives the same one)
    key = {"source": source, "level": settings.level, "lower": bool(settings.lower),
           "max_pairs": settings.max_pairs, "seed": settings.seed,
           "val_fraction": settings.val_fraction,
           "test_fraction": settings.test_fraction, **sizes}
    cached = read_baseline(out, key) if settings.resume else None
    if cached is not None:
        base, base_outputs = cached
        print(f"baselines read back from {os.path.join(out, BASELINE_FILE)}")
    else:
        if not settings.quiet:
            print("baseline: fitting it on the training part, choosing on validation",
                  flush=True)
        base, base_outputs = baselines(train_part, val_part, test_part, settings.level)
        write_baseline(out, key, base, base_outputs)
    for name, m in base.items():
        print(f"baseline {name}: test wer {m['wer']:.4f}, per {m['per']:.4f} "
              f"({m['seconds']:.0f}s)")

    # model and training
    extra = {"task": "translate", "settings": settings.to_dict(invocation=False),
             "data": source, "level": settings.level,
             "lower_input": bool(settings.pairs is None or settings.lower), "max_len": max_len,
             "beam": settings.beam, "options": opts, "sizes": sizes,
             "vocabularies": {"source": src_vocab.state_dict(),
                              "target": tgt_vocab.state_dict()}}
    # --minutes counts the whole run: training stops in time for the test decoding, greedy
    # and beam, which costs about (1 + BEAM_COST * beam) validation passes per validation size
    after = len(test_part) / len(val_part) * (1 + BEAM_COST * settings.beam)
    model, history, seconds, stopped = train(
        model, settings, (train_src, train_tgt, val_src, val_tgt, val_part,
                      (src_vocab, tgt_vocab), max_len), out, extra,
        common.time_budget(settings, after=after))

    # test: the best epoch, greedy and beam
    best, _ = common.load_best(out)
    test_sources = [s for s, _ in test_part]
    if not settings.quiet:
        print(f"decoding the {len(test_sources):,} test sources (greedy, then beam "
              f"{settings.beam})", flush=True)
    t0 = time.perf_counter()
    greedy_out = decode(best, test_sources, src_vocab, tgt_vocab, 1, 0.0, max_len)
    greedy_seconds = time.perf_counter() - t0
    t0 = time.perf_counter()
    beam_out = decode(best, test_sources, src_vocab, tgt_vocab, settings.beam,
                      settings.length_penalty,
                      max_len)
    beam_seconds = time.perf_counter() - t0
    greedy = {**scores(greedy_out, test_part, settings.level), "seconds": greedy_seconds}
    beamed = {**scores(beam_out, test_part, settings.level), "seconds": beam_seconds,
              "beam": settings.beam, "length_penalty": settings.length_penalty}
    best_epoch = int(best.epoch)
    val_wer = min((r["val_wer"] for r in history), default=math.nan)
    metrics = {
        "model": {"wer": beamed["wer"], "per": beamed["per"],
                  **({"bleu": beamed["bleu"]} if "bleu" in beamed else {}),
                  "greedy": greedy, "beam": beamed, "val_wer_greedy": val_wer,
                  "best_epoch": best_epoch},
        "baselines": base,
        "config": {"settings": settings.to_dict(), **opts, **sizes, "source": source,
                   "max_pairs": settings.max_pairs,
                   "val_fraction": settings.val_fraction, "test_fraction": settings.test_fraction,
                   "epochs_trained": int(model.epoch), "train_seconds": seconds,
                   "stopped_by": stopped, "minutes": settings.minutes, "max_len": max_len,
                   "total_seconds": time.perf_counter() - t_start,
                   "parameters": int(sum(p.data.size for p in best.parameters()))},
    }
    common.write_metrics(out, metrics)
    name = (f"{settings.cell}({settings.hidden}{', bi' if settings.bidirectional else ''}) "
            f"{settings.attention}")
    columns = ["wer", "per"] + (["bleu"] if settings.level == "word" else [])
    common.print_results(
        f"{label}, test ({len(test_part):,} sources; lower is better for wer/per)",
        [(f"{name} beam {settings.beam}", beamed), (f"{name} greedy", greedy)]
        + [(f"baseline {k}", v) for k, v in base.items()], columns)
    examples = list(zip(test_sources, beam_out))[:5]
    for s, o in examples:
        print(f"  {''.join(s) if settings.level == 'char' else ' '.join(s)}  ->  {' '.join(o)}")

    # figures
    written = ["model.npz", "last.npz", "history.csv", "metrics.json", BASELINE_FILE]
    if not plots.have_matplotlib():
        print('note: install matplotlib (pip install "elman[plot]") for the figures',
              file=sys.stderr)
    else:
        if history:
            plots.plot_history(
                {"loss": [r["loss"] for r in history],
                 "val_loss": [r["val_loss"] for r in history],
                 "val_wer": [r["val_wer"] for r in history]}, os.path.join(out, "curves.png"),
                title=label, metrics=["loss", "wer"],
                ylabels={"loss": "cross entropy per target symbol",
                         "wer": "word error rate (greedy)"}, monitor="val_wer")
            written.append("curves.png")
        if settings.attention != "none":
            picks = [e for e in examples if 0 < len(e[1]) and len(e[0]) <= 16][:4] or examples[:1]
            plot_attention(best, picks, src_vocab, tgt_vocab,
                           os.path.join(out, "translate_attention.png"), label)
            written.append("translate_attention.png")
        plot_by_length(test_part, {f"model beam {settings.beam}": beam_out,
                                   "model greedy": greedy_out, **base_outputs},
                       os.path.join(out, "translate_length.png"), label)
        written.append("translate_length.png")
    print(f"\ntrained {int(model.epoch)} epochs in {seconds:.0f}s (stopped by --{stopped}); "
          f"wrote {out}/: {', '.join(written)}")
    return 0
