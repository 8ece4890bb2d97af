"""Smoke test of benchmarks/bench_model.py: a tiny run of the three sides that writes its
table (no timing asserts)."""
import importlib.util
import pathlib

from _tables import ratio_agrees
from _torch import require

SCRIPT = pathlib.Path(__file__).resolve().parents[1] / "benchmarks" / "bench_model.py"


def test_quick_run_times_the_three_sides(tmp_path):
    require("torch")
    spec = importlib.util.spec_from_file_location("bench_model", SCRIPT)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    md = tmp_path / "model.md"
    assert bench.main(["--quick", "--keep-env", "--cells", "gru,lstm", "--markdown",
                       str(md)]) == 0
    rows = [line for line in md.read_text().splitlines() if line.startswith("| gru")
            or line.startswith("| lstm")]
    assert len(rows) == 2                     # one size (--quick), 2 cells
    for row in rows:
        cells = [c.strip() for c in row.strip("|").split("|")]
        elman_ms, blas_ms, torch_ms = (float(c) for c in cells[2:5])
        assert min(elman_ms, blas_ms, torch_ms) > 0
        assert ratio_agrees(float(cells[5]), torch_ms, elman_ms, places=2)
    import elman
    assert elman.threads.matmul.__name__ == "matmul"      # put back after the A/B
