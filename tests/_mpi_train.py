"""Training runs that tests/test_distributed.py starts both as one process and under
``mpiexec -n 2``; rank 0 writes the final weights to OUT (an .npz of the state dict).

    python tests/_mpi_train.py fit OUT [--distributed]        # stacked bidirectional LSTM,
                                                               # variable lengths, float64
    python tests/_mpi_train.py generate OUT [--distributed]   # elman generate's stateful,
                                                               # truncated-BPTT loop, float64
    python tests/_mpi_train.py fail OUT --distributed          # rank 1 raises in the 2nd epoch
"""
import argparse
import os
import sys
import tempfile

import numpy as np

import elman
from elman.tasks import generate


def bilstm_fit(distributed: bool) -> elman.Sequential:
    rng = np.random.default_rng(0)
    N, T, F = 45, 9, 3               # 45 samples, batch 16: an uneven last batch of 13
    x = rng.standard_normal((N, T, F))
    lengths = rng.integers(2, T + 1, size=N)
    y = np.stack([x[n, :lengths[n]].sum(axis=0)[:2] for n in range(N)])
    model = elman.Sequential([
        elman.LSTM(F, 6, num_layers=2, bidirectional=True, dtype=np.float64, seed=1),
        elman.LastBidirectional(6),
        elman.Dense(12, 2, dtype=np.float64, seed=2)], seed=3)
    model.compile(elman.Adam(model.parameters(), lr=0.01), "mse", metrics=["mae"],
                  clipnorm=1.0)
    model.fit(x, y, epochs=3, batch_size=16, lengths=lengths, verbose=0,
              validation_data=(x[:11], y[:11], lengths[:11]),
              distributed="mpi" if distributed else None)
    return model


def generate_fit(distributed: bool, out_dir: str) -> elman.Sequential:
    text = ("to be, or not to be, that is the question: whether 'tis nobler in the mind to "
            "suffer the slings and arrows of outrageous fortune, or to take arms against a sea "
            "of troubles and by opposing end them. ") * 3
    vocab = elman.data.text.CharVocabulary().fit(text)
    ids = vocab.encode(text)
    train_ids, val_ids = ids[:500], ids[500:]
    args = argparse.Namespace(
        cell="lstm", hidden=12, layers=2, embedding=5, dropout=0.0, input_dropout=0.0,
        bptt=7, batch_size=6, lr=0.01, weight_decay=0.0, clip=1.0, ema=0.9, seed=0,
        epochs=3, minutes=0, patience=0, resume=False, quiet=True)
    V = len(vocab)
    model = elman.Sequential([
        elman.Embedding(V, 5, dtype=np.float64, seed=1),
        elman.LSTM(5, 12, num_layers=2, dtype=np.float64, seed=2, batch_first=True,
                   stateful=True),
        elman.Linear(12, V, dtype=np.float64, seed=3)], seed=0)
    comm = elman.distributed.world() if distributed else None
    model, *_ = generate.train(model, args, train_ids, val_ids, out_dir,
                               {"task": "generate"}, comm)
    return model


def failing_fit() -> None:
    class FailOnRank1(elman.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            if epoch == 1 and elman.distributed.world().rank == 1:
                raise RuntimeError("rank 1 fails on purpose")

    x = np.random.default_rng(0).standard_normal((8, 4, 2))
    model = elman.Sequential([elman.GRU(2, 3, seed=0), elman.Last(), elman.Dense(3, 1, seed=1)])
    model.compile("adam", "mse")
    model.fit(x, x[:, -1, :1], epochs=5, batch_size=4, verbose=0, distributed="mpi",
              callbacks=[FailOnRank1()])


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("what", choices=("fit", "generate", "fail"))
    p.add_argument("out")
    p.add_argument("--distributed", action="store_true")
    args = p.parse_args()
    if args.what == "fail":
        failing_fit()
        return 0
    if args.what == "fit":
        model = bilstm_fit(args.distributed)
    else:
        with tempfile.TemporaryDirectory() as tmp:
            model = generate_fit(args.distributed, os.environ.get("MPI_TRAIN_DIR", tmp))
    if not args.distributed or elman.distributed.world().is_root:
        np.savez(args.out, **model.state_dict())
    return 0


if __name__ == "__main__":
    sys.exit(main())
