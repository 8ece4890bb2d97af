"""Flags must be bools and dtype must be float32/float64, as in PyTorch: a string "False" or
dtype=None is refused with a message naming the argument, never read by truthiness."""
import numpy as np
import pytest

import elman


@pytest.mark.parametrize("build, name", [
    (lambda v: elman.LSTM(3, 4, batch_first=v), "batch_first"),
    (lambda v: elman.GRU(3, 4, bias=v), "bias"),
    (lambda v: elman.RNN(3, 4, bidirectional=v), "bidirectional"),
    (lambda v: elman.GRU(3, 4, reset_after=v), "reset_after"),
    (lambda v: elman.LSTMCell(3, 4, bias=v), "bias"),
    (lambda v: elman.GRUCell(3, 4, reset_after=v), "reset_after"),
    (lambda v: elman.LayerNorm(4, elementwise_affine=v), "elementwise_affine"),
    (lambda v: elman.Last(batch_first=v), "batch_first"),
    (lambda v: elman.EarlyStopping(restore_best_weights=v), "restore_best_weights"),
    (lambda v: elman.ModelCheckpoint("m.npz", save_best_only=v), "save_best_only"),
    (lambda v: elman.CSVLogger("h.csv", append=v), "append"),
    (lambda v: elman.set_num_threads(None, adaptive=v), "adaptive"),
])
@pytest.mark.parametrize("value", ["False", 0, 1.0, None])
def test_flags_must_be_bools(build, name, value):
    with pytest.raises(TypeError, match=f"{name} must be True or False, got {value!r}"):
        build(value)


def test_numpy_bools_are_flags():
    assert elman.LSTM(3, 4, batch_first=np.bool_(True)).batch_first is True


@pytest.mark.parametrize("build", [lambda: elman.LSTM(3, 4, dtype=None),
                                   lambda: elman.Dense(3, 4, dtype=None),
                                   lambda: elman.GRUCell(3, 4, dtype=None)])
def test_dtype_none_is_refused(build):
    with pytest.raises(TypeError, match="dtype must be np.float32 or np.float64, got None"):
        build()


@pytest.mark.parametrize("build", [lambda: elman.LSTM(3, 4, seed=-1),
                                   lambda: elman.Dropout(0.5, seed=-3),
                                   lambda: elman.Sequential([], seed=-1)])
def test_negative_seed_names_the_argument(build):
    with pytest.raises(ValueError, match="seed must be a non-negative integer"):
        build()


def test_callbacks_must_be_a_list():
    model = elman.Sequential([elman.Dense(2, 1, seed=0)])
    model.compile("sgd", "mse")
    with pytest.raises(TypeError, match=r"callbacks must be a list of callbacks, got "
                                        r"EarlyStopping; write callbacks=\[EarlyStopping"):
        model.fit(np.zeros((4, 2)), np.zeros((4, 1)), callbacks=elman.EarlyStopping(),
                  verbose=0)


@pytest.mark.parametrize("loss, pred", [(elman.BCELoss(), np.full(3, 0.5)),
                                        (elman.BCEWithLogitsLoss(), np.zeros(3))])
def test_binary_losses_refuse_labels_outside_0_1(loss, pred):
    for bad in (np.array([0.0, 1.0, 2.0]), np.array([-1.0, 0.0, 1.0])):
        with pytest.raises(ValueError, match=r"target must hold values in \[0, 1\]"):
            loss(pred, bad)
    value, _ = loss(pred, np.array([0.0, 0.3, 1.0]))          # soft labels are fine
    assert np.isfinite(value)


def test_float64_input_beyond_float32_range_is_an_error_not_nan():
    lstm = elman.LSTM(3, 4, seed=0)                            # float32
    x = np.zeros((2, 1, 3))
    x[1, 0, 2] = 1e39
    with pytest.raises(ValueError, match=r"input holds 1 finite value\(s\) beyond the range of "
                                         r"float32.*1e\+39.*dtype=np.float64"):
        lstm(x)
    out, _ = lstm(np.full((2, 1, 3), 1e30))                    # within range: cast as before
    assert np.all(np.isfinite(out))
    with pytest.raises(ValueError, match="beyond the range of float32"):
        elman.Dense(3, 1, seed=0)(np.full((2, 3), -1e300))


@pytest.mark.parametrize("build, names", [
    (lambda: elman.LSTM(3, 10**12), "hidden_size=1000000000000"),
    (lambda: elman.GRU(8, 64, num_layers=10**9), "num_layers=1000000000"),
    (lambda: elman.LSTMCell(10**7, 10**5), "input_size=10000000"),
    (lambda: elman.Dense(10**6, 10**7), "in_features=1000000, out_features=10000000"),
    (lambda: elman.Embedding(10**10, 64), "num_embeddings=10000000000"),
])
def test_sizes_beyond_memory_are_refused_before_allocating(build, names):
    with pytest.raises(ValueError, match=f"{names}.* needs .* GiB .* more than this machine"):
        build()
