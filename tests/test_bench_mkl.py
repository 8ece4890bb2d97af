"""Smoke test of benchmarks/bench_mkl.py: a tiny A/B run that writes its table."""
import importlib.util
import pathlib

import pytest

from elman import timeloop
from elman.fast import _mkl
from _tables import ratio_agrees

SCRIPT = pathlib.Path(__file__).resolve().parents[1] / "benchmarks" / "bench_mkl.py"


@pytest.mark.skipif(not _mkl.available, reason="needs the mkl wheel (elman[mkl])")
def test_quick_run_times_both_ways(tmp_path):
    spec = importlib.util.spec_from_file_location("bench_mkl", SCRIPT)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    md = tmp_path / "mkl.md"
    before, min_rows = _mkl.enabled(), timeloop.SPLIT_MIN_ROWS
    assert bench.main(["--quick", "--keep-env", "--cells", "gru,ln-lstm", "--markdown",
                       str(md)]) == 0
    rows = [line for line in md.read_text().splitlines() if line.startswith("| gru")
            or line.startswith("| ln-lstm")]
    assert len(rows) == 8                     # 2 cells (one layer-normalised) x 2 stacks x train/infer
    for row in rows:
        cells = [c.strip() for c in row.strip("|").split("|")]
        mkl_ms, openblas_ms, whole_ms = (float(c) for c in cells[5:8])
        assert mkl_ms > 0 and openblas_ms > 0 and whole_ms > 0
        assert ratio_agrees(float(cells[8]), openblas_ms, mkl_ms, places=3)
        assert ratio_agrees(float(cells[9]), whole_ms, mkl_ms, places=3)
        assert cells[10] == "neither"         # the tiny size is below every rule
    assert _mkl.enabled() == before           # the setting as it was after the A/B/C
    assert timeloop.SPLIT_MIN_ROWS == min_rows   # and the row-block rule
