"""Smoke test of benchmarks/bench_bidirectional.py: a tiny A/B run that writes its table."""
import importlib.util
import pathlib

from _tables import ratio_agrees

SCRIPT = pathlib.Path(__file__).resolve().parents[1] / "benchmarks" / "bench_bidirectional.py"


def test_quick_run_times_both_ways(tmp_path):
    spec = importlib.util.spec_from_file_location("bench_bidirectional", SCRIPT)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    md = tmp_path / "bidirectional.md"
    assert bench.main(["--quick", "--keep-env", "--cells", "gru,lstm", "--markdown",
                       str(md)]) == 0
    rows = [line for line in md.read_text().splitlines() if line.startswith("| gru")
            or line.startswith("| lstm")]
    assert len(rows) == 4                     # 2 cells x train/infer
    for row in rows:
        cells = [c.strip() for c in row.strip("|").split("|")]
        overlap_ms, in_turn_ms, ratio = float(cells[4]), float(cells[5]), float(cells[6])
        assert overlap_ms > 0 and in_turn_ms > 0
        assert ratio_agrees(ratio, in_turn_ms, overlap_ms, places=3)
        assert cells[7] == "in turn"          # the tiny size is below the shipped threshold
    from elman import timeloop
    assert timeloop.OVERLAP_MIN_FLOPS == 4e6  # restored after the A/B
