"""Smoke test of benchmarks/bench_mkl.py: a tiny run of every way that writes its table."""
import importlib.util
import pathlib

from elman import timeloop
from elman.fast import _mkl, _packed
from _tables import ratio_agrees

SCRIPT = pathlib.Path(__file__).resolve().parents[1] / "benchmarks" / "bench_mkl.py"


def test_quick_run_times_every_way(tmp_path):
    spec = importlib.util.spec_from_file_location("bench_mkl", SCRIPT)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    md = tmp_path / "mkl.md"
    settings = _mkl.enabled(), _packed.enabled(), timeloop.SPLIT_MIN_ROWS
    assert bench.main(["--quick", "--keep-env", "--cells", "gru,ln-lstm", "--markdown",
                       str(md)]) == 0
    lines = md.read_text().splitlines()
    header = [c.strip() for c in next(line for line in lines if line.startswith("| cell"))
              .strip("|").split("|")]
    ways = [c.removesuffix(" ms") for c in header if c.endswith(" ms")]
    expected = [w for w, can in (("mkl", _mkl.available), ("packed", _packed.available),
                                 ("openblas", True), ("whole", True)) if can]
    assert ways == expected
    rows = [line for line in lines if line.startswith("| gru") or line.startswith("| ln-lstm")]
    assert len(rows) == 8                     # 2 cells (one layer-normalised) x 2 stacks x train/infer
    for row in rows:
        cells = dict(zip(header, (c.strip() for c in row.strip("|").split("|"))))
        ms = {w: float(cells[f"{w} ms"]) for w in ways}
        assert all(t > 0 for t in ms.values())
        for w in ways[:-1]:
            assert ratio_agrees(float(cells[f"whole / {w}"]), ms["whole"], ms[w], places=3)
        assert cells["shipped settings"] == "neither"     # the tiny size is below every rule
    # the settings as they were after the run
    assert (_mkl.enabled(), _packed.enabled(), timeloop.SPLIT_MIN_ROWS) == settings
