"""Data-parallel training on MPI: real ``mpiexec -n 2`` jobs started from the tests, against one
process training on the same global batches (float64, max relative difference <= 1e-10), an
aborting rank, and ``elman generate --distributed`` with --resume; plus the pieces that need no
second process (the reducer, the loss denominators, the metric states)."""
import csv
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

import elman
from _torch import require

HERE = os.path.dirname(os.path.abspath(__file__))
SCRIPT = os.path.join(HERE, "_mpi_train.py")
TIMEOUT = 240          # seconds for any one MPI job: a hang fails the test instead of CI


def _mpiexec():
    require("mpi4py")
    near = os.path.join(os.path.dirname(sys.executable), "mpiexec")
    found = near if os.path.exists(near) else shutil.which("mpiexec")
    if found is None:
        if os.environ.get("ELMAN_REQUIRE_TORCH") == "1":
            pytest.fail("mpiexec not found (pip install mpich)")
        pytest.skip("mpiexec not found")
    return found


def _mpi(n, *argv, cwd=None, check=True):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [HERE, os.path.dirname(HERE)] + os.environ.get("PYTHONPATH", "").split(os.pathsep)))
    proc = subprocess.run([_mpiexec(), "-n", str(n), sys.executable, *argv], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=TIMEOUT)
    if check:
        assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


def _max_rel_diff(a, b):
    return max(float(np.max(np.abs(a[k] - b[k])) / max(np.max(np.abs(a[k])), 1e-300))
               for k in a)


@pytest.fixture(scope="module")
def mpi_train():
    sys.path.insert(0, HERE)
    import _mpi_train
    return _mpi_train


def test_two_ranks_fit_equals_one_process(tmp_path, mpi_train):
    """Stacked bidirectional LSTM, variable lengths, an uneven last batch, clipping, metrics and
    validation: 2 ranks end at the weights of one process."""
    out = tmp_path / "dist.npz"
    _mpi(2, SCRIPT, "fit", str(out), "--distributed")
    one = mpi_train.bilstm_fit(False)
    single = one.state_dict()
    dist = dict(np.load(out))
    assert set(dist) == set(single)
    assert _max_rel_diff(single, dist) <= 1e-10
    # the training moved the weights (so equality is not that of two untouched models)
    fresh = elman.LSTM(3, 6, num_layers=2, bidirectional=True, dtype=np.float64, seed=1)
    assert not np.allclose(fresh.state_dict()["weight_ih_l0"], single["0.weight_ih_l0"])


def test_two_ranks_stateful_truncated_bptt_equals_one_process(tmp_path, mpi_train):
    """elman generate's loop: streams split across ranks, states carried per stream, weight
    averaging on."""
    out = tmp_path / "dist.npz"
    _mpi(2, SCRIPT, "generate", str(out), "--distributed")
    single = mpi_train.generate_fit(False, str(tmp_path)).state_dict()
    dist = dict(np.load(out))
    assert set(dist) == set(single)
    assert _max_rel_diff(single, dist) <= 1e-10


def test_an_exception_on_one_rank_aborts_the_job(tmp_path):
    proc = _mpi(2, SCRIPT, "fail", str(tmp_path / "x.npz"), "--distributed", check=False)
    assert proc.returncode != 0
    assert "rank 1 fails on purpose" in proc.stderr
    assert "aborting the MPI job" in proc.stderr


def _history(out):
    with open(os.path.join(out, "history.csv"), newline="") as f:
        return list(csv.DictReader(f))


def test_generate_distributed_completes_and_resumes_exactly(tmp_path):
    """Two ranks with the default dropout: 2 epochs straight equal 1 epoch + --resume."""
    text = tmp_path / "text.txt"
    text.write_text(("Now is the winter of our discontent made glorious summer by this sun "
                     "of York; and all the clouds that lour'd upon our house. ") * 12)
    cli = ["-c", "import sys; from elman.cli import main; sys.exit(main(sys.argv[1:]))",
           "generate", "--text", str(text), "--hidden", "12", "--embedding", "6",
           "--batch-size", "4", "--bptt", "16", "--length", "20", "--quiet", "--minutes", "0",
           "--distributed"]
    straight, resumed = str(tmp_path / "straight"), str(tmp_path / "resumed")
    proc = _mpi(2, *cli, "--epochs", "2", "--out", straight)
    assert "training on 2 MPI ranks" in proc.stdout
    assert proc.stdout.count("bits per character") == 1            # rank 0 alone reports
    _mpi(2, *cli, "--epochs", "1", "--out", resumed)
    assert len(_history(resumed)) == 1
    _mpi(2, *cli, "--epochs", "2", "--out", resumed, "--resume")
    rows = _history(resumed)
    assert [r["epoch"] for r in rows] == ["1", "2"]
    for a, b in zip(rows, _history(straight)):
        assert (a["loss"], a["val_loss"]) == (b["loss"], b["val_loss"])
    for name in ("last.npz", "model.npz", "metrics.json", "curves.png"):
        assert os.path.exists(os.path.join(resumed, name))
    for a, b in zip(elman.load(os.path.join(resumed, "last.npz")).get_weights(),
                    elman.load(os.path.join(straight, "last.npz")).get_weights()):
        np.testing.assert_array_equal(a, b)


def test_example_learns_on_two_ranks():
    example = os.path.join(os.path.dirname(HERE), "examples", "mpi_fit.py")
    proc = _mpi(2, example)
    line = proc.stdout.strip()
    assert line.startswith("2 rank(s): validation MSE")          # rank 0 alone prints
    mse, baseline = (float(v.strip("():")) for v in line.split()[4::4][:2])
    assert mse < 0.05 * baseline


def test_forecast_distributed_rank0_alone_reports(tmp_path):
    out = str(tmp_path / "forecast")
    proc = _mpi(2, "-c", "import sys; from elman.cli import main; sys.exit(main(sys.argv[1:]))",
                "forecast", "--epochs", "2", "--hidden", "8", "--quiet", "--out", out,
                "--distributed")
    assert proc.stdout.count("test set, ") == 1
    assert elman.load(os.path.join(out, "model.npz")).epoch >= 1
    assert len(_history(out)) == 2


def test_threads_option_is_checked(capsys):
    from elman.cli import main
    with pytest.raises(SystemExit, match="--threads must be 0"):
        main(["forecast", "--threads", "-1"])


# -- pieces, one process ------------------------------------------------------------------------

def _self_comm():
    return elman.distributed.Communicator(require("mpi4py.MPI").COMM_SELF)


def test_reducer_on_one_rank_keeps_the_gradient_and_loss():
    p = elman.Param(np.arange(6.0).reshape(2, 3))
    p.grad[...] = [[1, 2, 3], [4, 5, 6]]
    reducer = elman.distributed.GradientReducer(_self_comm(), [p])
    assert reducer.reduce(0.5, 7.0) == pytest.approx(0.5)
    np.testing.assert_allclose(p.grad, [[1, 2, 3], [4, 5, 6]])
    assert reducer.bytes_per_step == 8 * (6 + 2)
    assert reducer.reduce(3.0, None) == 3.0                      # a summed loss
    assert np.isnan(reducer.reduce(0.0, 0.0))                    # every position ignored
    np.testing.assert_array_equal(p.grad, 0)


@pytest.mark.parametrize("loss, pred, target", [
    (elman.MSELoss(), np.ones((4, 3)), np.zeros((4, 3))),
    (elman.BCELoss(weight=np.array([1.0, 2.0, 3.0])), np.full((4, 3), 0.3),
     np.array([[0, 1, 1]] * 4, dtype=float)),
    (elman.CrossEntropyLoss(), np.random.default_rng(0).standard_normal((5, 4)),
     np.array([0, 3, 1, 1, 2])),
    (elman.CrossEntropyLoss(weight=np.array([0.5, 1.0, 2.0, 4.0]), ignore_index=3),
     np.random.default_rng(1).standard_normal((2, 5, 4)), np.array([[0, 3, 1, 1, 2],
                                                                   [3, 3, 2, 0, 1]])),
])
def test_mean_denominator_is_what_the_mean_divides_by(loss, pred, target):
    mean, _ = loss(pred, target)
    total, _ = type(loss)(**{**loss.config(), "reduction": "sum"})(pred, target)
    assert mean * loss.mean_denominator(pred, target) == pytest.approx(total, rel=1e-12)


def test_metric_states_sum_to_the_whole_epoch():
    pred = np.array([[0.9], [0.2], [0.7], [0.4]])
    y = np.array([1.0, 0.0, 0.0, 0.0])
    whole, a, b = (elman.metrics.get_metric("acc", elman.BCELoss()) for _ in range(3))
    whole.update(pred, y)
    a.update(pred[:1], y[:1])
    b.update(pred[1:], y[1:])
    total = np.add(a.state(), b.state())
    a.set_state(*total)
    assert a.result() == whole.result() == 0.75


def test_distributed_argument_is_checked():
    model = elman.Sequential([elman.Dense(2, 1, seed=0)])
    model.compile("sgd", "mse")
    with pytest.raises(ValueError, match="distributed must be None, 'mpi'"):
        model.fit(np.zeros((4, 2)), np.zeros((4, 1)), distributed="nccl", verbose=0)
