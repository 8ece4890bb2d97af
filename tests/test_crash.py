"""Crash safety: `elman forecast` killed with SIGKILL at random moments, once inside a save,
then resumed until it finishes, ends with the same bytes of weights, optimizer state and
history as a run that was never killed; after every kill the last checkpoint loads, and no
temporary file is left behind."""
import glob
import os
import random
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

import elman
from _checkpoint_files import members

pytestmark = pytest.mark.skipif(os.name != "posix", reason="SIGKILL and SIGSTOP are POSIX")

CLI = [sys.executable, "-c", "import sys; from elman.cli import main; sys.exit(main())"]
# small and single-threaded, so that the run is short and its arithmetic is the same in every
# process (the thread policy may pick another thread count under another load)
ARGS = ["forecast", "--hidden", "8", "--lookback", "7", "--epochs", "6", "--batch-size", "64",
        "--quiet", "--threads", "1", "--seed", "3"]
LIMIT = 120                                   # seconds any one process may take


def _start(out, resume):
    return subprocess.Popen(CLI + ARGS + ["--out", out] + (["--resume"] if resume else []),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def _temporaries(out, name="*"):
    return glob.glob(os.path.join(out, f".{name}.*.tmp")) + glob.glob(os.path.join(out, "*.tmp"))


def _kill_inside_a_save(proc, out) -> bool:
    """SIGKILL ``proc`` while it writes last.npz over an existing one: stop it as soon as the
    temporary file appears and kill it only if the file is still there (the save is under
    way). False if the process ended first."""
    last = os.path.join(out, "last.npz")
    deadline = time.monotonic() + LIMIT
    while proc.poll() is None and time.monotonic() < deadline:
        if os.path.exists(last) and _temporaries(out, "last.npz"):
            proc.send_signal(signal.SIGSTOP)
            if _temporaries(out, "last.npz"):
                proc.kill()
                proc.wait()
                return True
            proc.send_signal(signal.SIGCONT)
        time.sleep(0.0005)
    return False


def _state(out):
    """Every array and the training state of last.npz and model.npz, and history.csv's text."""
    state = {}
    for name in ("last.npz", "model.npz"):
        m = members(os.path.join(out, name))
        state[name] = ({k: (a.dtype, a.tobytes()) for k, a in m["arrays"].items()},
                       {k: m["doc"].get(k) for k in ("epoch", "rng", "optimizer", "extra")})
    with open(os.path.join(out, "history.csv")) as f:
        state["history"] = f.read()
    return state


def test_sigkill_at_random_moments_then_resume_is_bit_identical(tmp_path):
    reference = str(tmp_path / "reference")
    start = time.monotonic()        # how long a whole run takes here, to spread the kills over it
    done = subprocess.run(CLI + ARGS + ["--out", reference], capture_output=True, text=True,
                          timeout=LIMIT)
    duration = time.monotonic() - start
    assert done.returncode == 0, done.stderr

    out = str(tmp_path / "killed")
    rng = random.Random(20261202)
    kills, inside_save = 0, 0
    for attempt in range(12):
        resume = os.path.exists(os.path.join(out, "last.npz"))
        proc = _start(out, resume)
        if attempt == 0:                       # the first process dies inside a save
            killed = _kill_inside_a_save(proc, out)
            inside_save += killed
        elif attempt < 5:                      # then at random moments of a run
            try:
                proc.wait(timeout=rng.uniform(0.2, 1.0) * duration)
                killed = False
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
                killed = True
        else:
            killed = False
        if not killed:
            _, err = proc.communicate(timeout=LIMIT)
            assert proc.returncode == 0, err
            break
        kills += 1
        last = os.path.join(out, "last.npz")
        if os.path.exists(last):               # what a kill left must load
            assert elman.load_checkpoint(last).epoch >= 1
    else:
        pytest.fail("the run never finished")
    assert kills >= 2 and inside_save == 1, (kills, inside_save)

    got, want = _state(out), _state(reference)
    assert got["history"] == want["history"]
    for name in ("last.npz", "model.npz"):
        assert got[name][1] == want[name][1], name
        assert got[name][0].keys() == want[name][0].keys()
        for key in want[name][0]:
            assert got[name][0][key] == want[name][0][key], (name, key)
    assert _temporaries(out) == []             # the resumed runs cleaned up the dead ones'
    assert np.isfinite(elman.load(os.path.join(out, "model.npz")).predict(
        np.zeros((1, 7, 6), np.float32))).all()


def test_a_failed_text_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    """metrics.json and history.csv are written all or nothing (elman.tasks.common)."""
    from elman.tasks.common import atomic_text, write_metrics
    path = tmp_path / "metrics.json"
    write_metrics(str(tmp_path), {"model": {"rmse": 1.0}})
    before = path.read_text()
    with pytest.raises(TypeError):                     # not JSON: fails half-way through
        write_metrics(str(tmp_path), {"model": {"rmse": 2.0, "object": object()}})
    assert path.read_text() == before
    with pytest.raises(RuntimeError):
        with atomic_text(str(tmp_path / "history.csv")) as f:
            f.write("epoch,loss\n")
            raise RuntimeError("killed")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.json"]
