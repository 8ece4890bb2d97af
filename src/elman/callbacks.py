"""Callbacks for :meth:`elman.Sequential.fit`, with Keras' names and behaviour.

A callback is an object with hooks that ``fit`` calls at fixed points of training::

    on_train_begin(logs)                       once, before the first epoch
      on_epoch_begin(epoch, logs)              epoch is 0-based (the first one run is
        on_batch_begin(batch, logs)            initial_epoch)
        on_batch_end(batch, logs)              logs: {"loss": this batch's loss, "size": n}
        on_test_begin(logs)                    before the validation data is scored, and
          on_test_batch_end(batch, logs)       after each of its batches ({"size": n});
        on_test_end(logs)                      after it (logs: the validation scores, unprefixed)
      on_epoch_end(epoch, logs)                logs: "loss", metrics, "val_loss", "val_<metric>",
    on_train_end(logs)                         "lr" (the learning rate used during the epoch)

The three test hooks are optional for an object that does not subclass :class:`Callback`.

``fit`` sets ``callback.model`` (the model being trained) and ``callback.params`` (``epochs``,
``steps``, ``verbose``, ``samples``) before ``on_train_begin``. When ``on_epoch_end`` runs,
``model.epoch`` already counts the finished epoch (``epoch + 1``), so a checkpoint written there
resumes with ``fit(..., initial_epoch=model.epoch)``. A callback stops training by setting
``model.stop_training = True``.

Provided here: :class:`History` (added by ``fit`` itself and returned by it),
:class:`EarlyStopping`, :class:`ModelCheckpoint`, :class:`CSVLogger`,
:class:`LearningRateScheduler` and :class:`TensorBoard`, which writes TensorBoard event files
with no dependency (:func:`read_event_file` reads them back).
"""
from __future__ import annotations

import csv
import math
import numbers
import os
import socket
import struct
import time
import warnings

import numpy as np

from . import _validate, checkpoint
from .optim import LRScheduler, ReduceLROnPlateau

__all__ = ["Callback", "CallbackList", "History", "EarlyStopping", "ModelCheckpoint",
           "CSVLogger", "LearningRateScheduler", "TimeBudget", "TensorBoard", "read_event_file"]


class Callback:
    """Base class: every hook does nothing. Override the ones you need.

    ``root_only``: in a distributed ``fit`` (several MPI ranks), a callback with
    ``root_only = True`` (those that write files or print: checkpoints, logs, progress) runs
    on rank 0 alone; the others (early stopping, learning-rate schedules) run on every rank,
    which see the same logs and so take the same decisions."""

    root_only = False

    def __init__(self):
        self.model = None
        self.params: dict = {}

    def set_model(self, model) -> None:
        self.model = model

    def set_params(self, params: dict) -> None:
        self.params = dict(params)

    def on_train_begin(self, logs=None):
        pass

    def on_train_end(self, logs=None):
        pass

    def on_epoch_begin(self, epoch, logs=None):
        pass

    def on_epoch_end(self, epoch, logs=None):
        pass

    def on_batch_begin(self, batch, logs=None):
        pass

    def on_batch_end(self, batch, logs=None):
        pass

    def on_test_begin(self, logs=None):
        pass

    def on_test_batch_end(self, batch, logs=None):
        pass

    def on_test_end(self, logs=None):
        pass


class CallbackList:
    """Calls each hook on every callback, in order."""

    _HOOKS = ("on_train_begin", "on_train_end", "on_epoch_begin", "on_epoch_end",
              "on_batch_begin", "on_batch_end")
    _OPTIONAL = ("on_test_begin", "on_test_batch_end", "on_test_end")   # Keras' later additions

    def __init__(self, callbacks, model, params: dict):
        self.callbacks = list(callbacks)
        for i, cb in enumerate(self.callbacks):
            missing = [h for h in self._HOOKS if not callable(getattr(cb, h, None))]
            if missing:
                raise TypeError(f"callbacks[{i}] ({type(cb).__name__}) is not a callback: it "
                                f"lacks {missing}; subclass elman.callbacks.Callback")
            if hasattr(cb, "set_model"):
                cb.set_model(model)
            else:
                cb.model = model
            if hasattr(cb, "set_params"):
                cb.set_params(params)

    def __getattr__(self, hook):
        if hook not in self._HOOKS + self._OPTIONAL:
            raise AttributeError(hook)

        def call(*args):
            for cb in self.callbacks:
                method = getattr(cb, hook, None)
                if method is not None:
                    method(*args)
        return call


class History(Callback):
    """Records the logs of every epoch: ``history[key]`` is a list with one value per epoch,
    ``epoch`` the list of epoch indices (0-based). ``fit`` returns its History.

    >>> h = History()
    >>> h.on_train_begin()
    >>> h.on_epoch_end(0, {"loss": 0.5, "val_loss": 0.7})
    >>> h.epoch, h.history
    ([0], {'loss': [0.5], 'val_loss': [0.7]})
    """

    def __init__(self):
        super().__init__()
        self.history: dict[str, list] = {}
        self.epoch: list[int] = []

    def on_train_begin(self, logs=None):
        self.epoch = []

    def on_epoch_end(self, epoch, logs=None):
        self.epoch.append(epoch)
        for key, value in (logs or {}).items():
            self.history.setdefault(key, []).append(value)


# -- monitoring a metric ------------------------------------------------------------------------

def _monitor(owner: str, monitor) -> str:
    """The name of a logged quantity: a non-empty string (``"val_loss"``, ``"accuracy"``)."""
    if not isinstance(monitor, str) or not monitor:
        raise TypeError(f"{owner}: monitor must be the name of a logged quantity such as "
                        f"'val_loss', got {monitor!r}")
    return monitor


def _mode(owner: str, mode: str, monitor: str) -> str:
    """'min' or 'max'; 'auto' is 'max' for accuracies (the name contains 'acc'), else 'min'."""
    if mode not in ("auto", "min", "max"):
        raise ValueError(f"{owner}: mode must be 'auto', 'min' or 'max', got {mode!r}")
    if mode == "auto":
        return "max" if "acc" in monitor else "min"
    return mode


def _monitored(owner: str, logs, monitor: str):
    """``logs[monitor]`` as a float, or None (with a warning naming the available keys)."""
    logs = logs or {}
    if monitor not in logs:
        warnings.warn(f"{owner}: the monitored quantity {monitor!r} is not in the logs "
                      f"(available: {sorted(logs)}); did you forget validation data for "
                      f"'val_' keys?", RuntimeWarning, stacklevel=3)
        return None
    return float(logs[monitor])


class EarlyStopping(Callback):
    """Stop training when ``monitor`` has stopped improving (Keras' rules).

    An epoch improves when its value beats the best so far by more than ``min_delta`` (lower
    for ``mode='min'``, higher for ``'max'``; ``'auto'`` picks 'max' when the name contains
    "acc"). Training stops after ``patience`` epochs in a row without improvement. With
    ``restore_best_weights`` the model gets the weights of the best epoch back when training
    ends (stopped early or not), as Keras 3 does; ``best_epoch`` and ``stopped_epoch`` (0 if
    it did not stop) are kept as attributes.
    """

    def __init__(self, monitor: str = "val_loss", min_delta: float = 0.0, patience: int = 0,
                 mode: str = "auto", restore_best_weights: bool = False):
        super().__init__()
        if isinstance(patience, bool) or not isinstance(patience, numbers.Integral) \
                or patience < 0:
            raise ValueError(f"EarlyStopping: patience must be an integer >= 0, got {patience!r}")
        if isinstance(min_delta, bool) or not isinstance(min_delta, numbers.Real) \
                or not min_delta >= 0:
            raise ValueError(f"EarlyStopping: min_delta must be a number >= 0, got "
                             f"{min_delta!r}")
        self.monitor = _monitor("EarlyStopping", monitor)
        self.min_delta = float(min_delta)
        self.patience = int(patience)
        self.mode = _mode("EarlyStopping", mode, monitor)
        self.restore_best_weights = _validate.flag("restore_best_weights", restore_best_weights)
        self._reset()

    def _reset(self):
        self.wait = 0
        self.stopped_epoch = 0
        self.best = math.inf if self.mode == "min" else -math.inf
        self.best_epoch = 0
        self.best_weights = None

    def state_dict(self) -> dict:
        """What a resumed run needs to stop where an uninterrupted one would (JSON-able)."""
        return {"wait": self.wait, "best_epoch": self.best_epoch,
                "best": self.best if math.isfinite(self.best) else None}

    def load_state_dict(self, state: dict) -> None:
        """Continue from :meth:`state_dict` at the next ``fit`` (instead of starting over)."""
        self._restored = dict(state)

    def _is_improvement(self, value: float, reference: float) -> bool:
        if self.mode == "min":
            return value + self.min_delta < reference
        return value - self.min_delta > reference

    def on_train_begin(self, logs=None):
        self._reset()
        restored, self._restored = getattr(self, "_restored", None), None
        if restored:
            self.wait, self.best_epoch = int(restored["wait"]), int(restored["best_epoch"])
            if restored["best"] is not None:
                self.best = float(restored["best"])

    def on_epoch_end(self, epoch, logs=None):
        current = _monitored("EarlyStopping", logs, self.monitor)
        if current is None:
            return
        self.wait += 1
        if self._is_improvement(current, self.best):
            self.best = current
            self.best_epoch = epoch
            if self.restore_best_weights:
                self.best_weights = self.model.state_dict()
            self.wait = 0
            return
        if self.wait >= self.patience:
            self.stopped_epoch = epoch
            self.model.stop_training = True

    def on_train_end(self, logs=None):
        if self.restore_best_weights and self.best_weights is not None:
            self.model.load_state_dict(self.best_weights)


class ModelCheckpoint(Callback):
    """Save the model with :func:`elman.checkpoint.save` at the end of epochs.

    ``filepath`` may hold ``str.format`` fields: ``{epoch}`` (the number of finished epochs,
    1-based as in Keras, e.g. ``"ckpt-{epoch:02d}.npz"``) and any key of the epoch's logs
    (``"{val_loss:.4f}"``). With ``save_best_only`` a file is written only when ``monitor``
    improves on the best value seen so far (``mode`` as in :class:`EarlyStopping`), so an
    unformatted ``filepath`` always holds the best model. The checkpoint includes the
    optimizer state, the epoch and every generator state: load it with :func:`elman.load` and
    resume with ``fit(..., initial_epoch=model.epoch)``.

    Writes are atomic (a temporary file renamed into place) and a model holding NaN or infinity
    is never written, so the last good file survives a diverging run.

    ``extra`` (plain data and arrays: a scaler's state, a vocabulary) is stored in every file, so
    a checkpoint predicts on its own. ``initial_value_threshold`` (as in Keras) is the value to
    beat at the start, e.g. the best of a run being resumed, so a resumed run never replaces
    its best file with a worse one.
    """

    root_only = True

    def __init__(self, filepath, monitor: str = "val_loss", save_best_only: bool = False,
                 mode: str = "auto", verbose: int = 0, extra=None,
                 initial_value_threshold: float | None = None):
        super().__init__()
        self.filepath = os.fspath(filepath)
        self.monitor = _monitor("ModelCheckpoint", monitor)
        self.save_best_only = _validate.flag("save_best_only", save_best_only)
        self.mode = _mode("ModelCheckpoint", mode, monitor)
        if verbose not in (0, 1):
            raise ValueError(f"ModelCheckpoint: verbose must be 0 or 1, got {verbose!r}")
        self.verbose = int(verbose)
        self.extra = extra
        self.best = math.inf if self.mode == "min" else -math.inf
        if initial_value_threshold is not None:
            self.best = float(initial_value_threshold)
        self.last_saved: str | None = None

    def _better(self, value: float) -> bool:
        return value < self.best if self.mode == "min" else value > self.best

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        if self.save_best_only:
            current = _monitored("ModelCheckpoint", logs, self.monitor)
            if current is None or not self._better(current):      # NaN never improves
                return
            self.best = current
        try:
            path = self.filepath.format(epoch=epoch + 1, **logs)
        except (KeyError, IndexError, ValueError) as e:
            raise ValueError(f"ModelCheckpoint: cannot format filepath {self.filepath!r} with "
                             f"epoch and the logs {sorted(logs)}: {e!r}") from None
        checkpoint.save(self.model, path, extra=self.extra)
        self.last_saved = path
        if self.verbose:
            print(f"Epoch {epoch + 1}: saved the model to {path}")


class CSVLogger(Callback):
    """Write one CSV row per epoch: ``epoch`` then the logs' keys in sorted order, floats with
    full precision. Each row is written and flushed when its epoch ends. ``append=True``
    continues an existing file (no second header), e.g. when resuming.

    ``epoch`` counts from 1: it is the number of finished epochs, as in the progress output
    ("Epoch 1/10"), ``model.epoch`` after the epoch and ModelCheckpoint's ``{epoch}``. (Keras'
    CSVLogger writes the 0-based index; elman numbers every epoch a person reads from 1 --
    files, progress, figures, TensorBoard steps -- and keeps 0-based indices only where Python
    code indexes: the hooks' ``epoch`` argument and ``History.epoch``.)

    >>> import os, tempfile
    >>> folder = tempfile.TemporaryDirectory()
    >>> path = os.path.join(folder.name, "log.csv")
    >>> logger = CSVLogger(path)
    >>> logger.on_train_begin()
    >>> logger.on_epoch_end(0, {"loss": 0.5, "accuracy": 0.75})
    >>> print(open(path).read().strip())
    epoch,accuracy,loss
    1,0.75,0.5
    >>> folder.cleanup()
    """

    root_only = True

    def __init__(self, filename, separator: str = ",", append: bool = False):
        super().__init__()
        self.filename = os.fspath(filename)
        if not isinstance(separator, str) or len(separator) != 1:
            raise TypeError(f"CSVLogger: separator must be one character, got {separator!r}")
        self.separator = separator
        self.append = _validate.flag("append", append)
        self._keys: list[str] | None = None

    def on_train_begin(self, logs=None):
        self._keys = None
        if not self.append:
            open(self.filename, "w").close()

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        write_header = not os.path.exists(self.filename) or os.path.getsize(self.filename) == 0
        if self._keys is None:
            self._keys = sorted(logs)
            if not write_header:            # appending: keep the existing file's columns
                with open(self.filename, newline="") as f:
                    header = next(csv.reader(f, delimiter=self.separator), None)
                if header and header[0] == "epoch":
                    self._keys = header[1:]
        row = [str(epoch + 1)] + [_csv_value(logs.get(k, "")) for k in self._keys]
        with open(self.filename, "a", newline="") as f:
            writer = csv.writer(f, delimiter=self.separator, lineterminator="\n")
            if write_header:
                writer.writerow(["epoch"] + self._keys)
            writer.writerow(row)


def _csv_value(v) -> str:
    if isinstance(v, (float, np.floating)):
        return repr(float(v))
    return str(v)


class LearningRateScheduler(Callback):
    """Change ``model.optimizer.lr`` once per epoch.

    ``schedule`` is either

    * a function ``schedule(epoch, lr) -> new_lr`` (Keras' form), called at the beginning of
      every epoch (0-based ``epoch``) with the current learning rate; it depends only on its
      arguments, so it resumes correctly from ``initial_epoch``;
    * or an ``elman.optim`` scheduler built on ``model.optimizer`` (``StepLR``,
      ``CosineAnnealingLR``, ``LinearLR``, ...), stepped at the end of every epoch as in
      PyTorch; ``ReduceLROnPlateau`` is stepped with the epoch's ``monitor`` value (default
      ``"val_loss"``, falling back to ``"loss"`` when there is no validation).

    The learning rate used in an epoch is logged as ``"lr"``.
    """

    def __init__(self, schedule, monitor: str = "val_loss", verbose: int = 0):
        super().__init__()
        self._is_object = isinstance(schedule, (LRScheduler, ReduceLROnPlateau))
        if not self._is_object and not callable(schedule):
            raise TypeError(f"LearningRateScheduler: schedule must be a function (epoch, lr) -> "
                            f"lr or an elman.optim scheduler, got {type(schedule).__name__}")
        self._plateau = isinstance(schedule, ReduceLROnPlateau)
        self.schedule = schedule
        self.monitor = _monitor("LearningRateScheduler", monitor)
        self.verbose = verbose

    def on_train_begin(self, logs=None):
        if self._is_object and self.schedule.optimizer is not getattr(self.model, "optimizer",
                                                                      None):
            raise ValueError("LearningRateScheduler: the scheduler was built on another "
                             "optimizer than the model's; compile the model first, then build "
                             "it on model.optimizer")

    def on_epoch_begin(self, epoch, logs=None):
        if self._is_object:
            return
        optimizer = self.model.optimizer
        lr = self.schedule(epoch, float(optimizer.lr))
        if isinstance(lr, bool) or not isinstance(lr, numbers.Real) or not math.isfinite(lr) \
                or lr < 0:
            raise ValueError(f"LearningRateScheduler: the schedule returned {lr!r} for epoch "
                             f"{epoch}; it must return a finite number >= 0")
        optimizer.lr = float(lr)
        if self.verbose:
            print(f"Epoch {epoch + 1}: LearningRateScheduler setting learning rate to {lr}.")

    def state_dict(self) -> dict:
        """The scheduler object's state (empty for a function), for resuming."""
        return self.schedule.state_dict() if self._is_object else {}

    def load_state_dict(self, state: dict) -> None:
        if self._is_object:
            self.schedule.load_state_dict(state)

    def on_epoch_end(self, epoch, logs=None):
        if not self._is_object:
            return
        if self._plateau:
            logs = logs or {}
            key = self.monitor if self.monitor in logs else "loss"
            value = _monitored("LearningRateScheduler", logs, key)
            if value is not None:
                self.schedule.step(value)
        else:
            self.schedule.step()


class TimeBudget(Callback):
    """Stop training in time for the run to end within ``seconds``.

    Checked after every batch, not only between epochs: training stops (Keras'
    ``model.stop_training``, so the epoch ends there, is validated and its callbacks run:
    checkpoints keep the best model) as soon as the time used since ``start`` (a
    ``time.perf_counter()`` value; default: when training begins) plus what must still come
    would pass the budget. What must still come: one more batch (twice the median of the
    recent ones, the first left out), one validation pass (as long as the last one took;
    before the first, estimated from the training batches as if validation cost what training
    does per sample and step, which over-estimates a forward pass), ``after`` more validation-sized passes
    that the caller runs after ``fit`` (e.g. scoring a test set as large as the validation
    set) and ``reserve`` seconds for the rest of the caller's work (figures, files).

    ``stopped`` tells whether the budget ended training; ``seconds_left()`` what remains;
    ``verbose=1`` prints a line when it stops training.
    """

    def __init__(self, seconds: float, start: float | None = None, after: float = 0.0,
                 reserve: float = 0.0, verbose: int = 0):
        super().__init__()
        for name, value, low in (("seconds", seconds, None), ("after", after, 0),
                                 ("reserve", reserve, 0)):
            if isinstance(value, bool) or not isinstance(value, numbers.Real) or not (
                    value > 0 if low is None else value >= low):
                raise ValueError(f"TimeBudget: {name} must be a number "
                                 f"{'> 0' if low is None else '>= 0'}, got {value!r}")
        if verbose not in (0, 1):
            raise ValueError(f"TimeBudget: verbose must be 0 or 1, got {verbose!r}")
        self.seconds, self.start = float(seconds), start
        self.after, self.reserve, self.verbose = float(after), float(reserve), verbose
        self.stopped = False
        self.validation_seconds = None        # the last validation pass, measured

    def seconds_left(self) -> float:
        return self.start + self.seconds - time.perf_counter()

    def on_train_begin(self, logs=None):
        if self.start is None:
            self.start = time.perf_counter()
        self.stopped = False
        self._recent = []                     # (seconds, samples) of the last batches
        self._first = True                    # the run's first batch warms up: not typical

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def on_batch_begin(self, batch, logs=None):
        self._batch_start = time.perf_counter()

    def on_batch_end(self, batch, logs=None):
        took = time.perf_counter() - self._batch_start
        size = max((logs or {}).get("size", 1), 1)
        if self._first:
            # the warm-up batch (allocations, compilation) says little about the others:
            # stop on it only when the time is already over
            self._recent, self._first = [(took, size)], None
            if self.seconds_left() <= 0:
                self._stop(batch, self.seconds_left())
            return
        else:
            if self._first is None:          # then leave the warm-up batch out
                self._recent, self._first = [], False
            self._recent = (self._recent + [(took, size)])[-5:]
        batch_seconds = float(np.median([t for t, _ in self._recent]))
        per_sample = float(np.median([t / n for t, n in self._recent]))
        still = 2 * batch_seconds + self._validation_estimate(per_sample) * (1.0 + self.after) \
            + self.reserve
        left = self.seconds_left()
        if still >= left:
            self._stop(batch, left)

    def _stop(self, batch: int, left: float) -> None:
        self.stopped = True
        self.model.stop_training = True
        if self.verbose:
            print(f"time budget: stopping in epoch {self._epoch + 1} after batch "
                  f"{batch + 1}/{self.params.get('steps', '?')}, keeping {max(left, 0):.0f}s "
                  f"of the {self.seconds:.0f}s for validation and what follows", flush=True)

    def _validation_estimate(self, per_sample: float) -> float:
        if self.validation_seconds is not None:
            return self.validation_seconds
        p = self.params                 # (fit's: samples and time steps of each set)
        work = p.get("validation_samples", 0) * p.get("validation_length", 1)
        return per_sample / max(p.get("length", 1), 1) * work

    def on_test_begin(self, logs=None):
        self._test_start = time.perf_counter()

    def on_test_end(self, logs=None):
        self.validation_seconds = time.perf_counter() - self._test_start


# -- TensorBoard -----------------------------------------------------------------------------------
# An event file is a sequence of records: uint64 length, uint32 masked CRC-32C of the length,
# the bytes of one serialised `tensorflow.Event` protobuf, uint32 masked CRC-32C of those bytes.
# The few protobuf fields we need are written by hand, so there is no dependency.

def _crc32c_table() -> list[int]:
    table = []
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1       # Castagnoli, reflected
        table.append(c)
    return table


_CRC_TABLE = _crc32c_table()


def _crc32c(data: bytes) -> int:
    """CRC-32C of ``data``.

    >>> hex(_crc32c(b"123456789"))
    '0xe3069283'
    """
    crc = 0xFFFFFFFF
    table = _CRC_TABLE
    for b in data:
        crc = table[(crc ^ b) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def _masked_crc(data: bytes) -> int:
    crc = _crc32c(data)
    return ((((crc >> 15) | (crc << 17)) & 0xFFFFFFFF) + 0xA282EAD8) & 0xFFFFFFFF


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _field_bytes(number: int, payload: bytes) -> bytes:
    """A length-delimited protobuf field (wire type 2)."""
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def _event(wall_time: float, step: int, *, file_version: str | None = None,
           scalars: dict | None = None) -> bytes:
    """A serialised Event: wall_time (1, double), step (2, int64), then file_version (3) or a
    Summary (5) of Values with tag (1, string) and simple_value (2, float)."""
    out = bytes([1 << 3 | 1]) + struct.pack("<d", wall_time) + bytes([2 << 3]) + _varint(step)
    if file_version is not None:
        out += _field_bytes(3, file_version.encode())
    if scalars:
        summary = b"".join(
            _field_bytes(1, _field_bytes(1, tag.encode()) + bytes([2 << 3 | 5])
                         + struct.pack("<f", float(value)))
            for tag, value in scalars.items())
        out += _field_bytes(5, summary)
    return out


def _record(data: bytes) -> bytes:
    header = struct.pack("<Q", len(data))
    return header + struct.pack("<I", _masked_crc(header)) + data + \
        struct.pack("<I", _masked_crc(data))


class _EventWriter:
    """Appends records to one new ``events.out.tfevents.*`` file in ``log_dir``."""

    _count = 0

    def __init__(self, log_dir: str):
        os.makedirs(log_dir, exist_ok=True)
        _EventWriter._count += 1
        name = (f"events.out.tfevents.{int(time.time())}.{socket.gethostname()}."
                f"{os.getpid()}.{_EventWriter._count}")
        self.path = os.path.join(log_dir, name)
        self._f = open(self.path, "wb")
        self._f.write(_record(_event(time.time(), 0, file_version="brain.Event:2")))
        self._f.flush()

    def scalars(self, step: int, values: dict) -> None:
        self._f.write(_record(_event(time.time(), step, scalars=values)))
        self._f.flush()

    def close(self) -> None:
        self._f.close()


class TensorBoard(Callback):
    """Write the epoch logs as TensorBoard scalars, in Keras' layout: ``log_dir/train`` holds
    ``epoch_loss``, ``epoch_<metric>`` and ``epoch_learning_rate``; ``log_dir/validation``
    holds ``epoch_loss`` and ``epoch_<metric>`` of the validation data, so TensorBoard draws
    both curves in one chart. The step is the number of finished epochs (1 for the first, as
    in history.csv; Keras writes the 0-based index).

    The event files (TFRecord framing, CRC-32C checksums, ``Event``/``Summary`` protobufs) are
    written by elman itself: TensorBoard is needed only to look at them
    (``tensorboard --logdir <log_dir>``). Each ``fit`` starts new files; records are flushed
    every epoch. :func:`read_event_file` reads them back.
    """

    root_only = True

    def __init__(self, log_dir="logs"):
        super().__init__()
        self.log_dir = os.fspath(log_dir)
        self._writers: dict[str, _EventWriter] = {}

    def _writer(self, which: str) -> _EventWriter:
        if which not in self._writers:
            self._writers[which] = _EventWriter(os.path.join(self.log_dir, which))
        return self._writers[which]

    def on_train_begin(self, logs=None):
        self._close()

    def on_epoch_end(self, epoch, logs=None):
        train, val = {}, {}
        for key, value in (logs or {}).items():
            if isinstance(value, bool) or not isinstance(value, numbers.Real):
                continue
            if key.startswith("val_"):
                val["epoch_" + key[4:]] = value
            else:
                train["epoch_" + ("learning_rate" if key == "lr" else key)] = value
        if train:
            self._writer("train").scalars(epoch + 1, train)
        if val:
            self._writer("validation").scalars(epoch + 1, val)

    def on_train_end(self, logs=None):
        self._close()

    def _close(self):
        for w in self._writers.values():
            w.close()
        self._writers = {}


def _read_varint(buf: bytes, i: int) -> tuple[int, int]:
    shift = result = 0
    while True:
        b = buf[i]
        i += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, i
        shift += 7


def _fields(buf: bytes):
    """(field number, wire type, value) of a protobuf message; values are ints or bytes."""
    i = 0
    while i < len(buf):
        key, i = _read_varint(buf, i)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, i = _read_varint(buf, i)
        elif wire == 1:
            value, i = buf[i:i + 8], i + 8
        elif wire == 2:
            n, i = _read_varint(buf, i)
            value, i = buf[i:i + n], i + n
        elif wire == 5:
            value, i = buf[i:i + 4], i + 4
        else:
            raise ValueError(f"unsupported protobuf wire type {wire}")
        yield number, wire, value


def read_event_file(path) -> list[tuple[float, int, dict]]:
    """The scalar events of a TensorBoard event file: ``[(wall_time, step, {tag: value})]``,
    checking every record's CRC-32C (``ValueError`` on a corrupted file). Events without
    scalars (the file-version header) are skipped."""
    with open(path, "rb") as f:
        data = f.read()
    events, i = [], 0
    while i < len(data):
        if i + 12 > len(data):
            raise ValueError(f"{path}: truncated record header at byte {i}")
        header = data[i:i + 8]
        (length,) = struct.unpack("<Q", header)
        (crc,) = struct.unpack("<I", data[i + 8:i + 12])
        if crc != _masked_crc(header):
            raise ValueError(f"{path}: bad length checksum at byte {i}")
        body = data[i + 12:i + 12 + length]
        end = i + 12 + length + 4
        if end > len(data):
            raise ValueError(f"{path}: truncated record at byte {i}")
        (crc,) = struct.unpack("<I", data[end - 4:end])
        if crc != _masked_crc(body):
            raise ValueError(f"{path}: bad data checksum at byte {i}")
        i = end
        wall_time, step, scalars = 0.0, 0, {}
        for number, _, value in _fields(body):
            if number == 1:
                (wall_time,) = struct.unpack("<d", value)
            elif number == 2:
                step = value
            elif number == 5:
                for vnum, _, vbytes in _fields(value):
                    if vnum != 1:
                        continue
                    tag, simple = None, None
                    for fnum, _, fval in _fields(vbytes):
                        if fnum == 1:
                            tag = fval.decode()
                        elif fnum == 2:
                            (simple,) = struct.unpack("<f", fval)
                    if tag is not None and simple is not None:
                        scalars[tag] = simple
        if scalars:
            events.append((wall_time, step, scalars))
    return events
