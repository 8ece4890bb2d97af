"""benchmarks/bench_ab.py: its arguments, a tiny run of two versions on the NumPy path (its
ratios as its timings give them, no timing asserts; their first steps' results compared),
the worktrees it leaves behind (none), and how it compares two versions' results."""
import importlib.util
import json
import pathlib
import shutil
import subprocess

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "bench_ab.py"


def load_bench():
    spec = importlib.util.spec_from_file_location("bench_ab", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("argv, says", [
    (["HEAD", "--size", "4,5,3"], "--size: expected four positive integers N,T,I,H, got '4,5,3'"),
    (["HEAD", "--size", "4,0,3,8"], "--size: expected four positive integers"),
    (["HEAD", "--option", "layer_norm"], "--option: expected NAME=VALUE"),
    (["HEAD", "--option", "zoneout=x y"], "got 'zoneout=x y'"),
    (["HEAD", "--pairs", "0"], "--pairs: expected an integer >= 1, got 0"),
    (["HEAD", "--min-time", "0"], "--min-time: expected seconds > 0, got 0.0"),
])
def test_bad_arguments_are_refused_by_name(argv, says, capsys):
    with pytest.raises(SystemExit):
        load_bench().parse_args(argv)
    assert says in capsys.readouterr().err


def test_options_are_python_literals():
    args = load_bench().parse_args(["HEAD", "--option", "layer_norm=True",
                                     "--option", "zoneout=0.25", "--size", "1,2,3,4"])
    assert args.options == {"layer_norm": True, "zoneout": 0.25}
    assert args.size == (1, 2, 3, 4) and args.b == "."


def _ratios_agree(out: str, record: dict, pairs: int):
    lines = [line for line in out.splitlines() if line.startswith("pair ")]
    assert len(lines) == pairs == len(record["pairs"]) == len(record["ratios"])
    for (a, b), ratio in zip(record["pairs"], record["ratios"]):
        assert a["ms"] > 0 and b["ms"] > 0 and a["steps"] >= 1
        assert ratio == pytest.approx(a["ms"] / b["ms"])
    assert "median: A" in out and "A/B" in out
    # the two versions' first steps compared: the same code, the same numbers
    assert "first step's results, B against A: largest difference" in out
    assert record["max_rel_difference"] <= 1e-12 and record["differs_most"]
    return record


def test_the_working_tree_against_itself(tmp_path, capsys):
    record_file = tmp_path / "ab.json"
    assert load_bench().main([".", ".", "--size", "2,3,3,4", "--pairs", "2", "--min-time",
                              "0.01", "--path", "numpy", "--mode", "infer", "--cell", "GRU",
                              "--json", str(record_file)]) == 0
    record = _ratios_agree(capsys.readouterr().out, json.loads(record_file.read_text()), 2)
    # both sides imported elman from this checkout's src
    assert {pathlib.Path(side["elman"]).parents[1] for pair in record["pairs"]
            for side in pair} == {ROOT / "src"}


def test_a_revision_runs_from_a_worktree_that_is_removed_after(tmp_path, capsys):
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    record_file = tmp_path / "ab.json"
    before = subprocess.run(["git", "-C", str(ROOT), "worktree", "list"], capture_output=True,
                            text=True).stdout
    assert load_bench().main(["HEAD", ".", "--size", "2,3,3,4", "--pairs", "1", "--min-time",
                              "0.01", "--path", "numpy", "--option", "zoneout=0.1",
                              "--json", str(record_file)]) == 0
    record = _ratios_agree(capsys.readouterr().out, json.loads(record_file.read_text()), 1)
    a, b = record["pairs"][0]
    assert pathlib.Path(b["elman"]).parents[1] == ROOT / "src"
    assert ROOT not in pathlib.Path(a["elman"]).parents        # HEAD's own checkout
    after = subprocess.run(["git", "-C", str(ROOT), "worktree", "list"], capture_output=True,
                           text=True).stdout
    assert after == before
    assert not pathlib.Path(a["elman"]).exists()


def test_an_unknown_revision_is_refused_by_name():
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    with pytest.raises(SystemExit, match="cannot check out revision 'no-such-revision-x'"):
        load_bench().main(["no-such-revision-x", "--size", "2,3,3,4", "--pairs", "1"])


def test_agreement_finds_the_array_that_differs_most(tmp_path):
    import numpy as np
    bench = load_bench()
    a, b = tmp_path / "a.npz", tmp_path / "b.npz"
    out = np.linspace(-4.0, 4.0, 12).reshape(3, 4)
    grad = np.full((2, 2), 0.5)
    np.savez(a, output=out, **{"grad w": grad, "grad old": grad})
    np.savez(b, output=out + 2e-3, **{"grad w": grad, "grad new": grad})
    worst, name, one_sided = bench.agreement(a, b)
    assert name == "output" and worst == pytest.approx(2e-3 / 4.0)
    assert one_sided == ["grad new", "grad old"]
    np.savez(b, output=out[:2], **{"grad w": grad})
    assert bench.agreement(a, b)[:2] == (float("inf"), "output")
