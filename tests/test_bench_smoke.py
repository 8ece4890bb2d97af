"""Smoke test of benchmarks/bench_rnn.py: a tiny run of every framework, and the flop formula."""
import importlib.util
import json
import pathlib
import statistics

import pytest

from _torch import require, require_torch

SCRIPT = pathlib.Path(__file__).resolve().parents[1] / "benchmarks" / "bench_rnn.py"


def load_bench():
    spec = importlib.util.spec_from_file_location("bench_rnn", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_gemm_flops_by_hand():
    bench = load_bench()
    # LSTM (G = 4), N=2, T=3, I=5, H=7, two bidirectional layers, training
    N, T, I, H, G, D = 2, 3, 5, 7, 4, 2
    layer0 = (2 * T * N * I * G * H          # input projection
              + 2 * T * N * H * G * H        # recurrent
              + 2 * T * N * I * G * H        # dW_ih
              + 2 * T * N * G * H * H        # dW_hh
              + 2 * T * N * G * H * H)       # dh_prev (no dX in the first layer)
    I1 = D * H
    layer1 = (2 * T * N * I1 * G * H + 2 * T * N * H * G * H + 2 * T * N * I1 * G * H
              + 2 * T * N * G * H * H + 2 * T * N * G * H * H
              + 2 * T * N * G * H * I1)      # dX of the second layer
    expected = D * (layer0 + layer1)
    # layer 0: 1680 + 2352 + 1680 + 2352 + 2352 = 10416; layer 1 (I_1 = 14):
    # 4704 + 2352 + 4704 + 2352 + 2352 + 4704 = 21168; two directions each
    assert expected == 2 * (10416 + 21168) == 63168
    assert bench.gemm_flops("lstm", "train", N, T, I, H, 2, True) == expected
    # inference, one GRU layer (G = 3): input projection + recurrent only
    assert bench.gemm_flops("gru", "infer", N, T, I, H) == (2 * T * N * I * 3 * H
                                                            + 2 * T * N * H * 3 * H)


def test_calibration_times_a_compiled_first_call_again():
    """A warm-up that compiled (seconds) must not make a millisecond case run one iteration a
    repeat: the compiled path's iteration is timed once more; the others are left alone, and
    so is a case whose iterations are long anyway."""
    bench = load_bench()

    class Runner:
        def __init__(self):
            self.calls = 0

        def iterate(self):
            self.calls += 1

    runners = {"fast": Runner(), "numpy": Runner(), "torch": Runner()}
    seen = bench.calibration_times(runners, {"fast": 5.0, "numpy": 0.001, "torch": 0.9},
                                   min_time=0.2)
    assert runners["fast"].calls == 1 and seen["fast"] < 0.1
    assert runners["numpy"].calls == runners["torch"].calls == 0
    assert seen["numpy"] == 0.001 and seen["torch"] == 0.9
    assert bench.calibrate(runners["fast"].iterate, 0.2, seen["fast"]) > 1
    runners = {"fast": Runner(), "torch": Runner()}
    seen = bench.calibration_times(runners, {"fast": 0.01, "torch": 0.9}, min_time=0.2)
    assert runners["fast"].calls == 0 and seen["fast"] == 0.01


def test_quick_run_writes_all_frameworks(tmp_path):
    require_torch()
    require("threadpoolctl")
    import elman
    bench = load_bench()
    out = tmp_path / "bench.json"
    md = tmp_path / "bench.md"
    rc = bench.main(["--quick", "--repeats", "1", "--min-time", "0.01", "--no-memory",
                     "--keep-env", "--threads", "1", "--cells", "lstm", "--stacks", "1,2bi",
                     "--json", str(out), "--markdown", str(md)])
    assert rc == 0
    data = json.loads(out.read_text())
    assert data["settings"]["frameworks"] == ["fast", "numpy", "torch"]
    assert data["ceilings"]["sgemm"]["gflop_per_s"] > 0
    assert data["ceilings"]["step_gemm"]["gflop_per_s"] > 0
    assert data["memory"] is None
    pools = data["environment"]["threadpools"]
    # the fast path calls NumPy's own BLAS: one BLAS pool, limited like every other
    assert sum(d["user_api"] == "blas" for d in pools) >= 1
    if elman.fast.available:
        from elman.fast import _mkl, _packed
        assert data["environment"]["elman_fast_blas"].startswith("numpy-blas")
        # (and what a loop's per-step GEMM on one thread runs on: the header says which)
        assert data["environment"]["elman_one_thread_gemm"].startswith(
            "MKL's packed GEMM (libmkl_rt" if _mkl.enabled()
            else "the kernels' own" if _packed.enabled() else "the BLAS above")
    assert all(d["num_threads"] == 1 for d in pools if d["user_api"] == "blas")
    results = data["results"]
    assert [(r["stack"], r["mode"]) for r in results] == [
        ("1", "train"), ("1", "infer"), ("2bi", "train"), ("2bi", "infer")]
    for r in results:
        assert r["flops_per_iter"] > 0
        assert r["max_rel_err"] < 1e-3
        assert set(r["rel_err"]) == {"fast", "numpy"}
        for fw in ("fast", "numpy", "torch"):
            res = r["frameworks"][fw]
            assert res["seq_per_s"] > 0 and res["gflop_per_s"] > 0
            assert len(res["repeat_s"]) == 1 and res["iters_per_repeat"] >= 1
        assert set(r["ratios"]) == {"fast/torch", "numpy/torch"}
        if r["mode"] == "train":     # every parameter gradient was compared
            n_params = 4 * r["num_layers"] * (2 if r["bidirectional"] else 1)
            assert len(r["rel_err"]["fast"]) == 1 + n_params
    assert "fast GFLOP/s" in md.read_text()


def test_gemm_bound_case_times_the_ceiling_in_its_own_repeats(tmp_path):
    """At H >= 256 the SGEMM ceiling's product runs in the case's own alternation: every repeat
    has its ceiling, and the share is the median of the repeats' shares (recomputed here from
    the JSON's raw times); below H = 256 no ceiling is timed."""
    require_torch()
    require("threadpoolctl")
    bench = load_bench()
    out = tmp_path / "bench.json"
    md = tmp_path / "bench.md"
    rc = bench.main(["--configs", "0,2", "--cells", "rnn", "--stacks", "1", "--modes", "infer",
                     "--frameworks", "fast,torch", "--repeats", "3", "--min-time", "0.01",
                     "--no-memory", "--keep-env", "--threads", "1", "--json", str(out),
                     "--markdown", str(md)])
    assert rc == 0
    small, bound = json.loads(out.read_text())["results"]
    assert small["H"] < 256 and small["case_sgemm_ceiling"] is None
    assert small["fast_pct_of_sgemm_ceiling"] is None
    ceiling = bound["case_sgemm_ceiling"]
    assert len(ceiling["gflop_per_s_all"]) == 3 and min(ceiling["gflop_per_s_all"]) > 0
    fast = bound["frameworks"]["fast"]
    shares = [bound["flops_per_iter"] * fast["iters_per_repeat"] / t / 1e9 / c
              for t, c in zip(fast["repeat_s"], ceiling["gflop_per_s_all"])]
    assert bound["fast_pct_of_sgemm_ceiling"] == pytest.approx(100 * statistics.median(shares))
    assert bound["fast_pct_of_run_start_ceiling"] > 0
    row = [line for line in md.read_text().splitlines() if line.startswith("| rnn") and
           "256 |" in line]
    assert len(row) == 1 and row[0].rstrip(" |").endswith("%")


def test_cell_options_benchmark_quick_run(tmp_path):
    """benchmarks/bench_cells.py: elman's cell options against their PyTorch references
    (per-step loops, TorchScript LayerNorm loops), a tiny run; the table has every row and a
    ratio in each."""
    require_torch()
    spec = importlib.util.spec_from_file_location("bench_cells", SCRIPT.parent / "bench_cells.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    md = tmp_path / "cells.md"
    assert module.main(["--quick", "--keep-env", "--threads", "1", "--markdown", str(md)]) == 0
    lines = md.read_text().splitlines()
    for label in ("recurrent_dropout", "LN-LSTM", "LN-GRU", "zoneout"):
        row = [line for line in lines if label in line]
        assert len(row) == 1 and row[0].rstrip(" |").endswith("x"), (label, lines)


def test_quick_run_of_the_peephole_cell(tmp_path):
    """The opt-in peephole row: elman.LSTM(peephole=True) against the TorchScript reference,
    which must compute the same outputs and gradients (peepholes nonzero)."""
    require_torch()
    require("threadpoolctl")
    bench = load_bench()
    out = tmp_path / "bench.json"
    rc = bench.main(["--quick", "--repeats", "1", "--min-time", "0.01", "--no-memory",
                     "--keep-env", "--threads", "1", "--cells", "peephole", "--stacks", "2bi",
                     "--json", str(out)])
    assert rc == 0
    results = json.loads(out.read_text())["results"]
    assert [(r["cell"], r["mode"]) for r in results] == [("peephole", "train"),
                                                         ("peephole", "infer")]
    train = results[0]
    assert train["max_rel_err"] < 1e-3
    assert len(train["rel_err"]["fast"]) == 1 + 7 * 2 * 2      # out + 7 parameters x 4
    assert any(k.startswith("weight_co") for k in train["rel_err"]["fast"])


def test_pair_benchmark_quick_run(capsys):
    """benchmarks/bench_pair.py: the pair path against the path it replaces and the layer as
    shipped, a tiny run; a row per layer with the three times and two ratios."""
    spec = importlib.util.spec_from_file_location("bench_pair", SCRIPT.parent / "bench_pair.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.main(["--quick", "--keep-env"]) == 0
    rows = [line for line in capsys.readouterr().out.splitlines()
            if line.startswith("| LSTM") or line.startswith("| GRU")]
    assert len(rows) == 2
    for row in rows:
        cells = [c.strip() for c in row.strip("|").split("|")]
        pair, without, shipped = (float(c) for c in cells[3:6])
        ratio, ratio_shipped = (float(c.rstrip("x")) for c in cells[6:8])
        assert pair > 0 and without > 0 and shipped > 0 and cells[2] == "no"   # (tiny sizes)
        assert abs(ratio - without / pair) < 0.01 + 0.01 * ratio
        assert abs(ratio_shipped - without / shipped) < 0.01 + 0.01 * ratio_shipped
