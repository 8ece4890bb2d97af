"""Smoke test of benchmarks/bench_minimal.py: a tiny run of every model writes the tables."""
import importlib.util
import pathlib

from _torch import require_torch

SCRIPT = pathlib.Path(__file__).resolve().parents[1] / "benchmarks" / "bench_minimal.py"


def test_quick_run_writes_the_tables(tmp_path):
    require_torch()
    spec = importlib.util.spec_from_file_location("bench_minimal", SCRIPT)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    md = tmp_path / "minimal.md"
    assert bench.main(["--quick", "--keep-env", "--threads", "1", "--markdown", str(md)]) == 0
    text = md.read_text()
    for model in bench.MODELS:
        assert f"| {model} |" in text
    assert "MinGRU scan vs torch GRU" in text and "growth p" in text
    assert "| 40, 1, 4 |" in text                      # the scan alone against the loop
