"""Smoke test of benchmarks/bench_infer.py: a tiny run of the three frameworks, which must agree."""
import importlib.util
import json
import pathlib

from _torch import require, require_torch

SCRIPT = pathlib.Path(__file__).resolve().parents[1] / "benchmarks" / "bench_infer.py"


def _bench():
    """benchmarks/bench_infer.py as a module (its frameworks required first)."""
    require_torch()
    require("onnxruntime")
    require("onnx")
    spec = importlib.util.spec_from_file_location("bench_infer", SCRIPT)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    return bench


def test_quick_run_times_and_checks_every_framework(tmp_path):
    bench = _bench()
    out, md = tmp_path / "infer.json", tmp_path / "infer.md"
    rc = bench.main(["--quick", "--repeats", "1", "--keep-env", "--threads", "1",
                     "--cells", "gru,lstm", "--stacks", "1,2bi", "--json", str(out),
                     "--markdown", str(md)])
    assert rc == 0
    results = json.loads(out.read_text())["results"]
    assert [(r["kind"], r["cell"], r["stack"]) for r in results] == [
        ("sequence", "gru", "1"), ("sequence", "gru", "2bi"), ("sequence", "lstm", "1"),
        ("sequence", "lstm", "2bi"), ("step", "gru", "1"), ("step", "lstm", "1")]
    for r in results:
        assert r["max_rel_err"] < 1e-4        # outputs and final states, against torch
        assert set(r["median_s"]) == {"elman", "onnxruntime", "torch"}
        assert all(t > 0 for t in r["median_s"].values())
    text = md.read_text()
    assert "One step per call, batch 1" in text and "onnxruntime/elman" in text


def test_a_frozen_run_times_the_frozen_copy_beside_the_layer(tmp_path):
    """--frozen: elman.freeze(layer) timed as a fourth framework in the same alternation, in
    columns of its own; its results agree with torch's too."""
    bench = _bench()
    out, md = tmp_path / "infer.json", tmp_path / "infer.md"
    rc = bench.main(["--quick", "--repeats", "1", "--keep-env", "--threads", "1", "--frozen",
                     "--cells", "lstm", "--stacks", "1,2", "--kinds", "sequence,step",
                     "--json", str(out), "--markdown", str(md)])
    assert rc == 0
    data = json.loads(out.read_text())
    assert data["environment"]["elman_frozen"] is True
    assert [r["max_rel_err"] < 1e-4 for r in data["results"]] == [True] * 3
    for r in data["results"]:
        assert set(r["median_s"]) == {"elman", "onnxruntime", "torch", "frozen"}
        assert all(t > 0 for t in r["median_s"].values())
    text = md.read_text()
    assert "frozen: elman.freeze of it" in text
    assert "| frozen ms |" in text and "onnxruntime/frozen |" in text
    rows = [line for line in text.splitlines() if line.startswith("| lstm |")]
    assert len(rows) == 3 and all(line.count("|") == 11 for line in rows)
