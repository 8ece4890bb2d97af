"""Tests for elman.callbacks: History, EarlyStopping, ModelCheckpoint, CSVLogger,
LearningRateScheduler and the dependency-free TensorBoard event writer."""
import csv
import glob
import os
import struct

import numpy as np
import pytest

import elman
from elman.callbacks import (Callback, CSVLogger, EarlyStopping, History, LearningRateScheduler,
                             ModelCheckpoint, TensorBoard, _crc32c, _masked_crc, read_event_file)
from elman.model import Sequential
from _torch import require


def data(n=40, steps=4, seed=0):
    x = np.random.default_rng(seed).standard_normal((n, steps, 1)).astype(np.float32)
    return x, (x.sum(axis=(1, 2)) > 0).astype(np.float32)


def model(lr=0.01, seed=0):
    m = Sequential([elman.RNN(1, 6, seed=seed + 1), elman.Last(),
                    elman.Dense(6, 1, activation="sigmoid", seed=seed + 2)], seed=seed)
    m.compile(elman.SGD(m.parameters(), lr=lr), "binary_crossentropy", ["accuracy"])
    return m


class Script(Callback):
    """Overwrites logs[key] with scripted values (it runs before the callback under test) and
    keeps a copy of the weights at the end of every epoch."""

    def __init__(self, key, values):
        super().__init__()
        self.key, self.values, self.weights = key, list(values), []

    def on_epoch_end(self, epoch, logs=None):
        logs[self.key] = self.values[epoch]
        self.weights.append(self.model.get_weights())


def same(ws1, ws2):
    return all(np.array_equal(a, b) for a, b in zip(ws1, ws2))


# -- History -----------------------------------------------------------------------------------

def test_history_is_returned_and_records_every_epoch():
    x, y = data()
    m = model()
    h = m.fit(x, y, epochs=3, batch_size=8, validation_split=0.25, verbose=0)
    assert isinstance(h, History) and h.model is m
    assert h.epoch == [0, 1, 2]
    assert set(h.history) == {"loss", "accuracy", "val_loss", "val_accuracy", "lr"}
    assert all(len(v) == 3 and all(isinstance(f, float) for f in v) for v in h.history.values())


def test_callback_hooks_order_and_params():
    calls = []

    class Recorder(Callback):
        def on_train_begin(self, logs=None):
            calls.append(("train_begin", dict(self.params)))

        def on_epoch_begin(self, epoch, logs=None):
            calls.append(("epoch_begin", epoch))

        def on_batch_end(self, batch, logs=None):
            calls.append(("batch_end", batch, logs["size"]))

        def on_epoch_end(self, epoch, logs=None):
            calls.append(("epoch_end", epoch, self.model.epoch))

        def on_train_end(self, logs=None):
            calls.append(("train_end",))

    x, y = data(n=10)
    model().fit(x, y, epochs=2, batch_size=4, callbacks=[Recorder()], verbose=0)
    assert calls[0] == ("train_begin", {"epochs": 2, "steps": 3, "verbose": 0, "samples": 10,
                                        "batch_size": 4, "length": x.shape[1],
                                        "validation_samples": 0, "validation_length": 1,
                                        "validation_steps": 0})
    assert calls[1:] == [("epoch_begin", 0), ("batch_end", 0, 4), ("batch_end", 1, 4),
                         ("batch_end", 2, 2), ("epoch_end", 0, 1),
                         ("epoch_begin", 1), ("batch_end", 0, 4), ("batch_end", 1, 4),
                         ("batch_end", 2, 2), ("epoch_end", 1, 2), ("train_end",)]
    with pytest.raises(TypeError, match=r"callbacks\[0\] \(str\) is not a callback"):
        model().fit(x, y, callbacks=["early"], verbose=0)


# -- EarlyStopping -----------------------------------------------------------------------------

def test_early_stopping_stops_after_patience_and_restores_best():
    x, y = data()
    m = model()
    script = Script("val_loss", [1.0, 0.5, 0.7, 0.6, 0.55, 0.4, 0.3, 0.2])
    stop = EarlyStopping(patience=3, restore_best_weights=True)
    h = m.fit(x, y, epochs=8, batch_size=8, validation_split=0.25, callbacks=[script, stop],
              verbose=0)
    # best 0.5 at epoch 1; epochs 2, 3, 4 do not improve -> stop after epoch 4
    assert h.epoch == [0, 1, 2, 3, 4] and m.epoch == 5
    assert stop.stopped_epoch == 4 and stop.best_epoch == 1 and stop.best == 0.5
    assert same(m.get_weights(), script.weights[1])
    assert not same(m.get_weights(), script.weights[4])


def test_early_stopping_min_delta_mode_and_no_restore():
    x, y = data()
    m = model()
    script = Script("val_accuracy", [0.5, 0.6, 0.605, 0.61, 0.9])
    stop = EarlyStopping(monitor="val_accuracy", min_delta=0.02, patience=1)
    assert stop.mode == "max"                    # 'auto' with an accuracy
    h = m.fit(x, y, epochs=5, batch_size=8, validation_split=0.25, callbacks=[script, stop],
              verbose=0)
    # 0.605 and 0.61 are within min_delta of 0.6: two epochs without improvement -> stop at 3
    assert h.epoch == [0, 1, 2] and stop.stopped_epoch == 2
    assert same(m.get_weights(), script.weights[-1])     # restore_best_weights=False
    with pytest.raises(ValueError, match="mode must be 'auto', 'min' or 'max'"):
        EarlyStopping(mode="best")
    with pytest.raises(ValueError, match="patience must be an integer >= 0"):
        EarlyStopping(patience=-1)


def test_early_stopping_warns_about_a_missing_monitor():
    x, y = data()
    with pytest.warns(RuntimeWarning, match="'val_loss' is not in the logs"):
        model().fit(x, y, epochs=1, callbacks=[EarlyStopping()], verbose=0)


def test_early_stopping_on_a_real_run():
    """Overfitting a tiny training set: validation loss rises and training stops early."""
    x, y = data(n=200)
    y[150:] = 1 - y[150:]                        # validation labels contradict training ones
    m = model(lr=0.5)
    stop = EarlyStopping(patience=2, restore_best_weights=True)
    h = m.fit(x, y, epochs=30, batch_size=10, validation_split=0.25, callbacks=[stop],
              verbose=0)
    assert len(h.epoch) < 30
    best = int(np.argmin(h.history["val_loss"]))
    assert stop.best_epoch == best
    assert m.evaluate(x[150:], y[150:])[0] == pytest.approx(h.history["val_loss"][best],
                                                            rel=1e-6)


# -- ModelCheckpoint ---------------------------------------------------------------------------

def test_model_checkpoint_best_only_writes_on_improvement(tmp_path):
    x, y = data()
    m = model()
    script = Script("val_loss", [0.9, 0.7, 0.8, 0.6, 0.65, np.nan])
    pattern = str(tmp_path / "ckpt-{epoch:02d}-{val_loss:.2f}.npz")
    best = str(tmp_path / "best.npz")
    h = m.fit(x, y, epochs=6, batch_size=8, validation_split=0.25, verbose=0,
              callbacks=[script, ModelCheckpoint(pattern, save_best_only=True),
                         ModelCheckpoint(best, save_best_only=True)])
    assert len(h.epoch) == 6
    assert sorted(os.listdir(tmp_path)) == ["best.npz", "ckpt-01-0.90.npz", "ckpt-02-0.70.npz",
                                            "ckpt-04-0.60.npz"]
    loaded = elman.load(best) if hasattr(elman, "load") else elman.checkpoint.load(best)
    assert loaded.epoch == 4
    assert same(loaded.get_weights(), script.weights[3])


def test_model_checkpoint_every_epoch_and_max_mode(tmp_path):
    x, y = data()
    m = model()
    every = ModelCheckpoint(tmp_path / "e{epoch}.npz")
    acc = ModelCheckpoint(tmp_path / "acc.npz", monitor="accuracy", save_best_only=True)
    script = Script("accuracy", [0.5, 0.4, 0.7])
    m.fit(x, y, epochs=3, batch_size=8, callbacks=[script, every, acc], verbose=0)
    assert sorted(os.listdir(tmp_path)) == ["acc.npz", "e1.npz", "e2.npz", "e3.npz"]
    assert acc.mode == "max" and acc.best == 0.7
    assert elman.checkpoint.load(tmp_path / "acc.npz").epoch == 3
    with pytest.raises(ValueError, match="cannot format filepath"):
        m.fit(x, y, epochs=1, callbacks=[ModelCheckpoint(tmp_path / "{nope}.npz")], verbose=0)


# -- CSVLogger ---------------------------------------------------------------------------------

def test_csv_logger_contents_and_append(tmp_path):
    x, y = data()
    m = model()
    path = tmp_path / "log.csv"
    h = m.fit(x, y, epochs=2, batch_size=8, validation_split=0.25,
              callbacks=[CSVLogger(path)], verbose=0)
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["epoch", "accuracy", "loss", "lr", "val_accuracy", "val_loss"]
    assert [r[0] for r in rows[1:]] == ["1", "2"]            # finished epochs, from 1
    for i, row in enumerate(rows[1:]):
        for key, value in zip(rows[0][1:], row[1:]):
            assert float(value) == h.history[key][i]            # full precision
    # resuming appends rows, without a second header
    m.fit(x, y, epochs=3, initial_epoch=2, batch_size=8, validation_split=0.25,
          callbacks=[CSVLogger(path, append=True)], verbose=0)
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    assert [r[0] for r in rows] == ["epoch", "1", "2", "3"]
    # append=False starts over; another separator
    m.fit(x, y, epochs=1, batch_size=8, callbacks=[CSVLogger(path, separator=";")], verbose=0)
    assert open(path).read().splitlines()[0] == "epoch;accuracy;loss;lr"


# -- LearningRateScheduler ---------------------------------------------------------------------

def test_learning_rate_scheduler_with_a_function():
    x, y = data()
    m = model(lr=0.1)
    seen = []

    def schedule(epoch, lr):
        seen.append((epoch, lr))
        return lr if epoch < 1 else lr * 0.5

    h = m.fit(x, y, epochs=4, batch_size=8, callbacks=[LearningRateScheduler(schedule)],
              verbose=0)
    assert h.history["lr"] == [0.1, 0.05, 0.025, 0.0125]
    assert m.optimizer.lr == 0.0125
    assert seen == [(0, 0.1), (1, 0.1), (2, 0.05), (3, 0.025)]
    with pytest.raises(ValueError, match="the schedule returned -1.0 for epoch 0"):
        m.fit(x, y, callbacks=[LearningRateScheduler(lambda e, lr: -1.0)], verbose=0)
    with pytest.raises(TypeError, match="schedule must be a function"):
        LearningRateScheduler(0.1)


def test_learning_rate_scheduler_with_scheduler_objects():
    x, y = data()
    m = model(lr=1.0)
    step = elman.StepLR(m.optimizer, step_size=2, gamma=0.1)
    h = m.fit(x, y, epochs=5, batch_size=8, callbacks=[LearningRateScheduler(step)], verbose=0)
    np.testing.assert_allclose(h.history["lr"], [1.0, 1.0, 0.1, 0.1, 0.01])

    m = model(lr=1.0)
    plateau = elman.ReduceLROnPlateau(m.optimizer, factor=0.5, patience=0)
    script = Script("val_loss", [1.0, 0.5, 0.6, 0.4, 0.45])
    h = m.fit(x, y, epochs=5, batch_size=8, validation_split=0.25, verbose=0,
              callbacks=[script, LearningRateScheduler(plateau)])
    assert h.history["lr"] == [1.0, 1.0, 1.0, 0.5, 0.5]
    assert m.optimizer.lr == 0.25

    other = model()
    with pytest.raises(ValueError, match="built on another optimizer than the model's"):
        m.fit(x, y, callbacks=[LearningRateScheduler(elman.StepLR(other.optimizer, 1))],
              verbose=0)


# -- TensorBoard -------------------------------------------------------------------------------

def test_crc32c_known_values():
    assert _crc32c(b"") == 0
    assert _crc32c(b"123456789") == 0xE3069283
    assert _crc32c(bytes(32)) == 0x8A9136AA                  # RFC 3720 test vector
    assert _masked_crc(b"") == 0xA282EAD8


def test_tensorboard_event_files_read_back(tmp_path):
    x, y = data()
    m = model()
    h = m.fit(x, y, epochs=3, batch_size=8, validation_split=0.25, verbose=0,
              callbacks=[TensorBoard(tmp_path)])
    train = glob.glob(str(tmp_path / "train" / "events.out.tfevents.*"))
    val = glob.glob(str(tmp_path / "validation" / "events.out.tfevents.*"))
    assert len(train) == 1 and len(val) == 1
    events = read_event_file(train[0])
    assert [step for _, step, _ in events] == [1, 2, 3]            # finished epochs
    for (_, step, scalars) in events:
        assert set(scalars) == {"epoch_loss", "epoch_accuracy", "epoch_learning_rate"}
        assert scalars["epoch_loss"] == np.float32(h.history["loss"][step - 1])
    vals = read_event_file(val[0])
    assert [s["epoch_loss"] for _, _, s in vals] == \
        [np.float32(v) for v in h.history["val_loss"]]


def test_tensorboard_files_load_in_tensorboard(tmp_path):
    require("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    x, y = data()
    h = model().fit(x, y, epochs=2, batch_size=8, validation_split=0.25, verbose=0,
                    callbacks=[TensorBoard(tmp_path)])
    for sub, key in (("train", "loss"), ("validation", "val_loss")):
        acc = EventAccumulator(str(tmp_path / sub))
        acc.Reload()
        assert "epoch_loss" in acc.Tags()["scalars"]
        events = acc.Scalars("epoch_loss")
        assert [e.step for e in events] == [1, 2]
        np.testing.assert_allclose([e.value for e in events], h.history[key], rtol=1e-6)


def test_read_event_file_detects_corruption(tmp_path):
    x, y = data()
    model().fit(x, y, epochs=1, verbose=0, callbacks=[TensorBoard(tmp_path)])
    path = glob.glob(str(tmp_path / "train" / "events.out.tfevents.*"))[0]
    raw = bytearray(open(path, "rb").read())
    (first_len,) = struct.unpack("<Q", raw[:8])
    raw[12 + first_len + 16 + 3] ^= 0xFF            # a byte inside the second record's data
    open(path, "wb").write(bytes(raw))
    with pytest.raises(ValueError, match="bad data checksum"):
        read_event_file(path)


# -- TimeBudget ------------------------------------------------------------------------------------

def test_time_budget_stops_between_batches_on_a_clock(monkeypatch):
    # a fake clock: the first (warm-up) batch takes 3 s, the others 1 s, validation 2 s
    import time as time_module
    now = [0.0]
    monkeypatch.setattr(time_module, "perf_counter", lambda: now[0])

    class Clock(Callback):             # listed before the budget: it sees the time pass
        def on_batch_end(self, batch, logs=None):
            now[0] += 3.0 if now[0] == 0.0 else 1.0
            ends.append(now[0])

        def on_test_end(self, logs=None):
            now[0] += 2.0
    ends = []
    x, y = data(n=80)                   # 64 training samples: 16 batches of 4; 16 validate
    budget = elman.TimeBudget(30.0, start=0.0, after=1.0, reserve=1.0)
    m = model()
    h = m.fit(x[:64], y[:64], epochs=10, batch_size=4, validation_data=(x[64:], y[64:]),
              callbacks=[Clock(), budget], verbose=0)
    # after batch k (not the warm-up), at time t: stop if one more batch (2 x 1 s), a
    # validation and the test after it (2 x 16 samples at 1 s per 4 training samples, before
    # validation was measured; then 2 x 2 s) and the reserve (1 s) no longer fit in 30 - t
    def must_stop(t, epoch):
        validation = 16 / 4 if epoch == 0 else 2.0
        return 2 + 2 * validation + 1 >= 30 - t
    stops = [i for i, t in enumerate(ends) if i > 0 and must_stop(t, i // 16)]
    assert budget.stopped and m.stop_training
    assert len(ends) == stops[0] + 1                 # the first batch that had to stop
    assert len(h.epoch) == stops[0] // 16 + 1
    assert now[0] <= 30.0 - 2.0 - 1.0                # room left for the test and reserve
