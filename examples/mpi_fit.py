"""Data-parallel training with ``fit(..., distributed="mpi")``: the adding problem
(Hochreiter & Schmidhuber 1997: the sum of the two marked numbers in a noisy sequence).

    mpiexec -n 2 python examples/mpi_fit.py      # 2 ranks (pip install -e ".[mpi]")
    python examples/mpi_fit.py                    # one process: the same batches, same result

Every rank builds the same data and model; fit gives each rank its slice of every global batch
and sums the gradients with one Allreduce per step. Rank 0 alone prints.
"""
import importlib.util

import numpy as np

import elman


def adding_problem(n: int, steps: int, seed: int = 0):
    """x (n, steps, 2): a random number and a 0/1 marker (two 1s per sequence); y: the sum of
    the two marked numbers."""
    rng = np.random.default_rng(seed)
    values = rng.random((n, steps))
    markers = np.zeros((n, steps))
    for row, cols in enumerate(rng.random((n, steps)).argsort(axis=1)[:, :2]):
        markers[row, cols] = 1.0
    x = np.stack([values, markers], axis=2).astype(np.float32)
    y = (values * markers).sum(axis=1, keepdims=True).astype(np.float32)
    return x, y


def main() -> float:
    x, y = adding_problem(2048, 15)
    model = elman.Sequential([elman.LSTM(2, 32, seed=1), elman.Last(),
                              elman.Dense(32, 1, seed=2)], seed=0)
    model.compile(elman.Adam(model.parameters(), lr=1e-2), "mse")
    # with mpi4py installed: every rank of the job (one process when started without mpiexec)
    distributed = "mpi" if importlib.util.find_spec("mpi4py") else None
    history = model.fit(x[:1792], y[:1792], epochs=20, batch_size=64, verbose=0,
                        validation_data=(x[1792:], y[1792:]), distributed=distributed)
    val = history.history["val_loss"][-1]
    comm = elman.distributed.world() if distributed else None
    if comm is None or comm.is_root:
        ranks = 1 if comm is None else comm.size
        print(f"{ranks} rank(s): validation MSE {val:.4f} (predicting the mean: "
              f"{float(np.var(y[1792:])):.4f})")
    return val


if __name__ == "__main__":
    main()
