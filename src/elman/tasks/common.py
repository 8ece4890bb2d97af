"""What the task commands share: their settings (one frozen dataclass each, below), the common
options, the output directory, training with checkpoints and resume, ``metrics.json``, the
results table and the learning-curve figure.

Every run writes into ``--out DIR``:

    model.npz      the best model so far (lowest validation loss), with what it needs to predict
                   on its own (scaler, vocabulary, ...) in its ``extra``: ``elman.load`` reads it
    last.npz       the state after the last finished epoch: ``--resume`` continues from it
    history.csv    one row per epoch (CSVLogger), appended to across resumes
    metrics.json   {"model": {...}, "baselines": {name: {...}}, "config": {...}}
    curves.png     training vs validation loss (and accuracy where it applies)
    <task>.png     the task's own figure

Settings are data. A command turns its argparse namespace into ONE frozen dataclass at its
start (``FooSettings.from_args(args)``) and reads only that afterwards. Construction validates
every value (``validate()``, one ``error: --option ...`` line, exit 2), whether the values come
from the command line or from a file: the same settings are saved whole in every checkpoint's
``extra["settings"]`` (less ``--out``, ``--threads``, ``--quiet``, ``--resume``: how it ran,
not what it trained) and in metrics.json's ``config["settings"]``, and ``--predict`` /
``--sample`` / ``--resume`` read them back with :meth:`Settings.from_saved`, so a damaged saved
setting is refused with the same rule, naming the file.

    Settings            seed, out, threads, quiet (every command)
    TrainingSettings    + cell, hidden, layers, bidirectional, epochs, batch_size, lr, resume,
                        minutes, recurrent_dropout, zoneout, layer_norm, distributed
                        (the options of :func:`add_common_arguments`)
    ForecastSettings, ClassifySettings, GenerateSettings (TrainingSettings), LongMemorySettings
                        (Settings): in their task modules

To add an option shared by the training commands (e.g. ``--zoneout``): its ``add_argument`` in
:func:`add_common_arguments`, a field with its default in :class:`TrainingSettings` (the field's
name is the option's ``dest``), its check in ``TrainingSettings.validate``; a cell option also
goes into :data:`CELL_OPTIONS`. An option of one command: the same in that task's module
(``add_arguments``, its ``Settings`` class, its ``validate``). A new command: a
``FooSettings(TrainingSettings)`` with ``TASK = "foo"`` and ``ARGUMENTS = add_arguments``, built
with ``FooSettings.from_args(args)`` first thing in ``run``; ``extra={"task": ...,
"settings": settings.to_dict(invocation=False), ...}`` in its checkpoints (what is learnt from
the data, such as a vocabulary or scaler, stays beside it in ``extra``) and ``"config":
{"settings": settings.to_dict(), ...}`` in metrics.json. A file saved before a field existed
gets that field's command-line default.
"""
from __future__ import annotations

import argparse
import atexit
import contextlib
import csv
import dataclasses
import inspect
import json
import math
import os
import sys
import time
import types
import typing

import numpy as np

from .. import checkpoint, distributed, plots, registry, threads
from .._validate import CommandError
from ..callbacks import Callback, CSVLogger, ModelCheckpoint, TimeBudget

__all__ = ["Settings", "TrainingSettings", "add_common_arguments", "setup_run",
           "prepare_out_dir", "train", "write_metrics", "print_results", "read_history",
           "plot_curves", "read_checkpoint", "check_saved", "saved_settings", "restore", "build",
           "recurrent_layer"]


def add_common_arguments(p: argparse.ArgumentParser, *, cell="lstm", hidden=32, layers=1,
                         epochs=20, batch_size=64, lr=3e-3, out="runs/task",
                         bidirectional=True, minutes=0.0) -> None:
    """The options every task has, with that task's defaults."""
    g = p.add_argument_group("model and training")
    g.add_argument("--cell", choices=list(registry.table("recurrent")), default=cell,
                   help="recurrent cell")
    g.add_argument("--hidden", type=int, default=hidden, help="hidden units per layer")
    g.add_argument("--layers", type=int, default=layers, help="stacked recurrent layers")
    if bidirectional:
        g.add_argument("--bidirectional", action="store_true",
                       help="read the sequence in both directions")
    else:                    # every TrainingSettings field is in the namespace
        p.set_defaults(bidirectional=False)
    g.add_argument("--epochs", type=int, default=epochs, help="training epochs (in total, "
                   "counting those of a resumed run)")
    g.add_argument("--batch-size", type=int, default=batch_size, help="samples per gradient "
                   "step")
    g.add_argument("--lr", type=float, default=lr, help="Adam learning rate")
    g.add_argument("--seed", type=int, default=0, help="seed for data splits, weights, "
                   "shuffling and dropout")
    g.add_argument("--out", default=out, help="output directory for the checkpoints, metrics "
                   "and figures")
    g.add_argument("--resume", action="store_true",
                   help="continue from OUT/last.npz up to --epochs epochs in total")
    g.add_argument("--quiet", action="store_true", help="no per-epoch progress output")
    g.add_argument("--minutes", type=float, default=minutes,
                   help="time budget of the whole run (data, baselines, training, scoring): "
                   "training stops between batches, keeping the best epoch's model, so that "
                   "the run ends within it; 0: no limit")
    g.add_argument("--recurrent-dropout", type=float, default=0.0, metavar="P",
                   help="variational dropout on the recurrent state (one mask per sequence, "
                   "Keras' recurrent_dropout), in [0, 1)")
    g.add_argument("--zoneout", type=float, default=0.0, metavar="P",
                   help="zoneout (Krueger et al. 2017): each unit of the state keeps its "
                   "previous value with probability P at each training step, in [0, 1)")
    g.add_argument("--layer-norm", action="store_true",
                   help="layer-normalised recurrent cells (Ba et al. 2016)")
    g = p.add_argument_group("speed and scale")
    g.add_argument("--threads", type=int, default=0,
                   help="the most BLAS threads to use; 0: every CPU, fewer while other "
                   "programs keep CPUs busy (elman.set_num_threads)")
    g.add_argument("--distributed", action="store_true",
                   help="data-parallel training on every rank of an MPI job: start with "
                   "mpiexec -n K elman ... --distributed (needs elman[mpi]); rank 0 writes "
                   "the outputs")


def positive(name: str, value) -> None:
    """Refuse a ``--name`` that is not a positive integer (``name`` is the option's ``dest``)."""
    if value is None or value < 1:
        raise CommandError(f"error: --{name.replace('_', '-')} must be a positive integer, "
                           f"got {value}")


def fraction(name: str, value, low_open=True) -> None:
    """Refuse a ``--name`` outside (0, 1) (``low_open``) or [0, 1)."""
    if not (0 < value < 1 if low_open else 0 <= value < 1):
        raise CommandError(f"error: --{name.replace('_', '-')} must be in "
                           f"{'(0, 1)' if low_open else '[0, 1)'}, got {value}")


def fractions(settings, *names) -> None:
    """Each of the ``names`` (shares of the data: ``val_fraction``, ``test_fraction``) is in
    (0, 1), and together they leave some data to train on."""
    for name in names:
        fraction(name, getattr(settings, name))
    if sum(getattr(settings, n) for n in names) >= 1:
        raise CommandError(f"error: {' + '.join('--' + n.replace('_', '-') for n in names)} "
                           f"must be below 1, got "
                           f"{' + '.join(str(getattr(settings, n)) for n in names)}")


def _type_ok(value, kind) -> bool:
    """Whether a saved ``value`` has a field's type ``kind`` (``int``, ``str | None``,
    ``tuple[str, ...] | None``, ...; a bool is not a number, an int is a float)."""
    if typing.get_origin(kind) in (typing.Union, types.UnionType):
        return any(_type_ok(value, k) for k in typing.get_args(kind))
    if typing.get_origin(kind) is tuple:
        item = typing.get_args(kind)[0]
        return isinstance(value, (list, tuple)) and all(_type_ok(v, item) for v in value)
    if kind is type(None):
        return value is None
    if isinstance(value, bool):
        return kind is bool
    if kind is float:
        return isinstance(value, (int, float))
    return isinstance(value, kind)


def _type_name(kind) -> str:
    return kind.__name__ if isinstance(kind, type) else str(kind)


def _plain(value):
    """A field's value as saved: tuples become lists (JSON has no tuples)."""
    return list(value) if isinstance(value, tuple) else value


@dataclasses.dataclass(frozen=True, kw_only=True)
class Settings:
    """What every command is told: its options as one frozen value, checked when it is made.

    Build it with :meth:`from_args` (the command line) or :meth:`from_saved` (a checkpoint's or
    metrics.json's copy); :meth:`to_dict` is what is saved. Subclasses add fields (named as the
    options' ``dest``) and extend :meth:`validate` (calling ``super().validate()`` first)."""

    TASK: typing.ClassVar[str] = ""
    #: the task's ``add_arguments``: its command-line defaults fill fields a saved copy lacks
    ARGUMENTS: typing.ClassVar = None
    #: the settings that may differ from the first run's on ``--resume`` (the others are what
    #: was trained: data, model, optimizer; :meth:`check_resume`)
    MAY_CHANGE_ON_RESUME: typing.ClassVar[tuple] = ("out", "threads", "quiet")
    #: how this invocation runs, not what it trains: left out of checkpoints (a resumed or
    #: moved run writes the same bytes as one that never stopped), kept in metrics.json
    INVOCATION: typing.ClassVar[tuple] = ("out", "threads", "quiet", "resume")

    seed: int = 0
    out: str = "runs/task"
    threads: int = 0
    quiet: bool = False
    #: when the command started (``--minutes`` counts from here); not a setting, not saved
    started: float = dataclasses.field(default_factory=time.perf_counter, init=False,
                                       compare=False, repr=False)

    def __post_init__(self):
        self.validate()

    def validate(self) -> None:
        """Raise :class:`CommandError` (``error: --option ...``) for a value out of range."""
        if self.threads < 0:
            raise CommandError(f"error: --threads must be 0 (every CPU) or positive, got "
                               f"{self.threads}")
        if self.seed < 0:
            raise CommandError(f"error: --seed must be a non-negative integer, got {self.seed}")

    @classmethod
    def names(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls) if f.init]

    @classmethod
    def from_args(cls, args: argparse.Namespace):
        """The settings in ``args`` (fields the namespace lacks keep their defaults)."""
        given = vars(args)
        return cls(**{name: tuple(given[name]) if isinstance(given[name], list)
                      else given[name] for name in cls.names() if name in given})

    def to_dict(self, invocation: bool = True) -> dict:
        """Every setting, as plain data for JSON (``from_saved`` reads it back); without
        those of :attr:`INVOCATION` for a checkpoint (``invocation=False``)."""
        return {name: _plain(getattr(self, name)) for name in self.names()
                if invocation or name not in self.INVOCATION}

    @classmethod
    def defaults(cls) -> dict:
        """The command line's defaults (of ``ARGUMENTS``), else the fields' own."""
        if cls.ARGUMENTS is None:
            return {}
        p = argparse.ArgumentParser(add_help=False)
        cls.ARGUMENTS(p)
        return {k: v for k, v in vars(p.parse_known_args([])[0]).items()}

    def check_resume(self, first: "Settings", path: str) -> None:
        """Refuse to continue the run ``first`` (its settings, read back from ``path``) with
        other settings than those in :attr:`MAY_CHANGE_ON_RESUME`."""
        changed = [n for n in self.names() if n not in self.MAY_CHANGE_ON_RESUME
                   and getattr(first, n) != getattr(self, n)]
        if changed:
            def shown(settings):
                return ", ".join(f"--{n.replace('_', '-')} {_plain(getattr(settings, n))!r}"
                                 for n in changed)
            free = ", ".join(f"--{n.replace('_', '-')}" for n in self.MAY_CHANGE_ON_RESUME)
            raise CommandError(f"error: --resume: {path} was trained with {shown(first)}, these "
                               f"options say {shown(self)}; use the same options as the first "
                               f"run (only {free} may change)")

    @classmethod
    def from_saved(cls, saved, path: str, option: str):
        """Settings read back from a file (a stranger's: each value is checked for its type
        and then by :meth:`validate`, and any fault is one ``error: OPTION: PATH is damaged:
        ...`` line). A setting the file lacks (saved before it existed) gets its default."""
        def damaged(why):
            return CommandError(f"error: {option}: {path} is damaged: {why}")
        if not isinstance(saved, dict):
            raise damaged(f"its settings must be a mapping, got {type(saved).__name__}")
        unknown = sorted(set(saved) - set(cls.names()))
        if unknown:
            raise damaged(f"its settings hold {unknown}, which {cls.__name__} does not know "
                          f"(written by a newer elman?)")
        values = {**cls.defaults(), **saved}
        hints = typing.get_type_hints(cls)
        kinds = {name: hints[name] for name in cls.names()}
        for name in kinds:
            if name in values and not _type_ok(values[name], kinds[name]):
                shown = repr(values[name])
                shown = shown if len(shown) <= 60 else shown[:57] + "..."
                raise damaged(f"its setting {name!r} must be {_type_name(kinds[name])}, got "
                              f"{shown}")
        try:
            return cls(**{name: tuple(v) if isinstance(v, list) else
                          float(v) if kinds[name] is float else v
                          for name, v in values.items() if name in kinds})
        except CommandError as e:
            raise damaged(f"its settings: {str(e).removeprefix('error: ')}") from None


@dataclasses.dataclass(frozen=True, kw_only=True)
class TrainingSettings(Settings):
    """The options of :func:`add_common_arguments` (defaults: the argparse ones)."""

    cell: str = "lstm"
    hidden: int = 32
    layers: int = 1
    bidirectional: bool = False
    epochs: int = 20
    batch_size: int = 64
    lr: float = 3e-3
    resume: bool = False
    minutes: float = 0.0
    recurrent_dropout: float = 0.0
    zoneout: float = 0.0
    layer_norm: bool = False
    distributed: bool = False

    MAY_CHANGE_ON_RESUME = (*Settings.MAY_CHANGE_ON_RESUME, "resume", "epochs", "minutes",
                            "distributed")

    def validate(self) -> None:
        super().validate()
        if self.cell not in registry.table("recurrent"):
            raise CommandError(f"error: --cell must be one of "
                               f"{sorted(registry.table('recurrent'))}, got {self.cell!r}")
        if not 0 <= self.recurrent_dropout < 1:
            raise CommandError(f"error: --recurrent-dropout must be in [0, 1), got "
                               f"{self.recurrent_dropout}")
        if not 0 <= self.zoneout < 1:
            raise CommandError(f"error: --zoneout must be in [0, 1), got {self.zoneout}")
        if not self.minutes >= 0:
            raise CommandError(f"error: --minutes must be 0 (no limit) or positive, got "
                               f"{self.minutes}")
        for name in ("hidden", "layers", "epochs", "batch_size"):
            positive(name, getattr(self, name))
        if not 0 < self.lr < math.inf:
            raise CommandError(f"error: --lr must be a positive number, got {self.lr}")


def setup_run(settings: Settings):
    """Apply --threads and --distributed: returns the MPI communicator (None without
    --distributed). MPI ranks on one host share its CPUs, so without --threads each rank's
    cap is its share of them (one thread each when there are as many ranks as CPUs)."""
    comm = None
    if getattr(settings, "distributed", False):
        try:
            comm = distributed.world()
        except ImportError as e:
            raise CommandError(f"error: --distributed: {e}") from None
    if settings.threads:
        threads.set_num_threads(settings.threads)
    elif comm is not None:
        threads.share_cpus(comm.local_size)
    if comm is not None and not comm.is_root:
        sys.stdout = open(os.devnull, "w")     # rank 0 speaks for the job (errors still show)
    return comm


FINISHING_SECONDS = 2.0    # kept for what a command does after scoring: figures, files


def time_budget(settings: TrainingSettings, after: float = 1.0, share: float = 1.0):
    """A :class:`TimeBudget` for ``--minutes`` counted from the command's start (None without
    a limit), ending training by ``share`` of it; ``after`` validation-sized passes are kept
    for the scoring after training, and a few seconds for the figures and files."""
    if not settings.minutes:
        return None
    return TimeBudget(settings.minutes * 60 * share, start=settings.started,
                      after=after, reserve=FINISHING_SECONDS,
                      verbose=0 if settings.quiet else 1)


class Ticker:
    """Progress of a long step outside ``fit``: ``tick(done, total)`` prints ``"LABEL: done/
    total (12s)"`` at most every ``every`` seconds (nothing with ``quiet``)."""

    def __init__(self, label: str, every: float = 10.0, quiet: bool = False):
        self.label, self.every, self.quiet = label, every, quiet
        self.start = self.last = time.perf_counter()

    def tick(self, done: int, total: int) -> None:
        now = time.perf_counter()
        if not self.quiet and now - self.last >= self.every:
            self.last = now
            print(f"{self.label}: {done}/{total} ({now - self.start:.0f}s)", flush=True)


def prepare_out_dir(path: str, resume: bool, writer: bool = True) -> str:
    """Create ``--out``. A directory this run creates and leaves empty (it failed before
    writing anything) is removed again when the process exits, by the ``writer`` (under MPI,
    rank 0: another rank may finish while rank 0 is still to write its files)."""
    if os.path.exists(path) and not os.path.isdir(path):
        raise CommandError(f"error: --out: {path} is a file, not a directory")
    if not os.path.exists(path):
        try:
            os.makedirs(path, exist_ok=True)    # (MPI ranks may race to create it)
        except OSError as e:
            raise CommandError(f"error: --out: cannot create {path}: {e.strerror}") from None
        if writer:
            atexit.register(_remove_if_empty, path)
    elif writer:           # what a killed earlier run was writing when it died
        checkpoint.remove_stale_temporaries(path)
    if resume and not os.path.exists(os.path.join(path, "last.npz")):
        raise CommandError(f"error: --resume: no checkpoint {os.path.join(path, 'last.npz')} to "
                           "resume from")
    return path


def build(factory, flags: str):
    """The task's model from ``factory()``. The constructors refuse sizes the machine cannot
    hold before allocating anything; here that is one error line naming the ``flags`` that
    set them (e.g. ``"--hidden/--layers"``)."""
    try:
        return factory()
    except ValueError as e:
        raise CommandError(f"error: {flags}: {e}") from None


#: options of some cells only, by their command-line flag: passed on only when asked for, so
#: that a cell without them (MinGRU, MinLSTM: no recurrent weight to drop out or normalise)
#: still builds, and refused with that flag's name for a cell that lacks them
CELL_OPTIONS = {"recurrent_dropout": "--recurrent-dropout", "zoneout": "--zoneout",
                "layer_norm": "--layer-norm"}


def recurrent_layer(cell: str, input_size: int, hidden_size: int, **options):
    """The ``--cell`` layer from the registry (``elman.registry``, kind ``"recurrent"``), with
    the shared ``options`` (``num_layers``, ``seed``, ...); the options in
    :data:`CELL_OPTIONS` only when set.

    >>> recurrent_layer("mingru", 3, 4, seed=0, layer_norm=False)
    MinGRU(3, 4)
    """
    cls = registry.get("recurrent", cell)
    if cls is None:
        raise CommandError(f"error: --cell must be one of {sorted(registry.table('recurrent'))}, "
                           f"got {cell!r}")
    takes = inspect.signature(cls).parameters
    for name, flag in CELL_OPTIONS.items():
        if name in options and not options[name]:
            del options[name]              # off: the cell's own default
        elif name in options and name not in takes:
            raise CommandError(f"error: {flag} is not available for --cell {cell}")
    return cls(input_size, hidden_size, **options)


def _remove_if_empty(path: str) -> None:
    with contextlib.suppress(OSError):
        os.rmdir(path)                  # only succeeds on an empty directory


class _SaveLast(Callback):
    """Write OUT/last.npz after every epoch (model, optimizer, epoch, generators, extra), with
    the state of every callback in ``resumable`` (``state_dict()``) in
    ``extra["training"]["callbacks"]``, so that ``--resume`` continues them."""

    root_only = True

    def __init__(self, path: str, extra, resumable=()):
        super().__init__()
        self.path, self.extra, self.resumable = path, extra, list(resumable)

    def on_epoch_end(self, epoch, logs=None):
        extra = self.extra
        if self.resumable:
            extra = {**(extra or {}), "training": {"callbacks": [
                {"callback": type(cb).__name__, "state": cb.state_dict()}
                for cb in self.resumable]}}
        checkpoint.save(self.model, self.path, extra=extra)


def train(model, x, y, validation, settings, out_dir: str, extra=None, fit_kwargs=None,
          comm=None, monitor: str = "val_loss", prepare=None, budget=None):
    """Fit ``model`` (compiled) with checkpoints, or continue a run with ``--resume``.

    ``validation`` is ``(x_val, y_val)`` or a dict of ``fit`` keywords; ``extra`` is stored in
    both checkpoints; ``monitor`` picks the best epoch (model.npz). ``prepare(model)``, called
    on the model that trains (the resumed one with ``--resume``), may compile it again and
    returns the task's own callbacks (schedules, early stopping, ...): they run after the
    best-model checkpoint and before history.csv and last.npz are written, and those with a
    ``state_dict()`` are saved in last.npz and restored by ``--resume``. ``budget`` (a
    :class:`TimeBudget`) stops training in time. Returns ``(model, history)`` where
    ``history`` covers all epochs of the run (read back from history.csv, so a resumed run
    plots its whole curve)."""
    best_path = os.path.join(out_dir, "model.npz")
    last_path = os.path.join(out_dir, "last.npz")
    history_path = os.path.join(out_dir, "history.csv")
    initial_epoch, best, saved_states, first = 0, None, None, None
    if settings.resume:
        last = read_checkpoint(last_path, "--resume")
        resumed = last.model
        if resumed.config() != model.config():
            raise CommandError(f"error: --resume: {last_path} holds a different architecture "
                               f"than these options build; use the same options as the first run")
        model = resumed
        initial_epoch = int(model.epoch)
        if comm is None or comm.is_root:
            _truncate_history(history_path, initial_epoch)
        previous = read_history(history_path)
        if previous.get(monitor):
            best = float(np.nanmin(previous[monitor][:initial_epoch]))
        saved = last.extra if isinstance(last.extra, dict) else {}
        saved_states = (saved.get("training") or {}).get("callbacks")
        if "settings" in saved:     # (a run saved before they were: its architecture only)
            first = type(settings).from_saved(saved["settings"], last_path, "--resume")
        if initial_epoch >= settings.epochs:
            print(f"{last_path} has already trained {initial_epoch} epochs (--epochs "
                  f"{settings.epochs}): nothing to do")
    elif comm is None or comm.is_root:
        for stale in (history_path,):
            if os.path.exists(stale):
                os.remove(stale)
    # history.csv's row before last.npz: a run killed between the two resumes from the epoch
    # before, and _truncate_history drops the row that last.npz does not cover
    own = list(prepare(model)) if prepare is not None else []
    resumable = [cb for cb in own if callable(getattr(cb, "state_dict", None))]
    if saved_states is not None:
        names = [type(cb).__name__ for cb in resumable]
        saved_names = [s.get("callback") if isinstance(s, dict) else None
                       for s in saved_states]
        if saved_names != names:
            raise CommandError(f"error: --resume: {last_path} was trained with the callbacks "
                               f"{saved_names}, these options use {names} (--patience, --ema, "
                               f"...); use the same options as the first run")
        for cb, saved in zip(resumable, saved_states):
            cb.load_state_dict(saved["state"])
    if first is not None:
        settings.check_resume(first, last_path)
    callbacks = [ModelCheckpoint(best_path, monitor=monitor, save_best_only=True,
                                 extra=extra, initial_value_threshold=best),
                 *own, *([budget] if budget is not None else []),
                 CSVLogger(history_path, append=settings.resume),
                 _SaveLast(last_path, extra, resumable)]
    kwargs = dict(fit_kwargs or {})
    if isinstance(validation, dict):
        kwargs.update(validation)
    else:
        kwargs["validation_data"] = validation
    start = time.perf_counter()
    if initial_epoch < settings.epochs:
        model.fit(x, y, epochs=settings.epochs, batch_size=settings.batch_size, callbacks=callbacks,
                  verbose=0 if settings.quiet else 1, initial_epoch=initial_epoch,
                  distributed=comm, **kwargs)
    seconds = time.perf_counter() - start
    history = read_history(history_path)
    history["seconds"] = seconds
    return model, history


@contextlib.contextmanager
def atomic_text(path: str):
    """Write a text file all or nothing: into ``PATH.tmp``, renamed over ``path`` when the block
    ends; if the block fails, the temporary file goes and ``path`` is untouched."""
    tmp = path + ".tmp"
    try:
        with open(tmp, "w", newline="") as f:
            yield f
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _truncate_history(path: str, epochs: int) -> None:
    """Keep the rows of history.csv for the first ``epochs`` epochs (those last.npz holds): a
    run killed after writing an epoch's row but before saving last.npz repeats that epoch."""
    if not os.path.exists(path):
        return
    with open(path, newline="") as f:
        lines = f.readlines()
    if len(lines) <= epochs + 1:
        return
    with atomic_text(path) as f:
        f.writelines(lines[:epochs + 1])


def read_history(path: str) -> dict:
    """history.csv (CSVLogger) as ``{key: [float, ...]}``; empty if the file is missing."""
    if not os.path.exists(path):
        return {}
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    keys = [k for k in (rows[0] if rows else {}) if k != "epoch"]
    return {k: [float(r[k]) if r[k] not in ("", None) else math.nan for r in rows]
            for k in keys}


def read_checkpoint(path: str, option: str):
    """``checkpoint.load_checkpoint(path)`` for a command: a file that is missing, unreadable or
    fails any of the loader's checks (it is validated as a stranger's file would be) ends the
    command with one ``error: OPTION: PATH: why`` line."""
    try:
        return checkpoint.load_checkpoint(path)
    except FileNotFoundError:
        raise CommandError(f"error: {option}: no such file: {path}") from None
    except OSError as e:
        raise CommandError(f"error: {option}: {path}: {e.strerror or e}") from None
    except (ValueError, TypeError) as e:           # CheckpointError and the rebuild's own checks
        raise CommandError(f"error: {option}: {path}: {e}") from None


def load_best(out_dir: str):
    """The best checkpoint of a run: ``(model, extra)``."""
    ck = read_checkpoint(os.path.join(out_dir, "model.npz"), "--out")
    return ck.model, ck.extra


def load_saved(out_dir: str, task: str, option: str):
    """``(checkpoint, extra)`` of OUT/model.npz for ``--predict``/``--sample``: a clear exit if it
    is missing or was written by another command (its ``extra["task"]`` names the writer)."""
    path = os.path.join(out_dir, "model.npz")
    if not os.path.exists(path):
        raise CommandError(f"error: {option}: no model at {path}; train one first with "
                           f"`elman {task} --out {out_dir}`")
    ck = read_checkpoint(path, option)
    extra = ck.extra if isinstance(ck.extra, dict) else {}
    if extra.get("task") != task:
        raise CommandError(f"error: {option}: {path} is not a model saved by `elman {task}`")
    return ck, extra


# Rules for the settings a command keeps in a model file's ``extra``: each key maps to
# ``(check, what it must be)``. The file may come from anyone, so every value a command reads
# back is checked before it is used (a ``lookback`` of 0 would silently read the wrong window).
def is_count(value, minimum=1) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= minimum


def is_name_list(value) -> bool:
    return (isinstance(value, list) and len(value) > 0 and len(set(value)) == len(value)
            and all(isinstance(v, str) and v for v in value))


def check_saved(extra: dict, path: str, option: str, rules: dict) -> None:
    """Refuse a model file whose ``extra`` breaks one of ``rules`` (``{key: (check, expected)}``)
    with one ``error: OPTION: PATH: ...`` line naming the setting, expected and received."""
    for key, (check, expected) in rules.items():
        value = extra.get(key)
        try:
            good = bool(check(value))
        except (TypeError, ValueError):
            good = False
        if not good:
            shown = repr(value)
            shown = shown if len(shown) <= 60 else shown[:57] + "..."
            raise CommandError(f"error: {option}: {path} is damaged: its setting {key!r} must be "
                               f"{expected}, got {shown}")


def saved_settings(cls, extra: dict, path: str, option: str, legacy=()):
    """The ``cls`` settings a model file's ``extra["settings"]`` holds, checked
    (:meth:`Settings.from_saved`). A file written before settings were saved whole kept some
    of them as keys of ``extra`` itself: the ``legacy`` ones of those are read from there."""
    if "settings" in extra:
        return cls.from_saved(extra["settings"], path, option)
    return cls.from_saved({k: extra[k] for k in legacy if extra.get(k) is not None}, path,
                          option)


def restore(option: str, path: str, what: str, build):
    """``build()`` (a vocabulary's or scaler's ``load_state_dict`` on a model file's state); its
    ValueError/TypeError become one ``error:`` line naming the file and the part."""
    try:
        return build()
    except (ValueError, TypeError, KeyError) as e:
        raise CommandError(f"error: {option}: {path} is damaged: its {what}: {e}") from None


def write_metrics(out_dir: str, metrics: dict) -> str:
    """metrics.json, written atomically; NaN/inf become null (JSON has no NaN)."""
    def clean(v):
        if isinstance(v, dict):
            return {k: clean(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [clean(x) for x in v]
        if isinstance(v, (np.floating, float)):
            return float(v) if math.isfinite(v) else None
        if isinstance(v, np.integer):
            return int(v)
        return v
    path = os.path.join(out_dir, "metrics.json")
    with atomic_text(path) as f:
        json.dump(clean(metrics), f, indent=2, allow_nan=False)
        f.write("\n")
    return path


def print_results(title: str, rows: list[tuple[str, dict]], columns: list[str],
                  file=None) -> None:
    """A small aligned table: one row per forecaster/classifier, one column per metric
    (to ``file``, default the current ``sys.stdout``)."""
    file = sys.stdout if file is None else file
    header = ["", *columns]
    body = [[name] + [f"{m[c]:.4f}" if isinstance(m.get(c), (int, float)) and
                      m.get(c) is not None else "-" for c in columns] for name, m in rows]
    widths = [max(len(r[i]) for r in [header, *body]) for i in range(len(header))]
    print(f"\n{title}", file=file)
    for r in [header, *body]:
        print("  ".join(cell.ljust(w) if i == 0 else cell.rjust(w)
                        for i, (cell, w) in enumerate(zip(r, widths))), file=file)


def plot_curves(history: dict, out_dir: str, title: str, ylabels: dict | None = None
                ) -> str | None:
    """curves.png from the run's history, ``ylabels`` naming each panel's quantity and unit
    (None, with a note, when matplotlib is missing)."""
    if not plots.have_matplotlib():
        print('note: install matplotlib (pip install "elman[plot]") for the figures',
              file=sys.stderr)
        return None
    keys = {k: v for k, v in history.items() if isinstance(v, list)}
    return plots.plot_history(keys, os.path.join(out_dir, "curves.png"), title=title,
                              ylabels=ylabels)
