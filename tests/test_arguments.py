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
